"""Preference-pair loaders for judge evaluation: LLMBar, MT-Bench human judgements, and JSONL files.

Every loader returns :class:`PreferencePair` rows (``prompt``/``chosen``/``rejected``, TRL's preference
layout) with a ``subset`` (the RewardBench subset name where RewardBench has one) and a ``source`` (the file).
The files are the byte-exact copies in ``../shared/data`` (spec/loops.md §7.1); the path is always passed in,
:func:`default_data_root` resolves the default ``<repo root>/../shared/data`` (override: ``$LOOPWRIGHT_DATA``).

- LLMBar (Zeng et al., ICLR 2024; princeton-nlp/LLMBar @900616b): five JSON files of
  ``{input, output_1, output_2, label}`` with ``label`` 1 or 2 (the better output). RewardBench copied them as
  its Chat-Hard ``llmbar-*`` subsets (sizes 100/134/92/47/46), so the subset names here are RewardBench's.
- MT-Bench human (Zheng et al., NeurIPS 2023): the copy in ``llmbar/Processed_MT-Bench_human.json`` is LLMBar's
  processing of the MT-Bench expert judgements: 200 single-turn pairs (first turn only; LLMBar dropped ties
  and turn 2), same schema. The provided file holds no ties; ``keep_ties`` governs files that do (label 0,
  3, ``"tie"``, or FastChat's ``winner: tie*``), see :func:`load_mt_bench_human`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopwright.sdk.types import Prompt

__all__ = [
    "LLMBAR_SUBSETS",
    "PreferencePair",
    "default_data_root",
    "load_llmbar",
    "load_mt_bench_human",
    "load_pairs",
    "load_preference_jsonl",
]

LLMBAR_SUBSETS: dict[str, str] = {
    "Natural.json": "llmbar-natural",
    "Adversarial_Neighbor.json": "llmbar-adver-neighbor",
    "Adversarial_GPTInst.json": "llmbar-adver-GPTInst",
    "Adversarial_GPTOut.json": "llmbar-adver-GPTOut",
    "Adversarial_Manual.json": "llmbar-adver-manual",
}
"""LLMBar file -> RewardBench subset name (allenai/reward-bench ``SUBSET_MAPPING``, Chat Hard section)."""

MT_BENCH_HUMAN_FILE = "llmbar/Processed_MT-Bench_human.json"

_TIE_LABELS = {"0", "3", "tie", "c", "[[c]]"}


class PreferencePair(BaseModel):
    """One gold preference: ``chosen`` is better than ``rejected`` for ``prompt`` (or they tie when ``tie``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    prompt: Prompt
    chosen: str
    rejected: str
    subset: str = "default"
    source: str = ""
    tie: bool = False
    """A human tie: neither is better. ``chosen``/``rejected`` are then just the file's order."""
    meta: dict[str, Any] = Field(default_factory=dict)


def default_data_root() -> Path:
    """``$LOOPWRIGHT_DATA`` if set, else ``<repo root>/../shared/data`` (the repo root is this package's root)."""
    env = os.environ.get("LOOPWRIGHT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _root(root: str | Path | None) -> Path:
    path = Path(root) if root is not None else default_data_root()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data root {path} is not a directory; pass the folder holding llmbar/ and mt_bench/ "
            "(default: <repo>/../shared/data, or set $LOOPWRIGHT_DATA)"
        )
    return path


def _label(value: Any, where: str) -> str:
    """Normalise a gold label to '1', '2' or 'tie'; raise naming the row for anything else."""
    s = str(value).strip().lower()
    if s in ("1", "2"):
        return s
    if s in _TIE_LABELS or s.startswith("tie"):
        return "tie"
    if s in ("model_a", "a"):
        return "1"
    if s in ("model_b", "b"):
        return "2"
    raise ValueError(f"{where}: label {value!r} is not one of 1, 2, model_a, model_b or a tie label")


def _from_llmbar_rows(rows: Iterable[dict[str, Any]], *, subset: str, source: str, id_prefix: str,
                      keep_ties: bool, start: int = 0) -> list[PreferencePair]:
    out: list[PreferencePair] = []
    for i, row in enumerate(rows, start):
        where = f"{source} row {i}"
        missing = [k for k in ("input", "output_1", "output_2", "label") if k not in row]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}; expected LLMBar's {{input, output_1, output_2, label}}")
        lab = _label(row["label"], where)
        if lab == "tie" and not keep_ties:
            continue
        first, second = str(row["output_1"]), str(row["output_2"])
        chosen, rejected = (second, first) if lab == "2" else (first, second)
        out.append(PreferencePair(id=str(row.get("id", f"{id_prefix}/{i}")), prompt=str(row["input"]), chosen=chosen, rejected=rejected,
                                  subset=subset, source=source, tie=lab == "tie"))
    return out


