"""The sandbox recipe: build the sandbox models and show the SFT seed model beats the untrained one.

This is the CLI's default recipe (``loopwright run``). Stages (durable, resumable; see sdk/stages.py):
``data`` (three MiniArith evaluation sets: held-out problems from the seed model's training distribution, the
spec's ID preset and the OOD preset) -> ``base_model`` (tokenizer + random tiny Llama) -> ``seed_model`` (TRL
SFT on MiniArith) -> ``evaluate`` (greedy accuracy of both models on every set through a real Generator
backend, with the generation cache) -> ``report`` (report.md + metrics.json).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.sdk.recipes import RecipeConfig

from .seed import SandboxConfig

SPLITS = ("train_dist", "id", "ood")


class SandboxEvalConfig(BaseModel):
    """How the sandbox models are evaluated."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "vllm"] = "transformers"
    n_problems: int = Field(200, ge=1)
    max_tokens: int = Field(256, ge=1)
    """Room for the longest OOD solutions (6 steps of 4-digit numbers) within the 512-token context."""
    batch_size: int = Field(32, ge=1)
    cache: bool = True


class SandboxRecipe(RecipeConfig):
    """``recipe: sandbox`` — see the module docstring."""

    recipe: Literal["sandbox"] = "sandbox"
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    eval: SandboxEvalConfig = Field(default_factory=SandboxEvalConfig)

    def run(self, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        from loopwright.sdk.artifacts import RunDir
        from loopwright.sdk.stages import Stage, run_stages

        run = RunDir(run_dir, config=self.model_dump(mode="json"), seeds={"recipe": self.seed})
        stages = [
            Stage("data", lambda s, r: _stage_data(self, r)),
            Stage("base_model", lambda s, r: {"artifacts": {"base_model": str(_base(self))}}),
            Stage("seed_model", lambda s, r: {"artifacts": {"seed_model": str(_seed(self, progress))}}),
            Stage("evaluate", lambda s, r: _stage_evaluate(self, s, r, progress)),
            Stage("report", lambda s, r: _stage_report(self, s, r)),
        ]
        return dict(run_stages(stages, run, resume=resume))


def _base(cfg: SandboxRecipe) -> Path:
    from .seed import ensure_base_model

    return ensure_base_model(cfg.sandbox)


def _seed(cfg: SandboxRecipe, progress: bool) -> Path:
    from .seed import ensure_seed_model

    return ensure_seed_model(cfg.sandbox, progress=progress)


def _stage_data(cfg: SandboxRecipe, run: Any) -> dict[str, Any]:
    from loopwright.sdk.artifacts import write_jsonl
    from loopwright.sdk.tasks.miniarith import ID, OOD, generate_problems

    from .seed import held_out_problems

    n = cfg.eval.n_problems
    # Preset seeds are offset from the recipe seed so they never coincide with the training problems' seed.
    sets = {
        "train_dist": held_out_problems(n, cfg.sandbox),
        "id": generate_problems(n, ID.model_copy(update={"seed": 10_000 + cfg.seed})),
        "ood": generate_problems(n, OOD.model_copy(update={"seed": 10_000 + cfg.seed})),
    }
    artifacts = {}
    for split, problems in sets.items():
        path = run.path / f"eval_{split}.jsonl"
        write_jsonl(path, [p.model_dump(mode="json") for p in problems])
        artifacts[f"eval_{split}"] = str(path)
    return {"artifacts": artifacts}


def _make_generator(cfg: SandboxRecipe, model_dir: str):
    if cfg.eval.backend == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return VLLMGenerator(model_dir)
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir, batch_size=cfg.eval.batch_size)


def _stage_evaluate(cfg: SandboxRecipe, state: dict, run: Any, progress: bool) -> dict[str, Any]:
    from loopwright.sdk.artifacts import read_jsonl, write_jsonl
    from loopwright.sdk.cache import CachedGenerator, GenerationCache, loopwright_home
    from loopwright.sdk.executors import LocalExecutor
    from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
    from loopwright.sdk.tasks.miniarith import MiniArithProblem
    from loopwright.sdk.types import SamplingParams

    from .seed import miniarith_prompt

    params = SamplingParams(max_tokens=cfg.eval.max_tokens, temperature=0.0)
    cache = GenerationCache(loopwright_home() / "generations.sqlite") if cfg.eval.cache else None
    metrics: dict[str, Any] = {}
    artifacts: dict[str, str] = {}
    for model_name in ("base_model", "seed_model"):
        gen = _make_generator(cfg, state["artifacts"][model_name])
        if cache is not None:
            gen = CachedGenerator(gen, cache)
        executor = LocalExecutor(gen, batch_size=cfg.eval.batch_size, progress=progress)
        try:
            for split in SPLITS:
                problems = [MiniArithProblem.model_validate(r) for r in read_jsonl(state["artifacts"][f"eval_{split}"])]
                outs = executor.run([miniarith_prompt(p) for p in problems], params)
                rows, correct, invalid = [], 0, 0
                for p, out in zip(problems, outs, strict=True):
                    text = out[0].text
                    pred = extract_model_answer(text)
                    ok = pred is not None and is_correct(pred, p.answer)
                    correct += ok
                    invalid += pred is None
                    rows.append({"id": p.id, "question": p.question, "output": text, "pred": pred,
                                 "gold": p.answer, "correct": ok, "steps": p.steps})
                tag = f"{model_name.removesuffix('_model')}_{split}"
                path = run.path / f"predictions_{tag}.jsonl"
                write_jsonl(path, rows)
                artifacts[f"predictions_{tag}"] = str(path)
                metrics[f"accuracy_{tag}"] = correct / len(problems)
                metrics[f"no_answer_{tag}"] = invalid / len(problems)
        finally:
            gen.close()
    if cache is not None:
        metrics["cache_hits"] = cache.hits
        metrics["cache_misses"] = cache.misses
    return {"artifacts": artifacts, "metrics": metrics}


def _stage_report(cfg: SandboxRecipe, state: dict, run: Any) -> dict[str, Any]:
    from loopwright.sdk.artifacts import atomic_write, write_json

    m = state["metrics"]
    task = cfg.sandbox.task
    lines = [
        "# Sandbox report",
        "",
        f"MiniArith greedy exact-answer accuracy, {cfg.eval.n_problems} problems per set, backend "
        f"`{cfg.eval.backend}`, recipe seed {cfg.seed}.",
        "",
        f"| model | held out, training distribution ({task.min_steps}-{task.max_steps} steps, operands "
        f"{task.min_number}-{task.max_number}) | ID preset (1-3 steps, 1-99) | OOD preset (4-6 steps, 100-9999) |",
        "|---|---|---|---|",
        *(f"| {label} | " + " | ".join(f"{m[f'accuracy_{tag}_{s}']:.1%}" for s in SPLITS) + " |"
          for tag, label in (("base", "untrained base"), ("seed", "SFT seed model"))),
        "",
        f"Seed model folder: `{state['artifacts']['seed_model']}`",
    ]
    atomic_write(run.path / "report.md", "\n".join(lines) + "\n")
    write_json(run.path / "metrics.json", m)
    return {"artifacts": {"report": str(run.path / "report.md")}}
