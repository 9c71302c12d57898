"""RewardModelJudge on real reward models trained with TRL's RewardTrainer.

- A reward model trained on MiniArith correct vs corrupted solutions (the cached sandbox RM: seed model +
  RewardTrainer, 300 steps on 2,000 pairs) ranks held-out correct answers above incorrect ones. Measured on
  300 held-out problems (one corrupted solution each, corruption kinds cycling): AUC 0.626 (correct vs incorrect
  over all pairs), per-pair accuracy 0.68; by kind wrong_answer_line 0.66, wrong_step 0.64, wrong_final 0.59.
  The assertion threshold, AUC > 0.56, is well below that but clearly above chance (with 300 x 300 pairs the
  standard error of an AUC near 0.6 is about 0.023, so 0.56 is ~3 standard errors above 0.5).
- A few RewardTrainer steps from a causal-LM folder produce a folder that RewardModelJudge (and TRL) load.
- Batched scores equal one-by-one scores; compare() agrees with score(); invalid inputs give invalid Verdicts.
"""

from __future__ import annotations

import math

import pytest
from judge_conformance import JUDGE_CONFORMANCE_CHECKS

from loopwright.judges.reward_model import PARSER_VERSION, RewardModelJudge
from loopwright.trainers.reward import (
    COT_CORRUPTIONS,
    corrupt_cot,
    ensure_miniarith_reward_model,
    miniarith_preference_pairs,
    train_reward_model,
)
from loopwright.trainers.sandbox.seed import held_out_problems

