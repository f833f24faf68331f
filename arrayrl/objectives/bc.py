"""Behaviour cloning: ``BCLoss``.

Supervised imitation of the expert actions ``a`` of a dataset by a policy π_θ, as in
Goecks et al. 2020, "Integrating Behavior Cloning and Reinforcement Learning for Improved
Performance in Dense and Sparse Reward Environments", https://arxiv.org/abs/1910.04281
(the reference TorchRL cites). Per sample (and per action element for element-wise
distances), with ``â = π_θ(s)`` the action the actor writes:

- a stochastic policy: ``ℓ = −log π_θ(a | s)`` (negative log-likelihood);
- a deterministic policy: ``ℓ = d(â, a)``, ``d`` one of ``(â − a)²`` (``"l2"``,
  ``"mse"``), ``|â − a|`` (``"l1"``), Huber with δ = 1 (``"smooth_l1"``);
- discrete actions with ``â`` the logits ``z``: ``ℓ = −log softmax(z)_a`` for an index
  ``a``, ``ℓ = −Σ_c a_c log softmax(z)_c`` for class probabilities ``a``
  (``"cross_entropy"``);

then ``loss_bc`` is the mean (or sum) of ``ℓ`` over the valid elements: those not marked
by the ``pad_mask`` entry (chunked, VLA-style cloning) nor by the loss masks
(``loss_mask_key``). Arguments, keys and outputs follow TorchRL 0.14.1
(``torchrl/objectives/bc.py``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from .common import LossModule, _mask_like
from .td3 import act
from .utils import distance_loss

__all__ = ["BCLoss"]

#: the loss functions named by a string, and the element-wise distance each one is
_DISTANCES = {"l1": "l1", "l2": "l2", "mse": "l2", "smooth_l1": "smooth_l1"}
LOSS_FUNCTIONS = (*_DISTANCES, "cross_entropy")
#: an actor writing one of these keys is stochastic (TorchRL's rule, on ``out_keys``)
_DISTRIBUTION_KEYS = ("loc", "scale", "logits", "probs")
#: torch's ``cross_entropy`` ``ignore_index``: a target of -100 contributes 0
IGNORE_INDEX = -100


class BCLoss(LossModule):
    """The behaviour-cloning loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : Module
        The policy: an arrayrl or TorchRL ``ProbabilisticActor`` (for the log-likelihood;
        deterministic ones are run with their deterministic sample), ``Actor`` or
        ``TensorDictModule``. It should write its prediction at ``tensor_keys.action``.
    loss_function : str or callable, optional
        ``"l1"``, ``"l2"`` / ``"mse"``, ``"smooth_l1"``, ``"cross_entropy"``, or a
        callable ``f(prediction, expert_action)`` of two arrays of the batch's backend
        (the prediction as the actor wrote it, the expert action as the batch holds it)
        returning the unreduced loss as an array of that backend; it is reduced like the
        built-in ones (``pad_mask`` broadcasts over its trailing dims). ``None`` (the
        default) picks by the data, as TorchRL: integer expert actions get
        cross-entropy of the prediction (the logits), or the log-likelihood when the actor
        is a ``ProbabilisticActor`` (see Notes); an actor writing ``loc``, ``scale``,
        ``logits`` or ``probs`` gets the negative log-likelihood of its ``get_dist``;
        any other gets ``"l2"``.
    reduction : {"mean", "sum", "none"}, default "mean"

    Keys (``set_keys``): ``action`` (default ``"action"``), where the expert action is
    read and where the actor writes its prediction; ``pad_mask`` (default ``None``), a
    boolean entry, ``True`` at padded positions, excluded from the loss. The mask may
    have fewer dims than the element-wise loss (a ``[*B, H]`` mask covers a
    ``[*B, H, action_dim]`` loss) but not more (``RuntimeError``: the log-likelihood and
    cross-entropy are per sample). With a mask, ``"mean"`` divides by the number of
    valid elements (at least 1, so a wholly padded batch gives 0) and ``"none"`` returns
    the valid elements as a flat 1-D array, as TorchRL. A batch without the entry is not
    masked.

    Notes
    -----
    As in TorchRL 0.14, an actor that writes ``"action"`` while ``tensor_keys.action`` is
    another key still works (the prediction is read at ``"action"``) with a
    ``FutureWarning``; an actor writing neither raises ``RuntimeError``.

    Where TorchRL 0.14.1 raises or computes something else, arrayrl computes the
    loss the equations above define (recorded in the conformance suite):

    - cross-entropy takes the classes on the last axis, so ``[B, T, C]`` logits with
      ``[B, T]`` (or ``[B, T, 1]``) targets give a ``[B, T]`` loss (TorchRL's
      ``F.cross_entropy`` reads classes on axis 1);
    - expert indices of any integer dtype are class indices (TorchRL: int64 only;
      int32 raises, smaller ones fall through to MSE);
    - integer expert actions with a ``ProbabilisticActor`` are scored by
      ``−log π(a | s)`` (TorchRL applies cross-entropy to the sampled index and raises).

    An index of -100 contributes 0 to cross-entropy (torch's ``ignore_index``, which
    TorchRL inherits; it still counts in the mean) and any other index outside
    ``0 … C−1`` gives NaN; ``pad_mask`` is the way to leave positions out.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        pad_mask: Any = None

    out_keys: ClassVar[list[str]] = ["loss_bc"]

    def __init__(
        self,
        actor_network: Any,
        *,
        loss_function: str | Callable[[Any, Any], Any] | None = None,
        reduction: str | None = None,
    ) -> None:
        super().__init__()
        self.loss_function = _checked_loss_function(loss_function)
        self.convert_to_functional(actor_network, "actor_network")
        self.reduction = reduction

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads: the action, the actor's inputs, the pad mask."""
        tk = self.tensor_keys
        keys = [tk.action, *self.actor_network.in_keys]
        if tk.pad_mask is not None:
            keys.append(tk.pad_mask)
        return list(dict.fromkeys(keys))

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_bc``: the reduced ``ℓ`` of the module docstring.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The actor's inputs, the expert action at ``tensor_keys.action``, and the pad
            mask when ``tensor_keys.pad_mask`` is set.
        params : mapping, optional
            ``{"actor_network": tree}`` to compute with instead of the loss's own
            parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        expert = self.read(batch, self.tensor_keys.action)
        actor_params = self.network_params("actor_network", params)
        if self._scores_likelihood(expert):
            loss = self._negative_log_likelihood(batch, expert, actor_params)
        else:
            act(self.actor_network, batch, actor_params)
            loss = self._prediction_loss(self._prediction(batch, expert), expert)
        return ArrayDict({"loss_bc": self._reduce(loss, batch)})

    def _scores_likelihood(self, expert: Any) -> bool:
        """Whether ``loss_function=None`` means the log-likelihood for ``expert``."""
        if self.loss_function is not None:
            return False
        if _is_integer(expert):
            return hasattr(self.actor_network, "get_dist")
        out_keys = getattr(self.actor_network, "out_keys", ())
        return any(key in out_keys for key in _DISTRIBUTION_KEYS)

    def _negative_log_likelihood(self, batch: ArrayDict, expert: Any, params: Params) -> Any:
        """``−log π_θ(a | s)`` per sample, from the actor's ``get_dist``."""
        actor = self.actor_network
        if not hasattr(actor, "get_dist"):
            raise TypeError(
                f"BCLoss: the actor writes {actor.out_keys}, distribution parameters, but has "
                "no get_dist; pass a ProbabilisticActor, or set loss_function=..."
            )
        dist = actor.get_dist(batch, params)
        return -dist.log_prob(_outcomes(dist, expert, self.tensor_keys.action))

    def _prediction(self, batch: ArrayDict, expert: Any) -> Any:
        """The actor's prediction at ``tensor_keys.action`` (TorchRL 0.14's rule: the
        legacy ``"action"`` key with a ``FutureWarning``, else ``RuntimeError``)."""
        key = self.tensor_keys.action
        prediction = batch.get(key)
        if prediction is not expert:
            return prediction
        legacy = batch.get("action", None)
        if legacy is not None and legacy is not expert:
            warnings.warn(
                f"BCLoss: the actor wrote its prediction at 'action' while the loss's action "
                f"key is {key!r}; reading it from 'action' is deprecated (TorchRL removes it "
                "in v0.16): make the actor's out_keys match the loss's action key.",
                FutureWarning,
                stacklevel=4,
            )
            return legacy
        raise RuntimeError(
            f"BCLoss: the actor did not write a prediction at {key!r}; make its out_keys "
            "match the loss's action key (set_keys(action=...))."
        )

    def _prediction_loss(self, prediction: Any, expert: Any) -> Any:
        """``ℓ(â, a)`` unreduced, by ``loss_function`` (or the default for ``expert``)."""
        name = self.loss_function
        if callable(name):
            return _as_array(name(prediction, expert))
        if name is None:
            name = "cross_entropy" if _is_integer(expert) else "l2"
        key = self.tensor_keys.action
        if name == "cross_entropy":
            return cross_entropy(prediction, expert, key)
        _check_same_shape(prediction, expert, key)
        _check_floating(expert, key, name)
        return distance_loss(prediction, expert, _DISTANCES[name])

    def _reduce(self, loss: Any, batch: ArrayDict) -> Any:
        """:meth:`reduce_loss`, or with a pad mask TorchRL's caller-mask reduction: the
        mean over the valid elements (at least one), their sum, or (``"none"``) the
        valid elements as a flat array."""
        valid = self._valid_elements(batch, loss)
        if valid is None:
            return self.reduce_loss(loss, batch)
        xp = backend_of(loss).xp
        batch_mask = self._batch_mask(batch, loss)
        if batch_mask is not None:
            valid = valid & batch_mask
        loss = xp.where(valid, loss, xp.zeros_like(loss))
        if self.reduction == "none":
            return loss[valid]
        total = xp.sum(loss)
        if self.reduction == "sum":
            return total
        return total / xp.clip(xp.sum(xp.astype(valid, loss.dtype)), min=1.0)

    def _valid_elements(self, batch: ArrayDict, loss: Any) -> Any:
        """``not pad_mask`` broadcast to ``loss``'s shape, or ``None`` without a mask."""
        key = self.tensor_keys.pad_mask
        pad = None if key is None else batch.get(key, None)
        if pad is None:
            return None
        xp = backend_of(pad).xp
        if not xp.isdtype(pad.dtype, "bool"):
            raise TypeError(f"BCLoss: pad_mask {key!r} must be boolean, got {pad.dtype}")
        if pad.ndim > loss.ndim:
            raise RuntimeError(
                f"BCLoss: pad_mask {key!r} has more dimensions ({pad.ndim}) than the loss "
                f"({loss.ndim}): per-element masking needs an element-wise loss (e.g. "
                "loss_function='l1'), not the log-likelihood or cross-entropy"
            )
        try:
            return _mask_like(~pad, loss)
        except (ValueError, RuntimeError) as err:
            raise ValueError(
                f"BCLoss: pad_mask {key!r} of shape {tuple(pad.shape)} does not cover the "
                f"loss of shape {tuple(loss.shape)} (its dims must lead the loss's)"
            ) from err


