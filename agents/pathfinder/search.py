"""PathFinder: step-level beam search over reasoning steps (Golovneva et al., arXiv 2312.05180; spec/loops.md §2).

One search answers one question in two stages (spec §2.1): **candidate generation** — a beam of at most B partial
paths; every path is extended by b branches, each sampling one step (text up to ``step_delimiter``) with its own
seeded sampling setting (method and parameter drawn from ``decoding_grid``, "dynamic decoding"); new steps go
through the quality constraints (``constraints.py``), are scored (length-normalised log-likelihood of the path,
or a Judge / callable), finished chains (an answer marker, or the end of the text) leave the beam, the rest are
deduplicated and pruned to the top B — then **candidate selection** (``selection.py``).

The four stages are the node functions :meth:`PathFinder.expand`, :meth:`~PathFinder.constrain`,
:meth:`~PathFinder.score` and :meth:`~PathFinder.prune` over a small JSON-able state; :meth:`PathFinder.search`
runs them in a plain loop and ``graph.py`` wires the same functions as a LangGraph graph, so both give the same
result for the same seed.

Calls: at every depth, branch slot ``j`` is one ``generate`` call over all beam paths (one row each, best-scored
first) with that slot's sampling setting and seed ``hash(seed, question, depth, j)`` (backends derive each row's
sample from that seed and the row's prompt). Budget (:class:`~loopwright.sdk.types.Budget`): ``generator_calls``
counts ``generate`` calls (failed attempts included), ``prompt_tokens`` / ``completion_tokens`` are the sums of
the backend's own ``Completion.usage``; the caps of :class:`PathFinderConfig` are never exceeded.

Bad input is data: a generator exception drops the branches of that call (after retrying each row alone, so only
the failing rows are lost) with the reason in ``failures``; a search whose every branch dies returns
``answer=None`` with ``no_answer_reason`` — never an exception out of :meth:`search`.
"""

from __future__ import annotations

import math
import random
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from ...sdk.errors import ConfigError
from ...sdk.generator import Generator
from ...sdk.judge import Judge
from ...sdk.searcher import Searcher
from ...sdk.stages import sqlite_checkpointer
from ...sdk.tasks.gsm8k import extract_model_answer
from ...sdk.types import Completion, Prompt, SamplingParams, ScoredPath, SearchResult, Usage, stable_hash
from .config import PathFinderConfig
from .constraints import NLIFn, check_step, normalize_step
from .selection import Selection, VerifierFn, chain_text, select

__all__ = ["PathFinder", "PathFinderResult", "StepScorer", "default_prompt", "question_of"]

StepScorer = Callable[[str, list[str]], "float | None"]
"""``scorer(question, steps_so_far) -> score`` (higher is better) or ``None`` when it cannot score the path."""

NEG = -1e30
"""Score of a path whose judge verdict was invalid: ranked last, never silently averaged in."""


def default_prompt(question: str) -> Prompt:
    """One user message holding the question (the sandbox chat format, ``trainers/sandbox/seed.miniarith_prompt``)."""
    return [{"role": "user", "content": question}]


def question_of(problem: Any) -> str:
    """The question text of a string, a MiniArith / GSM8K problem or a mapping with ``question``."""
    if isinstance(problem, str):
        return problem
    q = problem.get("question") if isinstance(problem, Mapping) else getattr(problem, "question", None)
    if not isinstance(q, str):
        raise TypeError(f"problem {problem!r:.80} has no 'question' string; pass a str, a MiniArith/GSM8K problem "
                        "or a dict with 'question'")
    return q


