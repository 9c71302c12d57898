"""``recipe: loop`` -- a composed :class:`~loopwright.sdk.loop.Loop` declared in YAML (issue 15, item 5).

``stages`` lists one iteration's stages in order, each a one-key mapping ``- TYPE: {config}`` (types:
:data:`STAGE_TYPES`); object components are picked by name (``score``'s ``judge``, ``filter``'s ``filter``), and
the prompts and the evaluation come from ``task`` (MiniArith sandbox problems). Every stage config is a pydantic
model built from its stage class's fields, so a typo is the usual one line naming the dotted key
(``stages.2.build_pairs.rhoo``), and the Loop's wiring is checked in :meth:`LoopRecipe.check`, before a run folder
exists. Example: ``recipes/star.yaml``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from ...sdk.errors import ConfigError
from ...sdk.judge import Judge
from ...sdk.loop import Loop, LoopBudget, LoopStage
from ...sdk.loop_stages import ApplyFilter, BuildPairs, Evaluate, Generate, RejectionSample, Score
from ...sdk.recipes import RecipeConfig, format_validation_error
from ...trainers.loop_stages import TrainDPO, TrainReward, TrainSFT
from ..rip.filter import RIPThresholds

__all__ = ["STAGE_TYPES", "LoopRecipe", "LoopTask", "StageItem"]


# --------------------------------------------------------------------------------------------- stage configs


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _data_fields(model: type[BaseModel], skip: Sequence[str] = ()) -> dict[str, Any]:
    """``model``'s fields that are data (not ``exclude=True`` components), as ``create_model`` definitions."""
    return {k: (f.annotation, copy.copy(f)) for k, f in model.model_fields.items()
            if not f.exclude and k not in skip}


JudgeName = Literal["gold", "gold_answer", "reward_model", "self"]
_SELF_ONLY = ("samples", "max_tokens")


class _ScoreBase(_Spec):
    @model_validator(mode="after")
    def _options_match_judge(self) -> Any:
        if self.reward_model_path is not None and self.judge != "reward_model":
            raise ValueError(f"reward_model_path applies to judge: reward_model only (judge is {self.judge})")
        extra = [k for k in _SELF_ONLY if k in self.model_fields_set]
        if extra and self.judge != "self":
            raise ValueError(f"{', '.join(extra)} apply to judge: self only (judge is {self.judge})")
        return self


class _FilterBase(_Spec):
    @model_validator(mode="after")
    def _thresholds(self) -> Any:
        try:
            RIPThresholds(**{k: getattr(self, k) for k in RIPThresholds.model_fields})
        except ValidationError as e:
            raise ValueError("; ".join(err["msg"] for err in e.errors(include_url=False))) from None
        return self


ScoreSpec = create_model(
    "ScoreSpec", __base__=_ScoreBase, __doc__="``- score:``; ``judge`` names the pointwise judge.",
    judge=(JudgeName, Field("gold", description="gold: the gold checker, right answer and correct arithmetic in "
                                                "every step; gold_answer: the final answer only; reward_model: a "
                                                "reward model (RewardModelJudge); self: the current model judges "
                                                "(PointwiseJudge)")),
    reward_model_path=(str | None, Field(None, description="judge: reward_model's folder (default: the sandbox "
                                                           "reward model, built once)")),
    samples=(int, Field(1, ge=1, description="judge: self -- judgements averaged per response")),
    max_tokens=(int, Field(256, ge=1, description="judge: self -- tokens per judgement")),
    **_data_fields(Score))

FilterSpec = create_model(
    "FilterSpec", __base__=_FilterBase, __doc__="``- filter:``; ``filter: rip`` with RIPThresholds' fields.",
    filter=(Literal["rip"], "rip"),
    min_valid=(int, Field(2, ge=1, description="prompts with fewer valid rewards are dropped")),
    **_data_fields(RIPThresholds), **_data_fields(ApplyFilter))

