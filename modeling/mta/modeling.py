"""``MTAForCausalLM``: a Llama causal LM whose attention layers are :class:`~.attention.MTAAttention`.

Everything except the attention module is transformers' Llama (embeddings, RoPE, RMSNorm, SwiGLU, decoder loop,
generation), so a Llama checkpoint's weights load into an MTA model under the same names and, with identity-initialised
MTA parameters (and group norm / gating off), the two compute the same logits. With group norm or gating on, identity
initialisation still makes the attention *probabilities* equal the baseline's, but the per-head RMSNorm and the gate
(sigmoid of a small random projection, about 0.5) rescale each head's output, as in the official code.

The model always runs its own materialised attention (``attn_implementation`` is "eager"); masks reach the layers
in transformers' eager format.
"""

from __future__ import annotations

from torch import nn
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .attention import MTAAttention
from .config import MTAConfig

__all__ = ["MTADecoderLayer", "MTAForCausalLM", "MTAModel", "MTAPreTrainedModel"]


class MTADecoderLayer(LlamaDecoderLayer):
    """Llama decoder layer with :class:`MTAAttention` as ``self_attn``."""

    def __init__(self, config: MTAConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.self_attn = MTAAttention(config, layer_idx)


class MTAPreTrainedModel(LlamaPreTrainedModel):
    config_class = MTAConfig
    config: MTAConfig
    _no_split_modules = ["MTADecoderLayer"]
    _supports_flash_attn = False
    _supports_sdpa = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    _can_compile_fullgraph = False
    _can_record_outputs = {"hidden_states": MTADecoderLayer, "attentions": MTAAttention}

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MTAAttention):
            module.reset_mta_parameters()


class MTAModel(MTAPreTrainedModel, LlamaModel):
    """``LlamaModel`` with MTA decoder layers (forward inherited unchanged)."""

    def __init__(self, config: MTAConfig):
        MTAPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([MTADecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()


class MTAForCausalLM(MTAPreTrainedModel, LlamaForCausalLM):
    """``LlamaForCausalLM`` over :class:`MTAModel` (forward, loss and generation inherited unchanged)."""

    def __init__(self, config: MTAConfig):
        MTAPreTrainedModel.__init__(self, config)
        self.model = MTAModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
