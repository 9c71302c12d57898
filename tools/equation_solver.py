"""EquationSolver: the CoA math reifier (Gao et al. 2024, loops.md §1.3) — solve a chain's bracketed steps.

Input format (``EquationSolverArgs.equations``): a list of strings, each one equation ``LHS = RHS`` with exactly one
``=``; both sides use the :mod:`calculator <loopwright.tools.calculator>` grammar (ASCII numbers, ``+ - * / // % **``,
unary minus, parentheses) plus placeholders ``y<digits>`` (``y1``, ``y12``; whole tokens, so ``y1`` never matches
inside ``y10``). No other names. Typical CoA steps put the new placeholder on the right (``"20 + 35 = y1"``,
``"90 - y1 = y2"``), but unknowns may sit anywhere (``"y1 * 3 = 45"``, ``"y3 = y2 / 2"``); the order of the list
does not matter (definitions may come after their uses). Optional ``target``: the placeholder whose value is
wanted; then the result is ``{target: value}`` only (the other placeholders must still be solvable).

Output (``ToolResult.value``): ``{placeholder: exact value string}`` (:func:`format_exact`: ``"55"``, ``"2.5"``,
``"1/3"``; ``Fraction(s)`` parses each). :func:`solve_equations` returns ``dict[str, Fraction]`` for Python callers.

Method: (1) *forward evaluation* — repeatedly take an equation with exactly one side being a bare unknown placeholder
and the other side fully known, and evaluate it exactly with the calculator (Fractions, all caps apply); equations
whose both sides are known are checked for consistency. This settles every ordinary chain without SymPy. (2) The
rest (unknowns inside expressions) becomes one SymPy system, built node by node from the whitelisted AST (never
``sympify``/``parse_expr``, which ``eval``), solved with ``sympy.solve`` over the rationals (complex roots
dropped) in a long-lived worker *subprocess* that is killed when ``timeout_s`` runs out. Measured why: SymPy cannot
be interrupted, and a thread left running on ``y1**97 + 3*y1**13 - 7*y2**5 + y2 = 11, y2**89 - 5*y1**7 + y1*y2 = 3``
was still solving after 50 s, burning a core of this 2-core machine. The worker's cold start (~1 s, the SymPy import)
is paid once per process; ordinary chains never start it.

Errors (``ok=False`` with the reason): syntax/whitelist/cap violations (naming the equation), undefined placeholder
(used but never determined), inconsistent system, underdetermined or ambiguous (several solutions) system, non-real
or irrational solution, time limit.
"""

from __future__ import annotations

import ast
import atexit
import json
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from ..sdk.tool import Tool
from .calculator import DEFAULT_LIMITS, CalculatorError, Limits, _Evaluator, format_exact, parse_expression

__all__ = ["EquationSolver", "EquationSolverArgs", "SolverError", "solve_equations"]

MAX_EQUATIONS = 200
"""Cap on the number of equations in one call (GSM8K chains have at most ~10 steps)."""

_PH_RE = re.compile(r"^y[0-9]+$")


class SolverError(ValueError):
    """The system cannot be solved to unique exact values (the message says why)."""


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _ph_key(name: str) -> int:
    return int(name[1:])


def _parse_equation(i: int, eq: str, limits: Limits) -> tuple[ast.expr, ast.expr, str]:
    if not isinstance(eq, str):
        raise SolverError(f"equation {i} is not a string: {eq!r}")
    parts = eq.split("=")
    if len(parts) != 2:
        raise SolverError(f"equation {i} {eq!r} must contain exactly one '=' (found {len(parts) - 1})")
    try:
        lhs = parse_expression(parts[0], limits, allow_placeholders=True)
        rhs = parse_expression(parts[1], limits, allow_placeholders=True)
    except CalculatorError as e:
        raise SolverError(f"equation {i} {eq!r}: {e}") from None
    return lhs, rhs, eq


def _to_sympy(node: ast.expr, symbols: dict[str, Any], source: str):
    """Build a SymPy expression from a validated AST node (parse_expression already whitelisted it)."""
    import sympy

    if isinstance(node, ast.Constant):
        seg = ast.get_source_segment(source, node)
        f = Fraction(seg.strip()) if seg else Fraction(str(node.value))
        return sympy.Rational(f.numerator, f.denominator)
    if isinstance(node, ast.Name):
        return symbols[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _to_sympy(node.operand, symbols, source)
        return -v if isinstance(node.op, ast.USub) else v
    assert isinstance(node, ast.BinOp)
    a, b = _to_sympy(node.left, symbols, source), _to_sympy(node.right, symbols, source)
    op = node.op
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, ast.Div):
        return a / b
    if isinstance(op, ast.FloorDiv):
        return sympy.floor(a / b)
    if isinstance(op, ast.Mod):
        return sympy.Mod(a, b)
    if not (b.is_Integer and abs(int(b)) <= DEFAULT_LIMITS.max_exponent):
        raise SolverError(f"exponent {b} must be an integer constant with |exp| <= {DEFAULT_LIMITS.max_exponent}")
    return a**b


