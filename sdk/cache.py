"""A SQLite generation cache and a Generator wrapper that serves repeated requests from it.

Why: loops re-generate the same prompts (a resumed run, a re-judged pool, the reference pass of DPO), and
a 2-core sandbox or a paid API makes every repeated call expensive. DESIGN.md ("Loops, graphs and
artifacts"): generations are cached in SQLite keyed by (backend, model id + revision, prompt, sampling
params, seed, template hash, parser version); payloads are JSON, never pickle (DSPy's pickled diskcache had to
grow ``restrict_pickle``; datatrove's request cache is sqlite + JSON, spec/ecosystem.md §5).

Only deterministic requests are cached (``params.deterministic``: greedy, or sampling with a fixed seed).
Caching an unseeded sampling request would silently turn K fresh samples, asked for precisely because they
should differ (best-of-K, self-consistency, rejection sampling), into K copies of the first run's samples;
such requests bypass the cache and are counted as ``uncacheable``.

Seeded requests are cached per prompt. That assumes a backend's seeded output for a prompt does not depend
on which other prompts share its batch (true for vLLM's per-request seeds); for a backend where it does,
a cache hit is still a valid sample for that seed, just not the bit-identical one a different batching
would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import BatchError
from .generator import Generator
from .types import Completion, Prompt, SamplingParams, prompt_key

_SCHEMA = "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, value TEXT NOT NULL, created_at REAL NOT NULL)"


def loopwright_home() -> Path:
    """Root of loopwright's on-disk caches: ``$LOOPWRIGHT_HOME`` or ``~/.cache/loopwright``."""
    return Path(os.environ.get("LOOPWRIGHT_HOME") or Path.home() / ".cache" / "loopwright").expanduser()


