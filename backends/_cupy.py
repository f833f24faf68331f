"""CuPy on CUDA; its estimator scans are the ``numba.cuda`` kernels, run on CuPy's
current stream without a host copy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend, ScanKernels, check_kernel_name, reference_kernels


class CupyBackend(Backend):
    """CuPy arrays on one CUDA device."""

    name = "cupy"

    def __init__(self, device: Any) -> None:
        import array_api_compat.cupy as xp_cupy

        super().__init__(xp_cupy, device)
        self._cuda: ScanKernels | None = None

    def is_array(self, x: Any) -> bool:
        import cupy

        return isinstance(x, cupy.ndarray) and x.device == self.device

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        import cupy

        with self.device:
            return cupy.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.get()

    def rng(self, seed: int) -> Any:
        import cupy

        with self.device:
            return cupy.random.default_rng(seed)

    def kernel_names(self) -> tuple[str, ...]:
        return ("reference", "cuda")

    def kernels(self, kernel: str = "auto", *, needs_grad: bool = False) -> ScanKernels:
        check_kernel_name(kernel)
        if kernel == "reference":
            return reference_kernels(self.xp)
        if kernel in ("auto", "cuda"):
            if self._cuda is None:
                import cupy

                from ._cuda_glue import cuda_kernels

                def empty_like(x: Any) -> Any:
                    return cupy.empty(x.shape, dtype=x.dtype)

                def stream() -> Any:
                    from numba import cuda

                    return cuda.external_stream(cupy.cuda.get_current_stream().ptr)

                self._cuda = cuda_kernels(empty_like, stream)
            return self._cuda
        raise ValueError(self._unsupported(kernel))
