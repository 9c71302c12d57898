"""The SQLite generation cache in front of the real TransformersGenerator on the tiny model."""

from __future__ import annotations

import asyncio
import json
import pickle
import sqlite3
import threading
from collections.abc import Sequence

import pytest

from loopwright.sdk.cache import CachedGenerator, GenerationCache, cache_key
from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Prompt, SamplingParams, Usage

PROMPTS = [
    "Tom has 12 pens.",
    [{"role": "user", "content": "How many sheep are left?"}],
    "Each box holds 6 apples.",
    "Hello world",
]


class Counting(Generator):
    """Pass-through proxy around a real generator that records the prompts each call sends to it."""

    def __init__(self, inner: Generator):
        self.inner = inner
        self.model_id = inner.model_id
        self.revision = inner.revision
        self.calls: list[list[Prompt]] = []

    def cache_identity(self):
        return self.inner.cache_identity()

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        self.calls.append(list(prompts))
        return self.inner.generate(prompts, params)


@pytest.fixture(scope="module")
def tgen(tiny_model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    gen = TransformersGenerator(tiny_model_dir)
    yield gen
    gen.close()


def _content(rows: list[list[Completion]]):
    """Everything but the ``usage.cached`` flag."""
    return [[c.model_dump(exclude={"usage": {"cached"}}) for c in row] for row in rows]


@pytest.mark.parametrize(
    "params",
    [SamplingParams(max_tokens=6), SamplingParams(n=2, temperature=1.0, seed=7, max_tokens=6, logprobs=0)],
    ids=["greedy", "seeded"],
)
def test_second_run_served_from_cache(tmp_path, tgen, params):
    counting = Counting(tgen)
    cache = GenerationCache(tmp_path / "cache.sqlite")
    gen = CachedGenerator(counting, cache)

    first = gen.generate(PROMPTS, params)
    assert len(counting.calls) == 1 and len(counting.calls[0]) == len(PROMPTS)
    assert cache.stats() == {"hits": 0, "misses": 4, "uncacheable": 0, "entries": 4}
    assert all(len(row) == params.n for row in first)
    assert not any(c.usage.cached for row in first for c in row)

    second = gen.generate(PROMPTS, params)
    assert len(counting.calls) == 1, "the inner generator must not be called for hits"
    assert cache.hits == 4 and cache.misses == 4
    assert _content(second) == _content(first)
    assert all(c.usage.cached for row in second for c in row)

    # a reopened cache (a resumed run) serves the same rows; async path too
    cache.close()
    cache2 = GenerationCache(tmp_path / "cache.sqlite")
    third = asyncio.run(CachedGenerator(counting, cache2).agenerate(PROMPTS, params))
    assert len(counting.calls) == 1 and cache2.hits == 4 and cache2.misses == 0
    assert _content(third) == _content(first)


def test_only_misses_go_to_the_inner_generator_in_order(tmp_path, tgen):
    counting = Counting(tgen)
    cache = GenerationCache(tmp_path / "c.sqlite")
    gen = CachedGenerator(counting, cache)
    params = SamplingParams(max_tokens=5)
    first = gen.generate(PROMPTS[:2], params)
    mixed = ["new prompt one", PROMPTS[1], "new prompt two", PROMPTS[0], "new prompt one"]
    out = gen.generate(mixed, params)
    assert counting.calls[-1] == ["new prompt one", "new prompt two"]  # one batch, misses only, no duplicates
    assert _content([out[1], out[3]]) == _content([first[1], first[0]])
    assert _content([out[4]]) == _content([out[0]])
    assert [out[i][0].usage.cached for i in range(5)] == [False, True, False, True, True]
    assert cache.misses == 2 + 3 and cache.hits == 2


def test_unseeded_sampling_bypasses_the_cache(tmp_path, tgen):
    counting = Counting(tgen)
    cache = GenerationCache(tmp_path / "c.sqlite")
    gen = CachedGenerator(counting, cache)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=5)
    for _ in range(2):
        rows = gen.generate(PROMPTS, params)
        assert not any(c.usage.cached for row in rows for c in row)
    assert len(counting.calls) == 2
    assert cache.stats() == {"hits": 0, "misses": 0, "uncacheable": 8, "entries": 0}


def test_payload_is_json_not_pickle(tmp_path, tgen):
    path = tmp_path / "c.sqlite"
    cache = GenerationCache(path)
    CachedGenerator(tgen, cache).generate(PROMPTS[:1], SamplingParams(max_tokens=4))
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    (key, value, created_at), = con.execute("SELECT key, value, created_at FROM generations").fetchall()
    assert len(key) == 64 and created_at > 0
    payload = json.loads(value)
    assert isinstance(payload, list) and len(payload) == 1
    assert Completion.model_validate(payload[0]).token_ids == payload[0]["token_ids"]
    assert payload[0]["usage"]["completion_tokens"] == len(payload[0]["token_ids"])
    con.close()