AUC_THRESHOLD = 0.56
N_HELD_OUT = 300


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread: on the shared 2-core machine two threads ran these tiny models up to 8x slower
    (scoring 200 answers: 15.9 s with 2 threads, 2.0 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _auc(pos: list[float], neg: list[float]) -> float:
    """Mann-Whitney AUC: P(score of a correct answer > score of an incorrect one), ties count half."""
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def sandbox_rm():
    return ensure_miniarith_reward_model()


@pytest.fixture(scope="module")
def rm_judge(sandbox_rm):
    return RewardModelJudge(sandbox_rm, batch_size=64)


@pytest.fixture(scope="module")
def held_out_rows():
    return miniarith_preference_pairs(held_out_problems(N_HELD_OUT), seed=123)


def test_corruptions_change_the_numbers_only():
    import random

    for p in held_out_problems(30):
        for kind in COT_CORRUPTIONS:
            bad = corrupt_cot(p, kind, random.Random(0))
            assert bad != p.cot
            assert bad.count("\n") == p.cot.count("\n")
            assert bad.startswith(p.cot.split("\n")[0].split("=")[0])  # same first operands
    with pytest.raises(ValueError, match="unknown CoT corruption"):
        corrupt_cot(held_out_problems(1)[0], "typo", random.Random(0))


def test_reward_model_ranks_correct_above_incorrect(rm_judge, held_out_rows):
    prompts = [r["prompt"] for r in held_out_rows]
    good = rm_judge.score(prompts, [r["chosen"][0]["content"] for r in held_out_rows])
    bad = rm_judge.score(prompts, [r["rejected"][0]["content"] for r in held_out_rows])
    assert all(v.valid for v in good + bad)
    pos, neg = [v.score for v in good], [v.score for v in bad]
    auc = _auc(pos, neg)
    pair_acc = sum(a > b for a, b in zip(pos, neg, strict=True)) / len(pos)
    print(f"\nsandbox RM held-out AUC {auc:.3f}, pair accuracy {pair_acc:.3f} (n={len(pos)})")
    assert auc > AUC_THRESHOLD, f"AUC {auc:.3f} <= {AUC_THRESHOLD}"
    assert pair_acc > 0.55


@pytest.mark.parametrize("check", JUDGE_CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(rm_judge, check):
    check(rm_judge)


def test_verdict_provenance(rm_judge, sandbox_rm):
    v = rm_judge.score(["How many?"], ["3+4=<<3+4=7>>7\n#### 7"])[0]
    assert v.kind == "pointwise" and v.valid and isinstance(v.score, float)
    assert v.judge.model == str(sandbox_rm)
    assert v.judge.parser_version == PARSER_VERSION
    assert v.judge.template_hash and len(v.judge.template_hash) == 16
    assert v.usage.prompt_tokens > 5


def test_batched_scores_equal_one_by_one(rm_judge, held_out_rows):
    rows = held_out_rows[:12]
    prompts = [r["prompt"] for r in rows]
    # mixed lengths in one batch (right padding), plus a string prompt
    responses = [r["chosen"][0]["content"] if i % 2 else r["rejected"][0]["content"] for i, r in enumerate(rows)]
    prompts[3] = rows[3]["prompt"][0]["content"]
    batched = RewardModelJudge(rm_judge.model, tokenizer=rm_judge.tokenizer, batch_size=5).score(prompts, responses)
    single = [rm_judge.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    for b, s in zip(batched, single, strict=True):
        assert b.score == pytest.approx(s.score, abs=1e-4)
    # a string prompt is the same chat as [user message]
    assert single[3].score == pytest.approx(rm_judge.score([rows[3]["prompt"]], [responses[3]])[0].score, abs=1e-6)


def test_compare_is_consistent_with_score(rm_judge, held_out_rows):
    rows = held_out_rows[:10]
    prompts = [r["prompt"] for r in rows]
    a = [r["chosen"][0]["content"] for r in rows]
    b = [r["rejected"][0]["content"] for r in rows]
    ra = [v.score for v in rm_judge.score(prompts, a)]
    rb = [v.score for v in rm_judge.score(prompts, b)]
    fwd = rm_judge.compare(prompts, a, b)
    rev = rm_judge.compare(prompts, b, a)
    for x, y, f, r in zip(ra, rb, fwd, rev, strict=True):
        assert f.valid and f.kind == "pairwise" and f.swap.consistent
        assert f.preference == ("A" if x > y else "B" if x < y else "tie")
        assert f.p_a == pytest.approx(1 / (1 + math.exp(-(x - y))), abs=1e-5)
        assert r.p_a == pytest.approx(1 - f.p_a, abs=1e-5)
        assert {f.preference, r.preference} <= {"A", "B", "tie"} and (f.preference == "tie") == (r.preference == "tie")
    # ties within eps
    same = RewardModelJudge(rm_judge.model, tokenizer=rm_judge.tokenizer, tie_eps=1e-3).compare(prompts[:2], a[:2],
                                                                                              a[:2])
    assert [v.preference for v in same] == ["tie", "tie"] and all(v.p_a == pytest.approx(0.5) for v in same)
    ranked = rm_judge.rank(prompts[:3], [[b[i], a[i]] for i in range(3)])
    for i, v in enumerate(ranked):
        assert v.valid and sorted(v.ranking) == [0, 1]
        assert v.ranking[0] == (1 if ra[i] > rb[i] else 0)


def test_invalid_inputs_are_invalid_verdicts(rm_judge):
    long_text = "1+1=<<1+1=2>>2\n" * 200  # far beyond the 512 positions of the sandbox model
    verdicts = rm_judge.score(["q", "q", "q"], ["#### 2", long_text, None])  # type: ignore[list-item]
    assert verdicts[0].valid
    assert not verdicts[1].valid and "max_length" in verdicts[1].invalid_reason and verdicts[1].score is None
    assert not verdicts[2].valid and "NoneType" in verdicts[2].invalid_reason
    bad_prompt = rm_judge.score([[{"role": "wizard", "content": "x"}]], ["y"])[0]
    assert not bad_prompt.valid and "render" in bad_prompt.invalid_reason
    cmp = rm_judge.compare(["q"], [long_text], ["#### 2"])[0]
    assert not cmp.valid and cmp.invalid_reason.startswith("A:") and cmp.preference is None
    # truncation when asked: keeps the last max_length tokens, says so
    trunc = RewardModelJudge(rm_judge.model, tokenizer=rm_judge.tokenizer, truncate=True, max_length=64)
    v = trunc.score(["q"], [long_text])[0]
    assert v.valid and v.usage.prompt_tokens == 64 and "truncated" in v.reasoning
    with pytest.raises(ValueError, match="responses"):
        rm_judge.score(["q", "q"], ["a"])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        RewardModelJudge(rm_judge.model, tokenizer=rm_judge.tokenizer, max_length=10_000)


def test_reward_trainer_artifact_loads_in_judge_and_params_change(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    pairs = miniarith_preference_pairs(16)
    out = train_reward_model(tiny_model_dir, pairs, tmp_path / "rm", max_steps=4, batch_size=4, learning_rate=1e-2,
                             max_length=128)
    trained = AutoModelForSequenceClassification.from_pretrained(out)
    assert trained.config.num_labels == 1 and trained.config.pad_token_id is not None
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    trunk = dict(base.model.named_parameters())
    changed = [n for n, p in trained.model.named_parameters() if not torch.equal(p, trunk[n])]
    assert len(changed) == len(trunk), "RewardTrainer left some trunk parameters unchanged"
    judge = RewardModelJudge(out)
    v = judge.score([pairs[0]["prompt"]], [pairs[0]["chosen"][0]["content"]])[0]
    assert v.valid and math.isfinite(v.score)
