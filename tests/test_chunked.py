"""Time-chunked reverse scans (issue 13, part 2) equal the serial scan."""

from __future__ import annotations

import numpy as np
import pytest
from arrayrl.backends import _chunked
from arrayrl.backends._numba_cpu import linear_scan
from hypothesis import given, settings
from hypothesis import strategies as st


def _inputs(rows: int, steps: int, feats: int, dtype: type, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, steps, feats)).astype(dtype)
    b = rng.uniform(0.0, 1.0, (rows, steps, feats)).astype(dtype)
    b[rng.random(b.shape) < 0.1] = 0.0  # trajectory ends: the carry is cut
    init = rng.standard_normal((rows, feats)).astype(dtype)
    return a, b, init


@st.composite
def _shapes(draw):
    steps = draw(st.integers(1, 48))
    chunk = draw(st.one_of(st.just(1), st.just(steps), st.integers(1, steps + 3)))
    return draw(st.integers(1, 4)), steps, draw(st.integers(1, 2)), chunk


@settings(max_examples=60, deadline=None)
@given(shape=_shapes(), seed=st.integers(0, 2**16))
def test_chunked_equals_serial_float64(shape, seed):
    rows, steps, feats, chunk = shape
    a, b, init = _inputs(rows, steps, feats, np.float64, seed)
    expected = _chunked.numpy_linear_scan(a, b, init)
    got = _chunked.chunked_linear_scan(a, b, init, chunk)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shape=_shapes(), seed=st.integers(0, 2**16))
def test_chunked_equals_serial_float32(shape, seed):
    rows, steps, feats, chunk = shape
    a, b, init = _inputs(rows, steps, feats, np.float32, seed)
    expected = linear_scan(a, b, init)
    got = _chunked.chunked_linear_scan(a, b, init, chunk)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_single_long_row_on_threads():
    """One row of 200k steps cut into 64 chunks: 64 rows for the Numba thread pool."""
    a, b, init = _inputs(1, 200_003, 1, np.float64, 3)
    b = 0.5 + 0.5 * b  # long memory across the chunk boundaries
    expected = linear_scan(a, b, init)
    got = _chunked.chunked_linear_scan(a, b, init, 3_125)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_composition_is_associative():
    rng = np.random.default_rng(0)
    f, g, h = (tuple(rng.standard_normal(2)) for _ in range(3))
    left = _chunked.compose(_chunked.compose(f, g), h)
    right = _chunked.compose(f, _chunked.compose(g, h))
    np.testing.assert_allclose(left, right, rtol=1e-12)
    # the composed map applied to a carry is the two steps applied in turn
    carry = 0.7
    step = f[0] + f[1] * (g[0] + g[1] * carry)
    composed = _chunked.compose(f, g)
    assert composed[0] + composed[1] * carry == pytest.approx(step)


def test_inputs_are_not_mutated():
    a, b, init = _inputs(2, 17, 1, np.float32, 1)
    copies = [x.copy() for x in (a, b, init)]
    _chunked.chunked_linear_scan(a, b, init, 5)
    for x, y in zip((a, b, init), copies):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True, None])
def test_bad_chunk_is_refused(chunk):
    a, b, init = _inputs(1, 4, 1, np.float64, 0)
    with pytest.raises(ValueError, match="chunk"):
        _chunked.chunked_linear_scan(a, b, init, chunk)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_suffix_and_chunk_products(dtype):
    """Log-space products equal running products: signs, zeros, NaN, underflow."""
    b = np.array([0.5, -2.0, 0.0, 3.0, -1.0, np.nan, 0.25, -0.5, 4.0], dtype)[None, :, None]
    long = np.full((1, 5000, 1), 0.9, dtype)  # the product underflows to 0 on the way
    # A log of relative error eps makes e^-s off by a relative eps * s (s <= 88 in float32).
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for x in (b[:, :5], b[:, 6:], b, long):
        expected = np.cumprod(x[:, ::-1].astype(np.float64), axis=1)[:, ::-1]
        got = _chunked.suffix_products(x)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-37, equal_nan=True)
        total = _chunked.chunk_products(x)
        np.testing.assert_allclose(total, expected[:, 0], rtol=rtol, atol=1e-37, equal_nan=True)
