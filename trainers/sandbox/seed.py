"""The sandbox seed model: a tiny Llama trained from scratch with TRL SFT on MiniArith, cached on disk.

DESIGN.md "The sandbox": every example and the CLI default run on this model when no model is given. The seed
model is weak but clearly above zero (spec/environment.md "Sandbox feasibility": a 0.94M-parameter model with
single-digit tokens reached 86% on one/two-step problems after 180 s), so loops have room to improve it.

- :func:`ensure_base_model` -- tokenizer trained on MiniArith texts + a randomly initialised tiny Llama;
- :func:`ensure_seed_model` -- the base model after TRL ``SFTTrainer`` on ``n_train`` MiniArith ID problems
  (conversational rows, ``assistant_only_loss=True``, fp32 on the CPU);
- both cached under ``$LOOPWRIGHT_HOME/sandbox/<fingerprint>/{base,seed}`` (default ``~/.cache/loopwright``),
  built in a temporary folder and renamed into place atomically, under an ``fcntl`` file lock so two processes
  never build the same model at once. The fingerprint hashes the config and :data:`BUILDER_VERSION`.
- :func:`miniarith_prompt` / :func:`miniarith_target` -- the one chat format shared by training and evaluation;
- :func:`evaluate_accuracy` -- greedy exact-answer accuracy of any :class:`~loopwright.sdk.generator.Generator`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...sdk.generator import Generator
from ...sdk.tasks.gsm8k import GSM8KProblem, extract_model_answer, is_correct
from ...sdk.tasks.miniarith import OOD, MiniArithConfig, MiniArithProblem, generate_problems
from ...sdk.types import SamplingParams, stable_hash
from ..cache import build_atomically as _build_atomically
from ..cache import locked as _locked
from ..cache import versions as _versions
from .model import TinyLlamaConfig, build_tiny_model

BUILDER_VERSION = "1"
"""Bump when the build recipe changes in a way the config does not capture (invalidates every cache entry)."""

MANIFEST = "loopwright_manifest.json"

SANDBOX_TASK = MiniArithConfig(min_steps=1, max_steps=3, min_number=1, max_number=20, max_factor=5, max_result=99,
                               seed=1)
"""The seed model's training distribution: MiniArith ID's 1–3 steps with smaller numbers (operands 1–20, factors
2–5, every result <= 99). Measured on 2 CPU cores: with the full ID preset (operands 1–99, results <= 999) a
600-step run reached only 1–5% held-out accuracy (the 1M-parameter model does not learn 2-3 digit arithmetic in
CPU minutes), with this one 14% (38% of one-step problems; 4% on the ID preset, 0% on OOD). Pass ``task=ID``
for the spec's preset."""


class SandboxConfig(BaseModel):
    """Everything that determines the sandbox base and seed models (its hash names the cache folder).

    Defaults: the ~1M-parameter shape of :class:`TinyLlamaConfig` (4 layers: a 2-layer model was worse per
    wall-clock second); AdamW with cosine decay, lr 3e-3 (1e-2 reached a worse loss, 5e-3 at batch 16 was worse
    per example; the environment spec's run used 2e-3 at batch 64), batch 32; ``max_steps=600`` (about one epoch
    of ``n_train``) took 2.5-4 minutes with one thread on the 2-core machine shared with other jobs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: TinyLlamaConfig = Field(default_factory=TinyLlamaConfig)
    task: MiniArithConfig = Field(default_factory=lambda: SANDBOX_TASK)
    """Training distribution; :func:`held_out_problems` draws unseen problems from the same stream."""
    n_train: int = Field(20_000, ge=1)
    n_tokenizer_texts: int = Field(4_000, ge=10)
    learning_rate: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    max_steps: int = Field(600, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(256, ge=32)
    num_threads: int = Field(1, ge=1)
    """Torch CPU threads while training. 1 by default: on a 2-core machine shared with other work, two OpenMP
    threads slowed a step ~10x (0.3 s -> 3.7 s) whenever another process held a core, while one thread costs
    only ~1.6x on an idle one (default config: 193 s with 1 thread under light load, 123 s with 2 threads idle).
    Not part of the fingerprint: both counts gave byte-identical weights."""
    seed: int = 0

    def fingerprint(self) -> str:
        """Hash of everything that determines the weights (``num_threads`` does not: 1 and 2 threads gave
        byte-identical seed models on the 2-core machine), plus :data:`BUILDER_VERSION`."""
        return stable_hash({"config": self.model_dump(mode="json", exclude={"num_threads"}),
                            "builder": BUILDER_VERSION})


STRONG_SANDBOX = SandboxConfig(max_steps=1800)
"""The stronger seed model for oracle-signal runs (issue 13): the default shape trained 3x longer (1800 steps x
batch 32, about 2.9 epochs of ``n_train``). Measured on 2 shared CPU cores, 1 thread: 572 s to build, greedy
held-out accuracy 46.5% on the training distribution (default seed: 14.5%) and 7.5% on the ID preset. At the same
compute a 1.8M-parameter model (hidden 192) for 800 steps reached only 8.5%: on this budget, steps beat width
(docs/results.md, seed-model scaling rows). ``make models`` builds it; the loops' oracle runs start from it."""


