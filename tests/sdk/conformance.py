"""Backend-agnostic conformance checks that every ``Generator`` must pass (DESIGN.md "Tests").

Each check is a plain function ``check_xxx(gen) -> None`` that asserts; a backend's test file in tests/sdk/
runs them all (pytest's default "prepend" import mode puts tests/sdk on ``sys.path``, tests/ has no
``__init__.py``)::

    from conformance import CONFORMANCE_CHECKS

    @pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
    def test_conformance(gen, check):
        check(gen)

The checks keep ``max_tokens`` small (<= 16) so they are fast on every backend, and are written for
random-weight models: they test shapes, counts and invariants, never the text itself, and they try another
prompt when a greedy output is too short to pick a stop string from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Message, SamplingParams

PROMPTS: list[str] = [
    "Tom has 12 pens. He buys 7 more. How many pens does he have now?",
    "The quick brown fox",
    "A farmer had 45 sheep and sold 18 of them. How many sheep are left?",
]
CHAT = [{"role": "user", "content": "Each box holds 6 apples. How many apples are in 9 boxes?"}]
MAX_TOKENS = 12
GREEDY = SamplingParams(max_tokens=MAX_TOKENS)


def _assert_completion(c: Completion, max_tokens: int) -> None:
    assert isinstance(c, Completion), f"expected a Completion, got {type(c).__name__}"
    assert isinstance(c.text, str)
    assert c.finish_reason in ("stop", "length")
    assert c.usage.completion_tokens == len(c.token_ids), (
        f"usage.completion_tokens={c.usage.completion_tokens} != len(token_ids)={len(c.token_ids)}"
    )
    assert c.usage.completion_tokens <= max_tokens, f"{c.usage.completion_tokens} tokens > max_tokens={max_tokens}"
    assert all(isinstance(t, int) for t in c.token_ids)


def _assert_shape(out: list[list[Completion]], n_prompts: int, n: int, max_tokens: int) -> None:
    assert isinstance(out, list) and len(out) == n_prompts, f"expected {n_prompts} rows, got {len(out)}"
    for row in out:
        assert isinstance(row, list) and len(row) == n, f"expected {n} samples per prompt, got {len(row)}"
        for c in row:
            _assert_completion(c, max_tokens)


# ------------------------------------------------------------------------------------------------ checks


def check_output_shapes(gen: Generator) -> None:
    out = gen.generate(PROMPTS, GREEDY)
    _assert_shape(out, len(PROMPTS), 1, MAX_TOKENS)


def check_empty_prompt_list(gen: Generator) -> None:
    assert gen.generate([], GREEDY) == []


def check_string_and_chat_prompts(gen: Generator) -> None:
    chat_objects = [Message(role="user", content=CHAT[0]["content"])]
    out = gen.generate([PROMPTS[0], CHAT], GREEDY)
    _assert_shape(out, 2, 1, MAX_TOKENS)
    assert out[1][0].usage.prompt_tokens > 0
    # dict messages and Message objects are the same prompt
    again = gen.generate([PROMPTS[0], chat_objects], GREEDY)
    assert again[1][0].token_ids == out[1][0].token_ids
    assert again[1][0].text == out[1][0].text


def check_n_samples(gen: Generator) -> None:
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8)
    out = gen.generate(PROMPTS[:2], params)
    _assert_shape(out, 2, 3, 8)
    greedy = gen.generate(PROMPTS[:2], SamplingParams(n=2, max_tokens=8))
    _assert_shape(greedy, 2, 2, 8)


def check_usage_counted(gen: Generator) -> None:
    out = gen.generate(PROMPTS[:2], SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=8))
    for row in out:
        assert row[0].usage.prompt_tokens > 0, "prompt tokens are counted on the first sample"
        for c in row[1:]:
            assert c.usage.prompt_tokens == 0, "prompt tokens are counted once per prompt, not per sample"
        for c in row:
            assert c.usage.completion_tokens == len(c.token_ids)
    # a longer prompt has more prompt tokens
    short, long = gen.generate(["Hello", PROMPTS[2] + " " + PROMPTS[0]], SamplingParams(max_tokens=4))
    assert long[0].usage.prompt_tokens > short[0].usage.prompt_tokens


def check_max_tokens_respected(gen: Generator) -> None:
    for max_tokens in (1, 5):
        out = gen.generate(PROMPTS, SamplingParams(max_tokens=max_tokens))
        _assert_shape(out, len(PROMPTS), 1, max_tokens)
        for row in out:
            c = row[0]
            if c.finish_reason == "length":
                assert len(c.token_ids) == max_tokens, "finish_reason 'length' only when max_tokens was reached"
            if len(c.token_ids) < max_tokens:
                assert c.finish_reason == "stop"
        if max_tokens == 5:
            assert any(r[0].finish_reason == "length" for r in out), "no completion hit max_tokens=5"


def check_greedy_deterministic(gen: Generator) -> None:
    a = gen.generate(PROMPTS, GREEDY)
    b = gen.generate(PROMPTS, GREEDY)
    assert [c[0].text for c in a] == [c[0].text for c in b]
    assert [c[0].token_ids for c in a] == [c[0].token_ids for c in b]
    # greedy n>1: every sample is the greedy completion
    many = gen.generate(PROMPTS[:1], SamplingParams(n=2, max_tokens=MAX_TOKENS))
    assert many[0][0].token_ids == many[0][1].token_ids == a[0][0].token_ids


def check_seeded_sampling_reproducible(gen: Generator) -> None:
    params = SamplingParams(n=2, temperature=1.0, top_p=0.95, seed=1234, max_tokens=MAX_TOKENS)
    a = gen.generate(PROMPTS, params)
    b = gen.generate(PROMPTS, params)
    assert [[c.text for c in row] for row in a] == [[c.text for c in row] for row in b]
    assert [[c.token_ids for c in row] for row in a] == [[c.token_ids for c in row] for row in b]


def _stop_candidate(text: str) -> tuple[int, str] | None:
    """A short substring from the middle of ``text`` made of ordinary characters, with its start index."""
    ok = [ch.isprintable() and ch != "\ufffd" for ch in text]
    mid = len(text) // 2
    for start in sorted(range(1, len(text) - 1), key=lambda i: abs(i - mid)):
        for width in (3, 2):
            piece = text[start:start + width]
            if len(piece) == width and all(ok[start:start + width]) and piece.strip():
                return start, piece
    return None


def check_stop_strings(gen: Generator) -> None:
    candidates = [*PROMPTS, "Hello world, this is", "12+7=", "How many apples"]
    base = gen.generate(candidates, SamplingParams(max_tokens=16))
    for prompt, row in zip(candidates, base, strict=True):
        text = row[0].text
        pick = _stop_candidate(text) if len(text) >= 4 else None
        if pick is None:
            continue
        _, stop = pick
        first = text.find(stop)
        out = gen.generate([prompt], SamplingParams(max_tokens=16, stop=[stop, "\x00never-matches\x00"]))
        c = out[0][0]
        _assert_completion(c, 16)
        assert stop not in c.text, f"stop string {stop!r} left in {c.text!r}"
        assert c.finish_reason == "stop", f"finish_reason {c.finish_reason!r} after stop string {stop!r}"
        assert c.stop_reason in (None, stop)
        assert c.text == text[:first], f"expected the text cut before {stop!r}: {text[:first]!r}, got {c.text!r}"
        assert len(c.token_ids) <= len(row[0].token_ids)
        return
    raise AssertionError(f"no greedy output long enough to pick a stop string from: {[r[0].text for r in base]}")


def check_logprobs(gen: Generator) -> None:
    if not getattr(gen, "supports_logprobs", True):
        return
    plain = gen.generate(PROMPTS[:2], SamplingParams(max_tokens=8))
    for row in plain:
        assert row[0].logprobs is None, "logprobs returned without being asked"
    out = gen.generate(PROMPTS[:2], SamplingParams(max_tokens=8, logprobs=0))
    for row in out:
        c = row[0]
        assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
        assert all(lp <= 1e-6 for lp in c.logprobs), c.logprobs
    out = gen.generate(PROMPTS[:2], SamplingParams(max_tokens=8, logprobs=2))
    for row in out:
        c = row[0]
        assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
        assert c.top_logprobs is not None and len(c.top_logprobs) == len(c.token_ids)
        for lp, top in zip(c.logprobs, c.top_logprobs, strict=True):
            assert 1 <= len(top) <= 3 and all(v <= 1e-6 for v in top.values())
            # greedy: the chosen token is the most likely one
            assert abs(max(top.values()) - lp) < 1e-2, (lp, top)


def check_agenerate_matches_generate(gen: Generator) -> None:
    sync = gen.generate(PROMPTS[:2], GREEDY)
    async_ = asyncio.run(gen.agenerate(PROMPTS[:2], GREEDY))
    assert [r[0].token_ids for r in sync] == [r[0].token_ids for r in async_]


def check_identity(gen: Generator) -> None:
    ident = gen.cache_identity()
    assert ident["backend"] == gen.backend and gen.backend != "abstract"
    assert isinstance(gen.fingerprint(), str) and gen.fingerprint() == gen.fingerprint()


def check_score_when_supported(gen: Generator) -> None:
    if not getattr(gen, "supports_score", False):
        return
    a = gen.score(PROMPTS[0], " 19 pens")
    b = gen.score(PROMPTS[0], " 19 pens")
    # approx: an engine may take a prefix-cached path the second time
    assert isinstance(a, float) and abs(a - b) < 1e-3 and a <= 0.0
    longer = gen.score(PROMPTS[0], " 19 pens and 7 more pens and 12 pens")
    assert longer < 0.0


CONFORMANCE_CHECKS: list[Callable[[Generator], None]] = [
    check_output_shapes,
    check_empty_prompt_list,
    check_string_and_chat_prompts,
    check_n_samples,
    check_usage_counted,
    check_max_tokens_respected,
    check_greedy_deterministic,
    check_seeded_sampling_reproducible,
    check_stop_strings,
    check_logprobs,
    check_agenerate_matches_generate,
    check_identity,
    check_score_when_supported,
]
