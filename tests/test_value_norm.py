"""Value normalisers (arrayrl.modules.value_norm) against TorchRL 0.14.1's classes on the
same batches, against hand-computed NumPy statistics, and their state, moves and errors.

Every backend of the ``xp`` fixture runs the same sequence of batches as TorchRL (float32
and float64 targets; value shapes ``(1,)`` and ``(2,)``); the statistics, ``scale()``,
``normalize`` and ``denormalize`` are compared after every update.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.modules.adapt import as_value_norm
from arrayrl.modules.value_norm import (
    PercentileValueNorm,
    PopArtValueNorm,
    RunningValueNorm,
    ValueNorm,
)

CLASSES = {
    "PopArtValueNorm": (PopArtValueNorm, {"beta": 0.9}),
    "RunningValueNorm": (RunningValueNorm, {}),
    "PercentileValueNorm": (PercentileValueNorm, {"rate": 0.3, "quantiles": (0.1, 0.8)}),
    "PercentileValueNorm-center": (
        PercentileValueNorm,
        {"rate": 0.6, "center": True, "min_scale": 0.5},
    ),
}
#: leading (reduced) dims of the successive batches: 1-D, 2-D, 3-D and a single value
LEADING = [(9,), (4, 5), (2, 3, 2), ()]


def _batches(shape: tuple[int, ...], dtype: type, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k, lead in enumerate(LEADING):
        x = rng.standard_normal((*lead, *shape)) * (3.0 + 4 * k) + 2.0 * k
        out.append(x.astype(dtype))
    return out


def _host(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _close(mine, theirs, what: str, rtol: float = 2e-6, atol: float = 1e-6) -> None:
    np.testing.assert_allclose(_host(mine), _host(theirs), rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [1, (2,)])
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_matches_torchrl_on_a_sequence_of_batches(xp, kind, shape, dtype) -> None:
    torch = pytest.importorskip("torch")
    import torchrl.modules as tm

    cls, kwargs = CLASSES[kind]
    theirs = getattr(tm, cls.__name__)(shape=shape, **kwargs)
    mine = cls(shape=shape, **kwargs)
    value_shape = (shape,) if isinstance(shape, int) else shape
    for step, x in enumerate(_batches(value_shape, dtype)):
        theirs.update(torch.from_numpy(x))
        mine.update(xp.to(x))
        state = mine.state_dict()
        assert sorted(state) == sorted(theirs.state_dict())
        for name, value in theirs.state_dict().items():
            assert tuple(state[name].shape) == tuple(value.shape)
            assert _host(state[name]).dtype == np.float32  # TorchRL's buffers stay float32
            _close(state[name], value, f"step {step}: {name}", rtol=5e-6)
        _close(mine.scale(), theirs.scale(), f"step {step}: scale")
        probe = x.reshape(-1, *value_shape)[:3]
        normed = mine.normalize(xp.to(probe))
        assert _host(normed).dtype == dtype  # float64 targets normalise in float64
        _close(normed, theirs.normalize(torch.from_numpy(probe)), f"step {step}: normalize")
        _close(
            mine.denormalize(xp.to(probe)),
            theirs.denormalize(torch.from_numpy(probe)),
            f"step {step}: denormalize",
            rtol=5e-6,
        )


def test_statistics_match_hand_computed_float64() -> None:
    """Running: the mean and population variance of everything seen; PopArt after one
    update: the batch's; Percentile with rate 1: ``np.quantile`` (linear interpolation)."""
    batches = _batches((2,), np.float64, seed=3)
    running = RunningValueNorm(shape=2)
    for x in batches:
        running.update(x)
    seen = np.concatenate([x.reshape(-1, 2) for x in batches])
    np.testing.assert_allclose(running.mean, seen.mean(0), rtol=1e-6)
    np.testing.assert_allclose(running.scale(), seen.std(0), rtol=1e-6)
    assert float(running.count) == seen.shape[0]

    popart = PopArtValueNorm(shape=2, beta=0.7)
    popart.update(batches[1])
    flat = batches[1].reshape(-1, 2)
    np.testing.assert_allclose(popart.scale(), flat.std(0), rtol=1e-5)
    np.testing.assert_allclose(
        popart.normalize(flat), (flat - flat.mean(0)) / flat.std(0), rtol=1e-5, atol=1e-5
    )

    percentile = PercentileValueNorm(shape=2, rate=1.0, quantiles=(0.05, 0.95), min_scale=1e-3)
    percentile.update(batches[0])
    low, high = np.quantile(batches[0].reshape(-1, 2), [0.05, 0.95], axis=0)
    np.testing.assert_allclose(percentile.low, low, rtol=1e-6)
    np.testing.assert_allclose(percentile.scale(), high - low, rtol=1e-6)


