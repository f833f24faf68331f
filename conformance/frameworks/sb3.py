"""Stable-Baselines3's ``RolloutBuffer.compute_returns_and_advantage`` as a ``check`` target.

SB3 (``pip install stable-baselines3``; not a dependency of arrayrl) computes GAE on its
``[n_steps, n_envs]`` rollout buffer, so the implementation uses ``check``'s
``"time_major"`` convention, batch and feature dims flattened into ``n_envs``. SB3's
conventions, and how a case is mapped onto them:

- ``episode_starts[t]`` says that observation ``t`` starts an episode:
  ``episode_starts[t + 1] = done[t]``; the last step's ``dones`` argument is
  ``done[T - 1]`` and ``last_values`` is ``next_state_value[T - 1]``;
- one ``values`` array: SB3 reads ``V(s_{t+1})`` from ``values[t + 1]``. A case's
  ``next_state_value`` is independent of ``state_value``, so at steps that are not done
  ``γ·(next_state_value[t] - state_value[t + 1])`` is added to ``reward[t]`` (zero on a
  consistent trajectory);
- truncation is folded into the reward at collection time
  (``OnPolicyAlgorithm.collect_rollouts``, on_policy_algorithm.py lines 234-245 in
  2.9.2: ``rewards[idx] += gamma * terminal_value``
  when ``TimeLimit.truncated``, then the step is done): ``γ·next_state_value[t]`` is
  added where ``done & ~terminated``; with that, SB3 reproduces the reference on every
  case with scalar γ and λ;
- ``returns = advantages + values`` is ``value_target``.

SB3 allocates its buffer in float32; the implementation gives the buffer the case's
dtype (SB3's arithmetic follows the arrays), so that float64 cases are checked in
float64; :func:`gae_time_major_native` keeps SB3's float32 buffer. What cannot be
expressed: per-step γ and λ (``RolloutBuffer(gamma=..., gae_lambda=...)`` are floats),
:data:`SCALAR_HYPERPARAMETERS`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from typing import Any

import numpy as np

from ..check import EstimatorSpec
from . import Framework, Implementation, scalar_hyperparameters
from .cleanrl import fold_into_reward, scalar_rollout

__all__ = ["FRAMEWORK", "SCALAR_HYPERPARAMETERS", "gae_time_major", "gae_time_major_native"]

_BUFFER_ARRAYS = ("rewards", "returns", "episode_starts", "values", "log_probs", "advantages")


def _missing() -> str | None:
    if importlib.util.find_spec("stable_baselines3") is None:
        return "stable-baselines3 is not installed (pip install stable-baselines3)"
    return None


def _version() -> str:
    return f"stable-baselines3 {importlib.metadata.version('stable-baselines3')}"


def _buffer(steps: int, envs: int, gamma: float, lmbda: float, dtype: Any) -> Any:
    """An empty SB3 ``RolloutBuffer``; its float arrays in ``dtype`` unless ``None``."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    box = spaces.Box(-1.0, 1.0, (1,), np.float32)
    buffer = RolloutBuffer(
        steps, box, box, device="cpu", gae_lambda=lmbda, gamma=gamma, n_envs=envs
    )
    if dtype is not None:
        for name in _BUFFER_ARRAYS:
            setattr(buffer, name, np.zeros((steps, envs), dtype))
    return buffer


def _sb3_gae(
    gamma: Any,
    lmbda: Any,
    state_value: np.ndarray,
    next_state_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    *,
    native: bool,
) -> tuple[np.ndarray, np.ndarray]:
    import torch

    gamma, lmbda, (value, nxt, rew, dn, term) = scalar_rollout(
        "SB3's RolloutBuffer",
        gamma, lmbda, state_value, next_state_value, reward, done, terminated,
    )  # fmt: skip
    shape, steps, dtype = reward.shape, reward.shape[0], reward.dtype
    buffer = _buffer(steps, value.shape[1], gamma, lmbda, None if native else dtype)
    buffer.values[:] = value
    buffer.rewards[:] = fold_into_reward(
        gamma, value, nxt, rew, dn, term, bootstrap_truncation=True
    )
    buffer.episode_starts[1:] = dn[:-1]
    buffer.compute_returns_and_advantage(torch.as_tensor(nxt[-1]), dn[-1])
    return (
        buffer.advantages.reshape(shape).astype(dtype),
        np.asarray(buffer.returns).reshape(shape).astype(dtype),
    )


#: A case (``"time_major"``) through SB3's GAE, the buffer in the case's dtype.
gae_time_major = functools.partial(_sb3_gae, native=False)
#: As :data:`gae_time_major`, in SB3's own float32 buffer (outputs cast back).
gae_time_major_native = functools.partial(_sb3_gae, native=True)


SCALAR_HYPERPARAMETERS = scalar_hyperparameters(
    "sb3", "Stable-Baselines3's RolloutBuffer takes gamma and gae_lambda as arguments"
)


def _implementations() -> list[Implementation]:
    return [
        Implementation(
            name="stable_baselines3.RolloutBuffer.compute_returns_and_advantage",
            spec=EstimatorSpec("generalized_advantage_estimate", convention="time_major"),
            backend="numpy",
            fn=gae_time_major,
            note=(
                "[n_steps, n_envs] buffer in the case's dtype; values = state_value, "
                "episode_starts[t+1] = done[t], dones = done[-1], last_values = "
                "next_state_value[-1]; γ·next_state_value added to the reward at "
                "truncations (as collect_rollouts does) and γ·(next_state_value[t] - "
                "state_value[t+1]) at steps not done; returns is value_target."
            ),
            disagreements=(SCALAR_HYPERPARAMETERS,),
        )
    ]


FRAMEWORK = Framework(
    name="sb3",
    pip="stable-baselines3",
    missing=_missing,
    version=_version,
    implementations=_implementations,
    disagreements=(SCALAR_HYPERPARAMETERS,),
)
