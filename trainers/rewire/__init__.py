"""REWIRE (Nguyen et al., arXiv 2506.04689): guided rewrite of a document pool, a locally trained quality
classifier, top-p % selection, raw + rewritten mixing with an epoch cap, and the recycled-fraction statistic.

- :func:`build_rewrite_prompt` / :func:`extract_rewrite` -- the rewrite prompt and its marker parser;
- :func:`make_classifier` -- fastText when installed, else a numpy hashed-n-gram logistic regression (spec §6.5);
- :func:`top_percent`, :func:`recycled_fraction`, :func:`spearman` -- selection and diagnostics;
- :func:`mix_by_tokens` -- token-budget mixing, at most ``MAX_EPOCHS`` (4) uses of a document;
- :func:`run_rewire` -- the pipeline over a Local or Ray executor, as an sdk Filter with rejected rows + reasons.

See docs/rewire.md. Importing this package loads no torch / ray / fasttext.
"""

from __future__ import annotations

from .classifier import (
    FastTextClassifier,
    HashedNgramClassifier,
    QualityClassifier,
    balanced_training_set,
    clean_line,
    fasttext_available,
    make_classifier,
    training_lines,
)
from .extract import PARSER_VERSION, RewriteParse, extract_rewrite
from .mix import MAX_EPOCHS, mix_by_tokens
from .pipeline import (
    RewireConfig,
    RewireFilter,
    RewireResult,
    check_document,
    load_rewire,
    rewire_stages,
    rewrite_documents,
    run_rewire,
)
from .prompt import IMPROVED_END, IMPROVED_START, THINKING_END, THINKING_START, build_rewrite_prompt
from .select import rank_average, recycled_fraction, spearman, top_percent

__all__ = [
    "IMPROVED_END",
    "IMPROVED_START",
    "MAX_EPOCHS",
    "PARSER_VERSION",
    "THINKING_END",
    "THINKING_START",
    "FastTextClassifier",
    "HashedNgramClassifier",
    "QualityClassifier",
    "RewireConfig",
    "RewireFilter",
    "RewireResult",
    "RewriteParse",
    "balanced_training_set",
    "build_rewrite_prompt",
    "check_document",
    "clean_line",
    "extract_rewrite",
    "fasttext_available",
    "load_rewire",
    "make_classifier",
    "mix_by_tokens",
    "rank_average",
    "recycled_fraction",
    "rewire_stages",
    "rewrite_documents",
    "run_rewire",
    "spearman",
    "top_percent",
    "training_lines",
]
