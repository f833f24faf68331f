"""Numba CPU kernels for the estimator scans (GAE, TD(λ), V-trace, reward-to-go).

Every public function takes ``[N, T, F]`` NumPy arrays of any strides (C-contiguous,
time-major views, stride-0 broadcasts of scalar hyper-parameters, negative strides) and
returns arrays of the inputs' float dtype (float32 or float64; every constant is built
from a ``one`` of that dtype, so nothing is upcast). The estimators (``gae``,
``td_lambda``, ``vtrace``, ``reward2go``) return new arrays laid out like their inputs
(C-contiguous, or time-major for time-major inputs) or write into caller-given ``out=``
buffers; ``linear_scan`` and its adjoint return new C-contiguous arrays.

Which compiled function runs is picked at call time from the strides:

* batch-major input (time stride smaller than batch stride, TorchRL's ``[B, T, 1]``):
  ``_<name>_tiles(n0, n1, ...)`` on ``[N, T]`` views of one feature, ``_TILE_ROWS`` rows
  at a time (see "Batch-major tiles" below);
* time-major input: ``_<name>_time_major(n0, n1, ...)`` on ``[T, N]`` views, every step
  a contiguous, vectorised pass over the rows ``n0 .. n1 - 1``;
* ``linear_scan`` and its adjoint keep ``_<name>_rows`` (one row after the other) and
  ``_<name>_block`` (``_BLOCK`` rows innermost, written out through a ``[_BLOCK,
  _TILE]`` tile).

Hyper-parameters equal on every row (broadcast scalars) reach the estimator kernels as
one contiguous row or column read with step 0 (:func:`_param_rows`,
:func:`_param_cols`): Numba compiles a stride-0 read as a scalar loop.
All release the GIL (``nogil``). Inputs with at least ``_PARALLEL_MIN_SIZE`` elements
are split into contiguous row ranges, one per thread, run by a small pool of Python
threads plus the calling thread. (Numba's own ``parallel=True`` was measured first: its
OpenMP layer stalled every call for about 8 ms on these 2-core VMs whenever another
process held a core, and its workqueue layer aborts when two threads call it at once.
Plain threads over ``nogil`` kernels are thread-safe and never spin.) The pool is made
on first use under a lock, re-made when ``NUMBA_NUM_THREADS`` changes, and forgotten in
a child made by ``fork``, which gets a pool of its own on its first large call.

Kernels are cached on disk by Numba (``cache=True``) where it finds a writable folder
(``NUMBA_CACHE_DIR``, ``__pycache__`` beside this file, or the user's cache folder); on
a read-only install without one they are compiled in memory, with one warning.

Terminal flags enter the arithmetic as ``1 - done`` factors, never as branches that skip
a term, so NaN and inf propagate exactly as the written recurrences say.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numba
import numba.extending
import numpy as np

from ._threads import scan_threads

__all__ = ["gae", "linear_scan", "linear_scan_adjoint", "reward2go", "td_lambda", "vtrace"]

#: Rows scanned together (rows innermost) on time-major inputs.
_BLOCK = 256
#: Time steps a block buffers before writing them out, one row at a time, so that the
#: rows of a batch-major output are written a cache line at a time.
_TILE = 16
#: Rows a batch-major tile scans together (see :func:`_gae_tiles`).
_TILE_ROWS = 16
#: Time steps of one tile block: the block of ``_TILE_ROWS`` rows stays in L2.
_TILE_STEPS = 1024
#: Row pitch of a tile buffer: the block, one carry slot, and 16 more elements so that
#: consecutive rows of a buffer start in different cache sets (a pitch of a multiple of
#: 4 KiB sent every row to one set).
_TILE_PITCH = _TILE_STEPS + 17
#: Inputs with fewer elements than this run on the calling thread only.
_PARALLEL_MIN_SIZE = 1 << 16

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: 1 in each float dtype: the kernels build every constant from it, so none is float64.
_ONE = {dtype: dtype.type(1) for dtype in _FLOAT_DTYPES}
_BOOL_DTYPE = np.dtype(np.bool_)

#: Whether Numba can cache compiled kernels on disk; set to False by :func:`_serial` the
#: first time Numba finds no writable cache folder (a read-only install).
_CACHE_USABLE = True

#: The worker threads of large scans: made on first use, re-made when the thread count
#: changes, forgotten in a forked child (whose copy has no threads). Guarded by _POOL_LOCK.
_POOL: ThreadPoolExecutor | None = None
_POOL_WORKERS = 0
_POOL_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------
# Compilation: cached on disk where Numba can write, in memory otherwise
# ---------------------------------------------------------------------------------------
def _serial(func: Callable) -> Callable:
    """``numba.njit(nogil=True, cache=True)``, or the same without ``cache`` when Numba
    has nowhere to write its cache (warned about once per process)."""
    global _CACHE_USABLE
    if _CACHE_USABLE:
        try:
            return numba.njit(nogil=True, cache=True)(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            _CACHE_USABLE = False
            _warn_no_cache(exc)
    return numba.njit(nogil=True)(func)


def _inline(func: Callable) -> Callable:
    """A helper of the tile kernels, inlined into them by Numba (no call per row)."""
    return numba.njit(nogil=True, inline="always")(func)


def _warn_no_cache(exc: Exception) -> None:
    warnings.warn(
        f"arrayrl: Numba has no writable cache folder ({exc}); the estimator kernels are "
        "compiled in memory, again in every new process. Set NUMBA_CACHE_DIR to a "
        "writable folder to cache them on disk.",
        RuntimeWarning,
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------------
# Call-time bookkeeping
# ---------------------------------------------------------------------------------------
def _validate(floats: tuple[np.ndarray, ...], flags: tuple[np.ndarray, ...] = ()) -> np.dtype:
    """Check that all arrays are ``[N, T, F]`` NumPy arrays of one shape; return the dtype.

    ``floats`` must share one float32 or float64 dtype and ``flags`` must be bool.
    """
    first = floats[0]
    if not isinstance(first, np.ndarray):
        raise TypeError(f"expected NumPy arrays, got {type(first).__name__}")
    shape, dtype = first.shape, first.dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"expected float32 or float64 arrays, got {dtype}")
    if len(shape) != 3:
        raise ValueError(f"expected [N, T, F] arrays, got shape {shape}")
    for group, expected in ((floats, dtype), (flags, _BOOL_DTYPE)):
        for x in group:
            if not (isinstance(x, np.ndarray) and x.dtype == expected and x.shape == shape):
                _raise_mismatch(x, shape, expected)
    return dtype


def _raise_mismatch(x: object, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected NumPy arrays, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"expected a {dtype} array, got {x.dtype}")
    raise ValueError(f"expected shape {shape}, got {x.shape}")


def _is_time_major(x: np.ndarray) -> bool:
    """Whether stepping in time moves further in memory than stepping in batch."""
    rows, steps, _ = x.shape
    return rows > 1 and steps > 1 and abs(x.strides[1]) > abs(x.strides[0])


def _submit(kernel: Callable, ranges: list[tuple[int, int]], args: tuple,
            workers: int) -> list[Future]:
    """Queue ``kernel(n0, n1, *args)`` for each range on the pool of ``workers`` threads.

    The pool is made (or re-made, for another thread count) and used under one lock, so
    that a pool is never shut down between its hand-out and a submit; a replaced pool
    finishes the work it holds before its threads exit.
    """
    global _POOL, _POOL_WORKERS
    with _POOL_LOCK:
        if _POOL is None or _POOL_WORKERS != workers:
            old = _POOL
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="arrayrl-scan")
            _POOL_WORKERS = workers
            if old is not None:
                old.shutdown(wait=False)
        return [_POOL.submit(kernel, n0, n1, *args) for n0, n1 in ranges]


def _forget_pool_after_fork() -> None:
    """In a forked child: drop the parent's pool (its threads were not forked) and its
    lock (which another thread may have held at the fork)."""
    global _POOL, _POOL_WORKERS, _POOL_LOCK
    _POOL, _POOL_WORKERS, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _row_ranges(rows: int, parts: int, align: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``[n0, n1)`` ranges covering ``rows``, cut at multiples of ``align``."""
    size = -(-rows // parts)
    size = -(-size // align) * align
    return [(n0, min(n0 + size, rows)) for n0 in range(0, rows, size)]


def _split(kernel: Callable, rows: int, size: int, align: int, args: tuple) -> None:
    """Run ``kernel(n0, n1, *args)`` over the rows ``[0, rows)`` of an input of ``size``
    elements.

    Large inputs are cut into one row range per thread (at multiples of ``align``); the
    calling thread takes the first range and waits for the others.
    """
    if rows < 2 or size < _PARALLEL_MIN_SIZE:
        kernel(0, rows, *args)
        return
    threads = scan_threads()
    if threads < 2:
        kernel(0, rows, *args)
        return
    ranges = _row_ranges(rows, threads, align)
    futures = _submit(kernel, ranges[1:], args, threads - 1)
    kernel(*ranges[0], *args)
    for future in futures:
        future.result()


def _run(kernels: tuple, primary: np.ndarray, args: tuple) -> None:
    """Run ``kernels = (rows, block)`` on ``args``, laid out like ``primary``: the block
    kernel on time-major inputs, the row kernel otherwise."""
    rows_kernel, block_kernel = kernels
    time_major = _is_time_major(primary)
    kernel = block_kernel if time_major else rows_kernel
    _split(kernel, primary.shape[0], primary.size, _BLOCK if time_major else 1, args)


def _run_tiles(kernel: Callable, primary: np.ndarray, args_of: Callable[[int], tuple]) -> None:
    """Run the tile ``kernel`` on every feature ``f`` of ``primary``'s ``[N, T, F]`` layout;
    ``args_of(f)`` gives its arguments (``[N, T]`` views of feature ``f``)."""
    rows, _, feats = primary.shape
    for f in range(feats):
        _split(kernel, rows, primary.size // feats, _TILE_ROWS, args_of(f))


def _run_time_major(kernel: Callable, primary: np.ndarray,
                    args_of: Callable[[int], tuple]) -> None:
    """Run the time-major ``kernel`` on every feature ``f`` of ``primary``'s ``[N, T, F]``
    layout; ``args_of(f)`` gives its arguments (``[T, N]`` views of feature ``f``)."""
    rows, _, feats = primary.shape
    for f in range(feats):
        _split(kernel, rows, primary.size // feats, _BLOCK, args_of(f))


def _param_cols(p: np.ndarray, f: int) -> tuple[np.ndarray, int]:
    """Feature ``f`` of the ``[N, T, F]`` hyper-parameter ``p`` as ``(cols, step)`` for the
    time-major kernels: ``[T, N]`` columns read at ``[t, n]`` (step 1), or, for a ``p``
    equal on every row, one C-contiguous ``[T, 1]`` column read at ``[t, 0]`` (step 0)."""
    if p.shape[0] > 1 and p.strides[0] != 0:
        return p[:, :, f].T, 1
    col = p[:1, :, f].T
    return (col if col.flags.c_contiguous else np.ascontiguousarray(col)), 0


def _param_rows(p: np.ndarray, f: int) -> tuple[np.ndarray, int]:
    """Feature ``f`` of the ``[N, T, F]`` hyper-parameter ``p`` as ``(rows, step)``, where
    ``rows[n * step]`` is row ``n``.

    A ``p`` equal on every row (a broadcast scalar or per-step row) becomes one
    C-contiguous row with step 0, so that the kernels read it with unit stride; Numba
    compiles a strided (stride-0) read as a scalar loop, about 7x slower.
    """
    if p.shape[0] > 1 and p.strides[0] != 0:
        return p[:, :, f], 1
    row = p[:1, :, f]
    return (row if row.flags.c_contiguous else np.ascontiguousarray(row)), 0


def _outputs(out: np.ndarray | tuple | None, count: int, like: np.ndarray, dtype: np.dtype,
             inputs: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """``count`` output arrays: fresh ones laid out like ``like`` (see
    :func:`_empty_in_order_of`), or the caller's ``out`` checked.

    ``out`` (an array, or a tuple of ``count`` arrays) must be writable NumPy arrays of
    ``like``'s shape and ``dtype``, without zero strides, overlapping no input.
    """
    if out is None:
        return tuple(_empty_in_order_of(like, dtype) for _ in range(count))
    outs = out if isinstance(out, tuple) else (out,)
    if len(outs) != count:
        raise ValueError(f"out must be a tuple of {count} arrays, got {len(outs)}")
    for k, y in enumerate(outs):
        name = f"out[{k}]" if count > 1 else "out"
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(y).__name__}")
        if y.dtype != dtype or y.shape != like.shape:
            raise ValueError(
                f"{name} must be a {dtype} array of shape {like.shape}, got {y.dtype} {y.shape}"
            )
        if not y.flags.writeable or any(st == 0 and n > 1 for st, n in zip(y.strides, y.shape)):
            raise ValueError(f"{name} must be writable, without broadcast (zero) strides")
        if any(np.may_share_memory(y, x) for x in (*inputs, *outs[:k])):
            raise ValueError(f"{name} overlaps an input or another output")
    return outs


def _empty_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.empty(x.shape, dtype)


def _empty_in_order_of(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A new array of ``x``'s shape: C-contiguous, or, for time-major ``x``, laid out
    time-major like it (``[T, N, F]`` memory), so results are written without a transpose."""
    if _is_time_major(x):
        rows, steps, feats = x.shape
        return np.empty((steps, rows, feats), dtype).transpose(1, 0, 2)
    return np.empty(x.shape, dtype)


# ---------------------------------------------------------------------------------------
# Shared compiled helpers
# ---------------------------------------------------------------------------------------
@_serial
def _flush(tile, out, width, k0, k1):
    """Copy ``tile[:width, :k1 - k0]`` to ``out[:width, k0:k1]`` one row at a time."""
    for i in range(width):
        for k in range(k0, k1):
            out[i, k] = tile[i, k - k0]


# ---------------------------------------------------------------------------------------
# Batch-major tiles: _TILE_ROWS rows scanned together
# ---------------------------------------------------------------------------------------
# A row-at-a-time scan waits on one multiply-add chain per element. The tile kernels
# (``_<name>_tiles``) take ``[N, T]`` views of one feature and, for every tile of
# ``_TILE_ROWS`` rows and every block of ``_TILE_STEPS`` steps (last block first):
#
# 1. terms: row by row, with unit-stride reads that Numba vectorises, compute the
#    recurrence's ``a_t`` and ``b_t`` (and anything else the outputs need) into the
#    ``[_TILE_ROWS, _TILE_PITCH]`` buffers; slot ``nb`` of ``a`` takes the carry;
# 2. scan: ``a[i, k] = a[i, k] + b[i, k] * a[i, k + 1]`` backwards, all rows of the tile
#    at each step, so the chains of the rows overlap instead of waiting on each other;
# 3. store: row by row, write the outputs (re-reading inputs, which are still in L2).
#
# Rows past the end of a partial tile hold zeros. Every element is computed by the same
# expression, in the same order, as in the time-major kernels, so the two layouts give
# bitwise equal results. Measurements and rejected variants: benchmarks/NOTES_kernels.md.
def _exp_fast(x):  # pragma: no cover - replaced by the overload below inside Numba
    return math.exp(x)


@numba.extending.overload(_exp_fast)
def _exp_fast_overload(x):
    """``exp``: a vectorisable polynomial for float32 (within 2 ulp; ``math.exp`` is a
    libm call per element, ~5 ns), ``math.exp`` for float64."""
    if x == numba.types.float32:
        return _exp_float32
    return lambda x: math.exp(x)


def _exp_float32(x):
    r"""``exp(x)`` in float32, without branches (so that loops calling it vectorise).

    :math:`x = n \ln 2 + r` with :math:`|r| \le \ln 2 / 2` (ln 2 split in two, Cody and
    Waite), :math:`e^x = 2^{n_1} 2^{n_2} p(r)` with :math:`n_1 + n_2 = n` (each power
    exact) and :math:`p` a degree-7 polynomial. ``x`` is first clamped to
    ``[-104, 89]``, past which the float32 result is 0 or inf anyway (the multiplications
    round to them); NaN passes through.
    """
    c = min(max(x, np.float32(-104.0)), np.float32(89.0))
    n = np.floor(c * np.float32(1.4426950408889634) + np.float32(0.5))
    r = c - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    whole = np.int32(n)
    half = whole >> np.int32(1)
    first = np.int32((half + np.int32(127)) << np.int32(23)).view(np.float32)
    second = np.int32((whole - half + np.int32(127)) << np.int32(23)).view(np.float32)
    y = p * first * second
    return y if x == x else x


@_inline
def _min_nan(a, b):
    """``min(a, b)`` that returns NaN when either argument is NaN, as two selects and no
    branch (``rho`` falls on either side of its threshold at random, and the loops that
    call this vectorise)."""
    m = b if b < a else a
    return b if b != b else m


@_inline
def _column(x, t, n0, n1, step, buf):
    """Row ``t`` of the ``[T, N]`` columns ``x`` over ``n0 .. n1 - 1`` (``step`` 1), or
    ``buf`` filled with ``x[t, 0]`` (``step`` 0: one column shared by every row), so that
    the time-major loops read their hyper-parameters with unit stride."""
    if step:
        return x[t, n0:n1]
    buf[:] = x[t, 0]
    return buf


@_inline
def _start_tile(width, a, b):
    """Zero the rows of a partial tile past ``width`` and the carries ``a[:, 0]`` (which
    the first block's terms move to their slot)."""
    for i in range(width, _TILE_ROWS):
        a[i, :] = 0
        b[i, :] = 0
    a[:, 0] = 0


@_inline
def _scan_tile(a, b, nb):
    """``a[i, k] = a[i, k] + b[i, k] * a[i, k + 1]`` for ``k = nb - 1, ..., 0``, all rows."""
    for k in range(nb - 1, -1, -1):
        for i in range(_TILE_ROWS):
            a[i, k] = a[i, k] + b[i, k] * a[i, k + 1]


@_inline
def _copy_row(src, dst):
    for k in range(dst.size):
        dst[k] = src[k]


# ---------------------------------------------------------------------------------------
# linear_scan: y_t = a_t + b_t y_{t+1}, y_T = init
# ---------------------------------------------------------------------------------------
@_serial
def _linear_scan_rows(n0, n1, a, b, init, y):
    steps, feats = a.shape[1], a.shape[2]
    for n in range(n0, n1):
        for f in range(feats):
            # Views reversed in time, walked forwards: k = 0 is t = T - 1.
            a_, b_, y_ = a[n, ::-1, f], b[n, ::-1, f], y[n, ::-1, f]
            carry = init[n, f]
            for k in range(steps):
                carry = a_[k] + b_[k] * carry
                y_[k] = carry


@_serial
def _linear_scan_block(n0, n1, a, b, init, y):
    steps, feats = a.shape[1], a.shape[2]
    carry = np.empty(_BLOCK, y.dtype)
    tile = np.empty((_BLOCK, _TILE), y.dtype)
    for b0 in range(n0, n1, _BLOCK):
        b1 = min(b0 + _BLOCK, n1)
        width = b1 - b0
        for f in range(feats):
            a_, b_, y_ = a[b0:b1, ::-1, f], b[b0:b1, ::-1, f], y[b0:b1, ::-1, f]
            for i in range(width):
                carry[i] = init[b0 + i, f]
            for k0 in range(0, steps, _TILE):
                k1 = min(k0 + _TILE, steps)
                for k in range(k0, k1):
                    for i in range(width):
                        c = a_[i, k] + b_[i, k] * carry[i]
                        carry[i] = c
                        tile[i, k - k0] = c
                _flush(tile, y_, width, k0, k1)


_LINEAR_SCAN = (_linear_scan_rows, _linear_scan_block)


def linear_scan(a: np.ndarray, b: np.ndarray, init: np.ndarray) -> np.ndarray:
    r"""Reverse linear recurrence over the time axis.

    .. math:: y_t = a_t + b_t \, y_{t+1}, \qquad y_T = \mathrm{init}

    for ``t = T - 1, ..., 0``, independently for every row ``n`` and feature ``f``.

    Parameters
    ----------
    a, b : np.ndarray
        ``[N, T, F]`` float32 or float64 arrays of one dtype, any strides.
    init : np.ndarray
        ``[N, F]`` array of the same dtype: the value after the last step.

    Returns
    -------
    np.ndarray
        ``y``, a new C-contiguous ``[N, T, F]`` array.
    """
    dtype = _validate((a, b))
    rows, _, feats = a.shape
    if not isinstance(init, np.ndarray) or init.dtype != dtype:
        raise TypeError(f"init must be a {dtype} NumPy array")
    if init.shape != (rows, feats):
        raise ValueError(f"init must have shape {(rows, feats)}, got {init.shape}")
    y = _empty_like(a, dtype)
    if y.size:
        _run(_LINEAR_SCAN, a, (a, b, init, y))
    return y


# ---------------------------------------------------------------------------------------
# linear_scan_adjoint: u_0 = g_0, u_t = g_t + b_{t-1} u_{t-1}
# ---------------------------------------------------------------------------------------
@_serial
def _adjoint_rows(n0, n1, b, g, u):
    steps, feats = g.shape[1], g.shape[2]
    for n in range(n0, n1):
        for f in range(feats):
            b_, g_, u_ = b[n, :, f], g[n, :, f], u[n, :, f]
            carry = g_[0]
            u_[0] = carry
            for t in range(1, steps):
                carry = g_[t] + b_[t - 1] * carry
                u_[t] = carry


@_serial
def _adjoint_block(n0, n1, b, g, u):
    steps, feats = g.shape[1], g.shape[2]
    carry = np.empty(_BLOCK, u.dtype)
    tile = np.empty((_BLOCK, _TILE), u.dtype)
    for b0 in range(n0, n1, _BLOCK):
        b1 = min(b0 + _BLOCK, n1)
        width = b1 - b0
        for f in range(feats):
            b_, g_, u_ = b[b0:b1, :, f], g[b0:b1, :, f], u[b0:b1, :, f]
            for i in range(width):
                carry[i] = g_[i, 0]
                u_[i, 0] = carry[i]
            for t0 in range(1, steps, _TILE):
                t1 = min(t0 + _TILE, steps)
                for t in range(t0, t1):
                    for i in range(width):
                        c = g_[i, t] + b_[i, t - 1] * carry[i]
                        carry[i] = c
                        tile[i, t - t0] = c
                _flush(tile, u_, width, t0, t1)


_ADJOINT = (_adjoint_rows, _adjoint_block)


def linear_scan_adjoint(b: np.ndarray, g: np.ndarray) -> np.ndarray:
    r"""Forward linear recurrence: the adjoint of :func:`linear_scan` (its gradient in ``a``).

    .. math:: u_0 = g_0, \qquad u_t = g_t + b_{t-1} \, u_{t-1} \quad (t \ge 1)

    Parameters
    ----------
    b : np.ndarray
        ``[N, T, F]`` coefficients of the reverse scan (float32 or float64, any strides).
    g : np.ndarray
        ``[N, T, F]`` incoming gradient ``dL/dy``, same dtype.

    Returns
    -------
    np.ndarray
        ``u = dL/da``, a new C-contiguous ``[N, T, F]`` array.
    """
    dtype = _validate((b, g))
    u = _empty_like(g, dtype)
    if u.size:
        _run(_ADJOINT, g, (b, g, u))
    return u


# ---------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------


@_serial
def _gae_time_major(n0, n1, one, gamma, g_step, lmbda, l_step, value, next_value, reward,
                    done, terminated, advantage, value_target):
    """GAE on ``[T, N]`` views, rows ``n0 .. n1 - 1`` innermost (contiguous, vectorised)."""
    width = n1 - n0
    carry = np.zeros(width, value.dtype)
    g_buf = np.empty(width, value.dtype)
    l_buf = np.empty(width, value.dtype)
    for t in range(value.shape[0] - 1, -1, -1):
        g_ = _column(gamma, t, n0, n1, g_step, g_buf)
        l_ = _column(lmbda, t, n0, n1, l_step, l_buf)
        v_, nv_, r_ = value[t, n0:n1], next_value[t, n0:n1], reward[t, n0:n1]
        d_, e_ = done[t, n0:n1], terminated[t, n0:n1]
        adv_, tgt_ = advantage[t, n0:n1], value_target[t, n0:n1]
        for i in range(width):
            g, v = g_[i], v_[i]
            delta = r_[i] + g * (one - e_[i]) * nv_[i] - v
            c = delta + g * l_[i] * (one - d_[i]) * carry[i]
            carry[i] = c
            adv_[i] = c
            tgt_[i] = c + v


@_inline
def _gae_terms(one, g_, l_, v_, nv_, r_, d_, e_, a_, b_):
    """GAE terms of one row block: ``a = δ``, ``b = γλ(1 - d)``; the carry to slot ``nb``."""
    nb = v_.size
    carry = a_[0]
    for k in range(nb):
        g = g_[k]
        a_[k] = r_[k] + g * (one - e_[k]) * nv_[k] - v_[k]
        b_[k] = g * l_[k] * (one - d_[k])
    a_[nb] = carry


@_inline
def _gae_store(a_, v_, adv_, tgt_):
    for k in range(v_.size):
        c = a_[k]
        adv_[k] = c
        tgt_[k] = c + v_[k]


@_serial
def _gae_tiles(n0, n1, one, gamma, g_step, lmbda, l_step, value, next_value, reward, done,
               terminated, advantage, value_target):
    steps = value.shape[1]
    a = np.zeros((_TILE_ROWS, _TILE_PITCH), value.dtype)
    b = np.zeros((_TILE_ROWS, _TILE_PITCH), value.dtype)
    for r0 in range(n0, n1, _TILE_ROWS):
        width = min(_TILE_ROWS, n1 - r0)
        _start_tile(width, a, b)
        for t1 in range(steps, 0, -_TILE_STEPS):
            t0 = max(0, t1 - _TILE_STEPS)
            for i in range(width):
                n = r0 + i
                _gae_terms(one, gamma[n * g_step, t0:t1], lmbda[n * l_step, t0:t1],
                           value[n, t0:t1], next_value[n, t0:t1], reward[n, t0:t1],
                           done[n, t0:t1], terminated[n, t0:t1], a[i], b[i])
            _scan_tile(a, b, t1 - t0)
            for i in range(width):
                n = r0 + i
                _gae_store(a[i], value[n, t0:t1], advantage[n, t0:t1], value_target[n, t0:t1])


def gae(
    gamma: np.ndarray,
    lmbda: np.ndarray,
    value: np.ndarray,
    next_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Generalized advantage estimation.

    With :math:`\bar d_t = 1 - \mathrm{done}_t`, :math:`\bar e_t = 1 - \mathrm{terminated}_t`
    and :math:`V'` the ``next_value``, for ``t = T - 1, ..., 0``:

    .. math::

        \delta_t &= r_t + \gamma_t \bar e_t V'_t - V_t \\
        A_t &= \delta_t + \gamma_t \lambda_t \bar d_t A_{t+1}, \qquad A_T = 0 \\
        \mathrm{target}_t &= A_t + V_t

    Parameters
    ----------
    gamma, lmbda, value, next_value, reward : np.ndarray
        ``[N, T, F]`` arrays of one float dtype, any strides (scalars arrive as stride-0
        broadcasts).
    done, terminated : np.ndarray
        ``[N, T, F]`` bool arrays.
    out : tuple of two np.ndarray, optional
        Writable ``[N, T, F]`` arrays of the dtype (any strides, overlapping no input) to
        write ``advantage`` and ``value_target`` into.

    Returns
    -------
    advantage, value_target : np.ndarray
        ``out``, or new ``[N, T, F]`` arrays laid out like the inputs.
    """
    inputs = (gamma, lmbda, value, next_value, reward)
    dtype = _validate(inputs, (done, terminated))
    advantage, value_target = _outputs(out, 2, value, dtype, (*inputs, done, terminated))
    if not advantage.size:
        return advantage, value_target
    one = _ONE[dtype]
    if _is_time_major(value):

        def cols_of(f: int) -> tuple:
            return (one, *_param_cols(gamma, f), *_param_cols(lmbda, f),
                    *(x[:, :, f].T for x in (value, next_value, reward, done, terminated,
                                             advantage, value_target)))

        _run_time_major(_gae_time_major, value, cols_of)
        return advantage, value_target

    def args_of(f: int) -> tuple:
        return (one, *_param_rows(gamma, f), *_param_rows(lmbda, f),
                *(x[:, :, f] for x in (value, next_value, reward, done, terminated,
                                       advantage, value_target)))

    _run_tiles(_gae_tiles, value, args_of)
    return advantage, value_target


# ---------------------------------------------------------------------------------------
# TD(λ)
# ---------------------------------------------------------------------------------------


@_serial
def _td_lambda_time_major(n0, n1, one, gamma, g_step, lmbda, l_step, next_value, reward,
                          done, terminated, returns):
    """TD(λ) on ``[T, N]`` views, rows innermost; the step of :func:`_td_lambda_step`."""
    width = n1 - n0
    last = next_value.shape[0] - 1
    carry = np.empty(width, returns.dtype)
    for i in range(width):  # G = v_{T-1}
        carry[i] = next_value[last, n0 + i] * (one - terminated[last, n0 + i])
    g_buf = np.empty(width, returns.dtype)
    l_buf = np.empty(width, returns.dtype)
    for t in range(last, -1, -1):
        g_ = _column(gamma, t, n0, n1, g_step, g_buf)
        l_ = _column(lmbda, t, n0, n1, l_step, l_buf)
        nv_, r_ = next_value[t, n0:n1], reward[t, n0:n1]
        d_, e_, ret_ = done[t, n0:n1], terminated[t, n0:n1], returns[t, n0:n1]
        for i in range(width):
            nv = nv_[i] * (one - e_[i])
            g = g_[i]
            trace = g * l_[i] * (one - d_[i])
            c = r_[i] + g * nv - trace * nv + trace * carry[i]
            carry[i] = c
            ret_[i] = c


@_inline
def _td_lambda_terms(one, g_, l_, nv_, r_, d_, e_, a_, b_):
    """TD(λ) terms of one row block: ``b = γλ(1 - d)``, ``a = r + γv - b v`` (``v`` the
    next value cut at termination); the carry to slot ``nb``.

    TorchRL's step ``G = g (1 - d) + v d; G_t = r + γ((1 - λ) v + λ G)`` rearranged so
    that only one multiply-add depends on the carry: ``G_t = r + γ v - b v + b G_{t+1}``
    (equal up to rounding).
    """
    nb = nv_.size
    carry = a_[0]
    for k in range(nb):
        nv = nv_[k] * (one - e_[k])
        g = g_[k]
        trace = g * l_[k] * (one - d_[k])
        a_[k] = r_[k] + g * nv - trace * nv
        b_[k] = trace
    a_[nb] = carry


@_serial
def _td_lambda_tiles(n0, n1, one, gamma, g_step, lmbda, l_step, next_value, reward, done,
                     terminated, returns):
    steps = next_value.shape[1]
    a = np.zeros((_TILE_ROWS, _TILE_PITCH), returns.dtype)
    b = np.zeros((_TILE_ROWS, _TILE_PITCH), returns.dtype)
    for r0 in range(n0, n1, _TILE_ROWS):
        width = min(_TILE_ROWS, n1 - r0)
        _start_tile(width, a, b)
        for i in range(width):  # G = v_{T-1}
            a[i, 0] = next_value[r0 + i, steps - 1] * (one - terminated[r0 + i, steps - 1])
        for t1 in range(steps, 0, -_TILE_STEPS):
            t0 = max(0, t1 - _TILE_STEPS)
            for i in range(width):
                n = r0 + i
                _td_lambda_terms(one, gamma[n * g_step, t0:t1], lmbda[n * l_step, t0:t1],
                                 next_value[n, t0:t1], reward[n, t0:t1], done[n, t0:t1],
                                 terminated[n, t0:t1], a[i], b[i])
            _scan_tile(a, b, t1 - t0)
            for i in range(width):
                _copy_row(a[i], returns[r0 + i, t0:t1])


def td_lambda(
    gamma: np.ndarray,
    lmbda: np.ndarray,
    next_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""TD(λ) returns.

    With :math:`v_t = V'_t (1 - \mathrm{terminated}_t)` (``V'`` is ``next_value``) and
    :math:`d_t = \mathrm{done}_t`, start from :math:`G = v_{T-1}` and for
    ``t = T - 1, ..., 0``:

    .. math::

        G &\leftarrow G (1 - d_t) + v_t d_t \\
        R_t &= r_t + \gamma_t \big((1 - \lambda_t) v_t + \lambda_t G\big) \\
        G &\leftarrow R_t

    Parameters
    ----------
    gamma, lmbda, next_value, reward : np.ndarray
        ``[N, T, F]`` arrays of one float dtype, any strides.
    done, terminated : np.ndarray
        ``[N, T, F]`` bool arrays.
    out : np.ndarray, optional
        A writable ``[N, T, F]`` array of the dtype (any strides, overlapping no input)
        to write the returns into.

    Returns
    -------
    np.ndarray
        The returns :math:`R`: ``out``, or a new ``[N, T, F]`` array laid out like the
        inputs.
    """
    inputs = (gamma, lmbda, next_value, reward)
    dtype = _validate(inputs, (done, terminated))
    (returns,) = _outputs(out, 1, next_value, dtype, (*inputs, done, terminated))
    if not returns.size:
        return returns
    one = _ONE[dtype]
    if _is_time_major(next_value):

        def cols_of(f: int) -> tuple:
            return (one, *_param_cols(gamma, f), *_param_cols(lmbda, f),
                    *(x[:, :, f].T for x in (next_value, reward, done, terminated, returns)))

        _run_time_major(_td_lambda_time_major, next_value, cols_of)
        return returns

    def args_of(f: int) -> tuple:
        return (one, *_param_rows(gamma, f), *_param_rows(lmbda, f),
                *(x[:, :, f] for x in (next_value, reward, done, terminated, returns)))

    _run_tiles(_td_lambda_tiles, next_value, args_of)
    return returns


# ---------------------------------------------------------------------------------------
# V-trace
# ---------------------------------------------------------------------------------------


@_serial
def _vtrace_time_major(n0, n1, one, gamma, g_step, log_pi, log_mu, value, next_value, reward,
                       done, terminated, rho_thresh, rt_step, c_thresh, ct_step, advantage, vs):
    """V-trace on ``[T, N]`` views, rows innermost; the step of :func:`_vtrace_step`."""
    width = n1 - n0
    last = value.shape[0] - 1
    acc = np.zeros(width, vs.dtype)
    vs_next = np.zeros(width, vs.dtype)
    g_buf = np.empty(width, vs.dtype)
    rt_buf = np.empty(width, vs.dtype)
    ct_buf = np.empty(width, vs.dtype)
    for t in range(last, -1, -1):
        g_ = _column(gamma, t, n0, n1, g_step, g_buf)
        rt_ = _column(rho_thresh, t, n0, n1, rt_step, rt_buf)
        ct_ = _column(c_thresh, t, n0, n1, ct_step, ct_buf)
        lp_, lm_, v_ = log_pi[t, n0:n1], log_mu[t, n0:n1], value[t, n0:n1]
        nv_, r_ = next_value[t, n0:n1], reward[t, n0:n1]
        d_, e_ = done[t, n0:n1], terminated[t, n0:n1]
        adv_, vs_ = advantage[t, n0:n1], vs[t, n0:n1]
        for i in range(width):
            rho = _exp_fast(lp_[i] - lm_[i])
            rho_bar = _min_nan(rho, rt_[i])
            c_bar = _min_nan(rho, ct_[i])
            g, v = g_[i], v_[i]
            discount = g * (one - e_[i])
            delta = rho_bar * (r_[i] + discount * nv_[i] - v)
            a = delta + g * (one - d_[i]) * c_bar * acc[i]
            # This select only picks which input to read: nothing is zeroed.
            bootstrap = nv_[i] if (d_[i] or t == last) else vs_next[i]
            adv_[i] = rho_bar * (r_[i] + discount * bootstrap - v)
            s = a + v
            acc[i] = a
            vs_next[i] = s
            vs_[i] = s


@_inline
def _vtrace_terms(one, g_, lp_, lm_, v_, nv_, r_, d_, e_, rt_, ct_, a_, b_, q_):
    """V-trace terms of one row block, the ``exp`` and clipping done here, off the scan's
    chain: ``a = δ``, ``b = γ(1 - d) c̄``, ``q = ρ̄``; the carry to slot ``nb``."""
    nb = v_.size
    carry = a_[0]
    for k in range(nb):
        rho = _exp_fast(lp_[k] - lm_[k])
        rho_bar = _min_nan(rho, rt_[k])
        c_bar = _min_nan(rho, ct_[k])
        g = g_[k]
        discount = g * (one - e_[k])
        a_[k] = rho_bar * (r_[k] + discount * nv_[k] - v_[k])
        b_[k] = g * (one - d_[k]) * c_bar
        q_[k] = rho_bar
    a_[nb] = carry


@_inline
def _vtrace_store(one, last, vs_after, g_, v_, nv_, r_, d_, e_, a_, q_, adv_, vs_):
    """Write ``vs = a + V`` and the advantages of one row block, backwards; ``vs_after``
    is ``vs`` at the step after the block (unused when the block ends the row, ``last``)."""
    nb = v_.size
    vs_next = vs_after
    for k in range(nb - 1, -1, -1):
        v = v_[k]
        s = a_[k] + v
        # This branch only picks which input to read: nothing is zeroed.
        bootstrap = nv_[k] if (d_[k] or (last and k == nb - 1)) else vs_next
        adv_[k] = q_[k] * (r_[k] + g_[k] * (one - e_[k]) * bootstrap - v)
        vs_[k] = s
        vs_next = s


@_serial
def _vtrace_tiles(n0, n1, one, gamma, g_step, log_pi, log_mu, value, next_value, reward, done,
                  terminated, rho_thresh, rt_step, c_thresh, ct_step, advantage, vs):
    steps = value.shape[1]
    a = np.zeros((_TILE_ROWS, _TILE_PITCH), vs.dtype)
    b = np.zeros((_TILE_ROWS, _TILE_PITCH), vs.dtype)
    q = np.zeros((_TILE_ROWS, _TILE_PITCH), vs.dtype)
    for r0 in range(n0, n1, _TILE_ROWS):
        width = min(_TILE_ROWS, n1 - r0)
        _start_tile(width, a, b)
        for t1 in range(steps, 0, -_TILE_STEPS):
            t0 = max(0, t1 - _TILE_STEPS)
            nb = t1 - t0
            for i in range(width):
                n = r0 + i
                _vtrace_terms(one, gamma[n * g_step, t0:t1], log_pi[n, t0:t1],
                              log_mu[n, t0:t1], value[n, t0:t1], next_value[n, t0:t1],
                              reward[n, t0:t1], done[n, t0:t1], terminated[n, t0:t1],
                              rho_thresh[n * rt_step, t0:t1], c_thresh[n * ct_step, t0:t1],
                              a[i], b[i], q[i])
            _scan_tile(a, b, nb)
            last = t1 == steps
            for i in range(width):
                n = r0 + i
                vs_after = a[i, nb] + value[n, t1] if not last else one - one
                _vtrace_store(one, last, vs_after, gamma[n * g_step, t0:t1], value[n, t0:t1],
                              next_value[n, t0:t1], reward[n, t0:t1], done[n, t0:t1],
                              terminated[n, t0:t1], a[i], q[i], advantage[n, t0:t1],
                              vs[n, t0:t1])


def vtrace(
    gamma: np.ndarray,
    log_pi: np.ndarray,
    log_mu: np.ndarray,
    value: np.ndarray,
    next_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    rho_thresh: np.ndarray,
    c_thresh: np.ndarray,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""V-trace advantages and value targets (Espeholt et al., 2018).

    With :math:`\rho_t = \exp(\log\pi_t - \log\mu_t)`,
    :math:`\bar\rho_t = \min(\rho_t, \bar\rho^{\max}_t)` and
    :math:`\bar c_t = \min(\rho_t, \bar c^{\max}_t)` (both NaN-propagating),
    :math:`\bar d_t = 1 - \mathrm{done}_t`, :math:`\bar e_t = 1 - \mathrm{terminated}_t`
    and :math:`V'` the ``next_value``, for ``t = T - 1, ..., 0``:

    .. math::

        \delta_t &= \bar\rho_t (r_t + \gamma_t \bar e_t V'_t - V_t) \\
        a_t &= \delta_t + \gamma_t \bar d_t \bar c_t a_{t+1}, \qquad a_T = 0 \\
        v^s_t &= a_t + V_t \\
        A_t &= \bar\rho_t (r_t + \gamma_t \bar e_t \hat v_t - V_t)

    where :math:`\hat v_t = V'_t` if ``done[t]`` or ``t == T - 1`` and
    :math:`\hat v_t = v^s_{t+1}` otherwise.

    Parameters
    ----------
    gamma, log_pi, log_mu, value, next_value, reward, rho_thresh, c_thresh : np.ndarray
        ``[N, T, F]`` arrays of one float dtype, any strides (the thresholds usually
        arrive as stride-0 broadcasts).
    done, terminated : np.ndarray
        ``[N, T, F]`` bool arrays.
    out : tuple of two np.ndarray, optional
        Writable ``[N, T, F]`` arrays of the dtype (any strides, overlapping no input) to
        write ``advantage`` and ``vs`` into.

    Returns
    -------
    advantage, vs : np.ndarray
        ``out``, or new ``[N, T, F]`` arrays laid out like the inputs.

    In float32, :math:`\exp` is a branch-free polynomial within 2 ulp of the correctly
    rounded value (:func:`_exp_float32`); float64 uses ``math.exp``.
    """
    floats = (gamma, log_pi, log_mu, value, next_value, reward, rho_thresh, c_thresh)
    dtype = _validate(floats, (done, terminated))
    advantage, vs = _outputs(out, 2, value, dtype, (*floats, done, terminated))
    if not vs.size:
        return advantage, vs
    one = _ONE[dtype]
    if _is_time_major(value):

        def cols_of(f: int) -> tuple:
            views = (log_pi, log_mu, value, next_value, reward, done, terminated)
            return (one, *_param_cols(gamma, f), *(x[:, :, f].T for x in views),
                    *_param_cols(rho_thresh, f), *_param_cols(c_thresh, f),
                    advantage[:, :, f].T, vs[:, :, f].T)

        _run_time_major(_vtrace_time_major, value, cols_of)
        return advantage, vs

    def args_of(f: int) -> tuple:
        views = (log_pi, log_mu, value, next_value, reward, done, terminated)
        return (one, *_param_rows(gamma, f), *(x[:, :, f] for x in views),
                *_param_rows(rho_thresh, f), *_param_rows(c_thresh, f),
                advantage[:, :, f], vs[:, :, f])

    _run_tiles(_vtrace_tiles, value, args_of)
    return advantage, vs


# ---------------------------------------------------------------------------------------
# Reward-to-go
# ---------------------------------------------------------------------------------------


@_serial
def _reward2go_time_major(n0, n1, one, gamma, g_step, reward, done, returns):
    """Reward-to-go on ``[T, N]`` views, rows innermost."""
    width = n1 - n0
    carry = np.zeros(width, returns.dtype)
    g_buf = np.empty(width, returns.dtype)
    for t in range(reward.shape[0] - 1, -1, -1):
        g_ = _column(gamma, t, n0, n1, g_step, g_buf)
        r_, d_, ret_ = reward[t, n0:n1], done[t, n0:n1], returns[t, n0:n1]
        for i in range(width):
            c = r_[i] + g_[i] * (one - d_[i]) * carry[i]
            carry[i] = c
            ret_[i] = c


@_inline
def _reward2go_terms(one, g_, r_, d_, a_, b_):
    """Reward-to-go terms of one row block: ``a = r``, ``b = γ(1 - d)``."""
    nb = r_.size
    carry = a_[0]
    for k in range(nb):
        a_[k] = r_[k]
        b_[k] = g_[k] * (one - d_[k])
    a_[nb] = carry


@_serial
def _reward2go_tiles(n0, n1, one, gamma, g_step, reward, done, returns):
    steps = reward.shape[1]
    a = np.zeros((_TILE_ROWS, _TILE_PITCH), returns.dtype)
    b = np.zeros((_TILE_ROWS, _TILE_PITCH), returns.dtype)
    for r0 in range(n0, n1, _TILE_ROWS):
        width = min(_TILE_ROWS, n1 - r0)
        _start_tile(width, a, b)
        for t1 in range(steps, 0, -_TILE_STEPS):
            t0 = max(0, t1 - _TILE_STEPS)
            for i in range(width):
                n = r0 + i
                _reward2go_terms(one, gamma[n * g_step, t0:t1], reward[n, t0:t1],
                                 done[n, t0:t1], a[i], b[i])
            _scan_tile(a, b, t1 - t0)
            for i in range(width):
                _copy_row(a[i], returns[r0 + i, t0:t1])


def reward2go(
    gamma: np.ndarray, reward: np.ndarray, done: np.ndarray, *, out: np.ndarray | None = None
) -> np.ndarray:
    r"""Discounted reward-to-go, restarted at every ``done``.

    .. math:: R_t = r_t + \gamma_t (1 - \mathrm{done}_t) R_{t+1}, \qquad R_T = 0

    for ``t = T - 1, ..., 0``.

    Parameters
    ----------
    gamma, reward : np.ndarray
        ``[N, T, F]`` arrays of one float dtype, any strides.
    done : np.ndarray
        ``[N, T, F]`` bool array.
    out : np.ndarray, optional
        A writable ``[N, T, F]`` array of the dtype (any strides, overlapping no input)
        to write the returns into.

    Returns
    -------
    np.ndarray
        The returns :math:`R`: ``out``, or a new ``[N, T, F]`` array laid out like the
        inputs.
    """
    dtype = _validate((gamma, reward), (done,))
    (returns,) = _outputs(out, 1, reward, dtype, (gamma, reward, done))
    if not returns.size:
        return returns
    one = _ONE[dtype]
    if _is_time_major(reward):

        def cols_of(f: int) -> tuple:
            return (one, *_param_cols(gamma, f), reward[:, :, f].T, done[:, :, f].T,
                    returns[:, :, f].T)

        _run_time_major(_reward2go_time_major, reward, cols_of)
        return returns

    def args_of(f: int) -> tuple:
        return (one, *_param_rows(gamma, f), reward[:, :, f], done[:, :, f], returns[:, :, f])

    _run_tiles(_reward2go_tiles, reward, args_of)
    return returns
