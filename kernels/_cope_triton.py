"""Triton kernels of one-pass causal CoPE attention (forward and backward); launched from ``kernels/cope.py``.

Imported lazily by ``kernels/cope.py`` so that importing the reference never imports Triton (the interpreter switch
``TRITON_INTERPRET=1`` must be set before Triton is imported, spec/environment.md §7).

Algorithm (spec/performance.md §3.3). Per program: one block of BLOCK_M query rows of one (batch, head). Key blocks
are visited **backwards from the diagonal**; per row the kernel carries the sum of the (masked) gates of the key
blocks already visited, so an in-tile reverse cumsum plus the carry gives the exact CoPE positions
p_ij = sum_{t=j..i} sigmoid(q_i.k_t * gate_scale). Position logits are read from the row's table
Z[i, :] = q_i E (BH x L x P in global memory, fp32 math) at floor/ceil of p and interpolated; online softmax
(order-independent) and P@V as in FlashAttention-2. Memory: O(L) besides Z (O(L x npos)).

Backward (one program per query block, two sweeps over the same key blocks):
  sweep A accumulates DP_i = sum_j dL/dp_ij (the total over the row);
  sweep B forms the forward-direction cumsum dL/dg_it = sum_{j<=t} dL/dp_ij = DP_i - sum_{j>t} dL/dp_ij with a
  running suffix carry (keys are again visited backwards), then ds = dlogit*scale + dg*g*(1-g)*gate_scale,
  dQ += ds K (owned rows, plain store), dK += ds^T Q and dV += A^T dO (atomic adds: key rows are shared between
  query-block programs), dZ[i, floor/ceil p] += interpolation weights * dlogit * pos_scale (atomic adds into the
  program's own rows: several keys of a row can hit the same position).
Gradient conventions follow PyTorch autograd of the official formula (facebookresearch/RAM,
projects/cope/src/cope/context_position.py): d pos_logit / dp = Z[ceil p] - Z[floor p] (0 at integer p), zero past
the clamp (p > npos - 1), indices carry no gradient.

``UPCAST`` (set for CPU tensors, i.e. under ``TRITON_INTERPRET=1``): q, k, v, dO are converted to fp32 after loading,
because the Triton 3.9 interpreter computes ``tl.dot`` on bf16 operands wrongly (garbage of order 1e10 in a 16x16
test). On GPUs the dots take bf16/fp16 operands with fp32 accumulation, as in FlashAttention-2.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _cope_tile(q, k_ptrs, z_rows, offs_m, offs_n, kmask, carry, L, P, gate_scale,
               PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Shared per-tile math: scores, gates, positions, interpolated position logits."""
    k = tl.load(k_ptrs, mask=kmask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=PREC)  # (BM, BN) fp32, unscaled q.k
    valid = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < L) & (offs_m[:, None] < L)
    g = tl.where(valid, tl.sigmoid(s * gate_scale), 0.0)
    raw = carry[:, None] + tl.cumsum(g, axis=1, reverse=True)
    pos = tl.minimum(raw, P - 1.0)
    pf = tl.floor(pos)
    pc = tl.ceil(pos)
    w = pos - pf
    fi = pf.to(tl.int32)
    ci = pc.to(tl.int32)
    zf = tl.load(z_rows[:, None] + fi, mask=valid, other=0.0).to(tl.float32)
    zc = tl.load(z_rows[:, None] + ci, mask=valid, other=0.0).to(tl.float32)
    pl = zc * w + zf * (1.0 - w)
    return k, s, valid, g, raw, w, fi, ci, zf, zc, pl


