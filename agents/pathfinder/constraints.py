"""Step quality constraints for PathFinder (spec/loops.md §2.3): length, repetition, contradiction.

Each check takes one new step and the path it would extend and returns ``None`` (keep) or a reason string
``"<constraint>:<detail>"`` (drop); the search counts the reasons per constraint. All thresholds are [R].

Contradiction is symbolic where the text allows it: GSM8K-style ``<<expr=result>>`` annotations are evaluated
exactly with ``tools.calculator`` (a whitelisted AST walk, never ``eval``). :func:`arithmetic_verifier` reuses the
same parsing as a label-free verifier (fraction of annotations that hold) for candidate selection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction

from ...tools.calculator import CalculatorError, calculate
from .config import ConstraintsConfig

__all__ = [
    "Annotation",
    "arithmetic_verifier",
    "check_step",
    "jaccard",
    "ngrams",
    "normalize_step",
    "parse_annotations",
    "rouge_l",
    "word_tokens",
]

NLIFn = Callable[[str, str], float]
"""``nli(premise, hypothesis) -> P(contradiction)`` in [0, 1]."""

_TOKENS = re.compile(r"\w+|[^\w\s]+")
_SPACES = re.compile(r"\s+")
_ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]*)>>\s*\$?(-?[\d,]*\.?\d+)?")
_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def normalize_step(text: str) -> str:
    """Lower-case, whitespace collapsed, surrounding punctuation/space stripped: the key for exact repeats."""
    return _SPACES.sub(" ", text.lower()).strip(" \t.,;:")


def word_tokens(text: str) -> list[str]:
    """Words and runs of symbols (``"11+8=<<"`` -> ``["11", "+", "8", "=<<"]``), lower-cased."""
    return _TOKENS.findall(text.lower())


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F-measure (longest common subsequence) of two token lists; 1.0 for two empty lists."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def jaccard(a: Sequence[object], b: Sequence[object]) -> float:
    """Jaccard similarity of the two token *sets*; 1.0 for two empty inputs."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Contiguous n-grams (the whole sequence as one gram when it is shorter than ``n``)."""
    if len(tokens) < n:
        return [tuple(tokens)] if tokens else []
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# --------------------------------------------------------------------------------------------- arithmetic


class Annotation:
    """One ``<<expr=result>>visible`` annotation: the expression, the annotated and the visible result."""

    __slots__ = ("expr", "result", "visible")

    def __init__(self, expr: str, result: str, visible: str | None) -> None:
        self.expr, self.result, self.visible = expr.strip(), result.strip(), visible

    def key(self) -> str:
        return self.expr.replace(" ", "")

    def __repr__(self) -> str:
        return f"Annotation({self.expr!r}={self.result!r}, visible={self.visible!r})"


def parse_annotations(text: str) -> list[Annotation]:
    """Every ``<<expr=result>>`` annotation in ``text`` with the number written right after it (if any)."""
    return [Annotation(m.group(1), m.group(2), m.group(3)) for m in _ANNOTATION.finditer(text)]


def _number(text: str | None) -> Fraction | None:
    if not text:
        return None
    m = _NUMBER.search(text.replace("$", ""))
    if m is None:
        return None
    try:
        return Fraction(m.group(0).replace(",", "").rstrip("."))
    except (ValueError, ZeroDivisionError):
        return None


def _value(expr: str) -> Fraction | None:
    """Exact value of an annotation's expression, or ``None`` when the calculator cannot read it."""
    try:
        return calculate(expr.replace(",", "").replace("x", "*").replace("×", "*").replace("÷", "/"))
    except (CalculatorError, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _false_annotation(a: Annotation) -> str | None:
    claimed = _number(a.result)
    if claimed is None:
        return None
    value = _value(a.expr)
    if value is not None and value != claimed:
        return f"false_equation ({a.expr}={a.result}, is {float(value):g})"
    visible = _number(a.visible)
    if visible is not None and visible != claimed:
        return f"result_mismatch (<<{a.expr}={a.result}>>{a.visible})"
    return None


def arithmetic_verifier(question: str, chain: str) -> float | None:
    """Label-free verifier: the fraction of ``<<expr=result>>`` annotations in ``chain`` that hold exactly
    (and whose visible result matches). ``None`` when the chain has no checkable annotation."""
    del question  # the check needs only the chain; the argument keeps the verifier(question, chain) contract
    checked = ok = 0
    for a in parse_annotations(chain):
        if _number(a.result) is None or _value(a.expr) is None:
            continue
        checked += 1
        ok += _false_annotation(a) is None
    return None if checked == 0 else ok / checked


# --------------------------------------------------------------------------------------------- the check


def check_step(
    step: str,
    prior_steps: Sequence[str],
    question: str,
    config: ConstraintsConfig,
    *,
    n_tokens: int,
    truncated: bool,
    max_step_tokens: int,
    nli: NLIFn | None = None,
) -> str | None:
    """The first constraint ``step`` violates as ``"<constraint>:<detail>"``, or ``None`` to keep it.

    Args:
        step: the new step's text (without the delimiter); ``prior_steps`` the path it extends.
        n_tokens: its token count (from the backend); ``truncated``: it hit the token limit without a delimiter.
        max_step_tokens: the search's step limit (used when ``config.length.max_step_tokens`` is ``None``).
        nli: ``nli(premise, hypothesis) -> P(contradiction)``, required when ``checker == "nli"``.
    """
    if not config.enabled:
        return None
    length = config.length
    if length.enabled:
        if not step.strip():
            return "length:empty"
        if truncated:
            return "length:truncated"
        limit = length.max_step_tokens or max_step_tokens
        if n_tokens > limit:
            return f"length:too_long ({n_tokens} > {limit} tokens)"
    rep = config.repetition
    if rep.enabled and step.strip():
        norm = normalize_step(step)
        toks = word_tokens(step)
        for k, prev in enumerate(prior_steps):
            if normalize_step(prev) == norm:
                return f"repetition:step (equals step {k + 1})"
            if rep.metric != "exact":
                sim = rouge_l(toks, word_tokens(prev)) if rep.metric == "rougeL" else jaccard(toks, word_tokens(prev))
                if sim >= rep.tau:
                    return f"repetition:step ({rep.metric}={sim:.2f} with step {k + 1})"
        if rep.check_question:
            q_norm = normalize_step(question)
            sentences = {normalize_step(s) for s in _SENTENCE.split(question) if s.strip()}
            if norm == q_norm or norm in sentences:
                return "repetition:question"
    con = config.contradiction
    if con.enabled:
        if con.checker == "symbolic":
            earlier: dict[str, Fraction] = {}
            for prev in prior_steps:
                for a in parse_annotations(prev):
                    v = _number(a.result)
                    if v is not None:
                        earlier.setdefault(a.key(), v)
            for a in parse_annotations(step):
                if not con.allow_false_equations:
                    bad = _false_annotation(a)
                    if bad is not None:
                        return f"contradiction:{bad}"
                v = _number(a.result)
                if v is not None and a.key() in earlier and earlier[a.key()] != v:
                    return f"contradiction:inconsistent ({a.expr} was {float(earlier[a.key()]):g})"
        else:
            if nli is None:
                raise ValueError("contradiction.checker='nli' needs PathFinder(nli=fn) with fn(premise, hyp) -> prob")
            premise = " ".join([question, *prior_steps])
            p = float(nli(premise, step))
            if p >= con.tau:
                return f"contradiction:nli (p={p:.2f} >= {con.tau})"
    return None
