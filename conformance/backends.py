"""The backends a conformance run can use on this machine, and how inputs reach them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Target:
    """One backend (with a device) and one ``kernel=`` choice to run the cases on."""

    label: str
    kernel: str
    convert: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]

    @property
    def name(self) -> str:
        return f"{self.label}/{self.kernel}"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_targets(device: str, scan: str) -> list[Target]:
    import torch

    def to_torch(x: np.ndarray) -> Any:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    def to_torch_with_grad(x: np.ndarray) -> Any:
        t = to_torch(x)
        return t.requires_grad_(True) if t.is_floating_point() else t

    def back(x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    label = f"torch-{device}"
    return [
        Target(label, scan, to_torch, back),
        Target(label, "reference", to_torch, back),
        Target(f"{label}+grad", scan, to_torch_with_grad, back),
    ]


def available_targets() -> list[Target]:
    """Every backend × kernel this machine can run (missing libraries are left out)."""
    targets = [
        Target("numpy", "numba", lambda x: x, np.asarray),
        Target("numpy", "reference", lambda x: x, np.asarray),
    ]
    if _have("torch"):
        import torch

        targets += _torch_targets("cpu", "numba")
        if torch.cuda.is_available():
            targets += _torch_targets("cuda", "cuda")
    if _have("array_api_strict"):
        import array_api_strict

        targets.append(
            Target("array_api_strict", "reference", array_api_strict.asarray, np.asarray)
        )
    if _have("jax"):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)  # else JAX turns float64 into float32

        targets.append(Target("jax", "reference", jnp.asarray, np.asarray))
    if _have("cupy") and _cupy_has_gpu():
        import cupy

        targets += [
            Target("cupy", "cuda", cupy.asarray, cupy.asnumpy),
            Target("cupy", "reference", cupy.asarray, cupy.asnumpy),
        ]
    return targets


def _cupy_has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver or no device: no CuPy target
        return False
