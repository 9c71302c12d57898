"""Durable stages: a run killed mid-stage resumes from its last completed stage with the same artifacts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from loopwright.sdk.artifacts import RunDir, atomic_write
    from loopwright.sdk.stages import Stage, run_stages

    run_dir, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
    log = run_dir.parent / "executions.log"

    def stage(name, die=False):
        def fn(state, run):
            with open(log, "a") as f:
                f.write(name + "\\n")
            if die and not (run_dir.parent / "survive").exists():
                os._exit(9)                       # a hard kill: no cleanup, no exception handling
            out = run.path / f"{name}.txt"
            atomic_write(out, name + ":" + ",".join(sorted(state["artifacts"])))
            return {"artifacts": {name: str(out)}, "metrics": {f"{name}_done": 1}}
        return fn

    run = RunDir(run_dir, config={"demo": True})
    final = run_stages([Stage("a", stage("a")), Stage("b", stage("b", die=True)), Stage("c", stage("c"))],
                       run, resume=resume)
    print(sorted(final["completed"]))
    """
)


def _run(tmp_path, mode):
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run"), mode], capture_output=True,
                          text=True, timeout=120)


def test_killed_run_resumes_from_last_completed_stage(tmp_path):
    first = _run(tmp_path, "start")
    assert first.returncode == 9, first.stderr
    assert (tmp_path / "run" / "a.txt").exists() and not (tmp_path / "run" / "c.txt").exists()

    (tmp_path / "survive").touch()
    second = _run(tmp_path, "resume")
    assert second.returncode == 0, second.stderr
    assert "['a', 'b', 'c']" in second.stdout
    executions = (tmp_path / "executions.log").read_text().split()
    assert executions == ["a", "b", "b", "c"], "stage a must not re-run; b re-runs once after the kill"
    assert (tmp_path / "run" / "c.txt").read_text() == "c:a,b"

    third = _run(tmp_path, "resume")  # resuming a finished run is a no-op
    assert third.returncode == 0 and (tmp_path / "executions.log").read_text().split() == executions


def test_refuses_to_overwrite_an_existing_run(tmp_path):
    (tmp_path / "survive").touch()
    assert _run(tmp_path, "start").returncode == 0
    again = _run(tmp_path, "start")
    assert again.returncode != 0 and "resume" in again.stderr


def test_duplicate_stage_names_rejected(tmp_path):
    from loopwright.sdk.stages import Stage, run_stages

    with pytest.raises(ValueError, match="unique"):
        run_stages([Stage("x", lambda s, r: None), Stage("x", lambda s, r: None)], run=None)
