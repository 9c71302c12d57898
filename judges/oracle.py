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
- ``check_steps=True`` also requires every ``<<a op b=c>>`` annotation to be correct arithmetic, and the
  expression written before it and the number after it to be the annotation's own: a right final
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

__all__ = ["GoldAnswerJudge", "GoldStepJudge", "annotation_results", "arithmetic_ok", "question_of"]

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
        if _eval_simple(expr) != c or not _visible_matches(response, start, end, c):
            return False
        seen += 1
    return seen > 0


def _eval_simple(expr: str) -> int | None:
    """The value of ``a op b`` (integers, op in + - * /, exact division), else None."""
    if not expr:
        return None
    for op in "+*/-":
        left, found, right = expr[1:].partition(op)  # skip a leading minus sign
        if found:
            a, b = _int(expr[0] + left), _int(right)
            break
    else:
        return None
    if a is None or b is None:
        return None
    return {"+": a + b, "-": a - b, "*": a * b}.get(op) if op != "/" else (a // b if b and a % b == 0 else None)


_EXPR_CHARS = frozenset("0123456789+-*/ ,")


def _visible_matches(text: str, start: int, end: int, value: int) -> bool:
    """In ``a op b=<<a op b=c>>c`` the written expression before the annotation and the number after it must
    have the annotation's value: ``9-9=<<9-8=1>>1`` is a copying error whose annotation happens to be right.
    Only what can be read is checked: a written ``a op b`` of two integers (``2*250`` for ``<<250*2=500>>`` is
    fine) and a written integer right after ``>>`` (thousands commas allowed); anything else passes, so GSM8K's
    ``$``, decimals and multi-operator prose keep their old verdicts. Bounded scans: the check stays linear."""
    before = text[max(0, start - 64):start].rstrip()
    if before.endswith("="):
        head = before[:-1].rstrip()
        i = len(head)
        while i > 0 and head[i - 1] in _EXPR_CHARS:
            i -= 1
        written = head[i:].rsplit(", ", 1)[-1]  # "eaten 10, 100 - 10 =": a comma and space separate
        shown = _eval_simple(written.replace(" ", "").replace(",", "").lstrip("+*/,"))
        if shown is not None and shown != value:
            return False
    j = end + 2
    k = j + (j < len(text) and text[j] == "-")
    while k < len(text) and k - j < 24 and (text[k].isdigit() or (text[k] == "," and k + 1 < len(text)
                                                                    and text[k + 1].isdigit())):
        k += 1
    after = _int(text[j:k].replace(",", ""))
    return after is None or after == value


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


def annotation_results(text: str) -> list[int | None]:
    """The results ``c`` of the ``<<a op b=c>>`` annotations in ``text``, in order (``None`` where ``c`` is not an
    integer; an annotation left open at the end is not counted). Linear time (``str.find`` scans)."""
    out: list[int | None] = []
    pos = 0
    text = text[:MAX_CHECKED_CHARS]
    while (start := text.find("<<", pos)) != -1:
        end = text.find(">>", start + 2)
        if end == -1:
            break
        _, sep, result = text[start + 2:end].partition("=")
        out.append(_int(result) if sep else None)
        pos = end + 2
    return out


class GoldStepJudge(Judge):
    """A process oracle: scores a (partial) solution 1 when every step so far is on the gold solution's path,
    else 0 -- the oracle step scorer for step-level search (PathFinder ``score="judge"``) and the upper bound of a
    process reward model.

    A step is on the path when its annotation ``<<a op b=c>>`` has correct arithmetic, the written expression and
    number around it agree with it (:func:`arithmetic_ok`'s checks), and its result ``c`` equals the gold
    solution's result at the same position. A ``#### N`` answer, once written, must be the gold answer.
    ``problems``: MiniArith or GSM8K problems with a solution carrying annotations (``.cot``, or GSM8K's
    ``.answer`` text) and a gold answer (``.answer`` / ``.gold``).
    """

    kinds: ClassVar[frozenset[str]] = frozenset({"pointwise"})
    name = "gold_steps"

    def __init__(self, problems: Iterable[Any], *, tol: float = 1e-6) -> None:
        self.steps: dict[str, list[int | None]] = {}
        self.gold: dict[str, str] = {}
        for item in problems:
            q, a = _gold_of(item)
            solution = getattr(item, "cot", None) or (getattr(item, "answer", "") if hasattr(item, "gold") else "")
            results = annotation_results(str(solution))
            if not results:
                raise ValueError(f"GoldStepJudge needs gold solutions with <<a op b=c>> annotations: {q[:80]!r}")
            self.steps[q], self.gold[q] = results, a
        if not self.steps:
            raise ValueError("GoldStepJudge needs at least one problem")
        self.tol = tol
        self.provenance = JudgeProvenance(model="oracle:gold_steps", parser_version=PARSER_VERSION,
                                          template_hash=stable_hash({"n": len(self.steps)})[:12])

    def on_path(self, prompt: Prompt, response: str) -> bool | None:
        """Whether ``response`` (a partial or whole solution) stays on the gold path; ``None``: no gold."""
        q = question_of(prompt)
        gold = self.steps.get(q)
        if gold is None:
            return None
        results = annotation_results(response)
        if len(results) > len(gold) or results != gold[:len(results)]:
            return False
        if results and not arithmetic_ok(response):
            return False
        if "####" in response and not is_correct(extract_model_answer(response), self.gold[q], self.tol):
            return False
        return True

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        out: list[Verdict] = []
        for prompt, response in zip(prompts, responses, strict=True):
            ok = self.on_path(prompt, response)
            if ok is None:
                out.append(Verdict(kind="pointwise", valid=False, raw="", judge=self.provenance,
                                   invalid_reason=f"no gold solution for this prompt: {question_of(prompt)[:80]!r}"))
                continue
            out.append(Verdict(kind="pointwise", score=float(ok), valid=True, judge=self.provenance,
                               raw=f"{float(ok):g}", reasoning="on the gold path" if ok else "off the gold path"))
        return out
