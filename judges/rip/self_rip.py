"""Self-RIP (spec/loops.md §5.3): few-shot prompt synthesis from RIP-kept prompts, then RIP again.

1. Seeds = the prompts RIP kept.
2. Each generation shows ``few_shot`` (8 [V]) randomly chosen seeds and asks for one new prompt with similar
   characteristics (T 0.8, top-p 0.95 [V]). Self-Instruct post-processing: drop near-duplicates (ROUGE-L >= 0.7
   with any seed or earlier accepted prompt [V]) and prompts with keywords a text model cannot serve [V: "image",
   "picture", "graph"; the rest of the list and the 3..150-word length bounds are Self-Instruct's code, R].
3. The same sampling, scoring and RIP filter run on the accepted synthetic prompts. By default the *absolute*
   thresholds of the seed run are reused ("same thresholds", as the paper reused its 8B thresholds); pass
   ``reuse_thresholds=None`` to recompute percentiles on the synthetic pool.

Every candidate that does not make it is kept with its reason (``truncated``, ``empty``, ``too_short``,
``too_long``, ``banned_keyword:<w>``, ``near_duplicate:<rougeL>``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...sdk.errors import BackendError
from ...sdk.executors import Executor, LocalExecutor
from ...sdk.generator import Generator
from ...sdk.judge import Judge
from ...sdk.types import SamplingParams
from .filter import RIPThresholds
from .pipeline import RIPConfig, RIPResult, run_rip

__all__ = [
    "BANNED_KEYWORDS",
    "SelfRIPConfig",
    "SelfRIPResult",
    "fewshot_prompt",
    "parse_new_prompt",
    "prompt_text",
    "rouge_l",
    "self_rip",
    "synthesize_prompts",
]

BANNED_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw", "plot",
    "go to", "video", "audio", "music", "flowchart", "diagram",
)
"""Self-Instruct's keyword filter (whole words); the RIP paper names image/picture/graph [V]."""

FEWSHOT_HEADER = (
    "Below are example prompts that users sent to an AI assistant. Write one new prompt with similar "
    "characteristics: the same kind of task, topic area, difficulty and format. It must be different from every "
    "example. Reply with the new prompt only."
)
"""Self-Instruct-style instruction (paraphrased; the paper's exact text is not published)."""


class SelfRIPConfig(BaseModel):
    """Self-RIP synthesis settings (spec/loops.md A.5 ``self_rip``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    few_shot: int = Field(8, ge=1)
    n_generate: int = Field(20_000, ge=1)
    """Candidates to generate (the paper generated 20k)."""
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    rouge_l_max: float = Field(0.7, gt=0, le=1)
    banned_keywords: tuple[str, ...] = BANNED_KEYWORDS
    min_words: int = Field(3, ge=0)
    max_words: int = Field(150, ge=1)
    seed: int = 0


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """The text of a prompt: a string as is, a chat's last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def fewshot_prompt(examples: Sequence[str]) -> str:
    """The synthesis prompt: numbered examples, then an open slot for one more."""
    if not examples:
        raise ValueError("fewshot_prompt needs at least one example prompt")
    lines = [FEWSHOT_HEADER, ""]
    for i, ex in enumerate(examples, 1):
        lines.append(f"Prompt {i}: {' '.join(ex.split())}")
    lines.append(f"Prompt {len(examples) + 1}:")
    return "\n".join(lines)


# Linear-time on model text (issue 17, item 13): ``\n\s*Prompt`` retried its whitespace run from every newline of
# it (O(n^2): 10 000 newlines took 0.37 s); a label now starts at the *last* newline before it, runs are possessive,
# and the case-insensitive words are spelled in ASCII classes (``re.IGNORECASE`` folds Unicode look-alikes).
_PROMPT_WORD = r"[Pp][Rr][Oo][Mm][Pp][Tt]"
_NEXT_LABEL = re.compile(r"\n[^\S\n]*+" + _PROMPT_WORD + r" [0-9]++\s*+:")
_LEAD_LABEL = re.compile(r"^\s*+(?:[Nn][Ee][Ww]\s++)?" + _PROMPT_WORD + r"(?:\s++[0-9]++)?\s*+:\s*+")


