"""Multi-Token Attention (MTA, arXiv 2504.00927) as a transformers model.

``MTAConfig`` (model_type ``"loopwright_mta"``) and ``MTAForCausalLM`` are registered with ``AutoConfig`` /
``AutoModel`` / ``AutoModelForCausalLM`` when this package is imported, so a saved MTA model reloads with
``AutoModelForCausalLM.from_pretrained`` once ``loopwright.modeling.mta`` has been imported. References:
:mod:`.reference` (naive loops and the vectorised official form); the Triton kernel is in ``loopwright.kernels.mta``.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .attention import MTAAttention, use_fused_kernel
from .config import MTAConfig
from .modeling import MTAForCausalLM, MTAModel

__all__ = ["MTAAttention", "MTAConfig", "MTAForCausalLM", "MTAModel", "use_fused_kernel"]

AutoConfig.register(MTAConfig.model_type, MTAConfig, exist_ok=True)
AutoModel.register(MTAConfig, MTAModel, exist_ok=True)
AutoModelForCausalLM.register(MTAConfig, MTAForCausalLM, exist_ok=True)