def cache_key(identity: dict[str, Any], prompt: Prompt, params: SamplingParams, namespace: str = "") -> str:
    """sha256 over the generator identity, the canonical prompt, every sampling parameter and a namespace.

    ``identity`` is ``Generator.cache_identity()`` (backend, model id + revision, chat template hash);
    ``params.key()`` covers n, temperature, top_p, top_k, max_tokens, stop, seed, logprobs and truncation;
    ``namespace`` separates otherwise identical requests (e.g. a judge's parser version).
    """
    material = json.dumps(
        {"generator": identity, "prompt": prompt_key(prompt), "params": params.key(), "namespace": namespace},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class GenerationCache:
    """SQLite store of ``key -> JSON list of Completions`` (one row per prompt, all ``n`` samples).

    WAL journal mode so several processes can read while one writes; one connection guarded by a lock so
    the cache can be shared by threads (``asyncio.to_thread`` backends, thread pools). Counters
    ``hits``/``misses``/``uncacheable`` are per cache object. ``path=":memory:"`` gives a throwaway cache.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0):
        self.path = str(path)
        if self.path != ":memory:":
            p = Path(self.path)
            if p.is_dir():
                raise ValueError(f"GenerationCache path {p} is a directory; pass a file path such as {p / 'cache.sqlite'}")
            p.parent.mkdir(parents=True, exist_ok=True)
        self._timeout_s = timeout_s
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
        )
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0

    # ----------------------------------------------------------------------------------------- storage

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"GenerationCache({self.path!r}) is closed; create a new one")
        return self._conn

    def get_many(self, keys: Sequence[str]) -> dict[str, list[Completion]]:
        """The stored completions for the keys present; counts one hit or miss per key given."""
        found: dict[str, list[Completion]] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(f"SELECT key, value FROM generations WHERE key IN ({marks})", chunk)
                for key, value in rows:
                    found[key] = [Completion.model_validate(c) for c in json.loads(value)]
            for k in keys:
                if k in found:
                    self.hits += 1
                else:
                    self.misses += 1
        return found

    def get(self, key: str) -> list[Completion] | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: dict[str, list[Completion]]) -> None:
        """Store (or replace) completions, all in one transaction."""
        now = time.time()
        rows = [
            (k, json.dumps([c.model_dump(mode="json") for c in comps], ensure_ascii=False), now)
            for k, comps in items.items()
        ]
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?)", rows)
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def put(self, key: str, completions: list[Completion]) -> None:
        self.put_many({key: completions})

    def __len__(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM generations WHERE key = ?", (key,)).fetchone() is not None

    def clear(self) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM generations")

    def count_uncacheable(self, n: int) -> None:
        """Record ``n`` prompts that bypassed the cache (non-deterministic sampling)."""
        with self._lock:
            self.uncacheable += n

    def stats(self) -> dict[str, int]:
        """``{"hits", "misses", "uncacheable", "entries"}``."""
        return {"hits": self.hits, "misses": self.misses, "uncacheable": self.uncacheable, "entries": len(self)}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        # Shipping a cache to another process (a Ray actor's generator factory) reopens the same file there;
        # counters start at zero. Only the path travels: the payloads stay JSON in SQLite.
        if self.path == ":memory:":
            raise TypeError("an in-memory GenerationCache cannot be sent to another process; give it a file path")
        return {"path": self.path, "timeout_s": self._timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], timeout_s=state["timeout_s"])  # type: ignore[misc]

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GenerationCache({self.path!r}, hits={self.hits}, misses={self.misses})"


def _mark_cached(comps: list[Completion]) -> list[Completion]:
    return [c.model_copy(update={"usage": c.usage.model_copy(update={"cached": True})}) for c in comps]


class CachedGenerator(Generator):
    """A Generator that answers deterministic requests from a :class:`GenerationCache` and sends only the
    misses, in one batch, to the wrapped generator. Results keep input order; hits carry ``usage.cached=True``.

    ``namespace`` goes into every key (e.g. ``"judge-parser-v2"``) to keep otherwise equal requests apart.
    The wrapper reports the inner generator's identity (``cache_identity``, ``model_id``) and forwards
    ``score`` uncached. ``close()`` closes the inner generator; the cache stays open (it may be shared).
    """

    def __init__(self, generator: Generator, cache: GenerationCache, namespace: str = ""):
        if not isinstance(generator, Generator):
            raise TypeError(f"CachedGenerator wraps a loopwright Generator, got {type(generator).__name__}")
        if not isinstance(cache, GenerationCache):
            raise TypeError(f"cache must be a GenerationCache, got {type(cache).__name__}")
        self.inner = generator
        self.cache = cache
        self.namespace = namespace
        self.model_id = generator.model_id
        self.revision = generator.revision

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self.inner.backend

    @property
    def supports_score(self) -> bool:  # type: ignore[override]
        return self.inner.supports_score

    @property
    def supports_logprobs(self) -> bool:  # type: ignore[override]
        return self.inner.supports_logprobs

    def template_hash(self) -> str | None:
        return self.inner.template_hash()

    def cache_identity(self) -> dict[str, Any]:
        return self.inner.cache_identity()

    def score(self, prompt: Prompt, continuation: str) -> float:
        return self.inner.score(prompt, continuation)

    def close(self) -> None:
        self.inner.close()

    # ----------------------------------------------------------------------------------------- lookup

    def _lookup(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> tuple[list[str], dict[str, list[Completion]], list[Prompt], list[str]]:
        identity = self.inner.cache_identity()
        keys = [cache_key(identity, p, params, self.namespace) for p in prompts]
        found = self.cache.get_many(keys)
        miss_prompts: list[Prompt] = []
        miss_keys: list[str] = []
        for p, k in zip(prompts, keys, strict=True):
            if k not in found and k not in miss_keys:  # duplicates in one call are generated once
                miss_prompts.append(p)
                miss_keys.append(k)
        return keys, {k: _mark_cached(v) for k, v in found.items()}, miss_prompts, miss_keys

    def _store(
        self, keys: list[str], hits: dict[str, list[Completion]], miss_keys: list[str], fresh: list[list[Completion]]
    ) -> list[list[Completion]]:
        if len(fresh) != len(miss_keys):
            raise RuntimeError(
                f"{type(self.inner).__name__} returned {len(fresh)} results for {len(miss_keys)} prompts"
            )
        new = dict(zip(miss_keys, fresh, strict=True))
        if new:
            self.cache.put_many(new)
        out: list[list[Completion]] = []
        seen: set[str] = set()
        for k in keys:
            if k in hits:
                out.append([c.model_copy(deep=True) for c in hits[k]])
            elif k in seen:  # an in-call duplicate: same result, but marked as served from the cache
                out.append(_mark_cached(new[k]))
            else:
                seen.add(k)
                out.append(new[k])
        return out

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        params = params or SamplingParams()
        if not params.deterministic:
            self.cache.count_uncacheable(len(prompts))
            return self.inner.generate(prompts, params)
        keys, hits, miss_prompts, miss_keys = self._lookup(prompts, params)
        try:
            fresh = self.inner.generate(miss_prompts, params) if miss_prompts else []
        except BatchError as e:
            raise self._keep_partial(keys, hits, miss_keys, e) from e
        return self._store(keys, hits, miss_keys, fresh)

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        params = params or SamplingParams()
        if not params.deterministic:
            self.cache.count_uncacheable(len(prompts))
            return await self.inner.agenerate(prompts, params)
        keys, hits, miss_prompts, miss_keys = self._lookup(prompts, params)
        try:
            fresh = await self.inner.agenerate(miss_prompts, params) if miss_prompts else []
        except BatchError as e:
            raise self._keep_partial(keys, hits, miss_keys, e) from e
        return self._store(keys, hits, miss_keys, fresh)

    def _keep_partial(self, keys: list[str], hits: dict[str, list[Completion]], miss_keys: list[str],
                      err: BatchError) -> BatchError:
        """Cache the prompts of a failed batch that did finish (a rerun or a resumed stage reuses them), and
        return the error re-indexed to the caller's prompts."""
        done = {k: row for k, row in zip(miss_keys, err.partial, strict=True) if row is not None}
        if done:
            self.cache.put_many(done)
        reasons = {miss_keys[i]: why for i, why in err.failures.items()}
        partial = [[c.model_copy(deep=True) for c in hits[k]] if k in hits else done.get(k) for k in keys]
        failures = {i: reasons.get(k, "failed") for i, k in enumerate(keys) if partial[i] is None}
        return BatchError(f"{err} ({len(done)} finished prompts cached)", partial=partial, failures=failures)

    def stats(self) -> dict[str, int]:
        return self.cache.stats()

    def __repr__(self) -> str:
        return f"CachedGenerator({self.inner!r}, cache={self.cache.path!r})"
