"""Dict-level modules: read ``in_keys`` from a batch, write ``out_keys`` into it.

The protocol every network handed to a loss follows (TorchRL's ``TensorDictModule``):

- ``in_keys`` / ``out_keys``: lists of str or tuple keys;
- ``module(batch, params=None)`` computes with ``params`` (its own tree if ``None``),
  writes its outputs into ``batch`` (an :class:`~arrayrl.data.ArrayDict` or a
  ``tensordict.TensorDict``) and returns it;
- ``params`` (a parameter tree, assignable), ``named_parameters()``, ``parameters()``,
  ``to(backend, device=None)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from arrayrl.backends import Backend

from ._params import HasParams, Params
from .layers import Layer

__all__ = ["DictModule", "Module", "ModuleWrapper", "NestedKey", "as_key_list"]

NestedKey = str | tuple[str, ...]


def as_key_list(keys: NestedKey | Sequence[NestedKey], name: str) -> list[NestedKey]:
    """``keys`` as a list of str / tuple keys (``TypeError`` naming ``name`` otherwise)."""
    if isinstance(keys, (str, tuple)):
        keys = [keys]
    keys = list(keys)
    for key in keys:
        ok = isinstance(key, str) or (
            isinstance(key, tuple) and key and all(isinstance(k, str) for k in key)
        )
        if not ok:
            raise TypeError(f"{name} must hold str or tuple-of-str keys, got {key!r}")
    return keys


def read_key(batch: Any, key: NestedKey, owner: str) -> Any:
    """``batch.get(key)``, or ``KeyError`` naming the key and ``owner`` if it is absent."""
    value = batch.get(key, None)
    if value is None:
        raise KeyError(f"{owner} reads key {key!r}, which is not in the batch")
    return value


class Module(HasParams):
    """Base class of dict-level modules; subclasses define :meth:`forward`."""

    in_keys: list[NestedKey]
    out_keys: list[NestedKey]

    def forward(self, batch: Any, params: Params) -> Any:
        """Write ``out_keys`` into ``batch`` computed with ``params``; return ``batch``."""
        raise NotImplementedError

    def __call__(self, batch: Any, params: Params | None = None, **kwargs: Any) -> Any:
        return self.forward(batch, self.params if params is None else params, **kwargs)


class ModuleWrapper(Module):
    """A dict-level module around an inner one, ``self.module``: its tree is
    ``{"module": <inner tree>}`` and moving it moves the inner module."""

    module: Any

    @property
    def params(self) -> Params:
        return {"module": self.module.params}

    @params.setter
    def params(self, tree: Params) -> None:
        self.module.params = tree["module"]

    def to(self, backend: str | Backend, device: Any = None) -> ModuleWrapper:
        self.module.to(backend, device)
        return self


class DictModule(Module):
    """Wrap a :class:`~arrayrl.modules.layers.Layer` (or any ``apply(params, *xs)``
    object) so that it reads ``in_keys`` and writes ``out_keys``.

    >>> import numpy as np
    >>> from arrayrl.data import ArrayDict
    >>> from arrayrl.modules import MLP, DictModule
    >>> critic = DictModule(MLP(3, 1, [8]), in_keys=["observation"], out_keys=["state_value"])
    >>> critic(ArrayDict({"observation": np.zeros((5, 3), np.float32)}, [5]))["state_value"].shape
    (5, 1)
    """

    def __init__(
        self,
        module: Layer,
        in_keys: NestedKey | Sequence[NestedKey],
        out_keys: NestedKey | Sequence[NestedKey],
    ) -> None:
        self.module = module
        self.in_keys = as_key_list(in_keys, "in_keys")
        self.out_keys = as_key_list(out_keys, "out_keys")

    @property
    def params(self) -> Params:
        return {"module": self.module.params} if self.module.params else {}

    @params.setter
    def params(self, tree: Params) -> None:
        if "module" in tree:
            self.module.params = tree["module"]

    def forward(self, batch: Any, params: Params) -> Any:
        owner = type(self).__name__
        inputs = [read_key(batch, key, owner) for key in self.in_keys]
        out = self.module.apply(params.get("module", {}), *inputs)
        outputs = out if isinstance(out, tuple) else (out,)
        if len(outputs) != len(self.out_keys):
            raise ValueError(
                f"{owner} produced {len(outputs)} outputs for out_keys={self.out_keys}"
            )
        for key, value in zip(self.out_keys, outputs):
            batch.set(key, value)
        return batch

    def to(self, backend: str | Backend, device: Any = None) -> DictModule:
        self.module.to(backend, device)
        return self
