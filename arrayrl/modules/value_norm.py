r"""Value normalisers: running location and scale of value targets, written once with ``xp``.

The three normalisers of TorchRL 0.14.1 (``torchrl.modules.value_norm``), with its
names, keyword-only arguments, defaults and buffer names:

- :class:`PopArtValueNorm`: exponential moving averages of the mean and the mean of
  squares, debiased (van Hasselt et al. 2016, "Learning values across many orders of
  magnitude", https://arxiv.org/abs/1602.07714; the value normaliser of MAPPO, Yu et al.
  2022, https://arxiv.org/abs/2103.01955);
- :class:`RunningValueNorm`: the exact mean and population variance of every target
  seen, merged batch by batch (Chan, Golub & LeVeque 1979);
- :class:`PercentileValueNorm`: moving averages of a low and a high quantile, scaled by
  their clamped span (DreamerV3's return normalisation, Hafner et al. 2023,
  https://arxiv.org/abs/2301.04104).

A critic uses ``normalize`` on its regression target and prediction (MAPPO's
``value_norm``); an actor-critic loss divides the advantage by ``scale()`` (PPO's and
A2C's ``advantage_norm``).

State
-----
The statistics are arrays (``state_dict()``, under TorchRL's buffer names), float32 as
TorchRL's buffers whatever the dtype of the targets (TorchRL folds a float64 batch into
its float32 buffers too). They start as NumPy zeros. While they are untouched (never
moved with :meth:`~ValueNorm.to`, never used), the first array they meet decides where
they live: a normaliser made without a ``device`` and fed torch tensors moves its zeros
to torch, as a TorchRL user expects of ``PopArtValueNorm()``. From then on an array of
another backend or device is refused with a ``TypeError`` naming both and saying to
call ``.to(...)``: moving filled statistics behind the user's back would hide a
host–device copy on every call, or a mix of two pipelines. ``device=`` (TorchRL's
argument, a torch device) puts them on torch at once.

Updates never write into an array: they rebind the statistics to new arrays, computed
without gradient from a detached copy of the targets, so the caller's arrays are never
modified and nothing a loss returned earlier changes.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl._validation import count, flag, hyperparameter
from arrayrl.backends import Backend, backend_of, get_backend

from ._params import convert_params
from .batchrenorm import _host_as

__all__ = ["PercentileValueNorm", "PopArtValueNorm", "RunningValueNorm", "ValueNorm"]


class ValueNorm(abc.ABC):
    """Base class: a running estimate of the location and scale of value targets.

    Subclasses implement :meth:`_initial_state` (the statistics' names and initial
    values), :meth:`_fold` (the statistics after one batch), :meth:`normalize`,
    :meth:`denormalize` and :meth:`scale`. Every array they take has the trailing shape
    :attr:`shape` (the per-element value shape, usually ``(1,)``); the dims before it are
    reduced by :meth:`update`.

    Parameters
    ----------
    shape : int or tuple of int, default 1
        The per-element value shape (an int ``n`` means ``(n,)``).
    epsilon : float, default 1e-5
        Numerical floor (of the variance for PopArt and the running normaliser).
    device : optional
        A torch device (TorchRL's argument): the statistics are made there, on torch.
        ``None``: NumPy, moved to the backend of the first array they meet.
    """

    shape: tuple[int, ...]
    epsilon: float

    def __init__(
        self, *, shape: int | tuple[int, ...] = 1, epsilon: float = 1e-5, device: Any = None
    ) -> None:
        self.shape = _checked_shape(shape)
        self.epsilon = hyperparameter("epsilon", epsilon, low=0.0, high=math.inf, high_open=True)
        self._stats: dict[str, Any] = dict(self._initial_state())
        self._placed = False
        if device is not None:
            self.to("torch", device)

    # -- what a subclass defines ---------------------------------------------------------
    @abc.abstractmethod
    def _initial_state(self) -> dict[str, np.ndarray]:
        """The statistics before any update, as float32 NumPy arrays by name."""

    @abc.abstractmethod
    def _fold(self, x: Any, axes: tuple[int, ...], n: int, xp: Any) -> dict[str, Any]:
        """The statistics after folding in ``x`` (``n >= 1`` elements per value entry,
        reduced over ``axes``; no gradient)."""

    @abc.abstractmethod
    def normalize(self, value_target: Any) -> Any:
        """``value_target`` standardised with the current statistics."""

    @abc.abstractmethod
    def denormalize(self, normalised_value: Any) -> Any:
        """The inverse of :meth:`normalize`: values back on the targets' scale."""

    @abc.abstractmethod
    def scale(self) -> Any:
        """The divisor :meth:`normalize` applies (shape :attr:`shape`), for quantities
        that must be rescaled without re-centring (advantages)."""

    # -- the update ----------------------------------------------------------------------
    def update(self, value_target: Any) -> None:
        """Fold a batch of value targets (shape ``(*B, *shape)``) into the statistics.

        The targets are read without gradient and never written. An empty batch (every
        row masked out by a loss) leaves the statistics as they are: it carries no
        information (TorchRL 0.14.1's PopArt and running normalisers fold in the NaN
        mean of an empty tensor, for good; its percentile normaliser raises).

        Raises
        ------
        TypeError
            Non-floating targets, or targets on another backend than placed statistics.
        ValueError
            Targets whose trailing shape is not :attr:`shape`.
        """
        backend, axes = self._follow(value_target, "value_target")
        x = backend.stop_gradient(value_target)
        n = math.prod(x.shape[a] for a in axes)
        if n == 0:
            return
        self._stats = self._fold(x, axes, n, backend.xp)

    def _check_trailing_shape(self, x: Any, name: str = "value_target") -> tuple[int, ...]:
        """The leading axes of ``x`` (those :meth:`update` reduces); ``ValueError`` naming
        :attr:`shape` and what was given unless ``x``'s trailing shape is :attr:`shape`."""
        k = len(self.shape)
        got = tuple(x.shape[-k:]) if x.ndim >= k else tuple(x.shape)
        if x.ndim < k or got != self.shape:
            raise ValueError(
                f"{type(self).__name__} was initialised with shape={self.shape} but got a "
                f"{name} with trailing shape {got} (shape {tuple(x.shape)}); it must end "
                f"with {self.shape}"
            )
        return tuple(range(x.ndim - k))

    def _follow(self, x: Any, name: str) -> tuple[Backend, tuple[int, ...]]:
        """``(x's backend, x's leading axes)`` after checking ``x``: a floating array
        (``TypeError``) ending with :attr:`shape` (``ValueError``), on the statistics'
        backend. Untouched statistics move to ``x``'s backend; placed ones on another
        backend or device raise ``TypeError``. Nothing moves when a check fails."""
        backend = backend_of(**{name: x})
        if not backend.xp.isdtype(x.dtype, "real floating"):
            raise TypeError(
                f"{type(self).__name__}: {name} must be a floating-point array, got dtype {x.dtype}"
            )
        axes = self._check_trailing_shape(x, name)
        own = self.backend
        if backend != own:
            if self._placed:
                raise TypeError(
                    f"{type(self).__name__} holds its statistics on {own.name} "
                    f"({own.device}), but {name} is on {backend.name} ({backend.device}); "
                    f"move the normaliser first: .to({backend.name!r}, device=...) "
                    "(a loss's loss.to(...) moves the normalisers it owns)"
                )
            self._stats = convert_params(self._stats, backend, requires_grad=False)
        self._placed = True
        return backend, axes

    def match_backend(self, like: Any, name: str = "advantage") -> ValueNorm:
        """Check ``like`` (an array the statistics will meet, e.g. an advantage to divide
        by :meth:`scale`, called ``name`` in messages) as :meth:`update` does: untouched
        statistics move to its backend, placed ones elsewhere raise ``TypeError``.
        Returns ``self``."""
        self._follow(like, name)
        return self

    # -- state ---------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend (and device) of the statistics."""
        return backend_of(*self._stats.values())

    def __getattr__(self, name: str) -> Any:
        stats = self.__dict__.get("_stats", {})
        if name in stats:
            return stats[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def state_dict(self) -> dict[str, Any]:
        """``{name: array}``: the statistics under TorchRL's buffer names (the arrays
        themselves; updates rebind them, so what is returned never changes)."""
        return dict(self._stats)

    def load_state_dict(self, state: Mapping[str, Any]) -> ValueNorm:
        """Load statistics (from any backend, or a TorchRL normaliser's ``state_dict()``)
        into this normaliser's backend, device and dtype. Everything is checked first:
        ``KeyError`` for missing or unexpected names, ``ValueError`` for a shape that
        differs, ``TypeError`` for a non-floating entry. Returns ``self``."""
        own = self._stats
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own)
        if missing or unexpected:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: missing {missing}, unexpected {unexpected}"
            )
        host = {name: _host(name, state[name], type(self).__name__) for name in own}
        for name, leaf in own.items():
            if tuple(host[name].shape) != tuple(leaf.shape):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {name!r} has shape "
                    f"{tuple(host[name].shape)}, expected {tuple(leaf.shape)}"
                )
        self._stats = {name: _host_as(host[name], leaf) for name, leaf in own.items()}
        return self

    def to(self, backend: str | Backend, device: Any = None) -> ValueNorm:
        """Move the statistics to ``backend`` (a name or a :class:`Backend`) on
        ``device``, keeping their dtype; returns ``self``. They stay there: arrays of
        another backend are refused from then on."""
        target = get_backend(backend, device)
        self._stats = convert_params(self._stats, target, requires_grad=False)
        self._placed = True
        return self

    def _checked_input(self, x: Any, name: str) -> Any:
        """``x`` after the backend and trailing-shape checks (no silent broadcasting)."""
        self._follow(x, name)
        return x


