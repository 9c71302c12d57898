"""Calculator: exact results, caps, and a hypothesis fuzz that it never executes code, never raises, never hangs."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopwright.sdk.types import ToolResult
from loopwright.tools.calculator import Calculator, CalculatorError, Limits, calculate, format_exact

CALC = Calculator()


@pytest.mark.parametrize(("expr", "want"), [
    ("20 + 35", "55"), ("(20 + 35) * 2.5", "137.5"), ("0.1 + 0.2", "0.3"), ("1/3", "1/3"), ("2 ** -2", "0.25"),
    ("-3 // 2", "-2"), ("7 % 3", "1"), ("-(-4)", "4"), (".5 * 4", "2"), ("2 ** 10", "1024"), ("10 / 4", "2.5"),
    ("1 - 1/8", "0.875"), ("3 * (2 + (4 - 1)) / 5", "3"), ("  12  ", "12"), ("-0.004 * 1", "-0.004"),
])
def test_exact_values(expr, want):
    res = CALC.run({"expression": expr})
    assert res.ok, res.error
    assert res.value == want
    assert Fraction(res.value) == calculate(expr)


ADVERSARIAL = [
    "__import__('os').system('echo pwned')", "().__class__.__bases__[0].__subclasses__()", "x.__class__", "abs(-1)",
    "lambda: 1", "(lambda x: x)(1)", "open('/etc/passwd')", "[1, 2][0]", "1 if 1 else 2", "1 < 2", "9**9**9",
    "10**10**10", "2**0.5", "1000000!", "factorial(1000000)", "(" * 10_000 + "1" + ")" * 10_000, "-" * 5000 + "1",
    "٣ + 1", "１２ + 1", "1\u200b+1", "y1 + 1", "1 / 0", "0 ** -1", "", "   ", "1 +", "1e308 * 10", "1_000 + 1",
    "2 ^ 3", "1, 2", "'a' * 3", "b'x'", "f'{1}'", "1; 2", "1\n+\n2", "(1)(2)", "1 .real", "True + 1", "None",
    "9" * 2000, "1" + "*1" * 600, "(2**999) * (2**999) * (2**999)", "1/3**1000", "(-1)**(1/2)",
]


@pytest.mark.parametrize("expr", ADVERSARIAL)
def test_adversarial_inputs_are_error_results(expr):
    t = time.perf_counter()
    res = CALC.run({"expression": expr})
    assert time.perf_counter() - t < 1.0
    assert isinstance(res, ToolResult)
    assert not res.ok and res.error, (expr, res)


def test_non_string_and_missing_args():
    assert not CALC.run({"expression": 12}).ok
    assert not CALC.run({}).ok
    assert "invalid arguments" in CALC.run({"expr": "1"}).error


def test_caps_are_configurable_and_named_in_the_error():
    assert calculate("2**1000", Limits(max_digits=400)) == 2**1000
    with pytest.raises(CalculatorError, match="digits"):
        calculate("2**1000")
    with pytest.raises(CalculatorError, match="exponent"):
        calculate("1**5000")
    with pytest.raises(CalculatorError, match="longer than 10"):
        calculate("1+1+1+1+1+1", Limits(max_length=10))
    with pytest.raises(CalculatorError, match="nested deeper"):
        calculate("((((1))))", Limits(max_nesting=3))


def test_format_exact_round_trips():
    for x in [Fraction(-1, 8), Fraction(5, 2), Fraction(-3), Fraction(1, 3), Fraction(-1, 250), Fraction(0)]:
        s = format_exact(x)
        assert Fraction(s) == x
    assert format_exact(Fraction(1, 3)) == "1/3" and format_exact(Fraction(-1, 8)) == "-0.125"


# -- property tests -------------------------------------------------------------------------------------------

_pieces = st.sampled_from(["__", "import", "class", "os", ".", "(", ")", "[", "]", "{", "}", "lambda", ":", ",",
                           "'", '"', "**", "9", "*", "!", "/", "//", "%", "-", "+", "٣", "１", "\u202e", "𝟗", "e",
                           "y1", "getattr", "eval", "exec", " ", "\n", "\\", "0x", "j", "_", "=", "@", "~", "<<"])
_adversarial_text = st.one_of(
    st.lists(_pieces, max_size=60).map("".join),
    st.text(max_size=200),
    st.builds(lambda n, inner: "(" * n + inner + ")" * n, st.integers(0, 20_000), st.sampled_from(["1", "9**9", ""])),
    st.builds(lambda a, b, c: f"{a}**{b}**{c}", st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_adversarial_text)
def test_fuzz_never_raises_and_returns_fast(expr):
    t = time.perf_counter()
    res = CALC.run({"expression": expr})
    assert time.perf_counter() - t < 1.0, expr[:80]
    assert isinstance(res, ToolResult)
    assert res.ok or res.error
    if res.ok:  # anything accepted is plain arithmetic: only digits, operators, dots and parentheses
        assert set(expr) <= set("0123456789.+-*/%() \t"), expr
        Fraction(res.value)


def _arith():
    leaf = st.one_of(st.integers(0, 10_000).map(lambda i: (str(i), Fraction(i))),
                     st.decimals("0", "1000", places=2, allow_nan=False, allow_infinity=False)
                     .map(lambda d: (str(d), Fraction(str(d)))))

    def extend(children):
        def combine(a, b, op):
            (sa, va), (sb, vb) = a, b
            if op == "+":
                return f"({sa} + {sb})", va + vb
            if op == "-":
                return f"({sa} - {sb})", va - vb
            if op == "*":
                return f"({sa} * {sb})", va * vb
            return (f"({sa} / {sb})", va / vb) if vb != 0 else (f"({sa} + {sb})", va + vb)

        return st.builds(combine, children, children, st.sampled_from("+-*/"))

    return st.recursive(leaf, extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(_arith())
def test_valid_arithmetic_matches_fraction_reference(pair):
    expr, want = pair
    res = CALC.run({"expression": expr})
    if res.ok:
        assert Fraction(res.value) == want
    else:  # only the digit cap may refuse a valid expression
        assert "digits" in res.error


def test_schema_and_function_for_trl():
    from transformers.utils import get_json_schema

    schema = CALC.openai_schema()
    assert schema["function"]["name"] == "calculator"
    assert schema["function"]["parameters"]["required"] == ["expression"]
    fn = CALC.as_function()
    assert fn(expression="6 * 7") == "42"
    assert fn(expression="__import__('os')").startswith("error:")
    js = get_json_schema(fn)
    assert js["function"]["name"] == "calculator"
    assert js["function"]["parameters"]["properties"]["expression"]["type"] == "string"


def test_deep_nesting_is_refused_even_with_caps_lifted():
    deep = "(" * 10_000 + "1" + ")" * 10_000
    assert "nested deeper than 50" in CALC.run({"expression": deep}).error.replace("characters", "")\
        or "longer than" in CALC.run({"expression": deep}).error
    loose = Calculator(Limits(max_length=10**6, max_nesting=10**6, max_nodes=10**6))
    t = time.perf_counter()
    for expr in (deep, "-" * 100_000 + "1", "+".join(["1"] * 50_000)):
        res = loose.run({"expression": expr})  # CPython's parser limits / our depth walk: error, not a crash
        assert not res.ok and res.error
    assert time.perf_counter() - t < 3.0
