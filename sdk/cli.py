"""The ``loopwright`` command line (typer).

``loopwright run [RECIPE]`` runs a recipe (the sandbox recipe when none is given) in a fresh run directory;
``loopwright resume RUN_DIR`` continues a killed or failed run from its last completed stage;
``loopwright recipes`` lists the built-in recipes; ``loopwright sandbox`` builds (or finds) the sandbox models;
``loopwright judge eval`` measures a pairwise judge on gold preference pairs (LLMBar, MT-Bench human, JSONL);
``loopwright report RUN_DIR`` writes a loop's per-iteration table and plots (from ``RUN_DIR/iterations.jsonl``).
This module is a composition root: it may import any loopwright folder, lazily, inside a command.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .cliutil import ErrorBoundaryGroup
from .errors import ConfigError

app = typer.Typer(
    name="loopwright",
    cls=ErrorBoundaryGroup,
    help="Self-improving LLM loops: generate -> judge -> filter -> train -> repeat.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="Show library logs: -v vLLM INFO and load bars, -vv debug.")] = 0,
) -> None:
    """Self-improving LLM loops: generate -> judge -> filter -> train -> repeat."""
    from .quiet import set_library_verbosity

    set_library_verbosity(verbose)  # quiet by default: vLLM / transformers / TRL noise off (issue 17 item 18)


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
    report = next((p for p in (run_dir / "report" / "report.md", run_dir / "report.md") if p.exists()),
                  run_dir / "report.md")
    if report.exists():
        typer.echo(f"report: {report}")


@app.command()
def run(
    recipe: Annotated[str | None, typer.Argument(help="Recipe YAML path or built-in name (default: sandbox).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: key.sub=value (repeatable).")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run directory (default: runs/<recipe>-<time>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved, validated recipe as YAML and "
                                                            "stop (no run, no run directory).")] = False,
) -> None:
    """Run a recipe; with no RECIPE, the default sandbox recipe (builds and evaluates the sandbox models)."""
    from .recipes import dump_recipe, load_recipe

    cfg = load_recipe(recipe, set_ or ())  # every check runs here, before anything is written
    if dry_run:
        import yaml

        typer.echo(yaml.safe_dump(cfg.resolved(), sort_keys=False), nl=False)
        return
    if run_dir is None:
        run_dir = Path("runs") / f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not run_dir.is_dir():
        _fail(f"--run-dir {run_dir} is a file, not a folder; pass a new folder path")
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
    run_dir: Annotated[Path, typer.Argument(help="A run directory made by `loopwright run` or by a Loop.")],
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Resume a killed or failed run from its last completed stage (same recipe, same artifacts); a Loop started
    from a script is resumed by running that script again."""
    from .recipes import load_recipe

    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.is_file() and (run_dir / "manifest.json").is_file():
        _resume_python_loop(run_dir)
        return
    if not recipe_file.is_file():
        _fail(f"{run_dir} is not a loopwright run directory (no recipe.yaml); pass the folder `loopwright run` "
              "printed")
    cfg = load_recipe(recipe_file)
    _check_checkpoints(run_dir)
    typer.echo(f"resuming recipe {cfg.recipe!r} in {run_dir}")
    result = cfg.run(run_dir, resume=True, progress=progress)
    _print_result(run_dir, result)


def _resume_python_loop(run_dir: Path) -> None:
    """Resume a :class:`~loopwright.sdk.loop.Loop` started from a script: run that script again (same
    interpreter, arguments and folder) with ``LOOPWRIGHT_RESUME`` set, so its ``loop.run`` continues the run."""
    import subprocess

    from .loop import RESUME_ENV, resume_command

    try:
        cmd, cwd = resume_command(run_dir)
    except (ConfigError, ValueError) as e:
        _fail(str(e))
        return
    _check_checkpoints(run_dir, again="start it again in a new folder")
    typer.echo(f"resuming the loop in {run_dir}: {' '.join(cmd[1:])} (in {cwd})")
    proc = subprocess.run(cmd, cwd=cwd, env={**os.environ, RESUME_ENV: str(run_dir.absolute())}, check=False)
    if proc.returncode:
        raise typer.Exit(proc.returncode)


