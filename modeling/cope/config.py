"""``CoPEConfig``: a Llama configuration plus the CoPE options of the official code.

CoPE (arXiv:2405.18719) replaces the position encoding of every attention layer: positions are counted by
sigmoid gates, per query, per head (spec/modeling.md §3.1-3.2). Defaults follow facebookresearch/RAM @ e6f051fb,
projects/cope (``ContextPosSelfAttn``): one zero-initialised (head_dim x npos) embedding per layer shared by all
heads, gates from the attention's own q.k, the CoPE logits divided by sqrt(d) like q.k, no RoPE.
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig

__all__ = ["CoPEConfig"]

_KERNEL_CHOICES = ("auto", "never", "always")


class CoPEConfig(LlamaConfig):
    r"""Configuration of [`CoPEForCausalLM`]: every [`LlamaConfig`] field plus:

    Args:
        cope_npos_max (`int`, *optional*, defaults to 64):
            Number of integer position embeddings; positions are clamped at ``cope_npos_max - 1``. The official
            code uses ``block_size + 1`` when unset (every position representable); the paper argues contextual
            counts are small, and x-transformers defaults to 16. Must be >= 1.
        cope_use_rope (`bool`, *optional*, defaults to `False`):
            Also rotate q and k with Llama's RoPE (gates and logits then use the rotated q, k). The official code
            and the paper use CoPE as the *only* position encoding, so the default is off.
        cope_nodiv (`bool`, *optional*, defaults to `False`):
            ``False`` (official default): logits = (q.k + pos_logits) / sqrt(d). ``True`` (``--cope-nodiv``, the
            paper's appendix snippet and x-transformers): logits = q.k / sqrt(d) + pos_logits.
        cope_sep_key (`bool`, *optional*, defaults to `False`):
            Gates from a separate key projection ``k_cope_proj`` (``--cope-sep-key``); attention keys unchanged.
        cope_val_gates (`bool`, *optional*, defaults to `False`):
            Gates from q.v instead of q.k (``--cope-val-gates``). Exclusive with ``cope_sep_key``.
        cope_kernel (`str`, *optional*, defaults to `"auto"`):
            ``"auto"``: the Triton kernel (kernels/cope.py) for CUDA tensors when the call is supported (no padding,
            no cached decode, no separate gate keys, no attention dropout), the PyTorch path otherwise.
            ``"never"``: always PyTorch. ``"always"``: the kernel wherever supported, whatever the device (CPU needs
            ``TRITON_INTERPRET=1`` set before Triton is imported; for tests).
    """

    model_type = "loopwright_cope"

    cope_npos_max: int = 64
    cope_use_rope: bool = False
    cope_nodiv: bool = False
    cope_sep_key: bool = False
    cope_val_gates: bool = False
    cope_kernel: str = "auto"

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        problems = []
        npos = self.cope_npos_max
        if not isinstance(npos, int) or isinstance(npos, bool) or npos < 1:
            problems.append(f"cope_npos_max={npos!r} must be an integer >= 1 (the number of position embeddings; "
                            "use e.g. 64, or max_position_embeddings + 1 never to clamp)")
        if self.cope_sep_key and self.cope_val_gates:
            problems.append("cope_sep_key=True and cope_val_gates=True are exclusive (the official code takes one "
                            "source of gate keys); set one of them to False")
        if self.cope_kernel not in _KERNEL_CHOICES:
            problems.append(f"cope_kernel={self.cope_kernel!r} is not one of {_KERNEL_CHOICES}")
        if problems:
            raise ValueError("invalid CoPEConfig: " + "; ".join(problems))
