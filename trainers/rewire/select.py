"""Top-p % selection by score and REWIRE's diagnostics (spec/loops.md §6.1 steps 3-4, Appendix A.6).

- :func:`top_percent` keeps ``ceil(pct/100 * n)`` items with the highest scores (ties: lower index first), the
  paper's "top 10 %" of the pool by classifier score [V: 10 %].
- :func:`recycled_fraction` = |rewrite selected and raw not selected| / |rewrite selected| (paper: ~81.7 % of the
  selected rewrites come from documents the raw filter discards [V]).
- :func:`spearman` = rank correlation with average ranks for ties (paper: 0.179 between a document's raw score and
  its rewrite's score on 10K docs [V]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["rank_average", "recycled_fraction", "spearman", "top_percent"]


def top_percent(scores: Sequence[float | None], pct: float) -> list[int]:
    """Indices of the ``ceil(pct% * n_valid)`` highest scores (None / NaN never selected), best first."""
    if not 0 < pct <= 100:
        raise ValueError(f"pct={pct} must be in (0, 100]")
    valid = [(i, s) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    k = math.ceil(pct / 100.0 * len(valid) - 1e-9)
    return [i for i, _ in sorted(valid, key=lambda t: (-t[1], t[0]))[:k]]


def recycled_fraction(raw_selected: Sequence[bool], rewrite_selected: Sequence[bool]) -> float | None:
    """Share of selected rewrites whose raw document is *not* selected; None when no rewrite is selected."""
    if len(raw_selected) != len(rewrite_selected):
        raise ValueError(f"{len(raw_selected)} raw flags but {len(rewrite_selected)} rewrite flags")
    chosen = [r for r, w in zip(raw_selected, rewrite_selected, strict=True) if w]
    return None if not chosen else sum(not r for r in chosen) / len(chosen)


def rank_average(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties get the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson on average ranks); None for fewer than 2 pairs or a constant input."""
    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    ra, rb = rank_average(a), rank_average(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return None
    return cov / math.sqrt(va * vb)
