"""What SAC and TD3 share: the settings of an off-policy run, the transition collector
that feeds the replay buffer, and the loop of one logged iteration.

An off-policy run steps ``num_envs`` Gymnasium environments ``frames / num_envs`` times.
For the first ``learning_starts`` frames the actions are uniform in the action box (the
random warm-up) and nothing is learned; after that the policy acts and every frame
brings ``utd_ratio`` gradient steps on minibatches drawn uniformly from the replay
buffer. Every ``log_every`` frames is one iteration: one row of the learning curve with
the mean of the update's diagnostics over the iteration (``nan`` during the warm-up).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl.backends import Backend
from arrayrl.data import ArrayDict

from .replay import ReplayBuffer
from .rollout import EpisodeTracker, _final_observations, check_env
from .runner import RunConfig, check_device

__all__ = ["OffPolicyConfig", "OffPolicyTrainer", "TransitionCollector", "box_bounds"]


@dataclasses.dataclass
class OffPolicyConfig(RunConfig):
    """The settings SAC and TD3 share (their defaults: CleanRL's, with a shorter warm-up).

    Parameters
    ----------
    env_id : str
        A Gymnasium id with 1-D ``Box`` observations and bounded 1-D ``Box`` actions.
    frames : int
        Environment frames (rounded down to whole steps of the ``num_envs`` envs).
    seed : int
        Seeds the environments, the weights, the warm-up and exploration actions, the
        replay sampling and the loss's draws.
    backend, device : str
        Where the networks and batches live. Only ``"torch"`` trains (autograd).
    num_envs : int
        Environments stepped together (each step adds ``num_envs`` transitions).
    buffer_size : int
        Replay capacity (transitions).
    batch_size : int
        Transitions per gradient step.
    gamma : float
        Discount of the TD(0) target.
    tau : float
        ``SoftUpdate`` rate of the target networks.
    learning_starts : int
        Frames of uniform random actions before the first gradient step.
    utd_ratio : float
        Gradient steps per environment frame after the warm-up.
    num_cells : tuple of int
        Hidden widths of the actor and the critics (ReLU MLPs).
    loss_function : str
        The critic's distance (``"l2"``: CleanRL's MSE).
    log_every : int
        Frames per logged iteration (one row of the curve, one progress update).
    return_window : int
        Finished episodes averaged into the logged mean return.
    out : str, optional
        Output folder; default ``runs/<algorithm>-<env_id>-<seed>``.
    torch_threads : int, optional
        ``torch.set_num_threads`` during the run (``None``: unchanged).
    progress : bool
        Show the progress bar on stderr.
    save_every_s : float
        Rewrite the curve at the end of the first iteration at least this many seconds
        after the last write (and always at the end).
    """

    env_id: str = "Pendulum-v1"
    frames: int = 20_000
    seed: int = 0
    backend: str = "torch"
    device: str = "cpu"
    num_envs: int = 1
    buffer_size: int = 1_000_000
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    learning_starts: int = 5_000
    utd_ratio: float = 1.0
    num_cells: tuple[int, ...] = (256, 256)
    loss_function: str = "l2"
    log_every: int = 1_000
    return_window: int = 10
    out: str | None = None
    torch_threads: int | None = 1
    progress: bool = True
    save_every_s: float = 30.0

    #: Overridden by each algorithm's config.
    algorithm = "offpolicy"

    @property
    def steps(self) -> int:
        """Steps of the vector env (at least one)."""
        return max(1, self.frames // self.num_envs)

    @property
    def total_frames(self) -> int:
        """Frames the run collects: ``frames`` rounded to whole vector-env steps."""
        return self.steps * self.num_envs

    @property
    def steps_per_iteration(self) -> int:
        """Vector-env steps per logged iteration."""
        return max(1, self.log_every // self.num_envs)

    @property
    def iterations(self) -> int:
        """Logged iterations (the last one may be shorter)."""
        return math.ceil(self.steps / self.steps_per_iteration)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.backend != "torch":
            raise ValueError(
                f"backend {self.backend!r} cannot train: {self.algorithm.upper()} needs "
                f"gradients and {self.backend} has no autograd. arrayrl evaluates the same "
                "losses on NumPy (loss values, logging), but training runs on the torch "
                "backend (--backend torch)"
            )
        for name in ("frames", "num_envs", "buffer_size", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be >= 0, got {self.learning_starts}")
        if not self.utd_ratio > 0:
            raise ValueError(f"utd_ratio must be > 0, got {self.utd_ratio}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name, value in vars(self).items():
            if name.endswith("_lr") and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


def offpolicy_frames_note(config: OffPolicyConfig) -> str | None:
    """One line saying how ``frames`` was rounded to whole vector-env steps (``None``
    if not)."""
    if config.total_frames == config.frames:
        return None
    direction = "down" if config.total_frames < config.frames else "up"
    return (
        f"frames: {config.frames:,} rounded {direction} to {config.total_frames:,} "
        f"({config.steps:,} steps of {config.num_envs} envs)"
    )


def check_offpolicy_setup(config: OffPolicyConfig, *, discrete: bool = False) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here: the
    settings, the environment (continuous actions, or ``Discrete`` ones when
    ``discrete``) and the device."""
    import gymnasium
    from gymnasium import spaces

    config.validate()
    check_env(config.env_id)
    env = gymnasium.make(config.env_id)
    action_space = env.action_space
    env.close()
    if discrete:
        wanted, kind, example = spaces.Discrete, "discrete actions (Discrete)", "CartPole-v1"
    else:
        wanted, kind, example = spaces.Box, "continuous actions (a 1-D Box)", "Pendulum-v1"
    if not isinstance(action_space, wanted):
        raise ValueError(
            f"{config.env_id} has actions {action_space}; {config.algorithm.upper()} needs "
            f"{kind}, e.g. {example}"
        )
    check_device(config.backend, config.device)


