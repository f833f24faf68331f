"""TD3 on Gymnasium environments with continuous actions, with arrayrl's ``TD3Loss``.

Fujimoto et al. 2018 (https://arxiv.org/abs/1802.09477): a deterministic tanh policy,
two critics with target copies, target policy smoothing and delayed policy updates. The
networks are arrayrl modules on torch:

- actor: ``ProbabilisticActor(DictModule(MLP(obs, act, [256, 256], relu), ["observation"],
  ["param"]), TanhDelta)`` scaled to the action box (its deterministic sample
  ``m + h·tanh(·)`` is the action);
- critic: ``ValueOperator(MLP(obs + act, 1, [256, 256], relu),
  in_keys=["observation", "action"])``, expanded by ``TD3Loss`` into two members.

Hyper-parameters (CleanRL's ``td3_continuous_action.py``, with a shorter warm-up): replay
of 1M transitions, batches of 256, γ = 0.99, τ = 0.005, Adam 3e-4 for both networks, an
MSE critic loss, target smoothing noise σ = 0.2 clipped at 0.5 (in units of the action
half-width, as CleanRL scales them), exploration noise ``N(0, (0.1·h)²)`` added to the
policy's action and clipped to the box (``h``: the half-width), 5,000 frames of uniform
random actions before learning, then per frame one critic step and, every second step,
one actor step followed by the ``SoftUpdate`` of all targets. The critic is updated
first and the actor then uses the updated critic, as CleanRL.

>>> from arrayrl.train.td3 import make_td3_config, train_td3   # doctest: +SKIP
>>> print(train_td3(make_td3_config("Pendulum-v1", frames=30_000)).summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from arrayrl.data import ArrayDict

from .curve import TD3_PANELS
from .offpolicy import (
    OffPolicyConfig,
    OffPolicyTrainer,
    box_bounds,
    check_offpolicy_setup,
    scalar_or_array,
)
from .runner import TrainResult, config_from, run_training
from .sac import build_q_critic

__all__ = ["TD3Config", "build_td3_loss", "exploration_noise", "make_td3_config", "train_td3"]


@dataclasses.dataclass
class TD3Config(OffPolicyConfig):
    """The settings of a TD3 run: :class:`~arrayrl.train.offpolicy.OffPolicyConfig`'s and

    Parameters
    ----------
    actor_lr, critic_lr : float
        Adam's learning rates.
    policy_noise, noise_clip : float
        Target policy smoothing: σ and the clip, in units of the action half-width.
    exploration_noise : float
        σ of the Gaussian noise added to the acting policy, in units of the half-width.
    policy_delay : int
        Critic steps per actor step (and per target update).
    """

    frames: int = 30_000
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    exploration_noise: float = 0.1
    policy_delay: int = 2

    algorithm = "td3"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        super().validate()
        for name in ("policy_noise", "noise_clip", "exploration_noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.policy_delay < 1:
            raise ValueError(f"policy_delay must be >= 1, got {self.policy_delay}")


def make_td3_config(env_id: str = "Pendulum-v1", **overrides: Any) -> TD3Config:
    """The TD3 settings for ``env_id`` with ``overrides`` (``None`` values ignored)."""
    return config_from(TD3Config, overrides, env_id=env_id)


def check_td3_setup(config: TD3Config) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here."""
    check_offpolicy_setup(config)


