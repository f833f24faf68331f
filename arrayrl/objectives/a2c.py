"""Advantage actor-critic: ``A2CLoss``.

Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning",
https://arxiv.org/abs/1602.01783. With advantage ``A`` (GAE by default) and the stored
action ``a``:

- ``loss_objective = −log π_θ(a|s)·A`` (the REINFORCE estimator with a baseline);
- ``loss_entropy  = −c_H·H(π_θ(·|s))`` (``entropy_bonus``);
- ``loss_critic   = c_V·d(V_target, V_φ(s))`` (``d`` = ``loss_critic_type``, optionally
  with the value clipped to ``clip_value`` around the value stored in the batch).

Arguments, defaults, keys, output keys and diagnostics follow TorchRL 0.14.1
(``torchrl/objectives/a2c.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from arrayrl._validation import count
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ._shared import CriticLossMixin, EntropyBonusMixin, reduce_terms
from .common import LossModule
from .ppo import (
    _CRITIC_LOSSES,
    _advantage_like,
    _as_tuple,
    _non_negative,
    _positive,
    _reject_kwargs,
    _reject_unsupported,
)
from .utils import ValueEstimators

__all__ = ["A2CLoss"]


class A2CLoss(EntropyBonusMixin, CriticLossMixin, LossModule):
    """The A2C loss (see the module docstring).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy; its ``get_dist(batch, params)`` gives π_θ. ``actor`` is an alias.
    critic_network : Module
        The value network writing ``tensor_keys.value``. ``critic`` is an alias.
    entropy_bonus : bool, default True
        Add ``loss_entropy`` and the ``entropy`` diagnostic. Off when ``entropy_coeff``
        is 0, as in TorchRL.
    samples_mc_entropy : int, default 1
        Draws of the Monte-Carlo entropy estimate for distributions without a closed
        form (TanhNormal).
    entropy_coeff : float, default 0.01
        ``c_H`` (schedulable, >= 0).
    critic_coeff : float or None, default 1.0
        ``c_V`` (schedulable, >= 0); ``None`` drops ``loss_critic``.
    loss_critic_type : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    separate_losses : bool, default False
        Train the parameters the critic shares with the actor on the policy loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    clip_value : float, optional
        Clip the new value to ``[V_old − c, V_old + c]`` and keep the larger loss; adds
        the ``value_clip_fraction`` diagnostic.
    seed : int, optional
        Seed of the loss's own generator (Monte-Carlo entropy). ``None`` (default): seed 0
        for arrayrl networks; with TorchRL / torch networks, torch's default generator in
        TorchRL's order, so ``torch.manual_seed`` reproduces TorchRL's numbers.
    advantage_norm : ValueNorm, optional
        Divide the advantage by ``advantage_norm.scale()`` without re-centring. In
        training mode the statistics are first updated with the value targets when the
        loss computes the advantage itself, leaving out rows the validity masks mark
        invalid; with a precomputed advantage call ``advantage_norm.update(value_target)``
        once per rollout yourself. A TorchRL normaliser is copied
        (:func:`arrayrl.modules.adapt.as_value_norm`): the loss owns
        ``loss.advantage_norm`` (in ``state_dict()``, moved by ``to()``).

    ``functional`` must be ``True``; ``gamma`` and the ``*_key`` arguments raise as in
    TorchRL (use ``make_value_estimator`` / ``set_keys``).

    Notes
    -----
    When the batch has no advantage, the value estimator (GAE by default, with the
    critic's parameters cut from the graph) writes the advantage and the value target
    into the loss's working copy of the batch; the caller's batch is never modified.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "state_value"
        action: Any = "action"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        sample_log_prob: Any = "action_log_prob"

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
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coeff: float | None = None,
        critic_coeff: float | None = 1.0,
        loss_critic_type: str = "smooth_l1",
        advantage_norm: Any = None,
        gamma: float | None = None,
        separate_losses: bool = False,
        advantage_key: Any = None,
        value_target_key: Any = None,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        _reject_kwargs(type(self).__name__, kwargs)
        actor_network = actor if actor is not None else actor_network
        critic_network = critic if critic is not None else critic_network
        if actor_network is None or critic_network is None:
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        _reject_unsupported(gamma, functional, advantage_key, value_target_key)
        samples_mc_entropy = _check_settings(loss_critic_type, samples_mc_entropy)
        super().__init__()
        self.convert_to_functional(actor_network, "actor_network")
        self.convert_to_functional(critic_network, "critic_network")
        self.separate_losses = separate_losses
        self.set_advantage_norm(advantage_norm)
        self.samples_mc_entropy = samples_mc_entropy
        self.loss_critic_type = loss_critic_type
        self.reduction = reduction
        self.seed = seed
        entropy_coeff = 0.01 if entropy_coeff is None else entropy_coeff
        self.register_coeff("entropy_coeff", entropy_coeff, _non_negative)
        self.register_coeff("critic_coeff", critic_coeff, _non_negative)
        self.register_coeff("clip_value", clip_value, _positive)
        self.entropy_bonus = bool(entropy_bonus and self.entropy_coeff)
        actor_network = self.actor_network  # adapted, if TorchRL's
        if len(actor_network.dist_sample_keys) > 1:
            raise NotImplementedError(
                "A2CLoss does not support composite (multi-head) actors: TorchRL 0.14.1's "
                "A2CLoss fails on them too (its in_keys cannot hold the list of head keys); "
                "use a PPO loss"
            )
        self.set_keys(
            sample_log_prob=actor_network.log_prob_keys[0],
            action=actor_network.dist_sample_keys[0],
        )

    # -- keys ---------------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = self.actor_network.in_keys
        keys = [tk.action, *(("next", *_as_tuple(k)) for k in (tk.reward, tk.done, tk.terminated))]
        keys += [*actor_keys, *(("next", *_as_tuple(k)) for k in actor_keys)]
        if self.critic_coeff is not None:
            keys += self.critic_network.in_keys
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """The ``loss_*`` terms and diagnostics :meth:`forward` returns (TorchRL's order;
        ``value_clip_fraction`` is added with ``clip_value``, as TorchRL's forward does)."""
        keys = ["loss_objective"]
        if self.critic_coeff is not None:
            keys.append("loss_critic")
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        return keys

    # -- pieces of the objective -------------------------------------------------------
    def _log_probs(
        self, batch: ArrayDict, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, Any]:
        """``(log π_θ(a|s)`` with a trailing unit dim, ``π_θ)`` for the stored action.

        Raises ``RuntimeError`` if the stored action carries a gradient (as TorchRL)."""
        action = self.read(batch, self.tensor_keys.action)
        if backend_of(action).requires_grad(action):
            raise RuntimeError(f"the batch's {self.tensor_keys.action!r} requires grad")
        dist = self.actor_network.get_dist(batch, self.network_params("actor_network", params))
        return dist.log_prob(action)[..., None], dist

    def get_entropy_bonus(self, dist: Any) -> Any:
        """``H(π)`` per sample with a trailing unit dim (closed form, or the Monte-Carlo
        estimate over ``samples_mc_entropy`` draws)."""
        return self._entropy(dist, dist.backend)

    def loss_critic(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, Any]:
        """``(c_V·d(V_target, V_φ(s))`` per sample, value clip fraction or ``None)``.

        ``c_V`` multiplies only when ``critic_coeff`` is not ``None``. The caller's
        ``batch`` is left unchanged.
        """
        batch = self.working_copy(batch)
        loss, clip_fraction, _, _ = self._critic_distance(batch, params)
        if self.critic_coeff is not None:
            loss = self.critic_coeff * loss
        return loss, clip_fraction

    def _critic_terms(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> dict:
        if self.critic_coeff is None:
            return {}
        loss, clip_fraction = self.loss_critic(batch, params)
        out = {"loss_critic": loss}
        if clip_fraction is not None:
            out["value_clip_fraction"] = clip_fraction
        return out

    # -- the loss ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_objective = −log π_θ(a|s)·A`` plus the entropy and critic terms.

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
            ``loss_objective``, ``loss_critic``, ``entropy``, ``loss_entropy`` and
            ``value_clip_fraction``, as enabled.
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        advantage = self._advantage(batch, params)
        log_prob, dist = self._log_probs(batch, params)
        advantage = _advantage_like(advantage, log_prob)
        out = {"loss_objective": -(log_prob * advantage)}
        out.update(self._entropy_terms(dist, advantage))
        out.update(self._critic_terms(batch, params))
        return reduce_terms(self, out, batch)


def _check_settings(loss_critic_type: str, samples_mc_entropy: Any) -> int:
    """Check ``loss_critic_type``; ``samples_mc_entropy`` as an int >= 1."""
    if loss_critic_type not in _CRITIC_LOSSES:
        raise ValueError(
            f"unknown loss_critic_type {loss_critic_type!r}; expected one of {_CRITIC_LOSSES}"
        )
    return count("samples_mc_entropy", samples_mc_entropy)
