"""Benchmark the Dreamer actor losses' imagination + backward: arrayrl against TorchRL
0.14.1 on torch CPU, on the same TorchRL modules.

``python benchmarks/bench_dreamer.py`` (``--versions v1,v3``, ``--horizon 15``,
``--batch 256``, ``--repeats N``, ``--sample-s S``, ``--json PATH``).

What is timed
-------------
One actor-loss step from ``--batch`` start states: imagine ``--horizon`` steps with the
actor in the world model's prior, compute the λ-returns and the actor loss, then
``loss_actor.backward()`` after clearing the gradients (what a training step does before
``optimizer.step()``).

- TorchRL's ``DreamerActorLoss`` / ``DreamerV3ActorLoss`` step a ``DreamerEnv`` (a Python
  loop of ``env.step`` over TensorDicts) and run their TD(λ) estimator.
- arrayrl's losses of the same names run :func:`arrayrl.objectives._imagination.imagine`
  (the same modules, called step by step on one batch) and the differentiable TD(λ)
  scan.

The modules
-----------
``v1``: TorchRL's ``RSSMPrior`` (state 30, belief 200, hidden 200: Dreamer's sizes) in a
``DreamerEnv`` with an ELU MLP reward head, a ``DreamerActor`` (depth 4, 200 cells)
with a ``TanhNormal`` and an MLP critic. ``v3``: the modules of
``examples/dreamer_v3_pendulum.py`` (``RSSMPriorV3`` with 8 × 8 categoricals, belief 64,
hidden 64; a two-hot reward head over 41 bins; ``DreamerActor`` depth 2) for a 3-dimensional
observation and a 1-dimensional action.

The check
---------
Before timing, both losses run once from the same torch seed: ``loss_actor`` and its
gradients with respect to the actor's parameters must agree to float32 tolerance.
TorchRL 0.14.1 runs the actor losses' TD(λ) along the trailing unit axis (the
``torchrl-dreamer*-lambda-time-dim`` deviations of ``arrayrl conformance``); its
estimator's ``time_dim`` is set to the imagination axis so that both compute the same
λ-return.

Timing follows ``bench_losses.py``: interleaved rounds, the median time per call and the
median of the per-round ratios arrayrl / TorchRL (below 1: arrayrl is faster).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import pathlib
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_losses import interleaved, machine_info

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "dreamer_v3_pendulum.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("dreamer_v3_pendulum", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- modules ------------------------------------------------------------------------------
def v1_modules(state: int = 30, belief: int = 200, hidden: int = 200, act: int = 6) -> tuple:
    """(imagination env, actor, critic, start states) with Dreamer's sizes."""
    from tensordict.nn import (
        TensorDictModule,
    )
    from torchrl.data import Bounded, Composite, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv
    from torchrl.modules import MLP, SafeSequential, WorldModelWrapper
    from torchrl.modules.models.model_based import RSSMPrior

    prior = RSSMPrior(
        action_spec=Unbounded(act),
        hidden_dim=hidden,
        rnn_hidden_dim=belief,
        state_dim=state,
        action_dim=act,
    )
    reward = MLP(
        in_features=state + belief, out_features=1, depth=2, num_cells=hidden,
        activation_class=torch.nn.ELU,
    )  # fmt: skip
    env = DreamerEnv(
        WorldModelWrapper(
            SafeSequential(
                TensorDictModule(
                    prior, ["state", "belief", "action"], ["_", "_", "state", "belief"]
                )
            ),
            TensorDictModule(reward, ["state", "belief"], ["reward"]),
        ),
        prior_shape=torch.Size([state]),
        belief_shape=torch.Size([belief]),
    )
    env.action_spec = Bounded(-1.0, 1.0, shape=(act,))
    env.observation_spec = Composite(state=Unbounded(state), belief=Unbounded(belief))
    env.reward_spec = Unbounded(1)
    env.state_spec = Composite(state=Unbounded(state), belief=Unbounded(belief))
    actor = _example().dreamer_actor(act, state, belief, depth=4, num_cells=hidden)
    critic = TensorDictModule(
        MLP(in_features=state + belief, out_features=1, depth=3, num_cells=hidden,
            activation_class=torch.nn.ELU),
        ["state", "belief"],
        ["state_value"],
    )  # fmt: skip
    return env, actor, critic, (state, belief)


def v3_modules() -> tuple:
    """(imagination env, actor, critic, start sizes) of the DreamerV3 example."""
    example = _example()
    sizes = example.Sizes()
    world = example.build_world_model(3, 1, sizes)
    env = example.build_imagination_env(world, 1, sizes)
    actor, critic = example.build_actor_critic(1, sizes)
    return env, actor, critic, (sizes.state, sizes.belief)


