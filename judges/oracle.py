"""The oracle judge: the gold answer checker of a verifiable task (MiniArith, GSM8K) behind the Judge interface.

Why: before reading a self-judged loop, show that the loop's training stack improves its target when the
judging signal is perfect (docs/architecture.md, "Oracle first"; issue "Loops that measurably work"). Swapping a
loop's LLM judge or reward model for :class:`GoldAnswerJudge` gives that oracle-signal run with the loop's own
code: Meta-Rewarding's actor scoring, RIP's rewards, PathFinder's verifier, rejection-sampling SFT's filter.

- pointwise ``score``: ``correct_score`` (1.0) when the response's final answer (``extract_model_answer``: the
  number after the last ``####``, else the last number) equals the gold answer, else ``wrong_score`` (0.0). A
  response with no number is *wrong*, a valid verdict: the checker is certain about it.
- pairwise ``compare``: A when only A is correct, B when only B is, tie when both or neither are; ``p_a`` is 1 /
  0 / 0.5. Order cannot matter to a checker, so the swap record is consistent by construction.
- ``check_steps=True`` also requires every ``<<a op b=c>>`` annotation to be correct arithmetic: a right final
  answer reached through wrong steps (a lucky guess, common for a weak model) is then wrong. STaR's known failure
  mode is training on such false positives; on the sandbox they were a third of the answer-correct samples.
- A prompt the judge has no gold answer for is an *invalid* verdict ("no gold answer for this prompt"), never a
  guessed score: it means the loop is judging prompts outside the oracle's problem set.

Gold answers are looked up by the question text (the last user message of a chat prompt, or the string prompt).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ..sdk.judge import Judge
from ..sdk.tasks.gsm8k import extract_model_answer, is_correct
from ..sdk.types import JudgeProvenance, Prompt, SwapRecord, Verdict, stable_hash
from .adapters.trl import RewardFuncMixin

__all__ = ["GoldAnswerJudge", "arithmetic_ok", "question_of"]

PARSER_VERSION = "gold_answer/1"


def question_of(prompt: Prompt) -> str:
    """The question a prompt asks: the string itself, or the content of its last user message."""
    if isinstance(prompt, str):
        return prompt.strip()
    users = [m.get("content", "") for m in prompt if m.get("role") == "user"]
    return str(users[-1] if users else "").strip()


MAX_CHECKED_CHARS = 20_000
"""Responses longer than this fail ``check_steps`` (a MiniArith solution is a few hundred characters)."""


def _int(text: str) -> int | None:
    t = text.strip()
    body = t[1:] if t.startswith("-") else t
    if not body.isascii() or not body.isdigit() or len(body) > 18:
        return None
    return int(t)


def arithmetic_ok(response: str) -> bool:
    """Whether every ``<<a op b=c>>`` annotation of a GSM8K-style solution is correct integer arithmetic.

    Linear time (``str.find`` scans, no regex); at least one annotation is required. ``/`` must divide exactly.
    """
    if len(response) > MAX_CHECKED_CHARS:
        return False
    pos, seen = 0, 0
    while (start := response.find("<<", pos)) != -1:
        end = response.find(">>", start + 2)
        if end == -1:
            return False
        expr, sep, result = response[start + 2:end].partition("=")
        pos = end + 2
        c = _int(result) if sep else None
        if c is None:
            return False
        for op in "+*/-":
            left, found, right = expr[1:].partition(op)  # skip a leading minus sign
            if found:
                a, b = _int(expr[0] + left), _int(right)
                break
        else:
            return False
        if a is None or b is None:
            return False
        value = {"+": a + b, "-": a - b, "*": a * b}.get(op) if op != "/" else (a // b if b and a % b == 0 else None)
        if value != c:
            return False
        seen += 1
    return seen > 0


def _gold_of(item: Any) -> tuple[str, str]:
    if isinstance(item, tuple) and len(item) == 2:
        return str(item[0]).strip(), str(item[1])
    question = getattr(item, "question", None)
    gold = getattr(item, "answer", None)
    if hasattr(item, "gold"):  # GSM8KProblem: "answer" holds the whole solution, "gold" the number
        gold = item.gold
    if question is None or gold is None:
        raise TypeError(f"GoldAnswerJudge needs problems with .question and .answer/.gold, or (question, answer) "
                        f"pairs; got {type(item).__name__}")
    return str(question).strip(), str(gold)


class GoldAnswerJudge(RewardFuncMixin, Judge):
    """Scores answers against gold answers: the oracle signal for loops on verifiable tasks.

    ``problems``: MiniArith / GSM8K problems (``.question`` + ``.answer`` / ``.gold``), ``(question, answer)``
    pairs, or a ``{question: answer}`` mapping.
    """

    kinds: ClassVar[frozenset[str]] = frozenset({"pointwise", "pairwise"})
    name = "gold_answer"

    def __init__(self, problems: Iterable[Any] | Mapping[str, Any], *, correct_score: float = 1.0,
                 wrong_score: float = 0.0, tol: float = 1e-6, check_steps: bool = False) -> None:
        items = problems.items() if isinstance(problems, Mapping) else problems
        self.gold: dict[str, str] = {}
        for item in items:
            q, a = _gold_of(item)
            if self.gold.get(q, a) != a:
                raise ValueError(f"two different gold answers for one question: {q[:80]!r}")
            self.gold[q] = a
        if not self.gold:
            raise ValueError("GoldAnswerJudge needs at least one problem with a gold answer")
        if correct_score <= wrong_score:
            raise ValueError(f"correct_score ({correct_score}) must exceed wrong_score ({wrong_score})")
        self.correct_score, self.wrong_score, self.tol = correct_score, wrong_score, tol
        self.check_steps = check_steps
        self.provenance = JudgeProvenance(
            model="oracle:gold_answer", parser_version=PARSER_VERSION,
            template_hash=stable_hash({"n": len(self.gold), "scores": [correct_score, wrong_score],
                                       "steps": check_steps})[:12])

    def check(self, prompt: Prompt, response: str) -> bool | None:
        """``True`` / ``False`` when the prompt has a gold answer, ``None`` when it does not."""
        gold = self.gold.get(question_of(prompt))
        if gold is None:
            return None
        if not is_correct(extract_model_answer(response), gold, self.tol):
            return False
        return not self.check_steps or arithmetic_ok(response)

    def _missing(self, kind: str, prompt: Prompt) -> Verdict:
        return Verdict(kind=kind, valid=False, raw="", judge=self.provenance,
                       invalid_reason=f"no gold answer for this prompt: {question_of(prompt)[:80]!r}")

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        out: list[Verdict] = []
        for prompt, response in zip(prompts, responses, strict=True):
            ok = self.check(prompt, response)
            if ok is None:
                out.append(self._missing("pointwise", prompt))
                continue
            pred = extract_model_answer(response)
            value = self.correct_score if ok else self.wrong_score
            out.append(Verdict(kind="pointwise", score=value, valid=True, judge=self.provenance, raw=f"{value:g}",
                               reasoning=f"answer {pred!r}, gold {self.gold[question_of(prompt)]!r}"))
        return out

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[Verdict]:
        out: list[Verdict] = []
        for prompt, a, b in zip(prompts, responses_a, responses_b, strict=True):
            ok_a, ok_b = self.check(prompt, a), self.check(prompt, b)
            if ok_a is None or ok_b is None:
                out.append(self._missing("pairwise", prompt))
                continue
            pref = "A" if ok_a and not ok_b else "B" if ok_b and not ok_a else "tie"
            p_a = {"A": 1.0, "B": 0.0, "tie": 0.5}[pref]
            out.append(Verdict(kind="pairwise", preference=pref, p_a=p_a, valid=True, judge=self.provenance,
                               raw=pref, reasoning=f"A correct: {ok_a}, B correct: {ok_b}",
                               swap=SwapRecord(forward=pref, reverse=pref, consistent=True)))
        return out
