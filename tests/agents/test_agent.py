"""The CoA LangGraph agent (spec/loops.md §1.6-§1.7, Appendix A.1): scripted chains, bad input, the real seed model."""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from loopwright.agents.coa.agent import RECORD_FIELDS, CoAAgent, as_question
from loopwright.agents.coa.evaluate import evaluate_coa_vs_cot
from loopwright.agents.coa.pipeline import DelayedTool
from loopwright.sdk.generator import Generator
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.tasks.gsm8k import GSM8KProblem
from loopwright.sdk.tasks.miniarith import OOD, generate_problems
from loopwright.sdk.tool import Tool
from loopwright.sdk.types import SamplingParams
from loopwright.tools.calculator import Calculator

A1_FIELDS = {"id", "dataset", "pred_chain", "reified", "pred_answer", "gold_answer", "correct", "n_calls",
             "t_decode_s", "t_tools_s", "errors"}


def chain_responder(table: dict[str, str], default: str = "I do not know."):
    """Scripted model: answers a prompt containing a known question with that question's text."""
    def respond(prompt: str, k: int, rng: Any) -> str:
        for q, out in table.items():
            if q in prompt:
                return out
        return default
    return respond


def test_scripted_gold_chains_answer_correctly_and_are_checkpointed(tmp_path):
    problems = generate_problems(6) + generate_problems(3, OOD, start=6)
    gen = ScriptedGenerator(chain_responder({p.question: p.coa_chain for p in problems}))
    db = tmp_path / "coa.sqlite"
    with CoAAgent(gen, checkpoint_path=db) as agent:
        records = agent.answer(problems)
        assert [r["id"] for r in records] == [p.id for p in problems]
        for p, r in zip(problems, records, strict=True):
            assert A1_FIELDS <= set(r) and set(r) == set(RECORD_FIELDS)
            assert r["pred_chain"] == p.coa_chain
            assert r["pred_answer"] == str(p.answer) and r["correct"] is True, r
            assert r["n_calls"] == p.steps and r["errors"] == []
            assert "[" in r["reified"] and "y1" not in r["reified"]
        state = agent.state(problems[0].id)
        assert state["pred_answer"] == str(problems[0].answer) and state["chain"] == problems[0].coa_chain
        again = agent.answer(problems[:1])[0]  # the same id again: a fresh thread, no errors carried over
        assert again == records[0] | {"t_decode_s": again["t_decode_s"], "t_tools_s": again["t_tools_s"]}
    n = sqlite3.connect(db).execute("select count(*) from checkpoints").fetchone()[0]
    assert n >= len(problems) * 4  # one checkpoint per node at least, for every question's thread


def test_calculator_mode_and_batched_decode_give_same_answers():
    problems = generate_problems(5, OOD)
    gen = ScriptedGenerator(chain_responder({p.question: p.coa_chain for p in problems}))
    a = CoAAgent(gen, math="calculator").answer(problems, decode_batch=3)
    b = CoAAgent(gen).answer(problems)
    assert [r["pred_answer"] for r in a] == [r["pred_answer"] for r in b] == [str(p.answer) for p in problems]
    assert {r["math_mode"] for r in a} == {"calculator"} and {r["math_mode"] for r in b} == {"system"}
    assert len(gen.calls[0].prompts) == 3  # decode_batch=3: one generator call for three questions


class _Args(BaseModel):
    expression: str


class Boom(Tool):
    name: ClassVar[str] = "calculator"
    description: ClassVar[str] = "always fails"
    args_model: ClassVar[type[BaseModel]] = _Args

    def _run(self, args: BaseModel) -> Any:
        raise RuntimeError("tool exploded")


