"""``LossModule``: the base class of every loss, with TorchRL 0.14.1's interface.

A loss owns its networks' parameter trees (``<name>_params``, trainable, and
``target_<name>_params``), its configurable batch keys (``tensor_keys``, changed with
``set_keys``), its schedulable coefficients (``loss.entropy_coeff = 0.02``), its value
estimator, and the reduction. ``forward(batch, params=None)`` returns an ``ArrayDict`` of
``loss_*`` terms plus diagnostics; passing ``params`` makes it a pure function of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from arrayrl.backends import Backend, backend_of, get_backend
from arrayrl.data import ArrayDict, as_arraydict
from arrayrl.modules import Module, Params, convert_params, flatten_params, map_params
from arrayrl.modules._params import unflatten_params

from .utils import ValueEstimators, default_value_kwargs

__all__ = ["AUTO_LOSS_MASK_KEYS", "LossModule"]

#: The validity masks a loss applies when ``loss_mask_key="auto"`` (TorchRL's default).
AUTO_LOSS_MASK_KEYS: tuple[Any, ...] = (("collector", "mask"), "shifted_valid")

_REDUCTIONS = ("mean", "sum", "none")


class LossModule:
    """Base class of the losses.

    Subclasses define a dataclass ``_AcceptedKeys`` (the configurable batch keys and their
    defaults), ``default_value_estimator``, ``SUPPORTED_VALUE_ESTIMATORS`` and
    :meth:`forward`; they register networks with :meth:`convert_to_functional` and
    coefficients with :meth:`register_coeff`.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        pass

    default_value_estimator: ValueEstimators | None = None
    SUPPORTED_VALUE_ESTIMATORS: tuple[ValueEstimators, ...] = ()

    def __init__(self) -> None:
        object.__setattr__(self, "_coeffs", {})
        self._networks: dict[str, Module] = {}
        self._params: dict[str, Params] = {}
        self._target_params: dict[str, Params] = {}
        self._owns_target: dict[str, bool] = {}
        self._tensor_keys = self._AcceptedKeys()
        self._value_estimator: Any = None
        self.value_type = self.default_value_estimator
        self._reduction = "mean"
        self._loss_mask_key: Any = "auto"

    # -- keys -----------------------------------------------------------------------
    @property
    def tensor_keys(self) -> Any:
        """The batch keys this loss reads and writes (an ``_AcceptedKeys`` instance)."""
        return self._tensor_keys

    @classmethod
    def default_keys(cls) -> Any:
        """A fresh ``_AcceptedKeys`` with the default key names."""
        return cls._AcceptedKeys()

    def set_keys(self, **kwargs: Any) -> LossModule:
        """Rename batch keys; ``None`` restores a key's default.

        Raises ``ValueError`` for a name that is not a field of ``_AcceptedKeys``.
        """
        accepted = [f.name for f in dataclasses.fields(self._AcceptedKeys)]
        for name, value in kwargs.items():
            if name not in accepted:
                raise ValueError(
                    f"{name!r} is not an accepted key of {type(self).__name__}; "
                    f"accepted keys are {accepted}"
                )
            default = getattr(self.default_keys(), name)
            setattr(self._tensor_keys, name, default if value is None else value)
        self._forward_value_estimator_keys()
        return self

    def _forward_value_estimator_keys(self) -> None:
        """Pass the key names the value estimator shares with the loss on to it; a list
        of keys (a composite actor's per-head ``action`` / ``sample_log_prob``) is not
        passed on, as the estimators read single keys."""
        if self._value_estimator is None:
            return
        shared = {
            f.name: getattr(self._tensor_keys, f.name)
            for f in dataclasses.fields(self._value_estimator._AcceptedKeys)
            if hasattr(self._tensor_keys, f.name)
            and not isinstance(getattr(self._tensor_keys, f.name), list)
        }
        self._value_estimator.set_keys(**shared)

    def read(self, batch: Any, key: Any, *, what: str | None = None) -> Any:
        """``batch.get(key)``, or a ``KeyError`` naming the key and ``set_keys``."""
        value = batch.get(key, None)
        if value is None:
            field = what or self._field_of(key)
            hint = f" (set_keys({field}=...) renames it)" if field else ""
            raise KeyError(
                f"{type(self).__name__} reads key {key!r}, which is not in the batch{hint}"
            )
        return value

    def _field_of(self, key: Any) -> str | None:
        for field in dataclasses.fields(self._tensor_keys):
            if getattr(self._tensor_keys, field.name) == key:
                return field.name
        return None

    # -- coefficients -----------------------------------------------------------------
    def register_coeff(
        self, name: str, value: float | None, check: Callable[[float], str | None] | None = None
    ) -> None:
        """Register a schedulable scalar: ``loss.<name> = v`` re-checks it and is stored
        in ``state_dict``. ``check(v)`` returns an error message or ``None``."""
        self._coeffs[name] = (None, check)
        setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        coeffs = self.__dict__.get("_coeffs")
        if coeffs is not None and name in coeffs:
            check = coeffs[name][1]
            value = _as_coeff(name, value)
            problem = None if value is None or check is None else check(value)
            if problem:
                raise ValueError(f"{name} {problem}, got {value}")
            coeffs[name] = (value, check)
            self.__dict__[name] = value  # a plain attribute read from now on (no __getattr__)
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        coeffs = self.__dict__.get("_coeffs", {})
        if name in coeffs:
            return coeffs[name][0]
        if name.startswith("target_") and name.endswith("_params"):
            network = name[len("target_") : -len("_params")]
            if network in self.__dict__.get("_networks", {}):
                return self._target_params[network]
        elif name.endswith("_params") and name[: -len("_params")] in self.__dict__.get(
            "_networks", {}
        ):
            return self._params[name[: -len("_params")]]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    # -- reduction ------------------------------------------------------------------
    @property
    def reduction(self) -> str:
        """``"mean"`` (default), ``"sum"`` or ``"none"``: how ``loss_*`` terms reduce."""
        return self._reduction

    @reduction.setter
    def reduction(self, value: str | None) -> None:
        value = "mean" if value is None else value
        if value not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {value!r}")
        self._reduction = value

    @property
    def loss_mask_key(self) -> Any:
        """``"auto"`` applies the masks in :data:`AUTO_LOSS_MASK_KEYS`; a key applies
        that one; ``None`` none."""
        return self._loss_mask_key

    @loss_mask_key.setter
    def loss_mask_key(self, value: Any) -> None:
        if not (value is None or isinstance(value, (str, tuple))):
            raise ValueError(f"loss_mask_key must be 'auto', None or a key, got {value!r}")
        self._loss_mask_key = value

    def _mask_keys(self) -> tuple[Any, ...]:
        key = self._loss_mask_key
        if key is None:
            return ()
        return AUTO_LOSS_MASK_KEYS if key == "auto" else (key,)

    def _batch_mask(self, batch: Any, loss: Any) -> Any:
        """The conjunction of the batch's validity masks, shaped like ``loss``."""
        mask = None
        for key in self._mask_keys():
            found = batch.get(key, None)
            if found is not None:
                found = _mask_like(found, loss)
                mask = found if mask is None else mask & found
        return mask

    def reduce_loss(self, loss: Any, batch: Any = None) -> Any:
        """Reduce ``loss`` with :attr:`reduction`, dropping masked-out positions.

        ``mean`` averages over the valid positions (at least one); ``sum`` adds them;
        ``none`` keeps the shape with masked positions set to zero. Masked values are
        selected away (``where``), so a NaN there never reaches the result.
        """
        xp = backend_of(loss).xp
        mask = None if batch is None else self._batch_mask(batch, loss)
        if mask is not None:
            loss = xp.where(mask, loss, xp.zeros_like(loss))
        if self._reduction == "none":
            return loss
        if self._reduction == "sum":
            return xp.sum(loss)
        if mask is None:
            return xp.mean(loss)
        count = xp.sum(xp.astype(mask, loss.dtype))
        return xp.sum(loss) / xp.clip(count, min=1.0)

    # -- networks and parameters -----------------------------------------------------
    def convert_to_functional(
        self, module: Module, name: str, *, create_target_params: bool = False
    ) -> None:
        """Register ``module`` as network ``name``: its parameter tree becomes
        ``<name>_params`` (trainable, shared with the module) and ``target_<name>_params``
        (a detached copy when ``create_target_params``, else a detached view)."""
        if not hasattr(module, "params"):
            raise TypeError(f"{name} must be an arrayrl Module, got {type(module).__name__}")
        self._networks[name] = module
        object.__setattr__(self, name, module)
        self._params[name] = module.params
        self._owns_target[name] = create_target_params
        self._refresh_target(name)

    def _refresh_target(self, name: str) -> None:
        tree = self._params[name]
        backend = _tree_backend(tree)
        if backend is None:
            self._target_params[name] = {}
        elif self._owns_target[name]:
            self._target_params[name] = convert_params(tree, backend, requires_grad=False)
        else:
            self._target_params[name] = map_params(backend.stop_gradient, tree)

    def network_params(self, name: str, params: Mapping[str, Params] | None) -> Params:
        """The tree network ``name`` computes with: ``params[name]`` if given, else its own."""
        if params is not None and name in params:
            return params[name]
        return self._params[name]

    def detached_params(self, name: str, params: Mapping[str, Params] | None = None) -> Params:
        """:meth:`network_params` with every leaf cut from the graph."""
        tree = self.network_params(name, params)
        backend = _tree_backend(tree)
        return tree if backend is None else map_params(backend.stop_gradient, tree)

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """``("<network>_params.<path>", array)`` for every trainable array (each once,
        even when networks share it)."""
        seen: set[int] = set()
        for name, tree in self._params.items():
            for path, leaf in flatten_params(tree, f"{name}_params").items():
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    yield path, leaf

    def parameters(self) -> Iterator[Any]:
        """The trainable arrays (what ``torch.optim`` takes on torch)."""
        return (leaf for _, leaf in self.named_parameters())

    @property
    def backend(self) -> Backend:
        """The backend of the parameters (NumPy for a loss without any)."""
        for leaf in self.parameters():
            return backend_of(leaf)
        return get_backend("numpy")

    def check_batch_backend(self, batch: Any, key: Any) -> None:
        """``TypeError`` if ``batch[key]`` and the parameters live on different backends."""
        value = self.read(batch, key)
        leaf = _first_leaf(self._params)
        if leaf is None:
            return
        try:
            backend_of(value, leaf)
        except TypeError:
            backend_of(**{f"batch[{key!r}]": value, "parameters": leaf})  # raises, naming both

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Flat ``name → array``: trainable and target parameters and the coefficients."""
        state: dict[str, Any] = {}
        for name, tree in self._params.items():
            state.update(flatten_params(tree, f"{name}_params"))
            if self._owns_target[name]:
                state.update(flatten_params(self._target_params[name], f"target_{name}_params"))
        backend = self.backend
        for coeff, (value, _) in self._coeffs.items():
            if value is not None:
                state[coeff] = backend.from_numpy(np.asarray(value))
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> LossModule:
        """Load a :meth:`state_dict` from any backend, converting to this loss's.

        Keys must match exactly. On backends with in-place writes (NumPy, torch) the
        values are copied into the existing arrays, so an optimizer keeps tracking them.
        """
        expected, given = set(self.state_dict()), set(state)
        if expected != given:
            raise KeyError(
                f"state_dict keys differ: missing {sorted(expected - given)}, "
                f"unexpected {sorted(given - expected)}"
            )
        for coeff in self._coeffs:
            if coeff in state:
                setattr(self, coeff, float(np.asarray(_host(state[coeff]))))
        for name in self._params:
            self._load_tree(name, state)
        return self

    def _load_tree(self, name: str, state: Mapping[str, Any]) -> None:
        self._params[name] = _loaded(self._params[name], f"{name}_params", state)
        self._networks[name].params = self._params[name]
        if self._owns_target[name]:
            target = self._target_params[name]
            self._target_params[name] = _loaded(target, f"target_{name}_params", state)
        else:
            self._refresh_target(name)

    def to(self, backend: str | Backend, device: Any = None) -> LossModule:
        """Move every network, parameter tree and the value estimator to ``backend``
        in place; returns ``self``. On torch the trainable leaves require gradients."""
        for name, module in self._networks.items():
            self._params[name] = convert_params(self._params[name], backend, device)
            module.params = self._params[name]
            if self._owns_target[name]:
                self._target_params[name] = convert_params(
                    self._target_params[name], backend, device, requires_grad=False
                )
            else:
                self._refresh_target(name)
        self._relink_shared()
        return self

    def _relink_shared(self) -> None:
        """Re-read trees from modules that share sub-modules after a move."""
        for name, module in self._networks.items():
            self._params[name] = module.params
            if not self._owns_target[name]:
                self._refresh_target(name)

    # -- value estimator ----------------------------------------------------------------
    @property
    def value_estimator(self) -> Any:
        """The value estimator; the default one is built on first use."""
        if self._value_estimator is None and self.default_value_estimator is not None:
            self.make_value_estimator()
        return self._value_estimator

    @value_estimator.setter
    def value_estimator(self, estimator: Any) -> None:
        self._value_estimator = estimator

    def make_value_estimator(
        self, value_type: ValueEstimators | str | None = None, **hyperparams: Any
    ) -> LossModule:
        """Build the value estimator ``value_type`` (a :class:`ValueEstimators` member or
        its lower-case name; default :attr:`default_value_estimator`) with TorchRL's
        default hyper-parameters updated by ``hyperparams``."""
        value_type = ValueEstimators.parse(value_type or self.default_value_estimator)
        if value_type not in self.SUPPORTED_VALUE_ESTIMATORS:
            supported = [v.name for v in self.SUPPORTED_VALUE_ESTIMATORS]
            raise NotImplementedError(
                f"{type(self).__name__} does not support {value_type.name}; "
                f"supported: {supported}"
            )
        from . import value as estimators

        classes = {
            ValueEstimators.TD0: estimators.TD0Estimator,
            ValueEstimators.TD1: estimators.TD1Estimator,
            ValueEstimators.TDLambda: estimators.TDLambdaEstimator,
            ValueEstimators.GAE: estimators.GAE,
            ValueEstimators.MAGAE: estimators.MultiAgentGAE,
            ValueEstimators.VTrace: estimators.VTrace,
        }
        kwargs = {**default_value_kwargs(value_type), **hyperparams}
        kwargs.update(self._value_estimator_networks(value_type))
        self.value_type = value_type
        self._value_estimator = classes[value_type](**kwargs)
        self._forward_value_estimator_keys()
        return self

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The networks the estimator calls (``value_network``, V-trace's actor)."""
        return {}

    # -- calling ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """The ``loss_*`` terms and diagnostics for ``batch``."""
        raise NotImplementedError

    def __call__(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        return self.forward(batch, params)

    @staticmethod
    def working_copy(batch: Any) -> ArrayDict:
        """An ``ArrayDict`` view of ``batch`` the loss may write into (leaves shared)."""
        return as_arraydict(batch).clone(recurse=False)

    def reset(self) -> None:
        """Reset adaptive state (KL-PEN's β); nothing by default."""


def _as_coeff(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _first_leaf(tree: Mapping[str, Any]) -> Any:
    """The first array of a nested tree in flattening order (``None`` if it has none),
    without flattening the whole tree."""
    for value in tree.values():
        found = _first_leaf(value) if isinstance(value, Mapping) else value
        if found is not None:
            return found
    return None


def _tree_backend(tree: Params) -> Backend | None:
    leaves = flatten_params(tree)
    return backend_of(next(iter(leaves.values()))) if leaves else None


def _loaded(tree: Params, prefix: str, state: Mapping[str, Any]) -> Params:
    """``tree`` with every leaf overwritten by ``state[<prefix>.<path>]``."""
    flat = flatten_params(tree)
    new = {}
    for path, leaf in flat.items():
        new[path] = backend_of(leaf).write_into(leaf, _host(state[f"{prefix}.{path}"]))
    return unflatten_params(new)


def _host(x: Any) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else backend_of(x).to_numpy(x)


def _mask_like(mask: Any, loss: Any) -> Any:
    """``mask`` with trailing singleton dims dropped, then padded to ``loss``'s rank."""
    xp = backend_of(mask).xp
    while mask.ndim > loss.ndim and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim > loss.ndim:
        raise ValueError(
            f"a mask of shape {tuple(mask.shape)} cannot apply to a loss of shape "
            f"{tuple(loss.shape)}"
        )
    mask = xp.reshape(mask, tuple(mask.shape) + (1,) * (loss.ndim - mask.ndim))
    return xp.broadcast_to(mask, tuple(loss.shape))

