"""Fused Multi-Token Attention (pre-softmax key-query convolution + pre-softmax head mixing), O(L) memory.

Semantics (spec/modeling.md §2.3, §2.5, §2.6b; facebookresearch/RAM ``projects/mta/mta_transformer.py``,
``_mta_convolution`` + ``wpsm``, single softmax as at commit e6f051fb): per head h,

    S  = q k^T * scale                      (scale defaults to d**-0.5)
    S0 = S with the future (j > i) set to 0
    C  = depthwise cross-correlation of S0 with theta_h (c_q x c_k, c_k odd), zero padding c_q-1 query rows
         on top and (c_k-1)/2 keys on both sides
    S'_g = sum_h W[g, h] C_h               (optional; W = nn.Linear(H, H).weight)
    O  = softmax_fp32(S' with -inf at j > i) @ v

Algorithm (spec/performance.md §2.4). With hk = (c_k-1)/2, the shifted queries
``Qc[i] = concat_a q[i-(c_q-1)+a] * scale`` and the key-filtered keys ``Kc[j] = concat_a K~_a[j]``,
``K~_a[j] = sum_b theta[a, b] k[j-hk+b]`` (zero padded), the convolved scores are ONE ordinary dot product of
width c_q*d:  ``C[i, j] = Qc[i] . Kc[j]``, exact wherever no stencil tap crosses the causal diagonal, i.e.
for i - j >= W = c_q - 1 + hk. The W diagonals next to the causal diagonal (the "band") are computed
exactly with the masked stencil on a banded copy of the raw scores (``_band_scores``: O(L * (c_q+2hk) * d)
work, O(L * W) memory) and then head-mixed. The attention itself is then flash attention whose score is
``sum_h W[g, h] Qc_h . Kc_h`` off the band and the precomputed band value on it:

- forward: one program per (query tile, batch*head); it loops over key tiles up to the diagonal, over the
  source heads of the mix (only its own head without mixing) and over c_q*d in chunks; online softmax in
  fp32; saves O and the log-sum-exp (O(L)).
- backward: one program per (key tile, batch*head); recomputes P from the LSE, owns dV, writes the band
  part of dS (each band cell belongs to exactly one tile), and adds ``W[g,h] dS^T Qc_h`` / ``W[g,h] dS Kc_h``
  into fp32 dKc / dQc with atomics (several output heads feed one source head under mixing); dW from
  ``sum(Qc_h * (dS Kc_h))``.
- both loops run the tiles entirely below the band (every i - j >= W, all keys valid) without the band
  gather and masks; only the tiles at the band / diagonal run masked.
- everything before (Qc, Kc, the band) is plain differentiable PyTorch of O(L) size, so autograd carries
  the gradients on to q, k, theta and W.

Head mixing is folded into the score sum ("linear algebra that folds W into the shifted-query products"):
a program for output head g recomputes the c_q*d-wide products of all H source heads, so with mixing the
score work is H times the unmixed one (the alternative, one program owning all heads of a tile, needs H
accumulators of BM x d per program and is left for later; see docs/kernels.md).

``mta_attention_blockwise`` is the same algorithm in plain PyTorch (query tiles x key tiles, online softmax,
recompute in backward): the oracle for the tiling logic and the CPU path (O(L * block) memory).
``mta_attention_reference`` materialises the L x L scores exactly like the official code.

Provenance: flash-attention loop structure after the Triton fused-attention tutorial (Tillet) and
FlashAttention-2 (Dao, 2023); the shift/filter algebra is spec/performance.md §2.4 (the MTA paper's
Appendix B notes the equivalence to a higher-rank key/query projection). Tested on CPU under
TRITON_INTERPRET=1 and compiled for sm_90 ahead of time (no GPU was available when written): GPU speed is
unmeasured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

# Shapes: B batch, H heads (G = output head of the mix), L sequence, D head dim, A = c_q shifted copies,
# K = A*D concatenated score width, Q = c_q, C = c_k, W = band width (c_q - 1 + (c_k-1)/2), T = band taps.

__all__ = ["mta_attention", "mta_attention_blockwise", "mta_attention_reference", "mta_band_width"]


# ----------------------------------------------------------------------------------------------------------
# Validation and the O(L) preprocessing shared by the Triton and the blockwise paths
# ----------------------------------------------------------------------------------------------------------


def _check(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH) -> None:
    if q_BHLD.dim() != 4:
        raise ValueError(f"q must be (B, H, L, D), got shape {tuple(q_BHLD.shape)}; transpose (B, L, H, D) inputs")
    if k_BHLD.shape != q_BHLD.shape or v_BHLD.shape != q_BHLD.shape:
        raise ValueError(
            f"q, k, v must have the same (B, H, L, D) shape, got {tuple(q_BHLD.shape)}, {tuple(k_BHLD.shape)}, "
            f"{tuple(v_BHLD.shape)}; repeat grouped KV heads before calling"
        )
    H = q_BHLD.shape[1]
    if kq_kernel_HQK.dim() != 3 or kq_kernel_HQK.shape[0] != H:
        raise ValueError(
            f"kq_kernel must be (H={H}, c_q, c_k), got {tuple(kq_kernel_HQK.shape)}; squeeze the conv weight's "
            "channel dim ((H, 1, c_q, c_k) -> (H, c_q, c_k))"
        )
    if kq_kernel_HQK.shape[2] % 2 != 1:
        raise ValueError(f"c_k must be odd (symmetric key padding, pad_key='both'), got c_k={kq_kernel_HQK.shape[2]}")
    if head_mix_HH is not None and tuple(head_mix_HH.shape) != (H, H):
        raise ValueError(f"head_mix must be (H, H) = ({H}, {H}), got {tuple(head_mix_HH.shape)}")


def mta_band_width(c_q: int, c_k: int) -> int:
    """Number of diagonals next to the causal one where the shifted-product form is not exact."""
    return c_q - 1 + (c_k - 1) // 2


def _shifted_queries(q_BHLD: torch.Tensor, c_q: int, scale: float) -> torch.Tensor:
    """Qc[b,h,i,(a,d)] = q[i-(c_q-1)+a] * scale (zero above row 0) -> (B, H, L, c_q*D)."""
    B, H, L, D = q_BHLD.shape
    q_pad_BHLD = F.pad(q_BHLD * scale, (0, 0, c_q - 1, 0))
    qc_BHLAD = torch.stack([q_pad_BHLD[:, :, a:a + L] for a in range(c_q)], dim=3)
    return qc_BHLAD.reshape(B, H, L, c_q * D)


def _filtered_keys(k_BHLD: torch.Tensor, kq_kernel_HQK: torch.Tensor) -> torch.Tensor:
    """Kc[b,h,j,(a,d)] = sum_b theta[h,a,b] k[j-hk+b] (zero padded) -> (B, H, L, c_q*D), in fp32."""
    B, H, L, D = k_BHLD.shape
    c_q, c_k = kq_kernel_HQK.shape[1:]
    hk = (c_k - 1) // 2
    k_pad_BHLD = F.pad(k_BHLD.float(), (0, 0, hk, hk))
    win_BHLDC = k_pad_BHLD.unfold(2, c_k, 1)  # window starting at j-hk
    kc_BHLAD = torch.einsum("bhldc,hac->bhlad", win_BHLDC, kq_kernel_HQK.float())
    return kc_BHLAD.reshape(B, H, L, c_q * D)


def _band_scores(q_BHLD, k_BHLD, kq_kernel_HQK, head_mix_HH, scale: float) -> torch.Tensor | None:
    """Exact (masked-stencil) convolved + mixed scores on the band: out[b,g,i,delta] = S'[i, i-delta], delta < W.

    Raw scores are needed only on the diagonals t = i'-j' in [0, T), T = c_q - 1 + 2hk:
    R[b,h,i',t] = q[i'] . k[i'-t] * scale (0 where i'-t < 0). The conv tap (a, b) at band cell (i, delta) reads
    R[i-(c_q-1)+a, t = delta-(c_q-1)+a+hk-b] and is masked (0) when t < 0 (a future position in S0).
    Computed in fp32; O(L * T) memory.
    """
    B, H, L, D = q_BHLD.shape
    c_q, c_k = kq_kernel_HQK.shape[1:]
    hk = (c_k - 1) // 2
    W = mta_band_width(c_q, c_k)
    if W == 0:
        return None
    T = c_q - 1 + 2 * hk
    qf_BHLD = q_BHLD.float() * scale
    k_pad_BHLD = F.pad(k_BHLD.float(), (0, 0, T - 1, 0))
    win_BHLDT = k_pad_BHLD.unfold(2, T, 1)  # window w holds k[i'-(T-1)+w], i.e. t = T-1-w
    raw_BHLT = torch.einsum("bhld,bhldw->bhlw", qf_BHLD, win_BHLDT).flip(-1)
    raw_pad_BHLT = F.pad(raw_BHLT, (0, 0, c_q - 1, 0))  # rows above 0 read zero
    # theta_eff[h, a, delta, t] = sum_b theta[h, a, b] [t == delta-(c_q-1)+a+hk-b]
    dev = q_BHLD.device
    a_ = torch.arange(c_q, device=dev)[:, None, None]
    b_ = torch.arange(c_k, device=dev)[None, :, None]
    d_ = torch.arange(W, device=dev)[None, None, :]
    t_AQW = d_ - (c_q - 1) + a_ + hk - b_  # (c_q, c_k, W)
    onehot_ACWT = (t_AQW[..., None] == torch.arange(T, device=dev)).float()  # t<0 or >=T never matches
    theta_eff_HAWT = torch.einsum("hac,acwt->hawt", kq_kernel_HQK.float(), onehot_ACWT)
    band_BHLW = sum(
        torch.einsum("bhlt,hwt->bhlw", raw_pad_BHLT[:, :, a:a + L], theta_eff_HAWT[:, a]) for a in range(c_q)
    )
    if head_mix_HH is not None:
        band_BHLW = torch.einsum("gh,bhlw->bglw", head_mix_HH.float(), band_BHLW)
    return band_BHLW.contiguous()


def _prepare(q_BHLD, k_BHLD, kq_kernel_HQK, head_mix_HH, scale):
    c_q = kq_kernel_HQK.shape[1]
    qc_BHLK = _shifted_queries(q_BHLD, c_q, scale).contiguous()
    kc_BHLK = _filtered_keys(k_BHLD, kq_kernel_HQK).to(q_BHLD.dtype).contiguous()
    band_BHLW = _band_scores(q_BHLD, k_BHLD, kq_kernel_HQK, head_mix_HH, scale)
    return qc_BHLK, kc_BHLK, band_BHLW


# ----------------------------------------------------------------------------------------------------------
# Reference: materialised L x L, exactly the official order of operations
# ----------------------------------------------------------------------------------------------------------


def mta_attention_reference(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH=None, *, scale=None):
    """Plain-PyTorch MTA attention, O(B H L^2) memory (RAM ``_mta_convolution`` + ``wpsm``, single softmax)."""
    _check(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH)
    B, H, L, D = q_BHLD.shape
    c_q, c_k = kq_kernel_HQK.shape[1:]
    hk = (c_k - 1) // 2
    scale = D**-0.5 if scale is None else scale
    scores_BHLL = torch.matmul(q_BHLD, k_BHLD.transpose(-1, -2)) * scale
    future_LL = torch.ones(L, L, dtype=torch.bool, device=q_BHLD.device).triu(1)
    s0_BHLL = scores_BHLL.masked_fill(future_LL, 0.0)
    s0_pad = F.pad(s0_BHLL, (hk, hk, c_q - 1, 0))
    conv_BHLL = F.conv2d(s0_pad, kq_kernel_HQK[:, None].to(s0_pad.dtype), groups=H)
    if head_mix_HH is not None:
        conv_BHLL = torch.einsum("gh,bhij->bgij", head_mix_HH.to(conv_BHLL.dtype), conv_BHLL)
    conv_BHLL = conv_BHLL.masked_fill(future_LL, float("-inf"))
    probs_BHLL = torch.softmax(conv_BHLL.float(), dim=-1).to(q_BHLD.dtype)
    return torch.matmul(probs_BHLL, v_BHLD)


# ----------------------------------------------------------------------------------------------------------
# Blockwise plain-PyTorch implementation of the fused algorithm (CPU path and tiling oracle)
# ----------------------------------------------------------------------------------------------------------


def _tile_scores(qc_BHMK, kc_BHNK, band_BHMW, mix_HH, m0, n0, W):
    """Scores of one (query tile, key tile) for all heads, fp32: mixed shifted products, band, causal mask."""
    c_BHMN = torch.matmul(qc_BHMK.float(), kc_BHNK.float().transpose(-1, -2))
    s_BHMN = c_BHMN if mix_HH is None else torch.einsum("gh,bhmn->bgmn", mix_HH.float(), c_BHMN)
    M, N = qc_BHMK.shape[2], kc_BHNK.shape[2]
    dev = qc_BHMK.device
    delta_MN = (m0 + torch.arange(M, device=dev))[:, None] - (n0 + torch.arange(N, device=dev))[None, :]
    inband_MN = (delta_MN >= 0) & (delta_MN < W)
    if band_BHMW is not None and bool(inband_MN.any()):
        idx_BHMN = delta_MN.clamp(0, W - 1).expand(*s_BHMN.shape[:2], M, N)
        s_BHMN = torch.where(inband_MN, torch.gather(band_BHMW, 3, idx_BHMN), s_BHMN)
    s_BHMN = s_BHMN.masked_fill(delta_MN < 0, float("-inf"))
    return s_BHMN, c_BHMN, inband_MN, delta_MN


class _BlockwiseMTA(torch.autograd.Function):
    """Flash-style attention over (Qc, Kc, band, mix) in PyTorch tiles; saves O and LSE, recomputes in backward."""

    @staticmethod
    def forward(ctx, qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH, block: int):
        B, H, L, _ = qc_BHLK.shape
        W = 0 if band_BHLW is None else band_BHLW.shape[-1]
        o_BHLD = torch.empty_like(v_BHLD)
        lse_BHL = torch.empty(B, H, L, dtype=torch.float32, device=v_BHLD.device)
        for m0 in range(0, L, block):
            m1 = min(m0 + block, L)
            band_m = None if band_BHLW is None else band_BHLW[:, :, m0:m1]
            m_BHM = torch.full((B, H, m1 - m0), float("-inf"), device=v_BHLD.device)
            l_BHM = torch.zeros(B, H, m1 - m0, device=v_BHLD.device)
            acc_BHMD = torch.zeros(B, H, m1 - m0, v_BHLD.shape[-1], device=v_BHLD.device)
            for n0 in range(0, m1, block):
                n1 = min(n0 + block, m1)
                s_BHMN, *_ = _tile_scores(qc_BHLK[:, :, m0:m1], kc_BHLK[:, :, n0:n1], band_m, mix_HH, m0, n0, W)
                m_new = torch.maximum(m_BHM, s_BHMN.amax(-1))
                p_BHMN = torch.exp(s_BHMN - m_new[..., None])
                alpha = torch.exp(m_BHM - m_new)
                l_BHM = l_BHM * alpha + p_BHMN.sum(-1)
                acc_BHMD = acc_BHMD * alpha[..., None] + torch.matmul(
                    p_BHMN.to(v_BHLD.dtype).float(), v_BHLD[:, :, n0:n1].float()
                )
                m_BHM = m_new
            o_BHLD[:, :, m0:m1] = (acc_BHMD / l_BHM[..., None]).to(v_BHLD.dtype)
            lse_BHL[:, :, m0:m1] = m_BHM + torch.log(l_BHM)
        ctx.save_for_backward(qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH, o_BHLD, lse_BHL)
        ctx.block = block
        return o_BHLD

    @staticmethod
    def backward(ctx, do_BHLD):
        qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH, o_BHLD, lse_BHL = ctx.saved_tensors
        block = ctx.block
        B, H, L, _ = qc_BHLK.shape
        W = 0 if band_BHLW is None else band_BHLW.shape[-1]
        delta_BHL = (do_BHLD.float() * o_BHLD.float()).sum(-1)
        dqc = torch.zeros_like(qc_BHLK, dtype=torch.float32)
        dkc = torch.zeros_like(kc_BHLK, dtype=torch.float32)
        dv = torch.zeros_like(v_BHLD, dtype=torch.float32)
        dband = None if band_BHLW is None else torch.zeros_like(band_BHLW)
        dmix = None if mix_HH is None else torch.zeros(H, H, dtype=torch.float32, device=v_BHLD.device)
        for m0 in range(0, L, block):
            m1 = min(m0 + block, L)
            band_m = None if band_BHLW is None else band_BHLW[:, :, m0:m1]
            do_m = do_BHLD[:, :, m0:m1].float()
            for n0 in range(0, m1, block):
                n1 = min(n0 + block, m1)
                s_BHMN, c_BHMN, inband_MN, delta_MN = _tile_scores(
                    qc_BHLK[:, :, m0:m1], kc_BHLK[:, :, n0:n1], band_m, mix_HH, m0, n0, W
                )
                p_BHMN = torch.exp(s_BHMN - lse_BHL[:, :, m0:m1, None])
                dv[:, :, n0:n1] += torch.matmul(p_BHMN.transpose(-1, -2), do_m)
                dp_BHMN = torch.matmul(do_m, v_BHLD[:, :, n0:n1].float().transpose(-1, -2))
                ds_BHMN = p_BHMN * (dp_BHMN - delta_BHL[:, :, m0:m1, None])
                if dband is not None and bool(inband_MN.any()):
                    idx_BHMN = delta_MN.clamp(0, W - 1).expand_as(ds_BHMN)
                    dband[:, :, m0:m1].scatter_add_(3, idx_BHMN, ds_BHMN * inband_MN)
                    ds_BHMN = ds_BHMN.masked_fill(inband_MN, 0.0)
                if mix_HH is not None:
                    dmix += torch.einsum("bgmn,bhmn->gh", ds_BHMN, c_BHMN)
                    ds_BHMN = torch.einsum("gh,bgmn->bhmn", mix_HH.float(), ds_BHMN)
                dqc[:, :, m0:m1] += torch.matmul(ds_BHMN, kc_BHLK[:, :, n0:n1].float())
                dkc[:, :, n0:n1] += torch.matmul(ds_BHMN.transpose(-1, -2), qc_BHLK[:, :, m0:m1].float())
        return (dqc.to(qc_BHLK.dtype), dkc.to(kc_BHLK.dtype), dv.to(v_BHLD.dtype), dband,
                None if dmix is None else dmix.to(mix_HH.dtype), None)


def mta_attention_blockwise(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH=None, *, scale=None, block=64):
    """The fused algorithm in plain PyTorch tiles (block x block), O(L * block) activation memory."""
    _check(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    scale = q_BHLD.shape[-1] ** -0.5 if scale is None else scale
    qc, kc, band = _prepare(q_BHLD, k_BHLD, kq_kernel_HQK, head_mix_HH, scale)
    return _BlockwiseMTA.apply(qc, kc, v_BHLD.contiguous(), band, head_mix_HH, block)


# ----------------------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot with fp32 accumulation; UPCAST (interpreter only) feeds fp32 operands because the Triton 3.9
    interpreter's bf16 dot is wrong. bf16 x bf16 products are exact in fp32, so the result is the same maths."""
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PREC)
    return out


