"""Reification of a Chain-of-Abstraction chain: fill its placeholders with tool results.

Spec/loops.md §1.3, §1.6, §1.7 (Gao et al., arXiv 2401.17464). The placeholder graph is split into topological
levels (:func:`build_dag`); calls of one level are independent and run concurrently in a thread pool. Math is
solved either as **one SymPy system** by the ``"solver"`` tool (the paper's equation solver; tolerates
out-of-order definitions) or call by call, level by level, by the ``"calculator"`` tool. A failing or timed-out
call sets its placeholder to ``None``; every placeholder downstream of it is ``None`` too, while independent
branches are still computed, and the errors are reported (a partial result is data, never an exception).

Tools are passed as a mapping: ``"solver"`` (alias ``"equation_solver"``; ``run({"equations": ["20 + 35 = y1", ...]})`` -> ``{"y1": ...}``),
``"calculator"`` (``run({"expression": "20 + 35"})`` -> number), and one entry per chain tool name (``"Wiki"``,
``"NER"``) whose single required argument receives the call's argument text (an ``NER(person)`` call also
passes ``person`` to a second argument named ``type``, ``entity_type`` or ``label`` when the tool has one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from loopwright.sdk.tool import Tool
from loopwright.sdk.types import ToolResult

from .chain import (
    Call,
    ChainConfig,
    InvalidChain,
    MathCall,
    ParsedChain,
    ToolCall,
    format_value,
    parse_chain,
    substitute,
)

__all__ = ["CycleError", "Reified", "build_dag", "default_math_tools", "final_answer", "reify", "to_number"]

MathMode = Literal["system", "calculator"]


class CycleError(ValueError):
    """The placeholder graph of a chain has a cycle (or uses an undefined placeholder)."""


@dataclass
class Reified:
    """Result of :func:`reify`.

    ``values`` maps every defined placeholder to its value (``Fraction`` for math, the tool's value otherwise) or
    ``None`` when it could not be computed; ``errors`` says why; ``levels`` are the DAG levels (placeholders).
    """

    filled_text: str
    values: dict[str, Any]
    errors: list[str]
    n_calls: int
    levels: list[list[str]]
    chain: ParsedChain | InvalidChain
    t_tools_s: float = 0.0
    answer: Any = None
    math_mode: str = ""
    tool_results: dict[str, ToolResult] = field(default_factory=dict, repr=False)

    @property
    def valid(self) -> bool:
        return self.chain.valid

    @property
    def ok(self) -> bool:
        """The chain was valid and every placeholder got a value."""
        return self.chain.valid and not self.errors and all(v is not None for v in self.values.values())

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields for an Appendix A.1 eval record (values as chain text, ``None`` kept)."""
        return {"reified": self.filled_text, "values": {k: None if v is None else format_value(v)
                                                         for k, v in self.values.items()},
                "pred_answer": None if self.answer is None else format_value(self.answer),
                "valid_chain": self.valid, "invalid_reason": getattr(self.chain, "reason", None),
                "n_calls": self.n_calls, "levels": self.levels, "errors": list(self.errors),
                "t_tools_s": self.t_tools_s, "math_mode": self.math_mode}


def build_dag(calls: Sequence[Call]) -> list[list[int]]:
    """Topological levels of ``calls`` (indices): level 0 uses no placeholder, level k only earlier levels.

    Raises :class:`CycleError` naming the placeholders on a cycle or an undefined placeholder.
    """
    index = {c.placeholder: i for i, c in enumerate(calls)}
    if len(index) != len(calls):
        raise CycleError("a placeholder is defined more than once; parse the chain with parse_chain first")
    deps: list[set[int]] = []
    for c in calls:
        missing = [u for u in c.uses if u not in index]
        if missing:
            raise CycleError(f"call defining {c.placeholder} uses undefined placeholder {missing[0]}")
        deps.append({index[u] for u in c.uses})
    level_of: dict[int, int] = {}
    remaining = set(range(len(calls)))
    levels: list[list[int]] = []
    while remaining:
        ready = sorted(i for i in remaining if deps[i] <= level_of.keys())
        if not ready:
            raise CycleError("cyclic placeholders among " + ", ".join(sorted(calls[i].placeholder for i in remaining)))
        for i in ready:
            level_of[i] = len(levels)
        levels.append(ready)
        remaining -= set(ready)
    return levels


def to_number(value: Any) -> Fraction:
    """A tool's numeric value as an exact ``Fraction`` (ints, floats, ``"p/q"`` or decimal strings, SymPy numbers).

    Raises ``ValueError`` naming the value when it is not a finite number.
    """
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise ValueError(f"tool value {value!r} is a bool, not a number")
    if isinstance(value, int):
        return Fraction(value)
    try:
        if isinstance(value, float):
            return Fraction(value).limit_denominator(10**12) if value == value else Fraction("nan")
        p, q = getattr(value, "p", None), getattr(value, "q", None)  # sympy Rational / Integer
        if isinstance(p, int) and isinstance(q, int):
            return Fraction(p, q)
        return Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError, TypeError, OverflowError) as e:
        raise ValueError(f"tool value {value!r} is not a finite number") from e