class PopArtValueNorm(ValueNorm):
    r"""Debiased exponential moving averages of the mean and the mean of squares.

    After batches :math:`x_1, \dots, x_t` (each reduced over its leading dims to
    :math:`\bar x_s` and :math:`\overline{x^2}_s`):

    .. math::

        m_t = \beta m_{t-1} + (1 - \beta) \bar x_t, \quad
        q_t = \beta q_{t-1} + (1 - \beta) \overline{x^2}_t, \quad
        d_t = \beta d_{t-1} + (1 - \beta),

    from zeros. Dividing by the debiasing term :math:`d_t = 1 - \beta^t` (clamped at
    ``epsilon``) removes the pull towards the zero start:
    :math:`\mu = m_t / d_t`, :math:`\sigma^2 = \max(q_t / d_t - \mu^2, \epsilon)`, and
    ``normalize(x) = (x − μ) / σ``, ``denormalize(y) = y·σ + μ``, ``scale() = σ``.

    van Hasselt et al. 2016, "Learning values across many orders of magnitude"
    (https://arxiv.org/abs/1602.07714, the adaptive rescaling of PopArt); the value
    normaliser of MAPPO (Yu et al. 2022), whose default ``β = 0.99999`` this keeps.

    Parameters
    ----------
    shape : int or tuple of int, default 1
    beta : float, default 0.99999
        Decay of the moving averages, in ``[0, 1]`` (higher adapts more slowly).
    epsilon : float, default 1e-5
        Floor of the variance and of the debiasing term.
    device : optional
        See :class:`ValueNorm`.

    Statistics (``state_dict()``): ``running_mean`` and ``running_mean_sq`` (shape
    ``shape``), ``debiasing_term`` (a 0-d array), float32.
    """

    def __init__(
        self,
        *,
        shape: int | tuple[int, ...] = 1,
        beta: float = 0.99999,
        epsilon: float = 1e-5,
        device: Any = None,
    ) -> None:
        self.beta = hyperparameter("beta", beta, low=0.0, high=1.0)
        super().__init__(shape=shape, epsilon=epsilon, device=device)

    def _initial_state(self) -> dict[str, np.ndarray]:
        zeros = np.zeros(self.shape, dtype=np.float32)
        return {
            "running_mean": zeros,
            "running_mean_sq": zeros.copy(),
            "debiasing_term": np.zeros((), dtype=np.float32),
        }

    def _fold(self, x: Any, axes: tuple[int, ...], n: int, xp: Any) -> dict[str, Any]:
        mean, mean_sq = (xp.mean(x, axis=axes), xp.mean(x * x, axis=axes)) if axes else (x, x * x)
        old = self._stats
        return {
            "running_mean": _moving_average(old["running_mean"], mean, self.beta, xp),
            "running_mean_sq": _moving_average(old["running_mean_sq"], mean_sq, self.beta, xp),
            "debiasing_term": old["debiasing_term"] * self.beta + (1.0 - self.beta),
        }

    def _mean_var(self) -> tuple[Any, Any]:
        """``(μ, σ²)``: the debiased mean and the variance clamped at ``epsilon``."""
        stats = self._stats
        xp = self.backend.xp
        debias = xp.clip(stats["debiasing_term"], min=self.epsilon)
        mean = stats["running_mean"] / debias
        mean_sq = stats["running_mean_sq"] / debias
        return mean, xp.clip(mean_sq - mean * mean, min=self.epsilon)

    def normalize(self, value_target: Any) -> Any:
        """``(x − μ) / σ``."""
        x = self._checked_input(value_target, "value_target")
        mean, var = self._mean_var()
        return (x - mean) / self.backend.xp.sqrt(var)

    def denormalize(self, normalised_value: Any) -> Any:
        """``y·σ + μ``."""
        y = self._checked_input(normalised_value, "normalised_value")
        mean, var = self._mean_var()
        return y * self.backend.xp.sqrt(var) + mean

    def scale(self) -> Any:
        """``σ``."""
        return self.backend.xp.sqrt(self._mean_var()[1])

    def __repr__(self) -> str:
        return f"PopArtValueNorm(shape={self.shape}, beta={self.beta}, epsilon={self.epsilon})"


