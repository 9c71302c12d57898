"""RIP end to end: sample N responses per prompt, score them with a Judge, pair best vs worst, filter, write.

``run_rip(prompts, executor, judge, config)`` works with any Generator behind a
:class:`~loopwright.sdk.executors.LocalExecutor` or :class:`~loopwright.sdk.executors.RayExecutor` (same batches,
same seeds, same outputs) and any pointwise :class:`~loopwright.sdk.judge.Judge` (a reward model, an LLM judge).
Scoring happens once; :meth:`RIPResult.recompute` re-decides with other thresholds without touching the
generator or the judge.

Outputs (:meth:`RIPResult.write`, atomic via sdk.artifacts): ``dpo.jsonl`` in TRL's conversational preference
format (``prompt`` / ``chosen`` / ``rejected`` message lists, plus provenance columns TRL ignores),
``rejected.jsonl`` (every dropped prompt with its reason, bad input included), ``scored.jsonl`` (every response
and reward, for re-thresholding later) and ``stats.json``.

Bad input never crashes the run: an empty or non-text prompt is rejected before sampling
(``invalid_prompt: ...``); a response the judge cannot score gets reward ``None`` with the judge's reason; a
prompt left with no (or one) valid reward is dropped as ``no_valid_rewards`` / ``too_few_valid_rewards``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...sdk.artifacts import RunDir, read_jsonl, write_json, write_jsonl
from ...sdk.errors import BackendError
from ...sdk.executors import Executor, LocalExecutor, RayJudge, judge_for, release_judge
from ...sdk.generator import Generator
from ...sdk.judge import Judge
from ...sdk.report import append_iteration
from ...sdk.types import Completion, Decision, SamplingParams, normalize_prompt
from .filter import RIPFilter, RIPThresholds
from .stats import rip_stats

__all__ = [
    "RIPConfig",
    "RIPResult",
    "as_messages",
    "check_prompt",
    "load_rip",
    "rescore",
    "response_length",
    "rip_stages",
    "run_rip",
    "sample_and_score",
]


class RIPConfig(BaseModel):
    """RIP settings with provenance (spec/loops.md §5, Appendix A.5).

    - ``n_responses``: 64 for Llama-3.1-8B, 32 for 70B; ablations 8/16/32 [V]. The CPU demo uses 16 (§5.7).
    - ``temperature`` 0.8, ``top_p`` 0.95 [V]. ``max_tokens`` [R]: the paper does not state it.
    - ``seed``: sampling seed; fixed so a LocalExecutor and a RayExecutor give the same responses.
    - ``length_unit``: "tokens" of the policy tokenizer (``Completion.token_ids``) [R, the paper's unit is not
      stated], or "words" / "chars".
    - ``thresholds``: 50/50/50 percentiles [V best]; ``min_valid``: a prompt needs 2 scored responses for a pair.
    - ``judge_batch_size``: (prompt, response) items per ``judge.score`` call.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_responses: int = Field(64, ge=2)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = 0
    length_unit: Literal["tokens", "words", "chars"] = "tokens"
    thresholds: RIPThresholds = Field(default_factory=RIPThresholds)
    min_valid: int = Field(2, ge=1)
    judge_batch_size: int = Field(256, ge=1)
    truncate_prompt: bool = False
    """Pass-through to SamplingParams (keep a too-long prompt's last tokens instead of failing the batch)."""

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(n=self.n_responses, temperature=self.temperature, top_p=self.top_p,
                              max_tokens=self.max_tokens, seed=self.seed, truncate_prompt=self.truncate_prompt)


def check_prompt(prompt: Any) -> tuple[str | list[dict[str, Any]] | None, str | None]:
    """``(normalized prompt, None)`` or ``(None, reason)`` for an empty or non-text prompt."""
    if prompt is None:
        return None, "invalid_prompt: None"
    try:
        p = normalize_prompt(prompt)
    except (TypeError, ValueError) as exc:
        return None, f"invalid_prompt: {type(exc).__name__}: {str(exc).splitlines()[0]}"[:300]
    if isinstance(p, str):
        return (p, None) if p.strip() else (None, "invalid_prompt: empty text")
    if not p:
        return None, "invalid_prompt: no messages"
    if not any(m["content"].strip() for m in p if m["role"] == "user"):
        return None, "invalid_prompt: no user message with text"
    return p, None


