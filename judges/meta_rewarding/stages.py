"""Meta-Rewarding's own loop stages (Wu et al., arXiv 2407.19594; spec/loops.md §3), for the public
:class:`~loopwright.sdk.loop.Loop`.

The method-specific steps are stages here; training is the public :class:`~loopwright.trainers.loop_stages.TrainDPO`.
Every stage writes Meta-Rewarding's own files into ``iter<t>/`` (``files``), unchanged from the loop's first
version, so that runs, notebooks and the report read the same data:

- :class:`SampleResponses` (``generate``): K responses per prompt -> ``responses.jsonl``;
- :class:`JudgeResponses` (``judge``): N judgements per response; a response's score is the mean of its valid
  ones -> ``judgments.jsonl`` (every judgement, invalid ones with their reason), ``scores.jsonl``;
- :class:`MetaJudgeBattles` (``meta_judge``): per prompt the response the judge disagrees most on; every pair of
  its distinct valid judgements in both orders -> ``meta_battles.jsonl``;
- :class:`BuildMetaPairs` (``build_pairs``): actor pairs with length control ρ (:func:`~.actor.select_actor_pair`)
  and judge pairs by position-weighted Elo (:func:`~.meta_judge.select_judge_pair`) -> ``train_pairs.jsonl``;
  zero pairs stops the loop with :class:`NoUsablePairsError`, recorded in the report, instead of training on
  nothing;
- :class:`TrainMetaDPO` (``train``): DPO on the mixed pairs -> ``model/``;
- :class:`EvaluateMetaRewarding` (``evaluate``): the evaluator on the new model -> ``eval.jsonl``.

Seeds come from ``(config.seed, t, role)`` hashes, so each role samples independently and reproducibly.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, computed_field

from ...sdk.artifacts import read_jsonl, write_jsonl
from ...sdk.errors import LoopwrightError
from ...sdk.loop import LoopStage, StageContext
from ...sdk.types import SamplingParams, stable_hash
from ...trainers.dpo import DPOSettings
from ...trainers.loop_stages import TrainDPO
from ..parsers import parse_score
from ..pointwise import PointwiseJudge
from ..templates import prompt_text
from .actor import select_actor_pair
from .checkpoints import check_model_dir
from .config import MetaRewardingConfig
from .meta_judge import (
    Battle,
    MetaJudge,
    battle_plan,
    count_position_wins,
    pick_max_variance,
    position_weights,
    select_judge_pair,
)

__all__ = ["BuildMetaPairs", "EvaluateMetaRewarding", "JudgeResponses", "MetaJudgeBattles", "NoUsablePairsError",
           "SampleResponses", "TrainMetaDPO", "judge_template", "prompts_for", "role_seed"]


class NoUsablePairsError(LoopwrightError, RuntimeError):
    """An iteration produced no preference pair (e.g. every judgement was unparseable): the loop stops rather than
    train on nothing. The iteration is recorded in ``iterations.jsonl`` with the reason."""


def role_seed(*parts: Any) -> int:
    """The sampling seed of one role in one iteration: ``role_seed(config.seed, t, "actor")``."""
    return int(stable_hash(list(parts), length=12), 16)


def prompts_for(pool: Sequence[Any], per_iter: int, t: int) -> list[tuple[str, Any]]:
    """Iteration ``t``'s ``(prompt_id, prompt)``: ``per_iter`` consecutive prompts from ``(t-1)·per_iter`` on,
    wrapping around the pool."""
    start = (t - 1) * per_iter
    return [(f"p{(start + i) % len(pool)}", pool[(start + i) % len(pool)]) for i in range(per_iter)]


def judge_template(cfg: MetaRewardingConfig) -> Any:
    """The judge's prompt template (the configured one, or the additive 5-point rubric)."""
    from ..templates import ADDITIVE_5POINT, POINTWISE_VARIABLES, as_template

    return as_template(cfg.judge.template, ADDITIVE_5POINT, POINTWISE_VARIABLES)


def _judge(cfg: MetaRewardingConfig, ctx: StageContext, fixed: Any, seed: int) -> PointwiseJudge:
    j = cfg.judge
    gen = ctx.meter(fixed) if fixed is not None else ctx.generator()
    sampling = SamplingParams(temperature=j.temperature, top_p=j.top_p, max_tokens=j.max_tokens, seed=seed)
    return PointwiseJudge(gen, j.template, samples=j.N, sampling=sampling, low=j.low, high=j.high)


