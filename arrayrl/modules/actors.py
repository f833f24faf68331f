"""Actors and critics: ``ProbabilisticActor``, ``Actor``, ``ValueOperator``.

They follow TorchRL 0.14.1's classes of the same names: the same constructor arguments,
default keys, and the same log-prob key (``"<action>_log_prob"``, TorchRL's default since
``composite_lp_aggregate`` turned ``False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arrayrl.backends import backend_of

from ._params import Params
from .adapt import as_module
from .dict_module import DictModule, Module, ModuleWrapper, NestedKey, as_key_list, read_key
from .layers import Layer

__all__ = [
    "Actor",
    "ProbabilisticActor",
    "QValueActor",
    "QValueModule",
    "ValueOperator",
    "as_layer",
]

_INTERACTION_TYPES = ("random", "deterministic", "mode", "mean")


def as_layer(module: Any) -> Layer:
    """``module`` as a :class:`Layer`: arrayrl layers as they are, a ``torch.nn.Module``
    through the torch adapter (its parameters become a swappable tree)."""
    if isinstance(module, Layer):
        return module
    from .torch_adapter import TorchLayer  # imports torch; only reached with a torch module

    return TorchLayer(module)


def _log_prob_key(action_key: NestedKey) -> NestedKey:
    """``"action"`` → ``"action_log_prob"``; nested keys keep their prefix."""
    if isinstance(action_key, tuple):
        return (*action_key[:-1], f"{action_key[-1]}_log_prob")
    return f"{action_key}_log_prob"


class ProbabilisticActor(ModuleWrapper):
    """A policy: ``module`` writes distribution parameters, which become a distribution.

    Parameters
    ----------
    module : Module
        A dict-level module writing the distribution's parameters (e.g. ``loc`` and
        ``scale``), typically ``DictModule(Sequential(MLP(...), NormalParamExtractor()),
        in_keys=["observation"], out_keys=["loc", "scale"])``.
    in_keys : list of keys or mapping
        The keys read as the distribution's arguments; a mapping ``{arg: key}`` renames.
    out_keys : list of keys, default ["action"]
        Where the sample is written.
    distribution_class : type
        A class of :mod:`arrayrl.modules.distributions`.
    distribution_kwargs : dict, optional
        Extra constructor arguments (``low``, ``high``, ...).
    return_log_prob : bool, default False
        Also write the sample's log-probability under ``log_prob_key``.
    default_interaction_type : {"random", "deterministic", "mode", "mean"}
        ``"random"`` samples (and needs ``rng``); the others write the distribution's
        deterministic sample, mode or mean.
    log_prob_key : key, optional
        Default ``"<action key>_log_prob"``, as TorchRL 0.14.1.

    With ``distribution_class=CompositeDistribution`` (``distribution_kwargs`` holding its
    ``distribution_map``) the draw is one sample per head, written under the heads' keys;
    ``out_keys`` lists the heads (``dist_sample_keys``) and ``log_prob_keys`` is
    ``["<head>_log_prob", ...]``, as TorchRL 0.14.1's actor with
    ``composite_lp_aggregate(False)``.
    rng : arrayrl.random.Generator, optional
        The generator used when sampling; may also be passed per call.

    ``load_state_dict`` also reads a TorchRL ``ProbabilisticActor``'s state dict (its
    ``"module.0."`` names are this actor's ``"module."`` ones).
    """

    _foreign_prefixes = (("module.0.", "module."),)

    def __init__(
        self,
        module: Module,
        in_keys: Sequence[NestedKey] | Mapping[str, NestedKey],
        out_keys: Sequence[NestedKey] | None = None,
        *,
        distribution_class: type,
        distribution_kwargs: Mapping[str, Any] | None = None,
        return_log_prob: bool = False,
        default_interaction_type: str = "random",
        log_prob_key: NestedKey | None = None,
        rng: Any = None,
    ) -> None:
        if default_interaction_type not in _INTERACTION_TYPES:
            raise ValueError(
                f"default_interaction_type must be one of {_INTERACTION_TYPES}, "
                f"got {default_interaction_type!r}"
            )
        self.module = as_module(module, "module", owner="ProbabilisticActor")
        if isinstance(in_keys, Mapping):
            self.dist_keys = {arg: key for arg, key in in_keys.items()}
        else:
            self.dist_keys = {_arg_name(key): key for key in as_key_list(in_keys, "in_keys")}
        sample_keys = ["action"] if out_keys is None else out_keys
        self.dist_sample_keys = as_key_list(sample_keys, "out_keys")
        distribution_class, distribution_kwargs = _own_distribution(
            distribution_class, distribution_kwargs or {}
        )
        self.is_composite = bool(getattr(distribution_class, "is_composite", False))
        self._check_sample_keys(log_prob_key)
        self.distribution_class = distribution_class
        self.distribution_kwargs = dict(distribution_kwargs or {})
        self.return_log_prob = return_log_prob
        self.default_interaction_type = default_interaction_type
        if len(self.dist_sample_keys) == 1:
            self._log_prob_key = log_prob_key or _log_prob_key(self.dist_sample_keys[0])
            self.log_prob_keys = [self._log_prob_key]
        else:
            self._log_prob_key = None
            self.log_prob_keys = [_log_prob_key(key) for key in self.dist_sample_keys]
        self.rng = rng
        self.in_keys = list(module.in_keys)
        self.out_keys = [*module.out_keys, *self.dist_sample_keys]
        if return_log_prob:
            self.out_keys.extend(self.log_prob_keys)

    def _check_sample_keys(self, log_prob_key: NestedKey | None) -> None:
        """One sample key, or (composite distributions) one per head and no single
        ``log_prob_key`` (TorchRL's rule with ``composite_lp_aggregate(False)``)."""
        keys = self.dist_sample_keys
        if not self.is_composite and len(keys) != 1:
            raise ValueError(f"out_keys must name one sample key, got {keys}")
        if not keys:
            raise ValueError("out_keys must name at least one sample key")
        if len(keys) > 1 and log_prob_key is not None:
            raise ValueError(
                "a composite actor with several out_keys has one log-prob key per head "
                f"(log_prob_keys); log_prob_key={log_prob_key!r} cannot be used"
            )

    @property
    def log_prob_key(self) -> NestedKey:
        """The log-prob key; with several heads use ``log_prob_keys`` (as TorchRL)."""
        if self._log_prob_key is None:
            raise RuntimeError(
                f"{type(self).__name__}.log_prob_key is undefined with several sample keys "
                f"(log_prob_keys={self.log_prob_keys}); use log_prob_keys"
            )
        return self._log_prob_key

    def get_dist(self, batch: Any, params: Params | None = None) -> Any:
        """Run the parameter network on ``batch`` and build the distribution."""
        params = self.params if params is None else params
        self.module(batch, params["module"])
        return self.build_dist_from_params(batch)

    def build_dist_from_params(self, batch: Any) -> Any:
        """The distribution whose parameters are already in ``batch`` (no network call)."""
        owner = type(self).__name__
        kwargs = {arg: read_key(batch, key, owner) for arg, key in self.dist_keys.items()}
        return self.distribution_class(**kwargs, **self.distribution_kwargs)

    def forward(
        self,
        batch: Any,
        params: Params,
        *,
        rng: Any = None,
        interaction_type: str | None = None,
    ) -> Any:
        dist = self.get_dist(batch, params)
        how = interaction_type or self.default_interaction_type
        action = self._draw(dist, how, rng or self.rng)
        if self.is_composite:
            return self._write_composite(batch, dist, action)
        batch.set(self.dist_sample_keys[0], action)
        if self.return_log_prob:
            batch.set(self.log_prob_key, dist.log_prob(action))
        return batch

    def _write_composite(self, batch: Any, dist: Any, sample: Any) -> Any:
        """Write every head's draw under its key, and with ``return_log_prob`` its
        ``"<head>_log_prob"`` (tensordict's composite ``update``)."""
        entries = [sample]
        if self.return_log_prob:
            entries.append(dist.log_prob(sample))
        for entry in entries:
            for key in entry.keys(include_nested=True, leaves_only=True):
                batch.set(key, entry.get(key))
        return batch

    @staticmethod
    def _draw(dist: Any, how: str, rng: Any) -> Any:
        if how == "random":
            if rng is None:
                raise TypeError(
                    "sampling needs a generator: pass rng=arrayrl.random.make_generator(...) "
                    "to the actor or to the call (arrayrl has no global RNG)"
                )
            return dist.sample(rng=rng)
        if how == "deterministic":
            return dist.deterministic_sample
        return dist.mode if how == "mode" else dist.mean


def _own_distribution(cls: type, kwargs: Mapping[str, Any]) -> tuple[type, dict]:
    """An arrayrl distribution class and its kwargs; TorchRL's / torch's classes (and a
    composite's per-head classes) are mapped to arrayrl's."""
    if getattr(cls, "__module__", "").startswith("arrayrl."):
        return cls, dict(kwargs)
    from .torch_adapter import as_distribution_class, as_distribution_kwargs

    own = as_distribution_class(cls, owner="ProbabilisticActor")
    return own, as_distribution_kwargs(own, kwargs, owner="ProbabilisticActor")


def _arg_name(key: NestedKey) -> str:
    return key[-1] if isinstance(key, tuple) else key


class Actor(DictModule):
    """A deterministic policy: ``module`` maps ``in_keys`` (default ``["observation"]``)
    to ``out_keys`` (default ``["action"]``). ``module`` is a :class:`Layer` or a
    ``torch.nn.Module``."""

    def __init__(
        self,
        module: Any,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(
            as_layer(module),
            in_keys=["observation"] if in_keys is None else in_keys,
            out_keys=["action"] if out_keys is None else out_keys,
        )


class ValueOperator(DictModule):
    """A critic: ``module`` maps ``in_keys`` (default ``["observation"]``) to
    ``"state_value"``, or to ``"state_action_value"`` when ``"action"`` is an input, as
    TorchRL's ``ValueOperator``."""

    def __init__(
        self,
        module: Any,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
    ) -> None:
        in_keys = ["observation"] if in_keys is None else as_key_list(in_keys, "in_keys")
        if out_keys is None:
            out_keys = ["state_action_value"] if "action" in in_keys else ["state_value"]
        super().__init__(as_layer(module), in_keys=in_keys, out_keys=out_keys)


#: Accepted spellings of the action spaces, as TorchRL's ``ACTION_SPACE_MAP``.
_ACTION_SPACES = {
    "one_hot": "one_hot",
    "one-hot": "one_hot",
    "mult_one_hot": "mult_one_hot",
    "mult-one-hot": "mult_one_hot",
    "multi_one_hot": "mult_one_hot",
    "multi-one-hot": "mult_one_hot",
    "categorical": "categorical",
    "binary": "binary",
    "multi_categorical": "multi_categorical",
    "multi-categorical": "multi_categorical",
    "multi_discrete": "multi_categorical",
    "multi-discrete": "multi_categorical",
}
#: TorchRL spec classes, by name (no TorchRL import), and the action space they mean.
_SPEC_CLASSES = {
    "OneHot": "one_hot",
    "MultiOneHot": "mult_one_hot",
    "Categorical": "categorical",
    "Binary": "binary",
    "MultiCategorical": "multi_categorical",
}
_SUPPORTED_SPACES = ("one_hot", "mult_one_hot", "categorical")


def _action_space(action_space: str | None, spec: Any) -> str:
    """The canonical action space from ``action_space`` or a TorchRL ``spec``."""
    from_spec = None
    if spec is not None:
        from_spec = _SPEC_CLASSES.get(type(spec).__name__)
        if from_spec is None:
            raise ValueError(
                f"cannot infer the action space from spec {type(spec).__name__}; expected one "
                f"of {sorted(_SPEC_CLASSES)} (or pass action_space=)"
            )
    if action_space is None:
        if from_spec is None:
            raise ValueError(
                "Neither action_space nor spec was given; pass action_space='one-hot' or "
                "'categorical' (as TorchRL, the action space is not guessed)"
            )
        return from_spec
    space = _ACTION_SPACES.get(action_space) if isinstance(action_space, str) else None
    if space is None:
        raise ValueError(
            f"unknown action_space {action_space!r}; expected one of {sorted(_ACTION_SPACES)}"
        )
    if from_spec is not None and from_spec != space:
        raise ValueError(f"action_space={action_space!r} does not match spec {type(spec).__name__}")
    return space


def _masked(values: Any, mask: Any, xp: Any) -> Any:
    """``values`` with masked-out actions set to the dtype's lowest finite value."""
    lowest = xp.full_like(values, xp.finfo(values.dtype).min)
    return xp.where(mask, values, lowest)


def _greedy_hot(values: Any, xp: Any) -> Any:
    """Boolean one-hot of the first maximum along the last axis."""
    best = xp.argmax(values, axis=-1, keepdims=True)
    return best == xp.arange(values.shape[-1], device=best.device)


def _split_last(values: Any, sizes: Sequence[int], xp: Any) -> list[Any]:
    """``values`` cut along its last axis into pieces of ``sizes``."""
    if sum(sizes) != values.shape[-1]:
        raise ValueError(f"var_nums {list(sizes)} do not add up to {values.shape[-1]} actions")
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return [values[..., s : s + n] for s, n in zip(starts, sizes)]


class QValueModule(Module):
    """Greedy actions from action values (TorchRL's ``QValueModule``); no parameters.

    Reads ``action_value_key`` (default ``"action_value"``) and, if given,
    ``action_mask_key``; writes ``out_keys`` = ``[action, action_value,
    chosen_action_value]``:

    - the action: ``"one-hot"`` an int64 one-hot of the argmax, ``"categorical"`` its
      int64 index, ``"mult-one-hot"`` one one-hot per group of ``var_nums`` actions;
    - the action values, with masked-out actions (mask ``False``) replaced by the
      dtype's lowest finite value;
    - the chosen action's value, shape ``(..., 1)`` (for ``"mult-one-hot"`` the sum of
      the groups' chosen values).

    Ties go to the first maximum: TorchRL's one-hot marks every tied maximum instead
    (``value == value.max(-1)``), which is not a one-hot and doubles the chosen value.
    ``"binary"`` and ``"multi-categorical"`` raise, as in TorchRL.
    """

    def __init__(
        self,
        action_space: str | None = None,
        action_value_key: NestedKey | None = None,
        action_mask_key: NestedKey | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        var_nums: int | Sequence[int] | None = None,
        spec: Any = None,
    ) -> None:
        self.action_space = _action_space(action_space, spec)
        if self.action_space not in _SUPPORTED_SPACES:
            raise NotImplementedError(
                f"action_space {self.action_space!r} is not supported (TorchRL 0.14.1 has "
                f"no greedy rule for it either); use one of {_SUPPORTED_SPACES}"
            )
        if self.action_space == "mult_one_hot" and var_nums is None:
            raise ValueError("var_nums must be given for a multi one-hot action space")
        self.var_nums = var_nums
        self.action_value_key = "action_value" if action_value_key is None else action_value_key
        self.action_mask_key = action_mask_key
        self.in_keys = as_key_list(self.action_value_key, "action_value_key")
        if action_mask_key is not None:
            self.in_keys += as_key_list(action_mask_key, "action_mask_key")
        if out_keys is None:
            out_keys = ["action", self.action_value_key, "chosen_action_value"]
        self.out_keys = as_key_list(out_keys, "out_keys")
        if len(self.out_keys) != 3 or self.out_keys[1] != self.action_value_key:
            raise ValueError(
                "out_keys must be [action, action_value, chosen_action_value] with the "
                f"action-value key {self.action_value_key!r} second, got {self.out_keys}"
            )

    @property
    def params(self) -> Params:
        return {}

    @params.setter
    def params(self, tree: Params) -> None:
        if tree:
            raise ValueError(f"QValueModule has no parameters, got {sorted(tree)}")

    def forward(self, batch: Any, params: Params) -> Any:
        owner = type(self).__name__
        values = read_key(batch, self.action_value_key, owner)
        xp = backend_of(values).xp
        if self.action_mask_key is not None:
            values = _masked(values, read_key(batch, self.action_mask_key, owner), xp)
        action, chosen = self.greedy(values, xp=xp)
        for key, value in zip(self.out_keys, (action, values, chosen)):
            batch.set(key, value)
        return batch

    def greedy(self, values: Any, *, xp: Any) -> tuple[Any, Any]:
        """The greedy action and its value (shape ``(..., 1)``) for ``values``."""
        if self.action_space == "mult_one_hot":
            groups = _split_last(values, self._group_sizes(values), xp)
            hot = xp.concat([_greedy_hot(g, xp) for g in groups], axis=-1)
        else:
            hot = _greedy_hot(values, xp)
        chosen = xp.sum(xp.where(hot, values, xp.zeros_like(values)), axis=-1, keepdims=True)
        if self.action_space == "categorical":
            return xp.astype(xp.argmax(values, axis=-1), xp.int64), chosen
        return xp.astype(hot, xp.int64), chosen

    def _group_sizes(self, values: Any) -> list[int]:
        if isinstance(self.var_nums, int):  # torch.split's rule: equal groups of var_nums
            full, rest = divmod(values.shape[-1], self.var_nums)
            return [self.var_nums] * full + ([rest] if rest else [])
        return list(self.var_nums)


class QValueActor(ModuleWrapper):
    """A Q-value policy: ``module`` writes action values, :class:`QValueModule` picks the
    greedy action (TorchRL 0.14.1's ``QValueActor``).

    Parameters
    ----------
    module : Layer, torch.nn.Module or Module
        A layer (arrayrl or torch) is wrapped to read ``in_keys`` and write
        ``action_value_key``; a dict-level module (arrayrl, or a tensordict module) is
        used as is and must write ``action_value_key``.
    in_keys : list of keys, default ["observation"]
        The layer's inputs (ignored for a dict-level module, which has its own).
    spec : TorchRL TensorSpec, optional
        Only used to infer ``action_space`` (``OneHot``, ``Categorical``,
        ``MultiOneHot``); shapes are not checked against it.
    action_space : {"one-hot", "categorical", "mult-one-hot"}, optional
        One of ``action_space`` and ``spec`` is required, as in TorchRL.
    action_value_key, action_key, chosen_action_value_key : key, optional
        Defaults ``"action_value"``, ``"action"``, ``"chosen_action_value"``.
    action_mask_key : key, optional
        A boolean mask of allowed actions (``True`` = allowed), read from the batch.
    var_nums : int or sequence of int, optional
        Group sizes for ``"mult-one-hot"``.

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrl.data import ArrayDict
    >>> from arrayrl.modules import MLP
    >>> actor = QValueActor(MLP(4, 3, [16]), action_space="categorical")
    >>> batch = actor(ArrayDict({"observation": np.ones((5, 4), np.float32)}, [5]))
    >>> batch["action"].shape, batch["chosen_action_value"].shape
    ((5,), (5, 1))
    """

    def __init__(
        self,
        module: Any,
        *,
        in_keys: Sequence[NestedKey] | None = None,
        spec: Any = None,
        action_space: str | None = None,
        action_value_key: NestedKey | None = None,
        action_key: NestedKey | None = None,
        chosen_action_value_key: NestedKey | None = None,
        action_mask_key: NestedKey | None = None,
        var_nums: int | Sequence[int] | None = None,
    ) -> None:
        action_value_key = "action_value" if action_value_key is None else action_value_key
        self.module = _action_value_module(module, in_keys, action_value_key)
        chosen_key = chosen_action_value_key or "chosen_action_value"
        self.qvalue = QValueModule(
            action_space,
            action_value_key=action_value_key,
            action_mask_key=action_mask_key,
            out_keys=[action_key or "action", action_value_key, chosen_key],
            var_nums=var_nums,
            spec=spec,
        )
        self.action_space = self.qvalue.action_space
        self.action_value_key = action_value_key
        self.action_key, _, self.chosen_action_value_key = self.qvalue.out_keys
        self.action_mask_key = action_mask_key
        self.in_keys = list(self.module.in_keys)
        if action_mask_key is not None and action_mask_key not in self.in_keys:
            self.in_keys.append(action_mask_key)
        extra = [k for k in self.module.out_keys if k not in self.qvalue.out_keys]
        self.out_keys = [*self.qvalue.out_keys, *extra]

    def forward(self, batch: Any, params: Params) -> Any:
        self.module(batch, params["module"])
        return self.qvalue(batch)


def _action_value_module(
    module: Any, in_keys: Sequence[NestedKey] | None, action_value_key: NestedKey
) -> Module:
    """``module`` as a dict-level module that writes ``action_value_key``."""
    if _is_tensordict_module(module):
        from .torch_adapter import TorchDictModule

        module = TorchDictModule(module)
    if isinstance(module, Module):
        if action_value_key not in module.out_keys:
            raise KeyError(
                f"The key {action_value_key!r} is not among the module's out_keys {module.out_keys}"
            )
        return module
    keys = ["observation"] if in_keys is None else in_keys
    return DictModule(as_layer(module), in_keys=keys, out_keys=[action_value_key])


def _is_tensordict_module(obj: Any) -> bool:
    return any(
        cls.__name__ == "TensorDictModuleBase" and cls.__module__.startswith("tensordict")
        for cls in type(obj).__mro__
    )
