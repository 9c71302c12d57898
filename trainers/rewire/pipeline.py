"""REWIRE end to end (spec/loops.md §6.1): rewrite every pool document with a Generator, extract the rewrite,
score rewrites with a locally trained quality classifier, keep the top p %, and report the recycled fraction.

``run_rewire(docs, executor, positives=..., raw_scores=...)`` works with any Generator behind a
:class:`~loopwright.sdk.executors.LocalExecutor` or :class:`~loopwright.sdk.executors.RayExecutor` (same batches,
same seed, same outputs). Rewrite selection is an sdk :class:`Filter` (:class:`RewireFilter`): classifier scores
are computed once and :meth:`RewireResult.recompute` re-selects at another percentage without re-scoring.

Records follow spec Appendix A.6: ``doc_id, raw_text, raw_score, rewrite_thinking, rewrite_text, rewrite_score,
raw_selected, rewrite_selected, parse_ok`` plus ``reason`` (why a document produced no selected rewrite).
Bad input never crashes the run: a non-text, empty or over-long document is rejected before rewriting
(``invalid_document: ...``), an unparseable generation keeps its parser reason (``truncated``,
``missing_end_marker``, ...), and a rewrite below the cut is ``below_top_pct``.
"""

from __future__ import annotations

import functools
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ...sdk.artifacts import RunDir, write_json, write_jsonl
from ...sdk.errors import BackendError
from ...sdk.executors import Executor, LocalExecutor, judge_for, release_judge
from ...sdk.filter import Filter
from ...sdk.generator import Generator
from ...sdk.judge import Judge
from ...sdk.types import Decision, Prompt, SamplingParams, Verdict
from .classifier import QualityClassifier, balanced_training_set, make_classifier
from .extract import PARSER_VERSION, extract_rewrite
from .prompt import build_rewrite_prompt
from .select import recycled_fraction, spearman, top_percent

__all__ = [
    "ClassifierJudge",
    "RewireConfig",
    "RewireFilter",
    "RewireResult",
    "check_document",
    "load_rewire",
    "rewire_stages",
    "rewrite_documents",
    "run_rewire",
]


class RewireConfig(BaseModel):
    """REWIRE settings with provenance (spec/loops.md Appendix A.6).

    - rewriter sampling: ``temperature`` 1.0, ``top_p`` 0.9, ``max_tokens`` 8192 [V] (lower ``max_tokens`` for
      small models); ``seed`` fixes sampling so local and Ray runs agree.
    - ``keep_top_pct`` 10: the top 10 % of rewrites by the classifier [V]; ``raw_keep_top_pct`` 10: DCLM-Baseline
      is the top 10 % of the raw pool [V].
    - ``classifier``: "auto" (fastText when installed, else the numpy hashed-n-gram logistic regression; §6.5).
    - ``max_doc_chars``: longer documents are rejected (None: no limit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(8192, ge=1)
    seed: int | None = 0
    keep_top_pct: float = Field(10.0, gt=0, le=100)
    raw_keep_top_pct: float = Field(10.0, gt=0, le=100)
    classifier: str = "auto"
    classifier_seed: int = 0
    max_doc_chars: int | None = Field(None, ge=1)
    truncate_prompt: bool = False
    """Pass-through to SamplingParams: keep the prompt's last tokens when it exceeds a small model's context
    (tests with tiny models); for real rewriters reject long documents with ``max_doc_chars`` instead."""

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              seed=self.seed, truncate_prompt=self.truncate_prompt)


def check_document(doc: Any, max_chars: int | None = None) -> str | None:
    """The reason a document cannot be rewritten, or None."""
    if not isinstance(doc, str):
        return f"invalid_document: not text ({type(doc).__name__})"
    if not doc.strip():
        return "invalid_document: empty"
    if max_chars is not None and len(doc) > max_chars:
        return f"invalid_document: {len(doc)} chars > max_doc_chars={max_chars}"
    return None


def _jsonable(doc: Any) -> Any:
    return doc if isinstance(doc, str) or doc is None else repr(doc)[:500]


def rewrite_documents(
    docs: Sequence[Any],
    executor: Executor | Generator,
    config: RewireConfig | None = None,
    ids: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Rewrite every valid document once; one record per input document, in order (invalid ones included)."""
    config = config or RewireConfig()
    if isinstance(executor, Generator):
        executor = LocalExecutor(executor, progress=False)
    ids = list(ids) if ids is not None else list(range(len(docs)))
    if len(ids) != len(docs):
        raise ValueError(f"{len(docs)} documents but {len(ids)} ids")
    records: list[dict[str, Any]] = []
    todo: list[int] = []
    for i, (doc, did) in enumerate(zip(docs, ids, strict=True)):
        why = check_document(doc, config.max_doc_chars)
        records.append({"doc_id": did, "raw_text": _jsonable(doc), "raw_score": None, "rewrite_thinking": None,
                        "rewrite_text": None, "rewrite_score": None, "raw_selected": False,
                        "rewrite_selected": False, "parse_ok": False, "reason": why, "finish_reason": None,
                        "raw_generation": None})
        if why is None:
            todo.append(i)
    if todo:
        outs = executor.run([build_rewrite_prompt(docs[i]) for i in todo], config.sampling_params())
        if len(outs) != len(todo):
            raise BackendError(f"the executor returned {len(outs)} rows for {len(todo)} rewrite prompts")
        for i, row in zip(todo, outs, strict=True):
            c = row[0]
            parsed = extract_rewrite(c.text, c.finish_reason)
            records[i].update(parse_ok=parsed.ok, rewrite_text=parsed.text, rewrite_thinking=parsed.thinking,
                              reason=None if parsed.ok else f"unparseable: {parsed.reason}",
                              finish_reason=c.finish_reason, raw_generation=c.text)
    return records


