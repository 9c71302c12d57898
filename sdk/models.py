"""Model paths: check a model argument *before* loading anything, so a typo reads as one clear line.

Without this check a missing folder such as ``/tmp/runs/seed`` reaches ``from_pretrained``, which takes it
for a hub id and fails with ``Repo id must be in the form 'repo_name'`` (issue 17, item 5).
:func:`resolve_model_path` is called first by TransformersGenerator, VLLMGenerator, RewardModelJudge, the
recipes and the examples. The hub is never contacted: a bare ``org/name`` id passes only when it is already
in the local Hugging Face cache, or when the user turned downloads on with ``HF_HUB_OFFLINE=0``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .errors import ModelNotFoundError

__all__ = ["check_model_arg", "describe_folder", "resolve_model_path"]

# Hugging Face repo ids: ``name`` or ``org/name`` of [A-Za-z0-9._-] (huggingface_hub's validate_repo_id).
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
MAX_LISTED = 8
"""Entries shown from the nearest existing folder (hidden ones skipped, the rest counted, names cut at 40)."""


def describe_folder(path: Path, limit: int = MAX_LISTED) -> str:
    """``"holds: a/, b, c (+4 more)"`` for ``path``'s entries, sorted, folders marked with ``/``."""
    try:
        entries = sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        return f"cannot be listed ({e.strerror or e})"
    if not entries:
        return "is empty"
    names = [p.name[:40] + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" (+{len(entries) - limit} more)" if len(entries) > limit else ""
    return "holds: " + ", ".join(names) + more


def _looks_local(text: str) -> bool:
    return (os.path.isabs(text) or text.startswith(("./", "../", "~", ".")) or text.count("/") > 1
            or (os.sep != "/" and os.sep in text) or not _HUB_ID.fullmatch(text))


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an invalid id or an unreadable cache simply means "not cached"
        return False
    return isinstance(found, str)


def _hub_downloads_on() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


def resolve_model_path(model: str | os.PathLike[str], *, revision: str | None = None) -> str:
    """The model argument to hand to ``from_pretrained`` / vLLM, or :class:`ModelNotFoundError` in one line.

    A registered real-model name (``smollm2-135m-instruct``) gives its built folder. An existing folder
    (``~`` expanded) passes when it holds a ``config.json``; a ``.gguf`` file passes (vLLM).
    A local-looking path (absolute, ``./``, ``../``, ``~``, several ``/``) that does not exist raises
    ``no model folder at PATH; <nearest existing folder> holds: ...``. A hub-style id (``org/name``) passes
    only when cached locally or with ``HF_HUB_OFFLINE=0``; else it raises, since loopwright runs offline.
    """
    text = os.fspath(model)
    if not text.strip():
        raise ModelNotFoundError("the model path is empty; pass a model folder (e.g. `loopwright sandbox` prints one)")
    from .model_names import lookup_model_name

    if (registered := lookup_model_name(text)) is not None:  # `smollm2-135m-instruct` -> its built folder
        return registered
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a model folder (no config.json); it {describe_folder(path)}")
        return str(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return str(path)
        raise ModelNotFoundError(f"{path} is a file; pass the model folder that holds it ({path.parent})")
    if not _looks_local(text):
        if _in_hub_cache(text, revision) or _hub_downloads_on():
            return text
        raise ModelNotFoundError(f"no model folder at {text} (hub downloads are off; pass a local folder, "
                                 "or set HF_HUB_OFFLINE=0 to let transformers download it)")
    parent = path.absolute().parent
    where = "its folder"
    while not parent.is_dir() and parent != parent.parent:
        parent, where = parent.parent, "the nearest existing folder"
    raise ModelNotFoundError(f"no model folder at {text}; {where} {parent} {describe_folder(parent)}")


def check_model_arg(parser: Any, model: str | None) -> str | None:
    """For example scripts: ``model`` resolved, or ``parser.error(...)`` (one ``error:`` line, exit 2).

    ``None`` (the sandbox default) passes through. Call it right after ``parse_args``, before any run folder.
    """
    if model is None:
        return None
    try:
        return resolve_model_path(model)
    except ModelNotFoundError as e:
        parser.error(f"--model: {e}")
    return None  # pragma: no cover - parser.error exits
