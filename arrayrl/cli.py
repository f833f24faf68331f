"""The ``arrayrl`` command line.

``arrayrl conformance`` runs every estimator case on every backend and kernel available
here, and every loss case (outputs, and gradients on torch) on every backend, compares
them with the float64 reference and with TorchRL, prints the matrices and optionally
writes them as JSON.

``arrayrl train ppo`` trains a PPO agent on a Gymnasium environment with arrayrl's
``ClipPPOLoss`` and GAE (torch backend), shows a progress bar on stderr, writes the
learning curve as CSV and PNG and prints a summary line. ``arrayrl train sac`` and
``arrayrl train td3`` do the same off-policy, with ``SACLoss`` / ``TD3Loss`` and a
replay buffer, on environments with continuous actions (Pendulum-v1 by default);
``arrayrl train dqn`` with ``DQNLoss`` on discrete actions (CartPole-v1); ``arrayrl
train iql``, ``cql``, ``bc`` and ``diffusion-bc`` offline, from a Minari dataset; ``arrayrl train
mappo``, ``ippo`` and ``qmix`` multi-agent, on VMAS scenarios (the ``marl`` extra). Every
training run saves its policy as <out>/policy.npz.

``arrayrl collect`` runs a saved policy in its environment and records the episodes as
a Minari dataset (the ``offline`` extra), for the offline losses.

The help texts are plain text (argparse prints them as they are): no reST markup there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130
#: the modules ``arrayrl train`` needs: the ``[train]`` extra
TRAIN_MODULES = ("torch", "gymnasium", "matplotlib", "tqdm")

_FORMATTER = argparse.RawDescriptionHelpFormatter

_MAIN_EPILOG = """\
examples:
  arrayrl conformance -k gae          # GAE on every backend here, and against TorchRL
  arrayrl conformance --help          # case families, JSON report, dtypes
  arrayrl train ppo                   # PPO on CartPole-v1: mean return 500 in 30-55 s
  arrayrl train ppo --help            # environments, frames, seeds, devices
  arrayrl train sac                   # SAC on Pendulum-v1, 20k frames
  arrayrl train mappo                 # MAPPO on VMAS navigation, 3 agents (marl extra)
  arrayrl collect --policy runs/sac-Pendulum-v1-0/policy.npz --dataset-id pendulum/sac-v0
"""

_CONFORMANCE_EPILOG = """\
-k takes a family name, in any case and with or without '-' or '_':
  {families}
or a function or loss class name (td0_return_estimate, ClipPPOLoss); any other text
keeps the cases whose name contains it (tanh_normal, 4x8). Separate several with commas.

The report names the backends and oracles it ran and those it skipped, with the reason
(not installed, no GPU), and the recorded deviations from TorchRL that the cases run
used. Exit status: 0 when every cell passes, 1 when one fails, 2 on a bad option.

--against runs other frameworks' implementations of the estimators instead (torchrl,
rlax, sb3, cleanrl; those not installed are skipped with the reason) through
arrayrl.conformance.check, in one matrix: per estimator and framework, the cases that
pass / differ by a recorded design choice (named, with the upstream issue) / cannot be
expressed in the framework's convention / fail. --report writes it as Markdown and JSON,
with one small plot per function in a folder beside it (<stem>_plots/, matplotlib).

examples:
  arrayrl conformance                          # every case on every backend here
  arrayrl conformance -k v-trace --cases       # one row per V-trace case
  arrayrl conformance -k gae,td-lambda --dtype float32
  arrayrl conformance -k clipppo --no-torchrl --json report.json
  arrayrl conformance --against torchrl,rlax,sb3,cleanrl --report report.md
"""

_TRAIN_EPILOG = """\
Settings not given on the command line come from the environment's preset
(arrayrl.train.PRESETS). CartPole-v1 uses CleanRL's PPO settings (8 envs x 128 steps,
4 minibatches, 4 epochs, Adam 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2) with
a running reward normalisation and a smooth-L1 critic loss; Pendulum-v1 (TanhNormal
policy) uses gamma 0.9, Adam 1e-3, 10 epochs of 32 minibatches, 100k frames.

--frames is rounded to whole iterations of envs x steps frames (a line says so). The
curve is rewritten every --save-every seconds and at the end; Ctrl-C stops the run,
writes the curve so far, says where, and exits with status 130.

examples:
  arrayrl train ppo                                  # CartPole-v1, 250k frames
  arrayrl train ppo --env Pendulum-v1 --seed 1
  arrayrl train ppo --frames 20000 --out /tmp/ppo-smoke
  arrayrl train ppo --device cuda --no-progress
  arrayrl train ppo --env MountainCar-v0 --rnd       # + RND exploration bonus
"""

_TRAIN_GROUP_EPILOG = """\
examples:
  arrayrl train ppo                   # PPO on CartPole-v1
  arrayrl train ppo --help            # its options
  arrayrl train sac                   # SAC on Pendulum-v1
  arrayrl train td3 --seed 1          # TD3 on Pendulum-v1
  arrayrl train dqn                   # DQN on CartPole-v1
  arrayrl train iql --dataset pendulum/sac-v0   # offline, from a Minari dataset
  arrayrl train bc --dataset pendulum/sac-v0    # behaviour cloning of its actions
  arrayrl train mappo                 # MAPPO on VMAS navigation, 3 agents
  arrayrl train qmix --mixer vdn      # VDN on VMAS navigation, discrete actions
"""

_OFFPOLICY_EPILOG = """\
{settings}

One env (--num-envs 1) by default; --frames counts environment frames. The first
--learning-starts frames take uniform random actions and learn nothing; then every
frame brings --utd-ratio gradient steps on minibatches drawn uniformly from the replay
buffer. One row of the learning curve per --log-every frames. The curve is rewritten
every --save-every seconds and at the end; Ctrl-C stops the run, writes the curve so
far, says where, and exits with status 130.

examples:
  arrayrl train {name}                                  # {env}, {frames} frames
  arrayrl train {name} --seed 1 --out /tmp/{name}-1
  arrayrl train {name} --frames 3000 --learning-starts 1000 --no-progress
  arrayrl train {name} --device cuda
