r"""DreamerV3's categorical scalar representation: two-hot codes over symexp bins.

DreamerV3 (Hafner, Pasukonis, Ba & Lillicrap 2023, "Mastering Diverse Domains through
World Models", https://arxiv.org/abs/2301.04104, section 3 and eqs. 9-10) predicts
rewards and returns of unknown scale as a softmax over a fixed support of ``K`` raw
values :math:`b_1 < \dots < b_K` (by default :math:`b = \operatorname{symexp}` of ``K``
evenly spaced points of :math:`[-20, 20]`). A target :math:`y` is coded by the two
nearest bins, with weights linear in :math:`y`:

.. math::

    \operatorname{twohot}(y)_i = \begin{cases}
        \frac{b_{k+1} - y}{b_{k+1} - b_k} & i = k \\
        \frac{y - b_k}{b_{k+1} - b_k} & i = k + 1 \\
        0 & \text{otherwise}
    \end{cases}, \qquad k = \max\{j : b_j \le y\},

the prediction is the expectation :math:`\hat y = \sum_i \operatorname{softmax}(z)_i\,
b_i`, and the loss the cross entropy
:math:`-\sum_i \operatorname{twohot}(y)_i \log\operatorname{softmax}(z)_i`.

Names, arguments and quirks follow TorchRL 0.14.1 (``torchrl/modules/models/
model_based.py``): a target on a bin takes that bin (and the bin above it with weight 0),
targets beyond the support saturate at its ends, the code is differentiable in the
target; the expectation pairs mirrored bins so that uniform probabilities over an
antisymmetric support decode to exactly zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from arrayrl._validation import floating_array
from arrayrl.backends import Backend, backend_of, get_backend

from .distributions._base import log_softmax_and_softmax
from .functional import symexp
from .layers import Layer

__all__ = ["SymExpTwoHot", "two_hot_cross_entropy", "two_hot_decode", "two_hot_encode"]

#: TorchRL's defaults: 255 bins over symexp([-20, 20])
_DEFAULT_NUM_BINS = 255
_DEFAULT_BIN_RANGE = 20.0


def _default_bins(
    num_bins: int = _DEFAULT_NUM_BINS,
    *,
    device: Any = None,
    dtype: Any = None,
    backend: str | Backend = "numpy",
) -> Any:
    r"""DreamerV3's support: ``symexp`` of ``num_bins`` evenly spaced points of
    :math:`[-20, 20]`, exactly antisymmetric (the negative half is mirrored).

    Parameters
    ----------
    num_bins : int, default 255
        At least 2; an odd count includes the bin 0.
    device : optional
        The backend's device (its default if ``None``).
    dtype : optional
        A dtype of the backend; ``None`` gives float32, as TorchRL (torch's default
        dtype), so float64 targets meet float32-rounded bins there too. Pass float64 for
        bins exact to double precision.
    backend : str or Backend, default ``"numpy"``
        The array library of the result (``"torch"`` reproduces TorchRL's bins to the bit).
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)):
        raise TypeError(f"num_bins must be an int, got {type(num_bins).__name__}")
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2, got {num_bins}")
    chosen = get_backend(backend, device)
    xp = chosen.xp
    dtype = xp.float32 if dtype is None else dtype
    half_size = num_bins // 2
    if num_bins % 2:
        grid = xp.linspace(
            -_DEFAULT_BIN_RANGE, 0.0, half_size + 1, dtype=dtype, device=chosen.device
        )
        half = symexp(grid)
        return xp.concat((half, -xp.flip(half[:-1])))
    step = 2 * _DEFAULT_BIN_RANGE / (num_bins - 1)
    grid = -_DEFAULT_BIN_RANGE + step * xp.arange(half_size, dtype=dtype, device=chosen.device)
    half = symexp(grid)
    return xp.concat((half, -xp.flip(half)))


def _unimix_probs(logits: Any, unimix: float) -> Any:
    r"""Categorical probabilities mixed with the uniform distribution (DreamerV3, section
    3: "1% unimix"): :math:`(1 - u)\,\operatorname{softmax}(z) + u / K` over the last axis
    of ``K`` classes; ``unimix`` :math:`u \in [0, 1)`."""
    unimix = _unit_fraction("unimix", unimix)
    backend = floating_array("logits", logits)
    probs = log_softmax_and_softmax(logits, backend)[1]
    if unimix:
        probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return probs


