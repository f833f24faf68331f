"""Continuous distributions: ``Normal``, ``IndependentNormal``, ``TanhNormal``, ``Delta``
and ``TanhDelta``, with TorchRL 0.14.1's constructor arguments and numerics."""

from __future__ import annotations

import math
from typing import Any

from arrayrl.backends import Backend
from arrayrl.random import Generator

from ._base import (
    Distribution,
    Shape,
    as_param,
    as_shape,
    broadcast_shapes,
    check_event_dims,
    check_floating,
    find_backend,
    is_array_like,
    safe_atanh,
    safe_tanh,
    sum_rightmost,
)

__all__ = ["Delta", "IndependentNormal", "Normal", "TanhDelta", "TanhNormal"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


# -- Gaussian maths (element-wise) -------------------------------------------------


def _normal_log_prob(value: Any, loc: Any, scale: Any, xp: Any) -> Any:
    return -((value - loc) ** 2) / (2.0 * scale**2) - xp.log(scale) - _HALF_LOG_2PI


def _normal_entropy(scale: Any, xp: Any) -> Any:
    return 0.5 + _HALF_LOG_2PI + xp.log(scale)


def _require_array(x: Any, name: str) -> None:
    if not is_array_like(x):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")


def _loc_backend(loc: Any, **others: Any) -> Backend:
    """The backend of ``loc`` and ``others`` (``TypeError`` naming a mixed one), after
    checking that ``loc`` is a real floating array."""
    _require_array(loc, "loc")
    backend = find_backend(loc=loc, **others)
    check_floating(loc, "loc", backend.xp)
    return backend


def _loc_scale(loc: Any, scale: Any, backend: Backend) -> tuple[Any, Any]:
    """``loc`` and ``scale`` (made an array) broadcast together."""
    scale = as_param(scale, loc, "scale", backend)
    shape = broadcast_shapes(loc=tuple(loc.shape), scale=tuple(scale.shape))
    return _broadcast(loc, shape, backend), _broadcast(scale, shape, backend)


def _broadcast(x: Any, shape: Shape, backend: Backend) -> Any:
    return x if tuple(x.shape) == shape else backend.xp.broadcast_to(x, shape)


class _Gaussian(Distribution):
    """What :class:`Normal` and :class:`IndependentNormal` share; ``_event_dims`` trailing
    axes of ``loc`` form the event."""

    has_rsample = True
    has_entropy = True
    _event_dims = 0

    def _setup(self, backend: Backend, loc: Any, scale: Any, event_dims: int) -> None:
        self._event_dims = event_dims
        cut = loc.ndim - event_dims
        super().__init__(backend, tuple(loc.shape[:cut]), tuple(loc.shape[cut:]))
        self.loc, self.scale = loc, scale

    @property
    def mean(self) -> Any:
        """``loc``."""
        return self.loc

    @property
    def mode(self) -> Any:
        """``loc``."""
        return self.loc

    @property
    def deterministic_sample(self) -> Any:
        """The mean, ``loc``."""
        return self.loc

    @property
    def stddev(self) -> Any:
        """``scale``."""
        return self.scale

    @property
    def variance(self) -> Any:
        """``scale ** 2``."""
        return self.scale**2

    def log_prob(self, value: Any) -> Any:
        lp = _normal_log_prob(value, self.loc, self.scale, self.xp)
        return sum_rightmost(lp, self._event_dims, self.xp)

    def entropy(self) -> Any:
        return sum_rightmost(_normal_entropy(self.scale, self.xp), self._event_dims, self.xp)

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        dtype = self.xp.result_type(self.loc.dtype, self.scale.dtype)
        eps = rng.normal((*shape, *self.loc.shape), dtype)
        return self.loc + eps * self.scale


class Normal(_Gaussian):
    r"""The normal distribution :math:`\mathcal N(\mu, \sigma^2)`, element-wise.

    .. math::

        \log p(x) = -\frac{(x - \mu)^2}{2\sigma^2} - \log\sigma - \tfrac12\log 2\pi,
        \qquad H = \tfrac12 + \tfrac12\log 2\pi + \log\sigma

    ``rsample`` is ``mu + sigma * eps`` with ``eps`` standard normal. ``batch_shape`` is the
    broadcast shape of ``loc`` and ``scale``; ``event_shape`` is ``()``.

    Parameters
    ----------
    loc : array
        The mean :math:`\mu` (real floating dtype).
    scale : array, float or callable
        The standard deviation :math:`\sigma`; a callable is applied to ``loc``. Its sign
        is not checked (no host synchronisation).

    References
    ----------
    ``torch.distributions.Normal``.
    """

    def __init__(self, loc: Any, scale: Any) -> None:
        backend = _loc_backend(loc, scale=scale)
        self._setup(backend, *_loc_scale(loc, scale, backend), 0)


class IndependentNormal(_Gaussian):
    r"""A normal distribution whose last ``event_dim`` axes form one event.

    .. math:: \log p(x) = \sum_{\text{event axes}} \log \mathcal N(x_i; \mu_i, \sigma_i^2)

    and likewise for the entropy. With ``tanh_loc=True`` the location is squashed first,
    :math:`\mu \leftarrow a \tanh(\mu / a)` with ``a = upscale``.

    Parameters
    ----------
    loc : array
        The mean (real floating dtype).
    scale : array, float or callable
        The standard deviation; a callable is applied to ``loc``.
    upscale : float or array, default 5.0
        ``a`` above; used only with ``tanh_loc=True``.
    tanh_loc : bool, default False
        Squash the location as above. (TorchRL 0.14.1's constructor ignores this flag and
        applies the squash only in ``update``; arrayrl applies it here, as documented.)
    event_dim : int, default 1
        Number of trailing axes summed over.

    References
    ----------
    ``torchrl.modules.IndependentNormal`` (``torch.distributions.Independent`` of a
    ``Normal``).
    """

    def __init__(
        self,
        loc: Any,
        scale: Any,
        upscale: Any = 5.0,
        tanh_loc: bool = False,
        event_dim: int = 1,
    ) -> None:
        backend = _loc_backend(loc, scale=scale, upscale=upscale)
        self.upscale, self.tanh_loc = upscale, bool(tanh_loc)
        if self.tanh_loc:
            loc = upscale * backend.xp.tanh(loc / upscale)
        loc, scale = _loc_scale(loc, scale, backend)
        self._setup(backend, loc, scale, check_event_dims(event_dim, loc.ndim, "event_dim"))

    @property
    def event_dim(self) -> int:
        """Number of trailing axes forming the event."""
        return self._event_dims


# -- the tanh squashing onto a box ---------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _TanhBox:
    r"""``y = mid + half * tanh(x)``, mapping the real line onto ``(low, high)``.

    ``mid = (high + low) / 2`` and ``half = (high - low) / 2``; the affine step is skipped
    for the default box ``(-1, 1)`` given as numbers. ``safe`` clips ``tanh`` (and the
    argument of ``atanh``) to ``±(1 - r)`` (:func:`~._base.resolution`) as TorchRL's
    ``SafeTanhTransform``, so the inverse of an action at the bounds is finite.
    """

    def __init__(
        self, low: Any, high: Any, safe: bool, backend: Backend, always_affine: bool = False
    ) -> None:
        numbers = _is_number(low) and _is_number(high)
        if numbers and not high > low:
            raise ValueError(f"high must be strictly greater than low, got low={low}, high={high}")
        for name, bound in (("low", low), ("high", high)):
            if not _is_number(bound):
                _require_array(bound, name)
                check_floating(bound, name, backend.xp)
        self.low, self.high, self.safe, self.backend = low, high, bool(safe), backend
        self.affine = always_affine or not (numbers and low == -1.0 and high == 1.0)
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        self.log_half = math.log(self.half) if numbers else backend.xp.log(self.half)

    def forward(self, x: Any) -> Any:
        t = safe_tanh(x, self.backend) if self.safe else self.backend.xp.tanh(x)
        return self.mid + self.half * t if self.affine else t

    def inverse(self, y: Any) -> Any:
        u = (y - self.mid) / self.half if self.affine else y
        return safe_atanh(u, self.backend) if self.safe else self.backend.xp.atanh(u)

    def log_abs_det_jacobian(self, x: Any) -> Any:
        r""":math:`\log|dy/dx| = 2(\log 2 - x - \mathrm{softplus}(-2x)) + \log(\text{half})`."""
        ladj = 2.0 * (_LOG_2 - x - self.backend.softplus(-2.0 * x))
        return ladj + self.log_half if self.affine else ladj

    def shapes(self) -> dict[str, Shape]:
        """The shapes of ``low`` and ``high`` (``()`` for numbers), by name."""
        return {
            "low": tuple(getattr(self.low, "shape", ())),
            "high": tuple(getattr(self.high, "shape", ())),
        }


class _Bounded:
    """``low`` / ``high`` of a distribution squashed into a box by its ``_box``."""

    _box: _TanhBox

    @property
    def low(self) -> Any:
        """The lower bound."""
        return self._box.low

    @property
    def high(self) -> Any:
        """The upper bound."""
        return self._box.high


class TanhNormal(_Bounded, Distribution):
    r"""A normal variable squashed by ``tanh`` onto ``(low, high)``.

    With :math:`x \sim \mathcal N(\mu, \sigma^2)`, :math:`y = m + h \tanh x`,
    :math:`m = (\text{high} + \text{low})/2`, :math:`h = (\text{high} - \text{low})/2`:

    .. math::

        \log p(y) = \sum_{\text{event axes}} \Big[\log \mathcal N(x; \mu, \sigma^2)
            - 2\big(\log 2 - x - \mathrm{softplus}(-2x)\big) - \log h\Big],
        \qquad x = \operatorname{atanh}\frac{y - m}{h}

    With ``safe_tanh`` the ``tanh`` output and the ``atanh`` argument are clipped to
    ``±(1 - r)``, ``r`` = 1e-6 in float32 and 1e-15 in float64 (TorchRL's
    ``finfo.resolution``), so an action exactly at ``low`` or ``high`` has a finite
    log-probability and gradient. There is no closed-form entropy or mean, and, as in
    TorchRL 0.14.1, ``mode`` raises: use ``deterministic_sample`` (``m + h tanh(mu)``).

    With ``tanh_loc=True`` the location is first squashed, :math:`\mu \leftarrow a
    \tanh(\mu/a)` with ``a = upscale``, and, for bounds other than the default ``(-1, 1)``
    numbers, shifted by ``(high - low)/2 + low`` (TorchRL 0.14.1's parameterisation).

    Parameters
    ----------
    loc : array
        Location of the normal before squashing.
    scale : array, float or callable
        Its standard deviation; a callable is applied to the (squashed) ``loc``.
    upscale : float or array, default 5.0
        ``a`` above; used only with ``tanh_loc=True``.
    low, high : float or array, default -1.0 and 1.0
        The bounds (``high > low`` is checked when both are numbers).
    event_dims : int, optional
        Trailing axes forming the event; default ``min(1, loc.ndim)``.
    tanh_loc : bool, default False
    safe_tanh : bool, default True

    References
    ----------
    ``torchrl.modules.TanhNormal``; Haarnoja et al. (2018), *Soft Actor-Critic*,
    appendix C.
    """

    has_rsample = True
    has_entropy = False

    def __init__(
        self,
        loc: Any,
        scale: Any,
        upscale: Any = 5.0,
        low: Any = -1.0,
        high: Any = 1.0,
        event_dims: int | None = None,
        tanh_loc: bool = False,
        safe_tanh: bool = True,
    ) -> None:
        backend = _loc_backend(loc, scale=scale, upscale=upscale, low=low, high=high)
        self._box = _TanhBox(low, high, safe_tanh, backend)
        self.upscale, self.tanh_loc, self.safe_tanh = upscale, bool(tanh_loc), bool(safe_tanh)
        if self.tanh_loc:
            loc = backend.xp.tanh(loc / upscale) * upscale
            if self._box.affine:
                loc = loc + (high - low) / 2 + low
        loc, scale = _loc_scale(loc, scale, backend)
        shape = broadcast_shapes(loc=tuple(loc.shape), **self._box.shapes())
        loc, scale = _broadcast(loc, shape, backend), _broadcast(scale, shape, backend)
        if event_dims is None:
            event_dims = min(1, len(shape))
        self.event_dims = check_event_dims(event_dims, len(shape), "event_dims")
        cut = len(shape) - self.event_dims
        super().__init__(backend, shape[:cut], shape[cut:])
        self.loc, self.scale = loc, scale

    @property
    def deterministic_sample(self) -> Any:
        """``m + h tanh(loc)``: the squashed location (TorchRL's deterministic sample)."""
        return self._box.forward(self.loc)

    @property
    def mode(self) -> Any:
        """Not available in closed form (raises ``RuntimeError``, as TorchRL)."""
        raise RuntimeError(
            "TanhNormal has no analytical mode; use deterministic_sample for a deterministic action"
        )

    @property
    def mean(self) -> Any:
        """Not available in closed form (raises ``NotImplementedError``, as TorchRL)."""
        raise NotImplementedError(
            "TanhNormal has no closed-form mean; estimate it as the average of many samples"
        )

    def log_prob(self, value: Any) -> Any:
        return self._score(self._box.inverse(value))

    def rsample_and_log_prob(
        self, sample_shape: Any = (), *, rng: Generator | None = None
    ) -> tuple[Any, Any]:
        """``(y, log p(y))`` scored at the pre-tanh draw itself (not at ``atanh(y)``),
        so saturated draws keep the exact score, as TorchRL's method of that name."""
        x = self._preimage(sample_shape, rng, "rsample_and_log_prob")
        return self._box.forward(x), self._score(x)

    def sample_and_log_prob(
        self, sample_shape: Any = (), *, rng: Generator | None = None
    ) -> tuple[Any, Any]:
        """As :meth:`rsample_and_log_prob`, but the draw carries no gradient; the
        log-probability keeps its gradient with respect to ``loc`` and ``scale``."""
        stop = self.backend.stop_gradient
        x = stop(self._preimage(sample_shape, rng, "sample_and_log_prob"))
        return stop(self._box.forward(x)), self._score(x)

    def _score(self, x: Any) -> Any:
        lp = _normal_log_prob(x, self.loc, self.scale, self.xp)
        return sum_rightmost(lp - self._box.log_abs_det_jacobian(x), self.event_dims, self.xp)

    def _preimage(self, sample_shape: Any, rng: Any, method: str) -> Any:
        shape = as_shape(sample_shape)
        self._check_rng(rng, method)
        return self._normal_draw(shape, rng)

    def _normal_draw(self, shape: Shape, rng: Generator) -> Any:
        dtype = self.xp.result_type(self.loc.dtype, self.scale.dtype)
        eps = rng.normal((*shape, *self.loc.shape), dtype)
        return self.loc + eps * self.scale

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        return self._box.forward(self._normal_draw(shape, rng))


# -- point masses --------------------------------------------------------------------


def _point_log_prob(
    value: Any, point: Any, tolerances: tuple[float, float], n_event: int, backend: Backend
) -> Any:
    """``+inf`` where ``value`` matches ``point`` on every event entry within
    ``atol + rtol |point|``, ``-inf`` elsewhere."""
    xp = backend.xp
    atol, rtol = tolerances
    close = xp.abs(value - point) < atol + rtol * xp.abs(point)
    if n_event:
        close = xp.all(close, axis=tuple(range(-n_event, 0)))
    inf = backend.asarray(math.inf, dtype=xp.result_type(value.dtype, point.dtype))
    return xp.where(close, inf, -inf)


class Delta(Distribution):
    r"""A point mass at ``param``.

    .. math:: \log p(x) = +\infty \text{ if } |x - \theta| < \text{atol} + \text{rtol}
              |\theta| \text{ on every event entry, else } -\infty

    Samples (and reparameterised samples) are ``param`` itself; ``mean``, ``mode`` and
    ``deterministic_sample`` are ``param``. No entropy.

    Parameters
    ----------
    param : array
        The location :math:`\theta`.
    atol, rtol : float, default 1e-6
        Tolerances of the equality test in ``log_prob``.
    batch_shape, event_shape : tuple of int, optional
        If neither is given (or both are empty), the last axis of ``param`` is the event.

    References
    ----------
    ``torchrl.modules.Delta``.
    """

    has_rsample = True
    has_entropy = False

    def __init__(
        self,
        param: Any,
        atol: float = 1e-6,
        rtol: float = 1e-6,
        batch_shape: Shape | None = None,
        event_shape: Shape | None = None,
    ) -> None:
        _require_array(param, "param")
        backend = find_backend(param=param)
        batch_shape = tuple(batch_shape or ())
        event_shape = tuple(event_shape or ())
        if not batch_shape and not event_shape:
            batch_shape, event_shape = tuple(param.shape[:-1]), tuple(param.shape[-1:])
        super().__init__(backend, batch_shape, event_shape)
        self.param, self.atol, self.rtol = param, atol, rtol

    @property
    def mean(self) -> Any:
        """``param``."""
        return self.param

    @property
    def mode(self) -> Any:
        """``param``."""
        return self.param

    @property
    def deterministic_sample(self) -> Any:
        """``param``."""
        return self.param

    def log_prob(self, value: Any) -> Any:
        tolerances, n_event = (self.atol, self.rtol), len(self.event_shape)
        return _point_log_prob(value, self.param, tolerances, n_event, self.backend)

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        return self.xp.broadcast_to(self.param, (*shape, *self.param.shape))


class TanhDelta(_Bounded, Distribution):
    r"""A point mass at ``m + h tanh(theta)`` inside ``(low, high)``.

    As TorchRL 0.14.1, the parameter is shifted before squashing,
    :math:`\theta = \text{param} + (\text{high} - \text{low})/2 + \text{low}`, and the
    affine map :math:`y = m + h \tanh x` (``m``, ``h`` the box centre and half-width) is
    always applied. ``log_prob`` is ``±inf`` (a :class:`Delta` on the pre-tanh value)
    minus the log-Jacobian of the squashing; ``mode`` and ``deterministic_sample`` are
    ``m + h tanh(theta)``; there is no closed-form mean (``AttributeError``, as TorchRL)
    and no entropy.

    Parameters
    ----------
    param : array
    low, high : float or array, default -1.0 and 1.0
    event_dims : int, default 1
        Trailing axes forming the event.
    atol, rtol : float, default 1e-6
        Tolerances of the equality test (in the pre-tanh space).
    safe : bool, default True
        Clip ``tanh`` as :class:`TanhNormal` does with ``safe_tanh``.

    References
    ----------
    ``torchrl.modules.TanhDelta``.
    """

    has_rsample = True
    has_entropy = False

    def __init__(
        self,
        param: Any,
        low: Any = -1.0,
        high: Any = 1.0,
        event_dims: int = 1,
        atol: float = 1e-6,
        rtol: float = 1e-6,
        safe: bool = True,
    ) -> None:
        _require_array(param, "param")
        backend = find_backend(param=param, low=low, high=high)
        self._box = _TanhBox(low, high, safe, backend, always_affine=True)
        self.event_dims = check_event_dims(event_dims, param.ndim, "event_dims")
        cut = param.ndim - self.event_dims
        super().__init__(backend, tuple(param.shape[:cut]), tuple(param.shape[cut:]))
        self.param, self.atol, self.rtol = param, atol, rtol
        self.loc = param + (high - low) / 2 + low

    @property
    def mode(self) -> Any:
        """``m + h tanh(theta)``."""
        return self._box.forward(self.loc)

    @property
    def deterministic_sample(self) -> Any:
        """The mode."""
        return self.mode

    @property
    def mean(self) -> Any:
        """No closed form: raises ``AttributeError`` (as TorchRL)."""
        raise AttributeError("TanhDelta has no analytical mean")

    def log_prob(self, value: Any) -> Any:
        x = self._box.inverse(value)
        tolerances = (self.atol, self.rtol)
        point = _point_log_prob(x, self.loc, tolerances, self.event_dims, self.backend)
        return point - sum_rightmost(self._box.log_abs_det_jacobian(x), self.event_dims, self.xp)

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        mode = self.mode
        return self.xp.broadcast_to(mode, (*shape, *mode.shape))
