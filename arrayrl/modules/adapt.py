"""The one place where a network handed to a loss or an estimator becomes an arrayrl module.

:func:`as_module` returns arrayrl modules as they are and turns TorchRL's and
tensordict's modules (``ProbabilisticActor``, ``Actor``, ``ValueOperator``,
``QValueActor``, ``SafeModule``, ``TensorDictModule``, ``TensorDictSequential``) into
their arrayrl counterparts through :mod:`arrayrl.modules.torch_adapter`, which is
imported (with torch) only when such an object arrives. Anything else is refused with a
message saying what to pass instead.
"""

from __future__ import annotations

from typing import Any

from .dict_module import Module

__all__ = ["as_module", "is_torch_object"]

_TORCH_PACKAGES = ("torch", "tensordict", "torchrl")


def is_torch_object(obj: Any) -> bool:
    """Whether ``obj``'s class comes from torch, tensordict or TorchRL (no import)."""
    return any(
        cls.__module__.split(".")[0] in _TORCH_PACKAGES for cls in type(obj).__mro__[:-1]
    )


def _follows_the_protocol(obj: Any) -> bool:
    """Whether ``obj`` is a module by its behaviour, without the base class: a policy
    (``get_dist``), or a dict-level module (``in_keys``, ``out_keys`` and a call)."""
    if hasattr(obj, "get_dist"):
        return True
    return hasattr(obj, "in_keys") and hasattr(obj, "out_keys") and callable(obj)


def as_module(obj: Any, name: str, *, owner: str) -> Module:
    """``obj`` as a dict-level arrayrl :class:`Module`.

    Parameters
    ----------
    obj : Module, or a TorchRL / tensordict module
        TorchRL's modules are adapted: their parameters stay the module's own
        ``torch.nn.Parameter`` objects, so ``torch.optim`` over the loss's parameters
        trains the user's module. Any other object with ``get_dist``, or with
        ``in_keys``, ``out_keys`` and a call, follows the module protocol and is
        returned as it is.
    name : str
        The argument's name, for messages (``"actor_network"``).
    owner : str
        The class that takes it, for messages (``"ClipPPOLoss"``).

    Raises
    ------
    TypeError
        For an object that is neither, naming what to pass instead.
    """
    if isinstance(obj, Module):
        return obj
    if is_torch_object(obj):
        from .torch_adapter import from_torchrl

        return from_torchrl(obj, name=name, owner=owner)
    if _follows_the_protocol(obj):
        return obj
    raise TypeError(
        f"{owner}: {name} must be an arrayrl module (arrayrl.modules.ProbabilisticActor, "
        "ValueOperator, Actor, DictModule, ...) or a TorchRL/tensordict module "
        f"(ProbabilisticActor, ValueOperator, TensorDictModule, ...); got "
        f"{type(obj).__module__}.{type(obj).__name__}"
    )
