"""``LLMJudge``: what every prompted judge shares — a Generator, a template, sampling, provenance, usage.

Subclasses (:class:`~loopwright.judges.pointwise.PointwiseJudge`,
:class:`~loopwright.judges.pairwise.PairwiseJudge`) render prompts, make ONE batched ``generate`` call
(``agenerate`` from ``ascore`` / ``acompare``: each direction takes the backend's native path, converted once by
the Generator base class, so a sync call on an in-process engine never hops threads) and parse each completion
with a versioned parser (:mod:`loopwright.judges.parsers`). Provenance follows
spec/ecosystem.md §0.5 / §4.3: judge models get retired, so every Verdict names the model id + revision,
endpoint, template id + hash, parser version and sampling parameters that produced it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from loopwright.sdk.generator import Generator
from loopwright.sdk.judge import Judge
from loopwright.sdk.types import Completion, JudgeProvenance, Prompt, SamplingParams, Usage

from .adapters.trl import RewardFuncMixin
from .templates import JudgeTemplate

__all__ = ["LLMJudge"]


class LLMJudge(RewardFuncMixin, Judge):
    """Base class of judges that prompt a :class:`~loopwright.sdk.generator.Generator` and parse its text."""

    parser_version: ClassVar[str] = "none"

    def __init__(self, generator: Generator, template: JudgeTemplate, sampling: SamplingParams,
                 name: str | None = None) -> None:
        if not isinstance(generator, Generator):
            raise TypeError(
                f"generator must be a loopwright Generator (TransformersGenerator, VLLMGenerator, "
                f"OpenAIGenerator, ScriptedGenerator), got {type(generator).__name__}"
            )
        if not isinstance(sampling, SamplingParams):
            raise TypeError(f"sampling must be a SamplingParams, got {type(sampling).__name__}")
        self.generator = generator
        self.template = template
        self.sampling = sampling
        self.name = name or f"{type(self).__name__}({generator.model_id})"
        self.short_name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        """A name without the model path (TRL reward names, log keys): ``name=`` when given, else e.g.
        ``pairwise_judge``."""

    def provenance(self, params: SamplingParams) -> JudgeProvenance:
        """Who produced the verdicts of a call made with ``params``."""
        return JudgeProvenance(
            model=self.generator.model_id,
            revision=self.generator.revision,
            endpoint=getattr(self.generator, "base_url", None),
            template_id=self.template.template_id,
            template_hash=self.template.template_hash,
            parser_version=self.parser_version,
            sampling=params.model_dump(mode="json"),
        )

    def _generate(self, prompts: list[list[dict[str, str]]], params: SamplingParams) -> list[list[Completion]]:
        """One batched ``generate`` call; checks the backend returned one row of ``params.n`` completions per prompt."""
        return self._checked(prompts, params, self.generator.generate(prompts, params))

    async def _agenerate(self, prompts: list[list[dict[str, str]]], params: SamplingParams) -> list[list[Completion]]:
        """:meth:`_generate` through the generator's ``agenerate`` (native for async backends such as OpenAI)."""
        return self._checked(prompts, params, await self.generator.agenerate(prompts, params))

    def _checked(self, prompts: list[list[dict[str, str]]], params: SamplingParams,
                 out: list[list[Completion]]) -> list[list[Completion]]:
        if len(out) != len(prompts) or any(len(row) != params.n for row in out):
            raise RuntimeError(
                f"{self.generator!r} returned {[len(r) for r in out]} completions for {len(prompts)} prompts "
                f"with n={params.n}; a Generator must return one row of n completions per prompt"
            )
        return out

    @staticmethod
    def _check_lengths(**seqs: Sequence[Any]) -> int:
        lengths = {k: len(v) for k, v in seqs.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"inputs must have the same length, got {lengths}")
        return next(iter(lengths.values()), 0)

    @staticmethod
    def _usage(completions: Sequence[Completion]) -> Usage:
        u = Usage()
        for c in completions:
            u = u + c.usage
        return u

    @staticmethod
    def _question(prompt: Prompt) -> str:
        from .templates import prompt_text

        return prompt_text(prompt)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(generator={self.generator!r}, template={self.template.template_id!r})"
