"""arrayrl.modules.distributions against torch.distributions and TorchRL 0.14.1.

Parameters and values are built in float64 NumPy; only the distribution under test runs
on the backend; references come from torch / TorchRL on the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from arrayrl.backends import get_backend

from arrayrl.modules.distributions import (
    Categorical,
    Delta,
    IndependentNormal,
    MaskedCategorical,
    Normal,
    OneHotCategorical,
    ReparamGradientStrategy,
    TanhDelta,
    TanhNormal,
    entropy_estimate,
    kl_divergence,
)
from arrayrl.random import make_generator

torch = pytest.importorskip("torch")
D = torch.distributions
trl = pytest.importorskip("torchrl.modules.distributions")
from torchrl.modules import IndependentNormal as TorchRLIndependentNormal  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


# -- helpers ---------------------------------------------------------------------------


def _backend(xp):
    return get_backend("torch", "cuda") if xp.name == "torch-cuda" else get_backend(xp.name)


def _to(xp, a):
    """``xp.to`` that keeps 0-d arrays 0-d (np.ascontiguousarray, which the torch
    converter uses, makes them 1-d)."""
    a = np.asarray(a)
    return xp.to(a) if a.ndim else _backend(xp).xp.reshape(xp.to(a.reshape(1)), ())


def _rng(xp, seed=0, mode="native"):
    return make_generator(seed, _backend(xp), mode=mode)


def _t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def _n(t):
    return t.detach().cpu().numpy()


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def _params(seed, shape):
    r = np.random.default_rng(seed)
    return np.asarray(r.normal(size=shape)), np.asarray(r.uniform(0.3, 2.0, size=shape))


def _torch_param(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


@pytest.fixture
def fixed_noise(monkeypatch):
    """Makes torch's Normal.rsample use given standard-normal draws (TorchRL's samplers
    draw through it), so TorchRL sees exactly the noise of a mode="numpy" generator."""

    def use(eps):
        def standard_normal(shape, dtype, device):
            assert tuple(shape) == eps.shape
            return torch.as_tensor(eps, dtype=dtype, device=device)

        monkeypatch.setattr(D.normal, "_standard_normal", standard_normal)

    return use


# -- Normal and IndependentNormal ------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (5,), (3, 4)])
def test_normal_matches_torch(xp, shape):
    loc, scale = _params(0, shape)
    value = np.random.default_rng(1).normal(size=(2, *shape))
    dist = Normal(_to(xp, loc), _to(xp, scale))
    ref = D.Normal(_t(loc), _t(scale))
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    for name in ("mean", "mode", "stddev", "variance"):
        _close(xp.back(getattr(dist, name)), _n(getattr(ref, name)))
    _close(xp.back(dist.deterministic_sample), loc)
    assert (dist.batch_shape, dist.event_shape) == (shape, ())
    assert (dist.has_rsample, dist.has_entropy) == (True, True)


def test_normal_scalar_and_callable_scale(xp):
    loc = np.linspace(-1.0, 1.0, 4)
    value = np.zeros(4)
    expected = _n(D.Normal(_t(loc), 0.5).log_prob(_t(value)))
    _close(xp.back(Normal(xp.to(loc), 0.5).log_prob(xp.to(value))), expected)
    half = Normal(xp.to(loc), lambda m: m * 0.0 + 0.5)
    _close(xp.back(half.log_prob(xp.to(value))), expected)


@pytest.mark.parametrize("event_dim", [0, 1, 2])
def test_independent_normal_matches_torchrl(xp, event_dim):
    loc, scale = _params(2, (3, 4, 2))
    value = np.random.default_rng(3).normal(size=(5, 3, 4, 2))
    dist = IndependentNormal(xp.to(loc), xp.to(scale), event_dim=event_dim)
    ref = TorchRLIndependentNormal(_t(loc), _t(scale), event_dim=event_dim)
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    for name in ("mean", "mode", "deterministic_sample"):
        _close(xp.back(getattr(dist, name)), _n(getattr(ref, name)))
    assert dist.batch_shape == tuple(ref.batch_shape)
    assert dist.event_shape == tuple(ref.event_shape)


def test_independent_normal_tanh_loc_is_applied(xp):
    """TorchRL 0.14.1 ignores tanh_loc in the constructor (only update() applies it);
    arrayrl applies it, which equals TorchRL after update()."""
    loc, scale = _params(4, (3, 2))
    loc = 8.0 * loc
    dist = IndependentNormal(xp.to(loc), xp.to(scale), upscale=2.0, tanh_loc=True)
    _close(xp.back(dist.mean), 2.0 * np.tanh(loc / 2.0))
    ref = TorchRLIndependentNormal(_t(loc), _t(scale), upscale=2.0, tanh_loc=True)
    _close(_n(ref.mean), loc)  # the TorchRL behaviour this deviates from
    ref.update(_t(loc), _t(scale))
    value = np.zeros((3, 2))
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))


# -- TanhNormal ------------------------------------------------------------------------


def _bounds(kind):
    if kind == "default":
        return -1.0, 1.0
    if kind == "numbers":
        return -2.0, 3.0
    r = np.random.default_rng(5)
    return r.uniform(-3.0, -1.0, size=4), r.uniform(0.5, 3.0, size=4)


def _as_backend(bound, xp):
    return bound if isinstance(bound, float) else xp.to(bound)


def _as_torch(bound, dtype=torch.float64):
    """TorchRL turns number bounds into float32 tensors (so log(half-width) is computed in
    float32 even for float64 parameters); float64 tensors keep the reference exact."""
    return torch.tensor(bound, dtype=dtype)


def _tanh_values(seed, shape, low, high):
    pre = np.random.default_rng(seed).normal(scale=1.5, size=shape)
    return (np.asarray(high) + np.asarray(low)) / 2 + (np.asarray(high) - np.asarray(low)) / 2 * (
        np.tanh(pre)
    )


@pytest.mark.parametrize("bounds", ["default", "numbers", "arrays"])
@pytest.mark.parametrize("event_dims", [None, 0, 2])
@pytest.mark.parametrize("tanh_loc", [False, True])
def test_tanh_normal_matches_torchrl(xp, bounds, event_dims, tanh_loc):
    low, high = _bounds(bounds)
    loc, scale = _params(6, (3, 4))
    loc = 3.0 * loc
    value = _tanh_values(7, (2, 3, 4), low, high)
    kwargs = {"event_dims": event_dims, "tanh_loc": tanh_loc, "upscale": 2.0}
    dist = TanhNormal(
        xp.to(loc), xp.to(scale), low=_as_backend(low, xp), high=_as_backend(high, xp), **kwargs
    )
    ref = trl.TanhNormal(_t(loc), _t(scale), low=_as_torch(low), high=_as_torch(high), **kwargs)
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))), 1e-9, 1e-9)
    _close(xp.back(dist.deterministic_sample), _n(ref.deterministic_sample), 1e-12, 1e-12)
    assert dist.batch_shape == tuple(ref.batch_shape)
    assert dist.event_shape == tuple(ref.event_shape)


def test_tanh_normal_unsafe_tanh_matches_torchrl(xp):
    loc, scale = _params(8, (3, 4))
    value = _tanh_values(9, (3, 4), -1.0, 1.0)
    dist = TanhNormal(xp.to(loc), xp.to(scale), safe_tanh=False)
    ref = trl.TanhNormal(_t(loc), _t(scale), safe_tanh=False)
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))), 1e-9, 1e-9)


def test_tanh_normal_event_dims_default_for_0d_loc(xp):
    dist = TanhNormal(_to(xp, 0.3), _to(xp, 1.2))
    ref = trl.TanhNormal(_t(np.asarray(0.3)), _t(np.asarray(1.2)))
    assert (dist.batch_shape, dist.event_shape, dist.event_dims) == ((), (), 0)
    value = np.asarray(0.2)
    _close(xp.back(dist.log_prob(_to(xp, value))), _n(ref.log_prob(_t(value))))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bounds", ["default", "numbers"])
def test_tanh_normal_at_the_bounds_is_finite_and_matches_torchrl(xp, dtype, bounds):
    low, high = _bounds(bounds)
    loc = np.array([[0.3, -0.2, 4.0], [-6.0, 0.0, 1.0]], dtype=dtype)
    scale = np.array([[0.5, 1.0, 0.2], [2.0, 0.1, 1.0]], dtype=dtype)
    value = np.array([[low, high, high], [low, low, 0.5 * (low + high)]], dtype=dtype)
    dist = TanhNormal(xp.to(loc), xp.to(scale), low=low, high=high)
    torch_dtype = getattr(torch, dtype)
    ref = trl.TanhNormal(
        _t(loc), _t(scale), low=_as_torch(low, torch_dtype), high=_as_torch(high, torch_dtype)
    )
    got = xp.back(dist.log_prob(xp.to(value)))
    assert got.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(got))
    rtol = 1e-5 if dtype == "float32" else 1e-9
    _close(got, _n(ref.log_prob(_t(value))), rtol, rtol)


def test_tanh_normal_has_no_mode_mean_or_entropy(xp):
    dist = TanhNormal(xp.to(np.zeros(3)), xp.to(np.ones(3)))
    assert (dist.has_entropy, dist.has_rsample) == (False, True)
    with pytest.raises(RuntimeError, match="deterministic_sample"):
        _ = dist.mode
    with pytest.raises(NotImplementedError, match="mean"):
        _ = dist.mean
    with pytest.raises(NotImplementedError, match="entropy_estimate"):
        dist.entropy()


@pytest.mark.parametrize("bounds", ["default", "numbers", "arrays"])
def test_tanh_normal_samples_lie_in_bounds(xp, bounds):
    low, high = _bounds(bounds)
    loc = np.array([0.0, 40.0, -40.0, 0.5], dtype=np.float32)
    scale = np.array([1.0, 0.1, 0.1, 3.0], dtype=np.float32)
    if bounds == "arrays":
        low, high = low.astype(np.float32), high.astype(np.float32)
    dist = TanhNormal(
        xp.to(loc), xp.to(scale), low=_as_backend(low, xp), high=_as_backend(high, xp)
    )
    draws = xp.back(dist.sample((2000,), rng=_rng(xp, 11)))
    assert draws.shape == (2000, 4) and draws.dtype == np.float32
    assert np.all(draws >= np.asarray(low, np.float32)) and np.all(
        draws <= np.asarray(high, np.float32)
    )
    assert np.all(np.isfinite(xp.back(dist.log_prob(xp.to(draws)))))


def test_tanh_normal_sample_mean_matches_monte_carlo(xp):
    loc, scale = np.array([0.4, -1.0]), np.array([0.8, 1.5])
    dist = TanhNormal(xp.to(loc), xp.to(scale), low=-2.0, high=3.0)
    n = 20000
    draws = xp.back(dist.sample((n,), rng=_rng(xp, 12)))
    reference = 0.5 + 2.5 * np.tanh(
        loc + scale * np.random.default_rng(99).normal(size=(400000, 2))
    )
    tolerance = 5.0 * reference.std(axis=0) / math.sqrt(n)
    assert np.all(np.abs(draws.mean(axis=0) - reference.mean(axis=0)) < tolerance)


# -- gradients against TorchRL (torch only) --------------------------------------------


def test_tanh_normal_log_prob_gradients_match_torchrl_at_bounds():
    loc = np.array([[0.3, -0.2, 4.0], [-6.0, 0.0, 25.0]])
    scale = np.array([[0.5, 1.0, 0.2], [2.0, 0.1, 1.0]])
    value = np.array([[-2.0, 3.0, 3.0], [-2.0, 0.4, 2.9999999]])
    grads = []
    for make, low, high in (
        (TanhNormal, -2.0, 3.0),
        (trl.TanhNormal, _as_torch(-2.0), _as_torch(3.0)),
    ):
        l_, s_, v_ = _torch_param(loc), _torch_param(scale), _torch_param(value)
        lp = make(l_, s_, low=low, high=high).log_prob(v_)
        grads.append(torch.autograd.grad(lp.sum(), (l_, s_, v_)))
    for ours, theirs in zip(*grads):
        assert torch.isfinite(ours).all()
        _close(_n(ours), _n(theirs), 1e-9, 1e-9)


@pytest.mark.parametrize("bounds", ["default", "numbers"])
def test_tanh_normal_rsample_and_log_prob_match_torchrl(fixed_noise, bounds):
    low, high = _bounds(bounds)
    loc, scale = _params(13, (3, 2))
    loc = np.concatenate([loc, [[30.0, -30.0]]])  # a saturated row
    scale = np.concatenate([scale, [[0.5, 0.5]]])
    fixed_noise(np.random.default_rng(14).standard_normal((5, 4, 2)))
    outs = []
    for make, draw in (
        (TanhNormal, lambda d: d.rsample_and_log_prob((5,), rng=_numpy_rng(14))),
        (trl.TanhNormal, lambda d: d.rsample_and_log_prob((5,))),
    ):
        l_, s_ = _torch_param(loc), _torch_param(scale)
        if make is trl.TanhNormal:
            low, high = _as_torch(low), _as_torch(high)
        action, lp = draw(make(l_, s_, low=low, high=high))
        weights = torch.linspace(-1.0, 2.0, 8, dtype=torch.float64).reshape(4, 2)
        objective = (action * weights).sum() + lp.sum()
        outs.append((action, lp, *torch.autograd.grad(objective, (l_, s_))))
    for ours, theirs in zip(*outs):
        assert torch.isfinite(ours).all()
        _close(_n(ours), _n(theirs), 1e-9, 1e-9)


def _numpy_rng(seed):
    return make_generator(seed, "torch", mode="numpy")


def test_tanh_normal_rsample_then_log_prob_gradients_match_torchrl(fixed_noise):
    loc, scale = _params(15, (4, 3))
    fixed_noise(np.random.default_rng(16).standard_normal((2, 4, 3)))
    outs = []
    for make, draw in (
        (TanhNormal, lambda d: d.rsample((2,), rng=_numpy_rng(16))),
        (trl.TanhNormal, lambda d: d.rsample((2,))),
    ):
        l_, s_ = _torch_param(loc), _torch_param(scale)
        bounds = (-2.0, 3.0) if make is TanhNormal else (_as_torch(-2.0), _as_torch(3.0))
        dist = make(l_, s_, low=bounds[0], high=bounds[1])
        action = draw(dist)
        outs.append((action, *torch.autograd.grad(dist.log_prob(action).sum(), (l_, s_))))
    for ours, theirs in zip(*outs):
        _close(_n(ours), _n(theirs), 1e-8, 1e-8)


@pytest.mark.parametrize("event_dim", [None, 1])
def test_normal_rsample_gradients_match_torch(fixed_noise, event_dim):
    loc, scale = _params(17, (4, 3))
    fixed_noise(np.random.default_rng(18).standard_normal((6, 4, 3)))
    outs = []
    for independent, draw in (
        (False, lambda d: d.rsample((6,), rng=_numpy_rng(18))),
        (True, lambda d: d.rsample((6,))),
    ):
        l_, s_ = _torch_param(loc), _torch_param(scale)
        if event_dim is None:
            dist = Normal(l_, s_) if not independent else D.Normal(l_, s_)
        else:
            cls = IndependentNormal if not independent else TorchRLIndependentNormal
            dist = cls(l_, s_, event_dim=event_dim)
        x = draw(dist)
        outs.append((x, *torch.autograd.grad((x**3).sum() + dist.log_prob(x).sum(), (l_, s_))))
    for ours, theirs in zip(*outs):
        _close(_n(ours), _n(theirs))


def test_sample_carries_no_gradient_and_rsample_does():
    loc, scale = _torch_param(np.zeros(3)), _torch_param(np.ones(3))
    rng = make_generator(0, "torch")
    for dist in (Normal(loc, scale), TanhNormal(loc, scale), Delta(loc)):
        assert not dist.sample((2,), rng=rng).requires_grad
        assert dist.rsample((2,), rng=rng).requires_grad
    logits = _torch_param(np.zeros(3))
    assert not OneHotCategorical(logits=logits).sample(rng=rng).requires_grad
    assert OneHotCategorical(logits=logits).rsample(rng=rng).requires_grad


# -- Delta and TanhDelta ---------------------------------------------------------------


def test_delta_matches_torchrl(xp):
    param = np.random.default_rng(19).normal(size=(3, 2))
    dist, ref = Delta(xp.to(param)), trl.Delta(_t(param))
    values = np.stack([param, param + 1e-9, param + np.array([0.0, 1e-3])])
    np.testing.assert_array_equal(
        xp.back(dist.log_prob(xp.to(values))), _n(ref.log_prob(_t(values)))
    )
    assert np.isposinf(xp.back(dist.log_prob(xp.to(param)))).all()
    for name in ("mean", "mode", "deterministic_sample"):
        _close(xp.back(getattr(dist, name)), param)
    assert (dist.batch_shape, dist.event_shape) == ((3,), (2,))
    draws = xp.back(dist.sample((4,), rng=_rng(xp)))
    np.testing.assert_array_equal(draws, np.broadcast_to(param, (4, 3, 2)))


def test_delta_with_explicit_shapes(xp):
    param = np.random.default_rng(20).normal(size=(3, 2))
    dist = Delta(xp.to(param), batch_shape=(3, 2), event_shape=())
    ref = trl.Delta(_t(param), batch_shape=torch.Size([3, 2]), event_shape=torch.Size([]))
    value = param + np.array([[0.0, 1.0]])
    np.testing.assert_array_equal(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))


@pytest.mark.parametrize("bounds", ["default", "numbers"])
def test_tanh_delta_matches_torchrl(xp, bounds):
    low, high = _bounds(bounds)
    param = 2.0 * np.random.default_rng(21).normal(size=(3, 2))
    dist = TanhDelta(xp.to(param), low=low, high=high)
    ref = trl.TanhDelta(_t(param), low=low, high=high)
    _close(xp.back(dist.mode), _n(ref.mode))
    _close(xp.back(dist.deterministic_sample), _n(ref.deterministic_sample))
    mode = _n(ref.mode)
    values = np.stack([mode, mode + np.array([0.0, 1e-2])])
    np.testing.assert_array_equal(
        xp.back(dist.log_prob(xp.to(values))), _n(ref.log_prob(_t(values)))
    )
    assert (dist.batch_shape, dist.event_shape) == (tuple(ref.batch_shape), tuple(ref.event_shape))
    with pytest.raises(AttributeError):
        _ = dist.mean
    draws = xp.back(dist.sample((2,), rng=_rng(xp)))
    _close(draws, np.broadcast_to(mode, (2, 3, 2)))


# -- Categorical -----------------------------------------------------------------------


def _logits(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


@pytest.mark.parametrize("given", ["logits", "probs"])
def test_categorical_matches_torch(xp, given):
    logits = _logits(22, (3, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    param = logits if given == "logits" else 7.0 * probs  # unnormalised weights
    dist = Categorical(**{given: xp.to(param)})
    ref = D.Categorical(**{given: _t(param)})
    value = np.array([[0, 4, 2], [1, 1, 3]])  # sample dims broadcast over the batch
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    _close(xp.back(dist.probs), _n(ref.probs))
    _close(xp.back(dist.logits), _n(ref.logits))
    np.testing.assert_array_equal(xp.back(dist.mode), _n(ref.mode))
    assert np.isnan(xp.back(dist.mean)).all() and xp.back(dist.mean).shape == (3,)
    assert (dist.batch_shape, dist.event_shape) == ((3,), ())
    assert (dist.has_rsample, dist.has_entropy) == (False, True)


def test_categorical_out_of_range_index_has_zero_probability(xp):
    dist = Categorical(logits=xp.to(np.zeros(3)))
    got = xp.back(dist.log_prob(xp.to(np.array([-1, 0, 3]))))
    assert np.isneginf(got[[0, 2]]).all()
    _close(got[1], -math.log(3.0))


def test_categorical_extreme_logits(xp):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, 1e4], [0.0, 0.0, 0.0]])
    dist, ref = Categorical(logits=xp.to(logits)), D.Categorical(logits=_t(logits))
    value = np.array([[0, 1, 2], [2, 0, 1]])
    got = xp.back(dist.log_prob(xp.to(value)))
    assert np.all(np.isfinite(got))
    _close(got, _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))


def test_categorical_zero_probabilities(xp):
    probs = np.array([[0.0, 0.3, 0.7], [0.5, 0.0, 0.5], [0.0, 0.0, 1.0]])
    dist, ref = Categorical(probs=xp.to(probs)), D.Categorical(probs=_t(probs))
    entropy = xp.back(dist.entropy())
    assert np.all(np.isfinite(entropy))
    _close(entropy, _n(ref.entropy()), 1e-12, 1e-12)
    lp = xp.back(dist.log_prob(xp.to(np.array([0, 1, 0]))))
    assert np.isneginf(lp).all()  # torch clamps these to log(eps); -inf is exact
    _close(xp.back(dist.log_prob(xp.to(np.array([1, 2, 2])))), np.log([0.3, 0.5, 1.0]))


def test_categorical_edge_gradients_are_finite_and_match_torch():
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 3.0, 1e4], [0.1, -0.2, 0.3]])
    probs = np.array([[0.0, 0.3, 0.7], [0.5, 0.0, 0.5], [0.2, 0.2, 0.6]])
    value = torch.tensor([1, 0, 2])
    for given, param, compare in (("logits", logits, None), ("probs", probs, probs > 0)):
        grads = []
        for make in (Categorical, D.Categorical):
            p_ = _torch_param(param)
            dist = make(**{given: p_})
            objective = dist.entropy().sum() + dist.log_prob(value).sum()
            grads.append(torch.autograd.grad(objective, p_)[0])
        ours, theirs = _n(grads[0]), _n(grads[1])
        assert np.all(np.isfinite(ours))
        mask = np.ones_like(ours, bool) if compare is None else compare
        _close(ours[mask], theirs[mask], 1e-9, 1e-9)  # at p = 0 torch's log(eps) clamp differs


# -- OneHotCategorical -----------------------------------------------------------------


def test_one_hot_categorical_matches_torchrl(xp):
    logits = _logits(23, (4, 5))
    dist, ref = OneHotCategorical(logits=xp.to(logits)), trl.OneHotCategorical(logits=_t(logits))
    value = np.eye(5)[np.array([[0, 3, 4, 1], [2, 2, 0, 4]])]
    _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    _close(xp.back(dist.mode), _n(ref.mode))  # no ties here
    _close(xp.back(dist.deterministic_sample), _n(ref.deterministic_sample))
    _close(xp.back(dist.mean), _n(ref.probs))
    assert (dist.batch_shape, dist.event_shape, dist.num_samples) == ((4,), (5,), 5)
    assert dist.has_rsample and dist.has_entropy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_hot_categorical_draws(xp, dtype):
    logits = _logits(24, (3, 4)).astype(dtype)
    dist = OneHotCategorical(logits=xp.to(logits))
    for draws in (dist.sample((50,), rng=_rng(xp)), dist.rsample((50,), rng=_rng(xp))):
        draws = xp.back(draws)
        assert draws.shape == (50, 3, 4) and draws.dtype == np.dtype(dtype)
        assert set(np.unique(draws)) <= {0.0, 1.0}
        np.testing.assert_array_equal(draws.sum(-1), 1.0)


@pytest.mark.parametrize("method", ["PassThrough", "RelaxedOneHot"])
def test_one_hot_rsample_gradient(method):
    logits = _logits(25, (3, 4))
    weights = torch.tensor(_logits(26, (2, 3, 4)))
    l_ = _torch_param(logits)
    dist = OneHotCategorical(logits=l_, grad_method=getattr(ReparamGradientStrategy, method))
    draws = dist.rsample((2,), rng=make_generator(27, "torch", mode="numpy"))
    ours = torch.autograd.grad((draws * weights).sum(), l_)[0]
    l_ref = _torch_param(logits)
    if method == "PassThrough":  # TorchRL's gradient does not depend on the draw
        ref = trl.OneHotCategorical(logits=l_ref)
        theirs = torch.autograd.grad((ref.rsample((2,)) * weights).sum(), l_ref)[0]
    else:  # Gumbel-softmax at temperature 1 on the generator's uniforms
        u = np.maximum(np.random.default_rng(27).random((2, 3, 4)), np.finfo(np.float64).tiny)
        soft = torch.softmax(l_ref - torch.log(-torch.log(torch.tensor(u))), dim=-1)
        theirs = torch.autograd.grad((soft * weights).sum(), l_ref)[0]
        np.testing.assert_array_equal(_n(draws), _n(soft == soft.max(-1, keepdim=True)[0]) * 1.0)
    _close(_n(ours), _n(theirs))


def test_one_hot_accepts_torchrl_grad_method():
    dist = OneHotCategorical(
        logits=np.zeros(3), grad_method=trl.ReparamGradientStrategy.RelaxedOneHot
    )
    assert dist.grad_method is ReparamGradientStrategy.RelaxedOneHot
    with pytest.raises(ValueError, match="grad_method"):
        OneHotCategorical(logits=np.zeros(3), grad_method="straight")


# -- MaskedCategorical -----------------------------------------------------------------


@pytest.mark.parametrize("given", ["logits", "probs"])
@pytest.mark.parametrize("neg_inf", [-math.inf, -1e9])
@pytest.mark.parametrize("mask_shape", ["full", "broadcast"])
def test_masked_categorical_matches_torchrl(xp, given, neg_inf, mask_shape):
    logits = _logits(28, (4, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    param = logits if given == "logits" else probs
    if mask_shape == "full":
        mask = np.random.default_rng(29).random((4, 5)) < 0.6
        mask[:, 2] = True
    else:
        mask = np.array([True, False, True, True, False])
    full_mask = np.broadcast_to(mask, (4, 5)).copy()  # TorchRL needs the full shape
    dist = MaskedCategorical(**{given: xp.to(param)}, mask=xp.to(mask), neg_inf=neg_inf)
    ref = trl.MaskedCategorical(**{given: _t(param)}, mask=_t(full_mask), neg_inf=neg_inf)
    for k in range(5):
        value = np.full(4, k)
        _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    np.testing.assert_array_equal(xp.back(dist.mode), _n(ref.mode))
    draws = xp.back(dist.sample((200,), rng=_rng(xp)))
    assert np.all(full_mask[np.arange(4), draws])


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # NumPy on the NaN row
def test_masked_categorical_all_masked_row_entropy_matches_torchrl(xp):
    logits = _logits(30, (2, 3))
    mask = np.array([[True, False, True], [False, False, False]])
    dist = MaskedCategorical(logits=xp.to(logits), mask=xp.to(mask))
    ref = trl.MaskedCategorical(logits=_t(logits), mask=_t(mask))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    assert np.isneginf(xp.back(dist.log_prob(xp.to(np.array([1, 0]))))).all()


@pytest.mark.parametrize("given", ["logits", "probs"])
def test_masked_categorical_indices_match_torchrl(xp, given):
    logits = _logits(31, (3, 6))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    param = logits if given == "logits" else probs
    indices = np.array([[0, 2, 5], [1, 2, 3], [4, 0, 1]])
    dist = MaskedCategorical(**{given: xp.to(param)}, indices=xp.to(indices))
    ref = trl.MaskedCategorical(**{given: _t(param)}, indices=_t(indices))
    for k in range(6):
        value = np.full(3, k)
        _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    _close(xp.back(dist.entropy()), _n(ref.entropy()))
    np.testing.assert_array_equal(xp.back(dist.mode), _n(ref.mode))
    draws = xp.back(dist.sample((100,), rng=_rng(xp)))
    assert all(np.isin(draws[:, i], indices[i]).all() for i in range(3))
    with pytest.raises(ValueError, match="indices"):
        _ = dist.mask


def test_masked_categorical_padded_indices(xp):
    logits = _logits(32, (2, 5))
    indices = np.array([[3, 1, -1], [0, 4, 2]])
    dist = MaskedCategorical(logits=xp.to(logits), indices=xp.to(indices), padding_value=-1)
    ref = trl.MaskedCategorical(logits=_t(logits), indices=_t(indices), padding_value=-1)
    for k in range(5):
        value = np.full(2, k)
        _close(xp.back(dist.log_prob(xp.to(value))), _n(ref.log_prob(_t(value))))
    kept = np.exp(logits[0, [3, 1]]) / np.exp(logits[0, [3, 1]]).sum()
    expected_entropy = [-(kept * np.log(kept)).sum(), _n(ref.entropy())[1]]
    _close(xp.back(dist.entropy()), expected_entropy)  # TorchRL's row 0 is NaN here
    draws = xp.back(dist.sample((200,), rng=_rng(xp)))
    assert np.isin(draws[:, 0], [3, 1]).all() and np.isin(draws[:, 1], [0, 4, 2]).all()


def test_masked_categorical_entropy_gradient_is_finite():
    logits = _torch_param(_logits(33, (3, 4)))
    mask = torch.tensor([[True, False, True, False], [False, True, True, True], [False] * 4])
    dist = MaskedCategorical(logits=logits, mask=mask)
    objective = dist.entropy().sum() + dist.log_prob(torch.tensor([0, 3, 0]))[:2].sum()
    grad = torch.autograd.grad(objective, logits)[0]
    assert torch.isfinite(grad).all()
    np.testing.assert_array_equal(_n(grad)[~mask.numpy()], 0.0)
    assert _n(dist.entropy())[2] == 0.0  # no allowed outcome: zero entropy, as TorchRL


# -- sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_draws_match_moments(xp, dtype):
    loc, scale = np.array([0.5, -2.0, 3.0]), np.array([1.0, 0.2, 3.0])
    dist = IndependentNormal(xp.to(loc.astype(dtype)), xp.to(scale.astype(dtype)))
    n = 20000
    for draws in (dist.sample((n,), rng=_rng(xp, 1)), dist.rsample((n,), rng=_rng(xp, 2))):
        draws = xp.back(draws)
        assert draws.shape == (n, 3) and draws.dtype == np.dtype(dtype)
        assert np.all(np.abs(draws.mean(0) - loc) < 5 * scale / math.sqrt(n))
        assert np.all(np.abs(draws.var(0) / scale**2 - 1.0) < 5 * math.sqrt(2.0 / n))


def test_categorical_draw_frequencies(xp):
    probs = np.array([[0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]])
    dist = Categorical(probs=xp.to(probs))
    n = 20000
    draws = xp.back(dist.sample((n,), rng=_rng(xp, 3)))
    assert draws.shape == (n, 2) and draws.dtype == np.int64
    for row in range(2):
        freq = np.bincount(draws[:, row], minlength=4) / n
        assert np.all(np.abs(freq - probs[row]) <= 5 * np.sqrt(probs[row] * (1 - probs[row]) / n))
    assert not np.any(draws[:, 0] == 1)  # zero probability: never drawn


def test_same_seed_same_draws(xp):
    loc, scale = _params(34, (3,))
    logits = _logits(35, (3, 4))
    for dist in (
        Normal(xp.to(loc), xp.to(scale)),
        TanhNormal(xp.to(loc), xp.to(scale)),
        Categorical(logits=xp.to(logits)),
        OneHotCategorical(logits=xp.to(logits)),
    ):
        first = xp.back(dist.sample((10,), rng=_rng(xp, 7)))
        np.testing.assert_array_equal(first, xp.back(dist.sample((10,), rng=_rng(xp, 7))))
        assert not np.array_equal(first, xp.back(dist.sample((10,), rng=_rng(xp, 8))))


def test_sample_shapes(xp):
    loc, scale = _params(36, (2, 3))
    dists = {
        (2, 3): [Normal(xp.to(loc), xp.to(scale)), TanhNormal(xp.to(loc), xp.to(scale))],
        (2, 3, 4): [OneHotCategorical(logits=xp.to(_logits(37, (2, 3, 4))))],
        (2,): [],
    }
    dists[(2, 3)].append(Categorical(logits=xp.to(_logits(37, (2, 3, 4)))))
    dists[(2, 3)].append(IndependentNormal(xp.to(loc), xp.to(scale)))
    dists[(2, 3)].append(Delta(xp.to(loc)))
    for shape, group in dists.items():
        for dist in group:
            assert xp.back(dist.sample(rng=_rng(xp))).shape == shape
            assert xp.back(dist.sample((5, 1), rng=_rng(xp))).shape == (5, 1, *shape)
            assert xp.back(dist.sample(4, rng=_rng(xp))).shape == (4, *shape)


def test_float32_stays_float32(xp):
    loc, scale = (a.astype(np.float32) for a in _params(38, (3,)))
    value = np.float32([0.1, -0.2, 0.3])
    for dist in (
        Normal(xp.to(loc), xp.to(scale)),
        IndependentNormal(xp.to(loc), xp.to(scale)),
        TanhNormal(xp.to(loc), xp.to(scale)),
    ):
        assert xp.back(dist.log_prob(xp.to(value))).dtype == np.float32
    logits = _logits(39, (2, 3)).astype(np.float32)
    dist = Categorical(logits=xp.to(logits))
    assert xp.back(dist.entropy()).dtype == np.float32
    assert xp.back(dist.log_prob(xp.to(np.array([0, 2])))).dtype == np.float32


# -- kl_divergence -----------------------------------------------------------------------


def test_kl_normal_matches_torch(xp):
    (lp, sp), (lq, sq) = _params(40, (3, 2)), _params(41, (3, 2))
    got = kl_divergence(Normal(xp.to(lp), xp.to(sp)), Normal(xp.to(lq), xp.to(sq)))
    _close(xp.back(got), _n(D.kl_divergence(D.Normal(_t(lp), _t(sp)), D.Normal(_t(lq), _t(sq)))))


@pytest.mark.parametrize("event_dim", [1, 2])
def test_kl_independent_normal_matches_torchrl(xp, event_dim):
    (lp, sp), (lq, sq) = _params(42, (3, 2)), _params(43, (3, 2))
    ours = kl_divergence(
        IndependentNormal(xp.to(lp), xp.to(sp), event_dim=event_dim),
        IndependentNormal(xp.to(lq), xp.to(sq), event_dim=event_dim),
    )
    theirs = D.kl_divergence(
        TorchRLIndependentNormal(_t(lp), _t(sp), event_dim=event_dim),
        TorchRLIndependentNormal(_t(lq), _t(sq), event_dim=event_dim),
    )
    _close(xp.back(ours), _n(theirs))


def test_kl_categorical_matches_torch(xp):
    p = np.array([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    q = np.array([[0.3, 0.3, 0.4], [0.2, 0.2, 0.6], [0.5, 0.25, 0.25], [0.0, 0.5, 0.5]])
    ours = xp.back(kl_divergence(Categorical(probs=xp.to(p)), Categorical(probs=xp.to(q))))
    theirs = _n(D.kl_divergence(D.Categorical(probs=_t(p)), D.Categorical(probs=_t(q))))
    assert np.isposinf(ours[3]) and np.isposinf(theirs[3])
    _close(ours[:3], theirs[:3], 1e-12, 1e-12)


def test_kl_one_hot_and_masked_match_torchrl(xp):
    lp, lq = _logits(44, (3, 4)), _logits(45, (3, 4))
    ours = kl_divergence(OneHotCategorical(logits=xp.to(lp)), OneHotCategorical(logits=xp.to(lq)))
    theirs = D.kl_divergence(
        trl.OneHotCategorical(logits=_t(lp)), trl.OneHotCategorical(logits=_t(lq))
    )
    _close(xp.back(ours), _n(theirs))
    mask = np.array([True, False, True, True])
    ours = kl_divergence(
        MaskedCategorical(logits=xp.to(lp), mask=xp.to(mask)),
        MaskedCategorical(logits=xp.to(lq), mask=xp.to(mask)),
    )
    theirs = D.kl_divergence(
        trl.MaskedCategorical(logits=_t(lp), mask=_t(mask)),
        trl.MaskedCategorical(logits=_t(lq), mask=_t(mask)),
    )
    _close(xp.back(ours), _n(theirs))


def test_kl_categorical_gradient_is_finite_with_zeros():
    p_ = _torch_param(np.array([[0.0, 0.4, 0.6], [0.5, 0.5, 0.0]]))
    q_ = _torch_param(np.array([[0.2, 0.2, 0.6], [0.5, 0.25, 0.25]]))
    kl = kl_divergence(Categorical(probs=p_), Categorical(probs=q_))
    grads = torch.autograd.grad(kl.sum(), (p_, q_))
    assert all(torch.isfinite(g).all() for g in grads)
    ref_p, ref_q = _torch_param(_n(p_)), _torch_param(_n(q_))
    ref = D.kl_divergence(D.Categorical(probs=ref_p), D.Categorical(probs=ref_q))
    _close(_n(kl), _n(ref), 1e-12, 1e-12)
    _close(_n(grads[1]), _n(torch.autograd.grad(ref.sum(), ref_q)[0]), 1e-9, 1e-9)


def test_kl_without_closed_form_raises(xp):
    loc, scale = _params(46, (3,))
    normal = Normal(xp.to(loc), xp.to(scale))
    pairs = [
        (normal, Categorical(logits=xp.to(loc))),
        (normal, IndependentNormal(xp.to(loc), xp.to(scale))),
        (normal, TanhNormal(xp.to(loc), xp.to(scale))),
    ]
    for p, q in pairs:
        with pytest.raises(NotImplementedError, match=type(q).__name__):
            kl_divergence(p, q)
    with pytest.raises(NotImplementedError, match="same box"):
        kl_divergence(
            TanhNormal(xp.to(loc), xp.to(scale)), TanhNormal(xp.to(loc), xp.to(scale), high=2.0)
        )
    loc2 = np.stack([loc, loc])
    with pytest.raises(NotImplementedError, match="event_dim"):
        kl_divergence(
            IndependentNormal(xp.to(loc2), xp.to(loc2 * 0 + 1), event_dim=1),
            IndependentNormal(xp.to(loc2), xp.to(loc2 * 0 + 1), event_dim=2),
        )


@pytest.mark.parametrize("bounds", ["default", "numbers"])
def test_kl_tanh_normal_same_box_matches_torch(xp, bounds):
    low, high = _bounds(bounds)
    (lp, sp), (lq, sq) = _params(53, (3, 2)), _params(54, (3, 2))
    ours = kl_divergence(
        TanhNormal(xp.to(lp), xp.to(sp), low=low, high=high),
        TanhNormal(xp.to(lq), xp.to(sq), low=low, high=high),
    )
    box = {"low": _as_torch(low), "high": _as_torch(high)}
    theirs = D.kl_divergence(
        trl.TanhNormal(_t(lp), _t(sp), **box), trl.TanhNormal(_t(lq), _t(sq), **box)
    )
    _close(xp.back(ours), _n(theirs))


# -- entropy_estimate --------------------------------------------------------------------


class _NoClosedForm(IndependentNormal):
    has_entropy = False


def test_entropy_estimate_closed_form(xp):
    loc, scale = _params(47, (2, 3))
    dist = IndependentNormal(xp.to(loc), xp.to(scale))
    ref = TorchRLIndependentNormal(_t(loc), _t(scale))
    _close(xp.back(entropy_estimate(dist, 4)), _n(ref.entropy()))
    cat = Categorical(logits=xp.to(_logits(48, (2, 5))))
    _close(xp.back(entropy_estimate(cat, 4, rng=_rng(xp))), xp.back(cat.entropy()))


def test_entropy_estimate_monte_carlo_matches_analytic(xp):
    loc, scale = _params(49, (2, 3))
    dist = _NoClosedForm(xp.to(loc), xp.to(scale))
    n = 8000
    estimate = xp.back(entropy_estimate(dist, n, rng=_rng(xp, 50)))
    analytic = _n(TorchRLIndependentNormal(_t(loc), _t(scale)).entropy())
    assert estimate.shape == (2,)
    # -log p(x) of a d-dim Gaussian has variance d/2
    assert np.all(np.abs(estimate - analytic) < 5 * math.sqrt(3 / 2 / n))


def test_entropy_estimate_tanh_normal_matches_torchrl_ppo(fixed_noise):
    """TorchRL's PPO ``_get_entropy``: ``-mean_n log p`` of ``rsample_and_log_prob((n,))``."""
    loc, scale = _params(51, (3, 2))
    loc[0] = [20.0, -20.0]  # saturated: scored at the pre-tanh draw, not at atanh(action)
    n = 16
    fixed_noise(np.random.default_rng(52).standard_normal((n, 3, 2)))
    results = []
    for ours in (True, False):
        l_, s_ = _torch_param(loc), _torch_param(scale)
        if ours:
            entropy = entropy_estimate(TanhNormal(l_, s_), n, rng=_numpy_rng(52))
        else:
            entropy = -trl.TanhNormal(l_, s_).rsample_and_log_prob((n,))[1].mean(0)
        results.append((entropy, *torch.autograd.grad(entropy.sum(), (l_, s_))))
    for a, b in zip(*results):
        _close(_n(a), _n(b), 1e-9, 1e-9)


