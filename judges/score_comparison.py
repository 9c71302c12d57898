"""``ScoreComparisonJudge``: a pairwise judge made of any pointwise judge (prefer the higher score).

Judge evaluation and the pairwise loops take pairwise judges; a rubric judge or a reward model scores one
response at a time. This wraps one: both responses are scored in one batched ``score`` call, and the
preference is the higher score (``tie`` when the two are within ``margin``). The scores do not depend on the
order the responses are shown in, so there is no position bias to debias and ``both_orders`` is False.
``p_a`` is ``sigmoid(score_a - score_b)``, a monotone soft preference (Bradley-Terry on the score gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from loopwright.sdk.judge import Judge
from loopwright.sdk.types import Prompt, SwapRecord, Verdict

from .adapters.trl import RewardFuncMixin

__all__ = ["ScoreComparisonJudge"]


class ScoreComparisonJudge(RewardFuncMixin, Judge):
    """Compare two responses by a pointwise judge's scores.

    Args:
        judge: any Judge implementing ``score`` (PointwiseJudge, ExpectedScoreJudge, RewardModelJudge, ...).
        margin: score differences at or below it are a tie (default 0: only equal scores tie).
        name: a display name (default ``ScoreComparison(<judge name>)``).
    """

    kinds = frozenset({"pairwise"})
    both_orders = False
    order_invariant = True
    """Each response is scored alone, so judge evaluation does not present the swapped order."""

    def __init__(self, judge: Judge, *, margin: float = 0.0, name: str | None = None) -> None:
        if not isinstance(judge, Judge) or "pointwise" not in judge.kinds:
            raise TypeError(f"ScoreComparisonJudge needs a pointwise Judge, got {type(judge).__name__}")
        if margin < 0:
            raise ValueError(f"margin={margin}; use a score difference >= 0")
        self.judge = judge
        self.margin = float(margin)
        self.name = name or f"ScoreComparison({getattr(judge, 'name', type(judge).__name__)})"
        self.short_name = name or "score_comparison"

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[Verdict]:
        """One Verdict per pair, from one ``score`` call over all ``2 n`` responses."""
        n = len(prompts)
        if len(responses_a) != n or len(responses_b) != n:
            raise ValueError(f"inputs must have the same length, got prompts={n}, responses_a={len(responses_a)}, "
                             f"responses_b={len(responses_b)}")
        if n == 0:
            return []
        scores = self.judge.score([*prompts, *prompts], [*responses_a, *responses_b])
        return [self._verdict(scores[i], scores[n + i]) for i in range(n)]

    def __call__(self, prompt: Prompt, response_a: str, response_b: str) -> Verdict:
        """Judge a single pair."""
        return self.compare([prompt], [response_a], [response_b])[0]

    def _verdict(self, va: Verdict, vb: Verdict) -> Verdict:
        usage = va.usage + vb.usage
        raw = f"A: {va.raw}\nB: {vb.raw}"
        bad = [f"response {k}: {v.invalid_reason}" for k, v in (("A", va), ("B", vb)) if not v.valid]
        if bad:
            return Verdict(kind="pairwise", valid=False, invalid_reason="; ".join(bad), raw=raw, judge=va.judge,
                           usage=usage)
        gap = float(va.score) - float(vb.score)  # type: ignore[arg-type]
        pref = "tie" if abs(gap) <= self.margin else ("A" if gap > 0 else "B")
        return Verdict(kind="pairwise", valid=True, preference=pref, p_a=1.0 / (1.0 + math.exp(-gap)),
                       samples=[float(va.score), float(vb.score)], raw=raw,  # type: ignore[arg-type]
                       swap=SwapRecord(forward=pref), judge=va.judge, usage=usage)