def _expr_text(value: Fraction) -> str:
    """An exact, parenthesised literal for substituting a math value into an expression."""
    if value.denominator == 1:
        return f"({value.numerator})"
    return f"({value.numerator}/{value.denominator})"


def final_answer(values: Mapping[str, Any], chain: ParsedChain | InvalidChain) -> Any:
    """The chain's answer: the value of the placeholder mentioned last (normally the last-defined math call).

    A chain may designate its answer by ending with a use such as ``#### y3``. ``None`` for an invalid chain, a
    chain without placeholders or an uncomputed answer.
    """
    if not isinstance(chain, ParsedChain):
        return None
    ph = chain.last_mentioned()
    return None if ph is None else values.get(ph)


def default_math_tools() -> dict[str, Tool]:
    """``{"solver": EquationSolver(), "calculator": Calculator()}`` from ``loopwright.tools``."""
    try:
        from loopwright.tools.calculator import Calculator
        from loopwright.tools.equation_solver import EquationSolver
    except ImportError as e:  # pragma: no cover - tools ship with the package
        raise ImportError(f"loopwright.tools calculator/equation_solver unavailable ({e}); pass tools= "
                          "explicitly, e.g. {'calculator': MyCalculator()}") from e
    return {"solver": EquationSolver(), "calculator": Calculator()}


def _tool_args(tool: Tool, call: ToolCall, arg_text: str) -> dict[str, Any]:
    fields = tool.args_model.model_fields
    required = [n for n, f in fields.items() if f.is_required()] or list(fields)
    if not required:
        return {}
    args: dict[str, Any] = {required[0]: arg_text}
    if call.tool_arg is not None:
        for name in ("type", "entity_type", "label"):
            if name in fields and name != required[0]:
                args[name] = call.tool_arg
                break
    return args


def _run_call(call: Call, values: Mapping[str, Any], tools: Mapping[str, Tool]) -> ToolResult:
    """Run one call with its inputs substituted; the value is normalised (math -> Fraction)."""
    if isinstance(call, MathCall):
        expr = substitute(call.expr, {u: _expr_text(values[u]) if isinstance(values[u], Fraction) else values[u]
                                      for u in call.uses}) if call.uses else call.expr
        calc = tools.get("calculator")
        if calc is not None:
            res = calc.run({"expression": expr})
        else:
            solver = tools.get("solver")
            if solver is None:
                return ToolResult(ok=False, error="no math tool: pass tools={'calculator': ...} or {'solver': ...}")
            res = solver.run({"equations": [f"{expr} = {call.placeholder}"]})
            if res.ok:
                if not isinstance(res.value, Mapping) or call.placeholder not in res.value:
                    return ToolResult(ok=False, error=f"solver returned no value for {call.placeholder}: {res.value!r}")
                res = ToolResult(ok=True, value=res.value[call.placeholder], latency_s=res.latency_s)
        if not res.ok:
            return res
        try:
            return ToolResult(ok=True, value=to_number(res.value), latency_s=res.latency_s)
        except ValueError as e:
            return ToolResult(ok=False, error=str(e), latency_s=res.latency_s)
    tool = tools.get(call.tool)
    if tool is None:
        return ToolResult(ok=False, error=f"no tool named {call.tool!r} (have: {sorted(tools)})")
    arg = substitute(call.arg, {u: values[u] for u in call.uses}) if call.uses else call.arg
    return tool.run(_tool_args(tool, call, arg))


def _solve_system(calls: Sequence[MathCall], solver: Tool) -> tuple[dict[str, Fraction] | None, str | None]:
    res = solver.run({"equations": [f"{c.expr} = {c.placeholder}" for c in calls]})
    if not res.ok:
        return None, f"equation solver failed: {res.error}"
    if not isinstance(res.value, Mapping):
        return None, f"equation solver returned {type(res.value).__name__}, expected a mapping"
    out: dict[str, Fraction] = {}
    for c in calls:
        if c.placeholder not in res.value:
            return None, f"equation solver returned no value for {c.placeholder}"
        try:
            out[c.placeholder] = to_number(res.value[c.placeholder])
        except ValueError as e:
            return None, f"equation solver: {e}"
    return out, None


