"""The Meta-Rewarding loop (Wu et al., arXiv 2407.19594; spec/loops.md §3) as a composition of loop stages.

One model plays actor, judge and meta-judge. :class:`MetaRewardingLoop` builds a public
:class:`~loopwright.sdk.loop.Loop` of six stages per iteration (:mod:`.stages`): ``generate`` (K responses per
prompt) -> ``judge`` (N judgements each) -> ``meta_judge`` (the judge's judgements compared) -> ``build_pairs``
(actor pairs with length control ρ, judge pairs by position-weighted Elo) -> ``train`` (the public DPO stage, from
``M_{t-1}`` or the seed) -> ``evaluate``. Iteration ``t`` (1-based) starts from model ``M_{t-1}`` (``M_0`` = the
seed); iteration 0 evaluates the seed. Artifacts keep the method's layout, ``RUN_DIR/iter<t>/responses.jsonl``,
``judgments.jsonl``, ``scores.jsonl``, ``meta_battles.jsonl``, ``actor_pairs.jsonl``, ``judge_pairs.jsonl``,
``train_pairs.jsonl`` (TRL conversational rows), ``skipped.jsonl``, ``model/``, ``eval.jsonl``, and are
written atomically. Zero usable pairs stops the loop with :class:`NoUsablePairsError` (recorded in
``iterations.jsonl`` and the report) instead of training on nothing.

Each iteration is one LangGraph graph with a SQLite checkpointer (``RUN_DIR/checkpoints.sqlite``); a killed run
resumes with ``resume=True`` (or ``loopwright resume RUN_DIR`` for a run started by a script): finished stages
are not redone, and a resumed run writes the same files as an uninterrupted one. Runs written before the loop
became a composition (thread ids ``iter<t>``) cannot be resumed by this version; start them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from loopwright.sdk.artifacts import read_jsonl
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generator import Generator
from loopwright.sdk.loop import RESUME_ENV, Loop
from loopwright.sdk.types import Prompt, normalize_prompt, stable_hash

from ..pointwise import PointwiseJudge
from .checkpoints import CheckpointError, check_model_dir, check_state_db
from .config import MetaRewardingConfig
from .stages import (
    BuildMetaPairs,
    EvaluateMetaRewarding,
    JudgeResponses,
    MetaJudgeBattles,
    NoUsablePairsError,
    SampleResponses,
    TrainMetaDPO,
)

__all__ = ["STAGES", "CheckpointError", "MetaRewardingLoop", "NoUsablePairsError"]

STAGES = ("generate", "judge", "meta_judge", "build_pairs", "train", "evaluate")

Evaluator = Callable[[Generator, PointwiseJudge, Any], dict[str, Any]]


class MetaRewardingLoop:
    """Run Meta-Rewarding iterations in ``run_dir``.

    Args:
        config: :class:`~.config.MetaRewardingConfig`.
        run_dir: the run directory (created; an existing run is continued only with ``resume=True``).
        seed_model: the seed model folder (``M_0``; checked before anything runs).
        prompts: the prompt pool; iteration ``t`` takes ``prompts_per_iter`` consecutive prompts from
            ``(t-1)·prompts_per_iter`` on (wrapping around the pool).
        generator_factory: ``model_dir -> Generator`` for the current model (default: ``TransformersGenerator``).
            The loop keeps one model's generator open at a time and closes it before loading another.
        judge / meta_judge: ``None`` (default) = the current model plays the role, as in the paper; or a fixed
            Generator (e.g. the sandbox's verifiable-signal judge).
        evaluator: ``(actor, reward_judge, judge_template) -> {"metrics", "histograms", "records"}`` run on every
            model (e.g. :class:`~.sandbox.MiniArithEval`); ``None`` skips evaluation metrics.
        on_stage: called with the stage name (``"iter2.judge"``) when a stage starts (progress, tests).
        progress: show a progress bar over the stages.
    """

    def __init__(
        self,
        config: MetaRewardingConfig,
        run_dir: str | Path,
        *,
        seed_model: str | Path,
        prompts: Sequence[Prompt],
        generator_factory: Callable[[Path], Generator] | None = None,
        judge: Generator | None = None,
        meta_judge: Generator | None = None,
        evaluator: Evaluator | None = None,
        on_stage: Callable[[str], None] | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(config, MetaRewardingConfig):
            raise TypeError(f"config must be a MetaRewardingConfig, got {type(config).__name__}")
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.seed_model = Path(seed_model)
        self.prompts = [normalize_prompt(p) for p in prompts]
        if len(self.prompts) < config.prompts_per_iter:
            raise ConfigError(f"prompts_per_iter={config.prompts_per_iter} but the prompt pool holds only "
                              f"{len(self.prompts)} prompts; lower prompts_per_iter or pass more prompts")
        for name, g in (("judge", judge), ("meta_judge", meta_judge)):
            if g is not None and not isinstance(g, Generator):
                raise TypeError(f"{name} must be a loopwright Generator or None (the model itself), "
                                f"got {type(g).__name__}")
        self.generator_factory = generator_factory or _transformers_factory
        self.judge_generator = judge
        self.meta_judge_generator = meta_judge
        self.evaluator = evaluator
        self.on_stage = on_stage
        self.progress = progress

    # ------------------------------------------------------------------------------------------- paths

    def model_dir(self, t: int) -> Path:
        """``M_t``: the seed for ``t == 0``, else ``RUN_DIR/iter<t>/model``."""
        return self.seed_model if t == 0 else self.run_dir / f"iter{t}" / "model"

    def to_dataset(self, iteration: int, which: Literal["train", "actor", "judge"] = "train") -> Any:
        """Iteration ``iteration``'s DPO data as a TRL preference ``datasets.Dataset`` (conversational
        prompt/chosen/rejected): ``"train"`` the mixed actor + judge pairs the iteration trained on, ``"actor"``
        or ``"judge"`` one kind only."""
        from ...sdk.trl_data import to_dataset, to_trl_rows

        path = self.run_dir / f"iter{iteration}" / "train_pairs.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"iteration {iteration} has no {path.name} in {self.run_dir} (not run yet?)")
        rows = read_jsonl(path)
        if which != "train":
            rows = [r for r in rows if r.get("kind") == which]
        return to_dataset(to_trl_rows(rows, "preference"), "preference")

    # ------------------------------------------------------------------------------------------- run

    def loop(self) -> Loop:
        """The :class:`~loopwright.sdk.loop.Loop` this runs: the six stages of :mod:`.stages`."""
        c = self.cfg
        stages = [SampleResponses(cfg=c, prompts=self.prompts),
                  JudgeResponses(cfg=c, judge_generator=self.judge_generator),
                  MetaJudgeBattles(cfg=c, meta_judge_generator=self.meta_judge_generator), BuildMetaPairs(cfg=c),
                  TrainMetaDPO.from_config(c),
                  EvaluateMetaRewarding(cfg=c, evaluator=self.evaluator, judge_generator=self.judge_generator)]
        return Loop(stages, seed_model=self.seed_model, iterations=c.iterations, init_from=c.init_from,
                    make_generator=self._make_generator, seed=c.seed, name="Meta-Rewarding", progress=self.progress,
                    iteration_dir="iter{t}", on_stage=self.on_stage, config=self._run_config())

    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run (or with ``resume=True`` continue) all iterations; returns the ``iterations.jsonl`` records.

        Raises :class:`NoUsablePairsError` when an iteration has nothing to train on (after recording it and
        writing the report) and :class:`~.checkpoints.CheckpointError` naming a missing or corrupt file.
        """
        check_model_dir(self.seed_model, what="seed model")
        state_db = self.run_dir / "checkpoints.sqlite"
        resume = resume or bool(os.environ.get(RESUME_ENV) and state_db.is_file())  # `loopwright resume`
        if resume:
            check_state_db(state_db)
        elif state_db.exists():
            raise ConfigError(f"{self.run_dir} already holds a run ({state_db}); pass resume=True (--resume) to "
                              "continue it, or use a new run directory")
        return self.loop().run(self.run_dir, resume=resume)

    def _make_generator(self, model_dir: str) -> Generator:
        check_model_dir(Path(model_dir))
        return self.generator_factory(Path(model_dir))

    def _run_config(self) -> dict[str, Any]:
        return {"meta_rewarding": self.cfg.model_dump(mode="json"), "seed_model": str(self.seed_model),
                "judge": self.judge_generator.model_id if self.judge_generator else "self",
                "meta_judge": self.meta_judge_generator.model_id if self.meta_judge_generator else "self",
                "prompts": stable_hash(self.prompts)}


def _transformers_factory(model_dir: Path) -> Generator:
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir, batch_size=64)
