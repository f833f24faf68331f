r"""Dask arrays: lazy estimators over chunked, out-of-core data.

Every estimator in :mod:`arrayrl.objectives.value.functional` runs unchanged on Dask
arrays: its element-wise maths are Dask's own (array-api-compat's Dask namespace, fused
into one task per chunk by Dask's graph optimiser), and its reverse scan
:math:`y_t = a_t + b_t\,y_{t+1}` is :func:`dask_linear_scan`:

* chunks along the batch are independent rows: each block is scanned by the Numba
  kernel (``map_blocks``);
* chunks along time use the associative composition of :mod:`backends._chunked`: every
  block is scanned from a zero carry (local result and running product of ``b``), a
  small serial pass over the ``[N, K, F]`` chunk maps gives each block its carry, and a
  blockwise correction adds it. No block ever holds more than its own steps.

GAE and reward-to-go run their fused Numba kernels on every block (one pass over the
raw inputs); with chunks along time each block is scanned from a zero carry (GAE's own
``A_T = 0``) and joined by the same composition, its ``b`` being
:math:`\gamma\lambda(1 - \text{done})` (GAE) or :math:`\gamma(1 - \text{done})`.
TD(λ), TD(1) and V-trace go through :func:`dask_linear_scan`.

Nothing is computed here: the result is a lazy Dask array, evaluated by whatever
scheduler the caller uses (threads, processes, a ``distributed.Client``).
"""

from __future__ import annotations

from typing import Any

import array_api_compat.dask.array as xp_dask
import dask.array as da
import numpy as np

from . import _chunked
from ._base import Backend, ScanKernels

_INDEX = "ntf"


class DaskBackend(Backend):
    """Dask arrays (NumPy blocks, on the CPU of whichever worker runs a task)."""

    name = "dask"

    def __init__(self) -> None:
        super().__init__(xp_dask, "cpu")

    def is_array(self, x: Any) -> bool:
        return isinstance(x, da.Array)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return da.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Computes ``x`` (the one place that does: converting to NumPy is asked for)."""
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray) -> Any:
        return da.from_array(x)

    def write_into(self, dst: Any, src: Any) -> Any:
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(f"shape mismatch: {tuple(src.shape)} into {tuple(dst.shape)}")
        return da.asarray(src).astype(dst.dtype)

    def scalar_param(self, value: float, dtype: Any, shape: tuple[int, ...]) -> Any:
        """A scalar hyper-parameter as a ``[1, ..., 1]`` array that Dask's element-wise
        maths broadcast block by block (a full-``shape`` broadcast would be one chunk
        the size of the whole dataset, split again by every operation that meets it)."""
        return da.full((1,) * len(shape), value, dtype=dtype)

    def compiled_kernel(self) -> str | None:
        return "numba"

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        fused = {"gae": dask_gae, "reward2go": dask_reward2go}
        return ScanKernels("numba", dask_linear_scan, fused)


def _block_scan(dtype: np.dtype) -> _chunked.Scan:
    """The per-block NumPy scan: Numba for float32/float64, plain NumPy otherwise."""
    return _chunked.default_scan(dtype)


def _prefix(b: np.ndarray) -> np.ndarray:
    r"""``P[:, t] = Π_{s >= t} b[:, s]`` within one block (:func:`_chunked.suffix_products`)."""
    return _chunked.suffix_products(b)


def _full(block: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A ``[1, 1, 1]`` scalar-parameter block broadcast (stride 0) to ``like``'s shape."""
    return np.broadcast_to(block, like.shape)


# -- per-block functions (NumPy in, NumPy out) -------------------------------------------
def _scan_block(a: np.ndarray, b: np.ndarray, init: np.ndarray) -> np.ndarray:
    """A block that holds whole rows: the ordinary scan from ``init``."""
    a, b, init = _common_dtype(a, b, init)
    return _block_scan(a.dtype)(a, b, np.ascontiguousarray(init))


