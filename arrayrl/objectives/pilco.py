r"""PILCO's expected saturating cost: ``ExponentialQuadraticCost``.

Deisenroth & Rasmussen 2011, "PILCO: A Model-Based and Data-Efficient Approach to Policy
Search" (ICML), eqs. 24-25. The cost of a state :math:`x` near a target :math:`x^*` is
:math:`c(x) = 1 - \exp(-\tfrac12 (x - x^*)^\top W (x - x^*))`, a smooth 0-1 cost. For a
Gaussian state :math:`x \sim \mathcal N(m, S)` its expectation has a closed form; with
:math:`U = W^{1/2}` (the symmetric square root, negative eigenvalues of :math:`W` clamped
at 0), :math:`A = I + U S U + 10^{-5} I` and :math:`v = U (m - x^*)`:

.. math::

    \mathbb E[c(x)] = 1 - |A|^{-1/2} \exp\bigl(-\tfrac12\, v^\top A^{-1} v\bigr)
    \in [0, 1],

computed through the Cholesky factor :math:`A = L L^\top`: :math:`|A|^{-1/2} =
\prod_i L_{ii}^{-1}` and :math:`v^\top A^{-1} v = \|L^{-1} v\|^2`. It is differentiable
in :math:`m` and :math:`S`, which a policy search backpropagates through the predicted
state distribution. Arguments, keys and outputs follow TorchRL 0.14.1
(``torchrl/objectives/pilco.py``); the linear algebra is the Array API ``linalg``
extension, so it runs on every backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from arrayrl.backends import Backend, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from .common import LossModule

__all__ = ["ExponentialQuadraticCost"]

#: TorchRL's jitter on the diagonal of A
JITTER = 1e-5


class ExponentialQuadraticCost(LossModule):
    """The expected saturating cost of a Gaussian state (see the module docstring).

    Parameters
    ----------
    target : array, optional
        :math:`x^*`, shape ``(D,)`` or the batch's ``(*B, D)``; the origin by default.
    weights : array, optional
        :math:`W`, the ``(D, D)`` symmetric precision of the cost's distance; the identity
        by default.
    reduction : {"mean", "sum", "none"}, default "mean"
        How the per-state costs reduce (``"none"`` keeps ``(*B,)``).

    Keys (``set_keys``): ``loc`` (default ``("observation", "mean")``), the mean
    :math:`m` ``(*B, D)``; ``scale`` (default ``("observation", "var")``), the
    covariance matrix :math:`S` ``(*B, D, D)`` (a matrix, despite the name); ``loss_cost``
    (default ``"loss_cost"``), the output key.

    ``target`` and ``weights`` are held as given, as buffers (not trained; in
    :meth:`state_dict` under TorchRL's names ``"target"`` and ``"weights"``, moved by
    :meth:`to`), and used in the mean's dtype and backend.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        loc: Any = ("observation", "mean")
        scale: Any = ("observation", "var")
        loss_cost: Any = "loss_cost"

    out_keys: ClassVar[list[str]] = ["loss_cost"]

    def __init__(self, target: Any = None, weights: Any = None, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction
        self.register_buffer("target", _optional_array("target", target, min_ndim=1))
        self.register_buffer("weights", _optional_array("weights", weights, min_ndim=2))
        if self.weights is not None and (
            self.weights.ndim != 2 or self.weights.shape[0] != self.weights.shape[1]
        ):
            raise ValueError(
                "ExponentialQuadraticCost: weights must be a square (D, D) matrix, got shape "
                f"{tuple(self.weights.shape)}"
            )

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_cost``: the reduced :math:`\\mathbb E[c(x)]` of the module docstring."""
        tk = self.tensor_keys
        batch = self.working_copy(batch)
        mean = self.read(batch, tk.loc)
        covariance = self.read(batch, tk.scale)
        backend = _checked_state(mean, covariance, tk.loc, tk.scale)
        size = mean.shape[-1]
        weights = self._held(self.weights, backend, mean, "weights", (size, size))
        target = self._held(self.target, backend, mean, "target", None)
        cost = expected_saturating_cost(mean, covariance, target, weights, backend)
        batch_size = tuple(cost.shape) if self.reduction == "none" else ()
        return ArrayDict({tk.loss_cost: self.reduce_loss(cost)}, batch_size=batch_size)

    def _held(self, value: Any, backend: Backend, mean: Any, name: str, shape: Any) -> Any:
        """``target`` / ``weights`` on ``mean``'s backend and dtype (``None`` stays),
        checked against the state's dimension."""
        if value is None:
            return None
        if not backend.is_array(value):
            value = backend.from_numpy(np.asarray(backend_of(value).to_numpy(value)))
        if shape is None:  # the target: (D,) or the mean's shape
            shape = (
                tuple(value.shape) if tuple(value.shape) == tuple(mean.shape) else (mean.shape[-1],)
            )
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"ExponentialQuadraticCost: {name} has shape {tuple(value.shape)}, expected "
                f"{tuple(shape)} for a state of shape {tuple(mean.shape)}"
            )
        return backend.xp.astype(value, mean.dtype)


