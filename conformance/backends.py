"""The backends a conformance run can use on this machine, and how inputs reach them."""

from __future__ import annotations

import importlib.util
import os
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
        import jax.numpy as jnp

        _configure_jax()
        targets += [
            Target("jax", "jax", jnp.asarray, np.asarray),
            Target("jax", "reference", jnp.asarray, np.asarray),
        ]
    if _have("cupy") and _cupy_has_gpu():
        import cupy

        targets += [
            Target("cupy", "cuda", cupy.asarray, cupy.asnumpy),
            Target("cupy", "reference", cupy.asarray, cupy.asnumpy),
        ]
    return targets


def _configure_jax() -> None:
    """float64 support, and XLA's backend optimisation level 0 unless ``XLA_FLAGS`` sets
    one: the cases run thousands of tiny single-operation programs, whose compile time
    (not their run time) dominates; level 0 halves it. It takes effect only if JAX has
    not yet started its CPU backend in this process."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    import jax

    jax.config.update("jax_enable_x64", True)  # else JAX turns float64 into float32


def _cupy_has_gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver or no device: no CuPy target
        return False


@dataclass(frozen=True)
class LossTarget:
    """One backend (with a device) to run the loss cases on (losses take no kernel).

    ``core_only`` and ``dtypes`` narrow the cases it runs: JAX's eager mode compiles
    every operation anew for every shape and dtype (~0.05 s each on a CI core), so the
    full matrix would take minutes there; it runs the core cases (one per loss and actor
    kind, both batch layouts) in float64 — float32 promotion rules are checked by
    array_api_strict on every case.
    """

    name: str
    backend: str
    device: Any = None
    core_only: bool = False
    dtypes: tuple[str, ...] = ("float64", "float32")

    def runs(self, case: Any, dtype: str) -> bool:
        """Whether this target runs loss ``case`` at ``dtype``: a case may name the only
        backends its maths runs on (``case.backends``, e.g. GAIL's gradient penalty needs
        input gradients: torch and JAX); on the others it is not run (not counted)."""
        allowed = getattr(case, "backends", None)
        if allowed is not None and self.backend not in allowed:
            return False
        return dtype in self.dtypes and (case.core or not self.core_only)

    @property
    def label(self) -> str:
        """The name, with the subset it runs when it does not run every case."""
        if not self.core_only:
            return self.name
        return f"{self.name} (core cases, {'/'.join(self.dtypes)})"


def available_loss_targets() -> list[LossTarget]:
    """Every backend this machine can run the losses on (missing libraries left out)."""
    targets = [LossTarget("numpy", "numpy")]
    if _have("torch"):
        import torch

        targets.append(LossTarget("torch-cpu", "torch", "cpu"))
        if torch.cuda.is_available():
            targets.append(LossTarget("torch-cuda", "torch", "cuda"))
    if _have("array_api_strict"):
        targets.append(LossTarget("array_api_strict", "array_api_strict"))
    if _have("jax"):
        _configure_jax()
        targets.append(LossTarget("jax", "jax", core_only=True, dtypes=("float64",)))
    if _have("cupy") and _cupy_has_gpu():
        targets.append(LossTarget("cupy", "cupy"))
    return targets
