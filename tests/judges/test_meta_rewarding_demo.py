"""The Meta-Rewarding demo script, small (``-m slow``): it runs end to end on the sandbox, writes one record per
iteration plus the report, and with the model as its own judge (invalid verdicts) it stops with exit code 3."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "meta_rewarding.py"


def _example():
    spec = importlib.util.spec_from_file_location("meta_rewarding_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_demo_runs_small_and_resume_is_a_no_op(seed_model_dir, tmp_path):
    ex = _example()
    args = ["--iterations", "2", "--prompts", "12", "--K", "3", "--N", "3", "--run-dir", str(tmp_path / "run"),
            "--quiet"]
    assert ex.main(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[1]["metrics"]["actor_pairs"] > 0 and rows[1]["metrics"]["judge_pairs"] > 0
    assert 0.0 <= rows[2]["metrics"]["eval_accuracy"] <= 1.0
    assert (tmp_path / "run" / "report" / "report.md").is_file()
    before = (tmp_path / "run" / "iterations.jsonl").read_bytes()
    assert ex.main([*args, "--resume"]) == 0  # a finished run resumes as a no-op
    assert (tmp_path / "run" / "iterations.jsonl").read_bytes() == before


@pytest.mark.slow
def test_demo_with_the_sandbox_model_as_its_own_judge_stops_clearly(seed_model_dir, tmp_path, capsys):
    ex = _example()
    code = ex.main(["--iterations", "1", "--prompts", "4", "--K", "2", "--N", "2", "--judge", "self",
                    "--run-dir", str(tmp_path / "run"), "--quiet"])
    assert code == 3
    assert "0 usable preference pairs" in capsys.readouterr().err
