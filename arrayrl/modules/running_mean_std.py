r"""``RunningMeanStd``: the running mean and variance of observations, written once with ``xp``.

TorchRL 0.14.1's ``torchrl.envs.transforms.rnd.RunningMeanStd`` (the observation and
reward statistics of Random Network Distillation, Burda et al. 2018, "Exploration by
Random Network Distillation", https://arxiv.org/abs/1810.12894), with its names,
arguments, defaults and buffers: ``RunningMeanStd(shape=(), epsilon=1e-4)`` starts from
a pseudo-batch of ``count = epsilon`` samples with ``mean = 0`` and ``var = 1``, and
:meth:`~RunningMeanStd.update` merges each batch into it by the parallel algorithm of
Chan, Golub & LeVeque (1979). With :math:`n` samples seen (mean :math:`\mu`, population
variance :math:`v`) and a batch of :math:`n_b` (mean :math:`\mu_b`, population variance
:math:`v_b`, 0 for one sample):

.. math::

    \delta = \mu_b - \mu, \quad n' = n + n_b, \quad
    \mu' = \mu + \delta\, n_b / n', \quad
    v' = \bigl(v n + v_b n_b + \delta^2\, n n_b / n'\bigr) / n'.

The merge is exact: folding batches one by one gives the moments of their union,
whatever the split. ``normalize(x) = (x − μ) / sqrt(max(v, 1e-8))``.

The state (``mean``, ``var``, ``count``, float32 as TorchRL's buffers) lives and moves as
:class:`~arrayrl.modules.value_norm.ValueNorm`'s: NumPy until the first array it meets
(or :meth:`~RunningMeanStd.to`), then refused on another backend; updates rebind the
statistics to new arrays and never write into the caller's.

:func:`arrayrl.modules.adapt.as_running_mean_std` also takes TorchRL's ``RunningMeanStd`` (for
``RNDLoss(obs_rms=transform.obs_rms)``): it returns a live view of that module's buffers,
so the statistics the TorchRL transform keeps updating during collection are the ones the
loss normalises with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl._validation import count, hyperparameter
from arrayrl.backends import Backend, backend_of

from .value_norm import ValueNorm

__all__ = ["RunningMeanStd"]

#: the floor of the variance in :meth:`RunningMeanStd.normalize` (TorchRL's constant)
VAR_FLOOR = 1e-8


class RunningMeanStd(ValueNorm):
    """Running mean and population variance over the leading dims of every batch.

    Parameters
    ----------
    shape : tuple of int, default ()
        The feature shape tracked (``(obs_dim,)``, or ``()`` for scalars: every element
        of a batch is then one sample). Batches must end with it.
    epsilon : float, default 1e-4
        The initial count, ``>= 0``: the prior pseudo-batch (mean 0, variance 1) weighs
        as ``epsilon`` samples.

    Statistics (``state_dict()``): ``mean`` and ``var`` (shape ``shape``) and ``count``
    (0-d), float32 as TorchRL's buffers. Integer batches are cast to float32 (TorchRL's
    ``x.float()``); floating ones are reduced in their own dtype and folded into the
    float32 statistics.

    Notes
    -----
    An empty batch leaves the statistics as they are (TorchRL 0.14.1 folds the NaN mean
    of an empty tensor in, for good). A batch whose trailing shape is not ``shape``
    raises ``ValueError`` (TorchRL reshapes it to ``(-1, *shape)`` whenever the sizes
    divide).
    """

    def __init__(self, shape: int | tuple[int, ...] = (), epsilon: float = 1e-4) -> None:
        self.shape = _checked_shape(shape)
        self.epsilon = hyperparameter("epsilon", epsilon, low=0.0, high=math.inf, high_open=True)
        self._stats = dict(self._initial_state())
        self._placed = False

    def _initial_state(self) -> dict[str, np.ndarray]:
        return {
            "mean": np.zeros(self.shape, dtype=np.float32),
            "var": np.ones(self.shape, dtype=np.float32),
            "count": np.asarray(self.epsilon, dtype=np.float32),
        }

    def _check_trailing_shape(self, x: Any, name: str = "x") -> tuple[int, ...]:
        """The leading axes of ``x`` (every axis for scalar statistics)."""
        if not self.shape:
            return tuple(range(x.ndim))
        return super()._check_trailing_shape(x, name)

    def _fold(self, x: Any, axes: tuple[int, ...], n: int, xp: Any) -> dict[str, Any]:
        """Chan et al.'s merge of the batch ``x`` (``n`` samples over ``axes``)."""
        if axes:
            batch_mean, batch_var = xp.mean(x, axis=axes), xp.var(x, axis=axes, correction=0)
        else:  # one sample
            batch_mean, batch_var = x, xp.zeros_like(x)
        old = self._stats
        seen = old["count"]
        total = seen + float(n)
        delta = batch_mean - old["mean"]
        mean = old["mean"] + delta * (float(n) / total)
        m2 = old["var"] * seen + batch_var * float(n) + delta * delta * (seen * float(n) / total)
        return {
            "mean": xp.astype(mean, old["mean"].dtype),
            "var": xp.astype(m2 / total, old["var"].dtype),
            "count": xp.astype(total, old["count"].dtype),
        }

    def __getattr__(self, name: str) -> Any:
        """``mean``, ``var`` and ``count``: the statistics (TorchRL's buffers)."""
        if name in ("mean", "var", "count"):
            return self._stats[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- TorchRL's interface ---------------------------------------------------------------
    def update(self, x: Any) -> None:
        """Fold the batch ``x`` (shape ``(*B, *shape)``, any numeric dtype) into the
        statistics; ``x`` is read without gradient and never written."""
        super().update(_as_floating(x, "x"))

    def normalize(self, x: Any) -> Any:
        """``(x − μ) / sqrt(max(var, 1e-8))`` (integer ``x`` cast to float32 first)."""
        x = self._checked_input(_as_floating(x, "x"), "x")
        xp = self.backend.xp
        std = xp.sqrt(xp.clip(self._stats["var"], min=VAR_FLOOR))
        return (x - self._stats["mean"]) / std

    def denormalize(self, normalised_value: Any) -> Any:
        """The inverse of :meth:`normalize`: ``y·σ + μ``."""
        y = self._checked_input(_as_floating(normalised_value, "y"), "y")
        return y * self.scale() + self._stats["mean"]

    def scale(self) -> Any:
        """``σ = sqrt(max(var, 1e-8))``, the divisor :meth:`normalize` applies."""
        xp = self.backend.xp
        return xp.sqrt(xp.clip(self._stats["var"], min=VAR_FLOOR))

    def __repr__(self) -> str:
        return f"RunningMeanStd(shape={self.shape}, epsilon={self.epsilon})"


class TorchRLRunningMeanStdView(RunningMeanStd):
    """A live view of TorchRL's ``RunningMeanStd`` module ``module`` (see
    :func:`~arrayrl.modules.adapt.as_running_mean_std`): the statistics are read from its
    buffers at every use and updates write into them in place, so TorchRL's
    ``RNDTransform`` and the arrayrl loss share one set of statistics. It lives on torch,
    where the buffers are."""

    def __init__(self, module: Any) -> None:
        self.module = module
        mean = module.mean
        self.shape = tuple(int(d) for d in mean.shape)
        self.epsilon = float("nan")  # unknown once the module has been updated
        self._placed = True

    @property
    def _stats(self) -> dict[str, Any]:
        return {"mean": self.module.mean, "var": self.module.var, "count": self.module.count}

    @_stats.setter
    def _stats(self, stats: Mapping[str, Any]) -> None:
        for name, value in stats.items():
            buffer = getattr(self.module, name)
            backend_of(buffer).write_into(buffer, backend_of(value).stop_gradient(value))

    def to(self, backend: str | Backend, device: Any = None) -> TorchRLRunningMeanStdView:
        """Move the TorchRL module's buffers (torch only: they are torch tensors)."""
        name = getattr(backend, "name", backend)
        if name != "torch":
            raise TypeError(
                "a TorchRL RunningMeanStd lives on torch and cannot move to "
                f"{name!r}; pass arrayrl.modules.running_mean_std.RunningMeanStd instead"
            )
        self.module.to(device if device is not None else getattr(backend, "device", "cpu"))
        return self

    def __repr__(self) -> str:
        return f"TorchRLRunningMeanStdView(shape={self.shape})"


def _checked_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints (``()`` allowed; an int ``n`` is ``(n,)``)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    return tuple(count(f"shape[{i}]", d) for i, d in enumerate(dims))


def _as_floating(x: Any, name: str) -> Any:
    """``x`` when floating, else cast to float32 (TorchRL's ``.float()``)."""
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(f"RunningMeanStd: {name} must be an array, got {type(x).__name__}")
    xp = backend_of(**{name: x}).xp
    if xp.isdtype(x.dtype, "real floating"):
        return x
    return xp.astype(x, xp.float32)
