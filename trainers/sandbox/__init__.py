"""Sandbox models: a locally trained tokenizer, a tiny Llama-layout model and its TRL SFT seed model.

``ensure_seed_model()`` returns the cached seed model folder (training it on first use); see ``seed.py``.
``python -m loopwright.trainers.sandbox.seed`` builds it and prints untrained vs seed accuracy.
The seed-model names are loaded lazily so that ``python -m ...seed`` runs without a double import.
"""

from typing import Any

from .model import TinyLlamaConfig, build_tiny_model, build_tokenizer

_SEED_NAMES = (
    "SANDBOX_TASK",
    "STRONG_SANDBOX",
    "SandboxConfig",
    "ensure_base_model",
    "ensure_seed_model",
    "evaluate_accuracy",
    "held_out_problems",
    "miniarith_prompt",
    "miniarith_target",
    "train_problems",
)

__all__ = ["TinyLlamaConfig", "build_tiny_model", "build_tokenizer", *_SEED_NAMES]


def __getattr__(name: str) -> Any:
    if name in _SEED_NAMES:
        from . import seed

        return getattr(seed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SEED_NAMES})
