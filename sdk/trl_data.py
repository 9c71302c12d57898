"""Loop outputs as ``datasets.Dataset`` in TRL's formats (issue 17 item 17).

The loops write TRL rows to JSONL already (``train_pairs.jsonl``, RIP's kept pairs, the Self-Taught judge's SFT
rows); :func:`to_dataset` turns such rows, or such a file, into the ``Dataset`` a TRL trainer takes:

- **preference** (``DPOTrainer``, ``RewardTrainer``): ``prompt`` / ``chosen`` / ``rejected``, standard (strings) or
  conversational (message lists), passed through verbatim;
- **sft** (``SFTTrainer``): TRL's prompt-completion format. loopwright's own SFT rows (``prompt`` / ``target``,
  what :func:`~loopwright.trainers.sft.sft_train` takes) become ``prompt`` / ``completion``: a string prompt
  keeps a string completion, a chat prompt gets ``[{"role": "assistant", "content": target}]``; ``messages``
  rows (TRL's conversational language-modeling format) and ``prompt`` / ``completion`` rows pass through.

Only the TRL columns are kept by default: provenance columns (judge verdicts, scores, ids) are nested and vary
from row to row, which Arrow cannot always type; ``keep_extra=True`` keeps them. A row missing a column raises
naming the row and the columns found, so a wrong file fails here rather than inside a trainer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

__all__ = ["PREFERENCE_COLUMNS", "to_dataset", "to_trl_rows"]

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
Kind = Literal["preference", "sft"]


def _kind_of(row: dict[str, Any]) -> Kind:
    if all(k in row for k in PREFERENCE_COLUMNS):
        return "preference"
    if "messages" in row or ("prompt" in row and ("target" in row or "completion" in row)):
        return "sft"
    raise ValueError(f"row with columns {sorted(row)} is neither a preference row (prompt/chosen/rejected) nor an "
                     "SFT row (messages, prompt/completion or prompt/target)")


def _sft_row(row: dict[str, Any]) -> dict[str, Any]:
    if "messages" in row:
        return {"messages": row["messages"]}
    if "completion" in row:
        return {"prompt": row["prompt"], "completion": row["completion"]}
    prompt, target = row["prompt"], row["target"]
    if isinstance(prompt, str):
        return {"prompt": prompt, "completion": target}
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": target}]}


def to_trl_rows(rows: Iterable[dict[str, Any]], kind: Kind | None = None, *,
                keep_extra: bool = False) -> list[dict[str, Any]]:
    """``rows`` in TRL's ``kind`` format (default: detected from the first row); see the module docstring."""
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"row {i} is a {type(row).__name__}, not a JSON object")
        kind = kind or _kind_of(row)
        if kind == "preference":
            missing = [k for k in PREFERENCE_COLUMNS if k not in row]
            if missing:
                raise ValueError(f"row {i} has no {', '.join(missing)} (columns: {sorted(row)}); a preference row "
                                 "needs prompt/chosen/rejected")
            trl = {k: row[k] for k in PREFERENCE_COLUMNS}
        elif kind == "sft":
            if "messages" not in row and not ("prompt" in row and ("target" in row or "completion" in row)):
                raise ValueError(f"row {i} (columns: {sorted(row)}) is not an SFT row: it needs messages, "
                                 "prompt/completion or prompt/target")
            trl = _sft_row(row)
        else:
            raise ValueError(f"kind={kind!r}; use 'preference' or 'sft'")
        if keep_extra:
            trl.update({k: v for k, v in row.items() if k not in trl and k != "target"})
        out.append(trl)
    return out


def to_dataset(rows: Iterable[dict[str, Any]] | str | Path, kind: Kind | None = None, *,
               keep_extra: bool = False) -> Any:
    """A ``datasets.Dataset`` of ``rows`` (or of the JSONL file at that path) in TRL's ``kind`` format."""
    from datasets import Dataset

    if isinstance(rows, (str, Path)):
        from .artifacts import iter_jsonl

        path = Path(rows)
        if not path.is_file():
            raise FileNotFoundError(f"no JSONL file at {path}")
        rows = iter_jsonl(path)
    trl = to_trl_rows(rows, kind, keep_extra=keep_extra)
    if not trl:
        raise ValueError("no rows: an empty dataset cannot train anything")
    return Dataset.from_list(trl)