class PathFinderResult(SearchResult):
    """A :class:`SearchResult` (ranked finished paths, chosen answer, budget) plus the search's own record.

    ``paths`` are the finished candidates, the chosen one first, then by selection score; each path's ``meta``
    holds ``finish`` ("marker" / "eos"), per-step sampling ``params``, ``n_tokens``, ``depth`` and
    ``selection_score``. ``answer is None`` means "no answer" and ``no_answer_reason`` says why.
    """

    question: str
    selector: str
    selected: int | None = None
    """Index of the chosen path in ``paths`` (0 when there is one), ``None`` without an answer."""
    no_answer_reason: str | None = None
    stop_reason: str = ""
    depth: int = 0
    step_calls: int = 0
    """Rows generated (one per attempted branch)."""
    failed_calls: int = 0
    score_calls: int = 0
    judge_usage: Usage = Field(default_factory=Usage)
    pruned: dict[str, int] = Field(default_factory=dict)
    """Dropped steps per reason family: length, repetition, contradiction, duplicate, beam, generator, score."""
    pruned_steps: list[dict[str, Any]] = Field(default_factory=list)
    """``{"steps": path + [dropped step], "reason"}`` for steps dropped by a constraint (stepwise export)."""
    failures: list[str] = Field(default_factory=list)

    @property
    def chosen(self) -> ScoredPath | None:
        return None if self.selected is None else self.paths[self.selected]


def _new_node(steps: list[str], lp_sum: float, n_tok: int, params: list[str]) -> dict[str, Any]:
    return {"steps": steps, "lp_sum": lp_sum, "n_tok": n_tok, "score": 0.0, "params": params,
            "done": False, "finish": None, "answer": None}


