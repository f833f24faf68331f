"""``arrayrl conformance --against``: other frameworks' implementations in one matrix.

Every :class:`~.frameworks.Implementation` of the frameworks named runs through
:func:`~.check.check` on every case of its estimator. A cell is one case × dtype ×
implementation: its scaled error against the float64 reference and a status:

- ``pass``: within the suite's tolerance (:data:`.runner.TOLERANCE`);
- ``known``: outside it, where a recorded :class:`~.frameworks.Disagreement` of the
  implementation covers the case (the framework differs by design; the disagreement is
  named, with its upstream issue, in the report);
- ``n/e``: the case cannot be expressed in the framework's convention (e.g. a truncation
  inside a trajectory for a function with a single ``values`` array);
- ``fail`` / ``error``: outside the tolerance with nothing to explain it, or the function
  raised.

A framework that is not installed is skipped with the reason. :func:`run_against`
returns an :class:`AgainstReport`: ``str()`` is the terminal matrix (one row per
estimator, one column per implementation), :meth:`AgainstReport.to_markdown` the
Markdown report (the summary matrix, the disagreements with their explanations and
upstream links, the per-case tables, links to the plots), :meth:`AgainstReport.to_dict`
the JSON and :meth:`AgainstReport.plot` one small PNG per function (matplotlib).
"""

from __future__ import annotations

import json
import math
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .check import check
from .frameworks import Disagreement, Implementation, framework
from .runner import TOLERANCE

__all__ = ["AgainstCell", "AgainstReport", "run_against"]

_STATUSES = ("pass", "known", "n/e", "fail", "error")


@dataclass(frozen=True)
class AgainstCell:
    """One case × dtype × implementation."""

    framework: str
    implementation: str
    function: str
    case: str
    dtype: str
    status: str
    scaled_error: float
    disagreement: str | None = None
    explanation: str = ""


