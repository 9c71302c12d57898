"""Top-k SwiGLU mixture-of-experts FFN: token permutation + Triton grouped GEMMs, forward and backward.

The BTX MoE layer (spec/modeling.md §5.1, spec/performance.md §4): every token goes to the k experts with
the largest router logits, weighted by the softmax over all E logits renormalised over the k selected
(transformers' ``MixtralSparseMoeBlock`` routing, bit for bit the same ``softmax -> topk -> /sum`` in fp32):

    y_t = sum_{j in topk(t)} w_tj * W_down[j] (silu(W_gate[j] x_t) * W_up[j] x_t)

Algorithm (ScatterMoE-style index padding, no padded copies of activations, no host syncs):
1. routing in PyTorch (differentiable through autograd: softmax / topk / renormalise);
2. permutation: the T*k (token, slot) pairs are sorted by expert (stable ``argsort``); each expert's
   segment of the sorted order is cut into row blocks of ``BM`` rows; a block table (expert id, first row,
   end row) is built on the device with a static upper bound of ``cdiv(T*k, BM) + E`` blocks, so the
   launch grid never depends on a device->host copy;
3. grouped GEMMs (one Triton kernel, ``_grouped_rows_kernel``): rows of A are gathered through an index
   (tokens for the up-projections), multiplied by the block's expert matrix, and written to scattered rows
   (slot order for the down-projection) — gate, up and down projections in forward; dh, dx in backward;
4. per-expert weight gradients (``_grouped_wgrad_kernel``): dW[e] = sum over the rows of expert e of
   outer products, the row range read from the offsets on the device (an expert with zero tokens gets 0);
5. the k expert outputs of a token are combined with the routing weights in PyTorch, so the gradient of
   the router logits comes from autograd.

The expert computation is the ``autograd.Function`` :class:`GroupedSwiGLU` (x, expert ids, 3 weight tensors
-> per-slot expert outputs); :func:`moe_ffn` wraps routing + combine. :func:`moe_ffn_reference` is the plain
per-expert loop of transformers' Mixtral (the correctness reference, same signature).

Runs on CUDA tensors, and on CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1`` set
before ``triton`` is imported; correctness only, never timing). Accumulation is fp32; intermediates
(gate, up, SwiGLU activation) are stored in the input dtype, as PyTorch does.

Interpreter quirks handled (Triton 3.9, CPU): ``tl.dot`` mis-reads bf16 operands (they are upcast to fp32
first: exact, since a bf16 x bf16 product fits fp32) and fp32 -> bf16 stores truncate instead of rounding
to nearest even (low-precision outputs go through an fp32 buffer that PyTorch rounds). Both switches are
off on CUDA. fp32 inputs use ``input_precision="ieee"`` (no TF32), matching PyTorch's default matmul.

Memory: forward saves gate, up and the SwiGLU activation (3 x T*k x F in the input dtype) for backward,
about what autograd keeps for the per-expert loop; nothing is padded to a capacity.

Not done (known gaps): SwiGLU is applied in PyTorch between the two grouped GEMMs (not fused into the
up-projection epilogue); no autotuning (fixed block sizes); not timed on a GPU yet (no GPU was available
when this was written), so the "never slower than the loop" target of performance.md §4.3 is unverified.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

__all__ = ["GroupedSwiGLU", "moe_ffn", "moe_ffn_reference", "route_topk"]

# Shapes: T tokens, D model dim, F expert FFN dim, E experts, K top-k, S = T*K (token, slot) pairs,
# NB row blocks of the sorted order.

# Block sizes (rows per block, output columns, reduction step). Interpreter: small (each program costs ~ms).
# CUDA: a conventional untuned starting point (not autotuned; no GPU was available to tune on).
BLOCKS_INTERPRETER = (16, 32, 32, 32)  # (BM, BN, BK) of the row GEMMs, square tile of the weight gradients
BLOCKS_CUDA = (64, 128, 64, 64)


@triton.jit
def _grouped_rows_kernel(
    a_ptr, b_ptr, c_ptr,
    a_rows_ptr, c_rows_ptr,
    blk_expert_ptr, blk_start_ptr, blk_end_ptr,
    N, K,
    stride_am, stride_ak,
    stride_be, stride_bn, stride_bk,
    stride_cm, stride_cn,
    GATHER_A: tl.constexpr, SCATTER_C: tl.constexpr, ACCUMULATE: tl.constexpr, UPCAST_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """C[crow(r), n] (+)= sum_k A[arow(r), k] * B[e, n, k] for the rows r of one block of expert e."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(blk_expert_ptr + pid_m)
    if e >= 0:
        row_start = tl.load(blk_start_ptr + pid_m)
        row_end = tl.load(blk_end_ptr + pid_m)
        rows = row_start + tl.arange(0, BM)
        row_mask = rows < row_end
        if GATHER_A:
            a_rows = tl.load(a_rows_ptr + rows, mask=row_mask, other=0)
        else:
            a_rows = rows
        if SCATTER_C:
            c_rows = tl.load(c_rows_ptr + rows, mask=row_mask, other=0)
        else:
            c_rows = rows
        a_rows = a_rows.to(tl.int64)  # row * stride can pass 2**31 at LLM sizes
        c_rows = c_rows.to(tl.int64)
        e = e.to(tl.int64)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_mask = offs_n < N
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            offs_k = k0 + tl.arange(0, BK)
            k_mask = offs_k < K
            a = tl.load(
                a_ptr + a_rows[:, None] * stride_am + offs_k[None, :] * stride_ak,
                mask=row_mask[:, None] & k_mask[None, :], other=0.0,
            )
            b = tl.load(
                b_ptr + e * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None] * stride_bk,
                mask=k_mask[:, None] & n_mask[None, :], other=0.0,
            )
            if UPCAST_DOT:  # the interpreter's tl.dot mis-reads bf16 (Triton 3.9); bf16*bf16 is exact in fp32
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc += tl.dot(a, b, input_precision=PRECISION, out_dtype=tl.float32)
        c_ptrs = c_ptr + c_rows[:, None] * stride_cm + offs_n[None, :] * stride_cn
        c_mask = row_mask[:, None] & n_mask[None, :]
        if ACCUMULATE:
            acc += tl.load(c_ptrs, mask=c_mask, other=0.0).to(tl.float32)
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def _grouped_wgrad_kernel(
    p_ptr, q_ptr, w_ptr,
    p_rows_ptr, q_rows_ptr, offsets_ptr,
    M, N,
    stride_pr, stride_pm,
    stride_qr, stride_qn,
    stride_we, stride_wm, stride_wn,
    GATHER_P: tl.constexpr, GATHER_Q: tl.constexpr, UPCAST_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr,
):
    """W[e, m, n] = sum over sorted rows r of expert e of P[prow(r), m] * Q[qrow(r), n]."""
    e = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    num_n = tl.cdiv(N, BN)
    pid_m = pid // num_n
    pid_n = pid % num_n
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    m_mask = offs_m < M
    n_mask = offs_n < N
    row_start = tl.load(offsets_ptr + e)
    row_end = tl.load(offsets_ptr + e + 1)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for r0 in range(row_start, row_end, BR):
        rows = r0 + tl.arange(0, BR)
        r_mask = rows < row_end
        if GATHER_P:
            p_rows = tl.load(p_rows_ptr + rows, mask=r_mask, other=0)
        else:
            p_rows = rows
        if GATHER_Q:
            q_rows = tl.load(q_rows_ptr + rows, mask=r_mask, other=0)
        else:
            q_rows = rows
        p_rows = p_rows.to(tl.int64)
        q_rows = q_rows.to(tl.int64)
        p_t = tl.load(  # (BM, BR): P^T block
            p_ptr + p_rows[None, :] * stride_pr + offs_m[:, None] * stride_pm,
            mask=r_mask[None, :] & m_mask[:, None], other=0.0,
        )
        q = tl.load(
            q_ptr + q_rows[:, None] * stride_qr + offs_n[None, :] * stride_qn,
            mask=r_mask[:, None] & n_mask[None, :], other=0.0,
        )
        if UPCAST_DOT:
            p_t = p_t.to(tl.float32)
            q = q.to(tl.float32)
        acc += tl.dot(p_t, q, input_precision=PRECISION, out_dtype=tl.float32)
    tl.store(
        w_ptr + e * stride_we + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn,
        acc.to(w_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :],
    )


