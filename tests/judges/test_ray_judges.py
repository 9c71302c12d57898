"""Judges and reward models in Ray actors (issue 16 item 6): RIP, REWIRE's scoring and judge evaluation give the same
outputs with the judge in 2 Ray actors as with the judge in this process. Real components: a tiny transformers model
(generation and a reward-model head), a real PairwiseJudge over TransformersGenerator, Ray on loopback with a
200 MiB object store. One Ray session serves the module (Ray start-up is slow)."""

from __future__ import annotations

import functools
import os

import pytest

from loopwright.judges.datasets import PreferencePair
from loopwright.judges.evaluation import evaluate
from loopwright.judges.pairwise import PairwiseJudge
from loopwright.judges.reward_model import RewardModelJudge
from loopwright.judges.rip import RIPConfig, run_rip
from loopwright.sdk.artifacts import read_jsonl
from loopwright.sdk.executors import (
    LocalExecutor,
    RayExecutor,
    RayJudge,
    init_ray,
    llm_judge_factory,
    shutdown_ray,
)
from loopwright.sdk.types import SamplingParams
from loopwright.trainers.rewire import HashedNgramClassifier, RewireConfig, run_rewire

PROMPTS = [f"Tom has {i} pens. He buys {i + 3} more. How many pens does he have now?" for i in range(7)]
PROMPTS += ["", [{"role": "user", "content": "Each box holds 6 apples. How many apples are in 9 boxes?"}]]
DOCS = [f"A farmer had {i} sheep and sold {i // 2}. The quick brown fox. Click here!" for i in range(6)] + [""]


