"""A loopwright Judge as a TRL reward function (spec/ecosystem.md §4.1, TRL 1.16's ``RewardFunc`` contract).

TRL has had no judges since 1.1 (``trl#5485``); its integration point is the reward function::

    fn(prompts, completions, completion_ids=None, **kwargs) -> list[float | None]

- :func:`as_reward_func` -- one reward per completion (``GRPOTrainer``, ``RLOOTrainer``, ``OnlineDPOTrainer``).
  ``mode="pointwise"``: the judge's score; ``mode="pairwise"``: the judge's preference for the completion over a
  reference answer taken from a dataset column (TRL forwards every extra column as a keyword argument).
  Unknown keyword arguments (``trainer_state``, ``environments``, extra columns) are accepted and ignored; an
  invalid Verdict gives ``None`` (TRL maps it to NaN and nan-sums across reward functions) and is counted; when
  TRL passes ``log_metric``/``log_extra`` (GRPO, RLOO) the adapter logs ``judge/invalid_rate`` and one
  ``judge_reasoning`` entry per completion. ``async_=True`` returns an object whose ``__call__`` is a coroutine
  function: GRPO/RLOO detect it (``trl.trainer.utils.is_async_callable``) and ``asyncio.gather`` it with other
  async rewards; it awaits the judge's ``ascore`` / ``acompare`` (LLM judges: the generator's ``agenerate``; sync
  judges: a worker thread), so the event loop is not blocked.
  ``OnlineDPOTrainer`` 1.16 calls reward functions synchronously: give it the sync variant.
- :func:`as_pairwise_reward_func` -- OnlineDPO's *pairwise layout* (an implementation detail of TRL 1.16, not
  documented API; pinned by tests/judges/test_trl_adapters.py): the trainer scores ``2*B`` completions with
  ``prompts = 2*prompts``; completion ``i`` and ``i+B`` answer the same prompt, and the one with the higher reward
  becomes "chosen" (``first_half >= second_half``). The adapter judges each pair once and returns 1/0 (0.5/0.5
  for a tie). An invalid pair must not be returned as ``None``/``None``: both would nan-sum to 0 and ``>=`` would
  silently make the first completion "chosen" (§4.1 pitfall). It returns equal rewards (0.5/0.5) for it and
  counts it in ``stats["invalid_pairs"]``, so the pair's "preference" is visibly arbitrary and measured.
- :class:`RewardFuncMixin` -- gives a Judge subclass ``judge.as_reward_func(...)`` and
  ``judge.as_pairwise_reward_func(...)``.

The adapters import nothing from TRL: they only follow its calling convention, so they also work with any
framework that calls reward functions the same way.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

from ...sdk.types import Verdict

__all__ = [
    "ONLINE_DPO_PAIRING_TRL",
    "AsyncJudgeRewardFunc",
    "JudgeRewardFunc",
    "PairwiseRewardFunc",
    "RewardFuncMixin",
    "as_pairwise_reward_func",
    "as_reward_func",
    "completion_text",
    "reward_name",
]

ONLINE_DPO_PAIRING_TRL = ("1.16",)
"""TRL minor versions whose ``OnlineDPOTrainer`` pairing (``i`` with ``i+B``) the pairwise adapter was checked
against. Another version gives a warning; the adapter also checks at every call that ``prompts[i] ==
prompts[i+B]``, the visible part of the layout."""


def _content_text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if parts and all(isinstance(t, str) for t in parts):
            return "".join(parts)
    return None


def completion_text(completion: Any) -> str | None:
    """The text of one TRL completion: a string, or a conversational ``[{"role": "assistant", "content": ...}]``
    list (the assistant messages' contents joined by newlines; tool messages are skipped). ``None`` when it has
    no readable assistant text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        texts = [_content_text(m.get("content")) for m in completion
                 if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        texts = [t for t in texts if t is not None]
        if texts:
            return "\n".join(texts)
    return None


def _prompt(prompt: Any) -> Any:
    """A TRL prompt as a loopwright Prompt: strings as is; messages with content parts flattened to text."""
    if isinstance(prompt, (list, tuple)):
        out = []
        for m in prompt:
            if isinstance(m, dict) and not isinstance(m.get("content"), str):
                text = _content_text(m.get("content"))
                m = {**m, "content": text if text is not None else ""}
            out.append(m)
        return out
    return prompt


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", name).strip("_") or "judge"


def reward_name(judge: Any) -> str:
    """A short, stable reward name for TRL's ``rewards/<name>/mean``: the judge's ``short_name`` when it has one
    (LLM judges: the ``name=`` they were given, else their class in snake case, e.g. ``pairwise_judge``), else its
    ``name``, else its class. Never a model path, which would change from one machine to another."""
    short = getattr(judge, "short_name", None) or getattr(judge, "name", None)
    if not short or "/" in short or "(" in short:
        short = re.sub(r"(?<!^)(?=[A-Z])", "_", type(judge).__name__).lower()
    return short


class JudgeRewardFunc:
    """A Judge as a synchronous TRL reward function (see the module docstring). Use :func:`as_reward_func`.

    ``stats`` accumulates ``calls``, ``items`` and ``invalid`` over the object's life;
    ``last_verdicts`` holds the Verdicts of the latest call.
    """

    def __init__(
        self,
        judge: Any,
        *,
        name: str | None = None,
        mode: Literal["pointwise", "pairwise"] | None = None,
        reference_column: str = "reference",
        metric_prefix: str = "judge",
    ) -> None:
        kinds = getattr(judge, "kinds", None)
        if mode is None:  # the judge's own kind: a pairwise-only judge rewards against the reference column
            mode = "pairwise" if kinds and "pointwise" not in kinds and "pairwise" in kinds else "pointwise"
        if mode not in ("pointwise", "pairwise"):
            raise ValueError(f"mode={mode!r}; use 'pointwise' (judge.score) or 'pairwise' (judge.compare against "
                             f"the dataset column {reference_column!r})")
        if kinds and mode not in kinds:
            raise ValueError(f"{type(judge).__name__} supports kinds={sorted(kinds)}, not mode={mode!r}")
        self.judge = judge
        self.mode = mode
        self.reference_column = reference_column
        self.metric_prefix = metric_prefix
        self.__name__ = _sanitize(name or reward_name(judge))
        self.__qualname__ = self.__name__
        self.stats: dict[str, int] = {"calls": 0, "items": 0, "invalid": 0}
        self.last_verdicts: list[Verdict] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__!r}, mode={self.mode!r}, judge={type(self.judge).__name__})"

    # -- the three phases, shared by the sync and async variants

    def _inputs(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]) -> tuple[
            list[Any], list[str | None], list[str] | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; TRL passes one prompt per "
                             "completion")
        refs = None
        if self.mode == "pairwise":
            if self.reference_column not in kwargs:
                raise ValueError(f"mode='pairwise' compares each completion with the dataset column "
                                 f"{self.reference_column!r}, which TRL did not pass; add that column to the "
                                 "dataset or set reference_column=")
            refs = [completion_text(r) or "" for r in kwargs[self.reference_column]]
        return [_prompt(p) for p in prompts], [completion_text(c) for c in completions], refs

    def _call(self, prompts: list[Any], texts: list[str | None],
              refs: list[str] | None) -> tuple[list[int], str, tuple[list[Any], ...]]:
        """The items with text, the judge method (``score`` / ``compare``) and its arguments for them."""
        ok = [i for i, t in enumerate(texts) if t is not None]
        sub_p = [prompts[i] for i in ok]
        sub_t = [texts[i] for i in ok]
        if self.mode == "pointwise":
            return ok, "score", (sub_p, sub_t)
        return ok, "compare", (sub_p, sub_t, [refs[i] for i in ok])  # type: ignore[index]

    def _assemble(self, ok: list[int], got: list[Verdict], n: int) -> list[Verdict]:
        if len(got) != len(ok):
            raise ValueError(f"{type(self.judge).__name__} returned {len(got)} verdicts for {len(ok)} items")
        verdicts: list[Verdict | None] = [None] * n
        for i, v in zip(ok, got, strict=True):
            verdicts[i] = v
        kind = "pointwise" if self.mode == "pointwise" else "pairwise"
        return [v if v is not None else Verdict(kind=kind, valid=False,
                                                invalid_reason="the completion has no assistant text")
                for v in verdicts]

    def _judge(self, prompts: list[Any], texts: list[str | None], refs: list[str] | None) -> list[Verdict]:
        ok, method, args = self._call(prompts, texts, refs)
        got = getattr(self.judge, method)(*args) if ok else []
        return self._assemble(ok, got, len(texts))

    async def _ajudge(self, prompts: list[Any], texts: list[str | None], refs: list[str] | None) -> list[Verdict]:
        """:meth:`_judge` through the judge's ``ascore`` / ``acompare`` (a duck-typed judge without them: its sync
        method in a worker thread)."""
        ok, method, args = self._call(prompts, texts, refs)
        if not ok:
            return self._assemble(ok, [], len(texts))
        afn = getattr(self.judge, f"a{method}", None)
        got = await afn(*args) if afn is not None else await asyncio.to_thread(getattr(self.judge, method), *args)
        return self._assemble(ok, got, len(texts))

    def _rewards(self, verdicts: list[Verdict], kwargs: dict[str, Any]) -> list[float | None]:
        rewards = [_reward(v, self.mode) for v in verdicts]
        n_invalid = sum(r is None for r in rewards)
        self.stats["calls"] += 1
        self.stats["items"] += len(rewards)
        self.stats["invalid"] += n_invalid
        self.last_verdicts = verdicts
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        log_extra: Callable[[str, list], None] | None = kwargs.get("log_extra")
        if callable(log_metric) and rewards:
            log_metric(f"{self.metric_prefix}/invalid_rate", n_invalid / len(rewards))
        if callable(log_extra):
            log_extra(f"{self.metric_prefix}_reasoning",
                      [v.reasoning if v.valid else f"INVALID: {v.invalid_reason}" for v in verdicts])
        return rewards

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **kwargs: Any) -> list[float | None]:
        p, t, refs = self._inputs(prompts, completions, kwargs)
        return self._rewards(self._judge(p, t, refs), kwargs)


