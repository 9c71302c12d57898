"""Rank-aware saving for the TRL wrappers under ``accelerate launch`` / ``torchrun`` (issue 16, item 2).

Every process of a multi-process run trains (DDP, FSDP or DeepSpeed shard the work), but exactly one writes the
model: :func:`build_once` runs the wrapper's ``build(tmp)`` on every rank, lets only the main process (global rank
0) rename its temporary folder into place (``trainers.cache.build_atomically``, the same atomic write as a
single-process run), gives the other ranks a throw-away folder that is removed, and ends with a barrier so that no
rank returns before the model folder exists. :func:`save_trained` calls ``Trainer.save_model`` on every rank in a
multi-process run: under FSDP / ZeRO-3 gathering the full state dict is a collective, and the Trainer writes on the
main process only (``args.should_save``). A single process keeps the plain ``save_pretrained`` path.

The rank comes from the launcher's environment (``WORLD_SIZE`` / ``RANK``, set by torchrun, which
``accelerate launch`` uses for multi-process runs), so these helpers import nothing heavy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import build_atomically

__all__ = ["SAVED", "barrier", "build_once", "is_main_process", "rank", "save_trained", "world_size"]

SAVED: list[Path] = []
"""The model folders this process renamed into place (the main process's list grows; other ranks' stays empty)."""


def world_size() -> int:
    """Number of processes in this training run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """Global rank of this process (0 without a launcher)."""
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True on global rank 0 (and in a single-process run): the one process that writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process run)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    else:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def build_once(final: Path, build: Callable[[Path], Any]) -> Path:
    """``build_atomically(final, build)`` on the main process; ``build`` into a removed scratch folder elsewhere.

    Every rank runs ``build`` (it trains, a collective); only rank 0's folder is renamed to ``final``; then all
    ranks meet at a barrier. A failure on any rank ends the run through the launcher (torchrun stops the others).
    """
    final = Path(final)
    if world_size() <= 1:
        out = build_atomically(final, build)
        SAVED.append(out)
        return out
    if is_main_process():
        out = build_atomically(final, build)
        SAVED.append(out)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".rank{rank()}-{final.name}-", dir=final.parent))
        try:
            build(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    return final


def save_trained(trainer: Any, tokenizer: Any, folder: Path) -> None:
    """Save the trained model and its tokenizer into ``folder`` (the main process writes; see the module doc)."""
    if world_size() > 1:
        trainer.save_model(str(folder))  # collective under FSDP/ZeRO-3; writes only where args.should_save
        if is_main_process() and trainer.processing_class is None:
            tokenizer.save_pretrained(folder)
        return
    trainer.model.save_pretrained(folder)
    (trainer.processing_class or tokenizer).save_pretrained(folder)
