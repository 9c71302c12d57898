"""REWIRE on a synthetic low-quality corpus (spec/loops.md §6.5; Nguyen et al., arXiv 2506.04689).

Corpus: short "explanation" documents, each stating 4-6 arithmetic facts about one number. The pool is 20 % clean and
80 % degraded (shuffled sentences, boilerplate/keyword spam, truncation, facts replaced by filler). Held-out clean
documents (other numbers' facts from a separate stream) play the curated positives (the paper's OH-2.5/ELI5).

Pipeline (loopwright.trainers.rewire): raw scores = a quality classifier trained on positives vs random raw
documents (the DCLM-classifier analogue); every pool document is rewritten with the guided-rewrite prompt
through the executor; rewrites are parsed by their markers; a second classifier (positives vs random rewrites, as
in the paper) scores them; top 10 % of each are selected; recycled fraction and raw-vs-rewrite Spearman reported.

The rewriter. Default: a **scripted rewriter**, as spec §6.5 prescribes for the CPU demo (the ~1M-parameter
sandbox model cannot follow a rewrite instruction). It is a ``ScriptedGenerator`` that reads the draft in the real
rewrite prompt: when the draft still holds at least two facts it restores a clean document (title + every fact it
finds, title first, boilerplate and filler dropped), otherwise it writes fluent but fact-poor text; 5 % of its outputs deliberately
omit the end marker, to exercise the parser's rejection path. ``--model DIR --backend transformers|vllm|openai``
uses a real model instead (a sandbox-sized model produces no parseable rewrite: the run reports that).

Downstream (spec §6.5): a tiny Llama (word-level vocabulary) is trained from scratch for the same token budget on
(a) raw top 10 % repeated up to 4x, (b) raw top 20 %, (c) raw top 10 % + rewritten top 10 % (0.5/0.5);
reported: held-out clean-text perplexity and cloze accuracy on pool facts ("7 plus 5 equals" -> "12"),
mean +- std over ``--repeats`` LM seeds.

    python examples/rewire_demo.py [--n-docs 8000] [--seed 0] [--repeats 3] [--seq-len 32] [--batch-size 8]
        [--model DIR --backend transformers|vllm|openai --base-url URL --truncate-prompt] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

from loopwright.sdk.artifacts import RunDir, write_json
from loopwright.sdk.executors import LocalExecutor
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.models import check_model_arg
from loopwright.trainers.rewire import (
    IMPROVED_END,
    IMPROVED_START,
    THINKING_END,
    THINKING_START,
    RewireConfig,
    balanced_training_set,
    make_classifier,
    mix_by_tokens,
    run_rewire,
    top_percent,
)

OPS = {
    "+": ("{a} plus {b} equals {c}.", lambda a, b: a + b),
    "-": ("{a} minus {b} leaves {c}.", lambda a, b: a - b),
    "*": ("{a} times {b} makes {c}.", lambda a, b: a * b),
}
FACT_RE = re.compile(r"(\d+) (plus|minus|times) (\d+) (?:equals|leaves|makes) (\d+)")
WORD_OP = {"plus": "+", "minus": "-", "times": "*"}
BOILER = ["Click here to subscribe!", "Best deals cheap cheap buy now.", "Follow us for more free offers.",
          "Cookies help us deliver our services.", "Sign up today and win a prize!"]
FILLER = ["Many people find numbers interesting.", "This is a nice number that appears often.",
          "Some say it brings good luck.", "It is one of the numbers we use every day."]
FLUENT = ["Numbers can be combined in many ways, and practising arithmetic every day builds confidence.",
          "Adding, subtracting and multiplying are the basic operations that every learner meets first.",
          "A good explanation states each step clearly and checks the result before moving on."]


def clean_doc(n: int, rng: random.Random) -> tuple[str, list[tuple[int, str, int, int]]]:
    facts = []
    for _ in range(rng.randint(4, 6)):
        op = rng.choice("+-*")
        b = rng.randint(1, n - 1) if op == "-" and n > 1 else rng.randint(1, 12)
        op = op if not (op == "-" and n <= 1) else "+"
        facts.append((n, op, b, OPS[op][1](n, b)))
    sents = [f"Facts about the number {n}."] + [OPS[op][0].format(a=a, b=b, c=c) for a, op, b, c in facts]
    return " ".join(sents), facts


def degrade(doc: str, rng: random.Random) -> str:
    sents = re.split(r"(?<=\.)\s+", doc)
    kinds = rng.sample(["shuffle", "spam", "truncate", "drop"], rng.randint(1, 2))
    if "drop" in kinds:
        for i in rng.sample(range(1, len(sents)), k=min(len(sents) - 1, rng.randint(2, 4))):
            sents[i] = rng.choice(FILLER)
    if "shuffle" in kinds:
        rng.shuffle(sents)
    if "spam" in kinds:
        for _ in range(rng.randint(2, 4)):
            sents.insert(rng.randint(0, len(sents)), rng.choice(BOILER))
    text = " ".join(sents)
    if "truncate" in kinds:
        words = text.split()
        text = " ".join(words[: rng.randint(max(3, len(words) // 4), max(4, len(words) // 2))])
    return text


def build_corpus(n_docs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    pool, pool_facts, clean_flags = [], [], []
    for _ in range(n_docs):
        doc, facts = clean_doc(rng.randint(2, 40), rng)
        is_clean = rng.random() < 0.2
        pool.append(doc if is_clean else degrade(doc, rng))
        pool_facts.append(facts)
        clean_flags.append(is_clean)
    heldout_rng = random.Random(seed + 10_000)
    positives = [clean_doc(heldout_rng.randint(2, 40), heldout_rng)[0] for _ in range(max(200, n_docs // 5))]
    eval_docs = [clean_doc(heldout_rng.randint(2, 40), heldout_rng)[0] for _ in range(200)]
    return {"pool": pool, "facts": pool_facts, "clean": clean_flags, "positives": positives, "eval": eval_docs}


def scripted_rewriter(seed: int) -> ScriptedGenerator:
    """Spec §6.5's scripted rewriter, reading the draft out of the real REWIRE prompt."""

    def respond(prompt: str, i: int, rng: random.Random) -> str:
        draft = prompt.split("Original Draft:", 1)[-1]
        facts = [(int(a), WORD_OP[w], int(b), int(c)) for a, w, b, c in FACT_RE.findall(draft)]
        topic = re.search(r"Facts about the number (\d+)", draft)
        thinking = (f"{THINKING_START}The draft lists arithmetic facts but is noisy; keep every fact, state each "
                    f"clearly, drop the boilerplate.{THINKING_END}")
        if len(facts) >= 2:
            n = topic.group(1) if topic else str(facts[0][0])
            sents = [f"Facts about the number {n}."]
            sents += [OPS[op][0].format(a=a, b=b, c=c) for a, op, b, c in facts]
            body = " ".join(sents)
        else:
            body = " ".join(rng.sample(FLUENT, 2))
        end = "" if rng.random() < 0.05 else f"\n{IMPROVED_END}"
        return f"{thinking}\n{IMPROVED_START}\n{body}{end}"

    return ScriptedGenerator(respond, model_id=f"scripted-rewriter-{seed}")


