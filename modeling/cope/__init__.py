"""CoPE, Contextual Position Encoding (arXiv:2405.18719), as a transformers causal LM.

``CoPEConfig`` (model_type ``"loopwright_cope"``) and ``CoPEForCausalLM`` are registered with ``AutoConfig`` /
``AutoModel`` / ``AutoModelForCausalLM`` when this package is imported, so ``AutoModelForCausalLM.from_pretrained``
(and loopwright's ``TransformersGenerator``) load saved CoPE models after ``import loopwright.modeling.cope``.

Files: ``config.py`` (options), ``attention.py`` (official computation + the attention module + kernel dispatch),
``modeling.py`` (the Llama-layout model), ``reference.py`` (naive loop reference for tests). The Triton kernel is
``loopwright.kernels.cope``. Results and the sqrt(d) discussion: docs/cope.md.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .attention import CoPEAttention, allowed_mask, cope_attention_torch
from .config import CoPEConfig
from .modeling import CoPEForCausalLM, CoPEModel, CoPEPreTrainedModel
from .reference import cope_attention_naive

__all__ = [
    "CoPEAttention",
    "CoPEConfig",
    "CoPEForCausalLM",
    "CoPEModel",
    "CoPEPreTrainedModel",
    "allowed_mask",
    "cope_attention_naive",
    "cope_attention_torch",
]

AutoConfig.register(CoPEConfig.model_type, CoPEConfig, exist_ok=True)
AutoModel.register(CoPEConfig, CoPEModel, exist_ok=True)
AutoModelForCausalLM.register(CoPEConfig, CoPEForCausalLM, exist_ok=True)
