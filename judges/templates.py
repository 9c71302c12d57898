"""Judge prompt templates: jinja2 ``SandboxedEnvironment`` + ``StrictUndefined`` (spec/ecosystem.md §5).

A :class:`JudgeTemplate` is a user message (and an optional system message) with a ``template_id`` and a
``template_hash`` (``stable_hash`` of its source), both recorded in every Verdict's provenance. Variables:

- pointwise: ``question``, ``response``;
- pairwise: ``question``, ``response_a``, ``response_b``;
- meta-judge: ``question``, ``response``, ``judgement_a``, ``judgement_b``.

A template that names any other variable is rejected when it is built (StrictUndefined would fail at render
time, in the middle of a batch). Rendering returns a fresh list of message dicts on every call (STE's
shared-mutable-template bug, RAM PR #17: "after the first datapoint all outputs were identical").

The defaults paraphrase the published prompts (spec/loops.md §3.2, §4.2); they are not byte-exact copies, so
numbers from the papers are not reproducible with them. Pass your own template string to change wording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

from loopwright.sdk.types import Prompt, normalize_prompt, stable_hash

__all__ = [
    "ADDITIVE_5POINT",
    "META_JUDGE",
    "META_JUDGE_VARIABLES",
    "PAIRWISE_VERDICT",
    "POINTWISE_VARIABLES",
    "PAIRWISE_VARIABLES",
    "JudgeTemplate",
    "as_template",
    "prompt_text",
]

POINTWISE_VARIABLES = frozenset({"question", "response"})
PAIRWISE_VARIABLES = frozenset({"question", "response_a", "response_b"})

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt: jinja2 ``user`` text, optional ``system`` text, an id and a content hash.

    Args:
        user: the user message template.
        system: an optional system message template.
        template_id: a readable name recorded in provenance (default ``"custom"``).
        variables: the variables the template must use, and the only ones it may use (the judge sets it).
    """

    user: str
    system: str | None = None
    template_id: str = "custom"
    variables: frozenset[str] = field(default=POINTWISE_VARIABLES)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user.strip():
            raise ValueError(f"a judge template needs a non-empty user message, got {self.user!r:.80}")
        used: set[str] = set()
        for part in (self.system, self.user):
            if part is not None:
                used |= meta.find_undeclared_variables(_ENV.parse(part))
        unknown = used - self.variables
        if unknown:
            raise ValueError(
                f"template {self.template_id!r} uses unknown variable(s) {sorted(unknown)}; "
                f"available: {sorted(self.variables)}"
            )
        missing = self.variables - used
        if missing:
            raise ValueError(
                f"template {self.template_id!r} never uses {sorted(missing)}; a judge template must show the "
                f"judge every input ({sorted(self.variables)}), e.g. {{{{ {sorted(missing)[0]} }}}}"
            )

    @cached_property
    def template_hash(self) -> str:
        """``stable_hash`` of the source (system + user text); changes whenever the wording changes."""
        return stable_hash({"system": self.system, "user": self.user})

    @cached_property
    def _compiled(self) -> tuple[Any, Any]:
        return (_ENV.from_string(self.system) if self.system is not None else None, _ENV.from_string(self.user))

    def render(self, **values: str) -> list[dict[str, str]]:
        """A new chat message list with the values filled in (values are inserted as plain text)."""
        system_t, user_t = self._compiled
        messages: list[dict[str, str]] = []
        if system_t is not None:
            messages.append({"role": "system", "content": system_t.render(**values)})
        messages.append({"role": "user", "content": user_t.render(**values)})
        return messages


def as_template(template: str | JudgeTemplate | None, default: JudgeTemplate,
                variables: frozenset[str]) -> JudgeTemplate:
    """``None`` -> ``default``; a string -> a custom user-message template; a JudgeTemplate -> checked as is."""
    if template is None:
        return default
    if isinstance(template, JudgeTemplate):
        if template.variables != variables:
            return JudgeTemplate(template.user, template.system, template.template_id, variables)
        return template
    if isinstance(template, str):
        return JudgeTemplate(template, template_id="custom", variables=variables)
    raise TypeError(f"template must be a jinja2 string or a JudgeTemplate, got {type(template).__name__}")


def prompt_text(prompt: Prompt) -> str:
    """The question a judge sees: a string as is, a single user message's content, else ``Role: content`` lines."""
    p = normalize_prompt(prompt)
    if isinstance(p, str):
        return p
    if len(p) == 1 and p[0]["role"] == "user":
        return p[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in p)


