"""modeling/reverse/data.py: datasets map and collator mixing forward and reversed rows (spec/modeling.md §4.4 item 5)."""

from __future__ import annotations

import pytest

from loopwright.modeling.reverse import ReverseCollator, reverse_map, reverse_token_row, reverse_words

TEXTS = [f"person{i} was born in city{i % 3} New York on day {i}" for i in range(40)]


def test_map_with_ratio_one_doubles_the_data_with_one_twin_each():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": TEXTS, "id": list(range(40))})
    out = ds.map(reverse_map("entity", entities=["New York"], ratio=1.0), batched=True, batch_size=7)
    assert len(out) == 80 and sum(out["reversed"]) == 40
    by_id = {}
    for row in out:
        by_id.setdefault(row["id"], {})[row["reversed"]] = row["text"]
    assert all(len(v) == 2 for v in by_id.values())
    assert by_id[5][True] == "5 day on New York city2 in born was person5"
    assert by_id[5][False] == TEXTS[5]


def test_map_ratio_is_seeded_and_approximate():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": TEXTS * 5, "k": list(range(200))})
    ds = ds.map(lambda b: {"text": [f"{t} #{k}" for t, k in zip(b["text"], b["k"], strict=True)]}, batched=True)
    fn = reverse_map("word", ratio=0.3, seed=1)
    a = ds.map(fn, batched=True)
    b = ds.map(reverse_map("word", ratio=0.3, seed=1), batched=True, batch_size=13)
    assert a["text"] == b["text"]  # independent of batching
    n_rev = sum(a["reversed"])
    assert 30 <= n_rev <= 90
    rev_rows = [r for r in a if r["reversed"]]
    assert all(r["text"] == reverse_words(ds[r["k"]]["text"]) for r in rev_rows)
    c = ds.map(reverse_map("word", ratio=0.3, seed=2), batched=True)
    assert c["reversed"] != a["reversed"]


def test_map_token_mode_reverses_ids(tiny_model_dir):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = Dataset.from_dict({"text": TEXTS[:4]})
    out = ds.map(reverse_map("token", tokenizer=tok), batched=True)
    fwd = [r["input_ids"] for r in out if not r["reversed"]]
    rev = [r["input_ids"] for r in out if r["reversed"]]
    assert rev == [ids[::-1] for ids in fwd]
    with pytest.raises(ValueError, match="tokenizer"):
        reverse_map("token")
    with pytest.raises(ValueError, match="exactly one"):
        reverse_map("entity")
    with pytest.raises(ValueError, match="ratio"):
        reverse_map("word", ratio=1.5)


def test_token_row_keeps_bos_eos_and_permutes_the_mask():
    ids, mask = reverse_token_row([1, 10, 11, 12, 13, 2], "entity", loss_mask=[0, 1, 1, 0, 1, 1],
                                  entity_spans=[(2, 4)], bos_id=1, eos_id=2)
    assert ids == [1, 13, 11, 12, 10, 2]
    assert mask == [0, 1, 1, 0, 1, 1]
    import random

    ids, mask = reverse_token_row([1, 10, 11, 12, 13, 2], "rand", k=2, rng=random.Random(0), sep_id=99, bos_id=1,
                                  eos_id=2)
    assert ids[0] == 1 and ids[-1] == 2 and 99 in ids
    assert sorted(t for t in ids if t != 99) == [1, 2, 10, 11, 12, 13]


def test_collator_mixes_pads_and_resamples_each_call():
    rows = [{"input_ids": [1, 10 + i, 20 + i, 30 + i, 2], "entity_spans": [(1, 3)]} for i in range(8)]
    collate = ReverseCollator("entity", ratio=0.5, seed=0, pad_id=0, bos_id=1, eos_id=2)
    batch = collate(rows)
    assert batch["input_ids"].shape == (8, 5)
    flags = batch["reversed"].tolist()
    assert 0 < sum(flags) < 8
    for row, ids, flag in zip(rows, batch["input_ids"].tolist(), flags, strict=True):
        expected = [1, row["input_ids"][3], row["input_ids"][1], row["input_ids"][2], 2] if flag else row["input_ids"]
        assert ids == expected
    assert batch["labels"].tolist() == batch["input_ids"].tolist()
    again = ReverseCollator("entity", ratio=0.5, seed=0, pad_id=0, bos_id=1, eos_id=2)(rows)
    assert again["reversed"].tolist() == flags  # seeded

    twins = ReverseCollator("rand", ratio=1.0, append=True, k=2, sep_id=99, pad_id=0, bos_id=1, eos_id=2)
    b1, b2 = twins(rows), twins(rows)
    assert b1["input_ids"].shape[0] == 16 and b1["reversed"].sum() == 8
    assert (b1["labels"] == -100).sum() == (b1["attention_mask"] == 0).sum()
    assert not b1["input_ids"].equal(b2["input_ids"]) or b1["input_ids"].shape != b2["input_ids"].shape