class RunningValueNorm(ValueNorm):
    r"""The exact mean and population variance of every target seen (no decay).

    With ``n`` targets seen so far (mean :math:`\mu`, sum of squared deviations
    :math:`M_2`) and a batch of :math:`n_b` (mean :math:`\mu_b`, population variance
    :math:`v_b`), the parallel update of Chan, Golub & LeVeque (1979):

    .. math::

        \delta = \mu_b - \mu, \quad n' = n + n_b, \quad
        \mu' = \mu + \delta\, n_b / n', \quad
        M_2' = M_2 + v_b n_b + \delta^2\, n n_b / n'.

    ``normalize(x) = (x − μ) / σ`` with :math:`\sigma^2 = \max(M_2 / \max(n, 1),
    \epsilon)` (the population variance: this is normalisation, not inference),
    ``denormalize(y) = y·σ + μ``, ``scale() = σ``.

    Parameters
    ----------
    shape : int or tuple of int, default 1
    epsilon : float, default 1e-5
        Floor of the variance.
    device : optional
        See :class:`ValueNorm`.

    Statistics (``state_dict()``): ``mean`` and ``m2`` (shape ``shape``), ``count`` (a
    0-d array), float32 as TorchRL's (so ``count`` is exact up to 2**24 targets).
    """

    def _initial_state(self) -> dict[str, np.ndarray]:
        zeros = np.zeros(self.shape, dtype=np.float32)
        return {"mean": zeros, "m2": zeros.copy(), "count": np.zeros((), dtype=np.float32)}

    def _fold(self, x: Any, axes: tuple[int, ...], n: int, xp: Any) -> dict[str, Any]:
        if axes:
            batch_mean, batch_var = xp.mean(x, axis=axes), xp.var(x, axis=axes, correction=0)
        else:
            batch_mean, batch_var = x, xp.zeros_like(x)
        old = self._stats
        seen, batch = old["count"], float(n)
        total = seen + batch
        delta = batch_mean - old["mean"]
        mean = old["mean"] + delta * (batch / total)
        m2 = old["m2"] + batch_var * batch + delta * delta * (seen * batch / total)
        return {
            "mean": xp.astype(mean, old["mean"].dtype),
            "m2": xp.astype(m2, old["m2"].dtype),
            "count": total,
        }

    def _std(self) -> Any:
        """``σ = sqrt(max(M₂ / max(n, 1), ε))``."""
        xp = self.backend.xp
        denom = xp.clip(self._stats["count"], min=1.0)
        return xp.sqrt(xp.clip(self._stats["m2"] / denom, min=self.epsilon))

    def normalize(self, value_target: Any) -> Any:
        """``(x − μ) / σ``."""
        x = self._checked_input(value_target, "value_target")
        return (x - self._stats["mean"]) / self._std()

    def denormalize(self, normalised_value: Any) -> Any:
        """``y·σ + μ``."""
        y = self._checked_input(normalised_value, "normalised_value")
        return y * self._std() + self._stats["mean"]

    def scale(self) -> Any:
        """``σ``."""
        return self._std()

    def __repr__(self) -> str:
        return f"RunningValueNorm(shape={self.shape}, epsilon={self.epsilon})"


