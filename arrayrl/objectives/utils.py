"""Shared pieces of the losses: the ``ValueEstimators`` enum, ``distance_loss`` and the
target-network updaters (``SoftUpdate``, ``HardUpdate``), with TorchRL 0.14.1's names."""

from __future__ import annotations

from enum import Enum
from typing import Any

from arrayrl._validation import count, hyperparameter
from arrayrl.backends import backend_of

__all__ = [
    "HardUpdate",
    "SoftUpdate",
    "TargetNetUpdater",
    "ValueEstimators",
    "default_value_kwargs",
    "distance_loss",
]


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
        """``value`` as a member; a string is matched case-insensitively to a name, and
        a member of TorchRL's ``ValueEstimators`` to the member of the same name."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Enum) and type(value).__name__ == "ValueEstimators":
            value = value.name  # TorchRL's own enum: same member names
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
    backend = backend_of(v1, v2)
    if loss_function == "smooth_l1":
        return backend.smooth_l1(v1, v2)
    diff = v1 - v2
    return diff * diff if loss_function == "l2" else backend.xp.abs(diff)


class TargetNetUpdater:
    """Base class of the target-network updaters.

    Finds every network of ``loss_module`` that owns target parameters (a loss built with
    ``delay_*=True``), copies the trainable parameters into them, and updates them on
    each :meth:`step`. Raises ``RuntimeError`` if the loss has no separate targets.
    """

    def __init__(self, loss_module: Any) -> None:
        owned = [name for name, owns in loss_module._owns_target.items() if owns]
        if not owned:
            raise RuntimeError(
                f"{type(loss_module).__name__} has no separate target parameters; build it "
                "with delay_*=True, or do not use a target updater"
            )
        self.loss_module = loss_module
        self._names = owned
        self.initialized = False
        self.init_()

    def _pairs(self) -> list[tuple[Any, Any, Any]]:
        """``(backend, source leaf, target leaf)`` for every updated array."""
        from arrayrl.modules import flatten_params

        loss = self.loss_module
        pairs = []
        for name in self._names:
            sources = flatten_params(loss._params[name])
            targets = flatten_params(loss._target_params[name])
            pairs += [(backend_of(t), sources[path], t) for path, t in targets.items()]
        return pairs

    def init_(self) -> None:
        """Copy the trainable parameters into the targets."""
        for backend, source, target in self._pairs():
            backend.write_into(target, backend.stop_gradient(source))
        self.initialized = True

    def step(self) -> None:
        """One update of every target array (call once per optimisation step)."""
        for backend, source, target in self._pairs():
            self._step(backend, backend.stop_gradient(source), target)

    def _step(self, backend: Any, source: Any, target: Any) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The updater's progress (targets themselves live in the loss's state)."""
        return {"initialized": self.initialized}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.initialized = state.get("initialized", self.initialized)


class SoftUpdate(TargetNetUpdater):
    """Polyak averaging (Lillicrap et al. 2016, https://arxiv.org/abs/1509.02971).

    ``θ̄ ← ε·θ̄ + (1 − ε)·θ`` with exactly one of ``eps`` (the decay, e.g. 0.995) or
    ``tau = 1 − eps`` (e.g. 0.005). This is what TorchRL 0.14.1 computes
    (``target.lerp_(source, 1 - eps)``); the seed overview's formula swaps ε and 1 − ε.
    """

    def __init__(self, loss_module: Any, *, eps: float | None = None, tau: float | None = None):
        if (eps is None) == (tau is None):
            raise ValueError("give exactly one of eps and tau")
        if eps is None:
            eps = 1.0 - hyperparameter("tau", tau, low=0.0, high=1.0)
        self.eps = hyperparameter("eps", eps, low=0.0, high=1.0)
        super().__init__(loss_module)

    def _step(self, backend: Any, source: Any, target: Any) -> None:
        backend.write_into(target, target + (1.0 - self.eps) * (source - target))


class HardUpdate(TargetNetUpdater):
    """Copy the parameters into the targets every ``value_network_update_interval + 1``
    calls of :meth:`step` (van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461),
    counting exactly as TorchRL 0.14.1: the copy happens on the call that finds the
    counter equal to the interval, which then resets it to 0."""

    def __init__(self, loss_module: Any, *, value_network_update_interval: int = 1000):
        self.value_network_update_interval = count(
            "value_network_update_interval", value_network_update_interval, minimum=0
        )
        self.counter = 0
        super().__init__(loss_module)

    def _step(self, backend: Any, source: Any, target: Any) -> None:
        if self.counter == self.value_network_update_interval:
            backend.write_into(target, source)

    def step(self) -> None:
        super().step()
        self.counter = 0 if self.counter == self.value_network_update_interval else self.counter + 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counter": self.counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.counter = state.get("counter", self.counter)
