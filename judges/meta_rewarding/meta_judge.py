"""The meta-judge: compare two judgements of one response, in both orders, and rank judgements by Elo
(Meta-Rewarding, spec/loops.md §3.4 [S]).

Steps (pure functions below, the LLM call in :class:`MetaJudge`):

1. :func:`pick_max_variance` — per prompt, the response whose judgements disagree most (highest score variance).
2. every pair of its (distinct, valid) judgements is shown to the meta-judge twice, once per order
   (:func:`battle_plan`); each answer is a :class:`Battle` (``winner`` = ``"first"``/``"second"``/``None``).
3. :func:`position_weights` — over all battles of the iteration, ``ω1 = win_2nd / (win_1st + win_2nd)`` weighs a
   win shown first and ``ω2 = win_1st / (win_1st + win_2nd)`` a win shown second, so a meta-judge that favours
   one slot has that slot's wins discounted; :func:`battle_matrix` builds
   ``B[m,n] = ω1·1[m beat n shown first] + ω2·1[m beat n shown second]``.
4. Elo ratings by maximum likelihood (:func:`~loopwright.judges.meta_rewarding.elo.elo_mle`).
5. chosen judgement = highest rating, rejected = lowest (skip ties) — :func:`select_judge_pair`;
6. drop pairs whose chosen judgement is longer than the iteration's cap (1,100 chars at iteration 1, 1,000 at 2),
   because the meta-judge favours long judgements.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Completion, JudgeProvenance, Prompt, SamplingParams

from ..parsers import META_WINNER_PARSER_VERSION, parse_meta_winner
from ..templates import META_JUDGE, META_JUDGE_VARIABLES, JudgeTemplate, as_template, prompt_text
from .elo import elo_mle

__all__ = [
    "Battle",
    "JudgePairChoice",
    "MetaJudge",
    "battle_matrix",
    "battle_plan",
    "count_position_wins",
    "pick_max_variance",
    "position_weights",
    "select_judge_pair",
]

Winner = Literal["first", "second"]


@dataclass(frozen=True)
class Battle:
    """One meta-judge call: judgement ``first`` was shown as A, ``second`` as B; ``winner`` is the slot that won
    (``None`` = unparseable verdict, recorded with ``reason``)."""

    first: int
    second: int
    winner: Winner | None
    reason: str | None = None


def pick_max_variance(score_lists: Sequence[Sequence[float]]) -> int | None:
    """Index of the response whose valid judgement scores have the highest variance (most judge disagreement);
    responses with fewer than two valid scores are skipped; ties go to the first. ``None`` if none qualifies."""
    best, best_var = None, -1.0
    for i, scores in enumerate(score_lists):
        if len(scores) < 2:
            continue
        var = statistics.pvariance([float(s) for s in scores])
        if var > best_var + 1e-12:
            best, best_var = i, var
    return best


def battle_plan(n: int) -> list[tuple[int, int]]:
    """Every ordered pair ``(first, second)`` of ``n`` judgements: each unordered pair in both orders."""
    return [(m, k) for m in range(n) for k in range(n) if m != k]


def position_weights(win_first: int, win_second: int) -> tuple[float, float]:
    """``(ω1, ω2)``: the weights of a win shown first / second. ½, ½ when there were no decided battles."""
    if win_first < 0 or win_second < 0:
        raise ValueError(f"win counts must be >= 0, got {win_first}, {win_second}")
    total = win_first + win_second
    if total == 0:
        return 0.5, 0.5
    return win_second / total, win_first / total


def count_position_wins(battles: Sequence[Battle]) -> tuple[int, int]:
    """``(win_1st, win_2nd)`` over decided battles."""
    first = sum(b.winner == "first" for b in battles)
    second = sum(b.winner == "second" for b in battles)
    return first, second


def battle_matrix(n: int, battles: Sequence[Battle], w1: float, w2: float) -> np.ndarray:
    """``B[m, k]`` = ω1 · (wins of ``m`` over ``k`` when ``m`` was shown first) + ω2 · (… shown second)."""
    B = np.zeros((n, n))
    for b in battles:
        if b.winner is None:
            continue
        if b.winner == "first":
            B[b.first, b.second] += w1
        else:
            B[b.second, b.first] += w2
    return B


@dataclass(frozen=True)
class JudgePairChoice:
    chosen: int | None
    rejected: int | None
    ratings: list[float]
    skip_reason: str | None = None


def select_judge_pair(n: int, battles: Sequence[Battle], w1: float, w2: float, *, lengths: Sequence[int],
                      max_chosen_chars: int | None, max_iter: int = 500, l2: float = 1e-4) -> JudgePairChoice:
    """Elo-rank ``n`` judgements from their battles; chosen = highest rating, rejected = lowest, subject to the
    chosen judgement's length cap (``None`` = no cap)."""
    if n < 2:
        return JudgePairChoice(None, None, [0.0] * n, f"{n} distinct valid judgement(s); need 2")
    B = battle_matrix(n, battles, w1, w2)
    if not B.any():
        return JudgePairChoice(None, None, [0.0] * n, "no decided meta-judge battle")
    r = elo_mle(B, max_iter=max_iter, l2=l2)
    ratings = [float(x) for x in r]
    hi = max(range(n), key=lambda i: (ratings[i], -i))
    lo = min(range(n), key=lambda i: (ratings[i], i))
    if ratings[hi] - ratings[lo] <= 1e-9:
        return JudgePairChoice(None, None, ratings, "all judgements have the same rating")
    if max_chosen_chars is not None and lengths[hi] > max_chosen_chars:
        return JudgePairChoice(None, None, ratings,
                               f"chosen judgement has {lengths[hi]} chars > cap {max_chosen_chars}")
    return JudgePairChoice(hi, lo, ratings)