def _check_checkpoints(run_dir: Path, again: str | None = None) -> None:
    """A resume needs the run's LangGraph SQLite checkpoint: a missing or corrupt one is one line naming the file."""
    import sqlite3

    db = run_dir / "checkpoints.sqlite"
    again = again or f"start again with `loopwright run {run_dir / 'recipe.yaml'} --run-dir NEW_DIR`"
    if not db.is_file():
        _fail(f"{db} not found, so there is nothing to resume; {again}")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        _fail(f"{db} is corrupt ({e}); {again}")
        return
    if not row or row[0] != "ok":
        _fail(f"{db} is corrupt (quick_check: {row[0] if row else 'no answer'}); {again}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory holding iterations.jsonl.")],
    plots: Annotated[bool, typer.Option(help="Draw PNG plots (matplotlib).")] = True,
) -> None:
    """Write RUN_DIR/report/report.md (per-iteration table + notes) and PNG plots from RUN_DIR/iterations.jsonl."""
    from .report import write_report

    try:
        path = write_report(run_dir, plots=plots)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    typer.echo(f"report: {path}")


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run folders, or LABEL=RUN_DIR to name the arm (default arm: the "
                                                   "folder name without a trailing -seedN).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: runs/compare-<time>).")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Only these metrics (repeatable).")] = None,
    plots: Annotated[bool, typer.Option(help="Draw PNG plots (matplotlib).")] = True,
) -> None:
    """Put several runs side by side: per-run metrics with 95% intervals, per-arm means over seeds, plots."""
    from .compare import compare_runs

    out = out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        path = compare_runs(runs, out, metrics=metric, plots=plots)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
        return
    typer.echo(path.read_text())
    typer.echo(f"comparison: {path}")


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
    as_json: Annotated[bool, typer.Option("--json", help='Print {"model_dir": PATH} instead of the bare path.')] = False,
) -> None:
    """Build (or find in the cache) the sandbox model and print its folder, for use with any backend."""
    from loopwright.trainers.sandbox.seed import ensure_base_model, ensure_seed_model

    path = ensure_seed_model() if trained else ensure_base_model()
    typer.echo(json.dumps({"model_dir": str(path)}) if as_json else str(path))


# --------------------------------------------------------------------------------------------- judge

judge_app = typer.Typer(help="Judges: evaluate a pairwise LLM judge on gold preference pairs.",
                        no_args_is_help=True)
app.add_typer(judge_app, name="judge")

JUDGE_BACKENDS = ("transformers", "vllm", "openai")
JUDGE_DATASETS = ("llmbar", "mt_bench")
JUDGE_MODES = ("generative", "logprob", "expected-score")


def _eval_judge(mode: str, gen: Any, *, both_orders: bool, samples: int, sampling: Any) -> tuple[Any, Any]:
    """The pairwise judge ``judge eval --mode`` evaluates, and the LLM judge inside it (for its provenance)."""
    if mode == "generative":
        from loopwright.judges.pairwise import PairwiseJudge

        judge = PairwiseJudge(gen, both_orders=both_orders, samples=samples, sampling=sampling)
        return judge, judge
    if mode == "logprob":
        from loopwright.judges.next_token import LogprobPairwiseJudge

        judge = LogprobPairwiseJudge(gen, both_orders=both_orders, truncate_prompt=sampling.truncate_prompt)
        return judge, judge
    from loopwright.judges.next_token import ExpectedScoreJudge
    from loopwright.judges.score_comparison import ScoreComparisonJudge

    inner = ExpectedScoreJudge(gen, truncate_prompt=sampling.truncate_prompt)
    return ScoreComparisonJudge(inner), inner


def _limit_pairs(pairs: list, limit: int | None) -> list:
    """The first ``limit`` pairs taking each subset in turn (round-robin), so every subset is represented."""
    if limit is None or limit >= len(pairs):
        return pairs
    by_subset: dict[str, list] = {}
    for p in pairs:
        by_subset.setdefault(p.subset, []).append(p)
    queues = [list(v) for v in by_subset.values()]
    out: list = []
    while len(out) < limit:
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