class AsyncJudgeRewardFunc(JudgeRewardFunc):
    """The ``async def`` variant: TRL GRPO/RLOO ``asyncio.gather`` it with the other async reward functions.

    It awaits the judge's ``ascore`` / ``acompare``: native for LLM judges (the generator's ``agenerate``, e.g.
    concurrent requests to an OpenAI-compatible server), a worker thread for sync judges (reward models, the gold
    checker), so the event loop is never blocked. ``log_metric``/``log_extra`` are called back on the event-loop
    thread.
    """

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],  # type: ignore[override]
                       completion_ids: Any = None, **kwargs: Any) -> list[float | None]:
        p, t, refs = self._inputs(prompts, completions, kwargs)
        verdicts = await self._ajudge(p, t, refs)
        return self._rewards(verdicts, kwargs)


def _reward(v: Verdict, mode: str) -> float | None:
    if not v.valid:
        return None
    if mode == "pointwise":
        return None if v.score is None else float(v.score)
    if v.p_a is not None:
        return float(v.p_a)
    return {"A": 1.0, "B": 0.0, "tie": 0.5}.get(v.preference)  # type: ignore[arg-type]


def as_reward_func(
    judge: Any,
    *,
    name: str | None = None,
    mode: Literal["pointwise", "pairwise"] | None = None,
    async_: bool = False,
    reference_column: str = "reference",
    metric_prefix: str = "judge",
) -> JudgeRewardFunc:
    """``judge`` as a TRL 1.16 reward function ``fn(prompts, completions, completion_ids=None, **kw)``.

    Args:
        judge: any loopwright Judge (``score`` for pointwise, ``compare`` for pairwise).
        name: the function's ``__name__`` (TRL logs ``rewards/<name>/mean``); default :func:`reward_name`, e.g.
            ``pairwise_judge``.
        mode: default: the judge's kind (``"pairwise"`` for a pairwise-only judge such as ``PairwiseJudge``, else
            ``"pointwise"``). ``"pointwise"`` -> reward = ``Verdict.score``; ``"pairwise"`` -> reward = the judge's preference for
            the completion (as A) over the dataset column ``reference_column`` (as B): ``p_a`` when the judge gives
            one, else 1 / 0.5 / 0 for A / tie / B.
        async_: return the ``async def`` variant (GRPO/RLOO only; OnlineDPO calls reward functions synchronously).
        metric_prefix: names ``<prefix>/invalid_rate`` (``log_metric``) and ``<prefix>_reasoning`` (``log_extra``).

    Returns a callable object (picklable if the judge is) with ``stats`` and ``last_verdicts`` attributes.
    """
    cls = AsyncJudgeRewardFunc if async_ else JudgeRewardFunc
    return cls(judge, name=name, mode=mode, reference_column=reference_column, metric_prefix=metric_prefix)


