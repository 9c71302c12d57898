"""``MTAAttention``: Llama attention with Multi-Token Attention ops (arXiv 2504.00927), a drop-in for
``LlamaAttention`` (same q/k/v/o projections and parameter names, so Llama weights load into it).

Forward order = the official code at facebookresearch/RAM e6f051fb (spec/modeling.md §2.6b): RoPE → scores →
pre-softmax key-query conv → pre-softmax head mixing → mask + fp32 softmax → post-softmax key-query conv → post-softmax
head mixing → train-only dropout → ``A V`` → per-head RMSNorm (× depth scale) → scalar gate → ``o_proj``. The scores
are materialised (L x L); the math lives in :mod:`.reference`.

Masks: causal attention with key padding (what ``generate`` and padded batches produce). Other masks (packed
documents, sliding windows) raise ``NotImplementedError`` instead of silently computing something else.

KV-cache decoding: the key-query convolution of query ``i`` reads the scores of the ``c_q - 1`` previous queries
(and a post-softmax kernel the probabilities of ``c_q' - 1`` more), so the layer keeps its post-RoPE queries in the
cache, like the official code. They live in extra layers of the same ``DynamicCache`` (slot ``num_hidden_layers +
layer_idx``, values of width 0), so beam reordering, cropping and batch selection treat them like keys. At each
step the layer recomputes the attention rows of the new queries plus ``(c_q - 1) + (c_q' - 1)`` older ones and keeps
the new rows, which equals the full forward exactly.

Fused kernel: on CUDA tensors, when the layer's configuration is exactly the kernel's (pre-softmax key-query conv with
``pad_key="both"``, optional pre-softmax head mixing, nothing after the softmax, no padding, no cached decoding,
dropout inactive), ``loopwright.kernels.mta.mta_attention`` runs instead of the reference (see
:func:`use_fused_kernel`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import DynamicLayer
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from .config import MTAConfig
from .reference import causal_allowed, mta_probs

__all__ = ["MTAAttention", "use_fused_kernel"]

# Shapes: B batch, H heads, K kv heads, Q query rows (this call), W query window, S keys, D head dim, M model dim.


def use_fused_kernel(*, device_type: str, enabled: bool, has_pre_kernel: bool, pad_key: str, has_post_ops: bool,
                     has_padding: bool, cached_decode: bool, dropout_active: bool) -> bool:
    """Whether a layer call may use ``loopwright.kernels.mta.mta_attention`` (pure decision, testable on CPU)."""
    return (device_type == "cuda" and enabled and has_pre_kernel and pad_key == "both" and not has_post_ops
            and not has_padding and not cached_decode and not dropout_active)


def _allowed_from_hf_mask(mask: torch.Tensor | None, q_len: int, k_len: int) -> torch.Tensor | None:
    """Boolean ``allowed_BQS`` for the last ``q_len`` queries from a transformers mask (None, 2-D (B, S) 0/1,
    4-D bool with True = attend, or 4-D additive float); ``None`` when there is no mask."""
    if mask is None:
        return None
    if mask.dim() == 2:
        return causal_allowed(q_len, k_len, key_valid_BS=mask[:, -k_len:].bool(), device=mask.device)
    if mask.dim() != 4:
        raise NotImplementedError(f"MTA attention got an attention mask of shape {tuple(mask.shape)}")
    if mask.shape[1] != 1:
        mask = mask[:, :1]
    mask_BQS = mask[:, 0, -q_len:, :k_len]
    if mask_BQS.dtype == torch.bool:
        return mask_BQS
    return mask_BQS > torch.finfo(mask_BQS.dtype).min / 2


class MTAAttention(nn.Module):
    """Multi-Token Attention layer (see the module docstring); returns ``(output_BQM, probs_BHQS)``."""

    def __init__(self, config: MTAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = float(config.attention_dropout or 0.0)
        self.is_causal = True
        self.pad_key = config.mta_pad_key
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

        H = self.num_heads
        conv_layer = config.layer_has_kq_conv(layer_idx)
        pre, post = (config.mta_pre_kernel, config.mta_post_kernel) if conv_layer else ([], [])
        # Key-query kernels (H, c_q, c_k); pre-softmax head mix W[g, h]; post-softmax head kernel [group, src, tgt].
        self.pre_kernel = nn.Parameter(torch.empty(H, *pre)) if pre else None
        self.post_kernel = nn.Parameter(torch.empty(H, *post)) if post else None
        self.pre_head_mix = nn.Parameter(torch.empty(H, H)) if config.mta_pre_head_mix else None
        c_h = config.mta_post_head_group
        self.post_head_kernel = nn.Parameter(torch.empty(H // c_h, c_h, c_h)) if c_h else None
        self.post_head_mix = nn.Parameter(torch.empty(H, H)) if config.mta_post_head_mix else None
        self.norm_weight = nn.Parameter(torch.empty(self.head_dim)) if config.mta_group_norm else None
        self.gate_weight = nn.Parameter(torch.empty(self.head_dim)) if config.mta_gating else None
        self.gate_bias = nn.Parameter(torch.empty(1)) if config.mta_gating else None
        # DIFF-Transformer depth scaling 1 - lambda_init(l), l = 0-based layer index (§2.6).
        self.depth_scale = 1.0 - (0.8 - 0.6 * math.exp(-0.3 * layer_idx)) if config.mta_depth_scaling else 1.0
        # Older query rows a cached decoding step must recompute (§2.9 item 4).
        self.query_history = (pre[0] - 1 if pre else 0) + (post[0] - 1 if post else 0)
        self.reset_mta_parameters()

    @property
    def has_post_ops(self) -> bool:
        return self.post_kernel is not None or self.post_head_kernel is not None or self.post_head_mix is not None

    @torch.no_grad()
    def reset_mta_parameters(self) -> None:
        """Initialise the MTA parameters (§2.8) with transformers' init functions, which skip loaded weights."""
        for kernel in (self.pre_kernel, self.post_kernel):
            if kernel is None:
                continue
            if self.config.mta_init == "identity":
                init.copy_(kernel, self._identity_kernel(kernel))
            elif self.config.mta_init == "const":
                init.constant_(kernel, 0.3)
            else:
                init.uniform_(kernel, -1.0, 1.0)
        for mix in (self.pre_head_mix, self.post_head_mix):
            if mix is not None:
                init.copy_(mix, torch.eye(self.num_heads, dtype=mix.dtype, device=mix.device))
        if self.post_head_kernel is not None:
            g, c, _ = self.post_head_kernel.shape
            eye = torch.eye(c, dtype=self.post_head_kernel.dtype, device=self.post_head_kernel.device)
            init.copy_(self.post_head_kernel, eye.expand(g, c, c).clone())
        if self.norm_weight is not None:
            init.ones_(self.norm_weight)
        if self.gate_weight is not None:
            std = self.config.hidden_size ** -0.5
            init.trunc_normal_(self.gate_weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
            init.zeros_(self.gate_bias)  # official: never re-initialised (uninitialised memory); 0 here (§2.8)

    def _identity_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        """1 at [current query, same key] (the key column depends on ``pad_key``), 0 elsewhere."""
        _, c_q, c_k = kernel.shape
        col = {"both": (c_k - 1) // 2, "left": c_k - 1, "right": 0}[self.pad_key]
        ident = torch.zeros_like(kernel)
        ident[:, c_q - 1, col] = 1.0
        return ident

    # ----------------------------------------------------------------------------------------------- cache

    def _cached_queries(self, cache: Any, q_BHQD: torch.Tensor) -> torch.Tensor:
        """Append this call's queries to the layer's query slot of the cache; return all cached queries."""
        slot = self.config.num_hidden_layers + self.layer_idx
        while len(cache.layers) <= slot:
            cache.layers.append(DynamicLayer())
        empty = q_BHQD.new_empty(*q_BHQD.shape[:-1], 0)
        queries, _ = cache.layers[slot].update(q_BHQD, empty)
        return queries

    # --------------------------------------------------------------------------------------------- forward

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None = None, past_key_values: Any = None, **kwargs: Any
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x_BQM = hidden_states
        B, Q, _ = x_BQM.shape
        q_BHQD = self.q_proj(x_BQM).view(B, Q, -1, self.head_dim).transpose(1, 2)
        k_BKQD = self.k_proj(x_BQM).view(B, Q, -1, self.head_dim).transpose(1, 2)
        v_BKQD = self.v_proj(x_BQM).view(B, Q, -1, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q_BHQD, k_BKQD = apply_rotary_pos_emb(q_BHQD, k_BKQD, cos, sin)

        q_BHWD = q_BHQD
        if past_key_values is not None:
            k_BKSD, v_BKSD = past_key_values.update(k_BKQD, v_BKQD, self.layer_idx)
            if self.query_history > 0:
                queries = self._cached_queries(past_key_values, q_BHQD)
                q_BHWD = queries[:, :, -min(queries.shape[2], Q + self.query_history):]
        else:
            k_BKSD, v_BKSD = k_BKQD, v_BKQD
        S, W = k_BKSD.shape[2], q_BHWD.shape[2]
        cached_decode = S > Q
        k_BHSD = repeat_kv(k_BKSD, self.num_key_value_groups)
        v_BHSD = repeat_kv(v_BKSD, self.num_key_value_groups)

        # Allowed keys = causal (by absolute position) and not padding; the key padding is read from the mask's
        # last query row, and the mask must then be exactly causal + key padding.
        hf_allowed_BQS = _allowed_from_hf_mask(attention_mask, Q, S)
        key_valid_BS = hf_allowed_BQS[:, -1, :] if hf_allowed_BQS is not None else None
        allowed_BWS = causal_allowed(W, S, key_valid_BS=key_valid_BS, device=x_BQM.device)
        if hf_allowed_BQS is not None:
            if not torch.equal(allowed_BWS[:, -Q:].expand_as(hf_allowed_BQS), hf_allowed_BQS):
                raise NotImplementedError("MTA attention supports causal masks with key padding only (no packed "
                                          "documents or sliding windows)")
        has_padding = key_valid_BS is not None and not bool(key_valid_BS.all())
        dropout_active = self.training and self.attention_dropout > 0

        if use_fused_kernel(device_type=q_BHQD.device.type, enabled=self.config.mta_use_kernel,
                            has_pre_kernel=self.pre_kernel is not None, pad_key=self.pad_key,
                            has_post_ops=self.has_post_ops, has_padding=has_padding,
                            cached_decode=cached_decode, dropout_active=dropout_active):
            from ...kernels.mta import mta_attention  # lazy: Triton is only needed on the GPU path

            out_BHQD = mta_attention(q_BHQD, k_BHSD, v_BHSD, self.pre_kernel, self.pre_head_mix, scale=self.scaling)
            probs_BHQS = None
        else:
            probs_BHWS = mta_probs(q_BHWD, k_BHSD, allowed_BWS, scale=self.scaling, pre_kernel_HQK=self.pre_kernel,
                                   pre_head_mix_HH=self.pre_head_mix, post_kernel_HQK=self.post_kernel,
                                   post_head_kernel_GCC=self.post_head_kernel, post_head_mix_HH=self.post_head_mix,
                                   pad_key=self.pad_key)
            probs_BHQS = probs_BHWS[:, :, -Q:]
            dropped_BHQS = nn.functional.dropout(probs_BHQS, p=self.attention_dropout, training=self.training)
            out_BHQD = torch.matmul(dropped_BHQS, v_BHSD)

        out_BQHD = out_BHQD.transpose(1, 2)
        if self.norm_weight is not None:
            variance_BQH1 = out_BQHD.float().pow(2).mean(-1, keepdim=True)
            normed = out_BQHD.float() * torch.rsqrt(variance_BQH1 + 1e-5)
            out_BQHD = (normed * self.norm_weight.float()).to(out_BQHD.dtype) * self.depth_scale
        if self.gate_weight is not None:
            gate_BQH1 = torch.sigmoid(out_BQHD @ self.gate_weight.unsqueeze(-1) + self.gate_bias)
            out_BQHD = out_BQHD * gate_BQH1
        out_BQM = self.o_proj(out_BQHD.reshape(B, Q, -1).contiguous())
        return out_BQM, probs_BHQS
