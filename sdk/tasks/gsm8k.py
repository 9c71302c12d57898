"""GSM8K-format loading and answer checking (spec/loops.md §0.3, §7.1).

Gold answers follow GSM8K's convention: the solution text, then ``#### <number>``. Model answers are read from
after the last ``####`` when present, else the last number in the text. Commas and ``$`` are stripped. A text with
no number yields ``None``: an unreadable answer is data, never a default value.

Only ``gsm8k/train.jsonl`` is provided in ``../shared/data``; carve a validation part from it with
:func:`train_validation_split` (fixed seed).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

# 1,234,567 | 1234 | 12.5 | .5 with an optional $ and a minus sign (not one that follows a word or digit, so
# "10-5" reads as 10 and 5); commas only in thousands groups.
_NUMBER = re.compile(r"(?:(?<![\w.])-)?\$?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")

T = TypeVar("T")


class GSM8KProblem(BaseModel):
    """One GSM8K row: ``question``, the full ``answer`` text and the ``gold`` number (a string, e.g. ``"72"``)."""

    id: str
    question: str
    answer: str
    gold: str

    @property
    def gold_value(self) -> float:
        return float(self.gold)


def _clean_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip()
    if s.startswith("-."):
        s = "-0" + s[1:]
    elif s.startswith("."):
        s = "0" + s
    return s


def extract_gold_answer(answer_text: str) -> str:
    """The gold number of a GSM8K answer: the text after ``####`` with commas and ``$`` stripped.

    Raises ``ValueError`` naming the text when there is no ``####`` or no number after it.
    """
    if "####" not in answer_text:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer_text[-80:]!r}")
    tail = answer_text.rsplit("####", 1)[1]
    m = _NUMBER.search(tail)
    if m is None:
        raise ValueError(f"no number after '####' in GSM8K answer: {tail[:80]!r}")
    return _clean_number(m.group(0))


def extract_model_answer(text: str | None) -> str | None:
    """The final number of a model output, or ``None`` when there is none.

    After the last ``####`` when present (then the first number there; ``None`` if it has none), else the last
    number in the text. Commas and ``$`` are stripped: ``"#### $1,200"`` -> ``"1200"``.
    """
    if not text:
        return None
    if "####" in text:
        m = _NUMBER.search(text.rsplit("####", 1)[1])
        return _clean_number(m.group(0)) if m else None
    matches = _NUMBER.findall(text)
    return _clean_number(matches[-1]) if matches else None


def is_correct(pred: str | float | int | None, gold: str | float | int, tol: float = 1e-6) -> bool:
    """Whether ``pred`` equals ``gold`` numerically within ``tol`` (absolute). ``None`` or garbage is wrong."""
    if pred is None:
        return False
    try:
        p = float(_clean_number(pred)) if isinstance(pred, str) else float(pred)
        g = float(_clean_number(gold)) if isinstance(gold, str) else float(gold)
    except ValueError:
        return False
    if not (math.isfinite(p) and math.isfinite(g)):
        return False
    return abs(p - g) <= tol


def load_gsm8k(path: str | Path) -> list[GSM8KProblem]:
    """Load a GSM8K jsonl file (``{question, answer}`` per line) into :class:`GSM8KProblem` rows.

    Ids are ``<file stem>-<line index>``. Raises ``FileNotFoundError`` / ``ValueError`` naming the path and line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"GSM8K file not found: {p} (expected e.g. ../shared/data/gsm8k/train.jsonl)")
    rows: list[GSM8KProblem] = []
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                rows.append(GSM8KProblem(id=f"{p.stem}-{i}", question=d["question"], answer=d["answer"],
                                         gold=extract_gold_answer(d["answer"])))
            except (json.JSONDecodeError, KeyError, ValueError) as e:
                raise ValueError(f"{p}:{i + 1}: not a GSM8K row ({e})") from e
    return rows


def train_validation_split(rows: Sequence[T], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[T], list[T]]:
    """Deterministic split of ``rows`` into (train, validation); both keep the original order.

    The validation part has ``round(len(rows) * val_fraction)`` rows chosen by a seeded shuffle of the indices.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1), e.g. 0.1")
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_val = round(len(rows) * val_fraction)
    val_idx = set(idx[:n_val])
    train = [r for i, r in enumerate(rows) if i not in val_idx]
    val = [r for i, r in enumerate(rows) if i in val_idx]
    return train, val
