"""Shared fixtures: an ``xp`` fixture over every available backend, SciPy style.

Inputs and references are built in NumPy; only the function under test runs on the
backend. A backend whose library is missing is skipped, never counted as passing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

BACKENDS = ["numpy", "torch", "array_api_strict", "jax", "cupy", "torch-cuda"]


def _converter(name: str) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    if name == "numpy":
        return (lambda x: x), np.asarray
    if name == "torch":
        import torch

        return (lambda x: torch.from_numpy(np.ascontiguousarray(x).reshape(np.shape(x)))), (
            lambda t: t.detach().cpu().numpy()
        )
    if name == "torch-cuda":
        import torch

        return (lambda x: torch.from_numpy(np.ascontiguousarray(x).reshape(np.shape(x))).cuda()), (
            lambda t: t.detach().cpu().numpy()
        )
    if name == "cupy":
        import cupy

        return cupy.asarray, cupy.asnumpy
    if name == "array_api_strict":
        import array_api_strict

        return array_api_strict.asarray, np.asarray
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)  # else JAX turns float64 inputs into float32
    return jnp.asarray, np.asarray


class XP:
    """A backend under test: ``to(x)`` converts NumPy input, ``back(y)`` brings results home."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.to, self.back = _converter(name)


@pytest.fixture(params=BACKENDS)
def xp(request: pytest.FixtureRequest) -> XP:
    name = request.param
    module = "torch" if name == "torch-cuda" else name
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{name} is not installed")
    if name in ("cupy", "torch-cuda") and not _has_gpu(module):
        pytest.skip(f"{name}: no CUDA device here")
    return XP(name)


def _has_gpu(module: str) -> bool:
    try:
        if module == "torch":
            import torch

            return torch.cuda.is_available()
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver or no device both mean no GPU
        return False
