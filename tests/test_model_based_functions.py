"""DreamerV3's pure functions: ``symlog``/``symexp``, the two-hot code over symexp bins,
unimix categoricals and the KL balancing, against TorchRL 0.14.1 (values and torch
gradients), hand-computed NumPy formulas, every backend, invariants and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arrayrl.modules.functional import symexp, symlog
from arrayrl.modules.model_based import (
    _default_bins,
    _unimix_probs,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)
from arrayrl.objectives.dreamer_v3 import categorical_kl_balanced, categorical_kl_terms

torch = pytest.importorskip("torch")
TR = pytest.importorskip("torchrl.objectives.dreamer_v3")
from torchrl.modules import functional as TF  # noqa: E402
from torchrl.modules.models import model_based as TM  # noqa: E402

SMALL = np.array([-1.0, 0.0, 1.0])
DTYPES = [torch.float32, torch.float64]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _grads(value: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    weight = torch.cos(torch.arange(value.numel(), dtype=value.dtype)).reshape(value.shape)
    found = torch.autograd.grad((value * weight).sum(), inputs, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found)]


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    """``max |a - b| / max(1, max |b|)`` within the dtype's tolerance (the
    conformance suite's measure: two-hot values span 1e-8 ... 5e8)."""
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = max(1.0, float(b.detach().abs().max()))
    assert float((a - b).detach().abs().max()) / scale <= tol


# -- against TorchRL --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["symlog", "symexp"])
def test_symlog_symexp_match_torchrl(name: str, dtype: torch.dtype) -> None:
    x = torch.tensor([-30.0, -2.0, -1e-5, 0.0, 1e-5, 0.5, 7.0], dtype=dtype)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = {"symlog": symlog, "symexp": symexp}[name](ours)
    t = getattr(TF, name)(theirs)
    assert a.dtype == dtype
    _close(a, t, dtype)
    _close(_grads(a, [ours])[0], _grads(t, [theirs])[0], dtype)


