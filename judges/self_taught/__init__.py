"""Self-Taught Evaluator (Wang et al., arXiv 2408.02666): train an LLM judge on its own synthetic judgements.

Construction-labelled pairs (a response and a good answer to a *modified* instruction), judgements sampled in
both orders, rejection sampling against the known label, label balancing, SFT (or DPO + NLL) of the judge
re-initialised from the seed every iteration, held-out evaluation each iteration; every iteration a resumable
LangGraph graph of durable stages. See :mod:`.loop` (the loop), :mod:`.data` (selection, balancing, pairs),
:mod:`.prompts` (worse-response prompt and judge styles), :mod:`.sandbox` (the CPU demo's seed judge) and
docs/self_taught.md.
"""

from __future__ import annotations

from .data import (
    JudgedSample,
    balance_labels,
    compact_solution,
    dpo_pairs,
    gold_label,
    modify_miniarith,
    process_shuffled,
    rejection_sample,
)
from .loop import (
    NoUsableJudgementsError,
    SelfTaughtConfig,
    SelfTaughtEvaluator,
    check_checkpoint,
    miniarith_pairs,
)
from .prompts import JUDGE_STYLES, WORSE_RESPONSE, judge_template, parse_worse_response, worse_response_prompt

__all__ = [
    "JUDGE_STYLES",
    "WORSE_RESPONSE",
    "JudgedSample",
    "NoUsableJudgementsError",
    "SelfTaughtConfig",
    "SelfTaughtEvaluator",
    "balance_labels",
    "check_checkpoint",
    "compact_solution",
    "dpo_pairs",
    "gold_label",
    "judge_template",
    "miniarith_pairs",
    "modify_miniarith",
    "parse_worse_response",
    "process_shuffled",
    "rejection_sample",
    "worse_response_prompt",
]
