"""ScriptedGenerator: the conformance suite plus the double's own behaviours (scripts, seeds, call records)."""

from __future__ import annotations

import random

import pytest
from conformance import CONFORMANCE_CHECKS

from loopwright.sdk.generators.scripted import ScriptedGenerator, render_chat, whitespace_tokens
from loopwright.sdk.types import SamplingParams, total_usage

RESPONSES = [
    "Tom had 12 pens and bought 7 more, so he has 12 + 7 = 19 pens in total. #### 19",
    "The farmer sold 18 of 45 sheep, which leaves 45 - 18 = 27 sheep on the farm. #### 27",
    "Nine boxes of six apples hold 9 * 6 = 54 apples altogether, counted twice. #### 54",
]


def _respond(prompt_text: str, sample_index: int, rng: random.Random) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return f"answer {sample_index}: " + " ".join(rng.choice(words) for _ in range(20))


@pytest.fixture(params=["list", "function"])
def gen(request) -> ScriptedGenerator:
    return ScriptedGenerator(RESPONSES if request.param == "list" else _respond)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(gen, check):
    check(gen)


def test_list_responses_cycle_per_call():
    gen = ScriptedGenerator(["a b c", "d e f"])
    out = gen.generate(["p1", "p2", "p3"], SamplingParams(max_tokens=8))
    assert [r[0].text for r in out] == ["a b c", "d e f", "a b c"]
    again = gen.generate(["p1"], SamplingParams(max_tokens=8))
    assert again[0][0].text == "a b c", "per_call cycling restarts every call"


def test_global_cycle_is_a_script_across_calls():
    gen = ScriptedGenerator(["first", "second", "third"], cycle="global")
    p = SamplingParams(max_tokens=8)
    assert [gen.generate(["x"], p)[0][0].text for _ in range(4)] == ["first", "second", "third", "first"]
    gen.reset()
    assert gen.generate(["x"], p)[0][0].text == "first" and len(gen.calls) == 1


def test_sampling_gives_distinct_list_samples_and_greedy_copies():
    gen = ScriptedGenerator(["a", "b", "c", "d"])
    sampled = gen.generate(["p", "q"], SamplingParams(n=2, temperature=0.7))
    assert [[c.text for c in row] for row in sampled] == [["a", "b"], ["c", "d"]]
    greedy = gen.generate(["p", "q"], SamplingParams(n=2))
    assert [[c.text for c in row] for row in greedy] == [["a", "a"], ["c", "c"]]


def test_function_rng_seeded_from_seed_prompt_and_sample():
    seen: list[tuple[str, int]] = []

    def respond(text: str, k: int, rng: random.Random) -> str:
        seen.append((text, k))
        return str(rng.random())

    gen = ScriptedGenerator(respond)
    p = SamplingParams(n=3, temperature=1.0, seed=5)
    a = gen.generate(["q1", "q2"], p)
    b = gen.generate(["q2", "q1"], p)
    # same seed: same samples per prompt, independent of order in the batch
    assert [c.text for c in a[0]] == [c.text for c in b[1]]
    assert len({c.text for c in a[0]}) == 3, "samples of one prompt use different rng streams"
    assert a[0][0].text != a[1][0].text, "different prompts use different rng streams"
    other = gen.generate(["q1"], SamplingParams(n=3, temperature=1.0, seed=6))
    assert [c.text for c in other[0]] != [c.text for c in a[0]]
    assert seen[:3] == [("q1", 0), ("q1", 1), ("q1", 2)]
    # unseeded sampling varies from call to call but is reproducible for a fresh instance
    u1 = ScriptedGenerator(respond).generate(["q1"], SamplingParams(temperature=1.0))
    u2_gen = ScriptedGenerator(respond)
    u2 = u2_gen.generate(["q1"], SamplingParams(temperature=1.0))
    u3 = u2_gen.generate(["q1"], SamplingParams(temperature=1.0))
    assert u1[0][0].text == u2[0][0].text != u3[0][0].text


def test_max_tokens_truncates_whitespace_tokens():
    gen = ScriptedGenerator(["one two  three four five"])
    c = gen.generate(["p"], SamplingParams(max_tokens=3))[0][0]
    assert c.finish_reason == "length"
    assert c.text == "one two  three "
    assert len(c.token_ids) == c.usage.completion_tokens == 3
    full = gen.generate(["p"], SamplingParams(max_tokens=5))[0][0]
    assert full.finish_reason == "stop" and full.text == "one two  three four five"


