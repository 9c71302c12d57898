"""LoRA (PEFT) for the TRL wrappers: :class:`LoRASettings`, the ``LoraConfig`` it builds, and saving the result.

What: ``settings.lora = LoRASettings(...)`` on :class:`~loopwright.trainers.sft.SFTSettings`,
:class:`~loopwright.trainers.dpo.DPOSettings` or :class:`~loopwright.trainers.reward.RewardSettings` trains low-rank
adapters (Hu et al. 2021, arXiv 2106.09685) on the frozen base instead of every weight: TRL gets
``peft_config=LoraConfig(...)`` and wraps the model with ``peft.get_peft_model``.

Why: full fine-tuning keeps fp32 weights, gradients and two Adam moments (~16 bytes a parameter), so an 8B model
does not fit one 80 GB GPU, while LoRA's optimiser state covers only the adapters (well under 1% of the
parameters); on the CPU it cuts the optimiser state and the update cost of the real models
(``trainers/real_models.py``, e.g. SmolLM2-135M) to the adapters. For DPO, TRL uses the base with the adapters disabled as the reference model, so no reference copy is loaded.

Defaults (r=16, alpha=32, dropout=0.05) are TRL's ``ModelConfig`` LoRA defaults (``lora_r``, ``lora_alpha``,
``lora_dropout``; TRL 1.16), i.e. the common alpha = 2r scaling; peft's own ``LoraConfig`` defaults are r=8,
alpha=8, dropout 0. ``target_modules="all-linear"`` is peft's shorthand for every linear layer except the output
head (QLoRA, Dettmers et al. 2023, found adapting all linear layers needed to match full fine-tuning); the LoRA
paper adapted only the attention projections. Not tuned on our tasks: override per run.

Saving: with ``merge=True`` (default) the adapters are merged into the base (``merge_and_unload``) and a normal
transformers folder is written, so every generator (transformers, vLLM) and ``RewardModelJudge`` load it unchanged;
with ``merge=False`` the folder holds only the adapter (``adapter_config.json`` + ``adapter_model.safetensors``)
and the tokenizer, and the base stays where it is (``adapter_config.json`` and the manifest's ``lora.base`` name
it; ``AutoModelForCausalLM.from_pretrained`` loads such a folder through peft). The manifest's ``lora.format`` is
``"merged"`` or ``"adapter"``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .distributed import is_main_process, save_trained, world_size

__all__ = ["LoRASettings", "lora_config", "merge_adapter_folder", "save_lora"]

TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]


class LoRASettings(BaseModel):
    """LoRA knobs (see the module docstring for the defaults' provenance).

    ``r`` is the adapter rank, ``alpha`` the scaling numerator (updates are scaled by ``alpha / r``), ``dropout``
    the dropout on the adapter input, ``target_modules`` peft's ``"all-linear"`` or a list of module-name suffixes
    (e.g. ``["q_proj", "v_proj"]``), ``merge`` whether the saved folder is the merged model (True) or the adapter.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | tuple[str, ...] = "all-linear"
    merge: bool = True

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if not v or (not isinstance(v, str) and not all(isinstance(m, str) and m for m in v)):
            raise ValueError("target_modules must be 'all-linear' or a non-empty list of module names")
        return v


def lora_config(settings: LoRASettings, task_type: TaskType) -> Any:
    """The ``peft.LoraConfig`` of ``settings`` (``task_type`` CAUSAL_LM for SFT/DPO, SEQ_CLS for reward models).

    SEQ_CLS makes peft train and save the new classification head (``score``) in full, beside the adapters.
    """
    from peft import LoraConfig

    if task_type not in ("CAUSAL_LM", "SEQ_CLS"):
        raise ValueError(f"task_type={task_type!r}; use 'CAUSAL_LM' (SFT, DPO) or 'SEQ_CLS' (reward models)")
    targets = settings.target_modules if isinstance(settings.target_modules, str) else list(settings.target_modules)
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets,
                      bias="none", task_type=task_type)


def _model_cls(task_type: TaskType) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task_type == "SEQ_CLS" else AutoModelForCausalLM


def merge_adapter_folder(adapter_dir: str | Path, base: str | Path, out: str | Path, task_type: TaskType,
                         config: Any = None) -> Path:
    """Load ``base`` (fp32, with ``config`` when given) + the adapter in ``adapter_dir``, merge, save to ``out``.

    The multi-process path of :func:`save_lora` (the trained model may be sharded, so rank 0 merges from disk);
    also usable on any adapter folder this module wrote.
    """
    import torch
    from peft import PeftModel

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if config is not None:
        kwargs["config"] = config
    model = _model_cls(task_type).from_pretrained(str(base), **kwargs)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out)
    return Path(out)


def save_lora(trainer: Any, tokenizer: Any, folder: Path, settings: LoRASettings, base: str | Path,
              task_type: TaskType) -> dict[str, Any]:
    """Save a LoRA-trained model into ``folder`` (merged or adapter, see the module doc); returns the manifest part.

    Rank-aware like :func:`~loopwright.trainers.distributed.save_trained`: every rank takes part in saving the
    adapter; in a multi-process run rank 0 then merges it into a fresh copy of ``base`` from disk.
    """
    from peft import __version__ as peft_version

    model = trainer.accelerator.unwrap_model(trainer.model)
    cfg = model.peft_config["default"]
    trainable, total = model.get_nb_trainable_parameters()
    info: dict[str, Any] = {
        "format": "merged" if settings.merge else "adapter", "base": str(base), "task_type": task_type,
        "target_modules": sorted(cfg.target_modules) if not isinstance(cfg.target_modules, str)
        else cfg.target_modules, "modules_to_save": sorted(cfg.modules_to_save or []),
        "trainable_params": trainable, "all_params": total, "peft": peft_version,
    }
    if not settings.merge:
        save_trained(trainer, tokenizer, folder)
        return info
    if world_size() <= 1:
        model.merge_and_unload().save_pretrained(folder)
        (trainer.processing_class or tokenizer).save_pretrained(folder)
        return info
    adapter = folder / ".adapter"
    save_trained(trainer, tokenizer, adapter)  # collective under FSDP/ZeRO-3; rank 0 writes
    if is_main_process():
        merge_adapter_folder(adapter, base, folder, task_type, config=model.config)
        (trainer.processing_class or tokenizer).save_pretrained(folder)
        shutil.rmtree(adapter, ignore_errors=True)
    return info