"""

_SAC_SETTINGS = """\
SAC v2 (SACLoss: TanhNormal actor, two Q networks with targets, learned temperature,
target entropy -dim(A)) with CleanRL's settings: ReLU MLPs [256, 256], Adam 3e-4
(actor), 1e-3 (critics), 1e-3 (alpha, from 1.0), batches of 256, gamma 0.99,
tau 0.005, MSE critic loss, 1M replay, 5,000 warm-up frames."""

_TD3_SETTINGS = """\
TD3 (TD3Loss: deterministic TanhDelta actor, two critics with targets, target policy
smoothing 0.2 clipped at 0.5, actor and target update every 2nd critic step) with
CleanRL's settings: ReLU MLPs [256, 256], Adam 3e-4, batches of 256, gamma 0.99,
tau 0.005, exploration noise 0.1 (times the action half-width), MSE critic loss,
1M replay, 5,000 warm-up frames."""


_DQN_SETTINGS = """\
DQN (DQNLoss over a QValueActor, double DQN, TD(0)): ReLU MLP [256, 256], Adam 1e-3
decayed linearly to 0, the gradient norm clipped at 10, batches of 64, gamma 0.99,
Huber (smooth L1) TD loss, 100k replay, 1,000 warm-up frames, half a gradient step per
frame, epsilon-greedy from 1 to 0.04 over the first 16 % of the frames, the target
soft-updated (tau 0.005) after every gradient step."""

_OFFLINE_EPILOG = """\
No environment frames are collected: every gradient step draws a minibatch of the
dataset's transitions (the offline extra reads it: pip install 'arrayrl[offline]').
SAC's networks (TanhNormal actor, two critics with soft-updated targets; IQL adds a
state-value network), ReLU MLPs [256, 256], Adam 3e-4, batches of 256, gamma 0.99,
tau 0.005. IQL: expectile 0.7, temperature 3. CQL: min_q_weight 5, 10 proposals per
state, learned SAC temperature, the actor trained by behaviour cloning (loss_actor_bc)
for the first 2,000 steps. The learning curve's "frames" column counts gradient steps;
its return is the deterministic policy's mean over --eval-episodes episodes.

examples:
  arrayrl train sac --out runs/sac                      # a behaviour policy
  arrayrl collect --policy runs/sac --episodes 50 --dataset-id pendulum/sac-v0
  arrayrl train {name} --dataset pendulum/sac-v0
  arrayrl train {name} --dataset ./datasets/pendulum/sac-v0 --steps 5000 --no-progress
