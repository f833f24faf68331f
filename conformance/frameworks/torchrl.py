"""TorchRL 0.14.1's functional estimators (``torchrl.objectives.value.functional``).

Every estimator of :data:`..cases.SIGNATURES` has a TorchRL function of the same name and
argument order, so each is called as it is, in :func:`~..check.check`'s ``"torchrl"``
convention, on CPU torch tensors. The differences recorded for the main suite
(:data:`..oracle.DEVIATIONS`) are its disagreements.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from ..cases import DTYPES, SIGNATURES, Case, all_cases
from ..check import EstimatorSpec
from ..oracle import DEVIATIONS, Deviation
from . import Disagreement, Framework, Implementation

__all__ = ["FRAMEWORK"]


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


def _disagreement(deviation: Deviation) -> Disagreement:
    """A suite :class:`..oracle.Deviation` as a :class:`Disagreement` (over both dtypes)."""

    def covers(case_name: str) -> bool:
        case = _cases_by_name().get(case_name.split("+")[0])
        return case is not None and any(deviation.applies(case, d) for d in DTYPES)

    upstream = deviation.torchrl_issue and f"pytorch/rl#{deviation.torchrl_issue}"
    return Disagreement(deviation.key, covers, deviation.reason, upstream)


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
