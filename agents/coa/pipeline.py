"""Multi-question pipelining of the CoA agent: decode question i+1 while tools reify question i.

Spec/loops.md §1.6 (Gao et al., arXiv 2401.17464, "parallel decoding and tool calling", ~1.4x end-to-end):

    queue Q; decoder thread: for q in questions: chain = llm.decode(q); Q.put((q, chain))
    tool workers (pool of W): chain = Q.get(); parse; reify level by level (each level concurrently); finalize

:func:`run_pipelined` is that; :func:`run_sequential` is the interleaved baseline (decode, then tools, one
question at a time: per-question latency = T_decode + T_tools). Both call the same agent steps
(:meth:`CoAAgent.decode_many` then :meth:`CoAAgent.finish`), so their records are identical except for
timings; expected throughput ratio ~ (T_dec + T_tool) / max(T_dec, T_tool / W).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopwright.sdk.generator import Generator
from loopwright.sdk.tool import Tool

from .agent import CoAAgent, as_question

__all__ = ["DelayedTool", "PipelineRun", "run_pipelined", "run_sequential"]

_DONE = object()


class DelayedTool(Tool):
    """A real tool with a simulated latency: sleeps ``latency_s`` and then runs ``inner`` (spec §1.6 uses 50 ms
    per call to make the pipelining effect visible on CPU). Counts calls and the peak number running at once."""

    def __init__(self, inner: Tool, latency_s: float = 0.05) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s={latency_s} must be >= 0")
        self.inner, self.latency_s = inner, latency_s
        self.name = inner.name  # type: ignore[misc]
        self.description = inner.description  # type: ignore[misc]
        self.args_model = inner.args_model  # type: ignore[misc]
        self._lock = threading.Lock()
        self.calls = self.active = self.max_active = 0

    def _run(self, args: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.latency_s)
            return self.inner.run(args)
        finally:
            with self._lock:
                self.active -= 1


@dataclass
class PipelineRun:
    """Records in question order, the run's wall clock, and how it ran."""

    records: list[dict[str, Any]]
    wall_s: float
    mode: str
    tool_workers: int = 1
    decode_batch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def answers(self) -> list[str | None]:
        return [r["pred_answer"] for r in self.records]


def _agent(agent_or_generator: CoAAgent | Generator, tools: Mapping[str, Tool] | None,
           agent_kwargs: dict[str, Any]) -> CoAAgent:
    if isinstance(agent_or_generator, CoAAgent):
        if tools is not None or agent_kwargs:
            raise ValueError("pass tools/agent options either to CoAAgent(...) or here with a Generator, not both "
                             f"(got tools={tools is not None}, options={sorted(agent_kwargs)})")
        return agent_or_generator
    if isinstance(agent_or_generator, Generator):
        return CoAAgent(agent_or_generator, tools, **agent_kwargs)
    raise TypeError(f"agent_or_generator={agent_or_generator!r:.80} must be a CoAAgent or a Generator")


def run_sequential(agent_or_generator: CoAAgent | Generator, questions: Sequence[Any],
                   tools: Mapping[str, Tool] | None = None, *, decode_batch: int = 1,
                   **agent_kwargs: Any) -> PipelineRun:
    """Interleaved baseline: for each question (or batch of ``decode_batch``), decode then run its tools."""
    agent = _agent(agent_or_generator, tools, agent_kwargs)
    if decode_batch < 1:
        raise ValueError(f"decode_batch={decode_batch} must be >= 1")
    qs = [as_question(item, i) for i, item in enumerate(questions)]
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    for i in range(0, len(qs), decode_batch):
        chunk = qs[i:i + decode_batch]
        for q, (text, t, err) in zip(chunk, agent.decode_many(chunk), strict=True):
            records.append(agent.finish(q, text, t, err))
    return PipelineRun(records=records, wall_s=time.perf_counter() - start, mode="sequential",
                       decode_batch=decode_batch)


def run_pipelined(agent_or_generator: CoAAgent | Generator, questions: Sequence[Any],
                  tools: Mapping[str, Tool] | None = None, *, tool_workers: int = 4, decode_batch: int = 1,
                  queue_size: int = 0, **agent_kwargs: Any) -> PipelineRun:
    """Decoder thread + ``tool_workers`` reification workers joined by a queue (spec §1.6).

    The decoder decodes ``decode_batch`` questions per generator call and queues each chain; a worker takes a
    chain and runs the agent's parse -> reify -> final_answer graph on it (calls of one DAG level run
    concurrently inside :func:`reify`). ``queue_size`` bounds the queue (0 = unbounded). A failure in the
    decoder becomes per-question errors (``decode_many`` never raises); records come back in question order.
    """
    agent = _agent(agent_or_generator, tools, agent_kwargs)
    if tool_workers < 1 or decode_batch < 1:
        raise ValueError(f"tool_workers={tool_workers} and decode_batch={decode_batch} must be >= 1")
    qs = [as_question(item, i) for i, item in enumerate(questions)]
    records: list[dict[str, Any] | None] = [None] * len(qs)
    work: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
    failures: list[BaseException] = []

    def decoder() -> None:
        try:
            for i in range(0, len(qs), decode_batch):
                chunk = qs[i:i + decode_batch]
                for j, out in enumerate(agent.decode_many(chunk)):
                    work.put((i + j, out))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(e)
        finally:
            for _ in range(tool_workers):
                work.put(_DONE)

    def worker() -> None:
        while True:
            item = work.get()
            if item is _DONE:
                return
            idx, (text, t, err) = item
            try:
                records[idx] = agent.finish(qs[idx], text, t, err)
            except BaseException as e:  # noqa: BLE001 - finish never raises on data; this is a bug, surface it
                failures.append(e)

    start = time.perf_counter()
    threads = [threading.Thread(target=decoder, name="coa-decoder", daemon=True)]
    threads += [threading.Thread(target=worker, name=f"coa-tools-{k}", daemon=True) for k in range(tool_workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"pipelined CoA run failed: {failures[0]!r}") from failures[0]
    missing = [qs[i]["id"] for i, r in enumerate(records) if r is None]
    if missing:
        raise RuntimeError(f"pipelined CoA run lost records for {missing[:5]}")
    return PipelineRun(records=[r for r in records if r is not None], wall_s=wall, mode="pipelined",
                       tool_workers=tool_workers, decode_batch=decode_batch)
