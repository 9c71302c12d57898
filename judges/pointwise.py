"""``PointwiseJudge``: an LLM scores each (prompt, response) on a rubric, K samples averaged.

Default: the additive 5-point rubric of Self-Rewarding / Meta-Rewarding (spec/loops.md §3.2), parsed from the
last ``Score: <points>`` line. Meta-Rewarding samples N = 11 judgments per response and averages the *valid*
ones (§3.3): ``samples=K`` does that in one batched ``generate`` call with ``n=K``. A sample without a valid
``Score:`` is dropped; when none parses the Verdict is ``valid=False`` with the reasons — never a default score.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Prompt, SamplingParams, Verdict

from .llm import LLMJudge
from .parsers import SCORE_PARSER_VERSION, parse_score
from .templates import ADDITIVE_5POINT, POINTWISE_VARIABLES, JudgeTemplate, as_template

__all__ = ["PointwiseJudge", "make_pointwise_judge"]

GREEDY_JUDGE = SamplingParams(temperature=0.0, max_tokens=256)
"""Default for one sample: greedy, 256 new tokens (the ≤100-word justification plus the Score line)."""
SAMPLED_JUDGE = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=256)
"""Default for K > 1 samples: T = 0.7, top-p = 0.9 (STE's judgment-generation settings, spec/loops.md §4.3)."""


class PointwiseJudge(LLMJudge):
    """Score responses with a rubric prompt; ``Verdict.score`` is the mean of the valid samples' scores.

    Args:
        generator: any loopwright Generator.
        template: ``None`` (the additive 5-point rubric), a jinja2 string using ``{{ question }}`` and
            ``{{ response }}`` (rendered as one user message), or a :class:`JudgeTemplate`.
        samples: K judgments per response, averaged (Meta-Rewarding used 11).
        sampling: generation parameters; ``n`` is set to ``samples``. Default: greedy for K = 1,
            T = 0.7 / top-p 0.9 for K > 1.
        low, high: the valid score range (the rubric's 0..5); values outside are invalid samples.
        name: a display name.

    ``Verdict.samples`` holds the valid samples' scores in sample order (fewer than K when some did not parse);
    ``raw`` is the text for K = 1, a JSON list of the K texts otherwise; ``reasoning`` is the first valid
    sample's text before its ``Score:`` line.
    """

    kinds = frozenset({"pointwise"})
    parser_version = SCORE_PARSER_VERSION

    def __init__(
        self,
        generator: Generator,
        template: str | JudgeTemplate | None = None,
        *,
        samples: int = 1,
        sampling: SamplingParams | None = None,
        low: float = 0,
        high: float = 5,
        name: str | None = None,
    ) -> None:
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples={samples!r}; pass an integer K >= 1 (judgments averaged per response)")
        if not low < high:
            raise ValueError(f"low={low} must be below high={high}")
        if sampling is None:
            sampling = GREEDY_JUDGE if samples == 1 else SAMPLED_JUDGE
        elif samples > 1 and sampling.greedy:
            warnings.warn(
                f"samples={samples} with greedy sampling gives {samples} identical judgments; "
                "set SamplingParams(temperature=0.7, top_p=0.9) to average distinct ones",
                stacklevel=2,
            )
        super().__init__(generator, as_template(template, ADDITIVE_5POINT, POINTWISE_VARIABLES),
                         sampling.model_copy(update={"n": samples}), name)
        self.samples = samples
        self.low, self.high = low, high

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, response), from one batched generate call with ``n = samples``."""
        rendered = self._render(prompts, responses)
        return self._verdicts(self._generate(rendered, self.sampling)) if rendered else []

    async def ascore(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Async :meth:`score` (the same Verdicts), from one awaited ``agenerate`` call."""
        rendered = self._render(prompts, responses)
        return self._verdicts(await self._agenerate(rendered, self.sampling)) if rendered else []

    def _render(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[dict[str, str]]]:
        self._check_lengths(prompts=prompts, responses=responses)
        return [self.template.render(question=self._question(p), response=str(r))
                for p, r in zip(prompts, responses, strict=True)]

    def _verdicts(self, rows: list[list[Any]]) -> list[Verdict]:
        provenance = self.provenance(self.sampling)
        return [self._verdict(row, provenance) for row in rows]

    def __call__(self, prompt: Prompt, response: str) -> Verdict:
        """Judge a single (prompt, response)."""
        return self.score([prompt], [response])[0]

    def _verdict(self, row: list[Any], provenance: Any) -> Verdict:
        values: list[float] = []
        reasons: list[str] = []
        reasoning: str | None = None
        for j, c in enumerate(row):
            res = parse_score(c.text, self.low, self.high)
            if res.value is not None:
                values.append(res.value)
                if reasoning is None:
                    reasoning = _before_score_line(c.text, res.span)
            else:
                why = res.reason or "unparseable"
                if c.finish_reason == "length":
                    why += " (output cut at max_tokens)"
                reasons.append(f"sample {j}: {why}" if len(row) > 1 else why)
        raw = row[0].text if len(row) == 1 else json.dumps([c.text for c in row], ensure_ascii=False)
        usage = self._usage(row)
        if not values:
            return Verdict(kind="pointwise", valid=False, invalid_reason="; ".join(reasons), raw=raw,
                           samples=[], judge=provenance, usage=usage)
        return Verdict(kind="pointwise", score=sum(values) / len(values), samples=values, reasoning=reasoning,
                       raw=raw, valid=True, judge=provenance, usage=usage)


def _before_score_line(text: str, span: tuple[int, int] | None) -> str:
    """The text before the line holding the parsed score (the judge's justification)."""
    if span is None:
        return text.strip()
    line_start = text.rfind("\n", 0, span[0])
    return text[: max(line_start, 0)].strip()


def make_pointwise_judge(model: Generator | str, *, base_url: str | None = None,
                         template: str | JudgeTemplate | None = None, samples: int = 1, **kwargs: Any) -> PointwiseJudge:
    """A :class:`PointwiseJudge` from a Generator, an OpenAI-compatible endpoint (``model`` name + ``base_url``)
    or a local transformers model folder (``model`` path, no ``base_url``)."""
    from .pairwise import _resolve_generator

    return PointwiseJudge(_resolve_generator(model, base_url), template, samples=samples, **kwargs)
