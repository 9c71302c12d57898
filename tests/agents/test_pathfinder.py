"""PathFinder unit tests on a scripted step model (spec/loops.md §2.6 "without an LLM", §8.3 invariants).

The scripted model reads the partial path from the prompt and emits the next step: a correct equation, or (at set
rates, rising with temperature) a false equation, a repeated step, an empty step, or an over-long step; at depth 3
it writes the answer. Real-model properties (greedy equivalence, self-consistency, backend usage) are in
test_pathfinder_models.py.
"""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from loopwright.agents.pathfinder import (
    BuddyConfig,
    ConstraintsConfig,
    PathFinder,
    PathFinderConfig,
    arithmetic_verifier,
    candidates_from_texts,
    check_step,
    preference_rows,
    select,
    stepwise_rows,
)
from loopwright.agents.pathfinder.config import (
    ContradictionConstraint,
    LengthConstraint,
    RepetitionConstraint,
)
from loopwright.sdk.errors import ConfigError
from loopwright.sdk.generators.scripted import ScriptedGenerator
from loopwright.sdk.judge import Judge
from loopwright.sdk.types import ScoredPath, Verdict

QUESTION = "Tom has 2 apples. He buys 2 more. Then he doubles them. How many apples does Tom have?"


def prompt_fn(q: str) -> str:
    return f"Q: {q}\nA:\n"


class StepModel:
    """respond(prompt_text, k, rng): the next step of a partial solution, with injected faults (recorded)."""

    def __init__(self, p_false: float = 0.25, p_repeat: float = 0.15, fail_on: str | None = None) -> None:
        self.p_false, self.p_repeat, self.fail_on = p_false, p_repeat, fail_on
        self.emitted: list[tuple[str, str]] = []  # (kind, text)

    def __call__(self, text: str, k: int, rng: random.Random) -> str:
        if self.fail_on is not None and self.fail_on in text:
            raise RuntimeError(f"backend down for prefix containing {self.fail_on!r}")
        steps = [s for s in text.split("A:\n", 1)[1].split("\n") if s][:10]
        depth = len(steps)
        u = rng.random()
        if depth >= 3:
            kind, out = "answer", f"#### {8 if u > 0.3 else 9}"
        elif u < self.p_false:
            kind, out = "false", f"{depth + 2}+2=<<{depth + 2}+2={depth + 5}>>{depth + 5}"
        elif u < self.p_false + self.p_repeat and steps:
            kind, out = "repeat", steps[-1]
        else:
            a, op, b, c = [(2, "+", 2, 4), (4, "*", 2, 8), (8, "+", 0, 8)][depth]
            tail = rng.choice(["", " now", " in all", " so far"])
            kind, out = "ok", f"step {depth + 1}: {a}{op}{b}=<<{a}{op}{b}={c}>>{c} apples{tail}"
        self.emitted.append((kind, out))
        return out + "\n"


def make(model: StepModel | None = None, **cfg: object) -> tuple[PathFinder, ScriptedGenerator, StepModel]:
    model = model or StepModel()
    gen = ScriptedGenerator(model)
    base: dict[str, object] = {"branching_factor": 4, "buffer_size": 3, "max_steps": 6, "max_step_tokens": 32,
                               "max_total_tokens": None}
    base.update(cfg)
    return PathFinder(gen, PathFinderConfig(**base), prompt_fn=prompt_fn), gen, model


# ------------------------------------------------------------------------------------------------ constraints


