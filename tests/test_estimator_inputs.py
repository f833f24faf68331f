"""Bad input fails early and clearly; good input in any layout and backend works."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.objectives.value.functional as F

from ._data import trajectories


def _gae(d, **kwargs):
    return F.generalized_advantage_estimate(
        kwargs.pop("gamma", 0.9), kwargs.pop("lmbda", 0.95), d["value"], d["next_value"],
        d["reward"], d["done"], d["terminated"], **kwargs,
    )


@pytest.fixture
def data():
    return trajectories(0, 3, 6)


def test_mismatched_shapes_name_the_arguments(data):
    data["reward"] = data["reward"][:, :5]
    with pytest.raises(ValueError, match=r"state_value has shape \(3, 6, 1\) but reward"):
        _gae(data)


def test_no_silent_broadcast(data):
    data["reward"] = data["reward"][:1]
    with pytest.raises(ValueError, match="no broadcasting"):
        _gae(data)


@pytest.mark.parametrize("time_dim", [3, -4, 7])
def test_time_dim_out_of_range(data, time_dim):
    with pytest.raises(ValueError, match=f"time_dim={time_dim} is out of range"):
        _gae(data, time_dim=time_dim)


def test_float_done_is_rejected(data):
    data["done"] = data["done"].astype(np.float64)
    with pytest.raises(TypeError, match="done must be a boolean array"):
        _gae(data)


def test_integer_done_must_be_zero_or_one(data):
    data["done"] = data["done"].astype(np.int64) * 2
    with pytest.raises(ValueError, match="done must hold only 0 and 1"):
        _gae(data)


def test_integer_zero_one_done_equals_boolean(data):
    expected = _gae(data)
    data["done"] = data["done"].astype(np.int32)
    data["terminated"] = data["terminated"].astype(np.uint8)
    for got, want in zip(_gae(data), expected):
        np.testing.assert_array_equal(got, want)


def test_integer_rewards_are_rejected(data):
    data["reward"] = np.ones((3, 6, 1), dtype=np.int64)
    with pytest.raises(TypeError, match="reward must be a real floating-point array"):
        _gae(data)


def test_mixed_backends_are_rejected(data):
    torch = pytest.importorskip("torch")
    data["reward"] = torch.from_numpy(data["reward"])
    with pytest.raises(TypeError, match="reward is torch"):
        _gae(data)


@pytest.mark.parametrize(
    ("name", "value"), [("gamma", 1.5), ("gamma", -0.1), ("lmbda", 2.0), ("gamma", float("nan"))]
)
def test_out_of_range_discounts(data, name, value):
    with pytest.raises(ValueError, match=f"{name} must be in"):
        _gae(data, **{name: value})


def test_gamma_array_of_wrong_shape(data):
    with pytest.raises(ValueError, match="gamma must be a float, a 0-d array"):
        _gae(data, gamma=np.full((3, 6), 0.9))


def test_vtrace_thresholds_must_be_positive(data):
    d = data
    with pytest.raises(ValueError, match="rho_thresh must be in"):
        F.vtrace_advantage_estimate(
            0.9, d["log_pi"], d["log_mu"], d["value"], d["next_value"], d["reward"], d["done"],
            rho_thresh=0.0,
        )


def test_rolling_gamma_false_needs_per_step_gamma(data):
    d = data
    with pytest.raises(ValueError, match="rolling_gamma=False needs per-step"):
        F.td1_return_estimate(0.9, d["next_value"], d["reward"], d["done"], rolling_gamma=False)


@pytest.mark.parametrize("kernel", ["cuda", "triton"])
def test_unavailable_kernel(data, kernel):
    with pytest.raises(ValueError, match="kernel"):
        _gae(data, kernel=kernel)


@pytest.mark.parametrize("kernel", ["numba", "reference"])
def test_empty_batch_works(kernel):
    d = trajectories(0, 0, 5)
    advantage, target = _gae(d, kernel=kernel)
    assert advantage.shape == (0, 5, 1) and target.shape == (0, 5, 1)


@pytest.mark.parametrize("kernel", ["numba", "reference"])
def test_nan_propagates_and_is_not_zeroed(data, kernel):
    data["done"][:] = False
    data["reward"][1, 3, 0] = np.nan
    advantage, _ = _gae(data, kernel=kernel)
    assert np.isnan(advantage[1, :4, 0]).all()
    assert np.isfinite(advantage[1, 4:, 0]).all()
    assert np.isfinite(advantage[[0, 2]]).all()


@pytest.mark.parametrize("kernel", ["numba", "reference"])
def test_callers_arrays_are_not_modified(data, kernel):
    before = {k: v.copy() for k, v in data.items()}
    _gae(data, kernel=kernel)
    F.vtrace_advantage_estimate(
        0.9, data["log_pi"], data["log_mu"], data["value"], data["next_value"], data["reward"],
        data["done"], data["terminated"], kernel=kernel,
    )
    F.td_lambda_return_estimate(
        0.9, 0.8, data["next_value"], data["reward"], data["done"], kernel=kernel
    )
    for key, value in before.items():
        np.testing.assert_array_equal(data[key], value, err_msg=key)


def test_float32_stays_float32(data):
    d32 = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in data.items()}
    advantage, target = _gae(d32)
    assert advantage.dtype == np.float32 and target.dtype == np.float32


def test_time_major_layout_equals_batch_major(data):
    expected = _gae(data)
    swapped = {k: np.swapaxes(v, 0, 1) for k, v in data.items()}
    got = _gae(swapped, time_dim=0)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, np.swapaxes(e, 0, 1), rtol=1e-12)


def test_one_dimensional_input_with_time_dim_minus_one(data):
    row = {k: v[0, :, 0] for k, v in data.items()}
    got = _gae(row, time_dim=-1)
    expected = _gae(data)
    for g, e in zip(got, expected):
        assert g.shape == (6,)
        np.testing.assert_allclose(g, e[0, :, 0], rtol=1e-12)


def test_works_on_every_backend(xp, data):
    expected = _gae(data, kernel="reference")
    converted = {k: xp.to(v) for k, v in data.items()}
    for got, want in zip(_gae(converted), expected):
        np.testing.assert_allclose(xp.back(got), want, rtol=1e-12)


def test_torch_cpu_reaches_numba_without_copies(data, monkeypatch):
    torch = pytest.importorskip("torch")
    from arrayrl.backends import _numba_cpu, get_backend

    seen = {}
    original = _numba_cpu.gae

    def spy(*arrays):
        seen["value"] = arrays[2]
        seen["outputs"] = original(*arrays)
        return seen["outputs"]

    monkeypatch.setattr(_numba_cpu, "gae", spy)
    backend = get_backend("torch")
    monkeypatch.setattr(backend, "_kernels", {})  # rebuild the bound kernels with the spy
    tensors = {k: torch.from_numpy(v) for k, v in data.items()}
    advantage, _ = _gae(tensors)
    assert np.shares_memory(seen["value"], tensors["value"].numpy())
    assert np.shares_memory(advantage.numpy(), seen["outputs"][0])


def test_tensordict_batch_entries_work(data):
    torch = pytest.importorskip("torch")
    tensordict = pytest.importorskip("tensordict")
    batch = tensordict.TensorDict(
        {
            "state_value": torch.from_numpy(data["value"]),
            "reward": torch.from_numpy(data["reward"]),
            "done": torch.from_numpy(data["done"]),
            "terminated": torch.from_numpy(data["terminated"]),
            "next": {"state_value": torch.from_numpy(data["next_value"])},
        },
        batch_size=[3, 6],
    )
    advantage, target = F.generalized_advantage_estimate(
        0.9, 0.95, batch["state_value"], batch["next", "state_value"], batch["reward"],
        batch["done"], batch["terminated"],
    )
    expected = _gae(data)
    np.testing.assert_allclose(advantage.numpy(), expected[0], rtol=1e-12)
    np.testing.assert_allclose(target.numpy(), expected[1], rtol=1e-12)
