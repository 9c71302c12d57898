"""Verdict parsers: examples from the specs, the STE "both tags" case, and hypothesis properties
(never raise on any text, never return a value without the marker, round-trip on rendered verdicts)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.judges.parsers import (
    PARSER_VERSIONS,
    ParseResult,
    parse_meta_winner,
    parse_pairwise,
    parse_score,
)

# ------------------------------------------------------------------------------------------------ Score:


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is relevant.\nScore: 4", 4.0),
        ("Score: 4.5", 4.5),
        ("Score: 4.75.", 4.75),
        ("**Score:** 3", 3.0),
        ("**Score: 2**", 2.0),
        ("score: 0", 0.0),
        ("Score: 4/5", 4.0),
        ("Score: 5 / 5 points", 5.0),
        ("First Score: 2, then on reflection\nScore: 3", 3.0),  # the last one wins
        ("Score: .5", 0.5),
        ("Score:5", 5.0),
    ],
)
def test_parse_score_accepts(text, value):
    res = parse_score(text)
    assert res.ok and res.value == value and res.reason is None
    assert res.span is not None and float(text[res.span[0]:res.span[1]]) == value


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [
        ("", "no 'Score"),
        ("The response is great, I give it five.", "no 'Score"),
        ('End with "Score: <points>"', "no number"),
        ("Score: 6", "outside"),
        ("Score: -1", "outside"),
        ("Score: 5.01", "outside"),
        ("Score: 8/10", "/10 scale"),
        ("Score: 1e5", "no number"),
        ("Score: N/A", "no number"),
    ],
)
def test_parse_score_rejects_with_reason(text, reason_part):
    res = parse_score(text)
    assert res.value is None and not res.ok
    assert reason_part in res.reason


def test_parse_score_custom_range():
    assert parse_score("Score: 8", low=1, high=10).value == 8.0
    assert parse_score("Score: 0", low=1, high=10).value is None
    assert parse_score("Score: 8/10", low=1, high=10).value == 8.0


# ------------------------------------------------------------------------------------------------ [[A]]/[[B]]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Assistant A is more accurate. [[A]]", "A"),
        ("[[B]]", "B"),
        ("Both are equally good: [[C]]", "tie"),
        ("[[ A ]]", "A"),
        ("My verdict: [[B]]. Final: [[B]]", "B"),  # the same label twice is fine
    ],
)
def test_parse_pairwise_accepts(text, value):
    res = parse_pairwise(text)
    assert res.value == value
    assert text[res.span[0]:res.span[1]] in ("A", "B", "C")


def test_parse_pairwise_both_tags_is_ambiguous_not_a():
    """STE's scoring path read "[[A]] ... [[B]]" as A (it checked [[A]] first); ours refuses to guess."""
    for text in ("Output [[A]] if A is better, [[B]] if B is better.", "[[B]] no wait [[A]]", "[[A]] or [[C]]"):
        res = parse_pairwise(text)
        assert res.value is None and "ambiguous" in res.reason


@pytest.mark.parametrize("text", ["", "A is better", "[A]", "[[D]]", "[[a]]", "Verdict: A", "[[AB]]"])
def test_parse_pairwise_rejects(text):
    res = parse_pairwise(text)
    assert res.value is None and res.reason


# ------------------------------------------------------------------------------------------------ Winner:


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Judgement A follows the rubric.\nWinner: Judgement A", "A"),
        ("Winner: Judgment B", "B"),
        ("**Winner:** Judgement B", "B"),
        ("Winner: B", "B"),
        ("Winner: Judgement A\n...on reflection\nWinner: Judgement B", "B"),
    ],
)
def test_parse_meta_winner_accepts(text, value):
    assert parse_meta_winner(text).value == value


@pytest.mark.parametrize("text", ["", "Judgement A is better", "Winner: neither", "Winner: Judgement C",
                                  "Winner: a", "Winner: Judgement Alpha"])
def test_parse_meta_winner_rejects(text):
    res = parse_meta_winner(text)
    assert res.value is None and res.reason


def test_parser_versions_are_recorded():
    assert set(PARSER_VERSIONS) == {"score", "pairwise", "meta_winner"}
    assert all(isinstance(v, str) and "/" in v for v in PARSER_VERSIONS.values())


# ------------------------------------------------------------------------------------------------ properties

PARSERS = [parse_score, parse_pairwise, parse_meta_winner]
MARKERS = {parse_score: "score", parse_pairwise: "[[", parse_meta_winner: "winner"}


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise(text):
    for parse in PARSERS:
        res = parse(text)
        assert isinstance(res, ParseResult)
        assert (res.value is None) == (res.reason is not None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="[:："), max_size=200))
def test_no_value_without_marker(text):
    """Garbage without the marker never yields a value (no default scores, no default preference)."""
    for parse in PARSERS:
        if MARKERS[parse] not in text.lower():
            assert parse(text).value is None


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(alphabet=st.characters(blacklist_characters="[:："), max_size=80),
    points=st.integers(min_value=0, max_value=500),
    bold=st.booleans(),
)
def test_score_round_trip(prefix, points, bold):
    value = points / 100  # 0.00 .. 5.00, two decimals
    marker = "**Score:**" if bold else "Score:"
    res = parse_score(f"{prefix}\n{marker} {value}")
    assert res.value == pytest.approx(value)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(alphabet=st.characters(blacklist_characters="[:："), max_size=80),
       label=st.sampled_from(["A", "B", "C"]), repeat=st.integers(1, 3))
def test_pairwise_round_trip(prefix, label, repeat):
    res = parse_pairwise(prefix + " ".join([f"[[{label}]]"] * repeat))
    assert res.value == {"A": "A", "B": "B", "C": "tie"}[label]


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(alphabet=st.characters(blacklist_characters="[:："), max_size=80),
       label=st.sampled_from(["A", "B"]), spelling=st.sampled_from(["Judgement", "Judgment", ""]))
def test_meta_winner_round_trip(prefix, label, spelling):
    assert parse_meta_winner(f"{prefix}\nWinner: {spelling} {label}".replace("  ", " ")).value == label