def test_entropy_estimate_argument_errors(xp):
    dist = TanhNormal(xp.to(np.zeros(3)), xp.to(np.ones(3)))
    with pytest.raises(TypeError, match="rng"):
        entropy_estimate(dist, 4)
    with pytest.raises(ValueError, match="n_samples"):
        entropy_estimate(dist, 0, rng=_rng(xp))


# -- JAX: gradients through the straight-through tricks -----------------------------------


def test_jax_gradients_at_bounds_match_torchrl():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    loc = np.array([[0.3, -0.2, 4.0], [-6.0, 0.0, 25.0]])
    scale = np.array([[0.5, 1.0, 0.2], [2.0, 0.1, 1.0]])
    value = np.array([[-2.0, 3.0, 3.0], [-2.0, 0.4, 2.9999999]])

    def total(l_, s_, v_):
        return jnp.sum(TanhNormal(l_, s_, low=-2.0, high=3.0).log_prob(v_))

    ours = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(*map(jnp.asarray, (loc, scale, value)))
    l_, s_, v_ = _torch_param(loc), _torch_param(scale), _torch_param(value)
    lp = trl.TanhNormal(l_, s_, low=_as_torch(-2.0), high=_as_torch(3.0)).log_prob(v_)
    theirs = torch.autograd.grad(lp.sum(), (l_, s_, v_))
    for a, b in zip(ours, theirs):
        assert np.all(np.isfinite(np.asarray(a)))
        _close(np.asarray(a), _n(b), 1e-8, 1e-8)  # d/dvalue is ~1e8 next to the bound


