"""Reverse training (Golovneva et al. 2024, arXiv 2403.13799): token, word, entity-preserving and random-segment
reversal (:mod:`.transforms`) and forward/reversed data mixing for ``datasets`` and batch collation (:mod:`.data`).
Pure Python except the collator's tensors (torch is imported when a batch is built)."""

from __future__ import annotations

from .data import ReverseCollator, reverse_map, reverse_token_row
from .transforms import (
    EntityDetector,
    find_entity_spans,
    list_detector,
    random_segment_lengths,
    reverse,
    reverse_entities,
    reverse_random_segments,
    reverse_segments,
    reverse_tokens,
    reverse_units,
    reverse_words,
    reversed_spans,
    undo_segments,
)

__all__ = [
    "EntityDetector",
    "ReverseCollator",
    "find_entity_spans",
    "list_detector",
    "random_segment_lengths",
    "reverse",
    "reverse_entities",
    "reverse_map",
    "reverse_random_segments",
    "reverse_segments",
    "reverse_token_row",
    "reverse_tokens",
    "reverse_units",
    "reverse_words",
    "reversed_spans",
    "undo_segments",
]
