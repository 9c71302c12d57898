"""Kernel benchmark (a script, not a test): MTA, CoPE and MoE kernels vs reference, SDPA and the naive code.

GPU mode (CUDA available; spec/performance.md §1, §2.6, §3.5, §4.4): per kernel and shape, in one process, with
identical bf16 inputs, the correctness gate first (kernel error vs an fp32 reference <= 2 x PyTorch's bf16 error
+ atol, output and every gradient; a kernel that fails reports no time), then forward, backward and fwd+bwd
times with CUDA events (warm-ups, then repeats interleaved round-robin over the implementations, L2 flushed
between repeats; median and p20/p80), analytic TFLOP/s ("useful" = FlashAttention's causal formula, "actual" =
the FLOPs the kernel really does), peak memory above the inputs, and the ratios ours/reference, ours/SDPA,
ours/naive. One JSON line per result on stdout and in ``--out``; the last stdout line is a JSON summary
of the issue's targets.

    python tests/bench/kernels.py --out /tmp/kernels.jsonl              # on the GPU machine (~3-5 min)

Implementations: MTA ours = ``kernels.mta.mta_attention``; reference = ``mta_attention_reference`` (the kernel
module's materialised L x L); naive = ``modeling.mta.reference.mta_attention_vectorised`` (the RAM-style
official form). CoPE ours = ``kernels.cope.cope_attention``; reference = ``cope_attention_reference``; naive =
``modeling.cope.attention.cope_attention_torch`` (official vectorised form). MoE ours = ``kernels.moe.moe_ffn``;
reference = ``moe_ffn_reference`` (per-expert loop); dense = a SwiGLU FFN of width top_k x F over all tokens
(the same FLOPs). SDPA = ``F.scaled_dot_product_attention(is_causal=True)`` with the flash backend. A kernel
module that is missing or fails to import is skipped with the reason printed.

CPU mode (no CUDA, or ``--cpu``): peak-memory scaling of the fused/blockwise paths vs the naive path,
peak(L=1024) / peak(L=512) (issue 9: <= 2.2 for fused, ~4 for naive). Each measurement runs in a fresh
subprocess (one torch thread, ``MALLOC_MMAP_THRESHOLD_=131072`` so glibc returns every freed large block to the
OS and resident memory tracks live tensors): one warm-up call at the same shape, then the peak RSS is reset
(``/proc/self/clear_refs`` = 5) and the measured call's peak is ``VmHWM - VmRSS`` before the call. This counts
everything the call makes resident (tensors, autograd buffers, conv scratch, allocator slack), not a model of
it; ``torch.profiler``'s memory events were not usable for CPU peaks in torch 2.13 (allocation events missing).
``--record`` appends the ratios to docs/results.md.

    python tests/bench/kernels.py --cpu [--record]

``--smoke`` runs the GPU-mode harness on CPU with tiny shapes (harness check only; times meaningless).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]

from loopwright.sdk.artifacts import machine_label as machine  # noqa: E402

PEAK_TFLOPS = 790.0  # the project's measured H100 bf16 matmul rate (spec/performance.md §0)
MUFU_PER_S = 3.86e12  # H100 special-function throughput estimate (spec/performance.md §0)


# ------------------------------------------------------------------------------------------------ environment




def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        out["triton"] = f"unavailable: {exc}"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def _import(module: str, *names: str):
    """Import names from a loopwright module; returns (objects, None) or (None, reason)."""
    try:
        mod = __import__(f"loopwright.{module}", fromlist=list(names))
        return [getattr(mod, n) for n in names], None
    except Exception as exc:  # noqa: BLE001
        return None, f"{module}: {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------------ GPU timing


class _Timer:
    """CUDA events on a GPU; perf_counter on CPU (smoke runs only)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self._flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=device) if self.cuda else None

    def flush(self) -> None:
        if self._flush is not None:
            self._flush.zero_()

    def run(self, fn: Callable[[], None], before: Callable[[], None] | None = None) -> float:
        """ms of fn(); ``before`` runs untimed first (e.g. the forward of a backward measurement)."""
        self.flush()
        if before is not None:
            before()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def _percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]


