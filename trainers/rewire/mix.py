"""Raw + rewritten mixing at a token budget with an epoch cap (spec/loops.md §6.1 step 4, §6.3, Appendix A.6).

The paper mixes the raw top 10 % and the rewritten top 10 % in equal token amounts (0.6 raw / 0.4 rewritten was
best at 3B) [V], with pool sizes chosen so that filtered data repeats at most 4 times [V: ``max_epochs`` 4].

:func:`mix_by_tokens` fills ``ratio * budget`` tokens from each source by walking seeded shuffles of it, one epoch
after another, and never starts a document's ``max_epochs + 1``-th use. When a source cannot reach its share within
the cap, ``strict=True`` (default) raises naming the shortfall and the fixes; ``strict=False`` returns what fits and
reports the shortfall. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...sdk.errors import ConfigError

__all__ = ["MAX_EPOCHS", "mix_by_tokens"]

MAX_EPOCHS = 4
"""The paper's cap on repeats of filtered data [V]."""


def _take(docs: Sequence[str], budget: int, count: Callable[[str], int], max_epochs: int, rng: random.Random
          ) -> tuple[list[int], int, int]:
    """Indices drawn epoch by epoch until ``budget`` tokens; returns (indices, tokens, epochs started)."""
    picked: list[int] = []
    tokens = 0
    sizes = [count(d) for d in docs]
    epochs = 0
    if not docs or budget <= 0 or sum(sizes) == 0:
        return picked, tokens, epochs
    while tokens < budget and epochs < max_epochs:
        order = list(range(len(docs)))
        rng.shuffle(order)
        epochs += 1
        for i in order:
            if tokens >= budget:
                break
            picked.append(i)
            tokens += sizes[i]
    return picked, tokens, epochs


def mix_by_tokens(
    sources: Mapping[str, Sequence[str]],
    ratios: Mapping[str, float],
    token_budget: int,
    *,
    count_tokens: Callable[[str], int] | None = None,
    max_epochs: int = MAX_EPOCHS,
    seed: int = 0,
    strict: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mix ``sources`` (name -> documents) in token ``ratios`` up to ``token_budget`` tokens.

    Returns ``(rows, stats)``: rows ``{"source", "index", "text"}`` in a seeded shuffled order; stats per source:
    target and drawn tokens, documents, epochs used, max uses of one document, shortfall.
    """
    if set(sources) != set(ratios):
        raise ConfigError(f"sources {sorted(sources)} and ratios {sorted(ratios)} must name the same sources")
    if any(r < 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ConfigError(f"ratios {dict(ratios)} must be >= 0 and sum to 1")
    if token_budget < 1 or max_epochs < 1:
        raise ConfigError(f"token_budget={token_budget} and max_epochs={max_epochs} must be >= 1")
    count = count_tokens or (lambda t: len(t.split()))
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"token_budget": token_budget, "max_epochs": max_epochs, "sources": {}}
    for name in sorted(sources):
        docs = sources[name]
        target = round(ratios[name] * token_budget)
        idx, tokens, epochs = _take(docs, target, count, max_epochs, random.Random(f"{seed}:{name}"))
        uses: dict[int, int] = {}
        for i in idx:
            uses[i] = uses.get(i, 0) + 1
        short = max(0, target - tokens)
        if short and strict:
            raise ConfigError(
                f"source {name!r} has {sum(count(d) for d in docs)} tokens in {len(docs)} documents: "
                f"{target} tokens would need more than max_epochs={max_epochs} passes (short by {short}); lower "
                "token_budget, raise the share of the other source, or pass strict=False to accept the shortfall"
            )
        stats["sources"][name] = {"target_tokens": target, "tokens": tokens, "documents": len(idx),
                                  "unique_documents": len(uses), "epochs": epochs,
                                  "max_uses": max(uses.values(), default=0), "shortfall_tokens": short}
        rows.extend({"source": name, "index": i, "text": docs[i]} for i in idx)
    rng.shuffle(rows)
    stats["tokens"] = sum(s["tokens"] for s in stats["sources"].values())
    return rows, stats
