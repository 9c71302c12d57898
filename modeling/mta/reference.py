"""Multi-Token Attention references: (a) a naive loop version for obviousness, (b) the vectorised official form.

Semantics: facebookresearch/RAM ``projects/mta/mta_transformer.py`` at commit e6f051fb (``_mta_convolution`` and
``Attention.forward``), as written down in spec/modeling.md §2.3-2.6b; paper arXiv 2504.00927 eq. (4)-(5):

1. ``S = q k^T * scale`` (after RoPE), zeroed where the mask forbids (future keys, padding): ``Mask_0``.
2. Pre-softmax key-query convolution (depthwise cross-correlation, no bias): the query axis is padded with
   ``c_q - 1`` zero rows on top (the past side), the key axis per ``pad_key`` (``"both"``: ``(c_k - 1) / 2`` on each
   side), so ``C[i, j] = sum_{a, b} W[h, a, b] * S0[i - (c_q - 1) + a, j - left + b]``. Row ``a = c_q - 1`` of the
   kernel is the current query, column ``b = left`` the key itself.
3. Pre-softmax head mixing ``S'_g = sum_h W[g, h] S_h`` (``W`` = ``nn.Linear(H, H).weight``).
4. ``-inf`` mask, softmax over keys in fp32 (rows with no allowed key give zeros).
5. Post-softmax key-query convolution of the probabilities (same padding rule), re-zeroed where masked; no
   renormalisation.
6. Post-softmax head mixing: grouped kernel ``(G, C, C)`` indexed ``[group, source, target]`` or a full linear
   ``W[g, h]``.
7. ``O = A V``.

Query rows may be a window ``[q_start, q_start + Q)`` of a longer sequence (cached decoding): rows above the window
are treated as zero, so only rows with ``c_q - 1`` (plus the post kernel's ``c_q' - 1``) real rows above them are
exact; the model drops the others.

Shapes: B batch, H heads, Q query rows, S keys, D head dim, G head groups, C heads per group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "causal_allowed",
    "key_padding",
    "kq_conv",
    "mta_attention_naive",
    "mta_attention_vectorised",
    "mta_probs",
    "naive_kq_logits",
    "post_head_conv",
]


def key_padding(pad_key: str, c_k: int) -> tuple[int, int]:
    """(left, right) zero padding of the key axis for a key-query kernel of width ``c_k``."""
    if pad_key == "both":
        if c_k % 2 == 0:
            raise ValueError(f"pad_key='both' needs an odd key width, got c_k={c_k}; use c_k={c_k + 1} or 'left'")
        return (c_k - 1) // 2, (c_k - 1) // 2
    if pad_key == "left":
        return c_k - 1, 0
    if pad_key == "right":
        return 0, c_k - 1
    raise ValueError(f"pad_key={pad_key!r} is not one of 'both', 'left', 'right'")


def causal_allowed(q_len: int, k_len: int, *, q_start: int | None = None, key_valid_BS: torch.Tensor | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean ``allowed_BQS`` (B = 1 without padding): key ``j`` visible to query row ``r`` iff ``j <= q_start + r``
    and the key is not padding. ``q_start`` defaults to ``k_len - q_len`` (the queries end at the last key)."""
    start = k_len - q_len if q_start is None else q_start
    rows_Q1 = torch.arange(q_len, device=device)[:, None] + start
    allowed_QS = torch.arange(k_len, device=device)[None, :] <= rows_Q1
    allowed_BQS = allowed_QS[None]
    if key_valid_BS is not None:
        allowed_BQS = allowed_BQS & key_valid_BS[:, None, :].to(torch.bool)
    return allowed_BQS


def kq_conv(x_BHQS: torch.Tensor, allowed_BQS: torch.Tensor, kernel_HQK: torch.Tensor, pad_key: str = "both"
            ) -> torch.Tensor:
    """Official ``_mta_convolution``: zero-mask, pad (queries on top, keys per ``pad_key``), depthwise conv2d."""
    n_heads, c_q, c_k = kernel_HQK.shape
    if x_BHQS.shape[1] != n_heads:
        raise ValueError(f"kernel has {n_heads} heads but the scores have {x_BHQS.shape[1]}")
    left, right = key_padding(pad_key, c_k)
    x0_BHQS = x_BHQS.masked_fill(~allowed_BQS[:, None], 0.0)
    padded = F.pad(x0_BHQS, (left, right, c_q - 1, 0))
    return F.conv2d(padded, kernel_HQK.unsqueeze(1).to(x_BHQS.dtype), groups=n_heads)


