"""Issue 17, items 5-9 and 19: a user's mistake is one ``error:`` line naming the problem and the fix.

Every CLI case checks: exit code 2 (1 where the command ran but its quality gate failed), exactly one line
starting with ``error:``, no traceback, and no run folder left behind. The servers are real HTTP servers on
127.0.0.1 (one answering 500, one closed port for "unreachable").
"""

from __future__ import annotations

import http.server
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopwright.agents.coa.cli import coa_app
from loopwright.sdk.cli import app
from loopwright.sdk.errors import ConfigError, ModelNotFoundError
from loopwright.sdk.models import resolve_model_path
from loopwright.sdk.recipes import MAX_RECIPE_BYTES, load_recipe

REPO = Path(__file__).resolve().parents[2]


def invoke(args: list[str], target=app):
    return CliRunner().invoke(target, [str(a) for a in args])


def assert_one_error(res, *needles: str, code: int = 2) -> str:
    """Exit ``code``, exactly one ``error:`` line holding every needle, no traceback; returns that line."""
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)  # not an uncaught exception
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture()
def sandbox_run(tmp_path):
    """A run folder as `loopwright run` leaves it after writing recipe.yaml (for the resume cases)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text((REPO / "recipes" / "sandbox.yaml").read_text())
    return run


# ------------------------------------------------------------------------------------- item 5: model paths


def test_resolve_model_path_names_the_folder_and_lists_its_parent(tmp_path):
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    assert resolve_model_path(tmp_path / "seed") == str(tmp_path / "seed")
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model_path(tmp_path / "sed")
    msg = str(e.value)
    assert msg.startswith(f"no model folder at {tmp_path / 'sed'}") and "seed/" in msg and "notes.txt" in msg
    assert "\n" not in msg and "Repo id" not in msg
    with pytest.raises(ModelNotFoundError, match="the nearest existing folder"):
        resolve_model_path(tmp_path / "a" / "b" / "c")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model_path(tmp_path)
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model_path(tmp_path / "notes.txt")


def test_resolve_model_path_truncates_long_listings(tmp_path):
    for i in range(40):
        (tmp_path / f"{'x' * 100}{i:02d}").mkdir()
    msg = str(pytest.raises(ModelNotFoundError, resolve_model_path, tmp_path / "nope").value)
    assert "(+32 more)" in msg and len(msg) < 600


def test_hub_id_is_refused_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError, match=r"no model folder at org/name \(hub downloads are off"):
        resolve_model_path("org/name")


def test_backends_check_the_path_before_loading(tmp_path):
    from loopwright.judges.reward_model import RewardModelJudge
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.generators.vllm import VLLMGenerator

    missing = tmp_path / "runs" / "seed"
    for make in (TransformersGenerator, VLLMGenerator, RewardModelJudge):
        t0 = time.perf_counter()
        with pytest.raises(ModelNotFoundError, match=f"no model folder at {missing}"):
            make(str(missing))
        assert time.perf_counter() - t0 < 5.0, make  # refused before an engine or a hub lookup starts


def test_cli_run_with_missing_model_makes_no_run_folder(tmp_path):
    run = tmp_path / "r"
    res = invoke(["run", "meta_rewarding", "--set", f"model={tmp_path / 'nope'}", "--run-dir", run])
    assert_one_error(res, f"no model folder at {tmp_path / 'nope'}")
    assert not run.exists()
    res = invoke(["run", "self_taught", "--set", "model=./no/such/judge", "--run-dir", run])
    assert_one_error(res, "no model folder at ./no/such/judge")
    assert not run.exists()


def test_cli_judge_eval_with_missing_model(tmp_path, pairs_file):
    out = tmp_path / "out"
    res = invoke(["judge", "eval", "--data", pairs_file, "--model", tmp_path / "nope", "--out", out])
    assert_one_error(res, "no model folder at")
    assert not out.exists()


def test_cli_judge_eval_mode_typos_and_misfit_options(tmp_path, pairs_file):
    out = tmp_path / "out"
    res = invoke(["judge", "eval", "--data", pairs_file, "--mode", "logprobs", "--out", out])
    assert_one_error(res, "--mode 'logprobs' is not one of generative, logprob, expected-score")
    res = invoke(["judge", "eval", "--data", pairs_file, "--mode", "logprob", "--samples", "3", "--out", out])
    assert_one_error(res, "--samples and --temperature apply to --mode generative only")
    res = invoke(["judge", "eval", "--data", pairs_file, "--mode", "expected-score", "--no-both-orders",
                  "--out", out])
    assert_one_error(res, "does not apply to --mode expected-score")
    assert not out.exists()


def test_example_with_missing_model(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "examples" / "meta_rewarding.py"), "--model",
                          str(tmp_path / "nope"), "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "no model folder at" in res.stderr
    assert sum("error:" in ln for ln in res.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- item 6: meta_rewarding keys


def test_meta_rewarding_bad_nested_key_is_one_line_before_any_write(tmp_path):
    run = tmp_path / "r"
    res = invoke(["run", "meta_rewarding", "--set", "config.actor.k=2", "--run-dir", run])
    line = assert_one_error(res, "config.actor.k", "allowed keys here: K, max_tokens, temperature, top_p", "'K'")
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert "Extra inputs" not in line
    assert not run.exists()


def test_meta_rewarding_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"config\.iterations: Input should be greater than or equal to 1"):
        load_recipe("meta_rewarding", ["config.iterations=0"])


# ----------------------------------------------------------------------- item 7: tracebacks -> one line


@pytest.mark.parametrize("content,needle", [
    (b"\x00\x01\x02binary\xff\xfe\x00", "binary file"),
    ("recipe: sandbox\n".encode("utf-16"), "UTF-16"),
    (b"recipe: sandbox\nseed: \xff\xfe0\n", "not UTF-8"),
    (("[" * 20000 + "]" * 20000).encode(), "nesting deeper than"),
    (b"recipe: !!python/object/apply:os.system ['echo pwned']\n", "the tag !!python/object/apply:os.system"),
    (b"recipe: sandbox\nseed: [1, 2\n", "not valid recipe YAML"),
    (b"- a\n- b\n", "must be a mapping"),
])
def test_bad_recipe_files(tmp_path, content, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    run = tmp_path / "r"
    assert_one_error(invoke(["run", bad, "--run-dir", run]), needle, str(bad))
    assert not run.exists()


def test_binary_recipe_under_resume(sandbox_run):
    (sandbox_run / "recipe.yaml").write_bytes(b"\x00\x89PNG\r\n\x1a\n")
    assert_one_error(invoke(["resume", sandbox_run]), "binary file")


@pytest.mark.parametrize("override,needle", [
    ("seed=[", "--set seed=[ is not valid recipe YAML"),
    ("seed=!!python/object:os.system", "the tag !!python/object:os.system is not allowed"),
    ("seed", "must look like key.sub=value"),
    ("seed=x", "seed: Input should be a valid integer"),
    ("eval.n_problem=3", "did you mean 'n_problems'?"),
])
def test_bad_overrides(tmp_path, override, needle):
    run = tmp_path / "r"
    assert_one_error(invoke(["run", "--set", override, "--run-dir", run]), needle)
    assert not run.exists()


def test_run_dir_naming_a_file(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    assert_one_error(invoke(["run", "--run-dir", f]), "is a file, not a folder")
    assert f.read_text() == "x"


def test_resume_missing_and_corrupt_checkpoints(sandbox_run):
    assert_one_error(invoke(["resume", sandbox_run]), "checkpoints.sqlite not found", "--run-dir NEW_DIR")
    (sandbox_run / "checkpoints.sqlite").write_bytes(b"this is not sqlite" * 100)
    assert_one_error(invoke(["resume", sandbox_run]), "checkpoints.sqlite is corrupt")
    assert_one_error(invoke(["resume", sandbox_run.parent / "nope"]), "not a loopwright run directory")


def test_resume_of_a_valid_checkpoint_passes_the_check(sandbox_run):
    conn = sqlite3.connect(sandbox_run / "checkpoints.sqlite")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    from loopwright.sdk.cli import _check_checkpoints

    _check_checkpoints(sandbox_run)  # no exit


@pytest.fixture()
def pairs_file(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    return p


class _Answer500(http.server.BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b'{"error": "boom"}'
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


def test_judge_eval_against_a_server_answering_500(tmp_path, pairs_file):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        out = tmp_path / "out"
        res = invoke(["judge", "eval", "--data", pairs_file, "--backend", "openai", "--base-url", url,
                      "--model", "m", "--out", out])
        assert_one_error(res, url, "HTTP 500")
        assert not out.exists()
    finally:
        server.shutdown()
        server.server_close()


def test_judge_eval_against_an_unreachable_server(tmp_path, pairs_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    out = tmp_path / "out"
    res = invoke(["judge", "eval", "--data", pairs_file, "--backend", "openai", "--base-url", url,
                  "--model", "m", "--out", out])
    assert_one_error(res, f"cannot reach {url}", "start the server")
    assert not out.exists()


def test_coa_convert_non_utf8_and_directory_output(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_bytes(b'{"question": "q", "answer": "1 #### 1"}\n{"question": "\xff\xfe"}\n')
    out = tmp_path / "out.jsonl"
    for target, prefix in ((coa_app, []), (app, ["coa"])):
        assert_one_error(invoke([*prefix, "convert", bad, out], target), "not UTF-8", "line 2")
        assert not out.exists()
        good = tmp_path / "good.jsonl"
        good.write_text('{"question": "q", "answer": "1 #### 1"}\n')
        assert_one_error(invoke([*prefix, "convert", good, tmp_path], target), "is a folder", "OUTPUT")


def test_tools_build_index_out_is_a_folder(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"title": "t", "text": "x"}) + "\n")
    assert_one_error(invoke(["tools", "build-index", "--input", corpus, "--out", tmp_path]), "is a folder")


def test_genuine_bugs_keep_their_traceback(monkeypatch):
    import loopwright.sdk.recipes as recipes

    def boom(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(recipes, "load_recipe", boom)
    res = invoke(["run", "--dry-run"])
    assert res.exit_code == 1 and isinstance(res.exception, KeyError)  # not swallowed into an error: line


# ------------------------------------------------------------------------------- item 8: YAML bombs / sizes


BILLION_LAUGHS = """recipe: sandbox
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_alias_bomb_fails_fast_with_a_short_message(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1024
    t0 = time.perf_counter()
    res = invoke(["run", bomb, "--run-dir", tmp_path / "r"])
    assert time.perf_counter() - t0 < 1.0
    line = assert_one_error(res, "aliases (*a) are not allowed")
    assert len(res.stderr) < 500, len(res.stderr)
    assert len(line) < 400


def test_echoed_input_is_clipped(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("recipe: sandbox\nseed: '" + "x" * 500_000 + "'\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(big)
    assert len(str(e.value)) < 600 and "500000 chars" in str(e.value)
    huge = tmp_path / "huge.yaml"
    huge.write_text("recipe: sandbox\n# " + "x" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(ConfigError, match="capped at 1,000,000 bytes"):
        load_recipe(huge)


# -------------------------------------------------------------------------------- item 9: coa convert exits


def test_coa_convert_empty_input(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    out = tmp_path / "out.jsonl"
    assert_one_error(invoke(["convert", empty, out], coa_app), "holds no rows")
    assert not out.exists()


def test_coa_convert_rows_without_fields_and_non_json(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"q": 1}\n{"question": "How many?"}\nnot json\n')
    out = tmp_path / "out.jsonl"
    res = invoke(["convert", inp, out], coa_app)
    assert_one_error(res, "no row converted", str(out), code=1)
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["verified"] for r in recs] == [False, False, False]
    assert "missing field(s) 'question', 'answer'" in recs[0]["reason"] and "got keys ['q']" in recs[0]["reason"]
    assert "missing field(s) 'answer'" in recs[1]["reason"]
    assert "line 3 is not a GSM8K JSON row" in recs[2]["reason"]
    assert "missing_fields: 2 (e.g. line 1: missing field(s)" in res.stdout


def test_coa_convert_failure_share_gate(tmp_path):
    ok = json.dumps({"question": "Tom has 2 apples and buys 3. How many?",
                     "answer": "He has 2+3=<<2+3=5>>5 apples.\n#### 5"})
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([ok, ok, "nope", "nope", "nope"]) + "\n")
    out = tmp_path / "out.jsonl"
    assert_one_error(invoke(["convert", inp, out], coa_app), "60% of rows failed (> --max-failed 0.5)", code=1)
    assert len(out.read_text().splitlines()) == 5  # the outputs are still written, with their reasons
    res = invoke(["convert", inp, out, "--max-failed", "0.8"], coa_app)
    assert res.exit_code == 0, res.output
    assert "verified 2/5" in res.stdout


# ------------------------------------------------------------------------------------ item 19: --dry-run


def test_dry_run_prints_the_resolved_recipe_and_writes_nothing(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    res = invoke(["run", "meta_rewarding", "--dry-run", "--set", "config.iterations=2", "--set", "seed=5"])
    assert res.exit_code == 0, res.output
    data = yaml.safe_load(res.stdout)
    assert data["recipe"] == "meta_rewarding" and data["seed"] == 5
    assert data["config"]["iterations"] == 2 and data["config"]["actor"]["K"] == 6  # defaults filled in
    assert list(tmp_path.iterdir()) == []  # no runs/ folder
    saved = tmp_path / "resolved.yaml"
    saved.write_text(res.stdout)
    again = invoke(["run", saved, "--dry-run"])
    assert again.exit_code == 0 and again.stdout == res.stdout  # the printed recipe runs as printed
    bad = invoke(["run", "--dry-run", "--set", "eval.bogus=1"])
    assert_one_error(bad, "eval.bogus")
