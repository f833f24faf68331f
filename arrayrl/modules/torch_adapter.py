"""Native torch networks as arrayrl modules, their parameters as swappable trees.

- :class:`TorchLayer` wraps a ``torch.nn.Module`` as a :class:`~arrayrl.modules.layers.Layer`;
- :class:`TorchDictModule` wraps a ``tensordict.nn.TensorDictModuleBase`` as a dict-level
  :class:`~arrayrl.modules.dict_module.Module`;
- :func:`from_torch` picks the right one.

Both compute with the parameters of the tree passed in (a target network, a
gradient-tracked copy), never silently the module's own: through
``torch.func.functional_call``, or, for a module holding a ``tensordict.nn.TensorDictParams``
(TorchRL's ``MultiAgentMLP``, which ``functional_call`` cannot swap), through
tensordict's own ``TensorDict.to_module`` (:func:`call_with_params`).
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

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call

from arrayrl.backends import Backend, get_backend

from ._params import Params, flatten_params, map_params, unflatten_params
from .adapt import as_diffusion_actor, is_torchrl_diffusion_actor
from .dict_module import Module, NestedKey, as_key_list, read_key
from .layers import Layer

__all__ = [
    "SwapPlan",
    "TorchDictModule",
    "TorchLayer",
    "as_distribution_class",
    "as_distribution_kwargs",
    "call_with_params",
    "from_torch",
    "from_torchrl",
    "swap_plan",
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


@dataclass(frozen=True)
class SwapPlan:
    """How :func:`call_with_params` puts a parameter tree in a module (see
    :func:`swap_plan`).

    Attributes
    ----------
    tensordict_params : bool
        The module holds a ``tensordict.nn.TensorDictParams``: swap with tensordict's
        ``to_module``, not ``torch.func.functional_call``.
    attributes : tuple of (torch.nn.Module, str)
        Sub-modules' plain ``TensorDict`` attributes holding parameters, which their
        ``forward`` puts in place itself (TorchRL's ``MultiAgentMLP(use_td_params=False)``
        keeps them in ``params``): swapped for the call too.
    """

    tensordict_params: bool
    attributes: tuple[tuple[torch.nn.Module, str], ...]


def swap_plan(module: torch.nn.Module) -> SwapPlan:
    """Where ``module`` keeps its parameters besides its registered ``Parameter`` slots."""
    own = {id(param) for param in module.parameters()}
    holders = [sub for sub in module.modules() if _has_base(sub, "TensorDictParams")]
    attributes = []
    for sub in module.modules():
        if sub in holders:  # its own storage: swapped by to_module
            continue
        for attr, value in vars(sub).items():
            if _is_tensordict(value) and not isinstance(value, torch.nn.Module):
                if any(id(leaf) in own for leaf in value.values(True, True)):
                    attributes.append((sub, attr))
    return SwapPlan(tensordict_params=bool(holders), attributes=tuple(attributes))


def _replaced(td: Any, name_of: Mapping[int, str], flat: Mapping[str, Any]) -> Any:
    """A shallow copy of ``td`` whose entries holding one of the module's parameters
    (by identity; a tied parameter at each of its paths) are ``flat``'s tensors."""
    copy = td.clone(False)
    for path, value in td.items(include_nested=True, leaves_only=True):
        name = name_of.get(id(value))
        if name is not None:
            copy.set(path, flat[name])
    return copy


@contextlib.contextmanager
def _swapped_attributes(
    attributes: tuple[tuple[torch.nn.Module, str], ...],
    name_of: Mapping[int, str],
    flat: Mapping[str, Any],
) -> Iterator[None]:
    """The ``TensorDict`` attributes holding parameters replaced for the block."""
    saved = [(sub, attr, getattr(sub, attr)) for sub, attr in attributes]
    try:
        for sub, attr, td in saved:
            setattr(sub, attr, _replaced(td, name_of, flat))
        yield
    finally:
        for sub, attr, td in saved:
            setattr(sub, attr, td)


