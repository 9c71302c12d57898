"""The README's "Compose your own loop" block, run verbatim as a script, survives a SIGKILL (issue 15).

Run A: the block straight through. Run B: the same block, killed with SIGKILL at a seeded random moment after its
first iteration started sampling, then continued with ``loopwright resume runs/my-loop``, which re-runs the
script that started the loop (``LOOPWRIGHT_RESUME``). Every data artifact and ``iterations.jsonl`` of B must be
byte-identical to A's, nothing half-written may remain, and the block must stay at most 15 lines.
Real components: the sandbox seed model (transformers), the sandbox reward model, the RIP filter, TRL DPO.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
KILL_SEED = int(os.environ.get("README_LOOP_KILL_SEED", "20261206"))


def _block() -> str:
    section = README.read_text().split("## Compose your own loop", 1)[1].split("\n## ", 1)[0]
    return re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)


def test_the_readme_loop_is_short():
    lines = [ln for ln in _block().splitlines() if ln.strip()]
    assert len(lines) <= 15, f"the README loop grew to {len(lines)} lines"
    assert 'loop.run("runs/my-loop")' in _block()


def _data(run: Path) -> dict[str, bytes]:
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*.jsonl")}
    return files


@pytest.mark.timeout(600)
def test_readme_loop_resumes_after_sigkill_to_identical_artifacts(tmp_path):
    from loopwright.sdk.scratch import is_scratch_name

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOOPWRIGHT_RESUME", None)
    a, b = tmp_path / "A", tmp_path / "B"
    for d in (a, b):
        d.mkdir()
        (d / "loop.py").write_text(_block())
    proc_a = subprocess.Popen([sys.executable, "loop.py"], cwd=a, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    proc_b = subprocess.Popen([sys.executable, "loop.py"], cwd=b, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    delay = random.Random(KILL_SEED).uniform(0.0, 6.0)
    try:
        started = b / "runs/my-loop/iter_1/generate/samples.jsonl"
        deadline = time.monotonic() + 300
        while not started.exists():
            assert proc_b.poll() is None, "run B ended before its first iteration"
            assert time.monotonic() < deadline, "run B never reached iteration 1"
            time.sleep(0.05)
        time.sleep(delay)
        assert proc_b.poll() is None, f"run B finished within {delay:.2f} s; lower the delay"
        os.kill(proc_b.pid, signal.SIGKILL)
        proc_b.wait(timeout=30)
    finally:
        if proc_b.poll() is None:
            proc_b.kill()
    resumed = subprocess.run([sys.executable, "-m", "loopwright.sdk.cli", "resume", "runs/my-loop"], cwd=b,
                             env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "resuming the loop in runs/my-loop" in resumed.stdout
    out_a, _ = proc_a.communicate(timeout=400)
    assert proc_a.returncode == 0, out_a.decode(errors="replace")[-3000:]

    run_a, run_b = a / "runs/my-loop", b / "runs/my-loop"
    fa, fb = _data(run_a), _data(run_b)
    assert sorted(fa) == sorted(fb) and "iterations.jsonl" in fa and len(fa) >= 12
    assert [k for k in fa if fa[k] != fb[k]] == [], f"artifacts differ after a kill {delay:.2f} s into iteration 1"
    leftovers = [p for p in run_b.rglob("*") if is_scratch_name(p.name) or p.name.endswith(".tmp")]
    assert leftovers == []
    assert (run_b / "report/report.md").is_file()
    printed = [ln for ln in resumed.stdout.splitlines() if re.match(r"^[0-2] ", ln)]
    assert [ln.split()[0] for ln in printed] == ["0", "1", "2"]  # the script's own output, from the resumed run
