"""``recipe: loop`` (issue 15 item 5): a composed Loop declared in YAML -- dry run, one-line errors naming the
dotted key, wiring errors refused before a run folder exists, and a real short run of recipes/star.yaml that
resumes as a no-op and reports (the sandbox seed model, TRL SFT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loopwright.sdk.cli import app
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.recipes import load_recipe

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error(res) -> str:
    """Exit 2, exactly one ``error:`` line, no traceback; returns that line."""
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    return lines[0]


def recipe_file(tmp_path: Path, stages: str, extra: str = "") -> Path:
    path = tmp_path / "loop.yaml"
    path.write_text(f"recipe: loop\n{extra}stages:\n{stages}")
    return path


STAR_HEAD = """  - generate: {n: 4}
  - score: {judge: gold}
"""


def test_dry_run_prints_the_resolved_star_loop(tmp_path):
    res = invoke("run", "star", "--dry-run", "--run-dir", tmp_path / "r")
    assert res.exit_code == 0, res.output
    out = yaml.safe_load(res.stdout)
    assert out["recipe"] == "loop" and out["name"] == "star" and out["init_from"] == "seed"
    assert out["task"] == {"name": "miniarith", "n_train": 64, "n_eval": 32, "eval_max_tokens": 160}
    assert [next(iter(s)) for s in out["stages"]] == ["generate", "score", "rejection_sample", "train_sft",
                                                     "evaluate"]
    gen, score, _, sft, _ = (next(iter(s.values())) for s in out["stages"])
    assert gen["n"] == 4 and gen["top_p"] == 1.0 and gen["per_iteration"] is None  # defaults filled in
    assert score["judge"] == "gold" and sft["epochs"] == 1.0 and sft["settings"]["learning_rate"] == 0.001
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("stages", "extra", "needles"), [
    (STAR_HEAD + "  - build_pairs: {rhoo: 0.3}\n", "",
     ["unknown key 'stages.2.build_pairs.rhoo'", "did you mean 'rho'", "allowed keys here: input, min_margin, "
                                                                       "name, rho"]),
    ("  - generat: {n: 4}\n", "",
     ["unknown key 'stages.0.generat'", "did you mean 'generate'", "build_pairs, evaluate, filter, generate"]),
    (STAR_HEAD + "  - rejection_sample\n  - train_sft: {settings: {max_stepz: 3}}\n", "",
     ["unknown key 'stages.3.train_sft.settings.max_stepz'", "did you mean 'max_steps'"]),
    (STAR_HEAD.replace("gold", "gol"), "", ["stages.1.score.judge", "'gold_answer', 'reward_model' or 'self'"]),
    ("  - generate: {n: 4}\n  - score: {judge: gold, samples: 3}\n", "", ["stages.1.score", "judge: self only"]),
    ("  - generate: {n: 4}\n  - filter: {rejected_reward_pc: 40}\n", "",
     ["unknown key 'stages.1.filter.rejected_reward_pc'", "did you mean 'rejected_reward_pct'"]),
    ("  - generate:\n    n: 4\n", "", ["stages.0", "got 2 keys (generate, n)", "indented"]),
    ("  - generate: {n: 0}\n", "", ["stages.0.generate.n", "greater than or equal to 1"]),
    (STAR_HEAD, "itertions: 2\n", ["unknown key 'itertions'", "did you mean 'iterations'"]),
    (STAR_HEAD, "task: {n_trian: 8}\n", ["unknown key 'task.n_trian'", "did you mean 'n_train'"]),
], ids=["stage-key", "stage-type", "nested-key", "judge-name", "self-only-option", "rip-threshold",
        "bad-indent", "bad-value", "top-level-key", "task-key"])
def test_a_typo_is_one_error_line_naming_the_dotted_key(tmp_path, stages, extra, needles):
    path = recipe_file(tmp_path, stages, extra)
    line = one_error(invoke("run", path, "--run-dir", tmp_path / "r"))
    assert line.startswith(f"error: invalid recipe {path}: ")
    for n in needles:
        assert n in line, (n, line)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("stages", "needles"), [
    ("  - generate: {n: 4}\n  - build_pairs: {}\n  - train_dpo\n",
     ["stages.1.build_pairs: stage 'build_pairs' (BuildPairs) needs a scored input"]),
    (STAR_HEAD + "  - train_sft\n", ["stages.2.train_sft", "needs a sft input"]),
    (STAR_HEAD + "  - build_pairs: {input: generate.samples}\n",
     ["stages.2.build_pairs", "needs a scored input, but generate.samples is samples"]),
    (STAR_HEAD + "  - score: {judge: gold, name: score1}\n", ["stages: two stages are named 'score1'"]),
], ids=["no-scored-input", "no-sft-input", "wrong-input-kind", "duplicate-name"])
def test_a_wiring_error_is_refused_before_a_run_folder_exists(tmp_path, stages, needles):
    path = recipe_file(tmp_path, stages)
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    line = one_error(invoke("run", path, "--run-dir", tmp_path / "r"))
    assert line == f"error: {e.value}"
    for n in needles:
        assert n in line, (n, line)
    assert not (tmp_path / "r").exists()


def test_star_recipe_runs_resumes_as_a_no_op_and_reports(tmp_path):
    run = tmp_path / "run"
    res = invoke("run", "star", "--set", "task.n_train=32", "--set", "task.n_eval=16", "--set", "iterations=1",
                 "--run-dir", run, "--no-progress")
    assert res.exit_code == 0, (res.output, res.exception)
    assert "evaluate.accuracy" in res.stdout and (run / "recipe.yaml").is_file()
    records = [json.loads(ln) for ln in (run / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    for r in records:
        ci = r["intervals"]["evaluate.accuracy"]
        assert r["metrics"]["evaluate.accuracy_n"] == ci["n"] == 16
        assert ci["lo"] <= r["metrics"]["evaluate.accuracy"] <= ci["hi"]
    assert records[1]["metrics"]["rejection_sample.kept"] > 0
    assert (run / "iter_1/train_sft/model/config.json").is_file()

    before = (run / "iterations.jsonl").read_text(), json.loads((run / "manifest.json").read_text())["stages"]
    res = invoke("resume", run, "--no-progress")
    assert res.exit_code == 0, (res.output, res.exception)
    after = (run / "iterations.jsonl").read_text(), json.loads((run / "manifest.json").read_text())["stages"]
    assert after == before  # no stage ran again

    res = invoke("report", run)
    assert res.exit_code == 0, res.output
    assert (run / "report/report.md").is_file() and "report:" in res.stdout


def test_set_reaches_a_stage_config_by_index():
    from loopwright.sdk.errors import ConfigError
    from loopwright.sdk.recipes import load_recipe

    cfg = load_recipe("star", ["stages.0.generate.n=2", "stages.4.evaluate.metric=acc"])
    assert cfg.resolved()["stages"][0]["generate"]["n"] == 2
    with pytest.raises(ConfigError, match=r"stages is a list of 5 items; index it with 0\.\.4"):
        load_recipe("star", ["stages.7.generate.n=2"])
