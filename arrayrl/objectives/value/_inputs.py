"""Checking and laying out the inputs of the estimators.

Every estimator reads arrays of one shape ``[*B, T, *F]`` with time at ``time_dim``.
:func:`prepare` checks them (one backend, floating values, boolean masks, equal shapes,
hyper-parameters in range) and lays them out as ``[N, T, F]`` views; the returned
:class:`ScanInputs` puts results back in the caller's layout with
:meth:`~ScanInputs.restore`. Nothing here writes into the caller's arrays.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from arrayrl._validation import hyperparameter, is_scalar
from arrayrl.backends import Backend, ScanKernels, backend_of


@dataclass(frozen=True)
class Layout:
    """Where time sits in the caller's arrays, and how to get to ``[N, T, F]`` and back.

    ``time_axis=None`` is for functions without a time axis (TD(0)): every element is
    its own row, ``[N, 1, 1]``.
    """

    caller_shape: tuple[int, ...]
    time_axis: int | None

    @classmethod
    def for_shape(cls, shape: tuple[int, ...], time_dim: int | None) -> Layout:
        """The layout of inputs of ``shape``; ``ValueError`` for a bad ``time_dim``."""
        if time_dim is None:
            return cls(shape, None)
        if not isinstance(time_dim, int) or isinstance(time_dim, bool):
            raise TypeError(f"time_dim must be an int, got {type(time_dim).__name__}")
        ndim = len(shape)
        if ndim == 0 or not -ndim <= time_dim < ndim:
            raise ValueError(
                f"time_dim={time_dim} is out of range for inputs with {ndim} dimension(s)"
            )
        return cls(shape, time_dim % ndim)

    @functools.cached_property
    def moved_shape(self) -> tuple[int, ...]:
        """The caller's shape with time at axis -2 (and a feature axis for 1-D input)."""
        shape, axis = self.caller_shape, self.time_axis
        if axis is None:
            return (math.prod(shape), 1, 1)
        if len(shape) == 1:
            return (shape[0], 1)
        rest = shape[:axis] + shape[axis + 1 :]
        return (*rest[:-1], shape[axis], rest[-1])

    @functools.cached_property
    def ntf(self) -> tuple[int, int, int]:
        """The ``[N, T, F]`` shape the kernels see."""
        moved = self.moved_shape
        return (math.prod(moved[:-2]), moved[-2], moved[-1])

    @functools.cached_property
    def _moves_time(self) -> bool:
        axis, ndim = self.time_axis, len(self.caller_shape)
        return axis is not None and ndim >= 2 and axis != ndim - 2

    def to_ntf(self, x: Any, xp: Any) -> Any:
        """``x`` of the caller's shape as an ``[N, T, F]`` array (a view where possible)."""
        if self._moves_time:
            x = xp.moveaxis(x, self.time_axis, -2)
        return x if tuple(x.shape) == self.ntf else xp.reshape(x, self.ntf)

    def restore(self, y: Any, xp: Any) -> Any:
        """``y`` (``[N, T, F]``) back in the caller's shape and time axis."""
        y = xp.reshape(y, self.moved_shape)
        if self._moves_time:
            y = xp.moveaxis(y, -2, self.time_axis)
        return y if tuple(y.shape) == self.caller_shape else xp.reshape(y, self.caller_shape)


@dataclass
class ScanInputs:
    """Estimator inputs as ``[N, T, F]`` arrays, their backend, kernels and layout."""

    backend: Backend
    kernels: ScanKernels
    dtype: Any
    arrays: dict[str, Any]
    params: dict[str, Any]
    layout: Layout
    needs_grad: bool = False

    @property
    def xp(self) -> Any:
        return self.backend.xp

    def out_views(self, out: Any, count: int) -> Any:
        """Check the caller's ``out`` buffers; return what the fused kernel should write
        into, or ``None`` when the results are to be computed and then copied.

        ``out`` is one array (``count == 1``) or a tuple of two, each of the inputs'
        shape, the result dtype, the inputs' backend and device, C-contiguous, and not
        requiring a gradient (nor may the inputs: autograd records no writes into a
        buffer). The returned ``[N, T, F]`` views (one array, or a tuple) go to the Numba
        kernels only, and only where they are views of ``out`` (not copies).
        """
        if out is None:
            return None
        names = ("out",) if count == 1 else tuple(f"out[{k}]" for k in range(count))
        if count == 1 and isinstance(out, (tuple, list)):
            raise TypeError("out must be one array for this estimator, not a sequence")
        if count > 1 and not (isinstance(out, tuple) and len(out) == count):
            raise TypeError(f"out must be a tuple of {count} arrays, got {type(out).__name__}")
        outs = (out,) if count == 1 else out
        for name, y in zip(names, outs):
            _check_out(name, y, self)
        if count > 1 and any(outs[k] is outs[j] for k in range(count) for j in range(k)):
            raise ValueError("out must hold distinct arrays, one per output")
        if self.kernels.name != "numba":
            return None
        views = tuple(self.layout.to_ntf(y, self.xp) for y in outs)
        if not all(_aliases(v, y) for v, y in zip(views, outs)):
            return None
        return views[0] if count == 1 else views

    def deliver(self, results: tuple[Any, ...], out: Any) -> Any:
        """The ``[N, T, F]`` ``results`` in the caller's layout: new arrays, or written
        into ``out`` (where the kernel did not already write them there) and ``out``
        itself returned."""
        if out is None:
            restored = tuple(self.restore(y) for y in results)
            return restored[0] if len(restored) == 1 else restored
        outs = out if isinstance(out, tuple) else (out,)
        for y, target in zip(results, outs):
            if not _aliases(y, target):
                target[...] = self.restore(y)
        return out

    def restore(self, y: Any) -> Any:
        """``y`` (``[N, T, F]``) back in the caller's shape and time axis."""
        return self.layout.restore(y, self.xp)

    def zeros_carry(self) -> Any:
        """A ``[N, F]`` array of zeros: the value past the last step of a scan."""
        n, _, f = self.layout.ntf
        return self.xp.zeros((n, f), dtype=self.dtype, device=self.backend.device)


