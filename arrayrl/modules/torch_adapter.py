"""Native torch networks as arrayrl modules, their parameters as swappable trees.

- :class:`TorchLayer` wraps a ``torch.nn.Module`` as a :class:`~arrayrl.modules.layers.Layer`;
- :class:`TorchDictModule` wraps a ``tensordict.nn.TensorDictModuleBase`` as a dict-level
  :class:`~arrayrl.modules.dict_module.Module`;
- :func:`from_torch` picks the right one.

Both compute with ``torch.func.functional_call``, so the parameters used are the tree
passed in (a target network, a gradient-tracked copy), never silently the module's own.
The tree is nested by the dotted parameter names (``{"0": {"weight": w, "bias": b}}``
for ``"0.weight"``, ``"0.bias"``), as arrayrl's own layers: a TorchRL ``MLP`` and an
arrayrl :class:`~arrayrl.modules.layers.MLP` of the same sizes have trees of the same
names and shapes. The module's own parameters (``torch.nn.Parameter`` leaves) are the
default tree, so ``torch.optim`` on :meth:`parameters` trains the module itself.
Buffers are not part of the tree: the module's own are used.

This is the only arrayrl module besides the torch backend that imports torch at module
level; it is imported lazily, when a torch module is first wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.func import functional_call

from arrayrl.backends import Backend, get_backend

from ._params import Params, flatten_params, map_params, unflatten_params
from .dict_module import Module, NestedKey, as_key_list, read_key
from .layers import Layer

__all__ = [
    "TorchDictModule",
    "TorchLayer",
    "as_distribution_class",
    "as_distribution_kwargs",
    "from_torch",
    "from_torchrl",
]


def _module_params(module: torch.nn.Module) -> Params:
    """The module's own parameters as a nested tree (its ``Parameter`` objects)."""
    return unflatten_params(dict(module.named_parameters()))


def _flat_checked(params: Mapping[str, Any], names: frozenset[str], owner: str) -> dict:
    """``params`` flattened, or ``KeyError`` if its names are not the module's."""
    flat = flatten_params(params)
    if flat.keys() != names:
        missing, unexpected = sorted(names - flat.keys()), sorted(flat.keys() - names)
        raise KeyError(
            f"{owner}: the parameter tree does not match the torch module's parameters "
            f"(missing {missing}, unexpected {unexpected})"
        )
    return flat


def _torch_device(backend: Any, device: Any) -> torch.device:
    """The torch device that ``to(backend, device)`` means, or ``TypeError``."""
    if isinstance(backend, torch.device):
        return backend
    if isinstance(backend, Backend) and backend.name == "torch":
        return backend.device if device is None else torch.device(device)
    if backend == "torch":
        return get_backend("torch", device).device
    if isinstance(backend, str):
        try:
            return torch.device(backend)  # "cpu", "cuda:0", ...
        except RuntimeError:
            pass
    name = backend.name if isinstance(backend, Backend) else backend
    raise TypeError(
        f"a wrapped torch.nn.Module computes with torch and cannot move to {name!r}; "
        "pass 'torch' with a device, or a torch device ('cpu', 'cuda:0')"
    )


