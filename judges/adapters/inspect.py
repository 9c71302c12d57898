"""inspect-ai adapter: a loopwright Judge as an inspect-ai ``@scorer`` (spec/ecosystem.md §1.9, §4.4).

inspect-ai's model-graded scorers are pointwise only and turn a grader failure into a silent "incorrect";
this scorer brings a loopwright judge (both-order pairwise, logprob soft preference, reward models, provenance)
into any inspect ``Task`` and keeps an unparseable verdict visible as data.

Usage (``pip install inspect-ai``; inspect-ai is imported only when :func:`judge_scorer` is called)::

    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.solver import generate
    from loopwright.judges import PairwiseJudge
    from loopwright.judges.adapters.inspect import judge_scorer
    from loopwright.sdk.generators.openai import OpenAIGenerator

    judge = PairwiseJudge(OpenAIGenerator("http://127.0.0.1:8000/v1", "judge"))   # both orders by default
    task = Task(dataset=[Sample(input="Name a prime above 10.", target="11")],
                solver=generate(), scorer=judge_scorer(judge))                  # win rate vs the target
    inspect_eval(task, model="vllm/my-actor")

Modes:

- ``"pairwise"`` (default): ``judge.compare(input, [output], [target])`` — the model's output (slot A) against
  the sample's target as the reference answer (slot B), AlpacaEval-style. Score value: ``"C"`` win, ``"P"``
  tie, ``"I"`` loss, ``"N"`` invalid verdict, so inspect's ``accuracy()`` is the win rate with ties as 0.5
  (invalid counts 0). Use a judge that judges both orders (``PairwiseJudge`` does by default): the adapter
  always shows the output first.
- ``"pointwise"``: ``judge.score(input, output)``; value = the score, ``"N"`` when invalid; metrics
  ``valid_mean`` (mean over valid verdicts) and ``invalid_rate``.

Every Score carries the Verdict in ``metadata`` (``valid``, ``invalid_reason``, ``preference``, ``p_a``,
``swap``, ``judge`` provenance) and ``reason="grader_failed"`` when invalid. Concurrent samples are
micro-batched: requests arriving within ``batch_wait_s`` go to the judge as one ``compare``/``score`` call (one
batched generate call), run in a worker thread, one call at a time per scorer.
"""

# No ``from __future__ import annotations``: inspect-ai resolves the scorer/metric annotations at runtime, and
# they name classes imported inside :func:`judge_scorer`.
import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

from loopwright.sdk.judge import Judge
from loopwright.sdk.types import Verdict

__all__ = ["judge_scorer", "verdict_to_score_value"]

Mode = Literal["pairwise", "pointwise"]


def verdict_to_score_value(v: Verdict, mode: Mode = "pairwise") -> str | float:
    """The inspect Score value of a Verdict (pairwise: output in slot A vs the reference in slot B)."""
    if not v.valid:
        return "N"
    if mode == "pointwise":
        return float(v.score)  # type: ignore[arg-type]  # a valid pointwise verdict carries a score
    return {"A": "C", "B": "I", "tie": "P"}[v.preference]  # type: ignore[index]


class _MicroBatcher:
    """Collects concurrent single-item requests into one batched judge call (per event loop)."""

    def __init__(self, fn: Callable[[list[tuple[Any, ...]]], list[Verdict]], max_batch: int, wait_s: float):
        self.fn, self.max_batch, self.wait_s = fn, max_batch, wait_s
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Verdict]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._call_lock = threading.Lock()  # a judge's engine is not re-entrant: one batch at a time

    async def submit(self, item: tuple[Any, ...]) -> Verdict:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Verdict] = loop.create_future()
        self._pending.append((item, fut))
        if len(self._pending) >= self.max_batch:
            self._flush(loop)
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush, loop)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Verdict]]]) -> None:
        items = [item for item, _ in batch]
        try:
            out = await asyncio.to_thread(self._call, items)
            if len(out) != len(items):
                raise RuntimeError(f"judge returned {len(out)} verdicts for {len(items)} items")
        except Exception as e:  # hand the error to every waiting sample (inspect records it per sample)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, fut), v in zip(batch, out, strict=True):
            if not fut.done():
                fut.set_result(v)

    def _call(self, items: list[tuple[Any, ...]]) -> list[Verdict]:
        with self._call_lock:
            return self.fn(items)


