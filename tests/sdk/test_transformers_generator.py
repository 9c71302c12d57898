"""TransformersGenerator on the tiny random Llama: conformance, equality with HF generate, lengths, scores."""

from __future__ import annotations

import pytest
from conformance import CONFORMANCE_CHECKS, PROMPTS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from loopwright.sdk.errors import PromptTooLongError  # noqa: E402
from loopwright.sdk.generators.transformers import TransformersGenerator, _resolve_device  # noqa: E402
from loopwright.sdk.types import SamplingParams  # noqa: E402

MIXED = [
    "Tom has 12 pens.",
    "Hi",
    "A farmer had 45 sheep and sold 18 of them. How many sheep are left? Think step by step.",
    [{"role": "user", "content": "Each box holds 6 apples. How many apples are in 9 boxes?"}],
    "The quick brown fox jumps over the lazy dog.",
    "12+7=",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}],
    "How many",
]


@pytest.fixture(scope="module")
def gen(tiny_model_dir) -> TransformersGenerator:
    torch.manual_seed(0)
    return TransformersGenerator(tiny_model_dir, batch_size=4)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(gen, check):
    check(gen)


def _hf_greedy(gen: TransformersGenerator, ids: list[int], max_new_tokens: int) -> list[int]:
    with torch.inference_mode():
        out = gen.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, len(ids):].tolist()


def test_batched_greedy_equals_per_prompt_hf_generate(gen):
    """spec/performance.md §6.2 item 5: identical greedy tokens (hard equality, fp32)."""
    out = gen.generate(MIXED, SamplingParams(max_tokens=24))
    for prompt, ids, row in zip(MIXED, gen.encode(MIXED), out, strict=True):
        assert row[0].token_ids == _hf_greedy(gen, ids, 24), prompt
        assert row[0].usage.prompt_tokens == len(ids)


def test_chat_prompt_uses_the_tokenizer_template(gen):
    chat = MIXED[3]
    rendered = gen.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert gen.render(chat) == rendered and rendered.endswith("<|assistant|>")
    assert gen.encode([chat])[0] == gen.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert gen.template_hash() is not None and gen.template_hash() == gen.template_hash()


