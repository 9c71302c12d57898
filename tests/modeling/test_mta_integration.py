"""MTA with the rest of the stack: TRL SFTTrainer trains the MTA parameters; TransformersGenerator generates.

Tiny MTA model (the `tiny_model_dir` fixture's tokenizer, copied), built in-process; no vLLM in this module.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from loopwright.modeling.mta import MTAConfig, MTAForCausalLM

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@pytest.fixture(scope="module")
def mta_model_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_mta")
    for name in TOKENIZER_FILES:
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, out / name)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = MTAConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                    mta_pre_kernel=[2, 3], mta_post_kernel=[2, 3], mta_pre_head_mix=True, mta_group_norm=True,
                    mta_gating=True)
    torch.manual_seed(0)
    MTAForCausalLM(cfg).save_pretrained(out)
    return out


def test_trl_sft_trainer_updates_the_mta_parameters(mta_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(mta_model_dir, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()
              if ".self_attn." in n and "_proj." not in n}
    assert len(before) == 2 * 6  # per layer: pre/post kernel, pre mix, norm, gate weight + bias
    rows = [{"messages": [{"role": "user", "content": f"What is {a}+{a}?"},
                          {"role": "assistant", "content": f"{a}+{a}={2 * a} #### {2 * a}"}]} for a in range(8)]
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4,
                     learning_rate=5e-2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                     bf16=False, fp16=False, dataloader_num_workers=0, seed=0, disable_tqdm=True, max_length=64)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(mta_model_dir))
    trainer.train()
    assert any("loss" in entry for entry in trainer.state.log_history)
    params = dict(trainer.model.named_parameters())
    unchanged = [n for n, p in before.items() if torch.equal(p, params[n].detach())]
    assert not unchanged, f"MTA parameters not updated by SFT: {unchanged}"


def test_transformers_generator_generates_with_an_mta_model(mta_model_dir):
    from transformers import AutoModelForCausalLM

    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.types import SamplingParams

    gen = TransformersGenerator(mta_model_dir, batch_size=4)
    assert isinstance(gen.model, MTAForCausalLM)
    prompts = ["Tom has 12 pens.", [{"role": "user", "content": "How many sheep are left?"}], "Hello"]
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=0)
    batched = gen.generate(prompts, params)
    assert [len(c) for c in batched] == [1, 1, 1]
    assert all(0 < len(c[0].token_ids) <= 6 for c in batched)
    # batching with left padding gives the same greedy tokens as one prompt at a time
    alone = [gen.generate([p], params)[0][0].token_ids for p in prompts]
    assert [c[0].token_ids for c in batched] == alone
    # and the score of a continuation equals the full forward's log-probability
    model = AutoModelForCausalLM.from_pretrained(mta_model_dir).eval()  # inference mode, safe
    prompt_ids = gen.tokenizer("Tom has", add_special_tokens=False)["input_ids"]
    full = gen.tokenizer("Tom has 12 pens", add_special_tokens=False)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([full])).logits[0, :-1], -1)
    expected = sum(logp[t - 1, full[t]].item() for t in range(len(prompt_ids), len(full)))
    assert gen.score("Tom has", " 12 pens") == pytest.approx(expected, abs=1e-3)
    gen.close()
