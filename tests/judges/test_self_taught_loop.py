"""The Self-Taught Evaluator loop end to end: LangGraph stages, real TRL SFT, real evaluation, resume, bad input.

The seed judge M_0 is a scripted judge here (a unit-test double that reads the compact prompt and is right 75% of
the time, so rejection sampling has something to reject); training (TRL SFT of the tiny model), the LangGraph
graph with its SQLite checkpointer, the held-out evaluation of the trained judge (TransformersGenerator) and
the report are real. The sandbox demo itself runs in the slow test at the bottom.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from loopwright.judges.self_taught import NoUsableJudgementsError, SelfTaughtConfig, SelfTaughtEvaluator
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.trainers.sft import SFTSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPTED = "scripted-seed-judge"


def _oracle_respond(accuracy: float):
    """A scripted judge: the right candidate is the one whose first operand list appears in the question."""

    def respond(text: str, j: int, rng: random.Random) -> str:
        m = re.search(r"user: (.*)\nA: (.*?) \[\[A\]\]\nB: (.*?) \[\[B\]\]", text, re.S)
        if not m:
            return "no idea"
        question, a, b = m.groups()
        nums = set(re.findall(r"\d+", question))
        ok_a = set(re.findall(r"\d+", a.split("=")[0])) <= nums
        right = "A" if ok_a else "B"
        pick = right if rng.random() < accuracy else ("B" if right == "A" else "A")
        return f"{a if pick == 'A' else b} [[{pick}]]"

    return respond


def _config(**kw) -> SelfTaughtConfig:
    base = SelfTaughtConfig().task.model_copy(update={"max_steps": 1})
    defaults = dict(iterations=1, task=base, pairs_per_iteration=8, samples=3, eval_pairs=4, max_tokens=16,
                    eval_max_tokens=8, sft=SFTSettings(max_steps=2, batch_size=4, max_length=256, learning_rate=1e-2))
    defaults.update(kw)
    return SelfTaughtConfig(**defaults)


class _Factory:
    """The scripted seed judge for M_0, the real transformers backend for trained judges; counts calls."""

    def __init__(self, seed_judge: ScriptedGenerator):
        self.seed_judge = seed_judge
        self.opened: list[str] = []

    def __call__(self, path: str):
        self.opened.append(path)
        if path == SCRIPTED:
            return self.seed_judge
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(path, batch_size=16)


def test_one_iteration_end_to_end_then_resume_is_a_no_op(tiny_model_dir, tmp_path):
    factory = _Factory(ScriptedGenerator(_oracle_respond(0.75)))
    loop = SelfTaughtEvaluator(SCRIPTED, _config(), make_generator=factory, init_model=tiny_model_dir)
    records = loop.run(tmp_path / "run")
    run = tmp_path / "run"
    assert [r["iteration"] for r in records] == [0, 1]
    seed_m, it1 = records[0]["metrics"], records[1]["metrics"]
    assert 0.0 <= seed_m["judge_accuracy"] <= 1.0 and seed_m["invalid_rate"] == 0.0
    # selection: every kept judgement's verdict equals its label; labels exactly balanced
    train = [json.loads(x) for x in (run / "iter_1" / "train.jsonl").read_text().splitlines()]
    assert train and all(r["target"].endswith(f"[[{r['label']}]]") for r in train)
    assert sum(r["label"] == "A" for r in train) == sum(r["label"] == "B" for r in train)
    assert it1["usable_examples"] == len(train) and it1["kept_before_balance"] >= len(train)
    ds = SelfTaughtEvaluator.to_dataset(run, 1)  # the same rows in TRL's prompt-completion format
    assert ds.column_names == ["prompt", "completion"] and [c[0]["content"] for c in ds["completion"]] == [
        r["target"] for r in train]  # chat prompts: conversational completions
    judged = [json.loads(x) for x in (run / "iter_1" / "judgements.jsonl").read_text().splitlines()]
    assert len(judged) == 16 and {k["order"] for k in judged} == {"0_1", "1_0"}
    assert all(len(k["samples"]) == 3 for k in judged)
    # real SFT of the judge: a TRL manifest, recorded in the run manifest
    manifest = json.loads((run / "iter_1" / "model" / "loopwright_manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["n_rows"] == len(train)
    assert "train:iter_1/model" in json.loads((run / "manifest.json").read_text())["meta"]
    # the trained tiny judge is random-ish: its verdicts are data (invalid), never a crash
    assert 0.0 <= it1["invalid_rate"] <= 1.0 and (run / "iter_1" / "eval" / "records.jsonl").is_file()
    report = (run / "report" / "report.md").read_text()
    assert "| 0 |" in report and "| 1 |" in report and (run / "report" / "metric_judge_accuracy.png").is_file()
    # resume of a finished run redoes nothing
    opened = len(factory.opened)
    again = SelfTaughtEvaluator(SCRIPTED, _config(), make_generator=factory, init_model=tiny_model_dir)
    assert again.run(run, resume=True) == records
    assert len(factory.opened) == opened
    with pytest.raises(ConfigError, match="already holds a run"):
        again.run(run)


def test_resume_after_a_crash_continues_after_the_last_completed_stage(tiny_model_dir, tmp_path, monkeypatch):
    import loopwright.trainers.sft as loop_mod  # the train stage calls trainers.sft.sft_train

    real_sft = loop_mod.sft_train
    calls = {"n": 0}

    def crashing_sft(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated crash during training")
        return real_sft(*a, **kw)

    monkeypatch.setattr(loop_mod, "sft_train", crashing_sft)
    judge = ScriptedGenerator(_oracle_respond(0.75))
    factory = _Factory(judge)
    cfg = _config(eval_pairs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        SelfTaughtEvaluator(SCRIPTED, cfg, make_generator=factory, init_model=tiny_model_dir).run(tmp_path / "r")
    judged_before = (tmp_path / "r" / "iter_1" / "judgements.jsonl").read_bytes()
    n_judge_calls = len(judge.calls)
    records = SelfTaughtEvaluator(SCRIPTED, cfg, make_generator=factory, init_model=tiny_model_dir).run(
        tmp_path / "r", resume=True)
    assert [r["iteration"] for r in records] == [0, 1] and calls["n"] == 2
    assert len(judge.calls) == n_judge_calls, "the judge stage was redone"
    assert (tmp_path / "r" / "iter_1" / "judgements.jsonl").read_bytes() == judged_before


def test_garbage_judge_records_zero_usable_examples_and_stops(tmp_path):
    garbage = ScriptedGenerator(["lorem ipsum", "%%%", "[[Z]]"])
    loop = SelfTaughtEvaluator("no-model-needed", _config(), make_generator=lambda path: garbage)
    with pytest.raises(NoUsableJudgementsError, match=r"0 usable judgements .*48 samples: 48 unparseable"):
        loop.run(tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["metrics"]["usable_examples"] == 0 and "Not training on nothing" in rows[1]["notes"][0]
    assert rows[0]["metrics"]["invalid_rate"] == 1.0
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "0 usable judgements" in report
    assert not (tmp_path / "run" / "iter_1" / "model").exists()


def test_missing_or_corrupt_checkpoint_is_a_clear_error(tmp_path):
    loop = SelfTaughtEvaluator("x", _config(), make_generator=lambda p: ScriptedGenerator(["[[A]]"]))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        loop.run(tmp_path / "nothing", resume=True)
    from loopwright.sdk.artifacts import RunDir

    RunDir(tmp_path / "r", config={"x": 1})
    with pytest.raises(FileNotFoundError, match=r"checkpoints\.sqlite not found"):
        loop.run(tmp_path / "r", resume=True)
    (tmp_path / "r" / "checkpoints.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"checkpoints\.sqlite is corrupt"):
        loop.run(tmp_path / "r", resume=True)
    sqlite3.connect(tmp_path / "r2.sqlite").execute("CREATE TABLE other (x)").connection.commit()
    (tmp_path / "r" / "checkpoints.sqlite").write_bytes((tmp_path / "r2.sqlite").read_bytes())
    with pytest.raises(ConfigError, match="no LangGraph checkpoints table"):
        loop.run(tmp_path / "r", resume=True)


def test_generator_pair_source_parses_worse_responses(tmp_path):
    good = ("[User Question Modified]\n{q} (twice)\n\n[The Start of Assistant's Answer to the modified "
            "instruction]\n42\n[The End of Assistant's Answer to the modified instruction]")

    def respond(text: str, j: int, rng: random.Random) -> str:
        if "[User Question Modified]" in text and "Your task has two parts" in text:
            q = re.search(r"\[User Question\]\n(.*?)\n\n", text, re.S).group(1)
            return good.format(q=q) if "1" in q else "I refuse"
        return "7"

    gen = ScriptedGenerator(respond)
    loop = SelfTaughtEvaluator("x", _config(pair_source="generator"), make_generator=lambda p: gen,
                               pair_generator=gen, instructions=["Add 1 and 2.", "Say hi.", "Count to 10."])
    rows, notes = loop._generator_pairs(0, set())
    assert [r["question"] for r in rows] == ["Add 1 and 2.", "Count to 10."]
    assert rows[0]["chosen"] == "7" and rows[0]["rejected"] == "42"
    assert rows[0]["modified_question"] == "Add 1 and 2. (twice)"
    assert notes == ["1 worse-response outputs unusable: no '[User Question Modified]' header"]
    with pytest.raises(ConfigError, match="pair_generator"):
        SelfTaughtEvaluator("x", _config(pair_source="generator"))


@pytest.mark.slow
def test_sandbox_demo_runs_small(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "self_taught_evaluator.py"), "--iterations", "2", "--pairs", "32",
         "--samples", "2", "--eval-pairs", "24", "--sft-steps", "20", "--run-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "demo" / "iterations.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert all(r["metrics"]["judge_accuracy"] is not None for r in rows)
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