# --------------------------------------------------------------------------------------------- tiny LM


def tokenize(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


class Vocab:
    def __init__(self, texts: list[str]):
        words = sorted({w for t in texts for w in tokenize(t)})
        self.itos = ["<pad>", "<unk>", "<eos>", *words]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, 1) for w in tokenize(text)] + [2]


def chunk_rows(docs: list[str], vocab: Vocab, seq_len: int) -> list[tuple[list[int], list[int]]]:
    stream = [t for d in docs for t in vocab.encode(d)]
    rows = []
    for s in range(0, len(stream) - 1, seq_len):
        ids = stream[s:s + seq_len]
        if len(ids) >= 2:
            rows.append((ids, [0] + [1] * (len(ids) - 1)))
    return rows


def make_lm(vocab_size: int, seed: int) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
                      bos_token_id=2, eos_token_id=2, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def perplexity(model: Any, rows: list[tuple[list[int], list[int]]]) -> float:
    import torch
    import torch.nn.functional as F

    from loopwright.trainers.toy_lm import collate

    model.eval()  # inference mode, safe
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(rows), 32):
            ids_BL, mask_BL = collate(rows[s:s + 32])
            logits_BLV = model(input_ids=ids_BL).logits
            nll_BL = F.cross_entropy(logits_BLV[:, :-1].transpose(1, 2), ids_BL[:, 1:], reduction="none")
            m = mask_BL[:, 1:].float()
            total += float((nll_BL * m).sum())
            count += int(m.sum())
    return math.exp(total / count)


