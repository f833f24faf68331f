"""Out-of-core GAE through Dask: throughput on a dataset larger than memory / 4.

Writes (once, out of core, chunk by chunk) a Zarr group in TorchRL's layout with
``state_value``, ``next/state_value``, ``next/reward`` (float32) and ``next/done``,
``next/terminated`` (bool) of shape ``[B, T, 1]`` (default 4096 × 131072: 7.5 GB), then
times, for each scheduler:

* ``read``: a plain read of the same input bytes (every chunk loaded, nothing computed);
* ``copy``: the same read plus writing two float32 arrays the size of the outputs;
* ``gae``: ``arrayrl advantages`` (:func:`arrayrl.data.chunked_store.compute_advantages`):
  read, GAE, and write ``advantage`` and ``value_target`` into the group.

and reports GB/s of input read and the ratios gae / read and gae / copy. Schedulers:
``local:1`` and ``local:2`` (a ``distributed.LocalCluster`` of one-thread worker
processes: the scaling), and ``threads`` (this process). Numba kernels run on one thread per worker
(``NUMBA_NUM_THREADS=1``), so that workers are the only parallelism.

Run (one command; the first run also writes the data)::

    env -u PYTHONDONTWRITEBYTECODE python benchmarks/bench_dask.py --root /work/bigdata

``--rows 256 --steps 8192`` makes a small probe. The arrays are stored without
compression, so the run measures the scan and the storage path, not a codec; a machine
with more free memory than the data serves repeated reads from the page cache (the
report prints the free memory next to the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

INPUTS = ("state_value", "next/state_value", "next/reward", "next/done", "next/terminated")


def _generate(path: Path, rows: int, steps: int, chunk_rows: int, seed: int) -> None:
    """Write the dataset chunk by chunk (never more than a few chunks in memory)."""
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="w")
    rng = da.random.default_rng(seed)
    chunks = (chunk_rows, steps, 1)
    shape = (rows, steps, 1)
    values = {
        "state_value": rng.standard_normal(shape, chunks=chunks, dtype=np.float32),
        "next/state_value": rng.standard_normal(shape, chunks=chunks, dtype=np.float32),
        "next/reward": rng.standard_normal(shape, chunks=chunks, dtype=np.float32),
    }
    done = rng.random(shape, chunks=chunks, dtype=np.float32) < 0.001
    values["next/done"] = done
    values["next/terminated"] = done & (rng.random(shape, chunks=chunks) < 0.5)
    targets = [
        group.create_array(k, shape=shape, chunks=chunks, dtype=x.dtype, compressors=None)
        for k, x in values.items()
    ]
    da.store(list(values.values()), targets, lock=False, scheduler="threads")
    (path / "COMPLETE").write_text(json.dumps({"rows": rows, "steps": steps}))


def _touch(block: np.ndarray) -> np.ndarray:
    """Read a block, compute nothing: one zero per block."""
    return np.zeros((1,) * block.ndim, np.int64)


def _plain_read(path: Path, client: object) -> None:
    """Load every chunk of every input array once."""
    import dask
    import dask.array as da

    arrays = [da.from_zarr(str(path), component=k) for k in INPUTS]
    touched = [x.map_blocks(_touch, chunks=(1,) * x.ndim, dtype=np.int64).sum() for x in arrays]
    if client is None:
        dask.compute(*touched, scheduler="threads")
    else:
        client.gather(client.compute(touched))


def _plain_copy(path: Path, client: object) -> None:
    """Read every input chunk and write two float arrays the size of the outputs (the
    input and output bytes of the GAE run, without the GAE)."""
    import dask
    import dask.array as da
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    arrays = [da.from_zarr(str(path), component=k) for k in INPUTS]
    # Every input is read; the two written arrays depend on all of them, as GAE's do.
    flags = arrays[3].astype(np.float32) + arrays[4].astype(np.float32)
    outputs = [arrays[0] + arrays[1] * 0 + flags * 0, arrays[2] + flags * 0]
    targets = [
        group.create_array(
            f"bench_copy/{i}",
            shape=x.shape,
            dtype=x.dtype,
            chunks=arrays[0].chunksize,
            compressors=None,
            overwrite=True,
        )
        for i, x in enumerate(outputs)
    ]
    stored = da.store(outputs, targets, lock=False, compute=False)
    if client is None:
        dask.compute(stored, scheduler="threads")
    else:
        client.gather(client.compute(stored))


def _input_bytes(path: Path) -> int:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return sum(group[k].nbytes for k in INPUTS)


def _time_scheduler(path: Path, scheduler: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of a plain read and of the GAE run on ``scheduler``.

    A ``local:N`` cluster is started once, before the clocks, and both runs connect to
    its address (``arrayrl advantages --scheduler ADDRESS``).
    """
    from arrayrl.data.chunked_store import _client, compute_advantages

    reads, copies, runs = [], [], []
    with _client(scheduler) as client:
        target = scheduler if client is None else client.scheduler.address
        for _ in range(repeats):
            start = time.perf_counter()
            _plain_read(path, client)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            _plain_copy(path, client)
            copies.append(time.perf_counter() - start)
            start = time.perf_counter()
            compute_advantages(path, scheduler=target, progress=False)
            runs.append(time.perf_counter() - start)
    return {"read_s": min(reads), "copy_s": min(copies), "gae_s": min(runs)}


def _memory_gib() -> tuple[float, float]:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemTotal"] / 2**20, info["MemAvailable"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/work/bigdata", help="where the dataset lives")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=131072)
    parser.add_argument("--chunk-rows", type=int, default=64)
    parser.add_argument(
        "--schedulers", default="local:1,local:2,threads", help="comma-separated schedulers"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--generate-only", action="store_true", help="write the data, stop")
    args = parser.parse_args()

    os.environ["NUMBA_NUM_THREADS"] = "1"  # workers are the parallelism (inherited)
    path = Path(args.root) / f"gae_{args.rows}x{args.steps}.zarr"
    if args.regenerate or not (path / "COMPLETE").exists():
        shutil.rmtree(path, ignore_errors=True)
        start = time.perf_counter()
        _generate(path, args.rows, args.steps, args.chunk_rows, seed=0)
        print(f"generated {path} in {time.perf_counter() - start:.0f} s", flush=True)
    if args.generate_only:
        return
    size = _input_bytes(path)
    total, available = _memory_gib()
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, memory {total:.1f} GiB "
        f"({available:.1f} available); input {size / 1e9:.2f} GB, shape "
        f"[{args.rows}, {args.steps}, 1], chunks [{args.chunk_rows}, {args.steps}, 1]"
    )
    print(
        f"{'scheduler':<10} {'read s':>7} {'read GB/s':>9} {'copy s':>7} {'gae s':>7} "
        f"{'gae GB/s':>8} {'gae/read':>8} {'gae/copy':>8}"
    )
    results = {}
    for scheduler in args.schedulers.split(","):
        timing = _time_scheduler(path, scheduler, args.repeats)
        results[scheduler] = timing
        read_s, copy_s, gae_s = timing["read_s"], timing["copy_s"], timing["gae_s"]
        print(
            f"{scheduler:<10} {read_s:7.1f} {size / read_s / 1e9:9.2f} {copy_s:7.1f} "
            f"{gae_s:7.1f} {size / gae_s / 1e9:8.2f} {gae_s / read_s:8.2f} "
            f"{gae_s / copy_s:8.2f}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"input_bytes": size, **results}, indent=2))


if __name__ == "__main__":
    main()
