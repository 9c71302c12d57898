"""PathFinder vs greedy vs self-consistency at equal token budget, and the selectors alone on real GSM8K solutions.

Spec: ../shared/spec/loops.md §2.5-§2.6 and §8.2 item 2 (Golovneva et al., arXiv 2312.05180).

Part 1 -- multi-step MiniArith (2-3 steps, the sandbox task) with the sandbox seed model (or ``--model``):

- **greedy**: one greedy solution per problem;
- **self-consistency**: ``n`` sampled solutions (T=0.7), majority vote, with ``n`` chosen so its generated tokens
  match the budget;
- **PathFinder**: step-level beam search (b branches with varied sampling, beam B, constraints on, buddy voting),
  capped at the same budget of generated tokens per problem (``max_total_tokens``); plus ablations (constraints
  off; fixed decoding) and every selector re-run on PathFinder's own candidates.

The budget is ``--budget-samples`` times the greedy solution's mean length (generated tokens per problem). Tokens
are the backends' own ``Completion.usage`` counts.

Part 2 -- the selectors alone on ``../shared/data/gsm8k/example_model_solutions.jsonl`` (4 real GPT-3 solutions
per question with ``is_correct`` labels; candidate order shuffled per question with the seed so ties are broken at
random): oracle, random, majority vote, buddy (Jaccard / 3-gram), and the label-free arithmetic verifier
(fraction of ``<<expr=result>>`` annotations that hold). Accuracy = the label of the chosen solution.

    python examples/pathfinder_miniarith.py [--n-problems 40] [--seed 0] [--model PATH]
        [--backend transformers|vllm|openai] [--base-url URL --served-name NAME] [--oracle] [--out results.json]

``--oracle`` adds PathFinder with the gold step scorer (:class:`~loopwright.judges.oracle.GoldStepJudge`), the
oracle-signal run: the search with a perfect process reward, at the same budget.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopwright.agents.pathfinder import (
    BuddyConfig,
    ConstraintsConfig,
    FixedSampling,
    PathFinder,
    PathFinderConfig,
    arithmetic_verifier,
    candidates_from_texts,
    select,
)
from loopwright.sdk.models import check_model_arg
from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
from loopwright.sdk.types import SamplingParams
from loopwright.trainers.sandbox.seed import ensure_seed_model, held_out_problems, miniarith_prompt

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "example_model_solutions.jsonl"
SOLUTION_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def make_generator(args: argparse.Namespace) -> Any:
    """The generator for ``--backend`` (``openai`` needs ``--base-url`` and renders with the local tokenizer)."""
    model = args.model or str(ensure_seed_model(progress=False))
    if args.backend == "transformers":
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(model, batch_size=64), None
    if args.backend == "vllm":
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return VLLMGenerator(model, max_model_len=512), None
    if not args.base_url:
        raise SystemExit("--backend openai needs --base-url http://127.0.0.1:PORT/v1 (and --served-name)")
    from transformers import AutoTokenizer

    from loopwright.sdk.generators.openai import OpenAIGenerator

    tok = AutoTokenizer.from_pretrained(model)
    gen = OpenAIGenerator(args.base_url, args.served_name or model)
    return gen, (lambda p: tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True))


def multi_step_problems(n: int, min_steps: int = 2) -> list[Any]:
    """The first ``n`` held-out sandbox problems with at least ``min_steps`` steps (the sandbox task has 1-3)."""
    out: list[Any] = []
    k = 4 * n
    while len(out) < n:
        out = [p for p in held_out_problems(k) if len(p.program) >= min_steps][:n]
        k *= 2
    return out


def _row(name: str, correct: Sequence[bool], completion: Sequence[int], prompt: Sequence[int], calls: Sequence[int],
         seconds: float) -> dict[str, Any]:
    n = len(correct)
    return {"method": name, "accuracy": sum(correct) / n, "n": n,
            "completion_tokens_per_problem": statistics.mean(completion), "prompt_tokens_per_problem":
            statistics.mean(prompt), "generator_calls_per_problem": statistics.mean(calls), "seconds": seconds}


def run_greedy(gen: Any, problems: Sequence[Any], max_tokens: int = 160) -> tuple[dict[str, Any], list[str]]:
    t0 = time.perf_counter()
    outs = gen.generate([miniarith_prompt(p) for p in problems], SamplingParams(max_tokens=max_tokens))
    texts = [o[0].text for o in outs]
    correct = [is_correct(extract_model_answer(t), p.answer) for t, p in zip(texts, problems, strict=True)]
    row = _row("greedy", correct, [o[0].usage.completion_tokens for o in outs],
               [o[0].usage.prompt_tokens for o in outs], [1] * len(problems), time.perf_counter() - t0)
    return row, texts


def run_self_consistency(gen: Any, problems: Sequence[Any], n: int, seed: int,
                         max_tokens: int = 160) -> dict[str, Any]:
    """``n`` samples at T=0.7 per problem, majority vote (Counter order on ties)."""
    t0 = time.perf_counter()
    params = SamplingParams(n=n, temperature=0.7, max_tokens=max_tokens, seed=seed)
    outs = gen.generate([miniarith_prompt(p) for p in problems], params)
    cfg = PathFinderConfig(selector="vote", tie_break="first")
    correct, comp, prompt = [], [], []
    for p, row in zip(problems, outs, strict=True):
        sel = select(candidates_from_texts([c.text for c in row]), cfg)
        correct.append(is_correct(sel.answer, p.answer))
        comp.append(sum(c.usage.completion_tokens for c in row))
        prompt.append(sum(c.usage.prompt_tokens for c in row))
    return _row(f"self-consistency (n={n}, T=0.7, vote)", correct, comp, prompt, [1] * len(problems),
                time.perf_counter() - t0)


def run_pathfinder(gen: Any, problems: Sequence[Any], cfg: PathFinderConfig, name: str, render: Any = None,
                   judge: Any = None) -> tuple[dict[str, Any], list[Any]]:
    t0 = time.perf_counter()
    pf = PathFinder(gen, cfg, render=render, verifier=arithmetic_verifier, judge=judge)
    results = [pf.search(p) for p in problems]
    correct = [is_correct(r.answer, p.answer) for r, p in zip(results, problems, strict=True)]
    row = _row(name, correct, [r.budget.completion_tokens for r in results],
               [r.budget.prompt_tokens for r in results], [r.budget.generator_calls for r in results],
               time.perf_counter() - t0)
    row["no_answer"] = sum(r.answer is None for r in results)
    row["mean_candidates"] = statistics.mean(len(r.paths) for r in results)
    pruned: dict[str, int] = {}
    for r in results:
        for k, v in r.pruned.items():
            pruned[k] = pruned.get(k, 0) + v
    row["pruned_steps"] = pruned
    row["step_calls_per_problem"] = statistics.mean(r.step_calls for r in results)
    return row, results


def reselect(results: Sequence[Any], problems: Sequence[Any], base: PathFinderConfig) -> list[dict[str, Any]]:
    """Every selector over the same PathFinder candidates (selection needs no generator call)."""
    variants = {
        "oracle (any candidate correct)": None,
        "buddy (answer equality) = majority vote": base.model_copy(update={"selector": "buddy"}),
        "vote": base.model_copy(update={"selector": "vote"}),
        "buddy (Jaccard of the chain)": base.model_copy(update={"selector": "buddy",
                                                               "buddy": BuddyConfig(sim="jaccard")}),
        "max likelihood": base.model_copy(update={"selector": "max_likelihood"}),
        "verifier (arithmetic check)": base.model_copy(update={"selector": "verifier", "verifier_alpha": 0.5}),
        "random": base.model_copy(update={"selector": "random"}),
    }
    rows = []
    for name, cfg in variants.items():
        ok = []
        for r, p in zip(results, problems, strict=True):
            if cfg is None:
                ok.append(any(is_correct(c.answer, p.answer) for c in r.paths))
            else:
                sel = select(r.paths, cfg, question=r.question, verifier=arithmetic_verifier)
                ok.append(is_correct(sel.answer, p.answer))
        rows.append({"selector": name, "accuracy": sum(ok) / len(ok), "n": len(ok)})
    return rows


def gsm8k_selectors(path: Path, seed: int, limit: int | None = None) -> list[dict[str, Any]]:
    """Selector accuracy on the 4 stored GPT-3 solutions per GSM8K question (labels from the file)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if limit:
        rows = rows[:limit]
    rng = random.Random(seed)
    variants: dict[str, PathFinderConfig | None] = {
        "oracle (any solution correct)": None,
        "random (expected)": None,
        "majority vote": PathFinderConfig(selector="vote", tie_break="first"),
        "buddy (answer equality)": PathFinderConfig(selector="buddy", tie_break="first"),
        "buddy (Jaccard of the chain)": PathFinderConfig(selector="buddy", buddy=BuddyConfig(sim="jaccard"),
                                                         tie_break="first"),
        "buddy (word 3-grams)": PathFinderConfig(selector="buddy", buddy=BuddyConfig(sim="ngram"),
                                                 tie_break="first"),
        "verifier (arithmetic check)": PathFinderConfig(selector="verifier", tie_break="first"),
    }
    hits = {k: 0.0 for k in variants}
    no_answer = {k: 0 for k in variants}
    for d in rows:
        keys = list(SOLUTION_KEYS)
        rng.shuffle(keys)
        texts = [d[k]["solution"] for k in keys]
        labels = [bool(d[k]["is_correct"]) for k in keys]
        cands = candidates_from_texts(texts)
        for name, cfg in variants.items():
            if name.startswith("oracle"):
                hits[name] += any(labels)
            elif name.startswith("random"):
                hits[name] += sum(labels) / len(labels)
            else:
                sel = select(cands, cfg, question=d["question"], verifier=arithmetic_verifier)
                if sel.index is None:
                    no_answer[name] += 1
                else:
                    hits[name] += labels[sel.index]
    n = len(rows)
    out = [{"selector": k, "accuracy": hits[k] / n, "n": n, "no_answer": no_answer[k]} for k in variants]
    for k in SOLUTION_KEYS:
        out.append({"selector": f"always {k}", "accuracy": sum(d[k]["is_correct"] for d in rows) / n, "n": n,
                    "no_answer": 0})
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the sandbox seed model)")
    ap.add_argument("--backend", choices=("transformers", "vllm", "openai"), default="transformers")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--served-name", default=None)
    ap.add_argument("--n-problems", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-steps", type=int, default=2, help="only problems with at least this many steps (1-3)")
    ap.add_argument("--budget-samples", type=float, default=16.0,
                    help="token budget per problem = this x the greedy solution's mean generated tokens")
    ap.add_argument("--branching", type=int, default=4)
    ap.add_argument("--buffer", type=int, default=4)
    ap.add_argument("--max-step-tokens", type=int, default=24)
    ap.add_argument("--retries", type=int, default=2,
                    help="expansion_retries: re-expand a beam whose every child was pruned (exploration)")
    ap.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--oracle", action=argparse.BooleanOptionalAction, default=False,
                    help="also run PathFinder with the gold step scorer (GoldStepJudge: a step scores 1 when it "
                         "stays on the gold solution's path) -- the oracle-signal run of issue 13")
    ap.add_argument("--gsm8k-limit", type=int, default=None, help="questions for part 2 (default: all 1319)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--out", default=None, help="write the tables as JSON here")
    args = ap.parse_args(argv)
    args.model = check_model_arg(ap, args.model)

    t_start = time.perf_counter()
    if args.backend != "openai":
        import torch

        torch.set_num_threads(args.threads)
    gen, render = make_generator(args)
    problems = multi_step_problems(args.n_problems, args.min_steps)

    greedy, _ = run_greedy(gen, problems)
    budget = int(round(args.budget_samples * greedy["completion_tokens_per_problem"]))
    sc_n = max(1, round(budget / max(greedy["completion_tokens_per_problem"], 1.0)))
    sc = run_self_consistency(gen, problems, sc_n, args.seed)
    base = PathFinderConfig(branching_factor=args.branching, buffer_size=args.buffer, max_steps=6,
                            max_step_tokens=args.max_step_tokens, max_total_tokens=max(budget, args.max_step_tokens),
                            expansion_retries=args.retries, seed=args.seed)
    pf_row, pf_results = run_pathfinder(gen, problems, base,
                                        f"PathFinder (b={args.branching}, B={args.buffer}, constraints, buddy)", render)
    table = [greedy, sc, pf_row]
    if args.oracle:
        from loopwright.judges.oracle import GoldStepJudge

        oracle = GoldStepJudge(problems)
        ranked = base.model_copy(update={"score": "judge", "selector": "max_likelihood"})
        table.append(run_pathfinder(gen, problems, ranked, "PathFinder, gold step scorer ranks and selects (oracle)",
                                    render, judge=oracle)[0])
        table.append(run_pathfinder(gen, problems, ranked.model_copy(update={"min_step_score": 0.5}),
                                    "PathFinder, gold step scorer prunes off-path steps (oracle)", render,
                                    judge=oracle)[0])
    if args.ablations:
        table.append(run_pathfinder(gen, problems, base.model_copy(update={"constraints": ConstraintsConfig.none()}),
                                    "PathFinder, constraints off", render)[0])
        table.append(run_pathfinder(gen, problems, base.model_copy(
            update={"decoding": "fixed", "fixed_sampling": FixedSampling(temperature=0.7)}),
            "PathFinder, fixed decoding (T=0.7)", render)[0])
    selectors = reselect(pf_results, problems, base)
    gsm = gsm8k_selectors(SOLUTIONS, args.seed, args.gsm8k_limit) if SOLUTIONS.is_file() else []
    out = {"args": vars(args), "budget_tokens_per_problem": budget, "miniarith": table,
           "pathfinder_selectors": selectors, "gsm8k_selectors": gsm,
           "wall_seconds": round(time.perf_counter() - t_start, 1)}
    gen.close()
    _print(out)
    if args.out:
        from loopwright.sdk.artifacts import write_json

        write_json(Path(args.out), out)
    return out


