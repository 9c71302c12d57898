"""Iterative rejection-sampling SFT (STaR, Zelikman et al. 2022; ReST-EM, Singh et al. 2023) as a composition.

Per iteration: sample ``n`` answers per prompt, score them with ``judge`` (the gold checker
:class:`~loopwright.judges.oracle.GoldAnswerJudge` for the oracle run), keep those at or above ``threshold`` (at
most ``max_per_prompt`` per prompt, deduplicated), fine-tune, evaluate. ReST-EM restarts from the seed model each
iteration (``init_from="seed"``, the default); STaR continued from the previous one. The defaults match
:class:`~loopwright.judges.rejection_sft.RejectionSFTConfig` (8 samples at T = 0.8, 4 kept, lr 1e-3, 2 epochs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from ...sdk.judge import Judge
from ...sdk.loop import Loop
from ...sdk.loop_stages import Evaluate, Generate, RejectionSample, Score
from ...trainers.loop_stages import TrainSFT
from ...trainers.sft import SFTSettings


def star_loop(seed_model: str | Path, prompts: Sequence[Any], judge: Judge, *, iterations: int = 3, n: int = 8,
              temperature: float = 0.8, max_tokens: int = 128, threshold: float = 1.0, max_per_prompt: int = 4,
              epochs: float = 2.0, sft: SFTSettings | None = None, init_from: Literal["seed", "previous"] = "seed",
              evaluate: Callable[[Any], Any] | None = None, **loop: Any) -> Loop:
    """The STaR / ReST-EM loop; ``loop`` goes to :class:`~loopwright.sdk.loop.Loop`."""
    stages = [
        Generate(prompts=list(prompts), n=n, temperature=temperature, max_tokens=max_tokens),
        Score(judge=judge),
        RejectionSample(threshold=threshold, max_per_prompt=max_per_prompt),
        TrainSFT(settings=sft or SFTSettings(learning_rate=1e-3, batch_size=16), epochs=epochs),
        *([Evaluate(fn=evaluate)] if evaluate else []),
    ]
    return Loop(stages, seed_model=seed_model, iterations=iterations, init_from=init_from, name="star", **loop)
