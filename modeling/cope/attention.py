"""CoPE attention for a Llama-layout decoder: the official vectorised computation and the attention module.

``cope_attention_torch`` is the computation of facebookresearch/RAM @ e6f051fb,
projects/cope/src/cope/context_position.py (``ContextPosSelfAttn``; spec/modeling.md §3.2) with padding masks and
cached decoding: gates = sigmoid(G / sqrt(d)) * mask, positions = flip(cumsum(flip(gates))) clamped at npos - 1,
Z = q E gathered at ceil/floor and interpolated, logits = (q.k + pos_logits) / sqrt(d) (or q.k / sqrt(d) + pos_logits
with ``nodiv``), + log(mask), softmax, dropout, @ v.

The sqrt(d) choice: the paper's appendix snippet (and x-transformers) adds the CoPE logits *after* dividing q.k by
sqrt(d); the official code divides the *sum* by sqrt(d) (its default; ``--cope-nodiv`` gives the snippet). We follow
the official code by default (``CoPEConfig.cope_nodiv=False``): with zero-initialised embeddings both are the same
model at step 0, but they train differently (the official scale shrinks the position term by sqrt(d)).

Cached decoding: a new query's positions depend on the gates of *all* keys up to it, so each decode step
recomputes its row over every cached key (the cache holds k, v, and the separate gate keys if any, concatenated to
k along the head dim). That is exact, not an approximation: the row's gates only involve that query.

Dispatch (issue 9): ``loopwright.kernels.cope.cope_attention`` (Triton, one pass, O(L) memory) is used when
``CoPEConfig.cope_kernel`` allows it ("auto": CUDA tensors) and the call is one the kernel computes: queries ==
keys (no cached prefix), no padding in the mask, gates from q.k, no active attention dropout.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb, repeat_kv

__all__ = ["CoPEAttention", "allowed_mask", "cope_attention_torch"]

# Shapes: B batch, H heads, L queries, S keys (S >= L; queries are the last L key positions), D head dim,
# P npos_max.


def cope_attention_torch(q_BHLD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor, pos_emb_DP: torch.Tensor,
                         *, npos_max: int, allowed_B1LS: torch.Tensor, scale: float | None = None,
                         nodiv: bool = False, gate_k_BHSD: torch.Tensor | None = None, dropout_p: float = 0.0,
                         training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised CoPE attention (official form). ``allowed_B1LS``: bool, True = may attend (causal x padding,
    diagonal included). Returns ``(out_BHLD, attn_BHLS)``."""
    scale = q_BHLD.shape[-1] ** -0.5 if scale is None else scale
    s_BHLS = q_BHLD @ k_BHSD.transpose(-1, -2)
    g_BHLS = s_BHLS if gate_k_BHSD is None else q_BHLD @ gate_k_BHSD.transpose(-1, -2)
    gates_BHLS = torch.sigmoid(g_BHLS * scale) * allowed_B1LS
    pos_BHLS = gates_BHLS.flip(-1).cumsum(-1).flip(-1).clamp(max=npos_max - 1)
    ceil_BHLS = pos_BHLS.ceil().long()
    floor_BHLS = pos_BHLS.floor().long()
    w_BHLS = pos_BHLS - floor_BHLS
    z_BHLP = q_BHLD @ pos_emb_DP.to(q_BHLD.dtype)
    pos_logits_BHLS = z_BHLP.gather(-1, ceil_BHLS) * w_BHLS + z_BHLP.gather(-1, floor_BHLS) * (1 - w_BHLS)
    logits_BHLS = s_BHLS * scale + pos_logits_BHLS * (1.0 if nodiv else scale)
    logits_BHLS = logits_BHLS.masked_fill(~allowed_B1LS, float("-inf"))
    softmax_dtype = torch.promote_types(logits_BHLS.dtype, torch.float32)  # fp32 at least
    attn_BHLS = torch.softmax(logits_BHLS, dim=-1, dtype=softmax_dtype).to(q_BHLD.dtype)
    attn_BHLS = nn.functional.dropout(attn_BHLS, p=dropout_p, training=training)
    return attn_BHLS @ v_BHSD, attn_BHLS


def allowed_mask(attention_mask: torch.Tensor | None, batch: int, q_len: int, kv_len: int,
                 device: torch.device) -> torch.Tensor:
    """Bool (B|1, 1, L, S) "may attend" mask from whatever transformers passes (None = causal; a (B, S) 0/1 padding
    mask; a 4-D bool mask; a 4-D additive float mask with 0 = attend), causal with the cache offset, with each
    query's own key forced on (official code: rows are never empty)."""
    rows_L1 = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
    cols_1S = torch.arange(kv_len, device=device)[None, :]
    causal_LS = cols_1S <= rows_L1
    if attention_mask is None:
        allowed = causal_LS[None, None]
    else:
        mask = attention_mask[..., -kv_len:]
        if mask.dim() == 2:  # (B, S) padding mask: 1 / True = real token
            allowed = mask.bool()[:, None, None, :]
        else:  # (B, 1, L, S): bool (True = attend) or additive float (0 = attend, large negative = masked)
            allowed = mask if mask.dtype == torch.bool else mask == 0
        allowed = allowed & causal_LS
    return allowed | (cols_1S == rows_L1)


