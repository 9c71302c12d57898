"""Exceptions loopwright raises for misuse and for backends that cannot serve a request.

Model misbehaviour (an unparseable verdict, a failed tool call) is *data*, not an exception; these are for
things a user must fix: a prompt longer than the context, a wrong model name, a dead server, a bad recipe.
"""

from __future__ import annotations

from typing import Any


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


class BatchError(BackendError):
    """Some prompts of a batch got no completions; the others' work is kept.

    ``partial``: one entry per prompt, its completions or ``None``. ``failures``: ``{prompt index: reason}`` for
    every ``None`` entry (its own error, or why it was cancelled or never finished). ``results``: the successes.
    """

    def __init__(self, message: str, partial: list[Any], failures: dict[int, str]) -> None:
        super().__init__(message)
        self.partial = partial
        self.failures = failures

    @property
    def results(self) -> dict[int, Any]:
        """``{prompt index: completions}`` of the prompts that finished."""
        return {i: row for i, row in enumerate(self.partial) if row is not None}

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (Ray, multiprocessing)
        return (type(self), (str(self), self.partial, self.failures))


class ConfigError(LoopwrightError, ValueError):
    """A recipe or config is invalid; the message names the field and the allowed values."""


class ModelNotFoundError(ConfigError):
    """A model path names no model folder; the message lists what the nearest existing folder holds."""


def user_error_message(exc: BaseException) -> str | None:
    """The one-line ``error:`` text for an exception a user can fix, or ``None`` for a genuine bug.

    User errors: loopwright's own errors, files that cannot be read or written (``OSError``), text that is not
    UTF-8, unreadable SQLite files and YAML errors. Anything else is a bug and keeps its traceback. Used by the
    CLI's error boundary (sdk/cli.py) and the examples; messages are clipped to 2,000 characters.
    """
    import sqlite3

    text: str | None = None
    if isinstance(exc, LoopwrightError):
        text = str(exc)
    elif isinstance(exc, UnicodeDecodeError):
        text = f"input is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
    elif isinstance(exc, OSError):
        names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
        what = exc.strerror or str(exc) or type(exc).__name__
        text = f"{what}: {names}" if names else what
    elif isinstance(exc, sqlite3.DatabaseError):
        text = f"SQLite database error ({exc}); the file is corrupt or not a loopwright database"
    else:
        try:
            import yaml
        except ImportError:  # pragma: no cover - yaml is a core dependency
            return None
        if isinstance(exc, yaml.YAMLError):
            text = "invalid YAML: " + " ".join(str(exc).split())
    if text is None:
        return None
    text = text.strip() or type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."
