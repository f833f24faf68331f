"""Benchmark arrayrl's ClipPPOLoss against TorchRL 0.14.1's on the CPU.

Run ``python benchmarks/bench_losses.py`` (``--batches 64,256`` to choose the batch sizes,
``--repeats N`` for the samples per measurement, ``--variants precomputed`` to skip the
GAE variant, ``--json PATH`` to dump the raw numbers). On a machine shared with other
work, pin the thread pools (``OMP_NUM_THREADS=1``, which torch and NumPy's OpenBLAS read):
their spinning worker threads otherwise stall whenever another process holds a core, and
the stall lands on whichever competitor runs next.

The networks
------------
Both losses use the same networks with the same weights: a TanhNormal actor
``MLP(17, 2 × 6, [64, 64]) → NormalParamExtractor`` (tanh activations, actions in
[-1, 1]) and a critic ``MLP(17, 1, [64, 64])``. The weights are drawn by arrayrl's layers
and loaded into TorchRL's modules with ``load_state_dict(ours.named_parameters())``
(arrayrl's parameter names are ``torch.nn.Sequential``'s). Both losses are built with
their defaults (ε = 0.2, entropy bonus 0.01 with one Monte-Carlo sample of the TanhNormal
entropy, smooth-L1 critic loss with coefficient 1, mean reduction).

The batch
---------
``precomputed``: a flat batch of ``B`` samples holding ``observation`` ~ N(0, 1),
``action`` ~ U(-0.95, 0.95), ``action_log_prob`` (the current policy's log-probability
of the action plus N(0, 0.2) noise, so that some ratios are clipped), ``advantage`` and
``value_target`` ~ N(0, 1). ``gae``: a ``[B / 64, 64]`` trajectory batch without
advantage and value target, with ``next`` observation, reward, ``done`` ~ Bernoulli(0.01)
and ``terminated`` = ``done``; the loss runs its default GAE estimator (γ = 0.99,
λ = 0.95) before the objective. The arrayrl torch batch, the arrayrl NumPy batch and
TorchRL's TensorDict share the same memory.

Competitors
-----------
``fwd+bwd`` (torch, gradients on): ``out = loss(batch)``, then
``(loss_objective + loss_critic + loss_entropy).backward()`` after setting every
parameter's ``.grad`` to ``None`` (what ``optimizer.zero_grad()`` does), for arrayrl and
TorchRL. ``fwd`` (evaluation): ``loss(batch)`` under ``torch.no_grad()`` for arrayrl on
torch and TorchRL, and arrayrl on NumPy arrays.

Timing
------
Each competitor is warmed up, then its call count per sample is set so that a sample
lasts about ``--sample-s`` seconds. The competitors of one batch are interleaved: every
round takes one sample of each (in an order rotated by one per round), for ``--repeats``
rounds. The median of each competitor's samples is reported (time per call), and the
ratio arrayrl / TorchRL as the median over rounds of the ratio of the two samples taken
in the same round (below 1 means arrayrl is faster).

The check
---------
Before timing a batch, both losses run on it once with gradients on. The keys that do
not depend on the entropy's Monte-Carlo draw (``loss_objective``, ``clip_fraction``,
``loss_critic``, ``kl_approx``, ``ESS``, ``max_ratio``, ``mean_ratio``,
``explained_variance``) must agree to float32 tolerance, and so must the gradients of
``loss_objective + loss_critic``; arrayrl on NumPy must agree with arrayrl on torch.
The exit status is 1 if a check fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bench_estimators import cpu_model, fmt_time

#: Thread-pool variables (torch reads OMP_NUM_THREADS, NumPy's OpenBLAS reads both).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")

OBS_DIM, ACT_DIM, CELLS = 17, 6, (64, 64)
ACTOR_SEED, CRITIC_SEED, BATCH_SEED = 1, 2, 0
DEFAULT_BATCHES = (64, 256, 4096, 65536)
#: Time steps of a trajectory in the ``gae`` variant (rows = batch // GAE_STEPS).
GAE_STEPS = 64
#: Keys that do not depend on the Monte-Carlo entropy sample.
CHECKED_KEYS = (
    "loss_objective", "clip_fraction", "loss_critic", "kl_approx", "ESS", "max_ratio",
    "mean_ratio", "explained_variance",
)
RTOL, ATOL = 1e-4, 1e-5
#: Targets of arrayrl / TorchRL fwd+bwd time (issue part 10), by batch size.
TARGETS = {256: 0.5, 65536: 1.0}
VARIANTS = ("precomputed", "gae")


########################################################################
# Networks and losses


def arrayrl_networks(backend: str) -> tuple[Any, Any]:
    """arrayrl's TanhNormal actor and critic on ``backend`` (same weights everywhere)."""
    from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential
    from arrayrl.modules.actors import ProbabilisticActor, ValueOperator
    from arrayrl.modules.distributions import TanhNormal

    body = Sequential(
        MLP(OBS_DIM, 2 * ACT_DIM, list(CELLS), seed=ACTOR_SEED, backend=backend),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        DictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic_mlp = MLP(OBS_DIM, 1, list(CELLS), seed=CRITIC_SEED, backend=backend)
    return actor, ValueOperator(critic_mlp, in_keys=["observation"])


def arrayrl_loss(backend: str) -> Any:
    """arrayrl's ClipPPOLoss with default arguments on ``backend``."""
    from arrayrl.objectives import ClipPPOLoss

    actor, critic = arrayrl_networks(backend)
    return ClipPPOLoss(actor, critic)


def host(x: Any) -> np.ndarray:
    """``x`` (a NumPy array or a torch tensor) as a NumPy array, cut from any graph."""
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


def _state_dict(layer: Any) -> dict[str, Any]:
    """``layer.named_parameters()`` as torch tensors (for ``load_state_dict``)."""
    import torch

    return {k: torch.from_numpy(np.array(host(v))) for k, v in layer.named_parameters().items()}


def torchrl_loss(ours: Any) -> Any:
    """TorchRL's ClipPPOLoss with networks that hold the weights of arrayrl loss ``ours``."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import ClipPPOLoss

    body = torch.nn.Sequential(
        MLP(in_features=OBS_DIM, out_features=2 * ACT_DIM, num_cells=list(CELLS)),
        NormalParamExtractor(),
    )
    body.load_state_dict(_state_dict(ours.actor_network.module.module))
    actor = ProbabilisticActor(
        TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic_mlp = MLP(in_features=OBS_DIM, out_features=1, num_cells=list(CELLS))
    critic_mlp.load_state_dict(_state_dict(ours.critic_network.module))
    return ClipPPOLoss(actor, ValueOperator(critic_mlp, in_keys=["observation"]))


########################################################################
# Batches


def batch_arrays(size: int, variant: str, theirs: Any) -> tuple[dict[str, Any], tuple]:
    """The NumPy arrays of one batch of about ``size`` samples, and its batch shape.

    ``theirs`` (TorchRL's loss) gives the behaviour log-probability. Nested entries sit
    under a ``"next"`` sub-dict.
    """
    rng = np.random.default_rng(BATCH_SEED)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    if variant == "gae":
        shape: tuple[int, ...] = (max(1, size // GAE_STEPS), min(size, GAE_STEPS))
        obs = normal(shape[0], shape[1] + 1, OBS_DIM)
        done = rng.random((*shape, 1)) < 0.01
        arrays = {"observation": np.ascontiguousarray(obs[:, :-1]),
                  "next": {"observation": np.ascontiguousarray(obs[:, 1:]),
                           "reward": normal(*shape, 1), "done": done,
                           "terminated": done.copy()}}
    else:
        shape = (size,)
        arrays = {"observation": normal(size, OBS_DIM), "advantage": normal(size, 1),
                  "value_target": normal(size, 1)}
    arrays["action"] = rng.uniform(-0.95, 0.95, (*shape, ACT_DIM)).astype(np.float32)
    arrays["action_log_prob"] = behaviour_log_prob(theirs, arrays, shape, rng)
    return arrays, shape


def behaviour_log_prob(
    theirs: Any, arrays: dict[str, Any], shape: tuple[int, ...], rng: Any
) -> np.ndarray:
    """TorchRL's current log π(a|s) plus N(0, 0.2) noise (the "old" policy's log-prob)."""
    import torch
    from tensordict import TensorDict

    td = TensorDict(to_torch(arrays), batch_size=shape)
    with torch.no_grad(), theirs.actor_network_params.to_module(theirs.actor_network):
        log_prob = theirs.actor_network.get_dist(td).log_prob(td["action"]).numpy()
    noise = rng.standard_normal(log_prob.shape, dtype=np.float32) * np.float32(0.2)
    return log_prob + noise


def to_torch(arrays: dict[str, Any]) -> dict[str, Any]:
    """Torch tensors sharing the memory of a (nested) dict of NumPy arrays."""
    import torch

    return {k: to_torch(v) if isinstance(v, dict) else torch.from_numpy(v)
            for k, v in arrays.items()}


@dataclass
class Case:
    """One variant at one batch size: the three losses and their views of one batch."""

    variant: str
    size: int
    shape: tuple
    ours: Any
    ours_np: Any
    theirs: Any
    batch: Any
    batch_np: Any
    td: Any

    @property
    def label(self) -> str:
        """The batch as it appears in the tables (``4096`` or ``64 x 64``)."""
        return " x ".join(str(d) for d in self.shape)


def make_case(size: int, variant: str, losses: tuple[Any, Any, Any]) -> Case:
    """Build the batch of ``size`` samples for ``variant`` in all three forms."""
    from tensordict import TensorDict

    from arrayrl.data import ArrayDict

    ours, ours_np, theirs = losses
    arrays, shape = batch_arrays(size, variant, theirs)
    tensors = to_torch(arrays)
    return Case(variant, math.prod(shape), shape, ours, ours_np, theirs,
                batch=ArrayDict(tensors, shape), batch_np=ArrayDict(arrays, shape),
                td=TensorDict(tensors, batch_size=shape))


########################################################################
# Competitors


def fwd_bwd(loss: Any, batch: Any) -> Callable[[], Any]:
    """One training step's loss work: forward, zero the grads, backward of the sum."""
    params = list(loss.parameters())

    def step() -> Any:
        out = loss(batch)
        total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
        for p in params:
            p.grad = None
        total.backward()
        return out

    return step


def fwd_no_grad(loss: Any, batch: Any) -> Callable[[], Any]:
    """The forward pass under ``torch.no_grad()`` (evaluation)."""
    import torch

    def run() -> Any:
        with torch.no_grad():
            return loss(batch)

    return run


def competitors(case: Case) -> dict[str, Callable[[], Any]]:
    """Name → callable, for the variant of ``case``."""
    comps = {
        "arrayrl fwd+bwd": fwd_bwd(case.ours, case.batch),
        "TorchRL fwd+bwd": fwd_bwd(case.theirs, case.td),
    }
    if case.variant == "precomputed":
        comps["arrayrl fwd"] = fwd_no_grad(case.ours, case.batch)
        comps["TorchRL fwd"] = fwd_no_grad(case.theirs, case.td)
        comps["arrayrl NumPy fwd"] = lambda: case.ours_np(case.batch_np)
    return comps


########################################################################
# Correctness check


def compare_outputs(a: Any, b: Any, size: int) -> dict[str, float]:
    """Worst error of ``a`` against ``b`` over :data:`CHECKED_KEYS`, as a multiple of
    the allowed ``ATOL + RTOL·|b|`` (≤ 1 passes). ``clip_fraction`` may differ by one
    sample flipping across a clip bound (1/size)."""
    worst = {"max_abs_diff": 0.0, "tol_ratio": 0.0}
    for key in CHECKED_KEYS:
        x, y = np.asarray(host(a[key]), np.float64), np.asarray(host(b[key]), np.float64)
        diff = float(np.max(np.abs(x - y)))
        allowed = ATOL + RTOL * float(np.max(np.abs(y)))
        if key == "clip_fraction":
            allowed = max(allowed, 1.0 / size + ATOL)
        worst["max_abs_diff"] = max(worst["max_abs_diff"], diff)
        worst["tol_ratio"] = max(worst["tol_ratio"], diff / allowed)
    return worst


def deterministic_grads(loss: Any, batch: Any) -> tuple[Any, list[np.ndarray]]:
    """The outputs and the gradients of ``loss_objective + loss_critic``, in
    parameter order (actor layers, then critic layers, for both libraries)."""
    params = list(loss.parameters())
    for p in params:
        p.grad = None
    out = loss(batch)
    (out["loss_objective"] + out["loss_critic"]).backward()
    grads = [p.grad.detach().numpy().copy() for p in params]
    for p in params:
        p.grad = None
    return out, grads


def grad_error(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    """Worst gradient error as a multiple of ``ATOL + RTOL·max|g|`` per tensor."""
    if [g.shape for g in ours] != [g.shape for g in theirs]:
        raise AssertionError("the two losses' parameters differ in shape or order")
    return max(
        float(np.max(np.abs(a - b))) / (ATOL + RTOL * float(np.max(np.abs(b))))
        for a, b in zip(ours, theirs)
    )


def check_case(case: Case) -> dict[str, Any]:
    """arrayrl (torch) against TorchRL, values and gradients; arrayrl NumPy against torch."""
    import torch

    out, grads = deterministic_grads(case.ours, case.batch)
    out_theirs, grads_theirs = deterministic_grads(case.theirs, case.td)
    check = {"vs_torchrl": compare_outputs(out, out_theirs, case.size),
             "grad_tol_ratio": grad_error(grads, grads_theirs)}
    with torch.no_grad():
        check["numpy_vs_torch"] = compare_outputs(case.ours_np(case.batch_np), out, case.size)
    check["ok"] = (check["vs_torchrl"]["tol_ratio"] <= 1 and check["grad_tol_ratio"] <= 1
                   and check["numpy_vs_torch"]["tol_ratio"] <= 1)
    return check


########################################################################
# Timing


def calibrate(fn: Callable[[], Any], sample_s: float) -> int:
    """Calls per sample so that a sample lasts about ``sample_s`` (after two warm-ups)."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return max(1, min(10_000, round(sample_s / max(once, 1e-7))))


def interleaved(comps: dict[str, Callable[[], Any]], repeats: int, sample_s: float) -> dict:
    """Median seconds per call of every competitor, sampled in interleaved rounds.

    Returns name → ``{"median_s", "min_s", "calls_per_sample", "samples_s"}`` (the
    samples in round order).
    """
    names = list(comps)
    number = {name: calibrate(comps[name], sample_s) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, n = comps[name], number[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {
        name: {"median_s": statistics.median(s), "min_s": min(s),
               "calls_per_sample": number[name], "samples_s": s}
        for name, s in samples.items()
    }


@dataclass
class Row:
    """Results of one variant at one batch size."""

    variant: str
    size: int
    label: str
    times: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


def bench_case(case: Case, args: argparse.Namespace) -> Row:
    """Check, then time every competitor of ``case``."""
    row = Row(case.variant, case.size, case.label)
    row.check = check_case(case)
    row.times = interleaved(competitors(case), args.repeats, args.sample_s)
    return row


########################################################################
# Output


def ratio(row: Row, ours: str, theirs: str) -> float | None:
    """The median over rounds of ``ours``' sample / ``theirs``' sample of the same round
    (paired, so that a load change between rounds cancels); ``None`` if one is absent."""
    if ours not in row.times or theirs not in row.times:
        return None
    pairs = zip(row.times[ours]["samples_s"], row.times[theirs]["samples_s"])
    return statistics.median(a / b for a, b in pairs)


def fmt_check(check: dict[str, Any]) -> str:
    """``OK (0.03 / 0.12 / 0.01)``: the worst errors as multiples of the tolerance
    (values vs TorchRL / gradients vs TorchRL / NumPy vs torch)."""
    parts = (check["vs_torchrl"]["tol_ratio"], check["grad_tol_ratio"],
             check["numpy_vs_torch"]["tol_ratio"])
    status = "OK" if check["ok"] else "FAIL"
    return f"{status} ({' / '.join(f'{p:.2f}' for p in parts)})"


def table(variant: str, rows: list[Row]) -> str:
    """The Markdown table of ``variant``'s rows: times, ratios, check."""
    names = list(rows[0].times)
    pairs = [("fwd+bwd", "arrayrl fwd+bwd", "TorchRL fwd+bwd")]
    if "arrayrl fwd" in names:
        pairs.append(("fwd", "arrayrl fwd", "TorchRL fwd"))
    header = ["batch", *names, *(f"ratio {p[0]}" for p in pairs), "check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row.label, *(fmt_time(row.times[n]) for n in names)]
        cells += [f"{ratio(row, ours, theirs):.2f}x" for _, ours, theirs in pairs]
        cells.append(fmt_check(row.check))
        lines.append("| " + " | ".join(cells) + " |")
    title = ("advantage and value target in the batch" if variant == "precomputed"
             else f"GAE inside the loss, batch = rows x {GAE_STEPS} steps")
    return f"### ClipPPOLoss, {title}\n\n" + "\n".join(lines)


def target_lines(rows: list[Row]) -> list[str]:
    """One line per target of :data:`TARGETS` that was measured (precomputed variant)."""
    lines = []
    for row in rows:
        goal = TARGETS.get(row.size)
        if row.variant != "precomputed" or goal is None:
            continue
        got = ratio(row, "arrayrl fwd+bwd", "TorchRL fwd+bwd")
        verdict = "met" if got <= goal else "MISSED"
        lines.append(f"target at batch {row.size}: arrayrl/TorchRL fwd+bwd = {got:.2f}x "
                     f"(<= {goal:g}x): {verdict}")
    return lines


def machine_info() -> dict[str, Any]:
    """CPU, cores, versions, torch threads, load, date and command."""
    import tensordict
    import torch
    import torchrl

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "torch_threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k, "") for k in THREAD_ENV},
        "load_avg_start": os.getloadavg(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
    }


def header_text(info: dict[str, Any], args: argparse.Namespace) -> str:
    """The machine block printed above the tables."""
    load = ", ".join(f"{x:.2f}" for x in info["load_avg_start"])
    return "\n".join([
        f"CPU: {info['cpu']} ({info['cores']} cores; torch threads {info['torch_threads']}; "
        + " ".join(f"{k}={v or '(unset)'}" for k, v in info["env"].items()) + ")",
        f"Python {info['python']}, numpy {info['numpy']}, torch {info['torch']}, "
        f"torchrl {info['torchrl']}, tensordict {info['tensordict']}",
        f"Date: {info['date']}   load average at start: {load}",
        f"Command: {info['command']}",
        f"Times are medians of {args.repeats} interleaved samples (about {args.sample_s:g} s "
        "each) per call; ratio = arrayrl / TorchRL, median of the per-round ratios; check = "
        "worst error as a multiple of the tolerance (values / gradients vs TorchRL / NumPy "
        "vs torch).",
    ])


########################################################################
# Command line


def parse_batches(text: str) -> tuple[int, ...]:
    """Parse ``"64,256"`` into ``(64, 256)``."""
    return tuple(int(item) for item in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--batches", type=parse_batches, default=DEFAULT_BATCHES,
                   help="comma-separated batch sizes (default 64,256,4096,65536)")
    p.add_argument("--repeats", type=int, default=11,
                   help="interleaved samples per competitor (default 11)")
    p.add_argument("--sample-s", type=float, default=0.05,
                   help="seconds per sample, sets the calls per sample (default 0.05)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of precomputed,gae (default both)")
    p.add_argument("--json", metavar="PATH", default=None, help="dump the raw numbers")
    args = p.parse_args(argv)
    args.variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; expected {VARIANTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, optionally dump JSON; 1 if a check failed."""
    args = parse_args(argv)
    info = machine_info()
    print(header_text(info, args), flush=True)
    ours = arrayrl_loss("torch")
    losses = (ours, arrayrl_loss("numpy"), torchrl_loss(ours))
    results: dict[str, list[Row]] = {}
    for variant in args.variants:
        results[variant] = [bench_case(make_case(size, variant, losses), args)
                            for size in args.batches]
        print("\n" + table(variant, results[variant]), flush=True)
    lines = target_lines(results.get("precomputed", []))
    info["load_avg_end"] = os.getloadavg()
    print("\n" + "\n".join([*lines, "load average at end: "
                            + ", ".join(f"{x:.2f}" for x in info["load_avg_end"])]))
    if args.json:
        dump = {"machine": info, "args": {k: v for k, v in vars(args).items() if k != "json"},
                "results": {k: [vars(r) for r in v] for k, v in results.items()}}
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
    return 0 if all(r.check["ok"] for rows in results.values() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
