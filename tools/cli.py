"""``loopwright tools ...`` sub-commands (registered by sdk/cli.py as ``tools_app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopwright.sdk.cliutil import ErrorBoundaryGroup, fail

tools_app = typer.Typer(name="tools", help="Tools for tool-using agents (offline search index).",
                        cls=ErrorBoundaryGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@tools_app.callback()
def _tools() -> None:
    """Tools for tool-using agents."""


@tools_app.command("build-index")
def build_index_cmd(
    input: Annotated[Path, typer.Option("--input", help="a .jsonl corpus or a Dataset.save_to_disk folder")],
    out: Annotated[Path, typer.Option("--out", help="the SQLite index file to write")],
    title_field: Annotated[str, typer.Option(help="column with the document title")] = "title",
    text_field: Annotated[str, typer.Option(help="column with the document text")] = "text",
    max_chars: Annotated[int, typer.Option(help="longest paragraph before it is cut at sentence ends")] = 1500,
) -> None:
    """Build an SQLite FTS5 (BM25) paragraph index for the offline WikipediaSearch backend."""
    import time

    from .wikipedia import build_index

    if not input.exists():
        typer.secho(f"error: input {input} not found (a .jsonl file or a datasets folder)", fg="red", err=True)
        raise typer.Exit(2)
    if out.is_dir():
        fail(f"--out {out} is a folder; pass the path of the SQLite index file to write (e.g. {out / 'wiki.sqlite'})")
    start = time.perf_counter()
    try:
        n = build_index(input, out, title_field=title_field, text_field=text_field, max_chars=max_chars)
    except (ValueError, FileNotFoundError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"indexed {n} paragraphs into {out} in {time.perf_counter() - start:.1f} s")