class ClassifierJudge(Judge):
    """A fitted :class:`QualityClassifier` as a pointwise Judge (score = P(high quality) of the response; the prompt
    is ignored), so REWIRE's scoring can run wherever judges run, e.g. in Ray actors (:meth:`factory`)."""

    kinds: ClassVar[frozenset[str]] = frozenset({"pointwise"})

    def __init__(self, classifier: QualityClassifier):
        self.classifier = classifier
        self.name = f"quality_classifier:{classifier.kind}"

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        values = self.classifier.score(list(responses)) if responses else []
        return [Verdict(kind="pointwise", score=float(v), valid=True) for v in values]

    @staticmethod
    def factory(classifier: QualityClassifier) -> functools.partial[ClassifierJudge]:
        """A picklable factory that rebuilds ``classifier`` from its saved bytes (its own ``save`` / ``load``, no
        pickle of the model object, so fastText models travel too) and wraps it in a ClassifierJudge."""
        with tempfile.TemporaryDirectory() as d:
            path = classifier.save(Path(d) / "classifier.bin")
            blob = Path(path).read_bytes()
        return functools.partial(_classifier_judge_from_bytes, type(classifier), blob)


def _classifier_judge_from_bytes(cls: type, blob: bytes) -> ClassifierJudge:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "classifier.bin"
        path.write_bytes(blob)
        return ClassifierJudge(cls.load(path))  # type: ignore[attr-defined]


