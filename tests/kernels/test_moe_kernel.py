"""Triton grouped-GEMM MoE (kernels/moe.py) vs the per-expert loop ``moe_ffn_reference``: output and every gradient.

On CPU the kernels run under the Triton interpreter (``TRITON_INTERPRET=1``, set before triton is imported;
correctness only). fp32: direct comparison. bf16 (Dao-AILab/flash-attention rule, spec/style.md habit 2):
err(kernel, bf16) <= 2 * err(PyTorch reference, bf16) + atol, both measured against the fp32 reference
computed from the same (bf16-representable) inputs; atol = one bf16 ulp at the largest reference magnitude.
Under the interpreter the kernels store through fp32 buffers (the interpreter truncates fp32 -> bf16 stores,
see kernels/moe.py), so on CPU this checks the kernels' arithmetic, and on GPU the real bf16 stores.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (tests/kernels/conftest.py may too)

import pytest  # noqa: E402

from loopwright.kernels.moe import GroupedSwiGLU, moe_ffn, moe_ffn_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (T, E, D, F, top_k, dead_expert): odd token counts, odd D/F, an expert that receives no token.
SHAPES = [
    (1, 2, 16, 32, 2, False),
    (7, 3, 24, 40, 2, True),
    (33, 4, 32, 48, 2, False),
    (33, 4, 16, 24, 2, True),
    (9, 4, 16, 32, 1, False),
]


def _inputs(T, E, D, Fdim, dead, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, D, generator=g)
    logits = torch.randn(T, E, generator=g)
    if dead:
        logits[:, E - 1] = -30.0  # never in the top-k
    wg = torch.randn(E, Fdim, D, generator=g) / D**0.5
    wu = torch.randn(E, Fdim, D, generator=g) / D**0.5
    wd = torch.randn(E, D, Fdim, generator=g) / Fdim**0.5
    dy = torch.randn(T, D, generator=g)
    ts = [t.to(dtype).to(DEVICE) for t in (x, logits, wg, wu, wd)]
    return [t.requires_grad_() for t in ts], dy.to(dtype).to(DEVICE)


def _run(fn, inputs, dy, top_k):
    y = fn(*inputs, top_k=top_k)
    grads = torch.autograd.grad(y, inputs, dy)
    return [y.detach(), *grads]


NAMES = ["y", "dx", "d_router_logits", "dw_gate", "dw_up", "dw_down"]


@pytest.mark.parametrize(("T", "E", "D", "Fdim", "top_k", "dead"), SHAPES)
def test_fp32_forward_and_gradients_match_loop(T, E, D, Fdim, top_k, dead):
    inputs, dy = _inputs(T, E, D, Fdim, dead, torch.float32)
    ours = _run(moe_ffn, inputs, dy, top_k)
    ref = _run(moe_ffn_reference, inputs, dy, top_k)
    for name, a, b in zip(NAMES, ours, ref, strict=True):
        diff = (a - b).abs()
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), f"{name}: max {diff.max():.3g}, mean {diff.mean():.3g}"
    if dead:
        assert ours[3][E - 1].abs().max() == 0 and ours[5][E - 1].abs().max() == 0  # no tokens -> zero grads


@pytest.mark.parametrize(("T", "E", "D", "Fdim", "top_k", "dead"), SHAPES[1:4])
def test_bf16_error_within_twice_pytorch_error(T, E, D, Fdim, top_k, dead):
    inputs16, dy16 = _inputs(T, E, D, Fdim, dead, torch.bfloat16)
    inputs32 = [t.detach().float().requires_grad_() for t in inputs16]
    exact = _run(moe_ffn_reference, inputs32, dy16.float(), top_k)
    torch_bf16 = _run(moe_ffn_reference, inputs16, dy16, top_k)
    ours = _run(moe_ffn, inputs16, dy16, top_k)
    for name, o, t, e in zip(NAMES, ours, torch_bf16, exact, strict=True):
        err_ours = (o.float() - e).abs().max().item()
        err_torch = (t.float() - e).abs().max().item()
        atol = 2**-8 * max(e.abs().max().item(), 1e-3)  # one bf16 ulp at the largest reference magnitude
        assert err_ours <= 2 * err_torch + atol, f"{name}: kernel err {err_ours:.3g} vs torch bf16 err {err_torch:.3g}"
        assert o.dtype == torch.bfloat16


def test_grouped_function_gives_per_slot_expert_outputs():
    """GroupedSwiGLU alone: out[t, j] = expert(idx[t, j]) applied to x[t] (checked by a token-by-token loop)."""
    (x, _, wg, wu, wd), _ = _inputs(5, 3, 16, 16, False, torch.float32, seed=1)
    idx = torch.tensor([[0, 2], [2, 0], [1, 2], [2, 1], [2, 0]], device=DEVICE)
    out = GroupedSwiGLU.apply(x, idx, wg, wu, wd)
    for t in range(5):
        for j in range(2):
            e = int(idx[t, j])
            h = torch.nn.functional.silu(wg[e] @ x[t]) * (wu[e] @ x[t])
            torch.testing.assert_close(out[t, j], wd[e] @ h, rtol=1e-4, atol=1e-5)


def test_bad_shapes_and_device_raise():
    (x, lg, wg, wu, wd), _ = _inputs(4, 2, 16, 16, False, torch.float32)
    with pytest.raises(ValueError, match="top_k=3"):
        moe_ffn(x, lg, wg, wu, wd, top_k=3)
    with pytest.raises(ValueError, match="w_down"):
        moe_ffn(x, lg, wg, wu, wd.transpose(1, 2)[:, :8], top_k=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: realistic sizes on the compiled Triton path")
def test_cuda_bf16_realistic_shape():
    inputs, dy = _inputs(1000, 4, 256, 512, False, torch.bfloat16)
    inputs32 = [t.detach().float().requires_grad_() for t in inputs]
    exact = _run(moe_ffn_reference, inputs32, dy.float(), 2)
    torch_bf16 = _run(moe_ffn_reference, inputs, dy, 2)
    ours = _run(moe_ffn, inputs, dy, 2)
    for name, o, t, e in zip(NAMES, ours, torch_bf16, exact, strict=True):
        err_ours, err_torch = (o.float() - e).abs().max().item(), (t.float() - e).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-2 * e.abs().max().item(), name