class PercentileValueNorm(ValueNorm):
    r"""Moving averages of a low and a high quantile; the scale is their clamped span.

    For each batch (flattened to ``(N, *shape)``) the quantiles
    :math:`p_{lo}, p_{hi}` of each value entry are computed with linear interpolation
    between order statistics (``torch.quantile``'s default: position
    :math:`q (N - 1)` in the sorted batch), and the moving averages step towards them:

    .. math::

        L \leftarrow L + r (p_{lo} - L), \quad H \leftarrow H + r (p_{hi} - H), \quad
        S = \max(H - L, s_{min}).

    ``normalize(x) = x / S`` (or ``(x − L) / S`` with ``center``), ``scale() = S``.
    The floor :math:`s_{min}` scales large returns down without amplifying small,
    noisy ones, which keeps a fixed entropy coefficient meaningful across reward scales:
    Hafner et al. 2023, "Mastering Diverse Domains through World Models" (DreamerV3),
    https://arxiv.org/abs/2301.04104.

    Parameters
    ----------
    shape : int or tuple of int, default 1
    quantiles : (float, float), default (0.05, 0.95)
        ``0 <= low < high <= 1``.
    rate : float, default 0.01
        Step of the moving averages towards the batch's quantiles, in ``[0, 1]``.
    min_scale : float, default 1.0
        Floor of the scale, ``> 0``.
    center : bool, default False
        Subtract ``L`` in :meth:`normalize` (maps the tracked range onto ``[0, 1]``).
    epsilon : float, default 1e-5
        Unused (``min_scale`` bounds the divisor); kept as TorchRL's.
    device : optional
        See :class:`ValueNorm`.

    Statistics (``state_dict()``): ``low`` and ``high`` (shape ``shape``), float32; the
    batch is cast to their dtype before the quantiles (as TorchRL). A NaN in a column
    makes that column's quantiles NaN (as ``torch.quantile``).
    """

    def __init__(
        self,
        *,
        shape: int | tuple[int, ...] = 1,
        quantiles: tuple[float, float] = (0.05, 0.95),
        rate: float = 0.01,
        min_scale: float = 1.0,
        center: bool = False,
        epsilon: float = 1e-5,
        device: Any = None,
    ) -> None:
        self.quantiles = _checked_quantiles(quantiles)
        self.rate = hyperparameter("rate", rate, low=0.0, high=1.0)
        self.min_scale = hyperparameter(
            "min_scale", min_scale, low=0.0, high=math.inf, low_open=True, high_open=True
        )
        self.center = flag("center", center)
        super().__init__(shape=shape, epsilon=epsilon, device=device)

    def _initial_state(self) -> dict[str, np.ndarray]:
        zeros = np.zeros(self.shape, dtype=np.float32)
        return {"low": zeros, "high": zeros.copy()}

    def _fold(self, x: Any, axes: tuple[int, ...], n: int, xp: Any) -> dict[str, Any]:
        old = self._stats
        flat = xp.reshape(xp.astype(x, old["low"].dtype), (n, *self.shape))
        batch_low, batch_high = _quantiles(flat, self.quantiles, xp)
        return {
            "low": _lerp(old["low"], batch_low, self.rate),
            "high": _lerp(old["high"], batch_high, self.rate),
        }

    def normalize(self, value_target: Any) -> Any:
        """``x / S``, or ``(x − L) / S`` with ``center``."""
        x = self._checked_input(value_target, "value_target")
        if self.center:
            x = x - self._stats["low"]
        return x / self.scale()

    def denormalize(self, normalised_value: Any) -> Any:
        """``y·S``, or ``y·S + L`` with ``center``."""
        y = self._checked_input(normalised_value, "normalised_value") * self.scale()
        return y + self._stats["low"] if self.center else y

    def scale(self) -> Any:
        """``S = max(H − L, min_scale)``."""
        stats = self._stats
        return self.backend.xp.clip(stats["high"] - stats["low"], min=self.min_scale)

    def __repr__(self) -> str:
        return (
            f"PercentileValueNorm(shape={self.shape}, quantiles={self.quantiles}, "
            f"rate={self.rate}, min_scale={self.min_scale}, center={self.center})"
        )


