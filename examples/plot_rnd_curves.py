"""Plain PPO against PPO with Random Network Distillation's bonus, from run folders.

Each run folder is what ``arrayrl train ppo --out <folder>`` writes (its
``learning_curve.csv``). The figure has the extrinsic mean episode return of every run
(thin lines) and of each group averaged over its runs (thick), and the RND runs'
intrinsic reward; the runs' CSVs are copied next to the PNG as
``<stem>_<folder name>.csv``::

    for seed in 0 1; do
      arrayrl train ppo --env MountainCar-v0 --frames 300000 --seed $seed \\
          --out runs/mc-plain-$seed --no-progress
      arrayrl train ppo --env MountainCar-v0 --frames 300000 --seed $seed --rnd \\
          --out runs/mc-rnd-$seed --no-progress
    done
    python examples/plot_rnd_curves.py --plain runs/mc-plain-0 runs/mc-plain-1 \\
        --rnd runs/mc-rnd-0 runs/mc-rnd-1 --out examples/results/ppo_rnd_mountaincar.png

or, the same in one command, ``python examples/plot_rnd_curves.py --train runs/mc``.
MountainCar's preset maps the observations onto [-1, 1] inside both networks
(``scale_observations``). ``mean_return`` is the environment's return: the RND bonus is
never counted in it.
"""

from __future__ import annotations

import argparse
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arrayrl.train import read_curve

CURVE = "learning_curve.csv"
COLORS = {"plain": "tab:gray", "rnd": "tab:blue"}
STYLES = {"plain": "--", "rnd": "-"}


def load(folders: Sequence[str]) -> list[tuple[str, dict[str, list[float]]]]:
    """``(folder name, curve columns)`` of each run folder; ``FileNotFoundError`` naming
    a folder without a learning curve."""
    runs = []
    for folder in map(Path, folders):
        path = folder / CURVE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {CURVE}: is it an `arrayrl train` output?")
        runs.append((folder.name, read_curve(path)))
    return runs


def mean_curve(runs: Sequence[tuple[str, dict]]) -> tuple[np.ndarray, np.ndarray]:
    """The frames of the shortest run and the runs' mean ``mean_return`` on them (NaN,
    before a run's first finished episode, left out of the mean)."""
    length = min(len(curve["frames"]) for _, curve in runs)
    returns = np.array([curve["mean_return"][:length] for _, curve in runs], dtype=float)
    counted = np.isfinite(returns)
    total = np.where(counted, returns, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore"):
        mean = total / counted.sum(axis=0)
    return np.asarray(runs[0][1]["frames"][:length]), mean


def plot(groups: dict[str, list[tuple[str, dict]]], path: Path, title: str) -> Path:
    """Write the two-panel figure (returns; RND's intrinsic reward) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(figure)
    returns, bonus = figure.subplots(1, 2)
    for name, runs in groups.items():
        color, style = COLORS.get(name, None), STYLES.get(name, "-")
        for _, curve in runs:
            returns.plot(curve["frames"], curve["mean_return"], color=color, alpha=0.35, lw=0.8)
            if "intrinsic_reward" in curve:
                bonus.plot(curve["frames"], curve["intrinsic_reward"], color=color, lw=0.8)
        frames, mean = mean_curve(runs)
        label = f"{name} (mean of {len(runs)})"
        returns.plot(frames, mean, color=color, ls=style, lw=2.0, label=label)
    returns.set_title("extrinsic mean episode return (last 20 episodes)", fontsize=10)
    returns.legend(loc="lower right")
    bonus.set_title("RND intrinsic reward (normalised, before rnd_coeff)", fontsize=10)
    bonus.set_yscale("log")
    for axis in (returns, bonus):
        axis.set_xlabel("frames")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def summary(groups: dict[str, list[tuple[str, dict]]]) -> list[str]:
    """One line per run: its final and best mean return, and its frames."""
    lines = []
    for name, runs in groups.items():
        for folder, curve in runs:
            finite = [r for r in curve["mean_return"] if math.isfinite(r)]
            best = max(finite) if finite else math.nan
            lines.append(
                f"{name:6s} {folder}: final {curve['mean_return'][-1]:.1f}, best {best:.1f}, "
                f"{curve['frames'][-1]:,.0f} frames, {curve['wall_s'][-1]:.0f} s"
            )
    return lines


def train_runs(root: Path, env_id: str, frames: int, seeds: Sequence[int], coeff: float) -> dict:
    """Train plain PPO and PPO with RND (``rnd_coeff=coeff``) for every seed into
    ``root/plain-s<seed>`` and ``root/rnd-s<seed>``; the folders by group."""
    from arrayrl.train import make_config, train_ppo

    folders: dict[str, list[str]] = {"plain": [], "rnd": []}
    for seed in seeds:
        for name, extra in (("plain", {}), ("rnd", {"rnd": True, "rnd_coeff": coeff})):
            out = root / f"{name}-s{seed}"
            config = make_config(env_id, frames=frames, seed=seed, out=str(out), **extra)
            print(train_ppo(config).summary())
            folders[name].append(str(out))
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", nargs="+", default=[], help="plain PPO run folders")
    parser.add_argument("--rnd", nargs="+", default=[], help="PPO --rnd run folders")
    parser.add_argument("--train", metavar="ROOT", help="train the runs into ROOT first")
    parser.add_argument("--frames", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rnd-coeff", type=float, default=1.0)
    parser.add_argument("--out", default="examples/results/ppo_rnd_mountaincar.png")
    parser.add_argument("--title", default="PPO vs PPO + RND on MountainCar-v0")
    args = parser.parse_args(argv)
    folders = {"plain": args.plain, "rnd": args.rnd}
    if args.train:
        folders = train_runs(
            Path(args.train), "MountainCar-v0", args.frames, args.seeds, args.rnd_coeff
        )
    if not (folders["plain"] and folders["rnd"]):
        parser.error("give --plain and --rnd run folders, or --train ROOT")
    names = [Path(f).name for group in folders.values() for f in group]
    if len(set(names)) != len(names):
        parser.error(f"run folder names must differ (their CSVs are copied by name): {names}")
    groups = {name: load(group) for name, group in folders.items()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for folder in (Path(f) for group in folders.values() for f in group):
        shutil.copyfile(folder / CURVE, out.with_name(f"{out.stem}_{folder.name}.csv"))
    print(plot(groups, out, args.title))
    print("\n".join(summary(groups)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
