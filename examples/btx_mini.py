"""Mini Branch-Train-MiX on two synthetic domains, on a CPU (spec/modeling.md §5.5, scaled down).

Protocol (one seed, fp32, all models Llama-layout, char-level vocabulary of 38 symbols):
1. seed: a tiny dense Llama trained on the uniform mix of both domains;
2. branch + train: two copies of the seed, each trained on one domain (arithmetic "37+85=122;", or
   bracket "code" like "f(a[b]{c});" whose closing brackets are determined by the stack);
3. MiX: ``merge_btx([expert_arith, expert_code, seed])`` (the seed kept as a generalist expert, as in the
   paper), top-2 routing, routers zeros+noise; MoE-finetune on the mix with the load-balancing loss
   (alpha 0.01) via ``modeling.btx.moe_finetune``;
4. baselines: the dense seed continued on the mix for the same number of steps as both experts plus the
   MoE finetune (matched steps, not matched FLOPs: a top-2 MoE step costs more), each expert alone, the
   parameter average of the three dense models (BTM merge by averaging), the BTM ensemble of the three (prefix
   posterior weights over all of them), and the merged model before its finetune; BTX finetuned without the
   load-balancing loss (alpha 0); sparse upcycling (three copies of the seed FFN, MoE-finetuned with LB for as many
   steps as both experts plus the BTX finetune).

Metrics per domain on a fixed validation set: mean next-token loss over all tokens, and the teacher-forced
token error on the *deterministic* tokens (the digits of each sum after "=", the closing brackets), plus
the MoE's expert utilisation (fraction of top-2 slots per expert, per domain, averaged over layers).
Dense training uses ``trainers/toy_lm.train_causal_lm``; the MoE finetune uses ``moe_finetune`` (it adds
the load-balancing loss). Results of a run: docs/btx.md.

    python examples/btx_mini.py --seed 0 [--scale 1.0] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import torch

from loopwright.modeling.btx import average_dense, btm_ensemble_logprobs, merge_btx, moe_finetune
from loopwright.trainers.toy_lm import collate, train_causal_lm

VOCAB = ["<pad>"] + list("0123456789+=;()[]{}abcdefghijklmnopq ")
STOI = {c: i for i, c in enumerate(VOCAB)}
SEQ_LEN = 64
OPEN = {"(": ")", "[": "]", "{": "}"}
DOMAINS = ("arith", "code")


def _arith_sample(rng: random.Random) -> tuple[str, list[int]]:
    a, b = rng.randrange(10, 100), rng.randrange(10, 100)
    s = f"{a}+{b}={a + b};"
    det = list(range(s.index("=") + 1, len(s)))  # the sum digits (and ';') are determined by the prefix
    return s, det


def _code_sample(rng: random.Random, depth: int = 0) -> tuple[str, list[int]]:
    out, det = [rng.choice("abcdefghijklmnopq")], []
    stack = []
    for _ in range(rng.randrange(2, 6)):
        r = rng.random()
        if r < 0.45 and len(stack) < 4:
            o = rng.choice("([{")
            out.append(o)
            stack.append(o)
        elif r < 0.7 and stack:
            det.append(len(out))
            out.append(OPEN[stack.pop()])
        else:
            out.append(rng.choice("abcdefghijklmnopq"))
    while stack:
        det.append(len(out))
        out.append(OPEN[stack.pop()])
    out.append(";")
    return "".join(out), det


def make_row(domain: str, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, loss_mask over all tokens but the first, det_mask on deterministic tokens) of SEQ_LEN."""
    gen = _arith_sample if domain == "arith" else _code_sample
    text, det = "", []
    while len(text) < SEQ_LEN:
        s, d = gen(rng)
        det += [len(text) + i for i in d]
        text += s
    text = text[:SEQ_LEN]
    ids = [STOI[c] for c in text]
    mask = [0] + [1] * (SEQ_LEN - 1)
    det_mask = [1 if i in set(det) and i > 0 else 0 for i in range(SEQ_LEN)]
    return ids, mask, det_mask


