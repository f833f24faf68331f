"""Any other Array API library: array-api-strict, JAX, and whatever exposes
``__array_namespace__``. Their scans are the Array-API reference kernels."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ._base import Backend


class GenericBackend(Backend):
    """A namespace known only through the Array API standard."""

    name = "generic"

    @classmethod
    def for_array(cls, x: Any) -> GenericBackend:
        xp = array_api_compat.array_namespace(x)
        backend = cls(xp, array_api_compat.device(x))
        if array_api_compat.is_array_api_strict_namespace(xp):
            backend.name = "array_api_strict"
        elif array_api_compat.is_jax_namespace(xp):
            backend.name = "jax"
        return backend

    def is_array(self, x: Any) -> bool:
        return array_api_compat.is_array_api_obj(x) and (
            array_api_compat.array_namespace(x) is self.xp
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError):
            return np.from_dlpack(x)

    def from_numpy(self, x: np.ndarray) -> Any:
        return self.xp.asarray(x, device=self.device)

    def stop_gradient(self, x: Any) -> Any:
        if self.name == "jax":
            import jax

            return jax.lax.stop_gradient(x)
        return x
