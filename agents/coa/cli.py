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

from loopwright.sdk.cliutil import ErrorBoundaryGroup, fail

coa_app = typer.Typer(name="coa", help="Chain-of-Abstraction: convert GSM8K solutions into verified chains.",
                      cls=ErrorBoundaryGroup, no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False)

MAX_FAILED_SHARE = 0.5
"""Default ``--max-failed``: above this share of unconverted rows the command fails (GSM8K train: 2.6% fail)."""


@coa_app.callback()
def _coa() -> None:
    """Chain-of-Abstraction tools (spec/loops.md §1)."""


def _check_output(path: Path, option: str) -> None:
    if path.is_dir():
        fail(f"{option} {path} is a folder; pass a .jsonl file path to write")
    if path.parent.exists() and not path.parent.is_dir():
        fail(f"{option} {path}: {path.parent} is a file, not a folder")


@coa_app.command("convert")
def convert(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT.jsonl", help="GSM8K-format JSONL (question, answer).")],
    output_path: Annotated[Path, typer.Argument(metavar="OUTPUT.jsonl", help="One record per input problem.")],
    sft: Annotated[Path | None, typer.Option(help="Also write verified rows as TRL conversational SFT JSONL.")] = None,
    plain_text: Annotated[bool, typer.Option(help="Also convert unannotated 'a op b = c' arithmetic.")] = True,
    max_failed: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fail (exit 1, after writing the outputs) when "
                                              "more than this share of rows is not converted.")] = MAX_FAILED_SHARE,
) -> None:
    """Convert GSM8K solutions to abstract chains, verify each by reification, write one line per problem.

    Every unconverted row keeps its reason in OUTPUT. Exits 2 on unusable input (missing, a folder, not UTF-8,
    no rows) and 1 when nothing converted or more than ``--max-failed`` of the rows failed (outputs written).
    """
    import json
    from collections import Counter

    from loopwright.sdk.artifacts import write_jsonl

    from .convert import convert_record, failure_category, to_sft_row
    from .reify import default_math_tools

    if not input_path.exists():
        fail(f"input file not found: {input_path}")
    if not input_path.is_file():
        fail(f"input {input_path} is a folder; pass a GSM8K-format .jsonl file")
    _check_output(output_path, "OUTPUT")
    if sft is not None:
        _check_output(sft, "--sft")
    try:
        text = input_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = input_path.read_bytes()[: e.start].count(b"\n") + 1
        fail(f"{input_path} is not UTF-8 text (line {line}, byte {e.start}: {e.reason}); save it as UTF-8 JSONL")
        return
    tools = default_math_tools()
    records: list[dict] = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
        except ValueError as e:
            records.append({"id": f"{input_path.stem}-{i}", "chain": None, "verified": False, "answer": None,
                            "reason": f"line {i + 1} is not a GSM8K JSON row: {str(e)[:200]}"})
            continue
        rec = convert_record(row, tools, plain_text=plain_text, id=row.get("id", f"{input_path.stem}-{i}"))
        records.append(rec | {"line": i + 1})
    if not records:
        fail(f"{input_path} holds no rows; expected one GSM8K JSON object per line (question, answer)")
    write_jsonl(output_path, records)
    n_ok = sum(bool(r["verified"]) for r in records)
    if sft is not None:
        write_jsonl(sft, [to_sft_row(r) for r in records if r["verified"]])
    pct = 100.0 * n_ok / len(records)
    typer.echo(f"verified {n_ok}/{len(records)} ({pct:.2f}%) -> {output_path}")
    failed = [r for r in records if not r["verified"]]
    cats = Counter(failure_category(r) or "unreadable_line" for r in failed)
    for cat, n in cats.most_common():
        first = next(r for r in failed if (failure_category(r) or "unreadable_line") == cat)
        where = f"line {first['line']}: " if "line" in first else ""
        typer.echo(f"  {cat}: {n} (e.g. {where}{str(first.get('reason', ''))[:160]})")
    share = len(failed) / len(records)
    if n_ok == 0 or share > max_failed:
        what = "no row converted" if n_ok == 0 else f"{share:.0%} of rows failed (> --max-failed {max_failed:g})"
        fail(f"{what}; the reasons are in {output_path} (rows with verified=false)", code=1)
