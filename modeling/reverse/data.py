"""Mixing forward and reversed training data (reverse training, arXiv 2403.13799; spec/modeling.md §4.1, §4.4).

Two entry points, both seeded:

- :func:`reverse_map` builds a function for ``datasets.Dataset.map(fn, batched=True)`` that emits every forward row
  and, with probability ``ratio`` (1.0 = the paper's "every sample twice"), its reversed twin (text level: word,
  entity or random-segment reversal of a text column; token reversal of the tokenizer's ids). Rows carry a
  ``reversed`` flag; other columns are copied to the twin.
- :class:`ReverseCollator` works on tokenised rows at batch time: each row is reversed with probability ``ratio``
  (or, with ``append=True``, a reversed twin is added), so random segmentations are resampled every epoch. A leading
  BOS and trailing EOS stay in place; loss masks are permuted with their tokens (separators are supervised).

Whether a twin exists depends only on ``seed`` and the row's content (``random.Random(f"{seed}|{text}")``), so the
map is reproducible and independent of sharding; the collator draws from one ``random.Random(seed)`` in call order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from .transforms import (
    EntityDetector,
    find_entity_spans,
    random_segment_lengths,
    reverse_random_segments,
    reverse_segments,
    reverse_units,
    reverse_words,
)

__all__ = ["ReverseCollator", "reverse_map", "reverse_token_row"]

_MODES = ("token", "word", "entity", "rand")


def _check(mode: str, ratio: float, k: int | None) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not one of {_MODES}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio} must be in [0, 1] (the probability that a row gets a reversed version)")
    if mode == "rand" and (k is None or k < 1):
        raise ValueError(f"mode='rand' needs the maximum segment length k >= 1, got k={k}")


def reverse_map(mode: str, *, text_column: str = "text", ratio: float = 1.0, seed: int = 0,
                entities: Sequence[str] | None = None, entities_column: str | None = None,
                detector: EntityDetector | None = None, k: int | None = None, sep: str | None = "[REV]",
                tokenizer: Any = None) -> Callable[[dict[str, list]], dict[str, list]]:
    """A batched ``datasets`` map function adding reversed twins (see the module docstring).

    ``entity`` mode takes a fixed ``entities`` list, a per-row ``entities_column`` (a list of strings per row) or a
    ``detector``. ``token`` mode needs ``tokenizer``: it writes ``input_ids`` for every row (forward ids, or reversed
    ids without special tokens) next to the text. Use with ``ds.map(fn, batched=True)``.
    """
    _check(mode, ratio, k)
    if mode == "token" and tokenizer is None:
        raise ValueError("mode='token' reverses token ids: pass tokenizer=")
    if mode == "entity" and sum(x is not None for x in (entities, entities_column, detector)) != 1:
        raise ValueError("mode='entity' needs exactly one of entities=, entities_column= or detector=")

    def reverse_text(text: str, row_entities: Sequence[str] | None, rng: random.Random) -> str:
        if mode == "word":
            return reverse_words(text)
        if mode == "rand":
            return reverse_random_segments(text, k, rng, sep)  # type: ignore[arg-type]
        words = text.split()
        spans = detector(words) if detector is not None else find_entity_spans(words, row_entities or [])
        return " ".join(reverse_units(words, spans))

    def fn(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {key: [] for key in batch}
        out["reversed"] = []
        if mode == "token":
            out["input_ids"] = []
        for i, text in enumerate(batch[text_column]):
            row = {key: values[i] for key, values in batch.items()}
            rng = random.Random(f"{seed}|{text}")
            twins = [(row, False)]
            if rng.random() < ratio:
                twin = dict(row)
                if mode == "token":
                    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                    twin["input_ids"] = ids[::-1]
                    twin[text_column] = tokenizer.decode(ids[::-1])
                else:
                    twin[text_column] = reverse_text(text, row.get(entities_column) if entities_column else entities,
                                                     rng)
                twins.append((twin, True))
            for r, is_rev in twins:
                if mode == "token" and not is_rev:
                    r = {**r, "input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
                for key in out:
                    if key != "reversed":
                        out[key].append(r[key])
                out["reversed"].append(is_rev)
        return out

    return fn


def reverse_token_row(input_ids: Sequence[int], mode: str, *, loss_mask: Sequence[int] | None = None,
                      entity_spans: Sequence[tuple[int, int]] = (), k: int | None = None,
                      rng: random.Random | None = None, sep_id: int | None = None, bos_id: int | None = None,
                      eos_id: int | None = None) -> tuple[list[int], list[int]]:
    """Reverse one tokenised row, keeping a leading ``bos_id`` and trailing ``eos_id`` in place.

    ``entity_spans`` are token spans in ``input_ids`` coordinates (BOS included). Returns ``(ids, loss_mask)``;
    the mask follows its tokens and separators get 1.
    """
    ids = list(input_ids)
    mask = list(loss_mask) if loss_mask is not None else [1] * len(ids)
    head = 1 if bos_id is not None and ids[:1] == [bos_id] else 0
    tail = 1 if eos_id is not None and len(ids) > head and ids[-1] == eos_id else 0
    body = list(zip(ids[head: len(ids) - tail], mask[head: len(ids) - tail], strict=True))
    if mode in ("token", "word"):
        new_body = body[::-1]
    elif mode == "entity":
        spans = [(s - head, e - head) for s, e in entity_spans]
        new_body = reverse_units(body, spans)
    elif mode == "rand":
        lengths = random_segment_lengths(len(body), k, rng or random.Random(0))  # type: ignore[arg-type]
        new_body = reverse_segments(body, lengths, None if sep_id is None else (sep_id, 1))
    else:
        raise ValueError(f"mode={mode!r} is not one of {_MODES}")
    out_ids = ids[:head] + [t for t, _ in new_body] + ids[len(ids) - tail:]
    out_mask = mask[:head] + [m for _, m in new_body] + mask[len(ids) - tail:]
    return out_ids, out_mask


class ReverseCollator:
    """Pads tokenised rows into a batch, reversing each with probability ``ratio`` (see the module docstring).

    Rows are dicts with ``input_ids`` and optionally ``loss_mask`` and ``entity_spans`` (token spans, for
    ``mode="entity"``). The batch has ``input_ids``, ``attention_mask``, ``labels`` (-100 at padding and where the loss
    mask is 0) and ``reversed`` (bool per row).
    """

    def __init__(self, mode: str, *, ratio: float = 0.5, seed: int = 0, append: bool = False, k: int | None = None,
                 pad_id: int = 0, sep_id: int | None = None, bos_id: int | None = None, eos_id: int | None = None):
        _check(mode, ratio, k)
        self.mode, self.ratio, self.append, self.k = mode, ratio, append, k
        self.pad_id, self.sep_id, self.bos_id, self.eos_id = pad_id, sep_id, bos_id, eos_id
        self.rng = random.Random(seed)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows: list[tuple[list[int], list[int], bool]] = []
        for feature in features:
            ids = list(feature["input_ids"])
            mask = list(feature.get("loss_mask") or [1] * len(ids))
            flip = self.rng.random() < self.ratio
            if self.append or not flip:
                rows.append((ids, mask, False))
            if flip:
                rev_ids, rev_mask = reverse_token_row(ids, self.mode, loss_mask=mask,
                                                      entity_spans=feature.get("entity_spans") or (), k=self.k,
                                                      rng=self.rng, sep_id=self.sep_id, bos_id=self.bos_id,
                                                      eos_id=self.eos_id)
                rows.append((rev_ids, rev_mask, True))
        length = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for b, (ids, mask, _) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n] = torch.tensor(ids)
            attention[b, :n] = 1
            labels[b, :n] = torch.where(torch.tensor(mask, dtype=torch.bool), torch.tensor(ids), -100)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
                "reversed": torch.tensor([r for _, _, r in rows])}
