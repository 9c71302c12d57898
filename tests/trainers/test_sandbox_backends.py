"""The sandbox seed model loads in all three real backends and they agree on its answers."""

from __future__ import annotations

import pytest

from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
from loopwright.sdk.types import SamplingParams


def _answers(results):
    return [extract_model_answer(r[0].text) for r in results]


def test_seed_model_in_transformers_vllm_and_openai_server(tmp_path):
    pytest.importorskip("vllm")
    from loopwright.sdk.generators.openai import OpenAIGenerator
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.generators.vllm import VLLMGenerator
    from loopwright.sdk.server import VLLMServer
    from loopwright.trainers.sandbox.seed import ensure_seed_model, held_out_problems, miniarith_prompt

    seed_dir = ensure_seed_model(progress=False)
    problems = held_out_problems(48)
    prompts = [miniarith_prompt(p) for p in problems]
    params = SamplingParams(max_tokens=160)

    hf = TransformersGenerator(seed_dir).generate(prompts, params)
    vgen = VLLMGenerator(seed_dir, max_model_len=512)
    try:
        vl = vgen.generate(prompts, params)
    finally:
        vgen.close()
    with VLLMServer(seed_dir, max_model_len=512, log_path=tmp_path / "server.log") as server:
        oa = OpenAIGenerator(server.base_url, server.served_model_name, total_timeout=120).generate(prompts, params)

    per_backend = {"transformers": _answers(hf), "vllm": _answers(vl), "openai": _answers(oa)}
    for name, answers in per_backend.items():
        correct = sum(a is not None and is_correct(a, p.answer) for a, p in zip(answers, problems, strict=True))
        assert correct > 0, f"{name}: the seed model answered none of {len(problems)} problems"
    # Same weights, greedy, fp32: the engines may differ in the last bits, so allow a rare divergence.
    agree_vllm = sum(a == b for a, b in zip(per_backend["transformers"], per_backend["vllm"], strict=True))
    agree_server = sum(a == b for a, b in zip(per_backend["vllm"], per_backend["openai"], strict=True))
    assert agree_vllm >= len(problems) - 3, per_backend
    assert agree_server >= len(problems) - 2, per_backend
