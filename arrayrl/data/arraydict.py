"""``ArrayDict``: a nested mapping of arrays that share leading batch dimensions.

An :class:`ArrayDict` is a small, library-agnostic cousin of ``tensordict.TensorDict``.
Its leaves are arrays of one Array API library on one device (NumPy, torch, CuPy,
array-api-strict, JAX, ...), and every leaf's shape starts with the dict's
``batch_size``. Indexing with a string (or a tuple of strings) reads a key; indexing
with anything else (int, slice, ``...``, integer or boolean arrays, tuples of those)
indexes the batch dimensions of every leaf at once.

Only NumPy, array-api-compat and :mod:`arrayrl.backends` are imported here, so that
``import arrayrl.data`` does not pull in torch, CuPy, JAX or Numba.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from arrayrl._validation import count
from arrayrl.backends import Backend, backend_of, get_backend, same_arrays

__all__ = ["ArrayDict", "as_arraydict", "is_tensordict"]

#: A key: a string for a top-level entry, a tuple of strings for a nested one.
Key = str | tuple[str, ...]

_MISSING: Any = object()
#: Values converted with the dict's backend ``asarray`` instead of being checked as arrays.
_CONVERTIBLE = (bool, int, float, complex, np.generic, list, tuple)


def _as_key(key: Any) -> tuple[str, ...]:
    """``key`` as a non-empty tuple of strings, or ``TypeError``."""
    if isinstance(key, str):
        return (key,)
    if isinstance(key, tuple) and key and all(isinstance(k, str) for k in key):
        return key
    raise TypeError(f"ArrayDict keys are strings or non-empty tuples of strings, got {key!r}")


def _is_key(key: Any) -> bool:
    return isinstance(key, str) or (
        isinstance(key, tuple) and bool(key) and all(isinstance(k, str) for k in key)
    )


def _show_key(key: tuple[str, ...]) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


def _is_leaf_array(value: Any) -> bool:
    """Whether ``value`` is stored as an array leaf as it is (not a nested mapping and not
    a Python value to convert)."""
    return not isinstance(value, (ArrayDict, Mapping, *_CONVERTIBLE))


def _arrays_backend(entries: Sequence[tuple[tuple[str, ...], Any]]) -> Backend:
    """The one backend of the arrays in ``entries`` (``(key, array)`` pairs); the
    ``TypeError`` for a non-array or a mix names the keys (built only then)."""
    try:
        return backend_of(*(value for _, value in entries))
    except TypeError:
        pass
    return backend_of(**{f"key {_show_key(key)}": value for key, value in entries})  # raises


def _as_batch_size(batch_size: Any) -> tuple[int, ...]:
    """``batch_size`` (an int or a sequence of ints >= 0) as a tuple of Python ints;
    ``TypeError`` for floats, strings, booleans, ``ValueError`` for a negative size."""
    if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool):
        batch_size = (batch_size,)
    if isinstance(batch_size, (str, bytes)) or not isinstance(batch_size, Iterable):
        raise TypeError(f"batch_size must be a sequence of ints, got {batch_size!r}")
    dims = tuple(batch_size)
    try:
        return tuple(count(f"batch_size[{i}]", d, minimum=0) for i, d in enumerate(dims))
    except ValueError:
        raise ValueError(f"batch_size must not be negative, got {dims}") from None
    except TypeError as err:
        raise TypeError(f"batch_size must be a sequence of ints, got {dims!r}: {err}") from None


def _not_none(full: tuple[str, ...], value: Any) -> None:
    """``TypeError`` naming the key when a leaf is ``None``."""
    if value is None:
        raise TypeError(
            f"key {_show_key(full)} is None: an ArrayDict leaf must be an array (or a "
            "mapping of arrays); leave the key out, or delete it with del ad[key]"
        )


def _resolve_backend(backend: Any, device: Any = None) -> Backend:
    if isinstance(backend, Backend):
        if device is None or str(device) == str(backend.device):
            return backend
        return get_backend(backend.name, device)
    if isinstance(backend, str):
        return get_backend(backend, device)
    raise TypeError(f"backend must be a name or a Backend, got {backend!r}")


def is_tensordict(obj: Any) -> bool:
    """Whether ``obj`` is a ``tensordict`` collection, without importing tensordict."""
    return any(
        cls.__name__ == "TensorDictBase" and cls.__module__.startswith("tensordict")
        for cls in type(obj).__mro__
    )


class ArrayDict:
    """A nested mapping of arrays sharing leading batch dimensions.

    Parameters
    ----------
    source : Mapping, optional
        The entries. Nested plain mappings become nested ``ArrayDict`` objects with the
        same ``batch_size``; ``ArrayDict`` values are kept (a shallow copy) and may have
        more batch dimensions, as long as their batch size starts with ``batch_size``.
        Tuple keys create nested entries. Python scalars and lists are converted with
        the dict's backend.
    batch_size : sequence of int, default ()
        The leading dimensions every leaf shares.
    backend : str or Backend, optional
        The array library (and device) of the leaves. By default it is the backend of
        the arrays in ``source``; an empty dict without one takes the backend of the
        first array set into it (NumPy until then).

    Raises
    ------
    ValueError
        If a leaf's shape does not start with ``batch_size``.
    TypeError
        If the leaves belong to different libraries or devices, or to another backend
        than ``backend``; if a key is not a string.

    Notes
    -----
    ``==`` is identity, not an element-wise comparison (compare leaves yourself).
    ``bool(ad)`` raises ``TypeError``, and batch assignment (``ad[0] = ...``) is not
    supported: an ``ArrayDict`` never writes into the arrays it holds. ``len(ad)`` is
    ``batch_size[0]``, not the number of keys.

    Examples
    --------
    >>> import numpy as np
    >>> ad = ArrayDict({"obs": np.zeros((4, 3)), "next": {"reward": np.ones(4)}}, [4])
    >>> ad["next", "reward"].shape
    (4,)
    >>> ad[1:3].batch_size
    (2,)
    """

    __slots__ = ("_backend", "_batch_size", "_data")

    def __init__(
        self,
        source: Mapping[Any, Any] | None = None,
        batch_size: Sequence[int] = (),
        *,
        backend: str | Backend | None = None,
    ) -> None:
        self._batch_size = _as_batch_size(batch_size)
        self._data: dict[str, Any] = {}
        source = {} if source is None else source
        if isinstance(source, ArrayDict):
            source = source._data
        if not isinstance(source, Mapping):
            raise TypeError(f"source must be a mapping, got {type(source).__name__}")
        explicit = None if backend is None else _resolve_backend(backend)
        self._backend: Backend | None = explicit
        found = self._backend_of_source(source)
        if found is not None:
            if explicit is not None and found[1] != explicit:
                raise TypeError(
                    f"key {found[0]} is {found[1].name} on {found[1].device}, but "
                    f"backend={explicit.name!r} on {explicit.device} was requested; "
                    "convert it first (ArrayDict.to)"
                )
            self._backend = found[1]
        for key, value in source.items():
            if found is not None and type(key) is str and _is_leaf_array(value):
                # its backend was checked with the others by _backend_of_source
                self._data[key] = self._shape_checked((key,), value)
            else:
                self.set(key, value)

    @staticmethod
    def _backend_of_source(
        source: Mapping[Any, Any], prefix: tuple[str, ...] = ()
    ) -> tuple[str, Backend] | None:
        """The (key, backend) of the first array in ``source``; ``TypeError`` on a mix."""
        leaves: list[tuple[tuple[str, ...], Any]] = []
        nested: list[tuple[str, Backend]] = []

        def walk(mapping: Mapping[Any, Any], prefix: tuple[str, ...]) -> None:
            for key, value in mapping.items():
                full = prefix + _as_key(key)
                if isinstance(value, ArrayDict):
                    found = value._effective_backend()
                    if found is not None:
                        nested.append((f"key {_show_key(full)}", found))
                elif isinstance(value, Mapping):
                    walk(value, full)
                elif not isinstance(value, _CONVERTIBLE):
                    _not_none(full, value)
                    leaves.append((full, value))

        walk(source, prefix)
        first: tuple[str, Backend] | None = None
        if leaves:
            first = (f"key {_show_key(leaves[0][0])}", _arrays_backend(leaves))
        for name, backend in nested:
            if first is None:
                first = (name, backend)
            elif backend != first[1]:
                raise TypeError(
                    f"arrays from different backends or devices: {first[0]} is "
                    f"{first[1].name} on {first[1].device}, {name} is {backend.name} on "
                    f"{backend.device}; convert them to one backend first (ArrayDict.to)"
                )
        return first

    @classmethod
    def _unchecked(
        cls, data: dict[str, Any], batch_size: tuple[int, ...], backend: Backend | None
    ) -> ArrayDict:
        """An ``ArrayDict`` over ``data`` as is (the caller guarantees the invariants)."""
        new = cls.__new__(cls)
        new._data = data
        new._batch_size = batch_size
        new._backend = backend
        return new

    # -- properties -------------------------------------------------------------
    @property
    def batch_size(self) -> tuple[int, ...]:
        """The leading dimensions shared by every leaf."""
        return self._batch_size

    @property
    def shape(self) -> tuple[int, ...]:
        """Same as :attr:`batch_size`."""
        return self._batch_size

    @property
    def ndim(self) -> int:
        """The number of batch dimensions."""
        return len(self._batch_size)

    @property
    def backend(self) -> Backend:
        """The :class:`~arrayrl.backends.Backend` of the leaves (NumPy for an empty dict)."""
        backend = self._effective_backend()
        return backend if backend is not None else get_backend("numpy")

    @property
    def device(self) -> Any:
        """The device of the leaves."""
        return self.backend.device

    def _effective_backend(self) -> Backend | None:
        """The backend set on this dict, else the one of its first leaf, else ``None``."""
        if self._backend is not None:
            return self._backend
        for value in self._data.values():
            found = (
                value._effective_backend() if isinstance(value, ArrayDict) else (backend_of(value))
            )
            if found is not None:
                return found
        return None

    # -- keys -------------------------------------------------------------------
    def _has_leaves(self) -> bool:
        return any(not isinstance(v, ArrayDict) or v._has_leaves() for v in self._data.values())

    def _missing(self, full: tuple[str, ...], level: int) -> KeyError:
        where = "at the top level" if level == 0 else f"under {_show_key(full[:level])}"
        return KeyError(
            f"key {_show_key(full)} not found: {full[level]!r} is not among the keys "
            f"{where}, which are {list(self._data)}"
        )

    def _parent_of(self, full: tuple[str, ...], create: bool = False) -> ArrayDict:
        """The nested dict holding ``full[-1]`` (created on the way if ``create``)."""
        node = self
        for level, part in enumerate(full[:-1]):
            child = node._data.get(part, _MISSING)
            if child is _MISSING and create:
                child = ArrayDict._unchecked({}, self._batch_size, self._backend)
                node._data[part] = child
            if child is _MISSING:
                raise node._missing(full, level)
            if not isinstance(child, ArrayDict):
                raise KeyError(
                    f"key {_show_key(full)} not found: {_show_key(full[: level + 1])} is "
                    "an array, not a nested ArrayDict"
                )
            node = child
        return node

    def get(self, key: Key, default: Any = _MISSING) -> Any:
        """The entry at ``key`` (a string or a tuple of strings for nested entries).

        Parameters
        ----------
        key : str or tuple of str
            The key.
        default : object, optional
            Returned when the key is missing; without it a ``KeyError`` is raised.

        Returns
        -------
        array or ArrayDict
            The leaf, or the nested ``ArrayDict``.
        """
        full = _as_key(key)
        node: Any = self
        for part in full:  # the plain walk; the error message is built only on a miss
            node = node._data.get(part, _MISSING) if isinstance(node, ArrayDict) else _MISSING
            if node is _MISSING:
                break
        if node is not _MISSING:
            return node
        if default is not _MISSING:
            return default
        parent = self._parent_of(full)
        raise parent._missing(full, len(full) - 1)

    def set(self, key: Key, value: Any) -> ArrayDict:
        """Set ``key`` to ``value``, creating nested dicts on the way; returns ``self``.

        Parameters
        ----------
        key : str or tuple of str
            The key.
        value : array, scalar, list, Mapping or ArrayDict
            An array of this dict's backend whose shape starts with :attr:`batch_size`,
            something ``asarray`` turns into one, or a mapping of those.

        Returns
        -------
        ArrayDict
            ``self``.

        Raises
        ------
        ValueError
            If the shape does not start with :attr:`batch_size`.
        TypeError
            If the value belongs to another backend or device.
        """
        full = _as_key(key)
        value = self._checked(full, value)
        self._parent_of(full, create=True)._data[full[-1]] = value
        return self

    def _checked(self, full: tuple[str, ...], value: Any) -> Any:
        """``value`` converted and validated for entry ``full`` of this dict."""
        _not_none(full, value)
        if isinstance(value, ArrayDict):
            return self._checked_nested(f"key {_show_key(full)}", value)
        if isinstance(value, Mapping):
            self._adopt_backend(ArrayDict._backend_of_source(value, full))
            return ArrayDict(value, self._batch_size, backend=self._effective_backend())
        if isinstance(value, _CONVERTIBLE):
            value = self.backend.asarray(value)
        else:
            backend = _arrays_backend([(full, value)])
            if backend is not self._backend:  # else it is this dict's backend: nothing to do
                self._adopt_backend((f"key {_show_key(full)}", backend))
        return self._shape_checked(full, value)

    def _shape_checked(self, full: tuple[str, ...], value: Any) -> Any:
        """``value``, after checking that its shape starts with the batch size."""
        shape = tuple(value.shape)
        if shape[: len(self._batch_size)] != self._batch_size:
            raise ValueError(
                f"key {_show_key(full)} has shape {shape}, which does not start with the "
                f"batch size {self._batch_size}"
            )
        return value

    def _checked_nested(self, name: str, value: ArrayDict) -> ArrayDict:
        if value._batch_size[: self.ndim] != self._batch_size:
            raise ValueError(
                f"{name} is an ArrayDict with batch size {value._batch_size}, which does "
                f"not start with the batch size {self._batch_size}"
            )
        found = value._effective_backend()
        if found is not None:
            self._adopt_backend((name, found))
        return value._shallow_copy(self._effective_backend())

    def _adopt_backend(self, found: tuple[str, Backend] | None) -> None:
        """Check ``found`` against this dict's backend, or adopt it if there is none."""
        if found is None:
            return
        name, backend = found
        current = self._effective_backend()
        if current is None:
            self._set_backend(backend)
        elif not same_arrays(backend, current):
            raise TypeError(
                f"{name} is {backend.name} on {backend.device}, but this ArrayDict holds "
                f"{current.name} arrays on {current.device}; convert it first "
                "(ArrayDict.to)"
            )

    def _set_backend(self, backend: Backend | None) -> None:
        self._backend = backend
        for value in self._data.values():
            if isinstance(value, ArrayDict):
                value._set_backend(backend)

    def _shallow_copy(self, backend: Backend | None = _MISSING) -> ArrayDict:
        """A copy of the structure sharing the leaves."""
        backend = self._backend if backend is _MISSING or backend is None else backend
        data = {
            k: v._shallow_copy(backend) if isinstance(v, ArrayDict) else v
            for k, v in self._data.items()
        }
        return ArrayDict._unchecked(data, self._batch_size, backend)

    def keys(self, include_nested: bool = False, leaves_only: bool = False) -> list[Key]:
        """The keys, in insertion order.

        Parameters
        ----------
        include_nested : bool, default False
            Also list the keys inside nested dicts, as tuples of strings.
        leaves_only : bool, default False
            Leave out the keys of nested dicts themselves.

        Returns
        -------
        list of str or tuple of str
            Top-level keys are strings, nested ones tuples (as in TensorDict).
        """
        return [key for key, _ in self._walk(include_nested, leaves_only)]

    def values(self, include_nested: bool = False, leaves_only: bool = False) -> list[Any]:
        """The values, in the order of :meth:`keys` with the same flags."""
        return [value for _, value in self._walk(include_nested, leaves_only)]

    def items(
        self, include_nested: bool = False, leaves_only: bool = False
    ) -> list[tuple[Key, Any]]:
        """The ``(key, value)`` pairs, in the order of :meth:`keys` with the same flags."""
        return list(self._walk(include_nested, leaves_only))

    def _walk(
        self, include_nested: bool, leaves_only: bool, prefix: tuple[str, ...] = ()
    ) -> Iterator[tuple[Key, Any]]:
        for key, value in self._data.items():
            full: Key = (*prefix, key) if prefix else key
            is_dict = isinstance(value, ArrayDict)
            if not (is_dict and leaves_only):
                yield full, value
            if is_dict and include_nested:
                yield from value._walk(include_nested, leaves_only, (*prefix, key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __contains__(self, key: object) -> bool:
        absent = object()
        return self.get(_as_key(key), absent) is not absent

    def __len__(self) -> int:
        if not self._batch_size:
            raise TypeError("len() of an ArrayDict with an empty batch_size")
        return self._batch_size[0]

    def __bool__(self) -> bool:
        raise TypeError("the truth value of an ArrayDict is ambiguous; test len(ad) or ad.keys()")

    # -- item access --------------------------------------------------------------
    def __getitem__(self, index: Any) -> Any:
        if _is_key(index):
            return self.get(index)
        if isinstance(index, tuple) and any(isinstance(i, str) for i in index):
            raise TypeError(f"cannot mix keys and batch indices in {index!r}")
        return self._index(index)

    def __setitem__(self, key: Key, value: Any) -> None:
        if not _is_key(key):
            raise TypeError(
                f"ArrayDict supports assignment to keys only, got {key!r}; it never "
                "writes into its arrays in place (build a new ArrayDict instead)"
            )
        self.set(key, value)

    def __delitem__(self, key: Key) -> None:
        full = _as_key(key)
        parent = self._parent_of(full)
        if full[-1] not in parent._data:
            raise parent._missing(full, len(full) - 1)
        del parent._data[full[-1]]

    # -- batch operations ---------------------------------------------------------
    def _rebuild(
        self, leaf_fn: Callable[[Any], Any], batch_size: tuple[int, ...], backend: Any = None
    ) -> ArrayDict:
        """A new dict with ``leaf_fn`` applied to every leaf and the top-level batch
        dimensions changed to ``batch_size`` (nested dicts keep their extra ones)."""
        backend = self._backend if backend is None else backend
        return self._rebuild_from(self.ndim, leaf_fn, batch_size, backend)

    def _rebuild_from(
        self, n_old: int, leaf_fn: Callable[[Any], Any], batch: tuple[int, ...], backend: Any
    ) -> ArrayDict:
        data = {}
        for key, value in self._data.items():
            if isinstance(value, ArrayDict):
                child_batch = batch + value._batch_size[n_old:]
                data[key] = value._rebuild_from(n_old, leaf_fn, child_batch, backend)
            else:
                data[key] = leaf_fn(value)
        return ArrayDict._unchecked(data, batch, backend)

    def _normalized_index(self, index: Any) -> Any:
        """``index`` in a form every Array API library accepts on every leaf."""
        parts = list(index) if isinstance(index, tuple) else [index]
        consumed = 0
        for i, part in enumerate(parts):
            if isinstance(part, list):
                part = parts[i] = self.backend.asarray(part)
            if part is None or part is Ellipsis:
                continue
            if isinstance(part, bool):
                raise TypeError("a Python bool is not a valid ArrayDict batch index")
            if isinstance(part, (int, np.integer, slice)):
                consumed += 1
                continue
            self._check_index_array(part)
            consumed += part.ndim if self.backend.xp.isdtype(part.dtype, "bool") else 1
        if consumed > self.ndim:
            raise IndexError(
                f"too many indices for an ArrayDict with batch size {self._batch_size}: "
                f"{index!r} indexes {consumed} dimensions"
            )
        ellipses = [i for i, part in enumerate(parts) if part is Ellipsis]
        if len(ellipses) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if len(parts) == 1 and self.backend.is_array(parts[0]):
            if self.backend.xp.isdtype(parts[0].dtype, "bool"):
                return parts[0]  # a lone mask (array-api-strict wants it alone)
        if ellipses:
            at = ellipses[0]
            parts[at : at + 1] = [slice(None)] * (self.ndim - consumed)
        return (*parts, Ellipsis)

    def _check_index_array(self, part: Any) -> None:
        """``TypeError`` unless ``part`` is an integer or boolean array of this dict's
        backend (a float, a string or a float array is not a batch index)."""
        try:
            backend = backend_of(index=part)
        except TypeError:
            raise TypeError(f"invalid ArrayDict batch index {part!r}") from None
        if not backend.is_array(part) or not backend.xp.isdtype(
            part.dtype, ("integral", "bool")
        ):
            raise TypeError(
                f"invalid ArrayDict batch index {part!r}: expected an int, a slice, None, "
                "..., or an integer or boolean array"
            )
        if backend != self.backend:
            raise TypeError(
                f"the index array is {backend.name} on {backend.device}, but the ArrayDict "
                f"holds {self.backend.name} arrays on {self.backend.device}"
            )

    def _indexer(self, index: Any) -> Callable[[Any], Any]:
        """A function indexing the batch dimensions of one leaf with ``index``."""
        norm = self._normalized_index(index)
        parts = norm if isinstance(norm, tuple) else (norm,)
        xp = self.backend.xp
        arrays = [i for i, p in enumerate(parts) if self.backend.is_array(p)]
        basic_only = all(
            p is None or isinstance(p, slice) for i, p in enumerate(parts[:-1]) if i not in arrays
        )
        if len(arrays) != 1 or not basic_only or xp.isdtype(parts[arrays[0]].dtype, "bool"):
            return lambda x: x[norm]
        # One integer array among slices: index the slices, then ``take`` (the portable
        # spelling: array-api-strict allows integer arrays only next to integer indices).
        at = arrays[0]
        idx = parts[at]
        basic = (*parts[:at], slice(None), *parts[at + 1 :])
        flat = xp.reshape(idx, (-1,))

        def take(x: Any) -> Any:
            y = x[basic]
            out = xp.take(y, flat, axis=at)
            shape = tuple(y.shape)
            return xp.reshape(out, shape[:at] + tuple(idx.shape) + shape[at + 1 :])

        return take

    def _indexed_batch_size(self, indexer: Callable[[Any], Any]) -> tuple[int, ...]:
        leaf = next((v for _, v in self._walk(True, True)), None)
        if leaf is None:
            xp = self.backend.xp
            leaf = xp.zeros(self._batch_size, dtype=xp.bool, device=self.backend.device)
        out = indexer(leaf)
        return tuple(out.shape[: out.ndim - (leaf.ndim - self.ndim)])

    def _index(self, index: Any) -> ArrayDict:
        indexer = self._indexer(index)
        return self._rebuild(indexer, self._indexed_batch_size(indexer))

    def reshape(self, *shape: int | Sequence[int]) -> ArrayDict:
        """A new dict whose batch dimensions are reshaped to ``shape`` (one may be -1).

        Parameters
        ----------
        *shape : int or a sequence of int
            The new batch size, as ``reshape(2, 3)`` or ``reshape((2, 3))``.

        Returns
        -------
        ArrayDict
            Leaves reshaped with ``xp.reshape`` (views where the library allows).
        """
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        batch = self._resolve_shape(tuple(int(d) for d in shape))
        n = self.ndim
        xp = self.backend.xp
        return self._rebuild(lambda x: xp.reshape(x, batch + tuple(x.shape[n:])), batch)

    def _resolve_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        total = math.prod(self._batch_size)
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise ValueError(f"invalid batch shape {shape}: at most one -1, no other negatives")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if known == 0 or total % known:
                raise ValueError(f"cannot reshape batch size {self._batch_size} to {shape}")
            shape = tuple(total // known if d == -1 else d for d in shape)
        if math.prod(shape) != total:
            raise ValueError(f"cannot reshape batch size {self._batch_size} to {shape}")
        return shape

    def unbind(self, dim: int = 0) -> tuple[ArrayDict, ...]:
        """The dicts obtained by indexing batch dimension ``dim`` with 0, 1, ..."""
        dim = _normalize_dim(dim, self.ndim)
        before = (slice(None),) * dim
        return tuple(self[(*before, i)] for i in range(self._batch_size[dim]))

    @classmethod
    def stack(cls, dicts: Sequence[ArrayDict], dim: int = 0) -> ArrayDict:
        """Stack dicts with equal batch sizes and keys along a new batch dimension ``dim``.

        Parameters
        ----------
        dicts : sequence of ArrayDict
            At least one; same keys, batch size and backend.
        dim : int, default 0
            Where the new dimension goes, in ``[-ndim - 1, ndim]``.

        Returns
        -------
        ArrayDict
            Batch size ``batch_size[:dim] + (len(dicts),) + batch_size[dim:]``.
        """
        first = _check_family(dicts, "stack")
        dim = _normalize_dim(dim, first.ndim + 1)
        for other in dicts[1:]:
            if other.batch_size != first.batch_size:
                raise ValueError(
                    f"stack needs equal batch sizes, got {first.batch_size} and {other.batch_size}"
                )
        bs = first.batch_size
        batch = (*bs[:dim], len(dicts), *bs[dim:])
        xp = first.backend.xp
        return _zip_rebuild(dicts, first.ndim, lambda xs: xp.stack(xs, axis=dim), batch)

    @classmethod
    def cat(cls, dicts: Sequence[ArrayDict], dim: int = 0) -> ArrayDict:
        """Concatenate dicts with the same keys along the existing batch dimension ``dim``.

        Parameters
        ----------
        dicts : sequence of ArrayDict
            At least one; same keys and backend, batch sizes equal except at ``dim``.
        dim : int, default 0
            The batch dimension to concatenate along.

        Returns
        -------
        ArrayDict
            Batch size with ``dim`` the sum of the inputs' sizes.
        """
        first = _check_family(dicts, "cat")
        if first.ndim == 0:
            raise ValueError("cannot cat ArrayDicts with an empty batch_size")
        dim = _normalize_dim(dim, first.ndim)
        bs = first.batch_size
        for other in dicts[1:]:
            obs = other.batch_size
            if len(obs) != len(bs) or obs[:dim] + obs[dim + 1 :] != bs[:dim] + bs[dim + 1 :]:
                raise ValueError(
                    f"cat along dim {dim} needs batch sizes equal elsewhere, got {bs} and {obs}"
                )
        batch = (*bs[:dim], sum(d.batch_size[dim] for d in dicts), *bs[dim + 1 :])
        xp = first.backend.xp
        return _zip_rebuild(dicts, first.ndim, lambda xs: xp.concat(xs, axis=dim), batch)

    # -- mapping operations -------------------------------------------------------
    def select(self, *keys: Key, strict: bool = True) -> ArrayDict:
        """A new dict with only ``keys`` (sharing the leaves).

        Parameters
        ----------
        *keys : str or tuple of str
            The keys to keep; a nested key keeps only that entry of its parent.
        strict : bool, default True
            Raise ``KeyError`` for a missing key (else skip it).

        Returns
        -------
        ArrayDict
        """
        out = ArrayDict._unchecked({}, self._batch_size, self._backend)
        for key in keys:
            full = _as_key(key)
            if not strict and full not in self:
                continue
            value = self.get(full)
            if isinstance(value, ArrayDict):
                value = value._shallow_copy()
            node = out
            source = self
            for part in full[:-1]:
                source = source._data[part]
                if not isinstance(node._data.get(part), ArrayDict):
                    node._data[part] = ArrayDict._unchecked({}, source._batch_size, self._backend)
                node = node._data[part]
            node._data[full[-1]] = value
        return out

    def exclude(self, *keys: Key) -> ArrayDict:
        """A new dict without ``keys`` (missing keys are ignored; leaves are shared)."""
        out = self._shallow_copy()
        for key in keys:
            full = _as_key(key)
            if full in out:
                del out[full]
        return out

    def update(self, other: Mapping[Any, Any] | ArrayDict) -> ArrayDict:
        """Set every entry of ``other`` in place, merging nested dicts; returns ``self``.

        Parameters
        ----------
        other : Mapping or ArrayDict
            The entries to set; a nested mapping updates an existing nested dict rather
            than replacing it.

        Returns
        -------
        ArrayDict
            ``self``.
        """
        items = other._data.items() if isinstance(other, ArrayDict) else other.items()
        for key, value in items:
            current = self.get(key, None)
            if isinstance(current, ArrayDict) and isinstance(value, (Mapping, ArrayDict)):
                current.update(value)
            else:
                self.set(key, value)
        return self

    def apply(
        self,
        fn: Callable[..., Any],
        *others: ArrayDict,
        batch_size: Sequence[int] | None = None,
    ) -> ArrayDict:
        """A new dict with ``fn`` applied to every leaf.

        Parameters
        ----------
        fn : callable
            Called as ``fn(leaf, *other_leaves)`` with the leaves at the same key in
            ``others``.
        *others : ArrayDict
            Dicts with the same keys.
        batch_size : sequence of int, optional
            The batch size of the result; by default :attr:`batch_size`, which every
            result must then start with.

        Returns
        -------
        ArrayDict
            Nested dicts get the result's batch size (plus their extra dimensions when
            ``batch_size`` is not given and the results still fit them).

        Raises
        ------
        ValueError
            If the keys differ, or a result does not start with the batch size.
        """
        for other in others:
            _check_same_keys(self, other)
        batch = self._batch_size if batch_size is None else _as_batch_size(batch_size)
        try:
            return self._apply(fn, others, batch, keep_nested=batch_size is None)
        except ValueError as err:
            if batch_size is not None:
                raise
            raise ValueError(f"{err}; pass batch_size= to apply() to change it") from None

    def _apply(
        self,
        fn: Callable[..., Any],
        others: Sequence[ArrayDict],
        batch: tuple[int, ...],
        keep_nested: bool,
    ) -> ArrayDict:
        out = ArrayDict(batch_size=batch, backend=self._backend)
        for key, value in self._data.items():
            other_values = [o._data[key] for o in others]
            if isinstance(value, ArrayDict):
                child_batch = value._batch_size if keep_nested else batch
                result = value._apply(fn, other_values, child_batch, keep_nested)
            else:
                result = fn(value, *other_values)
            out._data[key] = out._checked((key,), result)
        return out

    def clone(self, recurse: bool = True) -> ArrayDict:
        """A copy: every leaf copied with ``xp.asarray(x, copy=True)``.

        With ``recurse=False`` only the structure is copied (nested dicts included) and
        the leaves are shared, like ``TensorDict.clone(False)``: setting a key in the copy
        leaves ``self`` unchanged.
        """
        if not recurse:
            return self._rebuild(lambda x: x, self._batch_size)
        xp = self.backend.xp
        return self._rebuild(lambda x: xp.asarray(x, copy=True), self._batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain ``dict`` objects holding the same leaves (no copy)."""
        return {k: v.to_dict() if isinstance(v, ArrayDict) else v for k, v in self._data.items()}

    def detach(self) -> ArrayDict:
        """A new dict whose leaves are cut from the autograd graph (``TensorDict.detach``);
        on backends without autograd the leaves are shared."""
        if self._backend is None:
            return self.clone(recurse=False)
        return self._rebuild(self._backend.stop_gradient, self._batch_size)

    def to_tensordict(self) -> Any:
        """A ``tensordict.TensorDict`` holding the same torch tensors (no copy).

        Raises ``TypeError`` when the leaves are not torch tensors (convert first with
        ``.to("torch")``).
        """
        if self._backend is not None and self._backend.name != "torch":
            raise TypeError(
                f"to_tensordict needs torch leaves, this dict holds {self._backend.name} "
                "arrays; call .to('torch') first"
            )
        from tensordict import TensorDict

        device = None if self._backend is None else self._backend.device
        return TensorDict(self.to_dict(), batch_size=self._batch_size, device=device)

    # -- conversion -----------------------------------------------------------------
    def to(self, backend: str | Backend, device: Any = None) -> ArrayDict:
        """The same dict with its leaves converted to another backend or device.

        Leaves go through DLPack where both libraries allow it (no copy: the result may
        share memory with ``self``, e.g. NumPy to torch on the CPU), else through a
        NumPy copy. torch tensors that require grad are detached first.

        Parameters
        ----------
        backend : str or Backend
            ``"numpy"``, ``"torch"``, ``"cupy"``, ``"array_api_strict"``, ``"jax"`` or a
            :class:`~arrayrl.backends.Backend`.
        device : object, optional
            The device on the target backend (its default device if ``None``).

        Returns
        -------
        ArrayDict
            A new dict; its leaves are ``self``'s when nothing needs converting. Use
            :meth:`clone` for a copy.
        """
        target = _resolve_backend(backend, device)
        source = self.backend
        if target == source:
            return self._rebuild(lambda x: x, self._batch_size, target)
        return self._rebuild(lambda x: _convert(x, source, target), self._batch_size, target)

    @classmethod
    def from_tensordict(cls, td: Any) -> ArrayDict:
        """An ``ArrayDict`` of the same torch tensors (no copy) as ``tensordict`` ``td``.

        Nested tensordicts become nested ``ArrayDict`` objects with ``td``'s batch size.
        """
        if not is_tensordict(td):
            raise TypeError(f"expected a tensordict.TensorDict, got {type(td).__name__}")
        out = cls(batch_size=tuple(td.batch_size))
        for key, value in td.items(include_nested=True, leaves_only=True):
            out.set(key, value)
        if out._backend is None:
            out._set_backend(get_backend("torch", td.device))
        return out

    # -- display ----------------------------------------------------------------------
    def __repr__(self) -> str:
        return self._repr(0)

    def _repr(self, indent: int) -> str:
        pad = " " * (indent + 4)
        lines = []
        for key, value in self._data.items():
            if isinstance(value, ArrayDict):
                lines.append(f"{pad}{key}: {value._repr(indent + 4)},")
            else:
                dtype = str(value.dtype).removeprefix("array_api_strict.")
                lines.append(f"{pad}{key}: Array(shape={tuple(value.shape)}, dtype={dtype}),")
        backend = self.backend
        lines.append(
            f"{pad}batch_size={self._batch_size}, backend={backend.name}, device={backend.device})"
        )
        return "ArrayDict(\n" + "\n".join(lines)


def _normalize_dim(dim: int, ndim: int) -> int:
    if not -ndim <= dim < ndim:
        raise IndexError(f"dim {dim} is out of range for {ndim} batch dimensions")
    return dim % ndim


def _check_family(dicts: Sequence[ArrayDict], what: str) -> ArrayDict:
    """The first of ``dicts`` after checking they share keys and backend."""
    dicts = list(dicts)
    if not dicts:
        raise ValueError(f"{what} needs at least one ArrayDict")
    if not all(isinstance(d, ArrayDict) for d in dicts):
        raise TypeError(f"{what} takes a sequence of ArrayDict objects")
    first = dicts[0]
    for other in dicts[1:]:
        _check_same_keys(first, other)
        mine, theirs = first._effective_backend(), other._effective_backend()
        if mine is not None and theirs is not None and mine != theirs:
            raise TypeError(
                f"cannot {what} ArrayDicts of {first.backend.name} on {first.device} and "
                f"{other.backend.name} on {other.device}; convert them first (ArrayDict.to)"
            )
    return first


def _check_same_keys(first: ArrayDict, other: ArrayDict) -> None:
    mine = set(first.keys(include_nested=True))
    theirs = set(other.keys(include_nested=True))
    if mine != theirs:
        raise ValueError(
            "the ArrayDicts have different keys: only in the first "
            f"{sorted(map(str, mine - theirs))}, only in the other "
            f"{sorted(map(str, theirs - mine))}"
        )


def _zip_rebuild(
    dicts: Sequence[ArrayDict],
    n_old: int,
    leaves_fn: Callable[[list[Any]], Any],
    batch: tuple[int, ...],
) -> ArrayDict:
    first = dicts[0]
    data = {}
    for key, value in first._data.items():
        values = [d._data[key] for d in dicts]
        if isinstance(value, ArrayDict):
            extra = value._batch_size[n_old:]
            if any(v._batch_size[n_old:] != extra for v in values):
                raise ValueError(f"nested ArrayDicts at {key!r} have different batch sizes")
            data[key] = _zip_rebuild(values, n_old, leaves_fn, batch + extra)
        else:
            data[key] = leaves_fn(values)
    return ArrayDict._unchecked(data, batch, first._effective_backend())


def _convert(x: Any, source: Backend, target: Backend) -> Any:
    """Leaf ``x`` of ``source`` as an array of ``target``, through DLPack if possible."""
    if getattr(x, "requires_grad", False):
        x = x.detach()
    try:
        y = target.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, AttributeError, ValueError):
        y = None
    if y is None or not target.is_array(y) or backend_of(y) != target:
        y = target.from_numpy(source.to_numpy(x))
    return y


def as_arraydict(obj: Any, batch_size: Sequence[int] = ()) -> ArrayDict:
    """``obj`` as an :class:`ArrayDict`.

    Parameters
    ----------
    obj : ArrayDict, tensordict.TensorDict or Mapping
        An ``ArrayDict`` is returned as is; a ``TensorDict`` becomes an ``ArrayDict`` of
        the same torch tensors (no copy, see :meth:`ArrayDict.from_tensordict`); a plain
        mapping is wrapped with ``batch_size``.
    batch_size : sequence of int, default ()
        The batch size for a plain mapping.

    Returns
    -------
    ArrayDict
    """
    if isinstance(obj, ArrayDict):
        return obj
    if is_tensordict(obj):
        return ArrayDict.from_tensordict(obj)
    if isinstance(obj, Mapping):
        return ArrayDict(obj, batch_size)
    raise TypeError(f"cannot make an ArrayDict from {type(obj).__name__}")
