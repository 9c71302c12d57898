"""The public, interface-only loop stages: generate, score, filter, build pairs, rejection-sample, evaluate, function.

Each is a typed pydantic config plus ``run(ctx)`` over the sdk interfaces (Generator, Judge, Filter), durable
(every output written atomically with :func:`~loopwright.sdk.artifacts.write_jsonl`, under the name the stage
declares) and idempotent (same inputs, same seed, same files). They compose into a
:class:`~loopwright.sdk.loop.Loop`; the train stages (SFT, DPO, reward model) are in
:mod:`loopwright.trainers.loop_stages`, where TRL is importable. Row formats: :class:`~loopwright.sdk.loop.ArtifactRef`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import Field, computed_field, field_validator

from .artifacts import read_jsonl, write_json, write_jsonl
from .errors import ConfigError
from .filter import Filter
from .generator import Generator
from .judge import Judge
from .loop import LoopStage, StageContext
from .pairs import select_pair
from .types import Prompt, SamplingParams, stable_hash, total_usage

__all__ = ["ApplyFilter", "BuildPairs", "Evaluate", "FunctionStage", "Generate", "RejectionSample", "Score",
           "as_messages"]


def as_messages(prompt: Prompt) -> list[dict[str, Any]]:
    """A prompt as chat messages (a string becomes one user message)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class Generate(LoopStage):
    """Sample ``n`` responses per prompt from the current model (``seed`` = loop seed + iteration).

    ``per_iteration`` takes a fresh slice of ``prompts`` each iteration (Self-Rewarding samples new prompts every
    iteration); by default every iteration uses all of them. Output ``samples``: one row per prompt.
    """

    kind: ClassVar[str] = "generate"
    outputs: ClassVar[dict[str, str]] = {"samples": "samples"}

    prompts: list[Any] = Field(exclude=True, min_length=1)
    n: int = Field(4, ge=1)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)
    per_iteration: int | None = Field(None, ge=1)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompts_fingerprint(self) -> str:
        return stable_hash(self.prompts)

    def prompts_for(self, iteration: int) -> list[tuple[int, Any]]:
        """``(index, prompt)`` of iteration ``iteration`` (1-based), cycling through ``prompts``."""
        if self.per_iteration is None:
            return list(enumerate(self.prompts))
        k, n = self.per_iteration, len(self.prompts)
        start = (max(iteration, 1) - 1) * k
        return [((start + j) % n, self.prompts[(start + j) % n]) for j in range(min(k, n))]

    def run(self, ctx: StageContext) -> dict[str, Any]:
        chosen = self.prompts_for(ctx.iteration)
        params = SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                                max_tokens=self.max_tokens, seed=ctx.seed)
        outs = ctx.generator().generate([p for _, p in chosen], params)  # metered: counts into the budget
        usage = total_usage(outs)
        rows = [{"id": i, "prompt": p, "responses": [c.text for c in comps],
                 "finish_reasons": [c.finish_reason for c in comps],
                 "lengths": [len(c.token_ids) if c.token_ids else len(c.text) for c in comps]}
                for (i, p), comps in zip(chosen, outs, strict=True)]
        write_jsonl(ctx.output("samples"), rows)
        lengths = [x for r in rows for x in r["lengths"]]
        cut = sum(f == "length" for r in rows for f in r["finish_reasons"])
        return {"prompts": len(rows), "responses": len(lengths), "mean_length": _mean(lengths),
                "truncated_rate": cut / max(1, len(lengths)), "completion_tokens": usage.completion_tokens}