class _Plan:
    """Permutation of the S = T*K (token, slot) pairs by expert, plus the block table of the sorted order."""

    def __init__(self, expert_idx_TK: torch.Tensor, num_experts: int, dtype: torch.dtype) -> None:
        device = expert_idx_TK.device
        self.bm, self.bn, self.bk, self.bw = BLOCKS_INTERPRETER if _interpreting() else BLOCKS_CUDA
        # fp32 inputs: exact fp32 products like PyTorch's default matmul (no TF32); others: tensor cores.
        self.precision = "ieee" if dtype == torch.float32 else "tf32"
        block_m = self.bm
        T, K = expert_idx_TK.shape
        S = T * K
        expert_S = expert_idx_TK.reshape(-1)
        self.sorted_slot_S = torch.argsort(expert_S, stable=True).to(torch.int32)  # sorted pos -> slot id
        self.sorted_token_S = torch.div(self.sorted_slot_S, K, rounding_mode="floor").to(torch.int32)
        counts_E = torch.zeros(num_experts, dtype=torch.long, device=device).scatter_add_(
            0, expert_S, torch.ones_like(expert_S))  # not bincount: on CUDA it syncs to size its output
        self.offsets_E1 = torch.zeros(num_experts + 1, dtype=torch.int32, device=device)
        self.offsets_E1[1:] = torch.cumsum(counts_E, 0).to(torch.int32)
        blocks_E = torch.div(counts_E + block_m - 1, block_m, rounding_mode="floor")
        blk_cum_E = torch.cumsum(blocks_E, 0)
        # Static bound on the number of blocks (no device->host sync): sum_e ceil(c_e / BM) <= S / BM + E.
        self.num_blocks = triton.cdiv(S, block_m) + num_experts
        b_NB = torch.arange(self.num_blocks, device=device)
        blk_expert_NB = torch.searchsorted(blk_cum_E, b_NB, right=True)
        valid_NB = blk_expert_NB < num_experts
        e_safe_NB = blk_expert_NB.clamp(max=num_experts - 1)
        first_blk_NB = blk_cum_E[e_safe_NB] - blocks_E[e_safe_NB]
        self.blk_start_NB = (self.offsets_E1[e_safe_NB] + (b_NB - first_blk_NB) * block_m).to(torch.int32)
        self.blk_end_NB = self.offsets_E1[e_safe_NB + 1].to(torch.int32)
        self.blk_expert_NB = torch.where(valid_NB, blk_expert_NB, -1).to(torch.int32)
        self.S = S


