"""Verdict parsers: the one place where judge text becomes a value (spec/loops.md §0.3, §4.5; ecosystem.md §0.4).

Every parser is a pure function that never raises on any text and returns a :class:`ParseResult`: a value, or
``None`` with a reason. A parser never invents a value: text without its marker gives ``None``, never a
default score (the bug class of TRL's ``-1``, openai/evals' minimum score and NeMo Gym's "malformed = tie").

Each parser has a version string, recorded in every Verdict's provenance; bump it whenever its behaviour
changes, so verdicts parsed under different rules are never mixed silently (pydantic_evals' evaluator version).

- :func:`parse_score` — additive-rubric ``Score: <number>`` (Self-/Meta-Rewarding, §3.2): the *last*
  ``Score:`` followed by a number; integers and decimals (4.5 / 4.75 appear after training, §0.3); markdown
  (``**Score:** 4``) and an explicit ``/5`` denominator are tolerated; out-of-range values are rejected.
- :func:`parse_pairwise` — ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (tie), the MT-Bench / STE convention. When two
  *different* labels appear the result is invalid (``"ambiguous"``): this is STE's training-time
  ``parse_judgement`` (§4.5). STE's RewardBench scoring path instead checked ``[[A]]`` first, so an output
  naming both counted as A — a silent bias toward slot A, and exactly what a model echoing the instructions
  ("[[A]] if A is better, [[B]] if B is better") produces. Repeating the same label is fine.
- :func:`parse_meta_winner` — the meta-judge's ``Winner: Judgement A|B`` line (Meta-Rewarding §3.4); the last
  such line wins, like ``Score:``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

__all__ = [
    "META_WINNER_PARSER_VERSION",
    "PAIRWISE_PARSER_VERSION",
    "PARSER_VERSIONS",
    "SCORE_PARSER_VERSION",
    "ParseResult",
    "parse_meta_winner",
    "parse_pairwise",
    "parse_score",
]

SCORE_PARSER_VERSION = "score/1"
PAIRWISE_PARSER_VERSION = "pairwise/1"
META_WINNER_PARSER_VERSION = "meta_winner/1"
PARSER_VERSIONS = {
    "score": SCORE_PARSER_VERSION,
    "pairwise": PAIRWISE_PARSER_VERSION,
    "meta_winner": META_WINNER_PARSER_VERSION,
}

T = TypeVar("T")
Preference = Literal["A", "B", "tie"]


@dataclass(frozen=True)
class ParseResult(Generic[T]):
    """A parsed value, or ``value=None`` with ``reason`` saying why not.

    ``span`` is the (start, end) character range of the marker that produced the value (used to find the
    verdict token for logprob-based soft preferences); ``None`` when nothing parsed.
    """

    value: T | None
    reason: str | None = None
    span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


# --------------------------------------------------------------------------------------------- Score:

_NUMBER = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
# "Score:" (any case, optional markdown bold/italics around either part), a number, an optional "/ N".
_SCORE_RE = re.compile(
    r"score[*_]*\s*[:：]\s*[*_]*\s*(?P<num>" + _NUMBER + r")(?![\w.]*\d)(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_SCORE_MARKER_RE = re.compile(r"score[*_]*\s*[:：]", re.IGNORECASE)


def parse_score(text: str, low: float = 0, high: float = 5) -> ParseResult[float]:
    """The value of the last ``Score: <number>`` in ``text`` if it lies in ``[low, high]``.

    Invalid (value ``None``) with a reason when: there is no ``Score:`` line, the marker has no number after
    it (e.g. an echoed ``Score: <points>``), the number is out of range, or a ``/N`` denominator differs
    from ``high`` (a ``Score: 8/10`` on a 5-point rubric is not rescaled).
    """
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    try:
        matches = list(_SCORE_RE.finditer(text))
    except Exception as exc:  # pragma: no cover - regex on str cannot fail; keep the never-raise promise
        return ParseResult(None, f"parser error: {exc!r}")
    if not matches:
        if _SCORE_MARKER_RE.search(text):
            return ParseResult(None, "'Score:' found but no number after it")
        return ParseResult(None, "no 'Score: <number>' line")
    m = matches[-1]
    value = float(m.group("num"))
    if not math.isfinite(value):  # pragma: no cover - the pattern only admits finite decimals
        return ParseResult(None, f"score {m.group('num')!r} is not finite")
    den = m.group("den")
    if den is not None and float(den) != float(high):
        return ParseResult(None, f"score {m.group(0).strip()!r} uses a /{den} scale, expected /{high:g}")
    if not low <= value <= high:
        return ParseResult(None, f"score {value:g} outside [{low:g}, {high:g}]")
    return ParseResult(value, None, m.span("num"))


# --------------------------------------------------------------------------------------------- [[A]] / [[B]]

_PAIR_RE = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_LABELS: dict[str, Preference] = {"A": "A", "B": "B", "C": "tie"}


def parse_pairwise(text: str) -> ParseResult[Preference]:
    """``"A"`` / ``"B"`` / ``"tie"`` from ``[[A]]`` / ``[[B]]`` / ``[[C]]``; ``None`` when absent or ambiguous.

    ``span`` is the range of the verdict *letter* in its last occurrence.
    """
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    matches = list(_PAIR_RE.finditer(text))
    if not matches:
        return ParseResult(None, "no [[A]]/[[B]]/[[C]] verdict")
    labels = sorted({m.group(1) for m in matches})
    if len(labels) > 1:
        shown = ", ".join(f"[[{x}]]" for x in labels)
        return ParseResult(None, f"ambiguous: both {shown} appear")
    last = matches[-1]
    return ParseResult(_LABELS[last.group(1)], None, last.span(1))


# --------------------------------------------------------------------------------------------- Winner:

_WINNER_RE = re.compile(
    r"winner[*_]*\s*[:：]\s*[*_]*\s*(?:(?:the\s+)?judge?ments?\s*)?[\[(]?\s*([AB])\b",
    re.IGNORECASE,
)
_WINNER_MARKER_RE = re.compile(r"winner[*_]*\s*[:：]", re.IGNORECASE)


def parse_meta_winner(text: str) -> ParseResult[Literal["A", "B"]]:
    """``"A"`` / ``"B"`` from the last ``Winner: Judgement A`` line (also ``Judgment``, ``**Winner:** B``,
    ``Winner: A``); ``None`` with a reason otherwise. The letter must be upper case (``a``/``b`` are words)."""
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    matches = [m for m in _WINNER_RE.finditer(text) if m.group(1) in ("A", "B")]
    if not matches:
        if _WINNER_MARKER_RE.search(text):
            return ParseResult(None, "'Winner:' found but no 'Judgement A' or 'Judgement B' after it")
        return ParseResult(None, "no 'Winner: Judgement A|B' line")
    m = matches[-1]
    letter: Literal["A", "B"] = "A" if m.group(1) == "A" else "B"
    return ParseResult(letter, None, m.span(1))
