"""loopwright: typed, composable parts for self-improving LLM loops (generate -> judge -> filter -> train).

Importing this package is cheap on purpose: it loads none of torch, transformers, vllm, ray, trl or langgraph.
The names a first script needs (those the README uses) are importable from here and loaded on first use
(PEP 562), e.g. ``from loopwright import PairwiseJudge, OpenAIGenerator``. Everything else lives in the
sub-packages, each with the same lazy exports: ``loopwright.sdk`` (types, interfaces, generators, cache,
executors, tasks, CLI), ``loopwright.tools``, ``loopwright.agents``, ``loopwright.judges``,
``loopwright.trainers``, ``loopwright.modeling`` and ``loopwright.kernels``. Layout and dependency direction:
docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("sdk", "tools", "agents", "judges", "trainers", "modeling", "kernels")

# name -> module that defines or re-exports it. Kept to the names the README's Python blocks use.
_LAZY = {
    "SamplingParams": "loopwright.sdk",
    "Completion": "loopwright.sdk",
    "Verdict": "loopwright.sdk",
    "TransformersGenerator": "loopwright.sdk",
    "VLLMGenerator": "loopwright.sdk",
    "OpenAIGenerator": "loopwright.sdk",
    "CachedGenerator": "loopwright.sdk",
    "GenerationCache": "loopwright.sdk",
    "VLLMServer": "loopwright.sdk",
    "PairwiseJudge": "loopwright.judges",
    "PointwiseJudge": "loopwright.judges",
    "RewardModelJudge": "loopwright.judges",
    "ensure_seed_model": "loopwright.trainers",
    "sft_train": "loopwright.trainers",
    "dpo_train": "loopwright.trainers",
    "reward_train": "loopwright.trainers",
}


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBPACKAGES, *_LAZY})


__all__ = ["__version__", *_LAZY]
