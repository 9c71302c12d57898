"""Data-filter throughput benchmark (a script, not a test): RIP and REWIRE, LocalExecutor vs RayExecutor (2 actors).

Same inputs, same seeds, same components; the script checks that both executors give the same outputs, then
reports rows/s (RIP: prompts sampled N times + reward-scored + filtered; REWIRE: documents rewritten + parsed +
classified + selected). Two figures for Ray: end to end (Ray Data plan + actor start-up + model load inside each
actor, what a user waits for) and steady state (a second run on the same warm Ray; actors are rebuilt per run by
Ray Data's actor pool, so model loading stays in both). The local executor is given ``--local-threads`` torch
threads (default 1, the sandbox's habit: on a shared 2-core machine two OpenMP threads slow a step ~10x whenever
another process holds a core), each Ray actor one.

Honesty notes: on a 2-core machine Ray has little to win (2 actors = 2 cores, plus Ray's own processes, and every
run loads the model in each actor); its purpose is the same code on a cluster. Rows/s depend on load; run on an idle machine and keep
the machine line.

    python tests/bench/bench_filters_ray.py [--model DIR] [--n-prompts 48] [--n-docs 48] [--local-threads 1] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[2]

from loopwright.sdk.artifacts import machine_label as machine  # noqa: E402


def factory(model_dir: str, threads: int):
    from loopwright.sdk.generators.transformers import TransformersGenerator

    def build() -> TransformersGenerator:
        import torch

        torch.set_num_threads(threads)
        return TransformersGenerator(model_dir, batch_size=16)

    return build


def _build(model_dir: str, threads: int):
    return factory(model_dir, threads)()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="policy / rewriter (default: the sandbox seed model)")
    ap.add_argument("--n-prompts", type=int, default=48)
    ap.add_argument("--n-responses", type=int, default=8)
    ap.add_argument("--n-docs", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--local-threads", type=int, default=1)
    ap.add_argument("--record", action="store_true", help="append the rows to docs/results.md")
    args = ap.parse_args()

    import torch

    from loopwright.judges.reward_model import RewardModelJudge
    from loopwright.judges.rip import RIPConfig, run_rip
    from loopwright.sdk.executors import LocalExecutor, RayExecutor, init_ray, shutdown_ray
    from loopwright.sdk.tasks.miniarith import generate_problems
    from loopwright.trainers.reward import ensure_miniarith_reward_model
    from loopwright.trainers.rewire import HashedNgramClassifier, RewireConfig, run_rewire
    from loopwright.trainers.sandbox.seed import SANDBOX_TASK, ensure_seed_model, miniarith_prompt

    model = args.model or str(ensure_seed_model(progress=False))
    judge = RewardModelJudge(ensure_miniarith_reward_model(), num_threads=1, batch_size=64)
    probs = generate_problems(args.n_prompts, SANDBOX_TASK.model_copy(update={"seed": 4242}))
    prompts = [miniarith_prompt(p) for p in probs]
    docs = [f"{p.question} Click here to subscribe! {p.cot}" for p in probs[: args.n_docs]]
    clf = HashedNgramClassifier(seed=0).fit(["a clear explanation", "click here buy now"], [1, 0])
    rip_cfg = RIPConfig(n_responses=args.n_responses, max_tokens=args.max_tokens, seed=7)
    rw_cfg = RewireConfig(max_tokens=args.max_tokens, seed=7, truncate_prompt=True, keep_top_pct=10)

    def rip(ex):
        return run_rip(prompts, ex, judge, rip_cfg)

    def rewire(ex):
        return run_rewire(docs, ex, classifier=clf, config=rw_cfg)

    torch.set_num_threads(args.local_threads)
    results = {}
    for name, fn, n in (("RIP", rip, len(prompts)), ("REWIRE", rewire, len(docs))):
        t0 = time.perf_counter()
        gen = _build(model, args.local_threads)
        local_out = fn(LocalExecutor(gen, batch_size=16, progress=False))
        t_local = time.perf_counter() - t0
        gen.close()
        results[name] = {"n": n, "local_s": t_local, "local_out": local_out}

    t0 = time.perf_counter()
    init_ray()
    t_init = time.perf_counter() - t0
    for name, fn, _ in (("RIP", rip, 0), ("REWIRE", rewire, 0)):
        times = []
        for _round in range(2):
            t0 = time.perf_counter()
            out = fn(RayExecutor(factory(model, 1), batch_size=16, num_actors=2))
            times.append(time.perf_counter() - t0)
        loc = results[name]["local_out"]
        if name == "RIP":
            same = [r["responses"] for r in out.records] == [r["responses"] for r in loc.records] and \
                [d.keep for d in out.decisions] == [d.keep for d in loc.decisions]
        else:
            same = out.records == loc.records
        results[name].update(ray_first_s=times[0], ray_warm_s=times[1], same=same)
    shutdown_ray()

    where, today = machine(), dt.date.today().isoformat()
    lines = []
    print(f"machine: {where}; Ray init {t_init:.1f} s (not included below)")
    for name, r in results.items():
        n = r["n"]
        unit = f"prompts x {args.n_responses} responses" if name == "RIP" else "documents"
        fig = (f"local {n / r['local_s']:.2f} rows/s ({r['local_s']:.1f} s, {args.local_threads} threads) | Ray 2 "
               f"actors: first run {n / r['ray_first_s']:.2f} rows/s ({r['ray_first_s']:.1f} s), second run "
               f"{n / r['ray_warm_s']:.2f} rows/s ({r['ray_warm_s']:.1f} s); Ray/local "
               f"**{r['local_s'] / r['ray_warm_s']:.2f}x** (second run); outputs identical: {r['same']}")
        print(f"{name}: {n} {unit}: {fig}")
        lines.append(f"| {name} rows/s, LocalExecutor vs RayExecutor (2 actors x 1 thread), {n} {unit}, "
                     f"{args.max_tokens} new tokens, sandbox seed model + sandbox reward model | {fig} | "
                     f"`python tests/bench/bench_filters_ray.py --local-threads {args.local_threads}` | {where}, CPU, "
                     f"shared | {today} | sampling seed 7 |")
    if args.record:
        with open(ROOT / "docs" / "results.md", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print("appended to docs/results.md")


if __name__ == "__main__":
    main()
