"""loopwright.judges: LLM judges (pointwise, pairwise), reward-model judge, verdict parsers, judge evaluation.

Every judge implements :class:`loopwright.sdk.judge.Judge` and returns :class:`loopwright.sdk.types.Verdict`
objects with provenance and an explicit ``valid`` / ``invalid_reason`` (DESIGN.md "The five interfaces").
Importing this package loads no torch / vllm / trl; backends are imported where they are used.
"""

from __future__ import annotations

from .adapters.trl import RewardFuncMixin, as_pairwise_reward_func, as_reward_func
from .datasets import (
    PreferencePair,
    default_data_root,
    load_llmbar,
    load_mt_bench_human,
    load_pairs,
    load_preference_jsonl,
)
from .evaluation import JudgeReport, evaluate
from .llm import LLMJudge
from .next_token import ExpectedScoreJudge, LogprobPairwiseJudge, option_logprobs
from .pairwise import PairwiseJudge, make_pairwise_judge, soft_preference
from .parsers import (
    META_WINNER_PARSER_VERSION,
    PAIRWISE_PARSER_VERSION,
    PARSER_VERSIONS,
    SCORE_PARSER_VERSION,
    ParseResult,
    parse_meta_winner,
    parse_pairwise,
    parse_score,
)
from .pointwise import PointwiseJudge, make_pointwise_judge
from .reward_model import RewardModelJudge
from .score_comparison import ScoreComparisonJudge
from .templates import ADDITIVE_5POINT, META_JUDGE, PAIRWISE_VERDICT, JudgeTemplate, prompt_text

__all__ = [
    "ADDITIVE_5POINT",
    "META_JUDGE",
    "META_WINNER_PARSER_VERSION",
    "PAIRWISE_PARSER_VERSION",
    "PAIRWISE_VERDICT",
    "PARSER_VERSIONS",
    "SCORE_PARSER_VERSION",
    "ExpectedScoreJudge",
    "JudgeReport",
    "JudgeTemplate",
    "LLMJudge",
    "LogprobPairwiseJudge",
    "PairwiseJudge",
    "ParseResult",
    "PointwiseJudge",
    "PreferencePair",
    "RewardFuncMixin",
    "RewardModelJudge",
    "ScoreComparisonJudge",
    "as_pairwise_reward_func",
    "as_reward_func",
    "default_data_root",
    "evaluate",
    "load_llmbar",
    "load_mt_bench_human",
    "load_pairs",
    "load_preference_jsonl",
    "make_pairwise_judge",
    "make_pointwise_judge",
    "option_logprobs",
    "parse_meta_winner",
    "parse_pairwise",
    "parse_score",
    "prompt_text",
    "soft_preference",
]
