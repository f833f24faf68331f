"""Benchmark arrayrl's value estimators against TorchRL and a memory-copy floor.

Run ``python benchmarks/bench_estimators.py`` (``--quick`` for a short run, ``--shapes``
to choose the shapes, ``--json PATH`` to dump the raw numbers). For every shape
``(B, T)`` the inputs are float32 ``[B, T, 1]`` arrays (batch-major, TorchRL's layout),
``done`` is Bernoulli(0.01) and ``terminated`` is a random half of ``done``.

Competitors
-----------
GAE
    ``arrayrl-numba`` (NumPy arrays, kernel "auto" = Numba), ``arrayrl-torch`` (CPU torch
    tensors viewing the same memory, no grad, kernel "auto"), ``arrayrl-reference``
    (NumPy, ``kernel="reference"``), TorchRL's ``generalized_advantage_estimate``
    (``trl-loop``) and ``vec_generalized_advantage_estimate`` (``trl-vec``), and ``copy``.
TD(λ)
    ``arrayrl-numba`` against TorchRL's ``td_lambda_return_estimate`` and
    ``vec_td_lambda_return_estimate``, and ``copy``.
V-trace
    ``arrayrl-numba`` against TorchRL's ``vtrace_advantage_estimate``, and ``copy``.
All three
    ``arrayrl-out``: ``arrayrl-numba`` writing into preallocated ``out=`` buffers (made
    on the warm-up call and reused), as a training loop would; it does not pay the
    first-touch page zeroing of fresh outputs, like the copy.

The copy floor
--------------
``copy`` times ``np.copyto(dst, src)`` on preallocated uint8 buffers that move as many
bytes as the estimator must: every input is read once and every output written once.
With ``terminated`` passed as its own bool array, one GAE element reads
3 × 4 (value, next value, reward) + 2 × 1 (done, terminated) = 14 bytes and writes
2 × 4 (advantage, value target) = 8 bytes, 22 bytes of traffic. A copy of ``n`` bytes
reads ``n`` and writes ``n``, so the GAE floor copies ``22 / 2 = 11`` bytes per element.
TD(λ) reads 2 × 4 + 2 × 1 and writes 4 (7 bytes copied per element); V-trace reads
5 × 4 + 2 × 1 and writes 2 × 4 (15 bytes per element). The copy runs on one thread into
memory already touched; the estimators also allocate their outputs on every call.

Timing
------
Every measured callable is warmed up first (all Numba kernels are compiled once on a tiny
input before any timing, and every callable is called once more before its samples).
The warm-up call's time sets the repetition count so that one measurement lasts about
``--target`` seconds, with at least ``--min-reps`` repetitions; the median of the
``time.perf_counter`` samples is reported. Slow competitors (``arrayrl-reference``,
TorchRL's) are first probed on two slices of the batch; where the extrapolated time of
one call exceeds their limit they are skipped and reported as "skipped (too slow)".
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

GAMMA = 0.99
LMBDA = 0.95
DONE_P = 0.01
FULL_SHAPES = ((16, 128), (256, 256), (4096, 64), (64, 4096), (1024, 1024), (4096, 2048))
QUICK_SHAPES = FULL_SHAPES[:3]
CHECK_TOL = 1e-3
#: Rows of the batch slice used for the correctness check when no TorchRL call ran in full.
CHECK_ROWS = 64
#: Shapes with fewer elements than this are never probed before being timed.
PROBE_MIN_SIZE = 1 << 20

#: Environment variables that change how the thread pools wait and are reported.
THREAD_ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")

IMPORT_SNIPPET = (
    "import sys, time; t = time.perf_counter(); "
    "import arrayrl.objectives, arrayrl.objectives.value.functional; "
    "dt = time.perf_counter() - t; "
    "print(dt, 'torch' in sys.modules, 'numba' in sys.modules)"
)


########################################################################
# Data model


@dataclass
class Competitor:
    """One implementation of an estimator.

    Attributes
    ----------
    name : str
        Column name in the tables.
    fn : callable
        Takes the input dict (NumPy or torch, see ``torch_inputs``) and returns the
        checked output (advantage or return) as a NumPy array or a torch tensor.
    torch_inputs : bool
        Whether ``fn`` takes torch tensors (views of the NumPy inputs).
    limit_s : float or None
        Skip the competitor where one call is estimated to take longer than this.
    torchrl : bool
        Whether this is a TorchRL implementation (enters the "TorchRL-best" ratio).
    """

    name: str
    fn: Callable[[dict[str, Any]], Any]
    torch_inputs: bool = False
    limit_s: float | None = None
    torchrl: bool = False


@dataclass
class Estimator:
    """An estimator and its competitors.

    Attributes
    ----------
    name : str
        Title of its table.
    competitors : list of Competitor
        The first one is ``arrayrl-numba``, the baseline of every ratio.
    read_bytes, write_bytes : int
        Bytes read and written per element, for the copy floor.
    """

    name: str
    competitors: list[Competitor]
    read_bytes: int
    write_bytes: int

    @property
    def copy_bytes(self) -> int:
        """Bytes per element that the floor copies (reads them and writes them once)."""
        return (self.read_bytes + self.write_bytes) // 2


@dataclass
class Row:
    """Results of one estimator at one shape.

    Attributes
    ----------
    shape : tuple of int
        ``(B, T)``.
    times : dict
        Competitor name to ``{"median_s", "reps", "min_s"}`` or ``{"skipped": reason}``.
    check : dict
        The correctness check: ``{"against", "max_abs_diff", "ok"}``.
    """

    shape: tuple[int, int]
    times: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


########################################################################
# Inputs


def make_inputs(batch: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 ``[B, T, 1]`` inputs of every estimator.

    Parameters
    ----------
    batch, steps : int
        ``B`` and ``T``.
    seed : int
        Seed of the NumPy generator.

    Returns
    -------
    dict of str to np.ndarray
        ``value``, ``next_value``, ``reward``, ``log_pi``, ``log_mu`` (float32) and
        ``done``, ``terminated`` (bool, ``terminated`` ⊆ ``done``).
    """
    rng = np.random.default_rng(seed)
    shape = (batch, steps, 1)

    def normal(scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))

    done = rng.random(shape) < DONE_P
    terminated = done & (rng.random(shape) < 0.5)
    return {
        "value": normal(), "next_value": normal(), "reward": normal(),
        "log_pi": normal(0.1), "log_mu": normal(0.1), "done": done, "terminated": terminated,
    }