@dataclass
class AgainstReport:
    """The cells, the frameworks skipped (``name → why``), versions and disagreements."""

    cells: list[AgainstCell] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    disagreements: dict[str, Disagreement] = field(default_factory=dict)

    @property
    def failures(self) -> list[AgainstCell]:
        """Cells that failed or raised with no recorded disagreement."""
        return [c for c in self.cells if c.status in ("fail", "error")]

    @property
    def implementations(self) -> list[str]:
        return list(dict.fromkeys(c.implementation for c in self.cells))

    @property
    def frameworks(self) -> list[str]:
        return list(dict.fromkeys(c.framework for c in self.cells))

    @property
    def functions(self) -> list[str]:
        """The estimators and loss terms of the cells, in report order."""
        return list(dict.fromkeys(c.function for c in self.cells))

    def _summary(self) -> tuple[list[str], list[list[str]]]:
        """Rows ``estimator × framework`` of the counts ``pass/known/n-e/fail`` and the
        largest scaled error of the cases that ran (passing or known)."""
        header = ["estimator or loss term", *self.frameworks]
        rows = []
        for function in self.functions:
            row = [function]
            for name in self.frameworks:
                cells = [c for c in self.cells if c.function == function and c.framework == name]
                row.append(_summary_cell(cells))
            rows.append(row)
        return header, rows

    def __str__(self) -> str:
        header, rows = self._summary()
        lines = [f"frameworks: {', '.join(f'{k} ({v})' for k, v in self.versions.items())}"]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        if rows:
            lines.append(_text_table(header, rows))
        lines.append(
            "cells: pass / known (a recorded disagreement) / n/e (not expressible) / fail; "
            "max scaled error"
        )
        for key, disagreement in self.disagreements.items():
            upstream = f" [{disagreement.upstream}]" if disagreement.upstream else ""
            lines.append(f"- known {key}{upstream}: {disagreement.explanation}")
        for cell in self.failures:
            lines.append(
                f"- FAIL {cell.implementation} {cell.case} {cell.dtype}: {cell.explanation}"
            )
        counts = {s: sum(c.status == s for c in self.cells) for s in _STATUSES}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
        return "\n".join(lines)

    def to_markdown(self, plots: Mapping[str, str | Path] | None = None) -> str:
        """The report as Markdown: versions, summary matrix, plots, disagreements, per-case
        cells. ``plots`` maps a function to its image's path relative to the Markdown file
        (as :meth:`plot` writes them); each is linked under its own heading."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out = [
            "# Conformance against other frameworks",
            "",
            f"Generated {stamp} by `arrayrl conformance --against "
            f"{','.join([*self.versions, *self.skipped])}` on Python "
            f"{platform.python_version()}.",
            "",
            "Versions: " + ", ".join(f"`{v}`" for v in self.versions.values()) + ".",
        ]
        out += [f"Skipped {name}: {why}." for name, why in self.skipped.items()]
        header, rows = self._summary()
        out += [
            "",
            "## Summary",
            "",
            "Each cell: cases passing / known disagreements / not expressible in the "
            "framework's convention / failing (both dtypes), and the largest scaled error "
            "`max|x − ref| / max(1, max|ref|)` of the cases that ran.",
            "",
            _markdown_table(header, rows),
            "",
        ]
        if plots:
            out += [
                "## Scaled error per function",
                "",
                "Each point is one case × dtype (log scale; zero errors and cases that did "
                "not run sit on the floor, 1e-17); blue lines: the tolerance of each dtype "
                "(dashed float64, dotted float32).",
                "",
            ]
            for function, path in plots.items():
                out += [f"### {function}", "", f"![{function}]({quote(Path(path).as_posix())})", ""]
        out += [
            "## How each implementation is called",
            "",
        ]
        out += [f"- `{name}`: {note}" for name, note in self.notes.items()]
        out += ["", "## Known disagreements", ""]
        for key, d in self.disagreements.items():
            upstream = f" Upstream: {d.upstream}." if d.upstream else " No upstream issue found."
            repro = f" Reproducer: `{d.reproducer}`." if d.reproducer else ""
            out.append(f"- **{key}**: {d.explanation}{upstream}{repro}")
        if self.failures:
            out += ["", "## Failures", ""]
            out += [
                f"- `{c.implementation}` {c.case} {c.dtype}: {c.explanation}" for c in self.failures
            ]
        out += ["", "## Every case", ""]
        for name in self.implementations:
            cells = [c for c in self.cells if c.implementation == name]
            table = [
                [c.case, c.dtype, c.status, _error(c.scaled_error), c.disagreement or ""]
                for c in cells
            ]
            out += [
                f"<details><summary>{name}</summary>",
                "",
                _markdown_table(["case", "dtype", "status", "scaled error", "disagreement"], table),
                "",
                "</details>",
                "",
            ]
        return "\n".join(out)

    def plot(self, directory: str | Path) -> list[Path]:
        """Write one small PNG per function (estimator or loss term) into ``directory``
        (created if needed) and return their paths, in :attr:`functions` order.

        Each figure: x = the implementations of that function, y = the scaled error of
        every case × dtype (log scale, floored at :data:`PLOT_FLOOR` so that exact and
        not-run cells show), one colour and marker per status, float64 points left of
        float32 ones, and a dashed line at each dtype's tolerance
        (:data:`.runner.TOLERANCE`). ``[]`` when matplotlib is not installed (the caller
        says why) or there are no cells.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return []
        if not self.cells:
            return []
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for function in self.functions:
            cells = [c for c in self.cells if c.function == function]
            path = directory / f"{_file_stem(function, {p.stem for p in written})}.png"
            figure = Figure(figsize=(4, 2.5), dpi=100)
            _draw(figure, function, cells)
            figure.savefig(path, format="png", dpi=100, metadata={"Software": None})
            written.append(path)
        return written

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        cells = [
            {
                k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(c).items()
            }
            for c in self.cells
        ]
        disagreements = {
            key: {"explanation": d.explanation, "upstream": d.upstream, "reproducer": d.reproducer}
            for key, d in self.disagreements.items()
        }
        out = {
            "versions": self.versions,
            "skipped": self.skipped,
            "notes": self.notes,
            "disagreements": disagreements,
            "cells": cells,
        }
        json.dumps(out)
        return out


def run_against(
    names: Iterable[str],
    *,
    functions: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
) -> AgainstReport:
    """Run every implementation of the frameworks ``names`` (``"torchrl"``, ``"rlax"``,
    ``"sb3"``, ``"cleanrl"``) through :func:`~.check.check`; only the estimators in
    ``functions`` when given. ``ValueError`` for an unknown framework name."""
    report = AgainstReport()
    for name in names:
        fw = framework(name)
        why = fw.missing()
        if why is not None:
            report.skipped[name] = why
            continue
        report.versions[name] = fw.version()
        for implementation in fw.implementations():
            if functions is None or implementation.spec.function in functions:
                _run_implementation(report, fw.name, implementation, dtypes)
    return report


def _run_implementation(
    report: AgainstReport,
    framework_name: str,
    implementation: Implementation,
    dtypes: Sequence[str],
) -> None:
    """Check one implementation and add its cells (and notes, disagreements) to ``report``."""
    result = check(
        implementation.fn,
        implementation.spec,
        backend=implementation.backend,
        dtypes=dtypes,
        gradients=False,
    )
    if result.skipped:
        report.skipped[implementation.name] = result.skipped
        return
    report.notes[implementation.name] = implementation.note
    for r in result.results:
        status, known = _status(r, implementation.disagreements)
        if known is not None:
            report.disagreements.setdefault(known.key, known)
        report.cells.append(
            AgainstCell(
                framework=framework_name,
                implementation=implementation.name,
                function=implementation.spec.function,
                case=r.case,
                dtype=r.dtype,
                status=status,
                scaled_error=r.scaled_error,
                disagreement=known.key if known else None,
                explanation=r.explanation,
            )
        )


