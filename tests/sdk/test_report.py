"""sdk/report.py and ``loopwright report``: table + PNG plots from iterations.jsonl; clear errors on bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loopwright.sdk.cli import app
from loopwright.sdk.report import append_iteration, read_iterations, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fill(run_dir):
    append_iteration(run_dir, {"iteration": 0, "metrics": {"judge_accuracy": 0.5, "kept": 0},
                               "notes": ["seed judge"]})
    append_iteration(run_dir, {"iteration": 1, "metrics": {"judge_accuracy": 0.625, "kept": 12, "loss": None},
                               "histograms": {"length": [3, 4, 4, 5, 9]}, "notes": ["12 pairs kept"]})
    append_iteration(run_dir, {"iteration": 2, "metrics": {"judge_accuracy": 0.75, "kept": 20, "loss": 0.31},
                               "histograms": {"length": [4, 4, 5, 5]}})


def test_report_writes_table_notes_and_pngs(tmp_path):
    _fill(tmp_path)
    # replacing an iteration (a resumed loop) does not duplicate it
    append_iteration(tmp_path, {"iteration": 2, "metrics": {"judge_accuracy": 0.8, "kept": 20, "loss": 0.3},
                                "histograms": {"length": [4, 4, 5, 5]}})
    assert [r.iteration for r in read_iterations(tmp_path)] == [0, 1, 2]
    assert len((tmp_path / "iterations.jsonl").read_text().splitlines()) == 3
    path = write_report(tmp_path)
    assert path == tmp_path / "report" / "report.md"
    text = path.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| iteration")]
    assert rows == ["| 0 | 0.5 | 0 | - |", "| 1 | 0.625 | 12 | - |", "| 2 | 0.8 | 20 | 0.3 |"]
    assert "| iteration | judge_accuracy | kept | loss |" in text
    assert "iteration 0: seed judge" in text and "iteration 1: 12 pairs kept" in text
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == ["hist_length_iter1.png", "hist_length_iter2.png", "metric_judge_accuracy.png",
                    "metric_kept.png", "metric_loss.png"]
    for name in pngs:
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG_MAGIC
        assert f"({name})" in text


def test_cli_report_and_clear_errors_naming_the_file(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "iterations.jsonl" in missing.output and str(tmp_path) in missing.output
    with pytest.raises(FileNotFoundError, match="iterations.jsonl"):
        write_report(tmp_path)

    (tmp_path / "iterations.jsonl").write_text(json.dumps({"iteration": 0, "metrics": {}}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"iterations.jsonl:2"):
        write_report(tmp_path)
    (tmp_path / "iterations.jsonl").write_text(json.dumps({"metrics": {"a": 1}}) + "\n")
    with pytest.raises(ValueError, match=r"iterations.jsonl: record 1 .*iteration"):
        write_report(tmp_path)
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "iterations.jsonl" in bad.output

    (tmp_path / "iterations.jsonl").unlink()
    _fill(tmp_path)
    ok = runner.invoke(app, ["report", str(tmp_path), "--no-plots"])
    assert ok.exit_code == 0, ok.output
    assert "report.md" in ok.output and not list((tmp_path / "report").glob("*.png"))
    assert "| 2 | 0.75 | 20 | 0.31 |" in (tmp_path / "report" / "report.md").read_text()
