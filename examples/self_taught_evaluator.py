"""Self-Taught Evaluator on the sandbox (spec/loops.md §4, §4.8; Wang et al., arXiv 2408.02666).

A judge is trained on its own judgements of construction-labelled pairs, with no human (or gold) preference
label: for a MiniArith question ``x`` the good response ``y_w`` is its solution and the worse one ``y_l`` is the
correct solution of a *modified* question ``x'`` (one number changed). Each iteration the current judge samples
judgements in both orders, the ones whose verdict matches the construction label are kept (one per key,
balanced A/B), and the judge is re-trained from the seed judge on them; its held-out accuracy on a fixed set
of MiniArith pairs is measured each iteration (order-averaged and position-consistent, §4.5/§9).

Sandbox (default): the seed judge is the sandbox seed model taught the compact verdict format on a small noisy,
A-biased judging set (:mod:`loopwright.judges.self_taught.sandbox`, §4.8), built once and cached.
Any model: ``--model PATH --backend transformers|vllm|openai`` uses that model as the seed judge (style
``eval_plan`` unless ``--judge-style`` says otherwise; ``openai`` serves each judge with a local vLLM
OpenAI-compatible server on 127.0.0.1). Results: ``RUN_DIR/iterations.jsonl`` and ``RUN_DIR/report/report.md``.

    python examples/self_taught_evaluator.py [--iterations 2] [--seed 0] [--run-dir DIR] [--resume]
        [--model PATH --backend transformers|vllm|openai] [--pairs 64] [--samples 4] [--eval-pairs 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="seed judge folder (default: the sandbox seed judge)")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "openai"])
    ap.add_argument("--judge-style", default=None, help="compact | eval_plan | pairv2 (default: compact on the "
                    "sandbox, eval_plan with --model)")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=None, help="default: runs/self_taught-<time>")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    ap.add_argument("--pairs", type=int, default=64, help="synthetic pairs per iteration (each judged in both orders)")
    ap.add_argument("--samples", type=int, default=4, help="judgements per pair and order (paper: 15)")
    ap.add_argument("--eval-pairs", type=int, default=64, help="held-out MiniArith pairs")
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--train-method", default="sft", choices=["sft", "dpo"])
    ap.add_argument("--llmbar", type=int, default=0, help="also evaluate on this many LLMBar pairs")
    args = ap.parse_args(argv)
    from loopwright.sdk.models import check_model_arg

    args.model = check_model_arg(ap, args.model)

    from loopwright.judges.self_taught import NoUsableJudgementsError, SelfTaughtConfig, SelfTaughtEvaluator
    from loopwright.judges.self_taught.loop import backend_factory
    from loopwright.trainers.sft import SFTSettings

    t0 = time.perf_counter()
    style = args.judge_style or ("eval_plan" if args.model else "compact")
    config = SelfTaughtConfig(
        iterations=args.iterations, judge_prompt_style=style, pairs_per_iteration=args.pairs,
        samples=args.samples, eval_pairs=args.eval_pairs, train_method=args.train_method, seed=args.seed,
        llmbar_eval=args.llmbar,
        sft=SFTSettings(max_steps=args.sft_steps, learning_rate=3e-3, batch_size=16, max_length=320),
        max_tokens=24 if style == "compact" else 512, eval_max_tokens=24 if style == "compact" else 512,
    )
    if args.model:
        seed_judge = Path(args.model)
    else:
        from loopwright.judges.self_taught.sandbox import SeedJudgeConfig, ensure_seed_judge

        print("building (or reusing) the sandbox seed judge ...", flush=True)
        seed_judge = ensure_seed_judge(SeedJudgeConfig(task=config.task))
    run_dir = args.run_dir or Path("runs") / f"self_taught-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"seed judge: {seed_judge}\nrun directory: {run_dir}", flush=True)
    loop = SelfTaughtEvaluator(seed_judge, config, make_generator=backend_factory(args.backend))
    try:
        records = loop.run(run_dir, resume=args.resume, progress=True)
    except NoUsableJudgementsError as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 1
    print("\niteration  judge_acc  pos_consistent  acc_first  acc_second  invalid  usable")
    def f(m: dict[str, Any], k: str) -> str:
        v = m.get(k)
        return f"{v:.3f}" if isinstance(v, float) else str(v if v is not None else "-")

    for r in records:
        m = r["metrics"]
        print(f"{r['iteration']:>9}  {f(m, 'judge_accuracy'):>9}  {f(m, 'position_consistent_accuracy'):>14}  "
              f"{f(m, 'accuracy_chosen_first'):>9}  {f(m, 'accuracy_chosen_second'):>10}  {f(m, 'invalid_rate'):>7}  "
              f"{f(m, 'usable_examples'):>6}")
    print(f"\nreport: {run_dir / 'report' / 'report.md'}\nwall time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
