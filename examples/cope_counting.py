"""CPU reproduction of CoPE's counting task (arXiv:2405.18719, Table 3): CoPE vs absolute PE vs RoPE.

Task (spec/modeling.md §3.4, the official generator's semantics, re-implemented here): a program of statements over
``nvars`` variables -- ``"a = 0 ;"`` (SET, weight 1), ``"pass;"`` (DUMMY, weight 50), ``"a ++;"`` (INCREMENT of a
variable already set, weight 7, never above 10) -- then ``"print a"``; the target is a's value. Tokens are the
whitespace-split words (``pass;``, ``++;``, ``=``, ``;``, ``0``..``10``, names, ``print``); ids 0 <pad>, 1 <sta>.
Loss and error only on the answer token (teacher-forced; "answer error" = fraction of wrong answers).

Scale (spec §3.6, made smaller to fit a shared 2-core CPU): programs of 3..``--max-steps`` statements, Llama-layout
models (pre-norm RMSNorm, SwiGLU, no dropout; the paper's models are post-norm with dropout 0.1), 2 layers, D=64,
4 heads (d=16). Arms:
  - ``cope``: ``CoPEForCausalLM`` (CoPE only, official scaling, npos ``--npos``);
  - ``abs``: Llama without RoPE plus a learned absolute position table (randn * D^-0.5, as the official ``abs``);
  - ``rope``: plain ``LlamaForCausalLM`` (RoPE). (The paper's third arm is relative PE; the issue asks for RoPE.)
Training: ``loopwright.trainers.toy_lm.train_causal_lm`` (AdamW, constant lr, clip 1.0), identical data order per seed.

Usage::

    python examples/cope_counting.py                       # the default run recorded in docs/cope.md (~80 s CPU)
    python examples/cope_counting.py --steps 40 --n-train 512 --n-test 128   # smoke run (seconds)

Prints one line per arm and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

MAX_VAL = 10
OP_WEIGHTS = {"set": 1, "dummy": 50, "increment": 7}
VAR_NAMES = "abcdefghijklmnopqrstuvwxyz"


class _Fail(Exception):
    """A sampled op that cannot apply (increment with nothing set, or past MAX_VAL): resample it."""


def _op(rng: random.Random, op: str, names: str, values: dict[str, int]) -> str:
    if op == "set":
        var = rng.choice(names)
        values[var] = 0
        return f"{var} = 0 ;"
    if op == "dummy":
        return "pass;"
    if not values:
        raise _Fail
    var = rng.choice(list(values))
    if values[var] + 1 > MAX_VAL:
        raise _Fail
    values[var] += 1
    return f"{var} ++;"


def counting_sample(rng: random.Random, nvars: int, max_steps: int) -> dict[str, str]:
    """One program + question + answer (spec §3.4): statement ops resampled on failure, whole sample if nothing
    is set when the question is asked."""
    names = VAR_NAMES[:nvars]
    for _ in range(1000):
        values: dict[str, int] = {}
        statements = []
        for _ in range(rng.randint(3, max_steps)):
            for _ in range(100):
                try:
                    statements.append(_op(rng, rng.choices(list(OP_WEIGHTS), list(OP_WEIGHTS.values()))[0],
                                          names, values))
                    break
                except _Fail:
                    continue
            else:
                raise RuntimeError("failed to generate a statement 100 times")
        if not values:
            continue
        var = rng.choice(list(values))
        return {"context": " ".join(statements), "question": f"print {var}", "answer": str(values[var])}
    raise RuntimeError("failed to generate a sample 1000 times")


def build_vocab(nvars: int) -> dict[str, int]:
    words = ["<pad>", "<sta>", "pass;", "++;", "=", ";", "print", *VAR_NAMES[:nvars], *map(str, range(MAX_VAL + 1))]
    return {w: i for i, w in enumerate(dict.fromkeys(words))}


def encode(sample: dict[str, str], vocab: dict[str, int]) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) with the loss on the answer token only."""
    words = f"{sample['context']} {sample['question']} {sample['answer']}".lower().split()
    ids = [vocab[w] for w in words]
    return ids, [0] * (len(ids) - 1) + [1]


