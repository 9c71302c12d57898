"""PathFinder configuration (spec/loops.md Appendix A.2), a pydantic model whose fields are the YAML keys.

Provenance of the defaults (tags as in spec/loops.md): every number is **[R]** (reconstructed, the paper —
Golovneva et al., arXiv 2312.05180 — gives no released code or table of hyper-parameters) except where noted:

- ``branching_factor=8``, ``buffer_size=8``, ``max_steps=10``, ``max_step_tokens=96``, ``max_total_tokens=2048``,
  the decoding grid, the answer markers and the repetition threshold 0.9: Appendix A.2 [R];
- per-branch variation of the sampling method and its parameters ("dynamic decoding"): the paper's abstract [V
  concept], the grid values [R];
- ``score="mean_token_logprob"`` (length-normalised likelihood used to keep the top-B partial paths): a citing
  paper's description of PathFinder [S];
- ``contradiction.checker="symbolic"``: A.2 lists ``"nli" | "symbolic"``; symbolic is the default here because the
  sandbox task (MiniArith, GSM8K-style ``<<expr=result>>`` annotations) is checkable without an NLI model;
- ``selector="buddy"`` with ``sim="answer_eq"``: A.2 lists ``"buddy"`` first; with answer equality buddy voting is
  majority vote (self-consistency) with likelihood tie-breaks (spec §2.4).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BuddyConfig",
    "ConstraintsConfig",
    "ContradictionConstraint",
    "DecodingGrid",
    "FixedSampling",
    "LengthConstraint",
    "PathFinderConfig",
    "RepetitionConstraint",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class DecodingGrid(BaseModel):
    """Per-branch sampling settings are drawn from this grid (seeded): a method, then its parameter.

    ``temperature`` branches sample at a grid temperature; ``top_k`` / ``top_p`` branches sample at temperature 1.0
    with a grid k / p. Values: Appendix A.2 [R].
    """

    model_config = _FROZEN

    method: tuple[Literal["temperature", "top_k", "top_p"], ...] = ("temperature", "top_k", "top_p")
    temperature: tuple[float, ...] = (0.5, 0.7, 1.0, 1.2)
    top_k: tuple[int, ...] = (10, 40, 100)
    top_p: tuple[float, ...] = (0.8, 0.9, 0.95, 1.0)

    @model_validator(mode="after")
    def _check(self) -> DecodingGrid:
        for name in ("method", "temperature", "top_k", "top_p"):
            if not getattr(self, name):
                raise ValueError(f"decoding_grid.{name} is empty; give at least one value")
        if any(t <= 0 for t in self.temperature):
            raise ValueError(f"decoding_grid.temperature={self.temperature}: sampling temperatures must be > 0 "
                             "(use decoding='fixed' with fixed_sampling.temperature=0 for greedy steps)")
        if any(k < 1 for k in self.top_k):
            raise ValueError(f"decoding_grid.top_k={self.top_k}: every k must be >= 1")
        if any(not 0 < p <= 1 for p in self.top_p):
            raise ValueError(f"decoding_grid.top_p={self.top_p}: every p must be in (0, 1]")
        return self


class FixedSampling(BaseModel):
    """The one sampling setting of every branch when ``decoding="fixed"`` (the "fixed vs varied" ablation, §2.5).

    ``temperature=0`` makes every step greedy (then a parent's branches are identical and deduplicated).
    """

    model_config = _FROZEN

    temperature: float = Field(0.7, ge=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)


class RepetitionConstraint(BaseModel):
    """Drop a step equal to, or at least ``tau`` similar to, an earlier step of its path, or one that repeats the
    question (or one of its sentences) verbatim. Metric ``rougeL`` (LCS F-measure) / ``jaccard`` (token sets) /
    ``exact`` over word-and-symbol tokens; ``tau=0.9``: A.2 [R]."""

    model_config = _FROZEN

    enabled: bool = True
    metric: Literal["rougeL", "jaccard", "exact"] = "rougeL"
    tau: float = Field(0.9, gt=0.0, le=1.0)
    check_question: bool = True


class ContradictionConstraint(BaseModel):
    """Drop a step that contradicts arithmetic or an earlier step (spec §2.3).

    ``symbolic``: a ``<<expr=result>>`` annotation whose expression does not evaluate to ``result`` (exact
    arithmetic, ``tools.calculator``), a visible result that differs from its annotation (``<<2+3=5>>6``), or an
    expression already evaluated to a different value earlier in the path. ``allow_false_equations=True`` keeps
    false equations (when arithmetic errors are being studied) but still drops inconsistencies between steps.
    ``nli``: ``PathFinder(nli=fn)`` with ``fn(premise, hypothesis) -> P(contradiction)``; drop at ``>= tau`` (A.2 [R]).
    """

    model_config = _FROZEN

    enabled: bool = True
    checker: Literal["symbolic", "nli"] = "symbolic"
    tau: float = Field(0.5, gt=0.0, le=1.0)
    allow_false_equations: bool = False


class LengthConstraint(BaseModel):
    """Drop empty steps, steps longer than ``max_step_tokens`` and steps that hit the token limit without a
    delimiter (spec §2.3). ``None`` uses the search's ``max_step_tokens``."""

    model_config = _FROZEN

    enabled: bool = True
    max_step_tokens: int | None = Field(None, ge=1)


class ConstraintsConfig(BaseModel):
    """The quality constraints applied to every new step (spec §2.3); ``enabled=False`` switches all off."""

    model_config = _FROZEN

    enabled: bool = True
    repetition: RepetitionConstraint = Field(default_factory=RepetitionConstraint)
    contradiction: ContradictionConstraint = Field(default_factory=ContradictionConstraint)
    length: LengthConstraint = Field(default_factory=LengthConstraint)

    @classmethod
    def none(cls) -> ConstraintsConfig:
        """Every constraint off (the reduction-to-greedy property, spec §8.3)."""
        return cls(enabled=False)


class BuddyConfig(BaseModel):
    """Similarity ("buddy") voting (spec §2.4, A.2 [R]).

    ``buddy(c) = sum_{c' != c} sim(c, c')`` (``aggregate="sum"``) or the number of candidates with ``sim >= tau``
    (``"count"``); ties broken by the search score. ``sim``: ``answer_eq`` (1 if the final answers match: buddy
    voting is then majority vote), ``jaccard`` (token sets of the whole chain), ``ngram`` (Jaccard of word 3-grams).
    """

    model_config = _FROZEN

    sim: Literal["answer_eq", "jaccard", "ngram"] = "answer_eq"
    tau: float = Field(0.5, ge=0.0, le=1.0)
    aggregate: Literal["sum", "count"] = "sum"
    ngram: int = Field(3, ge=1)


class PathFinderConfig(BaseModel):
    """Step-level beam search (spec/loops.md §2.2) and candidate selection (§2.4); see the module docstring for
    the provenance of every default.

    Budget: ``max_total_tokens`` caps the tokens the search *generates* (completion tokens, A.2's token budget; the
    comparisons of §2.5 are at generated tokens) and ``max_generator_calls`` the number of ``generate`` calls; both
    are hard caps (a call is only made, with as many rows as fit, when its worst case ``rows * max_step_tokens``
    fits the remaining budget). ``None`` disables a cap. Prompt tokens are counted exactly but not capped (a
    backend reports them only after a call).
    """

    model_config = _FROZEN

    branching_factor: int = Field(8, ge=1)
    """b: children sampled from every partial path at every depth."""
    buffer_size: int = Field(8, ge=1)
    """B: partial paths kept after pruning (the beam)."""
    max_steps: int = Field(10, ge=1)
    max_step_tokens: int = Field(96, ge=1)
    max_total_tokens: int | None = Field(2048, ge=1)
    max_generator_calls: int | None = Field(None, ge=1)
    max_candidates: int | None = Field(None, ge=1)
    """Stop once this many finished chains exist (``None``: search until the beam empties or ``max_steps``)."""
    decoding: Literal["varied", "fixed"] = "varied"
    decoding_grid: DecodingGrid = Field(default_factory=DecodingGrid)
    fixed_sampling: FixedSampling = Field(default_factory=FixedSampling)
    step_delimiter: str = "\n"
    answer_markers: tuple[str, ...] = ("The answer is", "####")
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    expansion_retries: int = Field(0, ge=0)
    """Exploration: when every child of a depth was dropped (constraints, failures), re-expand the same beam with
    fresh seeds up to this many times before giving up (0 = the plain algorithm of spec §2.2) [R]."""
    dedup: bool = True
    """Drop partial paths whose normalised steps equal another child's (keep the best scored)."""
    score: Literal["mean_token_logprob", "sum_logprob", "judge"] = "mean_token_logprob"
    min_step_score: float | None = None
    """With ``score="judge"``: prune a path (partial or finished) whose judge score is below this, as a process
    reward model's threshold (``GoldStepJudge``: 0.5 keeps only paths on the gold solution's path); its freed
    place goes to the other branches and, when every child dies, to ``expansion_retries``. ``None`` = rank only
    (spec §2.2 keeps the top B whatever their score) [R]."""
    score_source: Literal["logprobs", "score"] = "logprobs"
    """Where token log-probabilities come from: the sampled tokens' logprobs returned with each step (free), or a
    separate ``Generator.score_many`` pass over the steps (for backends without logprobs)."""
    selector: Literal["buddy", "vote", "max_likelihood", "verifier", "random"] = "buddy"
    buddy: BuddyConfig = Field(default_factory=BuddyConfig)
    vote_weight: Literal["count", "score"] = "count"
    """``vote``: each candidate counts 1, or ``exp(score)`` (its length-normalised likelihood)."""
    tie_break: Literal["score", "first"] = "score"
    """Ties in vote / buddy: the best search score, or the first candidate found (``Counter.most_common``)."""
    verifier_alpha: float = Field(1.0, ge=0.0, le=1.0)
    """``verifier`` selector: ``alpha * v + (1 - alpha) * score``."""
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> PathFinderConfig:
        if self.step_delimiter == "":
            raise ValueError("step_delimiter must be non-empty (e.g. '\\n': one reasoning step per line)")
        if not self.answer_markers or any(not m for m in self.answer_markers):
            raise ValueError(f"answer_markers={self.answer_markers!r}: give at least one non-empty marker")
        if self.max_total_tokens is not None and self.max_total_tokens < self.max_step_tokens:
            raise ValueError(f"max_total_tokens={self.max_total_tokens} < max_step_tokens={self.max_step_tokens}: "
                             "not even one step fits; raise max_total_tokens or set it to None")
        return self

    @classmethod
    def greedy(cls, **overrides: object) -> PathFinderConfig:
        """Beam 1, one greedy branch, no constraints, no budget cap: reduces to greedy decoding (spec §8.3)."""
        base: dict[str, object] = {
            "branching_factor": 1, "buffer_size": 1, "decoding": "fixed",
            "fixed_sampling": FixedSampling(temperature=0.0), "constraints": ConstraintsConfig.none(),
            "max_total_tokens": None, "selector": "max_likelihood",
        }
        base.update(overrides)
        return cls.model_validate(base)
