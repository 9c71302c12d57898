"""Meta-Rewarding's pure parts (spec/loops.md §3.3, §3.4, §3.8, §8.3): length-controlled actor pairs, the meta-judge's
position weights, battle matrix and Elo MLE, the max-variance pick, judge-pair length caps, DPO row assembly,
the meta-judge's parsing, the config's validation and the sandbox verifier."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.judges.meta_rewarding import (
    Battle,
    MetaJudge,
    MetaRewardingConfig,
    battle_matrix,
    battle_plan,
    count_position_wins,
    elo_log_likelihood,
    elo_mle,
    pick_max_variance,
    position_weights,
    sandbox_config,
    select_actor_pair,
    select_judge_pair,
    spearman,
)
from loopwright.judges.meta_rewarding.sandbox import (
    SANDBOX_JUDGE_TEMPLATE,
    SANDBOX_META_TEMPLATE,
    verified_score,
    verifier_judge,
    verifier_meta_judge,
)
from loopwright.judges.meta_rewarding.stages import _dedup, _trl_row
from loopwright.judges.pointwise import PointwiseJudge
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.tasks.miniarith import generate_problems
from loopwright.sdk.types import SamplingParams

# --------------------------------------------------------------------------------------------- actor pairs (§3.3)


def test_rho_zero_is_best_vs_worst():
    c = select_actor_pair([3.0, 4.5, 1.0, 2.0], [10, 50, 20, 5], rho=0.0)
    assert (c.chosen, c.rejected) == (1, 2)


def test_rho_picks_shortest_good_and_longest_bad():
    # S_max=5, S_min=1, rho=0.4: top tier S >= 3.4 -> {0 (5.0, len 90), 1 (3.5, len 20)}; bottom tier S <= 2.6 ->
    # {2 (1.0, len 10), 3 (2.5, len 70)}
    scores, lengths = [5.0, 3.5, 1.0, 2.5, 3.0], [90, 20, 10, 70, 15]
    c = select_actor_pair(scores, lengths, rho=0.4)
    assert (c.chosen, c.rejected) == (1, 3)
    c0 = select_actor_pair(scores, lengths, rho=0.0)
    assert (c0.chosen, c0.rejected) == (0, 2)


def test_score_ties_broken_by_length_then_position():
    c = select_actor_pair([4.0, 4.0, 1.0, 1.0], [30, 12, 8, 40], rho=0.0)
    assert (c.chosen, c.rejected) == (1, 3)
    c = select_actor_pair([4.0, 4.0, 1.0, 1.0], [12, 12, 40, 40], rho=0.0)
    assert (c.chosen, c.rejected) == (0, 2)


@pytest.mark.parametrize(("scores", "reason"), [
    ([2.0, 2.0, 2.0], "tie"),
    ([None, 3.0, None], "1 scored"),
    ([None, None], "0 scored"),
])
def test_skips(scores, reason):
    c = select_actor_pair(scores, [1] * len(scores), rho=0.0)
    assert not c.ok and reason in c.skip_reason


def test_unscored_responses_take_no_part_and_same_text_is_skipped():
    c = select_actor_pair([None, 4.0, 1.0], [1, 50, 60], rho=0.0)
    assert (c.chosen, c.rejected) == (1, 2)
    c = select_actor_pair([4.0, 1.0], [5, 5], rho=0.0, texts=["same", "same"])
    assert not c.ok and "same text" in c.skip_reason


def test_overlapping_tiers_never_pair_a_response_with_itself():
    c = select_actor_pair([5.0, 1.0], [10, 10], rho=1.0)  # both tiers hold everything
    assert c.ok and c.chosen != c.rejected or not c.ok


def test_bad_rho_raises():
    with pytest.raises(ValueError, match="rho=1.5"):
        select_actor_pair([1.0, 2.0], [1, 2], rho=1.5)


scores_st = st.lists(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 4.5, 5.0])),
                     min_size=2, max_size=8)


@settings(max_examples=200, deadline=None)
@given(scores=scores_st, data=st.data(), rho=st.floats(0.0, 1.0))
def test_pair_properties(scores, data, rho):
    lengths = data.draw(st.lists(st.integers(1, 200), min_size=len(scores), max_size=len(scores)))
    c = select_actor_pair(scores, lengths, rho)
    valid = [s for s in scores if s is not None]
    if not c.ok:
        return
    s_max, s_min = max(valid), min(valid)
    assert scores[c.chosen] > scores[c.rejected]
    assert scores[c.chosen] >= (1 - rho) * s_max + rho * s_min - 1e-9
    assert scores[c.rejected] <= (1 - rho) * s_min + rho * s_max + 1e-9
    top = [i for i, s in enumerate(scores) if s is not None and s >= (1 - rho) * s_max + rho * s_min - 1e-9]
    bottom = [i for i, s in enumerate(scores) if s is not None and s <= (1 - rho) * s_min + rho * s_max + 1e-9]
    assert lengths[c.chosen] == min(lengths[i] for i in top)
    assert lengths[c.rejected] == max(lengths[i] for i in bottom)
    if rho == 0.0:  # §8.3: rho = 0 => (argmax S, argmin S) up to length tie-breaks
        assert scores[c.chosen] == s_max and scores[c.rejected] == s_min


@settings(max_examples=100, deadline=None)
@given(scores=scores_st, data=st.data(), r1=st.floats(0.0, 0.5), r2=st.floats(0.0, 0.5))
def test_larger_rho_never_picks_a_longer_chosen(scores, data, r1, r2):
    lengths = data.draw(st.lists(st.integers(1, 200), min_size=len(scores), max_size=len(scores)))
    lo, hi = sorted((r1, r2))
    a, b = select_actor_pair(scores, lengths, lo), select_actor_pair(scores, lengths, hi)
    if a.ok and b.ok:
        assert lengths[b.chosen] <= lengths[a.chosen]
        assert lengths[b.rejected] >= lengths[a.rejected]


# --------------------------------------------------------------------------------------------- meta-judge (§3.4)


def test_max_variance_pick():
    assert pick_max_variance([[3, 3, 3], [1, 5], [2, 4, 3]]) == 1
    assert pick_max_variance([[3], [], [4]]) is None
    assert pick_max_variance([[1, 2], [2, 1]]) == 0  # ties: first


def test_battle_plan_has_both_orders():
    plan = battle_plan(3)
    assert len(plan) == 6 and set(plan) == {(a, b) for a in range(3) for b in range(3) if a != b}


@settings(max_examples=100, deadline=None)
@given(a=st.integers(0, 1000), b=st.integers(0, 1000))
def test_position_weights(a, b):
    w1, w2 = position_weights(a, b)
    assert math.isclose(w1 + w2, 1.0)
    if a == b:  # §8.3: omega1 = omega2 = 1/2 when wins are position-balanced
        assert w1 == w2 == 0.5
    if a > b:  # the favoured slot's wins weigh less
        assert w1 < w2


def test_battle_matrix_weights_each_slot():
    battles = [Battle(0, 1, "first"), Battle(1, 0, "first"), Battle(0, 2, "second"), Battle(2, 0, None)]
    B = battle_matrix(3, battles, 0.25, 0.75)
    assert B[0, 1] == 0.25 and B[1, 0] == 0.25 and B[2, 0] == 0.75 and B.sum() == 1.25
    assert count_position_wins(battles) == (2, 1)


def test_elo_recovers_known_strengths():
    """§3.8: Elo MLE recovers known strengths from a simulated battle matrix (Spearman >= 0.95, 200 battles)."""
    rng = random.Random(0)
    strengths = [-2.0, -1.2, -0.4, 0.4, 1.2, 2.0, 0.0, -0.8]
    n = len(strengths)
    B = np.zeros((n, n))
    for _ in range(200):
        m, k = rng.sample(range(n), 2)
        p = 1 / (1 + math.exp(-(strengths[m] - strengths[k])))
        if rng.random() < p:
            B[m, k] += 1
        else:
            B[k, m] += 1
    r = elo_mle(B)
    assert abs(r.sum()) < 1e-9
    assert spearman(r, strengths) >= 0.95


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=3, max_size=6), st.floats(-10, 10))
def test_elo_likelihood_is_invariant_to_a_constant(ratings, c):
    B = np.arange(len(ratings) ** 2, dtype=float).reshape(len(ratings), -1) % 5
    r = np.array(ratings)
    assert math.isclose(elo_log_likelihood(r, B, l2=0.0), elo_log_likelihood(r + c, B, l2=0.0), rel_tol=1e-9,
                        abs_tol=1e-9)


def test_elo_is_the_maximum_and_handles_an_undefeated_item():
    B = np.array([[0, 3, 2], [0, 0, 1], [0, 1, 0]], dtype=float)  # item 0 never loses
    r = elo_mle(B)
    assert np.all(np.isfinite(r)) and r[0] == r.max()
    best = elo_log_likelihood(r, B)
    for d in np.eye(3) * 1e-3:
        assert elo_log_likelihood(r + d, B) <= best + 1e-9 and elo_log_likelihood(r - d, B) <= best + 1e-9


def _simulate(strengths, b, rng, k=300, weak_first=0.8):
    """Battles where the weaker judgement is shown first 80% of the time and the meta-judge answers 'first' with
    probability ``b`` regardless (a position bias), else the truly better one wins with BT probability."""
    battles = []
    n = len(strengths)
    for m in range(n):
        for q in range(m + 1, n):
            weak, strong = (m, q) if strengths[m] < strengths[q] else (q, m)
            for _ in range(k):
                first, second = (weak, strong) if rng.random() < weak_first else (strong, weak)
                if rng.random() < b:
                    winner = "first"
                else:
                    p_first = 1 / (1 + math.exp(-(strengths[first] - strengths[second])))
                    winner = "first" if rng.random() < p_first else "second"
                battles.append(Battle(first, second, winner))
    return battles


def test_position_weighting_removes_a_first_position_bias():
    """§3.8: the omega correction removes a simulated ~70% first-position bias: the corrected ranking equals the
    bias-free ranking, while the uncorrected one does not."""
    rng = random.Random(1)
    strengths = [0.0, 0.85, 1.7, 2.55, 3.4]
    biased = _simulate(strengths, 0.5, rng)
    win1, win2 = count_position_wins(biased)
    assert 0.65 < win1 / (win1 + win2) < 0.75
    w1, w2 = position_weights(win1, win2)
    truth = list(np.argsort(strengths))
    free = elo_mle(battle_matrix(5, _simulate(strengths, 0.0, rng), 1.0, 1.0))
    corrected = elo_mle(battle_matrix(5, biased, w1, w2))
    raw = elo_mle(battle_matrix(5, biased, 1.0, 1.0))
    assert list(np.argsort(free)) == truth
    assert list(np.argsort(corrected)) == truth
    assert list(np.argsort(raw)) != truth


def test_judge_pair_is_highest_vs_lowest_rating_with_length_cap():
    battles = [Battle(0, 1, "first"), Battle(1, 0, "second"), Battle(0, 2, "first"), Battle(2, 0, "second"),
               Battle(1, 2, "first"), Battle(2, 1, "second")]
    c = select_judge_pair(3, battles, 0.5, 0.5, lengths=[100, 50, 20], max_chosen_chars=1100)
    assert (c.chosen, c.rejected) == (0, 2)
    c = select_judge_pair(3, battles, 0.5, 0.5, lengths=[1200, 50, 20], max_chosen_chars=1100)
    assert c.chosen is None and "cap 1100" in c.skip_reason
    c = select_judge_pair(3, battles, 0.5, 0.5, lengths=[1200, 50, 20], max_chosen_chars=None)
    assert c.chosen == 0
    assert select_judge_pair(3, [Battle(0, 1, None)], 0.5, 0.5, lengths=[1, 1, 1],
                             max_chosen_chars=None).skip_reason == "no decided meta-judge battle"
    assert select_judge_pair(1, [], 0.5, 0.5, lengths=[1], max_chosen_chars=None).chosen is None


def test_meta_judge_parses_both_slots_and_records_invalid():
    gen = ScriptedGenerator(lambda text, k, rng: ("Winner: Judgement B" if "JA-first" in text else
                                                  "Winner: Judgement A" if "JB-first" in text else "no idea"))
    meta = MetaJudge(gen, SANDBOX_META_TEMPLATE)
    out = meta.compare([("q", "r", "JA-first", "x"), ("q", "r", "JB-first", "y"), ("q", "r", "other", "z")])
    assert [o[0] for o in out] == ["second", "first", None]
    assert out[2][1] == "no 'Winner: Judgement A|B' line"
    assert meta.provenance().parser_version == "meta_winner/2"


def test_dpo_rows_are_trl_conversational_deduplicated_and_checked():
    rows = [_trl_row([{"role": "user", "content": "q"}], "good", "bad", "actor"),
            _trl_row([{"role": "user", "content": "q"}], "good", "bad", "actor"),
            _trl_row("judge prompt", "j1", "j1", "judge"),
            _trl_row("judge prompt", "j1", "j2", "judge")]
    out = _dedup(rows)
    assert len(out) == 2
    assert out[0]["chosen"] == [{"role": "assistant", "content": "good"}]
    assert out[1]["prompt"] == [{"role": "user", "content": "judge prompt"}]
    assert {r["kind"] for r in out} == {"actor", "judge"}


# --------------------------------------------------------------------------------------------- config


def test_config_defaults_follow_the_paper():
    cfg = MetaRewardingConfig()
    assert (cfg.actor.K, cfg.judge.N, cfg.actor.temperature, cfg.actor.top_p) == (7, 11, 0.8, 0.95)
    assert [cfg.rho(t) for t in range(1, 5)] == [0.0, 0.0, 0.4, 0.4]
    assert cfg.meta_judge_on(2) and not cfg.meta_judge_on(3)
    assert cfg.meta_judge.chosen_judgment_max_chars == {1: 1100, 2: 1000}
    assert (cfg.dpo.beta, cfg.dpo.learning_rate, cfg.dpo.batch_size) == (0.1, 5e-6, 32)
    assert cfg.dpo.steps_for(64) == 20  # 10 epochs of 64 rows at batch 32


def test_config_misuse_names_the_value():
    with pytest.raises(ValueError, match="one ρ per iteration"):
        MetaRewardingConfig(iterations=5)
    with pytest.raises(ValueError, match=r"\[1.5\]"):
        MetaRewardingConfig(length_control_rho=1.5)
    with pytest.raises(ValueError, match="extra"):
        MetaRewardingConfig(judge={"samples": 3})
    with pytest.raises(ConfigError, match="iteration 7"):
        sandbox_config().rho(7)


# --------------------------------------------------------------------------------------------- sandbox judge


def test_verified_score_rubric():
    assert verified_score("3+4=<<3+4=7>>7\n#### 7", 7)[0] == 5
    assert verified_score("3+4=<<3+4=8>>8\n#### 8", 7)[0] == 2
    assert verified_score("3+4=<<3+4=7>>7\n#### 9", 7)[0] == 3
    assert verified_score("#### 7", 7)[0] == 3
    assert verified_score("no idea", 7)[0] == 0
    assert verified_score("8/2=<<8/2=4>>4\n7/2=<<7/2=3>>3\n#### 3", 3)[0] == 4  # 7/2 is not exact


def test_verifier_judge_and_meta_judge_speak_the_parsed_formats():
    probs = generate_problems(4)
    judge = PointwiseJudge(verifier_judge(probs, length_bias=0.0, noise_sd=0.0), SANDBOX_JUDGE_TEMPLATE, samples=3,
                           sampling=SamplingParams(temperature=0.8, seed=0))
    prompts = [p.question for p in probs]
    good = judge.score(prompts, [p.cot for p in probs])
    assert all(v.valid and v.score == 5.0 for v in good)
    bad = judge.score(prompts, ["#### -1"] * 4)
    assert all(v.valid and v.score == 1.0 for v in bad)
    unknown = judge.score(["not a known question"], ["#### 3"])[0]
    assert not unknown.valid and "Score" in unknown.invalid_reason
    meta = MetaJudge(verifier_meta_judge(probs, accuracy=1.0, first_bias=0.0), SANDBOX_META_TEMPLATE)
    p = probs[0]
    out = meta.compare([(p.question, p.cot, "ok. Score: 1", "ok. Score: 5"),
                        (p.question, p.cot, "ok. Score: 5", "ok. Score: 1")])
    assert [o[0] for o in out] == ["second", "first"]
