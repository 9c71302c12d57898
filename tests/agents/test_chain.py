"""Chain grammar and parser (spec/loops.md §1.2, §1.7, §1.8): edge cases that broke third-party CoA parsers."""

from __future__ import annotations

import pytest

from loopwright.agents.coa.chain import (
    ChainConfig,
    InvalidChain,
    MathCall,
    ParsedChain,
    ToolCall,
    parse_chain,
    placeholders_in,
    substitute,
)


def ok(text: str, config: ChainConfig | None = None) -> ParsedChain:
    p = parse_chain(text, config)
    assert isinstance(p, ParsedChain), getattr(p, "reason", p)
    return p


def bad(text: str, fragment: str) -> InvalidChain:
    p = parse_chain(text)
    assert isinstance(p, InvalidChain) and not p.valid, p
    assert fragment in p.reason, p.reason
    return p


def test_paper_math_example():
    text = "Mark played [20 + 35 = y1] minutes, so he sat out [90 - y1 = y2] minutes."
    p = ok(text)
    assert [c.placeholder for c in p.calls] == ["y1", "y2"]
    assert isinstance(p.calls[0], MathCall) and p.calls[0].expr == "20 + 35" and p.calls[0].uses == ()
    assert p.calls[1].uses == ("y1",)
    s, e = p.calls[1].span
    assert text[s:e] == "[90 - y1 = y2]"


def test_multi_digit_placeholders_never_collide():
    calls = " ".join(f"[{i} + 0 = y{i}]" for i in range(1, 12))
    p = ok(calls + " [y1 + y10 + y11 = y12] answer y12")
    last = p.calls[-1]
    assert last.uses == ("y1", "y10", "y11")
    assert placeholders_in("y1 y10 y11 xy1 y1a y1") == ["y1", "y10", "y11"]
    vals = {"y1": 7, "y10": 100, "y11": 2}
    assert substitute("y1 + y10 + y11 + y1", vals) == "7 + 100 + 2 + 7"
    assert substitute("y10", {"y1": 5}) == "y10"  # a plain str.replace would give '50'


def test_chained_and_repeated_uses():
    p = ok("[3 * 4 = y1] [y1 * y1 = y2] [y2 - y1 + y1 = y3] so y3 and again y1.")
    assert p.calls[1].uses == ("y1",)
    assert p.calls[2].uses == ("y2", "y1")
    assert p.text_uses == ("y3", "y1")
    assert p.last_mentioned() == "y1"


def test_out_of_order_definition_is_valid():
    p = ok("First [y2 * 2 = y3], where [y1 + 1 = y2] and [5 = y1].")
    assert [c.placeholder for c in p.calls] == ["y3", "y2", "y1"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[2 + 3 = y1] then [y1 * 2 = y1]", "defined more than once"),
        ("[2 + 3 = y1] then [y2 * 2 = y3]", "undefined placeholder y2"),
        ("[2 + 3 = y1] so the answer is y7", "undefined placeholder y7 used in the text"),
        ("[y2 + 1 = y1] [y1 * 2 = y2]", "cyclic"),
        ("[y1 + 1 = y1]", "cyclic"),
        ("[2 + 3 = y1", "unclosed"),
        ("2 + 3] = y1", "unbalanced"),
        ("[2 + [3 = y1] = y2]", "nested"),
        ("[2 + 3 = 5]", "must end with '= yK'"),
        ("[ = y1]", "empty expression"),
        ("[a = b = y1]", "more than one '='"),
        ("[__import__('os') = y1]", "expression may use"),
        ("[q -Wiki-> answer]", "must end with '-> yK'"),
        ("", "empty chain"),
    ],
)
def test_invalid_chains_have_reasons(text, fragment):
    bad(text, fragment)


def test_never_raises_on_garbage():
    for junk in [None, 12, ["[1 = y1]"], "]]]]", "[[[[", "[" * 10_000, "y1 = [", "\x00[1=y1]"]:
        p = parse_chain(junk)  # type: ignore[arg-type]
        assert isinstance(p, ParsedChain | InvalidChain)


def test_brackets_without_call_are_text():
    p = ok("He said [sic] that [2 + 2 = y1] apples.")
    assert len(p.calls) == 1


def test_tool_calls_with_commas_and_types():
    text = ("[Paris, Texas (film), 1984 -Wiki-> y1] [y1 -NER(person)-> y2] "
            "[birthplace of y2, in one word -Wiki-> y10] [y10 + y2 -NER(location)-> y11]")
    p = ok(text)
    c0, c1, c2, c3 = p.calls
    assert isinstance(c0, ToolCall) and c0.tool == "Wiki" and c0.arg == "Paris, Texas (film), 1984"
    assert c1.tool == "NER" and c1.tool_arg == "person" and c1.uses == ("y1",)
    assert c2.arg == "birthplace of y2, in one word" and c2.uses == ("y2",)
    assert c3.uses == ("y10", "y2") and c3.placeholder == "y11"


def test_configurable_delimiters_and_max_calls():
    cfg = ChainConfig(call_open="<<", call_close=">>")
    p = ok("a <<2 * 3 = y1>> then [not a call] <<y1 + 1 = y2>>", cfg)
    assert [c.placeholder for c in p.calls] == ["y1", "y2"]
    tiny = ChainConfig(max_calls=2)
    p2 = parse_chain("[1 = y1] [2 = y2] [3 = y3]", tiny)
    assert isinstance(p2, InvalidChain) and "max_calls=2" in p2.reason
    with pytest.raises(ValueError, match="placeholder_regex"):
        ChainConfig(placeholder_regex=r"y\d+")
    with pytest.raises(ValueError, match="call_open"):
        ChainConfig(call_open="|", call_close="|")
