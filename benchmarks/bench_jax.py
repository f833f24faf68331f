"""Benchmark GAE on JAX: arrayrl's native ``lax.scan`` kernel, arrayrl's reference path
and RLax's ``truncated_generalized_advantage_estimation``, side by side in one run.

Run ``python benchmarks/bench_jax.py`` (RLax is optional: without it its rows say
why they were skipped; ``--json PATH`` dumps the raw numbers, ``--steps 64,4096`` and
``--batch 256`` choose the shapes). The inputs are float32 ``B × T`` trajectories with
``done`` ~ Bernoulli(0.01), ``terminated = done`` and ``next_value[t] = value[t + 1]``,
on which RLax's convention (one discount ``γ (1 - done)`` for both the bootstrap and
the trace) and TorchRL's agree; every competitor's output is checked against arrayrl's
NumPy/Numba result before it is timed.

Competitors (all jitted; each row is ``jax.jit`` of one call)
------------------------------------------------------------
``arrayrl-jax [B,T,1]``
    ``generalized_advantage_estimate`` on TorchRL's batch-major layout, ``kernel="auto"``
    (the native kernel).
``arrayrl-jax [T,B]``
    The same on time-major ``[T, B]`` inputs with ``time_dim=0`` (RLax's and most JAX
    code's layout; the kernel scans it without a transpose).
``arrayrl-reference``
    ``kernel="reference"``: the Array-API loop, which ``jit`` unrolls over T. Its compile
    time grows with T; past ``--reference-max-steps`` it is skipped, with the reason.
``rlax (vmap)``
    ``jax.vmap`` of ``rlax.truncated_generalized_advantage_estimation`` over the batch,
    on ``[B, T]`` rewards and discounts and ``[B, T + 1]`` values.
``arrayrl-numba``
    For scale: the NumPy/Numba kernel on the same data (no compile step).

Compile time is the first call of ``jax.jit(f)`` (tracing, compiling, one run) less one
run; run time is the median of repeated calls with ``block_until_ready``. Ratios
are run (or compile) time over arrayrl-jax [B,T,1]'s.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

GAMMA, LMBDA, DONE_P = 0.99, 0.95, 0.01
CHECK_TOL = 1e-3


def make_inputs(batch: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 ``[B, T]`` trajectories on which RLax's and TorchRL's conventions agree."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((batch, steps + 1)).astype(np.float32)
    done = rng.random((batch, steps)) < DONE_P
    return {
        "value": values[:, :-1],
        "next_value": values[:, 1:],
        "values_ext": values,
        "reward": rng.standard_normal((batch, steps)).astype(np.float32),
        "done": done,
    }


def arrayrl_numpy(x: dict[str, np.ndarray], kernel: str = "auto") -> np.ndarray:
    """arrayrl's GAE on NumPy ``[B, T, 1]`` arrays."""
    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    args = [x[k][..., None] for k in ("value", "next_value", "reward", "done")]
    return generalized_advantage_estimate(GAMMA, LMBDA, *args, kernel=kernel)[0][..., 0]


def competitors(jax: Any, reference_max_steps: int) -> list[tuple[str, Callable, Callable]]:
    """``(name, make_args(inputs) -> args | reason, fn(*args) -> advantage [B, T])``."""
    import jax.numpy as jnp

    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    def gae(kernel: str, time_dim: int) -> Callable:
        def run(value, next_value, reward, done):
            adv = generalized_advantage_estimate(
                GAMMA, LMBDA, value, next_value, reward, done, time_dim=time_dim, kernel=kernel
            )[0]
            return adv[..., 0] if time_dim == -2 else adv.T

        return run

    def batch_major(x: dict) -> tuple:
        return tuple(
            jnp.asarray(x[k][..., None]) for k in ("value", "next_value", "reward", "done")
        )

    def time_major(x: dict) -> tuple:
        return tuple(jnp.asarray(x[k].T) for k in ("value", "next_value", "reward", "done"))

    def reference_args(x: dict) -> tuple | str:
        steps = x["reward"].shape[1]
        if steps > reference_max_steps:
            return (
                f"skipped: T = {steps} > --reference-max-steps {reference_max_steps} "
                "(jit unrolls the loop; compile time grows with T)"
            )
        return batch_major(x)

    rows = [
        ("arrayrl-jax [B,T,1]", batch_major, gae("auto", -2)),
        ("arrayrl-jax [T,B]", time_major, gae("auto", 0)),
        ("arrayrl-reference", reference_args, gae("reference", -2)),
    ]
    rlax_fn = _rlax_gae(jax)
    if isinstance(rlax_fn, str):
        rows.append(("rlax (vmap)", lambda x, why=rlax_fn: why, None))
    else:

        def rlax_args(x: dict) -> tuple:
            return (
                jnp.asarray(x["reward"]),
                jnp.asarray(GAMMA * ~x["done"], dtype=jnp.float32),  # γ (1 - done)
                jnp.asarray(x["values_ext"]),
            )

        rows.append(("rlax (vmap)", rlax_args, rlax_fn))
    return rows


