"""evaluate(): accuracy, position consistency, invalid handling, length bias, subsets, artifacts.

Test-local judges are deterministic Judge subclasses with known behaviour, so every metric has an exact
expected value; the real PairwiseJudge (on a ScriptedGenerator) runs through evaluate() at the end.
"""

from __future__ import annotations

import json

import pytest

from loopwright.judges.datasets import PreferencePair, load_llmbar
from loopwright.judges.evaluation import JudgeReport, chosen_slot, evaluate
from loopwright.sdk.judge import Judge
from loopwright.sdk.types import JudgeProvenance, SwapRecord, Usage, Verdict

PROV = JudgeProvenance(model="test", template_id="t", parser_version="p/1")


def _v(pref, **kw) -> Verdict:
    if pref is None:
        return Verdict(kind="pairwise", valid=False, invalid_reason=kw.pop("reason", "no verdict"), judge=PROV, **kw)
    return Verdict(kind="pairwise", preference=pref, valid=True, judge=PROV, usage=Usage(prompt_tokens=10,
                   completion_tokens=2), **kw)


class LongerJudge(Judge):
    """Prefers the longer response (A on equal length); one order per call."""

    kinds = frozenset({"pairwise"})
    name = "longer"

    def __init__(self):
        self.calls = 0

    def compare(self, prompts, a, b):
        self.calls += 1
        return [_v("A" if len(x) >= len(y) else "B") for x, y in zip(a, b, strict=True)]


class AlwaysA(Judge):
    kinds = frozenset({"pairwise"})
    name = "always-a"

    def compare(self, prompts, a, b):
        return [_v("A") for _ in prompts]


class Garbage(Judge):
    """Every verdict invalid, with two different reasons."""

    kinds = frozenset({"pairwise"})
    name = "garbage"

    def compare(self, prompts, a, b):
        return [_v(None, reason="no [[A]]/[[B]]/[[C]] verdict" if i % 3 else "ambiguous: both [[A]], [[B]] appear",
                   raw="zz") for i in range(len(prompts))]


class SwappingAlwaysA(Judge):
    """Judges both orders itself (always says A): forward A, reverse maps back to B -> inconsistent, invalid."""

    kinds = frozenset({"pairwise"})
    name = "swap-a"

    def __init__(self):
        self.calls = 0

    def compare(self, prompts, a, b):
        self.calls += 1
        return [_v(None, reason="inconsistent across orders", swap=SwapRecord(forward="A", reverse="B",
                                                                             consistent=False)) for _ in prompts]


class Oracle(Judge):
    kinds = frozenset({"pairwise"})
    name = "oracle"

    def __init__(self, chosen: set[str]):
        self.chosen = chosen

    def compare(self, prompts, a, b):
        return [_v("A" if x in self.chosen else "B") for x in a]


class PointwiseOnly(Judge):
    kinds = frozenset({"pointwise"})

    def score(self, prompts, responses):
        return [Verdict(kind="pointwise", score=1.0, valid=True) for _ in prompts]


@pytest.fixture(scope="module")
def pairs(shared_data):
    # 60 real pairs from two subsets: enough for both placements and both length orders
    ps = load_llmbar(shared_data)
    return [p for p in ps if p.subset == "llmbar-natural"][:30] + [p for p in ps if p.subset == "llmbar-adver-GPTOut"][:30]


def test_placement_is_seeded_stable_and_mixed(pairs):
    slots = [chosen_slot(0, p.id) for p in pairs]
    assert 15 < slots.count("A") < 45  # both placements occur
    assert slots == [chosen_slot(0, p.id) for p in pairs]
    assert slots != [chosen_slot(1, p.id) for p in pairs]
    r_all = evaluate(AlwaysA(), pairs, seed=0)
    r_lim = evaluate(AlwaysA(), pairs[:10], seed=0)
    assert r_all.chosen_in_a == slots.count("A") and r_lim.chosen_in_a == slots[:10].count("A")


def test_always_a_has_position_bias(pairs):
    r = evaluate(AlwaysA(), pairs, seed=0)
    frac_a = r.chosen_in_a / r.n
    assert r.orders == "evaluator"
    assert r.accuracy == pytest.approx(frac_a)
    assert r.position_consistent_accuracy == 0.0
    assert r.swap_consistency == 0.0 and r.n_both_orders_parsed == r.n
    assert r.accuracy_chosen_first == 1.0 and r.accuracy_chosen_second == 0.0
    assert r.order_averaged_accuracy == pytest.approx(0.5)
    assert r.invalid_rate == 0.0 and r.n_valid == r.n
    assert r.summary["section:Chat Hard"] == pytest.approx(r.accuracy)  # all pairs are llmbar-* subsets