def two_hot_encode(x: Any, bins: Any) -> Any:
    r"""The two-hot code of raw scalars ``x`` on the ascending support ``bins``.

    Parameters
    ----------
    x : array
        Floating raw values, any shape.
    bins : array
        One-dimensional, ascending, at least 2 values (an array of ``x``'s backend, or a
        NumPy array / sequence); cast to ``x``'s dtype.

    Returns
    -------
    array
        Shape ``(*x.shape, len(bins))``, ``x``'s dtype and device: weights
        :math:`(b_{k+1} - y)/(b_{k+1} - b_k)` and :math:`(y - b_k)/(b_{k+1} - b_k)` on the
        bins :math:`b_k \le y < b_{k+1}` (the top pair for :math:`y = b_K`); ``x`` is
        first clipped to :math:`[b_1, b_K]`. Differentiable in ``x`` (zero gradient where
        it is clipped).
    """
    backend = floating_array("x", x)
    xp = backend.xp
    bins = _support(bins, x, backend, "two_hot_encode")
    size = bins.shape[0]
    x = xp.where(x < bins[0], bins[0], xp.where(x > bins[-1], bins[-1], x))
    at_or_below = xp.astype(x[..., None] >= bins, xp.int64)
    lower = xp.clip(xp.sum(at_or_below, axis=-1) - 1, min=0, max=size - 2)
    slots = xp.arange(size, device=backend.device)
    is_lower = slots == lower[..., None]
    is_upper = slots == (lower + 1)[..., None]
    lower_value = _pick(bins, is_lower, backend)
    upper_value = _pick(bins, is_upper, backend)
    upper_weight = (x - lower_value) / (upper_value - lower_value)
    lower_weight = 1 - upper_weight
    zero = xp.zeros((), dtype=x.dtype, device=backend.device)
    return xp.where(is_lower, lower_weight[..., None], zero) + xp.where(
        is_upper, upper_weight[..., None], zero
    )


def two_hot_decode(logits: Any, bins: Any) -> Any:
    r"""The expectation :math:`\sum_i \operatorname{softmax}(z)_i\,b_i` of the categorical
    over ``bins`` with ``logits`` :math:`z` (classes on the last axis).

    Mirrored bins are paired, :math:`\sum_{j} (p_{+j} - p_{-j})\,b_{+j} + p_{-j}\,(b_{+j}
    + b_{-j})` (plus the middle bin for an odd count), as TorchRL computes it, so that
    uniform probabilities over an antisymmetric support give exactly 0.

    Returns
    -------
    array
        ``logits.shape[:-1]``, ``logits``' dtype; ``ValueError`` unless ``bins`` is 1-D
        with ``logits.shape[-1]`` values.
    """
    backend = floating_array("logits", logits)
    xp = backend.xp
    bins = _support(bins, logits, backend, "two_hot_decode")
    size = bins.shape[0]
    if logits.ndim < 1 or logits.shape[-1] != size:
        raise ValueError(
            f"two_hot_decode: the last axis of logits {tuple(logits.shape)} must match the "
            f"{size} bins"
        )
    probs = log_softmax_and_softmax(logits, backend)[1]
    middle = size // 2
    lower, lower_bins = xp.flip(probs[..., :middle], axis=-1), xp.flip(bins[:middle])
    start = middle + size % 2
    upper, upper_bins = probs[..., start:], bins[start:]
    paired = (upper - lower) * upper_bins + lower * (upper_bins + lower_bins)
    expectation = xp.sum(paired, axis=-1)
    if size % 2:
        expectation = expectation + probs[..., middle] * bins[middle]
    return expectation


