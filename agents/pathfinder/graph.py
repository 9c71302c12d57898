"""PathFinder as a LangGraph graph: expand -> constrain -> score -> prune, looping until a stop rule fires.

The nodes are :class:`~loopwright.agents.pathfinder.search.PathFinder`'s own node functions (the plain
:meth:`PathFinder.search` loop runs the same ones), so graph and loop give the same result for the same seed.
The state holds small values only (spec/ecosystem.md §4.5): the question, the partial paths' step texts and
scores, counters and reasons. Compiled with a checkpointer (``InMemorySaver`` by default, ``SqliteSaver`` with
``PathFinder(checkpoint_path=...)``): every search is a thread whose per-depth states can be read back.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any, Protocol, TypedDict

__all__ = ["PathFinderNodes", "PathFinderState", "build_graph", "run_graph"]

_RUN = uuid.uuid4().hex[:8]
_SEQ = itertools.count()


class PathFinderState(TypedDict, total=False):
    """The graph state (see :meth:`PathFinder.init_state`); every key is replaced by the node that returns it."""

    question: str
    prompt_text: str
    depth: int
    beam: list[dict[str, Any]]
    children: list[dict[str, Any]]
    finished: list[dict[str, Any]]
    pruned: dict[str, int]
    pruned_steps: list[dict[str, Any]]
    failures: list[str]
    budget: dict[str, int]
    stop: str | None
    exhausted: bool
    attempt: int


class PathFinderNodes(Protocol):
    """What the graph needs from a searcher: its node functions, config and compiled graph (``PathFinder`` has
    them). A protocol, so that this module does not import ``search.py``, which imports it (no cycle)."""

    config: Any
    graph: Any

    def init_state(self, problem: Any) -> PathFinderState: ...
    def expand(self, state: PathFinderState) -> dict[str, Any]: ...
    def constrain(self, state: PathFinderState) -> dict[str, Any]: ...
    def score(self, state: PathFinderState) -> dict[str, Any]: ...
    def prune(self, state: PathFinderState) -> dict[str, Any]: ...
    def finalize(self, state: PathFinderState) -> Any: ...


def build_graph(pf: PathFinderNodes, checkpointer: Any = None) -> Any:
    """Compile the search graph of ``pf`` (nodes: expand, constrain, score, prune; loop back to expand)."""
    from langgraph.graph import END, START, StateGraph

    if checkpointer is None:
        from langgraph.checkpoint.memory import InMemorySaver

        checkpointer = InMemorySaver()
    g = StateGraph(PathFinderState)
    g.add_node("expand", pf.expand)
    g.add_node("constrain", pf.constrain)
    g.add_node("score", pf.score)
    g.add_node("prune", pf.prune)
    g.add_edge(START, "expand")
    g.add_edge("expand", "constrain")
    g.add_edge("constrain", "score")
    g.add_edge("score", "prune")
    g.add_conditional_edges("prune", lambda s: END if s.get("stop") else "expand", ["expand", END])
    return g.compile(checkpointer=checkpointer, name="pathfinder")


def run_graph(pf: PathFinderNodes, problem: Any, thread_id: str | None = None) -> Any:
    """Run one search through ``pf.graph`` (a fresh checkpoint thread each time) and select the answer
    (``pf.finalize``: a ``PathFinderResult``)."""
    state = pf.init_state(problem)
    if state["stop"]:  # nothing to search (the prompt could not be rendered)
        return pf.finalize(state)
    tid = thread_id or f"pathfinder:{_RUN}:{next(_SEQ)}"
    config = {"configurable": {"thread_id": tid}, "recursion_limit": 4 * pf.config.max_steps * (1 + pf.config.expansion_retries) + 10}
    out = pf.graph.invoke(state, config)
    return pf.finalize(out)