def _leaf_to(leaf: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``leaf`` on ``device``: itself if already there, else a new leaf of the same
    ``requires_grad``."""
    if leaf.device == device:
        return leaf
    return leaf.detach().to(device).requires_grad_(leaf.requires_grad)


def _moved_params(module: torch.nn.Module, tree: Params, backend: Any, device: Any) -> Params:
    """Move ``module`` to the device; the tree on that device (the module's own
    parameters again if ``tree`` held them)."""
    target = _torch_device(backend, device)
    own = dict(module.named_parameters())
    is_own = all(own.get(name) is leaf for name, leaf in flatten_params(tree).items())
    module.to(target)
    if is_own:
        return _module_params(module)
    return map_params(lambda leaf: _leaf_to(leaf, target), tree)


class TorchLayer(Layer):
    """A ``torch.nn.Module`` as a :class:`Layer`: ``apply(params, *inputs)`` runs the
    module's forward with the parameters of ``params``.

    Parameters
    ----------
    module : torch.nn.Module
        The network. Its parameters become :attr:`params` (nested by their dotted names);
        its buffers stay its own.

    Examples
    --------
    >>> import torch
    >>> layer = TorchLayer(torch.nn.Linear(3, 2))
    >>> sorted(layer.params)
    ['bias', 'weight']
    >>> zeros = {name: torch.zeros_like(p) for name, p in layer.params.items()}
    >>> layer.apply(zeros, torch.ones(4, 3)).abs().sum().item()
    0.0
    """

    def __init__(self, module: torch.nn.Module) -> None:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"TorchLayer wraps a torch.nn.Module, got {type(module).__name__}")
        super().__init__()
        self.module = module
        self._names = frozenset(name for name, _ in module.named_parameters())
        self.params = _module_params(module)

    def apply(self, params: Params, *inputs: Any) -> Any:
        flat = _flat_checked(params, self._names, type(self.module).__name__)
        return functional_call(self.module, flat, inputs)

    def to(self, backend: str | Backend | torch.device, device: Any = None) -> TorchLayer:
        """Move the module and the tree to a torch device (``to("torch", "cuda")``,
        ``to("cuda")``); ``TypeError`` for other backends. Returns ``self``."""
        self.params = _moved_params(self.module, self.params, backend, device)
        return self

    def __repr__(self) -> str:
        return f"TorchLayer({self.module!r})"


def _tensordict_view(batch: Any, in_keys: list[NestedKey], owner: str) -> Any:
    """A ``TensorDict`` holding ``batch``'s ``in_keys`` entries (the same tensors)."""
    from tensordict import TensorDict

    from arrayrl.data import ArrayDict

    entries = {}
    for key in in_keys:
        value = read_key(batch, key, owner)
        if isinstance(value, ArrayDict):
            value = value.to_dict()
        elif not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{owner} runs a torch module, but key {key!r} holds a "
                f"{type(value).__module__}.{type(value).__name__}; convert the batch "
                "first (batch.to('torch'))"
            )
        entries[key] = value
    return TensorDict(entries, batch_size=tuple(batch.batch_size))


def _is_tensordict(obj: Any) -> bool:
    return _has_base(obj, "TensorDictBase")


def _is_tensordict_module(obj: Any) -> bool:
    return _has_base(obj, "TensorDictModuleBase")


def _has_base(obj: Any, name: str) -> bool:
    """Whether a class called ``name`` from ``tensordict`` is among ``obj``'s bases."""
    return any(
        cls.__name__ == name and cls.__module__.startswith("tensordict")
        for cls in type(obj).__mro__
    )


class TorchDictModule(Module):
    """A ``tensordict.nn.TensorDictModuleBase`` as a dict-level :class:`Module`.

    Parameters
    ----------
    module : tensordict.nn.TensorDictModuleBase
        E.g. a ``TensorDictModule`` or ``TensorDictSequential``. Its ``in_keys`` and
        ``out_keys`` become this module's; its parameters become :attr:`params`.

    Notes
    -----
    ``module(batch, params=None)`` accepts a ``tensordict.TensorDict`` (the module runs
    on it directly) or an :class:`~arrayrl.data.ArrayDict` of torch tensors: the
    ``in_keys`` entries are put in a ``TensorDict`` without copying, the module runs on
    it, and the ``out_keys`` entries are written back into ``batch``.
    """

    def __init__(self, module: Any) -> None:
        if not _is_tensordict_module(module):
            raise TypeError(
                "TorchDictModule wraps a tensordict.nn.TensorDictModuleBase, got "
                f"{type(module).__name__}"
            )
        self.module = module
        self.in_keys = as_key_list(list(module.in_keys), "in_keys")
        self.out_keys = as_key_list(list(module.out_keys), "out_keys")
        self._names = frozenset(name for name, _ in module.named_parameters())
        self._params = _module_params(module)

    def forward(self, batch: Any, params: Params) -> Any:
        owner = type(self.module).__name__
        flat = _flat_checked(params, self._names, owner)
        if _is_tensordict(batch):
            return functional_call(self.module, flat, (batch,))
        out = functional_call(self.module, flat, (_tensordict_view(batch, self.in_keys, owner),))
        for key in self.out_keys:
            batch.set(key, out.get(key))
        return batch

    def to(self, backend: str | Backend | torch.device, device: Any = None) -> TorchDictModule:
        """Move the module and the tree to a torch device; ``TypeError`` for other
        backends. Returns ``self``."""
        self.params = _moved_params(self.module, self.params, backend, device)
        return self

    def __repr__(self) -> str:
        return f"TorchDictModule({self.module!r})"


