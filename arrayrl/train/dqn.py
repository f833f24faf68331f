"""DQN on Gymnasium environments with discrete actions, with arrayrl's ``DQNLoss``.

Mnih et al. 2015 (https://doi.org/10.1038/nature14236), with the double-DQN target of
van Hasselt et al. 2016 (https://arxiv.org/abs/1509.06461). The network is an arrayrl
module on torch: ``QValueActor(MLP(obs, n, [256, 256], relu),
action_space="categorical")``, whose greedy action is the argmax of the action values;
``DQNLoss`` keeps a target copy of it.

Hyper-parameters (RL Baselines3 Zoo's tuned CartPole-v1 DQN for the replay, batch,
exploration and warm-up, with a soft-updated target and an annealed rate, which kept
the policy from collapsing after it first solved the task in this repository's runs):
replay of 100k transitions, batches of 64, γ = 0.99, Adam 1e-3 decayed linearly to 0
over the run with the gradient norm clipped at 10, a Huber (``smooth_l1``) TD loss,
double DQN, 1,000 frames of uniform random actions before learning, then half a gradient
step per frame; ε-greedy exploration from ε = 1 down to 0.04 linearly over the first
16 % of the frames; the target moved by ``SoftUpdate`` with τ = 0.005 after every
gradient step.

>>> from arrayrl.train.dqn import make_dqn_config, train_dqn   # doctest: +SKIP
>>> print(train_dqn(make_dqn_config("CartPole-v1", frames=100_000)).summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from arrayrl.data import ArrayDict

from .curve import DQN_PANELS
from .offpolicy import (
    OffPolicyConfig,
    OffPolicyTrainer,
    check_offpolicy_setup,
    scalar_terms,
)
from .runner import TrainResult, config_from, run_training

__all__ = ["DQNConfig", "build_dqn_loss", "check_dqn_setup", "make_dqn_config", "train_dqn"]


@dataclasses.dataclass
class DQNConfig(OffPolicyConfig):
    """The settings of a DQN run: :class:`~arrayrl.train.offpolicy.OffPolicyConfig`'s
    and

    Parameters
    ----------
    lr : float
        Adam's learning rate.
    max_grad_norm : float
        The gradient's global norm is clipped to this.
    epsilon_start, epsilon_end : float
        ε-greedy exploration: the probability of a uniform random action, decayed
        linearly from ``epsilon_start`` to ``epsilon_end``...
    exploration_fraction : float
        ... over this fraction of the frames.
    target_update_interval : int
        Gradient steps between target updates ``θ̄ ← τ θ + (1 − τ) θ̄`` (``tau`` = 1:
        a copy, as ``HardUpdate``; CleanRL's rule).
    double_dqn : bool
        The double-DQN target (action from the online network, value from the target).
    anneal_lr : bool
        Decay the learning rate linearly to 0 over the run's gradient steps.
    """

    env_id: str = "CartPole-v1"
    frames: int = 100_000
    buffer_size: int = 100_000
    batch_size: int = 64
    learning_starts: int = 1_000
    utd_ratio: float = 0.5
    loss_function: str = "smooth_l1"
    lr: float = 1e-3
    max_grad_norm: float = 10.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.04
    exploration_fraction: float = 0.16
    target_update_interval: int = 1
    tau: float = 0.005
    double_dqn: bool = True
    anneal_lr: bool = True

    algorithm = "dqn"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        super().validate()
        for name in ("epsilon_start", "epsilon_end", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.target_update_interval < 1:
            raise ValueError(
                f"target_update_interval must be >= 1, got {self.target_update_interval}"
            )

    def epsilon(self, frames: int) -> float:
        """The exploration probability after ``frames`` frames."""
        decay_frames = self.exploration_fraction * self.total_frames
        progress = 1.0 if decay_frames == 0 else min(1.0, frames / decay_frames)
        return self.epsilon_start + progress * (self.epsilon_end - self.epsilon_start)


def make_dqn_config(env_id: str = "CartPole-v1", **overrides: Any) -> DQNConfig:
    """The DQN settings for ``env_id`` with ``overrides`` (``None`` values ignored)."""
    return config_from(DQNConfig, overrides, env_id=env_id)


def check_dqn_setup(config: DQNConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here."""
    check_offpolicy_setup(config, discrete=True)


def build_dqn_loss(observation_space: Any, action_space: Any, config: DQNConfig) -> Any:
    """``DQNLoss`` (with its target network) over a fresh ``QValueActor``."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import MLP, QValueActor
    from arrayrl.objectives import DQNLoss, ValueEstimators

    backend = get_backend(config.backend, config.device)
    network = MLP(observation_space.shape[0], int(action_space.n), list(config.num_cells),
                  activation_class="relu", seed=config.seed)  # fmt: skip
    actor = QValueActor(network, in_keys=["observation"], action_space="categorical")
    loss = DQNLoss(
        actor.to(backend),
        loss_function=config.loss_function,
        delay_value=True,
        double_dqn=config.double_dqn,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    return loss


def epsilon_greedy(
    action: np.ndarray, num_actions: int, epsilon: float, rng: np.random.Generator
) -> np.ndarray:
    """``action`` with each entry replaced by a uniform index with probability ``epsilon``."""
    explore = rng.random(action.shape) < epsilon
    return np.where(explore, rng.integers(0, num_actions, action.shape), action)


class DQNTrainer(OffPolicyTrainer):
    """The state of a DQN run: the loss, Adam, the target updater, the buffer."""

    #: Logged per iteration (means over its gradient steps): the TD loss, the greedy
    #: value max_a Q(s, a) of the state last acted in, and the exploration probability.
    TERMS = ("loss", "q_value", "epsilon")

    def __init__(self, config: DQNConfig, env: Any) -> None:
        import torch

        from arrayrl.objectives import SoftUpdate

        super().__init__(config, env)
        self.loss = build_dqn_loss(env.single_observation_space, env.single_action_space,
                                   config)  # fmt: skip
        self.parameters = [leaf for _, leaf in self.loss.named_parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        total_updates = max(1.0, (config.total_frames - config.learning_starts) * config.utd_ratio)
        decay = (lambda step: max(0.0, 1.0 - step / total_updates)) if config.anneal_lr else None
        self.scheduler = (
            None if decay is None else torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)
        )
        self.updater = SoftUpdate(self.loss, tau=config.tau)
        self.actor = self.policy = self.loss.value_network
        self._greedy_value: Any = torch.tensor(float("nan"))

    def policy_action(self) -> np.ndarray:
        """ε-greedy: the greedy action, replaced by a uniform one with probability ε."""
        backend = self.backend
        batch = self.observation_batch()
        with backend.no_grad():
            self.actor(batch)
        greedy = backend.to_numpy(batch.get("action"))
        self._greedy_value = batch.get("chosen_action_value").mean()
        epsilon = self.config.epsilon(self.collector.frames)
        return epsilon_greedy(greedy, int(self.action_space.n), epsilon, self.action_rng)

    def update(self, batch: ArrayDict) -> list[Any]:
        """One Adam step on the TD loss (gradient norm clipped); a target-update tick."""
        import torch

        terms = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if (self.updates + 1) % self.config.target_update_interval == 0:
            self.updater.step()
        epsilon = torch.tensor(self.config.epsilon(self.collector.frames))
        return [*scalar_terms(terms, ("loss",)), self._greedy_value.float(), epsilon.float()]


def train_dqn(config: DQNConfig | None = None) -> TrainResult:
    """Train a DQN agent as ``config`` says; write the learning curve (CSV and PNG)
    every ``config.save_every_s`` seconds and at the end.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = make_dqn_config() if config is None else config
    config.validate()
    return run_training(
        config, config.iterations, lambda env: DQNTrainer(config, env), panels=DQN_PANELS
    )
