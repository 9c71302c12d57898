"""Verdict parsers: the one place where judge text becomes a value (spec/loops.md §0.3, §4.5; ecosystem.md §0.4).

Every parser is a pure function that never raises on any text and returns a :class:`ParseResult`: a value, or
``None`` with a reason. A parser never invents a value: text without its marker gives ``None``, never a
default score (the bug class of TRL's ``-1``, openai/evals' minimum score and NeMo Gym's "malformed = tie").
Near misses are invalid with their reason, never rounded to the nearest value (issue 17, item 14).

Each parser has a version string, recorded in every Verdict's provenance; bump it whenever its behaviour
changes, so verdicts parsed under different rules are never mixed silently (pydantic_evals' evaluator version).

Judge output is untrusted text: every parser runs in linear time (a 100 KB adversarial input parses in well
under 10 ms; pinned by tests/judges/test_parsers.py). Markers are matched in ASCII only (``Score``, ``SCORE``
and ``score``, but not ``ſcore`` with U+017F, which Unicode case folding would accept).

- :func:`parse_score` — additive-rubric ``Score: <number>`` (Self-/Meta-Rewarding, §3.2): the *last*
  ``Score:`` followed by a number; integers and decimals (4.5 / 4.75 appear after training, §0.3); markdown
  (``**Score:** 4``), trailing punctuation (``Score: 4.``) and a ``/N`` denominator equal to the scale's top
  (``Score: 4/5``, ``Score: 4 / 5``: a common honest format) are accepted. Invalid: out-of-range values, another
  denominator (``8/10`` on a 5-point rubric is not rescaled), and near misses — ``5/5/5``, ``4,5`` (decimal comma
  or a list?), ``4-5`` (a range), ``1e5``, ``5²``, ``٣`` or ``５`` (non-ASCII digits), more than 16 digits.
- :func:`parse_pairwise` — ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (tie), the MT-Bench / STE convention. When two
  *different* labels appear the result is invalid (``"ambiguous"``): this is STE's training-time
  ``parse_judgement`` (§4.5). STE's RewardBench scoring path instead checked ``[[A]]`` first, so an output
  naming both counted as A — a silent bias toward slot A, and exactly what a model echoing the instructions
  ("[[A]] if A is better, [[B]] if B is better") produces. Repeating the same label is fine; a verdict inside
  extra brackets (``[[[A]]]``) is malformed, hence invalid.
- :func:`parse_meta_winner` — the meta-judge's ``Winner: Judgement A|B`` line (Meta-Rewarding §3.4); the last
  such line decides, like ``Score:``. The template asks the model to *finish* with that line, so the letter must
  end it (closing bracket, markdown and a final ``.``/``!`` allowed): ``Winner: Judgement A or B``,
  ``Winner: A/B`` and ``Winner: A tie`` are invalid, not A.
"""

from __future__ import annotations

import math
import re
from collections import deque
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

SCORE_PARSER_VERSION = "score/2"
PAIRWISE_PARSER_VERSION = "pairwise/2"
META_WINNER_PARSER_VERSION = "meta_winner/2"
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


# --------------------------------------------------------------------------------------------- scanning rules
#
# Every pattern below is linear-time (issue 17, item 13). The rules that keep it so:
# - every run is possessive (``*+``: Python >= 3.11), so a failed marker never backtracks through its whitespace;
# - no two adjacent quantified parts can match the same character (``[*_]*\s*`` is fine; ``\s*[*_]*\s*`` is not:
#   the old patterns split one whitespace run between two ``\s*`` in O(n^2), or with three, O(n^3) ways);
# - the token after a marker is read by a *bounded* lookahead (``{1,65}``) and checked on its own, so nothing scans
#   past a number and backtracks over it (the old ``(?![\w.]*\d)`` did: O(n^2) on 40 000 digits);
# - the *last* match is kept by a ``deque(maxlen=1)`` over ``finditer`` (C all the way; a ``(?s:.*)`` prefix would
#   also be linear but backtracks through the text about 5x slower);
# - markers are spelled with explicit ASCII classes (``[Ss][Cc]...``), never ``re.IGNORECASE``, whose Unicode case
#   folding matches ``ſcore`` (U+017F) as ``score`` and ``K`` (U+212A) as ``k``.

