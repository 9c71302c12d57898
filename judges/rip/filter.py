"""The RIP filter (Yu et al., arXiv 2501.18578, §5.2 of spec/loops.md) as an sdk :class:`Filter`.

Per prompt x with N scored responses: y_w = argmax reward, y_l = argmin reward (best vs worst), and three metrics

- ``rejected_reward`` m1 = r(y_l|x)  (higher is better: bad prompts have bad worst-case answers),
- ``rejected_length`` m2 = len(y_l)  (higher is better),
- ``reward_gap``      m3 = r(y_w|x) - r(y_l|x)  (lower is better: bad prompts give high-variance answers).

Keep x iff ``m1 >= tau1 and m2 >= tau2 and m3 <= tau3``. Each tau is a percentile of its metric over the *pool
being filtered* (the prompts that have a valid pair), or an absolute value (to reuse thresholds on another pool,
as the paper did for 70B and for Self-RIP's post-filter). Defaults: all three at the 50th percentile, the paper's
best 8B setting [V]; the paper swept 25/50/75 [V].

:meth:`RIPFilter.score` is the only step that reads rewards; :meth:`RIPFilter.keep` (cheap) can be called again
with other thresholds without re-scoring (NeMo-Curator's score/keep split). A dropped prompt carries its reason:
``no_valid_rewards`` / ``too_few_valid_rewards`` (dropped *before* percentiles are computed, as the paper drops
prompts whose responses all fail to score), ``chosen_equals_rejected`` (every valid response has the same text: a
DPO pair with no signal), or the failing rules joined by ``;`` (``rejected_reward_low``, ``rejected_length_low``,
``reward_gap_high``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...sdk.filter import Filter
from ...sdk.types import Decision

__all__ = [
    "METRICS",
    "RULE_REASONS",
    "PairScores",
    "RIPFilter",
    "RIPThresholds",
    "best_worst",
    "percentile",
]

METRICS = ("rejected_reward", "rejected_length", "reward_gap")
RULE_REASONS = {
    "rejected_reward": "rejected_reward_low",
    "rejected_length": "rejected_length_low",
    "reward_gap": "reward_gap_high",
}
"""The reason a rule writes when it drops a prompt."""


class RIPThresholds(BaseModel):
    """Where to cut each metric. ``*_pct`` is a percentile (0-100) of the metric over the pool being filtered;
    an absolute value (``rejected_reward``, ``rejected_length``, ``reward_gap``) overrides its percentile; a rule
    whose percentile and absolute value are both ``None`` is off.

    Defaults: 50/50/50, the paper's best 8B setting (WildChat-20k -> 4,538 prompts) [V, spec/loops.md A.5].
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rejected_reward_pct: float | None = Field(50.0, ge=0, le=100)
    rejected_length_pct: float | None = Field(50.0, ge=0, le=100)
    reward_gap_pct: float | None = Field(50.0, ge=0, le=100)
    rejected_reward: float | None = None
    rejected_length: float | None = None
    reward_gap: float | None = None

    @model_validator(mode="after")
    def _finite(self) -> RIPThresholds:
        for name in METRICS:
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"absolute threshold {name}={v} must be finite (or None to use {name}_pct)")
        return self

    def resolve(self, pool: Sequence[dict[str, float]]) -> dict[str, float | None]:
        """Absolute thresholds for ``pool`` (score dicts of the prompts with a valid pair): {metric: tau or None}."""
        out: dict[str, float | None] = {}
        for name in METRICS:
            absolute, pct = getattr(self, name), getattr(self, f"{name}_pct")
            if absolute is not None:
                out[name] = float(absolute)
            elif pct is None or not pool:
                out[name] = None
            else:
                out[name] = percentile([s[name] for s in pool], pct)
        return out

    def absolute(self, pool: Sequence[dict[str, float]]) -> RIPThresholds:
        """The same cut as fixed values (what Self-RIP reuses on the synthetic pool)."""
        tau = self.resolve(pool)
        return RIPThresholds(rejected_reward_pct=None, rejected_length_pct=None, reward_gap_pct=None, **tau)


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile with linear interpolation between order statistics (numpy's default method)."""
    if not values:
        raise ValueError("percentile of an empty pool")
    if not 0 <= pct <= 100:
        raise ValueError(f"pct={pct} must be in [0, 100]")
    xs = sorted(float(v) for v in values)
    pos = (len(xs) - 1) * pct / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class PairScores(BaseModel):
    """The best-vs-worst pair of one prompt (indices into its responses) and its three metrics."""

    chosen_idx: int
    rejected_idx: int
    chosen_reward: float
    rejected_reward: float
    rejected_length: float
    reward_gap: float
    n_valid: int


def best_worst(rewards: Sequence[float | None]) -> tuple[int, int] | None:
    """(argmax, argmin) over the valid rewards; ties go to the lowest index for both. ``None`` if fewer than one
    valid reward. When all valid rewards are equal, the rejected index is the *last* valid one, so a pair still
    has two different responses when there are two."""
    valid = [(i, r) for i, r in enumerate(rewards) if r is not None and math.isfinite(r)]
    if not valid:
        return None
    best = max(valid, key=lambda t: (t[1], -t[0]))[0]
    worst = min(valid, key=lambda t: (t[1], t[0]))[0]
    if best == worst and len(valid) > 1:
        worst = valid[-1][0] if valid[-1][0] != best else valid[0][0]
    return best, worst


class RIPFilter(Filter):
    """RIP as a :class:`~loopwright.sdk.filter.Filter` over records ``{"responses", "rewards", "lengths"}``.

    Args:
        thresholds: see :class:`RIPThresholds` (default: the paper's 50/50/50).
        min_valid: prompts with fewer valid rewards are dropped before filtering (2: one response cannot be both
            the chosen and the rejected one).

    ``score`` returns one dict per record: the metrics and pair indices, or ``{"n_valid": k}`` alone when the
    prompt has no valid pair. ``keep(scores, thresholds=None)`` decides; ``last_thresholds`` holds the absolute
    taus it used.
    """

    name = "rip"

    def __init__(self, thresholds: RIPThresholds | None = None, min_valid: int = 2):
        if not isinstance(min_valid, int) or min_valid < 1:
            raise ValueError(f"min_valid={min_valid!r} must be an integer >= 1 (the paper needs a pair: 2)")
        self.thresholds = thresholds or RIPThresholds()
        self.min_valid = min_valid
        self.last_thresholds: dict[str, float | None] = {}

    # ------------------------------------------------------------------------------------------ scoring

    def score_one(self, record: dict[str, Any]) -> dict[str, float]:
        rewards = list(record.get("rewards") or [])
        responses = list(record.get("responses") or [])
        lengths = list(record.get("lengths") or [])
        if len(rewards) != len(responses) or (lengths and len(lengths) != len(responses)):
            raise ValueError(
                f"record {record.get('id', '?')!r}: {len(responses)} responses, {len(rewards)} rewards and "
                f"{len(lengths)} lengths; pass one reward (None when unscored) and one length per response"
            )
        n_valid = sum(r is not None and math.isfinite(r) for r in rewards)
        pair = best_worst(rewards)
        if pair is None or n_valid < self.min_valid:
            return {"n_valid": float(n_valid)}
        w, lo = pair
        length = lengths[lo] if lengths else len(responses[lo])
        scores = PairScores(
            chosen_idx=w, rejected_idx=lo, chosen_reward=rewards[w], rejected_reward=rewards[lo],
            rejected_length=float(length), reward_gap=rewards[w] - rewards[lo], n_valid=n_valid,
        ).model_dump()
        if responses[w] == responses[lo]:
            scores["identical"] = 1.0
        return {k: float(v) for k, v in scores.items()}

    def score(self, records: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """Pair and measure every record (reads rewards; no thresholds involved)."""
        return [self.score_one(r) for r in records]

    # ------------------------------------------------------------------------------------------ deciding

    def pre_reason(self, s: dict[str, float]) -> str | None:
        """The reason a prompt is out before any threshold (no pair), or None."""
        if "rejected_reward" not in s:
            return "no_valid_rewards" if s.get("n_valid", 0) == 0 else "too_few_valid_rewards"
        if s.get("identical"):
            return "chosen_equals_rejected"
        return None

    def keep(self, scores: Sequence[dict[str, float]], thresholds: RIPThresholds | None = None) -> list[Decision]:
        """Keep/drop each prompt; percentiles are taken over the prompts with a valid, non-identical pair."""
        th = thresholds or self.thresholds
        pool = [s for s in scores if self.pre_reason(s) is None]
        tau = th.resolve(pool)
        self.last_thresholds = tau
        out = []
        for s in scores:
            why = self.pre_reason(s)
            if why is not None:
                out.append(Decision(keep=False, reason=why))
                continue
            failed = []
            if tau["rejected_reward"] is not None and s["rejected_reward"] < tau["rejected_reward"]:
                failed.append(RULE_REASONS["rejected_reward"])
            if tau["rejected_length"] is not None and s["rejected_length"] < tau["rejected_length"]:
                failed.append(RULE_REASONS["rejected_length"])
            if tau["reward_gap"] is not None and s["reward_gap"] > tau["reward_gap"]:
                failed.append(RULE_REASONS["reward_gap"])
            out.append(Decision(keep=not failed, reason=";".join(failed) or None))
        return out
