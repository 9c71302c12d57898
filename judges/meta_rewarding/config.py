"""Meta-Rewarding configuration (spec/loops.md Appendix A.3). Each default carries its provenance tag:
[S] from a detailed secondary source on the paper (arXiv 2407.19594), [R] reconstructed (not in the paper's text;
a sensible default, exposed so it can be checked), [CPU] chosen for the sandbox on a 2-core CPU.

The paper's scale (5,000 prompts x 7 responses x 11 judgements per iteration, DPO for up to 10 epochs at lr 5e-6,
batch 32) is the default; :func:`sandbox_config` gives the small settings of the CPU demo.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loopwright.sdk.errors import ConfigError
from loopwright.trainers.lora import LoRASettings

__all__ = ["ActorConfig", "DPOConfig", "EvalConfig", "JudgeConfig", "MetaJudgeConfig", "MetaRewardingConfig",
           "sandbox_config"]


_LOOP_NEEDS_MERGE = (
    "merge=False is not supported in a loop: iteration t+1 starts from and serves (transformers/vLLM) the model "
    "folder of iteration t, so the adapters must be merged; set merge: true (the default), or call "
    "loopwright.trainers.dpo.dpo_train with lora=LoRASettings(merge=False) outside the loop")
"""Why ``dpo.peft.merge=False`` is refused (a validation error; the key comes from pydantic's location)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActorConfig(_Strict):
    """Response sampling: K = 7 per prompt at T = 0.8, top-p = 0.95 [S]; ``max_tokens`` [R]."""

    K: int = Field(7, ge=2)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)


class JudgeConfig(_Strict):
    """Judgements: N = 11 per response at T = 0.8, top-p = 0.95, scores on [0, 5] [S]; the score of a response is the
    mean of its *valid* judgements. ``template``: ``None`` = the additive 5-point rubric
    (:data:`~loopwright.judges.templates.ADDITIVE_5POINT`), or a jinja2 string with ``{{ question }}`` and
    ``{{ response }}``. ``max_tokens`` [R] (the rubric asks for <= 100 words plus the Score line)."""

    N: int = Field(11, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    low: float = 0.0
    high: float = 5.0
    template: str | None = None


class MetaJudgeConfig(_Strict):
    """The meta-judge (§3.4 [S]): used in iterations 1–2 only (the paper stopped because the meta-judge's biases
    grew); both orders with position weighting; Elo MLE with 500 iterations and L2 1e-4; chosen-judgement length
    caps 1,100 chars at iteration 1 and 1,000 at iteration 2. ``max_judgements`` [R] caps the distinct judgements
    compared per prompt (``None`` = all; N judgements cost N·(N−1) calls). Sampling [R]: greedy, 256 tokens."""

    enabled_iterations: tuple[int, ...] = (1, 2)
    pick_response: Literal["max_score_variance"] = "max_score_variance"
    both_orders: Literal[True] = True
    position_weighting: bool = True
    elo_max_iter: int = Field(500, ge=1)
    elo_l2: float = Field(1e-4, ge=0)
    chosen_judgment_max_chars: dict[int, int] = Field(default_factory=lambda: {1: 1100, 2: 1000})
    max_judgements: int | None = Field(None, ge=2)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(256, ge=1)
    template: str | None = None


class DPOConfig(_Strict):
    """DPO on actor + judge pairs mixed in one run (§3.5 [S]): β = 0.1, lr 5e-6, cosine, batch 32, 10 epochs
    (the paper selected a checkpoint per iteration; we keep the last one). ``max_steps`` overrides the epoch count;
    ``nll_alpha`` adds an NLL term on the chosen response (not in the paper; ``None`` = plain DPO);
    ``trl_config`` goes to ``trl.DPOConfig`` untouched. ``peft`` trains LoRA adapters instead of every weight
    (:class:`~loopwright.trainers.lora.LoRASettings`, passed as ``DPOSettings.lora``; the reference is then the base
    with the adapters disabled; not in the paper, which fine-tuned in full); each iteration's model is saved merged,
    so ``peft.merge`` must stay True."""

    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-6, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: float = Field(10, gt=0)
    max_steps: int | None = Field(None, ge=1)
    nll_alpha: float | None = Field(None, ge=0)
    max_length: int = Field(1024, ge=16)
    num_threads: int = Field(1, ge=1)
    trl_config: dict[str, Any] = Field(default_factory=dict)
    peft: LoRASettings | None = None

    @field_validator("peft")
    @classmethod
    def _merged(cls, v: LoRASettings | None) -> LoRASettings | None:
        if v is not None and not v.merge:
            raise ValueError(_LOOP_NEEDS_MERGE)
        return v

    def steps_for(self, n_rows: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_rows / self.batch_size))


