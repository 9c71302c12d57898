"""``OpenAIGenerator``: any OpenAI-compatible server (vLLM, SGLang, TGI, hosted APIs) as a Generator.

Async-first: ``agenerate`` sends one request per prompt through ONE ``openai.AsyncOpenAI`` client per
event loop, with at most ``max_concurrency`` in flight (asyncio semaphore), so the server's continuous
batching stays fed (spec/performance.md §5.3: hold ``max_num_seqs``-scale concurrency, never await
requests one by one). ``generate`` is the sync wrapper from the Generator ABC.

Retries (tenacity, the client's own retries are off): only connection errors, timeouts, 429 and 5xx are
retried, with exponential backoff plus jitter, or exactly the server's ``Retry-After`` /
``retry-after-ms`` when it sends one; any other 4xx fails at once (spec/ecosystem.md §5, ``dspy#10126``).
``request_timeout`` bounds each whole attempt (connect + send + the full body), not each socket read, so a
server trickling bytes cannot hold a request; a timed-out attempt is retried like a connection timeout.
``total_timeout`` bounds the whole call, so a dead server ends in :class:`BackendError`, never a hang.

Responses are validated: a 200 whose body is not JSON or lacks a field of the right type (``content: null``,
``text: 5``, no ``choices``) raises :class:`BackendError` naming the URL, the status and the field, and is
not retried. Only a server that sent ``""`` gives an empty completion.

Failures in a batch: with ``on_error="collect"`` (default, for loops: a lost prompt is lost work) the other
requests finish and the call then raises :class:`BatchError`, whose ``.partial`` holds one entry per prompt
(its completions, or ``None``) and ``.failures`` the reason per failed prompt. With ``on_error="raise"`` the
first failure cancels the requests still pending. Either way a failure that no prompt can escape (server
unreachable after retries, model not found, 401/403) cancels the rest at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

import pydantic

from ..chat_template import continues_final_message
from ..errors import BackendError, BatchError, ConfigError
from ..generator import Generator, run_sync
from ..types import Completion, Prompt, SamplingParams, Usage, normalize_prompt

RETRY_AFTER_MAX_S = 120.0
"""Longest Retry-After we wait for; longer asks are capped (the total_timeout still applies)."""

OnError = Literal["collect", "raise"]
"""Batch failure policy: finish the other prompts and report each failure, or cancel them at the first."""


class RequestTimeoutError(Exception):
    """One attempt ran past ``request_timeout`` as a whole (transient: retried)."""


class _EndpointError(BackendError):
    """The endpoint itself is unusable (unreachable, model not found, auth refused): every prompt would fail."""


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After`` in seconds or an HTTP date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def is_retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts, 429 and 5xx are transient; everything else is not."""
    import openai

    if isinstance(exc, RequestTimeoutError):
        return True
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class OpenAIGenerator(Generator):
    """Generate through an OpenAI-compatible HTTP API.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (``VLLMServer.base_url``).
        model: the served model name.
        api_key: default ``$OPENAI_API_KEY``, else ``"EMPTY"`` (local servers ignore it).
        max_concurrency: requests in flight (default 32 — match the server's ``max_num_seqs``).
        request_timeout: seconds for one whole HTTP attempt (connect, send, full response), not per read.
        total_timeout: seconds for a whole ``agenerate`` call including retries; ``None`` = no deadline.
        max_retries: retries per request after the first try (default 4).
        backoff: initial backoff seconds (doubles per retry, plus up to ``backoff`` s of jitter).
        backoff_max: cap on one backoff wait.
        revision: model revision, recorded in the cache identity.
        vllm_extensions: send vLLM's extra fields (``return_token_ids``, ``top_k``) so completions carry
            token ids; set ``False`` for servers that reject unknown fields (hosted OpenAI). Without them
            ``token_ids`` are empty and a ``top_k`` raises :class:`ConfigError`.
        template_id: identifies the server-side chat template in the cache key (the client cannot see it).
        on_error: ``"collect"`` (default) lets every other prompt finish after a failure and raises
            :class:`BatchError` with all per-prompt failures; ``"raise"`` cancels the pending ones at the first.

    Chat prompts go to ``/chat/completions``, string prompts to ``/completions``. Greedy requests with
    ``n > 1`` are sent once and copied (vLLM rejects ``n > 1`` at temperature 0).
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 32,
        request_timeout: float = 600.0,
        total_timeout: float | None = None,
        max_retries: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        revision: str | None = None,
        vllm_extensions: bool = True,
        template_id: str | None = None,
        on_error: OnError = "collect",
    ) -> None:
        if not base_url or not isinstance(base_url, str):
            raise ConfigError(f"base_url must be a URL like 'http://127.0.0.1:8000/v1', got {base_url!r}")
        if not model:
            raise ConfigError(f"model must be the served model name, got {model!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if request_timeout <= 0 or (total_timeout is not None and total_timeout <= 0):
            raise ConfigError(
                f"timeouts must be positive, got request_timeout={request_timeout}, total_timeout={total_timeout}"
            )
        if on_error not in ("collect", "raise"):
            raise ConfigError(f"on_error must be 'collect' or 'raise', got {on_error!r}")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        self.total_timeout = total_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.revision = revision
        self.vllm_extensions = vllm_extensions
        self.template_id = template_id
        self.on_error: OnError = on_error
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}
        self._context_len: int | None = None

    # ------------------------------------------------------------------------------------------ client

    def _client(self) -> Any:
        """The AsyncOpenAI client of the running loop (an httpx pool cannot cross event loops)."""
        import openai

        loop = asyncio.get_running_loop()
        for old in [lp for lp in self._clients if lp.is_closed()]:
            del self._clients[old]
        client = self._clients.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.request_timeout
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        self._clients.clear()

    def template_hash(self) -> str | None:
        return self.template_id

    def cache_identity(self) -> dict[str, Any]:
        return {**super().cache_identity(), "endpoint": self.base_url}

    # ------------------------------------------------------------------------------------------ generate

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams | None = None) -> list[list[Completion]]:
        """Sync wrapper (``run_sync``); the client made for the temporary loop is closed with it."""

        async def _run() -> list[list[Completion]]:
            try:
                return await self.agenerate(prompts, params)
            finally:
                await self.aclose()

        return run_sync(_run())

    async def agenerate(
        self, prompts: Sequence[Prompt], params: SamplingParams | None = None
    ) -> list[list[Completion]]:
        """All prompts concurrently (bounded); raises :class:`BatchError` (``.partial``, ``.failures``) on failure."""
        params = params or SamplingParams()
        if isinstance(prompts, str):
            raise TypeError("agenerate takes a list of prompts; wrap a single prompt as [prompt]")
        if params.top_k is not None and not self.vllm_extensions:
            raise ConfigError(
                f"top_k={params.top_k} needs vllm_extensions=True (the OpenAI API has no top_k); drop top_k"
            )
        norm = [normalize_prompt(p) for p in prompts]
        if not norm:
            return []
        if not self.vllm_extensions and any(not isinstance(p, str) and continues_final_message(p) for p in norm):
            raise ConfigError("a chat prompt ending with an assistant message (prefill) needs vLLM's "
                              "continue_final_message, which the OpenAI API lacks; use vllm_extensions=True "
                              "against a vLLM server, or drop the final assistant message")
        results: list[list[Completion] | None] = [None] * len(norm)
        errors: dict[int, BaseException] = {}  # in the order they happened
        stop = asyncio.Event()
        stopped_by: list[int] = []  # the prompt whose failure cancelled the rest
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(i: int) -> None:
            async with sem:
                if stop.is_set():
                    return
                try:
                    results[i] = await self._with_retries(norm[i], params)
                except Exception as e:  # noqa: BLE001 - recorded per prompt, raised below
                    errors[i] = e
                    if self.on_error == "raise" or not isinstance(e, BackendError) or isinstance(e, _EndpointError):
                        stopped_by.append(i)
                        stop.set()

        tasks = [asyncio.create_task(one(i)) for i in range(len(norm))]
        waiters = [asyncio.create_task(asyncio.wait(tasks)), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.total_timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [*tasks, *waiters]:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, *waiters, return_exceptions=True)
        if not errors and all(r is not None for r in results):
            return results  # type: ignore[return-value]
        n_ok = sum(r is not None for r in results)
        failures = {i: str(e) for i, e in errors.items()}
        first = next(iter(errors), None)
        unfinished = (
            f"cancelled after prompt {stopped_by[0]} failed" if stopped_by
            else f"not finished within total_timeout={self.total_timeout}s"
        )
        for i, r in enumerate(results):
            if r is None and i not in failures:
                failures[i] = unfinished
        head = (
            str(errors[first]) if first is not None
            else f"{self.base_url} did not finish {len(norm)} prompts within total_timeout={self.total_timeout}s"
        )
        others = [f"prompt {i}: {_clip(m)}" for i, m in failures.items() if i != first and i in errors]
        more = f"; other failures: {'; '.join(others[:4])}" + (f" (+{len(others) - 4} more)" if len(others) > 4 else "")
        err = BatchError(
            f"{head} [{n_ok}/{len(norm)} prompts completed, {len(failures)} failed; see .partial and .failures]"
            + (more if others else ""),
            partial=list(results),
            failures=dict(sorted(failures.items())),
        )
        if first is not None:
            raise err from errors[first]
        raise err

    # ------------------------------------------------------------------------------------------ one request

    def _wait_s(self, retry_state: Any) -> float:
        import tenacity

        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = retry_after_seconds(exc) if exc is not None else None
        if asked is not None:
            return min(asked, RETRY_AFTER_MAX_S)
        return tenacity.wait_exponential_jitter(
            initial=self.backoff, max=self.backoff_max, jitter=self.backoff
        )(retry_state)

    async def _with_retries(self, prompt: str | list[dict[str, Any]], params: SamplingParams) -> list[Completion]:
        import openai
        import tenacity

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_retryable),
            stop=tenacity.stop_after_attempt(self.max_retries + 1),
            wait=self._wait_s,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await asyncio.wait_for(self._request(prompt, params), timeout=self.request_timeout)
                    except TimeoutError as e:
                        raise RequestTimeoutError(self._url(prompt)) from e
        except RequestTimeoutError as e:
            raise BackendError(
                f"POST {e} sent no complete answer within request_timeout={self.request_timeout}s "
                f"(the whole request) in {self.max_retries + 1} attempts"
            ) from e
        except openai.NotFoundError as e:
            raise _EndpointError(await self._not_found_message(e)) from e
        except openai.APIStatusError as e:
            retried = f" after {self.max_retries + 1} attempts" if is_retryable(e) else ""
            kind = _EndpointError if e.status_code in (401, 403) else BackendError
            raise kind(
                f"{self.base_url} answered HTTP {e.status_code}{retried} for model {self.model_id!r}: "
                f"{_body_text(e)}"
            ) from e
        except openai.APITimeoutError as e:
            raise BackendError(
                f"{self._url(prompt)} timed out ({e}) after {self.max_retries + 1} attempts"
            ) from e
        except openai.APIConnectionError as e:
            raise _EndpointError(
                f"cannot reach {self.base_url} ({type(e).__name__}: {e}) after {self.max_retries + 1} attempts; "
                "is the server running?"
            ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _url(self, prompt: str | list[dict[str, Any]]) -> str:
        return f"{self.base_url}/{'completions' if isinstance(prompt, str) else 'chat/completions'}"

    async def _max_model_len(self) -> int | None:
        """The served model's context length from ``GET /models`` (vLLM's ``max_model_len``), cached."""
        if self._context_len is None:
            try:
                page = await asyncio.wait_for(self._client().models.list(), timeout=min(10.0, self.request_timeout))
                for m in page.data:
                    if m.id == self.model_id:
                        self._context_len = int(getattr(m, "max_model_len", 0) or 0)
            except Exception:  # noqa: BLE001 - unknown context: fall back to the server's own truncation
                return None
        return self._context_len or None

    async def _not_found_message(self, exc: Any) -> str:
        served: list[str] | None = None
        try:
            page = await asyncio.wait_for(self._client().models.list(), timeout=min(10.0, self.request_timeout))
            served = [m.id for m in page.data]
        except Exception:  # noqa: BLE001 - listing is best effort for the message only
            served = None
        where = f"{self.base_url} serves {served}" if served is not None else f"GET {self.base_url}/models failed"
        return (
            f"model {self.model_id!r} not found (HTTP 404: {_body_text(exc)}); {where}. "
            "Pass one of the served names as model=..."
        )

    async def _request(self, prompt: str | list[dict[str, Any]], params: SamplingParams) -> list[Completion]:
        client = self._client()
        n = 1 if params.greedy else params.n
        kwargs: dict[str, Any] = {
            "model": self.model_id,
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.seed is not None:
            kwargs["seed"] = params.seed
        extra: dict[str, Any] = {}
        if self.vllm_extensions:
            extra["return_token_ids"] = True
            if params.top_k is not None:
                extra["top_k"] = params.top_k
            if params.truncate_prompt:
                # vLLM keeps the last k prompt tokens; k = context - max_tokens when the model card says it
                ctx = await self._max_model_len()
                extra["truncate_prompt_tokens"] = max(1, ctx - params.max_tokens) if ctx else -1
        if not isinstance(prompt, str) and continues_final_message(prompt):
            extra["continue_final_message"] = True
            extra["add_generation_prompt"] = False
        if extra:
            kwargs["extra_body"] = extra
        if isinstance(prompt, str):
            if params.logprobs is not None:
                kwargs["logprobs"] = params.logprobs
            raw = await client.completions.with_raw_response.create(prompt=prompt, **kwargs)
            resp = _validated(raw, _TextResponse)
            comps = [self._from_text_choice(c, params) for c in sorted(resp.choices, key=lambda c: c.index)]
        else:
            if params.logprobs is not None:
                kwargs["logprobs"] = True
                kwargs["top_logprobs"] = params.logprobs
            raw = await client.chat.completions.with_raw_response.create(messages=prompt, **kwargs)
            resp = _validated(raw, _ChatResponse)
            comps = [self._from_chat_choice(c, params) for c in sorted(resp.choices, key=lambda c: c.index)]
        if not comps:
            raise BackendError(f"{_where(raw)}: choices is empty (model {self.model_id!r})")
        _set_usage(comps, resp.usage)
        if params.greedy and params.n > 1:
            first = comps[0]
            copy_usage = Usage(prompt_tokens=0, completion_tokens=first.usage.completion_tokens)
            comps += [first.model_copy(update={"usage": copy_usage}, deep=True) for _ in range(params.n - 1)]
        return comps

    @staticmethod
    def _from_text_choice(choice: Any, params: SamplingParams) -> Completion:
        logprobs = top = None
        lp = choice.logprobs
        if params.logprobs is not None and lp is not None and lp.token_logprobs is not None:
            logprobs = [float(x) for x in lp.token_logprobs]
            if params.logprobs > 0 and lp.top_logprobs is not None:
                tokens = lp.tokens or [None] * len(logprobs)
                top = [
                    _top_k(d or {}, params.logprobs, tok, lp_)
                    for d, tok, lp_ in zip(lp.top_logprobs, tokens, logprobs, strict=False)
                ]
        return _completion(choice, choice.text or "", logprobs, top)

    @staticmethod
    def _from_chat_choice(choice: Any, params: SamplingParams) -> Completion:
        logprobs = top = None
        lp = choice.logprobs
        if params.logprobs is not None and lp is not None and lp.content is not None:
            logprobs = [float(t.logprob) for t in lp.content]
            if params.logprobs > 0:
                top = [
                    _top_k({a.token: a.logprob for a in (t.top_logprobs or [])}, params.logprobs, t.token, t.logprob)
                    for t in lp.content
                ]
        return _completion(choice, choice.message.content or "", logprobs, top)


# ---------------------------------------------------------------------------------------------- responses
# What we read of a 200 body, typed: a wrong type or a null where text is due is a server bug, not a completion.


class _Usage(pydantic.BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _TextLogprobs(pydantic.BaseModel):
    tokens: list[str] | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float] | None] | None = None


class _TextChoice(pydantic.BaseModel):
    index: int = 0
    text: pydantic.StrictStr
    finish_reason: str | None = None
    logprobs: _TextLogprobs | None = None
    token_ids: list[int] | None = None
    stop_reason: str | int | None = None


class _TextResponse(pydantic.BaseModel):
    choices: list[_TextChoice]
    usage: _Usage | None = None


class _TopLogprob(pydantic.BaseModel):
    token: str
    logprob: float


class _TokenLogprob(pydantic.BaseModel):
    token: str
    logprob: float
    top_logprobs: list[_TopLogprob] | None = None


class _ChatLogprobs(pydantic.BaseModel):
    content: list[_TokenLogprob] | None = None


class _ChatMessage(pydantic.BaseModel):
    content: pydantic.StrictStr


class _ChatChoice(pydantic.BaseModel):
    index: int = 0
    message: _ChatMessage
    finish_reason: str | None = None
    logprobs: _ChatLogprobs | None = None
    token_ids: list[int] | None = None
    stop_reason: str | int | None = None


class _ChatResponse(pydantic.BaseModel):
    choices: list[_ChatChoice]
    usage: _Usage | None = None


def _where(raw: Any) -> str:
    return f"{raw.method} {raw.url} -> {raw.status_code}"


def _validated(raw: Any, model: type[pydantic.BaseModel]) -> Any:
    """The body of a raw 2xx response as ``model``; :class:`BackendError` naming URL, status and field if not."""
    content = raw.content
    try:
        body = json.loads(content)
    except ValueError:
        raise BackendError(f"{_where(raw)}: body is not JSON ({content[:120]!r})") from None
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as e:
        problems = [_problem(d) for d in e.errors(include_url=False)]
        extra = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BackendError(f"{_where(raw)}: {'; '.join(problems[:3])}{extra}") from None


def _problem(d: Any) -> str:
    """``choices[0].message.content is null`` from one pydantic error."""
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in d["loc"]).lstrip(".") or "body"
    if d["type"] == "missing":
        return f"{path} is missing"
    if d["input"] is None:
        return f"{path} is null"
    return f"{path}: {d['msg']} (got {type(d['input']).__name__} {d['input']!r:.60})"


# ---------------------------------------------------------------------------------------------- helpers


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _top_k(d: dict[str, float], k: int, token: str | None, logprob: float) -> dict[str, float]:
    """The k most likely alternatives; the sampled token's own logprob wins when another token decodes to the
    same text (servers key alternatives by text, so byte-fragment tokens collide)."""
    top = dict(sorted(d.items(), key=lambda kv: kv[1], reverse=True)[:k])
    if token is not None and token in top:
        top[token] = max(top[token], float(logprob))
    elif token is not None and (len(top) < k or logprob >= min(top.values(), default=logprob)):
        top[token] = float(logprob)
    return top


def _completion(choice: Any, text: str, logprobs: list[float] | None, top: list[dict[str, float]] | None) -> Completion:
    token_ids = getattr(choice, "token_ids", None) or []
    stop_reason = getattr(choice, "stop_reason", None)
    return Completion(
        text=text,
        token_ids=list(token_ids),
        logprobs=logprobs,
        top_logprobs=top,
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
    )


def _set_usage(comps: list[Completion], usage: Any) -> None:
    """Prompt tokens on the first sample; completion tokens per sample from token ids/logprobs, else split."""
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
    total_completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
    counts = []
    for c in comps:
        if c.token_ids:
            counts.append(len(c.token_ids))
        elif c.logprobs is not None:
            counts.append(len(c.logprobs))
        else:
            counts.append(None)
    if any(x is None for x in counts):
        base, rem = divmod(total_completion, len(comps))
        counts = [base + (1 if j < rem else 0) for j in range(len(comps))]
    for j, c in enumerate(comps):
        c.usage = Usage(prompt_tokens=prompt_tokens if j == 0 else 0, completion_tokens=counts[j])


def _body_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body is None:
        response = getattr(exc, "response", None)
        try:
            return response.text[:500] if response is not None else str(exc)
        except Exception:  # noqa: BLE001
            return str(exc)
    return str(body)[:500]
