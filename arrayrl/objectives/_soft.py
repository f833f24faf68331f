"""What the soft actor-critic losses share: the temperature and a few key helpers.

SAC, DiscreteSAC, REDQ, TQC and CrossQ weigh the policy's entropy by a temperature
``α = exp(log α)``. As in TorchRL 0.14.1, ``log α`` is a 0-d float32 array of the loss
(a trainable parameter, or a fixed one with ``fixed_alpha``), optionally clamped into
``[log α_min, log α_max]``, and the target entropy ``H̄`` is a float32 number, given or
read from the action spec (``"auto"``: minus the action's element count). The numbers
that TorchRL keeps in float32 buffers (the bounds, ``H̄``) are rounded to float32 here
too, so that sums and comparisons give TorchRL's values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from arrayrl._validation import flag, hyperparameter
from arrayrl.backends import backend_of, get_backend
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, flatten_params

__all__ = [
    "TemperatureMixin",
    "as_tuple",
    "float32",
    "leaves",
    "log32",
    "next_key",
    "output_mode",
    "register_actor_and_critics",
    "reject_constructor_keys",
    "sac_log_alpha_bounds",
    "select",
    "target_entropy_arg",
]

_SCALAR_OUTPUT_MODES = (None, "exclude", "non_tensor")


# -- numbers ---------------------------------------------------------------------------
def float32(x: float) -> float:
    """``x`` rounded to float32 (TorchRL's ``torch.tensor(x)`` buffers)."""
    return float(np.float32(x))


def log32(x: float | None) -> float | None:
    """``log x`` as TorchRL computes it (``torch.tensor(x).log()``, float32); ``None``
    (no bound) for ``None`` or 0."""
    return float32(math.log(float32(x))) if x else None


def sac_log_alpha_bounds(min_alpha: Any, max_alpha: Any) -> tuple[float | None, float | None]:
    """``(log min_alpha, log max_alpha)`` in float32, ``None`` for no bound, by TorchRL
    0.14.1's SAC rule: given one bound alone, the other becomes 0 (no bound) or 1e9;
    ``max_alpha=0`` alone raises ``ValueError``."""
    low = None if min_alpha is None else hyperparameter(
        "min_alpha", min_alpha, low=0.0, high=math.inf)
    high = None if max_alpha is None else hyperparameter(
        "max_alpha", max_alpha, low=0.0, high=math.inf)
    if bool(low) ^ bool(high):
        if high == 0:
            raise ValueError("max_alpha must be either None or greater than 0.")
        low, high = low or 0.0, high or 1e9
    if low and high and low > high:
        raise ValueError(f"min_alpha ({low}) must not exceed max_alpha ({high})")
    return log32(low), log32(high)


def target_entropy_arg(value: Any) -> Any:
    """``"auto"`` or a real number (``TypeError`` / ``ValueError`` otherwise)."""
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"target_entropy must be 'auto' or a number, got {value!r}")
        return value
    return hyperparameter("target_entropy", value, low=-math.inf, high=math.inf)


def reject_constructor_keys(gamma: Any = None, **keys: Any) -> None:
    """TorchRL 0.14.1's errors for ``gamma`` (``TypeError``) and the deprecated
    ``*_key`` constructor arguments (``RuntimeError``)."""
    if gamma is not None:
        raise TypeError(
            "Passing gamma / lambda parameters through the loss constructor is a deprecated "
            "feature. To customize your value function, run "
            "`loss_module.make_value_estimator(ValueEstimators.<value_fun>, gamma=val)`."
        )
    for name, value in keys.items():
        if value is not None:
            raise RuntimeError(
                f"Setting '{name}' via the constructor is deprecated, use "
                f".set_keys({name}='some_key') instead."
            )


