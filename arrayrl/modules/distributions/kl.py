"""``kl_divergence(p, q)`` for the pairs with a closed form."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._base import Distribution, sum_rightmost
from .continuous import IndependentNormal, Normal, TanhNormal
from .discrete import Categorical

__all__ = ["kl_divergence"]


def _kl_normal_elementwise(p: Any, q: Any, xp: Any) -> Any:
    r""":math:`\tfrac12\big(r + ((\mu_p - \mu_q)/\sigma_q)^2 - 1 - \log r\big)`,
    :math:`r = (\sigma_p/\sigma_q)^2`."""
    var_ratio = (p.scale / q.scale) ** 2
    t1 = ((p.loc - q.loc) / q.scale) ** 2
    return 0.5 * (var_ratio + t1 - 1.0 - xp.log(var_ratio))


def _kl_normal(p: Normal, q: Normal) -> Any:
    return _kl_normal_elementwise(p, q, p.xp)


def _kl_independent_normal(p: IndependentNormal, q: IndependentNormal) -> Any:
    if p.event_dim != q.event_dim:
        raise NotImplementedError(
            "kl_divergence(IndependentNormal, IndependentNormal) needs the same event_dim, "
            f"got {p.event_dim} and {q.event_dim}"
        )
    return sum_rightmost(_kl_normal_elementwise(p, q, p.xp), p.event_dim, p.xp)


def _kl_categorical(p: Categorical, q: Categorical) -> Any:
    r""":math:`\sum_k p_k (\log p_k - \log q_k)`: terms with ``p_k = 0`` are 0, terms with
    ``p_k > 0 = q_k`` are ``+inf``; the double ``where`` keeps gradients finite."""
    xp = p.xp
    p_pos, q_pos = p.probs > 0, q.probs > 0
    both = p_pos & q_pos
    diff = xp.where(both, p.logits, 0.0) - xp.where(both, q.logits, 0.0)
    terms = xp.where(p_pos & ~q_pos, math.inf, p.probs * diff)
    return xp.sum(terms, axis=-1)


def _kl_tanh_normal(p: TanhNormal, q: TanhNormal) -> Any:
    r"""The KL of the pre-tanh normals: KL is invariant under a bijection both share, so
    two TanhNormals on the same box have the divergence of their underlying normals
    (torch's ``_kl_transformed_transformed``, which TorchRL's KL-PEN uses). The boxes
    must be provably equal without reading device memory: equal numbers, or the same
    ``low`` / ``high`` objects."""
    same_box = all(
        a is b or (_is_number(a) and _is_number(b) and a == b)
        for a, b in ((p.low, q.low), (p.high, q.high))
    )
    if not same_box or p.event_dims != q.event_dims:
        raise NotImplementedError(
            "kl_divergence(TanhNormal, TanhNormal) has a closed form only for the same box "
            "(low, high) and event_dims; estimate it by sampling"
        )
    return sum_rightmost(_kl_normal_elementwise(p, q, p.xp), p.event_dims, p.xp)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


#: (type of p, type of q, function); the first pair matching by ``isinstance`` is used.
_REGISTRY: list[tuple[type, type, Callable[[Any, Any], Any]]] = [
    (IndependentNormal, IndependentNormal, _kl_independent_normal),
    (Normal, Normal, _kl_normal),
    (Categorical, Categorical, _kl_categorical),
    (TanhNormal, TanhNormal, _kl_tanh_normal),
]


def kl_divergence(p: Distribution, q: Distribution) -> Any:
    r"""The Kullback-Leibler divergence :math:`KL(p \| q) = E_p[\log p(X) - \log q(X)]`,
    of shape ``batch_shape``, for the pairs with a closed form.

    Pairs: ``Normal``/``Normal``; ``IndependentNormal``/``IndependentNormal`` (same
    ``event_dim``); any two of ``Categorical``, ``OneHotCategorical`` and
    ``MaskedCategorical`` (``+inf`` where ``q`` gives zero probability to an outcome of
    ``p``); ``TanhNormal``/``TanhNormal`` on the same box (the KL of the pre-tanh normals).

    Raises
    ------
    NotImplementedError
        For any other pair (estimate it by sampling instead).

    References
    ----------
    ``torch.distributions.kl_divergence``.
    """
    for type_p, type_q, kl in _REGISTRY:
        if isinstance(p, type_p) and isinstance(q, type_q):
            return kl(p, q)
    raise NotImplementedError(
        f"no closed-form kl_divergence for ({type(p).__name__}, {type(q).__name__})"
    )
