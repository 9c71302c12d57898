"""loopwright.sdk: types, the five interfaces, generator backends, cache, artifacts, executors, tasks, CLI.

Public names are importable from here. Backends that need heavy engines (torch, vllm, ray) are loaded
lazily on first attribute access, so ``import loopwright.sdk`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import BackendError, ConfigError, LoopwrightError, PromptTooLongError
from .filter import Filter
from .generator import Generator
from .judge import Judge
from .searcher import Searcher
from .tool import Tool
from .types import (
    Budget,
    Completion,
    Decision,
    JudgeProvenance,
    Message,
    Prompt,
    SamplingParams,
    ScoredPath,
    SearchResult,
    SwapRecord,
    ToolResult,
    Usage,
    Verdict,
    normalize_prompt,
    total_usage,
)

_LAZY = {
    "TransformersGenerator": "loopwright.sdk.generators.transformers",
    "VLLMGenerator": "loopwright.sdk.generators.vllm",
    "OpenAIGenerator": "loopwright.sdk.generators.openai",
    "ScriptedGenerator": "loopwright.sdk.generators.scripted",
    "GenerationCache": "loopwright.sdk.cache",
    "CachedGenerator": "loopwright.sdk.cache",
    "VLLMServer": "loopwright.sdk.server",
    "RunDir": "loopwright.sdk.artifacts",
    "atomic_write": "loopwright.sdk.artifacts",
    "write_json": "loopwright.sdk.artifacts",
    "write_jsonl": "loopwright.sdk.artifacts",
    "read_jsonl": "loopwright.sdk.artifacts",
    "Executor": "loopwright.sdk.executors",
    "LocalExecutor": "loopwright.sdk.executors",
    "RayExecutor": "loopwright.sdk.executors",
    "Stage": "loopwright.sdk.stages",
    "run_stages": "loopwright.sdk.stages",
    "load_recipe": "loopwright.sdk.recipes",
    "Loop": "loopwright.sdk.loop",
    "LoopStage": "loopwright.sdk.loop",
    "LoopBudget": "loopwright.sdk.loop",
    "ArtifactRef": "loopwright.sdk.loop",
    "StageContext": "loopwright.sdk.loop",
    "BudgetExceededError": "loopwright.sdk.loop",
    "Generate": "loopwright.sdk.loop_stages",
    "Score": "loopwright.sdk.loop_stages",
    "ApplyFilter": "loopwright.sdk.loop_stages",
    "BuildPairs": "loopwright.sdk.loop_stages",
    "RejectionSample": "loopwright.sdk.loop_stages",
    "Evaluate": "loopwright.sdk.loop_stages",
    "FunctionStage": "loopwright.sdk.loop_stages",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'loopwright.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BackendError", "Budget", "Completion", "ConfigError", "Decision", "Filter", "Generator", "Judge",
    "JudgeProvenance", "LoopwrightError", "Message", "Prompt", "PromptTooLongError", "SamplingParams",
    "ScoredPath", "SearchResult", "Searcher", "SwapRecord", "Tool", "ToolResult", "Usage", "Verdict",
    "normalize_prompt", "total_usage", *_LAZY,
]
