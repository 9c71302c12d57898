"""The Judge interface: pointwise ``score``, pairwise ``compare`` and ``rank``, all batched, all -> Verdicts.

A judge implements the kinds it supports and lists them in ``kinds``. Every call returns one
:class:`~loopwright.sdk.types.Verdict` per item; an unparseable judgement is an invalid Verdict, never an
exception and never a default score (spec/ecosystem.md §0, finding 4).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import ClassVar

from .types import Prompt, Verdict


class Judge(ABC):  # noqa: B024 - a judge implements the kinds it supports
    """Base class of judges (LLM judges, reward models, scripted judges, ...)."""

    kinds: ClassVar[frozenset[str]] = frozenset()
    name: str = "judge"

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Pointwise: one Verdict with ``score`` per (prompt, response)."""
        raise NotImplementedError(f"{type(self).__name__} is not a pointwise judge (kinds={sorted(self.kinds)})")

    def compare(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Verdict]:
        """Pairwise: one Verdict with ``preference`` in {A, B, tie} per (prompt, a, b)."""
        raise NotImplementedError(f"{type(self).__name__} is not a pairwise judge (kinds={sorted(self.kinds)})")

    def rank(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[Verdict]:
        """Ranking: one Verdict with ``ranking`` (indices, best first) per prompt."""
        raise NotImplementedError(f"{type(self).__name__} is not a ranking judge (kinds={sorted(self.kinds)})")
