"""In-process generation with a Hugging Face causal LM: ``TransformersGenerator``.

Works for any ``AutoModelForCausalLM`` (including the custom MTA / CoPE / BTX architectures in ``modeling/``,
which vLLM cannot run) because decoding goes through the model's own ``generate`` (KV cache, its own
``prepare_inputs_for_generation``). What this class adds on top (DESIGN.md "The five interfaces"):

- batching: prompts are sorted by length and decoded ``batch_size`` sequences at a time with LEFT padding,
  results come back in input order (spec/performance.md §6.2 item 5: >= 3x tokens/s over a per-prompt loop
  at batch 16, and greedy tokens identical to per-prompt ``model.generate``);
- chat prompts rendered with the tokenizer's chat template (``add_generation_prompt=True``; a final
  assistant message is continued, :mod:`loopwright.sdk.chat_template`);
- stop strings checked on the decoded *completion* text only (like vLLM), cut before the first one;
- per-token logprobs (log-softmax of the logits before temperature / top-k / top-p), top-k alternatives;
- seeded sampling that does not depend on batching: every (prompt, sample index) pair gets its own
  ``torch.Generator`` seeded from ``(seed, prompt, sample index)``;
- ``score`` / ``score_many``: summed log p(continuation | prompt) in batched forward passes.

Nothing runs per token in Python beyond HF's own loop, except the optional logprob recorder (one
log-softmax per step), the seeded sampler (vectorised; its uniforms are drawn per row before decoding)
and the stop-string watcher (one batched decode of a short tail per step), each only when asked for.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..chat_template import render_chat
from ..errors import PromptTooLongError
from ..generator import Generator
from ..models import resolve_model_path
from ..types import Completion, Prompt, SamplingParams, Usage, normalize_prompt, prompt_key, stable_hash

__all__ = ["TransformersGenerator"]

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def _resolve_device(device: str | None) -> str:
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    return str(device)


def _resolve_dtype(dtype: Any, device: str) -> Any:
    """``"auto"``: float32 on CPU (bf16 matmuls are slow there), the checkpoint's dtype elsewhere."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.startswith("cpu") else "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return getattr(torch, _DTYPES[dtype])
    raise ValueError(f"dtype={dtype!r} is not supported; use 'auto', one of {sorted(_DTYPES)} or a torch.dtype")


def _row_seed(base: int, prompt: Prompt, sample_index: int) -> int:
    """A 60-bit seed for one (prompt, sample) pair: independent of the batch the row lands in."""
    return int(stable_hash([base, prompt_key(prompt), sample_index], length=15), 16)


