"""loopwright.kernels: Triton kernels, each beside its plain-PyTorch reference (imports only torch and triton).

- ``kernels.mta``: causal Multi-Token Attention with the pre-softmax key-query convolution and pre-softmax head
  mixing fused into flash-style attention (O(L) memory, forward + backward): ``mta_attention``,
  ``mta_attention_reference``, ``mta_attention_blockwise``.
- ``kernels.cope``: one-pass causal CoPE attention (key blocks backwards from the diagonal with a running gate
  sum): ``cope_attention``, ``cope_attention_reference``, ``cope_attention_blockwise``.
- ``kernels.moe``: top-k SwiGLU mixture-of-experts FFN (token permutation + grouped GEMM) for the BTX layer:
  ``moe_ffn``, ``moe_ffn_reference``.

Kernels run on CUDA tensors, and on CPU tensors only when ``TRITON_INTERPRET=1`` was set before ``triton`` was
first imported (tests; correctness only). The names above are importable from here (``from loopwright.kernels
import mta_attention``) and loaded on first use (PEP 562), so ``import loopwright.kernels`` stays cheap and does not
import torch or triton. Algorithms and measurements: docs/kernels.md; benchmark: tests/bench/kernels.py.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "mta_attention": ".mta",
    "mta_attention_reference": ".mta",
    "mta_attention_blockwise": ".mta",
    "cope_attention": ".cope",
    "cope_attention_reference": ".cope",
    "cope_attention_blockwise": ".cope",
    "moe_ffn": ".moe",
    "moe_ffn_reference": ".moe",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = list(_LAZY)
