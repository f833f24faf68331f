"""Implicit Q-Learning: ``IQLLoss`` (continuous actions) and ``DiscreteIQLLoss``.

Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning",
https://arxiv.org/abs/2110.06169. With a policy π_φ, a state-value network V_ψ, an
ensemble of ``N`` critics Q_θᵢ with target copies Q_θ̄ᵢ, and a transition
``(s, a, r, s′)`` from the data set:

- expectile regression of the value on the target critics,
  ``loss_value = L_τ(minᵢ Q_θ̄ᵢ(s, a) − V_ψ(s))`` with
  ``L_τ(u) = |τ − 1(u < 0)|·u²`` (``τ = expectile``);
- the critics regress on the one-step target bootstrapped on the value network,
  ``y = r + γ(1 − terminated)·V_ψ(s′)`` (TD(0) by default; ψ held fixed) and
  ``loss_qvalue = Σᵢ d(Q_θᵢ(s, a), y)`` (``d`` = ``loss_function``);
- advantage-weighted regression of the policy,
  ``loss_actor = −min(exp(β·(minᵢ Q_θ̄ᵢ(s, a) − V_ψ(s))), 100)·log π_φ(a|s)``
  (``β = temperature``; the weight carries no gradient);
- ``entropy = −mean log π_φ(a|s)`` over the batch (no gradient).

No action is drawn: every term uses the data set's action ``a``. The discrete loss reads
``Q_θᵢ(s, ·)`` (one value per action) at ``a``, given as an index (``"categorical"``) or
a one-hot vector (``"one-hot"``).

Arguments, defaults, keys, outputs and the ``td_error`` priority follow TorchRL 0.14.1
(``torchrl/objectives/iql.py``); the differences are listed in the class docstrings.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

from arrayrl._validation import count, flag, hyperparameter
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, flatten_params, map_params, unflatten_params
from arrayrl.modules.actors import action_value_at

from ._shared import discrete_action_space
from ._soft import leaves, next_key, output_mode, select
from .common import LossModule
from .td3 import check_common_args, read_output
from .utils import ValueEstimators, distance_loss

__all__ = ["DiscreteIQLLoss", "IQLLoss", "expectile_loss"]

#: TorchRL's cap on the advantage weight ``exp(β·A)``
MAX_WEIGHT = 100.0


def expectile_loss(diff: Any, expectile: float) -> Any:
    r"""The expectile regression loss ``L_τ(u) = |τ − 1(u < 0)|·u²``, element-wise.

    ``u > 0`` is weighted by ``τ``, ``u ≤ 0`` by ``1 − τ`` (at ``u = 0`` the loss is 0
    either way). The weights are in ``diff``'s dtype.

    Parameters
    ----------
    diff : array
        ``u``, e.g. ``Q(s, a) − V(s)``.
    expectile : float
        ``τ`` in ``(0, 1)``; ``0.5`` gives half the squared error.
    """
    backend = backend_of(diff)
    upper = backend.asarray(expectile, dtype=diff.dtype)
    lower = backend.asarray(1.0 - expectile, dtype=diff.dtype)
    return backend.xp.where(diff > 0, upper, lower) * (diff * diff)


class IQLLoss(LossModule):
    """The IQL loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy π_φ (arrayrl's or TorchRL's); only its ``log_prob`` of the batch's
        action is used (``TanhNormal``, ``Normal``, ...).
    qvalue_network : Module or list of Module
        ``Q(s, a)`` writing ``tensor_keys.state_action_value`` (``[*B, 1]``). With
        ``num_qvalue_nets > 1`` one module is expanded into that many members by
        TorchRL's rule (each leaf drawn uniformly in its range, from the loss's
        generator) and a list is stacked; with ``num_qvalue_nets=1`` the module's own
        parameters are used (TorchRL's rule too). A target copy is always kept.
    value_network : Module
        ``V(s)`` writing ``tensor_keys.value`` (``[*B, 1]``); required.
    num_qvalue_nets : int, default 2
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
        The critics' distance ``d``.
    temperature : float, default 1.0
        The inverse temperature β >= 0 of the advantage weight (0: behaviour cloning).
    expectile : float, default 0.5
        τ in ``(0, 1)``.
    separate_losses : bool, default False
        Parameters the value network shares with the actor, and those the critics share
        with either, are trained only by the actor's (value's) loss.
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for TorchRL compatibility; no effect (the ensemble is one stacked call).
    scalar_output_mode : {None, "exclude", "non_tensor"}
        With ``reduction="none"``: leave ``entropy`` out (``None`` also warns, as
        TorchRL), or include it (the output's batch size is then ``()``).
    seed : int, optional
        Seed of the generator the ensemble's members are drawn from (there are no other
        draws). ``None``: with TorchRL / torch networks, torch's default generator
        (``torch.manual_seed`` gives TorchRL's members), else seed 0.

    ``gamma`` raises ``TypeError`` and ``priority_key`` ``RuntimeError``, as in TorchRL:
    use ``make_value_estimator(..., gamma=...)`` and ``set_keys(priority=...)``.

    Notes
    -----
    As in TorchRL 0.14.1, ``loss_actor`` and ``loss_value`` read the **target** critics
    (``target_qvalue_network_params``, which move only with ``SoftUpdate`` /
    ``HardUpdate``), ``loss_qvalue`` trains the online ones on a target from the value
    network (which has no target copy: ``target_value_network_params`` is the online
    tree cut from the graph).

    Outputs: ``loss_actor``, ``loss_qvalue``, ``loss_value``, ``entropy``. The priority
    ``maxᵢ (Q_θᵢ(s, a) − y)²`` is set in the caller's batch under
    ``tensor_keys.priority`` (a new entry, as TorchRL does).

    Differences from TorchRL 0.14.1, all deliberate:

    - TorchRL writes ``_log_prob`` (``tensor_keys.log_prob``) and the actor's
      distribution parameters into the caller's batch; arrayrl writes nothing there but
      the priority (``entropy`` carries the same information).
    - TorchRL's IQL ignores a prioritised buffer's ``priority_weight``; arrayrl weights
      every ``loss_*`` term with it, as SAC does (``use_prioritized_weights = False``
      restores TorchRL's behaviour).
    - ``expectile`` must lie in ``(0, 1)`` and ``temperature`` be finite and >= 0
      (TorchRL accepts any number here).
    - On float64 inputs TorchRL's expectile weights are float32 (``torch.where`` on
      Python numbers); arrayrl's are in the inputs' dtype.
    - Members, targets and the value are each computed once per call: the online and
      target critics in one stacked call of ``2N`` members, ``V(s)`` once for the value
      and (without gradient) the actor loss.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"
        action: Any = "action"
        log_prob: Any = "_log_prob"
        priority: Any = "td_error"
        state_action_value: Any = "state_action_value"
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
    out_keys = ["loss_actor", "loss_qvalue", "loss_value", "entropy"]  # noqa: RUF012
    #: as TorchRL: the critics always keep a target copy
    delay_qvalue = True

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        temperature: float = 1.0,
        expectile: float = 0.5,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_common_args(owner, gamma, priority_key, loss_function, "auto")
        if value_network is None:
            raise TypeError(f"{owner} needs a value_network V(s) writing 'state_value'")
        super().__init__()
        self.temperature = temperature
        self.expectile = expectile
        self.loss_function = loss_function
        self.num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        self.separate_losses = flag("separate_losses", separate_losses)
        self.deactivate_vmap = flag("deactivate_vmap", deactivate_vmap)
        self.reduction = reduction
        self.seed = seed  # before the ensemble is drawn
        self._register_networks(actor_network, qvalue_network, value_network)
        # the user's frame: IQLLoss(...) directly, or through DiscreteIQLLoss.__init__
        level = 3 if type(self) is IQLLoss else 4
        self.scalar_output_mode = _output_mode(scalar_output_mode, self.reduction, owner, level)

    def _register_networks(self, actor: Any, qvalue: Any, value: Any) -> None:
        """Actor, value network, then the critics (TorchRL's order, so that the members
        drawn after ``torch.manual_seed`` are TorchRL's); with ``separate_losses`` the
        leaves shared with the actor (and, for the critics, the value network) are
        recorded, to be cut from the graph where the other networks use them."""
        if len(getattr(actor, "dist_sample_keys", ())) > 1:
            raise NotImplementedError(
                f"{type(self).__name__} does not support composite (multi-head) actors"
            )
        self.convert_to_functional(actor, "actor_network")
        self.convert_to_functional(value, "value_network")
        policy = leaves(self.actor_network_params) if self.separate_losses else []
        critic_shared = policy + leaves(self.value_network_params) if policy else []
        n = self.num_qvalue_nets
        if isinstance(qvalue, (list, tuple)):
            if len(qvalue) != n:
                raise ValueError(
                    f"{type(self).__name__}: {len(qvalue)} Q networks given for num_qvalue_nets={n}"
                )
            qvalue = qvalue[0] if n == 1 else qvalue
        self.convert_to_functional(
            qvalue,
            "qvalue_network",
            None if n == 1 else n,
            create_target_params=True,
            compare_against=critic_shared or None,
        )
        self._value_shared = {id(leaf) for leaf in policy}
        self._critic_shared = {id(leaf) for leaf in critic_shared}

    # -- hyper-parameters TorchRL users set ---------------------------------------------
    @property
    def temperature(self) -> float:
        """β, the inverse temperature of the advantage weight (finite, >= 0)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: Any) -> None:
        self._temperature = hyperparameter(
            "temperature", value, low=0.0, high=math.inf, high_open=True
        )

    @property
    def expectile(self) -> float:
        """τ, the expectile of the value regression, in ``(0, 1)``."""
        return self._expectile

    @expectile.setter
    def expectile(self, value: Any) -> None:
        self._expectile = hyperparameter(
            "expectile", value, low=0.0, high=1.0, low_open=True, high_open=True
        )

    @property
    def loss_function(self) -> str:
        """The critics' distance: ``"smooth_l1"``, ``"l2"`` or ``"l1"``."""
        return self._loss_function

    @loss_function.setter
    def loss_function(self, value: str) -> None:
        check_common_args(type(self).__name__, None, None, value, "auto")
        self._loss_function = value

    @staticmethod
    def loss_value_diff(diff: Any, expectile: float = 0.8) -> Any:
        """TorchRL's name of :func:`expectile_loss` (with its default τ = 0.8)."""
        return expectile_loss(diff, expectile)

    # -- keys -----------------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch entries read (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = list(self.actor_network.in_keys)
        keys = [tk.action, *(next_key(k) for k in (tk.reward, tk.done, tk.terminated))]
        keys += [*actor_keys, *(next_key(k) for k in actor_keys)]
        keys += [*self.qvalue_network.in_keys, *self.value_network.in_keys]
        return list(dict.fromkeys(keys))

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The estimator bootstraps on the value network."""
        return {"value_network": self.value_network}

    # -- pieces ---------------------------------------------------------------------------
    def _reduce(self, loss: Any, batch: ArrayDict) -> Any:
        return self.reduce_loss(loss, batch, weights=self.priority_weight(batch))

    def _log_prob(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``log π_φ(a|s)`` of the batch's action, ``[*B]``."""
        tree = self.network_params("actor_network", params)
        dist = self.actor_network.get_dist(batch.clone(recurse=False), tree)
        return dist.log_prob(self._policy_action(self.read(batch, self.tensor_keys.action)))

    def _policy_action(self, action: Any) -> Any:
        """The action as the policy's ``log_prob`` takes it."""
        return action

    def _state_value(self, batch: ArrayDict, tree: Params) -> Any:
        """``V(s)`` with ``tree``, ``[*B]``."""
        state = select(batch, self.value_network.in_keys)
        self.value_network(state, tree)
        value = self.read(state, self.tensor_keys.value)
        return value[..., 0] if value.ndim > len(batch.batch_size) else value

    def _value_params(self, params: Mapping[str, Params] | None) -> Params:
        """The value network's tree, its leaves shared with the actor cut with
        ``separate_losses``."""
        return _cut(self.network_params("value_network", params), self._value_shared)

    def _q_values(self, batch: ArrayDict, trees: list[Params]) -> list[Any]:
        """``Q_θᵢ(s, a)`` of every member of every (stacked) tree in ``trees``,
        ``[N, *B]`` each, from one ensemble call over the trees joined on the member
        axis."""
        joined = _join_members([self._members(tree) for tree in trees])
        inputs = select(batch, self.qvalue_network.in_keys)
        outputs = self.ensemble_outputs("qvalue_network", inputs, joined)
        values = read_output(outputs, self.tensor_keys.state_action_value, type(self).__name__)
        chosen = self._chosen(values, self.read(batch, self.tensor_keys.action), batch)
        n = int(chosen.shape[0]) // len(trees)
        return [chosen[k * n : (k + 1) * n, ...] for k in range(len(trees))]

    def _members(self, tree: Params) -> Params:
        """The critics' tree with a member axis (a single critic gets one of size 1)."""
        if self.ensemble_size("qvalue_network") is not None:
            return tree
        return map_params(lambda leaf: backend_of(leaf).xp.expand_dims(leaf, axis=0), tree)

    def _online_critics(self, params: Mapping[str, Params] | None) -> Params:
        """The online critics' tree (a single critic's leaves shared with the actor or
        the value network cut with ``separate_losses``; an ensemble's are broadcast)."""
        return _cut(self.network_params("qvalue_network", params), self._critic_shared)

    def _chosen(self, values: Any, action: Any, batch: ArrayDict) -> Any:
        """``Q(s, a)`` from the critic's output ``[M, *B, 1]``, as ``[M, *B]``."""
        if values.ndim != len(batch.batch_size) + 2 or int(values.shape[-1]) != 1:
            raise RuntimeError(
                f"{type(self).__name__}: the critic's {self.tensor_keys.state_action_value!r} "
                f"has shape {tuple(values.shape[1:])}; expected batch shape "
                f"{tuple(batch.batch_size)} + (1,)"
            )
        return values[..., 0]

    def _bootstrap(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``y`` from the value estimator on ``V_ψ(s′)``, ψ cut from the graph, ``[*B]``."""
        tree = self.detached_params("value_network", params)
        backend = backend_of(self.read(batch, self.tensor_keys.action))
        with backend.no_grad():
            target = self.value_estimator.value_estimate(batch, target_params=tree)
        return backend.stop_gradient(target[..., 0])

    # -- the terms ------------------------------------------------------------------------
    def _actor_term(self, log_prob: Any, min_q: Any, value: Any) -> Any:
        """``−min(exp(β·(min Q − V)), 100)·log π`` per sample, the weight without
        gradient."""
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(log_prob.shape)} and {tuple(min_q.shape)}"
            )
        backend = backend_of(log_prob)
        xp = backend.xp
        advantage = backend.stop_gradient(min_q - value)
        weight = xp.clip(xp.exp(advantage * self.temperature), max=MAX_WEIGHT)
        return -(weight * log_prob)

    def _qvalue_term(self, pred: Any, target: Any) -> tuple[Any, Any]:
        """``(Σᵢ d(Q_θᵢ(s, a), y)`` per sample, ``(Q_θᵢ(s, a) − y)²`` ``[N, *B]``)."""
        backend = backend_of(pred)
        xp = backend.xp
        target = xp.broadcast_to(target, tuple(pred.shape))
        loss = xp.sum(distance_loss(pred, target, self.loss_function), axis=0)
        error = backend.stop_gradient(pred - target)
        return loss, error * error

    # -- TorchRL's per-term methods ---------------------------------------------------------
    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``loss_actor`` reduced, and ``{}`` (TorchRL's metadata)."""
        batch = self.working_copy(batch)
        log_prob = self._log_prob(batch, params)
        (target_q,) = self._q_values(batch, [self._target_params["qvalue_network"]])
        value = self._state_value(batch, self.detached_params("value_network", params))
        min_q = backend_of(target_q).xp.min(target_q, axis=0)
        return self._reduce(self._actor_term(log_prob, min_q, value), batch), {}

    def value_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``loss_value = L_τ(minᵢ Q_θ̄ᵢ(s, a) − V_ψ(s))`` reduced, and ``{}``."""
        batch = self.working_copy(batch)
        (target_q,) = self._q_values(batch, [self._target_params["qvalue_network"]])
        min_q = backend_of(target_q).xp.min(target_q, axis=0)
        value = self._state_value(batch, self._value_params(params))
        return self._reduce(expectile_loss(min_q - value, self.expectile), batch), {}

    def qvalue_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``loss_qvalue`` reduced, and ``{"td_error": (Q_θᵢ(s, a) − y)²}`` (``[N, *B]``)."""
        batch = self.working_copy(batch)
        target = self._bootstrap(batch, params)
        (pred,) = self._q_values(batch, [self._online_critics(params)])
        loss, td_error = self._qvalue_term(pred, target)
        return self._reduce(loss, batch), {"td_error": td_error}

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor``, ``loss_qvalue``, ``loss_value`` and ``entropy``; the priority
        ``maxᵢ (Q_θᵢ(s, a) − y)²`` is set in the caller's batch.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The networks' inputs, ``tensor_keys.action``, and under ``"next"`` the value
            network's inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "qvalue_network": tree, "value_network": tree}``
            (any subset) to compute with instead of the loss's own (pure-function use);
            the target critics stay the loss's own.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        log_prob = self._log_prob(batch, params)
        pred, target_q = self._q_values(
            batch, [self._online_critics(params), self._target_params["qvalue_network"]]
        )
        backend = backend_of(pred)
        xp = backend.xp
        min_q = xp.min(target_q, axis=0)
        value = self._state_value(batch, self._value_params(params))
        loss_qvalue, td_error = self._qvalue_term(pred, self._bootstrap(batch, params))
        losses = {
            "loss_actor": self._reduce(self._actor_term(log_prob, min_q, value), batch),
            "loss_qvalue": self._reduce(loss_qvalue, batch),
            "loss_value": self._reduce(expectile_loss(min_q - value, self.expectile), batch),
        }
        shapes = {tuple(v.shape) for v in losses.values()}
        if len(shapes) != 1:
            raise RuntimeError(f"Losses shape mismatch: {sorted(shapes)}")
        entropy = backend.stop_gradient(xp.mean(-log_prob))
        if self.reduction != "none" or self.scalar_output_mode == "non_tensor":
            out = ArrayDict({**losses, "entropy": entropy})
        else:
            out = ArrayDict(losses, tuple(batch.batch_size))
        return out.set(self.tensor_keys.priority, xp.max(td_error, axis=0))


class DiscreteIQLLoss(IQLLoss):
    """IQL with discrete actions (see the module docstring).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        A ``Categorical`` or ``OneHotCategorical`` policy (arrayrl's, TorchRL's or
        torch's classes).
    qvalue_network : Module or list of Module
        ``Q(s, ·)`` writing ``tensor_keys.state_action_value`` with one value per action,
        ``[*B, n]``; expanded into ``num_qvalue_nets`` members as in :class:`IQLLoss`.
    value_network : Module
        ``V(s)`` writing ``tensor_keys.value``.
    action_space : str or spec, optional
        ``"one-hot"`` (the default, with TorchRL's warning when not given: the batch's
        action is a one-hot vector ``[*B, n]``) or ``"categorical"`` (an integer index
        ``[*B]``; ``[*B, 1]`` is accepted too), or a spec of either kind.

    ``num_qvalue_nets``, ``loss_function``, ``temperature``, ``expectile``,
    ``separate_losses``, ``reduction``, ``scalar_output_mode`` and ``seed`` are those
    of :class:`IQLLoss` (TorchRL's ``DiscreteIQLLoss`` has no ``deactivate_vmap``).

    Notes
    -----
    ``Q_θᵢ(s, a)`` is ``Q_θᵢ(s, ·)`` summed against the one-hot action, or gathered at
    the index. TorchRL 0.14.1 fails with a shape mismatch on a ``[*B, 1]`` index
    (its gather handles it, its ``log_prob`` does not: pytorch/rl#3122); arrayrl drops the
    trailing unit dim. Action spaces other than one-hot and categorical are refused at
    construction (TorchRL raises at the first call).
    """

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any,
        *,
        action_space: Any = None,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        temperature: float = 1.0,
        expectile: float = 0.5,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        scalar_output_mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.action_space = discrete_action_space(
            action_space, type(self).__name__, supported=("one_hot", "categorical")
        )
        super().__init__(
            actor_network,
            qvalue_network,
            value_network,
            num_qvalue_nets=num_qvalue_nets,
            loss_function=loss_function,
            temperature=temperature,
            expectile=expectile,
            gamma=gamma,
            priority_key=priority_key,
            separate_losses=separate_losses,
            reduction=reduction,
            scalar_output_mode=scalar_output_mode,
            seed=seed,
        )

    def _policy_action(self, action: Any) -> Any:
        """A categorical index without a trailing unit dim (``[*B]``)."""
        return self._index(action) if self.action_space == "categorical" else action

    def _index(self, action: Any) -> Any:
        xp = backend_of(action).xp
        if not xp.isdtype(action.dtype, "integral"):
            raise TypeError(
                f"{type(self).__name__}: a categorical action must hold integer indices, "
                f"got dtype {action.dtype}"
            )
        return action[..., 0] if action.ndim and int(action.shape[-1]) == 1 else action

    def _chosen(self, values: Any, action: Any, batch: ArrayDict) -> Any:
        """``Q(s, a)`` from the critic's ``[M, *B, n]``, as ``[M, *B]``
        (:func:`action_value_at`)."""
        return action_value_at(
            values,
            action,
            self.action_space,
            self.tensor_keys.action,
            batch_shape=tuple(batch.batch_size),
            owner=type(self).__name__,
        )


# -- helpers ---------------------------------------------------------------------------------
def _output_mode(mode: Any, reduction: str, owner: str, stacklevel: int) -> str | None:
    """``scalar_output_mode`` checked; with ``reduction="none"`` and no mode, TorchRL's
    warning (``entropy`` cannot join per-sample losses) and ``"exclude"``."""
    if reduction == "none" and mode is None:
        warnings.warn(
            f"{owner} with reduction='none' cannot include scalar values (entropy) in the "
            "output without changing their shape; they are excluded. Pass "
            "scalar_output_mode='exclude' to silence this warning, or 'non_tensor' to "
            "include them (the output's batch size is then ()).",
            UserWarning,
            stacklevel=stacklevel,
        )
        return "exclude"
    return output_mode(mode, reduction, owner)


def _cut(tree: Params, shared: set[int]) -> Params:
    """``tree`` with the leaves whose ids are in ``shared`` cut from the graph."""
    if not shared:
        return tree
    return map_params(
        lambda leaf: backend_of(leaf).stop_gradient(leaf) if id(leaf) in shared else leaf, tree
    )


def _join_members(trees: list[Params]) -> Params:
    """Stacked trees of one structure joined along the member axis."""
    if len(trees) == 1:
        return trees[0]
    flats = [flatten_params(tree) for tree in trees]
    joined = {
        path: backend_of(leaf).xp.concat([flat[path] for flat in flats], axis=0)
        for path, leaf in flats[0].items()
    }
    return unflatten_params(joined)
