"""modeling/mta/reference.py: the vectorised official form (b) against the naive loop reference (a), spec §2.12.

Reference: spec/modeling.md §2.3-2.6b (facebookresearch/RAM projects/mta/mta_transformer.py at e6f051fb).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from loopwright.modeling.mta.reference import (
    causal_allowed,
    kq_conv,
    mta_attention_naive,
    mta_attention_vectorised,
    naive_kq_logits,
    post_head_conv,
)

torch.set_default_dtype(torch.float32)


def _qkv(B=2, H=2, T=9, D=4, seed=0, S=None):
    g = torch.Generator().manual_seed(seed)
    S = S or T
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, H, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, S, D, generator=g, dtype=torch.float64)
    return q, k, v, g


def _ops(H, g, *, pre=None, post=None, pre_mix=False, post_group=None, post_mix=False, pad_key="both"):
    ops = {"pad_key": pad_key}
    if pre:
        ops["pre_kernel_HQK"] = torch.randn(H, *pre, generator=g, dtype=torch.float64) * 0.5
    if post:
        ops["post_kernel_HQK"] = torch.randn(H, *post, generator=g, dtype=torch.float64) * 0.5
    if pre_mix:
        ops["pre_head_mix_HH"] = torch.randn(H, H, generator=g, dtype=torch.float64)
    if post_group:
        ops["post_head_kernel_GCC"] = torch.randn(H // post_group, post_group, post_group, generator=g,
                                                  dtype=torch.float64)
    if post_mix:
        ops["post_head_mix_HH"] = torch.randn(H, H, generator=g, dtype=torch.float64)
    return ops


CASES = {
    "pre3x5": dict(pre=(3, 5)),
    "pre2x3": dict(pre=(2, 3)),
    "pre3x5+post2x3": dict(pre=(3, 5), post=(2, 3)),
    "pre2x3+premix": dict(pre=(2, 3), pre_mix=True),
    "pre3x5+postgroup": dict(pre=(3, 5), post_group=2, H=4),
    "all-ops": dict(pre=(2, 3), post=(3, 5), pre_mix=True, post_group=2, H=4),
    "post-linear-mix": dict(post=(2, 3), post_mix=True, H=3),
    "pad-left": dict(pre=(2, 3), post=(2, 2), pad_key="left"),
    "pad-right": dict(pre=(3, 4), pad_key="right"),
    "premix-only": dict(pre_mix=True, H=3),
}


@pytest.mark.parametrize("name", list(CASES))
def test_vectorised_matches_naive_loops(name):
    case = dict(CASES[name])
    H = case.pop("H", 2)
    q, k, v, g = _qkv(H=H, T=7, seed=len(name))
    ops = _ops(H, g, **case)
    # odd shape: batch 2, 7 queries; one row with left padding (keys 0, 1 invalid)
    key_valid = torch.ones(2, 7, dtype=torch.bool)
    key_valid[1, :2] = False
    allowed = causal_allowed(7, 7, key_valid_BS=key_valid)
    out_v, probs_v = mta_attention_vectorised(q, k, v, allowed, **ops)
    out_n, probs_n = mta_attention_naive(q, k, v, allowed, **ops)
    assert (probs_v - probs_n).abs().max() < 1e-10
    assert (out_v - out_n).abs().max() < 1e-10


def test_query_window_matches_full_rows():
    """Cached decoding computes a window of query rows against all keys: its exact rows equal the full ones."""
    q, k, v, g = _qkv(T=10, seed=3)
    ops = _ops(2, g, pre=(3, 5), post=(2, 3))
    full, _ = mta_attention_vectorised(q, k, v, **ops)
    extra = (3 - 1) + (2 - 1)
    window = q[:, :, 6 - extra:]  # rows 3..9; rows 6..9 have enough history
    part, _ = mta_attention_vectorised(window, k, v, **ops)
    assert torch.allclose(part[:, :, extra:], full[:, :, 6:], atol=1e-12)
    naive, _ = mta_attention_naive(window, k, v, causal_allowed(window.shape[2], 10), **ops)
    assert torch.allclose(naive, part, atol=1e-10)


def test_identity_kernels_equal_plain_causal_attention():
    q, k, v, _ = _qkv(H=4, T=11)
    H = 4
    pre = torch.zeros(H, 3, 5, dtype=torch.float64)
    pre[:, 2, 2] = 1
    post = torch.zeros(H, 2, 3, dtype=torch.float64)
    post[:, 1, 1] = 1
    eye = torch.eye(H, dtype=torch.float64)
    out, _ = mta_attention_vectorised(q, k, v, pre_kernel_HQK=pre, post_kernel_HQK=post, pre_head_mix_HH=eye,
                                      post_head_kernel_GCC=torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (out - sdpa).abs().max() < 1e-12


def test_causality_with_random_kernels():
    q, k, v, g = _qkv(H=4, T=12, seed=5)
    ops = _ops(4, g, pre=(3, 5), post=(2, 3), pre_mix=True, post_group=2)
    out, _ = mta_attention_vectorised(q, k, v, **ops)
    t = 6
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t + 1:] += torch.randn_like(x[:, :, t + 1:]) * 3
    out2, _ = mta_attention_vectorised(q2, k2, v2, **ops)
    assert torch.equal(out[:, :, : t + 1], out2[:, :, : t + 1])
    assert not torch.allclose(out[:, :, t + 1:], out2[:, :, t + 1:])


def test_exact_eq4_differs_only_by_the_terms_the_code_masks():
    """Paper eq. (4) lets an older query i' see keys up to the current i; the code masks them (spec §2.3)."""
    g = torch.Generator().manual_seed(11)
    T = 8
    raw = torch.randn(T, T, generator=g, dtype=torch.float64).tolist()
    allowed = causal_allowed(T, T)[0].tolist()
    for c_q in (1, 3):
        kernel = torch.randn(c_q, 5, generator=g, dtype=torch.float64).tolist()
        official = torch.tensor(naive_kq_logits(raw, allowed, kernel, "both", "official"))
        eq4 = torch.tensor(naive_kq_logits(raw, allowed, kernel, "both", "eq4"))
        excluded = torch.tensor(naive_kq_logits(raw, allowed, kernel, "both", "excluded"))
        mask = torch.tensor(allowed)
        if c_q == 1:
            assert torch.equal(official[mask], eq4[mask]) and excluded.abs().max() == 0
        else:
            assert torch.allclose(eq4, official + excluded, atol=1e-12)
            assert excluded[mask].abs().max() > 0.1  # the difference is real, not a no-op