def from_torch(obj: Any) -> Layer | Module:
    """The arrayrl adapter for a torch network.

    Parameters
    ----------
    obj : tensordict.nn.TensorDictModuleBase or torch.nn.Module
        A TorchRL ``ProbabilisticActor``, ``QValueActor`` or
        ``DistributionalQValueActor`` becomes arrayrl's class of that name
        (:func:`from_torchrl`); any other dict-level tensordict module a
        :class:`TorchDictModule` (keeps its keys); any other ``torch.nn.Module`` a
        :class:`TorchLayer` (array in, array out; give it keys with ``ValueOperator``,
        ``Actor`` or ``DictModule``).

    Returns
    -------
    TorchLayer, TorchDictModule, ProbabilisticActor, QValueActor or
    DistributionalQValueActor
    """
    if _is_tensordict_module(obj):
        return from_torchrl(obj, name="module", owner="from_torch")
    if isinstance(obj, torch.nn.Module):
        return TorchLayer(obj)
    raise TypeError(
        f"from_torch takes a torch.nn.Module or a tensordict module, got {type(obj).__name__}"
    )


# ---------------------------------------------------------------------------------------
# TorchRL's modules and distribution classes
# ---------------------------------------------------------------------------------------
def _distribution_classes() -> dict[str, type]:
    """arrayrl's distribution class for each TorchRL/torch/tensordict class name."""
    from . import distributions as d

    return {
        "TanhNormal": d.TanhNormal,
        "IndependentNormal": d.IndependentNormal,
        "Normal": d.Normal,
        "Delta": d.Delta,
        "TanhDelta": d.TanhDelta,
        "Categorical": d.Categorical,
        "OneHotCategorical": d.OneHotCategorical,
        "MaskedCategorical": d.MaskedCategorical,
        "CompositeDistribution": d.CompositeDistribution,
    }


#: Constructor arguments of torch's distributions that only switch torch's own checks.
_TORCH_ONLY_KWARGS = ("validate_args",)
#: tensordict's ``CompositeDistribution`` arguments that arrayrl's takes.
_COMPOSITE_KWARGS = ("distribution_map", "name_map", "extra_kwargs", "log_prob_key", "entropy_key")


def as_distribution_class(cls: type, *, owner: str) -> type:
    """arrayrl's counterpart of a TorchRL/torch distribution class (arrayrl classes pass).

    Raises ``TypeError`` naming the supported classes for any other class.
    """
    if cls.__module__.startswith("arrayrl."):
        return cls
    table = _distribution_classes()
    known = cls.__module__.split(".")[0] in ("torch", "torchrl", "tensordict")
    if known and cls.__name__ in table:
        return table[cls.__name__]
    raise TypeError(
        f"{owner}: the distribution class {cls.__module__}.{cls.__name__} has no arrayrl "
        f"counterpart; supported: {sorted(table)} (from torchrl.modules, torch.distributions "
        "or tensordict.nn.distributions), or a class of arrayrl.modules.distributions"
    )


def as_distribution_kwargs(cls: type, kwargs: Mapping[str, Any], *, owner: str) -> dict:
    """TorchRL's ``distribution_kwargs`` for arrayrl's class: torch-only switches
    dropped, a composite's ``distribution_map`` mapped class by class."""
    kwargs = {k: v for k, v in kwargs.items() if k not in _TORCH_ONLY_KWARGS}
    if not getattr(cls, "is_composite", False):
        return kwargs
    unknown = sorted(set(kwargs) - set(_COMPOSITE_KWARGS))
    if unknown:
        raise TypeError(
            f"{owner}: CompositeDistribution arguments {unknown} are not supported by "
            f"arrayrl (it takes {list(_COMPOSITE_KWARGS)})"
        )
    heads = kwargs.get("distribution_map", {})
    kwargs["distribution_map"] = {
        head: as_distribution_class(head_cls, owner=owner) for head, head_cls in heads.items()
    }
    return kwargs


def _interaction_name(interaction: Any) -> str:
    """tensordict's ``InteractionType`` member (or a string) as arrayrl's name."""
    value = getattr(interaction, "value", interaction)
    return str(value).lower()


def _probabilistic_actor(actor: Any, owner: str) -> Module:
    """TorchRL's ``ProbabilisticActor`` (any ``ProbabilisticTensorDictSequential``) as
    arrayrl's: its parameter modules run through torch, the distribution is arrayrl's."""
    from tensordict.nn import TensorDictSequential

    from .actors import ProbabilisticActor

    head = actor.module[-1]
    # the same sub-modules at the same positions: parameter names match the actor's own
    params_net = TensorDictSequential(*actor.module[:-1])
    cls = as_distribution_class(head.distribution_class, owner=owner)
    sample_keys = list(head.dist_sample_keys)
    return ProbabilisticActor(
        TorchDictModule(params_net),
        in_keys=dict(zip(head.dist_keys, head.in_keys)),
        out_keys=sample_keys,
        distribution_class=cls,
        distribution_kwargs=as_distribution_kwargs(
            cls, head.distribution_kwargs or {}, owner=owner
        ),
        return_log_prob=bool(head.return_log_prob),
        default_interaction_type=_interaction_name(head.default_interaction_type),
        log_prob_key=head.log_prob_key if len(sample_keys) == 1 else None,
    )


