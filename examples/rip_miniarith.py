"""RIP on MiniArith prompts with planted corruptions (spec/loops.md §5.7; Yu et al., arXiv 2501.18578).

1. Pool: ``--n-prompts`` sandbox-task problems (a seed stream the seed model was not trained on), ``--corrupt-frac``
   of them corrupted (missing number, contradictory numbers, truncated question; ``sdk.tasks.miniarith``).
2. RIP: the policy (``--model``, default the sandbox seed model) samples ``--n-responses`` answers per prompt
   (T 0.8, top-p 0.95, the paper's sampling); a reward scores them (``--reward``): ``verifier`` (default), a
   rule-based Judge that checks each ``<<a op b=c>>`` step's arithmetic, whether its operands occur in the question
   or earlier steps, and the ``#### N`` line -- it reads only prompt and response, never the gold answer or the
   corruption label -- or ``rm``, the sandbox reward model (TRL RewardTrainer, ``RewardModelJudge``). The other
   reward re-scores the same responses (``rescore``, no generation) for comparison. Best-vs-worst pairs; the three
   percentile rules. Reported: keep rate, recall/precision of removing corrupted prompts, for the paper's 50/50/50
   setting and a small sweep -- re-thresholded without re-scoring.
3. Downstream: DPO of the seed model (``loopwright.trainers.dpo.dpo_train``, TRL DPOTrainer, with an NLL term on
   the chosen response) on the RIP-kept pairs vs a random subset of the same size vs all pairs, equal steps;
   greedy accuracy on clean held-out problems.
4. ``--self-rip``: Self-RIP with a *scripted* prompt writer, as spec §5.7 prescribes for the CPU demo (the
   1M-parameter sandbox model cannot write prompts): it picks a random few-shot example and writes a fresh
   MiniArith problem (new story and numbers) with the example's corruption, so a corrupted seed yields a corrupted
   prompt. Reported: corruption rate of prompts synthesized from RIP-kept seeds vs unfiltered seeds, and after
   the RIP post-filter (same absolute thresholds).

    python examples/rip_miniarith.py [--model DIR] [--backend transformers|vllm|openai] [--base-url URL]
        [--reward verifier|rm] [--n-prompts 400] [--n-responses 16] [--dpo-steps 20] [--n-eval 400] [--seed 0]
        [--self-rip] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from pathlib import Path
from typing import Any

from loopwright.judges.reward_model import RewardModelJudge
from loopwright.judges.rip import (
    RIPConfig,
    RIPThresholds,
    SelfRIPConfig,
    rescore,
    run_rip,
    self_rip,
)
from loopwright.sdk.artifacts import RunDir, write_json
from loopwright.sdk.executors import LocalExecutor
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.judge import Judge
from loopwright.sdk.models import check_model_arg
from loopwright.sdk.report import append_iteration
from loopwright.sdk.tasks.miniarith import generate_problems
from loopwright.sdk.types import JudgeProvenance, Verdict
from loopwright.trainers.reward import ensure_miniarith_reward_model
from loopwright.trainers.sandbox.seed import (
    SANDBOX_TASK,
    ensure_seed_model,
    evaluate_accuracy,
    held_out_problems,
    miniarith_prompt,
    train_problems,
)

CORRUPTIONS = ("missing_number", "contradictory_numbers", "truncated_question")
SWEEP = {
    "50/50/50 (paper best)": RIPThresholds(),
    "rejected reward >= p50 only": RIPThresholds(rejected_length_pct=None, reward_gap_pct=None),
    "reward gap <= p50 only": RIPThresholds(rejected_reward_pct=None, rejected_length_pct=None),
    "rejected length >= p50 only": RIPThresholds(rejected_reward_pct=None, reward_gap_pct=None),
    "25/25/75": RIPThresholds(rejected_reward_pct=25, rejected_length_pct=25, reward_gap_pct=75),
    "reward p50 + gap p50": RIPThresholds(rejected_length_pct=None),
}


def build_pool(n: int, corrupt_frac: float, seed: int) -> tuple[list[str], list[str | None]]:
    """Questions and their corruption (None = clean); problem i and its corrupted twin share numbers and story."""
    seen = {p.question for p in train_problems()}
    task = SANDBOX_TASK.model_copy(update={"seed": 1000 + seed})
    rng = random.Random(seed)
    questions: list[str] = []
    labels: list[str | None] = []
    i = 0
    while len(questions) < n:
        kind = rng.choice(CORRUPTIONS) if rng.random() < corrupt_frac else None
        cfg = task if kind is None else task.model_copy(update={"corruption": kind})
        q = generate_problems(1, cfg, start=i)[0].question
        i += 1
        if q in seen:
            continue
        questions.append(q)
        labels.append(kind)
    return questions, labels


_STEP = re.compile(r"(\d+)\s*([-+*/])\s*(\d+)\s*=\s*<<[^>]*>>\s*(-?\d+)")


class MiniArithVerifierJudge(Judge):
    """A rule-based reward for MiniArith answers that reads only the prompt and the response (no gold answer, no
    corruption label): per ``a op b=<<...>>c`` step, 1 point for correct arithmetic and up to 1 for operands that
    are grounded (appear in the question or as an earlier result), averaged over steps, + 1 when ``#### N`` repeats
    the last result. Range [0, 3]; a response with no step scores 0 (valid: it is a bad answer, not a bad judge)."""

    kinds = frozenset({"pointwise"})
    name = "miniarith_verifier"
    provenance = JudgeProvenance(model="rule:miniarith_verifier", parser_version="miniarith_verifier/1")

    def score(self, prompts, responses):
        out = []
        for p, r in zip(prompts, responses, strict=True):
            q = p if isinstance(p, str) else " ".join(m["content"] for m in p if m["role"] == "user")
            known = {int(x) for x in re.findall(r"\d+", q)}
            steps = _STEP.findall(r)
            value = 0.0
            if steps:
                ok = grounded = 0
                for a, op, b, c in steps:
                    a_, b_, c_ = int(a), int(b), int(c)
                    val = {"+": a_ + b_, "-": a_ - b_, "*": a_ * b_}.get(op, a_ // b_ if b_ and a_ % b_ == 0 else None)
                    ok += val == c_
                    grounded += (a_ in known) + (b_ in known)
                    known.add(c_)
                final = re.search(r"####\s*(-?\d+)", r)
                fmt = 1.0 if final and int(final.group(1)) == int(steps[-1][3]) else 0.0
                value = ok / len(steps) + grounded / (2 * len(steps)) + fmt
            out.append(Verdict(kind="pointwise", score=value, raw=f"{value:.3f}", valid=True, judge=self.provenance))
        return out


def make_generator(args: argparse.Namespace, model_dir: str) -> Any:
    if args.backend == "transformers":
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(model_dir, batch_size=64)
    if args.backend == "vllm":
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return VLLMGenerator(model_dir)
    from loopwright.sdk.generators.openai import OpenAIGenerator

    if not args.base_url:
        raise SystemExit("--backend openai needs --base-url (and --model naming the served model)")
    return OpenAIGenerator(args.base_url, model_dir)


def removal_quality(decisions: list[Any], labels: list[str | None]) -> dict[str, float]:
    dropped = [not d.keep for d in decisions]
    bad = [lab is not None for lab in labels]
    tp = sum(d and b for d, b in zip(dropped, bad, strict=True))
    return {
        "keep_rate": 1 - sum(dropped) / len(dropped),
        "recall_corrupted_removed": tp / max(1, sum(bad)),
        "precision_removed_is_corrupted": tp / max(1, sum(dropped)),
        "corrupted_share_of_kept": sum((not d) and b for d, b in zip(dropped, bad, strict=True))
        / max(1, len(dropped) - sum(dropped)),
    }


def corruption_kind(question: str) -> str | None:
    """Which planted corruption a MiniArith question shows (the scripted prompt writer's way to inherit it)."""
    if "Actually," in question:
        return "contradictory_numbers"
    if " some " in f" {question} ":
        return "missing_number"
    if not question.rstrip().endswith("?"):
        return "truncated_question"
    return None


def is_corrupted(question: str) -> bool:
    """Detects the three planted corruptions in MiniArith text (clean questions never match; checked on 3000)."""
    return corruption_kind(question) is not None


def _mutating_writer(seed: int) -> ScriptedGenerator:
    """Scripted Self-RIP prompt writer (spec §5.7): pick one few-shot example, write a fresh MiniArith problem of the
    same kind (new story, names and numbers) that inherits the example's corruption."""
    task = SANDBOX_TASK.model_copy(update={"seed": 5000 + seed})

    def respond(prompt: str, i: int, rng: random.Random) -> str:
        examples = re.findall(r"^Prompt \d+: (.*)$", prompt, flags=re.MULTILINE)
        if not examples:
            return ""
        kind = corruption_kind(rng.choice(examples))
        cfg = task if kind is None else task.model_copy(update={"corruption": kind})
        return generate_problems(1, cfg, start=rng.randrange(10**6))[0].question

    return ScriptedGenerator(respond, model_id=f"scripted-prompt-writer-{seed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="policy model folder (default: the sandbox seed model)")
    ap.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--reward", choices=["verifier", "rm"], default="verifier",
                    help="the RIP reward: the rule-based MiniArith verifier, or the sandbox reward model; the other "
                         "one re-scores the same responses for comparison")
    ap.add_argument("--reward-model", default=None, help="RewardTrainer folder (default: the sandbox reward model)")
    ap.add_argument("--n-prompts", type=int, default=400)
    ap.add_argument("--corrupt-frac", type=float, default=0.25)
    ap.add_argument("--n-responses", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--dpo-lr", type=float, default=3e-4)
    ap.add_argument("--dpo-nll", type=float, default=1.0, help="NLL weight on the chosen response (RPO; 0 = plain DPO)")
    ap.add_argument("--n-eval", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--self-rip", action="store_true")
    ap.add_argument("--out", default="runs/rip_miniarith")
    args = ap.parse_args()
    if args.backend != "openai":  # with openai, --model is the served name
        args.model = check_model_arg(ap, args.model)

    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    model_dir = args.model or str(ensure_seed_model(progress=False))
    rm_dir = args.reward_model or str(ensure_miniarith_reward_model())
    run = RunDir(Path(args.out) / f"seed{args.seed}", config={k: v for k, v in vars(args).items() if k != "out"},
                 seeds={"seed": args.seed})
    questions, labels = build_pool(args.n_prompts, args.corrupt_frac, args.seed)
    gen = make_generator(args, model_dir)
    rm_judge = RewardModelJudge(rm_dir, num_threads=1, batch_size=64)
    verifier = MiniArithVerifierJudge()
    judge, other = (verifier, rm_judge) if args.reward == "verifier" else (rm_judge, verifier)
    cfg = RIPConfig(n_responses=args.n_responses, max_tokens=args.max_tokens, seed=args.seed)
    res = run_rip([miniarith_prompt(q) for q in questions], LocalExecutor(gen, batch_size=64, progress=False), judge,
                  cfg, meta=[{"corruption": lab} for lab in labels])
    t_rip = time.perf_counter() - t_start
    res.write(run)
    append_iteration(run.path, res.iteration_row(0, notes=["RIP on the MiniArith pool"]))
    print(f"RIP: {len(questions)} prompts ({sum(lab is not None for lab in labels)} corrupted) x "
          f"{args.n_responses} responses in {t_rip:.1f} s; thresholds {res.thresholds}")
    sweep: dict[str, dict[str, Any]] = {}
    other_res = rescore(res, other, cfg)
    for reward_name, result in ((judge.name, res), (other.name, other_res)):
        print(f"reward {reward_name}:\n{'setting':30s} keep  recall  precision  corrupted-in-kept")
        for name, th in SWEEP.items():
            q = removal_quality(result.recompute(th).decisions, labels)
            sweep.setdefault(reward_name, {})[name] = q
            print(f"{name:30s} {q['keep_rate']:.2f}  {q['recall_corrupted_removed']:.2f}    "
                  f"{q['precision_removed_is_corrupted']:.2f}       {q['corrupted_share_of_kept']:.2f}")
    base_rate = sum(lab is not None for lab in labels) / len(labels)

    # ------------------------------------------------------------------ downstream DPO
    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.trainers.dpo import DPOSettings, dpo_train

    if hasattr(gen, "close"):
        gen.close()
    everything = res.recompute(RIPThresholds(rejected_reward_pct=None, rejected_length_pct=None, reward_gap_pct=None))
    all_pairs = everything.dpo_rows(provenance=True)
    rip_pairs = res.dpo_rows(provenance=True)
    rng = random.Random(args.seed)
    random_pairs = rng.sample(all_pairs, len(rip_pairs))
    eval_probs = held_out_problems(args.n_eval)
    settings = DPOSettings(max_steps=args.dpo_steps, learning_rate=args.dpo_lr, batch_size=8, max_length=256,
                           nll_alpha=args.dpo_nll or None, seed=args.seed)
    downstream: dict[str, dict[str, Any]] = {}
    base_acc = evaluate_accuracy(TransformersGenerator(model_dir, batch_size=100), eval_probs, max_tokens=96)
    downstream["seed model (no DPO)"] = {"pairs": 0, "accuracy": base_acc["accuracy"]}
    for name, pairs in (("RIP-kept", rip_pairs), ("random, same size", random_pairs), ("all pairs", all_pairs)):
        corrupted = sum(1 for p in pairs if is_corrupted(p["prompt"][0]["content"]))
        t0 = time.perf_counter()
        out = run.path_for(f"dpo/{name.split(',')[0].replace(' ', '_')}")
        result = dpo_train(model_dir, [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs], out,
                           settings)
        acc = evaluate_accuracy(TransformersGenerator(result.model_dir, batch_size=100), eval_probs, max_tokens=96)
        downstream[name] = {"pairs": len(pairs), "corrupted_pairs": corrupted, "accuracy": acc["accuracy"],
                            "train_s": round(time.perf_counter() - t0, 1)}
        print(f"DPO on {name:18s}: {len(pairs):4d} pairs ({corrupted} corrupted) -> held-out accuracy "
              f"{acc['accuracy']:.3f} (seed {base_acc['accuracy']:.3f})")

    # ------------------------------------------------------------------ Self-RIP (scripted prompt writer)
    self_rip_report: dict[str, Any] = {}
    if args.self_rip:
        writer = _mutating_writer(args.seed)
        synth = SelfRIPConfig(n_generate=max(40, args.n_prompts // 2), few_shot=8, seed=args.seed, max_tokens=128)
        gen2 = make_generator(args, model_dir)
        ex = LocalExecutor(gen2, batch_size=64, progress=False)
        from_rip = self_rip(res.kept_prompts(), ex, judge, cfg, synth, prompt_executor=writer,
                            reuse_thresholds=res.thresholds)
        from loopwright.judges.rip import synthesize_prompts

        unfiltered, _ = synthesize_prompts([miniarith_prompt(q) for q in questions], writer, synth)
        rate = lambda qs: sum(map(is_corrupted, qs)) / max(1, len(qs))  # noqa: E731
        post = [r["prompt"][0]["content"] for r in from_rip.rip.dpo_rows()]
        self_rip_report = {
            "corruption_rate_pool": base_rate,
            "synthesized_from_unfiltered_seeds": {"n": len(unfiltered), "corrupted_rate": rate(unfiltered)},
            "synthesized_from_rip_seeds": {"n": len(from_rip.synthetic), "corrupted_rate": rate(from_rip.synthetic)},
            "after_rip_post_filter": {"n": len(post), "corrupted_rate": rate(post)},
            "synthesis_stats": from_rip.stats()["synthesis_reasons"],
        }
        from_rip.rip.write(run, prefix="self_")
        append_iteration(run.path, from_rip.rip.iteration_row(1, notes=["Self-RIP post-filter (scripted prompt writer)"]))
        print(f"Self-RIP corruption rate: pool {base_rate:.2f}, from unfiltered seeds {rate(unfiltered):.2f}, from RIP seeds {rate(from_rip.synthetic):.2f}, after "
              f"post-filter {rate(post):.2f}")

    wall = time.perf_counter() - t_start
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in vars(args).items()
             if v is not None and v is not False]
    report = {"command": "python examples/rip_miniarith.py " + " ".join(flags),
              "seed": args.seed, "wall_s": round(wall, 1), "rip_s": round(t_rip, 1), "pool_corrupted_rate": base_rate,
              "thresholds": res.thresholds, "stats": res.stats(), "sweep": sweep, "downstream": downstream,
              "self_rip": self_rip_report}
    write_json(run.path_for("report.json"), report)
    print(json.dumps({"wall_s": report["wall_s"], "run_dir": str(run.path)}))


if __name__ == "__main__":
    main()