def _rows_gemm(a, b_ENK_strides, b, c, plan: _Plan, *, n: int, k: int, a_rows=None, c_rows=None,
               accumulate: bool = False) -> None:
    """Launch ``_grouped_rows_kernel``; ``b_ENK_strides`` = strides of b viewed as (E, N, K)."""
    grid = (plan.num_blocks, triton.cdiv(n, plan.bn))
    dummy = plan.sorted_slot_S
    target, c = c, _interpreter_store_buffer(c)
    _grouped_rows_kernel[grid](
        a, b, c,
        a_rows if a_rows is not None else dummy, c_rows if c_rows is not None else dummy,
        plan.blk_expert_NB, plan.blk_start_NB, plan.blk_end_NB,
        n, k,
        a.stride(0), a.stride(1),
        *b_ENK_strides,
        c.stride(0), c.stride(1),
        GATHER_A=a_rows is not None, SCATTER_C=c_rows is not None, ACCUMULATE=accumulate,
        UPCAST_DOT=_interpreting(), PRECISION=plan.precision, BM=plan.bm, BN=plan.bn, BK=plan.bk,
    )
    if c is not target:
        target.copy_(c)


def _wgrad(p, q, w, plan: _Plan, *, m: int, n: int, p_rows=None, q_rows=None) -> None:
    """Launch ``_grouped_wgrad_kernel`` writing w (E, m, n)."""
    num_experts = w.shape[0]
    grid = (num_experts, triton.cdiv(m, plan.bw) * triton.cdiv(n, plan.bw))
    dummy = plan.sorted_slot_S
    target, w = w, _interpreter_store_buffer(w)
    _grouped_wgrad_kernel[grid](
        p, q, w,
        p_rows if p_rows is not None else dummy, q_rows if q_rows is not None else dummy, plan.offsets_E1,
        m, n,
        p.stride(0), p.stride(1),
        q.stride(0), q.stride(1),
        w.stride(0), w.stride(1), w.stride(2),
        GATHER_P=p_rows is not None, GATHER_Q=q_rows is not None, UPCAST_DOT=_interpreting(),
        PRECISION=plan.precision, BM=plan.bw, BN=plan.bw, BR=plan.bk,
    )
    if w is not target:
        target.copy_(w)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _interpreter_store_buffer(out: torch.Tensor) -> torch.Tensor:
    """fp32 stand-in for a low-precision output under the interpreter, which truncates fp32 -> bf16 stores
    (Triton 3.9; round-to-nearest-even on GPU); the caller copies it back, so torch rounds (RTNE)."""
    if _interpreting() and out.dtype != torch.float32:
        return out.float()
    return out


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not _interpreting():
        raise RuntimeError(
            f"moe_ffn's Triton path needs CUDA tensors (got device {x.device}); on CPU use moe_ffn_reference, "
            "or set TRITON_INTERPRET=1 before importing triton (tests only)"
        )


