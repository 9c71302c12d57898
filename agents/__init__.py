"""loopwright.agents: Chain-of-Abstraction (:mod:`.coa`, arXiv 2401.17464) and PathFinder (:mod:`.pathfinder`,
arXiv 2312.05180), LangGraph graphs over the sdk interfaces (``Generator``, ``Tool``, ``Judge``, ``Searcher``).

The main names are importable from here (``from loopwright.agents import PathFinder``) and loaded on first use
(PEP 562); each sub-package exports the rest. Layout and dependency direction: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CoAAgent": ".coa",
    "ChainConfig": ".coa",
    "ParsedChain": ".coa",
    "InvalidChain": ".coa",
    "parse_chain": ".coa",
    "reify": ".coa",
    "run_pipelined": ".coa",
    "run_sequential": ".coa",
    "evaluate_coa_vs_cot": ".coa",
    "CoAvsCoTReport": ".coa",
    "PathFinder": ".pathfinder",
    "PathFinderConfig": ".pathfinder",
    "PathFinderResult": ".pathfinder",
    "preference_rows": ".pathfinder",
    "stepwise_rows": ".pathfinder",
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
