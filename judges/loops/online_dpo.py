"""Online iterative DPO against an external reward model (RLAIF; Xiong et al. 2024, arXiv 2312.11456, and
Dong et al. 2024, "RLHF Workflow", arXiv 2405.07863) as a composition of public stages.

Per iteration: sample ``n`` responses per prompt from the current policy, score them with a fixed reward model
(:class:`~loopwright.judges.reward_model.RewardModelJudge`, or any pointwise judge), pair best vs worst, optionally
keep only the prompts the RIP filter passes (Yu et al. 2025, arXiv 2501.18578), and run DPO from the current policy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...sdk.filter import Filter
from ...sdk.judge import Judge
from ...sdk.loop import Loop
from ...sdk.loop_stages import ApplyFilter, BuildPairs, Evaluate, Generate, Score
from ...trainers.dpo import DPOSettings
from ...trainers.loop_stages import TrainDPO


def online_dpo_loop(seed_model: str | Path, prompts: Sequence[Any], reward: Judge, *, iterations: int = 2,
                    n: int = 4, temperature: float = 0.8, max_tokens: int = 128, per_iteration: int | None = None,
                    prompt_filter: Filter | None = None, min_margin: float = 0.0, dpo: DPOSettings | None = None,
                    evaluate: Callable[[Any], Any] | None = None, **loop: Any) -> Loop:
    """Online DPO with a reward model; ``prompt_filter`` (e.g. ``RIPFilter()``) runs on the scored groups."""
    stages = [
        Generate(prompts=list(prompts), n=n, temperature=temperature, max_tokens=max_tokens,
                 per_iteration=per_iteration),
        Score(judge=reward),
        *([ApplyFilter(filter=prompt_filter)] if prompt_filter else []),
        BuildPairs(min_margin=min_margin),
        TrainDPO(settings=dpo or DPOSettings(max_steps=20)),
        *([Evaluate(fn=evaluate)] if evaluate else []),
    ]
    return Loop(stages, seed_model=seed_model, iterations=iterations, init_from="previous", name="online_dpo",
                **loop)
