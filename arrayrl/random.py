"""Seeded random generators, one per backend; arrayrl keeps no global RNG of its own.

Every random draw in the library (distribution samples, Monte-Carlo entropies, weight
initialisation, minibatch shuffles) goes through a :class:`Generator` that the caller
made from a seed. Three modes:

- ``"native"``: the backend's own generator (``numpy.random.Generator``, a
  ``torch.Generator`` on the backend's device, ``cupy.random.Generator``, JAX keys that
  are split at every draw). Fast, but each library draws different numbers.
- ``"numpy"``: draws come from a NumPy ``Generator`` in float64 and are converted to the
  backend, so every backend sees exactly the same noise. The conformance suite uses it.
- ``"global"`` (torch only, ``seed=None``): torch's default generator, the one
  ``torch.manual_seed`` seeds. This is the TorchRL drop-in: a loss built from TorchRL's
  modules without ``seed=`` draws from it in TorchRL's order, so a seeded TorchRL script
  gets TorchRL's numbers.

>>> from arrayrl.random import make_generator
>>> rng = make_generator(0, backend="numpy")
>>> rng.normal((2, 3)).shape
(2, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arrayrl.backends import Backend, get_backend

__all__ = ["Generator", "make_generator"]

_MODES = ("native", "numpy", "global")


class Generator:
    """A seeded source of normal and uniform draws on one backend.

    Parameters
    ----------
    seed : int or None
        The seed; the same seed and mode give the same stream. ``None`` only with
        ``mode="global"``.
    backend : str or Backend, default "numpy"
        Where the draws are returned.
    mode : {"native", "numpy", "global"}, default "native"
        ``"numpy"`` draws with NumPy in float64 and converts (identical noise on every
        backend); ``"native"`` uses the backend's own generator; ``"global"`` (torch
        only) draws from torch's default generator and takes no seed.
    device : optional
        The device, when ``backend`` is given by name.
    """

    def __init__(
        self,
        seed: int | None,
        backend: str | Backend = "numpy",
        *,
        mode: str = "native",
        device: Any = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.backend = get_backend(backend, device)
        if mode == "global":
            self._init_global(seed)
            return
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = int(seed)
        self.mode = mode if self.backend.name != "numpy" else "numpy"
        self._numpy = np.random.default_rng(self.seed)
        self._native = None if self.mode == "numpy" else _native_source(self.backend, seed)

    def _init_global(self, seed: Any) -> None:
        """Draw from torch's default generator (``mode="global"``)."""
        if self.backend.name != "torch":
            raise ValueError(
                f"mode='global' draws from torch's default generator; the backend is "
                f"{self.backend.name!r} (use a seed with mode='native' or 'numpy')"
            )
        if seed is not None:
            raise ValueError(f"mode='global' takes no seed (torch.manual_seed does), got {seed!r}")
        self.seed, self.mode = None, "global"
        self._numpy = None
        self._native = _TorchSource(self.backend, None)

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, backend={self.backend.name!r}, mode={self.mode!r})"

    def normal(self, shape: Sequence[int], dtype: Any = None) -> Any:
        """Standard normal draws of ``shape`` (``dtype`` defaults to float32)."""
        shape = tuple(shape)
        if self._native is None:
            return self._convert(self._numpy.standard_normal(shape), dtype)
        return self._native.normal(shape, self._dtype(dtype))

    def uniform(
        self, shape: Sequence[int], dtype: Any = None, *, low: float = 0.0, high: float = 1.0
    ) -> Any:
        """Uniform draws on ``[low, high)`` of ``shape`` (``dtype`` defaults to float32).

        On torch the draw is ``Tensor.uniform_(low, high)``, so with ``mode="global"``
        it is exactly the draw TorchRL makes with the same bounds after the same seed.
        """
        shape = tuple(shape)
        if self._native is None:
            return self._convert(self._numpy.uniform(low, high, shape), dtype)
        if isinstance(self._native, _TorchSource):
            return self._native.uniform(shape, self._dtype(dtype), low, high)
        unit = self._native.uniform(shape, self._dtype(dtype))
        return unit if (low, high) == (0.0, 1.0) else low + (high - low) * unit

    def integers(self, low: int, high: int, shape: Sequence[int]) -> Any:
        """Integers drawn uniformly from ``{low, ..., high - 1}``, int64, of ``shape``.

        On torch the draw is ``torch.randint(low, high, shape)``, so with
        ``mode="global"`` it is exactly TorchRL's draw after the same seed.
        """
        if not high > low:
            raise ValueError(f"integers: high must be > low, got low={low}, high={high}")
        shape = tuple(shape)
        if self._native is None:
            draws = self._numpy.integers(low, high, shape, dtype=np.int64)
            return self.backend.from_numpy(draws)
        return self._native.integers(low, high, shape)

    def permutation(self, n: int) -> Any:
        """A random permutation of ``range(n)`` as an int64 array of this backend."""
        if self._native is None:
            return self.backend.from_numpy(self._numpy.permutation(n))
        return self._native.permutation(n)

    def spawn(self) -> Generator:
        """An independent generator of the same backend and mode (for a sub-task); in
        ``"global"`` mode, the same global stream."""
        if self.mode == "global":
            return self
        child_seed = int(self._numpy.integers(0, 2**31 - 1))
        return Generator(child_seed, self.backend, mode=self.mode)

    def _dtype(self, dtype: Any) -> Any:
        return self.backend.xp.float32 if dtype is None else dtype

    def _convert(self, draws: np.ndarray, dtype: Any) -> Any:
        return self.backend.xp.astype(self.backend.from_numpy(draws), self._dtype(dtype))