def box_bounds(action_space: Any) -> tuple[np.ndarray, np.ndarray]:
    """The float32 ``(low, high)`` of a bounded 1-D ``Box``."""
    low = np.asarray(action_space.low, np.float32)
    high = np.asarray(action_space.high, np.float32)
    return low, high


def scalar_or_array(bound: np.ndarray, backend: Backend) -> Any:
    """A bound as a float when all its entries are equal, else a backend array."""
    return float(bound[0]) if np.all(bound == bound[0]) else backend.from_numpy(bound)


class TransitionCollector:
    """Steps a vector env with a policy and adds each step's transitions to a buffer.

    Parameters
    ----------
    env : gymnasium.vector.VectorEnv
        Built by :func:`~arrayrl.train.rollout.make_vector_env` (``SAME_STEP``
        autoreset: the true last observation of a finished episode is stored as
        ``("next", "observation")``, and only ``terminated`` cuts the bootstrap).
    buffer : ReplayBuffer
    seed : int
        Sub-env ``i`` is reset with ``seed + i``.
    window : int
        Finished episodes averaged by :attr:`mean_return`.
    """

    def __init__(self, env: Any, buffer: ReplayBuffer, seed: int, window: int = 10) -> None:
        self.env, self.buffer = env, buffer
        self.num_envs = env.num_envs
        self.episodes = EpisodeTracker(self.num_envs, window)
        self.frames = 0
        obs, _ = env.reset(seed=seed)
        self.observation = np.asarray(obs, dtype=np.float32)

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return of the recent finished episodes."""
        return self.episodes.mean_return

    def step(self, action: np.ndarray) -> None:
        """Step every sub-env with ``action`` ``[N, *A]``; store the transitions."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = np.logical_or(terminated, truncated)
        reward = np.asarray(reward, dtype=np.float64)
        self.episodes.step(reward, done)
        obs = np.asarray(obs, dtype=np.float32)
        next_obs = _final_observations(obs, done, info)
        integer = np.issubdtype(np.asarray(action).dtype, np.integer)
        self.buffer.extend({
            "observation": self.observation,
            "action": np.asarray(action, dtype=np.int64 if integer else np.float32),
            "next": {
                "observation": next_obs,
                "reward": reward,
                "done": done,
                "terminated": np.asarray(terminated, dtype=bool),
            },
        })  # fmt: skip
        self.observation = obs
        self.frames += self.num_envs


