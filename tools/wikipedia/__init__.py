"""WikipediaSearch: one Tool, two backends — :class:`OfflineIndex` (SQLite FTS5/BM25 over any corpus) and
:class:`OnlineWikipedia` (wikipedia-api, fails fast with an ``"offline: ..."`` error) — plus the Wiki-QA
answer-extraction step (:func:`extract_answer`). See loops.md §1.3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, Field

from ...sdk.tool import Tool
from ...sdk.types import ToolResult
from .answer import build_answer_prompt, extract_answer, parse_answer
from .index import OfflineIndex, build_index, iter_documents, split_paragraphs
from .online import OfflineError, OnlineWikipedia

__all__ = ["OfflineError", "OfflineIndex", "OnlineWikipedia", "SearchBackend", "WikipediaSearch",
           "WikipediaSearchArgs", "build_answer_prompt", "build_index", "extract_answer", "iter_documents",
           "parse_answer", "split_paragraphs"]


class SearchBackend(Protocol):
    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]: ...


class WikipediaSearchArgs(BaseModel):
    query: str = Field(description="what to look up, e.g. 'Scott Derrickson nationality'")
    k: int = Field(default=3, ge=1, le=20, description="how many paragraphs to return")


class WikipediaSearch(Tool):
    """``run({"query", "k"}).value`` = list of ``{"title", "text", "score"}`` paragraphs, best first.

    ``WikipediaSearch(index="wiki.sqlite")`` uses an offline index, ``WikipediaSearch()`` the online backend, and
    ``WikipediaSearch(backend=obj)`` any object with ``search(query, k)``.
    """

    name: ClassVar[str] = "wikipedia_search"
    description: ClassVar[str] = "Search Wikipedia and return the best-matching paragraphs with their page titles."
    args_model: ClassVar[type[BaseModel]] = WikipediaSearchArgs

    def __init__(self, index: str | Path | None = None, backend: SearchBackend | None = None,
                 timeout_s: float = 2.0):
        if index is not None and backend is not None:
            raise ValueError("pass either index= (an offline index path) or backend=, not both")
        if backend is None:
            backend = OfflineIndex(index) if index is not None else OnlineWikipedia(timeout_s=timeout_s)
        self.backend = backend

    def _run(self, args: BaseModel) -> Any:
        assert isinstance(args, WikipediaSearchArgs)
        try:
            return self.backend.search(args.query, args.k)
        except OfflineError as e:
            return ToolResult(ok=False, error=str(e))
