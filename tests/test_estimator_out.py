"""``out=`` on the estimator functions: results written into the caller's buffers.

The buffers come back as the very objects passed in, hold what the call without ``out``
returns, and bad buffers get errors naming the argument.
"""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl.objectives.value import functional as F

SHAPE = (6, 11, 1)


def _inputs(shape=SHAPE, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    floats = {k: rng.standard_normal(shape).astype(dtype)
              for k in ("state_value", "next_state_value", "reward")}
    floats["log_pi"] = (0.3 * rng.standard_normal(shape)).astype(dtype)
    floats["log_mu"] = (0.3 * rng.standard_normal(shape)).astype(dtype)
    done = rng.random(shape) < 0.2
    return floats, done, done & (rng.random(shape) < 0.5)


def _call(name, x, done, term, **kw):
    """Call estimator ``name`` on the inputs ``x`` with the keywords ``kw``."""
    v, nv, r = x["state_value"], x["next_state_value"], x["reward"]
    if name == "gae":
        return F.generalized_advantage_estimate(0.99, 0.95, v, nv, r, done, term, **kw)
    if name == "td_lambda_return":
        return F.td_lambda_return_estimate(0.99, 0.95, nv, r, done, term, **kw)
    if name == "td_lambda_advantage":
        return F.td_lambda_advantage_estimate(0.99, 0.95, v, nv, r, done, term, **kw)
    if name == "td1_advantage":
        return F.td1_advantage_estimate(0.99, v, nv, r, done, term, **kw)
    if name == "vtrace":
        return F.vtrace_advantage_estimate(0.99, x["log_pi"], x["log_mu"], v, nv, r, done,
                                           term, **kw)
    if name == "reward2go":
        return F.reward2go(r, done, 0.9, **kw)
    raise ValueError(name)


TWO = {"gae", "vtrace"}
NAMES = ["gae", "td_lambda_return", "td_lambda_advantage", "td1_advantage", "vtrace",
         "reward2go"]


def _buffers(name, like, empty):
    outs = tuple(empty(like) for _ in range(2 if name in TWO else 1))
    return outs if name in TWO else outs[0]


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("kernel", ["auto", "reference"])
@pytest.mark.parametrize("name", NAMES)
def test_numpy_out_written_and_returned(name, kernel):
    x, done, term = _inputs()
    want = _call(name, x, done, term, kernel=kernel)
    out = _buffers(name, x["reward"], lambda a: np.full_like(a, np.nan))
    got = _call(name, x, done, term, kernel=kernel, out=out)
    assert got is out
    for o, w in zip(_as_tuple(out), _as_tuple(want), strict=True):
        np.testing.assert_array_equal(o, w)


@pytest.mark.parametrize("name", ["gae", "vtrace", "td_lambda_return"])
def test_out_with_time_dim_zero(name):
    x, done, term = _inputs(shape=(9, 4, 2))
    xt = {k: np.ascontiguousarray(np.swapaxes(v, 0, 1)) for k, v in x.items()}
    dt, tt = (np.ascontiguousarray(np.swapaxes(m, 0, 1)) for m in (done, term))
    want = _call(name, x, done, term)
    out = _buffers(name, xt["reward"], np.empty_like)
    got = _call(name, xt, dt, tt, time_dim=0, out=out)
    assert got is out
    for o, w in zip(_as_tuple(out), _as_tuple(want), strict=True):
        np.testing.assert_allclose(np.swapaxes(o, 0, 1), w, rtol=1e-6, atol=1e-6)


def test_out_rolling_gamma_false_is_copied():
    x, done, term = _inputs()
    gamma = np.full(SHAPE, 0.9, np.float32)
    args = (gamma, 0.95, x["next_state_value"], x["reward"], done, term, False)
    want = F.td_lambda_return_estimate(*args)
    out = np.empty_like(want)
    assert F.td_lambda_return_estimate(*args, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize(
    ("make_out", "error", "match"),
    [
        (lambda a: np.empty_like(a), TypeError, "tuple of 2"),
        (lambda a: (np.empty(a.shape, np.float64), np.empty_like(a)), TypeError,
         r"out\[0\] must have the result dtype"),
        (lambda a: (np.empty_like(a), np.empty(a.shape[:2], a.dtype)), ValueError,
         r"out\[1\] must have the inputs' shape"),
        (lambda a: (np.empty_like(a), [[0.0]]), TypeError, r"out\[1\] must be a numpy array"),
        (lambda a: (np.empty((*a.shape[:2], 2), a.dtype)[..., :1], np.empty_like(a)),
         ValueError, r"out\[0\] must be C-contiguous"),
    ],
)
def test_out_rejected(make_out, error, match):
    x, done, term = _inputs()
    with pytest.raises(error, match=match):
        _call("gae", x, done, term, out=make_out(x["reward"]))


def test_out_one_output_rejects_tuple():
    x, done, term = _inputs()
    out = (np.empty_like(x["reward"]),)
    with pytest.raises(TypeError, match="one array"):
        _call("reward2go", x, done, term, out=out)


def test_out_same_array_twice_rejected():
    x, done, term = _inputs()
    buf = np.empty_like(x["reward"])
    with pytest.raises(ValueError, match="distinct"):
        _call("vtrace", x, done, term, out=(buf, buf))


def test_out_does_not_touch_inputs():
    x, done, term = _inputs()
    before = {k: v.copy() for k, v in x.items()}
    _call("gae", x, done, term, out=(np.empty_like(x["reward"]), np.empty_like(x["reward"])))
    for k, v in x.items():
        np.testing.assert_array_equal(v, before[k])


# -- torch --------------------------------------------------------------------------------
torch = pytest.importorskip("torch")


def _torch(x, done, term):
    return ({k: torch.from_numpy(v) for k, v in x.items()}, torch.from_numpy(done),
            torch.from_numpy(term))


@pytest.mark.parametrize("name", NAMES)
def test_torch_out_written_and_returned(name):
    x, done, term = _torch(*_inputs())
    want = _call(name, x, done, term)
    out = _buffers(name, x["reward"], lambda a: torch.full_like(a, float("nan")))
    assert _call(name, x, done, term, out=out) is out
    for o, w in zip(_as_tuple(out), _as_tuple(want), strict=True):
        torch.testing.assert_close(o, w, rtol=0, atol=0)


def test_torch_out_with_storage_offset():
    x, done, term = _torch(*_inputs())
    want = _call("reward2go", x, done, term)
    big = torch.zeros((2, *SHAPE))
    out = big[1]  # a contiguous view that starts inside a larger storage
    assert _call("reward2go", x, done, term, out=out) is out
    torch.testing.assert_close(big[1], want, rtol=0, atol=0)
    assert bool((big[0] == 0).all())


def test_torch_out_refused_with_grad():
    x, done, term = _torch(*_inputs())
    x["state_value"] = x["state_value"].clone().requires_grad_(True)
    out = (torch.empty(SHAPE), torch.empty(SHAPE))
    with pytest.raises(ValueError, match="requires grad"):
        _call("gae", x, done, term, out=out)


def test_out_mixed_backends_rejected():
    x, done, term = _inputs()
    out = (torch.empty(SHAPE), torch.empty(SHAPE))
    with pytest.raises(TypeError, match=r"out\[0\] must be a numpy array"):
        _call("gae", x, done, term, out=out)


def test_array_api_strict_out_is_copied_into():
    xp = pytest.importorskip("array_api_strict")
    x, done, term = _inputs()
    want = _call("gae", x, done, term)
    xs = {k: xp.asarray(v) for k, v in x.items()}
    out = (xp.zeros(SHAPE, dtype=xp.float32), xp.zeros(SHAPE, dtype=xp.float32))
    got = _call("gae", xs, xp.asarray(done), xp.asarray(term), out=out)
    assert got is out
    for o, w in zip(out, want, strict=True):
        np.testing.assert_allclose(np.asarray(o), w, rtol=1e-6, atol=1e-6)
