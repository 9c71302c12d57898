"""RIP / Self-RIP: pairing, percentiles, the conjunction filter, re-thresholding without re-scoring, bad input,
TRL output, Self-Instruct dedup, and a real-data smoke test on hh-rlhf (spec/loops.md §5.7)."""

from __future__ import annotations

import gzip
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.judges.rip import (
    RIPConfig,
    RIPFilter,
    RIPThresholds,
    SelfRIPConfig,
    best_worst,
    check_prompt,
    load_rip,
    parse_new_prompt,
    percentile,
    rescore,
    rip_stages,
    rouge_l,
    run_rip,
    self_rip,
    synthesize_prompts,
)
from loopwright.sdk.artifacts import RunDir, read_jsonl
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.judge import Judge
from loopwright.sdk.report import append_iteration
from loopwright.sdk.types import Verdict

# ------------------------------------------------------------------------------------------------ pure parts


def test_best_worst_ties_are_deterministic():
    assert best_worst([0.1, 0.9, 0.9, -1.0, -1.0]) == (1, 3)
    assert best_worst([None, 2.0, None]) == (1, 1)  # one valid reward: no pair (the filter drops it)
    assert best_worst([None, None]) is None
    assert best_worst([1.0, 1.0, 1.0]) == (0, 2)  # all equal: still two different responses
    assert best_worst([float("nan"), 3.0, 1.0]) == (1, 2)


@settings(deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=40), st.floats(0, 100))
def test_percentile_matches_numpy(xs, pct):
    import numpy as np

    assert percentile(xs, pct) == pytest.approx(float(np.percentile(xs, pct)), rel=1e-9, abs=1e-6)


def _rec(rewards, lengths=None, texts=None):
    texts = texts or [f"response {i}" for i in range(len(rewards))]
    return {"responses": texts, "rewards": rewards, "lengths": lengths or [len(t) for t in texts]}


def test_metrics_and_rules():
    f = RIPFilter()
    s = f.score([_rec([0.2, 0.9, -0.5], lengths=[5, 7, 11])])[0]
    assert (s["chosen_idx"], s["rejected_idx"]) == (1, 2)
    assert s["rejected_reward"] == -0.5 and s["rejected_length"] == 11 and s["reward_gap"] == pytest.approx(1.4)
    # absolute thresholds: each rule drops for its own reason
    th = RIPThresholds(rejected_reward=0.0, rejected_length=20, reward_gap=1.0)
    d = f.keep([s], th)[0]
    assert not d.keep and d.reason == "rejected_reward_low;rejected_length_low;reward_gap_high"
    d = f.keep([s], RIPThresholds(rejected_reward=-1, rejected_length=11, reward_gap=1.4))[0]
    assert d.keep and d.reason is None  # >= / <= are inclusive, as in the paper's rule


def test_invalid_prompts_dropped_before_percentiles():
    f = RIPFilter()
    recs = [_rec([None, None]), _rec([1.0, None]), _rec([1.0, 0.0], texts=["same", "same"])]
    recs += [_rec([float(i), float(i) + 1], lengths=[10 + i, 3]) for i in range(4)]
    scores = f.score(recs)
    ds = f.keep(scores)
    assert [d.reason for d in ds[:3]] == ["no_valid_rewards", "too_few_valid_rewards", "chosen_equals_rejected"]
    # percentiles come from the 4 valid prompts only: median rejected reward = 1.5
    assert f.last_thresholds["rejected_reward"] == pytest.approx(1.5)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5), st.integers(1, 50)), min_size=2, max_size=30),
    st.floats(0, 100), st.floats(0, 100), st.floats(0, 100), st.floats(0, 100),
)
def test_filter_is_monotone_in_thresholds(rows, p1, p2, q3a, q3b):
    """Tighter thresholds keep a subset (spec §8.3), on one scored pool."""
    f = RIPFilter()
    scores = f.score([_rec([a, b], lengths=[n, n]) for a, b, n in rows])
    lo, hi = sorted((p1, p2))
    g_lo, g_hi = sorted((q3a, q3b))
    loose = f.keep(scores, RIPThresholds(rejected_reward_pct=lo, rejected_length_pct=lo, reward_gap_pct=g_hi))
    tight = f.keep(scores, RIPThresholds(rejected_reward_pct=hi, rejected_length_pct=hi, reward_gap_pct=g_lo))
    assert all(lk or not tk for lk, tk in zip((d.keep for d in loose), (d.keep for d in tight), strict=True))


def test_thresholds_validate():
    with pytest.raises(ValueError):
        RIPThresholds(rejected_reward_pct=120)
    with pytest.raises(ValueError):
        RIPThresholds(reward_gap=float("inf"))
    with pytest.raises(ValueError, match="min_valid"):
        RIPFilter(min_valid=0)
    with pytest.raises(ValueError, match="one reward"):
        RIPFilter().score([{"responses": ["a", "b"], "rewards": [1.0]}])


