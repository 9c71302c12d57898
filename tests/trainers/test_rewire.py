"""REWIRE: prompt builder, marker extraction, classifiers (fastText and the numpy fallback), top-p % selection,
the token mixer's epoch cap, diagnostics, and the pipeline's bad-input handling (spec/loops.md §6.5, §8.3)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopwright.sdk.artifacts import read_jsonl
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.trainers.rewire import (
    IMPROVED_END,
    IMPROVED_START,
    THINKING_END,
    THINKING_START,
    HashedNgramClassifier,
    RewireConfig,
    balanced_training_set,
    build_rewrite_prompt,
    extract_rewrite,
    fasttext_available,
    make_classifier,
    mix_by_tokens,
    recycled_fraction,
    rewire_stages,
    run_rewire,
    spearman,
    top_percent,
    training_lines,
)
from loopwright.trainers.rewire.classifier import FastTextClassifier


def test_prompt_inserts_document_once():
    doc = "Tom has 3 pens.\nClick here!"
    msgs = build_rewrite_prompt(doc)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    text = msgs[0]["content"]
    assert text.count(doc) == 1 and text.rstrip().endswith(doc)
    assert text.index("Original Draft:") < text.index(doc)
    for m in (THINKING_START, THINKING_END, IMPROVED_START, IMPROVED_END):
        assert m in text
    with pytest.raises(ValueError, match="empty"):
        build_rewrite_prompt("  \n")
    with pytest.raises(TypeError):
        build_rewrite_prompt(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_chars"):
        build_rewrite_prompt("x" * 20, max_chars=10)
    assert "{document}" in build_rewrite_prompt("{document}")[0]["content"]  # user text is never re-formatted


def _gen(body: str, thinking: str = "plan") -> str:
    return f"{THINKING_START}{thinking}{THINKING_END}\n{IMPROVED_START}\n{body}\n{IMPROVED_END}"


def test_extract_rewrite_cases():
    ok = extract_rewrite(_gen("A clean text."))
    assert ok.ok and ok.text == "A clean text." and ok.thinking == "plan"
    assert extract_rewrite(f"{IMPROVED_START} body {IMPROVED_END}").thinking is None
    cases = {
        _gen("x") : None,
        "no markers at all": "missing_start_marker",
        f"{IMPROVED_START} body never ends": "missing_end_marker",
        f"{IMPROVED_START} a {IMPROVED_END} {IMPROVED_START} b {IMPROVED_END}": "duplicate_markers",
        f"{IMPROVED_END} b {IMPROVED_START}": "markers_out_of_order",
        f"{IMPROVED_START}   {IMPROVED_END}": "empty_rewrite",
        "": "empty_generation",
    }
    for text, reason in cases.items():
        assert extract_rewrite(text).reason == reason, text
    assert extract_rewrite(_gen("x"), finish_reason="length").reason == "truncated"


@settings(deadline=None)
@given(st.text(max_size=200))
def test_extract_never_raises(text):
    r = extract_rewrite(text)
    assert r.ok == (r.reason is None)


def test_training_set_balanced_dedup_one_line():
    pos = ["good\ntext one", "good text one", "good text two", ""]
    neg = [f"bad {i}\n\nline" for i in range(10)] + ["good text two"]
    texts, labels = balanced_training_set(pos, neg, seed=1)
    assert sum(labels) == len(labels) - sum(labels) == 2
    assert all("\n" not in t for t in texts)
    lines = training_lines(texts, labels)
    assert all(line.startswith(("__label__hq ", "__label__lq ")) and "\n" not in line for line in lines)
    assert "good text two" not in [t for t, y in zip(texts, labels, strict=True) if y == 0]
    with pytest.raises(ValueError):
        balanced_training_set(["a"], [""])


def _toy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        if rng.random() < 0.5:
            texts.append(f"{a} plus {b} equals {a + b}. This is a clear explanation of adding numbers.")
            labels.append(1)
        else:
            texts.append(f"CLICK HERE buy now {a} deals {b} subscribe subscribe free free offer")
            labels.append(0)
    return texts, labels


@pytest.mark.parametrize("kind", ["hashed", "fasttext"])
def test_classifier_learns_and_round_trips(kind, tmp_path):
    if kind == "fasttext" and not fasttext_available():
        pytest.skip("fasttext is not installed (optional); the numpy fallback is tested")
    texts, labels = _toy_corpus(200)
    clf = make_classifier(kind, seed=0).fit(texts, labels)
    test_x, test_y = _toy_corpus(60, seed=5)
    scores = clf.score(test_x)
    acc = sum((s > 0.5) == bool(y) for s, y in zip(scores, test_y, strict=True)) / len(test_y)
    assert acc >= 0.95
    path = clf.save(tmp_path / f"clf.{kind}")
    loaded = (HashedNgramClassifier if kind == "hashed" else FastTextClassifier).load(path)
    assert loaded.score(test_x) == pytest.approx(scores, abs=1e-6)
    assert clf.kind in ("hashed_ngram_logreg", "fasttext")


def test_hashed_classifier_deterministic():
    texts, labels = _toy_corpus(50)
    a = HashedNgramClassifier(seed=3).fit(texts, labels).score(texts[:5])
    b = HashedNgramClassifier(seed=3).fit(texts, labels).score(texts[:5])
    assert a == b
    with pytest.raises(ValueError):
        make_classifier("svm")


@settings(deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-10, 10)), max_size=50), st.floats(0.1, 100))
def test_top_percent_returns_ceil_highest(scores, pct):
    idx = top_percent(scores, pct)
    valid = [(i, s) for i, s in enumerate(scores) if s is not None]
    assert len(idx) == math.ceil(pct / 100 * len(valid) - 1e-9)
    if idx and len(idx) < len(valid):
        worst_in = min(scores[i] for i in idx)
        assert all(s <= worst_in for i, s in valid if i not in idx)


def test_diagnostics():
    assert recycled_fraction([True, False, False, True], [True, True, True, False]) == pytest.approx(2 / 3)
    assert recycled_fraction([True], [False]) is None
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)  # scipy's value


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=12), st.lists(st.integers(1, 30), min_size=1, max_size=12),
       st.integers(1, 600), st.floats(0, 1), st.integers(1, 4))
def test_mixer_never_exceeds_epoch_cap(raw, rew, budget, ratio, cap):
    sources = {"raw": [" ".join(["w"] * n) for n in raw], "rewritten": [" ".join(["w"] * n) for n in rew]}
    rows, stats = mix_by_tokens(sources, {"raw": ratio, "rewritten": 1 - ratio}, budget, max_epochs=cap, seed=1,
                                strict=False)
    for name, s in stats["sources"].items():
        assert s["max_uses"] <= cap and s["epochs"] <= cap
        uses = [r["index"] for r in rows if r["source"] == name]
        assert all(uses.count(i) <= cap for i in set(uses))
        if s["shortfall_tokens"] == 0:
            assert s["tokens"] >= s["target_tokens"]


def test_mixer_strict_and_deterministic():
    sources = {"raw": ["a b c"] * 2, "rewritten": ["d e"] * 3}
    with pytest.raises(ConfigError, match="max_epochs=4"):
        mix_by_tokens(sources, {"raw": 0.5, "rewritten": 0.5}, 100)
    a = mix_by_tokens(sources, {"raw": 0.6, "rewritten": 0.4}, 20, seed=7)
    assert a == mix_by_tokens(sources, {"raw": 0.6, "rewritten": 0.4}, 20, seed=7)
    with pytest.raises(ConfigError, match="sum to 1"):
        mix_by_tokens(sources, {"raw": 0.6, "rewritten": 0.6}, 20)


def _rewriter(prompt: str, i: int, rng: random.Random) -> str:
    draft = prompt.split("Original Draft:", 1)[1].strip()
    if "NOPARSE" in draft:
        return "I cannot rewrite this."
    if "CUT" in draft:
        return f"{IMPROVED_START} half a rewrite"
    body = " ".join(w for w in draft.split() if w.isalnum() and w.lower() != "click")
    return _gen(f"An explanation: {body}. Each fact is stated clearly.")


def test_run_rewire_pipeline_bad_input_and_outputs(tmp_path):
    docs = [f"click {i} plus {i} is {2 * i} click" for i in range(18)]
    docs += ["NOPARSE draft", "CUT draft", "", 17, None]
    positives = [f"An explanation: {i} times 2 is {2 * i}. Each fact is stated clearly." for i in range(30)]
    raw_scores = [float(i % 7) if isinstance(d, str) else None for i, d in enumerate(docs)]
    res = run_rewire(docs, ScriptedGenerator(_rewriter), positives=positives, raw_scores=raw_scores,
                     config=RewireConfig(max_tokens=200, keep_top_pct=25, classifier="hashed"))
    st_ = res.stats()
    assert st_["n_documents"] == len(docs) and st_["n_parse_ok"] == 18
    assert st_["per_reason"]["unparseable: missing_start_marker"] == 1
    assert st_["per_reason"]["unparseable: missing_end_marker"] == 1
    assert st_["per_reason"]["invalid_document: empty"] == 1
    assert st_["per_reason"]["invalid_document: not text (int)"] == 1
    assert st_["per_reason"]["invalid_document: not text (NoneType)"] == 1
    assert st_["n_rewrite_selected"] == math.ceil(0.25 * 18) and st_["per_reason"]["below_top_pct"] == 18 - 5
    assert st_["recycled_fraction"] is not None and 0 <= st_["recycled_fraction"] <= 1
    assert st_["classifier"] == "hashed_ngram_logreg"
    more = res.recompute(50)  # no re-scoring: same scores, more selected
    assert more.stats()["n_rewrite_selected"] == 9
    assert res.stats()["n_rewrite_selected"] == 5  # the first result is unchanged
    paths = more.write(tmp_path / "out")
    assert len(read_jsonl(paths["selected.jsonl"])) == 9
    rejected = read_jsonl(paths["rejected.jsonl"])
    assert len(rejected) == len(docs) - 9 and all(r["reason"] for r in rejected)
    with pytest.raises(ValueError, match="positives"):
        run_rewire(docs, ScriptedGenerator(_rewriter))


def test_rewire_as_durable_stages_resumes(tmp_path):
    """run_stages (LangGraph + SQLite): a run interrupted after rewriting resumes without rewriting again."""
    from loopwright.sdk.artifacts import RunDir
    from loopwright.sdk.stages import Stage, run_stages

    docs = [f"click {i} plus {i} is {2 * i} click" for i in range(12)] + ["", "NOPARSE draft"]
    positives = [f"An explanation: {i} times 2 is {2 * i}. Each fact is stated clearly." for i in range(20)]
    gen = ScriptedGenerator(_rewriter)
    cfg = RewireConfig(max_tokens=200, keep_top_pct=25, classifier="hashed")
    stages = rewire_stages(docs, gen, positives=positives, raw_scores=[float(i) for i in range(len(docs))],
                           config=cfg)
    run = RunDir(tmp_path / "run", config={"t": 3})

    def boom(state, run_):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_stages([stages[0], Stage("rewire_select", boom)], run)
    calls = len(gen.calls)
    state = run_stages(stages, RunDir.open(run.path), resume=True)
    assert len(gen.calls) == calls and state["completed"] == ["rewire_rewrite", "rewire_select"]
    assert state["metrics"]["n_rewrite_selected"] == math.ceil(0.25 * 12)
    rejected = read_jsonl(run.path / "rejected.jsonl")
    assert {r["reason"] for r in rejected} >= {"invalid_document: empty", "unparseable: missing_start_marker",
                                               "below_top_pct"}
