"""Chain-of-Abstraction chain grammar and a parser that never raises on model output.

Grammar (spec/loops.md §1.2, Gao et al., arXiv 2401.17464; delimiters configurable, defaults are the paper's
math surface form)::

    chain      := (text | call)*
    call_math  := "[" expr "=" PH "]"            e.g. [20 + 35 = y1], [90 - y1 = y2]
    call_tool  := "[" arg "-" TOOL "->" PH "]"   e.g. [capital of France -Wiki-> y1], [y1 -NER(person)-> y2]
    PH         := "y" INT                        matched as a whole word: y1 never matches inside y10

Rules: each placeholder is defined exactly once; every use (inside a call or in the surrounding text) refers to
a placeholder defined somewhere in the chain (out-of-order definitions are allowed, the solver handles them);
the placeholder graph has no cycle. A chain that breaks a rule is an :class:`InvalidChain` with a ``reason``.

The LlamaIndex CoA pack's bugs (§1.8) are avoided on purpose: placeholders are matched with a word-boundary regex
and substituted in one regex pass (never ``str.replace``), and a tool argument is the raw text between the
delimiters (never split on commas nor ``json.loads``-ed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChainConfig",
    "InvalidChain",
    "MathCall",
    "ParsedChain",
    "ToolCall",
    "format_value",
    "parse_chain",
    "placeholders_in",
    "substitute",
]

_MATH_CHARS = re.compile(r"^[\d\s.+\-*/()]*$")


@dataclass(frozen=True)
class ChainConfig:
    """Surface form of a chain (Appendix A.1 defaults).

    ``placeholder_regex`` must have one group, the placeholder's index; ``tool_arrow_regex`` one group, the tool
    spec (``Wiki`` or ``NER(person)``). ``max_calls`` caps the calls of one chain (more makes it invalid).
    """

    call_open: str = "["
    call_close: str = "]"
    placeholder_regex: str = r"\by(\d+)\b"
    tool_arrow_regex: str = r"-(\w+(?:\([^)]*\))?)->"
    max_calls: int = 32

    def __post_init__(self) -> None:
        if not self.call_open or not self.call_close or self.call_open == self.call_close:
            raise ValueError(f"call_open={self.call_open!r} and call_close={self.call_close!r} must be distinct "
                             "non-empty strings, e.g. '[' and ']'")
        if re.compile(self.placeholder_regex).groups != 1:
            raise ValueError(f"placeholder_regex={self.placeholder_regex!r} needs exactly one group (the index), "
                             r"e.g. r'\by(\d+)\b'")
        if re.compile(self.tool_arrow_regex).groups != 1:
            raise ValueError(f"tool_arrow_regex={self.tool_arrow_regex!r} needs exactly one group (the tool), "
                             r"e.g. r'-(\w+(?:\([^)]*\))?)->'")
        if self.max_calls < 1:
            raise ValueError(f"max_calls={self.max_calls} must be >= 1")

    @property
    def ph_re(self) -> re.Pattern[str]:
        return re.compile(self.placeholder_regex)


DEFAULT_CONFIG = ChainConfig()


@dataclass(frozen=True)
class MathCall:
    """``[expr = placeholder]``; ``span`` is the call's (start, end) in the chain text, ``uses`` its inputs."""

    expr: str
    placeholder: str
    span: tuple[int, int]
    uses: tuple[str, ...] = ()

    kind = "math"


@dataclass(frozen=True)
class ToolCall:
    """``[arg -tool(tool_arg)-> placeholder]``, e.g. tool ``"NER"`` with tool_arg ``"person"``."""

    tool: str
    arg: str
    placeholder: str
    span: tuple[int, int]
    uses: tuple[str, ...] = ()
    tool_arg: str | None = None

    kind = "tool"


Call = MathCall | ToolCall


@dataclass
class ParsedChain:
    """A valid chain: its calls in text order, and the placeholders used in the free text outside calls."""

    text: str
    calls: list[Call]
    text_uses: tuple[str, ...] = ()
    config: ChainConfig = field(default=DEFAULT_CONFIG, repr=False)
    valid: bool = True

    @property
    def defined(self) -> dict[str, Call]:
        return {c.placeholder: c for c in self.calls}

    def last_mentioned(self) -> str | None:
        """The placeholder mentioned last in the text (defined or used): the chain's answer by default."""
        found = [m.group(0) for m in self.config.ph_re.finditer(self.text)]
        return found[-1] if found else None


@dataclass
class InvalidChain:
    """A chain that breaks the grammar or its rules; kept as data with the ``reason``."""

    text: str
    reason: str
    calls: list[Call] = field(default_factory=list)
    valid: bool = False


def placeholders_in(text: str, config: ChainConfig = DEFAULT_CONFIG) -> list[str]:
    """Whole-word placeholders in ``text`` in order of appearance, without duplicates (``y1`` is not in ``y10``)."""
    seen: dict[str, None] = {}
    for m in config.ph_re.finditer(text):
        seen.setdefault(m.group(0), None)
    return list(seen)


def format_value(value: Any) -> str:
    """A value as chain text: integers without a decimal point, other numbers with up to 10 significant digits."""
    from fractions import Fraction

    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        value = float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


def substitute(text: str, values: Mapping[str, Any], config: ChainConfig = DEFAULT_CONFIG) -> str:
    """Replace every whole-word placeholder that has a non-``None`` value, in one regex pass.

    ``substitute("y1 + y10", {"y1": 2, "y10": 5}) == "2 + 5"`` (a plain ``str.replace`` would corrupt ``y10``).
    Placeholders without a value (or with ``None``) stay as they are.
    """
    def repl(m: re.Match[str]) -> str:
        v = values.get(m.group(0))
        return m.group(0) if v is None else format_value(v)

    return config.ph_re.sub(repl, text)


