"""Naive CoPE attention, written for obviousness: explicit loops over query i, key j and the gate sum over t.

The test oracle for ``modeling/cope/attention.py`` and ``kernels/cope.py`` (never edited to match them). It follows
the paper's definition (arXiv:2405.18719 §3, spec/modeling.md §3.1) with the official code's choices (§3.2):

    gate g_it   = sigmoid(q_i . gk_t / sqrt(d)) * allowed[i, t]      (gk = the gate keys; default the keys)
    position    = min(sum_{t=j}^{last} g_it, npos_max - 1)            (counted back from the query, its own token
                                                                        included; future keys are not allowed)
    embedding   e[p] = (p - floor p) e[ceil p] + (1 - p + floor p) e[floor p]   (interpolated *embedding*)
    logit_ij    = (q_i . k_j + q_i . e[p_ij]) / sqrt(d)   or, with nodiv, q_i . k_j / sqrt(d) + q_i . e[p_ij]
    out_i       = sum_j softmax_j(logit_ij over allowed j) v_j

Queries are the last L of the S key positions (S > L for cached decoding). ``allowed_BLS`` (bool) defaults to
causal; like the official code the query's own key is always allowed so padded rows are never empty. Cost:
O(B H L S^2) Python-level tensor ops: keep L, S to a few dozen.
"""

from __future__ import annotations

import torch

__all__ = ["cope_attention_naive"]


def _allowed_B(allowed_BLS: torch.Tensor, i: int, t: int, last: int) -> torch.Tensor:
    """May query i see key t? Never a future key (t > last), always its own (t == last), else the given mask."""
    if t > last:
        return torch.zeros_like(allowed_BLS[:, i, t])
    if t == last:
        return torch.ones_like(allowed_BLS[:, i, t])
    return allowed_BLS[:, i, t]


def cope_attention_naive(q_BHLD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor,
                         pos_emb_DP: torch.Tensor, *, npos_max: int, scale: float | None = None,
                         nodiv: bool = False, allowed_BLS: torch.Tensor | None = None,
                         gate_k_BHSD: torch.Tensor | None = None) -> torch.Tensor:
    """Loop-based CoPE attention; returns out_BHLD. See the module docstring for the formula."""
    B, H, L, D = q_BHLD.shape
    S = k_BHSD.shape[-2]
    scale = D ** -0.5 if scale is None else scale
    gate_k_BHSD = k_BHSD if gate_k_BHSD is None else gate_k_BHSD
    if allowed_BLS is None:
        allowed_BLS = torch.ones(B, L, S, dtype=torch.bool, device=q_BHLD.device)
    out_BHLD = torch.zeros_like(q_BHLD)
    for i in range(L):
        last = S - L + i  # the key index of query i's own token
        q_BHD = q_BHLD[:, :, i]

        logits = []
        for j in range(S):
            # position of key j seen from query i: the sum of the gates of keys j..last
            pos_BH = torch.zeros(B, H, dtype=q_BHLD.dtype, device=q_BHLD.device)
            for t in range(j, S):
                gate_BH = torch.sigmoid((q_BHD * gate_k_BHSD[:, :, t]).sum(-1) * scale)
                pos_BH = pos_BH + gate_BH * _allowed_B(allowed_BLS, i, t, last)[:, None]
            pos_BH = pos_BH.clamp(max=npos_max - 1)
            lo_BH, hi_BH = pos_BH.floor(), pos_BH.ceil()
            frac_BH1 = (pos_BH - lo_BH)[..., None]
            emb_BHD = (frac_BH1 * pos_emb_DP.T[hi_BH.long()] + (1 - frac_BH1) * pos_emb_DP.T[lo_BH.long()])
            content_BH = (q_BHD * k_BHSD[:, :, j]).sum(-1)
            position_BH = (q_BHD * emb_BHD).sum(-1)
            logit_BH = content_BH * scale + position_BH * (1.0 if nodiv else scale)
            logits.append(torch.where(_allowed_B(allowed_BLS, i, j, last)[:, None], logit_BH, torch.full_like(logit_BH, float("-inf"))))
        attn_BHS = torch.softmax(torch.stack(logits, dim=-1), dim=-1)
        for j in range(S):
            out_BHLD[:, :, i] += attn_BHS[:, :, j, None] * v_BHSD[:, :, j]
    return out_BHLD
