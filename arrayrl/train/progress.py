"""The training progress bar: frames, frames/s and the recent mean return, drawn by tqdm.

On a terminal tqdm redraws one line in place about ten times a second. When the stream
is not a terminal (a log file, a CI job, a pipe) the bar writes plain lines instead, one
at the start, at most one every ``plain_interval`` seconds after that, and always a final
one with the result, so logs stay short and readable.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, TextIO

__all__ = ["ProgressBar"]

_BAR_FORMAT = (
    "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} frames "
    "[{elapsed}<{remaining}, {rate_fmt}{postfix}]"
)


class _PlainLines:
    """A text stream for tqdm that turns its in-place redraws into separate lines.

    tqdm redraws with ``"\\r" + text + padding``; this writes each distinct text once,
    followed by a newline, and drops the carriage returns and the padding.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        """Write the status line in ``text`` on a line of its own (once)."""
        line = text.replace("\r", "").rstrip()
        if line and line != self._last:
            self.stream.write(line + "\n")
            self._last = line

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.stream.flush()


def _terminal_columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (0 when unknown, as on a
    pseudo-terminal whose size was never set)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


class ProgressBar:
    """Frames done out of a total, frames per second and the recent mean return.

    Parameters
    ----------
    total : int
        The number of frames the run will collect.
    stream : text stream, optional
        Where to write (``sys.stderr`` by default).
    enabled : bool, default True
        ``False`` writes nothing at all.
    plain_interval : float, default 30.0
        Seconds between two plain lines when ``stream`` is not a terminal.

    Examples
    --------
    >>> import io
    >>> bar = ProgressBar(100, stream=io.StringIO())
    >>> bar.update(50, mean_return=12.5)
    >>> bar.close()
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        plain_interval: float = 30.0,
    ) -> None:
        from tqdm import tqdm

        stream = sys.stderr if stream is None else stream
        self.is_tty = bool(getattr(stream, "isatty", lambda: False)())
        interval = 0.1 if self.is_tty else plain_interval
        sized = self.is_tty and _terminal_columns(stream) > 0  # else tqdm draws nothing
        self._bar = tqdm(
            total=max(int(total), 1),
            file=stream if self.is_tty else _PlainLines(stream),
            disable=not enabled,
            unit=" frames",
            unit_scale=True,
            bar_format=_BAR_FORMAT,
            mininterval=interval,
            maxinterval=max(interval, 10.0),
            dynamic_ncols=sized,
            ncols=None if sized else 100,
            ascii=None if self.is_tty else True,
            postfix="return -",
        )

    def update(self, frames: int, mean_return: float | None = None) -> None:
        """Move the bar to ``frames`` done and show ``mean_return`` (rate-limited)."""
        ret = "-" if mean_return is None or math.isnan(mean_return) else f"{mean_return:.1f}"
        self._bar.set_postfix_str(f"return {ret}", refresh=False)
        self._bar.update(int(frames) - self._bar.n)

    def close(self) -> None:
        """Draw the final line and end it, so later output starts on a new line."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
