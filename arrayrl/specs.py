"""Action specs: the few facts about an action space that the losses read.

TorchRL's losses read their ``action_spec`` for three things: the bounds TD3 and TD3-BC
clamp the smoothed target action to, the number of action elements behind SAC's
``target_entropy="auto"`` (SAC, REDQ, CQL, CrossQ, TQC, OnlineDT), and the kind of a
discrete action space (DQN's ``action_space``). This module holds small specs carrying
just those facts, and reads TorchRL's specs into them:

- :class:`Bounded` (a box; ``clamp`` on any backend), :class:`Unbounded`;
- :class:`Categorical`, :class:`Binary`, :class:`MultiCategorical`, :class:`OneHot`,
  :class:`MultiOneHot` (discrete spaces: ``n`` or ``nvec``, ``shape``);
- :class:`Composite` (a mapping of specs, looked up by ``str`` or tuple key);
- :func:`as_spec` (an arrayrl spec as is, a TorchRL spec converted, by class name);
- :func:`action_spec_for`, :func:`auto_target_entropy`, :func:`bounds_from`: the rules
  TorchRL 0.14.1's ``SACLoss.target_entropy`` and ``TD3Loss.__init__`` apply.

TorchRL's ``Unbounded`` becomes :class:`Unbounded` (``low = -inf``, ``high = inf``),
which is not a :class:`Bounded`: TD3 refuses it, as TorchRL's ``TD3Loss`` does.

No framework is imported here: TorchRL's specs are recognised by the names of their
classes, and bounds given as arrays are converted through :mod:`arrayrl.backends`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from arrayrl._validation import count
from arrayrl.backends import Backend, backend_of

__all__ = [
    "Binary",
    "Bounded",
    "Categorical",
    "Composite",
    "MultiCategorical",
    "MultiOneHot",
    "OneHot",
    "Unbounded",
    "action_spec_for",
    "as_spec",
    "auto_target_entropy",
    "bounds_from",
]

#: A key of a :class:`Composite`: a name, or a path of names into nested composites.
NestedKey = str | tuple[str, ...]


def _shape(shape: Any, name: str, owner: str) -> tuple[int, ...]:
    """``shape`` (an int, a sequence of ints or a ``torch.Size``) as a tuple of ints."""
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: {name} must be a tuple of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{owner}: {name} must have non-negative sizes, got {dims}")
    return dims


def _on_host(value: Any, name: str, owner: str) -> np.ndarray:
    """``value`` (a Python or NumPy number, or an array of any backend) as NumPy."""
    if isinstance(value, (numbers.Number, np.generic)):
        return np.asarray(value)
    try:
        backend = backend_of(value)
    except TypeError:
        raise TypeError(
            f"{owner}: {name} must be a number or an array, got {type(value).__name__}"
        ) from None
    return np.asarray(backend.to_numpy(value))


def _check_box(low: np.ndarray, high: np.ndarray, shape: tuple[int, ...], owner: str) -> None:
    """``ValueError`` unless ``low``/``high`` broadcast to ``shape``, hold no NaN and
    satisfy ``low <= high`` element-wise."""
    for name, bound in (("low", low), ("high", high)):
        try:
            fits = np.broadcast_shapes(bound.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"{owner}: {name} of shape {bound.shape} does not broadcast to shape {shape}"
            )
        if bound.dtype.kind in "fc" and np.isnan(bound).any():
            raise ValueError(f"{owner}: {name} contains NaN; bounds must be numbers")
    if not np.all(low <= high):
        raise ValueError(
            f"{owner}: low must be <= high element-wise (got a low bound higher than a "
            f"high bound: low={low.tolist()}, high={high.tolist()})"
        )


class _Leaf:
    """What every leaf spec has: a ``shape``, a ``dtype`` and ``numel``."""

    shape: tuple[int, ...]
    dtype: Any

    @property
    def numel(self) -> int:
        """The number of elements of one action: the product of ``shape``."""
        return math.prod(self.shape)

    def _drop_leading(self, ndim: int) -> _Leaf:
        """This spec without its ``ndim`` leading (batch) dimensions."""
        raise NotImplementedError


class Bounded(_Leaf):
    """A box ``low <= x <= high`` (TorchRL's ``Bounded``).

    Parameters
    ----------
    low, high : float or array
        The bounds: Python numbers or arrays of any backend, kept as given and broadcast
        to ``shape`` only where used.
    shape : tuple of int, optional
        The action's shape; by default the broadcast shape of ``low`` and ``high``.
    dtype : optional
        The action's dtype; by default that of ``low`` (or ``high``) where it is an
        array, else ``None`` (follows the actions).

    Raises
    ------
    ValueError
        If a bound holds NaN, does not broadcast to ``shape``, or ``low > high``
        somewhere.

    Notes
    -----
    The bounds are treated as constants: :meth:`clamp` keeps their conversion to each
    backend and dtype it has met.
    """

    def __init__(self, low: Any, high: Any, shape: Any = None, dtype: Any = None) -> None:
        low_host = _on_host(low, "low", "Bounded")
        high_host = _on_host(high, "high", "Bounded")
        if shape is None:
            try:
                shape = np.broadcast_shapes(low_host.shape, high_host.shape)
            except ValueError:
                raise ValueError(
                    f"Bounded: low of shape {low_host.shape} and high of shape "
                    f"{high_host.shape} do not broadcast together"
                ) from None
        self.shape = _shape(shape, "shape", "Bounded")
        _check_box(low_host, high_host, self.shape, "Bounded")
        self.low = low
        self.high = high
        if dtype is None:
            dtype = next(
                (
                    getattr(b, "dtype", None)
                    for b in (low, high)
                    if not isinstance(b, numbers.Number)
                ),
                None,
            )
        self.dtype = dtype
        self._converted: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    @property
    def space(self) -> Bounded:
        """This spec, so that TorchRL's spelling ``spec.space.low`` works."""
        return self

    def __repr__(self) -> str:
        return f"Bounded(low={self.low!r}, high={self.high!r}, shape={self.shape})"

    def clamp(self, x: Any) -> Any:
        """``x`` clipped to ``[low, high]``, on ``x``'s backend, device and dtype.

        Parameters
        ----------
        x : array
            Actions of any backend, of shape ``(..., *shape)`` or any shape the bounds
            broadcast to. It is not modified; NaN stays NaN.

        Returns
        -------
        array
            A new array ``clip(x, low, high)``.
        """
        backend = backend_of(x=x)
        low, high = self._bounds_on(backend, x.dtype)
        return backend.xp.clip(x, low, high)

    def _bounds_on(self, backend: Backend, dtype: Any) -> tuple[Any, Any]:
        """``(low, high)`` as arrays of ``backend`` and ``dtype`` (Python numbers as
        they are, and an infinite bound that clips nothing as ``None``), cached."""
        key = (backend, str(dtype), backend.creation_state())
        found = self._converted.get(key)
        if found is None:
            found = (
                _bound_on(self.low, backend, dtype, unlimited=-math.inf),
                _bound_on(self.high, backend, dtype, unlimited=math.inf),
            )
            self._converted[key] = found
        return found

    def _drop_leading(self, ndim: int) -> Bounded:
        """The box of one element of the leading ``ndim`` dimensions (TorchRL's
        ``spec[(0,) * ndim]``): the first entry of the bounds along those dimensions."""
        shape = self.shape[ndim:]
        low, high = (_first_along(b, len(shape)) for b in (self.low, self.high))
        return Bounded(low, high, shape=shape, dtype=self.dtype)


def _bound_on(bound: Any, backend: Backend, dtype: Any, *, unlimited: float) -> Any:
    """One bound ready for ``backend.xp.clip`` on arrays of ``dtype``."""
    if isinstance(bound, (numbers.Number, np.generic)):
        value = float(bound) if isinstance(bound, (float, np.floating)) else bound
        return None if value == unlimited else value
    source = backend_of(bound=bound)
    if source != backend:
        bound = backend.from_numpy(np.asarray(source.to_numpy(bound), order="C"))
    bound = backend.stop_gradient(bound)
    return bound if bound.dtype == dtype else backend.xp.astype(bound, dtype)


def _first_along(bound: Any, ndim: int) -> Any:
    """``bound`` indexed at 0 along the dimensions beyond its last ``ndim``."""
    extra = len(getattr(bound, "shape", ())) - ndim
    return bound[(0,) * extra] if extra > 0 else bound


class Unbounded(_Leaf):
    """A real space with no bounds (TorchRL's ``Unbounded``): ``low = -inf``,
    ``high = inf``, and :meth:`clamp` returns its input.

    Parameters
    ----------
    shape : tuple of int, optional
        The action's shape (``()`` by default).
    dtype : optional
        The action's dtype (``None``: follows the actions).
    """

    low = -math.inf
    high = math.inf

    def __init__(self, shape: Any = (), dtype: Any = None) -> None:
        self.shape = _shape(shape, "shape", "Unbounded")
        self.dtype = dtype

    @property
    def space(self) -> Unbounded:
        """This spec, so that TorchRL's spelling ``spec.space.low`` works."""
        return self

    def __repr__(self) -> str:
        return f"Unbounded(shape={self.shape})"

    def clamp(self, x: Any) -> Any:
        """``x`` itself: nothing lies outside an unbounded space."""
        return x

    def _drop_leading(self, ndim: int) -> Unbounded:
        return Unbounded(self.shape[ndim:], self.dtype)


class Categorical(_Leaf):
    """Integer actions in ``{0, ..., n - 1}`` (TorchRL's ``Categorical``).

    Parameters
    ----------
    n : int
        The number of actions (at least 1).
    shape : tuple of int, optional
        The shape of the action tensor (``()``: one index per action).
    dtype : optional
        The action's dtype (``None``: follows the actions).
    """

    def __init__(self, n: int, shape: Any = (), dtype: Any = None) -> None:
        self.n = count("n", n, minimum=1)
        self.shape = _shape(shape, "shape", type(self).__name__)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, shape={self.shape})"

    def _drop_leading(self, ndim: int) -> Categorical:
        return Categorical(self.n, self.shape[ndim:], self.dtype)


