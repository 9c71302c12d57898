"""Executors: run one Generator over many prompts, in this process or on Ray Data, with the same result.

DESIGN.md ("Scale-out"): generation over large datasets runs on Ray Data (``map_batches`` with an actor pool
holding a Generator); the local executor and the Ray executor take the same components and produce the same
outputs. Both cut the prompts into the same consecutive batches of ``batch_size`` and hand each batch to
``generate`` unchanged, so even a backend whose seeded sampling or padding depends on the batch's
composition gives identical results on both. (Ray runs each actor's torch with ``num_cpus_per_actor``
threads; a different thread count reorders float reductions, so logprobs can differ in the last bits and,
on a rare near-tie, a token. Sampled tokens matched in every test so far.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import BackendError, ConfigError
from .generator import Generator, run_sync
from .judge import Judge
from .types import Completion, Prompt, SamplingParams, Verdict, normalize_prompt


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _batches(n: int, batch_size: int) -> list[range]:
    return [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _check_result(result: list[list[Completion]], expected: int, who: str) -> list[list[Completion]]:
    if len(result) != expected:
        raise BackendError(f"{who} returned {len(result)} results for a batch of {expected} prompts")
    return result


# --------------------------------------------------------------------------------------------- local


@runtime_checkable
class Executor(Protocol):
    """What stages call: ``run(prompts, params) -> list[list[Completion]]`` (one row per prompt, in order)."""

    def run(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]: ...


class LocalExecutor:
    """Run a Generator over prompts in this process, in batches of ``batch_size``, with a progress bar.

    ``max_concurrency > 1`` keeps that many batches in flight through ``agenerate``: meant for I/O-bound
    backends (OpenAI-compatible servers). In-process engines (transformers, vLLM) are not thread-safe and
    gain nothing from it; leave it at 1 for them. Results keep input order. The progress bar (tqdm, counting
    prompts) shows only when ``progress=True`` and stderr is a terminal.
    """

    def __init__(self, generator: Generator, batch_size: int = 16, max_concurrency: int = 1, progress: bool = True):
        if not isinstance(generator, Generator):
            raise TypeError(f"LocalExecutor needs a loopwright Generator, got {type(generator).__name__}")
        _check_positive(batch_size=batch_size, max_concurrency=max_concurrency)
        self.generator = generator
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.progress = progress

    def _bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        show = self.progress and sys.stderr.isatty()
        return tqdm(total=total, desc=desc, unit="prompt", disable=not show)

    def run(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        """``generate`` over all ``prompts``; one inner list of ``params.n`` completions per prompt, in order."""
        params = params or SamplingParams()
        prompts = list(prompts)
        if self.max_concurrency > 1:
            return run_sync(self.arun(prompts, params))
        who = type(self.generator).__name__
        out: list[list[Completion]] = []
        with self._bar(len(prompts), f"generate ({who})") as bar:
            for rng in _batches(len(prompts), self.batch_size):
                batch = prompts[rng.start : rng.stop]
                out.extend(_check_result(self.generator.generate(batch, params), len(batch), who))
                bar.update(len(batch))
        return out

    def judge(self, judge: Judge | Callable[[], Judge], batch_size: int | None = None) -> Judge:
        """The judge that stages run next to this executor: ``judge`` itself (a factory is called here).
        ``batch_size`` is accepted for symmetry with :meth:`RayExecutor.judge`; local calls keep the caller's
        batches."""
        return _build_judge(judge)

    async def arun(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        """Async ``run``: up to ``max_concurrency`` batches in flight through ``agenerate``."""
        params = params or SamplingParams()
        prompts = list(prompts)
        who = type(self.generator).__name__
        ranges = _batches(len(prompts), self.batch_size)
        results: list[list[list[Completion]] | None] = [None] * len(ranges)
        sem = asyncio.Semaphore(self.max_concurrency)
        with self._bar(len(prompts), f"generate ({who})") as bar:

            async def one(i: int, rng: range) -> None:
                async with sem:
                    batch = prompts[rng.start : rng.stop]
                    results[i] = _check_result(await self.generator.agenerate(batch, params), len(batch), who)
                    bar.update(len(batch))

            await asyncio.gather(*(one(i, rng) for i, rng in enumerate(ranges)))
        return [row for part in results if part is not None for row in part]


# --------------------------------------------------------------------------------------------- Ray

#: ``ray.init`` defaults for a single machine, from spec/environment.md §5: a 200 MiB object store instead
#: of 30% of RAM in /dev/shm, no dashboard, worker logs not streamed into the driver.
RAY_LOCAL_INIT = {
    "num_cpus": 2,
    "object_store_memory": 200 * 2**20,
    "include_dashboard": False,
    "log_to_driver": False,
}


def _connects_to_cluster(init_kwargs: dict[str, Any]) -> bool:
    return bool(init_kwargs.get("address") or os.environ.get("RAY_ADDRESS"))


def init_ray(ray_init_kwargs: dict[str, Any] | None = None) -> bool:
    """Start a local Ray (loopback only) unless Ray is already initialised; True if this call started it.

    For a local Ray, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is put in the environment before ``import ray``
    (Ray reads it at import): Ray then binds 127.0.0.1 and reports the node as 127.0.0.1 instead of
    listening on every interface with the machine's public IP (``_node_ip_address="127.0.0.1"`` alone is
    silently overridden; spec/environment.md §5). Pass ``{"address": "auto"}`` (or set ``RAY_ADDRESS``) to
    join an existing cluster instead; the local defaults are then not applied.
    """
    kwargs = dict(ray_init_kwargs or {})
    cluster = _connects_to_cluster(kwargs)
    if not cluster:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if not cluster:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise ConfigError(
                "ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set, so a local Ray would listen "
                "on every interface; set that variable before `import ray` (or import loopwright's executors "
                "first), or pass ray_init_kwargs={'address': ...} to join an existing cluster"
            )
        kwargs = {**RAY_LOCAL_INIT, **kwargs}
    ray.init(**kwargs)
    return True


def shutdown_ray() -> None:
    """Shut Ray down if it is running in this process (a no-op otherwise)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


