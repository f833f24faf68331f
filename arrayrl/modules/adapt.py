"""The one place where a network handed to a loss or an estimator becomes an arrayrl module.

:func:`as_module` returns arrayrl modules as they are and turns TorchRL's and
tensordict's modules (``ProbabilisticActor``, ``Actor``, ``ValueOperator``,
``QValueActor``, ``SafeModule``, ``TensorDictModule``, ``TensorDictSequential``) into
their arrayrl counterparts through :mod:`arrayrl.modules.torch_adapter`, which is
imported (with torch) only when such an object arrives. Anything else is refused with a
message saying what to pass instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .dict_module import Module

if TYPE_CHECKING:
    from .running_mean_std import RunningMeanStd
    from .value_norm import ValueNorm

__all__ = [
    "as_diffusion_actor",
    "as_module",
    "as_running_mean_std",
    "as_value_norm",
    "is_torch_object",
    "is_torchrl_diffusion_actor",
]

_TORCH_PACKAGES = ("torch", "tensordict", "torchrl")


def is_torch_object(obj: Any) -> bool:
    """Whether ``obj``'s class comes from torch, tensordict or TorchRL (no import)."""
    return any(cls.__module__.split(".")[0] in _TORCH_PACKAGES for cls in type(obj).__mro__[:-1])


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


#: TorchRL 0.14.1's normalisers (``torchrl.modules.value_norm``) and the arguments each
#: one's constructor takes, read back from its attributes.
_TORCHRL_VALUE_NORMS = {
    "PopArtValueNorm": ("shape", "beta", "epsilon"),
    "RunningValueNorm": ("shape", "epsilon"),
    "PercentileValueNorm": ("shape", "quantiles", "rate", "min_scale", "center", "epsilon"),
}


def as_value_norm(obj: Any, name: str, owner: str) -> ValueNorm:
    """``obj`` as an arrayrl :class:`~arrayrl.modules.value_norm.ValueNorm`.

    An arrayrl normaliser is returned as it is (the loss shares it with the caller). A
    TorchRL ``PopArtValueNorm``, ``RunningValueNorm`` or ``PercentileValueNorm`` becomes
    the arrayrl class of the same name with the same hyper-parameters and a copy of its
    current statistics, on torch, on their device and in their dtype. The loss owns
    that copy (``loss.<name>``, in ``loss.state_dict()`` and moved by ``loss.to``), as a
    TorchRL loss owns its sub-module; the TorchRL object given is not updated
    afterwards: read the statistics from ``loss.<name>``.

    Raises
    ------
    TypeError
        For anything else (a subclass of TorchRL's included: its maths is unknown
        here), naming what to pass instead.
    """
    from .value_norm import ValueNorm

    if isinstance(obj, ValueNorm):
        return obj
    cls = type(obj)
    if cls.__name__ in _TORCHRL_VALUE_NORMS and cls.__module__.startswith("torchrl."):
        return _from_torchrl_value_norm(obj)
    raise TypeError(
        f"{owner}: {name} must be an arrayrl ValueNorm (arrayrl.modules.value_norm."
        "PopArtValueNorm, RunningValueNorm, PercentileValueNorm) or TorchRL's class of "
        f"that name; got {cls.__module__}.{cls.__qualname__}"
    )


def _from_torchrl_value_norm(obj: Any) -> ValueNorm:
    """The arrayrl copy of TorchRL normaliser ``obj`` (hyper-parameters and statistics)."""
    from . import value_norm

    cls_name = type(obj).__name__
    kwargs = {arg: getattr(obj, arg) for arg in _TORCHRL_VALUE_NORMS[cls_name]}
    state = {key: value.detach().clone() for key, value in obj.state_dict().items()}
    device = next(iter(state.values())).device
    norm = getattr(value_norm, cls_name)(**kwargs).to("torch", device)
    norm.load_state_dict(state)  # checks the names and shapes
    norm._stats = {key: state[key] for key in norm._stats}  # in TorchRL's dtype
    return norm


def as_running_mean_std(obj: Any, name: str = "obs_rms", *, owner: str) -> RunningMeanStd:
    """``obj`` as an arrayrl :class:`RunningMeanStd`.

    An arrayrl one is returned as it is (shared with the caller). TorchRL's
    ``torchrl.envs.transforms.rnd.RunningMeanStd`` becomes a live view of its buffers
    (:class:`TorchRLRunningMeanStdView`), so what an ``RNDTransform`` folds in during
    collection is seen by the loss. Anything else raises ``TypeError`` naming what to
    pass.
    """
    from .running_mean_std import RunningMeanStd, TorchRLRunningMeanStdView

    if isinstance(obj, RunningMeanStd):
        return obj
    cls = type(obj)
    if cls.__name__ == "RunningMeanStd" and cls.__module__.startswith("torchrl."):
        return TorchRLRunningMeanStdView(obj)
    raise TypeError(
        f"{owner}: {name} must be an arrayrl RunningMeanStd "
        "(arrayrl.modules.running_mean_std.RunningMeanStd) or TorchRL's "
        "(torchrl.envs.transforms.rnd.RunningMeanStd, e.g. RNDTransform.obs_rms); got "
        f"{cls.__module__}.{cls.__qualname__}"
    )


def is_torchrl_diffusion_actor(obj: Any) -> bool:
    """Whether ``obj`` is a tensordict module around a ``_DDPMModule``-like network (a
    score network and the ``alphas_cumprod`` buffer): TorchRL's ``DiffusionActor``."""
    inner = getattr(obj, "module", None)
    return (
        any(cls.__module__.split(".")[0] in ("torchrl", "tensordict") for cls in type(obj).__mro__)
        and hasattr(inner, "score_network")
        and hasattr(inner, "alphas_cumprod")
    )


def as_diffusion_actor(obj: Any, name: str = "actor_network", *, owner: str) -> Module:
    """``obj`` as an arrayrl :class:`DiffusionActor`.

    An arrayrl one is returned as it is. TorchRL's ``DiffusionActor`` becomes one whose
    score network is TorchRL's (through :class:`~arrayrl.modules.TorchLayer`: its own
    ``nn.Parameter`` objects, so training it trains TorchRL's module) and whose schedule
    is TorchRL's buffers as they are (float32, also for a ``.double()`` actor), so the
    loss computes TorchRL's numbers. Anything else: ``TypeError``.
    """
    from .diffusion import DDPMSchedule, DiffusionActor

    if isinstance(obj, DiffusionActor):
        return obj
    if is_torchrl_diffusion_actor(obj):
        inner = obj.module
        schedule = DDPMSchedule.from_arrays(inner.betas, inner.alphas, inner.alphas_cumprod)
        return DiffusionActor(
            int(inner.action_dim),
            score_network=inner.score_network,
            in_keys=list(obj.in_keys),
            out_keys=list(obj.out_keys),
            schedule=schedule,
        )
    raise TypeError(
        f"{owner}: {name} must be a diffusion actor (arrayrl.modules.diffusion.DiffusionActor "
        f"or torchrl.modules.DiffusionActor); got {type(obj).__module__}.{type(obj).__name__}"
    )
