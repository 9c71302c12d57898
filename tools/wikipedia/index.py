"""Offline search backend: an SQLite FTS5 index with BM25 ranking, built from any text corpus.

The paper's WikiSearch is BM25 over the KILT Wikipedia dump followed by SBERT re-ranking (loops.md §1.3); this is the
BM25 stage with no extra dependency (SQLite's FTS5 ships with CPython's ``sqlite3``; tokenizer ``porter unicode61``).
Documents are ``{title, text}`` records; each text is split into paragraphs (blank-line separated; paragraphs over
``max_chars`` are cut at sentence ends) and every paragraph is a row, so a hit is a paragraph, as in the paper.

Sources for :func:`build_index`: an iterable of dicts (a ``datasets.Dataset`` is one), a JSONL file, or a folder
written by ``Dataset.save_to_disk``. Queries are reduced to their word tokens, each quoted and OR-ed, so no FTS5
query syntax from a model ever reaches SQLite.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["OfflineIndex", "build_index", "iter_documents", "split_paragraphs"]

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_SENT_END_RE = re.compile(r"(?<=[.!?])\s+")
MAX_QUERY_TERMS = 64


def split_paragraphs(text: str, max_chars: int = 1500) -> list[str]:
    """Blank-line separated paragraphs, long ones cut at sentence ends into pieces of at most ~``max_chars``."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text or ""):
        para = " ".join(para.split())
        if not para:
            continue
        if len(para) <= max_chars:
            out.append(para)
            continue
        piece = ""
        for sent in _SENT_END_RE.split(para):
            if piece and len(piece) + 1 + len(sent) > max_chars:
                out.append(piece)
                piece = ""
            piece = f"{piece} {sent}".strip()
        if piece:
            out.append(piece)
    return out


def iter_documents(source: Any, title_field: str = "title", text_field: str = "text") -> Iterator[dict[str, str]]:
    """Yield ``{"title", "text"}`` from an iterable of mappings, a ``.jsonl`` path or a saved ``datasets`` folder."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            import datasets

            records: Iterable[Any] = datasets.load_from_disk(str(path))
        elif path.is_file():
            records = (json.loads(line) for line in path.open(encoding="utf-8") if line.strip())
        else:
            raise FileNotFoundError(f"corpus {path} not found: pass a .jsonl file or a Dataset.save_to_disk folder")
    else:
        records = source
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping) or text_field not in rec:
            raise ValueError(f"document {i} has no {text_field!r} field (got {rec!r:.200}); "
                             f"set text_field= to the column holding the text")
        yield {"title": str(rec.get(title_field) or f"doc-{i}"), "text": str(rec[text_field])}


def build_index(docs: Any, path: str | Path, title_field: str = "title", text_field: str = "text",
                max_chars: int = 1500, overwrite: bool = True) -> int:
    """Build an FTS5 paragraph index at ``path`` from ``docs``; return the number of paragraphs indexed."""
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"index {path} exists; pass overwrite=True to rebuild it")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    n = 0
    try:
        con.execute("CREATE VIRTUAL TABLE paragraphs USING fts5(title, text, doc UNINDEXED, para UNINDEXED, "
                    "tokenize='porter unicode61')")

        def rows() -> Iterator[tuple[str, str, int, int]]:
            nonlocal n
            for d, doc in enumerate(iter_documents(docs, title_field, text_field)):
                for p, para in enumerate(split_paragraphs(doc["text"], max_chars)):
                    n += 1
                    yield doc["title"], para, d, p

        con.executemany("INSERT INTO paragraphs(title, text, doc, para) VALUES (?, ?, ?, ?)", rows())
        con.execute("INSERT INTO paragraphs(paragraphs) VALUES ('optimize')")
        con.commit()
    finally:
        con.close()
    tmp.replace(path)
    return n


class OfflineIndex:
    """Read side of an index built by :func:`build_index`: ``search(query, k)`` → top paragraphs by BM25.

    ``title_weight`` multiplies BM25 matches in the title column (1.0 = title counts like body text).
    """

    def __init__(self, path: str | Path, title_weight: float = 2.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"index {self.path} not found: build it with `loopwright tools build-index`")
        self.title_weight = title_weight
        self._local: dict[int, sqlite3.Connection] = {}

    def _con(self) -> sqlite3.Connection:
        import threading

        tid = threading.get_ident()
        if tid not in self._local:  # sqlite connections are per thread; read-only URI
            self._local[tid] = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return self._local[tid]

    def __len__(self) -> int:
        return self._con().execute("SELECT count(*) FROM paragraphs").fetchone()[0]

    def search(self, query: str, k: int = 3) -> list[dict[str, Any]]:
        """Top ``k`` paragraphs ``{"title", "text", "score"}`` (higher score = better; BM25 sign flipped)."""
        terms = list(dict.fromkeys(t.lower() for t in _WORD_RE.findall(query or "")))[:MAX_QUERY_TERMS]
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        rows = self._con().execute(
            "SELECT title, text, bm25(paragraphs, ?, 1.0) AS s FROM paragraphs WHERE paragraphs MATCH ? "
            "ORDER BY s LIMIT ?", (self.title_weight, match, int(k))).fetchall()
        return [{"title": t, "text": x, "score": -s} for t, x, s in rows]

    def close(self) -> None:
        for con in self._local.values():
            con.close()
        self._local.clear()
