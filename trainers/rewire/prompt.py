"""The REWIRE guided-rewrite prompt (Nguyen et al., arXiv 2506.04689; spec/loops.md §6.2, structure paraphrased).

One user turn. The web document is framed as a *draft an assistant wrote while trying to accomplish a task*; the
model first reasons about that task as the most skilled expert (meta-reasoning guided by generic questions), then
writes an improved response that keeps the draft's useful details, is not shorter, is better organised and
reasoned, and drops noise. Output contract (marker strings from spec A.6 [V format]): thinking between
``<thinking starts>`` / ``<thinking ends>``, the rewrite between ``<improved response starts>`` /
``<improved response ends>``. The draft is appended once, after ``Original Draft:``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "IMPROVED_END",
    "IMPROVED_START",
    "REWRITE_TEMPLATE",
    "THINKING_END",
    "THINKING_START",
    "build_rewrite_prompt",
]

THINKING_START = "<thinking starts>"
THINKING_END = "<thinking ends>"
IMPROVED_START = "<improved response starts>"
IMPROVED_END = "<improved response ends>"

REWRITE_TEMPLATE = f"""Below is a draft that an AI assistant wrote while trying to complete a task for a user. \
The draft may be noisy, disorganised, incomplete or padded with irrelevant text.

First, work out what task the draft is trying to accomplish and which problem or problems it is trying to solve. \
Then act as the most skilled expert for that task and write out your detailed thinking: the monologue you would \
use to choose a strategy and plan the answer, with self-reflection. Questions that may guide you:
- What is the core problem, and what assumptions does it rest on?
- How can it be decomposed or simplified?
- What do typical solutions look like, and what alternatives exist if the current one is wrong?
- How would you modify the best current solution to make it better?
- Am I on the right track? What is my step-by-step plan?

Then write an improved response. It must reuse the useful details of the draft, must not be shorter than the \
draft, must read better (clear structure and formatting) and reason more deeply and coherently, and must drop \
noise, boilerplate and digressions. Do not write in the same expert voice for every task.

Start immediately, with no preamble. Put your thinking between {THINKING_START} and {THINKING_END}, and the \
improved response between {IMPROVED_START} and {IMPROVED_END}.

Original Draft:
{{document}}"""
"""The rewrite instruction; ``{document}`` is replaced once, at the end."""


def build_rewrite_prompt(document: str, max_chars: int | None = None) -> list[dict[str, Any]]:
    """The single-user-turn chat prompt for one document.

    Raises ``TypeError`` for a non-string document and ``ValueError`` for an empty one or one longer than
    ``max_chars`` (the pipeline turns both into rejected rows with that reason instead of calling this).
    """
    if not isinstance(document, str):
        raise TypeError(f"a document must be a string, got {type(document).__name__}")
    if not document.strip():
        raise ValueError("the document is empty")
    if max_chars is not None and len(document) > max_chars:
        raise ValueError(f"the document has {len(document)} characters > max_chars={max_chars}")
    return [{"role": "user", "content": REWRITE_TEMPLATE.replace("{document}", document.strip())}]
