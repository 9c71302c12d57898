"""The ``Loop`` builder: N iterations of a list of durable, typed stages (generate → judge → filter → train → ...).

DESIGN.md ("Loops are compositions, not monoliths"): every self-improving loop is the same few public stages in
some order. ``Loop(stages, seed_model=..., iterations=N).run(RUN_DIR)`` runs them for ``N`` iterations, each
iteration a LangGraph graph with a SQLite checkpointer (:func:`~loopwright.sdk.stages.run_stages`), and

- hands the model a train stage wrote in iteration ``t`` to every stage after it: the generate, score and evaluate
  stages of iteration ``t+1`` (and the rest of iteration ``t``). Train stages start from that model
  (``init_from="previous"``, iterative DPO / STaR) or from the seed model every time (``"seed"``, ReST-EM);
- names every artifact by the stage that declares it (:class:`ArtifactRef`: ``"score.scored"``), stored at
  ``iter_<t>/<stage>/<output>.jsonl`` (a model: ``iter_<t>/<stage>/<output>/``), written atomically;
- appends every stage's metrics (``<stage>.<metric>``, plus accuracies with their ``n`` and 95% interval) to
  ``iterations.jsonl`` as the stage ends, so ``loopwright report RUN_DIR`` and ``loopwright compare`` work;
- keeps token and call budgets (:class:`LoopBudget`): a cap that is reached stops the loop before its next stage
  with :class:`BudgetExceededError`, and the run stays resumable;
- shows a progress bar over the stages (tqdm);
- resumes: ``run(RUN_DIR, resume=True)``, or ``loopwright resume RUN_DIR`` for a loop started from a script
  (the CLI re-runs that script with ``LOOPWRIGHT_RESUME`` set; see :func:`resume_command`).

Iteration 0 runs the loop's evaluate stages on the seed model (``evaluate_seed=True``), the baseline row of the
report. Stages live in :mod:`loopwright.sdk.loop_stages` (interface-only: generate, score, filter, build pairs,
rejection-sample, evaluate, function) and :mod:`loopwright.trainers.loop_stages` (train SFT / DPO / reward model).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, LoopwrightError
from .generator import Generator

__all__ = ["ArtifactRef", "BudgetExceededError", "Loop", "LoopBudget", "LoopStage", "StageContext",
           "RESUME_ENV", "resume_command"]

RESUME_ENV = "LOOPWRIGHT_RESUME"
"""Set by ``loopwright resume RUN_DIR`` when it re-runs the script that started a loop: every :meth:`Loop.run`
whose run folder already holds checkpoints then resumes instead of refusing to start over."""

LAUNCH_META = "loop_launch"
"""Manifest ``meta`` key: how the process that started the loop was launched (for ``loopwright resume``)."""


# --------------------------------------------------------------------------------------------- references


class ArtifactRef(BaseModel):
    """A typed reference to an artifact: output ``name`` of stage ``stage``, of kind ``kind``.

    Kinds (the rows' format):

    - ``samples``: one row per prompt, ``{"id", "prompt", "responses", "finish_reasons", "lengths"}``;
    - ``scored``: ``samples`` rows plus ``"rewards"`` (one float or ``None`` per response), ``"valid"`` and
      ``"invalid_reasons"`` (the RIP filter's record shape, so any :class:`~loopwright.sdk.filter.Filter` applies);
    - ``sft``: TRL conversational SFT rows ``{"messages": [...]}``;
    - ``preference``: TRL conversational preference rows ``{"prompt", "chosen", "rejected"}`` (plus metadata);
    - ``rejected``: dropped rows with their ``reason``;
    - ``model``: a policy model folder (the next stages' and iteration's model);
    - ``reward_model``: a sequence-classification reward model folder (not a policy);
    - ``json``: anything else a function stage writes.

    Written as ``"stage.name"`` in a stage's ``input``; ``"stage"`` alone means that stage's first output.
    """

    model_config = ConfigDict(frozen=True)

    stage: str
    name: str
    kind: str
    file: str | None = None
    """A fixed file name inside the iteration folder (a stage's ``files``), instead of ``<stage>/<name>``."""
    iteration_dir: str = "iter_{t}"
    """The iteration folder's name pattern (the loop's ``iteration_dir``)."""
    per_iteration: bool = True
    """False for the outputs of a ``runs_once`` stage: one file in the run folder, shared by every iteration."""

    def __str__(self) -> str:
        return f"{self.stage}.{self.name}"

    def path(self, run_path: Path, iteration: int) -> Path:
        """Where iteration ``iteration`` stores it."""
        folder = run_path / self.iteration_dir.format(t=iteration) if self.per_iteration else run_path
        if self.file is not None:
            return folder / self.file
        suffix = {"model": "", "reward_model": "", "json": ".json"}.get(self.kind, ".jsonl")
        return folder / self.stage / f"{self.name}{suffix}"


# --------------------------------------------------------------------------------------------- stages


class LoopStage(BaseModel):
    """Base of every loop stage: a pydantic config (``extra="forbid"``) plus ``run(ctx) -> metrics``.

    Subclasses set ``kind`` (the default stage name), ``accepts`` (input kinds, in order of preference; empty: no
    input) and ``outputs`` (output name -> kind), and implement :meth:`run`, which reads ``ctx.input()``, writes
    each declared output to ``ctx.output(name)`` atomically and returns a dict of numeric metrics (plus, optionally,
    ``_intervals``, ``_histograms`` and ``_notes`` for the iteration's report record). A stage must be
    idempotent: a resumed loop re-runs the stage that was interrupted. Components that are not data (a judge, a
    filter, a callable) are fields excluded from the config dump; the run's manifest records the rest.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: ClassVar[str] = "stage"
    accepts: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[dict[str, str]] = {}
    trains: ClassVar[bool] = False
    """True for stages whose ``model`` output becomes the loop's current model."""
    runs_on_seed: ClassVar[bool] = False
    """True for stages that also run at iteration 0 on the seed model (evaluate)."""
    runs_once: ClassVar[bool] = False
    """True for stages that run once, before the first iteration's other stages (e.g. building a fixed held-out
    set); their outputs live in the run folder itself and every iteration reads the same file."""
    releases_generators: ClassVar[bool] = False
    """True for stages that need the memory (training): the loop closes its open generator before they run."""
    files: ClassVar[dict[str, str]] = {}
    """Output name -> a fixed file name in the iteration folder (default ``<stage>/<output>``): a method whose
    run-folder layout predates the Loop (Meta-Rewarding's ``iter<t>/responses.jsonl``) keeps it."""
    prefix_metrics: ClassVar[bool] = True
    """Record metrics as ``<stage>.<metric>`` (False: as the stage names them, for a method's own report)."""

    name: str | None = None
    """Unique name in the loop (default: ``kind``, numbered if repeated); artifacts live under it."""
    input: str | None = None
    """``"stage.output"`` / ``"stage"`` of an earlier stage (default: the latest one with an accepted kind)."""

    def output_kinds(self, input_kind: str | None) -> dict[str, str]:
        """The kinds of this stage's outputs given its input's kind (a filter keeps its input's kind)."""
        return dict(self.outputs)

    def run(self, ctx: StageContext) -> dict[str, Any] | None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The stage's config as plain data (recorded in the run's manifest)."""
        return {"type": type(self).__name__, **self.model_dump(mode="json")}


class LoopBudget(BaseModel):
    """Caps over the whole loop (every iteration, every stage). ``None`` = no cap."""

    model_config = ConfigDict(extra="forbid")

    max_generator_calls: int | None = Field(None, ge=1)
    """Prompts sent to a generator (a prompt with ``n`` samples is one call)."""
    max_generated_tokens: int | None = Field(None, ge=1)
    """Completion tokens generated (samples, judgements and evaluations)."""
    max_tokens: int | None = Field(None, ge=1)
    """Prompt + completion tokens."""


class BudgetExceededError(LoopwrightError, RuntimeError):
    """A :class:`LoopBudget` cap was reached; the run stops before its next stage and stays resumable."""


@dataclass
class StageContext:
    """What a stage sees while it runs: the run, the iteration, the current model, its inputs and outputs."""

    loop: Loop
    run: Any
    iteration: int
    stage: LoopStage
    stage_name: str
    model: str
    """The current policy model folder (the seed model, or the last one a train stage wrote)."""
    inputs: dict[str, ArtifactRef]
    spent: dict[str, int] = field(default_factory=lambda: {"generator_calls": 0, "prompt_tokens": 0,
                                                           "completion_tokens": 0})
    _generators: list[Generator] = field(default_factory=list)

    @property
    def seed(self) -> int:
        """The loop's seed plus the iteration (so iterations sample differently but reproducibly)."""
        return self.loop.seed + self.iteration

    @property
    def seed_model(self) -> str:
        return self.loop.seed_model

    @property
    def init_model(self) -> str:
        """The weights a train stage starts from (``init_from``): the current model, or the loop's
        ``init_model`` (default: the seed model) when that is ``"seed"`` or no stage has trained yet."""
        if self.loop.init_from == "previous" and self.model != self.loop.seed_model:
            return self.model
        return self.loop.init_model

    def input(self) -> Path:
        """The path of this stage's input artifact (this iteration's)."""
        if "input" not in self.inputs:
            raise ConfigError(f"stage {self.stage_name!r} has no input")
        return self.inputs["input"].path(self.run.path, self.iteration)

    def input_ref(self) -> ArtifactRef:
        return self.inputs["input"]

    def artifact(self, ref: str) -> Path:
        """This iteration's path of artifact ``"stage.output"`` of an earlier stage (a stage that reads more than
        its one input, e.g. Meta-Rewarding's pair builder reads responses, scores and meta-judge battles)."""
        ref_ = self.loop.artifacts.get(ref)
        if ref_ is None:
            raise ConfigError(f"stage {self.stage_name!r} reads {ref!r}, which no stage declares; declared: "
                              f"{', '.join(self.loop.artifacts)}")
        return ref_.path(self.run.path, self.iteration)

    def output(self, name: str) -> Path:
        """The path of declared output ``name`` (its folder created)."""
        ref = self.loop._outputs[self.stage_name].get(name)
        if ref is None:
            raise ConfigError(f"stage {self.stage_name!r} declares no output {name!r}; outputs: "
                              f"{sorted(self.loop._outputs[self.stage_name])}")
        path = ref.path(self.run.path, self.iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def generator(self, model: str | None = None) -> Generator:
        """A generator on ``model`` (default: the current model) from the loop's ``make_generator``, metered
        against the loop's budget. The loop keeps one model's generator open across stages (a vLLM engine starts
        once per model, not once per stage) and closes it before a train stage and when the run ends."""
        gen = _Metered(self.loop._generator(model or self.model), self)
        self._generators.append(gen)
        return gen

    def recorded_metrics(self) -> dict[str, Any]:
        """The metrics this iteration's earlier stages recorded (its ``iterations.jsonl`` record so far)."""
        from .report import read_iterations

        if not (self.run.path / "iterations.jsonl").is_file():
            return {}
        rec = next((r for r in read_iterations(self.run.path) if r.iteration == self.iteration), None)
        return dict(rec.metrics) if rec is not None else {}

    def meter(self, generator: Generator) -> Generator:
        """``generator`` (one the stage was given, e.g. a fixed judge) counted against the loop's budget."""
        return _Metered(generator, self)

    def record(self, metrics: dict[str, Any], notes: Sequence[str] = (), **fields: Any) -> None:
        """Write metrics, notes and other fields (``status=...``) into this iteration's report record now (a stage
        about to raise uses it)."""
        numeric = self.loop._metric_names(self.stage, self.stage_name, metrics)
        self.loop._record(self.run.path, self.iteration, numeric, {}, notes=notes, fields=fields)

    def spend(self, *, calls: int = 0, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Count work against the loop's budget (generate/score/evaluate stages call it)."""
        self.spent["generator_calls"] += calls
        self.spent["prompt_tokens"] += prompt_tokens
        self.spent["completion_tokens"] += completion_tokens

    def close(self) -> None:
        """Drop this stage's metered views (the loop owns, and closes, the generators under them)."""
        self._generators.clear()


class _Metered(Generator):
    """A generator that counts its calls and tokens into a stage's budget; everything else goes to the inner one."""

    def __init__(self, inner: Generator, ctx: StageContext) -> None:
        self._inner, self._ctx = inner, ctx
        self.backend = inner.backend  # type: ignore[misc]
        self.supports_score = inner.supports_score  # type: ignore[misc]
        self.supports_logprobs = inner.supports_logprobs  # type: ignore[misc]
        self.model_id, self.revision = inner.model_id, inner.revision

    def _count(self, n_prompts: int, outs: list[list[Any]]) -> list[list[Any]]:
        from .types import total_usage

        u = total_usage(outs)
        self._ctx.spend(calls=n_prompts, prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens)
        return outs

    def generate(self, prompts: Sequence[Any], params: Any = None) -> list[list[Any]]:
        return self._count(len(prompts), self._inner.generate(prompts, params))

    async def agenerate(self, prompts: Sequence[Any], params: Any = None) -> list[list[Any]]:
        return self._count(len(prompts), await self._inner.agenerate(prompts, params))

    def score(self, prompt: Any, continuation: str) -> float:
        return self._inner.score(prompt, continuation)

    def score_many(self, prompts: Sequence[Any], continuations: Sequence[str]) -> list[float]:
        return self._inner.score_many(prompts, continuations)

    def template_hash(self) -> str | None:
        return self._inner.template_hash()

    def cache_identity(self) -> dict[str, Any]:
        return self._inner.cache_identity()

    def close(self) -> None:
        """A no-op: the loop (or whoever made the inner generator) closes it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_inner"], name)

    def __repr__(self) -> str:
        return f"Metered({self._inner!r})"


# --------------------------------------------------------------------------------------------- the builder


def _transformers(model_dir: str) -> Generator:
    from .generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir)


class Loop:
    """``Loop(stages, seed_model=PATH, iterations=N).run(RUN_DIR)``; see the module docstring.

    Args:
        stages: the stages of one iteration, in order (:mod:`loopwright.sdk.loop_stages`,
            :mod:`loopwright.trainers.loop_stages`, or your own :class:`LoopStage`).
        seed_model: the model folder of iteration 0.
        iterations: how many times the stages run.
        init_from: ``"previous"`` (train stages start from the current model) or ``"seed"``.
        make_generator: ``fn(model_dir) -> Generator`` (default: ``TransformersGenerator``; pass a vLLM one for
            speed). Generate, score (a judge built from the model) and evaluate stages use it.
        budget: caps over the whole loop (:class:`LoopBudget`).
        evaluate_seed: run the evaluate stages on the seed model as iteration 0.
        seed: base seed (iteration ``t`` uses ``seed + t``).
        name: the loop's name (report title, manifest).
        progress: show a progress bar.
        iteration_dir: the iteration folders' name pattern (``"iter_{t}"``; Meta-Rewarding keeps ``"iter{t}"``).
        on_stage: called with ``"iter<t>.<stage>"`` as each stage starts (logging, tests).
        config: more configuration to record in the run's manifest (a resume must match it), e.g. the
            hyperparameters of a method built on the Loop.
        init_model: the weights train stages start from in place of the seed model (default: ``seed_model``);
            set it when the seed model is served from elsewhere (a served endpoint's id, a test double).
    """

    def __init__(self, stages: Sequence[LoopStage], *, seed_model: str | Path, iterations: int = 1,
                 init_from: Literal["previous", "seed"] = "previous",
                 make_generator: Callable[[str], Generator] | None = None, budget: LoopBudget | None = None,
                 evaluate_seed: bool = True, seed: int = 0, name: str = "loop", progress: bool = True,
                 iteration_dir: str = "iter_{t}", on_stage: Callable[[str], None] | None = None,
                 config: dict[str, Any] | None = None, init_model: str | Path | None = None) -> None:
        if not stages:
            raise ConfigError("a Loop needs at least one stage")
        if not isinstance(iterations, int) or iterations < 1:
            raise ConfigError(f"iterations={iterations!r}; pass an integer >= 1")
        if init_from not in ("previous", "seed"):
            raise ConfigError(f"init_from={init_from!r}; allowed values: previous, seed")
        if iteration_dir.count("{t}") != 1 or "/" in iteration_dir or "\\" in iteration_dir:
            raise ConfigError(f"iteration_dir={iteration_dir!r} must hold '{{t}}' once and no path separator")
        bad = [s for s in stages if not isinstance(s, LoopStage)]
        if bad:
            raise ConfigError(f"Loop stages must be LoopStage objects, got {type(bad[0]).__name__}")
        self.stages = list(stages)
        self.seed_model = str(seed_model)
        self.init_model = str(init_model) if init_model is not None else self.seed_model
        self.iterations = iterations
        self.init_from = init_from
        self.make_generator = make_generator or _transformers
        self.budget = budget or LoopBudget()
        self.evaluate_seed = evaluate_seed
        self.seed = seed
        self.name = name
        self.progress = progress
        self.iteration_dir = iteration_dir
        self.on_stage = on_stage
        self.config = dict(config or {})
        self._open: tuple[str, Generator] | None = None
        self._names = self._assign_names()
        self._outputs: dict[str, dict[str, ArtifactRef]] = {}
        self._inputs: dict[str, dict[str, ArtifactRef]] = {}
        self._resolve()

    # ----------------------------------------------------------------------------------------- static checks

    def _assign_names(self) -> list[str]:
        names: list[str] = []
        counts: dict[str, int] = {}
        for s in self.stages:
            counts[s.kind] = counts.get(s.kind, 0) + 1
        seen: dict[str, int] = {}
        for s in self.stages:
            if s.name is not None:
                name = s.name
            else:
                seen[s.kind] = seen.get(s.kind, 0) + 1
                name = s.kind if counts[s.kind] == 1 else f"{s.kind}{seen[s.kind]}"
            if not name.replace("_", "").isalnum() or not name.isascii():
                raise ConfigError(f"stage name {name!r} must be letters, digits and '_' (it names a folder)")
            if name in names:
                raise ConfigError(f"two stages are named {name!r}; give one of them name=...")
            names.append(name)
        return names

    def _resolve(self) -> None:
        """Wire every stage's input to an earlier stage's output, checking kinds (ConfigError on a mismatch)."""
        declared: list[ArtifactRef] = []
        for stage, name in zip(self.stages, self._names, strict=True):
            inputs: dict[str, ArtifactRef] = {}
            if stage.accepts:
                ref = self._find_input(stage, name, declared)
                inputs["input"] = ref
            elif stage.input is not None:
                raise ConfigError(f"stage {name!r} ({type(stage).__name__}) takes no input, got input={stage.input!r}")
            kinds = stage.output_kinds(inputs["input"].kind if inputs else None)
            if stage.runs_once and any(r.per_iteration for r in inputs.values()):
                raise ConfigError(f"stage {name!r} runs once, before the iterations, so it cannot read "
                                  f"{inputs['input']}, an artifact each iteration writes")
            outs = {k: ArtifactRef(stage=name, name=k, kind=v, file=stage.files.get(k), iteration_dir=self.iteration_dir,
                                   per_iteration=not stage.runs_once) for k, v in kinds.items()}
            self._inputs[name] = inputs
            self._outputs[name] = outs
            declared.extend(outs.values())

    def _find_input(self, stage: LoopStage, name: str, declared: list[ArtifactRef]) -> ArtifactRef:
        want = " or ".join(stage.accepts)
        if stage.input is None:
            for ref in reversed(declared):
                if ref.kind in stage.accepts:
                    return ref
            raise ConfigError(f"stage {name!r} ({type(stage).__name__}) needs a {want} input, and no earlier stage "
                              f"writes one; put a stage that does before it")
        stage_name, _, out = stage.input.partition(".")
        if stage_name not in self._outputs:
            earlier = ", ".join(self._outputs) or "(none)"
            raise ConfigError(f"stage {name!r}: input={stage.input!r} names no earlier stage; earlier stages: "
                              f"{earlier}")
        outs = self._outputs[stage_name]
        if not out:
            ref = next(iter(outs.values()), None)
            if ref is None:
                raise ConfigError(f"stage {name!r}: stage {stage_name!r} writes no artifact")
        elif out not in outs:
            raise ConfigError(f"stage {name!r}: stage {stage_name!r} has no output {out!r}; its outputs: "
                              f"{', '.join(outs) or '(none)'}")
        else:
            ref = outs[out]
        if ref.kind not in stage.accepts:
            raise ConfigError(f"stage {name!r} needs a {want} input, but {ref} is {ref.kind}")
        return ref

    @property
    def artifacts(self) -> dict[str, ArtifactRef]:
        """Every artifact one iteration declares, keyed ``"stage.name"``."""
        return {str(r): r for outs in self._outputs.values() for r in outs.values()}

    def describe(self) -> dict[str, Any]:
        """The loop's configuration as plain data (the run manifest's ``config``; a resume must match it)."""
        return {"loop": self.name, "seed_model": self.seed_model, "iterations": self.iterations,
                **({"iteration_dir": self.iteration_dir} if self.iteration_dir != "iter_{t}" else {}),
                **({"config": self.config} if self.config else {}),
                **({"init_model": self.init_model} if self.init_model != self.seed_model else {}),
                "init_from": self.init_from, "evaluate_seed": self.evaluate_seed, "seed": self.seed,
                "stages": [{**s.describe(), "name": n} for s, n in zip(self.stages, self._names, strict=True)],
                "artifacts": {k: r.kind for k, r in self.artifacts.items()}}

    # ----------------------------------------------------------------------------------------- models

    def _train_stage(self) -> str | None:
        names = [n for s, n in zip(self.stages, self._names, strict=True) if s.trains]
        return names[-1] if names else None

    def model_after(self, run_path: Path, iteration: int) -> str:
        """The policy model at the end of ``iteration`` (the seed model for 0, or with no train stage)."""
        last = self._train_stage()
        if iteration == 0 or last is None:
            return self.seed_model
        return str(self._outputs[last]["model"].path(run_path, iteration))

    def _generator(self, model: str) -> Generator:
        """The open generator on ``model``, or a new one (closing the previous model's first)."""
        if self._open is not None and self._open[0] == model:
            return self._open[1]
        self.close_generators()
        gen = self.make_generator(model)
        self._open = (model, gen)
        return gen

    def close_generators(self) -> None:
        """Close the generator the loop holds open (before training, and when a run ends)."""
        if self._open is not None:
            gen, self._open = self._open[1], None
            close = getattr(gen, "close", None)
            if callable(close):
                close()

    # ----------------------------------------------------------------------------------------- running

    def run(self, run_dir: str | Path, *, resume: bool = False) -> list[dict[str, Any]]:
        """Run (``resume=True``: continue) the loop in ``run_dir``; returns the ``iterations.jsonl`` records."""
        from .artifacts import RunDir
        from .report import read_iterations, write_report
        from .stages import Stage, run_stages

        run_path = Path(run_dir).absolute()
        if os.environ.get(RESUME_ENV) and (run_path / "checkpoints.sqlite").is_file():
            resume = True
        if resume:
            if not (run_path / "manifest.json").is_file():
                raise ConfigError(f"{run_path} holds no loop run to resume (no manifest.json); start it with "
                                  "resume=False")
            run = RunDir(run_path, config=self.describe(), seeds={"seed": self.seed})
        else:
            if run_path.exists() and not run_path.is_dir():
                raise ConfigError(f"run directory {run_path} is a file; pass a folder path")
            if run_path.is_dir() and {p.name for p in run_path.iterdir()} - {"recipe.yaml"}:  # CLI writes it first
                raise ConfigError(f"run directory {run_path} is not empty; pick a new folder, or resume it with "
                                  f"loop.run({str(run_path)!r}, resume=True) / `loopwright resume {run_path}`")
            run = RunDir(run_path, config=self.describe(), seeds={"seed": self.seed})
            run.set_meta(LAUNCH_META, _launch_info())
        plan = self._plan()
        bar = _progress(len(plan), self.progress, self.name)
        try:
            for t in sorted({t for t, _ in plan}):
                stages = [Stage(f"iter{t}.{name}", self._node(t, name, bar)) for tt, name in plan if tt == t]
                run_stages(stages, run, resume=resume, thread_id=f"iteration-{t}")
                if t < self.iterations and (run.path / "iterations.jsonl").is_file():
                    write_report(run.path, title=self.name)  # watch a long run: the report after each iteration
        except LoopwrightError:  # a recorded stop (budget, nothing to train on): the report shows why
            if (run.path / "iterations.jsonl").is_file():
                write_report(run.path, title=self.name)
            raise
        finally:
            bar.close()
            self.close_generators()
        write_report(run.path, title=self.name)
        return [r.model_dump(mode="json") for r in read_iterations(run.path)]

    def run_stage(self, run_dir: str | Path, name: str, iteration: int = 1) -> dict[str, Any]:
        """Run one stage of one iteration in ``run_dir``, outside the graph (nothing is checkpointed or recorded
        in ``iterations.jsonl``): to debug a stage, or test it on inputs written by hand. Returns its metrics."""
        from .artifacts import RunDir

        if name not in self._names:
            raise ConfigError(f"no stage {name!r} in this loop; stages: {', '.join(self._names)}")
        stage = self.stages[self._names.index(name)]
        run = RunDir(Path(run_dir).absolute(), config=self.describe(), seeds={"seed": self.seed})
        ctx = StageContext(loop=self, run=run, iteration=iteration, stage=stage, stage_name=name,
                           model=self._model_at(run.path, iteration, name), inputs=self._inputs[name])
        try:
            if stage.releases_generators:
                self.close_generators()
            return dict(stage.run(ctx) or {})
        finally:
            ctx.close()
            self.close_generators()

    def _plan(self) -> list[tuple[int, str]]:
        named = list(zip(self.stages, self._names, strict=True))
        plan: list[tuple[int, str]] = []
        if self.evaluate_seed:
            plan += [(0, n) for s, n in named if s.runs_on_seed or s.runs_once]
        for t in range(1, self.iterations + 1):
            plan += [(t, n) for s, n in named if not s.runs_once or (t == 1 and not self.evaluate_seed)]
        return plan

    def _node(self, t: int, name: str, bar: Any) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        stage = self.stages[self._names.index(name)]

        def fn(state: dict[str, Any], run: Any) -> dict[str, Any]:
            self._check_budget(run, f"iter{t}.{name}")
            if self.on_stage is not None:
                self.on_stage(f"iter{t}.{name}")
            bar.set_postfix_str(f"iter {t} {name}", refresh=False)
            if stage.releases_generators:
                self.close_generators()
            ctx = StageContext(loop=self, run=run, iteration=t, stage=stage, stage_name=name,
                               model=self._model_at(run.path, t, name), inputs=self._inputs[name])
            try:
                metrics = dict(stage.run(ctx) or {})
            finally:
                ctx.close()
            intervals = metrics.pop("_intervals", {})
            histograms, notes = metrics.pop("_histograms", {}), metrics.pop("_notes", [])
            numeric = self._metric_names(stage, name, metrics)
            # timings go to the manifest only, so that a resumed run writes the same iterations.jsonl
            lasting = {k: v for k, v in numeric.items() if not k.endswith("_seconds")}
            self._record(run.path, t, lasting, self._metric_names(stage, name, intervals, numbers=False),
                         histograms=self._metric_names(stage, name, histograms, numbers=False), notes=notes)
            bar.update(1)
            out = {f"iter{t}.{name}.{k}": str(r.path(run.path, t)) for k, r in self._outputs[name].items()}
            return {"artifacts": out, "metrics": {**numeric, "budget": dict(ctx.spent)}}

        return fn

    def _model_at(self, run_path: Path, t: int, name: str) -> str:
        """The current model when stage ``name`` of iteration ``t`` starts."""
        idx = self._names.index(name)
        trained = [n for s, n in zip(self.stages[:idx], self._names[:idx], strict=True) if s.trains]
        if t > 0 and trained:
            return str(self._outputs[trained[-1]]["model"].path(run_path, t))
        return self.model_after(run_path, t - 1) if t > 0 else self.seed_model

    @staticmethod
    def _metric_names(stage: LoopStage, name: str, values: dict[str, Any], numbers: bool = True) -> dict[str, Any]:
        """``<stage>.<metric>`` (or the bare name, ``prefix_metrics=False``); numbers only, non-finite ones None."""
        out = {}
        for k, v in values.items():
            if numbers:
                if not _number(v):
                    continue
                v = v if v is None or math.isfinite(v) else None
            out[f"{name}.{k}" if stage.prefix_metrics else k] = v
        return out

    @staticmethod
    def _record(run_path: Path, t: int, metrics: dict[str, Any], intervals: dict[str, Any], *,
                histograms: dict[str, Any] | None = None, notes: Sequence[str] = (),
                fields: dict[str, Any] | None = None) -> None:
        from .report import IterationRecord, append_iteration, read_iterations

        rec = IterationRecord(iteration=t)
        if (run_path / "iterations.jsonl").is_file():
            rec = next((r for r in read_iterations(run_path) if r.iteration == t), rec)
        rec.metrics.update(metrics)
        rec.intervals.update(intervals)
        rec.histograms.update({k: [float(x) for x in v] for k, v in (histograms or {}).items()})
        rec.notes.extend(n for n in notes if n not in rec.notes)  # a re-run stage does not repeat its notes
        for k, v in (fields or {}).items():
            setattr(rec, k, v)
        append_iteration(run_path, rec)

    def spent(self, run: Any) -> dict[str, int]:
        """The work recorded so far in ``run``'s manifest (every finished stage)."""
        total = {"generator_calls": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for rec in run.stages.values():
            for k, v in (rec.get("metrics") or {}).get("budget", {}).items():
                total[k] = total.get(k, 0) + int(v)
        return total

    def _check_budget(self, run: Any, next_stage: str) -> None:
        b, s = self.budget, self.spent(run)
        checks = [("max_generator_calls", s["generator_calls"]), ("max_generated_tokens", s["completion_tokens"]),
                  ("max_tokens", s["prompt_tokens"] + s["completion_tokens"])]
        for cap_name, used in checks:
            cap = getattr(b, cap_name)
            if cap is not None and used >= cap:
                run.set_meta("budget_stop", {"cap": cap_name, "limit": cap, "used": used, "before": next_stage})
                raise BudgetExceededError(f"loop budget {cap_name}={cap} reached ({used} used) before stage "
                                          f"{next_stage}; raise it and resume the run at {run.path}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or v is None


def _progress(total: int, show: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="stage", disable=not show)


# --------------------------------------------------------------------------------------------- resume from the CLI


def _launch_info() -> dict[str, Any]:
    """How this process was started, so that ``loopwright resume`` can start it again."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return {"python": sys.executable, "argv": list(sys.argv), "cwd": os.getcwd(),
            "module": getattr(spec, "name", None) if spec is not None else None,
            "file": getattr(main, "__file__", None)}


_NOT_A_SCRIPT = ("pytest", "ipykernel", "IPython", "jupyter")


def resume_command(run_dir: str | Path) -> tuple[list[str], str]:
    """``(argv, cwd)`` that re-runs the script which started the loop in ``run_dir``, or ConfigError naming why
    there is none (started from ``python -c``, a notebook, an interactive session or a test runner)."""
    from .artifacts import read_json

    manifest = read_json(Path(run_dir) / "manifest.json")
    launch = (manifest.get("meta") or {}).get(LAUNCH_META)
    how = f"rebuild the same Loop in Python and call loop.run({str(run_dir)!r}, resume=True)"
    if not launch:
        raise ConfigError(f"{run_dir} was not started by `loopwright run` (no recipe.yaml) nor by a Loop; {how}")
    module, file, argv = launch.get("module"), launch.get("file"), launch.get("argv") or []
    runner = (module or "").startswith(_NOT_A_SCRIPT) or Path(file or "").name.startswith(_NOT_A_SCRIPT)
    if module and not runner:
        cmd = [launch["python"], "-m", module.removesuffix(".__main__"), *argv[1:]]
    elif file and Path(file).is_file() and not runner:
        cmd = [launch["python"], file, *argv[1:]]
    else:
        started = ("`python -c`" if argv[:1] == ["-c"] else "an interactive session or notebook") if not file \
            else f"{Path(file).name} (a test runner)"
        raise ConfigError(f"{run_dir} was started from {started}, which cannot be re-run; {how}")
    if not Path(cmd[0]).is_file():
        cmd[0] = sys.executable
    return cmd, launch.get("cwd") or os.getcwd()