def test_percentile_scale_is_floored_and_nan_propagates() -> None:
    norm = PercentileValueNorm(rate=1.0, min_scale=2.0)
    norm.update(np.linspace(0.0, 1.0, 11)[:, None])
    assert float(norm.scale()[0]) == 2.0
    norm.update(np.array([[1.0], [np.nan], [3.0]]))
    assert np.isnan(norm.low[0]) and np.isnan(norm.high[0])


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(sorted(CLASSES)),
    loc=st.floats(-1e3, 1e3),
    spread=st.floats(1e-2, 1e3),
    seed=st.integers(0, 2**16),
)
def test_denormalize_inverts_normalize(kind, loc, spread, seed) -> None:
    cls, kwargs = CLASSES[kind]
    norm = cls(shape=1, **kwargs)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        norm.update(loc + spread * rng.standard_normal((16, 1)))
    x = loc + spread * rng.standard_normal((8, 1))
    back = norm.denormalize(norm.normalize(x))
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9 * (abs(loc) + spread))
    assert norm.normalize(x).shape == x.shape


def test_state_dict_round_trip_from_torch_to_numpy() -> None:
    torch = pytest.importorskip("torch")
    source = PercentileValueNorm(shape=2, rate=0.5).to("torch")
    for x in _batches((2,), np.float32):
        source.update(torch.from_numpy(x))
    state = source.state_dict()
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in state.values())
    target = PercentileValueNorm(shape=2, rate=0.5).to("numpy")
    assert target.load_state_dict(state) is target
    assert all(
        isinstance(v, np.ndarray) and v.dtype == np.float32 for v in target.state_dict().values()
    )
    probe = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32)
    _close(target.normalize(probe), source.normalize(torch.from_numpy(probe)), "normalize")
    # a TorchRL normaliser's state_dict loads as it is
    import torchrl.modules as tm

    theirs = tm.PopArtValueNorm(shape=1)
    theirs.update(torch.arange(6.0).reshape(6, 1))
    mine = PopArtValueNorm(shape=1).load_state_dict(theirs.state_dict())
    _close(mine.scale(), theirs.scale(), "scale after loading TorchRL's state")


def test_load_state_dict_checks_everything_first() -> None:
    norm = RunningValueNorm(shape=2)
    norm.update(np.ones((3, 2)))
    before = {k: np.array(v) for k, v in norm.state_dict().items()}
    with pytest.raises(KeyError, match=r"missing \['count'\]"):
        norm.load_state_dict({"mean": np.zeros(2), "m2": np.zeros(2)})
    with pytest.raises(ValueError, match="'m2' has shape"):
        norm.load_state_dict({"mean": np.zeros(2), "m2": np.zeros(3), "count": np.zeros(())})
    with pytest.raises(TypeError, match="floating"):
        norm.load_state_dict({"mean": np.zeros(2, int), "m2": np.zeros(2), "count": np.zeros(())})
    for k, v in norm.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_to_moves_and_then_refuses_other_backends() -> None:
    torch = pytest.importorskip("torch")
    norm = PopArtValueNorm()
    norm.update(np.ones((4, 1)))
    assert norm.to("torch") is norm
    assert all(isinstance(v, torch.Tensor) for v in norm.state_dict().values())
    norm.update(torch.ones(4, 1, requires_grad=True))
    assert not any(v.requires_grad for v in norm.state_dict().values())
    with pytest.raises(TypeError, match=r"on torch .*value_target is on numpy.*\.to\('numpy'"):
        norm.update(np.ones((4, 1)))
    with pytest.raises(TypeError, match=r"\.to\("):
        norm.normalize(np.ones((4, 1)))


def test_untouched_state_adopts_the_first_backend() -> None:
    torch = pytest.importorskip("torch")
    norm = RunningValueNorm()
    assert isinstance(norm.mean, np.ndarray)  # NumPy zeros until first used
    norm.update(torch.ones(3, 1, dtype=torch.float64))
    assert isinstance(norm.mean, torch.Tensor) and norm.mean.dtype == torch.float32
    assert isinstance(PopArtValueNorm(device="cpu").running_mean, torch.Tensor)


def test_update_reads_without_gradient_and_writes_nothing() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor([[1.0], [2.0], [4.0]], requires_grad=True)
    copy = x.detach().clone()
    for cls, kwargs in CLASSES.values():
        norm = cls(**kwargs)
        norm.update(x)
        assert torch.equal(x.detach(), copy)
        assert not any(v.requires_grad for v in norm.state_dict().values())
        out = norm.normalize(x)  # normalize itself is differentiable in its input
        out.sum().backward()
        assert x.grad is not None
        x.grad = None