def _print(out: dict[str, Any]) -> None:
    print(f"\nMiniArith (>= {out['args']['min_steps']} steps), budget {out['budget_tokens_per_problem']} "
          "generated tokens per problem")
    print("| method | accuracy | generated tokens / problem | prompt tokens / problem | calls / problem | s |")
    print("|---|---|---|---|---|---|")
    for r in out["miniarith"]:
        print(f"| {r['method']} | {r['accuracy']:.3f} | {r['completion_tokens_per_problem']:.1f} | "
              f"{r['prompt_tokens_per_problem']:.1f} | {r['generator_calls_per_problem']:.1f} | {r['seconds']:.1f} |")
    for r in out["miniarith"]:
        if "pruned_steps" in r:
            print(f"{r['method']}: pruned {r['pruned_steps']}, no answer {r['no_answer']}/{r['n']}, "
                  f"candidates/problem {r['mean_candidates']:.2f}")
    print("\nSelectors on PathFinder's candidates")
    print("| selector | accuracy |\n|---|---|")
    for r in out["pathfinder_selectors"]:
        print(f"| {r['selector']} | {r['accuracy']:.3f} |")
    if out["gsm8k_selectors"]:
        print(f"\nSelectors on GSM8K example_model_solutions (n={out['gsm8k_selectors'][0]['n']}, 4 solutions each)")
        print("| selector | accuracy | no answer |\n|---|---|---|")
        for r in out["gsm8k_selectors"]:
            print(f"| {r['selector']} | {r['accuracy']:.3f} | {r['no_answer']} |")
    print(f"\nwall time {out['wall_seconds']} s")


if __name__ == "__main__":
    main()
