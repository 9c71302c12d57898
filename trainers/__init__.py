"""loopwright.trainers: typed TRL wrappers (:func:`sft_train`, :func:`dpo_train` with the optional NLL term,
:func:`reward_train`), the sandbox models (:func:`ensure_seed_model`), real pretrained models converted offline
(:func:`ensure_real_model`), REWIRE (:mod:`.rewire`) and the small causal-LM loop used by the modeling
experiments (:func:`train_causal_lm`).

The names below are importable from here (``from loopwright.trainers import dpo_train``) and loaded on first use
(PEP 562): ``import loopwright.trainers`` loads neither torch nor TRL. Layout: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "sft_train": ".sft",
    "SFTSettings": ".sft",
    "ensure_sft_model": ".sft",
    "dpo_train": ".dpo",
    "DPOSettings": ".dpo",
    "to_preference_row": ".dpo",
    "reward_train": ".reward",
    "RewardSettings": ".reward",
    "ensure_miniarith_reward_model": ".reward",
    "TrainResult": ".result",
    "read_train_manifest": ".result",
    "device_defaults": ".result",
    "LoRASettings": ".lora",
    "ensure_seed_model": ".sandbox",
    "ensure_base_model": ".sandbox",
    "SandboxConfig": ".sandbox",
    "ensure_real_model": ".real_models",
    "run_rewire": ".rewire",
    "RewireConfig": ".rewire",
    "train_causal_lm": ".toy_lm",
    "TrainSFT": ".loop_stages",
    "TrainDPO": ".loop_stages",
    "TrainReward": ".loop_stages",
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
