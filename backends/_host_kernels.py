"""Numba CPU scans bound to a backend whose CPU arrays can be viewed as NumPy arrays.

The raw kernels (``_numba_cpu``) read and write NumPy arrays; this module wraps them for
NumPy itself and for torch CPU tensors, which it views without a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._base import ScanKernels
from ._threads import scan_threads

FUSED_ESTIMATORS = ("gae", "td_lambda", "vtrace", "reward2go")


def numba_kernels(
    to_view: Callable[[Any], Any], from_view: Callable[[Any], Any]
) -> ScanKernels:
    """Numba scans that take ``to_view(x)`` of each array and return ``from_view(y)``."""
    scan_threads()  # a bad NUMBA_NUM_THREADS: our named error, before Numba's import fails
    from . import _numba_cpu

    def bind(kernel: Callable[..., Any]) -> Callable[..., Any]:
        def run(*arrays: Any, **out: Any) -> Any:
            # ``out=`` (the fused estimators only): the caller's buffers, viewed alike.
            if out.get("out") is not None:
                given = out["out"]
                out = {"out": tuple(map(to_view, given)) if isinstance(given, tuple)
                       else to_view(given)}
            result = kernel(*[to_view(x) for x in arrays], **out)
            if isinstance(result, tuple):
                return tuple(from_view(y) for y in result)
            return from_view(result)

        return run

    fused = {name: bind(getattr(_numba_cpu, name)) for name in FUSED_ESTIMATORS}
    return ScanKernels("numba", bind(_numba_cpu.linear_scan), fused)


def numba_adjoint(to_view: Callable[[Any], Any], from_view: Callable[[Any], Any]) -> Callable:
    """The forward (adjoint) scan ``u_t = g_t + b_{t-1} u_{t-1}`` on Numba."""
    scan_threads()
    from . import _numba_cpu

    def adjoint(b: Any, grad: Any) -> Any:
        return from_view(_numba_cpu.linear_scan_adjoint(to_view(b), to_view(grad)))

    return adjoint