def output_mode(mode: Any, reduction: str, owner: str) -> str | None:
    """``scalar_output_mode`` checked; with ``reduction="none"`` and no mode, TorchRL's
    warning and ``"exclude"`` (the 0-d ``alpha`` and ``entropy`` cannot join per-sample
    losses)."""
    if mode not in _SCALAR_OUTPUT_MODES:
        raise ValueError(f"scalar_output_mode must be one of {_SCALAR_OUTPUT_MODES}, got {mode!r}")
    if reduction != "none" or mode is not None:
        return mode
    warnings.warn(
        f"{owner} with reduction='none' cannot include scalar values (alpha, entropy) in "
        "the output without changing their shape. These values will be excluded from the "
        "output. You can access them via `loss_module.alpha`. To suppress this warning, "
        "pass `scalar_output_mode='exclude'` to the constructor, or "
        "`scalar_output_mode='non_tensor'` to include them (arrayrl then returns an output "
        "of batch size ()).",
        UserWarning,
        stacklevel=3,
    )
    return "exclude"


# -- keys and trees ----------------------------------------------------------------------
def as_tuple(key: Any) -> tuple[str, ...]:
    """A key as a tuple: ``"a"`` → ``("a",)``."""
    return key if isinstance(key, tuple) else (key,)


def next_key(key: Any) -> tuple[str, ...]:
    """``("next", *key)``."""
    return ("next", *as_tuple(key))


def leaves(tree: Params) -> list[Any]:
    """The arrays of a parameter tree (what a critic sharing them must not train)."""
    return list(flatten_params(tree).values())


def select(batch: ArrayDict, keys: Iterable[Any]) -> ArrayDict:
    """The entries of ``batch`` at ``keys`` that it has (TorchRL's ``strict=False``)."""
    return batch.select(*keys, strict=False)


# -- networks -------------------------------------------------------------------------------
def register_actor_and_critics(
    loss: Any, actor: Any, qvalue: Any, num_qvalue_nets: int, *, delay_qvalue: Any,
    separate_losses: Any,
) -> None:
    """Register the actor and a Q ensemble of ``num_qvalue_nets`` members on ``loss``
    (with a target copy if ``delay_qvalue``); with ``separate_losses`` the critic's leaves
    shared with the actor are broadcast, not trained through the critic (TorchRL's
    ``compare_against``). Sets ``separate_losses``, ``delay_qvalue``, ``num_qvalue_nets``."""
    loss.convert_to_functional(actor, "actor_network")
    loss.separate_losses = flag("separate_losses", separate_losses)
    shared = leaves(loss.actor_network_params) if loss.separate_losses else None
    loss.delay_qvalue = flag("delay_qvalue", delay_qvalue)
    loss.convert_to_functional(
        qvalue, "qvalue_network", num_qvalue_nets,
        create_target_params=loss.delay_qvalue, compare_against=shared,
    )
    loss.num_qvalue_nets = num_qvalue_nets


