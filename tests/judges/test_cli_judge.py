"""`loopwright judge eval` end to end on the sandbox seed model (transformers and in-process vLLM).

The ~1M-parameter seed model cannot follow a judge rubric: nearly every verdict is invalid. The test asserts
the run finishes, the report counts every invalid verdict with its reason, and the artifacts are written.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loopwright.sdk.cli import _limit_pairs, app

runner = CliRunner()


def _check_run(out, n: int) -> dict:
    rep = json.loads((out / "report.json").read_text())
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert rep["n"] == n == len(recs)
    n_invalid = sum(not r["valid"] for r in recs)
    assert rep["n_valid"] == n - n_invalid
    assert sum(rep["invalid_reasons"].values()) == n_invalid
    assert rep["invalid_rate"] == pytest.approx(n_invalid / n)
    assert all(r["invalid_reason"] for r in recs if not r["valid"])
    assert rep["orders"] == "judge"  # PairwiseJudge judges both orders itself
    assert rep["provenance"]["parser_version"] and rep["provenance"]["template_hash"]
    assert rep["prompt_tokens"] > 0 and rep["completion_tokens"] > 0
    assert (out / "report.md").read_text().startswith("## Judge evaluation")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["judge_eval"]["status"] == "done" and manifest["seeds"] == {"placement": 0}
    assert manifest["stages"]["judge_eval"]["rows"] == n and manifest["config"]["n_pairs"] == n
    return rep


def test_judge_eval_transformers_seed_model(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["judge", "eval", "--data", "llmbar", "--backend", "transformers", "--limit", "5",
                              "--max-tokens", "8", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = _check_run(out, 5)
    assert len(rep["subsets"]) == 5  # --limit takes subsets round-robin
    assert rep["n_valid"] <= 1  # the seed model emits no [[A]]/[[B]] in 8 tokens (measured: 0 of 5)
    assert "| metric | value (%) |" in res.output and "llmbar-natural" in res.output


def test_judge_eval_jsonl_and_mt_bench(tmp_path, tiny_model_dir):
    f = tmp_path / "prefs.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"What is {i}+1?", "chosen": str(i + 1), "rejected": str(i)})
                           for i in range(3)) + "\n")
    out = tmp_path / "run"
    res = runner.invoke(app, ["judge", "eval", "--data", str(f), "--model", str(tiny_model_dir), "--max-tokens",
                              "4", "--out", str(out), "--no-progress", "--no-both-orders"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["n"] == 3 and set(rep["subsets"]) == {"prefs"} and rep["orders"] == "evaluator"
    res = runner.invoke(app, ["judge", "eval", "--data", "mt_bench", "--model", str(tiny_model_dir), "--limit", "2",
                              "--max-tokens", "4", "--out", str(tmp_path / "mt"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "mt" / "report.json").read_text())["subsets"].keys() == {"mt-bench-human"}
    # the same --out with another configuration is refused before any model loads
    res = runner.invoke(app, ["judge", "eval", "--data", "mt_bench", "--model", str(tiny_model_dir), "--limit", "3",
                              "--out", str(tmp_path / "mt"), "--no-progress"])
    assert res.exit_code == 2 and "different config" in res.output and "--out" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "tensorrt"], "--backend 'tensorrt' is not one of transformers, vllm, openai"),
    (["--data", "rewardbench"], "--data 'rewardbench' is not one of llmbar, mt_bench"),
    (["--base-url", "http://127.0.0.1:1/v1"], "--base-url is only used with --backend openai"),
    (["--backend", "openai"], "--backend openai needs --base-url URL and --model"),
    (["--limit", "0"], "--limit 0 must be a positive"),
    (["--model", "/nonexistent/model"], "--model: no model folder at /nonexistent/model; the nearest existing folder /"),
    (["--data", "missing.jsonl"], "missing.jsonl not found"),
])
def test_judge_eval_bad_options(args, message, tmp_path):
    res = runner.invoke(app, ["judge", "eval", *args, "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert message in res.output


def test_existing_commands_still_registered():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "resume", "recipes", "sandbox", "judge"):
        assert cmd in res.output
    res = runner.invoke(app, ["judge", "--help"])
    assert res.exit_code == 0 and "eval" in res.output


def test_limit_round_robin():
    class P:
        def __init__(self, s, i):
            self.subset, self.i = s, i

    ps = [P("a", i) for i in range(5)] + [P("b", i) for i in range(2)]
    got = _limit_pairs(ps, 5)
    assert [(p.subset, p.i) for p in got] == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]
    assert _limit_pairs(ps, None) is ps


def test_judge_eval_vllm_seed_model(tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "run"
    res = runner.invoke(app, ["judge", "eval", "--backend", "vllm", "--limit", "3", "--max-tokens", "8",
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    _check_run(out, 3)


# --------------------------------------------------------------------------------------------- OpenAI-compatible server


def test_judge_eval_openai_backend(seed_vllm_server, tmp_path):
    served = seed_vllm_server.served_model_name
    out = tmp_path / "run"
    res = runner.invoke(app, ["judge", "eval", "--backend", "openai", "--base-url", seed_vllm_server.base_url,
                              "--model", served, "--data", "mt_bench", "--limit", "3", "--max-tokens", "8",
                              "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    rep = _check_run(out, 3)
    assert rep["provenance"]["endpoint"] == seed_vllm_server.base_url
    assert rep["provenance"]["model"] == served


def test_example_judge_as_library(seed_vllm_server):
    """examples/judge_as_library.py against a running server: Verdicts printed, TRL rewards None when invalid."""
    import subprocess
    import sys
    from pathlib import Path

    served = seed_vllm_server.served_model_name
    script = Path(__file__).resolve().parents[2] / "examples" / "judge_as_library.py"
    proc = subprocess.run([sys.executable, str(script), "--base-url", seed_vllm_server.base_url, "--model",
                           served, "--max-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if "orders agree" in ln]
    assert len(lines) == 2 and all(served in ln for ln in lines)
    assert "TRL rewards" in proc.stdout
