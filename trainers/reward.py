"""Reward-model training with TRL's ``RewardTrainer``, and MiniArith preference pairs to train one on the sandbox.

- :func:`train_reward_model` -- a Bradley-Terry reward model (``AutoModelForSequenceClassification``,
  ``num_labels=1``) trained from a causal-LM folder on conversational ``prompt/chosen/rejected`` rows, saved as
  exactly the artifact TRL writes (``loopwright.judges.RewardModelJudge`` and TRL's own ``reward_funcs=<path>``
  load the same folder). CPU settings from spec/environment.md §2: ``use_cpu=True``, ``bf16=False``,
  ``report_to="none"``, ``save_strategy="no"``; ``config.pad_token_id`` is set by the trainer (the
  sequence-classification head reads the reward at the last non-pad token).
- :func:`miniarith_preference_pairs` -- correct vs incorrect solutions of the same MiniArith problem:
  chosen = the gold GSM8K-style CoT, rejected = a corrupted CoT (:data:`COT_CORRUPTIONS`).
- :func:`ensure_miniarith_reward_model` -- the sandbox reward model (seed model + RewardTrainer on those pairs),
  cached under ``$LOOPWRIGHT_HOME/sandbox/<seed fingerprint>/reward-<fingerprint>`` like the seed model.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.tasks.miniarith import MiniArithConfig, MiniArithProblem, generate_problems
from ..sdk.types import stable_hash
from .sandbox.seed import (
    MANIFEST,
    SandboxConfig,
    _build_atomically,
    _locked,
    _versions,
    cache_dir,
    ensure_seed_model,
    miniarith_prompt,
)

__all__ = [
    "COT_CORRUPTIONS",
    "RewardModelConfig",
    "corrupt_cot",
    "ensure_miniarith_reward_model",
    "miniarith_preference_pairs",
    "train_reward_model",
]

REWARD_BUILDER_VERSION = "1"

CotCorruption = Literal["wrong_final", "wrong_step", "wrong_answer_line"]
COT_CORRUPTIONS: tuple[str, ...] = ("wrong_final", "wrong_step", "wrong_answer_line")
"""How a rejected solution differs from the gold one (each keeps the CoT format, so only the numbers tell):

- ``wrong_final``: the last step's result is wrong (in the ``<<a op b=r>>r`` annotation and in ``#### r``);
- ``wrong_step``: one step's result is wrong and every later step is recomputed from it (one arithmetic slip
  that propagates to the final answer, as in real model errors);
