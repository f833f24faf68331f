r"""DreamerV3 (Hafner, Pasukonis, Ba & Lillicrap 2023, "Mastering Diverse Domains through
World Models", https://arxiv.org/abs/2301.04104), as in TorchRL 0.14.1's
``torchrl/objectives/dreamer_v3.py``.

This file holds the KL balancing of the world model's categorical latents (section 3,
eqs. 5-6). With posterior logits :math:`z_q` (the representation model, which sees the
observation), prior logits :math:`z_p` (the dynamics predictor), ``sg`` the stop-gradient
and free nats :math:`f`:

.. math::

    \mathcal L_\text{dyn} = \max\bigl(f,\ \mathrm{KL}[\operatorname{sg}(q) \,\|\, p]\bigr),
    \qquad
    \mathcal L_\text{rep} = \max\bigl(f,\ \mathrm{KL}[q \,\|\, \operatorname{sg}(p)]\bigr),

the dynamics term training only the prior, the representation term only the posterior.
It also re-exports the scalar functions of DreamerV3's critic and reward heads
(:func:`symlog`, :func:`symexp`, :func:`two_hot_encode`, :func:`two_hot_decode`,
:func:`two_hot_cross_entropy`), as TorchRL's module does.
"""

from __future__ import annotations

from typing import Any

from arrayrl._validation import hyperparameter
from arrayrl.backends import Backend, backend_of
from arrayrl.modules.distributions._base import log_softmax_and_softmax
from arrayrl.modules.functional import symexp, symlog
from arrayrl.modules.model_based import (
    _floating_backend,
    _unimix_probs,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)

__all__ = [
    "categorical_kl_balanced",
    "categorical_kl_terms",
    "symexp",
    "symlog",
    "two_hot_cross_entropy",
    "two_hot_decode",
    "two_hot_encode",
]

#: the floor TorchRL puts under the probabilities of ``categorical_kl_balanced``
_PROBABILITY_FLOOR = 1e-8


def categorical_kl_terms(
    posterior_logits: Any,
    prior_logits: Any,
    free_nats: float = 1.0,
    unimix: float = 0.01,
) -> tuple[Any, Any]:
    r"""DreamerV3's dynamics and representation losses (eqs. 5-6), summed over the
    categoricals before the free-nats floor, averaged over the batch.

    With :math:`q, p` the posterior and prior probabilities mixed with ``unimix`` of the
    uniform distribution, per batch element (sums over the last two axes, categoricals
    and classes):

    .. math::

        d = \sum \operatorname{sg}(q)\,(\log \operatorname{sg}(q) - \log p), \qquad
        r = \sum q\,(\log q - \log \operatorname{sg}(p)),

    returning :math:`(\operatorname{mean} \max(f, d),\ \operatorname{mean} \max(f, r))`;
    ``free_nats=0`` applies no floor (as TorchRL's ``if free_nats``).

    Parameters
    ----------
    posterior_logits, prior_logits : array
        ``[..., num_categoricals, num_classes]``, the same shape, floating.
    free_nats : float, default 1.0
        The floor, in nats, non-negative.
    unimix : float, default 0.01
        In ``[0, 1)``.

    Returns
    -------
    (array, array)
        The scalar dynamics and representation losses.
    """
    backend = _checked_pair(posterior_logits, prior_logits, "categorical_kl_terms")
    free_nats = hyperparameter("free_nats", free_nats, low=0.0, high=float("inf"))
    posterior = _unimix_probs(posterior_logits, unimix)
    prior = _unimix_probs(prior_logits, unimix)
    xp = backend.xp
    log_posterior, log_prior = xp.log(posterior), xp.log(prior)
    sg = backend.stop_gradient
    dynamics = _sum_last_two(sg(posterior) * (sg(log_posterior) - log_prior), xp)
    representation = _sum_last_two(posterior * (log_posterior - sg(log_prior)), xp)
    if free_nats:
        dynamics = _floor(dynamics, free_nats, xp)
        representation = _floor(representation, free_nats, xp)
    return xp.mean(dynamics), xp.mean(representation)


