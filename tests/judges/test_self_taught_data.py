"""Self-Taught Evaluator pure parts (spec/loops.md §4.4, §4.5, §4.8, §8.3): parsers, selection, balance, pairs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.judges.self_taught.data import (
    JudgedSample,
    balance_labels,
    compact_solution,
    dpo_pairs,
    gold_label,
    modify_miniarith,
    process_shuffled,
    rejection_sample,
)
from loopwright.judges.self_taught.loop import SelfTaughtConfig, miniarith_pairs
from loopwright.judges.self_taught.prompts import (
    JUDGE_STYLES,
    judge_template,
    parse_worse_response,
    worse_response_prompt,
)
from loopwright.sdk.tasks.miniarith import generate_problems

TASK = SelfTaughtConfig().task


def _s(*verdicts):
    return [JudgedSample(f"t{i} [[{v}]]" if v else f"t{i}", v) for i, v in enumerate(verdicts)]


def test_gold_label_from_ranks():
    assert gold_label([0, 1]) == "A" and gold_label([3, 2]) == "B"
    with pytest.raises(ValueError, match="tied"):
        gold_label([1, 1])


def test_judged_sample_uses_the_one_parser_both_tokens_is_invalid():
    assert JudgedSample.parse("so [[B]]").verdict == "B"
    both = JudgedSample.parse("[[A]] or [[B]]")
    assert both.verdict is None and "ambiguous" in both.reason
    assert JudgedSample.parse("[[C]]").verdict == "tie"
    assert JudgedSample.parse("no verdict").verdict is None


def test_rejection_sampling_is_seeded_and_only_keeps_correct():
    samples = _s("A", "B", None, "B", "A")
    picks = {rejection_sample(samples, "B", random.Random(s)).text for s in range(20)}
    assert picks == {"t1 [[B]]", "t3 [[B]]"}
    assert rejection_sample(samples, "B", random.Random(3)) == rejection_sample(samples, "B", random.Random(3))
    assert rejection_sample(_s("A", None), "B", random.Random(0)) is None
    # majority vote: 2 of 5 correct < 0.5
    assert rejection_sample(samples, "B", random.Random(0), majority_voting=0.5) is None
    assert rejection_sample(samples, "B", random.Random(0), majority_voting=0.4) is not None
    with pytest.raises(ValueError, match="majority_voting"):
        rejection_sample(samples, "B", random.Random(0), majority_voting=2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from("AB"), max_size=40), st.integers(0, 10))
def test_balance_is_exact(labels, seed):
    rows = [{"label": x, "i": i} for i, x in enumerate(labels)]
    out = balance_labels(rows, random.Random(seed))
    k = min(labels.count("A"), labels.count("B"))
    assert sum(r["label"] == "A" for r in out) == sum(r["label"] == "B" for r in out) == k
    assert len({r["i"] for r in out}) == len(out)


def test_dpo_pairs_need_a_positive_and_a_negative():
    groups = [{"key": "k1", "prompt": [{"role": "user", "content": "q1"}], "label": "A", "samples": _s("A", "B")},
              {"key": "k2", "prompt": [{"role": "user", "content": "q2"}], "label": "B", "samples": _s(None, "B")},
              {"key": "k3", "prompt": [{"role": "user", "content": "q3"}], "label": "B", "samples": _s("B", "B")}]
    rows = dpo_pairs(groups, random.Random(0), num_pairs=1)
    assert sorted(r["key"] for r in rows) == ["k1", "k2"]
    for r in rows:
        assert r["chosen"][0]["content"].endswith(f"[[{r['label']}]]")
        assert not r["rejected"][0]["content"].endswith(f"[[{r['label']}]]")
    assert dpo_pairs(groups[:1], random.Random(0)) == []  # one A-better key, no B-better key: balanced away
    assert len(dpo_pairs(groups[:1], random.Random(0), balance=False, num_pairs=3)) == 1  # only 1x1 combination


def test_process_shuffled_gives_half_credit_for_unparseable():
    assert process_shuffled("x [[A]]", "A") == 1.0
    assert process_shuffled("x [[B]]", "A") == 0.0
    assert process_shuffled("garbage", "B") == 0.5


def test_worse_response_prompt_and_parser():
    p1 = worse_response_prompt("What is 2+2?", "4")
    p2 = worse_response_prompt("Name a fruit.", "Apple")
    assert p1 != p2 and "What is 2+2?" in p1[0]["content"] and "Apple" in p2[0]["content"]
    good = ("[User Question Modified]\nWhat is 2+3?\n\n[The Start of Assistant's Answer to the modified "
            "instruction]\n5\n[The End of Assistant's Answer to the modified instruction]")
    r = parse_worse_response(good, "What is 2+2?")
    assert r.ok and r.modified_instruction == "What is 2+3?" and r.response == "5"
    assert not parse_worse_response(good, "What is 2+3?").ok  # x' == x
    assert "header" in parse_worse_response("just text", "q").reason
    assert not parse_worse_response("[User Question Modified]\nq2\n", "q").ok
    assert not parse_worse_response(None, "q").ok  # type: ignore[arg-type]


def test_judge_templates_render_fresh_lists():
    for style in JUDGE_STYLES:
        t = judge_template(style)
        m1 = t.render(question="q1", response_a="a1", response_b="b1")
        m2 = t.render(question="q2", response_a="a2", response_b="b2")
        assert m1 != m2 and "q1" in m1[-1]["content"] and "a2" in m2[-1]["content"]
    with pytest.raises(ValueError, match="judge_prompt_style"):
        judge_template("nope")
    with pytest.raises(ValueError, match="judge_prompt_style"):
        SelfTaughtConfig(judge_prompt_style="nope")


def test_modified_instruction_pairs_on_miniarith():
    probs = generate_problems(60, TASK, start=5)
    made = 0
    for p in probs:
        mod = modify_miniarith(p, random.Random(p.id))
        if mod is None:
            continue
        made += 1
        q2, sol2, ans2 = mod
        assert q2 != p.question and ans2 != p.answer
        assert sol2.endswith(f"#### {ans2}")
        # exactly one number differs between x and x'
        diff = [(a, b) for a, b in zip(p.question.split(), q2.split(), strict=True) if a != b]
        assert len(diff) == 1
    assert made >= 50
    assert compact_solution("3+4=<<3+4=7>>7\n#### 7") == "3+4=7\n#### 7"
    pairs = miniarith_pairs(10, TASK, start=0, seed=0)
    assert len(pairs) == 10 and all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(p["chosen"].endswith(f"#### {p['answer']}") for p in pairs)
    again = miniarith_pairs(10, TASK, start=0, seed=0, exclude={pairs[0]["question"]})
    assert pairs[0]["question"] not in {p["question"] for p in again}


def test_recipe_file_validates():
    import yaml

    from loopwright.judges.self_taught.recipe import SelfTaughtRecipe

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    recipe = SelfTaughtRecipe.model_validate(yaml.safe_load((root / "recipes" / "self_taught.yaml").read_text()))
    assert recipe.loop.iterations == 2 and recipe.loop.judge_prompt_style == "compact" and recipe.model is None
    with pytest.raises(ValueError, match="judge_prompt_style"):
        SelfTaughtRecipe.model_validate({"recipe": "self_taught", "loop": {"judge_prompt_style": "x"}})
