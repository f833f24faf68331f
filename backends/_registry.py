"""Which backend owns an array: detection without importing any framework."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ._base import Backend

_CACHE: dict[tuple[str, str], Backend] = {}
#: Array type → device → Backend, for the libraries whose backend depends only on these
#: two (NumPy >= 2, torch, CuPy): the fast path of :func:`backend_of`, filled as arrays
#: are seen.
_BY_TYPE: dict[type, dict[Any, Backend]] = {}
_TYPED_LIBRARIES = ("torch", "cupy")


def _library_of(x: Any) -> str | None:
    """The library name of array ``x``, or ``None`` for Python scalars and ``None``."""
    if type(x) is np.ndarray:
        return "numpy"
    if x is None or isinstance(x, (bool, int, float, complex, np.generic)):
        return None
    module = type(x).__module__.split(".", 1)[0]
    if module == "torch" and "torch" in sys.modules:
        return "torch"
    if module == "cupy" and "cupy" in sys.modules:
        return "cupy"
    if module == "array_api_strict":
        return "array_api_strict"
    if module == "dask" and "dask" in sys.modules:  # dask.array.core.Array
        return "dask"
    if module in ("jax", "jaxlib"):  # arrays and tracers (jit, grad, vmap)
        return "jax"
    if isinstance(x, np.ndarray):
        return "numpy"
    if hasattr(x, "__array_namespace__"):
        return "generic"
    raise TypeError(f"expected an array, got {type(x).__module__}.{type(x).__qualname__}")


def _make_backend(library: str, x: Any) -> Backend:
    if library == "numpy":
        from ._numpy import NumpyBackend

        return NumpyBackend()
    if library == "torch":
        from ._torch import TorchBackend

        return TorchBackend(x.device)
    if library == "cupy":
        from ._cupy import CupyBackend

        return CupyBackend(x.device)
    if library == "dask":
        from ._dask import DaskBackend

        return DaskBackend()
    if library == "jax":
        from ._jax import JaxBackend

        return JaxBackend.for_array(x)
    from ._generic import GenericBackend

    return GenericBackend.for_array(x)


def _device_key(library: str, x: Any) -> str:
    if library == "numpy":
        return "cpu"
    return str(getattr(x, "device", "cpu"))


def _backend_for(library: str, x: Any) -> Backend:
    key = (library, _device_key(library, x))
    if library in ("generic", "jax"):
        key = (type(x).__module__ + "." + type(x).__qualname__, key[1])
    backend = _CACHE.get(key)
    if backend is None:
        backend = _CACHE[key] = _make_backend(library, x)
    if library in _TYPED_LIBRARIES:
        _BY_TYPE.setdefault(type(x), {})[x.device] = backend
    elif library == "numpy" and hasattr(np.ndarray, "device"):  # NumPy >= 2: always "cpu"
        _BY_TYPE[np.ndarray] = {"cpu": backend}
    return backend


def _seen_backend(*groups: Any) -> Backend | None:
    """The backend shared by the arrays in ``groups`` when each one's (type, device) was
    seen before (:data:`_BY_TYPE`) and they agree; ``None`` sends the caller to the full
    check (which also handles NumPy, scalars, ``None`` and every error)."""
    found = None
    for group in groups:
        for x in group:
            by_device = _BY_TYPE.get(type(x))
            if by_device is None:
                return None
            backend = by_device.get(x.device)
            if backend is None or (found is not None and backend is not found):
                return None
            found = backend
    return found


def backend_of(*arrays: Any, **named_arrays: Any) -> Backend:
    """The one :class:`Backend` that owns all the given arrays.

    ``None`` and Python scalars are ignored. With no array at all, the NumPy backend is
    returned. Keyword arguments name the arrays, so that the error says which ones
    disagree.

    Raises
    ------
    TypeError
        If the arrays belong to different libraries or live on different devices, or an
        argument is not an array.
    """
    seen = _seen_backend(arrays, named_arrays.values())
    if seen is not None:
        return seen
    if _all_numpy(arrays) and _all_numpy(named_arrays.values()):
        return _numpy_backend()
    items = [(f"argument {i}", x) for i, x in enumerate(arrays)]
    items += list(named_arrays.items())
    found: Backend | None = None
    first_name = ""
    owner: tuple[type, Any] | None = None  # (type, device) of arrays already matched
    for name, x in items:
        if owner is not None and type(x) is owner[0] and getattr(x, "device", None) == owner[1]:
            continue  # same library and device as an array already seen
        try:
            library = _library_of(x)
        except TypeError as err:
            raise TypeError(f"{name}: {err}") from None
        if library is None:
            continue
        backend = _backend_for(library, x)
        if found is None:
            found, first_name = backend, name
            owner = (type(x), getattr(x, "device", None))
        elif not same_arrays(backend, found):
            raise TypeError(
                f"arrays from different backends or devices: {first_name} is "
                f"{found.name} on {found.device}, {name} is {backend.name} on "
                f"{backend.device}; convert them to one backend first (ArrayDict.to)"
            )
    if found is None:
        return get_backend("numpy")
    return found


def same_arrays(a: Backend, b: Backend) -> bool:
    """Whether arrays of backends ``a`` and ``b`` may be mixed: the same backend, or the
    same library where one side has no device (a JAX tracer under ``grad``/``vmap``
    meeting concrete arrays)."""
    return a == b or (a.name == b.name and (a.device is None or b.device is None))


def _all_numpy(arrays: Any) -> bool:
    """Whether every entry is a plain ``np.ndarray`` (the common, fast case)."""
    return all(type(x) is np.ndarray for x in arrays)


def _numpy_backend() -> Backend:
    backend = _CACHE.get(("numpy", "cpu"))
    if backend is None:
        backend = _backend_for("numpy", None)
    return backend


#: The names :func:`get_backend` takes.
BACKEND_NAMES = ("numpy", "torch", "cupy", "array_api_strict", "jax")


def get_backend(name: str, device: Any = None) -> Backend:
    """The backend called ``name`` (``"numpy"``, ``"torch"``, ``"cupy"``,
    ``"array_api_strict"``, ``"jax"``) on ``device`` (its default device if ``None``)."""
    if isinstance(name, Backend):
        return name
    if name == "numpy":
        return _numpy_backend()
    if name == "torch":
        import torch

        return _backend_for("torch", torch.empty(0, device=device))
    if name == "cupy":
        import cupy

        with cupy.cuda.Device(device if device is not None else 0):
            return _backend_for("cupy", cupy.empty(0))
    if name == "array_api_strict":
        import array_api_strict

        kwargs = {} if device is None else {"device": device}
        return _backend_for("array_api_strict", array_api_strict.empty(0, **kwargs))
    if name == "jax":
        import jax.numpy as jnp

        x = jnp.empty(0) if device is None else jax_put(jnp.empty(0), device)
        return _backend_for("jax", x)
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKEND_NAMES}")


def jax_put(x: Any, device: Any) -> Any:
    import jax

    return jax.device_put(x, device)
