"""RIP (Yu et al., arXiv 2501.18578; spec/loops.md §5) as loop stages, and :func:`rip_loop`, the paper's experiment
(sample -> score -> RIP -> DPO -> evaluate) as a composition on the public :class:`~loopwright.sdk.loop.Loop`.

- :class:`RIPSampleScore` (``sample_score``): N responses per valid prompt from the current model (or a given
  Local / Ray executor) scored by any pointwise judge (or a judge factory built in the executor's Ray actors);
  bad prompts are rejected before sampling. Writes RIP's files into ``iter_<t>/sample_score/``.
- :class:`RIPDecide` (``rip_filter``): the percentile rule (:class:`~.filter.RIPFilter`) re-decided from those
  files with ``thresholds``, without generating or judging again -> ``iter_<t>/dpo.jsonl`` (TRL conversational
  preference rows), ``rejected.jsonl`` (every dropped prompt with its reason), ``scored.jsonl``, ``stats.json``.
  A run killed after sampling resumes here; re-thresholding is a new run of this stage only.
- then the public ``TrainDPO`` and ``Evaluate`` stages, when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, computed_field

from ...sdk.loop import Loop, LoopStage, StageContext
from ...sdk.types import stable_hash
from .filter import RIPThresholds
from .pipeline import RIPConfig, load_rip, run_rip

__all__ = ["RIPDecide", "RIPSampleScore", "rip_loop"]

RIP_FILES = {"dpo": "dpo.jsonl", "rejected": "rejected.jsonl", "scored": "scored.jsonl", "stats": "stats.json"}
RIP_KINDS = {"dpo": "preference", "rejected": "rejected", "scored": "rip_scored", "stats": "json"}


class RIPSampleScore(LoopStage):
    """Sample ``config.n_responses`` per prompt and score every response (:func:`~.pipeline.run_rip`)."""

    kind: ClassVar[str] = "sample_score"
    outputs: ClassVar[dict[str, str]] = RIP_KINDS

    prompts: list[Any] = Field(exclude=True, min_length=1)
    judge: Any = Field(exclude=True)
    """A pointwise Judge, or a picklable zero-argument factory of one (built in a RayExecutor's actors)."""
    config: RIPConfig = Field(default_factory=RIPConfig)
    ids: list[Any] | None = Field(None, exclude=True)
    meta: list[dict[str, Any]] | None = Field(None, exclude=True)
    executor: Any = Field(None, exclude=True)
    """A Local / Ray executor to sample with (default: the loop's generator on the current model)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompts_fingerprint(self) -> str:
        return stable_hash(self.prompts)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        res = run_rip(self.prompts, self.executor if self.executor is not None else ctx.generator(), self.judge,
                      self.config, ids=self.ids, meta=self.meta)
        res.write(ctx.output("scored").parent)
        st = res.stats()
        return {"prompts": len(self.prompts), "responses": st["n_responses"],
                "invalid_rewards": st["n_invalid_rewards"]}


class RIPDecide(LoopStage):
    """Keep the prompts whose pair passes the rejected-reward, rejected-length and reward-gap percentile cuts
    (``thresholds``, default the config's: 50/50/50) and write RIP's outputs."""

    kind: ClassVar[str] = "rip_filter"
    accepts: ClassVar[tuple[str, ...]] = ("rip_scored",)
    outputs: ClassVar[dict[str, str]] = RIP_KINDS
    files: ClassVar[dict[str, str]] = RIP_FILES
    prefix_metrics: ClassVar[bool] = False

    thresholds: RIPThresholds | None = None
    min_valid: int = Field(2, ge=1)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        res = load_rip(ctx.input().parent, thresholds=self.thresholds or RIPThresholds(), min_valid=self.min_valid)
        res.write(ctx.output("scored").parent)
        row = res.iteration_row(ctx.iteration)
        return {**row["metrics"], "_histograms": row["histograms"], "_notes": row["notes"]}


def rip_loop(seed_model: str | Path, prompts: Sequence[Any], judge: Any, config: RIPConfig | None = None, *,
             thresholds: RIPThresholds | None = None, ids: Sequence[Any] | None = None,
             meta: Sequence[dict[str, Any]] | None = None, executor: Any = None, dpo: Any = None,
             evaluate: Callable[[Any], Any] | None = None, iterations: int = 1, **loop: Any) -> Loop:
    """RIP on ``prompts`` with the policy ``seed_model``: sample, score with ``judge``, filter; with ``dpo``
    (``DPOSettings``) also DPO on the kept pairs, and with ``evaluate`` (``fn(generator) -> (correct, n)``) the
    accuracy of the seed and the trained model. ``loop`` goes to :class:`~loopwright.sdk.loop.Loop`."""
    config = config or RIPConfig()
    stages: list[LoopStage] = [
        RIPSampleScore(prompts=list(prompts), judge=judge, config=config, ids=list(ids) if ids is not None else None,
                       meta=list(meta) if meta is not None else None, executor=executor),
        RIPDecide(thresholds=thresholds or config.thresholds, min_valid=config.min_valid),
    ]
    if dpo is not None:
        from ...trainers.loop_stages import TrainDPO

        stages.append(TrainDPO(settings=dpo))
    if evaluate is not None:
        from ...sdk.loop_stages import Evaluate

        stages.append(Evaluate(fn=evaluate))
    return Loop(stages, seed_model=seed_model, iterations=iterations, evaluate_seed=evaluate is not None,
                name=loop.pop("name", "RIP"), **loop)
