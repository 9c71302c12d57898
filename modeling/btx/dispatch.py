"""Route a Mixtral model's MoE blocks through ``loopwright.kernels.moe.moe_ffn`` on CUDA.

:func:`use_moe_kernel` replaces the ``forward`` of every transformers ``MixtralSparseMoeBlock`` of a model
(an instance attribute; the class is untouched) with one that calls the router as before (so
``output_router_logits`` and the aux loss still see the raw logits), then:

- ``mode="auto"``: the Triton grouped-GEMM kernel when the hidden states are on CUDA, transformers' own
  per-expert loop otherwise (the reference);
- ``mode="kernel"``: always the kernel (on CPU only under ``TRITON_INTERPRET=1``: tests);
- ``mode="reference"``: always transformers' loop; ``mode="off"`` removes the override.

Routing is identical in both paths (softmax over all logits in fp32, top-k, renormalise), and the
kernel's expert weights are views of transformers' fused ``gate_up_proj`` (no copies), so gradients reach
the same parameters.
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["MODES", "use_moe_kernel"]

MODES = ("auto", "kernel", "reference", "off")


def _moe_block_forward(self, hidden_states_BLD):
    import torch

    use_kernel = self._loopwright_moe_mode == "kernel" or (
        self._loopwright_moe_mode == "auto" and hidden_states_BLD.is_cuda
    )
    if not use_kernel:
        return type(self).forward(self, hidden_states_BLD)
    from ...kernels.moe import moe_ffn

    B, L, D = hidden_states_BLD.shape
    if self.training and self.jitter_noise > 0:
        hidden_states_BLD = hidden_states_BLD * torch.empty_like(hidden_states_BLD).uniform_(
            1.0 - self.jitter_noise, 1.0 + self.jitter_noise
        )
    x_TD = hidden_states_BLD.reshape(-1, D)
    router_logits_TE, _, _ = self.gate(x_TD)  # recorded by transformers' output capture (aux loss)
    experts = self.experts
    f = experts.intermediate_dim
    y_TD = moe_ffn(
        x_TD,
        router_logits_TE,
        experts.gate_up_proj[:, :f],
        experts.gate_up_proj[:, f:],
        experts.down_proj,
        top_k=self.top_k,
    )
    return y_TD.reshape(B, L, D)


def use_moe_kernel(model: Any, mode: str = "auto") -> int:
    """Set the MoE execution ``mode`` (see the module docstring) on every Mixtral MoE block; returns their count."""
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    act = getattr(model.config, "hidden_act", "silu")
    if act != "silu" and mode in ("auto", "kernel"):
        raise ValueError(f"the MoE kernel implements SwiGLU experts (hidden_act='silu'); this model has {act!r}")
    n = 0
    for module in model.modules():
        if isinstance(module, MixtralSparseMoeBlock):
            n += 1
            if mode == "off":
                module.__dict__.pop("forward", None)
                module.__dict__.pop("_loopwright_moe_mode", None)
                continue
            module._loopwright_moe_mode = mode
            module.forward = types.MethodType(_moe_block_forward, module)
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no MixtralSparseMoeBlock; pass a merged Mixtral model")
    return n