class PairwiseRewardFunc:
    """A pairwise Judge in TRL 1.16 ``OnlineDPOTrainer``'s pairing layout. Use :func:`as_pairwise_reward_func`.

    ``stats``: ``calls``, ``pairs``, ``invalid_pairs`` (given 0.5/0.5 and counted), ``ties``.
    """

    def __init__(self, judge: Any, *, name: str | None = None, soft: bool = False) -> None:
        kinds = getattr(judge, "kinds", None)
        if kinds and "pairwise" not in kinds:
            raise ValueError(f"{type(judge).__name__} is not a pairwise judge (kinds={sorted(kinds)}); "
                             "use a judge with compare()")
        self.judge = judge
        self.soft = soft
        base = name or f"{reward_name(judge)}_pairwise"
        self.__name__ = _sanitize(base)
        self.__qualname__ = self.__name__
        self.stats: dict[str, int] = {"calls": 0, "pairs": 0, "invalid_pairs": 0, "ties": 0}
        self.last_verdicts: list[Verdict] = []

    def __repr__(self) -> str:
        return f"PairwiseRewardFunc({self.__name__!r}, judge={type(self.judge).__name__})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **kwargs: Any) -> list[float]:
        n = len(completions)
        if n % 2 or len(prompts) != n:
            raise ValueError(f"the OnlineDPO pairwise layout needs 2*B completions with prompts=2*prompts; got "
                             f"{len(prompts)} prompts and {n} completions")
        b = n // 2
        ps = [_prompt(p) for p in prompts]
        for i in range(b):
            if ps[i] != ps[i + b]:
                raise ValueError(
                    f"prompt {i} differs from prompt {i + b}: this is not TRL OnlineDPO's pairing layout (completion i "
                    f"paired with i+B), checked for trl {', '.join(ONLINE_DPO_PAIRING_TRL)}; the installed TRL may "
                    "have changed it, so pin trl or use as_reward_func")
        texts = [completion_text(c) for c in completions]
        ok = [i for i in range(b) if texts[i] is not None and texts[i + b] is not None]
        verdicts: list[Verdict] = [Verdict(kind="pairwise", valid=False,
                                           invalid_reason="a completion of the pair has no assistant text")] * b
        if ok:
            got = self.judge.compare([ps[i] for i in ok], [texts[i] for i in ok], [texts[i + b] for i in ok])
            for i, v in zip(ok, got, strict=True):
                verdicts[i] = v
        first, second = [0.5] * b, [0.5] * b
        for i, v in enumerate(verdicts):
            if not v.valid:
                self.stats["invalid_pairs"] += 1
                continue
            if self.soft and v.p_a is not None:
                first[i], second[i] = float(v.p_a), 1.0 - float(v.p_a)
            elif v.preference == "A":
                first[i], second[i] = 1.0, 0.0
            elif v.preference == "B":
                first[i], second[i] = 0.0, 1.0
            else:
                self.stats["ties"] += 1
        self.stats["calls"] += 1
        self.stats["pairs"] += b
        self.last_verdicts = verdicts
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and b:
            log_metric("judge/invalid_pair_rate", sum(not v.valid for v in verdicts) / b)
        return first + second