def test_constraints_name_the_violation() -> None:
    cfg = ConstraintsConfig()
    kw = {"n_tokens": 5, "truncated": False, "max_step_tokens": 10}
    assert check_step("3+4=<<3+4=7>>7", [], QUESTION, cfg, **kw) is None
    assert check_step("3+4=<<3+4=8>>8", [], QUESTION, cfg, **kw).startswith("contradiction:false_equation")
    assert check_step("3+4=<<3+4=7>>8", [], QUESTION, cfg, **kw).startswith("contradiction:result_mismatch")
    assert check_step("  ", [], QUESTION, cfg, **kw) == "length:empty"
    assert check_step("a b", [], QUESTION, cfg, n_tokens=5, truncated=True, max_step_tokens=10) == "length:truncated"
    assert check_step("a b", [], QUESTION, cfg, n_tokens=11, truncated=False,
                      max_step_tokens=10).startswith("length:too_long")
    assert check_step("So 2+2=<<2+2=4>>4.", ["so 2+2=<<2+2=4>>4"], QUESTION, cfg, **kw).startswith("repetition:step")
    near = "Tom has 4 apples now because 2 and 2 make 4 apples in total today"
    assert check_step(near + " ok", [near], QUESTION, cfg, **kw).startswith("repetition:step (rougeL")
    assert check_step("He buys 2 more.", [], QUESTION, cfg, **kw) == "repetition:question"
    # an inconsistent re-evaluation is caught even when false equations are allowed
    lenient = ConstraintsConfig(contradiction=ContradictionConstraint(allow_false_equations=True))
    assert check_step("3+4=<<3+4=8>>8", [], QUESTION, lenient, **kw) is None
    assert check_step("3+4=<<3+4=8>>8", ["3+4=<<3+4=7>>7"], QUESTION, lenient,
                      **kw).startswith("contradiction:inconsistent")
    off = ConstraintsConfig(repetition=RepetitionConstraint(enabled=False), length=LengthConstraint(enabled=False))
    assert check_step("He buys 2 more.", [], QUESTION, off, **kw) is None
    assert check_step("3+4=<<3+4=8>>8", [], QUESTION, ConstraintsConfig.none(), **kw) is None
    nli = ConstraintsConfig(contradiction=ContradictionConstraint(checker="nli", tau=0.5))
    assert check_step("x", [], QUESTION, nli, nli=lambda p, h: 0.9, **kw).startswith("contradiction:nli")
    assert check_step("x", [], QUESTION, nli, nli=lambda p, h: 0.1, **kw) is None


def test_arithmetic_verifier() -> None:
    assert arithmetic_verifier("q", "2+2=<<2+2=4>>4\n3*3=<<3*3=9>>9") == 1.0
    assert arithmetic_verifier("q", "2+2=<<2+2=4>>4\n3*3=<<3*3=10>>10") == 0.5
    assert arithmetic_verifier("q", "She pays $<<9*2=18>>18, 1,000 = <<1000/2=500>>500") == 1.0
    assert arithmetic_verifier("q", "no annotations here") is None


# ------------------------------------------------------------------------------------------------ the search


def test_pruning_removes_exactly_the_injected_bad_steps() -> None:
    pf, gen, model = make()
    r = pf.search(QUESTION)
    kinds = collections.Counter(k for k, _ in model.emitted)
    assert kinds["false"] > 0 and kinds["repeat"] > 0
    assert r.pruned.get("contradiction", 0) == kinds["false"]
    assert r.pruned.get("repetition", 0) == kinds["repeat"]
    bad = {t for k, t in model.emitted if k in ("false", "repeat")}
    for d in r.pruned_steps:
        assert d["steps"][-1] in bad, d
    for p in r.paths:  # (c) every finished chain ends with the answer and holds no bad step
        assert p.steps[-1].startswith("####") and p.meta["finish"] == "marker"
        assert p.answer in ("8", "9")
        assert len(set(p.steps)) == len(p.steps) and arithmetic_verifier(QUESTION, "\n".join(p.steps)) == 1.0
    assert r.answer is not None and r.selected == 0
    assert r.budget.generator_calls == len(gen.calls)


def test_beam_never_exceeds_buffer_size_and_is_deterministic() -> None:
    pf, _, _ = make(buffer_size=2, branching_factor=5)
    state = pf.init_state(QUESTION)
    sizes = []
    while not state["stop"]:
        for node in (pf.expand, pf.constrain, pf.score, pf.prune):
            state = {**state, **node(state)}
        sizes.append(len(state["beam"]))
    assert max(sizes) <= 2 and sizes[0] == 2
    a = pf.finalize(state)
    b = make(buffer_size=2, branching_factor=5)[0].search(QUESTION)
    assert a.model_dump() == b.model_dump()
    c = make(buffer_size=2, branching_factor=5, seed=1)[0].search(QUESTION)
    assert [p.steps for p in c.paths] != [p.steps for p in a.paths]


