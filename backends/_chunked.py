r"""Time-chunked reverse linear scans: the associative composition of affine maps.

One step of the reverse recurrence :math:`y_t = a_t + b_t\,y_{t+1}` is the affine map
:math:`f_t(y) = a_t + b_t y`. A run of steps ``t0 .. t1 - 1`` is their composition
:math:`f_{t0} \circ \dots \circ f_{t1-1}`, again affine, and composition is associative:

.. math:: (a, b) \circ (a', b') = (a + b\,a',\; b\,b')

So a trajectory cut into chunks along time is scanned in three steps:

1. each chunk is scanned on its own from a zero carry, giving the local result
   :math:`\ell_t` and the running product :math:`P_t = \prod_{s=t}^{t_1-1} b_s`; the
   chunk's map is :math:`(A, B) = (\ell_{t_0}, P_{t_0})`;
2. a short serial pass over the chunk boundaries, last chunk first, gives the value
   :math:`c_k` that enters the end of chunk ``k``: :math:`c_{K-1} = \text{init}`,
   :math:`c_{k-1} = A_k + B_k c_k`;
3. each chunk is corrected, :math:`y_t = \ell_t + P_t\,c_k` (Dask: one pass over the
   kept blocks), or scanned again from :math:`c_k` (:func:`chunked_linear_scan`: no
   ``[N, L, F]`` products to keep).

No chunk ever needs another chunk's data beyond the ``[N, F]`` carry. The functions
here work on NumPy blocks; :func:`chunked_linear_scan` runs a long trajectory as many
short rows through any row-parallel scan (the Numba kernels' thread pool), and the Dask
backend uses the same three steps per Dask chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Scan = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

__all__ = [
    "boundary_carries",
    "chunk_maps",
    "chunk_products",
    "chunked_linear_scan",
    "compose",
    "correct",
    "default_scan",
    "numpy_linear_scan",
    "suffix_products",
]


def compose(
    outer: tuple[np.ndarray, np.ndarray], inner: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    r"""The map ``outer ∘ inner``: :math:`(a, b) \circ (a', b') = (a + b a', b b')`.

    ``outer`` is the earlier chunk in time (it is applied last in a reverse scan).
    """
    a, b = outer
    a2, b2 = inner
    return a + b * a2, b * b2


def numpy_linear_scan(a: np.ndarray, b: np.ndarray, init: np.ndarray) -> np.ndarray:
    r"""Plain NumPy reverse scan of ``[N, T, F]`` arrays, :math:`y_t = a_t + b_t y_{t+1}`,
    :math:`y_T = \text{init}` (for dtypes the compiled kernels do not take)."""
    dtype = np.result_type(a, b, init)
    y = np.empty(a.shape, dtype)
    carry = np.asarray(init, dtype)
    for t in range(a.shape[1] - 1, -1, -1):
        carry = a[:, t, :] + b[:, t, :] * carry
        y[:, t, :] = carry
    return y


def _logs_and_signs(b: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    r"""``log|b|`` in ``b``'s dtype (``-inf`` at zeros) and ``b < 0`` (``None`` if none is).

    The sums of the logs run in float64. A float32 log is off by a relative 1e-7, so a
    product :math:`e^{-s}` is off by a relative :math:`10^{-7} s`: an absolute error
    below :math:`10^{-7} \max_s s e^{-s} < 4 \cdot 10^{-8}`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.abs(b))
    negative = b < 0
    return logs, (negative if negative.any() else None)


def suffix_products(b: np.ndarray) -> np.ndarray:
    r"""``P[:, t] = Π_{s >= t} b[:, s]`` along axis 1 of ``[N, L, F]``, of ``b``'s dtype.

    Summed in log space (float64 sums), :math:`P_t = \pm\exp\sum_{s \ge t} \log|b_s|`,
    not multiplied step by step: a running product of discounts below 1 sinks into
    subnormal numbers within a few thousand steps, where every multiply is some hundred
    times slower; ``exp`` rounds such tails to 0 at once. A zero ``b`` gives ``-inf``
    logs and exact zeros; NaN propagates.
    """
    logs, negative = _logs_and_signs(b)
    totals = np.cumsum(logs[:, ::-1], axis=1, dtype=np.float64)[:, ::-1]
    products = np.exp(totals)
    if negative is not None:
        odd = (np.cumsum(negative[:, ::-1], axis=1)[:, ::-1] & 1).astype(bool)
        products[odd] *= -1.0
    return products.astype(b.dtype, copy=False)


def chunk_products(b: np.ndarray) -> np.ndarray:
    """``Π_s b[:, s]`` over axis 1 of ``[N, L, F]`` (``[N, F]``), in log space as in
    :func:`suffix_products`."""
    logs, negative = _logs_and_signs(b)
    products = np.exp(np.sum(logs, axis=1, dtype=np.float64))
    if negative is not None:
        products[(np.sum(negative, axis=1) & 1).astype(bool)] *= -1.0
    return products.astype(b.dtype, copy=False)


