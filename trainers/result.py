"""What every TRL trainer wrapper returns and writes: :class:`TrainResult`, the manifest, device-aware TRL defaults.

The wrappers (:func:`~loopwright.trainers.sft.sft_train`, :func:`~loopwright.trainers.dpo.dpo_train`,
:func:`~loopwright.trainers.reward.reward_train`) share one procedure, :func:`run_trl`:

1. build the TRL config from our settings plus :func:`device_defaults` (spec/environment.md §2: TRL configs
   default to ``bf16=True``, which raises without a GPU; ``save_strategy="steps"`` writes checkpoints;
   ``report_to`` logs to whatever tracker is installed, so it is ``none`` unless ``LOOPWRIGHT_REPORT_TO`` names
   one, sdk/tracking.py; without CUDA: CPU and fp32, with CUDA: the GPU and bf16 mixed precision, fp16 where
   the GPU lacks bf16), then apply the caller's ``trl_config`` dict on top,
   untouched (every key must be a field of the TRL config class; an unknown key raises naming it); with
   ``settings.lora`` the trainer also gets a peft ``LoraConfig`` (``trainers/lora.py``);
2. train with torch's CPU threads set to ``num_threads`` (1 by default: on a shared 2-core machine two OpenMP
   threads were ~10x slower whenever another process held a core; see ``SandboxConfig.num_threads``);
3. save model + tokenizer + ``loopwright_manifest.json`` (kind, settings, the TRL config as passed, the device,
   parameter dtype and mixed precision the run actually used, data fingerprint and row count, package versions,
   metrics, log history, timings; with LoRA whether the folder is the merged model or the adapter) into a
   temporary sibling of the output folder and rename it into place, so the output folder is either absent/old
   or complete;
4. with ``run=RunDir``, a relative output path lands inside the run directory and the run's manifest records
   the training under ``meta["train:<path>"]``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..sdk.errors import ConfigError
from ..sdk.tracking import report_to, tensorboard_dir
from ..sdk.types import stable_hash
from .cache import versions
from .distributed import build_once, is_main_process, save_trained

__all__ = ["CPU_SAFE_DEFAULTS", "MANIFEST", "TRL_DEFAULTS", "TrainResult", "data_fingerprint", "device_defaults",
           "read_train_manifest", "run_trl"]

MANIFEST = "loopwright_manifest.json"
"""The manifest file written into every trained model folder (same name as the sandbox models')."""

TRL_DEFAULTS: dict[str, Any] = {
    "report_to": "none", "save_strategy": "no", "gradient_checkpointing": False, "dataloader_num_workers": 0,
}
"""Device-independent TRL/transformers config values every wrapper sets unless ``trl_config`` overrides them."""

CPU_SAFE_DEFAULTS: dict[str, Any] = {"use_cpu": True, "bf16": False, "fp16": False, **TRL_DEFAULTS}
""":func:`device_defaults` on a machine without CUDA: train on the CPU in fp32."""


def device_defaults() -> dict[str, Any]:
    """The TRL config defaults for this machine: :data:`CPU_SAFE_DEFAULTS` without CUDA; with CUDA the GPU
    (``use_cpu=False``) and mixed precision, ``bf16=True`` where ``torch.cuda.is_bf16_supported()`` (Ampere and
    later) else ``fp16=True``. ``trl_config`` overrides any of them."""
    import torch

    if not torch.cuda.is_available():
        return dict(CPU_SAFE_DEFAULTS)
    bf16 = bool(torch.cuda.is_bf16_supported())
    return {"use_cpu": False, "bf16": bf16, "fp16": not bf16, **TRL_DEFAULTS}


def _tracking_defaults() -> dict[str, Any]:
    """``report_to`` from ``LOOPWRIGHT_REPORT_TO`` (sdk/tracking.py) when it names a tracker; else nothing."""
    names = report_to()
    return {"report_to": names} if names else {}


@contextlib.contextmanager
def _tensorboard_logdir(reporters: Any, out: Path, run: Any) -> Iterator[None]:
    """Point transformers' TensorBoard callback (``TENSORBOARD_LOGGING_DIR``) at ``<run>/tensorboard/<out>``
    for one training run, since its default lies in the scratch folder that is deleted afterwards."""
    names = [reporters] if isinstance(reporters, str) else list(reporters or [])
    if not ({"tensorboard", "all"} & set(names)) or os.environ.get("TENSORBOARD_LOGGING_DIR"):
        yield
        return
    root = Path(run.path) if run is not None else out.parent
    try:
        name = out.resolve().relative_to(root.resolve())  # iter_1/model inside a loop's run folder
    except ValueError:
        name = Path(out.name)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(tensorboard_dir(root) / name)
    try:
        yield
    finally:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)


