"""The Meta-Rewarding loop's bad-input behaviour on real components (sandbox seed model through transformers,
LangGraph + SQLite stages): a judge that emits only garbage stops the loop with a clear message and a recorded
iteration; missing or corrupt checkpoints fail with an error naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from loopwright.judges.meta_rewarding import (
    CheckpointError,
    MetaRewardingLoop,
    NoUsablePairsError,
    sandbox_config,
)
from loopwright.judges.meta_rewarding.checkpoints import check_model_dir, check_state_db
from loopwright.judges.meta_rewarding.sandbox import garbage_judge
from loopwright.sdk.errors import ConfigError

TINY = {"iterations": 1, "prompts_per_iter": 3, "actor": {"K": 2, "max_tokens": 24}, "judge": {"N": 2}}


def _prompts(n=3):
    from loopwright.sdk.tasks.miniarith import generate_problems
    from loopwright.trainers.sandbox.seed import SANDBOX_TASK, miniarith_prompt

    return [miniarith_prompt(p) for p in generate_problems(n, SANDBOX_TASK.model_copy(update={"seed": 99}))]


def _factory(model_dir):
    import torch

    from loopwright.sdk.generators.transformers import TransformersGenerator

    torch.set_num_threads(1)
    return TransformersGenerator(model_dir, batch_size=16)


def test_garbage_judge_stops_with_zero_pairs(seed_model_dir, tmp_path):
    started = []
    loop = MetaRewardingLoop(sandbox_config(**TINY), tmp_path / "run", seed_model=seed_model_dir, prompts=_prompts(),
                             generator_factory=_factory, judge=garbage_judge(), meta_judge=garbage_judge(),
                             on_stage=started.append)
    with pytest.raises(NoUsablePairsError, match=r"iteration 1: 0 usable preference pairs .*0/12 valid judgements"):
        loop.run()
    assert "iter1.train" not in started and started[-1] == "iter1.build_pairs"
    rows = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    rec = rows[-1]
    assert rec["iteration"] == 1 and rec["metrics"]["train_pairs"] == 0 and rec["metrics"]["judge_valid_rate"] == 0
    assert "stopping instead of training on nothing" in rec["notes"][0]
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "0 usable preference pairs" in report
    judgments = [json.loads(x) for x in (tmp_path / "run" / "iter1" / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 12 and all(j["score"] is None and j["invalid_reason"] for j in judgments)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["iter1.build_pairs"]["status"] == "failed"
    assert not (tmp_path / "run" / "iter1" / "model").exists()
    # starting again in the same directory without resume is refused
    with pytest.raises(ConfigError, match="already holds a run"):
        MetaRewardingLoop(sandbox_config(**TINY), tmp_path / "run", seed_model=seed_model_dir, prompts=_prompts(),
                          judge=garbage_judge()).run()


def test_missing_or_corrupt_checkpoints_name_the_file(seed_model_dir, tmp_path):
    bad = tmp_path / "bad_seed"
    shutil.copytree(seed_model_dir, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # an interrupted copy
    loop = MetaRewardingLoop(sandbox_config(**TINY), tmp_path / "run", seed_model=bad, prompts=_prompts())
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated safetensors file") as e:
        loop.run()
    assert e.value.path == weights
    assert not (tmp_path / "run").exists(), "nothing runs on a broken seed"

    weights.unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        check_model_dir(bad)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: corrupt config\.json"):
        check_model_dir(bad)
    with pytest.raises(CheckpointError, match=r"nope: model checkpoint not found"):
        check_model_dir(tmp_path / "nope")

    db = tmp_path / "run2" / "checkpoints.sqlite"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CheckpointError, match=r"checkpoints\.sqlite: corrupt loop state database"):
        check_state_db(db)
    loop = MetaRewardingLoop(sandbox_config(**TINY), db.parent, seed_model=seed_model_dir, prompts=_prompts())
    with pytest.raises(CheckpointError, match=r"checkpoints\.sqlite"):
        loop.run(resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        MetaRewardingLoop(sandbox_config(**TINY), tmp_path / "run3", seed_model=seed_model_dir,
                          prompts=_prompts()).run(resume=True)


def test_construction_misuse(seed_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="prompts_per_iter=3 but the prompt pool holds only 2"):
        MetaRewardingLoop(sandbox_config(**TINY), tmp_path, seed_model=seed_model_dir, prompts=_prompts(2))
    with pytest.raises(TypeError, match="judge must be a loopwright Generator"):
        MetaRewardingLoop(sandbox_config(**TINY), tmp_path, seed_model=seed_model_dir, prompts=_prompts(),
                          judge="gpt-4")  # type: ignore[arg-type]
