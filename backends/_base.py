"""The :class:`Backend` interface and the :class:`ScanKernels` bundle it hands out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Names accepted by the ``kernel=`` keyword of the estimators.
KERNEL_NAMES = ("auto", "reference", "numba", "cuda", "jax")


#: Above this argument, ``softplus(x)`` is ``x`` (torch's ``threshold`` default).
_SOFTPLUS_THRESHOLD = 20.0


@dataclass(frozen=True)
class ScanKernels:
    """The scans one backend runs, for one choice of ``kernel=``.

    ``linear_scan(a, b, init)`` computes the reverse linear recurrence
    ``y[:, t] = a[:, t] + b[:, t] * y[:, t + 1]`` with ``y[:, T] = init`` on arrays laid
    out as ``[N, T, F]`` (``init`` is ``[N, F]``). ``fused`` maps an estimator name
    (``"gae"``, ``"td_lambda"``, ``"vtrace"``, ``"reward2go"``) to a kernel that reads
    the raw inputs and writes the outputs in one pass; an estimator missing from it is
    computed from ``linear_scan`` and Array API element-wise maths.
    """

    name: str
    linear_scan: Callable[..., Any]
    fused: Mapping[str, Callable[..., Any]] = field(default_factory=dict)


class Backend:
    """One array library on one device.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"torch"``, ``"cupy"``, ``"array_api_strict"`` or ``"generic"``.
    xp : module
        The array-api-compat namespace of the library.
    device : object
        The device the arrays live on (the library's own device object).
    differentiable : bool
        Whether the library records gradients (torch).
    """

    name: str = "abstract"
    differentiable: bool = False

    def __init__(self, xp: Any, device: Any) -> None:
        self.xp = xp
        self.device = device
        #: The compiled scans by ``(kernel, needs_grad)``, and :meth:`kernels`'s answers
        #: by ``(kernel, needs_grad, dtype)`` (asked on every estimator call, with the
        #: same few questions).
        self._kernels: dict[tuple[Any, ...], ScanKernels] = {}

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, device={self.device!r})"

    def __eq__(self, other: object) -> bool:
        if self is other:  # backends are cached: the common case
            return True
        return (
            isinstance(other, Backend)
            and self.name == other.name
            and str(self.device) == str(other.device)
        )

    def __hash__(self) -> int:
        return hash((self.name, str(self.device)))

    # -- arrays ---------------------------------------------------------------
    def is_array(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend."""
        raise NotImplementedError

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as an array of this backend on its device."""
        return self.xp.asarray(x, dtype=dtype, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of ``x``, detached from any graph."""
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray) -> Any:
        """``x`` as an array of this backend on its device."""
        return self.asarray(x)

    def from_dlpack(self, x: Any) -> Any:
        """Zero-copy import through DLPack, or a copy through NumPy where DLPack fails."""
        try:
            return self.xp.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError, AttributeError, ValueError):
            return self.from_numpy(_host_copy(x))

    # -- maths that a library does faster in one call -----------------------
    def linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        """``x @ weight.T + bias`` (``weight`` is ``(out, in)``, as in ``torch.nn.Linear``)."""
        y = x @ self.xp.matrix_transpose(weight)
        return y if bias is None else y + bias

    def batched_linear(self, x: Any, weight: Any, bias: Any = None) -> Any:
        """``x[e] @ weight[e].T + bias[e]`` for every member ``e``: ``x`` is ``(E|1, N,
        in)``, ``weight`` ``(E, out, in)``, ``bias`` ``(E, out)`` or None."""
        y = x @ self.xp.matrix_transpose(weight)
        if bias is None:
            return y
        return y + self.xp.reshape(bias, (bias.shape[0], 1, bias.shape[1]))

    def relu(self, x: Any) -> Any:
        """``max(x, 0)`` element-wise."""
        return self.xp.clip(x, min=0.0)

    def softplus(self, x: Any) -> Any:
        """``log(1 + exp(x))`` element-wise, and ``x`` itself above 20 (torch's
        ``softplus`` threshold); the exponential only sees the clamped argument, so no
        overflow and finite gradients."""
        xp = self.xp
        big = x > _SOFTPLUS_THRESHOLD
        return xp.where(big, x, xp.log1p(xp.exp(xp.where(big, 0.0, x))))

    def smooth_l1(self, v1: Any, v2: Any) -> Any:
        """Huber distance with δ = 1, element-wise: ``0.5 d²`` where ``|d| < 1``, else
        ``|d| − 0.5``, with ``d = v1 − v2``."""
        diff = v1 - v2
        size = self.xp.abs(diff)
        return self.xp.where(size < 1.0, 0.5 * diff * diff, size - 0.5)

    def logsumexp(self, x: Any, axis: int) -> Any:
        """``log Σ exp(x)`` over ``axis``, shifted by the max (by 0 where it is ±inf)."""
        xp = self.xp
        top = xp.max(x, axis=axis, keepdims=True)
        top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
        total = xp.log(xp.sum(xp.exp(x - top), axis=axis, keepdims=True))
        return xp.squeeze(top + total, axis=axis)

    def scatter_add(self, size: int, index: Any, values: Any) -> Any:
        """``out[..., k] = Σ_{j: index[..., j] = k} values[..., j]``: ``values`` (``[..., m]``)
        added into ``size`` zeros along the last axis at the integer ``index`` (same
        shape, entries in ``[0, size)``, not checked). Differentiable in ``values``.

        This generic form compares every index with every slot (``m·size`` work): the
        array API has no scatter. NumPy, CuPy and torch override it with their scatter.
        """
        xp = self.xp
        slots = xp.arange(size, device=self.device)
        hit = index[..., None] == slots  # [..., m, size]
        return xp.sum(xp.where(hit, values[..., None], xp.zeros_like(values[..., None])), axis=-2)

    def zero_with_gradient(self, x: Any) -> Any:
        """Zeros shaped like ``x`` whose gradient with respect to ``x`` is the identity
        (``x - stop_gradient(x)``), and a plain zero where ``x`` is not finite."""
        xp = self.xp
        return xp.where(xp.isfinite(x), x - self.stop_gradient(x), 0.0)

    def safe_tanh(self, x: Any, limit: float) -> Any:
        """``y = clip(tanh x, -limit, limit)`` with the gradient ``1 - y²`` (not the clip's
        zero) where ``x`` is finite and zero where it is not (TorchRL's
        ``safetanh_noeps``)."""
        xp = self.xp
        y = self.stop_gradient(xp.clip(xp.tanh(x), min=-limit, max=limit))
        return y + self.zero_with_gradient(x) * (1.0 - y * y)

    def safe_atanh(self, y: Any, limit: float) -> Any:
        """``atanh(clip(y, -limit, limit))`` with the clip passed straight through: the
        gradient is ``1 / (1 - clip(y)²)`` where ``y`` is finite, zero where it is not
        (TorchRL's ``safeatanh_noeps``)."""
        xp = self.xp
        clipped = self.stop_gradient(xp.clip(y, min=-limit, max=limit))
        return xp.atanh(clipped + self.zero_with_gradient(y))

    def write_into(self, dst: Any, src: Any) -> Any:
        """Overwrite ``dst`` with ``src`` (a NumPy array or one of this backend, same
        shape) and return the array that now holds the values: ``dst`` itself where the
        library writes in place, a new array of ``dst``'s dtype where arrays are
        immutable."""
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"shape mismatch: {tuple(src.shape)} into {tuple(dst.shape)}")
        if isinstance(src, np.ndarray):
            src = self.from_numpy(src)
        return self.xp.astype(src, dst.dtype)

    # -- autograd -------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        """``x`` with no gradient flowing through it (identity without autograd)."""
        return x

    def no_grad(self) -> contextlib.AbstractContextManager[None]:
        """A context in which no graph is recorded (a no-op without autograd)."""
        return contextlib.nullcontext()

    def requires_grad(self, *arrays: Any) -> bool:
        """Whether any of ``arrays`` would carry a gradient out of a computation."""
        return False

    def input_gradients(self, fn: Callable[..., Any], *inputs: Any) -> tuple[Any, ...]:
        r"""The gradients of :math:`\sum f(x_1, \dots, x_n)` with respect to each input
        :math:`x_i`, themselves differentiable (a double backward: a gradient penalty
        such as GAIL's or WGAN-GP's trains the parameters ``fn`` closes over through them).

        ``fn`` takes the ``inputs`` positionally and returns one array of this backend;
        the result is a tuple of arrays shaped as the ``inputs`` (zeros where ``fn`` does
        not depend on an input). Only libraries with autograd have it (torch, JAX); the
        others raise ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"gradients with respect to inputs (a double backward, e.g. a gradient "
            f"penalty) need a library with autograd; the {self.name!r} backend has none: "
            "use torch tensors or JAX arrays"
        )

    # -- randomness -----------------------------------------------------------
    def rng(self, seed: int) -> Any:
        """A seeded generator of this library (a NumPy one where it has none)."""
        return np.random.default_rng(seed)

    # -- caches of created arrays --------------------------------------------
    def creation_state(self) -> Hashable:
        """The library state, besides value, dtype and shape, that an array this backend
        creates depends on; any cache of created arrays must include it in its key
        (torch: whether inference mode is on, since an inference tensor cannot later be
        saved for backward)."""
        return None

    # -- kernels --------------------------------------------------------------
    def compiled_kernel(self) -> str | None:
        """The compiled ``kernel=`` that runs on this backend's device (``"numba"`` on
        the CPU, ``"cuda"`` on CUDA), or ``None`` where only the reference runs."""
        return None

    def compiled_dtypes(self) -> tuple[Any, ...]:
        """The float dtypes the compiled kernel takes (float32 and float64)."""
        return (self.xp.float32, self.xp.float64)

    def kernel_names(self) -> tuple[str, ...]:
        """The ``kernel=`` values this backend accepts besides ``"auto"``."""
        compiled = self.compiled_kernel()
        return ("reference",) if compiled is None else ("reference", compiled)

    def kernels(
        self, kernel: str = "auto", *, needs_grad: bool = False, dtype: Any = None
    ) -> ScanKernels:
        """The scans for ``kernel`` on arrays of float ``dtype`` (``None``: not checked).

        ``"auto"`` picks the compiled kernel where it takes the device and the dtype,
        else the reference. An explicit compiled kernel that does not fit raises
        ``ValueError`` (device) or ``TypeError`` (dtype), naming it.
        """
        key = (kernel, needs_grad, dtype)
        chosen = self._kernels.get(key)
        if chosen is None:
            chosen = self._kernels[key] = self._choose_kernels(kernel, needs_grad, dtype)
        return chosen

    def _choose_kernels(self, kernel: str, needs_grad: bool, dtype: Any) -> ScanKernels:
        """:meth:`kernels` without the memo."""
        check_kernel_name(kernel)
        compiled = self.compiled_kernel()
        if kernel == "auto":
            fits = compiled is not None and self._takes_dtype(dtype)
            kernel = compiled if fits else "reference"
        if kernel == "reference":
            return reference_kernels(self.xp)
        if kernel != compiled:
            raise ValueError(self._unsupported(kernel))
        if not self._takes_dtype(dtype):
            raise TypeError(
                f"kernel={kernel!r} takes float32 or float64 arrays, got {dtype}; "
                f"use kernel='reference' (or 'auto', which picks it) for {dtype}"
            )
        key = (kernel, needs_grad)
        if key not in self._kernels:
            self._kernels[key] = self._build_kernels(needs_grad)
        return self._kernels[key]

    def _takes_dtype(self, dtype: Any) -> bool:
        return dtype is None or any(dtype == d for d in self.compiled_dtypes())

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        """The compiled scans (:meth:`compiled_kernel`); made once per ``needs_grad``."""
        raise NotImplementedError

    def _unsupported(self, kernel: str) -> str:
        return (
            f"kernel={kernel!r} is not available for {self.name} arrays on {self.device}; "
            f"expected one of {('auto', *self.kernel_names())} "
            "(kernel='reference' runs on every backend and device)"
        )


def check_kernel_name(kernel: str) -> None:
    """Raise ``ValueError`` unless ``kernel`` is one of :data:`KERNEL_NAMES`."""
    if kernel not in KERNEL_NAMES:
        raise ValueError(f"kernel must be one of {KERNEL_NAMES}, got {kernel!r}")


def reference_kernels(xp: Any) -> ScanKernels:
    """The Array-API reference scans (the float64 oracle) for namespace ``xp``."""
    from ._reference import reference_linear_scan

    def linear_scan(a: Any, b: Any, init: Any) -> Any:
        return reference_linear_scan(a, b, init, xp=xp)

    return ScanKernels("reference", linear_scan)


def _host_copy(x: Any) -> np.ndarray:
    for attr in ("get", "cpu"):  # cupy.ndarray.get(), torch.Tensor.cpu()
        if hasattr(x, attr) and not isinstance(x, np.ndarray):
            x = getattr(x, attr)()
            break
    if hasattr(x, "detach"):
        x = x.detach()
    return np.asarray(x)


def bincount_scatter_add(xp: Any, size: int, index: Any, values: Any) -> Any:
    """:meth:`Backend.scatter_add` through ``xp.bincount`` over flattened rows (NumPy,
    CuPy): row ``r`` adds into bins ``r·size ... r·size + size - 1``."""
    batch = index.shape[:-1]
    rows = xp.arange(int(np.prod(batch, dtype=np.int64)), dtype=xp.int64)
    flat = (xp.reshape(index, (-1, index.shape[-1])) + rows[:, None] * size).ravel()
    total = xp.bincount(flat, weights=values.ravel(), minlength=rows.shape[0] * size)
    return xp.reshape(total.astype(values.dtype, copy=False), (*batch, size))
