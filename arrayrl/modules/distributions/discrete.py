"""Discrete distributions: ``Categorical`` (integer outcomes), ``OneHotCategorical``
(one-hot outcomes) and ``MaskedCategorical`` (outcomes restricted by a mask or a list of
indices), with TorchRL 0.14.1's constructor arguments.

Sampling is Gumbel-max: ``argmax_i(log p_i + g_i)`` with ``g_i = -log(-log u_i)`` and
``u_i`` uniform draws of the generator, one per category. It needs no cumulative sum, so
a zero-probability category is never drawn, whatever the rounding.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from arrayrl.backends import Backend
from arrayrl.random import Generator

from ._base import (
    Distribution,
    Shape,
    broadcast_shapes,
    check_floating,
    find_backend,
    gather_last,
    gumbel,
    is_array_like,
    log_softmax_and_softmax,
    one_hot,
    safe_log,
)

__all__ = ["Categorical", "MaskedCategorical", "OneHotCategorical", "ReparamGradientStrategy"]


class ReparamGradientStrategy(Enum):
    """How :meth:`OneHotCategorical.rsample` gets its gradient (TorchRL's names).

    ``PassThrough``: the hard one-hot draw plus ``p - stop_gradient(p)`` (straight
    through the probabilities). ``RelaxedOneHot``: the hard one-hot of a Gumbel-softmax
    draw at temperature 1, with the gradient of the soft draw.
    """

    PassThrough = 1
    RelaxedOneHot = 2


def _parse_grad_method(method: Any) -> ReparamGradientStrategy:
    """A member, TorchRL's enum member of the same name, or the name as a string."""
    name = getattr(method, "name", method)
    for member in ReparamGradientStrategy:
        if isinstance(name, str) and name.lower().replace("_", "") == member.name.lower():
            return member
    names = [m.name for m in ReparamGradientStrategy]
    raise ValueError(f"grad_method must be one of {names}, got {method!r}")


def _categorical_input(logits: Any, probs: Any, **others: Any) -> tuple[Backend, bool, Any]:
    """``(backend, given_as_logits, array)`` after checking that exactly one is given."""
    if (logits is None) == (probs is None):
        raise ValueError("exactly one of logits and probs must be given")
    name, x = ("logits", logits) if probs is None else ("probs", probs)
    if not is_array_like(x):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    backend = find_backend(**{name: x}, **others)
    check_floating(x, name, backend.xp)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a last axis of categories, got a 0-d array")
    return backend, probs is None, x


def _log_normalise_probs(probs: Any, xp: Any) -> tuple[Any, Any]:
    """``(log p, p)`` with ``p = probs / sum(probs)``; ``log 0 = -inf``."""
    p = probs / xp.sum(probs, axis=-1, keepdims=True)
    return safe_log(p, xp), p


class Categorical(Distribution):
    r"""A distribution over the integers ``0 .. n-1``, ``n = logits.shape[-1]``.

    .. math::

        \log p(k) = l_k - \log\sum_j e^{l_j}, \qquad H = -\sum_k p_k \log p_k

    (``0 log 0 = 0``). ``logits`` and ``probs`` hold the normalised values; a probability
    of exactly zero has logit ``-inf``, so its ``log_prob`` is ``-inf`` (torch clamps it
    to ``log(eps)``), while the entropy and its gradient stay finite. An index outside
    ``0 .. n-1`` has ``log_prob`` ``-inf``. Draws are int64 (Gumbel-max, see the module
    docstring); ``mean`` is NaN, as in torch.

    Parameters
    ----------
    logits : array, optional
        Unnormalised log-probabilities, categories on the last axis.
    probs : array, optional
        Non-negative weights, normalised along the last axis. Exactly one of the two.

    References
    ----------
    ``torch.distributions.Categorical``.
    """

    has_rsample = False
    has_entropy = True

    def __init__(self, logits: Any = None, probs: Any = None) -> None:
        backend, as_logits, x = _categorical_input(logits, probs)
        self._set_logits(backend, x, as_logits)

    def _set_logits(self, backend: Backend, x: Any, as_logits: bool) -> None:
        if as_logits:
            self.logits, self.probs = log_softmax_and_softmax(x, backend)
        else:
            self.logits, self.probs = _log_normalise_probs(x, backend.xp)
        super().__init__(backend, tuple(x.shape[:-1]), ())
        self.num_events = int(x.shape[-1])

    @property
    def mean(self) -> Any:
        """Undefined for categories: NaN of ``batch_shape`` (as torch)."""
        return self.xp.full(
            self.batch_shape, math.nan, dtype=self.probs.dtype, device=self.backend.device
        )

    @property
    def mode(self) -> Any:
        """The most probable index (the first one on ties), int64."""
        return self.xp.astype(self.xp.argmax(self.probs, axis=-1), self.xp.int64)

    @property
    def deterministic_sample(self) -> Any:
        """The mode."""
        return self.mode

    def log_prob(self, value: Any) -> Any:
        return self._index_log_prob(value)

    def _index_log_prob(self, value: Any) -> Any:
        xp, n = self.xp, self.num_events
        if not is_array_like(value):
            value = self.backend.asarray(value)
        if not xp.isdtype(value.dtype, "integral"):
            value = xp.astype(value, xp.int64)
        inside = (value >= 0) & (value < n)
        lp = gather_last(self.logits, xp.clip(value, 0, n - 1)[..., None], xp)[..., 0]
        return xp.where(inside, lp, -math.inf)

    def entropy(self) -> Any:
        xp = self.xp
        p_log_p = self.probs * xp.where(self.probs > 0, self.logits, 0.0)
        return -xp.sum(p_log_p, axis=-1)

    def _gumbel_scores(self, shape: Shape, rng: Generator) -> Any:
        g = gumbel((*shape, *self.logits.shape), self.logits.dtype, rng)
        return self.logits + g

    def _sample(self, shape: Shape, rng: Generator) -> Any:
        xp = self.xp
        return xp.astype(xp.argmax(self._gumbel_scores(shape, rng), axis=-1), xp.int64)


class OneHotCategorical(Categorical):
    r"""A :class:`Categorical` whose outcomes are one-hot vectors of length ``n``.

    ``log_prob(x)`` scores ``argmax(x)``; draws, ``mode`` and ``deterministic_sample``
    are one-hot in the dtype of the logits, ``mean`` is ``probs``, and ``event_shape`` is
    ``(n,)``. ``rsample`` follows ``grad_method`` (see
    :class:`ReparamGradientStrategy`); the default, ``PassThrough``, returns the hard
    one-hot draw with the gradient of ``probs`` (straight-through estimator).

    Parameters
    ----------
    logits, probs : array, optional
        As :class:`Categorical`; exactly one.
    grad_method : ReparamGradientStrategy or str, default PassThrough
        TorchRL's enum members are accepted too.

    References
    ----------
    ``torchrl.modules.OneHotCategorical``; Bengio et al. (2013), straight-through
    estimator; Jang et al. (2017), Gumbel-softmax.
    """

    has_rsample = True

    def __init__(
        self,
        logits: Any = None,
        probs: Any = None,
        grad_method: Any = ReparamGradientStrategy.PassThrough,
    ) -> None:
        self.grad_method = _parse_grad_method(grad_method)
        super().__init__(logits=logits, probs=probs)
        self.event_shape = (self.num_events,)

    @property
    def num_samples(self) -> int:
        """The number of categories (TorchRL's name)."""
        return self.num_events

    @property
    def mean(self) -> Any:
        """``probs``."""
        return self.probs

    @property
    def mode(self) -> Any:
        """One-hot of the most probable category (the first one on ties)."""
        return self._one_hot(self.xp.argmax(self.probs, axis=-1))

    def log_prob(self, value: Any) -> Any:
        return self._index_log_prob(self.xp.argmax(value, axis=-1))

    def _one_hot(self, index: Any) -> Any:
        return one_hot(index, self.num_events, self.logits.dtype, self.backend)

    def _sample(self, shape: Shape, rng: Generator) -> Any:
        return self._one_hot(super()._sample(shape, rng))

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        stop = self.backend.stop_gradient
        if self.grad_method is ReparamGradientStrategy.PassThrough:
            return self._sample(shape, rng) + (self.probs - stop(self.probs))
        scores = self._gumbel_scores(shape, rng)
        soft = log_softmax_and_softmax(scores, self.backend)[1]
        return self._one_hot(self.xp.argmax(scores, axis=-1)) + (soft - stop(soft))


class MaskedCategorical(Categorical):
    r"""A :class:`Categorical` restricted to the allowed outcomes.

    With a boolean ``mask`` (``True`` = allowed), disallowed logits become ``neg_inf``
    (probabilities are zeroed and renormalised first); with integer ``indices`` of shape
    ``(..., k)``, the distribution is over those ``k`` outcomes, and draws, ``mode`` and
    ``log_prob`` speak the original labels (entries equal to ``padding_value`` are
    padding, never drawn). ``log_prob`` of a disallowed outcome is ``neg_inf``; the
    entropy sums over allowed outcomes only, so it stays finite (also for a row with no
    allowed outcome, where it is 0, as TorchRL).

    Parameters
    ----------
    logits, probs : array, optional
        As :class:`Categorical`; exactly one.
    mask : bool array, optional
        Broadcastable to ``logits``. Exactly one of ``mask`` and ``indices``.
    indices : integer array, optional
        The allowed outcomes (assumed distinct within a row).
    neg_inf : float, default -inf
        The logit (and ``log_prob``) of disallowed outcomes.
    padding_value : int, optional
        The value marking padding in ``indices``.
    use_cross_entropy, padding_side
        Accepted for TorchRL compatibility; they change nothing here.

    References
    ----------
    ``torchrl.modules.MaskedCategorical``; TF-Agents ``MaskedCategorical``.
    """

    def __init__(
        self,
        logits: Any = None,
        probs: Any = None,
        *,
        mask: Any = None,
        indices: Any = None,
        neg_inf: float = -math.inf,
        padding_value: int | None = None,
        use_cross_entropy: bool = True,
        padding_side: str = "left",
    ) -> None:
        if (mask is None) == (indices is None):
            raise ValueError("exactly one of mask and indices must be given")
        backend, as_logits, x = _categorical_input(logits, probs, mask=mask, indices=indices)
        self.neg_inf, self.padding_value = float(neg_inf), padding_value
        self.use_cross_entropy, self.padding_side = use_cross_entropy, padding_side
        self.num_samples = int(x.shape[-1])
        self._mask, self._indices = mask, indices
        if mask is not None:
            x = self._apply_mask(x, mask, as_logits, backend)
        else:
            x = self._gather_indices(x, indices, as_logits, backend)
        self._set_logits(backend, x, True)

    def _apply_mask(self, x: Any, mask: Any, as_logits: bool, backend: Backend) -> Any:
        xp = backend.xp
        if not xp.isdtype(mask.dtype, "bool"):
            raise TypeError(f"mask must be a boolean array, got {mask.dtype}")
        if broadcast_shapes(mask=tuple(mask.shape), logits=tuple(x.shape)) != tuple(x.shape):
            raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to {tuple(x.shape)}")
        self._valid = mask
        if not as_logits:
            x = _log_normalise_probs(xp.where(mask, x, 0.0), xp)[0]
        return xp.where(mask, x, self.neg_inf)

    def _gather_indices(self, x: Any, indices: Any, as_logits: bool, backend: Backend) -> Any:
        xp = backend.xp
        if not xp.isdtype(indices.dtype, "integral"):
            raise TypeError(f"indices must be an integer array, got {indices.dtype}")
        if indices.ndim < 1:
            raise ValueError("indices must have a last axis of allowed outcomes")
        self._valid = None
        if self.padding_value is not None:
            self._valid = indices != self.padding_value
            indices = xp.where(self._valid, indices, 0)
        x = gather_last(x, indices, xp)
        if not as_logits:
            kept = x if self._valid is None else xp.where(self._valid, x, 0.0)
            x = _log_normalise_probs(kept, xp)[0]
        return x if self._valid is None else xp.where(self._valid, x, self.neg_inf)

    @property
    def mask(self) -> Any:
        """The boolean mask (``ValueError`` when the distribution was given ``indices``)."""
        if self._mask is None:
            raise ValueError("this MaskedCategorical was built from indices, not a mask")
        return self._mask

    @property
    def indices(self) -> Any:
        """The allowed outcomes (``None`` when the distribution was given a ``mask``)."""
        return self._indices

    @property
    def mode(self) -> Any:
        return self._label(super().mode)

    def log_prob(self, value: Any) -> Any:
        xp = self.xp
        if self._indices is None:
            lp = self._index_log_prob(value)
            return xp.where(xp.isfinite(lp), lp, self.neg_inf)
        hits = self._indices == value[..., None]
        position = xp.argmax(xp.astype(hits, xp.int64), axis=-1)
        lp = self._index_log_prob(position)
        return xp.where(xp.any(hits, axis=-1), lp, self.neg_inf)

    def entropy(self) -> Any:
        xp = self.xp
        keep = xp.isfinite(self.logits)
        if self._valid is not None:
            keep = keep & self._valid
        floor = float(xp.finfo(self.logits.dtype).min)
        logits, probs = log_softmax_and_softmax(xp.where(keep, self.logits, floor), self.backend)
        entropy = -xp.sum(logits * probs, axis=-1)
        return xp.where(xp.any(keep, axis=-1), entropy, 0.0)

    def _sample(self, shape: Shape, rng: Generator) -> Any:
        return self._label(super()._sample(shape, rng))

    def _label(self, position: Any) -> Any:
        """The outcome label of ``position`` (itself, unless built from ``indices``)."""
        if self._indices is None:
            return position
        return gather_last(self._indices, position[..., None], self.xp)[..., 0]
