"""MiniArith: seeded multi-step arithmetic word problems with gold programs, CoT, CoA chains and answers.

The synthetic verifiable task every CPU demo uses (spec/loops.md §0.4). Each problem carries

- ``program``: the gold steps ``[(op, a, b, var, result)]``; ``a``/``b`` are integers copied from the question or
  earlier results named ``y1, y2, ...``;
- ``cot``: a GSM8K-style solution, one line per step with ``<<expr=result>>`` annotations, last line ``#### N``
  (kept terse, ``12+7=<<12+7=19>>19``, so that a 1M-parameter model learns it in CPU minutes);
- ``coa_chain``: the Chain-of-Abstraction form (spec/loops.md §1.2), e.g.
  ``Tom has [12 + 7 = y1] pens. Tom has [y1 * 3 = y2] pens.``;
- ``answer``: the final integer.

Knobs: steps, number range (in distribution 1–99 and 1–3 steps; out of distribution 100–9999 and 4–6 steps;
multipliers/divisors come from a separate small range ``2..max_factor``, as in "3 times as many"),
distractor sentences, and the corruptions RIP/REWIRE filter on (missing number, contradictory numbers, truncated
question, boilerplate spam, shuffled sentences). Every intermediate and final result is a positive integer
(subtraction stays above zero, division only when exact, products capped by ``max_result``).

Problem ``i`` depends only on ``(seed, i)`` (not on ``n``), and the distractors and the corruption draw from their
own streams, so the same problem with and without a corruption differs only by that corruption.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Op = Literal["+", "-", "*", "/"]
Corruption = Literal[
    "missing_number", "contradictory_numbers", "truncated_question", "boilerplate_spam", "shuffled_sentences"
]
CORRUPTIONS: tuple[str, ...] = (
    "missing_number",
    "contradictory_numbers",
    "truncated_question",
    "boilerplate_spam",
    "shuffled_sentences",
)
BOILERPLATE = "Click here to subscribe for more great deals!"
GENERATOR_VERSION = "1"


class MiniArithConfig(BaseModel):
    """Knobs of the generator. Defaults = the in-distribution (ID) preset of spec/loops.md §0.4."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_steps: int = Field(1, ge=1, le=12)
    max_steps: int = Field(3, ge=1, le=12)
    min_number: int = Field(1, ge=1)
    max_number: int = Field(99, ge=1)
    max_factor: int = Field(9, ge=2, le=10_000)
    """Largest multiplier / divisor (``*``/``/`` operands come from ``[2, max_factor]``: "3 times as many")."""
    max_result: int = Field(999, ge=1)
    """Cap on every intermediate and final result (keeps products small enough for tiny models in ID)."""
    distractors: int = Field(0, ge=0, le=10)
    """Number of irrelevant sentences (with numbers) inserted into the story."""
    corruption: Corruption | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> MiniArithConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps={self.min_steps} > max_steps={self.max_steps}; swap them")
        if self.min_number > self.max_number:
            raise ValueError(f"min_number={self.min_number} > max_number={self.max_number}; swap them")
        if self.max_result < self.max_number:
            raise ValueError(
                f"max_result={self.max_result} < max_number={self.max_number}; raise max_result to at least it"
            )
        return self


ID = MiniArithConfig()
"""In distribution: 1–3 steps over numbers 1–99, factors 2–9, results <= 999."""
OOD = MiniArithConfig(min_steps=4, max_steps=6, min_number=100, max_number=9999, max_factor=20, max_result=10**7)
"""Out of distribution: 4–6 steps over numbers 100–9999, factors up to 20, results <= 10^7."""


class MiniArithStep(BaseModel):
    """One gold step: ``var = a op b`` (``a``/``b`` are literals or earlier variables ``y1, y2, ...``)."""

    model_config = ConfigDict(frozen=True)

    op: Op
    a: int | str
    b: int | str
    var: str
    result: int