def make_generator(
    seed: int | None, backend: str | Backend = "numpy", *, mode: str = "native", device: Any = None
) -> Generator:
    """A :class:`Generator` for ``backend`` seeded with ``seed`` (see its parameters)."""
    return Generator(seed, backend, mode=mode, device=device)


def _native_source(backend: Backend, seed: int) -> Any:
    """The backend's own generator behind a small common interface."""
    if backend.name == "torch":
        return _TorchSource(backend, seed)
    if backend.name == "cupy":
        return _CupySource(backend, seed)
    if backend.name == "generic" and "jax" in backend.xp.__name__:
        return _JaxSource(seed)
    return None  # array_api_strict and other libraries without a generator: NumPy-sourced


class _TorchSource:
    def __init__(self, backend: Backend, seed: int) -> None:
        import torch

        self._torch = torch
        self._device = backend.device
        # seed None: torch's default generator (generator=None in every draw)
        self._gen = None if seed is None else torch.Generator(backend.device).manual_seed(seed)

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._torch.randn(shape, generator=self._gen, dtype=dtype, device=self._device)

    def uniform(
        self, shape: tuple[int, ...], dtype: Any, low: float = 0.0, high: float = 1.0
    ) -> Any:
        out = self._torch.empty(shape, dtype=dtype, device=self._device)
        return out.uniform_(low, high, generator=self._gen)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        return self._torch.randint(low, high, shape, generator=self._gen, device=self._device)

    def permutation(self, n: int) -> Any:
        return self._torch.randperm(n, generator=self._gen, device=self._device)


class _CupySource:
    def __init__(self, backend: Backend, seed: int) -> None:
        self._rng = backend.rng(seed)
        self._device = backend.device

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self._device:
            return self._rng.standard_normal(shape, dtype=dtype)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self._device:
            return self._rng.random(shape, dtype=dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        with self._device:
            return self._rng.integers(low, high, shape, dtype="int64")

    def permutation(self, n: int) -> Any:
        with self._device:
            return self._rng.permutation(n)


class _JaxSource:
    """Splits its key at every draw, so each draw is fresh and the stream reproducible."""

    def __init__(self, seed: int) -> None:
        import jax

        self._jax = jax
        self._key = jax.random.key(seed)

    def _next_key(self) -> Any:
        self._key, sub = self._jax.random.split(self._key)
        return sub

    def normal(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._jax.random.normal(self._next_key(), shape, dtype=dtype)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self._jax.random.uniform(self._next_key(), shape, dtype=dtype)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> Any:
        return self._jax.random.randint(self._next_key(), shape, low, high)

    def permutation(self, n: int) -> Any:
        return self._jax.random.permutation(self._next_key(), n)
