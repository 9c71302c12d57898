"""Branch-Train-Merge baselines over N dense experts (Li et al. 2022, arXiv:2208.03306; spec/modeling.md §5.2).

- :func:`average_dense`: one dense model whose every tensor is the (weighted) mean of the experts' tensors
  (the "merge by averaging" baseline; known to fail badly for diverged experts, spec §5.4).
- :func:`btm_ensemble_logprobs`: ensemble of the N full expert LMs, next-token distribution
  p(x_t | x_<t) = sum_j w_j(t) p_j(x_t | x_<t), with domain-posterior weights from the prefix:
  w_j(t) ∝ prior_j * prod_{s=1}^{t-1} p_j(x_s | x_<s) (the prefix x_<t scored by expert j; position 0
  has an empty scored prefix, so its weights are the prior). ``top`` keeps only the ``top`` largest
  weights per position and renormalises (BTM's top-1 / top-2 variants).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .merge import check_experts, load_experts

__all__ = ["average_dense", "btm_ensemble_logprobs", "btm_posterior"]


def average_dense(experts: Sequence[Any], weights: Sequence[float] | None = None):
    """Parameter average of N same-layout Llama experts -> a new ``LlamaForCausalLM`` (fp32)."""
    import copy

    import torch

    models = load_experts(experts)
    check_experts(models, num_experts_per_tok=1)
    n = len(models)
    if weights is None:
        weights = [1.0 / n] * n
    elif len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights={list(weights)!r} must be {n} non-negative numbers with a positive sum")
    total = float(sum(weights))
    w = [float(x) / total for x in weights]
    out = copy.deepcopy(models[0]).to(torch.float32)
    states = [m.state_dict() for m in models]
    out.load_state_dict({k: sum(wi * s[k].float() for wi, s in zip(w, states, strict=True)) for k in states[0]})
    out.eval()  # inference mode, safe
    return out


def btm_posterior(token_logprobs_NBL: Any, prior_N: Any = None):
    """Posterior weights (N, B, L) from per-expert token log-probs (N, B, L), entry t = log p_j(x_t | x_<t).

    The weight at position t uses the tokens 1..t-1 (token 0 is never scored); rows sum to 1 over experts.
    """
    import torch

    n = token_logprobs_NBL.shape[0]
    log_prior_N = (
        torch.full((n,), -torch.log(torch.tensor(float(n))).item()) if prior_N is None else torch.log(prior_N.float())
    ).to(token_logprobs_NBL.device)
    scored_NBL = token_logprobs_NBL.float().clone()
    scored_NBL[:, :, 0] = 0.0
    prefix_NBL = torch.cumsum(scored_NBL, dim=-1) - scored_NBL  # sum over s < t (exclusive)
    return torch.softmax(prefix_NBL + log_prior_N[:, None, None], dim=0)


def btm_ensemble_logprobs(experts: Sequence[Any], input_ids_BL: Any, prior_N: Any = None, top: int | None = None):
    """Log-probs (B, L, V) of the BTM ensemble: row t predicts token t+1 from x_<=t (like ``logits[:, t]``)."""
    import torch

    models = load_experts(experts)
    if top is not None and not 1 <= top <= len(models):
        raise ValueError(f"top={top} must be in [1, {len(models)}] (the number of experts)")
    with torch.no_grad():
        logp_NBLV = torch.stack(
            [torch.log_softmax(m(input_ids=input_ids_BL).logits.float(), dim=-1) for m in models]
        )
    # log p_j(x_t | x_<t) for t >= 1, at row t-1 of the model output; position 0 gets 0.
    tok_NBL = torch.zeros(logp_NBLV.shape[:3], device=logp_NBLV.device)
    tok_NBL[:, :, 1:] = logp_NBLV[:, :, :-1].gather(-1, input_ids_BL[None, :, 1:, None].expand(
        len(models), -1, -1, 1)).squeeze(-1)
    # row t predicts x_{t+1}; its weights use the prefix x_1..x_t, i.e. the posterior at position t+1.
    post_NBL = btm_posterior(torch.cat([tok_NBL, torch.zeros_like(tok_NBL[:, :, :1])], dim=-1), prior_N)[:, :, 1:]
    if top is not None and top < len(models):
        thresh_BL = torch.topk(post_NBL, top, dim=0).values[-1]
        post_NBL = torch.where(post_NBL >= thresh_BL, post_NBL, torch.zeros_like(post_NBL))
        post_NBL = post_NBL / post_NBL.sum(0, keepdim=True)
    return torch.logsumexp(logp_NBLV + torch.log(post_NBL.clamp_min(1e-30))[..., None], dim=0)
