"""Data that crosses the SDK boundary: prompts, sampling parameters, completions, verdicts, tool and search results.

Everything here is pydantic (v2) so it validates at the boundary and serialises to JSON for the cache,
the artifacts and the manifests. Field names follow OpenAI / vLLM conventions (``max_tokens``, ``stop``,
``finish_reason``, ``prompt_tokens``) because that is what users of those engines already know.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# --------------------------------------------------------------------------------------------- prompts


class Message(BaseModel):
    """One OpenAI-style chat message."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    name: str | None = None
    tool_call_id: str | None = None


Prompt: TypeAlias = str | list[Message] | list[dict[str, Any]]
"""A raw text prompt, or a chat given as OpenAI-style messages (dicts or :class:`Message`)."""


def normalize_prompt(prompt: Prompt) -> str | list[dict[str, Any]]:
    """Return ``prompt`` as a plain string or a list of plain message dicts (validated).

    Raises ``TypeError`` naming the offending value for anything else, so misuse fails before a batch runs.
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        out = []
        for m in prompt:
            msg = m if isinstance(m, Message) else Message.model_validate(m)
            out.append(msg.model_dump(exclude_none=True))
        return out
    raise TypeError(
        f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}: {prompt!r:.80}"
    )


def prompt_key(prompt: Prompt) -> str:
    """A canonical JSON string for a prompt (used in cache keys)."""
    return json.dumps(normalize_prompt(prompt), sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------- sampling


class SamplingParams(BaseModel):
    """Sampling parameters shared by every Generator backend.

    Defaults follow ``spec/loops.md`` §0.1 (greedy, 256 new tokens): loops are reproducible unless asked
    otherwise. ``logprobs=None`` returns no logprobs; ``logprobs=0`` returns the sampled tokens' logprobs;
    ``logprobs=k`` also returns the top-k alternatives per position (vLLM semantics).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1)
    max_tokens: int = Field(256, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    truncate_prompt: bool = False
    """Keep the last ``max_len - max_tokens`` prompt tokens instead of raising when a prompt is too long."""

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_tuple(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        return tuple(v)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty")
        return v

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def deterministic(self) -> bool:
        """Greedy decoding, or sampling with a fixed seed: the same call gives the same output."""
        return self.greedy or self.seed is not None

    def key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


# --------------------------------------------------------------------------------------------- completions


class Usage(BaseModel):
    """Token accounting for one completion (prompt tokens are counted once per prompt, on its first sample)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class Completion(BaseModel):
    """One sampled continuation.

    ``logprobs`` holds the sampled tokens' log-probabilities when asked; ``top_logprobs`` one
    ``{token_text: logprob}`` dict per position when ``SamplingParams.logprobs > 0``.
    ``finish_reason`` is ``"stop"`` (EOS or a stop string; the stop string is not included in ``text``)
    or ``"length"`` (``max_tokens`` reached).
    """

    text: str
    token_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    finish_reason: Literal["stop", "length"] = "stop"
    stop_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)


def total_usage(results: list[list[Completion]]) -> Usage:
    """Sum of the usage of every completion in a ``generate`` result."""
    u = Usage()
    for row in results:
        for c in row:
            u = u + c.usage
    return u


# --------------------------------------------------------------------------------------------- verdicts


class JudgeProvenance(BaseModel):
    """Who produced a verdict: model id + revision, prompt template hash, parser version, sampling."""

    model: str
    revision: str | None = None
    endpoint: str | None = None
    template_id: str | None = None
    template_hash: str | None = None
    parser_version: str | None = None
    sampling: dict[str, Any] | None = None


class SwapRecord(BaseModel):
    """Both orders of a pairwise judgement and whether they agree."""

    forward: Literal["A", "B", "tie"] | None = None
    reverse: Literal["A", "B", "tie"] | None = None  # already mapped back to the original A/B labels
    consistent: bool | None = None


class Verdict(BaseModel):
    """The result of one judgement. An unparseable judgement is ``valid=False`` with a reason, never a default.

    Field names follow ``spec/ecosystem.md`` §4.3.
    """

    kind: Literal["pointwise", "pairwise", "rank", "binary"]
    score: float | None = None
    preference: Literal["A", "B", "tie"] | None = None
    p_a: float | None = None
    ranking: list[int] | None = None
    reasoning: str | None = None
    raw: str = ""
    valid: bool
    invalid_reason: str | None = None
    swap: SwapRecord | None = None
    samples: list[float] | None = None
    judge: JudgeProvenance | None = None
    usage: Usage = Field(default_factory=Usage)

    @model_validator(mode="after")
    def _check_validity(self) -> Verdict:
        if not self.valid and not self.invalid_reason:
            raise ValueError("an invalid Verdict must carry invalid_reason")
        if self.valid and self.kind == "pointwise" and self.score is None:
            raise ValueError("a valid pointwise Verdict must carry a score")
        if self.valid and self.kind == "pairwise" and self.preference is None:
            raise ValueError("a valid pairwise Verdict must carry a preference")
        return self


# --------------------------------------------------------------------------------------------- tools, search, filters


class ToolResult(BaseModel):
    """Outcome of one tool call: ``ok`` with a ``value``, or not ok with an ``error`` message."""

    ok: bool
    value: Any = None
    error: str | None = None
    latency_s: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> ToolResult:
        if not self.ok and not self.error:
            raise ValueError("a failed ToolResult must carry an error message")
        return self


class Budget(BaseModel):
    """Work spent by a search or loop stage."""

    generator_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: int = 0


class ScoredPath(BaseModel):
    steps: list[str]
    score: float
    answer: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchResult(BaseModel):
    """What a Searcher returns: ranked candidate paths, the chosen answer and the budget spent."""

    paths: list[ScoredPath]
    answer: str | None
    budget: Budget = Field(default_factory=Budget)


class Decision(BaseModel):
    """A Filter's keep/drop decision for one record, with the reason when dropped."""

    keep: bool
    reason: str | None = None


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short, stable sha256 of a JSON-serialisable object (template hashes, cache keys, fingerprints)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    data = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]
