"""Calculator: exact arithmetic through a whitelisted ``ast`` walk (never ``eval``, never ``sympify``).

Grammar (Python expression syntax, ASCII only): integer and decimal literals (``12``, ``2.5``, ``.5``), binary
``+ - * / // % **``, unary ``+``/``-`` and parentheses. No names, calls, attributes, subscripts, comparisons,
lambdas or any other node: they are rejected before anything is evaluated. ``^`` is rejected (ambiguous: XOR in
Python, power in maths). No functions (``sqrt`` etc.): their results are mostly irrational and the CoA chains
(loops.md §1.2) only need the four operations and powers.

Values are :class:`fractions.Fraction` built node by node, so ``0.1 + 0.2`` is exactly ``3/10``. The result is
rendered by :func:`format_exact`: an integer (``"55"``), a terminating decimal (``"2.5"``) or a fraction
(``"1/3"``); ``Fraction(format_exact(x)) == x`` always holds, and ``float()`` of it is the approximate value.

Caps (all configurable on :class:`Limits`; every breach is an error result, never an exception out of ``run``):
expression length, parenthesis nesting (checked *before* ``ast.parse``, whose C parser otherwise raises
``RecursionError``/``MemoryError`` on deep input), AST node count and depth, integer exponents with
``|exp| <= max_exponent``, and the digit count of every intermediate numerator/denominator (checked *before* a power
is computed, from bit lengths, so ``9**9**9`` is refused in microseconds), plus a wall-clock deadline checked at every
node. Defaults are sized for word-problem arithmetic (GSM8K results have < 15 digits).
"""

from __future__ import annotations

import ast
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from ..sdk.tool import Tool

__all__ = ["Calculator", "CalculatorArgs", "CalculatorError", "Limits", "calculate", "format_exact",
           "parse_expression"]

_LOG2_10 = 3.3219280948873626


class CalculatorError(ValueError):
    """An expression that is not allowed or that breaks a cap (the message says which)."""


@dataclass(frozen=True)
class Limits:
    """Safety caps for one evaluation.

    Defaults: 1,000 characters and 50 nesting levels cover any hand-written or GSM8K expression by a wide margin;
    300 digits per intermediate value and exponents up to 1,000 keep every operation in the microseconds; 1 s total.
    """

    max_length: int = 1000
    max_nesting: int = 50
    max_nodes: int = 500
    max_exponent: int = 1000
    max_digits: int = 300
    timeout_s: float = 1.0


DEFAULT_LIMITS = Limits()

# characters allowed in a calculator expression; placeholders (EquationSolver) additionally allow "y".
_ALLOWED_RE = re.compile(r"[0-9.+\-*/%() \t]*")
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
PLACEHOLDER_RE = re.compile(r"y[0-9]+")


def _check_nesting(text: str, limits: Limits) -> None:
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > limits.max_nesting:
                raise CalculatorError(f"parentheses nested deeper than {limits.max_nesting} levels")
        elif ch == ")":
            depth -= 1


def parse_expression(text: str, limits: Limits = DEFAULT_LIMITS, allow_placeholders: bool = False) -> ast.expr:
    """Parse ``text`` into a validated ``ast`` expression tree, or raise :class:`CalculatorError`.

    With ``allow_placeholders`` the only names allowed are CoA placeholders ``y<digits>`` (``y1``, ``y12``).
    """
    if not isinstance(text, str):
        raise CalculatorError(f"expression must be a string, got {type(text).__name__}")
    if len(text) > limits.max_length:
        raise CalculatorError(f"expression longer than {limits.max_length} characters ({len(text)})")
    if not text.strip():
        raise CalculatorError("empty expression")
    if not text.isascii():
        bad = next(c for c in text if not c.isascii())
        raise CalculatorError(f"non-ASCII character {bad!r} (U+{ord(bad):04X}); use ASCII digits and operators")
    probe = PLACEHOLDER_RE.sub("", text) if allow_placeholders else text
    if not _ALLOWED_RE.fullmatch(probe):
        bad = next(c for c in probe if not _ALLOWED_RE.fullmatch(c))
        what = "numbers, y<N> placeholders" if allow_placeholders else "numbers"
        raise CalculatorError(f"character {bad!r} not allowed: only {what}, + - * / // % ** and parentheses")
    _check_nesting(text, limits)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"syntax error: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise CalculatorError(f"expression too complex to parse: {type(e).__name__}") from None
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            raise CalculatorError(f"expression has more than {limits.max_nodes} syntax nodes")
        if depth > limits.max_nesting * 4:
            raise CalculatorError(f"expression nested deeper than {limits.max_nesting * 4} operations")
        if isinstance(node, ast.BinOp) and isinstance(node.op, _BIN_OPS):
            stack += [(node.left, depth + 1), (node.right, depth + 1)]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            stack.append((node.operand, depth + 1))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            pass
        elif allow_placeholders and isinstance(node, ast.Name) and PLACEHOLDER_RE.fullmatch(node.id):
            pass
        else:
            raise CalculatorError(f"{type(node).__name__} is not allowed in an arithmetic expression")
    return tree.body


