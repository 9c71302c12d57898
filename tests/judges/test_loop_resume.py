"""Kill a Meta-Rewarding loop with SIGKILL, resume it, and compare with an uninterrupted run.

Issue 5 item 4 and issue 17 item 15. Each test runs the same tiny real loop (the sandbox seed model through
transformers, the verifiable-signal judge and meta-judge, TRL DPO for 2 steps, 2 iterations = 13 durable stages)
in subprocesses: run A straight through, run B killed with SIGKILL from outside and resumed in a fresh process.

- ``test_kill_and_resume_matches_uninterrupted_run``: B is killed once, when a (seeded) random stage starts (the
  driver's ``on_stage`` hook writes a marker and sleeps there), then resumed to the end by ``loopwright resume B``
  (which re-runs this driver script).
- ``test_kills_at_random_wall_clock_moments_match_uninterrupted_run``: B is killed at seeded random wall-clock
  moments *inside* stages: a seeded random delay after a seeded random stage (a ``generate`` or a ``train`` stage,
  which writes TRL scratch folders) appears in B's log (the hook only logs). Twice: kill, resume and kill the
  resumed process again, then resume to the end. A kill that comes after the process has finished is recorded,
  not counted; at least one must hit a running process (the first one always targets iteration 1, seconds before
  the end).

Checked after the last resume:

- every data artifact (``iter*/*.jsonl``, ``iterations.jsonl``) of B is byte-identical to A's;
- the trained weights of both iterations are equal within an absolute tolerance of 1e-6 (fp32, one thread; in
  practice they are bit-identical: same data, same seeds, same order);
- no stage completed before a kill is redone: each resumed process starts exactly at the first stage the manifest
  does not record as done, and the finished stages keep their manifest records (start and end times) untouched;
- nothing is half-written or left over: no temporary files and no scratch folders
  (:func:`~loopwright.sdk.scratch.is_scratch_name`) remain, every JSONL parses, every model folder passes
  ``check_model_dir`` (header and size of the safetensors file);
- the scratch folders and temporary files (of an atomic write cut short) a kill left behind are exactly the ones
  the resumes list in the manifest's ``meta.stale_scratch_removed`` (none when the kills come at stage starts).

This file is also the driver: ``python test_loop_resume.py RUN_DIR SEED_MODEL [--resume]``, with the environment
variables ``MR_LOG`` (append each started stage's name), ``MR_KILL_AT`` and ``MR_MARKER`` (at that stage's start,
write the marker and sleep) and ``MR_LOG_ONLY=1`` (the hook only logs, never sleeps).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

STAGE_NAMES = ["iter0.evaluate"] + [f"iter{t}.{s}" for t in (1, 2)
                                    for s in ("generate", "judge", "meta_judge", "build_pairs", "train", "evaluate")]
KILL_SEED = 20261132
"""Seeds the choice of the stage to kill (``MR_RESUME_KILL_SEED`` overrides it, to try other stages)."""
WALLCLOCK_SEED = 20261715
"""Seeds the wall-clock kills: targets and delays (``MR_RESUME_WALLCLOCK_SEED`` overrides it)."""
WALLCLOCK_TARGETS = {"iter1.generate": 2.5, "iter1.train": 2.5, "iter2.generate": 1.5, "iter2.train": 1.2}
"""Stage whose start (in B's log) arms a wall-clock kill -> the largest delay drawn (uniform from 0, seconds).

On 2 CPU cores ``iter1.train`` lasts about 3 s, ``iter2.train`` about 1.3 s (its scratch folders exist for
most of that), a ``generate`` stage 0.2 s and the judge/pairs stages a few ms, ``iter2.evaluate`` 0.3 s: the
delays are chosen so that a kill usually lands inside the target's stage or the train stage after it, and
rarely after the end of the run."""
WEIGHT_ATOL = 1e-6


def _driver(run_dir: str, seed_model: str, resume: bool) -> None:
    import torch

    from loopwright.judges.meta_rewarding import MetaRewardingLoop, sandbox_config
    from loopwright.judges.meta_rewarding.sandbox import MiniArithEval, verifier_judge, verifier_meta_judge
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.tasks.miniarith import generate_problems
    from loopwright.trainers.sandbox.seed import SANDBOX_TASK, miniarith_prompt

    torch.set_num_threads(1)
    cfg = sandbox_config(
        iterations=2, prompts_per_iter=4, actor={"K": 3, "max_tokens": 32}, judge={"N": 3},
        meta_judge={"max_judgements": 3}, dpo={"max_steps": 2, "batch_size": 4, "max_length": 256},
        eval={"n_problems": 4, "n_anchor": 2, "max_tokens": 32, "anchor_max_tokens": 16},
    )
    problems = generate_problems(14, SANDBOX_TASK.model_copy(update={"seed": 4242}))
    kill_at, marker, log = os.environ.get("MR_KILL_AT"), os.environ.get("MR_MARKER"), os.environ.get("MR_LOG")
    if os.environ.get("MR_LOG_ONLY") == "1":
        kill_at = None

    def on_stage(name: str) -> None:
        if log:
            with open(log, "a") as f:
                f.write(name + "\n")
        if name == kill_at and marker:
            Path(marker).write_text(name)
            time.sleep(600)  # wait here for the SIGKILL

    loop = MetaRewardingLoop(
        cfg, run_dir, seed_model=seed_model, prompts=[miniarith_prompt(p) for p in problems[6:]],
        generator_factory=lambda d: TransformersGenerator(d, batch_size=16),
        judge=verifier_judge(problems), meta_judge=verifier_meta_judge(problems),
        evaluator=MiniArithEval(problems[:4], problems[4:6], max_tokens=32, anchor_max_tokens=16),
        on_stage=on_stage,
    )
    loop.run(resume=resume)


# ------------------------------------------------------------------------------------------- shared helpers


def _start(run_dir: Path, seed_model: Path, *, resume: bool = False, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, str(run_dir), str(seed_model)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}"


def _stop(*procs: subprocess.Popen) -> None:
    """Kill what is still running (a failed test must not leave a loop behind on the CPUs)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _stages(run: Path) -> dict[str, dict]:
    return json.loads((run / "manifest.json").read_text())["stages"]


def _todo(stages: dict[str, dict]) -> list[str]:
    """The stages a resume runs, in order: from the first one the manifest does not record as done."""
    done = [k for k in STAGE_NAMES if stages.get(k, {}).get("status") == "done"]
    assert done == STAGE_NAMES[: len(done)], f"done stages are not a prefix of the pipeline: {done}"
    return STAGE_NAMES[len(done):]


def _log_lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _scratch_dirs(root: Path) -> list[str]:
    """Scratch folders under ``root`` (relative paths), not descending into them, as the resume sweeps them."""
    from loopwright.sdk.scratch import is_scratch_name

    found = []
    for parent, dirnames, _ in os.walk(root):
        scratch = {d for d in dirnames if is_scratch_name(d) and not (Path(parent) / d).is_symlink()}
        found += [(Path(parent) / d).relative_to(root).as_posix() for d in sorted(scratch)]
        dirnames[:] = [d for d in dirnames if d not in scratch]
    return found


def _tmp_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.tmp"))


def _data_files(run: Path) -> dict[str, bytes]:
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.glob("iter*/*.jsonl")}
    files["iterations.jsonl"] = (run / "iterations.jsonl").read_bytes()
    return files


