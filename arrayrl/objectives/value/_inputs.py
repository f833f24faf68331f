"""Checking and laying out the inputs of the estimators.

Every estimator reads arrays of one shape ``[*B, T, *F]`` with time at ``time_dim``.
:func:`prepare` checks them (one backend, floating values, boolean masks, equal shapes,
hyper-parameters in range), moves time to axis 1 of a ``[N, T, F]`` view, and returns a
:class:`ScanInputs` whose :meth:`~ScanInputs.restore` puts results back in the caller's
layout. Nothing here writes into the caller's arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arrayrl.backends import Backend, ScanKernels, backend_of


@dataclass
class ScanInputs:
    """Estimator inputs in the ``[N, T, F]`` layout, with what is needed to undo it."""

    backend: Backend
    kernels: ScanKernels
    dtype: Any
    arrays: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    caller_shape: tuple[int, ...] = ()
    moved_shape: tuple[int, ...] = ()
    time_axis: int = 0
    move_time_back: bool = False
    added_feature_axis: bool = False

    @property
    def xp(self) -> Any:
        return self.backend.xp

    def restore(self, y: Any) -> Any:
        """``y`` (``[N, T, F]``) back in the caller's shape and time axis."""
        xp = self.xp
        y = xp.reshape(y, self.moved_shape)
        if self.move_time_back:
            y = xp.moveaxis(y, -2, self.time_axis)
        if self.added_feature_axis:
            y = xp.reshape(y, self.caller_shape)
        return y

    def zeros_carry(self) -> Any:
        """A ``[N, F]`` array of zeros: the value past the last step of a scan."""
        n, _, f = self.arrays[next(iter(self.arrays))].shape
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


def _time_axis(time_dim: int, ndim: int) -> int:
    if not isinstance(time_dim, int) or isinstance(time_dim, bool):
        raise TypeError(f"time_dim must be an int, got {type(time_dim).__name__}")
    if ndim == 0 or not -ndim <= time_dim < ndim:
        raise ValueError(
            f"time_dim={time_dim} is out of range for inputs with {ndim} dimension(s)"
        )
    return time_dim % ndim


def check_scalar_range(name: str, value: Any, low: float, high: float, *, low_open: bool) -> None:
    """Raise ``ValueError`` when the Python scalar ``value`` is outside its range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    below = value <= low if low_open else value < low
    if math.isnan(value) or below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


def _layout(x: Any, xp: Any, time_axis: int, ndim: int) -> tuple[Any, tuple[int, ...]]:
    """``x`` with time moved to axis -2 (a feature axis added to 1-D input), and that shape."""
    if ndim == 1:
        x = xp.reshape(x, (x.shape[0], 1))
    elif time_axis != ndim - 2:
        x = xp.moveaxis(x, time_axis, -2)
    return x, tuple(x.shape)


def _to_ntf(x: Any, xp: Any, moved_shape: tuple[int, ...]) -> Any:
    if len(moved_shape) == 3:
        return x
    n = math.prod(moved_shape[:-2])
    return xp.reshape(x, (n, moved_shape[-2], moved_shape[-1]))


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
    dropped), ``params`` are Python floats or arrays (0-d, or the inputs' shape).
    ``time_dim=None`` means the function has no time axis (TD(0)): the arrays keep
    their shape as ``[N, 1, F]``.
    """
    present_masks = {k: v for k, v in masks.items() if v is not None}
    array_params = {k: v for k, v in params.items() if not _is_python_scalar(v)}
    backend = backend_of(**values, **present_masks, **array_params)
    xp = backend.xp
    for name, x in values.items():
        _check_float(name, x, xp)
    present_masks = {k: _as_mask(k, v, xp) for k, v in present_masks.items()}
    shape = _check_shapes({**values, **present_masks})
    dtype = xp.result_type(*values.values())
    ndim = len(shape)
    if time_dim is None:
        time_axis, ndim_for_layout = 0, max(ndim, 1)
        moved_shape = (math.prod(shape), 1, 1)
    else:
        time_axis = _time_axis(time_dim, ndim)
        if ndim == 1 and time_axis != 0:
            raise ValueError(f"time_dim={time_dim} is out of range for 1-D inputs")
        ndim_for_layout = ndim
        moved_shape = None
    arrays = {}
    for name, x in {**values, **present_masks}.items():
        if name in values and x.dtype != dtype:
            x = xp.astype(x, dtype)
        if time_dim is None:
            arrays[name] = xp.reshape(x, moved_shape)
            continue
        x, moved_shape_x = _layout(x, xp, time_axis, ndim_for_layout)
        arrays[name] = _to_ntf(x, xp, moved_shape_x)
        moved_shape = moved_shape_x
    ntf = arrays[next(iter(values))].shape
    converted = {
        name: _param_array(name, p, backend, dtype, shape, ntf, time_axis, ndim, time_dim)
        for name, p in params.items()
    }
    needs_grad = backend.requires_grad(*values.values(), *array_params.values())
    return ScanInputs(
        backend=backend,
        kernels=backend.kernels(kernel, needs_grad=needs_grad),
        dtype=dtype,
        arrays=arrays,
        params=converted,
        caller_shape=shape,
        moved_shape=moved_shape if time_dim is not None else shape,
        time_axis=time_axis,
        move_time_back=time_dim is not None and ndim >= 2 and time_axis != ndim - 2,
        added_feature_axis=time_dim is not None and ndim == 1,
    )


def _is_python_scalar(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@functools.lru_cache(maxsize=256)
def _broadcast_scalar(backend: Backend, value: float, dtype: Any, shape: tuple[int, ...]) -> Any:
    """A read-only ``shape`` view of one scalar; cached, since estimators are called with
    the same γ and λ on the same shapes over and over."""
    return backend.xp.broadcast_to(backend.asarray(value, dtype=dtype), shape)


def _param_array(
    name: str,
    p: Any,
    backend: Backend,
    dtype: Any,
    shape: tuple[int, ...],
    ntf: tuple[int, ...],
    time_axis: int,
    ndim: int,
    time_dim: int | None,
) -> Any:
    """A hyper-parameter as an ``[N, T, F]`` array (a broadcast view for scalars)."""
    xp = backend.xp
    if isinstance(p, bool) or not (_is_python_scalar(p) or hasattr(p, "shape")):
        raise TypeError(f"{name} must be a float or a floating array, got {type(p).__name__}")
    if _is_python_scalar(p):
        return _broadcast_scalar(backend, float(p), dtype, ntf)
    _check_float(name, p, xp)
    if p.dtype != dtype:
        p = xp.astype(p, dtype)
    if tuple(p.shape) in ((), (1,)):
        return xp.broadcast_to(xp.reshape(p, ()), ntf)
    if tuple(p.shape) != shape:
        raise ValueError(
            f"{name} must be a float, a 0-d array, or an array of the inputs' shape {shape}; "
            f"got shape {tuple(p.shape)}"
        )
    if time_dim is None:
        return xp.reshape(p, ntf)
    p, moved = _layout(p, xp, time_axis, ndim)
    return _to_ntf(p, xp, moved)
