r"""Value estimator classes: GAE, TD(0), TD(1), TD(λ) and V-trace on a batch.

An estimator reads a batch laid out as TorchRL's rollouts, ``[*B, T]`` with time last
unless told otherwise: the observations under the value network's ``in_keys`` at the
root and under ``"next"``, ``("next", "reward")``, ``("next", "done")`` and
``("next", "terminated")`` of shape ``[*B, T, 1]``. It calls the value network on the
root and on ``"next"``, runs the functional estimator of
:mod:`arrayrl.objectives.value.functional` (so the Numba, CUDA and autograd scans apply),
and writes ``advantage``, ``value_target`` and the two values into the batch.

Constructor arguments, defaults, accepted keys and the keys written follow
``torchrl.objectives.value`` (TorchRL 0.14.1), with these differences:

- V-trace's :math:`\log\pi` is the log-probability of the action in the batch. TorchRL
  0.14.1 evaluates the log-probability of a fresh (by default deterministic) sample of
  the current policy instead, which is not the V-trace ratio of Espeholt et al. (2018).
- ``shifted=True`` evaluates the root and ``"next"`` inputs in one network call over
  their concatenation along time. It is exact, never drops samples and produces no
  ``"shifted_valid"`` mask of its own; ``shifted_budget`` is therefore validated and
  ignored. A ``"shifted_valid"`` entry already in the batch is honoured as in TorchRL
  (see :meth:`ValueEstimatorBase.forward`).
- ``set_keys``: an unknown name raises ``ValueError`` (TorchRL: ``KeyError``), and
  ``None`` restores the default (TorchRL: ``ValueError``).
- Out-of-range ``gamma``, ``lmbda``, ``rho_thresh`` and ``c_thresh`` fail at
  construction, integer rewards at the call; a missing key raises a ``KeyError`` that
  names the key and the ``set_keys`` field that renames it.
- ``group_key`` is not supported (``NotImplementedError``); ``device``,
  ``deactivate_vmap`` and ``vectorized`` are accepted and have no effect (arrays follow
  the inputs; nothing is vmapped; every backend has one fast scan); ``skip_existing=None``
  means ``False`` (there is no global switch).

References
----------
Schulman et al. (2016), *High-dimensional continuous control using generalized advantage
estimation*, arXiv:1506.02438. Sutton & Barto (2018), *Reinforcement Learning: An
Introduction*, ch. 7 and 12. Espeholt et al. (2018), *IMPALA*, arXiv:1802.01561.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from arrayrl._validation import count, flag
from arrayrl.backends import KERNEL_NAMES, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules._params import map_params
from arrayrl.modules.adapt import as_module

from . import functional as F
from ._inputs import scalar_or_array

__all__ = [
    "GAE",
    "MultiAgentGAE",
    "TD0Estimator",
    "TD1Estimator",
    "TDLambdaEstimator",
    "VTrace",
    "ValueEstimatorBase",
]

NestedKey = str | tuple[str, ...]


########################################################################
# Keys


def _unravel(key: Any, name: str) -> NestedKey:
    """``key`` with nested tuples flattened and a one-element tuple as its string."""
    if isinstance(key, str):
        return key
    if isinstance(key, tuple) and key:
        parts: list[str] = []
        for part in key:
            part = _unravel(part, name)
            parts.extend((part,) if isinstance(part, str) else part)
        return parts[0] if len(parts) == 1 else tuple(parts)
    raise ValueError(f"{name} must be a key (a str or a tuple of str), got {key!r}")


def _next(key: NestedKey) -> tuple[str, ...]:
    """``key`` under the ``"next"`` entry."""
    return ("next", key) if isinstance(key, str) else ("next", *key)


def _select(batch: Any, keys: Sequence[NestedKey], owner: str) -> ArrayDict:
    """A new :class:`ArrayDict` holding ``batch``'s entries at ``keys`` (leaves shared)."""
    entries = {}
    for key in keys:
        value = batch.get(key, None)
        if value is None:
            raise KeyError(f"{owner} reads key {key!r}, which is not in the batch")
        entries[key] = value
    return ArrayDict(entries, tuple(batch.batch_size))


########################################################################
# Small maths helpers


