"""Self-Taught Evaluator on real components only: the sandbox seed judge (a real transformers model taught the
verdict format), real generation, rejection sampling, real TRL SFT of the next judge, LangGraph stages, report.

The seed judge is built by ``make models`` (cached under $LOOPWRIGHT_HOME); built here on first use otherwise.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def seed_judge_and_config():
    from loopwright.judges.self_taught import SelfTaughtConfig
    from loopwright.judges.self_taught.sandbox import SeedJudgeConfig, ensure_seed_judge
    from loopwright.trainers.sft import SFTSettings

    config = SelfTaughtConfig(
        iterations=1, judge_prompt_style="compact", pairs_per_iteration=8, samples=2, eval_pairs=8, seed=0,
        sft=SFTSettings(max_steps=2, learning_rate=3e-3, batch_size=16, max_length=320),
        max_tokens=24, eval_max_tokens=24,
    )
    return ensure_seed_judge(SeedJudgeConfig(task=config.task)), config


def test_one_iteration_with_the_real_sandbox_seed_judge(seed_judge_and_config, tmp_path):
    from loopwright.judges.self_taught import SelfTaughtEvaluator
    from loopwright.judges.self_taught.loop import backend_factory

    seed_judge, config = seed_judge_and_config
    run = tmp_path / "run"
    records = SelfTaughtEvaluator(seed_judge, config, make_generator=backend_factory("transformers")).run(run)

    assert [r["iteration"] for r in records] == [0, 1]
    seed_m, it1 = records[0]["metrics"], records[1]["metrics"]
    # the seed judge learned the verdict format: most of its held-out verdicts parse
    assert seed_m["invalid_rate"] < 0.5, seed_m
    judged = [json.loads(x) for x in (run / "iter_1" / "judgements.jsonl").read_text().splitlines()]
    assert len(judged) == 2 * config.pairs_per_iteration and {k["order"] for k in judged} == {"0_1", "1_0"}
    assert all(len(k["samples"]) == config.samples for k in judged)
    # rejection sampling kept only judgements that agree with the known label, then balanced the labels
    train = [json.loads(x) for x in (run / "iter_1" / "train.jsonl").read_text().splitlines()]
    assert train and it1["usable_examples"] == len(train)
    assert all(r["target"].endswith(f"[[{r['label']}]]") for r in train)
    assert sum(r["label"] == "A" for r in train) == sum(r["label"] == "B" for r in train)
    # the next judge was trained (re-initialised from the seed) with TRL and evaluated on held-out pairs
    manifest = json.loads((run / "iter_1" / "model" / "loopwright_manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["n_rows"] == len(train)
    assert it1["judge_accuracy"] is not None and (run / "iter_1" / "eval" / "records.jsonl").is_file()
    assert (run / "report" / "report.md").is_file()
