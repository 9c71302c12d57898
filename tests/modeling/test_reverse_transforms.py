"""modeling/reverse/transforms.py: the four reversals (spec/modeling.md §4.1, tests §4.4), with hypothesis properties.

Reference: the paper's Table 1 example (arXiv 2403.13799), reconstructed in spec §4.1.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.modeling.reverse import (
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

CRUISE = "Cruise was born on July 3, 1962, in Syracuse, New York, to Mary Lee Pfeiffer."
ENTITIES = ["Cruise", "July 3, 1962", "Syracuse", "New York", "Mary Lee Pfeiffer"]

words = st.text(alphabet="abcdefgh,.", min_size=1, max_size=4).filter(lambda w: w.strip(",.") != "")
PROPS = settings(max_examples=60, deadline=None)


def test_paper_example_word_and_entity():
    assert reverse_words(CRUISE) == ("Pfeiffer. Lee Mary to York, New Syracuse, in 1962, 3, July on born was "
                                     "Cruise")
    assert reverse_entities(CRUISE, ENTITIES) == ("Mary Lee Pfeiffer. to New York, Syracuse, in July 3, 1962, on "
                                                  "born was Cruise")
    detector = list_detector(ENTITIES)
    assert reverse_entities(CRUISE, detector=detector) == reverse_entities(CRUISE, ENTITIES)
    assert reverse_entities(CRUISE, []) == reverse_words(CRUISE)  # no entities = word reversal


def test_random_segments_lengths_separator_and_seed():
    out = reverse_random_segments(CRUISE, 3, random.Random(0))
    segments = out.split(" [REV] ")
    assert all(1 <= len(s.split()) <= 3 for s in segments)
    assert " ".join(reversed(segments)) == " ".join(CRUISE.split())
    assert out == reverse_random_segments(CRUISE, 3, random.Random(0))
    assert reverse_random_segments(CRUISE, 1, random.Random(0), sep=None) == reverse_words(CRUISE)


def test_pluggable_detector_gets_words_and_returns_spans():
    seen = []

    def capitalised(ws):
        seen.append(list(ws))
        return [(i, i + 2) for i in range(len(ws) - 1) if ws[i][0].isupper() and ws[i + 1][0].isupper()][:1]

    assert reverse_entities("met Ada Lovelace today", detector=capitalised) == "today Ada Lovelace met"
    assert seen == [["met", "Ada", "Lovelace", "today"]]


def test_dispatcher_and_bad_arguments():
    assert reverse([1, 2, 3], "token") == [3, 2, 1]
    assert reverse([1, 2, 3, 4], "entity", spans=[(1, 3)]) == [4, 2, 3, 1]
    assert reverse("a b c", "word") == "c b a"
    with pytest.raises(ValueError, match="mode="):
        reverse("a", "chars")
    with pytest.raises(ValueError, match="k >= 1"):
        reverse("a b", "rand")
    with pytest.raises(ValueError, match="token ids"):
        reverse("a b", "token")
    with pytest.raises(ValueError, match="overlap"):
        reverse_units([1, 2, 3], [(0, 2), (1, 3)])
    with pytest.raises(ValueError, match="sum to"):
        reverse_segments([1, 2, 3], [1, 1])


@PROPS
@given(st.lists(st.integers(0, 50), max_size=30))
def test_token_reversal_twice_is_identity(tokens):
    once = reverse_tokens(tokens)
    assert sorted(once) == sorted(tokens)
    assert reverse_tokens(once) == tokens


@PROPS
@given(st.lists(words, max_size=15), st.sampled_from([" ", "  ", "\t", " \n "]))
def test_word_reversal_twice_is_identity_on_normalised_text(ws, gap):
    text = gap.join(ws)
    assert reverse_words(reverse_words(text)) == " ".join(text.split())


@st.composite
def text_with_entities(draw):
    """Filler words and entity occurrences; entity words are disjoint from filler words and between entities."""
    n_entities = draw(st.integers(0, 3))
    entities = [" ".join(f"E{e}w{i}" for i in range(draw(st.integers(1, 3)))) for e in range(n_entities)]
    parts = draw(st.lists(st.one_of(words, st.sampled_from(entities)) if entities else words, max_size=12))
    return " ".join(parts), entities


@PROPS
@given(text_with_entities())
def test_entity_reversal_twice_with_the_same_entities_is_identity(case):
    text, entities = case
    once = reverse_entities(text, entities)
    for entity in entities:  # every occurrence survives verbatim
        assert once.count(entity) == text.count(entity)
    assert reverse_entities(once, entities) == " ".join(text.split())


@PROPS
@given(st.lists(st.integers(0, 9), max_size=20), st.data())
def test_entity_span_reversal_twice_with_mapped_spans_is_identity(seq, data):
    n = len(seq)
    cuts = sorted(data.draw(st.sets(st.integers(0, n), max_size=6)))
    spans = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2) if cuts[i] < cuts[i + 1]]
    once = reverse_units(seq, spans)
    assert reverse_units(once, reversed_spans(n, spans)) == seq
    if not spans:
        assert once == seq[::-1]


@PROPS
@given(st.lists(st.integers(0, 9), max_size=25), st.integers(1, 5), st.integers(0, 10**6))
def test_random_segment_reversal_twice_with_the_same_segmentation_is_identity(seq, k, seed):
    lengths = random_segment_lengths(len(seq), k, random.Random(seed))
    assert all(1 <= length <= k for length in lengths) and sum(lengths) == len(seq)
    once = reverse_segments(seq, lengths)
    assert reverse_segments(once, lengths[::-1]) == seq
    assert undo_segments(reverse_segments(seq, lengths, sep=-1), sep=-1) == seq
    if k == 1:
        assert once == seq[::-1]


def test_entity_matching_ignores_trailing_punctuation_and_prefers_longest():
    ws = "in New York, and New Haven".split()
    assert find_entity_spans(ws, ["New", "New York"]) == [(1, 3), (4, 5)]
