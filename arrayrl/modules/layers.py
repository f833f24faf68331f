"""Array-in, array-out layers with parameters: ``Linear``, activations, ``Sequential``,
``MLP`` and ``NormalParamExtractor``, written once with the Array API.

A layer holds a parameter tree (``layer.params``) and computes with whichever tree it is
given: ``layer(x)`` uses its own, ``layer.apply(params, x)`` another (a target network, a
gradient-tracked copy). Weights are drawn in float64 by NumPy from one seed and then
converted, so a layer built with the same seed holds the same numbers on every backend.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from arrayrl.backends import Backend, backend_of, get_backend

from ._params import HasParams, Params, convert_params

__all__ = [
    "ELU",
    "MLP",
    "Identity",
    "Layer",
    "Linear",
    "NormalParamExtractor",
    "ReLU",
    "Sequential",
    "Tanh",
    "biased_softplus",
    "stacked_linear",
]


class Layer(HasParams):
    """Base class: ``apply(params, *inputs)`` is the maths, ``params`` the own tree."""

    def __init__(self) -> None:
        self._params: Params = {}

    def apply(self, params: Params, *inputs: Any) -> Any:
        """The layer's output for ``inputs`` computed with ``params``."""
        raise NotImplementedError

    def __call__(self, *inputs: Any, params: Params | None = None) -> Any:
        return self.apply(self.params if params is None else params, *inputs)


def _initial_params(
    params: dict[str, np.ndarray], backend: str | Backend, device: Any, dtype: Any
) -> Params:
    """Float64 NumPy draws → ``backend`` arrays of ``dtype`` (float32 by default)."""
    target = get_backend(backend, device)
    dtype = target.xp.float32 if dtype is None else dtype
    converted = {k: target.xp.astype(target.from_numpy(v), dtype) for k, v in params.items()}
    return convert_params(converted, target) if target.differentiable else converted


