"""Tasks: the MiniArith generator and GSM8K-format loading and answer checking."""

from .gsm8k import (
    GSM8KProblem,
    extract_gold_answer,
    extract_model_answer,
    is_correct,
    load_gsm8k,
    train_validation_split,
)
from .miniarith import (
    BOILERPLATE,
    CORRUPTIONS,
    ID,
    OOD,
    MiniArithConfig,
    MiniArithProblem,
    MiniArithStep,
    evaluate_program,
    generate_problems,
)

__all__ = [
    "BOILERPLATE",
    "CORRUPTIONS",
    "GSM8KProblem",
    "ID",
    "MiniArithConfig",
    "MiniArithProblem",
    "MiniArithStep",
    "OOD",
    "evaluate_program",
    "extract_gold_answer",
    "extract_model_answer",
    "generate_problems",
    "is_correct",
    "load_gsm8k",
    "train_validation_split",
]
