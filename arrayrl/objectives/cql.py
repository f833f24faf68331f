"""Conservative Q-Learning: ``CQLLoss`` (continuous actions) and ``DiscreteCQLLoss``.

Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement
Learning", https://arxiv.org/abs/2006.04779 (CQL(H), appendix F for the sampled
log-sum-exp). With a SAC actor π, two Q networks ``Q_i`` (TorchRL fixes ``N = 2``) and
their targets ``Q̄_i``, temperature ``α = exp(log α)``, CQL weight ``w``
(``min_q_weight``) and CQL temperature ``T``, on a transition ``(s, a, r, s′)``:

- ``loss_qvalue = Σ_i d(Q_i(s, a), y)``, ``y = r + γ(1 − terminated)·V̄(s′)`` with
  ``V̄(s′) = min_i Q̄_i(s′, a′)``, ``a′ ~ π(·|s′)`` (``deterministic_backup``, the default),
  ``min_i Q̄_i(s′, a′) − α log π(a′|s′)`` without it, or
  ``min_i max_k Q̄_i(s′, a′_k)`` over ``K = num_random`` draws with ``max_q_backup``;
- ``loss_cql = Σ_i w·(T·log Σ_j exp(c_ij / T) − Q_i(s, a))`` where the ``c_ij`` are
  the ``3K`` importance-weighted proposals of state ``s``: ``Q_i(s, u_k) − log U(u_k)``
  with ``u_k`` uniform on the action box (density ``U = 1 / volume``),
  ``Q_i(s, ã_k) − log π(ã_k|s)`` with ``ã_k ~ π(·|s)``, and
  ``Q_i(s′, a′_k) − log π(a′_k|s′)`` with ``a′_k ~ π(·|s′)`` (the log-probabilities
  without gradient);
- with the Lagrange multiplier ``α′ = min(exp(log α′), 10⁶)`` and threshold ``τ``
  (``lagrange_thresh``): ``loss_cql = Σ_i α′·(C_i − τ)`` with ``α′`` held fixed and
  ``loss_alpha_prime = −½ Σ_i α′·(mean C_i − τ)`` with the ``C_i`` held fixed, ``C_i``
  the per-state CQL term above;
- ``loss_actor = α log π(ã|s) − min_i Q_i(s, ã)`` (Q parameters held fixed),
  ``loss_actor_bc = α log π(ã|s) − log π(a|s)``, ``loss_alpha = −log α·(log π(ã|s) + H̄)``.

Discrete CQL (a Q network over ``|A|`` actions, greedy target):
``loss_qvalue = ½ d(Q(s, a), r + γ(1 − terminated) max_b Q̄(s′, b))`` and
``loss_cql = log Σ_b exp Q(s, b) − Q(s, a)``.

Arguments, defaults, keys, outputs and draws (order and shapes) follow TorchRL 0.14.1
(``torchrl/objectives/cql.py``); the class docstrings list where arrayrl differs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from arrayrl._validation import count, flag, hyperparameter
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict, is_tensordict
from arrayrl.modules import Params, map_params
from arrayrl.modules.actors import action_value_at

from ._shared import discrete_action_space, qvalue_actor_for
from ._soft import (
    TemperatureMixin,
    as_tuple,
    leaves,
    next_key,
    output_mode,
    sac_log_alpha_bounds,
    select,
    target_entropy_arg,
)
from .common import LossModule
from .td3 import check_common_args
from .utils import ValueEstimators, distance_loss

__all__ = ["CQLLoss", "DiscreteCQLLoss"]

#: TorchRL's cap on the Lagrange multiplier ``exp(log α′)``.
ALPHA_PRIME_MAX = 1e6
_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda)


# =========================================================================================
# CQLLoss
# =========================================================================================
class CQLLoss(TemperatureMixin, LossModule):
    """The continuous CQL loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy π (a reparameterised distribution, e.g. ``TanhNormal``), arrayrl's or
        TorchRL's. Its ``spec`` is read when ``action_spec`` is not given.
    qvalue_network : Module or list of two Modules
        ``Q(s, a)`` writing ``tensor_keys.state_action_value``; one module is expanded
        into the two members by TorchRL's rule (each leaf drawn uniformly in its range,
        from :meth:`generator`; leaves shared with the actor are broadcast without
        gradient), a list of two is stacked.
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    alpha_init : float, default 1.0
    min_alpha, max_alpha : float, optional
        Bounds of α (SAC's rule: given one alone, the other becomes 0 or 1e9).
    action_spec : spec, optional
        The action spec (arrayrl's or TorchRL's; a composite is read at
        ``tensor_keys.action``): ``target_entropy="auto"`` and the box of the uniform
        proposals. Without one (and no actor spec) the box is TorchRL's ``[-1, 1]``.
    fixed_alpha : bool, default False
    target_entropy : "auto" or float, default "auto"
        ``"auto"``: minus the action's element count, read at construction (as TorchRL;
        ``RuntimeError`` without a spec).
    delay_actor : bool, default False
        Keep a target copy of the actor. As in TorchRL it is only kept (updated by
        ``SoftUpdate``): every draw, the target's included, comes from the online actor.
    delay_qvalue : bool, default True
        Bootstrap from target copies ``Q̄_i`` (else from the online members, detached).
    temperature : float, default 1.0
        ``T`` (> 0).
    min_q_weight : float, default 1.0
        ``w`` (>= 0).
    max_q_backup : bool, default False
    deterministic_backup : bool, default True
        Leave the entropy term out of the target (ignored with ``max_q_backup``).
    num_random : int, default 10
        ``K``, draws per state and proposal group.
    with_lagrange : bool, default False
        Learn ``log_alpha_prime`` (a 0-d float32 parameter initialised at 0).
    lagrange_thresh : float, default 0.0
        ``τ`` (kept as ``target_action_gap``).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``loss_alpha_prime`` is the mean over the batch with "mean" and "sum" (TorchRL's),
        per state with "none".
    deactivate_vmap : bool, default False
        Accepted; no effect (the members run as stacked matmuls or a loop, never vmap).
    scalar_output_mode : {None, "exclude", "non_tensor"}
        With ``reduction="none"``: leave ``alpha`` and ``entropy`` out (``None`` also
        warns), or include them (the output's batch size is then ``()``).
    seed : int, optional
        Seed of the loss's generators (members and draws); ``None`` with TorchRL modules
        draws from torch's default generator, in TorchRL's order and shapes.

    ``gamma`` raises ``TypeError`` as in TorchRL (use ``make_value_estimator``).

    Notes
    -----
    **Where arrayrl differs from TorchRL 0.14.1** (each recorded in the conformance
    suite):

    - *The log-sum-exp runs over the* ``3K`` *proposals of a state*, as in the paper's
      estimator, the official implementation and the reference implementation TorchRL's
      was ported from. TorchRL's lost the reshape to ``[B, K]``: it takes the
      log-sum-exp over the three groups of each proposal index ``k`` (three values) and
      averages over ``k`` through a ``[B·K] − [B, 1]`` broadcast, which also mixes every
      state's proposals into each sample's loss under ``reduction="none"`` and masks.
    - *The Lagrange multiplier weighs the CQL term*: ``loss_cql = Σ_i α′(C_i − τ)`` (α′
      fixed) and ``loss_alpha_prime`` trains ``log α′`` only. TorchRL returns the
      unweighted ``loss_cql`` and lets ``loss_alpha_prime`` reach the Q networks, so
      summing the terms gives the critics ``(1 − α′/2)·∇C``, which vanishes at α′ = 2
      and then rewards over-estimation. With ``reduction="none"`` TorchRL's Lagrange
      output fails (a 0-d ``loss_alpha_prime`` in a ``[B]`` TensorDict); arrayrl returns
      it per state.
    - *The uniform proposals fill the action box of the spec*: ``u = m + h·ε``,
      ``ε ~ U(−1, 1)`` (TorchRL's draw), ``m, h`` the box's centre and half-width, and
      ``log U = −Σ log(high − low)``. TorchRL assumes ``[-1, 1]`` (``log 0.5^d``), which
      is what arrayrl does without a spec or with a ``[-1, 1]`` box.

    TorchRL writes ``pred_q1``, ``pred_q2``, ``cql_q1_loss``, ``cql_q2_loss`` and the
    actor's ``loc`` / ``scale`` into the caller's batch to pass them between its
    methods; arrayrl computes the terms in one pass and writes only the priority
    ``max_i (Q_i(s, a) − y)²`` (``tensor_keys.priority``), as its other off-policy
    losses. The keys stay accepted by ``set_keys``. The third proposal group is
    evaluated at ``s′``, as TorchRL does (the official implementation evaluates
    ``Q_i(s, a′_k)``).

    Speed: the actor runs once at ``s`` and once at ``s′`` (TorchRL repeats the states
    ``K`` times and runs it on ``B·K`` rows twice more); the data action and the ``3K``
    proposals go through the critics in one ensemble call.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        state_action_value: Any = "state_action_value"
        log_prob: Any = "_log_prob"
        pred_q1: Any = "pred_q1"
        pred_q2: Any = "pred_q2"
        priority: Any = "td_error"
        cql_q1_loss: Any = "cql_q1_loss"
        cql_q2_loss: Any = "cql_q2_loss"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = _ESTIMATORS
    #: TorchRL fixes the ensemble at two Q networks.
    num_qvalue_nets = 2

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        delay_actor: bool = False,
        delay_qvalue: bool = True,
        gamma: float | None = None,
        temperature: float = 1.0,
        min_q_weight: float = 1.0,
        max_q_backup: bool = False,
        deterministic_backup: bool = True,
        num_random: int = 10,
        with_lagrange: bool = False,
        lagrange_thresh: float = 0.0,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        seed: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_common_args(owner, gamma, None, loss_function, "auto")
        target_entropy = target_entropy_arg(target_entropy)
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        self.loss_function = loss_function
        self.delay_actor = flag("delay_actor", delay_actor)
        self.delay_qvalue = flag("delay_qvalue", delay_qvalue)
        self.deactivate_vmap = flag("deactivate_vmap", deactivate_vmap)
        self._set_cql_hyperparameters(
            temperature, min_q_weight, max_q_backup, deterministic_backup, num_random
        )
        self.convert_to_functional(
            actor_network, "actor_network", create_target_params=self.delay_actor
        )
        self.convert_to_functional(
            qvalue_network,
            "qvalue_network",
            self.num_qvalue_nets,
            create_target_params=self.delay_qvalue,
            compare_against=leaves(self.actor_network_params),
        )
        self.reduction = reduction
        self._init_temperature(
            alpha_init=alpha_init,
            bounds=sac_log_alpha_bounds(min_alpha, max_alpha),
            fixed_alpha=fixed_alpha,
            target_entropy=target_entropy,
            action_spec=action_spec,
            actor=actor_network,
        )
        self.with_lagrange = flag("with_lagrange", with_lagrange)
        gap = hyperparameter("lagrange_thresh", lagrange_thresh, low=-math.inf, high=math.inf)
        if self.with_lagrange:
            self.target_action_gap = gap
            self.register_parameter(
                "log_alpha_prime", self.backend.from_numpy(np.zeros((), np.float32))
            )
        self._box = _ProposalBox.from_spec(
            action_spec if action_spec is not None else getattr(actor_network, "spec", None),
            self.tensor_keys.action,
            owner,
        )
        self.scalar_output_mode = output_mode(scalar_output_mode, self.reduction, owner)
        _ = self.target_entropy  # resolved now, as TorchRL (RuntimeError without a spec)

    def _set_cql_hyperparameters(
        self,
        temperature: Any,
        min_q_weight: Any,
        max_q_backup: Any,
        deterministic_backup: Any,
        num_random: Any,
    ) -> None:
        self.temperature = hyperparameter(
            "temperature", temperature, low=0.0, high=math.inf, low_open=True, high_open=True
        )
        self.min_q_weight = hyperparameter(
            "min_q_weight", min_q_weight, low=0.0, high=math.inf, high_open=True
        )
        self.max_q_backup = flag("max_q_backup", max_q_backup)
        self.deterministic_backup = flag("deterministic_backup", deterministic_backup)
        self.num_random = count("num_random", num_random)

    # -- keys -----------------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch entries read (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = list(self.actor_network.in_keys)
        keys = [tk.action, *(next_key(k) for k in (tk.reward, tk.done, tk.terminated))]
        keys += [*actor_keys, *(next_key(k) for k in actor_keys), *self.qvalue_network.in_keys]
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        keys = [
            "loss_actor",
            "loss_actor_bc",
            "loss_qvalue",
            "loss_cql",
            "loss_alpha",
            "alpha",
            "entropy",
        ]
        return [*keys, "loss_alpha_prime"] if self.with_lagrange else keys

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """No network: the loss gives the estimator the next-state value itself."""
        return {"value_network": None}

    # -- small pieces -----------------------------------------------------------------------
    def _target_tree(self, name: str, params: Mapping[str, Params] | None) -> Params:
        """The target tree of ``name``: its own copy with ``delay_*``, else the (given or
        own) parameters cut from the graph."""
        if self._owns_target[name]:
            return self._target_params[name]
        return self.detached_params(name, params)

    def _masked_mean(self, loss: Any, batch: ArrayDict) -> Any:
        """The mean of ``loss`` over the valid positions, whatever :attr:`reduction`."""
        xp = backend_of(loss).xp
        mask = self._batch_mask(batch, loss)
        if mask is None:
            return xp.mean(loss)
        count_ = xp.sum(xp.astype(mask, loss.dtype))
        return xp.sum(xp.where(mask, loss, xp.zeros_like(loss))) / xp.clip(count_, min=1.0)

    def _draw(self, dist: Any) -> tuple[Any, Any]:
        """``(x, log π(x))``: one reparameterised draw from ``dist``."""
        return dist.rsample_and_log_prob(rng=self.generator(dist.backend))

    def _repeated_dist(self, state: ArrayDict, n: int, tree: Params) -> Any:
        """π at each state of ``state`` (batch ``[*B]``, holding the actor's outputs after
        ``get_dist``) repeated ``n`` times along a new axis: batch ``[*B, n]``, without
        gradient. TorchRL repeats the states (``repeat_interleave``) and runs the actor
        again; the same draws come from the parameters broadcast."""
        actor = self.actor_network
        ndim = len(state.batch_size)
        if not hasattr(actor, "dist_keys"):  # an actor of the protocol only: run it again
            inputs = {k: _repeat(self.read(state, k), n, ndim) for k in actor.in_keys}
            batch = ArrayDict(inputs, (*state.batch_size, n))
            return actor.get_dist(
                batch, map_params(backend_of(*inputs.values()).stop_gradient, tree)
            )
        params = {}
        for key in actor.dist_keys.values():
            value = self.read(state, key)
            params[key] = _repeat(backend_of(value).stop_gradient(value), n, ndim)
        return actor.build_dist_from_params(ArrayDict(params, (*state.batch_size, n)))

    def _critic_inputs(self, parts: list[tuple[ArrayDict, int]], actions: Any) -> ArrayDict:
        """The critics' inputs for ``actions`` (``[*B, K, act]``), batch ``[*B, K]``.

        ``parts`` lists ``(states, k)`` in order: the next ``k`` actions along the
        proposal axis are taken at ``states`` (batch ``[*B]``), whose entries are
        repeated ``k`` times as broadcast views (and joined when there are several)."""
        ndim = actions.ndim - 2
        shape = tuple(actions.shape[:-1])
        xp = backend_of(actions).xp
        inputs = ArrayDict(batch_size=shape)
        action_key = as_tuple(self.tensor_keys.action)
        for key in self.qvalue_network.in_keys:
            if as_tuple(key) == action_key:
                continue
            pieces = [_repeat(self.read(states, key), k, ndim) for states, k in parts]
            inputs.set(key, pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=ndim))
        return inputs.set(self.tensor_keys.action, actions)

    def _q(self, inputs: ArrayDict, tree: Params) -> Any:
        """``Q_i`` of both members on ``inputs``, ``[N, *batch]``."""
        out = self.ensemble_outputs("qvalue_network", inputs, tree)
        return out[self.tensor_keys.state_action_value][..., 0]

    def _q_at(self, state: ArrayDict, action: Any, tree: Params) -> Any:
        """``Q_i(s, action)`` for both members, ``[N, *B]``."""
        inputs = select(state, self.qvalue_network.in_keys)
        return self._q(inputs.set(self.tensor_keys.action, action), tree)

    def _alpha_prime(self) -> Any:
        """``α′ = min(exp(log α′), 10⁶)``."""
        xp = backend_of(self.log_alpha_prime).xp
        return xp.clip(xp.exp(self.log_alpha_prime), max=ALPHA_PRIME_MAX)

    # -- the target -------------------------------------------------------------------------
    def _target_value(
        self,
        batch: ArrayDict,
        nxt: ArrayDict,
        actor: Params,
        params: Mapping[str, Params] | None,
    ) -> Any:
        """``y = r + γ(1 − terminated)·V̄(s′)`` without gradient; π's outputs at ``s′``
        are left in ``nxt`` (for the third proposal group). ``actor``: π's parameters
        without gradient (TorchRL draws from the online actor, ``delay_actor`` or not).
        Draws ``a′ ~ π(·|s′)``, then with ``max_q_backup`` ``K`` more per state."""
        q_tree = self._target_tree("qvalue_network", params)
        backend = backend_of(self.read(batch, self.tensor_keys.action))
        with backend.no_grad():
            dist = self.actor_network.get_dist(nxt, actor)
            action, log_prob = self._draw(dist)
            if self.max_q_backup:
                proposals, _ = self._draw(self._repeated_dist(nxt, self.num_random, actor))
                inputs = self._critic_inputs([(nxt, self.num_random)], proposals)
                values = backend.xp.max(self._q(inputs, q_tree), axis=-1)
                next_value = backend.xp.min(values, axis=0)
            else:
                next_value = backend.xp.min(self._q_at(nxt, action, q_tree), axis=0)
                if not self.deterministic_backup:
                    next_value = next_value - self.alpha * log_prob
            target = self.value_estimator.value_estimate(batch, next_value=next_value[..., None])
        return backend.stop_gradient(target[..., 0])

    # -- the conservative term --------------------------------------------------------------
    def _proposals(
        self, here: ArrayDict, there: ArrayDict, action: Any, actor: Params
    ) -> tuple[Any, Any]:
        """The ``3K`` proposals per state and their log-densities (no gradient):
        ``(actions [*B, 3K, act], log densities [*B, 3K])`` in the groups uniform,
        π(·|s), π(·|s′). Draws, in TorchRL's order: the uniform actions, then π's at
        ``s`` and at ``s′``."""
        k = self.num_random
        ndim = action.ndim - 1
        backend = backend_of(action)
        xp = backend.xp
        shape = (*tuple(action.shape[:-1]), k, int(action.shape[-1]))
        uniform = self._box.draw(self.generator(backend), shape, action.dtype)
        stop = backend.stop_gradient
        current, log_current = self._draw(self._repeated_dist(here, k, actor))
        following, log_following = self._draw(self._repeated_dist(there, k, actor))
        log_uniform = xp.full(
            shape[:-1], self._box.log_density(shape[-1]), dtype=action.dtype, device=backend.device
        )
        actions = xp.concat([uniform, stop(current), stop(following)], axis=ndim)
        log_density = xp.concat([log_uniform, stop(log_current), stop(log_following)], axis=-1)
        return actions, log_density

    def _cql_terms(self, q_data: Any, q_proposals: Any, log_density: Any) -> Any:
        """``C_i = w·(T·log Σ_j exp((Q_i(·, x_j) − log p(x_j)) / T) − Q_i(s, a))`` per
        member and state, ``[N, *B]``."""
        backend = backend_of(q_proposals)
        scaled = (q_proposals - log_density) / self.temperature
        log_sum = backend.logsumexp(scaled, axis=-1) * self.temperature
        return self.min_q_weight * log_sum - self.min_q_weight * q_data

    def _critic_losses(
        self,
        batch: ArrayDict,
        here: ArrayDict,
        there: ArrayDict,
        target: Any,
        params: Mapping[str, Params] | None,
    ) -> tuple[dict[str, Any], Any]:
        """``loss_qvalue``, ``loss_cql`` (and ``loss_alpha_prime``) reduced, and the
        priority ``max_i (Q_i(s, a) − y)²``. One critic call evaluates the data action
        and the ``3K`` proposals of every state."""
        action = self.read(batch, self.tensor_keys.action)
        xp = backend_of(action).xp
        ndim = action.ndim - 1
        actor = self.detached_params("actor_network", params)
        proposals, log_density = self._proposals(here, there, action, actor)
        actions = xp.concat([xp.expand_dims(action, axis=ndim), proposals], axis=ndim)
        k = self.num_random
        inputs = self._critic_inputs([(here, 1 + 2 * k), (there, k)], actions)
        values = self._q(inputs, self.network_params("qvalue_network", params))
        pred, q_proposals = values[..., 0], values[..., 1:]
        backend = backend_of(pred)
        td_error = xp.max(backend.stop_gradient((pred - target) ** 2), axis=0)
        distance = distance_loss(
            pred, xp.broadcast_to(target, tuple(pred.shape)), self.loss_function
        )
        losses = {"loss_qvalue": self.reduce_loss(xp.sum(distance, axis=0), batch)}
        cql = self._cql_terms(pred, q_proposals, log_density)
        losses.update(self._conservative_losses(cql, batch))
        return losses, td_error

    def _conservative_losses(self, cql: Any, batch: ArrayDict) -> dict[str, Any]:
        """``loss_cql = Σ_i C_i``, or with the Lagrange multiplier ``Σ_i α′(C_i − τ)``
        (α′ fixed) and ``loss_alpha_prime = −½ Σ_i α′(mean C_i − τ)`` (``C`` fixed)."""
        backend = backend_of(cql)
        xp = backend.xp
        if not self.with_lagrange:
            return {"loss_cql": self.reduce_loss(xp.sum(cql, axis=0), batch)}
        alpha_prime = self._alpha_prime()
        gap = cql - self.target_action_gap
        weighted = backend.stop_gradient(alpha_prime) * xp.sum(gap, axis=0)
        fixed = backend.stop_gradient(gap)
        if self.reduction == "none":
            prime = self.reduce_loss(-0.5 * alpha_prime * xp.sum(fixed, axis=0), batch)
        else:
            means = sum(self._masked_mean(fixed[i, ...], batch) for i in range(fixed.shape[0]))
            prime = -0.5 * alpha_prime * means
        return {"loss_cql": self.reduce_loss(weighted, batch), "loss_alpha_prime": prime}

    # -- the actor ---------------------------------------------------------------------------
    def _actor_losses(
        self, batch: ArrayDict, dist: Any, params: Mapping[str, Params] | None
    ) -> tuple[dict[str, Any], Any]:
        """``loss_actor_bc`` and ``loss_actor`` reduced, and ``log π(ã|s)`` of the actor
        loss's draw (no gradient). Draws the BC action, then the actor's (TorchRL's
        order); the critics' parameters are held fixed."""
        _, log_prob_bc = self._draw(dist)
        log_prob_data = dist.log_prob(self.read(batch, self.tensor_keys.action))
        action, log_prob = self._draw(dist)
        backend = backend_of(log_prob)
        q_tree = self.detached_params("qvalue_network", params)
        min_q = backend.xp.min(self._q_at(batch, action, q_tree), axis=0)
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(log_prob.shape)} and {tuple(min_q.shape)}"
            )
        alpha = self.alpha
        losses = {
            "loss_actor": self.reduce_loss(alpha * log_prob - min_q, batch),
            "loss_actor_bc": self.reduce_loss(alpha * log_prob_bc - log_prob_data, batch),
        }
        return losses, backend.stop_gradient(log_prob)

    def alpha_loss(self, log_prob: Any) -> Any:
        """``−log α·(log π + H̄)`` per sample (unreduced), ``log_prob`` without gradient."""
        return -self._log_alpha() * (log_prob + self.target_entropy)

    # -- the loss --------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor``, ``loss_actor_bc``, ``loss_qvalue``, ``loss_cql``,
        ``loss_alpha`` (and ``loss_alpha_prime``), ``alpha``, ``entropy``; the priority
        goes into the caller's batch (``LossModule.__call__``).

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The actor's and critics' inputs, ``tensor_keys.action``, and under ``"next"``
            the actor's and critics' inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "qvalue_network": stacked tree}`` to compute with
            instead of the loss's own parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        self._clamp_log_alpha()
        there = self.read(batch, "next", what="next").clone(recurse=False)
        target = self._target_value(
            batch, there, self.detached_params("actor_network", params), params
        )
        here = batch.clone(recurse=False)
        dist = self.actor_network.get_dist(here, self.network_params("actor_network", params))
        critic, td_error = self._critic_losses(batch, here, there, target, params)
        actor, log_prob = self._actor_losses(batch, dist, params)
        losses = {
            "loss_actor": actor["loss_actor"],
            "loss_actor_bc": actor["loss_actor_bc"],
            "loss_qvalue": critic["loss_qvalue"],
            "loss_cql": critic["loss_cql"],
            "loss_alpha": self.reduce_loss(self.alpha_loss(log_prob), batch),
        }
        if self.with_lagrange:
            losses["loss_alpha_prime"] = critic["loss_alpha_prime"]
        return self._pack(batch, losses, log_prob, td_error)

    def _pack(
        self, batch: ArrayDict, losses: dict[str, Any], log_prob: Any, td_error: Any
    ) -> ArrayDict:
        """The output with ``alpha`` and ``entropy`` (TorchRL's ``scalar_output_mode``)
        and the priority."""
        backend = backend_of(log_prob)
        entropy = backend.stop_gradient(backend.xp.mean(-log_prob))
        if self.reduction != "none" or self.scalar_output_mode == "non_tensor":
            out = ArrayDict({**losses, "alpha": self.alpha, "entropy": entropy})
        else:
            out = ArrayDict(losses, tuple(batch.batch_size))
        return out.set(self.tensor_keys.priority, td_error)