@triton.jit
def _cope_bwd_tile(q, do, K, V, base, z_rows, offs_m, offs_d, kb, carry, lse, delta, L, P, HEAD_D, scale,
                   gate_scale, pos_scale, BLOCK_N: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Backward recomputation for key block ``kb`` (both sweeps): probabilities a, dL/dlogit dl, dL/dpos dp."""
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = (offs_n[:, None] < L) & (offs_d[None, :] < HEAD_D)
    kv_off = base + offs_n[:, None] * HEAD_D + offs_d[None, :]
    k, s, valid, g, raw, w, fi, ci, zf, zc, pl = _cope_tile(
        q, K + kv_off, z_rows, offs_m, offs_n, kmask, carry, L, P, gate_scale, PREC, UPCAST)
    a = tl.where(valid, tl.exp(s * scale + pl * pos_scale - lse[:, None]), 0.0)
    v = tl.load(V + kv_off, mask=kmask, other=0.0)
    if UPCAST:
        v = v.to(tl.float32)
    dl = a * (tl.dot(do, tl.trans(v), input_precision=PREC) - delta[:, None])
    dp = tl.where(valid & (raw <= P - 1.0), dl * pos_scale * (zc - zf), 0.0)
    return kv_off, kmask, k, valid, g, w, fi, ci, a, dl, dp


@triton.jit
def _cope_fwd_kernel(Q, K, V, Z, Out, LSE, L, P, HEAD_D, scale, gate_scale, pos_scale,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
                     UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    base = bh * L * HEAD_D
    qmask = (offs_m[:, None] < L) & (offs_d[None, :] < HEAD_D)
    q = tl.load(Q + base + offs_m[:, None] * HEAD_D + offs_d[None, :], mask=qmask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    z_rows = Z + bh * L * P + offs_m.to(tl.int64) * P

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    carry = tl.zeros((BLOCK_M,), tl.float32)
    last = (pid_m * BLOCK_M + BLOCK_M - 1) // BLOCK_N
    for t in range(0, last + 1):
        kb = last - t
        offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
        kmask = (offs_n[:, None] < L) & (offs_d[None, :] < HEAD_D)
        kv_off = base + offs_n[:, None] * HEAD_D + offs_d[None, :]
        k, s, valid, g, raw, w, fi, ci, zf, zc, pl = _cope_tile(
            q, K + kv_off, z_rows, offs_m, offs_n, kmask, carry, L, P, gate_scale, PREC, UPCAST)
        carry += tl.sum(g, axis=1)
        logits = tl.where(valid, s * scale + pl * pos_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(logits - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + kv_off, mask=kmask, other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    o = acc / l_safe[:, None]
    tl.store(Out + base + offs_m[:, None] * HEAD_D + offs_d[None, :], o.to(Out.dtype.element_ty), mask=qmask)
    tl.store(LSE + bh * L + offs_m, m_i + tl.log(l_safe), mask=offs_m < L)


@triton.jit
def _cope_bwd_kernel(Q, K, V, Z, DO, LSE, DELTA, DQ, DK, DV, DZ, L, P, HEAD_D, scale, gate_scale, pos_scale,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
                     UPCAST: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    base = bh * L * HEAD_D
    qmask = (offs_m[:, None] < L) & (offs_d[None, :] < HEAD_D)
    q_off = base + offs_m[:, None] * HEAD_D + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qmask, other=0.0)
    do = tl.load(DO + q_off, mask=qmask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(LSE + bh * L + offs_m, mask=offs_m < L, other=0.0)
    delta = tl.load(DELTA + bh * L + offs_m, mask=offs_m < L, other=0.0)
    z_rows = Z + bh * L * P + offs_m.to(tl.int64) * P
    dz_rows = DZ + bh * L * P + offs_m.to(tl.int64) * P
    last = (pid_m * BLOCK_M + BLOCK_M - 1) // BLOCK_N

    # sweep A: row totals DP_i = sum_j dL/dp_ij
    carry = tl.zeros((BLOCK_M,), tl.float32)
    dp_total = tl.zeros((BLOCK_M,), tl.float32)
    for t in range(0, last + 1):
        kv_off, kmask, k, valid, g, w, fi, ci, a, dl, dp = _cope_bwd_tile(
            q, do, K, V, base, z_rows, offs_m, offs_d, last - t, carry, lse, delta, L, P, HEAD_D, scale,
            gate_scale, pos_scale, BLOCK_N, PREC, UPCAST)
        carry += tl.sum(g, axis=1)
        dp_total += tl.sum(dp, axis=1)

    # sweep B: everything else, with the suffix carry of dL/dp
    carry = tl.zeros((BLOCK_M,), tl.float32)
    dp_suffix = tl.zeros((BLOCK_M,), tl.float32)
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for t in range(0, last + 1):
        kv_off, kmask, k, valid, g, w, fi, ci, a, dl, dp = _cope_bwd_tile(
            q, do, K, V, base, z_rows, offs_m, offs_d, last - t, carry, lse, delta, L, P, HEAD_D, scale,
            gate_scale, pos_scale, BLOCK_N, PREC, UPCAST)
        carry += tl.sum(g, axis=1)
        later = dp_suffix[:, None] + tl.cumsum(dp, axis=1, reverse=True) - dp  # sum_{j>t} dL/dp_ij
        dp_suffix += tl.sum(dp, axis=1)
        dg = dp_total[:, None] - later
        ds = tl.where(valid, dl * scale + dg * g * (1.0 - g) * gate_scale, 0.0)
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
        dk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC)
        dv = tl.dot(tl.trans(a.to(do.dtype)), do, input_precision=PREC)
        tl.atomic_add(DK + kv_off, dk, mask=kmask)
        tl.atomic_add(DV + kv_off, dv, mask=kmask)
        dpl = dl * pos_scale
        tl.atomic_add(dz_rows[:, None] + fi, dpl * (1.0 - w), mask=valid)
        tl.atomic_add(dz_rows[:, None] + ci, dpl * w, mask=valid)
    tl.store(DQ + q_off, dq, mask=qmask)
