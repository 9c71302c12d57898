"""``MTAConfig``: a Llama configuration plus the Multi-Token Attention options (arXiv 2504.00927).

The option set and its semantics follow the official code, facebookresearch/RAM ``projects/mta/mta_transformer.py``
at commit e6f051fb (spec/modeling.md §2.3-2.8). Defaults give the smallest MTA model that equals its Llama baseline
at initialisation: a pre-softmax 6x11 key-query convolution in every layer, identity-initialised, nothing else.
:meth:`MTAConfig.paper_lm` and :meth:`MTAConfig.toy_find_block` build the two configurations of the paper.

Options (all prefixed ``mta_``):

- ``mta_pre_kernel`` (`list[int] | None`, defaults to ``[6, 11]``): ``[c_q, c_k]`` of the pre-softmax key-query
  convolution (§2.3): ``c_q`` queries (the current one and ``c_q - 1`` older ones) by ``c_k`` keys. ``[]`` = no
  pre-softmax convolution (``None`` or omitted = the default ``[6, 11]``).
- ``mta_post_kernel`` (`list[int] | None`, defaults to none): ``[c_q, c_k]`` of the post-softmax key-query
  convolution (§2.4; no renormalisation); ``None`` or ``[]`` = none.
- ``mta_pad_key`` (`str`, defaults to ``"both"``): key-axis padding of the convolutions: ``"both"`` pads
  ``(c_k - 1) / 2`` on each side (needs odd ``c_k``), ``"left"`` pads ``c_k - 1`` before (only earlier keys),
  ``"right"`` pads ``c_k - 1`` after.
- ``mta_pre_head_mix`` (`bool`, defaults to ``False``): pre-softmax full head mixing, ``S'_g = sum_h W[g, h] S_h``
  (``W`` stored like ``nn.Linear(H, H).weight``, §2.5).
- ``mta_post_head_group`` (`int | None`, defaults to ``None``): group size ``c_h`` of the post-softmax grouped head
  convolution (kernel ``(H / c_h, c_h, c_h)`` indexed ``[group, source, target]``, §2.5).
- ``mta_post_head_mix`` (`bool`, defaults to ``False``): post-softmax full linear head mixing (the official
  ``post_sm_linear_head``; mutually exclusive with ``mta_post_head_group``).
- ``mta_layers`` (`list[int] | None`, defaults to ``None`` = every layer): 0-based layers that get the key-query
  convolutions. Other layers keep head mixing (and group norm / gating) if configured, as in the official code
  (§2.7).
- ``mta_group_norm`` / ``mta_gating`` / ``mta_depth_scaling`` (`bool`, default ``False``): per-head RMSNorm of the
  attention output (eps 1e-5, one weight of size head_dim), a scalar sigmoid gate per (token, head), and the
  DIFF-Transformer depth scaling ``1 - (0.8 - 0.6 exp(-0.3 l))`` (§2.6). Like the official code they apply to every
  layer.
- ``mta_init`` (`str`, defaults to ``"identity"``): ``"identity"`` (kernel 1 at [current query, same key], identity
  head mixing), ``"const"`` (0.3 everywhere) or ``"uniform"`` (U(-1, 1)) for the key-query kernels (§2.8).
- ``mta_use_kernel`` (`bool`, defaults to ``True``): use ``loopwright.kernels.mta.mta_attention`` on CUDA tensors
  when the layer's configuration is the kernel's (see :func:`loopwright.modeling.mta.attention.use_fused_kernel`).

Attention dropout is ``attention_dropout`` of the Llama configuration, applied to the probabilities after every MTA
op and only in training (the official MTA path; its baseline also dropped at eval time, §2.2 — not reproduced).
"""

from __future__ import annotations

from typing import Any

from transformers import LlamaConfig

__all__ = ["MTAConfig"]

_PAD_KEYS = ("both", "left", "right")
_INITS = ("identity", "const", "uniform")


