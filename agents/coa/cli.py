"""``loopwright coa ...``: the Chain-of-Abstraction sub-app (registered in sdk/cli.py by the composition root).

``loopwright coa convert INPUT.jsonl OUTPUT.jsonl`` converts GSM8K-format lines (``question``, ``answer`` with
``<<expr=result>>`` annotations and ``#### gold``) into verified abstract chains (spec/loops.md §1.4): one output
line per input problem with ``chain``, ``verified``, ``answer`` and, when not verified, ``reason``; it prints the
verified count and the failure categories. ``--sft PATH`` also writes the verified rows as TRL conversational SFT
data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

coa_app = typer.Typer(name="coa", help="Chain-of-Abstraction: convert GSM8K solutions into verified chains.",
                      no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@coa_app.callback()
def _coa() -> None:
    """Chain-of-Abstraction tools (spec/loops.md §1)."""


@coa_app.command("convert")
def convert(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT.jsonl", help="GSM8K-format JSONL (question, answer).")],
    output_path: Annotated[Path, typer.Argument(metavar="OUTPUT.jsonl", help="One record per input problem.")],
    sft: Annotated[Path | None, typer.Option(help="Also write verified rows as TRL conversational SFT JSONL.")] = None,
    plain_text: Annotated[bool, typer.Option(help="Also convert unannotated 'a op b = c' arithmetic.")] = True,
) -> None:
    """Convert GSM8K solutions to abstract chains, verify each by reification, write one line per problem."""
    import json
    from collections import Counter

    from loopwright.sdk.artifacts import write_jsonl

    from .convert import convert_record, failure_category, to_sft_row
    from .reify import default_math_tools

    if not input_path.is_file():
        typer.secho(f"error: input file not found: {input_path}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    tools = default_math_tools()
    records: list[dict] = []
    with input_path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            except ValueError as e:
                records.append({"id": f"{input_path.stem}-{i}", "chain": None, "verified": False, "answer": None,
                                "reason": f"line {i + 1} is not a GSM8K JSON row: {e}"})
                continue
            records.append(convert_record(row, tools, plain_text=plain_text, id=row.get("id", f"{input_path.stem}-{i}")))
    write_jsonl(output_path, records)
    n_ok = sum(bool(r["verified"]) for r in records)
    if sft is not None:
        write_jsonl(sft, [to_sft_row(r) for r in records if r["verified"]])
    pct = 100.0 * n_ok / len(records) if records else 0.0
    typer.echo(f"verified {n_ok}/{len(records)} ({pct:.2f}%) -> {output_path}")
    cats = Counter(failure_category(r) or "unreadable_line" for r in records if not r["verified"])
    for cat, n in cats.most_common():
        typer.echo(f"  {cat}: {n}")