def _check_same_as_uninterrupted(a_dir: Path, b_dir: Path, what: str) -> None:
    """B (killed and resumed) against A (uninterrupted): same artifacts and weights, nothing half-written or left."""
    from safetensors.torch import load_file

    from loopwright.judges.meta_rewarding.checkpoints import check_model_dir
    from loopwright.sdk.artifacts import read_jsonl

    after = _stages(b_dir)
    assert all(after[k]["status"] == "done" for k in STAGE_NAMES), {k: v["status"] for k, v in after.items()}

    # same data artifacts, byte for byte
    a_files, b_files = _data_files(a_dir), _data_files(b_dir)
    assert sorted(a_files) == sorted(b_files) and len(a_files) >= 20
    diff = [name for name in a_files if a_files[name] != b_files[name]]
    assert not diff, f"artifacts differ after resume ({what}): {diff}"

    # same weights (tolerance 1e-6); every model folder is complete
    assert sorted(p.relative_to(b_dir).as_posix() for p in b_dir.rglob("model") if p.is_dir()) == \
        ["iter1/model", "iter2/model"]
    for t in (1, 2):
        wa = load_file(str(check_model_dir(a_dir / f"iter{t}" / "model") / "model.safetensors"))
        wb = load_file(str(check_model_dir(b_dir / f"iter{t}" / "model") / "model.safetensors"))
        assert wa.keys() == wb.keys()
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        assert worst <= WEIGHT_ATOL, f"iteration {t} weights differ by {worst} ({what})"

    # nothing half-written, nothing left over
    assert not _tmp_files(b_dir), _tmp_files(b_dir)
    assert not _scratch_dirs(b_dir), _scratch_dirs(b_dir)
    for p in b_dir.rglob("*.jsonl"):
        read_jsonl(p)
    assert len(read_jsonl(b_dir / "iterations.jsonl")) == 3
    assert (b_dir / "report" / "report.md").is_file()


