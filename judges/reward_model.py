"""``RewardModelJudge``: a sequence-classification reward model (``num_labels=1``) as a batched Judge.

It loads exactly the artifact TRL's ``RewardTrainer`` saves (``AutoModelForSequenceClassification`` +
tokenizer; spec/ecosystem.md §4.1 "Reward models"), so one folder serves TRL (``reward_funcs=<path>``) and
loopwright. Inputs are rendered the way ``RewardTrainer`` tokenizes its conversational rows: the chat
``[user prompt, assistant response]`` through the tokenizer's chat template (a string prompt becomes one user
message; a message-list prompt is used as is), no generation prompt.

The reward is the model's own pooled logit: transformers' ``GenericForSequenceClassification`` reads the logit
at the *rightmost token that is not* ``config.pad_token_id``, the same rule used in training. Batches are right
padded (the causal mask keeps real tokens blind to the padding, so batched and one-by-one scores agree up to
float rounding) and sorted by length to cut padding. If the config has no ``pad_token_id`` (the forward then
refuses batches > 1) it is taken from the tokenizer, falling back to EOS, as ``RewardTrainer`` does.

``compare`` turns the reward difference into a Bradley-Terry preference, ``p_a = sigmoid(r_a - r_b)``
(the model RewardTrainer fits: ``-log sigmoid(r_chosen - r_rejected)``). Each response is scored on its own, so
the verdict cannot depend on the order A/B are shown; ``swap.consistent`` is True by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..sdk.judge import Judge
from ..sdk.models import resolve_model_path
from ..sdk.types import JudgeProvenance, Prompt, SwapRecord, Usage, Verdict, normalize_prompt, stable_hash
from .adapters.trl import RewardFuncMixin

__all__ = ["PARSER_VERSION", "RewardModelJudge"]

PARSER_VERSION = "reward_model/1"
"""Version of the reward read-out (pooled logit at the last non-pad token); part of every Verdict's provenance."""


