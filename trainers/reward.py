"""Reward-model training with TRL's ``RewardTrainer``, and MiniArith preference pairs to train one on the sandbox.

- :func:`reward_train` (-> :class:`~loopwright.trainers.result.TrainResult`, ``trl_config`` overrides, optional
  RunDir) and its keyword-argument form :func:`train_reward_model` (-> the output folder) -- a Bradley-Terry reward model (``AutoModelForSequenceClassification``,
  ``num_labels=1``) trained from a causal-LM folder on conversational ``prompt/chosen/rejected`` rows, saved as
  exactly the artifact TRL writes (``loopwright.judges.RewardModelJudge`` and TRL's own ``reward_funcs=<path>``
  load the same folder). Device settings from :func:`~loopwright.trainers.result.device_defaults` (without CUDA
  spec/environment.md §2's ``use_cpu=True``, ``bf16=False``), ``report_to="none"``, ``save_strategy="no"``;
  ``config.pad_token_id`` is set by the trainer (the sequence-classification head reads the reward at the last
  non-pad token). ``settings.lora`` trains LoRA adapters plus the new head (peft ``SEQ_CLS``).
- :func:`miniarith_preference_pairs` -- correct vs incorrect solutions of the same MiniArith problem:
  chosen = the gold GSM8K-style CoT, rejected = a corrupted CoT (:data:`COT_CORRUPTIONS`).
- :func:`ensure_miniarith_reward_model` -- the sandbox reward model (seed model + RewardTrainer on those pairs),
  cached under ``$LOOPWRIGHT_HOME/sandbox/<seed fingerprint>/reward-<fingerprint>`` like the seed model.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.tasks.miniarith import MiniArithConfig, MiniArithProblem, apply_op, generate_problems
from ..sdk.types import stable_hash
from .cache import build_atomically, locked, versions
from .lora import LoRASettings
from .result import TrainResult, run_trl
from .sandbox.seed import (
    MANIFEST,
    SandboxConfig,
    cache_dir,
    ensure_seed_model,
    miniarith_prompt,
)

__all__ = [
    "COT_CORRUPTIONS",
    "LoRASettings",
    "RewardModelConfig",
    "RewardSettings",
    "TrainResult",
    "corrupt_cot",
    "ensure_miniarith_reward_model",
    "miniarith_preference_pairs",
    "reward_train",
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
            nxt = apply_op(op2, cur, b2)
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


class RewardSettings(BaseModel):
    """RewardTrainer knobs; defaults (lr 1e-3, batch 16, 300 steps) were picked on the sandbox seed model (see
    :class:`RewardModelConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(300, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=16)
    num_threads: int | None = Field(1, ge=1)
    """Torch CPU threads while training (``None`` leaves them alone)."""
    seed: int = 0
    lora: LoRASettings | None = None
    """Train LoRA adapters instead of every weight (``trainers/lora.py``; saved merged unless ``merge=False``)."""


def reward_train(
    base: str | Path,
    pairs: Sequence[dict[str, Any]],
    out: str | Path,
    settings: RewardSettings | None = None,
    *,
    trl_config: Mapping[str, Any] | None = None,
    run: Any = None,
    progress: bool = False,
) -> TrainResult:
    """Train a Bradley-Terry reward model with TRL ``RewardTrainer`` from the causal LM in ``base``.

    ``pairs`` are ``{"prompt", "chosen", "rejected"}`` rows (conversational or plain; extra columns are dropped).
    The sequence-classification head (``num_labels=1``) is new; the trunk starts from ``base``. Saves model,
    tokenizer and ``loopwright_manifest.json`` into ``out`` atomically. ``trl_config`` holds ``RewardConfig``
    fields that override ours, untouched; ``run`` an optional RunDir. With ``settings.lora`` only the adapters
    and the head train (peft ``SEQ_CLS``); the merged folder is the same kind of artifact as a full run's.
    """
    import torch
    from trl import RewardConfig, RewardTrainer

    s = settings or RewardSettings()
    if not pairs:
        raise ValueError("reward training needs at least one preference pair")
    missing = {"prompt", "chosen", "rejected"} - set(pairs[0])
    if missing:
        raise ValueError(f"preference rows need prompt/chosen/rejected; the first row lacks {sorted(missing)}")
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in pairs]
    kwargs: dict[str, Any] = dict(
        max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=max(1, s.max_steps // 20), max_length=s.max_length,
        logging_steps=max(1, s.max_steps // 10), model_init_kwargs={"dtype": torch.float32},
    )
    return run_trl(
        kind="reward", base=base, rows=rows, out=out, settings=s, config_cls=RewardConfig,
        trainer_cls=RewardTrainer, config_kwargs=kwargs, trl_config=trl_config, load_model=None,
        num_threads=s.num_threads, seed=s.seed, run=run, progress=progress, builder_version=REWARD_BUILDER_VERSION,
        task_type="SEQ_CLS",
    )


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
    """:func:`reward_train` with keyword settings; returns ``out_dir`` (the pre-TrainResult signature).

    ``config_overrides`` go to ``RewardConfig`` verbatim. Also writes ``training_log.json`` (losses,
    accuracies, timings) next to the model, as before.
    """
    from ..sdk.artifacts import write_json

    settings = RewardSettings(max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                              max_length=max_length, num_threads=num_threads, seed=seed)
    res = reward_train(base_model_dir, pairs, out_dir, settings, trl_config=config_overrides or None,
                       progress=progress)
    history = res.manifest.get("log_history", [])
    write_json(res.model_dir / "training_log.json", {
        "base_model": str(base_model_dir), "n_pairs": len(pairs), **settings.model_dump(mode="json"),
        "init_seconds": res["init_seconds"], "train_seconds": res["train_seconds"],
        "train_loss": res["train_loss"], "loss_history": res["loss_history"],
        "accuracy_history": [h["accuracy"] for h in history if "accuracy" in h], "versions": versions(),
    })
    return res.model_dir


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
    with locked(folder):
        if (final / MANIFEST).is_file():
            return final

        def build(tmp: Path) -> None:
            import json

            pairs = miniarith_preference_pairs(cfg.n_pairs, task=cfg.sandbox.task, seed=cfg.seed)
            train_reward_model(seed_dir, pairs, tmp, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                               batch_size=cfg.batch_size, seed=cfg.seed)
            (tmp / MANIFEST).write_text(json.dumps({
                "kind": "reward", "builder_version": REWARD_BUILDER_VERSION, "fingerprint": cfg.fingerprint(),
                "config": cfg.model_dump(mode="json"), "seed_model": str(seed_dir), "versions": versions(),
            }, indent=2, sort_keys=True))

        return build_atomically(final, build)
