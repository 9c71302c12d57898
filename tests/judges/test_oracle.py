"""GoldAnswerJudge, the oracle signal (issue 13): gold answers behind the Judge interface, step checking that
rejects lucky guesses, invalid verdicts for prompts without gold, and the TRL reward export."""

from __future__ import annotations

import time

import pytest

from loopwright.judges.oracle import GoldAnswerJudge, arithmetic_ok, question_of
from loopwright.sdk.tasks.miniarith import generate_problems


@pytest.fixture(scope="module")
def problems():
    return generate_problems(6)


def test_gold_solution_scores_one_and_wrong_answers_zero(problems):
    judge = GoldAnswerJudge(problems)
    chats = [[{"role": "user", "content": p.question}] for p in problems]
    right = judge.score(chats, [p.cot for p in problems])
    assert all(v.valid and v.score == 1.0 for v in right)
    wrong = judge.score([p.question for p in problems], [f"#### {p.answer + 1}" for p in problems])
    assert all(v.valid and v.score == 0.0 for v in wrong)
    no_number = judge.score([problems[0].question], ["I do not know"])[0]
    assert no_number.valid and no_number.score == 0.0  # certain: wrong, not unjudgeable


def test_check_steps_rejects_a_right_answer_reached_through_wrong_steps(problems):
    p = problems[0]
    lucky = f"2+2=<<2+2=5>>5\n#### {p.answer}"
    assert GoldAnswerJudge(problems).score([p.question], [lucky])[0].score == 1.0
    strict = GoldAnswerJudge(problems, check_steps=True)
    assert strict.score([p.question], [lucky])[0].score == 0.0
    assert strict.score([p.question], [p.cot])[0].score == 1.0
    assert strict.score([p.question], [f"#### {p.answer}"])[0].score == 0.0  # no annotated step at all


@pytest.mark.parametrize(("text", "ok"), [
    ("<<3+4=7>>", True), ("<<12-30=-18>>", True), ("<<-5*3=-15>>", True), ("<<12/4=3>>", True),
    ("<<5--3=8>>", True), ("<<3+4=8>>", False), ("<<7/2=3>>", False), ("<<7/0=0>>", False), ("<<3+4>>", False),
    ("<<3+4=7", False), ("<<3^4=81>>", False), ("<<٣+4=7>>", False), ("<<1+1=2>> <<2*2=5>>", False), ("", False),
    # the written expression and result must be the annotation's own (a copying error with a right annotation)
    ("17-8=<<17-8=9>>9\n9-8=<<9-8=1>>1", True), ("9-9=<<9-8=1>>1", False), ("9-8=<<9-8=1>>2", False),
    ("She sold 48/2 = <<48/2=24>>24 clips.", True), ("It costs $3 * 4 = <<3*4=12>>12 dollars", True),
    ("x = <<3+4=7>>7", True), ("3+4=<<3+4=7>>7.", True), ("2*250 = <<250*2=500>>500", True),
    ("eaten 10, 100 - 10 = <<100-10=90>>90", True), ("20,000/5 = <<20000/5=4000>>4,000", True),
    ("20,000/5 = <<20000/5=4000>>4,001", False),
])
def test_arithmetic_ok(text, ok):
    assert arithmetic_ok(text) is ok


def test_arithmetic_check_is_linear_on_hostile_text():
    t0 = time.perf_counter()
    assert not arithmetic_ok("<<" * 9_000 + "1+1=2")
    assert not arithmetic_ok("<<1+1=2>>" * 2_000 + "<<")
    assert time.perf_counter() - t0 < 0.5


def test_compare_is_order_free_and_unknown_prompts_are_invalid(problems):
    p = problems[1]
    judge = GoldAnswerJudge([(p.question, p.answer)])
    [ab] = judge.compare([p.question], [p.cot], ["#### 0"])
    [ba] = judge.compare([p.question], ["#### 0"], [p.cot])
    assert (ab.preference, ab.p_a, ba.preference, ba.p_a) == ("A", 1.0, "B", 0.0) and ab.swap.consistent
    [tie] = judge.compare([p.question], ["#### 0"], ["#### 1"])
    assert tie.preference == "tie"
    [unknown] = judge.score(["What is the capital of France?"], ["Paris"])
    assert not unknown.valid and unknown.score is None and "no gold answer" in unknown.invalid_reason


def test_construction_errors_and_reward_func(problems):
    with pytest.raises(ValueError, match="two different gold answers"):
        GoldAnswerJudge([("q", 1), ("q", 2)])
    with pytest.raises(ValueError, match="at least one"):
        GoldAnswerJudge([])
    with pytest.raises(TypeError, match="question"):
        GoldAnswerJudge([42])
    judge = GoldAnswerJudge({p.question: p.answer for p in problems})
    fn = judge.as_reward_func()
    assert fn.__name__ == "gold_answer"
    prompts = [[{"role": "user", "content": p.question}] for p in problems[:2]]
    completions = [[{"role": "assistant", "content": problems[0].cot}], [{"role": "assistant", "content": "#### -1"}]]
    assert fn(prompts, completions) == [1.0, 0.0]
    assert question_of([{"role": "system", "content": "s"}, {"role": "user", "content": " q "}]) == "q"


def test_gold_step_judge_scores_partial_solutions_on_the_gold_path(problems):
    from loopwright.judges.oracle import GoldStepJudge, annotation_results

    p = next(q for q in problems if len(q.program) >= 2)
    judge = GoldStepJudge(problems)
    lines = p.cot.split("\n")
    prefixes = ["\n".join(lines[:k]) for k in range(len(lines) + 1)]  # "", step 1, steps 1-2, ..., with "#### N"
    assert [v.score for v in judge.score([p.question] * len(prefixes), prefixes)] == [1.0] * len(prefixes)
    first = p.program[0]
    a, b = first.a, first.b
    off = {
        "a wrong result": lines[0].replace(f"={first.result}>>", f"={first.result + 1}>>"),
        "a right sum off the gold path": f"{first.result}+1=<<{first.result}+1={first.result + 1}>>{first.result + 1}",
        "a copying error": f"{a}{first.op}{b}=<<{a}{first.op}{b}={first.result}>>{first.result + 1}",
        "a wrong final answer": f"{p.cot.rsplit('####', 1)[0]}#### {p.answer + 1}",
        "more steps than the gold": p.cot.rsplit("\n####", 1)[0] + "\n1+1=<<1+1=2>>2",
    }
    got = {k: judge.score([p.question], [t])[0] for k, t in off.items()}
    assert {k: v.score for k, v in got.items()} == dict.fromkeys(off, 0.0), got
    assert all(v.valid for v in got.values())
    unknown = judge.score(["What is 2+2?"], ["2+2=<<2+2=4>>4"])[0]
    assert not unknown.valid and "no gold solution" in unknown.invalid_reason
    assert annotation_results("<<1+1=2>> then <<2*3=x>> and <<4-1=3") == [2, None]
    assert annotation_results("<<" * 50_000) == []  # bounded and linear: no regex, str.find scans
    with pytest.raises(ValueError, match="annotations"):
        GoldStepJudge([("What is 2+2?", "4")])
