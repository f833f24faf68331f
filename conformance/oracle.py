"""TorchRL as the oracle, and the places where arrayrl deliberately differs from it.

This is the only module of arrayrl that imports TorchRL.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import Case


@dataclass(frozen=True)
class Deviation:
    """A recorded difference from TorchRL: where it applies, why, and its tolerance.

    ``tolerance=None`` means the numbers differ by design and are not compared.
    """

    key: str
    applies: Callable[[Case, str], bool]
    reason: str
    tolerance: float | None
    torchrl_issue: str | None = None


# the TorchRL functions that build their discounts as ``float * int_mask`` (measured)
_DEFAULT_DTYPE_FUNCTIONS = (
    "generalized_advantage_estimate",
    "vtrace_advantage_estimate",
    "td0_return_estimate",
    "td0_advantage_estimate",
)

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        key="torchrl-float32-masks",
        applies=lambda case, dtype: dtype == "float64"
        and case.function in _DEFAULT_DTYPE_FUNCTIONS
        and not case.per_step_gamma,
        reason=(
            "TorchRL multiplies a Python-float gamma/lambda by an integer mask, which torch "
            "evaluates in its default dtype (float32); on float64 inputs its results carry "
            "float32 rounding of the discounts. arrayrl computes in the inputs' dtype."
        ),
        tolerance=1e-6,
        torchrl_issue=None,
    ),
    Deviation(
        key="torchrl-td1-non-rolling-no-bootstrap",
        applies=lambda case, dtype: case.function.startswith("td1_")
        and case.rolling_gamma is False,
        reason=(
            "TorchRL's td1_return_estimate with rolling_gamma=False starts its loop from 0 "
            "instead of the last next value, so a trajectory still running at the end of "
            "the batch is not bootstrapped (its rolling form, and td_lambda with lmbda=1, "
            "do bootstrap). arrayrl bootstraps in both forms."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
)


def deviation_for(case: Case, dtype: str) -> Deviation | None:
    """The recorded deviation that applies to ``case`` at ``dtype``, if any."""
    for deviation in DEVIATIONS:
        if deviation.applies(case, dtype):
            return deviation
    return None


def torchrl_available() -> bool:
    """Whether TorchRL can be imported here."""
    return importlib.util.find_spec("torchrl") is not None


def torchrl_outputs(case: Case, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[np.ndarray]:
    """Run TorchRL's function of the same name on CPU torch tensors of the inputs."""
    import torch
    from torchrl.objectives.value import functional as torchrl_functional

    function = getattr(torchrl_functional, case.function)

    def to_torch(x: Any) -> Any:
        return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x

    with torch.no_grad():
        out = function(*[to_torch(a) for a in args], **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in outs]
