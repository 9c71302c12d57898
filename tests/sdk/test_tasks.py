"""MiniArith generator and GSM8K loading / answer extraction (spec/loops.md §0.3, §0.4, §7.1)."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from pydantic import ValidationError

from loopwright.sdk.tasks import (
    BOILERPLATE,
    CORRUPTIONS,
    ID,
    OOD,
    MiniArithConfig,
    evaluate_program,
    extract_gold_answer,
    extract_model_answer,
    generate_problems,
    is_correct,
    load_gsm8k,
    train_validation_split,
)

# ------------------------------------------------------------------ a tiny safe evaluator (no eval)

_BIN = re.compile(r"^(\d+)([+\-*/])(\d+)$")


def _calc(expr: str) -> int:
    m = _BIN.match(expr)
    assert m, f"not a binary integer expression: {expr!r}"
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    assert b != 0 and a % b == 0, f"inexact division {expr}"
    return a // b


def _numbers(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


# ------------------------------------------------------------------ MiniArith


def test_deterministic_and_prefix_stable():
    a = generate_problems(50, ID)
    b = generate_problems(50, ID)
    assert [p.model_dump() for p in a] == [p.model_dump() for p in b]
    # problem i does not depend on n
    assert [p.model_dump() for p in generate_problems(10, ID)] == [p.model_dump() for p in a[:10]]
    assert [p.model_dump() for p in generate_problems(5, ID, start=20)] == [p.model_dump() for p in a[20:25]]
    other = generate_problems(50, ID.model_copy(update={"seed": 1}))
    assert sum(p.question == q.question for p, q in zip(a, other, strict=True)) < 5


def test_ten_thousand_fast_and_varied():
    t0 = time.perf_counter()
    probs = generate_problems(10_000, ID)
    elapsed = time.perf_counter() - t0
    assert elapsed < 3.0, f"10k problems took {elapsed:.2f}s (spec: ~1 s)"  # slack for a loaded shared CI box
    assert len({p.question for p in probs}) > 9_500
    first_words = Counter(p.question.split()[0] for p in probs)
    assert len(first_words) >= 15  # names and opening templates vary
    ops = Counter(s.op for p in probs for s in p.program)
    assert set(ops) == {"+", "-", "*", "/"} and min(ops.values()) > 0.1 * sum(ops.values())


@pytest.mark.parametrize("cfg", [ID, OOD], ids=["ID", "OOD"])
def test_ranges_steps_and_integer_results(cfg: MiniArithConfig):
    probs = generate_problems(500, cfg)
    assert {p.steps for p in probs} == set(range(cfg.min_steps, cfg.max_steps + 1))
    for p in probs:
        assert len(p.program) == p.steps
        first = p.program[0]
        assert isinstance(first.a, int) and cfg.min_number <= first.a <= cfg.max_number
        for j, st in enumerate(p.program):
            if j > 0:
                assert st.a == f"y{j}"
            assert isinstance(st.b, int)
            if st.op in "+-":
                assert cfg.min_number <= st.b <= cfg.max_number, (p.id, st)
            else:
                assert 2 <= st.b <= cfg.max_factor, (p.id, st)
            assert 0 < st.result <= cfg.max_result
            # every literal of the program is stated in the question
            assert st.b in _numbers(p.question)
        assert evaluate_program(p.program) == p.answer == p.program[-1].result
        assert first.a in _numbers(p.question)


@pytest.mark.parametrize("cfg", [ID, OOD], ids=["ID", "OOD"])
def test_cot_annotations_and_coa_chain_agree_with_answer(cfg: MiniArithConfig):
    for p in generate_problems(300, cfg):
        lines = p.cot.split("\n")
        assert lines[-1] == f"#### {p.answer}"
        assert len(lines) == p.steps + 1
        prev = None
        for line, st in zip(lines[:-1], p.program, strict=True):
            m = re.search(r"<<([^=]+)=(\d+)>>(\d+)", line)
            assert m, line
            expr, annotated, shown = m.group(1), int(m.group(2)), int(m.group(3))
            assert _calc(expr) == annotated == shown == st.result
            if prev is not None:
                assert int(_BIN.match(expr).group(1)) == prev  # chained on the previous result
            prev = annotated
        assert prev == p.answer
        # CoA chain: [a op b = yk]; operands are literals from the question or earlier placeholders
        env: dict[str, int] = {}
        calls = re.findall(r"\[(\w+) ([+\-*/]) (\w+) = (y\d+)\]", p.coa_chain)
        assert len(calls) == p.steps
        for a, op, b, var in calls:
            assert var not in env
            av = env[a] if a.startswith("y") else int(a)
            bv = env[b] if b.startswith("y") else int(b)
            env[var] = _calc(f"{av}{op}{bv}")
        assert env[f"y{p.steps}"] == p.answer


def test_distractors_add_sentences_without_changing_the_problem():
    clean = generate_problems(100, ID)
    noisy = generate_problems(100, ID.model_copy(update={"distractors": 2}))
    for c, n in zip(clean, noisy, strict=True):
        assert n.program == c.program and n.answer == c.answer and n.cot == c.cot
        assert n.question.count(".") >= c.question.count(".") + 2
        assert n.question.endswith("?") and len(_numbers(n.question)) >= len(_numbers(c.question)) + 2


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_changes_the_question_its_own_way(kind: str):
    clean = generate_problems(200, ID)
    bad = generate_problems(200, ID.model_copy(update={"corruption": kind}))
    for c, b in zip(clean, bad, strict=True):
        assert b.corruption == kind and c.corruption is None
        assert b.program == c.program and b.answer == c.answer  # gold of the clean problem is kept
        assert b.question != c.question
        if kind == "missing_number":
            assert not b.answerable and "some" in b.question
            assert len(_numbers(b.question)) == len(_numbers(c.question)) - 1
        elif kind == "contradictory_numbers":
            assert not b.answerable and "Actually" in b.question
            start = c.program[0].a
            assert f"not {start}" in b.question and len(_numbers(b.question)) == len(_numbers(c.question)) + 2
        elif kind == "truncated_question":
            assert not b.answerable
            assert c.question.startswith(b.question) and len(b.question) < len(c.question)
            assert not b.question.endswith("?")
        elif kind == "boilerplate_spam":
            assert b.answerable and b.question.count(BOILERPLATE) >= 4
            assert b.question.replace(BOILERPLATE, "").split() == c.question.split()
        elif kind == "shuffled_sentences":
            assert not b.answerable
            split = re.compile(r"(?<=[.?])\s+")
            assert sorted(split.split(b.question)) == sorted(split.split(c.question))
            assert split.split(b.question) != split.split(c.question)


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValidationError, match="min_steps=5 > max_steps=2"):
        MiniArithConfig(min_steps=5, max_steps=2)
    with pytest.raises(ValidationError, match="min_number"):
        MiniArithConfig(min_number=50, max_number=10)
    with pytest.raises(ValidationError):
        MiniArithConfig(corruption="typos")
    with pytest.raises(ValueError, match="n=-1"):
        generate_problems(-1)


# ------------------------------------------------------------------ GSM8K


def test_all_gsm8k_train_gold_answers_extract(shared_data):
    rows = load_gsm8k(shared_data / "gsm8k" / "train.jsonl")
    assert len(rows) == 7473
    for r in rows:
        float(r.gold)  # every gold answer is a plain number
        assert "," not in r.gold and "$" not in r.gold
        assert is_correct(extract_model_answer(r.answer), r.gold)  # the gold solution reads back as correct
    assert rows[0].gold == "72"  # Natalia's clips, the first train row
    assert all(float(r.gold) == int(float(r.gold)) for r in rows)


def test_gsm8k_split_is_deterministic_and_disjoint(shared_data):
    rows = load_gsm8k(shared_data / "gsm8k" / "train.jsonl")
    tr, va = train_validation_split(rows, 0.1, seed=0)
    tr2, va2 = train_validation_split(rows, 0.1, seed=0)
    assert [r.id for r in va] == [r.id for r in va2] and [r.id for r in tr] == [r.id for r in tr2]
    assert len(va) == round(0.1 * len(rows)) and len(tr) + len(va) == len(rows)
    assert not {r.id for r in tr} & {r.id for r in va}
    _, va3 = train_validation_split(rows, 0.1, seed=1)
    assert {r.id for r in va3} != {r.id for r in va}
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        train_validation_split(rows, 1.5)


def test_extract_gold_answer():
    assert extract_gold_answer("She has 3+4=<<3+4=7>>7.\n#### 7") == "7"
    assert extract_gold_answer("...\n#### $1,234") == "1234"
    assert extract_gold_answer("#### -5") == "-5"
    with pytest.raises(ValueError, match="no '####'"):
        extract_gold_answer("The answer is 7")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12+7=<<12+7=19>>19 pens\n#### 19", "19"),
        ("#### 1,234", "1234"),
        ("It costs $1,200.50 in total.", "1200.50"),
        ("The answer is 42.", "42"),
        ("so 10-5=5 apples", "5"),  # the hyphen of 10-5 is not a minus sign
        ("He owes -3 dollars", "-3"),
        ("x = .5", "0.5"),
        ("first 3, then 4, finally 17", "17"),
        ("#### 8 and later 9", "8"),  # after #### wins over the last number
        ("garbage text without digits", None),
        ("", None),
        (None, None),
        ("#### no number here", None),  # a declared answer that is not a number is not replaced by a default
        ("\u0120\ufffd~D dog", None),
    ],
)
def test_extract_model_answer(text, expected):
    assert extract_model_answer(text) == expected


def test_is_correct():
    assert is_correct("72", "72") and is_correct("72.0", 72) and is_correct(72, "72")
    assert is_correct("1,234", "1234") and is_correct("$5", "5")
    assert not is_correct(None, "72") and not is_correct("71", "72") and not is_correct("abc", "72")
    assert not is_correct("nan", "72") and not is_correct("inf", "inf")
    assert is_correct("0.1000001", "0.1", tol=1e-6) and not is_correct("0.1001", "0.1")
