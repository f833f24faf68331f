"""TD3 with behaviour cloning: ``TD3BCLoss``.

Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning",
https://arxiv.org/abs/2106.06860. TD3 (:mod:`.td3`) learns the critics unchanged; the
actor's objective adds a behaviour-cloning term and rescales the Q term. With a
deterministic policy π_φ, critics Q_θ₁ … Q_θ_N and a dataset transition ``(s, a, …)``:

- ``loss_qvalue = Σᵢ d(Q_θᵢ(s, a), y)``, TD3's clipped double-Q target ``y`` with target
  policy smoothing (:class:`~.td3.TD3Loss`);
- ``λ = α / mean_batch |Q_θ₁(s, π_φ(s))|``, without gradient (it only normalises the
  scale of Q, so that ``α`` trades RL against imitation whatever the reward scale);
- ``bc_loss = mean_(batch, action dims) (π_φ(s) − a)²``;
- ``loss_actor = −λ · Q_θ₁(s, π_φ(s)) + bc_loss``, per sample, then reduced (the
  critics' parameters are cut from the graph).

λ uses Q of the policy's actions, as the paper's reference code and TorchRL do (the
paper's text writes ``Q(sᵢ, aᵢ)``). Arguments, defaults, keys and outputs follow TorchRL
0.14.1 (``torchrl/objectives/td3_bc.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import coefficient
from arrayrl.backends import backend_of
from arrayrl.modules import Params

from .td3 import TD3Loss, act

__all__ = ["TD3BCLoss"]


class TD3BCLoss(TD3Loss):
    """The TD3+BC loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : Module
        The deterministic policy π_φ, writing ``tensor_keys.action`` (an arrayrl or
        TorchRL ``Actor``, a ``TensorDictModule``, or a ``ProbabilisticActor`` with a
        ``Delta`` / ``TanhDelta`` distribution, run deterministically).
    qvalue_network : Module or list of Module
        The critic Q(s, a), writing ``tensor_keys.state_action_value``; one module is
        expanded into ``num_qvalue_nets`` members by TorchRL's rule, a list is stacked.
    action_spec : spec, optional
        A ``Bounded`` spec (or a composite holding one at ``tensor_keys.action``) giving
        the bounds of the smoothed target action. Exactly one of ``action_spec`` and
        ``bounds``.
    bounds : tuple, optional
        ``(low, high)``, numbers or arrays.
    num_qvalue_nets : int, default 2
    policy_noise : float, default 0.2
        σ of the target policy smoothing noise (schedulable, >= 0).
    noise_clip : float, default 0.5
        Clipping range of that noise (schedulable, >= 0).
    alpha : float, default 2.5
        α, the weight of the RL term against behaviour cloning (schedulable, >= 0;
        ``alpha=0`` is pure behaviour cloning).
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
        The critics' distance.
    delay_actor, delay_qvalue : bool, default True
        Keep target copies of the actor and of the critics.
    priority_key : None
        Refused as by TorchRL (``RuntimeError``): use ``set_keys(priority=...)``.
    separate_losses : bool, default False
        Parameters the critic shares with the actor are trained by ``loss_actor`` only.
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for TorchRL compatibility; without effect (ensembles are stacked).
    use_prioritized_weights : {"auto", True, False}, default "auto"
        Weight both losses by the batch's ``priority_weight`` entry when present (λ and
        ``bc_loss`` are unweighted batch means, as TorchRL's).
    seed : int, optional
        Seed of the loss's generator (smoothing noise, ensemble members); ``None`` with
        TorchRL / torch networks draws from torch's default generator in TorchRL's order.

    There is no ``gamma`` argument (TorchRL's ``TD3BCLoss`` has none): use
    ``make_value_estimator(ValueEstimators.TD0, gamma=...)``.

    Outputs: ``loss_actor``, ``loss_qvalue``, ``bc_loss`` and ``lmbd`` (scalars),
    ``state_action_value_actor`` (``[*B]``: Q_θ₁(s, π(s))), ``next_state_value``
    (``[*B]``), ``pred_value`` (``[N, *B]``), ``target_value`` (``[*B]``), all but the
    losses without gradient. The priority ``maxᵢ (Q_θᵢ(s, a) − y)²`` is set in the
    caller's batch under ``tensor_keys.priority``, as TorchRL does.

    ``qvalue_loss`` is TorchRL's name of the critic term (``value_loss`` in ``TD3Loss``);
    both compute it.
    """

    out_keys: ClassVar[list[str]] = [
        "loss_actor",
        "loss_qvalue",
        "bc_loss",
        "lmbd",
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
        alpha: float = 2.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        use_prioritized_weights: str | bool = "auto",
        seed: int | None = None,
    ) -> None:
        alpha = coefficient("alpha", alpha, allow_none=False)  # before any network is built
        super().__init__(
            actor_network,
            qvalue_network,
            action_spec=action_spec,
            bounds=bounds,
            num_qvalue_nets=num_qvalue_nets,
            policy_noise=policy_noise,
            noise_clip=noise_clip,
            loss_function=loss_function,
            delay_actor=delay_actor,
            delay_qvalue=delay_qvalue,
            priority_key=priority_key,
            separate_losses=separate_losses,
            reduction=reduction,
            deactivate_vmap=deactivate_vmap,
            use_prioritized_weights=use_prioritized_weights,
            seed=seed,
        )
        self.register_coeff("alpha", alpha)

    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``(−λ·Q_θ₁(s, π_φ(s)) + bc_loss`` reduced, diagnostics``)``.

        The diagnostics are ``state_action_value_actor`` (Q_θ₁(s, π_φ(s)), ``[*B]``),
        ``bc_loss`` and ``lmbd``, without gradient.
        """
        batch = self.working_copy(batch)
        expert = self.read(batch, self.tensor_keys.action)
        state = batch.select(
            *self.actor_network.in_keys, *self.qvalue_network.in_keys, strict=False
        )
        act(self.actor_network, state, self.network_params("actor_network", params))
        policy_action = self.read(state, self.tensor_keys.action, what="action")
        q = self._q_values(state, self.detached_params("qvalue_network", params))[0, ...]
        backend = backend_of(q)
        xp, stop = backend.xp, backend.stop_gradient
        bc_loss = xp.mean(_squared_error(policy_action, expert, self.tensor_keys.action))
        lmbd = self.alpha / stop(xp.mean(xp.abs(q)))
        loss = -lmbd * q + bc_loss
        loss = self.reduce_loss(loss, batch, weights=self.priority_weight(batch))
        return loss, {
            "state_action_value_actor": stop(q),
            "bc_loss": stop(bc_loss),
            "lmbd": lmbd,
        }

    def qvalue_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """TD3's critic loss (:meth:`TD3Loss.value_loss`) under TorchRL's TD3+BC name."""
        return self.value_loss(batch, params)


def _squared_error(prediction: Any, expert: Any, key: Any) -> Any:
    """``(prediction − expert)²`` element-wise; ``ValueError`` naming ``key`` when the
    policy's action and the dataset's differ in shape (never broadcast)."""
    if tuple(prediction.shape) != tuple(expert.shape):
        raise ValueError(
            f"TD3BCLoss: the policy's action {key!r} has shape {tuple(prediction.shape)}, "
            f"the batch's has shape {tuple(expert.shape)}; they must match"
        )
    diff = prediction - expert
    return diff * diff