def _find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str] | None:
    """A placeholder cycle in ``deps`` (placeholder -> placeholders it uses), or ``None``."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    for start in deps:
        if color[start] != WHITE:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path = [start]
        color[start] = GREY
        while stack:
            node, i = stack[-1]
            succ = [d for d in deps.get(node, ()) if d in deps]
            if i < len(succ):
                stack[-1] = (node, i + 1)
                nxt = succ[i]
                if color[nxt] == GREY:
                    return path[path.index(nxt):] + [nxt]
                if color[nxt] == WHITE:
                    color[nxt] = GREY
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = BLACK
                stack.pop()
                path.pop()
    return None


def _parse_call(body: str, span: tuple[int, int], cfg: ChainConfig) -> Call | str | None:
    """A call, an error string, or ``None`` when the bracket is plain text (no ``=`` and no arrow)."""
    ph_full = re.compile(r"^\s*(" + cfg.placeholder_regex + r")\s*$")
    arrows = list(re.finditer(cfg.tool_arrow_regex, body))
    if arrows:
        a = arrows[-1]
        arg, tool_spec, out = body[: a.start()], a.group(1), body[a.end():]
        m = ph_full.match(out)
        if m is None:
            return f"tool call {body!r} must end with '-> yK' (got {out.strip()!r} after the arrow)"
        if not arg.strip():
            return f"tool call {body!r} has an empty argument"
        tool, tool_arg = tool_spec, None
        if "(" in tool_spec:
            tool, tool_arg = tool_spec.split("(", 1)
            tool_arg = tool_arg.rstrip(")").strip() or None
        uses = tuple(placeholders_in(arg, cfg))
        return ToolCall(tool=tool, arg=arg.strip(), placeholder=m.group(1), span=span, uses=uses, tool_arg=tool_arg)
    if "=" in body:
        lhs, _, rhs = body.rpartition("=")
        m = ph_full.match(rhs)
        if m is None:
            return f"math call {body!r} must end with '= yK' (got {rhs.strip()!r})"
        expr = lhs.strip()
        if not expr:
            return f"math call {body!r} has an empty expression"
        if "=" in expr:
            return f"math call {body!r} has more than one '='"
        if not _MATH_CHARS.match(cfg.ph_re.sub("0", expr)):
            return f"math call {body!r}: expression may use numbers, placeholders, + - * / ** and parentheses only"
        return MathCall(expr=expr, placeholder=m.group(1), span=span, uses=tuple(placeholders_in(expr, cfg)))
    return None


def parse_chain(text: Any, config: ChainConfig | None = None) -> ParsedChain | InvalidChain:
    """Parse ``text`` into a :class:`ParsedChain`, or an :class:`InvalidChain` with a reason. Never raises.

    Bracketed segments without ``=`` and without a tool arrow are plain text (e.g. ``[sic]``); unbalanced or
    nested delimiters, malformed calls, redefinitions, undefined uses, cycles and more than ``max_calls``
    calls make the chain invalid.
    """
    cfg = config or DEFAULT_CONFIG
    if not isinstance(text, str):
        return InvalidChain(text=str(text), reason=f"chain must be a string, got {type(text).__name__}")
    if not text.strip():
        return InvalidChain(text=text, reason="empty chain")
    o, c = cfg.call_open, cfg.call_close
    calls: list[Call] = []
    outside: list[str] = []
    pos = 0
    while True:
        i = text.find(o, pos)
        j_stray = text.find(c, pos)
        if j_stray != -1 and (i == -1 or j_stray < i):
            return InvalidChain(text=text, reason=f"unbalanced {c!r} at offset {j_stray}", calls=calls)
        if i == -1:
            outside.append(text[pos:])
            break
        j = text.find(c, i + len(o))
        if j == -1:
            return InvalidChain(text=text, reason=f"unclosed {o!r} at offset {i}", calls=calls)
        body = text[i + len(o): j]
        if o in body:
            return InvalidChain(text=text, reason=f"nested {o!r} inside the call at offset {i}", calls=calls)
        outside.append(text[pos:i])
        span = (i, j + len(c))
        parsed = _parse_call(body, span, cfg)
        if isinstance(parsed, str):
            return InvalidChain(text=text, reason=parsed, calls=calls)
        if parsed is None:
            outside.append(text[i:span[1]])
        else:
            calls.append(parsed)
        pos = span[1]
    if len(calls) > cfg.max_calls:
        return InvalidChain(text=text, reason=f"{len(calls)} calls exceed max_calls={cfg.max_calls}", calls=calls)
    defined: dict[str, Call] = {}
    for call in calls:
        if call.placeholder in defined:
            return InvalidChain(text=text, reason=f"placeholder {call.placeholder} is defined more than once",
                                calls=calls)
        defined[call.placeholder] = call
    for call in calls:
        missing = [u for u in call.uses if u not in defined]
        if missing:
            return InvalidChain(text=text, reason=f"undefined placeholder {missing[0]} used in "
                                f"{text[call.span[0]:call.span[1]]!r}", calls=calls)
    text_uses = tuple(placeholders_in("".join(outside), cfg))
    missing = [u for u in text_uses if u not in defined]
    if missing:
        return InvalidChain(text=text, reason=f"undefined placeholder {missing[0]} used in the text", calls=calls)
    cycle = _find_cycle({p: call.uses for p, call in defined.items()})
    if cycle:
        return InvalidChain(text=text, reason="cyclic placeholders: " + " -> ".join(cycle), calls=calls)
    return ParsedChain(text=text, calls=calls, text_uses=text_uses, config=cfg)
