"""Batch renormalisation (``BatchRenorm1d``) and the running statistics of modules.

Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch Dependence in
Batch-Normalized Models", https://arxiv.org/abs/1702.03275; the layer of TorchRL 0.14.1
(``torchrl.modules.BatchRenorm1d``), which CrossQ (Bhatt et al. 2024) puts in its critics.

A layer here is a function of its parameter tree; running statistics are not parameters
(nothing trains them), so they live beside the tree as *buffers*, rebound (never written
in place) after each training step. :func:`module_buffers`, :func:`load_buffers` and
:func:`training_mode` reach the buffers and the train/eval switch of a whole module, an
arrayrl one (through its ``BatchRenorm1d`` layers) or a torch one (``named_buffers``,
``train``), by the dotted names of its parameter tree.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from arrayrl._validation import count, flag, hyperparameter
from arrayrl.backends import Backend, backend_of, get_backend

from ._params import Params, convert_params
from .layers import Layer, _initial_params

__all__ = ["BatchRenorm1d", "load_buffers", "module_buffers", "training_mode"]

#: The buffers of a ``BatchRenorm1d``, in TorchRL's state-dict order.
BUFFER_NAMES = ("running_mean", "running_var", "num_batches_tracked")


class BatchRenorm1d(Layer):
    r"""Batch renormalisation over the batch axis of ``(N, C)`` or ``(N, C, L)`` inputs.

    In training mode, with the batch's mean :math:`\mu_B` and standard deviation
    :math:`\sigma_B = \sqrt{\mathrm{var}_B + \epsilon}` (per feature, over every axis but
    the feature axis 1) and the running ones :math:`\mu, \sigma = \sqrt{v + \epsilon}`:

    .. math::

        r = \mathrm{clip}(\sigma_B / \sigma, 1/r_{max}, r_{max}), \quad
        d = \mathrm{clip}((\mu_B - \mu) / \sigma, -d_{max}, d_{max}),

        y = \gamma \left(\frac{x - \mu_B}{\sigma_B}\, r + d\right) + \beta,

    with ``r`` and ``d`` held fixed under differentiation, eased in over the warm-up:
    :math:`r \leftarrow 1 + (r - 1) w`, :math:`d \leftarrow d\, w`, where ``w`` is
    ``min(n, warmup_steps) // warmup_steps`` (``smooth``: ``/``) after ``n`` training
    steps. Then :math:`\mu \leftarrow \mu + m(\mu_B - \mu)` and
    :math:`v \leftarrow v + m(\tfrac{k}{k-1}\mathrm{var}_B - v)` over the ``k`` reduced
    elements, and ``n`` grows by one. In evaluation mode
    :math:`y = \gamma (x - \mu) / \sigma + \beta`.

    Parameters
    ----------
    num_features : int
        ``C``, the size of axis 1 of the input.
    momentum : float, default 0.01
    eps : float, default 1e-5
    max_r : float, default 3.0
    max_d : float, default 5.0
    warmup_steps : int, default 10000
        ``0``: no warm-up (plain renormalisation from the first step).
    smooth : bool, default False
        Ease in linearly rather than switch at ``warmup_steps``.
    backend, device, dtype
        Where the parameters and buffers live (float32 NumPy by default).

    Notes
    -----
    ``params`` holds ``weight`` (γ, ones) and ``bias`` (β, zeros); :attr:`buffers` holds
    ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (an
    int64 0-d array), TorchRL's names: :meth:`state_dict` and :meth:`load_state_dict`
    carry all five, so TorchRL's layer's state dict loads as it is.

    Stacked parameters (an ensemble, ``weight`` of shape ``(E, C)``) take an input with
    the member axis first, ``(E, N, C[, L])``, and keep per-member statistics ``(E, C)``
    (``(E,)`` counts), made from the layer's own on the first stacked training step.

    Deviations from TorchRL 0.14.1, where its layer has bugs: (1) TorchRL's
    ``num_batches_tracked.clamp_max(warmup_steps)`` is not in place, so its warm-up
    factor keeps growing (``2`` after ``2·warmup_steps`` steps, doubling ``r − 1`` and
    ``d``); here the factor stops at 1 (the counter still counts, as TorchRL's).
    (2) The unbiased running variance uses the number of reduced elements ``k``
    (``N·L``), where TorchRL uses ``N`` also for ``(N, C, L)`` inputs.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.01,
        eps: float = 1e-5,
        max_r: float = 3.0,
        max_d: float = 5.0,
        warmup_steps: int = 10000,
        smooth: bool = False,
        backend: str | Backend = "numpy",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_features = count("num_features", num_features)
        self.momentum = hyperparameter("momentum", momentum, low=0.0, high=1.0)
        self.eps = hyperparameter("eps", eps, low=0.0, high=math.inf)
        self.max_r = hyperparameter("max_r", max_r, low=1.0, high=math.inf)
        self.max_d = hyperparameter("max_d", max_d, low=0.0, high=math.inf)
        self.warmup_steps = count("warmup_steps", warmup_steps, minimum=0)
        self.smooth = flag("smooth", smooth)
        self.training = True
        shape = (self.num_features,)
        self.params = _initial_params(
            {"weight": np.ones(shape), "bias": np.zeros(shape)}, backend, device, dtype
        )
        target = get_backend(backend, device)
        floats = _initial_params(
            {"running_mean": np.zeros(shape), "running_var": np.ones(shape)},
            target, device, dtype,
        )
        self.buffers = {
            **{name: target.stop_gradient(x) for name, x in floats.items()},
            "num_batches_tracked": target.from_numpy(np.asarray(0, dtype=np.int64)),
        }

    # -- modes ------------------------------------------------------------------------
    def train(self, mode: bool = True) -> BatchRenorm1d:
        """Training mode (batch statistics, running ones updated); returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> BatchRenorm1d:
        """Evaluation mode (running statistics, nothing updated); returns ``self``."""
        return self.train(False)

    # -- the maths --------------------------------------------------------------------
    def apply(self, params: Params, x: Any) -> Any:
        weight, bias = params["weight"], params["bias"]
        stacked = weight.ndim == 2
        axis = 2 if stacked else 1
        if x.ndim < axis + 1 or x.shape[axis] != self.num_features:
            lead = "(E, N, C[, L]) with the member axis first" if stacked else "(N, C[, L])"
            raise ValueError(
                f"BatchRenorm1d({self.num_features}) expects an input of shape {lead} with "
                f"C = {self.num_features}, got {tuple(x.shape)}"
            )
        view = _viewer(x.ndim, axis, stacked)
        if self.training:
            y = self._renormalise(x, view, axis, stacked)
        else:
            xp = backend_of(x).xp
            mean, var = (xp.astype(self.buffers[k], x.dtype) for k in BUFFER_NAMES[:2])
            y = (x - view(mean, xp)) / view(xp.sqrt(var + self.eps), xp)
        xp = backend_of(y).xp
        return view(weight, xp) * y + view(bias, xp)

    def _renormalise(self, x: Any, view: Any, axis: int, stacked: bool) -> Any:
        """The training-mode output; rebinds :attr:`buffers` to the updated statistics."""
        backend = backend_of(x)
        xp = backend.xp
        reduced = tuple(i for i in range(x.ndim) if i != axis and not (stacked and i == 0))
        mean_b = xp.mean(x, axis=reduced)
        var_b = xp.var(x, axis=reduced)
        std_b = xp.sqrt(var_b + self.eps)
        mean, var = (xp.astype(self.buffers[k], x.dtype) for k in BUFFER_NAMES[:2])
        std = xp.sqrt(var + self.eps)
        fixed_mean, fixed_var = backend.stop_gradient(mean_b), backend.stop_gradient(var_b)
        r = xp.clip(backend.stop_gradient(std_b) / std, min=1.0 / self.max_r, max=self.max_r)
        d = xp.clip((fixed_mean - mean) / std, min=-self.max_d, max=self.max_d)
        factor = self._warmup_factor(x.dtype, xp)
        if factor is not None:
            r, d = 1.0 + (r - 1.0) * factor, d * factor
        y = (x - view(mean_b, xp)) / view(std_b, xp) * view(r, xp) + view(d, xp)
        elements = math.prod(x.shape[i] for i in reduced)
        self._update(fixed_mean, fixed_var * (elements / (elements - 1)), xp)
        return y

    def _warmup_factor(self, dtype: Any, xp: Any) -> Any:
        """``w`` (``None`` without warm-up), shaped to scale per-feature statistics."""
        if self.warmup_steps == 0:
            return None
        steps = xp.clip(self.buffers["num_batches_tracked"], max=self.warmup_steps)
        if self.smooth:
            factor = xp.astype(steps, dtype) / self.warmup_steps
        else:
            factor = xp.astype(steps // self.warmup_steps, dtype)
        return factor[..., None]

    def _update(self, mean_b: Any, unbiased_var_b: Any, xp: Any) -> None:
        """Rebind the running statistics one momentum step towards the batch's."""
        old = self.buffers
        m = self.momentum
        mean = old["running_mean"] + m * (xp.astype(mean_b, old["running_mean"].dtype)
                                           - old["running_mean"])
        var = old["running_var"] + m * (xp.astype(unbiased_var_b, old["running_var"].dtype)
                                         - old["running_var"])
        steps = xp.broadcast_to(old["num_batches_tracked"] + 1, tuple(mean.shape[:-1]))
        self.buffers = {"running_mean": mean, "running_var": var, "num_batches_tracked": steps}

    # -- state ------------------------------------------------------------------------
    def named_buffers(self) -> dict[str, Any]:
        """``{"running_mean": ..., "running_var": ..., "num_batches_tracked": ...}``."""
        return dict(self.buffers)

    def state_dict(self) -> dict[str, Any]:
        """The parameters and the buffers under TorchRL's names."""
        return {**self.params, **self.buffers}

    def load_state_dict(self, state: Mapping[str, Any]) -> BatchRenorm1d:
        """Load :meth:`state_dict`'s five entries (from any backend, or TorchRL's layer):
        parameters written in place where the backend allows, buffers rebound in their
        own dtype. Everything is checked first: ``KeyError`` for missing or unexpected
        names, ``ValueError`` for a shape that differs. Returns ``self``."""
        own = self.state_dict()
        missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own)
        if missing or unexpected:
            raise KeyError(
                f"BatchRenorm1d.load_state_dict: missing {missing}, unexpected {unexpected}"
            )
        host = {name: np.asarray(backend_of(state[name]).to_numpy(state[name])) for name in own}
        for name, leaf in own.items():
            if tuple(host[name].shape) != tuple(leaf.shape):
                raise ValueError(
                    f"BatchRenorm1d.load_state_dict: {name!r} has shape "
                    f"{tuple(host[name].shape)}, expected {tuple(leaf.shape)}"
                )
        self.params = {k: backend_of(x).write_into(x, host[k]) for k, x in self.params.items()}
        self.buffers = {k: _host_as(host[k], x) for k, x in self.buffers.items()}
        return self

    def to(self, backend: str | Backend, device: Any = None) -> BatchRenorm1d:
        """Move the parameters and the buffers to ``backend``; returns ``self``."""
        self.params = convert_params(self.params, backend, device)
        self.buffers = convert_params(self.buffers, backend, device, requires_grad=False)
        return self

    def __repr__(self) -> str:
        return (
            f"BatchRenorm1d({self.num_features}, momentum={self.momentum}, eps={self.eps}, "
            f"max_r={self.max_r}, max_d={self.max_d}, warmup_steps={self.warmup_steps}, "
            f"smooth={self.smooth})"
        )