def categorical_kl_balanced(
    posterior_logits: Any,
    prior_logits: Any,
    alpha: float = 0.8,
    free_bits: float = 1.0,
) -> Any:
    r"""The balanced KL of DreamerV2/V3 with a free-bits floor per categorical:

    .. math::

        \alpha\,\operatorname{mean}\max\bigl(f, \mathrm{KL}[\operatorname{sg}(q)\|p]\bigr)
        + (1 - \alpha)\,\operatorname{mean}\max\bigl(f, \mathrm{KL}[q\|\operatorname{sg}(p)]\bigr),

    each KL over the classes (last axis) of one categorical, the means over the
    categoricals and the batch; :math:`q = \max(10^{-8}, \operatorname{softmax}(z_q))`
    and likewise :math:`p` (TorchRL's floor, no unimix). Unlike
    :func:`categorical_kl_terms`, the floor applies to each categorical's KL.

    Parameters
    ----------
    posterior_logits, prior_logits : array
        ``[..., num_classes]`` (usually ``[..., num_categoricals, num_classes]``), the
        same shape, floating.
    alpha : float, default 0.8
        The weight of the prior-training term, in ``[0, 1]``.
    free_bits : float, default 1.0
        The floor, in nats, finite (applied always, as TorchRL).

    Returns
    -------
    array
        The scalar loss; at least ``free_bits`` (each mean is).
    """
    backend = _checked_pair(posterior_logits, prior_logits, "categorical_kl_balanced", ndim=1)
    alpha = hyperparameter("alpha", alpha, low=0.0, high=1.0)
    free_bits = hyperparameter("free_bits", free_bits, low=-float("inf"), high=float("inf"))
    xp = backend.xp
    posterior = _floored_probs(posterior_logits, backend)
    prior = _floored_probs(prior_logits, backend)
    sg = backend.stop_gradient
    prior_term = xp.sum(sg(posterior) * (xp.log(sg(posterior)) - xp.log(prior)), axis=-1)
    posterior_term = xp.sum(posterior * (xp.log(posterior) - xp.log(sg(prior))), axis=-1)
    prior_term = xp.mean(_floor(prior_term, free_bits, xp))
    posterior_term = xp.mean(_floor(posterior_term, free_bits, xp))
    return alpha * prior_term + (1.0 - alpha) * posterior_term


# -- helpers ------------------------------------------------------------------------------------
def _floor(value: Any, floor: float, xp: Any) -> Any:
    """``max(value, floor)`` with torch ``clamp_min``'s gradient: 1 where ``value >=
    floor``, 0 below; NaN stays NaN."""
    return xp.where(value < floor, floor, value)


def _floored_probs(logits: Any, backend: Backend) -> Any:
    """``max(softmax(logits), 1e-8)`` over the last axis."""
    probs = log_softmax_and_softmax(logits, backend)[1]
    return _floor(probs, _PROBABILITY_FLOOR, backend.xp)


def _sum_last_two(value: Any, xp: Any) -> Any:
    return xp.sum(xp.sum(value, axis=-1), axis=-1)


def _checked_pair(posterior: Any, prior: Any, owner: str, ndim: int = 2) -> Backend:
    """The backend of the two logit arrays; ``ValueError`` unless they have one shape of
    at least ``ndim`` axes (no broadcasting), ``TypeError`` unless floating."""
    backend = _floating_backend("posterior_logits", posterior)
    _floating_backend("prior_logits", prior)
    backend_of(posterior_logits=posterior, prior_logits=prior)
    if tuple(posterior.shape) != tuple(prior.shape):
        raise ValueError(
            f"{owner}: posterior_logits {tuple(posterior.shape)} and prior_logits "
            f"{tuple(prior.shape)} must have the same shape"
        )
    if posterior.ndim < ndim:
        axes = "[..., num_categoricals, num_classes]" if ndim == 2 else "[..., num_classes]"
        raise ValueError(f"{owner}: the logits must be {axes}, got shape {tuple(posterior.shape)}")
    return backend