@functools.lru_cache(maxsize=64)
def _is_real_floating(xp: Any, dtype: Any) -> bool:
    return bool(xp.isdtype(dtype, "real floating"))


def _check_float(name: str, x: Any, xp: Any) -> None:
    if not _is_real_floating(xp, x.dtype):
        raise TypeError(
            f"{name} must be a real floating-point array, got dtype {x.dtype}; "
            f"convert it first (for example {name}.astype(float32))"
        )


def _as_mask(name: str, x: Any, xp: Any) -> Any:
    """``x`` as a boolean array: bool passes, integers must hold only 0 and 1."""
    if x.dtype == xp.bool:
        return x
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{name} must be a boolean array (or integers 0/1), got dtype {x.dtype}")
    if not bool(xp.all((x == 0) | (x == 1))):
        raise ValueError(f"{name} must hold only 0 and 1 (or be boolean); it has other values")
    return x != 0


def _check_shapes(named: Mapping[str, Any]) -> tuple[int, ...]:
    items = list(named.items())
    first_name, first = items[0]
    for name, x in items[1:]:
        if tuple(x.shape) != tuple(first.shape):
            raise ValueError(
                f"shape mismatch: {first_name} has shape {tuple(first.shape)} but {name} has "
                f"shape {tuple(x.shape)}; all inputs must share one shape [*B, T, *F] "
                "(no broadcasting)"
            )
    return tuple(first.shape)


def scalar_or_array(
    name: str, value: Any, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False
) -> Any:
    """A hyper-parameter: a scalar as a checked Python float, a per-step array as is.

    Scalars (Python numbers, NumPy scalars, 0-d arrays) go through
    :func:`arrayrl._validation.hyperparameter` (range, NaN, booleans), so a NumPy
    scalar meets torch inputs as a float. A 0-d array that needs a gradient, or one
    being traced (JAX), stays an array, as do per-step arrays: their dtype and shape are
    checked by :func:`prepare`, their values are not (that would read them on the host).
    """
    if type(value) is float or (is_scalar(value) and not _stays_array(value)):
        return hyperparameter(name, value, low=low, high=high, low_open=low_open)
    if not hasattr(value, "shape"):
        raise TypeError(f"{name} must be a float or a floating array, got {type(value).__name__}")
    return value


def _stays_array(value: Any) -> bool:
    """Whether the 0-d ``value`` must stay an array: it needs a gradient, or it is a
    tracer without a device (JAX under ``jit``)."""
    if isinstance(value, (numbers.Number, np.generic)):
        return False
    backend = backend_of(value)
    return backend.device is None or backend.requires_grad(value)


#: Backends whose arrays cannot be written in place (immutable or lazy).
_NOT_WRITABLE = ("jax", "dask")


def _check_out(name: str, y: Any, s: ScanInputs) -> None:
    """Errors naming ``name`` for an ``out`` buffer the estimator cannot write into."""
    backend = s.backend
    if not hasattr(y, "shape") or not backend.is_array(y):
        raise TypeError(
            f"{name} must be a {backend.name} array like the inputs, got {type(y).__name__}"
        )
    if backend_of(y) != backend:
        raise ValueError(f"{name} must be on the inputs' device {backend.device!r}")
    if backend.name in _NOT_WRITABLE:
        raise TypeError(f"{name}: {backend.name} arrays cannot be written in place; drop out=")
    if tuple(y.shape) != s.layout.caller_shape:
        raise ValueError(
            f"{name} must have the inputs' shape {s.layout.caller_shape}, got {tuple(y.shape)}"
        )
    if y.dtype != s.dtype:
        raise TypeError(f"{name} must have the result dtype {s.dtype}, got {y.dtype}")
    if s.needs_grad or backend.requires_grad(y):
        raise ValueError(
            f"{name} cannot be used when an input (or {name}) requires grad: autograd "
            "records no writes into a caller's buffer; drop out= (or detach the inputs)"
        )
    if not _is_c_contiguous(y):
        raise ValueError(f"{name} must be C-contiguous")


