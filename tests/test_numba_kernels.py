"""Tests of the Numba CPU scan kernels (``arrayrl.backends._numba_cpu``).

Every kernel is compared with an oracle written straight from the recurrences: a plain
loop over time, vectorised over the ``[N, F]`` columns, run in float64 (or in the
kernel's dtype, to check that nothing is upcast).
"""

from __future__ import annotations

import numpy as np
import pytest
from arrayrl.backends import _numba_cpu as K

# ---------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------


def _flag(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return x.astype(dtype)


def oracle_linear_scan(a, b, init):
    steps = a.shape[1]
    y = np.empty(a.shape, a.dtype)
    carry = init
    for t in reversed(range(steps)):
        carry = a[:, t] + b[:, t] * carry
        y[:, t] = carry
    return y


def oracle_linear_scan_adjoint(b, g):
    steps = g.shape[1]
    u = np.empty(g.shape, g.dtype)
    if steps == 0:
        return u
    carry = g[:, 0]
    u[:, 0] = carry
    for t in range(1, steps):
        carry = g[:, t] + b[:, t - 1] * carry
        u[:, t] = carry
    return u


def oracle_gae(gamma, lmbda, value, next_value, reward, done, terminated):
    dtype = value.dtype
    one = dtype.type(1)
    nd, nt = one - _flag(done, dtype), one - _flag(terminated, dtype)
    adv = np.empty(value.shape, dtype)
    carry = np.zeros((value.shape[0], value.shape[2]), dtype)
    for t in reversed(range(value.shape[1])):
        delta = reward[:, t] + gamma[:, t] * nt[:, t] * next_value[:, t] - value[:, t]
        carry = delta + gamma[:, t] * lmbda[:, t] * nd[:, t] * carry
        adv[:, t] = carry
    return adv, adv + value


def oracle_td_lambda(gamma, lmbda, next_value, reward, done, terminated):
    dtype = next_value.dtype
    one = dtype.type(1)
    d, nt = _flag(done, dtype), one - _flag(terminated, dtype)
    nv = next_value * nt
    ret = np.empty(next_value.shape, dtype)
    steps = next_value.shape[1]
    if steps == 0:
        return ret
    g = nv[:, steps - 1]
    for t in reversed(range(steps)):
        g = g * (one - d[:, t]) + nv[:, t] * d[:, t]
        ret[:, t] = reward[:, t] + gamma[:, t] * ((one - lmbda[:, t]) * nv[:, t] + lmbda[:, t] * g)
        g = ret[:, t]
    return ret


def oracle_vtrace(gamma, log_pi, log_mu, value, next_value, reward, done, terminated,
                  rho_thresh, c_thresh):
    dtype = value.dtype
    one = dtype.type(1)
    nd, nt = one - _flag(done, dtype), one - _flag(terminated, dtype)
    rho = np.exp(log_pi - log_mu)
    rho_bar = np.minimum(rho, rho_thresh)
    c_bar = np.minimum(rho, c_thresh)
    steps = value.shape[1]
    vs = np.empty(value.shape, dtype)
    adv = np.empty(value.shape, dtype)
    acc = np.zeros((value.shape[0], value.shape[2]), dtype)
    for t in reversed(range(steps)):
        delta = rho_bar[:, t] * (reward[:, t] + gamma[:, t] * nt[:, t] * next_value[:, t]
                                 - value[:, t])
        acc = delta + gamma[:, t] * nd[:, t] * c_bar[:, t] * acc
        vs[:, t] = acc + value[:, t]
    for t in range(steps):
        if t == steps - 1:
            next_vs = next_value[:, t]
        else:
            next_vs = np.where(done[:, t], next_value[:, t], vs[:, t + 1])
        adv[:, t] = rho_bar[:, t] * (reward[:, t] + gamma[:, t] * nt[:, t] * next_vs
                                     - value[:, t])
    return adv, vs


def oracle_reward2go(gamma, reward, done):
    dtype = reward.dtype
    nd = dtype.type(1) - _flag(done, dtype)
    out = np.empty(reward.shape, dtype)
    carry = np.zeros((reward.shape[0], reward.shape[2]), dtype)
    for t in reversed(range(reward.shape[1])):
        carry = reward[:, t] + gamma[:, t] * nd[:, t] * carry
        out[:, t] = carry
    return out


ORACLES = {
    "linear_scan": oracle_linear_scan,
    "linear_scan_adjoint": oracle_linear_scan_adjoint,
    "gae": oracle_gae,
    "td_lambda": oracle_td_lambda,
    "vtrace": oracle_vtrace,
    "reward2go": oracle_reward2go,
}
KERNELS = tuple(ORACLES)
ARGS = {
    "linear_scan": ("a", "b", "init"),
    "linear_scan_adjoint": ("b", "g"),
    "gae": ("gamma", "lmbda", "value", "next_value", "reward", "done", "terminated"),
    "td_lambda": ("gamma", "lmbda", "next_value", "reward", "done", "terminated"),
    "vtrace": ("gamma", "log_pi", "log_mu", "value", "next_value", "reward", "done",
               "terminated", "rho_thresh", "c_thresh"),
    "reward2go": ("gamma", "reward", "done"),
}
#: Hyper-parameters: (broadcast scalar, low and high of a per-step uniform draw).
HYPER = {
    "gamma": (0.99, 0.8, 1.0),
    "lmbda": (0.95, 0.5, 1.0),
    "rho_thresh": (1.0, 0.5, 2.0),
    "c_thresh": (1.0, 0.5, 1.5),
}

# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def lay_out(x: np.ndarray, layout: str) -> np.ndarray:
    """The values of ``x`` in a view with the strides ``layout`` names."""
    if layout == "batch":
        return np.ascontiguousarray(x)
    if layout == "time":  # a [T, N, F] array seen as [N, T, F]
        return np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 0, 1)), 0, 1)
    if layout == "negative":  # negative time and feature strides
        return np.ascontiguousarray(x[:, ::-1, ::-1])[:, ::-1, ::-1]
    if layout == "fortran":
        return np.asfortranarray(x)
    raise ValueError(layout)