- ``wrong_answer_line``: every step is right but the ``#### N`` line does not copy the last result.
"""


# --------------------------------------------------------------------------------------------- preference data


def _apply(op: str, a: int, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 or a % b:
        return None
    return a // b


def _wrong(value: int, rng: random.Random) -> int:
    """A nearby wrong value (off by 1..10, kept >= 0), so the error is in the arithmetic, not the magnitude."""
    while True:
        cand = value + rng.choice([-1, 1]) * rng.randint(1, 10)
        if cand >= 0 and cand != value:
            return cand


def _render(lines: list[tuple[int, str, int, int]], final: int) -> str:
    body = [f"{a}{op}{b}=<<{a}{op}{b}={r}>>{r}" for a, op, b, r in lines]
    return "\n".join([*body, f"#### {final}"])


def corrupt_cot(problem: MiniArithProblem, kind: str, rng: random.Random) -> str:
    """The gold CoT of ``problem`` with one error of ``kind`` (one of :data:`COT_CORRUPTIONS`).

    ``wrong_step`` falls back to ``wrong_final`` when recomputing later steps from the wrong value gives a
    non-integer division. The result always differs from ``problem.cot``.
    """
    if kind not in COT_CORRUPTIONS:
        raise ValueError(f"unknown CoT corruption {kind!r}; use one of {COT_CORRUPTIONS}")
    gold: list[tuple[int, str, int, int]] = []
    env: dict[str, int] = {}
    for st in problem.program:
        a = env[st.a] if isinstance(st.a, str) else st.a
        b = env[st.b] if isinstance(st.b, str) else st.b
        gold.append((a, st.op, b, st.result))
        env[st.var] = st.result
    if kind == "wrong_answer_line":
        return _render(gold, _wrong(problem.answer, rng))
    if kind == "wrong_step" and len(gold) > 1:
        k = rng.randrange(len(gold) - 1)  # not the last step (that is ``wrong_final``)
        lines = gold[:k]
        a, op, b, r = gold[k]
        cur = _wrong(r, rng)
        lines.append((a, op, b, cur))
        ok = True
        for _, op2, b2, _ in gold[k + 1:]:
            nxt = _apply(op2, cur, b2)
            if nxt is None:
                ok = False
                break
            lines.append((cur, op2, b2, nxt))
            cur = nxt
        if ok:
            return _render(lines, cur)
    a, op, b, r = gold[-1]
    w = _wrong(r, rng)
    return _render([*gold[:-1], (a, op, b, w)], w)


def miniarith_preference_pairs(
    problems: Sequence[MiniArithProblem] | int,
    *,
    task: MiniArithConfig | None = None,
    corruptions: Sequence[str] = COT_CORRUPTIONS,
    seed: int = 0,
    start: int = 0,
) -> list[dict[str, Any]]:
    """Conversational preference rows (TRL's explicit-prompt format) from MiniArith problems.

    ``problems`` is a list of problems or a count (then ``generate_problems(n, task, start=start)``, ``task``
    defaulting to the sandbox's training distribution). Each row is ``{"prompt": [user msg], "chosen":
    [assistant gold CoT], "rejected": [assistant corrupted CoT], "corruption": kind, "id": problem id}``; the
    corruption kind cycles through ``corruptions`` and its random draw is seeded by ``(seed, problem id)``. The
    extra columns are ignored by ``RewardTrainer`` and kept as provenance.
    """
    if isinstance(problems, int):
        problems = generate_problems(problems, task or SandboxConfig().task, start=start)
    if not corruptions:
        raise ValueError("corruptions is empty; pass at least one of " + ", ".join(COT_CORRUPTIONS))
    rows = []
    for i, p in enumerate(problems):
        kind = corruptions[i % len(corruptions)]
        rng = random.Random(f"miniarith-pairs-{seed}-{p.id}-{kind}")
        rows.append({
            "prompt": miniarith_prompt(p),
            "chosen": [{"role": "assistant", "content": p.cot}],
            "rejected": [{"role": "assistant", "content": corrupt_cot(p, kind, rng)}],
            "corruption": kind,
            "id": p.id,
        })
    return rows


# --------------------------------------------------------------------------------------------- training


def train_reward_model(
    base_model_dir: str | Path,
    pairs: Sequence[dict[str, Any]],
    out_dir: str | Path,
    *,
    max_steps: int = 300,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    max_length: int = 256,
    num_threads: int | None = 1,
    progress: bool = False,
    **config_overrides: Any,
) -> Path:
    """Train a reward model with TRL ``RewardTrainer`` from a causal-LM folder and save it to ``out_dir``.

    ``pairs`` are conversational ``{"prompt", "chosen", "rejected"}`` rows (extra columns are dropped). The
    sequence-classification head (``num_labels=1``) is new; the trunk starts from ``base_model_dir``. Saves the
    model, the tokenizer and ``training_log.json`` (losses, accuracies, timings); returns ``out_dir``.
    ``num_threads`` (default 1, see :class:`~loopwright.trainers.sandbox.seed.SandboxConfig`) sets torch's CPU
    threads while training; ``None`` leaves them alone. ``config_overrides`` go to ``RewardConfig`` verbatim.
    Defaults (lr 1e-3, batch 16, 300 steps) were picked on the sandbox seed model: see
    :class:`RewardModelConfig`.
    """
    import json

    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    if not pairs:
        raise ValueError("train_reward_model needs at least one preference pair")
    missing = {"prompt", "chosen", "rejected"} - set(pairs[0])
    if missing:
        raise ValueError(f"preference rows need prompt/chosen/rejected; the first row lacks {sorted(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in pairs]
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    run_dir = Path(tempfile.mkdtemp(prefix=".reward-trainer-", dir=out))
    try:
        tok = AutoTokenizer.from_pretrained(base_model_dir)
        settings: dict[str, Any] = dict(
            output_dir=str(run_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
            learning_rate=learning_rate, lr_scheduler_type="cosine", warmup_steps=max(1, max_steps // 20),
            max_length=max_length, gradient_checkpointing=False, logging_steps=max(1, max_steps // 10),
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
            dataloader_num_workers=0, seed=seed, data_seed=seed, disable_tqdm=not progress,
            model_init_kwargs={"dtype": torch.float32},
        )
        settings.update(config_overrides)
        args = RewardConfig(**settings)
        bars_were_off = datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        try:
            trainer = RewardTrainer(model=str(base_model_dir), args=args, train_dataset=Dataset.from_list(rows),
                                    processing_class=tok)
        finally:
            if not bars_were_off:
                datasets.enable_progress_bars()
        if not progress:
            trainer.remove_callback(PrinterCallback)
        t_init = time.perf_counter() - t0
        result = trainer.train()
        t_train = time.perf_counter() - t0 - t_init
        trainer.model.save_pretrained(out)
        trainer.processing_class.save_pretrained(out)
        history = trainer.state.log_history
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        torch.set_num_threads(threads_before)
    log = {
        "base_model": str(base_model_dir), "n_pairs": len(rows), "max_steps": max_steps,
        "learning_rate": learning_rate, "batch_size": batch_size, "seed": seed, "max_length": max_length,
        "init_seconds": round(t_init, 2), "train_seconds": round(t_train, 2), "train_loss": result.training_loss,
        "loss_history": [h["loss"] for h in history if "loss" in h],
        "accuracy_history": [h["accuracy"] for h in history if "accuracy" in h],
        "versions": _versions(),
    }
    (out / "training_log.json").write_text(json.dumps(log, indent=2, sort_keys=True))
    return out


# --------------------------------------------------------------------------------------------- sandbox reward model


class RewardModelConfig(BaseModel):
    """The sandbox reward model: the seed model + RewardTrainer on :func:`miniarith_preference_pairs`.

    Defaults measured on the 2-core machine (see tests/judges/test_reward_model.py for the held-out AUC).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    n_pairs: int = Field(2_000, ge=1)
    max_steps: int = Field(300, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    seed: int = 0

    def fingerprint(self) -> str:
        return stable_hash({"config": self.model_dump(mode="json"), "builder": REWARD_BUILDER_VERSION})


def ensure_miniarith_reward_model(cfg: RewardModelConfig | None = None) -> Path:
    """Path of the sandbox reward model (trained once with :func:`train_reward_model`, then cached on disk)."""
    cfg = cfg or RewardModelConfig()
    folder = cache_dir(cfg.sandbox)
    final = folder / f"reward-{cfg.fingerprint()}"
    if (final / MANIFEST).is_file():
        return final
    seed_dir = ensure_seed_model(cfg.sandbox, progress=False)
    with _locked(folder):
        if (final / MANIFEST).is_file():
            return final

        def build(tmp: Path) -> None:
            import json

            pairs = miniarith_preference_pairs(cfg.n_pairs, task=cfg.sandbox.task, seed=cfg.seed)
            train_reward_model(seed_dir, pairs, tmp, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                               batch_size=cfg.batch_size, seed=cfg.seed)
            (tmp / MANIFEST).write_text(json.dumps({
                "kind": "reward", "builder_version": REWARD_BUILDER_VERSION, "fingerprint": cfg.fingerprint(),
                "config": cfg.model_dump(mode="json"), "seed_model": str(seed_dir), "versions": _versions(),
            }, indent=2, sort_keys=True))

        return _build_atomically(final, build)
