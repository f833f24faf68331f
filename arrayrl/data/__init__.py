"""Batches of arrays: :class:`ArrayDict`, a TensorDict-lite for any Array API library."""

from .arraydict import ArrayDict, as_arraydict, is_tensordict

__all__ = ["ArrayDict", "as_arraydict", "is_tensordict"]
