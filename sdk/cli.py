"""The ``loopwright`` command line (typer).

``loopwright run [RECIPE]`` runs a recipe (the sandbox recipe when none is given) in a fresh run directory;
``loopwright resume RUN_DIR`` continues a killed or failed run from its last completed stage;
``loopwright recipes`` lists the built-in recipes; ``loopwright sandbox`` builds (or finds) the sandbox models.
This module is a composition root: it may import any loopwright folder, lazily, inside a command.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .errors import ConfigError

app = typer.Typer(
    name="loopwright",
    help="Self-improving LLM loops: generate -> judge -> filter -> train -> repeat.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _print_result(run_dir: Path, result: dict) -> None:
    metrics = result.get("metrics", {}) if isinstance(result, dict) else {}
    typer.echo(f"\nrun directory: {run_dir}")
    if metrics:
        width = max(len(k) for k in metrics)
        for k, v in metrics.items():
            typer.echo(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    report = run_dir / "report.md"
    if report.exists():
        typer.echo(f"report: {report}")


@app.command()
def run(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML path or built-in name (default: sandbox).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: key.sub=value (repeatable).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<recipe>-<time>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe; with no RECIPE, the default sandbox recipe (builds and evaluates the sandbox models)."""
    from .recipes import dump_recipe, load_recipe

    try:
        cfg = load_recipe(recipe, set_ or ())
    except ConfigError as e:
        _fail(str(e))
        return
    if run_dir is None:
        run_dir = Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        _fail(f"run directory {run_dir} is not empty; pick another --run-dir or `loopwright resume {run_dir}`")
    run_dir.mkdir(parents=True, exist_ok=True)
    from .artifacts import atomic_write

    atomic_write(run_dir / "recipe.yaml", dump_recipe(cfg))
    typer.echo(f"running recipe {cfg.recipe!r} in {run_dir}")
    result = cfg.run(run_dir, resume=False, progress=progress)
    _print_result(run_dir, result)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `loopwright run`.")],
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Resume a killed or failed run from its last completed stage (same recipe, same artifacts)."""
    from .recipes import load_recipe

    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file():
        _fail(f"{run_dir} is not a loopwright run directory (no recipe.yaml)")
    try:
        cfg = load_recipe(recipe_file)
    except ConfigError as e:
        _fail(str(e))
        return
    typer.echo(f"resuming recipe {cfg.recipe!r} in {run_dir}")
    result = cfg.run(run_dir, resume=True, progress=progress)
    _print_result(run_dir, result)


@app.command()
def recipes() -> None:
    """List the built-in recipes and the recipe kinds."""
    from .recipes import RECIPE_KINDS, builtin_recipe_path, list_builtin_recipes

    for name in list_builtin_recipes():
        typer.echo(f"{name:<20} {builtin_recipe_path(name)}")
    typer.echo(f"\nrecipe kinds: {', '.join(sorted(RECIPE_KINDS))}")


@app.command()
def sandbox(
    trained: Annotated[bool, typer.Option(help="Build the SFT seed model (else the untrained base).")] = True,
) -> None:
    """Build (or find in the cache) the sandbox model and print its folder, for use with any backend."""
    from loopwright.trainers.sandbox.seed import ensure_base_model, ensure_seed_model

    path = ensure_seed_model() if trained else ensure_base_model()
    typer.echo(json.dumps({"model_dir": str(path)}))


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="loopwright")


if __name__ == "__main__":
    main()
