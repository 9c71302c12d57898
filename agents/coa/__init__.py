"""Chain-of-Abstraction (Gao et al., arXiv 2401.17464): chain grammar, DAG reification, training-data conversion.

Spec: ../shared/spec/loops.md §1. ``chain`` parses chains (``[20 + 35 = y1]``, ``[q -Wiki-> y1]``), ``reify``
fills their placeholders with tools level by level, ``convert`` turns GSM8K ``<<expr=result>>`` solutions into
verified abstract chains (and builds the LLM-rewrite prompt), ``agent`` is the LangGraph agent
(decode chain -> parse -> reify -> final answer), ``pipeline`` overlaps decoding with tool calls across
questions, ``evaluate`` compares the CoA agent with chain-of-thought, ``cli`` is the ``loopwright coa`` sub-app.
"""

from .agent import CoAAgent, CoAState, as_question
from .chain import ChainConfig, InvalidChain, MathCall, ParsedChain, ToolCall, parse_chain, substitute
from .evaluate import CoAvsCoTReport, evaluate_coa_vs_cot
from .pipeline import DelayedTool, PipelineRun, run_pipelined, run_sequential
from .reify import CycleError, Reified, build_dag, final_answer, reify

__all__ = [
    "ChainConfig",
    "CoAAgent",
    "CoAState",
    "CoAvsCoTReport",
    "DelayedTool",
    "PipelineRun",
    "as_question",
    "evaluate_coa_vs_cot",
    "run_pipelined",
    "run_sequential",
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
