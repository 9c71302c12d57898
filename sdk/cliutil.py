"""The CLI's error boundary, shared by ``loopwright`` and the component sub-apps (coa, tools).

A mistake a user can fix (a loopwright error, an unreadable file, bad YAML or SQLite, non-UTF-8 text; see
:func:`~loopwright.sdk.errors.user_error_message`) prints one ``error:`` line and exits 2; a genuine bug keeps
its traceback. ``LOOPWRIGHT_DEBUG=1`` shows the traceback of user errors too. One boundary instead of a
``try/except`` around every command (issue 17, item 7).
"""

from __future__ import annotations

import os
from typing import Any

import click
import typer
from typer.core import TyperGroup

from .errors import user_error_message

__all__ = ["ErrorBoundaryGroup", "fail"]


def fail(msg: str, code: int = 2) -> None:
    """Print ``error: msg`` on stderr and exit with ``code`` (2: a usage error)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


class ErrorBoundaryGroup(TyperGroup):
    """A typer group (``typer.Typer(cls=ErrorBoundaryGroup)``) whose commands turn user errors into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            msg = user_error_message(e)
            if msg is None or getattr(e, "errno", None) == 32:  # a bug; or EPIPE, which click handles
                raise
            if os.environ.get("LOOPWRIGHT_DEBUG"):
                import traceback

                traceback.print_exc()
            fail(msg)
