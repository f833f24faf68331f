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

Loss terms (:mod:`..terms`). SB3 writes its losses inline in ``PPO.train()``,
``DQN.train()`` and ``SAC.train()``; they are isolated by *running* those methods on the
case's numbers, not by re-writing them: a real SB3 model (CPU, tiny networks, learning
rate 0 so the step changes nothing) whose networks are replaced by lookup tables of the
case, read by the row index that the observation holds, and whose buffer holds the
case's batch. The numbers compared are the ones ``train()`` logs (``train/...``), means
over the batch, so the per-sample outputs and the gradients of a term are out of reach
(SB3 logs ``loss.item()``); the model's numpy and torch global random states are left
as they were found. See :func:`ppo_clipped_surrogate`, :func:`dqn_q_learning`,
:func:`sac_losses`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..check import EstimatorSpec
from . import Framework, Implementation, scalar_hyperparameters, term_implementation
from .cleanrl import fold_into_reward, scalar_rollout

__all__ = [
    "FRAMEWORK",
    "SCALAR_HYPERPARAMETERS",
    "dqn_q_learning",
    "gae_time_major",
    "gae_time_major_native",
    "ppo_clipped_surrogate",
    "sac_losses",
]

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


########################################################################
# loss terms, through SB3's own train()

#: the action the replay buffer holds (SAC): the critics answer ``q_values`` for it
REPLAY_ACTION = -1.0
#: the action the lookup actor draws (SAC): the critics answer ``q_new_action`` for it
POLICY_ACTION = 1.0


@contextlib.contextmanager
def _own_random_state() -> Iterator[None]:
    """SB3 draws from the global numpy and torch generators (network initialisation,
    minibatch permutation, replay env indices): put them back afterwards."""
    import torch

    state = np.random.get_state()  # noqa: NPY002 (the legacy state is what SB3 draws from)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


