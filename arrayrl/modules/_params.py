"""Parameter trees: nested ``dict[str, array | tree]``, the data a module computes with.

Parameters are plain data in arrayrl. A module reads them from the tree passed to it, so a
target network is a second tree, an ensemble is a tree of stacked arrays, and a loss is a
pure function of its trees. On torch the leaves are leaf tensors with ``requires_grad``,
which ``torch.optim`` updates in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from arrayrl.backends import Backend, backend_of, get_backend

Params = dict[str, Any]

__all__ = [
    "HasParams",
    "Params",
    "convert_params",
    "flatten_params",
    "map_params",
    "params_backend",
    "unflatten_params",
]


def _walk(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for name, value in tree.items():
        full = f"{prefix}{name}"
        if isinstance(value, Mapping):
            yield from _walk(value, f"{full}.")
        else:
            yield full, value


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"0": {"weight": w}}`` → ``{"0.weight": w}`` (in insertion order)."""
    return dict(_walk(tree, f"{prefix}." if prefix else ""))


def unflatten_params(flat: Mapping[str, Any]) -> Params:
    """The inverse of :func:`flatten_params`."""
    tree: Params = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def map_params(fn: Callable[[Any], Any], tree: Mapping[str, Any]) -> Params:
    """A tree of the same structure with ``fn`` applied to every leaf."""
    return {
        name: map_params(fn, value) if isinstance(value, Mapping) else fn(value)
        for name, value in tree.items()
    }


def params_backend(tree: Mapping[str, Any]) -> Backend | None:
    """The backend of the leaves (``TypeError`` if they mix); ``None`` for an empty tree."""
    leaves = flatten_params(tree)
    return backend_of(**leaves) if leaves else None


def convert_params(
    tree: Mapping[str, Any],
    backend: str | Backend,
    device: Any = None,
    *,
    requires_grad: bool | None = None,
) -> Params:
    """Copy ``tree`` to ``backend`` (through NumPy), keeping each leaf's dtype.

    On torch the new leaves require gradients, unless ``requires_grad=False``.
    """
    target = get_backend(backend, device)
    grad = target.differentiable if requires_grad is None else requires_grad

    def move(leaf: Any) -> Any:
        host = np.asarray(backend_of(leaf).to_numpy(leaf))
        new = target.from_numpy(np.array(host, copy=True))
        return new.requires_grad_(True) if grad and target.differentiable else new

    return map_params(move, tree)


class HasParams:
    """What every holder of a parameter tree offers (layers and dict-level modules).

    By default the tree is stored in ``_params``; containers override :attr:`params` to
    assemble theirs from their parts.
    """

    _params: Params

    @property
    def params(self) -> Params:
        """The own parameter tree (shared with the caller, not copied)."""
        return self._params

    @params.setter
    def params(self, tree: Params) -> None:
        self._params = tree

    def named_parameters(self) -> dict[str, Any]:
        """Flat ``{"0.weight": array, ...}`` view of :attr:`params`."""
        return flatten_params(self.params)

    def parameters(self) -> list[Any]:
        """The parameter arrays (what ``torch.optim`` takes on torch)."""
        return list(self.named_parameters().values())

    @property
    def backend(self) -> Backend | None:
        """The backend of the parameters (``None`` without any)."""
        return params_backend(self.params)

    def to(self, backend: str | Backend, device: Any = None) -> HasParams:
        """Move the parameters to ``backend`` in place; returns ``self``."""
        self.params = convert_params(self.params, backend, device)
        return self

    #: Prefixes of foreign state-dict names and what they stand for here (see
    #: :meth:`load_state_dict`); empty: names must match as they are.
    _foreign_prefixes: tuple[tuple[str, str], ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """Flat ``{"module.0.weight": array, ...}``: the parameters under their dotted
        names, which are ``torch.nn.Module.state_dict``'s for the same layout."""
        return flatten_params(self.params)

    def load_state_dict(self, state: Mapping[str, Any]) -> HasParams:
        """Overwrite the parameters with ``state``'s values, in place where the backend
        allows (an optimizer keeps tracking them); returns ``self``.

        ``state`` may come from :meth:`state_dict` on any backend, or from a
        ``torch.nn.Module`` / TorchRL module of the same layout (a TorchRL ``MLP`` or
        ``ValueOperator``, ``nn.Sequential``; a TorchRL ``ProbabilisticActor`` for an
        arrayrl one): names are matched one for one. Every name, shape and value is
        checked before anything is written: ``KeyError`` lists missing and unexpected
        names, ``ValueError`` a shape that differs.
        """
        own = self.state_dict()
        state = {self._own_name(name): value for name, value in state.items()}
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own)
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing {missing}, unexpected "
                f"{unexpected}"
            )
        host = {name: _host_array(state[name]) for name in own}
        for name, leaf in own.items():
            if tuple(host[name].shape) != tuple(leaf.shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {name!r} has shape "
                    f"{tuple(host[name].shape)}, expected {tuple(leaf.shape)}"
                )
        written = {name: backend_of(x).write_into(x, host[name]) for name, x in own.items()}
        self.params = unflatten_params(written)
        return self

    def _own_name(self, name: str) -> str:
        """A state-dict name in this module's naming (foreign prefixes translated)."""
        for foreign, own in self._foreign_prefixes:
            if name.startswith(foreign):
                return own + name[len(foreign) :]
        return name


def _host_array(value: Any) -> np.ndarray:
    """A state-dict value as a NumPy array (detached, on the host)."""
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(backend_of(value).to_numpy(value))
