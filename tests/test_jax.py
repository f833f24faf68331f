"""JAX through the generic backend: the reference scan under ``jax.grad`` and ``jax.jit``.

Skipped where JAX is not installed (CI does not install it; see the README).
"""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.objectives.value.functional as F

from ._data import trajectories

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy


def _gae_sum(value, next_value, reward, done):
    return F.generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done)[0].sum()


def test_jax_grad_and_jit_match_torch_autograd():
    d = trajectories(0, 3, 7)
    value, next_value, reward = (jnp.asarray(d[k]) for k in ("value", "next_value", "reward"))
    done = jnp.asarray(d["done"])
    grads = jax.grad(_gae_sum, argnums=(0, 2))(value, next_value, reward, done)
    jitted = jax.jit(_gae_sum)(value, next_value, reward, done)

    t = {k: torch.from_numpy(d[k]).requires_grad_(k != "done") for k in
         ("value", "next_value", "reward", "done")}
    total = _gae_sum(t["value"], t["next_value"], t["reward"], t["done"])
    total.backward()
    np.testing.assert_allclose(float(jitted), total.item(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads[0]), t["value"].grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads[1]), t["reward"].grad.numpy(), rtol=1e-12)
