"""Quiet by default, verbose with -v (issue 17 item 18): one real CLI training run in a fresh process shows
neither TRL's vLLM-version warnings nor transformers' weight-loading / shard-writing bars; ``-v`` brings the bars
back. A fresh process matters: the libraries read their log settings at import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopwright.sdk.artifacts import write_jsonl

NOISE = ("TRL currently supports vLLM versions", "Loading weights", "Writing model shards")


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


def _train(seed_dir: Path, tmp: Path, *flags: str) -> subprocess.CompletedProcess:
    rows = tmp / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "1+1?", "target": "2"}])
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLLM_LOGGING_LEVEL", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    cmd = [sys.executable, "-m", "loopwright.sdk.cli", *flags, "train", "sft", "--base", str(seed_dir),
           "--data", str(rows), "--out", str(tmp / f"o{len(flags)}"),
           "--settings", '{"max_steps": 1, "batch_size": 1, "max_length": 32}']
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.timeout(600)
def test_cli_is_quiet_by_default_and_verbose_with_v(seed_dir, tmp_path):
    quiet = _train(seed_dir, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert not [n for n in NOISE if n in quiet.stderr + quiet.stdout], quiet.stderr[-2000:]
    assert json.loads(quiet.stdout.strip().splitlines()[-1])["model_dir"].endswith("o0")
    loud = _train(seed_dir, tmp_path, "-v")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Loading weights" in loud.stderr


def test_user_settings_win_and_levels_switch(monkeypatch):
    from loopwright.sdk import quiet

    for key in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
                "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(key, "x")  # recorded, so the teardown restores the original state
        monkeypatch.delenv(key)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "ERROR")  # the user's own choice
    monkeypatch.setattr(quiet, "_OURS", set())
    quiet.set_library_verbosity(0)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    quiet.set_library_verbosity(2)
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR" and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in quiet._OURS and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet.set_library_verbosity(0)