def _sympy_solve(srcs: list[str], unknowns: list[str], known: dict[str, str]) -> list[dict[str, str]]:
    """Solve the residual system; each solution maps placeholder -> ``"p/q"``, or ``"!<reason>"`` when the value
    is not a real rational number. Runs inside the worker process (see :class:`_SympyWorker`)."""
    import sympy

    symbols: dict[str, Any] = {u: sympy.Symbol(u) for u in unknowns}
    for k, v in known.items():
        f = Fraction(v)
        symbols[k] = sympy.Rational(f.numerator, f.denominator)
    system = []
    for i, src in enumerate(srcs):
        lhs, rhs, _ = _parse_equation(i, src, DEFAULT_LIMITS)
        left_src, right_src = src.split("=")
        system.append(_to_sympy(lhs, symbols, left_src.strip()) - _to_sympy(rhs, symbols, right_src.strip()))
    sols = sympy.solve(system, [symbols[u] for u in unknowns], dict=True)
    out = []
    for sol in sols:
        vals = {str(k): v for k, v in sol.items()}
        if any(v.is_real is False for v in vals.values()):
            continue  # complex roots are not answers to word problems
        row = {}
        for u in unknowns:
            v = vals.get(u)
            if v is None or v.free_symbols:
                row[u] = "!free"
            else:
                row[u] = f"{v.p}/{v.q}" if v.is_Rational else f"!{v}"
        out.append(row)
    return out


def _worker_main() -> None:
    """JSON-lines loop of the solver subprocess: ``{"srcs", "unknowns", "known"}`` -> ``{"ok", ...}``."""
    import json
    import sys

    for line in sys.stdin:
        req = json.loads(line)
        try:
            resp = {"ok": True, "solutions": _sympy_solve(req["srcs"], req["unknowns"], req["known"])}
        except Exception as e:  # noqa: BLE001 - reported to the parent
            resp = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(resp) + "\n")
        sys.stdout.flush()


