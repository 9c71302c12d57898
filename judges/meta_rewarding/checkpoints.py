"""Checks that a model checkpoint or a loop's state file is whole before a loop builds on it.

A missing or corrupt checkpoint must fail with a message that names the file (issue 5, "Bad input"), not with a
transformers/safetensors traceback three stages later. :func:`check_model_dir` reads only headers (no torch):
``config.json`` must parse, and every ``*.safetensors`` file must hold a readable header whose tensors fit the
file (a truncated copy fails). :func:`check_state_db` opens the LangGraph SQLite checkpointer read-only and runs
``PRAGMA quick_check``.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

from loopwright.sdk.errors import LoopwrightError

__all__ = ["CheckpointError", "check_model_dir", "check_state_db"]


class CheckpointError(LoopwrightError, FileNotFoundError):
    """A model checkpoint or loop state file is missing or corrupt; ``path`` names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(path, f"truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(path, f"corrupt safetensors header (claims {n} bytes, file has {size})")
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"corrupt safetensors header ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(path, "corrupt safetensors header (not a JSON object)")
    end = max((int(t["data_offsets"][1]) for k, t in header.items()
               if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t), default=0)
    if 8 + n + end > size:
        raise CheckpointError(path, f"truncated safetensors file: tensors need {8 + n + end} bytes, file has {size}; "
                                    "the write was interrupted — retrain or restore this checkpoint")


def check_model_dir(path: str | Path, *, what: str = "model checkpoint") -> Path:
    """Raise :class:`CheckpointError` naming the file unless ``path`` is a readable transformers model folder."""
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(p, f"{what} not found (no such folder)")
    cfg = p / "config.json"
    if not cfg.is_file():
        raise CheckpointError(cfg, f"{what} has no config.json; not a transformers model folder")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(cfg, f"corrupt config.json ({e})") from e
    shards = sorted(p.glob("*.safetensors"))
    if not shards and not (p / "pytorch_model.bin").is_file():
        raise CheckpointError(p / "model.safetensors", f"{what} has no weights file (model.safetensors)")
    for shard in shards:
        _check_safetensors(shard)
    return p


def check_state_db(path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming ``path`` if it is not a readable SQLite database."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "loop state (LangGraph SQLite checkpoint) not found; nothing to resume")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise CheckpointError(p, f"corrupt loop state database ({e}); resume is impossible — start a new run "
                                 "directory") from e
    if not row or row[0] != "ok":
        raise CheckpointError(p, f"corrupt loop state database (quick_check: {row[0] if row else 'no answer'})")