# -- the loss functions ---------------------------------------------------------------------------
def cross_entropy(logits: Any, target: Any, key: Any = "action") -> Any:
    """Cross-entropy of ``logits`` (classes on the last axis) against ``target``.

    An integer ``target`` holds class indices, shaped as ``logits`` without its last axis
    (a trailing unit axis is dropped): ``−log softmax(z)_a``, 0 where the index is -100
    (torch's ``ignore_index``), NaN where it is out of range. A floating ``target`` of
    ``logits``'s shape holds class probabilities: ``−Σ_c a_c log softmax(z)_c``.
    """
    backend = backend_of(logits, target)
    xp = backend.xp
    if not xp.isdtype(logits.dtype, "real floating"):
        raise TypeError(
            f"BCLoss: cross-entropy needs floating logits at {key!r}, got {logits.dtype} (a "
            "sampled action? a ProbabilisticActor is scored by its log-likelihood instead)"
        )
    log_p = logits - backend.logsumexp(logits, axis=-1)[..., None]
    if not _is_integer(target):
        _check_same_shape(logits, target, key, what="class probabilities")
        _check_floating(target, key, "cross_entropy")
        return -xp.sum(target * log_p, axis=-1)
    index = _class_indices(logits, target, key)
    n = logits.shape[-1]
    inside = (index >= 0) & (index < n)
    picked = xp.take_along_axis(log_p, xp.clip(index, 0, n - 1)[..., None], axis=-1)[..., 0]
    loss = xp.where(inside, -picked, xp.nan)
    return xp.where(index == IGNORE_INDEX, xp.zeros_like(loss), loss)


