r"""Element-wise value transforms: ``symlog`` and its inverse ``symexp``.

DreamerV3 (Hafner, Pasukonis, Ba & Lillicrap 2023, "Mastering Diverse Domains through
World Models", https://arxiv.org/abs/2301.04104, eq. 1) squashes targets of unknown scale
with the symmetric logarithm, which is the identity near zero and logarithmic far from it:

.. math::

    \operatorname{symlog}(x) = \operatorname{sign}(x)\,\log(1 + |x|), \qquad
    \operatorname{symexp}(x) = \operatorname{sign}(x)\,(e^{|x|} - 1).

Both have derivative 1 at the origin; written with ``sign``, autograd would give 0 there
(``sign`` is flat), so the origin passes ``x`` itself through, as TorchRL 0.14.1's
``torchrl.modules.functional`` does. Written once with the Array API: the result has the
input's shape, dtype and device on every backend, and is differentiable on torch.
"""

from __future__ import annotations

from typing import Any

from arrayrl._validation import floating_array

__all__ = ["symexp", "symlog"]


def symlog(value: Any) -> Any:
    r""":math:`\operatorname{sign}(x)\log(1 + |x|)` element-wise (DreamerV3, eq. 1).

    Parameters
    ----------
    value : array
        Floating input of any shape and backend.

    Returns
    -------
    array
        Same shape, dtype and device; the gradient at 0 is 1.

    Raises
    ------
    TypeError
        For an integer or boolean ``value``.
    """
    xp = floating_array("value", value, owner="symlog").xp
    compressed = xp.sign(value) * xp.log1p(xp.abs(value))
    return xp.where(value == 0, value, compressed)


def symexp(value: Any) -> Any:
    r""":math:`\operatorname{sign}(x)(e^{|x|} - 1)` element-wise, the inverse of
    :func:`symlog` (DreamerV3, eq. 1).

    Parameters
    ----------
    value : array
        Floating input in symlog space, of any shape and backend.

    Returns
    -------
    array
        Same shape, dtype and device; the gradient at 0 is 1.

    Raises
    ------
    TypeError
        For an integer or boolean ``value``.
    """
    xp = floating_array("value", value, owner="symexp").xp
    expanded = xp.sign(value) * xp.expm1(xp.abs(value))
    return xp.where(value == 0, value, expanded)
