"""NumPy on the CPU; its estimator scans are Numba kernels."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from ._base import Backend, ScanKernels, bincount_scatter_add


def _identity(x: Any) -> Any:
    return x


class NumpyBackend(Backend):
    """NumPy arrays (always on the CPU)."""

    name = "numpy"

    def __init__(self) -> None:
        super().__init__(xp_numpy, "cpu")

    def is_array(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return np.asarray(x, dtype=dtype)

    def from_numpy(self, x: np.ndarray) -> Any:
        return x

    def write_into(self, dst: Any, src: Any) -> Any:
        if dst.shape != src.shape:
            raise ValueError(f"shape mismatch: {src.shape} into {dst.shape}")
        np.copyto(dst, src, casting="unsafe")
        return dst

    def scatter_add(self, size: int, index: Any, values: Any) -> Any:
        return bincount_scatter_add(np, size, np.asarray(index, np.int64), values)

    def zero_with_gradient(self, x: Any) -> Any:
        return np.zeros_like(x)  # no autograd: nothing to carry

    def safe_tanh(self, x: Any, limit: float) -> Any:
        return np.clip(np.tanh(x), -limit, limit)

    def safe_atanh(self, y: Any, limit: float) -> Any:
        return np.arctanh(np.clip(y, -limit, limit))

    def from_dlpack(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return x
        return super().from_dlpack(x)

    def compiled_kernel(self) -> str | None:
        return "numba"

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        from ._host_kernels import numba_kernels

        return numba_kernels(_identity, _identity)
