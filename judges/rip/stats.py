"""Stats of a RIP run: counts per drop reason, metric percentiles, thresholds used and the keep rate.

A prompt dropped by several rules counts once under each rule in ``per_rule`` and once under its full reason in
``per_reason``, so the report shows both which rule bites and how often rules overlap.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from ...sdk.types import Decision
from .filter import METRICS, percentile

__all__ = ["rip_stats"]

REPORT_PERCENTILES = (10, 25, 50, 75, 90)


def rip_stats(
    scores: Sequence[dict[str, float]],
    decisions: Sequence[Decision],
    thresholds: dict[str, float | None] | None = None,
    pre_rejected: Sequence[str] = (),
) -> dict[str, Any]:
    """Summary dict: ``n_prompts``, ``n_kept``, ``keep_rate``, ``per_reason``, ``per_rule``, ``percentiles``
    (of each metric over the prompts with a valid pair), ``thresholds``.

    ``pre_rejected`` are the reasons of prompts rejected before scoring (bad input: empty or non-text prompts);
    they count in ``n_prompts`` and ``per_reason``.
    """
    if len(scores) != len(decisions):
        raise ValueError(f"{len(scores)} score dicts but {len(decisions)} decisions")
    per_reason: Counter[str] = Counter(pre_rejected)
    per_rule: Counter[str] = Counter()
    for d in decisions:
        if not d.keep:
            per_reason[d.reason or "unspecified"] += 1
            for part in (d.reason or "unspecified").split(";"):
                per_rule[part] += 1
    for r in pre_rejected:
        per_rule[r.split(":")[0]] += 1
    n_kept = sum(d.keep for d in decisions)
    n = len(decisions) + len(pre_rejected)
    pool = [s for s in scores if "rejected_reward" in s]
    pct = {
        m: ({str(p): percentile([s[m] for s in pool], p) for p in REPORT_PERCENTILES} if pool else {})
        for m in METRICS
    }
    return {
        "n_prompts": n,
        "n_scored_pairs": len(pool),
        "n_kept": n_kept,
        "keep_rate": n_kept / n if n else 0.0,
        "per_reason": dict(sorted(per_reason.items())),
        "per_rule": dict(sorted(per_rule.items())),
        "percentiles": pct,
        "thresholds": dict(thresholds or {}),
    }
