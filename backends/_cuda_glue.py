"""``numba.cuda`` scans bound to a backend's CUDA arrays (CuPy, torch CUDA).

The raw kernels in ``_cuda`` write into outputs they are given; this module allocates
the outputs with the backend's own allocator and launches on the backend's current
stream, so inputs and outputs never leave the device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._base import ScanKernels

# estimator name -> number of outputs
_FUSED_OUTPUTS = {"gae": 2, "td_lambda": 1, "vtrace": 2, "reward2go": 1}


def _output_template(name: str, arrays: tuple[Any, ...]) -> Any:
    """An input whose shape and float dtype the outputs take."""
    if name == "reward2go":
        return arrays[1]
    if name == "vtrace":
        return arrays[3]
    return arrays[2]


def cuda_kernels(empty_like: Callable[[Any], Any], stream: Callable[[], Any]) -> ScanKernels:
    """CUDA scans allocating outputs with ``empty_like`` and launching on ``stream()``."""
    from . import _cuda

    def bind_fused(name: str) -> Callable[..., Any]:
        kernel = getattr(_cuda, name)
        n_out = _FUSED_OUTPUTS[name]

        def run(*arrays: Any) -> Any:
            template = _output_template(name, arrays)
            outs = tuple(empty_like(template) for _ in range(n_out))
            kernel(*arrays, out=outs if n_out > 1 else outs[0], stream=stream())
            return outs if n_out > 1 else outs[0]

        return run

    def linear_scan(a: Any, b: Any, init: Any) -> Any:
        out = empty_like(a)
        _cuda.linear_scan(a, b, init, out=out, stream=stream())
        return out

    fused = {name: bind_fused(name) for name in _FUSED_OUTPUTS}
    return ScanKernels("cuda", linear_scan, fused)


def cuda_adjoint(empty_like: Callable[[Any], Any], stream: Callable[[], Any]) -> Callable:
    """The forward (adjoint) scan ``u_t = g_t + b_{t-1} u_{t-1}`` on CUDA."""
    from . import _cuda

    def adjoint(b: Any, grad: Any) -> Any:
        out = empty_like(grad)
        _cuda.linear_scan_adjoint(b, grad, out=out, stream=stream())
        return out

    return adjoint