# --------------------------------------------------------------------------------------------- chat format


def miniarith_prompt(problem: MiniArithProblem | GSM8KProblem | str) -> list[dict[str, str]]:
    """The chat prompt used for training and evaluation: one user message holding the question."""
    question = problem if isinstance(problem, str) else problem.question
    return [{"role": "user", "content": question}]


def miniarith_target(problem: MiniArithProblem) -> str:
    """The assistant target: the GSM8K-style solution ending in ``#### N``."""
    return problem.cot


# --------------------------------------------------------------------------------------------- cache plumbing


def sandbox_home() -> Path:
    """``$LOOPWRIGHT_HOME/sandbox`` (default ``~/.cache/loopwright/sandbox``)."""
    root = os.environ.get("LOOPWRIGHT_HOME") or str(Path.home() / ".cache" / "loopwright")
    return Path(root).expanduser() / "sandbox"


def cache_dir(cfg: SandboxConfig | None = None) -> Path:
    """The cache folder of ``cfg``: ``$LOOPWRIGHT_HOME/sandbox/<fingerprint>``."""
    return sandbox_home() / (cfg or SandboxConfig()).fingerprint()


def _write_manifest(folder: Path, kind: str, cfg: SandboxConfig, **extra: Any) -> None:
    data = {"kind": kind, "builder_version": BUILDER_VERSION, "fingerprint": cfg.fingerprint(),
            "config": cfg.model_dump(mode="json"), "versions": _versions(), **extra}
    (folder / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest written next to a sandbox model (config, versions, timings, final loss)."""
    return json.loads((Path(model_dir) / MANIFEST).read_text())


# --------------------------------------------------------------------------------------------- data


def train_problems(cfg: SandboxConfig | None = None) -> list[MiniArithProblem]:
    """The ``n_train`` MiniArith problems the seed model is trained on (indices ``0..n_train-1``)."""
    cfg = cfg or SandboxConfig()
    return generate_problems(cfg.n_train, cfg.task)


def held_out_problems(n: int, cfg: SandboxConfig | None = None, ood: bool = False) -> list[MiniArithProblem]:
    """``n`` evaluation problems whose questions never occur in the training set.

    ID: the training stream from index ``n_train`` on. OOD: the OOD preset (4–6 steps, numbers 100–9999) with the
    training seed.
    """
    cfg = cfg or SandboxConfig()
    if ood:
        return generate_problems(n, OOD.model_copy(update={"seed": cfg.task.seed}))
    seen = {p.question for p in train_problems(cfg)}
    out: list[MiniArithProblem] = []
    start = cfg.n_train
    while len(out) < n:
        batch = generate_problems(2 * (n - len(out)) + 8, cfg.task, start=start)
        start += len(batch)
        out.extend(p for p in batch if p.question not in seen)
    return out[:n]


def _tokenizer_texts(cfg: SandboxConfig) -> list[str]:
    n = cfg.n_tokenizer_texts
    seed = cfg.task.seed
    probs = generate_problems(n, cfg.task) + generate_problems(max(1, n // 4), OOD.model_copy(update={"seed": seed}))
    return [t for p in probs for t in (p.question, p.cot, p.coa_chain)]


# --------------------------------------------------------------------------------------------- builders


def ensure_base_model(cfg: SandboxConfig | None = None) -> Path:
    """Path of the untrained sandbox model (tokenizer trained on MiniArith texts + random tiny Llama); built once."""
    cfg = cfg or SandboxConfig()
    folder = cache_dir(cfg)
    final = folder / "base"
    if (final / MANIFEST).is_file():
        return final
    with _locked(folder):
        if (final / MANIFEST).is_file():
            return final

        def build(tmp: Path) -> None:
            t0 = time.perf_counter()
            build_tiny_model(tmp, _tokenizer_texts(cfg), cfg.model)
            _write_manifest(tmp, "base", cfg, build_seconds=round(time.perf_counter() - t0, 3))

        return _build_atomically(final, build)


def ensure_seed_model(cfg: SandboxConfig | None = None, progress: bool = True) -> Path:
    """Path of the sandbox seed model (TRL SFT of the base model on MiniArith); trained once, then cached.

    The first call trains for about two minutes on 2 CPU cores; later calls (any process) return at once.
    """
    cfg = cfg or SandboxConfig()
    folder = cache_dir(cfg)
    final = folder / "seed"
    if (final / MANIFEST).is_file():
        return final
    base = ensure_base_model(cfg)
    with _locked(folder):
        if (final / MANIFEST).is_file():
            return final
        return _build_atomically(final, lambda tmp: _train_seed(cfg, base, tmp, progress))


def _train_seed(cfg: SandboxConfig, base: Path, out: Path, progress: bool) -> None:
    from ..sft import SFTSettings, sft_train

    rows = [{"messages": [*miniarith_prompt(p), {"role": "assistant", "content": miniarith_target(p)}]}
            for p in train_problems(cfg)]
    settings = SFTSettings(max_steps=cfg.max_steps, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                           warmup_ratio=cfg.warmup_ratio, max_length=cfg.max_length, num_threads=cfg.num_threads,
                           seed=cfg.seed)
    info = sft_train(base, rows, out, settings, progress=progress)
    _write_manifest(out, "seed", cfg, base=str(base), init_seconds=info["init_seconds"],
                    train_seconds=info["train_seconds"], total_seconds=info["total_seconds"],
                    train_loss=info["train_loss"], loss_history=info["loss_history"], torch_threads=cfg.num_threads)


def evaluate_accuracy(
    generator: Generator,
    problems: Sequence[MiniArithProblem | GSM8KProblem],
    max_tokens: int = 160,
    batch_size: int | None = None,
) -> dict[str, float | int]:
    """Greedy exact-answer accuracy of ``generator`` on ``problems`` (MiniArith or GSM8K rows).

    Prompts are :func:`miniarith_prompt`; answers are read with ``extract_model_answer`` and compared with
    ``is_correct``. Returns ``{"accuracy", "n", "correct", "invalid"}`` where ``invalid`` counts outputs with no
    number at all. Use ``max_tokens=320`` for the OOD preset (6 long steps; prompt + completion must fit the
    sandbox model's 512 positions).
    """
    if not problems:
        raise ValueError("evaluate_accuracy needs at least one problem")
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    step = batch_size or len(problems)
    correct = invalid = 0
    for i in range(0, len(problems), step):
        chunk = problems[i:i + step]
        outs = generator.generate([miniarith_prompt(p) for p in chunk], params)
        for p, out in zip(chunk, outs, strict=True):
            pred = extract_model_answer(out[0].text)
            gold = p.answer if isinstance(p, MiniArithProblem) else p.gold
            invalid += pred is None
            correct += is_correct(pred, gold)
    n = len(problems)
    return {"accuracy": correct / n, "n": n, "correct": correct, "invalid": invalid}


def main() -> None:
    """``python -m loopwright.trainers.sandbox.seed``: build (or reuse) the default seed model and print the greedy
    accuracy of the untrained and the seed model on held-out sandbox problems, the spec's ID preset and OOD."""
    from ...sdk.generators.transformers import TransformersGenerator
    from ...sdk.tasks.miniarith import ID

    seed_dir = ensure_seed_model()
    m = read_manifest(seed_dir)
    print(f"seed model: {seed_dir}\ntrain {m['train_seconds']} s (total {m['total_seconds']} s, "
          f"{m['torch_threads']} thread(s)), final loss {m['loss_history'][-1]:.4f}")
    sets = {
        "sandbox held-out (n=100)": (held_out_problems(100), 96),
        "MiniArith ID preset (n=100)": (generate_problems(100, ID.model_copy(update={"seed": 777})), 96),
        "MiniArith OOD preset (n=50)": (held_out_problems(50, ood=True), 320),
    }
    for name, path in (("untrained", ensure_base_model()), ("seed", seed_dir)):
        gen = TransformersGenerator(path, batch_size=50)
        for label, (probs, max_tokens) in sets.items():
            r = evaluate_accuracy(gen, probs, max_tokens=max_tokens)
            print(f"{name:9s} {label:28s} accuracy {r['accuracy']:.2f} (invalid {r['invalid']}/{r['n']})")


if __name__ == "__main__":
    main()