class _SympyWorker:
    """One long-lived ``python -m loopwright.tools.equation_solver`` child that runs SymPy.

    SymPy cannot be interrupted inside a thread and can hang on adversarial systems, so the solve runs in a child
    process that is killed on timeout (and restarted lazily on the next call). The child is reused across calls:
    its cold start (~1 s, mostly the SymPy import) is paid once per process, a warm solve costs ~5-50 ms.
    Calls are serialized by a lock (the lock wait counts against the caller's time limit). POSIX only (select).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from loopwright.tools.equation_solver import _worker_main; _worker_main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        return self._proc

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def solve(self, srcs: list[str], unknowns: list[str], known: dict[str, str], deadline: float) -> dict:
        if not self._lock.acquire(timeout=max(deadline - time.perf_counter(), 0.0)):
            raise SolverError("time limit exceeded while waiting for the sympy worker")
        try:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"srcs": srcs, "unknowns": unknowns, "known": known}) + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.perf_counter(), 0.0))
            if not ready:
                self.kill()
                raise SolverError("time limit exceeded while solving with sympy (worker killed)")
            line = proc.stdout.readline()
            if not line:
                self.kill()
                raise SolverError("the sympy worker died")
            return json.loads(line)
        finally:
            self._lock.release()


_WORKER = _SympyWorker()
atexit.register(_WORKER.kill)


def solve_equations(equations: list[str], target: str | None = None, timeout_s: float = 5.0,
                    limits: Limits = DEFAULT_LIMITS) -> dict[str, Fraction]:
    """Solve CoA steps to exact values ``{placeholder: Fraction}``; raise :class:`SolverError` with the reason.

    See the module docstring for the input format. ``timeout_s`` bounds the whole call (5 s default: a chain that
    needs more than that is a broken chain, and the reifier must move on).
    """
    if not equations:
        raise SolverError("no equations given")
    if len(equations) > MAX_EQUATIONS:
        raise SolverError(f"{len(equations)} equations exceed the cap of {MAX_EQUATIONS}")
    if target is not None and not _PH_RE.match(target):
        raise SolverError(f"target {target!r} is not a placeholder like 'y3'")
    start = time.perf_counter()
    deadline = start + timeout_s
    eqs = [_parse_equation(i, eq, limits) for i, eq in enumerate(equations)]
    all_names = set().union(*(_names(lhs) | _names(rhs) for lhs, rhs, _ in eqs))
    if target is not None and target not in all_names:
        raise SolverError(f"target {target} does not occur in any equation")
    # a placeholder is "defined" when it stands alone on one side of some equation, or sits in an equation
    # otherwise made of known values (checked later); used-but-never-alone names are reported as undefined.
    known: dict[str, Fraction] = {}
    pending = list(eqs)

    def ev(node: ast.expr, src: str) -> Fraction:
        return _Evaluator(src.strip(), limits, known, deadline)(node)

    progress = True
    while progress and pending:
        progress = False
        rest = []
        for lhs, rhs, src in pending:
            left_src, right_src = src.split("=")
            lnames, rnames = _names(lhs) - known.keys(), _names(rhs) - known.keys()
            try:
                if not lnames and not rnames:
                    a, b = ev(lhs, left_src), ev(rhs, right_src)
                    if a != b:
                        raise SolverError(f"inconsistent system: {src!r} gives {format_exact(a)} != "
                                          f"{format_exact(b)}")
                    progress = True
                    continue
                if isinstance(rhs, ast.Name) and rnames == {rhs.id} and not lnames:
                    known[rhs.id] = ev(lhs, left_src)
                    progress = True
                    continue
                if isinstance(lhs, ast.Name) and lnames == {lhs.id} and not rnames:
                    known[lhs.id] = ev(rhs, right_src)
                    progress = True
                    continue
            except CalculatorError as e:
                raise SolverError(f"equation {src!r}: {e}") from None
            rest.append((lhs, rhs, src))
        pending = rest
    if pending:
        unknowns = sorted(all_names - known.keys(), key=_ph_key)
        if len(unknowns) > len(pending):
            alone = {n.id for lhs, rhs, _ in eqs for n in (lhs, rhs) if isinstance(n, ast.Name)}
            undefined = [u for u in unknowns if u not in alone]
            if undefined:
                raise SolverError(f"undefined placeholder(s) {', '.join(undefined)}: used but never defined")
            raise SolverError(f"underdetermined system: {len(unknowns)} unknowns ({', '.join(unknowns)}) "
                              f"but {len(pending)} independent equations")
        srcs = [src for _, _, src in pending]
        resp = _WORKER.solve(srcs, unknowns, {k: f"{v.numerator}/{v.denominator}" for k, v in known.items()},
                             deadline)
        if not resp["ok"]:
            raise SolverError(f"sympy could not solve the system: {resp['error']}")
        sols = resp["solutions"]
        if not sols:
            raise SolverError(f"inconsistent system: no real solution for {', '.join(unknowns)} "
                              "(or none that sympy can find in closed form)")
        if len(sols) > 1:
            raise SolverError(f"ambiguous system: {len(sols)} solutions for {', '.join(unknowns)}")
        for u, v in sols[0].items():
            if v.startswith("!free"):
                raise SolverError(f"underdetermined system: no unique value for {u}")
            if v.startswith("!"):
                raise SolverError(f"{u} = {v[1:]} is not a rational number")
            known[u] = Fraction(v)
    if target is not None:
        return {target: known[target]}
    return dict(sorted(known.items(), key=lambda kv: _ph_key(kv[0])))


class EquationSolverArgs(BaseModel):
    equations: list[str] = Field(description="equations 'LHS = RHS' over numbers and placeholders y1, y2, ..., "
                                             "e.g. ['20 + 35 = y1', '90 - y1 = y2']")
    target: str | None = Field(default=None, description="the placeholder to return (all of them when omitted)")


class EquationSolver(Tool):
    """Solve a CoA chain's bracketed steps; ``value`` is ``{placeholder: exact value string}``."""

    name: ClassVar[str] = "equation_solver"
    description: ClassVar[str] = ("Solve a system of equations over placeholders y1, y2, ... (e.g. '20 + 35 = y1', "
                                  "'90 - y1 = y2') exactly and return the value of each placeholder.")
    args_model: ClassVar[type[BaseModel]] = EquationSolverArgs

    def __init__(self, timeout_s: float = 5.0, limits: Limits = DEFAULT_LIMITS):
        self.timeout_s, self.limits = timeout_s, limits

    def _run(self, args: BaseModel) -> Any:
        assert isinstance(args, EquationSolverArgs)
        values = solve_equations(args.equations, args.target, self.timeout_s, self.limits)
        return {k: format_exact(v) for k, v in values.items()}
