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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.types import stable_hash
from .cache import build_atomically, locked
from .lora import LoRASettings
from .result import MANIFEST, TrainResult, run_trl

__all__ = ["LoRASettings", "SFTSettings", "TrainResult", "ensure_sft_model", "sft_train", "to_messages"]

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
    lora: LoRASettings | None = None
    """Train LoRA adapters instead of every weight (``trainers/lora.py``; saved merged unless ``merge=False``)."""


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
              progress: bool = False, *, trl_config: Mapping[str, Any] | None = None,
              run: Any = None) -> TrainResult:
    """Fine-tune the causal LM in ``base`` on ``rows``; save model, tokenizer and manifest to ``out`` (atomically).

    ``trl_config`` holds ``SFTConfig`` fields that override ours, passed through untouched; ``run`` an optional
    :class:`~loopwright.sdk.artifacts.RunDir` (relative ``out`` paths land inside it). Returns a
    :class:`~loopwright.trainers.result.TrainResult` whose metrics hold the timings and the loss history (also
    in ``out/loopwright_manifest.json``); ``result["train_loss"]`` etc. still work as with the old dict.
    With ``settings.lora`` only LoRA adapters train (``out`` is the merged model, or the adapter folder when
    ``lora.merge=False``).
    """
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    s = settings or SFTSettings()
    data = [to_messages(r) for r in rows]
    if not data:
        raise ValueError("sft_train needs at least one row")
    kwargs: dict[str, Any] = dict(
        max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=int(s.max_steps * s.warmup_ratio), weight_decay=0.0,
        train_sampling_strategy="group_by_length", max_length=s.max_length, assistant_only_loss=True,
        logging_steps=max(1, s.max_steps // 10),
    )
    return run_trl(
        kind="sft", base=base, rows=data, out=out, settings=s, config_cls=SFTConfig, trainer_cls=SFTTrainer,
        config_kwargs=kwargs, trl_config=trl_config,
        load_model=lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        num_threads=s.num_threads, seed=s.seed, run=run, progress=progress, builder_version=SFT_BUILDER_VERSION,
    )


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
    with locked(folder):
        if (final / MANIFEST).is_file():
            return final
        return build_atomically(final, lambda tmp: sft_train(base, data, tmp, s, progress))
