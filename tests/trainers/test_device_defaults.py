"""trainers/result.py device defaults: CPU + fp32 only without CUDA, GPU + bf16 (or fp16) with it; the manifest
records the device, parameter dtype and mixed precision a run actually used.

CUDA is faked by monkeypatching ``torch.cuda``; the real runs are 1-step SFT runs of the cached sandbox seed model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from loopwright.trainers import result
from loopwright.trainers.result import CPU_SAFE_DEFAULTS, TRL_DEFAULTS, device_defaults
from loopwright.trainers.sft import SFTSettings, sft_train

_ROWS = [(f"What is {i} plus 3?", f"{i}+3={i + 3} #### {i + 3}") for i in range(4)]
_ONE_STEP = SFTSettings(max_steps=1, batch_size=4, max_length=64)


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, *, bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_without_cuda_the_defaults_are_cpu_and_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d = device_defaults()
    assert d == CPU_SAFE_DEFAULTS and d["use_cpu"] is True and d["bf16"] is False and d["fp16"] is False
    d["use_cpu"] = "mutated"  # a fresh dict each call: callers cannot corrupt the module constant
    assert CPU_SAFE_DEFAULTS["use_cpu"] is True


@pytest.mark.parametrize(("bf16_ok", "bf16", "fp16"), [(True, True, False), (False, False, True)])
def test_with_cuda_the_defaults_use_the_gpu_and_mixed_precision(monkeypatch, bf16_ok, bf16, fp16):
    _fake_cuda(monkeypatch, bf16=bf16_ok)
    d = device_defaults()
    assert d["use_cpu"] is False and d["bf16"] is bf16 and d["fp16"] is fp16
    assert {k: d[k] for k in TRL_DEFAULTS} == TRL_DEFAULTS  # report_to none, save_strategy no, ... kept
    assert TRL_DEFAULTS["report_to"] == "none" and TRL_DEFAULTS["save_strategy"] == "no"


def test_real_cpu_run_keeps_fp32_and_records_device_and_dtype(seed_dir, tmp_path):
    res = sft_train(seed_dir, _ROWS, tmp_path / "m", _ONE_STEP)
    m = res.manifest
    assert m["device"] == "cpu" and m["dtype"] == "float32" and m["mixed_precision"] == "no"
    assert set(m["param_dtypes"]) == {"float32"} and m["param_dtypes"]["float32"] > 0
    assert m["trl_config"]["use_cpu"] is True and m["trl_config"]["bf16"] is False and m["lora"] is None
    # trl_config still wins over the device defaults, and the manifest reports what was really used
    res = sft_train(seed_dir, _ROWS, tmp_path / "bf16", _ONE_STEP, trl_config={"bf16": True})
    assert res.manifest["mixed_precision"] == "bf16" and res.manifest["dtype"] == "float32"  # autocast, fp32 master


def test_run_trl_takes_its_defaults_from_device_defaults(seed_dir, tmp_path, monkeypatch):
    """What a CUDA machine's defaults would pass (minus mixed precision, which needs a GPU here) reaches the
    TRL config untouched: nothing re-forces ``use_cpu=True``."""
    gpu_like = {"use_cpu": False, "bf16": False, "fp16": False, **TRL_DEFAULTS, "dataloader_drop_last": True}
    monkeypatch.setattr(result, "device_defaults", lambda: dict(gpu_like))
    m = sft_train(seed_dir, _ROWS, tmp_path / "m", _ONE_STEP).manifest
    assert m["trl_config"]["use_cpu"] is False and m["trl_config"]["dataloader_drop_last"] is True
    assert m["device"] == "cpu"  # no CUDA here, so transformers itself falls back to the CPU