def post_head_conv(probs_BHQS: torch.Tensor, kernel_GCC: torch.Tensor) -> torch.Tensor:
    """Grouped post-softmax head convolution: ``A'[g, t] = sum_s K[g, s, t] A[g, s]`` (note [source, target])."""
    b, h, q, s = probs_BHQS.shape
    g, c, _ = kernel_GCC.shape
    if g * c != h:
        raise ValueError(f"head kernel {tuple(kernel_GCC.shape)} does not cover {h} heads")
    grouped = probs_BHQS.reshape(b, g, c, q, s)
    mixed = torch.einsum("gst,bgsqk->bgtqk", kernel_GCC.to(probs_BHQS.dtype), grouped)
    return mixed.reshape(b, h, q, s)


def _head_linear(x_BHQS: torch.Tensor, w_HH: torch.Tensor) -> torch.Tensor:
    return torch.einsum("gh,bhqs->bgqs", w_HH.to(x_BHQS.dtype), x_BHQS)


def mta_probs(q_BHQD: torch.Tensor, k_BHSD: torch.Tensor, allowed_BQS: torch.Tensor, *, scale: float | None = None,
              pre_kernel_HQK: torch.Tensor | None = None, pre_head_mix_HH: torch.Tensor | None = None,
              post_kernel_HQK: torch.Tensor | None = None, post_head_kernel_GCC: torch.Tensor | None = None,
              post_head_mix_HH: torch.Tensor | None = None, pad_key: str = "both") -> torch.Tensor:
    """Attention weights ``A_BHQS`` after every MTA op (vectorised, official order §2.6b)."""
    scale = q_BHQD.shape[-1] ** -0.5 if scale is None else scale
    scores_BHQS = torch.matmul(q_BHQD, k_BHSD.transpose(-1, -2)) * scale
    if pre_kernel_HQK is not None:
        scores_BHQS = kq_conv(scores_BHQS, allowed_BQS, pre_kernel_HQK, pad_key)
    if pre_head_mix_HH is not None:
        scores_BHQS = _head_linear(scores_BHQS, pre_head_mix_HH)
    # -inf would turn a row without any allowed key (a left-padding query) into NaN; min + zeroing gives zeros.
    softmax_dtype = torch.promote_types(scores_BHQS.dtype, torch.float32)  # fp32 for half types, fp64 stays
    logits_BHQS = scores_BHQS.to(softmax_dtype).masked_fill(~allowed_BQS[:, None], torch.finfo(softmax_dtype).min)
    probs_BHQS = torch.softmax(logits_BHQS, dim=-1).masked_fill(~allowed_BQS[:, None], 0.0).to(q_BHQD.dtype)
    if post_kernel_HQK is not None:
        probs_BHQS = kq_conv(probs_BHQS, allowed_BQS, post_kernel_HQK, pad_key)
        probs_BHQS = probs_BHQS.masked_fill(~allowed_BQS[:, None], 0.0)
    if post_head_kernel_GCC is not None:
        probs_BHQS = post_head_conv(probs_BHQS, post_head_kernel_GCC)
    elif post_head_mix_HH is not None:
        probs_BHQS = _head_linear(probs_BHQS, post_head_mix_HH)
    return probs_BHQS