class Case:
    """One shape: leaves (inputs needing grad), dout, and implementations name -> forward callable."""

    def __init__(self, leaves: list[torch.Tensor], dout: torch.Tensor, impls: dict[str, Callable[[], torch.Tensor]]):
        self.leaves, self.dout, self.impls = leaves, dout, impls

    def zero_grad(self) -> None:
        for x in self.leaves:
            x.grad = None

    def modes(self, name: str) -> dict[str, tuple[Callable[[], None], Callable[[], None] | None]]:
        fn = self.impls[name]
        held: dict[str, torch.Tensor] = {}

        def fwd():
            with torch.no_grad():
                fn()

        def make_graph():
            self.zero_grad()
            held["out"] = fn()

        def bwd():
            held.pop("out").backward(self.dout)

        def fwdbwd():
            fn().backward(self.dout)

        return {"fwd": (fwd, None), "bwd": (bwd, make_graph), "fwdbwd": (fwdbwd, self.zero_grad)}


def time_case(case: Case, timer: _Timer, warmup: int, repeats: int) -> dict[tuple[str, str], list[float] | str]:
    """Round-robin over implementations and modes; an implementation that runs out of memory is dropped."""
    results: dict[tuple[str, str], list[float] | str] = {}
    live = list(case.impls)
    for rep in range(warmup + repeats):
        for name in list(live):
            for mode, (fn, before) in case.modes(name).items():
                try:
                    ms = timer.run(fn, before)
                except Exception as exc:  # noqa: BLE001 - OOM or a failing implementation: drop it, keep the rest
                    live.remove(name)
                    status = "oom" if isinstance(exc, torch.cuda.OutOfMemoryError) else f"error: {exc!r}"[:300]
                    for m in ("fwd", "bwd", "fwdbwd"):
                        results[(name, m)] = status
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    break
                if rep >= warmup:
                    results.setdefault((name, mode), []).append(ms)
        case.zero_grad()
    return results


def peak_memory(case: Case, name: str) -> dict[str, int | None]:
    """Peak bytes above what was allocated before the call: forward (no grad) and fwd+bwd."""
    if not torch.cuda.is_available():
        return {"peak_fwd_bytes": None, "peak_fwdbwd_bytes": None}
    out = {}
    for mode, (fn, before) in case.modes(name).items():
        if mode == "bwd":
            continue
        try:
            if before:
                before()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            out[f"peak_{mode}_bytes"] = torch.cuda.max_memory_allocated() - base
        except torch.cuda.OutOfMemoryError:
            out[f"peak_{mode}_bytes"] = None
            torch.cuda.empty_cache()
    case.zero_grad()
    return out


def outputs_and_grads(fn: Callable[..., torch.Tensor], tensors: list[torch.Tensor], dout: torch.Tensor,
                      dtype: torch.dtype) -> list[torch.Tensor]:
    leaves = [t.detach().to(dtype).requires_grad_(t.is_floating_point()) for t in tensors]
    out = fn(*leaves)
    wrt = [x for x in leaves if x.requires_grad]
    grads = torch.autograd.grad(out, wrt, dout.to(dtype), allow_unused=True)
    return [out.float()] + [torch.zeros_like(w, dtype=torch.float32) if g is None else g.float()
                            for g, w in zip(grads, wrt, strict=True)]


def gate(ours: Callable, reference: Callable, tensors: list[torch.Tensor], dout: torch.Tensor,
         atol: float = 1e-2) -> tuple[bool, str]:
    """spec/style.md §11.2: err(ours, bf16) <= 2 x err(reference, bf16) + atol, both vs the fp32 reference."""
    try:
        ref32 = outputs_and_grads(reference, tensors, dout, torch.float32)
        ref16 = outputs_and_grads(reference, tensors, dout, torch.bfloat16)
        got = outputs_and_grads(ours, tensors, dout, torch.bfloat16)
    except Exception as exc:  # noqa: BLE001 - a kernel that cannot run reports no time, the others go on
        return False, f"{type(exc).__name__}: {exc}"
    notes, ok = [], True
    for i, (g, t, r) in enumerate(zip(got, ref16, ref32, strict=True)):
        err, err_t = (g - r).abs().max().item(), (t - r).abs().max().item()
        bound = 2 * err_t + atol * max(1.0, r.abs().max().item())
        ok &= math.isfinite(err) and err <= bound
        notes.append(f"{'out' if i == 0 else f'grad{i}'}: {err:.2e} vs torch {err_t:.2e}")
    return ok, "; ".join(notes)


