"""Per-run reports for iterative loops: a per-iteration table and PNG plots from ``RUN_DIR/iterations.jsonl``.

DESIGN.md ("a report per loop (table + PNG plots: accuracy per iteration, score histograms, length drift)").
Every loop (Meta-Rewarding, Self-Taught Evaluator, RIP, ...) records one JSON object per finished iteration in
``RUN_DIR/iterations.jsonl``::

    {"iteration": 1, "metrics": {"judge_accuracy": 0.62, ...}, "histograms": {"score": [4, 5, 3, ...]},
     "notes": ["12 of 40 pairs kept"]}

(:func:`append_iteration` writes it atomically: the whole file is rewritten with ``sdk.artifacts.write_jsonl``,
and a record for an iteration already present replaces it, so a resumed loop never duplicates a row).
:func:`write_report` (CLI: ``loopwright report RUN_DIR``) writes ``RUN_DIR/report/report.md`` (the table, the
notes, links to the plots), ``metric_<name>.png`` (one line plot per metric across iterations) and
``hist_<name>_iter<k>.png`` (one histogram per histogram key per iteration). matplotlib (Agg backend) is
imported only when plots are drawn; ``plots=False`` writes the table alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .artifacts import atomic_write, iter_jsonl, write_jsonl
from .tracking import log_iteration

__all__ = ["ITERATIONS_FILE", "REPORT_DIR", "IterationRecord", "accuracy_record", "append_iteration",
           "read_iterations", "write_report"]

ITERATIONS_FILE = "iterations.jsonl"
REPORT_DIR = "report"


class IterationRecord(BaseModel):
    """One finished iteration of a loop (one line of ``iterations.jsonl``).

    ``metrics`` values are numbers, or ``None`` for "not measured" (shown as ``-``, left out of plots).
    """

    model_config = ConfigDict(extra="allow")

    iteration: int
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    intervals: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """95% intervals of some metrics (a :class:`~loopwright.sdk.stats.Interval` dumped), keyed by metric name:
    an accuracy carries its ``n`` and Wilson interval here (``accuracy_record``)."""
    histograms: dict[str, list[float]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def read_iterations(run_dir: str | Path) -> list[IterationRecord]:
    """The records of ``RUN_DIR/iterations.jsonl``, sorted by iteration.

    A missing file raises ``FileNotFoundError`` and a corrupt one ``ValueError``; both name the file (and line).
    """
    path = Path(run_dir) / ITERATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} has no per-iteration records (a loop writes one "
                                "line per finished iteration)")
    records: list[IterationRecord] = []
    for lineno, row in enumerate(iter_jsonl(path), 1):
        try:
            records.append(IterationRecord.model_validate(row))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "row"
            raise ValueError(f"{path}: record {lineno} is not an iteration record ({where}: {first['msg']})") from e
    return sorted(records, key=lambda r: r.iteration)


def append_iteration(run_dir: str | Path, record: IterationRecord | Mapping[str, Any]) -> Path:
    """Add (or replace, by ``iteration``) one record in ``RUN_DIR/iterations.jsonl``, rewriting it atomically;
    also to the tracker named by ``LOOPWRIGHT_REPORT_TO`` (:mod:`loopwright.sdk.tracking`)."""
    rec = record if isinstance(record, IterationRecord) else IterationRecord.model_validate(dict(record))
    path = Path(run_dir) / ITERATIONS_FILE
    rows = [r for r in read_iterations(run_dir) if r.iteration != rec.iteration] if path.is_file() else []
    rows.append(rec)
    rows.sort(key=lambda r: r.iteration)
    write_jsonl(path, (r.model_dump(mode="json") for r in rows))
    log_iteration(run_dir, rec.iteration, rec.metrics)  # LOOPWRIGHT_REPORT_TO=tensorboard (sdk/tracking.py)
    return path


def _fmt(v: float | int | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


def _metric_names(records: Sequence[IterationRecord]) -> list[str]:
    names: list[str] = []
    for r in records:
        names.extend(k for k in r.metrics if k not in names)
    return names


def _cell(r: IterationRecord, name: str) -> str:
    if name in r.intervals:
        from .stats import format_interval

        return format_interval(r.intervals[name])
    return _fmt(r.metrics.get(name))


def _table(records: Sequence[IterationRecord], names: Sequence[str]) -> list[str]:
    lines = ["| iteration | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in records:
        lines.append(f"| {r.iteration} | " + " | ".join(_cell(r, n) for n in names) + " |")
    if any(r.intervals for r in records):
        lines += ["", "Accuracies are shown as `estimate [95% Wilson interval] n=items`."]
    return lines


def accuracy_record(name: str, correct: int, n: int) -> dict[str, Any]:
    """``{"metrics": {name: correct/n, name+"_n": n}, "intervals": {name: Wilson 95%}}``: merge it into an
    iteration record so the report shows the accuracy with its ``n`` and interval."""
    from .stats import proportion_ci

    ci = proportion_ci(correct, n)
    return {"metrics": {name: ci.estimate, f"{name}_n": n}, "intervals": {name: ci.model_dump(mode="json")}}


def _plots(records: Sequence[IterationRecord], names: Sequence[str], out: Path) -> tuple[list[str], list[str]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    metric_files: list[str] = []
    for name in names:
        pts = [(r.iteration, r.metrics.get(name)) for r in records]
        pts = [(i, float(v)) for i, v in pts if v is not None and math.isfinite(float(v))]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        bars = [(r.iteration, r.intervals[name]) for r in records if name in r.intervals]
        bars = [(i, ci) for i, ci in bars if ci.get("lo") is not None and ci.get("hi") is not None]
        if bars:  # 95% intervals as error bars
            ax.errorbar([i for i, _ in bars], [ci["estimate"] for _, ci in bars],
                        yerr=[[ci["estimate"] - ci["lo"] for _, ci in bars], [ci["hi"] - ci["estimate"] for _, ci in bars]],
                        fmt="none", capsize=3, color="C0", alpha=0.7)
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.set_xticks(sorted({p[0] for p in pts}))
        ax.grid(alpha=0.3)
        fname = f"metric_{_safe(name)}.png"
        fig.tight_layout()
        _save(fig, out / fname)
        plt.close(fig)
        metric_files.append(fname)
    hist_files: list[str] = []
    for r in records:
        for key, values in r.histograms.items():
            vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
            if not vals:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.hist(vals, bins=min(30, max(5, len(set(vals)))))
            ax.set_xlabel(key)
            ax.set_ylabel("count")
            ax.set_title(f"{key}, iteration {r.iteration} (n={len(vals)})")
            fname = f"hist_{_safe(key)}_iter{r.iteration}.png"
            fig.tight_layout()
            _save(fig, out / fname)
            plt.close(fig)
            hist_files.append(fname)
    return metric_files, hist_files


def _save(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write(path, buf.getvalue())


def write_report(run_dir: str | Path, *, plots: bool = True, title: str | None = None) -> Path:
    """Write ``RUN_DIR/report/report.md`` and its PNG plots from ``RUN_DIR/iterations.jsonl``; returns the
    report's path. Errors name the file (see :func:`read_iterations`); an empty file gives an empty table."""
    run_dir = Path(run_dir)
    records = read_iterations(run_dir)
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    names = _metric_names(records)
    metric_files, hist_files = _plots(records, names, out) if plots and records else ([], [])
    lines = [f"# {title or 'Run report'}: {run_dir.name}", "",
             f"{len(records)} iteration(s) from `{ITERATIONS_FILE}`.", ""]
    lines += _table(records, names) if records else ["(no iterations recorded yet)"]
    notes = [(r.iteration, n) for r in records for n in r.notes]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- iteration {i}: {n}" for i, n in notes]
    if metric_files:
        lines += ["", "## Metrics across iterations", ""]
        lines += [f"![{f}]({f})" for f in metric_files]
    if hist_files:
        lines += ["", "## Histograms", ""]
        lines += [f"![{f}]({f})" for f in hist_files]
    path = out / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path
