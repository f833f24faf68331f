"""Decision Transformer losses: ``DTLoss`` and ``OnlineDTLoss``.

A Decision Transformer π_θ reads a context of returns-to-go ``R``, observations ``s``
and actions ``a`` (entries ``[*B, T, ·]``) and predicts the action at every step.

- ``DTLoss`` (Chen et al. 2021, "Decision Transformer: Reinforcement Learning via
  Sequence Modeling", https://arxiv.org/abs/2106.01345) regresses the prediction
  ``â = π_θ(R, s, a)`` on the dataset's action: ``loss = reduce d(â, a)`` with ``d`` the
  element-wise ``(â − a)²`` (``"l2"``), ``|â − a|`` (``"l1"``) or Huber (``"smooth_l1"``).
- ``OnlineDTLoss`` (Zheng et al. 2022, "Online Decision Transformer",
  https://arxiv.org/abs/2202.05607) fits a stochastic policy by maximum likelihood with
  an entropy bonus weighed by a SAC-style temperature ``α = exp(log α)``:

  - ``loss_log_likelihood = reduce(−log π_θ(a | R, s, a))``;
  - ``H = −(1/K) Σ_k log π_θ(ã_k | ·)``, ``ã_k`` ``K = samples_mc_entropy``
    reparameterised draws (a Monte-Carlo entropy, per step);
  - ``loss_entropy = reduce(−α·H)`` (``α`` held fixed);
  - ``loss_alpha = reduce(exp(log α)·(H − H̄))`` (``H`` held fixed, ``H̄`` the target
    entropy), which lowers ``α`` while the entropy exceeds its target.

Arguments, defaults, keys, outputs and the draw (its order and shape) follow TorchRL
0.14.1 (``torchrl/objectives/decision_transformer.py``); the temperature (float32
``log_alpha``, bounds, ``target_entropy="auto"``) is the SAC family's
(:mod:`._soft`). The transformer itself is the user's module: TorchRL's ``DTActor`` /
``OnlineDTActor`` in a ``TensorDictModule`` / ``ProbabilisticActor`` (through the torch
adapter), or any arrayrl module reading the context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import count, floating_array, reject_unknown_kwargs
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ._soft import TemperatureMixin, output_mode, sac_log_alpha_bounds, target_entropy_arg
from .common import LossModule
from .td3 import act
from .utils import distance_loss

__all__ = ["DTLoss", "OnlineDTLoss"]

LOSS_FUNCTIONS = ("l1", "l2", "smooth_l1")


@dataclasses.dataclass
class _DTKeys:
    """The batch keys of both losses: where the dataset's action is read
    (``action_target``) and where the actor writes its prediction (``action_pred``).
    Both default to ``"action"``: the target is read before the actor overwrites it."""

    action_target: Any = "action"
    action_pred: Any = "action"


class DTLoss(LossModule):
    """The Decision Transformer loss ``loss = reduce d(π_θ(R, s, a), a)`` (see the module
    docstring).

    Parameters
    ----------
    actor_network : Module
        The deterministic Decision Transformer: a TorchRL ``TensorDictModule`` around a
        ``DTActor`` (in keys ``observation``, ``action``, ``return_to_go``), or any arrayrl
        module writing its prediction at ``tensor_keys.action_pred``. A
        ``ProbabilisticActor`` writes its deterministic sample.
    loss_function : {"l2", "l1", "smooth_l1"}, default "l2"
    reduction : {"mean", "sum", "none"}, default "mean"
    device : optional
        Accepted for TorchRL's signature and unused, as in TorchRL (move the loss with
        :meth:`to`).

    Keys (``set_keys``): ``action_target`` and ``action_pred``, both ``"action"``.
    Output: ``loss`` (TorchRL's name, without the ``loss_`` prefix).
    """

    _AcceptedKeys = _DTKeys
    out_keys: ClassVar[list[str]] = ["loss"]

    def __init__(
        self,
        actor_network: Any,
        *,
        loss_function: str = "l2",
        reduction: str | None = None,
        device: Any = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown_kwargs("DTLoss", kwargs)
        if loss_function not in LOSS_FUNCTIONS:
            raise ValueError(
                f"DTLoss: unknown loss_function {loss_function!r}; expected one of {LOSS_FUNCTIONS}"
            )
        super().__init__()
        self.convert_to_functional(actor_network, "actor_network")
        self.loss_function = loss_function
        self.reduction = reduction

    @property
    def in_keys(self) -> list[Any]:
        """The actor's inputs and both action keys, sorted as TorchRL sorts them."""
        tk = self.tensor_keys
        keys = {*self.actor_network.in_keys, tk.action_pred, tk.action_target}
        return sorted(keys, key=str)

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss``: the reduced distance between the prediction and the dataset's action.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The actor's inputs (the context) and the dataset's action at
            ``tensor_keys.action_target``.
        params : mapping, optional
            ``{"actor_network": tree}`` to compute with instead of the loss's own.
        """
        batch = self.working_copy(batch)
        target = dataset_action(self, batch)
        act(self.actor_network, batch, self.network_params("actor_network", params))
        prediction = self.read(batch, self.tensor_keys.action_pred, what="action_pred")
        _check_same_shape(prediction, target, "DTLoss")
        loss = distance_loss(prediction, target, self.loss_function)
        return ArrayDict({"loss": self.reduce_loss(loss, batch)})


class OnlineDTLoss(TemperatureMixin, LossModule):
    """The Online Decision Transformer loss (see the module docstring).

    Parameters
    ----------
    actor_network : Module
        The stochastic Decision Transformer: a TorchRL ``ProbabilisticActor`` around an
        ``OnlineDTActor`` (``loc``, ``scale``; e.g. ``TanhNormal``), or an arrayrl
        ``ProbabilisticActor``. Its ``spec`` gives ``target_entropy="auto"``.
    alpha_init : float, default 1.0
        The initial temperature (``log_alpha`` starts at ``log alpha_init``, float32).
    min_alpha, max_alpha : float, optional
        Bounds of ``α`` (TorchRL's rule: one alone makes the other 0 or 1e9).
    fixed_alpha : bool, default False
        Keep ``α`` at ``alpha_init`` (``log_alpha`` is then not trained).
    target_entropy : "auto" or float, default "auto"
        ``H̄``; ``"auto"``: minus the number of elements of one action, read from the
        actor's ``spec`` (or ``action_spec``) at construction (``RuntimeError`` without).
    samples_mc_entropy : int, default 1
        ``K``, the draws of the Monte-Carlo entropy (from the loss's generator).
    reduction : {"mean", "sum", "none"}, default "mean"
    scalar_output_mode : {None, "exclude", "non_tensor"}
        With ``reduction="none"``: leave ``alpha`` and ``entropy`` out (``None`` warns,
        as TorchRL) or include them (the output then has batch size ``()``).
    action_spec : spec, optional
        arrayrl's addition: the action spec for ``"auto"`` when the actor has none.
    seed : int, optional
        Seed of the loss's generator (see :meth:`LossModule.generator`).

    Keys (``set_keys``): ``action_target`` and ``action_pred``, both ``"action"``.
    Outputs: ``loss_log_likelihood``, ``loss_entropy``, ``loss_alpha``, ``entropy`` (the
    mean of ``H``) and ``alpha`` (float32, as TorchRL's).

    Notes
    -----
    The dataset's action is read without gradient (TorchRL 0.14.1 raises
    ``RuntimeError`` when it is part of a graph; the numbers are the same).
    """

    _AcceptedKeys = _DTKeys
    out_keys: ClassVar[list[str]] = [
        "loss_log_likelihood",
        "loss_entropy",
        "loss_alpha",
        "alpha",
        "entropy",
    ]

    def __init__(
        self,
        actor_network: Any,
        *,
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        samples_mc_entropy: int = 1,
        reduction: str | None = None,
        scalar_output_mode: str | None = None,
        action_spec: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown_kwargs("OnlineDTLoss", kwargs)
        target_entropy = target_entropy_arg(target_entropy)
        samples = count("samples_mc_entropy", samples_mc_entropy)
        super().__init__()
        self.seed = seed
        self.convert_to_functional(actor_network, "actor_network")
        self._init_temperature(
            alpha_init=alpha_init,
            bounds=sac_log_alpha_bounds(min_alpha, max_alpha),
            fixed_alpha=fixed_alpha,
            target_entropy=target_entropy,
            action_spec=action_spec,
            actor=actor_network,
        )
        _ = self.target_entropy  # "auto" is resolved now, as TorchRL's constructor does
        self.samples_mc_entropy = samples
        self.reduction = reduction
        self.scalar_output_mode = output_mode(scalar_output_mode, self.reduction, "OnlineDTLoss")

    @property
    def in_keys(self) -> list[Any]:
        """The actor's inputs and the target action, sorted as TorchRL sorts them."""
        keys = {*self.actor_network.in_keys, self.tensor_keys.action_target}
        return sorted(keys, key=str)

    def _auto_target_entropy(self) -> float:
        """``−numel`` of the action at ``action_pred`` in the spec (TorchRL's rule)."""
        from arrayrl.specs import auto_target_entropy

        if self._target_entropy_spec is None:
            raise RuntimeError(
                "OnlineDTLoss: cannot infer the dimensionality of the action. Consider "
                "providing the target entropy explicitly or provide the spec of the action "
                "tensor in the actor network (or pass action_spec=...)."
            )
        key = self.tensor_keys.action_pred
        try:
            return auto_target_entropy(self._target_entropy_spec, key, owner="OnlineDTLoss")
        except ValueError as err:
            raise RuntimeError(str(err)) from None

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_log_likelihood``, ``loss_entropy``, ``loss_alpha``, ``entropy``,
        ``alpha``: the equations of the module docstring.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The actor's inputs (the context) and the dataset's action at
            ``tensor_keys.action_target``.
        params : mapping, optional
            ``{"actor_network": tree}`` to compute with instead of the loss's own.
        """
        batch = self.working_copy(batch)
        self._clamp_log_alpha()
        target = dataset_action(self, batch)
        dist = self.actor_network.get_dist(batch, self.network_params("actor_network", params))
        _check_outcome_shape(dist, target, self.tensor_keys.action_target)
        log_likelihood = dist.log_prob(target)
        entropy = self.entropy_estimate(dist)
        losses = {
            "loss_log_likelihood": -log_likelihood,
            "loss_entropy": -(self.alpha * entropy),
            "loss_alpha": self.alpha_loss(entropy),
        }
        return self._output(batch, losses, entropy)

    def entropy_estimate(self, dist: Any) -> Any:
        """``H = −mean_k log π(ã_k)`` over ``samples_mc_entropy`` reparameterised draws
        from the loss's generator (TorchRL's ``get_entropy_bonus``)."""
        rng = self.generator(dist.backend)
        _, log_p = dist.rsample_and_log_prob((self.samples_mc_entropy,), rng=rng)
        return -dist.xp.mean(log_p, axis=0)

    get_entropy_bonus = entropy_estimate

    def alpha_loss(self, entropy: Any) -> Any:
        """``exp(log α)·(H − H̄)`` per step (unreduced), ``H`` held fixed."""
        backend = backend_of(entropy)
        gap = backend.stop_gradient(entropy - self.target_entropy)
        return backend.xp.exp(self._log_alpha()) * gap

    def _output(self, batch: ArrayDict, losses: dict[str, Any], entropy: Any) -> ArrayDict:
        """The reduced losses with ``entropy`` and ``alpha`` (by ``scalar_output_mode``
        when ``reduction="none"``)."""
        reduced = {name: self.reduce_loss(value, batch) for name, value in losses.items()}
        backend = backend_of(entropy)
        mean_entropy = backend.stop_gradient(backend.xp.mean(entropy))
        if self.reduction != "none":
            return ArrayDict({**reduced, "entropy": mean_entropy, "alpha": self.alpha})
        if self.scalar_output_mode == "non_tensor":
            return ArrayDict({**reduced, "alpha": self.alpha, "entropy": mean_entropy})
        return ArrayDict(reduced, tuple(batch.batch_size))


# -- checks -------------------------------------------------------------------------------
def dataset_action(loss: LossModule, batch: ArrayDict) -> Any:
    """The dataset's action at ``tensor_keys.action_target`` (floating, cut from the
    graph), read before the actor writes its prediction (the keys may be the same)."""
    key = loss.tensor_keys.action_target
    loss.check_batch_backend(batch, key)
    target = loss.read(batch, key, what="action_target")
    backend = floating_array(f"the dataset's action {key!r}", target, owner=type(loss).__name__)
    return backend.stop_gradient(target)


def _check_same_shape(prediction: Any, target: Any, owner: str) -> None:
    if tuple(prediction.shape) != tuple(target.shape):
        raise ValueError(
            f"{owner}: the prediction has shape {tuple(prediction.shape)} and the dataset's "
            f"action has shape {tuple(target.shape)}; they must match"
        )


def _check_outcome_shape(dist: Any, target: Any, key: Any) -> None:
    """The target must be one outcome per batch element: ``batch_shape + event_shape``."""
    shape = (*getattr(dist, "batch_shape", ()), *getattr(dist, "event_shape", ()))
    if hasattr(dist, "batch_shape") and tuple(target.shape) != shape:
        raise ValueError(
            f"OnlineDTLoss: the dataset's action {key!r} has shape {tuple(target.shape)}, but "
            f"the actor's {type(dist).__name__} has outcomes of shape {shape}"
        )
