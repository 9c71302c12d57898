"""Judges as TRL 1.16 reward functions: the contract, real GRPO and OnlineDPO runs, and the pinned OnlineDPO pairing.

The judge is a real RewardModelJudge (the cached sandbox reward model: seed model + RewardTrainer); the trainers
are real TRL (GRPOTrainer; OnlineDPOTrainer from trl.experimental.online_dpo) on the sandbox seed model, CPU.
"""

from __future__ import annotations

import asyncio
import inspect
import math

import pytest

from loopwright.judges.adapters.trl import (
    ONLINE_DPO_PAIRING_TRL,
    AsyncJudgeRewardFunc,
    JudgeRewardFunc,
    PairwiseRewardFunc,
    as_pairwise_reward_func,
    as_reward_func,
    completion_text,
)
from loopwright.judges.reward_model import RewardModelJudge
from loopwright.trainers.reward import ensure_miniarith_reward_model
from loopwright.trainers.sandbox.seed import held_out_problems, miniarith_prompt

SHORT_MAX_LENGTH = 60
"""With the sandbox tokenizer, one-step prompts + answer fit in 60 tokens and three-step prompts do not: a judge
with this limit is invalid (None) on part of every mixed batch."""


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One torch thread: on the shared 2-core machine two threads ran these tiny models up to 8x slower
    (scoring 200 answers: 15.9 s with 2 threads, 2.0 s with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rm_dir():
    return ensure_miniarith_reward_model()


@pytest.fixture(scope="module")
def judge(rm_dir):
    return RewardModelJudge(rm_dir, batch_size=32)


@pytest.fixture(scope="module")
def short_judge(judge):
    return RewardModelJudge(judge.model, tokenizer=judge.tokenizer, max_length=SHORT_MAX_LENGTH, name="rm_short")


@pytest.fixture(scope="module")
def problems():
    probs = held_out_problems(40)
    short = [p for p in probs if p.steps == 1][:4]
    long = [p for p in probs if p.steps == 3][:4]
    assert len(short) == 4 and len(long) == 4
    return short + long


class Collector:
    """Stands in for TRL's ``log_metric`` / ``log_extra`` callbacks (plain lists, like GRPO's pending logs)."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = {}
        self.extra: dict[str, list] = {}

    def log_metric(self, name: str, value: float) -> None:
        self.metrics.setdefault(name, []).append(value)

    def log_extra(self, column: str, values: list) -> None:
        self.extra.setdefault(column, []).extend(values)


def _trl_kwargs(col: Collector) -> dict:
    return {"trainer_state": object(), "log_metric": col.log_metric, "log_extra": col.log_extra,
            "environments": None, "answer": [1] * 8, "some_extra_column": ["x"] * 8}


def test_completion_text_forms():
    assert completion_text("hi") == "hi"
    assert completion_text([{"role": "assistant", "content": "a"}]) == "a"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]) == "b"
    assert completion_text([{"role": "assistant", "content": "x"}, {"role": "tool", "content": "7"},
                            {"role": "assistant", "content": "y"}]) == "x\ny"
    assert completion_text([{"role": "tool", "content": "7"}]) is None
    assert completion_text(42) is None


def test_sync_reward_func_contract(judge, short_judge, problems):
    prompts = [miniarith_prompt(p) for p in problems]
    completions = [[{"role": "assistant", "content": p.cot}] for p in problems]
    fn = as_reward_func(short_judge)
    assert isinstance(fn, JudgeRewardFunc) and fn.__name__ == "rm_short"
    assert as_reward_func(judge, name="my judge!").__name__ == "my_judge"
    col = Collector()
    rewards = fn(prompts, completions, completion_ids=[[1, 2]] * 8, **_trl_kwargs(col))
    assert len(rewards) == 8
    # one-step problems fit SHORT_MAX_LENGTH, three-step ones do not -> None, never a default number
    assert all(isinstance(r, float) and math.isfinite(r) for r in rewards[:4])
    assert rewards[4:] == [None] * 4
    assert col.metrics == {"judge/invalid_rate": [0.5]}
    reasons = col.extra["judge_reasoning"]
    assert len(reasons) == 8 and all(r.startswith("INVALID:") and "max_length" in r for r in reasons[4:])
    assert fn.stats == {"calls": 1, "items": 8, "invalid": 4}
    # equal to the judge's own scores; string prompts/completions work the same
    direct = [v.score for v in judge.score(prompts, [p.cot for p in problems])]
    full = as_reward_func(judge)([p.question for p in problems], [p.cot for p in problems])
    assert full == pytest.approx(direct, abs=1e-4)
    # a completion with no assistant text is invalid, not a crash
    assert as_reward_func(judge)(prompts[:2], [[{"role": "tool", "content": "3"}], problems[1].cot])[0] is None


def test_async_reward_func_matches_sync(judge, short_judge, problems):
    from trl.trainer.utils import get_callable_name, is_async_callable

    prompts = [miniarith_prompt(p) for p in problems]
    completions = [[{"role": "assistant", "content": p.cot}] for p in problems]
    afn = short_judge.as_reward_func(async_=True, name="rm_async")  # the RewardFuncMixin method
    assert isinstance(afn, AsyncJudgeRewardFunc) and inspect.iscoroutinefunction(afn.__call__)
    assert is_async_callable(afn) and get_callable_name(afn) == "rm_async"  # how GRPO/RLOO detect and name it
    assert not is_async_callable(as_reward_func(judge))
    col = Collector()

    async def main():  # two calls gathered on one loop, as GRPO does
        return await asyncio.gather(afn(prompts, completions, **_trl_kwargs(col)),
                                    afn(prompts[:4], completions[:4], **_trl_kwargs(col)))

    a, b = asyncio.run(main())
    sync = as_reward_func(short_judge)(prompts, completions)
    assert a[:4] == pytest.approx(sync[:4], abs=1e-6) and a[4:] == [None] * 4
    assert b == pytest.approx(sync[:4], abs=1e-6)
    assert sorted(col.metrics["judge/invalid_rate"]) == [0.0, 0.5]
    assert len(col.extra["judge_reasoning"]) == 12


def test_pairwise_mode_against_reference_column(judge, problems):
    prompts = [miniarith_prompt(p) for p in problems[:4]]
    good = [p.cot for p in problems[:4]]
    fn = as_reward_func(judge, mode="pairwise", reference_column="reference")
    rewards = fn(prompts, [[{"role": "assistant", "content": g}] for g in good], reference=good)
    assert rewards == pytest.approx([0.5] * 4)  # identical to the reference: p_a = sigmoid(0)
    with pytest.raises(ValueError, match="reference"):
        fn(prompts, good)
    with pytest.raises(ValueError, match="mode="):
        as_reward_func(judge, mode="listwise")  # type: ignore[arg-type]


def test_pairwise_layout_adapter(judge, short_judge, problems):
    fn = as_pairwise_reward_func(judge)
    assert isinstance(fn, PairwiseRewardFunc) and fn.__name__ == "reward_model_pairwise"
    ps = [miniarith_prompt(p) for p in problems[:4]]
    a = [p.cot for p in problems[:4]]
    b = [p.cot.replace("####", "#### 1") for p in problems[:4]]  # a different answer line
    r = fn(ps + ps, [[{"role": "assistant", "content": x}] for x in a + b])
    va = [v.score for v in judge.score(ps, a)]
    vb = [v.score for v in judge.score(ps, b)]
    for i in range(4):
        want = (1.0, 0.0) if va[i] > vb[i] else (0.0, 1.0) if va[i] < vb[i] else (0.5, 0.5)
        assert (r[i], r[i + 4]) == want
    # equal completions -> a tie 0.5/0.5; invalid pairs -> equal rewards, counted (never None/None)
    assert fn(ps[:1] * 2, a[:1] * 2) == [0.5, 0.5] and fn.stats["ties"] == 1
    long_ps = [miniarith_prompt(p) for p in problems[4:6]]
    short = as_pairwise_reward_func(short_judge)
    assert short(long_ps * 2, [problems[4].cot, problems[5].cot] * 2) == [0.5] * 4
    assert short.stats["invalid_pairs"] == 2
    with pytest.raises(ValueError, match="pairing layout"):
        fn([ps[0], ps[1]], a[:2])  # prompts[i] != prompts[i+B]
    with pytest.raises(ValueError, match="2\\*B"):
        fn(ps[:3], a[:3])


def test_online_dpo_pairing_pinned_in_trl_source():
    """Regression pin: TRL 1.16 OnlineDPOTrainer scores 2*B completions with prompts=2*prompts and pairs i with
    i+B (``first_half >= second_half``). If this fails after a TRL upgrade, re-check the layout, then update
    ``ONLINE_DPO_PAIRING_TRL``."""
    import trl
    from trl.experimental.online_dpo import OnlineDPOTrainer

    assert ".".join(trl.__version__.split(".")[:2]) in ONLINE_DPO_PAIRING_TRL, trl.__version__
    src = inspect.getsource(OnlineDPOTrainer)
    assert "prompts=2 * prompts, completions=completions" in src
    assert "first_half, second_half = rewards.split(batch_size)" in src
    assert "mask = first_half >= second_half" in src
    assert "prompt_ids = prompt_inputs[\"input_ids\"].repeat(2, 1)" in src  # completion i and i+B share prompt i


def test_online_dpo_runs_one_step_with_pairwise_judge(judge, seed_model_dir, tmp_path, problems):
    """One real OnlineDPO step: the adapter sees the 2*B layout, and the trainer's own chosen/rejected split agrees
    with the judge's pairs (objective/scores_margin == 1: every trainer pair holds exactly one 1 and one 0)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    calls: list[tuple[list, list]] = []

    class Recording(PairwiseRewardFunc):
        def __call__(self, prompts, completions, completion_ids=None, **kwargs):
            calls.append((list(prompts), list(completions)))
            return super().__call__(prompts, completions, completion_ids, **kwargs)

    fn = Recording(judge)
    ds = Dataset.from_list([{"prompt": miniarith_prompt(p)} for p in problems[:4]])
    args = OnlineDPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, max_new_tokens=8,
                           max_length=128, learning_rate=1e-3, logging_steps=1, use_cpu=True, bf16=False, fp16=False,
                           report_to="none", save_strategy="no", dataloader_num_workers=0,
                           gradient_checkpointing=False, disable_tqdm=True)
    trainer = OnlineDPOTrainer(model=str(seed_model_dir), reward_funcs=fn, args=args, train_dataset=ds,
                               processing_class=AutoTokenizer.from_pretrained(seed_model_dir))
    trainer.train()
    assert len(calls) == 1
    prompts, completions = calls[0]
    assert len(prompts) == len(completions) == 8
    assert prompts[:4] == prompts[4:]
    assert all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)
    assert fn.stats["pairs"] == 4
    log = trainer.state.log_history[0]
    print(f"\nOnlineDPO step: stats {fn.stats}, scores_margin {log['objective/scores_margin']}, loss {log['loss']}")
    decided = 4 - fn.stats["ties"] - fn.stats["invalid_pairs"]
    assert log["objective/scores_margin"] == pytest.approx(decided / 4)
    assert log["objective/scores"] == pytest.approx(0.5)