def _gen_factory(model_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return functools.partial(TransformersGenerator, str(model_dir), batch_size=4)


def _rm_factory(model_dir):
    return functools.partial(RewardModelJudge, str(model_dir), num_threads=1, batch_size=4)


@pytest.fixture(scope="module")
def ray_local():
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    init_ray()
    import ray

    yield ray
    shutdown_ray()


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    """A real reward-model folder (sequence-classification head saved once), so every actor loads the same head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(out)
    return out


def test_ray_judge_scores_like_the_local_judge_in_two_actor_processes(ray_local, rm_dir):
    prompts = [f"What is {i} plus 3?" for i in range(10)] + [[{"role": "user", "content": "Hi"}], 7]
    responses = [f"{i}+3={i + 3} #### {i + 3}" for i in range(10)] + ["Hello", "x"]
    local = _rm_factory(rm_dir)().score(prompts, responses)
    with RayJudge(_rm_factory(rm_dir), num_actors=2, batch_size=3) as rj:
        remote = rj.score(prompts, responses)
        stats = rj.actor_stats()
        assert rj.name == "reward_model" and "pointwise" in rj.kinds
        with pytest.raises(ValueError, match="different lengths"):
            rj.score(prompts, responses[:2])
    assert [v.valid for v in remote] == [v.valid for v in local]
    assert not remote[-1].valid and remote[-1].invalid_reason == local[-1].invalid_reason  # bad prompt: data
    assert [v.score for v in remote[:-1]] == pytest.approx([v.score for v in local[:-1]], abs=1e-5)
    # the judging really ran in two other processes, and both took batches
    assert len({s["pid"] for s in stats}) == 2 and os.getpid() not in {s["pid"] for s in stats}
    assert all(s["calls"] >= 1 for s in stats) and sum(s["items"] for s in stats) == len(prompts)


def test_rip_with_generation_and_reward_model_in_ray_equals_local(ray_local, tiny_model_dir, rm_dir):
    cfg = RIPConfig(n_responses=3, max_tokens=8, seed=5, judge_batch_size=6)
    gen = _gen_factory(tiny_model_dir)()
    try:
        local = run_rip(PROMPTS, LocalExecutor(gen, batch_size=4, progress=False), _rm_factory(rm_dir)(), cfg)
    finally:
        gen.close()
    ray_exec = RayExecutor(_gen_factory(tiny_model_dir), batch_size=4, num_actors=2)
    remote = run_rip(PROMPTS, ray_exec, _rm_factory(rm_dir), cfg)  # a factory: the executor's 2 actors judge
    assert [r["responses"] for r in remote.records] == [r["responses"] for r in local.records]
    for a, b in zip(remote.records, local.records, strict=True):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-5)
    assert [(d.keep, d.reason) for d in remote.decisions] == [(d.keep, d.reason) for d in local.decisions]
    assert remote.dpo_rows(provenance=False) == local.dpo_rows(provenance=False)
    assert remote.rejected_rows()[0] == local.rejected_rows()[0]  # the empty prompt, rejected before sampling
    assert remote.stats()["n_responses"] == 3 * (len(PROMPTS) - 1)
    with pytest.raises(TypeError, match="factory"):
        ray_exec.judge(_rm_factory(rm_dir)())  # a built judge (a loaded model) cannot be shipped


def test_rewire_scoring_in_ray_actors_equals_local(ray_local, tiny_model_dir):
    """The classifier travels to the actors as saved bytes; the random tiny model's rewrites rarely parse, so a few
    hand-written parsed records are scored too (the scoring path, not the rewriter, is under test here)."""
    from loopwright.trainers.rewire.pipeline import ClassifierJudge, RewireFilter

    clf = HashedNgramClassifier(seed=0).fit(["a clear explanation of sums", "buy now click here"], [1, 0])
    cfg = RewireConfig(max_tokens=8, seed=3, truncate_prompt=True, keep_top_pct=50)
    gen = _gen_factory(tiny_model_dir)()
    try:
        local = run_rewire(DOCS, LocalExecutor(gen, batch_size=4, progress=False), classifier=clf, config=cfg)
    finally:
        gen.close()
    remote = run_rewire(DOCS, RayExecutor(_gen_factory(tiny_model_dir), batch_size=4, num_actors=2), classifier=clf,
                        config=cfg, score_on_executor=True)
    assert remote.records == local.records
    records = [{"parse_ok": True, "rewrite_text": t} for t in
               ["a clear explanation of sums and carries", "click here buy now", "sums", "free offer click"]]
    records.append({"parse_ok": False, "rewrite_text": None})
    rf = RewireFilter(clf, 50)
    with RayJudge(ClassifierJudge.factory(clf), num_actors=2, batch_size=1) as rj:
        rf.judge = rj
        remote_scores = rf.score(records)
    rf.judge = None
    local_scores = rf.score(records)
    assert remote_scores == local_scores and len([s for s in local_scores if s]) == 4
    assert rf.keep(remote_scores) == rf.keep(local_scores)


def test_evaluate_with_an_llm_judge_in_ray_actors_equals_local(ray_local, tiny_model_dir, tmp_path):
    pairs = [PreferencePair(id=f"p{i}", prompt=f"What is {i} plus 3?", chosen=f"{i + 3}", rejected=f"{i + 4} apples",
                            subset="s" + str(i % 2)) for i in range(6)]
    greedy = SamplingParams(max_tokens=6, temperature=0.0, truncate_prompt=True)
    gen = _gen_factory(tiny_model_dir)()
    try:
        local = evaluate(PairwiseJudge(gen, sampling=greedy), pairs, seed=1, batch_size=2, run_dir=tmp_path / "l")
    finally:
        gen.close()
    factory = llm_judge_factory(PairwiseJudge, _gen_factory(tiny_model_dir), sampling=greedy)
    remote = evaluate(factory, pairs, seed=1, batch_size=2, run_dir=tmp_path / "r",
                      executor=RayExecutor(_gen_factory(tiny_model_dir), num_actors=2))
    assert remote.n == local.n == 6 and remote.orders == local.orders and remote.judge == local.judge
    keys = ("id", "chosen_slot", "preference", "valid", "invalid_reason", "correct", "forward", "reverse",
            "consistent")
    rows_l, rows_r = read_jsonl(tmp_path / "l" / "records.jsonl"), read_jsonl(tmp_path / "r" / "records.jsonl")
    assert [{k: r[k] for k in keys} for r in rows_r] == [{k: r[k] for k in keys} for r in rows_l]
    assert [r["verdict"]["raw"] for r in rows_r] == [r["verdict"]["raw"] for r in rows_l]
    assert remote.accuracy == local.accuracy and remote.invalid_reasons == local.invalid_reasons
