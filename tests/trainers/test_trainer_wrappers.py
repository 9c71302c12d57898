"""The SFT and reward wrappers share DPO's shape: TrainResult, trl_config pass-through, manifest, RunDir record.

Real TRL runs on the session's tiny model, 2-3 steps each.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from loopwright.sdk.artifacts import RunDir
from loopwright.sdk.errors import ConfigError
from loopwright.trainers.result import TrainResult, device_defaults, read_train_manifest
from loopwright.trainers.reward import RewardSettings, miniarith_preference_pairs, reward_train
from loopwright.trainers.sft import SFTSettings, sft_train


def _rows(n: int = 8) -> list[tuple[str, str]]:
    return [(f"What is {i} plus 3?", f"{i}+3={i + 3} #### {i + 3}") for i in range(n)]


def test_sft_train_returns_trainresult_honours_trl_config_and_records_in_run(tiny_model_dir, tmp_path):
    run = RunDir(tmp_path / "run", config={"x": 1})
    res = sft_train(tiny_model_dir, _rows(), "sft-out", SFTSettings(max_steps=3, batch_size=4, max_length=64,
                                                                    learning_rate=1e-2),
                    trl_config={"logging_steps": 1, "lr_scheduler_type": "constant"}, run=run)
    assert isinstance(res, TrainResult) and res.kind == "sft" and res.model_dir == run.path / "sft-out"
    m = read_train_manifest(res.model_dir)
    assert m["trl_config"]["lr_scheduler_type"] == "constant" and m["trl_config"]["logging_steps"] == 1
    assert m["trl_config"]["assistant_only_loss"] is True
    for k, v in device_defaults().items():
        assert m["trl_config"][k] == v
    assert len(res["loss_history"]) == 3 and res["train_loss"] == res.metrics["train_loss"]
    # a constant schedule: every logged learning rate is the same
    lrs = [h["learning_rate"] for h in m["log_history"] if "learning_rate" in h]
    assert len(lrs) == 3 and len(set(lrs)) == 1
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(res.model_dir).state_dict()
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) // 2
    assert json.loads(run.manifest_path.read_text())["meta"]["train:sft-out"]["metrics"]["steps"] == 3
    with pytest.raises(ConfigError, match="bogus"):
        sft_train(tiny_model_dir, _rows(), tmp_path / "x", trl_config={"bogus": 1})


def test_reward_train_returns_trainresult_and_a_sequence_classifier(tiny_model_dir, tmp_path):
    pairs = miniarith_preference_pairs(8)
    res = reward_train(tiny_model_dir, pairs, tmp_path / "rm",
                       RewardSettings(max_steps=2, batch_size=4, max_length=128, learning_rate=1e-2),
                       trl_config={"logging_steps": 1, "center_rewards_coefficient": 0.01})
    assert res.kind == "reward" and res.manifest["trl_config"]["center_rewards_coefficient"] == 0.01
    assert len(res["loss_history"]) == 2 and res.manifest["n_rows"] == 8
    model = AutoModelForSequenceClassification.from_pretrained(res.model_dir)
    assert model.config.num_labels == 1
