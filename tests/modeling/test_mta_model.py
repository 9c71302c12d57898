"""modeling/mta: MTAConfig validation, identity init == Llama, save/load, KV cache == full forward, kernel dispatch.

Reference for the identity test: transformers' LlamaForCausalLM with the same weights (spec/modeling.md §2.8,
§2.12 item 2); for the cache test: the model's own full forward (style.md habit 5).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM

from loopwright.modeling.mta import MTAConfig, MTAForCausalLM, use_fused_kernel

SIZES = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rope_parameters={"rope_type": "default",
                                                                                 "rope_theta": 10000.0})
ALL_OPS = dict(mta_pre_kernel=[3, 5], mta_post_kernel=[2, 3], mta_pre_head_mix=True, mta_post_head_group=2,
               mta_layers=[0, 2])


def _mta(seed=0, **kw) -> MTAForCausalLM:
    torch.manual_seed(seed)
    return MTAForCausalLM(MTAConfig(**{**SIZES, **kw})).eval()  # inference mode, safe


def _perturb_mta_params(model, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".self_attn." in name and "_proj." not in name:  # the MTA parameters only
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(mta_pre_kernel=[2, 8]), "c_k=8 is even"),
    (dict(mta_post_kernel=[3, 4]), "use an odd c_k"),
    (dict(mta_pre_kernel=[2, 99]), "larger than max_position_embeddings=64"),
    (dict(mta_post_head_group=3), "mta_post_head_group=3 does not divide num_attention_heads=4"),
    (dict(mta_layers=[0, 3]), r"mta_layers=\[0, 3\] has ids \[3\] outside 0..2"),
    (dict(mta_pad_key="center"), "mta_pad_key='center'"),
    (dict(mta_post_head_group=2, mta_post_head_mix=True), "mutually exclusive"),
])
def test_config_rejects_values_that_cannot_work(kw, match):
    with pytest.raises(ValueError, match=match):
        MTAConfig(**{**SIZES, **kw})
    assert MTAConfig(**{**SIZES, "mta_pre_kernel": [2, 8], "mta_pad_key": "left"}).mta_pre_kernel == [2, 8]


def _llama_copy(mta: MTAForCausalLM) -> LlamaForCausalLM:
    llama = LlamaForCausalLM(LlamaConfig(**SIZES)).eval()  # inference mode, safe
    result = llama.load_state_dict(mta.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(".self_attn." in k for k in result.unexpected_keys)
    return llama


@pytest.mark.parametrize("kw", [dict(), ALL_OPS, dict(ALL_OPS, mta_pad_key="left", mta_post_head_group=None,
                                                      mta_post_head_mix=True)])
def test_identity_init_equals_llama_baseline(kw):
    mta = _mta(**kw)
    llama = _llama_copy(mta)
    ids = torch.randint(0, 61, (2, 13), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in row 1
    with torch.no_grad():
        assert (mta(ids).logits - llama(ids).logits).abs().max() < 1e-5
        a, b = mta(ids, attention_mask=mask).logits, llama(ids, attention_mask=mask).logits
    assert (a[mask.bool()] - b[mask.bool()]).abs().max() < 1e-5
    _perturb_mta_params(mta)
    with torch.no_grad():
        assert (mta(ids).logits - llama(ids).logits).abs().max() > 1e-3  # the MTA ops are live


def test_identity_with_group_norm_and_gating_keeps_the_attention_probabilities():
    """With GN/gating on, identity init leaves the probabilities equal to Llama's; the head outputs are rescaled."""
    mta = _mta(**ALL_OPS, mta_group_norm=True, mta_gating=True, mta_depth_scaling=True)
    llama = _llama_copy(mta)
    llama.config._attn_implementation = "eager"
    ids = torch.randint(0, 61, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_m = mta(ids, output_attentions=True)
        out_l = llama(ids, output_attentions=True)
    assert len(out_m.attentions) == 3
    assert (out_m.attentions[0] - out_l.attentions[0]).abs().max() < 1e-6  # first layer: same input
    assert (out_m.logits - out_l.logits).abs().max() > 1e-3


def test_layers_outside_mta_layers_keep_head_mixing_only():
    mta = _mta(**ALL_OPS)
    attn = [layer.self_attn for layer in mta.model.layers]
    assert attn[0].pre_kernel is not None and attn[2].post_kernel is not None
    assert attn[1].pre_kernel is None and attn[1].post_kernel is None
    assert attn[1].pre_head_mix is not None and attn[1].post_head_kernel.shape == (2, 2, 2)
    kernel = attn[0].pre_kernel
    assert kernel.shape == (4, 3, 5) and kernel[:, 2, 2].eq(1).all() and kernel.sum() == 4


def test_save_and_reload_through_auto_classes(tmp_path):
    mta = _mta(**ALL_OPS, mta_gating=True)
    _perturb_mta_params(mta)
    mta.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # inference mode, safe
    assert type(again) is MTAForCausalLM and again.config.mta_layers == [0, 2]
    ids = torch.randint(0, 61, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(mta(ids).logits, again(ids).logits)


@pytest.mark.parametrize("kw", [ALL_OPS, dict(mta_pre_kernel=[4, 7], mta_group_norm=True, mta_gating=True)])
def test_kv_cache_decoding_equals_full_forward(kw):
    mta = _mta(**kw)
    _perturb_mta_params(mta)
    ids = torch.randint(0, 61, (2, 14), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = mta(ids).logits
        cache = DynamicCache(config=mta.config)
        steps = [mta(ids[:, :5], past_key_values=cache, use_cache=True).logits]
        steps.append(mta(ids[:, 5:7], past_key_values=cache, use_cache=True).logits)  # a 2-token chunk
        for t in range(7, 14):
            steps.append(mta(ids[:, t: t + 1], past_key_values=cache, use_cache=True).logits)
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5

    # generate() with its own cache, left padding included: scores equal the full forward of the result
    prompt = ids[:, :6].clone()
    mask = torch.ones_like(prompt)
    prompt[1, :2], mask[1, :2] = 0, 0
    with torch.no_grad():
        gen = mta.generate(prompt, attention_mask=mask, max_new_tokens=6, do_sample=False, output_scores=True,
                           return_dict_in_generate=True, pad_token_id=0)
        seq = gen.sequences
        full_mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.long)], dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        ref = mta(seq, attention_mask=full_mask, position_ids=positions).logits[:, 5:-1]
        unpadded = mta(seq[1:, 2:]).logits[:, 3:-1]
    assert (torch.stack(gen.scores, dim=1) - ref).abs().max() < 1e-4
    assert (ref[1] - unpadded[0]).abs().max() < 1e-4  # left padding == no padding


def test_unsupported_mask_raises():
    mta = _mta(mta_pre_kernel=[2, 3])
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    mask[0, 0, 4, 1] = False  # a hole that is not key padding
    with pytest.raises(NotImplementedError, match="causal masks with key padding"):
        mta(torch.zeros(1, 5, dtype=torch.long), attention_mask=mask)


def test_dropout_only_in_training():
    mta = _mta(mta_pre_kernel=[2, 3], attention_dropout=0.5)
    ids = torch.randint(0, 61, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(mta(ids).logits, mta(ids).logits)
        mta.train()
        assert not torch.equal(mta(ids).logits, mta(ids).logits)


BASE = dict(device_type="cuda", enabled=True, has_pre_kernel=True, pad_key="both", has_post_ops=False,
            has_padding=False, cached_decode=False, dropout_active=False)


@pytest.mark.parametrize(("change", "expected"), [
    ({}, True), ({"device_type": "cpu"}, False), ({"enabled": False}, False), ({"has_pre_kernel": False}, False),
    ({"pad_key": "left"}, False), ({"has_post_ops": True}, False), ({"has_padding": True}, False),
    ({"cached_decode": True}, False), ({"dropout_active": True}, False),
])
def test_kernel_dispatch_decision(change, expected):
    assert use_fused_kernel(**{**BASE, **change}) is expected


def test_kernel_path_wiring(monkeypatch):
    """Force the dispatch on CPU with the kernels package's reference standing in for the Triton kernel."""
    kernels_mta = pytest.importorskip("loopwright.kernels.mta")
    from loopwright.modeling.mta import attention

    mta = _mta(mta_pre_kernel=[2, 5], mta_pre_head_mix=True)
    _perturb_mta_params(mta)
    ids = torch.randint(0, 61, (2, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = mta(ids).logits
    calls = []

    def fake_kernel(q, k, v, kq, mix=None, *, scale=None):
        calls.append((tuple(q.shape), tuple(kq.shape), mix is not None, scale))
        return kernels_mta.mta_attention_reference(q, k, v, kq, mix, scale=scale)

    monkeypatch.setattr(attention, "use_fused_kernel", lambda **kw: True)
    monkeypatch.setattr(kernels_mta, "mta_attention", fake_kernel)
    with torch.no_grad():
        got = mta(ids).logits
    assert len(calls) == 3 and calls[0] == ((2, 4, 11, 8), (4, 2, 5), True, 8 ** -0.5)
    assert (got - expected).abs().max() < 1e-5
