"""Sandbox seed-model scaling probe (issue 13): build one SandboxConfig variant, time it, evaluate it greedily.

    python tests/bench/seed_scaling.py '{"max_steps": 1800}' [--home DIR]
    python tests/bench/seed_scaling.py '{"max_steps": 800, "model": {"hidden_size": 192, "intermediate_size": 512}}'

Prints one JSON line: parameters, build seconds, greedy accuracy on 200 held-out training-distribution problems and
on 200 ID-preset problems. ``--home`` builds into another $LOOPWRIGHT_HOME (so a rebuild is timed, not cached).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variant", help="SandboxConfig fields as JSON; 'model' holds TinyLlamaConfig fields")
    ap.add_argument("--home", default=None, help="LOOPWRIGHT_HOME to build into (default: the usual cache)")
    args = ap.parse_args()
    if args.home:
        os.environ["LOOPWRIGHT_HOME"] = args.home
    import torch

    from loopwright.sdk.generators.transformers import TransformersGenerator
    from loopwright.sdk.tasks.miniarith import ID, generate_problems
    from loopwright.trainers.sandbox.model import TinyLlamaConfig
    from loopwright.trainers.sandbox.seed import (
        SandboxConfig,
        ensure_seed_model,
        evaluate_accuracy,
        held_out_problems,
    )

    torch.set_num_threads(1)
    fields = json.loads(args.variant)
    cfg = SandboxConfig(model=TinyLlamaConfig(**fields.pop("model", {})), **fields)
    t0 = time.perf_counter()
    seed = ensure_seed_model(cfg, progress=False)
    build = time.perf_counter() - t0
    gen = TransformersGenerator(seed, batch_size=64)
    held = evaluate_accuracy(gen, held_out_problems(200, cfg), max_tokens=160)
    idp = evaluate_accuracy(gen, generate_problems(200, ID, start=50_000), max_tokens=160)
    print(json.dumps({"variant": args.variant, "fingerprint": cfg.fingerprint(),
                      "params": sum(p.numel() for p in gen.model.parameters()), "build_s": round(build, 1),
                      "held_out": held["accuracy"], "id": idp["accuracy"]}))


if __name__ == "__main__":
    main()
