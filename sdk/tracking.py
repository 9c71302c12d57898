"""Experiment tracking: one switch sends TRL training logs and loop-iteration metrics to the same tracker.

``LOOPWRIGHT_REPORT_TO`` (default ``none``) is a comma-separated list of transformers ``report_to`` names
(``tensorboard``, ``wandb``, ``mlflow``, ``trackio`` ...). An environment variable rather than a loop option
because one setting has to reach every trainer a loop starts, including those under ``accelerate launch``:

- every TRL run of the wrappers (``sft_train``, ``dpo_train``, ``reward_train``) gets it as ``report_to``
  unless its ``trl_config`` sets one; TensorBoard writes to ``<run>/tensorboard/<model folder>`` (or
  ``TENSORBOARD_LOGGING_DIR`` when set), outside the trainer's scratch folder, which is deleted;
- every loop iteration appended to ``iterations.jsonl`` (:func:`loopwright.sdk.report.append_iteration`) is
  also written as ``loop/<metric>`` scalars at step = iteration to ``<run>/tensorboard/loop``.

W&B without a network: ``LOOPWRIGHT_REPORT_TO=wandb WANDB_MODE=offline`` (``wandb sync`` later). Loop
iterations go to TensorBoard only; W&B's ``wandb.tensorboard.patch()`` can mirror them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["REPORT_TO_ENV", "log_iteration", "report_to", "tensorboard_dir"]

REPORT_TO_ENV = "LOOPWRIGHT_REPORT_TO"


def report_to() -> list[str]:
    """The trackers named by ``LOOPWRIGHT_REPORT_TO`` (``[]`` when unset or ``none``)."""
    names = [n.strip() for n in os.environ.get(REPORT_TO_ENV, "").split(",") if n.strip()]
    return [] if names in ([], ["none"]) else names


def tensorboard_dir(run_dir: str | Path) -> Path:
    """Where a run's TensorBoard event files go: ``<run>/tensorboard``."""
    return Path(run_dir) / "tensorboard"


def log_iteration(run_dir: str | Path, iteration: int, metrics: Mapping[str, Any]) -> Path | None:
    """Write the finite numeric ``metrics`` of one loop iteration as ``loop/<name>`` scalars (TensorBoard only).

    Returns the event folder, or ``None`` when TensorBoard is not among :func:`report_to`."""
    if "tensorboard" not in report_to():
        return None
    from torch.utils.tensorboard import SummaryWriter

    out = tensorboard_dir(run_dir) / "loop"
    writer = SummaryWriter(log_dir=str(out))
    try:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                writer.add_scalar(f"loop/{name}", float(value), global_step=int(iteration))
    finally:
        writer.close()
    return out