GenerateSpec = create_model("GenerateSpec", __base__=_Spec, __doc__="``- generate:``; prompts: the task's.",
                            **_data_fields(Generate))
EvaluateSpec = create_model("EvaluateSpec", __base__=_Spec, __doc__="``- evaluate:``; the task's eval problems.",
                            **_data_fields(Evaluate))

STAGE_TYPES: dict[str, type[LoopStage]] = {c.kind: c for c in (
    Generate, Score, ApplyFilter, BuildPairs, RejectionSample, TrainSFT, TrainDPO, TrainReward, Evaluate)}
"""Stage type (the YAML key) -> stage class."""

_SPECS: dict[str, type[BaseModel]] = {
    "generate": GenerateSpec, "score": ScoreSpec, "filter": FilterSpec, "evaluate": EvaluateSpec,
    # stages whose fields are all data are their own config model (their validators included)
    "build_pairs": BuildPairs, "rejection_sample": RejectionSample,
    "train_sft": TrainSFT, "train_dpo": TrainDPO, "train_reward": TrainReward,
}
assert set(_SPECS) == set(STAGE_TYPES)


class _StageItemBase(_Spec):
    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, data: Any) -> Any:
        if isinstance(data, str):  # `- evaluate` = `- evaluate: {}`
            return {data: {}}
        if not isinstance(data, dict):
            return data
        if len(data) != 1:
            keys = ", ".join(map(str, data)) or "none"
            hint = " (is its config indented under the stage type?)" if len(data) > 1 else ""
            raise ValueError(f"a stage is one `TYPE: {{config}}` mapping, got {len(data)} keys ({keys}){hint}")
        return {k: {} if v is None else v for k, v in data.items()}


StageItem = create_model("Stage", __base__=_StageItemBase,
                         __doc__="One stage: exactly one of the fields, ``{stage_type: config}``.",
                         **{t: (spec | None, None) for t, spec in _SPECS.items()})


def _problem_lines(message: str, source: str) -> list[str]:
    """The problem lines of one :func:`format_validation_error` message (without its header)."""
    head = f"invalid recipe {source}: "
    return [message[len(head):]] if message.startswith(head) else [ln.strip() for ln in message.splitlines()[1:]]


def parse_stages(raw: Sequence[Any], source: str) -> list[tuple[str, BaseModel]]:
    """``(stage_type, config)`` per item of ``stages``; ConfigError naming each bad dotted key."""
    parsed, problems = [], []
    for i, item in enumerate(raw):
        try:
            it = StageItem.model_validate(item)
        except ValidationError as e:
            problems += _problem_lines(format_validation_error(e, StageItem, source, prefix=("stages", str(i))),
                                       source)
            continue
        parsed.append(next((t, getattr(it, t)) for t in _SPECS if getattr(it, t) is not None))
    if len(problems) == 1:
        raise ConfigError(f"invalid recipe {source}: {problems[0]}")
    if problems:
        raise ConfigError("\n".join([f"invalid recipe {source} ({len(problems)} problems):",
                                     *(f"  {p}" for p in problems)]))
    return parsed


# --------------------------------------------------------------------------------------------- components


class _LazyRewardModel(Judge):
    """``RewardModelJudge`` loaded on first use (so validating a recipe loads no weights)."""

    kinds = frozenset({"pointwise"})
    name = "reward_model"

    def __init__(self, path: str | None) -> None:
        self.path, self._inner = path, None

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[Any]:
        if self._inner is None:
            from ..reward_model import RewardModelJudge

            if self.path is None:
                from ...trainers.reward import ensure_miniarith_reward_model

                self.path = str(ensure_miniarith_reward_model())
            self._inner = RewardModelJudge(self.path)
        return self._inner.score(prompts, responses)


