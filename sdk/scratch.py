"""Stale scratch folders in a run directory: what a killed train stage leaves behind, removed on resume.

The trainers build every model folder in a hidden ``tempfile.mkdtemp`` sibling and rename it into place; a
SIGKILL in between leaves the scratch folder behind (issue 15: 11 of 70 kills left an empty
``iterN/.dpo-trainer-*`` or ``.tmp-model-*``), and the resumed stage makes new ones with new random names, so
nothing else ever removes them. The shapes, one per creator (each ``<prefix><8 mkdtemp characters>``):

- ``.{kind}-trainer-XXXXXXXX`` -- the TRL ``output_dir`` of ``trainers/result.py`` (``kind``: sft, dpo, reward);
- ``.tmp-{name}-XXXXXXXX`` / ``.old-{name}-XXXXXXXX`` -- ``trainers.cache.build_atomically``;
- ``.rank{N}-{name}-XXXXXXXX`` -- a non-main rank's throw-away build in ``trainers/distributed.py``.

The sweep also removes the *files* of one more shape: ``.{name}.XXXXXXXX.tmp``, the temporary file of an atomic
write (``sdk.artifacts._atomic_file``: every JSONL artifact, the manifest), left behind by a SIGKILL between its
``mkstemp`` and its ``os.replace`` (issue 17 item 15: a kill inside a judge stage left
``iter1/.judgments.jsonl.xijdpcvt.tmp``).

This lives in sdk because the resume path (:func:`~loopwright.sdk.stages.run_stages`) does, and sdk may not
import trainers; ``tests/sdk/test_scratch.py`` checks the shapes against the real creators.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

__all__ = ["SCRATCH_RE", "is_scratch_name", "remove_stale_scratch"]

log = logging.getLogger(__name__)

_MKDTEMP_SUFFIX = r"[a-z0-9_]{8}"
"""``tempfile.mkdtemp``'s random part: 8 characters from ``tempfile._RandomNameSequence.characters``."""

SCRATCH_RE = re.compile(
    rf"\.(?:[a-z][a-z0-9_]*-trainer|(?:tmp|old)-.+|rank[0-9]+-.+)-{_MKDTEMP_SUFFIX}", re.ASCII
)
"""The full name of a scratch folder (matched with ``fullmatch``)."""

_TMP_FILE_RE = re.compile(rf"\..+\.{_MKDTEMP_SUFFIX}\.tmp", re.ASCII)
"""The full name of an atomic write's temporary file: ``mkstemp(prefix=f".{name}.", suffix=".tmp")``."""


def is_scratch_name(name: str) -> bool:
    """Whether ``name`` has the exact shape of a trainer scratch folder (see the module docstring)."""
    return SCRATCH_RE.fullmatch(name) is not None


def remove_stale_scratch(run_dir: str | Path) -> list[Path]:
    """Remove every scratch folder (empty or not) under ``run_dir``, recursively, and every atomic write's
    temporary file (``.{name}.XXXXXXXX.tmp``); returns the removed paths.

    Only real directories whose name matches :data:`SCRATCH_RE` and regular files of the temporary-file shape
    go; other files, symlinks (and what they point to) and every other folder stay. A removed folder is not
    descended into; one that cannot be removed is logged and skipped. Call it only when no process writes the run
    (at the start of a resume): a live trainer's scratch folder has the same shape.
    """
    root = Path(run_dir)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for parent, dirnames, filenames in os.walk(root, followlinks=False):
        for f in filenames:
            path = Path(parent) / f
            if _TMP_FILE_RE.fullmatch(f) is None or path.is_symlink():
                continue
            try:
                path.unlink()
            except OSError as e:
                log.warning("could not remove stale temporary file %s: %s", path, e)
                continue
            removed.append(path)
        keep = []
        for d in dirnames:
            path = Path(parent) / d
            if not is_scratch_name(d) or path.is_symlink():
                keep.append(d)
                continue
            try:
                shutil.rmtree(path)
            except OSError as e:  # a folder we may not delete must not stop the resume; say so
                log.warning("could not remove stale scratch folder %s: %s", path, e)
                continue
            removed.append(path)
        dirnames[:] = keep  # do not walk into removed folders
    return sorted(removed)