class OffPolicyTrainer:
    """One off-policy run for :func:`~arrayrl.train.runner.run_training`.

    Subclasses set :attr:`TERMS` (the logged diagnostics) and implement
    :meth:`policy_action` (the exploring action of the learnt policy, NumPy ``[N, *A]``)
    and :meth:`update` (one gradient step on a minibatch; returns the diagnostics as
    detached 0-d tensors, ``TERMS`` order).
    """

    TERMS: tuple[str, ...] = ()

    def __init__(self, config: OffPolicyConfig, env: Any) -> None:
        self.config = config
        self.action_space = env.single_action_space
        if hasattr(self.action_space, "n"):  # Discrete: no box
            self.low = self.high = None
        else:
            self.low, self.high = box_bounds(self.action_space)
        self.buffer = ReplayBuffer(min(config.buffer_size, config.total_frames), self.backend)
        self.collector = TransitionCollector(env, self.buffer, config.seed, config.return_window)
        seeds = np.random.SeedSequence([config.seed, 2024]).spawn(2)
        self.action_rng = np.random.default_rng(seeds[0])  # warm-up and exploration noise
        self.sample_rng = np.random.default_rng(seeds[1])  # replay sampling
        self.updates = 0
        self._credit = 0.0  # gradient steps owed (utd_ratio per frame)

    @property
    def backend(self) -> Backend:
        """Where the networks and the batches live."""
        from arrayrl.backends import get_backend

        return get_backend(self.config.backend, self.config.device)

    def random_action(self) -> np.ndarray:
        """Uniform actions in the box (or uniform indices of a ``Discrete`` space), one
        per sub-env (the warm-up)."""
        num_envs = self.collector.num_envs
        if self.low is None:
            return self.action_rng.integers(0, int(self.action_space.n), num_envs)
        shape = (num_envs, *self.low.shape)
        return self.action_rng.uniform(self.low, self.high, shape).astype(np.float32)

    def observation_batch(self) -> ArrayDict:
        """The current observations as an ``[N]`` batch on the backend."""
        backend = self.backend
        obs = backend.from_numpy(self.collector.observation)
        return ArrayDict({"observation": obs}, [self.collector.num_envs])

    def policy_action(self) -> np.ndarray:
        raise NotImplementedError

    def update(self, batch: ArrayDict) -> list[Any]:
        raise NotImplementedError

    def iteration(self, index: int) -> dict[str, float]:
        """``steps_per_iteration`` vector steps (fewer in the last iteration), each
        followed by its gradient steps once the warm-up is over; the mean diagnostics."""
        import torch

        config, collector = self.config, self.collector
        steps = min(config.steps_per_iteration, config.steps - index * config.steps_per_iteration)
        logged = []
        for _ in range(steps):
            warm = collector.frames < config.learning_starts
            collector.step(self.random_action() if warm else self.policy_action())
            if collector.frames < config.learning_starts:
                continue
            self._credit += collector.num_envs * config.utd_ratio
            while self._credit >= 1.0:
                self._credit -= 1.0
                logged.append(torch.stack(self.update(self.buffer.sample(
                    config.batch_size, self.sample_rng))))  # fmt: skip
                self.updates += 1
        if not logged:
            return {**dict.fromkeys(self.TERMS, math.nan), "updates": self.updates}
        means = torch.stack(logged).mean(dim=0).tolist()  # one host sync per iteration
        return {**dict(zip(self.TERMS, means)), "updates": self.updates}


def scalar_terms(terms: Mapping[str, Any], names: tuple[str, ...]) -> list[Any]:
    """The named entries of a loss output as detached float32 0-d tensors."""
    return [terms[name].detach().float().mean() for name in names]


def adam_groups(loss: Any, rates: Mapping[str, float]) -> list[dict[str, Any]]:
    """Adam parameter groups: each parameter of ``loss`` gets the rate of the first
    prefix of ``rates`` its name starts with (``"actor_network"``, ``"log_alpha"``...)."""
    groups: dict[str, list[Any]] = {prefix: [] for prefix in rates}
    for name, leaf in loss.named_parameters():
        prefix = next((p for p in rates if name.startswith(p)), None)
        if prefix is None:
            raise RuntimeError(f"no learning rate for the loss parameter {name!r}")
        groups[prefix].append(leaf)
    return [{"params": leaves, "lr": rates[p]} for p, leaves in groups.items() if leaves]
