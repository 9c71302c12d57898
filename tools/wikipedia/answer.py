"""The Wiki-QA answer-extraction step (Gao et al. 2024, loops.md §1.3): a Generator reads retrieved paragraphs
and emits a short answer, or ``None`` when it says the paragraphs do not contain one.

The prompt is a short instruction + numbered paragraphs + question, ending in ``Answer:``; greedy decoding with
``max_tokens=32`` (a short answer; the paper's answer model emits entity-length strings). The reply's first line is
taken, a leading ``Answer:`` and trailing period/quotes are stripped; ``unknown``/empty → ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...sdk.generator import Generator
from ...sdk.types import SamplingParams

__all__ = ["ANSWER_PROMPT", "build_answer_prompt", "extract_answer", "parse_answer"]

ANSWER_PROMPT = (
    "Answer the question using only the paragraphs below. Reply with a short answer (a few words, no sentence), "
    "or with 'unknown' if the paragraphs do not contain it.\n\n{paragraphs}\n\nQuestion: {question}\nAnswer:"
)
_UNKNOWN = {"", "unknown", "none", "n/a", "no answer", "i don't know"}


def build_answer_prompt(question: str, paragraphs: Sequence[Mapping[str, Any] | str]) -> str:
    lines = []
    for i, p in enumerate(paragraphs, 1):
        if isinstance(p, Mapping):
            lines.append(f"[{i}] {p.get('title', '')}: {p.get('text', '')}")
        else:
            lines.append(f"[{i}] {p}")
    return ANSWER_PROMPT.format(paragraphs="\n".join(lines) or "(no paragraphs)", question=question.strip())


def parse_answer(text: str) -> str | None:
    """First non-empty line, without an ``Answer:`` prefix or trailing punctuation; ``None`` for 'unknown'."""
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    if line.lower().startswith("answer:"):
        line = line[len("answer:"):].strip()
    line = line.strip(" \"'`").rstrip(".").strip()
    return None if line.lower() in _UNKNOWN else line


def extract_answer(generator: Generator, question: str, paragraphs: Sequence[Mapping[str, Any] | str],
                   params: SamplingParams | None = None) -> str | None:
    """Ask ``generator`` for the short answer to ``question`` given retrieved ``paragraphs``."""
    params = params or SamplingParams(temperature=0.0, max_tokens=32, n=1)
    [[completion, *_]] = generator.generate([build_answer_prompt(question, paragraphs)], params)
    return parse_answer(completion.text)
