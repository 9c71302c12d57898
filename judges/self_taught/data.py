"""Self-Taught Evaluator data preparation (spec/loops.md §4.4): pure, seeded functions with unit tests.

- :func:`gold_label` -- ``"A"`` if ``ranks[0] < ranks[1]`` else ``"B"`` (the repo's ``metadata.ranks``; ties raise).
- :func:`rejection_sample` -- ``prepare_sft_data.rejection_sampling``: shuffle a key's samples (seeded), return
  the first whose verdict equals the gold label; with ``majority_voting=f`` only when ``#correct >= f·#samples``.
- :func:`balance_labels` -- split kept examples into A-better / B-better, shuffle, truncate both to the smaller
  count (exact balance; §8.3 invariant).
- :func:`dpo_pairs` -- ``prepare_dpo_data``: positives = verdict == gold, negatives = no verdict, tie or wrong;
  keys with both, balanced, ``num_pairs`` (positive, negative) pairs per key. (The repo's script calls an
  undefined ``extract_winner_llm_judge_pairv2``; here the one parser, :func:`~loopwright.judges.parse_pairwise`,
  is used everywhere.)
- :func:`process_shuffled` -- RewardBench scoring of one output: 1 if the verdict names the chosen answer's
  slot, 0 for the other slot, 0.5 when unparseable.
- :func:`modify_miniarith` -- the sandbox's worse-response builder (§4.8): ``x'`` = ``x`` with one number
  changed (the program recomputed), ``y_l`` = the correct solution of ``x'``, so ``y_l`` is a fluent, correct
  answer to a different question -- a construction-labelled pair with no human label.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ...sdk.tasks.miniarith import MiniArithConfig, MiniArithProblem, apply_op, generate_problems
from ..parsers import parse_pairwise

__all__ = [
    "WORSE_KINDS",
    "JudgedSample",
    "balance_labels",
    "compact_solution",
    "dpo_pairs",
    "gold_label",
    "miniarith_pairs",
    "modify_miniarith",
    "process_shuffled",
    "rejection_sample",
]

Slot = Literal["A", "B"]


def gold_label(ranks: Sequence[int | float]) -> Slot:
    """``"A"`` when ``ranks[0] < ranks[1]`` (lower rank = better), ``"B"`` when greater; equal ranks raise."""
    if len(ranks) != 2:
        raise ValueError(f"ranks must hold two values, got {list(ranks)!r}")
    if ranks[0] == ranks[1]:
        raise ValueError(f"ranks {list(ranks)!r} are tied; the Self-Taught Evaluator assumes no ties")
    return "A" if ranks[0] < ranks[1] else "B"


@dataclass(frozen=True)
class JudgedSample:
    """One sampled judgement: its text and parsed verdict (``None`` = unparseable, with ``reason``)."""

    text: str
    verdict: str | None
    reason: str | None = None

    @classmethod
    def parse(cls, text: str) -> JudgedSample:
        res = parse_pairwise(text)
        return cls(text, res.value, res.reason)


def rejection_sample(samples: Sequence[JudgedSample], gold: Slot, rng: random.Random,
                     majority_voting: float | None = None) -> JudgedSample | None:
    """The first correct sample after a seeded shuffle, or ``None`` (no correct sample / below the vote share).

    ``majority_voting=f`` (0 < f <= 1) additionally requires ``#correct >= f * #samples``.
    """
    if majority_voting is not None and not 0 < majority_voting <= 1:
        raise ValueError(f"majority_voting={majority_voting!r}; use None or a fraction in (0, 1]")
    order = list(samples)
    rng.shuffle(order)
    correct = [s for s in order if s.verdict == gold]
    if not correct:
        return None
    if majority_voting is not None and len(correct) < majority_voting * len(order):
        return None
    return correct[0]


def balance_labels(examples: Sequence[dict[str, Any]], rng: random.Random, key: str = "label") -> list[dict[str, Any]]:
    """Equal numbers of ``"A"`` and ``"B"`` examples: shuffle each side, truncate to the smaller, shuffle together."""
    a = [e for e in examples if e[key] == "A"]
    b = [e for e in examples if e[key] == "B"]
    other = [e for e in examples if e[key] not in ("A", "B")]
    if other:
        raise ValueError(f"balance_labels needs labels 'A'/'B'; got {other[0][key]!r}")
    rng.shuffle(a)
    rng.shuffle(b)
    k = min(len(a), len(b))
    out = a[:k] + b[:k]
    rng.shuffle(out)
    return out


def dpo_pairs(groups: Sequence[dict[str, Any]], rng: random.Random, num_pairs: int = 1,
              balance: bool = True) -> list[dict[str, Any]]:
    """Preference rows for the judge from sampled judgements (§4.4 ``prepare_dpo_data``).

    ``groups``: ``{"prompt": messages, "label": "A"|"B", "samples": [JudgedSample], ...}`` per key. Returns TRL
    rows ``{"prompt", "chosen": [assistant], "rejected": [assistant], "label", "key"}``: for every key with at
    least one positive and one negative, ``num_pairs`` (positive, negative) pairs drawn from all of them.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs={num_pairs}; use >= 1")
    usable = []
    for g in groups:
        pos = [s for s in g["samples"] if s.verdict == g["label"]]
        neg = [s for s in g["samples"] if s.verdict != g["label"]]
        if pos and neg:
            usable.append({**g, "pos": pos, "neg": neg})
    if balance:
        usable = balance_labels(usable, rng)
    rows = []
    for g in usable:
        combos = [(p, n) for p in g["pos"] for n in g["neg"]]
        rng.shuffle(combos)
        for p, n in combos[:num_pairs]:
            rows.append({"prompt": g["prompt"], "chosen": [{"role": "assistant", "content": p.text}],
                         "rejected": [{"role": "assistant", "content": n.text}], "label": g["label"],
                         "key": g.get("key")})
    return rows


