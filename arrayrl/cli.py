"""The ``arrayrl`` command line.

``arrayrl conformance`` runs every estimator case on every backend and kernel available
here, and every loss case (outputs, and gradients on torch) on every backend, compares
them with the float64 reference and with TorchRL, prints the matrices and optionally
writes them as JSON.

``arrayrl train ppo`` trains a PPO agent on a Gymnasium environment with arrayrl's
``ClipPPOLoss`` and GAE (torch backend), shows a progress bar on stderr, writes the
learning curve as CSV and PNG and prints a summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arrayrl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conformance = commands.add_parser(
        "conformance", help="every estimator and loss case x every available backend, and TorchRL"
    )
    conformance.add_argument("--json", metavar="PATH", help="write the full report here")
    conformance.add_argument("-k", "--filter", default="", help="only cases whose name has this")
    conformance.add_argument("--dtype", choices=("float32", "float64"), action="append")
    conformance.add_argument("--no-torchrl", action="store_true", help="skip the TorchRL oracle")
    conformance.add_argument(
        "--cases", action="store_true", help="one row per case, not per function or loss"
    )
    _add_train_parser(commands)
    return parser


_TRAIN_EPILOG = """\
Settings not given on the command line come from the environment's preset
(arrayrl.train.PRESETS). CartPole-v1 uses CleanRL's PPO settings (8 envs x 128 steps,
4 minibatches, 4 epochs, Adam 2.5e-4 annealed, gamma 0.99, lambda 0.95, clip 0.2) with
a running reward normalisation and a smooth-L1 critic loss; Pendulum-v1 (TanhNormal
policy) uses gamma 0.9, Adam 1e-3, 10 epochs of 32 minibatches, 100k frames.

examples:
  arrayrl train ppo                                  # CartPole-v1, 250k frames
  arrayrl train ppo --env Pendulum-v1 --seed 1
  arrayrl train ppo --frames 20000 --out /tmp/ppo-smoke
"""


def _add_train_parser(commands: Any) -> None:
    """``arrayrl train ppo [options]``."""
    train = commands.add_parser("train", help="train an agent with arrayrl's losses")
    algorithms = train.add_subparsers(dest="algorithm", required=True)
    ppo = algorithms.add_parser(
        "ppo",
        help="PPO (ClipPPOLoss + GAE) on Gymnasium vector envs",
        description="Train PPO with arrayrl's ClipPPOLoss and GAE on a Gymnasium vector "
        "env; write <out>/learning_curve.csv and .png.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ppo.add_argument("--env", default="CartPole-v1", help="Gymnasium id (default CartPole-v1)")
    ppo.add_argument("--frames", type=int, help="total env frames (default: the preset's)")
    ppo.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    ppo.add_argument(
        "--backend",
        default="torch",
        choices=("torch", "numpy"),
        help="array backend; only torch trains (NumPy has no autograd)",
    )
    ppo.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ppo.add_argument("--out", metavar="DIR", help="output folder (default runs/ppo-<env>-<seed>)")
    ppo.add_argument("--num-envs", type=int, help="parallel environments")
    ppo.add_argument("--lr", type=float, help="Adam learning rate")
    ppo.add_argument("--no-progress", action="store_true", help="no progress bar")


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


def run_conformance(args: argparse.Namespace) -> int:
    """Run the conformance matrix; exit status 1 when a cell fails."""
    from arrayrl.conformance import cases as cases_module
    from arrayrl.conformance import runner
    from arrayrl.conformance.backends import available_targets
    from arrayrl.conformance.loss_cases import all_loss_cases

    cases = [c for c in cases_module.all_cases() if args.filter in c.name]
    loss_cases = [c for c in all_loss_cases() if args.filter in c.name]
    if not cases and not loss_cases:
        print(f"no case matches {args.filter!r}", file=sys.stderr)
        return 2
    dtypes = args.dtype or cases_module.DTYPES
    cells: list[Any] = []
    if cases:
        targets = available_targets()
        print(f"{len(cases)} cases x {len(dtypes)} dtypes on: {', '.join(t.name for t in targets)}")
        cells = runner.run(cases, targets, dtypes=dtypes, with_torchrl=not args.no_torchrl)
        print(_matrix(cells, args.cases))
    if loss_cases:
        cells += _run_losses(runner, loss_cases, dtypes, args)
    report = runner.report(cells)
    print("\nmax scaled error = max|x - ref| / max(1, max|ref|); tolerance", report["tolerance"])
    if loss_cases:
        print("loss cases (every output, every loss_* gradient):", report["loss_tolerance"])
    for deviation in report["deviations"]:
        issue = deviation["torchrl_issue"] or "no TorchRL issue number"
        print(f"* deviation {deviation['key']} ({issue}): {deviation['reason']}")
    for cell in (c for c in cells if not c.passed):
        print(f"FAIL {cell.case} {cell.dtype} {cell.target}: {cell.error:.3g} {cell.note}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
        print(f"report written to {args.json}")
    failed = sum(not c.passed for c in cells)
    print(f"{len(cells) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _run_losses(runner: Any, cases: list[Any], dtypes: Sequence[str], args: Any) -> list[Any]:
    """Run and print the loss matrix (gradients on torch; a subset of cases on JAX)."""
    from arrayrl.conformance.backends import available_loss_targets

    targets = available_loss_targets()
    names = ", ".join(t.label for t in targets)
    print(f"\n{len(cases)} loss cases x {len(dtypes)} dtypes on: {names}")
    cells = runner.run_losses(cases, targets, dtypes=dtypes, with_torchrl=not args.no_torchrl)
    print(_matrix(cells, args.cases))
    return cells


def run_train(args: argparse.Namespace) -> int:
    """Run ``arrayrl train ppo``; exit status 2 on a setting that cannot train."""
    from arrayrl.train import make_config, train_ppo  # torch and Gymnasium load in here

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
            progress=not args.no_progress,
        )
        config.validate()
    except ValueError as error:
        print(f"arrayrl train ppo: error: {error}", file=sys.stderr)
        return 2
    result = train_ppo(config)
    print(result.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arrayrl`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "conformance":
        return run_conformance(args)
    if args.command == "train":
        return run_train(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