class CoPEAttention(LlamaAttention):
    """Llama attention with CoPE logits (and RoPE only if ``config.cope_use_rope``).

    Parameters beyond Llama's: ``pos_emb`` (head_dim x cope_npos_max, zeros, shared by the layer's heads, as in the
    official code) and, with ``cope_sep_key``, ``k_cope_proj`` (the gate-key projection).
    """

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx)
        self.npos_max = config.cope_npos_max
        self.pos_emb = nn.Parameter(torch.zeros(self.head_dim, self.npos_max))
        if config.cope_sep_key:
            self.k_cope_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim,
                                         bias=config.attention_bias)

    def _use_kernel(self, q_BHLD: torch.Tensor, kv_len: int, allowed_B1LS: torch.Tensor) -> bool:
        cfg = self.config
        if cfg.cope_kernel == "never" or (cfg.cope_kernel == "auto" and not q_BHLD.is_cuda):
            return False
        if cfg.cope_sep_key or cfg.cope_val_gates or (self.training and self.attention_dropout > 0):
            return False
        L = q_BHLD.shape[-2]
        if kv_len != L:
            return False
        causal_LL = torch.ones(L, L, dtype=torch.bool, device=q_BHLD.device).tril()
        return bool((allowed_B1LS | ~causal_LL).all())  # no padding inside the causal triangle

    def forward(self, hidden_states: torch.Tensor, position_embeddings=None, attention_mask=None,
                past_key_values=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        cfg = self.config
        B, L = hidden_states.shape[:2]
        hidden_shape = (B, L, -1, self.head_dim)
        q_BHLD = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        k_BKLD = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        v_BKLD = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        gk_BKLD = (self.k_cope_proj(hidden_states).view(hidden_shape).transpose(1, 2)
                   if cfg.cope_sep_key else None)
        if cfg.cope_use_rope:
            cos, sin = position_embeddings
            q_rot, k_BKLD = apply_rotary_pos_emb(q_BHLD, k_BKLD, cos, sin)
            if gk_BKLD is not None:
                _, gk_BKLD = apply_rotary_pos_emb(q_BHLD, gk_BKLD, cos, sin)
            q_BHLD = q_rot
        if past_key_values is not None:
            # the cache holds [k | gate keys] along the head dim so that the gate keys are cached too
            k_cat = k_BKLD if gk_BKLD is None else torch.cat([k_BKLD, gk_BKLD], dim=-1)
            k_cat, v_BKSD = past_key_values.update(k_cat, v_BKLD, self.layer_idx)
            k_BKSD = k_cat[..., : self.head_dim]
            gk_BKSD = k_cat[..., self.head_dim:] if gk_BKLD is not None else None
        else:
            k_BKSD, v_BKSD, gk_BKSD = k_BKLD, v_BKLD, gk_BKLD
        k_BHSD = repeat_kv(k_BKSD, self.num_key_value_groups)
        v_BHSD = repeat_kv(v_BKSD, self.num_key_value_groups)
        gk_BHSD = repeat_kv(gk_BKSD, self.num_key_value_groups) if gk_BKSD is not None else None
        if cfg.cope_val_gates:
            gk_BHSD = v_BHSD
        S = k_BHSD.shape[-2]
        allowed_B1LS = allowed_mask(attention_mask, B, L, S, q_BHLD.device)
        nodiv = cfg.cope_nodiv
        if self._use_kernel(q_BHLD, S, allowed_B1LS):
            from ...kernels.cope import cope_attention

            out_BHLD = cope_attention(q_BHLD, k_BHSD, v_BHSD, self.pos_emb, npos_max=self.npos_max,
                                      scale=self.scaling, nodiv=nodiv)
            attn_BHLS = None
        else:
            out_BHLD, attn_BHLS = cope_attention_torch(
                q_BHLD, k_BHSD, v_BHSD, self.pos_emb, npos_max=self.npos_max, allowed_B1LS=allowed_B1LS,
                scale=self.scaling, nodiv=nodiv, gate_k_BHSD=gk_BHSD, dropout_p=self.attention_dropout,
                training=self.training)
        out_BLHD = out_BHLD.transpose(1, 2).reshape(B, L, -1).contiguous()
        return self.o_proj(out_BLHD), attn_BHLS
