"""CleanRL's PPO advantage, written out as its script computes it, as a ``check`` target.

CleanRL is a set of single-file scripts, not a package: there is nothing to import. This
module writes the formulas of ``cleanrl/ppo.py`` (vwxyzjn/cleanrl at commit
``fe8d8a03``, 2026-04-20) itself, in NumPy, with the script's names:

- lines 183-208, collection: ``dones[step] = next_done`` is stored *before* the step
  (``dones[t]`` says that observation ``t`` starts an episode) and
  ``next_done = logical_or(terminations, truncations)`` after it: a truncation is a
  termination;
- lines 217-231, GAE: one ``values`` array, ``nextvalues = values[t + 1]`` and
  ``nextnonterminal = 1 - dones[t + 1]`` inside the rollout, ``next_value`` and
  ``1 - next_done`` at its last step; ``delta = r + γ·nextvalues·nextnonterminal - V``,
  ``advantage = delta + γλ·nextnonterminal·lastgaelam``; ``returns = advantages +
  values``.

Mapping a conformance case (time-major ``[T, *B, F]``, flattened to ``[T, N]``):
``values = state_value``, ``dones[t + 1] = done[t]``, ``next_done = done[T - 1]``,
``next_value = next_state_value[T - 1]``. A case's ``next_state_value`` is independent
of ``state_value``, while the script reads ``V(s_{t+1})`` from ``values[t + 1]``: at
steps that are not done the difference ``γ·(next_state_value[t] - state_value[t + 1])``
is added to ``reward[t]`` (:func:`fold_into_reward`; it is zero on a consistent
trajectory, see the tests). At a truncation nothing is added, as in the script, so the
cases holding one (``done & ~terminated``) differ from the reference: that is
:data:`NO_TRUNCATION_BOOTSTRAP` (CleanRL issue 198), the only by-design difference.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..check import EstimatorSpec
from . import Disagreement, Framework, Implementation, scalar_hyperparameters

__all__ = [
    "FRAMEWORK",
    "NO_TRUNCATION_BOOTSTRAP",
    "SCALAR_HYPERPARAMETERS",
    "cleanrl_gae",
    "fold_into_reward",
    "reproduce_no_truncation_bootstrap",
]

COMMIT = "fe8d8a03"
VERSION = f"cleanrl ppo.py (formulas as of vwxyzjn/cleanrl@{COMMIT}, 2026-04-20)"


def cleanrl_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    next_value: np.ndarray,
    next_done: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(advantages, returns)`` of ppo.py's loop; arrays ``[num_steps, num_envs]``,
    ``next_value`` and ``next_done`` ``[num_envs]``, ``dones`` as floats."""
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    lastgaelam: Any = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def fold_into_reward(
    gamma: float,
    state_value: np.ndarray,
    next_state_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    *,
    bootstrap_truncation: bool,
) -> np.ndarray:
    """The reward a single-value-array GAE needs to see the case's ``next_state_value``.

    Time-major ``[T, N]``. Where a step is not done, such a GAE bootstraps from
    ``state_value[t + 1]`` (``next_state_value[T - 1]`` at the last step): the
    difference ``γ·(next_state_value[t] - that)`` is added. With
    ``bootstrap_truncation`` (Stable-Baselines3's collection: ``reward += γ·V(terminal
    obs)`` at a timeout), ``γ·next_state_value[t]`` is added where ``done & ~terminated``.
    """
    read = np.concatenate([state_value[1:], next_state_value[-1:]])
    correction = gamma * (next_state_value - read) * ~done
    if bootstrap_truncation:
        correction = correction + gamma * next_state_value * (done & ~terminated)
    return reward + correction.astype(reward.dtype)


def scalar_rollout(
    who: str, gamma: Any, lmbda: Any, *arrays: np.ndarray
) -> tuple[float, float, list[np.ndarray]]:
    """``gamma`` and ``lmbda`` as floats (``TypeError`` naming ``who`` for a per-step
    array: a single-value-array GAE takes scalars) and each time-major case array as a
    ``[T, N]`` rollout."""
    for name, value in (("gamma", gamma), ("lmbda", lmbda)):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            raise TypeError(f"{name} is a per-step array: {who} takes a float")
    steps = arrays[0].shape[0]
    return float(gamma), float(lmbda), [x.reshape(steps, -1) for x in arrays]