def test_check_prompt_bad_input():
    assert check_prompt("  ")[1] == "invalid_prompt: empty text"
    assert check_prompt(42)[1].startswith("invalid_prompt: TypeError")
    assert check_prompt([])[1] == "invalid_prompt: no messages"
    assert check_prompt([{"role": "system", "content": "x"}, {"role": "user", "content": " "}])[1] is not None
    assert check_prompt([{"role": "nobody", "content": "x"}])[1].startswith("invalid_prompt")
    assert check_prompt("What is 2+2?") == ("What is 2+2?", None)


# ------------------------------------------------------------------------------------------------ pipeline


class LengthJudge(Judge):
    """Scripted reward for unit tests: reward = number of words; invalid for responses containing 'BAD'."""

    kinds = frozenset({"pointwise"})

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += 1
        return [Verdict(kind="pointwise", valid=False, invalid_reason="scripted: unscorable") if "BAD" in r
                else Verdict(kind="pointwise", valid=True, score=float(len(r.split()))) for r in responses]


class NegJudge(LengthJudge):
    def score(self, prompts, responses):
        return [v if not v.valid else v.model_copy(update={"score": -v.score})
                for v in super().score(prompts, responses)]


def _respond(prompt: str, i: int, rng: random.Random) -> str:
    if "unscorable" in prompt:
        return "BAD"
    if "noisy" in prompt:
        return " ".join(["word"] * (1 + 7 * (i % 2)))  # high gap
    return " ".join(["word"] * (4 + i % 2 + len(prompt) % 3))


def test_run_rip_end_to_end_and_recompute(tmp_path):
    prompts = [f"Question {i}: add {i} and {i + 1}." for i in range(8)] + ["noisy prompt"] * 2
    prompts += ["an unscorable prompt", "", None, [{"role": "user", "content": "chat prompt here"}]]
    gen = ScriptedGenerator(_respond)
    judge = LengthJudge()
    cfg = RIPConfig(n_responses=4, max_tokens=32, judge_batch_size=7)
    res = run_rip(prompts, gen, judge, cfg, meta=[{"i": i} for i in range(len(prompts))])
    st_ = res.stats()
    assert st_["n_prompts"] == len(prompts)
    assert st_["per_reason"]["invalid_prompt: empty text"] == 1
    assert st_["per_reason"]["invalid_prompt: None"] == 1
    assert st_["per_reason"]["no_valid_rewards"] == 1
    assert st_["n_invalid_rewards"] == 4
    assert judge.calls == math.ceil(12 * 4 / 7)
    # the two noisy prompts have the largest gap: dropped for it
    noisy = [d for r, d in zip(res.records, res.decisions, strict=True) if r["prompt"] == "noisy prompt"]
    assert all(not d.keep and "reward_gap_high" in d.reason for d in noisy)
    rows = res.dpo_rows()
    assert rows and len(rows) == st_["n_kept"]
    for row in rows:
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert row["chosen_reward"] >= row["rejected_reward"]
    ds = res.to_dataset()  # what DPOTrainer takes: the same pairs, TRL columns only
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == len(rows)
    assert ds[0]["chosen"] == rows[0]["chosen"]
    assert "reward_gap" in res.to_dataset(provenance=True).column_names
    # re-threshold without calling the judge or the generator again
    calls_before = (judge.calls, len(gen.calls))
    loose = res.recompute(RIPThresholds(rejected_reward_pct=0, rejected_length_pct=0, reward_gap_pct=100))
    assert (judge.calls, len(gen.calls)) == calls_before
    assert loose.stats()["n_kept"] == loose.stats()["n_scored_pairs"] >= st_["n_kept"]
    # another judge on the same responses: no generation
    flipped = rescore(res, NegJudge(), cfg)
    assert len(gen.calls) == calls_before[1]
    assert [r["responses"] for r in flipped.records] == [r["responses"] for r in res.records]
    assert all(s2["reward_gap"] == pytest.approx(s1["reward_gap"]) for s1, s2 in
               zip(res.scores, flipped.scores, strict=True) if "reward_gap" in s1)
    # atomic outputs, RunDir stage, iterations.jsonl
    run = RunDir(tmp_path / "run", config={"t": 1})
    paths = res.write(run)
    assert run.is_done("rip")
    rejected = read_jsonl(paths["rejected.jsonl"])
    assert len(rejected) == st_["n_prompts"] - st_["n_kept"]
    assert all(r["reason"] for r in rejected)
    assert {r["reason"] for r in rejected} >= {"invalid_prompt: None", "no_valid_rewards"}
    assert len(read_jsonl(paths["dpo.jsonl"])) == st_["n_kept"]
    # a later process re-thresholds from disk, no judge and no generator
    again = load_rip(run.path)
    assert [d.keep for d in again.decisions] == [d.keep for d in res.decisions]
    assert again.stats()["per_reason"] == st_["per_reason"]
    assert load_rip(run.path, thresholds=RIPThresholds(reward_gap_pct=None)).stats()["n_kept"] >= st_["n_kept"]
    append_iteration(run.path, res.iteration_row(0))
    append_iteration(run.path, loose.iteration_row(1))
    its = read_jsonl(run.path / "iterations.jsonl")
    assert [r["iteration"] for r in its] == [0, 1] and "keep_rate" in its[0]["metrics"]


