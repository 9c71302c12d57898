"""Kill a Meta-Rewarding loop with SIGKILL at a (seeded) random stage, resume it, and compare with an uninterrupted run.

Issue 5 item 4. Two subprocesses run the same tiny real loop (the sandbox seed model through transformers, the
verifiable-signal judge and meta-judge, TRL DPO for 2 steps, 2 iterations = 13 durable stages): run A straight
through, run B killed with SIGKILL when the chosen stage starts (the driver's ``on_stage`` hook writes a marker and
sleeps; the test kills it from outside) and then resumed in a fresh process. Checked:

- every data artifact (``iter*/*.jsonl``, ``iterations.jsonl``) of B is byte-identical to A's;
- the trained weights of both iterations are equal within an absolute tolerance of 1e-6 (fp32, one thread; in
  practice they are bit-identical: same data, same seeds, same order);
- no stage completed before the kill is redone: the resumed process starts exactly the interrupted stage and the
  ones after it, and the finished stages keep their manifest records (start times) untouched;
- nothing is half-written: no temporary files remain, every JSONL parses, every model folder passes
  ``check_model_dir`` (header and size of the safetensors file).

This file is also the driver: ``python test_loop_resume.py RUN_DIR SEED_MODEL [--resume]``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

STAGE_NAMES = ["iter0.evaluate"] + [f"iter{t}.{s}" for t in (1, 2)
                                    for s in ("generate", "judge", "meta_judge", "build_pairs", "train", "evaluate")]
KILL_SEED = 20261132
"""Seeds the choice of the stage to kill (``MR_RESUME_KILL_SEED`` overrides it, to try other stages)."""
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


def _start(run_dir: Path, seed_model: Path, *, resume: bool = False, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, str(run_dir), str(seed_model)] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, what: str, timeout: float = 240) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}"


def _data_files(run: Path) -> dict[str, bytes]:
    files = {p.relative_to(run).as_posix(): p.read_bytes() for p in run.glob("iter*/*.jsonl")}
    files["iterations.jsonl"] = (run / "iterations.jsonl").read_bytes()
    return files


def test_kill_and_resume_matches_uninterrupted_run(seed_model_dir, tmp_path):
    from safetensors.torch import load_file

    from loopwright.judges.meta_rewarding.checkpoints import check_model_dir
    from loopwright.sdk.artifacts import read_jsonl

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
        if proc_b.poll() is None:
            proc_b.kill()
    before = json.loads((b_dir / "manifest.json").read_text())["stages"]
    assert before[target]["status"] == "running", f"killed in {target}"
    done_before = {k: v for k, v in before.items() if v["status"] == "done"}
    assert set(done_before) == set(STAGE_NAMES[: STAGE_NAMES.index(target)])

    log.write_text("")
    _finish(_start(b_dir, seed_model_dir, resume=True, MR_LOG=str(log)), "resumed run B")
    _finish(proc_a, "uninterrupted run A")

    # no completed stage is redone: the resumed process started the killed stage and everything after it, only
    assert log.read_text().split() == STAGE_NAMES[STAGE_NAMES.index(target):]
    after = json.loads((b_dir / "manifest.json").read_text())["stages"]
    assert all(after[k]["status"] == "done" for k in STAGE_NAMES)
    for k, rec in done_before.items():
        assert after[k]["started_at"] == rec["started_at"] and after[k]["ended_at"] == rec["ended_at"], k

    # same data artifacts, byte for byte
    a_files, b_files = _data_files(a_dir), _data_files(b_dir)
    assert sorted(a_files) == sorted(b_files) and len(a_files) >= 20
    diff = [name for name in a_files if a_files[name] != b_files[name]]
    assert not diff, f"artifacts differ after resume (killed at {target}): {diff}"

    # same weights (tolerance 1e-6)
    for t in (1, 2):
        wa = load_file(str(check_model_dir(a_dir / f"iter{t}" / "model") / "model.safetensors"))
        wb = load_file(str(check_model_dir(b_dir / f"iter{t}" / "model") / "model.safetensors"))
        assert wa.keys() == wb.keys()
        worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        assert worst <= WEIGHT_ATOL, f"iteration {t} weights differ by {worst}"

    # nothing half-written
    leftovers = [p for p in b_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".dpo-trainer-")]
    assert not leftovers, leftovers
    for p in b_dir.rglob("*.jsonl"):
        read_jsonl(p)
    assert len(read_jsonl(b_dir / "iterations.jsonl")) == 3
    assert (b_dir / "report" / "report.md").is_file()


if __name__ == "__main__":
    _driver(sys.argv[1], sys.argv[2], resume="--resume" in sys.argv[3:])
