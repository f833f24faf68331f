"""TorchRL 0.14.1's functional estimators (``torchrl.objectives.value.functional``).

Every estimator of :data:`..cases.SIGNATURES` has a TorchRL function of the same name and
argument order, so each is called as it is, in :func:`~..check.check`'s ``"torchrl"``
convention, on CPU torch tensors. The differences recorded for the main suite
(:data:`..oracle.DEVIATIONS`) are its disagreements, each with a one-step reproducer
(:func:`reproduce_float32_masks`, :func:`reproduce_td1_non_rolling_no_bootstrap`).
"""

from __future__ import annotations

import importlib.util
from functools import cache

import numpy as np

from ..cases import DTYPES, SIGNATURES, Case, all_cases
from ..check import EstimatorSpec
from ..oracle import DEVIATIONS, Deviation
from . import Disagreement, Framework, Implementation

__all__ = [
    "DISAGREEMENTS",
    "FRAMEWORK",
    "reproduce_float32_masks",
    "reproduce_td1_non_rolling_no_bootstrap",
]


def _missing() -> str | None:
    if importlib.util.find_spec("torchrl") is None:
        return "torchrl is not installed (pip install torchrl==0.14.1)"
    return None


def _version() -> str:
    import torchrl

    return f"torchrl {torchrl.__version__}"


@cache
def _cases_by_name() -> dict[str, Case]:
    return {case.name: case for case in all_cases()}


########################################################################
# the recorded deviations' reproducers (one step, float64)


def _one_step(value: float) -> np.ndarray:
    """``value`` as a float64 ``[B=1, T=1, F=1]`` array."""
    return np.full((1, 1, 1), value, np.float64)


def reproduce_float32_masks() -> tuple[float, float]:
    """GAE, one float64 step: ``r = 0``, ``V(s) = 0``, ``V(s') = 1``, ``γ = 0.9``, ``λ = 1``.

    Returns ``(torchrl, reference)`` advantages: ``(float32(0.9), 0.9)``, i.e.
    ``(0.8999999761581421, 0.9)``. TorchRL builds ``γ · (1 - terminated)`` from a Python
    float and an integer mask, which torch computes in its default dtype (float32), so
    the float64 advantage carries float32's rounding of γ (an error of 2.4e-8, far above
    the float64 tolerance of 1e-10).
    """
    import torch
    from torchrl.objectives.value.functional import generalized_advantage_estimate as torchrl_gae

    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    zero, one = _one_step(0.0), _one_step(1.0)
    done = np.zeros((1, 1, 1), bool)
    tensors = [torch.from_numpy(x) for x in (zero, one, zero, done, done)]
    torchrl, _ = torchrl_gae(0.9, 1.0, *tensors)
    reference, _ = generalized_advantage_estimate(0.9, 1.0, zero, one, zero, done, done)
    return float(torchrl[0, 0, 0]), float(np.asarray(reference)[0, 0, 0])


def reproduce_td1_non_rolling_no_bootstrap() -> tuple[float, float]:
    """TD(1) return, one float64 step not done: ``r = 0``, ``V(s') = 1``, per-step
    ``γ = 0.9``, ``rolling_gamma=False``.

    Returns ``(torchrl, reference)`` returns: ``(0.0, 0.9)``. TorchRL's non-rolling loop
    starts each return from 0 instead of the last ``V(s')``, so the step still running at
    the end of the batch loses its bootstrap ``γ · V(s')``; its ``rolling_gamma=True``
    form gives 0.9.
    """
    import torch
    from torchrl.objectives.value.functional import td1_return_estimate as torchrl_td1

    from arrayrl.objectives.value.functional import td1_return_estimate

    gamma, one, zero = _one_step(0.9), _one_step(1.0), _one_step(0.0)
    done = np.zeros((1, 1, 1), bool)
    tensors = [torch.from_numpy(x) for x in (gamma, one, zero, done, done)]
    torchrl = torchrl_td1(*tensors, rolling_gamma=False)
    reference = td1_return_estimate(gamma, one, zero, done, done, rolling_gamma=False)
    return float(torchrl[0, 0, 0]), float(np.asarray(reference)[0, 0, 0])


#: the dotted name of each deviation's reproducer
REPRODUCERS: dict[str, str] = {
    "torchrl-float32-masks": "arrayrl.conformance.frameworks.torchrl.reproduce_float32_masks",
    "torchrl-td1-non-rolling-no-bootstrap": (
        "arrayrl.conformance.frameworks.torchrl.reproduce_td1_non_rolling_no_bootstrap"
    ),
}


def _disagreement(deviation: Deviation) -> Disagreement:
    """A suite :class:`..oracle.Deviation` as a :class:`Disagreement` (over both dtypes)."""

    def covers(case_name: str) -> bool:
        case = _cases_by_name().get(case_name.split("+")[0])
        return case is not None and any(deviation.applies(case, d) for d in DTYPES)

    upstream = deviation.torchrl_issue and f"pytorch/rl#{deviation.torchrl_issue}"
    return Disagreement(
        deviation.key, covers, deviation.reason, upstream, REPRODUCERS.get(deviation.key)
    )


DISAGREEMENTS: tuple[Disagreement, ...] = tuple(_disagreement(d) for d in DEVIATIONS)


def _implementations() -> list[Implementation]:
    from torchrl.objectives.value import functional

    return [
        Implementation(
            name=f"torchrl.{name}",
            spec=EstimatorSpec(name),
            backend="torch",
            fn=getattr(functional, name),
            note="TorchRL's own argument order and [*B, T, F] layout: called as it is",
            disagreements=DISAGREEMENTS,
        )
        for name in SIGNATURES
        if hasattr(functional, name)
    ]


FRAMEWORK = Framework(
    name="torchrl",
    pip="torchrl==0.14.1",
    missing=_missing,
    version=_version,
    implementations=_implementations,
    disagreements=DISAGREEMENTS,
)
