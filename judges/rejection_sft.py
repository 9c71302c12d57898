"""Rejection-sampling SFT (STaR / ReST-EM): sample, keep the answers a Judge accepts, fine-tune, repeat.

Papers: STaR (Zelikman et al. 2022, arXiv 2203.14465) and ReST-EM (Singh et al. 2023, arXiv 2312.06585). It is the
sanity loop of the training stack: with the gold answer checker as the judge (:class:`~loopwright.judges.oracle.
GoldAnswerJudge`) it must improve held-out accuracy, or the stack (sampling, filtering, SFT, chat-template loss
masking) is broken and no self-judged loop can be read.

One iteration ``t`` (durable stages, LangGraph SQLite checkpointer, resumable with ``resume=True``):

1. ``sample_t``: the model of iteration ``t-1`` samples ``samples`` answers for each of the ``n_prompts`` training
   prompts (temperature ``temperature``, seed ``seed + t``) -> ``iter_t/samples.jsonl``;
2. ``filter_t``: the judge scores every sample; a sample is kept when its verdict is valid and its score is
   ``>= threshold``; duplicates are dropped and at most ``max_per_prompt`` are kept per prompt (ReST-EM caps
   solutions per problem so that easy problems do not dominate) -> ``iter_t/kept.jsonl`` (TRL conversational
   ``messages`` rows) and ``iter_t/rejected.jsonl`` (with the reason);
3. ``train_t``: SFT (TRL ``SFTTrainer`` through :func:`~loopwright.trainers.sft.sft_train`, assistant-only loss)
   from the seed model (``init_from="seed"``, ReST-EM's choice, which avoids drift across iterations) or from the
   previous model (``"previous"``, STaR's original choice) for ``epochs`` passes over the kept rows;
4. ``evaluate_t``: greedy accuracy on held-out problems, with ``n`` and its 95% Wilson interval, appended to
   ``iterations.jsonl`` (``loopwright report`` / ``loopwright compare`` read it).

``peft=LoRASettings(...)`` (:mod:`loopwright.trainers.lora`) makes ``train_t`` train LoRA adapters instead of every
weight (passed as ``SFTSettings.lora``); the adapters are merged into ``iter_t/model``, a normal transformers folder
that the next iteration samples from, so ``peft.merge=False`` is refused when the config is built.

Iteration 0 evaluates the seed model. Defaults (``lr=1e-3``, 2 epochs, 8 samples at temperature 0.8, 4 kept per
prompt) were chosen on the sandbox: they are smaller than the seed build's lr (3e-3) because this is fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..sdk.artifacts import RunDir, read_jsonl, write_jsonl
from ..sdk.errors import ConfigError
from ..sdk.generator import Generator
from ..sdk.judge import Judge
from ..sdk.report import accuracy_record, append_iteration, read_iterations, write_report
from ..sdk.stages import Stage, run_stages
from ..sdk.types import Prompt, SamplingParams
from ..trainers.lora import LoRASettings

__all__ = ["RejectionSFTConfig", "RejectionSFTLoop"]


class RejectionSFTConfig(BaseModel):
    """Knobs of :class:`RejectionSFTLoop` (see the module docstring for where the defaults come from)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = Field(3, ge=1)
    samples: int = Field(8, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)
    threshold: float = 1.0
    """Keep a sample when its valid verdict's score is at least this (the gold checker gives 1 / 0)."""
    max_per_prompt: int = Field(4, ge=1)
    init_from: Literal["seed", "previous"] = "seed"
    learning_rate: float = Field(1e-3, gt=0)
    epochs: float = Field(2.0, gt=0)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(256, ge=16)
    eval_max_tokens: int = Field(128, ge=1)
    seed: int = 0
    peft: LoRASettings | None = None
    """Train LoRA adapters instead of every weight (``SFTSettings.lora``); must merge (``merge=True``, the default)."""

    @field_validator("peft")
    @classmethod
    def _merged(cls, v: LoRASettings | None) -> LoRASettings | None:
        if v is not None and not v.merge:
            raise ValueError(
                "merge=False is not supported in a loop: iteration t+1 samples from (and may start from) the model "
                "folder of iteration t, so the adapters must be merged; set merge: true (the default), or call "
                "loopwright.trainers.sft.sft_train with lora=LoRASettings(merge=False) outside the loop")
        return v


def _generator(model_dir: str) -> Generator:
    from ..sdk.generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir, batch_size=64)


def _close(gen: Any) -> None:
    close = getattr(gen, "close", None)
    if callable(close):
        close()