def _scan_maps_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A block of a time-chunked scan: ``[local, prefix]`` (``[2, n, l, f]``)."""
    a, b = _common_dtype(a, b)
    local, prefix = _chunked.chunk_maps(a, b, _block_scan(a.dtype))
    return np.stack([local, prefix])


def _gae_block(gamma, lmbda, value, next_value, reward, done, terminated, *, maps):
    r"""GAE on one block with the fused Numba kernel: ``[advantage, value_target]``, and
    with ``maps`` the running product of :math:`b = \gamma\lambda(1 - \text{done})`
    after them (the block is then scanned from a zero carry: GAE's own ``A_T = 0``)."""
    from ._numba_cpu import gae

    gamma, lmbda = _full(gamma, value), _full(lmbda, value)
    outputs = list(gae(gamma, lmbda, value, next_value, reward, done, terminated))
    if maps:
        outputs.append(_prefix(gamma * lmbda * np.logical_not(done)))
    return np.stack(outputs)


def _reward2go_block(gamma, reward, done, *, maps):
    r"""Reward-to-go on one block with the fused Numba kernel (and, with ``maps``, the
    running product of :math:`b = \gamma(1 - \text{done})`)."""
    from ._numba_cpu import reward2go

    gamma = _full(gamma, reward)
    outputs = [reward2go(gamma, reward, done)]
    if maps:
        outputs.append(_prefix(gamma * np.logical_not(done)))
    return np.stack(outputs)


def _carries_block(firsts: np.ndarray, init: np.ndarray) -> np.ndarray:
    """The serial pass over one row block's chunk maps ``[m, n, K, f]`` (first output and
    prefix last): the carries entering each chunk's end, ``[n, K, f]``."""
    return _chunked.boundary_carries(firsts[0], firsts[-1], init.astype(firsts.dtype, copy=False))


def _correct_block(maps: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """``output + prefix · carry`` for every output of one block (``carry`` ``[n, 1, f]``)."""
    return np.stack([_chunked.correct(y, maps[-1], carry[:, 0, :]) for y in maps[:-1]])


def _common_dtype(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    dtype = np.result_type(*arrays)
    return tuple(np.asarray(x, dtype) for x in arrays)


# -- graph building ----------------------------------------------------------------------
def _like(x: Any, template: Any) -> Any:
    """``x`` (a ``[1, 1, 1]`` parameter or a full array) with ``template``'s chunks."""
    x = da.asarray(x)
    if x.shape != template.shape and x.size == 1:
        return x.rechunk((1,) * x.ndim)  # one block, broadcast inside every task
    if x.shape != template.shape:
        x = da.broadcast_to(x, template.shape, chunks=template.chunks)
    return x if x.chunks == template.chunks else x.rechunk(template.chunks)


def _stacked(
    func: Any, arrays: list[Any], template: Any, count: int, dtype: Any, **kwargs: Any
) -> Any:
    """``func`` on the blocks of ``[N, T, F]`` arrays chunked like ``template``, returning
    ``count`` stacked outputs (``[count, N, T, F]``). Scalar parameters (one element)
    meet every block."""
    pairs = []
    for x in arrays:
        x = _like(x, template)
        pairs += [x, None if x.size == 1 and template.size > 1 else _INDEX]
    return da.blockwise(
        func,
        "m" + _INDEX,
        *pairs,
        new_axes={"m": count},
        dtype=dtype,
        align_arrays=False,
        concatenate=True,
        **kwargs,
    )


def _join_time_chunks(maps: Any, init: Any, dtype: Any) -> Any:
    """Steps 2 and 3 of :mod:`backends._chunked` on ``[m + 1, N, T, F]`` block maps
    (``m`` outputs scanned from a zero carry, then the prefix products): the serial pass
    over the chunk boundaries, then the blockwise correction. Returns ``[m, N, T, F]``."""
    time_chunks = maps.chunks[2]
    starts = np.cumsum((0, *time_chunks[:-1]))
    # The chunk maps (A_k, B_k): the first step of every time block, [m + 1, N, K, F].
    firsts = maps[:, :, starts, :].rechunk({0: -1, 1: maps.chunks[1], 2: -1, 3: maps.chunks[3]})
    init = init.rechunk((maps.chunks[1], maps.chunks[3]))
    carries = da.blockwise(
        _carries_block,
        "ntf",
        firsts,
        "mntf",
        init,
        "nf",
        dtype=dtype,
        align_arrays=False,
        concatenate=True,
    )
    # One carry per time block: chunks of 1 along K line up with the time blocks.
    carries = carries.rechunk({1: 1})
    return da.blockwise(
        _correct_block,
        "m" + _INDEX,
        maps,
        "m" + _INDEX,
        carries,
        _INDEX,
        adjust_chunks={"m": maps.shape[0] - 1},
        dtype=dtype,
        align_arrays=False,
        concatenate=True,
    )


def _zeros_carry(x: Any, dtype: Any) -> Any:
    return da.zeros((x.shape[0], x.shape[2]), dtype=dtype, chunks=(x.chunks[0], x.chunks[2]))


def _time_chunked(x: Any) -> bool:
    return x.numblocks[1] > 1


def dask_linear_scan(a: Any, b: Any, init: Any) -> Any:
    r"""Lazy reverse scan of ``[N, T, F]`` Dask arrays: :math:`y_t = a_t + b_t y_{t+1}`,
    :math:`y_T = \text{init}` (``[N, F]``).

    ``b`` and ``init`` follow ``a``'s chunks. With one chunk along time every block is
    scanned on its own; with several, by the composition of :mod:`backends._chunked`.
    """
    a = da.asarray(a)
    b = _like(b, a)
    init = da.broadcast_to(da.asarray(init), (a.shape[0], a.shape[2]))
    init = init.rechunk((a.chunks[0], a.chunks[2]))
    dtype = np.result_type(a.dtype, b.dtype, init.dtype)
    if not _time_chunked(a):
        return da.blockwise(
            _scan_block,
            _INDEX,
            a,
            _INDEX,
            b,
            _INDEX,
            init,
            "nf",
            dtype=dtype,
            align_arrays=False,
            concatenate=True,
        )
    maps = _stacked(_scan_maps_block, [a, b], a, 2, dtype)
    return _join_time_chunks(maps, init, dtype)[0]


def _fused(func: Any, arrays: list[Any], primary: Any, count: int) -> Any:
    """A fused Numba estimator on every block; time chunks joined by the composition."""
    primary = da.asarray(primary)
    dtype = primary.dtype
    if not _time_chunked(primary):
        return _stacked(func, arrays, primary, count, dtype, maps=False)
    maps = _stacked(func, arrays, primary, count + 1, dtype, maps=True)
    return _join_time_chunks(maps, _zeros_carry(primary, dtype), dtype)


def dask_gae(gamma, lmbda, value, next_value, reward, done, terminated):
    """Lazy fused GAE: ``(advantage, value_target)`` (see :func:`backends._numba_cpu.gae`)."""
    out = _fused(_gae_block, [gamma, lmbda, value, next_value, reward, done, terminated], value, 2)
    return out[0], out[1]


def dask_reward2go(gamma, reward, done):
    """Lazy fused reward-to-go (see :func:`backends._numba_cpu.reward2go`)."""
    return _fused(_reward2go_block, [gamma, reward, done], reward, 1)[0]
