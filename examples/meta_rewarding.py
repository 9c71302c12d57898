"""Meta-Rewarding on the MiniArith sandbox (Wu et al., arXiv 2407.19594; spec/loops.md §3, demo §3.8).

Each iteration: the model samples K answers per MiniArith prompt, a judge scores each answer N times, actor pairs
are built with the length control ρ, a meta-judge compares pairs of judgements in both orders (position-weighted
Elo picks judge pairs), and the model is DPO-trained (TRL) on both kinds of pairs; then it is evaluated. Every
stage is durable (LangGraph + SQLite in the run directory): kill the script and rerun it with ``--resume``.

What plays which role (say it plainly): on the sandbox (no ``--model``) the **actor is the real seed model**
(transformers generation, TRL DPO), while the **judge and meta-judge are verifiable-signal programs** (the
§3.8 set-up: the ~1M-parameter seed model cannot follow a rubric): the judge scores answers with an additive
MiniArith rubric checked against the gold answer, plus a length bias and noise; the meta-judge prefers the
judgement closer to the verified score, with 85% accuracy and a 20% first-position bias. The model is still
trained on the judge pairs and measured as a judge on a fixed labelled anchor set (``self_judge_*`` metrics).
``--judge self`` makes the model its own judge and meta-judge (the paper's set-up; on the sandbox every verdict
is invalid and the loop stops with a clear message); ``--judge garbage`` is a judge that emits only garbage.

    python examples/meta_rewarding.py [--iterations 3] [--seed 0] [--run-dir DIR] [--resume]
        [--model PATH --backend transformers|vllm|openai] [--judge verifier|self|garbage] [--rho 0.4]
        [--prompts 48] [--K 6] [--N 5] [--lr 3e-4] [--epochs 3] [--meta-iterations 1,2] [--threads 1]

With ``--model PATH`` the model plays all three roles with the paper's prompts (``--judge self``, the additive
rubric and meta-judge templates); ``--backend openai`` serves every iteration's model with a local vLLM
OpenAI-compatible server on 127.0.0.1 (or pass ``--base-url`` for an external server, whose model is then not
updated by training). Exit code 3: an iteration had no usable pairs (see the run's report).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from loopwright.judges.meta_rewarding import MetaRewardingLoop, NoUsablePairsError, sandbox_config
from loopwright.judges.meta_rewarding.checkpoints import CheckpointError
from loopwright.judges.meta_rewarding.sandbox import sandbox_loop
from loopwright.sdk.errors import PromptTooLongError
from loopwright.sdk.generator import Generator
from loopwright.sdk.models import check_model_arg


def make_factory(backend: str, base_url: str | None = None, served_model: str | None = None) -> Any:
    """``model_dir -> Generator`` for the chosen backend."""
    if backend == "transformers":
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return lambda d: TransformersGenerator(d, batch_size=64)
    if backend == "vllm":
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return lambda d: VLLMGenerator(d)
    if backend == "openai":
        from loopwright.sdk.generators.openai import OpenAIGenerator

        if base_url:
            print(f"note: generating with {served_model} at {base_url}; the trained checkpoints are NOT served there",
                  file=sys.stderr)
            return lambda d: OpenAIGenerator(base_url, model=served_model or "default")
        return _ServedGenerator
    raise SystemExit(f"--backend {backend!r}: use transformers, vllm or openai")


class _ServedGenerator(Generator):
    """An OpenAIGenerator over a vLLM OpenAI-compatible server on 127.0.0.1 serving ``model_dir`` (stopped on close)."""

    backend = "openai"

    def __init__(self, model_dir: Path) -> None:
        from loopwright.sdk.generators.openai import OpenAIGenerator
        from loopwright.sdk.server import VLLMServer

        self.server = VLLMServer(model_dir, served_model_name="meta-rewarding", max_num_seqs=16).start()
        self.inner = OpenAIGenerator(self.server.base_url, model="meta-rewarding")
        self.model_id = str(model_dir)

    def generate(self, prompts, params=None):  # noqa: ANN001, ANN201 - Generator's signature
        return self.inner.generate(prompts, params)

    def close(self) -> None:
        self.inner.close()
        self.server.stop()


def build(args: argparse.Namespace) -> MetaRewardingLoop:
    sandbox = args.model is None
    judge_kind = args.judge or ("verifier" if sandbox else "self")
    overrides: dict[str, Any] = {"iterations": args.iterations, "seed": args.seed, "prompts_per_iter": args.prompts,
                                 "actor": {"K": args.K}, "judge": {"N": args.N}}
    if args.rho is not None:
        overrides["length_control_rho"] = args.rho
    if args.meta_iterations is not None:
        overrides["meta_judge"] = {"enabled_iterations": [int(x) for x in args.meta_iterations.split(",") if x]}
    overrides["dpo"] = {k: v for k, v in (("learning_rate", args.lr), ("epochs", args.epochs)) if v is not None}
    if not sandbox and judge_kind != "verifier":  # a real model: the paper's prompts and budgets
        overrides["judge"].update({"template": None, "max_tokens": 256})
        overrides.setdefault("meta_judge", {}).update({"template": None, "max_tokens": 256})
        overrides["actor"]["max_tokens"] = 256
    return sandbox_loop(args.run_dir, config=sandbox_config(**overrides), model=args.model, judge=judge_kind,
                        generator_factory=make_factory(args.backend, args.base_url, args.served_model),
                        progress=not args.quiet)


def print_table(records: list[dict[str, Any]]) -> None:
    cols = ["eval_accuracy", "eval_reward", "eval_len_chars", "reward", "gen_len_chars", "actor_pairs",
            "judge_pairs", "meta_first_win_rate", "self_judge_valid_rate", "self_judge_pair_accuracy"]
    print("\n" + " | ".join(["iter", *cols]))
    for r in records:
        m = r["metrics"]
        cells = [f"{m[c]:.3f}" if isinstance(m.get(c), float) else str(m.get(c, "-")) for c in cols]
        print(" | ".join([str(r["iteration"]), *cells]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the sandbox seed model)")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm", "openai"])
    ap.add_argument("--base-url", default=None, help="openai backend: an external server (its model is not trained)")
    ap.add_argument("--served-model", default=None, help="openai backend with --base-url: the served model name")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", type=Path, default=None, help="default: runs/meta_rewarding-<time>")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last stage")
    ap.add_argument("--judge", choices=["verifier", "self", "garbage"], default=None,
                    help="who judges (default: verifier on the sandbox, the model itself with --model)")
    ap.add_argument("--rho", type=float, default=None, help="length control ρ for every iteration (default 0.4)")
    ap.add_argument("--prompts", type=int, default=48, help="prompts per iteration")
    ap.add_argument("--K", type=int, default=6, help="responses per prompt")
    ap.add_argument("--N", type=int, default=5, help="judgements per response")
    ap.add_argument("--meta-iterations", default=None,
                    help="iterations that use the meta-judge, comma-separated ('' = none; default 1,2 as in the paper)")
    ap.add_argument("--lr", type=float, default=None, help="DPO learning rate (default: sandbox_config's)")
    ap.add_argument("--epochs", type=float, default=None, help="DPO epochs over each iteration's pairs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1: on a shared 2-core machine 2 threads made generation 10x slower)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.model = check_model_arg(ap, args.model)
    import torch

    torch.set_num_threads(args.threads)
    if args.run_dir is None:
        if args.resume:
            ap.error("--resume needs --run-dir")
        args.run_dir = Path("runs") / f"meta_rewarding-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    try:
        loop = build(args)
        records = loop.run(resume=args.resume)
    except NoUsablePairsError as e:
        print(f"\nstopped: {e}\nreport: {args.run_dir / 'report' / 'report.md'}", file=sys.stderr)
        return 3
    except CheckpointError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    except PromptTooLongError as e:
        print(f"\nerror: {e}\nThe paper's judge prompts need ~800 tokens of context: with a small-context model "
              "(e.g. the sandbox model) pass --judge verifier, which uses the short sandbox templates.",
              file=sys.stderr)
        return 2
    print_table(records)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; run directory {args.run_dir}; "
          f"report {args.run_dir / 'report' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
