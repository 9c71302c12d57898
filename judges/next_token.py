"""Read a judge's decision from the next-token distribution after a fixed answer prefix (no generated text).

The generative judges (:class:`~loopwright.judges.pairwise.PairwiseJudge`,
:class:`~loopwright.judges.pointwise.PointwiseJudge`) parse what the model writes; a small model often writes
nothing parseable. These judges instead *prefill* the assistant turn with the answer prefix the template asks
for (``"[["`` for ``[[A]]`` / ``[[B]]``, ``"Score: "`` for a rubric score), generate one token with its top-k
logprobs, and read the decision from the probabilities of the allowed answer tokens:

- :class:`LogprobPairwiseJudge`: ``p_a = P(A) / (P(A) + P(B))``, in both orders; the verdict is the
  order-averaged ``p_a`` (position debiasing: Zheng et al. 2023 swap both positions; averaging the two
  probabilities is the soft form of it);
- :class:`ExpectedScoreJudge`: the expectation of the score over the allowed score tokens, G-Eval's
  probability-weighted score (Liu et al. 2023, arXiv 2303.16634), which breaks the ties and the constant
  output of a greedy small-model judge.

A decision is invalid (with the top tokens in the reason) only when none of the allowed tokens is among the
top-k alternatives. The prefill needs a backend that continues a final assistant message
(:mod:`loopwright.sdk.chat_template`: transformers, vLLM, and a vLLM server through ``OpenAIGenerator``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Prompt, SamplingParams, SwapRecord, Verdict

from .llm import LLMJudge
from .templates import (
    ADDITIVE_5POINT,
    PAIRWISE_VARIABLES,
    PAIRWISE_VERDICT,
    POINTWISE_VARIABLES,
    JudgeTemplate,
    as_template,
)

__all__ = ["NEXT_TOKEN_PARSER_VERSION", "ExpectedScoreJudge", "LogprobPairwiseJudge", "option_logprobs"]

NEXT_TOKEN_PARSER_VERSION = "next_token/1"

TOP_K = 20
"""Alternatives read at the answer position: vLLM's default ``max_logprobs`` (and our SamplingParams cap)."""


def option_logprobs(top: dict[str, float], options: Sequence[str]) -> dict[str, float]:
    """Log-probability mass of each option among the ``top`` alternatives of one position.

    A token counts for an option when, stripped of whitespace, it is the option or the option followed by a
    non-alphanumeric character (``"A"``, ``" A"``, ``"A]]"``, ``"4"``, ``"4."``; not ``"AB"`` or ``"45"``).
    Options absent from ``top`` are absent from the result. Linear in the size of ``top``.
    """
    mass: dict[str, list[float]] = {}
    for token, lp in top.items():
        k = "".join(token.split())
        for o in options:
            if k == o or (k.startswith(o) and not k[len(o)].isalnum()):
                mass.setdefault(o, []).append(lp)
                break
    return {o: _logsumexp(v) for o, v in mass.items()}


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _top(c: Completion) -> dict[str, float] | None:
    return c.top_logprobs[0] if c.top_logprobs else None


def _shown(top: dict[str, float] | None, k: int = 5) -> str:
    if not top:
        return "no logprobs returned"
    best = sorted(top.items(), key=lambda kv: -kv[1])[:k]
    return "top tokens " + ", ".join(f"{t!r}" for t, _ in best)