def _status(result: Any, disagreements: Sequence[Disagreement]) -> tuple[str, Disagreement | None]:
    """The matrix status of one :class:`~.check.CaseResult` and the disagreement covering
    it (only for a failure)."""
    if result.status == "pass":
        return "pass", None
    if result.status == "not expressible":
        return "n/e", None
    for disagreement in disagreements:
        if disagreement.applies(result.case, result.dtype):
            return "known", disagreement
    return result.status, None


#: the smallest scaled error a plot shows (exact cells, and cells that did not run)
PLOT_FLOOR = 1e-17
#: what a plot shows for an infinite scaled error
_PLOT_CEILING = 1e3
#: colour and marker of each status in the plots
_STYLE = {
    "pass": ("tab:green", "o"),
    "known": ("tab:orange", "s"),
    "n/e": ("tab:gray", "x"),
    "fail": ("tab:red", "v"),
    "error": ("black", "D"),
}
#: horizontal offset of each dtype's points, and its tolerance line style
_DTYPE_STYLE = {"float64": (-0.12, "--"), "float32": (0.12, ":")}


def _plotted(error: float) -> float:
    """The scaled error as plotted: NaN (did not run) at the floor, inf at the ceiling."""
    if math.isnan(error):
        return PLOT_FLOOR
    return min(max(error, PLOT_FLOOR), _PLOT_CEILING)


def _draw(figure: Any, function: str, cells: list[AgainstCell]) -> None:
    """One function's scaled errors on ``figure`` (see :meth:`AgainstReport.plot`)."""
    axes = figure.add_axes((0.14, 0.3, 0.6, 0.58))
    names = list(dict.fromkeys(c.implementation for c in cells))
    for status, (colour, marker) in _STYLE.items():
        chosen = [c for c in cells if c.status == status]
        if chosen:
            x = [
                names.index(c.implementation) + _DTYPE_STYLE.get(c.dtype, (0, ""))[0]
                for c in chosen
            ]
            y = [_plotted(c.scaled_error) for c in chosen]
            axes.scatter(x, y, s=9, c=colour, marker=marker, label=status, linewidths=0.8)
    for dtype in dict.fromkeys(c.dtype for c in cells):
        if dtype in TOLERANCE:
            style = _DTYPE_STYLE.get(dtype, (0, "-."))[1]
            axes.axhline(TOLERANCE[dtype], color="tab:blue", linestyle=style, linewidth=0.8,
                         label=f"tol {dtype}")  # fmt: skip
    axes.set_yscale("log")
    axes.set_ylim(PLOT_FLOOR / 3, max(1.0, *(_plotted(c.scaled_error) for c in cells)) * 3)
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_xticks(range(len(names)), [_short(n, function) for n in names])
    axes.tick_params(labelsize=6)
    axes.tick_params(axis="x", labelrotation=15)
    axes.set_ylabel("scaled error", fontsize=7)
    axes.set_title(function, fontsize=8)
    figure.legend(loc="center right", fontsize=6, frameon=False, handlelength=1.5)


def _short(implementation: str, function: str) -> str:
    """An implementation's tick label: its framework alone when it is that framework's
    function of the same name (``torchrl.generalized_advantage_estimate``), else its name
    cut to 24 characters."""
    framework_name, _, rest = implementation.partition(".")
    if rest == function:
        return framework_name
    return implementation if len(implementation) <= 24 else implementation[:23] + "…"


def _file_stem(function: str, taken: set[str]) -> str:
    """A file name for ``function``'s plot: its name with anything but letters, digits,
    ``_``, ``-`` and ``.`` replaced by ``_``, numbered if another function took it."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", function).strip("._") or "function"
    candidate, n = stem, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}_{n}"
    return candidate


def _summary_cell(cells: list[AgainstCell]) -> str:
    if not cells:
        return ""
    counts = [sum(c.status == s for c in cells) for s in ("pass", "known", "n/e")]
    failed = sum(c.status in ("fail", "error") for c in cells)
    ran = [
        c.scaled_error
        for c in cells
        if c.status in ("pass", "known") and not math.isnan(c.scaled_error)
    ]
    worst = _error(max(ran)) if ran else "-"
    return f"{counts[0]}/{counts[1]}/{counts[2]}/{failed} {worst}"


def _error(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1e}"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