def test_longer_judge_length_bias_and_consistency(pairs):
    judge = LongerJudge()
    r = evaluate(judge, pairs, seed=3, batch_size=16)
    assert judge.calls == 2 * 4  # 60 pairs in batches of 16, both orders run by the evaluator
    distinct = [p for p in pairs if len(p.chosen) != len(p.rejected)]
    chosen_longer = sum(len(p.chosen) > len(p.rejected) for p in distinct) / len(distinct)
    assert r.length_bias.judge_prefers_longer == 1.0
    assert r.length_bias.data_chosen_longer == pytest.approx(chosen_longer)
    assert r.length_bias.bias == pytest.approx(1.0 - chosen_longer)
    assert r.accuracy == pytest.approx(sum(len(p.chosen) > len(p.rejected) for p in pairs) / len(pairs), abs=0.02)
    # consistent exactly on pairs of different length (equal lengths -> "A" in both orders -> inconsistent)
    assert r.swap_consistency == pytest.approx(len(distinct) / len(pairs))
    assert r.position_consistent_accuracy == pytest.approx(chosen_longer * len(distinct) / len(pairs))
    assert r.prompt_tokens == 2 * 60 * 10 and r.completion_tokens == 2 * 60 * 2


def test_invalid_counts_as_wrong_and_reasons_are_counted(pairs):
    r = evaluate(Garbage(), pairs[:12])
    assert r.accuracy == 0.0 and r.accuracy_valid is None and r.n_valid == 0
    assert r.invalid_rate == 1.0 and r.accuracy_half_credit == 0.5
    assert r.invalid_reasons == {"no [[A]]/[[B]]/[[C]] verdict": 8, "ambiguous: both [[A]], [[B]] appear": 4}
    assert r.swap_consistency is None and r.position_consistent_accuracy == 0.0
    assert "Invalid reasons" in r.to_markdown()


def test_judge_swap_records_are_used_not_rerun(pairs):
    judge = SwappingAlwaysA()
    r = evaluate(judge, pairs[:10])
    assert judge.calls == 1 and r.orders == "judge"
    assert r.swap_consistency == 0.0 and r.invalid_rate == 1.0
    assert r.position_consistent_accuracy == 0.0
    assert evaluate(SwappingAlwaysA(), pairs[:10], reverse=True).orders == "evaluator"
    single = evaluate(LongerJudge(), pairs[:10], reverse=False)
    assert single.orders == "single" and single.position_consistent_accuracy is None
    assert single.swap_consistency is None and single.order_averaged_accuracy is None


def test_oracle_subsets_summary_and_artifacts(pairs, tmp_path):
    r = evaluate(Oracle({p.chosen for p in pairs}), pairs, run_dir=tmp_path)
    assert r.accuracy == 1.0 and r.position_consistent_accuracy == 1.0
    assert set(r.subsets) == {"llmbar-natural", "llmbar-adver-GPTOut"}
    assert all(s.n == 30 and s.accuracy == 1.0 for s in r.subsets.values())
    assert r.summary == {"weighted": 1.0, "mean": 1.0, "section:Chat Hard": 1.0}
    recs = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 60 and all(x["correct"] and x["reverse_verdict"] for x in recs)
    assert {x["chosen_slot"] for x in recs} == {"A", "B"}
    back = JudgeReport.model_validate_json((tmp_path / "report.json").read_text())
    assert back == r
    md = (tmp_path / "report.md").read_text()
    assert "| llmbar-natural | 30 | 100.0 |" in md and "mean of subsets" in md
    assert "| **RewardBench Chat Hard** | | 100.0 |" in md


def test_weighted_vs_mean_differ_with_unequal_subsets():
    ps = [PreferencePair(id=f"s1/{i}", prompt="q", chosen="long answer", rejected="x", subset="s1")
          for i in range(3)]
    ps += [PreferencePair(id="s2/0", prompt="q", chosen="y", rejected="long answer", subset="s2")]
    r = evaluate(LongerJudge(), ps)
    assert r.subsets["s1"].accuracy == 1.0 and r.subsets["s2"].accuracy == 0.0
    assert r.summary == pytest.approx({"weighted": 0.75, "mean": 0.5})  # no RewardBench subsets: no section


def test_gold_ties():
    ps = [PreferencePair(id="t", prompt="q", chosen="a", rejected="b", tie=True)]

    class TieJudge(Judge):
        kinds = frozenset({"pairwise"})

        def compare(self, prompts, a, b):
            return [_v("tie") for _ in prompts]

    assert evaluate(TieJudge(), ps).accuracy == 1.0
    assert evaluate(AlwaysA(), ps).accuracy == 0.0


