"""Soft Actor-Critic: ``SACLoss`` (continuous actions) and ``DiscreteSACLoss``.

Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
https://arxiv.org/abs/1812.05905 (v2, no value network; v1 with one:
https://arxiv.org/abs/1801.01290); Christodoulou 2019, "Soft Actor-Critic for Discrete
Action Settings", https://arxiv.org/abs/1910.07207. With temperature ``α = exp(log α)``
(no gradient where it weighs other terms), ``N`` Q networks ``Q_i`` and their targets
``Q̄_i``:

- ``loss_qvalue = Σ_i d(Q_i(s, a), y)``, ``y = r + γ(1 − terminated)·V̄(s')`` (TD(0) by
  default) with ``V̄(s') = min_i [Q̄_i(s', a') − α log π(a'|s')]``, ``a' ~ π(·|s')``
  (v2); v1 regresses ``Q_i`` on ``y = r + γ(1 − terminated)·V̄_ψ(s')`` instead;
- ``loss_value = d(V_ψ(s), min_i Q̄_i(s, ã) − α log π̄(ã|s))`` (v1 only);
- ``loss_actor = α log π(ã|s) − min_i Q_i(s, ã)``, ``ã`` a reparameterised draw, the
  Q parameters held fixed;
- ``loss_alpha = −log α·(log π(ã|s) + H̄)`` with target entropy ``H̄``.

The discrete loss replaces draws by exact expectations over the actions:
``V̄(s') = Σ_a π(a|s')[min_i Q̄_i(s', a) − α log π(a|s')]``,
``loss_actor = Σ_a π(a|s)[α log π(a|s) − min_i Q_i(s, a)]`` and ``log π`` in the alpha
loss becomes ``Σ_a π(a|s) log π(a|s)``.

Arguments, defaults, keys, outputs, draws (order and shapes) and the ``td_error``
priority follow TorchRL 0.14.1 (``torchrl/objectives/sac.py``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl._validation import count, flag, hyperparameter
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, map_params

from ._soft import (
    TemperatureMixin,
    as_tuple,
    leaves,
    output_mode,
    reject_constructor_keys,
    sac_log_alpha_bounds,
    select,
    target_entropy_arg,
)
from .common import LossModule
from .utils import ValueEstimators, distance_loss

__all__ = ["DiscreteSACLoss", "SACLoss"]

_LOSS_FUNCTIONS = ("l1", "l2", "smooth_l1")


class _SoftActorCriticBase(TemperatureMixin, LossModule):
    """The temperature of both SAC losses: ``log_alpha`` (a loss parameter, or a fixed
    array with ``fixed_alpha``), its optional bounds, ``alpha``, the alpha loss, the
    ``td_error`` priority and the output."""

    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    default_value_estimator = ValueEstimators.TD0

    def _init_common(
        self,
        *,
        loss_function: str,
        alpha_init: Any,
        min_alpha: Any,
        max_alpha: Any,
        fixed_alpha: bool,
        target_entropy: Any,
        action_spec: Any,
        actor: Any,
        priority_key: Any,
        reduction: str | None,
        skip_done_states: bool,
        deactivate_vmap: bool,
        use_prioritized_weights: Any,
        scalar_output_mode: str | None,
    ) -> None:
        if priority_key is not None:
            raise RuntimeError(
                "Setting 'priority_key' via the constructor is deprecated, use "
                ".set_keys(<key>='some_key') instead."
            )
        if loss_function not in _LOSS_FUNCTIONS:
            raise ValueError(
                f"unknown loss_function {loss_function!r}; expected one of {_LOSS_FUNCTIONS}"
            )
        if use_prioritized_weights not in (True, False, "auto"):
            raise ValueError(
                "use_prioritized_weights must be True, False or 'auto', got "
                f"{use_prioritized_weights!r}"
            )
        self.loss_function = loss_function
        self.use_prioritized_weights = use_prioritized_weights
        self.skip_done_states = flag("skip_done_states", skip_done_states)
        self.deactivate_vmap = bool(deactivate_vmap)  # accepted; arrayrl never vmaps
        self.reduction = reduction
        self._init_temperature(
            alpha_init=alpha_init, bounds=sac_log_alpha_bounds(min_alpha, max_alpha),
            fixed_alpha=fixed_alpha, target_entropy=target_entropy, action_spec=action_spec,
            actor=actor,
        )
        self.scalar_output_mode = output_mode(scalar_output_mode, self.reduction,
                                              type(self).__name__)

    # -- the temperature ------------------------------------------------------------------
    def alpha_loss(self, log_prob: Any) -> Any:
        """``−log α·(log π + H̄)`` per sample (unreduced), ``log_prob`` without gradient."""
        return -self._log_alpha() * (log_prob + self.target_entropy)

    _alpha_loss = alpha_loss

    # -- value estimator and keys ---------------------------------------------------------
    def _forward_value_estimator_keys(self) -> None:
        if self._value_estimator is not None:
            tk = self.tensor_keys
            self._value_estimator.set_keys(
                value=tk.value, reward=tk.reward, done=tk.done, terminated=tk.terminated
            )

    def _signal_keys(self) -> list[Any]:
        tk = self.tensor_keys
        return [tk.action, *(("next", *as_tuple(k)) for k in (tk.reward, tk.done, tk.terminated))]

    # -- pieces ---------------------------------------------------------------------------
    def _qvalue_params(self, params: Mapping[str, Params] | None) -> Params:
        return self.network_params("qvalue_network", params)

    def _reduce(self, loss: Any, batch: ArrayDict) -> Any:
        return self.reduce_loss(loss, batch, weights=self.priority_weight(batch))

    def _bootstrap(self, batch: ArrayDict, next_value: Any) -> Any:
        """The value estimator's target from the next-state soft value ``[*B, 1]``
        (TorchRL writes it at ``("next", value)``), without its trailing dim."""
        return self.value_estimator.value_estimate(batch, next_value=next_value)[..., 0]

    def _finish(
        self, batch: ArrayDict, losses: dict[str, Any], log_prob: Any, td_error: Any
    ) -> ArrayDict:
        """Reduce the alpha loss, check the shapes and pack the output with ``alpha`` and
        ``entropy`` (TorchRL's ``scalar_output_mode``) and the priority, which
        ``LossModule.__call__`` sets in the caller's batch as TorchRL does."""
        backend = backend_of(log_prob)
        losses["loss_alpha"] = self._reduce(self.alpha_loss(log_prob), batch)
        shapes = {name: tuple(value.shape) for name, value in losses.items()}
        if len(set(shapes.values())) != 1:
            raise RuntimeError(f"Losses shape mismatch: {shapes}")
        entropy = backend.stop_gradient(backend.xp.mean(-log_prob))
        if self.reduction != "none" or self.scalar_output_mode == "non_tensor":
            out = ArrayDict({**losses, "alpha": self.alpha, "entropy": entropy})
        else:
            out = ArrayDict(losses, tuple(batch.batch_size))
        return out.set(self.tensor_keys.priority, td_error)

    def _target_next_batch(self, batch: ArrayDict) -> tuple[ArrayDict, Any]:
        """``batch["next"]`` (a shallow copy) and, with ``skip_done_states``, the mask of
        the states that are not done (``None`` when every state is kept)."""
        nxt = self.read(batch, "next", what="next").clone(recurse=False)
        if not self.skip_done_states:
            return nxt, None
        done = nxt.get(self.tensor_keys.done, None)
        if done is None:
            return nxt, None
        xp = backend_of(done).xp
        done = xp.astype(done, xp.bool)
        if done.ndim == len(nxt.batch_size) + 1:
            done = done[..., 0]
        if not bool(xp.any(done)):  # a host sync, as TorchRL's ``done.any()``
            return nxt, None
        return nxt, xp.logical_not(done)


# =========================================================================================
# SACLoss
# =========================================================================================
class SACLoss(_SoftActorCriticBase):
    """The SAC loss (see the module docstring): v2 without ``value_network``, v1 with one.

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy π_θ; it must draw reparameterised actions (``TanhNormal``, ``Normal``,
        ...). A TorchRL actor's ``spec`` is read for ``target_entropy="auto"``.
    qvalue_network : Module or list of Module
        ``Q(s, a)`` writing ``tensor_keys.state_action_value``; one module is expanded
        into ``num_qvalue_nets`` members by TorchRL's rule (each leaf drawn uniformly in
        its range, from the loss's generator), a list is stacked.
    value_network : Module, optional
        ``V_ψ(s)`` writing ``tensor_keys.value``; given, the loss is SAC v1.
    num_qvalue_nets : int, default 2
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    alpha_init : float, default 1.0
        The initial temperature (> 0); ``log_alpha`` is a float32 0-d array, as TorchRL's.
    min_alpha, max_alpha : float, optional
        Bounds ``log_alpha`` is clamped to whenever ``alpha`` is read (TorchRL's rule
        when only one is given: the other is 0 or 1e9).
    action_spec : spec, optional
        The action spec (arrayrl's or TorchRL's) for ``target_entropy="auto"``.
    fixed_alpha : bool, default False
        Keep ``log_alpha`` fixed: not among :meth:`parameters`, no gradient.
    target_entropy : "auto" or float, default "auto"
        ``"auto"``: minus the number of action elements, from ``action_spec`` or the
        actor's spec (computed on first use, ``RuntimeError`` if neither is known).
    delay_actor : bool, default False
    delay_qvalue : bool, default True
    delay_value : bool, default True
        Keep target copies (updated by ``SoftUpdate`` / ``HardUpdate``).
    separate_losses : bool, default False
        Parameters the Q (and value) networks share with the actor are trained by the
        actor loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    skip_done_states : bool, default False
        Draw next actions for the states that are not done only (TorchRL's rule: the done
        states get a zero action and log-probability).
    deactivate_vmap : bool, default False
        Accepted; no effect (the ensemble runs as stacked matmuls or a loop, never vmap).
    use_prioritized_weights : {"auto", True, False}, default "auto"
    scalar_output_mode : {None, "exclude", "non_tensor"}
        With ``reduction="none"``: leave ``alpha`` and ``entropy`` out (``None`` also
        warns), or include them (the output's batch size is then ``()``).
    seed : int, optional
        Seed of the loss's generators (members and draws); see
        :meth:`LossModule.generator`.

    ``gamma`` and ``priority_key`` raise as in TorchRL (use ``make_value_estimator`` and
    ``set_keys``).

    Notes
    -----
    v1 splits the batch across the Q networks (``batch.reshape(N, -1)``: member ``i``
    regresses on the ``i``-th chunk, and the batch size must be a multiple of ``N``), as
    TorchRL 0.14.1 does on purpose (it raises for other batch sizes); its ``td_error`` is
    the squared error, v2's the largest absolute error over the members. The v1 target
    ``V̄_ψ(s')`` comes from the value network alone (TorchRL runs its actor-critic wrapper
    in deterministic mode, whose actor output the value network does not read).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        state_action_value: Any = "state_action_value"
        log_prob: Any = "action_log_prob"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        value_network: Any = None,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        delay_actor: bool = False,
        delay_qvalue: bool = True,
        delay_value: bool = True,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        skip_done_states: bool = False,
        deactivate_vmap: bool = False,
        use_prioritized_weights: str | bool = "auto",
        scalar_output_mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        reject_constructor_keys(gamma)
        num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        target_entropy = target_entropy_arg(target_entropy)
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        user_actor = actor_network
        if len(getattr(actor_network, "dist_sample_keys", ())) > 1:
            raise NotImplementedError("SACLoss does not support composite (multi-head) actors yet")
        self.convert_to_functional(actor_network, "actor_network",
                                   create_target_params=delay_actor)
        policy = leaves(self.actor_network_params) if separate_losses else None
        self._version = 2 if value_network is None else 1
        shared = policy
        if value_network is not None:
            self.convert_to_functional(value_network, "value_network",
                                       create_target_params=delay_value)
            if separate_losses:
                shared = policy + leaves(self.value_network_params)
        else:
            self.value_network = None
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets,
                                   create_target_params=delay_qvalue, compare_against=shared)
        self.delay_actor, self.delay_qvalue = delay_actor, delay_qvalue
        self.delay_value = delay_value
        self.num_qvalue_nets = num_qvalue_nets
        self.separate_losses = separate_losses
        self._policy_leaves = policy or []
        self._init_common(
            loss_function=loss_function, alpha_init=alpha_init, min_alpha=min_alpha,
            max_alpha=max_alpha, fixed_alpha=fixed_alpha, target_entropy=target_entropy,
            action_spec=action_spec, actor=user_actor, priority_key=priority_key,
            reduction=reduction, skip_done_states=skip_done_states,
            deactivate_vmap=deactivate_vmap, use_prioritized_weights=use_prioritized_weights,
            scalar_output_mode=scalar_output_mode,
        )
        actor = self.actor_network
        log_prob_keys = list(getattr(actor, "log_prob_keys", ()))
        sample_keys = list(getattr(actor, "dist_sample_keys", ()))
        if log_prob_keys and sample_keys:
            self.set_keys(log_prob=log_prob_keys[0], action=sample_keys[0])

    # -- keys -----------------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch entries read (TorchRL's ``in_keys``, in a stable order)."""
        actor_keys = list(self.actor_network.in_keys)
        keys = [*self._signal_keys(), *actor_keys, *(("next", *as_tuple(k)) for k in actor_keys)]
        keys += self.qvalue_network.in_keys
        if self._version == 1:
            keys += self.value_network.in_keys
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        keys = ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]
        return [*keys, "loss_value"] if self._version == 1 else keys

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        return {"value_network": self.value_network}

    # -- pieces ---------------------------------------------------------------------------
    def _draw(self, batch: ArrayDict, tree: Params) -> tuple[Any, Any]:
        """``(ã, log π(ã|s))``: one reparameterised draw from the actor with ``tree``."""
        dist = self.actor_network.get_dist(batch, tree)
        rng = self.generator(dist.backend)
        return dist.rsample_and_log_prob(rng=rng)

    def _q_values(self, batch: ArrayDict, action: Any, tree: Params) -> Any:
        """``Q_i(s, action)`` for every member, ``[N, *B, 1]``."""
        inputs = select(batch, self.qvalue_network.in_keys)
        inputs.set(self.tensor_keys.action, action)
        out = self.ensemble_outputs("qvalue_network", inputs, tree)
        return out[self.tensor_keys.state_action_value]

    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``α log π(ã|s) − min_i Q_i(s, ã)`` reduced, and ``{"log_prob": log π(ã|s)}``
        (no gradient); the Q parameters are held fixed."""
        batch = self.working_copy(batch)
        action, log_prob = self._draw(batch.clone(recurse=False),
                                      self.network_params("actor_network", params))
        backend = backend_of(log_prob)
        q_tree = map_params(backend.stop_gradient, self._qvalue_params(params))
        min_q = backend.xp.min(self._q_values(batch, action, q_tree), axis=0)[..., 0]
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(log_prob.shape)} and {tuple(min_q.shape)}"
            )
        loss = self.alpha * log_prob - min_q
        return self._reduce(loss, batch), {"log_prob": backend.stop_gradient(log_prob)}

    def _compute_target_v2(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``y`` from ``V̄(s') = min_i [Q̄_i(s', a') − α log π(a'|s')]``, ``a' ~ π(·|s')``
        (no gradient)."""
        nxt, keep = self._target_next_batch(batch)
        actor = self.detached_params("actor_network", params)
        backend = backend_of(self.log_alpha)
        with backend.no_grad():
            if keep is None:
                action, log_prob = self._draw(nxt.clone(recurse=False), actor)
            else:
                action, log_prob = self._draw(nxt[keep], actor)
                action, log_prob = _scatter_rows(action, keep), _scatter_rows(log_prob, keep)
            values = self._q_values(nxt, action, self._target_params["qvalue_network"])
            if tuple(values.shape[values.ndim - log_prob.ndim:]) != tuple(log_prob.shape):
                log_prob = log_prob[..., None]
            xp = backend_of(values).xp
            next_value = xp.min(values - self.alpha * log_prob, axis=0)
            target = self._bootstrap(batch, next_value)
        return backend_of(target).stop_gradient(target)

    def _qvalue_v2_loss(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any]:
        target = self._compute_target_v2(batch, params)
        action = self.read(batch, self.tensor_keys.action)
        pred = self._q_values(batch, action, self._qvalue_params(params))[..., 0]
        backend = backend_of(pred)
        xp = backend.xp
        td_error = xp.max(backend.stop_gradient(xp.abs(pred - target)), axis=0)
        target = xp.broadcast_to(target, tuple(pred.shape))
        loss = xp.sum(distance_loss(pred, target, self.loss_function), axis=0)
        return self._reduce(loss, batch), td_error

    def _qvalue_v1_loss(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any]:
        """Member ``i`` regresses on the ``i``-th of ``N`` chunks of the batch on
        ``y = r + γ(1 − terminated)·V̄_ψ(s')`` (TorchRL's split)."""
        target = self.value_estimator.value_estimate(
            batch, target_params=self._target_params["value_network"]
        )[..., 0]
        target = backend_of(target).stop_gradient(target)
        shape = tuple(batch.batch_size)
        n = self.num_qvalue_nets
        if not shape or shape[0] % n:
            raise RuntimeError(
                f"Batch size={shape} is incompatible with num_qvqlue_nets={n}."
            )
        xp = backend_of(target).xp
        chunks = select(batch, self.qvalue_network.in_keys).reshape(n, -1, *shape[1:])
        # batch size () around the member-first leaves: apply_ensemble's per-member loop
        # (modules that do not run stacked) builds each member's batch with this size
        chunks = ArrayDict(chunks.to_dict(), ())
        targets = xp.reshape(target, (n, -1, *tuple(target.shape[1:])))
        out = self.ensemble_outputs("qvalue_network", chunks, self._qvalue_params(params),
                                    member_inputs=True)
        pred = out[self.tensor_keys.state_action_value][..., 0]
        loss = xp.reshape(distance_loss(pred, targets, self.loss_function), shape)
        error = backend_of(pred).stop_gradient(pred - targets)
        td_error = xp.reshape(error * error, (-1, *tuple(error.shape[2:])))
        return self._reduce(loss, batch), td_error

    def _value_loss(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``d(V_ψ(s), min_i Q̄_i(s, ã) − α log π̄(ã|s))``, ``ã`` from the target actor."""
        copy = batch.clone(recurse=False)
        self.value_network(copy, self._cut_policy(self.network_params("value_network", params)))
        pred = self.read(copy, self.tensor_keys.value)[..., 0]
        action, log_prob = self._draw(copy, self._target_params["actor_network"])
        values = self._q_values(copy, action, self._target_params["qvalue_network"])
        backend = backend_of(values)
        min_q = backend.xp.min(values[..., 0], axis=0)
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(min_q.shape)} and {tuple(log_prob.shape)}"
            )
        target = backend.stop_gradient(min_q - self.alpha * log_prob)
        return self._reduce(distance_loss(pred, target, self.loss_function), batch)

    def _cut_policy(self, tree: Params) -> Params:
        """With ``separate_losses``, ``tree`` with the actor's arrays cut from the graph."""
        if not self._policy_leaves:
            return tree
        shared = {id(leaf) for leaf in self._policy_leaves}
        return map_params(
            lambda leaf: backend_of(leaf).stop_gradient(leaf) if id(leaf) in shared else leaf,
            tree,
        )

    # -- the loss -------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor``, ``loss_qvalue``, ``loss_alpha`` (and v1's ``loss_value``),
        ``alpha`` and ``entropy``; ``td_error`` is set in the caller's batch.

        Draws, in TorchRL's order: v2 the next actions then the actions; v1 the value
        loss's actions then the actor loss's.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        self._clamp_log_alpha()
        losses: dict[str, Any] = {}
        if self._version == 1:
            losses["loss_qvalue"], td_error = self._qvalue_v1_loss(batch, params)
            losses["loss_value"] = self._value_loss(batch, params)
        else:
            losses["loss_qvalue"], td_error = self._qvalue_v2_loss(batch, params)
        losses["loss_actor"], meta = self.actor_loss(batch, params)
        ordered = {k: losses[k] for k in ("loss_actor", "loss_qvalue", "loss_value") if k in losses}
        return self._finish(batch, ordered, meta["log_prob"], td_error)


# =========================================================================================
# DiscreteSACLoss
# =========================================================================================
class DiscreteSACLoss(_SoftActorCriticBase):
    """Discrete SAC (see the module docstring): exact expectations over the actions.

    Parameters
    ----------
    actor_network : ProbabilisticActor
        A ``Categorical`` or ``OneHotCategorical`` policy (its ``probs`` and ``logits``
        are read).
    qvalue_network : Module
        Writes ``tensor_keys.action_value``, one value per action ``[*B, |A|]`` (a
        ``QValueActor``, or a ``ValueOperator`` with ``out_keys=["action_value"]``);
        expanded into ``num_qvalue_nets`` members.
    action_space : str or spec, optional
        ``"one-hot"`` (default, with TorchRL's warning when not given) or
        ``"categorical"`` (the batch's action is an index), or a spec of either kind.
    num_actions : int, optional
        ``|A|``, needed for ``target_entropy="auto"``.
    target_entropy_weight : float, default 0.98
    target_entropy : "auto" or float, default "auto"
        ``"auto"``: ``−target_entropy_weight · log(1/|A|)``.
    delay_qvalue : bool, default True

    ``num_qvalue_nets``, ``loss_function``, ``alpha_init``, ``min_alpha``,
    ``max_alpha``, ``fixed_alpha``, ``separate_losses``, ``reduction``,
    ``skip_done_states``, ``deactivate_vmap``, ``use_prioritized_weights``,
    ``scalar_output_mode`` and ``seed`` are those of :class:`SACLoss`.

    Notes
    -----
    ``log π(a|s')`` in the target is ``log(where(π = 0, 1e-8, π))`` with and without
    ``skip_done_states`` (TorchRL 0.14.1 takes the raw logits in the ``skip_done_states``
    branch, which gives NaN for an action of probability exactly 0).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        action_value: Any = "action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        log_prob: Any = "log_prob"
        priority_weight: Any = "priority_weight"

    delay_actor = False

    @property
    def out_keys(self) -> list[str]:
        return ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        action_space: Any = None,
        num_actions: int | None = None,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy_weight: float = 0.98,
        target_entropy: str | float = "auto",
        delay_qvalue: bool = True,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        skip_done_states: bool = False,
        deactivate_vmap: bool = False,
        use_prioritized_weights: str | bool = "auto",
        scalar_output_mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        target_entropy = target_entropy_arg(target_entropy)
        if target_entropy == "auto":
            if num_actions is None:
                raise ValueError("num_actions needs to be provided if target_entropy == 'auto'")
            num_actions = count("num_actions", num_actions)
            weight = hyperparameter("target_entropy_weight", target_entropy_weight,
                                    low=-math.inf, high=math.inf)
            target_entropy = -float(np.log(1.0 / num_actions) * weight)
        super().__init__()
        self.seed = seed
        self.convert_to_functional(actor_network, "actor_network")
        policy = leaves(self.actor_network_params) if separate_losses else None
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets,
                                   create_target_params=delay_qvalue, compare_against=policy)
        self.delay_qvalue = delay_qvalue
        self.num_qvalue_nets = num_qvalue_nets
        self.num_actions = num_actions
        self.separate_losses = separate_losses
        self.action_space = _discrete_action_space(action_space)
        self._init_common(
            loss_function=loss_function, alpha_init=alpha_init, min_alpha=min_alpha,
            max_alpha=max_alpha, fixed_alpha=fixed_alpha, target_entropy=target_entropy,
            action_spec=None, actor=None, priority_key=priority_key, reduction=reduction,
            skip_done_states=skip_done_states,
            deactivate_vmap=deactivate_vmap, use_prioritized_weights=use_prioritized_weights,
            scalar_output_mode=scalar_output_mode,
        )

    @property
    def in_keys(self) -> list[Any]:
        actor_keys = list(self.actor_network.in_keys)
        keys = [*self._signal_keys(), *actor_keys, *(("next", *as_tuple(k)) for k in actor_keys)]
        return list(dict.fromkeys(keys + list(self.qvalue_network.in_keys)))

    # -- pieces ---------------------------------------------------------------------------
    def _probs(self, batch: ArrayDict, tree: Params) -> tuple[Any, Any]:
        """``(π(·|s), log π(·|s))``, ``[*B, |A|]`` each."""
        dist = self.actor_network.get_dist(batch, tree)
        return dist.probs, dist.logits

    def _action_values(self, batch: ArrayDict, tree: Params) -> Any:
        """``Q_i(s, ·)`` for every member, ``[N, *B, |A|]``."""
        inputs = select(batch, self.qvalue_network.in_keys)
        return self.ensemble_outputs("qvalue_network", inputs, tree)[self.tensor_keys.action_value]

    def _compute_target(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``y`` from ``V̄(s') = Σ_a π(a|s')[min_i Q̄_i(s', a) − α log π(a|s')]``."""
        nxt, keep = self._target_next_batch(batch)
        actor = self.detached_params("actor_network", params)
        backend = backend_of(self.log_alpha)
        with backend.no_grad():
            sub = nxt if keep is None else nxt[keep]
            prob, _ = self._probs(sub.clone(recurse=False), actor)
            xp = backend_of(prob).xp
            log_prob = xp.log(xp.where(prob == 0, xp.asarray(1e-8, dtype=prob.dtype), prob))
            values = self._action_values(sub, self._target_params["qvalue_network"])
            soft = xp.min(values, axis=0) - self.alpha * log_prob
            next_value = xp.sum(prob * soft, axis=-1)[..., None]
            if keep is not None:
                next_value = _scatter_rows(next_value, keep)
            target = self._bootstrap(batch, next_value)
        return backend_of(target).stop_gradient(target)

    def _chosen(self, values: Any, action: Any) -> Any:
        """``Q_i(s, a)`` of the batch's action, ``[N, *B]``."""
        xp = backend_of(values).xp
        if self.action_space == "categorical":
            # an index per sample, ``[*B]`` (TorchRL's), or ``[*B, 1]``
            index = action[..., 0] if action.ndim == values.ndim - 1 else action
            index = xp.broadcast_to(xp.astype(index, xp.int64)[..., None],
                                    (*tuple(values.shape[:-1]), 1))
            return xp.take_along_axis(values, index, axis=-1)[..., 0]
        return xp.sum(values * xp.astype(action, values.dtype), axis=-1)

    def qvalue_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``Σ_i d(Q_i(s, a), y)`` reduced, and ``{"td_error": max_i |Q_i(s, a) − y|}``."""
        batch = self.working_copy(batch)
        target = self._compute_target(batch, params)
        values = self._action_values(batch, self._qvalue_params(params))
        chosen = self._chosen(values, self.read(batch, self.tensor_keys.action))
        backend = backend_of(chosen)
        xp = backend.xp
        td_error = xp.max(backend.stop_gradient(xp.abs(chosen - target)), axis=0)
        target = xp.broadcast_to(target, tuple(chosen.shape))
        loss = xp.sum(distance_loss(chosen, target, self.loss_function), axis=0)
        return self._reduce(loss, batch), {"td_error": td_error}

    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``Σ_a π(a|s)[α log π(a|s) − min_i Q_i(s, a)]`` reduced, and
        ``{"log_prob": Σ_a π log π}`` (no gradient); the Q parameters held fixed."""
        batch = self.working_copy(batch)
        prob, log_prob = self._probs(batch.clone(recurse=False),
                                     self.network_params("actor_network", params))
        backend = backend_of(prob)
        xp = backend.xp
        q_tree = map_params(backend.stop_gradient, self._qvalue_params(params))
        min_q = xp.min(self._action_values(batch, q_tree), axis=0)
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(log_prob.shape)} and {tuple(min_q.shape)}"
            )
        loss = xp.sum(prob * (self.alpha * log_prob - min_q), axis=-1)
        expected = backend.stop_gradient(xp.sum(log_prob * prob, axis=-1))
        return self._reduce(loss, batch), {"log_prob": expected}

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``;
        writes ``td_error`` into ``batch``."""
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        self._clamp_log_alpha()
        loss_qvalue, meta_q = self.qvalue_loss(batch, params)
        loss_actor, meta = self.actor_loss(batch, params)
        losses = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue}
        return self._finish(batch, losses, meta["log_prob"], meta_q["td_error"])


# =========================================================================================
# helpers
# =========================================================================================
def _discrete_action_space(action_space: Any) -> str:
    """``"one_hot"`` or ``"categorical"`` (or TorchRL's other names) from a name or a
    spec; ``None`` warns as TorchRL 0.14.1 and means one-hot."""
    from arrayrl.modules.actors import _action_space

    if action_space is None:
        warnings.warn(
            "action_space was not specified. DiscreteSACLoss will default to 'one-hot'. "
            "This behavior will be deprecated soon and a space will have to be passed. "
            "Check the DiscreteSACLoss documentation to see how to pass the action space. ",
            UserWarning,
            stacklevel=3,
        )
        action_space = "one-hot"
    if isinstance(action_space, str):
        return _action_space(action_space, None)
    return _action_space(None, action_space)


def _scatter_rows(values: Any, keep: Any) -> Any:
    """``values`` (one row per ``True`` of ``keep``, ``[K, ...]``) spread back to
    ``[len(keep), ...]`` with zeros in the other rows (TorchRL's ``masked_scatter_``)."""
    backend = backend_of(values)
    xp = backend.xp
    shape = (int(keep.shape[0]), *tuple(values.shape[1:]))
    if int(values.shape[0]) == 0:
        return xp.zeros(shape, dtype=values.dtype, device=backend.device)
    index = xp.cumulative_sum(xp.astype(keep, xp.int64)) - 1
    rows = xp.take(values, xp.clip(index, min=0), axis=0)
    mask = xp.reshape(keep, (shape[0],) + (1,) * (len(shape) - 1))
    return xp.where(mask, rows, xp.zeros_like(rows))