def _greedy_var_nums(greedy: Any) -> Any:
    """A TorchRL greedy module's multi one-hot group sizes: its ``var_nums``, else the
    ``nvec`` of its action spec (TorchRL's ``QValueActor`` does not pass ``var_nums`` on,
    pytorch/rl#1440)."""
    if greedy.var_nums is not None or greedy.action_space != "mult_one_hot":
        return greedy.var_nums
    try:
        nvec = greedy.spec[greedy.out_keys[0]].nvec
    except (KeyError, AttributeError, TypeError):
        return None
    return [int(n) for n in nvec]


def _qvalue_actor(actor: Any) -> Module:
    """TorchRL's ``QValueActor`` (value module, then ``QValueModule``) as arrayrl's, for
    every action space (``"binary"`` included, which TorchRL's module cannot run)."""
    from tensordict.nn import TensorDictSequential

    from .actors import QValueActor

    greedy = actor.module[-1]
    action_key, value_key, chosen_key = greedy.out_keys
    return QValueActor(
        TorchDictModule(TensorDictSequential(*actor.module[:-1])),
        action_space=greedy.action_space,
        action_value_key=value_key,
        action_key=action_key,
        chosen_action_value_key=chosen_key,
        action_mask_key=greedy.action_mask_key,
        var_nums=_greedy_var_nums(greedy),
    )


def _distributional_qvalue_actor(actor: Any) -> Module:
    """TorchRL's ``DistributionalQValueActor`` (value module, its ``DistributionalDQNnet``
    log-softmax, then ``DistributionalQValueModule``) as arrayrl's: the modules before the
    greedy one run through torch (so the log-softmax is theirs), the support is the
    actor's ``support`` buffer."""
    from tensordict.nn import TensorDictSequential

    from .actors import DistributionalQValueActor

    greedy = actor.module[-1]
    _, value_key = greedy.out_keys
    return DistributionalQValueActor(
        TorchDictModule(TensorDictSequential(*actor.module[:-1])),
        support=actor.support,
        var_nums=_greedy_var_nums(greedy),
        action_space=greedy.action_space,
        action_value_key=value_key,
        action_mask_key=greedy.action_mask_key,
        make_log_softmax=False,
    )


def _class_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def from_torchrl(obj: Any, *, name: str, owner: str) -> Module:
    """A TorchRL / tensordict module as the arrayrl module a loss computes with.

    ``ProbabilisticActor`` (and any ``ProbabilisticTensorDictSequential``) becomes an
    arrayrl :class:`~arrayrl.modules.ProbabilisticActor` with the mapped distribution
    class; ``QValueActor`` an arrayrl :class:`~arrayrl.modules.QValueActor`;
    ``DistributionalQValueActor`` an arrayrl
    :class:`~arrayrl.modules.DistributionalQValueActor` (its support included); any other
    ``TensorDictModuleBase`` (``ValueOperator``, ``Actor``, ``SafeModule``,
    ``TensorDictSequential``) a :class:`TorchDictModule`. The parameters stay the
    module's own ``nn.Parameter`` objects. A plain ``torch.nn.Module`` is refused: the
    TorchRL losses that take a network here need one that reads and writes keys.
    """
    names = _class_names(obj)
    if "ProbabilisticTensorDictSequential" in names:
        return _probabilistic_actor(obj, owner)
    if "DistributionalQValueActor" in names and "TensorDictSequential" in names:
        return _distributional_qvalue_actor(obj)
    if "QValueActor" in names and "TensorDictSequential" in names:
        return _qvalue_actor(obj)
    if "ProbabilisticTensorDictModule" in names:
        raise TypeError(
            f"{owner}: {name} is a {type(obj).__name__} without a network; pass the whole "
            "ProbabilisticActor (parameter network + distribution)"
        )
    if _is_tensordict_module(obj):
        return TorchDictModule(obj)
    if isinstance(obj, torch.nn.Module):
        raise TypeError(
            f"{owner}: {name} is a plain torch.nn.Module ({type(obj).__name__}), which "
            "reads no keys; wrap it as TorchRL does, e.g. ValueOperator(module, "
            "in_keys=['observation']) or TensorDictModule(module, in_keys=..., out_keys=...)"
        )
    raise TypeError(
        f"{owner}: {name} of type {type(obj).__module__}.{type(obj).__name__} is not a "
        "module; pass a TorchRL/tensordict module or an arrayrl module"
    )