def emit(rec: dict, out_path: Path | None) -> None:
    line = json.dumps(rec, sort_keys=True)
    print(line, flush=True)
    if out_path is not None:
        with out_path.open("a") as f:
            f.write(line + "\n")


def report_case(kernel: str, shape: dict, case: Case, results: dict, flops: dict[str, dict[str, float]],
                gate_info: dict, out_path: Path | None, env: dict, extra: dict | None = None) -> dict:
    """One JSON record per (implementation, mode); returns {(impl, mode): median ms}."""
    med = {k: statistics.median(v) for k, v in results.items() if isinstance(v, list)}
    for (name, mode), ms_list in sorted(results.items()):
        rec = {"kernel": kernel, "impl": name, "mode": mode, "shape": shape, "dtype": "bf16", **gate_info, **env}
        if isinstance(ms_list, str):
            rec["status"] = ms_list
            emit(rec, out_path)
            continue
        ms = med[(name, mode)]
        rec.update(status="ok", ms_median=round(ms, 4), ms_p20=round(_percentile(ms_list, 0.2), 4),
                   ms_p80=round(_percentile(ms_list, 0.8), 4), repeats=len(ms_list))
        for label, per_impl in flops.items():
            f = (per_impl.get(name) or per_impl.get("*") or {}).get(mode)
            if f:
                rec[f"tflops_{label}"] = round(f / (ms * 1e-3) / 1e12, 2)
                rec[f"pct_of_{int(PEAK_TFLOPS)}_{label}"] = round(100 * f / (ms * 1e-3) / 1e12 / PEAK_TFLOPS, 1)
        for other in ("reference", "sdpa", "naive", "dense"):
            if (other, mode) in med and name != other:
                rec[f"ratio_vs_{other}"] = round(ms / med[(other, mode)], 3)
        if extra:
            rec.update(extra.get(name, {}))
        if mode == "fwdbwd":
            rec.update(peak_memory(case, name))
        emit(rec, out_path)
        print(f"# {kernel:4s} {name:9s} {mode:6s} {json.dumps(shape)}: {ms:9.3f} ms"
              + "".join(f"  {k}={v}" for k, v in rec.items() if k.startswith(("ratio", "tflops"))), flush=True)
    return med


# ------------------------------------------------------------------------------------------------ GPU: MTA


def mta_cases(smoke: bool) -> list[dict]:
    if smoke:
        return [dict(B=1, H=2, L=64, D=16, cq=3, ck=5, mix=False), dict(B=1, H=2, L=64, D=16, cq=3, ck=5, mix=True)]
    cases = []
    for D in (64, 128):
        for L in (1024, 2048, 4096):
            cases.append(dict(B=2, H=8, L=L, D=D, cq=6, ck=11, mix=False))  # pre-conv, paper kernel (r = 6)
    cases.append(dict(B=2, H=8, L=4096, D=64, cq=3, ck=5, mix=False))      # smaller kernel
    cases.append(dict(B=4, H=16, L=2048, D=96, cq=6, ck=11, mix=True))     # 830M config: 6x11 + pre-sm head mix
    return cases


def bench_mta(args, timer, device, env, out_path, summary) -> None:
    got, why = _import("kernels.mta", "mta_attention", "mta_attention_reference")
    if got is None:
        print(f"# skip MTA: {why}")
        return
    mta_attention, mta_reference = got
    naive_got, naive_why = _import("modeling.mta.reference", "mta_attention_vectorised")
    if naive_got is None:
        print(f"# MTA naive path unavailable ({naive_why}); timing without it")
    gated: set[tuple] = set()
    for cfg in mta_cases(args.smoke):
        _mta_config(cfg, mta_attention, mta_reference, naive_got, gated, args, timer, device, env, out_path, summary)
        if device == "cuda":
            torch.cuda.empty_cache()


