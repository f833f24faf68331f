"""Actors and critics: ``ProbabilisticActor``, ``Actor``, ``ValueOperator``, and the
Q-value policies ``QValueActor`` / ``QValueModule`` and their distributional (C51)
counterparts ``DistributionalQValueActor`` / ``DistributionalQValueModule``.

They follow TorchRL 0.14.1's classes of the same names: the same constructor arguments,
default keys, and the same log-prob key (``"<action>_log_prob"``, TorchRL's default since
``composite_lp_aggregate`` turned ``False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arrayrl._validation import flag
from arrayrl.backends import backend_of

from ._params import Params, convert_params, params_backend
from .adapt import as_module
from .dict_module import DictModule, Module, ModuleWrapper, NestedKey, as_key_list, read_key
from .layers import Layer

__all__ = [
    "Actor",
    "DistributionalQValueActor",
    "DistributionalQValueModule",
    "ProbabilisticActor",
    "QValueActor",
    "QValueModule",
    "ValueOperator",
    "action_value_at",
    "as_layer",
    "canonical_action_space",
    "expected_action_values",
    "greedy_action",
    "log_softmax_atoms",
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
#: The action spaces with a greedy rule (TorchRL 0.14.1's minus binary, which it lacks).
_SUPPORTED_SPACES = ("one_hot", "mult_one_hot", "categorical", "binary")


def _action_leaf(spec: Any) -> Any:
    """The action's spec: ``spec`` itself, or a composite's ``"action"`` entry (as
    TorchRL's ``_find_action_space``)."""
    if type(spec).__name__ != "Composite":
        return spec
    if "action" not in spec.keys():
        raise ValueError(
            f"the composite spec has no 'action' entry (its keys are {list(spec.keys())}); "
            "pass the action's own spec, or action_space="
        )
    return spec["action"]


def _action_space(action_space: str | None, spec: Any) -> str:
    """The canonical action space from ``action_space`` or a TorchRL ``spec``."""
    from_spec = None
    if spec is not None:
        spec = _action_leaf(spec)
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


def canonical_action_space(action_space: Any) -> str | None:
    """``action_space`` as its canonical name: a name (``"one-hot"``, ``"categorical"``,
    ...) or a spec, arrayrl's or TorchRL's (a composite is read at ``"action"``);
    ``None`` stays ``None``. ``ValueError`` for an unknown name or spec."""
    if action_space is None:
        return None
    if isinstance(action_space, str):
        return _action_space(action_space, None)
    return _action_space(None, action_space)


def action_value_at(
    values: Any,
    action: Any,
    action_space: str,
    key: Any = "action",
    *,
    batch_shape: Sequence[int] | None = None,
    owner: str = "arrayrl",
) -> Any:
    """``Q(s, a)``: the value of ``action`` in ``values`` (``[*L, *B, n]``), ``[*L, *B]``.

    A ``"categorical"`` action is an integer index (``[*B]`` or ``[*B, 1]``, TorchRL's
    ``gather``); the other spaces (one-hot, multi one-hot, binary) are encodings
    (``[*B, n]``) and give ``Σ_i a_i v_i`` (TorchRL's product and sum). ``B`` is
    ``batch_shape``, by default ``values.shape[:-1]``; the leading axes ``L`` (e.g. an
    ensemble's members) are broadcast. ``ValueError`` naming ``key`` for a shape that
    does not fit, ``TypeError`` for a non-integer index (nothing is broadcast silently).
    """
    xp = backend_of(values).xp
    batch = tuple(values.shape[:-1]) if batch_shape is None else tuple(batch_shape)
    if action_space == "categorical":
        if tuple(action.shape) not in (batch, (*batch, 1)):
            raise ValueError(
                f"{owner}: a categorical action must be an index of shape {batch} (or "
                f"{(*batch, 1)}) for action values of shape {tuple(values.shape)}; the "
                f"categorical action {key!r} has shape {tuple(action.shape)}"
            )
        if not xp.isdtype(action.dtype, "integral"):
            raise TypeError(
                f"{owner}: a categorical action must hold integer indices, not {action.dtype} "
                f"(the action {key!r})"
            )
        from .distributions._base import gather_last

        return gather_last(values, xp.reshape(action, (*batch, 1)), xp)[..., 0]
    expected = (*batch, int(values.shape[-1]))
    if tuple(action.shape) != expected:
        raise ValueError(
            f"{owner}: {key!r}: a {action_space} action must have the action values' shape "
            f"{expected}; this {action_space.replace('_', '-')} action has shape "
            f"{tuple(action.shape)}"
        )
    return xp.sum(values * xp.astype(action, values.dtype), axis=-1)


def _spec_var_nums(spec: Any) -> list[int] | None:
    """The group sizes (``nvec``) of a multi one-hot spec, ``None`` for any other."""
    if spec is None:
        return None
    nvec = getattr(_action_leaf(spec), "nvec", None)
    return None if nvec is None else [int(n) for n in nvec]


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


def _group_sizes(var_nums: int | Sequence[int], n_actions: int) -> list[int]:
    """The multi one-hot groups: ``var_nums`` itself, or (an int) ``torch.split``'s rule
    of equal groups of ``var_nums`` and a smaller last one."""
    if isinstance(var_nums, int):
        full, rest = divmod(n_actions, var_nums)
        return [var_nums] * full + ([rest] if rest else [])
    return list(var_nums)


def greedy_action(
    values: Any, action_space: str, *, var_nums: int | Sequence[int] | None = None, xp: Any
) -> tuple[Any, Any]:
    r"""The greedy action for ``values`` (``[..., n]``) and its value (``[..., 1]``).

    With :math:`v` the action values and :math:`Q(s, a) = \sum_i a_i v_i` for every
    encoding but ``"categorical"`` (the value ``DQNLoss`` regresses):

    - ``"categorical"``: the int64 index :math:`\arg\max_i v_i` (first maximum);
    - ``"one_hot"``: the int64 one-hot of that index;
    - ``"mult_one_hot"``: one one-hot per group of ``var_nums`` actions, concatenated;
    - ``"binary"``: :math:`a_i = 1` iff :math:`v_i > 0` (each bit is an independent
      0/1 choice, so this maximises :math:`\sum_i a_i v_i`; a tie at 0 gives 0).

    The value is :math:`\sum_i a_i v_i` (``v`` at the index for ``"categorical"``).
    """
    if action_space == "binary":
        hot = values > 0
    elif action_space == "mult_one_hot":
        groups = _split_last(values, _group_sizes(var_nums, values.shape[-1]), xp)
        hot = xp.concat([_greedy_hot(g, xp) for g in groups], axis=-1)
    else:
        hot = _greedy_hot(values, xp)
    chosen = xp.sum(xp.where(hot, values, xp.zeros_like(values)), axis=-1, keepdims=True)
    if action_space == "categorical":
        return xp.astype(xp.argmax(values, axis=-1), xp.int64), chosen
    return xp.astype(hot, xp.int64), chosen


class QValueModule(Module):
    """Greedy actions from action values (TorchRL's ``QValueModule``); no parameters.

    Reads ``action_value_key`` (default ``"action_value"``) and, if given,
    ``action_mask_key``; writes ``out_keys`` = ``[action, action_value,
    chosen_action_value]``:

    - the action (:func:`greedy_action`): ``"one-hot"`` an int64 one-hot of the argmax,
      ``"categorical"`` its int64 index, ``"mult-one-hot"`` one one-hot per group of
      ``var_nums`` actions (read from a ``MultiOneHot`` spec's ``nvec`` when not given),
      ``"binary"`` the int64 bits ``a_i = 1`` iff ``v_i > 0``;
    - the action values, with masked-out actions (mask ``False``) replaced by the
      dtype's lowest finite value;
    - the chosen action's value ``Σ_i a_i v_i``, shape ``(..., 1)`` (for
      ``"mult-one-hot"`` the sum of the groups' chosen values, for ``"binary"``
      ``Σ_i max(v_i, 0)`` over the allowed bits).

    Ties go to the first maximum: TorchRL's one-hot marks every tied maximum instead
    (``value == value.max(-1)``), which is not a one-hot and doubles the chosen value.
    ``"binary"`` is arrayrl's: TorchRL 0.14.1's ``QValueModule`` has no rule for it (its
    ``_binary`` raises). ``"multi-categorical"`` raises, as in TorchRL.
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
            var_nums = _spec_var_nums(spec)
            if var_nums is None:
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
        """The greedy action and its value (shape ``(..., 1)``) for ``values``
        (:func:`greedy_action` in this module's action space)."""
        return greedy_action(values, self.action_space, var_nums=self.var_nums, xp=xp)


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
        ``MultiOneHot``, ``Binary``, or a composite with an ``"action"`` entry) and a
        ``MultiOneHot``'s group sizes; shapes are not checked against it.
    action_space : {"one-hot", "categorical", "mult-one-hot", "binary"}, optional
        One of ``action_space`` and ``spec`` is required, as in TorchRL. ``"binary"``
        (``a_i = 1`` iff ``v_i > 0``, see :func:`greedy_action`) is arrayrl's.
    action_value_key, action_key, chosen_action_value_key : key, optional
        Defaults ``"action_value"``, ``"action"``, ``"chosen_action_value"``.
    action_mask_key : key, optional
        A boolean mask of allowed actions (``True`` = allowed), read from the batch.
    var_nums : int or sequence of int, optional
        Group sizes for ``"mult-one-hot"`` (TorchRL's ``QValueActor`` does not take it).

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
        self.var_nums = self.qvalue.var_nums
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


# ---------------------------------------------------------------------------------------
# Distributional (C51) Q-value policies
# ---------------------------------------------------------------------------------------
def _checked_support(support: Any, owner: str) -> Any:
    """``support`` when it is a 1-D array of at least two real numbers; ``TypeError``
    or ``ValueError`` naming it otherwise (no host read: shapes and dtypes only)."""
    if not (hasattr(support, "shape") and hasattr(support, "dtype")):
        raise TypeError(f"{owner}: support must be an array of atoms, got {type(support).__name__}")
    xp = backend_of(support).xp
    if support.ndim != 1 or support.shape[0] < 2:
        raise ValueError(
            f"{owner}: support must be a 1-D array of at least 2 atoms, got shape "
            f"{tuple(support.shape)}"
        )
    if not xp.isdtype(support.dtype, ("real floating", "integral")):
        raise TypeError(f"{owner}: support must hold real numbers, got dtype {support.dtype}")
    return support


def _frozen_support(support: Any, backend: Any, device: Any = None) -> Any:
    """``support`` on ``backend`` as an array that never requires gradients."""
    return convert_params({"s": support}, backend, device, requires_grad=False)["s"]


def expected_action_values(log_probs: Any, support: Any) -> Any:
    r"""The expected return of every action, :math:`Q(s, a) = \sum_i z_i\, p_i(s, a)`.

    ``log_probs`` are log-probabilities over the atoms, laid out as TorchRL's
    ``[..., atoms, actions]``; ``support`` holds the atoms :math:`z_i` (``[atoms]``, cut
    from the graph and cast to ``log_probs``' dtype). Returns ``[..., actions]``.
    """
    backend = backend_of(log_probs)
    xp = backend.xp
    atoms = support.shape[0]
    if log_probs.ndim < 2 or log_probs.shape[-2] != atoms:
        raise ValueError(
            f"the action values must be [..., atoms={atoms}, actions] log-probabilities, "
            f"got shape {tuple(log_probs.shape)}"
        )
    z = xp.astype(backend.stop_gradient(support), log_probs.dtype)
    return xp.sum(xp.exp(log_probs) * z[:, None], axis=-2)


def log_softmax_atoms(logits: Any) -> Any:
    r"""``log softmax`` over the atoms axis (``-2`` of ``[..., atoms, actions]``), as
    TorchRL's ``DistributionalDQNnet``: :math:`l - \log \sum_{\text{atoms}} e^{l}`."""
    backend = backend_of(logits)
    if logits.ndim < 2:
        raise ValueError(
            "a distributional Q network must output [..., atoms, actions], got shape "
            f"{tuple(logits.shape)}"
        )
    return logits - backend.xp.expand_dims(backend.logsumexp(logits, axis=-2), axis=-2)


class DistributionalQValueModule(Module):
    r"""Greedy actions from return distributions (TorchRL's
    ``DistributionalQValueModule``; Bellemare, Dabney & Munos 2017, "A Distributional
    Perspective on Reinforcement Learning", https://arxiv.org/abs/1707.06887).

    Reads ``action_value_key`` (default ``"action_value"``): log-probabilities over the
    atoms of ``support``, ``[..., atoms, actions]`` (TorchRL's layout); writes
    ``out_keys`` = ``[action, action_value]``. The action is greedy on the expected
    returns :math:`Q(s, a) = \sum_i z_i p_i(s, a)` (:func:`expected_action_values`) by
    :func:`greedy_action`'s rule for ``action_space``: ``"binary"`` included, which
    TorchRL refuses, and ``"mult-one-hot"`` with every group on the same support (TorchRL
    pairs the i-th group with the i-th atom of a 1-D support instead).

    ``support`` (the atoms :math:`z`, ``[atoms]``) is the module's parameter tree
    ``{"support": z}``: it never requires gradients (moved with ``requires_grad=False``,
    and cut from the graph where it is read), as TorchRL's buffer.

    ``action_mask_key``: masked-out actions (mask ``False``, ``[..., actions]``) get the
    lowest expected value before the argmax; the log-probabilities are written back
    unchanged. TorchRL's module instead overwrites the masked log-probabilities with the
    lowest float before taking expectations (so a masked action's expected return is 0,
    and a ``[B, actions]`` mask must broadcast against ``[B, atoms, actions]``), and its
    ``DistributionalQValueActor`` with a mask fails (its log-softmax step also reads the
    boolean mask).
    """

    def __init__(
        self,
        action_space: str | None,
        support: Any,
        action_value_key: NestedKey | None = None,
        action_mask_key: NestedKey | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        var_nums: int | Sequence[int] | None = None,
        spec: Any = None,
    ) -> None:
        owner = type(self).__name__
        self.support = _checked_support(support, owner)
        value_key = "action_value" if action_value_key is None else action_value_key
        out_keys = ["action", value_key] if out_keys is None else as_key_list(out_keys, "out_keys")
        if len(out_keys) != 2 or out_keys[1] != value_key:
            raise ValueError(
                f"out_keys must be [action, action_value] with the action-value key "
                f"{value_key!r} second, got {out_keys}"
            )
        self._greedy = QValueModule(
            action_space,
            action_value_key=value_key,
            action_mask_key=action_mask_key,
            out_keys=[out_keys[0], value_key, "chosen_action_value"],
            var_nums=var_nums,
            spec=spec,
        )
        self.action_space, self.var_nums = self._greedy.action_space, self._greedy.var_nums
        self.action_value_key, self.action_mask_key = value_key, action_mask_key
        self.in_keys = list(self._greedy.in_keys)
        self.out_keys = list(out_keys)

    @property
    def params(self) -> Params:
        return {"support": self.support}

    @params.setter
    def params(self, tree: Params) -> None:
        self.support = _checked_support(tree["support"], type(self).__name__)

    def to(self, backend: Any, device: Any = None) -> DistributionalQValueModule:
        self.support = _frozen_support(self.support, backend, device)
        return self

    def forward(self, batch: Any, params: Params) -> Any:
        owner = type(self).__name__
        log_probs = read_key(batch, self.action_value_key, owner)
        values = expected_action_values(log_probs, params["support"])
        xp = backend_of(values).xp
        if self.action_mask_key is not None:
            values = _masked(values, read_key(batch, self.action_mask_key, owner), xp)
        action, _ = self._greedy.greedy(values, xp=xp)
        batch.set(self.out_keys[0], action)
        return batch


class DistributionalQValueActor(ModuleWrapper):
    """A distributional (C51) Q-value policy (TorchRL 0.14.1's
    ``DistributionalQValueActor``): ``module`` writes per-action logits over the atoms,
    ``[..., atoms, actions]``; they become log-probabilities (log-softmax over the atoms,
    ``make_log_softmax``) and :class:`DistributionalQValueModule` picks the action with
    the largest expected return.

    Parameters
    ----------
    module : Layer, torch.nn.Module or Module
        As :class:`QValueActor`'s ``module``; its output must be ``[..., atoms,
        actions]`` (reshape a flat output, e.g. a TorchRL ``MLP(out_features=(atoms,
        actions))``).
    support : array
        The atoms ``z`` (``[atoms]``, at least two). Together with the network's
        parameters it forms the parameter tree ``{"module": ..., "support": z}``
        (``value_network_params["support"]`` in a loss, as TorchRL's buffer); it never
        receives gradients (moved with ``requires_grad=False`` and cut from the graph
        where it is read) and moves with the actor.
    in_keys : list of keys, default ["observation"]
    spec : TorchRL TensorSpec, optional
        Only used to infer ``action_space`` (and a ``MultiOneHot``'s group sizes).
    safe : bool, default False
        TorchRL's projection onto the spec; ``True`` raises ``NotImplementedError``.
    var_nums : int or sequence of int, optional
        Group sizes for ``"mult-one-hot"``.
    action_space : {"one-hot", "categorical", "mult-one-hot", "binary"}, optional
    action_value_key : key, default "action_value"
    action_mask_key : key, optional
    make_log_softmax : bool, default True
        Apply the log-softmax over the atoms to ``module``'s output (``False`` when the
        module already writes log-probabilities).

    The greedy action is written under ``"action"``, the log-probabilities under
    ``action_value_key`` (out_keys ``["action", action_value_key]``, as TorchRL).
    """

    def __init__(
        self,
        module: Any,
        support: Any,
        in_keys: Sequence[NestedKey] | None = None,
        spec: Any = None,
        safe: bool = False,
        var_nums: int | Sequence[int] | None = None,
        action_space: str | None = None,
        action_value_key: NestedKey = "action_value",
        action_mask_key: NestedKey | None = None,
        make_log_softmax: bool = True,
    ) -> None:
        if flag("safe", safe):
            raise NotImplementedError(
                "DistributionalQValueActor(safe=True): arrayrl does not project actions onto "
                "a spec; pass safe=False"
            )
        self.module = _action_value_module(module, in_keys, action_value_key)
        self.make_log_softmax = flag("make_log_softmax", make_log_softmax)
        owner = type(self).__name__
        support = _checked_support(support, owner)
        backend = params_backend(self.module.params)
        if backend is not None and backend_of(support) != backend:
            support = _frozen_support(support, backend)
        self.qvalue = DistributionalQValueModule(
            action_space,
            support,
            action_value_key=action_value_key,
            action_mask_key=action_mask_key,
            var_nums=var_nums,
            spec=spec,
        )
        self.action_space, self.var_nums = self.qvalue.action_space, self.qvalue.var_nums
        self.action_value_key, self.action_mask_key = action_value_key, action_mask_key
        self.action_key = self.qvalue.out_keys[0]
        self.in_keys = list(self.module.in_keys)
        if action_mask_key is not None and action_mask_key not in self.in_keys:
            self.in_keys.append(action_mask_key)
        extra = [k for k in self.module.out_keys if k not in self.qvalue.out_keys]
        self.out_keys = [*self.qvalue.out_keys, *extra]

    @property
    def support(self) -> Any:
        """The atoms ``z`` (the ``"support"`` entry of :attr:`params`)."""
        return self.qvalue.support

    @property
    def params(self) -> Params:
        return {"module": self.module.params, "support": self.qvalue.support}

    @params.setter
    def params(self, tree: Params) -> None:
        self.module.params = tree["module"]
        self.qvalue.params = {"support": tree["support"]}

    def to(self, backend: Any, device: Any = None) -> DistributionalQValueActor:
        self.module.to(backend, device)
        self.qvalue.to(backend, device)
        return self

    def forward(self, batch: Any, params: Params) -> Any:
        self.module(batch, params["module"])
        if self.make_log_softmax:
            logits = read_key(batch, self.action_value_key, type(self).__name__)
            batch.set(self.action_value_key, log_softmax_atoms(logits))
        return self.qvalue(batch, {"support": params["support"]})


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