class _GeneratorActor:
    """Ray Data actor UDF: builds the Generator once per actor, then generates one pre-formed batch per row.

    Prompts, params and completions cross process boundaries as JSON strings: no pickled user objects in
    the data path (only the factory is pickled, once per actor).
    """

    def __init__(self, generator_factory: Callable[[], Generator], params_json: str):
        self.generator = generator_factory()
        if not isinstance(self.generator, Generator):
            raise TypeError(f"generator_factory must build a loopwright Generator, got {type(self.generator).__name__}")
        self.params = SamplingParams.model_validate_json(params_json)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out_idx, out_comps = [], []
        for idx_json, prompts_json in zip(batch["idx"], batch["prompts"], strict=True):
            prompts = json.loads(prompts_json)
            result = _check_result(
                self.generator.generate(prompts, self.params), len(prompts), type(self.generator).__name__
            )
            out_idx.append(idx_json)
            out_comps.append(json.dumps([[c.model_dump(mode="json") for c in row] for row in result]))
        return {"idx": out_idx, "completions": out_comps}


class RayExecutor:
    """Run a Generator over prompts on Ray Data: ``map_batches`` over an actor pool of ``num_actors`` actors,
    each holding its own Generator built by ``generator_factory``.

    ``generator_factory`` is a picklable zero-argument callable run inside each actor, e.g.
    ``functools.partial(TransformersGenerator, model_dir)`` (a model is loaded per actor, never shipped).
    Each Ray row is one batch of ``batch_size`` consecutive prompts (Ray Data's own batch boundaries follow
    its blocks, so rows-per-prompt would batch differently from :class:`LocalExecutor`); the results are
    sorted back into input order. Ray is started on first use by :func:`init_ray` unless already running.
    """

    def __init__(
        self,
        generator_factory: Callable[[], Generator],
        batch_size: int = 16,
        num_actors: int = 1,
        num_cpus_per_actor: float = 1,
        num_gpus_per_actor: float = 0,
        ray_init_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ):
        if not callable(generator_factory) or isinstance(generator_factory, Generator):
            raise TypeError(
                "RayExecutor takes a zero-argument factory that builds the Generator inside each actor, e.g. "
                f"functools.partial(TransformersGenerator, model_dir); got {generator_factory!r:.80}"
            )
        _check_positive(batch_size=batch_size, num_actors=num_actors)
        if num_cpus_per_actor < 0 or num_gpus_per_actor < 0:
            raise ConfigError(
                f"num_cpus_per_actor / num_gpus_per_actor must be >= 0, got {num_cpus_per_actor} / {num_gpus_per_actor}"
            )
        self.generator_factory = generator_factory
        self.batch_size = batch_size
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.num_gpus_per_actor = num_gpus_per_actor
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.progress = progress
        self._started_ray = False

    def run(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        """Same contract as :meth:`LocalExecutor.run`."""
        params = params or SamplingParams()
        normalized = [normalize_prompt(p) for p in prompts]
        if not normalized:
            return []
        self._started_ray = init_ray(self.ray_init_kwargs) or self._started_ray
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = self.progress
        ranges = _batches(len(normalized), self.batch_size)
        items = [
            {"idx": json.dumps(list(rng)), "prompts": json.dumps(normalized[rng.start : rng.stop], ensure_ascii=False)}
            for rng in ranges
        ]
        ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * self.num_actors))
        ds = ds.map_batches(
            _GeneratorActor,
            fn_constructor_kwargs={"generator_factory": self.generator_factory, "params_json": params.model_dump_json()},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.num_actors),
            num_cpus=self.num_cpus_per_actor,
            num_gpus=self.num_gpus_per_actor,
        )
        out: list[list[Completion] | None] = [None] * len(normalized)
        for row in ds.take_all():
            idx = json.loads(row["idx"])
            comps = json.loads(row["completions"])
            if len(idx) != len(comps):
                raise BackendError(f"a Ray actor returned {len(comps)} results for {len(idx)} prompts")
            for i, row_comps in zip(idx, comps, strict=True):
                out[i] = [Completion.model_validate(c) for c in row_comps]
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            raise BackendError(f"Ray Data returned no result for prompts {missing[:10]} (of {len(missing)} missing)")
        return [r for r in out if r is not None]

    def judge(self, judge: Judge | Callable[[], Judge], batch_size: int | None = None) -> Judge:
        """A :class:`RayJudge` over ``num_actors`` actors with this executor's resources and Ray settings.

        ``judge`` is a picklable zero-argument factory (``functools.partial(RewardModelJudge, path)``), built
        inside each actor as the generation actors build the generator; a :class:`RayJudge` is returned as is.
        A Judge *instance* cannot be shipped (it holds a loaded model): pass its factory instead.
        """
        if isinstance(judge, RayJudge):
            return judge
        if isinstance(judge, Judge):
            raise TypeError(f"RayExecutor.judge takes a zero-argument factory that builds the judge inside each actor, "
                            f"e.g. functools.partial({type(judge).__name__}, model_dir); got a built "
                            f"{type(judge).__name__}")
        return RayJudge(judge, num_actors=self.num_actors, batch_size=batch_size or self.batch_size,
                        num_cpus_per_actor=self.num_cpus_per_actor, num_gpus_per_actor=self.num_gpus_per_actor,
                        ray_init_kwargs=self.ray_init_kwargs)

    def shutdown(self) -> None:
        """Shut Ray down if this executor started it (a Ray someone else started is left running)."""
        if self._started_ray:
            shutdown_ray()
            self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# --------------------------------------------------------------------------------------------- judges on Ray