def _mta_config(cfg, mta_attention, mta_reference, naive_got, gated, args, timer, device, env, out_path,
                summary) -> None:
    B, H, L, D, cq, ck, mix = (cfg[k] for k in ("B", "H", "L", "D", "cq", "ck", "mix"))
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, do = (torch.randn(B, H, L, D, generator=gen).to(device, torch.bfloat16) for _ in range(4))
    theta = (torch.randn(H, cq, ck, generator=gen) * 0.3).to(device, torch.bfloat16)
    head_mix = (torch.eye(H) + 0.1 * torch.randn(H, H, generator=gen)).to(device, torch.bfloat16) if mix else None
    leaves = [x.requires_grad_() for x in (q, k, v, theta)] + ([head_mix.requires_grad_()] if mix else [])
    key = (H, D, cq, ck, mix)
    if key not in gated:  # correctness gate at a small L with the same heads / dims / kernel
        Lg = min(L, 256)
        tens = [x.detach()[:, :, :Lg].float() for x in (q, k, v)] + [theta.detach().float()]
        tens += [head_mix.detach().float()] if mix else []
        ok, note = gate(lambda *t: mta_attention(*t[:4], t[4] if mix else None),
                        lambda *t: mta_reference(*t[:4], t[4] if mix else None), tens,
                        do.detach()[:, :, :Lg].float())
        gated.add(key)
        print(f"# MTA gate {cfg}: {'PASS' if ok else 'FAIL'} ({note})", flush=True)
        if not ok:
            summary.setdefault("gate_failures", []).append({"kernel": "mta", **cfg, "note": note})
            return
    impls = {
        "ours": lambda: mta_attention(q, k, v, theta, head_mix),
        "reference": lambda: mta_reference(q, k, v, theta, head_mix),
        "sdpa": lambda: _sdpa(q, k, v),
    }
    if naive_got is not None:
        impls["naive"] = lambda: naive_got[0](q, k, v, pre_kernel_HQK=theta, pre_head_mix_HH=head_mix)[0]
    case = Case(leaves, do, impls)
    res = time_case(case, timer, args.warmup, args.repeats)
    elems = B * H * L * L / 2
    fa = {"fwd": 4 * elems * D, "bwd": 10 * elems * D, "fwdbwd": 14 * elems * D}
    nsrc = H if mix else 1
    ours_actual = {"fwd": elems * (2 * cq * D * nsrc + 2 * D), "bwd": elems * (6 * cq * D * nsrc + 4 * D)}
    ours_actual["fwdbwd"] = ours_actual["fwd"] + ours_actual["bwd"]
    med = report_case("mta", cfg, case, res, {"useful": {"*": fa}, "actual": {"ours": ours_actual}},
                      {"gate": "pass"}, out_path, env)
    _mta_targets(cfg, med, summary)


def _sdpa(q, k, v):
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _mta_targets(cfg, med, summary) -> None:
    t = summary.setdefault("mta", [])
    row = {**cfg}
    if ("ours", "fwd") in med and ("sdpa", "fwd") in med:
        row["fwd_over_sdpa"] = round(med[("ours", "fwd")] / med[("sdpa", "fwd")], 3)
    if ("ours", "bwd") in med and ("sdpa", "bwd") in med:
        row["bwd_over_sdpa"] = round(med[("ours", "bwd")] / med[("sdpa", "bwd")], 3)
    if ("ours", "fwdbwd") in med and ("naive", "fwdbwd") in med:
        row["naive_over_ours_fwdbwd"] = round(med[("naive", "fwdbwd")] / med[("ours", "fwdbwd")], 2)
    t.append(row)


# ------------------------------------------------------------------------------------------------ GPU: CoPE


def bench_cope(args, timer, device, env, out_path, summary) -> None:
    got, why = _import("kernels.cope", "cope_attention", "cope_attention_reference")
    if got is None:
        print(f"# skip CoPE: {why}")
        return
    cope_attention, cope_reference = got
    naive_got, naive_why = _import("modeling.cope.attention", "cope_attention_torch")
    if naive_got is None:
        print(f"# CoPE naive path unavailable ({naive_why}); timing without it")
    shapes = ([dict(B=1, H=2, L=64, D=16, npos=16)] if args.smoke else
              [dict(B=2, H=8, L=L, D=D, npos=64) for D in (64, 128) for L in (1024, 2048, 4096)])
    gated: set[tuple] = set()
    for cfg in shapes:
        _cope_config(cfg, cope_attention, cope_reference, naive_got, gated, args, timer, device, env, out_path,
                     summary)
        if device == "cuda":
            torch.cuda.empty_cache()