class Score(LoopStage):
    """Score every response with a pointwise judge (an LLM judge, a reward model, a gold checker).

    ``judge`` is a :class:`~loopwright.sdk.judge.Judge`, or ``fn(generator) -> Judge`` called with a generator on
    the current model: the model judges its own responses (Self-Rewarding). An invalid verdict scores ``None``
    and keeps its reason (never a default score). Output ``scored``: the input rows plus ``rewards``, ``valid``
    and ``invalid_reasons``.
    """

    kind: ClassVar[str] = "score"
    accepts: ClassVar[tuple[str, ...]] = ("samples", "scored")
    outputs: ClassVar[dict[str, str]] = {"scored": "scored"}

    judge: Any = Field(exclude=True)

    @field_validator("judge")
    @classmethod
    def _judge(cls, v: Any) -> Any:
        if isinstance(v, Judge):
            if "pointwise" not in v.kinds:
                raise ValueError(f"{type(v).__name__} is not a pointwise judge (kinds={sorted(v.kinds)}); Score "
                                 "needs one (wrap a pairwise judge's scores, or use a reward model)")
        elif not callable(v):
            raise ValueError("judge must be a pointwise Judge or fn(generator) -> Judge")
        return v

    @computed_field  # type: ignore[prop-decorator]
    @property
    def judge_name(self) -> str:
        return getattr(self.judge, "name", None) or getattr(self.judge, "__name__", type(self.judge).__name__)

    def _make_judge(self, ctx: StageContext) -> Judge:
        if isinstance(self.judge, Judge):
            return self.judge
        judge = self.judge(ctx.generator())
        if not isinstance(judge, Judge) or "pointwise" not in judge.kinds:
            raise ConfigError(f"stage {ctx.stage_name!r}: the judge factory returned {type(judge).__name__}, not a "
                              "pointwise Judge")
        return judge

    def run(self, ctx: StageContext) -> dict[str, Any]:
        rows = read_jsonl(ctx.input())
        flat = [(i, j) for i, r in enumerate(rows) for j in range(len(r["responses"]))]
        judge = self._make_judge(ctx)
        verdicts = judge.score([rows[i]["prompt"] for i, _ in flat], [rows[i]["responses"][j] for i, j in flat])
        for r in rows:
            k = len(r["responses"])
            r["rewards"], r["valid"], r["invalid_reasons"] = [None] * k, [False] * k, [None] * k
        prompt_tokens = completion_tokens = calls = 0  # a judge on ctx.generator() is metered already
        for (i, j), v in zip(flat, verdicts, strict=True):
            r = rows[i]
            r["valid"][j] = bool(v.valid)
            if v.valid and v.score is not None and math.isfinite(v.score):
                r["rewards"][j] = float(v.score)
            else:
                r["invalid_reasons"][j] = v.invalid_reason or f"score {v.score!r} is not a finite number"
                r["valid"][j] = False
            prompt_tokens += v.usage.prompt_tokens
            completion_tokens += v.usage.completion_tokens
            calls += v.usage.total_tokens > 0
        if isinstance(self.judge, Judge):  # an outside judge (a served LLM): count what its verdicts report
            ctx.spend(calls=calls, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        write_jsonl(ctx.output("scored"), rows)
        rewards = [x for r in rows for x in r["rewards"] if x is not None]
        return {"scored": len(flat), "invalid_rate": 1 - len(rewards) / max(1, len(flat)),
                "mean_reward": _mean(rewards)}


class ApplyFilter(LoopStage):
    """Apply any :class:`~loopwright.sdk.filter.Filter` (e.g. RIP) to the input rows.

    Output ``kept`` has the input's kind; ``rejected`` holds every dropped row with its ``reason`` and the
    filter's ``scores`` (so thresholds can be revisited without re-scoring).
    """

    kind: ClassVar[str] = "filter"
    accepts: ClassVar[tuple[str, ...]] = ("scored", "samples", "preference", "sft")
    outputs: ClassVar[dict[str, str]] = {"kept": "scored", "rejected": "rejected"}

    filter: Any = Field(exclude=True)

    @field_validator("filter")
    @classmethod
    def _filter(cls, v: Any) -> Any:
        if not isinstance(v, Filter):
            raise ValueError(f"filter must be a loopwright Filter, got {type(v).__name__}")
        return v

    @computed_field  # type: ignore[prop-decorator]
    @property
    def filter_name(self) -> str:
        return getattr(self.filter, "name", type(self.filter).__name__)

    def output_kinds(self, input_kind: str | None) -> dict[str, str]:
        return {"kept": input_kind or "scored", "rejected": "rejected"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        rows = read_jsonl(ctx.input())
        scores = self.filter.score(rows)
        decisions = self.filter.keep(scores)
        if len(decisions) != len(rows):
            raise ConfigError(f"filter {self.filter_name!r} decided {len(decisions)} of {len(rows)} rows")
        kept = [r for r, d in zip(rows, decisions, strict=True) if d.keep]
        rejected = [{**r, "reason": d.reason or "dropped", "scores": s}
                    for r, d, s in zip(rows, decisions, scores, strict=True) if not d.keep]
        write_jsonl(ctx.output("kept"), kept)
        write_jsonl(ctx.output("rejected"), rejected)
        return {"kept": len(kept), "rejected": len(rejected), "keep_rate": len(kept) / max(1, len(rows))}


class BuildPairs(LoopStage):
    """Preference pairs per prompt: best vs worst scored response with length control ``rho``
    (:func:`~loopwright.sdk.pairs.select_pair`; Self-Rewarding's rule at ρ = 0, Meta-Rewarding's with ρ > 0), kept
    only when the score gap is at least ``min_margin``. Output ``pairs``: TRL conversational preference rows
    (``prompt``/``chosen``/``rejected`` plus the two scores); ``skipped`` the prompts without a pair, with why.
    """

    kind: ClassVar[str] = "build_pairs"
    accepts: ClassVar[tuple[str, ...]] = ("scored",)
    outputs: ClassVar[dict[str, str]] = {"pairs": "preference", "skipped": "rejected"}

    rho: float = Field(0.0, ge=0, le=1)
    min_margin: float = Field(0.0, ge=0)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        pairs, skipped, gaps = [], [], []
        for r in read_jsonl(ctx.input()):
            choice = select_pair(r["rewards"], r["lengths"], self.rho, r["responses"])
            if not choice.ok:
                skipped.append({"id": r["id"], "reason": choice.skip_reason})
                continue
            c, j = choice.chosen, choice.rejected
            gap = r["rewards"][c] - r["rewards"][j]
            if gap < self.min_margin:
                skipped.append({"id": r["id"], "reason": f"score gap {gap:g} < min_margin {self.min_margin:g}"})
                continue
            gaps.append(gap)
            pairs.append({"prompt": as_messages(r["prompt"]),
                          "chosen": [{"role": "assistant", "content": r["responses"][c]}],
                          "rejected": [{"role": "assistant", "content": r["responses"][j]}],
                          "id": r["id"], "chosen_reward": r["rewards"][c], "rejected_reward": r["rewards"][j]})
        write_jsonl(ctx.output("pairs"), pairs)
        write_jsonl(ctx.output("skipped"), skipped)
        return {"pairs": len(pairs), "skipped": len(skipped), "mean_gap": _mean(gaps)}


class RejectionSample(LoopStage):
    """Keep the responses whose score is at least ``threshold`` (STaR / ReST-EM): deduplicated, at most
    ``max_per_prompt`` per prompt (ReST-EM's cap, so easy prompts do not dominate). Output ``kept``: TRL
    conversational SFT rows; ``rejected``: every other response with its reason."""

    kind: ClassVar[str] = "rejection_sample"
    accepts: ClassVar[tuple[str, ...]] = ("scored",)
    outputs: ClassVar[dict[str, str]] = {"kept": "sft", "rejected": "rejected"}

    threshold: float = 1.0
    max_per_prompt: int = Field(4, ge=1)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        kept, rejected, solved = [], [], set()
        total = 0
        for r in read_jsonl(ctx.input()):
            seen: set[str] = set()
            for j, (text, reward) in enumerate(zip(r["responses"], r["rewards"], strict=True)):
                total += 1
                if reward is None:
                    reason = f"invalid verdict: {r['invalid_reasons'][j]}"
                elif reward < self.threshold:
                    reason = f"score {reward:g} < threshold {self.threshold:g}"
                elif text.strip() in seen:
                    reason = "duplicate of a kept response"
                elif len(seen) >= self.max_per_prompt:
                    reason = f"prompt already has {self.max_per_prompt} kept responses"
                else:
                    seen.add(text.strip())
                    kept.append({"messages": [*as_messages(r["prompt"]), {"role": "assistant", "content": text}]})
                    solved.add(r["id"])
                    continue
                rejected.append({"id": r["id"], "response": text, "reward": reward, "reason": reason})
        write_jsonl(ctx.output("kept"), kept)
        write_jsonl(ctx.output("rejected"), rejected)
        return {"kept": len(kept), "pass_rate": (total - len(rejected)) / max(1, total),
                "prompts_solved": len(solved)}


class Evaluate(LoopStage):
    """Evaluate the current model: ``fn(generator) -> (correct, n)`` or a dict holding ``correct`` and ``n`` (an
    accuracy, reported with ``n`` and its 95% Wilson interval), or ``-> {metric: number}``. Runs at iteration 0 on the seed model too (the baseline row).
    ``metric`` names the accuracy. Output ``metrics``: the numbers, as JSON."""

    kind: ClassVar[str] = "evaluate"
    outputs: ClassVar[dict[str, str]] = {"metrics": "json"}
    runs_on_seed: ClassVar[bool] = True

    fn: Callable[[Generator], Any] = Field(exclude=True)
    metric: str = "accuracy"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from .report import accuracy_record

        out = self.fn(ctx.generator())
        if isinstance(out, tuple) and len(out) == 2:
            correct, n = int(out[0]), int(out[1])
            rec = accuracy_record(self.metric, correct, n)
            metrics: dict[str, Any] = {**rec["metrics"], "_intervals": rec["intervals"]}
        elif isinstance(out, dict) and {"correct", "n"} <= set(out):  # e.g. evaluate_accuracy's result
            rec = accuracy_record(self.metric, int(out["correct"]), int(out["n"]))
            rest = {k: v for k, v in out.items() if k not in ("correct", "n", self.metric)}
            metrics = {**rest, **rec["metrics"], "_intervals": rec["intervals"]}
        elif isinstance(out, dict):
            metrics = dict(out)
        else:
            raise ConfigError(f"stage {ctx.stage_name!r}: the evaluate function returned {type(out).__name__}; "
                              "return (correct, n) or a dict of numbers")
        write_json(ctx.output("metrics"), metrics)
        return metrics


class FunctionStage(LoopStage):
    """Anything else: ``fn(ctx) -> metrics`` with declared outputs (``{"name": kind}``), e.g. a method's own rule
    (a meta-judge, label balancing) between two public stages. ``fn`` writes ``ctx.output(name)`` itself (use
    :func:`~loopwright.sdk.artifacts.write_jsonl`, atomic) and must be idempotent."""

    kind: ClassVar[str] = "function"

    fn: Callable[[StageContext], Any] = Field(exclude=True)
    writes: dict[str, str] = Field(default_factory=dict)
    reads: tuple[str, ...] = ()
    """Accepted input kinds (empty: no input)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def fn_name(self) -> str:
        return getattr(self.fn, "__qualname__", type(self.fn).__name__)

    @property
    def accepts(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.reads)

    def output_kinds(self, input_kind: str | None) -> dict[str, str]:
        return dict(self.writes)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return dict(self.fn(ctx) or {})
