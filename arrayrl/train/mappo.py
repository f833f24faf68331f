"""MAPPO and IPPO on VMAS with arrayrl's ``MAPPOLoss`` / ``IPPOLoss`` and multi-agent GAE.

Yu et al. 2022 (MAPPO, https://arxiv.org/abs/2103.01955) and de Witt et al. 2020 (IPPO,
https://arxiv.org/abs/2011.09533), with the settings of TorchRL's multi-agent PPO
tutorial (``tutorials/sphinx-tutorials/multiagent_ppo.py``) on VMAS's ``navigation``
with 3 agents and continuous actions:

- the policy: one ``MultiAgentMLP`` shared by the agents (decentralised: each agent acts
  on its own observation; 2 hidden layers of 256, tanh) → ``NormalParamExtractor`` →
  ``TanhNormal`` in the action box, writing ``("agents", "action")`` and
  ``("agents", "action_log_prob")``;
- the critic: a ``MultiAgentMLP`` with one output per agent, centralised for MAPPO (every
  agent's value reads the whole team's observations), decentralised for IPPO;
- an iteration collects 60 envs × 100 steps = 6,000 team frames, computes multi-agent GAE
  (γ = 0.99, λ = 0.9; team flags broadcast over the agents, per-agent rewards) without
  gradients, then makes 30 epochs of shuffled minibatches of 400 with the loss (clip
  0.2, entropy coefficient 1e-4, smooth-L1 critic loss, advantages standardised per
  agent), Adam 3e-4 and the gradient norm clipped at 1.

Two departures from the tutorial: VMAS's ``max_steps`` horizon is a truncation (the
tutorial's ``VmasEnv`` marks it terminated, so GAE does not bootstrap there; see
:mod:`arrayrl.train.marl`), and the loss is ``MAPPOLoss`` with its defaults for the
agent dim (advantages standardised per agent) where the tutorial used ``ClipPPOLoss``
without standardisation. The loss and the estimator are arrayrl's backend-agnostic code;
the trainer is torch-specific (autograd, Adam).

>>> from arrayrl.train.mappo import make_mappo_config, train_mappo  # doctest: +SKIP
>>> print(train_mappo(make_mappo_config("navigation", frames=60_000)).summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

from arrayrl.data import ArrayDict

from .marl import (
    ACTION,
    OBSERVATION,
    REWARD,
    MultiAgentCollector,
    MultiAgentConfig,
    agent_network,
    check_vmas_setup,
)
from .ppo import _advantages, _update
from .runner import TrainResult, config_from, run_training

__all__ = [
    "IPPOConfig",
    "MAPPOConfig",
    "build_mappo_actor",
    "build_mappo_loss",
    "check_mappo_setup",
    "make_ippo_config",
    "make_mappo_config",
    "mappo_policy_recipe",
    "train_mappo",
]


@dataclasses.dataclass
class MAPPOConfig(MultiAgentConfig):
    """The settings of a MAPPO run: :class:`~arrayrl.train.marl.MultiAgentConfig`'s and

    Parameters
    ----------
    minibatch_size : int
        Frames per minibatch, at most ``num_envs × rollout_steps``.
    epochs : int
        Passes over each iteration's frames: each a fresh shuffle cut into
        ``frames_per_batch // minibatch_size`` minibatches (the rest of the shuffle is
        left out, as TorchRL's tutorial samples without replacement).
    lr : float
        Adam's learning rate (constant).
    gamma, lmbda : float
        Multi-agent GAE's discount and λ.
    clip_epsilon, entropy_coeff, critic_coeff, loss_critic_type
        ``MAPPOLoss`` arguments.
    max_grad_norm : float
        Global gradient-norm clip of all parameters together.
    value_norm : {"popart", "running", "percentile"}, optional
        Normalise the critic's targets and predictions by running statistics of the
        targets (``MAPPOLoss(value_norm=...)``: ``PopArtValueNorm``,
        ``RunningValueNorm`` or ``PercentileValueNorm``, shape 1); ``None``: no
        normalisation (the tutorial's).
    """

    minibatch_size: int = 400
    epochs: int = 30
    lr: float = 3e-4
    gamma: float = 0.99
    lmbda: float = 0.9
    clip_epsilon: float = 0.2
    entropy_coeff: float = 1e-4
    critic_coeff: float = 1.0
    loss_critic_type: str = "smooth_l1"
    max_grad_norm: float = 1.0
    value_norm: str | None = None

    algorithm = "mappo"
    #: MAPPO's critic sees the whole team; IPPO's each agent's own observation.
    centralized_critic = True

    @property
    def minibatches(self) -> int:
        """Minibatches per epoch."""
        return self.frames_per_batch // self.minibatch_size

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        super().validate()
        for name in ("minibatch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.minibatch_size > self.frames_per_batch:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} is more than an iteration's frames, "
                f"num_envs * rollout_steps = {self.frames_per_batch}"
            )
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.value_norm is not None and self.value_norm not in VALUE_NORMS:
            raise ValueError(
                f"value_norm must be one of {sorted(VALUE_NORMS)} or None, got {self.value_norm!r}"
            )


#: ``value_norm`` names and the classes of :mod:`arrayrl.modules.value_norm`.
VALUE_NORMS = {
    "popart": "PopArtValueNorm",
    "running": "RunningValueNorm",
    "percentile": "PercentileValueNorm",
}


@dataclasses.dataclass
class IPPOConfig(MAPPOConfig):
    """The settings of an IPPO run: :class:`MAPPOConfig`'s, with decentralised critics."""

    algorithm = "ippo"
    centralized_critic = False


def make_mappo_config(
    env_id: str = "navigation", *, algorithm: str = "mappo", **overrides: Any
) -> MAPPOConfig:
    """The MAPPO (or ``algorithm="ippo"``) settings for the VMAS scenario ``env_id``
    with ``overrides`` (``None`` values ignored)."""
    classes = {"mappo": MAPPOConfig, "ippo": IPPOConfig}
    if algorithm not in classes:
        raise ValueError(f"algorithm must be 'mappo' or 'ippo', got {algorithm!r}")
    return config_from(classes[algorithm], overrides, env_id=env_id)


def make_ippo_config(env_id: str = "navigation", **overrides: Any) -> IPPOConfig:
    """The IPPO settings for the VMAS scenario ``env_id`` with ``overrides``."""
    return make_mappo_config(env_id, algorithm="ippo", **overrides)


def check_mappo_setup(config: MAPPOConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here."""
    check_vmas_setup(config)


def build_mappo_actor(
    observation_space: Any,
    action_space: Any,
    config: MAPPOConfig,
    rng: Any = None,
    *,
    keys: str = "agents",
) -> Any:
    """The policy: a shared decentralised ``MultiAgentMLP`` → ``TanhNormal`` in the box.

    Parameters
    ----------
    observation_space, action_space : gymnasium.spaces.Box
        One env's team spaces, ``(agents, obs)`` and ``(agents, act)``.
    config : MAPPOConfig
    rng : arrayrl.random.Generator, optional
        The sampling generator.
    keys : {"agents", "flat"}
        ``"agents"``: read ``("agents", "observation")``, write ``("agents", "action")``
        (training); ``"flat"``: ``"observation"`` and ``"action"`` (a loaded checkpoint,
        :func:`arrayrl.train.checkpoint.load_policy`). The parameters are the same.
    """
    from arrayrl.backends import get_backend
    from arrayrl.modules import DictModule, NormalParamExtractor, ProbabilisticActor, Sequential
    from arrayrl.modules.distributions import TanhNormal

    obs_size = observation_space.shape[-1]
    action_size = action_space.shape[-1]
    backend = get_backend(config.backend, config.device)
    network = agent_network(obs_size, 2 * action_size, config, centralized=False,
                            seed=config.seed)  # fmt: skip
    prefix = ("agents",) if keys == "agents" else ()
    low, high = float(action_space.low.min()), float(action_space.high.max())
    if not (action_space.low == low).all() or not (action_space.high == high).all():
        raise ValueError(f"a TanhNormal policy needs one bound for all actions, got {action_space}")
    return ProbabilisticActor(
        DictModule(Sequential(network, NormalParamExtractor()),
                   in_keys=[_key(prefix, "observation")],
                   out_keys=[_key(prefix, "loc"), _key(prefix, "scale")]),
        in_keys=[_key(prefix, "loc"), _key(prefix, "scale")],
        out_keys=[_key(prefix, "action")],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high},
        return_log_prob=True,
        rng=rng,
    ).to(backend)  # fmt: skip


def _key(prefix: tuple[str, ...], name: str) -> Any:
    """``prefix + (name,)`` as a nested key, or ``name`` alone without a prefix."""
    return (*prefix, name) if prefix else name


def build_mappo_loss(
    observation_space: Any, action_space: Any, config: MAPPOConfig, rng: Any = None
) -> Any:
    """``MAPPOLoss`` (``IPPOLoss`` for an IPPO config) over the policy and a critic
    (centralised for MAPPO), with multi-agent GAE, keyed on TorchRL's VMAS layout."""
    from arrayrl.modules import ValueOperator
    from arrayrl.objectives import ValueEstimators
    from arrayrl.objectives.multiagent.mappo import IPPOLoss, MAPPOLoss

    actor = build_mappo_actor(observation_space, action_space, config, rng)
    obs_size = observation_space.shape[-1]
    critic_net = agent_network(obs_size, 1, config, centralized=config.centralized_critic,
                               seed=config.seed + 1)  # fmt: skip
    critic = ValueOperator(critic_net, in_keys=[OBSERVATION], out_keys=[("agents", "state_value")])
    loss_class = MAPPOLoss if config.centralized_critic else IPPOLoss
    loss = loss_class(
        actor,
        critic,
        value_norm=_value_norm(config.value_norm),
        clip_epsilon=config.clip_epsilon,
        entropy_coeff=config.entropy_coeff,
        critic_coeff=config.critic_coeff,
        loss_critic_type=config.loss_critic_type,
        seed=config.seed,
    )
    loss.set_keys(
        value=("agents", "state_value"),
        action=ACTION,
        sample_log_prob=("agents", "action_log_prob"),
        reward=REWARD,
    )
    loss.make_value_estimator(ValueEstimators.MAGAE, gamma=config.gamma, lmbda=config.lmbda)
    return loss


def mappo_policy_recipe(algorithm: str = "mappo") -> Any:
    """How :func:`~arrayrl.train.checkpoint.load_policy` rebuilds a MAPPO / IPPO policy:
    the actor reading ``"observation"`` (``[*B, agents, obs]``) and writing ``"action"``
    (``[*B, agents, act]``), exploring by a draw from its TanhNormal."""
    from .checkpoint import PolicyRecipe

    return PolicyRecipe(
        make_config=lambda env_id, **fields: make_mappo_config(
            env_id, algorithm=algorithm, **fields
        ),
        build_actor=lambda obs, act, config: build_mappo_actor(obs, act, config, keys="flat"),
        exploration="a draw from each agent's TanhNormal policy",
    )


def _value_norm(name: str | None) -> Any:
    """A fresh value normaliser of shape 1 by its ``value_norm`` name (``None``: none)."""
    if name is None:
        return None
    from arrayrl.modules import value_norm

    return getattr(value_norm, VALUE_NORMS[name])(shape=1)


def train_mappo(config: MAPPOConfig | None = None) -> TrainResult:
    """Train MAPPO (or IPPO, for an :class:`IPPOConfig`) as ``config`` says; write the
    learning curve (CSV and PNG) every ``config.save_every_s`` seconds and at the end,
    and the policy as ``<out>/policy.npz``.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = make_mappo_config() if config is None else config
    config.validate()
    return run_training(
        config, config.iterations, lambda env: MAPPOTrainer(config, env), make_env=_make_env
    )


def _make_env(config: MultiAgentConfig) -> Any:
    return config.make_env()


class MAPPOTrainer:
    """The state of a MAPPO / IPPO run for :func:`~arrayrl.train.runner.run_training`."""

    def __init__(self, config: MAPPOConfig, env: Any) -> None:
        import torch

        from arrayrl.backends import get_backend
        from arrayrl.random import make_generator

        self.config = config
        self.backend = get_backend(config.backend, config.device)
        sample_rng = make_generator(config.seed, self.backend)
        self.loss = build_mappo_loss(
            env.single_observation_space, env.single_action_space, config, sample_rng
        )
        self.policy = self.loss.actor_network  # saved to <out>/policy.npz by the runner
        self.optimizer = torch.optim.Adam(list(self.loss.parameters()), lr=config.lr)
        self.collector = MultiAgentCollector(
            env, lambda batch: self.policy(batch, rng=sample_rng), window=config.return_window
        )
        self.shuffle_rng = sample_rng.spawn()

    def iteration(self, index: int) -> dict[str, float]:
        """Collect ``num_envs × rollout_steps`` frames, compute GAE, update; the mean
        diagnostics of the update."""
        batch = self.collector.collect(self.config.rollout_steps)
        batch = _advantages(self.loss, batch, self.backend)
        return _update(self.loss, self.optimizer, _flat(batch), self.config, self.shuffle_rng)


def _flat(batch: ArrayDict) -> ArrayDict:
    """The ``[N, T]`` batch as ``[N·T]`` frames (each frame keeps its agent dim)."""
    return batch.reshape(-1)
