"""The CPU demo's judge and meta-judge on MiniArith: a *verifiable-signal* judge, as spec/loops.md §3.8 sets it up.

The ~1M-parameter sandbox seed model cannot follow a judging rubric (its verdicts are invalid), so in the sandbox
demo the actor is the real seed model (transformers generation, TRL DPO) while the judge and the meta-judge are
programs that read the same prompts a model judge would read and answer in the same text format:

- **judge** (:func:`verifier_judge`): checks the response against the MiniArith gold answer with an additive
  rubric (:func:`verified_score`: +1 a ``#### N`` final line, +1 at least one ``<<a op b=c>>`` step, +1 every step's
  arithmetic right, +2 the final answer right), then adds a length bias ``c · ln(len/40)`` and Gaussian noise and
  rounds to a whole point on [0, 5] — the "scripted judge with noise and a length bias" of §3.8. Its text ends in
  ``Score: N`` and goes through the real parser.
- **meta-judge** (:func:`verifier_meta_judge`): prefers the judgement whose score is closer to the verified score,
  right with probability ``accuracy``, and answers ``A`` regardless with probability ``first_bias`` (a position
  bias the ω correction must remove); it ends in ``Winner: Judgement X``.

Both are :class:`~loopwright.sdk.generators.scripted.ScriptedGenerator` instances (seeded per prompt and sample), so
the loop, the parsers and the artifacts are exactly those of a model judge. The model itself is still trained on
the judge pairs and measured as a judge on a fixed labelled anchor set every iteration (:class:`MiniArithEval`).
With ``--model PATH`` the demo uses the model for all three roles and the paper's templates instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loopwright.sdk.generator import Generator
from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
from loopwright.sdk.tasks.miniarith import MiniArithProblem
from loopwright.sdk.types import Prompt, SamplingParams

from ..parsers import parse_score
from ..pointwise import PointwiseJudge
from .elo import spearman
from .sandbox_templates import SANDBOX_JUDGE_TEMPLATE, SANDBOX_META_TEMPLATE

__all__ = [
    "SANDBOX_JUDGE_TEMPLATE",
    "SANDBOX_META_TEMPLATE",
    "MiniArithEval",
    "anchor_items",
    "garbage_judge",
    "sandbox_loop",
    "verified_score",
    "verifier_judge",
    "verifier_meta_judge",
]

# At most 18 digits per operand: int() of a longer run raises past 4300 digits and costs quadratic time below that.
_STEP_RE = re.compile(r"<<\s*+(-?[0-9]{1,18})\s*+([-+*/x])\s*+(-?[0-9]{1,18})\s*+=\s*+(-?[0-9]{1,18})\s*+>>")
_FINAL_RE = re.compile(r"####\s*(-?\d+)")


def _step_ok(a: int, op: str, b: int, c: int) -> bool:
    if op == "+":
        return a + b == c
    if op == "-":
        return a - b == c
    if op in ("*", "x"):
        return a * b == c
    return b != 0 and a % b == 0 and a // b == c


def verified_score(response: str, gold: int | str) -> tuple[int, str]:
    """The additive MiniArith rubric on [0, 5] (see the module docstring) and a one-line justification.

    Pure arithmetic on integers matched by a regex: no ``eval`` of model output.
    """
    steps = _STEP_RE.findall(response)
    n_ok = sum(_step_ok(int(a), op, int(b), int(c)) for a, op, b, c in steps)
    final = _FINAL_RE.search(response)
    pred = extract_model_answer(response) if final else None
    right = pred is not None and is_correct(pred, gold)
    score = (final is not None) + (len(steps) > 0) + (len(steps) > 0 and n_ok == len(steps)) + 2 * right
    why = (f"Final answer {pred if pred is not None else 'missing'}: {'right' if right else 'wrong'}; "
           f"{n_ok}/{len(steps)} steps right.")
    return int(score), why


_JUDGE_PROMPT_RE = re.compile(r"Question: (?P<q>.*?)\nAnswer: (?P<r>.*?)\nEnd with the line Score", re.DOTALL)
_META_PROMPT_RE = re.compile(
    r"Question: (?P<q>.*?)\nAnswer: (?P<r>.*?)\nJudgement A: (?P<a>.*?)\nJudgement B: (?P<b>.*?)\nFinish with",
    re.DOTALL,
)


def _gold_lookup(problems: Sequence[MiniArithProblem]) -> dict[str, int]:
    return {p.question.strip(): p.answer for p in problems}


def verifier_judge(problems: Sequence[MiniArithProblem], *, length_bias: float = 1.0, noise_sd: float = 0.7,
                   ref_len: float = 40.0) -> Generator:
    """A judge Generator backed by the verifiable MiniArith signal, with a length bias and noise (§3.8).

    Answers ``SANDBOX_JUDGE_TEMPLATE`` prompts for questions in ``problems``; anything else gets a text with no
    ``Score:`` line (an invalid verdict, as from a confused model).
    """
    from loopwright.sdk.generators.scripted import ScriptedGenerator

    gold = _gold_lookup(problems)

    def respond(text: str, _k: int, rng: Any) -> str:
        m = _JUDGE_PROMPT_RE.search(text)
        if m is None or m.group("q").strip() not in gold:
            return "I cannot judge this answer."
        response = m.group("r")
        true, why = verified_score(response, gold[m.group("q").strip()])
        biased = true + length_bias * math.log(max(len(response), 1) / ref_len) + rng.gauss(0.0, noise_sd)
        return f"{why} Score: {int(min(5, max(0, round(biased))))}"

    return ScriptedGenerator(respond, model_id=f"miniarith-verifier-judge(bias={length_bias},noise={noise_sd})")


def verifier_meta_judge(problems: Sequence[MiniArithProblem], *, accuracy: float = 0.85,
                        first_bias: float = 0.2) -> Generator:
    """A meta-judge Generator: prefers the judgement whose score is closer to the verified score (right with
    probability ``accuracy``), but answers A regardless with probability ``first_bias`` (position bias)."""
    from loopwright.sdk.generators.scripted import ScriptedGenerator

    if not 0 <= accuracy <= 1 or not 0 <= first_bias <= 1:
        raise ValueError(f"accuracy={accuracy} and first_bias={first_bias} must lie in [0, 1]")
    gold = _gold_lookup(problems)

    def respond(text: str, _k: int, rng: Any) -> str:
        m = _META_PROMPT_RE.search(text)
        if m is None or m.group("q").strip() not in gold:
            return "Both judgements look fine to me."
        true, _ = verified_score(m.group("r"), gold[m.group("q").strip()])
        sa, sb = parse_score(m.group("a")).value, parse_score(m.group("b")).value
        da = abs(sa - true) if sa is not None else math.inf
        db = abs(sb - true) if sb is not None else math.inf
        better = "A" if da < db else "B" if db < da else rng.choice("AB")
        if rng.random() > accuracy:
            better = "B" if better == "A" else "A"
        if rng.random() < first_bias:
            better = "A"
        return f"Judgement {better} is closer to the facts. Winner: Judgement {better}"

    return ScriptedGenerator(respond, model_id=f"miniarith-verifier-meta(acc={accuracy},first={first_bias})")


def garbage_judge() -> Generator:
    """A judge that only emits text without a verdict (the issue's bad-input case)."""
    from loopwright.sdk.generators.scripted import ScriptedGenerator

    return ScriptedGenerator(["lorem ipsum #### ??", "%%%% no verdict here", "5 5 5 but no marker"],
                             model_id="garbage-judge")


def anchor_items(problems: Sequence[MiniArithProblem]) -> list[tuple[str, str, str]]:
    """``(question, correct solution, wrong solution)`` triples: the gold solution and the same solution with the
    final answer changed (a labelled anchor: a judge should score the first higher)."""
    out = []
    for p in problems:
        head, _, _ = p.cot.rpartition("####")
        out.append((p.question, p.cot, f"{head}#### {p.answer + 1 + (p.answer % 3)}"))
    return out


class MiniArithEval:
    """Per-iteration evaluation on MiniArith (greedy accuracy, response length, judge reward, model-as-judge).

    Args:
        problems: held-out problems for accuracy / length / reward.
        anchor: problems whose (correct, wrong-final-answer) solutions form the model-as-judge anchor set.
        max_tokens / anchor_max_tokens: generation budgets.
    """

    def __init__(self, problems: Sequence[MiniArithProblem], anchor: Sequence[MiniArithProblem], *,
                 max_tokens: int = 160, anchor_max_tokens: int = 64) -> None:
        if not problems:
            raise ValueError("MiniArithEval needs at least one held-out problem")
        self.problems = list(problems)
        self.anchor = anchor_items(anchor)
        self.max_tokens = max_tokens
        self.anchor_max_tokens = anchor_max_tokens

    def __call__(self, actor: Generator, judge: PointwiseJudge, judge_template: Any) -> dict[str, Any]:
        """``{"metrics", "histograms", "records"}`` for the model behind ``actor``; ``judge`` gives the reward."""
        from loopwright.trainers.sandbox.seed import miniarith_prompt

        prompts: list[Prompt] = [miniarith_prompt(p) for p in self.problems]
        outs = actor.generate(prompts, SamplingParams(temperature=0.0, max_tokens=self.max_tokens))
        texts = [row[0].text for row in outs]
        correct = [is_correct(extract_model_answer(t), p.answer) for t, p in zip(texts, self.problems, strict=True)]
        verdicts = judge.score(prompts, texts)
        rewards = [v.score for v in verdicts if v.valid and v.score is not None]
        records = [{"id": p.id, "response": t, "correct": c, "len_chars": len(t),
                    "reward": v.score if v.valid else None}
                   for p, t, c, v in zip(self.problems, texts, correct, verdicts, strict=True)]
        metrics: dict[str, Any] = {
            "eval_accuracy": sum(correct) / len(correct),
            "eval_len_chars": sum(len(t) for t in texts) / len(texts),
            "eval_reward": sum(rewards) / len(rewards) if rewards else None,
            "eval_reward_valid_rate": len(rewards) / len(verdicts),
        }
        if self.anchor:
            self_judge = PointwiseJudge(actor, judge_template, samples=1,
                                        sampling=SamplingParams(temperature=0.0, max_tokens=self.anchor_max_tokens))
            qs = [miniarith_prompt(q) for q, _, _ in self.anchor]
            good = self_judge.score(qs, [g for _, g, _ in self.anchor])
            bad = self_judge.score(qs, [b for _, _, b in self.anchor])
            valid = [v.valid for v in good + bad]
            wins = [g.valid and b.valid and g.score > b.score for g, b in zip(good, bad, strict=True)]
            scored = [(s.score, t) for s, t in zip(good + bad, [1] * len(good) + [0] * len(bad), strict=True)
                      if s.valid]
            metrics["self_judge_valid_rate"] = sum(valid) / len(valid)
            metrics["self_judge_pair_accuracy"] = sum(wins) / len(wins)
            metrics["self_judge_truth_spearman"] = (spearman([s for s, _ in scored], [t for _, t in scored])
                                                    if len(scored) >= 2 else None)
        return {"metrics": metrics, "histograms": {"eval_len_chars": [len(t) for t in texts],
                                                   "eval_reward": rewards},
                "records": records}


def sandbox_loop(run_dir: str | Path, *, config: Any = None, model: str | Path | None = None,
                 judge: str = "verifier", generator_factory: Any = None, progress: bool = False) -> Any:
    """A :class:`~.loop.MetaRewardingLoop` on MiniArith prompts (the demo's and the recipe's set-up).

    Args:
        run_dir: the run directory.
        config: a :class:`~.config.MetaRewardingConfig` (default :func:`~.config.sandbox_config`).
        model: the seed model folder (default: the cached sandbox seed model).
        judge: ``"verifier"`` (the verifiable-signal judge and meta-judge; needs the sandbox templates),
            ``"self"`` (the model plays all roles, as in the paper) or ``"garbage"`` (a judge without verdicts).
        generator_factory: ``model_dir -> Generator`` (default: transformers).

    Prompts, evaluation problems and the anchor set are disjoint held-out MiniArith problems (never in the seed
    model's training set): the first ``eval.n_problems`` for evaluation, the next ``eval.n_anchor`` for the
    model-as-judge anchor, the rest (``iterations x prompts_per_iter``) as the prompt pool.
    """
    from loopwright.trainers.sandbox.seed import ensure_seed_model, held_out_problems, miniarith_prompt

    from .config import sandbox_config
    from .loop import MetaRewardingLoop

    if judge not in ("verifier", "self", "garbage"):
        raise ValueError(f"judge={judge!r}; use 'verifier', 'self' or 'garbage'")
    cfg = config or sandbox_config()
    if judge == "verifier" and cfg.judge.template != SANDBOX_JUDGE_TEMPLATE:
        raise ValueError("judge='verifier' reads SANDBOX_JUDGE_TEMPLATE prompts; set config.judge.template to it "
                         "(sandbox_config() does)")
    seed_model = Path(model) if model is not None else ensure_seed_model(progress=progress)
    n_eval, n_anchor = cfg.eval.n_problems, cfg.eval.n_anchor
    problems = held_out_problems(n_eval + n_anchor + cfg.iterations * cfg.prompts_per_iter)
    eval_set, anchor, pool = problems[:n_eval], problems[n_eval:n_eval + n_anchor], problems[n_eval + n_anchor:]
    judge_gen = meta_gen = None
    if judge == "verifier":
        judge_gen, meta_gen = verifier_judge(problems), verifier_meta_judge(problems)
    elif judge == "garbage":
        judge_gen = meta_gen = garbage_judge()
    return MetaRewardingLoop(
        cfg, run_dir, seed_model=seed_model, prompts=[miniarith_prompt(p) for p in pool],
        generator_factory=generator_factory, judge=judge_gen, meta_judge=meta_gen,
        evaluator=MiniArithEval(eval_set, anchor, max_tokens=cfg.eval.max_tokens,
                                anchor_max_tokens=cfg.eval.anchor_max_tokens),
        progress=progress,
    )
