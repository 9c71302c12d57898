"""Reverse training on a symbolic reversal task: forward-only vs reverse-trained accuracy on reverse questions.

Paper: Golovneva, Allen-Zhu, Weston, Sukhbaatar, "Reverse Training to Nurse the Reversal Curse" (arXiv 2403.13799),
symbolic reverse task; generator as specified in spec/modeling.md §4.3 (project design following the paper):

- entities are sequences of ``--entity-len`` name tokens ``n0..n99``; ``--pairs`` distinct pairs (a, b);
- forward statement ``<bos> a has a feature b <eos>``, reverse statement ``<bos> b is a feature of a <eos>``;
- half of the pairs (P_both) are seen in both directions, the other half (P_fwd) only forward;
- standard training: all forward statements + the reverse statements of P_both;
- reverse training (``--arms entity|word|token|rand``): every training string also appears reversed (entity-preserving
  with the generator's gold spans, word = token reversal here, random segments of 1..k words with ``[REV]``
  separators resampled at every draw); ``<bos>``/``<eos>`` stay at the ends;
- test: for P_fwd pairs, prompt ``<bos> b is a feature of`` and check that greedy decoding gives exactly ``a``
  (teacher-forced argmax on the entity tokens, which is equivalent for exact match). Also reported: reverse accuracy
  on P_both (seen) and forward recall on all pairs.

Expected (paper): standard ≈ 0 % on P_fwd reverse questions, entity-preserving reversal ≈ 100 %, word/token reversal
≈ 0 % for multi-token entities, random-segment reversal good when k >= entity length.

    python examples/reverse_training.py --seed 0   # standard vs entity-preserving, 1200 steps each
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

SPECIALS = ["<pad>", "<bos>", "<eos>", "[REV]", "has", "a", "feature", "is", "of"]
PAD, BOS, EOS, REV = 0, 1, 2, 3
HAS, A, FEATURE, IS, OF = 4, 5, 6, 7, 8


def name_id(i: int) -> int:
    return len(SPECIALS) + i


def make_pairs(rng: random.Random, n_pairs: int, entity_len: int, n_names: int) -> list[tuple[list[int], list[int]]]:
    seen: set[tuple[int, ...]] = set()
    entities: list[list[int]] = []
    while len(entities) < 2 * n_pairs:
        e = tuple(name_id(rng.randrange(n_names)) for _ in range(entity_len))
        if e not in seen:
            seen.add(e)
            entities.append(list(e))
    return [(entities[2 * i], entities[2 * i + 1]) for i in range(n_pairs)]


def forward_statement(a: list[int], b: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and the gold entity spans (positions in the ids, BOS at 0)."""
    ids = [BOS, *a, HAS, A, FEATURE, *b, EOS]
    return ids, [(1, 1 + len(a)), (4 + len(a), 4 + len(a) + len(b))]


def reverse_statement(a: list[int], b: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    ids = [BOS, *b, IS, A, FEATURE, OF, *a, EOS]
    return ids, [(1, 1 + len(b)), (5 + len(b), 5 + len(b) + len(a))]


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    """Train one arm (standard or a reversal mode) from scratch and return its final metrics."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from loopwright.modeling.reverse import reverse_token_row
    from loopwright.trainers.toy_lm import evaluate_answers, train_causal_lm

    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    pairs = make_pairs(rng, args.pairs, args.entity_len, args.names)
    both, fwd_only = pairs[: args.pairs // 2], pairs[args.pairs // 2:]
    train = [forward_statement(a, b) for a, b in pairs] + [reverse_statement(a, b) for a, b in both]

    def question_rows(subset, direction):
        rows = []
        for a, b in subset:
            if direction == "reverse":
                prompt, answer = [BOS, *b, IS, A, FEATURE, OF], a
            else:
                prompt, answer = [BOS, *a, HAS, A, FEATURE], b
            rows.append(([*prompt, *answer], [0] * len(prompt) + [1] * len(answer)))
        return rows

    tests = {"reverse_unseen": question_rows(fwd_only, "reverse"), "reverse_seen": question_rows(both, "reverse"),
             "forward": question_rows(pairs, "forward")}
    mode = None if arm == "standard" else arm

    def batches(batch_rng: random.Random, batch_size: int) -> list:
        rows = []
        for _ in range(batch_size):
            ids, spans = train[batch_rng.randrange(len(train))]
            if mode is not None and batch_rng.random() < 0.5:  # the reversed twin, same sampling weight
                ids, _ = reverse_token_row(ids, mode, entity_spans=spans, k=args.k, rng=batch_rng, sep_id=REV,
                                           bos_id=BOS, eos_id=EOS)
            rows.append((ids, [1] * len(ids)))
        return rows

    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(SPECIALS) + args.names, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD))
    print(f"== {arm}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(train)} training strings",
          flush=True)

    def evaluate(m, step):
        return {f"acc_{name}": 1.0 - evaluate_answers(m, rows, batch_size=256, pad_id=PAD)["err_seq"]
                for name, rows in tests.items()}

    out = train_causal_lm(model, batches, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                          pad_id=PAD, warmup_steps=args.warmup, lr_decay="cosine", weight_decay=args.weight_decay,
                          eval_fn=evaluate, eval_every=args.eval_every, log=lambda line: print(f"[{arm}] {line}",
                                                                                                flush=True))
    m = out["metrics"]
    return {k: m[k] for k in ("acc_reverse_unseen", "acc_reverse_seen", "acc_forward", "final_loss", "wall_s")}


def run(args: argparse.Namespace) -> dict:
    """All arms, one process per arm when ``--jobs`` > 1 (one core each on the 2-core machine)."""
    from loopwright.trainers.toy_lm import run_arms

    return run_arms(run_arm, args.arms.split(","), args, args.jobs)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--arms", default="standard,entity", help="comma list of standard, entity, word, token, rand")
    p.add_argument("--pairs", type=int, default=400)
    p.add_argument("--entity-len", type=int, default=2)
    p.add_argument("--names", type=int, default=100)
    p.add_argument("--k", type=int, default=3, help="maximum segment length for rand")
    p.add_argument("--hidden", type=int, default=96)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=300)
    p.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    p.add_argument("--jobs", type=int, default=2, help="arms trained in parallel processes")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    wall = time.perf_counter() - start
    print(f"\n| arm | reverse acc, P_fwd (unseen) | reverse acc, P_both (seen) | forward acc | train s |  "
          f"(seed {args.seed}, {args.steps} steps, entity length {args.entity_len})")
    print("|---|---|---|---|---|")
    for arm, r in results.items():
        print(f"| {arm} | {100 * r['acc_reverse_unseen']:.1f}% | {100 * r['acc_reverse_seen']:.1f}% | "
              f"{100 * r['acc_forward']:.1f}% | {r['wall_s']:.0f} |")
    print(f"total wall {wall:.0f} s")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "wall_s": wall}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
