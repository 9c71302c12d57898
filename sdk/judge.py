"""The Judge interface: pointwise ``score``, pairwise ``compare`` and ``rank``, all batched, all -> Verdicts.

A judge implements the kinds it supports and lists them in ``kinds``. Every call returns one
:class:`~loopwright.sdk.types.Verdict` per item; an unparseable judgement is an invalid Verdict, never an
exception and never a default score (spec/ecosystem.md §0, finding 4).

Async-first like :class:`~loopwright.sdk.generator.Generator`: ``ascore`` / ``acompare`` are the coroutine
forms of ``score`` / ``compare``. A judge overrides either form of each kind and gets the other: an async-only
judge's ``score`` runs ``ascore`` through :func:`~loopwright.sdk.generator.run_sync` (which also works inside a
running event loop), and a sync-only judge's ``ascore`` runs ``score`` in a worker thread
(``asyncio.to_thread``) so it does not block the loop. A judge that overrides neither raises
``NotImplementedError`` from both. LLM judges implement both natively (``generate`` / ``agenerate``).
"""

from __future__ import annotations

import asyncio
from abc import ABC
from collections.abc import Sequence
from typing import ClassVar

from .generator import run_sync
from .types import Prompt, Verdict


class Judge(ABC):  # noqa: B024 - a judge implements the kinds it supports
    """Base class of judges (LLM judges, reward models, scripted judges, ...)."""

    kinds: ClassVar[frozenset[str]] = frozenset()
    name: str = "judge"

    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(Judge, method)

    def _missing(self, kind: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} is not a {kind} judge (kinds={sorted(self.kinds)})")

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Pointwise: one Verdict with ``score`` per (prompt, response)."""
        if not self._overrides("ascore"):
            raise self._missing("pointwise")
        return run_sync(self.ascore(prompts, responses))

    async def ascore(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Async :meth:`score`; by default ``score`` in a worker thread."""
        if not self._overrides("score"):
            raise self._missing("pointwise")
        return await asyncio.to_thread(self.score, prompts, responses)

    def compare(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Verdict]:
        """Pairwise: one Verdict with ``preference`` in {A, B, tie} per (prompt, a, b)."""
        if not self._overrides("acompare"):
            raise self._missing("pairwise")
        return run_sync(self.acompare(prompts, responses_a, responses_b))

    async def acompare(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Verdict]:
        """Async :meth:`compare`; by default ``compare`` in a worker thread."""
        if not self._overrides("compare"):
            raise self._missing("pairwise")
        return await asyncio.to_thread(self.compare, prompts, responses_a, responses_b)

    def rank(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[Verdict]:
        """Ranking: one Verdict with ``ranking`` (indices, best first) per prompt."""
        raise self._missing("ranking")
