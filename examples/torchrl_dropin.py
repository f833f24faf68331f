"""The seed overview's complete PPO example, run with arrayrl's loss and estimator.

Everything else is TorchRL's: the environment and its transforms, the ``MLP``, the
``ProbabilisticActor`` with its ``TanhNormal``, the ``ValueOperator``, the ``Collector``
and its ``TensorDict`` batches. Only two imports differ from the TorchRL script::

    from arrayrl.objectives import ClipPPOLoss   # was: from torchrl.objectives import ...
    from arrayrl.objectives.value import GAE     # was: from torchrl.objectives.value import ...

The seed uses ``HalfCheetah-v4``, which needs MuJoCo; this runs on ``Pendulum-v1``
(Gymnasium's classic control, nothing to download) with the action bounds read from the
environment's spec. Run it as a script::

    python examples/torchrl_dropin.py              # arrayrl's ClipPPOLoss and GAE
    python examples/torchrl_dropin.py --torchrl    # TorchRL's own, for comparison

``tests/test_torchrl_dropin.py`` runs :func:`train` with TorchRL's classes and with
arrayrl's (``ClipPPOLoss``, ``A2CLoss``, ``ReinforceLoss``) and checks the advantages,
value targets, every ``loss_*`` term, every gradient and the parameters after the
optimiser steps against each other (they agree to float32 rounding, about 1e-7). Over
the script's full 20,480 frames the two print the same first four batches to the
printed digits; after that the float32 differences in the parameters change a sampled
action now and then, and the collected batches drift apart as two TorchRL runs on
different hardware would.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from tensordict.nn import TensorDictModule
from tensordict.nn.distributions import NormalParamExtractor
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import Compose, GymEnv, ObservationNorm, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

from arrayrl.objectives import ClipPPOLoss
from arrayrl.objectives.value import GAE


def make_env(seed: int) -> TransformedEnv:
    """Pendulum with a normalised observation (statistics from a few random steps)."""
    env = TransformedEnv(GymEnv("Pendulum-v1"), Compose(ObservationNorm(in_keys=["observation"])))
    env.set_seed(seed)
    env.transform[0].init_stats(num_iter=16, reduce_dim=0, cat_dim=0)
    return env


def make_networks(env: TransformedEnv, num_cells: int) -> tuple[ProbabilisticActor, ValueOperator]:
    """The seed's actor (MLP → loc, scale → TanhNormal) and critic, with TorchRL's classes."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_dim = env.action_spec.shape[-1]
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(
                MLP(obs_dim, 2 * action_dim, num_cells=[num_cells, num_cells]),
                NormalParamExtractor(),
            ),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        out_keys=["action"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": env.action_spec.space.low, "high": env.action_spec.space.high},
        return_log_prob=True,
    )
    critic = ValueOperator(
        MLP(obs_dim, 1, num_cells=[num_cells, num_cells]),
        in_keys=["observation"],
        out_keys=["state_value"],
    )
    return actor, critic


def train(
    loss_class: type = ClipPPOLoss,
    advantage_class: type = GAE,
    *,
    loss_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    frames_per_batch: int = 2048,
    total_frames: int = 20_480,
    epochs: int = 10,
    minibatch: int = 256,
    num_cells: int = 256,
    record: Callable[[str, Any], None] | None = None,
) -> tuple[ProbabilisticActor, ValueOperator]:
    """The seed's training loop; ``record(what, value)`` sees every intermediate.

    ``record`` is called with ``("batch", batch)`` after the advantage is computed,
    ``("losses", losses)`` and ``("grads", [p.grad, ...])`` at every optimiser step.
    Returns the trained actor and critic (TorchRL modules either way).
    """
    torch.manual_seed(seed)
    env = make_env(seed)
    actor, critic = make_networks(env, num_cells)
    if loss_kwargs is None:
        loss_kwargs = dict(clip_epsilon=0.2, entropy_bonus=True, entropy_coeff=0.01,
                           critic_coeff=0.5, normalize_advantage=True)
    loss_fn = loss_class(actor_network=actor, critic_network=critic, **loss_kwargs)
    advantage_fn = advantage_class(value_network=critic, gamma=0.99, lmbda=0.95)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=3e-4)
    collector = Collector(
        create_env_fn=env, policy=actor, frames_per_batch=frames_per_batch,
        total_frames=total_frames,
    )
    for batch in collector:
        with torch.no_grad():
            batch = advantage_fn(batch)
        if record:
            record("batch", batch)
        for _ in range(epochs):
            idx = torch.randperm(len(batch))[:minibatch]
            losses = loss_fn(batch[idx])
            total_loss = sum(v for k, v in losses.items() if k.startswith("loss_"))
            optimizer.zero_grad()
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 0.5)
            if record:
                record("losses", losses.detach())
                record("grads", [p.grad.clone() for p in loss_fn.parameters()])
            optimizer.step()
    collector.shutdown()
    return actor, critic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchrl", action="store_true", help="use TorchRL's loss and GAE")
    parser.add_argument("--frames", type=int, default=20_480, help="total frames")
    args = parser.parse_args()
    if args.torchrl:
        from torchrl.objectives import ClipPPOLoss as loss_class
        from torchrl.objectives.value import GAE as advantage_class
    else:
        loss_class, advantage_class = ClipPPOLoss, GAE

    def report(what: str, value: Any) -> None:
        if what == "batch":
            reward = value["next", "reward"].mean().item()
            print(f"batch: mean reward {reward:8.4f}, mean advantage "
                  f"{value['advantage'].mean().item():+.6f}")

    train(loss_class, advantage_class, total_frames=args.frames, record=report)


if __name__ == "__main__":
    main()