def as_messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt as a conversational TRL prompt (a string becomes one user message)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def response_length(c: Completion, unit: str) -> int:
    """Length of one response in ``unit`` (tokens: the policy's token ids, else the usage count)."""
    if unit == "tokens":
        return len(c.token_ids) or c.usage.completion_tokens
    if unit == "words":
        return len(c.text.split())
    return len(c.text)


def _safe_repr(obj: Any) -> Any:
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    try:
        import json

        json.dumps(obj)
        return obj
    except (TypeError, ValueError):
        return repr(obj)[:500]


def _judge_rewards(judge: Judge, flat_p: list[Any], flat_r: list[str], batch: int
                   ) -> tuple[list[float | None], list[str | None]]:
    """``judge.score`` in batches -> (reward or None, invalid reason or None) per response."""
    rewards: list[float | None] = []
    reasons: list[str | None] = []
    if isinstance(judge, RayJudge):  # one call: the actors take consecutive batches of judge.batch_size from it
        batch = max(batch, len(flat_r))
    for s in range(0, len(flat_r), batch):
        part = judge.score(flat_p[s:s + batch], flat_r[s:s + batch])
        if len(part) != len(flat_r[s:s + batch]):
            raise BackendError(f"{type(judge).__name__}.score returned {len(part)} verdicts for "
                               f"{len(flat_r[s:s + batch])} responses")
        for v in part:
            ok = v.valid and v.score is not None and math.isfinite(v.score)
            rewards.append(v.score if ok else None)
            reasons.append(None if ok else (v.invalid_reason or f"non-finite score {v.score}"))
    return rewards, reasons


def sample_and_score(
    prompts: Sequence[str | list[dict[str, Any]]],
    executor: Executor,
    judge: Judge,
    config: RIPConfig,
) -> list[dict[str, Any]]:
    """Sample ``n_responses`` per (valid, normalized) prompt and score each with ``judge.score``.

    Returns one record per prompt: ``responses``, ``rewards`` (None where the verdict is invalid),
    ``reward_invalid`` (the judge's reasons), ``lengths`` and ``finish_reasons``.
    """
    params = config.sampling_params()
    completions = executor.run(list(prompts), params)
    if len(completions) != len(prompts):
        raise BackendError(f"the executor returned {len(completions)} rows for {len(prompts)} prompts")
    flat_p = [p for p, row in zip(prompts, completions, strict=True) for _ in row]
    flat_r = [c.text for row in completions for c in row]
    rewards, reasons = _judge_rewards(judge, flat_p, flat_r, config.judge_batch_size)
    records, k = [], 0
    for row in completions:
        records.append({
            "responses": [c.text for c in row],
            "rewards": rewards[k:k + len(row)],
            "reward_invalid": reasons[k:k + len(row)],
            "lengths": [response_length(c, config.length_unit) for c in row],
            "finish_reasons": [c.finish_reason for c in row],
        })
        k += len(row)
    return records