def start_states(shapes: tuple[int, int], batch: int, seed: int = 0) -> Any:
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    state, belief = shapes
    return TensorDict(
        state=torch.randn(batch, state, generator=g),
        belief=torch.randn(batch, belief, generator=g),
        batch_size=[batch],
    )


def losses(version: str, horizon: int) -> tuple[Any, Any, tuple[int, int], list[Any]]:
    """(arrayrl's loss, TorchRL's loss, start shapes, arrayrl's actor parameters) on
    twin copies of the same modules."""
    import torchrl.objectives as trl

    import arrayrl.objectives as arl

    name = {"v1": "DreamerActorLoss", "v3": "DreamerV3ActorLoss"}[version]
    torch.manual_seed(0)
    env, actor, critic, shapes = {"v1": v1_modules, "v3": v3_modules}[version]()
    twins = copy.deepcopy((env, actor, critic))
    ours = getattr(arl, name)(actor, critic, env, imagination_horizon=horizon)
    theirs = getattr(trl, name)(*twins[1:], twins[0], imagination_horizon=horizon)
    if version == "v1":
        ours.make_value_estimator(gamma=0.99, lmbda=0.95)
        theirs.make_value_estimator(gamma=0.99, lmbda=0.95)
    theirs.value_estimator.time_dim = -2  # along the imagination axis, as arrayrl's
    return ours, theirs, shapes, [list(actor.parameters()), list(twins[1].parameters())]


def actor_step(loss: Any, start: Any, params: list[Any]) -> Callable[[], Any]:
    def step() -> Any:
        for p in params:
            p.grad = None
        terms, _ = loss(start.clone())
        terms["loss_actor"].backward()
        return terms["loss_actor"]

    return step


def check(ours: Any, theirs: Any, start: Any, params: list[list[Any]]) -> dict[str, float]:
    """``loss_actor`` and the actor's gradients from the same torch seed."""
    values, grads = [], []
    for loss, ps in ((ours, params[0]), (theirs, params[1])):
        torch.manual_seed(11)
        values.append(actor_step(loss, start, ps)().detach())
        grads.append(torch.cat([p.grad.flatten() for p in ps]))
    value_err = float((values[0] - values[1]).abs() / (1e-6 + 1e-4 * values[1].abs()))
    scale = 1e-5 + 1e-3 * grads[1].abs()
    grad_err = float(((grads[0] - grads[1]).abs() / scale).max())
    if value_err > 1 or grad_err > 1:
        raise AssertionError(f"arrayrl and TorchRL disagree: {value_err=:.3g} {grad_err=:.3g}")
    return {"value_error": value_err, "grad_error": grad_err}


def bench(version: str, args: argparse.Namespace) -> dict[str, Any]:
    ours, theirs, shapes, params = losses(version, args.horizon)
    start = start_states(shapes, args.batch)
    checked = check(ours, theirs, start, params)
    times = interleaved(
        {
            "arrayrl": actor_step(ours, start, params[0]),
            "torchrl": actor_step(theirs, start, params[1]),
        },
        args.repeats,
        args.sample_s,
    )
    pairs = zip(times["arrayrl"]["samples_s"], times["torchrl"]["samples_s"])
    ratios = sorted(a / b for a, b in pairs)
    return {
        "version": version,
        "check": checked,
        "arrayrl_ms": 1e3 * times["arrayrl"]["median_s"],
        "torchrl_ms": 1e3 * times["torchrl"]["median_s"],
        "ratio": ratios[len(ratios) // 2],
    }


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"horizon {args.horizon}, batch {args.batch}, torch CPU, {torch.get_num_threads()} "
        "threads, imagination + backward of loss_actor",
        "",
        "| loss | arrayrl ms | TorchRL ms | arrayrl / TorchRL | check (value / grad err) |",
        "|---|---:|---:|---:|---|",
    ]
    names = {"v1": "DreamerActorLoss", "v3": "DreamerV3ActorLoss"}
    for row in rows:
        c = row["check"]
        lines.append(
            f"| {names[row['version']]} | {row['arrayrl_ms']:.1f} | {row['torchrl_ms']:.1f} | "
            f"{row['ratio']:.2f} | OK ({c['value_error']:.2g} / {c['grad_error']:.2g}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", default="v1,v3")
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    info = machine_info()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = [bench(version, args) for version in args.versions.split(",")]
    print(json.dumps({k: v for k, v in info.items() if k != "env"}))
    print(table(rows, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
