"""Loaders for ../shared/data/llmbar and the MT-Bench human pairs, and the JSONL layouts."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pydantic import ValidationError

from loopwright.judges.datasets import (
    LLMBAR_SUBSETS,
    PreferencePair,
    default_data_root,
    load_llmbar,
    load_mt_bench_human,
    load_pairs,
    load_preference_jsonl,
)


def test_default_root_is_shared_data(shared_data):
    assert default_data_root().resolve() == shared_data.resolve()


def test_llmbar_sizes_and_labels(shared_data):
    pairs = load_llmbar(shared_data)
    sizes = Counter(p.subset for p in pairs)
    # RewardBench's Chat-Hard llmbar-* subset sizes (spec/loops.md §4.5)
    assert sizes == {"llmbar-natural": 100, "llmbar-adver-neighbor": 134, "llmbar-adver-GPTInst": 92,
                     "llmbar-adver-GPTOut": 47, "llmbar-adver-manual": 46}
    assert len({p.id for p in pairs}) == len(pairs) == 419
    # label -> chosen: check against the raw file
    raw = json.loads((shared_data / "llmbar" / "Natural.json").read_text())
    nat = [p for p in pairs if p.subset == "llmbar-natural"]
    for row, p in zip(raw, nat, strict=True):
        better, worse = ("output_1", "output_2") if int(row["label"]) == 1 else ("output_2", "output_1")
        assert (p.prompt, p.chosen, p.rejected) == (row["input"], row[better], row[worse])
        assert p.source == "llmbar/Natural.json" and not p.tie


def test_llmbar_subset_filter_and_errors(shared_data, tmp_path):
    assert {p.subset for p in load_llmbar(shared_data, subsets=["llmbar-adver-manual"])} == {"llmbar-adver-manual"}
    with pytest.raises(ValueError, match="llmbar-natural"):
        load_llmbar(shared_data, subsets=["natural"])
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_llmbar(tmp_path / "nope")


def test_mt_bench_human(shared_data):
    pairs = load_mt_bench_human(shared_data)
    assert len(pairs) == 200 and {p.subset for p in pairs} == {"mt-bench-human"}
    assert not any(p.tie for p in pairs)
    assert len(load_mt_bench_human(shared_data, keep_ties=True)) == 200  # the provided copy has no ties
    assert all(isinstance(p.prompt, str) and p.chosen != p.rejected for p in pairs)


def test_jsonl_layouts_and_ties(tmp_path):
    f = tmp_path / "prefs.jsonl"
    rows = [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "subset": "s1"},
        {"prompt": [{"role": "user", "content": "q2"}], "chosen": "x", "rejected": "y"},
        {"input": "q3", "output_1": "o1", "output_2": "o2", "label": 2},
        {"input": "q4", "output_1": "o1", "output_2": "o2", "label": "tie"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = load_preference_jsonl(f)
    assert [p.id for p in pairs] == ["prefs/0", "prefs/1", "prefs/2"]
    assert pairs[0].subset == "s1" and pairs[1].subset == "prefs"
    assert (pairs[2].chosen, pairs[2].rejected) == ("o2", "o1")
    with_ties = load_preference_jsonl(f, keep_ties=True)
    assert len(with_ties) == 4 and with_ties[3].tie and with_ties[3].id == "prefs/3"
    assert load_pairs(str(f)) == pairs


def test_bad_rows_name_the_problem(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl row 0.*match neither"):
        load_preference_jsonl(f)
    f.write_text('{"input": "q", "output_1": "a", "output_2": "b", "label": 7}\n')
    with pytest.raises(ValueError, match="label 7"):
        load_preference_jsonl(f)
    with pytest.raises(ValueError, match="unknown dataset 'rewardbench'"):
        load_pairs("rewardbench")


def test_pair_model_is_frozen():
    p = PreferencePair(id="x", prompt="q", chosen="a", rejected="b")
    with pytest.raises(ValidationError):
        p.chosen = "c"  # type: ignore[misc]
    assert set(LLMBAR_SUBSETS.values()) >= {"llmbar-natural"}