def _self_judge(samples: int, max_tokens: int) -> Callable[[Any], Judge]:
    from ...sdk.types import SamplingParams
    from ..pointwise import PointwiseJudge

    sampling = SamplingParams(temperature=0.7 if samples > 1 else 0.0, max_tokens=max_tokens)

    def self_judge(gen: Any) -> Judge:
        return PointwiseJudge(gen, samples=samples, sampling=sampling)

    return self_judge


def _factory(backend: str) -> Callable[[str], Any]:
    if backend == "vllm":
        def vllm(model_dir: str) -> Any:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            from ...sdk.generators.vllm import VLLMGenerator

            return VLLMGenerator(model_dir, seed=0)

        return vllm

    def transformers(model_dir: str) -> Any:
        from ...sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(model_dir, batch_size=64)

    return transformers


# --------------------------------------------------------------------------------------------- the recipe


class LoopTask(BaseModel):
    """Where prompts and evaluation come from: held-out MiniArith sandbox problems (never in the seed model's
    SFT set); the first ``n_eval`` evaluate, the next ``n_train`` are the generate stage's prompts."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["miniarith"] = "miniarith"
    n_train: int = Field(256, ge=1)
    n_eval: int = Field(200, ge=1)
    eval_max_tokens: int = Field(160, ge=1)
    """Greedy tokens per evaluation answer."""


class LoopRecipe(RecipeConfig):
    """``recipe: loop`` (see the module docstring). ``stages`` is validated in :meth:`check`."""

    recipe: Literal["loop"] = "loop"
    name: str = "loop"
    """The loop's name (report title, manifest)."""
    model: str | None = None
    """Seed model folder; ``null`` = the sandbox seed model picked by ``seed_model``."""
    seed_model: Literal["default", "strong"] = "default"
    """Sandbox seed model without ``model``: default (14.5% held-out) or strong (``STRONG_SANDBOX``, 46.5%; about
    10 CPU minutes to build once)."""
    backend: Literal["transformers", "vllm"] = "transformers"
    iterations: int = Field(2, ge=1)
    init_from: Literal["previous", "seed"] = "previous"
    """Train stages start from the current model (``previous``, STaR / iterative DPO) or the seed (ReST-EM)."""
    evaluate_seed: bool = True
    """Run the evaluate stages on the seed model as iteration 0."""
    budget: LoopBudget = Field(default_factory=LoopBudget)
    task: LoopTask = Field(default_factory=LoopTask)
    stages: list[Any] = Field(min_length=1)
    """One iteration's stages in order, each ``- TYPE: {config}`` (:data:`STAGE_TYPES`)."""

    def stage_configs(self, source: str = "<recipe>") -> list[tuple[str, BaseModel]]:
        return parse_stages(self.stages, source)

    def check(self, source: str) -> None:
        """Stage configs, model folders and the Loop's wiring, before a run folder is made."""
        from ...sdk.models import resolve_model_path

        configs = self.stage_configs(source)
        paths = [("model", self.model)] + [
            (f"stages.{i}.score.reward_model_path", c.reward_model_path)
            for i, (t, c) in enumerate(configs) if t == "score"]
        for key, path in paths:
            if path is not None:
                try:
                    resolve_model_path(path)
                except ConfigError as e:
                    raise ConfigError(f"invalid recipe {source}: {key}: {e}") from None
        self.build_loop(self.model or "<sandbox seed model>", source, configs, progress=False)

    def resolved(self) -> dict[str, Any]:
        """The recipe with every stage's defaults filled in."""
        out = self.model_dump(mode="json")
        out["stages"] = [{t: c.model_dump(mode="json")} for t, c in self.stage_configs()]
        return out

    def _sandbox(self) -> Any:
        from ...trainers.sandbox.seed import STRONG_SANDBOX

        return STRONG_SANDBOX if self.model is None and self.seed_model == "strong" else None

    def build_loop(self, seed_model: str | Path, source: str = "<recipe>",
                   configs: list[tuple[str, BaseModel]] | None = None, progress: bool = True) -> Loop:
        """The :class:`~loopwright.sdk.loop.Loop` this recipe declares, on ``seed_model``."""
        from ...trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

        configs = self.stage_configs(source) if configs is None else configs
        task = self.task
        problems = held_out_problems(task.n_eval + task.n_train, self._sandbox())
        eval_set, train_set = problems[:task.n_eval], problems[task.n_eval:]

        def miniarith_accuracy(gen: Any) -> dict[str, Any]:
            return evaluate_accuracy(gen, eval_set, max_tokens=task.eval_max_tokens)

        def make(t: str, c: BaseModel) -> LoopStage:
            if isinstance(c, LoopStage):
                return c
            opts = c.model_dump()
            if t == "generate":
                return Generate(prompts=[miniarith_prompt(p) for p in train_set], **opts)
            if t == "score":
                judge, path = opts.pop("judge"), opts.pop("reward_model_path")
                samples, max_tokens = opts.pop("samples"), opts.pop("max_tokens")
                if judge in ("gold", "gold_answer"):
                    from ..oracle import GoldAnswerJudge

                    return Score(judge=GoldAnswerJudge(train_set, check_steps=judge == "gold"), **opts)
                if judge == "reward_model":
                    return Score(judge=_LazyRewardModel(path), **opts)
                return Score(judge=_self_judge(samples, max_tokens), **opts)
            if t == "filter":
                from ..rip.filter import RIPFilter

                opts.pop("filter")
                thresholds = RIPThresholds(**{k: opts.pop(k) for k in RIPThresholds.model_fields})
                return ApplyFilter(filter=RIPFilter(thresholds, min_valid=opts.pop("min_valid")), **opts)
            return Evaluate(fn=miniarith_accuracy, **opts)

        stages = []
        for i, (t, c) in enumerate(configs):
            try:
                stages.append(make(t, c))
            except ValidationError as e:
                raise ConfigError(format_validation_error(e, STAGE_TYPES[t], source, prefix=("stages", str(i), t)))\
                    from None
        try:
            return Loop(stages, seed_model=seed_model, iterations=self.iterations, init_from=self.init_from,
                        make_generator=_factory(self.backend), budget=self.budget,
                        evaluate_seed=self.evaluate_seed, seed=self.seed, name=self.name, progress=progress)
        except ConfigError as e:
            raise ConfigError(f"invalid recipe {source}: {_where(e, configs)}: {e}") from None

    def run(self, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        run_path = Path(run_dir)
        if self.model is not None:
            seed_model = self.model
        else:
            from ...trainers.sandbox.seed import ensure_seed_model

            seed_model = str(ensure_seed_model(self._sandbox(), progress=progress))
        loop = self.build_loop(seed_model, str(run_path / "recipe.yaml"), progress=progress)
        records = loop.run(run_path, resume=resume)
        last = records[-1] if records else {"metrics": {}}
        return {"metrics": {k: v for k, v in last["metrics"].items() if v is not None},
                "iterations": len(records)}


def _where(err: ConfigError, configs: list[tuple[str, BaseModel]]) -> str:
    """``stages.I.TYPE`` of the stage a Loop wiring error names (by the Loop's default names), else ``stages``."""
    counts: dict[str, int] = {}
    for t, _ in configs:
        counts[t] = counts.get(t, 0) + 1
    seen: dict[str, int] = {}
    names: dict[str, int] = {}
    for i, (t, c) in enumerate(configs):
        seen[t] = seen.get(t, 0) + 1
        name = getattr(c, "name", None) or (t if counts[t] == 1 else f"{t}{seen[t]}")
        names.setdefault(name, i)
    m = re.search(r"stage '([^']+)'", str(err))
    if m and m.group(1) in names:
        i = names[m.group(1)]
        return f"stages.{i}.{configs[i][0]}"
    return "stages"
