"""Async judges: ``ascore`` / ``acompare`` on every Judge, with ``score`` / ``compare`` derived either way.

- LLM judges are async-native: ``ascore`` awaits the generator's ``agenerate``, ``score`` calls ``generate``, and
  both give identical Verdicts (on the real sandbox seed model through transformers, and through a real vLLM
  OpenAI-compatible server, the backend whose native path is async);
- ``asyncio.gather`` of several ``ascore`` calls overlaps them and returns each call's Verdicts in order;
- a sync-only judge gets an ``ascore`` that runs in a worker thread (the event loop keeps running); an async-only
  judge gets a ``score``, also from inside a running event loop; a judge with neither raises, never recurses;
- the TRL async reward function awaits ``ascore`` / ``acompare``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from loopwright.judges import PairwiseJudge, PointwiseJudge
from loopwright.judges.adapters.trl import as_reward_func
from loopwright.judges.oracle import GoldAnswerJudge
from loopwright.sdk.generator import Generator
from loopwright.sdk.judge import Judge
from loopwright.sdk.types import Completion, Prompt, SamplingParams, Verdict

POINTWISE_SHORT = "Rate the answer from 0 to 5.\nQuestion: {{ question }}\nAnswer: {{ response }}\nEnd with Score: N"
PAIRWISE_SHORT = ("Which answer is better? End with [[A]] or [[B]].\nQuestion: {{ question }}\n"
                  "Answer A: {{ response_a }}\nAnswer B: {{ response_b }}\nVerdict:")
PARAMS = SamplingParams(max_tokens=24)
N = 4


def _dump(verdicts: Sequence[Verdict]) -> list[dict]:
    return [v.model_dump(mode="json") for v in verdicts]


@pytest.fixture(scope="module")
def items():
    from loopwright.trainers.sandbox.seed import held_out_problems, miniarith_prompt

    problems = held_out_problems(N)
    prompts = [miniarith_prompt(p) for p in problems]
    good = [p.cot for p in problems]
    bad = [p.cot.rsplit("####", 1)[0] + f"#### {int(p.answer) + 1}" for p in problems]
    return problems, prompts, good, bad


def _same_both_ways(gen: Generator, items) -> None:
    _, prompts, good, bad = items
    pointwise = PointwiseJudge(gen, POINTWISE_SHORT, sampling=PARAMS)
    pairwise = PairwiseJudge(gen, PAIRWISE_SHORT, sampling=PARAMS)
    sync_s, sync_c = pointwise.score(prompts, good), pairwise.compare(prompts, good, bad)

    async def main():
        return await pointwise.ascore(prompts, good), await pairwise.acompare(prompts, good, bad)

    async_s, async_c = asyncio.run(main())
    assert len(async_s) == len(async_c) == N
    assert all(v.usage.prompt_tokens > 0 for v in async_s + async_c), "the judge prompts reached the model"
    assert _dump(async_s) == _dump(sync_s)  # greedy: same completions, same parse, same provenance and usage
    assert _dump(async_c) == _dump(sync_c)


def test_llm_judges_async_equals_sync_transformers(seed_model_dir, items):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    with TransformersGenerator(seed_model_dir) as gen:
        _same_both_ways(gen, items)


def test_llm_judges_async_equals_sync_vllm_server(seed_vllm_server, items):
    from loopwright.sdk.generators.openai import OpenAIGenerator

    gen = OpenAIGenerator(seed_vllm_server.base_url, seed_vllm_server.served_model_name, total_timeout=180)
    try:
        _same_both_ways(gen, items)
        _, prompts, good, _ = items
        judge = PointwiseJudge(gen, POINTWISE_SHORT, sampling=PARAMS)

        async def gathered():  # concurrent calls on one client, each call's verdicts in its own order
            return await asyncio.gather(*(judge.ascore([prompts[i]], [good[i]]) for i in range(N)))

        one_by_one = judge.score(prompts, good)
        parts = asyncio.run(gathered())
        assert [v for part in parts for v in _dump(part)] == _dump(one_by_one)
    finally:
        gen.close()


# ------------------------------------------------------------------------------------------- test doubles


class EchoScoreGenerator(Generator):
    """Replies ``Score: k`` where the prompt holds ``item-k``; ``agenerate`` sleeps ``delays[k]`` first and records
    how many calls were in flight. ``generate`` and ``agenerate`` are both native and counted separately."""

    backend = "echo"
    model_id = "echo"

    def __init__(self, delays: dict[int, float] | None = None) -> None:
        self.delays = delays or {}
        self.sync_calls = 0
        self.async_calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @staticmethod
    def _reply(prompts: Sequence[Prompt], params: SamplingParams | None) -> list[list[Completion]]:
        n = (params or SamplingParams()).n
        out = []
        for p in prompts:
            text = str(p)
            k = int(text.split("item-", 1)[1][0])
            out.append([Completion(text=f"fine.\nScore: {k}", finish_reason="stop") for _ in range(n)])
        return out

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        self.sync_calls += 1
        return self._reply(prompts, params)

    async def agenerate(self, prompts: Sequence[Prompt],
                        params: SamplingParams | None = None) -> list[list[Completion]]:
        self.async_calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            k = int(str(prompts[0]).split("item-", 1)[1][0]) if prompts else 0
            await asyncio.sleep(self.delays.get(k, 0.0))
            return self._reply(prompts, params)
        finally:
            self.in_flight -= 1


class SyncOnly(Judge):
    """Pointwise by ``score`` only, slow and blocking (like a local reward model)."""

    kinds = frozenset({"pointwise"})

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.threads: list[int] = []

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        return [Verdict(kind="pointwise", score=float(len(r)), valid=True) for r in responses]


class AsyncOnly(Judge):
    """Pointwise and pairwise by ``ascore`` / ``acompare`` only (like a judge calling a remote API)."""

    kinds = frozenset({"pointwise", "pairwise"})

    async def ascore(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        await asyncio.sleep(0)
        return [Verdict(kind="pointwise", score=float(len(r)), valid=True) for r in responses]

    async def acompare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                       responses_b: Sequence[str]) -> list[Verdict]:
        await asyncio.sleep(0)
        return [Verdict(kind="pairwise", preference="A" if len(a) >= len(b) else "B", valid=True)
                for a, b in zip(responses_a, responses_b, strict=True)]


class Neither(Judge):
    kinds = frozenset({"pointwise"})


# ------------------------------------------------------------------------------------------- behaviour


def test_llm_judge_sync_and_async_use_the_native_generator_paths():
    gen = EchoScoreGenerator()
    judge = PointwiseJudge(gen, "Q {{ question }} A {{ response }}")
    prompts, responses = ["item-3", "item-1"], ["x", "y"]
    sync = judge.score(prompts, responses)
    assert (gen.sync_calls, gen.async_calls) == (1, 0)
    got = asyncio.run(judge.ascore(prompts, responses))
    assert (gen.sync_calls, gen.async_calls) == (1, 1)  # one batched agenerate, no thread hop through generate
    assert [v.score for v in got] == [3.0, 1.0] and _dump(got) == _dump(sync)
    assert asyncio.run(judge.ascore([], [])) == [] and gen.async_calls == 1  # nothing to judge: no call
    with pytest.raises(ValueError, match="same length"):
        asyncio.run(judge.ascore(prompts, ["only one"]))


def test_gathered_ascore_calls_overlap_and_keep_their_order():
    delays = {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1, 4: 0.0}  # the first call finishes last
    gen = EchoScoreGenerator(delays)
    judge = PointwiseJudge(gen, "Q {{ question }} A {{ response }}")

    async def main():
        return await asyncio.gather(*(judge.ascore([f"item-{k}"] * 2, ["r", "s"]) for k in range(5)))

    t0 = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    assert [[v.score for v in r] for r in results] == [[float(k)] * 2 for k in range(5)]
    assert gen.max_in_flight == 5, "the calls must run concurrently, not one after another"
    assert elapsed < sum(delays.values()) - 0.2


def test_pairwise_acompare_matches_compare_on_both_orders():
    gen = EchoScoreGenerator()  # no [[A]]/[[B]] in its replies: both orders unparseable, an invalid verdict
    judge = PairwiseJudge(gen, "Q {{ question }} A {{ response_a }} B {{ response_b }}")
    sync = judge.compare(["item-2"], ["a"], ["b"])
    got = asyncio.run(judge.acompare(["item-2"], ["a"], ["b"]))
    assert gen.async_calls == 1 and _dump(got) == _dump(sync)
    assert not got[0].valid and "both orders unparseable" in got[0].invalid_reason


def test_sync_only_judge_gets_a_non_blocking_ascore():
    judge = SyncOnly(delay=0.3)
    ticks = 0

    async def ticker():
        nonlocal ticks
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1

    async def main():
        verdicts, _ = await asyncio.gather(judge.ascore(["q", "q"], ["ab", "abcd"]), ticker())
        return verdicts, threading.get_ident()

    verdicts, loop_thread = asyncio.run(main())
    assert [v.score for v in verdicts] == [2.0, 4.0]
    assert judge.threads and judge.threads[0] != loop_thread, "score must run in a worker thread"
    assert ticks >= 10, "the event loop kept running while the sync judge worked"
    with pytest.raises(NotImplementedError, match="SyncOnly is not a pairwise judge"):
        asyncio.run(judge.acompare(["q"], ["a"], ["b"]))
    with pytest.raises(NotImplementedError, match="not a pairwise judge"):
        judge.compare(["q"], ["a"], ["b"])


def test_async_only_judge_gets_score_and_compare_also_inside_a_running_loop():
    judge = AsyncOnly()
    assert [v.score for v in judge.score(["q", "q"], ["abc", "a"])] == [3.0, 1.0]
    assert [v.preference for v in judge.compare(["q", "q"], ["abc", "a"], ["a", "abc"])] == ["A", "B"]

    async def inside():  # e.g. a Jupyter cell or a LangGraph async node calling the sync API
        return judge.score(["q"], ["abcd"]), await judge.ascore(["q"], ["ab"])

    s, a = asyncio.run(inside())
    assert s[0].score == 4.0 and a[0].score == 2.0


def test_a_judge_with_neither_method_raises_not_recursion():
    judge = Neither()
    with pytest.raises(NotImplementedError, match="Neither is not a pointwise judge"):
        judge.score(["q"], ["a"])
    with pytest.raises(NotImplementedError, match="Neither is not a pointwise judge"):
        asyncio.run(judge.ascore(["q"], ["a"]))
    with pytest.raises(NotImplementedError, match="not a ranking judge"):
        judge.rank(["q"], [["a"]])


def test_gold_answer_judge_async_equals_sync(items):
    problems, prompts, good, bad = items
    judge = GoldAnswerJudge(problems)
    assert _dump(asyncio.run(judge.ascore(prompts, bad))) == _dump(judge.score(prompts, bad))
    got = asyncio.run(judge.acompare(prompts, good, bad))
    assert [v.preference for v in got] == ["A"] * N and _dump(got) == _dump(judge.compare(prompts, good, bad))


def test_trl_async_reward_func_awaits_ascore_and_acompare():
    gen = EchoScoreGenerator()
    judge = PointwiseJudge(gen, "Q {{ question }} A {{ response }}")
    fn = as_reward_func(judge, mode="pointwise", async_=True)
    rewards = asyncio.run(fn(["item-4", "item-2", "item-1"], ["a", [{"role": "tool", "content": "3"}], "c"]))
    assert rewards == [4.0, None, 1.0]  # the completion without assistant text is invalid, the rest in order
    assert (gen.sync_calls, gen.async_calls) == (0, 1)  # the judge's native async path, no worker thread
    pairwise = as_reward_func(AsyncOnly(), mode="pairwise", async_=True)  # an async-only judge works too
    assert asyncio.run(pairwise(["q", "q"], ["long one", "s"], reference=["mid", "mid"])) == [1.0, 0.0]
