"""Causal CoPE attention: a one-pass Triton kernel (forward + backward) beside two plain-PyTorch references.

CoPE, "Contextual Position Encoding" (Golovneva, Wang, Weston, Sukhbaatar 2024, arXiv:2405.18719). Semantics of
the official code (facebookresearch/RAM @ e6f051fb, projects/cope/src/cope/context_position.py; spec/modeling.md
§3.2), causal, no padding, L queries over the same L keys:

    s_ij  = q_i . k_j                                  (unscaled)
    g_ij  = sigmoid(s_ij * scale)        for j <= i    (gates; 0 for the future)
    p_ij  = min(sum_{t=j..i} g_it, npos_max - 1)       (reversed cumsum over keys, clamped)
    z_i   = q_i E                                      (E = pos_emb_DP, head_dim x npos_max, shared by heads)
    pl_ij = z_i[ceil p] * w + z_i[floor p] * (1 - w),  w = p - floor p
    logit = (s_ij + pl_ij) * scale                     (official default: the CoPE term is divided by sqrt(d))
          | s_ij * scale + pl_ij                       (nodiv=True: the paper's appendix snippet)
    o_i   = sum_j softmax_j(logit) v_j

``scale`` defaults to head_dim ** -0.5 and is used for the gates too (official: sigmoid(q.k / sqrt(d))).

Three implementations, same signature ``(q_BHLD, k_BHLD, v_BHLD, pos_emb_DP, *, npos_max, scale=None, nodiv=False)``:
- ``cope_attention_reference``: the official vectorised form (flip-cumsum-flip, gathers), materialises L x L
  tensors; differentiable by autograd. The test oracle and the CPU path.
- ``cope_attention_blockwise``: the kernel's algorithm in plain PyTorch (key blocks backwards from the diagonal,
  running per-row gate sum, online softmax); O(L x block) extra memory. A second oracle and the CPU memory probe.
- ``cope_attention``: the Triton kernel (``kernels/_cope_triton.py``) wrapped in ``CoPEAttentionFunction``; runs on
  CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported (tests).

Unsupported by the kernel (callers use the reference): padding masks, KV-cache decode (queries != keys), separate
gate keys (``cope_sep_key`` / ``cope_val_gates``), attention dropout. Untested on real GPUs at the time of writing
unless docs/cope.md says otherwise.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CoPEAttentionFunction",
    "cope_attention",
    "cope_attention_blockwise",
    "cope_attention_reference",
    "kernel_available",
]

# Shapes: B batch, H heads, L sequence (queries = keys), D head dim, P npos_max, N key-block width.


def _check(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor, pos_emb_DP: torch.Tensor,
           npos_max: int) -> None:
    if npos_max < 1:
        raise ValueError(f"npos_max={npos_max} must be >= 1 (number of integer position embeddings)")
    if q_BHLD.dim() != 4 or q_BHLD.shape != k_BHLD.shape or v_BHLD.shape != q_BHLD.shape:
        raise ValueError(f"q, k, v must share one (B, H, L, D) shape; got {tuple(q_BHLD.shape)}, "
                         f"{tuple(k_BHLD.shape)}, {tuple(v_BHLD.shape)} (repeat grouped KV heads first)")
    if tuple(pos_emb_DP.shape) != (q_BHLD.shape[-1], npos_max):
        raise ValueError(f"pos_emb_DP has shape {tuple(pos_emb_DP.shape)}; expected (head_dim, npos_max) = "
                         f"({q_BHLD.shape[-1]}, {npos_max})")


def _scales(head_dim: int, scale: float | None, nodiv: bool) -> tuple[float, float, float]:
    """(logit scale for q.k, gate scale, scale of the position logits)."""
    scale = head_dim ** -0.5 if scale is None else float(scale)
    return scale, scale, (1.0 if nodiv else scale)


def cope_attention_reference(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor,
                             pos_emb_DP: torch.Tensor, *, npos_max: int, scale: float | None = None,
                             nodiv: bool = False) -> torch.Tensor:
    """Official vectorised CoPE attention (causal, no padding); materialises L x L; autograd for gradients."""
    _check(q_BHLD, k_BHLD, v_BHLD, pos_emb_DP, npos_max)
    scale, gate_scale, pos_scale = _scales(q_BHLD.shape[-1], scale, nodiv)
    L = q_BHLD.shape[-2]
    causal_LL = torch.ones(L, L, dtype=torch.bool, device=q_BHLD.device).tril()
    s_BHLL = q_BHLD @ k_BHLD.transpose(-1, -2)
    gates_BHLL = torch.sigmoid(s_BHLL * gate_scale) * causal_LL
    pos_BHLL = gates_BHLL.flip(-1).cumsum(-1).flip(-1).clamp(max=npos_max - 1)
    pos_ceil_BHLL = pos_BHLL.ceil().long()
    pos_floor_BHLL = pos_BHLL.floor().long()
    z_BHLP = q_BHLD @ pos_emb_DP.to(q_BHLD.dtype)
    w_BHLL = pos_BHLL - pos_floor_BHLL
    pos_logits_BHLL = z_BHLP.gather(-1, pos_ceil_BHLL) * w_BHLL + z_BHLP.gather(-1, pos_floor_BHLL) * (1 - w_BHLL)
    logits_BHLL = s_BHLL * scale + pos_logits_BHLL * pos_scale
    logits_BHLL = logits_BHLL.masked_fill(~causal_LL, float("-inf"))
    attn_BHLL = torch.softmax(logits_BHLL, dim=-1, dtype=torch.promote_types(logits_BHLL.dtype, torch.float32))
    attn_BHLL = attn_BHLL.to(v_BHLD.dtype)
    return attn_BHLL @ v_BHLD


def cope_attention_blockwise(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor,
                             pos_emb_DP: torch.Tensor, *, npos_max: int, scale: float | None = None,
                             nodiv: bool = False, block: int = 64) -> torch.Tensor:
    """The kernel's algorithm in plain PyTorch: key blocks from last to first, per-row gate carry, online softmax.

    All query rows are processed together (key blocks right of a row's diagonal contribute nothing), so the extra
    memory is O(B H L block) plus Z (B H L P); computed in fp32, returned in q's dtype. Meant for inference-mode
    probes and as a test oracle: under autograd every block's intermediates are saved (O(L^2) again).
    """
    _check(q_BHLD, k_BHLD, v_BHLD, pos_emb_DP, npos_max)
    if block < 1:
        raise ValueError(f"block={block} must be >= 1")
    scale, gate_scale, pos_scale = _scales(q_BHLD.shape[-1], scale, nodiv)
    B, H, L, D = q_BHLD.shape
    q32_BHLD, k32_BHLD, v32_BHLD = q_BHLD.float(), k_BHLD.float(), v_BHLD.float()
    z_BHLP = q32_BHLD @ pos_emb_DP.float()
    rows_L1 = torch.arange(L, device=q_BHLD.device)[:, None]
    carry_BHL1 = q32_BHLD.new_zeros(B, H, L, 1)
    m_BHL1 = q32_BHLD.new_full((B, H, L, 1), float("-inf"))
    l_BHL1 = q32_BHLD.new_zeros(B, H, L, 1)
    acc_BHLD = q32_BHLD.new_zeros(B, H, L, D)
    for start in reversed(range(0, L, block)):
        stop = min(start + block, L)
        cols_1N = torch.arange(start, stop, device=q_BHLD.device)[None, :]
        valid_LN = cols_1N <= rows_L1
        s_BHLN = q32_BHLD @ k32_BHLD[:, :, start:stop].transpose(-1, -2)
        g_BHLN = torch.sigmoid(s_BHLN * gate_scale) * valid_LN
        pos_BHLN = (carry_BHL1 + g_BHLN.flip(-1).cumsum(-1).flip(-1)).clamp(max=npos_max - 1)
        carry_BHL1 = carry_BHL1 + g_BHLN.sum(-1, keepdim=True)
        floor_BHLN = pos_BHLN.floor()
        w_BHLN = pos_BHLN - floor_BHLN
        pl_BHLN = (z_BHLP.gather(-1, pos_BHLN.ceil().long()) * w_BHLN
                   + z_BHLP.gather(-1, floor_BHLN.long()) * (1 - w_BHLN))
        logits_BHLN = (s_BHLN * scale + pl_BHLN * pos_scale).masked_fill(~valid_LN, float("-inf"))
        m_new_BHL1 = torch.maximum(m_BHL1, logits_BHLN.amax(-1, keepdim=True))
        m_safe_BHL1 = torch.where(torch.isinf(m_new_BHL1), torch.zeros_like(m_new_BHL1), m_new_BHL1)
        alpha_BHL1 = torch.exp(m_BHL1 - m_safe_BHL1)
        p_BHLN = torch.exp(logits_BHLN - m_safe_BHL1)
        l_BHL1 = l_BHL1 * alpha_BHL1 + p_BHLN.sum(-1, keepdim=True)
        acc_BHLD = acc_BHLD * alpha_BHL1 + p_BHLN @ v32_BHLD[:, :, start:stop]
        m_BHL1 = m_new_BHL1
    return (acc_BHLD / l_BHL1).to(q_BHLD.dtype)


def _kernels():
    """The Triton module, imported on first use; refuses CPU tensors unless Triton runs in interpreter mode."""
    from . import _cope_triton

    return _cope_triton


def kernel_available(device: torch.device | str) -> bool:
    """Whether ``cope_attention`` can run on ``device``: CUDA, or CPU with Triton in interpreter mode."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    try:
        return type(_kernels()._cope_fwd_kernel).__name__ == "InterpretedFunction"
    except ImportError:
        return False


def _launch_settings(q_BHLD: torch.Tensor, block: int | None) -> tuple[int, int, int]:
    if not kernel_available(q_BHLD.device):
        raise RuntimeError(f"the CoPE Triton kernel cannot run on {q_BHLD.device} tensors: it needs CUDA, or CPU "
                           "with TRITON_INTERPRET=1 set before triton is imported (tests); use "
                           "cope_attention_reference instead")
    D = q_BHLD.shape[-1]
    block_d = max(16, 1 << (D - 1).bit_length())
    if block is None:
        block = 64 if q_BHLD.is_cuda else 16
    if block < 16 or block & (block - 1):
        raise ValueError(f"block={block} must be a power of two >= 16 (tl.dot needs tiles of at least 16)")
    if block_d > 256:
        raise RuntimeError(f"head_dim={D} needs BLOCK_D={block_d} > 256; the CoPE kernel supports head_dim <= 256")
    return block, block, block_d


class CoPEAttentionFunction(torch.autograd.Function):
    """Triton CoPE attention over (q, k, v, z = q E); gradients for all four (dz flows to q and E via autograd)."""

    @staticmethod
    def forward(ctx, q_BHLD, k_BHLD, v_BHLD, z_BHLP, scale, gate_scale, pos_scale, block=None):
        tk = _kernels()

        B, H, L, D = q_BHLD.shape
        P = z_BHLP.shape[-1]
        q_BHLD, k_BHLD, v_BHLD, z_BHLP = (t.contiguous() for t in (q_BHLD, k_BHLD, v_BHLD, z_BHLP))
        block_m, block_n, block_d = _launch_settings(q_BHLD, block)
        o_BHLD = torch.empty_like(q_BHLD)
        lse_BHL = torch.empty(B, H, L, device=q_BHLD.device, dtype=torch.float32)
        prec = "ieee" if q_BHLD.dtype == torch.float32 else None  # None: the default for 16-bit operands
        grid = (_cdiv(L, block_m), B * H)
        tk._cope_fwd_kernel[grid](q_BHLD, k_BHLD, v_BHLD, z_BHLP, o_BHLD, lse_BHL, L, P, D,
                                  scale, gate_scale, pos_scale, BLOCK_M=block_m, BLOCK_N=block_n,
                                  BLOCK_D=block_d, PREC=prec, UPCAST=not q_BHLD.is_cuda)
        ctx.save_for_backward(q_BHLD, k_BHLD, v_BHLD, z_BHLP, o_BHLD, lse_BHL)
        ctx.settings = (scale, gate_scale, pos_scale, block_m, block_n, block_d, prec)
        return o_BHLD

    @staticmethod
    def backward(ctx, do_BHLD):
        tk = _kernels()

        q_BHLD, k_BHLD, v_BHLD, z_BHLP, o_BHLD, lse_BHL = ctx.saved_tensors
        scale, gate_scale, pos_scale, block_m, block_n, block_d, prec = ctx.settings
        B, H, L, D = q_BHLD.shape
        P = z_BHLP.shape[-1]
        do_BHLD = do_BHLD.contiguous()
        delta_BHL = (do_BHLD.float() * o_BHLD.float()).sum(-1)
        dq_BHLD = torch.empty(B, H, L, D, device=q_BHLD.device, dtype=torch.float32)
        dk_BHLD = torch.zeros_like(dq_BHLD)
        dv_BHLD = torch.zeros_like(dq_BHLD)
        dz_BHLP = torch.zeros(B, H, L, P, device=q_BHLD.device, dtype=torch.float32)
        grid = (_cdiv(L, block_m), B * H)
        tk._cope_bwd_kernel[grid](q_BHLD, k_BHLD, v_BHLD, z_BHLP, do_BHLD, lse_BHL, delta_BHL,
                                  dq_BHLD, dk_BHLD, dv_BHLD, dz_BHLP, L, P, D, scale, gate_scale, pos_scale,
                                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, PREC=prec,
                                  UPCAST=not q_BHLD.is_cuda)
        return (dq_BHLD.to(q_BHLD.dtype), dk_BHLD.to(k_BHLD.dtype), dv_BHLD.to(v_BHLD.dtype),
                dz_BHLP.to(z_BHLP.dtype), None, None, None, None)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def cope_attention(q_BHLD: torch.Tensor, k_BHLD: torch.Tensor, v_BHLD: torch.Tensor, pos_emb_DP: torch.Tensor,
                   *, npos_max: int, scale: float | None = None, nodiv: bool = False,
                   block: int | None = None) -> torch.Tensor:
    """Causal CoPE attention with the Triton kernel (semantics of ``cope_attention_reference``).

    ``block`` (query and key tile size; default 64 on CUDA, 16 elsewhere) is for tests. The position-logit table
    Z = q E is formed by PyTorch (B x H x L x npos) so its gradient reaches q and ``pos_emb_DP`` through autograd.
    """
    _check(q_BHLD, k_BHLD, v_BHLD, pos_emb_DP, npos_max)
    scale, gate_scale, pos_scale = _scales(q_BHLD.shape[-1], scale, nodiv)
    if not math.isfinite(scale):
        raise ValueError(f"scale={scale} must be finite")
    z_BHLP = q_BHLD @ pos_emb_DP.to(q_BHLD.dtype)
    return CoPEAttentionFunction.apply(q_BHLD, k_BHLD, v_BHLD, z_BHLP, scale, gate_scale, pos_scale, block)