def _rlax_gae(jax: Any) -> Callable | str:
    """vmapped RLax GAE, or why it cannot run here."""
    try:
        import rlax
    except ImportError:
        return "skipped: rlax is not installed (pip install rlax)"

    per_row = rlax.truncated_generalized_advantage_estimation
    return jax.vmap(lambda r, d, v: per_row(r, d, LMBDA, v), in_axes=(0, 0, 0))


def time_compiled(jax: Any, fn: Callable, args: tuple, target_s: float) -> dict:
    """The first call of ``jax.jit(fn)`` (trace, compile, run) and the median time of the
    calls after it, over enough calls to last about ``target_s``; compile time is the
    first call less one run. (Not ``lower().compile()``: with jax 0.10 the compiled
    object rejects the call when the function captured constants.)"""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    out = jax.block_until_ready(jitted(*args))
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    reps = max(5, min(200, int(target_s / max(time.perf_counter() - t0, 1e-6))))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        samples.append(time.perf_counter() - t0)
    run_s = statistics.median(samples)
    return {"compile_s": max(first_s - run_s, 0.0), "run_s": run_s, "reps": reps, "out": out}


def time_numba(x: dict, target_s: float) -> dict:
    arrayrl_numpy(x)  # compile / warm
    samples = []
    deadline = time.perf_counter() + target_s
    while len(samples) < 5 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        arrayrl_numpy(x)
        samples.append(time.perf_counter() - t0)
    return {"compile_s": None, "run_s": statistics.median(samples), "reps": len(samples)}


def bench_steps(jax: Any, batch: int, steps: int, args: argparse.Namespace) -> list[dict]:
    x = make_inputs(batch, steps)
    expected = arrayrl_numpy(x)
    rows = []
    for name, make_args, fn in competitors(jax, args.reference_max_steps):
        call_args = make_args(x)
        if isinstance(call_args, str):
            rows.append({"name": name, "skipped": call_args})
            continue
        timing = time_compiled(jax, fn, call_args, args.target)
        err = float(np.max(np.abs(np.asarray(timing.pop("out")) - expected)))
        rows.append({"name": name, **timing, "max_abs_err": err, "ok": err <= CHECK_TOL})
    rows.append({"name": "arrayrl-numba", **time_numba(x, args.target), "ok": True})
    return rows


def machine_info(jax: Any) -> dict:
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "load_average": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


def fmt_row(row: dict, base: dict | None) -> str:
    if "skipped" in row:
        return f"| {row['name']} | – | – | – | – | {row['skipped']} |"
    compile_s = row["compile_s"]
    comp = "–" if compile_s is None else f"{compile_s:.3f} s"
    comp_ratio = "–"
    if compile_s is not None and base is not None:
        comp_ratio = f"{compile_s / base['compile_s']:.2f}×"
    run_ratio = "–" if base is None else f"{row['run_s'] / base['run_s']:.2f}×"
    check = "ok" if row["ok"] else f"MISMATCH {row.get('max_abs_err'):.2g}"
    return (
        f"| {row['name']} | {comp} | {comp_ratio} | {row['run_s'] * 1e3:.3f} ms | {run_ratio} "
        f"| {check} |"
    )


def table(batch: int, steps: int, rows: list[dict]) -> str:
    base = next((r for r in rows if r["name"] == "arrayrl-jax [B,T,1]" and "run_s" in r), None)
    lines = [
        f"### GAE, B = {batch}, T = {steps}, float32",
        "",
        "| competitor | compile | compile ratio | run (median) | run ratio | check |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(lines + [fmt_row(r, base) for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", default="64,4096", help="comma-separated T values")
    parser.add_argument("--target", type=float, default=0.5, help="seconds per measurement")
    parser.add_argument(
        "--reference-max-steps",
        type=int,
        default=512,
        help="skip arrayrl-reference above this T (its jit compile time grows with T)",
    )
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args(argv)

    import jax

    info = machine_info(jax)
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    results = {"info": info, "shapes": []}
    for steps in (int(s) for s in args.steps.split(",")):
        rows = bench_steps(jax, args.batch, steps, args)
        print("\n" + table(args.batch, steps, rows), flush=True)
        results["shapes"].append({"batch": args.batch, "steps": steps, "rows": rows})
    info["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    print(f"\nload average after: {info['load_average_after']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
