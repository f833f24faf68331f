"""SAC on Gymnasium environments with continuous actions, with arrayrl's ``SACLoss``.

Haarnoja et al. 2018 (https://arxiv.org/abs/1812.05905), the v2 loss without a value
network: a ``TanhNormal`` policy scaled to the action box, two Q networks with target
copies, a learned temperature α with target entropy ``-dim(A)``. The networks are
arrayrl modules on torch:

- actor: ``ProbabilisticActor(DictModule(Sequential(MLP(obs, 2·act, [256, 256], relu),
  NormalParamExtractor()), ["observation"], ["loc", "scale"]), TanhNormal)``;
- critic: ``ValueOperator(MLP(obs + act, 1, [256, 256], relu),
  in_keys=["observation", "action"])``, expanded by ``SACLoss`` into two members.

Hyper-parameters (CleanRL's ``sac_continuous_action.py``, with TorchRL's single
optimisation step per update): replay of 1M transitions, batches of 256, γ = 0.99,
τ = 0.005 (``SoftUpdate``), Adam with learning rates 3e-4 (actor), 1e-3 (critics) and
1e-3 (α, starting at 1), an MSE critic loss, 5,000 frames of uniform random actions
before learning, then one gradient step per frame. Each step sums ``loss_actor``,
``loss_qvalue`` and ``loss_alpha`` (which touch disjoint parameters: the loss cuts the
critics from the actor loss and the actor from the target) and steps Adam once.

>>> from arrayrl.train.sac import make_sac_config, train_sac   # doctest: +SKIP
>>> print(train_sac(make_sac_config("Pendulum-v1", seed=1)).summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

from arrayrl.data import ArrayDict

from .curve import SAC_PANELS
from .offpolicy import (
    OffPolicyConfig,
    OffPolicyTrainer,
    adam_groups,
    box_bounds,
    check_offpolicy_setup,
    scalar_or_array,
    scalar_terms,
)
from .runner import TrainResult, config_from, run_training

__all__ = ["SACConfig", "build_sac_loss", "make_sac_config", "train_sac"]


@dataclasses.dataclass
class SACConfig(OffPolicyConfig):
    """The settings of a SAC run: :class:`~arrayrl.train.offpolicy.OffPolicyConfig`'s
    and the learning rates and initial temperature.

    Parameters
    ----------
    actor_lr, critic_lr, alpha_lr : float
        Adam's learning rates of the policy, the Q networks and ``log_alpha``.
    alpha_init : float
        The initial temperature α.
    """

    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    alpha_lr: float = 1e-3
    alpha_init: float = 1.0

    algorithm = "sac"


def make_sac_config(env_id: str = "Pendulum-v1", **overrides: Any) -> SACConfig:
    """The SAC settings for ``env_id`` with ``overrides`` (``None`` values ignored)."""
    return config_from(SACConfig, overrides, env_id=env_id)


def check_sac_setup(config: SACConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here."""
    check_offpolicy_setup(config)


def build_tanh_normal_actor(observation_space: Any, action_space: Any, config: Any) -> Any:
    """A fresh ``ProbabilisticActor`` with a ``TanhNormal`` over the action box: an
    ``MLP(obs, 2·act, num_cells, relu)`` whose output is split into ``loc`` and
    ``scale`` (SAC's actor; also the offline trainers')."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import (
        MLP,
        DictModule,
        NormalParamExtractor,
        ProbabilisticActor,
        Sequential,
    )
    from arrayrl.modules.distributions import TanhNormal
    from arrayrl.random import make_generator

    backend = get_backend(config.backend, config.device)
    obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
    low, high = box_bounds(action_space)
    policy = MLP(obs_dim, 2 * act_dim, list(config.num_cells), activation_class="relu",
                 seed=config.seed)  # fmt: skip
    return ProbabilisticActor(
        DictModule(Sequential(policy, NormalParamExtractor()),
                   in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": scalar_or_array(low, backend),
                             "high": scalar_or_array(high, backend)},
        return_log_prob=True,
        rng=make_generator(config.seed, backend),
    ).to(backend)  # fmt: skip


def build_q_critic(observation_space: Any, action_space: Any, config: Any) -> Any:
    """A fresh ``ValueOperator(MLP(obs + act, 1, num_cells, relu), in_keys=["observation",
    "action"])`` (seed ``config.seed + 1``): the Q critic of SAC, TD3 and the offline
    trainers, which their losses expand into an ensemble."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import MLP, ValueOperator

    inputs = observation_space.shape[0] + action_space.shape[0]
    network = MLP(inputs, 1, list(config.num_cells), activation_class="relu",
                  seed=config.seed + 1)  # fmt: skip
    return ValueOperator(network, in_keys=["observation", "action"]).to(
        get_backend(config.backend, config.device)
    )


def build_sac_loss(observation_space: Any, action_space: Any, config: SACConfig) -> Any:
    """``SACLoss`` (v2, two critics, learned α) over a fresh actor and critic."""
    from arrayrl.objectives import SACLoss, ValueEstimators

    act_dim = action_space.shape[0]
    actor = build_tanh_normal_actor(observation_space, action_space, config)
    critic = build_q_critic(observation_space, action_space, config)
    loss = SACLoss(
        actor,
        critic,
        num_qvalue_nets=2,
        loss_function=config.loss_function,
        alpha_init=config.alpha_init,
        target_entropy=-float(act_dim),
        seed=config.seed + 2,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    return loss


class SACTrainer(OffPolicyTrainer):
    """The state of a SAC run: the loss, Adam, the target updater, the replay buffer."""

    #: Logged per iteration (means over its gradient steps). ``q_value`` is the batch
    #: mean of ``min_i Q_i(s, ã)``, recovered exactly from the outputs:
    #: ``loss_actor = α·mean(log π) − mean(min_i Q_i) = −α·entropy − q_value``.
    TERMS = ("loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy", "q_value")

    def __init__(self, config: SACConfig, env: Any) -> None:
        import torch

        from arrayrl.objectives import SoftUpdate

        super().__init__(config, env)
        self.loss = build_sac_loss(env.single_observation_space, env.single_action_space,
                                   config)  # fmt: skip
        rates = {"actor_network": config.actor_lr, "qvalue_network": config.critic_lr,
                 "log_alpha": config.alpha_lr}  # fmt: skip
        self.optimizer = torch.optim.Adam(adam_groups(self.loss, rates))
        self.updater = SoftUpdate(self.loss, tau=config.tau)
        self.actor = self.loss.actor_network
        self.policy = self.actor  # saved to <out>/policy.npz by the runner

    def policy_action(self) -> Any:
        """A draw from the current policy for every sub-env."""
        backend = self.backend
        batch = self.observation_batch()
        with backend.no_grad():
            self.actor(batch)
        return backend.to_numpy(batch.get("action"))

    def update(self, batch: ArrayDict) -> list[Any]:
        """One Adam step on ``loss_actor + loss_qvalue + loss_alpha``; a target update."""
        terms = self.loss(batch)
        total = terms["loss_actor"] + terms["loss_qvalue"] + terms["loss_alpha"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.updater.step()
        values = scalar_terms(terms, self.TERMS[:-1])
        q_value = -(values[0] + values[3] * values[4])
        return [*values, q_value]


def train_sac(config: SACConfig | None = None) -> TrainResult:
    """Train a SAC agent as ``config`` says; write the learning curve (CSV and PNG)
    every ``config.save_every_s`` seconds and at the end.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = make_sac_config() if config is None else config
    config.validate()
    return run_training(
        config, config.iterations, lambda env: SACTrainer(config, env), panels=SAC_PANELS
    )