class MiniArithProblem(BaseModel):
    """One MiniArith problem. ``answerable`` is False when a corruption removed information (missing number,
    contradiction, truncation); ``answer`` is then still the answer of the uncorrupted problem."""

    id: str
    question: str
    program: list[MiniArithStep]
    cot: str
    coa_chain: str
    answer: int
    steps: int
    corruption: Corruption | None = None
    answerable: bool = True


# --------------------------------------------------------------------------------------------- vocabulary

_NAMES = [
    ("Tom", "he", "his"), ("Anna", "she", "her"), ("Liam", "he", "his"), ("Maya", "she", "her"),
    ("Omar", "he", "his"), ("Sofia", "she", "her"), ("Ben", "he", "his"), ("Chloe", "she", "her"),
    ("Ravi", "he", "his"), ("Elena", "she", "her"), ("Jack", "he", "his"), ("Nora", "she", "her"),
    ("Kenji", "he", "his"), ("Lucy", "she", "her"), ("Diego", "he", "his"), ("Aisha", "she", "her"),
    ("Sam", "he", "his"), ("Grace", "she", "her"), ("Felix", "he", "his"), ("Zoe", "she", "her"),
    ("Hugo", "he", "his"), ("Ivy", "she", "her"), ("Leo", "he", "his"), ("Mia", "she", "her"),
]
_OBJECTS = [
    "pens", "apples", "stickers", "marbles", "books", "cookies", "coins", "stamps", "shells", "cards",
    "pencils", "oranges", "beads", "toy cars", "balloons", "candles", "eggs", "flowers", "nails", "buttons",
    "cupcakes", "tickets", "rocks", "bottles",
]
_PLACES = ["the market", "school", "the park", "the library", "the shop", "the fair", "the beach", "the zoo"]

# Templates per operation; {N} name, {p} pronoun, {P} capitalised pronoun, {s} possessive, {o} object, {b} number.
_START = [
    "{N} has {a} {o}.",
    "{N} starts with {a} {o}.",
    "There are {a} {o} in {N}'s bag.",
    "{N} owns {a} {o}.",
    "At first, {N} has {a} {o}.",
]
_STEP = {
    "+": [
        "{P} buys {b} more {o}.",
        "A friend gives {N} {b} more {o}.",
        "{P} finds {b} more {o} at {place}.",
        "Then {p} gets {b} more {o}.",
        "{P} adds {b} {o} to {s} collection.",
    ],
    "-": [
        "{P} gives away {b} {o}.",
        "{P} loses {b} {o} at {place}.",
        "Then {p} sells {b} {o}.",
        "{P} uses {b} of {s} {o}.",
        "{P} gives {b} {o} to a friend.",
    ],
    "*": [
        "Then {s} number of {o} becomes {b} times as large.",
        "{P} ends up with {b} times as many {o} as before.",
        "{P} multiplies {s} {o} by {b}.",
        "After a trade, {p} has {b} times as many {o}.",
    ],
    "/": [
        "{P} splits {s} {o} into {b} equal groups and keeps one group.",
        "{P} shares {s} {o} equally among {b} people, {selfpron} included, and keeps {s} share.",
        "Then {p} keeps only one of {b} equal parts of {s} {o}.",
        "{P} divides {s} {o} evenly into {b} boxes and keeps one box.",
    ],
}
_QUESTION = [
    "How many {o} does {N} have now?",
    "How many {o} does {N} have in the end?",
    "How many {o} are left with {N}?",
    "How many {o} does {N} end up with?",
]
_DISTRACTORS = [
    "{N}'s sister is {x} years old.",
    "The bus to {place} leaves at {x} minutes past the hour.",
    "{N}'s friend has {x} {o2}.",
    "It is {x} degrees outside.",
    "{place_cap} is {x} meters away.",
    "{N} read {x} pages of a book last week.",
]
_SYM = {"+": "+", "-": "-", "*": "*", "/": "/"}


def _fmt(template: str, ctx: dict[str, object]) -> str:
    return template.format(**ctx)


