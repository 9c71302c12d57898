"""RIP and Self-RIP (Yu et al., arXiv 2501.18578): filter prompts by the rejected response's reward and length
and by the reward gap of a best-vs-worst pair; synthesize new prompts from the kept ones and filter again.

- :class:`RIPFilter` / :class:`RIPThresholds` -- the percentile rule as an sdk Filter (score once, re-decide);
- :func:`run_rip` / :class:`RIPConfig` / :class:`RIPResult` -- sample N responses through a Local or Ray executor,
  score them with any Judge, write TRL DPO rows and the rejected rows with reasons;
- :func:`rip_loop` -- the paper's experiment (sample -> score -> RIP -> DPO -> evaluate) as a composed
  :class:`~loopwright.sdk.loop.Loop` of :class:`RIPSampleScore`, :class:`RIPDecide` and the public train and
  evaluate stages;
- :func:`self_rip` / :func:`synthesize_prompts` -- Self-RIP; :func:`rip_stats` -- the stats report.

See docs/rip.md. Importing this package loads no torch / ray.
"""

from __future__ import annotations

from .filter import METRICS, RIPFilter, RIPThresholds, best_worst, percentile
from .pipeline import (
    RIPConfig,
    RIPResult,
    check_prompt,
    load_rip,
    rescore,
    rip_stages,
    run_rip,
    sample_and_score,
)
from .self_rip import (
    BANNED_KEYWORDS,
    SelfRIPConfig,
    SelfRIPResult,
    fewshot_prompt,
    parse_new_prompt,
    rouge_l,
    self_rip,
    synthesize_prompts,
)
from .stages import RIPDecide, RIPSampleScore, rip_loop
from .stats import rip_stats

__all__ = [
    "BANNED_KEYWORDS",
    "METRICS",
    "RIPConfig",
    "RIPFilter",
    "RIPResult",
    "RIPThresholds",
    "SelfRIPConfig",
    "SelfRIPResult",
    "best_worst",
    "check_prompt",
    "fewshot_prompt",
    "load_rip",
    "parse_new_prompt",
    "percentile",
    "rescore",
    "RIPDecide",
    "RIPSampleScore",
    "rip_loop",
    "rip_stages",
    "rip_stats",
    "rouge_l",
    "run_rip",
    "sample_and_score",
    "self_rip",
    "synthesize_prompts",
]