class GroupedSwiGLU(torch.autograd.Function):
    """(x_TD, expert_idx_TK, w_gate_EFD, w_up_EFD, w_down_EDF) -> out_TKD: expert output of each (token, slot)."""

    @staticmethod
    def forward(ctx, x_TD, expert_idx_TK, w_gate_EFD, w_up_EFD, w_down_EDF):
        T, D = x_TD.shape
        E, Fdim, _ = w_gate_EFD.shape
        K = expert_idx_TK.shape[1]
        plan = _Plan(expert_idx_TK, E, x_TD.dtype)
        S = plan.S
        dev, dt = x_TD.device, x_TD.dtype
        gate_SF = torch.empty(S, Fdim, device=dev, dtype=dt)  # sorted order
        up_SF = torch.empty(S, Fdim, device=dev, dtype=dt)
        for w, out in ((w_gate_EFD, gate_SF), (w_up_EFD, up_SF)):
            _rows_gemm(x_TD, (w.stride(0), w.stride(1), w.stride(2)), w, out, plan, n=Fdim, k=D,
                       a_rows=plan.sorted_token_S)
        h_SF = F.silu(gate_SF) * up_SF
        out_SD = torch.empty(S, D, device=dev, dtype=dt)  # slot order (row = t*K + j)
        _rows_gemm(h_SF, (w_down_EDF.stride(0), w_down_EDF.stride(1), w_down_EDF.stride(2)), w_down_EDF, out_SD,
                   plan, n=D, k=Fdim, c_rows=plan.sorted_slot_S)
        ctx.save_for_backward(x_TD, w_gate_EFD, w_up_EFD, w_down_EDF, gate_SF, up_SF, h_SF)
        ctx.plan = plan
        ctx.mark_non_differentiable(expert_idx_TK)
        return out_SD.view(T, K, D)

    @staticmethod
    def backward(ctx, d_out_TKD):
        x_TD, w_gate_EFD, w_up_EFD, w_down_EDF, gate_SF, up_SF, h_SF = ctx.saved_tensors
        plan: _Plan = ctx.plan
        T, D = x_TD.shape
        E, Fdim, _ = w_gate_EFD.shape
        S = plan.S
        dt = x_TD.dtype
        d_out_SD = d_out_TKD.reshape(S, D).to(dt).contiguous()
        # dh = d_out @ W_down[e]  (B[e, n=f, k=d] = W_down[e, d, f])
        dh_SF = torch.empty(S, Fdim, device=x_TD.device, dtype=dt)
        _rows_gemm(d_out_SD, (w_down_EDF.stride(0), w_down_EDF.stride(2), w_down_EDF.stride(1)), w_down_EDF, dh_SF,
                   plan, n=Fdim, k=D, a_rows=plan.sorted_slot_S)
        gate32, up32, dh32 = gate_SF.float(), up_SF.float(), dh_SF.float()
        sig = torch.sigmoid(gate32)
        d_gate_SF = (dh32 * up32 * sig * (1 + gate32 * (1 - sig))).to(dt)
        d_up_SF = (dh32 * gate32 * sig).to(dt)
        dx_TD = dw_gate = dw_up = dw_down = None
        if ctx.needs_input_grad[0]:
            # dx_slot = d_gate @ W_gate[e] + d_up @ W_up[e]  (B[e, n=d, k=f] = W[e, f, d]); fp32 sum over slots
            dx_SD = torch.empty(S, D, device=x_TD.device, dtype=torch.float32)
            for i, (dg, w) in enumerate(((d_gate_SF, w_gate_EFD), (d_up_SF, w_up_EFD))):
                _rows_gemm(dg, (w.stride(0), w.stride(2), w.stride(1)), w, dx_SD, plan, n=D, k=Fdim,
                           c_rows=plan.sorted_slot_S, accumulate=i == 1)
            dx_TD = dx_SD.view(T, -1, D).sum(1).to(dt)
        if ctx.needs_input_grad[4]:
            dw_down = torch.empty_like(w_down_EDF)  # (E, D, F) = sum_r d_out[slot(r)]^T h[r]
            _wgrad(d_out_SD, h_SF, dw_down, plan, m=D, n=Fdim, p_rows=plan.sorted_slot_S)
        if ctx.needs_input_grad[2]:
            dw_gate = torch.empty_like(w_gate_EFD)  # (E, F, D) = sum_r d_gate[r]^T x[token(r)]
            _wgrad(d_gate_SF, x_TD, dw_gate, plan, m=Fdim, n=D, q_rows=plan.sorted_token_S)
        if ctx.needs_input_grad[3]:
            dw_up = torch.empty_like(w_up_EFD)
            _wgrad(d_up_SF, x_TD, dw_up, plan, m=Fdim, n=D, q_rows=plan.sorted_token_S)
        return dx_TD, None, dw_gate, dw_up, dw_down


