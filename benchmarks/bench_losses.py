"""Benchmark arrayrl's losses against TorchRL 0.14.1's on the CPU.

The losses: ClipPPOLoss, SACLoss, TD3Loss, TD3BCLoss, CQLLoss, IQLLoss, DQNLoss,
DistributionalDQNLoss (C51) and MAPPOLoss. Run ``python benchmarks/bench_losses.py``
(``--losses ppo,sac,td3,td3bc,cql,iql,dqn,c51,mappo`` to choose the losses, by default
``ppo,sac,td3``, the runs recorded first in RESULTS.md; ``--variants`` also chooses
MAPPOLoss's; ``--batches 64,256`` for ClipPPOLoss's batch sizes,
``--offpolicy-batches 256,4096`` for the others' and ``--qnets 2,10`` for the Q ensemble
sizes of SAC, TD3, TD3+BC and IQL, ``--repeats N`` for the samples per measurement,
``--variants precomputed`` to skip the GAE variant, ``--phases`` to profile the
off-policy steps at batch 256, ``--json PATH`` to dump the raw numbers). On a machine
shared with other work, pin the thread pools (``OMP_NUM_THREADS=1``, which torch and
NumPy's OpenBLAS read): their spinning worker threads otherwise stall whenever another
process holds a core, and the stall lands on whichever competitor runs next.

The networks (ClipPPOLoss)
--------------------------
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

SACLoss and TD3Loss
-------------------
Observation 17, action 6, every network an MLP with two 256-unit ReLU layers: SAC's actor
``MLP(17, 12) → NormalParamExtractor`` with a TanhNormal on [-1, 1], TD3's a deterministic
``Actor(MLP(17, 6) → tanh)``, the critic ``ValueOperator(MLP(23, 1), in_keys=
["observation", "action"])`` expanded into ``--qnets`` members. arrayrl's networks draw the
weights and its loss (``seed=0``) the Q members; TorchRL's modules load the weights, and
the members (and target members) are copied into TorchRL's ``qvalue_network_params`` and
``target_qvalue_network_params``, so every competitor computes the same members. Both
losses get ``num_qvalue_nets`` and, for SAC, ``target_entropy=-6`` (what "auto" gives),
for TD3 ``bounds=(-1, 1)``; everything else is the default (TD(0), γ = 0.99, smooth-L1,
mean reduction; TD3: target actor, noise 0.2 clipped at 0.5). The batch is ``B``
transitions: observations ~ N(0, 1), ``action`` ~ U(-0.95, 0.95), reward ~ N(0, 1),
``done`` ~ Bernoulli(0.01), ``terminated`` = ``done``.

Competitors: ``fwd+bwd`` is the loss, zeroing the gradients and the backward of the sum
of the ``loss_*`` terms, for arrayrl with its own modules (the ensemble as stacked
matmuls), TorchRL (``vmap`` over the members) and arrayrl with TorchRL's modules (the
adapted path: the members run once each, no vmap, what a drop-in user gets); ``fwd`` is
the forward under ``torch.no_grad()`` (arrayrl, TorchRL) and on NumPy arrays.

The check draws alike: before one step of each, TorchRL and the adapted loss reseed
torch's default generator and arrayrl reseeds its own (``loss.seed``) with the same seed,
so all three draw the same SAC actions and TD3 smoothing noise (the draws are made in
TorchRL's order). Every output key, the ``td_error`` priority and the gradient of every
parameter (grouped as actor / Q members / log α, in order) must agree to float32
tolerance; arrayrl on NumPy must agree with arrayrl on torch, both then drawing with
NumPy's generator from one seed (``generator_mode = "numpy"``).

TD3BCLoss, CQLLoss, IQLLoss
---------------------------
The same networks, batch and competitors: TD3+BC has TD3's (``bounds=(-1, 1)``, α = 2.5),
CQL and IQL SAC's TanhNormal actor, and IQL a value network ``ValueOperator(MLP(17, 1),
in_keys=["observation"])`` besides. CQL gets ``target_entropy=-6`` and TorchRL's fixed two
Q networks (``--qnets`` does not apply), otherwise its defaults: ``num_random`` = 10 (so
``3 × 10`` proposals per state: uniform on [-1, 1], π(·|s), π(·|s′)), temperature 1,
``min_q_weight`` 1, deterministic backup, no Lagrange multiplier. The backward pass is
of ``loss_actor + loss_qvalue + loss_cql + loss_alpha`` (CQL; its ``loss_actor_bc`` is
only TorchRL's behaviour-cloning warm-up), ``loss_actor + loss_qvalue + loss_value``
(IQL) and ``loss_actor + loss_qvalue`` (TD3+BC). IQL draws nothing; CQL's draws (the
next actions, the uniform and policy proposals, the BC and actor draws) are matched as
SAC's are. arrayrl's ``loss_cql`` is the paper's estimator (the log-sum-exp over the 3K
proposals of a state), not TorchRL 0.14.1's (over the three groups of each proposal
index; the recorded deviation ``torchrl-cql-logsumexp-over-groups``): for the check,
TorchRL's ``loss_cql`` is recomputed from the proposal Q-values and log-probabilities
its own forward evaluated, with the graph, by the conformance suite's oracle
(:func:`torchrl_cql_oracle`), so every output and gradient is still compared. The timed
TorchRL loss is the unpatched one.

DQNLoss and DistributionalDQNLoss
---------------------------------
One value network ``MLP(8, 4)`` (DQN, a ``QValueActor``) or ``MLP(8, 51 × 4)`` reshaped
to ``[51 atoms, 4 actions]`` (C51, a ``DistributionalQValueActor`` with the support
``linspace(-10, 10, 51)``), two 256-unit ReLU layers, one-hot actions; drawn by arrayrl's
layers and loaded into TorchRL's modules. DQN: ``action_space="one-hot"``, TD(0) with
γ = 0.99, l2, mean; C51: ``gamma=0.99``, mean. Both keep a target copy (equal to the
network at construction in every loss). The batch: observations ~ N(0, 1), the action a
one-hot of a uniform index, reward ~ N(0, 1), done ~ Bernoulli(0.01), terminated =
done. Nothing is drawn; the check compares ``loss``, the priority and every gradient.

MAPPOLoss
---------
TorchRL's multi-agent PPO tutorial at its size: 600 vectorised environments x 10 steps
x 3 agents (6000 frames; VMAS navigation: observation 18, action 2 per agent). The actor
is a decentralised ``MultiAgentMLP(18, 2 x 2, 3, share_params=True, depth=2,
num_cells=256)`` (Tanh) → ``NormalParamExtractor`` → TanhNormal on [-1, 1]; the critic a
centralised ``MultiAgentMLP(18, 1, 3, share_params=True, depth=2, num_cells=256)``.
arrayrl's layers draw the weights, TorchRL's ``MultiAgentMLP`` s load them (the parameter
names are the same). Both losses keep MAPPO's defaults (multi-agent GAE with γ = 0.99,
λ = 0.95, advantage standardised per agent, ε = 0.2, entropy 0.01 with one Monte-Carlo
sample, smooth-L1 critic) and ``set_keys`` the nested ``("agents", ...)`` keys. The
batch: observations ~ N(0, 1), actions drawn by the actor, their log-probabilities plus
N(0, 0.2) noise, a team reward ~ N(0, 1) and ``done`` ~ Bernoulli(0.01) under
``"next"``; ``precomputed`` adds per-agent advantages and value targets ~ N(0, 1), ``gae``
lets the loss run its multi-agent GAE. Competitors (``fwd+bwd``, the backward of
``loss_objective + loss_critic + loss_entropy``): arrayrl on its own modules, TorchRL,
and arrayrl on TorchRL's modules (the drop-in). The check compares the outputs that do
not depend on the entropy draw (ESS and explained_variance are reduced over every batch
dim by arrayrl, over dim 0 by TorchRL 0.14.1) and the gradients of ``loss_objective +
loss_critic`` by parameter name.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_estimators import cpu_model, fmt_time

from arrayrl.modules import Layer

#: Thread-pool variables (torch reads OMP_NUM_THREADS, NumPy's OpenBLAS reads both).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")

OBS_DIM, ACT_DIM, CELLS = 17, 6, (64, 64)
ACTOR_SEED, CRITIC_SEED, BATCH_SEED = 1, 2, 0
DEFAULT_BATCHES = (64, 256, 4096, 65536)
#: Time steps of a trajectory in the ``gae`` variant (rows = batch // GAE_STEPS).
GAE_STEPS = 64
#: Keys that do not depend on the Monte-Carlo entropy sample.
CHECKED_KEYS = (
    "loss_objective",
    "clip_fraction",
    "loss_critic",
    "kl_approx",
    "ESS",
    "max_ratio",
    "mean_ratio",
    "explained_variance",
)
RTOL, ATOL = 1e-4, 1e-5
#: Targets of arrayrl / TorchRL fwd+bwd time (issue part 10), by batch size.
TARGETS = {256: 0.5, 65536: 1.0}
VARIANTS = ("precomputed", "gae")
LOSSES = ("ppo", "sac", "td3", "td3bc", "cql", "iql", "dqn", "c51", "mappo")
#: The losses run without ``--losses`` (the earlier recorded runs' default).
DEFAULT_LOSSES = ("ppo", "sac", "td3")


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
        arrays = {
            "observation": np.ascontiguousarray(obs[:, :-1]),
            "next": {
                "observation": np.ascontiguousarray(obs[:, 1:]),
                "reward": normal(*shape, 1),
                "done": done,
                "terminated": done.copy(),
            },
        }
    else:
        shape = (size,)
        arrays = {
            "observation": normal(size, OBS_DIM),
            "advantage": normal(size, 1),
            "value_target": normal(size, 1),
        }
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

    return {
        k: to_torch(v) if isinstance(v, dict) else torch.from_numpy(v) for k, v in arrays.items()
    }


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
    return Case(
        variant,
        math.prod(shape),
        shape,
        ours,
        ours_np,
        theirs,
        batch=ArrayDict(tensors, shape),
        batch_np=ArrayDict(arrays, shape),
        td=TensorDict(tensors, batch_size=shape),
    )


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


def compare_outputs(
    a: Any, b: Any, size: int, keys: tuple[str, ...] = CHECKED_KEYS
) -> dict[str, float]:
    """Worst error of ``a`` against ``b`` over ``keys``, as a multiple of the allowed
    ``ATOL + RTOL·|b|`` (≤ 1 passes). ``clip_fraction`` may differ by one sample
    flipping across a clip bound (1/size)."""
    worst = {"max_abs_diff": 0.0, "tol_ratio": 0.0}
    for key in keys:
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
    # TorchRL 0.14.1 reduces ESS and explained_variance over dim 0 only: on a [B, T]
    # batch they are not comparable (the recorded deviation torchrl-ppo-diagnostics-first-dim)
    keys = (
        CHECKED_KEYS
        if len(case.shape) == 1
        else tuple(k for k in CHECKED_KEYS if k not in ("ESS", "explained_variance"))
    )
    check = {
        "vs_torchrl": compare_outputs(out, out_theirs, case.size, keys),
        "grad_tol_ratio": grad_error(grads, grads_theirs),
    }
    with torch.no_grad():
        check["numpy_vs_torch"] = compare_outputs(case.ours_np(case.batch_np), out, case.size)
    check["ok"] = (
        check["vs_torchrl"]["tol_ratio"] <= 1
        and check["grad_tol_ratio"] <= 1
        and check["numpy_vs_torch"]["tol_ratio"] <= 1
    )
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
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = comps[name], number[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {
        name: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "calls_per_sample": number[name],
            "samples_s": s,
        }
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
    parts = (
        check["vs_torchrl"]["tol_ratio"],
        check["grad_tol_ratio"],
        check["numpy_vs_torch"]["tol_ratio"],
    )
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
    title = (
        "advantage and value target in the batch"
        if variant == "precomputed"
        else f"GAE inside the loss, batch = rows x {GAE_STEPS} steps"
    )
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
        lines.append(
            f"target at batch {row.size}: arrayrl/TorchRL fwd+bwd = {got:.2f}x "
            f"(<= {goal:g}x): {verdict}"
        )
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
    return "\n".join(
        [
            f"CPU: {info['cpu']} ({info['cores']} cores; torch threads {info['torch_threads']}; "
            + " ".join(f"{k}={v or '(unset)'}" for k, v in info["env"].items())
            + ")",
            f"Python {info['python']}, numpy {info['numpy']}, torch {info['torch']}, "
            f"torchrl {info['torchrl']}, tensordict {info['tensordict']}",
            f"Date: {info['date']}   load average at start: {load}",
            f"Command: {info['command']}",
            f"Times are medians of {args.repeats} interleaved samples (about {args.sample_s:g} s "
            "each) per call; ratio = arrayrl / TorchRL, median of the per-round ratios; check = "
            "worst error as a multiple of the tolerance (ClipPPOLoss: values / gradients vs "
            "TorchRL / NumPy vs torch; the off-policy losses: values / gradients vs TorchRL / "
            "arrayrl with TorchRL's modules vs TorchRL / NumPy vs torch).",
        ]
    )


########################################################################
# Off-policy losses: SACLoss and TD3Loss


#: Hidden layers of every off-policy network (standard SAC / TD3: two 256-unit ReLU layers).
OFF_CELLS = (256, 256)
OFF_BATCHES = (256, 4096)
QNETS = (2, 10)
OFF_KINDS = ("sac", "td3", "td3bc", "cql", "iql", "dqn", "c51")
#: The kinds on discrete actions (one value network over the actions, no actor).
DISCRETE = ("dqn", "c51")
#: Kinds whose network count is fixed (TorchRL's CQLLoss has two Q networks, DQN and C51
#: one value network); the others take ``--qnets``.
FIXED_QNETS = {"cql": 2, "dqn": 1, "c51": 1}
#: The discrete losses' networks: observation 8 and 4 one-hot actions (LunarLander's
#: sizes); C51 with 51 atoms evenly spaced on [-10, 10] (the paper's).
DISCRETE_OBS, N_ACTIONS, ATOMS, V_RANGE = 8, 4, 51, (-10.0, 10.0)
ACTION_SPACE, C51_GAMMA = "one-hot", 0.99
#: The seed of IQL's value network.
VALUE_SEED = 3
#: The loss's seed (its Q members, drawn once) and the seed of the checked draws.
LOSS_SEED, DRAW_SEED = 0, 5
#: Targets of arrayrl / TorchRL fwd+bwd time, by loss and batch size: SACLoss and TD3Loss
#: (issue 9), CQLLoss (issue 10).
OFF_TARGETS = {"sac": {256: 0.5}, "td3": {256: 0.5}, "cql": {256: 0.5}}
#: The class names, the same in ``arrayrl.objectives`` and ``torchrl.objectives``.
OFF_TITLES = {
    "sac": "SACLoss",
    "td3": "TD3Loss",
    "td3bc": "TD3BCLoss",
    "cql": "CQLLoss",
    "iql": "IQLLoss",
    "dqn": "DQNLoss",
    "c51": "DistributionalDQNLoss",
}
#: The terms summed for the backward pass (what TorchRL's training scripts sum; CQL's
#: ``loss_actor_bc`` is only its behaviour-cloning warm-up, left out).
OFF_TERMS = {
    "sac": ("loss_actor", "loss_qvalue", "loss_alpha"),
    "td3": ("loss_actor", "loss_qvalue"),
    "td3bc": ("loss_actor", "loss_qvalue"),
    "cql": ("loss_actor", "loss_qvalue", "loss_cql", "loss_alpha"),
    "iql": ("loss_actor", "loss_qvalue", "loss_value"),
    "dqn": ("loss",),
    "c51": ("loss",),
}


def offpolicy_networks(kind: str, backend: str) -> tuple[Any, ...]:
    """arrayrl's networks for ``kind`` on ``backend``, in the loss's argument order: a
    TanhNormal ``ProbabilisticActor`` (SAC, CQL, IQL) or a deterministic ``Actor`` ending
    in tanh (TD3, TD3+BC), ``ValueOperator(MLP(obs + act, 1), in_keys=["observation",
    "action"])``, and for IQL ``ValueOperator(MLP(obs, 1))``; ReLU MLPs. DQN and C51:
    :func:`discrete_networks`."""
    from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential, Tanh
    from arrayrl.modules.actors import Actor, ProbabilisticActor, ValueOperator
    from arrayrl.modules.distributions import TanhNormal

    if kind in DISCRETE:
        return discrete_networks(kind, backend)

    def mlp(n_in: int, n_out: int, seed: int) -> Any:
        return MLP(
            n_in, n_out, list(OFF_CELLS), activation_class="relu", seed=seed, backend=backend
        )

    qvalue = ValueOperator(
        mlp(OBS_DIM + ACT_DIM, 1, CRITIC_SEED), in_keys=["observation", "action"]
    )
    if kind in ("td3", "td3bc"):
        return Actor(
            Sequential(mlp(OBS_DIM, ACT_DIM, ACTOR_SEED), Tanh()), in_keys=["observation"]
        ), qvalue
    body = Sequential(mlp(OBS_DIM, 2 * ACT_DIM, ACTOR_SEED), NormalParamExtractor())
    actor = ProbabilisticActor(
        DictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    if kind == "iql":
        return actor, qvalue, ValueOperator(mlp(OBS_DIM, 1, VALUE_SEED), in_keys=["observation"])
    return actor, qvalue


def discrete_networks(kind: str, backend: str) -> tuple[Any]:
    """arrayrl's value network for DQN (``QValueActor(MLP(obs, actions))``) or C51
    (``DistributionalQValueActor(MLP(obs, atoms · actions) → [atoms, actions])``), one-hot
    actions."""
    from arrayrl.modules import MLP, DistributionalQValueActor, QValueActor, Sequential

    width = N_ACTIONS * (ATOMS if kind == "c51" else 1)
    mlp = MLP(
        DISCRETE_OBS,
        width,
        list(OFF_CELLS),
        activation_class="relu",
        seed=CRITIC_SEED,
        backend=backend,
    )
    if kind == "dqn":
        return (QValueActor(mlp, action_space=ACTION_SPACE),)
    support = np.linspace(*V_RANGE, ATOMS, dtype=np.float32)
    return (
        DistributionalQValueActor(
            Sequential(mlp, AtomsByActions()), support=support, action_space=ACTION_SPACE
        ),
    )


class AtomsByActions(Layer):
    """``[..., atoms · actions]`` → ``[..., atoms, actions]``, the reshape of TorchRL's
    ``MLP(out_features=(atoms, actions))``."""

    def apply(self, params: Any, x: Any) -> Any:
        from arrayrl.backends import backend_of

        return backend_of(x).xp.reshape(x, (*x.shape[:-1], ATOMS, N_ACTIONS))


def torchrl_offpolicy_networks(kind: str, *ours: Any) -> tuple[Any, ...]:
    """TorchRL's networks for ``kind`` holding the weights of arrayrl's ``ours`` (as
    :func:`offpolicy_networks` returns them)."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import MLP, Actor, ProbabilisticActor, TanhNormal, ValueOperator

    if kind in DISCRETE:
        return torchrl_discrete_networks(kind, *ours)

    def mlp(n_in: int, n_out: int) -> Any:
        return MLP(
            in_features=n_in,
            out_features=n_out,
            num_cells=list(OFF_CELLS),
            activation_class=torch.nn.ReLU,
        )

    actor, qvalue, *value = ours
    q_mlp = mlp(OBS_DIM + ACT_DIM, 1)
    q_mlp.load_state_dict(_state_dict(qvalue.module))
    their_q = ValueOperator(q_mlp, in_keys=["observation", "action"])
    if kind in ("td3", "td3bc"):
        net = torch.nn.Sequential(mlp(OBS_DIM, ACT_DIM), torch.nn.Tanh())
        net.load_state_dict(_state_dict(actor.module))
        return Actor(net, in_keys=["observation"]), their_q
    body = torch.nn.Sequential(mlp(OBS_DIM, 2 * ACT_DIM), NormalParamExtractor())
    body.load_state_dict(_state_dict(actor.module.module))
    their_actor = ProbabilisticActor(
        TensorDictModule(body, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    if kind != "iql":
        return their_actor, their_q
    v_mlp = mlp(OBS_DIM, 1)
    v_mlp.load_state_dict(_state_dict(value[0].module))
    return their_actor, their_q, ValueOperator(v_mlp, in_keys=["observation"])


def torchrl_discrete_networks(kind: str, ours: Any) -> tuple[Any]:
    """TorchRL's ``QValueActor`` / ``DistributionalQValueActor`` over a TorchRL MLP
    holding the weights of arrayrl's value network ``ours``."""
    import torch
    from torchrl.modules import MLP, DistributionalQValueActor, QValueActor

    out: Any = (ATOMS, N_ACTIONS) if kind == "c51" else N_ACTIONS
    mlp = MLP(
        in_features=DISCRETE_OBS,
        out_features=out,
        num_cells=list(OFF_CELLS),
        activation_class=torch.nn.ReLU,
    )
    layers = ours.module.module  # the MLP, or Sequential(MLP, AtomsByActions) for C51
    mlp.load_state_dict(_state_dict(layers[0] if kind == "c51" else layers))
    if kind == "dqn":
        return (QValueActor(mlp, in_keys=["observation"], action_space=ACTION_SPACE),)
    support = torch.linspace(*V_RANGE, ATOMS)
    return (
        DistributionalQValueActor(
            mlp, support=support, in_keys=["observation"], action_space=ACTION_SPACE
        ),
    )


def offpolicy_kwargs(kind: str, qnets: int) -> dict[str, Any]:
    """The constructor arguments both libraries get (otherwise their defaults)."""
    if kind in ("sac", "cql"):  # -|A|, what "auto" gives; explicit, the actors carry no spec
        ensemble = {"num_qvalue_nets": qnets} if kind == "sac" else {}
        return {**ensemble, "target_entropy": -float(ACT_DIM)}
    if kind == "iql":
        return {"num_qvalue_nets": qnets}
    if kind == "dqn":  # TorchRL's DQNLoss cannot read it from a QValueActor without a spec
        return {"action_space": ACTION_SPACE}
    if kind == "c51":
        return {"gamma": C51_GAMMA}
    return {"num_qvalue_nets": qnets, "bounds": (-1.0, 1.0)}


def kind_qnets(kind: str, args: argparse.Namespace) -> tuple[int, ...]:
    """The network counts to measure ``kind`` with: ``--qnets``, or its fixed count."""
    return (FIXED_QNETS[kind],) if kind in FIXED_QNETS else args.qnets


@dataclass
class OffLosses:
    """The four losses of one (kind, Q nets) pair, all computing the same Q members."""

    kind: str
    qnets: int
    ours: Any
    ours_np: Any
    theirs: Any
    adapted: Any


def _copy_members(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """Copy the stacked Q members ``src`` (``{path: array}``) into the torch leaves ``dst``."""
    import torch

    with torch.no_grad():
        for path, leaf in dst.items():
            leaf.copy_(torch.as_tensor(np.asarray(host(src[path]))))


def offpolicy_losses(kind: str, qnets: int) -> OffLosses:
    """arrayrl's loss on NumPy and on torch (built alike on NumPy, so that the loss's
    generator draws the same members, then one moved to torch), TorchRL's, and arrayrl's
    with TorchRL's modules (the adapted path); TorchRL's and the adapted loss's members and
    target members are overwritten with arrayrl's (DQN and C51 have one network, whose
    target copy starts equal to it in every loss)."""
    import copy

    import torchrl.objectives as trl

    import arrayrl.objectives as arl
    from arrayrl.modules import flatten_params

    ours_cls, their_cls = getattr(arl, OFF_TITLES[kind]), getattr(trl, OFF_TITLES[kind])
    kwargs = offpolicy_kwargs(kind, qnets)
    seed = {} if kind in DISCRETE else {"seed": LOSS_SEED}  # DQN and C51 draw nothing
    ours_np = ours_cls(*offpolicy_networks(kind, "numpy"), **seed, **kwargs)
    ours = ours_cls(*offpolicy_networks(kind, "numpy"), **seed, **kwargs).to("torch")
    modules = torchrl_offpolicy_networks(kind, *offpolicy_networks(kind, "numpy"))
    theirs = their_cls(*modules, **kwargs)
    adapted = ours_cls(*copy.deepcopy(modules), **kwargs)
    if kind in DISCRETE:
        return OffLosses(kind, qnets, ours, ours_np, theirs, adapted)
    members = flatten_params(ours.qvalue_network_params)
    targets = flatten_params(ours.target_qvalue_network_params)
    for loss in (theirs, adapted):
        if loss is theirs:
            online = {".".join(k): v for k, v in theirs.qvalue_network_params.items(True, True)}
            target = {
                ".".join(k): v for k, v in theirs.target_qvalue_network_params.items(True, True)
            }
        else:
            online = flatten_params(adapted.qvalue_network_params)
            target = flatten_params(adapted.target_qvalue_network_params)
        _copy_members(online, members)
        _copy_members(target, targets)
    return OffLosses(kind, qnets, ours, ours_np, theirs, adapted)


def offpolicy_arrays(kind: str, size: int) -> dict[str, Any]:
    """One batch of ``size`` transitions for ``kind``: ``observation`` and next
    ``observation`` ~ N(0, 1), ``action`` ~ U(-0.95, 0.95) (DQN, C51: one-hot, uniform
    over the actions), ``reward`` ~ N(0, 1), ``done`` ~ Bernoulli(0.01),
    ``terminated`` = ``done``."""
    rng = np.random.default_rng(BATCH_SEED)
    obs_dim = DISCRETE_OBS if kind in DISCRETE else OBS_DIM

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    done = rng.random((size, 1)) < 0.01
    if kind in DISCRETE:
        action = np.eye(N_ACTIONS, dtype=np.int64)[rng.integers(0, N_ACTIONS, size)]
    else:
        action = rng.uniform(-0.95, 0.95, (size, ACT_DIM)).astype(np.float32)
    return {
        "observation": normal(size, obs_dim),
        "action": action,
        "next": {
            "observation": normal(size, obs_dim),
            "reward": normal(size, 1),
            "done": done,
            "terminated": done.copy(),
        },
    }


@dataclass
class OffCase:
    """One (kind, Q nets, batch size) cell: the losses and their own views of one batch
    (each loss writes its ``td_error`` into its own)."""

    losses: OffLosses
    size: int
    batch: Any
    batch_adapted: Any
    batch_np: Any
    td: Any


def make_offpolicy_case(losses: OffLosses, size: int) -> OffCase:
    """The batch of ``size`` transitions, as ArrayDicts and a TensorDict sharing memory."""
    from tensordict import TensorDict

    from arrayrl.data import ArrayDict

    arrays = offpolicy_arrays(losses.kind, size)
    tensors = to_torch(arrays)
    return OffCase(
        losses,
        size,
        batch=ArrayDict(tensors, (size,)),
        batch_adapted=ArrayDict(tensors, (size,)),
        batch_np=ArrayDict(arrays, (size,)),
        td=TensorDict(tensors, batch_size=(size,)),
    )


def offpolicy_step(loss: Any, batch: Any, terms: tuple[str, ...]) -> Callable[[], Any]:
    """Forward, zero the grads, backward of the sum of ``terms``."""
    params = list(loss.parameters())

    def step() -> Any:
        out = loss(batch)
        total = sum(out[t] for t in terms)
        for p in params:
            p.grad = None
        total.backward()
        return out

    return step


def offpolicy_competitors(case: OffCase) -> dict[str, Callable[[], Any]]:
    """Name → callable: fwd+bwd for arrayrl (its modules / TorchRL's) and TorchRL, and the
    forward alone (no gradients) for arrayrl on torch and NumPy and TorchRL."""
    ls, terms = case.losses, OFF_TERMS[case.losses.kind]
    return {
        "arrayrl fwd+bwd": offpolicy_step(ls.ours, case.batch, terms),
        "TorchRL fwd+bwd": offpolicy_step(ls.theirs, case.td, terms),
        "arrayrl (TorchRL modules) fwd+bwd": offpolicy_step(ls.adapted, case.batch_adapted, terms),
        "arrayrl fwd": fwd_no_grad(ls.ours, case.batch),
        "TorchRL fwd": fwd_no_grad(ls.theirs, case.td),
        "arrayrl NumPy fwd": lambda: ls.ours_np(case.batch_np),
    }


def _seeded_step(
    loss: Any,
    batch: Any,
    terms: tuple[str, ...],
    own_seed: bool,
    outputs: Callable[[Any, Any], Any] | None = None,
) -> tuple:
    """Outputs, ``td_error`` and gradients (``{group: [grad, ...]}`` by parameter-name
    prefix, in parameter order, trainable parameters only) of one step whose draws start
    from :data:`DRAW_SEED`: ``own_seed`` reseeds the loss's own generator, else torch's
    default one is reseeded (TorchRL, and arrayrl with TorchRL's modules, draw from it in
    the same order). ``outputs(out, batch)``, if given, replaces the outputs before the
    backward pass (the CQL oracle, :func:`torchrl_cql_oracle`)."""
    import torch

    named = [(n, p) for n, p in loss.named_parameters() if p.requires_grad]
    for _, p in named:
        p.grad = None
    if own_seed:
        loss.seed = DRAW_SEED
    torch.manual_seed(DRAW_SEED)
    out = loss(batch)
    if outputs is not None:
        out = outputs(out, batch)
    sum(out[t] for t in terms).backward()
    grads: dict[str, list[np.ndarray]] = {}
    for name, p in named:
        g = np.zeros(tuple(p.shape), np.float32) if p.grad is None else p.grad.numpy().copy()
        grads.setdefault(name.split(".")[0], []).append(g)
        p.grad = None
    return out, host(batch["td_error"]), grads


@contextlib.contextmanager
def torchrl_cql_oracle(loss: Any) -> Iterator[Callable[[Any, Any], Any]]:
    """TorchRL's ``CQLLoss`` outputs with ``loss_cql`` recomputed as arrayrl computes it.

    arrayrl's ``loss_cql`` takes the log-sum-exp over the 3K proposals of each state,
    TorchRL 0.14.1's over the three groups of each proposal index (the deviation
    ``torchrl-cql-logsumexp-over-groups`` of ``conformance/cql_cases.py``). While the
    context is open, TorchRL's ensemble call and policy sampling record the proposal
    Q-values and log-probabilities of its own forward (the conformance suite's
    ``record_torchrl_proposals``), and the function yielded, ``(out, batch) → outputs``, replaces
    ``loss_cql`` by the paper's estimator on them (its ``paper_cql_terms``, with the graph),
    so that every output and gradient is compared on TorchRL's own values. The loss is
    restored on exit (the timed TorchRL loss is the unpatched one)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.append(root)
    from arrayrl.conformance.cql_cases import paper_cql_terms, record_torchrl_proposals

    patched = ("_vmap_qvalue_network00", "_get_policy_actions")
    saved = {name: loss.__dict__[name] for name in patched if name in loss.__dict__}
    box = ((-1.0,) * ACT_DIM, (1.0,) * ACT_DIM)  # TorchRL's proposal box, [-1, 1]
    record = record_torchrl_proposals(loss, box)

    def fixed(out: Any, batch: Any) -> dict[str, Any]:
        terms = dict(out.items())
        terms.update(paper_cql_terms(loss, record, batch, box))
        return terms

    try:
        yield fixed
    finally:
        for name in patched:
            loss.__dict__.pop(name, None)
        loss.__dict__.update(saved)


def compare_all(a: Any, b: Any, keys: Any) -> float:
    """Worst error of ``a`` against ``b`` over ``keys``, as a multiple of
    ``ATOL + RTOL·max|b|`` per key (≤ 1 passes)."""
    worst = 0.0
    for key in keys:
        x, y = np.asarray(host(a[key]), np.float64), np.asarray(host(b[key]), np.float64)
        if x.shape != y.shape:
            raise AssertionError(f"{key}: shape {x.shape} against {y.shape}")
        allowed = ATOL + RTOL * float(np.max(np.abs(y), initial=0.0))
        worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)) / allowed)
    return worst


def grouped_grad_error(ours: dict[str, list], theirs: dict[str, list]) -> float:
    """:func:`grad_error` over every parameter group (actor, Q members, log α)."""
    if sorted(ours) != sorted(theirs):
        raise AssertionError(f"parameter groups {sorted(ours)} against {sorted(theirs)}")
    return max(grad_error(ours[g], theirs[g]) for g in theirs)


def check_offpolicy(case: OffCase) -> dict[str, Any]:
    """Every output and ``td_error`` and every gradient, draws matched (see the module
    docstring): arrayrl against TorchRL, arrayrl with TorchRL's modules against TorchRL,
    and arrayrl on NumPy against arrayrl on torch (both drawing with NumPy)."""
    import torch

    ls, terms = case.losses, OFF_TERMS[case.losses.kind]
    if ls.kind == "cql":
        with torchrl_cql_oracle(ls.theirs) as outputs:
            out_t, prio_t, grads_t = _seeded_step(ls.theirs, case.td, terms, False, outputs)
    else:
        out_t, prio_t, grads_t = _seeded_step(ls.theirs, case.td, terms, own_seed=False)
    keys = list(out_t.keys())
    out, prio, grads = _seeded_step(ls.ours, case.batch, terms, own_seed=True)
    out_a, prio_a, grads_a = _seeded_step(ls.adapted, case.batch_adapted, terms, own_seed=False)
    check = {
        "values": max(compare_all(out, out_t, keys), compare_all([prio], [prio_t], [0])),
        "grads": grouped_grad_error(grads, grads_t),
        "adapted": max(
            compare_all(out_a, out_t, keys),
            compare_all([prio_a], [prio_t], [0]),
            grouped_grad_error(grads_a, grads_t),
        ),
    }
    for loss in (ls.ours, ls.ours_np):  # NumPy-drawn noise on both, then back
        loss.generator_mode = "numpy"
        loss.seed = DRAW_SEED
    with torch.no_grad():
        out_torch = ls.ours(case.batch)
    out_np = ls.ours_np(case.batch_np)
    check["numpy"] = max(
        compare_all(out_np, out_torch, keys),
        compare_all([case.batch_np["td_error"]], [case.batch["td_error"]], [0]),
    )
    for loss in (ls.ours, ls.ours_np):
        del loss.generator_mode  # the class default ("native") again
        loss.seed = LOSS_SEED
    check["ok"] = all(check[k] <= 1 for k in ("values", "grads", "adapted", "numpy"))
    return check


@dataclass
class OffRow:
    """Results of one off-policy cell."""

    kind: str
    qnets: int
    size: int
    times: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)


def bench_offpolicy(case: OffCase, args: argparse.Namespace) -> OffRow:
    """Check, then time every competitor of ``case`` in interleaved rounds."""
    row = OffRow(case.losses.kind, case.losses.qnets, case.size)
    row.check = check_offpolicy(case)
    row.times = interleaved(offpolicy_competitors(case), args.repeats, args.sample_s)
    return row


def fmt_off_check(check: dict[str, Any]) -> str:
    """``OK (0.00 / 0.01 / 0.02 / 0.00)``: values and gradients vs TorchRL / the adapted
    path vs TorchRL / NumPy vs torch, as multiples of the tolerance."""
    parts = (check["values"], check["grads"], check["adapted"], check["numpy"])
    status = "OK" if check["ok"] else "FAIL"
    return f"{status} ({' / '.join(f'{p:.2f}' for p in parts)})"


#: (column, arrayrl competitor, TorchRL competitor) of the ratio columns.
OFF_RATIOS = (
    ("ratio fwd+bwd", "arrayrl fwd+bwd", "TorchRL fwd+bwd"),
    ("ratio fwd+bwd, TorchRL modules", "arrayrl (TorchRL modules) fwd+bwd", "TorchRL fwd+bwd"),
    ("ratio fwd", "arrayrl fwd", "TorchRL fwd"),
    ("ratio NumPy fwd / TorchRL fwd", "arrayrl NumPy fwd", "TorchRL fwd"),
)


def offpolicy_table(kind: str, rows: list[OffRow]) -> str:
    """The Markdown table of one loss: times, ratios, check."""
    names = list(rows[0].times)
    header = ["batch", "Q nets", *names, *(r[0] for r in OFF_RATIOS), "check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [str(row.size), str(row.qnets), *(fmt_time(row.times[n]) for n in names)]
        cells += [f"{ratio(row, ours, theirs):.2f}x" for _, ours, theirs in OFF_RATIOS]
        cells.append(fmt_off_check(row.check))
        lines.append("| " + " | ".join(cells) + " |")
    return f"### {OFF_TITLES[kind]}, hidden {list(OFF_CELLS)} ReLU\n\n" + "\n".join(lines)


def offpolicy_target_lines(rows: list[OffRow]) -> list[str]:
    """One line per cell with a target in :data:`OFF_TARGETS`."""
    lines = []
    for row in rows:
        goal = OFF_TARGETS.get(row.kind, {}).get(row.size)
        if goal is None:
            continue
        got = ratio(row, "arrayrl fwd+bwd", "TorchRL fwd+bwd")
        verdict = "met" if got <= goal else "MISSED"
        lines.append(
            f"target {OFF_TITLES[row.kind]} batch {row.size}, {row.qnets} Q nets: "
            f"arrayrl/TorchRL fwd+bwd = {got:.2f}x (<= {goal:g}x): {verdict}"
        )
    return lines


def run_offpolicy(kind: str, args: argparse.Namespace) -> list[OffRow]:
    """Every (Q nets, batch) cell of ``kind``, printing the table at the end."""
    rows = []
    for qnets in kind_qnets(kind, args):
        losses = offpolicy_losses(kind, qnets)
        rows += [
            bench_offpolicy(make_offpolicy_case(losses, size), args)
            for size in args.offpolicy_batches
        ]
    rows.sort(key=lambda r: (r.size, r.qnets))
    print("\n" + offpolicy_table(kind, rows), flush=True)
    return rows


def _phase_times(loss: Any, batch: Any, terms: tuple[str, ...], runs: int) -> dict:
    """Median ``time.thread_time`` of the forward and of the backward of one step."""
    params = list(loss.parameters())
    fwd, bwd = [], []
    for _ in range(runs + 2):
        for p in params:
            p.grad = None
        start = time.thread_time()
        out = loss(batch)
        total = sum(out[t] for t in terms)
        mid = time.thread_time()
        total.backward()
        fwd.append(mid - start)
        bwd.append(time.thread_time() - mid)
    return {"fwd_s": statistics.median(fwd[2:]), "bwd_s": statistics.median(bwd[2:])}


#: aten ops counted as the networks' matrix products.
MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")


def _rows(shapes: list[list[int]]) -> int:
    """The most rows among an op's operands (an operand's size without its last axis)."""
    return max((math.prod(shape[:-1]) for shape in shapes if len(shape) >= 2), default=0)


def _op_profile(loss: Any, batch: Any, terms: tuple[str, ...], runs: int, rows: int) -> dict:
    """Torch-profiler totals of ``runs`` steps (self CPU time per step): all ops, the
    matmuls, the ops with an operand of more than ``rows`` rows (``wide_s``, of which
    matmuls ``wide_matmul_s``: with ``rows`` = Q nets × batch, the work on the repeated
    rows, CQL's proposals, or C51's ``[B, atoms, atoms]`` projection), and the five most
    expensive other ops."""
    from torch.profiler import ProfilerActivity, profile

    step = offpolicy_step(loss, batch, terms)
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(runs):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / runs / 1e6
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / runs / 1e6
    wide = [
        e
        for e in prof.key_averages(group_by_input_shape=True)
        if e.key.startswith("aten::") and _rows(e.input_shapes) > rows
    ]
    others = sorted(
        (e for e in events if e.key not in MATMUL_OPS), key=lambda e: -e.self_cpu_time_total
    )[:5]
    return {
        "total_s": total,
        "matmul_s": matmul,
        "wide_s": sum(e.self_cpu_time_total for e in wide) / runs / 1e6,
        "wide_matmul_s": sum(e.self_cpu_time_total for e in wide if e.key in MATMUL_OPS)
        / runs
        / 1e6,
        "top": [(e.key, e.self_cpu_time_total / runs / 1e6) for e in others],
    }


def offpolicy_phases(kind: str, args: argparse.Namespace) -> list[str]:
    """Where a step's time goes at the target batch sizes (the smallest batch for a loss
    without a target): forward / backward thread time, the profiler's matmul share and
    the share of the ops on more rows than Q nets × batch, for arrayrl, TorchRL and the
    adapted path."""
    lines = [
        f"\n### {OFF_TITLES[kind]}: phases (thread time per step, median of "
        f"{args.phase_runs}) and torch-profiler self time\n",
        "| batch | Q nets | competitor | forward | backward | profiled step | matmuls "
        "| ops on > Q nets × batch rows (matmuls) | largest other ops (per step) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    targets = OFF_TARGETS.get(kind, {})
    sizes = [b for b in args.offpolicy_batches if b in targets] or [min(args.offpolicy_batches)]
    for qnets in kind_qnets(kind, args):
        losses = offpolicy_losses(kind, qnets)
        for size in sizes:
            case = make_offpolicy_case(losses, size)
            pairs = (
                ("arrayrl", losses.ours, case.batch),
                ("TorchRL", losses.theirs, case.td),
                ("arrayrl (TorchRL modules)", losses.adapted, case.batch_adapted),
            )
            for name, loss, batch in pairs:
                ph = _phase_times(loss, batch, OFF_TERMS[kind], args.phase_runs)
                prof = _op_profile(loss, batch, OFF_TERMS[kind], args.phase_runs, qnets * size)
                top = ", ".join(f"{k[6:]} {v * 1e3:.2f}" for k, v in prof["top"])
                lines.append(
                    f"| {size} | {qnets} | {name} | {ph['fwd_s'] * 1e3:.2f} ms | "
                    f"{ph['bwd_s'] * 1e3:.2f} ms | {prof['total_s'] * 1e3:.2f} ms | "
                    f"{prof['matmul_s'] * 1e3:.2f} ms | {prof['wide_s'] * 1e3:.2f} ms "
                    f"({prof['wide_matmul_s'] * 1e3:.2f} ms) | {top} ms |"
                )
    return lines


########################################################################
# Command line


########################################################################
# MAPPOLoss at the size of TorchRL's multi-agent PPO tutorial


#: 600 vectorised environments x 10 steps x 3 agents (6000 frames), VMAS navigation's
#: per-agent observation and action sizes
MA_ENVS, MA_STEPS, MA_AGENTS, MA_OBS, MA_ACT = 600, 10, 3, 18, 2
MA_DEPTH, MA_CELLS = 2, 256
#: The outputs that neither depend on the entropy's Monte-Carlo draw nor are reduced
#: differently (TorchRL 0.14.1 keeps ESS and explained_variance per [T, agents]).
MA_CHECKED = ("loss_objective", "clip_fraction", "loss_critic", "kl_approx", "max_ratio")


def mappo_sizes() -> Any:
    """The tutorial's actor-critic sizes: shared-parameter ``MultiAgentMLP`` s, a
    decentralised actor and a centralised critic (conformance/mappo_cases.py's networks)."""
    from arrayrl.conformance.mappo_cases import AgentNetworks

    return AgentNetworks(
        obs=MA_OBS, act=MA_ACT, agents=MA_AGENTS, depth=MA_DEPTH, num_cells=MA_CELLS
    )


def mappo_networks(backend: str) -> tuple[Any, Any, dict[str, Any]]:
    """arrayrl's tutorial networks on ``backend``: a TanhNormal actor on [-1, 1] and the
    critic, and their ``MultiAgentMLP`` s by role."""
    from arrayrl.conformance.mappo_cases import agent_modules

    seeds = {"actor": ACTOR_SEED, "critic": CRITIC_SEED}
    nets = mappo_sizes().mlps("arrayrl", seeds=seeds, backend=backend)
    return (*agent_modules(nets, "TanhNormal", low=-1.0, high=1.0), nets)


def torchrl_mappo_networks(ours: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """TorchRL's tutorial networks holding the weights of arrayrl's ``ours`` (the
    parameter names are the same)."""
    from arrayrl.conformance.mappo_cases import agent_modules

    weights = {role: _state_dict(net) for role, net in ours.items()}
    nets = mappo_sizes().mlps("torchrl", weights)
    return (*agent_modules(nets, "TanhNormal", torchrl=True, low=-1.0, high=1.0), nets)


def mappo_loss(cls: Any, actor: Any, critic: Any) -> Any:
    """``cls`` (arrayrl's or TorchRL's MAPPOLoss) with its defaults and the nested keys."""
    from arrayrl.conformance.mappo_cases import AGENT_KEYS

    loss = cls(actor, critic)
    loss.set_keys(**AGENT_KEYS)
    return loss


def mappo_arrays(variant: str, actor_np: Any) -> dict[str, Any]:
    """A ``[envs, steps]`` batch in VMAS's layout (float32 NumPy): observations, actions
    drawn by arrayrl's actor, their log-probabilities plus N(0, 0.2) noise, team reward
    and flags under ``"next"``; ``precomputed`` adds per-agent advantages and value
    targets ~ N(0, 1)."""
    from arrayrl.conformance.mappo_cases import AGENT_KEYS

    from arrayrl.data import ArrayDict
    from arrayrl.random import make_generator

    rng = np.random.default_rng(BATCH_SEED)
    shape, agents = (MA_ENVS, MA_STEPS), (MA_ENVS, MA_STEPS, MA_AGENTS)
    obs = rng.standard_normal((MA_ENVS, MA_STEPS + 1, MA_AGENTS, MA_OBS), dtype=np.float32)
    done = rng.random((*shape, 1)) < 0.01
    rollout = ArrayDict({"agents": {"observation": np.ascontiguousarray(obs[:, :-1])}}, shape)
    actor_np(rollout, rng=make_generator(BATCH_SEED))
    log_prob = np.asarray(rollout.get(AGENT_KEYS["sample_log_prob"]))
    noise = rng.standard_normal(log_prob.shape, dtype=np.float32) * np.float32(0.2)
    arrays: dict[str, Any] = {
        "agents": {
            "observation": np.asarray(rollout.get(("agents", "observation"))),
            "action": np.asarray(rollout.get(AGENT_KEYS["action"])),
            "action_log_prob": log_prob + noise,
        },
        "next": {
            "agents": {"observation": np.ascontiguousarray(obs[:, 1:])},
            "reward": rng.standard_normal((*shape, 1), dtype=np.float32),
            "done": done,
            "terminated": done.copy(),
        },
    }
    if variant == "precomputed":
        arrays["agents"]["advantage"] = rng.standard_normal((*agents, 1), dtype=np.float32)
        arrays["agents"]["value_target"] = rng.standard_normal((*agents, 1), dtype=np.float32)
    return arrays


@dataclass
class MACase:
    """One variant: the three losses and their views of one batch."""

    variant: str
    losses: dict[str, Any]
    batches: dict[str, Any]
    params: dict[str, dict[str, Any]]


def make_mappo_case(variant: str) -> MACase:
    """arrayrl's loss on its own modules, TorchRL's loss and arrayrl's loss on TorchRL's
    modules (the drop-in), with the same weights, on one batch (shared memory)."""
    from arrayrl.conformance.mappo_cases import agents_tensordict, parameters_by_role
    from torchrl.objectives.multiagent import MAPPOLoss as TorchRLMAPPOLoss

    from arrayrl.data import ArrayDict
    from arrayrl.objectives.multiagent.mappo import MAPPOLoss

    actor, critic, ours = mappo_networks("torch")
    actor_np, _, _ = mappo_networks("numpy")
    t_actor, t_critic, theirs = torchrl_mappo_networks(ours)
    tensors = to_torch(mappo_arrays(variant, actor_np))
    td = agents_tensordict(tensors, [MA_ENVS, MA_STEPS], agents=MA_AGENTS)
    named = {"ours": parameters_by_role(ours), "theirs": parameters_by_role(theirs)}
    named["adapted"] = named["theirs"]
    return MACase(
        variant,
        losses={
            "ours": mappo_loss(MAPPOLoss, actor, critic),
            "theirs": mappo_loss(TorchRLMAPPOLoss, t_actor, t_critic),
            "adapted": mappo_loss(MAPPOLoss, t_actor, t_critic),
        },
        batches={"ours": ArrayDict(tensors, [MA_ENVS, MA_STEPS]), "theirs": td, "adapted": td},
        params=named,
    )


MA_COMPETITORS = {
    "arrayrl fwd+bwd": "ours",
    "TorchRL fwd+bwd": "theirs",
    "arrayrl (TorchRL modules) fwd+bwd": "adapted",
}


def check_mappo(case: MACase) -> dict[str, Any]:
    """Values of :data:`MA_CHECKED` and the gradients of ``loss_objective + loss_critic``
    by parameter name, arrayrl (own modules, and TorchRL's) against TorchRL, as multiples
    of the tolerance."""
    results = {}
    for who in ("ours", "theirs", "adapted"):
        params = case.params[who]
        for p in params.values():
            p.grad = None
        out = case.losses[who](case.batches[who])
        (out["loss_objective"] + out["loss_critic"]).backward()
        grads = {name: host(p.grad) for name, p in params.items()}
        results[who] = ({k: host(out[k]) for k in MA_CHECKED}, grads)
        for p in params.values():
            p.grad = None
    ref_values, ref_grads = results["theirs"]

    def tol_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
        return max(
            float(np.max(np.abs(a[k] - b[k]))) / (ATOL + RTOL * float(np.max(np.abs(b[k]))))
            for k in b
        )

    check = {
        "values": tol_ratio(results["ours"][0], ref_values),
        "grads": tol_ratio(results["ours"][1], ref_grads),
        "adapted": max(
            tol_ratio(results["adapted"][0], ref_values),
            tol_ratio(results["adapted"][1], ref_grads),
        ),
    }
    check["ok"] = all(v <= 1 for v in check.values())
    return check


def mappo_table(rows: list[Row]) -> str:
    """The Markdown table of the MAPPO variants: times, ratios, check."""
    names = list(MA_COMPETITORS)
    header = ["batch", *names, "ratio fwd+bwd", "ratio fwd+bwd, TorchRL modules", "check"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        check = row.check
        parts = " / ".join(f"{check[k]:.2f}" for k in ("values", "grads", "adapted"))
        cells = [
            f"{row.label}, {row.variant}",
            *(fmt_time(row.times[n]) for n in names),
            f"{ratio(row, names[0], names[1]):.2f}x",
            f"{ratio(row, names[2], names[1]):.2f}x",
            f"{'OK' if check['ok'] else 'FAIL'} ({parts})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    title = (
        f"### MAPPOLoss, TorchRL's multi-agent PPO tutorial ({MA_AGENTS} agents, obs {MA_OBS}, "
        f"action {MA_ACT}, MultiAgentMLP depth {MA_DEPTH} x {MA_CELLS} Tanh, shared "
        "parameters, centralised critic, TanhNormal)"
    )
    return title + "\n\n" + "\n".join(lines)


def run_mappo(args: argparse.Namespace) -> list[Row]:
    """Both variants (``precomputed``: advantage in the batch; ``gae``: the loss's
    multi-agent GAE), checked then timed; prints the table."""
    rows = []
    for variant in args.variants:
        case = make_mappo_case(variant)
        label = f"{MA_ENVS} x {MA_STEPS} x {MA_AGENTS}"
        row = Row(variant, MA_ENVS * MA_STEPS * MA_AGENTS, label)
        row.check = check_mappo(case)
        comps = {
            name: fwd_bwd(case.losses[who], case.batches[who])
            for name, who in MA_COMPETITORS.items()
        }
        row.times = interleaved(comps, args.repeats, args.sample_s)
        rows.append(row)
    print("\n" + mappo_table(rows), flush=True)
    return rows


def parse_batches(text: str) -> tuple[int, ...]:
    """Parse ``"64,256"`` into ``(64, 256)``."""
    return tuple(int(item) for item in text.split(","))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--batches",
        type=parse_batches,
        default=DEFAULT_BATCHES,
        help="comma-separated batch sizes (default 64,256,4096,65536)",
    )
    p.add_argument(
        "--repeats", type=int, default=11, help="interleaved samples per competitor (default 11)"
    )
    p.add_argument(
        "--sample-s",
        type=float,
        default=0.05,
        help="seconds per sample, sets the calls per sample (default 0.05)",
    )
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of precomputed,gae (default both)",
    )
    p.add_argument(
        "--losses",
        default=",".join(DEFAULT_LOSSES),
        help=f"comma-separated subset of {','.join(LOSSES)} (default {','.join(DEFAULT_LOSSES)})",
    )
    p.add_argument(
        "--offpolicy-batches",
        type=parse_batches,
        default=OFF_BATCHES,
        help="batch sizes of the off-policy losses (default 256,4096)",
    )
    p.add_argument(
        "--qnets",
        type=parse_batches,
        default=QNETS,
        help="Q ensemble sizes of SAC, TD3, TD3+BC and IQL (default 2,10)",
    )
    p.add_argument(
        "--phases",
        action="store_true",
        help="also profile the off-policy steps at batch 256 (fwd / bwd / ops)",
    )
    p.add_argument(
        "--phase-runs", type=int, default=7, help="steps per phase measurement (default 7)"
    )
    p.add_argument("--json", metavar="PATH", default=None, help="dump the raw numbers")
    args = p.parse_args(argv)
    args.variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; expected {VARIANTS}")
    args.losses = tuple(v for v in args.losses.split(",") if v)
    unknown = set(args.losses) - set(LOSSES)
    if unknown:
        p.error(f"unknown losses {sorted(unknown)}; expected {LOSSES}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, optionally dump JSON; 1 if a check failed."""
    args = parse_args(argv)
    info = machine_info()
    print(header_text(info, args), flush=True)
    results: dict[str, list[Row]] = {}
    if "ppo" in args.losses:
        ours = arrayrl_loss("torch")
        losses = (ours, arrayrl_loss("numpy"), torchrl_loss(ours))
        for variant in args.variants:
            results[variant] = [
                bench_case(make_case(size, variant, losses), args) for size in args.batches
            ]
            print("\n" + table(variant, results[variant]), flush=True)
    lines = target_lines(results.get("precomputed", []))
    off_results = {kind: run_offpolicy(kind, args) for kind in OFF_KINDS if kind in args.losses}
    mappo_rows = run_mappo(args) if "mappo" in args.losses else []
    for rows in off_results.values():
        lines += offpolicy_target_lines(rows)
    if args.phases:
        for kind in off_results:
            print("\n".join(offpolicy_phases(kind, args)), flush=True)
    info["load_avg_end"] = os.getloadavg()
    print(
        "\n"
        + "\n".join(
            [*lines, "load average at end: " + ", ".join(f"{x:.2f}" for x in info["load_avg_end"])]
        )
    )
    if args.json:
        dump = {
            "machine": info,
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "results": {k: [vars(r) for r in v] for k, v in results.items()},
            "offpolicy": {k: [vars(r) for r in v] for k, v in off_results.items()},
            "mappo": [vars(r) for r in mappo_rows],
        }
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)
    all_rows = (*results.values(), *off_results.values(), mappo_rows)
    checks = [r.check["ok"] for rows in all_rows for r in rows]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