# =========================================================================================
# DiscreteCQLLoss
# =========================================================================================
class DiscreteCQLLoss(LossModule):
    """The discrete CQL loss (see the module docstring for the equations).

    Parameters
    ----------
    value_network : QValueActor, Layer or torch.nn.Module
        The Q network over the actions: an arrayrl or TorchRL ``QValueActor`` (writing
        ``action_value`` and the greedy ``chosen_action_value``), or a bare network
        (arrayrl layer or ``torch.nn.Module`` reading ``"observation"``), wrapped in a
        ``QValueActor`` with ``action_space`` as TorchRL does.
    loss_function : {"l2", "l1", "smooth_l1"}, default "l2"
    delay_value : bool, default True
        Bootstrap from a target copy ``Q̄`` (else from the online network, detached).
    action_space : str or spec, optional
        ``"one-hot"`` or ``"categorical"`` (the batch's action is an index ``[*B]``),
        or a spec of either kind; by default the value network's (one-hot with
        TorchRL's warning when it has none).
    reduction : {"mean", "sum", "none"}, default "mean"

    ``gamma`` raises ``TypeError`` as in TorchRL (use ``make_value_estimator``).

    Outputs: ``loss_qvalue``, ``loss_cql``, ``td_error`` (TorchRL's diagnostic: the
    squared TD error averaged over the first batch axis, ``[*B[1:], 1]``), ``pred_value``
    and ``target_value`` (batch means, no gradient). The per-sample priority
    ``(Q(s, a) − y)²`` (``[*B, 1]``) is set in the caller's batch under
    ``tensor_keys.priority``, as TorchRL does.

    Notes
    -----
    **Where arrayrl differs from TorchRL 0.14.1**: with ``delay_value=True`` the target
    bootstraps from the target parameters. TorchRL's builds its estimator on a copy of
    the value network holding the *online* parameters and passes the target ones under
    a keyword the estimator ignores, so its target network is never read (with
    ``delay_value=False`` both libraries bootstrap from the online network).

    TorchRL writes ``pred_val`` (the action values) into the caller's batch for its
    ``cql_loss`` method; arrayrl computes both terms in one pass and writes only the
    priority. The key stays accepted by ``set_keys``. Ties in the greedy target
    ``max_b Q̄(s′, b)`` count once (arrayrl's ``QValueModule``; TorchRL's one-hot rule
    adds every tied maximum).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value_target: Any = "value_target"
        value: Any = "chosen_action_value"
        action_value: Any = "action_value"
        action: Any = "action"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        pred_val: Any = "pred_val"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = _ESTIMATORS
    out_keys: ClassVar[list[str]] = ["loss_qvalue", "loss_cql"]

    def __init__(
        self,
        value_network: Any,
        *,
        loss_function: str | None = "l2",
        delay_value: bool = True,
        gamma: float | None = None,
        action_space: Any = None,
        reduction: str | None = None,
    ) -> None:
        owner = type(self).__name__
        check_common_args(owner, gamma, None, loss_function, "auto")
        super().__init__()
        self.delay_value = flag("delay_value", delay_value)
        self.loss_function = loss_function
        self.convert_to_functional(
            qvalue_actor_for(value_network, action_space, owner),
            "value_network",
            create_target_params=self.delay_value,
        )
        self.action_space = discrete_action_space(action_space, owner, network=self.value_network)
        self.reduction = reduction

    @property
    def in_keys(self) -> list[Any]:
        """The batch entries read (TorchRL's ``in_keys``, sorted as TorchRL sorts them)."""
        tk = self.tensor_keys
        network = list(self.value_network.in_keys)
        keys = {
            tk.action,
            *(next_key(k) for k in (tk.reward, tk.done, tk.terminated)),
            *network,
            *(next_key(k) for k in network),
        }
        return sorted(keys, key=str)

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """No network: the loss gives the estimator ``max_b Q̄(s′, b)`` itself."""
        return {"value_network": None}

    # -- pieces ---------------------------------------------------------------------------
    def _action_values(self, batch: ArrayDict, tree: Params) -> Any:
        """``Q(s, ·)``, ``[*B, |A|]`` (the network runs on a shallow copy)."""
        state = batch.clone(recurse=False)
        self.value_network(state, tree)
        return self.read(state, self.tensor_keys.action_value)

    def _chosen(self, values: Any, action: Any) -> Any:
        """``Q(s, a)`` of the batch's action, ``[*B]`` (:func:`action_value_at`)."""
        return action_value_at(
            values, action, self.action_space, self.tensor_keys.action, owner=type(self).__name__
        )

    def _target(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``y = r + γ(1 − terminated) max_b Q̄(s′, b)`` (no gradient)."""
        nxt = self.read(batch, "next", what="next").clone(recurse=False)
        if self._owns_target["value_network"]:
            tree = self._target_params["value_network"]
        else:
            tree = self.detached_params("value_network", params)
        backend = backend_of(self.read(nxt, self.tensor_keys.reward))
        with backend.no_grad():
            self.value_network(nxt, tree)
            next_value = self.read(nxt, self.tensor_keys.value)
            target = self.value_estimator.value_estimate(batch, next_value=next_value)
        return backend.stop_gradient(target[..., 0])

    def _terms(self, batch: Any, params: Mapping[str, Params] | None) -> tuple[ArrayDict, Any]:
        """The outputs and the per-sample priority ``(Q(s, a) − y)²``, ``[*B, 1]``."""
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        values = self._action_values(batch, self.network_params("value_network", params))
        backend = backend_of(values)
        xp = backend.xp
        chosen = self._chosen(values, self.read(batch, self.tensor_keys.action))
        target = self._target(batch, params)
        td_error = backend.stop_gradient((chosen - target) ** 2)[..., None]
        loss_qvalue = 0.5 * distance_loss(chosen, target, self.loss_function)
        loss_cql = backend.logsumexp(values, axis=-1) - chosen
        stop = backend.stop_gradient
        out = ArrayDict(
            {
                "loss_qvalue": self.reduce_loss(loss_qvalue, batch),
                "loss_cql": self.reduce_loss(loss_cql, batch),
                "td_error": xp.mean(td_error, axis=0),
                "pred_value": stop(xp.mean(values)),
                "target_value": xp.mean(target),
            }
        )
        return out, td_error

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_qvalue``, ``loss_cql`` and TorchRL's diagnostics ``td_error``,
        ``pred_value``, ``target_value``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The value network's inputs, ``tensor_keys.action`` (one-hot, or an index for
            ``"categorical"``), and under ``"next"`` the network's inputs, ``reward``,
            ``done`` and ``terminated``.
        params : mapping, optional
            ``{"value_network": tree}`` to compute with instead of the loss's own.
        """
        return self._terms(batch, params)[0]

    def __call__(self, batch: Any, params: Mapping[str, Params] | None = None) -> Any:
        """:meth:`forward`, and the per-sample priority set in the caller's ``batch``
        (a new entry; TorchRL's output keeps its own ``td_error`` diagnostic)."""
        out, priority = self._terms(batch, params)
        self._hand_over_priority(batch, ArrayDict().set(self.tensor_keys.priority, priority))
        return out.to_tensordict() if is_tensordict(batch) else out


# =========================================================================================
# helpers
# =========================================================================================
class _ProposalBox:
    """The box the uniform CQL proposals fill: ``u = m + h·ε``, ``ε ~ U(−1, 1)``.

    ``None`` bounds (no spec) are TorchRL's ``[-1, 1]``, drawn and scored exactly as
    TorchRL does (``uniform_(-1, 1)``, ``log 0.5^d``).
    """

    def __init__(self, low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        self.low, self.high = low, high
        unit = low is None or (np.all(low == -1.0) and np.all(high == 1.0))
        self.centre = None if unit else (high + low) / 2.0
        self.half_width = None if unit else (high - low) / 2.0
        self._on: dict[tuple[Any, str, int], tuple[Any, Any]] = {}

    @classmethod
    def from_spec(cls, spec: Any, action_key: Any, owner: str) -> _ProposalBox:
        """The box of ``spec`` (a ``Bounded`` leaf, or a composite holding one at
        ``action_key``); TorchRL's ``[-1, 1]`` when there is no spec or no entry.
        ``ValueError`` for another kind of spec or an unbounded box."""
        from arrayrl.specs import Composite, as_spec, bounds_from

        if spec is None:
            return cls()
        spec = as_spec(spec, name="action_spec", owner=owner)
        if isinstance(spec, Composite) and spec.get(action_key, None) is None:
            return cls()
        try:
            low, high = bounds_from(spec, owner=owner, action_key=action_key)
        except ValueError as err:
            raise ValueError(
                f"{err}; {owner} draws uniform action proposals in the action box, so the "
                "action spec must be Bounded (pass action_spec=Bounded(low, high, shape))"
            ) from None
        low, high = (_host_float(b) for b in (low, high))
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"{owner}: the action box must be finite, got [{low}, {high}]")
        return cls(low, high)

    def log_density(self, dims: int) -> float:
        """``log U`` of one action of ``dims`` elements: ``−Σ log(high − low)``."""
        if self.centre is None:
            return float(np.log(0.5**dims))
        return -float(np.sum(np.log(self._per_element(self.high - self.low, dims))))

    def _per_element(self, x: np.ndarray, dims: int) -> np.ndarray:
        """``x`` as one value per action element; ``ValueError`` if the box's shape does
        not fit actions of ``dims`` elements."""
        if x.size not in (1, dims):
            raise ValueError(
                f"the action spec's box has shape {x.shape}, the batch's actions have {dims} "
                "elements"
            )
        return np.array(np.broadcast_to(np.reshape(x, (-1,)), (dims,)), dtype=np.float64)

    def draw(self, rng: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform actions of ``shape`` in the box (TorchRL's ``uniform_(-1, 1)`` draw)."""
        unit = rng.uniform(shape, dtype, low=-1.0, high=1.0)
        if self.centre is None:
            return unit
        centre, half = self._bounds_on(unit, shape[-1])
        return centre + half * unit

    def _bounds_on(self, like: Any, dims: int) -> tuple[Any, Any]:
        backend = backend_of(like)
        key = (backend, str(like.dtype), dims)
        if key not in self._on:

            def convert(x: np.ndarray) -> Any:
                host = self._per_element(x, dims)
                return backend.xp.astype(backend.from_numpy(host), like.dtype)

            self._on[key] = (convert(self.centre), convert(self.half_width))
        return self._on[key]


def _host_float(bound: Any) -> np.ndarray:
    """A bound (number or array of any backend) as a float64 NumPy array."""
    if hasattr(bound, "shape") and not isinstance(bound, np.ndarray):
        bound = backend_of(bound).to_numpy(bound)
    return np.asarray(bound, dtype=np.float64)


def _repeat(x: Any, n: int, ndim: int) -> Any:
    """``x`` (leading batch axes ``ndim``) repeated ``n`` times along a new axis after
    them, as a broadcast view."""
    xp = backend_of(x).xp
    shape = (*tuple(x.shape[:ndim]), n, *tuple(x.shape[ndim:]))
    return xp.broadcast_to(xp.expand_dims(x, axis=ndim), shape)
