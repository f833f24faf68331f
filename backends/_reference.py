"""The reference scan: Array API only, no in-place writes (it runs on array-api-strict).

This is the float64 oracle every other kernel is compared with.
"""

from __future__ import annotations

from typing import Any


def reference_linear_scan(a: Any, b: Any, init: Any, *, xp: Any) -> Any:
    r"""Reverse linear recurrence over the time axis of ``[N, T, F]`` arrays.

    .. math:: y_t = a_t + b_t \, y_{t+1}, \qquad y_T = \text{init}

    Written as a loop over time that stacks the steps, so that it is differentiable on
    every autograd backend and needs nothing beyond the Array API standard.
    """
    steps = a.shape[1]
    if steps == 0:
        return a
    carry = init
    outputs = []
    for t in range(steps - 1, -1, -1):
        carry = a[:, t, :] + b[:, t, :] * carry
        outputs.append(carry)
    return xp.stack(outputs[::-1], axis=1)
