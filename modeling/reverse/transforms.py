"""The four REVERSE functions of reverse training (Golovneva et al. 2024, arXiv 2403.13799; spec/modeling.md §4.1).

- token: reverse the order of tokens (ids unchanged; a word's sub-word pieces come out reversed);
- word: split at whitespace (punctuation stays attached: "York,"), reverse the word order, join with single spaces;
- entity-preserving: every entity span is one unit, every other word a unit; reverse the units, keep each entity's
  internal order. Entities come from a list of surface strings (matched word by word, greedy longest match from the
  left, ignoring trailing punctuation) or from a pluggable detector ``(words) -> [(start, end), ...]`` (word spans,
  end exclusive), e.g. an NER model;
- random segment: split into consecutive segments of lengths drawn i.i.d. from U{1..k}, reverse the segment order,
  keep the order inside each segment, optionally put a separator (``[REV]``) between segments.

The core functions work on any sequence (token ids or words); the ``*_text`` wrappers handle whitespace words.
Inverses: token and word reversal are involutions (word reversal on whitespace-normalised text); entity reversal is
undone by reversing again with the same entities (:func:`reversed_spans` maps the spans); random-segment reversal is
undone by reversing again with the reversed segment lengths (or, with a separator, by :func:`undo_segments`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = [
    "EntityDetector",
    "find_entity_spans",
    "list_detector",
    "random_segment_lengths",
    "reverse",
    "reverse_entities",
    "reverse_random_segments",
    "reverse_segments",
    "reverse_tokens",
    "reverse_units",
    "reverse_words",
    "reversed_spans",
    "undo_segments",
]

T = TypeVar("T")
Span = tuple[int, int]
EntityDetector = Callable[[list[str]], list[Span]]
"""Maps whitespace words to entity word spans ``(start, end)`` (end exclusive, non-overlapping)."""

_TRAILING_PUNCT = ".,;:!?"
MODES = ("token", "word", "entity", "rand")


def reverse_tokens(tokens: Sequence[T]) -> list[T]:
    """Token reversal: ``[t1..tn] -> [tn..t1]``."""
    return list(tokens)[::-1]


def _check_spans(n: int, spans: Sequence[Span]) -> list[Span]:
    ordered = sorted((int(s), int(e)) for s, e in spans)
    prev_end = 0
    for s, e in ordered:
        if not 0 <= s < e <= n:
            raise ValueError(f"entity span ({s}, {e}) is empty or outside a sequence of length {n}")
        if s < prev_end:
            raise ValueError(f"entity spans overlap: {ordered}; pass non-overlapping spans")
        prev_end = e
    return ordered


def _units(n: int, spans: Sequence[Span]) -> list[Span]:
    """Cover 0..n with units: each span is one unit, every other position its own unit."""
    units, pos = [], 0
    for s, e in _check_spans(n, spans):
        units.extend((i, i + 1) for i in range(pos, s))
        units.append((s, e))
        pos = e
    units.extend((i, i + 1) for i in range(pos, n))
    return units


def reverse_units(seq: Sequence[T], spans: Sequence[Span] = ()) -> list[T]:
    """Entity-preserving reversal of a sequence: spans stay in order, everything else is reversed."""
    items = list(seq)
    return [x for s, e in reversed(_units(len(items), spans)) for x in items[s:e]]


def reversed_spans(n: int, spans: Sequence[Span]) -> list[Span]:
    """Where the spans are after :func:`reverse_units` of a length-``n`` sequence (for undoing it)."""
    return sorted((n - e, n - s) for s, e in _check_spans(n, spans))


def random_segment_lengths(n: int, k: int, rng: random.Random) -> list[int]:
    """Segment lengths drawn i.i.d. from U{1..k}, the last one cut so that they sum to ``n``."""
    if k < 1:
        raise ValueError(f"maximum segment length k={k} must be >= 1")
    lengths, total = [], 0
    while total < n:
        length = min(rng.randint(1, k), n - total)
        lengths.append(length)
        total += length
    return lengths


def reverse_segments(seq: Sequence[T], lengths: Sequence[int], sep: T | None = None) -> list[T]:
    """Reverse the order of consecutive segments of the given lengths; ``sep`` (if given) goes between segments."""
    items = list(seq)
    if sum(lengths) != len(items) or any(length < 1 for length in lengths):
        raise ValueError(f"segment lengths {list(lengths)} must be >= 1 and sum to the sequence length {len(items)}")
    segments, pos = [], 0
    for length in lengths:
        segments.append(items[pos: pos + length])
        pos += length
    out: list[T] = []
    for i, segment in enumerate(reversed(segments)):
        if i and sep is not None:
            out.append(sep)
        out.extend(segment)
    return out


def undo_segments(seq: Sequence[T], sep: T) -> list[T]:
    """Invert :func:`reverse_segments` with a separator: split at ``sep``, reverse the segments, drop ``sep``."""
    segments: list[list[T]] = [[]]
    for x in seq:
        if x == sep:
            segments.append([])
        else:
            segments[-1].append(x)
    return [x for segment in reversed(segments) for x in segment]


# ------------------------------------------------------------------------------------------------- text level


def reverse_words(text: str) -> str:
    """Word reversal: whitespace words in reverse order, joined by single spaces."""
    return " ".join(text.split()[::-1])


def _norm_word(word: str) -> str:
    return word.rstrip(_TRAILING_PUNCT) or word


def find_entity_spans(words: Sequence[str], entities: Sequence[str]) -> list[Span]:
    """Word spans of the given entity strings: greedy longest match from the left, trailing punctuation ignored."""
    patterns = sorted({tuple(_norm_word(w) for w in e.split()) for e in entities if e.split()}, key=len,
                      reverse=True)
    normed = [_norm_word(w) for w in words]
    spans, i = [], 0
    while i < len(normed):
        for pattern in patterns:
            if tuple(normed[i: i + len(pattern)]) == pattern:
                spans.append((i, i + len(pattern)))
                i += len(pattern)
                break
        else:
            i += 1
    return spans


def list_detector(entities: Sequence[str]) -> EntityDetector:
    """An :data:`EntityDetector` that finds the given entity strings (see :func:`find_entity_spans`)."""
    frozen = list(entities)
    return lambda words: find_entity_spans(words, frozen)


def reverse_entities(text: str, entities: Sequence[str] | None = None, *, detector: EntityDetector | None = None
                     ) -> str:
    """Entity-preserving word reversal; entities from a list of strings or a detector (exactly one, or neither =
    word reversal)."""
    if entities is not None and detector is not None:
        raise ValueError("pass either entities or detector, not both")
    words = text.split()
    if detector is None:
        detector = list_detector(entities or [])
    return " ".join(reverse_units(words, detector(words)))


def reverse_random_segments(text: str, k: int, rng: random.Random, sep: str | None = "[REV]") -> str:
    """Random-segment word reversal with segment lengths from U{1..k} and ``sep`` between segments."""
    words = text.split()
    return " ".join(reverse_segments(words, random_segment_lengths(len(words), k, rng), sep))


def reverse(x: str | Sequence[T], mode: str, *, entities: Sequence[str] | None = None,
            spans: Sequence[Span] | None = None, detector: EntityDetector | None = None, k: int | None = None,
            rng: random.Random | None = None, sep: object = "[REV]") -> str | list[T]:
    """One entry point (spec §4.4): text (words) or a token sequence, ``mode`` in token | word | entity | rand.

    On a sequence, ``word`` equals ``token`` (every item is a unit), ``entity`` takes ``spans`` (item spans) and
    ``rand`` needs ``k`` (and ``rng``, default ``random.Random(0)``); ``sep=None`` leaves out the separator.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    if mode == "rand" and (k is None or k < 1):
        raise ValueError(f"mode='rand' needs the maximum segment length k >= 1, got k={k}")
    rng = rng or random.Random(0)
    if isinstance(x, str):
        if mode == "token":
            raise ValueError("token reversal needs token ids: tokenize first, then reverse the id sequence")
        if mode == "word":
            return reverse_words(x)
        if mode == "entity":
            if spans is not None:
                return " ".join(reverse_units(x.split(), spans))
            return reverse_entities(x, entities, detector=detector)
        return reverse_random_segments(x, k, rng, sep)  # type: ignore[arg-type]
    if mode in ("token", "word"):
        return reverse_tokens(x)
    if mode == "entity":
        return reverse_units(x, spans or ())
    return reverse_segments(x, random_segment_lengths(len(x), k, rng), sep)  # type: ignore[arg-type]
