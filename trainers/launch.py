"""Multi-process training through accelerate: a JSON job file, the worker entry the launcher runs, the CLI command.

A *job* names a wrapper (``sft`` / ``dpo`` / ``reward``: :func:`~loopwright.trainers.sft.sft_train`,
:func:`~loopwright.trainers.dpo.dpo_train`, :func:`~loopwright.trainers.reward.reward_train`), its base model, a
JSONL data file, the output folder, the wrapper's settings and ``trl_config`` overrides. The launcher starts one
worker per process::

    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml \\
        -m loopwright.trainers.launch --config job.json

or, equivalently, ``loopwright train sft --base M --data rows.jsonl --out OUT --launcher accelerate
--num-processes 2`` (it writes the job file and runs that command). Every rank trains; the main process alone
saves the model, atomically (``trainers/distributed.py``). ``settings.batch_size`` is *per process*: the global
batch is ``batch_size x num_processes x gradient_accumulation_steps``.

Why the CPU config says ``distributed_type: MULTI_GPU``: ``accelerate launch --cpu --num_processes 2`` starts *one*
process unless MPI is installed (accelerate's MULTI_CPU launcher is ``mpirun``; accelerate 1.16
``prepare_simple_launcher_cmd_env``). The MULTI_GPU launcher is torchrun; on a machine without CUDA each rank then
runs on the CPU and accelerate picks gloo (``PartialState`` reports ``MULTI_CPU``). The job file may hold one job or
a list, run in order by the same processes (one process-group start-up for several trainings).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..sdk.errors import ConfigError

__all__ = ["ACCELERATE_CONFIGS", "TrainJob", "accelerate_command", "free_port", "load_jobs", "run_job", "train_cmd"]

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
"""The shipped accelerate configs: ``cpu_2proc.yaml`` (tested), ``fsdp_8gpu.yaml`` and ``zero3_8gpu.yaml`` (not
run here: no GPU node)."""


class TrainJob(BaseModel):
    """One training run for the worker: the wrapper, its inputs and its settings (all JSON)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sft", "dpo", "reward"]
    base: str
    data: str
    """A JSONL file of rows in the wrapper's format (SFT: ``messages`` or ``prompt``/``target``; DPO and reward:
    ``prompt``/``chosen``/``rejected``)."""
    out: str
    settings: dict[str, Any] = Field(default_factory=dict)
    """Fields of the wrapper's settings model (SFTSettings / DPOSettings / RewardSettings)."""
    trl_config: dict[str, Any] | None = None
    """Fields of the TRL config class, passed through untouched (``report_to``, ``ddp_timeout``, ``fsdp`` ...)."""