def _is_c_contiguous(y: Any) -> bool:
    flags = getattr(y, "flags", None)
    if flags is not None and hasattr(flags, "c_contiguous"):
        return bool(flags.c_contiguous)
    if hasattr(y, "is_contiguous"):
        return bool(y.is_contiguous())
    return True


def _aliases(view: Any, target: Any) -> bool:
    """Whether ``view`` lies in ``target``'s memory (NumPy arrays and torch tensors;
    ``False`` for other libraries, whose results are then copied)."""
    if isinstance(view, np.ndarray) and isinstance(target, np.ndarray):
        return bool(np.may_share_memory(view, target))
    if hasattr(view, "data_ptr") and hasattr(target, "data_ptr"):  # torch
        start = target.data_ptr()
        return start <= view.data_ptr() < start + target.numel() * target.element_size()
    return False


def _is_python_scalar(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def prepare(
    *,
    values: Mapping[str, Any],
    masks: Mapping[str, Any],
    params: Mapping[str, Any],
    time_dim: int | None,
    kernel: str,
) -> ScanInputs:
    """Check the inputs of an estimator and lay them out as ``[N, T, F]``.

    ``values`` are floating arrays, ``masks`` boolean ones (``None`` entries are
    dropped), ``params`` are scalars (see :func:`scalar_or_array`; NaN is refused) or
    arrays (0-d, or the inputs' shape).
    ``time_dim=None`` is for functions without a time axis (TD(0)).
    """
    masks = {k: v for k, v in masks.items() if v is not None}
    params = {k: scalar_or_array(k, v) for k, v in params.items()}
    array_params = {k: v for k, v in params.items() if not _is_python_scalar(v)}
    backend = backend_of(**values, **masks, **array_params)
    xp = backend.xp
    for name, x in values.items():
        _check_float(name, x, xp)
    masks = {k: _as_mask(k, v, xp) for k, v in masks.items()}
    layout = Layout.for_shape(_check_shapes({**values, **masks}), time_dim)
    dtype = xp.result_type(*values.values())
    arrays = {k: layout.to_ntf(_with_dtype(x, dtype, xp), xp) for k, x in values.items()}
    arrays.update({k: layout.to_ntf(x, xp) for k, x in masks.items()})
    needs_grad = backend.requires_grad(*values.values(), *array_params.values())
    return ScanInputs(
        backend=backend,
        kernels=backend.kernels(kernel, needs_grad=needs_grad, dtype=dtype),
        dtype=dtype,
        arrays=arrays,
        params={k: _param_array(k, p, backend, dtype, layout) for k, p in params.items()},
        layout=layout,
        needs_grad=needs_grad,
    )


def _with_dtype(x: Any, dtype: Any, xp: Any) -> Any:
    return x if x.dtype == dtype else xp.astype(x, dtype)


@functools.lru_cache(maxsize=256)
def _broadcast_scalar(
    backend: Backend, value: float, dtype: Any, shape: tuple[int, ...], state: Any
) -> Any:
    """A read-only ``shape`` view of one scalar; cached, since estimators are called with
    the same γ and λ on the same shapes over and over. ``state`` is
    :meth:`Backend.creation_state`, so that an array made in one state of the library
    (torch's inference mode) is never handed out in another."""
    return backend.xp.broadcast_to(backend.asarray(value, dtype=dtype), shape)


def _param_array(name: str, p: Any, backend: Backend, dtype: Any, layout: Layout) -> Any:
    """A hyper-parameter as an ``[N, T, F]`` array (a broadcast view for scalars)."""
    xp = backend.xp
    if _is_python_scalar(p):
        # Issue 13 (Dask): a backend may build the scalar itself; Dask keeps it [1, 1, 1]
        # for its element-wise maths to broadcast, not one full-size chunk.
        own = getattr(backend, "scalar_param", None)
        if own is not None:
            return own(float(p), dtype, layout.ntf)
        return _broadcast_scalar(backend, float(p), dtype, layout.ntf, backend.creation_state())
    if not hasattr(p, "shape"):
        raise TypeError(f"{name} must be a float or a floating array, got {type(p).__name__}")
    _check_float(name, p, xp)
    p = _with_dtype(p, dtype, xp)
    if tuple(p.shape) in ((), (1,)):
        return xp.broadcast_to(xp.reshape(p, ()), layout.ntf)
    if tuple(p.shape) != layout.caller_shape:
        raise ValueError(
            f"{name} must be a float, a 0-d array, or an array of the inputs' shape "
            f"{layout.caller_shape}; got shape {tuple(p.shape)}"
        )
    return layout.to_ntf(p, xp)