def mta_attention_vectorised(q_BHQD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor,
                             allowed_BQS: torch.Tensor | None = None, **ops) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O_BHQD, A_BHQS)``; ``allowed_BQS`` defaults to causal with the queries ending at the last key;
    ``ops`` = the keyword arguments of :func:`mta_probs`."""
    if allowed_BQS is None:
        allowed_BQS = causal_allowed(q_BHQD.shape[2], k_BHSD.shape[2], device=q_BHQD.device)
    probs_BHQS = mta_probs(q_BHQD, k_BHSD, allowed_BQS, **ops)
    return torch.matmul(probs_BHQS, v_BHSD), probs_BHQS


# ------------------------------------------------------------------------------------------ naive reference (a)


def naive_kq_logits(S: list[list[float]], allowed: list[list[bool]], kernel: list[list[float]], pad_key: str,
                    mask_mode: str = "official") -> list[list[float]]:
    """Key-query convolution of one head's raw scores ``S[i][j]`` (before any masking), by explicit sums.

    ``mask_mode``: ``"official"`` reads ``S[i'][j']`` only where ``allowed[i'][j']`` (the Mask_0 of eq. (5));
    ``"eq4"`` reads it wherever key ``j'`` is allowed for the *current* query ``i`` (the exact eq. (4): keys up to
    ``i`` even for older queries ``i' < j' <= i``); ``"excluded"`` returns only the terms eq. (4) has and the
    official code drops.
    """
    n_q, n_k = len(S), len(S[0])
    c_q, c_k = len(kernel), len(kernel[0])
    left, _ = key_padding(pad_key, c_k)
    out = [[0.0] * n_k for _ in range(n_q)]
    for i in range(n_q):
        for j in range(n_k):
            total = 0.0
            for a in range(c_q):
                for b in range(c_k):
                    ii, jj = i - (c_q - 1) + a, j - left + b
                    if not (0 <= ii < n_q and 0 <= jj < n_k):
                        continue  # zero padding
                    official = allowed[ii][jj]
                    eq4 = allowed[i][jj]
                    use = {"official": official, "eq4": eq4, "excluded": eq4 and not official}[mask_mode]
                    if use:
                        total += kernel[a][b] * S[ii][jj]
            out[i][j] = total
    return out


def mta_attention_naive(q_BHQD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor,
                        allowed_BQS: torch.Tensor | None = None, *, scale: float | None = None,
                        pre_kernel_HQK: torch.Tensor | None = None, pre_head_mix_HH: torch.Tensor | None = None,
                        post_kernel_HQK: torch.Tensor | None = None, post_head_kernel_GCC: torch.Tensor | None = None,
                        post_head_mix_HH: torch.Tensor | None = None, pad_key: str = "both"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The same computation as :func:`mta_attention_vectorised`, as explicit loops over b, h, i, j, a, b (float64
    Python arithmetic). For tests on small shapes only."""
    B, H, Q, D = q_BHQD.shape
    S_len = k_BHSD.shape[2]
    if allowed_BQS is None:
        allowed_BQS = causal_allowed(Q, S_len)
    scale = D ** -0.5 if scale is None else scale
    q, k, v = q_BHQD.double().tolist(), k_BHSD.double().tolist(), v_BHSD.double().tolist()
    allowed_all = allowed_BQS.expand(B, Q, S_len).tolist()
    out = [[[[0.0] * D for _ in range(Q)] for _ in range(H)] for _ in range(B)]
    probs_out = [[[[0.0] * S_len for _ in range(Q)] for _ in range(H)] for _ in range(B)]
    for bi in range(B):
        allowed = allowed_all[bi]
        # 1. raw scores, 2. pre-softmax key-query convolution (or just the masked scores)
        logits = []
        for h in range(H):
            raw = [[scale * sum(q[bi][h][i][d] * k[bi][h][j][d] for d in range(D)) for j in range(S_len)]
                   for i in range(Q)]
            if pre_kernel_HQK is not None:
                logits.append(naive_kq_logits(raw, allowed, pre_kernel_HQK[h].double().tolist(), pad_key))
            else:
                logits.append(raw)
        # 3. pre-softmax head mixing
        if pre_head_mix_HH is not None:
            w = pre_head_mix_HH.double().tolist()
            logits = [[[sum(w[g][h] * logits[h][i][j] for h in range(H)) for j in range(S_len)] for i in range(Q)]
                      for g in range(H)]
        # 4. masked softmax
        probs = []
        for h in range(H):
            rows = []
            for i in range(Q):
                keys = [j for j in range(S_len) if allowed[i][j]]
                row = [0.0] * S_len
                if keys:
                    top = max(logits[h][i][j] for j in keys)
                    exps = {j: math.exp(logits[h][i][j] - top) for j in keys}
                    norm = sum(exps.values())
                    for j in keys:
                        row[j] = exps[j] / norm
                rows.append(row)
            probs.append(rows)
        # 5. post-softmax key-query convolution (probabilities are already 0 where masked), re-zeroed
        if post_kernel_HQK is not None:
            probs = [naive_kq_logits(probs[h], allowed, post_kernel_HQK[h].double().tolist(), pad_key)
                     for h in range(H)]
            probs = [[[p if allowed[i][j] else 0.0 for j, p in enumerate(row)] for i, row in enumerate(ph)]
                     for ph in probs]
        # 6. post-softmax head mixing
        if post_head_kernel_GCC is not None:
            kern = post_head_kernel_GCC.double().tolist()
            n_groups, size = len(kern), len(kern[0])
            mixed = [None] * H
            for g in range(n_groups):
                for t in range(size):
                    mixed[g * size + t] = [[sum(kern[g][s][t] * probs[g * size + s][i][j] for s in range(size))
                                            for j in range(S_len)] for i in range(Q)]
            probs = mixed
        elif post_head_mix_HH is not None:
            w = post_head_mix_HH.double().tolist()
            probs = [[[sum(w[g][h] * probs[h][i][j] for h in range(H)) for j in range(S_len)] for i in range(Q)]
                     for g in range(H)]
        # 7. weighted sum of values
        for h in range(H):
            for i in range(Q):
                probs_out[bi][h][i] = probs[h][i]
                out[bi][h][i] = [sum(probs[h][i][j] * v[bi][h][j][d] for j in range(S_len)) for d in range(D)]
    return torch.tensor(out, dtype=torch.float64), torch.tensor(probs_out, dtype=torch.float64)