def test_varied_decoding_draws_per_branch_settings() -> None:
    pf, gen, _ = make(branching_factor=6)
    settings_ = pf.branch_settings(QUESTION, 0)
    assert len({lbl for lbl, _ in settings_}) > 1 and len({p.seed for _, p in settings_}) == 6
    pf.search(QUESTION)
    temps = {(c.params.temperature, c.params.top_k, c.params.top_p) for c in gen.calls}
    assert len(temps) > 2
    fixed, _, _ = make(decoding="fixed")
    assert len({lbl for lbl, _ in fixed.branch_settings(QUESTION, 0)}) == 1


def test_budget_matches_backend_usage_and_cap_is_exact() -> None:
    seen: list = []

    class Recording(ScriptedGenerator):
        def generate(self, prompts, params=None):  # type: ignore[override]
            out = super().generate(prompts, params)
            seen.extend(c for row in out for c in row)
            return out

    for cap in (None, 40, 97, 250):
        seen.clear()
        model = StepModel()
        gen = Recording(model)
        pf = PathFinder(gen, PathFinderConfig(branching_factor=3, buffer_size=3, max_steps=6, max_step_tokens=32,
                                              max_total_tokens=cap), prompt_fn=prompt_fn)
        r = pf.search(QUESTION)
        assert r.budget.completion_tokens == sum(c.usage.completion_tokens for c in seen)
        assert r.budget.prompt_tokens == sum(c.usage.prompt_tokens for c in seen)
        assert r.budget.generator_calls == len(gen.calls)
        assert r.step_calls == sum(len(c.prompts) for c in gen.calls)
        if cap is not None:
            assert r.budget.completion_tokens <= cap
    calls_cap = make(max_generator_calls=5)[0].search(QUESTION)
    assert calls_cap.budget.generator_calls <= 5 and calls_cap.stop_reason == "budget"


def test_generator_failure_drops_only_that_branch() -> None:
    # prefixes with a step ending in "now" fail; their siblings survive
    pf, gen, _ = make(StepModel(p_false=0.0, p_repeat=0.0, fail_on="now\n"))
    r = pf.search(QUESTION)
    assert r.failures and all("generator failed: RuntimeError" in f for f in r.failures)
    assert r.pruned["generator"] == len(r.failures)
    assert r.answer is not None
    assert all("now\n" not in "\n".join(p.steps) + "\n" for p in r.paths)
    capped = make(StepModel(p_false=0.0, p_repeat=0.0, fail_on="now\n"), max_generator_calls=7)[0].search(QUESTION)
    assert capped.budget.generator_calls <= 7


def test_every_branch_dying_gives_an_explicit_no_answer() -> None:
    pf, _, _ = make(StepModel(fail_on="Q:"))
    r = pf.search(QUESTION)
    assert r.answer is None and r.paths == [] and r.selected is None
    assert "no finished chain" in r.no_answer_reason and "RuntimeError" in r.no_answer_reason
    assert len(r.failures) == 4  # b = 4 branch calls at the root, each failed
    assert r.budget.completion_tokens == 0

    dead, _, _ = make(StepModel(p_false=1.0))  # every step is a false equation: pruned, never finished
    r = dead.search(QUESTION)
    assert r.answer is None and r.stop_reason == "beam_empty" and r.pruned["contradiction"] == 4
    retry, _, _ = make(StepModel(p_false=1.0), expansion_retries=2)
    r2 = retry.search(QUESTION)
    assert r2.pruned["contradiction"] == 12 and r2.answer is None  # explored twice more, then gave up