def test_logprobs_match_a_manual_forward_pass(gen):
    prompt = PROMPTS[0]
    c = gen.generate([prompt], SamplingParams(max_tokens=10, logprobs=3))[0][0]
    ids = gen.encode([prompt])[0]
    with torch.inference_mode():
        logits = gen.model(torch.tensor([ids + c.token_ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    manual = [logp[len(ids) - 1 + t, tok].item() for t, tok in enumerate(c.token_ids)]
    assert c.logprobs == pytest.approx(manual, abs=1e-4)
    for t, top in enumerate(c.top_logprobs):
        best = logp[len(ids) - 1 + t].topk(3).values.tolist()
        assert sorted(top.values(), reverse=True) == pytest.approx(best[: len(top)], abs=1e-4)


def test_prompt_too_long_names_both_lengths(gen):
    long_prompt = " ".join(["Tom has 12 pens and buys 7 more."] * 40)
    n = len(gen.encode([long_prompt])[0])
    assert n + 8 > gen.max_context == 256
    with pytest.raises(PromptTooLongError) as err:
        gen.generate(["short", long_prompt], SamplingParams(max_tokens=8))
    msg = str(err.value)
    assert str(n) in msg and "256" in msg and "prompt 1" in msg and "truncate_prompt" in msg


def test_truncate_prompt_keeps_the_last_tokens(gen):
    long_prompt = " ".join(["A farmer had 45 sheep and sold 18."] * 40)
    ids = gen.encode([long_prompt])[0]
    c = gen.generate([long_prompt], SamplingParams(max_tokens=8, truncate_prompt=True))[0][0]
    keep = 256 - 8
    assert c.usage.prompt_tokens == keep
    assert c.token_ids == _hf_greedy(gen, ids[-keep:], 8)


def test_score_equals_manual_forward_sum(gen):
    prompt, cont = PROMPTS[0], " He has 19 pens."
    p_ids = gen.encode([prompt])[0]
    c_ids = gen.tokenizer(cont, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = gen.model(torch.tensor([p_ids + c_ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    manual = sum(logp[len(p_ids) - 1 + t, tok].item() for t, tok in enumerate(c_ids))
    assert gen.score(prompt, cont) == pytest.approx(manual, abs=1e-4)
    # batched, padded, mixed chat / string prompts: same numbers as one at a time
    prompts = [prompt, MIXED[3], "Hi", prompt]
    conts = [cont, " 54 apples", " there, how are you doing today?", ""]
    many = gen.score_many(prompts, conts)
    assert many == pytest.approx([gen.score(p, c) for p, c in zip(prompts, conts, strict=True)], abs=1e-4)
    assert many[3] == 0.0


def test_seeded_samples_do_not_depend_on_the_batch(gen):
    params = SamplingParams(n=2, temperature=0.8, top_k=50, seed=11, max_tokens=10)
    alone = gen.generate([MIXED[0]], params)[0]
    crowd = gen.generate(MIXED[:5], params)[0]
    assert [c.token_ids for c in alone] == [c.token_ids for c in crowd]
    assert alone[0].token_ids != alone[1].token_ids, "two samples of one prompt differ"
    other = gen.generate([MIXED[0]], params.model_copy(update={"seed": 12}))[0]
    assert [c.token_ids for c in other] != [c.token_ids for c in alone]


def test_top_k_one_sampling_is_greedy(gen):
    sampled = gen.generate(MIXED[:3], SamplingParams(temperature=1.0, top_k=1, seed=0, max_tokens=12))
    greedy = gen.generate(MIXED[:3], SamplingParams(max_tokens=12))
    assert [r[0].token_ids for r in sampled] == [r[0].token_ids for r in greedy]


def test_stop_string_tokens_are_dropped(gen):
    base = gen.generate(MIXED, SamplingParams(max_tokens=20))
    for prompt, row in zip(MIXED, base, strict=True):
        c0 = row[0]
        # a stop string made of the decoded text of whole tokens 5..6
        stop = gen.tokenizer.decode(c0.token_ids[5:7], skip_special_tokens=True)
        if len(c0.token_ids) < 8 or not stop.strip() or "\ufffd" in stop:
            continue
        c = gen.generate([prompt], SamplingParams(max_tokens=20, stop=[stop]))[0][0]
        cut = c0.text.find(stop)
        assert c.text == c0.text[:cut] and c.finish_reason == "stop" and c.stop_reason == stop
        assert c.token_ids == c0.token_ids[: len(c.token_ids)]
        assert gen.tokenizer.decode(c.token_ids, skip_special_tokens=True) == c.text
        assert c.usage.completion_tokens == len(c.token_ids) <= 5
        return
    pytest.fail("no prompt gave a usable stop string")


def test_loaded_custom_model_object_is_accepted(gen, tiny_model_dir):
    class MyCausalLM(transformers.LlamaForCausalLM):
        """Stands in for a custom modeling/ architecture: a different class, same weights."""

    model = MyCausalLM.from_pretrained(tiny_model_dir)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)
    custom = TransformersGenerator(model, tok, batch_size=3)
    assert custom.device == "cpu" and custom.max_context == 256
    params = SamplingParams(max_tokens=12)
    assert [r[0].token_ids for r in custom.generate(MIXED, params)] == \
        [r[0].token_ids for r in gen.generate(MIXED, params)]
    assert custom.score(PROMPTS[1], " jumps") == pytest.approx(gen.score(PROMPTS[1], " jumps"), abs=1e-5)


def test_misuse_raises_with_a_fix(gen, tiny_model_dir):
    model = gen.model
    with pytest.raises(TypeError, match="tokenizer"):
        TransformersGenerator(model)
    with pytest.raises(TypeError, match="path"):
        TransformersGenerator(42)
    with pytest.raises(ValueError, match="dtype"):
        TransformersGenerator(tiny_model_dir, dtype="float8")
    with pytest.raises(ValueError, match="batch_size"):
        TransformersGenerator(model, gen.tokenizer, batch_size=0)
    with pytest.raises(ValueError, match="continuations"):
        gen.score_many(["a", "b"], ["c"])


def test_auto_device_never_assumes_cuda():
    auto = _resolve_device("auto")
    assert auto == "cuda" if torch.cuda.is_available() else auto in ("cpu", "mps")
    assert _resolve_device("cpu") == "cpu"