def test_keys_differ_across_model_params_seed_prompt_namespace(tgen):
    ident = tgen.cache_identity()
    base = SamplingParams(temperature=0.7, seed=1, max_tokens=8)
    k = cache_key(ident, "p", base)
    assert k == cache_key(dict(ident), "p", SamplingParams(temperature=0.7, seed=1, max_tokens=8))
    variants = {
        "seed": cache_key(ident, "p", base.model_copy(update={"seed": 2})),
        "n": cache_key(ident, "p", base.model_copy(update={"n": 2})),
        "temperature": cache_key(ident, "p", base.model_copy(update={"temperature": 0.8})),
        "max_tokens": cache_key(ident, "p", base.model_copy(update={"max_tokens": 9})),
        "stop": cache_key(ident, "p", SamplingParams(temperature=0.7, seed=1, max_tokens=8, stop=["\n"])),
        "model": cache_key({**ident, "model_id": "other"}, "p", base),
        "revision": cache_key({**ident, "revision": "abc"}, "p", base),
        "template": cache_key({**ident, "template_hash": "0" * 16}, "p", base),
        "prompt": cache_key(ident, "q", base),
        "chat": cache_key(ident, [{"role": "user", "content": "p"}], base),
        "namespace": cache_key(ident, "p", base, namespace="parser-v2"),
    }
    assert len(set(variants.values()) | {k}) == len(variants) + 1


def test_cached_generator_reports_inner_identity(tgen):
    gen = CachedGenerator(tgen, GenerationCache(":memory:"))
    assert gen.cache_identity() == tgen.cache_identity()
    assert gen.model_id == tgen.model_id and gen.backend == tgen.backend
    assert gen.supports_score == tgen.supports_score
    if tgen.supports_score:
        assert gen.score("Tom has", " 12 pens") == pytest.approx(tgen.score("Tom has", " 12 pens"))
    with pytest.raises(TypeError, match="GenerationCache"):
        CachedGenerator(tgen, "cache.sqlite")  # type: ignore[arg-type]


def test_cache_is_thread_safe(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                key = f"{t}-{i}"
                cache.put(key, [Completion(text=key, usage=Usage(completion_tokens=i))])
                got = cache.get(key)
                assert got is not None and got[0].text == key
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(cache) == 200 and cache.hits == 200 and cache.misses == 0


def test_cache_travels_to_other_processes_by_path(tmp_path):
    """A cache inside a Ray generator factory is re-opened by path in the actor (WAL allows several processes)."""
    cache = GenerationCache(tmp_path / "c.sqlite")
    cache.put("k", [Completion(text="hi")])
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.path == cache.path and clone.get("k")[0].text == "hi" and clone.hits == 1
    with pytest.raises(TypeError, match="in-memory"):
        pickle.dumps(GenerationCache(":memory:"))


class FailsSome(Counting):
    """A real generator that fails the prompts containing "Hello" the way OpenAIGenerator's collect policy does:
    the others finish, then one BatchError carries them."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        from loopwright.sdk.errors import BatchError

        self.calls.append(list(prompts))
        ok = [i for i, p in enumerate(prompts) if "Hello" not in str(p)]
        got = dict(zip(ok, self.inner.generate([prompts[i] for i in ok], params), strict=True))
        if len(got) == len(prompts):
            return [got[i] for i in range(len(prompts))]
        partial = [got.get(i) for i in range(len(prompts))]
        raise BatchError("HTTP 400 for Hello", partial=partial,
                         failures={i: "HTTP 400" for i, r in enumerate(partial) if r is None})


def test_a_failed_batch_keeps_its_finished_prompts_in_the_cache(tmp_path, tgen):
    """Issue 17 item 12: the work of the prompts that finished is not lost with the batch's failure; a rerun sends
    only the failed prompt again."""
    from loopwright.sdk.errors import BatchError

    params = SamplingParams(max_tokens=4)
    inner = FailsSome(tgen)
    gen = CachedGenerator(inner, GenerationCache(tmp_path / "c.sqlite"))
    gen.generate(PROMPTS[:1], params)  # one hit before the failing call
    with pytest.raises(BatchError) as err:
        gen.generate(PROMPTS, params)
    assert [r is not None for r in err.value.partial] == [True, True, True, False]
    assert err.value.failures == {3: "HTTP 400"} and "(2 finished prompts cached)" in str(err.value)
    assert inner.calls[-1] == PROMPTS[1:]  # the hit was not sent again
    inner.calls.clear()
    with pytest.raises(BatchError):
        gen.generate(PROMPTS, params)
    assert inner.calls == [[PROMPTS[3]]]  # only the failed prompt goes out again
