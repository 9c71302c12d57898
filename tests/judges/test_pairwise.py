"""PairwiseJudge on the scripted generator: the both-orders protocol, consistency detection on a
position-biased judge, the disagreement / one-invalid policies, batching order and the logprob soft preference."""

from __future__ import annotations

import json

import pytest
from judge_conformance import GOOD, JUDGE_CONFORMANCE_CHECKS

from loopwright.judges import PAIRWISE_VERDICT, PairwiseJudge, make_pairwise_judge, soft_preference
from loopwright.judges.parsers import PAIRWISE_PARSER_VERSION, parse_pairwise
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.types import Completion


def _shown(text: str) -> tuple[str, str]:
    """The (A, B) answers shown in a rendered default pairwise prompt."""
    a = text.split("[The Start of Assistant A's Answer]\n", 1)[1].split("\n[The End", 1)[0]
    b = text.split("[The Start of Assistant B's Answer]\n", 1)[1].split("\n[The End", 1)[0]
    return a, b


def fair(text: str, k: int, rng) -> str:
    """Prefers the answer in GOOD, wherever it is shown."""
    a, b = _shown(text)
    if a in GOOD and b not in GOOD:
        return "A gets the arithmetic right. [[A]]"
    if b in GOOD and a not in GOOD:
        return "B gets the arithmetic right. [[B]]"
    return "Same quality. [[C]]"


def first_slot(text: str, k: int, rng) -> str:
    """Maximally position-biased: always picks the answer shown first."""
    return "The first one. [[A]]"


def garbage(text: str, k: int, rng) -> str:
    return "I like both [[A]] and [[B]]" if k % 2 else "no idea"


@pytest.fixture(params=["fair", "first_slot", "garbage", "one_order"])
def judge(request):
    respond = {"fair": fair, "first_slot": first_slot, "garbage": garbage, "one_order": fair}[request.param]
    return PairwiseJudge(ScriptedGenerator(respond), both_orders=request.param != "one_order")


