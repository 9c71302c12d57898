"""The sandbox seed judge for the CPU demo (spec/loops.md §4.8): the sandbox seed model taught the verdict format.

The ~1M-parameter sandbox seed model solves MiniArith but cannot follow a judge rubric (its verdicts are
invalid), so -- as §4.8 prescribes -- the seed judge ``M_0`` is the seed model SFT-ed on a *small, noisy*
judging set in the ``compact`` style: question, candidate A, candidate B, and a judgement that restates the
solution it picks (the "recomputed" reasoning) followed by ``[[A]]``/``[[B]]``. A fraction ``label_noise`` of
the examples pick the wrong candidate, and with ``noise_toward="A"`` the wrong picks all say ``[[A]]``, so the
seed judge is both inaccurate and position-biased: the two defects the Self-Taught Evaluator loop is meant to
train away using only construction labels (MiniArith gold answers), never these noisy labels again.

The seed judge is cached under ``$LOOPWRIGHT_HOME/sandbox/<sandbox fingerprint>/ste-seed-judge-<hash>`` (built
once in a temporary folder and renamed into place under a file lock), like the other sandbox models.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.sdk.tasks.miniarith import MiniArithConfig
from loopwright.sdk.types import stable_hash
from loopwright.trainers.cache import build_atomically, locked
from loopwright.trainers.result import MANIFEST
from loopwright.trainers.sandbox.seed import SandboxConfig, cache_dir, ensure_seed_model
from loopwright.trainers.sft import SFTSettings, sft_train

from .loop import SelfTaughtConfig, miniarith_pairs
from .prompts import judge_template

__all__ = ["SEED_JUDGE_START", "SeedJudgeConfig", "compact_judgement", "ensure_seed_judge", "seed_judge_rows"]

SEED_JUDGE_START = 500_000
"""MiniArith stream index of the seed judge's noisy judging set (disjoint from the loop's and eval's slices)."""


class SeedJudgeConfig(BaseModel):
    """The seed judge: how many noisy judging examples, how noisy, and the SFT that teaches the format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    task: MiniArithConfig = Field(default_factory=lambda: SelfTaughtConfig().task)
    worse: Literal["modified_instruction", "wrong_final"] = "modified_instruction"
    """How ``y_l`` is built (:func:`~.loop.miniarith_pairs`); use the loop's setting."""
    n_pairs: int = Field(128, ge=1)
    """Pairs in the noisy judging set (each in both orders)."""
    label_noise: float = Field(0.4, ge=0, le=1)
    """Fraction of examples whose judgement picks the wrong candidate (§4.8: a ~60%-accurate seed)."""
    noise_toward: Literal["A", "B", "random"] = "A"
    """Which verdict the noisy examples give: always ``A`` (a position-biased seed), always ``B``, or random."""
    sft: SFTSettings = Field(default_factory=lambda: SFTSettings(max_steps=80, learning_rate=2e-3, batch_size=16,
                                                                 max_length=320))
    """Measured: 40 steps at lr 1e-3 left every verdict unparseable (the loop then stops at iteration 1 with
    "0 usable judgements"); 80 steps at 2e-3 teach the format only partly, which leaves the loop room to act."""
    seed: int = 0

    def fingerprint(self) -> str:
        return stable_hash({"config": self.model_dump(mode="json", exclude={"sft": {"num_threads"}}),
                            "builder": "1"})[:16]


def compact_judgement(solution: str, verdict: str) -> str:
    """The compact judgement format: the picked solution restated, then the verdict (``...#### 19 [[A]]``)."""
    return f"{solution} [[{verdict}]]"


def seed_judge_rows(cfg: SeedJudgeConfig) -> list[dict]:
    """The noisy judging set: ``{"prompt": compact judge prompt, "target": judgement}`` rows, both orders."""
    template = judge_template("compact")
    rng = random.Random(f"ste-seed-judge-{cfg.seed}")
    rows = []
    for p in miniarith_pairs(cfg.n_pairs, cfg.task, start=SEED_JUDGE_START, seed=cfg.seed, worse=cfg.worse):
        for a, b, gold in ((p["chosen"], p["rejected"], "A"), (p["rejected"], p["chosen"], "B")):
            verdict = gold
            if rng.random() < cfg.label_noise:
                wrong = "B" if gold == "A" else "A"
                verdict = wrong if cfg.noise_toward == "random" else cfg.noise_toward
            solution = a if verdict == "A" else b
            rows.append({"prompt": template.render(question=p["question"], response_a=a, response_b=b),
                         "target": compact_judgement(solution, verdict)})
    return rows


def ensure_seed_judge(cfg: SeedJudgeConfig | None = None, progress: bool = False) -> Path:
    """Path of the sandbox seed judge (trained once from the sandbox seed model, then cached)."""
    cfg = cfg or SeedJudgeConfig()
    folder = cache_dir(cfg.sandbox)
    final = folder / f"ste-seed-judge-{cfg.fingerprint()}"
    if (final / MANIFEST).is_file():
        return final
    seed_model = ensure_seed_model(cfg.sandbox, progress=progress)
    with locked(folder):
        if (final / MANIFEST).is_file():
            return final
        rows = [{"prompt": r["prompt"], "target": r["target"]} for r in seed_judge_rows(cfg)]
        return build_atomically(final, lambda tmp: sft_train(seed_model, rows, tmp,
                                                             cfg.sft.model_copy(update={"seed": cfg.seed}),
                                                             progress=progress))