@triton.jit
def _mta_tile_scores(QC, KC, BAND, MIX, b, g, offs_m, offs_n, L, H, DK, W,
                     s_qb, s_qh, s_ql, s_bb, s_bh, s_bl,
                     NSRC: tl.constexpr, HAS_MIX: tl.constexpr, HAS_BAND: tl.constexpr, MASKED: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
                     UPCAST: tl.constexpr):
    """S'[i, j] = sum_h W[g,h] Qc_h[i].Kc_h[j] (off band), band value (0 <= i-j < W), -inf (j > i or j >= L).

    MASKED=False is for tiles entirely below the band (every i - j >= W, every key < L): no gather, no masks.
    """
    offs_k = tl.arange(0, BK)
    s = tl.zeros([BM, BN], dtype=tl.float32)
    for hh in range(NSRC):
        if HAS_MIX:
            src = hh
            w = tl.load(MIX + g * H + hh).to(tl.float32)
        else:
            src = g
            w = 1.0
        c = tl.zeros([BM, BN], dtype=tl.float32)
        for k0 in range(0, DK, BK):
            kk = k0 + offs_k
            q = tl.load(QC + b * s_qb + src * s_qh + offs_m[:, None] * s_ql + kk[None, :],
                        mask=(offs_m[:, None] < L) & (kk[None, :] < DK), other=0.0)
            kt = tl.load(KC + b * s_qb + src * s_qh + offs_n[None, :] * s_ql + kk[:, None],
                         mask=(offs_n[None, :] < L) & (kk[:, None] < DK), other=0.0)
            c += _dot(q, kt, PREC, UPCAST)
        s += w * c
    if MASKED:
        delta = offs_m[:, None] - offs_n[None, :]
        if HAS_BAND:
            inband = (delta >= 0) & (delta < W) & (offs_m[:, None] < L)
            bv = tl.load(BAND + b * s_bb + g * s_bh + offs_m[:, None] * s_bl + delta, mask=inband, other=0.0)
            s = tl.where(inband, bv, s)
        s = tl.where((delta >= 0) & (offs_n[None, :] < L), s, float("-inf"))
    return s


