"""Shared pieces of the losses: the ``ValueEstimators`` enum, ``distance_loss`` and the
target-network updaters (``SoftUpdate``, ``HardUpdate``), with TorchRL 0.14.1's names."""

from __future__ import annotations

from enum import Enum
from typing import Any

from arrayrl.backends import backend_of

__all__ = ["ValueEstimators", "default_value_kwargs", "distance_loss"]


class ValueEstimators(Enum):
    """The value estimators a loss can build with ``make_value_estimator``.

    A member or its lower-case name (``"gae"``, ``"td0"``, ``"td1"``, ``"tdlambda"``,
    ``"vtrace"``) is accepted wherever one is expected.
    """

    TD0 = "Bootstrapped TD (1-step return)"
    TD1 = "TD(1) (infinity-step return)"
    TDLambda = "TD(lambda)"
    GAE = "Generalized advantage estimate"
    MAGAE = "Multi-agent generalized advantage estimate"
    VTrace = "V-trace"

    @classmethod
    def parse(cls, value: ValueEstimators | str) -> ValueEstimators:
        """``value`` as a member; a string is matched case-insensitively to a name."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if member.name.lower() == value.lower().replace("_", ""):
                    return member
        names = [m.name.lower() for m in cls]
        raise ValueError(f"unknown value estimator {value!r}; expected one of {names}")


_DEFAULT_VALUE_KWARGS: dict[ValueEstimators, dict[str, Any]] = {
    ValueEstimators.TD0: {"gamma": 0.99, "differentiable": True},
    ValueEstimators.TD1: {"gamma": 0.99, "differentiable": True},
    ValueEstimators.TDLambda: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.GAE: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.MAGAE: {"gamma": 0.99, "lmbda": 0.95, "differentiable": True},
    ValueEstimators.VTrace: {"gamma": 0.99, "differentiable": True},
}


def default_value_kwargs(value_type: ValueEstimators | str) -> dict[str, Any]:
    """TorchRL's default hyper-parameters for ``value_type`` (a fresh dict)."""
    return dict(_DEFAULT_VALUE_KWARGS[ValueEstimators.parse(value_type)])


_DISTANCES = ("l1", "l2", "smooth_l1")


def distance_loss(v1: Any, v2: Any, loss_function: str, strict_shape: bool = True) -> Any:
    """Element-wise distance between ``v1`` and ``v2``, without reduction.

    - ``"l2"``: ``(v1 - v2)²``;
    - ``"l1"``: ``|v1 - v2|``;
    - ``"smooth_l1"`` (Huber with δ = 1): ``0.5 d²`` where ``|d| < 1``, ``|d| - 0.5``
      elsewhere.

    Shapes must match unless ``strict_shape=False`` (then they broadcast).
    """
    if loss_function not in _DISTANCES:
        raise ValueError(f"unknown loss_function {loss_function!r}; expected one of {_DISTANCES}")
    if strict_shape and tuple(v1.shape) != tuple(v2.shape):
        raise ValueError(
            f"distance_loss needs equal shapes, got {tuple(v1.shape)} and {tuple(v2.shape)}"
        )
    xp = backend_of(v1, v2).xp
    diff = v1 - v2
    if loss_function == "l2":
        return diff * diff
    size = xp.abs(diff)
    if loss_function == "l1":
        return size
    return xp.where(size < 1.0, 0.5 * diff * diff, size - 0.5)