def _literal(node: ast.Constant, source: str) -> Fraction:
    # exact value of the literal as written (0.1 -> 1/10), not of the binary float.
    seg = ast.get_source_segment(source, node) if source else None
    return Fraction(seg.strip()) if seg else Fraction(str(node.value))


def _digits(x: Fraction) -> int:
    return int(max(x.numerator.bit_length(), x.denominator.bit_length()) / _LOG2_10) + 1


class _Evaluator:
    def __init__(self, source: str, limits: Limits, env: Mapping[str, Fraction] | None, deadline: float):
        self.source, self.limits, self.env, self.deadline = source, limits, env or {}, deadline

    def check(self, x: Fraction) -> Fraction:
        if _digits(x) > self.limits.max_digits:
            raise CalculatorError(f"intermediate result has more than {self.limits.max_digits} digits")
        return x

    def __call__(self, node: ast.expr) -> Fraction:
        if time.perf_counter() > self.deadline:
            raise CalculatorError(f"time limit of {self.limits.timeout_s} s exceeded")
        if isinstance(node, ast.Constant):
            return self.check(_literal(node, self.source))
        if isinstance(node, ast.Name):
            if node.id not in self.env:
                raise CalculatorError(f"undefined placeholder {node.id}")
            return self.env[node.id]
        if isinstance(node, ast.UnaryOp):
            v = self(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if not isinstance(node, ast.BinOp):  # parse_expression already rejected everything else
            raise CalculatorError(f"{type(node).__name__} is not allowed")
        a, b = self(node.left), self(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return self.check(a + b)
        if isinstance(op, ast.Sub):
            return self.check(a - b)
        if isinstance(op, ast.Mult):
            return self.check(a * b)
        if isinstance(op, ast.Div | ast.FloorDiv | ast.Mod) and b == 0:
            raise CalculatorError("division by zero")
        if isinstance(op, ast.Div):
            return self.check(a / b)
        if isinstance(op, ast.FloorDiv):
            return Fraction(a // b)
        if isinstance(op, ast.Mod):
            return self.check(a % b)
        return self.power(a, b)

    def power(self, a: Fraction, b: Fraction) -> Fraction:
        if b.denominator != 1:
            raise CalculatorError(f"non-integer exponent {b} is not supported (the result may be irrational)")
        e = b.numerator
        if abs(e) > self.limits.max_exponent:
            raise CalculatorError(f"exponent {e} exceeds the cap of {self.limits.max_exponent}")
        if a == 0 and e < 0:
            raise CalculatorError("zero raised to a negative power")
        # digits of the result ~ |e| * log10(max(|num|, den)); refuse before computing anything huge.
        if a not in (0, 1, -1) and abs(e) * math.log10(max(abs(a.numerator), a.denominator)) > self.limits.max_digits:
            raise CalculatorError(f"result of the power would exceed {self.limits.max_digits} digits")
        return self.check(a**e)


def calculate(expression: str, limits: Limits = DEFAULT_LIMITS,
              env: Mapping[str, Fraction] | None = None) -> Fraction:
    """Evaluate ``expression`` exactly; raise :class:`CalculatorError` for anything disallowed or over a cap.

    ``env`` maps placeholders (``"y1"``) to values; when given, placeholders are allowed in the expression.
    """
    deadline = time.perf_counter() + limits.timeout_s
    tree = parse_expression(expression, limits, allow_placeholders=env is not None)
    return _Evaluator(expression.strip(), limits, env, deadline)(tree)


def format_exact(x: Fraction) -> str:
    """``"55"`` for integers, ``"2.5"`` for terminating decimals, else ``"p/q"``; ``Fraction()`` parses all three."""
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d != 1:
        return f"{x.numerator}/{x.denominator}"
    places = max(twos, fives)
    scaled = abs(x.numerator) * 10**places // x.denominator
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if x < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


class CalculatorArgs(BaseModel):
    expression: str = Field(description="an arithmetic expression over numbers with + - * / // % ** and parentheses,"
                                        " e.g. '(20 + 35) * 2.5'")


class Calculator(Tool):
    """Exact arithmetic tool; ``run({"expression": ...}).value`` is the :func:`format_exact` string."""

    name: ClassVar[str] = "calculator"
    description: ClassVar[str] = ("Evaluate an arithmetic expression exactly (numbers, + - * / // % **, parentheses)"
                                  " and return the result as an integer, decimal or fraction string.")
    args_model: ClassVar[type[BaseModel]] = CalculatorArgs

    def __init__(self, limits: Limits = DEFAULT_LIMITS):
        self.limits = limits

    def _run(self, args: BaseModel) -> Any:
        assert isinstance(args, CalculatorArgs)
        return format_exact(calculate(args.expression, self.limits))