# -- bad input -----------------------------------------------------------------------------


def test_bad_parameters_raise(xp):
    loc = xp.to(np.zeros(3))
    with pytest.raises(ValueError, match=r"loc.*scale"):
        Normal(loc, xp.to(np.ones(4)))
    with pytest.raises(TypeError, match="loc"):
        Normal(xp.to(np.zeros(3, dtype=np.int64)), 1.0)
    with pytest.raises(TypeError, match="loc"):
        Normal([0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="event_dim"):
        IndependentNormal(loc, 1.0, event_dim=2)
    with pytest.raises(ValueError, match="event_dims"):
        TanhNormal(loc, 1.0, event_dims=3)
    with pytest.raises(ValueError, match="high"):
        TanhNormal(loc, 1.0, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="high"):
        TanhDelta(loc, low=2.0, high=-1.0)
    with pytest.raises(ValueError, match="logits and probs"):
        Categorical()
    with pytest.raises(ValueError, match="logits and probs"):
        Categorical(logits=loc, probs=loc)
    with pytest.raises(ValueError, match="logits"):
        Categorical(logits=_to(xp, 0.0))
    with pytest.raises(TypeError, match="probs"):
        Categorical(probs=xp.to(np.ones(3, dtype=np.int64)))


def test_bad_masks_raise(xp):
    logits = xp.to(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="mask and indices"):
        MaskedCategorical(logits=logits)
    with pytest.raises(ValueError, match="mask and indices"):
        MaskedCategorical(
            logits=logits, mask=xp.to(np.ones(3, bool)), indices=xp.to(np.zeros(1, np.int64))
        )
    with pytest.raises(TypeError, match="mask"):
        MaskedCategorical(logits=logits, mask=xp.to(np.ones(3)))
    with pytest.raises(ValueError, match="mask"):
        MaskedCategorical(logits=logits, mask=xp.to(np.ones(4, bool)))
    with pytest.raises(TypeError, match="indices"):
        MaskedCategorical(logits=logits, indices=xp.to(np.zeros(2)))


def test_mixed_backends_raise():
    with pytest.raises(TypeError, match="different backends"):
        Normal(np.zeros(3), torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="different backends"):
        TanhNormal(torch.zeros(3), torch.ones(3), low=np.full(3, -1.0))


def test_sampling_needs_a_generator_of_the_same_backend(xp):
    dist = Normal(xp.to(np.zeros(3)), 1.0)
    with pytest.raises(TypeError, match="rng"):
        dist.sample((2,))
    with pytest.raises(TypeError, match="rng"):
        dist.rsample((2,))
    with pytest.raises(TypeError, match="Generator"):
        dist.sample((2,), rng=np.random.default_rng(0))
    other = "torch" if xp.name == "numpy" else "numpy"
    with pytest.raises(TypeError, match="backend"):
        dist.sample((2,), rng=make_generator(0, other))
    with pytest.raises(ValueError, match="sample_shape"):
        dist.sample((-1,), rng=_rng(xp))
    with pytest.raises(TypeError, match="sample_shape"):
        dist.sample(("a",), rng=_rng(xp))


def test_rsample_without_reparameterisation_raises(xp):
    dist = Categorical(logits=xp.to(np.zeros(3)))
    with pytest.raises(NotImplementedError, match="has_rsample"):
        dist.rsample((2,), rng=_rng(xp))
    masked = MaskedCategorical(logits=xp.to(np.zeros(3)), mask=xp.to(np.ones(3, bool)))
    with pytest.raises(NotImplementedError):
        masked.rsample(rng=_rng(xp))