@dataclass
class RIPResult:
    """Scored records and decisions of one RIP run; re-decide with :meth:`recompute`, write with :meth:`write`."""

    records: list[dict[str, Any]]
    """One per valid prompt: ``id``, ``prompt`` (normalized), ``meta``, responses, rewards, lengths, ..."""
    scores: list[dict[str, float]]
    decisions: list[Decision]
    pre_rejected: list[dict[str, Any]]
    """Bad input rejected before sampling: ``{"id", "prompt", "meta", "reason"}``."""
    filter: RIPFilter
    thresholds: dict[str, float | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def recompute(self, thresholds: RIPThresholds) -> RIPResult:
        """Same scores, new decisions (no generation, no judging)."""
        decisions = self.filter.keep(self.scores, thresholds)
        return RIPResult(self.records, self.scores, decisions, self.pre_rejected, self.filter,
                         dict(self.filter.last_thresholds), dict(self.timings))

    def stats(self) -> dict[str, Any]:
        out = rip_stats(self.scores, self.decisions, self.thresholds, [r["reason"] for r in self.pre_rejected])
        out["n_invalid_rewards"] = sum(r is None for rec in self.records for r in rec["rewards"])
        out["n_responses"] = sum(len(rec["rewards"]) for rec in self.records)
        out["timings_s"] = dict(self.timings)
        return out

    def kept(self) -> list[dict[str, Any]]:
        return [r for r, d in zip(self.records, self.decisions, strict=True) if d.keep]

    def kept_prompts(self) -> list[str | list[dict[str, Any]]]:
        return [r["prompt"] for r in self.kept()]

    def dpo_rows(self, provenance: bool = True) -> list[dict[str, Any]]:
        """TRL conversational preference rows of the kept prompts (RIP keeps the pair; it does not re-pair).
        ``provenance=False`` gives only ``prompt/chosen/rejected``."""
        out = []
        for rec, s, d in zip(self.records, self.scores, self.decisions, strict=True):
            if not d.keep:
                continue
            w, lo = int(s["chosen_idx"]), int(s["rejected_idx"])
            row: dict[str, Any] = {
                "prompt": as_messages(rec["prompt"]),
                "chosen": [{"role": "assistant", "content": rec["responses"][w]}],
                "rejected": [{"role": "assistant", "content": rec["responses"][lo]}],
            }
            if provenance:
                row.update(id=rec["id"], chosen_reward=s["chosen_reward"], rejected_reward=s["rejected_reward"],
                           rejected_length=s["rejected_length"], reward_gap=s["reward_gap"])
            out.append(row)
        return out

    def to_dataset(self, provenance: bool = False) -> Any:
        """The kept pairs as a ``datasets.Dataset`` for TRL's ``DPOTrainer`` (conversational prompt/chosen/rejected;
        ``provenance=True`` adds the id, rewards, length and gap columns)."""
        from ...sdk.trl_data import to_dataset

        return to_dataset(self.dpo_rows(provenance=provenance), "preference", keep_extra=provenance)

    def rejected_rows(self) -> list[dict[str, Any]]:
        """Every dropped prompt with its reason and scores (bad input first, then filtered prompts)."""
        out = [dict(r) for r in self.pre_rejected]
        for rec, s, d in zip(self.records, self.scores, self.decisions, strict=True):
            if d.keep:
                continue
            out.append({"id": rec["id"], "prompt": rec["prompt"], "meta": rec.get("meta"), "reason": d.reason,
                        "scores": s, "rewards": rec["rewards"], "reward_invalid": rec["reward_invalid"],
                        "lengths": rec["lengths"], "responses": rec["responses"]})
        return out

    def write(self, out: str | Path | RunDir, prefix: str = "") -> dict[str, Path]:
        """Write ``{prefix}dpo.jsonl``, ``{prefix}rejected.jsonl``, ``{prefix}scored.jsonl``, ``{prefix}stats.json``
        atomically into a folder or a RunDir (as one recorded stage, ``{prefix}rip``)."""
        names = {k: f"{prefix}{k}" for k in ("dpo.jsonl", "rejected.jsonl", "scored.jsonl", "stats.json")}
        stats = self.stats()

        def emit(path_for: Any) -> dict[str, Path]:
            paths = {k: path_for(v) for k, v in names.items()}
            write_jsonl(paths["dpo.jsonl"], self.dpo_rows())
            write_jsonl(paths["rejected.jsonl"], self.rejected_rows())
            write_jsonl(paths["scored.jsonl"], [{**rec, "scores": s, "keep": d.keep, "reason": d.reason}
                                                for rec, s, d in zip(self.records, self.scores, self.decisions,
                                                                     strict=True)])
            write_json(paths["stats.json"], stats)
            return paths

        if isinstance(out, RunDir):
            with out.stage(f"{prefix}rip") as st:
                paths = emit(st.path)
                st.rows = stats["n_kept"]
                st.metrics = {k: stats[k] for k in ("n_prompts", "n_kept", "keep_rate", "per_reason")}
            return paths
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        return emit(lambda name: folder / name)

    def iteration_row(self, iteration: int, notes: Sequence[str] = ()) -> dict[str, Any]:
        """A row for ``iterations.jsonl`` (sdk.report's format): metrics and metric histograms."""
        st = self.stats()
        pool = [s for s in self.scores if "rejected_reward" in s]
        return {
            "iteration": iteration,
            "metrics": {"n_prompts": st["n_prompts"], "n_kept": st["n_kept"], "keep_rate": st["keep_rate"],
                        "n_invalid_rewards": st["n_invalid_rewards"]},
            "histograms": {m: [s[m] for s in pool] for m in ("rejected_reward", "rejected_length", "reward_gap")},
            "notes": list(notes) + [f"dropped {k}: {v}" for k, v in st["per_reason"].items()],
        }


def rescore(result: RIPResult, judge: Judge, config: RIPConfig | None = None,
            rip_filter: RIPFilter | None = None) -> RIPResult:
    """The same sampled responses scored by another judge (no generation): compare rewards on one sample set."""
    config = config or RIPConfig()
    flat_p = [rec["prompt"] for rec in result.records for _ in rec["responses"]]
    flat_r = [r for rec in result.records for r in rec["responses"]]
    rewards, reasons = _judge_rewards(judge, flat_p, flat_r, config.judge_batch_size)
    records, k = [], 0
    for rec in result.records:
        n = len(rec["responses"])
        records.append({**rec, "rewards": rewards[k:k + n], "reward_invalid": reasons[k:k + n]})
        k += n
    rip_filter = rip_filter or RIPFilter(config.thresholds, min_valid=config.min_valid)
    scores = rip_filter.score(records)
    decisions = rip_filter.keep(scores)
    return RIPResult(records, scores, decisions, list(result.pre_rejected), rip_filter,
                     dict(rip_filter.last_thresholds), {})


def load_rip(folder: str | Path, prefix: str = "", thresholds: RIPThresholds | None = None,
             min_valid: int = 2) -> RIPResult:
    """Rebuild a :class:`RIPResult` from a written run (``scored.jsonl`` + the bad-input rows of ``rejected.jsonl``)
    and decide with ``thresholds``: re-thresholding in a later process, with no generation and no judging."""
    folder = Path(folder)
    rows = read_jsonl(folder / f"{prefix}scored.jsonl")
    records = [{k: v for k, v in r.items() if k not in ("scores", "keep", "reason")} for r in rows]
    rejected = folder / f"{prefix}rejected.jsonl"
    pre = [r for r in read_jsonl(rejected) if str(r.get("reason", "")).startswith("invalid_prompt")] \
        if rejected.is_file() else []
    rip_filter = RIPFilter(thresholds, min_valid=min_valid)
    scores = rip_filter.score(records)
    decisions = rip_filter.keep(scores)
    return RIPResult(records, scores, decisions, pre, rip_filter, dict(rip_filter.last_thresholds), {})


def rip_stages(
    prompts: Sequence[Any],
    executor: Executor | Generator,
    judge: Judge,
    config: RIPConfig | None = None,
    *,
    ids: Sequence[Any] | None = None,
    meta: Sequence[dict[str, Any]] | None = None,
    thresholds: RIPThresholds | None = None,
) -> list[Any]:
    """RIP as durable :class:`~loopwright.sdk.stages.Stage` s for ``run_stages`` (LangGraph + SQLite checkpoints):
    ``rip_sample_score`` (generation + judging, writes ``scored.jsonl`` and the outputs) then ``rip_filter``
    (re-decides from disk with ``thresholds``, default the config's, and appends ``iterations.jsonl``). A run killed
    after the first stage resumes at the second without sampling again. Wrap the generator in
    ``sdk.cache.CachedGenerator`` to make an interrupted first stage cheap to redo."""
    from ...sdk.stages import Stage

    config = config or RIPConfig()

    def sample_score(state: Any, run: RunDir) -> dict[str, Any]:
        res = run_rip(prompts, executor, judge, config, ids=ids, meta=meta)
        paths = res.write(run.path)
        return {"artifacts": {k: str(v) for k, v in paths.items()}, "metrics": {"n_prompts": len(prompts)}}

    def decide(state: Any, run: RunDir) -> dict[str, Any]:
        res = load_rip(run.path, thresholds=thresholds or config.thresholds, min_valid=config.min_valid)
        paths = res.write(run.path)
        append_iteration(run.path, res.iteration_row(0))
        st = res.stats()
        return {"artifacts": {k: str(v) for k, v in paths.items()},
                "metrics": {"n_kept": st["n_kept"], "keep_rate": st["keep_rate"]}}

    return [Stage("rip_sample_score", sample_score), Stage("rip_filter", decide)]


def run_rip(
    prompts: Sequence[Any],
    executor: Executor | Generator,
    judge: Judge | Callable[[], Judge],
    config: RIPConfig | None = None,
    *,
    ids: Sequence[Any] | None = None,
    meta: Sequence[dict[str, Any]] | None = None,
    rip_filter: RIPFilter | None = None,
) -> RIPResult:
    """Run RIP over ``prompts`` (strings or chats). ``ids`` / ``meta`` (optional, one per prompt) are carried into
    every output row. A bare Generator is wrapped in a :class:`LocalExecutor`.

    ``judge`` is a Judge (scored in this process, or in its own actors if it is a
    :class:`~loopwright.sdk.executors.RayJudge`) or a picklable zero-argument factory: with a ``RayExecutor`` the
    factory is built in ``executor.num_actors`` Ray actors (``executor.judge``), which score every response and are
    stopped when RIP finishes; with a ``LocalExecutor`` it is built here."""
    config = config or RIPConfig()
    if isinstance(executor, Generator):
        executor = LocalExecutor(executor, progress=False)
    if not hasattr(executor, "run"):
        raise TypeError(f"executor must be a LocalExecutor/RayExecutor or a Generator, got {type(executor).__name__}")
    if not (hasattr(judge, "score") or callable(judge)):
        raise TypeError(f"judge must be a loopwright Judge with a pointwise score() or a zero-argument factory of "
                        f"one, got {type(judge).__name__}")
    prompts = list(prompts)
    ids = list(ids) if ids is not None else list(range(len(prompts)))
    meta = list(meta) if meta is not None else [{} for _ in prompts]
    if not (len(ids) == len(meta) == len(prompts)):
        raise ValueError(f"{len(prompts)} prompts, {len(ids)} ids and {len(meta)} meta dicts; pass one of each")
    rip_filter = rip_filter or RIPFilter(config.thresholds, min_valid=config.min_valid)
    valid, pre_rejected = [], []
    for i, (p, pid, m) in enumerate(zip(prompts, ids, meta, strict=True)):
        norm, why = check_prompt(p)
        if why is not None:
            pre_rejected.append({"id": _safe_repr(pid), "prompt": _safe_repr(p), "meta": m, "reason": why})
        else:
            valid.append((i, norm, pid, m))
    t0 = time.perf_counter()
    scored = []
    if valid:
        built, owned = judge_for(executor, judge, batch_size=config.judge_batch_size)
        try:
            scored = sample_and_score([v[1] for v in valid], executor, built, config)
        finally:
            release_judge(built, owned)
    t1 = time.perf_counter()
    records = [{"id": pid, "prompt": norm, "meta": m, **rec} for (_, norm, pid, m), rec in zip(valid, scored,
                                                                                                strict=True)]
    scores = rip_filter.score(records)
    decisions = rip_filter.keep(scores)
    t2 = time.perf_counter()
    return RIPResult(records, scores, decisions, pre_rejected, rip_filter, dict(rip_filter.last_thresholds),
                     {"sample_and_score": round(t1 - t0, 3), "filter": round(t2 - t1, 3)})
