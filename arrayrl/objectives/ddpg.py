"""Deep Deterministic Policy Gradient: ``DDPGLoss``.

Lillicrap et al. 2016, "Continuous control with deep reinforcement learning",
https://arxiv.org/abs/1509.02971. With a deterministic policy μ_φ, a critic Q_θ, target
copies φ̄, θ̄ and a transition ``(s, a, r, s′)``:

- ``y = r + γ (1 − terminated) Q_θ̄(s′, μ_φ̄(s′))`` (TD(0); TD(1) and TD(λ) bootstrap on
  the same ``Q_θ̄(s′, μ_φ̄(s′))``), without gradient;
- ``loss_value = d(Q_θ(s, a), y)`` (``d`` = ``loss_function``);
- ``loss_actor = −Q_θ(s, μ_φ(s))`` with the critic's parameters cut from the graph
  (the deterministic policy gradient of Silver et al. 2014).

Arguments, defaults, keys and outputs follow TorchRL 0.14.1 (``torchrl/objectives/ddpg.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import flag
from arrayrl.backends import Backend, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Module, Params, flatten_params, map_params

from ._soft import next_key
from .common import LossModule
from .td3 import act, check_common_args, forward_estimator_keys
from .utils import ValueEstimators, distance_loss

__all__ = ["DDPGLoss"]


class DDPGLoss(LossModule):
    """The DDPG loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : Module
        The deterministic policy μ_φ, writing the action the critic reads: an arrayrl or
        TorchRL ``Actor``, a ``TensorDictModule``, or a ``ProbabilisticActor`` with a
        ``Delta`` / ``TanhDelta`` distribution (its deterministic sample is used).
    value_network : Module
        The critic Q(s, a) (one network, not an ensemble), writing
        ``tensor_keys.state_action_value``.
    loss_function : {"l2", "l1", "smooth_l1"}, default "l2"
    delay_actor : bool, default False
        Keep a target copy φ̄ of the actor (else μ_φ̄ is μ_φ without gradient).
    delay_value : bool, default True
        Keep a target copy θ̄ of the critic.
    separate_losses : bool, default False
        Parameters the critic shares with the actor enter the critic without gradient,
        so only ``loss_actor`` trains them (TorchRL's ``compare_against``).
    reduction : {"mean", "sum", "none"}, default "mean"
    use_prioritized_weights : {"auto", True, False}, default "auto"
        Weight the losses by the batch's ``priority_weight`` entry when present.
    seed : int, optional
        Accepted as by every arrayrl loss; DDPG draws nothing.

    ``gamma`` raises ``TypeError``, as in TorchRL: use
    ``make_value_estimator(..., gamma=...)``.

    Notes
    -----
    The value estimator's network is the actor followed by the critic (TorchRL's
    ``ActorCriticWrapper``), called on ``s′`` with the target parameters
    ``{"module": {"0": φ̄, "1": θ̄}}``; ``loss.value_estimator`` can be used on its own
    that way. The inputs of both losses are cut from the graph (TorchRL's ``detach()``).

    **Priorities.** ``(Q_θ(s, a) − y)²`` is set in the caller's batch under
    ``tensor_keys.priority`` (a new entry, no array of the caller is written) and also
    returned, as TorchRL does.

    Outputs: ``loss_actor``, ``loss_value``, the priority, ``pred_value`` and
    ``target_value`` (``[*B]``), ``pred_value_max`` and ``target_value_max`` (scalars), the
    diagnostics without gradient.
    """

    priority_in_output = True  # TorchRL returns td_error and sets it in the batch

    @dataclasses.dataclass
    class _AcceptedKeys:
        state_action_value: Any = "state_action_value"
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
    #: The outputs TorchRL declares (its ``forward`` also returns ``td_error``).
    out_keys: ClassVar[list[str]] = [
        "loss_actor",
        "loss_value",
        "pred_value",
        "target_value",
        "pred_value_max",
        "target_value_max",
    ]

    def __init__(
        self,
        actor_network: Any,
        value_network: Any,
        *,
        loss_function: str = "l2",
        delay_actor: bool = False,
        delay_value: bool = True,
        gamma: float | None = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        use_prioritized_weights: str | bool = "auto",
        seed: int | None = None,
    ) -> None:
        check_common_args(type(self).__name__, gamma, None, loss_function, use_prioritized_weights)
        super().__init__()
        self.seed = seed
        self.delay_actor = flag("delay_actor", delay_actor)
        self.delay_value = flag("delay_value", delay_value)
        self.separate_losses = flag("separate_losses", separate_losses)
        self.use_prioritized_weights = use_prioritized_weights
        self.loss_function = loss_function
        self.reduction = reduction
        self.convert_to_functional(
            actor_network, "actor_network", create_target_params=self.delay_actor
        )
        self.convert_to_functional(
            value_network, "value_network", create_target_params=self.delay_value
        )
        self.actor_critic = ActorCritic(self.actor_network, self.value_network)

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads, sorted as TorchRL's ``in_keys``."""
        tk = self.tensor_keys
        actor_keys, value_keys = self.actor_network.in_keys, self.value_network.in_keys
        keys = {next_key(k) for k in (tk.reward, tk.done, tk.terminated)}
        keys |= {_key(k) for k in (*actor_keys, *value_keys)}
        keys |= {next_key(k) for k in (*actor_keys, *value_keys)}
        if self.use_prioritized_weights:
            keys.add(_key(tk.priority_weight))
        return sorted(keys, key=str)

    def _forward_value_estimator_keys(self) -> None:
        forward_estimator_keys(self)

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The estimator bootstraps on ``Q(s′, μ(s′))``: the actor, then the critic."""
        return {"value_network": self.actor_critic}

    # -- parameters -------------------------------------------------------------------------
    def _value_params(self, params: Mapping[str, Params] | None) -> Params:
        """The critic's tree; with ``separate_losses`` the arrays it shares with the
        actor are cut from the graph (TorchRL's ``compare_against``)."""
        tree = self.network_params("value_network", params)
        if not self.separate_losses:
            return tree
        actor = self.network_params("actor_network", params)
        shared = {id(leaf) for leaf in flatten_params(actor).values()}

        def cut(leaf: Any) -> Any:
            return backend_of(leaf).stop_gradient(leaf) if id(leaf) in shared else leaf

        return map_params(cut, tree)

    def _target(self, name: str, params: Mapping[str, Params] | None) -> Params:
        """The target tree of ``name``: its own copy with ``delay_*``, else the
        (given or own) parameters cut from the graph."""
        if self._owns_target[name]:
            return self._target_params[name]
        return self.detached_params(name, params)

    def _q(self, batch: ArrayDict, params: Params) -> Any:
        """``Q(s, a)`` from ``batch``, without the trailing unit dim."""
        self.value_network(batch, params)
        return self.read(batch, self.tensor_keys.state_action_value)[..., 0]

    # -- the two terms ----------------------------------------------------------------------
    def loss_actor(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(−Q_θ(s, μ_φ(s))`` reduced, ``{})``; the critic's parameters are cut."""
        batch = self.working_copy(batch)
        actor, critic = self.actor_network, self.value_network
        exclusive = set(critic.in_keys) - {*map(_key, actor.in_keys), *map(_key, actor.out_keys)}
        state = batch.select(*actor.in_keys, *exclusive, strict=False).detach()
        act(actor, state, self.network_params("actor_network", params))
        q = self._q(state, self.detached_params("value_network", params))
        return self.reduce_loss(-q, batch, weights=self.priority_weight(batch)), {}

    def loss_value(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(d(Q_θ(s, a), y)`` reduced, diagnostics``)``: the priority
        ``(Q_θ(s, a) − y)²``, ``pred_value``, ``target_value`` and their maxima."""
        batch = self.working_copy(batch)
        state = batch.select(*self.value_network.in_keys, strict=False).detach()
        pred = self._q(state, self._value_params(params))
        target = self.value_estimator.value_estimate(batch, target_params=self._targets(params))
        target = target[..., 0]
        loss = distance_loss(pred, target, self.loss_function)
        loss = self.reduce_loss(loss, batch, weights=self.priority_weight(batch))
        backend = backend_of(pred)
        return loss, _value_diagnostics(backend, pred, target)

    def _targets(self, params: Mapping[str, Params] | None) -> Params:
        """The actor-critic's target tree ``{"module": {"0": φ̄, "1": θ̄}}``."""
        actor = self._target("actor_network", params)
        return {"module": {"0": actor, "1": self._target("value_network", params)}}

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_value = d(Q_θ(s, a), y)`` and ``loss_actor = −Q_θ(s, μ_φ(s))``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The critic's inputs (with the stored action), the actor's, and under
            ``"next"`` the actor's and critic's inputs, ``reward``, ``done`` and
            ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "value_network": tree}`` to compute with instead of
            the loss's own parameters (pure-function use).

        Returns
        -------
        ArrayDict
            ``loss_actor``, ``loss_value``, the priority, ``pred_value``,
            ``target_value``, ``pred_value_max``, ``target_value_max``.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, next_key(self.tensor_keys.reward))
        loss_value, info = self.loss_value(batch, params)
        loss_actor, _ = self.loss_actor(batch, params)
        out = ArrayDict({"loss_actor": loss_actor, "loss_value": loss_value})
        priority = info.pop("td_error")
        out.update(info)
        return out.set(self.tensor_keys.priority, priority)


def _value_diagnostics(backend: Backend, pred: Any, target: Any) -> dict[str, Any]:
    """TorchRL's diagnostics of the value loss, without gradient."""
    pred, target = backend.stop_gradient(pred), backend.stop_gradient(target)
    xp = backend.xp
    return {
        "td_error": (pred - target) ** 2,
        "pred_value": pred,
        "target_value": target,
        "target_value_max": xp.max(target),
        "pred_value_max": xp.max(pred),
    }


class ActorCritic(Module):
    """The actor followed by the critic (TorchRL's ``ActorCriticWrapper``): writes the
    deterministic action, then ``Q(s, μ(s))``. Its tree is ``{"module": {"0": actor,
    "1": critic}}``, TorchRL's layout."""

    def __init__(self, actor: Module, critic: Module) -> None:
        self.actor, self.critic = actor, critic
        produced = {*map(_key, actor.in_keys), *map(_key, actor.out_keys)}
        exclusive = [k for k in critic.in_keys if _key(k) not in produced]
        self.in_keys = list(dict.fromkeys([*actor.in_keys, *exclusive]))
        self.out_keys = list(dict.fromkeys([*actor.out_keys, *critic.out_keys]))

    @property
    def params(self) -> Params:
        return {"module": {"0": self.actor.params, "1": self.critic.params}}

    @params.setter
    def params(self, tree: Params) -> None:
        self.actor.params, self.critic.params = tree["module"]["0"], tree["module"]["1"]

    def forward(self, batch: Any, params: Params) -> Any:
        act(self.actor, batch, params["module"]["0"])
        return self.critic(batch, params["module"]["1"])

    def to(self, backend: Any, device: Any = None) -> ActorCritic:
        self.actor.to(backend, device)
        self.critic.to(backend, device)
        return self


def _key(key: Any) -> Any:
    """A key in one spelling: a 1-tuple as its string."""
    return key[0] if isinstance(key, tuple) and len(key) == 1 else key
