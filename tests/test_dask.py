"""Dask arrays as a backend (issue 13, part 3): lazy estimators equal the NumPy kernels."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from arrayrl.backends import backend_of  # noqa: E402
from arrayrl.backends._dask import dask_linear_scan  # noqa: E402
from arrayrl.backends._numba_cpu import linear_scan  # noqa: E402

from arrayrl.objectives.value import functional as F  # noqa: E402

B, T = 6, 40


def _data(dtype=np.float64, shape=(B, T, 1), seed=0):
    rng = np.random.default_rng(seed)
    value, next_value, reward = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    log_pi, log_mu = (0.3 * rng.standard_normal(shape).astype(dtype) for _ in range(2))
    done = rng.random(shape) < 0.1
    terminated = done & (rng.random(shape) < 0.5)
    return dict(
        state_value=value,
        next_state_value=next_value,
        reward=reward,
        done=done,
        terminated=terminated,
        log_pi=log_pi,
        log_mu=log_mu,
    )


ESTIMATORS = {
    "gae": lambda d: F.generalized_advantage_estimate(
        0.99,
        0.95,
        d["state_value"],
        d["next_state_value"],
        d["reward"],
        d["done"],
        d["terminated"],
    ),
    "td0_return": lambda d: F.td0_return_estimate(
        0.9, d["next_state_value"], d["reward"], d["terminated"]
    ),
    "td0_advantage": lambda d: F.td0_advantage_estimate(
        0.9, d["state_value"], d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td1_return": lambda d: F.td1_return_estimate(
        0.9, d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td_lambda_return": lambda d: F.td_lambda_return_estimate(
        0.9, 0.7, d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td_lambda_advantage": lambda d: F.td_lambda_advantage_estimate(
        0.9,
        0.7,
        d["state_value"],
        d["next_state_value"],
        d["reward"],
        d["done"],
        d["terminated"],
    ),
    "vtrace": lambda d: F.vtrace_advantage_estimate(
        0.9,
        d["log_pi"],
        d["log_mu"],
        d["state_value"],
        d["next_state_value"],
        d["reward"],
        d["done"],
        d["terminated"],
    ),
    "reward2go": lambda d: F.reward2go(d["reward"], d["done"], 0.9),
}

CHUNKS = {
    "one_block": (B, T, 1),
    "batch": (2, T, 1),
    "time": (B, 7, 1),
    "both": (4, 16, 1),
    "uneven": ((1, 3, 2), (1, 20, 5, 14), 1),
    "step_per_chunk": (B, 1, 1),
}


def _as_dask(data, chunks):
    return {k: da.from_array(v, chunks=chunks) for k, v in data.items()}


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _check(got, expected, rtol):
    for g, e in zip(_outputs(got), _outputs(expected)):
        assert isinstance(g, da.Array)
        np.testing.assert_allclose(g.compute(), e, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("chunks", list(CHUNKS))
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_equals_numpy(name, chunks):
    data = _data()
    expected = ESTIMATORS[name](data)
    got = ESTIMATORS[name](_as_dask(data, CHUNKS[chunks]))
    _check(got, expected, 1e-12)


@pytest.mark.parametrize("name", ["gae", "td_lambda_return", "vtrace", "reward2go"])
def test_float32_time_chunks(name):
    data = _data(np.float32)
    expected = ESTIMATORS[name](data)
    got = ESTIMATORS[name](_as_dask(data, (4, 9, 1)))
    assert all(g.dtype == np.float32 for g in _outputs(got))
    _check(got, expected, 1e-5)


def test_time_dim_and_leading_batch_axes():
    """[T, B1, B2, F] input with time_dim=0: moved and reshaped lazily."""
    data = _data(shape=(T, 2, 3, 1))
    args = ("state_value", "next_state_value", "reward", "done", "terminated")
    expected = F.generalized_advantage_estimate(0.9, 0.8, *(data[k] for k in args), time_dim=0)
    lazy = _as_dask(data, (10, 1, 3, 1))
    got = F.generalized_advantage_estimate(0.9, 0.8, *(lazy[k] for k in args), time_dim=0)
    _check(got, expected, 1e-12)


def test_mismatched_chunks_are_rechunked():
    data = _data()
    lazy = _as_dask(data, (2, 8, 1))
    lazy["reward"] = da.from_array(data["reward"], chunks=(3, 13, 1))
    lazy["done"] = da.from_array(data["done"], chunks=(6, 40, 1))
    _check(ESTIMATORS["gae"](lazy), ESTIMATORS["gae"](data), 1e-12)


def test_per_step_gamma_array():
    data = _data()
    gamma = np.random.default_rng(1).uniform(0.5, 1.0, (B, T, 1))
    args = ("state_value", "next_state_value", "reward", "done", "terminated")
    expected = F.generalized_advantage_estimate(gamma, 0.9, *(data[k] for k in args))
    lazy = _as_dask(data, (3, 11, 1))
    got = F.generalized_advantage_estimate(
        da.from_array(gamma, chunks=(2, 7, 1)), 0.9, *(lazy[k] for k in args)
    )
    _check(got, expected, 1e-12)


def test_lazy_no_compute_inside():
    """Building the estimate runs no task; only the caller's compute does."""
    calls = []

    def counting_scheduler(graph, keys, **kwargs):
        calls.append(keys)
        return dask.get(graph, keys, **kwargs)

    data = _as_dask(_data(), (2, 7, 1))
    with dask.config.set(scheduler=counting_scheduler):
        for estimator in ESTIMATORS.values():
            estimator(data)
        assert calls == []
        adv, _ = ESTIMATORS["gae"](data)
        adv.compute()
    assert len(calls) == 1