def test_rip_config_misuse():
    with pytest.raises(ValueError):
        RIPConfig(n_responses=1)
    with pytest.raises(TypeError, match="executor"):
        run_rip(["x"], object(), LengthJudge())
    with pytest.raises(ValueError, match="ids"):
        run_rip(["x", "y"], ScriptedGenerator(responses=["a"]), LengthJudge(), ids=[1])


# ------------------------------------------------------------------------------------------------ Self-RIP


def test_rouge_l_and_parse():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("a b c d", "e f g h") == 0.0
    assert 0.5 < rouge_l("Tom has 3 pens and buys 4 more", "Tom has 5 pens and buys 4 more") < 1.0
    assert parse_new_prompt("Prompt 9: Anna has 3 cats.\nPrompt 10: more") == ("Anna has 3 cats.", None)
    assert parse_new_prompt("   ") == (None, "empty")
    assert parse_new_prompt("Anna has", "length") == (None, "truncated")


def test_self_rip_filters_synthetic_prompts():
    seeds = [f"Tom has {i} pens and buys {i + 2} more pens today. How many pens does Tom have?" for i in range(10)]
    outputs = ["Prompt 11: Draw a picture of a cat for me please.",  # banned keyword
               seeds[0],  # duplicate
               "Hi",  # too short
               "Maya has 12 apples and gives 5 to her brother in the park. How many are left?",
               ""]  # empty

    def respond(prompt, i, rng, state={"k": 0}):  # noqa: B006 - a scripted cycle across calls
        if "Write one new prompt" in prompt:
            state["k"] += 1
            return outputs[(state["k"] - 1) % len(outputs)]
        return " ".join(["w"] * (3 + i))

    gen = ScriptedGenerator(respond)
    accepted, rejected = synthesize_prompts(seeds, gen, SelfRIPConfig(n_generate=5, few_shot=3))
    assert accepted == [outputs[3]]
    reasons = sorted(r["reason"].split(":")[0] for r in rejected)
    assert reasons == ["banned_keyword", "empty", "near_duplicate", "too_short"]
    res = self_rip(seeds, gen, LengthJudge(), RIPConfig(n_responses=3, max_tokens=16),
                   SelfRIPConfig(n_generate=10, few_shot=3),
                   reuse_thresholds={"rejected_reward": 0.0, "rejected_length": 0.0, "reward_gap": 100.0})
    assert res.synthetic and res.rip.stats()["n_prompts"] == len(res.synthetic)
    assert res.rip.thresholds == {"rejected_reward": 0.0, "rejected_length": 0.0, "reward_gap": 100.0}
    assert res.stats()["n_generated"] == 10
    assert all(isinstance(r["prompt"], str) for r in res.rip.records)  # string seeds -> string prompts
    chats = self_rip([[{"role": "user", "content": q}] for q in seeds], gen, LengthJudge(),
                     RIPConfig(n_responses=3, max_tokens=16), SelfRIPConfig(n_generate=5, few_shot=3))
    assert all(r["prompt"][0]["role"] == "user" for r in chats.rip.records)  # chat seeds -> chat prompts


# ------------------------------------------------------------------------------------------------ real data


def test_filter_arithmetic_on_hh_rlhf(shared_data):
    """No model: hh-rlhf chosen/rejected texts with a word-count reward; checks m1/m2/m3 and the 50 % cut."""
    rows = []
    with gzip.open(shared_data / "hh_rlhf_harmless" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) == 200:
                break
    recs = [_rec([float(len(r["chosen"].split())), float(len(r["rejected"].split()))],
                 texts=[r["chosen"], r["rejected"]]) for r in rows]
    f_ = RIPFilter()
    scores = f_.score(recs)
    ds = f_.keep(scores)
    pool = [s for s in scores if "rejected_reward" in s]
    assert len(pool) >= 150
    for s in pool:
        assert s["reward_gap"] >= 0 and s["rejected_reward"] == min(s["chosen_reward"], s["rejected_reward"])
    kept = sum(d.keep for d in ds)
    assert 0 < kept < len(pool) / 2  # a conjunction of three median cuts keeps well under half


def test_rip_as_durable_stages_resumes(tmp_path):
    """run_stages (LangGraph + SQLite): a run interrupted after sampling resumes without sampling again."""
    from loopwright.sdk.stages import run_stages

    prompts = [f"Question {i}: add {i} and {i + 1}." for i in range(6)]
    gen = ScriptedGenerator(_respond)
    cfg = RIPConfig(n_responses=3, max_tokens=16)
    run = RunDir(tmp_path / "run", config={"t": 2})
    stages = rip_stages(prompts, gen, LengthJudge(), cfg)

    def boom(state, run_):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_stages([stages[0], stages[1].__class__("rip_filter", boom)], run)
    assert run.is_done("rip_sample_score") and not run.is_done("rip_filter")
    calls = len(gen.calls)
    state = run_stages(stages, RunDir.open(run.path), resume=True)
    assert len(gen.calls) == calls  # no re-sampling
    assert state["completed"] == ["rip_sample_score", "rip_filter"]
    assert read_jsonl(run.path / "iterations.jsonl")[0]["iteration"] == 0
