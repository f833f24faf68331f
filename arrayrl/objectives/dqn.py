"""Deep Q-learning: ``DQNLoss`` and the distributional (C51) ``DistributionalDQNLoss``.

DQN (Mnih et al. 2015, "Human-level control through deep reinforcement learning",
https://doi.org/10.1038/nature14236), with a value network Q_θ, its target copy θ̄ and
a transition ``(s, a, r, s′)``:

- ``y = r + γ (1 − terminated) max_a′ Q_θ̄(s′, a′)`` (TD(0); TD(1) and TD(λ) bootstrap on
  the same greedy value), without gradient;
- double DQN (van Hasselt, Guez & Silver 2016, https://arxiv.org/abs/1509.06461): the
  next action is greedy for the online network, its value read from the target one,
  ``y = r + γ (1 − terminated) Q_θ̄(s′, argmax_a′ Q_θ(s′, a′))``;
- ``loss = d(Q_θ(s, a), y)`` (``d`` = ``loss_function``), and the priority
  ``(Q_θ(s, a) − y)²``.

``Q(s, a)`` is ``Q_θ(s, ·)[a]`` for a categorical action and ``Σ_i a_i Q_θ(s, ·)_i`` for
the other encodings (one-hot, multi one-hot, binary).

C51 (Bellemare, Dabney & Munos 2017, "A Distributional Perspective on Reinforcement
Learning", https://arxiv.org/abs/1707.06887): the network gives, per action, a
distribution ``p(s, a)`` over fixed atoms ``z``; the target distribution is
``p_θ̄(s′, a*)`` with ``a* = argmax_a Σ_i z_i p_θ(s′, a)_i``, moved by the Bellman
operator ``r + γⁿ (1 − terminated) z`` and projected back onto the atoms
(:func:`categorical_projection`); the loss is the cross-entropy
``−Σ_i m_i log p_θ(s, a)_i``, which is also the priority.

Arguments, defaults, keys and outputs follow TorchRL 0.14.1 (``torchrl/objectives/dqn.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from arrayrl._validation import flag, reject_unknown_kwargs
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params
from arrayrl.modules.actors import action_value_at, canonical_action_space

from ._shared import is_bare_network, qvalue_actor_for
from ._soft import next_key
from .common import LossModule
from .td3 import check_common_args, next_state
from .utils import ValueEstimators, distance_loss

__all__ = ["DQNLoss", "DistributionalDQNLoss", "categorical_projection"]

#: the action spaces DQNLoss reads (a categorical index, or an encoding a with Q = Σ a·v)
_DQN_SPACES = ("one_hot", "mult_one_hot", "categorical", "binary")
#: the action spaces C51 reads: one action column per sample
_C51_SPACES = ("one_hot", "categorical")


# =========================================================================================
# the C51 projection
# =========================================================================================
def categorical_projection(probs: Any, rewards: Any, discounts: Any, support: Any) -> Any:
    r"""Project the distribution of ``r + d·Z`` back onto the atoms of ``Z`` (C51).

    With atoms :math:`z_j = v_{\min} + j\,\Delta z` (``support``, :math:`N \ge 2` evenly
    spaced values, :math:`\Delta z = (v_{\max} - v_{\min}) / (N - 1)`) holding the
    probabilities :math:`p_j` (``probs``), a reward :math:`r` and a discount :math:`d`
    (typically :math:`\gamma^n (1 - \text{terminated})`):

    .. math::

        \hat T z_j = \operatorname{clip}(r + d\,z_j,\ v_{\min},\ v_{\max}), \qquad
        b_j = (\hat T z_j - v_{\min}) / \Delta z \in [0, N - 1],

        m_i = \sum_j \max\big(0,\ 1 - |b_j - i|\big)\, p_j .

    This is Bellemare, Dabney & Munos (2017), "A Distributional Perspective on
    Reinforcement Learning" (https://arxiv.org/abs/1707.06887), Algorithm 1: each
    :math:`p_j` is split between the neighbouring atoms :math:`l = \lfloor b_j \rfloor`
    and :math:`u = \lceil b_j \rceil` as :math:`p_j (u - b_j)` and :math:`p_j (b_j - l)`,
    and lands whole on :math:`b_j` when it is an atom (TorchRL's ``l == u`` adjustment):
    the "triangle" weight :math:`\max(0, 1 - |b_j - i|)` is exactly those two shares.

    How. Each :math:`p_j` goes to :math:`l_j = \lfloor b_j \rfloor` with weight
    :math:`1 - f_j` and to :math:`l_j + 1` with weight :math:`f_j = b_j - l_j`: two
    scatter-adds along the atom axis (``Backend.scatter_add``: torch's ``scatter_add``,
    a ``bincount`` on NumPy and CuPy, a compare-and-sum over :math:`N^2` pairs on other
    array-API libraries, which have no scatter). An integer :math:`b_j` has
    :math:`f_j = 0`, so it lands whole on its atom with no special case (TorchRL's
    ``l == u`` adjustment), and :math:`l_j + 1` is clipped to :math:`N - 1`, where its
    weight is 0. Any batch shape, no data-dependent shape, no host synchronisation (the
    support's ends are read as arrays, never as Python floats). :math:`b_j` is computed
    as :math:`(N - 1)(\hat T z_j - v_{\min}) / (v_{\max} - v_{\min})`, clipped to
    :math:`[0, N - 1]`, so that the ends of the support land exactly on :math:`0` and
    :math:`N - 1` (TorchRL's :math:`(v_{\max} - v_{\min}) / \Delta z` can round above
    :math:`N - 1`, and its scatter then writes into index :math:`N`: the next sample's
    first atom, or out of range for the last sample). The result is linear in ``probs``
    and continuous (piecewise linear) in ``rewards`` and ``discounts``, so autograd
    backends differentiate it with respect to all three. NaN inputs give NaN (TorchRL
    raises instead, after a host read).

    Parameters
    ----------
    probs : array, ``[*B, N]``
        Probabilities over the atoms (any batch shape ``B``, floating).
    rewards : array, ``[*B]`` or ``[*B, 1]``
        Real-valued rewards (an integer dtype raises ``TypeError``).
    discounts : array of the same shapes, or a Python number / 0-d array
        The factor of the support (``0`` where the episode terminated).
    support : array, ``[N]``
        The atoms, ascending and evenly spaced (not checked here: this function reads no
        value on the host; the losses check it once at construction).

    Returns
    -------
    array, ``[*B, N]``
        The projected probabilities, in ``probs``' dtype, on its device.
    """
    backend = backend_of(probs=probs, rewards=rewards, support=support)
    xp = backend.xp
    batch = _check_projection_inputs(probs, rewards, support, xp)
    dtype = probs.dtype
    rewards = xp.reshape(xp.astype(rewards, dtype), (*batch, 1))
    discounts = _column(discounts, batch, dtype, backend)
    z = xp.astype(support, dtype)
    low, high = xp.min(z), xp.max(z)
    last = float(z.shape[0] - 1)
    moved = xp.minimum(xp.maximum(rewards + discounts * z, low), high)
    # b = (Tz - v_min) / Δz, written so that v_min and v_max land exactly on 0 and N - 1
    b = xp.clip((moved - low) / (high - low) * last, 0.0, last)  # [*B, N]
    lower = xp.floor(backend.stop_gradient(b))
    upper_share = b - lower  # f_j in [0, 1), differentiable in b
    finite = xp.isfinite(lower)  # a NaN input must not become an index
    index = xp.astype(xp.where(finite, lower, xp.zeros_like(lower)), xp.int64)
    size = z.shape[0]
    below = backend.scatter_add(size, index, probs * (1.0 - upper_share))
    above = backend.scatter_add(size, xp.clip(index + 1, max=size - 1), probs * upper_share)
    poison = 0.0 * xp.sum(upper_share, axis=-1, keepdims=True)  # NaN spreads to the row
    return below + above + poison


def _check_projection_inputs(probs: Any, rewards: Any, support: Any, xp: Any) -> tuple:
    """The batch shape ``B`` of ``probs``; ``TypeError`` / ``ValueError`` naming the
    argument for a bad dtype or shape."""
    if not xp.isdtype(probs.dtype, "real floating"):
        raise TypeError(f"probs must be floating, got dtype {probs.dtype}")
    if not xp.isdtype(rewards.dtype, "real floating"):
        raise TypeError(f"rewards must be floating (got dtype {rewards.dtype}); cast them")
    if support.ndim != 1 or support.shape[0] < 2:
        raise ValueError(f"support must be 1-D with at least 2 atoms, got {tuple(support.shape)}")
    if probs.ndim < 1 or probs.shape[-1] != support.shape[0]:
        raise ValueError(
            f"probs has shape {tuple(probs.shape)}; its last axis must hold the "
            f"{support.shape[0]} atoms of the support"
        )
    batch = tuple(probs.shape[:-1])
    if tuple(rewards.shape) not in (batch, (*batch, 1)):
        raise ValueError(
            f"rewards has shape {tuple(rewards.shape)}, expected {batch} or {(*batch, 1)} "
            f"for probs of shape {tuple(probs.shape)}"
        )
    return batch


def _column(discounts: Any, batch: tuple, dtype: Any, backend: Any) -> Any:
    """``discounts`` as ``[*B, 1]`` of ``dtype`` (a scalar stays a scalar)."""
    xp = backend.xp
    if isinstance(discounts, (int, float)):
        return float(discounts)
    if discounts.ndim == 0:
        return xp.astype(discounts, dtype)
    if tuple(discounts.shape) not in (batch, (*batch, 1)):
        raise ValueError(
            f"discounts has shape {tuple(discounts.shape)}, expected {batch}, {(*batch, 1)} "
            "or a scalar"
        )
    return xp.reshape(xp.astype(discounts, dtype), (*batch, 1))


# =========================================================================================
# shared pieces
# =========================================================================================
def _qvalue_in_keys(loss: Any) -> list[Any]:
    """The keys a Q-learning loss reads: action, next reward / done / terminated, and the
    value network's inputs at the root and under ``"next"`` (in a stable order)."""
    tk = loss.tensor_keys
    net_keys = list(loss.value_network.in_keys)
    keys = [tk.action, next_key(tk.reward), next_key(tk.done), next_key(tk.terminated)]
    return list(dict.fromkeys([*keys, *net_keys, *(next_key(k) for k in net_keys)]))


class _QLearningBase(LossModule):
    """What DQN and C51 share: the network, its target copy, the network calls."""

    def _target(self, params: Mapping[str, Params] | None) -> Params:
        """The target tree: the loss's own copy with ``delay_value``, else the (given or
        own) parameters cut from the graph (TorchRL's detached ``target_*_params``)."""
        if self._owns_target["value_network"]:
            return self._target_params["value_network"]
        return self.detached_params("value_network", params)

    def _run(self, state: ArrayDict, tree: Params) -> ArrayDict:
        """The value network on a shallow copy of ``state`` (its outputs, inputs kept)."""
        return self.value_network(state.clone(recurse=False), tree)

    def _state(self, batch: ArrayDict) -> ArrayDict:
        """The value network's inputs at ``s``."""
        return batch.select(*self.value_network.in_keys, strict=False)

    def _value_at(self, values: Any, action: Any, key: Any) -> Any:
        """``Q(s, a)`` over the last axis of ``values`` (:func:`action_value_at`)."""
        return action_value_at(values, action, self.action_space, key, owner=type(self).__name__)

    def _next_state(self, batch: ArrayDict) -> ArrayDict:
        """The value network's inputs at ``s′`` (TorchRL's ``step_mdp``)."""
        return next_state(batch, list(self.value_network.in_keys), self.tensor_keys.action)

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads."""
        return _qvalue_in_keys(self)


# =========================================================================================
# DQNLoss
# =========================================================================================
class DQNLoss(_QLearningBase):
    """The DQN loss (see the module docstring for the equations).

    Parameters
    ----------
    value_network : QValueActor, Layer or torch.nn.Module
        An arrayrl or TorchRL ``QValueActor`` (or any module writing ``action_value``,
        the greedy ``action`` and ``chosen_action_value``). A bare network (an arrayrl
        layer, a ``torch.nn.Module``) is wrapped in a :class:`~arrayrl.modules.QValueActor`
        reading ``"observation"`` with ``action_space``, as TorchRL does.
    loss_function : {"l2", "l1", "smooth_l1"}, default "l2"
    delay_value : bool, default True
        Keep a target copy θ̄ (else the target uses θ without gradient).
    double_dqn : bool, default False
        Double DQN; requires ``delay_value``.
    gamma : None
        Refused with ``TypeError`` (TorchRL's deprecation): use
        ``make_value_estimator(..., gamma=...)``.
    action_space : str or spec, optional
        ``"one-hot"``, ``"categorical"``, ``"mult-one-hot"`` or ``"binary"`` (or a spec of
        that kind, or a composite with an ``"action"`` entry). Default: the value
        network's ``action_space``; a mismatch with it raises ``ValueError``.
    priority_key : None
        Refused with ``RuntimeError`` (use ``set_keys(priority=...)``).
    reduction : {"mean", "sum", "none"}, default "mean"
    use_prioritized_weights : {"auto", True, False}, default "auto"
        Weight the loss by the batch's ``priority_weight`` entry when present.

    The value estimator is TD(0) (``γ = 0.99``) by default; TD(1) and TD(λ) are
    supported (``make_value_estimator``). The output is ``{"loss"}``; the priority
    ``(Q(s, a) − y)²`` (``[*B, 1]``) is set in the caller's batch under
    ``tensor_keys.priority``, as TorchRL does (a new entry: no array the caller passed is
    written).

    Notes
    -----
    Every action space works, over any batch shape. For ``"binary"`` the greedy action
    is ``a_i = 1`` iff ``v_i > 0`` (:func:`arrayrl.modules.actors.greedy_action`);
    TorchRL 0.14.1's ``QValueModule`` raises for it. TorchRL's ``DQNLoss`` built without
    ``action_space`` from a ``QValueActor`` made with ``action_space=`` fails (it reads the
    actor's spec, which holds no action spec); arrayrl reads the actor's
    ``action_space``.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "chosen_action_value"
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    out_keys: ClassVar[list[str]] = ["loss"]

    def __init__(
        self,
        value_network: Any,
        *,
        loss_function: str | None = "l2",
        delay_value: bool = True,
        double_dqn: bool = False,
        gamma: float | None = None,
        action_space: Any = None,
        priority_key: Any = None,
        reduction: str | None = None,
        use_prioritized_weights: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_kwargs(owner, kwargs)
        check_common_args(owner, gamma, priority_key, loss_function, use_prioritized_weights)
        double_dqn, delay_value = flag("double_dqn", double_dqn), flag("delay_value", delay_value)
        if double_dqn and not delay_value:
            raise ValueError("double_dqn=True requires delay_value=True.")
        super().__init__()
        self.double_dqn, self.delay_value = double_dqn, delay_value
        self.use_prioritized_weights = use_prioritized_weights
        self.loss_function = loss_function
        self.reduction = reduction
        given = canonical_action_space(action_space)
        value_network = qvalue_actor_for(value_network, action_space, owner)
        self.convert_to_functional(value_network, "value_network", create_target_params=delay_value)
        self.action_space = self._resolved_space(given)
        self.value_network_in_keys = list(self.value_network.in_keys)

    def _resolved_space(self, given: str | None) -> str:
        """The loss's action space: the one given, checked against the network's."""
        own = getattr(self.value_network, "action_space", None)
        space = given or own
        if space is None:
            raise ValueError(
                "The action space could not be retrieved from the value_network; pass "
                "action_space= ('one-hot', 'categorical', 'mult-one-hot' or 'binary')"
            )
        if own is not None and given is not None and own != given:
            raise ValueError(
                f"action_space={given!r} does not match the value network's action space {own!r}"
            )
        if space not in _DQN_SPACES:
            raise NotImplementedError(
                f"DQNLoss supports the action spaces {_DQN_SPACES}, got {space!r}"
            )
        return space

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The estimator bootstraps on the network's ``chosen_action_value`` at ``s′``."""
        return {"value_network": self.value_network}

    # -- pieces of the objective --------------------------------------------------------------
    def _action_values(self, state: ArrayDict, tree: Params) -> Any:
        """``Q(s, ·)`` (``[*B, n]``) computed with ``tree``."""
        return self.read(self._run(state, tree), self.tensor_keys.action_value)

    def _double_next_value(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``Q_θ̄(s′, argmax_a′ Q_θ(s′, a′))`` (``[*B, 1]``): the greedy next action of the
        online parameters (cut from the graph), valued by the target ones."""
        state = self._next_state(batch)
        greedy = self._run(state, self.detached_params("value_network", params))
        next_action = self.read(greedy, self.tensor_keys.action)
        values = self._action_values(state, self._target(params))
        return self._value_at(values, next_action, "next action")[..., None]

    def _target_value(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """The regression target ``y`` (``[*B]``), without gradient."""
        backend = backend_of(self.read(batch, next_key(self.tensor_keys.reward)))
        with backend.no_grad():
            next_value = self._double_next_value(batch, params) if self.double_dqn else None
            target = self.value_estimator.value_estimate(
                batch.clone(recurse=False),
                target_params=self._target(params),
                next_value=next_value,
            )
        return backend.stop_gradient(target)[..., 0]

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss = d(Q_θ(s, a), y)`` reduced, and the priority ``(Q_θ(s, a) − y)²``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The value network's inputs, ``tensor_keys.action``, and under ``"next"`` the
            network's inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"value_network": tree}`` to compute with instead of the loss's own
            parameters (pure-function use).

        Returns
        -------
        ArrayDict
            ``loss``, and the priority under ``tensor_keys.priority`` (moved into the
            caller's batch by the call).
        """
        batch = self.working_copy(batch)
        tk = self.tensor_keys
        self.check_batch_backend(batch, tk.action)
        values = self._action_values(
            self._state(batch), self.network_params("value_network", params)
        )
        pred = self._value_at(values, self.read(batch, tk.action), tk.action)
        target = self._target_value(batch, params)
        backend = backend_of(pred)
        td_error = backend.stop_gradient((pred - target) ** 2)[..., None]
        loss = distance_loss(pred, target, self.loss_function)
        loss = self.reduce_loss(loss, batch, weights=self.priority_weight(batch))
        return ArrayDict({"loss": loss, tk.priority: td_error})


# =========================================================================================
# DistributionalDQNLoss
# =========================================================================================
class DistributionalDQNLoss(_QLearningBase):
    """The distributional DQN (C51) loss (see the module docstring for the equations).

    Parameters
    ----------
    value_network : DistributionalQValueActor
        An arrayrl or TorchRL ``DistributionalQValueActor`` (any module with an
        ``action_space`` of ``"one_hot"`` or ``"categorical"`` whose parameter tree holds
        the atoms under ``"support"`` and which writes log-probabilities ``[*B, atoms,
        actions]`` under ``action_value`` and the greedy ``action``). The support must be
        ascending and evenly spaced (checked here, once).
    gamma : float
        The discount (required, in ``[0, 1]``), schedulable: ``loss.gamma = 0.95``.
    delay_value : bool, default True
        Keep a target copy θ̄ (else the target distribution uses θ without gradient).
    priority_key : None
        Refused with ``RuntimeError`` (use ``set_keys(priority=...)``).
    reduction : {"mean", "sum", "none"}, default "mean"
    use_prioritized_weights : {"auto", True, False}, default "auto"

    The batch's ``steps_to_next_obs`` (multi-step returns, ``[*B]`` or ``[*B, 1]``) makes
    the discount ``γⁿ``. Only TD(0) bootstrapping exists, as in TorchRL;
    ``make_value_estimator`` accepts TD(0) without hyper-parameters (the discount is
    ``loss.gamma``; TorchRL silently ignores a ``gamma`` given there).

    The output is ``{"loss"}``; the per-sample cross-entropy (``[*B, 1]``) is set in the
    caller's batch under ``tensor_keys.priority``.

    Notes
    -----
    Where TorchRL 0.14.1 differs (recorded in the conformance deviations): it needs a
    one-dimensional batch (and its error message crashes on a ``__name___`` typo); it
    moves the projection to the CPU and reads the support's ends with ``.item()`` (host
    synchronisations); it builds the projected distribution in torch's default dtype, so
    float64 inputs fail in ``index_add_``. arrayrl takes any batch shape and stays on the
    inputs' device and dtype (:func:`categorical_projection`).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        steps_to_next_obs: Any = "steps_to_next_obs"
        priority_weight: Any = "priority_weight"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0,)
    out_keys: ClassVar[list[str]] = ["loss"]

    def __init__(
        self,
        value_network: Any,
        *,
        gamma: float,
        delay_value: bool = True,
        priority_key: Any = None,
        reduction: str | None = None,
        use_prioritized_weights: str | bool = "auto",
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_kwargs(owner, kwargs)
        check_common_args(owner, None, priority_key, "l2", use_prioritized_weights)
        if is_bare_network(value_network):
            raise TypeError(
                f"{owner} needs a DistributionalQValueActor (it holds the support), got a bare "
                f"{type(value_network).__name__}; wrap it: DistributionalQValueActor(net, "
                "support=..., action_space=...)"
            )
        super().__init__()
        self.register_coeff("gamma", _required_gamma(gamma), _discount_problem)
        self.delay_value = flag("delay_value", delay_value)
        self.use_prioritized_weights = use_prioritized_weights
        self.reduction = reduction
        self.convert_to_functional(
            value_network, "value_network", create_target_params=self.delay_value
        )
        self.action_space = _c51_space(self.value_network, owner)
        _check_support(self.value_network_params, owner)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "gamma" and value is None:
            raise TypeError("gamma must be a number in [0, 1], got None")
        super().__setattr__(name, value)

    def _forward_value_estimator_keys(self) -> None:
        """No estimator object: C51 bootstraps in :meth:`forward` (as TorchRL)."""

    def make_value_estimator(
        self, value_type: ValueEstimators | str | None = None, **hyperparams: Any
    ) -> DistributionalDQNLoss:
        """Only TD(0), with no hyper-parameters: the discount is :attr:`gamma`."""
        value_type = ValueEstimators.parse(value_type or self.default_value_estimator)
        if value_type not in self.SUPPORTED_VALUE_ESTIMATORS:
            raise NotImplementedError(
                f"{type(self).__name__} does not support {value_type.name}; supported: ['TD0']"
            )
        if hyperparams:
            raise TypeError(
                f"{type(self).__name__} bootstraps with its own discount; set loss.gamma "
                f"instead of passing {sorted(hyperparams)} to make_value_estimator"
            )
        self.value_type = value_type
        return self

    # -- pieces of the objective ----------------------------------------------------------
    def _log_probs(self, state: ArrayDict, tree: Params) -> Any:
        """``log p(s, ·)`` over the atoms, ``[*B, atoms, actions]``."""
        return self.read(self._run(state, tree), self.tensor_keys.action_value)

    def _at_action(self, log_probs: Any, action: Any, key: Any) -> Any:
        """``log p(s, a)``, ``[*B, atoms]``: the action's column of every atom."""
        xp = backend_of(log_probs).xp
        batch, atoms = tuple(log_probs.shape[:-2]), log_probs.shape[-2]
        if self.action_space == "one_hot":
            action = action[..., None, :]
        elif tuple(action.shape) == (*batch, 1):
            action = action[..., None]
        elif tuple(action.shape) == batch:
            action = action[..., None, None]
        shape = (*batch, atoms, action.shape[-1])
        if tuple(action.shape[:-2]) != batch:
            raise ValueError(
                f"the action {key!r} has shape {tuple(action.shape)}, which does not fit the "
                f"action values' {tuple(log_probs.shape)} ([*B, atoms, actions])"
            )
        action = xp.broadcast_to(action, shape)
        return self._value_at(log_probs, action, key)

    def _discounts(self, batch: ArrayDict, reward: Any) -> Any:
        """``γⁿ (1 − terminated)``, shaped as ``reward`` (``terminated`` defaults to
        ``done``; ``n`` is ``steps_to_next_obs``, 1 when absent)."""
        tk = self.tensor_keys
        xp = backend_of(reward).xp
        done = self.read(batch, next_key(tk.done))
        terminated = batch.get(next_key(tk.terminated), None)
        terminated = done if terminated is None else terminated
        alive = 1.0 - xp.astype(_like(terminated, reward, "terminated", xp), reward.dtype)
        steps = batch.get(tk.steps_to_next_obs, None)
        if steps is None:
            return alive * self.gamma
        n = xp.astype(_like(steps, reward, "steps_to_next_obs", xp), reward.dtype)
        return alive * self.gamma**n

    def target_distribution(self, batch: Any, params: Mapping[str, Params] | None = None) -> Any:
        """The projected target ``m`` (``[*B, atoms]``), without gradient: the target
        network's distribution at ``a* = argmax_a Σ_i z_i p_θ(s′, a)_i``, moved by
        ``r + γⁿ (1 − terminated) z`` and projected (:func:`categorical_projection`)."""
        batch = self.working_copy(batch)
        tk = self.tensor_keys
        reward = self.read(batch, next_key(tk.reward))
        backend = backend_of(reward)
        if not backend.xp.isdtype(reward.dtype, "real floating"):
            raise TypeError(
                f"the reward {next_key(tk.reward)!r} must be floating (got dtype {reward.dtype}); "
                "cast it, e.g. to the observations' dtype"
            )
        with backend.no_grad():
            online = self.detached_params("value_network", params)
            state = self._next_state(batch)
            next_action = self.read(self._run(state, online), tk.action)
            log_probs = self._log_probs(state, self._target(params))
            probs = backend.xp.exp(self._at_action(log_probs, next_action, "next action"))
            support = backend.stop_gradient(online["support"])
            m = categorical_projection(probs, reward, self._discounts(batch, reward), support)
        return backend.stop_gradient(m)

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss = −Σ_i m_i log p_θ(s, a)_i`` reduced, and that cross-entropy per
        sample as the priority (``[*B, 1]``).

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            Any batch shape: the value network's inputs, ``tensor_keys.action``, and
            under ``"next"`` the network's inputs, ``reward``, ``done`` and ``terminated``;
            optionally ``steps_to_next_obs`` and ``priority_weight``.
        params : mapping, optional
            ``{"value_network": tree}`` (its ``"support"`` included) to compute with.
        """
        batch = self.working_copy(batch)
        tk = self.tensor_keys
        self.check_batch_backend(batch, tk.action)
        tree = self.network_params("value_network", params)
        log_p = self._at_action(
            self._log_probs(self._state(batch), tree), self.read(batch, tk.action), tk.action
        )
        target = self.target_distribution(batch, params)
        backend = backend_of(log_p)
        cross_entropy = -backend.xp.sum(target * log_p, axis=-1)
        priority = backend.stop_gradient(cross_entropy)[..., None]
        loss = self.reduce_loss(cross_entropy, batch, weights=self.priority_weight(batch))
        return ArrayDict({"loss": loss, tk.priority: priority})


def _like(x: Any, reward: Any, name: str, xp: Any) -> Any:
    """``x`` reshaped to ``reward``'s shape (``[*B]`` and ``[*B, 1]`` both fit)."""
    if math.prod(x.shape) != math.prod(reward.shape):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, which does not fit the reward's "
            f"{tuple(reward.shape)}"
        )
    return xp.reshape(x, tuple(reward.shape))


def _required_gamma(gamma: Any) -> Any:
    if gamma is None:
        raise TypeError("DistributionalDQNLoss needs gamma, a discount in [0, 1]; got None")
    return gamma


def _discount_problem(gamma: float) -> str | None:
    return "must be in [0, 1]" if gamma > 1.0 else None


def _c51_space(network: Any, owner: str) -> str:
    """The network's action space, one of those C51 reads."""
    space = getattr(network, "action_space", None)
    if space is None:
        raise TypeError(
            f"{owner}: the value network has no action_space; pass a "
            "DistributionalQValueActor(net, support=..., action_space=...)"
        )
    if space not in _C51_SPACES:
        raise NotImplementedError(
            f"{owner} reads one action column per sample: action_space must be one of "
            f"{_C51_SPACES}, got {space!r}"
        )
    return space


def _check_support(tree: Params, owner: str) -> None:
    """``TypeError`` unless the network's tree holds ``"support"``; ``ValueError``
    unless it is 1-D, ascending, evenly spaced and finite (read once, on the host)."""
    if "support" not in tree:
        raise TypeError(
            f"{owner}: the value network's parameters hold no 'support' (the atoms); pass a "
            "DistributionalQValueActor"
        )
    support = tree["support"]
    z = np.asarray(
        backend_of(support).to_numpy(backend_of(support).stop_gradient(support)), dtype=np.float64
    )
    if z.ndim != 1 or z.size < 2 or not np.all(np.isfinite(z)):
        raise ValueError(f"{owner}: the support must be 1-D, finite, with at least 2 atoms")
    steps = np.diff(z)
    step = (z[-1] - z[0]) / (z.size - 1)
    if step <= 0 or np.max(np.abs(steps - step)) > 1e-4 * step:
        raise ValueError(
            f"{owner}: the support must be ascending and evenly spaced (the projection "
            f"places atoms on the grid v_min + j·Δz), got {z.tolist()}"
        )