def _class_indices(logits: Any, target: Any, key: Any) -> Any:
    """``target`` shaped ``logits.shape[:-1]`` (one trailing unit axis dropped), int64."""
    xp = backend_of(target).xp
    batch = tuple(logits.shape[:-1])
    if target.ndim == logits.ndim and target.shape[-1] == 1:
        target = target[..., 0]
    if tuple(target.shape) != batch:
        raise ValueError(
            f"BCLoss: cross-entropy needs class indices {key!r} of shape {batch} (or "
            f"{(*batch, 1)}) for logits of shape {tuple(logits.shape)}, got "
            f"{tuple(target.shape)}"
        )
    return xp.astype(target, xp.int64)


def _outcomes(dist: Any, expert: Any, key: Any) -> Any:
    """``expert`` as outcomes of ``dist``: integer indices lose a trailing unit axis
    (``[*B, 1]`` for a categorical of batch ``[*B]``); the shape must then be the
    distribution's ``batch_shape + event_shape`` (no silent broadcasting)."""
    batch, event = getattr(dist, "batch_shape", None), getattr(dist, "event_shape", None)
    if batch is None or event is None:
        return expert
    shape = (*batch, *event)
    if _is_integer(expert) and expert.ndim == len(shape) + 1 and expert.shape[-1] == 1:
        expert = expert[..., 0]
    if tuple(expert.shape) != shape:
        raise ValueError(
            f"BCLoss: the expert action {key!r} has shape {tuple(expert.shape)}, but the "
            f"actor's {type(dist).__name__} has outcomes of shape {shape}"
        )
    return expert


