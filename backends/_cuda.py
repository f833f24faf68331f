"""CUDA kernels (``numba.cuda``) for the estimator scans (GAE, TD(λ), V-trace, reward-to-go).

The same recurrences as :mod:`arrayrl.backends._numba_cpu`, for arrays that live on a
GPU: numba device arrays or anything exposing ``__cuda_array_interface__`` (CuPy arrays,
torch CUDA tensors), passed to the launch as they are, without host copies. Each public
function writes into caller-provided ``out`` arrays and returns ``None``.

All arrays are ``[N, T, F]`` with any strides. One thread owns one ``(n, f)`` column and
walks its time steps sequentially; ``_THREADS`` threads per block. Terminal flags enter
the arithmetic as ``1 - done`` factors, so NaN and inf propagate as the formulas say.
Everything also runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

Every public function takes ``[N, T, F]`` device arrays of one float dtype (bool for
``done``/``terminated``), any strides, then ``out`` (one array, or a tuple for two
outputs) and ``stream`` (a numba stream, or 0 for the default one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda

__all__ = ["gae", "linear_scan", "linear_scan_adjoint", "reward2go", "td_lambda", "vtrace"]

#: Threads per block; one thread per (n, f) column.
_THREADS = 128

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------------------------------
# Launch bookkeeping
# ---------------------------------------------------------------------------------------
def _dtype_of(x: Any) -> np.dtype:
    """The NumPy dtype of a device array (torch tensors carry their own dtype objects)."""
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, np.dtype):
        return dtype
    return np.dtype(x.__cuda_array_interface__["typestr"])


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in x.shape)


def _launch(kernel: Any, primary: Any, arrays: tuple, stream: Any) -> None:
    """Launch ``kernel`` with one thread per ``(n, f)`` column of ``primary``.

    The kernel receives ``one`` (1 in the arrays' dtype) followed by ``arrays``. Nothing
    is launched when there are no columns or no time steps.
    """
    shape = _shape_of(primary)
    if len(shape) != 3:
        raise ValueError(f"expected [N, T, F] arrays, got shape {shape}")
    dtype = _dtype_of(primary)
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"expected float32 or float64 arrays, got {dtype}")
    rows, steps, feats = shape
    columns = rows * feats
    if columns == 0 or steps == 0:
        return
    blocks = (columns + _THREADS - 1) // _THREADS
    kernel[blocks, _THREADS, stream](dtype.type(1), *arrays)


@cuda.jit(device=True)
def _column(i, feats):
    """The ``(n, f)`` column of flat thread index ``i``."""
    n = i // feats
    return n, i - n * feats


@cuda.jit(device=True)
def _min_nan(a, b):
    """``min(a, b)`` that returns NaN when either argument is NaN."""
    return a if (a <= b or a != a) else b


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------
@cuda.jit
def _linear_scan_kernel(one, a, b, init, y):
    rows, steps, feats = a.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    carry = init[n, f]
    for t in range(steps - 1, -1, -1):
        carry = a[n, t, f] + b[n, t, f] * carry
        y[n, t, f] = carry


@cuda.jit
def _adjoint_kernel(one, b, g, u):
    rows, steps, feats = g.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    carry = g[n, 0, f]
    u[n, 0, f] = carry
    for t in range(1, steps):
        carry = g[n, t, f] + b[n, t - 1, f] * carry
        u[n, t, f] = carry


@cuda.jit
def _gae_kernel(one, gamma, lmbda, value, next_value, reward, done, terminated, advantage,
                value_target):
    rows, steps, feats = value.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    carry = one - one
    for t in range(steps - 1, -1, -1):
        g = gamma[n, t, f]
        v = value[n, t, f]
        delta = reward[n, t, f] + g * (one - terminated[n, t, f]) * next_value[n, t, f] - v
        carry = delta + g * lmbda[n, t, f] * (one - done[n, t, f]) * carry
        advantage[n, t, f] = carry
        value_target[n, t, f] = carry + v


@cuda.jit
def _td_lambda_kernel(one, gamma, lmbda, next_value, reward, done, terminated, returns):
    rows, steps, feats = next_value.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    carry = next_value[n, steps - 1, f] * (one - terminated[n, steps - 1, f])
    for t in range(steps - 1, -1, -1):
        # the CPU kernel's single multiply-add form of TorchRL's step
        nv = next_value[n, t, f] * (one - terminated[n, t, f])
        g = gamma[n, t, f]
        trace = g * lmbda[n, t, f] * (one - done[n, t, f])
        carry = reward[n, t, f] + g * nv - trace * nv + trace * carry
        returns[n, t, f] = carry


@cuda.jit
def _vtrace_kernel(one, gamma, log_pi, log_mu, value, next_value, reward, done, terminated,
                   rho_thresh, c_thresh, advantage, vs):
    rows, steps, feats = value.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    acc = one - one
    vs_next = one - one
    for t in range(steps - 1, -1, -1):
        g = gamma[n, t, f]
        v = value[n, t, f]
        nv = next_value[n, t, f]
        r = reward[n, t, f]
        is_done = done[n, t, f]
        rho = math.exp(log_pi[n, t, f] - log_mu[n, t, f])
        rho_bar = _min_nan(rho, rho_thresh[n, t, f])
        c_bar = _min_nan(rho, c_thresh[n, t, f])
        discount = g * (one - terminated[n, t, f])
        acc = rho_bar * (r + discount * nv - v) + g * (one - is_done) * c_bar * acc
        # This branch only picks which input to read: nothing is zeroed.
        bootstrap = nv if (is_done or t == steps - 1) else vs_next
        advantage[n, t, f] = rho_bar * (r + discount * bootstrap - v)
        vs_next = acc + v
        vs[n, t, f] = vs_next


@cuda.jit
def _reward2go_kernel(one, gamma, reward, done, returns):
    rows, steps, feats = reward.shape
    i = cuda.grid(1)
    if i >= rows * feats:
        return
    n, f = _column(i, feats)
    carry = one - one
    for t in range(steps - 1, -1, -1):
        carry = reward[n, t, f] + gamma[n, t, f] * (one - done[n, t, f]) * carry
        returns[n, t, f] = carry


# ---------------------------------------------------------------------------------------
# Public launchers
# ---------------------------------------------------------------------------------------
def linear_scan(a: Any, b: Any, init: Any, *, out: Any, stream: Any = 0) -> None:
    """Reverse linear recurrence ``y_t = a_t + b_t y_{t+1}``, ``y_T = init``, on the GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.linear_scan`, where the maths is
    written out; writes ``y`` into ``out``.
    """
    _launch(_linear_scan_kernel, a, (a, b, init, out), stream)


def linear_scan_adjoint(b: Any, g: Any, *, out: Any, stream: Any = 0) -> None:
    """Forward recurrence ``u_t = g_t + b_{t-1} u_{t-1}`` (adjoint of ``linear_scan``), GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.linear_scan_adjoint`, where the maths is
    written out; writes ``u`` into ``out``.
    """
    _launch(_adjoint_kernel, g, (b, g, out), stream)


def gae(gamma: Any, lmbda: Any, value: Any, next_value: Any, reward: Any, done: Any,
        terminated: Any, *, out: tuple[Any, Any], stream: Any = 0) -> None:
    """Generalized advantage estimation, on the GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.gae`, where the maths is
    written out; writes ``(advantage, value_target)`` into ``out``.
    """
    advantage, value_target = out
    arrays = (gamma, lmbda, value, next_value, reward, done, terminated, advantage,
              value_target)
    _launch(_gae_kernel, value, arrays, stream)


def td_lambda(gamma: Any, lmbda: Any, next_value: Any, reward: Any, done: Any,
              terminated: Any, *, out: Any, stream: Any = 0) -> None:
    """TD(λ) returns, on the GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.td_lambda`, where the maths is
    written out; writes the returns into ``out``.
    """
    arrays = (gamma, lmbda, next_value, reward, done, terminated, out)
    _launch(_td_lambda_kernel, next_value, arrays, stream)


def vtrace(gamma: Any, log_pi: Any, log_mu: Any, value: Any, next_value: Any, reward: Any,
           done: Any, terminated: Any, rho_thresh: Any, c_thresh: Any, *,
           out: tuple[Any, Any], stream: Any = 0) -> None:
    """V-trace advantages and value targets, on the GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.vtrace`, where the maths is
    written out; writes ``(advantage, vs)`` into ``out``.
    """
    advantage, vs = out
    arrays = (gamma, log_pi, log_mu, value, next_value, reward, done, terminated, rho_thresh,
              c_thresh, advantage, vs)
    _launch(_vtrace_kernel, value, arrays, stream)


def reward2go(gamma: Any, reward: Any, done: Any, *, out: Any, stream: Any = 0) -> None:
    """Discounted reward-to-go, restarted at every ``done``, on the GPU.

    Same recurrence, argument order and dtypes as
    :func:`arrayrl.backends._numba_cpu.reward2go`, where the maths is
    written out; writes the returns into ``out``.
    """
    _launch(_reward2go_kernel, reward, (gamma, reward, done, out), stream)
