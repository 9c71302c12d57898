"""The PathFinder demo (examples/pathfinder_miniarith.py) end to end, small: tables come out with the equal-budget
rule respected and the GSM8K selector accuracies ordered as they must be (oracle >= every selector)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pathfinder_miniarith.py"


@pytest.mark.slow
def test_demo_runs_small(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("pathfinder_demo", EXAMPLE)
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = demo.main(["--n-problems", "4", "--gsm8k-limit", "60", "--budget-samples", "8",
                     "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file()
    rows = {r["method"].split(" (")[0].split(",")[0]: r for r in out["miniarith"]}
    assert set(rows) >= {"greedy", "self-consistency", "PathFinder"}
    budget = out["budget_tokens_per_problem"]
    for r in out["miniarith"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] == 4
        if r["method"].startswith("PathFinder"):
            assert r["completion_tokens_per_problem"] <= budget
    sel = {r["selector"]: r["accuracy"] for r in out["gsm8k_selectors"]}
    oracle = sel.pop("oracle (any solution correct)")
    assert all(acc <= oracle for acc in sel.values())
    assert sel["majority vote"] == sel["buddy (answer equality)"]
    pf_sel = {r["selector"]: r["accuracy"] for r in out["pathfinder_selectors"]}
    assert all(acc <= pf_sel["oracle (any candidate correct)"] for acc in pf_sel.values())