# -- checks ---------------------------------------------------------------------------------------
def _checked_loss_function(value: Any) -> str | Callable[[Any, Any], Any] | None:
    if value is None or callable(value):
        return value
    if isinstance(value, str) and value in LOSS_FUNCTIONS:
        return value
    if isinstance(value, str):
        raise ValueError(
            f"BCLoss: unknown loss_function {value!r}; expected one of {LOSS_FUNCTIONS}"
        )
    raise TypeError(
        f"BCLoss: loss_function must be one of {LOSS_FUNCTIONS}, a callable or None, got "
        f"{type(value).__name__}"
    )


def _is_integer(x: Any) -> bool:
    return backend_of(x).xp.isdtype(x.dtype, "integral")


def _check_same_shape(prediction: Any, expert: Any, key: Any, what: str = "expert action") -> None:
    if tuple(prediction.shape) != tuple(expert.shape):
        raise ValueError(
            f"BCLoss: the prediction has shape {tuple(prediction.shape)} and the {what} "
            f"{key!r} has shape {tuple(expert.shape)}; they must match"
        )


def _check_floating(expert: Any, key: Any, name: str) -> None:
    if not backend_of(expert).xp.isdtype(expert.dtype, "real floating"):
        raise TypeError(
            f"BCLoss: loss_function={name!r} needs floating expert actions {key!r}, got "
            f"{expert.dtype}"
        )


def _as_array(value: Any) -> Any:
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(
            f"BCLoss: a callable loss_function must return an array, got {type(value).__name__}"
        )
    return value
