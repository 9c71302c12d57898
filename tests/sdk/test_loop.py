"""The Loop builder and the public stages (issue 15): wiring checks, typed configs, metrics in iterations.jsonl,
budgets, resume, the model handed from one iteration to the next, and the composed loops of judges/loops.

The wiring, budget and resume tests use the ScriptedGenerator test double and a rule-based judge (no weights);
the model-handoff and composed-loop tests train the real sandbox seed model with TRL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from loopwright.sdk import ConfigError, Judge, Verdict
from loopwright.sdk.artifacts import read_jsonl
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.loop import BudgetExceededError, Loop, LoopBudget, StageContext, resume_command
from loopwright.sdk.loop_stages import (
    ApplyFilter,
    BuildPairs,
    Evaluate,
    FunctionStage,
    Generate,
    RejectionSample,
    Score,
)

PROMPTS = [f"question {i}" for i in range(6)]


class LengthJudge(Judge):
    """Scores a response by its word count; 'garbage' is an invalid verdict (a unit-test double)."""

    kinds = frozenset({"pointwise"})
    name = "length"

    def score(self, prompts, responses):
        out = []
        for r in responses:
            if "garbage" in r:
                out.append(Verdict(kind="pointwise", valid=False, invalid_reason="no score", raw=r))
            else:
                out.append(Verdict(kind="pointwise", score=float(len(r.split())), valid=True, raw=r))
        return out


def _scripted(model_dir: str) -> ScriptedGenerator:
    return ScriptedGenerator(lambda prompt, i, rng: " ".join(["w"] * (1 + (i + len(prompt)) % 4))
                             + (" garbage" if i == 3 else ""), model_id=model_dir)


def _stages(**gen):
    return [Generate(prompts=PROMPTS, n=4, **gen), Score(judge=LengthJudge()), BuildPairs(min_margin=1.0),
            Evaluate(fn=lambda g: (len(g.generate(PROMPTS[:2])), 4))]


# --------------------------------------------------------------------------------------------- wiring


def test_inputs_are_wired_by_kind_and_named_by_stage():
    loop = Loop(_stages(), seed_model="seed", make_generator=_scripted, progress=False)
    ref = loop._inputs["score"]["input"]
    assert ref.model_dump(include={"stage", "name", "kind"}) == {"stage": "generate", "name": "samples",
                                                                 "kind": "samples"}
    assert str(loop._inputs["build_pairs"]["input"]) == "score.scored"
    assert loop.artifacts["build_pairs.pairs"].kind == "preference"
    assert loop.artifacts["build_pairs.pairs"].path(Path("/r"), 2) == Path("/r/iter_2/build_pairs/pairs.jsonl")


@pytest.mark.parametrize(("stages", "message"), [
    ([Score(judge=LengthJudge())], "needs a samples or scored input, and no earlier stage writes one"),
    ([Generate(prompts=PROMPTS), Score(judge=LengthJudge(), input="gen.samples")], "names no earlier stage"),
    ([Generate(prompts=PROMPTS), Score(judge=LengthJudge(), input="generate.scored")], "has no output 'scored'"),
    ([Generate(prompts=PROMPTS), BuildPairs(input="generate")], "needs a scored input, but generate.samples is"),
    ([Generate(prompts=PROMPTS, name="g"), Generate(prompts=PROMPTS, name="g")], "two stages are named 'g'"),
    ([Generate(prompts=PROMPTS, name="../x")], "must be letters, digits"),
    ([Generate(prompts=PROMPTS, input="x")], "takes no input"),
])
def test_bad_wiring_is_one_clear_error(stages, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Loop(stages, seed_model="seed")


def test_stage_configs_are_typed():
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Generate(prompts=PROMPTS, n=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        Generate(prompts=PROMPTS, temprature=0.5)
    with pytest.raises(ValidationError, match="not a pointwise judge"):
        class Pairwise(Judge):
            kinds = frozenset({"pairwise"})
        Score(judge=Pairwise())
    with pytest.raises(ValidationError, match="loopwright Filter"):
        ApplyFilter(filter=lambda rows: rows)
    with pytest.raises(ConfigError, match="LoopStage objects"):
        Loop([lambda s: s], seed_model="seed")


def test_repeated_kinds_are_numbered():
    loop = Loop([Generate(prompts=PROMPTS), Score(judge=LengthJudge()), Score(judge=LengthJudge())],
                seed_model="seed")
    assert loop._names == ["generate", "score1", "score2"]
    assert str(loop._inputs["score2"]["input"]) == "score1.scored"


# --------------------------------------------------------------------------------------------- running


def test_loop_writes_artifacts_metrics_and_a_report(tmp_path):
    loop = Loop(_stages(), seed_model="seed", iterations=2, make_generator=_scripted, progress=False)
    records = loop.run(tmp_path / "run")
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert set(records[0]["metrics"]) == {"evaluate.accuracy", "evaluate.accuracy_n"}  # the seed's baseline row
    m = records[1]["metrics"]
    assert m["generate.prompts"] == 6 and m["generate.responses"] == 24
    assert m["score.invalid_rate"] == pytest.approx(6 / 24)  # every 4th sample says "garbage"
    assert m["evaluate.accuracy"] == 0.5 and records[1]["intervals"]["evaluate.accuracy"]["n"] == 4
    scored = read_jsonl(tmp_path / "run/iter_1/score/scored.jsonl")
    assert scored[0]["rewards"][3] is None and scored[0]["invalid_reasons"][3] == "no score"
    pairs = read_jsonl(tmp_path / "run/iter_1/build_pairs/pairs.jsonl")
    assert m["build_pairs.pairs"] == len(pairs) > 0
    for p in pairs:  # TRL conversational preference rows, best over worst by at least the margin
        assert p["prompt"][0]["role"] == "user" and p["chosen"][0]["role"] == "assistant"
        assert p["chosen_reward"] - p["rejected_reward"] >= 1.0
    assert (tmp_path / "run/report/report.md").is_file()
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["config"]["artifacts"]["score.scored"] == "scored"
    assert manifest["stages"]["iter2.generate"]["metrics"]["budget"]["generator_calls"] == 6


def test_each_iteration_samples_with_its_own_seed_and_prompt_slice(tmp_path):
    seen = []

    def make(model_dir):
        gen = _scripted(model_dir)
        seen.append(gen)
        return gen

    loop = Loop([Generate(prompts=PROMPTS, n=2, per_iteration=4)], seed_model="seed", iterations=2,
                make_generator=make, progress=False)
    loop.run(tmp_path / "run")
    ids = [[r["id"] for r in read_jsonl(tmp_path / f"run/iter_{t}/generate/samples.jsonl")] for t in (1, 2)]
    assert ids == [[0, 1, 2, 3], [4, 5, 0, 1]]
    assert [c.params.seed for g in seen for c in g.calls] == [1, 2]
    assert len(seen) == 1, "no train stage, so one model: the loop keeps its generator open across iterations"


def test_budget_cap_stops_before_the_next_stage_and_resumes_with_a_larger_one(tmp_path):
    stages = _stages()
    capped = Loop(stages, seed_model="seed", iterations=2, make_generator=_scripted, progress=False,
                  budget=LoopBudget(max_generator_calls=8))
    with pytest.raises(BudgetExceededError, match="max_generator_calls=8 reached"):
        capped.run(tmp_path / "run")
    manifest = json.loads((tmp_path / "run/manifest.json").read_text())
    assert manifest["meta"]["budget_stop"]["before"] == "iter1.score"  # 2 (seed eval) + 6 prompts = 8 calls
    assert "iter1.score" not in manifest["stages"] or manifest["stages"]["iter1.score"]["status"] != "done"
    records = Loop(stages, seed_model="seed", iterations=2, make_generator=_scripted, progress=False,
                   budget=LoopBudget(max_generator_calls=100)).run(tmp_path / "run", resume=True)
    assert [r["iteration"] for r in records] == [0, 1, 2]


def test_resume_skips_finished_stages_and_refuses_a_changed_loop(tmp_path):
    calls = []

    def count(ctx: StageContext):
        calls.append((ctx.iteration, ctx.stage_name))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return {"ok": 1}

    stages = [Generate(prompts=PROMPTS, n=1), FunctionStage(fn=count, name="work")]
    loop = Loop(stages, seed_model="seed", iterations=2, make_generator=_scripted, progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        loop.run(tmp_path / "run")
    loop.run(tmp_path / "run", resume=True)
    assert calls == [(1, "work"), (2, "work"), (2, "work")]  # iteration 1 is not redone
    with pytest.raises(ConfigError, match="not empty"):
        loop.run(tmp_path / "run")
    other = Loop([Generate(prompts=PROMPTS, n=2), FunctionStage(fn=count, name="work")], seed_model="seed",
                 iterations=2, make_generator=_scripted, progress=False)
    with pytest.raises(ConfigError, match="different config"):
        other.run(tmp_path / "run", resume=True)


def test_rejection_sample_and_filter_keep_reasons(tmp_path):
    from loopwright.judges.rip import RIPFilter

    stages = [Generate(prompts=PROMPTS, n=4), Score(judge=LengthJudge()), ApplyFilter(filter=RIPFilter()),
              RejectionSample(threshold=3.0, max_per_prompt=1)]
    Loop(stages, seed_model="seed", make_generator=_scripted, progress=False).run(tmp_path / "run")
    d = tmp_path / "run/iter_1"
    kept, dropped = read_jsonl(d / "filter/kept.jsonl"), read_jsonl(d / "filter/rejected.jsonl")
    assert len(kept) + len(dropped) == 6 and all(r["reason"] for r in dropped)
    sft = read_jsonl(d / "rejection_sample/kept.jsonl")
    assert all(row["messages"][-1]["role"] == "assistant" for row in sft)
    assert len(sft) <= len(kept)  # one per prompt at most
    reasons = {r["reason"].split(":")[0].split(" ")[0] for r in read_jsonl(d / "rejection_sample/rejected.jsonl")}
    assert reasons <= {"invalid", "score", "duplicate", "prompt"}


def test_resume_command_names_how_the_loop_was_started(tmp_path):
    Loop([Generate(prompts=PROMPTS, n=1)], seed_model="seed", make_generator=_scripted,
         progress=False).run(tmp_path / "run")
    with pytest.raises(ConfigError, match="cannot be re-run; rebuild the same Loop in Python"):
        resume_command(tmp_path / "run")  # started by pytest: not a script to re-run


# --------------------------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def seed_model() -> str:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return str(ensure_seed_model(progress=False))


def test_trained_model_is_handed_to_the_next_iteration(seed_model, tmp_path):
    """STaR composition with the gold checker on the real seed model: which model every stage loaded."""
    from loopwright.judges.loops import star_loop
    from loopwright.judges.oracle import GoldAnswerJudge
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.trainers.result import read_train_manifest
    from loopwright.trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

    problems = held_out_problems(40)
    loaded = []

    def make(model_dir):
        loaded.append(Path(model_dir))
        return TransformersGenerator(model_dir, batch_size=64)

    loop = star_loop(seed_model, [miniarith_prompt(p) for p in problems[8:]], GoldAnswerJudge(problems[8:]),
                     iterations=2, n=4, max_tokens=96, epochs=1.0, init_from="previous",
                     evaluate=lambda g: evaluate_accuracy(g, problems[:8], max_tokens=96),
                     make_generator=make, progress=False)
    records = loop.run(tmp_path / "run")
    m1, m2 = tmp_path / "run/iter_1/train_sft/model", tmp_path / "run/iter_2/train_sft/model"
    seed = Path(seed_model)
    # iter0 eval + iter1 generate (seed, one generator), iter1 eval + iter2 generate (M1), iter2 eval (M2): the
    # loop keeps a model's generator open until a train stage or another model needs it
    assert loaded == [seed, m1, m2]
    assert Path(read_train_manifest(m2)["base"]).resolve() == m1.resolve()  # init_from="previous"
    assert records[1]["metrics"]["rejection_sample.kept"] > 0
    assert records[2]["intervals"]["evaluate.accuracy"]["n"] == 8
