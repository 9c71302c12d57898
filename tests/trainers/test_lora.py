"""trainers/lora.py: LoRA through the SFT, DPO and reward wrappers on the cached sandbox seed model.

Adapter folders (``merge=False``) hold only trained LoRA weights (B starts at zero, so B != 0 proves training) and
leave the base untouched; merged folders (``merge=True``, the default) load as plain transformers models that differ
from the seed only in the targeted linear layers, and generate. Rank-0's merge-from-disk path
(:func:`merge_adapter_folder`) gives the same weights as the in-memory merge. Bad settings raise naming the field.
A few rows, 3 steps at lr 1e-2 each.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from loopwright.sdk.generators.transformers import TransformersGenerator
from loopwright.sdk.types import SamplingParams
from loopwright.trainers.dpo import DPOSettings, dpo_train
from loopwright.trainers.lora import LoRASettings, lora_config, merge_adapter_folder
from loopwright.trainers.reward import RewardSettings, miniarith_preference_pairs, reward_train
from loopwright.trainers.sft import SFTSettings, sft_train

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_SFT_ROWS = [(f"What is {i} plus 3?", f"{i}+3={i + 3} #### {i + 3}") for i in range(8)]
_PAIRS = [{"prompt": [{"role": "user", "content": f"Tom has {i} pens and buys 7. How many?"}],
           "chosen": [{"role": "assistant", "content": f"{i}+7={i + 7} #### {i + 7}"}],
           "rejected": [{"role": "assistant", "content": f"{i}+7={i + 8} #### {i + 8}"}]} for i in range(8)]


def _sft(merge: bool) -> SFTSettings:
    return SFTSettings(max_steps=3, batch_size=4, max_length=64, learning_rate=1e-2, lora=LoRASettings(merge=merge))


def _weights(path: Path, cls: type = AutoModelForCausalLM, **kw) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cls.from_pretrained(str(path), dtype=torch.float32, **kw)
            .state_dict().items()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _targeted(key: str) -> bool:
    return any(f".{t}." in key for t in TARGETS)


@pytest.fixture(scope="module")
def seed_dir() -> Path:
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


@pytest.fixture(scope="module")
def sft_runs(seed_dir, tmp_path_factory) -> dict[str, Path]:
    """The same LoRA SFT run saved both ways (same seed, rows and settings but ``merge``)."""
    tmp = tmp_path_factory.mktemp("lora_sft")
    before = _sha(seed_dir / "model.safetensors")
    out = {m: sft_train(seed_dir, _SFT_ROWS, tmp / m, _sft(m == "merged")).model_dir for m in ("adapter", "merged")}
    assert _sha(seed_dir / "model.safetensors") == before  # the base on disk is never written
    return out


def _check_adapter_folder(folder: Path, base: Path) -> dict[str, torch.Tensor]:
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "loopwright_manifest.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names  # no copy of the base
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    adapter = load_file(folder / "adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)  # only adapter weights were saved
    b = [k for k in adapter if "lora_B" in k]
    assert {t for t in TARGETS if any(f".{t}." in k for k in b)} == set(TARGETS)  # all-linear: every projection
    assert all(adapter[k].abs().max() > 0 for k in b)  # LoRA B starts at zero: every one of them trained
    return adapter


def test_sft_adapter_folder_holds_trained_adapters_and_leaves_the_base_untouched(sft_runs, seed_dir):
    folder = sft_runs["adapter"]
    _check_adapter_folder(folder, seed_dir)
    m = json.loads((folder / "loopwright_manifest.json").read_text())
    assert m["lora"]["format"] == "adapter" and m["lora"]["base"] == str(seed_dir)
    assert m["lora"]["target_modules"] == sorted(TARGETS) and 0 < m["lora"]["trainable_params"] < m["lora"][
        "all_params"]
    assert m["settings"]["lora"] == {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": "all-linear",
                                     "merge": False}
    from peft import PeftModel

    seed = AutoModelForCausalLM.from_pretrained(str(seed_dir), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        seed_logits = seed(ids).logits
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(seed_dir), dtype=torch.float32),
                                          str(folder)).eval()
        with model.disable_adapter():
            assert torch.equal(model(ids).logits, seed_logits)  # the base under the adapter is the seed
        assert not torch.allclose(model(ids).logits, seed_logits, atol=1e-4)  # the adapter changes the output
    # transformers loads an adapter folder through peft (base named in adapter_config.json)
    auto = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.allclose(auto(ids).logits, model(ids).logits, atol=1e-5)


def test_sft_merged_folder_is_a_plain_model_changed_only_in_targeted_layers_and_generates(sft_runs, seed_dir):
    folder = sft_runs["merged"]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors"} <= names and "adapter_config.json" not in names
    m = json.loads((folder / "loopwright_manifest.json").read_text())
    assert m["lora"]["format"] == "merged" and m["lora"]["base"] == str(seed_dir)
    after, before = _weights(folder), _weights(seed_dir)
    assert set(after) == set(before) and not any("lora" in k for k in after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if _targeted(k)}  # every targeted linear moved, nothing else did
    assert any("embed_tokens" in k for k in before) and any("norm" in k for k in before) and "lm_head.weight" in before
    gen = TransformersGenerator(folder, batch_size=2)
    try:
        comp = gen.generate([_SFT_ROWS[0][0]], SamplingParams(temperature=0.0, max_tokens=8))[0][0]
    finally:
        gen.close()
    assert comp.usage.completion_tokens >= 1 and isinstance(comp.text, str)


def test_merging_the_adapter_from_disk_equals_the_in_memory_merge(sft_runs, seed_dir, tmp_path):
    """Rank 0's path in a multi-process run: base + saved adapter merged from disk."""
    out = merge_adapter_folder(sft_runs["adapter"], seed_dir, tmp_path / "m", "CAUSAL_LM")
    disk, memory = _weights(out), _weights(sft_runs["merged"])
    assert set(disk) == set(memory)
    assert max((disk[k] - memory[k]).abs().max().item() for k in disk) < 1e-5


