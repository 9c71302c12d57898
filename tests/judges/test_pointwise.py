"""PointwiseJudge on the scripted generator (a unit-test double: these tests pin how the judge uses a generator
and turns text into Verdicts; the real engines are exercised in test_sandbox_judges.py)."""

from __future__ import annotations

import json

import pytest
from judge_conformance import JUDGE_CONFORMANCE_CHECKS

from loopwright.judges import ADDITIVE_5POINT, JudgeTemplate, PointwiseJudge, make_pointwise_judge
from loopwright.judges.parsers import SCORE_PARSER_VERSION
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.types import SamplingParams


def _scored(text: str, rng) -> str:
    """A scripted judge that scores by content and sometimes talks nonsense (sampled calls)."""
    if "#### 19" in text or "#### 27" in text or "#### 54" in text:
        return f"Correct and clear.\nScore: {rng.choice([4, 4.5, 5])}"
    return "Wrong arithmetic.\nScore: 1"


@pytest.fixture(params=["valid", "garbage", "mixed"])
def judge(request):
    if request.param == "valid":
        gen = ScriptedGenerator(lambda text, k, rng: _scored(text, rng))
    elif request.param == "garbage":
        gen = ScriptedGenerator(["I cannot judge this.", "Score: 11", "Score: <points>"])
    else:
        gen = ScriptedGenerator(["Fine.\nScore: 3", "blah blah"])
    return PointwiseJudge(gen)