def test_graph_equals_plain_search_and_checkpoints(tmp_path) -> None:
    plain = make()[0].search(QUESTION)
    pf, _, _ = make()
    pf_graph = PathFinder(pf.generator, pf.config, prompt_fn=prompt_fn, use_graph=True,
                          checkpoint_path=tmp_path / "pf.sqlite")
    via_graph = pf_graph.search(QUESTION)
    assert via_graph.model_dump() == plain.model_dump()
    history = list(pf_graph._checkpointer.list(None))
    assert len(history) >= 4 * plain.depth
    assert set(pf_graph.graph.get_graph().nodes) >= {"expand", "constrain", "score", "prune"}
    pf_graph.close()


class LengthJudge(Judge):
    """Pointwise judge preferring longer partial solutions; invalid for chains containing 'bad'."""

    kinds = frozenset({"pointwise"})

    def score(self, prompts, responses):  # type: ignore[override]
        return [Verdict(kind="pointwise", valid=False, invalid_reason="refused") if "9" in r else
                Verdict(kind="pointwise", valid=True, score=float(len(r))) for r in responses]


def test_judge_scoring_and_verifier_selection() -> None:
    pf, _, _ = make()
    pf.config = pf.config.model_copy(update={"score": "judge"})
    with pytest.raises(ConfigError, match="judge"):
        PathFinder(pf.generator, pf.config, prompt_fn=prompt_fn)
    r = PathFinder(pf.generator, pf.config, prompt_fn=prompt_fn, judge=LengthJudge()).search(QUESTION)
    assert r.paths and all(p.score == -1e30 for p in r.paths if p.answer == "9")
    assert all(p.score > 0 for p in r.paths if p.answer == "8")
    calls = r.budget.generator_calls
    assert calls > 0
    fn = PathFinder(pf.generator, pf.config, prompt_fn=prompt_fn, judge=lambda q, steps: -len(steps)).search(QUESTION)
    assert fn.answer is not None
    v = PathFinder(pf.generator, pf.config.model_copy(update={"score": "mean_token_logprob", "selector": "verifier"}),
                   prompt_fn=prompt_fn, verifier=lambda q, chain: 1.0 if chain.endswith("9") else 0.0)
    assert v.search(QUESTION).answer == "9"
    vj = PathFinder(pf.generator, pf.config.model_copy(update={"score": "mean_token_logprob", "selector": "verifier"}),
                    prompt_fn=prompt_fn, verifier=LengthJudge()).search(QUESTION)
    assert vj.answer == "8"  # the judge refuses every '9' chain: they are not eligible