def _pick_operand(rng: random.Random, op: str, cur: int, lo: int, hi: int, max_factor: int, cap: int) -> int | None:
    """A second operand for ``cur op b`` keeping the result a positive integer <= cap, or None if impossible.

    ``+``/``-`` operands come from ``[lo, hi]``; ``*``/``/`` factors from ``[2, max_factor]``."""
    if op == "+":
        top = min(hi, cap - cur)
        return rng.randint(lo, top) if top >= lo else None
    if op == "-":
        top = min(hi, cur - 1)
        return rng.randint(lo, top) if top >= lo else None
    if op == "*":
        top = min(max_factor, cap // cur)
        return rng.randint(2, top) if top >= 2 else None
    divisors = [d for d in range(2, min(max_factor, cur) + 1) if cur % d == 0]
    return rng.choice(divisors) if divisors else None


def apply_op(op: str, a: int, b: int) -> int | None:
    """``a op b`` for MiniArith's four operators; ``None`` for a division that is not exact (or by zero)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0 or a % b:
        return None
    return a // b


def _apply(op: str, a: int, b: int) -> int:
    """Generator-internal: divisions are exact by construction; floor division otherwise (as before)."""
    exact = apply_op(op, a, b)
    return a // b if exact is None else exact


def _make_problem(i: int, cfg: MiniArithConfig) -> MiniArithProblem:
    rng = random.Random(f"miniarith-{GENERATOR_VERSION}-{cfg.seed}-{i}")
    lo, hi, cap = cfg.min_number, cfg.max_number, cfg.max_result
    name, pron, poss = rng.choice(_NAMES)
    obj = rng.choice(_OBJECTS)
    k = rng.randint(cfg.min_steps, cfg.max_steps)
    ctx: dict[str, object] = {"N": name, "p": pron, "P": pron.capitalize(), "s": poss, "o": obj}

    start = rng.randint(lo, hi)
    sentences = [_fmt(rng.choice(_START), {**ctx, "a": start})]
    number_sentence = [0]  # index of the sentence holding each literal (start first, then one per step)
    program: list[MiniArithStep] = []
    cot_lines: list[str] = []
    coa_parts: list[str] = []
    cur, cur_ref = start, start
    for j in range(1, k + 1):
        ops = ["+", "-", "*", "/"]
        rng.shuffle(ops)
        op, b = "+", None
        for cand in ops:
            b = _pick_operand(rng, cand, cur, lo, hi, cfg.max_factor, cap)
            if b is not None:
                op = cand
                break
        if b is None:  # nothing fits (cur near cap): subtract instead, always possible when cur > lo
            op, b = "-", min(hi, max(lo, cur - 1))
            if b >= cur:
                op, b = "+", lo
        res = _apply(op, cur, b)
        var = f"y{j}"
        program.append(MiniArithStep(op=op, a=cur_ref, b=b, var=var, result=res))
        template = rng.choice(_STEP[op])
        sentences.append(
            _fmt(template, {**ctx, "b": b, "place": rng.choice(_PLACES),
                            "selfpron": "himself" if pron == "he" else "herself"})
        )
        number_sentence.append(len(sentences) - 1)
        sym = _SYM[op]
        cot_lines.append(f"{cur}{sym}{b}=<<{cur}{sym}{b}={res}>>{res}")
        coa_parts.append(f"{name} has [{cur_ref} {sym} {b} = {var}] {obj}.")
        cur, cur_ref = res, var
    question_sentence = _fmt(rng.choice(_QUESTION), ctx)

    # distractors (own stream): inserted between story sentences, never after the question
    if cfg.distractors:
        drng = random.Random(f"miniarith-distract-{GENERATOR_VERSION}-{cfg.seed}-{i}")
        others = [o for o in _OBJECTS if o != obj]
        for _ in range(cfg.distractors):
            place = drng.choice(_PLACES)
            d = _fmt(drng.choice(_DISTRACTORS), {**ctx, "x": drng.randint(lo, hi), "o2": drng.choice(others),
                                                 "place": place, "place_cap": place[0].upper() + place[1:]})
            pos = drng.randint(1, len(sentences))  # after the opening sentence
            sentences.insert(pos, d)
            number_sentence = [s + 1 if s >= pos else s for s in number_sentence]

    question = " ".join([*sentences, question_sentence])
    cot = "\n".join([*cot_lines, f"#### {cur}"])
    coa = " ".join(coa_parts)
    answerable = True
    if cfg.corruption is not None:
        crng = random.Random(f"miniarith-corrupt-{GENERATOR_VERSION}-{cfg.seed}-{i}-{cfg.corruption}")
        question, answerable = _corrupt(cfg.corruption, sentences, number_sentence, question_sentence, program,
                                        start, ctx, lo, hi, crng)
    return MiniArithProblem(
        id=f"miniarith-{cfg.seed}-{i}",
        question=question,
        program=program,
        cot=cot,
        coa_chain=coa,
        answer=cur,
        steps=k,
        corruption=cfg.corruption,
        answerable=answerable,
    )


def _corrupt(kind: str, sentences: list[str], number_sentence: list[int], question_sentence: str,
             program: list[MiniArithStep], start: int, ctx: dict[str, object], lo: int, hi: int,
             rng: random.Random) -> tuple[str, bool]:
    """Apply one corruption; returns (question, answerable)."""
    sents = list(sentences)
    if kind == "missing_number":
        # replace one needed literal by a vague quantity word
        which = rng.randrange(len(number_sentence))
        literal = start if which == 0 else program[which - 1].b
        idx = number_sentence[which]
        sents[idx] = _replace_number(sents[idx], int(literal), "some")
        return " ".join([*sents, question_sentence]), False
    if kind == "contradictory_numbers":
        other = start
        while other == start:
            other = rng.randint(lo, hi)
        contra = f"Actually, {ctx['N']} started with {other} {ctx['o']}, not {start}."
        sents.insert(1, contra)
        return " ".join([*sents, question_sentence]), False
    if kind == "truncated_question":
        words = " ".join(sents).split(" ")
        cut = rng.randint(max(1, len(words) // 3), max(1, len(words) - 1))
        return " ".join(words[:cut]), False
    if kind == "boilerplate_spam":
        out = list(sents)
        for _ in range(rng.randint(3, 5)):
            out.insert(rng.randint(0, len(out)), BOILERPLATE)
        return " ".join([*out, question_sentence, BOILERPLATE]), True
    if kind == "shuffled_sentences":
        allsents = [*sents, question_sentence]
        order = list(range(len(allsents)))
        for _ in range(10):
            rng.shuffle(order)
            if order != sorted(order):
                break
        if order == sorted(order):  # single sentence cannot be shuffled; swap the last two anyway
            order = order[::-1]
        return " ".join(allsents[j] for j in order), False
    raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")


def _replace_number(sentence: str, number: int, word: str) -> str:
    tokens = sentence.split(" ")
    for t, tok in enumerate(tokens):
        if tok.rstrip(".,") == str(number):
            tokens[t] = word + tok[len(tok.rstrip(".,")):]
            return " ".join(tokens)
    raise AssertionError(f"number {number} not found in {sentence!r}")  # generator bug, not user error


def generate_problems(n: int, config: MiniArithConfig | None = None, start: int = 0) -> list[MiniArithProblem]:
    """Generate ``n`` problems (indices ``start .. start+n-1``) deterministically from ``config.seed``.

    Problem ``i`` is the same whatever ``n`` is, so ``generate_problems(10)`` is a prefix of
    ``generate_problems(100)``.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    cfg = config or ID
    return [_make_problem(i, cfg) for i in range(start, start + n)]


def evaluate_program(program: list[MiniArithStep]) -> int:
    """Execute a gold program (no eval): returns the last step's value. Raises on a non-integer division."""
    env: dict[str, int] = {}
    val = 0
    for st in program:
        a = env[st.a] if isinstance(st.a, str) else st.a
        b = env[st.b] if isinstance(st.b, str) else st.b
        if st.op == "/" and (b == 0 or a % b):
            raise ValueError(f"step {st.var}: {a} / {b} is not an exact integer division")
        val = _apply(st.op, a, b)
        env[st.var] = val
    return val
