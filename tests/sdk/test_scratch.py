"""Stale scratch folders (issue 15): a train stage killed with SIGKILL leaves ``.tmp-model-*`` / ``.dpo-trainer-*``
folders behind; the resume removes them, and nothing else.

The scratch folders here are made by the real creators (``trainers.cache.build_atomically``,
``trainers.distributed.build_once`` on a non-main rank) in processes killed mid-build, and by ``tempfile.mkdtemp``
with the trainer wrapper's prefix; the run is a real ``run_stages`` pipeline resumed after a hard kill.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from loopwright.sdk.scratch import is_scratch_name, remove_stale_scratch

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, shutil, sys, tempfile
    from pathlib import Path
    from loopwright.sdk.artifacts import RunDir, atomic_write
    from loopwright.sdk.stages import Stage, run_stages
    from loopwright.trainers.cache import build_atomically

    run_dir, resume = Path(sys.argv[1]), sys.argv[2] == "resume"
    log = run_dir.parent / "executions.log"

    def prepare(state, run):
        with open(log, "a") as f:
            f.write("prepare\\n")
        atomic_write(run.path / "iter1" / "pairs.jsonl", "{}\\n")
        return {}

    def train(state, run):
        with open(log, "a") as f:
            f.write("train\\n")
        it = run.path / "iter1"
        killed = not (run_dir.parent / "survive").exists()
        scratch = tempfile.mkdtemp(prefix=".dpo-trainer-", dir=it)  # the TRL output_dir of trainers/result.py

        def build(tmp):
            (tmp / "model.safetensors").write_bytes(b"partial")
            if killed:
                os.kill(os.getpid(), 9)  # SIGKILL mid-build: no cleanup, no exception handling
            (tmp / "model.safetensors").write_bytes(b"complete")

        build_atomically(it / "model", build)
        shutil.rmtree(scratch)  # as trainers/result.py does once the model is in place
        return {"artifacts": {"model": str(it / "model")}}

    run = RunDir(run_dir, config={"demo": "scratch"})
    run_stages([Stage("prepare", prepare), Stage("train", train)], run, resume=resume)
    """
)

LOOKALIKES = [  # (path under the run, kind): what a resume must leave alone
    ("iter1/tmp-model-abcd1234", "dir"),  # a user's folder: no leading dot
    ("iter1/.tmp-model", "dir"),  # no mkdtemp suffix
    ("iter1/.dpo-trainer-abc", "dir"),  # suffix too short
    ("iter1/.tmp-model-ABCD1234", "dir"),  # mkdtemp never makes upper case
    ("iter1/.dpo-trainer-abcd12345", "dir"),  # suffix too long
    ("iter1/.cache-abcd1234", "dir"),  # another hidden folder
    ("iter1/.tmp-notes-abcd1234", "file"),  # a file with the shape: only folders are scratch
    ("iter1/finished/config.json", "file"),  # a finished model folder
]


def _run(tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run"), mode], capture_output=True, text=True,
                          timeout=120)


def _scratch_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink() and is_scratch_name(p.name))


@pytest.mark.parametrize(("name", "scratch"), [
    (".dpo-trainer-k2_9zq0a", True), (".sft-trainer-abcdefgh", True), (".reward-trainer-12345678", True),
    (".tmp-model-abcd1234", True), (".tmp-my-model-abcd1234", True), (".old-seed-x_y_z_12", True),
    (".rank3-model-abcd1234", True),
    ("tmp-model-abcd1234", False), (".tmp-model", False), (".tmp--abcd1234", False), (".dpo-trainer-abc", False),
    (".dpo-trainer-abcdefghi", False), (".tmp-model-ABCD1234", False), (".DPO-trainer-abcd1234", False),
    (".rank-model-abcd1234", False), (".trainer-abcd1234", False), ("model", False), (".lock", False),
    (".new-model-abcd1234", False),
])
def test_scratch_name_shapes(name, scratch):
    assert is_scratch_name(name) is scratch


def test_names_made_by_mkdtemp_match(tmp_path):
    for prefix in (".dpo-trainer-", ".sft-trainer-", ".reward-trainer-", ".tmp-model-", ".old-model-",
                   ".rank1-model-"):
        for _ in range(20):
            made = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_path))
            assert is_scratch_name(made.name), made.name
    # the trainer wrapper's prefix (trainers/result.py) is the shape this module removes
    assert 'prefix=f".{kind}-trainer-"' in (ROOT / "trainers" / "result.py").read_text()