def expected_saturating_cost(
    mean: Any, covariance: Any, target: Any, weights: Any, backend: Backend
) -> Any:
    r""":math:`1 - |A|^{-1/2} \exp(-\tfrac12 v^\top A^{-1} v)` per state (module
    docstring); ``target`` / ``weights`` ``None`` mean the origin / the identity."""
    xp = backend.xp
    size = mean.shape[-1]
    eye = xp.eye(size, dtype=mean.dtype, device=backend.device)
    root = eye if weights is None else _psd_sqrt(weights, xp)
    diff = mean if target is None else mean - target
    a = eye + root @ (covariance @ root) + JITTER * eye
    chol = xp.linalg.cholesky(a)
    log_det = 2.0 * xp.sum(xp.log(xp.linalg.diagonal(chol)), axis=-1)
    v = root @ diff[..., None]  # U (m - x*)
    whitened = xp.linalg.solve(chol, v)[..., 0]  # L⁻¹ v
    quad = xp.sum(whitened * whitened, axis=-1)
    return 1.0 - xp.exp(-0.5 * log_det) * xp.exp(-0.5 * quad)


def _psd_sqrt(weights: Any, xp: Any) -> Any:
    r""":math:`V \operatorname{diag}(\sqrt{\max(\lambda, 0)}) V^\top` of the symmetric
    ``weights`` :math:`= V \operatorname{diag}(\lambda) V^\top`."""
    eigenvalues, eigenvectors = xp.linalg.eigh(weights)
    roots = xp.sqrt(xp.clip(eigenvalues, min=0.0))
    return (eigenvectors * roots[None, :]) @ xp.matrix_transpose(eigenvectors)


def _checked_state(mean: Any, covariance: Any, loc_key: Any, scale_key: Any) -> Backend:
    """The backend of the mean and covariance; errors naming the keys for integer
    arrays or shapes that are not ``(*B, D)`` and ``(*B, D, D)``."""
    backend = backend_of(**{"loc": mean, "scale": covariance})
    for key, value in ((loc_key, mean), (scale_key, covariance)):
        if not backend.xp.isdtype(value.dtype, "real floating"):
            raise TypeError(
                f"ExponentialQuadraticCost: {key!r} must be floating, got {value.dtype}"
            )
    if mean.ndim < 1:
        raise ValueError(f"ExponentialQuadraticCost: {loc_key!r} must be (*B, D), got a scalar")
    expected = (*mean.shape, mean.shape[-1])
    if tuple(covariance.shape) != expected:
        raise ValueError(
            f"ExponentialQuadraticCost: the covariance {scale_key!r} has shape "
            f"{tuple(covariance.shape)}, expected {expected} for the mean {loc_key!r} of "
            f"shape {tuple(mean.shape)}"
        )
    if mean.dtype != covariance.dtype:
        raise TypeError(
            f"ExponentialQuadraticCost: {loc_key!r} is {mean.dtype} and {scale_key!r} is "
            f"{covariance.dtype}; they must match"
        )
    return backend


def _optional_array(name: str, value: Any, *, min_ndim: int) -> Any:
    """``value`` when it is ``None`` or an array of at least ``min_ndim`` axes; a
    sequence becomes a float64 NumPy array; else ``TypeError`` / ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = np.asarray(value, dtype=np.float64)
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(
            f"ExponentialQuadraticCost: {name} must be an array or None, got {type(value).__name__}"
        )
    if value.ndim < min_ndim:
        raise ValueError(
            f"ExponentialQuadraticCost: {name} must have at least {min_ndim} dimension(s), "
            f"got shape {tuple(value.shape)}"
        )
    if not backend_of(**{name: value}).xp.isdtype(value.dtype, "real floating"):
        raise TypeError(f"ExponentialQuadraticCost: {name} must be floating, got {value.dtype}")
    return value
