"""The train stages of a :class:`~loopwright.sdk.loop.Loop`: SFT, DPO and reward-model training through TRL.

They live in trainers (not sdk) because they call the TRL wrappers (:func:`~loopwright.trainers.sft.sft_train`,
:func:`~loopwright.trainers.dpo.dpo_train`, :func:`~loopwright.trainers.reward.reward_train`); DESIGN.md's
dependency direction lets trainers import sdk, never the reverse. ``TrainSFT`` and ``TrainDPO`` write the loop's
next policy model (``trains = True``): the stages after them, and the next iteration, use it. They start from
the current model or the seed model (the loop's ``init_from``). ``TrainReward`` writes a reward model, which is
not a policy. ``peft`` trains LoRA adapters and saves them merged, so the next stage can load the folder with any
engine. Steps: ``settings.max_steps``, or ``epochs`` passes over this iteration's rows when set.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, field_validator

from ..sdk.artifacts import read_jsonl
from ..sdk.errors import LoopwrightError
from ..sdk.loop import LoopStage, StageContext
from .dpo import DPOSettings
from .lora import LoRASettings
from .reward import RewardSettings
from .sft import SFTSettings

__all__ = ["NothingToTrainError", "TrainDPO", "TrainReward", "TrainSFT"]


class NothingToTrainError(LoopwrightError, RuntimeError):
    """A train stage's input has no rows (every sample failed the judge, or no prompt gave a pair)."""


class _Train(LoopStage):
    trl_config: dict[str, Any] = Field(default_factory=dict)
    """Fields of TRL's config class, passed through untouched (they win over ours)."""
    epochs: float | None = Field(None, gt=0)
    """Train for this many passes over the iteration's rows instead of ``settings.max_steps``."""
    peft: LoRASettings | None = None
    """Train LoRA adapters (``trainers/lora.py``); saved merged, so any engine loads the next model."""

    @field_validator("peft")
    @classmethod
    def _merged(cls, v: LoRASettings | None) -> LoRASettings | None:
        if v is not None and not v.merge:
            raise ValueError("a loop's train stage saves LoRA merged (the next stage loads the folder with "
                             "transformers or vLLM); drop merge=False")
        return v

    def _rows(self, ctx: StageContext) -> list[dict[str, Any]]:
        rows = read_jsonl(ctx.input())
        if not rows:
            raise NothingToTrainError(
                f"iteration {ctx.iteration}, stage {ctx.stage_name!r}: {ctx.input_ref()} is empty, so there is "
                f"nothing to train on (see the rejected rows under {ctx.input().parent}); sample more, or loosen "
                "the judge threshold or the filter")
        return rows

    def _settings(self, settings: Any, ctx: StageContext, n_rows: int) -> Any:
        update: dict[str, Any] = {"seed": settings.seed + ctx.seed}
        if self.epochs is not None:
            update["max_steps"] = max(1, math.ceil(self.epochs * n_rows / settings.batch_size))
        if self.peft is not None and settings.lora is None:
            update["lora"] = self.peft
        elif settings.lora is not None and not settings.lora.merge:
            raise LoopwrightError(f"stage {ctx.stage_name!r}: settings.lora.merge=False cannot hand a model to the "
                                  "next stage; use merge=True")
        return settings.model_copy(update=update)

    @staticmethod
    def _metrics(res: Any, steps: int, n_rows: int) -> dict[str, Any]:
        keep = {k: v for k, v in res.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        keep["steps"] = steps
        return keep


class TrainSFT(_Train):
    """Supervised fine-tuning (TRL ``SFTTrainer``, assistant-only loss) on the input's ``sft`` rows."""

    kind: ClassVar[str] = "train_sft"
    accepts: ClassVar[tuple[str, ...]] = ("sft",)
    outputs: ClassVar[dict[str, str]] = {"model": "model"}
    trains: ClassVar[bool] = True

    settings: SFTSettings = Field(default_factory=lambda: SFTSettings(max_steps=50, learning_rate=1e-3,
                                                                      batch_size=16))

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from .sft import sft_train

        rows = self._rows(ctx)
        s = self._settings(self.settings, ctx, len(rows))
        res = sft_train(ctx.init_model, rows, ctx.output("model"), s, trl_config=self.trl_config or None,
                        run=ctx.run)
        return self._metrics(res, s.max_steps, len(rows))


class TrainDPO(_Train):
    """DPO (TRL ``DPOTrainer``, reference = the start model) on the input's ``preference`` rows."""

    kind: ClassVar[str] = "train_dpo"
    accepts: ClassVar[tuple[str, ...]] = ("preference",)
    outputs: ClassVar[dict[str, str]] = {"model": "model"}
    trains: ClassVar[bool] = True

    settings: DPOSettings = Field(default_factory=lambda: DPOSettings(max_steps=20))

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from .dpo import dpo_train

        rows = self._rows(ctx)
        s = self._settings(self.settings, ctx, len(rows))
        pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
        res = dpo_train(ctx.init_model, pairs, ctx.output("model"), s, trl_config=self.trl_config or None,
                        run=ctx.run)
        return self._metrics(res, s.max_steps, len(rows))


class TrainReward(_Train):
    """A Bradley-Terry reward model (TRL ``RewardTrainer``) from ``base`` (default: the current model) on the
    input's ``preference`` rows. Output ``reward_model``: use it with ``RewardModelJudge`` in a later loop."""

    kind: ClassVar[str] = "train_reward"
    accepts: ClassVar[tuple[str, ...]] = ("preference",)
    outputs: ClassVar[dict[str, str]] = {"reward_model": "reward_model"}

    settings: RewardSettings = Field(default_factory=lambda: RewardSettings(max_steps=50))
    base: str | None = None

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from .reward import reward_train

        rows = self._rows(ctx)
        s = self._settings(self.settings, ctx, len(rows))
        res = reward_train(self.base or ctx.model, rows, ctx.output("reward_model"), s,
                           trl_config=self.trl_config or None, run=ctx.run)
        return self._metrics(res, s.max_steps, len(rows))
