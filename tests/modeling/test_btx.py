"""BTX merge, load balancing, router training and BTM baselines vs spec/modeling.md §5.6 (tiny in-process Llamas).

References: the dense Llama's own logits (identical experts), transformers' ``load_balancing_loss_func``
(the "hf" convention), closed-form values of the Switch loss, and element-wise means for the averaging.
"""

from __future__ import annotations

import random

import pytest
import torch

from loopwright.modeling.btx import (
    average_dense,
    btm_ensemble_logprobs,
    btm_posterior,
    check_experts,
    freeze_all_but_routers,
    load_balance_loss,
    merge_btx,
    moe_finetune,
    save_merged,
    upcycle,
)

ATOL = 1e-5  # fp32: merged identical experts differ from the dense model only by summation order


def _llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, head_dim=16, max_position_embeddings=64, tie_word_embeddings=False)
    kw.update(overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**kw)).eval()  # inference mode, safe


def _ids(seed: int = 0, b: int = 2, length: int = 11, vocab: int = 48) -> torch.Tensor:
    return torch.randint(0, vocab, (b, length), generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    diff = (a - b).abs()
    assert diff.max() <= atol, f"max diff {diff.max():.3g}, mean diff {diff.mean():.3g} (atol {atol})"


@pytest.mark.parametrize(("n", "k", "router_init"), [(1, 1, "normal"), (2, 2, "zeros+noise"), (3, 2, "normal"),
                                                     (4, 1, "normal")])
def test_identical_experts_reproduce_dense_logits(n, k, router_init):
    dense = _llama()
    merged = upcycle(dense, n, num_experts_per_tok=k, router_init=router_init)
    ids = _ids()
    with torch.no_grad():
        _close(merged(input_ids=ids).logits, dense(input_ids=ids).logits)


def test_experts_become_moe_experts_and_rest_is_averaged():
    experts = [_llama(seed) for seed in range(3)]
    merged = merge_btx(experts, avg_weights=[1, 1, 2])
    w = [0.25, 0.25, 0.5]
    ms = merged.state_dict()
    for layer in range(2):
        mlp = merged.model.layers[layer].mlp
        for i, e in enumerate(experts):
            emlp = e.model.layers[layer].mlp
            torch.testing.assert_close(mlp.experts.gate_up_proj[i], torch.cat([emlp.gate_proj.weight, emlp.up_proj.weight]))
            torch.testing.assert_close(mlp.experts.down_proj[i], emlp.down_proj.weight)
        name = f"model.layers.{layer}.self_attn.q_proj.weight"
        mean = sum(wi * e.state_dict()[name] for wi, e in zip(w, experts, strict=True))
        torch.testing.assert_close(ms[name], mean)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        torch.testing.assert_close(ms[name], sum(wi * e.state_dict()[name] for wi, e in zip(w, experts, strict=True)))
    # spec §5.6-5: parameters = non-FFN + N * FFN + N * D * layers (routers)
    dense_total = sum(p.numel() for p in experts[0].parameters())
    ffn = sum(p.numel() for n_, p in experts[0].named_parameters() if ".mlp." in n_)
    assert sum(p.numel() for p in merged.parameters()) == dense_total - ffn + 3 * ffn + 3 * 32 * 2


def test_one_hot_routing_equals_that_expert():
    """Same non-FFN weights, different FFNs; zero routers + k=1 send every token to expert 0 with weight 1."""
    base = _llama(0)
    experts = []
    for seed in (1, 2):
        e = _llama(0)
        donor = _llama(seed)
        for layer in range(2):
            e.model.layers[layer].mlp.load_state_dict(donor.model.layers[layer].mlp.state_dict())
        experts.append(e)
    ids = _ids(3)
    for order in ([0, 1], [1, 0]):
        merged = merge_btx([experts[i] for i in order], num_experts_per_tok=1, router_init="zeros")
        with torch.no_grad():
            _close(merged(input_ids=ids).logits, experts[order[0]](input_ids=ids).logits)
    del base


def test_mismatched_experts_raise_naming_the_field():
    with pytest.raises(ValueError, match="intermediate_size.*64.*96"):
        merge_btx([_llama(0), _llama(1, intermediate_size=96)])
    with pytest.raises(ValueError, match="num_experts_per_tok=3"):
        merge_btx([_llama(0), _llama(1)], num_experts_per_tok=3)
    with pytest.raises(ValueError, match="router_init"):
        merge_btx([_llama(0)], num_experts_per_tok=1, router_init="hidden")
    with pytest.raises(ValueError, match="avg_weights"):
        merge_btx([_llama(0), _llama(1)], avg_weights=[1.0])
    with pytest.raises(ValueError, match="mlp_bias"):
        check_experts([_llama(0, mlp_bias=True)], 1)


def test_save_load_round_trip(tmp_path):
    from transformers import AutoModelForCausalLM

    merged = merge_btx([_llama(0), _llama(1), _llama(2)], router_init="normal")
    out = save_merged(merged, tmp_path / "btx")
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()  # inference mode, safe
    assert type(loaded).__name__ == "MixtralForCausalLM" and loaded.config.num_local_experts == 3
    ids = _ids(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, merged(input_ids=ids).logits, rtol=0, atol=0)


def test_load_balance_loss_matches_transformers_and_closed_forms():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    g = torch.Generator().manual_seed(0)
    logits = tuple(torch.randn(2 * 7, 4, generator=g) for _ in range(3))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    for m in (None, mask):
        ours = load_balance_loss(logits, 4, 2, attention_mask=m, convention="hf")
        torch.testing.assert_close(ours, load_balancing_loss_func(logits, 4, 2, attention_mask=m))
    # uniform routing: p ~ 1/N, each expert gets 1/N of the slots -> 1 (Switch convention)
    balanced = (torch.eye(4).repeat(2, 1) * 1e-3,)  # each expert top-1 for 2 of 8 tokens, p ~ uniform
    torch.testing.assert_close(load_balance_loss(balanced, 4, 1, convention="switch"), torch.tensor(1.0), atol=2e-3,
                               rtol=0)
    # all tokens on expert 2 with one-hot p -> N (Switch convention)
    collapsed = (torch.full((6, 4), -1e4).index_fill_(1, torch.tensor([2]), 0.0),)
    torch.testing.assert_close(load_balance_loss(collapsed, 4, 1, convention="switch"), torch.tensor(4.0))
    # differentiable (through p only)
    x = logits[0].clone().requires_grad_()
    load_balance_loss((x,), 4, 2).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _pattern_batches(rng):
    """Two 'domains': ascending runs and a repeated 3-cycle, so the LM loss can fall in a few steps."""
    rows = []
    for _ in range(8):
        if rng.random() < 0.5:
            start = rng.randrange(0, 20)
            rows.append(list(range(start, start + 16)))
        else:
            a, b, c = rng.sample(range(20, 48), 3)
            rows.append([a, b, c] * 5 + [a])
    return torch.tensor(rows)


def test_router_training_changes_only_routers_and_lowers_aux_loss():
    """Routers start skewed (every layer's router points along the mean MoE input, so most tokens pick expert 0);
    router-only training with a large alpha must rebalance them: L_LB falls from near-collapse towards 1."""
    torch.set_num_threads(1)
    merged = merge_btx([_llama(0), _llama(1)], num_experts_per_tok=1, router_aux_loss_coef=1.0)
    means = {}
    hooks = [layer.mlp.register_forward_hook(
        lambda mod, inp, out, i=i: means.__setitem__(i, inp[0].reshape(-1, inp[0].shape[-1]).mean(0)))
        for i, layer in enumerate(merged.model.layers)]
    with torch.no_grad():
        merged(input_ids=_pattern_batches(random.Random(0)))
    for h in hooks:
        h.remove()
    with torch.no_grad():
        for i, layer in enumerate(merged.model.layers):
            v = means[i] / means[i].norm()
            layer.mlp.gate.weight.copy_(torch.stack([5 * v, -5 * v]))
    before = {n: p.detach().clone() for n, p in merged.named_parameters()}
    hist = moe_finetune(merged, _pattern_batches, steps=30, lr=3e-2, routers_only=True, log=None)
    assert hist["trainable_params"] == 2 * 2 * 32
    for n, p in merged.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == n.endswith("mlp.gate.weight"), n
    last = sum(hist["aux_loss"][-5:]) / 5
    assert hist["aux_loss"][0] > last + 0.2, (hist["aux_loss"][0], last)


def test_full_moe_finetune_lowers_lm_loss():
    torch.set_num_threads(1)
    merged = merge_btx([_llama(0), _llama(1)])
    hist = moe_finetune(merged, _pattern_batches, steps=25, lr=1e-2, log=None)
    assert sum(hist["lm_loss"][-5:]) < sum(hist["lm_loss"][:5]) - 1.0
    with pytest.raises(ValueError, match="no MoE routers"):
        freeze_all_but_routers(_llama(0))


def test_btm_posterior_and_ensemble():
    tok = torch.randn(3, 2, 6)
    post = btm_posterior(tok)
    torch.testing.assert_close(post.sum(0), torch.ones(2, 6))
    torch.testing.assert_close(post[:, :, :2], torch.full((3, 2, 2), 1 / 3))  # empty scored prefix -> prior
    dense = _llama(0)
    ids = _ids(2)
    with torch.no_grad():
        ref = torch.log_softmax(dense(input_ids=ids).logits, -1)
        _close(btm_ensemble_logprobs([dense, dense], ids), ref)
        _close(average_dense([dense, dense])(input_ids=ids).logits, dense(input_ids=ids).logits)
        mix = btm_ensemble_logprobs([_llama(0), _llama(1)], ids, top=1)
    torch.testing.assert_close(mix.exp().sum(-1), torch.ones(2, 11))


def test_merge_accepts_model_folders(tmp_path):
    dense = _llama(4)
    dense.save_pretrained(tmp_path / "dense")
    merged = merge_btx([tmp_path / "dense", dense], router_init="normal")
    ids = _ids(5)
    with torch.no_grad():
        _close(merged(input_ids=ids).logits, dense(input_ids=ids).logits)
    with pytest.raises(ValueError, match="not a model folder"):
        merge_btx([tmp_path / "missing", dense])
