"""REINFORCE with a learned baseline: ``ReinforceLoss``.

Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning", https://doi.org/10.1007/BF00992696. With advantage ``A`` (GAE by
default, treated as a constant) and the stored action ``a``:

- ``loss_actor = −log π_θ(a|s)·sg(A)``, whose gradient is the score-function estimator
  ``−A·∇_θ log π_θ(a|s)``;
- ``loss_value = d(V_target, V_φ(s))`` (``d`` = ``loss_critic_type``, optionally with the
  value clipped to ``clip_value`` around the value stored in the batch).

Arguments, defaults, keys, output keys and diagnostics follow TorchRL 0.14.1
(``torchrl/objectives/reinforce.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from arrayrl._validation import reject_unknown_kwargs
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ._shared import CriticLossMixin, reduce_terms
from .common import LossModule
from .ppo import _CRITIC_LOSSES, _advantage_like, _as_tuple, _positive, _reject_unsupported
from .utils import ValueEstimators

__all__ = ["ReinforceLoss"]


class ReinforceLoss(CriticLossMixin, LossModule):
    """The REINFORCE loss (see the module docstring).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy; its ``get_dist(batch, params)`` gives π_θ. ``actor`` is an alias.
    critic_network : Module
        The value network writing ``tensor_keys.value`` (required, as in TorchRL).
        ``critic`` is an alias.
    delay_value : bool, default False
        Keep a target copy of the critic (``target_critic_network_params``, updated with
        :class:`~arrayrl.objectives.utils.SoftUpdate` / ``HardUpdate``); the value
        estimator bootstraps from it.
    loss_critic_type : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    separate_losses : bool, default False
        Train the parameters the critic shares with the actor on the policy loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    clip_value : float, optional
        Clip the new value to ``[V_old − c, V_old + c]`` and keep the larger loss
        (schedulable, > 0); adds the ``value_clip_fraction`` diagnostic.
    seed : int, optional
        Accepted as by every arrayrl loss; REINFORCE draws nothing.

    ``functional`` must be ``True``; ``gamma`` and the ``*_key`` arguments raise as in
    TorchRL (use ``make_value_estimator`` / ``set_keys``).

    Notes
    -----
    The action is read from ``tensor_keys.action`` (``"action"``), whatever the actor's
    output key, and ``sample_log_prob`` is accepted but never read, as in TorchRL. Unlike
    TorchRL, the loss works on a shallow copy of the batch: the advantage it computes is
    not written into the caller's batch.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "state_value"
        sample_log_prob: Any = "action_log_prob"
        action: Any = "action"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_value_estimator = ValueEstimators.GAE
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
        ValueEstimators.GAE,
        ValueEstimators.MAGAE,
        ValueEstimators.VTrace,
    )

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        delay_value: bool = False,
        loss_critic_type: str = "smooth_l1",
        gamma: float | None = None,
        advantage_key: Any = None,
        value_target_key: Any = None,
        separate_losses: bool = False,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown_kwargs(type(self).__name__, kwargs)
        actor_network = actor if actor is not None else actor_network
        critic_network = critic if critic is not None else critic_network
        if actor_network is None or critic_network is None:
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        _reject_unsupported(gamma, functional, advantage_key, value_target_key)
        if loss_critic_type not in _CRITIC_LOSSES:
            raise ValueError(
                f"unknown loss_critic_type {loss_critic_type!r}; expected one of {_CRITIC_LOSSES}"
            )
        super().__init__()
        if len(getattr(actor_network, "dist_sample_keys", ())) > 1:
            raise NotImplementedError(
                "ReinforceLoss does not support composite (multi-head) actors yet; "
                "use a PPO loss"
            )
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(
            critic_network, "critic_network", create_target_params=delay_value
        )
        self.delay_value = delay_value
        self.loss_critic_type = loss_critic_type
        self.separate_losses = separate_losses
        self.reduction = reduction
        self.seed = seed
        self.register_coeff("clip_value", clip_value, _positive)

    # -- keys ---------------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = self.actor_network.in_keys
        keys = [tk.action, *(("next", *_as_tuple(k)) for k in (tk.reward, tk.done, tk.terminated))]
        keys += [*actor_keys, *(("next", *_as_tuple(k)) for k in actor_keys)]
        keys += self.critic_network.in_keys
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """``["loss_actor", "loss_value"]`` (TorchRL's; ``value_clip_fraction`` is added
        with ``clip_value``, as TorchRL's forward does)."""
        return ["loss_actor", "loss_value"]

    # -- pieces of the objective -------------------------------------------------------
    def _log_prob(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``log π_θ(a|s)`` of the stored action."""
        dist = self.actor_network.get_dist(batch, self.network_params("actor_network", params))
        return dist.log_prob(self.read(batch, self.tensor_keys.action))

    def loss_critic(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, Any]:
        """``(d(V_target, V_φ(s))`` per sample, value clip fraction or ``None)``.

        The caller's ``batch`` is left unchanged.
        """
        loss, clip_fraction, _, _ = self._critic_distance(self.working_copy(batch), params)
        return loss, clip_fraction

    # -- the loss ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor = −log π_θ(a|s)·sg(A)`` and ``loss_value``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            Observations, the stored action, and either the advantage and value target
            or what the value estimator needs (``("next", "reward")``, ...).
        params : mapping, optional
            ``{"actor_network": tree, "critic_network": tree}`` to compute with instead
            of the loss's own parameters (pure-function use).

        Returns
        -------
        ArrayDict
            ``loss_actor``, ``loss_value`` and, with ``clip_value``,
            ``value_clip_fraction``.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        advantage = self._advantage(batch, params)
        log_prob, advantage = _align(self._log_prob(batch, params), advantage)
        backend = backend_of(advantage)
        out = {"loss_actor": -log_prob * backend.stop_gradient(advantage)}
        loss_value, clip_fraction = self.loss_critic(batch, params)
        out["loss_value"] = loss_value
        if clip_fraction is not None:
            out["value_clip_fraction"] = clip_fraction
        return reduce_terms(self, out, batch)


def _align(log_prob: Any, advantage: Any) -> tuple[Any, Any]:
    """``(log π, A)`` shaped alike.

    Equal shapes pass. Otherwise ``log π`` gets a trailing unit dim and the advantage is
    shaped like it by :func:`~arrayrl.objectives.ppo._advantage_like`, as for PPO and
    A2C: a per-sample ``[*B, 1]`` advantage against ``[*B]`` log-probs, or spread over
    the action dims of an element-wise ``Normal`` (``[*B, A]``), which is what TorchRL's
    broadcast computes. Any other mismatch raises ``ValueError`` (no outer product).
    """
    if tuple(log_prob.shape) == tuple(advantage.shape):
        return log_prob, advantage
    log_prob = log_prob[..., None]
    return log_prob, _advantage_like(advantage, log_prob)
