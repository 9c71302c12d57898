"""Shared setup for the Triton kernel tests: interpreter mode on CPU, device and tolerance helpers.

Without CUDA, ``TRITON_INTERPRET=1`` is set here, before any test module imports triton (Triton decides at
decoration time whether a kernel is interpreted; spec/environment.md §7). The interpreter is for correctness only,
never timing: it costs about 1-2 ms per program x loop iteration, so keep shapes small.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def max_mean_err(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    diff = (actual.double() - expected.double()).abs()
    return float(diff.max()) if diff.numel() else 0.0, float(diff.mean()) if diff.numel() else 0.0


def assert_within_torch_error(name: str, kernel: torch.Tensor, torch_same_dtype: torch.Tensor,
                              reference_fp32: torch.Tensor, atol: float, factor: float = 2.0) -> None:
    """spec/style.md habit 2: err(kernel) <= factor * err(PyTorch, same dtype) + atol, both vs an fp32 reference."""
    k_max, k_mean = max_mean_err(kernel, reference_fp32)
    t_max, _ = max_mean_err(torch_same_dtype, reference_fp32)
    assert k_max <= factor * t_max + atol, (
        f"{name}: kernel max err {k_max:.3g} (mean {k_mean:.3g}) > {factor} x torch err {t_max:.3g} + atol {atol:g}")


@pytest.fixture
def device() -> str:
    """'cuda' when available, else 'cpu' (kernels then run in the Triton interpreter)."""
    return DEVICE


@pytest.fixture
def within_torch_error():
    """The tolerance rule above, as a fixture: ``within_torch_error(name, kernel, torch_lowp, ref_fp32, atol)``."""
    return assert_within_torch_error