def _cope_config(cfg, cope_attention, cope_reference, naive_got, gated, args, timer, device, env, out_path,
                 summary) -> None:
    B, H, L, D, P = (cfg[k] for k in ("B", "H", "L", "D", "npos"))
    gen = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, do = (torch.randn(B, H, L, D, generator=gen).to(device, torch.bfloat16) for _ in range(4))
    pos = (torch.randn(D, P, generator=gen) * 0.1).to(device, torch.bfloat16)
    leaves = [x.requires_grad_() for x in (q, k, v, pos)]
    if (H, D, P) not in gated:
        Lg = min(L, 256)
        tens = [x.detach()[:, :, :Lg].float() for x in (q, k, v)] + [pos.detach().float()]
        ok, note = gate(lambda *t: cope_attention(*t, npos_max=P), lambda *t: cope_reference(*t, npos_max=P),
                        tens, do.detach()[:, :, :Lg].float())
        gated.add((H, D, P))
        print(f"# CoPE gate {cfg}: {'PASS' if ok else 'FAIL'} ({note})", flush=True)
        if not ok:
            summary.setdefault("gate_failures", []).append({"kernel": "cope", **cfg, "note": note})
            return
    impls = {
        "ours": lambda: cope_attention(q, k, v, pos, npos_max=P),
        "reference": lambda: cope_reference(q, k, v, pos, npos_max=P),
        "sdpa": lambda: _sdpa(q, k, v),
    }
    if naive_got is not None:
        allowed = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]
        impls["naive"] = lambda: naive_got[0](q, k, v, pos, npos_max=P, allowed_B1LS=allowed)[0]
    case = Case(leaves, do, impls)
    res = time_case(case, timer, args.warmup, args.repeats)
    elems = B * H * L * L / 2
    fa = {"fwd": 4 * elems * D, "bwd": 10 * elems * D, "fwdbwd": 14 * elems * D}
    mufu_ms = elems / MUFU_PER_S * 2 * 1e3  # sigmoid + softmax exp: the forward's MUFU floor (§3.3)
    med = report_case("cope", cfg, case, res, {"useful": {"*": fa}}, {"gate": "pass"}, out_path, env,
                      extra={"ours": {"mufu_floor_fwd_ms": round(mufu_ms, 4)}})
    row = {**cfg}
    if ("ours", "fwd") in med and ("sdpa", "fwd") in med:
        row["fwd_over_sdpa"] = round(med[("ours", "fwd")] / med[("sdpa", "fwd")], 3)
    if ("ours", "fwdbwd") in med and ("naive", "fwdbwd") in med:
        row["naive_over_ours_fwdbwd"] = round(med[("naive", "fwdbwd")] / med[("ours", "fwdbwd")], 2)
    summary.setdefault("cope", []).append(row)


# ------------------------------------------------------------------------------------------------ GPU: MoE


def _dense_swiglu(x_TD, w_gate_FD, w_up_FD, w_down_DF):
    return F.linear(F.silu(F.linear(x_TD, w_gate_FD)) * F.linear(x_TD, w_up_FD), w_down_DF)


def bench_moe(args, timer, device, env, out_path, summary) -> None:
    got, why = _import("kernels.moe", "moe_ffn", "moe_ffn_reference")
    if got is None:
        print(f"# skip MoE: {why}")
        return
    moe_ffn, moe_reference = got
    shapes = ([dict(T=64, D=32, F=64, E=4)] if args.smoke else
              [dict(T=T, D=4096, F=11008, E=4) for T in (2048, 8192)] + [dict(T=8192, D=2048, F=1408, E=64)])
    for cfg in shapes:
        _moe_config(cfg, moe_ffn, moe_reference, args, timer, device, env, out_path, summary)
        if device == "cuda":
            torch.cuda.empty_cache()


