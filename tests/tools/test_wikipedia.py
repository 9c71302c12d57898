"""WikipediaSearch: offline FTS5/BM25 index (build, search, retrieval quality, CLI), the online backend's offline
error path, and the Generator-based answer extraction."""

from __future__ import annotations

import json
import re
import time

import pytest
from typer.testing import CliRunner

from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.tools.cli import tools_app
from loopwright.tools.wikipedia import (
    OfflineIndex,
    OnlineWikipedia,
    WikipediaSearch,
    build_index,
    extract_answer,
    parse_answer,
    split_paragraphs,
)

TINY = [
    {"title": "Scott Derrickson", "text": "Scott Derrickson is an American director.\n\nHe directed Doctor Strange."},
    {"title": "Ed Wood", "text": "Edward Davis Wood Jr. was an American filmmaker, actor and author."},
    {"title": "Shirley Temple", "text": "Shirley Temple Black was an actress.\n\nShe later served as Chief of "
                                        "Protocol of the United States."},
]


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    path = tmp_path_factory.mktemp("idx") / "tiny.sqlite"
    assert build_index(TINY, path) == 5  # five paragraphs
    return path


def test_split_paragraphs():
    assert split_paragraphs("a  b\n\n\n c \n\n") == ["a b", "c"]
    long = " ".join(f"Sentence {i} is here." for i in range(200))
    pieces = split_paragraphs(long, max_chars=300)
    assert len(pieces) > 5 and all(len(p) <= 300 for p in pieces)
    assert " ".join(pieces) == long


def test_offline_search_ranks_the_right_paragraph(tiny_index):
    idx = OfflineIndex(tiny_index)
    assert len(idx) == 5
    hits = idx.search("Who was Chief of Protocol?", k=2)
    assert hits[0]["title"] == "Shirley Temple" and "Chief of Protocol" in hits[0]["text"]
    assert hits[0]["score"] > (hits[1]["score"] if len(hits) > 1 else float("-inf"))
    assert idx.search("directors", k=1)[0]["title"] == "Scott Derrickson"  # porter stemming
    # FTS5 syntax in a query is neutralised, not executed or a syntax error
    for q in ['NEAR("a" "b")', 'title:"x" OR *', "\"", "AND OR NOT", "", "!!!"]:
        assert isinstance(idx.search(q), list)


def test_tool_interface_offline(tiny_index):
    tool = WikipediaSearch(index=tiny_index)
    res = tool.run({"query": "Ed Wood filmmaker", "k": 1})
    assert res.ok and res.value[0]["title"] == "Ed Wood"
    assert not tool.run({"query": "x", "k": 0}).ok  # k must be >= 1
    with pytest.raises(FileNotFoundError, match="build-index"):
        WikipediaSearch(index=tiny_index.parent / "missing.sqlite")


def test_sources_jsonl_and_datasets(tmp_path):
    import datasets

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("".join(json.dumps({"name": d["title"], "body": d["text"]}) + "\n" for d in TINY))
    assert build_index(jsonl, tmp_path / "a.sqlite", title_field="name", text_field="body") == 5
    ds = datasets.Dataset.from_list(TINY)
    assert build_index(ds, tmp_path / "b.sqlite") == 5
    ds.save_to_disk(str(tmp_path / "ds"))
    assert build_index(tmp_path / "ds", tmp_path / "c.sqlite") == 5
    with pytest.raises(ValueError, match="text_field"):
        build_index([{"title": "x"}], tmp_path / "d.sqlite")


def test_retrieval_quality_on_strategyqa_facts(shared_data, tmp_path):
    """HotpotQA here ships without context paragraphs (README), so retrieval is measured on StrategyQA: each
    question's gold explanation is one document among all 2,290; query = the question. Measured: top-1 0.89,
    top-3 0.97, top-5 0.97 on the first 500 questions."""
    examples = json.loads((shared_data / "strategyqa" / "task.json").read_text())["examples"]
    docs = [{"title": f"sqa-{i}", "text": re.sub(r"^(Yes|No)\.\s*", "", e["target"])} for i, e in enumerate(examples)]
    path = tmp_path / "sqa.sqlite"
    assert build_index(docs, path) >= len(docs)
    idx = OfflineIndex(path)
    n = 300
    t = time.perf_counter()
    top3 = sum(any(h["title"] == f"sqa-{i}" for h in idx.search(e["input"], 3)) for i, e in enumerate(examples[:n]))
    per_query = (time.perf_counter() - t) / n
    assert top3 / n >= 0.85, top3 / n
    assert per_query < 0.05


def test_online_backend_reports_offline_fast(monkeypatch):
    # the network is absent here; force it for machines that have one by pointing the proxy nowhere.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    tool = WikipediaSearch(backend=OnlineWikipedia(timeout_s=2.0))
    t = time.perf_counter()
    res = tool.run({"query": "Scott Derrickson"})
    assert time.perf_counter() - t < 5.0
    assert not res.ok and res.error.startswith("offline: "), res.error


def test_extract_answer_with_scripted_generator(shared_data, tiny_index):
    hotpot = json.loads((shared_data / "hotpotqa" / "hotpot_dev_v1_simplified.json").read_text())
    q = hotpot[1]  # "... woman who portrayed Corliss Archer ..." -> "Chief of Protocol"
    paragraphs = OfflineIndex(tiny_index).search("Chief of Protocol Shirley Temple", k=2)

    def respond(prompt: str, i: int, rng) -> str:
        assert q["question"] in prompt and "Chief of Protocol" in prompt and prompt.rstrip().endswith("Answer:")
        return " Chief of Protocol.\nExplanation: ..."

    gen = ScriptedGenerator(respond)
    assert extract_answer(gen, q["question"], paragraphs) == q["answer"]
    assert extract_answer(ScriptedGenerator(["Unknown."]), q["question"], paragraphs) is None
    assert parse_answer("Answer: 'Animorphs'") == "Animorphs"
    assert parse_answer("") is None


def test_cli_build_index(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY))
    out = tmp_path / "out" / "index.sqlite"
    res = CliRunner().invoke(tools_app, ["build-index", "--input", str(corpus), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "indexed 5 paragraphs" in res.output
    assert OfflineIndex(out).search("Ed Wood", 1)[0]["title"] == "Ed Wood"
    bad = CliRunner().invoke(tools_app, ["build-index", "--input", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert bad.exit_code == 2


def test_schema_and_function_for_trl(tiny_index):
    from transformers.utils import get_json_schema

    tool = WikipediaSearch(index=tiny_index)
    params = tool.openai_schema()["function"]["parameters"]
    assert params["required"] == ["query"] and params["properties"]["k"]["default"] == 3
    fn = tool.as_function()
    assert json.loads(fn(query="Ed Wood", k=1))[0]["title"] == "Ed Wood"  # TRL tools return strings
    js = get_json_schema(fn)["function"]
    assert js["name"] == "wikipedia_search"
    assert js["parameters"]["properties"]["k"]["type"] == "integer"
    assert js["parameters"]["required"] == ["query"]