# ------------------------------------------------------------------------------------------- kill at a stage start


def test_kill_and_resume_matches_uninterrupted_run(seed_model_dir, tmp_path):
    seed = int(os.environ.get("MR_RESUME_KILL_SEED", KILL_SEED))
    target = random.Random(seed).choice(STAGE_NAMES)
    a_dir, b_dir, marker, log = tmp_path / "A", tmp_path / "B", tmp_path / "killed.marker", tmp_path / "B.log"
    proc_a = _start(a_dir, seed_model_dir)
    proc_b = _start(b_dir, seed_model_dir, MR_KILL_AT=target, MR_MARKER=str(marker), MR_LOG=str(log))
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc_b.poll() is None, f"run B exited before reaching {target}: {proc_b.communicate()[0][-2000:]!r}"
            assert time.monotonic() < deadline, f"run B never reached {target}"
            time.sleep(0.05)
        os.kill(proc_b.pid, signal.SIGKILL)
        proc_b.communicate(timeout=30)
        assert proc_b.returncode == -signal.SIGKILL
    finally:
        _stop(proc_b)
    try:
        before = _stages(b_dir)
        assert before[target]["status"] == "running", f"killed in {target}"
        done_before = {k: v for k, v in before.items() if v["status"] == "done"}
        assert set(done_before) == set(STAGE_NAMES[: STAGE_NAMES.index(target)])
        assert not _scratch_dirs(b_dir), "a kill at a stage start leaves no scratch folder"

        log.write_text("")  # resumed by the CLI, which re-runs this driver with LOOPWRIGHT_RESUME set
        cli = [sys.executable, "-m", "loopwright.sdk.cli", "resume", str(b_dir)]
        _finish(subprocess.Popen(cli, env={**os.environ, "MR_LOG": str(log)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT), "run B resumed by `loopwright resume`")
        _finish(proc_a, "uninterrupted run A")
    finally:
        _stop(proc_a)

    # no completed stage is redone: the resumed process started the killed stage and everything after it, only
    assert _log_lines(log) == STAGE_NAMES[STAGE_NAMES.index(target):]
    after = _stages(b_dir)
    for k, rec in done_before.items():
        assert after[k]["started_at"] == rec["started_at"] and after[k]["ended_at"] == rec["ended_at"], k
    _check_same_as_uninterrupted(a_dir, b_dir, f"killed at the start of {target}")
    assert "stale_scratch_removed" not in json.loads((b_dir / "manifest.json").read_text()).get("meta", {})


# ------------------------------------------------------------------------------------------- kill at wall-clock moments


@dataclass
class _Kill:
    """One wall-clock kill of run B: what was aimed at and what it hit."""

    target: str
    delay: float
    hit: bool = False  # the SIGKILL reached a running process (not one that had already finished)
    landed: str = ""  # the stage running at the kill (``"between stages"``, ``"after the last stage"``)
    into_stage_s: float | None = None  # how far into that stage
    scratch: list[str] = field(default_factory=list)  # scratch folders right after the kill
    tmp: list[str] = field(default_factory=list)  # temporary files right after the kill

    def __str__(self) -> str:
        if not self.hit:
            return f"{self.target}+{self.delay:.2f}s: missed (the process had finished)"
        into = f" {self.into_stage_s:.2f}s in" if self.into_stage_s is not None else ""
        return (f"{self.target}+{self.delay:.2f}s: killed in {self.landed}{into}; scratch {self.scratch or '-'}"
                f"; tmp {self.tmp or '-'}")


def _kill_after(proc: subprocess.Popen, log: Path, kill: _Kill, run: Path, timeout: float = 240) -> None:
    """Wait until ``kill.target`` appears in ``log``, sleep ``kill.delay``, SIGKILL ``proc``; record the outcome."""
    deadline = time.monotonic() + timeout
    while kill.target not in _log_lines(log):
        if proc.poll() is not None:
            out = proc.communicate()[0].decode(errors="replace")[-3000:]
            raise AssertionError(f"run B exited ({proc.returncode}) before reaching {kill.target}:\n{out}")
        assert time.monotonic() < deadline, f"run B never reached {kill.target}"
        time.sleep(0.01)
    time.sleep(kill.delay)
    killed_at = time.time()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # may still race a normal exit: the return code tells
    out = proc.communicate(timeout=60)[0].decode(errors="replace")[-3000:]
    assert proc.returncode in (0, -signal.SIGKILL), f"run B failed ({proc.returncode}):\n{out}"
    kill.hit = proc.returncode == -signal.SIGKILL
    if not kill.hit:
        return
    stages = _stages(run)
    running = [k for k, v in stages.items() if v["status"] == "running"]
    assert len(running) <= 1 and all(v["status"] in ("done", "running") for v in stages.values()), stages
    if running:
        kill.landed = running[0]
        started = dt.datetime.fromisoformat(stages[running[0]]["started_at"]).timestamp()
        kill.into_stage_s = killed_at - started
    else:
        kill.landed = "between stages" if _todo(stages) else "after the last stage"
    kill.scratch, kill.tmp = _scratch_dirs(run), _tmp_files(run)


def test_kills_at_random_wall_clock_moments_match_uninterrupted_run(seed_model_dir, tmp_path):
    seed = int(os.environ.get("MR_RESUME_WALLCLOCK_SEED", WALLCLOCK_SEED))
    rng = random.Random(seed)
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    proc_a = _start(a_dir, seed_model_dir)
    kills: list[_Kill] = []
    done_records: dict[str, tuple[str, str]] = {}  # stage -> (started_at, ended_at), once a snapshot saw it done
    try:
        for n in range(2):  # kill the first process, then the first resumed one
            todo = _todo(_stages(b_dir)) if n else STAGE_NAMES
            if not todo:  # an earlier kill came after the end: nothing left to kill
                break
            # the first kill aims at iteration 1, seconds before the end: it always hits a running process
            targets = [s for s in WALLCLOCK_TARGETS if s in todo and (n or s.startswith("iter1."))] or todo[:1]
            target = rng.choice(targets)
            kill = _Kill(target, rng.uniform(0, WALLCLOCK_TARGETS.get(target, 0.5)))
            log = tmp_path / f"B{n}.log"
            proc = _start(b_dir, seed_model_dir, resume=n > 0, MR_LOG=str(log), MR_LOG_ONLY="1")
            try:
                _kill_after(proc, log, kill, b_dir)
            finally:
                _stop(proc)
            kills.append(kill)
            print(f"seed {seed}, kill {n + 1}: {kill}")
            # this process started at the first stage not done before it and ran the pipeline in order
            ran = _log_lines(log)
            assert ran == todo[: len(ran)] and ran, (kill, ran, todo)
            if not kill.hit:
                assert ran == todo, (kill, ran, todo)
            for k, rec in _stages(b_dir).items():
                if rec["status"] == "done":
                    assert done_records.setdefault(k, (rec["started_at"], rec["ended_at"])) == \
                        (rec["started_at"], rec["ended_at"]), f"{k} was redone ({kill})"

        todo = _todo(_stages(b_dir))
        log = tmp_path / "B-final.log"
        _finish(_start(b_dir, seed_model_dir, resume=True, MR_LOG=str(log), MR_LOG_ONLY="1"), "last resume of B")
        _finish(proc_a, "uninterrupted run A")
    finally:
        _stop(proc_a)

    what = f"seed {seed}: " + "; ".join(map(str, kills))
    assert any(k.hit for k in kills), f"no kill hit a running process: {what}"
    assert _log_lines(log) == todo, what  # the last resume redid nothing
    after = _stages(b_dir)
    for k, (started, ended) in done_records.items():
        assert (after[k]["started_at"], after[k]["ended_at"]) == (started, ended), f"{k} was redone ({what})"
    _check_same_as_uninterrupted(a_dir, b_dir, what)

    # the scratch folders and temporary files the kills left are exactly the ones the resumes removed and recorded
    removed = json.loads((b_dir / "manifest.json").read_text()).get("meta", {}).get("stale_scratch_removed", [])
    left = [s for k in kills for s in k.scratch] + [
        t for k in kills for t in k.tmp if not any(t.startswith(s + "/") for s in k.scratch)]  # not in a folder
    assert Counter(removed) == Counter(left), what


if __name__ == "__main__":
    _driver(sys.argv[1], sys.argv[2], resume="--resume" in sys.argv[3:])