def _moe_config(cfg, moe_ffn, moe_reference, args, timer, device, env, out_path, summary) -> None:
    T, D, Fd, E = (cfg[k] for k in ("T", "D", "F", "E"))
    k_ = 8 if E == 64 else 2  # BTX: top-2 over 4 experts; fine-grained sanity point: top-8 over 64
    cfg = {**cfg, "top_k": k_}
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(T, D, generator=gen).to(device, torch.bfloat16)
    logits = torch.randn(T, E, generator=gen).to(device, torch.bfloat16)
    wg = (torch.randn(E, Fd, D, generator=gen) * D**-0.5).to(device, torch.bfloat16)
    wu = (torch.randn(E, Fd, D, generator=gen) * D**-0.5).to(device, torch.bfloat16)
    wd = (torch.randn(E, D, Fd, generator=gen) * Fd**-0.5).to(device, torch.bfloat16)
    do = torch.randn(T, D, generator=gen).to(device, torch.bfloat16)
    # dense equivalent: one SwiGLU FFN of width top_k * F on all T tokens (same FLOPs as the routed experts)
    dg = wg[:k_].reshape(k_ * Fd, D).clone()
    du = wu[:k_].reshape(k_ * Fd, D).clone()
    dd = wd[:k_].permute(1, 0, 2).reshape(D, k_ * Fd).clone()
    leaves = [t.requires_grad_() for t in (x, logits, wg, wu, wd, dg, du, dd)]
    Tg = min(T, 256)
    tens = [x.detach()[:Tg].float(), logits.detach()[:Tg].float(), wg.detach().float(), wu.detach().float(),
            wd.detach().float()]
    ok, note = gate(lambda *t: moe_ffn(*t, top_k=k_), lambda *t: moe_reference(*t, top_k=k_), tens,
                    do.detach()[:Tg].float())
    print(f"# MoE gate {cfg}: {'PASS' if ok else 'FAIL'} ({note})", flush=True)
    if not ok:
        summary.setdefault("gate_failures", []).append({"kernel": "moe", **cfg, "note": note})
        return
    impls = {
        "ours": lambda: moe_ffn(x, logits, wg, wu, wd, top_k=k_),
        "reference": lambda: moe_reference(x, logits, wg, wu, wd, top_k=k_),
        "dense": lambda: _dense_swiglu(x, dg, du, dd),
    }
    case = Case(leaves, do, impls)
    res = time_case(case, timer, args.warmup, args.repeats)
    f = 2 * 3 * T * k_ * D * Fd
    med = report_case("moe", cfg, case, res, {"useful": {"*": {"fwd": f, "bwd": 2 * f, "fwdbwd": 3 * f}}},
                      {"gate": "pass"}, out_path, env)
    row = {**cfg}
    for mode in ("fwd", "fwdbwd"):
        if ("ours", mode) in med and ("dense", mode) in med:
            row[f"{mode}_over_dense"] = round(med[("ours", mode)] / med[("dense", mode)], 3)
        if ("ours", mode) in med and ("reference", mode) in med:
            row[f"loop_over_ours_{mode}"] = round(med[("reference", mode)] / med[("ours", mode)], 3)
    summary.setdefault("moe", []).append(row)


def gpu_main(args) -> None:
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    out_path = Path(args.out) if args.out else None
    env = {**versions(), "device": machine(), "date": dt.datetime.now().isoformat(timespec="seconds")}
    print(f"# kernels benchmark on {env['device']}; torch {env['torch']}, triton {env['triton']}", flush=True)
    timer = _Timer(device)
    summary: dict = {"summary": True, "device": env["device"], "date": env["date"]}
    t0 = time.time()
    for name, fn in (("mta", bench_mta), ("cope", bench_cope), ("moe", bench_moe)):
        if name not in args.kernels:
            continue
        try:
            fn(args, timer, device, env, out_path, summary)
        except Exception as exc:  # noqa: BLE001 - one broken kernel must not hide the others' numbers
            traceback.print_exc()
            summary.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
    summary["wall_s"] = round(time.time() - t0, 1)
    targets = {
        "mta_fwd_over_sdpa_L4096_le_2.5": [r.get("fwd_over_sdpa") for r in summary.get("mta", [])
                                           if r["L"] == 4096 and r["cq"] == 6],
        "mta_naive_over_ours_fwdbwd_L2048_ge_8": [r.get("naive_over_ours_fwdbwd") for r in summary.get("mta", [])
                                                  if r["L"] == 2048],
        "cope_fwd_over_sdpa_le_3": [r.get("fwd_over_sdpa") for r in summary.get("cope", [])],
        "moe_fwdbwd_over_dense_le_1.1": [r.get("fwdbwd_over_dense") for r in summary.get("moe", [])],
    }
    summary["targets"] = targets
    if out_path is not None:
        with out_path.open("a") as f:
            f.write(json.dumps(summary, sort_keys=True) + "\n")
    print(json.dumps(summary, sort_keys=True), flush=True)


