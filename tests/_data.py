"""Random estimator inputs built in NumPy (float64), shared by the tests."""

from __future__ import annotations

import numpy as np


def trajectories(seed: int, batch: int, steps: int, feats: int = 1, p_done: float = 0.2):
    """``dict`` of value, next_value, reward, done, terminated (terminated ⊆ done)."""
    rng = np.random.default_rng(seed)
    shape = (batch, steps, feats)
    done = rng.random(shape) < p_done
    return {
        "value": rng.standard_normal(shape),
        "next_value": rng.standard_normal(shape),
        "reward": rng.standard_normal(shape),
        "done": done,
        "terminated": done & (rng.random(shape) < 0.5),
        "log_pi": 0.5 * rng.standard_normal(shape),
        "log_mu": 0.5 * rng.standard_normal(shape),
    }


def consistent_values(data: dict) -> dict:
    """Make ``next_value[t] == value[t + 1]`` wherever step ``t`` is not done."""
    value, next_value, done = data["value"], data["next_value"].copy(), data["done"]
    follows = ~done[:, :-1]
    next_value[:, :-1][follows] = value[:, 1:][follows]
    return {**data, "next_value": next_value}


def discounted_return(data: dict, gamma: float) -> np.ndarray:
    """Monte-Carlo return to the trajectory's end, bootstrapped there unless terminated.

    Written as a forward walk from every start step, independent of the scans under test.
    """
    reward, next_value = data["reward"], data["next_value"]
    done, terminated = data["done"], data["terminated"]
    batch, steps, feats = reward.shape
    out = np.zeros_like(reward)
    for n in range(batch):
        for f in range(feats):
            for t in range(steps):
                total, discount, k = 0.0, 1.0, t
                while True:
                    total += discount * reward[n, k, f]
                    discount *= gamma
                    if done[n, k, f] or k == steps - 1:
                        total += discount * (not terminated[n, k, f]) * next_value[n, k, f]
                        break
                    k += 1
                out[n, t, f] = total
    return out
