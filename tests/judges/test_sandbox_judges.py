"""The sandbox seed model as a judge, through transformers and through a real vLLM OpenAI-compatible server.

The ~1M-parameter seed model was trained on MiniArith solutions only: it cannot follow a rubric, so most of
its verdicts are unparseable. That is the point of the test — the run must finish, every output must be a
Verdict with provenance, unparseable ones must be invalid *with a reason* and counted, never a default
score. Short custom templates keep prompts (< 260 tokens) + 32 new tokens inside the 512-token context.
"""

from __future__ import annotations

import pytest

from loopwright.judges import PairwiseJudge, PointwiseJudge
from loopwright.judges.pairwise import locate_token
from loopwright.sdk.types import SamplingParams, Verdict

POINTWISE_SHORT = "Rate the answer from 0 to 5.\nQuestion: {{ question }}\nAnswer: {{ response }}\nEnd with Score: N"
PAIRWISE_SHORT = ("Which answer is better? End with [[A]] or [[B]].\nQuestion: {{ question }}\n"
                  "Answer A: {{ response_a }}\nAnswer B: {{ response_b }}\nVerdict:")
PARAMS = SamplingParams(max_tokens=32)
N = 8
_RAW: dict[str, list[str]] = {}
"""Raw judge outputs per backend, to check that both engines produced the same (greedy) judgements."""


@pytest.fixture(scope="module")
def items():
    from loopwright.trainers.sandbox.seed import held_out_problems, miniarith_prompt

    problems = held_out_problems(N)
    prompts = [miniarith_prompt(p) for p in problems]
    good = [p.cot for p in problems]
    bad = [p.cot.rsplit("####", 1)[0] + f"#### {int(p.answer) + 1}" for p in problems]
    return prompts, good, bad


def _check_run(gen, items, backend: str) -> dict[str, float]:
    prompts, good, bad = items
    pointwise = PointwiseJudge(gen, POINTWISE_SHORT, sampling=PARAMS)
    pairwise = PairwiseJudge(gen, PAIRWISE_SHORT, sampling=PARAMS)
    scores = pointwise.score(prompts, good)
    prefs = pairwise.compare(prompts, good, bad)
    assert len(scores) == N and len(prefs) == N
    for v in scores + prefs:
        assert isinstance(v, Verdict)
        assert v.judge is not None and v.judge.model == gen.model_id and v.judge.parser_version
        assert v.usage.prompt_tokens > 0, "the judge prompt reached the model"
        if v.valid:
            assert v.invalid_reason is None
        else:
            assert v.invalid_reason and v.score is None and v.preference is None
    for v in scores:
        if v.valid:
            assert 0.0 <= v.score <= 5.0
    for v in prefs:
        assert v.swap is not None  # both orders were judged
        if v.valid:
            assert v.preference in ("A", "B", "tie")
    _RAW[backend] = [v.raw for v in scores + prefs]
    # the soft preference needs the verdict letter's token: check the alignment works on this engine's logprobs
    raw = gen.generate(prompts, SamplingParams(max_tokens=16, logprobs=5))
    located = 0
    for row in raw:
        c = row[0]
        idx = max((i for i, ch in enumerate(c.text) if not ch.isspace()), default=-1)
        where = locate_token(c, idx)
        if where is not None:
            located += 1
            t, off = where
            assert 0 <= t < len(c.token_ids)
    assert located >= N - 2, f"{backend}: only {located}/{N} last characters located in the token stream"
    rates = {
        "pointwise_invalid_rate": sum(not v.valid for v in scores) / N,
        "pairwise_invalid_rate": sum(not v.valid for v in prefs) / N,
        "pairwise_consistent": sum(bool(v.swap.consistent) for v in prefs) / N,
        "p_a_available": sum(v.p_a is not None for v in prefs) / N,
        "tokens_located": located / N,
    }
    print(f"\n[{backend}] {rates} reasons: {sorted({v.invalid_reason for v in scores + prefs if not v.valid})[:4]}")
    return rates


def test_seed_model_as_judge_transformers(seed_model_dir, items):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    gen = TransformersGenerator(seed_model_dir)
    try:
        _check_run(gen, items, "transformers")
    finally:
        gen.close()


def test_seed_model_as_judge_vllm_server(seed_vllm_server, items):
    from loopwright.sdk.generators.openai import OpenAIGenerator

    gen = OpenAIGenerator(seed_vllm_server.base_url, seed_vllm_server.served_model_name, total_timeout=180)
    try:
        _check_run(gen, items, "vllm-server")
        # provenance names the endpoint the verdicts came from
        [v] = PointwiseJudge(gen, POINTWISE_SHORT, sampling=PARAMS).score(items[0][:1], items[1][:1])
        assert v.judge.endpoint == seed_vllm_server.base_url.rstrip("/")
        if "transformers" in _RAW:  # same weights, greedy, fp32: the engines agree up to rare last-bit flips
            same = sum(a == b for a, b in zip(_RAW["transformers"], _RAW["vllm-server"], strict=True))
            print(f"[vllm-server] raw judgements identical to transformers: {same}/{2 * N}")
            assert same >= 2 * N - 4, (same, _RAW)
    finally:
        gen.close()