def torch_views(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Torch CPU tensors sharing the memory of ``inputs`` (no copy, no grad)."""
    import torch

    return {k: torch.from_numpy(v) for k, v in inputs.items()}


def batch_slice(inputs: dict[str, Any], rows: int) -> dict[str, Any]:
    """The first ``rows`` rows of every input (contiguous views)."""
    return {k: v[:rows] for k, v in inputs.items()}


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy array of ``x`` (NumPy array or torch tensor)."""
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


########################################################################
# Competitors


def with_out(count: int, call: Callable[[dict[str, Any], Any], Any]) -> Callable:
    """``call(x, out)`` with ``out`` buffers (``count`` of them) kept per input shape, so
    that every call after the warm-up writes into memory already touched."""
    buffers: dict[tuple, Any] = {}

    def run(x: dict[str, Any]) -> Any:
        like = x["reward"]
        key = (like.shape, like.dtype)
        if key not in buffers:
            outs = tuple(np.empty_like(like) for _ in range(count))
            buffers.clear()  # one shape at a time: free the previous shape's memory
            buffers[key] = outs if count > 1 else outs[0]
        result = call(x, buffers[key])
        return result[0] if isinstance(result, tuple) else result

    return run


def gae_competitors() -> list[Competitor]:
    """arrayrl (Numba, torch, reference) and TorchRL (loop, vec) GAE."""
    import torchrl.objectives.value.functional as trl

    import arrayrl.objectives.value.functional as F

    def arrayrl_gae(kernel: str) -> Callable[[dict[str, Any]], Any]:
        def run(x: dict[str, Any]) -> Any:
            return F.generalized_advantage_estimate(
                GAMMA, LMBDA, x["value"], x["next_value"], x["reward"], x["done"],
                x["terminated"], kernel=kernel,
            )[0]

        return run

    def torchrl_gae(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
        def run(x: dict[str, Any]) -> Any:
            return fn(GAMMA, LMBDA, x["value"], x["next_value"], x["reward"], x["done"],
                      x["terminated"])[0]

        return run

    def gae_out(x: dict[str, Any], out: Any) -> Any:
        return F.generalized_advantage_estimate(
            GAMMA, LMBDA, x["value"], x["next_value"], x["reward"], x["done"],
            x["terminated"], out=out,
        )

    return [
        Competitor("arrayrl-numba", arrayrl_gae("auto")),
        Competitor("arrayrl-out", with_out(2, gae_out)),
        Competitor("arrayrl-torch", arrayrl_gae("auto"), torch_inputs=True),
        Competitor("arrayrl-reference", arrayrl_gae("reference"), limit_s=2.0),
        Competitor("trl-loop", torchrl_gae(trl.generalized_advantage_estimate),
                   torch_inputs=True, limit_s=5.0, torchrl=True),
        Competitor("trl-vec", torchrl_gae(trl.vec_generalized_advantage_estimate),
                   torch_inputs=True, limit_s=5.0, torchrl=True),
    ]


def td_lambda_competitors() -> list[Competitor]:
    """arrayrl (Numba) and TorchRL (loop, vec) TD(λ) returns."""
    import torchrl.objectives.value.functional as trl

    import arrayrl.objectives.value.functional as F

    def arrayrl_td(x: dict[str, Any]) -> Any:
        return F.td_lambda_return_estimate(
            GAMMA, LMBDA, x["next_value"], x["reward"], x["done"], x["terminated"]
        )

    def torchrl_td(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
        def run(x: dict[str, Any]) -> Any:
            return fn(GAMMA, LMBDA, x["next_value"], x["reward"], x["done"], x["terminated"])

        return run

    def td_out(x: dict[str, Any], out: Any) -> Any:
        return F.td_lambda_return_estimate(
            GAMMA, LMBDA, x["next_value"], x["reward"], x["done"], x["terminated"], out=out
        )

    return [
        Competitor("arrayrl-numba", arrayrl_td),
        Competitor("arrayrl-out", with_out(1, td_out)),
        Competitor("trl-loop", torchrl_td(trl.td_lambda_return_estimate),
                   torch_inputs=True, limit_s=5.0, torchrl=True),
        Competitor("trl-vec", torchrl_td(trl.vec_td_lambda_return_estimate),
                   torch_inputs=True, limit_s=5.0, torchrl=True),
    ]


def vtrace_competitors() -> list[Competitor]:
    """arrayrl (Numba) and TorchRL (loop; TorchRL has no vec V-trace) V-trace."""
    import torchrl.objectives.value.functional as trl

    import arrayrl.objectives.value.functional as F

    def vtrace(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
        def run(x: dict[str, Any]) -> Any:
            return fn(GAMMA, x["log_pi"], x["log_mu"], x["value"], x["next_value"],
                      x["reward"], x["done"], x["terminated"])[0]

        return run

    def vtrace_out(x: dict[str, Any], out: Any) -> Any:
        return F.vtrace_advantage_estimate(
            GAMMA, x["log_pi"], x["log_mu"], x["value"], x["next_value"], x["reward"],
            x["done"], x["terminated"], out=out,
        )

    return [
        Competitor("arrayrl-numba", vtrace(F.vtrace_advantage_estimate)),
        Competitor("arrayrl-out", with_out(2, vtrace_out)),
        Competitor("trl-loop", vtrace(trl.vtrace_advantage_estimate),
                   torch_inputs=True, limit_s=5.0, torchrl=True),
    ]


def estimators() -> list[Estimator]:
    """The three benchmarked estimators with their byte counts per element."""
    return [
        Estimator("GAE", gae_competitors(), read_bytes=3 * 4 + 2, write_bytes=2 * 4),
        Estimator("TD(lambda)", td_lambda_competitors(), read_bytes=2 * 4 + 2, write_bytes=4),
        Estimator("V-trace", vtrace_competitors(), read_bytes=5 * 4 + 2, write_bytes=2 * 4),
    ]


########################################################################
# Timing


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds taken by one call of ``fn`` and its result."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(fn: Callable[[], Any], target_s: float, min_reps: int) -> tuple[dict, Any]:
    """Median time of ``fn`` after one warm-up call.

    Parameters
    ----------
    fn : callable
        Called without arguments.
    target_s : float
        Wanted total duration of the samples; sets the repetition count.
    min_reps : int
        Least number of samples.

    Returns
    -------
    timing : dict
        ``{"median_s", "min_s", "reps"}``.
    out : object
        The result of the last call.
    """
    warm, out = time_once(fn)
    reps = max(min_reps, min(10_000, math.ceil(target_s / max(warm, 1e-7))))
    samples = []
    for _ in range(reps):
        dt, out = time_once(fn)
        samples.append(dt)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "reps": reps}, out


def estimate_call_s(fn: Callable[[dict[str, Any]], Any], inputs: dict[str, Any]) -> float:
    """Extrapolate one call's time on ``inputs`` from calls on two batch slices.

    The time is fitted as ``a + b * B`` through calls on ``B/16`` and ``B/8`` rows, which
    accounts for a per-step overhead that does not grow with ``B`` (TorchRL's loops). The
    result is at least the time on ``B/8`` rows.
    """
    batch = next(iter(inputs.values())).shape[0]
    small, large = max(1, batch // 16), max(2, batch // 8)
    fn(batch_slice(inputs, small))  # warm-up
    t_small, _ = time_once(lambda: fn(batch_slice(inputs, small)))
    t_large, _ = time_once(lambda: fn(batch_slice(inputs, large)))
    slope = max(0.0, (t_large - t_small) / (large - small))
    return max(t_large, t_large + slope * (batch - large))


def run_competitor(
    comp: Competitor, inputs: dict[str, Any], target_s: float, min_reps: int
) -> tuple[dict, Any]:
    """Time ``comp`` on ``inputs`` unless its probe says it is slower than its limit."""
    size = math.prod(next(iter(inputs.values())).shape)
    if comp.limit_s is not None and size >= PROBE_MIN_SIZE:
        est = estimate_call_s(comp.fn, inputs)
        if est > comp.limit_s:
            return {"skipped": f"too slow: est. {est:.1f} s/call > {comp.limit_s:g} s"}, None
    return measure(lambda: comp.fn(inputs), target_s, min_reps)


def measure_copy(n_bytes: int, target_s: float, min_reps: int) -> dict:
    """Time ``np.copyto`` of ``n_bytes`` bytes between two preallocated uint8 buffers."""
    src = np.ones(n_bytes, dtype=np.uint8)
    dst = np.zeros(n_bytes, dtype=np.uint8)
    timing, _ = measure(lambda: np.copyto(dst, src), target_s, min_reps)
    timing["bytes"] = n_bytes
    return timing


########################################################################
# Correctness check


def check_row(
    est: Estimator, outputs: dict[str, Any], np_in: dict[str, Any], t_in: dict[str, Any]
) -> dict:
    """Max abs difference between arrayrl-numba's output and TorchRL's.

    Uses the output of the first TorchRL competitor that ran on the full shape; where all
    of them were skipped, TorchRL's first function runs on the first ``CHECK_ROWS`` rows.
    """
    ours = to_numpy(outputs["arrayrl-numba"])
    for comp in est.competitors:
        if comp.torchrl and outputs.get(comp.name) is not None:
            diff = float(np.max(np.abs(ours - to_numpy(outputs[comp.name]))))
            return {"against": comp.name, "max_abs_diff": diff, "ok": diff < CHECK_TOL}
    comp = next(c for c in est.competitors if c.torchrl)
    rows = min(CHECK_ROWS, ours.shape[0])
    with _no_grad():
        theirs = to_numpy(comp.fn(batch_slice(t_in, rows)))
    diff = float(np.max(np.abs(ours[:rows] - theirs)))
    return {"against": f"{comp.name}[:{rows}]", "max_abs_diff": diff, "ok": diff < CHECK_TOL}


def check_torch_path(outputs: dict[str, Any]) -> dict | None:
    """Max abs difference between arrayrl-torch and arrayrl-numba, where both ran."""
    if outputs.get("arrayrl-torch") is None:
        return None
    diff = np.max(np.abs(to_numpy(outputs["arrayrl-torch"]) - outputs["arrayrl-numba"]))
    return {"max_abs_diff": float(diff), "ok": bool(diff < CHECK_TOL)}


def _no_grad() -> Any:
    import torch

    return torch.no_grad()


########################################################################
# Benchmark driver


def bench_shape(est: Estimator, shape: tuple[int, int], args: argparse.Namespace) -> Row:
    """Time every competitor of ``est`` and the copy floor at ``shape``; check outputs."""
    np_in = make_inputs(*shape)
    t_in = torch_views(np_in)
    row, outputs = Row(shape), {}
    for comp in est.competitors:
        inputs = t_in if comp.torch_inputs else np_in
        with _no_grad():
            row.times[comp.name], outputs[comp.name] = run_competitor(
                comp, inputs, args.target, args.min_reps
            )
    n_bytes = est.copy_bytes * shape[0] * shape[1]
    row.times["copy"] = measure_copy(n_bytes, args.target, args.min_reps)
    row.check = check_row(est, outputs, np_in, t_in)
    torch_check = check_torch_path(outputs)
    if torch_check is not None:
        row.check["arrayrl-torch"] = torch_check
    return row


def warm_up_kernels(ests: list[Estimator]) -> float:
    """Compile (or load from cache) the Numba kernels: every competitor on a tiny input.

    Both the serial and the parallel kernels are triggered (a small and a larger input).
    Returns the seconds spent.
    """
    start = time.perf_counter()
    for shape in ((2, 8), (64, 512)):
        np_in = make_inputs(*shape)
        t_in = torch_views(np_in)
        for est in ests:
            for comp in est.competitors:
                if not comp.torchrl:
                    comp.fn(t_in if comp.torch_inputs else np_in)
    return time.perf_counter() - start


def threading_layer() -> str:
    """Numba's threading layer (known once a parallel kernel has run)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return "none used"


def import_time(runs: int) -> dict:
    """Median time of ``import arrayrl.objectives`` (and its estimator functions, which
    bring in NumPy) in fresh interpreters.

    Also reports whether torch or numba were in ``sys.modules`` after the import.
    """
    times, heavy = [], set()
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_SNIPPET], capture_output=True, text=True, check=True
        ).stdout.split()
        times.append(float(out[0]))
        heavy.update(name for name, flag in zip(("torch", "numba"), out[1:]) if flag == "True")
    return {"median_s": statistics.median(times), "runs": runs, "loaded": sorted(heavy)}


########################################################################
# Machine info


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU, cores, library versions, thread counts, load, date and command."""
    import numba
    import torch
    import torchrl

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "torch_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k, "") for k in THREAD_ENV},
        "load_avg_start": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
    }


########################################################################
# Output


def fmt_time(timing: dict | None) -> str:
    """A median time in µs or ms, or the skip notice."""
    if timing is None:
        return "-"
    if "skipped" in timing:
        return "skipped (too slow)"
    t = timing["median_s"]
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def ratios(row: Row, est: Estimator) -> dict[str, str]:
    """TorchRL-best / numba, numba / copy and arrayrl-torch / numba as strings."""
    med = {k: v["median_s"] for k, v in row.times.items() if "median_s" in v}
    numba_t = med["arrayrl-numba"]
    trl = [med[c.name] for c in est.competitors if c.torchrl and c.name in med]
    if trl:
        best = f"{min(trl) / numba_t:.1f}x"
    else:
        limit = min(c.limit_s for c in est.competitors if c.torchrl)
        best = f">{limit / numba_t:.0f}x"
    out = {"trl-best/numba": best, "numba/copy": f"{numba_t / med['copy']:.2f}x"}
    if "arrayrl-out" in med:
        out["out/copy"] = f"{med['arrayrl-out'] / med['copy']:.2f}x"
    if "arrayrl-torch" in med:
        out["torch/numba"] = f"{med['arrayrl-torch'] / numba_t:.2f}x"
    return out


def fmt_check(check: dict) -> str:
    """The correctness check as ``OK 2.4e-07 (trl-loop)``."""
    status = "OK" if check["ok"] else "FAIL"
    text = f"{status} {check['max_abs_diff']:.1e} ({check['against']})"
    torch_check = check.get("arrayrl-torch")
    if torch_check is not None:
        text += f"; torch {'OK' if torch_check['ok'] else 'FAIL'}"
    return text


def table(est: Estimator, rows: list[Row]) -> str:
    """A Markdown table of ``est``'s results: times, ratios and the check."""
    names = [c.name for c in est.competitors] + ["copy"]
    ratio_names = list(ratios(rows[0], est)) if rows else []
    header = ["B x T", *names, *ratio_names, "check |numba - TorchRL|"]
    lines = [
        f"### {est.name} (copy floor: {est.copy_bytes} B/element)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in rows:
        cells = [f"{row.shape[0]} x {row.shape[1]}"]
        cells += [fmt_time(row.times.get(n)) for n in names]
        cells += list(ratios(row, est).values())
        cells.append(fmt_check(row.check))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header_text(info: dict, imp: dict, warm_s: float) -> str:
    """The machine-info block and the import-time result."""
    load = ", ".join(f"{x:.2f}" for x in info["load_avg_start"])
    env = " ".join(f"{k}={v or '(unset)'}" for k, v in info["env"].items())
    loaded = ", ".join(imp["loaded"]) or "neither torch nor numba"
    return "\n".join([
        f"CPU: {info['cpu']} ({info['cores']} cores; numba threads {info['numba_threads']}, "
        f"torch threads {info['torch_threads']})",
        f"Python {info['python']}, numpy {info['numpy']}, numba {info['numba']}, "
        f"torch {info['torch']}, torchrl {info['torchrl']}",
        f"Numba threading layer: {info['threading_layer']}; {env}",
        f"Date: {info['date']}   load average at start: {load}",
        f"Command: {info['command']}",
        "",
        f"import arrayrl.objectives + .value.functional: {imp['median_s'] * 1e3:.1f} ms "
        f"(median of {imp['runs']} fresh interpreters); loaded after it: {loaded}",
        f"Numba warm-up (compile or cache load), excluded from timings: {warm_s:.2f} s",
        "Times are medians; float32 [B, T, 1]; done ~ Bernoulli(0.01), terminated ⊆ done.",
        "copy = np.copyto of (bytes read + bytes written) / 2 per element (reads and writes "
        "the same traffic as the estimator).",
    ])


########################################################################
# Command line


def parse_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"16x128,256x256"`` into ``((16, 128), (256, 256))``."""
    shapes = []
    for item in text.split(","):
        batch, steps = item.lower().split("x")
        shapes.append((int(batch), int(steps)))
    return tuple(shapes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true",
                   help="only the first three shapes, shorter measurements")
    p.add_argument("--shapes", type=parse_shapes, default=None,
                   help="comma-separated BxT list, e.g. 256x256,4096x2048")
    p.add_argument("--json", metavar="PATH", default=None, help="dump the raw numbers")
    p.add_argument("--target", type=float, default=None,
                   help="seconds per measurement (default 0.3, 0.1 with --quick)")
    p.add_argument("--min-reps", type=int, default=None,
                   help="least samples per measurement (default 5, 3 with --quick)")
    p.add_argument("--import-runs", type=int, default=5,
                   help="fresh interpreters for the import-time measurement")
    args = p.parse_args(argv)
    if args.shapes is None:
        args.shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.target is None:
        args.target = 0.1 if args.quick else 0.3
    if args.min_reps is None:
        args.min_reps = 3 if args.quick else 5
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, optionally dump JSON; 1 if a check failed."""
    args = parse_args(argv)
    info = machine_info()
    imp = import_time(args.import_runs)
    ests = estimators()
    warm_s = warm_up_kernels(ests)
    info["threading_layer"] = threading_layer()
    print(header_text(info, imp, warm_s), flush=True)
    results: dict[str, list[Row]] = {}
    for est in ests:
        results[est.name] = [bench_shape(est, shape, args) for shape in args.shapes]
        print("\n" + table(est, results[est.name]), flush=True)
    info["load_avg_end"] = os.getloadavg()
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in info['load_avg_end'])}")
    if args.json:
        dump = {"machine": info, "import": imp, "warm_up_s": warm_s,
                "results": {k: [vars(r) for r in v] for k, v in results.items()}}
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
    failed = any(
        not r.check["ok"] or not r.check.get("arrayrl-torch", {"ok": True})["ok"]
        for rows in results.values() for r in rows
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
