"""Self-Rewarding (Yuan et al. 2024, arXiv 2401.10020) as a composition of public stages.

Per iteration: sample ``n`` responses per new prompt (paper: N = 4, T = 0.7, top-p 0.9), let the *current model*
score each with the additive 5-point LLM-as-a-judge rubric (:class:`~loopwright.judges.pointwise.PointwiseJudge`'s
default template; paper: 3 judge samples averaged), pair the best against the worst (ties skipped), and run DPO
from the current model (iterative: M1 -> M2 -> M3). ``rho > 0`` adds Meta-Rewarding's length control.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...sdk.loop import Loop
from ...sdk.loop_stages import BuildPairs, Evaluate, Generate, Score
from ...sdk.types import SamplingParams
from ...trainers.dpo import DPOSettings
from ...trainers.loop_stages import TrainDPO
from ..pointwise import PointwiseJudge


def self_rewarding_loop(seed_model: str | Path, prompts: Sequence[Any], *, iterations: int = 3, n: int = 4,
                        judge_samples: int = 3, per_iteration: int | None = None, rho: float = 0.0,
                        max_tokens: int = 256, judge_max_tokens: int = 256, template: Any = None,
                        dpo: DPOSettings | None = None, evaluate: Callable[[Any], Any] | None = None,
                        **loop: Any) -> Loop:
    """The Self-Rewarding loop; ``loop`` goes to :class:`~loopwright.sdk.loop.Loop` (``make_generator``, ...)."""
    judging = (SamplingParams(temperature=0.7, top_p=0.9, max_tokens=judge_max_tokens) if judge_samples > 1
               else SamplingParams(temperature=0.0, max_tokens=judge_max_tokens))
    stages = [
        Generate(prompts=list(prompts), n=n, temperature=0.7, top_p=0.9, max_tokens=max_tokens,
                 per_iteration=per_iteration),
        Score(judge=lambda gen: PointwiseJudge(gen, template, samples=judge_samples, sampling=judging)),
        BuildPairs(rho=rho),
        TrainDPO(settings=dpo or DPOSettings(max_steps=20)),
        *([Evaluate(fn=evaluate)] if evaluate else []),
    ]
    return Loop(stages, seed_model=seed_model, iterations=iterations, init_from="previous",
                name="self_rewarding", **loop)
