"""Fixtures for the sdk tests: a real vLLM OpenAI-compatible server on 127.0.0.1 serving the tiny model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

SERVED_NAME = "sandbox"


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory) -> Iterator:
    """``VLLMServer`` on loopback serving ``tiny_model_dir`` as ``"sandbox"`` (64 MiB KV; ~20-30 s to start)."""
    pytest.importorskip("vllm")
    from loopwright.sdk.server import VLLMServer

    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    with VLLMServer(
        tiny_model_dir, served_model_name=SERVED_NAME, max_model_len=256, max_num_seqs=16, log_path=log
    ) as server:
        yield server
