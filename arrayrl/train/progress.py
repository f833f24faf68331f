"""A dependency-free text progress bar for training loops.

On a terminal the bar redraws one line in place (``\\r``); when the stream is not a
terminal (a log file, a CI job, a pipe) it writes plain lines, at most one every
``line_interval`` seconds, so logs stay short and readable.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["ProgressBar", "format_duration"]


def format_duration(seconds: float) -> str:
    """``seconds`` as ``"42s"``, ``"3m07s"`` or ``"1h02m"``; ``"?"`` if unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressBar:
    """Frames done out of a total, frames per second and the recent mean return.

    Parameters
    ----------
    total : int
        The number of frames the run will collect.
    stream : text stream, optional
        Where to write (``sys.stderr`` by default).
    width : int, default 30
        Characters of the bar itself (terminal mode).
    line_interval : float, default 5.0
        Seconds between two plain lines when ``stream`` is not a terminal.
    enabled : bool, default True
        ``False`` writes nothing at all.

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
        width: int = 30,
        line_interval: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.total = max(int(total), 1)
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.line_interval = line_interval
        self.enabled = enabled
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._last_draw = -math.inf
        self._last_text = ""
        self._line_length = 0

    def text(self, frames: int, mean_return: float | None = None) -> str:
        """The status line for ``frames`` done (without the bar in plain mode)."""
        elapsed = time.perf_counter() - self._start
        fps = frames / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - frames) / fps if fps > 0 else math.inf
        ret = "  -" if mean_return is None or math.isnan(mean_return) else f"{mean_return:.1f}"
        status = (
            f"{frames:,}/{self.total:,} frames  {fps:,.0f} fps  return {ret}  "
            f"{format_duration(elapsed)} elapsed, eta {format_duration(remaining)}"
        )
        if not self.is_tty:
            return f"[{100 * frames / self.total:5.1f}%] {status}"
        filled = min(self.width, int(self.width * frames / self.total))
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {status}"

    def update(self, frames: int, mean_return: float | None = None) -> None:
        """Redraw for ``frames`` done (rate-limited; always drawn at the total)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        interval = 0.1 if self.is_tty else self.line_interval
        if now - self._last_draw < interval and frames < self.total:
            return
        self._last_draw = now
        self._draw(self.text(frames, mean_return))

    def _draw(self, text: str) -> None:
        if self.is_tty:
            padding = " " * max(0, self._line_length - len(text))
            self.stream.write("\r" + text + padding)
            self._line_length = len(text)
        elif text != self._last_text:
            self.stream.write(text + "\n")
        self._last_text = text
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (terminal mode) so later output starts on a new line."""
        if self.enabled and self.is_tty and self._line_length:
            self.stream.write("\n")
            self.stream.flush()
            self._line_length = 0
