"""Hypothesis properties of the estimators, on every kernel of NumPy and torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arrayrl.objectives.value.functional as F

from ._data import consistent_values, discounted_return, trajectories

KERNELS = ["numba", "reference"]
seeds = st.integers(0, 2**32 - 1)
batches = st.integers(1, 4)
steps = st.integers(1, 24)
unit = st.floats(0.0, 1.0)
SETTINGS = settings(max_examples=40, deadline=None)


def gae(kernel, gamma, lmbda, d):
    return F.generalized_advantage_estimate(
        gamma, lmbda, d["value"], d["next_value"], d["reward"], d["done"], d["terminated"],
        kernel=kernel,
    )


@pytest.mark.parametrize("kernel", KERNELS)
@SETTINGS
@given(seed=seeds, batch=batches, t=steps, gamma=unit)
def test_gae_lambda_one_is_discounted_return_minus_value(kernel, seed, batch, t, gamma):
    data = consistent_values(trajectories(seed, batch, t))
    advantage, _ = gae(kernel, gamma, 1.0, data)
    expected = discounted_return(data, gamma) - data["value"]
    np.testing.assert_allclose(advantage, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
@SETTINGS
@given(seed=seeds, batch=batches, t=steps, gamma=unit)
def test_gae_lambda_zero_is_td0(kernel, seed, batch, t, gamma):
    data = trajectories(seed, batch, t)
    advantage, target = gae(kernel, gamma, 0.0, data)
    td0 = F.td0_advantage_estimate(
        gamma, data["value"], data["next_value"], data["reward"], data["done"], data["terminated"]
    )
    np.testing.assert_allclose(advantage, td0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(target, td0 + data["value"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
@SETTINGS
@given(seed=seeds, batch=batches, t=steps, gamma=unit, lmbda=unit, scale=st.floats(-3, 3))
def test_estimators_are_linear_in_rewards(kernel, seed, batch, t, gamma, lmbda, scale):
    data = trajectories(seed, batch, t)
    other = trajectories(seed + 1, batch, t)["reward"]
    zeros = np.zeros_like(data["reward"])
    data = {**data, "value": zeros, "next_value": zeros}

    def estimators(reward):
        d = {**data, "reward": reward}
        return [
            gae(kernel, gamma, lmbda, d)[0],
            F.td_lambda_return_estimate(
                gamma, lmbda, zeros, reward, d["done"], d["terminated"], kernel=kernel
            ),
            F.reward2go(reward, d["done"], gamma, kernel=kernel),
        ]

    combined = estimators(data["reward"] + scale * other)
    separate = [a + scale * b for a, b in zip(estimators(data["reward"]), estimators(other))]
    for c, s in zip(combined, separate):
        np.testing.assert_allclose(c, s, rtol=1e-9, atol=1e-9)


def _outputs(result):
    """An estimator's outputs as a list of NumPy arrays."""
    return [np.asarray(y) for y in (result if isinstance(result, tuple) else (result,))]


def _all_estimators(kernel, d, gamma, lmbda):
    results = {
        "gae": gae(kernel, gamma, lmbda, d),
        "td_lambda": F.td_lambda_return_estimate(
            gamma, lmbda, d["next_value"], d["reward"], d["done"], d["terminated"], kernel=kernel
        ),
        "td1": F.td1_return_estimate(
            gamma, d["next_value"], d["reward"], d["done"], d["terminated"], kernel=kernel
        ),
        "vtrace": F.vtrace_advantage_estimate(
            gamma, d["log_pi"], d["log_mu"], d["value"], d["next_value"], d["reward"],
            d["done"], d["terminated"], kernel=kernel,
        ),
        "reward2go": F.reward2go(d["reward"], d["done"], gamma, kernel=kernel),
    }
    return {name: _outputs(result) for name, result in results.items()}


@pytest.mark.parametrize("kernel", KERNELS)
@SETTINGS
@given(seed=seeds, t=st.integers(2, 24), cut=st.integers(0, 22), gamma=unit, lmbda=unit)
def test_nothing_crosses_a_done(kernel, seed, t, cut, gamma, lmbda):
    cut = cut % (t - 1)
    data = trajectories(seed, 2, t)
    data["done"][:, cut] = True
    changed = {k: v.copy() for k, v in data.items()}
    rng = np.random.default_rng(seed)
    for key in ("value", "next_value", "reward", "log_pi", "log_mu"):
        changed[key][:, cut + 1 :] = rng.standard_normal(changed[key][:, cut + 1 :].shape)
    changed["done"][:, cut + 1 :] = rng.random(changed["done"][:, cut + 1 :].shape) < 0.5
    changed["terminated"] = changed["done"] & data["terminated"]
    before = _all_estimators(kernel, data, gamma, lmbda)
    after = _all_estimators(kernel, changed, gamma, lmbda)
    for name in before:
        for x, y in zip(before[name], after[name], strict=True):
            np.testing.assert_array_equal(x[:, : cut + 1], y[:, : cut + 1], err_msg=name)


@pytest.mark.parametrize("kernel", KERNELS)
@SETTINGS
@given(seed=seeds, batch=batches, t=steps, gamma=unit)
def test_td_lambda_one_equals_td1(kernel, seed, batch, t, gamma):
    d = trajectories(seed, batch, t)
    args = (d["next_value"], d["reward"], d["done"], d["terminated"])
    td_lambda = F.td_lambda_return_estimate(gamma, 1.0, *args, kernel=kernel)
    td1 = F.td1_return_estimate(gamma, *args, kernel=kernel)
    np.testing.assert_allclose(td_lambda, td1, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(seed=seeds, batch=batches, t=steps, gamma=unit, lmbda=unit)
def test_kernels_agree_on_torch(seed, batch, t, gamma, lmbda):
    torch = pytest.importorskip("torch")
    d = trajectories(seed, batch, t)
    td = {k: torch.from_numpy(v) for k, v in d.items()}
    for kernel in KERNELS:
        got = _all_estimators(kernel, td, gamma, lmbda)
        want = _all_estimators("reference", d, gamma, lmbda)
        for name in got:
            for x, y in zip(got[name], want[name], strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-10, err_msg=name)
