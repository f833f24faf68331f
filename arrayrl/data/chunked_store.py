"""Advantages of datasets larger than memory: Zarr groups and HDF5 files, through Dask.

The arrays are read lazily as Dask arrays (chunked as stored, or as asked), the
estimator builds a lazy graph (see :mod:`backends._dask`), and the results are written
back into the same Zarr group or HDF5 file chunk by chunk, so no step holds more than a
few chunks in memory. Used by ``arrayrl advantages``; needs the ``dask`` extra (dask,
distributed, zarr; h5py for HDF5).

Key names follow TorchRL's layout: ``state_value`` at the root, ``reward``, ``done``,
``terminated`` and the next ``state_value`` under ``next/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_KEYS", "ESTIMATORS", "OUTPUT_KEYS", "compute_advantages", "parse_chunks"]

#: Where each estimator input lives in the store (TorchRL's layout).
DEFAULT_KEYS: dict[str, str] = {
    "state_value": "state_value",
    "next_state_value": "next/state_value",
    "reward": "next/reward",
    "done": "next/done",
    "terminated": "next/terminated",
}
#: Where the results are written.
OUTPUT_KEYS: dict[str, str] = {"advantage": "advantage", "value_target": "value_target"}
ESTIMATORS = ("gae", "td_lambda")
#: Schedulers run in this process; anything else is a distributed scheduler's address,
#: or ``local:N`` for a ``LocalCluster`` of ``N`` one-thread worker processes.
LOCAL_SCHEDULERS = ("threads", "processes", "sync")


def parse_chunks(text: str | None) -> tuple[int, ...] | None:
    """``"256,-1"`` → ``(256, -1)``: chunk sizes of the leading axes (batch, time, ...);
    ``-1`` is a whole axis. ``None`` or ``""`` keeps the stored chunks."""
    if not text:
        return None
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--chunks must be integers separated by commas, got {text!r}") from None
    if any(size == 0 or size < -1 for size in sizes):
        raise ValueError(f"--chunks sizes must be positive or -1 (a whole axis), got {text!r}")
    return sizes


def _is_hdf5(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".h5", ".hdf5", ".hdf")


def _full_chunks(chunks: tuple[int, ...] | None, ndim: int) -> Any:
    """``chunks`` padded with whole axes, or ``None`` for the stored chunking."""
    if chunks is None:
        return None
    return (*chunks[:ndim], *(-1,) * (ndim - len(chunks)))


def _read(source: Any, keys: Mapping[str, str], chunks: tuple[int, ...] | None) -> dict[str, Any]:
    """The estimator inputs as Dask arrays; ``KeyError`` naming a missing key.

    ``source`` is an open Zarr group or h5py file; a missing ``terminated`` falls back to
    ``done`` (the estimators' default).
    """
    import dask.array as da

    arrays = {}
    for name, key in keys.items():
        if key not in source:
            if name == "terminated":
                continue
            raise KeyError(f"{name}: no array {key!r} in the dataset (set it with --key)")
        stored = source[key]
        wanted = _full_chunks(chunks, stored.ndim)
        arrays[name] = da.from_array(stored, chunks=wanted or stored.chunks or "auto", lock=False)
    return arrays


def estimate(
    arrays: Mapping[str, Any], estimator: str, gamma: float, lmbda: float, time_dim: int
) -> dict[str, Any]:
    """Lazy ``{"advantage", "value_target"}`` of ``estimator`` (``gae`` or ``td_lambda``)."""
    from arrayrl.objectives.value import functional as F

    args = (
        arrays["state_value"],
        arrays["next_state_value"],
        arrays["reward"],
        arrays["done"],
        arrays.get("terminated"),
    )
    if estimator == "gae":
        advantage, target = F.generalized_advantage_estimate(gamma, lmbda, *args, time_dim=time_dim)
    elif estimator == "td_lambda":
        target = F.td_lambda_return_estimate(gamma, lmbda, *args[1:], time_dim=time_dim)
        advantage = target - arrays["state_value"]
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return {"advantage": advantage, "value_target": target}


@contextlib.contextmanager
def _client(scheduler: str) -> Iterator[Any]:
    """A ``distributed.Client`` for an address or ``local:N``; ``None`` for local ones."""
    if scheduler in LOCAL_SCHEDULERS:
        yield None
        return
    import distributed

    if scheduler.startswith("local:"):
        workers = int(scheduler.split(":", 1)[1])
        with (
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
    else:
        with distributed.Client(scheduler) as client:
            yield client


def _run(tasks: list[Any], scheduler: str, client: Any, progress: bool) -> None:
    """Compute ``tasks`` (Dask collections) on ``scheduler`` with a progress display."""
    import dask

    if client is None:
        display = contextlib.nullcontext()
        if progress:
            from dask.diagnostics import ProgressBar

            display = ProgressBar(dt=0.5)
        with display:
            dask.compute(*tasks, scheduler=scheduler)
        return
    futures = client.compute(tasks)
    if progress:
        import distributed

        distributed.progress(futures)
    client.gather(futures)


def _zarr_writes(group: Any, outputs: Mapping[str, Any], template: Any) -> list[Any]:
    """Lazy writes of ``outputs`` into new arrays of the Zarr ``group`` (opened for
    writing), chunked as the Dask arrays and compressed like the ``template`` input."""
    import dask.array as da

    targets = [
        group.create_array(
            OUTPUT_KEYS[name],
            shape=x.shape,
            dtype=x.dtype,
            chunks=tuple(c[0] for c in x.chunks),
            compressors=template.compressors,
            overwrite=True,
        )
        for name, x in outputs.items()
    ]
    return [da.store(list(outputs.values()), targets, lock=False, compute=False)]


def _hdf5_writes(file: Any, outputs: Mapping[str, Any]) -> list[Any]:
    import dask.array as da

    targets = []
    for name, x in outputs.items():
        key = OUTPUT_KEYS[name]
        if key in file:
            del file[key]
        chunk = tuple(c[0] for c in x.chunks)
        targets.append(file.create_dataset(key, shape=x.shape, dtype=x.dtype, chunks=chunk))
    return [da.store(list(outputs.values()), targets, lock=True, compute=False)]


def compute_advantages(
    path: str | Path,
    *,
    estimator: str = "gae",
    gamma: float = 0.99,
    lmbda: float = 0.95,
    keys: Mapping[str, str] | None = None,
    chunks: tuple[int, ...] | None = None,
    scheduler: str = "threads",
    time_dim: int = -2,
    progress: bool = True,
) -> dict[str, tuple[int, ...]]:
    """Compute advantages of the dataset at ``path`` out of core and write them beside it.

    ``path`` is a Zarr group (a folder) or an HDF5 file; ``keys`` overrides entries of
    :data:`DEFAULT_KEYS`. Results go to ``advantage`` and ``value_target`` in the same
    group or file (replacing earlier ones). ``scheduler`` is ``threads``,
    ``processes``, ``sync``, ``local:N`` (a ``LocalCluster`` of ``N`` worker processes)
    or a distributed scheduler's address; HDF5 files take ``threads`` and ``sync`` only
    (h5py handles do not travel to other processes). Returns the written shapes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    keys = {**DEFAULT_KEYS, **(keys or {})}
    unknown = set(keys) - set(DEFAULT_KEYS)
    if unknown:
        raise ValueError(f"unknown key names {sorted(unknown)}; expected {list(DEFAULT_KEYS)}")
    if _is_hdf5(path):
        if scheduler not in ("threads", "sync"):
            raise ValueError(f"HDF5 files take --scheduler threads or sync, got {scheduler!r}")
        import h5py

        with h5py.File(path, "r+") as file:
            outputs = estimate(_read(file, keys, chunks), estimator, gamma, lmbda, time_dim)
            _run(_hdf5_writes(file, outputs), scheduler, None, progress)
    else:
        import zarr

        group = zarr.open_group(str(path), mode="r+")
        outputs = estimate(_read(group, keys, chunks), estimator, gamma, lmbda, time_dim)
        writes = _zarr_writes(group, outputs, group[keys["state_value"]])
        with _client(scheduler) as client:
            _run(writes, scheduler, client, progress)
    return {OUTPUT_KEYS[name]: tuple(x.shape) for name, x in outputs.items()}
