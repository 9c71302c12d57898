"""DPO with TRL's ``DPOTrainer``, with the optional NLL term of the Self-Taught Evaluator release.

Loss (spec/loops.md §0.2): ``L = -log σ(β[(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])``
with the reference model a frozen copy of ``base`` (TRL builds it from the same folder; with ``settings.lora``
it is the base itself with the adapters disabled, so no copy is loaded). ``nll_alpha`` adds
``nll_alpha · NLL(y_w)`` (mean over the chosen completion's tokens): the Self-Taught Evaluator release trained
with β = 0.1 and ``nll_scale`` = 1.5 (§4.6); RPO (Pang et al. 2024) is the same term. TRL removed
``DPOConfig.rpo_alpha``; in TRL 1.16 the term is ``loss_type=["sigmoid", "sft"]`` with
``loss_weights=[1.0, nll_alpha]``, which is what ``nll_alpha`` sets.

Rows are TRL preference rows ``{"prompt", "chosen", "rejected"}``, conversational (message lists, the chat
template is applied by TRL) or plain strings; extra columns (provenance) are dropped before training.
Device defaults come from :func:`~loopwright.trainers.result.device_defaults`; ``trl_config`` overrides any
``DPOConfig`` field untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..sdk.errors import ConfigError
from .lora import LoRASettings
from .result import TrainResult, run_trl

__all__ = ["DPOSettings", "LoRASettings", "TrainResult", "dpo_train", "to_preference_row"]

DPO_BUILDER_VERSION = "1"


class DPOSettings(BaseModel):
    """DPO knobs. β = 0.1 is the paper/STE-release value; lr/steps/batch are small-model CPU defaults (the STE
    release used lr 5.5e-8 on a 70B model, §4.6, far too small for a ~1M-parameter sandbox model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_steps: int = Field(50, ge=1)
    learning_rate: float = Field(5e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    beta: float = Field(0.1, gt=0)
    nll_alpha: float | None = Field(None, ge=0)
    """Weight of the NLL term on the chosen response (STE release: 1.5; ``None`` = plain DPO)."""
    max_length: int = Field(512, ge=16)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    num_threads: int = Field(1, ge=1)
    seed: int = 0
    lora: LoRASettings | None = None
    """Train LoRA adapters instead of every weight (``trainers/lora.py``; saved merged unless ``merge=False``)."""


def _as_messages(value: Any, role: str, where: str) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, Mapping) and "role" in m for m in value):
        return [dict(m) for m in value]
    raise ValueError(f"{where} must be a string or a non-empty list of chat messages ({role} turn), "
                     f"got {value!r:.80}")


def to_preference_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``{"prompt", "chosen", "rejected"}`` of one preference row (extra columns dropped; bad rows raise).

    Either all three are strings (standard format) or all are message lists (conversational format).
    """
    if not isinstance(row, Mapping):
        raise ValueError(f"a preference row must be a dict with prompt/chosen/rejected, got {type(row).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
    if missing:
        raise ValueError(f"preference row lacks {missing}; TRL's preference format is prompt/chosen/rejected")
    out = {k: _as_messages(row[k], "user" if k == "prompt" else "assistant", k) for k in ("prompt", "chosen",
                                                                                          "rejected")}
    kinds = {isinstance(v, str) for v in out.values()}
    if len(kinds) > 1:
        raise ValueError("prompt, chosen and rejected must all be strings or all message lists, not a mix")
    return out


def dpo_train(
    base: str | Path,
    pairs: Iterable[Mapping[str, Any]],
    out: str | Path,
    settings: DPOSettings | None = None,
    *,
    trl_config: Mapping[str, Any] | None = None,
    run: Any = None,
    progress: bool = False,
) -> TrainResult:
    """DPO-train the causal LM in ``base`` on ``pairs``; save model, tokenizer and manifest to ``out``.

    Args:
        base: a causal-LM folder (policy init and frozen reference).
        pairs: TRL preference rows (see :func:`to_preference_row`).
        out: the output folder (written atomically; relative paths go inside ``run`` when given).
        settings: :class:`DPOSettings` (defaults when ``None``).
        trl_config: ``DPOConfig`` fields that override ours, passed through untouched. Setting ``loss_type`` or
            ``loss_weights`` there together with ``settings.nll_alpha`` is a conflict and raises.
        run: an optional :class:`~loopwright.sdk.artifacts.RunDir` that records this training.

    With ``settings.lora`` only LoRA adapters train and the reference is the base with adapters disabled.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    s = settings or DPOSettings()
    rows = [to_preference_row(r) for r in pairs]
    if s.nll_alpha is not None and trl_config and ({"loss_type", "loss_weights"} & set(trl_config)):
        raise ConfigError(f"settings.nll_alpha={s.nll_alpha} and trl_config "
                          f"{sorted({'loss_type', 'loss_weights'} & set(trl_config))} both set the loss; "
                          "use one of them")
    kwargs: dict[str, Any] = dict(
        max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=int(s.max_steps * s.warmup_ratio), weight_decay=0.0,
        beta=s.beta, max_length=s.max_length, logging_steps=max(1, s.max_steps // 10),
    )
    if s.nll_alpha is not None:
        kwargs.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, float(s.nll_alpha)])
    return run_trl(
        kind="dpo", base=base, rows=rows, out=out, settings=s, config_cls=DPOConfig, trainer_cls=DPOTrainer,
        config_kwargs=kwargs, trl_config=trl_config,
        load_model=lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
        num_threads=s.num_threads, seed=s.seed, run=run, progress=progress, builder_version=DPO_BUILDER_VERSION,
    )
