"""Supervised fine-tuning of a sandbox model on (prompt, target) rows with TRL ``SFTTrainer``, cached on disk.

Used by ``examples/coa_miniarith.py`` (spec/loops.md §1.9: CoT-FT vs CoA-FT with identical budgets) and by anything
that wants "train the sandbox base/seed model on these rows"; the sandbox seed model itself is trained by
:func:`sft_train` (``trainers/sandbox/seed.py``). Default settings, measured on the 2-core CPU: AdamW, cosine decay
with 5% warm-up, lr 3e-3, batch 32, fp32, ``assistant_only_loss=True``, ``group_by_length`` sampling, one thread.

Rows are TRL conversational rows ``{"messages": [...]}`` (e.g. :func:`loopwright.agents.coa.convert.to_sft_row`) or
``(prompt, target)`` pairs, which :func:`to_messages` turns into ``[user prompt, assistant target]``.

:func:`ensure_sft_model` caches the result under ``$LOOPWRIGHT_HOME/sandbox/<sandbox fingerprint>/sft/<name>-<hash>``
(the hash covers the base model's fingerprint, the rows and the settings), built in a temporary folder and renamed
into place, so a second run of the demo reuses both models.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.types import stable_hash
from .sandbox.seed import MANIFEST, _build_atomically, _locked, _versions

__all__ = ["SFTSettings", "ensure_sft_model", "sft_train", "to_messages"]

SFT_BUILDER_VERSION = "1"


class SFTSettings(BaseModel):
    """Trainer knobs; defaults = the sandbox seed model's (see :class:`~loopwright.trainers.sandbox.seed.SandboxConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(600, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(256, ge=16)
    num_threads: int = Field(1, ge=1)
    """Torch CPU threads while training (not part of the cache key; 1 is fastest on the shared 2-core machine)."""
    seed: int = 0


def to_messages(row: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """One training row as TRL's conversational form ``{"messages": [...]}``.

    Accepts ``{"messages": [...]}`` (returned as is), ``{"prompt": ..., "target": ...}`` or a ``(prompt, target)``
    pair, where ``prompt`` is a string or a list of chat messages and ``target`` the assistant text.
    """
    if isinstance(row, Mapping) and "messages" in row:
        msgs = row["messages"]
        if not msgs or msgs[-1].get("role") != "assistant":
            raise ValueError(f"row's last message must be the assistant target, got {msgs[-1:]!r}")
        return {"messages": list(msgs)}
    if isinstance(row, Mapping):
        if "prompt" not in row or "target" not in row:
            raise ValueError(f"row has keys {sorted(row)}; give 'messages' or both 'prompt' and 'target'")
        prompt, target = row["prompt"], row["target"]
    elif isinstance(row, Sequence) and not isinstance(row, str) and len(row) == 2:
        prompt, target = row
    else:
        raise ValueError(f"row must be a mapping or a (prompt, target) pair, got {type(row).__name__}")
    if not isinstance(target, str) or not target:
        raise ValueError(f"target must be a non-empty string, got {target!r}")
    head = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {"messages": [*head, {"role": "assistant", "content": target}]}


def sft_train(base: str | Path, rows: Iterable[Any], out: str | Path, settings: SFTSettings | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Fine-tune the model in ``base`` on ``rows`` and save model + tokenizer to ``out``.

    Returns timings and the loss history (also written to ``out/loopwright_manifest.json``).
    """
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    s = settings or SFTSettings()
    data = [to_messages(r) for r in rows]
    if not data:
        raise ValueError("sft_train needs at least one row")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(s.num_threads)
    torch.manual_seed(s.seed)
    run_dir = Path(tempfile.mkdtemp(prefix=".trainer-", dir=out.parent))
    try:
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        args = SFTConfig(
            output_dir=str(run_dir), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
            learning_rate=s.learning_rate, lr_scheduler_type="cosine", warmup_steps=int(s.max_steps * s.warmup_ratio),
            weight_decay=0.0, train_sampling_strategy="group_by_length", max_length=s.max_length,
            assistant_only_loss=True, gradient_checkpointing=False, logging_steps=max(1, s.max_steps // 10),
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0,
            seed=s.seed, data_seed=s.seed, disable_tqdm=not progress,
        )
        bars_were_off = datasets.are_progress_bars_disabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok)
        finally:
            if not bars_were_off:
                datasets.enable_progress_bars()
        if not progress:
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        t_init = time.perf_counter() - t0
        result = trainer.train()
        t_train = time.perf_counter() - t0 - t_init
        trainer.model.save_pretrained(out)
        tok.save_pretrained(out)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        torch.set_num_threads(threads_before)
    info = {"kind": "sft", "builder_version": SFT_BUILDER_VERSION, "base": str(base), "n_rows": len(data),
            "settings": s.model_dump(mode="json"), "versions": _versions(), "init_seconds": round(t_init, 2),
            "train_seconds": round(t_train, 2), "total_seconds": round(time.perf_counter() - t0, 2),
            "train_loss": result.training_loss, "loss_history": losses}
    (out / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def ensure_sft_model(name: str, base: str | Path, rows: Sequence[Any], settings: SFTSettings | None = None,
                     home: str | Path | None = None, progress: bool = False) -> Path:
    """Path of ``base`` fine-tuned on ``rows``; trained once, then reused from the cache.

    ``home`` defaults to ``base``'s parent folder (the sandbox cache folder of that model, under
    ``$LOOPWRIGHT_HOME``); the model lands in ``home/sft/<name>-<hash>``.
    """
    if not name or "/" in name:
        raise ValueError(f"name={name!r} must be a non-empty folder name without '/'")
    s = settings or SFTSettings()
    data = [to_messages(r) for r in rows]
    base = Path(base)
    base_manifest = base / MANIFEST
    base_id = json.loads(base_manifest.read_text()).get("fingerprint") if base_manifest.is_file() else str(base)
    key = stable_hash({"base": base_id, "rows": data, "settings": s.model_dump(mode="json", exclude={"num_threads"}),
                       "builder": SFT_BUILDER_VERSION})[:16]
    folder = Path(home) / "sft" if home is not None else base.parent / "sft"
    final = folder / f"{name}-{key}"
    if (final / MANIFEST).is_file():
        return final
    with _locked(folder):
        if (final / MANIFEST).is_file():
            return final
        return _build_atomically(final, lambda tmp: sft_train(base, data, tmp, s, progress))
