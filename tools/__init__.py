"""loopwright.tools: typed tools (sdk.tool.Tool) for tool-using agents such as Chain-of-Abstraction.

- :class:`Calculator` — exact arithmetic via a whitelisted AST (no ``eval``; sizes and time capped);
- :class:`EquationSolver` — the CoA math reifier (placeholder systems, sympy in a worker process);
- :class:`WikipediaSearch` — offline FTS5/BM25 index (:class:`OfflineIndex`, :func:`build_index`) or online
  wikipedia-api, plus :func:`extract_answer`.

Each exports ``openai_schema()`` and ``as_function()`` (a typed function for TRL's ``tools=``). The names below
are importable from here (``from loopwright.tools import Calculator``) and loaded on first use (PEP 562), so
``import loopwright.tools`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Calculator": ".calculator",
    "CalculatorArgs": ".calculator",
    "CalculatorError": ".calculator",
    "Limits": ".calculator",
    "calculate": ".calculator",
    "EquationSolver": ".equation_solver",
    "EquationSolverArgs": ".equation_solver",
    "SolverError": ".equation_solver",
    "solve_equations": ".equation_solver",
    "WikipediaSearch": ".wikipedia",
    "WikipediaSearchArgs": ".wikipedia",
    "OfflineIndex": ".wikipedia",
    "OnlineWikipedia": ".wikipedia",
    "OfflineError": ".wikipedia",
    "build_index": ".wikipedia",
    "extract_answer": ".wikipedia",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = list(_LAZY)
