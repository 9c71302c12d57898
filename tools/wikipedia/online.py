"""Online search backend: live Wikipedia through ``wikipedia-api`` (0.16), failing fast when offline.

wikipedia-api has no full-text search: the query is looked up as a page title and the page's summary and section
texts come back as paragraphs. The client is built with ``max_retries=0`` and a short timeout because the defaults
spend 7 s in retries before failing on a machine without internet (environment.md §6); every network failure becomes
an error that starts with ``"offline: "``.
"""

from __future__ import annotations

from typing import Any

from .index import split_paragraphs

__all__ = ["OfflineError", "OnlineWikipedia"]

DEFAULT_USER_AGENT = "loopwright-tools/0.1 (https://github.com/loopwright; research use)"


class OfflineError(ConnectionError):
    """Wikipedia could not be reached."""


class OnlineWikipedia:
    """``search(query, k)`` → paragraphs of the Wikipedia page titled ``query`` (empty when no such page)."""

    def __init__(self, language: str = "en", user_agent: str = DEFAULT_USER_AGENT, timeout_s: float = 2.0,
                 max_retries: int = 0):
        import wikipediaapi

        self._wiki = wikipediaapi.Wikipedia(user_agent=user_agent, language=language, max_retries=max_retries,
                                            timeout=timeout_s)
        self._exc = wikipediaapi.WikipediaException

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        import httpx

        try:
            page = self._wiki.page(query)
            if not page.exists():
                return []
            title = page.title
            texts = [page.summary] + [s.text for s in page.sections]
        except (self._exc, httpx.HTTPError, OSError) as e:
            raise OfflineError(f"offline: cannot reach Wikipedia ({type(e).__name__}: {e})") from None
        paras = [p for t in texts for p in split_paragraphs(t)]
        return [{"title": title, "text": p, "score": None} for p in paras[:k]]