def test_stop_strings_cut_and_only_count_within_max_tokens():
    gen = ScriptedGenerator(["Step 1: add. Step 2: done. #### 19"])
    c = gen.generate(["p"], SamplingParams(stop=["####", "Step 2"], max_tokens=32))[0][0]
    assert c.text == "Step 1: add. " and c.finish_reason == "stop" and c.stop_reason == "Step 2"
    assert c.token_ids == gen.generate(["p"], SamplingParams(max_tokens=3))[0][0].token_ids
    # the stop string lies beyond max_tokens: the length limit wins
    late = gen.generate(["p"], SamplingParams(stop=["####"], max_tokens=4))[0][0]
    assert late.finish_reason == "length" and late.stop_reason is None


def test_token_ids_are_stable_word_hashes():
    gen = ScriptedGenerator(["cat dog cat"])
    ids = gen.generate(["p"], SamplingParams())[0][0].token_ids
    assert ids[0] == ids[2] != ids[1]
    assert ScriptedGenerator(["cat"]).generate(["q"], SamplingParams())[0][0].token_ids == [ids[0]]


def test_logprobs_are_deterministic_and_top_k_consistent():
    gen = ScriptedGenerator(RESPONSES)
    p = SamplingParams(logprobs=3, max_tokens=10)
    a, b = gen.generate(["x"], p)[0][0], gen.generate(["x"], p)[0][0]
    assert a.logprobs == b.logprobs and len(a.logprobs) == 10
    assert all(-0.5 <= lp < 0 for lp in a.logprobs)
    for lp, top in zip(a.logprobs, a.top_logprobs, strict=True):
        assert len(top) == 3 and max(top.values()) == lp
        assert sum(pow(2.718281828459045, v) for v in top.values()) <= 1.0 + 1e-9


def test_usage_and_chat_rendering():
    gen = ScriptedGenerator(["a b c d"])
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two plus two"}]
    out = gen.generate([chat, "one two three"], SamplingParams(n=2, temperature=1.0, seed=0))
    assert render_chat(chat) == "system: be brief\nuser: two plus two\nassistant:"
    assert out[0][0].usage.prompt_tokens == len(whitespace_tokens(render_chat(chat))) == 8
    assert out[1][0].usage.prompt_tokens == 3 and out[1][1].usage.prompt_tokens == 0
    total = total_usage(out)
    assert total.prompt_tokens == 11 and total.completion_tokens == 16


def test_calls_are_recorded():
    gen = ScriptedGenerator(["ok"])
    params = SamplingParams(n=2, temperature=0.5, max_tokens=7, stop=["."])
    gen.generate(["hello", [{"role": "user", "content": "hi"}]], params)
    gen.score("q", "a b")
    assert len(gen.calls) == 1
    call = gen.calls[0]
    assert call.params == params
    assert call.prompts == ["hello", [{"role": "user", "content": "hi"}]]
    assert gen.score_calls == [("q", "a b")]


def test_score_pseudo_logprob_and_custom_scorer():
    gen = ScriptedGenerator(["x"])
    s1 = gen.score("q", "one two three")
    assert s1 == gen.score("q", "one two three") and -1.5 <= s1 < 0
    assert gen.score("q", "one two three four five six") < s1
    assert gen.score("q", "") == 0.0
    assert gen.score_many(["q", "q"], ["one two three", ""]) == [s1, 0.0]
    custom = ScriptedGenerator(["x"], scorer=lambda prompt, cont: -0.1 * len(cont.split()) + ("19" in cont))
    assert custom.score("q", "so 19") == pytest.approx(0.8)


def test_misuse_raises_with_fix():
    with pytest.raises(TypeError, match="wrap it"):
        ScriptedGenerator("just one string")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one response"):
        ScriptedGenerator([])
    with pytest.raises(ValueError, match="cycle"):
        ScriptedGenerator(["a"], cycle="forever")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must return a str"):
        ScriptedGenerator(lambda t, k, r: 3).generate(["p"])  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="continuations"):
        ScriptedGenerator(["a"]).score_many(["p"], [])
