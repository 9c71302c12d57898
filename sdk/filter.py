"""The Filter interface: ``score(records)`` then ``keep(scores)``.

Scoring (expensive: rewards, generations) is separate from deciding (cheap: thresholds), so thresholds can be
recomputed without re-scoring, NeMo-Curator style; every dropped record carries a reason (datatrove's
exclusion writer habit).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .types import Decision


class Filter(ABC):
    name: str = "filter"

    @abstractmethod
    def score(self, records: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """One dict of named scores per record."""

    @abstractmethod
    def keep(self, scores: Sequence[dict[str, float]]) -> list[Decision]:
        """One keep/drop decision (with a reason when dropped) per score dict."""

    def __call__(self, records: Sequence[dict[str, Any]]) -> list[Decision]:
        return self.keep(self.score(records))
