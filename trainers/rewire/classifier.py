"""The REWIRE quality classifier, trained locally as in the paper (spec/loops.md §6.1 step 3, §6.5).

The paper trains a fastText classifier on 400K documents split evenly: positives = curated text (OpenHermes-2.5 +
high-scoring ELI5 posts, DCLM's positives), negatives = random *rewritten* outputs; it keeps the top 10 % of rewrites
by its score. Two implementations share one interface (``fit(texts, labels)`` with 1 = high quality, ``score(texts)``
-> P(high quality), ``save`` / ``load``):

- :class:`FastTextClassifier` -- the real ``fasttext`` package (0.9.3 builds here with pip; it is an optional
  dependency). Trained single-threaded with a fixed seed, so it is reproducible.
- :class:`HashedNgramClassifier` -- the spec's fallback when fasttext does not build (§6.5): logistic regression in
  numpy over hashed word unigrams + bigrams (fastText's ``wordNgrams=2`` features, hashed like fastText's buckets),
  L2-normalised counts, mini-batch SGD. Deterministic for a seed.

:func:`make_classifier` (``kind="auto"``) picks fastText when it imports, else the numpy one; the chosen ``kind`` is
recorded with every score. :func:`training_lines` assembles the fastText training file (balanced classes, dedup,
newlines stripped, ``__label__`` prefixes: fastText reads one document per line).
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LABEL_HQ",
    "LABEL_LQ",
    "FastTextClassifier",
    "HashedNgramClassifier",
    "QualityClassifier",
    "balanced_training_set",
    "clean_line",
    "fasttext_available",
    "make_classifier",
    "training_lines",
]

LABEL_HQ = "__label__hq"
LABEL_LQ = "__label__lq"


def clean_line(text: str) -> str:
    """One line per document: newlines and runs of whitespace collapsed to single spaces."""
    return " ".join(str(text).split())


def balanced_training_set(
    positives: Sequence[str], negatives: Sequence[str], seed: int = 0
) -> tuple[list[str], list[int]]:
    """Dedup each class (after :func:`clean_line`; empty docs dropped; a text in both classes is dropped from the
    negatives), downsample the larger class to the smaller, shuffle: ``(texts, labels)`` with 1 = positive."""
    pos = list(dict.fromkeys(t for t in map(clean_line, positives) if t))
    pos_set = set(pos)
    neg = list(dict.fromkeys(t for t in map(clean_line, negatives) if t and t not in pos_set))
    if not pos or not neg:
        raise ValueError(f"need positives and negatives after dedup, got {len(pos)} and {len(neg)}")
    rng = random.Random(seed)
    k = min(len(pos), len(neg))
    pos, neg = rng.sample(pos, k), rng.sample(neg, k)
    rows = [(t, 1) for t in pos] + [(t, 0) for t in neg]
    rng.shuffle(rows)
    return [t for t, _ in rows], [y for _, y in rows]


def training_lines(texts: Sequence[str], labels: Sequence[int]) -> list[str]:
    """fastText supervised format: ``__label__hq <text>`` / ``__label__lq <text>``, one document per line."""
    return [f"{LABEL_HQ if y else LABEL_LQ} {clean_line(t)}" for t, y in zip(texts, labels, strict=True)]


def fasttext_available() -> bool:
    try:
        import fasttext  # noqa: F401
    except ImportError:
        return False
    return True


class QualityClassifier(ABC):
    """Binary quality classifier: ``fit`` on labelled texts, ``score`` -> probability of high quality."""

    kind: str = "abstract"

    @abstractmethod
    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> QualityClassifier: ...

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[float]: ...

    @abstractmethod
    def save(self, path: str | Path) -> Path: ...


# --------------------------------------------------------------------------------------------- fastText


class FastTextClassifier(QualityClassifier):
    """fastText supervised classifier. Defaults [R]: word bigrams (as DCLM's OH/ELI5 classifier), dim 32, 10 epochs,
    lr 0.1, 2^18 hash buckets (fastText's default 2M buckets x dim floats is a 256 MB+ model for nothing at
    this scale), one thread and a fixed seed for reproducibility."""

    kind = "fasttext"

    def __init__(self, epoch: int = 10, lr: float = 0.1, dim: int = 32, word_ngrams: int = 2, min_count: int = 1,
                 bucket: int = 2**18, seed: int = 0):
        if not fasttext_available():
            raise ImportError("fasttext is not installed: `pip install fasttext` (0.9.3), or use "
                              "make_classifier('hashed') / HashedNgramClassifier")
        self.params = {"epoch": epoch, "lr": lr, "dim": dim, "wordNgrams": word_ngrams, "minCount": min_count,
                       "bucket": bucket, "seed": seed, "thread": 1, "verbose": 0}
        self.model: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> FastTextClassifier:
        import fasttext

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "train.txt"
            path.write_text("\n".join(training_lines(texts, labels)) + "\n", encoding="utf-8")
            self.model = fasttext.train_supervised(input=str(path), **self.params)
        return self

    def score(self, texts: Sequence[str]) -> list[float]:
        if self.model is None:
            raise RuntimeError("call fit() (or load()) before score()")
        if not texts:
            return []
        # the list form: fasttext 0.9.3's single-text predict calls np.array(copy=False), which numpy 2 rejects
        all_labels, all_probs = self.model.predict([clean_line(t) for t in texts], k=2)
        out = []
        for labels, probs in zip(all_labels, all_probs, strict=True):
            p = {lab: float(pr) for lab, pr in zip(labels, probs, strict=True)}
            out.append(min(1.0, max(0.0, p.get(LABEL_HQ, 1.0 - p.get(LABEL_LQ, 1.0)))))
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        self.model.save_model(str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FastTextClassifier:
        import fasttext

        obj = cls.__new__(cls)
        obj.params = {}
        obj.model = fasttext.load_model(str(path))
        return obj


# --------------------------------------------------------------------------------------------- numpy fallback

_WORD = re.compile(r"\w+|[^\w\s]")


class HashedNgramClassifier(QualityClassifier):
    """Logistic regression over hashed word uni+bigrams (numpy only), the documented fastText stand-in.

    Features: lower-cased word and punctuation tokens, unigrams and bigrams hashed (crc32) into ``buckets`` slots,
    counts L2-normalised per document. Training: ``epochs`` of shuffled mini-batch SGD on the log loss with L2
    ``l2``; deterministic for ``seed``.
    """

    kind = "hashed_ngram_logreg"

    def __init__(self, buckets: int = 2**18, epochs: int = 10, lr: float = 0.5, l2: float = 1e-6,
                 batch_size: int = 32, seed: int = 0):
        if buckets < 2 or epochs < 1 or lr <= 0 or l2 < 0 or batch_size < 1:
            raise ValueError(f"bad hyper-parameters buckets={buckets} epochs={epochs} lr={lr} l2={l2} "
                             f"batch_size={batch_size}")
        self.config = {"buckets": buckets, "epochs": epochs, "lr": lr, "l2": l2, "batch_size": batch_size,
                       "seed": seed}
        self.w: Any = None
        self.b = 0.0

    def features(self, text: str) -> tuple[Any, Any]:
        """(bucket indices, L2-normalised counts) of one text."""
        import numpy as np

        toks = _WORD.findall(clean_line(text).lower())
        grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
        if not grams:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.fromiter((zlib.crc32(g.encode("utf-8")) % self.config["buckets"] for g in grams), dtype=np.int64)
        uniq, counts = np.unique(idx, return_counts=True)
        vals = counts.astype(np.float64)
        return uniq, vals / np.linalg.norm(vals)

    def _logits(self, feats: Sequence[tuple[Any, Any]]) -> Any:
        import numpy as np

        return np.array([float(self.w[i] @ v) + self.b for i, v in feats])

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> HashedNgramClassifier:
        import numpy as np

        if len(texts) != len(labels) or not texts:
            raise ValueError(f"fit needs equal, non-zero numbers of texts and labels, got {len(texts)}/{len(labels)}")
        cfg = self.config
        feats = [self.features(t) for t in texts]
        y = np.asarray(labels, dtype=np.float64)
        self.w = np.zeros(cfg["buckets"])
        self.b = 0.0
        rng = np.random.default_rng(cfg["seed"])
        for _ in range(cfg["epochs"]):
            order = rng.permutation(len(feats))
            for s in range(0, len(order), cfg["batch_size"]):
                batch = order[s:s + cfg["batch_size"]]
                z = self._logits([feats[i] for i in batch])
                p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
                g = (p - y[batch]) / len(batch)
                for gi, i in zip(g, batch, strict=True):
                    idx, v = feats[i]
                    self.w[idx] -= cfg["lr"] * gi * v
                self.b -= cfg["lr"] * float(g.sum())
                if cfg["l2"]:
                    self.w *= 1.0 - cfg["lr"] * cfg["l2"]
        return self

    def score(self, texts: Sequence[str]) -> list[float]:
        import numpy as np

        if self.w is None:
            raise RuntimeError("call fit() (or load()) before score()")
        z = self._logits([self.features(t) for t in texts])
        return [float(x) for x in 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))]

    def save(self, path: str | Path) -> Path:
        import numpy as np

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez_compressed(tmp, w=self.w, b=np.array([self.b]), config=np.array(json.dumps(self.config)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HashedNgramClassifier:
        import numpy as np

        data = np.load(path, allow_pickle=False)
        obj = cls(**json.loads(str(data["config"])))
        obj.w, obj.b = data["w"], float(data["b"][0])
        return obj


def make_classifier(kind: str = "auto", **kwargs: Any) -> QualityClassifier:
    """``"fasttext"``, ``"hashed"`` or ``"auto"`` (fastText when it imports, else the numpy fallback)."""
    if kind == "auto":
        kind = "fasttext" if fasttext_available() else "hashed"
    if kind == "fasttext":
        return FastTextClassifier(**kwargs)
    if kind in ("hashed", HashedNgramClassifier.kind):
        return HashedNgramClassifier(**kwargs)
    raise ValueError(f"unknown classifier kind {kind!r}; choose 'auto', 'fasttext' or 'hashed'")