def test_config_misuse_raises_at_construction() -> None:
    gen = ScriptedGenerator(["x"])
    with pytest.raises(ValidationError, match="max_total_tokens"):
        PathFinderConfig(max_total_tokens=10, max_step_tokens=96)
    with pytest.raises(ValidationError):
        PathFinderConfig(branching_factor=0)
    with pytest.raises(ValidationError, match="temperature"):
        PathFinderConfig(decoding_grid={"temperature": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="verifier"):
        PathFinder(gen, PathFinderConfig(selector="verifier"), prompt_fn=prompt_fn)
    with pytest.raises(ConfigError, match="nli"):
        PathFinder(gen, PathFinderConfig(constraints=ConstraintsConfig(
            contradiction=ContradictionConstraint(checker="nli"))), prompt_fn=prompt_fn)
    with pytest.raises(ConfigError, match="render"):
        PathFinder(gen, PathFinderConfig())  # chat prompts, and a backend that cannot render them
    with pytest.raises(TypeError, match="Generator"):
        PathFinder("not a generator")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ selection


answers = st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3", "4"])), min_size=1, max_size=9)


@settings(max_examples=200, deadline=None)
@given(answers=answers, scores=st.lists(st.floats(-5, 0), min_size=9, max_size=9), tie=st.sampled_from(["score",
                                                                                                        "first"]))
def test_buddy_with_answer_equality_is_majority_vote(answers, scores, tie) -> None:
    cands = [ScoredPath(steps=[f"s{i}"], score=scores[i], answer=a) for i, a in enumerate(answers)]
    vote = select(cands, PathFinderConfig(selector="vote", tie_break=tie))
    buddy = select(cands, PathFinderConfig(selector="buddy", tie_break=tie))
    assert vote.answer == buddy.answer
    given_answers = [a for a in answers if a is not None]
    if not given_answers:
        assert vote.answer is None and "no eligible candidate" in vote.reason
        return
    counts = collections.Counter(given_answers)
    assert counts[vote.answer] == max(counts.values())
    if tie == "first":  # exactly Counter.most_common self-consistency
        assert vote.answer == counts.most_common(1)[0][0]


def test_other_selectors() -> None:
    cands = candidates_from_texts(["a\n#### 3", "b\n#### 4", "c\n#### 4", "no number"], scores=[-0.1, -0.5, -0.4, 0])
    assert select(cands, selector="max_likelihood").answer == "3"
    assert select(cands, selector="vote").index == 2  # the better-scored member of the winning group
    assert select(cands, PathFinderConfig(vote_weight="score"), selector="vote").answer == "4"
    r1 = select(cands, selector="random", question="q")
    assert r1.index in (0, 1, 2) and r1 == select(cands, selector="random", question="q")
    jac = select(cands, PathFinderConfig(selector="buddy", buddy=BuddyConfig(sim="jaccard", aggregate="count",
                                                                             tau=0.3)))
    assert jac.index in (0, 1, 2)
    assert select([], selector="vote").reason == "no finished candidate"
    with pytest.raises(ValueError, match="verifier"):
        select(cands, selector="verifier")


# ------------------------------------------------------------------------------------------------ exports


def test_exports_to_trl_formats() -> None:
    r = make()[0].search(QUESTION)
    answers = {p.answer for p in r.paths}
    assert answers == {"8", "9"}
    rows = preference_rows(r, gold=8, max_pairs=None)
    n8 = sum(p.answer == "8" for p in r.paths)
    assert len(rows) == n8 * (len(r.paths) - n8)
    for row in rows:
        assert row["prompt"] == [{"role": "user", "content": QUESTION}]
        assert row["chosen"][0]["role"] == "assistant" and row["chosen"][0]["content"].endswith("#### 8")
        assert row["rejected"][0]["content"].endswith("#### 9")
    assert len(preference_rows(r, gold=8)) <= 4
    plain = preference_rows(r, gold=8, conversational=False, prompt_fn=prompt_fn)
    assert plain[0]["prompt"] == prompt_fn(QUESTION) and isinstance(plain[0]["chosen"], str)
    assert preference_rows(r, gold=5) == []  # nothing correct: no pair

    steps = stepwise_rows(r, gold="8")
    for row in steps:
        assert set(row) >= {"prompt", "completions", "labels"}
        assert len(row["completions"]) == len(row["labels"])
        if row["source"] == "finished":
            assert row["labels"][-1] == (row["answer"] == "8")
        else:
            assert row["labels"][-1] is False
    good = [row for row in steps if row["source"] == "finished" and row["answer"] == "8"]
    assert good and all(all(row["labels"]) for row in good)
    assert any(row["source"].startswith("pruned:contradiction") for row in steps)
    import datasets

    ds = datasets.Dataset.from_list([{k: row[k] for k in ("prompt", "completions", "labels")} for row in steps])
    assert ds.features["labels"].feature.dtype == "bool"


def test_min_step_score_prunes_low_scored_paths_and_counts_them() -> None:
    """A process-reward threshold: every path the step scorer rejects is pruned (``low_score``) and never becomes
    a candidate; without the threshold the same paths are only ranked last."""
    pf, _, _ = make()
    cfg = pf.config.model_copy(update={"score": "judge"})

    def scorer(question, steps):
        return 0.0 if "9" in "".join(steps) else 1.0

    ranked = PathFinder(pf.generator, cfg, prompt_fn=prompt_fn, judge=scorer).search(QUESTION)
    assert any(p.answer == "9" for p in ranked.paths) and "low_score" not in ranked.pruned
    pruned = PathFinder(pf.generator, cfg.model_copy(update={"min_step_score": 0.5}), prompt_fn=prompt_fn,
                        judge=scorer).search(QUESTION)
    assert pruned.pruned.get("low_score", 0) > 0
    assert pruned.paths and all(p.answer != "9" and p.score >= 0.5 for p in pruned.paths)