def _frozen(tree: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A parameter tree whose leaves carry no gradient (TorchRL's ``hold_out_net``)."""
    if tree is None:
        return None
    return map_params(lambda leaf: backend_of(leaf).stop_gradient(leaf), tree)


def _standardize(x: Any, eps: float, axis: tuple[int, ...] | None = None) -> Any:
    r"""``(x - mean) / max(std, eps)`` over ``axis`` (all axes by default).

    The standard deviation is the unbiased one, :math:`\sqrt{\sum (x - \bar x)^2 / (n -
    1)}`, as ``torch.Tensor.std`` computes it.
    """
    xp = backend_of(x).xp
    loc = xp.mean(x, axis=axis, keepdims=True)
    scale = xp.clip(xp.std(x, axis=axis, correction=1, keepdims=True), min=eps)
    return (x - loc) / scale


def _masked_standardize(
    x: Any, valid: Any, eps: float, axis: tuple[int, ...] | None = None
) -> Any:
    r"""``(x - mean) / max(std, eps)`` over the entries where ``valid`` is set.

    ``valid`` (batch dims, possibly with trailing unit dims) is broadcast to ``x``. Mean
    and standard deviation are weighted by the mask, with :math:`n = \max(\sum w, 1)`
    and the *biased* deviation :math:`\sqrt{\sum w (x - \bar x)^2 / n}`, as TorchRL's
    masked branch of ``GAE._normalize_advantage``. Every entry of ``x`` is rescaled.
    """
    xp = backend_of(x).xp
    weight = xp.astype(_expand_to(valid, x), x.dtype)
    count = xp.clip(xp.sum(weight, axis=axis, keepdims=True), min=1.0)
    loc = xp.sum(x * weight, axis=axis, keepdims=True) / count
    var = xp.sum((x - loc) ** 2 * weight, axis=axis, keepdims=True) / count
    return (x - loc) / xp.clip(xp.sqrt(var), min=eps)


def _scalar_or_array(name: str, value: Any, low: float, high: float, low_open: bool) -> Any:
    """A hyper-parameter as a checked Python float (any real scalar, 0-d arrays of every
    backend included), or a per-step array kept as is (see
    :func:`~arrayrl.objectives.value._inputs.scalar_or_array`)."""
    return scalar_or_array(name, value, low=low, high=high, low_open=low_open)


########################################################################
# The "shifted_valid" mask

#: The batch entry marking valid steps (TorchRL's name); read, never produced, here.
SHIFTED_VALID = "shifted_valid"


def _as_bool(mask: Any) -> Any:
    """``mask`` as a boolean array (non-zero entries are ``True``)."""
    xp = backend_of(mask).xp
    return mask if mask.dtype == xp.bool else mask != 0


def _expand_to(mask: Any, target: Any) -> Any:
    """Boolean ``mask`` with trailing unit axes added, broadcast to ``target``'s shape."""
    xp = backend_of(mask).xp
    mask = _as_bool(mask)
    while mask.ndim < target.ndim:
        mask = xp.expand_dims(mask, axis=-1)
    return xp.broadcast_to(mask, tuple(target.shape))


def _along(time_dim: int, index: slice) -> tuple[Any, ...]:
    """An index applying ``index`` to axis ``time_dim`` and keeping the others."""
    return (*(slice(None),) * time_dim, index, ...)


def _last_valid(valid: Any, time_dim: int) -> Any:
    """The valid steps followed by an invalid one along ``time_dim``.

    The last step of the axis never counts (TorchRL pads the "next" mask with ``True``):
    the estimators already end every trajectory there.
    """
    xp = backend_of(valid).xp
    valid = _as_bool(valid)
    tail = valid[_along(time_dim, slice(-1, None))]
    following = xp.concat(
        [valid[_along(time_dim, slice(1, None))], xp.ones_like(tail)], axis=time_dim
    )
    return valid & ~following


def _zero_invalid(x: Any, valid: Any) -> Any:
    """``x`` with the entries at invalid steps set to zero (``valid`` broadcast to it)."""
    xp = backend_of(x).xp
    return xp.where(_expand_to(valid, x), x, xp.zeros_like(x))


########################################################################
# Construction-time argument checks


def _reject_key_arguments(**keys: Any) -> None:
    """TorchRL 0.14.1 rejects the old ``*_key`` constructor arguments; so do we."""
    for name, value in keys.items():
        if value is not None:
            field = name.removesuffix("_key")
            raise RuntimeError(
                f"setting {name!r} in the constructor is no longer supported; call "
                f".set_keys({field}={value!r}) instead"
            )


def _positive_int(name: str, value: Any) -> int | None:
    """``None``, or ``value`` as an int >= 1 (:func:`arrayrl._validation.count`)."""
    return None if value is None else count(name, value, minimum=1)


@dataclasses.dataclass(frozen=True)
class _Chunking:
    """How the value network's input is split along ``dim`` (TorchRL's ``value_chunk_*``)."""

    size: int | None = None
    count: int | None = None
    dim: int = 0

    @classmethod
    def from_args(
        cls, size: int | None, count: int | None, alias: int | None, dim: int
    ) -> _Chunking:
        size = _positive_int("value_chunk_size", size)
        count = _positive_int("num_chunks", count)
        alias = _positive_int("num_chunk", alias)
        if alias is not None and count is not None and alias != count:
            raise ValueError("num_chunks and num_chunk (its alias) are set to different values")
        count = alias if count is None else count
        if size is not None and count is not None:
            raise ValueError("give value_chunk_size or num_chunks, not both")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"value_chunk_dim must be an int, got {type(dim).__name__}")
        return cls(size, count, dim)

    def axis(self, ndim: int) -> int:
        """``dim`` as a non-negative batch axis; ``ValueError`` when out of range."""
        if not -ndim <= self.dim < ndim:
            raise ValueError(f"value_chunk_dim={self.dim} is out of range for {ndim} batch dims")
        return self.dim % ndim

    def bounds(self, length: int) -> list[tuple[int, int]]:
        """``(start, stop)`` of each chunk of an axis of ``length`` (``tensor_split``
        sizes for ``num_chunks``: the first ``length % n`` chunks are one longer)."""
        if self.count is not None and min(self.count, length) > 1:
            parts = min(self.count, length)
            q, r = divmod(length, parts)
            starts = [k * q + min(k, r) for k in range(parts + 1)]
            return list(itertools.pairwise(starts))
        if self.size is None or length <= self.size:
            return [(0, length)]
        return [(s, min(s + self.size, length)) for s in range(0, length, self.size)]


def _unsupported_group_key(group_key: Any) -> None:
    if group_key is not None:
        raise NotImplementedError(
            "group_key (standardising within groups) is not supported by arrayrl's "
            "estimators; standardise the advantage yourself, or leave group_key=None"
        )


def _check_kernel(kernel: str) -> str:
    if kernel not in KERNEL_NAMES:
        raise ValueError(f"kernel must be one of {KERNEL_NAMES}, got {kernel!r}")
    return kernel


########################################################################
# Base class


def _key_alias(name: str) -> property:
    """A read-only property returning ``self.tensor_keys.<name>``."""
    return property(lambda self: getattr(self.tensor_keys, name), doc=f"``tensor_keys.{name}``")


class ValueEstimatorBase:
    """Common machinery of the estimators: keys, value-network calls, batch checks.

    Parameters
    ----------
    value_network : Module or None
        A dict-level module (``in_keys``, ``out_keys``, ``module(batch, params=None)``,
        ``params``) that writes the ``value`` key. ``None``: the batch must already
        hold ``value`` and ``("next", value)``; a loss may set ``estimator.value_network``
        later.
    shifted : bool, default False
        Evaluate the root and ``"next"`` inputs in one network call (see the module
        docstring); incompatible with separate ``target_params``.
    differentiable : bool, default False
        If ``False``, the estimate is computed without recording gradients
        (``backend.no_grad()``). Even when ``True``, no gradient reaches the value
        network's (or actor's) parameters, as in TorchRL: the networks are evaluated with
        stopped-gradient parameters and the next-state value is detached.
    skip_existing : bool or None, default None
        ``True``: a value (or next value) already in the batch is used instead of
        calling the network. ``None`` and ``False`` recompute both.
    device, deactivate_vmap
        Accepted for TorchRL compatibility; no effect.
    value_chunk_size, num_chunks, num_chunk, value_chunk_dim
        Split the network's input along batch axis ``value_chunk_dim`` into chunks of
        ``value_chunk_size`` elements, or into ``num_chunks`` (alias ``num_chunk``) parts.
    shifted_budget : int, default 1
        Validated (``>= 1``) and ignored: ``shifted=True`` never drops samples here.
    time_dim : int, optional
        The batch's time axis (default: a dimension named ``"time"``, else the last
        batch dimension); a call's ``time_dim`` overrides it.
    kernel : {"auto", "reference", "numba", "cuda", "jax"}, default "auto"
        Which scan runs the recurrence (arrayrl extension).
    advantage_key, value_target_key, value_key, group_key
        Not supported: the first three raise ``RuntimeError`` (as in TorchRL 0.14.1; use
        :meth:`set_keys`), ``group_key`` raises ``NotImplementedError``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        """The batch keys an estimator reads and writes, and their defaults.

        ``advantage`` and ``value_target`` are written; ``value`` is written by the value
        network (at the root and under ``"next"``); ``reward``, ``done``,
        ``terminated`` are read under ``"next"``; ``steps_to_next_obs`` (optional,
        root) turns ``gamma`` into ``gamma ** steps``; ``sample_log_prob`` is the
        behaviour policy's log-probability (V-trace).
        """

        advantage: NestedKey = "advantage"
        value_target: NestedKey = "value_target"
        value: NestedKey = "state_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        steps_to_next_obs: NestedKey = "steps_to_next_obs"
        sample_log_prob: NestedKey = "action_log_prob"

    def __init__(
        self,
        *,
        value_network: Any,
        shifted: bool = False,
        differentiable: bool = False,
        skip_existing: bool | None = None,
        advantage_key: NestedKey | None = None,
        value_target_key: NestedKey | None = None,
        value_key: NestedKey | None = None,
        device: Any = None,
        deactivate_vmap: bool = False,
        value_chunk_size: int | None = None,
        num_chunks: int | None = None,
        num_chunk: int | None = None,
        value_chunk_dim: int = 0,
        shifted_budget: int = 1,
        time_dim: int | None = None,
        group_key: NestedKey | None = None,
        kernel: str = "auto",
    ) -> None:
        _reject_key_arguments(
            advantage_key=advantage_key, value_target_key=value_target_key, value_key=value_key
        )
        _unsupported_group_key(group_key)
        self.time_dim = time_dim
        self.value_network = value_network
        self.shifted = flag("shifted", shifted)
        self.differentiable = bool(differentiable)
        self.skip_existing = skip_existing
        self.device = device
        self.deactivate_vmap = deactivate_vmap
        self.shifted_budget = _positive_int("shifted_budget", shifted_budget)
        self._chunking = _Chunking.from_args(
            value_chunk_size, num_chunks, num_chunk, value_chunk_dim
        )
        self.kernel = _check_kernel(kernel)
        self._tensor_keys = self.default_keys()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value_network={self.value_network!r})"

    @property
    def value_network(self) -> Any:
        """The value network (``None``: the batch holds the values). A TorchRL /
        tensordict module is adapted on assignment (:func:`arrayrl.modules.as_module`)."""
        return self._value_network

    @value_network.setter
    def value_network(self, network: Any) -> None:
        self._value_network = _adapted(network, "value_network", self)

    # -- keys -----------------------------------------------------------------------
    @classmethod
    def default_keys(cls) -> Any:
        """A fresh ``_AcceptedKeys`` holding the default key names."""
        return cls._AcceptedKeys()

    @property
    def tensor_keys(self) -> Any:
        """The batch keys in use (an ``_AcceptedKeys`` instance)."""
        return self._tensor_keys

    def set_keys(self, **kwargs: NestedKey | None) -> None:
        """Rename batch keys, e.g. ``set_keys(reward=("agents", "reward"))``.

        ``None`` restores a key's default. An unknown name raises ``ValueError``
        listing the accepted ones; a ``value`` key that the value network does not
        write raises ``KeyError``.
        """
        accepted = [f.name for f in dataclasses.fields(self._AcceptedKeys)]
        defaults = self.default_keys()
        updates = {}
        for name, key in kwargs.items():
            if name not in accepted:
                raise ValueError(
                    f"{name!r} is not a key of {type(self).__name__}; accepted names are "
                    f"{accepted}"
                )
            key = getattr(defaults, name) if key is None else _unravel(key, name)
            if name == "value":
                self._check_value_key(key)
            updates[name] = key
        self._tensor_keys = dataclasses.replace(self._tensor_keys, **updates)

    def _check_value_key(self, key: NestedKey) -> None:
        out_keys = getattr(self.value_network, "out_keys", None)
        if out_keys is not None and key not in [_unravel(k, "out_keys") for k in out_keys]:
            raise KeyError(
                f"value key {key!r} is not among the value network's out_keys {out_keys}"
            )

    @property
    def in_keys(self) -> list[NestedKey]:
        """The batch entries read: the network's inputs at the root and under ``"next"``
        (or the values themselves without a network), and the next reward, done,
        terminated."""
        keys = self.tensor_keys
        signals = [_next(keys.reward), _next(keys.done), _next(keys.terminated)]
        if self.value_network is None:
            return [keys.value, *signals, _next(keys.value)]
        net_keys = list(getattr(self.value_network, "in_keys", ()))
        return [*net_keys, *signals, *(_next(k) for k in net_keys)]

    @property
    def out_keys(self) -> list[NestedKey]:
        """The batch entries written by the estimate (besides the values)."""
        return [self.tensor_keys.advantage, self.tensor_keys.value_target]

    # TorchRL's ``<name>_key`` read-only aliases of ``tensor_keys.<name>``
    advantage_key = _key_alias("advantage")
    value_target_key = _key_alias("value_target")
    value_key = _key_alias("value")
    reward_key = _key_alias("reward")
    done_key = _key_alias("done")
    terminated_key = _key_alias("terminated")
    steps_to_next_obs_key = _key_alias("steps_to_next_obs")
    sample_log_prob_key = _key_alias("sample_log_prob")

    # -- calling ----------------------------------------------------------------------
    def __call__(self, batch: Any, **kwargs: Any) -> Any:
        return self.forward(batch, **kwargs)

    def forward(
        self,
        batch: Any,
        *,
        params: Mapping[str, Any] | None = None,
        target_params: Mapping[str, Any] | None = None,
        time_dim: int | None = None,
    ) -> Any:
        """Write the advantage, the value target and the values into ``batch``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            Batch size ``[*B, T]`` (time at ``time_dim``); see the module docstring.
        params : parameter tree, optional
            The value network's parameters (its own by default).
        target_params : parameter tree, optional
            The parameters for the next-state value (``params`` by default).
        time_dim : int, optional
            The time axis of the batch; defaults to the constructor's ``time_dim``, then
            to a dimension named ``"time"``, then to the last batch dimension.

        Returns
        -------
        batch
            The same object, with ``advantage``, ``value_target``, ``value`` and
            ``("next", value)`` set.

        Notes
        -----
        A ``"shifted_valid"`` entry (a boolean mask over the batch dims, possibly with a
        trailing unit dim) is honoured as in TorchRL 0.14.1: the last valid step of each
        run of valid steps ends its trajectory (``done`` set, ``terminated`` cleared, on
        a shallow copy of the batch, so the caller's flags are unchanged), GAE's
        ``average_gae`` standardises over the valid steps only, and the advantage and
        value target are zero at invalid steps.
        """
        self._check_batch(batch)
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        valid = batch.get(SHIFTED_VALID, None)
        with self._grad_mode(reward):
            axis = self._time_dim(batch, time_dim)
            value, next_value = self._values(batch, params, target_params, axis)
            runs = self._end_runs(batch, valid, axis)
            advantage, target = self._advantage_and_target(runs, value, next_value, axis, valid)
        if valid is not None:
            advantage, target = _zero_invalid(advantage, valid), _zero_invalid(target, valid)
            batch.set(SHIFTED_VALID, valid)  # TorchRL writes the mask it used back
        batch.set(self.tensor_keys.advantage, advantage)
        batch.set(self.tensor_keys.value_target, target)
        return batch

    def _advantage_and_target(
        self, batch: Any, value: Any, next_value: Any, time_dim: int, valid: Any
    ) -> tuple[Any, Any]:
        """Hook: the (unmasked) advantage and value target. ``batch`` already has its
        runs ended (:meth:`_end_runs`); ``valid`` is the ``"shifted_valid"`` mask or
        ``None``."""
        raise NotImplementedError

    # -- batch access -----------------------------------------------------------------
    @staticmethod
    def _check_batch(batch: Any) -> None:
        if len(tuple(batch.batch_size)) < 1:
            raise RuntimeError(
                "the batch needs at least one batch dimension (time); got batch_size "
                f"{tuple(batch.batch_size)}"
            )

    def _read(self, batch: Any, key: NestedKey, field: str) -> Any:
        """``batch.get(key)``, or a ``KeyError`` naming the key and its ``set_keys`` field."""
        value = batch.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__} reads key {key!r}, which is not in the batch; "
                f"set_keys({field}=...) renames it"
            )
        return value

    def _read_input(self, batch: Any, key: NestedKey) -> Any:
        """An input of the value network, or a ``KeyError`` naming it."""
        value = batch.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__} reads key {key!r} (an input of the value network, "
                "whose in_keys name it), which is not in the batch"
            )
        return value

    def _done_terminated(self, batch: Any) -> tuple[Any, Any]:
        """The next ``done`` and ``terminated`` flags (``terminated`` defaults to ``done``)."""
        done = self._read(batch, _next(self.tensor_keys.done), "done")
        terminated = batch.get(_next(self.tensor_keys.terminated), None)
        return done, done if terminated is None else terminated

    def _ended_flags(self, batch: Any, valid: Any, time_dim: int) -> tuple[Any, Any]:
        """``done`` and ``terminated`` with the last valid step of each run of ``valid``
        marked done and not terminated (the flags as they are when ``valid`` is
        ``None``)."""
        done, terminated = self._done_terminated(batch)
        if valid is None:
            return done, terminated
        xp = backend_of(done).xp
        last = _last_valid(valid, time_dim)
        done = xp.where(_expand_to(last, done), xp.ones_like(done), done)
        ended = _expand_to(last, terminated)
        return done, xp.where(ended, xp.zeros_like(terminated), terminated)

    def _end_runs(self, batch: Any, valid: Any, time_dim: int) -> Any:
        """``batch`` itself when ``valid`` is ``None``; otherwise a shallow copy whose
        ``done`` / ``terminated`` flags end each run of valid steps (:meth:`_ended_flags`).
        Entries set on the copy do not reach ``batch``."""
        if valid is None:
            return batch
        done, terminated = self._ended_flags(batch, valid, time_dim)
        runs = batch.clone(recurse=False)
        runs.set(_next(self.tensor_keys.done), done)
        runs.set(_next(self.tensor_keys.terminated), terminated)
        return runs

    def _discount(self, batch: Any, reward: Any, gamma: Any) -> Any:
        r"""``gamma``, or :math:`\gamma^{n_t}` with :math:`n_t` the batch's
        ``steps_to_next_obs`` (multi-step returns), shaped as ``reward``."""
        steps = batch.get(self.tensor_keys.steps_to_next_obs, None)
        if steps is None:
            return gamma
        xp = backend_of(reward).xp
        return gamma ** xp.astype(xp.reshape(steps, tuple(reward.shape)), reward.dtype)

    def _grad_mode(self, like: Any) -> contextlib.AbstractContextManager[Any]:
        if self.differentiable:
            return contextlib.nullcontext()
        return backend_of(like).no_grad()

    def _time_dim(self, batch: Any, time_dim: int | None) -> int:
        """The time axis as a non-negative batch dimension."""
        ndim = len(tuple(batch.batch_size))
        if time_dim is None:
            time_dim = self.time_dim
        if time_dim is None:
            names = list(getattr(batch, "names", None) or ())
            return names.index("time") if "time" in names else ndim - 1
        if isinstance(time_dim, bool) or not isinstance(time_dim, int):
            raise TypeError(f"time_dim must be an int, got {type(time_dim).__name__}")
        if not -ndim <= time_dim < ndim:
            raise ValueError(f"time_dim={time_dim} is out of range for {ndim} batch dims")
        return time_dim % ndim

    # -- the value network --------------------------------------------------------------
    def _values(
        self, batch: Any, params: Any, target_params: Any, time_dim: int
    ) -> tuple[Any, Any]:
        """``V(s_t)`` and detached ``V(s'_t)``, written into ``batch``.

        Read from the batch when there is no network (or, with ``skip_existing``, when
        present); computed with stopped-gradient parameters otherwise.
        """
        key = self.tensor_keys.value
        if self.value_network is None:
            return self._read(batch, key, "value"), self._read(batch, _next(key), "value")
        value = batch.get(key, None) if self.skip_existing else None
        next_value = batch.get(_next(key), None) if self.skip_existing else None
        root_params, next_params = self._network_params(params, target_params)
        if value is None and next_value is None and self.shifted:
            value, next_value = self._shifted_values(batch, root_params, next_params, time_dim)
        if value is None:
            value = self._evaluate(self._inputs(batch, nested=False), batch, root_params)
        if next_value is None:
            next_value = self._evaluate(self._inputs(batch, nested=True), batch, next_params)
        batch.set(key, value)
        batch.set(_next(key), next_value)
        return value, backend_of(next_value).stop_gradient(next_value)

    def _network_params(self, params: Any, target_params: Any) -> tuple[Any, Any]:
        own = getattr(self.value_network, "params", None)
        root = _frozen(own if params is None else params)
        return root, root if target_params is None else _frozen(target_params)

    def _inputs(self, batch: Any, nested: bool) -> dict[NestedKey, Any]:
        """The network's inputs at the root, or under ``"next"``.

        Under ``"next"``, NaN entries of a floating input are replaced by the root
        entry (TorchRL's placeholder for absent next observations, ``compact_obs``), and
        an ``"is_init"`` input is or-ed with the root one so that recurrent networks see
        trajectory starts in both streams.
        """
        in_keys = self.value_network.in_keys
        if not nested:
            return {k: self._read_input(batch, k) for k in in_keys}
        inputs = {}
        for k in in_keys:
            inputs[k] = _fill_nan(self._read_input(batch, _next(k)), batch.get(k, None))
        root_init = batch.get("is_init", None)
        if "is_init" in inputs and root_init is not None:
            inputs["is_init"] = inputs["is_init"] | root_init
        return inputs

    def _shifted_values(
        self, batch: Any, params: Any, next_params: Any, time_dim: int
    ) -> tuple[Any, Any]:
        """``V(s_t)`` and ``V(s'_t)`` from one network call over the root and ``"next"``
        inputs concatenated along time (batch ``[..., 2T, ...]``)."""
        if next_params is not params:
            raise ValueError(
                "shifted=True evaluates V(s_t) and V(s'_t) in one call with one parameter "
                "set; it cannot use separate target_params"
            )
        root, nxt = self._inputs(batch, nested=False), self._inputs(batch, nested=True)
        xp = backend_of(*root.values()).xp
        joint = {k: xp.concat([root[k], nxt[k]], axis=time_dim) for k in root}
        size = list(batch.batch_size)
        steps, size[time_dim] = size[time_dim], 2 * size[time_dim]
        values = self._evaluate_shape(joint, tuple(size), params)
        head = (slice(None),) * time_dim
        first, second = slice(0, steps), slice(steps, 2 * steps)
        return values[(*head, first, ...)], values[(*head, second, ...)]

    def _evaluate(self, inputs: dict[NestedKey, Any], batch: Any, params: Any) -> Any:
        return self._evaluate_shape(inputs, tuple(int(d) for d in batch.batch_size), params)

    def _evaluate_shape(
        self, inputs: dict[NestedKey, Any], batch_size: tuple[int, ...], params: Any
    ) -> Any:
        """The network's value for ``inputs``, in chunks if the constructor asked."""
        axis = self._chunking.axis(len(batch_size))
        pieces = self._chunking.bounds(batch_size[axis])
        if len(pieces) == 1:
            return self._call_network(inputs, batch_size, params)
        values = []
        for start, stop in pieces:
            index = (*(slice(None),) * axis, slice(start, stop), ...)
            size = (*batch_size[:axis], stop - start, *batch_size[axis + 1 :])
            part = {k: x[index] for k, x in inputs.items()}
            values.append(self._call_network(part, size, params))
        return backend_of(*values).xp.concat(values, axis=axis)

    def _call_network(
        self, inputs: dict[NestedKey, Any], batch_size: tuple[int, ...], params: Any
    ) -> Any:
        net = self.value_network
        sub = ArrayDict(inputs, batch_size)
        out = net(sub) if params is None else net(sub, params=params)
        value = out.get(self.tensor_keys.value, None)
        if value is None:
            raise KeyError(
                f"the value network did not write {self.tensor_keys.value!r} (its out_keys "
                f"are {getattr(net, 'out_keys', '?')}); set_keys(value=...) names the key"
            )
        return value

    def _next_value(self, batch: Any, target_params: Any) -> Any:
        """``V(s'_t)`` alone, with ``target_params`` (or the network's own)."""
        key = _next(self.tensor_keys.value)
        if self.value_network is None:
            return self._read(batch, key, "value")
        _, params = self._network_params(None, target_params)
        return self._evaluate(self._inputs(batch, nested=True), batch, params)


def _adapted(network: Any, name: str, owner: Any) -> Any:
    """``network`` as an arrayrl module (``None`` stays ``None``)."""
    return None if network is None else as_module(network, name, owner=type(owner).__name__)


def _fill_nan(nxt: Any, root: Any) -> Any:
    """``nxt`` with NaN entries taken from ``root`` (same shape, floating only)."""
    if root is None or tuple(root.shape) != tuple(nxt.shape):
        return nxt
    xp = backend_of(nxt, root).xp
    if not xp.isdtype(nxt.dtype, "real floating"):
        return nxt
    return xp.where(xp.isnan(nxt), root, nxt)


########################################################################
# TD(0), TD(1), TD(λ)


class _TDEstimator(ValueEstimatorBase):
    """TD-family estimators: the advantage is the value target minus :math:`V(s_t)`."""

    #: ``average_rewards`` clamps the reward's standard deviation at this value.
    _reward_eps = 1e-5
    #: Whether :meth:`value_estimate` ends the runs of a ``"shifted_valid"`` mask
    #: (TorchRL 0.14.1: TD(1) and TD(λ) do, TD(0) does not).
    _estimate_ends_runs = True

    def __init__(self, *, average_rewards: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.average_rewards = average_rewards

    def _advantage_and_target(
        self, batch: Any, value: Any, next_value: Any, time_dim: int, valid: Any
    ) -> tuple[Any, Any]:
        target = self._value_target(batch, next_value, time_dim, end_runs=False)
        return target - value, target

    def value_estimate(
        self,
        batch: Any,
        target_params: Mapping[str, Any] | None = None,
        next_value: Any = None,
        time_dim: int | None = None,
    ) -> Any:
        """The value target alone (what a Q-learning or actor-critic loss regresses on).

        ``next_value`` is read from the network (with ``target_params`` if given) unless
        passed. With ``average_rewards`` the standardised reward is written back. TD(1)
        and TD(λ) end the runs of a ``"shifted_valid"`` mask as :meth:`forward` does
        (without zeroing the invalid steps); TD(0) ignores it here, as in TorchRL.
        """
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        with self._grad_mode(reward):
            axis = self._time_dim(batch, time_dim)
            if next_value is None:
                next_value = self._next_value(batch, target_params)
            return self._value_target(batch, next_value, axis, self._estimate_ends_runs)

    def _value_target(self, batch: Any, next_value: Any, time_dim: int, end_runs: bool) -> Any:
        """The return; ``end_runs``: end the runs of the batch's ``"shifted_valid"``
        mask (after the standardised reward, if any, is written into ``batch``)."""
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        gamma = self._discount(batch, reward, self.gamma)
        if self.average_rewards:
            reward = _standardize(reward, self._reward_eps)
            batch.set(_next(self.tensor_keys.reward), reward)
        valid = batch.get(SHIFTED_VALID, None) if end_runs else None
        done, terminated = self._ended_flags(batch, valid, time_dim)
        return self._returns(gamma, next_value, reward, done, terminated, time_dim)

    def _returns(
        self, gamma: Any, next_value: Any, reward: Any, done: Any, terminated: Any, time_dim: int
    ) -> Any:
        raise NotImplementedError


class TD0Estimator(_TDEstimator):
    r"""TD(0): the one-step bootstrapped return.

    .. math::

        G_t = r_t + \gamma (1 - \text{terminated}_t) V(s'_t), \qquad A_t = G_t - V(s_t)

    Parameters
    ----------
    gamma : float
        Discount, in ``[0, 1]``.
    value_network : Module or None
    average_rewards : bool, default False
        Standardise the rewards (``(r - mean) / max(std, 1e-5)``, unbiased std) before
        the estimate and write them back into the batch.

    The other arguments are those of :class:`ValueEstimatorBase`. Reference: Sutton &
    Barto (2018), §6.1.
    """

    _estimate_ends_runs = False

    def __init__(self, *, gamma: float | Any, value_network: Any, **kwargs: Any) -> None:
        super().__init__(value_network=value_network, **kwargs)
        self.gamma = _scalar_or_array("gamma", gamma, 0.0, 1.0, low_open=False)

    def _returns(
        self, gamma: Any, next_value: Any, reward: Any, done: Any, terminated: Any, time_dim: int
    ) -> Any:
        return F.td0_return_estimate(gamma, next_value, reward, terminated, kernel=self.kernel)


class TD1Estimator(_TDEstimator):
    r"""TD(1): the discounted return to the end of the trajectory, bootstrapped there.

    .. math::

        G_t = r_t + \gamma \begin{cases} (1 - \text{terminated}_t) V(s'_t) &
        \text{done}_t \text{ or } t = T - 1 \\ G_{t+1} & \text{otherwise}\end{cases},
        \qquad A_t = G_t - V(s_t)

    Parameters
    ----------
    gamma : float
        Discount, in ``[0, 1]``.
    value_network : Module or None
    average_rewards : bool, default False
        As :class:`TD0Estimator`.
    time_dim : int, optional
        The batch's time axis (see :meth:`ValueEstimatorBase.forward`).

    The other arguments are those of :class:`ValueEstimatorBase`. Reference: Sutton &
    Barto (2018), §12.1 with λ = 1.
    """

    def __init__(self, *, gamma: float | Any, value_network: Any, **kwargs: Any) -> None:
        super().__init__(value_network=value_network, **kwargs)
        self.gamma = _scalar_or_array("gamma", gamma, 0.0, 1.0, low_open=False)

    def _returns(
        self, gamma: Any, next_value: Any, reward: Any, done: Any, terminated: Any, time_dim: int
    ) -> Any:
        return F.td1_return_estimate(
            gamma, next_value, reward, done, terminated, time_dim=time_dim, kernel=self.kernel
        )


class TDLambdaEstimator(_TDEstimator):
    r"""TD(λ): the λ-return, an exponential mix of the n-step returns.

    .. math::

        G_t = r_t + \gamma \big[(1 - \lambda) \bar V_t + \lambda \tilde G_{t+1}\big],
        \quad \tilde G_{t+1} = \begin{cases} \bar V_t & \text{done}_t \text{ or }
        t = T - 1 \\ G_{t+1} & \text{otherwise} \end{cases}, \qquad A_t = G_t - V(s_t)

    with :math:`\bar V_t = (1 - \text{terminated}_t) V(s'_t)`.

    Parameters
    ----------
    gamma, lmbda : float
        Discount and λ, in ``[0, 1]``.
    value_network : Module or None
    average_rewards : bool, default False
        As :class:`TD0Estimator`, with the std clamped at ``1e-4`` (TorchRL's value for
        this class).
    vectorized : bool, default True
        Accepted for TorchRL compatibility; no effect.
    time_dim : int, optional
        The batch's time axis.

    The other arguments are those of :class:`ValueEstimatorBase`. Reference: Sutton &
    Barto (2018), §12.1.
    """

    _reward_eps = 1e-4

    def __init__(
        self,
        *,
        gamma: float | Any,
        lmbda: float | Any,
        value_network: Any,
        vectorized: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(value_network=value_network, **kwargs)
        self.gamma = _scalar_or_array("gamma", gamma, 0.0, 1.0, low_open=False)
        self.lmbda = _scalar_or_array("lmbda", lmbda, 0.0, 1.0, low_open=False)
        self.vectorized = vectorized

    def _returns(
        self, gamma: Any, next_value: Any, reward: Any, done: Any, terminated: Any, time_dim: int
    ) -> Any:
        return F.td_lambda_return_estimate(
            gamma, self.lmbda, next_value, reward, done, terminated,
            time_dim=time_dim, kernel=self.kernel,
        )


########################################################################
# GAE


class GAE(ValueEstimatorBase):
    r"""Generalized advantage estimate (Schulman et al., 2016, arXiv:1506.02438).

    .. math::

        \delta_t &= r_t + \gamma (1 - \text{terminated}_t) V(s'_t) - V(s_t) \\
        A_t &= \delta_t + \gamma \lambda (1 - \text{done}_t) A_{t+1}, \qquad A_T = 0 \\
        G_t &= A_t + V(s_t)

    Parameters
    ----------
    gamma, lmbda : float
        Discount and λ, in ``[0, 1]``.
    value_network : Module or None
        ``None``: ``value`` and ``("next", value)`` must be in the batch.
    average_gae : bool, default False
        Standardise the advantage: ``(A - mean) / max(std, 1e-4)`` over the whole batch,
        with the unbiased std (TorchRL's formula). The value target is not affected.
    vectorized : bool, optional
        Accepted for TorchRL compatibility; no effect.
    time_dim : int, optional
        The batch's time axis.
    auto_reset_env : bool, default False
        The ``"next"`` state after a truncation is the reset state, so bootstrap from
        :math:`V(s_t)` instead: :math:`r_t \leftarrow r_t + \gamma V(s_t)` where
        ``("next", "truncated")`` is set, and ``terminated`` is taken to be ``done``.

    The other arguments are those of :class:`ValueEstimatorBase`.
    """

    def __init__(
        self,
        *,
        gamma: float | Any,
        lmbda: float | Any,
        value_network: Any,
        average_gae: bool = False,
        vectorized: bool | None = None,
        auto_reset_env: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(value_network=value_network, **kwargs)
        self.gamma = _scalar_or_array("gamma", gamma, 0.0, 1.0, low_open=False)
        self.lmbda = _scalar_or_array("lmbda", lmbda, 0.0, 1.0, low_open=False)
        self.average_gae = average_gae
        self.vectorized = vectorized
        self.auto_reset_env = auto_reset_env

    def _advantage_and_target(
        self, batch: Any, value: Any, next_value: Any, time_dim: int, valid: Any
    ) -> tuple[Any, Any]:
        advantage, target = self._gae(batch, value, next_value, time_dim, self.auto_reset_env)
        if self.average_gae:
            advantage = self._normalize_advantage(advantage, valid)
        return advantage, target

    def _gae(
        self, batch: Any, value: Any, next_value: Any, time_dim: int, auto_reset: bool
    ) -> tuple[Any, Any]:
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        gamma = self._discount(batch, reward, self.gamma)
        done, terminated = self._done_terminated(batch)
        reward, done, terminated = self._prepare_signals(reward, done, terminated, value)
        if auto_reset:
            reward, terminated = self._bootstrap_truncated(batch, reward, gamma, value), done
        return F.generalized_advantage_estimate(
            gamma, self.lmbda, value, next_value, reward, done, terminated,
            time_dim=time_dim, kernel=self.kernel,
        )

    def _bootstrap_truncated(self, batch: Any, reward: Any, gamma: Any, value: Any) -> Any:
        r""":math:`r_t + \gamma V(s_t)` where ``("next", "truncated")`` is set."""
        truncated = batch.get(("next", "truncated"), None)
        if truncated is None:
            raise KeyError(
                f"{type(self).__name__}(auto_reset_env=True) reads key ('next', 'truncated'), "
                "which is not in the batch"
            )
        xp = backend_of(reward).xp
        truncated = self._broadcast_optional(xp.astype(truncated, xp.bool), value)
        return xp.where(truncated, reward + gamma * value, reward)

    def _prepare_signals(
        self, reward: Any, done: Any, terminated: Any, value: Any
    ) -> tuple[Any, Any, Any]:
        """Hook: reshape reward and flags to the value's shape (identity here)."""
        return reward, done, terminated

    def _broadcast_optional(self, flag: Any, value: Any) -> Any:
        """Hook: reshape the ``truncated`` flag like the other signals (identity here)."""
        return flag

    def _normalize_advantage(self, advantage: Any, valid: Any = None) -> Any:
        """``average_gae``: standardise over the whole batch, or over the valid steps of
        a ``"shifted_valid"`` mask (biased std then, as TorchRL)."""
        if valid is None:
            return _standardize(advantage, 1e-4)
        return _masked_standardize(advantage, valid, 1e-4)

    def value_estimate(
        self,
        batch: Any,
        params: Mapping[str, Any] | None = None,
        target_params: Mapping[str, Any] | None = None,
        time_dim: int | None = None,
    ) -> Any:
        """The GAE value target :math:`A_t + V(s_t)` alone (no ``auto_reset_env``, no
        standardisation); the values are written into ``batch``. The runs of a
        ``"shifted_valid"`` mask are ended as in :meth:`forward`; invalid steps are not
        zeroed (TorchRL 0.14.1)."""
        self._check_batch(batch)
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        with self._grad_mode(reward):
            axis = self._time_dim(batch, time_dim)
            value, next_value = self._values(batch, params, target_params, axis)
            runs = self._end_runs(batch, batch.get(SHIFTED_VALID, None), axis)
            return self._gae(runs, value, next_value, axis, auto_reset=False)[1]


class MultiAgentGAE(GAE):
    """GAE for per-agent values with team-shared rewards and flags.

    The value network writes ``[*B, T, n_agents, 1]``; rewards, ``done`` and
    ``terminated`` of shape ``[*B, T, 1]`` are broadcast along ``agent_dim`` (per-agent
    ones pass unchanged). ``average_gae`` standardises each agent separately, over all
    other dimensions.

    Parameters
    ----------
    agent_dim : int, default -2
        The agent axis of the value array.

    The other arguments are those of :class:`GAE`.
    """

    def __init__(self, *, agent_dim: int = -2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.agent_dim = agent_dim

    def _agent_axis(self, value: Any) -> int:
        return self.agent_dim % value.ndim

    def _to_agents(self, x: Any, value: Any) -> Any:
        """``x`` broadcast along the agent axis to ``value``'s shape."""
        if x.ndim == value.ndim:
            return x
        if x.ndim != value.ndim - 1:
            raise ValueError(
                "MultiAgentGAE needs rewards and flags with the value's dims (per agent) or "
                f"one fewer (shared); got shape {tuple(x.shape)} for values of shape "
                f"{tuple(value.shape)}"
            )
        xp = backend_of(x).xp
        return xp.broadcast_to(xp.expand_dims(x, axis=self._agent_axis(value)), value.shape)

    def _prepare_signals(
        self, reward: Any, done: Any, terminated: Any, value: Any
    ) -> tuple[Any, Any, Any]:
        return tuple(self._to_agents(x, value) for x in (reward, done, terminated))

    def _broadcast_optional(self, flag: Any, value: Any) -> Any:
        return self._to_agents(flag, value)

    def _normalize_advantage(self, advantage: Any, valid: Any = None) -> Any:
        """Standardise each agent over all other dims (the valid steps only, with a
        ``"shifted_valid"`` mask)."""
        agent = self._agent_axis(advantage)
        others = tuple(d for d in range(advantage.ndim) if d != agent)
        if valid is None:
            return _standardize(advantage, 1e-4, axis=others)
        return _masked_standardize(advantage, valid, 1e-4, axis=others)


########################################################################
# V-trace


class VTrace(ValueEstimatorBase):
    r"""V-trace off-policy targets and advantages (Espeholt et al., 2018, arXiv:1802.01561).

    With :math:`\rho_t = \pi(a_t|s_t) / \mu(a_t|s_t)`, :math:`\bar\rho_t = \min(\rho_t,
    \bar\rho)` and :math:`\bar c_t = \min(\rho_t, \bar c)`:

    .. math::

        v_t &= V(s_t) + \bar\rho_t \delta_t + \gamma (1 - \text{done}_t) \bar c_t
            (v_{t+1} - V(s_{t+1})) \\
        A_t &= \bar\rho_t \big(r_t + \gamma (1 - \text{terminated}_t) v_{t+1}
            - V(s_t)\big)

    (:math:`v_{t+1}` is :math:`V(s'_t)` at a trajectory's end); see
    :func:`~arrayrl.objectives.value.functional.vtrace_advantage_estimate`.

    :math:`\log\mu` is read from ``sample_log_prob``; :math:`\log\pi` is recomputed by
    ``actor_network.get_dist(batch, params=...)`` at the batch's ``action`` (with
    stopped-gradient actor parameters). TorchRL 0.14.1 instead takes the log-probability
    of a new sample of the policy (its mode by default): a deviation on purpose.

    Parameters
    ----------
    gamma : float
        Discount, in ``[0, 1]``.
    actor_network : object with ``get_dist(batch, params=None)``
        Returns a distribution with ``log_prob(action)``. May be ``None`` at
        construction and set later (``estimator.actor_network = ...``).
    value_network : Module or None
    rho_thresh, c_thresh : float, default 1.0
        :math:`\bar\rho` and :math:`\bar c`, positive.
    average_adv : bool, default False
        Standardise the advantage (``(A - mean) / max(std, 1e-5)``, unbiased std).
    time_dim : int, optional
        The batch's time axis.

    The other arguments are those of :class:`ValueEstimatorBase`.
    """

    @dataclasses.dataclass
    class _AcceptedKeys(ValueEstimatorBase._AcceptedKeys):
        """The base keys, plus ``action``: the action taken, whose :math:`\\log\\pi` the
        actor recomputes."""

        action: NestedKey = "action"

    def __init__(
        self,
        *,
        gamma: float | Any,
        actor_network: Any,
        value_network: Any,
        rho_thresh: float | Any = 1.0,
        c_thresh: float | Any = 1.0,
        average_adv: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(value_network=value_network, **kwargs)
        inf = float("inf")
        self.gamma = _scalar_or_array("gamma", gamma, 0.0, 1.0, low_open=False)
        self.rho_thresh = _scalar_or_array("rho_thresh", rho_thresh, 0.0, inf, low_open=True)
        self.c_thresh = _scalar_or_array("c_thresh", c_thresh, 0.0, inf, low_open=True)
        self.average_adv = average_adv
        self.actor_network = actor_network

    @property
    def actor_network(self) -> Any:
        """The policy whose log π V-trace recomputes (TorchRL's actor is adapted)."""
        return self._actor_network

    @actor_network.setter
    def actor_network(self, network: Any) -> None:
        self._actor_network = _adapted(network, "actor_network", self)

    @property
    def in_keys(self) -> list[NestedKey]:
        return [*super().in_keys, self.tensor_keys.sample_log_prob, self.tensor_keys.action]

    def _advantage_and_target(
        self, batch: Any, value: Any, next_value: Any, time_dim: int, valid: Any
    ) -> tuple[Any, Any]:
        """V-trace; ``average_adv`` standardises over every step, valid or not (as
        TorchRL 0.14.1, whose masked standardisation is GAE's only)."""
        xp = backend_of(value).xp
        shape = tuple(value.shape)
        log_mu = self._read(batch, self.tensor_keys.sample_log_prob, "sample_log_prob")
        log_mu = xp.reshape(log_mu, shape)
        log_pi = xp.reshape(self._log_pi(batch), shape)
        reward = self._read(batch, _next(self.tensor_keys.reward), "reward")
        gamma = self._discount(batch, reward, self.gamma)
        done, terminated = self._done_terminated(batch)
        advantage, target = F.vtrace_advantage_estimate(
            gamma, log_pi, log_mu, value, next_value, reward, done, terminated,
            self.rho_thresh, self.c_thresh, time_dim, kernel=self.kernel,
        )
        if self.average_adv:
            advantage = _standardize(advantage, 1e-5)
        return advantage, target

    def _log_pi(self, batch: Any) -> Any:
        r""":math:`\log\pi(a_t|s_t)` of the batch's actions under the current actor."""
        actor = self.actor_network
        if actor is None:
            raise ValueError(
                "VTrace needs actor_network to recompute log pi(a|s); set "
                "estimator.actor_network"
            )
        inputs = batch
        if getattr(actor, "in_keys", None) is not None:
            inputs = _select(batch, actor.in_keys, "the actor")
        params = _frozen(getattr(actor, "params", None))
        dist = actor.get_dist(inputs) if params is None else actor.get_dist(inputs, params=params)
        return dist.log_prob(self._read(batch, self.tensor_keys.action, "action"))