class Binary(Categorical):
    """``n`` binary variables (TorchRL's ``Binary``, a ``Categorical`` with two values).

    Parameters
    ----------
    n : int, optional
        The number of binary variables; by default ``shape[-1]``.
    shape : tuple of int, optional
        The shape of the action tensor; by default ``(n,)``.
    dtype : optional
        The action's dtype (``None``: follows the actions).

    Notes
    -----
    As in TorchRL, the attribute ``n`` is 2 (the values each variable takes); the
    constructor's ``n`` is the size of the last dimension.
    """

    def __init__(self, n: int | None = None, shape: Any = None, dtype: Any = None) -> None:
        if shape is None:
            if n is None:
                raise ValueError("Binary: give n (the number of variables) or shape")
            shape = (count("n", n, minimum=1),)
        super().__init__(2, shape, dtype)
        if n is not None and (not self.shape or self.shape[-1] != n):
            raise ValueError(f"Binary: shape {self.shape} must end with n={n}")

    def __repr__(self) -> str:
        return f"Binary(shape={self.shape})"

    def _drop_leading(self, ndim: int) -> Binary:
        return Binary(shape=self.shape[ndim:], dtype=self.dtype)


class MultiCategorical(_Leaf):
    """Several categorical actions, the ``i``-th in ``{0, ..., nvec[i] - 1}`` (TorchRL's
    ``MultiCategorical``).

    Parameters
    ----------
    nvec : sequence of int or array
        The number of actions of each variable (each at least 1).
    shape : tuple of int, optional
        The shape of the action tensor; by default the shape of ``nvec``.
    dtype : optional
        The action's dtype (``None``: follows the actions).
    """

    def __init__(self, nvec: Any, shape: Any = None, dtype: Any = None) -> None:
        host = (
            _on_host(nvec, "nvec", "MultiCategorical")
            if not isinstance(nvec, (list, tuple))
            else np.asarray(nvec)
        )
        if host.ndim == 0 or host.dtype.kind not in "iu" or (host < 1).any():
            raise ValueError(
                f"MultiCategorical: nvec must be a sequence of ints >= 1, got {nvec!r}"
            )
        self.nvec = host.astype(np.int64)
        self.shape = _shape(host.shape if shape is None else shape, "shape", "MultiCategorical")
        try:
            fits = np.broadcast_shapes(self.nvec.shape, self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                f"MultiCategorical: nvec of shape {self.nvec.shape} does not broadcast to "
                f"shape {self.shape}"
            )
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"MultiCategorical(nvec={self.nvec.tolist()}, shape={self.shape})"

    def _drop_leading(self, ndim: int) -> MultiCategorical:
        nvec = _first_along(self.nvec, len(self.shape) - ndim)
        return MultiCategorical(nvec, self.shape[ndim:], self.dtype)