@pytest.mark.parametrize("check", JUDGE_CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(judge, check):
    check(judge)


def test_valid_and_invalid_verdicts():
    gen = ScriptedGenerator(["Relevant but incomplete.\nScore: 2", "no verdict here", "**Score:** 4.5"])
    out = PointwiseJudge(gen).score(["q1", "q2", "q3"], ["r1", "r2", "r3"])
    assert [v.valid for v in out] == [True, False, True]
    assert out[0].score == 2.0 and out[0].reasoning == "Relevant but incomplete." and out[0].samples == [2.0]
    assert out[2].score == 4.5
    bad = out[1]
    assert bad.score is None and bad.samples == [] and "no 'Score" in bad.invalid_reason
    assert bad.raw == "no verdict here"


def test_one_batched_call_renders_the_rubric():
    gen = ScriptedGenerator(["Score: 3"])
    judge = PointwiseJudge(gen)
    judge.score(["What is 2+2?", [{"role": "user", "content": "What is 3+3?"}]], ["4", "6"])
    assert len(gen.calls) == 1, "all items must go to the generator in one call"
    prompts = gen.calls[0].prompts
    assert len(prompts) == 2 and prompts[0][-1]["role"] == "user"
    assert "What is 2+2?" in prompts[0][-1]["content"] and "<response>4</response>" in prompts[0][-1]["content"]
    assert "What is 3+3?" in prompts[1][-1]["content"]
    assert prompts[0] != prompts[1], "two consecutive renders must differ (STE PR #17's shared template bug)"
    assert 'Score: <points>' in prompts[0][-1]["content"]


def test_k_samples_averaged_and_invalid_samples_dropped():
    replies = {0: "Score: 4", 1: "Score: 5", 2: "garbage", 3: "Score: 3"}
    gen = ScriptedGenerator(lambda text, k, rng: replies[k])
    judge = PointwiseJudge(gen, samples=4)
    [v] = judge.score(["q"], ["r"])
    assert gen.calls[0].params.n == 4 and gen.calls[0].params.temperature == 0.7
    assert v.valid and v.samples == [4.0, 5.0, 3.0] and v.score == pytest.approx(4.0)
    assert json.loads(v.raw) == ["Score: 4", "Score: 5", "garbage", "Score: 3"]
    assert v.usage.completion_tokens == 2 + 2 + 1 + 2


def test_all_samples_invalid_is_invalid_with_every_reason():
    gen = ScriptedGenerator(lambda text, k, rng: ["nothing", "Score: 9"][k % 2])
    [v] = PointwiseJudge(gen, samples=2).score(["q"], ["r"])
    assert not v.valid and v.score is None
    assert "sample 0: no 'Score" in v.invalid_reason and "sample 1: score 9 outside" in v.invalid_reason


def test_truncated_output_says_so():
    gen = ScriptedGenerator(["word " * 50 + "Score: 4"])
    [v] = PointwiseJudge(gen, sampling=SamplingParams(max_tokens=8)).score(["q"], ["r"])
    assert not v.valid and "cut at max_tokens" in v.invalid_reason


def test_provenance_records_model_template_parser_sampling():
    gen = ScriptedGenerator(["Score: 3"], model_id="judge-model")
    [v] = PointwiseJudge(gen).score(["q"], ["r"])
    p = v.judge
    assert p.model == "judge-model" and p.parser_version == SCORE_PARSER_VERSION
    assert p.template_id == ADDITIVE_5POINT.template_id and p.template_hash == ADDITIVE_5POINT.template_hash
    assert p.sampling["n"] == 1 and p.sampling["temperature"] == 0.0


def test_custom_template_string_and_validation():
    gen = ScriptedGenerator(["Score: 5"])
    judge = PointwiseJudge(gen, "Q: {{ question }}\nA: {{ response }}\nRate 0-5. Score:")
    [v] = judge.score(["2+2?"], ["4"])
    assert gen.calls[0].prompts[0] == [{"role": "user", "content": "Q: 2+2?\nA: 4\nRate 0-5. Score:"}]
    assert v.judge.template_id == "custom" and v.judge.template_hash != ADDITIVE_5POINT.template_hash
    with pytest.raises(ValueError, match="unknown variable"):
        PointwiseJudge(gen, "{{ question }} {{ response }} {{ answer }}")
    with pytest.raises(ValueError, match="never uses"):
        PointwiseJudge(gen, "Rate this: {{ response }}")
    with pytest.raises(ValueError, match="samples"):
        PointwiseJudge(gen, samples=0)
    with pytest.raises(TypeError, match="Generator"):
        PointwiseJudge("not a generator")  # type: ignore[arg-type]


def test_template_hash_tracks_wording():
    a = JudgeTemplate("{{ question }} {{ response }}")
    b = JudgeTemplate("{{ question }}  {{ response }}")
    assert a.template_hash != b.template_hash
    assert a.template_hash == JudgeTemplate("{{ question }} {{ response }}").template_hash


def test_template_is_sandboxed():
    """Template code cannot reach Python internals (jinja2 SandboxedEnvironment)."""
    from jinja2.exceptions import SecurityError

    t = JudgeTemplate("{{ question.__class__.__mro__[1].__subclasses__() }} {{ response }}")
    with pytest.raises(SecurityError):
        t.render(question="q", response="r")


def test_greedy_with_many_samples_warns():
    with pytest.warns(UserWarning, match="identical"):
        PointwiseJudge(ScriptedGenerator(["Score: 1"]), samples=3, sampling=SamplingParams())


def test_factory_and_call():
    judge = make_pointwise_judge(ScriptedGenerator(["Score: 2"]))
    v = judge("q", "r")
    assert v.valid and v.score == 2.0


def test_default_templates_never_parse_as_a_verdict():
    """A model that echoes its prompt gets an invalid verdict (prometheus-eval#58 matched its own template)."""
    from loopwright.judges import META_JUDGE, PAIRWISE_VERDICT
    from loopwright.judges.parsers import parse_meta_winner, parse_pairwise, parse_score

    def echo(messages):
        return "\n".join(m["content"] for m in messages)

    point = echo(ADDITIVE_5POINT.render(question="What is 2+2?", response="4"))
    pair = echo(PAIRWISE_VERDICT.render(question="q", response_a="a", response_b="b"))
    meta = echo(META_JUDGE.render(question="q", response="r", judgement_a="ja", judgement_b="jb"))
    assert parse_score(point).value is None and "Score: <points>" in point
    assert parse_pairwise(pair).value is None and "ambiguous" in parse_pairwise(pair).reason
    assert parse_meta_winner(meta).value is None and "Winner: Judgement X" in meta
    assert "5-point" in meta and "<judgement_b>jb</judgement_b>" in meta