BAD = {
    "undefined": ("Undefined?", "He has [y3 + 2 = y1] pens.", "undefined placeholder y3"),
    "cycle": ("Cycle?", "A [y2 + 1 = y1] and B [y1 * 2 = y2].", "cyclic placeholders"),
    "malformed": ("Malformed?", "He has [2 + = y1 pens.", "unclosed"),
    "nocalls": ("No calls?", "12+7=<<12+7=19>>19\n#### 19", "no calls"),
    "divzero": ("Div by zero?", "He has [5 / 0 = y1] pens.", "y1"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_chains_are_recorded_without_answer_and_the_batch_goes_on(kind):
    question, chain, reason = BAD[kind]
    good = generate_problems(1)[0]
    gen = ScriptedGenerator(chain_responder({question: chain, good.question: good.coa_chain}))
    records = CoAAgent(gen).answer([question, good])
    bad, ok = records
    assert bad["pred_answer"] is None and bad["pred_chain"] == chain
    assert any(reason in e for e in bad["errors"]), bad
    if kind in ("undefined", "cycle", "malformed"):
        assert bad["valid_chain"] is False and reason in bad["invalid_reason"]
    assert ok["correct"] is True and ok["pred_answer"] == str(good.answer)


def test_failing_and_timed_out_tools_give_no_answer_with_reason():
    good = generate_problems(1)[0]
    gen = ScriptedGenerator(chain_responder({good.question: good.coa_chain}))
    [failed] = CoAAgent(gen, {"calculator": Boom()}).answer([good])
    assert failed["pred_answer"] is None and any("tool exploded" in e for e in failed["errors"])
    slow = {"calculator": DelayedTool(Calculator(), latency_s=0.3)}
    [timed] = CoAAgent(gen, slow, tool_timeout_s=0.05).answer([good])
    assert timed["pred_answer"] is None and any("timed out" in e for e in timed["errors"]), timed


class Broken(Generator):
    backend = "broken"

    def generate(self, prompts, params=None):
        raise RuntimeError("engine died")


def test_generator_failure_is_a_record_not_a_crash():
    records = CoAAgent(Broken()).answer(["a?", "b?"], decode_batch=2)
    assert [r["pred_answer"] for r in records] == [None, None]
    assert all(any("engine died" in e for e in r["errors"]) for r in records)


def test_misuse_raises_with_the_fix():
    gen = ScriptedGenerator(["x"])
    with pytest.raises(ValueError, match="n=1"):
        CoAAgent(gen, params=SamplingParams(n=2))
    with pytest.raises(TypeError, match="Generator"):
        CoAAgent(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="question"):
        as_question({"text": "no question key"})
    with pytest.raises(ValueError, match="decode_batch"):
        CoAAgent(gen).answer(["q"], decode_batch=0)


def test_real_seed_model_outputs_are_recorded_and_the_batch_finishes():
    """The sandbox seed model was trained on CoT, not chains: most outputs have no calls. Every one is recorded."""
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.trainers.sandbox.seed import ensure_seed_model, held_out_problems

    problems = held_out_problems(4)
    gen = TransformersGenerator(ensure_seed_model(progress=False))
    records = CoAAgent(gen, params=SamplingParams(max_tokens=48)).answer(problems, decode_batch=4)
    assert len(records) == 4
    for r in records:
        assert isinstance(r["pred_chain"], str) and r["pred_chain"].strip()
        assert r["t_decode_s"] > 0 and r["valid_chain"] in (True, False)
        if r["pred_answer"] is None:
            assert r["errors"], r  # "no calls" / invalid chain / tool error: always a reason
    assert sum(r["pred_answer"] is None for r in records) >= 1


def test_evaluate_coa_vs_cot_with_scripted_model():
    problems = generate_problems(8)
    table: dict[str, str] = {}
    for i, p in enumerate(problems):
        table["COA: " + p.question] = p.coa_chain if i != 0 else "He has [y9 + 1 = y1]."
        table["COT: " + p.question] = p.cot if i % 2 == 0 else p.cot.rsplit("####", 1)[0] + f"#### {p.answer + 1}"
    gen = ScriptedGenerator(chain_responder(table))
    report = evaluate_coa_vs_cot(gen, problems, coa_prompt_fn=lambda q: "COA: " + q,
                                 cot_prompt_fn=lambda q: "COT: " + q, batch_size=3)
    coa, cot = report.summary["coa"], report.summary["cot"]
    assert coa["n"] == cot["n"] == 8
    assert coa["correct"] == 7 and coa["invalid_chains"] == 1 and coa["no_answer"] == 1
    assert coa["tool_calls"] == sum(p.steps for p in problems[1:])
    assert cot["correct"] == 4 and cot["accuracy"] == 0.5 and cot["tool_calls"] == 0
    assert report.records["cot"][1]["pred_answer"] == str(problems[1].answer + 1)
    assert "| coa |" in report.table() and "| cot |" in report.table()
    gsm = [GSM8KProblem(id="g1", question="COA-less?", answer="1+1=<<1+1=2>>2\n#### 2", gold="2")]
    rep = evaluate_coa_vs_cot(ScriptedGenerator(["2 + 2 = 4 #### 4"]), gsm)
    assert rep.summary["cot"]["correct"] == 0 and rep.summary["coa"]["no_call_chains"] == 1
    with pytest.raises(ValueError, match="gold"):
        evaluate_coa_vs_cot(gen, ["no gold here?"])
