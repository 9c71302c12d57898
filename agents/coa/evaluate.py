"""CoA agent vs chain-of-thought with the same model (spec/loops.md §1.5, §1.7 "Evaluator"; issue 3 item 4).

The same generator answers every problem twice: as a CoA agent (abstract chain -> tools -> last placeholder)
and as plain chain-of-thought (answer read with ``sdk.tasks.gsm8k.extract_model_answer``: after ``####``, else
the last number). Reported per method: accuracy, answered/no-answer counts, tool calls, invalid chains and
latency; the per-question records are kept (Appendix A.1 for CoA). Works on MiniArith problems, GSM8K rows
(``GSM8KProblem``) or dicts with ``question`` and ``gold``/``answer``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loopwright.sdk.generator import Generator
from loopwright.sdk.tasks.gsm8k import extract_model_answer, is_correct
from loopwright.sdk.tool import Tool
from loopwright.sdk.types import Prompt, SamplingParams

from .agent import DEFAULT_PARAMS, CoAAgent, as_question, default_coa_prompt

__all__ = ["CoAvsCoTReport", "evaluate_coa_vs_cot"]


@dataclass
class CoAvsCoTReport:
    """``summary[method]`` holds the metrics of ``"coa"`` and ``"cot"``; ``records[method]`` the rows."""

    summary: dict[str, dict[str, Any]]
    records: dict[str, list[dict[str, Any]]] = field(repr=False)

    def table(self) -> str:
        """A markdown table of the two methods' metrics."""
        cols = ["accuracy", "n", "correct", "no_answer", "invalid_chains", "tool_calls", "mean_latency_s"]
        lines = ["| method | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for m, s in self.summary.items():
            cells = [f"{s[c]:.3f}" if isinstance(s.get(c), float) else str(s.get(c, "")) for c in cols]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _summary(records: Sequence[Mapping[str, Any]], wall_s: float) -> dict[str, Any]:
    n = len(records)
    correct = sum(bool(r.get("correct")) for r in records)
    lat = [float(r.get("t_decode_s") or 0.0) + float(r.get("t_tools_s") or 0.0) for r in records]
    calls = [int(r.get("n_calls") or 0) for r in records]
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
            "no_answer": sum(r.get("pred_answer") is None for r in records),
            "invalid_chains": sum(r.get("valid_chain") is False for r in records),
            "no_call_chains": sum(r.get("valid_chain") is True and not r.get("n_calls") for r in records),
            "tool_calls": sum(calls), "mean_tool_calls": sum(calls) / n if n else 0.0,
            "mean_latency_s": statistics.fmean(lat) if lat else 0.0,
            "mean_t_decode_s": statistics.fmean(float(r.get("t_decode_s") or 0.0) for r in records) if n else 0.0,
            "mean_t_tools_s": statistics.fmean(float(r.get("t_tools_s") or 0.0) for r in records) if n else 0.0,
            "wall_s": wall_s}


def evaluate_coa_vs_cot(
    generator: Generator,
    problems: Sequence[Any],
    *,
    cot_prompt_fn: Callable[[str], Prompt] | None = None,
    coa_prompt_fn: Callable[[str], Prompt] | None = None,
    tools: Mapping[str, Tool] | None = None,
    params: SamplingParams = DEFAULT_PARAMS,
    cot_params: SamplingParams | None = None,
    batch_size: int = 8,
    agent_kwargs: Mapping[str, Any] | None = None,
) -> CoAvsCoTReport:
    """Evaluate ``generator`` as a CoA agent and as chain-of-thought on the same ``problems``.

    Prompt functions map the question text to a prompt (default: one user message each, the sandbox format;
    a fine-tuned CoA model and a CoT model would normally share it, a prompted model needs different
    instructions). ``batch_size`` questions are decoded per generator call in both methods; CoT records carry
    ``pred_text``, ``pred_answer``, ``correct`` and ``t_decode_s`` (the batch time split evenly), plus
    ``n_calls = 0``. Problems without a gold answer raise ``ValueError`` (accuracy needs one).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    qs = [as_question(p, i) for i, p in enumerate(problems)]
    nogold = [q["id"] for q in qs if q["gold_answer"] is None]
    if nogold:
        raise ValueError(f"problems {nogold[:3]} have no gold answer (need 'answer', 'gold' or 'gold_answer')")
    cot_prompt_fn = cot_prompt_fn or default_coa_prompt
    cot_params = cot_params or params.model_copy(update={"max_tokens": max(params.max_tokens, 256)})

    agent = CoAAgent(generator, tools, params=params, prompt_fn=coa_prompt_fn, **dict(agent_kwargs or {}))
    start = time.perf_counter()
    coa = agent.answer(qs, decode_batch=batch_size)
    coa_wall = time.perf_counter() - start

    cot: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(0, len(qs), batch_size):
        chunk = qs[i:i + batch_size]
        t0 = time.perf_counter()
        try:
            outs = generator.generate([cot_prompt_fn(q["question"]) for q in chunk], cot_params)
            texts: list[str | None] = [row[0].text if row else None for row in outs]
            err = None
        except Exception as e:  # noqa: BLE001 - a failed batch is recorded, the evaluation goes on
            texts, err = [None] * len(chunk), f"decode failed: {type(e).__name__}: {e}"
        each = (time.perf_counter() - t0) / len(chunk)
        for q, text in zip(chunk, texts, strict=True):
            pred = extract_model_answer(text)
            cot.append({"id": q["id"], "dataset": q["dataset"], "question": q["question"], "pred_text": text,
                        "pred_answer": pred, "gold_answer": q["gold_answer"],
                        "correct": is_correct(pred, q["gold_answer"]), "n_calls": 0, "t_decode_s": each,
                        "t_tools_s": 0.0, "errors": [err] if err else ([] if pred is not None else
                                                                        ["no number in the output"])})
    cot_wall = time.perf_counter() - start
    agent.close()
    return CoAvsCoTReport(summary={"coa": _summary(coa, coa_wall), "cot": _summary(cot, cot_wall)},
                          records={"coa": coa, "cot": cot})