def test_inputs_not_mutated_and_backend_named():
    data = _data()
    lazy = _as_dask(data, (2, 7, 1))
    ESTIMATORS["gae"](lazy)[0].compute()
    for k, v in data.items():
        np.testing.assert_array_equal(lazy[k].compute(), v)
    assert backend_of(lazy["reward"]).name == "dask"


def test_mixed_with_numpy_is_refused():
    data = _data()
    lazy = _as_dask(data, (2, 7, 1))
    with pytest.raises(TypeError, match="different backends"):
        F.generalized_advantage_estimate(
            0.9,
            0.9,
            lazy["state_value"],
            data["next_state_value"],
            lazy["reward"],
            lazy["done"],
        )


def test_integer_rewards_refused():
    data = _as_dask(_data(), (2, 7, 1))
    with pytest.raises(TypeError, match="reward"):
        F.reward2go(data["done"].astype(int), data["done"], 0.9)


@st.composite
def _splits(draw, total):
    cuts = draw(st.sets(st.integers(1, total - 1), max_size=min(6, total - 1)))
    bounds = [0, *sorted(cuts), total]
    return tuple(b - a for a, b in itertools.pairwise(bounds))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), steps=st.integers(2, 30), seed=st.integers(0, 1000))
def test_dask_linear_scan_any_time_chunks(data, steps, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, steps, 2))
    b = rng.uniform(0, 1, (3, steps, 2))
    init = rng.standard_normal((3, 2))
    chunks = (data.draw(_splits(3)), data.draw(_splits(steps)), (1, 1))
    y = dask_linear_scan(
        da.from_array(a, chunks=chunks),
        da.from_array(b, chunks=chunks),
        da.from_array(init, chunks=(chunks[0], 2)),
    )
    np.testing.assert_allclose(y.compute(), linear_scan(a, b, init), rtol=1e-12, atol=1e-12)


def test_numpy_path_does_not_import_dask():
    code = (
        "import sys, numpy as np\n"
        "from arrayrl.objectives.value import functional as F\n"
        "x = np.zeros((2, 3, 1)); d = np.zeros((2, 3, 1), bool)\n"
        "F.generalized_advantage_estimate(0.9, 0.9, x, x, x, d)\n"
        "assert 'dask' not in sys.modules, 'dask imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_distributed_local_cluster():
    """The same lazy call on a LocalCluster of two worker processes."""
    distributed = pytest.importorskip("distributed")
    data = _data(seed=5)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = _as_dask(data, (3, 13, 1))
        names = ("gae", "vtrace", "td_lambda_return")
        lazy_out = [y for name in names for y in _outputs(ESTIMATORS[name](lazy))]
        expected = [y for name in names for y in _outputs(ESTIMATORS[name](data))]
        for g, e in zip(client.compute(lazy_out, sync=True), expected):
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_td_lambda_without_rolling_gamma_is_lazy_and_equal():
    """rolling_gamma=False (each start step discounts its whole tail by its own γ) on
    Dask chunks along batch and time; a NaN reward reaches exactly the reference's
    returns (a NaN of another start's tail must not leak into this one's)."""
    rng = np.random.default_rng(3)
    shape = (4, 9, 1)
    gamma = rng.uniform(0.8, 0.99, shape)
    next_value, reward = rng.standard_normal(shape), rng.standard_normal(shape)
    done = rng.random(shape) < 0.2
    reward[1, 3, 0] = np.nan
    args = (gamma, 0.9, next_value, reward, done)
    expected = F.td_lambda_return_estimate(*args, rolling_gamma=False, kernel="reference")
    lazy = F.td_lambda_return_estimate(
        *(da.from_array(x, chunks=(2, 3, 1)) if isinstance(x, np.ndarray) else x for x in args),
        rolling_gamma=False,
    )
    assert isinstance(lazy, da.Array)
    got = np.asarray(lazy.compute())
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
