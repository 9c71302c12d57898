"""The inspect-ai scorer adapter, run inside a real ``inspect_ai.eval`` (mockllm provider, offline)."""

from __future__ import annotations

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.model import ModelOutput, ModelUsage  # noqa: E402
from inspect_ai.solver import generate  # noqa: E402

from loopwright.judges.adapters.inspect import judge_scorer, verdict_to_score_value  # noqa: E402
from loopwright.judges.pairwise import PairwiseJudge  # noqa: E402
from loopwright.judges.pointwise import PointwiseJudge  # noqa: E402
from loopwright.sdk.generators.scripted import ScriptedGenerator  # noqa: E402
from loopwright.sdk.judge import Judge  # noqa: E402
from loopwright.sdk.types import Verdict  # noqa: E402


class LongerJudge(Judge):
    kinds = frozenset({"pairwise"})

    def __init__(self):
        self.batches: list[int] = []

    def compare(self, prompts, a, b):
        self.batches.append(len(prompts))
        return [Verdict(kind="pairwise", preference="A" if len(x) > len(y) else "B", valid=True)
                for x, y in zip(a, b, strict=True)]


def _model_output(messages, tools, tool_choice, config) -> ModelOutput:
    out = ModelOutput.from_content(model="mockllm", content="answer " + messages[-1].text)
    out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)  # no tiktoken download
    return out


def test_scorers_in_a_real_inspect_eval(tmp_path):
    longer = LongerJudge()
    garbage_gen = ScriptedGenerator(["I cannot decide."])
    pointwise_gen = ScriptedGenerator(["Fine answer. Score: 4"])
    samples = [Sample(input=f"q{i}", target="x" * (3 * i)) for i in range(10)]  # outputs: "answer qI" (9 chars)
    scorers = [
        judge_scorer(longer, name="longer"),
        judge_scorer(PairwiseJudge(garbage_gen), name="garbage"),
        judge_scorer(PointwiseJudge(pointwise_gen), mode="pointwise", name="pointwise"),
    ]
    [log] = eval(Task(dataset=samples, solver=generate(), scorer=scorers), model="mockllm/model",
                 model_args={"custom_outputs": _model_output}, log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    metrics = {s.name: {k: m.value for k, m in s.metrics.items()} for s in log.results.scores}
    # output (9 chars) beats targets of 0, 3, 6 chars: win rate 0.3
    assert metrics["longer"]["accuracy"] == pytest.approx(0.3)
    assert metrics["longer"]["invalid_rate"] == 0.0
    assert sum(longer.batches) == 10 and len(longer.batches) < 10  # concurrent samples were micro-batched
    # the scripted judge never names [[A]]/[[B]]: every score is "N" (invalid), counted, not a silent loss
    assert metrics["garbage"]["invalid_rate"] == 1.0 and metrics["garbage"]["accuracy"] == 0.0
    assert metrics["pointwise"]["valid_mean"] == pytest.approx(4.0)
    assert metrics["pointwise"]["invalid_rate"] == 0.0
    s = log.samples[0].scores
    assert s["garbage"].value == "N" and s["garbage"].reason == "grader_failed"
    assert s["garbage"].metadata["valid"] is False and "unparseable" in s["garbage"].explanation
    assert s["longer"].value == "C" and s["longer"].metadata["preference"] == "A"
    assert garbage_gen.calls and all(len(c.prompts) % 2 == 0 for c in garbage_gen.calls)  # both orders


def test_score_values_and_misuse():
    assert verdict_to_score_value(Verdict(kind="pairwise", preference="tie", valid=True)) == "P"
    assert verdict_to_score_value(Verdict(kind="pairwise", preference="B", valid=True)) == "I"
    assert verdict_to_score_value(Verdict(kind="pointwise", score=2.5, valid=True), "pointwise") == 2.5
    assert verdict_to_score_value(Verdict(kind="pairwise", valid=False, invalid_reason="x")) == "N"
    with pytest.raises(ValueError, match="mode='ranking'"):
        judge_scorer(LongerJudge(), mode="ranking")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does not implement score"):
        judge_scorer(LongerJudge(), mode="pointwise")
