"""Model-level equivalence: a merged Mixtral with its MoE blocks on the Triton kernel (forced; interpreter on CPU)
vs transformers' own per-expert loop — logits, LM + aux loss, and the gradients of every parameter."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import pytest  # noqa: E402

from loopwright.modeling.btx import merge_btx, use_moe_kernel  # noqa: E402


def _merged(num_experts: int = 3, k: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False)
    experts = []
    for seed in range(num_experts):
        torch.manual_seed(seed)
        experts.append(LlamaForCausalLM(cfg))
    return merge_btx(experts, num_experts_per_tok=k, router_init="normal", router_aux_loss_coef=0.05)


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids, output_router_logits=True)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_kernel_path_matches_transformers_loop():
    model = _merged()
    ids = torch.randint(0, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    ref_logits, ref_loss, ref_grads = _loss_and_grads(model, ids)
    assert use_moe_kernel(model, mode="kernel") == 2
    logits, loss, grads = _loss_and_grads(model, ids)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # CPU + "auto" falls back to transformers' loop (bit-identical); "off" removes the override.
    use_moe_kernel(model, mode="auto")
    with torch.no_grad():
        auto_logits = model(input_ids=ids).logits
    assert torch.equal(auto_logits, ref_logits) or torch.cuda.is_available()
    use_moe_kernel(model, mode="off")
    assert "forward" not in model.model.layers[0].mlp.__dict__


def test_kernel_path_generates_like_reference():
    model = _merged(num_experts=2, k=1)
    ids = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=4, do_sample=False)
        use_moe_kernel(model, mode="kernel")
        ours = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(ours, ref)


def test_use_moe_kernel_rejects_bad_input():
    from transformers import LlamaConfig, LlamaForCausalLM

    with pytest.raises(ValueError, match="mode="):
        use_moe_kernel(_merged(2), mode="fast")
    with pytest.raises(ValueError, match="no MixtralSparseMoeBlock"):
        use_moe_kernel(LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=16, intermediate_size=16,
                                                    num_hidden_layers=1, num_attention_heads=1)))