class MTAConfig(LlamaConfig):  # a dataclass via PreTrainedConfig.__init_subclass__
    """Llama configuration + Multi-Token Attention options (see the module docstring for the reference)."""

    model_type = "loopwright_mta"

    mta_pre_kernel: list[int] | None = None
    mta_post_kernel: list[int] | None = None
    mta_pad_key: str = "both"
    mta_pre_head_mix: bool = False
    mta_post_head_group: int | None = None
    mta_post_head_mix: bool = False
    mta_layers: list[int] | None = None
    mta_group_norm: bool = False
    mta_gating: bool = False
    mta_depth_scaling: bool = False
    mta_init: str = "identity"
    mta_use_kernel: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        # None at construction means "the default kernel"; an explicit "no pre-softmax kernel" is stored as [].
        if self.mta_pre_kernel is None:
            self.mta_pre_kernel = [6, 11]
        self.mta_pre_kernel = list(self.mta_pre_kernel) if self.mta_pre_kernel else []
        self.mta_post_kernel = list(self.mta_post_kernel) if self.mta_post_kernel else []
        super().__post_init__(**kwargs)
        self._check_mta()

    def _check_mta(self) -> None:
        errors = []
        n_heads, n_layers = self.num_attention_heads, self.num_hidden_layers
        if self.mta_pad_key not in _PAD_KEYS:
            errors.append(f"mta_pad_key={self.mta_pad_key!r} is not one of {_PAD_KEYS}")
        if self.mta_init not in _INITS:
            errors.append(f"mta_init={self.mta_init!r} is not one of {_INITS}")
        for name in ("mta_pre_kernel", "mta_post_kernel"):
            kernel = getattr(self, name)
            if not kernel:
                continue
            if len(kernel) != 2 or any(not isinstance(x, int) or x < 1 for x in kernel):
                errors.append(f"{name}={kernel!r} must be [c_q, c_k] with two integers >= 1 (or [] for none)")
                continue
            c_q, c_k = kernel
            if self.mta_pad_key == "both" and c_k % 2 == 0:
                errors.append(f"{name}={kernel!r}: key width c_k={c_k} is even but mta_pad_key='both' pads "
                              f"(c_k - 1) / 2 keys on each side; use an odd c_k (e.g. {c_k + 1}) or "
                              f"mta_pad_key='left'")
            if max(c_q, c_k) > self.max_position_embeddings:
                errors.append(f"{name}={kernel!r} is larger than max_position_embeddings="
                              f"{self.max_position_embeddings}; use a kernel no larger than the sequence")
        if self.mta_post_head_group is not None:
            c_h = self.mta_post_head_group
            if c_h < 1 or n_heads % c_h != 0:
                errors.append(f"mta_post_head_group={c_h} does not divide num_attention_heads={n_heads}; use a "
                              f"divisor of {n_heads}")
            if self.mta_post_head_mix:
                errors.append("mta_post_head_group and mta_post_head_mix=True are mutually exclusive (official "
                              "code); set one of them")
        if self.mta_depth_scaling and not self.mta_group_norm:
            errors.append("mta_depth_scaling=True rescales the group-normed head outputs (official "
                          "layer_norm_rescale); set mta_group_norm=True as well")
        if self.mta_layers is not None:
            bad = [i for i in self.mta_layers if not isinstance(i, int) or not 0 <= i < n_layers]
            if bad:
                errors.append(f"mta_layers={self.mta_layers!r} has ids {bad} outside 0..{n_layers - 1} "
                              f"(num_hidden_layers={n_layers}); use 0-based layer ids")
        if errors:
            raise ValueError("invalid MTAConfig: " + "; ".join(errors))

    # ---------------------------------------------------------------- helpers

    def layer_has_kq_conv(self, layer_idx: int) -> bool:
        """Whether layer ``layer_idx`` gets the key-query convolution(s) (``mta_layers``; ``None`` = all)."""
        return self.mta_layers is None or layer_idx in self.mta_layers

    @classmethod
    def toy_find_block(cls, **kwargs: Any) -> MTAConfig:
        """The find-the-block toy configuration (§2.11): pre-softmax 2x9 kernel in every layer, nothing else."""
        return cls(**{"mta_pre_kernel": [2, 9], **kwargs})

    @classmethod
    def paper_lm(cls, **kwargs: Any) -> MTAConfig:
        """The released LM configuration (§2.7): pre and post 6x11 kernels every 4th layer from layer 2, full
        pre-softmax head mixing, post-softmax head convolution over all heads, group norm with gating."""
        n_layers = kwargs.get("num_hidden_layers", cls.num_hidden_layers)
        n_heads = kwargs.get("num_attention_heads", cls.num_attention_heads)
        defaults = {"mta_pre_kernel": [6, 11], "mta_post_kernel": [6, 11], "mta_pre_head_mix": True,
                    "mta_post_head_group": n_heads, "mta_layers": list(range(2, n_layers, 4)),
                    "mta_group_norm": True, "mta_gating": True}
        return cls(**{**defaults, **kwargs})
