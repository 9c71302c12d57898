"""Multi-question pipelining (spec/loops.md §1.6): same records as the sequential baseline, overlap, failures."""

from __future__ import annotations

import time
from typing import Any

import pytest

from loopwright.agents.coa.agent import CoAAgent
from loopwright.agents.coa.pipeline import DelayedTool, run_pipelined, run_sequential
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.tasks.miniarith import OOD, generate_problems
from loopwright.tools.calculator import Calculator

TIMING_KEYS = ("t_decode_s", "t_tools_s")


def slow_scripted(table: dict[str, str], delay_s: float) -> ScriptedGenerator:
    """A scripted decoder with a fixed delay per generate call (a stand-in for decoding time)."""
    def respond(prompt: str, k: int, rng: Any) -> str:
        time.sleep(delay_s)
        for q, out in table.items():
            if q in prompt:
                return out
        return "He has [y7 + 1 = y1] pens."  # undefined placeholder: an invalid chain
    return ScriptedGenerator(respond)


def strip_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_pipelined_equals_sequential_and_overlaps_decode_with_tools():
    problems = generate_problems(6) + generate_problems(4, OOD, start=6)
    questions: list[Any] = [*problems, "unknown question?"]
    gen = slow_scripted({p.question: p.coa_chain for p in problems}, delay_s=0.06)
    tool = DelayedTool(Calculator(), latency_s=0.03)
    agent = CoAAgent(gen, {"calculator": tool}, math="calculator")
    seq = run_sequential(agent, questions)
    calls_seq = tool.calls
    pip = run_pipelined(agent, questions, tool_workers=4)
    assert strip_timing(pip.records) == strip_timing(seq.records)
    assert [r["pred_answer"] for r in pip.records] == [str(p.answer) for p in problems] + [None]
    assert pip.records[-1]["valid_chain"] is False
    assert tool.calls == 2 * calls_seq == 2 * sum(p.steps for p in problems)
    assert tool.max_active >= 2  # tools of different questions ran at the same time
    # The wall-clock gain is measured in tests/bench/bench_coa_pipeline.py, not asserted here.


def test_independent_calls_of_one_chain_run_concurrently():
    chain = "A [2 + 3 = y1], B [4 * 5 = y2], C [6 - 1 = y3], so [y1 + y2 + y3 = y4]."
    tool = DelayedTool(Calculator(), latency_s=0.2)
    gen = ScriptedGenerator([chain])
    [rec] = run_pipelined(gen, ["q?"], {"calculator": tool}, math="calculator").records
    assert rec["pred_answer"] == "30" and rec["levels"] == [["y1", "y2", "y3"], ["y4"]]
    assert tool.max_active == 3  # the three independent calls of level 0 were in flight together


def test_decode_batches_and_generator_failure():
    problems = generate_problems(5)
    gen = ScriptedGenerator([p.coa_chain for p in problems])  # per call: i-th prompt -> i-th chain
    pip = run_pipelined(gen, problems, decode_batch=5)
    assert [r["correct"] for r in pip.records] == [True] * 5 and len(gen.calls) == 1

    class Broken(ScriptedGenerator):
        def generate(self, prompts, params=None):
            raise RuntimeError("decoder crashed")

    out = run_pipelined(Broken(["x"]), ["a?", "b?", "c?"], decode_batch=2)
    assert [r["pred_answer"] for r in out.records] == [None] * 3
    assert all(any("decoder crashed" in e for e in r["errors"]) for r in out.records)


def test_pipelined_with_sqlite_checkpoints_and_gsm8k_rows(tmp_path):
    rows = [{"id": f"g{i}", "question": f"Question {i}?", "answer": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
            for i in range(6)]
    def respond(prompt: str, k: int, rng: Any) -> str:
        n = prompt.split("Question ")[1].split("?")[0]
        return f"He has [{n} + 1 = y1] pens."

    gen = ScriptedGenerator(respond)
    with CoAAgent(gen, checkpoint_path=tmp_path / "ck.sqlite") as agent:
        run = run_pipelined(agent, rows, tool_workers=3)
        assert [r["correct"] for r in run.records] == [True] * 6
        assert [r["gold_answer"] for r in run.records] == [str(i + 1) for i in range(6)]
        assert agent.state("g5")["pred_answer"] == "6"


def test_misuse():
    gen = ScriptedGenerator(["x"])
    with pytest.raises(ValueError, match="tool_workers"):
        run_pipelined(gen, ["q"], tool_workers=0)
    with pytest.raises(ValueError, match="not both"):
        run_sequential(CoAAgent(gen), ["q"], {"calculator": Calculator()})
    with pytest.raises(TypeError, match="CoAAgent or a Generator"):
        run_pipelined("gen", ["q"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency_s"):
        DelayedTool(Calculator(), latency_s=-1)
