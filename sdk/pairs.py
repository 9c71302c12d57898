"""Preference pairs from scored responses: best vs worst with length control ρ and a score margin.

The rule of Self-Rewarding (Yuan et al. 2024, arXiv 2401.10020: best vs worst judged response) with
Meta-Rewarding's length control (Wu et al. 2024, arXiv 2407.19594, spec/loops.md §3.3 [S]). For one prompt with
responses ``y`` scored ``S(y)`` (unscored responses take no part) and lengths ``len(y)``:

- ``S_max = max S``, ``S_min = min S``;
- chosen = the *shortest* ``y`` with ``S(y) ∈ [(1−ρ)·S_max + ρ·S_min, S_max]`` (the top quality tier);
- rejected = the *longest* ``y`` with ``S(y) ∈ [S_min, (1−ρ)·S_min + ρ·S_max]`` (the bottom tier);
- skip the prompt when ``S_max == S_min`` or chosen == rejected (same response or same text).

ρ = 0 recovers "best vs worst" (ties in score broken by length: shortest best, longest worst). Ties in length
are broken by score (higher for chosen, lower for rejected), then by position (first sample wins), so the choice
is a pure function of its inputs. The paper used ρ = 0.4 at iteration 4 (Self-Rewarding+LC used 0.1). It lives in
sdk so that the public ``BuildPairs`` stage (:mod:`loopwright.sdk.loop_stages`) and the Meta-Rewarding loop use
the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairChoice", "select_pair"]

_EPS = 1e-9


@dataclass(frozen=True)
class PairChoice:
    """The outcome for one prompt: indices of chosen/rejected, or ``None`` with ``skip_reason``."""

    chosen: int | None
    rejected: int | None
    skip_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.chosen is not None and self.rejected is not None


def select_pair(scores: Sequence[float | None], lengths: Sequence[int], rho: float,
                      texts: Sequence[str] | None = None) -> PairChoice:
    """Pick (chosen, rejected) response indices for one prompt with length control ``rho`` ∈ [0, 1].

    ``scores[i]`` is ``None`` for a response no judgment could score; ``texts`` (optional) lets identical
    chosen/rejected texts be skipped too.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho={rho} must lie in [0, 1] (0 = best vs worst)")
    if len(scores) != len(lengths) or (texts is not None and len(texts) != len(scores)):
        raise ValueError(f"scores ({len(scores)}), lengths ({len(lengths)}) and texts must have the same length")
    scored = [i for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return PairChoice(None, None, f"{len(scored)} scored response(s); need 2")
    s = {i: float(scores[i]) for i in scored}  # type: ignore[arg-type]
    s_max, s_min = max(s.values()), min(s.values())
    if s_max - s_min <= _EPS:
        return PairChoice(None, None, f"all scored responses tie at {s_max:g}")
    top_lo = (1.0 - rho) * s_max + rho * s_min
    bottom_hi = (1.0 - rho) * s_min + rho * s_max
    top = [i for i in scored if s[i] >= top_lo - _EPS]
    bottom = [i for i in scored if s[i] <= bottom_hi + _EPS]
    chosen = min(top, key=lambda i: (lengths[i], -s[i], i))
    rejected = min(bottom, key=lambda i: (-lengths[i], s[i], i))
    if chosen == rejected:
        return PairChoice(None, None, "chosen and rejected are the same response")
    if texts is not None and texts[chosen] == texts[rejected]:
        return PairChoice(None, None, "chosen and rejected have the same text")
    if s[chosen] <= s[rejected]:
        return PairChoice(None, None, f"chosen score {s[chosen]:g} is not above rejected {s[rejected]:g}")
    return PairChoice(chosen, rejected)
