"""Atomic artifact writes, JSONL round trips and the run-directory manifest."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from pydantic import BaseModel

from loopwright.sdk.artifacts import RunDir, atomic_write, git_revision, read_jsonl, write_json, write_jsonl
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.types import Completion


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text_and_bytes(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write(p, "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert _leftovers(p.parent) == []
    with pytest.raises(TypeError, match="write_json"):
        atomic_write(p, {"a": 1})  # type: ignore[arg-type]


def test_write_jsonl_failure_midway_keeps_old_content(tmp_path):
    p = tmp_path / "rows.jsonl"
    assert write_jsonl(p, [{"i": 0}, {"i": 1}]) == 2
    old = p.read_bytes()

    def rows():
        yield {"i": 10}
        yield {"i": 11}
        raise RuntimeError("stage killed while producing rows")

    with pytest.raises(RuntimeError, match="stage killed"):
        write_jsonl(p, rows())
    assert p.read_bytes() == old
    assert read_jsonl(p) == [{"i": 0}, {"i": 1}]
    assert _leftovers(tmp_path) == []

    # an unserialisable row also fails cleanly, before the rename
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        write_jsonl(p, [{"i": 2}, {"bad": object()}])
    assert p.read_bytes() == old
    assert _leftovers(tmp_path) == []


def test_jsonl_round_trip_models_and_unicode(tmp_path):
    p = tmp_path / "c.jsonl"
    comps = [Completion(text="x = 1 ✓", token_ids=[1, 2]), Completion(text="", finish_reason="length")]
    assert write_jsonl(p, comps) == 2
    back = [Completion.model_validate(r) for r in read_jsonl(p)]
    assert back == comps
    p.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"c.jsonl:3"):
        read_jsonl(p)


def test_write_json_pydantic(tmp_path):
    class Cfg(BaseModel):
        lr: float = 1e-4
        name: str = "x"

    p = write_json(tmp_path / "cfg.json", Cfg())
    assert json.loads(p.read_text()) == {"lr": 1e-4, "name": "x"}


def test_manifest_fields(tmp_path):
    class Cfg(BaseModel):
        model: str = "tiny"
        iterations: int = 2

    run = RunDir(tmp_path / "run", config=Cfg(), seeds={"data": 1, "train": 2})
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["config"] == {"model": "tiny", "iterations": 2}
    assert m["seeds"] == {"data": 1, "train": 2}
    assert m["python"] == platform.python_version()
    assert m["packages"]["pydantic"] and m["packages"]["loopwright"]
    assert "not-a-package" not in m["packages"]
    assert m["platform"]["cpu_count"] >= 1 and m["platform"]["machine"] == platform.machine()
    assert m["created_at"] and m["stages"] == {}
    # the repo is a git checkout in development; when it is, the revision is a full sha
    if m["git"] is not None:
        assert len(m["git"]["revision"]) == 40 and isinstance(m["git"]["dirty"], bool)
    assert run.manifest == m
    assert _leftovers(run.path) == []


def test_git_revision_never_fails(tmp_path):
    assert git_revision(tmp_path) is None  # not a git repository


def test_stage_records_and_reopen(tmp_path):
    run = RunDir(tmp_path / "run", config={"k": 1}, seeds={"s": 0})
    assert not run.is_done("generate")
    with run.stage("generate") as st:
        n = write_jsonl(st.path("gen/rows.jsonl"), [{"i": i} for i in range(5)])
        st.rows = n
        st.metrics["tokens"] = 42
        during = json.loads(run.manifest_path.read_text())["stages"]["generate"]
        assert during["status"] == "running"
    with pytest.raises(ValueError, match="boom"), run.stage("judge") as st:
        st.rows = 1
        raise ValueError("boom")
    assert run.is_done("generate") and not run.is_done("judge")

    again = RunDir.open(tmp_path / "run")
    g = again.stage_record("generate")
    assert g["status"] == "done" and g["rows"] == 5 and g["metrics"] == {"tokens": 42}
    assert g["artifacts"] == ["gen/rows.jsonl"]
    assert g["duration_s"] >= 0 and g["started_at"] <= g["ended_at"]
    j = again.stage_record("judge")
    assert j["status"] == "failed" and "ValueError: boom" in j["error"]
    assert again.is_done("generate") and not again.is_done("judge")
    assert again.config == {"k": 1} and again.seeds == {"s": 0}
    assert read_jsonl(again.path_for("gen/rows.jsonl"))[4] == {"i": 4}

    # same config continues the run; a different config refuses to mix two runs
    assert RunDir(tmp_path / "run", config={"k": 1}).is_done("generate")
    with pytest.raises(ConfigError, match="different config"):
        RunDir(tmp_path / "run", config={"k": 2})
    with pytest.raises(FileNotFoundError, match="not a loopwright run"):
        RunDir.open(tmp_path / "nothing")


def test_path_for_refuses_escapes(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.path_for("a/b.json") == tmp_path / "run" / "a" / "b.json"
    for bad in ("../x.json", "/etc/passwd"):
        with pytest.raises(ValueError, match="relative to the run directory"):
            run.path_for(bad)


def test_manifest_does_not_import_torch(tmp_path):
    code = (
        "import sys; from loopwright.sdk.artifacts import RunDir; "
        f"RunDir({str(tmp_path / 'run')!r}, config={{'a': 1}}); "
        "assert 'torch' not in sys.modules, 'RunDir imported torch'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["platform"]["gpus"] == []