def batches(domain: str | None):
    """A toy_lm ``batches_fn``: fresh rows of one domain, or of the uniform mix (``None``)."""

    def fn(rng: random.Random, batch_size: int):
        return [make_row(domain or rng.choice(DOMAINS), rng)[:2] for _ in range(batch_size)]

    return fn


def build_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=16, max_position_embeddings=SEQ_LEN,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=None)
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def evaluate(logprobs_fn, val: dict[str, list]) -> dict[str, float]:
    """Per-domain mean token loss and deterministic-token error; ``logprobs_fn(ids_BL) -> (B, L, V)``."""
    out = {}
    for dom, rows in val.items():
        ids_BL = torch.tensor([r[0] for r in rows])
        mask_BT = torch.tensor([r[1] for r in rows])[:, 1:].float()
        det_BT = torch.tensor([r[2] for r in rows])[:, 1:].bool()
        logp_BTV = logprobs_fn(ids_BL)[:, :-1]
        nll_BT = -logp_BTV.gather(-1, ids_BL[:, 1:, None]).squeeze(-1)
        out[f"{dom}_loss"] = float((nll_BT * mask_BT).sum() / mask_BT.sum())
        wrong_BT = (logp_BTV.argmax(-1) != ids_BL[:, 1:]) & det_BT
        out[f"{dom}_err"] = float(wrong_BT.sum() / det_BT.sum())
    out["mean_loss"] = sum(out[f"{d}_loss"] for d in DOMAINS) / len(DOMAINS)
    return out


def model_logprobs(model):
    def fn(ids_BL):
        model.eval()  # inference mode, safe
        return torch.log_softmax(model(input_ids=ids_BL).logits.float(), -1)

    return fn


@torch.no_grad()
def utilisation(moe, val: dict[str, list]) -> dict[str, list[float]]:
    """Fraction of the top-k slots each expert receives, per domain, averaged over layers."""
    k, n = moe.config.num_experts_per_tok, moe.config.num_local_experts
    res = {}
    for dom, rows in val.items():
        out = moe(input_ids=torch.tensor([r[0] for r in rows]), output_router_logits=True)
        frac = torch.zeros(n)
        for logits_TE in out.router_logits:
            idx = torch.topk(logits_TE.float(), k, dim=-1).indices
            frac += torch.bincount(idx.reshape(-1), minlength=n).float() / idx.numel()
        res[dom] = [round(float(f), 3) for f in frac / len(out.router_logits)]
    return res


