"""QMIX and VDN on VMAS with arrayrl's ``QMixerLoss``.

Rashid et al. 2018 (QMIX, https://arxiv.org/abs/1803.11485) and Sunehag et al. 2018 (VDN,
https://arxiv.org/abs/1706.05296), laid out as TorchRL's
``sota-implementations/multiagent/qmix_vdn.py``:

- every agent's action values come from one ``MultiAgentMLP`` shared by the agents
  (decentralised, 2 hidden layers of 256, tanh) read by a ``QValueActor`` (greedy
  categorical action, ``("agents", "chosen_action_value")``);
- the mixer turns the agents' chosen values into the team's ``Q_tot``: ``QMixer``
  (monotonic hypernetwork of the state, embedding 32; the state is the stacked agents'
  observations, as in TorchRL's example) or ``VDNMixer`` (the sum; ``--mixer vdn``);
- the team reward is the agents' mean reward; the TD(0) target
  ``r + γ (1 − terminated) Q_tot^target(s')`` takes the target network's greedy values
  mixed by the target mixer;
- exploration is ε-greedy per agent, ε decayed linearly from ``epsilon_start`` to
  ``epsilon_end`` over ``exploration_fraction`` of the frames;
- every iteration collects ``num_envs × rollout_steps`` frames into a replay buffer
  (:class:`~arrayrl.train.replay.ReplayBuffer`), then makes ``epochs × frames_per_batch
  / minibatch_size`` gradient steps on uniformly drawn minibatches (Adam, gradient norm
  clipped), each followed by a soft target update (τ = 0.005).

TorchRL's example keeps only the last iteration's frames (60,000 a batch, minibatches of
4,096, 45 epochs, Adam 5e-5, 500 iterations, on VMAS's balance). The defaults here are
scaled for a small CPU: 6,000 frames an iteration into a 60,000-frame buffer, 20 epochs
of 6 minibatches of 1,000 (120 gradient steps, each frame replayed about 20 times), Adam
5e-4, 120,000 frames. On navigation with 3 agents, 5 epochs instead of 20 left the
return at about -2 after 120,000 frames (from -5); 20 epochs brought it to about +2.7.

>>> from arrayrl.train.qmix import make_qmix_config, train_qmix   # doctest: +SKIP
>>> print(train_qmix(make_qmix_config("navigation")).summary())   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from arrayrl.data import ArrayDict

from .curve import Panel
from .marl import (
    ACTION,
    OBSERVATION,
    MultiAgentCollector,
    MultiAgentConfig,
    agent_network,
    check_vmas_setup,
)
from .replay import ReplayBuffer
from .runner import TrainResult, config_from, run_training

__all__ = [
    "QMIX_PANELS",
    "QMIXConfig",
    "build_qmix_loss",
    "build_qvalue_actor",
    "check_qmix_setup",
    "make_qmix_config",
    "qmix_policy_recipe",
    "train_qmix",
]

#: The panels of ``arrayrl train qmix``.
QMIX_PANELS = (
    Panel("mean episode return (recent episodes)", ("mean_return",)),
    Panel("agents' greedy value max_a Q_i(o_i, a) (collected frames)", ("q_value",)),
    Panel("TD loss", ("loss",), low=0.0),
    Panel("exploration epsilon", ("epsilon",), low=0.0, high=1.0),
    Panel("frames / s", ("fps",), low=0.0),
)

#: What the agents' values and the team value are called in a batch (TorchRL's keys).
ACTION_VALUE = ("agents", "action_value")
CHOSEN_VALUE = ("agents", "chosen_action_value")
TEAM_VALUE = "chosen_action_value"


@dataclasses.dataclass
class QMIXConfig(MultiAgentConfig):
    """The settings of a QMIX / VDN run: :class:`~arrayrl.train.marl.MultiAgentConfig`'s
    and

    Parameters
    ----------
    mixer : {"qmix", "vdn"}
        The mixing network.
    mixing_embed_dim : int
        QMIX's hidden width.
    buffer_size : int
        Replay capacity (frames).
    minibatch_size : int
        Frames per gradient step.
    epochs : int
        An iteration makes ``epochs × frames_per_batch // minibatch_size`` steps.
    lr : float
        Adam's learning rate.
    max_grad_norm : float
        The gradient's global norm is clipped to this.
    gamma : float
        Discount of the TD(0) target.
    tau : float
        Soft target update ``θ̄ ← τθ + (1 − τ)θ̄`` after every gradient step.
    loss_function : str
        The TD distance (``"l2"``: QMixerLoss's default).
    epsilon_start, epsilon_end, exploration_fraction : float
        ε-greedy, linear from start to end over this fraction of the frames.
    """

    frames: int = 120_000
    mixer: str = "qmix"
    mixing_embed_dim: int = 32
    buffer_size: int = 60_000
    minibatch_size: int = 1_000
    epochs: int = 20
    lr: float = 5e-4
    max_grad_norm: float = 40.0
    gamma: float = 0.9
    tau: float = 0.005
    loss_function: str = "l2"
    epsilon_start: float = 0.3
    epsilon_end: float = 0.0
    exploration_fraction: float = 0.5

    continuous_actions = False

    @property
    def algorithm(self) -> str:  # type: ignore[override]
        """``"qmix"`` or ``"vdn"``: the mixer names the run."""
        return self.mixer

    @property
    def updates_per_iteration(self) -> int:
        """Gradient steps per iteration."""
        return self.epochs * max(1, self.frames_per_batch // self.minibatch_size)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.mixer not in ("qmix", "vdn"):
            raise ValueError(f"mixer must be 'qmix' or 'vdn', got {self.mixer!r}")
        super().validate()
        for name in ("mixing_embed_dim", "buffer_size", "minibatch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("epsilon_start", "epsilon_end", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")

    def epsilon(self, frames: int) -> float:
        """The exploration probability after ``frames`` frames."""
        decay_frames = self.exploration_fraction * self.total_frames
        progress = 1.0 if decay_frames == 0 else min(1.0, frames / decay_frames)
        return self.epsilon_start + progress * (self.epsilon_end - self.epsilon_start)


def make_qmix_config(env_id: str = "navigation", **overrides: Any) -> QMIXConfig:
    """The QMIX settings (``mixer="vdn"`` for VDN) for the VMAS scenario ``env_id``
    with ``overrides`` (``None`` values ignored)."""
    return config_from(QMIXConfig, overrides, env_id=env_id)


def check_qmix_setup(config: QMIXConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here."""
    check_vmas_setup(config)


def build_qvalue_actor(
    observation_space: Any, action_space: Any, config: QMIXConfig, *, keys: str = "agents"
) -> Any:
    """The agents' ``QValueActor``: a shared decentralised ``MultiAgentMLP`` of action
    values and the greedy categorical choice.

    ``keys="agents"`` reads ``("agents", "observation")`` and writes ``("agents",
    "action")``, ``("agents", "action_value")``, ``("agents", "chosen_action_value")``
    (training); ``keys="flat"`` the same names at the top level (a loaded checkpoint).
    """
    from arrayrl.modules import QValueActor

    obs_size = observation_space.shape[-1]
    num_actions = int(action_space.high.max()) + 1
    network = agent_network(obs_size, num_actions, config, centralized=False, seed=config.seed)
    nested = keys == "agents"

    def key(name: str) -> Any:
        return ("agents", name) if nested else name

    return QValueActor(
        network,
        in_keys=[key("observation")],
        action_space="categorical",
        action_value_key=key("action_value"),
        action_key=key("action"),
        chosen_action_value_key=key("chosen_action_value"),
    )


def build_mixer(observation_space: Any, config: QMIXConfig) -> Any:
    """The mixer as a dict module: ``QMixer`` of the agents' chosen values and the state
    (the stacked observations), or ``VDNMixer``; writes ``"chosen_action_value"``."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import DictModule
    from arrayrl.modules.multiagent import QMixer, VDNMixer

    n_agents = observation_space.shape[0]
    if config.mixer == "vdn":
        return DictModule(VDNMixer(n_agents), in_keys=[CHOSEN_VALUE], out_keys=[TEAM_VALUE])
    mixer = QMixer(tuple(observation_space.shape), config.mixing_embed_dim, n_agents,
                   seed=config.seed + 1)  # fmt: skip
    mixer.to(get_backend(config.backend, config.device))
    return DictModule(mixer, in_keys=[CHOSEN_VALUE, OBSERVATION], out_keys=[TEAM_VALUE])


def build_qmix_loss(observation_space: Any, action_space: Any, config: QMIXConfig) -> Any:
    """``QMixerLoss`` (with target copies of the agents' network and the mixer) and its
    TD(0) estimator, keyed on TorchRL's VMAS layout."""
    from arrayrl.backends import get_backend
    from arrayrl.objectives import ValueEstimators
    from arrayrl.objectives.multiagent.qmixer import QMixerLoss

    actor = build_qvalue_actor(observation_space, action_space, config)
    actor.to(get_backend(config.backend, config.device))
    loss = QMixerLoss(
        actor,
        build_mixer(observation_space, config),
        loss_function=config.loss_function,
        delay_value=True,
    )
    loss.set_keys(
        action_value=ACTION_VALUE,
        local_value=CHOSEN_VALUE,
        global_value=TEAM_VALUE,
        action=ACTION,
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    return loss


def epsilon_greedy_agents(
    action: Any, num_actions: int, epsilon: float, rng: np.random.Generator
) -> Any:
    """``action`` (``[N, agents]`` int64 tensor) with each agent's action replaced by a
    uniform one with probability ``epsilon``, independently per agent."""
    import torch

    shape = tuple(action.shape)
    explore = torch.from_numpy(rng.random(shape) < epsilon).to(action.device)
    uniform = torch.from_numpy(rng.integers(0, num_actions, shape)).to(action.device)
    return torch.where(explore, uniform, action)


def _transitions(batch: ArrayDict) -> dict[str, Any]:
    """An ``[N, T]`` rollout as ``N·T`` flat transitions for the replay buffer: the
    agents' observations and actions as ``observation`` / ``action`` ``[agents, ...]``,
    the team reward (mean over the agents) and the team flags."""
    flat = batch.reshape(-1)
    host = flat.backend.to_numpy
    return {
        "observation": host(flat.get(OBSERVATION)),
        "action": host(flat.get(ACTION)),
        "next": {
            "observation": host(flat.get(("next", *OBSERVATION))),
            "reward": host(flat.get(("next", "agents", "reward"))).mean(axis=-2),
            "done": host(flat.get(("next", "done"))),
            "terminated": host(flat.get(("next", "terminated"))),
        },
    }


def _nested(sample: ArrayDict) -> ArrayDict:
    """A replay minibatch back in TorchRL's VMAS layout (agents' entries under
    ``"agents"``, team reward and flags ``[B, 1]`` at the top of ``"next"``)."""
    return ArrayDict(
        {
            "agents": {"observation": sample.get("observation"), "action": sample.get("action")},
            "next": {
                "agents": {"observation": sample.get(("next", "observation"))},
                "reward": sample.get(("next", "reward")),
                "done": sample.get(("next", "done")),
                "terminated": sample.get(("next", "terminated")),
            },
        },
        sample.batch_size,
    )


class QMIXTrainer:
    """The state of a QMIX / VDN run for :func:`~arrayrl.train.runner.run_training`."""

    def __init__(self, config: QMIXConfig, env: Any) -> None:
        import torch

        from arrayrl.backends import get_backend
        from arrayrl.objectives import SoftUpdate

        self.config = config
        self.backend = get_backend(config.backend, config.device)
        self.loss = build_qmix_loss(env.single_observation_space, env.single_action_space,
                                    config)  # fmt: skip
        self.policy = self.loss.local_value_network  # saved to <out>/policy.npz
        self.parameters = [leaf for _, leaf in self.loss.named_parameters()]
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.lr)
        self.updater = SoftUpdate(self.loss, tau=config.tau)
        self.num_actions = env.num_actions
        self.buffer = ReplayBuffer(min(config.buffer_size, config.total_frames), self.backend)
        seeds = np.random.SeedSequence([config.seed, 2024]).spawn(2)
        self.action_rng = np.random.default_rng(seeds[0])
        self.sample_rng = np.random.default_rng(seeds[1])
        self.collector = MultiAgentCollector(env, self._act, window=config.return_window)

    def _act(self, batch: ArrayDict) -> None:
        """ε-greedy: the greedy actions, each replaced by a uniform one with
        probability ε (the ε of the frames collected so far)."""
        self.policy(batch)
        epsilon = self.config.epsilon(self.collector.frames)
        greedy = batch.get(ACTION)
        batch.set(ACTION, epsilon_greedy_agents(greedy, self.num_actions, epsilon,
                                                self.action_rng))  # fmt: skip

    def iteration(self, index: int) -> dict[str, float]:
        """Collect ``num_envs × rollout_steps`` frames into the buffer; then
        ``updates_per_iteration`` gradient steps, each with a soft target update."""
        import torch

        config = self.config
        epsilon = config.epsilon(self.collector.frames)
        rollout = self.collector.collect(config.rollout_steps)
        greedy_value = float(rollout.get(CHOSEN_VALUE).float().mean())
        self.buffer.extend(_transitions(rollout))
        losses = [
            self.update(_nested(self.buffer.sample(config.minibatch_size, self.sample_rng)))
            for _ in range(config.updates_per_iteration)
        ]
        loss = float(torch.stack(losses).mean())  # one host sync per iteration
        return {"loss": loss, "q_value": greedy_value, "epsilon": epsilon}

    def update(self, batch: ArrayDict) -> Any:
        """One Adam step on the TD loss (gradient norm clipped), then the soft target
        update; the loss, detached."""
        import torch

        loss = self.loss(batch)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.updater.step()
        return loss.detach().float()


def qmix_policy_recipe(mixer: str = "qmix") -> Any:
    """How :func:`~arrayrl.train.checkpoint.load_policy` rebuilds a QMIX / VDN policy:
    the agents' ``QValueActor`` reading ``"observation"`` (``[*B, agents, obs]``) and
    writing the greedy ``"action"`` (``[*B, agents]``), with ε-greedy exploration at
    ``epsilon_end`` (0 by default: greedy)."""
    from .checkpoint import PolicyRecipe
    from .dqn import epsilon_greedy

    def noise(action: np.ndarray, space: Any, config: Any, rng: np.random.Generator) -> Any:
        return epsilon_greedy(action, int(space.high.max()) + 1, config.epsilon_end, rng)

    return PolicyRecipe(
        make_config=lambda env_id, **fields: make_qmix_config(env_id, **{**fields, "mixer": mixer}),
        build_actor=lambda obs, act, config: build_qvalue_actor(obs, act, config, keys="flat"),
        exploration="epsilon-greedy per agent with epsilon = epsilon_end",
        sample=False,
        noise=noise,
    )


def train_qmix(config: QMIXConfig | None = None) -> TrainResult:
    """Train QMIX (or VDN, ``mixer="vdn"``) as ``config`` says; write the learning curve
    (CSV and PNG) every ``config.save_every_s`` seconds and at the end, and the agents'
    Q-network as ``<out>/policy.npz``.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = make_qmix_config() if config is None else config
    config.validate()
    return run_training(
        config, config.iterations, lambda env: QMIXTrainer(config, env),
        panels=QMIX_PANELS, make_env=lambda c: c.make_env(),
    )  # fmt: skip
