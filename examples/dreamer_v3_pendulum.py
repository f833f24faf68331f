"""A small DreamerV3 agent learning Pendulum-v1 from state observations, trained with
arrayrl's DreamerV3 losses on TorchRL's own world-model modules.

This is the drop-in use: the world model (an MLP encoder, TorchRL's ``RSSMPriorV3`` /
``RSSMPosteriorV3`` in an ``RSSMRolloutV3``, an MLP decoder, a two-hot reward head and a
continuation head), the imagination env (TorchRL's ``DreamerEnv``), the actor
(``DreamerActor`` with a ``TanhNormal``) and the critic are TorchRL's; the losses are
:class:`arrayrl.objectives.DreamerV3ModelLoss`, :class:`~arrayrl.objectives.
DreamerV3ActorLoss` and :class:`~arrayrl.objectives.DreamerV3ValueLoss` (Hafner et al.
2023, https://arxiv.org/abs/2301.04104), used as TorchRL's Dreamer trainer uses its own.

The loop (Dreamer's, without the environment interaction after the first collection):

1. collect ``--episodes`` episodes with uniformly random actions (Gymnasium);
2. each step, sample ``--batch`` sequences of ``--length`` transitions, fit the world
   model on them, imagine ``--horizon`` steps from every posterior state with the actor,
   and update the actor on the λ-returns and the critic toward them.

Every ``--log-every`` steps it records the world model's loss terms (KL, reconstruction,
reward), the actor's and critic's losses and the mean imagined λ-return, and writes them
to ``<out>/dreamer_v3_pendulum.csv`` (and a plot, with ``--plot``)::

    python examples/dreamer_v3_pendulum.py --minutes 3 --out runs/dreamer --plot

The world-model terms fall within a few hundred steps; the imagined return is measured
in the learned model, in Pendulum's reward units (-16.3 .. 0 per step).
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
)
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs.model_based.dreamer import DreamerEnv
from torchrl.modules import MLP, SymExpTwoHot, TanhNormal, WorldModelWrapper
from torchrl.modules.models.model_based import (
    DreamerActor,
    RSSMPosteriorV3,
    RSSMPriorV3,
    RSSMRolloutV3,
)

from arrayrl.objectives import DreamerV3ActorLoss, DreamerV3ModelLoss, DreamerV3ValueLoss

#: the CSV's columns, in order
COLUMNS = (
    "step",
    "seconds",
    "loss_model_kl",
    "loss_model_reco",
    "loss_model_reward",
    "loss_model_continue",
    "loss_actor",
    "loss_value",
    "imagined_return",
)


@dataclass(frozen=True)
class Sizes:
    """The networks' sizes (small enough for a few minutes on two CPU cores)."""

    hidden: int = 64
    belief: int = 64
    categoricals: int = 8
    classes: int = 8
    reward_bins: int = 41

    @property
    def state(self) -> int:
        return self.categoricals * self.classes


