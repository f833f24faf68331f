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

    @property
    def xp(self) -> Any:
        return self.backend.xp

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