class MetaJudge:
    """An LLM meta-judge: which of two judgements of the same response applies the rubric more accurately?

    Args:
        generator: any loopwright Generator (in Meta-Rewarding, the same model as actor and judge).
        template: ``None`` (:data:`~loopwright.judges.templates.META_JUDGE`, the §3.4 paraphrase), a jinja2 string
            using ``question``, ``response``, ``judgement_a``, ``judgement_b``, or a JudgeTemplate.
        sampling: generation parameters (default greedy, 256 new tokens [R]; the paper does not give them).

    Verdicts are parsed with :func:`~loopwright.judges.parsers.parse_meta_winner`; an unparseable answer is a
    :class:`Battle` with ``winner=None`` and the parser's reason, never a default winner.
    """

    parser_version = META_WINNER_PARSER_VERSION

    def __init__(self, generator: Generator, template: str | JudgeTemplate | None = None, *,
                 sampling: SamplingParams | None = None) -> None:
        if not isinstance(generator, Generator):
            raise TypeError(f"generator must be a loopwright Generator, got {type(generator).__name__}")
        self.generator = generator
        self.template = as_template(template, META_JUDGE, META_JUDGE_VARIABLES)
        self.sampling = (sampling or SamplingParams(temperature=0.0, max_tokens=256)).model_copy(update={"n": 1})

    def provenance(self) -> JudgeProvenance:
        return JudgeProvenance(model=self.generator.model_id, revision=self.generator.revision,
                               endpoint=getattr(self.generator, "base_url", None),
                               template_id=self.template.template_id, template_hash=self.template.template_hash,
                               parser_version=self.parser_version, sampling=self.sampling.model_dump(mode="json"))

    def render(self, prompt: Prompt, response: str, judgement_a: str, judgement_b: str) -> list[dict[str, str]]:
        return self.template.render(question=prompt_text(prompt), response=response, judgement_a=judgement_a,
                                    judgement_b=judgement_b)

    def compare(self, items: Sequence[tuple[Prompt, str, str, str]]) -> list[tuple[Winner | None, str | None, str]]:
        """For each ``(prompt, response, judgement_first, judgement_second)``: ``(winner, invalid_reason, raw)``
        in one batched generate call."""
        if not items:
            return []
        rendered = [self.render(*it) for it in items]
        rows: list[list[Completion]] = self.generator.generate(rendered, self.sampling)
        if len(rows) != len(items):
            raise RuntimeError(f"{self.generator!r} returned {len(rows)} rows for {len(items)} meta-judge prompts")
        out: list[tuple[Winner | None, str | None, str]] = []
        for row in rows:
            text = row[0].text
            res = parse_meta_winner(text)
            if res.value is None:
                reason = res.reason or "unparseable"
                if row[0].finish_reason == "length":
                    reason += " (output cut at max_tokens)"
                out.append((None, reason, text))
            else:
                out.append(("first" if res.value == "A" else "second", None, text))
        return out