class RewireFilter(Filter):
    """Top-p % of rewrites by a fitted :class:`QualityClassifier`. ``score`` reads ``rewrite_text`` (records that
    failed to parse score ``{}``); ``keep(scores, pct=None)`` re-selects without re-scoring.

    ``judge`` (optional) scores the rewrites instead of calling the classifier here, e.g. a
    :class:`~loopwright.sdk.executors.RayJudge` over :meth:`ClassifierJudge.factory`; an invalid verdict leaves
    that rewrite unscored (``no_rewrite``)."""

    name = "rewire_top_pct"

    def __init__(self, classifier: QualityClassifier, keep_top_pct: float = 10.0, judge: Judge | None = None):
        if not 0 < keep_top_pct <= 100:
            raise ValueError(f"keep_top_pct={keep_top_pct} must be in (0, 100]")
        self.classifier = classifier
        self.keep_top_pct = keep_top_pct
        self.judge = judge

    def score(self, records: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        todo = [i for i, r in enumerate(records) if r.get("parse_ok") and r.get("rewrite_text")]
        texts = [records[i]["rewrite_text"] for i in todo]
        values: list[float | None]
        if self.judge is not None and todo:
            verdicts = self.judge.score([""] * len(texts), texts)
            if len(verdicts) != len(texts):
                raise BackendError(f"{self.judge.name}.score returned {len(verdicts)} verdicts for {len(texts)} rewrites")
            values = [v.score if v.valid else None for v in verdicts]
        else:
            values = list(self.classifier.score(texts)) if todo else []
        out: list[dict[str, float]] = [{} for _ in records]
        for i, v in zip(todo, values, strict=True):
            out[i] = {} if v is None else {"rewrite_score": float(v)}
        return out

    def keep(self, scores: Sequence[dict[str, float]], pct: float | None = None) -> list[Decision]:
        pct = self.keep_top_pct if pct is None else pct
        chosen = set(top_percent([s.get("rewrite_score") for s in scores], pct))
        return [Decision(keep=True) if i in chosen else
                Decision(keep=False, reason="no_rewrite" if "rewrite_score" not in s else "below_top_pct")
                for i, s in enumerate(scores)]


@dataclass
class RewireResult:
    records: list[dict[str, Any]]
    scores: list[dict[str, float]]
    decisions: list[Decision]
    filter: RewireFilter
    classifier_kind: str
    raw_keep_top_pct: float
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.records = [dict(r) for r in self.records]  # recompute() must not change another result's records
        for rec, s, d in zip(self.records, self.scores, self.decisions, strict=True):
            rec["rewrite_score"] = s.get("rewrite_score")
            rec["rewrite_selected"] = d.keep
            if rec["parse_ok"]:
                rec["reason"] = None if d.keep else d.reason

    def recompute(self, pct: float) -> RewireResult:
        """Re-select the top ``pct`` % without re-scoring."""
        return RewireResult(self.records, self.scores, self.filter.keep(self.scores, pct), self.filter,
                            self.classifier_kind, self.raw_keep_top_pct, dict(self.timings))

    def selected(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["rewrite_selected"]]

    def rejected_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.records if not r["rewrite_selected"]]

    def stats(self) -> dict[str, Any]:
        reasons = Counter(r["reason"] for r in self.records if r["reason"])
        has_raw = any(r["raw_score"] is not None for r in self.records)
        both = [(r["raw_score"], r["rewrite_score"]) for r in self.records
                if r["raw_score"] is not None and r["rewrite_score"] is not None]
        return {
            "n_documents": len(self.records),
            "n_parse_ok": sum(r["parse_ok"] for r in self.records),
            "n_rewrite_selected": sum(r["rewrite_selected"] for r in self.records),
            "n_raw_selected": sum(r["raw_selected"] for r in self.records),
            "per_reason": dict(sorted(reasons.items())),
            "keep_top_pct": self.filter.keep_top_pct,
            "raw_keep_top_pct": self.raw_keep_top_pct if has_raw else None,
            "recycled_fraction": recycled_fraction([r["raw_selected"] for r in self.records],
                                                   [r["rewrite_selected"] for r in self.records]) if has_raw else None,
            "spearman_raw_vs_rewrite": spearman([a for a, _ in both], [b for _, b in both]) if both else None,
            "classifier": self.classifier_kind,
            "parser_version": PARSER_VERSION,
            "timings_s": dict(self.timings),
        }

    def write(self, out: str | Path | RunDir, prefix: str = "") -> dict[str, Path]:
        """Write ``records.jsonl`` (all), ``selected.jsonl``, ``rejected.jsonl`` (with reasons), ``stats.json``."""
        names = {k: f"{prefix}{k}" for k in ("records.jsonl", "selected.jsonl", "rejected.jsonl", "stats.json")}
        stats = self.stats()

        def emit(path_for: Any) -> dict[str, Path]:
            paths = {k: path_for(v) for k, v in names.items()}
            write_jsonl(paths["records.jsonl"], self.records)
            write_jsonl(paths["selected.jsonl"], self.selected())
            write_jsonl(paths["rejected.jsonl"], self.rejected_rows())
            write_json(paths["stats.json"], stats)
            return paths

        if isinstance(out, RunDir):
            with out.stage(f"{prefix}rewire") as st:
                paths = emit(st.path)
                st.rows = stats["n_rewrite_selected"]
                st.metrics = {k: stats[k] for k in ("n_documents", "n_parse_ok", "n_rewrite_selected",
                                                    "recycled_fraction", "per_reason")}
            return paths
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        return emit(lambda name: folder / name)