# -- helpers -------------------------------------------------------------------------------
def _checked_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a non-empty tuple of positive ints (an int ``n`` is ``(n,)``)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if not dims:
        raise ValueError("shape must have at least one dim, got ()")
    return tuple(count(f"shape[{i}]", d) for i, d in enumerate(dims))


def _checked_quantiles(quantiles: Any) -> tuple[float, float]:
    """``(low, high)`` as floats with ``0 <= low < high <= 1`` (``ValueError`` naming
    ``quantiles`` otherwise, as TorchRL)."""
    try:
        low, high = quantiles
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be a pair (low, high), got {quantiles!r}") from None
    low = hyperparameter("quantiles[0]", low, low=0.0, high=1.0)
    high = hyperparameter("quantiles[1]", high, low=0.0, high=1.0)
    if not low < high:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}.")
    return low, high


def _moving_average(old: Any, new: Any, beta: float, xp: Any) -> Any:
    """``β·old + (1 − β)·new`` in ``old``'s dtype (``new`` may be wider, as TorchRL
    folds a float64 batch into float32 buffers)."""
    return xp.astype(old * beta + (1.0 - beta) * new, old.dtype)


def _lerp(start: Any, end: Any, weight: float) -> Any:
    """``start + w (end − start)``, written as ``torch.lerp`` does (from the nearer end,
    so that ``w = 1`` gives ``end`` exactly)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _quantiles(flat: Any, quantiles: tuple[float, ...], xp: Any) -> list[Any]:
    """The ``quantiles`` of ``flat`` along axis 0 by linear interpolation, as
    ``torch.quantile`` computes them in ``flat``'s dtype: the position
    ``q (N − 1)`` (``q`` rounded to float32 first, as TorchRL's ``_q`` buffer) in the
    sorted column, between its two neighbours; a column holding NaN gives NaN."""
    n = flat.shape[0]
    host_dtype = np.float64 if flat.dtype == xp.float64 else np.float32
    ordered = xp.sort(flat, axis=0)
    has_nan = xp.any(xp.isnan(flat), axis=0)
    nan = xp.full_like(ordered[0, ...], math.nan)
    found = []
    for q in quantiles:
        position = host_dtype(np.float32(q)) * host_dtype(n - 1)
        below, above = int(np.floor(position)), int(np.ceil(position))
        weight = float(position - host_dtype(below))
        value = _lerp(ordered[below, ...], ordered[above, ...], weight)
        found.append(xp.where(has_nan, nan, value))
    return found


def _host(name: str, value: Any, owner: str) -> np.ndarray:
    """A state entry as a NumPy array; ``TypeError`` unless it is a floating array."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"{owner}.load_state_dict: {name!r} must be an array, got {value!r}")
    host = np.asarray(backend_of(value).to_numpy(value))
    if not np.issubdtype(host.dtype, np.floating):
        raise TypeError(
            f"{owner}.load_state_dict: {name!r} must be a floating-point array, got {host.dtype}"
        )
    return host
