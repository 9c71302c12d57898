"""PathFinder (Golovneva et al., arXiv 2312.05180): step-level tree search over reasoning with varied per-branch
decoding, quality constraints, pruning, step scoring and candidate selection.

Spec: ../shared/spec/loops.md §2 and Appendix A.2. ``config`` holds :class:`PathFinderConfig` (defaults and
their provenance), ``constraints`` the step checks (length, repetition, symbolic / NLI contradiction),
``selection`` the selectors (max likelihood, buddy voting, majority vote, verifier, random), ``search`` the
:class:`PathFinder` searcher (an ``sdk.Searcher``), ``graph`` the same search as a LangGraph graph, ``export`` TRL
preference and stepwise-supervision rows from searched paths.
"""

from .config import (
    BuddyConfig,
    ConstraintsConfig,
    ContradictionConstraint,
    DecodingGrid,
    FixedSampling,
    LengthConstraint,
    PathFinderConfig,
    RepetitionConstraint,
)
from .constraints import arithmetic_verifier, check_step, parse_annotations
from .export import preference_rows, stepwise_rows
from .search import PathFinder, PathFinderResult, default_prompt, question_of
from .selection import Selection, answers_equal, buddy_scores, candidates_from_texts, chain_text, select

__all__ = [
    "BuddyConfig",
    "ConstraintsConfig",
    "ContradictionConstraint",
    "DecodingGrid",
    "FixedSampling",
    "LengthConstraint",
    "PathFinder",
    "PathFinderConfig",
    "PathFinderResult",
    "RepetitionConstraint",
    "Selection",
    "answers_equal",
    "arithmetic_verifier",
    "buddy_scores",
    "candidates_from_texts",
    "chain_text",
    "check_step",
    "default_prompt",
    "parse_annotations",
    "preference_rows",
    "question_of",
    "select",
    "stepwise_rows",
]
