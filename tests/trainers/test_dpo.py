"""trainers/dpo.py: a few real TRL DPO steps on the tiny model change its weights and write a manifest.

Also the spec's DPO invariant (spec/loops.md §0.2): the first step's loss is log 2 when policy == reference;
the STE-release NLL term (``nll_alpha``) reaches TRL as ``loss_type=["sigmoid", "sft"]``; ``trl_config`` overrides
reach ``DPOConfig`` untouched; misuse raises naming the bad value.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from loopwright.sdk.artifacts import RunDir
from loopwright.sdk.errors import ConfigError
from loopwright.trainers.dpo import DPOSettings, dpo_train, to_preference_row
from loopwright.trainers.result import MANIFEST, read_train_manifest

_SETTINGS = DPOSettings(max_steps=3, batch_size=4, max_length=64, learning_rate=1e-2)


def _pairs(n: int = 8) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Tom has {i} pens and buys 7. How many?"}],
             "chosen": [{"role": "assistant", "content": f"{i}+7={i + 7} #### {i + 7}"}],
             "rejected": [{"role": "assistant", "content": f"{i}+7={i + 8} #### {i + 8}"}],
             "provenance": {"i": i}} for i in range(n)]


def _weights(path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_to_preference_row_keeps_the_three_columns_and_rejects_bad_rows():
    row = to_preference_row(_pairs(1)[0])
    assert sorted(row) == ["chosen", "prompt", "rejected"]
    assert to_preference_row({"prompt": "q", "chosen": "a", "rejected": "b"}) == {"prompt": "q", "chosen": "a",
                                                                                  "rejected": "b"}
    with pytest.raises(ValueError, match="rejected"):
        to_preference_row({"prompt": "q", "chosen": "a"})
    with pytest.raises(ValueError, match="mix"):
        to_preference_row({"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"})


def test_dpo_steps_change_weights_write_manifest_and_start_at_log2(tiny_model_dir, tmp_path):
    res = dpo_train(tiny_model_dir, _pairs(), tmp_path / "dpo", _SETTINGS, trl_config={"logging_steps": 1})
    assert res.model_dir == tmp_path / "dpo" and res.manifest_path == tmp_path / "dpo" / MANIFEST
    manifest = read_train_manifest(res.model_dir)
    assert manifest["kind"] == "dpo" and manifest["n_rows"] == 8 and len(manifest["data_fingerprint"]) >= 16
    assert manifest["settings"]["beta"] == 0.1 and manifest["trl_config"]["beta"] == 0.1
    # CPU-safe defaults, and the override reached DPOConfig (one logged loss per step)
    cfg = manifest["trl_config"]
    assert cfg["use_cpu"] is True and cfg["bf16"] is False and cfg["report_to"] == "none"
    assert cfg["save_strategy"] == "no" and cfg["logging_steps"] == 1
    assert manifest["trl_config_overrides"] == {"logging_steps": 1}
    assert len(res.metrics["loss_history"]) == 3 and res.metrics["steps"] == 3
    assert "torch" in manifest["versions"] and "trl" in manifest["versions"]
    assert manifest["train_seconds"] >= 0 and "rewards/accuracies" in res.metrics
    # policy == reference at step 0: sigmoid loss = -log sigma(0) = log 2
    assert res.metrics["loss_history"][0] == pytest.approx(math.log(2), abs=1e-4)
    before, after = _weights(tiny_model_dir), _weights(res.model_dir)
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) // 2
    assert not list(tmp_path.glob(".*")), "temporary folders left behind"


def test_dpo_with_nll_alpha_adds_the_sft_term_and_runs_in_a_run_dir(tiny_model_dir, tmp_path):
    run = RunDir(tmp_path / "run", config={"t": 1})
    res = dpo_train(tiny_model_dir, _pairs(4), "models/judge", _SETTINGS.model_copy(update={"nll_alpha": 1.5,
                                                                                          "max_steps": 2}),
                    trl_config={"logging_steps": 1}, run=run)
    assert res.model_dir == run.path / "models" / "judge"
    cfg = res.manifest["trl_config"]
    assert cfg["loss_type"] == ["sigmoid", "sft"] and cfg["loss_weights"] == [1.0, 1.5]
    # the NLL term makes the first loss log 2 + 1.5 * NLL(chosen) > log 2
    assert res.metrics["loss_history"][0] > math.log(2) + 0.5
    meta = json.loads(run.manifest_path.read_text())["meta"]
    assert meta["train:models/judge"]["kind"] == "dpo"
    # a retrain replaces a folder written by a trainer
    again = dpo_train(tiny_model_dir, _pairs(4), "models/judge", _SETTINGS.model_copy(update={"max_steps": 1}),
                      run=run)
    assert again.manifest["settings"]["max_steps"] == 1


def test_dpo_misuse_raises_naming_the_problem(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="not_a_field"):
        dpo_train(tiny_model_dir, _pairs(2), tmp_path / "x", _SETTINGS, trl_config={"not_a_field": 1})
    with pytest.raises(ConfigError, match="nll_alpha"):
        dpo_train(tiny_model_dir, _pairs(2), tmp_path / "x", _SETTINGS.model_copy(update={"nll_alpha": 1.0}),
                  trl_config={"loss_type": ["ipo"]})
    with pytest.raises(ValueError, match="at least one"):
        dpo_train(tiny_model_dir, [], tmp_path / "x", _SETTINGS)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        dpo_train(tiny_model_dir, _pairs(2), busy, _SETTINGS)
    assert (busy / "notes.txt").read_text() == "mine"
