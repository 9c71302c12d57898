"""DAG levels and reification (spec/loops.md §1.3, §1.6, §1.7) with the real Calculator / EquationSolver."""

from __future__ import annotations

import threading
import time
from fractions import Fraction
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from loopwright.agents.coa.chain import parse_chain
from loopwright.agents.coa.reify import CycleError, build_dag, final_answer, reify, to_number
from loopwright.sdk.tool import Tool
from loopwright.tools.calculator import Calculator
from loopwright.tools.equation_solver import EquationSolver


class QueryArgs(BaseModel):
    query: str


class DictWiki(Tool):
    """Test-local lookup tool: dict-backed, optional latency, raises for unknown keys (a failing tool)."""

    name: ClassVar[str] = "Wiki"
    description: ClassVar[str] = "look up a key"
    args_model: ClassVar[type[BaseModel]] = QueryArgs

    def __init__(self, table: dict[str, str], latency_s: float = 0.0):
        self.table, self.latency_s = table, latency_s
        self.seen: list[str] = []
        self.lock = threading.Lock()
        self.active = self.max_active = 0

    def _run(self, args: BaseModel) -> Any:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.seen.append(args.query)  # type: ignore[attr-defined]
        try:
            time.sleep(self.latency_s)
            return self.table[args.query]  # type: ignore[attr-defined]
        finally:
            with self.lock:
                self.active -= 1


class NerArgs(BaseModel):
    text: str
    type: str = "any"


class FirstWordNER(Tool):
    name: ClassVar[str] = "NER"
    description: ClassVar[str] = "first capitalised word"
    args_model: ClassVar[type[BaseModel]] = NerArgs

    def _run(self, args: BaseModel) -> Any:
        words = [w.strip(".,") for w in args.text.split() if w[:1].isupper()]  # type: ignore[attr-defined]
        return f"{words[0]}:{args.type}"  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def math_tools() -> dict[str, Tool]:
    return {"solver": EquationSolver(), "calculator": Calculator()}


def test_build_dag_levels_and_cycles():
    p = parse_chain("[1 + 1 = y1] [2 = y2] [y1 + y2 = y3] [y1 * 3 = y4] [y3 + y4 = y5]")
    assert [[p.calls[i].placeholder for i in lvl] for lvl in build_dag(p.calls)] == [
        ["y1", "y2"], ["y3", "y4"], ["y5"]]
    cyc = parse_chain("[y2 + 1 = y1] [y1 * 2 = y2]")
    with pytest.raises(CycleError, match="cyclic"):
        build_dag(cyc.calls)
    undefined = parse_chain("[1 = y1] [y9 = y2]").calls
    with pytest.raises(CycleError, match="undefined placeholder y9"):
        build_dag(undefined)


@pytest.mark.parametrize("mode", ["system", "calculator"])
def test_out_of_order_definitions(math_tools, mode):
    text = "So [y2 * 2 = y3] in total, where [y1 + 1 = y2] and [3/4 = y1]. Answer: y3"
    r = reify(text, math_tools, math=mode)
    assert r.ok, r.errors
    assert r.values == {"y3": Fraction(7, 2), "y2": Fraction(7, 4), "y1": Fraction(3, 4)}
    assert r.answer == Fraction(7, 2)
    assert r.filled_text == "So [1.75 * 2 = 3.5] in total, where [0.75 + 1 = 1.75] and [3/4 = 0.75]. Answer: 3.5"
    assert r.levels == [["y1"], ["y2"], ["y3"]]
    assert r.math_mode == mode


def test_paper_example_and_multidigit_substitution(math_tools):
    chain = " ".join(f"[{i} * 1 = y{i}]" for i in range(1, 12)) + " [y1 + y10 + y11 = y12]"
    r = reify(chain, math_tools)
    assert r.values["y12"] == 22 and r.answer == 22
    assert "[1 + 10 + 11 = 22]" in r.filled_text
    mark = reify("Mark played [20 + 35 = y1] minutes, so he sat out [90 - y1 = y2] minutes.", math_tools)
    assert mark.filled_text == "Mark played [20 + 35 = 55] minutes, so he sat out [90 - 55 = 35] minutes."
    assert final_answer(mark.values, mark.chain) == 35


def test_record_and_tool_name_alias():
    r = reify("[1/3 = y1] [y1 * 3 = y2]", {"equation_solver": EquationSolver()})
    rec = r.to_record()
    assert rec["values"] == {"y1": "0.3333333333", "y2": "1"} and rec["pred_answer"] == "1"
    assert rec["math_mode"] == "system" and rec["valid_chain"] and rec["errors"] == []
    bad = reify("[1 = y1", {"equation_solver": EquationSolver()}).to_record()
    assert not bad["valid_chain"] and "unclosed" in bad["invalid_reason"] and bad["pred_answer"] is None


def test_invalid_chain_is_data(math_tools):
    r = reify("[2 + 3 = y1] [y9 - 1 = y2]", math_tools)
    assert not r.valid and not r.ok and r.answer is None
    assert "undefined placeholder y9" in r.errors[0]