def _viewer(ndim: int, axis: int, stacked: bool) -> Any:
    """A function reshaping per-feature statistics (``(C,)``, or ``(E, C)`` stacked) to
    broadcast against an input of ``ndim`` axes whose features are on ``axis``."""

    def view(stat: Any, xp: Any) -> Any:
        shape = [1] * ndim
        shape[axis] = stat.shape[-1]
        if stacked:
            shape[0] = stat.shape[0] if stat.ndim == 2 else 1
        return xp.reshape(stat, tuple(shape))

    return view


def _host_as(host: np.ndarray, like: Any) -> Any:
    """``host`` as an array of ``like``'s backend, device and dtype (a new array)."""
    backend = backend_of(like)
    return backend.xp.astype(backend.from_numpy(np.array(host, copy=True)), like.dtype)


# ---------------------------------------------------------------------------------------
# Buffers and modes of whole modules
# ---------------------------------------------------------------------------------------
def _holders(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(name prefix, holder)`` for each holder of buffers inside ``obj``: its
    :class:`BatchRenorm1d` layers, or the ``torch.nn.Module`` a torch adapter wraps. The
    prefixes follow the parameter tree's names (``"module.1."``)."""
    if isinstance(obj, BatchRenorm1d):
        yield prefix, obj
        return
    inner = getattr(obj, "module", None)
    if callable(getattr(obj, "named_buffers", None)) and hasattr(obj, "get_submodule"):
        yield prefix, obj  # a torch.nn.Module
    elif inner is not None and callable(getattr(inner, "named_buffers", None)):
        yield prefix, inner  # TorchLayer / TorchDictModule: the torch module's own names
    elif hasattr(obj, "layers"):
        for i, layer in enumerate(obj.layers):
            yield from _holders(layer, f"{prefix}{i}.")
    elif hasattr(obj, "template"):
        yield from _holders(obj.template, prefix)
    elif inner is not None:
        yield from _holders(inner, f"{prefix}module.")


def module_buffers(module: Any) -> dict[str, Any]:
    """Every buffer of ``module`` by its dotted name (``{"module.1.running_mean": ...}``),
    the arrays themselves (not copies)."""
    found: dict[str, Any] = {}
    for prefix, holder in _holders(module):
        for name, value in dict(holder.named_buffers()).items():
            found[prefix + name] = value
    return found


def load_buffers(module: Any, buffers: Mapping[str, Any]) -> None:
    """Make ``buffers`` (names as :func:`module_buffers`) ``module``'s buffers, by
    rebinding (the arrays given are used, not copied); names not given keep theirs."""
    for prefix, holder in _holders(module):
        own = {n: v for n, v in buffers.items() if n.startswith(prefix)}
        if isinstance(holder, BatchRenorm1d):
            holder.buffers = {
                k: own.get(prefix + k, v) for k, v in holder.buffers.items()
            }
            continue
        for name, value in own.items():
            path, _, leaf = name[len(prefix):].rpartition(".")
            setattr(holder.get_submodule(path), leaf, value)


@contextlib.contextmanager
def training_mode(module: Any, mode: bool) -> Iterator[None]:
    """Within the block, ``module``'s mode-dependent parts (its ``BatchRenorm1d`` layers,
    every sub-module of a wrapped torch module) are in training (``True``) or evaluation
    mode; their previous modes come back afterwards."""
    previous = []
    for _, holder in _holders(module):
        parts = list(holder.modules()) if hasattr(holder, "modules") else [holder]
        previous += [(part, part.training) for part in parts]
    for part, _ in previous:
        part.training = bool(mode)
    try:
        yield
    finally:
        for part, was in previous:
            part.training = was