def process_shuffled(text: str, chosen_slot: Slot) -> float:
    """RewardBench's per-output score: 1.0 if the verdict names ``chosen_slot``, 0.0 the other, 0.5 unparseable."""
    v = parse_pairwise(text).value
    if v in ("A", "B"):
        return 1.0 if v == chosen_slot else 0.0
    return 0.5


# --------------------------------------------------------------------------------------------- MiniArith


def compact_solution(cot: str) -> str:
    """A GSM8K-style solution without the ``<<expr=result>>`` calculator annotations (shorter judge prompts)."""
    return re.sub(r"<<[^>]*>>", "", cot)


def modify_miniarith(problem: MiniArithProblem, rng: random.Random, *, max_tries: int = 30,
                     max_result: int = 999) -> tuple[str, str, int] | None:
    """``(x', y_l, answer')``: the question with one literal number changed and the gold solution of ``x'``.

    The changed literal occurs exactly once in the question (so the text edit is unambiguous); the new value
    keeps every step valid (non-negative, exact division, results <= ``max_result``) and changes the final
    answer. ``None`` when no such edit is found in ``max_tries`` seeded draws.
    """
    steps = problem.program
    if not steps or not isinstance(steps[0].a, int):
        return None
    literals: list[tuple[int | str, int]] = [("start", steps[0].a)]
    literals += [(j, s.b) for j, s in enumerate(steps) if isinstance(s.b, int)]
    for _ in range(max_tries):
        which, val = rng.choice(literals)
        pattern = rf"(?<!\d){val}(?!\d)"
        if len(re.findall(pattern, problem.question)) != 1:
            continue
        new = val + rng.choice([-3, -2, -1, 1, 2, 3])
        if new < 1:
            continue
        cur = new if which == "start" else steps[0].a
        lines, ok = [], True
        for j, s in enumerate(steps):
            b = new if which == j else s.b
            if not isinstance(b, int):
                ok = False
                break
            r = apply_op(s.op, cur, b)
            if r is None or r < 0 or r > max_result:
                ok = False
                break
            lines.append(f"{cur}{s.op}{b}={r}")
            cur = r
        if not ok or cur == problem.answer:
            continue
        question = re.sub(pattern, str(new), problem.question, count=1)
        return question, "\n".join([*lines, f"#### {cur}"]), cur
    return None


WORSE_KINDS = ("modified_instruction", "wrong_final")
"""How :func:`miniarith_pairs` builds ``y_l``."""


def miniarith_pairs(n: int, task: MiniArithConfig, *, start: int, seed: int, exclude: set[str] | None = None,
                    worse: str = "modified_instruction") -> list[dict[str, Any]]:
    """``n`` construction-labelled pairs from MiniArith problems ``start, start+1, ...`` (§4.8).

    Row: ``{id, question, chosen (gold solution, compact), rejected, modified_question, answer,
    modified_answer}``. ``worse="modified_instruction"`` (the paper's method): ``rejected`` = the gold solution
    of ``x'`` (one number of ``x`` changed). ``worse="wrong_final"`` (the paper's weaker "rewrite the answer to be
    worse" ablation, 80.7 vs 83.8 on RewardBench): the gold solution of ``x`` with a wrong ``#### N`` line
    (``modified_question`` is then ``None``). Problems with no valid modification or a question in ``exclude``
    are skipped.
    """
    if worse not in WORSE_KINDS:
        raise ValueError(f"worse={worse!r}; use one of {WORSE_KINDS}")
    out: list[dict[str, Any]] = []
    i = start
    exclude = exclude or set()
    while len(out) < n:
        batch = generate_problems(2 * (n - len(out)) + 8, task, start=i)
        i += len(batch)
        for p in batch:
            if p.question in exclude:
                continue
            rng = random.Random(f"ste-modify-{seed}-{p.id}")
            if worse == "wrong_final":
                answer2 = p.answer + rng.choice([-3, -2, -1, 1, 2, 3])
                answer2 = answer2 if answer2 >= 0 else p.answer + 2
                lines = compact_solution(p.cot).split("\n")
                question2, rejected = None, "\n".join([*lines[:-1], f"#### {answer2}"])
            else:
                mod = modify_miniarith(p, rng, max_result=task.max_result)
                if mod is None:
                    continue
                question2, rejected, answer2 = mod
            out.append({"id": p.id, "question": p.question, "chosen": compact_solution(p.cot),
                        "rejected": rejected, "modified_question": question2, "answer": p.answer,
                        "modified_answer": answer2})
            if len(out) == n:
                break
    return out


def _slot(pair_id: str, order: str) -> Literal["A", "B"]:
    return "A" if order == "0_1" else "B"