def call_with_params(
    module: torch.nn.Module,
    flat: Mapping[str, torch.Tensor],
    args: tuple[Any, ...],
    *,
    plan: SwapPlan | None = None,
) -> Any:
    """``module(*args)`` computed with the parameters ``flat`` (dotted names as in
    ``module.named_parameters()`` → tensors) in place of the module's own, which are
    left as they were afterwards.

    ``torch.func.functional_call`` for most modules. A module holding a
    ``TensorDictParams`` (TorchRL's ``MultiAgentMLP`` and anything wrapping one) keeps its
    parameters in a locked ``TensorDict``, which ``functional_call`` cannot swap
    ("Cannot unlock a tensordict that is part of a locked graph"); it runs under
    tensordict's own swap instead: the module's tensors as a ``TensorDict``
    (``TensorDict.from_module``, buffers included), a shallow copy with ``flat``'s
    tensors in place of the parameters, put in the module for the call by
    ``to_module``. Plain ``TensorDict`` attributes holding parameters (``plan``'s
    ``attributes``) are swapped as well. Every path keeps the autograd graph to
    ``flat``'s tensors.

    ``plan`` is :func:`swap_plan`'s for ``module`` (computed if ``None``).
    """
    plan = swap_plan(module) if plan is None else plan
    if not plan.tensordict_params and not plan.attributes:
        return functional_call(module, dict(flat), args)
    name_of = {id(param): name for name, param in module.named_parameters()}
    with _swapped_attributes(plan.attributes, name_of, flat):
        if not plan.tensordict_params:
            return functional_call(module, dict(flat), args)
        from tensordict import TensorDict

        swapped = _replaced(TensorDict.from_module(module, as_module=False), name_of, flat)
        with swapped.to_module(module, preserve_module_state=False):
            return module(*args)


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
        self._plan = swap_plan(module)
        self.params = _module_params(module)

    def apply(self, params: Params, *inputs: Any) -> Any:
        flat = _flat_checked(params, self._names, type(self.module).__name__)
        return call_with_params(self.module, flat, inputs, plan=self._plan)

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


@dataclass(frozen=True)
class _DirectStep:
    """One plain ``TensorDictModule`` of a chain, called without a ``TensorDict``: its
    inner module on the ``in_keys`` tensors (positional), the outputs written to the
    ``out_keys`` (``"_"`` dropped, as tensordict does)."""

    module: Any
    prefix: str
    in_keys: tuple[NestedKey, ...]
    out_keys: tuple[NestedKey, ...]


_CALL_PATH = ("forward", "_call_module", "_write_to_tensordict", "_run_module")


def _inherits_forward(module: Any, name: str) -> bool:
    """Whether ``module`` is a ``tensordict.nn.<name>`` (or a subclass, such as TorchRL's
    ``WorldModelWrapper`` or ``SafeModule``) whose call path (``forward`` and the
    methods it calls) is that class's own."""
    import tensordict.nn

    base = getattr(tensordict.nn, name)
    return isinstance(module, base) and all(
        getattr(type(module), method, None) is getattr(base, method, None) for method in _CALL_PATH
    )


def _plain_tensordict_module(module: Any) -> bool:
    """A ``tensordict.nn.TensorDictModule`` of the plain kind: positional inputs, no
    ``method``, no keyword map, no output remapping, no hooks."""
    return (
        _inherits_forward(module, "TensorDictModule")
        and module.method is None
        and not module.method_kwargs
        and module._kwargs is None
        and list(module.out_keys_source) == list(module.out_keys)
        and isinstance(module.module, torch.nn.Module)
        and not (module._forward_hooks or module._forward_pre_hooks)
    )