def cloze_accuracy(model: Any, vocab: Vocab, facts: list[tuple[int, str, int, int]]) -> float:
    import torch

    model.eval()  # inference mode, safe
    hits = 0
    with torch.inference_mode():
        for a, op, b, c in facts:
            prefix = OPS[op][0].split("{c}")[0].format(a=a, b=b).strip()
            ids = [vocab.stoi.get(w, 1) for w in tokenize(prefix)]
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            hits += vocab.itos[int(logits.argmax())] == str(c)
    return hits / len(facts)


def make_generator(args: argparse.Namespace) -> Any:
    if args.backend == "transformers":
        from loopwright.sdk.generators.transformers import TransformersGenerator

        return TransformersGenerator(args.model, batch_size=16)
    if args.backend == "vllm":
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return VLLMGenerator(args.model)
    from loopwright.sdk.generators.openai import OpenAIGenerator

    if not args.base_url:
        raise SystemExit("--backend openai needs --base-url")
    return OpenAIGenerator(args.base_url, args.model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="real rewriter model (default: the spec's scripted rewriter)")
    ap.add_argument("--backend", choices=["transformers", "vllm", "openai"], default="transformers")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--truncate-prompt", action="store_true",
                    help="keep the rewrite prompt's last tokens when it exceeds a small model's context")
    ap.add_argument("--n-docs", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="LM seeds per arm")
    ap.add_argument("--budget-epochs", type=float, default=2.0,
                    help="token budget = this many passes over the raw top 10 %% (arm a repeats it; cap 4)")
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--classifier", default="auto", choices=["auto", "fasttext", "hashed"])
    ap.add_argument("--out", default="runs/rewire_demo")
    args = ap.parse_args()
    if args.backend != "openai":  # with openai, --model is the served name
        args.model = check_model_arg(ap, args.model)

    import torch

    from loopwright.trainers.toy_lm import train_causal_lm

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    run = RunDir(Path(args.out) / f"seed{args.seed}", config={k: v for k, v in vars(args).items() if k != "out"},
                 seeds={"seed": args.seed})
    corpus = build_corpus(args.n_docs, args.seed)
    pool = corpus["pool"]

    # raw quality scores: positives vs random raw documents (DCLM's fastText recipe, locally)
    rng = random.Random(args.seed)
    raw_clf = make_classifier(args.classifier, seed=args.seed)
    raw_negatives = rng.sample(pool, min(len(pool), len(corpus["positives"])))
    raw_clf.fit(*balanced_training_set(corpus["positives"], raw_negatives, args.seed))
    raw_scores = raw_clf.score(pool)

    gen = make_generator(args) if args.model else scripted_rewriter(args.seed)
    cfg = RewireConfig(max_tokens=args.max_tokens, seed=args.seed, classifier=args.classifier,
                       classifier_seed=args.seed, truncate_prompt=args.truncate_prompt)
    res = run_rewire(pool, LocalExecutor(gen, batch_size=64, progress=False), positives=corpus["positives"],
                     raw_scores=raw_scores, config=cfg)
    res.write(run)
    stats = res.stats()
    t_pipe = time.perf_counter() - t_start
    print(f"REWIRE pipeline on {len(pool)} docs in {t_pipe:.1f} s ({stats['classifier']}): parsed "
          f"{stats['n_parse_ok']}, selected {stats['n_rewrite_selected']} rewrites / {stats['n_raw_selected']} raw; "
          f"recycled fraction {stats['recycled_fraction']}, Spearman {stats['spearman_raw_vs_rewrite']}")
    print("reasons:", stats["per_reason"])

    raw10 = [pool[i] for i in top_percent(raw_scores, 10)]
    raw20 = [pool[i] for i in top_percent(raw_scores, 20)]
    rew10 = [r["rewrite_text"] for r in res.selected()]
    clean_share = {"raw10": sum(corpus["clean"][i] for i in top_percent(raw_scores, 10)) / len(raw10)}
    vocab = Vocab(pool + corpus["positives"] + corpus["eval"] + [r["rewrite_text"] or "" for r in res.records])
    count = lambda t: len(vocab.encode(t))  # noqa: E731
    budget = int(args.budget_epochs * sum(map(count, raw10)))
    arms = {"(a) raw top10% repeated": ({"raw": raw10}, {"raw": 1.0}),
            "(b) raw top20%": ({"raw": raw20}, {"raw": 1.0})}
    if rew10:
        arms["(c) raw top10% + rewritten top10%"] = ({"raw": raw10, "rewritten": rew10},
                                                     {"raw": 0.5, "rewritten": 0.5})
    else:
        print("no parseable rewrites were selected: arm (c) cannot be trained")
    eval_rows = chunk_rows(corpus["eval"], vocab, args.seq_len)
    fact_rng = random.Random(args.seed + 1)
    cloze_facts = [fact_rng.choice(fs) for fs in fact_rng.sample(corpus["facts"], 300)]
    results: dict[str, Any] = {}
    for name, (sources, ratios) in arms.items():
        docs, mix_stats = mix_by_tokens(sources, ratios, budget, count_tokens=count, seed=args.seed, strict=False)
        rows = chunk_rows([d["text"] for d in docs], vocab, args.seq_len)
        ppl, cloze = [], []
        for r in range(args.repeats):
            model = make_lm(len(vocab.itos), seed=args.seed * 100 + r)
            steps = max(1, len(rows) // args.batch_size)  # one pass over the mixed rows: equal tokens per arm
            train_causal_lm(model, rows, steps=steps, lr=3e-3, batch_size=args.batch_size, warmup_steps=min(20, steps // 5),
                            seed=args.seed * 100 + r, num_threads=1, log=None)
            ppl.append(perplexity(model, eval_rows))
            cloze.append(cloze_accuracy(model, vocab, cloze_facts))
        results[name] = {"tokens": mix_stats["tokens"], "rows": len(rows), "steps": max(1, len(rows) // args.batch_size),
                         "max_uses": {k: v["max_uses"] for k, v in mix_stats["sources"].items()},
                         "ppl_mean": statistics.mean(ppl), "ppl_std": statistics.pstdev(ppl),
                         "cloze_mean": statistics.mean(cloze), "cloze_std": statistics.pstdev(cloze)}
        print(f"{name:36s} tokens {mix_stats['tokens']:6d}  held-out ppl {statistics.mean(ppl):7.2f} +- "
              f"{statistics.pstdev(ppl):.2f}  cloze {statistics.mean(cloze):.3f} +- {statistics.pstdev(cloze):.3f}")
    wall = time.perf_counter() - t_start
    report = {"seed": args.seed, "wall_s": round(wall, 1), "pipeline_s": round(t_pipe, 1), "budget_tokens": budget,
              "rewriter": args.model or "scripted (spec §6.5)", "stats": stats, "clean_share": clean_share,
              "arms": results, "argv": vars(args)}
    write_json(run.path_for("report.json"), report)
    print(json.dumps({"wall_s": report["wall_s"], "run_dir": str(run.path)}))


if __name__ == "__main__":
    main()
