"""``CoPEForCausalLM``: a Llama causal LM whose attention layers are :class:`~.attention.CoPEAttention`.

Everything except the attention module is transformers' Llama (embeddings, RMSNorm, SwiGLU, decoder loop, KV cache,
generation). RoPE is computed by the Llama backbone but applied only when ``config.cope_use_rope`` is set (the
official CoPE code has no other position encoding). The zero-initialised ``pos_emb`` makes a fresh CoPE model a
no-position-encoding Llama at step 0 (spec/modeling.md §3.7 item 6).

The model runs its own attention (``attn_implementation`` resolves to "eager"); the layers accept transformers'
eager, bool or absent masks (:func:`~.attention.allowed_mask`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .attention import CoPEAttention
from .config import CoPEConfig

__all__ = ["CoPEDecoderLayer", "CoPEForCausalLM", "CoPEModel", "CoPEPreTrainedModel"]


class CoPEDecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer with :class:`CoPEAttention` as ``self_attn``."""

    def __init__(self, config: CoPEConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.self_attn = CoPEAttention(config, layer_idx)


class CoPEPreTrainedModel(LlamaPreTrainedModel):
    config_class = CoPEConfig
    config: CoPEConfig
    _no_split_modules = ["CoPEDecoderLayer"]
    _supports_flash_attn = False
    _supports_sdpa = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False
    _can_record_outputs = {"hidden_states": CoPEDecoderLayer, "attentions": CoPEAttention}

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, CoPEAttention):
            with torch.no_grad():
                module.pos_emb.zero_()  # official init: zeros (RAM context_position.py)


class CoPEModel(CoPEPreTrainedModel, LlamaModel):
    """``LlamaModel`` with CoPE decoder layers (forward inherited unchanged)."""

    def __init__(self, config: CoPEConfig):
        CoPEPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([CoPEDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class CoPEForCausalLM(CoPEPreTrainedModel, LlamaForCausalLM):
    """``LlamaForCausalLM`` over :class:`CoPEModel` (forward, loss and generation inherited unchanged)."""

    def __init__(self, config: CoPEConfig):
        CoPEPreTrainedModel.__init__(self, config)
        self.model = CoPEModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