def build_deterministic_actor(observation_space: Any, action_space: Any, config: Any) -> Any:
    """TD3's actor (also BC's): ``MLP(obs, act, num_cells, relu)`` (seed
    ``config.seed``) through a ``TanhDelta`` into the action box, deterministic."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import MLP, DictModule, ProbabilisticActor
    from arrayrl.modules.distributions import TanhDelta

    backend = get_backend(config.backend, config.device)
    low, high = box_bounds(action_space)
    network = MLP(observation_space.shape[0], action_space.shape[0], list(config.num_cells),
                  activation_class="relu", seed=config.seed)  # fmt: skip
    return ProbabilisticActor(
        DictModule(network, in_keys=["observation"], out_keys=["param"]),
        in_keys=["param"],
        distribution_class=TanhDelta,
        distribution_kwargs={"low": scalar_or_array(low, backend),
                             "high": scalar_or_array(high, backend)},
        default_interaction_type="deterministic",
    ).to(backend)  # fmt: skip


def build_td3_loss(observation_space: Any, action_space: Any, config: TD3Config) -> Any:
    """``TD3Loss`` (two critics, target actor and critics) over a fresh actor and critic.

    The smoothing noise is scaled by the action half-width ``h`` (CleanRL's
    ``policy_noise · action_scale``): ``TD3Loss`` takes σ and the clip in action units.
    A box with different half-widths per dimension uses their mean.
    """
    from arrayrl.backends import get_backend
    from arrayrl.objectives import TD3Loss, ValueEstimators

    backend = get_backend(config.backend, config.device)
    low, high = box_bounds(action_space)
    actor = build_deterministic_actor(observation_space, action_space, config)
    critic = build_q_critic(observation_space, action_space, config)
    scale = float(np.mean((high - low) / 2))
    loss = TD3Loss(
        actor,
        critic,
        bounds=(scalar_or_array(low, backend), scalar_or_array(high, backend)),
        num_qvalue_nets=2,
        policy_noise=config.policy_noise * scale,
        noise_clip=config.noise_clip * scale,
        loss_function=config.loss_function,
        seed=config.seed + 2,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    return loss


def exploration_noise(
    action: np.ndarray, low: np.ndarray, high: np.ndarray, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """TD3's exploring action ``clip(a + N(0, (σ·h)²), low, high)`` (float32), ``h`` the
    half-width of the box: what the trainer acts with and what a loaded TD3 policy
    explores with (:mod:`arrayrl.train.checkpoint`)."""
    noise = rng.normal(0.0, 1.0, action.shape) * (sigma * (high - low) / 2)
    return np.clip(action + noise, low, high).astype(np.float32)


class TD3Trainer(OffPolicyTrainer):
    """The state of a TD3 run: the loss, two Adams, the target updater, the buffer."""

    #: Logged per iteration (means over its gradient steps; ``loss_actor`` is the latest
    #: actor step's at each step). ``q_value``: batch mean of ``Q_i(s, a)`` over both critics;
    #: ``target_value``: batch mean of the TD target.
    TERMS = ("loss_actor", "loss_qvalue", "q_value", "target_value")

    def __init__(self, config: TD3Config, env: Any) -> None:
        import torch

        from arrayrl.modules import flatten_params
        from arrayrl.objectives import SoftUpdate

        super().__init__(config, env)
        self.loss = build_td3_loss(env.single_observation_space, env.single_action_space,
                                   config)  # fmt: skip
        actor = list(flatten_params(self.loss.actor_network_params).values())
        critic = list(flatten_params(self.loss.qvalue_network_params).values())
        self.actor_optimizer = torch.optim.Adam(actor, lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(critic, lr=config.critic_lr)
        self.updater = SoftUpdate(self.loss, tau=config.tau)
        self.actor = self.loss.actor_network
        self.policy = self.actor  # saved to <out>/policy.npz by the runner
        self._last_actor_loss: Any = None

    def policy_action(self) -> np.ndarray:
        """``clip(π(s) + N(0, (σ·h)²), low, high)`` for every sub-env."""
        backend = self.backend
        batch = self.observation_batch()
        with backend.no_grad():
            self.actor(batch)
        action = backend.to_numpy(batch.get("action"))
        return exploration_noise(
            action, self.low, self.high, self.config.exploration_noise, self.action_rng
        )

    def update(self, batch: ArrayDict) -> list[Any]:
        """A critic step; every ``policy_delay``-th call an actor step and the target
        update."""
        import torch

        loss_qvalue, info = self.loss.value_loss(batch)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss_qvalue.backward()
        self.critic_optimizer.step()
        if self.updates % self.config.policy_delay == 0:
            loss_actor, _ = self.loss.actor_loss(batch)
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss_actor.backward()
            self.actor_optimizer.step()
            self.updater.step()
            self._last_actor_loss = loss_actor.detach()
        actor_term = (
            torch.tensor(float("nan")) if self._last_actor_loss is None else self._last_actor_loss
        )
        return [
            actor_term.float(),
            loss_qvalue.detach().float(),
            info["pred_value"].float().mean(),
            info["target_value"].float().mean(),
        ]


def train_td3(config: TD3Config | None = None) -> TrainResult:
    """Train a TD3 agent as ``config`` says; write the learning curve (CSV and PNG)
    every ``config.save_every_s`` seconds and at the end.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = make_td3_config() if config is None else config
    config.validate()
    return run_training(
        config, config.iterations, lambda env: TD3Trainer(config, env), panels=TD3_PANELS
    )
