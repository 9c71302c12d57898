"""Candidate selection for PathFinder (spec/loops.md §2.4): max likelihood, buddy voting, majority vote, verifier,
random.

Works on any list of :class:`~loopwright.sdk.types.ScoredPath` (finished chains of a search, or independent full
samples: :func:`candidates_from_texts`), so the selectors can be evaluated alone on real model solutions.

Eligibility: only candidates with an extracted final answer can be chosen (and, for ``verifier``, a valid
verifier score); when none is eligible the selection says so (``answer=None`` with a reason), never a default.
Ties (vote, buddy, verifier) go to the best search score, or to the first candidate with ``tie_break="first"``
(which makes ``vote`` exactly ``collections.Counter.most_common`` self-consistency).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from ...sdk.judge import Judge
from ...sdk.tasks.gsm8k import extract_model_answer, is_correct
from ...sdk.types import ScoredPath, stable_hash
from .config import BuddyConfig, PathFinderConfig
from .constraints import jaccard, ngrams, word_tokens

__all__ = [
    "Selection",
    "VerifierFn",
    "answers_equal",
    "buddy_scores",
    "candidates_from_texts",
    "chain_text",
    "select",
]

VerifierFn = Callable[[str, str], "float | None"]
"""``verifier(question, chain) -> score`` (higher is better) or ``None`` when it cannot judge the chain."""


class Selection(BaseModel):
    """Which candidate a selector chose, the per-candidate selection scores and why (when nothing was chosen)."""

    selector: str
    index: int | None
    answer: str | None
    scores: list[float | None] = Field(default_factory=list)
    reason: str | None = None
    invalid: dict[int, str] = Field(default_factory=dict)
    """Candidates the selector could not use (no answer, invalid verifier verdict) with the reason."""


def chain_text(steps: Sequence[str], delimiter: str = "\n") -> str:
    """A path's full text: its steps joined by the step delimiter."""
    return delimiter.join(steps)


def answers_equal(a: str | None, b: str | None) -> bool:
    """Final answers match: numerically when both are numbers, else as stripped strings; ``None`` matches nothing."""
    if a is None or b is None:
        return False
    try:
        return is_correct(a, b)
    except (TypeError, ValueError):
        return a.strip() == b.strip()


def _answer_key(a: str) -> str:
    try:
        x = float(a.replace(",", ""))
        return repr(float(x)) if math.isfinite(x) else a.strip()
    except ValueError:
        return a.strip()


def candidates_from_texts(texts: Sequence[str], scores: Sequence[float] | None = None,
                          delimiter: str = "\n") -> list[ScoredPath]:
    """Independent full solutions as candidates (steps = lines, answer = ``extract_model_answer``, score 0 unless
    given): self-consistency and the selectors on stored model solutions use this."""
    out = []
    for i, t in enumerate(texts):
        steps = t.split(delimiter) if t else []
        out.append(ScoredPath(steps=steps, score=0.0 if scores is None else float(scores[i]),
                              answer=extract_model_answer(t)))
    return out


def _similarity(a: ScoredPath, b: ScoredPath, cfg: BuddyConfig, delimiter: str) -> float:
    if cfg.sim == "answer_eq":
        return 1.0 if answers_equal(a.answer, b.answer) else 0.0
    ta, tb = word_tokens(chain_text(a.steps, delimiter)), word_tokens(chain_text(b.steps, delimiter))
    if cfg.sim == "jaccard":
        return jaccard(ta, tb)
    return jaccard(ngrams(ta, cfg.ngram), ngrams(tb, cfg.ngram))


def buddy_scores(candidates: Sequence[ScoredPath], cfg: BuddyConfig, delimiter: str = "\n") -> list[float]:
    """``buddy(c)`` for every candidate: summed similarity to the others, or the count of those with sim >= tau."""
    n = len(candidates)
    sims = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            sims[i][j] = sims[j][i] = _similarity(candidates[i], candidates[j], cfg, delimiter)
    if cfg.aggregate == "sum":
        return [sum(sims[i][j] for j in range(n) if j != i) for i in range(n)]
    return [float(sum(1 for j in range(n) if j != i and sims[i][j] >= cfg.tau)) for i in range(n)]