def parse_new_prompt(text: str, finish_reason: str = "stop") -> tuple[str | None, str | None]:
    """``(prompt, None)`` or ``(None, reason)``: strips an echoed ``Prompt k:`` label, cuts at the next label."""
    if finish_reason == "length":
        return None, "truncated"
    body = _LEAD_LABEL.sub("", text or "", count=1)
    body = _NEXT_LABEL.split(body, maxsplit=1)[0].strip()
    if not body:
        return None, "empty"
    return body, None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two texts over lower-cased word tokens (LCS; Self-Instruct's dedup measure)."""
    x, y = _words(a), _words(b)
    if not x or not y:
        return 0.0
    prev = [0] * (len(y) + 1)
    for xi in x:
        cur = [0]
        for j, yj in enumerate(y, 1):
            cur.append(prev[j - 1] + 1 if xi == yj else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(x), lcs / len(y)
    return 2 * p * r / (p + r)


def _banned(text: str, keywords: Sequence[str]) -> str | None:
    low = text.lower()
    for w in keywords:
        if re.search(rf"\b{re.escape(w.lower())}\b", low):
            return w
    return None


def synthesize_prompts(
    seeds: Sequence[str | list[dict[str, Any]]],
    executor: Executor | Generator,
    config: SelfRIPConfig | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Generate ``n_generate`` candidates from few-shot seeds; returns (accepted prompts, rejected candidates with
    ``reason``). Deterministic for a fixed ``seed`` and a deterministic executor."""
    config = config or SelfRIPConfig()
    if isinstance(executor, Generator):
        executor = LocalExecutor(executor, progress=False)
    seed_texts = [prompt_text(s) for s in seeds if prompt_text(s).strip()]
    if not seed_texts:
        raise ValueError("synthesize_prompts needs at least one non-empty seed prompt (did RIP keep nothing?)")
    rng = random.Random(config.seed)
    k = min(config.few_shot, len(seed_texts))
    shots = [rng.sample(seed_texts, k) for _ in range(config.n_generate)]
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                            seed=config.seed)
    outs = executor.run([[{"role": "user", "content": fewshot_prompt(s)}] for s in shots], params)
    if len(outs) != len(shots):
        raise BackendError(f"the executor returned {len(outs)} rows for {len(shots)} synthesis prompts")
    accepted: list[str] = []
    rejected: list[dict[str, Any]] = []
    pool = list(seed_texts)
    for i, row in enumerate(outs):
        c = row[0]
        cand, why = parse_new_prompt(c.text, c.finish_reason)
        if cand is not None:
            n_words = len(cand.split())
            if n_words < config.min_words:
                why = "too_short"
            elif n_words > config.max_words:
                why = "too_long"
            elif (w := _banned(cand, config.banned_keywords)) is not None:
                why = f"banned_keyword:{w}"
            else:
                best = max((rouge_l(cand, p) for p in pool), default=0.0)
                if best >= config.rouge_l_max:
                    why = f"near_duplicate:{best:.2f}"
        if why is None and cand is not None:
            accepted.append(cand)
            pool.append(cand)
        else:
            rejected.append({"index": i, "raw": c.text, "candidate": cand, "reason": why})
    return accepted, rejected


@dataclass
class SelfRIPResult:
    synthetic: list[str]
    synthesis_rejected: list[dict[str, Any]]
    rip: RIPResult

    def to_dataset(self, provenance: bool = False) -> Any:
        """The kept pairs of the synthetic prompts as a TRL preference ``datasets.Dataset`` (see RIPResult)."""
        return self.rip.to_dataset(provenance=provenance)

    def stats(self) -> dict[str, Any]:
        from collections import Counter

        n_gen = len(self.synthetic) + len(self.synthesis_rejected)
        return {
            "n_generated": n_gen,
            "n_accepted": len(self.synthetic),
            "synthesis_reasons": dict(Counter(r["reason"].split(":")[0] for r in self.synthesis_rejected)),
            "rip": self.rip.stats(),
        }


def self_rip(
    seeds: Sequence[str | list[dict[str, Any]]],
    executor: Executor | Generator,
    judge: Judge,
    config: RIPConfig | None = None,
    synth: SelfRIPConfig | None = None,
    *,
    prompt_executor: Executor | Generator | None = None,
    reuse_thresholds: dict[str, float | None] | None = None,
    as_chat: bool | None = None,
) -> SelfRIPResult:
    """Synthesize prompts from ``seeds`` (RIP-kept prompts) with ``prompt_executor`` (default: ``executor``, the
    paper uses the seed model for both), then RIP them. ``reuse_thresholds``: the absolute taus of the seed run
    (``RIPResult.thresholds``); None recomputes the configured percentiles on the synthetic pool. ``as_chat``: send
    the synthetic prompts as one-user-message chats (default: when the seeds are chats, so a chat-tuned policy sees
    its own format)."""
    config = config or RIPConfig()
    synthetic, synth_rejected = synthesize_prompts(seeds, prompt_executor or executor, synth)
    if reuse_thresholds is not None:
        config = config.model_copy(update={"thresholds": RIPThresholds(
            rejected_reward_pct=None, rejected_length_pct=None, reward_gap_pct=None, **reuse_thresholds)})
    if as_chat is None:
        as_chat = any(not isinstance(s, str) for s in seeds)
    prompts = [[{"role": "user", "content": t}] if as_chat else t for t in synthetic]
    rip = run_rip(prompts, executor, judge, config, ids=[f"synthetic-{i}" for i in range(len(synthetic))])
    return SelfRIPResult(synthetic, synth_rejected, rip)
