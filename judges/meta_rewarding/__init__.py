"""Meta-Rewarding (Wu et al., arXiv 2407.19594): one model as actor, judge and meta-judge, trained with DPO on
actor pairs (length control ρ) and judge pairs (meta-judge battles in both orders, position-weighted Elo).

- :class:`MetaRewardingLoop` — the iterations as durable LangGraph stages in a run directory (resumable);
- :class:`MetaRewardingConfig` — every knob with the paper's defaults (spec/loops.md Appendix A.3);
- pure parts: :func:`select_actor_pair`, :func:`position_weights`, :func:`battle_matrix`, :func:`elo_mle`,
  :func:`pick_max_variance`, :func:`select_judge_pair`; the LLM meta-judge :class:`MetaJudge`;
- :mod:`.sandbox` — the CPU demo's verifiable-signal judge and meta-judge on MiniArith, and its evaluator.

Importing this package loads no torch / trl / langgraph.
"""

from __future__ import annotations

from .actor import PairChoice, select_actor_pair
from .checkpoints import CheckpointError, check_model_dir, check_state_db
from .config import (
    ActorConfig,
    DPOConfig,
    EvalConfig,
    JudgeConfig,
    MetaJudgeConfig,
    MetaRewardingConfig,
    sandbox_config,
)
from .elo import elo_log_likelihood, elo_mle, spearman
from .loop import STAGES, MetaRewardingLoop, NoUsablePairsError
from .meta_judge import (
    Battle,
    JudgePairChoice,
    MetaJudge,
    battle_matrix,
    battle_plan,
    count_position_wins,
    pick_max_variance,
    position_weights,
    select_judge_pair,
)

__all__ = [
    "STAGES",
    "ActorConfig",
    "Battle",
    "CheckpointError",
    "DPOConfig",
    "EvalConfig",
    "JudgeConfig",
    "JudgePairChoice",
    "MetaJudge",
    "MetaJudgeConfig",
    "MetaRewardingConfig",
    "MetaRewardingLoop",
    "NoUsablePairsError",
    "PairChoice",
    "battle_matrix",
    "battle_plan",
    "check_model_dir",
    "check_state_db",
    "count_position_wins",
    "elo_log_likelihood",
    "elo_mle",
    "pick_max_variance",
    "position_weights",
    "sandbox_config",
    "select_actor_pair",
    "select_judge_pair",
    "spearman",
]
