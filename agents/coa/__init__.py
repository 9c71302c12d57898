"""Chain-of-Abstraction (Gao et al., arXiv 2401.17464): chain grammar, DAG reification, training-data conversion.

Spec: ../shared/spec/loops.md §1. ``chain`` parses chains (``[20 + 35 = y1]``, ``[q -Wiki-> y1]``), ``reify``
fills their placeholders with tools level by level, ``convert`` turns GSM8K ``<<expr=result>>`` solutions into
verified abstract chains (and builds the LLM-rewrite prompt), ``cli`` is the ``loopwright coa`` sub-app.
"""

from .chain import ChainConfig, InvalidChain, MathCall, ParsedChain, ToolCall, parse_chain, substitute
from .reify import CycleError, Reified, build_dag, final_answer, reify

__all__ = [
    "ChainConfig",
    "CycleError",
    "InvalidChain",
    "MathCall",
    "ParsedChain",
    "Reified",
    "ToolCall",
    "build_dag",
    "final_answer",
    "parse_chain",
    "reify",
    "substitute",
]
