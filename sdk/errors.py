"""Exceptions loopwright raises for misuse and for backends that cannot serve a request.

Model misbehaviour (an unparseable verdict, a failed tool call) is *data*, not an exception; these are for
things a user must fix: a prompt longer than the context, a wrong model name, a dead server, a bad recipe.
"""

from __future__ import annotations


class LoopwrightError(Exception):
    """Base class of every loopwright exception."""


class PromptTooLongError(LoopwrightError, ValueError):
    """A prompt does not fit the model's context. Names both lengths; pass ``truncate_prompt=True`` to truncate."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int, index: int | None = None):
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length
        where = f"prompt {index} " if index is not None else "prompt "
        super().__init__(
            f"{where}has {prompt_tokens} tokens; with max_tokens={max_tokens} it needs "
            f"{prompt_tokens + max_tokens} > the model's context length {context_length}. "
            "Shorten it, lower max_tokens, or pass SamplingParams(truncate_prompt=True) to keep the last tokens."
        )


class BackendError(LoopwrightError, RuntimeError):
    """A generation backend failed in a way retries cannot fix (4xx, dead server after retries, ...)."""


class ConfigError(LoopwrightError, ValueError):
    """A recipe or config is invalid; the message names the field and the allowed values."""
