"""The learning curve of a run: one row per iteration, saved as CSV and plotted as PNG.

The plot is drawn with Matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), so writing it never touches ``pyplot`` or the process-wide
Matplotlib backend of an interactive session.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LOSS_COLUMNS", "LearningCurve", "read_curve"]

#: The loss terms plotted in the lower panel, when present.
LOSS_COLUMNS = ("loss_objective", "loss_critic", "loss_entropy")


class LearningCurve:
    """Rows of scalars (``frames``, ``wall_s``, ``mean_return``, loss terms, ...).

    Every row has the columns of the first row; a later row may not add columns, and a
    missing value is written as ``nan``.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def append(self, row: Mapping[str, float]) -> None:
        """Add one row (the first row fixes the columns)."""
        if self.rows:
            extra = set(row) - set(self.rows[0])
            if extra:
                raise ValueError(f"columns {sorted(extra)} are not in the first row")
        self.rows.append({k: float(v) for k, v in row.items()})

    @property
    def columns(self) -> list[str]:
        """The column names, in the order of the first row."""
        return list(self.rows[0]) if self.rows else []

    def column(self, name: str) -> list[float]:
        """The values of column ``name`` (``nan`` where a row lacks it)."""
        return [row.get(name, math.nan) for row in self.rows]

    def write_csv(self, path: str | Path) -> Path:
        """Write the rows to ``path`` (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="nan")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: f"{v:.6g}" for k, v in row.items()})
        return path

    def plot_png(self, path: str | Path, title: str = "") -> Path:
        """Plot the mean return and the loss terms against frames into ``path``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure = Figure(figsize=(8, 6), layout="constrained")
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True)
        frames = self.column("frames")
        top.plot(frames, self.column("mean_return"), color="tab:blue")
        top.set_ylabel("mean episode return")
        top.grid(alpha=0.3)
        top.set_title(title)
        for name in (c for c in LOSS_COLUMNS if c in self.columns):
            bottom.plot(frames, self.column(name), label=name)
        bottom.set_yscale("symlog", linthresh=1e-3)  # terms of different signs and scales
        bottom.set_xlabel("frames")
        bottom.set_ylabel("loss (mean over the iteration)")
        bottom.grid(alpha=0.3)
        if bottom.lines:
            bottom.legend(loc="best")
        figure.savefig(path, dpi=100)
        return path


def read_curve(path: str | Path) -> dict[str, list[float]]:
    """Read a CSV written by :meth:`LearningCurve.write_csv` as ``{column: values}``."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: Sequence[str] = list(rows[0]) if rows else []
    return {name: [float(row[name]) for row in rows] for name in columns}
