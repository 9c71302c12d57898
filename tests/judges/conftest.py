"""Fixtures for the judge tests: the Judge conformance suite as ``judge_conformance``, the sandbox seed model,
and a module-scoped vLLM OpenAI-compatible server serving it on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/sdk/conformance.py is also importable as "conformance": register ours under its own name.
_spec = importlib.util.spec_from_file_location("judge_conformance", Path(__file__).with_name("conformance.py"))
assert _spec is not None and _spec.loader is not None
judge_conformance = importlib.util.module_from_spec(_spec)
sys.modules["judge_conformance"] = judge_conformance
_spec.loader.exec_module(judge_conformance)

SEED_SERVED_NAME = "sandbox-seed"


@pytest.fixture(scope="session")
def seed_model_dir() -> Path:
    """The cached sandbox seed model (built on first use, a few CPU minutes; cached afterwards)."""
    from loopwright.trainers.sandbox.seed import ensure_seed_model

    return ensure_seed_model(progress=False)


@pytest.fixture(scope="module")
def seed_vllm_server(seed_model_dir, tmp_path_factory) -> Iterator:
    """``VLLMServer`` on loopback serving the seed model as ``"sandbox-seed"`` (max_model_len 512, 64 MiB KV)."""
    pytest.importorskip("vllm")
    from loopwright.sdk.server import VLLMServer

    log = tmp_path_factory.mktemp("judge_vllm_server") / "server.log"
    with VLLMServer(seed_model_dir, served_model_name=SEED_SERVED_NAME, max_model_len=512, max_num_seqs=16,
                    log_path=log) as server:
        yield server
