"""Next-token judges (issue 14 item 3): logprob pairwise, expected score (G-Eval), score comparison, prefill."""

from __future__ import annotations

import math

import pytest

from loopwright.judges import (
    ExpectedScoreJudge,
    LogprobPairwiseJudge,
    PointwiseJudge,
    ScoreComparisonJudge,
    evaluate,
    option_logprobs,
)
from loopwright.judges.datasets import PreferencePair
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, SamplingParams, Usage


class TopGenerator(Generator):
    """Unit-test double: returns one completion whose single position has scripted top logprobs.

    ``tops`` maps a substring of the rendered prompt to the distribution to return; the first match wins."""

    backend = "top-double"
    model_id = "top-double"

    def __init__(self, tops: list[tuple[str, dict[str, float]]]) -> None:
        self.tops = tops
        self.calls: list[list] = []

    def generate(self, prompts, params=None):
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            text = "\n".join(m["content"] for m in p)
            top = next(t for key, t in self.tops if key in text)
            best = max(top, key=top.get)
            out.append([Completion(text=best, logprobs=[top[best]], top_logprobs=[top], finish_reason="length",
                                   usage=Usage(prompt_tokens=len(text.split()), completion_tokens=1))])
        return out


def lp(**probs: float) -> dict[str, float]:
    return {k.replace("_", " "): math.log(v) for k, v in probs.items()}


def test_option_logprobs_counts_each_spelling_of_an_option_once():
    top = {"A": math.log(0.3), " A": math.log(0.1), "A]]": math.log(0.1), "AB": math.log(0.2), "B": math.log(0.1),
           "45": math.log(0.1), "4.": math.log(0.05), "4": math.log(0.05)}
    got = option_logprobs(top, ("A", "B", "4", "5"))
    assert math.isclose(math.exp(got["A"]), 0.5)  # "AB" is another word, not the letter
    assert math.isclose(math.exp(got["B"]), 0.1)
    assert math.isclose(math.exp(got["4"]), 0.1)  # "45" is not a 4
    assert "5" not in got


def test_logprob_pairwise_averages_both_orders_and_records_each():
    # Forward order shows X as A; the reverse order shows Y as A.
    gen = TopGenerator([("A's Answer]\nX", {"A": math.log(0.8), "B": math.log(0.2)}),
                        ("A's Answer]\nY", {"A": math.log(0.7), "B": math.log(0.3)})])
    judge = LogprobPairwiseJudge(gen)
    (v,) = judge.compare(["q"], ["X"], ["Y"])
    # forward p_a = 0.8; reverse shows Y first with P(shown A) = 0.7, so P(X) = 0.3 there
    assert v.valid and v.samples == pytest.approx([0.8, 0.3])
    assert v.p_a == pytest.approx(0.55) and v.preference == "A"
    assert (v.swap.forward, v.swap.reverse, v.swap.consistent) == ("A", "B", False)
    assert v.usage.completion_tokens == 2
    rendered = gen.calls[0][0]
    assert rendered[-1] == {"role": "assistant", "content": "[["}


def test_logprob_pairwise_single_order_and_invalid_reason_names_top_tokens():
    gen = TopGenerator([("A's Answer]\nX", {"Sure": math.log(0.9), "I": math.log(0.1)}),
                        ("A's Answer]\nY", {"B": math.log(0.6), "A": math.log(0.2)})])
    (v,) = LogprobPairwiseJudge(gen).compare(["q"], ["X"], ["Y"])
    assert v.valid and v.preference == "A" and v.p_a == pytest.approx(0.75)  # the reverse order alone decides
    (w,) = LogprobPairwiseJudge(gen, both_orders=False).compare(["q"], ["X"], ["Y"])
    assert not w.valid and "'Sure'" in w.invalid_reason and "neither A nor B" in w.invalid_reason


def test_expected_score_is_the_probability_weighted_score():
    gen = TopGenerator([("good", lp(**{"4": 0.6, "5": 0.2, "x": 0.2})), ("bad", lp(**{"1": 0.5, "2": 0.5})),
                        ("junk", lp(**{"hello": 1.0}))])
    judge = ExpectedScoreJudge(gen)
    good, bad, junk = judge.score(["q"] * 3, ["good", "bad", "junk"])
    assert good.score == pytest.approx(4.25) and bad.score == pytest.approx(1.5)
    assert not junk.valid and "no score 0-5" in junk.invalid_reason
    assert gen.calls[0][0][-1] == {"role": "assistant", "content": "Score: "}
    with pytest.raises(ValueError, match="low"):
        ExpectedScoreJudge(gen, low=0, high=10)


def test_score_comparison_prefers_the_higher_score_and_is_not_re_asked_swapped():
    gen = TopGenerator([("good", lp(**{"4": 1.0})), ("bad", lp(**{"1": 1.0})), ("same", lp(**{"1": 1.0})),
                        ("junk", lp(hello=1.0))])
    judge = ScoreComparisonJudge(ExpectedScoreJudge(gen))
    ab, ba, tie, bad = judge.compare(["q"] * 4, ["good", "bad", "same", "junk"], ["bad", "good", "bad", "good"])
    assert (ab.preference, ba.preference, tie.preference) == ("A", "B", "tie")
    assert ab.p_a == pytest.approx(1 / (1 + math.exp(-3)))
    assert not bad.valid and bad.invalid_reason.startswith("response A:")
    with pytest.raises(TypeError, match="pointwise"):
        ScoreComparisonJudge(LogprobPairwiseJudge(gen))

    pairs = [PreferencePair(id=f"p{i}", prompt="q", chosen="good", rejected="bad", subset="s") for i in range(6)]
    gen.calls.clear()
    report = evaluate(judge, pairs)
    assert report.accuracy == 1.0 and report.orders == "single"
    assert len(gen.calls) == 1  # one batch, no swapped re-run: the scores cannot depend on the order


def test_prefill_is_continued_by_the_chat_template(tiny_model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    gen = TransformersGenerator(tiny_model_dir)
    user = [{"role": "user", "content": "Which is better?"}]
    assert gen.render([*user, {"role": "assistant", "content": "[["}]) == gen.render(user) + "[["


def test_next_token_judges_on_a_real_engine(tiny_model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    gen = TransformersGenerator(tiny_model_dir)
    pw = LogprobPairwiseJudge(gen, truncate_prompt=True).compare(["2+2?", "Name a colour."], ["4", "red"], ["5", "table"])
    for v in pw:
        assert v.usage.completion_tokens == 2
        if v.valid:
            assert 0.0 < v.p_a < 1.0 and len(v.samples) >= 1
        else:
            assert "neither A nor B" in v.invalid_reason
    sc = ExpectedScoreJudge(gen, truncate_prompt=True).score(["2+2?"], ["4"])[0]
    assert (sc.valid and 0 <= sc.score <= 5) or "no score" in sc.invalid_reason


def test_openai_api_without_vllm_extensions_refuses_a_prefill():
    from loopwright.sdk.generators.openai import OpenAIGenerator

    gen = OpenAIGenerator("http://127.0.0.1:9/v1", "m", vllm_extensions=False)
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "[["}]
    with pytest.raises(ConfigError, match="continue_final_message"):
        gen.generate([prompt], SamplingParams(max_tokens=1))


def test_next_token_judges_need_logprobs():
    class NoLogprobs(TopGenerator):
        supports_logprobs = False

    with pytest.raises(ValueError, match="logprobs"):
        LogprobPairwiseJudge(NoLogprobs([]))
    assert isinstance(PointwiseJudge(NoLogprobs([])), PointwiseJudge)  # the generative judge does not