def test_an_empty_batch_changes_nothing() -> None:
    for cls, kwargs in CLASSES.values():
        norm = cls(**kwargs)
        norm.update(np.array([[1.0], [3.0]]))
        before = {k: np.array(v) for k, v in norm.state_dict().items()}
        norm.update(np.zeros((0, 1)))
        for k, v in norm.state_dict().items():
            np.testing.assert_array_equal(v, before[k], err_msg=f"{cls.__name__}.{k}")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": 0}, ValueError, r"shape\[0\] must be >= 1"),
        ({"shape": ()}, ValueError, "shape must have at least one dim"),
        ({"shape": "a"}, TypeError, r"shape\[0\] must be an int"),
        ({"epsilon": math.nan}, ValueError, "epsilon must be in"),
        ({"epsilon": -1.0}, ValueError, "epsilon must be in"),
        ({"beta": math.nan}, ValueError, "beta must be in"),
        ({"beta": -0.5}, ValueError, "beta must be in"),
        ({"beta": 1.5}, ValueError, "beta must be in"),
    ],
)
def test_popart_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        PopArtValueNorm(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"quantiles": (0.9, 0.1)}, ValueError, "quantiles must satisfy 0 <= low < high <= 1"),
        ({"quantiles": (0.5, 0.5)}, ValueError, "quantiles must satisfy"),
        ({"quantiles": (-0.1, 0.5)}, ValueError, r"quantiles\[0\] must be in"),
        ({"quantiles": (0.1, math.nan)}, ValueError, r"quantiles\[1\] must be in"),
        ({"quantiles": 0.5}, ValueError, "quantiles must be a pair"),
        ({"rate": 1.5}, ValueError, "rate must be in"),
        ({"rate": -0.1}, ValueError, "rate must be in"),
        ({"rate": math.nan}, ValueError, "rate must be in"),
        ({"min_scale": 0.0}, ValueError, "min_scale must be in"),
        ({"min_scale": -1.0}, ValueError, "min_scale must be in"),
        ({"min_scale": math.nan}, ValueError, "min_scale must be in"),
        ({"center": 1}, ValueError, "center must be a boolean"),
        ({"epsilon": math.nan}, ValueError, "epsilon must be in"),
    ],
)
def test_percentile_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        PercentileValueNorm(**kwargs)


def test_bad_arrays_are_refused_not_broadcast() -> None:
    norm = RunningValueNorm(shape=2)
    with pytest.raises(
        ValueError,
        match=r"shape=\(2,\) but got a value_target with trailing "
        r"shape \(3,\)",
    ):
        norm.update(np.ones((4, 3)))
    with pytest.raises(ValueError, match="trailing shape"):
        norm.update(np.ones(2 * 4))  # [8] would reduce nothing and broadcast later
    with pytest.raises(ValueError, match="normalised_value with trailing shape"):
        norm.denormalize(np.ones((4, 1)))
    with pytest.raises(ValueError, match="value_target with trailing shape"):
        PopArtValueNorm().normalize(np.ones((4, 2)))
    with pytest.raises(TypeError, match="floating-point"):
        norm.update(np.ones((4, 2), dtype=np.int64))
    with pytest.raises(TypeError):
        ValueNorm()  # abstract


def test_as_value_norm_copies_torchrl_normalisers() -> None:
    torch = pytest.importorskip("torch")
    import torchrl.modules as tm

    made = [
        tm.PopArtValueNorm(shape=2, beta=0.8, epsilon=1e-4),
        tm.RunningValueNorm(shape=2, epsilon=1e-3),
        tm.PercentileValueNorm(
            shape=2, quantiles=(0.2, 0.7), rate=0.4, min_scale=0.3, center=True, epsilon=1e-4
        ),
    ]
    batches = _batches((2,), np.float32, seed=5)
    for theirs in made:
        theirs.update(torch.from_numpy(batches[0]))
        mine = as_value_norm(theirs, "value_norm", owner="MAPPOLoss")
        assert type(mine).__name__ == type(theirs).__name__
        assert isinstance(mine, ValueNorm) and mine.shape == (2,)
        for arg in ("beta", "epsilon", "quantiles", "rate", "min_scale", "center"):
            if hasattr(theirs, arg):
                assert getattr(mine, arg) == pytest.approx(getattr(theirs, arg)), arg
        for name, value in theirs.state_dict().items():
            assert isinstance(mine.state_dict()[name], torch.Tensor)
            _close(mine.state_dict()[name], value, name, rtol=0, atol=0)
        mine.update(torch.from_numpy(batches[1]))  # the copy moves on alone...
        theirs.update(torch.from_numpy(batches[1]))  # ...and keeps matching TorchRL's
        for name, value in theirs.state_dict().items():
            _close(mine.state_dict()[name], value, name, rtol=5e-6)
        assert mine.state_dict() is not theirs.state_dict()

    own = RunningValueNorm()
    assert as_value_norm(own, "advantage_norm", owner="A2CLoss") is own
    with pytest.raises(TypeError, match="A2CLoss: advantage_norm must be an arrayrl ValueNorm"):
        as_value_norm(object(), "advantage_norm", owner="A2CLoss")
