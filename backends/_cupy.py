"""CuPy on CUDA; its estimator scans are the ``numba.cuda`` kernels, run on CuPy's
current stream without a host copy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend, ScanKernels, bincount_scatter_add


class CupyBackend(Backend):
    """CuPy arrays on one CUDA device."""

    name = "cupy"

    def __init__(self, device: Any) -> None:
        import array_api_compat.cupy as xp_cupy

        super().__init__(xp_cupy, device)

    def is_array(self, x: Any) -> bool:
        import cupy

        return isinstance(x, cupy.ndarray) and x.device == self.device

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        import cupy

        with self.device:
            return cupy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def scatter_add(self, size: int, index: Any, values: Any) -> Any:
        import cupy

        return bincount_scatter_add(cupy, size, index.astype(cupy.int64, copy=False), values)

    def rng(self, seed: int) -> Any:
        import cupy

        with self.device:
            return cupy.random.default_rng(seed)

    def compiled_kernel(self) -> str | None:
        return "cuda"

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        import cupy

        from ._cuda_glue import cuda_kernels

        def empty_like(x: Any) -> Any:
            return cupy.empty(x.shape, dtype=x.dtype)

        def stream() -> Any:
            from numba import cuda

            return cuda.external_stream(cupy.cuda.get_current_stream().ptr)

        return cuda_kernels(empty_like, stream)
