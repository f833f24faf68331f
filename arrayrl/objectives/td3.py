"""Twin Delayed DDPG: ``TD3Loss``.

Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in Actor-Critic
Methods", https://arxiv.org/abs/1802.09477. With a deterministic policy π_φ, an ensemble
of ``N`` critics Q_θ₁ … Q_θ_N, target copies φ̄, θ̄ and a transition ``(s, a, r, s′)``:

- target policy smoothing: ``ε = clip(σ·ξ, −c, c)`` with ``ξ ~ N(0, 1)``, and
  ``a′ = clip(π_φ̄(s′) + ε, low, high)``;
- clipped double Q: ``y = r + γ (1 − terminated) minᵢ Q_θ̄ᵢ(s′, a′)`` (TD(0); TD(1) and
  TD(λ) bootstrap on the same ``minᵢ Q_θ̄ᵢ``), without gradient;
- ``loss_qvalue = Σᵢ d(Q_θᵢ(s, a), y)`` (``d`` = ``loss_function``);
- ``loss_actor = −Q_θ₁(s, π_φ(s))`` with the critics' parameters cut from the graph.

Arguments, defaults, keys and outputs follow TorchRL 0.14.1 (``torchrl/objectives/td3.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import count, flag
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, flatten_params
from arrayrl.specs import Bounded, bounds_from

from ._soft import as_tuple, next_key
from .common import LossModule
from .utils import ValueEstimators, distance_loss

__all__ = ["TD3Loss"]

_DISTANCES = ("l1", "l2", "smooth_l1")
#: TorchRL 0.14.1's message for ``gamma`` given to the constructor.
GAMMA_ERROR = (
    "Passing gamma / lambda parameters through the loss constructor is a deprecated feature. "
    "To customize your value function, run "
    "`loss_module.make_value_estimator(ValueEstimators.<value_fun>, gamma=val)`."
)


class TD3Loss(LossModule):
    """The TD3 loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : Module
        The deterministic policy π_φ, writing ``tensor_keys.action``: an arrayrl or TorchRL
        ``Actor``, a ``TensorDictModule``, or a ``ProbabilisticActor`` with a ``Delta`` /
        ``TanhDelta`` distribution (its deterministic sample is used).
    qvalue_network : Module or list of Module
        The critic Q(s, a), writing ``tensor_keys.state_action_value``. One module is
        expanded into ``num_qvalue_nets`` members by TorchRL's rule (each leaf redrawn
        uniformly between its min and max, from :meth:`generator`); a list is stacked.
    action_spec : spec, optional
        A ``Bounded`` spec (arrayrl's or TorchRL's, or a composite holding one at
        ``tensor_keys.action``) giving the bounds of ``a′``. Exactly one of
        ``action_spec`` and ``bounds`` is required.
    bounds : tuple, optional
        ``(low, high)``, numbers or arrays.
    num_qvalue_nets : int, default 2
    policy_noise : float, default 0.2
        σ of the target policy smoothing noise (schedulable, >= 0).
    noise_clip : float, default 0.5
        ``c``, the noise clipping range (schedulable, >= 0).
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    delay_actor : bool, default True
        Keep a target copy φ̄ of the actor (else ``a′`` comes from π_φ without gradient).
    delay_qvalue : bool, default True
        Keep target copies θ̄ of the critics.
    separate_losses : bool, default False
        Parameters the critic shares with the actor enter the critics without gradient,
        so only ``loss_actor`` trains them (TorchRL's ``compare_against``).
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for TorchRL compatibility; without effect (arrayrl's ensembles are
        stacked parameters, never ``vmap``).
    use_prioritized_weights : {"auto", True, False}, default "auto"
        Weight the losses by the batch's ``priority_weight`` entry when present.
    seed : int, optional
        Seed of the loss's generator (the smoothing noise and the ensemble's members).
        ``None``: with TorchRL / torch networks, torch's default generator in TorchRL's
        order (``torch.manual_seed`` reproduces TorchRL's numbers), else seed 0.

    ``gamma`` raises ``TypeError`` and ``priority_key`` ``RuntimeError``, as in TorchRL:
    use ``make_value_estimator(..., gamma=...)`` and ``set_keys(priority=...)``.

    Notes
    -----
    **Delayed policy updates.** TorchRL 0.14.1's ``TD3Loss`` has no policy delay (its
    ``delay_actor`` is the switch for the target actor, and arrayrl refuses anything but a
    boolean there). To update the actor every ``d``-th critic step as in the paper,
    compute both terms every step and step the actor's optimizer on ``loss_actor`` only
    every ``d``-th iteration, updating the targets then::

        losses = loss(batch)
        critic_opt.zero_grad(); losses["loss_qvalue"].backward(); critic_opt.step()
        if step % d == 0:
            actor_opt.zero_grad(); losses["loss_actor"].backward(); actor_opt.step()
            updater.step()        # SoftUpdate(loss, tau=0.005) or HardUpdate(loss, ...)

    (``loss_actor`` does not reach the critics' parameters, and ``loss_qvalue`` does not
    reach the actor's, so the two backward passes are independent.)

    **Priorities.** ``max_i (Q_θᵢ(s, a) − y)²`` is set in the caller's batch under
    ``tensor_keys.priority`` (shape: the batch's), as TorchRL does: a new entry, no array
    of the caller is written.

    Outputs: ``loss_actor``, ``loss_qvalue``, ``state_action_value_actor`` (``[N, *B]``,
    all members' Q(s, π(s))), ``next_state_value`` (``[*B]``, minᵢ Q_θ̄ᵢ(s′, a′)),
    ``pred_value`` (``[N, *B]``), ``target_value`` (``[*B]``), all diagnostics without
    gradient, and the priority.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
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
    #: The outputs TorchRL declares (arrayrl adds the priority, ``tensor_keys.priority``).
    out_keys: ClassVar[list[str]] = [
        "loss_actor",
        "loss_qvalue",
        "pred_value",
        "state_action_value_actor",
        "next_state_value",
        "target_value",
    ]

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        action_spec: Any = None,
        bounds: Any = None,
        num_qvalue_nets: int = 2,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        use_prioritized_weights: str | bool = "auto",
        seed: int | None = None,
    ) -> None:
        owner = type(self).__name__
        check_common_args(owner, gamma, priority_key, loss_function, use_prioritized_weights)
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        self.delay_actor = flag("delay_actor", delay_actor)
        self.delay_qvalue = flag("delay_qvalue", delay_qvalue)
        self.separate_losses = flag("separate_losses", separate_losses)
        self.deactivate_vmap = flag("deactivate_vmap", deactivate_vmap)
        self.num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        self.use_prioritized_weights = use_prioritized_weights
        self.loss_function = loss_function
        self.reduction = reduction
        self.register_coeff("policy_noise", policy_noise)
        self.register_coeff("noise_clip", noise_clip)
        action_key = self.tensor_keys.action
        low, high = bounds_from(action_spec, bounds, owner=owner, action_key=action_key)
        self._action_box = Bounded(low, high)
        self.convert_to_functional(
            actor_network, "actor_network", create_target_params=self.delay_actor
        )
        shared = flatten_params(self.actor_network_params).values() if separate_losses else None
        self.convert_to_functional(
            qvalue_network,
            "qvalue_network",
            self.num_qvalue_nets,
            create_target_params=self.delay_qvalue,
            compare_against=shared,
        )

    # -- attributes TorchRL users read ----------------------------------------------------
    @property
    def min_action(self) -> Any:
        """The lower bound of the smoothed target action (as given)."""
        return self._action_box.low

    @property
    def max_action(self) -> Any:
        """The upper bound of the smoothed target action (as given)."""
        return self._action_box.high

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = self.actor_network.in_keys
        keys = [tk.action, *(next_key(k) for k in (tk.reward, tk.done, tk.terminated))]
        keys += [*actor_keys, *(next_key(k) for k in actor_keys), *self.qvalue_network.in_keys]
        return list(dict.fromkeys(keys))

    def _forward_value_estimator_keys(self) -> None:
        forward_estimator_keys(self)

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """No network: the loss passes the bootstrap value ``minᵢ Q_θ̄ᵢ(s′, a′)``."""
        return {"value_network": None}

    # -- pieces of the objective -----------------------------------------------------------
    def _q_values(self, batch: ArrayDict, params: Params) -> Any:
        """``Qᵢ(s, a)`` of every member, ``[N, *B]``, read from ``batch``'s Q inputs."""
        outputs = self.ensemble_outputs("qvalue_network", batch, params)
        key = self.tensor_keys.state_action_value
        return read_output(outputs, key, type(self).__name__)[..., 0]

    def _smoothing_noise(self, action: Any) -> Any:
        """``clip(σ·ξ, −c, c)``, ``ξ ~ N(0, 1)`` of the action's shape, from the loss's
        generator (TorchRL's ``randn_like(action)``, drawn at the same point)."""
        backend = backend_of(action)
        xi = self.generator(backend).normal(tuple(action.shape), action.dtype)
        return backend.xp.clip(self.policy_noise * xi, -self.noise_clip, self.noise_clip)

    def _next_state_value(self, batch: ArrayDict, noise: Any, params: Any) -> Any:
        """``minᵢ Q_θ̄ᵢ(s′, a′)`` with ``a′ = clip(π_φ̄(s′) + ε, low, high)``, ``[*B]``."""
        actor, critic = self.actor_network, self.qvalue_network
        state = next_state(batch, [*actor.in_keys, *critic.in_keys], self.tensor_keys.action)
        target_actor = self._target("actor_network", params)
        action = self.read(act(actor, state, target_actor), self.tensor_keys.action)
        state.set(self.tensor_keys.action, self._action_box.clamp(action + noise))
        next_q = self._q_values(state, self._target("qvalue_network", params))
        return backend_of(next_q).xp.min(next_q, axis=0)

    def _target(self, name: str, params: Mapping[str, Params] | None) -> Params:
        """The target tree of ``name``: its own copy with ``delay_*``, else the
        (given or own) parameters cut from the graph."""
        if self._owns_target[name]:
            return self._target_params[name]
        return self.detached_params(name, params)

    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(−Q_θ₁(s, π_φ(s))`` reduced, ``{"state_action_value_actor": [N, *B]})``.

        Every member is evaluated (TorchRL's diagnostic), only the first enters the loss;
        the critics' parameters are cut from the graph.
        """
        batch = self.working_copy(batch)
        keys = [*self.actor_network.in_keys, *self.qvalue_network.in_keys]
        state = batch.select(*keys, strict=False)
        act(self.actor_network, state, self.network_params("actor_network", params))
        q = self._q_values(state, self.detached_params("qvalue_network", params))
        loss = self.reduce_loss(-q[0, ...], batch, weights=self.priority_weight(batch))
        return loss, {"state_action_value_actor": backend_of(q).stop_gradient(q)}

    def value_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(Σᵢ d(Q_θᵢ(s, a), y)`` reduced, diagnostics``)``: ``td_error``
        (``(Q_θᵢ(s, a) − y)²``, ``[N, *B]``), ``next_state_value``, ``pred_value``,
        ``target_value``."""
        batch = self.working_copy(batch)
        action = self.read(batch, self.tensor_keys.action)
        backend = backend_of(action)
        noise = self._smoothing_noise(action)  # drawn first, as TorchRL
        with backend.no_grad():
            next_value = self._next_state_value(batch, noise, params)
        target = self.value_estimator.value_estimate(batch, next_value=next_value[..., None])
        target = target[..., 0]
        q = self._q_values(batch, self.network_params("qvalue_network", params))
        xp = backend.xp
        distance = distance_loss(q, xp.broadcast_to(target, q.shape), self.loss_function)
        loss = xp.sum(distance, axis=0)
        loss = self.reduce_loss(loss, batch, weights=self.priority_weight(batch))
        stop = backend.stop_gradient
        return loss, {
            "td_error": stop((q - target) ** 2),
            "next_state_value": stop(next_value),
            "pred_value": stop(q),
            "target_value": stop(target),
        }

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor = −Q_θ₁(s, π_φ(s))`` and ``loss_qvalue = Σᵢ d(Q_θᵢ(s, a), y)``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The actor's and critic's inputs, ``tensor_keys.action``, and under ``"next"``
            the actor's inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "qvalue_network": stacked tree}`` to compute with
            instead of the loss's own parameters (pure-function use).

        Returns
        -------
        ArrayDict
            TorchRL's outputs (see the class docstring) and the priority
            ``maxᵢ (Q_θᵢ(s, a) − y)²`` under ``tensor_keys.priority``.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        loss_actor, actor_info = self.actor_loss(batch, params)
        loss_qvalue, value_info = self.value_loss(batch, params)
        td_error = value_info.pop("td_error")
        xp = backend_of(td_error).xp
        out = ArrayDict({"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, **actor_info})
        out.update(value_info)
        return out.set(self.tensor_keys.priority, xp.max(td_error, axis=0))


# -- helpers shared with DDPGLoss ------------------------------------------------------------
def check_common_args(
    owner: str, gamma: Any, priority_key: Any, loss_function: Any, use_prioritized_weights: Any
) -> None:
    """TorchRL's refusals (``gamma``: ``TypeError``; a constructor key: ``RuntimeError``),
    and ``ValueError`` for an unknown ``loss_function`` or ``use_prioritized_weights``."""
    if gamma is not None:
        raise TypeError(GAMMA_ERROR)
    if priority_key is not None:
        raise RuntimeError(
            "Setting 'priority' via the constructor is deprecated, use "
            ".set_keys(priority='some_key') instead."
        )
    if loss_function not in _DISTANCES:
        raise ValueError(
            f"{owner}: unknown loss_function {loss_function!r}; expected one of {_DISTANCES}"
        )
    if not (use_prioritized_weights == "auto" or isinstance(use_prioritized_weights, bool)):
        raise ValueError(
            f"{owner}: use_prioritized_weights must be 'auto', True or False, got "
            f"{use_prioritized_weights!r}"
        )


def forward_estimator_keys(loss: LossModule) -> None:
    """Give the value estimator the loss's keys; its ``value`` is the loss's
    ``state_action_value`` (TorchRL's ``_forward_value_estimator_keys``)."""
    if loss._value_estimator is None:
        return
    tk = loss.tensor_keys
    loss._value_estimator.set_keys(
        value=tk.state_action_value, reward=tk.reward, done=tk.done, terminated=tk.terminated
    )


def act(actor: Any, batch: Any, params: Params) -> Any:
    """Run the policy deterministically on ``batch`` (a ``ProbabilisticActor`` writes its
    deterministic sample, as TorchRL's losses run under ``DETERMINISTIC`` exploration)."""
    if hasattr(actor, "get_dist"):
        return actor(batch, params, interaction_type="deterministic")
    return actor(batch, params)


def next_state(batch: ArrayDict, keys: list[Any], action_key: Any) -> ArrayDict:
    """The inputs at ``s′``: each of ``keys`` (but the action) read under ``"next"``, or at
    the root when ``"next"`` lacks it (``step_mdp`` keeps the other root entries)."""
    state = ArrayDict(batch_size=batch.batch_size)
    for key in dict.fromkeys(keys):
        if as_tuple(key) == as_tuple(action_key):
            continue
        value = batch.get(next_key(key), None)
        value = batch.get(key, None) if value is None else value
        if value is not None:
            state.set(key, value)
    return state


def read_output(outputs: Mapping[Any, Any], key: Any, owner: str) -> Any:
    """``outputs[key]``, or a ``KeyError`` naming the critic's outputs and ``set_keys``."""
    for out_key, value in outputs.items():
        if as_tuple(out_key) == as_tuple(key):
            return value
    raise KeyError(
        f"{owner}: the critic writes {list(outputs)}, not {key!r}; "
        "set_keys(state_action_value=...) names its output"
    )