def reify(
    chain: str | ParsedChain | InvalidChain,
    tools: Mapping[str, Tool] | None = None,
    *,
    math: MathMode = "system",
    config: ChainConfig | None = None,
    max_workers: int = 4,
    timeout_s: float = 5.0,
) -> Reified:
    """Fill the placeholders of ``chain`` with tool results (never raises on model output or tool failure).

    ``math="system"`` solves all math calls as one system with ``tools["solver"]`` when the chain is pure math
    (the paper's solver, §1.3) and falls back to per-call evaluation if the system fails and a calculator is
    present; ``"calculator"`` evaluates math call by call, level by level. ``max_workers`` threads run the
    calls of one level concurrently (Appendix A.1 ``tool_workers: 4``); ``timeout_s`` bounds each level's wait
    per call (``tool_timeout_s: 5.0``). ``tools=None`` uses :func:`default_math_tools`.
    """
    if math not in ("system", "calculator"):
        raise ValueError(f"math={math!r} must be 'system' or 'calculator'")
    if max_workers < 1 or timeout_s <= 0:
        raise ValueError(f"max_workers={max_workers} must be >= 1 and timeout_s={timeout_s} > 0")
    tools = default_math_tools() if tools is None else dict(tools)
    if "solver" not in tools and "equation_solver" in tools:  # the EquationSolver's Tool.name
        tools["solver"] = tools["equation_solver"]
    parsed = chain if isinstance(chain, ParsedChain | InvalidChain) else parse_chain(chain, config)
    if isinstance(parsed, InvalidChain):
        return Reified(filled_text=parsed.text, values={}, errors=[f"invalid chain: {parsed.reason}"], n_calls=0,
                       levels=[], chain=parsed)
    calls = parsed.calls
    start = time.perf_counter()
    levels_idx = build_dag(calls)  # parse_chain already rejected cycles, so this cannot raise here
    levels = [[calls[i].placeholder for i in lvl] for lvl in levels_idx]
    values: dict[str, Any] = {}
    errors: list[str] = []
    results: dict[str, ToolResult] = {}
    math_calls = [c for c in calls if isinstance(c, MathCall)]
    pure_math = len(math_calls) == len(calls)
    mode_used = "calculator"
    if math == "system" and pure_math and math_calls and "solver" in tools:
        solved, err = _solve_system(math_calls, tools["solver"])
        if solved is not None:
            values.update(solved)
            mode_used = "system"
        elif "calculator" not in tools:
            errors.append(err or "equation solver failed")
            values.update(dict.fromkeys((c.placeholder for c in calls), None))
            mode_used = "system"
        else:
            errors.append(f"{err}; fell back to per-call evaluation")
    if len(values) < len(calls):
        pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="coa-reify")
        try:
            for lvl in levels_idx:
                todo: dict[Any, Call] = {}
                for i in lvl:
                    c = calls[i]
                    bad = [u for u in c.uses if values.get(u) is None]
                    if bad:
                        values[c.placeholder] = None
                        errors.append(f"{c.placeholder}: not computed because {bad[0]} has no value")
                        continue
                    todo[pool.submit(_run_call, c, dict(values), tools)] = c
                deadline = time.perf_counter() + timeout_s
                pending = set(todo)
                while pending:
                    done, pending = wait(pending, timeout=max(0.0, deadline - time.perf_counter()),
                                         return_when=FIRST_COMPLETED)
                    if not done:
                        break
                    for fut in done:
                        c = todo[fut]
                        try:
                            res = fut.result()
                        except Exception as e:  # noqa: BLE001 - a tool failure is data
                            res = ToolResult(ok=False, error=f"{type(e).__name__}: {e}")
                        results[c.placeholder] = res
                        values[c.placeholder] = res.value if res.ok else None
                        if not res.ok:
                            errors.append(f"{c.placeholder}: {res.error}")
                for fut in pending:
                    c = todo[fut]
                    fut.cancel()
                    values[c.placeholder] = None
                    errors.append(f"{c.placeholder}: timed out after {timeout_s:g} s")
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    filled = substitute(parsed.text, values, parsed.config)
    return Reified(filled_text=filled, values=values, errors=errors, n_calls=len(calls), levels=levels,
                   chain=parsed, t_tools_s=time.perf_counter() - start, answer=final_answer(values, parsed),
                   math_mode=mode_used, tool_results=results)
