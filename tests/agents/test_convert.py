"""GSM8K -> CoA chain converter, verification, LLM-rewrite route and the ``coa convert`` CLI (spec §1.4)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from typer.testing import CliRunner

from loopwright.agents.coa.chain import ParsedChain, parse_chain
from loopwright.agents.coa.cli import coa_app
from loopwright.agents.coa.convert import (
    chain_from_solution,
    convert_record,
    convert_rows,
    failure_category,
    rewrite_prompt,
    rewrite_with_generator,
    to_sft_row,
    verify_chain,
)
from loopwright.agents.coa.reify import default_math_tools
from loopwright.sdk.generators.scripted import ScriptedGenerator

NATALIA = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                       "May. How many clips did Natalia sell altogether in April and May?",
           "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                     "altogether in April and May.\n#### 72"}

# Measured 2026-11-27 on ../shared/data/gsm8k/train.jsonl: 7276 / 7473 = 97.36 % verified (annotations alone:
# 7014 = 93.86 %). The assertion leaves a 0.36-point margin (27 rows) for harmless changes.
MEASURED_RATE = 0.9736
MARGIN = 0.0036


@pytest.fixture(scope="module")
def tools():
    return default_math_tools()


def test_annotations_become_placeholder_calls(tools):
    chain, why = chain_from_solution(NATALIA["answer"], "72")
    assert why is None
    assert chain == ("Natalia sold [48/2 = y1] clips in May.\nNatalia sold [48+y1 = y2] clips altogether in "
                     "April and May.\n#### y2")
    rec = convert_record(NATALIA, tools)
    assert rec["verified"] and rec["answer"] == "72" and rec["gold_answer"] == "72" and "reason" not in rec
    assert rec["coa_chain"] == rec["chain"] and rec["n_calls"] == 2


def test_numbers_match_earlier_results_by_value_as_whole_tokens(tools):
    sol = ("He has 6*2 = <<6*2=12>>12 boxes and 100+20 = <<100+20=120>>120 cans.\n"
           "So 120+12+1.20 = <<120+12+1.20=133.2>>133.2 and 12.0*2 = <<12.0*2=24>>24.\n#### 24")
    chain, _ = chain_from_solution(sol, "24")
    p = parse_chain(chain)
    assert isinstance(p, ParsedChain)
    assert [c.expr for c in p.calls] == ["6*2", "100+20", "y2+y1+1.20", "y1*2"]  # 12 not inside 120 / 1.20
    assert verify_chain(chain, "24", tools)["verified"]


def test_plain_text_arithmetic_percent_and_units(tools):
    plain = {"question": "q", "answer": "She had 90-24 = 66 left.\nThen 66 x 2 = 132 total.\n#### 132"}
    rec = convert_record(plain, tools)
    assert rec["verified"], rec
    assert "[90-24 = y1]" in rec["chain"] and "[y1 * 2 = y2]" in rec["chain"]
    no_plain = convert_record(plain, tools, plain_text=False)
    assert not no_plain["verified"] and failure_category(no_plain) == "no_arithmetic"
    pct = {"question": "q", "answer": "Not interesting: 100% - 20% = 80%\nBoth: 80% * 20% = 16%\n#### 16"}
    rec = convert_record(pct, tools)
    assert rec["verified"] and rec["answer"] == "16", rec
    units = {"question": "q", "answer": "10 minutes / 5 miles = <<10/5=2>>2 minutes/mile\n"
                                        "60 minutes/hour / 2 minutes/mile = 30 miles/hour\n#### 30"}
    rec = convert_record(units, tools)
    assert rec["verified"] and "[60 / y1 = y2] miles/hour" in rec["chain"], rec["chain"]


def test_later_mentions_become_placeholders_unless_in_question(tools):
    row = {"question": "Mercedes ran 7.5 km, twice... she also ran 2 km more. 15 laps?",
           "answer": "Mercedes = 2*7.5 = <<2*7.5=15>>15 km\nDavonte = 15+2 = <<15+2=17>>17 km\n"
                     "They ran 15 + 17 = $<<15+17=32>>32 in total, so 32 km.\nCost: $40 - $8 = $32.\n#### 32"}
    rec = convert_record(row, tools)
    assert rec["verified"], rec
    lines = rec["chain"].splitlines()
    assert lines[0] == "Mercedes = [2*7.5 = y1] km"  # the restated '2*7.5 = ' is dropped
    assert lines[2] == "They ran $[y1+y2 = y3] in total, so y3 km."  # 15 is in the question: kept in text
    assert lines[3] == "Cost: $[40 - 8 = y4]." and lines[-1] == "#### y4"


def test_wrong_stated_plain_result_is_not_used(tools):
    rec = convert_record({"question": "q", "answer": "a is 2+2 = <<2+2=4>>4\nso 4+3 = 8\n#### 8"}, tools)
    assert not rec["verified"] and rec["reason"].startswith("wrong answer")
    assert failure_category(rec) == "answer_in_unconverted_text"


def test_bad_rows_become_records_with_reasons(tools):
    r1 = convert_record({"question": "q", "answer": "no marker"}, tools)
    assert not r1["verified"] and r1["reason"].startswith("no gold") and failure_category(r1) == "no_gold"
    r2 = convert_record({"question": "q", "answer": "It is obvious.\n#### 5"}, tools)
    assert not r2["verified"] and "not convertible" in r2["reason"]
    r3 = verify_chain("[2 + 3 = y1] [y7 = y2]", "5", tools)
    assert not r3["verified"] and r3["reason"].startswith("invalid chain: undefined placeholder y7")


def test_sft_rows_are_trl_conversational(tools):
    rec = convert_record(NATALIA, tools)
    row = to_sft_row(rec)
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"] == NATALIA["question"] and row["messages"][2]["content"] == rec["chain"]
    assert [m["role"] for m in to_sft_row(rec, system=None)["messages"]] == ["user", "assistant"]
    with pytest.raises(ValueError, match="no chain"):
        to_sft_row({"id": "x", "chain": None, "question": "q"})


def test_rewrite_prompt_and_scripted_generator_route(tools):
    msgs = rewrite_prompt(NATALIA["question"], NATALIA["answer"])
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
    assert "<<" not in msgs[-1]["content"] and "48/2 = 24" in msgs[-1]["content"]
    assert len(msgs) == 1 + 2 * 3 + 1
    good = "Natalia sold [48 / 2 = y1] clips in May and [48 + y1 = y2] in all.\n#### y2"
    wrong = "Natalia sold [48 * 2 = y1] clips.\n#### y1"
    gen = ScriptedGenerator([good, wrong, "I cannot do that [y3 = y1"])
    recs = rewrite_with_generator(gen, [NATALIA, NATALIA, NATALIA], tools)
    assert [r["verified"] for r in recs] == [True, False, False]
    assert recs[0]["answer"] == "72" and recs[0]["route"] == "llm_rewrite"
    assert recs[1]["reason"] == "wrong answer: reified 96, gold 72"
    assert recs[2]["reason"].startswith("invalid chain")
    assert len(gen.calls) == 1  # one batched generate call


def test_full_gsm8k_train_pass_rate(shared_data, tools):
    rows = [json.loads(line) for line in (shared_data / "gsm8k" / "train.jsonl").open()]
    assert len(rows) == 7473
    t = time.perf_counter()
    recs = convert_rows(rows, tools)
    elapsed = time.perf_counter() - t
    rate = sum(r["verified"] for r in recs) / len(rows)
    cats = Counter(failure_category(r) for r in recs if not r["verified"])
    print(f"\nGSM8K train: verified {rate:.4f} in {elapsed:.1f}s; failures {dict(cats)}")
    assert rate >= MEASURED_RATE - MARGIN, (rate, cats)
    assert rate >= 0.95  # issue 3's target
    assert all(r.get("reason") for r in recs if not r["verified"])


def test_cli_convert(tmp_path, shared_data):
    lines = (shared_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:50]
    inp = tmp_path / "in.jsonl"
    inp.write_text("\n".join([*lines, "not json", '{"question": "q", "answer": "nothing"}']) + "\n")
    out, sft = tmp_path / "out.jsonl", tmp_path / "sft.jsonl"
    res = CliRunner().invoke(coa_app, ["convert", str(inp), str(out), "--sft", str(sft)])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 52
    n_ok = sum(r["verified"] for r in recs)
    assert f"verified {n_ok}/52" in res.output and n_ok >= 45
    for r in recs:
        assert {"chain", "verified", "answer"} <= r.keys() and isinstance(r["verified"], bool)
        assert r["verified"] or r["reason"]
    assert "not a GSM8K JSON row" in recs[50]["reason"] and recs[51]["reason"].startswith("no gold")
    assert len(sft.read_text().splitlines()) == n_ok
    missing = CliRunner().invoke(coa_app, ["convert", str(tmp_path / "nope.jsonl"), str(out)])
    assert missing.exit_code == 2
