"""``ScriptedGenerator``: a deterministic, weight-free Generator for unit tests (never a default).

Modelled on pydantic-ai's ``TestModel`` / ``FunctionModel`` (spec/style.md §5): a double that ships with the
library so components can be tested without an engine. It follows the same contract as the real backends
(tests/sdk/conformance.py) with *whitespace tokens* standing in for model tokens:

- responses come from a list (cycled) or from ``respond(prompt_text, sample_index, rng) -> str``;
- ``n``, ``max_tokens`` (truncation -> ``finish_reason="length"``), stop strings (cut before the first one,
  ``finish_reason="stop"``), ``seed``, usage counts, stable ``token_ids`` (a hash per word) and optional
  pseudo ``logprobs`` (deterministic values <= 0) are honoured;
- greedy (``temperature == 0``) gives every sample of a prompt the same text, as a real model would;
- ``score(prompt, continuation)`` is a deterministic pseudo log-probability (``scorer`` overrides it);
- every call is recorded in ``.calls`` / ``.score_calls`` so a test can assert how a component used it.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..generator import Generator
from ..types import Completion, Prompt, SamplingParams, Usage, normalize_prompt, stable_hash

__all__ = ["ScriptedCall", "ScriptedGenerator", "render_chat", "whitespace_tokens"]

Responder = Callable[[str, int, random.Random], str]
Scorer = Callable[[str, str], float]

VOCAB_SIZE = 32768
"""Range of the pseudo token ids (a stable hash of each whitespace token, modulo this)."""

_TOKEN_RE = re.compile(r"\s*\S+\s*")
CHAT_TEMPLATE = "{role}: {content}\n"
"""How message prompts are rendered to text for ``respond`` (then ``"assistant:"`` is appended)."""


def whitespace_tokens(text: str) -> list[str]:
    """Split ``text`` into whitespace tokens that join back to it (each word keeps its surrounding spaces)."""
    return _TOKEN_RE.findall(text)


def render_chat(prompt: Prompt) -> str:
    """A prompt as the text a scripted responder sees: strings as-is, chats as ``role: content`` lines."""
    p = normalize_prompt(prompt)
    if isinstance(p, str):
        return p
    return "".join(CHAT_TEMPLATE.format(role=m["role"], content=m["content"]) for m in p) + "assistant:"


def _token_id(token: str) -> int:
    return int(stable_hash(token.strip(), length=8), 16) % VOCAB_SIZE


def _pseudo_logprob(context: str, position: int, token: str) -> float:
    """A deterministic value in [-0.5, -0.01]: the sampled token always holds more than half the mass."""
    frac = int(stable_hash([context, position, token.strip()], length=8), 16) / 16**8
    return -0.01 - 0.49 * frac


@dataclass(frozen=True)
class ScriptedCall:
    """One recorded ``generate`` call: the normalised prompts and the sampling parameters."""

    prompts: list[str | list[dict[str, Any]]]
    params: SamplingParams


class ScriptedGenerator(Generator):
    """A scripted test double implementing the Generator contract without model weights.

    Args:
        responses: a list of strings, cycled; or a function ``respond(prompt_text, sample_index, rng)``.
            With a list, prompt ``i`` sample ``j`` of a call gets ``responses[(offset + i*n + j) % len]``
            (greedy: ``j`` is 0 for every sample). ``cycle="per_call"`` (default) starts every call at offset 0,
            so identical calls give identical outputs; ``cycle="global"`` keeps a cursor across calls, like a
            script of successive replies.
        scorer: ``scorer(prompt_text, continuation) -> float`` for :meth:`score`; default: the sum of the
            pseudo per-token logprobs (about -0.25 per whitespace token).
        model_id: reported in ``cache_identity``.

    Seeds: ``respond`` receives ``random.Random`` seeded from ``(seed, prompt text, sample index)``. Without a
    seed, greedy calls use seed 0 and sampling calls draw a base seed from this instance's own
    ``random.Random(0)``: deterministic across runs, different from call to call.
    """

    backend: ClassVar[str] = "scripted"
    supports_score: ClassVar[bool] = True
    supports_logprobs: ClassVar[bool] = True

    def __init__(
        self,
        responses: Sequence[str] | Responder,
        *,
        scorer: Scorer | None = None,
        cycle: Literal["per_call", "global"] = "per_call",
        model_id: str = "scripted",
    ) -> None:
        if callable(responses):
            self._respond: Responder | None = responses
            self.responses: list[str] = []
        elif isinstance(responses, str):
            raise TypeError("responses must be a list of strings or a function, not a single string; wrap it: [text]")
        else:
            self._respond = None
            self.responses = list(responses)
            if not self.responses:
                raise ValueError("ScriptedGenerator needs at least one response (or a respond function)")
            bad = [r for r in self.responses if not isinstance(r, str)]
            if bad:
                raise TypeError(f"responses must be strings, got {bad[0]!r}")
        if cycle not in ("per_call", "global"):
            raise ValueError(f"cycle={cycle!r}; use 'per_call' or 'global'")
        self.cycle = cycle
        self.scorer = scorer
        self.model_id = model_id
        self.calls: list[ScriptedCall] = []
        self.score_calls: list[tuple[str | list[dict[str, Any]], str]] = []
        self._cursor = 0
        self._unseeded = random.Random(0)

    def template_hash(self) -> str | None:
        return stable_hash(CHAT_TEMPLATE)

    # ------------------------------------------------------------------------------------------- generate

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        params = params or SamplingParams()
        normalized = [normalize_prompt(p) for p in prompts]
        self.calls.append(ScriptedCall(prompts=normalized, params=params))
        if not normalized:
            return []
        if params.seed is not None:
            base_seed = params.seed
        elif params.greedy:
            base_seed = 0
        else:
            base_seed = self._unseeded.getrandbits(32)
        offset = self._cursor if self.cycle == "global" else 0
        results: list[list[Completion]] = []
        for i, p in enumerate(normalized):
            text = render_chat(p)
            prompt_tokens = max(1, len(whitespace_tokens(text)))
            row: list[Completion] = []
            for j in range(params.n):
                k = 0 if params.greedy else j
                if self._respond is not None:
                    rng = random.Random(f"{base_seed}:{stable_hash(text)}:{k}")
                    full = self._respond(text, k, rng)
                    if not isinstance(full, str):
                        raise TypeError(f"respond() must return a str, got {type(full).__name__}: {full!r:.80}")
                else:
                    full = self.responses[(offset + i * params.n + k) % len(self.responses)]
                c = self._complete(text, full, params)
                c.usage = Usage(prompt_tokens=prompt_tokens if j == 0 else 0, completion_tokens=len(c.token_ids))
                row.append(c)
            results.append(row)
        if self.cycle == "global":
            self._cursor += len(normalized) * params.n
        return results

    def _complete(self, prompt_text: str, full: str, params: SamplingParams) -> Completion:
        """Apply stop strings and max_tokens to one full response, the way a decoding loop would."""
        tokens = whitespace_tokens(full)
        limit_text = "".join(tokens[: params.max_tokens])
        stop_at: tuple[int, str] | None = None
        for s in params.stop:
            pos = full.find(s)
            # a stop string counts only if it was fully generated before max_tokens ran out
            if pos >= 0 and pos + len(s) <= len(limit_text) and (stop_at is None or pos < stop_at[0]):
                stop_at = (pos, s)
        if stop_at is not None:
            text, finish, stop_reason = full[: stop_at[0]], "stop", stop_at[1]
            kept = whitespace_tokens(text)
        elif len(tokens) > params.max_tokens:
            text, finish, stop_reason = limit_text, "length", None
            kept = tokens[: params.max_tokens]
        else:
            text, finish, stop_reason = full, "stop", None
            kept = tokens
        logprobs = top = None
        if params.logprobs is not None:
            logprobs = [_pseudo_logprob(prompt_text, t, tok) for t, tok in enumerate(kept)]
            if params.logprobs > 0:
                top = []
                for tok, lp in zip(kept, logprobs, strict=True):
                    rest = math.log((1.0 - math.exp(lp)) / params.logprobs)  # < lp: the rest shares < half
                    alts = {f"<alt{m}>": rest for m in range(1, params.logprobs)}
                    top.append({tok.strip() or tok: lp, **alts})
        return Completion(text=text, token_ids=[_token_id(t) for t in kept], logprobs=logprobs,
                          top_logprobs=top, finish_reason=finish, stop_reason=stop_reason)

    # ------------------------------------------------------------------------------------------- score

    def score(self, prompt: Prompt, continuation: str) -> float:
        """Deterministic pseudo log p(continuation | prompt): ``scorer`` if given, else summed pseudo logprobs."""
        p = normalize_prompt(prompt)
        self.score_calls.append((p, continuation))
        text = render_chat(p)
        if self.scorer is not None:
            return float(self.scorer(text, continuation))
        return float(sum(_pseudo_logprob(text, t, tok) for t, tok in enumerate(whitespace_tokens(continuation))))

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        if len(prompts) != len(continuations):
            raise ValueError(f"score_many got {len(prompts)} prompts but {len(continuations)} continuations")
        return [self.score(p, c) for p, c in zip(prompts, continuations, strict=True)]

    def reset(self) -> None:
        """Forget recorded calls and rewind the global cursor."""
        self.calls.clear()
        self.score_calls.clear()
        self._cursor = 0
        self._unseeded = random.Random(0)

    def __repr__(self) -> str:
        source = "function" if self._respond is not None else f"{len(self.responses)} responses"
        return f"ScriptedGenerator({source}, model_id={self.model_id!r})"