# ------------------------------------------------------------------------------------------------ CPU: memory


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _cpu_call(kernel: str, impl: str, L: int) -> Callable[[bool], None]:
    """A closure running one call (with_grad: forward + backward) on fixed seeded inputs."""
    B, H, D = 1, 4, 32
    gen = torch.Generator().manual_seed(0)
    q, k, v, do = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    if kernel == "mta":
        from loopwright.kernels import mta

        theta = torch.randn(H, 6, 11, generator=gen) * 0.3
        mix = torch.eye(H) + 0.1 * torch.randn(H, H, generator=gen)
        if impl == "fused":
            def fn(*t):
                return mta.mta_attention_blockwise(*t, block=64)
        elif impl == "reference":
            fn = mta.mta_attention_reference
        else:
            from loopwright.modeling.mta.reference import mta_attention_vectorised

            def fn(q_, k_, v_, th, w):
                return mta_attention_vectorised(q_, k_, v_, pre_kernel_HQK=th, pre_head_mix_HH=w)[0]
        extra = [theta, mix]
    else:
        from loopwright.kernels import cope

        pos = torch.randn(D, 64, generator=gen) * 0.1
        if impl == "fused":
            def fn(*t):
                return cope.cope_attention_blockwise(*t, npos_max=64, block=64)
        elif impl == "reference":
            def fn(*t):
                return cope.cope_attention_reference(*t, npos_max=64)
        else:
            from loopwright.modeling.cope.attention import cope_attention_torch

            allowed = torch.ones(L, L, dtype=torch.bool).tril()[None, None]

            def fn(*t):
                return cope_attention_torch(*t, npos_max=64, allowed_B1LS=allowed)[0]
        extra = [pos]
    leaves = [q, k, v, *extra]

    def call(with_grad: bool) -> None:
        if not with_grad:
            with torch.no_grad():
                fn(*leaves)
            return
        xs = [x.detach().requires_grad_() for x in leaves]
        fn(*xs).backward(do)

    return call


def measure_one(spec: dict) -> dict:
    """Runs in a fresh subprocess: warm-up, reset the peak RSS, measured call, VmHWM - VmRSS."""
    torch.set_num_threads(1)
    call = _cpu_call(spec["kernel"], spec["impl"], spec["L"])
    with_grad = spec["mode"] == "fwdbwd"
    call(with_grad)  # warm-up: library code paths, lazy inits
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_bytes("VmRSS")
    t0 = time.perf_counter()
    call(with_grad)
    wall = time.perf_counter() - t0
    return {**spec, "peak_bytes": _status_bytes("VmHWM") - base, "wall_s": round(wall, 3)}


CPU_PLAN = [  # (kernel, impl, modes): the fused CoPE path is forward-only memory-efficient (no custom backward)
    ("mta", "fused", ("fwd", "fwdbwd")),
    ("mta", "reference", ("fwd", "fwdbwd")),
    ("mta", "naive", ("fwd", "fwdbwd")),
    ("cope", "fused", ("fwd",)),
    ("cope", "reference", ("fwd", "fwdbwd")),
    ("cope", "naive", ("fwd", "fwdbwd")),
]