def _runtime(trainer: Any) -> dict[str, Any]:
    """Device, parameter dtype (the one most parameters have; all of them by count) and mixed precision of a run."""
    counts: dict[str, int] = {}
    for p in trainer.model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        counts[key] = counts.get(key, 0) + p.numel()
    args = trainer.args
    return {"device": args.device.type, "dtype": max(counts, key=counts.__getitem__) if counts else None,
            "param_dtypes": counts, "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no"}


class TrainResult(BaseModel):
    """The outcome of one training run: where the model is, its metrics, and its manifest.

    ``metrics`` holds ``train_loss``, ``loss_history``, the last logged value of every other training metric
    (e.g. DPO's ``rewards/accuracies``), ``init_seconds``, ``train_seconds``, ``total_seconds`` and ``n_rows``.
    ``result[key]`` reads ``result.metrics[key]`` (the dict the pre-TrainResult ``sft_train`` returned).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    model_dir: Path
    metrics: dict[str, Any]
    manifest_path: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest written next to the model."""
        if self.manifest_path is None:
            return {}
        return json.loads(Path(self.manifest_path).read_text())


def data_fingerprint(rows: Sequence[Any]) -> str:
    """``stable_hash`` of the training rows (order matters): the data's identity in manifests and cache keys."""
    return stable_hash(list(rows))


def read_train_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a trained model folder; a missing or corrupt one raises naming the file."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a model folder written by loopwright's "
                                "trainers")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg}); retrain the model") from e