class RewardModelJudge(RewardFuncMixin, Judge):
    """A reward model judge: ``score`` -> reward, ``compare`` -> Bradley-Terry preference, ``rank`` -> by reward.

    Args:
        model: a folder (or hub id, offline here) holding a sequence-classification model with ``num_labels=1``
            (a causal-LM folder also loads, with a new random head: only useful for tests), or a loaded
            ``PreTrainedModel`` of that kind.
        tokenizer: the tokenizer (default: loaded from ``model``'s folder). It needs a chat template.
        batch_size: sequences per forward pass.
        device: torch device (default: CUDA when available, else CPU).
        max_length: longest input in tokens (default: the model's ``max_position_embeddings``). Longer inputs
            give an invalid Verdict (``truncate=False``) or keep their *last* ``max_length`` tokens
            (``truncate=True``: the reward is read at the end, so the end is what must survive).
        truncate: see ``max_length``.
        tie_eps: ``compare`` calls a tie when ``|r_a - r_b| <= tie_eps``.
        name: the judge's name (TRL logs ``rewards/<name>/mean``); default ``reward_model``.
        num_threads: torch CPU threads while scoring (restored afterwards); ``None`` leaves them alone. On the
            2-core machine shared with other jobs, scoring 200 sandbox answers took 15.9 s with torch's default 2
            threads and 2.0 s with 1 (the same contention effect as in ``SandboxConfig.num_threads``).
    """

    kinds: ClassVar[frozenset[str]] = frozenset({"pointwise", "pairwise", "rank"})
    both_orders: ClassVar[bool] = True
    """Order-free: A and B are scored independently, which is what judging both orders would establish; every
    pairwise Verdict records ``swap=SwapRecord(forward=p, reverse=p, consistent=True)``."""

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        batch_size: int = 16,
        device: str | None = None,
        max_length: int | None = None,
        truncate: bool = False,
        tie_eps: float = 0.0,
        name: str = "reward_model",
        num_threads: int | None = None,
    ) -> None:
        if isinstance(model, (str, Path)):
            model = resolve_model_path(model)  # one clear line before any loading
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if tie_eps < 0:
            raise ValueError(f"tie_eps={tie_eps} must be >= 0")
        if isinstance(model, (str, Path)):
            model_id = str(model)
            folder = Path(model)
            if folder.exists() and not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{folder} has no config.json; pass a folder saved by RewardTrainer")
            loaded = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(model_id)
        else:
            loaded = model
            model_id = str(getattr(loaded.config, "_name_or_path", "") or type(loaded).__name__)
            if tokenizer is None:
                raise ValueError("pass tokenizer= when model is an already loaded model object")
        num_labels = getattr(loaded.config, "num_labels", None)
        if num_labels != 1:
            raise ValueError(f"a reward model needs num_labels=1, got num_labels={num_labels} for {model_id}")
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"the tokenizer of {model_id} has no chat_template; set tokenizer.chat_template")
        text_cfg = loaded.config.get_text_config()
        if text_cfg.pad_token_id is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            if pad is None:
                raise ValueError(f"{model_id}: neither config.pad_token_id nor tokenizer pad/eos token is set")
            text_cfg.pad_token_id = pad
        self.pad_token_id: int = int(text_cfg.pad_token_id)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = loaded.to(self.device).eval()  # torch inference mode (safe: not Python eval)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        limit = getattr(text_cfg, "max_position_embeddings", None)
        self.max_length = max_length or limit or 2048
        if limit and self.max_length > limit:
            raise ValueError(f"max_length={self.max_length} exceeds the model's max_position_embeddings={limit}")
        self.truncate = truncate
        self.tie_eps = tie_eps
        self.name = name
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads={num_threads} must be >= 1 (or None to leave torch's setting alone)")
        self.num_threads = num_threads
        self.provenance = JudgeProvenance(
            model=model_id,
            revision=getattr(loaded.config, "_commit_hash", None),
            template_id="chat_template",
            template_hash=stable_hash(tokenizer.chat_template),
            parser_version=PARSER_VERSION,
        )

    # ------------------------------------------------------------------------------------------ rendering

    def _conversation(self, prompt: Prompt, response: str) -> list[dict[str, Any]]:
        p = normalize_prompt(prompt)
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        return [*msgs, {"role": "assistant", "content": response}]

    def _encode(self, prompt: Prompt, response: str) -> list[int]:
        enc = self.tokenizer.apply_chat_template(self._conversation(prompt, response), tokenize=True,
                                                 return_dict=True)
        return list(enc["input_ids"])

    # ------------------------------------------------------------------------------------------ scoring

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[float | None, str | None,
                                                                                         int, bool]]:
        """Per item: ``(reward or None, invalid_reason, input tokens, truncated)``. Never raises on an item."""
        import torch

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one response per prompt")
        out: list[tuple[float | None, str | None, int, bool]] = [(None, None, 0, False)] * len(prompts)
        todo: list[tuple[int, list[int], bool]] = []
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
            if not isinstance(r, str):
                out[i] = (None, f"response is {type(r).__name__}, not str", 0, False)
                continue
            try:
                ids = self._encode(p, r)
            except Exception as exc:  # a malformed prompt is an invalid item, not a failed batch
                out[i] = (None, f"could not render the chat: {type(exc).__name__}: {exc}"[:300], 0, False)
                continue
            truncated = False
            if not ids:
                out[i] = (None, "the rendered input is empty", 0, False)
                continue
            if len(ids) > self.max_length:
                if not self.truncate:
                    out[i] = (None, f"input has {len(ids)} tokens > max_length={self.max_length} "
                                    "(pass truncate=True to keep the last max_length tokens)", len(ids), False)
                    continue
                ids, truncated = ids[-self.max_length:], True
            if all(t == self.pad_token_id for t in ids):
                out[i] = (None, "the input is only padding tokens; the reward position is undefined", len(ids), False)
                continue
            todo.append((i, ids, truncated))
        todo.sort(key=lambda x: len(x[1]))
        threads_before = torch.get_num_threads()
        if self.num_threads is not None and todo:
            torch.set_num_threads(self.num_threads)
        try:
            self._forward(todo, out)
        finally:
            torch.set_num_threads(threads_before)
        return out

    def _forward(self, todo: list[tuple[int, list[int], bool]],
                 out: list[tuple[float | None, str | None, int, bool]]) -> None:
        import torch

        with torch.inference_mode():
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s:s + self.batch_size]
                width = max(len(ids) for _, ids, _ in chunk)
                input_ids = torch.full((len(chunk), width), self.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for j, (_, ids, _) in enumerate(chunk):
                    input_ids[j, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[j, :len(ids)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                    use_cache=False).logits
                for j, (i, ids, truncated) in enumerate(chunk):
                    value = float(logits[j, 0])
                    if math.isfinite(value):
                        out[i] = (value, None, len(ids), truncated)
                    else:
                        out[i] = (None, f"the reward model returned {value}", len(ids), truncated)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """One pointwise Verdict per (prompt, response): ``score`` = the reward (unbounded real)."""
        verdicts = []
        for reward, reason, n_tok, truncated in self.rewards(prompts, responses):
            usage = Usage(prompt_tokens=n_tok)
            if reward is None:
                verdicts.append(Verdict(kind="pointwise", valid=False, invalid_reason=reason, judge=self.provenance,
                                        usage=usage))
            else:
                verdicts.append(Verdict(
                    kind="pointwise", score=reward, raw=repr(reward), valid=True, judge=self.provenance, usage=usage,
                    reasoning=f"input truncated to its last {self.max_length} tokens" if truncated else None,
                ))
        return verdicts

    def compare(
        self, prompts: Sequence[Prompt], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[Verdict]:
        """Pairwise Verdicts from the reward difference: ``p_a = sigmoid(r_a - r_b)``; tie within ``tie_eps``."""
        if not (len(prompts) == len(responses_a) == len(responses_b)):
            raise ValueError(f"compare needs equal lengths, got {len(prompts)} prompts, {len(responses_a)} A "
                             f"and {len(responses_b)} B responses")
        n = len(prompts)
        scored = self.rewards([*prompts, *prompts], [*responses_a, *responses_b])
        verdicts = []
        for (ra, why_a, ta, _), (rb, why_b, tb, _) in zip(scored[:n], scored[n:], strict=True):
            usage = Usage(prompt_tokens=ta + tb)
            if ra is None or rb is None:
                reason = "; ".join(f"{k}: {w}" for k, w in (("A", why_a), ("B", why_b)) if w)
                verdicts.append(Verdict(kind="pairwise", valid=False, invalid_reason=reason, judge=self.provenance,
                                        usage=usage))
                continue
            diff = ra - rb
            pref = "tie" if abs(diff) <= self.tie_eps else ("A" if diff > 0 else "B")
            verdicts.append(Verdict(
                kind="pairwise", preference=pref, p_a=_sigmoid(diff), score=diff, raw=f"r_a={ra!r} r_b={rb!r}",
                valid=True, judge=self.provenance, usage=usage,
                reasoning="Bradley-Terry preference from the reward difference; each response is scored alone, "
                          "so the order of A and B cannot change the verdict",
                swap=SwapRecord(forward=pref, reverse=pref, consistent=True),
            ))
        return verdicts

    def rank(self, prompts: Sequence[Prompt], responses: Sequence[Sequence[str]]) -> list[Verdict]:
        """Per prompt: ``ranking`` = indices by reward, best first (stable on ties); invalid if any reward is."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} response lists")
        flat_p = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        scored = self.rewards(flat_p, flat_r)
        verdicts, k = [], 0
        for rs in responses:
            part = scored[k:k + len(rs)]
            k += len(rs)
            usage = Usage(prompt_tokens=sum(t for _, _, t, _ in part))
            bad = [f"{j}: {w}" for j, (r, w, _, _) in enumerate(part) if r is None]
            if bad or not rs:
                verdicts.append(Verdict(kind="rank", valid=False, judge=self.provenance, usage=usage,
                                        invalid_reason="; ".join(bad) or "no responses to rank"))
                continue
            values = [r for r, _, _, _ in part]
            order = sorted(range(len(values)), key=lambda j: -values[j])  # type: ignore[operator]
            verdicts.append(Verdict(kind="rank", ranking=order, samples=values, raw=repr(values), valid=True,
                                    judge=self.provenance, usage=usage))
        return verdicts


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)