def test_failing_math_marks_downstream_none_and_keeps_independent_branch(math_tools):
    text = "[1/0 = y1] [y1 + 1 = y2] [y2 * 2 = y3] [6 * 7 = y4] [y4 + 1 = y5]"
    for mode in ("system", "calculator"):
        r = reify(text, math_tools, math=mode)
        assert r.values["y1"] is None and r.values["y2"] is None and r.values["y3"] is None
        assert r.values["y4"] == 42 and r.values["y5"] == 43, (mode, r.errors)
        assert any("y2" in e and "y1 has no value" in e for e in r.errors)
        assert r.answer == 43 and not r.ok
    only_solver = reify(text, {"solver": EquationSolver()})  # no calculator to fall back on: all None
    assert all(v is None for v in only_solver.values.values()) and "solver failed" in only_solver.errors[0]


def test_failing_tool_downstream_none_independent_branch_runs():
    wiki = DictWiki({"capital of France": "Paris is the capital.", "tallest mountain": "Everest, Nepal."})
    text = ("[capital of France -Wiki-> y1] [y1 -NER(location)-> y2] "
            "[unknown key -Wiki-> y3] [y3 -NER(person)-> y4] "
            "[tallest mountain -Wiki-> y5] [y5 -NER(location)-> y6]")
    r = reify(text, {"Wiki": wiki, "NER": FirstWordNER()})
    assert r.values["y2"] == "Paris:location" and r.values["y6"] == "Everest:location"
    assert r.values["y3"] is None and r.values["y4"] is None
    assert any(e.startswith("y3: KeyError") for e in r.errors)
    assert r.levels == [["y1", "y3", "y5"], ["y2", "y4", "y6"]]
    assert "Paris:location" in r.filled_text and "-> y4]" in r.filled_text


def test_mixed_tool_and_math_chain(math_tools):
    wiki = DictWiki({"age of Tom": "41", "age of Ann": "37"})
    r = reify("[age of Tom -Wiki-> y1] [age of Ann -Wiki-> y2] [y1 - y2 = y3]", {**math_tools, "Wiki": wiki})
    assert r.ok and r.answer == 4 and r.math_mode == "calculator"


def test_level_runs_concurrently_and_times_out():
    wiki = DictWiki({f"k{i}": str(i) for i in range(4)}, latency_s=0.3)
    text = " ".join(f"[k{i} -Wiki-> y{i + 1}]" for i in range(4))
    t = time.perf_counter()
    r = reify(text, {"Wiki": wiki}, max_workers=4)
    elapsed = time.perf_counter() - t
    assert r.ok and wiki.max_active == 4
    assert elapsed < 0.3 * 4 * 0.6, elapsed  # sequential would take 1.2 s
    slow = DictWiki({"a": "1", "b": "2"}, latency_s=1.0)
    t = time.perf_counter()
    r2 = reify("[a -Wiki-> y1] [y1 -Wiki-> y2]", {"Wiki": slow}, timeout_s=0.2)
    assert time.perf_counter() - t < 0.9
    assert r2.values == {"y1": None, "y2": None}
    assert "y1: timed out after 0.2 s" in r2.errors


def test_missing_tool_and_bad_arguments():
    r = reify("[x -Search-> y1] [2 + y1 = y2]", {"calculator": Calculator()})
    assert r.values == {"y1": None, "y2": None} and "no tool named 'Search'" in r.errors[0]
    with pytest.raises(ValueError, match="math='fast'"):
        reify("[1 = y1]", {}, math="fast")  # type: ignore[arg-type]


def test_to_number():
    assert to_number("1/3") == Fraction(1, 3) and to_number(0.25) == Fraction(1, 4) and to_number(7) == 7
    for bad in ("abc", True, "inf"):
        with pytest.raises(ValueError):
            to_number(bad)


@st.composite
def random_chains(draw):
    """A random math chain over y1..yN (multi-digit indices), shuffled so definitions come out of order."""
    n = draw(st.integers(1, 14))
    exprs, expected = [], {}
    for i in range(1, n + 1):
        a = draw(st.one_of(st.integers(0, 999).map(str), st.sampled_from([f"y{j}" for j in range(1, i)] or ["7"])))
        b = draw(st.one_of(st.integers(1, 99).map(str), st.sampled_from([f"y{j}" for j in range(1, i)] or ["3"])))
        op = draw(st.sampled_from(["+", "-", "*", "/"]))
        va = expected[a] if a.startswith("y") else Fraction(int(a))
        vb = expected[b] if b.startswith("y") else Fraction(int(b))
        if op == "/" and vb == 0:
            op = "+"
        expected[f"y{i}"] = {"+": va + vb, "-": va - vb, "*": va * vb}[op] if op != "/" else va / vb
        exprs.append(f"[{a} {op} {b} = y{i}]")
    order = draw(st.permutations(range(n)))
    return " and ".join(exprs[i] for i in order) + f". So y{n}.", expected, f"y{n}"


@settings(max_examples=40, deadline=None)
@given(random_chains(), st.sampled_from(["system", "calculator"]))
def test_random_chains_match_direct_evaluation(case, mode):
    text, expected, last = case
    r = reify(text, {"solver": EquationSolver(), "calculator": Calculator()}, math=mode)
    assert r.ok, r.errors
    assert r.values == expected
    assert r.answer == expected[last]
    assert "y" not in r.filled_text  # every placeholder (y1 ... y14) was filled, none half-replaced
