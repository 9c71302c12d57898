"""Marker-based extraction of a REWIRE rewrite (spec/loops.md §6.2 "Parser").

The rewrite is the text between exactly one ``<improved response starts>`` and a following
``<improved response ends>``. A generation is discarded, with a reason, when it was cut at ``max_tokens``
(``truncated``), lacks a marker (``missing_start_marker`` / ``missing_end_marker``), repeats one
(``duplicate_markers``), has them in the wrong order (``markers_out_of_order``) or holds nothing between them
(``empty_rewrite``). The thinking block is extracted when present (it is optional for the parse).
"""

from __future__ import annotations

from dataclasses import dataclass

from .prompt import IMPROVED_END, IMPROVED_START, THINKING_END, THINKING_START

__all__ = ["PARSER_VERSION", "RewriteParse", "extract_rewrite"]

PARSER_VERSION = "rewire_markers/1"


@dataclass(frozen=True)
class RewriteParse:
    ok: bool
    text: str | None = None
    thinking: str | None = None
    reason: str | None = None


def _between(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i < 0 or j < 0:
        return None
    return text[i + len(start):j].strip()


def extract_rewrite(text: str | None, finish_reason: str = "stop") -> RewriteParse:
    """Parse one rewriter generation; never raises on model output."""
    if not isinstance(text, str) or not text.strip():
        return RewriteParse(False, reason="empty_generation")
    if finish_reason == "length":
        return RewriteParse(False, reason="truncated")
    n_start, n_end = text.count(IMPROVED_START), text.count(IMPROVED_END)
    if n_start == 0:
        return RewriteParse(False, reason="missing_start_marker")
    if n_end == 0:
        return RewriteParse(False, reason="missing_end_marker")
    if n_start > 1 or n_end > 1:
        return RewriteParse(False, reason="duplicate_markers")
    if text.find(IMPROVED_END) < text.find(IMPROVED_START):
        return RewriteParse(False, reason="markers_out_of_order")
    body = _between(text, IMPROVED_START, IMPROVED_END)
    if not body:
        return RewriteParse(False, reason="empty_rewrite")
    return RewriteParse(True, text=body, thinking=_between(text, THINKING_START, THINKING_END))