def _build_judge(judge: Judge | Callable[[], Judge]) -> Judge:
    if isinstance(judge, Judge):
        return judge
    if not callable(judge):
        raise TypeError(f"expected a loopwright Judge or a zero-argument factory that builds one, got {judge!r:.80}")
    built = judge()
    if not isinstance(built, Judge):
        raise TypeError(f"the judge factory built a {type(built).__name__}, not a loopwright Judge")
    return built


def llm_judge_factory(judge_cls: Callable[..., Judge], generator_factory: Callable[[], Generator], *args: Any,
                      **kwargs: Any) -> Callable[[], Judge]:
    """A picklable factory for an LLM judge, built inside each actor as ``judge_cls(generator_factory(), *args,
    **kwargs)``, e.g. ``llm_judge_factory(PairwiseJudge, functools.partial(VLLMGenerator, path))``: the judge's
    generator is loaded in the actor, never shipped."""
    return functools.partial(_build_llm_judge, judge_cls, generator_factory, args, kwargs)


def _build_llm_judge(judge_cls: Callable[..., Judge], generator_factory: Callable[[], Generator], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Judge:
    return judge_cls(generator_factory(), *args, **kwargs)


def judge_for(executor: Any, judge: Judge | Callable[[], Judge], batch_size: int | None = None
              ) -> tuple[Judge, bool]:
    """``(judge to call, whether the caller owns it)`` for a stage that got an executor and a judge or factory.

    A built Judge is used as given (in this process, or in its own actors if it is a :class:`RayJudge`). A
    factory goes to ``executor.judge``: a :class:`RayExecutor` runs it in actors with ``batch_size`` items per
    actor call (stages pass the batch size of their local judge calls, so both runs judge the same batches), a
    :class:`LocalExecutor` builds it here. The caller shuts an owned :class:`RayJudge` down when done, so its
    actors free their CPUs for the next stage's generation actors.
    """
    if isinstance(judge, Judge):
        return judge, False
    maker = getattr(executor, "judge", None)
    built = maker(judge, batch_size=batch_size) if callable(maker) else _build_judge(judge)
    return built, True


def release_judge(judge: Judge, owned: bool) -> None:
    """Stop an owned :class:`RayJudge`'s actors (no-op for anything else)."""
    if owned and isinstance(judge, RayJudge):
        judge.shutdown()


class _JudgeWorker:
    """Ray actor: builds the Judge once from its factory, then runs ``score``/``compare``/``rank`` on JSON batches.

    Inputs and Verdicts cross process boundaries as JSON (no pickled user objects in the data path; only the
    factory is pickled, once per actor), as in :class:`_GeneratorActor`.
    """

    def __init__(self, judge_factory: Callable[[], Judge], num_threads: int | None):
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.judge = _build_judge(judge_factory)
        self.calls = self.items = 0

    def stats(self) -> dict[str, int]:
        return {"pid": os.getpid(), "calls": self.calls, "items": self.items}

    def info(self) -> str:
        j = self.judge
        return json.dumps({"name": j.name, "kinds": sorted(j.kinds), "both_orders": getattr(j, "both_orders", None),
                           "type": type(j).__name__})

    def call(self, method: str, args_json: str) -> str:
        args = json.loads(args_json)
        verdicts = getattr(self.judge, method)(*args)
        n = len(args[0])
        self.calls += 1
        self.items += n
        if len(verdicts) != n or not all(isinstance(v, Verdict) for v in verdicts):
            raise BackendError(f"{type(self.judge).__name__}.{method} returned {len(verdicts)} items for {n} inputs; "
                               "a Judge must return one Verdict per item")
        return json.dumps([v.model_dump(mode="json") for v in verdicts])


class RayJudge(Judge):
    """A Judge whose ``score`` / ``compare`` / ``rank`` run in ``num_actors`` Ray actors, each holding its own judge.

    ``judge_factory`` is a picklable zero-argument callable run inside each actor (a reward model or an LLM judge
    with its generator is loaded per actor, never shipped). A call is cut into consecutive batches of
    ``batch_size`` items, spread over the actors with ``ray.util.ActorPool`` and put back in input order, so the
    Verdicts equal the wrapped judge's own (up to float rounding from a different torch thread count; see the
    module docstring). The actors start on first use (reading ``name`` / ``kinds`` starts them too) and stay up,
    each holding ``num_cpus_per_actor`` CPUs and ``num_gpus_per_actor`` GPUs, until :meth:`shutdown` or the end
    of a ``with`` block: stop them before the next generation stage needs those CPUs. Stages that build a
    RayJudge themselves (:func:`judge_for`) stop it when they finish.
    """

    def __init__(
        self,
        judge_factory: Callable[[], Judge],
        *,
        num_actors: int = 1,
        batch_size: int = 32,
        num_cpus_per_actor: float = 1,
        num_gpus_per_actor: float = 0,
        ray_init_kwargs: dict[str, Any] | None = None,
    ):
        if isinstance(judge_factory, Judge) or not callable(judge_factory):
            raise TypeError("RayJudge takes a zero-argument factory that builds the Judge inside each actor, e.g. "
                            f"functools.partial(RewardModelJudge, model_dir); got {judge_factory!r:.80}")
        _check_positive(batch_size=batch_size, num_actors=num_actors)
        if num_cpus_per_actor < 0 or num_gpus_per_actor < 0:
            raise ConfigError(
                f"num_cpus_per_actor / num_gpus_per_actor must be >= 0, got {num_cpus_per_actor} / {num_gpus_per_actor}"
            )
        self.judge_factory = judge_factory
        self.num_actors = num_actors
        self.batch_size = batch_size
        self.num_cpus_per_actor = num_cpus_per_actor
        self.num_gpus_per_actor = num_gpus_per_actor
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self._actors: list[Any] = []
        self._info: dict[str, Any] = {}
        self._started_ray = False

    # -- lifecycle

    def start(self) -> RayJudge:
        """Start the actors (Ray too, via :func:`init_ray`, unless running) and read the judge's name and kinds."""
        if self._actors:
            return self
        self._started_ray = init_ray(self.ray_init_kwargs) or self._started_ray
        import ray

        threads = max(1, int(self.num_cpus_per_actor)) if self.num_cpus_per_actor else 1
        cls = ray.remote(_JudgeWorker).options(num_cpus=self.num_cpus_per_actor, num_gpus=self.num_gpus_per_actor)
        self._actors = [cls.remote(self.judge_factory, threads) for _ in range(self.num_actors)]
        infos = {json.dumps(json.loads(x), sort_keys=True) for x in ray.get([a.info.remote() for a in self._actors])}
        if len(infos) != 1:
            self.shutdown()
            raise ConfigError(f"judge_factory built different judges in different actors: {sorted(infos)}; "
                              "make it deterministic")
        self._info = json.loads(infos.pop())
        return self

    def shutdown(self) -> None:
        """Kill the actors (and Ray, if this judge started it)."""
        if self._actors:
            import ray

            for a in self._actors:
                ray.kill(a)
            self._actors = []
        if self._started_ray:
            shutdown_ray()
            self._started_ray = False

    def __enter__(self) -> RayJudge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def actor_stats(self) -> list[dict[str, int]]:
        """Per actor: its process id and how many calls / items it has judged (load balance, and proof of where the
        judging ran)."""
        import ray

        return list(ray.get([a.stats.remote() for a in self._actors]))

    # -- what the wrapped judge is

    @property  # type: ignore[override]
    def name(self) -> str:  # noqa: D102
        return str(self.start()._info["name"])

    @property  # type: ignore[override]
    def kinds(self) -> frozenset[str]:  # noqa: D102
        return frozenset(self.start()._info["kinds"])

    @property
    def both_orders(self) -> bool:
        """The wrapped judge's ``both_orders`` (True when it has none), which judge evaluation reads."""
        value = self.start()._info.get("both_orders")
        return True if value is None else bool(value)

    # -- the Judge interface

    def _map(self, method: str, kind: str, columns: list[list[Any]]) -> list[Verdict]:
        n = len(columns[0])
        if any(len(c) != n for c in columns):
            raise ValueError(f"{method}: inputs of different lengths {[len(c) for c in columns]}")
        if n == 0:
            return []
        self.start()
        if kind not in self._info["kinds"]:
            raise TypeError(f"{self._info['type']} is not a {kind} judge (kinds={self._info['kinds']})")
        from ray.util import ActorPool

        batches = _batches(n, self.batch_size)
        payloads = [json.dumps([c[r.start : r.stop] for c in columns], ensure_ascii=False) for r in batches]
        pool = ActorPool(self._actors)
        out: list[Verdict] = []
        for part in pool.map(lambda actor, p: actor.call.remote(method, p), payloads):
            out.extend(Verdict.model_validate(v) for v in json.loads(part))
        if len(out) != n:
            raise BackendError(f"Ray judge actors returned {len(out)} verdicts for {n} items")
        return out

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """Pointwise, in the actors: one Verdict per (prompt, response)."""
        return self._map("score", "pointwise", [_wire_prompts(prompts), list(responses)])

    def compare(self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]) -> list[Verdict]:
        """Pairwise, in the actors: one Verdict per (prompt, a, b)."""
        return self._map("compare", "pairwise", [_wire_prompts(prompts), list(responses_a), list(responses_b)])

    def rank(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[Verdict]:
        """Ranking, in the actors: one Verdict per prompt."""
        return self._map("rank", "rank", [_wire_prompts(prompts), [list(r) for r in responses]])


def _wire_prompts(prompts: Sequence[Prompt]) -> list[Any]:
    """Prompts as JSON values for the actors. A malformed prompt that is still JSON goes as is, so the judge in the
    actor turns it into the same invalid Verdict as a local judge would; anything else raises naming it."""
    out: list[Any] = []
    for p in prompts:
        try:
            out.append(normalize_prompt(p))
        except (TypeError, ValueError):
            try:
                json.dumps(p)
            except (TypeError, ValueError):
                raise TypeError(f"prompt {p!r:.80} is neither a string, a chat nor JSON; a RayJudge sends prompts to "
                                "its actors as JSON") from None
            out.append(p)
    return out