def cpu_main(args) -> None:
    out_path = Path(args.out) if args.out else None
    env = {**versions(), "device": machine(), "date": dt.date.today().isoformat()}
    lengths = args.lengths
    print(f"# CPU peak-memory scaling on {env['device']} (fresh subprocess per point, 1 thread); L = {lengths}")
    ok_mods = {}
    for kernel, mods in (("mta", ("kernels.mta", "modeling.mta.reference")),
                         ("cope", ("kernels.cope", "modeling.cope.attention"))):
        missing = [why for m in mods if (why := _import(m, "__name__")[1])]
        ok_mods[kernel] = not missing
        if missing:
            print(f"# skip {kernel}: {missing}")
    if "moe" in args.kernels:
        print("# MoE: no sequence-length memory scaling to report on CPU (its Triton path needs CUDA or the "
              "interpreter); GPU mode times it")
    rows = []
    t0 = time.time()
    for kernel, impl, modes in CPU_PLAN:
        if kernel not in args.kernels or not ok_mods.get(kernel):
            continue
        for mode in modes:
            peaks = {}
            for L in lengths:
                spec = {"kernel": kernel, "impl": impl, "mode": mode, "L": L}
                env_sub = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
                env_sub.pop("TRITON_INTERPRET", None)
                res = subprocess.run([sys.executable, __file__, "--measure-one", json.dumps(spec)],
                                     capture_output=True, text=True, env=env_sub, timeout=1800)
                if res.returncode != 0:
                    print(f"# {spec} failed: {res.stderr[-800:]}")
                    break
                rec = json.loads(res.stdout.strip().splitlines()[-1])
                peaks[L] = rec["peak_bytes"]
                emit({**rec, "shape": {"B": 1, "H": 4, "D": 32}, "method": "rss_hwm_delta_fresh_subprocess",
                      **{k: env[k] for k in ("device", "torch", "date")}}, out_path)
            if len(peaks) == len(lengths):
                ratio = peaks[lengths[-1]] / max(peaks[lengths[0]], 1)
                rows.append((kernel, impl, mode, peaks, ratio))
                print(f"# {kernel:4s} {impl:9s} {mode:6s} peak " + ", ".join(
                    f"L={L}: {peaks[L] / 2**20:.1f} MiB" for L in lengths) + f"; ratio {ratio:.2f}", flush=True)
    wall = time.time() - t0
    summary = {"summary": True, "mode": "cpu-memory", "device": env["device"], "lengths": lengths,
               "wall_s": round(wall, 1),
               "ratios": {f"{k}/{i}/{m}": round(r, 3) for k, i, m, _, r in rows}}
    if out_path is not None:
        with out_path.open("a") as f:
            f.write(json.dumps(summary, sort_keys=True) + "\n")
    if args.record and rows:
        _record(rows, env, lengths)
    print(json.dumps(summary, sort_keys=True))


def _record(rows, env, lengths) -> None:
    path = ROOT / "docs" / "results.md"
    cmd = "python tests/bench/kernels.py --cpu --record"
    lines = []
    for kernel, impl, mode, peaks, ratio in rows:
        what = {"fused": "fused/blockwise path", "reference": "materialised reference", "naive": "official-style naive"}
        lines.append(
            f"| {kernel.upper()} {what[impl]} ({'forward, no grad' if mode == 'fwd' else 'forward + backward'}): "
            f"peak memory L={lengths[-1]} / L={lengths[0]} (B=1, H=4, d=32"
            + (", 6x11 kernel, head mix" if kernel == "mta" else ", npos 64") + ") | "
            f"**{ratio:.2f}x** ({peaks[lengths[0]] / 2**20:.1f} -> {peaks[lengths[-1]] / 2**20:.1f} MiB; "
            f"fused bar <= 2.2, naive ~4) | `{cmd}` | {env['device']}, 1 thread, RSS high-water delta in a fresh "
            f"subprocess | {env['date']} | seed 0 |")
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"# appended {len(lines)} rows to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="append one JSON line per result to this JSONL file")
    ap.add_argument("--kernels", default="mta,cope,moe", type=lambda s: s.split(","))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="CPU memory-scaling mode even if CUDA is available")
    ap.add_argument("--smoke", action="store_true", help="GPU-mode harness on CPU, tiny shapes (no meaning)")
    ap.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")], default=[512, 1024])
    ap.add_argument("--record", action="store_true", help="CPU mode: append the ratios to docs/results.md")
    ap.add_argument("--measure-one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke and not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module imports triton
    if args.measure_one:
        print(json.dumps(measure_one(json.loads(args.measure_one))))
        return
    if args.smoke or (torch.cuda.is_available() and not args.cpu):
        gpu_main(args)
    else:
        cpu_main(args)


if __name__ == "__main__":
    main()