class EvalConfig(_Strict):
    """Per-iteration evaluation [R]: greedy task accuracy and response length on ``n_problems`` held-out problems,
    the judge's mean reward for those responses, and the model's own judging on ``n_anchor`` labelled
    (correct, wrong) pairs (a fixed anchor, §9 "evaluation circularity")."""

    n_problems: int = Field(100, ge=1)
    n_anchor: int = Field(32, ge=0)
    max_tokens: int = Field(160, ge=1)
    anchor_max_tokens: int = Field(64, ge=1)


class MetaRewardingConfig(_Strict):
    """Everything that determines a Meta-Rewarding run (spec/loops.md §3, Appendix A.3).

    ``length_control_rho``: one ρ per iteration, or a single number for all ([0, 0, 0.4, 0.4]: the paper reports
    ρ = 0.4 at iteration 4; earlier values [R]). ``init_from``: ``"previous"`` (iterative DPO, the paper) or
    ``"seed"`` (re-initialise from the seed model each iteration).
    """

    iterations: int = Field(4, ge=1)
    prompts_per_iter: int = Field(5000, ge=1)
    actor: ActorConfig = Field(default_factory=ActorConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    meta_judge: MetaJudgeConfig = Field(default_factory=MetaJudgeConfig)
    length_control_rho: float | list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.4, 0.4])
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    init_from: Literal["previous", "seed"] = "previous"
    seed: int = 0

    @field_validator("length_control_rho")
    @classmethod
    def _rho_range(cls, v: float | list[float]) -> float | list[float]:
        values = v if isinstance(v, list) else [v]
        bad = [r for r in values if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"length_control_rho values must lie in [0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _rho_per_iteration(self) -> MetaRewardingConfig:
        if isinstance(self.length_control_rho, list) and len(self.length_control_rho) < self.iterations:
            raise ValueError(
                f"length_control_rho has {len(self.length_control_rho)} value(s) for {self.iterations} iterations; "
                "give one ρ per iteration or a single number"
            )
        return self

    def rho(self, iteration: int) -> float:
        """ρ for ``iteration`` (1-based)."""
        if iteration < 1 or iteration > self.iterations:
            raise ConfigError(f"iteration {iteration} outside 1..{self.iterations}")
        if isinstance(self.length_control_rho, list):
            return float(self.length_control_rho[iteration - 1])
        return float(self.length_control_rho)

    def meta_judge_on(self, iteration: int) -> bool:
        return iteration in self.meta_judge.enabled_iterations


def sandbox_config(**overrides: Any) -> MetaRewardingConfig:
    """The CPU demo's settings [CPU]: 48 prompts x 6 responses x 5 judgements, 3 iterations, ρ = 0.4 throughout,
    short sandbox templates (see :mod:`~loopwright.judges.meta_rewarding.sandbox`), DPO at lr 3e-4 for 3 epochs,
    batch 8 (a ~1M-parameter model barely moves at the paper's 5e-6; 1e-3 x 4 epochs degraded it within one
    iteration) with the NLL term on the chosen side (the paper's seed had already been SFT-ed on judging data; ours
    has never seen a judgement, so plain DPO has no format to build on)."""
    from .sandbox_templates import SANDBOX_JUDGE_TEMPLATE, SANDBOX_META_TEMPLATE

    base: dict[str, Any] = {
        "iterations": 3,
        "prompts_per_iter": 48,
        "actor": {"K": 6, "temperature": 0.8, "top_p": 0.95, "max_tokens": 96},
        "judge": {"N": 5, "temperature": 0.8, "top_p": 0.95, "max_tokens": 48, "template": SANDBOX_JUDGE_TEMPLATE},
        "meta_judge": {"enabled_iterations": (1, 2), "max_judgements": 4, "max_tokens": 48,
                       "template": SANDBOX_META_TEMPLATE, "chosen_judgment_max_chars": {1: 1100, 2: 1000}},
        "length_control_rho": 0.4,
        "dpo": {"learning_rate": 3e-4, "batch_size": 8, "epochs": 3, "max_length": 384, "nll_alpha": 1.0},
        "eval": {"n_problems": 100, "n_anchor": 24, "max_tokens": 96, "anchor_max_tokens": 40},
    }
    return MetaRewardingConfig.model_validate(_deep_merge(base, overrides))


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