@judge_app.command("eval")
def judge_eval(
    data: Annotated[str, typer.Option(help="llmbar | mt_bench | PATH.jsonl (TRL prompt/chosen/rejected or LLMBar "
                                           "input/output_1/output_2/label).")] = "llmbar",
    mode: Annotated[str, typer.Option(help="generative: the judge writes a verdict, parsed from [[A]]/[[B]]; "
                                           "logprob: P(A) vs P(B) of the verdict letter after a '[[' prefill; "
                                           "expected-score: each response scored alone by the probability-"
                                           "weighted 0-5 rubric score after a 'Score: ' prefill (G-Eval), "
                                           "higher score wins.")] = "generative",
    backend: Annotated[str, typer.Option(help="transformers | vllm | openai.")] = "transformers",
    model: Annotated[str | None, typer.Option(help="Model folder (transformers, vllm) or served model name "
                                                   "(openai). Default: the sandbox seed model.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. "
                                                      "http://127.0.0.1:8000/v1 (openai backend).")] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate N pairs (round-robin over subsets).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: runs/judge-eval-<data>-<time>).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder holding llmbar/ (default: <repo>/../shared/data "
                                                        "or $LOOPWRIGHT_DATA).")] = None,
    seed: Annotated[int, typer.Option(help="Placement seed: which slot holds the chosen response.")] = 0,
    samples: Annotated[int, typer.Option(help="Samples per order, plurality vote (useful with --temperature > 0).")] = 1,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (default greedy).")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="New tokens per judgement.")] = 256,
    both_orders: Annotated[bool, typer.Option(help="Judge both orders (A/B swapped) in the judge.")] = True,
    batch_size: Annotated[int, typer.Option(help="Pairs per judge call.")] = 32,
    truncate: Annotated[bool, typer.Option(help="Keep the last tokens of prompts longer than the context "
                                                "instead of failing (small-context models).")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Evaluate a PairwiseJudge on gold pairs; print the RewardBench-style table, write report.md/json + records."""
    if backend not in JUDGE_BACKENDS:
        _fail(f"--backend {backend!r} is not one of {', '.join(JUDGE_BACKENDS)}")
    if mode not in JUDGE_MODES:
        _fail(f"--mode {mode!r} is not one of {', '.join(JUDGE_MODES)}")
    if mode != "generative" and (samples != 1 or temperature != 0.0):
        _fail(f"--samples and --temperature apply to --mode generative only; --mode {mode} reads one greedy "
              "next-token distribution")
    if mode == "expected-score" and not both_orders:
        _fail("--no-both-orders does not apply to --mode expected-score (each response is scored alone)")
    if base_url is not None and backend != "openai":
        _fail(f"--base-url is only used with --backend openai (got --backend {backend!r})")
    if backend == "openai" and (base_url is None or model is None):
        _fail("--backend openai needs --base-url URL and --model SERVED_NAME (e.g. --base-url "
              "http://127.0.0.1:8000/v1 --model judge)")
    if limit is not None and limit < 1:
        _fail(f"--limit {limit} must be a positive number of pairs")
    if samples < 1 or max_tokens < 1 or batch_size < 1:
        _fail(f"--samples {samples}, --max-tokens {max_tokens} and --batch-size {batch_size} must all be >= 1")
    from loopwright.judges.datasets import load_pairs
    from loopwright.judges.evaluation import evaluate

    if data not in JUDGE_DATASETS and not data.endswith((".jsonl", ".json")):
        _fail(f"--data {data!r} is not one of {', '.join(JUDGE_DATASETS)} or a .jsonl/.json path")
    try:
        pairs = _limit_pairs(load_pairs(data, data_root), limit)
    except (OSError, ValueError) as e:
        _fail(str(e))
        return
    if not pairs:
        _fail(f"--data {data!r} has no pairs")

    from .types import SamplingParams

    if model is None:
        from loopwright.trainers.sandbox.seed import ensure_seed_model

        model = str(ensure_seed_model())
    if backend in ("transformers", "vllm"):
        from .errors import ModelNotFoundError
        from .models import resolve_model_path

        try:
            model = resolve_model_path(model)
        except ModelNotFoundError as e:
            _fail(f"--model: {e}")
    else:
        _preflight_openai(base_url, model)  # type: ignore[arg-type]
    try:
        sampling = SamplingParams(temperature=temperature, max_tokens=max_tokens, truncate_prompt=truncate,
                                  seed=seed if temperature > 0 else None)
    except ValueError as e:
        _fail(str(e))
        return

    from .artifacts import RunDir

    if out is None:
        stem = Path(data).stem if data.endswith((".jsonl", ".json")) else data
        out = Path("runs") / f"judge-eval-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    config = {"command": "judge eval", "data": data, "mode": mode, "backend": backend, "model": model,
              "base_url": base_url,
              "limit": limit, "n_pairs": len(pairs), "both_orders": both_orders, "samples": samples,
              "batch_size": batch_size, "sampling": sampling.model_dump(mode="json")}
    try:
        run = RunDir(out, config=config, seeds={"placement": seed})
    except ConfigError as e:
        _fail(f"{e} (or pass another --out)")
        return

    if backend == "transformers":
        from .generators.transformers import TransformersGenerator

        gen = TransformersGenerator(model, batch_size=min(batch_size * (2 if both_orders else 1), 64))
    elif backend == "vllm":
        from .generators.vllm import VLLMGenerator

        gen = VLLMGenerator(model, enable_prefix_caching=True)
    else:
        from .generators.openai import OpenAIGenerator

        gen = OpenAIGenerator(base_url, model)  # type: ignore[arg-type]
    try:
        judge, inner = _eval_judge(mode, gen, both_orders=both_orders, samples=samples, sampling=sampling)
    except ValueError as e:
        _fail(str(e))
        return

    run.set_meta("judge", {"name": judge.name, "mode": mode, "template_id": inner.template.template_id,
                           "template_hash": inner.template.template_hash,
                           "parser_version": inner.parser_version})
    typer.echo(f"judging {len(pairs)} pairs from {data} with {backend}:{model} -> {out}")
    try:
        with run.stage("judge_eval") as st:
            report = evaluate(judge, pairs, seed=seed, batch_size=batch_size, run_dir=out, progress=progress)
            st.rows = report.n
            st.metrics = {"accuracy": report.accuracy, "invalid_rate": report.invalid_rate,
                          "position_consistent_accuracy": report.position_consistent_accuracy}
            for name in ("records.jsonl", "report.json", "report.md"):
                st.add_artifact(out / name)
    finally:
        close = getattr(gen, "close", None)
        if callable(close):
            close()
    typer.echo("")
    typer.echo(report.to_markdown())
    typer.echo(f"report: {out / 'report.md'}  records: {out / 'records.jsonl'}")


def _preflight_openai(base_url: str, model: str) -> None:
    """``GET /models`` before any output folder is made: a dead or failing server is one line naming the URL."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
                           timeout=10.0, max_retries=1)
    try:
        served = [m.id for m in client.models.list().data]
    except openai.APIStatusError as e:
        _fail(f"{base_url} answered HTTP {e.status_code} to GET /models; is it an OpenAI-compatible server "
              "(e.g. `vllm serve`), and is it healthy?")
        return
    except openai.APIConnectionError as e:
        _fail(f"cannot reach {base_url} ({e}); start the server or fix --base-url")
        return
    finally:
        client.close()
    if served and model not in served:
        _fail(f"--model {model!r} is not served by {base_url}; it serves: {', '.join(served[:10])}")


def _register_component_apps() -> None:
    """Sub-command groups owned by the components (their modules import only typer and pydantic at load)."""
    from loopwright.agents.coa.cli import coa_app
    from loopwright.tools.cli import tools_app

    app.add_typer(tools_app, name="tools", help="Tools: build the offline Wikipedia search index.")
    app.add_typer(coa_app, name="coa", help="Chain-of-Abstraction: convert GSM8K solutions to abstract chains.")
    from loopwright.trainers.models_cli import models_app

    app.add_typer(models_app, name="models", help="Real models built offline from PyPI packages (SmolLM2).")
    from loopwright.trainers.launch import train_cmd

    app.command("train")(train_cmd)


_register_component_apps()


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="loopwright")


if __name__ == "__main__":
    main()