class OneHot(_Leaf):
    """One-hot actions over ``n`` choices (TorchRL's ``OneHot``).

    Parameters
    ----------
    n : int
        The number of actions (at least 1).
    shape : tuple of int, optional
        The shape of the action tensor; by default ``(n,)``. Its last size is ``n``.
    dtype : optional
        The action's dtype (``None``: follows the actions).
    """

    def __init__(self, n: int, shape: Any = None, dtype: Any = None) -> None:
        self.n = count("n", n, minimum=1)
        self.shape = _shape((self.n,) if shape is None else shape, "shape", "OneHot")
        if not self.shape or self.shape[-1] != self.n:
            raise ValueError(f"OneHot: shape {self.shape} must end with n={self.n}")
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"OneHot(n={self.n}, shape={self.shape})"

    def _drop_leading(self, ndim: int) -> OneHot:
        return OneHot(self.n, self.shape[ndim:], self.dtype)


class MultiOneHot(_Leaf):
    """Several one-hot actions laid side by side (TorchRL's ``MultiOneHot``).

    Parameters
    ----------
    nvec : sequence of int
        The number of choices of each variable (each at least 1).
    shape : tuple of int, optional
        The shape of the action tensor; by default ``(sum(nvec),)``. Its last size is
        ``sum(nvec)``.
    dtype : optional
        The action's dtype (``None``: follows the actions).
    """

    def __init__(self, nvec: Sequence[int], shape: Any = None, dtype: Any = None) -> None:
        if isinstance(nvec, (str, bytes)) or not isinstance(nvec, Sequence) or not nvec:
            raise ValueError(f"MultiOneHot: nvec must be a non-empty list of ints, got {nvec!r}")
        self.nvec = tuple(count(f"nvec[{i}]", n, minimum=1) for i, n in enumerate(nvec))
        total = sum(self.nvec)
        self.shape = _shape((total,) if shape is None else shape, "shape", "MultiOneHot")
        if not self.shape or self.shape[-1] != total:
            raise ValueError(f"MultiOneHot: shape {self.shape} must end with sum(nvec)={total}")
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"MultiOneHot(nvec={list(self.nvec)}, shape={self.shape})"

    def _drop_leading(self, ndim: int) -> MultiOneHot:
        return MultiOneHot(self.nvec, self.shape[ndim:], self.dtype)


