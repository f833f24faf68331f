"""The backend layer: the only part of arrayrl that knows torch, CuPy, Numba and JAX.

``backend_of(*arrays)`` returns the :class:`Backend` that owns the arrays; a
``Backend`` carries the array-api-compat namespace (``xp``), the device, autograd glue
and the estimator scan kernels. Frameworks are imported only when an array of theirs is
seen, so ``import arrayrl`` leaves torch, CuPy, Numba and JAX out of ``sys.modules``.
"""

from ._base import KERNEL_NAMES, Backend, ScanKernels
from ._registry import BACKEND_NAMES, backend_of, get_backend, same_arrays

__all__ = [
    "BACKEND_NAMES",
    "KERNEL_NAMES",
    "Backend",
    "ScanKernels",
    "backend_of",
    "get_backend",
    "same_arrays",
]
