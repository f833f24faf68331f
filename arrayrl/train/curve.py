"""The learning curve of a run: one row per iteration, saved as CSV and plotted as PNG.

The plot is drawn with Matplotlib's Agg canvas directly (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), so writing it never touches ``pyplot`` or the process-wide
Matplotlib backend of an interactive session.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DQN_PANELS",
    "OFFLINE_PANELS",
    "PANELS",
    "SAC_PANELS",
    "TD3_PANELS",
    "LearningCurve",
    "Panel",
    "read_curve",
]


@dataclass(frozen=True)
class Panel:
    """One subplot of the learning-curve figure: a title, the columns it draws and the
    range of its y axis (``None`` ends are fitted to the data)."""

    title: str
    columns: tuple[str, ...]
    low: float | None = None
    high: float | None = None
    floor: float | None = None  #: the lowest y shown, however low the data goes


#: The panels of :meth:`LearningCurve.plot_png`, row by row (two per row), each on an
#: axis of its own so that no curve flattens another. A panel whose columns the curve
#: lacks is left out. Explained variance starts far below 0 (an untrained critic), so
#: its axis stops at -1 to keep the useful range, (-1, 1], readable.
PANELS = (
    Panel("mean episode return (recent episodes)", ("mean_return",)),
    Panel(
        "explained variance (critic; axis from -1)", ("explained_variance",), high=1.05, floor=-1.0
    ),
    Panel("policy loss", ("loss_objective",)),
    Panel("critic loss", ("loss_critic",), low=0.0),
    Panel("approximate KL (old || new)", ("kl_approx",)),
    Panel("clip fraction", ("clip_fraction",), low=0.0),
    Panel("policy entropy", ("entropy",)),
    Panel("frames / s", ("fps",), low=0.0),
)

#: The panels of an off-policy run (``arrayrl train sac``).
SAC_PANELS = (
    Panel("mean episode return (recent episodes)", ("mean_return",)),
    Panel("Q value (batch mean of min_i Q_i(s, a~))", ("q_value",)),
    Panel("actor loss", ("loss_actor",)),
    Panel("critic loss (sum over the Q ensemble)", ("loss_qvalue",), low=0.0),
    Panel("temperature alpha", ("alpha",), low=0.0),
    Panel("policy entropy (-log pi, batch mean)", ("entropy",)),
    Panel("alpha loss", ("loss_alpha",)),
    Panel("frames / s", ("fps",), low=0.0),
)

#: The panels of ``arrayrl train td3``.
TD3_PANELS = (
    Panel("mean episode return (recent episodes)", ("mean_return",)),
    Panel("Q value (batch mean of Q_i(s, a), both critics)", ("q_value",)),
    Panel("actor loss (-Q_1(s, pi(s)))", ("loss_actor",)),
    Panel("critic loss (sum over the Q ensemble)", ("loss_qvalue",), low=0.0),
    Panel("TD target (batch mean)", ("target_value",)),
    Panel("frames / s", ("fps",), low=0.0),
)

#: The panels of ``arrayrl train dqn``.
DQN_PANELS = (
    Panel("mean episode return (recent episodes)", ("mean_return",)),
    Panel("greedy value max_a Q(s, a) (last acting state)", ("q_value",)),
    Panel("TD loss", ("loss",), low=0.0),
    Panel("exploration epsilon", ("epsilon",), low=0.0, high=1.0),
    Panel("frames / s", ("fps",), low=0.0),
)


#: The panels of ``arrayrl train iql`` and ``arrayrl train cql`` (``frames``: gradient
#: steps; the return is the deterministic policy's, evaluated after each iteration).
OFFLINE_PANELS = (
    Panel("evaluation return (deterministic policy)", ("mean_return",)),
    Panel("actor loss", ("loss_actor",)),
    Panel("critic loss (sum over the Q ensemble)", ("loss_qvalue",), low=0.0),
    Panel("IQL value loss (expectile)", ("loss_value",), low=0.0),
    Panel("CQL conservative penalty", ("loss_cql",)),
    Panel("gradient steps / s", ("fps",), low=0.0),
)


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

    def plot_png(self, path: str | Path, title: str = "", panels: Sequence[Panel] = PANELS) -> Path:
        """Plot the ``panels`` (default :data:`PANELS`, PPO's) the curve has columns for
        against frames into ``path`` (two panels per row, each with its own y axis;
        ``title`` above them all)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        panels = [p for p in panels if all(c in self.columns for c in p.columns)]
        rows = max(1, math.ceil(len(panels) / 2))
        figure = Figure(figsize=(11, 2.4 * rows + 0.6), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(rows, 2, sharex=True, squeeze=False).ravel()
        for axis, panel in zip(axes, panels):
            self._draw_panel(axis, panel)
        for axis in axes[len(panels) :]:
            axis.set_visible(False)
        for axis in axes[max(0, len(panels) - 2) : len(panels)]:
            axis.set_xlabel("frames")
            axis.xaxis.set_tick_params(labelbottom=True)
        figure.suptitle(title)
        figure.savefig(path, dpi=100)
        return path

    def _draw_panel(self, axis: Any, panel: Panel) -> None:
        """Draw ``panel``'s columns on ``axis`` and set its y range."""
        frames = self.column("frames")
        for name in panel.columns:
            axis.plot(frames, self.column(name), color="tab:blue", linewidth=1.2)
        axis.set_title(panel.title, fontsize=10)
        axis.grid(alpha=0.3)
        values = [v for name in panel.columns for v in self.column(name) if math.isfinite(v)]
        if not values:
            return
        low, high = _y_range(values, panel)
        axis.set_ylim(low, high)


def _y_range(values: Sequence[float], panel: Panel) -> tuple[float, float]:
    """The y range of ``panel``: its fixed ends, else the data's with a 5 % margin."""
    lowest, highest = min(values), max(values)
    if panel.floor is not None:
        lowest = max(lowest, panel.floor)
    margin = 0.05 * (highest - lowest) or 0.05 * abs(highest) or 0.05
    low = lowest - margin if panel.low is None else min(panel.low, lowest)
    high = highest + margin if panel.high is None else max(panel.high, highest)
    return low, high


def read_curve(path: str | Path) -> dict[str, list[float]]:
    """Read a CSV written by :meth:`LearningCurve.write_csv` as ``{column: values}``."""
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: Sequence[str] = list(rows[0]) if rows else []
    return {name: [float(row[name]) for row in rows] for name in columns}
