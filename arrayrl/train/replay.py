"""A uniform replay buffer over preallocated NumPy storage, in TorchRL's key layout.

:class:`ReplayBuffer` keeps the last ``capacity`` transitions in a ring of NumPy arrays
(one per key, allocated on the first :meth:`~ReplayBuffer.extend` from the shapes and
dtypes it sees) and samples minibatches uniformly with replacement from a generator the
caller seeds, returned as an :class:`~arrayrl.data.ArrayDict` on any backend::

    observation, action                                   [B, ...]
    ("next", "observation")                               [B, ...]
    ("next", "reward"), ("next", "done"), ("next", "terminated")    [B, 1]

This is the layout of a TorchRL ``ReplayBuffer`` filled by a collector, so the batches
go straight into ``SACLoss``, ``TD3Loss`` and the other off-policy losses.

>>> import numpy as np
>>> buffer = ReplayBuffer(100)
>>> buffer.extend({"observation": np.zeros((2, 3)), "action": np.zeros((2, 1)),
...                "next": {"observation": np.ones((2, 3)), "reward": np.zeros((2, 1)),
...                         "done": np.zeros((2, 1), bool), "terminated": np.zeros((2, 1), bool)}})
>>> buffer.sample(4, np.random.default_rng(0)).batch_size
(4,)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl.backends import Backend, get_backend
from arrayrl.data import ArrayDict

__all__ = ["TRANSITION_KEYS", "ReplayBuffer"]

#: The keys a transition holds (TorchRL's layout), nested keys as tuples.
TRANSITION_KEYS: tuple[tuple[str, ...], ...] = (
    ("observation",),
    ("action",),
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
)


def _read(transitions: Any, key: tuple[str, ...]) -> np.ndarray:
    """``transitions[key]`` (a nested key) as a NumPy array; a named ``KeyError``."""
    if isinstance(transitions, ArrayDict):
        value = transitions.get(key, None)
        value = None if value is None else transitions.backend.to_numpy(value)
    else:
        value = transitions
        for part in key:
            value = value.get(part, None) if isinstance(value, Mapping) else None
    if value is None:
        raise KeyError(
            f"transitions lack {key if len(key) > 1 else key[0]!r}; a transition holds "
            f"{[k if len(k) > 1 else k[0] for k in TRANSITION_KEYS]}"
        )
    return np.asarray(value)


class ReplayBuffer:
    """The last ``capacity`` transitions; uniform sampling with replacement.

    Parameters
    ----------
    capacity : int
        Transitions kept; once full, each new transition overwrites the oldest (a ring).
    backend : str or Backend, default "numpy"
        Where :meth:`sample` returns its batches (``"torch"``, or a Backend with a device).
    device : optional
        The device, when ``backend`` is given by name.

    Notes
    -----
    Rewards are stored as float32, ``done`` and ``terminated`` as bool, each with a
    trailing dimension of 1 (``[N]`` inputs get one); observations and actions keep the
    dtype of the first transitions (float32 for float64 inputs, as TorchRL's default
    float dtype). The buffer holds no generator: :meth:`sample` takes one, so a run is
    reproduced by seeding that generator.
    """

    def __init__(self, capacity: int, backend: str | Backend = "numpy", device: Any = None) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise TypeError(f"capacity must be an int, got {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.backend = get_backend(backend, device)
        self._storage: dict[tuple[str, ...], np.ndarray] = {}
        self._cursor = 0  # where the next transition goes
        self._size = 0

    def __len__(self) -> int:
        """The number of transitions held (at most ``capacity``)."""
        return self._size

    def _allocate(self, columns: Mapping[tuple[str, ...], np.ndarray]) -> None:
        """Preallocate one ring per key from the first transitions' shapes and dtypes."""
        for key, value in columns.items():
            self._storage[key] = np.empty((self.capacity, *value.shape[1:]), value.dtype)

    @staticmethod
    def _columns(transitions: Any) -> dict[tuple[str, ...], np.ndarray]:
        """The transitions' arrays in storage form (dtypes, ``[N, 1]`` scalars)."""
        columns = {}
        for key in TRANSITION_KEYS:
            value = _read(transitions, key)
            if key[0] == "next" and key[1] != "observation":
                dtype = np.float32 if key[1] == "reward" else np.bool_
                value = value.astype(dtype, copy=False)
                if value.ndim == 1:
                    value = value[:, None]
            elif value.dtype == np.float64:
                value = value.astype(np.float32)
            columns[key] = value
        sizes = {value.shape[0] if value.ndim else None for value in columns.values()}
        if len(sizes) != 1 or None in sizes:
            shapes = {k: v.shape for k, v in columns.items()}
            raise ValueError(f"transitions must share their first dimension, got {shapes}")
        return columns

    def extend(self, transitions: Any) -> None:
        """Add ``N`` transitions (an ``ArrayDict`` or a nested mapping, batch ``[N]``),
        e.g. one step of ``N`` vector environments; the oldest are overwritten when full.
        """
        columns = self._columns(transitions)
        if not self._storage:
            self._allocate(columns)
        n = next(iter(columns.values())).shape[0]
        if n > self.capacity:  # only the last ``capacity`` would survive
            columns = {key: value[n - self.capacity :] for key, value in columns.items()}
            n = self.capacity
        slots = (self._cursor + np.arange(n)) % self.capacity
        for key, value in columns.items():
            ring = self._storage[key]
            if value.shape[1:] != ring.shape[1:]:
                raise ValueError(
                    f"{key}: shape {value.shape[1:]} per transition, the buffer holds "
                    f"{ring.shape[1:]}"
                )
            ring[slots] = value
        self._cursor = int((self._cursor + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ArrayDict:
        """``batch_size`` transitions drawn uniformly with replacement with ``rng``, as
        an ``ArrayDict`` of batch size ``[batch_size]`` on the buffer's backend."""
        if self._size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        index = rng.integers(0, self._size, size=batch_size)
        return self._gather(index)

    def _gather(self, index: np.ndarray) -> ArrayDict:
        """The transitions at storage rows ``index`` on the buffer's backend."""
        source: dict[str, Any] = {"next": {}}
        for key, ring in self._storage.items():
            value = self.backend.from_numpy(ring[index])
            if key[0] == "next":
                source["next"][key[1]] = value
            else:
                source[key[0]] = value
        return ArrayDict(source, [len(index)])
