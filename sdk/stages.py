"""Durable stage pipelines: an ordered list of stages run as a LangGraph graph with a SQLite checkpointer.

Every loop in loopwright is a sequence of durable stages (generate, judge, filter, train, evaluate, ...).
This module turns such a sequence into a LangGraph ``StateGraph`` whose state carries only *references*
(artifact paths, metrics, fingerprints — never rows; ecosystem.md §4.5, langgraph#7843), checkpointed in
``RUN_DIR/checkpoints.sqlite``. A run killed at any point is resumed with :func:`run_stages` (``resume=True``)
or ``loopwright resume RUN_DIR``: LangGraph restarts from the last completed stage, so finished stages are
not redone. Each stage is also recorded in the run's manifest (timings, status) through ``RunDir.stage``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypedDict

log = logging.getLogger(__name__)


def _merge(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    return {**(a or {}), **(b or {})}


class StageState(TypedDict, total=False):
    """Graph state: references and small metrics only."""

    run_dir: str
    artifacts: Annotated[dict[str, str], _merge]
    metrics: Annotated[dict[str, Any], _merge]
    completed: Annotated[list[str], operator.add]


@dataclass(frozen=True)
class Stage:
    """One durable stage: ``fn(state, run) -> {"artifacts": {...}, "metrics": {...}}`` (both optional).

    Stages must be idempotent: a resumed run re-executes the stage that was interrupted.
    """

    name: str
    fn: Callable[[StageState, Any], dict[str, Any] | None]


def _node(stage: Stage, run: Any) -> Callable[[StageState], dict[str, Any]]:
    def node(state: StageState) -> dict[str, Any]:
        with run.stage(stage.name) as rec:
            out = stage.fn(state, run) or {}
            rec.metrics.update(out.get("metrics") or {})
            for path in (out.get("artifacts") or {}).values():
                if Path(path).is_relative_to(run.path):
                    rec.add_artifact(path)
        return {"artifacts": out.get("artifacts", {}), "metrics": out.get("metrics", {}), "completed": [stage.name]}

    node.__name__ = stage.name
    return node


def sqlite_checkpointer(path: str | Path) -> tuple[Any, Any]:
    """A LangGraph ``SqliteSaver`` on the SQLite file ``path`` (its folder created), usable from several threads.

    Returns ``(saver, connection)``; close the connection when the graph is done with it.
    """
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(conn), conn


def _remove_stale_scratch(run: Any) -> None:
    """Sweep the run's stale scratch folders (every resume passes here; nothing writes the run yet) and record them.

    A loop calls :func:`run_stages` once per iteration: the first call of a resume removes the leftovers, the later
    ones find none (no stage ran in between with a scratch folder still open).
    """
    from .scratch import remove_stale_scratch

    removed = remove_stale_scratch(run.path)
    if not removed:
        return
    rel = [str(p.relative_to(run.path)) for p in removed]
    log.info("resume of %s: removed %d stale scratch folder(s): %s", run.path, len(rel), ", ".join(rel))
    if hasattr(run, "set_meta") and hasattr(run, "manifest"):
        before = run.manifest.get("meta", {}).get("stale_scratch_removed", [])
        run.set_meta("stale_scratch_removed", [*before, *rel])


def run_stages(stages: Sequence[Stage], run: Any, *, resume: bool = False, thread_id: str = "main") -> StageState:
    """Run ``stages`` in order inside run directory ``run`` (a :class:`~loopwright.sdk.artifacts.RunDir`).

    With ``resume=True`` the graph continues from its last checkpoint instead of starting over; resuming a
    finished run is a no-op that returns its final state. A resume first removes the scratch folders a killed
    train stage left in the run (:func:`~loopwright.sdk.scratch.remove_stale_scratch`) and records them in the
    manifest's ``meta.stale_scratch_removed``.
    """
    from langgraph.graph import END, START, StateGraph

    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    graph = StateGraph(StageState)
    prev = START
    for stage in stages:
        graph.add_node(stage.name, _node(stage, run))
        graph.add_edge(prev, stage.name)
        prev = stage.name
    graph.add_edge(prev, END)

    if resume:
        _remove_stale_scratch(run)
    saver, conn = sqlite_checkpointer(run.path / "checkpoints.sqlite")
    try:
        app = graph.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread_id}}
        snapshot = app.get_state(config)
        if resume and snapshot.values:
            if not snapshot.next:  # already finished
                return snapshot.values
            return app.invoke(None, config, durability="sync")
        if snapshot.values and not resume:
            raise ValueError(f"{run.path} already holds a run; resume it with `loopwright resume {run.path}`")
        return app.invoke(
            {"run_dir": str(run.path), "artifacts": {}, "metrics": {}, "completed": []}, config, durability="sync"
        )
    finally:
        conn.close()
