"""The Generator interface: ``generate(prompts, params) -> list[list[Completion]]``.

One small ABC for every text-generation backend (transformers, vLLM, OpenAI-compatible servers, the scripted
test double). Result shape: one inner list per prompt, each of length ``params.n``. Backends implement either
``generate`` (in-process engines) or ``agenerate`` (I/O-bound clients); the other direction is provided.
``score(prompt, continuation)`` (sum of log p(continuation | prompt)) is an optional capability
(``supports_score``) used by PathFinder and DPO references.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from abc import ABC
from collections.abc import Sequence
from typing import Any, ClassVar

from .types import Completion, Prompt, SamplingParams, stable_hash


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, also when an event loop is already running
    (Jupyter, LangGraph async nodes): then it runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Generator(ABC):  # noqa: B024 - implement generate or agenerate, either one
    """Base class of text-generation backends.

    Subclasses set ``backend`` (a short name used in cache keys) and ``model_id``/``revision``, and override
    at least one of :meth:`generate` / :meth:`agenerate`.
    """

    backend: ClassVar[str] = "abstract"
    supports_score: ClassVar[bool] = False
    supports_logprobs: ClassVar[bool] = True

    model_id: str = "unknown"
    revision: str | None = None

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        if type(self).agenerate is Generator.agenerate:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor agenerate")
        return run_sync(self.agenerate(prompts, params))

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        if type(self).generate is Generator.generate:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor agenerate")
        return await asyncio.to_thread(self.generate, prompts, params)

    def score(self, prompt: Prompt, continuation: str) -> float:
        """Sum of token log-probabilities of ``continuation`` given ``prompt``."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot score continuations (supports_score=False); "
            "use TransformersGenerator or VLLMGenerator"
        )

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Batched :meth:`score`; backends override it with a single batched forward pass."""
        return [self.score(p, c) for p, c in zip(prompts, continuations, strict=True)]

    def template_hash(self) -> str | None:
        """Hash of the chat template applied to message prompts (part of the cache key)."""
        return None

    def cache_identity(self) -> dict[str, Any]:
        """What identifies this generator's outputs: backend, model id + revision, chat template hash."""
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "revision": self.revision,
            "template_hash": self.template_hash(),
        }

    def fingerprint(self) -> str:
        return stable_hash(self.cache_identity())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engines, servers or clients held by this generator."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"
