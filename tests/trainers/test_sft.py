"""trainers/sft.py: a few TRL SFT steps on CoA chains change the weights and give a loadable, cached model.

Also checks issue 3 item 3's "output as TRL SFT data": rows from ``agents.coa.convert.to_sft_row`` (system + user +
assistant chain, converted from GSM8K-style solutions) train through the same helper. Fast: a ~50k-parameter
sandbox model in its own ``$LOOPWRIGHT_HOME``, 5 steps on 16 rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from loopwright.agents.coa.convert import convert_record, to_sft_row
from loopwright.sdk.generators.transformers import TransformersGenerator
from loopwright.sdk.types import SamplingParams
from loopwright.trainers.sandbox.model import TinyLlamaConfig
from loopwright.trainers.sandbox.seed import (
    SandboxConfig,
    ensure_base_model,
    miniarith_prompt,
    train_problems,
)
from loopwright.trainers.sft import SFTSettings, ensure_sft_model, to_messages

_SMALL = SandboxConfig(
    model=TinyLlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                          num_key_value_heads=1, max_position_embeddings=256, vocab_size=300),
    n_train=16, n_tokenizer_texts=50, batch_size=8, max_steps=2, max_length=192,
)
_SETTINGS = SFTSettings(max_steps=5, batch_size=8, max_length=192, learning_rate=1e-2)


@pytest.fixture
def small_base(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(tmp_path / "home"))
    return ensure_base_model(_SMALL)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_to_messages_accepts_pairs_dicts_and_messages_and_rejects_bad_rows():
    assert to_messages(("q?", "a.")) == {"messages": [{"role": "user", "content": "q?"},
                                                      {"role": "assistant", "content": "a."}]}
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    assert to_messages({"prompt": chat, "target": "t"})["messages"][-1] == {"role": "assistant", "content": "t"}
    with pytest.raises(ValueError, match="assistant"):
        to_messages({"messages": chat})
    with pytest.raises(ValueError, match="target"):
        to_messages({"prompt": "q"})
    with pytest.raises(ValueError, match="non-empty"):
        to_messages(("q", ""))


def test_five_sft_steps_on_coa_chains_change_weights_and_cache(small_base):
    rows = [(miniarith_prompt(p), p.coa_chain) for p in train_problems(_SMALL)]
    assert len(rows) == 16
    out = ensure_sft_model("coa-test", small_base, rows, _SETTINGS)
    assert out.parent == small_base.parent / "sft" and out.name.startswith("coa-test-")
    manifest = json.loads((out / "loopwright_manifest.json").read_text())
    assert manifest["n_rows"] == 16 and manifest["settings"]["max_steps"] == 5
    assert len(manifest["loss_history"]) == 5 and manifest["loss_history"][-1] < manifest["loss_history"][0]
    before, after = _weights(small_base), _weights(out)
    assert before.keys() == after.keys()
    assert sum(not torch.equal(before[k], after[k]) for k in before) >= len(before) // 2
    # loadable by the SDK's generator; greedy decoding returns tokens
    gen = TransformersGenerator(out, batch_size=4)
    comp = gen.generate([rows[0][0]], SamplingParams(temperature=0.0, max_tokens=8))[0][0]
    assert comp.usage.completion_tokens >= 1
    gen.close()
    # second call is a cache hit (same folder, no retraining: the manifest is untouched)
    mtime = (out / "loopwright_manifest.json").stat().st_mtime_ns
    assert ensure_sft_model("coa-test", small_base, rows, _SETTINGS) == out
    assert (out / "loopwright_manifest.json").stat().st_mtime_ns == mtime
    # other targets -> other cache entry
    other = ensure_sft_model("coa-test", small_base, [(q, t + " ") for q, t in rows],
                             _SETTINGS.model_copy(update={"max_steps": 1}))
    assert other != out


def test_converter_output_is_trl_sft_data(small_base, tmp_path):
    gsm = [{"question": f"Sam has {a} pens and buys {b} more. How many pens?",
            "answer": f"He has {a}+{b}=<<{a}+{b}={a + b}>>{a + b} pens.\n#### {a + b}"} for a, b in
           [(3, 4), (10, 7), (2, 9), (5, 5), (8, 1), (6, 3), (12, 4), (7, 7)]]
    records = [convert_record(r) for r in gsm]
    assert all(r["verified"] for r in records), [r.get("reason") for r in records]
    rows = [to_sft_row(r) for r in records]
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    out = ensure_sft_model("convert-test", small_base, rows,
                           _SETTINGS.model_copy(update={"max_steps": 2, "max_length": 256}), home=tmp_path / "h")
    assert out.parent == tmp_path / "h" / "sft"
    assert json.loads((out / "loopwright_manifest.json").read_text())["n_rows"] == len(rows)
