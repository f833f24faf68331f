"""The ``arrayrl`` command line.

``arrayrl conformance`` runs every estimator case on every backend and kernel available
here, compares them with the float64 reference and with TorchRL, prints the matrix and
optionally writes it as JSON.
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
        "conformance", help="every estimator case x every available backend, and TorchRL"
    )
    conformance.add_argument("--json", metavar="PATH", help="write the full report here")
    conformance.add_argument("-k", "--filter", default="", help="only cases whose name has this")
    conformance.add_argument("--dtype", choices=("float32", "float64"), action="append")
    conformance.add_argument("--no-torchrl", action="store_true", help="skip the TorchRL oracle")
    conformance.add_argument(
        "--cases", action="store_true", help="one row per case, not per function"
    )
    return parser


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

    cases = [c for c in cases_module.all_cases() if args.filter in c.name]
    if not cases:
        print(f"no case matches {args.filter!r}", file=sys.stderr)
        return 2
    dtypes = args.dtype or cases_module.DTYPES
    targets = available_targets()
    print(f"{len(cases)} cases x {len(dtypes)} dtypes on: {', '.join(t.name for t in targets)}")
    cells = runner.run(cases, targets, dtypes=dtypes, with_torchrl=not args.no_torchrl)
    print(_matrix(cells, args.cases))
    report = runner.report(cells)
    print("\nmax scaled error = max|x - ref| / max(1, max|ref|); tolerance", report["tolerance"])
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``arrayrl`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "conformance":
        return run_conformance(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