def load_jobs(path: str | Path) -> list[TrainJob]:
    """The job(s) in a JSON file (an object or a list); a missing or malformed file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"job file {path} not found; write a JSON object with kind/base/data/out (see "
                          "loopwright.trainers.launch.TrainJob)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"job file {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    items = raw if isinstance(raw, list) else [raw]
    try:
        return [TrainJob.model_validate(x) for x in items]
    except ValueError as e:
        raise ConfigError(f"job file {path}: {str(e).splitlines()[0]} ... ({e})") from None


def _wrapper(job: TrainJob) -> tuple[Any, BaseModel]:
    """``(train function, validated settings)`` for a job; unknown settings raise here, before any launch."""
    if job.kind == "sft":
        from .sft import SFTSettings as settings_cls
        from .sft import sft_train as train
    elif job.kind == "dpo":
        from .dpo import DPOSettings as settings_cls
        from .dpo import dpo_train as train
    else:
        from .reward import RewardSettings as settings_cls
        from .reward import reward_train as train
    try:
        return train, settings_cls(**job.settings)
    except ValidationError as e:
        bad = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"{job.kind} settings: {bad}; allowed fields: {', '.join(settings_cls.model_fields)}"
                          ) from None


def run_job(job: TrainJob) -> Any:
    """Run one job in this process (under a launcher, every rank calls this); returns the wrapper's TrainResult."""
    from ..sdk.artifacts import read_jsonl

    data = Path(job.data)
    if not data.is_file():
        raise ConfigError(f"data file {data} not found; pass a JSONL file of training rows")
    train, settings = _wrapper(job)
    return train(job.base, read_jsonl(data), job.out, settings, trl_config=job.trl_config)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(job_file: str | Path, *, num_processes: int | None = None, config_file: str | Path | None = None,
                       port: int | None = None, result_dir: str | Path | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs :func:`worker` over ``job_file``.

    ``config_file`` defaults to ``configs/accelerate/cpu_2proc.yaml``; ``num_processes`` overrides its count; a
    local run binds the rendezvous to 127.0.0.1 on ``port`` (a free one by default).
    """
    cfg = Path(config_file) if config_file is not None else ACCELERATE_CONFIGS / "cpu_2proc.yaml"
    if not cfg.is_file():
        raise ConfigError(f"accelerate config {cfg} not found; pass --accelerate-config with a file from "
                          f"{ACCELERATE_CONFIGS} or one written by `accelerate config`")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg)]
    if num_processes is not None:
        cmd += ["--num_processes", str(num_processes)]
    cmd += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(port or free_port()),
            "-m", "loopwright.trainers.launch", "--config", str(job_file)]
    if result_dir is not None:
        cmd += ["--result-dir", str(result_dir)]
    return cmd


def local_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a local multi-process run: gloo on the loopback interface, offline hub, one thread."""
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------- the worker

worker_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@worker_app.command()
def worker(
    config: Annotated[Path, typer.Option("--config", help="JSON job file (one job or a list)")],
    result_dir: Annotated[Path | None, typer.Option("--result-dir", help="write rank<N>.json per process here")] = None,
) -> None:
    """Run the job(s) in ``config`` on this rank (what ``accelerate launch -m loopwright.trainers.launch`` runs)."""
    from . import distributed

    jobs = load_jobs(config)
    results = []
    for job in jobs:
        res = run_job(job)
        results.append({"kind": job.kind, "model_dir": str(res.model_dir),
                        "metrics": {k: v for k, v in res.metrics.items() if k != "log_history"}})
    info = {"rank": distributed.rank(), "world_size": distributed.world_size(), "pid": os.getpid(),
            "saved": [str(p) for p in distributed.SAVED], "results": results}
    if result_dir is not None:
        from ..sdk.artifacts import write_json

        write_json(Path(result_dir) / f"rank{distributed.rank()}.json", info)
    if distributed.is_main_process():
        typer.echo(json.dumps({"world_size": info["world_size"], "results": results}, default=str))


# --------------------------------------------------------------------------------------------- the CLI command


def train_cmd(
    kind: Annotated[str, typer.Argument(help="sft, dpo or reward")],
    base: Annotated[str, typer.Option("--base", help="the base model folder")],
    data: Annotated[Path, typer.Option("--data", help="JSONL training rows")],
    out: Annotated[Path, typer.Option("--out", help="output model folder (written atomically)")],
    settings: Annotated[str, typer.Option(help="wrapper settings as JSON, e.g. '{\"max_steps\": 100}'")] = "{}",
    trl_config: Annotated[str, typer.Option("--trl-config", help="TRL config overrides as JSON")] = "null",
    launcher: Annotated[str, typer.Option(help="none (this process) or accelerate")] = "none",
    num_processes: Annotated[int | None, typer.Option(help="processes for --launcher accelerate")] = None,
    accelerate_config: Annotated[Path | None, typer.Option(
        help="accelerate config (default configs/accelerate/cpu_2proc.yaml; see fsdp_8gpu.yaml, zero3_8gpu.yaml)")
    ] = None,
) -> None:
    """Train with a loopwright TRL wrapper, in this process or under ``accelerate launch`` (multi-process)."""
    if kind not in ("sft", "dpo", "reward"):
        raise ConfigError(f"unknown training kind {kind!r}; use sft, dpo or reward")
    if launcher not in ("none", "accelerate"):
        raise ConfigError(f"--launcher {launcher!r}; use none or accelerate")
    try:
        job = TrainJob(kind=kind, base=base, data=str(data), out=str(out), settings=json.loads(settings),  # type: ignore[arg-type]
                       trl_config=json.loads(trl_config))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--settings / --trl-config must be JSON ({e.msg}); e.g. --settings '{{\"max_steps\": 10}}'"
                          ) from None
    if not data.is_file():
        raise ConfigError(f"--data {data} not found; pass a JSONL file of training rows")
    _wrapper(job)  # a wrong settings field fails here, once, not in every rank
    if launcher == "none":
        res = run_job(job)
        typer.echo(json.dumps({"model_dir": str(res.model_dir), "train_loss": res.metrics.get("train_loss")}))
        return
    with tempfile.TemporaryDirectory(prefix="loopwright-train-") as d:
        job_file = Path(d) / "job.json"
        job_file.write_text(job.model_dump_json())
        cmd = accelerate_command(job_file, num_processes=num_processes, config_file=accelerate_config)
        code = subprocess.run(cmd, env=local_env(), check=False).returncode
    if code != 0:
        raise typer.Exit(code)


if __name__ == "__main__":
    worker_app()