@pytest.mark.parametrize("check", JUDGE_CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(judge, check):
    check(judge)


def test_fair_judge_is_consistent():
    judge = PairwiseJudge(ScriptedGenerator(fair))
    out = judge.compare(["q1", "q2"], [GOOD[0], "wrong"], ["wrong", GOOD[1]])
    assert [v.preference for v in out] == ["A", "B"]
    for v in out:
        assert v.valid and v.swap.consistent is True
        assert v.judge.parser_version == PAIRWISE_PARSER_VERSION
        assert v.judge.template_hash == PAIRWISE_VERDICT.template_hash
    assert out[0].samples == [1.0, 1.0] and out[1].samples == [0.0, 0.0]
    raw = json.loads(out[0].raw)
    assert raw["forward"] == ["A gets the arithmetic right. [[A]]"]
    assert raw["reverse"] == ["B gets the arithmetic right. [[B]]"]  # as generated, before mapping back


def test_both_orders_in_one_call_adjacent():
    gen = ScriptedGenerator(fair)
    PairwiseJudge(gen).compare(["q1", "q2"], ["a1", "a2"], ["b1", "b2"])
    assert len(gen.calls) == 1
    shown = [_shown(p[-1]["content"]) for p in gen.calls[0].prompts]
    assert shown == [("a1", "b1"), ("b1", "a1"), ("a2", "b2"), ("b2", "a2")]
    # the two prompts of a pair share the system message and question: a long common prefix
    f, r = gen.calls[0].prompts[0], gen.calls[0].prompts[1]
    assert f[0] == r[0] and f[1]["content"].split("[The Start")[0] == r[1]["content"].split("[The Start")[0]


@pytest.mark.parametrize(("policy", "valid", "preference"),
                         [("tie", True, "tie"), ("invalid", False, None), ("forward", True, "A")])
def test_position_bias_detected_and_policy_applied(policy, valid, preference):
    judge = PairwiseJudge(ScriptedGenerator(first_slot), disagreement=policy)
    [v] = judge.compare(["q"], ["x"], ["y"])
    assert v.swap.forward == "A" and v.swap.reverse == "B" and v.swap.consistent is False
    assert v.valid is valid and v.preference == preference
    if not valid:
        assert "inconsistent" in v.invalid_reason


def test_one_order_invalid_policy():
    def half(text, k, rng):  # parses when the first answer is "x" only
        return "[[A]]" if _shown(text)[0] == "x" else "hmm"

    [v] = PairwiseJudge(ScriptedGenerator(half)).compare(["q"], ["x"], ["y"])
    assert not v.valid and v.invalid_reason.startswith("reverse order (A and B swapped) unparseable")
    assert v.swap.forward == "A" and v.swap.reverse is None and v.swap.consistent is None
    [v] = PairwiseJudge(ScriptedGenerator(half), one_invalid="use_valid").compare(["q"], ["x"], ["y"])
    assert v.valid and v.preference == "A" and v.swap.consistent is None


def test_garbage_is_invalid_never_a_default():
    out = PairwiseJudge(ScriptedGenerator(["no idea", "[[A]] or [[B]]"])).compare(["q"] * 3, ["a"] * 3, ["b"] * 3)
    for v in out:
        assert not v.valid and v.preference is None and v.p_a is None
        assert "both orders unparseable" in v.invalid_reason


def test_majority_vote_over_samples():
    votes = {0: "[[A]]", 1: "[[A]]", 2: "[[B]]"}

    def respond(text, k, rng):
        label = votes[k]
        if _shown(text)[0] == "y":  # reverse order: same opinion of the answers, swapped label
            label = {"[[A]]": "[[B]]", "[[B]]": "[[A]]"}[label]
        return label

    [v] = PairwiseJudge(ScriptedGenerator(respond), samples=3,
                        sampling=None).compare(["q"], ["x"], ["y"])
    assert v.valid and v.preference == "A" and v.swap.consistent
    assert v.samples == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_soft_preference_from_logprobs():
    gen = ScriptedGenerator(fair)
    [v] = PairwiseJudge(gen).compare(["q"], [GOOD[0]], ["wrong"])
    assert gen.calls[0].params.logprobs == 5
    assert v.p_a is not None and v.p_a > 0.5
    [v] = PairwiseJudge(gen, use_logprobs=False).compare(["q"], [GOOD[0]], ["wrong"])
    assert v.p_a is None
    # a position-biased judge: the two orders' soft preferences cancel out
    [v] = PairwiseJudge(ScriptedGenerator(first_slot)).compare(["q"], ["x"], ["y"])
    assert v.p_a is not None and abs(v.p_a - 0.5) < 0.25


def test_soft_preference_reads_the_verdict_token():
    # tokens: "Better:" " [[" "B" "]]"; at the letter, B has logprob -0.2 and A -1.8
    text = "Better: [[B]]"
    c = Completion(text=text, token_ids=[1, 2, 3, 4], logprobs=[-0.1, -0.05, -0.2, -0.01],
                   top_logprobs=[{"Better:": -0.1}, {" [[": -0.05}, {"B": -0.2, "A": -1.8, "C": -3.0}, {"]]": -0.01}])
    p = soft_preference(c, parse_pairwise(text).span)
    assert p == pytest.approx(1 / (1 + 2.718281828 ** (1.6)), rel=1e-6)
    # the letter fused with the brackets ("[[B" / "[[A") is found as well
    c2 = Completion(text=text, token_ids=[1, 2, 3], logprobs=[-0.1, -0.2, -0.01],
                    top_logprobs=[{"Better:": -0.1}, {" [[B": -0.2, " [[A": -1.8}, {"]]": -0.01}])
    assert soft_preference(c2, parse_pairwise(text).span) == pytest.approx(p)
    # an EOS token after the verdict (in token_ids/logprobs, not in the text) does not break the alignment
    c_eos = c.model_copy(update={"token_ids": [1, 2, 3, 4, 5], "logprobs": [*c.logprobs, -0.001],
                                 "top_logprobs": [*c.top_logprobs, {"</s>": -0.001}]})
    assert soft_preference(c_eos, parse_pairwise(text).span) == pytest.approx(p)
    # no logprobs, or a misaligned token stream -> None, never a guess
    assert soft_preference(Completion(text=text), parse_pairwise(text).span) is None
    c3 = c.model_copy(update={"top_logprobs": [{"X": -0.1}, {" [[": -0.05}, {"B": -0.2}, {"]]": -0.01}]})
    assert soft_preference(c3, parse_pairwise(text).span) is None


def test_invalid_arguments():
    gen = ScriptedGenerator(["[[A]]"])
    with pytest.raises(ValueError, match="disagreement"):
        PairwiseJudge(gen, disagreement="majority")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one_invalid"):
        PairwiseJudge(gen, one_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never uses"):
        PairwiseJudge(gen, "{{ question }} {{ response_a }}")
    with pytest.raises(ValueError, match="same length"):
        PairwiseJudge(gen).compare(["q"], ["a", "b"], ["c"])


def test_factory_and_call():
    judge = make_pairwise_judge(ScriptedGenerator(fair), swap=False)
    assert judge.both_orders is False
    v = judge("q", GOOD[0], "wrong")
    assert v.valid and v.preference == "A" and v.swap.reverse is None


def test_as_reward_func_defaults_to_pairwise_with_a_short_name(tmp_path):
    """Issue 17 item 1: the README's ``judge.as_reward_func()`` works for a PairwiseJudge (it compares each
    completion with the dataset's ``reference`` column) and TRL's reward name carries no model path."""
    gen = ScriptedGenerator(fair, model_id=str(tmp_path / "models" / "seed"))
    fn = PairwiseJudge(gen).as_reward_func()
    assert fn.mode == "pairwise" and fn.__name__ == "pairwise_judge"
    assert PairwiseJudge(gen, name="arith judge").as_reward_func().__name__ == "arith_judge"
    assert PairwiseJudge(gen).as_pairwise_reward_func().__name__ == "pairwise_judge_pairwise"
    rewards = fn(["q", "q"], [GOOD[0], "wrong"], reference=["wrong", GOOD[0]])
    assert rewards[0] > 0.5 > rewards[1]  # p_a from the verdict token (scripted logprobs), A = the completion
    with pytest.raises(ValueError, match="reference"):
        fn(["q"], [GOOD[0]])