class TransformersGenerator(Generator):
    """Generator over an in-process ``transformers`` causal LM.

    Args:
        model: a model folder / hub id (loaded with ``AutoModelForCausalLM``), or an already loaded
            ``PreTrainedModel`` (then ``tokenizer`` is required and the model is not moved unless ``device`` is given).
        tokenizer: a tokenizer or a path; defaults to the model path.
        device: ``"cpu"`` (default for paths), ``"auto"`` (cuda, then mps, then cpu) or any torch device string.
        dtype: ``"auto"`` (default: float32 on CPU, the checkpoint dtype elsewhere), ``"bfloat16"``, ... or a torch dtype.
        batch_size: sequences decoded together (prompts x samples); 16 is the batch the performance bar uses.
        revision, trust_remote_code: passed to ``from_pretrained``.
        max_context: context length used for the prompt-length check; default ``max_position_embeddings``
            from the model config (no check when the config has none).

    Determinism: greedy decoding is deterministic. With ``SamplingParams(seed=s)`` each completion is drawn with
    its own generator seeded from ``(s, prompt, sample index)``, so the same prompt and seed give the same
    samples on the same hardware / software, whatever else is in the batch — except that different padding
    can change logits in the last bits, which on rare near-ties flips a sampled token. Without a seed each
    call draws a fresh base seed.
    """

    backend: ClassVar[str] = "transformers"
    supports_score: ClassVar[bool] = True
    supports_logprobs: ClassVar[bool] = True

    def __init__(
        self,
        model: str | Path | Any,
        tokenizer: Any = None,
        *,
        device: str | None = None,
        dtype: Any = "auto",
        batch_size: int = 16,
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_context: int | None = None,
    ) -> None:
        if isinstance(model, (str, Path)):
            model = resolve_model_path(model, revision=revision)  # one clear line before any loading
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.batch_size = int(batch_size)
        self.revision = revision
        if isinstance(model, (str, Path)):
            self.device = _resolve_device(device or "cpu")
            self.model = AutoModelForCausalLM.from_pretrained(
                str(model), revision=revision, trust_remote_code=trust_remote_code,
                dtype=_resolve_dtype(dtype, self.device),
            ).to(self.device)
            self.model_id = str(model)
            tok_src = tokenizer if tokenizer is not None else str(model)
        elif isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise TypeError(
                    f"TransformersGenerator got a loaded model ({type(model).__name__}) but no tokenizer; "
                    "pass tokenizer=AutoTokenizer.from_pretrained(...) as well"
                )
            if not hasattr(model, "generate"):
                raise TypeError(
                    f"{type(model).__name__} has no .generate(); subclass transformers' PreTrainedModel + "
                    "GenerationMixin (every AutoModelForCausalLM does)"
                )
            self.model = model
            if device is not None:
                self.device = _resolve_device(device)
                self.model.to(self.device)
            else:
                self.device = str(next(model.parameters()).device)
            cfg = getattr(model, "config", None)
            self.model_id = str(getattr(cfg, "_name_or_path", "") or getattr(cfg, "name_or_path", "")
                                or type(model).__name__)
            tok_src = tokenizer
        else:
            raise TypeError(
                f"model must be a path / hub id or a loaded transformers model, got {type(model).__name__}"
            )
        if isinstance(tok_src, (str, Path)):
            tok_src = AutoTokenizer.from_pretrained(str(tok_src), revision=revision,
                                                    trust_remote_code=trust_remote_code)
        self.tokenizer = tok_src
        self.model.eval()  # torch inference mode (safe: not Python eval)

        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_token_ids: list[int] = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = getattr(gen_cfg, "pad_token_id", None)
        if pad is None:
            pad = self.eos_token_ids[0] if self.eos_token_ids else 0
        self.pad_token_id: int = int(pad)
        if max_context is None:
            text_cfg = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") \
                else self.model.config
            max_context = getattr(text_cfg, "max_position_embeddings", None)
        self.max_context: int | None = max_context
        self._token_text: dict[int, str] = {}

    # ------------------------------------------------------------------------------------------- prompts

    def template_hash(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return stable_hash(template) if template else None

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt`` (chat template applied to message lists)."""
        p = normalize_prompt(prompt)
        if isinstance(p, str):
            return p
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{self.model_id}'s tokenizer has no chat template, so chat prompts cannot be rendered; "
                "pass a string prompt or set tokenizer.chat_template"
            )
        return render_chat(self.tokenizer, p)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt: strings with the tokenizer's special tokens, chats via the template."""
        out: list[list[int]] = []
        for p in prompts:
            text = self.render(p)
            ids = self.tokenizer(text, add_special_tokens=isinstance(normalize_prompt(p), str))["input_ids"]
            if not ids:
                bos = self.tokenizer.bos_token_id
                if bos is None:
                    raise ValueError(f"prompt {p!r:.60} encodes to no tokens and the tokenizer has no BOS token")
                ids = [bos]
            out.append(list(ids))
        return out

    def _fit(self, ids: list[int], max_tokens: int, truncate: bool, index: int) -> list[int]:
        ctx = self.max_context
        if ctx is None or len(ids) + max_tokens <= ctx:
            return ids
        keep = ctx - max_tokens
        if not truncate or keep < 1:
            raise PromptTooLongError(len(ids), max_tokens, ctx, index=index)
        return ids[-keep:]

    # ------------------------------------------------------------------------------------------- generate

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        params = params or SamplingParams()
        prompts = list(prompts)
        if not prompts:
            return []
        ids = [self._fit(x, params.max_tokens, params.truncate_prompt, i) for i, x in enumerate(self.encode(prompts))]
        samples = 1 if params.greedy else params.n
        rows = [(i, j) for i in range(len(prompts)) for j in range(samples)]
        base_seed = params.seed if params.seed is not None else secrets.randbits(62)
        seeds = [None if params.greedy else _row_seed(base_seed, prompts[i], j) for i, j in rows]
        # Longest first: the first batch is the largest, so an out-of-memory shows up at once.
        order = sorted(range(len(rows)), key=lambda r: -len(ids[rows[r][0]]))
        done: dict[tuple[int, int], Completion] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            outs = self._generate_batch([ids[rows[r][0]] for r in chunk], [seeds[r] for r in chunk], params)
            for r, c in zip(chunk, outs, strict=True):
                done[rows[r]] = c
        results: list[list[Completion]] = []
        for i in range(len(prompts)):
            row = []
            for j in range(params.n):
                c = done[(i, 0 if params.greedy else j)]
                prompt_tokens = len(ids[i]) if j == 0 else 0
                row.append(c.model_copy(update={"usage": Usage(prompt_tokens=prompt_tokens,
                                                               completion_tokens=len(c.token_ids))}, deep=True))
            results.append(row)
        return results

    def _generate_batch(self, batch_ids: list[list[int]], seeds: list[int | None],
                        params: SamplingParams) -> list[Completion]:
        from transformers import GenerationConfig

        B, L = len(batch_ids), max(len(x) for x in batch_ids)
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        for r, x in enumerate(batch_ids):  # left padding
            input_ids[r, L - len(x):] = torch.tensor(x, dtype=torch.long)
            attention_mask[r, L - len(x):] = 1
        processors: list[Any] = []
        recorder = _LogprobRecorder(params.logprobs) if params.logprobs is not None else None
        if recorder is not None:
            processors.append(recorder)
        if not params.greedy:
            processors.append(_SeededSampler(params, [int(s) for s in seeds if s is not None], L))
        watcher = _StopWatcher(self.tokenizer, params.stop, L, B) if params.stop else None
        # Sampling, penalties and lengths are set explicitly so the model's generation_config.json cannot change
        # them: outputs are defined by SamplingParams (the cache key). Model-specific processors a config may
        # still add (suppress_tokens, bad_words_ids, ...) are kept. Sampling happens in _SeededSampler.
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_tokens, min_length=0, do_sample=False, num_beams=1,
            temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
            num_return_sequences=1, use_cache=True, eos_token_id=self.eos_token_ids or None,
            pad_token_id=self.pad_token_id, return_dict_in_generate=False,
        )
        with torch.inference_mode():
            seqs = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                generation_config=gen_cfg, logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([watcher] if watcher else []),
            )
            lp_BT = recorder.finish(seqs[:, -1]).cpu() if recorder is not None else None
        gen = seqs[:, L:].cpu().tolist()
        eos = set(self.eos_token_ids)
        outs = []
        for r, toks in enumerate(gen):
            end, finish = len(toks), "length"
            for t, tok in enumerate(toks):
                if tok in eos:
                    end, finish = t + 1, "stop"
                    break
            if watcher is not None and watcher.stop_step[r] is not None and watcher.stop_step[r] < end:
                end, finish = watcher.stop_step[r], "stop"
            toks = toks[:end]
            text = self.tokenizer.decode(toks, skip_special_tokens=True)
            stop_reason = None
            hit = _first_stop(text, params.stop)
            if hit is not None:
                pos, stop_reason = hit
                text, finish = text[:pos], "stop"
                toks = self._tokens_before(toks, text)
            elif finish == "length" and len(toks) < params.max_tokens:
                finish = "stop"  # the stop watcher fired on a match the full decode does not reproduce
            logprobs = top = None
            if lp_BT is not None and recorder is not None:
                logprobs = lp_BT[r, :len(toks)].tolist()
                if params.logprobs:
                    top = [self._top_dict(recorder, r, t) for t in range(len(toks))]
            outs.append(Completion(text=text, token_ids=toks, logprobs=logprobs, top_logprobs=top,
                                   finish_reason=finish, stop_reason=stop_reason))
        return outs

    def _tokens_before(self, toks: list[int], text: str) -> list[int]:
        """The longest token prefix whose decoding is a prefix of ``text`` (drops the stop string's tokens)."""
        for j in range(len(toks) - 1, -1, -1):
            if text.startswith(self.tokenizer.decode(toks[:j], skip_special_tokens=True)):
                return toks[:j]
        return []

    def _token_str(self, token_id: int) -> str:
        s = self._token_text.get(token_id)
        if s is None:
            s = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return s

    def _top_dict(self, recorder: _LogprobRecorder, r: int, t: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for v, i in zip(recorder.top_vals[t][r].tolist(), recorder.top_ids[t][r].tolist(), strict=True):
            out.setdefault(self._token_str(i), v)  # two ids may decode alike: keep the more likely
        return out

    # ------------------------------------------------------------------------------------------- score

    def score(self, prompt: Prompt, continuation: str) -> float:
        """Sum of log p(continuation tokens | prompt); a chat prompt is rendered with its template first."""
        return self.score_many([prompt], [continuation])[0]

    def score_many(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[float]:
        """Batched :meth:`score` (right-padded forward passes of ``batch_size`` rows, longest first)."""

        if len(prompts) != len(continuations):
            raise ValueError(f"score_many got {len(prompts)} prompts but {len(continuations)} continuations")
        p_ids = self.encode(list(prompts))
        c_ids = [list(self.tokenizer(c, add_special_tokens=False)["input_ids"]) if c else [] for c in continuations]
        for i, (p, c) in enumerate(zip(p_ids, c_ids, strict=True)):
            if self.max_context is not None and len(p) + len(c) > self.max_context:
                raise PromptTooLongError(len(p), len(c), self.max_context, index=i)
        scores = [0.0] * len(p_ids)
        order = sorted((i for i in range(len(p_ids)) if c_ids[i]), key=lambda i: -(len(p_ids[i]) + len(c_ids[i])))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            L = max(len(p_ids[i]) + len(c_ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), L), self.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, i in enumerate(chunk):  # right padding: positions stay 0..n-1 without position_ids
                full = p_ids[i] + c_ids[i]
                input_ids[r, :len(full)] = torch.tensor(full, dtype=torch.long)
                mask[r, :len(full)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for r, i in enumerate(chunk):
                    lp, lc = len(p_ids[i]), len(c_ids[i])
                    logp = torch.log_softmax(logits[r, lp - 1:lp + lc - 1].float(), dim=-1)
                    target = torch.tensor(c_ids[i], device=logp.device)
                    scores[i] = float(logp.gather(-1, target[:, None]).sum())
        return scores

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TransformersGenerator(model_id={self.model_id!r}, device={self.device!r})"


# ----------------------------------------------------------------------------------------------- helpers


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Earliest occurrence of any stop string in ``text`` (ties: the one listed first)."""
    best: tuple[int, str] | None = None
    for s in stops:
        pos = text.find(s)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, s)
    return best


class _LogprobRecorder(LogitsProcessor):
    """Records log-softmax of the logits it sees (before sampling warpers) for the token chosen next.

    Keeps only the previous step's (B, V) log-probs: the token chosen at step t is read from
    ``input_ids[:, -1]`` at step t+1, and the last one from the final sequences in :meth:`finish`.
    """

    def __init__(self, top_k: int) -> None:
        self.top_k = top_k
        self.chosen: list[torch.Tensor] = []
        self.top_vals: list[torch.Tensor] = []
        self.top_ids: list[torch.Tensor] = []
        self._prev: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self._prev is not None:
            self.chosen.append(self._prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self._prev = torch.log_softmax(scores.float(), dim=-1)
        if self.top_k:
            v, i = self._prev.topk(self.top_k, dim=-1)
            self.top_vals.append(v.cpu())
            self.top_ids.append(i.cpu())
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self._prev is not None:
            self.chosen.append(self._prev.gather(-1, last_tokens[:, None]).squeeze(-1))
            self._prev = None
        return torch.stack(self.chosen, dim=1)


class _SeededSampler(LogitsProcessor):
    """Temperature -> top-k -> top-p, then one inverse-CDF draw per row from that row's own generator.

    Returns logits that are -inf except at the drawn token, so HF's greedy step picks it. Per-row
    generators make a sample independent of which other rows share the batch.
    """

    def __init__(self, params: SamplingParams, seeds: list[int], prompt_len: int) -> None:
        warpers: list[Any] = []
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k is not None:
            warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        self.warpers = LogitsProcessorList(warpers)
        self.prompt_len = prompt_len
        # One uniform per row per step, drawn up front from each row's own generator.
        self.u_BT = torch.stack([
            torch.rand(params.max_tokens, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in seeds
        ])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        if self.u_BT.device != scores.device:
            self.u_BT = self.u_BT.to(scores.device)
        probs_BV = torch.softmax(self.warpers(input_ids, scores.float()), dim=-1)
        cdf_BV = probs_BV.double().cumsum(dim=-1)  # float64: exact enough for 256k-token vocabularies
        x_B1 = (self.u_BT[:, step].to(cdf_BV.dtype) * cdf_BV[:, -1]).unsqueeze(-1)
        tok_B1 = torch.searchsorted(cdf_BV, x_B1, right=True).clamp_(max=probs_BV.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, tok_B1, 0.0)


class _StopWatcher(StoppingCriteria):
    """Stops a row once a stop string appears in the decoded tail of its *completion* (not the prompt).

    Records the completion length at which each row stopped; the exact cut happens after decoding.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_len: int, batch: int) -> None:
        self.tokenizer, self.stops, self.prompt_len = tokenizer, tuple(stops), prompt_len
        self.window = max(len(s) for s in stops) + 4
        self.stop_step: list[int | None] = [None] * batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len:]
        steps = gen.shape[1]
        texts = self.tokenizer.batch_decode(gen[:, -self.window:].tolist(), skip_special_tokens=True)
        for r, t in enumerate(texts):
            if self.stop_step[r] is None and any(s in t for s in self.stops):
                self.stop_step[r] = steps
        return torch.tensor([s is not None for s in self.stop_step], device=input_ids.device)
