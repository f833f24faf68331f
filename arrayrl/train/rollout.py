"""Rollouts from Gymnasium vector environments, in TorchRL's batch layout.

:class:`RolloutCollector` steps ``N`` environments ``T`` times with a policy and returns an
:class:`~arrayrl.data.ArrayDict` of batch size ``[N, T]``::

    observation, action, action_log_prob, <distribution parameters>
    ("next", "observation"), ("next", "reward"), ("next", "done"),
    ("next", "terminated"), ("next", "truncated")      # the last four [N, T, 1]

The environments run in Gymnasium's ``SAME_STEP`` autoreset mode: the step that ends an
episode returns the first observation of the next one and puts the true last observation
in ``info["final_obs"]``. The collector stores that true last observation as
``("next", "observation")``, so an estimator bootstraps a *truncated* episode from the
value of the state where it was cut, and cuts the bootstrap on *termination* only
(``terminated``); ``done = terminated | truncated`` cuts the trace.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from arrayrl.backends import Backend
from arrayrl.data import ArrayDict

__all__ = [
    "EpisodeTracker",
    "RewardScaler",
    "RolloutCollector",
    "StepCollector",
    "check_env",
    "make_vector_env",
]


def check_env(env_id: str) -> None:
    """Raise ``ValueError`` unless ``env_id`` makes a Gymnasium environment the PPO
    trainer can run: 1-D ``Box`` observations, ``Discrete`` or bounded 1-D ``Box`` actions.

    Makes (and closes) one environment, so an unknown id, a missing dependency
    (``gymnasium[box2d]``, ...) or an unsupported space fails before any training.
    """
    import gymnasium
    from gymnasium import spaces

    try:
        env = gymnasium.make(env_id)
    except (gymnasium.error.Error, ImportError) as error:
        raise ValueError(f"cannot make Gymnasium env {env_id!r}: {error}") from None
    observation, action = env.observation_space, env.action_space
    env.close()
    if not (isinstance(observation, spaces.Box) and len(observation.shape) == 1):
        raise ValueError(
            f"{env_id} has observations {observation}; the PPO trainer's MLPs need a 1-D Box"
        )
    bounded_box = (
        isinstance(action, spaces.Box)
        and len(action.shape) == 1
        and bool(np.isfinite(action.low).all() and np.isfinite(action.high).all())
    )
    if not (isinstance(action, spaces.Discrete) or bounded_box):
        raise ValueError(
            f"{env_id} has actions {action}; the PPO trainer supports Discrete and "
            "1-D Box actions with finite bounds"
        )


def make_vector_env(env_id: str, num_envs: int, **make_kwargs: Any) -> Any:
    """``num_envs`` copies of ``env_id`` in a ``SyncVectorEnv`` with ``SAME_STEP`` autoreset.

    Parameters
    ----------
    env_id : str
        A Gymnasium id (``"CartPole-v1"``, ``"Pendulum-v1"``, ...).
    num_envs : int
        Number of sub-environments (>= 1).
    **make_kwargs
        Passed to ``gymnasium.make``.
    """
    import gymnasium

    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    factories = [lambda: gymnasium.make(env_id, **make_kwargs) for _ in range(num_envs)]
    return gymnasium.vector.SyncVectorEnv(
        factories, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP
    )


class EpisodeTracker:
    """Undiscounted returns and lengths of the episodes the vector env finishes.

    Parameters
    ----------
    num_envs : int
    window : int, default 20
        How many recent episodes :attr:`mean_return` averages.
    """

    def __init__(self, num_envs: int, window: int = 20) -> None:
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)
        self.recent: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.episodes = 0

    def step(self, reward: np.ndarray, done: np.ndarray) -> None:
        """Add one step's rewards; close the episodes where ``done``."""
        self._returns += reward
        self._lengths += 1
        for i in np.flatnonzero(done):
            self.recent.append(float(self._returns[i]))
            self.recent_lengths.append(int(self._lengths[i]))
            self.episodes += 1
        self._returns[done] = 0.0
        self._lengths[done] = 0

    @property
    def mean_return(self) -> float:
        """Mean return of the last ``window`` finished episodes (``nan`` before any)."""
        return float(np.mean(self.recent)) if self.recent else float("nan")


