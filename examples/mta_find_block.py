"""MTA vs a Llama baseline on the "find the block of letters" toy task, scaled down for a CPU.

Paper: Multi-Token Attention (arXiv 2504.00927), toy task of §2 / Table 1; generator semantics from
facebookresearch/RAM ``projects/mta/toy_task/generate_data.py`` (spec/modeling.md §2.11): the context is a list of
blocks of ``N`` distinct random letters separated by ".", then "#" and ``L`` distinct letters of one block (the
target); the model must output the whole target block ("All" variant). Distractor blocks never contain all query
letters; blocks are unique. Loss and the teacher-forced error are on the target letters + EOS.

Both arms are identical Llama models (RMSNorm, RoPE, SwiGLU, tied embeddings, attention dropout as configured) except
that the MTA arm has an identity-initialised pre-softmax 2x9 key-query convolution in every layer (the paper's toy
configuration). Default sizes are far below the paper's (52 blocks, D=256, 100k steps at batch 64): they fit in a few
CPU minutes per arm, so expect the *direction* of the result at best.

    python examples/mta_find_block.py --seed 0   # both arms in parallel, 1000 steps each
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DOT, HASH, PAD, BOS, EOS = 26, 27, 28, 29, 30
VOCAB = 32  # char vocabulary of the official tokenizer, padded to a multiple of 8


def make_sample(rng: random.Random, n_blocks: int, block_len: int, query_len: int) -> tuple[list[int], list[int]]:
    """One (input_ids, loss_mask) row: [BOS] blocks "#" query target [EOS]; loss on target + EOS."""
    target = rng.sample(range(26), block_len)
    query = rng.sample(target, query_len)
    blocks = {tuple(target)}
    while len(blocks) < n_blocks:
        block = tuple(rng.sample(range(26), block_len))
        if not set(query) <= set(block):
            blocks.add(block)
    ordered = list(blocks)
    ordered.sort()  # sets have no reproducible order; sort, then shuffle with the seeded rng
    rng.shuffle(ordered)
    context: list[int] = []
    for i, block in enumerate(ordered):
        if i:
            context.append(DOT)
        context.extend(block)
    ids = [BOS, *context, HASH, *query, *target, EOS]
    mask = [0] * (len(ids) - block_len - 1) + [1] * (block_len + 1)
    return ids, mask


def decode(ids: list[int]) -> str:
    return "".join(LETTERS[t] if t < 26 else {DOT: ".", HASH: "#", PAD: "_", BOS: "^", EOS: "$"}[t] for t in ids)


def build_model(arm: str, args: argparse.Namespace):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from loopwright.modeling.mta import MTAConfig, MTAForCausalLM

    seq_len = 1 + args.n_blocks * (args.block_len + 1) - 1 + 1 + args.query_len + args.block_len + 1
    common = dict(vocab_size=VOCAB, hidden_size=args.hidden, intermediate_size=args.ffn or _swiglu(args.hidden),
                  num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                  max_position_embeddings=max(64, seq_len), rms_norm_eps=1e-5, tie_word_embeddings=True,
                  attention_dropout=args.dropout, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                  rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    torch.manual_seed(args.seed)  # same initial Llama weights in both arms
    if arm == "base":
        return LlamaForCausalLM(LlamaConfig(**common))
    return MTAForCausalLM(MTAConfig(**common, mta_pre_kernel=[args.c_q, args.c_k]))


def _swiglu(dim: int) -> int:
    """Official FFN width: 2/3 * 4D rounded up to a multiple of 256 (lingua) — or of 64 below D=256."""
    hidden = int(2 * 4 * dim / 3)
    multiple = 256 if dim >= 256 else 64
    return multiple * math.ceil(hidden / multiple)


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    """Train one arm ("base" or "mta") on fresh samples and score it on the fixed test set."""
    import torch

    from loopwright.trainers.toy_lm import evaluate_answers, train_causal_lm

    torch.set_num_threads(args.threads)
    test_rng = random.Random(10_000 + args.seed)
    test_rows = [make_sample(test_rng, args.n_blocks, args.block_len, args.query_len) for _ in range(args.test_size)]
    model = build_model(arm, args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"== {arm}: {n_params:,} parameters; example row {decode(test_rows[0][0])}", flush=True)

    def batches(rng: random.Random, batch_size: int) -> list:
        return [make_sample(rng, args.n_blocks, args.block_len, args.query_len) for _ in range(batch_size)]

    def evaluate(m, step):
        return evaluate_answers(m, test_rows, batch_size=128, pad_id=PAD)

    out = train_causal_lm(model, batches, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                          pad_id=PAD, betas=(0.9, 0.98), grad_clip=1.0, warmup_steps=args.warmup, eval_fn=evaluate,
                          eval_every=args.eval_every, log_every=args.eval_every,
                          log=lambda line: print(f"[{arm}] {line}", flush=True))
    metrics = out["metrics"]
    return {"err_seq": metrics["err_seq"], "err_tok": metrics["err_tok"], "final_loss": metrics["final_loss"],
            "wall_s": metrics["wall_s"], "params": n_params, "history": out["history"]}


def run(args: argparse.Namespace) -> dict:
    """All arms, one process per arm when ``--jobs`` > 1 (one core each on the 2-core machine)."""
    from loopwright.trainers.toy_lm import run_arms

    return run_arms(run_arm, args.arms.split(","), args, args.jobs)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--arms", default="base,mta", help="comma list of base, mta")
    p.add_argument("--n-blocks", type=int, default=8)
    p.add_argument("--block-len", type=int, default=5)
    p.add_argument("--query-len", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--ffn", type=int, default=0, help="SwiGLU width (0 = official rule)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--c-q", type=int, default=2)
    p.add_argument("--c-k", type=int, default=9)
    p.add_argument("--dropout", type=float, default=0.0, help="attention dropout (official toy: 0.1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--test-size", type=int, default=256)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    p.add_argument("--jobs", type=int, default=2, help="arms trained in parallel processes")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - start
    print(f"\n| arm | err_seq | err_tok | final loss | train s |  (seed {args.seed}, {args.steps} steps, "
          f"{args.n_blocks} blocks)")
    print("|---|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {100 * r['err_seq']:.1f}% | {100 * r['err_tok']:.1f}% | {r['final_loss']:.3f} | "
              f"{r['wall_s']:.0f} |")
    print(f"total wall {wall:.0f} s")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "wall_s": wall}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
