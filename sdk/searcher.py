"""The Searcher interface: ``search(problem) -> SearchResult`` (ranked paths, chosen answer, budget)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from .types import SearchResult


class Searcher(ABC):
    @abstractmethod
    def search(self, problem: str) -> SearchResult:
        """Search for solutions of one problem."""
