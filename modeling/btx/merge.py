"""Branch-Train-MiX merge: N dense Llama experts -> one transformers ``MixtralForCausalLM``.

BTX (Sukhbaatar et al. 2024, arXiv:2403.07816; spec/modeling.md §5.1): the feed-forward block of layer l of
expert i becomes expert i of the MoE layer l; every other tensor (embeddings, attention, norms, output head) is
the (weighted) mean of the experts' tensors; each layer gets a new router ``W_l`` (N x D) with top-k softmax
gating renormalised over the k selected experts (transformers' Mixtral does exactly this, spec §5.4).

Special cases (spec §5.2): :func:`upcycle` = sparse upcycling (N copies of one dense model); Branch-Train-Merge
lives in ``btm.py`` (parameter averaging and prefix-posterior ensembling of the dense experts).

Router initialisation (spec §5.4: "not specified beyond new parameters"; safe choices): ``"zeros+noise"``
(default: N(0, 1e-3) — near-uniform routing whose ties are broken by noise, not by expert index),
``"normal"`` (N(0, (0.1 / sqrt(D))^2)), ``"zeros"`` (exactly uniform probabilities; top-k ties resolve to the
lowest expert indices, so only use it when the router will be trained).

Layout check: all experts must be Llama-layout causal LMs with identical configs in every field that fixes a
tensor shape or the computation (hidden size, FFN size, layers, heads, vocabulary, activation, RoPE, norms,
biases); a mismatch raises at construction, naming the field, the values and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ROUTER_INITS", "check_experts", "load_experts", "merge_btx", "save_merged", "upcycle"]

ROUTER_INITS = ("zeros+noise", "normal", "zeros")

# Llama config fields that must agree across experts (shape- or computation-defining).
_SAME_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "rope_parameters",
    "max_position_embeddings",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
)


def load_experts(experts: Sequence[Any]) -> list[Any]:
    """Model objects as-is; folders (str / Path) loaded with ``LlamaForCausalLM.from_pretrained`` in fp32."""
    from transformers import AutoModelForCausalLM

    out = []
    for i, e in enumerate(experts):
        if isinstance(e, (str, Path)):
            if not Path(e).is_dir():
                raise ValueError(f"expert {i}: {str(e)!r} is not a model folder; pass a LlamaForCausalLM or its folder")
            import torch

            e = AutoModelForCausalLM.from_pretrained(e, dtype=torch.float32)
        out.append(e)
    return out


def check_experts(experts: Sequence[Any], num_experts_per_tok: int = 2) -> None:
    """Raise ``ValueError`` naming every mismatch between the experts' configs / tensors (and the fix)."""
    if len(experts) < 1:
        raise ValueError("merge_btx needs at least one expert model (got an empty list)")
    if not 1 <= num_experts_per_tok <= len(experts):
        raise ValueError(
            f"num_experts_per_tok={num_experts_per_tok} must be between 1 and the number of experts "
            f"({len(experts)}); lower num_experts_per_tok or pass more experts"
        )
    problems: list[str] = []
    ref = experts[0].config
    for i, e in enumerate(experts):
        cfg = e.config
        if cfg.model_type != "llama":
            problems.append(
                f"expert {i} has model_type={cfg.model_type!r}; BTX merges Llama-layout models (LlamaForCausalLM) — "
                "convert it to the Llama layout first"
            )
            continue
        if getattr(cfg, "hidden_act", "silu") != "silu":
            problems.append(f"expert {i} has hidden_act={cfg.hidden_act!r}; Mixtral experts are SwiGLU (silu)")
        for flag in ("attention_bias", "mlp_bias"):
            if getattr(cfg, flag, False):
                problems.append(
                    f"expert {i} has {flag}=True; MixtralForCausalLM has no biases there — use bias-free experts"
                )
        if i == 0:
            continue
        for field in _SAME_FIELDS:
            a, b = getattr(ref, field, None), getattr(cfg, field, None)
            if a != b:
                problems.append(
                    f"config field {field!r} differs: expert 0 has {a!r}, expert {i} has {b!r}; "
                    "all experts must be branched from the same seed architecture (same config)"
                )
    if not problems:
        ref_shapes = {k: tuple(v.shape) for k, v in experts[0].state_dict().items()}
        for i, e in enumerate(experts[1:], start=1):
            shapes = {k: tuple(v.shape) for k, v in e.state_dict().items()}
            if shapes.keys() != ref_shapes.keys():
                diff = sorted(shapes.keys() ^ ref_shapes.keys())[:5]
                problems.append(f"expert {i} has different parameter names than expert 0 (e.g. {diff})")
                continue
            for k, s in shapes.items():
                if s != ref_shapes[k]:
                    problems.append(
                        f"tensor {k!r} has shape {s} in expert {i} but {ref_shapes[k]} in expert 0; "
                        "experts must share one architecture"
                    )
                    break
    if problems:
        raise ValueError("cannot merge these experts into one MoE:\n  - " + "\n  - ".join(problems))