def build_model(arm: str, vocab_size: int, max_len: int, npos: int, seed: int):
    import torch
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    from loopwright.modeling.cope import CoPEConfig, CoPEForCausalLM

    shape = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_len, pad_token_id=0,
                 bos_token_id=1, eos_token_id=1, tie_word_embeddings=True)
    torch.manual_seed(seed)
    if arm == "cope":
        return CoPEForCausalLM(CoPEConfig(cope_npos_max=npos, **shape))
    model = LlamaForCausalLM(LlamaConfig(**shape))
    if arm == "rope":
        return model
    if arm != "abs":
        raise ValueError(f"arm={arm!r} is not one of cope, abs, rope")

    class NoRotation(nn.Module):  # cos = 1, sin = 0: RoPE becomes the identity
        def forward(self, x, position_ids):
            shape_ = (*position_ids.shape, model.config.head_dim)
            return torch.ones(shape_, dtype=x.dtype, device=x.device), torch.zeros(shape_, dtype=x.dtype,
                                                                                    device=x.device)

    model.model.rotary_emb = NoRotation()
    model.abs_pos_LD = nn.Parameter(torch.randn(max_len, 64) * 64 ** -0.5)
    model.model.embed_tokens.register_forward_hook(lambda _m, _i, out: out + model.abs_pos_LD[: out.shape[1]])
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nvars", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=64, help="max statements per program (paper 512)")
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per arm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--npos", type=int, default=64, help="CoPE cope_npos_max")
    parser.add_argument("--arms", default="cope,abs,rope")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    import torch

    from loopwright.trainers.toy_lm import evaluate_answers, train_causal_lm

    start = time.perf_counter()
    rng = random.Random(args.seed)
    vocab = build_vocab(args.nvars)
    train = [encode(counting_sample(rng, args.nvars, args.max_steps), vocab) for _ in range(args.n_train)]
    test = [encode(counting_sample(rng, args.nvars, args.max_steps), vocab) for _ in range(args.n_test)]
    max_len = max(len(ids) for ids, _ in train + test)
    lengths = [len(ids) for ids, _ in train]
    print(f"data: {len(train)} train / {len(test)} test, mean length {sum(lengths) / len(lengths):.1f} tokens, "
          f"max {max_len}, vocab {len(vocab)}", flush=True)

    torch.set_num_threads(args.threads)
    results = {}
    for arm in args.arms.split(","):
        model = build_model(arm, len(vocab), max_len, args.npos, args.seed)
        run = train_causal_lm(model, train, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                              log_every=max(1, args.steps // 4), log=lambda line, a=arm: print(f"[{a}] {line}",
                                                                                                  flush=True))
        train_eval = evaluate_answers(model, train[: args.n_test])
        test_eval = evaluate_answers(model, test)
        results[arm] = {"test_error": test_eval["err_seq"], "train_error": train_eval["err_seq"],
                        "final_loss": run["metrics"]["mean_loss_last_10pct"], "wall_s": run["metrics"]["wall_s"],
                        "s_per_step": run["metrics"]["s_per_step"],
                        "params": sum(p.numel() for p in model.parameters())}
        print(f"{arm}: test answer error {100 * test_eval['err_seq']:.1f}% (train {100 * train_eval['err_seq']:.1f}%),"
              f" loss {results[arm]['final_loss']:.3f}, {run['metrics']['wall_s']:.0f} s", flush=True)
    summary = {"task": "cope_counting", "seed": args.seed, "config": vars(args), "results": results,
               "wall_s": time.perf_counter() - start, "torch_threads": args.threads}
    line = json.dumps(summary)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(line + "\n")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