def make_flags(rng, shape, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """``done`` and ``terminated`` (a subset of ``done``) following ``pattern``."""
    if pattern == "all":
        done = np.ones(shape, bool)
    elif pattern == "none":
        done = np.zeros(shape, bool)
    else:
        done = rng.random(shape) < 0.2
        if pattern == "edges" and shape[1] > 0:
            done[:, 0] = True
            done[:, -1] = True
    terminated = done & (rng.random(shape) < 0.5)
    return done, terminated


def make_inputs(kernel, shape, dtype, seed=0, *, layout="batch", hyper="broadcast",
                flags="edges"):
    """Keyword arguments for ``kernel`` with the given shape, dtype, strides and flags."""
    rng = np.random.default_rng(seed)
    rows, _, feats = shape
    done, terminated = make_flags(rng, shape, flags)
    inputs = {}
    for name in ARGS[kernel]:
        if name in HYPER:
            scalar, low, high = HYPER[name]
            if hyper == "broadcast":
                inputs[name] = np.broadcast_to(np.asarray(scalar, dtype), shape)
                continue
            x = rng.uniform(low, high, shape)
        elif name == "init":
            inputs[name] = rng.standard_normal((rows, feats)).astype(dtype)
            continue
        elif name in ("done", "terminated"):
            x = done if name == "done" else terminated
        elif name == "b":
            x = rng.uniform(-1.0, 1.0, shape)
        elif name in ("log_pi", "log_mu"):
            x = 0.5 * rng.standard_normal(shape)
        else:
            x = rng.standard_normal(shape)
        inputs[name] = lay_out(x if x.dtype == bool else x.astype(dtype), layout)
    return inputs


def as_dtype(inputs: dict, dtype) -> dict:
    return {k: v if v.dtype == bool else v.astype(dtype) for k, v in inputs.items()}


def as_tuple(x) -> tuple:
    return x if isinstance(x, tuple) else (x,)


# ---------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------


def run_kernel(kernel: str, inputs: dict) -> tuple[np.ndarray, ...]:
    """Run the kernel; check that it left its inputs alone and returned fresh arrays (C
    order, or time-major for the estimators on time-major inputs)."""
    before = {k: v.copy() for k, v in inputs.items()}
    outputs = as_tuple(getattr(K, kernel)(**inputs))
    for name, x in inputs.items():
        np.testing.assert_array_equal(x, before[name], err_msg=f"{kernel} modified {name}")
    shape = next(v.shape for k, v in inputs.items() if k != "init")
    dtype = next(v.dtype for v in inputs.values() if v.dtype != bool)
    time_major = kernel in FUSED and K._is_time_major(inputs["reward"])
    for out in outputs:
        assert out.shape == shape
        assert out.dtype == dtype
        if time_major:  # the estimators lay their outputs out like their inputs
            assert np.swapaxes(out, 0, 1).flags.c_contiguous
        else:
            assert out.flags.c_contiguous
        assert not any(np.shares_memory(out, x) for x in inputs.values())
    return outputs


def tolerances(dtype, want: np.ndarray) -> dict:
    finite = np.abs(want[np.isfinite(want)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    if np.dtype(dtype) == np.float64:
        return {"rtol": 1e-12, "atol": 1e-12 * scale}
    return {"rtol": 1e-5, "atol": 2e-6 * scale}


def check_against_oracle(kernel: str, inputs: dict) -> tuple[np.ndarray, ...]:
    """Compare the kernel with the float64 oracle; NaN and inf positions must agree."""
    dtype = next(v.dtype for v in inputs.values() if v.dtype != bool)
    got = run_kernel(kernel, inputs)
    want = as_tuple(ORACLES[kernel](**as_dtype(inputs, np.float64)))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, **tolerances(dtype, w))
    return got


@pytest.fixture(params=["serial", "parallel"])
def path(request, monkeypatch):
    """Force the serial or the parallel driver whatever the input size."""
    threshold = 0 if request.param == "parallel" else 1 << 62
    monkeypatch.setattr(K, "_PARALLEL_MIN_SIZE", threshold)
    return request.param


DTYPES = [np.float64, np.float32]
SHAPES = [(3, 7, 1), (4, 1, 2), (0, 5, 1), (5, 0, 1), (3, 4, 0), (64, 300, 1), (2000, 40, 1)]

# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_oracle(kernel, dtype, shape):
    check_against_oracle(kernel, make_inputs(kernel, shape, dtype, seed=1))


@pytest.mark.parametrize("layout", ["time", "negative", "fortran"])
@pytest.mark.parametrize("shape", [(5, 9, 1), (37, 20, 3), (300, 70, 1)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", KERNELS)
def test_strided_layouts(kernel, dtype, shape, layout, path):
    inputs = make_inputs(kernel, shape, dtype, seed=2, layout=layout, hyper="per_step")
    check_against_oracle(kernel, inputs)


@pytest.mark.parametrize("layout", ["batch", "time"])
@pytest.mark.parametrize("hyper", ["broadcast", "per_step"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_both_drivers_agree(kernel, hyper, layout, path):
    inputs = make_inputs(kernel, (70, 33, 2), np.float64, seed=3, layout=layout, hyper=hyper)
    check_against_oracle(kernel, inputs)


@pytest.mark.parametrize("flags", ["random", "edges", "all", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", ["gae", "td_lambda", "vtrace", "reward2go"])
def test_done_patterns(kernel, dtype, flags, path):
    inputs = make_inputs(kernel, (40, 25, 1), dtype, seed=4, hyper="per_step", flags=flags)
    check_against_oracle(kernel, inputs)


@pytest.mark.parametrize("layout", ["batch", "time"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", KERNELS)
def test_computes_in_input_dtype(kernel, dtype, layout, path):
    """Same operations in the same order as the oracle run in the input dtype.

    Where the kernel does the oracle's operations in its order (GAE, reward-to-go) the
    results are bitwise equal, so an upcast to float64 anywhere would show as a
    difference; V-trace (``exp``) and TD(λ) (a rearranged step) get a few ulps.
    """
    inputs = make_inputs(kernel, (40, 50, 2), dtype, seed=5, layout=layout, hyper="per_step")
    got = run_kernel(kernel, inputs)
    want = as_tuple(ORACLES[kernel](**inputs))
    for g, w in zip(got, want, strict=True):
        assert w.dtype == dtype
        if kernel in ("vtrace", "td_lambda"):
            ulps = 50 * np.finfo(dtype).eps
            np.testing.assert_allclose(g, w, rtol=ulps, atol=ulps * max(1.0, np.abs(w).max()))
        else:
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", ["gae", "td_lambda", "vtrace"])
def test_nan_next_value_propagates(kernel, dtype, path):
    shape = (6, 12, 1)
    inputs = make_inputs(kernel, shape, dtype, seed=6, flags="none")
    done, terminated = inputs["done"].copy(), inputs["terminated"].copy()
    done[0, 7] = terminated[0, 7] = True  # NaN at a terminated step still propagates
    done[1, 4] = True  # done but not terminated
    done[2, 11] = terminated[2, 11] = True  # at the last step
    inputs["done"], inputs["terminated"] = done, terminated
    next_value = inputs["next_value"].copy()
    next_value[0, 7] = next_value[1, 4] = next_value[2, 11] = next_value[3, 5] = np.nan
    inputs["next_value"] = next_value
    want = as_tuple(ORACLES[kernel](**as_dtype(inputs, np.float64)))
    assert np.isnan(want[0][0, 7, 0])  # the oracle itself propagates through the 0 factor
    got = check_against_oracle(kernel, inputs)
    for g in got:
        assert np.isnan(g).any()
        assert not np.isnan(g[4:]).any()  # untouched rows stay finite


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_vtrace_min_propagates_nan(dtype, path):
    inputs = make_inputs("vtrace", (5, 8, 1), dtype, seed=7, hyper="per_step", flags="none")
    rho_thresh, log_pi = inputs["rho_thresh"].copy(), inputs["log_pi"].copy()
    rho_thresh[0, 3] = np.nan  # min(rho, nan) is nan
    log_pi[1, 5] = np.nan  # min(nan, threshold) is nan
    inputs["rho_thresh"], inputs["log_pi"] = rho_thresh, log_pi
    advantage, vs = check_against_oracle("vtrace", inputs)
    assert np.isnan(advantage[0, 3, 0]) and np.isnan(vs[0, 3, 0])
    assert np.isnan(advantage[1, 5, 0]) and np.isnan(vs[1, 5, 0])
    assert K._min_nan(np.nan, 1.0) != K._min_nan(np.nan, 1.0)
    assert K._min_nan(1.0, np.nan) != K._min_nan(1.0, np.nan)
    assert K._min_nan(2.0, 1.0) == 1.0 and K._min_nan(-1.0, 1.0) == -1.0


@pytest.mark.parametrize("layout", ["batch", "time"])
def test_adjoint_identity(layout, path):
    """``<linear_scan(a, b, 0), g> == <a, linear_scan_adjoint(b, g)>`` for every row."""
    rng = np.random.default_rng(8)
    shape = (30, 17, 2)
    a, g = rng.standard_normal(shape), rng.standard_normal(shape)
    b = lay_out(rng.uniform(-1.0, 1.0, shape), layout)
    y = K.linear_scan(lay_out(a, layout), b, np.zeros((30, 2)))
    u = K.linear_scan_adjoint(b, lay_out(g, layout))
    np.testing.assert_allclose((y * g).sum(axis=1), (a * u).sum(axis=1), rtol=1e-10, atol=1e-12)


def test_single_step_and_init():
    """T == 1: the scans reduce to one step from ``init`` / ``0``."""
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((4, 1, 3)), rng.standard_normal((4, 1, 3))
    init = rng.standard_normal((4, 3))
    np.testing.assert_array_equal(K.linear_scan(a, b, init)[:, 0], a[:, 0] + b[:, 0] * init)
    np.testing.assert_array_equal(K.linear_scan_adjoint(b, a), a)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((np.zeros((2, 3, 1), np.float32), np.zeros((2, 3, 1))), TypeError),
        ((np.zeros((2, 3, 1)), np.zeros((2, 4, 1))), ValueError),
        ((np.zeros((2, 3)), np.zeros((2, 3))), ValueError),
        ((np.zeros((2, 3, 1), np.int64), np.zeros((2, 3, 1), np.int64)), TypeError),
    ],
)
def test_rejects_bad_inputs(args, error):
    with pytest.raises(error):
        K.linear_scan_adjoint(*args)


def test_rejects_non_bool_done():
    x = np.zeros((2, 3, 1))
    with pytest.raises(TypeError):
        K.reward2go(x, x, x)


# ---------------------------------------------------------------------------------------
# Batch-major tiles (issue 13): awkward shapes, bitwise agreement with the row kernels,
# the float32 exp, property tests, out=
# ---------------------------------------------------------------------------------------
FUSED = ("gae", "td_lambda", "vtrace", "reward2go")
R, TB = K._TILE_ROWS, K._TILE_STEPS
#: Rows around a multiple of the tile height, steps around the tile block length.
TILE_SHAPES = [
    (1, 1, 1),
    (R - 1, 5, 1),
    (R + 1, TB + 1, 1),
    (2 * R + 3, 3, 2),
    (3, 2 * TB + 5, 1),
    (R, TB, 3),
    (1, TB - 1, 1),
]


@pytest.mark.parametrize("shape", TILE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", FUSED)
def test_tiles_match_oracle(kernel, dtype, shape, path):
    # Broadcast hyper-parameters on float64, per-step ones on float32: both row readers.
    hyper = "broadcast" if np.dtype(dtype) == np.float64 else "per_step"
    inputs = make_inputs(kernel, shape, dtype, seed=11, hyper=hyper, flags="random")
    assert not K._is_time_major(inputs["reward"])
    check_against_oracle(kernel, inputs)


@pytest.mark.parametrize("hyper", ["broadcast", "per_step"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kernel", FUSED)
def test_tiles_equal_time_major_kernels(kernel, dtype, hyper):
    """Same expressions in the same order in both layouts: bitwise equal results."""
    batch = make_inputs(kernel, (R + 5, TB + 7, 2), dtype, seed=12, hyper=hyper)
    time = {k: lay_out(v, "time") if v.strides[0] else v for k, v in batch.items()}
    assert not K._is_time_major(batch["reward"]) and K._is_time_major(time["reward"])
    got = as_tuple(getattr(K, kernel)(**batch))
    want = as_tuple(getattr(K, kernel)(**time))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_exp_float32_within_two_ulp():
    import numba

    @numba.njit
    def exp_all(x, y):
        for k in range(x.size):
            y[k] = K._exp_fast(x[k])

    rng = np.random.default_rng(13)
    specials = [0.0, -0.0, 1e-30, -1e-30, 88.0, 88.7, 88.73, 89.0, 100.0, -87.3, -88.0,
                -103.0, -103.9, -104.0, -120.0, np.inf, -np.inf, np.nan]
    x = np.concatenate([rng.uniform(-110, 95, 200_000), specials]).astype(np.float32)
    y = np.empty_like(x)
    exp_all(x, y)
    with np.errstate(over="ignore"):  # exp(> 88.72) is inf in float32, as it should be
        want = np.exp(x.astype(np.float64)).astype(np.float32)  # correctly rounded (nearly)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(want))
    normal = np.isfinite(want) & (want > np.finfo(np.float32).tiny)
    ulps = np.abs(y[normal].view(np.int32).astype(np.int64) - want[normal].view(np.int32))
    assert ulps.max() <= 2
    tiny = np.isfinite(want) & ~normal  # subnormal results: within one subnormal step
    assert np.all(np.abs(y[tiny] - want[tiny]) <= 2 * np.float32(1.4e-45))


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_tiles_propagate_nan_and_inf():
    inputs = make_inputs("vtrace", (R + 1, 40, 1), np.float32, seed=14, hyper="per_step")
    inputs["log_pi"][3, 10, 0] = np.nan
    inputs["log_pi"][5, 20, 0] = np.inf
    inputs["reward"][7, 30, 0] = -np.inf
    check_against_oracle("vtrace", inputs)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(
    kernel=st.sampled_from(FUSED),
    rows=st.integers(1, 2 * R + 2),
    steps=st.sampled_from([1, 2, 9, TB - 1, TB, TB + 1]),
    feats=st.integers(1, 2),
    dtype=st.sampled_from(DTYPES),
    hyper=st.sampled_from(["broadcast", "per_step"]),
    layout=st.sampled_from(["batch", "time", "negative"]),
    flags=st.sampled_from(["random", "edges", "all", "none"]),
    seed=st.integers(0, 2**16),
)
def test_tiles_property(kernel, rows, steps, feats, dtype, hyper, layout, flags, seed):
    shape = (rows, steps, feats)
    inputs = make_inputs(kernel, shape, dtype, seed=seed, layout=layout, hyper=hyper,
                         flags=flags)
    check_against_oracle(kernel, inputs)


OUT_COUNT = {"gae": 2, "td_lambda": 1, "vtrace": 2, "reward2go": 1}


def _buffers(kernel, shape, dtype, layout="batch"):
    outs = tuple(lay_out(np.full(shape, -7.0, dtype), layout) for _ in range(OUT_COUNT[kernel]))
    return outs if len(outs) > 1 else outs[0]


@pytest.mark.parametrize("layout", ["batch", "time"])
@pytest.mark.parametrize("kernel", FUSED)
def test_out_written_in_place(kernel, layout, path):
    shape = (R + 3, 50, 2)
    inputs = make_inputs(kernel, shape, np.float32, seed=15, layout=layout)
    want = as_tuple(getattr(K, kernel)(**inputs))
    out = _buffers(kernel, shape, np.float32, layout)
    got = getattr(K, kernel)(**inputs, out=out)
    assert all(g is o for g, o in zip(as_tuple(got), as_tuple(out), strict=True))
    for g, w in zip(as_tuple(out), want, strict=True):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize(
    ("make_out", "error", "match"),
    [
        (lambda s: np.empty(s, np.float32), ValueError, "tuple of 2"),
        (lambda s: (np.empty(s, np.float64), np.empty(s, np.float32)), ValueError, r"out\[0\]"),
        (lambda s: (np.empty(s, np.float32), np.empty(s[:2], np.float32)), ValueError,
         r"out\[1\]"),
        (lambda s: (np.broadcast_to(np.float32(0), s), np.empty(s, np.float32)), ValueError,
         "writable"),
        (lambda s: ([0.0], np.empty(s, np.float32)), TypeError, "NumPy"),
    ],
)
def test_out_rejected(make_out, error, match):
    inputs = make_inputs("gae", (4, 6, 1), np.float32, seed=16)
    with pytest.raises(error, match=match):
        K.gae(**inputs, out=make_out((4, 6, 1)))


def test_out_must_not_overlap_inputs():
    inputs = make_inputs("reward2go", (4, 6, 1), np.float32, seed=17)
    with pytest.raises(ValueError, match="overlaps"):
        K.reward2go(**inputs, out=inputs["reward"])
    shared = np.empty((4, 6, 1), np.float32)
    gae_inputs = make_inputs("gae", (4, 6, 1), np.float32, seed=17)
    with pytest.raises(ValueError, match="overlaps"):
        K.gae(**gae_inputs, out=(shared, shared))
