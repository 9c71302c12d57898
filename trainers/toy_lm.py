"""A minimal, seeded plain-PyTorch training loop for the modeling CPU reproductions (MTA, CoPE, reverse, BTX).

Why not TRL: the toy tasks (spec/modeling.md §2.11, §3.6, §4.3, §5.5) train tiny randomly initialised models from
scratch on synthetic token ids with a loss mask, thousands of small steps; a 30-line loop has no tokenizer, no
dataset preprocessing and no per-step overhead, and it is easy to read next to the paper's recipe.

Defaults follow the official MTA/CoPE training code (lingua, spec §2.2): AdamW (β1 0.9, β2 0.98, eps 1e-8), gradient
clipping at 1.0, weight decay 0, constant learning rate after an optional linear warm-up. Loss = mean cross entropy
over the supervised (loss-masked) next-token targets.

Rows are ``(input_ids, loss_mask)`` pairs (lists or 1-D tensors of equal length; ``loss_mask[t] = 1`` means token
``t`` is a target, predicted from tokens ``< t``) or dicts with those two keys. Rows of a batch are right-padded with
``pad_id`` (loss mask 0); no attention mask is passed, which is exact for causal models because a real token never
attends to the padding on its right.

Data comes either from a fixed dataset (a sequence of rows, sampled in seeded shuffled epochs) or from a function
``batches_fn(rng: random.Random, batch_size: int) -> rows`` that generates fresh samples (the official toy tasks
draw new samples on the fly). Runs are deterministic for a given seed on one machine and thread count.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Row", "answer_error", "collate", "evaluate_answers", "run_arms", "train_causal_lm"]

Row = Any
"""``(input_ids, loss_mask)`` or ``{"input_ids": ..., "loss_mask": ...}`` (see the module docstring)."""

BatchesFn = Callable[[random.Random, int], Sequence[Row]]


def _split_row(row: Row) -> tuple[list[int], list[int]]:
    if isinstance(row, Mapping):
        ids, mask = row["input_ids"], row["loss_mask"]
    else:
        ids, mask = row
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    mask = mask.tolist() if isinstance(mask, torch.Tensor) else list(mask)
    if len(ids) != len(mask):
        raise ValueError(f"row has {len(ids)} input_ids but {len(mask)} loss_mask entries; they must be equal")
    return ids, [int(m) for m in mask]


def collate(rows: Sequence[Row], pad_id: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows into ``(input_ids_BL, loss_mask_BL)`` long tensors on ``device``."""
    if not rows:
        raise ValueError("cannot collate an empty batch")
    pairs = [_split_row(r) for r in rows]
    length = max(len(ids) for ids, _ in pairs)
    input_ids_BL = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    loss_mask_BL = torch.zeros((len(pairs), length), dtype=torch.long)
    for b, (ids, mask) in enumerate(pairs):
        input_ids_BL[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        loss_mask_BL[b, : len(mask)] = torch.tensor(mask, dtype=torch.long)
    return input_ids_BL.to(device), loss_mask_BL.to(device)


def _logits(model: torch.nn.Module, input_ids_BL: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=input_ids_BL)
    return out if isinstance(out, torch.Tensor) else out.logits


def _masked_loss(logits_BLV: torch.Tensor, input_ids_BL: torch.Tensor, loss_mask_BL: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over supervised targets: position t-1 predicts token t where loss_mask[t] = 1."""
    logits_BTV = logits_BLV[:, :-1].float()
    targets_BT = input_ids_BL[:, 1:]
    mask_BT = loss_mask_BL[:, 1:].float()
    nll_BT = F.cross_entropy(logits_BTV.transpose(1, 2), targets_BT, reduction="none")
    return (nll_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_causal_lm(
    model: torch.nn.Module,
    data: BatchesFn | Sequence[Row],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    grad_clip: float | None = 1.0,
    seed: int = 0,
    num_threads: int | None = None,
    log_every: int = 50,
    betas: tuple[float, float] = (0.9, 0.98),
    pad_id: int = 0,
    lr_decay: str = "constant",
    eval_fn: Callable[[torch.nn.Module, int], Mapping[str, float]] | None = None,
    eval_every: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train ``model`` (any causal LM called as ``model(input_ids=...)``) for ``steps`` optimizer steps.

    Args:
        data: a ``batches_fn(rng, batch_size) -> rows`` generator of fresh samples, or a fixed sequence of rows
            (seeded shuffled epochs; the last partial batch of an epoch is dropped unless the dataset is smaller
            than one batch).
        lr_decay: ``"constant"`` (lingua's constant scheduler, after the warm-up) or ``"cosine"`` (to 0 at ``steps``).
        eval_fn: called as ``eval_fn(model, step)`` in eval mode every ``eval_every`` steps and after the last step;
            its metrics are recorded in ``history``.
        num_threads: torch CPU threads during training (restored afterwards); ``None`` leaves the setting alone.
        log: a ``print``-like callable for progress lines, or ``None`` for silence.

    Returns:
        ``{"metrics": {"final_loss", "mean_loss_last_10pct", "steps", "tokens", "wall_s", "s_per_step", ...eval},
        "loss_curve": [loss per step], "history": [{"step", "loss", "lr", "wall_s", ...eval}]}``.
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and lr > 0; got steps={steps}, "
                         f"batch_size={batch_size}, lr={lr}")
    if lr_decay not in ("constant", "cosine"):
        raise ValueError(f"lr_decay={lr_decay!r} is not supported; use 'constant' or 'cosine'")
    if not callable(data) and len(data) == 0:
        raise ValueError("the training dataset is empty; pass rows or a batches_fn")

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)  # dropout and anything else the model draws
    rng = random.Random(seed)
    device = _device(model)
    order: list[int] = []

    def next_rows() -> Sequence[Row]:
        if callable(data):
            return data(rng, batch_size)
        nonlocal order
        if len(order) < min(batch_size, len(data)):
            order = list(range(len(data)))
            rng.shuffle(order)
        take, order = order[:batch_size], order[batch_size:]
        return [data[i] for i in take]

    def lr_at(step: int) -> float:  # step is 0-based
        if warmup_steps > 0 and step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        if lr_decay == "cosine":
            progress = (step - warmup_steps) / max(1, steps - warmup_steps)
            return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, eps=1e-8, weight_decay=weight_decay)
    losses: list[float] = []
    history: list[dict[str, float]] = []
    last_eval: dict[str, float] = {}
    tokens = 0
    start = time.perf_counter()

    def evaluate_now(step: int) -> dict[str, float]:
        model.eval()  # inference mode, safe
        with torch.no_grad():
            metrics = {k: float(v) for k, v in eval_fn(model, step).items()}
        model.train()
        return metrics

    try:
        model.train()
        for step in range(steps):
            input_ids_BL, loss_mask_BL = collate(next_rows(), pad_id=pad_id, device=device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = _masked_loss(_logits(model, input_ids_BL), input_ids_BL, loss_mask_BL)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            losses.append(loss.item())
            tokens += int(input_ids_BL.numel())
            done = step + 1
            record: dict[str, float] | None = None
            if eval_fn is not None and ((eval_every and done % eval_every == 0) or done == steps):
                last_eval = evaluate_now(done)
                record = {"step": done, "loss": losses[-1], "lr": lr_at(step),
                          "wall_s": time.perf_counter() - start, **last_eval}
            elif log_every and (done % log_every == 0 or done == steps):
                record = {"step": done, "loss": losses[-1], "lr": lr_at(step), "wall_s": time.perf_counter() - start}
            if record is not None:
                history.append(record)
                if log is not None:
                    log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    wall = time.perf_counter() - start
    tail = losses[-max(1, steps // 10):]
    metrics = {"final_loss": losses[-1], "mean_loss_last_10pct": sum(tail) / len(tail), "steps": steps,
               "tokens": tokens, "wall_s": wall, "s_per_step": wall / steps, **last_eval}
    return {"metrics": metrics, "loss_curve": losses, "history": history}


@torch.no_grad()
def evaluate_answers(model: torch.nn.Module, rows: Sequence[Row], *, batch_size: int = 64,
                     pad_id: int = 0) -> dict[str, float]:
    """Teacher-forced greedy accuracy on the loss-masked tokens (spec §1 "teacher-forced error").

    Returns ``{"err_seq": fraction of rows with >= 1 wrong supervised token, "err_tok": fraction of wrong supervised
    tokens, "n": rows}``. The model is put in eval mode and restored to its previous mode.
    """
    if not rows:
        raise ValueError("answer_error needs at least one row")
    was_training = model.training
    model.eval()  # inference mode, safe
    device = _device(model)
    wrong_rows = wrong_tok = n_tok = 0
    try:
        for lo in range(0, len(rows), batch_size):
            input_ids_BL, loss_mask_BL = collate(rows[lo: lo + batch_size], pad_id=pad_id, device=device)
            pred_BT = _logits(model, input_ids_BL)[:, :-1].argmax(-1)
            mask_BT = loss_mask_BL[:, 1:].bool()
            wrong_BT = (pred_BT != input_ids_BL[:, 1:]) & mask_BT
            wrong_rows += int(wrong_BT.any(dim=1).sum())
            wrong_tok += int(wrong_BT.sum())
            n_tok += int(mask_BT.sum())
    finally:
        model.train(was_training)
    return {"err_seq": wrong_rows / len(rows), "err_tok": wrong_tok / max(1, n_tok), "n": float(len(rows))}


def answer_error(model: torch.nn.Module, rows: Sequence[Row], *, batch_size: int = 64, pad_id: int = 0) -> float:
    """Fraction of rows whose loss-masked tokens are not all predicted right (greedy, teacher-forced)."""
    return evaluate_answers(model, rows, batch_size=batch_size, pad_id=pad_id)["err_seq"]


def run_arms(run_arm: Callable[[str, Any], dict], arms: Sequence[str], args: Any, jobs: int = 1) -> dict[str, dict]:
    """``{arm: run_arm(arm, args)}`` for the arms of a reproduction; with ``jobs`` > 1 the arms run in that many
    spawned processes (one core each on the 2-core machine), so ``run_arm`` must be a module-level function."""
    if jobs <= 1:
        return {arm: run_arm(arm, args) for arm in arms}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {arm: pool.submit(run_arm, arm, args) for arm in arms}
        return {arm: f.result() for arm, f in futures.items()}