class PathFinder(Searcher):
    """Step-level beam search with varied per-branch decoding, constraints, pruning, scoring and selection.

    Args:
        generator: any :class:`~loopwright.sdk.generator.Generator`.
        config: :class:`PathFinderConfig` (defaults: spec Appendix A.2).
        prompt_fn: question -> prompt (default: one user message, the sandbox chat format).
        render: prompt -> the exact text the model sees, so partial paths can be continued as raw text. Default:
            the generator's ``render`` (TransformersGenerator) or its tokenizer's chat template (VLLMGenerator);
            string prompts are used as they are. Needed for chat prompts on backends without either
            (OpenAIGenerator: render with the served model's tokenizer).
        judge: step scorer for ``config.score == "judge"``: a pointwise :class:`~loopwright.sdk.judge.Judge`
            (called with the question and the path so far) or ``fn(question, steps) -> float | None``.
        verifier: for ``selector == "verifier"``: a pointwise Judge or ``fn(question, chain) -> float | None``.
        nli: ``fn(premise, hypothesis) -> P(contradiction)`` for ``contradiction.checker == "nli"``.
        use_graph: run :meth:`search` through the LangGraph graph (``graph.py``) instead of the plain loop.
        checkpoint_path / checkpointer: the graph's checkpointer (SQLite file, or any LangGraph saver;
            default in memory).
    """

    def __init__(
        self,
        generator: Generator,
        config: PathFinderConfig | None = None,
        *,
        prompt_fn: Callable[[str], Prompt] | None = None,
        render: Callable[[Prompt], str] | None = None,
        judge: Judge | StepScorer | None = None,
        verifier: Judge | VerifierFn | None = None,
        nli: NLIFn | None = None,
        use_graph: bool = False,
        checkpoint_path: str | Path | None = None,
        checkpointer: Any = None,
    ) -> None:
        if not isinstance(generator, Generator):
            raise TypeError(f"generator={generator!r:.80} is not a loopwright Generator; wrap your model in "
                            "TransformersGenerator / VLLMGenerator / OpenAIGenerator")
        cfg = config or PathFinderConfig()
        if not isinstance(cfg, PathFinderConfig):
            raise TypeError(f"config must be a PathFinderConfig, got {type(cfg).__name__}")
        if cfg.score == "judge" and judge is None:
            raise ConfigError("config.score='judge' needs PathFinder(judge=...): a pointwise Judge or "
                              "fn(question, steps) -> float")
        if isinstance(judge, Judge) and "pointwise" not in judge.kinds:
            raise ConfigError(f"judge {judge!r:.60} is not pointwise (kinds={sorted(judge.kinds)}); step scoring "
                              "needs Judge.score")
        if cfg.selector == "verifier" and verifier is None:
            raise ConfigError("config.selector='verifier' needs PathFinder(verifier=...): a pointwise Judge or "
                              "fn(question, chain) -> float")
        con = cfg.constraints
        if con.enabled and con.contradiction.enabled and con.contradiction.checker == "nli" and nli is None:
            raise ConfigError("constraints.contradiction.checker='nli' needs PathFinder(nli=fn) with "
                              "fn(premise, hypothesis) -> P(contradiction); or use checker='symbolic'")
        if cfg.score != "judge" and cfg.score_source == "score" and not generator.supports_score:
            raise ConfigError(f"score_source='score' but {type(generator).__name__} cannot score "
                              "(supports_score=False); use score_source='logprobs'")
        if cfg.score != "judge" and cfg.score_source == "logprobs" and not generator.supports_logprobs:
            raise ConfigError(f"score_source='logprobs' but {type(generator).__name__} returns no logprobs; "
                              "use score_source='score'")
        self.generator = generator
        self.config = cfg
        self.prompt_fn = prompt_fn or default_prompt
        self.render = render or _default_render(generator)
        probe = self.prompt_fn("probe question")
        if not isinstance(probe, str) and self.render is None:
            raise ConfigError(f"{type(generator).__name__} cannot render chat prompts to text (no render() and no "
                              "tokenizer chat template), which PathFinder needs to continue partial paths; pass "
                              "render=fn or a prompt_fn that returns a string")
        self.judge = judge
        self.verifier = verifier
        self.nli = nli
        self.use_graph = use_graph
        self._conn: sqlite3.Connection | None = None
        if checkpointer is None and checkpoint_path is not None:
            checkpointer, self._conn = sqlite_checkpointer(checkpoint_path)
        self._checkpointer = checkpointer
        self._graph: Any = None

    # ------------------------------------------------------------------------------------------- public

    def search(self, problem: Any) -> PathFinderResult:
        """Search one problem (a question string, a MiniArith / GSM8K problem or a dict with ``question``)."""
        if self.use_graph:
            from .graph import run_graph

            return run_graph(self, problem)
        state = self.init_state(problem)
        while True:
            for node in (self.expand, self.constrain, self.score, self.prune):
                state = {**state, **node(state)}
            if state["stop"]:
                break
        return self.finalize(state)

    def search_many(self, problems: Sequence[Any]) -> list[PathFinderResult]:
        """:meth:`search` for each problem, in order."""
        return [self.search(p) for p in problems]

    def select(self, candidates: Sequence[ScoredPath], question: str = "") -> Selection:
        """Run this searcher's selector over any candidates (e.g. independent samples: self-consistency)."""
        return select(candidates, self.config, question=question, verifier=self.verifier)

    @property
    def graph(self) -> Any:
        """The compiled LangGraph graph (expand -> constrain -> score -> prune, looping; then select)."""
        if self._graph is None:
            from .graph import build_graph

            self._graph = build_graph(self, self._checkpointer)
        return self._graph

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------------------------------- state

    def init_state(self, problem: Any) -> dict[str, Any]:
        """The search state of a fresh problem (small JSON-able values only)."""
        question = question_of(problem)
        prompt = self.prompt_fn(question)
        try:
            prompt_text = prompt if isinstance(prompt, str) else self.render(prompt)  # type: ignore[misc]
            init_fail: list[str] = []
        except Exception as e:  # noqa: BLE001 - a prompt that cannot be rendered is a "no answer", not a crash
            prompt_text, init_fail = "", [f"render failed: {type(e).__name__}: {e}"]
        return {
            "question": question, "prompt_text": prompt_text, "depth": 0,
            "beam": [] if init_fail else [_new_node([], 0.0, 0, [])],
            "children": [], "finished": [], "pruned": {}, "pruned_steps": [], "failures": init_fail,
            "budget": {"generator_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "step_calls": 0,
                       "failed_calls": 0, "score_calls": 0, "judge_prompt_tokens": 0, "judge_completion_tokens": 0},
            "stop": "render_failed" if init_fail else None, "exhausted": False, "attempt": 0,
        }

    def branch_settings(self, question: str, depth: int, attempt: int = 0) -> list[tuple[str, SamplingParams]]:
        """The b (label, sampling params) pairs of one depth (and retry ``attempt``): drawn from the grid with a
        seeded RNG, or fixed; every slot gets its own seed."""
        cfg = self.config
        out: list[tuple[str, SamplingParams]] = []
        tag = [cfg.seed, question, depth] + ([attempt] if attempt else [])
        rng = random.Random(stable_hash([*tag, "decoding"]))
        base = {"max_tokens": cfg.max_step_tokens, "stop": (cfg.step_delimiter,),
                "logprobs": 0 if cfg.score_source == "logprobs" and cfg.score != "judge" else None}
        for j in range(cfg.branching_factor):
            seed = int(stable_hash([*tag, j], length=12), 16)
            if cfg.decoding == "fixed":
                f = cfg.fixed_sampling
                label = "greedy" if f.temperature == 0 else f"T={f.temperature},k={f.top_k},p={f.top_p}"
                params = SamplingParams(temperature=f.temperature, top_k=f.top_k, top_p=f.top_p, seed=seed, **base)
            else:
                g = cfg.decoding_grid
                method = rng.choice(g.method)
                if method == "temperature":
                    t = rng.choice(g.temperature)
                    label, params = f"T={t}", SamplingParams(temperature=t, seed=seed, **base)
                elif method == "top_k":
                    k = rng.choice(g.top_k)
                    label, params = f"top_k={k}", SamplingParams(temperature=1.0, top_k=k, seed=seed, **base)
                else:
                    p = rng.choice(g.top_p)
                    label, params = f"top_p={p}", SamplingParams(temperature=1.0, top_p=p, seed=seed, **base)
            out.append((label, params))
        return out

    def prefix(self, state: Mapping[str, Any], steps: Sequence[str]) -> str:
        """The raw text the model continues: the rendered prompt, then each step and its delimiter."""
        d = self.config.step_delimiter
        return state["prompt_text"] + "".join(s + d for s in steps)

    # ------------------------------------------------------------------------------------------- nodes

    def expand(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Sample one step per (beam path, branch slot); generator failures drop only their rows."""
        cfg = self.config
        budget = dict(state["budget"])
        failures = list(state["failures"])
        pruned = dict(state["pruned"])
        beam = sorted(state["beam"], key=lambda n: -n["score"])  # stable: the best paths get rows first
        children: list[dict[str, Any]] = []
        exhausted = state["exhausted"]
        for label, params in self.branch_settings(state["question"], state["depth"], state["attempt"]):
            parents = beam
            if cfg.max_generator_calls is not None and budget["generator_calls"] >= cfg.max_generator_calls:
                exhausted = True
                break
            if cfg.max_total_tokens is not None:
                rows = (cfg.max_total_tokens - budget["completion_tokens"]) // cfg.max_step_tokens
                if rows < 1:
                    exhausted = True
                    break
                parents = parents[:rows]  # the best-scored paths first; the rest wait for budget that is not there
            prompts = [self.prefix(state, p["steps"]) for p in parents]
            outs = self._generate(prompts, params, budget, failures, pruned, label)
            for parent, comp in zip(parents, outs, strict=True):
                if comp is None:
                    continue
                child = _new_node(list(parent["steps"]) + [comp.text], parent["lp_sum"], parent["n_tok"],
                                  list(parent["params"]) + [label])
                child["step_tokens"] = len(comp.token_ids) or comp.usage.completion_tokens
                child["step_lp"] = None if comp.logprobs is None else float(sum(comp.logprobs))
                child["truncated"] = comp.finish_reason == "length"
                child["ended"] = comp.finish_reason == "stop" and comp.stop_reason != cfg.step_delimiter
                children.append(child)
        return {"children": children, "budget": budget, "failures": failures, "pruned": pruned,
                "exhausted": exhausted}

    def constrain(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Drop children whose new step violates a constraint; count the reasons per constraint."""
        cfg = self.config
        pruned = dict(state["pruned"])
        pruned_steps = list(state["pruned_steps"])
        kept = []
        for c in state["children"]:
            *prior, step = c["steps"]
            try:
                reason = check_step(step, prior, state["question"], cfg.constraints, n_tokens=c["step_tokens"],
                                    truncated=c["truncated"], max_step_tokens=cfg.max_step_tokens, nli=self.nli)
            except Exception as e:  # noqa: BLE001 - a failing checker (e.g. an NLI model) drops the step, visibly
                reason = f"constraint_error:{type(e).__name__}: {e}"
            if reason is None:
                kept.append(c)
            else:
                family = reason.split(":", 1)[0]
                pruned[family] = pruned.get(family, 0) + 1
                pruned_steps.append({"steps": list(c["steps"]), "reason": reason})
        return {"children": kept, "pruned": pruned, "pruned_steps": pruned_steps}

    def score(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Score each child's path: mean (or summed) token log-probability, or the judge / callable."""
        cfg = self.config
        budget = dict(state["budget"])
        failures = list(state["failures"])
        pruned = dict(state["pruned"])
        children = [dict(c) for c in state["children"]]
        if cfg.score == "judge":
            self._judge_scores(state["question"], children, budget, failures)
            if cfg.min_step_score is not None:
                low = [c for c in children if c["score"] < cfg.min_step_score]
                if low:
                    pruned["low_score"] = pruned.get("low_score", 0) + len(low)
                    children = [c for c in children if c["score"] >= cfg.min_step_score]
        else:
            need = [c for c in children if cfg.score_source == "score" or c["step_lp"] is None]
            if need:
                budget["score_calls"] += 1
                try:
                    lps = self.generator.score_many([self.prefix(state, c["steps"][:-1]) for c in need],
                                                    [c["steps"][-1] for c in need])
                    for c, lp in zip(need, lps, strict=True):
                        c["step_lp"] = float(lp)
                except Exception as e:  # noqa: BLE001 - unscorable branches are dropped with the reason
                    failures.append(f"depth {state['depth']}: score failed for {len(need)} branch(es): "
                                    f"{type(e).__name__}: {e}")
            ok = []
            for c in children:
                if c["step_lp"] is None or not math.isfinite(c["step_lp"]):
                    pruned["score"] = pruned.get("score", 0) + 1
                    continue
                c["lp_sum"] = c["lp_sum"] + c["step_lp"]
                c["n_tok"] = c["n_tok"] + c["step_tokens"]
                c["score"] = c["lp_sum"] / max(c["n_tok"], 1) if cfg.score == "mean_token_logprob" else c["lp_sum"]
                ok.append(c)
            children = ok
        for c in children:
            text = chain_text(c["steps"], cfg.step_delimiter)
            if any(m in c["steps"][-1] for m in cfg.answer_markers):
                c["done"], c["finish"] = True, "marker"
            elif c["ended"]:
                c["done"], c["finish"] = True, "eos"
            if c["done"]:
                c["answer"] = extract_model_answer(text)
        return {"children": children, "budget": budget, "failures": failures, "pruned": pruned}

    def prune(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Finished chains leave the beam; the rest are deduplicated and cut to the top B; decide whether to stop."""
        cfg = self.config
        pruned = dict(state["pruned"])
        finished = list(state["finished"]) + [c for c in state["children"] if c["done"]]
        partial = [c for c in state["children"] if not c["done"]]
        if cfg.dedup:
            best: dict[tuple[str, ...], dict[str, Any]] = {}
            for c in partial:
                key = tuple(normalize_step(s) for s in c["steps"])
                if key not in best or c["score"] > best[key]["score"]:
                    best[key] = c
            n_dup = len(partial) - len(best)
            if n_dup:
                pruned["duplicate"] = pruned.get("duplicate", 0) + n_dup
            partial = [c for c in partial if best[tuple(normalize_step(s) for s in c["steps"])] is c]
        ranked = sorted(range(len(partial)), key=lambda i: (-partial[i]["score"], i))
        beam = [partial[i] for i in ranked[:cfg.buffer_size]]
        if len(partial) > cfg.buffer_size:
            pruned["beam"] = pruned.get("beam", 0) + len(partial) - cfg.buffer_size
        depth, attempt = state["depth"] + 1, 0
        if (not state["children"] and state["beam"] and state["attempt"] < cfg.expansion_retries
                and not state["exhausted"]):
            beam, depth, attempt = state["beam"], state["depth"], state["attempt"] + 1  # every child died: explore
        stop = None
        if cfg.max_candidates is not None and len(finished) >= cfg.max_candidates:
            stop = "max_candidates"
        elif state["exhausted"]:
            stop = "budget"
        elif not beam:
            stop = "beam_empty"
        elif depth >= cfg.max_steps:
            stop = "max_steps"
        return {"finished": finished, "beam": beam, "children": [], "pruned": pruned, "depth": depth, "stop": stop,
                "attempt": attempt}

    def finalize(self, state: Mapping[str, Any]) -> PathFinderResult:
        """Candidate selection over the finished chains, and the result record."""
        cfg = self.config
        cands = [ScoredPath(steps=list(c["steps"]), score=float(c["score"]), answer=c["answer"],
                            meta={"finish": c["finish"], "params": list(c["params"]), "n_tokens": c["n_tok"],
                                  "depth": len(c["steps"])})
                 for c in state["finished"]]
        sel = select(cands, cfg, question=state["question"], verifier=self.verifier)
        for i, c in enumerate(cands):
            c.meta["selection_score"] = sel.scores[i] if i < len(sel.scores) else None
            if i in sel.invalid:
                c.meta["selection_invalid"] = sel.invalid[i]
        order = list(range(len(cands)))
        key = [s if s is not None else -math.inf for s in (sel.scores or [None] * len(cands))]
        order.sort(key=lambda i: (i != sel.index, -key[i], -cands[i].score, i))
        paths = [cands[i] for i in order]
        b = state["budget"]
        reason = None
        if sel.index is None:
            fails = state["failures"]
            if not cands:
                why = f"no finished chain (search stopped: {state['stop']})"
                if fails:
                    why += f"; failures: {'; '.join(fails[:5])}"
                if state["pruned"]:
                    why += f"; pruned: {dict(sorted(state['pruned'].items()))}"
                reason = why
            else:
                reason = sel.reason or "no candidate selected"
        return PathFinderResult(
            paths=paths, answer=sel.answer, question=state["question"], selector=sel.selector,
            selected=0 if sel.index is not None else None, no_answer_reason=reason, stop_reason=state["stop"] or "",
            depth=state["depth"],
            budget={"generator_calls": b["generator_calls"], "prompt_tokens": b["prompt_tokens"],
                    "completion_tokens": b["completion_tokens"]},
            step_calls=b["step_calls"], failed_calls=b["failed_calls"], score_calls=b["score_calls"],
            judge_usage=Usage(prompt_tokens=b["judge_prompt_tokens"], completion_tokens=b["judge_completion_tokens"]),
            pruned=dict(state["pruned"]), pruned_steps=list(state["pruned_steps"]), failures=list(state["failures"]),
        )

    # ------------------------------------------------------------------------------------------- helpers

    def _generate(self, prompts: list[str], params: SamplingParams, budget: dict[str, int], failures: list[str],
                  pruned: dict[str, int], label: str) -> list[Completion | None]:
        """One call; on an exception, each row alone; ``None`` for rows that still fail (counted and recorded)."""
        if not prompts:
            return []

        def call(ps: list[str]) -> list[Completion]:
            budget["generator_calls"] += 1
            budget["step_calls"] += len(ps)
            try:
                out = self.generator.generate(ps, params)
                if len(out) != len(ps) or any(len(r) < 1 for r in out):
                    raise RuntimeError(f"generator returned {len(out)} rows for {len(ps)} prompts")
            except Exception:
                budget["failed_calls"] += 1
                raise
            for row in out:
                for c in row:
                    budget["prompt_tokens"] += c.usage.prompt_tokens
                    budget["completion_tokens"] += c.usage.completion_tokens
            return [row[0] for row in out]

        try:
            return list(call(prompts))
        except Exception as e:  # noqa: BLE001 - retried row by row below
            first = e
        results: list[Completion | None] = []
        if len(prompts) == 1:
            failures.append(f"branch {label}: generator failed: {type(first).__name__}: {first}")
            pruned["generator"] = pruned.get("generator", 0) + 1
            return [None]
        cap = self.config.max_generator_calls
        for p in prompts:
            if cap is not None and budget["generator_calls"] >= cap:  # retries never break the call cap
                failures.append(f"branch {label}: not retried: generator call cap {cap} reached")
                pruned["generator"] = pruned.get("generator", 0) + 1
                results.append(None)
                continue
            try:
                results.append(call([p])[0])
            except Exception as e:  # noqa: BLE001 - this branch dies, the others go on
                failures.append(f"branch {label}: generator failed: {type(e).__name__}: {e}")
                pruned["generator"] = pruned.get("generator", 0) + 1
                results.append(None)
        return results

    def _judge_scores(self, question: str, children: list[dict[str, Any]], budget: dict[str, int],
                      failures: list[str]) -> None:
        if not children:
            return
        judge = self.judge
        d = self.config.step_delimiter
        if isinstance(judge, Judge):
            try:
                verdicts = judge.score([question] * len(children), [chain_text(c["steps"], d) for c in children])
            except Exception as e:  # noqa: BLE001
                failures.append(f"judge failed: {type(e).__name__}: {e}")
                verdicts = [None] * len(children)
            for c, v in zip(children, verdicts, strict=True):
                if v is not None:
                    budget["judge_prompt_tokens"] += v.usage.prompt_tokens
                    budget["judge_completion_tokens"] += v.usage.completion_tokens
                ok = v is not None and v.valid and v.score is not None
                c["score"] = float(v.score) if ok else NEG  # type: ignore[union-attr, arg-type]
                c["judge_invalid"] = None if ok else (v.invalid_reason if v is not None else "judge failed")
        else:
            for c in children:
                try:
                    s = judge(question, list(c["steps"]))  # type: ignore[misc]
                except Exception as e:  # noqa: BLE001
                    s = None
                    failures.append(f"step scorer failed: {type(e).__name__}: {e}")
                ok = s is not None and math.isfinite(float(s))
                c["score"] = float(s) if ok else NEG  # type: ignore[arg-type]
                c["judge_invalid"] = None if ok else "step scorer returned no score"
        for c in children:
            c["n_tok"] = c["n_tok"] + c["step_tokens"]


def _default_render(generator: Generator) -> Callable[[Prompt], str] | None:
    render = getattr(generator, "render", None)
    if callable(render):
        return render
    tok = getattr(generator, "tokenizer", None)
    if tok is not None and getattr(tok, "chat_template", None):
        from ...sdk.types import normalize_prompt

        def _render(prompt: Prompt) -> str:
            p = normalize_prompt(prompt)
            if isinstance(p, str):
                return p
            return tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)

        return _render
    return None