def test_dpo_lora_uses_the_base_as_reference_and_saves_adapter_or_merged(seed_dir, tmp_path):
    s = DPOSettings(max_steps=3, batch_size=4, max_length=64, learning_rate=1e-2, lora=LoRASettings(merge=False))
    res = dpo_train(seed_dir, _PAIRS, tmp_path / "adapter", s, trl_config={"logging_steps": 1})
    # B = 0 at init: policy == reference (the base with adapters disabled), so the first loss is log 2
    assert res["loss_history"][0] == pytest.approx(math.log(2), abs=1e-4)
    assert res["loss_history"][-1] < res["loss_history"][0]
    _check_adapter_folder(res.model_dir, seed_dir)
    assert res.manifest["lora"]["format"] == "adapter" and res.manifest["device"] == "cpu"
    merged = dpo_train(seed_dir, _PAIRS, tmp_path / "merged", s.model_copy(update={"lora": LoRASettings()}),
                       trl_config={"logging_steps": 1})
    assert merged.manifest["lora"]["format"] == "merged"
    assert merged["loss_history"] == pytest.approx(res["loss_history"], rel=1e-5)  # same run, saved differently
    after, before = _weights(merged.model_dir), _weights(seed_dir)
    assert {k for k in before if not torch.equal(before[k], after[k])} == {k for k in before if _targeted(k)}


def test_reward_lora_trains_adapters_and_the_head_into_a_sequence_classifier(seed_dir, tmp_path):
    s = RewardSettings(max_steps=3, batch_size=4, max_length=128, learning_rate=1e-2, lora=LoRASettings())
    res = reward_train(seed_dir, miniarith_preference_pairs(8), tmp_path / "rm", s)
    assert res.manifest["lora"]["format"] == "merged" and res.manifest["lora"]["task_type"] == "SEQ_CLS"
    assert "score" in res.manifest["lora"]["modules_to_save"]  # the new head trains in full beside the adapters
    rm = _weights(res.model_dir, AutoModelForSequenceClassification)
    assert not any("lora" in k or "modules_to_save" in k for k in rm) and rm["score.weight"].shape[0] == 1
    seed = _weights(seed_dir)
    trunk = {k: v for k, v in seed.items() if k.startswith("model.")}
    assert set(trunk) <= set(rm)
    assert {k for k in trunk if not torch.equal(trunk[k], rm[k])} == {k for k in trunk if _targeted(k)}
    assert AutoModelForSequenceClassification.from_pretrained(str(res.model_dir)).config.num_labels == 1


@pytest.mark.parametrize(("field", "value"), [("r", 0), ("alpha", 0), ("dropout", 1.0), ("target_modules", []),
                                              ("rank", 8)])
def test_bad_lora_settings_raise_naming_the_field(field, value):
    with pytest.raises(ValidationError, match=field):
        LoRASettings(**{field: value})
    for settings_cls in (SFTSettings, DPOSettings, RewardSettings):
        with pytest.raises(ValidationError, match=rf"lora\.{field}"):
            settings_cls(lora={field: value})


def test_lora_config_maps_our_names_to_peft_and_rejects_unknown_targets(seed_dir, tmp_path):
    cfg = lora_config(LoRASettings(r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")), "SEQ_CLS")
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, set(cfg.target_modules)) == (4, 8, 0.0, {"q_proj", "v_proj"})
    assert cfg.task_type == "SEQ_CLS" and cfg.bias == "none"
    with pytest.raises(ValueError, match="task_type"):
        lora_config(LoRASettings(), "TOKEN_CLS")  # type: ignore[arg-type]
    bad = SFTSettings(max_steps=1, batch_size=4, max_length=64, lora=LoRASettings(target_modules=("no_such_proj",)))
    with pytest.raises(ValueError, match="no_such_proj"):
        sft_train(seed_dir, _SFT_ROWS, tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()
