"""PathFinder's budget equals vLLM's own usage counts, and beam-1 greedy search equals greedy decoding, with the
sandbox seed model in an in-process vLLM-CPU engine (one engine for this module; spec/environment.md)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from loopwright.agents.pathfinder import PathFinder, PathFinderConfig
from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Prompt, SamplingParams

pytestmark = pytest.mark.slow  # engine start-up dominates (tens of seconds on 2 shared cores)


@pytest.fixture(scope="module")
def vgen() -> Iterator[Generator]:
    pytest.importorskip("vllm")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from loopwright.sdk.generators.vllm import VLLMGenerator
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    g = VLLMGenerator(ensure_seed_model(progress=False), max_model_len=512)
    yield g
    g.close()


class Recording(Generator):
    backend = "recording"
    supports_score = True

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer  # type: ignore[attr-defined]
        self.completions: list[Completion] = []
        self.calls = 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        self.calls += 1
        out = self.inner.generate(prompts, params)
        self.completions.extend(c for row in out for c in row)
        return out


def test_vllm_budget_and_greedy_equivalence(vgen) -> None:
    from loopwright.trainers.sandbox.seed import held_out_problems, miniarith_prompt

    problems = [p for p in held_out_problems(30) if len(p.program) >= 2][:3]
    rec = Recording(vgen)
    cfg = PathFinderConfig(branching_factor=3, buffer_size=2, max_steps=5, max_step_tokens=24, max_total_tokens=150)
    results = PathFinder(rec, cfg).search_many(problems)
    assert sum(r.budget.completion_tokens for r in results) == sum(c.usage.completion_tokens for c in rec.completions)
    assert sum(r.budget.prompt_tokens for r in results) == sum(c.usage.prompt_tokens for c in rec.completions)
    assert sum(r.budget.generator_calls for r in results) == rec.calls
    assert all(r.budget.completion_tokens <= 150 for r in results)

    greedy_cfg = PathFinderConfig.greedy(max_steps=8, max_step_tokens=48)
    outs = vgen.generate([miniarith_prompt(p) for p in problems], SamplingParams(max_tokens=200))
    for p, out in zip(problems, outs, strict=True):
        r = PathFinder(vgen, greedy_cfg).search(p)
        lines = out[0].text.split("\n")
        cut = next((i for i, x in enumerate(lines) if "####" in x), len(lines) - 1)
        assert r.paths[0].steps == lines[:cut + 1]
