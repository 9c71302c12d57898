"""Judge evaluation on gold preference pairs: accuracy, position consistency, invalid rate, length bias.

``evaluate(judge, pairs)`` asks any pairwise :class:`~loopwright.sdk.judge.Judge` to compare every gold pair
and returns a :class:`JudgeReport`. Protocol (spec/loops.md §4.5, RewardBench + LLMBar practice):

- **Randomised placement.** Which slot (A or B) holds the chosen response is drawn per pair from
  ``stable_hash((seed, pair.id))``, so a judge that always says "A" scores ~50%, not 100% or 0%, and the
  placement of a pair does not depend on which other pairs are evaluated (``--limit`` keeps placements).
- **Both orders.** When the judge's verdicts carry swap records (a pairwise judge that judges both orders
  itself; a judge with ``both_orders = False`` is taken at its word) those two orders are used; otherwise the
  evaluator presents each pair a second time swapped (``reverse=None`` auto; ``True`` always; ``False``
  never; a judge with ``order_invariant = True``, whose verdict cannot depend on the order, is not re-asked in
  auto mode). From the two orders come *position-consistent accuracy* (correct in both orders), *swap
  consistency* (both orders agree, over pairs where both parsed), and accuracy with the chosen response shown
  first vs second.
- **Invalid verdicts count as wrong** in ``accuracy`` (``accuracy_valid`` is over valid verdicts only, and
  ``accuracy_half_credit`` gives invalid and tie verdicts 0.5, RewardBench's ``process_shuffled`` rule).
  Ties in the gold data (``pair.tie``) are correct only for a tie verdict.
- **Length bias**: how often the judge prefers the longer response (characters) vs how often the gold
  data's chosen response is the longer one (AlpacaEval's length-control concern).
- **RewardBench-style summary**: per-subset accuracy, their example-weighted mean and unweighted mean.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from loopwright.sdk.executors import RayJudge, judge_for, release_judge
from loopwright.sdk.judge import Judge
from loopwright.sdk.types import Verdict, stable_hash

from .datasets import PreferencePair

__all__ = ["REWARDBENCH_SECTIONS", "JudgeReport", "LengthBias", "PairRecord", "SubsetReport", "chosen_slot",
           "evaluate"]

REWARDBENCH_SECTIONS: dict[str, tuple[str, ...]] = {
    "Chat Hard": ("llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst", "llmbar-adver-GPTOut",
                  "llmbar-adver-manual"),
}
"""RewardBench's ``SUBSET_MAPPING`` restricted to the subsets available offline (spec/loops.md §4.5, §7.2): a
section's score is the example-weighted accuracy of its subsets present in the run
(``calculate_scores_per_section``)."""

Slot = Literal["A", "B"]
Pref = Literal["A", "B", "tie"]


class PairRecord(BaseModel):
    """What happened to one gold pair (one line of ``records.jsonl``)."""

    id: str
    subset: str
    chosen_slot: Slot
    gold_tie: bool = False
    preference: Pref | None
    valid: bool
    invalid_reason: str | None = None
    correct: bool
    forward: Pref | None = None
    reverse: Pref | None = None
    """The second order's preference, mapped back to the first presentation's A/B labels."""
    consistent: bool | None = None
    position_consistent_correct: bool | None = None
    chosen_len: int
    rejected_len: int
    prefers_longer: bool | None = None
    verdict: dict[str, Any] = Field(default_factory=dict)
    reverse_verdict: dict[str, Any] | None = None


class LengthBias(BaseModel):
    """Judge's rate of preferring the longer response vs the data's rate of choosing it (characters)."""

    judge_prefers_longer: float | None
    """Among valid A/B verdicts on pairs of different length."""
    data_chosen_longer: float | None
    """Among non-tie gold pairs of different length."""
    bias: float | None
    """``judge_prefers_longer - data_chosen_longer``: > 0 means the judge favours length beyond the data."""
    n_judged: int
    n_data: int


class SubsetReport(BaseModel):
    n: int
    accuracy: float
    accuracy_valid: float | None
    position_consistent_accuracy: float | None
    swap_consistency: float | None
    invalid_rate: float


class JudgeReport(BaseModel):
    """The result of :func:`evaluate`. ``to_markdown()`` gives the RewardBench-style table, ``to_json()`` all."""

    judge: str
    provenance: dict[str, Any] | None = None
    n: int
    n_valid: int
    accuracy: float
    accuracy_valid: float | None
    accuracy_half_credit: float
    position_consistent_accuracy: float | None
    swap_consistency: float | None
    n_both_orders_parsed: int
    accuracy_chosen_first: float | None
    accuracy_chosen_second: float | None
    order_averaged_accuracy: float | None
    invalid_rate: float
    invalid_reasons: dict[str, int]
    tie_rate: float
    length_bias: LengthBias
    subsets: dict[str, SubsetReport]
    summary: dict[str, float]
    """RewardBench-style: ``weighted`` (by subset size) and ``mean`` (unweighted) of subset accuracies, plus
    ``section:<name>`` for each :data:`REWARDBENCH_SECTIONS` section with subsets in the run."""
    orders: Literal["judge", "evaluator", "single"]
    """Where the second order came from: the judge's own SwapRecords, the evaluator, or none."""
    seed: int
    chosen_in_a: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    def to_markdown(self) -> str:
        def f(x: float | None) -> str:
            return "–" if x is None else f"{100 * x:.1f}"

        lines = [
            f"## Judge evaluation: {self.judge}",
            "",
            f"{self.n} pairs (chosen placed in slot A for {self.chosen_in_a}, seed {self.seed}); "
            f"second order from: {self.orders}; {self.seconds:.1f} s; "
            f"tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion.",
            "",
            "| metric | value (%) |",
            "|---|---|",
            f"| accuracy (invalid = wrong) | {f(self.accuracy)} |",
            f"| accuracy over valid verdicts ({self.n_valid}) | {f(self.accuracy_valid)} |",
            f"| accuracy, invalid/tie = 0.5 (RewardBench) | {f(self.accuracy_half_credit)} |",
            f"| position-consistent accuracy | {f(self.position_consistent_accuracy)} |",
            f"| swap consistency ({self.n_both_orders_parsed} pairs parsed in both orders) | "
            f"{f(self.swap_consistency)} |",
            f"| accuracy, chosen shown first / second | {f(self.accuracy_chosen_first)} / "
            f"{f(self.accuracy_chosen_second)} |",
            f"| order-averaged accuracy | {f(self.order_averaged_accuracy)} |",
            f"| invalid rate | {f(self.invalid_rate)} |",
            f"| tie rate | {f(self.tie_rate)} |",
            f"| judge prefers longer / data chosen longer | {f(self.length_bias.judge_prefers_longer)} / "
            f"{f(self.length_bias.data_chosen_longer)} |",
            "",
            "| subset | n | accuracy | acc. (valid) | pos.-consistent | swap-consistent | invalid |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, s in sorted(self.subsets.items()):
            lines.append(f"| {name} | {s.n} | {f(s.accuracy)} | {f(s.accuracy_valid)} | "
                         f"{f(s.position_consistent_accuracy)} | {f(s.swap_consistency)} | {f(s.invalid_rate)} |")
        lines.append(f"| **weighted mean** | {self.n} | {f(self.summary.get('weighted'))} | | | | |")
        lines.append(f"| **mean of subsets** | {len(self.subsets)} | {f(self.summary.get('mean'))} | | | | |")
        for key, val in self.summary.items():
            if key.startswith("section:"):
                lines.append(f"| **RewardBench {key[8:]}** | | {f(val)} | | | | |")
        if self.invalid_reasons:
            lines += ["", "Invalid reasons: " + ", ".join(f"{k} ({v})" for k, v in
                                                          sorted(self.invalid_reasons.items(), key=lambda kv: -kv[1]))]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path) -> None:
        """Write ``report.json`` and ``report.md`` (atomically) into ``out_dir``."""
        from loopwright.sdk.artifacts import atomic_write

        out = Path(out_dir)
        atomic_write(out / "report.json", self.to_json())
        atomic_write(out / "report.md", self.to_markdown())


