"""Several runs side by side: per-run metrics with intervals, and per-arm means over seeds (``loopwright compare``).

A comparison in a paper is "arm A vs arm B over seeds", not one run against another. :func:`compare_runs` reads
``iterations.jsonl`` of every run, groups runs into arms (``LABEL=RUN_DIR`` arguments, or the run folder's name
with a trailing ``-seedN`` / ``_seedN`` removed), and writes ``compare.md`` with

- one row per run: each metric at the first and the last iteration (with its 95% Wilson interval where the run
  recorded one);
- one row per arm: the mean over seeds of the first and last value and of the gain (last - first, paired per
  seed), each with its 95% Student-t interval and the number of seeds;

plus one PNG per metric (arm mean per iteration with a 95% band over seeds). Intervals come from
:mod:`loopwright.sdk.stats`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .artifacts import atomic_write
from .report import IterationRecord, read_iterations
from .stats import Interval, format_interval, mean_ci

__all__ = ["arm_label", "compare_runs", "parse_run_arg"]

_SEED_SUFFIX = re.compile(r"[-_](?:seed|s)\d+$")


def arm_label(run_dir: Path) -> str:
    """The default arm of a run: its folder name without a trailing ``-seedN`` / ``_seedN`` / ``-sN``."""
    return _SEED_SUFFIX.sub("", run_dir.name) or run_dir.name


def parse_run_arg(arg: str) -> tuple[str, Path]:
    """``LABEL=RUN_DIR`` or ``RUN_DIR`` -> ``(label, path)``."""
    label, sep, path = arg.partition("=")
    if sep and label and not Path(arg).exists():
        return label, Path(path)
    p = Path(arg)
    return arm_label(p), p


def _value(r: IterationRecord, name: str) -> float | None:
    v = r.metrics.get(name)
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return None
    return float(v)


def _cell(r: IterationRecord | None, name: str) -> str:
    if r is None:
        return "-"
    if name in r.intervals:
        return format_interval(r.intervals[name])
    v = _value(r, name)
    return "-" if v is None else f"{v:.4g}"


def _ci_cell(values: Sequence[float]) -> str:
    return format_interval(mean_ci(values)) if values else "-"


def compare_runs(runs: Sequence[str | Path | tuple[str, str | Path]], out: str | Path, *,
                 metrics: Sequence[str] | None = None, plots: bool = True) -> Path:
    """Write ``OUT/compare.md`` (and PNGs) comparing ``runs``; returns the path of ``compare.md``.

    ``runs`` items are run folders, ``"LABEL=RUN_DIR"`` strings or ``(label, run_dir)`` pairs. ``metrics``
    defaults to every metric any run recorded, except the ``*_n`` item counts.
    """
    if not runs:
        raise ValueError("compare needs at least one run folder")
    parsed: list[tuple[str, Path]] = []
    for item in runs:
        if isinstance(item, tuple):
            parsed.append((item[0], Path(item[1])))
        else:
            parsed.append(parse_run_arg(str(item)))
    records: dict[Path, list[IterationRecord]] = {}
    for _, path in parsed:
        if not path.is_dir():
            raise FileNotFoundError(f"no run folder at {path}")
        records[path] = read_iterations(path)
    names: list[str] = list(metrics or [])
    if not names:
        for recs in records.values():
            for r in recs:
                names.extend(k for k in r.metrics if k not in names and not k.endswith("_n"))
    arms: dict[str, list[Path]] = {}
    for label, path in parsed:
        arms.setdefault(label, []).append(path)

    lines = [f"# Comparison of {len(parsed)} run(s) in {len(arms)} arm(s)", ""]
    for name in names:
        lines += [f"## {name}", "", "| arm | run | first iteration | last iteration |", "|---|---|---|---|"]
        for label, path in parsed:
            recs = [r for r in records[path] if _value(r, name) is not None]
            first, last = (recs[0], recs[-1]) if recs else (None, None)
            it = f" ({first.iteration} -> {last.iteration})" if first and last else ""
            lines.append(f"| {label} | {path}{it} | {_cell(first, name)} | {_cell(last, name)} |")
        lines += ["", "| arm | seeds | first (mean, 95% t) | last (mean, 95% t) | gain last - first (paired) |",
                  "|---|---|---|---|---|"]
        for label, paths in arms.items():
            firsts, lasts, gains = [], [], []
            for p in paths:
                vals = [v for r in records[p] if (v := _value(r, name)) is not None]
                if vals:
                    firsts.append(vals[0])
                    lasts.append(vals[-1])
                    gains.append(vals[-1] - vals[0])
            lines.append(f"| {label} | {len(lasts)} | {_ci_cell(firsts)} | {_ci_cell(lasts)} | {_ci_cell(gains)} |")
        lines.append("")
    lines += ["Run rows: `estimate [95% Wilson interval] n=items` where the run recorded one. Arm rows: mean over "
              "seeds `[95% Student-t interval] n=seeds` (no interval with one seed)."]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        files = _plots(arms, records, names, out)
        if files:
            lines += ["", "## Plots", ""] + [f"![{f}]({f})" for f in files]
    path = out / "compare.md"
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def arm_curves(arms: dict[str, list[Path]], records: dict[Path, list[IterationRecord]],
               name: str) -> dict[str, list[tuple[int, Interval]]]:
    """Per arm, the mean over seeds of ``name`` at each iteration, with its t interval."""
    curves: dict[str, list[tuple[int, Interval]]] = {}
    for label, paths in arms.items():
        by_it: dict[int, list[float]] = {}
        for p in paths:
            for r in records[p]:
                v = _value(r, name)
                if v is not None:
                    by_it.setdefault(r.iteration, []).append(v)
        curves[label] = [(it, mean_ci(vs)) for it, vs in sorted(by_it.items())]
    return curves


def _plots(arms: dict[str, list[Path]], records: dict[Path, list[IterationRecord]], names: Sequence[str],
           out: Path) -> list[str]:
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    files: list[str] = []
    for name in names:
        curves = arm_curves(arms, records, name)
        if not any(curves.values()):
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for label, pts in curves.items():
            if not pts:
                continue
            xs = [i for i, _ in pts]
            ax.plot(xs, [ci.estimate for _, ci in pts], marker="o", label=f"{label} (seeds={max(c.n for _, c in pts)})")
            band = [(i, ci) for i, ci in pts if ci.lo is not None]
            if band:
                ax.fill_between([i for i, _ in band], [c.lo for _, c in band], [c.hi for _, c in band], alpha=0.2)
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.set_title(f"{name}: mean over seeds, 95% t band")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fname = "compare_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric") + ".png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        atomic_write(out / fname, buf.getvalue())
        files.append(fname)
    return files


def summary_rows(path: Path) -> list[dict[str, Any]]:  # pragma: no cover - convenience for notebooks
    """The per-iteration records of one run as plain dicts."""
    return [r.model_dump(mode="json") for r in read_iterations(path)]