class Linear(Layer):
    """``y = x Wᵀ + b`` with ``W`` of shape ``(out_features, in_features)`` (torch layout).

    Initialised as ``torch.nn.Linear``: ``W`` and ``b`` uniform on ``±1/√in_features``.

    Stacked parameters (an ensemble, see :mod:`arrayrl.modules.ensemble`): a weight of
    shape ``(E, out, in)`` and a bias of shape ``(E, out)`` compute ``E`` members at once
    by one batched matmul. The input then carries the member axis first, ``(E, ..., in)``,
    or ``(1, ..., in)`` for one input shared by every member; the output is
    ``(E, ..., out)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        seed: int | np.random.Generator = 0,
        backend: str | Backend = "numpy",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, got {in_features}, {out_features}"
            )
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(in_features)
        draws = {"weight": rng.uniform(-bound, bound, (out_features, in_features))}
        if bias:
            draws["bias"] = rng.uniform(-bound, bound, (out_features,))
        self.in_features, self.out_features = in_features, out_features
        self.params = _initial_params(draws, backend, device, dtype)

    def apply(self, params: Params, x: Any) -> Any:
        weight = params["weight"]
        backend = backend_of(x, weight=weight)
        if weight.ndim == 3:
            return stacked_linear(x, weight, params.get("bias"), backend=backend)
        return backend.linear(x, weight, params.get("bias"))


def stacked_linear(x: Any, weight: Any, bias: Any, *, backend: Backend) -> Any:
    """``E`` linear maps at once: ``y[e] = x[e] W[e]ᵀ + b[e]``.

    Parameters
    ----------
    x : array, shape ``(E, ..., in)`` or ``(1, ..., in)``
        Member ``e``'s input is ``x[e]``; a leading axis of size 1 is shared by all.
    weight : array, shape ``(E, out, in)``
    bias : array, shape ``(E, out)``, or None
    backend : Backend
        The arrays' backend (its ``batched_linear``: torch fuses the bias).

    Returns
    -------
    array, shape ``(E, ..., out)``
        Computed as one batched matmul ``(E|1, N, in) @ (E, in, out)`` with the extra
        batch dimensions ``...`` flattened to ``N``.
    """
    members, fan_out, fan_in = weight.shape
    if x.ndim < 2 or x.shape[0] not in (1, members) or x.shape[-1] != fan_in:
        raise ValueError(
            f"a stacked Linear weight of shape {tuple(weight.shape)} needs an input of "
            f"shape ({members} or 1, ..., {fan_in}) with the member axis first, got "
            f"{tuple(x.shape)}; give a shared input a leading axis of size 1 (x[None])"
        )
    xp = backend.xp
    batch = tuple(x.shape[1:-1])
    flat = xp.reshape(x, (x.shape[0], math.prod(batch), fan_in))
    y = backend.batched_linear(flat, weight, bias)
    return xp.reshape(y, (members, *batch, fan_out))


class Identity(Layer):
    """``y = x``."""

    def apply(self, params: Params, x: Any) -> Any:
        return x


class Tanh(Layer):
    """``y = tanh(x)`` (TorchRL's default MLP activation)."""

    def apply(self, params: Params, x: Any) -> Any:
        return backend_of(x).xp.tanh(x)


class ReLU(Layer):
    """``y = max(x, 0)``."""

    def apply(self, params: Params, x: Any) -> Any:
        return backend_of(x).relu(x)


class ELU(Layer):
    """``y = x`` for ``x > 0``, ``exp(x) − 1`` otherwise."""

    def apply(self, params: Params, x: Any) -> Any:
        xp = backend_of(x).xp
        return xp.where(x > 0, x, xp.expm1(xp.clip(x, max=0.0)))


class Sigmoid(Layer):
    """``y = 1 / (1 + e^{−x})``, written ``(1 + tanh(x / 2)) / 2``: no overflow for large
    ``|x|`` (a probability head: GAIL's discriminator)."""

    def apply(self, params: Params, x: Any) -> Any:
        return 0.5 * (1.0 + backend_of(x).xp.tanh(0.5 * x))


class SiLU(Layer):
    """``y = x · σ(x)``, written ``x · (1 + tanh(x / 2)) / 2``: finite everywhere, with a
    finite gradient (TorchRL's default diffusion score network uses ``nn.SiLU``)."""

    def apply(self, params: Params, x: Any) -> Any:
        return 0.5 * x * (1.0 + backend_of(x).xp.tanh(0.5 * x))


class UnitBox(Layer):
    """``y = (x − m) / h`` with ``m = (high + low) / 2`` and ``h = (high − low) / 2``: a
    fixed (parameter-free) map of the box ``[low, high]`` onto ``[−1, 1]``, for inputs
    whose natural scales differ by orders of magnitude (MountainCar's position and
    velocity).

    Parameters
    ----------
    low, high : array-like of shape ``(n,)``
        The box's finite bounds, ``low < high`` element-wise.
    """

    def __init__(self, low: Any, high: Any) -> None:
        super().__init__()
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if low.ndim != 1 or low.shape != high.shape:
            raise ValueError(
                f"UnitBox: low and high must be 1-D of one shape, got {low.shape} and {high.shape}"
            )
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(f"UnitBox: needs finite bounds with low < high, got {low}, {high}")
        self.middle, self.half = (high + low) / 2, (high - low) / 2

    def apply(self, params: Params, x: Any) -> Any:
        backend = backend_of(x)
        if x.shape[-1:] != self.middle.shape:
            raise ValueError(
                f"UnitBox: expected a last axis of {self.middle.shape[0]}, got shape "
                f"{tuple(x.shape)}"
            )
        middle, half = (backend.xp.astype(backend.from_numpy(v), x.dtype) for v in
                        (self.middle, self.half))  # fmt: skip
        return (x - middle) / half


_ACTIVATIONS = {
    "tanh": Tanh,
    "relu": ReLU,
    "elu": ELU,
    "identity": Identity,
    "sigmoid": Sigmoid,
    "silu": SiLU,
}


class Sequential(Layer):
    """Layers applied in turn; a tuple output is unpacked into the next layer.

    The parameter tree has one entry per layer that has parameters, named by its index
    (``"0"``, ``"2"``, ...), as in ``torch.nn.Sequential``.
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        self.layers = list(layers)

    @property
    def params(self) -> Params:
        return {str(i): layer.params for i, layer in enumerate(self.layers) if layer.params}

    @params.setter
    def params(self, tree: Params) -> None:
        for i, layer in enumerate(self.layers):
            if str(i) in tree:
                layer.params = tree[str(i)]

    def apply(self, params: Params, *inputs: Any) -> Any:
        out: Any = inputs
        for i, layer in enumerate(self.layers):
            args = out if isinstance(out, tuple) else (out,)
            out = layer.apply(params.get(str(i), {}), *args)
        return out

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)


class MLP(Sequential):
    """A multi-layer perceptron with TorchRL's defaults.

    Parameters
    ----------
    in_features, out_features : int
    num_cells : int or sequence of int, optional
        Hidden widths. An int is repeated ``depth`` times; ``depth`` alone gives layers of
        32 cells; neither gives a single linear layer (``torchrl.modules.MLP``'s rules).
    depth : int, optional
        Number of hidden layers when ``num_cells`` is an int or ``None``.
    activation_class : str or Layer class, default "tanh"
        ``"tanh"``, ``"relu"``, ``"elu"`` or a :class:`Layer` subclass.
    activate_last_layer : bool, default False
    bias_last_layer : bool, default True
    seed : int, default 0
        Layer ``k`` is initialised from ``numpy.random.default_rng([seed, k])``.
    backend, device, dtype
        Where the parameters live (float32 NumPy by default).

    The parameter names follow ``torch.nn.Sequential`` (``"0.weight"``, ``"2.weight"``,
    ...), so a TorchRL MLP's ``state_dict`` maps onto this one name for name. Several
    inputs are concatenated along the last axis first, as TorchRL's MLP does, so
    ``ValueOperator(MLP(obs + act, 1), in_keys=["observation", "action"])`` is a Q critic.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_cells: int | Sequence[int] | None = None,
        *,
        depth: int | None = None,
        activation_class: str | type[Layer] = "tanh",
        activate_last_layer: bool = False,
        bias_last_layer: bool = True,
        seed: int = 0,
        backend: str | Backend = "numpy",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        widths = _hidden_widths(num_cells, depth)
        activation = _activation(activation_class)
        sizes = [in_features, *widths, out_features]
        layers: list[Layer] = []
        for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            last = k == len(sizes) - 2
            layers.append(
                Linear(
                    fan_in,
                    fan_out,
                    bias=bias_last_layer or not last,
                    seed=np.random.default_rng([seed, k]),
                    backend=backend,
                    device=device,
                    dtype=dtype,
                )
            )
            if not last or activate_last_layer:
                layers.append(activation())
        super().__init__(*layers)
        self.in_features, self.out_features, self.num_cells = in_features, out_features, widths

    def apply(self, params: Params, *inputs: Any) -> Any:
        """The network on ``inputs``, concatenated along the last axis when there are
        several (their leading axes broadcast, e.g. an ensemble's member axis)."""
        if len(inputs) > 1:
            xp = backend_of(*inputs).xp
            lead = xp.broadcast_shapes(*(tuple(x.shape[:-1]) for x in inputs))
            full = [xp.broadcast_to(x, (*lead, x.shape[-1])) for x in inputs]
            inputs = (xp.concat(full, axis=-1),)
        return super().apply(params, *inputs)


def _hidden_widths(num_cells: int | Sequence[int] | None, depth: int | None) -> list[int]:
    """TorchRL's rule: no cells and no depth is a single linear layer; ``depth`` alone
    gives layers of 32 cells; an int ``num_cells`` needs ``depth``."""
    if num_cells is None:
        return [] if depth is None else [32] * depth
    if isinstance(num_cells, int):
        if depth is None:
            raise ValueError("an int num_cells needs depth= (as in TorchRL)")
        return [num_cells] * depth
    widths = list(num_cells)
    if depth is not None and depth != len(widths):
        raise ValueError(f"depth={depth} does not match num_cells={widths}")
    return widths


def _activation(activation_class: str | type[Layer]) -> type[Layer]:
    if isinstance(activation_class, str):
        try:
            return _ACTIVATIONS[activation_class.lower()]
        except KeyError:
            raise ValueError(
                f"unknown activation_class {activation_class!r}; expected one of "
                f"{sorted(_ACTIVATIONS)} or a Layer subclass"
            ) from None
    return activation_class


def biased_softplus(x: Any, bias: float = 1.0, min_val: float = 0.01) -> Any:
    """``softplus(x + b) + min_val`` with ``b`` chosen so that ``x = 0`` maps to ``bias``.

    TensorDict's ``biased_softplus_1.0`` mapping (``b = log(expm1(bias - min_val))``).
    """
    shift = math.log(math.expm1(bias - min_val))
    return backend_of(x).softplus(x + shift) + min_val


class NormalParamExtractor(Layer):
    """Split the last dimension in two halves: ``loc`` and a positive ``scale``.

    ``scale = max(biased_softplus(s), scale_lb)``, as TensorDict's ``NormalParamExtractor``
    with its default ``scale_mapping="biased_softplus_1.0"`` and ``scale_lb=1e-4``.
    """

    def __init__(self, scale_mapping: str = "biased_softplus_1.0", scale_lb: float = 1e-4):
        super().__init__()
        if scale_mapping not in ("biased_softplus_1.0", "exp", "softplus"):
            raise ValueError(
                f"unknown scale_mapping {scale_mapping!r}; expected 'biased_softplus_1.0', "
                "'softplus' or 'exp'"
            )
        self.scale_mapping, self.scale_lb = scale_mapping, scale_lb

    def apply(self, params: Params, x: Any) -> Any:
        backend = backend_of(x)
        half = x.shape[-1] // 2
        if x.shape[-1] != 2 * half:
            raise ValueError(f"NormalParamExtractor needs an even last dim, got {x.shape[-1]}")
        loc, raw = x[..., :half], x[..., half:]
        if self.scale_mapping == "exp":
            scale = backend.xp.exp(raw)
        elif self.scale_mapping == "softplus":
            scale = backend.softplus(raw)
        else:
            scale = biased_softplus(raw)
        return loc, backend.xp.clip(scale, min=self.scale_lb)