def _mixtral_config(llama_cfg: Any, num_experts: int, num_experts_per_tok: int, router_aux_loss_coef: float):
    from transformers import MixtralConfig

    head_dim = getattr(llama_cfg, "head_dim", None) or llama_cfg.hidden_size // llama_cfg.num_attention_heads
    return MixtralConfig(
        vocab_size=llama_cfg.vocab_size,
        hidden_size=llama_cfg.hidden_size,
        intermediate_size=llama_cfg.intermediate_size,
        num_hidden_layers=llama_cfg.num_hidden_layers,
        num_attention_heads=llama_cfg.num_attention_heads,
        num_key_value_heads=llama_cfg.num_key_value_heads,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=llama_cfg.max_position_embeddings,
        rms_norm_eps=llama_cfg.rms_norm_eps,
        rope_parameters=dict(llama_cfg.rope_parameters) if llama_cfg.rope_parameters else None,
        tie_word_embeddings=llama_cfg.tie_word_embeddings,
        bos_token_id=llama_cfg.bos_token_id,
        eos_token_id=llama_cfg.eos_token_id,
        pad_token_id=llama_cfg.pad_token_id,
        attention_dropout=getattr(llama_cfg, "attention_dropout", 0.0),
        sliding_window=None,
        num_local_experts=num_experts,
        num_experts_per_tok=num_experts_per_tok,
        router_aux_loss_coef=router_aux_loss_coef,
        router_jitter_noise=0.0,
        output_router_logits=False,
    )


def merge_btx(
    experts: Sequence[Any],
    *,
    num_experts_per_tok: int = 2,
    router_init: str = "zeros+noise",
    router_noise_std: float = 1e-3,
    avg_weights: Sequence[float] | None = None,
    router_aux_loss_coef: float = 0.01,
    seed: int = 0,
):
    """Merge N dense Llama experts (models or folders) into a ``MixtralForCausalLM`` (fp32, CPU, train mode off).

    Args:
        experts: N ``LlamaForCausalLM`` objects or folders, all of one architecture (checked).
        num_experts_per_tok: k of the top-k routing; 2 in BTX; must satisfy 1 <= k <= N.
        router_init: one of :data:`ROUTER_INITS` (see the module docstring).
        router_noise_std: std of the ``"zeros+noise"`` init.
        avg_weights: weights of the average of the non-FFN tensors (default uniform 1/N, BTX); non-negative,
            normalised to sum 1.
        router_aux_loss_coef: alpha of the load-balancing loss stored in the config (Switch default 0.01,
            spec §5.1; transformers' Mixtral default is 0.001).
        seed: seed of the router initialisation.
    """
    import torch
    from transformers import MixtralForCausalLM

    if router_init not in ROUTER_INITS:
        raise ValueError(f"router_init={router_init!r} is not one of {ROUTER_INITS}")
    models = load_experts(experts)
    check_experts(models, num_experts_per_tok)
    n = len(models)
    if avg_weights is None:
        weights = [1.0 / n] * n
    else:
        if len(avg_weights) != n or any(w < 0 for w in avg_weights) or sum(avg_weights) <= 0:
            raise ValueError(
                f"avg_weights={list(avg_weights)!r} must be {n} non-negative numbers with a positive sum"
            )
        total = float(sum(avg_weights))
        weights = [float(w) / total for w in avg_weights]

    llama_cfg = models[0].config
    cfg = _mixtral_config(llama_cfg, n, num_experts_per_tok, router_aux_loss_coef)
    merged = MixtralForCausalLM(cfg).to(torch.float32)
    states = [{k: v.detach().to(torch.float32) for k, v in m.state_dict().items()} for m in models]
    out_state = merged.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    d_model = llama_cfg.hidden_size
    gen = torch.Generator().manual_seed(seed)
    for name in out_state:
        if ".mlp.experts.gate_up_proj" in name:
            prefix = name.split(".mlp.")[0]  # model.layers.{l}
            # gate_up_proj: (E, 2F, D) = [gate_proj_i ; up_proj_i] for each expert i
            new_state[name] = torch.stack(
                [torch.cat([s[f"{prefix}.mlp.gate_proj.weight"], s[f"{prefix}.mlp.up_proj.weight"]], dim=0)
                 for s in states]
            )
        elif ".mlp.experts.down_proj" in name:
            prefix = name.split(".mlp.")[0]
            new_state[name] = torch.stack([s[f"{prefix}.mlp.down_proj.weight"] for s in states])  # (E, D, F)
        elif ".mlp.gate.weight" in name:
            shape = tuple(out_state[name].shape)  # (E, D)
            if router_init == "zeros":
                new_state[name] = torch.zeros(shape)
            elif router_init == "zeros+noise":
                new_state[name] = torch.randn(shape, generator=gen) * router_noise_std
            else:
                new_state[name] = torch.randn(shape, generator=gen) * (0.1 / math.sqrt(d_model))
        else:
            if name not in states[0]:
                raise ValueError(f"merged tensor {name!r} has no counterpart in the Llama experts")
            new_state[name] = sum(w * s[name] for w, s in zip(weights, states, strict=True))
    missing, unexpected = merged.load_state_dict(new_state, strict=False)
    real_missing = [k for k in missing if k not in ("lm_head.weight",) or not cfg.tie_word_embeddings]
    if real_missing or unexpected:
        raise RuntimeError(f"merge left tensors unset: missing={real_missing}, unexpected={unexpected}")
    merged.generation_config.pad_token_id = llama_cfg.pad_token_id
    merged.eval()  # inference mode, safe
    return merged


def upcycle(seed_model: Any, num_experts: int, **merge_kwargs: Any):
    """Sparse upcycling (Komatsuzaki et al. 2022, arXiv:2212.05055): N copies of one dense model's FFN + new routers."""
    if num_experts < 1:
        raise ValueError(f"num_experts={num_experts} must be >= 1")
    (model,) = load_experts([seed_model])
    return merge_btx([model] * num_experts, **merge_kwargs)


def save_merged(model: Any, out_dir: str | Path, tokenizer: Any = None) -> Path:
    """Save a merged model as a HF folder (vLLM-loadable); ``tokenizer`` = a tokenizer object or a folder to copy it from."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        tokenizer.save_pretrained(out)
    return out