# --------------------------------------------------------------------------------------------- helpers


def chosen_slot(seed: int, pair_id: str) -> Slot:
    """The slot holding the chosen response: a stable coin flip per (seed, pair id)."""
    return "A" if int(stable_hash([seed, pair_id], length=8), 16) % 2 == 0 else "B"


def _flip(p: Pref | None) -> Pref | None:
    return {"A": "B", "B": "A"}.get(p, p) if p is not None else None  # type: ignore[return-value]


def _ok(pref: Pref | None, slot: Slot, tie: bool) -> bool:
    return pref == "tie" if tie else pref == slot


def _reason_key(reason: str | None) -> str:
    """An invalid reason as a counter key: its first line, at most 160 characters."""
    r = (reason or "unknown").strip().split("\n", 1)[0] or "unknown"
    return r if len(r) <= 160 else r[:159] + "…"


def _mean(xs: Sequence[bool | float]) -> float | None:
    return sum(float(x) for x in xs) / len(xs) if xs else None


def _dump(v: Verdict) -> dict[str, Any]:
    return v.model_dump(mode="json", exclude={"judge"})


def _compare(judge: Judge, prompts: list[Any], a: list[str], b: list[str], batch_size: int,
             progress: bool, desc: str) -> list[Verdict]:
    out: list[Verdict] = []
    if isinstance(judge, RayJudge):  # one call: the actors take consecutive batches of judge.batch_size from it
        batch_size = max(batch_size, len(prompts))
        progress = False
    starts = range(0, len(prompts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for s in starts:
        e = s + batch_size
        got = judge.compare(prompts[s:e], a[s:e], b[s:e])
        if len(got) != len(prompts[s:e]) or not all(isinstance(v, Verdict) for v in got):
            raise RuntimeError(f"{judge.name!r}.compare returned {len(got)} items for {len(prompts[s:e])} pairs; "
                               "a Judge must return one Verdict per pair")
        out += got
    return out


# --------------------------------------------------------------------------------------------- evaluate


def evaluate(
    judge: Judge | Callable[[], Judge],
    pairs: Sequence[PreferencePair],
    *,
    seed: int = 0,
    reverse: bool | None = None,
    batch_size: int = 64,
    run_dir: str | Path | None = None,
    progress: bool = False,
    executor: Any = None,
) -> JudgeReport:
    """Evaluate a pairwise judge on gold ``pairs``; see the module docstring for the protocol.

    Args:
        judge: any Judge implementing ``compare`` (LLM pairwise judges, reward-model judges, ...).
        pairs: gold pairs (:mod:`loopwright.judges.datasets`).
        seed: placement seed (which slot holds the chosen response), recorded in the report.
        reverse: ``None`` = present the swapped order only when the judge's verdicts carry no SwapRecord;
            ``True`` = always also present it; ``False`` = never (position metrics then come from the judge's
            own SwapRecords, or are ``None``).
        batch_size: pairs per ``judge.compare`` call (one batched generate call each for LLM judges).
        run_dir: when given, writes ``records.jsonl`` (one :class:`PairRecord` per pair), ``report.json``
            and ``report.md`` there.
        executor: where a judge *factory* runs: a :class:`~loopwright.sdk.executors.RayExecutor` builds it in
            ``num_actors`` Ray actors (``executor.judge``; each actor call is one batch of ``batch_size`` pairs,
            the same batches as a local run) and stops them at the end; ``None`` / a LocalExecutor builds it here.
            ``judge`` may also be a :class:`~loopwright.sdk.executors.RayJudge` directly.
    """
    judge, owned = judge_for(executor, judge, batch_size=batch_size)
    try:
        return _evaluate(judge, pairs, seed=seed, reverse=reverse, batch_size=batch_size, run_dir=run_dir,
                         progress=progress)
    finally:
        release_judge(judge, owned)


def _evaluate(judge: Judge, pairs: Sequence[PreferencePair], *, seed: int, reverse: bool | None, batch_size: int,
              run_dir: str | Path | None, progress: bool) -> JudgeReport:
    if type(judge).compare is Judge.compare and type(judge).acompare is Judge.acompare:
        raise TypeError(f"{type(judge).__name__} does not implement compare(); evaluate() needs a pairwise judge "
                        f"(kinds={sorted(judge.kinds)})")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; use a positive integer")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("evaluate() got no pairs; check the dataset path or --limit")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"duplicate pair id {dup!r}; ids must be unique (they seed the placement)")

    t0 = time.perf_counter()
    slots = [chosen_slot(seed, p.id) for p in pairs]
    prompts = [p.prompt for p in pairs]
    a = [p.chosen if s == "A" else p.rejected for p, s in zip(pairs, slots, strict=True)]
    b = [p.rejected if s == "A" else p.chosen for p, s in zip(pairs, slots, strict=True)]
    verdicts = _compare(judge, prompts, a, b, batch_size, progress, "judging")

    # A judge's own both-order protocol: SwapRecords on its verdicts (some judges leave them off invalid ones),
    # unless the judge says it judged one order (PairwiseJudge(both_orders=False) still records swap.forward).
    has_swap = bool(getattr(judge, "both_orders", True)) and any(v.swap is not None for v in verdicts)
    order_invariant = bool(getattr(judge, "order_invariant", False))  # e.g. ScoreComparisonJudge
    run_reverse = (not has_swap and not order_invariant) if reverse is None else reverse
    rev_verdicts: list[Verdict] | None = None
    if run_reverse:
        rev_verdicts = _compare(judge, prompts, b, a, batch_size, progress, "judging (swapped)")
        orders: Literal["judge", "evaluator", "single"] = "evaluator"
    else:
        orders = "judge" if has_swap else "single"

    records: list[PairRecord] = []
    usage_p = usage_c = 0
    for i, (p, slot, v) in enumerate(zip(pairs, slots, verdicts, strict=True)):
        pref = v.preference if v.valid else None
        fwd = rev = None
        consistent = pos_ok = None
        rv = None
        if rev_verdicts is not None:
            rv = rev_verdicts[i]
            fwd = pref
            rev = _flip(rv.preference) if rv.valid else None
        elif has_swap:
            fwd, rev = (v.swap.forward, v.swap.reverse) if v.swap is not None else (pref, None)
        if orders != "single":
            if fwd is not None and rev is not None:
                consistent = fwd == rev
            pos_ok = _ok(fwd, slot, p.tie) and _ok(rev, slot, p.tie)
        longer_slot: Slot | None = None
        if len(p.chosen) != len(p.rejected):
            longer_slot = slot if len(p.chosen) > len(p.rejected) else ("B" if slot == "A" else "A")
        prefers_longer = (pref == longer_slot) if (longer_slot and pref in ("A", "B")) else None
        records.append(PairRecord(
            id=p.id, subset=p.subset, chosen_slot=slot, gold_tie=p.tie, preference=pref, valid=v.valid,
            invalid_reason=None if v.valid else v.invalid_reason, correct=_ok(pref, slot, p.tie),
            forward=fwd, reverse=rev, consistent=consistent, position_consistent_correct=pos_ok,
            chosen_len=len(p.chosen), rejected_len=len(p.rejected), prefers_longer=prefers_longer,
            verdict=_dump(v), reverse_verdict=_dump(rv) if rv is not None else None,
        ))
        for vv in (v, rv):
            if vv is not None:
                usage_p += vv.usage.prompt_tokens
                usage_c += vv.usage.completion_tokens

    report = _aggregate(judge, records, verdicts, orders=orders, seed=seed)
    report.prompt_tokens, report.completion_tokens = usage_p, usage_c
    report.seconds = time.perf_counter() - t0
    if run_dir is not None:
        from loopwright.sdk.artifacts import write_jsonl

        out = Path(run_dir)
        write_jsonl(out / "records.jsonl", (r.model_dump(mode="json") for r in records))
        report.write(out)
    return report


def _subset_report(recs: list[PairRecord], orders: str) -> SubsetReport:
    valid = [r for r in recs if r.valid]
    both = [r for r in recs if r.consistent is not None]
    return SubsetReport(
        n=len(recs),
        accuracy=_mean([r.correct for r in recs]) or 0.0,
        accuracy_valid=_mean([r.correct for r in valid]),
        position_consistent_accuracy=(_mean([bool(r.position_consistent_correct) for r in recs])
                                      if orders != "single" else None),
        swap_consistency=_mean([bool(r.consistent) for r in both]),
        invalid_rate=_mean([not r.valid for r in recs]) or 0.0,
    )


def _aggregate(judge: Judge, recs: list[PairRecord], verdicts: list[Verdict], *, orders: str,
               seed: int) -> JudgeReport:
    overall = _subset_report(recs, orders)
    by_subset: dict[str, list[PairRecord]] = {}
    for r in recs:
        by_subset.setdefault(r.subset, []).append(r)
    subsets = {k: _subset_report(v, orders) for k, v in by_subset.items()}

    # accuracy by where the chosen response was shown, over every order judged
    first: list[bool] = []
    second: list[bool] = []
    for r in recs:
        if r.gold_tie:
            continue
        shown = [(r.chosen_slot, r.forward if orders != "single" else r.preference)]
        if orders != "single":
            shown.append(("B" if r.chosen_slot == "A" else "A", r.reverse))  # the chosen moved slot
        for pos, pref in shown:
            ok = pref == r.chosen_slot
            (first if pos == "A" else second).append(ok)

    half = [1.0 if r.correct else (0.5 if (not r.valid or (r.preference == "tie" and not r.gold_tie)) else 0.0)
            for r in recs]
    judged = [r.prefers_longer for r in recs if r.prefers_longer is not None]
    data = [r.chosen_len > r.rejected_len for r in recs if not r.gold_tie and r.chosen_len != r.rejected_len]
    jl, dl = _mean(judged), _mean(data)
    prov = next((v.judge.model_dump(mode="json") for v in verdicts if v.judge is not None), None)
    acc_sub = [s.accuracy for s in subsets.values()]
    summary = {"weighted": overall.accuracy, "mean": sum(acc_sub) / len(acc_sub)}
    for section, names in REWARDBENCH_SECTIONS.items():
        present = [subsets[n] for n in names if n in subsets]
        if present:
            summary[f"section:{section}"] = sum(x.accuracy * x.n for x in present) / sum(x.n for x in present)
    return JudgeReport(
        judge=judge.name,
        provenance=prov,
        n=len(recs),
        n_valid=sum(r.valid for r in recs),
        accuracy=overall.accuracy,
        accuracy_valid=overall.accuracy_valid,
        accuracy_half_credit=_mean(half) or 0.0,
        position_consistent_accuracy=overall.position_consistent_accuracy,
        swap_consistency=overall.swap_consistency,
        n_both_orders_parsed=sum(r.consistent is not None for r in recs),
        accuracy_chosen_first=_mean(first),
        accuracy_chosen_second=_mean(second),
        order_averaged_accuracy=_mean(first + second) if orders != "single" else None,
        invalid_rate=overall.invalid_rate,
        invalid_reasons=dict(Counter(_reason_key(r.invalid_reason) for r in recs if not r.valid)),
        tie_rate=_mean([r.preference == "tie" for r in recs]) or 0.0,
        length_bias=LengthBias(judge_prefers_longer=jl, data_chosen_longer=dl,
                               bias=None if jl is None or dl is None else jl - dl,
                               n_judged=len(judged), n_data=len(data)),
        subsets=subsets,
        summary=summary,
        orders=orders,  # type: ignore[arg-type]
        seed=seed,
        chosen_in_a=sum(r.chosen_slot == "A" for r in recs),
    )
