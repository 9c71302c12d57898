"""Self-Rewarding, STaR / ReST-EM and online DPO against a reward model, composed from public stages, on the sandbox.

Each loop is a function in ``loopwright.judges.loops`` that returns a ``Loop`` of ~5 stages; this script feeds it
MiniArith prompts and the held-out evaluation, runs it, and prints each iteration's accuracy with its n and 95%
interval. ``--judge`` picks STaR's scorer: ``gold`` (the oracle signal: right answer and every step) or
``gold-answer``. Self-Rewarding judges with the model itself (the 1M-parameter sandbox model cannot follow the
5-point rubric, so expect invalid verdicts and no pairs: pass ``--model`` with a real instruct model). Kill it
and run ``loopwright resume RUN_DIR``.

    python examples/composed_loops.py --loop star|self_rewarding|online_dpo [--iterations 2] [--prompts 64]
        [--samples 4] [--eval 64] [--seed 0] [--model PATH] [--backend transformers|vllm] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def make_factory(backend: str) -> Any:
    if backend == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return lambda d: VLLMGenerator(d, seed=0)
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return lambda d: TransformersGenerator(d, batch_size=64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", required=True, choices=["star", "self_rewarding", "online_dpo"])
    ap.add_argument("--model", default=None, help="seed model folder (default: the sandbox seed model)")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--judge", default="gold", choices=["gold", "gold-answer"], help="STaR's scorer")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=None, help="default: runs/<loop>-seed<seed>")
    args = ap.parse_args(argv)

    from loopwright.judges.loops import online_dpo_loop, self_rewarding_loop, star_loop
    from loopwright.sdk.errors import LoopwrightError
    from loopwright.trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

    if args.model is not None and not (Path(args.model) / "config.json").is_file():
        print(f"error: no model folder at {args.model} (expected a config.json there); pass a local HF model folder",
              file=sys.stderr)
        return 2
    if args.model is None:
        from loopwright.trainers.sandbox.seed import ensure_seed_model

        seed_model = str(ensure_seed_model())
    else:
        seed_model = args.model
    problems = held_out_problems(args.eval + args.prompts)
    eval_set, train_set = problems[:args.eval], problems[args.eval:]
    prompts = [miniarith_prompt(p) for p in train_set]
    common = dict(iterations=args.iterations, n=args.samples, seed=args.seed, make_generator=make_factory(args.backend),
                  evaluate=lambda gen: evaluate_accuracy(gen, eval_set, max_tokens=128))
    if args.loop == "star":
        from loopwright.judges.oracle import GoldAnswerJudge

        loop = star_loop(seed_model, prompts, GoldAnswerJudge(train_set, check_steps=args.judge == "gold"), **common)
    elif args.loop == "self_rewarding":
        sandbox: dict[str, Any] = {}
        if args.model is None:  # the sandbox model has 512 positions: Meta-Rewarding's short sandbox rubric
            from loopwright.judges.meta_rewarding.sandbox import SANDBOX_JUDGE_TEMPLATE

            sandbox = dict(template=SANDBOX_JUDGE_TEMPLATE, max_tokens=128, judge_max_tokens=48)
        loop = self_rewarding_loop(seed_model, prompts, **sandbox, **common)
    else:
        from loopwright.judges import RewardModelJudge
        from loopwright.judges.rip import RIPFilter
        from loopwright.trainers.reward import ensure_miniarith_reward_model

        loop = online_dpo_loop(seed_model, prompts, RewardModelJudge(ensure_miniarith_reward_model()),
                               prompt_filter=RIPFilter(), **common)
    run_dir = args.run_dir or Path("runs") / f"{args.loop}-seed{args.seed}"
    try:
        records = loop.run(run_dir, resume=(run_dir / "checkpoints.sqlite").is_file())
    except LoopwrightError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in records:
        ci = r["intervals"]["evaluate.accuracy"]
        print(f"iteration {r['iteration']}: accuracy {ci['estimate']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}] n={ci['n']}")
    print(f"run directory: {run_dir}  (report: {run_dir}/report/report.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