def run(seed: int = 0, scale: float = 1.0, threads: int = 1, batch_size: int = 16, lr: float = 3e-3,
        extra_arms: bool = True, log=print) -> dict[str, Any]:
    """All arms of the protocol; ``extra_arms`` adds BTX without load balancing and sparse upcycling."""
    log = log or (lambda _msg: None)
    torch.set_num_threads(threads)
    t0 = time.time()
    s_seed, s_exp, s_moe = (max(5, int(round(x * scale))) for x in (400, 400, 300))
    vrng = random.Random(10_000 + seed)
    val = {d: [make_row(d, vrng) for _ in range(64)] for d in DOMAINS}
    kw = dict(lr=lr, batch_size=batch_size, seed=seed, log=None)

    seed_model = build_model(seed)
    train_causal_lm(seed_model, batches(None), steps=s_seed, **kw)
    log(f"seed trained ({s_seed} steps) {time.time() - t0:.0f}s")
    experts = {}
    for i, dom in enumerate(DOMAINS):
        m = build_model(seed)
        m.load_state_dict(seed_model.state_dict())
        train_causal_lm(m, batches(dom), steps=s_exp, **{**kw, "seed": seed + 1 + i})
        experts[dom] = m
        log(f"expert {dom} trained ({s_exp} steps) {time.time() - t0:.0f}s")
    dense = build_model(seed)
    dense.load_state_dict(seed_model.state_dict())
    train_causal_lm(dense, batches(None), steps=2 * s_exp + s_moe, **{**kw, "seed": seed + 10})
    log(f"dense baseline trained ({2 * s_exp + s_moe} steps) {time.time() - t0:.0f}s")

    members = [experts["arith"], experts["code"], seed_model]
    merged = merge_btx(members, num_experts_per_tok=2, router_init="zeros+noise", router_aux_loss_coef=0.01,
                       seed=seed)
    rows: dict[str, dict[str, float]] = {}
    rows["seed"] = evaluate(model_logprobs(seed_model), val)
    for dom in DOMAINS:
        rows[f"expert_{dom}"] = evaluate(model_logprobs(experts[dom]), val)
    rows["dense_continued"] = evaluate(model_logprobs(dense), val)
    rows["average_dense (BTM merge)"] = evaluate(model_logprobs(average_dense(members)), val)
    rows["btm_ensemble"] = evaluate(lambda ids: btm_ensemble_logprobs(members, ids), val)
    rows["btx_merged_no_finetune"] = evaluate(model_logprobs(merged), val)
    util_before = utilisation(merged, val)

    def mix_batch(rng: random.Random):
        return collate(batches(None)(rng, batch_size))

    hist = moe_finetune(merged, mix_batch, steps=s_moe, lr=lr, seed=seed + 20, log=None)
    log(f"MoE finetuned ({s_moe} steps) {time.time() - t0:.0f}s")
    rows["btx (moe finetuned)"] = evaluate(model_logprobs(merged), val)
    util_after = utilisation(merged, val)
    result: dict[str, Any] = {}
    if extra_arms:
        no_lb = merge_btx(members, num_experts_per_tok=2, router_init="zeros+noise", seed=seed)
        moe_finetune(no_lb, mix_batch, steps=s_moe, lr=lr, aux_coef=0.0, seed=seed + 20, log=None)
        rows["btx without LB (alpha 0)"] = evaluate(model_logprobs(no_lb), val)
        result["utilisation_no_lb"] = utilisation(no_lb, val)
        log(f"BTX without LB finetuned ({s_moe} steps) {time.time() - t0:.0f}s")
        upcycled = merge_btx([seed_model] * 3, num_experts_per_tok=2, router_init="zeros+noise",
                             router_aux_loss_coef=0.01, seed=seed)
        moe_finetune(upcycled, mix_batch, steps=2 * s_exp + s_moe, lr=lr, seed=seed + 30, log=None)
        rows["sparse upcycling (matched steps)"] = evaluate(model_logprobs(upcycled), val)
        log(f"upcycled MoE finetuned ({2 * s_exp + s_moe} steps) {time.time() - t0:.0f}s")
    return {
        "seed": seed, "scale": scale, "steps": {"seed": s_seed, "expert": s_exp, "moe": s_moe,
                                                "dense_continued": 2 * s_exp + s_moe,
                                                "upcycled": 2 * s_exp + s_moe if extra_arms else 0},
        "rows": rows, "utilisation_before": util_before, "utilisation_after": util_after, **result,
        "aux_loss_first_last": [hist["aux_loss"][0], hist["aux_loss"][-1]],
        "wall_s": round(time.time() - t0, 1), "threads": threads,
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| model | arith loss | code loss | mean loss | arith err | code err |", "|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['arith_loss']:.3f} | {r['code_loss']:.3f} | {r['mean_loss']:.3f} | "
                     f"{r['arith_err']:.3f} | {r['code_err']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription on a shared CPU)")
    p.add_argument("--json", default=None, help="also write the result as JSON here")
    a = p.parse_args()
    res = run(seed=a.seed, scale=a.scale, threads=a.threads)
    print(table(res))
    print("expert utilisation (arith expert, code expert, seed) before finetune:", res["utilisation_before"])
    print("after finetune:", res["utilisation_after"])
    if "utilisation_no_lb" in res:
        print("BTX without LB, after finetune:", res["utilisation_no_lb"])
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}))
    if a.json:
        from loopwright.sdk.artifacts import write_json

        write_json(a.json, res)


if __name__ == "__main__":
    main()
