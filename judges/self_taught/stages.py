"""The Self-Taught Evaluator's own loop stages (Wang et al., arXiv 2408.02666; spec/loops.md §4.1), for the public
:class:`~loopwright.sdk.loop.Loop`.

- :class:`HeldOutPairs` (``eval_pairs``, once): the fixed held-out construction-labelled MiniArith pairs ->
  ``RUN_DIR/eval_pairs.jsonl``;
- :class:`ConstructPairs` (``pairs``): ``(x, y_w, y_l)`` with ``y_l`` a good answer to a modified instruction
  (§4.4), from MiniArith or from an LLM (the worse-response prompt, parsed) -> ``iter_<i>/pairs.jsonl``;
- :class:`JudgeBothOrders` (``judge``): ``M_{i-1}`` samples N judgements per pair in both orders (§4.1, §4.3) ->
  ``judgements.jsonl``;
- :class:`SelectJudgements` (``select``): rejection sampling against the known label and label balancing, or
  (correct, incorrect) judgement pairs for DPO -> ``train.jsonl``; zero usable examples stops the loop with
  :class:`~.config.NoUsableJudgementsError`, recorded in the report;
- :class:`TrainJudgeSFT` / :class:`TrainJudgeDPO` (``train``): the public SFT / DPO stages with the config's
  settings -> ``iter_<i>/model``;
- :class:`EvaluateJudge` (``evaluate``): held-out judge accuracy, both orders, greedy -> ``metrics.json``,
  ``eval/``.

The files are those of the loop's first version; their names and rows are unchanged.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any, ClassVar, Literal

from pydantic import Field

from ...sdk.artifacts import read_jsonl, write_json, write_jsonl
from ...sdk.generator import Generator
from ...sdk.loop import LoopStage, StageContext
from ...sdk.tasks.miniarith import generate_problems
from ...sdk.types import SamplingParams
from ...trainers.loop_stages import TrainDPO, TrainSFT
from ..datasets import PreferencePair
from .config import EVAL_START, TRAIN_START, NoUsableJudgementsError, SelfTaughtConfig
from .data import JudgedSample, balance_labels, dpo_pairs, miniarith_pairs, rejection_sample
from .prompts import judge_template, parse_worse_response, worse_response_prompt

__all__ = ["ConstructPairs", "EvaluateJudge", "HeldOutPairs", "JudgeBothOrders", "SelectJudgements",
           "TrainJudgeDPO", "TrainJudgeSFT", "generator_pairs"]


class _STEStage(LoopStage):
    """A Self-Taught Evaluator stage: the whole config (recorded once, by the loop), metrics as the report names
    them."""

    prefix_metrics: ClassVar[bool] = False
    cfg: SelfTaughtConfig = Field(exclude=True)


class HeldOutPairs(_STEStage):
    """The held-out evaluation pairs, built once from MiniArith stream index ``EVAL_START`` on."""

    kind: ClassVar[str] = "eval_pairs"
    runs_once: ClassVar[bool] = True
    outputs: ClassVar[dict[str, str]] = {"eval_pairs": "ste_pairs"}
    files: ClassVar[dict[str, str]] = {"eval_pairs": "eval_pairs.jsonl"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        c = self.cfg
        write_jsonl(ctx.output("eval_pairs"),
                    miniarith_pairs(c.eval_pairs, c.task, start=EVAL_START, seed=c.seed + 7, worse=c.worse))
        return {}


class ConstructPairs(_STEStage):
    """This iteration's construction-labelled pairs (fresh instructions each iteration unless ``fresh_pairs`` is
    off), never a held-out question."""

    kind: ClassVar[str] = "pairs"
    outputs: ClassVar[dict[str, str]] = {"pairs": "ste_pairs"}
    files: ClassVar[dict[str, str]] = {"pairs": "pairs.jsonl"}

    pair_generator: Any = Field(None, exclude=True)
    instructions: list[str] | None = Field(None, exclude=True)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        c, i = self.cfg, ctx.iteration
        exclude = {r["question"] for r in read_jsonl(ctx.artifact("eval_pairs.eval_pairs"))}
        offset = TRAIN_START + ((i - 1) * 10 * c.pairs_per_iteration if c.fresh_pairs else 0)
        notes: list[str] = []
        if c.pair_source == "miniarith":
            rows = miniarith_pairs(c.pairs_per_iteration, c.task, start=offset, seed=c.seed + i, exclude=exclude,
                                   worse=c.worse)
        else:
            rows, notes = generator_pairs(c, ctx.meter(self.pair_generator), self.instructions, offset, exclude)
        write_jsonl(ctx.output("pairs"), rows)
        return {"_notes": notes} if notes else {}


def generator_pairs(c: SelfTaughtConfig, gen: Generator, instructions: list[str] | None, offset: int,
                    exclude: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """§4.4 with an LLM: ``y_w = M_gen(x)``; ``(x', y_l) = parse(M_gen(worse_response_prompt(x, y_w)))``.
    Unparseable outputs are skipped and counted in the returned notes."""
    if instructions is not None:
        xs = instructions[:c.pairs_per_iteration]
    else:
        xs = [p.question for p in generate_problems(c.pairs_per_iteration, c.task, start=offset)
              if p.question not in exclude]
    params = SamplingParams(temperature=0.0, max_tokens=512, seed=c.seed)
    answers = [o[0].text for o in gen.generate([[{"role": "user", "content": x}] for x in xs], params)]
    worse = gen.generate([worse_response_prompt(x, y) for x, y in zip(xs, answers, strict=True)],
                         params.model_copy(update={"max_tokens": 1024}))
    rows, reasons = [], Counter()
    for k, (x, y, w) in enumerate(zip(xs, answers, worse, strict=True)):
        parsed = parse_worse_response(w[0].text, x)
        if not parsed.ok or not y.strip():
            reasons[parsed.reason or "empty baseline response"] += 1
            continue
        rows.append({"id": f"gen-{offset + k}", "question": x, "chosen": y, "rejected": parsed.response,
                     "modified_question": parsed.modified_instruction})
    return rows, [f"{n} worse-response outputs unusable: {r}" for r, n in reasons.items()]


def _slot(order: str) -> Literal["A", "B"]:
    return "A" if order == "0_1" else "B"


class JudgeBothOrders(_STEStage):
    """``N`` judgements per pair and order by the current judge ``M_{i-1}`` (T 0.7, top-p 0.9; §4.3)."""

    kind: ClassVar[str] = "judge"
    accepts: ClassVar[tuple[str, ...]] = ("ste_pairs",)
    outputs: ClassVar[dict[str, str]] = {"judgements": "ste_judgements"}
    files: ClassVar[dict[str, str]] = {"judgements": "judgements.jsonl"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        c, template = self.cfg, judge_template(self.cfg.judge_prompt_style)
        keys = []
        for p in read_jsonl(ctx.input()):
            for order in ("0_1", "1_0"):  # both positions (§4.1)
                a, b = (p["chosen"], p["rejected"]) if order == "0_1" else (p["rejected"], p["chosen"])
                keys.append({"key": f"{p['id']}/{order}", "pair_id": p["id"], "order": order, "label": _slot(order),
                             "prompt": template.render(question=p["question"], response_a=a, response_b=b)})
        params = SamplingParams(n=c.samples, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                                seed=c.seed * 1000 + ctx.iteration)
        gen, outs = ctx.generator(), []
        for s in range(0, len(keys), c.generation_batch_size):
            outs.extend(gen.generate([k["prompt"] for k in keys[s:s + c.generation_batch_size]], params))
        n_valid = n_correct = 0
        for k, row in zip(keys, outs, strict=True):
            samples = [JudgedSample.parse(comp.text) for comp in row]
            k["samples"] = [{"text": s.text, "verdict": s.verdict, "reason": s.reason} for s in samples]
            n_valid += sum(s.verdict is not None for s in samples)
            n_correct += sum(s.verdict == k["label"] for s in samples)
        write_jsonl(ctx.output("judgements"), keys)
        n = len(keys) * c.samples
        return {"valid_sample_rate": n_valid / n if n else None, "correct_sample_rate": n_correct / n if n else None}


class SelectJudgements(_STEStage):
    """Rejection sampling against the known label (one correct judgement per key, seeded, optional majority
    vote) and label balancing (SFT rows), or (correct, incorrect) judgement pairs (DPO rows, §4.4)."""

    kind: ClassVar[str] = "select"
    accepts: ClassVar[tuple[str, ...]] = ("ste_judgements",)
    files: ClassVar[dict[str, str]] = {"train": "train.jsonl"}

    def output_kinds(self, input_kind: str | None) -> dict[str, str]:
        return {"train": "sft" if self.cfg.train_method == "sft" else "preference"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        c, i = self.cfg, ctx.iteration
        rng = random.Random(c.rejection_seed + i)
        groups = [{**k, "samples": [JudgedSample(s["text"], s["verdict"], s["reason"]) for s in k["samples"]]}
                  for k in read_jsonl(ctx.input())]
        if c.train_method == "sft":
            kept = []
            for g in groups:
                pick = rejection_sample(g["samples"], g["label"], rng, c.majority_voting)
                if pick is not None:
                    kept.append({"prompt": g["prompt"], "target": pick.text, "label": g["label"], "key": g["key"]})
            before = len(kept)
            rows = balance_labels(kept, rng) if c.label_balance else kept
        else:
            rows = dpo_pairs(groups, rng, num_pairs=c.dpo_pairs_per_key, balance=c.label_balance)
            before = len({r["key"] for r in rows})
        path = ctx.output("train")
        write_jsonl(path, rows)
        if not rows:
            self._stop(ctx, groups, path)
        return {"usable_examples": len(rows), "kept_before_balance": before}

    @staticmethod
    def _stop(ctx: StageContext, groups: list[dict[str, Any]], path: Any) -> None:
        n_samples = sum(len(g["samples"]) for g in groups)
        n_valid = sum(s.verdict is not None for g in groups for s in g["samples"])
        n_correct = sum(s.verdict == g["label"] for g in groups for s in g["samples"])
        invalid = Counter(s.reason for g in groups for s in g["samples"] if s.verdict is None)
        top = ", ".join(f"{r} ({n})" for r, n in invalid.most_common(3)) or "none"
        msg = (f"iteration {ctx.iteration}: the judge produced 0 usable judgements ({n_samples} samples: "
               f"{n_samples - n_valid} unparseable, {n_valid - n_correct} with the wrong verdict; most common parse "
               f"failures: {top}). Not training on nothing; see {path.parent / 'judgements.jsonl'}")
        ctx.record({"usable_examples": 0, "judge_samples": n_samples,
                    "valid_sample_rate": n_valid / max(1, n_samples),
                    "correct_sample_rate": n_correct / max(1, n_samples)},
                   notes=[msg], status="stopped: no usable judgements")
        raise NoUsableJudgementsError(msg)


class _TrainJudge:
    """Shared by the two train stages: the judge's model at ``iter_<i>/model``, its loss in the report."""

    kind: ClassVar[str] = "train"
    files: ClassVar[dict[str, str]] = {"model": "model"}
    prefix_metrics: ClassVar[bool] = False

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return {"train_loss": super().run(ctx)["train_loss"]}  # type: ignore[misc]


class TrainJudgeSFT(_TrainJudge, TrainSFT):
    """SFT of the judge on the selected judgements (loss on the judgement tokens only)."""

    def _rows(self, ctx: StageContext) -> list[dict[str, Any]]:
        return [{"prompt": r["prompt"], "target": r["target"]} for r in super()._rows(ctx)]


class TrainJudgeDPO(_TrainJudge, TrainDPO):
    """DPO + NLL of the judge on (correct, incorrect) judgement pairs (the release: β 0.1, NLL weight 1.5)."""


def train_stage(cfg: SelfTaughtConfig) -> TrainJudgeSFT | TrainJudgeDPO:
    """The config's trainer, seeded ``config.seed + i`` (the loop adds its seed and the iteration)."""
    settings = cfg.train_settings().model_copy(update={"seed": 0})
    return TrainJudgeSFT(settings=settings) if cfg.train_method == "sft" else TrainJudgeDPO(settings=settings)


class EvaluateJudge(_STEStage):
    """Held-out judge accuracy of the current judge (iteration 0: the seed judge), greedy, both orders
    (:func:`~loopwright.judges.evaluation.evaluate`): order-averaged and position-consistent accuracy, accuracy by
    slot, invalid rate (§4.5, §9), and optionally LLMBar's Chat Hard section."""

    kind: ClassVar[str] = "evaluate"
    runs_on_seed: ClassVar[bool] = True
    outputs: ClassVar[dict[str, str]] = {"metrics": "json", "eval": "json_dir"}
    files: ClassVar[dict[str, str]] = {"metrics": "metrics.json", "eval": "eval"}

    def run(self, ctx: StageContext) -> dict[str, Any]:
        from ..evaluation import evaluate
        from ..pairwise import PairwiseJudge

        c, i, t0 = self.cfg, ctx.iteration, time.perf_counter()
        pairs = [PreferencePair(id=r["id"], prompt=r["question"], chosen=r["chosen"], rejected=r["rejected"],
                                subset="miniarith") for r in read_jsonl(ctx.artifact("eval_pairs.eval_pairs"))]
        if c.llmbar_eval:
            from ..datasets import load_llmbar

            pairs += load_llmbar()[:c.llmbar_eval]
        judge = PairwiseJudge(ctx.generator(), judge_template(c.judge_prompt_style), both_orders=True,
                              disagreement="tie", sampling=SamplingParams(temperature=0.0, max_tokens=c.eval_max_tokens),
                              use_logprobs=False, name=f"ste-judge-{i}")
        report = evaluate(judge, pairs, seed=c.seed, batch_size=c.generation_batch_size, run_dir=ctx.output("eval"))
        mini = report.subsets.get("miniarith")
        metrics: dict[str, Any] = {
            "judge_accuracy": report.order_averaged_accuracy,
            "position_consistent_accuracy": report.position_consistent_accuracy,
            "accuracy_chosen_first": report.accuracy_chosen_first,
            "accuracy_chosen_second": report.accuracy_chosen_second,
            "accuracy_half_credit": report.accuracy_half_credit,
            "invalid_rate": report.invalid_rate,
            "miniarith_accuracy": mini.accuracy if mini else None,
        }
        if c.llmbar_eval:
            metrics["llmbar_accuracy"] = report.summary.get("section:Chat Hard")
        hist: dict[str, list[float]] = {}
        if i > 0:
            judged = read_jsonl(ctx.artifact("judge.judgements"))
            hist["correct_samples_per_key"] = [sum(s["verdict"] == k["label"] for s in k["samples"]) for k in judged]
            hist["judgement_length"] = [len(r["target"]) for r in read_jsonl(ctx.artifact("select.train"))
                                        if "target" in r]
            start = "the seed judge" if c.init_from == "seed" else f"M_{i - 1}"
            notes = [f"judge M_{i} trained by {c.train_method} from {start} on "
                     f"{ctx.recorded_metrics().get('usable_examples')} examples"]
        else:
            notes = ["seed judge M_0 (no training)"]
        if i > 0:  # metrics.json holds the iteration's whole row, as the report shows it
            done = ctx.recorded_metrics()
            metrics.update({k: done.get(k) for k in ("usable_examples", "kept_before_balance", "valid_sample_rate",
                                                      "correct_sample_rate", "train_loss")})
        write_json(ctx.output("metrics"), {**metrics, "eval_seconds": round(time.perf_counter() - t0, 2)})
        return {**metrics, "_histograms": hist, "_notes": notes}