def route_topk(router_logits_TE: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixtral routing: softmax over all E logits (fp32), top-k, renormalise -> (weights_TK fp32, experts_TK)."""
    probs_TE = torch.softmax(router_logits_TE.float(), dim=-1)
    top_w_TK, top_idx_TK = torch.topk(probs_TE, top_k, dim=-1)
    top_w_TK = top_w_TK / top_w_TK.sum(dim=-1, keepdim=True)
    return top_w_TK, top_idx_TK


def _check_shapes(x_TD, router_logits_TE, w_gate_EFD, w_up_EFD, w_down_EDF, top_k) -> None:
    T, D = x_TD.shape
    E, Fdim, D2 = w_gate_EFD.shape
    problems = []
    if router_logits_TE.shape != (T, E):
        problems.append(f"router_logits {tuple(router_logits_TE.shape)} != (T={T}, E={E})")
    if D2 != D or w_up_EFD.shape != w_gate_EFD.shape:
        problems.append(f"w_gate {tuple(w_gate_EFD.shape)} / w_up {tuple(w_up_EFD.shape)} must both be (E, F, D={D})")
    if w_down_EDF.shape != (E, D, Fdim):
        problems.append(f"w_down {tuple(w_down_EDF.shape)} != (E={E}, D={D}, F={Fdim})")
    if not (x_TD.dtype == w_gate_EFD.dtype == w_up_EFD.dtype == w_down_EDF.dtype):
        problems.append(f"dtypes differ: x {x_TD.dtype}, weights {w_gate_EFD.dtype}/{w_up_EFD.dtype}/"
                        f"{w_down_EDF.dtype}; cast them to one dtype")
    if not 1 <= top_k <= E:
        problems.append(f"top_k={top_k} must be in [1, E={E}]")
    if problems:
        raise ValueError("moe_ffn shape mismatch: " + "; ".join(problems))


def moe_ffn(x_TD, router_logits_TE, w_gate_EFD, w_up_EFD, w_down_EDF, *, top_k: int = 2):
    """Top-k SwiGLU MoE FFN with the Triton grouped path; same maths as :func:`moe_ffn_reference`."""
    _check_shapes(x_TD, router_logits_TE, w_gate_EFD, w_up_EFD, w_down_EDF, top_k)
    _check_device(x_TD)
    top_w_TK, top_idx_TK = route_topk(router_logits_TE, top_k)
    if x_TD.shape[0] == 0:
        return torch.zeros_like(x_TD)
    out_TKD = GroupedSwiGLU.apply(x_TD.contiguous(), top_idx_TK, w_gate_EFD, w_up_EFD, w_down_EDF)
    y_TD = (out_TKD.float() * top_w_TK.unsqueeze(-1)).sum(1)
    return y_TD.to(x_TD.dtype)


def moe_ffn_reference(x_TD, router_logits_TE, w_gate_EFD, w_up_EFD, w_down_EDF, *, top_k: int = 2):
    """Per-expert loop (the form of transformers' ``MixtralExperts.forward``): gather, SwiGLU, weight, index_add."""
    _check_shapes(x_TD, router_logits_TE, w_gate_EFD, w_up_EFD, w_down_EDF, top_k)
    top_w_TK, top_idx_TK = route_topk(router_logits_TE, top_k)
    y_TD = torch.zeros(x_TD.shape, dtype=torch.float32, device=x_TD.device)
    for e in range(w_gate_EFD.shape[0]):
        token_idx, slot_idx = torch.where(top_idx_TK == e)
        if token_idx.numel() == 0:
            continue
        x_e = x_TD[token_idx]
        h_e = F.silu(F.linear(x_e, w_gate_EFD[e])) * F.linear(x_e, w_up_EFD[e])
        out_e = F.linear(h_e, w_down_EDF[e])
        y_TD = y_TD.index_add(0, token_idx, out_e.float() * top_w_TK[token_idx, slot_idx, None])
    return y_TD.to(x_TD.dtype)