def test_grouped_head_kernel_is_source_target_unlike_linear():
    g = torch.Generator().manual_seed(2)
    probs = torch.rand(1, 4, 3, 3, generator=g, dtype=torch.float64)
    kernel = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], dtype=torch.float64)
    out = post_head_conv(probs, kernel)
    block = torch.block_diag(*kernel)  # [source, target]
    expected = torch.einsum("st,bsqk->btqk", block, probs)
    assert torch.allclose(out, expected)
    # head 1 (group 0, target 1) = 2 * A_0 + 4 * A_1
    assert torch.allclose(out[0, 1], 2 * probs[0, 0] + 4 * probs[0, 1])


def test_post_softmax_rows_are_not_renormalised_and_masked_entries_are_zero():
    q, k, v, g = _qkv(T=9, seed=4)
    ops = _ops(2, g, pre=(2, 3), post=(2, 3))
    _, probs = mta_attention_vectorised(q, k, v, **ops)
    future = ~causal_allowed(9, 9)[0]
    assert probs[:, :, future].abs().max() == 0
    assert (probs.sum(-1) - 1).abs().max() > 1e-3


def test_gradcheck_through_conv_softmax_and_head_mix():
    q, k, v, g = _qkv(B=1, H=2, T=5, D=3, seed=9)
    ops = _ops(2, g, pre=(2, 3), post=(2, 3), pre_mix=True, post_group=2)
    tensors = [q, k, v, ops["pre_kernel_HQK"], ops["pre_head_mix_HH"], ops["post_kernel_HQK"],
               ops["post_head_kernel_GCC"]]
    tensors = [t.clone().requires_grad_(True) for t in tensors]

    def fn(q, k, v, pre, mix, post, head):
        return mta_attention_vectorised(q, k, v, pre_kernel_HQK=pre, pre_head_mix_HH=mix, post_kernel_HQK=post,
                                        post_head_kernel_GCC=head)[0]

    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-6, fast_mode=True)


def test_kq_conv_rejects_even_width_with_both_padding():
    with pytest.raises(ValueError, match="odd"):
        kq_conv(torch.zeros(1, 1, 3, 3), causal_allowed(3, 3), torch.zeros(1, 2, 4), "both")


def test_golden_values_fixed_seed():
    """Pinned numbers (computed once with the naive reference, seed 1234); any change of semantics shows here."""
    torch.manual_seed(1234)
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    pre = torch.randn(2, 2, 3, dtype=torch.float64)
    post = torch.randn(2, 2, 3, dtype=torch.float64)
    mix = torch.randn(2, 2, dtype=torch.float64)
    out, probs = mta_attention_naive(q, k, v, pre_kernel_HQK=pre, post_kernel_HQK=post, pre_head_mix_HH=mix)
    vec, _ = mta_attention_vectorised(q, k, v, pre_kernel_HQK=pre, post_kernel_HQK=post, pre_head_mix_HH=mix)
    got = [out[0, 0, 5, 0].item(), out[0, 1, 3, 2].item(), probs[0, 1, 4, 2].item(), out.sum().item()]
    assert got == pytest.approx(GOLDEN, abs=2e-6), got
    assert torch.allclose(vec, out, atol=1e-12)


GOLDEN = [0.030641, -0.404735, 0.974169, 4.535918]


def test_matches_kernels_package_reference():
    """Cross-check against loopwright.kernels.mta's own plain-PyTorch reference (pre conv + head mix)."""
    kernels_mta = pytest.importorskip("loopwright.kernels.mta")
    q, k, v, g = _qkv(H=3, T=10, seed=21)
    ops = _ops(3, g, pre=(2, 5), pre_mix=True)
    ours, _ = mta_attention_vectorised(q, k, v, **ops)
    theirs = kernels_mta.mta_attention_reference(q, k, v, ops["pre_kernel_HQK"], ops["pre_head_mix_HH"])
    assert (ours - theirs).abs().max() < 1e-6  # their softmax runs in fp32 even for fp64 inputs
