"""loopwright.modeling: Multi-Token Attention (:mod:`.mta`), CoPE (:mod:`.cope`), Branch-Train-MiX (:mod:`.btx`)
and reverse training (:mod:`.reverse`) as transformers-compatible models and transforms.

The names below are importable from here (``from loopwright.modeling import MTAConfig``) and loaded on first use
(PEP 562), so ``import loopwright.modeling`` imports neither torch nor transformers. Loading ``MTAConfig`` or
``CoPEConfig`` imports its sub-package, which registers the model with transformers' Auto classes. This package
imports only torch, triton, transformers and ``loopwright.kernels`` (it must run on a GPU box with nothing else).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MTAConfig": ".mta",
    "MTAForCausalLM": ".mta",
    "MTAModel": ".mta",
    "CoPEConfig": ".cope",
    "CoPEForCausalLM": ".cope",
    "CoPEModel": ".cope",
    "merge_btx": ".btx",
    "upcycle": ".btx",
    "save_merged": ".btx",
    "moe_finetune": ".btx",
    "load_balance_loss": ".btx",
    "reverse_map": ".reverse",
    "ReverseCollator": ".reverse",
    "reverse_words": ".reverse",
    "reverse_entities": ".reverse",
    "reverse_random_segments": ".reverse",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = list(_LAZY)
