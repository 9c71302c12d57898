"""MTA kernel: forward and every gradient vs the materialised reference, over shapes x kernels x dtypes.

Triton runs under TRITON_INTERPRET=1 on CPU (set before triton is imported; tests/kernels/conftest.py does the
same when it exists). Tolerances: fp32 absolute/relative; bf16 by the rule of spec/style.md §11.2 (the kernel's
error vs an fp32 reference <= 2 x PyTorch's own bf16 error + atol).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

from loopwright.kernels import mta  # noqa: E402
from loopwright.kernels.mta import (  # noqa: E402
    mta_attention,
    mta_attention_blockwise,
    mta_attention_reference,
    mta_band_width,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_ACTIVE = torch.cuda.is_available() or mta._interpreting()
needs_triton = pytest.mark.skipif(
    not TRITON_ACTIVE, reason="triton was imported without TRITON_INTERPRET=1 and there is no CUDA device"
)


def _kernel(H: int, c_q: int, c_k: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """'identity' = 1 at the current query / centre key tap (MTA's identity init); 'random' = N(0, 0.5^2)."""
    if kind == "identity":
        theta = torch.zeros(H, c_q, c_k)
        theta[:, c_q - 1, (c_k - 1) // 2] = 1.0
        return theta
    return torch.randn(H, c_q, c_k, generator=gen) * 0.5


def _inputs(B, H, L, D, c_q, c_k, kind, mix, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(B, H, L, D, generator=gen) for _ in range(3)]
    theta = _kernel(H, c_q, c_k, kind, gen)
    head_mix = torch.eye(H) + 0.3 * torch.randn(H, H, generator=gen) if mix else None
    grad_out = torch.randn(B, H, L, D, generator=gen)
    return qkv, theta, head_mix, grad_out


def _run(fn, qkv, theta, head_mix, grad_out, dtype, **kw):
    """Output and gradients (q, k, v, kq_kernel[, head_mix]) in fp32, computed with inputs cast to dtype."""
    leaves = [x.to(DEVICE, dtype).requires_grad_() for x in qkv]
    theta_ = theta.to(DEVICE, dtype).requires_grad_()
    mix_ = None if head_mix is None else head_mix.to(DEVICE, dtype).requires_grad_()
    out = fn(*leaves, theta_, mix_, **kw)
    wrt = [*leaves, theta_] + ([mix_] if mix_ is not None else [])
    grads = torch.autograd.grad(out, wrt, grad_out.to(DEVICE, dtype))
    return [out.float().cpu()] + [g.float().cpu() for g in grads]


NAMES = ["out", "dq", "dk", "dv", "dkernel", "dhead_mix"]


def _assert_close_fp32(got, ref, rtol=2e-4, atol=2e-5):
    for name, g, r in zip(NAMES, got, ref, strict=False):
        err = (g - r).abs()
        bound = atol + rtol * r.abs().max().item()
        assert err.max().item() <= bound, (
            f"{name}: max err {err.max().item():.3e} (mean {err.mean().item():.3e}) > {bound:.3e}; "
            f"ref max |x| {r.abs().max().item():.3e}"
        )


def _assert_within_torch_error(got, torch_lowp, ref32, factor=2.0, atol=1e-2):
    for name, g, t, r in zip(NAMES, got, torch_lowp, ref32, strict=False):
        err = (g - r).abs().max().item()
        err_torch = (t - r).abs().max().item()
        bound = factor * err_torch + atol * max(1.0, r.abs().max().item())
        assert err <= bound, (
            f"{name}: kernel max err {err:.3e} > {factor} x torch bf16 err {err_torch:.3e} + atol "
            f"(bound {bound:.3e}, ref max |x| {r.abs().max().item():.3e})"
        )


# (B, H, L, D, c_q, c_k, kernel kind, head mixing): odd L, L=1, one- to four-tile L (interpreter tile 32),
# c_q x c_k in {3x5, 2x3, 1x1}, identity and random kernels, with and without head mixing.
FP32_GRID = [
    (1, 2, 1, 16, 3, 5, "random", False),
    (2, 2, 7, 16, 3, 5, "random", True),
    (1, 3, 33, 32, 3, 5, "random", False),
    (2, 4, 64, 16, 3, 5, "random", True),
    (1, 2, 33, 16, 2, 3, "identity", True),
    (2, 2, 64, 32, 2, 3, "random", False),
    (1, 4, 7, 32, 1, 1, "random", True),
    (1, 2, 64, 16, 1, 1, "identity", False),
    (2, 3, 33, 16, 3, 5, "identity", False),
    (1, 2, 97, 16, 3, 5, "random", True),  # L > 2 tiles: key/query tiles entirely below the band run unmasked
    (2, 2, 80, 16, 2, 3, "random", False),
]


@needs_triton
@pytest.mark.parametrize("B,H,L,D,c_q,c_k,kind,mix", FP32_GRID)
def test_triton_fp32_matches_reference(B, H, L, D, c_q, c_k, kind, mix):
    case = _inputs(B, H, L, D, c_q, c_k, kind, mix, torch.float32)
    ref = _run(mta_attention_reference, *case, torch.float32)
    got = _run(mta_attention, *case, torch.float32)
    _assert_close_fp32(got, ref)


@pytest.mark.parametrize("B,H,L,D,c_q,c_k,kind,mix", FP32_GRID + [(2, 3, 130, 16, 6, 11, "random", True)])
@pytest.mark.parametrize("block", [16, 64])
def test_blockwise_fp32_matches_reference(B, H, L, D, c_q, c_k, kind, mix, block):
    """The PyTorch tiling of the same algorithm (incl. the paper's 6x11 kernel at L=130, spec §2.5 gate)."""
    case = _inputs(B, H, L, D, c_q, c_k, kind, mix, torch.float32, seed=1)
    ref = _run(mta_attention_reference, *case, torch.float32)
    got = _run(mta_attention_blockwise, *case, torch.float32, block=block)
    _assert_close_fp32(got, ref)


BF16_GRID = [
    (2, 2, 33, 16, 3, 5, "random", True),
    (1, 3, 64, 32, 2, 3, "random", False),
    (1, 2, 7, 16, 1, 1, "identity", False),
]


@needs_triton
@pytest.mark.parametrize("B,H,L,D,c_q,c_k,kind,mix", BF16_GRID)
def test_triton_bf16_within_twice_torch_error(B, H, L, D, c_q, c_k, kind, mix):
    case = _inputs(B, H, L, D, c_q, c_k, kind, mix, torch.float32, seed=2)
    ref32 = _run(mta_attention_reference, *case, torch.float32)
    torch_bf16 = _run(mta_attention_reference, *case, torch.bfloat16)
    got = _run(mta_attention, *case, torch.bfloat16)
    _assert_within_torch_error(got, torch_bf16, ref32)


@pytest.mark.parametrize("B,H,L,D,c_q,c_k,kind,mix", BF16_GRID)
def test_blockwise_bf16_within_twice_torch_error(B, H, L, D, c_q, c_k, kind, mix):
    case = _inputs(B, H, L, D, c_q, c_k, kind, mix, torch.float32, seed=3)
    ref32 = _run(mta_attention_reference, *case, torch.float32)
    torch_bf16 = _run(mta_attention_reference, *case, torch.bfloat16)
    got = _run(mta_attention_blockwise, *case, torch.bfloat16, block=16)
    _assert_within_torch_error(got, torch_bf16, ref32)


@needs_triton
@pytest.mark.parametrize("c_q,c_k", [(3, 5), (1, 1)])
def test_identity_kernel_equals_causal_sdpa(c_q, c_k):
    """Identity kernel, no head mixing: MTA is plain causal attention."""
    (q, k, v), theta, _, _ = _inputs(2, 2, 33, 16, c_q, c_k, "identity", False, torch.float32, seed=4)
    q, k, v, theta = (x.to(DEVICE) for x in (q, k, v, theta))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    for fn in (mta_attention, mta_attention_reference, mta_attention_blockwise):
        torch.testing.assert_close(fn(q, k, v, theta), expected, rtol=1e-5, atol=1e-5)


@needs_triton
def test_triton_non_contiguous_inputs():
    """(B, L, H, D) tensors transposed to (B, H, L, D) views, as attention modules pass them."""
    gen = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 19, 2, 16, generator=gen).to(DEVICE).transpose(1, 2) for _ in range(3))
    theta = torch.randn(2, 2, 3, generator=gen).to(DEVICE)
    torch.testing.assert_close(mta_attention(q, k, v, theta), mta_attention_reference(q, k, v, theta),
                               rtol=1e-4, atol=1e-5)


