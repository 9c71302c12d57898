"""PathFinder properties on a real model (the sandbox seed model through TransformersGenerator; spec/loops.md §8.3):
beam 1 + greedy + no constraints = greedy decoding; majority vote over independent samples = self-consistency;
the budget equals the backend's own usage counts; the LangGraph graph equals the plain loop."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import pytest

from loopwright.agents.pathfinder import PathFinder, PathFinderConfig, candidates_from_texts, select
from loopwright.sdk.generator import Generator
from loopwright.sdk.tasks.gsm8k import extract_model_answer
from loopwright.sdk.types import Completion, Prompt, SamplingParams


@pytest.fixture(scope="module")
def gen() -> Iterator[Generator]:
    import torch

    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a ~1M-parameter model: one thread is fastest on a shared 2-core machine
    g = TransformersGenerator(ensure_seed_model(progress=False), batch_size=32)
    yield g
    g.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def problems() -> list:
    from loopwright.trainers.sandbox.seed import held_out_problems

    ps = held_out_problems(40)
    multi = [p for p in ps if len(p.program) >= 2]
    return multi[:3] + [p for p in ps if len(p.program) == 1][:1]


class Recording(Generator):
    """Delegates to a real backend and keeps every completion it returned (the backend's own usage counts)."""

    backend = "recording"
    supports_score = True

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.render = inner.render  # type: ignore[attr-defined]
        self.completions: list[Completion] = []
        self.prompts: list[str] = []
        self.calls = 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        self.calls += 1
        out = self.inner.generate(prompts, params)
        self.prompts.extend(prompts)  # type: ignore[arg-type]
        self.completions.extend(c for row in out for c in row)
        return out

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        return self.inner.score_many(prompts, continuations)


def _greedy_lines(text: str, markers: Sequence[str]) -> list[str]:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if any(m in line for m in markers):
            return lines[:i + 1]
    return lines


def test_beam1_greedy_no_constraints_equals_greedy_decoding(gen, problems) -> None:
    from loopwright.trainers.sandbox.seed import miniarith_prompt

    cfg = PathFinderConfig.greedy(max_steps=8, max_step_tokens=48)
    pf = PathFinder(gen, cfg)
    greedy = gen.generate([miniarith_prompt(p) for p in problems], SamplingParams(max_tokens=200))
    for p, out in zip(problems, greedy, strict=True):
        r = pf.search(p)
        assert r.budget.generator_calls == len(r.paths[0].steps)  # one greedy step per call
        assert r.paths[0].steps == _greedy_lines(out[0].text, cfg.answer_markers), p.question
        assert r.answer == extract_model_answer(out[0].text)
        assert r.paths[0].meta["params"] == ["greedy"] * len(r.paths[0].steps)


def test_majority_vote_over_independent_samples_is_self_consistency(gen, problems) -> None:
    from loopwright.trainers.sandbox.seed import miniarith_prompt

    outs = gen.generate([miniarith_prompt(p) for p in problems], SamplingParams(n=8, temperature=1.0, seed=3,
                                                                               max_tokens=120))
    cfg = PathFinderConfig(selector="vote", tie_break="first")
    n_distinct = 0
    for row in outs:
        texts = [c.text for c in row]
        answers = [extract_model_answer(t) for t in texts]
        n_distinct += len(set(answers)) > 1
        counts = collections.Counter(a for a in answers if a is not None)
        expected = counts.most_common(1)[0][0] if counts else None  # self-consistency, computed independently
        assert select(candidates_from_texts(texts), cfg).answer == expected
        assert PathFinder(gen, cfg).select(candidates_from_texts(texts)).answer == expected
        buddy = select(candidates_from_texts(texts), cfg.model_copy(update={"selector": "buddy"}))
        assert buddy.answer == expected
    assert n_distinct >= 2  # the samples disagree often enough for the vote to matter


def test_budget_equals_backend_usage_and_cap_holds(gen, problems) -> None:
    for cap in (None, 60):
        rec = Recording(gen)
        cfg = PathFinderConfig(branching_factor=3, buffer_size=2, max_steps=5, max_step_tokens=24,
                               max_total_tokens=cap, seed=1)
        results = PathFinder(rec, cfg).search_many(problems[:2])
        assert sum(r.budget.completion_tokens for r in results) == \
            sum(c.usage.completion_tokens for c in rec.completions) == sum(len(c.token_ids) for c in rec.completions)
        assert sum(r.budget.prompt_tokens for r in results) == sum(c.usage.prompt_tokens for c in rec.completions)
        assert sum(r.budget.prompt_tokens for r in results) == sum(len(x) for x in gen.encode(rec.prompts))
        assert sum(r.budget.generator_calls for r in results) == rec.calls
        if cap is not None:
            assert all(r.budget.completion_tokens <= cap for r in results)
            assert any(r.stop_reason == "budget" for r in results)


def test_graph_equals_plain_search_on_real_model(gen, problems) -> None:
    cfg = PathFinderConfig(branching_factor=3, buffer_size=2, max_steps=5, max_step_tokens=24, max_total_tokens=None,
                           seed=7, expansion_retries=1)
    plain = PathFinder(gen, cfg).search(problems[0])
    graph = PathFinder(gen, cfg, use_graph=True).search(problems[0])
    assert graph.model_dump() == plain.model_dump()
    assert plain.budget.generator_calls >= 3


def test_logprob_scores_agree_with_generator_score(gen, problems) -> None:
    cfg = PathFinderConfig.greedy(max_steps=8, max_step_tokens=48)
    a = PathFinder(gen, cfg).search(problems[0])
    b = PathFinder(gen, cfg.model_copy(update={"score_source": "score"})).search(problems[0])
    assert a.paths[0].steps == b.paths[0].steps
    assert b.score_calls == len(b.paths[0].steps) and a.score_calls == 0
    assert a.paths[0].score == pytest.approx(b.paths[0].score, abs=1e-3)
    assert a.paths[0].score < 0