@pytest.mark.parametrize("name", ["symlog", "symexp"])
def test_gradient_at_zero_is_one(name: str) -> None:
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    ({"symlog": symlog, "symexp": symexp}[name])(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("num_bins", [2, 3, 6, 41, 255])
def test_default_bins_are_torchrl_bits_on_torch(num_bins: int) -> None:
    ours = _default_bins(num_bins, backend="torch")
    assert ours.dtype == torch.float32  # TorchRL's default dtype, not the inputs'
    assert torch.equal(ours, TM._default_bins(num_bins))
    ours64 = _default_bins(num_bins, backend="torch", dtype=torch.float64)
    assert torch.equal(ours64, TM._default_bins(num_bins, dtype=torch.float64))
    host = np.asarray(_default_bins(num_bins, dtype=np.float64))
    np.testing.assert_allclose(host, ours64.numpy(), rtol=1e-14)
    np.testing.assert_array_equal(host, -host[::-1])  # exactly antisymmetric


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_bins", [5, 6, 255])
def test_two_hot_functions_match_torchrl(num_bins: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(num_bins)
    bins = TM._default_bins(num_bins).to(dtype)
    x = torch.sign(torch.randn(4, 6, generator=gen)) * torch.expm1(
        21 * torch.rand(4, 6, generator=gen)
    )
    x = x.to(dtype)
    x[0, :4] = torch.stack([bins[0], bins[-1], bins[1], 3 * bins[-1]])  # ties, beyond
    logits = 2 * torch.randn(4, 6, num_bins, generator=gen, dtype=dtype)
    cases = [
        (two_hot_encode, TM.two_hot_encode, (x,), (bins,)),
        (two_hot_decode, TM.two_hot_decode, (logits,), (bins,)),
        (two_hot_cross_entropy, TM.two_hot_cross_entropy, (logits, x[..., None]), (bins,)),
    ]
    for ours_fn, theirs_fn, diff_args, rest in cases:
        ours = [a.clone().requires_grad_() for a in diff_args]
        theirs = [a.clone().requires_grad_() for a in diff_args]
        a, t = ours_fn(*ours, *rest), theirs_fn(*theirs, *rest)
        assert a.shape == t.shape and a.dtype == t.dtype
        _close(a, t, dtype)
        for ga, gt in zip(_grads(a, ours), _grads(t, theirs)):
            _close(ga, gt, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs", [{}, {"free_nats": 0.0, "unimix": 0.0}, {"free_nats": 3.0, "unimix": 0.1}]
)
def test_kl_terms_match_torchrl(kwargs: dict, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    post = 2 * torch.randn(5, 4, 6, generator=gen, dtype=dtype)
    prior = post + torch.randn(5, 4, 6, generator=gen, dtype=dtype)
    ours = [post.clone().requires_grad_(), prior.clone().requires_grad_()]
    theirs = [post.clone().requires_grad_(), prior.clone().requires_grad_()]
    for a, t in zip(
        categorical_kl_terms(*ours, **kwargs), TR.categorical_kl_terms(*theirs, **kwargs)
    ):
        _close(a, t, dtype)
        for ga, gt in zip(_grads(a, ours), _grads(t, theirs)):
            _close(ga, gt, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs", [{}, {"alpha": 0.3, "free_bits": 0.5}, {"alpha": 1.0, "free_bits": 0.0}]
)
def test_kl_balanced_matches_torchrl(kwargs: dict, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    post = 2 * torch.randn(5, 4, 6, generator=gen, dtype=dtype)
    prior = post + torch.randn(5, 4, 6, generator=gen, dtype=dtype)
    ours = [post.clone().requires_grad_(), prior.clone().requires_grad_()]
    theirs = [post.clone().requires_grad_(), prior.clone().requires_grad_()]
    a = categorical_kl_balanced(*ours, **kwargs)
    t = TR.categorical_kl_balanced(*theirs, **kwargs)
    _close(a, t, dtype)
    for ga, gt in zip(_grads(a, ours), _grads(t, theirs)):
        _close(ga, gt, dtype)


def test_dynamics_term_trains_only_the_prior() -> None:
    post = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    prior = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    dynamics, representation = categorical_kl_terms(post, prior, free_nats=0.0)
    g_post, g_prior = torch.autograd.grad(dynamics, [post, prior], allow_unused=True)
    assert g_post is None and g_prior.abs().sum() > 0
    g_post, g_prior = torch.autograd.grad(representation, [post, prior], allow_unused=True)
    assert g_prior is None and g_post.abs().sum() > 0


# -- hand-computed NumPy formulas ---------------------------------------------------------------
def test_symlog_formula() -> None:
    x = np.array([-100.0, -0.5, 0.0, 3.0])
    np.testing.assert_allclose(symlog(x), np.sign(x) * np.log(1 + np.abs(x)), rtol=1e-15)
    np.testing.assert_allclose(symexp(x), np.sign(x) * (np.exp(np.abs(x)) - 1), rtol=1e-14)


def test_two_hot_encode_by_hand() -> None:
    x = np.array([0.25, -1.0, 0.0, 1.0, 7.0, -3.0, -0.5])
    expected = np.array(
        [
            [0.0, 0.75, 0.25],
            [1.0, 0.0, 0.0],  # on a bin: that bin
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],  # the top bin: the top pair with weight 1 above
            [0.0, 0.0, 1.0],  # beyond: saturates
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
        ]
    )
    np.testing.assert_allclose(two_hot_encode(x, SMALL), expected, atol=1e-15)


def test_two_hot_encode_uneven_bins_by_hand() -> None:
    bins = np.array([-4.0, 0.0, 1.0, 11.0])
    out = two_hot_encode(np.array([2.0, -1.0]), bins)
    np.testing.assert_allclose(out, [[0, 0, 0.9, 0.1], [0.25, 0.75, 0, 0]], atol=1e-15)


def test_two_hot_decode_and_cross_entropy_by_hand() -> None:
    logits = np.array([[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(two_hot_decode(logits, SMALL), _softmax(logits) @ SMALL, rtol=1e-14)
    ce = two_hot_cross_entropy(np.zeros((2, 3)), np.array([-0.5, 0.5]), SMALL)
    np.testing.assert_allclose(ce, [math.log(3)] * 2, rtol=1e-15)


def test_uniform_probabilities_decode_to_exactly_zero() -> None:
    for n in (254, 255):
        bins = _default_bins(n, dtype=np.float64)
        assert float(two_hot_decode(np.zeros((2, n)), bins)[0]) == 0.0


def test_unimix_by_hand() -> None:
    z = np.array([[1.0, -2.0, 0.5]])
    np.testing.assert_allclose(_unimix_probs(z, 0.1), 0.9 * _softmax(z) + 0.1 / 3, rtol=1e-14)


def test_kl_terms_and_balanced_by_hand() -> None:
    rng = np.random.default_rng(3)
    post, prior = rng.standard_normal((2, 3, 5, 4))
    q = 0.99 * _softmax(post) + 0.01 / 4
    p = 0.99 * _softmax(prior) + 0.01 / 4
    kl = (q * (np.log(q) - np.log(p))).sum((-1, -2))
    dynamics, representation = categorical_kl_terms(post, prior, free_nats=0.5)
    np.testing.assert_allclose([dynamics, representation], [np.maximum(kl, 0.5).mean()] * 2)
    q, p = np.maximum(_softmax(post), 1e-8), np.maximum(_softmax(prior), 1e-8)
    per = np.maximum((q * (np.log(q) - np.log(p))).sum(-1), 0.2).mean()
    np.testing.assert_allclose(categorical_kl_balanced(post, prior, 0.7, 0.2), per, rtol=1e-14)


# -- every backend ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_functions_on_every_backend(xp, dtype) -> None:
    if xp.name == "jax":  # eager JAX compiles each op anew: ~15 s here, over the CI budget
        pytest.skip("JAX runs these functions in the conformance suite's core cases")
    rng = np.random.default_rng(4)
    bins = _default_bins(41, dtype=np.float64).astype(dtype)
    x = (np.sign(rng.standard_normal(12)) * np.expm1(rng.uniform(0, 21, 12))).astype(dtype)
    logits = rng.standard_normal((3, 41)).astype(dtype)
    post, prior = rng.standard_normal((2, 3, 2, 5)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    checks = [
        (symlog, (x,)),
        (symexp, (np.clip(x, -5, 5),)),
        (two_hot_encode, (x, bins)),
        (two_hot_decode, (logits, bins)),
        (two_hot_cross_entropy, (logits, x[:3], bins)),
        (categorical_kl_balanced, (post, prior)),
        (lambda a, b: categorical_kl_terms(a, b)[0], (post, prior)),
    ]
    for fn, args in checks:
        expected = np.asarray(fn(*(a.astype(np.float64) for a in args)))
        got = xp.back(fn(*(xp.to(a) for a in args)))
        assert got.dtype == dtype, fn
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got / scale, expected / scale, atol=tol, rtol=0)


# -- invariants -------------------------------------------------------------------------------
_FLOATS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=_FLOATS))
def test_symexp_inverts_symlog(x: np.ndarray) -> None:
    np.testing.assert_allclose(symexp(symlog(x)), x, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(-1e8, 1e8)))
def test_decode_inverts_encode_within_the_support(x: np.ndarray) -> None:
    bins = _default_bins(255, dtype=np.float64)
    code = two_hot_encode(x, bins)
    assert (code >= 0).all()
    np.testing.assert_allclose(code.sum(-1), 1.0, rtol=1e-12)
    with np.errstate(divide="ignore"):
        decoded = two_hot_decode(np.log(code), bins)
    np.testing.assert_allclose(decoded, x, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 2**16),
    st.floats(0.0, 1.0),
    st.floats(0.0, 3.0),
)
def test_kl_losses_are_at_least_the_floor(seed: int, alpha: float, floor: float) -> None:
    rng = np.random.default_rng(seed)
    post, prior = 3 * rng.standard_normal((2, 4, 3, 5))
    assert categorical_kl_balanced(post, prior, alpha, floor) >= floor - 1e-12
    assert min(categorical_kl_terms(post, prior, free_nats=floor)) >= floor


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_errors() -> None:
    with pytest.raises(TypeError, match="symlog: value must be a floating"):
        symlog(np.arange(3))
    with pytest.raises(TypeError, match="must be an array"):
        symexp(1.0)
    with pytest.raises(TypeError, match="x must be a floating"):
        two_hot_encode(np.arange(3), SMALL)
    with pytest.raises(ValueError, match="bins must be one-dimensional"):
        two_hot_encode(np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="last axis of logits"):
        two_hot_decode(np.zeros((2, 4)), SMALL)
    with pytest.raises(ValueError, match=r"target must have shape \(2,\)"):
        two_hot_cross_entropy(np.zeros((2, 3)), np.zeros((3,)), SMALL)
    with pytest.raises(ValueError, match="unimix"):
        categorical_kl_terms(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), unimix=1.0)
    with pytest.raises(ValueError, match="free_nats"):
        categorical_kl_terms(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), free_nats=-1.0)
    with pytest.raises(ValueError, match="same shape"):
        categorical_kl_balanced(np.zeros((1, 2, 3)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="num_categoricals, num_classes"):
        categorical_kl_terms(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="alpha"):
        categorical_kl_balanced(np.zeros((2, 3)), np.zeros((2, 3)), alpha=1.5)
    with pytest.raises(ValueError, match="num_bins must be at least 2"):
        _default_bins(1)


def test_numpy_bins_serve_torch_values() -> None:
    x = torch.tensor([0.25, -2.0], dtype=torch.float32)
    out = two_hot_encode(x, SMALL)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, TM.two_hot_encode(x, torch.from_numpy(SMALL).float()))


def test_inputs_are_not_written() -> None:
    x = np.array([5.0, -9.0, 0.3])
    before = x.copy()
    two_hot_encode(x, SMALL)
    np.testing.assert_array_equal(x, before)