_LEAVES = (Bounded, Unbounded, Categorical, MultiCategorical, OneHot, MultiOneHot)


class Composite(Mapping[str, Any]):
    """Specs by name, nested (TorchRL's ``Composite``).

    Parameters
    ----------
    specs : mapping of str to spec, optional
        The entries (positional); values are arrayrl specs, TorchRL specs (converted by
        :func:`as_spec`) or ``None``.
    shape : tuple of int, optional
        The leading (batch) shape every entry's shape starts with (``()``).
    **more_specs
        More entries, by keyword.

    Raises
    ------
    ValueError
        If an entry's shape does not start with ``shape``.
    TypeError
        If an entry is not a spec.
    """

    def __init__(
        self, specs: Mapping[str, Any] | None = None, /, *, shape: Any = (), **more_specs: Any
    ) -> None:
        self.shape = _shape(shape, "shape", "Composite")
        entries = {**(specs or {}), **more_specs}
        self._specs: dict[str, Any] = {}
        for name, spec in entries.items():
            if not isinstance(name, str):
                raise TypeError(f"Composite: keys must be str, got {name!r}")
            spec = None if spec is None else as_spec(spec, name=repr(name), owner="Composite")
            if spec is not None and tuple(spec.shape[: len(self.shape)]) != self.shape:
                raise ValueError(
                    f"Composite: the shape {spec.shape} of entry {name!r} does not start "
                    f"with the composite's shape {self.shape}"
                )
            self._specs[name] = spec

    def __repr__(self) -> str:
        return f"Composite({self._specs!r}, shape={self.shape})"

    def __getitem__(self, key: NestedKey) -> Any:
        """The entry at ``key``: a name, or a tuple of names into nested composites."""
        path = (key,) if isinstance(key, str) else key
        if not isinstance(path, tuple) or not path or not all(isinstance(k, str) for k in path):
            raise KeyError(f"Composite: a key is a str or a non-empty tuple of str, got {key!r}")
        node: Any = self
        for depth, name in enumerate(path):
            if not isinstance(node, Composite) or name not in node._specs:
                where = node._keys_text() if isinstance(node, Composite) else "a leaf spec"
                raise KeyError(f"Composite: no entry {path[: depth + 1]!r} (found {where})")
            node = node._specs[name]
        return node

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def _keys_text(self) -> str:
        return f"keys {sorted(self._specs)}" if self._specs else "no keys"

    def keys(  # type: ignore[override]
        self, include_nested: bool = False, leaves_only: bool = False
    ) -> list[NestedKey]:
        """The keys, as TorchRL's ``Composite.keys``.

        Parameters
        ----------
        include_nested : bool
            Also the keys inside nested composites, as tuples.
        leaves_only : bool
            Leave out the keys of nested composites themselves.
        """
        found: list[NestedKey] = []
        for name, spec in self._specs.items():
            nested = isinstance(spec, Composite)
            if not (nested and leaves_only):
                found.append(name)
            if nested and include_nested:
                found += [
                    (name, *((k,) if isinstance(k, str) else k))
                    for k in spec.keys(include_nested=True, leaves_only=leaves_only)
                ]
        return found


