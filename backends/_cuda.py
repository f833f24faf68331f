"""CUDA kernels (``numba.cuda``) for the estimator scans (GAE, TD(λ), V-trace, reward-to-go).

The same recurrences as :mod:`arrayrl.backends._numba_cpu`, for arrays that live on a
GPU: numba device arrays or anything exposing ``__cuda_array_interface__`` (CuPy arrays,
torch CUDA tensors), passed to the launch as they are, without host copies. Each public
function writes into caller-provided ``out`` arrays and returns ``None``.

All arrays are ``[N, T, F]`` with any strides. One thread owns one ``(n, f)`` column and
walks its time steps sequentially; ``_THREADS`` threads per block. Terminal flags enter
the arithmetic as ``1 - done`` factors, so NaN and inf propagate as the formulas say.
Everything also runs under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
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
    r"""Reverse linear recurrence over the time axis, on the GPU.

    .. math:: y_t = a_t + b_t \, y_{t+1}, \qquad y_T = \mathrm{init}

    for ``t = T - 1, ..., 0``, one thread per ``(n, f)`` column.

    Parameters
    ----------
    a, b : device array
        ``[N, T, F]`` float32 or float64 arrays of one dtype, any strides.
    init : device array
        ``[N, F]`` array of the same dtype.
    out : device array
        ``[N, T, F]`` array that receives ``y``.
    stream : numba stream or 0
        The stream to launch on (0: the default stream).
    """
    _launch(_linear_scan_kernel, a, (a, b, init, out), stream)


def linear_scan_adjoint(b: Any, g: Any, *, out: Any, stream: Any = 0) -> None:
    r"""Forward linear recurrence, the adjoint of :func:`linear_scan`, on the GPU.

    .. math:: u_0 = g_0, \qquad u_t = g_t + b_{t-1} \, u_{t-1} \quad (t \ge 1)

    Parameters
    ----------
    b, g : device array
        ``[N, T, F]`` float arrays of one dtype, any strides.
    out : device array
        ``[N, T, F]`` array that receives ``u``.
    stream : numba stream or 0
        The stream to launch on.
    """
    _launch(_adjoint_kernel, g, (b, g, out), stream)


def gae(gamma: Any, lmbda: Any, value: Any, next_value: Any, reward: Any, done: Any,
        terminated: Any, *, out: tuple[Any, Any], stream: Any = 0) -> None:
    r"""Generalized advantage estimation on the GPU.

    With :math:`\bar d_t = 1 - \mathrm{done}_t`, :math:`\bar e_t = 1 - \mathrm{terminated}_t`
    and :math:`V'` the ``next_value``, for ``t = T - 1, ..., 0``:

    .. math::

        \delta_t &= r_t + \gamma_t \bar e_t V'_t - V_t \\
        A_t &= \delta_t + \gamma_t \lambda_t \bar d_t A_{t+1}, \qquad A_T = 0 \\
        \mathrm{target}_t &= A_t + V_t

    Parameters
    ----------
    gamma, lmbda, value, next_value, reward : device array
        ``[N, T, F]`` float arrays of one dtype, any strides.
    done, terminated : device array
        ``[N, T, F]`` bool arrays.
    out : (device array, device array)
        ``(advantage, value_target)``, written in place.
    stream : numba stream or 0
        The stream to launch on.
    """
    advantage, value_target = out
    arrays = (gamma, lmbda, value, next_value, reward, done, terminated, advantage,
              value_target)
    _launch(_gae_kernel, value, arrays, stream)


def td_lambda(gamma: Any, lmbda: Any, next_value: Any, reward: Any, done: Any,
              terminated: Any, *, out: Any, stream: Any = 0) -> None:
    r"""TD(λ) returns on the GPU.

    With :math:`v_t = V'_t (1 - \mathrm{terminated}_t)` and :math:`d_t = \mathrm{done}_t`,
    start from :math:`G = v_{T-1}` and for ``t = T - 1, ..., 0``:

    .. math::

        G &\leftarrow G (1 - d_t) + v_t d_t \\
        R_t &= r_t + \gamma_t \big((1 - \lambda_t) v_t + \lambda_t G\big) \\
        G &\leftarrow R_t

    Parameters
    ----------
    gamma, lmbda, next_value, reward : device array
        ``[N, T, F]`` float arrays of one dtype, any strides.
    done, terminated : device array
        ``[N, T, F]`` bool arrays.
    out : device array
        ``[N, T, F]`` array that receives the returns :math:`R`.
    stream : numba stream or 0
        The stream to launch on.
    """
    arrays = (gamma, lmbda, next_value, reward, done, terminated, out)
    _launch(_td_lambda_kernel, next_value, arrays, stream)


def vtrace(gamma: Any, log_pi: Any, log_mu: Any, value: Any, next_value: Any, reward: Any,
           done: Any, terminated: Any, rho_thresh: Any, c_thresh: Any, *,
           out: tuple[Any, Any], stream: Any = 0) -> None:
    r"""V-trace advantages and value targets on the GPU.

    With :math:`\rho_t = \exp(\log\pi_t - \log\mu_t)`,
    :math:`\bar\rho_t = \min(\rho_t, \bar\rho^{\max}_t)` and
    :math:`\bar c_t = \min(\rho_t, \bar c^{\max}_t)` (both NaN-propagating),
    :math:`\bar d_t = 1 - \mathrm{done}_t`, :math:`\bar e_t = 1 - \mathrm{terminated}_t`,
    for ``t = T - 1, ..., 0``:

    .. math::

        \delta_t &= \bar\rho_t (r_t + \gamma_t \bar e_t V'_t - V_t) \\
        a_t &= \delta_t + \gamma_t \bar d_t \bar c_t a_{t+1}, \qquad a_T = 0 \\
        v^s_t &= a_t + V_t \\
        A_t &= \bar\rho_t (r_t + \gamma_t \bar e_t \hat v_t - V_t)

    where :math:`\hat v_t = V'_t` if ``done[t]`` or ``t == T - 1`` and
    :math:`\hat v_t = v^s_{t+1}` otherwise.

    Parameters
    ----------
    gamma, log_pi, log_mu, value, next_value, reward, rho_thresh, c_thresh : device array
        ``[N, T, F]`` float arrays of one dtype, any strides.
    done, terminated : device array
        ``[N, T, F]`` bool arrays.
    out : (device array, device array)
        ``(advantage, vs)``, written in place.
    stream : numba stream or 0
        The stream to launch on.
    """
    advantage, vs = out
    arrays = (gamma, log_pi, log_mu, value, next_value, reward, done, terminated, rho_thresh,
              c_thresh, advantage, vs)
    _launch(_vtrace_kernel, value, arrays, stream)


def reward2go(gamma: Any, reward: Any, done: Any, *, out: Any, stream: Any = 0) -> None:
    r"""Discounted reward-to-go on the GPU, restarted at every ``done``.

    .. math:: R_t = r_t + \gamma_t (1 - \mathrm{done}_t) R_{t+1}, \qquad R_T = 0

    Parameters
    ----------
    gamma, reward : device array
        ``[N, T, F]`` float arrays of one dtype, any strides.
    done : device array
        ``[N, T, F]`` bool array.
    out : device array
        ``[N, T, F]`` array that receives the returns :math:`R`.
    stream : numba stream or 0
        The stream to launch on.
    """
    _launch(_reward2go_kernel, reward, (gamma, reward, done, out), stream)