def as_pairwise_reward_func(judge: Any, *, name: str | None = None, soft: bool = False) -> PairwiseRewardFunc:
    """A pairwise ``judge`` as a reward function for TRL 1.16 ``OnlineDPOTrainer`` (``trl.experimental.online_dpo``).

    Completion ``i`` (answer A) and ``i+B`` (answer B) are judged together with ``judge.compare``; rewards are
    1/0 for the winner/loser, 0.5/0.5 for a tie and for an invalid verdict (counted in ``stats``); ``soft=True``
    uses ``p_a``/``1-p_a`` when the verdict has one. Warns when the installed TRL is not a checked version.
    """
    try:
        version = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None and ".".join(version.split(".")[:2]) not in ONLINE_DPO_PAIRING_TRL:
        warnings.warn(f"as_pairwise_reward_func follows the OnlineDPO pairing of trl {ONLINE_DPO_PAIRING_TRL}; "
                      f"trl {version} is installed: rerun tests/judges/test_trl_adapters.py before relying on it",
                      stacklevel=2)
    return PairwiseRewardFunc(judge, name=name, soft=soft)


class RewardFuncMixin:
    """Adds ``as_reward_func`` / ``as_pairwise_reward_func`` methods to a Judge subclass
    (``class MyJudge(RewardFuncMixin, Judge)``). Lives in judges/ because sdk/ may not import judges/."""

    def as_reward_func(self, **kwargs: Any) -> JudgeRewardFunc:
        """This judge as a TRL reward function; keyword arguments as in :func:`as_reward_func`."""
        return as_reward_func(self, **kwargs)

    def as_pairwise_reward_func(self, **kwargs: Any) -> PairwiseRewardFunc:
        """This judge in TRL OnlineDPO's pairwise layout; keyword arguments as in :func:`as_pairwise_reward_func`."""
        return as_pairwise_reward_func(self, **kwargs)

