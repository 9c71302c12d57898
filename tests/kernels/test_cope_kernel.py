"""CoPE Triton kernel (kernels/cope.py) vs ``cope_attention_reference`` (the official vectorised formula): the output
and every gradient (q, k, v, pos_emb) over a grid of shapes (L = 1, 7, 33; d = 16, 32; npos < L and >= L) and dtypes;
the plain-PyTorch blockwise algorithm vs the reference; model-level dispatch (kernel path == reference path on a tiny
CoPE model); O(L) peak-memory scaling of the blockwise algorithm.

On CPU the kernels run in the Triton interpreter (tests/kernels/conftest.py sets TRITON_INTERPRET=1 before triton is
imported), correctness only. Tolerances: fp32 within 2 x PyTorch-fp32's own error (both vs an fp64 reference) + atol;
bf16 by spec/style.md habit 2 (kernel error vs an fp32 reference <= 2 x PyTorch's bf16 error + atol). Note: under the
interpreter the kernel upcasts bf16 operands to fp32 before tl.dot (the interpreter's bf16 dot is broken), so the
bf16 tensor-core numerics are only checked by the CUDA-only test at the end.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from loopwright.kernels.cope import (
    cope_attention,
    cope_attention_blockwise,
    cope_attention_reference,
    kernel_available,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_kernel = pytest.mark.skipif(
    not kernel_available(DEVICE), reason="no CUDA and triton was imported without TRITON_INTERPRET=1")

# (B, H, L, D, npos): odd lengths, one and several key blocks (block 16 on CPU), clamp active (npos < L) or not.
SHAPES = [
    (1, 1, 1, 16, 4),
    (1, 2, 7, 16, 4),
    (2, 1, 7, 32, 16),
    (1, 2, 33, 16, 8),
    (1, 1, 33, 32, 64),
]


def _inputs(B, H, L, D, P, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=gen, dtype=torch.float64) for _ in range(3))
    pos_emb = torch.randn(D, P, generator=gen, dtype=torch.float64)
    return q * 1.5, k * 1.5, v, pos_emb  # gates spread over (0, 1)


def _run(fn, tensors, dtype, do_BHLD, **kw):
    leaves = [t.to(DEVICE, dtype).detach().requires_grad_() for t in tensors]
    out = fn(*leaves, **kw)
    out.backward(do_BHLD.to(DEVICE, dtype))
    return [out.detach()] + [t.grad for t in leaves]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}L{}D{}P{}".format(*s))
def test_kernel_forward_and_gradients_match_reference(shape, dtype, within_torch_error):
    B, H, L, D, P = shape
    q, k, v, pos_emb = _inputs(*shape)
    if dtype == torch.bfloat16:  # compare on bf16-representable inputs
        q, k, v, pos_emb = (t.to(torch.bfloat16).double() for t in (q, k, v, pos_emb))
    do_BHLD = torch.randn(B, H, L, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact_dtype = torch.float64 if dtype == torch.float32 else torch.float32
    exact = _run(cope_attention_reference, (q, k, v, pos_emb), exact_dtype, do_BHLD, npos_max=P)
    torch_lowp = _run(cope_attention_reference, (q, k, v, pos_emb), dtype, do_BHLD, npos_max=P)
    kernel = _run(cope_attention, (q, k, v, pos_emb), dtype, do_BHLD, npos_max=P)
    atol_rel = 1e-5 if dtype == torch.float32 else 1e-2
    for name, got, low, ref in zip(("out", "dq", "dk", "dv", "dpos_emb"), kernel, torch_lowp, exact, strict=True):
        assert got.dtype == dtype and got.shape == ref.shape
        assert torch.isfinite(got).all(), f"{name} has non-finite values"
        within_torch_error(name, got.float(), low.float(), ref.float(), atol=atol_rel * max(1.0, float(ref.abs().max())))


@needs_kernel
def test_kernel_nodiv_variant_and_block_size():
    """cope_nodiv (paper snippet scaling) and a 32-wide tiling give the reference's values too."""
    shape = (1, 2, 33, 16, 8)
    q, k, v, pos_emb = _inputs(*shape, seed=3)
    do_BHLD = torch.randn(*shape[:4], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = _run(cope_attention_reference, (q, k, v, pos_emb), torch.float32, do_BHLD, npos_max=8, nodiv=True)
    for block in (16, 32):
        got = _run(cope_attention, (q, k, v, pos_emb), torch.float32, do_BHLD, npos_max=8, nodiv=True, block=block)
        for name, a, b in zip(("out", "dq", "dk", "dv", "dpos_emb"), got, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, n=name, bl=block: f"{n} {bl}: {m}")


@pytest.mark.parametrize("L,block", [(1, 4), (7, 3), (33, 8), (40, 64)])
def test_blockwise_algorithm_matches_reference(L, block):
    """The kernel's algorithm in plain PyTorch (backwards from the diagonal, gate carry, online softmax)."""
    q, k, v, pos_emb = _inputs(2, 2, L, 8, 5, seed=L)
    for nodiv in (False, True):
        ref = cope_attention_reference(q, k, v, pos_emb, npos_max=5, nodiv=nodiv)
        got = cope_attention_blockwise(q, k, v, pos_emb, npos_max=5, nodiv=nodiv, block=block)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)  # computed in fp32 from fp64 inputs


