"""PyTorch on the CPU or CUDA; supplies autograd.

Scans: tensors that need no gradient go straight to the Numba kernels (CPU, viewed as
NumPy arrays without a copy) or to the ``numba.cuda`` kernels (CUDA, on torch's current
stream). Tensors that need a gradient go through :class:`LinearScanFunction`, a
``torch.autograd.Function`` whose backward is the adjoint scan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._base import Backend, ScanKernels


class LinearScanFunction(torch.autograd.Function):
    r"""Differentiable reverse linear recurrence ``y_t = a_t + b_t y_{t+1}``, ``y_T = init``.

    The forward runs ``scan`` (a Numba or CUDA kernel); the backward runs the adjoint
    recurrence, which goes forward in time:

    .. math::

        u_0 = \bar y_0, \quad u_t = \bar y_t + b_{t-1} u_{t-1}, \qquad
        \bar a = u, \quad \bar b_t = u_t \, y_{t+1}, \quad \bar{\text{init}} = b_{T-1} u_{T-1}.
    """

    @staticmethod
    def forward(ctx: Any, a, b, init, scan: Callable, adjoint: Callable):
        y = scan(a.detach(), b.detach(), init.detach())
        ctx.save_for_backward(b, init, y)
        ctx.adjoint = adjoint
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y):
        b, init, y = ctx.saved_tensors
        if y.shape[1] == 0:
            return torch.zeros_like(y), torch.zeros_like(b), torch.zeros_like(init), None, None
        u = ctx.adjoint(b.detach(), grad_y.contiguous())
        grad_b = grad_init = None
        if ctx.needs_input_grad[1]:
            y_next = torch.cat([y[:, 1:], init[:, None]], dim=1)
            grad_b = u * y_next
        if ctx.needs_input_grad[2]:
            grad_init = b[:, -1] * u[:, -1]
        return u, grad_b, grad_init, None, None


class _SafeTanh(torch.autograd.Function):
    """``y = clamp(tanh x, -limit, limit)``; backward ``grad · (1 - y²)`` where ``x`` is
    finite, 0 elsewhere: :meth:`Backend.safe_tanh` in one pass each way."""

    @staticmethod
    def forward(ctx: Any, x, limit: float):
        y = torch.tanh(x).clamp_(-limit, limit)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx: Any, grad):
        x, y = ctx.saved_tensors
        return torch.where(torch.isfinite(x), grad * (1.0 - y * y), 0.0), None


class _SafeAtanh(torch.autograd.Function):
    """``atanh(clamp(y, -limit, limit))``; backward ``grad / (1 - clamp(y)²)`` where ``y``
    is finite, 0 elsewhere: :meth:`Backend.safe_atanh` in one pass each way."""

    @staticmethod
    def forward(ctx: Any, y, limit: float):
        clipped = y.clamp(-limit, limit)
        ctx.save_for_backward(y, clipped)
        return torch.atanh(clipped)

    @staticmethod
    def backward(ctx: Any, grad):
        y, clipped = ctx.saved_tensors
        return torch.where(torch.isfinite(y), grad / (1.0 - clipped * clipped), 0.0), None


def _autograd_kernels(inner: ScanKernels, adjoint: Callable) -> ScanKernels:
    def linear_scan(a: Any, b: Any, init: Any) -> Any:
        return LinearScanFunction.apply(a, b, init, inner.linear_scan, adjoint)

    return ScanKernels(f"{inner.name}+autograd", linear_scan)


#: The compiled kernel for each torch device type that has one.
_COMPILED_BY_DEVICE_TYPE = {"cpu": "numba", "cuda": "cuda"}


def _numpy_view(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy() if x.requires_grad else x.numpy()


class TorchBackend(Backend):
    """torch tensors on one device."""

    name = "torch"
    differentiable = True

    def __init__(self, device: Any) -> None:
        import array_api_compat.torch as xp_torch

        super().__init__(xp_torch, torch.device(device))

    def is_array(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.device == self.device

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def from_numpy(self, x: np.ndarray) -> Any:
        return torch.from_numpy(np.asarray(x)).to(self.device)

    def from_dlpack(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().to(self.device)
        try:
            return torch.from_dlpack(x).to(self.device)
        except (TypeError, RuntimeError, BufferError, AttributeError, ValueError):
            return super().from_dlpack(x)

    def linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        return torch.nn.functional.linear(x, weight, bias)

    def batched_linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        if bias is None:
            return torch.matmul(x, weight.transpose(-1, -2))
        x = x.expand(weight.shape[0], *x.shape[1:])  # a shared input: a view, no copy
        return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-1, -2))  # bias fused

    def relu(self, x: Any) -> Any:
        # torch's own kernel: clamp's backward (a where over x >= 0) is ~15x slower
        return torch.relu(x)

    def softplus(self, x: Any) -> Any:
        return torch.nn.functional.softplus(x)

    def smooth_l1(self, v1: Any, v2: Any) -> Any:
        return torch.nn.functional.smooth_l1_loss(v1, v2, reduction="none")

    def scatter_add(self, size: int, index: Any, values: Any) -> Any:
        zeros = values.new_zeros((*values.shape[:-1], size))
        return zeros.scatter_add(-1, index.to(torch.int64), values)  # out of place: autograd

    def logsumexp(self, x: Any, axis: int) -> Any:
        return torch.logsumexp(x, dim=axis)

    def safe_tanh(self, x: Any, limit: float) -> Any:
        return _SafeTanh.apply(x, limit)

    def safe_atanh(self, y: Any, limit: float) -> Any:
        return _SafeAtanh.apply(y, limit)

    def write_into(self, dst: Any, src: Any) -> Any:
        if tuple(dst.shape) != src.shape:
            raise ValueError(f"shape mismatch: {src.shape} into {tuple(dst.shape)}")
        if not isinstance(src, torch.Tensor):
            src = torch.from_numpy(np.asarray(src, order="C"))  # keeps 0-d arrays 0-d
        with torch.no_grad():
            dst.copy_(src)
        return dst

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def no_grad(self) -> contextlib.AbstractContextManager[None]:
        return torch.no_grad()

    def requires_grad(self, *arrays: Any) -> bool:
        if not torch.is_grad_enabled():
            return False
        return any(isinstance(x, torch.Tensor) and x.requires_grad for x in arrays)

    def input_gradients(self, fn: Callable[..., Any], *inputs: Any) -> tuple[Any, ...]:
        """``torch.autograd.grad(sum fn(*inputs), inputs, create_graph=True)``; an input
        that records no graph is watched through a detached copy (the caller's tensor
        keeps its ``requires_grad`` flag), and grad mode is on even under ``no_grad``."""
        with torch.enable_grad():
            watched = tuple(
                x if x.requires_grad else x.detach().requires_grad_(True) for x in inputs
            )
            total = fn(*watched).sum()
            found = (
                torch.autograd.grad(total, watched, create_graph=True, allow_unused=True)
                if total.requires_grad
                else (None,) * len(watched)
            )
        return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(watched, found))

    def rng(self, seed: int) -> Any:
        return torch.Generator(device=self.device).manual_seed(seed)

    def creation_state(self) -> bool:
        return torch.is_inference_mode_enabled()

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def compiled_kernel(self) -> str | None:
        """``"numba"`` on the CPU, ``"cuda"`` on CUDA, ``None`` on any other device
        (``meta``, ``mps``, ``xpu``, ...), whose tensors only the reference takes."""
        return _COMPILED_BY_DEVICE_TYPE.get(self.device.type)

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        if self.is_cuda:
            from ._cuda_glue import cuda_adjoint, cuda_kernels

            inner = cuda_kernels(self._empty_like, self._cuda_stream)
            adjoint = cuda_adjoint(self._empty_like, self._cuda_stream)
        else:
            from ._host_kernels import numba_adjoint, numba_kernels

            inner = numba_kernels(_numpy_view, torch.from_numpy)
            adjoint = numba_adjoint(_numpy_view, torch.from_numpy)
        return _autograd_kernels(inner, adjoint) if needs_grad else inner

    def _empty_like(self, x: Any) -> Any:
        return torch.empty(x.shape, dtype=x.dtype, device=self.device)

    def _cuda_stream(self) -> Any:
        from numba import cuda

        return cuda.external_stream(torch.cuda.current_stream(self.device).cuda_stream)
