"""The Self-Taught Evaluator loop (Wang et al., arXiv 2408.02666; spec/loops.md §4.1), as a composition of stages.

:class:`SelfTaughtEvaluator` builds a public :class:`~loopwright.sdk.loop.Loop` of the stages in :mod:`.stages`.
Per iteration ``i = 1..T`` (spec/loops.md §4.1, Appendix A.4), with the judge ``M_{i-1}`` (``M_0`` = the seed judge):

1. ``pairs`` -- construction-labelled pairs ``(x, y_w, y_l)``: ``y_w`` answers ``x``; ``y_l`` is a good answer
   to a *modified* instruction ``x'`` and so a worse answer to ``x`` (§4.4). Sources: ``"miniarith"`` (the
   sandbox: ``y_w`` = the gold solution, ``x'``/``y_l`` from :func:`~.data.modify_miniarith`) or
   ``"generator"`` (any LLM: ``y_w`` = its answer, ``x'``/``y_l`` from the worse-response prompt, parsed by
   :func:`~.prompts.parse_worse_response`; unparseable outputs are recorded and skipped).
2. ``judge`` -- ``M_{i-1}`` samples ``N`` judgements per pair in *both* orders (T 0.7, top-p 0.9, §4.3).
3. ``select`` -- rejection sampling against the known label (one correct judgement per key, seeded, optional
   majority vote), label balancing (#A-better == #B-better); for ``train_method="dpo"`` (correct, incorrect)
   judgement pairs instead (§4.4 ``prepare_dpo_data``). **Zero usable examples** (e.g. a judge that emits only
   garbage) records the iteration with ``usable_examples = 0`` and a note in ``iterations.jsonl`` and the
   report, then raises :class:`NoUsableJudgementsError` instead of training on nothing.
4. ``train`` -- the public SFT stage (loss on the judgement tokens only) or DPO stage (+ NLL, STE release: β 0.1,
   nll 1.5) on the judge, re-initialised from the seed judge every iteration (``init_from="seed"``, §4.1) or from
   ``M_{i-1}``. ``peft=LoRASettings(...)`` trains LoRA adapters in whichever trainer ``train_method`` picks (the
   same as setting ``sft.lora`` or ``dpo.lora``; give one of the two); they are merged into ``iter_<i>/model``,
   which the next iteration serves, so ``merge=False`` is refused.
5. ``evaluate`` -- held-out judge accuracy on a fixed set of construction-labelled MiniArith pairs (built once,
   ``eval_pairs.jsonl``; optionally LLMBar pairs too), greedy, both orders
   (:func:`~loopwright.judges.evaluation.evaluate`): order-averaged accuracy, position-consistent accuracy,
   accuracy by slot, invalid rate (§4.5, §9).

Iteration 0 evaluates the seed judge. Each iteration is a LangGraph graph (thread ``iteration-<i>``) checkpointed in
``RUN_DIR/checkpoints.sqlite``; ``resume=True`` continues after the last completed stage. Artifacts
(``iter_<i>/pairs.jsonl``, ``judgements.jsonl``, ``train.jsonl``, ``model/``, ``metrics.json``, ``eval/``) are
written atomically; ``iterations.jsonl`` gets one record per iteration and the report (``RUN_DIR/report/``) is
rewritten after each. Runs written before the loop became a composition (stage names ``judge_<i>``) cannot be
resumed by this version.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loopwright.sdk.artifacts import RunDir
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generator import Generator
from loopwright.sdk.loop import RESUME_ENV, Loop

from .config import EVAL_START, TRAIN_START, NoUsableJudgementsError, SelfTaughtConfig
from .data import WORSE_KINDS, miniarith_pairs
from .prompts import judge_template
from .stages import (
    ConstructPairs,
    EvaluateJudge,
    HeldOutPairs,
    JudgeBothOrders,
    SelectJudgements,
    generator_pairs,
    train_stage,
)

__all__ = ["EVAL_START", "TRAIN_START", "WORSE_KINDS", "NoUsableJudgementsError", "SelfTaughtConfig",
           "SelfTaughtEvaluator", "backend_factory", "check_checkpoint", "miniarith_pairs"]

GeneratorFactory = Callable[[str], Generator]


def check_checkpoint(run_dir: Path) -> Path:
    """The run's ``checkpoints.sqlite`` for a resume; missing or corrupt raises an error naming the file."""
    path = Path(run_dir) / "checkpoints.sqlite"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: cannot resume {run_dir} (the LangGraph checkpoint is missing; "
                                "start a new run directory instead)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"{path} is corrupt ({e}); cannot resume {run_dir}, start a new run directory") from e
    if "checkpoints" not in names:
        raise ConfigError(f"{path} holds no LangGraph checkpoints table; cannot resume {run_dir}")
    return path


class SelfTaughtEvaluator:
    """Run the Self-Taught Evaluator loop for ``seed_judge`` (a causal-LM folder).

    Args:
        seed_judge: the folder of ``M_0`` (the sandbox: :func:`~.sandbox.ensure_seed_judge`).
        config: :class:`SelfTaughtConfig`.
        make_generator: ``factory(model_dir) -> Generator`` serving a judge folder (default: an in-process
            :class:`~loopwright.sdk.generators.transformers.TransformersGenerator`). The loop keeps one judge's
            generator open at a time and calls its ``close()`` before training and before loading another.
        pair_generator: the response generator ``M_gen`` for ``pair_source="generator"``.
        instructions: the instructions ``X`` for ``pair_source="generator"`` (default: MiniArith questions).
        init_model: the weights each iteration's training starts from when ``init_from="seed"`` (default:
            ``seed_judge``; set it when ``M_0`` is served from elsewhere, e.g. a scripted judge in tests).
    """

    def __init__(self, seed_judge: str | Path, config: SelfTaughtConfig | None = None, *,
                 make_generator: GeneratorFactory | None = None, pair_generator: Generator | None = None,
                 instructions: Sequence[str] | None = None, init_model: str | Path | None = None) -> None:
        self.seed_judge = str(seed_judge)
        self.init_model = str(init_model) if init_model is not None else self.seed_judge
        self.config = config or SelfTaughtConfig()
        if self.config.pair_source == "generator" and pair_generator is None:
            raise ConfigError("pair_source='generator' needs pair_generator= (the model that writes y_w and the "
                              "worse responses); or use pair_source='miniarith'")
        self.make_generator = make_generator or _transformers_generator
        self.pair_generator = pair_generator
        self.instructions = list(instructions) if instructions is not None else None
        self.template = judge_template(self.config.judge_prompt_style)

    @staticmethod
    def to_dataset(run_dir: str | Path, iteration: int) -> Any:
        """Iteration ``iteration``'s judge SFT rows (the rejection-sampled judgements it trained on) as a TRL
        prompt-completion ``datasets.Dataset``."""
        from ...sdk.trl_data import to_dataset

        path = Path(run_dir) / f"iter_{iteration}" / "train.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"iteration {iteration} has no train.jsonl in {run_dir} (not run yet?)")
        return to_dataset(path, "sft")

    def loop(self, progress: bool = False) -> Loop:
        """The :class:`~loopwright.sdk.loop.Loop` this runs (the stages of :mod:`.stages`)."""
        c = self.config
        stages = [HeldOutPairs(cfg=c),
                  ConstructPairs(cfg=c, pair_generator=self.pair_generator, instructions=self.instructions),
                  JudgeBothOrders(cfg=c), SelectJudgements(cfg=c), train_stage(c), EvaluateJudge(cfg=c)]
        return Loop(stages, seed_model=self.seed_judge, init_model=self.init_model, iterations=c.iterations,
                    init_from=c.init_from, make_generator=self.make_generator, seed=c.seed,
                    name="Self-Taught Evaluator", progress=progress,
                    config={"loop": "self_taught", "seed_judge": self.seed_judge, **c.model_dump(mode="json")})

    def run(self, run_dir: str | Path, *, resume: bool = False, progress: bool = False) -> list[dict[str, Any]]:
        """Run (or with ``resume=True`` continue) the loop in ``run_dir``; returns the iteration records."""
        run_dir = Path(run_dir)
        resume = resume or bool(os.environ.get(RESUME_ENV) and (run_dir / "checkpoints.sqlite").is_file())
        if resume:
            RunDir.open(run_dir)  # names a missing manifest.json
            check_checkpoint(run_dir)
        elif (run_dir / "checkpoints.sqlite").exists():
            raise ConfigError(f"{run_dir} already holds a run; pass resume=True (--resume) or a new directory")
        return self.loop(progress).run(run_dir, resume=resume)

    def _generator_pairs(self, offset: int, exclude: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """§4.4 with an LLM (:func:`~.stages.generator_pairs`)."""
        assert self.pair_generator is not None
        return generator_pairs(self.config, self.pair_generator, self.instructions, offset, exclude)


# --------------------------------------------------------------------------------------------- helpers


def _transformers_generator(model_dir: str) -> Generator:
    from loopwright.sdk.generators.transformers import TransformersGenerator

    return TransformersGenerator(model_dir, batch_size=64)


def backend_factory(backend: str) -> GeneratorFactory:
    """``factory(model_dir) -> Generator`` serving a judge folder with ``backend``; every generator has ``close()``.

    ``transformers``: in-process; ``vllm``: an in-process vLLM engine (one at a time: the loop closes each);
    ``openai``: a local vLLM OpenAI-compatible server on 127.0.0.1 per judge folder, stopped by ``close()``.
    """
    if backend == "transformers":
        return _transformers_generator
    if backend == "vllm":
        from loopwright.sdk.generators.vllm import VLLMGenerator

        return lambda path: VLLMGenerator(path, seed=0)
    if backend == "openai":
        from loopwright.sdk.generators.openai import OpenAIGenerator
        from loopwright.sdk.server import VLLMServer

        class ServedGenerator(OpenAIGenerator):
            """An OpenAIGenerator on a vLLM server it started; ``close()`` stops the server too."""

            def __init__(self, path: str) -> None:
                self.server = VLLMServer(path).start()
                super().__init__(self.server.base_url, self.server.served_model_name)

            def close(self) -> None:
                try:
                    super().close()
                finally:
                    self.server.stop()

        return ServedGenerator
    raise ConfigError(f"backend={backend!r}; use 'transformers', 'vllm' or 'openai'")
