"""How many threads a large CPU scan is split over (no Numba import here).

``NUMBA_NUM_THREADS`` sets it; unset (or empty), every CPU this process may run on is
used. The variable is read at every call, so a changed setting takes effect.
:func:`scan_threads` runs before Numba is first imported, so that a bad value gets an
error naming it rather than Numba's own import-time error.
"""

from __future__ import annotations

import functools
import os

#: The environment variable that sets the thread count (shared with Numba).
THREADS_VARIABLE = "NUMBA_NUM_THREADS"


def scan_threads() -> int:
    """Threads a large scan is split over: ``NUMBA_NUM_THREADS``, else the usable CPUs.

    Raises
    ------
    ValueError
        If ``NUMBA_NUM_THREADS`` is set to something other than a positive integer.
    """
    configured = os.environ.get(THREADS_VARIABLE, "")
    if configured.strip():
        return _parse_threads(configured)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=8)
def _parse_threads(text: str) -> int:
    """``text`` as a positive int; ``ValueError`` naming the variable otherwise."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {text!r}")
    return count