"""

_IMITATION_EPILOG = """\
No environment frames are collected and no reward is read: every gradient step fits
the actor to the actions of a minibatch of the dataset's transitions (the offline extra
reads it: pip install 'arrayrl[offline]'). Batches of 256, MLPs [256, 256]. bc:
BCLoss, the MSE between the expert action and a deterministic tanh-bounded actor
(TD3's: ReLU MLP), Adam 3e-4. diffusion-bc: DiffusionBCLoss, DDPM noise prediction of
the actions scaled into [-1, 1], Adam 1e-3; the actor is a DiffusionActor (SiLU MLP
reading the step as t/T; 50 linear steps, beta 2e-3 to 0.4) whose sample is clipped
and mapped into the action box; its deterministic policy is the reverse chain started
from zeros without noise. The learning curve's "frames" column counts gradient steps;
its return is the deterministic policy's mean over --eval-episodes episodes.

examples:
  arrayrl train sac --out runs/sac                      # a behaviour policy
  arrayrl collect --policy runs/sac --episodes 50 --dataset-id pendulum/sac-v0
  arrayrl train {name} --dataset pendulum/sac-v0 --out runs/{name}
  arrayrl collect --policy runs/{name} --deterministic --dataset-id {name}-eval-v0
"""

_MARL_EPILOG = """\
{settings}

--env names a VMAS scenario (navigation, balance, ...; needs the marl extra: pip
install 'arrayrl[marl]') whose agents share one observation and one action space.
Each of the --num-envs environments runs episodes of at most --max-steps steps: VMAS
truncates there (the value of the last state is bootstrapped), while a scenario's own
end of the task is a termination (no bootstrap). --frames counts team frames
(environment steps x envs) and is rounded to whole iterations of envs x --max-steps
frames (a line says so). The learning curve's
mean_return is the mean per-agent episode return (each agent's undiscounted return,
averaged over the agents and the last 60 episodes), what TorchRL's multi-agent tutorial
logs; with a shared reward (navigation, balance) it is the team return. The curve is
rewritten every --save-every seconds and at the end; Ctrl-C stops the run, writes the
curve so far, says where, and exits with status 130.

examples:
  arrayrl train {name}                              # navigation, 3 agents, {frames} frames
  arrayrl train {name} --seed 1 --out /tmp/{name}-1
  arrayrl train {name} --env balance --n-agents 4{extra}
  arrayrl train {name} --frames 6000 --num-envs 60 --no-progress
"""

_MAPPO_SETTINGS = """\
{what} with the settings of TorchRL's multi-agent PPO tutorial: continuous actions, a
TanhNormal policy from one MultiAgentMLP shared by the agents (decentralised, 2 x 256,
tanh); 60 envs x 100 steps per iteration, multi-agent GAE (gamma 0.99, lambda 0.9;
team flags broadcast over the agents), 30 epochs of minibatches of 400, Adam 3e-4,
clip 0.2, entropy coefficient 1e-4, smooth-L1 critic loss, advantages standardised per
agent, gradient norm clipped at 1.
The critic: {critic}."""

_QMIX_SETTINGS = """\
QMIX (QMixerLoss: monotonic QMixer hypernetwork of the stacked observations, embedding
32) or VDN (--mixer vdn: the sum of the agents' values) on discrete actions, after
TorchRL's qmix_vdn example: per-agent action values from one MultiAgentMLP shared by the
agents (2 x 256, tanh), epsilon-greedy per agent from 0.3 to 0 over the first half of the
frames, team reward = the agents' mean reward, TD(0) with gamma 0.9, Adam 5e-4, gradient
norm clipped at 40, targets soft-updated (tau 0.005) after every gradient step; each
iteration adds 60 envs x 100 steps to a 60k-frame replay buffer and makes 20 epochs of
6 minibatches of 1,000 (120 gradient steps)."""

_COLLECT_EPILOG = """\
The policy is a checkpoint that every training run writes (<out>/policy.npz). It acts
as in training unless --deterministic: SAC and PPO draw from the policy's distribution,
TD3 adds its Gaussian exploration noise. Episode k is reset with seed S + k and ends at
the environment's time limit, or after --steps steps (marked truncated).

The dataset is written with Minari's own writer (HDF5) to <root>/<dataset-id>, the
root being --out, else $MINARI_DATASETS_PATH, else ~/.minari/datasets. Dataset ids are
Minari's: [namespace/]name-v<version>. Load it in Python with
arrayrl.data.minari.load_minari(dataset_id, root=...) (TorchRL's key layout), or with
minari.load_dataset. Needs the offline extra: pip install 'arrayrl[offline]'.

examples:
  arrayrl collect --policy runs/sac-Pendulum-v1-0/policy.npz --dataset-id pendulum/sac-v0
  arrayrl collect --policy runs/sac-Pendulum-v1-0 --episodes 50 --dataset-id pendulum/sac-v1
  arrayrl collect --policy run/policy.npz --dataset-id test/pend-v0 --steps 100 --out /tmp/d
  arrayrl collect --policy run/policy.npz --dataset-id pendulum/greedy-v0 --deterministic
"""
#: the modules ``arrayrl collect`` needs: the ``[offline]`` extra (and Gymnasium, tqdm)
COLLECT_MODULES = ("gymnasium", "tqdm", "minari", "h5py", "PIL")


def package_version() -> str:
    """The installed distribution's version (``"unknown"`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("arrayrl")
    except PackageNotFoundError:
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    """The ``arrayrl`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="arrayrl",
        description="arrayrl: TorchRL's losses and value estimators on the Python Array API.",
        epilog=_MAIN_EPILOG,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"arrayrl {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_conformance_parser(commands)
    _add_train_parser(commands)
    _add_collect_parser(commands)
    _add_advantages_parser(commands)
    return parser


def _add_conformance_parser(commands: Any) -> None:
    """``arrayrl conformance [options]``."""
    from arrayrl.conformance.plan import FAMILIES

    conformance = commands.add_parser(
        "conformance",
        help="every estimator and loss case x every available backend, and TorchRL",
        description="Run every estimator and loss case on every backend and kernel available\n"
        "here; compare with the float64 reference and with TorchRL.",
        epilog=_CONFORMANCE_EPILOG.format(
            families=textwrap.fill(", ".join(FAMILIES), 86, subsequent_indent="  ")
        ),
        formatter_class=_FORMATTER,
    )
    conformance.add_argument(
        "--json", metavar="PATH", help="also write the full report (JSON) here"
    )
    conformance.add_argument(
        "-k",
        "--filter",
        default="",
        metavar="NAMES",
        help="only these families or cases (gae, vtrace, ppo, ...; see below)",
    )
    conformance.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        action="append",
        help="only this input dtype (repeat for both; default both)",
    )
    conformance.add_argument("--no-torchrl", action="store_true", help="skip the TorchRL oracle")
    conformance.add_argument(
        "--cases", action="store_true", help="one row per case, not per function or loss"
    )
    conformance.add_argument(
        "--against",
        metavar="FRAMEWORKS",
        help="instead: run other frameworks' estimators (torchrl, rlax, sb3, cleanrl; "
        "comma-separated) on every case, in one matrix",
    )
    conformance.add_argument(
        "--report",
        metavar="PATH",
        help="with --against: write the matrix as Markdown here, and as JSON and one plot "
        "per function (PATH's stem + _plots/) beside it",
    )


def _add_train_parser(commands: Any) -> None:
    """``arrayrl train ppo [options]``."""
    train = commands.add_parser(
        "train",
        help="train an agent with arrayrl's losses",
        description="Train an agent with arrayrl's losses (needs the train extra:\n"
        "pip install 'arrayrl[train]').",
        epilog=_TRAIN_GROUP_EPILOG,
        formatter_class=_FORMATTER,
    )
    algorithms = train.add_subparsers(dest="algorithm", required=True, metavar="ALGORITHM")
    ppo = algorithms.add_parser(
        "ppo",
        help="PPO (ClipPPOLoss + GAE) on Gymnasium vector envs",
        description="Train PPO with arrayrl's ClipPPOLoss and GAE on a Gymnasium vector env;\n"
        "write <out>/learning_curve.csv and .png.",
        epilog=_TRAIN_EPILOG,
        formatter_class=_FORMATTER,
    )
    ppo.add_argument("--env", default="CartPole-v1", help="Gymnasium id (default CartPole-v1)")
    ppo.add_argument("--frames", type=int, help="total env frames (default: the preset's)")
    _add_run_options(ppo)
    _add_out_option(ppo, "ppo")
    ppo.add_argument("--num-envs", type=int, help="parallel environments")
    ppo.add_argument("--lr", type=float, help="Adam learning rate")
    ppo.add_argument(
        "--rnd",
        action="store_true",
        default=None,
        help="add Random Network Distillation's intrinsic bonus (Burda et al. 2018) to the "
        "rewards; the logged return stays the environment's",
    )
    ppo.add_argument(
        "--rnd-coeff", type=float, help="with --rnd: the intrinsic reward's scale (default 1.0)"
    )
    _add_progress_options(ppo)
    _add_offpolicy_parser(algorithms, "sac", "SAC (SACLoss, learned temperature)", _SAC_SETTINGS)
    _add_offpolicy_parser(algorithms, "td3", "TD3 (TD3Loss, delayed policy updates)", _TD3_SETTINGS)
    _add_offpolicy_parser(
        algorithms, "dqn", "DQN (DQNLoss, epsilon-greedy, target copies)", _DQN_SETTINGS,
        discrete=True,
    )  # fmt: skip
    _add_offline_parser(algorithms, "iql", "IQL (IQLLoss: expectile value, AWR actor)")
    _add_offline_parser(algorithms, "cql", "CQL (CQLLoss: conservative Q penalty)")
    _add_offline_parser(algorithms, "bc", "behaviour cloning (BCLoss, MSE)", _IMITATION_EPILOG)
    _add_offline_parser(
        algorithms, "diffusion-bc", "diffusion behaviour cloning (DiffusionBCLoss)",
        _IMITATION_EPILOG,
    )  # fmt: skip
    for name, (what, settings) in _MARL_COMMANDS.items():
        _add_marl_parser(algorithms, name, what, settings)


#: the defaults the off-policy help texts quote: env, frames, warm-up, UTD ratio
_OFFPOLICY_DEFAULTS = {
    "sac": ("Pendulum-v1", "20,000", 5000, "1"),
    "td3": ("Pendulum-v1", "30,000", 5000, "1"),
    "dqn": ("CartPole-v1", "100,000", 1000, "0.5"),
}


def _add_offpolicy_parser(
    algorithms: Any, name: str, what: str, settings: str, *, discrete: bool = False
) -> None:
    """``arrayrl train sac|td3|dqn [options]``."""
    env, frames, learning_starts, utd = _OFFPOLICY_DEFAULTS[name]
    actions = "discrete" if discrete else "continuous"
    parser = algorithms.add_parser(
        name,
        help=f"{what} on Gymnasium envs with {actions} actions",
        description=f"Train {what} with a replay buffer on a Gymnasium env with\n"
        f"{actions} actions; write <out>/learning_curve.csv and .png.",
        epilog=_OFFPOLICY_EPILOG.format(settings=settings, name=name, frames=frames, env=env),
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--env", default=env, help=f"Gymnasium id (default {env})")
    parser.add_argument("--frames", type=int, help=f"total env frames (default {frames})")
    _add_run_options(parser)
    _add_out_option(parser, name)
    parser.add_argument("--num-envs", type=int, help="parallel environments (default 1)")
    parser.add_argument(
        "--learning-starts", type=int, metavar="FRAMES",
        help=f"random-action frames before learning (default {learning_starts})",
    )  # fmt: skip
    parser.add_argument(
        "--utd-ratio", type=float, metavar="R", help=f"gradient steps per frame (default {utd})"
    )
    batch = 64 if discrete else 256
    parser.add_argument("--batch-size", type=int, help=f"minibatch size (default {batch})")
    parser.add_argument(
        "--log-every", type=int, metavar="FRAMES", help="frames per curve row (default 1000)"
    )
    _add_progress_options(parser)


def _add_offline_parser(
    algorithms: Any, name: str, what: str, epilog: str = _OFFLINE_EPILOG
) -> None:
    """``arrayrl train iql|cql|bc|diffusion-bc --dataset ID [options]``."""
    parser = algorithms.add_parser(
        name,
        help=f"{what} offline, from a Minari dataset",
        description=f"Train {what} offline on the transitions of a Minari dataset;\n"
        "evaluate the deterministic policy in the dataset's env after every --eval-every\n"
        "gradient steps; write <out>/learning_curve.csv and .png and <out>/policy.npz.",
        epilog=epilog.format(name=name),
        formatter_class=_FORMATTER,
    )
    parser.add_argument(
        "--dataset", required=True, metavar="ID", help="Minari dataset id or directory"
    )
    parser.add_argument("--root", metavar="DIR", help="Minari root for dataset ids")
    parser.add_argument("--env", help="Gymnasium id to evaluate on (default: the dataset's)")
    parser.add_argument("--steps", type=int, help="gradient steps (default 20,000)")
    _add_run_options(parser)
    _add_out_option(parser, name)
    parser.add_argument("--batch-size", type=int, help="minibatch size (default 256)")
    parser.add_argument(
        "--eval-every", type=int, metavar="STEPS",
        help="gradient steps per evaluation and curve row (default 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--eval-episodes", type=int, metavar="N", help="episodes per evaluation (default 5)"
    )
    _add_progress_options(parser)


#: the multi-agent commands: what they train, their settings in words
_MARL_COMMANDS = {
    "mappo": (
        "MAPPO (MAPPOLoss: centralised critic)",
        _MAPPO_SETTINGS.format(
            what="MAPPO (MAPPOLoss)",
            critic="one MultiAgentMLP, centralised (each agent's value reads the whole\n"
            "team's observations)",
        ),
    ),
    "ippo": (
        "IPPO (IPPOLoss: independent critics)",
        _MAPPO_SETTINGS.format(
            what="IPPO (IPPOLoss)",
            critic="one MultiAgentMLP, decentralised (each agent's value reads its own\n"
            "observation)",
        ),
    ),
    "qmix": ("QMIX or VDN (QMixerLoss: mixed agents' values)", _QMIX_SETTINGS),
}
#: the default frames the multi-agent help texts quote
_MARL_FRAMES = {"mappo": "60,000", "ippo": "60,000", "qmix": "120,000"}


def _add_marl_parser(algorithms: Any, name: str, what: str, settings: str) -> None:
    """``arrayrl train mappo|ippo|qmix [options]``."""
    frames = _MARL_FRAMES[name]
    parser = algorithms.add_parser(
        name,
        help=f"{what} on VMAS scenarios",
        description=f"Train {what} on a VMAS multi-agent scenario;\n"
        "write <out>/learning_curve.csv and .png and <out>/policy.npz.",
        epilog=_MARL_EPILOG.format(
            settings=settings, name=name, frames=frames,
            extra=" --mixer vdn" if name == "qmix" else "",
        ),
        formatter_class=_FORMATTER,
    )  # fmt: skip
    parser.add_argument("--env", default="navigation", help="VMAS scenario (default navigation)")
    parser.add_argument("--frames", type=int, help=f"total team frames (default {frames})")
    _add_run_options(parser)
    _add_out_option(parser, name)
    parser.add_argument("--n-agents", type=int, help="agents in the scenario (default 3)")
    parser.add_argument("--num-envs", type=int, help="parallel VMAS environments (default 60)")
    parser.add_argument(
        "--max-steps", type=int, help="episode length, and steps per iteration (default 100)"
    )
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    if name == "qmix":
        parser.add_argument(
            "--mixer", choices=("qmix", "vdn"), default="qmix", help="mixing network"
        )
    else:
        parser.add_argument(
            "--value-norm", choices=("popart", "running", "percentile"),
            help="normalise the critic's targets and predictions (default: none)",
        )  # fmt: skip
    _add_progress_options(parser)


def _add_run_options(parser: Any) -> None:
    """``--seed``, ``--backend`` and ``--device``, as every training command has them."""
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    parser.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "numpy"),
        help="array backend; only torch trains (NumPy has no autograd)",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ...")


def _add_out_option(parser: Any, name: str) -> None:
    """``--out``, defaulting to ``runs/<name>-<env>-<seed>``."""
    parser.add_argument(
        "--out", metavar="DIR", help=f"output folder (default runs/{name}-<env>-<seed>)"
    )


def _add_progress_options(parser: Any) -> None:
    """``--save-every`` and ``--no-progress``, as every training command has them."""
    parser.add_argument(
        "--save-every",
        type=float,
        metavar="SECONDS",
        help="rewrite the curve every SECONDS while training (default 30)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_collect_parser(commands: Any) -> None:
    """``arrayrl collect --policy PATH --dataset-id ID [options]``."""
    collect = commands.add_parser(
        "collect",
        help="record a Minari dataset with a trained policy",
        description="Run a trained policy (a policy.npz checkpoint) in its Gymnasium env and\n"
        "record the episodes as a Minari dataset.",
        epilog=_COLLECT_EPILOG,
        formatter_class=_FORMATTER,
    )
    collect.add_argument(
        "--policy", required=True, metavar="PATH", help="policy.npz (or the run folder holding it)"
    )
    collect.add_argument(
        "--dataset-id", required=True, metavar="ID", help="Minari id: [namespace/]name-v<N>"
    )
    collect.add_argument("--env", help="Gymnasium id (default: the policy's own)")
    collect.add_argument(
        "--episodes", type=int, default=10, metavar="N", help="episodes to record (default 10)"
    )
    collect.add_argument(
        "--steps", type=int, metavar="M", help="cap each episode at M steps (truncated)"
    )
    collect.add_argument(
        "--out",
        metavar="DIR",
        help="Minari root (default $MINARI_DATASETS_PATH or ~/.minari/datasets)",
    )
    collect.add_argument("--seed", type=int, default=0, help="seed of the resets and draws")
    collect.add_argument(
        "--deterministic", action="store_true", help="act with the deterministic action"
    )
    collect.add_argument(
        "--backend", default="numpy", choices=("numpy", "torch"),
        help="where the policy computes (default numpy)",
    )  # fmt: skip
    collect.add_argument("--device", help="the backend's device (torch: cpu, cuda, ...)")
    collect.add_argument(
        "--overwrite", action="store_true", help="replace an existing dataset of that id"
    )
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- conformance -------------------------------------------------------------------------


def _row_key(case_name: str, per_case: bool) -> str:
    return case_name if per_case else case_name.split("[", 1)[0]


def _matrix(cells: list[Any], per_case: bool) -> str:
    """Rows: function (or case) × dtype; columns: targets; cell: max error and pass mark."""
    targets = list(dict.fromkeys(c.target for c in cells))
    table: dict[tuple[str, str], dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for cell in cells:
        table[(_row_key(cell.case, per_case), cell.dtype)][cell.target].append(cell)
    name_width = max(len(k[0]) for k in table) + 9
    width = max(24, *(len(t) + 2 for t in targets))
    lines = [" " * name_width + "".join(f"{t:>{width}}" for t in targets)]
    for (row, dtype), by_target in table.items():
        entries = []
        for target in targets:
            group = by_target.get(target, [])
            if not group:
                entries.append(f"{'-':>{width}}")
                continue
            failed = sum(not c.passed for c in group)
            worst = max(c.error for c in group)
            mark = "ok" if not failed else f"FAIL {failed}/{len(group)}"
            dev = "*" if any(c.note.startswith("deviation") for c in group) else ""
            entries.append(f"{worst:>{width - 12}.2e} {mark + dev:>11}")
        lines.append(f"{row + ' ' + dtype:<{name_width}}" + "".join(entries))
    return "\n".join(lines)


def json_path_error(path: str) -> str | None:
    """Why the report cannot be written to ``path``, or ``None`` when it can.

    Checked before the run by opening the file for appending (which also catches a
    read-only file system, and works for root); a file that did not exist is removed.
    """
    target = Path(path)
    if target.is_dir():
        return "is a directory"
    existed = target.exists()
    try:
        with target.open("a"):
            pass
    except OSError as error:
        return error.strerror or str(error)
    if not existed:
        target.unlink(missing_ok=True)
    return None


def _error(command: str, message: str) -> int:
    """Print ``message`` as one error line on stderr; return exit status 2."""
    print(f"arrayrl {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def select_cases(pattern: str) -> tuple[list[Any], list[Any]]:
    """The estimator cases and the loss cases that ``-k pattern`` selects."""
    from arrayrl.conformance.cases import all_cases
    from arrayrl.conformance.loss_cases import all_loss_cases
    from arrayrl.conformance.plan import select

    return select(all_cases(), pattern), select(all_loss_cases(), pattern)


def run_conformance(args: argparse.Namespace) -> int:
    """Run the conformance matrix; exit status 1 when a cell fails, 2 on a bad option."""
    from arrayrl.conformance import plan, runner
    from arrayrl.conformance.cases import DTYPES

    if args.json and (why := json_path_error(args.json)):
        return _error("conformance", f"cannot write --json {args.json}: {why}")
    if args.report and not args.against:
        return _error("conformance", "--report goes with --against (the frameworks' matrix)")
    if args.against:
        return run_against_frameworks(args)
    cases, loss_cases = select_cases(args.filter)
    if not cases and not loss_cases:
        return _error(
            "conformance",
            f"-k {args.filter!r} matches no case; families: {plan.family_names()} "
            "(or a function or loss class name, or part of a case name)",
        )
    skipped = plan.skipped_backends(with_torchrl=not args.no_torchrl)
    print(plan.oracle_line(skipped))
    print(plan.describe_skipped(skipped))
    dtypes = args.dtype or DTYPES
    with_torchrl = "torchrl" not in skipped
    cells = _run_estimators(runner, cases, dtypes, args.cases, with_torchrl) if cases else []
    if loss_cases:
        cells += _run_losses(runner, loss_cases, dtypes, args.cases, with_torchrl)
    report = runner.report(cells, skipped)
    _print_footer(report, cells, bool(loss_cases))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"report written to {args.json}")
    failed = sum(not c.passed for c in cells)
    print(f"{len(cells) - failed} passed, {failed} failed; {plan.describe_skipped(skipped)}")
    return 1 if failed else 0


def run_against_frameworks(args: argparse.Namespace) -> int:
    """``--against``: other frameworks' estimators on every case; exit status 1 when a
    cell fails with no recorded disagreement, 2 on a bad option."""
    from arrayrl.conformance.against import run_against
    from arrayrl.conformance.cases import DTYPES
    from arrayrl.conformance.frameworks import FRAMEWORKS

    names = [n.strip().lower() for n in args.against.split(",") if n.strip()]
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown or not names:
        return _error(
            "conformance", f"--against {args.against!r}: frameworks are {', '.join(FRAMEWORKS)}"
        )
    report_path = Path(args.report) if args.report else None
    if report_path and (why := json_path_error(str(report_path))):
        return _error("conformance", f"cannot write --report {args.report}: {why}")
    cases, _ = select_cases(args.filter)
    if args.filter and not cases:
        return _error("conformance", f"-k {args.filter!r} matches no estimator case")
    functions = sorted({case.function for case in cases}) if args.filter else None
    report = run_against(names, functions=functions, dtypes=args.dtype or DTYPES)
    print(report)
    if report_path:
        plots = _write_plots(report, report_path)
        report_path.write_text(report.to_markdown(plots=plots) + "\n")
        json_path = report_path.with_suffix(".json")
        json_path.write_text(json.dumps(report.to_dict(), indent=1))
        print(f"report written to {report_path} and {json_path}")
    return 1 if report.failures else 0


def _write_plots(report: Any, report_path: Path) -> dict[str, str]:
    """One PNG per function into ``<stem>_plots/`` beside the report; ``function ->
    path relative to the report`` (empty, saying why, when none could be written)."""
    if not report.cells:
        return {}
    folder = report_path.with_name(f"{report_path.stem}_plots")
    try:
        written = report.plot(folder)
    except OSError as error:
        print(f"no plots: cannot write {folder}: {error}")
        return {}
    if not written:
        print("no plots: matplotlib is not installed (pip install matplotlib)")
        return {}
    print(f"plots written to {folder}/")
    return {
        function: f"{folder.name}/{path.name}"
        for function, path in zip(report.functions, written, strict=True)
    }


def _run_estimators(
    runner: Any, cases: list[Any], dtypes: Sequence[str], per_case: bool, with_torchrl: bool
) -> list[Any]:
    """Run and print the estimator matrix on every backend × kernel here."""
    from arrayrl.conformance.backends import available_targets

    targets = available_targets()
    names = [t.name for t in targets]
    return _run_matrix("cases", runner.run, cases, targets, names, dtypes, per_case, with_torchrl)


def _run_losses(
    runner: Any, cases: list[Any], dtypes: Sequence[str], per_case: bool, with_torchrl: bool
) -> list[Any]:
    """Run and print the loss matrix (gradients on torch; a subset of cases on JAX)."""
    from arrayrl.conformance.backends import available_loss_targets

    targets = available_loss_targets()
    names = [t.label for t in targets]
    return _run_matrix(
        "loss cases", runner.run_losses, cases, targets, names, dtypes, per_case, with_torchrl
    )


def _run_matrix(
    what: str,
    run: Any,
    cases: list[Any],
    targets: list[Any],
    names: list[str],
    dtypes: Sequence[str],
    per_case: bool,
    with_torchrl: bool,
) -> list[Any]:
    """Say what runs where, run ``cases`` on ``targets`` and print their matrix."""
    print(f"\n{len(cases)} {what} x {len(dtypes)} dtypes on: {', '.join(names)}")
    cells = run(cases, targets, dtypes=dtypes, with_torchrl=with_torchrl)
    print(_matrix(cells, per_case))
    return cells


def _print_footer(report: dict[str, Any], cells: list[Any], with_losses: bool) -> None:
    """Tolerances, the deviations the cells used, and every failed cell."""
    print("\nmax scaled error = max|x - ref| / max(1, max|ref|); tolerance", report["tolerance"])
    if with_losses:
        print("loss cases (every output, every loss_* gradient):", report["loss_tolerance"])
    for deviation in report["deviations"]:
        issue = deviation["torchrl_issue"] or "no TorchRL issue number"
        print(f"* deviation {deviation['key']} ({issue}): {deviation['reason']}")
    for cell in (c for c in cells if not c.passed):
        print(f"FAIL {cell.case} {cell.dtype} {cell.target}: {cell.error:.3g} {cell.note}")


# -- train -------------------------------------------------------------------------------


def missing_train_modules() -> list[str]:
    """The modules of the ``[train]`` extra that cannot be imported here."""
    missing = []
    for name in TRAIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def run_train(args: argparse.Namespace) -> int:
    """Run ``arrayrl train ppo|sac|td3|dqn|iql|cql``: 2 on a setting that cannot train,
    130 on Ctrl-C."""
    missing = missing_train_modules()
    if missing:
        return _error(
            "train",
            f"missing {', '.join(missing)}: install the train extra (pip install 'arrayrl[train]')",
        )
    if args.algorithm in ("sac", "td3", "dqn"):
        return _run_offpolicy(args)
    if args.algorithm in ("iql", "cql", "bc", "diffusion-bc"):
        return _run_offline(args)
    if args.algorithm in ("mappo", "ippo", "qmix"):
        return _run_marl(args)
    from arrayrl.train import check_setup, frames_note, make_config, train_ppo

    try:
        config = make_config(
            args.env,
            frames=args.frames,
            seed=args.seed,
            backend=args.backend,
            device=args.device,
            out=args.out,
            num_envs=args.num_envs,
            lr=args.lr,
            rnd=args.rnd,
            rnd_coeff=args.rnd_coeff,
            save_every_s=args.save_every,
            progress=not args.no_progress,
        )
        if args.rnd_coeff is not None and not config.rnd:
            raise ValueError("--rnd-coeff sets the RND bonus's scale: add --rnd")
        check_setup(config)
    except ValueError as error:
        return _error("train ppo", str(error))
    return _train_and_report("train ppo", train_ppo, config, frames_note(config))


def _run_offpolicy(args: argparse.Namespace) -> int:
    """Run ``arrayrl train sac``, ``td3`` or ``dqn``."""
    import arrayrl.train as training

    name = args.algorithm
    command = f"train {name}"
    make = getattr(training, f"make_{name}_config")
    try:
        config = make(
            args.env,
            frames=args.frames,
            seed=args.seed,
            backend=args.backend,
            device=args.device,
            out=args.out,
            num_envs=args.num_envs,
            learning_starts=args.learning_starts,
            utd_ratio=args.utd_ratio,
            batch_size=args.batch_size,
            log_every=args.log_every,
            save_every_s=args.save_every,
            progress=not args.no_progress,
        )
        getattr(training, f"check_{name}_setup")(config)
    except ValueError as error:
        return _error(command, str(error))
    train = getattr(training, f"train_{name}")
    return _train_and_report(command, train, config, training.offpolicy_frames_note(config))


def _run_offline(args: argparse.Namespace) -> int:
    """Run ``arrayrl train iql``, ``cql``, ``bc`` or ``diffusion-bc`` (the offline extra
    too)."""
    from arrayrl.train.offline import check_offline_setup, make_offline_config, train_offline

    name = args.algorithm
    command = f"train {name}"
    missing = missing_collect_modules(args.backend)
    if missing:
        return _error(
            command,
            f"missing {', '.join(missing)}: install the offline extra "
            "(pip install 'arrayrl[offline]')",
        )
    try:
        config = make_offline_config(
            name,
            dataset=args.dataset,
            root=args.root,
            env_id=args.env,
            steps=args.steps,
            seed=args.seed,
            backend=args.backend,
            device=args.device,
            out=args.out,
            batch_size=args.batch_size,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            save_every_s=args.save_every,
            progress=not args.no_progress,
        )
        config = check_offline_setup(config)
    except (ValueError, FileNotFoundError) as error:
        return _error(command, str(error))
    return _train_and_report(command, train_offline, config, None)


def _run_marl(args: argparse.Namespace) -> int:
    """Run ``arrayrl train mappo``, ``ippo`` or ``qmix`` (the marl extra too)."""
    name = args.algorithm
    command = f"train {name}"
    try:
        importlib.import_module("vmas")
    except ImportError:
        return _error(command, "missing vmas: install the marl extra (pip install 'arrayrl[marl]')")
    from arrayrl.train.marl import check_vmas_setup
    from arrayrl.train.runner import frames_note

    settings = {
        "frames": args.frames, "seed": args.seed, "backend": args.backend,
        "device": args.device, "out": args.out, "n_agents": args.n_agents,
        "num_envs": args.num_envs, "max_steps": args.max_steps,
        "rollout_steps": args.max_steps, "lr": args.lr, "save_every_s": args.save_every,
        "progress": not args.no_progress,
    }  # fmt: skip
    if name == "qmix":
        from arrayrl.train.qmix import make_qmix_config as make
        from arrayrl.train.qmix import train_qmix as train

        settings["mixer"] = args.mixer
        command = f"train qmix --mixer {args.mixer}" if args.mixer != "qmix" else command
    else:
        from arrayrl.train.mappo import make_mappo_config
        from arrayrl.train.mappo import train_mappo as train

        settings["value_norm"] = args.value_norm

        def make(env_id: str, **fields: Any) -> Any:
            return make_mappo_config(env_id, algorithm=name, **fields)

    try:
        config = make(args.env, **settings)
        check_vmas_setup(config)
    except ValueError as error:
        return _error(command, str(error))
    return _train_and_report(command, train, config, frames_note(config))


def _train_and_report(command: str, train: Any, config: Any, note: str | None) -> int:
    """Say how ``--frames`` was rounded, train, print the summary; 130 on Ctrl-C (the
    curve so far is written by the runner)."""
    from arrayrl.train import TrainingInterrupted

    if note:
        print(f"arrayrl {command}: {note}", file=sys.stderr)
    try:
        result = train(config)
    except TrainingInterrupted as stop:
        print(stop.result.summary())
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"arrayrl {command}: interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    return 0


# -- collect -----------------------------------------------------------------------------


def missing_collect_modules(backend: str = "numpy") -> list[str]:
    """The modules ``arrayrl collect`` needs that cannot be imported here."""
    names = (*COLLECT_MODULES, "torch") if backend == "torch" else COLLECT_MODULES
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _collect_env(env_id: str, steps: int | None, policy: Any) -> Any:
    """The env to record in, its episodes capped at ``steps``; ``ValueError`` when it
    cannot be made, has no time limit and no ``steps``, or its spaces are not the
    policy's."""
    import gymnasium

    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    try:
        env = gymnasium.make(env_id, **({} if steps is None else {"max_episode_steps": steps}))
    except (gymnasium.error.Error, ImportError) as error:
        raise ValueError(f"cannot make Gymnasium env {env_id!r}: {error}") from None
    if env.spec is None or env.spec.max_episode_steps is None:
        env.close()
        raise ValueError(f"{env_id} has no time limit: pass --steps to end the episodes")
    for name in ("observation_space", "action_space"):
        if getattr(env, name) != getattr(policy, name):
            env.close()
            raise ValueError(
                f"{env_id} has the {name} {getattr(env, name)}, the policy "
                f"({policy.env_id}) {getattr(policy, name)}"
            )
    return env


def run_collect(args: argparse.Namespace) -> int:
    """Run ``arrayrl collect``: 2 on a bad option or input, 130 on Ctrl-C."""
    missing = missing_collect_modules(args.backend)
    if missing:
        return _error(
            "collect",
            f"missing {', '.join(missing)}: install the offline extra "
            "(pip install 'arrayrl[offline]')",
        )
    from arrayrl.data import minari as offline
    from arrayrl.train.checkpoint import load_policy

    try:
        offline._check_id(args.dataset_id)
        if args.episodes < 1:
            raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
        if args.backend == "torch":
            from arrayrl.train import check_device

            check_device("torch", args.device or "cpu")
        policy = load_policy(
            args.policy, backend=args.backend, device=args.device,
            deterministic=args.deterministic, seed=args.seed,
        )  # fmt: skip
        env = _collect_env(args.env or policy.env_id, args.steps, policy)
    except (ValueError, FileNotFoundError, TypeError) as error:
        return _error("collect", str(error))
    try:
        return _record_and_write(args, policy, env, offline)
    except KeyboardInterrupt:
        print("arrayrl collect: interrupted, no dataset written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileExistsError) as error:
        return _error("collect", str(error))
    finally:
        env.close()


def _record_and_write(args: argparse.Namespace, policy: Any, env: Any, offline: Any) -> int:
    """Record ``args.episodes`` episodes with a progress bar, write the dataset, say
    where it went and its mean episode return."""
    import numpy as np

    from arrayrl.train import ProgressBar

    root = offline.minari_root(args.out)
    if (root / args.dataset_id).exists() and not args.overwrite:
        raise FileExistsError(
            f"a Minari dataset {args.dataset_id!r} exists at {root / args.dataset_id}; "
            "choose another id (a new version: -v1, ...) or pass --overwrite"
        )
    total = args.episodes * env.spec.max_episode_steps
    with ProgressBar(total, enabled=not args.no_progress) as bar:
        episodes = offline.record_episodes(
            env, policy, args.episodes, seed=args.seed,
            on_step=lambda frames, done: bar.update(
                frames, np.mean([e.episode_return for e in done]) if done else None
            ),
        )  # fmt: skip
    description = (
        f"{len(episodes)} episodes of {env.spec.id} recorded by arrayrl collect with the "
        f"{policy.algorithm} policy {args.policy} ({policy.exploration}), seed {args.seed}"
    )
    directory = offline.write_minari(
        args.dataset_id, episodes, env, root=root, overwrite=args.overwrite,
        algorithm_name=f"arrayrl-{policy.algorithm}", description=description,
    )  # fmt: skip
    returns = [e.episode_return for e in episodes]
    steps = sum(len(e) for e in episodes)
    print(
        f"{args.dataset_id}: {len(episodes)} episodes, {steps:,} transitions of "
        f"{env.spec.id} by the {policy.algorithm} policy ({policy.exploration}); mean "
        f"episode return {np.mean(returns):.1f} (min {min(returns):.1f}, max "
        f"{max(returns):.1f}); dataset: {directory}"
    )
    return 0


_ADVANTAGES_EPILOG = """\
The dataset holds arrays of one shape [B, T, 1] (time at --time-dim), in TorchRL's
layout: state_value, next/state_value, next/reward, next/done, next/terminated
(terminated defaults to done). --key NAME=PATH renames one, e.g. --key reward=rewards.
The results are written as advantage and value_target in the same Zarr group or HDF5
file. Needs the dask extra (dask, distributed, zarr; h5py for HDF5 files).

example:
  arrayrl advantages data.zarr --gamma 0.99 --lmbda 0.95 --chunks 256,-1
  arrayrl advantages data.zarr --scheduler local:2        # two worker processes
  arrayrl advantages data.zarr --scheduler tcp://10.0.0.1:8786
"""


def _add_advantages_parser(commands: Any) -> None:
    """``arrayrl advantages PATH [options]`` (issue 13: Dask, out of core)."""
    parser = commands.add_parser(
        "advantages",
        help="advantages of a Zarr/HDF5 dataset larger than memory (Dask, out of core)",
        description="Compute GAE or TD(lambda) advantages of a chunked dataset out of core\n"
        "with Dask and write them next to the data.",
        epilog=_ADVANTAGES_EPILOG,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("path", help="a Zarr group (folder) or an HDF5 file (.h5, .hdf5)")
    parser.add_argument("--estimator", choices=("gae", "td_lambda"), default="gae")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount (default 0.99)")
    parser.add_argument("--lmbda", type=float, default=0.95, help="lambda (default 0.95)")
    parser.add_argument(
        "--scheduler",
        default="threads",
        help="threads, processes, sync, local:N (N worker processes) or a distributed "
        "scheduler's address (default threads)",
    )
    parser.add_argument(
        "--chunks",
        metavar="B,T",
        help="chunk sizes of the leading axes, -1 = whole axis "
        "(default: as stored; write --chunks=-1,64 when it starts with -1); chunks along "
        "time are joined by the associative scan",
    )
    parser.add_argument("--time-dim", type=int, default=-2, help="time axis (default -2)")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="where an input lives (state_value, next_state_value, reward, done, terminated)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display")


def run_advantages(args: argparse.Namespace) -> int:
    """Run ``arrayrl advantages``: compute, write, print one summary line."""
    import time

    from arrayrl.data.chunked_store import compute_advantages, parse_chunks

    keys = {}
    for item in args.key:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"arrayrl advantages: --key takes NAME=PATH, got {item!r}")
        keys[name] = path
    start = time.perf_counter()
    try:
        shapes = compute_advantages(
            args.path,
            estimator=args.estimator,
            gamma=args.gamma,
            lmbda=args.lmbda,
            keys=keys,
            chunks=parse_chunks(args.chunks),
            scheduler=args.scheduler,
            time_dim=args.time_dim,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, KeyError, ValueError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise SystemExit(f"arrayrl advantages: {message}") from None
    written = ", ".join(f"{k} {list(v)}" for k, v in shapes.items())
    print(f"wrote {written} to {args.path} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arrayrl`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "conformance":
        return run_conformance(args)
    if args.command == "train":
        return run_train(args)
    if args.command == "collect":
        return run_collect(args)
    if args.command == "advantages":
        return run_advantages(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