def _check_overrides(config_cls: type, trl_config: Mapping[str, Any] | None) -> dict[str, Any]:
    if trl_config is None:
        return {}
    if not isinstance(trl_config, Mapping):
        raise ConfigError(f"trl_config must be a dict of {config_cls.__name__} fields, got "
                          f"{type(trl_config).__name__}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(trl_config) - fields)
    if unknown:
        raise ConfigError(f"trl_config has {unknown}, which {config_cls.__name__} does not know; check the "
                          f"field names of trl.{config_cls.__name__} (TRL {versions().get('trl', '?')})")
    return dict(trl_config)


def _resolve_out(out: str | Path, run: Any) -> Path:
    out = Path(out)
    if run is not None and not out.is_absolute():
        out = run.path_for(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder; pass a new folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(f"output folder {out} is not empty and holds no {MANIFEST}; pass an empty or new folder "
                          "(a folder written by a loopwright trainer is replaced)")
    return out


def _last_logged(history: list[dict[str, Any]]) -> dict[str, Any]:
    skip = {"epoch", "step", "loss", "train_loss", "train_runtime", "train_samples_per_second",
            "train_steps_per_second", "total_flos", "learning_rate", "grad_norm"}
    out: dict[str, Any] = {}
    for h in history:
        for k, v in h.items():
            if k not in skip and isinstance(v, (int, float)):
                out[k] = v
    return out


def run_trl(
    *,
    kind: str,
    base: str | Path,
    rows: Sequence[dict[str, Any]],
    out: str | Path,
    settings: BaseModel,
    config_cls: type,
    trainer_cls: type,
    config_kwargs: dict[str, Any],
    trl_config: Mapping[str, Any] | None,
    load_model: Callable[[str], Any] | None,
    num_threads: int | None,
    seed: int,
    run: Any = None,
    progress: bool = False,
    builder_version: str = "1",
    task_type: str = "CAUSAL_LM",
) -> TrainResult:
    """Train ``trainer_cls(model, args=config_cls(...), train_dataset=rows, processing_class=tokenizer)`` and save.

    ``config_kwargs`` are our settings as config fields; :func:`device_defaults` go under them and
    ``trl_config`` over them. ``load_model(base)`` returns the model object to train (``None``: TRL loads
    ``base`` itself, e.g. RewardTrainer's sequence-classification head). ``settings.lora`` (a
    :class:`~loopwright.trainers.lora.LoRASettings` or ``None``) trains adapters of peft ``task_type``
    (``CAUSAL_LM`` or ``SEQ_CLS``) instead of the full model. See the module docstring.
    """
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback

    overrides = _check_overrides(config_cls, trl_config)
    lora = getattr(settings, "lora", None)
    if not rows:
        raise ValueError(f"{kind} training needs at least one row; got none (nothing to train on)")
    out = _resolve_out(out, run)
    t0 = time.perf_counter()
    threads_before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{kind}-trainer-", dir=out.parent))
    passed: dict[str, Any] = {}
    state: dict[str, Any] = {}

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(str(base))
        kwargs = {**device_defaults(), **_tracking_defaults(), "output_dir": str(scratch), "seed": seed,
                  "data_seed": seed, "disable_tqdm": not progress, **config_kwargs, **overrides}
        passed.update(kwargs)
        args = config_cls(**kwargs)
        model = load_model(str(base)) if load_model is not None else str(base)
        bars_were_off = datasets.are_progress_bars_disabled()
        if not progress:
            datasets.disable_progress_bars()
        extra: dict[str, Any] = {}
        if lora is not None:
            from .lora import lora_config

            extra["peft_config"] = lora_config(lora, task_type)
        with _tensorboard_logdir(kwargs.get("report_to"), out, run):  # the callback reads it when built
            try:
                trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(list(rows)),
                                      processing_class=tok, **extra)
            finally:
                if not bars_were_off:
                    datasets.enable_progress_bars()
        if not progress:
            trainer.remove_callback(PrinterCallback)
        state["t_init"] = time.perf_counter() - t0
        result = trainer.train()
        state["t_train"] = time.perf_counter() - t0 - state["t_init"]
        runtime = _runtime(trainer)
        if lora is None:
            save_trained(trainer, tok, tmp)  # rank-aware under accelerate launch (trainers/distributed.py)
            lora_info = None
        else:
            from .lora import save_lora

            lora_info = save_lora(trainer, tok, tmp, lora, base, task_type)  # rank-aware as well
        history = [dict(h) for h in trainer.state.log_history]
        metrics = {
            "train_loss": result.training_loss,
            "loss_history": [h["loss"] for h in history if "loss" in h],
            **_last_logged(history),
            "n_rows": len(rows),
            "steps": trainer.state.global_step,
            "init_seconds": round(state["t_init"], 2),
            "train_seconds": round(state["t_train"], 2),
            "total_seconds": round(time.perf_counter() - t0, 2),
        }
        state["metrics"] = metrics
        manifest = {
            "kind": kind, "builder_version": builder_version, "base": str(base),
            "settings": settings.model_dump(mode="json"), **runtime, "lora": lora_info,
            "trl_config": {k: v for k, v in passed.items() if k != "output_dir"},
            "trl_config_overrides": overrides, "data_fingerprint": data_fingerprint(rows), "n_rows": len(rows),
            "versions": versions(), "metrics": metrics, "log_history": history,
            "init_seconds": metrics["init_seconds"], "train_seconds": metrics["train_seconds"],
            "total_seconds": metrics["total_seconds"], "train_loss": metrics["train_loss"],
            "loss_history": metrics["loss_history"],
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        with open(tmp / MANIFEST) as fh:
            os.fsync(fh.fileno())

    try:
        build_once(out, build)  # single process: build_atomically; multi-process: rank 0 renames, all wait
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        torch.set_num_threads(threads_before)
    res = TrainResult(kind=kind, model_dir=out, metrics=state["metrics"], manifest_path=out / MANIFEST)
    if run is not None and is_main_process():
        key = f"train:{run._relative(out)}"
        run.set_meta(key, {"kind": kind, "model_dir": str(out), "manifest": str(out / MANIFEST),
                           "metrics": {k: v for k, v in res.metrics.items() if k != "loss_history"}})
    return res
