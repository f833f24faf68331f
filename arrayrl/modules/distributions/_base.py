"""The :class:`Distribution` base class and the numerical helpers the distributions share.

Everything here is written with the Array API namespace of the parameters; no array
library is imported. Random draws come from an :class:`arrayrl.random.Generator` that the
caller passes as ``rng=``: the library has no global random state.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

from arrayrl.backends import Backend, backend_of
from arrayrl.random import Generator

__all__ = ["Distribution"]

Shape = tuple[int, ...]

class Distribution:
    """Base class of the arrayrl distributions.

    Attributes
    ----------
    backend : Backend
        The backend owning the parameters (and the draws).
    batch_shape, event_shape : tuple of int
        Shape of independent draws and shape of one outcome; a draw with
        ``sample_shape`` has shape ``sample_shape + batch_shape + event_shape``.
    has_rsample : bool
        Whether :meth:`rsample` gives reparameterised (pathwise-differentiable) draws.
    has_entropy : bool
        Whether :meth:`entropy` has a closed form.
    """

    has_rsample: bool = False
    has_entropy: bool = False

    def __init__(self, backend: Backend, batch_shape: Shape, event_shape: Shape) -> None:
        self.backend = backend
        self.batch_shape = tuple(batch_shape)
        self.event_shape = tuple(event_shape)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_shape={self.batch_shape}, "
            f"event_shape={self.event_shape}, backend={self.backend.name!r})"
        )

    @property
    def xp(self) -> Any:
        """The Array API namespace of the parameters."""
        return self.backend.xp

    def log_prob(self, value: Any) -> Any:
        """``log p(value)``, of shape ``value``'s leading dims + ``batch_shape``."""
        raise NotImplementedError

    def entropy(self) -> Any:
        """The closed-form entropy ``H = -E[log p(X)]``, of shape ``batch_shape``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no closed-form entropy; estimate it with "
            "arrayrl.modules.distributions.entropy_estimate(dist, n_samples, rng=...)"
        )

    def sample(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> Any:
        """Draws of shape ``sample_shape + batch_shape + event_shape``, carrying no gradient.

        ``rng`` (an :class:`arrayrl.random.Generator` on the parameters' backend) is
        required: arrayrl never draws from a global random state.
        """
        shape = as_shape(sample_shape)
        self._check_rng(rng, "sample")
        return self.backend.stop_gradient(self._sample(shape, rng))

    def rsample(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> Any:
        """Reparameterised draws: like :meth:`sample`, but gradients flow to the
        parameters. Raises ``NotImplementedError`` where ``has_rsample`` is False."""
        if not self.has_rsample:
            raise NotImplementedError(
                f"{type(self).__name__} has no reparameterised sampler (has_rsample=False); "
                "use sample()"
            )
        shape = as_shape(sample_shape)
        self._check_rng(rng, "rsample")
        return self._rsample(shape, rng)

    def sample_and_log_prob(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> tuple[Any, Any]:
        """``(x, log p(x))`` for one draw ``x`` without pathwise gradient; the log-prob
        keeps its gradient with respect to the parameters (score function)."""
        x = self.sample(sample_shape, rng=rng)
        return x, self.log_prob(x)

    def rsample_and_log_prob(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> tuple[Any, Any]:
        """``(x, log p(x))`` for one reparameterised draw ``x``."""
        x = self.rsample(sample_shape, rng=rng)
        return x, self.log_prob(x)

    def _sample(self, shape: Shape, rng: Generator) -> Any:
        return self._rsample(shape, rng)

    def _rsample(self, shape: Shape, rng: Generator) -> Any:
        raise NotImplementedError

    def _check_rng(self, rng: Any, method: str) -> None:
        check_rng(rng, self.backend, f"{type(self).__name__}.{method}")


def check_rng(rng: Any, backend: Backend, where: str) -> None:
    """Raise ``TypeError`` unless ``rng`` is a :class:`Generator` drawing on ``backend``."""
    if rng is None:
        raise TypeError(
            f"{where} needs rng=: arrayrl has no global random state; pass a generator, "
            f"e.g. arrayrl.random.make_generator(seed, backend={backend.name!r})"
        )
    if not isinstance(rng, Generator):
        raise TypeError(
            f"{where}: rng must be an arrayrl.random.Generator, got {type(rng).__name__}"
        )
    if not _same_backend(rng.backend, backend):
        raise TypeError(
            f"{where}: rng draws {rng.backend.name} arrays on {rng.backend.device}, but the "
            f"parameters are {backend.name} arrays on {backend.device}; make the generator "
            "for the parameters' backend"
        )


def _same_backend(a: Backend, b: Backend) -> bool:
    """Equal backends, or the same library where one side has no device (JAX arrays
    being traced have none)."""
    return a == b or (a.name == b.name and (a.device is None or b.device is None))


# -- arguments -----------------------------------------------------------------------


def as_shape(sample_shape: Any) -> Shape:
    """``sample_shape`` (an int or a sequence of ints) as a tuple of non-negative ints."""
    if isinstance(sample_shape, bool):
        raise TypeError(f"sample_shape must be a tuple of ints, got {sample_shape!r}")
    if isinstance(sample_shape, int):
        sample_shape = (sample_shape,)
    try:
        shape = tuple(operator.index(n) for n in sample_shape)
    except TypeError:
        raise TypeError(f"sample_shape must be a tuple of ints, got {sample_shape!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"sample_shape must hold non-negative sizes, got {shape}")
    return shape


def broadcast_shapes(**shapes: Shape) -> Shape:
    """The broadcast of the named shapes; ``ValueError`` naming them if incompatible."""
    ndim = max((len(s) for s in shapes.values()), default=0)
    out = []
    for axis in range(-ndim, 0):
        sizes = {s[axis] for s in shapes.values() if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            described = ", ".join(f"{name} {tuple(s)}" for name, s in shapes.items())
            raise ValueError(f"shapes do not broadcast: {described}")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def check_floating(x: Any, name: str, xp: Any) -> None:
    """``TypeError`` naming ``name`` unless ``x`` has a real floating dtype."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")


