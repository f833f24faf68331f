"""Argument validation: one helper per kind of argument.

Every loss, estimator and function checks its arguments with these helpers, so that a
bad argument fails early, the same way everywhere, with a message naming the argument
and what was expected:

- :func:`hyperparameter`: a real scalar in a range (γ, λ, thresholds), as a Python float;
- :func:`coefficient`: a finite, non-negative scalar or ``None`` (loss coefficients);
- :func:`count`: a whole number with a lower bound (sample counts, intervals);
- :func:`flag`: a boolean switch;
- :func:`required_array`: an array argument that must be given;
- :func:`network_name`: the name of one of a loss's networks;
- :func:`reject_unknown_kwargs`: ``TypeError`` for a keyword argument nobody reads.

Scalars may be Python numbers, NumPy scalars or 0-d arrays of any backend (read on the
host through :func:`arrayrl.backends.backend_of`, so no framework is imported here).
NaN in *data* is propagated by the computations; NaN as a *hyper-parameter* is refused.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from arrayrl.backends import backend_of

__all__ = [
    "coefficient",
    "count",
    "flag",
    "hyperparameter",
    "is_scalar",
    "network_name",
    "reject_unknown_kwargs",
    "required_array",
]


def _is_bool(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy boolean, or a 0-d boolean array."""
    if isinstance(value, (bool, np.bool_)):
        return True
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and str(dtype).endswith("bool")


def is_scalar(value: Any) -> bool:
    """Whether ``value`` is one number: a Python or NumPy scalar, or a 0-d array."""
    if isinstance(value, (numbers.Number, np.generic)):
        return True
    return getattr(value, "shape", None) == () and hasattr(value, "dtype")


def _zero_dim_number(name: str, value: Any, kinds: tuple[str, ...], expected: str) -> Any:
    """The Python number held by the 0-d array (or NumPy scalar) ``value``; ``TypeError``
    saying ``expected`` unless its dtype is of ``kinds``."""
    backend = backend_of(**{name: value})
    if not backend.xp.isdtype(value.dtype, kinds):
        raise TypeError(f"{name} must be {expected}, got a scalar of dtype {value.dtype}")
    return backend.to_numpy(value).item()


def _real(name: str, value: Any) -> float:
    """``value`` as a Python float; ``TypeError`` unless it is a real scalar.

    Booleans are refused by the callers before this (with ``ValueError``).
    """
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "shape", None) == () and hasattr(value, "dtype"):
        return float(_zero_dim_number(name, value, ("real floating", "integral"), "a real number"))
    raise TypeError(f"{name} must be a real number, got {type(value).__name__}: {value!r}")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """The interval ``[low, high]`` written with its open and closed ends."""
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def hyperparameter(
    name: str,
    value: Any,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a Python float in ``[low, high]`` (ends open as asked).

    Accepts Python numbers, NumPy scalars (``np.float32(0.9)``) and 0-d arrays of any
    backend.

    Raises
    ------
    TypeError
        ``value`` is not a real number (a string, a list, an array with dimensions,
        a complex number).
    ValueError
        ``value`` is a boolean, NaN, or outside the interval; the message names the
        argument, the interval and the value.
    """
    if type(value) is float or type(value) is int:  # the usual case, on every call
        x = float(value)
    elif _is_bool(value):
        interval = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name} must be a number in {interval}, got the boolean {value!r}")
    else:
        x = _real(name, value)
    below = x <= low if low_open else x < low
    above = x >= high if high_open else x > high
    if math.isnan(x) or below or above:
        raise ValueError(f"{name} must be in {_interval(low, high, low_open, high_open)}, got {x}")
    return x


def coefficient(name: str, value: Any, *, allow_none: bool = True) -> float | None:
    """``value`` as a finite, non-negative Python float (``None`` passes if allowed).

    Raises
    ------
    TypeError
        ``value`` is not a real number (or is ``None`` and ``allow_none`` is false).
    ValueError
        ``value`` is a boolean, NaN, infinite or negative.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number >= 0, got None")
    if _is_bool(value):
        raise ValueError(f"{name} must be a number >= 0, got the boolean {value!r}")
    x = _real(name, value)
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{name} must be >= 0 and finite, got {x}")
    return x


def count(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as a Python int ``>= minimum``.

    Accepts Python and NumPy integers and 0-d integer arrays; floats (even ``2.0``),
    booleans and strings raise ``TypeError``, a value below ``minimum`` ``ValueError``.
    """
    if _is_bool(value):
        raise TypeError(f"{name} must be an int, got the boolean {value!r}")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif getattr(value, "shape", None) == () and hasattr(value, "dtype"):
        n = int(_zero_dim_number(name, value, ("integral",), "an int"))
    else:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def flag(name: str, value: Any) -> bool:
    """``value`` as a Python bool; ``ValueError`` for anything but ``True``/``False``
    (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a boolean, got {value!r}")
    return bool(value)


def required_array(name: str, value: Any, *, owner: str) -> Any:
    """``value`` itself when it is an array; ``TypeError`` naming ``name`` and ``owner``
    when it is ``None``, a Python or NumPy scalar, or anything without shape and dtype."""
    if type(value) is np.ndarray:  # the usual case, on every call
        return value
    if value is None:
        raise TypeError(f"{owner} needs {name} (an array), got None")
    is_array = hasattr(value, "shape") and hasattr(value, "dtype")
    if not is_array or isinstance(value, np.generic):
        raise TypeError(f"{owner}: {name} must be an array, got {type(value).__name__}")
    return value


def floating_array(name: str, value: Any, *, owner: str | None = None) -> Any:
    """The :class:`~arrayrl.backends.Backend` of array ``value``; ``TypeError`` naming
    ``name`` (and ``owner``, when given) unless it is an array of a real floating dtype."""
    who = f"{owner}: {name}" if owner else name
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"{who} must be an array, got {type(value).__name__}")
    backend = backend_of(**{name: value})
    if not backend.xp.isdtype(value.dtype, "real floating"):
        raise TypeError(f"{who} must be a floating array, got dtype {value.dtype}")
    return backend


def network_name(name: Any, known: Iterable[str], *, owner: str) -> str:
    """``name`` when it is one of ``known``; ``KeyError`` listing the known names."""
    known = list(known)
    if name not in known:
        raise KeyError(f"{owner} has no network {name!r}; its networks are {known}")
    return name


def reject_unknown_kwargs(owner: str, kwargs: Mapping[str, Any]) -> None:
    """``TypeError`` naming ``owner`` and the first keyword argument of ``kwargs``, as
    Python words it (``ClipPPOLoss got an unexpected keyword argument 'clip_eps'``)."""
    if kwargs:
        names = ", ".join(repr(k) for k in kwargs)
        plural = "s" if len(kwargs) > 1 else ""
        article = "" if plural else "an "
        raise TypeError(f"{owner} got {article}unexpected keyword argument{plural} {names}")