def direct_steps(module: Any, prefix: str = "") -> list[_DirectStep] | None:
    """The plain steps of a ``TensorDictModule`` or of a ``TensorDictSequential`` of
    plain ones (nested sequences flattened), or ``None`` when some step needs
    tensordict's own call (a probabilistic module, hooks, remapped keys, selected
    outputs, ``TensorDictParams``)."""
    if _plain_tensordict_module(module):
        keys = tuple(unravel(k) for k in module.in_keys)
        outs = tuple(unravel(k) for k in module.out_keys)
        return [_DirectStep(module.module, f"{prefix}module.", keys, outs)]
    plain_sequence = (
        _inherits_forward(module, "TensorDictSequential")
        and not getattr(module, "partial_tolerant", False)
        and getattr(module, "_selected_out_keys", None) is None
        and not (module._forward_hooks or module._forward_pre_hooks)
    )
    if not plain_sequence:
        return None
    steps: list[_DirectStep] = []
    for index, sub in enumerate(module.module):
        sub_steps = direct_steps(sub, f"{prefix}module.{index}.")
        if sub_steps is None:
            return None
        steps += sub_steps
    return steps


def unravel(key: NestedKey) -> NestedKey:
    """A nested key as tensordict spells it in a sequence (``("a",)`` is ``"a"``)."""
    return key[0] if isinstance(key, tuple) and len(key) == 1 else key


def _run_direct(steps: list[_DirectStep], batch: Any, flat: Mapping[str, Any], owner: str) -> Any:
    """``steps`` in turn on ``batch`` (an ``ArrayDict``), each with its slice of ``flat``."""
    for step in steps:
        args = tuple(_tensor_at(batch, key, owner) for key in step.in_keys)
        cut = len(step.prefix)
        own = {name[cut:]: leaf for name, leaf in flat.items() if name.startswith(step.prefix)}
        out = functional_call(step.module, own, args)
        outs = out if isinstance(out, tuple) else (out,)
        if not all(isinstance(value, torch.Tensor) for value in outs):
            raise _NotTensors  # a dict or TensorDict output: tensordict's own call writes it
        if len(outs) != len(step.out_keys):
            raise RuntimeError(
                f"{owner}: {type(step.module).__name__} returned {len(outs)} tensors for "
                f"out_keys {list(step.out_keys)}"
            )
        for key, value in zip(step.out_keys, outs):
            if key != "_":
                batch.set(key, value)
    return batch


class _NotTensors(Exception):
    """A direct step returned something other than tensors."""


def _tensor_at(batch: Any, key: NestedKey, owner: str) -> torch.Tensor:
    value = read_key(batch, key, owner)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{owner} runs a torch module, but key {key!r} holds a "
            f"{type(value).__module__}.{type(value).__name__}; convert the batch "
            "first (batch.to('torch'))"
        )
    return value


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
    it, and the ``out_keys`` entries are written back into ``batch``. A plain
    ``TensorDictModule``, or a ``TensorDictSequential`` of plain ones
    (:func:`direct_steps`), runs its inner modules on the tensors directly instead (the
    same calls without building ``TensorDict`` s: the numbers are the same, the step is
    cheaper).
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
        self._plan = swap_plan(module)
        self._params = _module_params(module)
        simple = not (self._plan.tensordict_params or self._plan.attributes)
        self._direct = direct_steps(module) if simple else None

    def forward(self, batch: Any, params: Params) -> Any:
        owner = type(self.module).__name__
        flat = _flat_checked(params, self._names, owner)
        if _is_tensordict(batch):
            return call_with_params(self.module, flat, (batch,), plan=self._plan)
        if self._direct is not None:
            try:
                return _run_direct(self._direct, batch, flat, owner)
            except _NotTensors:
                self._direct = None  # from now on tensordict's call, which rewrites all outputs
        view = _tensordict_view(batch, self.in_keys, owner)
        out = call_with_params(self.module, flat, (view,), plan=self._plan)
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


def _last(key: NestedKey) -> str:
    """A key's last part: ``("agents", "loc")`` → ``"loc"``."""
    return key[-1] if isinstance(key, tuple) else key


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
        # a nested dist key names the argument by its last part (tensordict's rule)
        in_keys={_last(arg): key for arg, key in zip(head.dist_keys, head.in_keys)},
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
    :class:`~arrayrl.modules.DistributionalQValueActor` (its support included);
    ``DiffusionActor`` an arrayrl :class:`~arrayrl.modules.DiffusionActor` on its own
    score network and schedule; any other
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
    if is_torchrl_diffusion_actor(obj):
        return as_diffusion_actor(obj, name, owner=owner)
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