def _from_torchrl_bounded(spec: Any, name: str, owner: str) -> Bounded:
    return Bounded(spec.space.low, spec.space.high, shape=tuple(spec.shape), dtype=spec.dtype)


def _from_torchrl_composite(spec: Any, name: str, owner: str) -> Composite:
    entries = {
        key: None if value is None else as_spec(value, name=f"{name}[{key!r}]", owner=owner)
        for key, value in spec.items()
    }
    return Composite(entries, shape=tuple(spec.shape))


#: TorchRL spec class name -> converter into the arrayrl spec. The MRO is searched in
#: order, so ``BoundedContinuous`` finds ``Bounded`` and ``Binary`` comes before
#: ``Categorical``.
_TORCHRL_SPECS = {
    "Bounded": _from_torchrl_bounded,
    "Unbounded": lambda s, name, owner: Unbounded(tuple(s.shape), s.dtype),
    "Binary": lambda s, name, owner: Binary(shape=tuple(s.shape), dtype=s.dtype),
    "MultiCategorical": lambda s, name, owner: MultiCategorical(s.nvec, tuple(s.shape), s.dtype),
    "Categorical": lambda s, name, owner: Categorical(int(s.space.n), tuple(s.shape), s.dtype),
    "MultiOneHot": lambda s, name, owner: MultiOneHot(
        [int(n) for n in s.nvec], tuple(s.shape), s.dtype
    ),
    "OneHot": lambda s, name, owner: OneHot(int(s.space.n), tuple(s.shape), s.dtype),
    "Composite": _from_torchrl_composite,
}


def as_spec(obj: Any, *, name: str = "spec", owner: str = "arrayrl") -> Any:
    """An arrayrl spec for ``obj``: an arrayrl spec as is, a TorchRL spec converted.

    TorchRL 0.14.1's specs are recognised by the names of the classes in their MRO
    (``Bounded``, ``BoundedContinuous``, ``BoundedDiscrete``, ``Unbounded``,
    ``UnboundedContinuous``, ``UnboundedDiscrete``, ``Categorical``, ``Binary``,
    ``MultiCategorical``, ``OneHot``, ``MultiOneHot``, ``Composite``), without
    importing TorchRL. Bounds stay torch tensors.

    Parameters
    ----------
    obj : object
        The spec.
    name, owner : str
        The argument's name and who asks for it, for the error message.

    Raises
    ------
    TypeError
        If ``obj`` is neither an arrayrl spec nor a supported TorchRL spec.
    """
    if isinstance(obj, (*_LEAVES, Composite)):
        return obj
    for cls in type(obj).__mro__:
        convert = _TORCHRL_SPECS.get(cls.__name__)
        if convert is not None and cls.__module__.split(".")[0] == "torchrl":
            return convert(obj, name, owner)
    supported = sorted({*(c.__name__ for c in _LEAVES), "Binary", "Composite"})
    raise TypeError(
        f"{owner}: {name} must be an arrayrl.specs or TorchRL spec, one of {supported} "
        f"(TorchRL's subclasses included), got {type(obj).__module__}."
        f"{type(obj).__qualname__}"
    )


def action_spec_for(spec: Any, action_key: NestedKey = "action", *, owner: str = "arrayrl") -> Any:
    """The spec of the action at ``action_key``: ``spec[action_key]`` for a composite
    ``spec``, ``spec`` itself for a leaf (converted by :func:`as_spec`).

    Raises
    ------
    KeyError
        If a composite ``spec`` has no entry ``action_key``.
    ValueError
        If the entry is ``None``.
    """
    spec = as_spec(spec, name="action_spec", owner=owner)
    if not isinstance(spec, Composite):
        return spec
    leaf = spec[action_key]
    if leaf is None:
        raise ValueError(f"{owner}: the action spec at {action_key!r} is None")
    return leaf


