"""Branch-Train-MiX (arXiv:2403.07816): merge dense Llama experts into a transformers Mixtral MoE.

- ``merge.py``: :func:`merge_btx` (FFNs -> experts, everything else averaged, new routers), :func:`upcycle`
  (sparse upcycling), :func:`save_merged`;
- ``router.py``: :func:`load_balance_loss`, :func:`freeze_all_but_routers`, :func:`moe_finetune`;
- ``btm.py``: Branch-Train-Merge baselines (:func:`average_dense`, :func:`btm_ensemble_logprobs`);
- ``dispatch.py``: :func:`use_moe_kernel` (Triton grouped-GEMM MoE on CUDA, transformers' loop elsewhere).

Submodules import torch / transformers lazily (inside functions), so importing this package is cheap.
"""

from .btm import average_dense, btm_ensemble_logprobs, btm_posterior
from .dispatch import use_moe_kernel
from .merge import ROUTER_INITS, check_experts, load_experts, merge_btx, save_merged, upcycle
from .router import freeze_all_but_routers, load_balance_loss, moe_finetune, router_parameters

__all__ = [
    "ROUTER_INITS",
    "average_dense",
    "btm_ensemble_logprobs",
    "btm_posterior",
    "check_experts",
    "freeze_all_but_routers",
    "load_balance_loss",
    "load_experts",
    "merge_btx",
    "moe_finetune",
    "router_parameters",
    "save_merged",
    "upcycle",
    "use_moe_kernel",
]
