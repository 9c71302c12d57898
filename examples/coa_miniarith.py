"""CoA vs CoT fine-tuning on the MiniArith sandbox (spec/loops.md §1.9; Gao et al., arXiv 2401.17464, §3/§4 OOD).

Two copies of the untrained sandbox model (:func:`~loopwright.trainers.sandbox.seed.ensure_base_model`) are
fine-tuned with identical budgets (same problems, same steps, same trainer settings as the sandbox seed model):

(a) **CoT-FT** -- target = ``problem.cot``: every intermediate result computed by the model, ending ``#### N``;
(b) **CoA-FT** -- target = ``problem.coa_chain``: numbers copied from the question, results as placeholders
    (``Tom has [12 + 7 = y1] pens. Tom has [y1 * 3 = y2] pens.``); the answer is the last placeholder, filled by
    reification with the real :class:`EquationSolver` (one SymPy system; Calculator fallback);
(c) optional **CoA-FT-terse** (``--models CoT-FT,CoA-FT,CoA-FT-terse``) -- the brackets only, ``[11 + 8 = y1] [y1 * 3
    = y2]``, as terse as the sandbox CoT.

All are evaluated greedily on held-out in-distribution problems (the sandbox task: 1–3 steps, operands 1–20), on
the same operands with results up to 9999, on the same step counts with 3-digit numbers, and on the OOD preset
(4–6 steps, numbers 100–9999). Expected shape (the paper's OOD claim): CoT collapses once numbers grow, CoA stays
high because it only copies operands and picks operations. Measured (docs/coa_demo.md): CoA-FT wins in
distribution (0.34 vs 0.14 at 600 steps) but this 1M-parameter model cannot copy 3-4 digit numbers or continue
past 3 steps, so both are ~0 on 3-digit and OOD sets. Trained models are cached under
``$LOOPWRIGHT_HOME/sandbox/<fingerprint>/sft/``.

    python examples/coa_miniarith.py [--steps 600] [--n-train 20000] [--n-eval 100] [--models CoT-FT,CoA-FT]
        [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopwright.agents.coa.chain import parse_chain
from loopwright.agents.coa.reify import default_math_tools, final_answer, reify, to_number
from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
from loopwright.sdk.tasks.miniarith import MiniArithProblem, generate_problems
from loopwright.sdk.types import SamplingParams
from loopwright.trainers.sandbox.seed import (
    SANDBOX_TASK,
    SandboxConfig,
    ensure_base_model,
    held_out_problems,
    miniarith_prompt,
    train_problems,
)
from loopwright.trainers.sft import SFTSettings, ensure_sft_model


def eval_sets(n: int, cfg: SandboxConfig) -> dict[str, list[MiniArithProblem]]:
    """The evaluation sets: ID held-out; ID operands (1-20) but factors up to 20 and results up to 9999 (CoT must
    compute 3-4 digit products, CoA still only copies 1-2 digit operands); ID steps with 3-digit numbers; the OOD
    preset."""
    big = SANDBOX_TASK.model_copy(update={"min_number": 100, "max_number": 999, "max_result": 10**6, "seed": 2})
    wide = SANDBOX_TASK.model_copy(update={"max_factor": 20, "max_result": 9999, "seed": 3})
    return {
        "ID (1-3 steps, 1-20)": held_out_problems(n, cfg),
        "ID operands, factors to 20, results to 9999": generate_problems(n, wide),
        "ID steps, numbers 100-999": generate_problems(n, big),
        "OOD (4-6 steps, 100-9999)": held_out_problems(n, cfg, ood=True),
    }


def _budget(tok: Any, problems: Sequence[MiniArithProblem]) -> int:
    """max_tokens for a set (same for both models): 1.5x the longest gold target of either kind + 8, at most 320
    (prompt + completion must fit the sandbox model's 512 positions; OOD questions are up to ~170 tokens)."""
    longest = max(len(tok(t).input_ids) for p in problems for t in (p.cot, p.coa_chain))
    return int(min(longest * 1.5 + 8, 320))


def evaluate(gen: Any, problems: Sequence[MiniArithProblem], mode: str, max_tokens: int,
             tools: dict[str, Any]) -> dict[str, Any]:
    """Greedy accuracy of one model on one set. ``mode`` "cot": answer = extract_model_answer; "coa": parse_chain
    -> reify (EquationSolver system, Calculator fallback) -> final_answer.

    Diagnostics: ``first_step_ok`` -- the first step is right (CoA: operands copied and operation chosen; CoT: the
    same plus its computed result); ``step_count_ok`` -- as many steps as the gold program."""
    t0 = time.perf_counter()
    outs = gen.generate([miniarith_prompt(p) for p in problems], SamplingParams(temperature=0.0, max_tokens=max_tokens))
    t_gen = time.perf_counter() - t0
    correct = invalid = invalid_chains = calls = first_ok = len_ok = 0
    t_tools = 0.0
    examples = []
    for p, out in zip(problems, outs, strict=True):
        text = out[0].text
        st = p.program[0]
        if mode == "cot":
            first_ok += text.startswith(f"{st.a}{st.op}{st.b}=<<{st.a}{st.op}{st.b}={st.result}>>{st.result}")
            len_ok += text.count("<<") == p.steps
            pred = extract_model_answer(text)
            ok = is_correct(pred, p.answer)
            invalid += pred is None
        else:
            r = reify(parse_chain(text), tools)
            first = r.chain.calls[0] if r.chain.calls else None
            first_ok += getattr(first, "expr", "").replace(" ", "") == f"{st.a}{st.op}{st.b}"
            len_ok += len(r.chain.calls) == p.steps
            calls += r.n_calls
            t_tools += r.t_tools_s
            ans = final_answer(r.values, r.chain)
            invalid += not r.ok or ans is None  # malformed chain, failed tool or no placeholder to answer with
            invalid_chains += not r.valid
            try:
                ok = ans is not None and to_number(ans) == p.answer
            except ValueError:
                ok = False
        correct += bool(ok)
        if len(examples) < 2:
            examples.append({"question": p.question, "output": text, "gold": p.answer, "correct": bool(ok)})
    n = len(problems)
    return {"accuracy": correct / n, "n": n, "correct": correct, "invalid": invalid, "invalid_chains": invalid_chains,
            "tool_calls": calls,
            "first_step_ok": first_ok / n, "step_count_ok": len_ok / n, "gen_seconds": round(t_gen, 1), "tool_seconds": round(t_tools, 2), "examples": examples}


def terse_chain(problem: MiniArithProblem) -> str:
    """The CoA chain without its story words: ``[11 + 8 = y1] [y1 * 3 = y2]`` (as terse as the sandbox CoT, so the
    1M-parameter model spends its capacity on copying operands and choosing operations)."""
    return " ".join(re.findall(r"\[[^\]]*\]", problem.coa_chain))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=600, help="SFT steps for EACH model (batch 32)")
    ap.add_argument("--n-train", type=int, default=20_000, help="training problems (the seed model's n_train)")
    ap.add_argument("--n-eval", type=int, default=100, help="problems per evaluation set")
    ap.add_argument("--out", type=Path, default=None, help="folder for results.json (default: print only)")
    ap.add_argument("--models", default="CoT-FT,CoA-FT",
                    help="comma-separated: CoT-FT, CoA-FT, CoA-FT-terse (CoA brackets only, no story words)")
    ap.add_argument("--batch-size", type=int, default=50, help="generation batch size")
    args = ap.parse_args(argv)

    import torch

    from loopwright.sdk.generators.transformers import TransformersGenerator

    cfg = SandboxConfig(n_train=args.n_train)
    base = ensure_base_model(SandboxConfig())  # the base model does not depend on n_train
    problems = train_problems(cfg)
    settings = SFTSettings(max_steps=args.steps)
    all_targets = {"CoT-FT": lambda p: p.cot, "CoA-FT": lambda p: p.coa_chain, "CoA-FT-terse": terse_chain}
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    bad = [n for n in names if n not in all_targets]
    if bad or not names:
        raise SystemExit(f"--models {args.models!r}: unknown {bad}; choose from {sorted(all_targets)}")
    targets = {n: [(miniarith_prompt(p), all_targets[n](p)) for p in problems] for n in names}
    sets = eval_sets(args.n_eval, cfg)
    tools = default_math_tools()
    results: dict[str, Any] = {"steps": args.steps, "n_train": args.n_train, "n_eval": args.n_eval,
                               "settings": settings.model_dump(), "models": {}}
    for name, rows in targets.items():
        t0 = time.perf_counter()
        path = ensure_sft_model(name.lower(), base, rows, settings)
        manifest = json.loads((path / "loopwright_manifest.json").read_text())
        print(f"{name}: {path} (train {manifest['train_seconds']} s, final loss {manifest['loss_history'][-1]:.4f}; "
              f"this run {time.perf_counter() - t0:.1f} s)", flush=True)
        torch.set_num_threads(1)
        gen = TransformersGenerator(path, batch_size=args.batch_size)
        mode = "cot" if name == "CoT-FT" else "coa"
        per_set = {}
        for label, probs in sets.items():
            r = evaluate(gen, probs, mode, _budget(gen.tokenizer, probs), tools)
            per_set[label] = r
            print(f"  {label:44s} acc {r['accuracy']:.2f} invalid {r['invalid']}/{r['n']} calls {r['tool_calls']} "
                  f"first step ok {r['first_step_ok']:.2f} step count ok {r['step_count_ok']:.2f} "
                  f"gen {r['gen_seconds']} s", flush=True)
        gen.close()
        results["models"][name] = {"path": str(path), "train_seconds": manifest["train_seconds"],
                                   "final_loss": manifest["loss_history"][-1], "eval": per_set}

    print(f"\n| model ({args.steps} steps x batch 32, n_train {args.n_train}) | "
          + " | ".join(sets) + " | first step ok (per set) | step count ok (per set) "
          "| invalid (per set) | tool calls (per set) |")
    print("|---" * (len(sets) + 5) + "|")
    for name, m in results["models"].items():
        ev = m["eval"]
        print(f"| {name} | " + " | ".join(f"{ev[s]['accuracy']:.2f}" for s in sets)
              + " | " + "/".join(f"{ev[s]['first_step_ok']:.2f}" for s in sets)
              + " | " + "/".join(f"{ev[s]['step_count_ok']:.2f}" for s in sets)
              + " | " + "/".join(str(ev[s]["invalid"]) for s in sets)
              + " | " + "/".join(str(ev[s]["tool_calls"]) for s in sets) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