def _prefilled(messages: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    return [*messages, {"role": "assistant", "content": prefix}]


def _one_token(generator: Generator, top_k: int, truncate_prompt: bool) -> SamplingParams:
    if not getattr(generator, "supports_logprobs", False):
        raise ValueError(f"{type(generator).__name__} returns no logprobs; a next-token judge needs them")
    return SamplingParams(temperature=0.0, max_tokens=1, logprobs=top_k, truncate_prompt=truncate_prompt)


class LogprobPairwiseJudge(LLMJudge):
    """Pairwise judge from the verdict letter's probabilities after the prefill ``prefix`` (default ``"[["``).

    Args:
        generator: a Generator with logprobs and prefill support.
        template: the pairwise template (default :data:`~loopwright.judges.templates.PAIRWISE_VERDICT`, whose
            verdict format is ``[[A]]`` / ``[[B]]``).
        both_orders: judge the swapped order too and average ``p_a`` (default; ``False``: the shown order only,
            no position debiasing).
        prefix: the assistant prefill; the next token must be the verdict letter.
        top_k: alternatives requested at that position.
        truncate_prompt: keep the last tokens of a prompt longer than the context (the prefill survives)
            instead of failing.

    ``Verdict.p_a`` is the (order-averaged) ``P(A)``; ``preference`` is ``A`` above 0.5, ``B`` below, ``tie``
    at exactly 0.5. ``swap`` records each order's own decision, so judge evaluation reports position
    consistency. When only one order has a letter in its top-k, that order decides.
    """

    kinds = frozenset({"pairwise"})
    parser_version = NEXT_TOKEN_PARSER_VERSION

    def __init__(self, generator: Generator, template: str | JudgeTemplate | None = None, *,
                 both_orders: bool = True, prefix: str = "[[", top_k: int = TOP_K, truncate_prompt: bool = False,
                 name: str | None = None) -> None:
        super().__init__(generator, as_template(template, PAIRWISE_VERDICT, PAIRWISE_VARIABLES),
                         _one_token(generator, top_k, truncate_prompt), name)
        self.both_orders = bool(both_orders)
        self.prefix = prefix

    def build_prompts(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                      responses_b: Sequence[str]) -> list[list[dict[str, str]]]:
        """Prefilled judge prompts in request order: ``[fwd_0, rev_0, fwd_1, ...]`` (or ``[fwd_0, fwd_1, ...]``)."""
        out = []
        for p, a, b in zip(prompts, responses_a, responses_b, strict=True):
            q = self._question(p)
            out.append(_prefilled(self.template.render(question=q, response_a=str(a), response_b=str(b)),
                                  self.prefix))
            if self.both_orders:
                out.append(_prefilled(self.template.render(question=q, response_a=str(b), response_b=str(a)),
                                      self.prefix))
        return out

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, a, b) from one batched one-token generate call over both orders."""
        n = self._check_lengths(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
        if n == 0:
            return []
        return self._verdicts(n, self._generate(self.build_prompts(prompts, responses_a, responses_b),
                                                self.sampling))

    async def acompare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                       responses_b: Sequence[str]) -> list[Verdict]:
        """Async :meth:`compare`."""
        n = self._check_lengths(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
        if n == 0:
            return []
        return self._verdicts(n, await self._agenerate(self.build_prompts(prompts, responses_a, responses_b),
                                                       self.sampling))

    def __call__(self, prompt: Prompt, response_a: str, response_b: str) -> Verdict:
        """Judge a single pair."""
        return self.compare([prompt], [response_a], [response_b])[0]

    @staticmethod
    def _p_first(c: Completion) -> tuple[float | None, str]:
        """``P(A)`` among {A, B} in the shown labels, or None with the reason."""
        top = _top(c)
        lps = option_logprobs(top or {}, ("A", "B"))
        if not lps:
            return None, f"neither A nor B among the next-token alternatives ({_shown(top)})"
        floor = min(top.values()) if top else 0.0  # an absent letter gets at most the smallest listed mass
        la, lb = lps.get("A", floor), lps.get("B", floor)
        return 1.0 / (1.0 + math.exp(lb - la)), ""

    @staticmethod
    def _label(p: float | None) -> Any:
        if p is None:
            return None
        return "A" if p > 0.5 else ("B" if p < 0.5 else "tie")

    def _verdicts(self, n: int, rows: list[list[Completion]]) -> list[Verdict]:
        provenance = self.provenance(self.sampling)
        step = 2 if self.both_orders else 1
        out = []
        for i in range(n):
            fwd = rows[step * i][0]
            rev = rows[step * i + 1][0] if self.both_orders else None
            out.append(self._verdict(fwd, rev, provenance))
        return out

    def _verdict(self, fwd: Completion, rev: Completion | None, provenance: Any) -> Verdict:
        p_f, why_f = self._p_first(fwd)
        usage = fwd.usage
        raw: dict[str, Any] = {"forward": _top(fwd)}
        p_r = None
        why_r = ""
        if rev is not None:
            p_shown, why_r = self._p_first(rev)
            p_r = None if p_shown is None else 1.0 - p_shown  # back to the first presentation's labels
            usage = usage + rev.usage
            raw["reverse"] = _top(rev)
        swap = SwapRecord(forward=self._label(p_f), reverse=self._label(p_r) if rev is not None else None,
                          consistent=(self._label(p_f) == self._label(p_r))
                          if p_f is not None and p_r is not None else None)
        common = {"kind": "pairwise", "raw": json.dumps(raw, ensure_ascii=False), "swap": swap,
                  "judge": provenance, "usage": usage}
        ps = [p for p in (p_f, p_r) if p is not None]
        if not ps:
            reason = f"forward order: {why_f}" + (f"; reverse order: {why_r}" if rev is not None else "")
            return Verdict(valid=False, invalid_reason=reason, **common)
        p_a = sum(ps) / len(ps)
        return Verdict(valid=True, preference=self._label(p_a), p_a=p_a, samples=ps, **common)


class ExpectedScoreJudge(LLMJudge):
    """Pointwise judge: the probability-weighted score after the prefill ``prefix`` (G-Eval, arXiv 2303.16634).

    Args:
        generator: a Generator with logprobs and prefill support.
        template: the pointwise template (default: the additive 5-point rubric, whose last line is
            ``Score: <points>``).
        low, high: the integer scores allowed (0..5 for the rubric); single-character scores only.
        prefix: the assistant prefill; the next token must be the score.
        top_k: alternatives requested at that position.
        truncate_prompt: as for :class:`LogprobPairwiseJudge`.

    ``Verdict.score`` is ``sum_s s * P(s) / sum_s P(s)`` over the allowed scores present in the top-k;
    ``raw`` holds their normalised probabilities as JSON.
    """

    kinds = frozenset({"pointwise"})
    parser_version = NEXT_TOKEN_PARSER_VERSION

    def __init__(self, generator: Generator, template: str | JudgeTemplate | None = None, *, low: int = 0,
                 high: int = 5, prefix: str = "Score: ", top_k: int = TOP_K, truncate_prompt: bool = False,
                 name: str | None = None) -> None:
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low < high <= 9):
            raise ValueError(f"low={low!r}, high={high!r}: use integers with 0 <= low < high <= 9 "
                             "(one score token each)")
        super().__init__(generator, as_template(template, ADDITIVE_5POINT, POINTWISE_VARIABLES),
                         _one_token(generator, top_k, truncate_prompt), name)
        self.low, self.high = low, high
        self.prefix = prefix

    def build_prompts(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[dict[str, str]]]:
        """Prefilled judge prompts, one per (prompt, response)."""
        self._check_lengths(prompts=prompts, responses=responses)
        return [_prefilled(self.template.render(question=self._question(p), response=str(r)), self.prefix)
                for p, r in zip(prompts, responses, strict=True)]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, response) from one batched one-token generate call."""
        rendered = self.build_prompts(prompts, responses)
        if not rendered:
            return []
        provenance = self.provenance(self.sampling)
        return [self._verdict(r[0], provenance) for r in self._generate(rendered, self.sampling)]

    async def ascore(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Async :meth:`score`."""
        rendered = self.build_prompts(prompts, responses)
        if not rendered:
            return []
        provenance = self.provenance(self.sampling)
        return [self._verdict(r[0], provenance) for r in await self._agenerate(rendered, self.sampling)]

    def __call__(self, prompt: Prompt, response: str) -> Verdict:
        """Judge a single (prompt, response)."""
        return self.score([prompt], [response])[0]

    def _verdict(self, c: Completion, provenance: Any) -> Verdict:
        top = _top(c)
        lps = option_logprobs(top or {}, [str(s) for s in range(self.low, self.high + 1)])
        if not lps:
            return Verdict(kind="pointwise", valid=False, raw=json.dumps({"top": top}),
                           invalid_reason=f"no score {self.low}-{self.high} among the next-token alternatives "
                                          f"({_shown(top)})", judge=provenance, usage=c.usage)
        m = max(lps.values())
        w = {s: math.exp(lp - m) for s, lp in lps.items()}
        total = sum(w.values())
        dist = {s: w[s] / total for s in sorted(w, key=int)}
        expected = sum(int(s) * p for s, p in dist.items())
        return Verdict(kind="pointwise", valid=True, score=expected, samples=[expected],
                       raw=json.dumps({"distribution": dist}), judge=provenance, usage=c.usage)