# -- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Episodes:
    """``E`` episodes of ``L`` steps: observations ``[E, L + 1, O]``, actions in
    ``[-1, 1]`` ``[E, L, A]``, rewards and terminations ``[E, L, 1]``."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray


def collect_random(env_id: str, episodes: int, seed: int) -> Episodes:
    """``episodes`` episodes of uniformly random actions (scaled from ``[-1, 1]`` to the
    action space's bounds)."""
    import gymnasium as gym

    env = gym.make(env_id)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    observations, actions, rewards, terminated = [], [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        ep_obs, ep_act, ep_rew, ep_term = [obs], [], [], []
        done = False
        while not done:
            action = rng.uniform(-1.0, 1.0, size=low.shape)
            obs, reward, term, trunc, _ = env.step(low + (action + 1.0) * (high - low) / 2)
            ep_obs.append(obs)
            ep_act.append(action)
            ep_rew.append([reward])
            ep_term.append([term])
            done = term or trunc
        observations.append(ep_obs)
        actions.append(ep_act)
        rewards.append(ep_rew)
        terminated.append(ep_term)
    env.close()
    return Episodes(
        np.asarray(observations, np.float32),
        np.asarray(actions, np.float32),
        np.asarray(rewards, np.float32),
        np.asarray(terminated, bool),
    )


def sample_batch(data: Episodes, batch: int, length: int, sizes: Sizes, rng) -> TensorDict:
    """``batch`` windows of ``length`` steps from random episodes, in TorchRL's replay
    layout (``action`` at ``t``, the next observation, reward and flags under
    ``"next"``; the recurrent state starts at zero, with ``is_init`` at the window's
    first step)."""
    n_episodes, steps = data.actions.shape[:2]
    episode = rng.integers(0, n_episodes, size=batch)
    start = rng.integers(0, steps - length + 1, size=batch)
    window = start[:, None] + np.arange(length)
    rows = episode[:, None]
    is_init = np.zeros((batch, length, 1), bool)
    is_init[:, 0] = True
    terminated = torch.as_tensor(data.terminated[rows, window])
    return TensorDict(
        {
            "state": torch.zeros(batch, length, sizes.state),
            "belief": torch.zeros(batch, length, sizes.belief),
            "action": torch.as_tensor(data.actions[rows, window]),
            "is_init": torch.as_tensor(is_init),
            "next": {
                "observation": torch.as_tensor(data.observations[rows, window + 1]),
                "reward": torch.as_tensor(data.rewards[rows, window]),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        [batch, length],
    )


# -- the agent: TorchRL's modules ---------------------------------------------------------
def _mlp(fin: int, fout: int, sizes: Sizes, zero_output: bool = False) -> MLP:
    """An MLP; ``zero_output`` zeroes its last layer (DreamerV3's initialisation of the
    reward and critic heads, so that they start by predicting 0)."""
    mlp = MLP(in_features=fin, out_features=fout, num_cells=[sizes.hidden, sizes.hidden])
    if zero_output:
        last = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    return mlp


def build_world_model(obs_dim: int, act_dim: int, sizes: Sizes) -> TensorDictSequential:
    """Encoder, V3 RSSM rollout, decoder, two-hot reward and continuation heads."""
    prior = RSSMPriorV3(
        action_shape=(act_dim,),
        hidden_dim=sizes.hidden,
        rnn_hidden_dim=sizes.belief,
        num_categoricals=sizes.categoricals,
        num_classes=sizes.classes,
        action_dim=act_dim,
    )
    posterior = RSSMPosteriorV3(
        hidden_dim=sizes.hidden,
        num_categoricals=sizes.categoricals,
        num_classes=sizes.classes,
        rnn_hidden_dim=sizes.belief,
        obs_embed_dim=sizes.hidden,
    )
    latent = [("next", "state"), ("next", "belief")]
    features = sizes.state + sizes.belief
    return TensorDictSequential(
        TensorDictModule(
            _mlp(obs_dim, sizes.hidden, sizes),
            [("next", "observation")],
            [("next", "encoded_latents")],
        ),
        RSSMRolloutV3(
            TensorDictModule(
                prior,
                ["state", "belief", "action"],
                [("next", "prior_logits"), ("next", "state"), ("next", "belief")],
            ),
            TensorDictModule(
                posterior,
                [("next", "belief"), ("next", "encoded_latents")],
                [("next", "posterior_logits"), ("next", "state")],
            ),
        ),
        TensorDictModule(_mlp(features, obs_dim, sizes), latent, [("next", "reco_observation")]),
        TensorDictModule(
            _mlp(features, sizes.reward_bins, sizes, zero_output=True),
            latent,
            [("next", "reward_logits")],
        ),
        TensorDictModule(
            SymExpTwoHot(sizes.reward_bins), [("next", "reward_logits")], [("next", "reward")]
        ),
        TensorDictModule(_mlp(features, 1, sizes), latent, [("next", "continue_pred")]),
    )


def build_imagination_env(world_model: TensorDictSequential, act_dim: int, sizes: Sizes):
    """TorchRL's ``DreamerEnv`` stepping the world model's prior and reward head."""
    rollout, reward_head, reward_decode = world_model[1], world_model[3], world_model[4]
    prior = TensorDictModule(
        rollout.rssm_prior.module, ["state", "belief", "action"], ["_", "state", "belief"]
    )
    reward = TensorDictSequential(
        TensorDictModule(reward_head.module, ["state", "belief"], ["reward_logits"]),
        TensorDictModule(reward_decode.module, ["reward_logits"], ["reward"]),
    )
    env = DreamerEnv(
        WorldModelWrapper(prior, reward),
        prior_shape=torch.Size([sizes.state]),
        belief_shape=torch.Size([sizes.belief]),
    )
    env.action_spec = Bounded(-1.0, 1.0, shape=(act_dim,))
    env.observation_spec = Composite(state=Unbounded(sizes.state), belief=Unbounded(sizes.belief))
    env.reward_spec = Unbounded(1)
    env.state_spec = Composite(state=Unbounded(sizes.state), belief=Unbounded(sizes.belief))
    return env


def dreamer_actor(act_dim: int, state: int, belief: int, depth: int, num_cells: int) -> Any:
    """TorchRL's ``DreamerActor`` (``loc``, ``scale`` from the latent) with a
    ``TanhNormal`` head, its lazy first layer built."""
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(
            DreamerActor(act_dim, depth=depth, num_cells=num_cells),
            ["state", "belief"],
            ["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys="action",
            default_interaction_type=InteractionType.RANDOM,
            distribution_class=TanhNormal,
        ),
    )
    with torch.no_grad():  # DreamerActor's first layer is lazy
        latent = TensorDict(
            state=torch.zeros(1, state), belief=torch.zeros(1, belief), batch_size=[1]
        )
        actor(latent)
    return actor


def build_actor_critic(act_dim: int, sizes: Sizes) -> tuple:
    """A ``DreamerActor`` with a ``TanhNormal`` head, and an MLP critic on the latent."""
    actor = dreamer_actor(act_dim, sizes.state, sizes.belief, 2, sizes.hidden)
    critic = TensorDictModule(
        _mlp(sizes.state + sizes.belief, 1, sizes, zero_output=True),
        ["state", "belief"],
        ["state_value"],
    )
    return actor, critic


@dataclass
class Learner:
    """TorchRL's world model, the three arrayrl losses and one Adam optimiser per part
    (Dreamer's)."""

    world_model: TensorDictSequential
    model_loss: DreamerV3ModelLoss
    actor_loss: DreamerV3ActorLoss
    value_loss: DreamerV3ValueLoss
    optimisers: dict


def build_learner(obs_dim: int, act_dim: int, sizes: Sizes, horizon: int) -> Learner:
    world_model = build_world_model(obs_dim, act_dim, sizes)
    env = build_imagination_env(world_model, act_dim, sizes)
    actor, critic = build_actor_critic(act_dim, sizes)
    model_loss = DreamerV3ModelLoss(
        world_model, num_reward_bins=sizes.reward_bins, lambda_continue=1.0
    )
    model_loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    actor_loss = DreamerV3ActorLoss(actor, critic, env, imagination_horizon=horizon)
    value_loss = DreamerV3ValueLoss(critic, actor_loss=actor_loss)
    optimisers = {
        "model": torch.optim.Adam(world_model.parameters(), lr=1e-3),
        "actor": torch.optim.Adam(actor.parameters(), lr=3e-4),
        "value": torch.optim.Adam(critic.parameters(), lr=3e-4),
    }
    return Learner(world_model, model_loss, actor_loss, value_loss, optimisers)


# -- training -----------------------------------------------------------------------------
def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimiser.zero_grad()
    loss.backward()
    for group in optimiser.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], 100.0)
    optimiser.step()


def train_step(learner: Learner, batch: TensorDict) -> dict[str, float]:
    """One Dreamer update: world model, then actor and critic in imagination."""
    model_terms, posterior = learner.model_loss(batch)
    model_total = sum(v.sum() for k, v in model_terms.items() if k.startswith("loss_"))
    _step(learner.optimisers["model"], model_total)
    start = posterior.get("next").select("state", "belief").reshape(-1).detach()
    actor_terms, imagined = learner.actor_loss(start)
    _step(learner.optimisers["actor"], actor_terms["loss_actor"])
    value_terms, _ = learner.value_loss(imagined.detach())
    _step(learner.optimisers["value"], value_terms["loss_value"])
    row = {key: float(model_terms[key].sum()) for key in COLUMNS if key in model_terms.keys()}
    row["loss_actor"] = float(actor_terms["loss_actor"])
    row["loss_value"] = float(value_terms["loss_value"])
    row["imagined_return"] = float(imagined.get("lambda_target").mean())
    return row


def train(args: argparse.Namespace) -> list[dict[str, float]]:
    """Collect, then train until ``args.steps`` steps or ``args.minutes`` minutes; the
    logged rows (see :data:`COLUMNS`)."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    data = collect_random(args.env, args.episodes, args.seed)
    obs_dim, act_dim = data.observations.shape[-1], data.actions.shape[-1]
    sizes = Sizes()
    learner = build_learner(obs_dim, act_dim, sizes, args.horizon)
    rng = np.random.default_rng(args.seed)
    rows, started = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = sample_batch(data, args.batch, args.length, sizes, rng)
        row = train_step(learner, batch)
        elapsed = time.perf_counter() - started
        last = step == args.steps or elapsed > 60 * args.minutes
        if step == 1 or step % args.log_every == 0 or last:
            rows.append({"step": step, "seconds": round(elapsed, 1), **row})
            if not args.quiet:
                print(", ".join(f"{k} {v:.4g}" for k, v in rows[-1].items()), flush=True)
        if last:
            break
    return rows


def write_csv(rows: list[dict[str, float]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, float]], path: Path) -> None:
    """The world model's terms and the imagined return against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key in ("loss_model_kl", "loss_model_reco", "loss_model_reward"):
        left.plot(steps, [row[key] for row in rows], label=key.removeprefix("loss_model_"))
    left.set(xlabel="update", ylabel="world-model loss", yscale="log")
    left.legend()
    right.plot(steps, [row["imagined_return"] for row in rows])
    right.set(xlabel="update", ylabel="mean imagined λ-return")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=15)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/dreamer_v3"))
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TorchRL's lazy-module notices
        rows = train(args)
    write_csv(rows, args.out / "dreamer_v3_pendulum.csv")
    if args.plot:
        plot(rows, args.out / "dreamer_v3_pendulum.png")
    return rows


if __name__ == "__main__":
    main()