class RejectionSFTLoop:
    """``RejectionSFTLoop(seed_model, train_prompts, judge, eval_fn).run(run_dir)``.

    - ``train_prompts``: the prompts sampled every iteration (chat messages or strings);
    - ``judge``: any pointwise :class:`~loopwright.sdk.judge.Judge` (the gold checker for the oracle run, an LLM
      judge or a reward model for a self-judged one);
    - ``evaluate``: ``fn(generator) -> (correct, n)``, the held-out accuracy of a model (greedy);
    - ``make_generator``: ``fn(model_dir) -> Generator`` (default: ``TransformersGenerator``; pass a vLLM one
      for speed).
    """

    def __init__(self, seed_model: str | Path, train_prompts: Sequence[Prompt], judge: Judge,
                 evaluate: Callable[[Generator], tuple[int, int]], config: RejectionSFTConfig | None = None, *,
                 make_generator: Callable[[str], Generator] | None = None) -> None:
        if "pointwise" not in judge.kinds:
            raise ConfigError(f"RejectionSFTLoop needs a pointwise judge; {type(judge).__name__} supports "
                              f"{sorted(judge.kinds)}")
        if not train_prompts:
            raise ConfigError("RejectionSFTLoop needs at least one training prompt")
        self.seed_model = str(seed_model)
        self.train_prompts = list(train_prompts)
        self.judge = judge
        self.evaluate = evaluate
        self.config = config or RejectionSFTConfig()
        self.make_generator = make_generator or _generator

    def model_dir(self, run: RunDir, t: int) -> str:
        """The model of iteration ``t`` (the seed model for ``t = 0``)."""
        return self.seed_model if t == 0 else str(run.path / f"iter_{t}" / "model")

    @staticmethod
    def to_dataset(run_dir: str | Path, iteration: int) -> Any:
        """Iteration ``iteration``'s kept samples as a TRL ``datasets.Dataset`` (``messages`` rows)."""
        from ..sdk.trl_data import to_dataset

        path = Path(run_dir) / f"iter_{iteration}" / "kept.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"iteration {iteration} has no kept.jsonl in {run_dir} (not run yet?)")
        return to_dataset(path, "sft")

    def run(self, run_dir: str | Path, *, resume: bool = False) -> list[dict[str, Any]]:
        """Run (or with ``resume=True`` continue) the loop; returns the iteration records."""
        run_dir = Path(run_dir)
        c = self.config
        if resume:
            run = RunDir.open(run_dir)
        else:
            if (run_dir / "checkpoints.sqlite").exists():
                raise ConfigError(f"{run_dir} already holds a run; pass resume=True or a new directory")
            run = RunDir(run_dir, config={"loop": "rejection_sft", "seed_model": self.seed_model,
                                          "judge": type(self.judge).__name__, "n_prompts": len(self.train_prompts),
                                          **c.model_dump(mode="json")}, seeds={"seed": c.seed})
        run_stages([Stage("evaluate_0", self._evaluate(0))], run, resume=resume, thread_id="iteration-0")
        for t in range(1, c.iterations + 1):
            run_stages([Stage(f"sample_{t}", self._sample(t)), Stage(f"filter_{t}", self._filter(t)),
                        Stage(f"train_{t}", self._train(t)), Stage(f"evaluate_{t}", self._evaluate(t))],
                       run, resume=resume, thread_id=f"iteration-{t}")
        write_report(run.path, title="Rejection-sampling SFT")
        return [r.model_dump(mode="json") for r in read_iterations(run.path)]

    # ----------------------------------------------------------------------------------------- stages

    def _sample(self, t: int) -> Callable[[dict[str, Any], RunDir], dict[str, Any]]:
        def fn(state: dict[str, Any], run: RunDir) -> dict[str, Any]:
            c = self.config
            gen = self.make_generator(self.model_dir(run, t - 1))
            try:
                params = SamplingParams(n=c.samples, temperature=c.temperature, top_p=c.top_p,
                                        max_tokens=c.max_tokens, seed=c.seed + t)
                outs = gen.generate(self.train_prompts, params)
            finally:
                _close(gen)
            rows = [{"prompt_id": i, "sample": j, "prompt": p, "response": comp.text,
                     "finish_reason": comp.finish_reason}
                    for i, (p, comps) in enumerate(zip(self.train_prompts, outs, strict=True))
                    for j, comp in enumerate(comps)]
            path = run.path / f"iter_{t}" / "samples.jsonl"
            write_jsonl(path, rows)
            return {"artifacts": {f"samples_{t}": str(path)}, "metrics": {f"samples_{t}": len(rows)}}
        return fn

    def _filter(self, t: int) -> Callable[[dict[str, Any], RunDir], dict[str, Any]]:
        def fn(state: dict[str, Any], run: RunDir) -> dict[str, Any]:
            c = self.config
            rows = read_jsonl(run.path / f"iter_{t}" / "samples.jsonl")
            verdicts = self.judge.score([r["prompt"] for r in rows], [r["response"] for r in rows])
            kept: list[dict[str, Any]] = []
            rejected: list[dict[str, Any]] = []
            seen: set[tuple[int, str]] = set()
            per_prompt: dict[int, int] = {}
            invalid = passed = 0
            for r, v in zip(rows, verdicts, strict=True):
                reason = None
                if not v.valid:
                    invalid += 1
                    reason = f"invalid verdict: {v.invalid_reason}"
                elif v.score is None or v.score < c.threshold:
                    reason = f"score {v.score} < threshold {c.threshold}"
                else:
                    passed += 1
                    key = (r["prompt_id"], r["response"].strip())
                    if key in seen:
                        reason = "duplicate of a kept sample"
                    elif per_prompt.get(r["prompt_id"], 0) >= c.max_per_prompt:
                        reason = f"prompt already has {c.max_per_prompt} kept samples"
                if reason is None:
                    seen.add(key)
                    per_prompt[r["prompt_id"]] = per_prompt.get(r["prompt_id"], 0) + 1
                    head = [{"role": "user", "content": r["prompt"]}] if isinstance(r["prompt"], str) else r["prompt"]
                    kept.append({"messages": [*head, {"role": "assistant", "content": r["response"]}]})
                else:
                    rejected.append({**r, "score": v.score, "reason": reason})
            d = run.path / f"iter_{t}"
            write_jsonl(d / "kept.jsonl", kept)
            write_jsonl(d / "rejected.jsonl", rejected)
            metrics = {f"kept_{t}": len(kept), f"pass_rate_{t}": passed / max(1, len(rows)),
                       f"prompts_solved_{t}": len(per_prompt), f"invalid_verdicts_{t}": invalid}
            return {"artifacts": {f"kept_{t}": str(d / "kept.jsonl")}, "metrics": metrics}
        return fn

    def _train(self, t: int) -> Callable[[dict[str, Any], RunDir], dict[str, Any]]:
        def fn(state: dict[str, Any], run: RunDir) -> dict[str, Any]:
            from ..trainers.sft import SFTSettings, sft_train

            c = self.config
            rows = read_jsonl(run.path / f"iter_{t}" / "kept.jsonl")
            if not rows:
                raise ConfigError(f"iteration {t}: no sample passed the judge (see {run.path}/iter_{t}/rejected.jsonl);"
                                  " raise samples or temperature, or lower threshold")
            init = self.seed_model if c.init_from == "seed" else self.model_dir(run, t - 1)
            steps = max(1, math.ceil(c.epochs * len(rows) / c.batch_size))
            settings = SFTSettings(max_steps=steps, learning_rate=c.learning_rate, batch_size=c.batch_size,
                                   max_length=c.max_length, seed=c.seed + t, lora=c.peft)
            res = sft_train(init, rows, f"iter_{t}/model", settings, run=run)
            return {"artifacts": {f"model_{t}": str(res.model_dir)},
                    "metrics": {f"train_loss_{t}": res.metrics["train_loss"], f"train_steps_{t}": steps}}
        return fn

    def _evaluate(self, t: int) -> Callable[[dict[str, Any], RunDir], dict[str, Any]]:
        def fn(state: dict[str, Any], run: RunDir) -> dict[str, Any]:
            t0 = time.perf_counter()
            gen = self.make_generator(self.model_dir(run, t))
            try:
                correct, n = self.evaluate(gen)
            finally:
                _close(gen)
            rec = accuracy_record("accuracy", correct, n)
            metrics = dict(rec["metrics"])
            if t > 0:
                stage_metrics = state.get("metrics") or {}
                for key in ("kept", "pass_rate", "prompts_solved", "invalid_verdicts", "train_loss"):
                    if f"{key}_{t}" in stage_metrics:
                        metrics[key] = stage_metrics[f"{key}_{t}"]
            metrics["eval_seconds"] = round(time.perf_counter() - t0, 2)
            append_iteration(run.path, {"iteration": t, "metrics": metrics, "intervals": rec["intervals"]})
            return {"metrics": {f"accuracy_{t}": rec["metrics"]["accuracy"]}}
        return fn
