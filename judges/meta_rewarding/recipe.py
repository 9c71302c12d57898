"""``recipe: meta_rewarding`` — the Meta-Rewarding loop from a YAML recipe (``loopwright run recipes/meta_rewarding.yaml``).

Fields: ``config`` (a :class:`~.config.MetaRewardingConfig`, merged over :func:`~.config.sandbox_config`),
``model`` (seed model folder; default the sandbox seed model), ``judge`` (``verifier`` | ``self`` | ``garbage``,
see :func:`~.sandbox.sandbox_loop`) and ``backend`` (``transformers`` | ``vllm``). ``loopwright resume RUN_DIR``
continues a killed run from its last completed stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from loopwright.sdk.recipes import RecipeConfig

__all__ = ["MetaRewardingRecipe"]


class MetaRewardingRecipe(RecipeConfig):
    """``recipe: meta_rewarding`` — see the module docstring."""

    recipe: Literal["meta_rewarding"] = "meta_rewarding"
    config: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    judge: Literal["verifier", "self", "garbage"] = "verifier"
    backend: Literal["transformers", "vllm"] = "transformers"

    def check(self, source: str) -> None:
        """Validate ``config`` merged over the sandbox defaults, and ``model``, before a run folder is made."""
        from pydantic import ValidationError

        from loopwright.sdk.errors import ConfigError
        from loopwright.sdk.models import resolve_model_path
        from loopwright.sdk.recipes import format_validation_error

        from .config import MetaRewardingConfig, sandbox_config

        try:
            sandbox_config(**{"seed": self.seed, **self.config})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, MetaRewardingConfig, source, prefix=("config",))) from None
        if self.model is not None:
            resolve_model_path(self.model)

    def resolved(self) -> dict[str, Any]:
        """The recipe with ``config`` expanded to the full :class:`~.config.MetaRewardingConfig` it runs with."""
        from .config import sandbox_config

        out = self.model_dump(mode="json")
        out["config"] = sandbox_config(**{"seed": self.seed, **self.config}).model_dump(mode="json")
        return out

    def run(self, run_dir: Path, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
        from .config import sandbox_config
        from .sandbox import sandbox_loop

        cfg = sandbox_config(**{"seed": self.seed, **self.config})
        loop = sandbox_loop(run_dir, config=cfg, model=self.model, judge=self.judge,
                            generator_factory=_factory(self.backend), progress=progress)
        records = loop.run(resume=resume)
        last = records[-1] if records else {"metrics": {}}
        return {"metrics": {k: v for k, v in last["metrics"].items() if v is not None}, "iterations": len(records)}


def _factory(backend: str) -> Any:
    if backend == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return lambda d: VLLMGenerator(d)
    return None