def test_killed_train_stage_scratch_is_removed_on_resume(tmp_path):
    first = _run(tmp_path, "start")
    assert first.returncode == -9, first.stderr
    run = tmp_path / "run"
    left = _scratch_dirs(run)
    assert sorted(p.name.rsplit("-", 1)[0] for p in left) == [".dpo-trainer", ".tmp-model"], left
    tmp_model = next(p for p in left if p.name.startswith(".tmp-model-"))
    assert (tmp_model / "model.safetensors").read_bytes() == b"partial"  # a non-empty leftover
    assert not (run / "iter1" / "model").exists()

    # more leftovers of earlier kills (an empty one, a nested one, an .old- one) and lookalikes that must stay
    outside = tmp_path / "elsewhere"
    (outside / "keep").mkdir(parents=True)
    (run / "iter1" / ".tmp-link-abcd1234").symlink_to(outside, target_is_directory=True)
    extra = [run / "iter0" / ".sft-trainer-q1w2e3r4", run / "iter1" / "finished" / "sub" / ".old-model-zz_12345",
             run / ".rank1-model-abcdefgh"]
    for p in extra:
        p.mkdir(parents=True)
    (extra[1] / "x").mkdir()
    (extra[1] / "x" / "weights.bin").write_bytes(b"old")
    for rel, kind in LOOKALIKES:
        p = run / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir() if kind == "dir" else p.write_text("keep me")

    (tmp_path / "survive").touch()
    second = _run(tmp_path, "resume")
    assert second.returncode == 0, second.stderr

    assert _scratch_dirs(run) == [], "no scratch folder survives the resume"
    for rel, kind in LOOKALIKES:
        p = run / rel
        assert (p.is_dir() if kind == "dir" else p.read_text() == "keep me"), rel
    assert (run / "iter1" / ".tmp-link-abcd1234").is_symlink() and (outside / "keep").is_dir()  # links untouched
    assert (run / "iter1" / "finished" / "sub").is_dir()  # only the scratch folder inside it went
    assert (run / "iter1" / "model" / "model.safetensors").read_bytes() == b"complete"
    assert (tmp_path / "executions.log").read_text().split() == ["prepare", "train", "train"]

    meta = json.loads((run / "manifest.json").read_text())["meta"]
    expected = {str(p.relative_to(run)) for p in [*left, *extra]}
    assert set(meta["stale_scratch_removed"]) == expected and len(meta["stale_scratch_removed"]) == 5


def test_fresh_run_does_not_sweep(tmp_path):
    from loopwright.sdk.artifacts import RunDir
    from loopwright.sdk.stages import Stage, run_stages

    scratch = tmp_path / "run" / "iter1" / ".dpo-trainer-abcd1234"
    scratch.mkdir(parents=True)
    run = RunDir(tmp_path / "run", config={"demo": "fresh"})
    run_stages([Stage("a", lambda s, r: {})], run)
    assert scratch.is_dir(), "only a resume removes scratch folders (a fresh run's may be another live process's)"
    run_stages([Stage("a", lambda s, r: {})], run, resume=True)
    assert not scratch.exists()
    assert run.manifest["meta"]["stale_scratch_removed"] == ["iter1/.dpo-trainer-abcd1234"]


def test_killed_non_main_rank_leaves_rank_scratch_that_is_removed(tmp_path):
    code = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from loopwright.trainers.distributed import build_once

        def build(tmp):
            (tmp / "shard.bin").write_bytes(b"x")
            os.kill(os.getpid(), 9)

        build_once(Path(sys.argv[1]) / "iter2" / "model", build)
        """
    )
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    [left] = _scratch_dirs(tmp_path)
    assert left.name.startswith(".rank1-model-") and (left / "shard.bin").is_file()
    (tmp_path / "iter2" / "model-notes").mkdir()
    assert remove_stale_scratch(tmp_path) == [left]
    assert not left.exists() and (tmp_path / "iter2" / "model-notes").is_dir()
    assert remove_stale_scratch(tmp_path) == [] and remove_stale_scratch(tmp_path / "missing") == []


def test_atomic_write_temp_files_are_removed_but_look_alikes_stay(tmp_path):
    """A SIGKILL between mkstemp and os.replace in ``sdk.artifacts._atomic_file`` leaves ``.{name}.XXXXXXXX.tmp``."""
    import tempfile

    from loopwright.sdk.scratch import remove_stale_scratch

    (tmp_path / "iter1").mkdir()
    fd, real = tempfile.mkstemp(dir=tmp_path / "iter1", prefix=".judgments.jsonl.", suffix=".tmp")  # the real shape
    os.close(fd)
    keep = [tmp_path / "iter1" / n for n in ("judgments.jsonl", ".tmp-notes-abcd1234", "x.abcd1234.tmp",
                                             ".judgments.jsonl.abc.tmp")]
    for p in keep:
        p.write_text("{}\n")
    assert remove_stale_scratch(tmp_path) == [Path(real)]
    assert all(p.is_file() for p in keep)
