"""Generator backends: transformers, vLLM, OpenAI-compatible servers and a scripted test double.

Loaded lazily (each backend imports its engine), so importing this package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TransformersGenerator": ".transformers",
    "VLLMGenerator": ".vllm",
    "OpenAIGenerator": ".openai",
    "ScriptedGenerator": ".scripted",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = list(_LAZY)
