"""On-disk model cache plumbing shared by the trainers: a folder lock, atomic folder builds, package versions.

Used by the sandbox seed model (``trainers/sandbox/seed.py``), :func:`~loopwright.trainers.sft.ensure_sft_model`,
the sandbox reward model and every trainer wrapper that writes a model folder:

- :func:`locked` -- an ``fcntl`` lock on ``folder/.lock`` so two processes never build the same model at once;
- :func:`build_atomically` -- run ``build(tmp)`` in a temporary sibling folder and rename it into place, so a
  reader sees either no folder or a complete one (a killed build leaves only a ``.tmp-*`` folder behind);
- :func:`versions` -- the versions of the packages that determine a trained model (recorded in manifests).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["build_atomically", "locked", "versions"]

_VERSIONED = ("torch", "transformers", "tokenizers", "trl", "datasets", "accelerate", "loopwright")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` (created with its folder) for the body of the ``with``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_atomically(final: Path, build: Callable[[Path], Any]) -> Path:
    """Run ``build(tmp_dir)`` and rename ``tmp_dir`` to ``final``; returns ``final``.

    The temporary folder is a sibling of ``final`` (same filesystem, so the rename is atomic). An existing
    ``final`` is replaced (callers check their manifest first: a folder without one is a leftover of an older,
    interrupted builder). On any exception the temporary folder is removed and ``final`` is untouched. Callers
    that may race hold :func:`locked` on the parent folder.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        build(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=final.parent))
            os.rename(final, old / "x")
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def versions() -> dict[str, str]:
    """Installed versions of the packages that determine a trained model (missing ones are left out)."""
    import importlib.metadata as md

    out = {}
    for pkg in _VERSIONED:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out
