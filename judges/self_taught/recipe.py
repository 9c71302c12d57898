"""``recipe: self_taught`` -- the Self-Taught Evaluator loop from a YAML recipe (``loopwright run self_taught``).

Fields: ``model`` (seed judge folder; ``null`` = the sandbox seed judge, built once and cached), ``backend``
(``transformers`` | ``vllm`` | ``openai``), ``loop`` (:class:`~.loop.SelfTaughtConfig`), ``seed_judge``
(:class:`~.sandbox.SeedJudgeConfig`, used only without ``model``). ``loopwright resume RUN_DIR`` continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from loopwright.sdk.recipes import RecipeConfig

from .loop import SelfTaughtConfig, SelfTaughtEvaluator, backend_factory

__all__ = ["SelfTaughtRecipe"]


class SelfTaughtRecipe(RecipeConfig):
    """``recipe: self_taught`` (see the module docstring)."""

    recipe: Literal["self_taught"] = "self_taught"
    model: str | None = None
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    loop: SelfTaughtConfig = Field(default_factory=SelfTaughtConfig)
    seed_judge: dict[str, Any] = Field(default_factory=dict)
    """:class:`~.sandbox.SeedJudgeConfig` fields (its ``task`` defaults to ``loop.task``)."""

    def check(self, source: str) -> None:
        """The seed judge folder must exist before a run folder is made (every backend, ``openai`` too, serves it)."""
        if self.model is not None:
            from loopwright.sdk.models import resolve_model_path

            resolve_model_path(self.model)

    def run(self, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        if self.model is not None:
            seed_judge = Path(self.model)
        else:
            from .sandbox import SeedJudgeConfig, ensure_seed_judge

            cfg = SeedJudgeConfig(**{"task": self.loop.task, "worse": self.loop.worse, **self.seed_judge})
            seed_judge = ensure_seed_judge(cfg, progress=progress)
        loop = SelfTaughtEvaluator(seed_judge, self.loop.model_copy(update={"seed": self.seed}),
                                   make_generator=backend_factory(self.backend))
        records = loop.run(run_dir, resume=resume, progress=progress)
        return {"metrics": records[-1]["metrics"] if records else {}, "iterations": len(records)}
