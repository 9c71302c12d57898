"""REFERENCE ONLY: the Meta-Rewarding loop as it was before it became a composition of public loop stages
(judges/meta_rewarding/loop.py at commit 50c4c66, imports made absolute; issue 15 item 3). The equivalence test
(tests/judges/test_composed_equivalence.py) runs it and the composed loop on the same seeds and checks that they
write byte-identical data files and equal weights. Do not import it from the package.

The Meta-Rewarding loop (Wu et al., arXiv 2407.19594; spec/loops.md §3) as durable, resumable stages.

One model plays actor, judge and meta-judge. Iteration ``t`` (1-based) starts from model ``M_{t-1}``
(``M_0`` = the seed) and runs one LangGraph graph (:func:`loopwright.sdk.stages.run_stages`, SQLite checkpointer
``RUN_DIR/checkpoints.sqlite``, thread ``iter<t>``) of six stages, each writing its artifacts atomically into
``RUN_DIR/iter<t>/``:

1. ``generate``   — K responses per prompt from ``M_{t-1}`` (seeded sampling) → ``responses.jsonl``;
2. ``judge``      — N judgements per response (additive rubric, ``Score:`` parser); a response's score is the mean
   of its valid judgements; invalid ones are recorded with their reason → ``judgments.jsonl``, ``scores.jsonl``;
3. ``meta_judge`` — (iterations in ``meta_judge.enabled_iterations``) per prompt the response with the most judge
   disagreement; every pair of its distinct valid judgements in both orders → ``meta_battles.jsonl``;
4. ``build_pairs`` — actor pairs with length control ρ (:func:`~.actor.select_actor_pair`), judge pairs by
   position-weighted Elo with length caps (:func:`~.meta_judge.select_judge_pair`) → ``actor_pairs.jsonl``,
   ``judge_pairs.jsonl``, ``train_pairs.jsonl`` (TRL conversational rows), ``skipped.jsonl``. Zero usable pairs
   stops the loop with :class:`NoUsablePairsError` (recorded in ``iterations.jsonl`` and the report) instead of
   training on nothing;
5. ``train``      — DPO (:func:`loopwright.trainers.dpo.dpo_train`) from ``M_{t-1}`` (``init_from="previous"``) or
   the seed → ``model/`` (written to a temporary folder and renamed into place);
6. ``evaluate``   — the evaluator on ``M_t``; one record appended to ``RUN_DIR/iterations.jsonl``.

Before iteration 1, thread ``iter0`` evaluates the seed (iteration 0 in the report). A killed run resumes with
``resume=True``: finished iterations and stages are not redone (LangGraph restarts at the interrupted stage,
which rewrites its own artifacts). Per-iteration data artifacts hold no timings or absolute paths, so an
interrupted-and-resumed run and an uninterrupted one with the same seeds write identical files.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from loopwright.judges.meta_rewarding.actor import select_actor_pair
from loopwright.judges.meta_rewarding.checkpoints import CheckpointError, check_model_dir, check_state_db
from loopwright.judges.meta_rewarding.config import MetaRewardingConfig
from loopwright.judges.meta_rewarding.meta_judge import (
    Battle,
    MetaJudge,
    battle_plan,
    count_position_wins,
    pick_max_variance,
    position_weights,
    select_judge_pair,
)
from loopwright.judges.parsers import parse_score
from loopwright.judges.pointwise import PointwiseJudge
from loopwright.judges.templates import prompt_text
from loopwright.sdk.artifacts import RunDir, read_jsonl, write_jsonl
from loopwright.sdk.errors import ConfigError, LoopwrightError
from loopwright.sdk.generator import Generator
from loopwright.sdk.types import Prompt, SamplingParams, normalize_prompt, stable_hash

__all__ = ["STAGES", "CheckpointError", "MetaRewardingLoop", "NoUsablePairsError"]

STAGES = ("generate", "judge", "meta_judge", "build_pairs", "train", "evaluate")

Evaluator = Callable[[Generator, PointwiseJudge, Any], dict[str, Any]]


class NoUsablePairsError(LoopwrightError, RuntimeError):
    """An iteration produced no preference pair (e.g. every judgement was unparseable): the loop stops rather than
    train on nothing. The iteration is recorded in ``iterations.jsonl`` with the reason."""


def _seed(*parts: Any) -> int:
    return int(stable_hash(list(parts), length=12), 16)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class MetaRewardingLoop:
    """Run Meta-Rewarding iterations in ``run_dir``.

    Args:
        config: :class:`~.config.MetaRewardingConfig`.
        run_dir: the run directory (created; an existing run is continued only with ``resume=True``).
        seed_model: the seed model folder (``M_0``; checked before anything runs).
        prompts: the prompt pool; iteration ``t`` takes ``prompts_per_iter`` consecutive prompts from
            ``(t-1)·prompts_per_iter`` on (wrapping around the pool).
        generator_factory: ``model_dir -> Generator`` for the current model (default: ``TransformersGenerator``).
            The loop keeps one model's generator open at a time and closes it before loading another.
        judge / meta_judge: ``None`` (default) = the current model plays the role, as in the paper; or a fixed
            Generator (e.g. the sandbox's verifiable-signal judge).
        evaluator: ``(actor, reward_judge, judge_template) -> {"metrics", "histograms", "records"}`` run on every
            model (e.g. :class:`~.sandbox.MiniArithEval`); ``None`` skips evaluation metrics.
        on_stage: called with the stage name (``"iter2.judge"``) when a stage starts (progress, tests).
        progress: print one line per stage.
    """

    def __init__(
        self,
        config: MetaRewardingConfig,
        run_dir: str | Path,
        *,
        seed_model: str | Path,
        prompts: Sequence[Prompt],
        generator_factory: Callable[[Path], Generator] | None = None,
        judge: Generator | None = None,
        meta_judge: Generator | None = None,
        evaluator: Evaluator | None = None,
        on_stage: Callable[[str], None] | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(config, MetaRewardingConfig):
            raise TypeError(f"config must be a MetaRewardingConfig, got {type(config).__name__}")
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.seed_model = Path(seed_model)
        self.prompts = [normalize_prompt(p) for p in prompts]
        if len(self.prompts) < config.prompts_per_iter:
            raise ConfigError(f"prompts_per_iter={config.prompts_per_iter} but the prompt pool holds only "
                              f"{len(self.prompts)} prompts; lower prompts_per_iter or pass more prompts")
        for name, g in (("judge", judge), ("meta_judge", meta_judge)):
            if g is not None and not isinstance(g, Generator):
                raise TypeError(f"{name} must be a loopwright Generator or None (the model itself), "
                                f"got {type(g).__name__}")
        self.generator_factory = generator_factory or _transformers_factory
        self.judge_generator = judge
        self.meta_judge_generator = meta_judge
        self.evaluator = evaluator
        self.on_stage = on_stage
        self.progress = progress
        self._open: tuple[Path, Generator] | None = None

    # ------------------------------------------------------------------------------------------- paths

    def model_dir(self, t: int) -> Path:
        """``M_t``: the seed for ``t == 0``, else ``RUN_DIR/iter<t>/model``."""
        return self.seed_model if t == 0 else self.run_dir / f"iter{t}" / "model"

    def _it(self, t: int, name: str) -> Path:
        return self.run_dir / f"iter{t}" / name

    def to_dataset(self, iteration: int, which: Literal["train", "actor", "judge"] = "train") -> Any:
        """Iteration ``iteration``'s DPO data as a TRL preference ``datasets.Dataset`` (conversational
        prompt/chosen/rejected): ``"train"`` the mixed actor + judge pairs the iteration trained on, ``"actor"``
        or ``"judge"`` one kind only."""
        from loopwright.sdk.trl_data import to_dataset, to_trl_rows

        path = self._it(iteration, "train_pairs.jsonl")
        if not path.is_file():
            raise FileNotFoundError(f"iteration {iteration} has no {path.name} in {self.run_dir} (not run yet?)")
        rows = read_jsonl(path)
        if which != "train":
            rows = [r for r in rows if r.get("kind") == which]
        return to_dataset(to_trl_rows(rows, "preference"), "preference")

    # ------------------------------------------------------------------------------------------- generators

    def _generator(self, model_dir: Path) -> Generator:
        if self._open is not None and self._open[0] == model_dir:
            return self._open[1]
        self._close()
        check_model_dir(model_dir)
        gen = self.generator_factory(model_dir)
        self._open = (model_dir, gen)
        return gen

    def _close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def _judge(self, model_dir: Path, *, seed: int) -> PointwiseJudge:
        j = self.cfg.judge
        gen = self.judge_generator or self._generator(model_dir)
        sampling = SamplingParams(temperature=j.temperature, top_p=j.top_p, max_tokens=j.max_tokens, seed=seed)
        return PointwiseJudge(gen, j.template, samples=j.N, sampling=sampling, low=j.low, high=j.high)

    def _meta_judge(self, model_dir: Path, *, seed: int) -> MetaJudge:
        m = self.cfg.meta_judge
        gen = self.meta_judge_generator or self._generator(model_dir)
        return MetaJudge(gen, m.template, sampling=SamplingParams(temperature=m.temperature, max_tokens=m.max_tokens,
                                                                  seed=seed))

    # ------------------------------------------------------------------------------------------- run

    def run(self, resume: bool = False) -> list[dict[str, Any]]:
        """Run (or with ``resume=True`` continue) all iterations; returns the ``iterations.jsonl`` records.

        Raises :class:`NoUsablePairsError` when an iteration has nothing to train on (after recording it and
        writing the report) and :class:`~.checkpoints.CheckpointError` naming a missing or corrupt file.
        """
        from loopwright.sdk.report import read_iterations, write_report
        from loopwright.sdk.stages import Stage, run_stages

        check_model_dir(self.seed_model, what="seed model")
        state_db = self.run_dir / "checkpoints.sqlite"
        if resume:
            check_state_db(state_db)
        elif state_db.exists():
            raise ConfigError(f"{self.run_dir} already holds a run ({state_db}); pass resume=True (--resume) to "
                              "continue it, or use a new run directory")
        run = RunDir(self.run_dir, config=self._run_config(), seeds={"seed": self.cfg.seed})
        try:
            run_stages([Stage("iter0.evaluate", lambda s, r: self._stage_evaluate(0, s, r))], run,
                       resume=resume, thread_id="iter0")
            for t in range(1, self.cfg.iterations + 1):
                stages = [Stage(f"iter{t}.{name}", self._bind(name, t)) for name in STAGES]
                run_stages(stages, run, resume=resume, thread_id=f"iter{t}")
        except NoUsablePairsError:
            write_report(self.run_dir, title="Meta-Rewarding")
            raise
        finally:
            self._close()
        write_report(self.run_dir, title="Meta-Rewarding")
        return [r.model_dump(mode="json") for r in read_iterations(self.run_dir)]

    def _run_config(self) -> dict[str, Any]:
        return {"meta_rewarding": self.cfg.model_dump(mode="json"), "seed_model": str(self.seed_model),
                "judge": self.judge_generator.model_id if self.judge_generator else "self",
                "meta_judge": self.meta_judge_generator.model_id if self.meta_judge_generator else "self",
                "prompts": stable_hash(self.prompts)}

    def _bind(self, name: str, t: int) -> Callable[[Any, Any], dict[str, Any]]:
        fn = getattr(self, f"_stage_{name}")
        return lambda state, run: fn(t, state, run)

    def _start(self, t: int, name: str) -> None:
        full = f"iter{t}.{name}"
        if self.progress:
            print(f"[meta-rewarding] {full}", flush=True)
        if self.on_stage is not None:
            self.on_stage(full)

    def _prompts_for(self, t: int) -> list[tuple[str, Any]]:
        n, pool = self.cfg.prompts_per_iter, self.prompts
        start = (t - 1) * n
        return [(f"p{(start + i) % len(pool)}", pool[(start + i) % len(pool)]) for i in range(n)]

    # ------------------------------------------------------------------------------------------- stages

    def _stage_generate(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "generate")
        a = self.cfg.actor
        items = self._prompts_for(t)
        gen = self._generator(self.model_dir(t - 1))
        params = SamplingParams(n=a.K, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                                seed=_seed(self.cfg.seed, t, "actor"))
        outs = gen.generate([p for _, p in items], params)
        rows = [{"prompt_id": pid, "prompt": prompt, "response_id": f"{pid}-r{k}", "k": k, "text": c.text,
                 "len_chars": len(c.text), "finish_reason": c.finish_reason}
                for (pid, prompt), row in zip(items, outs, strict=True) for k, c in enumerate(row)]
        path = self._it(t, "responses.jsonl")
        write_jsonl(path, rows)
        lengths = [r["len_chars"] for r in rows]
        return {"artifacts": {"responses": str(path)},
                "metrics": {"n_prompts": len(items), "n_responses": len(rows),
                            "gen_len_chars": statistics.fmean(lengths) if lengths else None,
                            "gen_cut_rate": sum(r["finish_reason"] == "length" for r in rows) / max(1, len(rows))}}

    def _stage_judge(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "judge")
        responses = read_jsonl(self._it(t, "responses.jsonl"))
        judge = self._judge(self.model_dir(t - 1), seed=_seed(self.cfg.seed, t, "judge"))
        run.set_meta(f"iter{t}.judge", judge.provenance(judge.sampling))
        verdicts = judge.score([r["prompt"] for r in responses], [r["text"] for r in responses])
        judgments, scores = [], []
        for r, v in zip(responses, verdicts, strict=True):
            texts = [v.raw] if self.cfg.judge.N == 1 else json.loads(v.raw)
            valid = []
            for j, text in enumerate(texts):
                res = parse_score(text, self.cfg.judge.low, self.cfg.judge.high)
                judgments.append({"prompt_id": r["prompt_id"], "response_id": r["response_id"], "sample": j,
                                  "judge_text": text, "score": res.value, "invalid_reason": res.reason,
                                  "len_chars": len(text)})
                if res.value is not None:
                    valid.append(res.value)
            scores.append({"prompt_id": r["prompt_id"], "response_id": r["response_id"],
                           "score": statistics.fmean(valid) if valid else None, "n_valid": len(valid),
                           "samples": valid})
        write_jsonl(self._it(t, "judgments.jsonl"), judgments)
        write_jsonl(self._it(t, "scores.jsonl"), scores)
        valid_scores = [s["score"] for s in scores if s["score"] is not None]
        return {"artifacts": {"judgments": str(self._it(t, "judgments.jsonl")),
                              "scores": str(self._it(t, "scores.jsonl"))},
                "metrics": {"judge_valid_rate": sum(j["score"] is not None for j in judgments) / max(1, len(judgments)),
                            "reward": statistics.fmean(valid_scores) if valid_scores else None,
                            "scored_responses": len(valid_scores)}}

    def _stage_meta_judge(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "meta_judge")
        path = self._it(t, "meta_battles.jsonl")
        if not self.cfg.meta_judge_on(t):
            write_jsonl(path, [])
            return {"artifacts": {"meta_battles": str(path)}, "metrics": {"meta_enabled": 0}}
        responses = {r["response_id"]: r for r in read_jsonl(self._it(t, "responses.jsonl"))}
        by_prompt: dict[str, list[str]] = defaultdict(list)
        for r in responses.values():
            by_prompt[r["prompt_id"]].append(r["response_id"])
        judgments: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for j in read_jsonl(self._it(t, "judgments.jsonl")):
            if j["score"] is not None:
                judgments[j["response_id"]].append(j)
        plan: list[dict[str, Any]] = []
        for pid, rids in by_prompt.items():
            pick = pick_max_variance([[j["score"] for j in judgments[rid]] for rid in rids])
            if pick is None:
                continue
            rid = rids[pick]
            distinct = _distinct(judgments[rid])[: self.cfg.meta_judge.max_judgements or None]
            for a, b in battle_plan(len(distinct)):
                plan.append({"prompt_id": pid, "response_id": rid, "j_first": distinct[a]["sample"],
                             "j_second": distinct[b]["sample"], "first": distinct[a], "second": distinct[b]})
        meta = self._meta_judge(self.model_dir(t - 1), seed=_seed(self.cfg.seed, t, "meta"))
        run.set_meta(f"iter{t}.meta_judge", meta.provenance())
        answers = meta.compare([(responses[p["response_id"]]["prompt"], responses[p["response_id"]]["text"],
                                 p["first"]["judge_text"], p["second"]["judge_text"]) for p in plan])
        rows = []
        for p, (winner, reason, text) in zip(plan, answers, strict=True):
            rows.append({"prompt_id": p["prompt_id"], "response_id": p["response_id"], "j_first": p["j_first"],
                         "j_second": p["j_second"], "winner": winner, "invalid_reason": reason, "meta_text": text,
                         "score_first": p["first"]["score"], "score_second": p["second"]["score"]})
        write_jsonl(path, rows)
        decided = [r for r in rows if r["winner"] is not None]
        differing = [r for r in decided if r["score_first"] != r["score_second"]]
        higher = sum((r["winner"] == "first") == (r["score_first"] > r["score_second"]) for r in differing)
        return {"artifacts": {"meta_battles": str(path)},
                "metrics": {"meta_enabled": 1, "meta_battles": len(rows),
                            "meta_valid_rate": len(decided) / len(rows) if rows else None,
                            "meta_first_win_rate": (sum(r["winner"] == "first" for r in decided) / len(decided)
                                                    if decided else None),
                            "meta_prefers_higher_score_rate": higher / len(differing) if differing else None}}

    def _stage_build_pairs(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "build_pairs")
        rho = self.cfg.rho(t)
        responses = read_jsonl(self._it(t, "responses.jsonl"))
        score_of = {s["response_id"]: s["score"] for s in read_jsonl(self._it(t, "scores.jsonl"))}
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
        judge_pairs, w1, w2 = self._judge_pairs(t, responses, skipped)
        train += [_trl_row(p["src"], p["chosen"], p["rejected"], "judge") for p in judge_pairs]
        train = _dedup(train)
        write_jsonl(self._it(t, "actor_pairs.jsonl"), actor_pairs)
        write_jsonl(self._it(t, "judge_pairs.jsonl"), judge_pairs)
        write_jsonl(self._it(t, "train_pairs.jsonl"), train)
        write_jsonl(self._it(t, "skipped.jsonl"), skipped)
        metrics = {"rho": rho, "actor_pairs": len(actor_pairs), "judge_pairs": len(judge_pairs),
                   "train_pairs": len(train), "omega_first": w1, "omega_second": w2,
                   "pair_len_chosen": statistics.fmean([p["len_chosen"] for p in actor_pairs]) if actor_pairs else None,
                   "pair_len_rejected": (statistics.fmean([p["len_rejected"] for p in actor_pairs])
                                         if actor_pairs else None)}
        if not train:
            reasons = _top_reasons(t, self._it(t, "judgments.jsonl"), skipped)
            msg = (f"iteration {t}: 0 usable preference pairs ({reasons}); stopping instead of training on nothing. "
                   f"Check the judge (its raw outputs are in iter{t}/judgments.jsonl).")
            from loopwright.sdk.report import append_iteration

            append_iteration(self.run_dir, {"iteration": t, "metrics": _numeric({**state.get("metrics", {}),
                                                                                  **metrics}),
                                            "histograms": {}, "notes": [msg]})
            raise NoUsablePairsError(msg)
        return {"artifacts": {"train_pairs": str(self._it(t, "train_pairs.jsonl"))}, "metrics": metrics}

    def _judge_pairs(self, t: int, responses: list[dict[str, Any]],
                     skipped: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None, float | None]:
        if not self.cfg.meta_judge_on(t):
            return [], None, None
        m = self.cfg.meta_judge
        rows = read_jsonl(self._it(t, "meta_battles.jsonl"))
        judgments = {(j["response_id"], j["sample"]): j for j in read_jsonl(self._it(t, "judgments.jsonl"))}
        resp = {r["response_id"]: r for r in responses}
        win1, win2 = count_position_wins([Battle(0, 1, r["winner"]) for r in rows])
        w1, w2 = position_weights(win1, win2) if m.position_weighting else (1.0, 1.0)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            groups[r["response_id"]].append(r)
        pairs = []
        template = self._judge_template()
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

    def _judge_template(self) -> Any:
        from loopwright.judges.templates import ADDITIVE_5POINT, POINTWISE_VARIABLES, as_template

        return as_template(self.cfg.judge.template, ADDITIVE_5POINT, POINTWISE_VARIABLES)

    def _stage_train(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "train")
        from loopwright.trainers.dpo import DPOSettings, dpo_train

        init = self.model_dir(t - 1) if self.cfg.init_from == "previous" else self.seed_model
        check_model_dir(init, what=f"initial model of iteration {t}")
        rows = read_jsonl(self._it(t, "train_pairs.jsonl"))
        d = self.cfg.dpo
        settings = DPOSettings(max_steps=d.steps_for(len(rows)), learning_rate=d.learning_rate,
                               batch_size=d.batch_size, beta=d.beta, nll_alpha=d.nll_alpha, max_length=d.max_length,
                               num_threads=d.num_threads, seed=self.cfg.seed + t, lora=d.peft)
        self._close()  # free the generator (a vLLM engine holds memory) while training
        result = dpo_train(init, rows, self.model_dir(t), settings, trl_config=d.trl_config or None)
        check_model_dir(self.model_dir(t))
        m = result.metrics
        return {"artifacts": {"model": str(self.model_dir(t))},
                "metrics": {"train_steps": settings.max_steps, "train_loss": m.get("train_loss"),
                            "train_reward_accuracy": m.get("rewards/accuracies")}}

    def _stage_evaluate(self, t: int, state: Any, run: RunDir) -> dict[str, Any]:
        self._start(t, "evaluate")
        model = self.model_dir(t)
        metrics: dict[str, Any] = dict(state.get("metrics", {})) if t > 0 else {}
        histograms: dict[str, list[float]] = {}
        notes: list[str] = []
        if t > 0:
            judgments = read_jsonl(self._it(t, "judgments.jsonl"))
            histograms["judge_score"] = [j["score"] for j in judgments if j["score"] is not None]
            histograms["gen_len_chars"] = [r["len_chars"] for r in read_jsonl(self._it(t, "responses.jsonl"))]
            notes.append(f"rho={self.cfg.rho(t)}; meta-judge {'on' if self.cfg.meta_judge_on(t) else 'off'}; "
                         f"{metrics.get('actor_pairs', 0)} actor + {metrics.get('judge_pairs', 0)} judge pairs")
        if self.judge_generator is not None:
            notes.append(f"judge: {self.judge_generator.model_id} (fixed; not the model)")
        if self.evaluator is not None:
            actor = self._generator(model)
            judge = self._judge(model, seed=_seed(self.cfg.seed, t, "eval_judge"))
            res = self.evaluator(actor, judge, self._judge_template())
            metrics.update(res.get("metrics", {}))
            histograms.update({k: [float(x) for x in v] for k, v in res.get("histograms", {}).items()})
            write_jsonl(self._it(t, "eval.jsonl"), res.get("records", []))
        from loopwright.sdk.report import append_iteration

        record = {"iteration": t, "metrics": _numeric(metrics), "histograms": histograms, "notes": notes}
        append_iteration(self.run_dir, record)
        return {"artifacts": {"iterations": str(self.run_dir / "iterations.jsonl")},
                "metrics": {k: v for k, v in _numeric(metrics).items() if k.startswith("eval_")}}


# --------------------------------------------------------------------------------------------- helpers


def _transformers_factory(model_dir: Path) -> Generator:
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir, batch_size=64)


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


def _numeric(metrics: dict[str, Any]) -> dict[str, float | int | None]:
    return {k: (v if _num(v) else None) for k, v in metrics.items() if v is None or _num(v)}


def _top_reasons(t: int, judgments_path: Path, skipped: list[dict[str, Any]]) -> str:
    judgments = read_jsonl(judgments_path)
    valid = sum(j["score"] is not None for j in judgments)
    counts: dict[str, int] = defaultdict(int)
    for j in judgments:
        if j["invalid_reason"]:
            counts[j["invalid_reason"]] += 1
    top = ", ".join(f"{r!r} x{n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1])[:2])
    skip = defaultdict(int)
    for s in skipped:
        skip[s["reason"]] += 1
    top_skip = ", ".join(f"{r!r} x{n}" for r, n in sorted(skip.items(), key=lambda kv: -kv[1])[:2])
    return (f"judge: {valid}/{len(judgments)} valid judgements" + (f", invalid: {top}" if top else "")
            + (f"; prompts skipped: {top_skip}" if top_skip else ""))
