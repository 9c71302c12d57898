"""Confidence intervals for the numbers loops report: proportions (Wilson) and means over seeds (Student t).

Every accuracy a loopwright report prints carries its ``n`` and a 95% interval, and every comparison is made over
seeds (docs/architecture.md, "Oracle first"). Two intervals cover what the loops report:

- :func:`proportion_ci` -- an accuracy ``k / n`` from one run: the Wilson score interval (``scipy.stats.binomtest``
  ``proportion_ci(method="wilson")``), which keeps its coverage near 95% at small ``n`` and at ``p`` near 0 or 1,
  where the normal ("Wald") interval collapses to a point (Brown, Cai & DasGupta 2001).
- :func:`mean_ci` -- a metric averaged over independent seeds: the Student-t interval ``mean +- t_{0.975, s-1} *
  sd / sqrt(s)`` (3 seeds: ``t = 4.30``, so wide intervals are expected and honest).
- :func:`difference_ci` -- the gain between two arms over seeds (paired by seed when both have the same seeds).

scipy is imported inside the functions, so ``import loopwright.sdk`` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

__all__ = ["Interval", "difference_ci", "format_interval", "mean_ci", "proportion_ci"]


class Interval(BaseModel):
    """An estimate with its confidence interval: ``estimate`` in ``[lo, hi]`` from ``n`` observations.

    ``method`` is ``"wilson"`` (a proportion from one run; ``n`` = items) or ``"t"`` (a mean over runs; ``n`` =
    seeds). ``lo``/``hi`` are ``None`` where no interval exists (a mean of a single seed).
    """

    model_config = ConfigDict(frozen=True)

    estimate: float
    lo: float | None
    hi: float | None
    n: int
    method: str
    confidence: float = 0.95
    successes: int | None = None

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (``None`` without an interval)."""
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval (``False`` without one)."""
        return self.lo is not None and self.hi is not None and not (self.lo <= value <= self.hi)


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval of the proportion ``successes / n``."""
    if n <= 0:
        raise ValueError(f"proportion_ci needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"proportion_ci needs 0 <= successes <= n, got {successes} of {n}")
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(estimate=successes / n, lo=float(ci.low), hi=float(ci.high), n=n, method="wilson",
                    confidence=confidence, successes=int(successes))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``values`` (one value per seed); no interval for a single value."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        raise ValueError("mean_ci needs at least one finite value")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return Interval(estimate=m, lo=None, hi=None, n=1, method="t", confidence=confidence)
    from scipy.stats import t

    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    half = float(t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sd / math.sqrt(len(vals))
    return Interval(estimate=m, lo=m - half, hi=m + half, n=len(vals), method="t", confidence=confidence)


def difference_ci(treatment: Sequence[float], control: Sequence[float], confidence: float = 0.95,
                  paired: bool = True) -> Interval:
    """Interval of ``mean(treatment) - mean(control)`` over seeds.

    ``paired=True`` (same seeds, same order in both lists) uses the per-seed differences; otherwise Welch's
    unequal-variance t interval.
    """
    a = [float(v) for v in treatment]
    b = [float(v) for v in control]
    if paired:
        if len(a) != len(b):
            raise ValueError(f"paired difference needs equal lengths, got {len(a)} and {len(b)}")
        ci = mean_ci([x - y for x, y in zip(a, b, strict=True)], confidence)
        return ci.model_copy(update={"method": "paired-t"})
    if len(a) < 2 or len(b) < 2:
        raise ValueError("an unpaired difference needs at least 2 values per arm")
    from scipy.stats import t

    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(estimate=ma - mb, lo=ma - mb, hi=ma - mb, n=len(a) + len(b), method="welch-t",
                        confidence=confidence)
    dof = (va + vb) ** 2 / ((va ** 2) / (len(a) - 1) + (vb ** 2) / (len(b) - 1))
    half = float(t.ppf(0.5 + confidence / 2, dof)) * se
    return Interval(estimate=ma - mb, lo=ma - mb - half, hi=ma - mb + half, n=len(a) + len(b), method="welch-t",
                    confidence=confidence)


def format_interval(ci: Interval | dict | None, digits: int = 3) -> str:
    """``0.420 [0.377, 0.464] n=500`` (or ``0.420 n=1`` without an interval)."""
    if ci is None:
        return "-"
    if isinstance(ci, dict):
        ci = Interval.model_validate(ci)
    est = f"{ci.estimate:.{digits}f}"
    if ci.lo is None or ci.hi is None:
        return f"{est} n={ci.n}"
    return f"{est} [{ci.lo:.{digits}f}, {ci.hi:.{digits}f}] n={ci.n}"