# -- the temperature -----------------------------------------------------------------------
class TemperatureMixin:
    """``log α`` as an array of the loss, its bounds, ``α`` and the target entropy.

    The host (a :class:`~arrayrl.objectives.common.LossModule`) calls
    :meth:`_init_temperature` once its actor is registered.
    """

    fixed_alpha: bool
    min_log_alpha: float | None
    max_log_alpha: float | None

    def _init_temperature(
        self,
        *,
        alpha_init: Any,
        bounds: tuple[float | None, float | None],
        fixed_alpha: Any,
        target_entropy: Any,
        action_spec: Any = None,
        actor: Any = None,
    ) -> None:
        """Register ``log_alpha = log(alpha_init)`` (0-d float32, on the parameters'
        backend and device) and keep the bounds and the target entropy (``"auto"`` is
        read on first use from ``action_spec``, else the actor's ``spec``)."""
        self.alpha_init = hyperparameter("alpha_init", alpha_init, low=0.0, high=math.inf,
                                         low_open=True)
        self.min_log_alpha, self.max_log_alpha = bounds
        self.fixed_alpha = flag("fixed_alpha", fixed_alpha)
        leaf = next(self.parameters(), None)  # type: ignore[attr-defined]
        backend = get_backend("numpy") if leaf is None else backend_of(leaf)
        value = np.asarray(math.log(self.alpha_init), dtype=np.float32)
        self.register_parameter("log_alpha", backend.from_numpy(value))  # type: ignore[attr-defined]
        self._target_entropy_arg = target_entropy_arg(target_entropy)
        self._target_entropy_spec = action_spec if action_spec is not None else getattr(
            actor, "spec", None)
        self._target_entropy: float | None = None

    def _value_estimator_networks(self, value_type: Any) -> dict[str, Any]:
        """No value network: these losses compute the next-state soft value themselves
        and give it to the estimator (SAC v1 overrides this with its value network)."""
        return {"value_network": None}

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """The trainable arrays; ``log_alpha`` is one unless ``fixed_alpha`` (then it is
        saved and moved with the loss, as TorchRL's buffer, but never trained)."""
        for name, leaf in super().named_parameters():  # type: ignore[misc]
            if not (name == "log_alpha" and self.fixed_alpha):
                yield name, leaf

    @property
    def target_entropy(self) -> float:
        """``H̄``, float32-rounded as TorchRL's buffer; ``"auto"`` is resolved on first
        use (``RuntimeError`` without a spec, as TorchRL)."""
        if self._target_entropy is None:
            value = self._target_entropy_arg
            if value == "auto":
                value = self._auto_target_entropy()
            self._target_entropy = float32(value)
        return self._target_entropy

    def _auto_target_entropy(self) -> float:
        from arrayrl.specs import auto_target_entropy

        owner = type(self).__name__
        if self._target_entropy_spec is None:
            raise RuntimeError(
                f"{owner}: cannot infer the dimensionality of the action. Consider "
                "providing the target entropy explicitly or provide the spec of the action "
                "tensor in the actor network."
            )
        action_key = self.tensor_keys.action  # type: ignore[attr-defined]
        try:
            return auto_target_entropy(self._target_entropy_spec, action_key, owner=owner)
        except ValueError as err:  # an entry of None: TorchRL raises RuntimeError
            raise RuntimeError(str(err)) from None

    def _clamp_log_alpha(self) -> None:
        """Clamp the stored ``log α`` into its bounds.

        TorchRL clamps ``log_alpha.data`` in place each time it reads ``α``. Here the
        clamped value is written into the stored array outside autograd (the same leaf
        keeps its identity, so an optimizer keeps tracking it), when :attr:`alpha` is
        read and at the start of ``forward``, before ``log α`` enters any graph.
        """
        if self.min_log_alpha is None and self.max_log_alpha is None:
            return
        log_alpha = self.log_alpha  # type: ignore[attr-defined]
        backend = backend_of(log_alpha)
        clamped = backend.xp.clip(
            backend.stop_gradient(log_alpha), min=self.min_log_alpha, max=self.max_log_alpha
        )
        self._own_params["log_alpha"] = backend.write_into(log_alpha, clamped)  # type: ignore[attr-defined]

    @property
    def alpha(self) -> Any:
        """``α = exp(log α)`` after the clamp (a 0-d float32 array, no gradient)."""
        self._clamp_log_alpha()
        backend = backend_of(self.log_alpha)  # type: ignore[attr-defined]
        return backend.stop_gradient(backend.xp.exp(self.log_alpha))  # type: ignore[attr-defined]

    @property
    def _alpha(self) -> Any:
        """TorchRL's name of :attr:`alpha`."""
        return self.alpha

    def _log_alpha(self) -> Any:
        """``log α`` as the alpha loss uses it: without gradient when fixed."""
        log_alpha = self.log_alpha  # type: ignore[attr-defined]
        return backend_of(log_alpha).stop_gradient(log_alpha) if self.fixed_alpha else log_alpha