def run_rewire(
    docs: Sequence[Any],
    executor: Executor | Generator,
    *,
    classifier: QualityClassifier | None = None,
    positives: Sequence[str] | None = None,
    raw_scores: Sequence[float | None] | None = None,
    config: RewireConfig | None = None,
    ids: Sequence[Any] | None = None,
    score_on_executor: bool = False,
) -> RewireResult:
    """Rewrite ``docs``, score the rewrites, keep the top ``keep_top_pct`` %.

    ``score_on_executor=True`` scores the rewrites where the executor runs judges: with a ``RayExecutor`` the
    fitted classifier travels as saved bytes (:meth:`ClassifierJudge.factory`) into ``num_actors`` Ray actors,
    stopped when scoring ends; with a ``LocalExecutor`` it scores here, as by default.

    Either pass a fitted ``classifier``, or ``positives`` (curated high-quality texts): a classifier is then trained
    as in the paper, positives vs an equal number of random parsed rewrites (:func:`balanced_training_set`).
    ``raw_scores`` (one per document, e.g. a raw-quality classifier's score) set ``raw_selected`` = top
    ``raw_keep_top_pct`` % and enable the recycled fraction and the Spearman diagnostic.
    """
    config = config or RewireConfig()
    if classifier is None and not positives:
        raise ValueError("run_rewire needs a fitted classifier= or positives= (curated texts) to train one")
    if raw_scores is not None and len(raw_scores) != len(docs):
        raise ValueError(f"{len(docs)} documents but {len(raw_scores)} raw scores")
    t0 = time.perf_counter()
    records = rewrite_documents(docs, executor, config, ids)
    t1 = time.perf_counter()
    if raw_scores is not None:
        raw_pick = set(top_percent(list(raw_scores), config.raw_keep_top_pct))
        for i, (rec, s) in enumerate(zip(records, raw_scores, strict=True)):
            rec["raw_score"] = None if s is None else float(s)
            rec["raw_selected"] = i in raw_pick
    if classifier is None:
        rewrites = [r["rewrite_text"] for r in records if r["parse_ok"]]
        classifier = make_classifier(config.classifier, seed=config.classifier_seed)
        if rewrites:
            rng = random.Random(config.classifier_seed)
            negatives = rng.sample(rewrites, min(len(rewrites), len(positives or [])))
            texts, labels = balanced_training_set(positives or [], negatives, seed=config.classifier_seed)
            classifier.fit(texts, labels)
    rf = RewireFilter(classifier, config.keep_top_pct)
    if score_on_executor and not isinstance(executor, Generator) and any(r["parse_ok"] for r in records):
        judge, owned = judge_for(executor, ClassifierJudge.factory(classifier))
        try:
            rf.judge = judge
            scores = rf.score(records)
        finally:
            rf.judge = None
            release_judge(judge, owned)
    else:
        scores = rf.score(records)
    decisions = rf.keep(scores)
    t2 = time.perf_counter()
    return RewireResult(records, scores, decisions, rf, classifier.kind, config.raw_keep_top_pct,
                        {"rewrite": round(t1 - t0, 3), "classify_select": round(t2 - t1, 3)})


def load_rewire(folder: str | Path, classifier: QualityClassifier, keep_top_pct: float = 10.0,
                raw_keep_top_pct: float = 10.0, prefix: str = "") -> RewireResult:
    """Rebuild a :class:`RewireResult` from ``records.jsonl`` (rewrites are not regenerated) and score + select with
    ``classifier``."""
    from ...sdk.artifacts import read_jsonl

    records = read_jsonl(Path(folder) / f"{prefix}records.jsonl")
    for r in records:
        if r["parse_ok"]:
            r["reason"] = None
    rf = RewireFilter(classifier, keep_top_pct)
    scores = rf.score(records)
    return RewireResult(records, scores, rf.keep(scores), rf, classifier.kind, raw_keep_top_pct, {})


def rewire_stages(
    docs: Sequence[Any],
    executor: Executor | Generator,
    *,
    positives: Sequence[str],
    raw_scores: Sequence[float | None] | None = None,
    config: RewireConfig | None = None,
) -> list[Any]:
    """REWIRE as durable :class:`~loopwright.sdk.stages.Stage` s for ``run_stages`` (LangGraph + SQLite checkpoints):
    ``rewire_rewrite`` (generation + parsing; writes ``records.jsonl``) then ``rewire_select`` (trains the classifier
    on ``positives`` vs random parsed rewrites, scores, selects, writes the outputs). A run killed after the first
    stage resumes at the second without rewriting again."""
    from ...sdk.stages import Stage

    config = config or RewireConfig()

    def rewrite(state: Any, run: Any) -> dict[str, Any]:
        records = rewrite_documents(docs, executor, config)
        if raw_scores is not None:
            raw_pick = set(top_percent(list(raw_scores), config.raw_keep_top_pct))
            for i, (rec, s) in enumerate(zip(records, raw_scores, strict=True)):
                rec["raw_score"] = None if s is None else float(s)
                rec["raw_selected"] = i in raw_pick
        path = run.path / "records.jsonl"
        write_jsonl(path, records)
        return {"artifacts": {"records": str(path)}, "metrics": {"n_parse_ok": sum(r["parse_ok"] for r in records)}}

    def select(state: Any, run: Any) -> dict[str, Any]:
        from ...sdk.artifacts import read_jsonl

        records = read_jsonl(run.path / "records.jsonl")
        rewrites = [r["rewrite_text"] for r in records if r["parse_ok"]]
        clf = make_classifier(config.classifier, seed=config.classifier_seed)
        if rewrites:
            negatives = random.Random(config.classifier_seed).sample(rewrites, min(len(rewrites), len(positives)))
            clf.fit(*balanced_training_set(positives, negatives, seed=config.classifier_seed))
        res = load_rewire(run.path, clf, config.keep_top_pct, config.raw_keep_top_pct)  # unfitted: nothing to score
        paths = res.write(run.path)
        st = res.stats()
        return {"artifacts": {k: str(v) for k, v in paths.items()},
                "metrics": {"n_rewrite_selected": st["n_rewrite_selected"], "recycled_fraction": st["recycled_fraction"]}}

    return [Stage("rewire_rewrite", rewrite), Stage("rewire_select", select)]
