"""Elo / Bradley–Terry ratings by maximum likelihood from a weighted battle matrix (Meta-Rewarding, §3.4 step 4).

``r = argmax_r  Σ_{m,n} B[m,n] · log σ(r_m − r_n)  −  l2 · Σ r²``, with ``Σ r = 0`` (spec/loops.md §3.4; defaults
``max_iter=500``, ``l2=1e-4`` from Appendix A.3 [S]). The objective is concave; we run Newton's method with
backtracking (a few dozen iterations reach the optimum to ``tol``; plain gradient ascent crawled when an item
never loses, because the gradient decays exponentially there). The tiny L2 keeps ratings finite when a judgement never loses (or never
wins) and when the comparison graph is disconnected.

Also :func:`spearman` (rank correlation with average ranks for ties), used for judge–truth agreement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["elo_log_likelihood", "elo_mle", "spearman"]


def _as_matrix(battles: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    B = np.asarray(battles, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1]:
        raise ValueError(f"battle matrix must be square (n x n), got shape {B.shape}")
    if not np.all(np.isfinite(B)) or np.any(B < 0):
        raise ValueError("battle matrix entries must be finite and >= 0 (weighted win counts)")
    return B


def elo_log_likelihood(ratings: Sequence[float] | np.ndarray, battles: Sequence[Sequence[float]] | np.ndarray,
                       l2: float = 1e-4) -> float:
    """The objective maximised by :func:`elo_mle` at ``ratings``."""
    B = _as_matrix(battles)
    r = np.asarray(ratings, dtype=np.float64)
    diff = r[:, None] - r[None, :]
    return float(np.sum(B * -np.logaddexp(0.0, -diff)) - l2 * np.sum(r * r))


def elo_mle(battles: Sequence[Sequence[float]] | np.ndarray, *, max_iter: int = 500, l2: float = 1e-4,
            tol: float = 1e-10) -> np.ndarray:
    """Bradley–Terry ratings (natural-log scale, ``Σ r = 0``) maximising the weighted log-likelihood.

    Args:
        battles: ``B[m, n]`` = (weighted) number of times item ``m`` beat item ``n``; the diagonal is ignored.
        max_iter: at most this many Newton iterations (A.3 default 500; usually < 30 are needed).
        l2: ridge penalty on the ratings (A.3 default 1e-4); must be > 0 when some item never loses.
        tol: stop early once the largest gradient entry is below this.
    """
    B = _as_matrix(battles).copy()
    np.fill_diagonal(B, 0.0)
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter} must be >= 1")
    if l2 < 0:
        raise ValueError(f"l2={l2} must be >= 0")
    n = B.shape[0]
    r = np.zeros(n)
    if n <= 1 or not B.any():
        return r
    obj = elo_log_likelihood(r, B, l2)
    for _ in range(max_iter):
        # gradient: d/dr_k = Σ_n B[k,n] σ(r_n − r_k) − Σ_m B[m,k] σ(r_k − r_m) − 2 l2 r_k
        sig = 1.0 / (1.0 + np.exp(r[:, None] - r[None, :]))  # sig[k, n] = σ(r_n − r_k)
        grad = (B * sig).sum(axis=1) - (B * sig).sum(axis=0) - 2.0 * l2 * r
        if float(np.abs(grad).max()) < tol:
            break
        # Hessian: −Σ_{m,n} B[m,n] σ(d)σ(−d) (e_m − e_n)(e_m − e_n)^T − 2 l2 I, negative definite for l2 > 0
        W = B * sig * (1.0 - sig)
        W = W + W.T
        H = W - np.diag(W.sum(axis=1)) - (2.0 * l2 + 1e-12) * np.eye(n)
        step = np.linalg.lstsq(H, -grad, rcond=None)[0]
        t = 1.0
        while t > 1e-8:  # backtracking: Newton's step may overshoot far from the optimum
            cand = r + t * step
            cand -= cand.mean()
            val = elo_log_likelihood(cand, B, l2)
            if val >= obj - 1e-12:
                break
            t *= 0.5
        else:
            break
        r, obj = cand, val
    return r


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); ``None`` when undefined (n < 2 or a constant input)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two equal-length 1-d sequences, got {x.shape} and {y.shape}")
    if len(x) < 2:
        return None
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    if den == 0.0:
        return None
    return float((rx * ry).sum() / den)