@functools.cache
def _parts() -> SimpleNamespace:
    """The SB3 subclasses and lookup modules (built on first use: SB3 and torch are
    imported only when an SB3 implementation runs)."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.policies import ActorCriticPolicy

    def rows(obs: torch.Tensor) -> torch.Tensor:
        return obs[:, 0].long()

    class IndexEnv(gym.Env):
        """An env that is never stepped: SB3 models take their spaces from one. The
        observation is a row index, ``[0, rows)``."""

        def __init__(self, rows: int, action_space: gym.Space) -> None:
            self.observation_space = gym.spaces.Box(0.0, float(rows), (1,), np.float32)
            self.action_space = action_space

        def reset(self, *, seed: int | None = None, options: Any = None) -> tuple:
            return np.zeros(1, np.float32), {}

        def step(self, action: Any) -> tuple:
            return np.zeros(1, np.float32), 0.0, True, False, {}

    class InOrderReplayBuffer(ReplayBuffer):
        """SB3's ``ReplayBuffer`` whose ``sample(batch_size)`` gives rows
        ``0 .. batch_size - 1`` in order (SB3's own ``_get_samples``), not a random draw
        with replacement."""

        def sample(self, batch_size: int, env: Any = None) -> Any:
            return self._get_samples(np.arange(batch_size), env=env)

    class Lookup(torch.nn.Module):
        """``tables[key][..., row]``; its one parameter adds an exact zero that carries a
        gradient (SB3 calls ``backward()`` on the losses) and feeds an ``optimizer``
        with learning rate 0."""

        def __init__(self, **tables: np.ndarray) -> None:
            super().__init__()
            self.tables = {k: torch.as_tensor(v) for k, v in tables.items()}
            self.zero = torch.nn.Parameter(torch.zeros(()))
            self.optimizer = torch.optim.SGD([self.zero], lr=0.0)

        def read(self, key: str, obs: torch.Tensor) -> torch.Tensor:
            return self.tables[key][..., rows(obs)] + (self.zero - self.zero.detach())

    class QNetwork(Lookup):
        """DQN's ``q_net``: the ``[rows, A]`` table ``q`` (stored ``[A, rows]``)."""

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.read("q", obs).T

    class Actor(Lookup):
        """SAC's ``actor.action_log_prob``: ``(POLICY_ACTION, log_prob[row])``."""

        def action_log_prob(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            log_prob = self.read("log_prob", obs)
            return torch.full((len(obs), 1), POLICY_ACTION), log_prob

    class Critics(Lookup):
        """SAC's critics: one ``[n, 1]`` output per critic, read from the ``[C, rows]``
        table of the action given (``replay`` for REPLAY_ACTION, ``policy`` for
        POLICY_ACTION), NaN for any other action."""

        def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
            action = actions[:, 0]
            by_action = {REPLAY_ACTION: "replay", POLICY_ACTION: "policy"}
            out = None
            for value, key in by_action.items():
                if key in self.tables:
                    found = self.read(key, obs)
                    out = torch.full_like(found, float("nan")) if out is None else out
                    out = torch.where(action == value, found, out)
            return tuple(q[:, None] for q in out)

    class LookupPolicy(ActorCriticPolicy):
        """PPO's policy whose ``evaluate_actions`` reads ``log_prob`` from
        ``log_prob_table`` by the row in the observation; values and entropy 0."""

        log_prob_table: torch.Tensor

        def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple:
            weight = next(self.parameters())
            log_prob = self.log_prob_table[rows(obs)] + (weight - weight.detach()).sum()
            zeros = torch.zeros_like(log_prob)
            return zeros, log_prob, zeros

    return SimpleNamespace(
        IndexEnv=IndexEnv,
        InOrderReplayBuffer=InOrderReplayBuffer,
        QNetwork=QNetwork,
        Actor=Actor,
        Critics=Critics,
        LookupPolicy=LookupPolicy,
    )


def _quiet(model: Any) -> Any:
    """``model`` with a logger that only keeps the values (``logger.name_to_value``)."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _logged(model: Any, key: str, dtype: Any) -> np.ndarray:
    return np.asarray(model.logger.name_to_value[key], dtype)


def _column(array: np.ndarray, dtype: Any) -> np.ndarray:
    """A batch flattened to SB3's ``[buffer_size, n_envs=1]``."""
    return np.asarray(array, dtype).reshape(-1, 1)


def _with_nan(table: np.ndarray, before: bool) -> np.ndarray:
    """``table`` (rows last) and as many NaN rows, after it or ``before`` it: the rows of
    ``next_observations`` (``n + i``) and ``observations`` (``i``) are told apart, and a
    network reading the wrong ones gives NaN."""
    nan = np.full_like(table, np.nan)
    return np.concatenate([nan, table] if before else [table, nan], axis=-1)


def _index_observations(buffer: Any, n: int, *, next_too: bool) -> None:
    buffer.observations[:, 0, 0] = np.arange(n)
    if next_too:
        buffer.next_observations[:, 0, 0] = n + np.arange(n)


def ppo_clipped_surrogate(
    log_prob: np.ndarray, prev_log_prob: np.ndarray, advantage: np.ndarray, clip_epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(loss_objective_mean, clip_fraction)`` logged by ``PPO.train()``
    (``train/policy_gradient_loss``, ``train/clip_fraction``) on the case: one epoch,
    one minibatch of the whole batch, no advantage normalisation, learning rate 0."""
    from gymnasium import spaces
    from stable_baselines3 import PPO

    parts, dtype, n = _parts(), log_prob.dtype, log_prob.size
    with _own_random_state():
        model = PPO(
            parts.LookupPolicy,
            parts.IndexEnv(n, spaces.Discrete(2)),
            learning_rate=0.0,
            n_steps=n,
            batch_size=n,
            n_epochs=1,
            clip_range=float(clip_epsilon),
            normalize_advantage=False,
            ent_coef=0.0,
            vf_coef=0.0,
            device="cpu",
            policy_kwargs={"net_arch": []},
        )
        _quiet(model).policy.log_prob_table = _as_tensor(np.asarray(log_prob, dtype).ravel())
        buffer = model.rollout_buffer
        _index_observations(buffer, n, next_too=False)
        buffer.log_probs = _column(prev_log_prob, dtype)
        buffer.advantages = _column(advantage, dtype)
        buffer.returns = buffer.values = np.zeros((n, 1), dtype)
        buffer.full = True
        model.train()
    return (
        _logged(model, "train/policy_gradient_loss", dtype),
        _logged(model, "train/clip_fraction", dtype),
    )


def dqn_q_learning(
    q_values: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    terminated: np.ndarray,
    next_q_values: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """``smooth_l1_loss``: ``train/loss`` logged by ``DQN.train(gradient_steps=1,
    batch_size=n)`` on the case, the replay buffer holding its ``n`` transitions in
    order, ``q_net`` / ``q_net_target`` replaced by the tables ``q_values`` /
    ``next_q_values``, learning rate 0."""
    from gymnasium import spaces
    from stable_baselines3 import DQN

    parts, dtype, n = _parts(), reward.dtype, reward.size
    actions = q_values.shape[-1]
    with _own_random_state():
        model = DQN(
            "MlpPolicy",
            parts.IndexEnv(2 * n, spaces.Discrete(actions)),
            learning_rate=0.0,
            buffer_size=n,
            learning_starts=0,
            batch_size=n,
            gamma=float(gamma),
            replay_buffer_class=parts.InOrderReplayBuffer,
            device="cpu",
            policy_kwargs={"net_arch": []},
        )
        _quiet(model)
        model.q_net = parts.QNetwork(q=_with_nan(_by_row(q_values, n, dtype), before=False))
        model.q_net_target = parts.QNetwork(
            q=_with_nan(_by_row(next_q_values, n, dtype), before=True)
        )
        _fill_replay(model.replay_buffer, n, reward, terminated, dtype)
        model.replay_buffer.actions[:, 0, 0] = np.asarray(action).ravel()
        model.train(gradient_steps=1, batch_size=n)
    return _logged(model, "train/loss", dtype)


def sac_losses(
    log_prob: np.ndarray,
    q_new_action: np.ndarray,
    q_values: np.ndarray,
    next_log_prob: np.ndarray,
    next_q_target: np.ndarray,
    reward: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    log_alpha: float,
    target_entropy: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loss_actor, loss_qvalue, loss_alpha)``: ``train/actor_loss``,
    ``train/critic_loss``, ``train/ent_coef_loss`` logged by ``SAC.train(gradient_steps=1,
    batch_size=n)`` with ``ent_coef="auto"``, ``log_ent_coef = log_alpha``, the actor,
    critics and target critics replaced by the case's tables, learning rate 0."""
    import torch
    from gymnasium import spaces
    from stable_baselines3 import SAC

    parts, dtype, n = _parts(), reward.dtype, reward.size
    critics = q_values.shape[0]
    with _own_random_state():
        model = SAC(
            "MlpPolicy",
            parts.IndexEnv(2 * n, spaces.Box(-1.0, 1.0, (1,), np.float32)),
            learning_rate=0.0,
            buffer_size=n,
            learning_starts=0,
            batch_size=n,
            gamma=float(gamma),
            ent_coef="auto",
            target_entropy=float(target_entropy),
            replay_buffer_class=parts.InOrderReplayBuffer,
            device="cpu",
            policy_kwargs={"net_arch": [], "n_critics": critics},
        )
        _quiet(model)
        model.log_ent_coef = torch.tensor([log_alpha], dtype=_torch_dtype(dtype)).requires_grad_()
        model.ent_coef_optimizer = torch.optim.Adam([model.log_ent_coef], lr=0.0)
        both = np.concatenate([np.ravel(log_prob), np.ravel(next_log_prob)]).astype(dtype)
        model.actor = parts.Actor(log_prob=both)
        model.critic = parts.Critics(
            replay=_with_nan(np.reshape(q_values, (critics, n)).astype(dtype), before=False),
            policy=_with_nan(np.reshape(q_new_action, (critics, n)).astype(dtype), before=False),
        )
        model.critic_target = parts.Critics(
            policy=_with_nan(np.reshape(next_q_target, (critics, n)).astype(dtype), before=True)
        )
        _fill_replay(model.replay_buffer, n, reward, terminated, dtype)
        model.replay_buffer.actions[:] = REPLAY_ACTION
        model.train(gradient_steps=1, batch_size=n)
    return (
        _logged(model, "train/actor_loss", dtype),
        _logged(model, "train/critic_loss", dtype),
        _logged(model, "train/ent_coef_loss", dtype),
    )


def _by_row(q: np.ndarray, n: int, dtype: Any) -> np.ndarray:
    """``[*B, A]`` Q-values as an ``[A, n]`` table."""
    return np.asarray(q, dtype).reshape(n, -1).T.copy()


def _fill_replay(
    buffer: Any, n: int, reward: np.ndarray, terminated: np.ndarray, dtype: Any
) -> None:
    """Rows ``i``: observation ``i``, next observation ``n + i``, the case's reward, and
    ``dones = terminated`` (no timeouts: SB3 cuts the bootstrap where ``dones and not
    timeouts``); reward and dones in the case's dtype."""
    _index_observations(buffer, n, next_too=True)
    buffer.rewards = _column(reward, dtype)
    buffer.dones = _column(terminated, dtype)
    buffer.timeouts = np.zeros((n, 1), dtype)
    buffer.full = True


def _torch_dtype(dtype: Any) -> Any:
    import torch

    return getattr(torch, np.dtype(dtype).name)


def _as_tensor(array: np.ndarray) -> Any:
    import torch

    return torch.as_tensor(array)


def _implementations() -> list[Implementation]:
    made = functools.partial(term_implementation, "stable_baselines3", "numpy")
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
        ),
        made(
            "PPO.train",
            "clipped_surrogate",
            ("loss_objective_mean", "clip_fraction"),
            ppo_clipped_surrogate,
            (
                "PPO.train() run once on a model with n_steps = batch_size = the flattened "
                "batch, n_epochs=1, normalize_advantage=False (SB3's default True would "
                "rescale the advantages), learning_rate=0, ent_coef = vf_coef = 0, "
                "clip_range = clip_epsilon; its rollout buffer holds log_probs = "
                "prev_log_prob and advantages = advantage (the case's dtype), observation i "
                "= sample i, and the policy's evaluate_actions returns log_prob[i]. "
                "Compared: the logged train/policy_gradient_loss (loss_objective_mean) and "
                "train/clip_fraction; SB3 logs only these means, so loss_objective and the "
                "gradients through train() are not checked."
            ),
        ),
        made(
            "DQN.train",
            "q_learning",
            ("smooth_l1_loss",),
            dqn_q_learning,
            (
                "DQN.train(gradient_steps=1, batch_size=n) with learning_rate=0 and gamma, "
                "its replay buffer holding the n transitions and sampling them in order "
                "(SB3's _get_samples on rows 0..n-1 instead of a draw with replacement): "
                "observation i, next observation n + i, action, reward, dones = terminated "
                "(timeouts all False, so every done cuts the bootstrap); q_net and "
                "q_net_target are lookups of q_values (rows i) and next_q_values (rows "
                "n + i, NaN elsewhere). Compared: the logged train/loss (SB3's "
                "F.smooth_l1_loss mean) as smooth_l1_loss; td_error and l2_loss are not "
                "logged, nor gradients."
            ),
        ),
        made(
            "SAC.train",
            "sac_terms",
            ("loss_actor", "loss_qvalue", "loss_alpha"),
            sac_losses,
            (
                "SAC.train(gradient_steps=1, batch_size=n), learning_rate=0, "
                "ent_coef='auto' with log_ent_coef = log_alpha (in the case's dtype; SB3 "
                "allocates it float32) and target_entropy, replay buffer as for DQN "
                "(dones = terminated) with every replay action -1. The actor's "
                "action_log_prob gives action +1 and log_prob (observation i) or "
                "next_log_prob (n + i); the C critics give q_values for action -1 and "
                "q_new_action for +1, the target critics next_q_target at n + i (NaN for "
                "anything else). Compared: train/actor_loss, train/critic_loss (SB3's "
                "0.5·Σ_c mse_c) and train/ent_coef_loss as loss_actor, loss_qvalue, "
                "loss_alpha; per-sample terms, target_value and gradients are not logged."
            ),
        ),
    ]


FRAMEWORK = Framework(
    name="sb3",
    pip="stable-baselines3",
    missing=_missing,
    version=_version,
    implementations=_implementations,
    disagreements=(SCALAR_HYPERPARAMETERS,),
)
