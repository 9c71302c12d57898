"""The Self-Taught Evaluator's settings and constants (spec/loops.md Appendix A.4; CPU-sized defaults, the paper's
values in the field docs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ...sdk.errors import LoopwrightError
from ...sdk.tasks.miniarith import MiniArithConfig
from ...trainers.dpo import DPOSettings
from ...trainers.lora import LoRASettings
from ...trainers.sft import SFTSettings
from .data import WORSE_KINDS
from .prompts import judge_template

__all__ = ["EVAL_START", "TRAIN_START", "WORSE_KINDS", "NoUsableJudgementsError", "SelfTaughtConfig"]

TRAIN_START = 100_000
"""MiniArith stream index where training instructions start (the sandbox seed model saw 0..n_train-1)."""
EVAL_START = 900_000
"""MiniArith stream index of the held-out evaluation instructions (disjoint from every training slice)."""


class NoUsableJudgementsError(LoopwrightError, RuntimeError):
    """An iteration produced no usable training example (no correct judgement survived selection)."""


class SelfTaughtConfig(BaseModel):
    """The loop's settings (spec/loops.md Appendix A.4; CPU-sized defaults, paper values in the field docs)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(2, ge=1)
    """Paper: 5."""
    init_from: Literal["seed", "previous"] = "seed"
    """``"seed"`` re-initialises the judge from the seed judge every iteration (the paper)."""
    judge_prompt_style: str = "compact"
    """``"eval_plan"`` (training prompt of the release), ``"pairv2"`` (its inference prompt) or ``"compact"``."""
    pair_source: Literal["miniarith", "generator"] = "miniarith"
    task: MiniArithConfig = Field(default_factory=lambda: MiniArithConfig(
        min_steps=1, max_steps=1, min_number=1, max_number=20, max_factor=5, max_result=99, seed=1))
    """MiniArith distribution of the instructions (default: the sandbox's operands, one step: the judge prompt
    then stays within the sequence lengths the sandbox model was trained on)."""
    worse: Literal["modified_instruction", "wrong_final"] = "modified_instruction"
    """How ``pair_source="miniarith"`` builds ``y_l`` (see :func:`miniarith_pairs`)."""
    pairs_per_iteration: int = Field(96, ge=1)
    fresh_pairs: bool = True
    """New instructions each iteration (else the same ones, re-judged by the new judge as in the paper)."""
    samples: int = Field(4, ge=1)
    """N judgements per pair and order (paper: 15)."""
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(48, ge=1)
    """Judgement length cap (paper: 4096; the compact sandbox judgement is a few tokens)."""
    majority_voting: float | None = Field(None, gt=0, le=1)
    label_balance: bool = True
    rejection_seed: int = 42
    """``prepare_sft_data`` shuffles with seed 42."""
    train_method: Literal["sft", "dpo"] = "sft"
    sft: SFTSettings = Field(default_factory=lambda: SFTSettings(max_steps=60, learning_rate=3e-3, batch_size=16,
                                                                 max_length=320))
    dpo: DPOSettings = Field(default_factory=lambda: DPOSettings(max_steps=40, learning_rate=5e-4, batch_size=8,
                                                                 beta=0.1, nll_alpha=1.5, max_length=320))
    peft: LoRASettings | None = None
    """LoRA for the trainer ``train_method`` picks (becomes its ``lora``; ``None`` = full fine-tuning unless
    ``sft.lora`` / ``dpo.lora`` is set). Not in the paper. Must merge (``merge=True``, the default)."""
    dpo_pairs_per_key: int = Field(1, ge=1)
    eval_pairs: int = Field(64, ge=2)
    eval_max_tokens: int = Field(48, ge=1)
    llmbar_eval: int = Field(0, ge=0)
    """Also evaluate on this many LLMBar pairs (``../shared/data/llmbar``) each iteration; 0 = off."""
    generation_batch_size: int = Field(64, ge=1)
    seed: int = 0

    @field_validator("peft", "sft", "dpo")
    @classmethod
    def _merged(cls, v: Any, info: ValidationInfo) -> Any:
        lora, key = (v, "merge") if info.field_name == "peft" else (v.lora, "lora.merge")
        if lora is not None and not lora.merge:
            raise ValueError(
                f"{key}=False is not supported in a loop: iteration i+1 judges with (and may start from) the model "
                f"folder of iteration i, so the adapters must be merged; set {key}: true (the default), or call the "
                "trainer (trainers/sft.py, trainers/dpo.py) with lora=LoRASettings(merge=False) outside the loop")
        return v

    @model_validator(mode="after")
    def _check(self) -> SelfTaughtConfig:
        judge_template(self.judge_prompt_style)  # raises naming the bad style
        if self.train_method == "dpo" and self.samples < 2:
            raise ValueError("train_method='dpo' needs samples >= 2 (a correct and an incorrect judgement per key)")
        inner = self.sft.lora if self.train_method == "sft" else self.dpo.lora
        if self.peft is not None and inner is not None:
            raise ValueError(f"peft and {self.train_method}.lora are both set; give LoRA once (peft applies to the "
                             f"{self.train_method} trainer)")
        return self

    def train_settings(self) -> SFTSettings | DPOSettings:
        """The settings of the trainer ``train_method`` picks, with ``peft`` (if set) as its ``lora``."""
        s = self.sft if self.train_method == "sft" else self.dpo
        return s if self.peft is None else s.model_copy(update={"lora": self.peft})
