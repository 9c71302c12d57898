"""The Chain-of-Abstraction agent as a LangGraph graph: decode_chain -> parse -> reify -> final_answer.

Spec/loops.md §1.6-§1.7 and Appendix A.1 (Gao et al., arXiv 2401.17464). One graph run answers one question;
the state holds small values only (question, chain text, placeholder values as text, answer, errors, timings:
ecosystem.md §4.5 "carry references, never row data"), and the graph is compiled with a real checkpointer
(``InMemorySaver`` by default, ``SqliteSaver`` on ``checkpoint_path``) so every question's run is a thread whose
state can be read back (``agent.state(record_id)``).

Bad input never stops a batch: an invalid chain (grammar, undefined placeholder, cycle), a chain without calls,
a failing or timed-out tool, or a generator error gives a record with ``pred_answer=None`` ("no answer") and the
reasons in ``errors``. The same step functions (:meth:`CoAAgent.decode_many`, :meth:`CoAAgent.finish`) are used
by the multi-question pipeline (``pipeline.py``), so pipelined and sequential runs give the same records.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from loopwright.sdk.generator import Generator
from loopwright.sdk.stages import sqlite_checkpointer
from loopwright.sdk.tasks.gsm8k import extract_gold_answer, is_correct
from loopwright.sdk.tool import Tool
from loopwright.sdk.types import Prompt, SamplingParams

from .chain import ChainConfig, InvalidChain, format_value, parse_chain
from .reify import default_math_tools, reify

__all__ = ["CoAAgent", "CoAState", "Question", "as_question", "default_coa_prompt"]

DEFAULT_PARAMS = SamplingParams(max_tokens=128)
"""Greedy, 128 new tokens: a MiniArith chain of 6 steps is ~90 whitespace tokens (spec §1.9 OOD preset)."""

Question = Mapping[str, Any]
"""A normalised question: ``{"id", "question", "gold_answer", "dataset"}`` (see :func:`as_question`)."""


def as_question(item: Any, index: int = 0, dataset: str | None = None) -> dict[str, Any]:
    """Normalise a question: a string, a MiniArith / GSM8K problem, or a mapping with ``question``.

    Gold answers come from ``gold_answer``, ``gold`` (GSM8K: str) or ``answer`` (MiniArith: int; a GSM8K
    solution text gives the number after ``####``); ids default to
    ``q{index}``. Raises ``TypeError`` naming the item when it has no question text.
    """
    if isinstance(item, str):
        return {"id": f"q{index}", "question": item, "gold_answer": None, "dataset": dataset}
    get = item.get if isinstance(item, Mapping) else (lambda k, d=None: getattr(item, k, d))
    question = get("question")
    if not isinstance(question, str):
        raise TypeError(f"question #{index} {item!r:.80} has no 'question' string; pass a str, a MiniArith/GSM8K "
                        "problem or a dict with 'question'")
    gold = get("gold_answer")
    if gold is None:
        gold = get("gold")
    if gold is None:
        answer = get("answer")
        if isinstance(answer, str):  # a GSM8K row's 'answer' is the solution text: its gold follows '####'
            gold = extract_gold_answer(answer) if "####" in answer else answer.strip() or None
        else:
            gold = answer
    if dataset is None:
        dataset = get("dataset") or ("miniarith" if get("coa_chain") is not None else
                                     "gsm8k" if get("gold") is not None else None)
    return {"id": str(get("id") or f"q{index}"), "question": question,
            "gold_answer": None if gold is None else str(gold), "dataset": dataset}


def default_coa_prompt(question: str) -> Prompt:
    """One user message holding the question (the sandbox chat format, ``trainers/sandbox/seed.miniarith_prompt``)."""
    return [{"role": "user", "content": question}]


class CoAState(TypedDict, total=False):
    """Graph state (all small, msgpack-serialisable values)."""

    id: str
    dataset: str | None
    question: str
    gold_answer: str | None
    chain: str | None
    decoded: bool
    has_calls: bool
    t_decode_s: float
    valid_chain: bool
    invalid_reason: str | None
    reified: str | None
    values: dict[str, str | None]
    levels: list[list[str]]
    n_calls: int
    t_tools_s: float
    math_mode: str
    pred_answer: str | None
    correct: bool | None
    errors: Annotated[list[str], operator.add]


RECORD_FIELDS = ("id", "dataset", "question", "pred_chain", "valid_chain", "invalid_reason", "reified", "values",
                 "levels", "pred_answer", "gold_answer", "correct", "n_calls", "t_decode_s", "t_tools_s",
                 "math_mode", "errors")


class CoAAgent:
    """Chain-of-Abstraction agent: decode an abstract chain, parse it, reify it with tools, read the answer.

    Args:
        generator: any :class:`~loopwright.sdk.generator.Generator` (greedy ``params`` by default).
        tools: tool mapping for :func:`~loopwright.agents.coa.reify.reify`; ``None`` = the calculator and the
            equation solver (:func:`default_math_tools`).
        params: sampling parameters of the chain decode (``n`` must be 1).
        prompt_fn: question text -> prompt (default :func:`default_coa_prompt`).
        math: ``"system"`` (one SymPy system, the paper's solver) or ``"calculator"`` (call by call, level by
            level, each level's calls concurrently).
        tool_workers, tool_timeout_s: per-level concurrency and per-level timeout (Appendix A.1: 4 and 5.0 s).
        checkpoint_path: a SQLite file for ``SqliteSaver``; ``None`` keeps checkpoints in memory
            (``InMemorySaver``). ``checkpointer`` overrides both with any LangGraph saver.
    """

    def __init__(
        self,
        generator: Generator,
        tools: Mapping[str, Tool] | None = None,
        *,
        params: SamplingParams = DEFAULT_PARAMS,
        prompt_fn: Callable[[str], Prompt] | None = None,
        math: Literal["system", "calculator"] = "system",
        tool_workers: int = 4,
        tool_timeout_s: float = 5.0,
        chain_config: ChainConfig | None = None,
        checkpoint_path: str | Path | None = None,
        checkpointer: Any = None,
    ) -> None:
        if not isinstance(generator, Generator):
            raise TypeError(f"generator={generator!r:.80} is not a loopwright Generator; wrap your model in "
                            "TransformersGenerator / VLLMGenerator / OpenAIGenerator")
        if params.n != 1:
            raise ValueError(f"params.n={params.n}: the agent decodes one chain per question; use n=1")
        if math not in ("system", "calculator"):
            raise ValueError(f"math={math!r} must be 'system' or 'calculator'")
        if tool_workers < 1 or tool_timeout_s <= 0:
            raise ValueError(f"tool_workers={tool_workers} must be >= 1 and tool_timeout_s={tool_timeout_s} > 0")
        self.generator = generator
        self.tools: dict[str, Tool] = default_math_tools() if tools is None else dict(tools)
        self.params = params
        self.prompt_fn = prompt_fn or default_coa_prompt
        self.math = math
        self.tool_workers = tool_workers
        self.tool_timeout_s = tool_timeout_s
        self.chain_config = chain_config
        self._conn: sqlite3.Connection | None = None
        if checkpointer is None:
            if checkpoint_path is not None:
                checkpointer, self._conn = sqlite_checkpointer(checkpoint_path)
            else:
                from langgraph.checkpoint.memory import InMemorySaver

                checkpointer = InMemorySaver()
        self.checkpointer = checkpointer
        self.run_id = uuid.uuid4().hex[:8]
        self._seq = itertools.count()
        self._threads: dict[str, str] = {}  # record id -> its latest graph thread (ids may repeat across calls)
        self.graph = self._build_graph()

    # ------------------------------------------------------------------------------------------ steps

    def decode_many(self, questions: Sequence[Question]) -> list[tuple[str | None, float, str | None]]:
        """Decode one chain per question in one generator call: ``[(chain or None, seconds each, error)]``.

        The batch's wall time is split evenly over its questions (``t_decode_s``).
        """
        if not questions:
            return []
        start = time.perf_counter()
        try:
            outs = self.generator.generate([self.prompt_fn(q["question"]) for q in questions], self.params)
            texts: list[str | None] = [row[0].text if row else None for row in outs]
            err = None
        except Exception as e:  # noqa: BLE001 - a generator failure is one bad record per question, not a crash
            texts, err = [None] * len(questions), f"decode failed: {type(e).__name__}: {e}"
        each = (time.perf_counter() - start) / len(questions)
        return [(t, each, err if t is None else None) for t in texts]

    def parse_update(self, chain: str | None) -> dict[str, Any]:
        """The ``parse`` node's state update for ``chain``."""
        if chain is None:
            return {"valid_chain": False, "has_calls": False, "invalid_reason": "no chain decoded"}
        parsed = parse_chain(chain, self.chain_config)
        if isinstance(parsed, InvalidChain):
            return {"valid_chain": False, "has_calls": False, "invalid_reason": parsed.reason,
                    "errors": [f"invalid chain: {parsed.reason}"]}
        if not parsed.calls:
            return {"valid_chain": True, "has_calls": False, "invalid_reason": None,
                    "errors": ["no calls: the chain has no [expr = yK] or tool call to reify"]}
        return {"valid_chain": True, "has_calls": True, "invalid_reason": None}

    def reify_update(self, chain: str) -> dict[str, Any]:
        """The ``reify`` node's state update: filled text, values as text, answer, tool timings, tool errors."""
        try:
            r = reify(chain, self.tools, math=self.math, config=self.chain_config, max_workers=self.tool_workers,
                      timeout_s=self.tool_timeout_s)
        except Exception as e:  # noqa: BLE001 - reify should never raise; if it does, the record says so
            return {"errors": [f"reify failed: {type(e).__name__}: {e}"], "n_calls": 0, "t_tools_s": 0.0}
        rec = r.to_record()
        errors = list(r.errors)
        if r.answer is None and r.n_calls and not errors:
            errors.append("no answer: the chain's last placeholder has no value")
        return {"reified": rec["reified"], "values": rec["values"], "levels": rec["levels"], "n_calls": r.n_calls,
                "t_tools_s": r.t_tools_s, "math_mode": r.math_mode, "pred_answer": rec["pred_answer"],
                "errors": errors}

    @staticmethod
    def final_update(state: Mapping[str, Any]) -> dict[str, Any]:
        """The ``final_answer`` node: correctness against the gold answer (``None`` when there is no gold)."""
        gold, pred = state.get("gold_answer"), state.get("pred_answer")
        return {"correct": None if gold is None else is_correct(pred, gold)}

    # ------------------------------------------------------------------------------------------ graph

    def _build_graph(self) -> Any:
        from langgraph.graph import END, START, StateGraph

        def decode_chain(state: CoAState) -> dict[str, Any]:
            if state.get("decoded"):  # decoded beforehand (batched or pipelined): keep its chain and timing
                return {}
            [(text, t, err)] = self.decode_many([state])
            return {"chain": text, "decoded": True, "t_decode_s": t, "errors": [err] if err else []}

        def parse(state: CoAState) -> dict[str, Any]:
            return self.parse_update(state.get("chain"))

        def route(state: CoAState) -> str:
            return "reify" if state.get("valid_chain") and state.get("has_calls") else "final_answer"

        def reify_node(state: CoAState) -> dict[str, Any]:
            return self.reify_update(state["chain"] or "")

        g = StateGraph(CoAState)
        g.add_node("decode_chain", decode_chain)
        g.add_node("parse", parse)
        g.add_node("reify", reify_node)
        g.add_node("final_answer", lambda s: self.final_update(s))
        g.add_edge(START, "decode_chain")
        g.add_edge("decode_chain", "parse")
        g.add_conditional_edges("parse", route, ["reify", "final_answer"])
        g.add_edge("reify", "final_answer")
        g.add_edge("final_answer", END)
        return g.compile(checkpointer=self.checkpointer, name="coa_agent")

    def _config(self, qid: str, new: bool = False) -> dict[str, Any]:
        if new:  # a fresh thread per graph run: a repeated id must not resume (and add to) an old state
            self._threads[qid] = f"{self.run_id}:{next(self._seq)}:{qid}"
        elif qid not in self._threads:
            raise KeyError(f"no graph run for record id {qid!r} in this agent; known: {sorted(self._threads)[:5]}")
        return {"configurable": {"thread_id": self._threads[qid]}}

    def finish(self, question: Question, chain: str | None = None, t_decode_s: float = 0.0,
               decode_error: str | None = None) -> dict[str, Any]:
        """Run the graph for one question and return its eval record (Appendix A.1).

        With ``chain`` given (decoded beforehand, e.g. by the pipeline's decoder thread) the ``decode_chain``
        node keeps it; otherwise the node decodes. Never raises on model output or tool failure.
        """
        q = as_question(question)
        decoded = chain is not None or decode_error is not None
        init: dict[str, Any] = {**q, "chain": chain, "decoded": decoded, "t_decode_s": t_decode_s, "n_calls": 0,
                                "t_tools_s": 0.0, "values": {}, "levels": [], "reified": None, "pred_answer": None,
                                "correct": None, "math_mode": "", "errors": [decode_error] if decode_error else []}
        cfg = self._config(q["id"], new=True)
        try:
            out = self.graph.invoke(init, cfg)  # SqliteSaver serialises its connection with its own lock
        except Exception as e:  # noqa: BLE001 - the batch goes on
            out = {**init, "errors": init["errors"] + [f"agent failed: {type(e).__name__}: {e}"]}
        return to_record(out)

    def answer(self, questions: Sequence[Any], *, decode_batch: int = 1) -> list[dict[str, Any]]:
        """Answer ``questions`` (strings, MiniArith/GSM8K problems or dicts) -> one eval record each, in order.

        ``decode_batch > 1`` decodes that many chains per generator call before running their graphs
        (throughput on batched engines); ``1`` decodes inside the graph's ``decode_chain`` node.
        """
        if decode_batch < 1:
            raise ValueError(f"decode_batch={decode_batch} must be >= 1")
        qs = [as_question(item, i) for i, item in enumerate(questions)]
        if decode_batch == 1:
            return [self.finish(q) for q in qs]
        records: list[dict[str, Any]] = []
        for i in range(0, len(qs), decode_batch):
            chunk = qs[i:i + decode_batch]
            for q, (text, t, err) in zip(chunk, self.decode_many(chunk), strict=True):
                records.append(self.finish(q, text, t, err))
        return records

    def state(self, record_id: str) -> dict[str, Any]:
        """The checkpointed graph state of the latest run of question ``record_id`` by this agent (a dict)."""
        return dict(self.graph.get_state(self._config(record_id)).values)

    def close(self) -> None:
        """Close the SQLite checkpoint connection (if any)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> CoAAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def to_record(state: Mapping[str, Any]) -> dict[str, Any]:
    """An Appendix A.1 eval record from a final graph state (``pred_chain`` is the decoded chain text)."""
    rec = {k: state.get(k) for k in RECORD_FIELDS if k != "pred_chain"}
    rec["pred_chain"] = state.get("chain")
    rec["errors"] = list(state.get("errors") or [])
    rec["values"] = dict(state.get("values") or {})
    rec["levels"] = list(state.get("levels") or [])
    rec["n_calls"] = int(state.get("n_calls") or 0)
    rec["t_decode_s"] = float(state.get("t_decode_s") or 0.0)
    rec["t_tools_s"] = float(state.get("t_tools_s") or 0.0)
    if rec["pred_answer"] is not None and not isinstance(rec["pred_answer"], str):
        rec["pred_answer"] = format_value(rec["pred_answer"])
    return {k: rec.get(k) for k in RECORD_FIELDS}
