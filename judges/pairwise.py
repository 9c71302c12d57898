"""``PairwiseJudge``: an LLM picks the better of two responses with ``[[A]]`` / ``[[B]]`` (``[[C]]`` = tie).

Position bias is persistent even in trained judges (STE: 85.5 vs 91.1 accuracy by slot, spec/loops.md §9), so
both orders are judged by default and their agreement is recorded in ``Verdict.swap``. Both orders of every
pair go to the generator in ONE batched call, each pair's two prompts adjacent (same question, same system
prompt: engines with prefix caching reuse the shared prefix).

Policies (documented choices):

- ``disagreement="tie"`` (default): when the two orders disagree the verdict is a valid tie — MT-Bench's
  convention (Zheng et al. 2023 count an inconsistent pair as a tie); ``"invalid"`` makes it invalid with a
  reason; ``"forward"`` keeps the forward-order verdict. ``swap.consistent`` is ``False`` in every case.
- ``one_invalid="invalid"`` (default): when one order parses and the other does not, the verdict is invalid
  and ``invalid_reason`` names the failed order — a one-order verdict carries exactly the position bias the
  protocol exists to remove. ``"use_valid"`` keeps the parsed order (``swap.consistent`` stays ``None``).
- With ``samples=K > 1`` each order's label is the plurality of its valid samples (STE's majority vote over
  32 samples, §4.3); an A/B plurality tie counts as ``"tie"``.

Soft preference ``p_a``: when the backend returns top logprobs, the probability of ``A`` vs ``B`` at the
token where the verdict letter follows ``[[`` (renormalised over the two letters; a letter missing from the
top-k gets the smallest listed logprob, an upper bound), mapped to the original labels and averaged over
samples and orders. ``None`` when the backend returned no logprobs or the letter's token could not be located.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, Prompt, SamplingParams, SwapRecord, Verdict

from .llm import LLMJudge
from .parsers import PAIRWISE_PARSER_VERSION, parse_pairwise
from .templates import PAIRWISE_VARIABLES, PAIRWISE_VERDICT, JudgeTemplate, as_template

__all__ = ["PairwiseJudge", "locate_token", "make_pairwise_judge", "soft_preference"]

Preference = Literal["A", "B", "tie"]
Disagreement = Literal["tie", "invalid", "forward"]
OneInvalid = Literal["invalid", "use_valid"]

PAIRWISE_SAMPLING = SamplingParams(temperature=0.0, max_tokens=256)
"""Default for one sample: greedy (STE evaluates greedily, spec/loops.md §4.3), 256 new tokens."""
PAIRWISE_SAMPLED = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=256)
"""Default for K > 1 samples: T = 0.7, top-p = 0.9 (STE's majority vote over 32 samples, §4.3)."""
TOP_LOGPROBS = 5
"""Alternatives requested per position for the soft preference when ``use_logprobs`` (and the caller did not
set ``sampling.logprobs``)."""

_SWAP: dict[Preference, Preference] = {"A": "B", "B": "A", "tie": "tie"}
_VALUE: dict[Preference, float] = {"A": 1.0, "B": 0.0, "tie": 0.5}


@dataclass
class _Order:
    """The parsed outcome of one order (K samples), already in the original A/B labels."""

    label: Preference | None
    reason: str | None
    values: list[float]
    p_a: float | None
    reasoning: str | None


class PairwiseJudge(LLMJudge):
    """Compare two responses per prompt; both orders by default.

    Args:
        generator: any loopwright Generator.
        template: ``None`` (an MT-Bench pair-v2-style prompt), a jinja2 string using ``{{ question }}``,
            ``{{ response_a }}`` and ``{{ response_b }}`` (one user message), or a :class:`JudgeTemplate`.
        both_orders: also judge with A and B swapped (default ``True``).
        disagreement: ``"tie"`` | ``"invalid"`` | ``"forward"`` — the verdict when the orders disagree.
        one_invalid: ``"invalid"`` | ``"use_valid"`` — the verdict when exactly one order is unparseable.
        samples: K samples per order, plurality vote.
        sampling: generation parameters (``n`` is set to ``samples``); default greedy for K = 1,
            T = 0.7 / top-p 0.9 for K > 1.
        use_logprobs: ask for top logprobs (when the backend supports them) to compute ``p_a``.
        name: a display name.

    ``Verdict.samples`` holds each valid sample's preference in the original labels (A = 1, B = 0, tie = 0.5),
    forward samples first; ``raw`` is JSON ``{"forward": [texts], "reverse": [texts]}`` (the forward text alone
    for one order and one sample).
    """

    kinds = frozenset({"pairwise"})
    parser_version = PAIRWISE_PARSER_VERSION

    def __init__(
        self,
        generator: Generator,
        template: str | JudgeTemplate | None = None,
        *,
        both_orders: bool = True,
        disagreement: Disagreement = "tie",
        one_invalid: OneInvalid = "invalid",
        samples: int = 1,
        sampling: SamplingParams | None = None,
        use_logprobs: bool = True,
        name: str | None = None,
    ) -> None:
        if disagreement not in ("tie", "invalid", "forward"):
            raise ValueError(f"disagreement={disagreement!r}; use 'tie', 'invalid' or 'forward'")
        if one_invalid not in ("invalid", "use_valid"):
            raise ValueError(f"one_invalid={one_invalid!r}; use 'invalid' or 'use_valid'")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples={samples!r}; pass an integer K >= 1")
        if sampling is None:
            sampling = PAIRWISE_SAMPLING if samples == 1 else PAIRWISE_SAMPLED
        sampling = sampling.model_copy(update={"n": samples})
        if use_logprobs and sampling.logprobs is None and getattr(generator, "supports_logprobs", False):
            sampling = sampling.model_copy(update={"logprobs": TOP_LOGPROBS})
        super().__init__(generator, as_template(template, PAIRWISE_VERDICT, PAIRWISE_VARIABLES), sampling, name)
        self.both_orders = bool(both_orders)
        self.disagreement: Disagreement = disagreement
        self.one_invalid: OneInvalid = one_invalid
        self.samples = samples
        self.use_logprobs = use_logprobs

    # ------------------------------------------------------------------------------------------- compare

    def build_prompts(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                      responses_b: Sequence[str]) -> list[list[dict[str, str]]]:
        """The judge prompts in request order: ``[fwd_0, rev_0, fwd_1, rev_1, ...]`` (or ``[fwd_0, fwd_1, ...]``)."""
        out = []
        for p, a, b in zip(prompts, responses_a, responses_b, strict=True):
            q = self._question(p)
            out.append(self.template.render(question=q, response_a=str(a), response_b=str(b)))
            if self.both_orders:
                out.append(self.template.render(question=q, response_a=str(b), response_b=str(a)))
        return out

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[Verdict]:
        """One Verdict per (prompt, a, b), from one batched generate call over both orders."""
        n_items = self._check_lengths(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
        if n_items == 0:
            return []
        return self._verdicts(n_items, self._generate(self.build_prompts(prompts, responses_a, responses_b),
                                                      self.sampling))

    async def acompare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                       responses_b: Sequence[str]) -> list[Verdict]:
        """Async :meth:`compare` (the same Verdicts), from one awaited ``agenerate`` call over both orders."""
        n_items = self._check_lengths(prompts=prompts, responses_a=responses_a, responses_b=responses_b)
        if n_items == 0:
            return []
        return self._verdicts(n_items, await self._agenerate(
            self.build_prompts(prompts, responses_a, responses_b), self.sampling))

    def _verdicts(self, n_items: int, rows: list[list[Completion]]) -> list[Verdict]:
        provenance = self.provenance(self.sampling)
        step = 2 if self.both_orders else 1
        verdicts = []
        for i in range(n_items):
            fwd = rows[step * i]
            rev = rows[step * i + 1] if self.both_orders else None
            verdicts.append(self._verdict(fwd, rev, provenance))
        return verdicts

    def __call__(self, prompt: Prompt, response_a: str, response_b: str) -> Verdict:
        """Judge a single pair."""
        return self.compare([prompt], [response_a], [response_b])[0]

    # ------------------------------------------------------------------------------------------- verdicts

    def _order(self, row: list[Completion], swapped: bool) -> _Order:
        labels: list[Preference] = []
        reasons: list[str] = []
        probs: list[float] = []
        reasoning = None
        for j, c in enumerate(row):
            res = parse_pairwise(c.text)
            if res.value is None:
                why = res.reason or "unparseable"
                if c.finish_reason == "length":
                    why += " (output cut at max_tokens)"
                reasons.append(f"sample {j}: {why}" if len(row) > 1 else why)
                continue
            label = _SWAP[res.value] if swapped else res.value
            labels.append(label)
            if reasoning is None:
                reasoning = c.text[: res.span[0]].rstrip(" [\n") if res.span else c.text
            p = soft_preference(c, res.span) if self.use_logprobs else None
            if p is not None:
                probs.append(1.0 - p if swapped else p)
        p_a = sum(probs) / len(probs) if probs else None
        if not labels:
            return _Order(None, "; ".join(reasons), [], p_a, None)
        counts = Counter(labels).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            top = {lab for lab, k in counts if k == counts[0][1]}
            label: Preference = "tie" if {"A", "B"} <= top or "tie" in top else counts[0][0]
        else:
            label = counts[0][0]
        return _Order(label, None, [_VALUE[x] for x in labels], p_a, reasoning)

    def _verdict(self, fwd_row: list[Completion], rev_row: list[Completion] | None, provenance: Any) -> Verdict:
        fwd = self._order(fwd_row, swapped=False)
        usage = self._usage(fwd_row)
        if rev_row is None:
            raw = fwd_row[0].text if len(fwd_row) == 1 else json.dumps({"forward": [c.text for c in fwd_row]})
            swap = SwapRecord(forward=fwd.label)
            if fwd.label is None:
                return Verdict(kind="pairwise", valid=False, invalid_reason=f"forward order: {fwd.reason}", raw=raw,
                               swap=swap, judge=provenance, usage=usage)
            return Verdict(kind="pairwise", preference=fwd.label, p_a=fwd.p_a, reasoning=fwd.reasoning, raw=raw,
                           valid=True, swap=swap, samples=fwd.values, judge=provenance, usage=usage)

        rev = self._order(rev_row, swapped=True)
        usage = usage + self._usage(rev_row)
        raw = json.dumps({"forward": [c.text for c in fwd_row], "reverse": [c.text for c in rev_row]},
                         ensure_ascii=False)
        consistent = (fwd.label == rev.label) if fwd.label is not None and rev.label is not None else None
        swap = SwapRecord(forward=fwd.label, reverse=rev.label, consistent=consistent)
        common = {"kind": "pairwise", "raw": raw, "swap": swap, "judge": provenance, "usage": usage}

        def invalid(reason: str) -> Verdict:
            return Verdict(valid=False, invalid_reason=reason, samples=[], **common)

        def valid(pref: Preference, orders: list[_Order]) -> Verdict:
            ps = [o.p_a for o in orders if o.p_a is not None]
            return Verdict(valid=True, preference=pref, p_a=sum(ps) / len(ps) if ps else None,
                           reasoning=orders[0].reasoning, samples=[v for o in orders for v in o.values], **common)

        if fwd.label is None and rev.label is None:
            return invalid(f"both orders unparseable: forward order: {fwd.reason}; reverse order: {rev.reason}")
        if fwd.label is None or rev.label is None:
            bad, good, which = (fwd, rev, "forward") if fwd.label is None else (rev, fwd, "reverse")
            if self.one_invalid == "use_valid":
                return valid(good.label, [good])  # type: ignore[arg-type]
            return invalid(f"{which} order{' (A and B swapped)' if which == 'reverse' else ''} unparseable: "
                           f"{bad.reason}")
        if consistent:
            return valid(fwd.label, [fwd, rev])
        if self.disagreement == "invalid":
            return invalid(f"inconsistent across orders: forward {fwd.label}, reverse (mapped back) {rev.label}")
        if self.disagreement == "forward":
            return valid(fwd.label, [fwd, rev])
        return valid("tie", [fwd, rev])


# --------------------------------------------------------------------------------------------- logprobs


def _nows(s: str) -> str:
    return "".join(s.split())


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def locate_token(c: Completion, char_index: int) -> tuple[int, int] | None:
    """``(position, offset)`` of the token of ``c`` that emits ``c.text[char_index]`` (offset within the token's
    whitespace-free text), from ``logprobs`` + ``top_logprobs``; ``None`` when they cannot be aligned.

    The sampled token of each position is the ``top_logprobs`` entry whose logprob equals the sampled one;
    positions are aligned to the text with whitespace removed (tokenizers decode single tokens with or without
    their leading space; an EOS token after the character is ignored).
    """
    if c.top_logprobs is None or c.logprobs is None or len(c.top_logprobs) != len(c.logprobs):
        return None
    if not 0 <= char_index < len(c.text) or c.text[char_index].isspace():
        return None
    pieces: list[str] = []
    for lp, top in zip(c.logprobs, c.top_logprobs, strict=True):
        if not top:
            return None
        tok, val = min(top.items(), key=lambda kv: abs(kv[1] - lp))
        if abs(val - lp) > 1e-3:
            return None
        pieces.append(_nows(tok))
    target = len(_nows(c.text[:char_index]))  # index of the character in the whitespace-free text
    if "".join(pieces)[: target + 1] != _nows(c.text)[: target + 1]:
        return None
    pos = 0
    for t, piece in enumerate(pieces):
        if pos <= target < pos + len(piece):
            return t, target - pos
        pos += len(piece)
    return None  # pragma: no cover - the prefix check above guarantees a hit


def soft_preference(c: Completion, span: tuple[int, int] | None) -> float | None:
    """P(A) / (P(A) + P(B)) at the token emitting the verdict letter at ``span`` in ``c.text`` (shown labels).

    Alternatives count for a letter when they spell the same token with that letter (``"A"``/``"B"``,
    ``"[[A"``/``"[[B"``, ``"A]]"``/``"B]]"``). ``None`` without logprobs, when the token cannot be located
    (:func:`locate_token`) or when neither letter is among the alternatives.
    """
    if span is None:
        return None
    where = locate_token(c, span[0])
    if where is None:
        return None
    t, off = where
    top = c.top_logprobs[t]  # type: ignore[index]
    sampled = _nows(min(top.items(), key=lambda kv: abs(kv[1] - c.logprobs[t]))[0])  # type: ignore[index]
    prefix = sampled[:off]
    by_letter: dict[str, list[float]] = {"A": [], "B": []}
    for key, val in top.items():
        k = _nows(key)
        if len(k) > off and k.startswith(prefix) and k[off] in by_letter:
            rest = k[off + 1:]
            if rest == "" or rest.startswith("]"):
                by_letter[k[off]].append(val)
    if not by_letter["A"] and not by_letter["B"]:
        return None
    floor = min(top.values())
    la = _logsumexp(by_letter["A"]) if by_letter["A"] else floor
    lb = _logsumexp(by_letter["B"]) if by_letter["B"] else floor
    return 1.0 / (1.0 + math.exp(lb - la))


# --------------------------------------------------------------------------------------------- factories


def _resolve_generator(model: Generator | str | Path, base_url: str | None) -> Generator:
    if isinstance(model, Generator):
        if base_url is not None:
            raise ValueError("base_url is only used with a model name; got a Generator as well")
        return model
    if isinstance(model, (str, Path)) and base_url is not None:
        from loopwright.sdk.generators.openai import OpenAIGenerator

        return OpenAIGenerator(base_url, str(model))
    if isinstance(model, (str, Path)):
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(model)
    raise TypeError(f"model must be a Generator, a served model name (with base_url) or a model folder, "
                    f"got {type(model).__name__}")


def make_pairwise_judge(model: Generator | str | Path, *, base_url: str | None = None,
                        template: str | JudgeTemplate | None = None, swap: bool = True,
                        **kwargs: Any) -> PairwiseJudge:
    """A :class:`PairwiseJudge` from a Generator, an OpenAI-compatible endpoint (``model`` + ``base_url``) or a
    local transformers model folder; ``swap`` judges both orders. The judge is callable: ``judge(q, a, b)``."""
    return PairwiseJudge(_resolve_generator(model, base_url), template, both_orders=swap, **kwargs)
