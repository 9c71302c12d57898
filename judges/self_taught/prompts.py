"""Self-Taught Evaluator prompts: the worse-response prompt and its parser, and the judge prompt styles.

Paraphrases of facebookresearch/RAM ``projects/self_taught_evaluator`` (commit e6f051f; spec/loops.md §4.2), not
byte-exact copies, so the paper's numbers are not reproducible with them:

- :data:`WORSE_RESPONSE` (``worse_response.prompt``): given an instruction and a good answer, write a *modified
  instruction* close to the original, then a high-quality answer to it that is *not* a good answer to the
  original. :func:`parse_worse_response` splits the output on the two mandated markers and rejects outputs
  missing a part or whose modified instruction equals the original (never raises).
- judge styles (``judge_prompt_style``, recorded with every judgement): ``"eval_plan"`` (the training-time
  prompt: check errors, write a question-specific rubric, apply it, choose; ``[[A]]``/``[[B]]``), ``"pairv2"``
  (the MT-Bench pair-v2-style inference prompt of ``src/utils.py``) and ``"compact"`` (the sandbox's
  question / A / B layout a ~1M-parameter model can read, each candidate followed by its tag, spec/loops.md §4.8).

Every builder returns fresh message lists (RAM PR #17: a shared mutable template made "all outputs identical
after the first datapoint"); tests check two consecutive builds differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..templates import PAIRWISE_VARIABLES, JudgeTemplate

__all__ = [
    "JUDGE_STYLES",
    "WORSE_RESPONSE",
    "WorseResponse",
    "judge_template",
    "parse_worse_response",
    "worse_response_prompt",
]

WORSE_RESPONSE = (
    "Below is a conversation between a user and an AI assistant.\n\n"
    "[User Question]\n{input}\n\n"
    "[The Start of Assistant's Answer]\n{generation}\n[The End of Assistant's Answer]\n\n"
    "Your task has two parts. First, write a modified version of the user question: it must stay close to the "
    "original topic but ask for something different, so that a good answer to it is not a good answer to the "
    "original question. Second, write a high-quality answer to your modified question.\n"
    "Use exactly this format and nothing else:\n"
    "[User Question Modified]\n<the modified question>\n\n"
    "[The Start of Assistant's Answer to the modified instruction]\n<the answer>\n"
    "[The End of Assistant's Answer to the modified instruction]"
)
"""The worse-response prompt (structure of ``worse_response.prompt``); ``{input}``/``{generation}`` are filled."""

_MOD_HEADER = "[User Question Modified]"
_ANS_START = "[The Start of Assistant's Answer to the modified instruction]"
_ANS_END = "[The End of Assistant's Answer to the modified instruction]"


def worse_response_prompt(instruction: str, answer: str) -> list[dict[str, str]]:
    """A new one-message chat asking for a modified instruction and a good answer to it (bad for the original)."""
    return [{"role": "user", "content": WORSE_RESPONSE.replace("{input}", instruction)
             .replace("{generation}", answer)}]


@dataclass(frozen=True)
class WorseResponse:
    """A parsed worse-response output: the modified instruction ``x'`` and the answer ``y_l`` to it, or why not."""

    modified_instruction: str | None
    response: str | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def parse_worse_response(text: str, original: str) -> WorseResponse:
    """Split a worse-response output on its markers (§4.2); never raises.

    Invalid (``reason`` set) when the modified-instruction header or the answer's start marker is missing, a
    part is empty, or the modified instruction equals ``original`` (whitespace-normalised). A missing end
    marker is tolerated (generation stopped at max_tokens or at the marker as a stop string).
    """
    if not isinstance(text, str):
        return WorseResponse(None, None, f"expected text, got {type(text).__name__}")
    if _MOD_HEADER not in text:
        return WorseResponse(None, None, f"no {_MOD_HEADER!r} header")
    after = text.split(_MOD_HEADER, 1)[1]
    if _ANS_START not in after:
        return WorseResponse(None, None, "no start marker of the answer to the modified instruction")
    instr, rest = after.split(_ANS_START, 1)
    answer = rest.split(_ANS_END, 1)[0]
    instr, answer = instr.strip(), answer.strip()
    if not instr:
        return WorseResponse(None, None, "empty modified instruction")
    if not answer:
        return WorseResponse(None, None, "empty answer to the modified instruction")
    if " ".join(instr.split()) == " ".join(str(original).split()):
        return WorseResponse(None, None, "modified instruction equals the original")
    return WorseResponse(instr, answer)


# --------------------------------------------------------------------------------------------- judge prompts

_EVAL_PLAN_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. First check each response for obvious or subtle errors. Then write "
    "an evaluation plan: a short rubric of one to five criteria specific to this question. Then check each "
    "response against your rubric, and finally choose the better response. Do not let the order in which the "
    "responses were presented, their length, or the assistants' names influence you; be as objective as "
    "possible. After your explanation, output your final verdict strictly in this format: \"[[A]]\" if "
    "assistant A is better, \"[[B]]\" if assistant B is better."
)
_PAIRV2_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant that follows the user's instructions and "
    "answers the question better, considering helpfulness, relevance, accuracy, depth, creativity and level of "
    "detail. Compare the two responses and give a short explanation. Avoid position bias, do not let response "
    "length or assistant names influence you, and be as objective as possible. After your explanation, output "
    "your final verdict strictly in this format: \"[[A]]\" if assistant A is better, \"[[B]]\" if assistant B is "
    "better."
)
_BLOCKS = (
    "[User Question]\n{{ question }}\n\n"
    "[The Start of Assistant A's Answer]\n{{ response_a }}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{{ response_b }}\n[The End of Assistant B's Answer]"
)
_COMPACT = "{{ question }}\nA: {{ response_a }} [[A]]\nB: {{ response_b }} [[B]]\nWhich is right?"
"""The sandbox layout: each candidate is followed by its verdict tag, so a tiny model can answer by restating the
candidate it believes (copying its tokens, then the tag after them) -- see :mod:`.sandbox`."""

JUDGE_STYLES: dict[str, JudgeTemplate] = {
    "eval_plan": JudgeTemplate(_BLOCKS, system=_EVAL_PLAN_SYSTEM, template_id="ste_eval_plan/1",
                               variables=PAIRWISE_VARIABLES),
    "pairv2": JudgeTemplate(_BLOCKS, system=_PAIRV2_SYSTEM, template_id="ste_pairv2/1",
                            variables=PAIRWISE_VARIABLES),
    "compact": JudgeTemplate(_COMPACT, template_id="ste_compact/1", variables=PAIRWISE_VARIABLES),
}
"""Judge prompt styles by name (§4.2 ``judge_prompt_style``); render with ``question``, ``response_a``,
``response_b``."""


def judge_template(style: str) -> JudgeTemplate:
    """The :class:`~loopwright.judges.templates.JudgeTemplate` of a judge style; unknown names raise."""
    if style not in JUDGE_STYLES:
        raise ValueError(f"judge_prompt_style={style!r}; use one of {sorted(JUDGE_STYLES)}")
    return JUDGE_STYLES[style]


_WS = re.compile(r"\s+")