def _container_shape(spec: Composite, action_key: NestedKey) -> tuple[int, ...]:
    """The shape of the composite holding ``action_key`` (TorchRL's
    ``action_container_shape``): the parent's for a nested key, else ``spec``'s."""
    if isinstance(action_key, tuple) and len(action_key) > 1:
        return tuple(spec[action_key[:-1]].shape)
    return spec.shape


def _numel_beyond(spec: Any, ndim: int) -> int:
    """The elements of ``spec`` past its ``ndim`` leading dimensions, summed over the
    leaves of a composite (``None`` entries count nothing)."""
    if isinstance(spec, Composite):
        return sum(_numel_beyond(s, ndim) for s in spec.values() if s is not None)
    return math.prod(spec.shape[ndim:])


def _as_composite(spec: Any, action_key: NestedKey, owner: str) -> Composite:
    """``spec`` as a composite: a leaf becomes the only entry, at ``action_key``."""
    spec = as_spec(spec, name="action_spec", owner=owner)
    if isinstance(spec, Composite):
        return spec
    path = (action_key,) if isinstance(action_key, str) else tuple(action_key)
    for name in reversed(path):
        spec = Composite({name: spec})
    return spec


def auto_target_entropy(
    spec: Any, action_key: NestedKey = "action", *, owner: str = "SACLoss"
) -> float:
    """SAC's ``target_entropy="auto"``: minus the number of elements of one action.

    The rule of TorchRL 0.14.1's ``SACLoss.target_entropy``: a leaf spec is wrapped in a
    composite at ``action_key``; the action's elements are counted past the shape of the
    composite that holds it (the parent's for a nested key, so the agents of a
    multi-agent spec are not counted), summed over the leaves of a composite action.

    Parameters
    ----------
    spec : spec
        The action spec: a leaf or a composite, arrayrl's or TorchRL's.
    action_key : str or tuple of str
        The action's key.
    owner : str
        The loss asking, for error messages.

    Returns
    -------
    float
        ``-numel`` (TorchRL keeps it as a float32 tensor buffer).

    Raises
    ------
    ValueError
        If the entry at ``action_key`` is ``None``.
    """
    composite = _as_composite(spec, action_key, owner)
    leaf = composite[action_key]
    if leaf is None:
        raise ValueError(
            f"{owner}: cannot infer the dimensionality of the action: the action spec at "
            f"{action_key!r} is None; pass target_entropy explicitly"
        )
    return -float(_numel_beyond(leaf, len(_container_shape(composite, action_key))))


def bounds_from(
    action_spec: Any = None,
    bounds: Any = None,
    *,
    owner: str,
    action_key: NestedKey = "action",
) -> tuple[Any, Any]:
    """The action bounds ``(low, high)`` of TD3 and TD3-BC, from exactly one of
    ``action_spec`` and ``bounds`` (TorchRL 0.14.1's ``TD3Loss.__init__``).

    Parameters
    ----------
    action_spec : spec, optional
        A :class:`Bounded` spec, or a composite holding one at ``action_key``; a
        composite's entry is read at index 0 of the holding composite's shape.
    bounds : tuple of (float or array), optional
        ``(low, high)``.
    owner : str
        The loss asking, for error messages.
    action_key : str or tuple of str
        The action's key in a composite ``action_spec``.

    Returns
    -------
    tuple
        ``(low, high)``, as the spec or ``bounds`` hold them (numbers or arrays).

    Raises
    ------
    ValueError
        If both or neither are given, the action spec is not :class:`Bounded`,
        ``bounds`` is not a pair, or ``low > high`` somewhere.
    """
    if (action_spec is None) == (bounds is None):
        raise ValueError(
            f"{owner}: one of 'bounds' and 'action_spec' must be provided, but not both or "
            f"none. Got bounds={bounds} and action_spec={action_spec}."
        )
    if bounds is not None:
        if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
            raise ValueError(f"{owner}: bounds must be a pair (low, high), got {bounds!r}")
        low, high = bounds
        try:
            Bounded(low, high)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{owner}: bounds: {err}") from None
        return low, high
    spec = as_spec(action_spec, name="action_spec", owner=owner)
    if isinstance(spec, Composite):
        ndim = len(_container_shape(spec, action_key))
        spec = action_spec_for(spec, action_key, owner=owner)
        if isinstance(spec, _Leaf):
            spec = spec._drop_leading(ndim)
    if not isinstance(spec, Bounded):
        raise ValueError(f"{owner}: action_spec is not of type Bounded but {type(spec).__name__}")
    return spec.low, spec.high