class _MRStage(LoopStage):
    """A Meta-Rewarding stage: the whole config (recorded once, by the loop), metrics named as the report shows."""

    prefix_metrics: ClassVar[bool] = False
    cfg: MetaRewardingConfig = Field(exclude=True)


class SampleResponses(_MRStage):
    """K responses per prompt from the current model (the actor), seeded sampling."""

    kind: ClassVar[str] = "generate"
    outputs: ClassVar[dict[str, str]] = {"responses": "mr_responses"}
    files: ClassVar[dict[str, str]] = {"responses": "responses.jsonl"}

    prompts: list[Any] = Field(exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompts_fingerprint(self) -> str:
        return stable_hash(self.prompts)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        a, t = self.cfg.actor, ctx.iteration
        items = prompts_for(self.prompts, self.cfg.prompts_per_iter, t)
        params = SamplingParams(n=a.K, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                                seed=role_seed(self.cfg.seed, t, "actor"))
        outs = ctx.generator().generate([p for _, p in items], params)
        rows = [{"prompt_id": pid, "prompt": prompt, "response_id": f"{pid}-r{k}", "k": k, "text": c.text,
                 "len_chars": len(c.text), "finish_reason": c.finish_reason}
                for (pid, prompt), row in zip(items, outs, strict=True) for k, c in enumerate(row)]
        write_jsonl(ctx.output("responses"), rows)
        lengths = [r["len_chars"] for r in rows]
        return {"n_prompts": len(items), "n_responses": len(rows),
                "gen_len_chars": statistics.fmean(lengths) if lengths else None,
                "gen_cut_rate": sum(r["finish_reason"] == "length" for r in rows) / max(1, len(rows))}


class JudgeResponses(_MRStage):
    """N judgements per response (additive rubric, ``Score:`` parser) by the current model or a fixed judge."""

    kind: ClassVar[str] = "judge"
    accepts: ClassVar[tuple[str, ...]] = ("mr_responses",)
    outputs: ClassVar[dict[str, str]] = {"judgments": "mr_judgments", "scores": "mr_scores"}
    files: ClassVar[dict[str, str]] = {"judgments": "judgments.jsonl", "scores": "scores.jsonl"}

    judge_generator: Any = Field(None, exclude=True)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        t, jc = ctx.iteration, self.cfg.judge
        responses = read_jsonl(ctx.input())
        judge = _judge(self.cfg, ctx, self.judge_generator, role_seed(self.cfg.seed, t, "judge"))
        ctx.run.set_meta(f"iter{t}.judge", judge.provenance(judge.sampling))
        verdicts = judge.score([r["prompt"] for r in responses], [r["text"] for r in responses])
        judgments, scores = [], []
        for r, v in zip(responses, verdicts, strict=True):
            valid = []
            for j, text in enumerate([v.raw] if jc.N == 1 else json.loads(v.raw)):
                res = parse_score(text, jc.low, jc.high)
                judgments.append({"prompt_id": r["prompt_id"], "response_id": r["response_id"], "sample": j,
                                  "judge_text": text, "score": res.value, "invalid_reason": res.reason,
                                  "len_chars": len(text)})
                if res.value is not None:
                    valid.append(res.value)
            scores.append({"prompt_id": r["prompt_id"], "response_id": r["response_id"],
                           "score": statistics.fmean(valid) if valid else None, "n_valid": len(valid),
                           "samples": valid})
        write_jsonl(ctx.output("judgments"), judgments)
        write_jsonl(ctx.output("scores"), scores)
        valid_scores = [s["score"] for s in scores if s["score"] is not None]
        return {"judge_valid_rate": sum(j["score"] is not None for j in judgments) / max(1, len(judgments)),
                "reward": statistics.fmean(valid_scores) if valid_scores else None,
                "scored_responses": len(valid_scores)}


class MetaJudgeBattles(_MRStage):
    """The meta-judge compares pairs of the judge's own judgements (iterations in
    ``meta_judge.enabled_iterations``; an empty file otherwise)."""

    kind: ClassVar[str] = "meta_judge"
    accepts: ClassVar[tuple[str, ...]] = ("mr_judgments",)
    outputs: ClassVar[dict[str, str]] = {"meta_battles": "mr_battles"}
    files: ClassVar[dict[str, str]] = {"meta_battles": "meta_battles.jsonl"}

    meta_judge_generator: Any = Field(None, exclude=True)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        t, m = ctx.iteration, self.cfg.meta_judge
        if not self.cfg.meta_judge_on(t):
            write_jsonl(ctx.output("meta_battles"), [])
            return {"meta_enabled": 0}
        responses = {r["response_id"]: r for r in read_jsonl(ctx.artifact("generate.responses"))}
        plan = meta_battle_plan(responses, read_jsonl(ctx.input()), m.max_judgements)
        gen = ctx.meter(self.meta_judge_generator) if self.meta_judge_generator is not None else ctx.generator()
        meta = MetaJudge(gen, m.template, sampling=SamplingParams(temperature=m.temperature, max_tokens=m.max_tokens,
                                                                  seed=role_seed(self.cfg.seed, t, "meta")))
        ctx.run.set_meta(f"iter{t}.meta_judge", meta.provenance())
        answers = meta.compare([(responses[p["response_id"]]["prompt"], responses[p["response_id"]]["text"],
                                 p["first"]["judge_text"], p["second"]["judge_text"]) for p in plan])
        rows = [{"prompt_id": p["prompt_id"], "response_id": p["response_id"], "j_first": p["j_first"],
                 "j_second": p["j_second"], "winner": winner, "invalid_reason": reason, "meta_text": text,
                 "score_first": p["first"]["score"], "score_second": p["second"]["score"]}
                for p, (winner, reason, text) in zip(plan, answers, strict=True)]
        write_jsonl(ctx.output("meta_battles"), rows)
        decided = [r for r in rows if r["winner"] is not None]
        differing = [r for r in decided if r["score_first"] != r["score_second"]]
        higher = sum((r["winner"] == "first") == (r["score_first"] > r["score_second"]) for r in differing)
        return {"meta_enabled": 1, "meta_battles": len(rows),
                "meta_valid_rate": len(decided) / len(rows) if rows else None,
                "meta_first_win_rate": (sum(r["winner"] == "first" for r in decided) / len(decided)
                                        if decided else None),
                "meta_prefers_higher_score_rate": higher / len(differing) if differing else None}


def meta_battle_plan(responses: dict[str, dict[str, Any]], judgments: list[dict[str, Any]],
                     max_judgements: int | None) -> list[dict[str, Any]]:
    """Per prompt, the response with the most judge disagreement (:func:`~.meta_judge.pick_max_variance`), and
    every pair of its distinct valid judgements in both orders (:func:`~.meta_judge.battle_plan`)."""
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for r in responses.values():
        by_prompt[r["prompt_id"]].append(r["response_id"])
    valid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for j in judgments:
        if j["score"] is not None:
            valid[j["response_id"]].append(j)
    plan: list[dict[str, Any]] = []
    for pid, rids in by_prompt.items():
        pick = pick_max_variance([[j["score"] for j in valid[rid]] for rid in rids])
        if pick is None:
            continue
        rid = rids[pick]
        distinct = _distinct(valid[rid])[: max_judgements or None]
        for a, b in battle_plan(len(distinct)):
            plan.append({"prompt_id": pid, "response_id": rid, "j_first": distinct[a]["sample"],
                         "j_second": distinct[b]["sample"], "first": distinct[a], "second": distinct[b]})
    return plan


class BuildMetaPairs(_MRStage):
    """Actor pairs (length-controlled best vs worst) and judge pairs (Elo over meta-judge battles), mixed and
    deduplicated as TRL conversational preference rows."""

    kind: ClassVar[str] = "build_pairs"
    accepts: ClassVar[tuple[str, ...]] = ("mr_battles",)
    outputs: ClassVar[dict[str, str]] = {"train_pairs": "preference", "actor_pairs": "json_rows",
                                         "judge_pairs": "json_rows", "skipped": "rejected"}
    files: ClassVar[dict[str, str]] = {"train_pairs": "train_pairs.jsonl", "actor_pairs": "actor_pairs.jsonl",
                                       "judge_pairs": "judge_pairs.jsonl", "skipped": "skipped.jsonl"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        t, rho = ctx.iteration, self.cfg.rho(ctx.iteration)
        responses = read_jsonl(ctx.artifact("generate.responses"))
        score_of = {s["response_id"]: s["score"] for s in read_jsonl(ctx.artifact("judge.scores"))}
        by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in responses:
            by_prompt[r["prompt_id"]].append(r)
        actor_pairs, train, skipped = [], [], []
        for pid, rs in by_prompt.items():
            choice = select_actor_pair([score_of[r["response_id"]] for r in rs], [r["len_chars"] for r in rs], rho,
                                       [r["text"] for r in rs])
            if not choice.ok:
                skipped.append({"kind": "actor", "prompt_id": pid, "reason": choice.skip_reason})
                continue
            c, r = rs[choice.chosen], rs[choice.rejected]  # type: ignore[index]
            actor_pairs.append({"prompt_id": pid, "prompt": c["prompt"], "chosen": c["text"], "rejected": r["text"],
                                "S_chosen": score_of[c["response_id"]], "S_rejected": score_of[r["response_id"]],
                                "len_chosen": c["len_chars"], "len_rejected": r["len_chars"], "rho": rho})
            train.append(_trl_row(c["prompt"], c["text"], r["text"], "actor"))
        judge_pairs, w1, w2 = self._judge_pairs(ctx, responses, skipped)
        train = _dedup(train + [_trl_row(p["src"], p["chosen"], p["rejected"], "judge") for p in judge_pairs])
        for name, rows in (("actor_pairs", actor_pairs), ("judge_pairs", judge_pairs), ("train_pairs", train),
                           ("skipped", skipped)):
            write_jsonl(ctx.output(name), rows)
        lens = {k: statistics.fmean([p[k] for p in actor_pairs]) if actor_pairs else None
                for k in ("len_chosen", "len_rejected")}
        metrics = {"rho": rho, "actor_pairs": len(actor_pairs), "judge_pairs": len(judge_pairs),
                   "train_pairs": len(train), "omega_first": w1, "omega_second": w2,
                   "pair_len_chosen": lens["len_chosen"], "pair_len_rejected": lens["len_rejected"]}
        if not train:
            reasons = _top_reasons(read_jsonl(ctx.artifact("judge.judgments")), skipped)
            msg = (f"iteration {t}: 0 usable preference pairs ({reasons}); stopping instead of training on nothing. "
                   f"Check the judge (its raw outputs are in iter{t}/judgments.jsonl).")
            ctx.record(metrics, notes=[msg])
            raise NoUsablePairsError(msg)
        return metrics

    def _judge_pairs(self, ctx: StageContext, responses: list[dict[str, Any]],
                     skipped: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None, float | None]:
        t, m = ctx.iteration, self.cfg.meta_judge
        if not self.cfg.meta_judge_on(t):
            return [], None, None
        rows = read_jsonl(ctx.input())
        judgments = {(j["response_id"], j["sample"]): j for j in read_jsonl(ctx.artifact("judge.judgments"))}
        resp = {r["response_id"]: r for r in responses}
        win1, win2 = count_position_wins([Battle(0, 1, r["winner"]) for r in rows])
        w1, w2 = position_weights(win1, win2) if m.position_weighting else (1.0, 1.0)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            groups[r["response_id"]].append(r)
        pairs, template = [], judge_template(self.cfg)
        for rid, battles in groups.items():
            samples = sorted({b["j_first"] for b in battles} | {b["j_second"] for b in battles})
            index = {s: i for i, s in enumerate(samples)}
            texts = [judgments[(rid, s)]["judge_text"] for s in samples]
            choice = select_judge_pair(
                len(samples), [Battle(index[b["j_first"]], index[b["j_second"]], b["winner"]) for b in battles],
                w1, w2, lengths=[len(x) for x in texts], max_chosen_chars=m.chosen_judgment_max_chars.get(t),
                max_iter=m.elo_max_iter, l2=m.elo_l2)
            pid = resp[rid]["prompt_id"]
            if choice.chosen is None or choice.rejected is None:
                skipped.append({"kind": "judge", "prompt_id": pid, "reason": choice.skip_reason})
                continue
            src = template.render(question=prompt_text(resp[rid]["prompt"]), response=resp[rid]["text"])
            pairs.append({"prompt_id": pid, "response_id": rid, "src": src, "chosen": texts[choice.chosen],
                          "rejected": texts[choice.rejected], "elo_chosen": choice.ratings[choice.chosen],
                          "elo_rejected": choice.ratings[choice.rejected]})
        return pairs, w1, w2


class TrainMetaDPO(TrainDPO):
    """The public DPO stage (from ``M_{t-1}`` or the seed, per ``init_from``) with Meta-Rewarding's settings
    (``DPOConfig``: epochs or max_steps, β, NLL weight, LoRA) and its model at ``iter<t>/model``."""

    kind: ClassVar[str] = "train"
    files: ClassVar[dict[str, str]] = {"model": "model"}
    prefix_metrics: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: MetaRewardingConfig) -> TrainMetaDPO:
        d = cfg.dpo
        settings = DPOSettings(max_steps=d.max_steps or 1, learning_rate=d.learning_rate, batch_size=d.batch_size,
                               beta=d.beta, nll_alpha=d.nll_alpha, max_length=d.max_length,
                               num_threads=d.num_threads, seed=0)  # + the loop's seed + t: config.seed + t
        return cls(settings=settings, epochs=None if d.max_steps else d.epochs, peft=d.peft,
                   trl_config=dict(d.trl_config or {}))

    def run(self, ctx: StageContext) -> dict[str, Any]:
        check_model_dir(Path(ctx.init_model), what=f"initial model of iteration {ctx.iteration}")
        m = super().run(ctx)
        check_model_dir(ctx.output("model"))
        return {"train_steps": m["steps"], "train_loss": m.get("train_loss"),
                "train_reward_accuracy": m.get("rewards/accuracies")}


class EvaluateMetaRewarding(_MRStage):
    """The evaluator ``(actor, reward_judge, judge_template) -> {"metrics", "histograms", "records"}`` on the
    current model (iteration 0: the seed), plus the iteration's judge-score and length histograms."""

    kind: ClassVar[str] = "evaluate"
    outputs: ClassVar[dict[str, str]] = {"eval": "mr_eval"}
    files: ClassVar[dict[str, str]] = {"eval": "eval.jsonl"}
    runs_on_seed: ClassVar[bool] = True

    evaluator: Callable[..., dict[str, Any]] | None = Field(None, exclude=True)
    judge_generator: Any = Field(None, exclude=True)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        t, out = ctx.iteration, {}
        histograms: dict[str, list[float]] = {}
        notes: list[str] = []
        if t > 0:
            histograms["judge_score"] = [j["score"] for j in read_jsonl(ctx.artifact("judge.judgments"))
                                         if j["score"] is not None]
            histograms["gen_len_chars"] = [r["len_chars"] for r in read_jsonl(ctx.artifact("generate.responses"))]
            pairs = ctx.recorded_metrics()
            notes.append(f"rho={self.cfg.rho(t)}; meta-judge {'on' if self.cfg.meta_judge_on(t) else 'off'}; "
                         f"{pairs.get('actor_pairs', 0)} actor + {pairs.get('judge_pairs', 0)} judge pairs")
        if self.judge_generator is not None:
            notes.append(f"judge: {self.judge_generator.model_id} (fixed; not the model)")
        if self.evaluator is not None:
            judge = _judge(self.cfg, ctx, self.judge_generator, role_seed(self.cfg.seed, t, "eval_judge"))
            res = self.evaluator(ctx.generator(), judge, judge_template(self.cfg))
            out.update(res.get("metrics", {}))
            histograms.update({k: [float(x) for x in v] for k, v in res.get("histograms", {}).items()})
            write_jsonl(ctx.output("eval"), res.get("records", []))
        return {**out, "_histograms": histograms, "_notes": notes}


# --------------------------------------------------------------------------------------------- helpers


def _distinct(judgments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid judgements with distinct texts, in sample order (identical texts carry no preference)."""
    seen: set[str] = set()
    out = []
    for j in sorted(judgments, key=lambda j: j["sample"]):
        if j["judge_text"] not in seen:
            seen.add(j["judge_text"])
            out.append(j)
    return out


def _trl_row(prompt: Any, chosen: str, rejected: str, kind: str) -> dict[str, Any]:
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return {"prompt": msgs, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "kind": kind}


def _dedup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for r in rows:
        if r["chosen"] == r["rejected"]:
            continue
        key = stable_hash([r["prompt"], r["chosen"], r["rejected"]])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _top_reasons(judgments: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    valid = sum(j["score"] is not None for j in judgments)
    counts: dict[str, int] = defaultdict(int)
    for j in judgments:
        if j["invalid_reason"]:
            counts[j["invalid_reason"]] += 1
    top = ", ".join(f"{r!r} x{n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])[:2])
    skip: dict[str, int] = defaultdict(int)
    for s in skipped:
        skip[s["reason"]] += 1
    top_skip = ", ".join(f"{r!r} x{n}" for r, n in sorted(skip.items(), key=lambda kv: -kv[1])[:2])
    return (f"judge: {valid}/{len(judgments)} valid judgements" + (f", invalid: {top}" if top else "")
            + (f"; prompts skipped: {top_skip}" if top_skip else ""))