def as_param(x: Any, like: Any, name: str, backend: Backend) -> Any:
    """``x`` (an array, a Python number, or a callable applied to ``like``) as an array."""
    if callable(x) and not is_array_like(x):
        x = x(like)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return backend.asarray(x, dtype=like.dtype)
    if not is_array_like(x):
        raise TypeError(f"{name} must be an array, a number or a callable, got {type(x)}")
    check_floating(x, name, backend.xp)
    return x


def check_event_dims(event_dims: Any, ndim: int, name: str) -> int:
    """``event_dims`` as an int in ``[0, ndim]``, else ``ValueError`` naming it."""
    if isinstance(event_dims, bool) or not isinstance(event_dims, int):
        raise TypeError(f"{name} must be an int, got {event_dims!r}")
    if not 0 <= event_dims <= ndim:
        raise ValueError(
            f"{name} must be in [0, {ndim}] for parameters of {ndim} dims, got {event_dims}"
        )
    return event_dims


def split_shape(shape: Shape, event_dims: int) -> tuple[Shape, Shape]:
    """``(batch_shape, event_shape)`` with the last ``event_dims`` axes as the event."""
    cut = len(shape) - event_dims
    return tuple(shape[:cut]), tuple(shape[cut:])


def find_backend(**arrays: Any) -> Backend:
    """The backend of the named arrays (``TypeError`` naming them if they are mixed);
    callables and Python numbers are skipped."""
    return backend_of(**{k: v for k, v in arrays.items() if is_array_like(v) or v is None})


def is_array_like(x: Any) -> bool:
    """Whether ``x`` looks like an array (has ``shape`` and ``dtype``)."""
    return hasattr(x, "shape") and hasattr(x, "dtype")


# -- maths ---------------------------------------------------------------------------


def sum_rightmost(x: Any, n: int, xp: Any) -> Any:
    """``x`` summed over its last ``n`` axes."""
    return x if n == 0 else xp.sum(x, axis=tuple(range(-n, 0)))


def resolution(xp: Any, dtype: Any) -> float:
    """``10**-p`` with ``p`` the decimal digits of ``dtype`` (``torch.finfo.resolution``):
    1e-6 for float32, 1e-15 for float64."""
    eps = float(xp.finfo(dtype).eps)
    return 10.0 ** -math.floor(-math.log10(eps))


