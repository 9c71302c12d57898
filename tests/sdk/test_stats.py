"""Intervals for reported numbers (issue 13): Wilson for one run's accuracy, Student-t over seeds, paired and
Welch differences, checked against textbook values and scipy; and `loopwright compare` over seeded runs."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from loopwright.sdk.report import accuracy_record, append_iteration
from loopwright.sdk.stats import difference_ci, format_interval, mean_ci, proportion_ci


def test_wilson_matches_the_closed_form():
    ci = proportion_ci(29, 200)
    z, p, n = 1.959963984540054, 29 / 200, 200
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert (ci.lo, ci.hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert ci.estimate == 0.145 and ci.n == 200 and ci.successes == 29
    zero = proportion_ci(0, 10)  # Wald would collapse to [0, 0]; Wilson does not
    assert zero.lo == 0 and zero.hi == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError, match="n >= 1"):
        proportion_ci(0, 0)
    with pytest.raises(ValueError, match="successes <= n"):
        proportion_ci(5, 3)


def test_t_interval_over_seeds():
    ci = mean_ci([0.10, 0.14, 0.12])
    assert ci.estimate == pytest.approx(0.12) and ci.n == 3
    assert ci.half_width == pytest.approx(4.302652729911275 * 0.02 / math.sqrt(3), rel=1e-9)
    one = mean_ci([0.5])
    assert one.lo is None and format_interval(one) == "0.500 n=1"
    assert format_interval(ci) == "0.120 [0.070, 0.170] n=3"
    assert not ci.excludes(0.1) and ci.excludes(0.2)


def test_differences_paired_and_welch():
    a, b = [0.30, 0.34, 0.32], [0.10, 0.15, 0.11]
    paired = difference_ci(a, b)
    assert paired.method == "paired-t" and paired.estimate == pytest.approx(0.2) and paired.excludes(0.0)
    welch = difference_ci(a, b, paired=False)
    assert welch.method == "welch-t" and welch.estimate == pytest.approx(0.2) and welch.lo < paired.hi
    with pytest.raises(ValueError, match="equal lengths"):
        difference_ci([1, 2], [1])


def test_compare_reports_per_arm_means_with_intervals(tmp_path):
    from loopwright.sdk.cli import app

    runs = []
    for arm, accs in {"oracle": [(20, 40), (21, 45), (19, 41)], "random": [(20, 21), (21, 20), (19, 19)]}.items():
        for seed, (first, last) in enumerate(accs):
            run = tmp_path / f"{arm}-s{seed}"
            run.mkdir()
            for it, k in enumerate((first, last)):
                append_iteration(run, {"iteration": it, **accuracy_record("accuracy", k, 100)})
            runs.append(f"{arm}={run}")
    result = CliRunner().invoke(app, ["compare", *runs, "--out", str(tmp_path / "cmp"), "--no-plots"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| oracle | 3 |" in text and "| random | 3 |" in text
    oracle_row = next(line for line in text.splitlines() if line.startswith("| oracle | 3 |"))
    assert "0.220 [" in oracle_row  # the paired gain (mean of 0.20, 0.24, 0.22) with its interval
    assert "[0.1" in text  # per-run Wilson intervals on the run rows (0.200 [0.133, 0.289] n=100)
    bad = CliRunner().invoke(app, ["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "nope" in bad.output