def test_band_is_needed():
    """The shifted-product form alone is wrong next to the diagonal (spec §2.4): the band carries real work."""
    (q, k, v), theta, mix, _ = _inputs(1, 2, 24, 16, 3, 5, "random", True, torch.float32, seed=5)
    W = mta_band_width(3, 5)
    assert W == 4
    qc, kc, band = mta._prepare(q, k, theta, mix, 16**-0.5)
    naive_BHLL = torch.einsum("gh,bhik,bhjk->bgij", mix, qc, kc.float())
    i = torch.arange(24)
    diff = (band - torch.stack([naive_BHLL[..., i, (i - d).clamp(min=0)] for d in range(W)], -1)).abs()
    assert diff[..., W:, :].max() > 1e-2  # rows where all W band cells exist


def test_scale_argument_is_used():
    (q, k, v), theta, mix, _ = _inputs(1, 2, 9, 16, 2, 3, "random", True, torch.float32, seed=6)
    a = mta_attention_blockwise(q, k, v, theta, mix, scale=0.3)
    torch.testing.assert_close(a, mta_attention_reference(q, k, v, theta, mix, scale=0.3), rtol=1e-5, atol=1e-5)
    assert (a - mta_attention_reference(q, k, v, theta, mix)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "theta_shape,mix_shape,match",
    [((2, 3, 4), None, "c_k must be odd"), ((3, 3, 5), None, "kq_kernel must be"), ((2, 3, 5), (2, 3), "head_mix")],
)
def test_bad_shapes_raise(theta_shape, mix_shape, match):
    q = torch.randn(1, 2, 5, 16)
    mix = None if mix_shape is None else torch.randn(*mix_shape)
    for fn in (mta_attention, mta_attention_reference, mta_attention_blockwise):
        with pytest.raises(ValueError, match=match):
            fn(q, q, q, torch.randn(*theta_shape), mix)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only: checks the CPU fallback dispatch")
