"""RIP and REWIRE give the same outputs through the LocalExecutor and the RayExecutor (2 actors), on a real tiny
transformers model and a real reward-model judge. One Ray session serves both filters (Ray start-up is slow)."""

from __future__ import annotations

import functools
import os

import pytest

from loopwright.judges.reward_model import RewardModelJudge
from loopwright.judges.rip import RIPConfig, run_rip
from loopwright.sdk.executors import LocalExecutor, RayExecutor, init_ray, shutdown_ray
from loopwright.trainers.rewire import HashedNgramClassifier, RewireConfig, run_rewire

PROMPTS = [f"Tom has {i} pens. He buys {i + 3} more. How many pens does he have now?" for i in range(9)]
PROMPTS += ["", [{"role": "user", "content": "Each box holds 6 apples. How many apples are in 9 boxes?"}]]
DOCS = [f"A farmer had {i} sheep and sold {i // 2}. The quick brown fox. Click here!" for i in range(7)] + ["", 5]


def _factory(model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return functools.partial(TransformersGenerator, str(model_dir), batch_size=4)


@pytest.fixture(scope="module")
def ray_local():
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    init_ray()
    import ray

    yield ray
    shutdown_ray()


@pytest.fixture(scope="module")
def local_exec(tiny_model_dir):
    gen = _factory(tiny_model_dir)()
    yield LocalExecutor(gen, batch_size=4, progress=False)
    gen.close()


def _strip(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "timings_s"}


def test_rip_local_equals_ray(ray_local, tiny_model_dir, local_exec, tmp_path):
    judge = RewardModelJudge(tiny_model_dir, num_threads=1)  # causal-LM folder: random head, real forward passes
    cfg = RIPConfig(n_responses=3, max_tokens=8, seed=5)
    local = run_rip(PROMPTS, local_exec, judge, cfg)
    remote = run_rip(PROMPTS, RayExecutor(_factory(tiny_model_dir), batch_size=4, num_actors=2), judge, cfg)
    assert local.records and [r["responses"] for r in remote.records] == [r["responses"] for r in local.records]
    assert [r["lengths"] for r in remote.records] == [r["lengths"] for r in local.records]
    for a, b in zip(remote.records, local.records, strict=True):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-5)
    assert [d.keep for d in remote.decisions] == [d.keep for d in local.decisions]
    assert remote.dpo_rows(provenance=False) == local.dpo_rows(provenance=False)
    assert _strip(remote.stats())["per_reason"] == _strip(local.stats())["per_reason"]
    st = local.stats()
    assert st["per_reason"]["invalid_prompt: empty text"] == 1 and st["n_prompts"] == len(PROMPTS)
    assert st["n_responses"] == 3 * (len(PROMPTS) - 1)
    # the sampled responses differ within a prompt (T=0.8 with a seed), so the pairs are real pairs
    assert any(len(set(r["responses"])) > 1 for r in local.records)


def test_rewire_local_equals_ray(ray_local, tiny_model_dir, local_exec):
    clf = HashedNgramClassifier(seed=0).fit(["a clear explanation of sums", "buy now click here"], [1, 0])
    cfg = RewireConfig(max_tokens=8, seed=3, truncate_prompt=True, keep_top_pct=50)
    local = run_rewire(DOCS, local_exec, classifier=clf, config=cfg, raw_scores=list(range(len(DOCS))))
    remote = run_rewire(DOCS, RayExecutor(_factory(tiny_model_dir), batch_size=4, num_actors=2), classifier=clf,
                        config=cfg, raw_scores=list(range(len(DOCS))))
    assert remote.records == local.records
    st = local.stats()
    assert st["per_reason"]["invalid_document: empty"] == 1
    assert st["per_reason"]["invalid_document: not text (int)"] == 1
    # a random tiny model cannot follow the marker contract: every rewrite is rejected with the parser's reason
    assert sum(v for k, v in st["per_reason"].items() if k.startswith("unparseable")) == 7
    assert all(r.get("raw_generation") for r in local.records if r["reason"] and "unparseable" in r["reason"])