def test_misuse_raises(pairs):
    with pytest.raises(TypeError, match="PointwiseOnly does not implement compare"):
        evaluate(PointwiseOnly(), pairs)
    with pytest.raises(ValueError, match="no pairs"):
        evaluate(AlwaysA(), [])
    with pytest.raises(ValueError, match="batch_size=0"):
        evaluate(AlwaysA(), pairs, batch_size=0)
    dup = [pairs[0], pairs[0]]
    with pytest.raises(ValueError, match="duplicate pair id"):
        evaluate(AlwaysA(), dup)

    class Short(Judge):
        name = "short"

        def compare(self, prompts, a, b):
            return [_v("A")]

    with pytest.raises(RuntimeError, match="returned 1 items for 3 pairs"):
        evaluate(Short(), pairs[:3])


# --------------------------------------------------------------------------------------------- real PairwiseJudge


def _synthetic_pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair(id=f"syn/{i}", prompt=f"Question {i}?", chosen=f"good-answer-{i}",
                           rejected=f"bad-answer-{i}", subset="even" if i % 2 == 0 else "odd") for i in range(n)]


def test_pairwise_judge_on_scripted_generator(tmp_path):
    from loopwright.judges.pairwise import PairwiseJudge
    from loopwright.sdk.generators.scripted import ScriptedGenerator

    pairs = _synthetic_pairs(10)

    def oracle(text, j, rng):  # names the slot whose response holds "good-answer" (shown first = A)
        return "Reasoning. [[A]]" if text.index("good-answer") < text.index("bad-answer") else "Reasoning. [[B]]"

    gen = ScriptedGenerator(oracle)
    r = evaluate(PairwiseJudge(gen), pairs, batch_size=4, run_dir=tmp_path)
    assert len(gen.calls) == 3  # one generate call per batch, both orders inside it: the evaluator adds none
    assert len(gen.calls[0].prompts) == 8
    assert r.orders == "judge" and r.accuracy == 1.0 and r.position_consistent_accuracy == 1.0
    assert r.swap_consistency == 1.0 and r.provenance["parser_version"] == "pairwise/2"

    biased = evaluate(PairwiseJudge(ScriptedGenerator(["[[A]]"])), pairs)  # always A: orders disagree -> tie
    assert biased.tie_rate == 1.0 and biased.accuracy == 0.0 and biased.swap_consistency == 0.0
    assert biased.accuracy_half_credit == 0.5 and biased.accuracy_chosen_first == 1.0

    garbage = evaluate(PairwiseJudge(ScriptedGenerator(["no idea"])), pairs)
    assert garbage.invalid_rate == 1.0 and garbage.n_valid == 0 and sum(garbage.invalid_reasons.values()) == 10
    assert all("unparseable" in k for k in garbage.invalid_reasons)

    one = evaluate(PairwiseJudge(ScriptedGenerator(oracle), both_orders=False), pairs)
    assert one.orders == "evaluator" and one.accuracy == 1.0 and one.position_consistent_accuracy == 1.0


def test_swap_records_only_on_valid_verdicts_are_used():
    """Reward-model judges put a SwapRecord on valid verdicts only: no evaluator re-run, invalid = wrong."""

    class RMLike(Judge):
        kinds = frozenset({"pairwise"})
        both_orders = True

        def __init__(self):
            self.calls = 0

        def compare(self, prompts, a, b):
            self.calls += 1
            out = []
            for x, y in zip(a, b, strict=True):
                if "?" in x + y:
                    out.append(_v(None, reason="A: empty completion"))
                else:
                    p = "A" if len(x) > len(y) else "B"
                    out.append(_v(p, swap=SwapRecord(forward=p, reverse=p, consistent=True)))
            return out

    ps = _synthetic_pairs(6) + [PreferencePair(id="bad", prompt="q", chosen="?", rejected="x")]
    judge = RMLike()
    r = evaluate(judge, ps)
    assert judge.calls == 1 and r.orders == "judge"
    assert r.invalid_rate == pytest.approx(1 / 7) and r.invalid_reasons == {"A: empty completion": 1}
    assert r.swap_consistency == 1.0 and r.n_both_orders_parsed == 6
    # good-answer-i (13+ chars) is longer than bad-answer-i (12+): the length judge is right on all 6 valid pairs
    assert r.accuracy == pytest.approx(6 / 7) and r.accuracy_valid == 1.0
    assert r.position_consistent_accuracy == pytest.approx(6 / 7)