_TOKEN_CAP = 64
"""Longest token read after a marker (characters); a longer one is invalid, and not scanned further."""
_DIGITS_CAP = 16
"""Most digits accepted in each of a score's integer and fraction parts (a rubric score needs one or two)."""
_TRAILING = ".,;:!?)]}'\""
"""Sentence punctuation dropped from the end of a score token (``Score: 4.``, ``(Score: 4)``)."""
_LINE_CAP = 200
"""How much of the line after a ``Winner:`` letter is read (characters)."""
_TOKEN = rf"(?=(?P<tok>[^\s*_]{{1,{_TOKEN_CAP + 1}}}))"


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The last match of ``pattern`` in ``text`` (``finditer`` drained in C)."""
    last = deque(pattern.finditer(text), maxlen=1)
    return last[0] if last else None


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --------------------------------------------------------------------------------------------- Score:

_SCORE_WORD = r"[Ss][Cc][Oo][Rr][Ee][*_]*+\s*+[:：]"
# The last "Score:" whose value starts like a number (an ASCII or other Unicode digit, maybe after a sign or '.').
_LAST_SCORE_RE = re.compile(_SCORE_WORD + r"[\s*_]*+(?=[+\-.]?\d)" + _TOKEN)
_SCORE_MARKER_RE = re.compile(_SCORE_WORD)
_D = rf"[0-9]{{1,{_DIGITS_CAP}}}"
_PLAIN_NUMBER_RE = re.compile(rf"[+-]?(?:{_D}(?:\.{_D})?|\.{_D})")
_DENOMINATOR_RE = re.compile(r"[ \t]{0,8}/[ \t]{0,8}" + _TOKEN)


def _number_problem(tok: str) -> str | None:
    """Why ``tok`` (an ASCII-stripped score token) is not a plain decimal number; ``None`` when it is one."""
    if _PLAIN_NUMBER_RE.fullmatch(tok):
        return None
    odd = next((ch for ch in tok if not ch.isascii()), None)
    if odd is not None:
        kind = "a non-ASCII digit" if odd.isdecimal() else "a non-ASCII character"
        return f"{kind} {odd!r} (U+{ord(odd):04X})"
    if "," in tok:
        return "a comma (a decimal comma or a list of scores?)"
    if tok.count("/") > 1:
        return "more than one '/'"
    if any(ch in "eE" for ch in tok):
        return "an exponent"
    if "-" in tok.lstrip("+-"):
        return "a '-' inside (a range?)"
    digits = max((len(part) for part in re.split(r"[^0-9]", tok)), default=0)
    if digits > _DIGITS_CAP:
        return f"more than {_DIGITS_CAP} digits"
    return "text attached to the number"


def parse_score(text: str, low: float = 0, high: float = 5) -> ParseResult[float]:
    """The value of the last ``Score: <number>`` in ``text`` if it lies in ``[low, high]``.

    Invalid (value ``None``) with a reason when: there is no ``Score:`` line, the marker has no number after
    it (e.g. an echoed ``Score: <points>``), the number is malformed (see the module docstring), the number is
    out of range, or a ``/N`` denominator differs from ``high``. Only the last numeric ``Score:`` counts: a
    malformed last score is not rescued by an earlier well-formed one.
    """
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    m = _last(_LAST_SCORE_RE, text)
    if m is None:
        if _SCORE_MARKER_RE.search(text):
            return ParseResult(None, "'Score:' found but no number after it")
        return ParseResult(None, "no 'Score: <number>' line")
    start = m.end()
    tok = m.group("tok")
    if len(tok) > _TOKEN_CAP:
        return ParseResult(None, f"'Score:' is followed by {_shown(tok)}, no number of at most {_TOKEN_CAP} "
                                 "characters")
    tok = tok.rstrip(_TRAILING) or tok
    num, slash, den = tok.partition("/")
    if not slash:  # "4 / 5": the denominator after spaces
        d = _DENOMINATOR_RE.match(text, start + len(tok))
        if d is not None:
            den = d.group("tok")
            den = (den if len(den) > _TOKEN_CAP else den.rstrip(_TRAILING)) or den
            slash = "/"
    why = _number_problem(num + slash + den) if "/" in den else (_number_problem(num) or
                                                                (_number_problem(den) if slash else None))
    if why is not None:
        return ParseResult(None, f"'Score: {tok}' has no number the parser accepts: {why}"
                           if len(tok) <= 40 else f"'Score:' is followed by {_shown(tok)}: no number ({why})")
    value = float(num)
    if not math.isfinite(value):  # pragma: no cover - a plain decimal of <= 16+16 digits is finite
        return ParseResult(None, f"score {num!r} is not finite")
    if slash and float(den) != float(high):
        return ParseResult(None, f"score '{num}/{den}' uses a /{den} scale, expected /{high:g}")
    if not low <= value <= high:
        return ParseResult(None, f"score {value:g} outside [{low:g}, {high:g}]")
    return ParseResult(value, None, (start, start + len(num)))


# --------------------------------------------------------------------------------------------- [[A]] / [[B]]

_PAIR_RE = re.compile(r"\[\[\s*+([ABC])\s*+\]\]")
_BRACKETED_PAIR_RE = re.compile(r"(?<=\[)\[\[\s*+[ABC]\s*+\]\]|\[\[\s*+[ABC]\s*+\]\](?=\])")
_LABELS: dict[str, Preference] = {"A": "A", "B": "B", "C": "tie"}


def parse_pairwise(text: str) -> ParseResult[Preference]:
    """``"A"`` / ``"B"`` / ``"tie"`` from ``[[A]]`` / ``[[B]]`` / ``[[C]]``; ``None`` when absent, ambiguous or
    malformed (``[[[A]]]``). ``span`` is the range of the verdict *letter* in its last occurrence.
    """
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    labels = sorted(set(_PAIR_RE.findall(text)))
    if not labels:
        return ParseResult(None, "no [[A]]/[[B]]/[[C]] verdict")
    if len(labels) > 1:
        shown = ", ".join(f"[[{x}]]" for x in labels)
        return ParseResult(None, f"ambiguous: both {shown} appear")
    bad = _BRACKETED_PAIR_RE.search(text)
    if bad is not None:
        lo, hi = max(bad.start() - 1, 0), min(bad.end() + 1, len(text))
        return ParseResult(None, f"malformed verdict {text[lo:hi]!r}: extra brackets around [[{labels[0]}]]")
    last = _last(_PAIR_RE, text)
    assert last is not None  # findall found one
    return ParseResult(_LABELS[last.group(1)], None, last.span(1))


# --------------------------------------------------------------------------------------------- Winner:

_WINNER_WORD = r"[Ww][Ii][Nn][Nn][Ee][Rr][*_]*+\s*+[:：]"
_JUDGEMENT = r"[Jj][Uu][Dd][Gg][Ee]?[Mm][Ee][Nn][Tt][Ss]?"
# The last "Winner:" followed by a verdict letter, optionally as "the Judgement (A" / "**Judgement** [B".
_LAST_WINNER_RE = re.compile(
    _WINNER_WORD + r"[\s*_]*+(?:[Tt][Hh][Ee][ \t]++)?(?:" + _JUDGEMENT + r"[ \t*_]*+)?"
    r"(?:[\[(][ \t]*+)?(?P<letter>[AB])(?![0-9A-Za-z])"
)
_WINNER_MARKER_RE = re.compile(_WINNER_WORD)
_WINNER_END_RE = re.compile(r"[ \t*_]*(?:[\])][ \t*_]*)?(?:[.!][ \t*_]*)?\r?")


def parse_meta_winner(text: str) -> ParseResult[Literal["A", "B"]]:
    """``"A"`` / ``"B"`` from the last ``Winner: Judgement A`` line (also ``Judgment``, ``**Winner:** B``,
    ``Winner: A``); ``None`` with a reason otherwise. The letter must be upper case (``a``/``b`` are words) and
    must end its line: ``Winner: A or B``, ``Winner: A/B`` and ``Winner: A tie`` are ambiguous, hence invalid."""
    if not isinstance(text, str):
        return ParseResult(None, f"expected text, got {type(text).__name__}")
    m = _last(_LAST_WINNER_RE, text)
    if m is None:
        if _WINNER_MARKER_RE.search(text):
            return ParseResult(None, "'Winner:' found but no 'Judgement A' or 'Judgement B' after it")
        return ParseResult(None, "no 'Winner: Judgement A|B' line")
    end = m.end()
    nl = text.find("\n", end, end + _LINE_CAP + 1)
    rest = text[end:nl] if nl >= 0 else text[end:end + _LINE_CAP + 1]
    if (nl < 0 and len(text) - end > _LINE_CAP) or not _WINNER_END_RE.fullmatch(rest):
        return ParseResult(None, f"ambiguous winner: 'Winner: ... {m.group('letter')}' is followed by "
                                 f"{_shown(rest)} on its line; the verdict must end the line")
    letter: Literal["A", "B"] = "A" if m.group("letter") == "A" else "B"
    return ParseResult(letter, None, m.span("letter"))