def gae_time_major(
    gamma: Any,
    lmbda: Any,
    state_value: np.ndarray,
    next_state_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A case (``check``'s ``"time_major"`` convention) through :func:`cleanrl_gae`."""
    gamma, lmbda, (value, nxt, rew, dn, term) = scalar_rollout(
        "CleanRL's args.gamma / args.gae_lambda",
        gamma, lmbda, state_value, next_state_value, reward, done, terminated,
    )  # fmt: skip
    shape = reward.shape
    rewards = fold_into_reward(gamma, value, nxt, rew, dn, term, bootstrap_truncation=False)
    dones = np.zeros_like(value)
    dones[1:] = dn[:-1]
    next_done = dn[-1].astype(value.dtype)
    advantages, returns = cleanrl_gae(rewards, value, dones, nxt[-1], next_done, gamma, lmbda)
    return advantages.reshape(shape), returns.reshape(shape)


########################################################################
# disagreements


@functools.cache
def has_truncation(case_name: str) -> bool:
    """Whether the conformance case ``case_name`` holds a ``done & ~terminated`` step."""
    from ..cases import all_cases
    from ..runner import SEED

    for case in all_cases():
        if case.name == case_name and "done" in case.signature.args:
            args, _ = case.build(SEED, "float64")
            inputs = dict(zip(case.signature.args, args, strict=True))
            return bool((inputs["done"] & ~inputs["terminated"]).any())
    return False


def reproduce_no_truncation_bootstrap() -> tuple[float, float]:
    """One step, truncated: ``r = 0``, ``V(s) = 0``, ``V(s') = 1``, ``γ = 0.9``, ``λ = 1``.

    Returns ``(cleanrl, reference)`` advantages: ``(0.0, 0.9)``; CleanRL's
    ``next_done = terminated | truncated`` drops ``γ·V(s')``.
    """
    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    one = np.ones((1, 1))
    zero = np.zeros((1, 1))
    cleanrl, _ = cleanrl_gae(zero, zero, zero, one[0], one[0], 0.9, 1.0)
    reference, _ = generalized_advantage_estimate(
        0.9, 1.0, zero, one, zero, one.astype(bool), zero.astype(bool), time_dim=0
    )
    return float(cleanrl[0, 0]), float(np.asarray(reference)[0, 0])


NO_TRUNCATION_BOOTSTRAP = Disagreement(
    key="cleanrl-no-truncation-bootstrap",
    covers=has_truncation,
    explanation=(
        "CleanRL's ppo.py sets next_done = terminations | truncations and masks the "
        "bootstrap with 1 - next_done, so a time-limit truncation is treated as a "
        "termination: the advantage at a truncated step is r - V(s) instead of "
        "r + γ·V(s_final) - V(s), which biases values down near time limits. The reference "
        "(and TorchRL, Stable-Baselines3) bootstraps there. To match the reference, "
        "bootstrap from the final observation's value at truncations (Stable-Baselines3 "
        "adds γ·V(terminal_observation) to the reward); to match CleanRL with arrayrl, "
        "pass terminated = done."
    ),
    upstream="https://github.com/vwxyzjn/cleanrl/issues/198",
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_no_truncation_bootstrap",
)

SCALAR_HYPERPARAMETERS = scalar_hyperparameters(
    "cleanrl", "CleanRL's gamma and gae_lambda are script arguments"
)


def _implementations() -> list[Implementation]:
    return [
        Implementation(
            name="cleanrl.ppo.gae",
            spec=EstimatorSpec("generalized_advantage_estimate", convention="time_major"),
            backend="numpy",
            fn=gae_time_major,
            note=(
                "[T, N] rollout; values = state_value, dones[t+1] = done[t], next_done = "
                "done[-1], next_value = next_state_value[-1]; γ·(next_state_value[t] - "
                "state_value[t+1]) folded into reward[t] at steps not done; returns is "
                "value_target."
            ),
            disagreements=(SCALAR_HYPERPARAMETERS, NO_TRUNCATION_BOOTSTRAP),
        )
    ]


FRAMEWORK = Framework(
    name="cleanrl",
    pip="",
    missing=lambda: None,
    version=lambda: VERSION,
    implementations=_implementations,
    disagreements=(SCALAR_HYPERPARAMETERS, NO_TRUNCATION_BOOTSTRAP),
)