def chunk_maps(
    a: np.ndarray, b: np.ndarray, scan: Scan = numpy_linear_scan
) -> tuple[np.ndarray, np.ndarray]:
    r"""Step 1 on one chunk of ``[N, L, F]`` arrays: ``(local, prefix)``.

    ``local`` is the scan from a zero carry, ``prefix = suffix_products(b)`` the factor
    by which the carry entering the chunk's end reaches step ``t``. Both are
    ``[N, L, F]``; the chunk's map is ``(local[:, 0], prefix[:, 0])``.
    """
    rows, _, feats = a.shape
    local = scan(a, b, np.zeros((rows, feats), a.dtype))
    return local, suffix_products(b)


def boundary_carries(maps_a: np.ndarray, maps_b: np.ndarray, init: np.ndarray) -> np.ndarray:
    r"""Step 2: the carries entering the end of each of ``K`` chunks.

    ``maps_a``, ``maps_b`` are ``[N, K, F]`` (chunk ``k``'s map :math:`(A_k, B_k)`),
    ``init`` is ``[N, F]``. Returns ``[N, K, F]`` with :math:`c_{K-1} = \text{init}` and
    :math:`c_{k-1} = A_k + B_k c_k`: a scan of length ``K`` over the chunk maps.
    """
    shifted_a = maps_a[:, 1:, :]
    shifted_b = maps_b[:, 1:, :]
    after = numpy_linear_scan(shifted_a, shifted_b, init)  # c_0 .. c_{K-2}
    return np.concatenate([after, np.asarray(init, maps_a.dtype)[:, None, :]], axis=1)


def correct(local: np.ndarray, prefix: np.ndarray, carry: np.ndarray) -> np.ndarray:
    r"""Step 3 on one chunk: :math:`y_t = \ell_t + P_t\,c` with ``carry`` ``[N, F]``."""
    return local + prefix * carry[:, None, :]


def _pad_time(x: np.ndarray, steps: int, value: float) -> np.ndarray:
    """``x`` with ``steps`` extra time steps of ``value`` at the end."""
    if steps == 0:
        return x
    pad = np.full((x.shape[0], steps, x.shape[2]), value, x.dtype)
    return np.concatenate([x, pad], axis=1)


def chunked_linear_scan(
    a: np.ndarray, b: np.ndarray, init: np.ndarray, chunk: int, scan: Scan | None = None
) -> np.ndarray:
    r"""Reverse scan of ``[N, T, F]`` arrays cut into chunks of ``chunk`` steps.

    The ``K = ceil(T / chunk)`` chunks of each row become ``N·K`` independent rows of
    one ``[N·K, chunk, F]`` scan, so a row-parallel ``scan`` (the Numba kernels, whose
    thread pool splits rows) runs one long trajectory on every thread: a first scan from
    zero carries gives each chunk's :math:`A_k` (its first step) and
    :func:`chunk_products` its :math:`B_k`, the serial pass over the ``K`` boundaries
    gives the carries, and a second scan reruns every chunk from its carry. The last
    chunk is padded with the identity map ``(a, b) = (0, 1)``, which passes the carry
    through unchanged. ``scan`` defaults to the Numba kernel for float32/float64, else
    NumPy.

    Two scans of every step: a gain over the serial scan needs more than two threads.
    Equals the serial scan up to rounding (the carries travel through products of ``b``
    taken in another order).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    rows, steps, feats = a.shape
    if steps == 0 or rows == 0:
        return numpy_linear_scan(a, b, init)
    scan = scan or default_scan(a.dtype)
    count = -(-steps // chunk)
    pad = count * chunk - steps
    as_rows = (rows * count, chunk, feats)
    a_rows = np.reshape(_pad_time(a, pad, 0.0), as_rows)
    b_rows = np.reshape(_pad_time(b, pad, 1.0), as_rows)
    local = scan(a_rows, b_rows, np.zeros((rows * count, feats), a.dtype))
    maps_a = np.reshape(local[:, 0, :], (rows, count, feats))
    maps_b = np.reshape(chunk_products(b_rows), (rows, count, feats))
    carries = boundary_carries(maps_a, maps_b, np.asarray(init, a.dtype))
    y = scan(a_rows, b_rows, np.reshape(carries, (rows * count, feats)))
    return np.reshape(y, (rows, count * chunk, feats))[:, :steps, :]


def default_scan(dtype: np.dtype) -> Scan:
    """The Numba kernel for float32/float64, NumPy for anything else."""
    if np.dtype(dtype) in (np.dtype(np.float32), np.dtype(np.float64)):
        from ._numba_cpu import linear_scan

        return linear_scan
    return numpy_linear_scan
