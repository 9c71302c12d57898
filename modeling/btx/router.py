"""BTX MoE-finetune: the load-balancing loss, router-only freezing and a small training loop.

Load balancing (Switch Transformer, Fedus et al. 2021; spec/modeling.md §5.1): with u_i the fraction of
routed token-slots sent to expert i and p_i the mean (full, not top-k) softmax probability of expert i,
L_LB = N * sum_i u_i * p_i. Gradient flows only through p (the top-k counts are piecewise constant).
Implemented here from raw router logits (spec §5.4 lists four transformers bugs in this loss), in two
conventions:

- ``"hf"``: transformers' ``load_balancing_loss_func`` exactly — the k slot-fractions are summed (uniform
  routing gives k) and layers are concatenated (u and p pooled over all layers' rows, then multiplied);
- ``"switch"``: per layer, u_i counts each of the k slots with weight 1/k (uniform routing gives 1, all
  tokens on one expert with one-hot p gives N), then averaged over layers.

The coefficient alpha is applied by the caller (:func:`moe_finetune` uses ``model.config.router_aux_loss_coef``;
BTX's exact alpha is not public, Switch uses 0.01).

BTX finetunes all parameters after the merge (spec §5.1 step 4); ``routers_only=True`` freezes everything
but the new routers (cheaper; the setting to use when the experts must stay exactly as trained).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["freeze_all_but_routers", "load_balance_loss", "moe_finetune", "router_parameters"]

CONVENTIONS = ("hf", "switch")


def load_balance_loss(
    router_logits: Sequence[Any],
    num_experts: int,
    top_k: int,
    attention_mask: Any = None,
    convention: str = "hf",
):
    """L_LB (without alpha) from per-layer raw router logits, each (T, E) with T = batch * length rows.

    ``attention_mask`` (B, L), if given, excludes padding rows from u and p.
    """
    import torch

    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not one of {CONVENTIONS}")
    if len(router_logits) == 0:
        raise ValueError("router_logits is empty: run the model with output_router_logits=True")
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k={top_k} must be in [1, num_experts={num_experts}]")
    device = router_logits[0].device
    mask_T = None if attention_mask is None else attention_mask.reshape(-1).to(device=device, dtype=torch.float32)
    counts_sum_E = torch.zeros(num_experts, device=device)
    probs_sum_E = torch.zeros(num_experts, device=device)
    rows = torch.zeros((), device=device)
    per_layer = []
    for logits_TE in router_logits:
        probs_TE = torch.softmax(logits_TE.float(), dim=-1)
        top_idx_TK = torch.topk(probs_TE, top_k, dim=-1).indices
        slots_TE = torch.zeros_like(probs_TE).scatter_(1, top_idx_TK, 1.0)  # 1 where expert i is among the k
        w_T = torch.ones(probs_TE.shape[0], device=device) if mask_T is None else mask_T
        counts_E = (slots_TE * w_T[:, None]).sum(0)
        probs_E = (probs_TE * w_T[:, None]).sum(0)
        n_rows = w_T.sum()
        if convention == "hf":
            counts_sum_E = counts_sum_E + counts_E
            probs_sum_E = probs_sum_E + probs_E
            rows = rows + n_rows
        else:
            u_E = counts_E / (n_rows * top_k)
            p_E = probs_E / n_rows
            per_layer.append(num_experts * (u_E * p_E).sum())
    if convention == "hf":
        return num_experts * ((counts_sum_E / rows) * (probs_sum_E / rows)).sum()
    return torch.stack(per_layer).mean()


def router_parameters(model: Any) -> list[tuple[str, Any]]:
    """(name, parameter) of every MoE router (``...mlp.gate.weight``) of a Mixtral model."""
    out = [(n, p) for n, p in model.named_parameters() if n.endswith("mlp.gate.weight")]
    if not out:
        raise ValueError(f"{type(model).__name__} has no MoE routers (mlp.gate.weight); pass a merged Mixtral model")
    return out


def freeze_all_but_routers(model: Any) -> int:
    """Set ``requires_grad`` False on every parameter except the routers; returns the number left trainable."""
    names = {n for n, _ in router_parameters(model)}
    n_trainable = 0
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        n_trainable += p.numel() if n in names else 0
    return n_trainable


def moe_finetune(
    model: Any,
    batch_fn: Callable[[random.Random], Any],
    *,
    steps: int,
    lr: float = 1e-3,
    aux_coef: float | None = None,
    routers_only: bool = False,
    convention: str = "hf",
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    betas: tuple[float, float] = (0.9, 0.98),
    seed: int = 0,
    log_every: int = 0,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train a merged Mixtral with LM loss + alpha * L_LB (plain PyTorch AdamW loop, seeded).

    Args:
        batch_fn: ``batch_fn(rng) -> input_ids_BL`` or ``(input_ids_BL, loss_mask_BL)`` (LongTensors; loss mask 1
            on target tokens, predicted from the tokens before them; default all tokens after the first).
        aux_coef: alpha; default ``model.config.router_aux_loss_coef``.
        routers_only: freeze everything but the routers (see the module docstring).

    Returns ``{"lm_loss": [...], "aux_loss": [...], "wall_s": float, "trainable_params": int}`` per step.
    """
    import torch
    import torch.nn.functional as F

    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    alpha = model.config.router_aux_loss_coef if aux_coef is None else aux_coef
    if routers_only:
        freeze_all_but_routers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: unfreeze some (routers_only=False) before moe_finetune")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    num_experts, top_k = model.config.num_local_experts, model.config.num_experts_per_tok
    device = next(model.parameters()).device
    hist: dict[str, Any] = {"lm_loss": [], "aux_loss": [], "trainable_params": sum(p.numel() for p in params)}
    t0 = time.time()
    model.train()
    for step in range(steps):
        batch = batch_fn(rng)
        if isinstance(batch, (tuple, list)):
            input_ids_BL, loss_mask_BL = (t.to(device) for t in batch)
        else:
            input_ids_BL = batch.to(device)
            loss_mask_BL = torch.ones_like(input_ids_BL)
            loss_mask_BL[:, 0] = 0
        out = model(input_ids=input_ids_BL, output_router_logits=True, use_cache=False)
        logits_BLV = out.logits[:, :-1].float()
        targets_BL = input_ids_BL[:, 1:]
        mask_BL = loss_mask_BL[:, 1:].float()
        nll_BL = F.cross_entropy(logits_BLV.transpose(1, 2), targets_BL, reduction="none")
        lm_loss = (nll_BL * mask_BL).sum() / mask_BL.sum().clamp(min=1.0)
        aux = load_balance_loss(out.router_logits, num_experts, top_k, convention=convention)
        loss = lm_loss + alpha * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        hist["lm_loss"].append(float(lm_loss.detach()))
        hist["aux_loss"].append(float(aux.detach()))
        if log is not None and log_every and (step + 1) % log_every == 0:
            log(f"moe_finetune step {step + 1}/{steps} lm_loss {float(lm_loss):.4f} aux {float(aux):.4f}")
    model.eval()  # inference mode, safe
    hist["wall_s"] = time.time() - t0
    return hist