# --------------------------------------------------------------------------------------------- defaults

ADDITIVE_5POINT = JudgeTemplate(
    template_id="additive_5point/1",
    variables=POINTWISE_VARIABLES,
    user=(
        "Evaluate the response to the user's question below with an additive 5-point scoring system. "
        "Start from 0 and add points as follows:\n"
        "- Add 1 point if the response is relevant and gives some information related to the question, "
        "even if it is incomplete or contains some irrelevant content.\n"
        "- Add a 2nd point if it covers a substantial part of the question but does not fully resolve it "
        "or give a direct answer.\n"
        "- Add a 3rd point if it usefully answers the essential parts of the question, in the way an "
        "assistant would, even if it is not complete or not the most helpful possible answer.\n"
        "- Add a 4th point if it is written clearly from an AI assistant's perspective, addresses the "
        "question directly and comprehensively, and is well organised, with only slight room for "
        "improvement in clarity, focus or concision.\n"
        "- Add a 5th point if it is precisely tailored to the question without superfluous content, shows "
        "expert knowledge, and is engaging and insightful.\n\n"
        "<question>{{ question }}</question>\n\n"
        "<response>{{ response }}</response>\n\n"
        "After reading both, explain your total in at most 100 words. "
        "Then finish with a last line of the form \"Score: <points>\"."
    ),
)
"""Pointwise default: the additive 5-point rubric of Self-Rewarding / Meta-Rewarding (spec/loops.md §3.2),
paraphrased. Parsed with :func:`~loopwright.judges.parsers.parse_score` on [0, 5]."""

PAIRWISE_VERDICT = JudgeTemplate(
    template_id="pairwise_verdict/1",
    variables=PAIRWISE_VARIABLES,
    system=(
        "You are an impartial judge comparing two AI assistants' answers to the same user question. "
        "Decide which answer follows the user's instruction and answers the question better, considering "
        "helpfulness, relevance, accuracy, depth and level of detail. Do not let the order in which the "
        "answers are shown, their length, or the assistants' names influence you. First compare the two "
        "answers briefly, then give your final verdict on its own line in exactly this format: "
        "[[A]] if assistant A is better, [[B]] if assistant B is better, [[C]] for a tie."
    ),
    user=(
        "[User Question]\n{{ question }}\n\n"
        "[The Start of Assistant A's Answer]\n{{ response_a }}\n[The End of Assistant A's Answer]\n\n"
        "[The Start of Assistant B's Answer]\n{{ response_b }}\n[The End of Assistant B's Answer]"
    ),
)
"""Pairwise default: an MT-Bench "pair-v2"-style judge (spec/loops.md §4.2; STE's inference prompt family),
paraphrased, with ``[[C]]`` for a tie. Parsed with :func:`~loopwright.judges.parsers.parse_pairwise`."""

META_JUDGE_VARIABLES = frozenset({"question", "response", "judgement_a", "judgement_b"})

META_JUDGE = JudgeTemplate(
    template_id="meta_judge/1",
    variables=META_JUDGE_VARIABLES,
    user=(
        "Below are a user's question, a response to it, and two judgements of that response. Both judges "
        "were asked to score the response with this additive 5-point rubric:\n"
        + ADDITIVE_5POINT.user.split("\n\n<question>", 1)[0].split(":\n", 1)[1]
        + "\n\nDecide which judgement applies the rubric more accurately: check that its points follow the "
        "rubric, that its claims about the response are correct, and that its reasoning is consistent with "
        "its score. Do not prefer a judgement for its position or its length.\n\n"
        "<question>{{ question }}</question>\n\n"
        "<response>{{ response }}</response>\n\n"
        "<judgement_a>{{ judgement_a }}</judgement_a>\n\n"
        "<judgement_b>{{ judgement_b }}</judgement_b>\n\n"
        "Explain briefly which judgement is more accurate, then finish with a last line "
        "\"Winner: Judgement X\", where X is A or B."
    ),
)
"""Meta-judge (Meta-Rewarding, spec/loops.md §3.4), paraphrased: compares two judgements of one response under the
same rubric (restated inside the prompt). Parsed with :func:`~loopwright.judges.parsers.parse_meta_winner`. Like the
other defaults, the prompt itself contains no parseable verdict ("Winner: Judgement X"), so a model that echoes its
instructions gets an invalid verdict, not a winner (prometheus-eval#58: a regex matched its own template)."""