def straight_through(value: Any, x: Any, backend: Backend) -> Any:
    """``value`` in the forward pass, with the gradient of ``x`` (identity) backward.

    ``x - stop_gradient(x)`` is exactly zero, so the value is ``value`` bit for bit; a
    non-finite ``x`` contributes zero instead of ``inf - inf``.
    """
    return backend.stop_gradient(value) + zero_with_gradient(x, backend)


def zero_with_gradient(x: Any, backend: Backend) -> Any:
    """Zeros shaped like ``x`` whose gradient with respect to ``x`` is the identity
    (``x - stop_gradient(x)``, and a plain zero where ``x`` is not finite)."""
    return backend.zero_with_gradient(x)


def safe_tanh(x: Any, backend: Backend) -> Any:
    r"""``clip(tanh x, -(1-r), 1-r)`` with ``r`` = :func:`resolution`, whose gradient is
    ``1 - y^2`` at the clipped output ``y`` (as TorchRL's ``safetanh_noeps``): saturated
    inputs keep a small non-zero gradient instead of the clip's zero (one autograd
    node on torch: :meth:`~arrayrl.backends.Backend.safe_tanh`)."""
    return backend.safe_tanh(x, 1.0 - resolution(backend.xp, x.dtype))


def safe_atanh(y: Any, backend: Backend) -> Any:
    r"""``atanh(clip(y, -(1-r), 1-r))`` with the clip passed straight through, so the
    gradient is ``1 / (1 - clip(y)^2)`` (finite) even at ``y = ±1`` (as TorchRL's
    ``safeatanh_noeps``; one autograd node on torch:
    :meth:`~arrayrl.backends.Backend.safe_atanh`)."""
    return backend.safe_atanh(y, 1.0 - resolution(backend.xp, y.dtype))


def log_softmax_and_softmax(logits: Any, backend: Backend) -> tuple[Any, Any]:
    r"""``(log p, p)`` with ``p = softmax(logits)`` over the last axis.

    .. math:: \log p_i = (l_i - m) - \log \sum_j e^{l_j - m}, \quad m = \max_j l_j

    ``-inf`` logits give ``log p = -inf`` and ``p = 0``; a row of only ``-inf`` is NaN.
    """
    xp = backend.xp
    m = xp.max(logits, axis=-1, keepdims=True)
    m = backend.stop_gradient(xp.where(xp.isfinite(m), m, 0.0))
    shifted = logits - m
    e = xp.exp(shifted)
    total = xp.sum(e, axis=-1, keepdims=True)
    return shifted - xp.log(total), e / total


def safe_log(p: Any, xp: Any) -> Any:
    """``log p`` with ``-inf`` (and a zero gradient, not ``inf * 0``) where ``p == 0``."""
    positive = p > 0
    return xp.where(positive, xp.log(xp.where(positive, p, 1.0)), -math.inf)


def gather_last(x: Any, index: Any, xp: Any) -> Any:
    """``x[..., index[..., j]]`` along the last axis, broadcasting the leading axes."""
    batch = broadcast_shapes(x=tuple(x.shape[:-1]), index=tuple(index.shape[:-1]))
    x = xp.broadcast_to(x, (*batch, x.shape[-1]))
    index = xp.broadcast_to(xp.astype(index, xp.int64), (*batch, index.shape[-1]))
    return xp.take_along_axis(x, index, axis=-1)


def one_hot(index: Any, n: int, dtype: Any, backend: Backend) -> Any:
    """``index`` (integers) one-hot encoded along a new last axis of size ``n``."""
    xp = backend.xp
    classes = xp.arange(n, dtype=index.dtype, device=backend.device)
    return xp.astype(index[..., None] == classes, dtype)


def gumbel(shape: Shape, dtype: Any, rng: Generator) -> Any:
    """Standard Gumbel draws ``-log(-log u)``, ``u ~ U(0, 1)`` kept above the smallest
    normal number so every draw is finite."""
    xp = rng.backend.xp
    u = xp.clip(rng.uniform(shape, dtype), min=float(xp.finfo(dtype).smallest_normal))
    return -xp.log(-xp.log(u))