def two_hot_cross_entropy(logits: Any, target: Any, bins: Any) -> Any:
    r"""Unreduced :math:`-\sum_i \operatorname{twohot}(y)_i \log
    \operatorname{softmax}(z)_i` (DreamerV3, eq. 10) of raw targets ``target`` under
    ``logits`` over ``bins``.

    ``target`` has ``logits.shape[:-1]`` or that plus a trailing 1; the result has
    ``logits.shape[:-1]``. Any other shape raises ``ValueError`` (no broadcasting).
    """
    batch = tuple(logits.shape[:-1])
    if tuple(target.shape) == (*batch, 1):
        target = target[..., 0]
    if tuple(target.shape) != batch:
        raise ValueError(
            f"two_hot_cross_entropy: target must have shape {batch} or {(*batch, 1)} for "
            f"logits of shape {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    backend = floating_array("logits", logits)
    encoded = two_hot_encode(target, bins)
    log_probs = log_softmax_and_softmax(logits, backend)[0]
    return -backend.xp.sum(encoded * log_probs, axis=-1)


# -- helpers ------------------------------------------------------------------------------------
def _pick(values: Any, one_hot: Any, backend: Backend) -> Any:
    """``values[k]`` where ``one_hot[..., k]`` is the single true entry (exact: a sum of
    one value and zeros)."""
    xp = backend.xp
    zero = xp.zeros((), dtype=values.dtype, device=backend.device)
    return xp.sum(xp.where(one_hot, values, zero), axis=-1)


def _support(bins: Any, like: Any, backend: Backend, owner: str) -> Any:
    """``bins`` as a 1-D array of ``like``'s backend, dtype and device."""
    if backend.is_array(bins):
        backend_of(**{"values": like, "bins": bins})  # same device, or TypeError
    else:
        if hasattr(bins, "shape") and hasattr(bins, "dtype"):
            host = backend_of(bins=bins).to_numpy(bins)
        else:
            host = np.asarray(bins, dtype=np.float64)
        bins = backend.from_numpy(np.asarray(host))
    if bins.ndim != 1 or bins.shape[0] < 2:
        raise ValueError(
            f"{owner}: bins must be one-dimensional with at least 2 values, got shape "
            f"{tuple(bins.shape)}"
        )
    return backend.xp.astype(bins, like.dtype)


def _unit_fraction(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 1)``; ``ValueError`` otherwise (TorchRL's check)."""
    from arrayrl._validation import hyperparameter

    return hyperparameter(name, value, low=0.0, high=1.0, high_open=True)


# -- the layer ----------------------------------------------------------------------------------


class SymExpTwoHot(Layer):
    r"""DreamerV3's categorical scalar head as a parameter-free arrayrl layer (TorchRL's
    ``SymExpTwoHot``): ``layer(logits)`` decodes the softmax over ``num_bins`` symexp bins
    to the expectation :math:`\sum_i \operatorname{softmax}(z)_i b_i` with a trailing unit
    axis, ``[..., K] -> [..., 1]``.

    The bins are a constant (:func:`_default_bins`, float32, cast to the logits' dtype),
    not a parameter: a target network holding this layer keeps them exact. ``encode``,
    ``decode`` and ``loss`` are :func:`two_hot_encode`, :func:`two_hot_decode` and
    :func:`two_hot_cross_entropy` over them.

    Parameters
    ----------
    num_bins : int, default 255
        At least 2.
    """

    def __init__(self, num_bins: int = _DEFAULT_NUM_BINS) -> None:
        super().__init__()
        self.bins = _default_bins(num_bins)
        self.num_bins = int(num_bins)

    def encode(self, target: Any) -> Any:
        """The two-hot code of raw ``target`` values, ``[..., K]``."""
        return two_hot_encode(target, self.bins)

    def decode(self, logits: Any) -> Any:
        """The expected raw value of ``logits`` ``[..., K]``, shape ``[...]``."""
        return two_hot_decode(logits, self.bins)

    def loss(self, logits: Any, target: Any) -> Any:
        """The unreduced two-hot cross entropy of ``target`` under ``logits``."""
        return two_hot_cross_entropy(logits, target, self.bins)

    def apply(self, params: Any, logits: Any) -> Any:
        """``decode(logits)[..., None]`` (``params`` is empty)."""
        return self.decode(logits)[..., None]

    def to(self, backend: Any, device: Any = None) -> SymExpTwoHot:
        """Nothing to move: the bins follow the logits' backend at each call."""
        return self

    def __repr__(self) -> str:
        return f"SymExpTwoHot(num_bins={self.num_bins})"
