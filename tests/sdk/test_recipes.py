"""Recipes: validation errors name the bad field and the allowed values; overrides; the CLI's error path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loopwright.sdk.errors import ConfigError
from loopwright.sdk.recipes import list_builtin_recipes, load_recipe


def test_default_recipe_loads():
    cfg = load_recipe(None)
    assert cfg.recipe == "sandbox"
    assert "sandbox" in list_builtin_recipes()


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_recipe({"recipe": "sandbox", "eval": {"n_problem": 3}})
    msg = str(e.value)
    assert "eval.n_problem" in msg and "n_problems" in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="'bogus'"):
        load_recipe({"recipe": "sandbox", "bogus": 1})


def test_bad_literal_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_recipe({"recipe": "sandbox", "eval": {"backend": "tgi"}})
    assert "eval.backend" in str(e.value) and "'transformers'" in str(e.value) and "'vllm'" in str(e.value)


def test_unknown_recipe_kind():
    with pytest.raises(ConfigError, match="allowed values: .*sandbox"):
        load_recipe({"recipe": "nope"})


def test_overrides_win_and_are_typed():
    cfg = load_recipe(None, ["eval.n_problems=7", "eval.cache=false", "seed=3"])
    assert cfg.eval.n_problems == 7 and cfg.eval.cache is False and cfg.seed == 3


def test_cli_reports_bad_key_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: sandbox\neval:\n  nproblems: 3\n")
    out = subprocess.run([sys.executable, "-m", "loopwright.sdk.cli", "run", str(bad), "--run-dir",
                          str(tmp_path / "r")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "eval.nproblems" in out.stderr and "Traceback" not in out.stderr
