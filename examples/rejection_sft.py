"""Rejection-sampling SFT (STaR / ReST-EM) on the MiniArith sandbox: the sanity loop of the training stack.

The seed model samples answers to MiniArith training prompts; a judge keeps the accepted ones; the model is
fine-tuned on them (TRL SFT) and evaluated greedily on held-out problems; repeat. ``--judge gold`` (default) is
the oracle signal: the gold answer checker (``loopwright.judges.oracle.GoldAnswerJudge``). ``--judge verifier``
is a rule-based judge that reads only the prompt and the response (no gold answer). Every stage is durable: kill
it and rerun with ``--resume``. The report (``RUN_DIR/report/report.md``) gives each accuracy with n and its 95%
Wilson interval; ``loopwright compare runs/rsft-seed0 runs/rsft-seed1 ...`` compares seeds.

    python examples/rejection_sft.py [--iterations 3] [--seed 0] [--prompts 256] [--samples 8] [--eval 300]
        [--judge gold|verifier] [--init-from seed|previous] [--backend transformers|vllm] [--model PATH]
        [--run-dir DIR] [--resume]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from loopwright.judges.oracle import GoldAnswerJudge
from loopwright.judges.rejection_sft import RejectionSFTConfig, RejectionSFTLoop
from loopwright.sdk.errors import ConfigError


def make_factory(backend: str) -> Any:
    if backend == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return lambda d: VLLMGenerator(d, seed=0)
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return lambda d: TransformersGenerator(d, batch_size=64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="seed model folder (default: a sandbox seed model, --seed-model)")
    ap.add_argument("--seed-model", default="strong", choices=["strong", "default"],
                    help="sandbox seed model when --model is not given: strong (STRONG_SANDBOX, 46.5%% held-out; "
                         "the oracle runs' start) or default (14.5%%)")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--judge", default="gold", choices=["gold", "gold-answer", "verifier"],
                    help="gold: right final answer and correct arithmetic in every step (default); gold-answer: "
                         "the final answer only; verifier: rule-based, no gold answer")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=256, help="training prompts sampled every iteration")
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--eval", type=int, default=300, help="held-out evaluation problems")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--init-from", default="seed", choices=["seed", "previous"])
    ap.add_argument("--run-dir", type=Path, default=None, help="default: runs/rsft-<judge>-seed<seed>")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    from loopwright.trainers.sandbox.seed import evaluate_accuracy, held_out_problems, miniarith_prompt

    if args.model is not None and not (Path(args.model) / "config.json").is_file():
        print(f"error: no model folder at {args.model} (expected a config.json there); pass a local HF model folder",
              file=sys.stderr)
        return 2
    if args.model is None:
        from loopwright.trainers.sandbox.seed import STRONG_SANDBOX, ensure_seed_model

        seed_model = str(ensure_seed_model(STRONG_SANDBOX if args.seed_model == "strong" else None))
    else:
        seed_model = args.model
    run_dir = args.run_dir or Path("runs") / f"rsft-{args.judge}-seed{args.seed}"
    # Held-out problems (never in the seed model's SFT set): the first --eval evaluate, the next --prompts train.
    problems = held_out_problems(args.eval + args.prompts)
    eval_set, train_set = problems[:args.eval], problems[args.eval:]
    if args.judge in ("gold", "gold-answer"):
        judge: Any = GoldAnswerJudge(train_set, check_steps=args.judge == "gold")
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from rip_miniarith import MiniArithVerifierJudge

        judge = MiniArithVerifierJudge()
    cfg = RejectionSFTConfig(iterations=args.iterations, samples=args.samples, temperature=args.temperature,
                             learning_rate=args.lr, epochs=args.epochs, init_from=args.init_from, seed=args.seed,
                             threshold=2.99 if args.judge == "verifier" else 1.0)

    def evaluate(gen: Any) -> tuple[int, int]:
        r = evaluate_accuracy(gen, eval_set, max_tokens=cfg.eval_max_tokens)
        return int(r["correct"]), int(r["n"])

    loop = RejectionSFTLoop(seed_model, [miniarith_prompt(p) for p in train_set], judge, evaluate, cfg,
                            make_generator=make_factory(args.backend))
    t0 = time.perf_counter()
    try:
        records = loop.run(run_dir, resume=args.resume)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in records:
        ci = r["intervals"]["accuracy"]
        print(f"iteration {r['iteration']}: accuracy {ci['estimate']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}] "
              f"n={ci['n']}  kept={r['metrics'].get('kept', '-')}")
    print(f"run directory: {run_dir}  ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