@triton.jit
def _mta_forward_step(QC, KC, V, BAND, MIX, b, g, offs_m, n0, m_i, l_i, acc,
                      s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, L, H, DK, DV, W,
                      NSRC: tl.constexpr, HAS_MIX: tl.constexpr, HAS_BAND: tl.constexpr, MASKED: tl.constexpr,
                      BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                      PREC: tl.constexpr, UPCAST: tl.constexpr):
    """One key tile of the online softmax (FlashAttention-2 update of m, l, acc)."""
    offs_n = n0 + tl.arange(0, BN)
    offs_d = tl.arange(0, BD)
    s = _mta_tile_scores(QC, KC, BAND, MIX, b, g, offs_m, offs_n, L, H, DK, W,
                         s_qb, s_qh, s_ql, s_bb, s_bh, s_bl,
                         NSRC, HAS_MIX, HAS_BAND, MASKED, BM, BN, BK, PREC, UPCAST)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    p = tl.exp(s - m_new[:, None])
    alpha = tl.exp(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(V + b * s_vb + g * s_vh + offs_n[:, None] * s_vl + offs_d[None, :],
                mask=(offs_n[:, None] < L) & (offs_d[None, :] < DV), other=0.0)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, UPCAST)
    return m_new, l_i, acc


@triton.jit
def _mta_forward_kernel(QC, KC, V, BAND, MIX, OUT, LSE,
                        s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, s_lb, s_lh,
                        L, H, DK, DV, W,
                        NSRC: tl.constexpr, HAS_MIX: tl.constexpr, HAS_BAND: tl.constexpr,
                        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                        PREC: tl.constexpr, UPCAST: tl.constexpr):
    """One (query tile, batch*head): online softmax over key tiles 0..diagonal; writes O and LSE (fp32).

    Key tiles entirely below the band run unmasked; the last one or two (band + causal diagonal) masked.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    g = pid_bh % H
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    offs_d = tl.arange(0, BD)
    m_i = tl.full([BM], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BD], dtype=tl.float32)
    n_split = (tl.maximum(m0 - W + 1, 0) // BN) * BN  # tiles [0, n_split): every i - j >= W
    hi = tl.minimum(m0 + BM, L)
    for n0 in range(0, n_split, BN):
        m_i, l_i, acc = _mta_forward_step(QC, KC, V, BAND, MIX, b, g, offs_m, n0, m_i, l_i, acc,
                                          s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, L, H, DK, DV, W,
                                          NSRC, HAS_MIX, HAS_BAND, False, BM, BN, BK, BD, PREC, UPCAST)
    for n0 in range(n_split, hi, BN):
        m_i, l_i, acc = _mta_forward_step(QC, KC, V, BAND, MIX, b, g, offs_m, n0, m_i, l_i, acc,
                                          s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, L, H, DK, DV, W,
                                          NSRC, HAS_MIX, HAS_BAND, True, BM, BN, BK, BD, PREC, UPCAST)
    out = acc / l_i[:, None]
    rows = offs_m < L
    tl.store(OUT + b * s_vb + g * s_vh + offs_m[:, None] * s_vl + offs_d[None, :], out.to(OUT.dtype.element_ty),
             mask=rows[:, None] & (offs_d[None, :] < DV))
    tl.store(LSE + b * s_lb + g * s_lh + offs_m, m_i + tl.log(l_i), mask=rows)


@triton.jit
def _mta_backward_step(QC, KC, BAND, MIX, DO, LSE, DELTA, DQC, DKC, DBAND, b, g, m0, offs_n, v, dv, dmix,
                       s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, s_lb, s_lh, L, H, DK, DV, W,
                       NSRC: tl.constexpr, HAS_MIX: tl.constexpr, HAS_BAND: tl.constexpr, MASKED: tl.constexpr,
                       BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                       HP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """One query tile against the program's key tile: recompute P, dV, dS; band dS; dQc/dKc atomics; dW."""
    offs_m = m0 + tl.arange(0, BM)
    offs_d = tl.arange(0, BD)
    offs_k = tl.arange(0, BK)
    offs_h = tl.arange(0, HP)
    rows = offs_m < L
    s = _mta_tile_scores(QC, KC, BAND, MIX, b, g, offs_m, offs_n, L, H, DK, W,
                         s_qb, s_qh, s_ql, s_bb, s_bh, s_bl,
                         NSRC, HAS_MIX, HAS_BAND, MASKED, BM, BN, BK, PREC, UPCAST)
    lse = tl.load(LSE + b * s_lb + g * s_lh + offs_m, mask=rows, other=0.0)
    p = tl.where(rows[:, None], tl.exp(s - lse[:, None]), 0.0)
    do = tl.load(DO + b * s_vb + g * s_vh + offs_m[:, None] * s_vl + offs_d[None, :],
                 mask=rows[:, None] & (offs_d[None, :] < DV), other=0.0)
    dv += _dot(tl.trans(p.to(do.dtype)), do, PREC, UPCAST)
    dp = _dot(do, tl.trans(v), PREC, UPCAST)
    dlt = tl.load(DELTA + b * s_lb + g * s_lh + offs_m, mask=rows, other=0.0)
    ds = p * (dp - dlt[:, None])
    if MASKED:
        if HAS_BAND:
            delta = offs_m[:, None] - offs_n[None, :]
            inband = (delta >= 0) & (delta < W) & rows[:, None]
            tl.store(DBAND + b * s_bb + g * s_bh + offs_m[:, None] * s_bl + delta, ds, mask=inband)
            ds = tl.where(inband, 0.0, ds)
    for hh in range(NSRC):
        if HAS_MIX:
            src = hh
            w = tl.load(MIX + g * H + hh).to(tl.float32)
        else:
            src = g
            w = 1.0
        for k0 in range(0, DK, BK):
            kk = k0 + offs_k
            qmask = rows[:, None] & (kk[None, :] < DK)
            kmask = (offs_n[:, None] < L) & (kk[None, :] < DK)
            q = tl.load(QC + b * s_qb + src * s_qh + offs_m[:, None] * s_ql + kk[None, :], mask=qmask, other=0.0)
            k = tl.load(KC + b * s_qb + src * s_qh + offs_n[:, None] * s_ql + kk[None, :], mask=kmask, other=0.0)
            dk_part = _dot(tl.trans(ds.to(q.dtype)), q, PREC, UPCAST)
            tl.atomic_add(DKC + b * s_qb + src * s_qh + offs_n[:, None] * s_ql + kk[None, :], w * dk_part,
                          mask=kmask)
            gq = _dot(ds.to(k.dtype), k, PREC, UPCAST)
            tl.atomic_add(DQC + b * s_qb + src * s_qh + offs_m[:, None] * s_ql + kk[None, :], w * gq,
                          mask=qmask)
            if HAS_MIX:
                dmix += tl.where(offs_h == hh, tl.sum(q.to(tl.float32) * gq), 0.0)
    return dv, dmix