def test_bad_arguments_raise_with_the_value():
    q, k, v, pos_emb = _inputs(1, 1, 4, 8, 3)
    with pytest.raises(ValueError, match="npos_max=0"):
        cope_attention_reference(q, k, v, pos_emb, npos_max=0)
    with pytest.raises(ValueError, match=r"expected \(head_dim, npos_max\) = \(8, 5\)"):
        cope_attention_reference(q, k, v, pos_emb, npos_max=5)
    with pytest.raises(ValueError, match="block=12"):
        cope_attention(q.float(), k.float(), v.float(), pos_emb.float(), npos_max=3, block=12)


def _peak_forward_bytes(fn) -> int:
    """Peak bytes allocated by PyTorch during ``fn()`` (running sum of the profiler's [memory] events)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    current = peak = 0
    for event in sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"]):
        current += event["args"]["Bytes"]
        peak = max(peak, current)
    return peak


def test_blockwise_peak_memory_is_linear_in_length():
    """spec/performance.md §6.2 item 2: peak(L=1024) / peak(L=512) <= 2.2 for the one-pass algorithm, ~4 for the
    materialised reference (inference-mode forward, B=1, H=1, d=16, npos=64, fp32)."""
    ratios = {}
    for name, fn in (("reference", cope_attention_reference), ("blockwise", cope_attention_blockwise)):
        peaks = []
        for L in (512, 1024):
            q, k, v, pos_emb = (t.float() for t in _inputs(1, 1, L, 16, 64))
            with torch.no_grad():
                peaks.append(_peak_forward_bytes(lambda: fn(q, k, v, pos_emb, npos_max=64)))  # noqa: B023
        ratios[name] = peaks[1] / peaks[0]
        print(f"{name}: peak {peaks[0]} B at L=512, {peaks[1]} B at L=1024, ratio {ratios[name]:.2f}")
    assert ratios["blockwise"] <= 2.2, ratios
    assert ratios["reference"] >= 3.5, ratios


# ----------------------------------------------------------------------------------------------- model dispatch


def _tiny_cope(kernel: str, **overrides):
    from loopwright.modeling.cope import CoPEConfig, CoPEForCausalLM

    cfg = CoPEConfig(vocab_size=61, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, cope_npos_max=6, cope_kernel=kernel, pad_token_id=0, **overrides)
    torch.manual_seed(0)
    model = CoPEForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.pos_emb.normal_(0.0, 1.0)  # non-zero so positions matter
    return model.to(DEVICE)


@needs_kernel
def test_model_kernel_path_equals_reference_path(monkeypatch):
    """A tiny CoPE model with the kernel forced on gives the reference path's logits and parameter gradients."""
    import loopwright.kernels.cope as kcope

    calls = []
    real = kcope.cope_attention
    monkeypatch.setattr(kcope, "cope_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ids = torch.randint(1, 61, (1, 19), generator=torch.Generator().manual_seed(5)).to(DEVICE)
    results = {}
    for kernel in ("never", "always"):
        model = _tiny_cope(kernel)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        results[kernel] = (out.logits.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert len(calls) == 2, "the kernel path was not taken in both layers"
    torch.testing.assert_close(results["always"][0], results["never"][0], rtol=1e-4, atol=1e-5)
    for name, grad in results["never"][1].items():
        torch.testing.assert_close(results["always"][1][name], grad, rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


@needs_kernel
def test_model_falls_back_to_reference_for_padding_and_decode(monkeypatch):
    import loopwright.kernels.cope as kcope

    calls = []
    real = kcope.cope_attention
    monkeypatch.setattr(kcope, "cope_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    model = _tiny_cope("always")
    model.eval()  # inference mode, safe
    ids = torch.randint(1, 61, (2, 9), generator=torch.Generator().manual_seed(6)).to(DEVICE)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)  # padding: reference path
        assert calls == []
        prefill = model(input_ids=ids[:, :5], use_cache=True)  # no padding, no prefix: kernel
        assert len(calls) == 2
        step = model(input_ids=ids[:, 5:6], past_key_values=prefill.past_key_values, use_cache=True)  # decode
        assert len(calls) == 2
        full = model(input_ids=ids[:, :6]).logits
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------- GPU only


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("npos", [64, 1025])
def test_kernel_bf16_on_gpu_at_length_1024(npos, within_torch_error):
    B, H, L, D = 1, 4, 1024, 64
    q, k, v, pos_emb = _inputs(B, H, L, D, npos, seed=7)
    q, k, v, pos_emb = (t.to(torch.bfloat16).double() for t in (q, k, v, pos_emb))
    do_BHLD = torch.randn(B, H, L, D, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    exact = _run(cope_attention_reference, (q, k, v, pos_emb), torch.float32, do_BHLD, npos_max=npos)
    low = _run(cope_attention_reference, (q, k, v, pos_emb), torch.bfloat16, do_BHLD, npos_max=npos)
    got = _run(cope_attention, (q, k, v, pos_emb), torch.bfloat16, do_BHLD, npos_max=npos)
    for name, a, b, c in zip(("out", "dq", "dk", "dv", "dpos_emb"), got, low, exact, strict=True):
        within_torch_error(name, a.float(), b.float(), c.float(), atol=1e-2 * max(1.0, float(c.abs().max())))
