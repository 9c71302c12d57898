"""Rejection-sampling SFT with the oracle judge (issue 13), small, on real components: the sandbox seed model
samples through transformers, GoldAnswerJudge (answer + steps) filters, TRL SFT trains, the held-out accuracy is
recorded with its n and Wilson interval; a finished run resumes as a no-op and its kept rows export to TRL.

This checks the loop's mechanics only; whether it *improves* the model is measured by
``examples/rejection_sft.py`` at full size (docs/results.md)."""

from __future__ import annotations

import json

import pytest

from loopwright.judges.oracle import GoldAnswerJudge, arithmetic_ok
from loopwright.judges.rejection_sft import RejectionSFTConfig, RejectionSFTLoop
from loopwright.sdk.errors import ConfigError


@pytest.fixture(scope="module")
def seed_dir():
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


@pytest.mark.timeout(900)
def test_one_oracle_iteration_end_to_end_then_resume(seed_dir, tmp_path):
    from loopwright.trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

    problems = held_out_problems(24 + 48)
    eval_set, train_set = problems[:24], problems[24:]
    judge = GoldAnswerJudge(train_set, check_steps=True)
    calls = []

    def evaluate(gen):
        calls.append(gen.model_id)
        r = evaluate_accuracy(gen, eval_set, max_tokens=96)
        return int(r["correct"]), int(r["n"])

    cfg = RejectionSFTConfig(iterations=1, samples=6, temperature=1.0, max_tokens=96, eval_max_tokens=96,
                             batch_size=8, epochs=1.0)
    loop = RejectionSFTLoop(seed_dir, [miniarith_prompt(p) for p in train_set], judge, evaluate, cfg)
    records = loop.run(tmp_path / "run")
    assert [r["iteration"] for r in records] == [0, 1] and len(calls) == 2
    for r in records:
        ci = r["intervals"]["accuracy"]
        assert ci["n"] == 24 and ci["method"] == "wilson" and ci["lo"] <= ci["estimate"] <= ci["hi"]
    run = tmp_path / "run"
    samples = [json.loads(x) for x in (run / "iter_1" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 48 * 6
    kept = [json.loads(x) for x in (run / "iter_1" / "kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (run / "iter_1" / "rejected.jsonl").read_text().splitlines()]
    assert len(kept) + len(rejected) == len(samples) and kept, "the seed model solves none of 48 x 6 samples"
    for row in kept:  # every kept sample is right, by the checker the loop used, and its steps are right
        prompt, answer = row["messages"][:-1], row["messages"][-1]["content"]
        assert judge.check(prompt, answer) and arithmetic_ok(answer)
    assert all(r["reason"] for r in rejected)
    assert (run / "iter_1" / "model" / "config.json").is_file()
    ds = RejectionSFTLoop.to_dataset(run, 1)
    assert ds.column_names == ["messages"] and len(ds) == len(kept)
    # a finished run resumes without evaluating or training again
    again = loop.run(run, resume=True)
    assert again == records and len(calls) == 2
    with pytest.raises(ConfigError, match="already holds a run"):
        loop.run(run)


def test_misuse_is_refused(seed_dir):
    class PairwiseOnly(GoldAnswerJudge):
        kinds = frozenset({"pairwise"})

    with pytest.raises(ConfigError, match="pointwise judge"):
        RejectionSFTLoop(seed_dir, ["q"], PairwiseOnly([("q", 1)]), lambda g: (0, 1))
    with pytest.raises(ConfigError, match="at least one training prompt"):
        RejectionSFTLoop(seed_dir, [], GoldAnswerJudge([("q", 1)]), lambda g: (0, 1))
