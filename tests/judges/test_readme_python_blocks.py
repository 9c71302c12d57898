"""Every ```python block of the README runs as written (issue 17 item 2), each in a fresh interpreter in an
empty folder. The one block that names a served model (``http://127.0.0.1:8000/v1`` + a 7B model) runs against
the sandbox seed model served by a real vLLM OpenAI-compatible server on 127.0.0.1: only the URL and the model
name are substituted, nothing else."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
README_URL, README_MODEL = "http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-7B-Instruct"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 2 and any(README_URL in b for b in BLOCKS)


@pytest.mark.timeout(900)
def test_every_readme_python_block_runs(seed_model_dir, seed_vllm_server, tmp_path):

    for i, block in enumerate(BLOCKS):
        code = block.replace(README_URL, seed_vllm_server.base_url).replace(
            README_MODEL, seed_vllm_server.served_model_name)
        cwd = tmp_path / f"block{i}"
        cwd.mkdir()
        proc = _run(code, cwd)
        assert proc.returncode == 0, f"README python block {i} failed:\n{block}\n{proc.stderr[-3000:]}"
        assert proc.stdout.strip(), f"README python block {i} printed nothing"