@triton.jit
def _mta_backward_kernel(QC, KC, V, BAND, MIX, DO, LSE, DELTA, DQC, DKC, DV_, DBAND, DMIX,
                         s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, s_lb, s_lh,
                         L, H, DK, DV, W,
                         NSRC: tl.constexpr, HAS_MIX: tl.constexpr, HAS_BAND: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BD: tl.constexpr,
                         HP: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """One (key tile, batch*head g): recompute P, own dV; band dS stored; dQc/dKc (fp32) by atomics; dW.

    Query tiles touching the band or the diagonal run masked; the ones entirely below the band unmasked.
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    g = pid_bh % H
    n0 = pid_n * BN
    offs_n = n0 + tl.arange(0, BN)
    offs_d = tl.arange(0, BD)
    v = tl.load(V + b * s_vb + g * s_vh + offs_n[:, None] * s_vl + offs_d[None, :],
                mask=(offs_n[:, None] < L) & (offs_d[None, :] < DV), other=0.0)
    dv = tl.zeros([BN, BD], dtype=tl.float32)
    dmix = tl.zeros([HP], dtype=tl.float32)
    lo = (n0 // BM) * BM
    m_split = tl.minimum(((n0 + BN - 1 + W + BM - 1) // BM) * BM, L)  # from here on every i - j >= W
    m_split = tl.maximum(m_split, lo)
    for m0 in range(lo, m_split, BM):
        dv, dmix = _mta_backward_step(QC, KC, BAND, MIX, DO, LSE, DELTA, DQC, DKC, DBAND, b, g, m0, offs_n, v, dv,
                                      dmix, s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, s_lb, s_lh,
                                      L, H, DK, DV, W, NSRC, HAS_MIX, HAS_BAND, True, BM, BN, BK, BD, HP,
                                      PREC, UPCAST)
    for m0 in range(m_split, L, BM):
        dv, dmix = _mta_backward_step(QC, KC, BAND, MIX, DO, LSE, DELTA, DQC, DKC, DBAND, b, g, m0, offs_n, v, dv,
                                      dmix, s_qb, s_qh, s_ql, s_vb, s_vh, s_vl, s_bb, s_bh, s_bl, s_lb, s_lh,
                                      L, H, DK, DV, W, NSRC, HAS_MIX, HAS_BAND, False, BM, BN, BK, BD, HP,
                                      PREC, UPCAST)
    tl.store(DV_ + b * s_vb + g * s_vh + offs_n[:, None] * s_vl + offs_d[None, :], dv,
             mask=(offs_n[:, None] < L) & (offs_d[None, :] < DV))
    if HAS_MIX:
        tl.atomic_add(DMIX + g * H + tl.arange(0, HP), dmix, mask=tl.arange(0, HP) < H)


def _interpreting() -> bool:
    """True when the kernels were decorated under TRITON_INTERPRET=1 (Triton decides at import time)."""
    return type(_mta_forward_kernel).__name__ == "InterpretedFunction"


def _launch_config(qc_BHLK, v_BHLD):
    """Tile sizes: 64 on a GPU; 16-32 under the interpreter (cost there is per program x loop step)."""
    DK, DV = qc_BHLK.shape[-1], v_BHLD.shape[-1]
    interp = _interpreting()
    BM = BN = 32 if interp else 64
    BK = max(16, min(64, triton.next_power_of_2(DK)))
    BD = max(16, triton.next_power_of_2(DV))
    if BD > 256:
        raise RuntimeError(f"head dim {DV} > 256 is not supported by the MTA kernel (BD={BD}); use the reference")
    prec = "ieee" if qc_BHLK.dtype == torch.float32 else "tf32"
    return BM, BN, BK, BD, prec


# Warps per kernel: with 64 x 64 tiles, ptxas (sm_90, bf16) reports no spills for the forward at 4 warps up to
# d = 64 (218 registers; d = 128: 8 warps, 171) and for the backward at 8 warps (250-255 registers); 4 warps
# spill in the backward. Pipelining depth 2. Untuned (no GPU timings yet).
def _num_warps(kind: str, BD: int) -> int:
    return 8 if kind == "bwd" or BD > 64 else 4


class _TritonMTA(torch.autograd.Function):
    """Triton flash-style attention over (Qc, Kc, band, mix); saves O and LSE, recomputes in backward."""

    @staticmethod
    def forward(ctx, qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH):
        B, H, L, DK = qc_BHLK.shape
        DV = v_BHLD.shape[-1]
        W = 0 if band_BHLW is None else band_BHLW.shape[-1]
        BM, BN, BK, BD, prec = _launch_config(qc_BHLK, v_BHLD)
        o_BHLD = torch.empty_like(v_BHLD)
        lse_BHL = torch.empty(B, H, L, dtype=torch.float32, device=v_BHLD.device)
        band = band_BHLW if band_BHLW is not None else lse_BHL  # dummy pointer, never read
        mix = mix_HH.contiguous() if mix_HH is not None else lse_BHL
        sb = band_BHLW.stride()[:3] if band_BHLW is not None else (0, 0, 0)
        grid = (triton.cdiv(L, BM), B * H)
        _mta_forward_kernel[grid](
            qc_BHLK, kc_BHLK, v_BHLD, band, mix, o_BHLD, lse_BHL,
            *qc_BHLK.stride()[:3], *v_BHLD.stride()[:3], *sb, *lse_BHL.stride()[:2],
            L, H, DK, DV, W,
            NSRC=H if mix_HH is not None else 1, HAS_MIX=mix_HH is not None, HAS_BAND=band_BHLW is not None,
            BM=BM, BN=BN, BK=BK, BD=BD, PREC=prec, UPCAST=_interpreting(),
            num_warps=_num_warps("fwd", BD), num_stages=2,
        )
        ctx.save_for_backward(qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH, o_BHLD, lse_BHL)
        return o_BHLD

    @staticmethod
    def backward(ctx, do_BHLD):
        qc_BHLK, kc_BHLK, v_BHLD, band_BHLW, mix_HH, o_BHLD, lse_BHL = ctx.saved_tensors
        B, H, L, DK = qc_BHLK.shape
        DV = v_BHLD.shape[-1]
        W = 0 if band_BHLW is None else band_BHLW.shape[-1]
        BM, BN, BK, BD, prec = _launch_config(qc_BHLK, v_BHLD)
        do_BHLD = do_BHLD.contiguous()
        delta_BHL = (do_BHLD.float() * o_BHLD.float()).sum(-1).contiguous()
        dqc = torch.zeros(qc_BHLK.shape, dtype=torch.float32, device=qc_BHLK.device)
        dkc = torch.zeros_like(dqc)
        dv = torch.empty(v_BHLD.shape, dtype=torch.float32, device=v_BHLD.device)
        dband = torch.zeros_like(band_BHLW) if band_BHLW is not None else lse_BHL
        dmix = torch.zeros(H, H, dtype=torch.float32, device=v_BHLD.device) if mix_HH is not None else lse_BHL
        band = band_BHLW if band_BHLW is not None else lse_BHL
        mix = mix_HH.contiguous() if mix_HH is not None else lse_BHL
        sb = band_BHLW.stride()[:3] if band_BHLW is not None else (0, 0, 0)
        grid = (triton.cdiv(L, BN), B * H)
        _mta_backward_kernel[grid](
            qc_BHLK, kc_BHLK, v_BHLD, band, mix, do_BHLD, lse_BHL, delta_BHL, dqc, dkc, dv, dband, dmix,
            *qc_BHLK.stride()[:3], *v_BHLD.stride()[:3], *sb, *lse_BHL.stride()[:2],
            L, H, DK, DV, W,
            NSRC=H if mix_HH is not None else 1, HAS_MIX=mix_HH is not None, HAS_BAND=band_BHLW is not None,
            BM=BM, BN=BN, BK=BK, BD=BD, HP=triton.next_power_of_2(H), PREC=prec,
            UPCAST=_interpreting(), num_warps=_num_warps("bwd", BD), num_stages=2,
        )
        return (dqc.to(qc_BHLK.dtype), dkc.to(kc_BHLK.dtype), dv.to(v_BHLD.dtype),
                dband if band_BHLW is not None else None,
                dmix.to(mix_HH.dtype) if mix_HH is not None else None)


def mta_attention(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH=None, *, scale=None):
    """Causal MTA attention (pre-softmax key-query conv + optional pre-softmax head mix), O(L) memory.

    Triton kernel on CUDA tensors (and on CPU tensors under TRITON_INTERPRET=1); on other devices the same
    algorithm runs as PyTorch tiles (``mta_attention_blockwise``). Differentiable in q, k, v, kq_kernel and
    head_mix. No padding masks, KV-cache decode, post-softmax ops or dropout: callers use their reference
    for those.
    """
    _check(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH)
    if not (q_BHLD.is_cuda or _interpreting()):
        return mta_attention_blockwise(q_BHLD, k_BHLD, v_BHLD, kq_kernel_HQK, head_mix_HH, scale=scale)
    scale = q_BHLD.shape[-1] ** -0.5 if scale is None else scale
    qc, kc, band = _prepare(q_BHLD, k_BHLD, kq_kernel_HQK, head_mix_HH, scale)
    return _TritonMTA.apply(qc, kc, v_BHLD.contiguous(), band, head_mix_HH)