def _read_json_list(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data


def load_llmbar(root: str | Path | None = None, subsets: Iterable[str] | None = None) -> list[PreferencePair]:
    """All five LLMBar subsets (419 pairs), in file order, named as RewardBench names them.

    ``root`` is the shared data folder (holding ``llmbar/``); ``subsets`` restricts to some RewardBench names
    (e.g. ``["llmbar-natural"]``).
    """
    base = _root(root) / "llmbar"
    wanted = set(subsets) if subsets is not None else set(LLMBAR_SUBSETS.values())
    unknown = wanted - set(LLMBAR_SUBSETS.values())
    if unknown:
        raise ValueError(f"unknown LLMBar subsets {sorted(unknown)}; choose from {sorted(LLMBAR_SUBSETS.values())}")
    pairs: list[PreferencePair] = []
    for fname, subset in LLMBAR_SUBSETS.items():
        if subset not in wanted:
            continue
        path = base / fname
        if not path.is_file():
            raise FileNotFoundError(f"LLMBar file {path} not found (expected {sorted(LLMBAR_SUBSETS)} in {base})")
        pairs += _from_llmbar_rows(_read_json_list(path), subset=subset, source=f"llmbar/{fname}",
                                   id_prefix=subset, keep_ties=False)
    return pairs


def load_mt_bench_human(root: str | Path | None = None, *, keep_ties: bool = False) -> list[PreferencePair]:
    """The 200 MT-Bench human-judged pairs (LLMBar's processed copy; first turn only, as LLMBar processed it).

    Gold = the human expert's winner (label 1 -> ``output_1`` chosen). Ties: dropped by default (the usual
    "agreement without ties" protocol of the MT-Bench paper); ``keep_ties=True`` keeps them as ``tie=True``
    pairs, which :func:`~loopwright.judges.evaluation.evaluate` scores as correct only for a tie verdict.
    The provided file holds no ties (LLMBar removed them), so both settings give 200 pairs on it.
    """
    path = _root(root) / MT_BENCH_HUMAN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"MT-Bench human file {path} not found")
    return _from_llmbar_rows(_read_json_list(path), subset="mt-bench-human", source=MT_BENCH_HUMAN_FILE,
                             id_prefix="mt-bench-human", keep_ties=keep_ties)


def load_preference_jsonl(path: str | Path, *, keep_ties: bool = False) -> list[PreferencePair]:
    """A JSONL (or JSON array) file of preference pairs, in either layout:

    - TRL's ``{prompt, chosen, rejected}`` (optional ``id``, ``subset``; ``prompt`` may be chat messages);
    - LLMBar's ``{input, output_1, output_2, label}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference file {path} not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for ln, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{ln}: not valid JSON ({e.msg})") from None
    pairs: list[PreferencePair] = []
    stem = path.stem
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path} row {i}: expected an object, got {type(row).__name__}")
        if {"prompt", "chosen", "rejected"} <= row.keys():
            tie = bool(row.get("tie", False))
            if tie and not keep_ties:
                continue
            pairs.append(PreferencePair(id=str(row.get("id", f"{stem}/{i}")), prompt=row["prompt"],
                                        chosen=str(row["chosen"]), rejected=str(row["rejected"]),
                                        subset=str(row.get("subset", stem)), source=str(path.name), tie=tie))
        elif {"input", "output_1", "output_2", "label"} <= row.keys():
            pairs += _from_llmbar_rows([row], subset=str(row.get("subset", stem)), source=path.name,
                                       id_prefix=stem, keep_ties=keep_ties, start=i)
        else:
            raise ValueError(
                f"{path} row {i}: keys {sorted(row)} match neither {{prompt, chosen, rejected}} (TRL) "
                "nor {input, output_1, output_2, label} (LLMBar)"
            )
    return pairs


DATASETS = ("llmbar", "mt_bench")


def load_pairs(name_or_path: str | Path, root: str | Path | None = None) -> list[PreferencePair]:
    """Gold pairs by name: ``"llmbar"``, ``"mt_bench"`` (the human pairs), or a path to a ``.jsonl``/``.json`` preference file."""
    name = str(name_or_path)
    if name == "llmbar":
        return load_llmbar(root)
    if name in ("mt_bench", "mt_bench_human", "mt-bench"):
        return load_mt_bench_human(root)
    p = Path(name)
    if p.suffix in (".jsonl", ".json"):
        return load_preference_jsonl(p)
    raise ValueError(f"unknown dataset {name!r}; use one of {list(DATASETS)} or a path to a .jsonl/.json file")