def test_grpo_trains_with_judge_reward_funcs(judge, short_judge, seed_model_dir, tmp_path, problems):
    """Real TRL GRPO, 3 steps, with a sync and an async judge reward function: parameters change, the rewards and
    the judge's invalid rate are logged, and None rewards (three-step prompts for the short judge) are accepted."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(seed_model_dir, dtype=torch.float32)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    sync_fn = judge.as_reward_func(name="rm")
    async_fn = as_reward_func(short_judge, async_=True, name="rm_short_async", metric_prefix="judge_short")
    ds = Dataset.from_list([{"prompt": miniarith_prompt(p), "answer": p.answer} for p in problems])
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, learning_rate=1e-3, logging_steps=1, use_cpu=True, bf16=False,
                      fp16=False, report_to="none", save_strategy="no", dataloader_num_workers=0, seed=0,
                      gradient_checkpointing=False, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[sync_fn, async_fn], args=args, train_dataset=ds,
                          processing_class=AutoTokenizer.from_pretrained(seed_model_dir))
    trainer.train()
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert changed, "GRPO with the judge reward left every parameter unchanged"
    logs = [h for h in trainer.state.log_history if "rewards/rm/mean" in h]
    print(f"\nGRPO: {len(changed)}/{len(before)} parameters changed; per step (rm mean, short-judge invalid rate): "
          f"{[(round(h['rewards/rm/mean'], 3), h['judge_short/invalid_rate']) for h in logs]}")
    assert len(logs) == 3
    assert all(math.isfinite(h["rewards/rm/mean"]) for h in logs)
    assert all("rewards/rm_short_async/mean" in h for h in logs)
    assert all(0.0 <= h["judge/invalid_rate"] <= 1.0 for h in logs)
    rates = [h["judge_short/invalid_rate"] for h in logs]
    assert all(r in (0.0, 1.0) for r in rates)  # one prompt x 4 generations per step: all short or all long
    assert sync_fn.stats["items"] == 12 and async_fn.stats["items"] == 12
    assert async_fn.stats["invalid"] == round(4 * sum(rates))
