"""``ExponentialQuadraticCost`` (PILCO's expected saturating cost): against TorchRL 0.14.1
(values, the TensorDict output, torch gradients), the closed form in one dimension,
every backend, the [0, 1] bound, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.data import ArrayDict
from arrayrl.objectives.pilco import ExponentialQuadraticCost

torch = pytest.importorskip("torch")
from tensordict import TensorDict  # noqa: E402
from torchrl.objectives.pilco import ExponentialQuadraticCost as TorchRLCost  # noqa: E402

D = 3


def _state(rng: np.random.Generator, batch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mean = rng.standard_normal((*batch, D))
    root = 0.7 * rng.standard_normal((*batch, D, D))
    return mean, root @ np.swapaxes(root, -1, -2)


def _weights(rng: np.random.Generator) -> np.ndarray:
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    return (basis * np.array([1.5, 0.4, -0.2])) @ basis.T  # one negative eigenvalue


def _batch(mean: np.ndarray, cov: np.ndarray) -> dict:
    return {"observation": {"mean": mean, "var": cov}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_matches_torchrl(batch: tuple, weighted: bool, reduction: str, dtype) -> None:
    rng = np.random.default_rng(len(batch) + 10 * weighted)
    mean, cov = _state(rng, batch)
    kwargs = {}
    if weighted:
        kwargs = {
            "target": torch.tensor(rng.standard_normal(D), dtype=dtype),
            "weights": torch.tensor(_weights(rng), dtype=dtype),
        }
    runs = []
    for cls in (ExponentialQuadraticCost, TorchRLCost):
        m = torch.tensor(mean, dtype=dtype, requires_grad=True)
        s = torch.tensor(cov, dtype=dtype, requires_grad=True)
        out = cls(reduction=reduction, **kwargs)(TensorDict(_batch(m, s), batch_size=batch))
        assert isinstance(out, TensorDict)
        assert tuple(out.batch_size) == (batch if reduction == "none" else ())
        cost = out["loss_cost"]
        weight = torch.cos(torch.arange(cost.numel(), dtype=dtype)).reshape(cost.shape)
        runs.append((cost, *torch.autograd.grad((cost * weight).sum(), (m, s))))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for ours, theirs in zip(*runs):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=tol, atol=tol)


def test_one_dimension_by_hand() -> None:
    """D = 1: ``1 - (1 + w s + ε)^(-1/2) exp(-w d² / (2 (1 + w s + ε)))``."""
    m, s, target, w = 0.7, 0.3, -0.2, 2.5
    a = 1 + w * s + 1e-5
    expected = 1 - a**-0.5 * math.exp(-0.5 * w * (m - target) ** 2 / a)
    loss = ExponentialQuadraticCost(target=np.array([target]), weights=np.array([[w]]))
    out = loss(_batch(np.array([[m]]), np.array([[[s]]])))
    np.testing.assert_allclose(out["loss_cost"], expected, rtol=1e-14)


def test_identity_defaults_by_hand() -> None:
    """W = I, x* = 0, diagonal S: a product over dimensions."""
    mean = np.array([[0.5, -1.0, 0.2]])
    var = np.array([0.1, 0.4, 2.0])
    a = 1 + var + 1e-5
    expected = 1 - np.prod(a**-0.5) * np.exp(-0.5 * np.sum(mean[0] ** 2 / a))
    out = ExponentialQuadraticCost(reduction="none")(_batch(mean, np.diag(var)[None]))
    np.testing.assert_allclose(out["loss_cost"], [expected], rtol=1e-14)


def test_negative_weight_eigenvalues_are_clamped() -> None:
    rng = np.random.default_rng(0)
    mean, cov = _state(rng, (4,))
    basis = np.linalg.qr(rng.standard_normal((D, D)))[0]
    clamped = (basis * np.array([1.0, 0.5, 0.0])) @ basis.T
    negative = (basis * np.array([1.0, 0.5, -3.0])) @ basis.T
    a = ExponentialQuadraticCost(weights=clamped, reduction="none")(_batch(mean, cov))
    b = ExponentialQuadraticCost(weights=negative, reduction="none")(_batch(mean, cov))
    np.testing.assert_allclose(a["loss_cost"], b["loss_cost"], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_backend(xp, dtype) -> None:
    if xp.name == "jax":  # eager JAX compiles each op anew: ~12 s here, over the CI budget
        pytest.skip("JAX runs this loss in the conformance suite's core cases")
    rng = np.random.default_rng(1)
    mean, cov = (a.astype(dtype) for a in _state(rng, (2, 4)))
    weights, target = _weights(rng).astype(dtype), rng.standard_normal(D).astype(dtype)
    reference = ExponentialQuadraticCost(target, weights, "none")(
        _batch(mean.astype(np.float64), cov.astype(np.float64))
    )["loss_cost"]
    loss = ExponentialQuadraticCost(xp.to(target), xp.to(weights), "none")
    got = xp.back(loss(ArrayDict(_batch(xp.to(mean), xp.to(cov)), (2, 4)))["loss_cost"])
    assert got.dtype == dtype and got.shape == (2, 4)
    np.testing.assert_allclose(got, reference, atol=1e-5 if dtype == np.float32 else 1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.0, 10.0), st.floats(0.0, 5.0))
def test_cost_is_in_unit_interval(seed: int, spread: float, scale: float) -> None:
    rng = np.random.default_rng(seed)
    mean = spread * rng.standard_normal((6, D))
    root = scale * rng.standard_normal((6, D, D))
    cov = root @ np.swapaxes(root, -1, -2)
    cost = ExponentialQuadraticCost(weights=_weights(rng), reduction="none")(_batch(mean, cov))
    cost = np.asarray(cost["loss_cost"])
    assert ((cost >= 0) & (cost <= 1)).all()


def test_at_the_target_with_no_spread_the_cost_is_the_jitter() -> None:
    out = ExponentialQuadraticCost()(_batch(np.zeros((1, D)), np.zeros((1, D, D))))
    np.testing.assert_allclose(out["loss_cost"], 1 - (1 + 1e-5) ** (-D / 2), rtol=1e-10)


def test_keys_are_renamed_and_the_batch_is_not_written() -> None:
    rng = np.random.default_rng(2)
    mean, cov = _state(rng, (3,))
    batch = ArrayDict({"m": mean, "S": cov}, (3,))
    loss = ExponentialQuadraticCost().set_keys(loc="m", scale="S", loss_cost="cost")
    out = loss(batch)
    assert list(out.keys()) == ["cost"]
    assert sorted(batch.keys()) == ["S", "m"]
    expected = ExponentialQuadraticCost()(_batch(mean, cov))["loss_cost"]
    np.testing.assert_allclose(out["cost"], expected, rtol=1e-14)


def test_bad_input() -> None:
    mean, cov = _state(np.random.default_rng(3), (2,))
    with pytest.raises(ValueError, match="reduction"):
        ExponentialQuadraticCost(reduction="max")
    with pytest.raises(ValueError, match="square"):
        ExponentialQuadraticCost(weights=np.ones((2, 3)))
    with pytest.raises(TypeError, match="weights must be floating"):
        ExponentialQuadraticCost(weights=np.eye(D, dtype=int))
    with pytest.raises(TypeError, match="target must be an array"):
        ExponentialQuadraticCost(target="origin")
    with pytest.raises(ValueError, match="covariance"):
        ExponentialQuadraticCost()(_batch(mean, cov[..., :2]))
    with pytest.raises(ValueError, match="weights has shape"):
        ExponentialQuadraticCost(weights=np.eye(2))(_batch(mean, cov))
    with pytest.raises(ValueError, match="target has shape"):
        ExponentialQuadraticCost(target=np.zeros(4))(_batch(mean, cov))
    with pytest.raises(TypeError, match="must be floating"):
        ExponentialQuadraticCost()(_batch(mean.astype(int), cov))
    with pytest.raises(KeyError, match=r"set_keys\(scale=...\)"):
        ExponentialQuadraticCost()({"observation": {"mean": mean}})
    with pytest.raises(TypeError, match="unexpected keyword"):
        ExponentialQuadraticCost(jitter=1e-3)


def test_target_and_weights_are_buffers_as_torchrl() -> None:
    rng = np.random.default_rng(4)
    target, weights = rng.standard_normal(D), _weights(rng)
    t_target, t_weights = torch.tensor(target), torch.tensor(weights)
    theirs = TorchRLCost(target=t_target.clone(), weights=t_weights.clone()).state_dict()
    ours = ExponentialQuadraticCost(target=t_target, weights=t_weights)
    assert set(ours.state_dict()) == set(theirs) == {"target", "weights"}
    assert list(ours.parameters()) == []
    assert set(ExponentialQuadraticCost(target=target).state_dict()) == {"target"}
    # loading writes into the loss's copy, never into the caller's array
    ours.load_state_dict({"target": torch.zeros(D, dtype=torch.float64), "weights": t_weights})
    torch.testing.assert_close(ours.state_dict()["target"], torch.zeros(D, dtype=torch.float64))
    torch.testing.assert_close(t_target, torch.tensor(target))
    mean, cov = _state(rng, (4,))
    moved = ExponentialQuadraticCost(target=t_target, weights=t_weights).to("numpy")
    assert all(isinstance(v, np.ndarray) for v in moved.state_dict().values())
    cost = moved(ArrayDict(_batch(mean, cov), batch_size=(4,)))["loss_cost"]
    expected = ExponentialQuadraticCost(target=target, weights=weights)(
        ArrayDict(_batch(mean, cov), batch_size=(4,))
    )["loss_cost"]
    np.testing.assert_allclose(cost, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        ours.load_state_dict({"target": torch.zeros(D + 1), "weights": t_weights})