def test_cpu_without_interpreter_uses_blockwise(monkeypatch):
    monkeypatch.setattr(mta, "_interpreting", lambda: False)
    called = []
    monkeypatch.setattr(mta._TritonMTA, "apply", lambda *a: called.append(1))
    (q, k, v), theta, mix, _ = _inputs(1, 2, 9, 16, 2, 3, "random", True, torch.float32)
    out = mta_attention(q, k, v, theta, mix)
    assert not called
    torch.testing.assert_close(out, mta_attention_reference(q, k, v, theta, mix), rtol=1e-5, atol=1e-5)


_AOT_SCRIPT = """
import os, re, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from loopwright.kernels import mta

FP32 = {"BAND", "LSE", "DELTA", "DQC", "DKC", "DV_", "DBAND", "DMIX"}
BF16 = {"QC", "KC", "V", "OUT", "MIX", "DO"}
bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
for fn, extra in [(mta._mta_forward_kernel, {}), (mta._mta_backward_kernel, {"HP": 4})]:
    c = dict(NSRC=4, HAS_MIX=True, HAS_BAND=True, BM=64, BN=64, BK=64, BD=64, PREC="tf32", UPCAST=False, **extra)
    sig = {n: "constexpr" if n in c else "*fp32" if n in FP32 else "*bf16" if n in BF16 else "i32"
           for n in fn.arg_names}
    # runtime specialisation: pointers and most ints are multiples of 16 (W and the band row stride are not)
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
             if sig[n] != "constexpr" and n not in ("W", "s_bl")}
    warps = mta._num_warps("bwd" if extra else "fwd", 64)
    k = triton.compile(ASTSource(fn, sig, constexprs=c, attrs=attrs), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=warps, num_stages=2))
    ptx = os.path.join(sys.argv[1], fn.__name__ + ".ptx")
    open(ptx, "w").write(k.asm["ptx"])
    for name in ("ptxas-blackwell", "ptxas"):  # the newer ptxas accepts the PTX version triton emits
        res = subprocess.run([os.path.join(bindir, name), "-v", "--gpu-name", "sm_90a", ptx, "-o", ptx + ".cubin"],
                             capture_output=True, text=True)
        if res.returncode == 0:
            spills = re.search(r"(\\d+) bytes spill stores", res.stderr)
            print("SPILLS", fn.__name__, spills.group(1) if spills else "?")
            break
print("compiled")
"""


def test_kernels_compile_for_sm90(tmp_path):
    """AOT-compile the bf16 forward and backward kernels for an H100 (sm_90), without a GPU, and check with
    ptxas -v that the launch configuration does not spill registers (catches what the interpreter cannot)."""
    import re
    import subprocess
    import sys

    script = tmp_path / "aot.py"
    script.write_text(_AOT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0 and "compiled" in res.stdout, res.stderr[-3000:]
    spills = dict(re.findall(r"SPILLS (\S+) (\S+)", res.stdout))
    assert spills, f"ptxas -v gave no report: {res.stdout[-1000:]}"
    assert all(v == "0" for v in spills.values()), f"register spills (bytes of spill stores): {spills}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mix", [False, True])
def test_gpu_bf16_paper_kernel(mix):
    """6x11 kernel (830M config), L=512, d=64 on the GPU: bf16 within 2x PyTorch's error, every gradient."""
    case = _inputs(2, 4, 512, 64, 6, 11, "random", mix, torch.float32, seed=7)
    ref32 = _run(mta_attention_reference, *case, torch.float32)
    torch_bf16 = _run(mta_attention_reference, *case, torch.bfloat16)
    got = _run(mta_attention, *case, torch.bfloat16)
    _assert_within_torch_error(got, torch_bf16, ref32)
