"""Searched paths as TRL training data (spec/ecosystem.md §4.1 "Dataset emitters").

- :func:`preference_rows`: DPO / reward-model preference rows ``{"prompt", "chosen", "rejected"}``,
  conversational by default (prompt = the chat messages, chosen/rejected = one assistant message each). Chosen =
  finished paths whose answer is correct (against ``gold``; without a gold answer: the answer the selector chose),
  rejected = finished paths with another or no answer. Provenance rides in extra columns (TRL ignores them).
- :func:`stepwise_rows`: stepwise supervision ``{"prompt", "completions", "labels"}`` (TRL's PRM format, standard
  strings). A step is labelled ``True`` when some finished path that starts with the same steps reaches the
  correct answer (Monte-Carlo-style labels from the tree), ``False`` otherwise; steps dropped by a constraint are
  exported too, with their last step labelled ``False``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...sdk.types import Prompt, ScoredPath, normalize_prompt
from .search import PathFinderResult, default_prompt
from .selection import answers_equal, chain_text

__all__ = ["preference_rows", "stepwise_rows"]


def _target(result: PathFinderResult, gold: str | None) -> str | None:
    return gold if gold is not None else result.answer


def _is_good(path: ScoredPath, target: str | None) -> bool:
    return answers_equal(path.answer, target)


def preference_rows(
    result: PathFinderResult,
    gold: str | int | float | None = None,
    *,
    prompt_fn: Callable[[str], Prompt] | None = None,
    conversational: bool = True,
    delimiter: str = "\n",
    max_pairs: int | None = 4,
) -> list[dict[str, Any]]:
    """Preference pairs from one search: each chosen path paired with rejected paths (best-scored first).

    Pairs are formed round-robin (chosen 1 with rejected 1, chosen 2 with rejected 2, ...) until ``max_pairs``
    (``None``: all chosen x rejected). No pair when either side is empty.
    """
    target = _target(result, None if gold is None else str(gold))
    good = sorted((p for p in result.paths if _is_good(p, target)), key=lambda p: -p.score)
    bad = sorted((p for p in result.paths if not _is_good(p, target)), key=lambda p: -p.score)
    if not good or not bad:
        return []
    prompt = (prompt_fn or default_prompt)(result.question)
    pairs: list[tuple[ScoredPath, ScoredPath]]
    if max_pairs is None:
        pairs = [(g, b) for g in good for b in bad]
    else:
        pairs = []
        for k in range(max(len(good), len(bad))):
            if len(pairs) >= max_pairs:
                break
            pairs.append((good[k % len(good)], bad[k % len(bad)]))
        seen: set[tuple[int, int]] = set()
        pairs = [(g, b) for g, b in pairs if (id(g), id(b)) not in seen and not seen.add((id(g), id(b)))]
    rows = []
    for g, b in pairs:
        gt, bt = chain_text(g.steps, delimiter), chain_text(b.steps, delimiter)
        if conversational:
            row: dict[str, Any] = {
                "prompt": normalize_prompt(prompt) if not isinstance(prompt, str) else
                [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": gt}],
                "rejected": [{"role": "assistant", "content": bt}],
            }
        else:
            row = {"prompt": prompt if isinstance(prompt, str) else result.question, "chosen": gt, "rejected": bt}
        row.update({"question": result.question, "chosen_answer": g.answer, "rejected_answer": b.answer,
                    "chosen_score": g.score, "rejected_score": b.score, "target_answer": target,
                    "label_source": "gold" if gold is not None else "selected"})
        rows.append(row)
    return rows


def stepwise_rows(
    result: PathFinderResult,
    gold: str | int | float | None = None,
    *,
    include_pruned: bool = True,
) -> list[dict[str, Any]]:
    """Stepwise supervision rows: one per finished path (and per constraint-dropped step when asked)."""
    target = _target(result, None if gold is None else str(gold))
    good_prefixes: set[tuple[str, ...]] = set()
    for p in result.paths:
        if _is_good(p, target):
            for k in range(1, len(p.steps) + 1):
                good_prefixes.add(tuple(p.steps[:k]))
    rows = []
    extra = {"question": result.question, "target_answer": target,
             "label_source": "gold" if gold is not None else "selected"}
    for p in result.paths:
        labels = [tuple(p.steps[:k]) in good_prefixes for k in range(1, len(p.steps) + 1)]
        rows.append({"prompt": result.question, "completions": list(p.steps), "labels": labels,
                     "answer": p.answer, "source": "finished", **extra})
    if include_pruned:
        for d in result.pruned_steps:
            steps: Sequence[str] = d["steps"]
            labels = [tuple(steps[:k]) in good_prefixes for k in range(1, len(steps))] + [False]
            rows.append({"prompt": result.question, "completions": list(steps), "labels": labels,
                         "answer": None, "source": f"pruned:{d['reason']}", **extra})
    return rows