def _argbest(indices: Sequence[int], key: Sequence[float], candidates: Sequence[ScoredPath],
             tie_break: str) -> int:
    """Index with the highest ``key``; ties by search score (``"score"``) or position (``"first"``)."""
    if tie_break == "score":
        return max(indices, key=lambda i: (key[i], candidates[i].score, -i))
    return max(indices, key=lambda i: (key[i], -i))


def _verify(verifier: Judge | VerifierFn, question: str, chains: list[str]) -> list[tuple[float | None, str | None]]:
    """``(score, invalid_reason)`` per chain from a pointwise Judge or a plain callable."""
    if isinstance(verifier, Judge):
        try:
            verdicts = verifier.score([question] * len(chains), chains)
        except Exception as e:  # noqa: BLE001 - a failing verifier is data for every candidate, not a crash
            return [(None, f"verifier failed: {type(e).__name__}: {e}")] * len(chains)
        return [(v.score, None) if v.valid and v.score is not None else
                (None, f"invalid verdict: {v.invalid_reason}") for v in verdicts]
    out: list[tuple[float | None, str | None]] = []
    for c in chains:
        try:
            s = verifier(question, c)
        except Exception as e:  # noqa: BLE001
            out.append((None, f"verifier failed: {type(e).__name__}: {e}"))
            continue
        out.append((float(s), None) if s is not None and math.isfinite(float(s)) else
                   (None, "verifier returned no score"))
    return out


def select(
    candidates: Sequence[ScoredPath],
    config: PathFinderConfig | None = None,
    *,
    question: str = "",
    verifier: Judge | VerifierFn | None = None,
    selector: str | None = None,
) -> Selection:
    """Choose one candidate with ``config.selector`` (or ``selector``); see the module docstring for the rules."""
    cfg = config or PathFinderConfig()
    name = selector or cfg.selector
    n = len(candidates)
    if n == 0:
        return Selection(selector=name, index=None, answer=None, reason="no finished candidate")
    invalid: dict[int, str] = {i: "no final answer" for i, c in enumerate(candidates) if c.answer is None}
    eligible = [i for i in range(n) if i not in invalid]
    delim = cfg.step_delimiter
    scores: list[float | None]

    if name == "max_likelihood":
        scores = [c.score for c in candidates]
    elif name == "vote":
        weight = [1.0 if cfg.vote_weight == "count" else math.exp(c.score) for c in candidates]
        totals: dict[str, float] = {}
        for i in eligible:
            k = _answer_key(candidates[i].answer or "")
            totals[k] = totals.get(k, 0.0) + weight[i]
        scores = [totals[_answer_key(c.answer)] if i in eligible and c.answer is not None else None
                  for i, c in enumerate(candidates)]
    elif name == "buddy":
        scores = list(buddy_scores(candidates, cfg.buddy, delim))
    elif name == "verifier":
        if verifier is None:
            raise ValueError("selector='verifier' needs a verifier: a pointwise Judge or fn(question, chain) -> float")
        pending = list(eligible)
        results = _verify(verifier, question, [chain_text(candidates[i].steps, delim) for i in pending])
        scores = [None] * n
        a = cfg.verifier_alpha
        for i, (s, why) in zip(pending, results, strict=True):
            if s is None:
                invalid[i] = why or "verifier returned no score"
            else:
                scores[i] = a * s + (1 - a) * candidates[i].score
        eligible = [i for i in eligible if i not in invalid]
    elif name == "random":
        scores = [None] * n
        if eligible:
            rng = random.Random(stable_hash([cfg.seed, question, [c.steps for c in candidates]]))
            pick = rng.choice(eligible)
            return Selection(selector=name, index=pick, answer=candidates[pick].answer, scores=scores,
                             invalid=invalid)
    else:
        raise ValueError(f"selector={name!r}; use buddy, vote, max_likelihood, verifier or random")

    if not eligible:
        reasons = sorted(set(invalid.values()))
        return Selection(selector=name, index=None, answer=None, scores=scores,
                         reason=f"no eligible candidate among {n}: {'; '.join(reasons)}", invalid=invalid)
    key = [s if s is not None else -math.inf for s in scores]
    best = _argbest(eligible, key, candidates, cfg.tie_break)
    return Selection(selector=name, index=best, answer=candidates[best].answer, scores=scores, invalid=invalid)