def _metrics() -> tuple[Any, Any]:
    """``invalid_rate`` and ``valid_mean`` inspect metrics (registered on first use)."""
    from inspect_ai.scorer import Metric, SampleScore, metric

    # inspect reduces values across epochs (``"N"`` becomes 0.0) before metrics see them, so validity is
    # read from the Score metadata, which the reducers keep.
    def is_valid(s: SampleScore) -> bool:
        return bool((s.score.metadata or {}).get("valid", True))

    @metric(name="invalid_rate")
    def invalid_rate() -> Metric:
        """Fraction of samples whose verdict was invalid."""

        def compute(scores: list[SampleScore]) -> float:
            return sum(not is_valid(s) for s in scores) / len(scores) if scores else 0.0

        return compute

    @metric(name="valid_mean")
    def valid_mean() -> Metric:
        """Mean value over samples with a valid verdict; 0.0 when none is valid."""

        def compute(scores: list[SampleScore]) -> float:
            xs = [float(s.score.value) for s in scores if is_valid(s)]  # type: ignore[arg-type]
            return sum(xs) / len(xs) if xs else 0.0

        return compute

    return invalid_rate, valid_mean


def judge_scorer(judge: Judge, *, mode: Mode = "pairwise", name: str = "loopwright_judge",
                 max_batch: int = 32, batch_wait_s: float = 0.05) -> Any:
    """An inspect-ai ``Scorer`` that grades ``state.output.completion`` with ``judge``.

    Args:
        judge: a loopwright Judge implementing ``compare`` (pairwise) or ``score`` (pointwise).
        mode: ``"pairwise"`` (output vs the sample target as reference) or ``"pointwise"``.
        name: the scorer's name in inspect logs.
        max_batch: most samples per judge call; ``batch_wait_s``: how long the first request waits for others.
    """
    if mode not in ("pairwise", "pointwise"):
        raise ValueError(f"mode={mode!r}; use 'pairwise' or 'pointwise'")
    method = "compare" if mode == "pairwise" else "score"
    if all(getattr(type(judge), m) is getattr(Judge, m) for m in (method, f"a{method}")):
        raise TypeError(f"{type(judge).__name__} does not implement {method}(), needed for mode={mode!r} "
                        f"(kinds={sorted(judge.kinds)})")
    if max_batch < 1 or batch_wait_s < 0:
        raise ValueError(f"max_batch={max_batch} must be >= 1 and batch_wait_s={batch_wait_s} >= 0")

    from inspect_ai.scorer import Score, Target, accuracy, scorer, stderr
    from inspect_ai.solver import TaskState

    invalid_rate, valid_mean = _metrics()

    def call(items: Sequence[tuple[Any, ...]]) -> list[Verdict]:
        cols = list(zip(*items, strict=True))
        if mode == "pairwise":
            return judge.compare(list(cols[0]), list(cols[1]), list(cols[2]))
        return judge.score(list(cols[0]), list(cols[1]))

    batcher = _MicroBatcher(call, max_batch, batch_wait_s)
    metrics = [accuracy(), stderr(), invalid_rate()] if mode == "pairwise" else [valid_mean(), invalid_rate()]

    @scorer(metrics=metrics, name=name)
    def loopwright_judge() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            output = state.output.completion if state.output is not None else ""
            item = (state.input_text, output, target.text) if mode == "pairwise" else (state.input_text, output)
            v = await batcher.submit(item)
            meta = v.model_dump(mode="json", include={"valid", "invalid_reason", "preference", "p_a", "score",
                                                      "swap", "judge"})
            return Score(value=verdict_to_score_value(v, mode), answer=output,
                         explanation=v.reasoning if v.valid else v.invalid_reason,
                         reason=None if v.valid else "grader_failed", metadata=meta)

        return score

    return loopwright_judge()