class RewardScaler:
    """Divide rewards by the running std of the discounted return (``NormalizeReward``).

    ``G ← γ·G·(1 − done) + r`` per environment; the rewards handed to the learner are
    ``r / sqrt(Var[G] + eps)``, with ``Var`` a running estimate over every step seen.
    The estimate starts from one pseudo-sample of variance 1 around 0, so the first
    steps (where every ``G`` is alike) are not divided by a near-zero deviation.
    Episode statistics are always kept on the raw rewards.
    """

    def __init__(self, num_envs: int, gamma: float, eps: float = 1e-8) -> None:
        self.gamma, self.eps = gamma, eps
        self._return = np.zeros(num_envs)
        self._count, self._mean, self._m2 = 1, 0.0, 1.0

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The scaled rewards of one step (updates the running statistics first)."""
        self._return = self.gamma * self._return + reward
        self._update(self._return)
        self._return[done] = 0.0
        return reward / np.sqrt(self.variance + self.eps)

    @property
    def variance(self) -> float:
        """The running variance of the discounted return (1.0 before any data)."""
        return self._m2 / self._count

    def _update(self, values: np.ndarray) -> None:
        """Chan et al.'s parallel update of the running mean and squared deviations."""
        n, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self._count + n
        delta = mean - self._mean
        self._mean += delta * n / total
        self._m2 += m2 + delta**2 * self._count * n / total
        self._count = total


class StepCollector:
    """A collector's ``[N, T]`` batches from its one-step ``_step()`` (``[N]``), the
    frame count and the mean return of its :class:`EpisodeTracker` ``episodes``."""

    episodes: EpisodeTracker
    num_envs: int
    frames: int

    @property
    def mean_return(self) -> float:
        """Mean undiscounted return of the recent finished episodes (``nan`` before any)."""
        return self.episodes.mean_return

    def collect(self, steps: int) -> ArrayDict:
        """``steps`` steps of every environment, as an ``[N, steps]`` batch."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        batch = ArrayDict.stack([self._step() for _ in range(steps)], dim=1)
        self.frames += steps * self.num_envs
        return batch

    def _step(self) -> ArrayDict:
        raise NotImplementedError


class RolloutCollector(StepCollector):
    """Steps a vector env with an arrayrl actor and returns ``[N, T]`` batches.

    Parameters
    ----------
    env : gymnasium.vector.VectorEnv
        Built by :func:`make_vector_env` (``SAME_STEP`` autoreset).
    actor : ProbabilisticActor
        Writes ``action`` and ``action_log_prob`` (and its distribution parameters).
    backend : Backend
        Where the batch lives (the actor's parameters' backend).
    rng : arrayrl.random.Generator
        The generator the actor samples with.
    seed : int
        Seeds the environments (sub-env ``i`` gets ``seed + i``).
    reward_scaler : RewardScaler, optional
        Scales the rewards stored in the batch.
    window : int, default 20
        Episodes averaged by :attr:`mean_return`.
    """

    def __init__(
        self,
        env: Any,
        actor: Any,
        backend: Backend,
        rng: Any,
        seed: int,
        *,
        reward_scaler: RewardScaler | None = None,
        window: int = 20,
    ) -> None:
        self.env, self.actor, self.backend, self.rng = env, actor, backend, rng
        self.num_envs = env.num_envs
        self.reward_scaler = reward_scaler
        self.episodes = EpisodeTracker(self.num_envs, window)
        self.frames = 0
        obs, _ = env.reset(seed=seed)
        self._obs = np.asarray(obs, dtype=np.float32)

    def _step(self) -> ArrayDict:
        """One step of every sub-env: act, step, record, advance the observation."""
        backend = self.backend
        record = ArrayDict({"observation": backend.from_numpy(self._obs)}, [self.num_envs])
        with backend.no_grad():
            self.actor(record, rng=self.rng)
        action = backend.to_numpy(record.get("action"))
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = np.logical_or(terminated, truncated)
        reward = np.asarray(reward, dtype=np.float64)
        self.episodes.step(reward, done)
        if self.reward_scaler is not None:
            reward = self.reward_scaler(reward, done)
        next_obs = _final_observations(np.asarray(obs, dtype=np.float32), done, info)
        flags = {"done": done, "terminated": terminated, "truncated": truncated}
        record.set("next", _next_entries(backend, next_obs, reward, flags))
        self._obs = np.asarray(obs, dtype=np.float32)
        return record


def _final_observations(obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """``obs`` with the true last observation of every finished episode put back."""
    if not done.any():
        return obs
    if "final_obs" not in info:
        raise RuntimeError(
            "an episode ended but info has no 'final_obs': build the vector env with "
            "autoreset_mode=AutoresetMode.SAME_STEP (make_vector_env does)"
        )
    next_obs = obs.copy()
    for i in np.flatnonzero(done):
        next_obs[i] = np.asarray(info["final_obs"][i], dtype=np.float32)
    return next_obs


def _next_entries(
    backend: Backend, next_obs: np.ndarray, reward: np.ndarray, flags: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The ``"next"`` sub-dict: observation, reward and flags as ``[N, 1]`` arrays."""
    entries = {
        "observation": backend.from_numpy(next_obs),
        "reward": backend.from_numpy(reward.astype(np.float32)[:, None]),
    }
    for name, flag in flags.items():
        entries[name] = backend.from_numpy(np.asarray(flag, dtype=bool)[:, None])
    return entries
