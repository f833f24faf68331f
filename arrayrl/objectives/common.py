"""``LossModule``: the base class of every loss, with TorchRL 0.14.1's interface.

A loss owns its networks' parameter trees (``<name>_params``, trainable, and
``target_<name>_params``), its configurable batch keys (``tensor_keys``, changed with
``set_keys``), its schedulable coefficients (``loss.entropy_coeff = 0.02``), its value
estimator, and the reduction. ``forward(batch, params=None)`` returns an ``ArrayDict`` of
``loss_*`` terms plus diagnostics; passing ``params`` makes it a pure function of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from arrayrl._validation import coefficient, count, network_name
from arrayrl.backends import BACKEND_NAMES, Backend, backend_of, get_backend
from arrayrl.data import ArrayDict, as_arraydict, is_tensordict
from arrayrl.modules import Module, Params, convert_params, flatten_params, map_params
from arrayrl.modules._params import unflatten_params
from arrayrl.modules.adapt import as_module, is_torch_object
from arrayrl.modules.batchrenorm import _holders
from arrayrl.modules.ensemble import apply_ensemble, expand_params, stack_params

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
    #: Mode of the generators made from ``seed`` (:func:`arrayrl.random.make_generator`):
    #: ``"native"`` draws with the backend's own generator; ``"numpy"`` draws with NumPy
    #: and converts, so every backend sees the same noise (the conformance suite sets
    #: it to compare Monte-Carlo estimates across backends). Set it before the first call.
    generator_mode: str = "native"

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
        self._generators: dict[Any, Any] = {}
        self._seed: int | None = None
        self._has_torch_modules = False
        self._ensemble_size: dict[str, int] = {}
        #: Paths of an ensemble's leaves broadcast from another network's
        #: (``compare_against``): not trained through this network, not listed.
        self._shared_paths: dict[str, frozenset[str]] = {}
        self._own_params: dict[str, Any] = {}
        #: Arrays held but not trained (TorchRL's buffers): see :meth:`register_buffer`.
        self._buffers: dict[str, Any] = {}
        #: Stateful sub-objects (value normalisers) by name: see :meth:`register_state`.
        self._states: dict[str, Any] = {}
        #: TorchRL's (``nn.Module``'s) mode flag: see :meth:`train`.
        self.training = True

    @property
    def functional(self) -> bool:
        """Always ``True`` (TorchRL's flag): every network computes with a parameter
        tree, the loss's own or one passed to :meth:`forward`."""
        return True

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

    def _checked_coeff(self, name: str, value: Any) -> float | None:
        """``value`` for coefficient ``name``: a finite, non-negative float or ``None``
        (:func:`arrayrl._validation.coefficient`) that also passes the loss's check."""
        check = self._coeffs[name][1]
        value = coefficient(name, value)
        problem = None if value is None or check is None else check(value)
        if problem:
            raise ValueError(f"{name} {problem}, got {value}")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        coeffs = self.__dict__.get("_coeffs")
        if coeffs is not None and name in coeffs:
            value = self._checked_coeff(name, value)
            coeffs[name] = (value, coeffs[name][1])
            self.__dict__[name] = value  # a plain attribute read from now on (no __getattr__)
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        coeffs = self.__dict__.get("_coeffs", {})
        if name in coeffs:
            return coeffs[name][0]
        own = self.__dict__.get("_own_params", {})
        if name in own:
            return own[name]
        buffers = self.__dict__.get("_buffers", {})
        if name in buffers:
            return buffers[name]
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

    def reduce_loss(self, loss: Any, batch: Any = None, weights: Any = None) -> Any:
        """Reduce ``loss`` with :attr:`reduction`, dropping masked-out positions.

        ``mean`` averages over the valid positions (at least one); ``sum`` adds them;
        ``none`` keeps the shape with masked positions set to zero. Masked values are
        selected away (``where``), so a NaN there never reaches the result.

        ``weights`` (importance weights of a prioritised replay buffer, the shape of
        ``loss``) make ``mean`` the weighted mean ``Σ w·ℓ / Σ w`` and ``sum`` and
        ``none`` weight each term, as TorchRL 0.14.1's ``_reduce``.
        """
        xp = backend_of(loss).xp
        mask = None if batch is None else self._batch_mask(batch, loss)
        if weights is not None:
            weights = _checked_weights(weights, loss)
        if mask is not None:
            loss = xp.where(mask, loss, xp.zeros_like(loss))
            if weights is not None:
                weights = xp.where(mask, weights, xp.zeros_like(weights))
        if weights is not None:
            loss = loss * weights
        if self._reduction == "none":
            return loss
        if self._reduction == "sum":
            return xp.sum(loss)
        if weights is not None:
            return xp.sum(loss) / xp.sum(weights)
        if mask is None:
            return xp.mean(loss)
        count = xp.sum(xp.astype(mask, loss.dtype))
        return xp.sum(loss) / xp.clip(count, min=1.0)

    #: TorchRL's switch: ``"auto"`` or ``True`` weight the losses by the batch's
    #: ``priority_weight`` entry when it is there; ``False`` ignores it.
    use_prioritized_weights: str | bool = "auto"

    def priority_weight(self, batch: Any) -> Any:
        """The batch's importance weights (``tensor_keys.priority_weight``), or ``None``
        when the loss has no such key, the batch has no entry, or
        :attr:`use_prioritized_weights` is ``False``."""
        key = getattr(self._tensor_keys, "priority_weight", None)
        if key is None or self.use_prioritized_weights not in (True, "auto"):
            return None
        return batch.get(key, None)

    # -- networks and parameters -----------------------------------------------------
    def convert_to_functional(
        self,
        module: Any,
        name: str,
        expand_dim: int | None = None,
        *,
        create_target_params: bool = False,
        compare_against: Iterable[Any] | None = None,
    ) -> Module:
        """Register ``module`` as network ``name``: its parameter tree becomes
        ``<name>_params`` (trainable, shared with the module) and ``target_<name>_params``
        (a detached copy when ``create_target_params``, else a detached view).

        A TorchRL / tensordict module is adapted first (:func:`arrayrl.modules.as_module`);
        its parameters stay its own ``nn.Parameter`` objects. Returns the registered
        (possibly adapted) module, also reachable as ``self.<name>``.

        ``expand_dim=N`` makes an ensemble of ``N`` members: ``<name>_params`` becomes a
        stacked tree of the loss's own (leaves ``(N, ...)``), drawn from the module's by
        TorchRL's rule (:func:`arrayrl.modules.ensemble.expand_params`: uniform between
        each leaf's min and max, from :meth:`generator`, so a loss built from TorchRL
        modules without ``seed=`` draws TorchRL's members after the same
        ``torch.manual_seed``); leaves in ``compare_against`` are broadcast without
        gradient instead. A list of ``N`` modules of one structure stacks their trees;
        the first computes. Call members with :meth:`ensemble_outputs`.
        """
        if isinstance(module, (list, tuple)):
            return self._convert_ensemble_list(module, name, expand_dim, create_target_params)
        adapted = as_module(module, name, owner=type(self).__name__)
        if not hasattr(adapted, "params"):
            raise TypeError(
                f"{type(self).__name__}: {name} has no parameter tree (`params`); pass an "
                "arrayrl module or a TorchRL/tensordict module"
            )
        self._has_torch_modules |= adapted is not module
        module = adapted
        tree = module.params
        if expand_dim is not None:
            num = count("expand_dim", expand_dim)
            rng = self.generator(_tree_backend(tree) or get_backend("numpy"))
            shared = {id(leaf) for leaf in compare_against or ()}
            self._shared_paths[name] = frozenset(
                path for path, leaf in flatten_params(tree).items() if id(leaf) in shared
            )
            tree = expand_params(tree, num, rng=rng, shared=compare_against or ())
            self._ensemble_size[name] = num
        return self._register(module, name, tree, create_target_params)

    def _convert_ensemble_list(
        self, modules: Sequence[Any], name: str, expand_dim: int | None, create_target: bool
    ) -> Module:
        """:meth:`convert_to_functional` for a list of members (TorchRL's list form)."""
        if expand_dim is not None and len(modules) != expand_dim:
            raise ValueError(
                f"expand_dim={expand_dim} does not match the {len(modules)} modules given "
                f"for {name}"
            )
        owner = type(self).__name__
        members = [as_module(m, f"{name}[{k}]", owner=owner) for k, m in enumerate(modules)]
        self._has_torch_modules |= any(a is not m for a, m in zip(members, modules))
        tree = _fresh_leaves(stack_params([m.params for m in members]))
        self._ensemble_size[name] = len(members)
        return self._register(members[0], name, tree, create_target)

    def _register(self, module: Module, name: str, tree: Params, create_target: bool) -> Module:
        self._networks[name] = module
        object.__setattr__(self, name, module)
        self._params[name] = tree
        self._owns_target[name] = create_target
        self._refresh_target(name)
        return module

    def ensemble_size(self, name: str) -> int | None:
        """The number of members of network ``name`` (``None``: not an ensemble)."""
        return self._ensemble_size.get(name)

    def ensemble_outputs(
        self, name: str, batch: Any, params: Params, *, member_inputs: bool = False
    ) -> dict[Any, Any]:
        """Every member's outputs (member axis first) of ensemble ``name`` with the
        stacked ``params``; see :func:`arrayrl.modules.ensemble.apply_ensemble`."""
        return apply_ensemble(self._networks[name], params, batch, member_inputs=member_inputs)

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
        """The tree network ``name`` computes with: ``params[name]`` if given, else its own.

        Raises ``KeyError`` when ``params`` names a network the loss does not have, or
        when ``params[name]`` does not hold exactly the network's parameter paths.
        """
        if params is None:
            return self._params[name]
        owner = f"{type(self).__name__} (forward params=)"
        for given in params:
            network_name(given, self._networks, owner=owner)
        if name not in params:
            return self._params[name]
        tree = params[name]
        _check_tree_paths(f"params[{name!r}]", tree, self._params[name])
        return tree

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
            shared = self._shared_paths.get(name, frozenset())
            for path, leaf in flatten_params(tree).items():
                if id(leaf) not in seen and path not in shared:
                    seen.add(id(leaf))
                    yield f"{name}_params.{path}", leaf
        yield from self._own_params.items()

    def register_parameter(self, name: str, value: Any) -> Any:
        """Register a trainable array of the loss's own, outside any network (SAC's
        ``log_alpha``): readable as ``self.<name>``, listed by :meth:`parameters` under
        ``name``, saved by :meth:`state_dict`, moved by :meth:`to`. On torch it becomes a
        leaf that requires gradients. Returns the registered array."""
        backend = backend_of(value)
        if backend.differentiable:
            value = backend.stop_gradient(value).clone().requires_grad_(True)
        self._own_params[name] = value
        return value

    def register_buffer(self, name: str, value: Any) -> Any:
        """Hold ``value``, an array the loss uses but does not train (TorchRL's
        ``register_buffer``), as ``self.<name>``: saved by :meth:`state_dict` under
        ``name`` (unless it is ``None``, as torch's), restored by :meth:`load_state_dict`
        and moved by :meth:`to`; not listed by :meth:`parameters`. A copy is held, so
        that loading a state never writes into the caller's array. Returns the copy."""
        if value is not None:
            backend = backend_of(value)
            value = backend.xp.asarray(backend.stop_gradient(value), copy=True)
        self._buffers[name] = value
        return value

    def register_state(self, name: str, obj: Any) -> Any:
        """Hold ``obj``, a stateful sub-object (a value normaliser), as ``self.<name>``.

        ``obj`` offers ``state_dict()``, ``load_state_dict(state)`` and
        ``to(backend, device)`` (and may offer ``train(mode)``). Its state is saved by
        :meth:`state_dict` under ``"<name>.<entry>"`` (TorchRL's names for a sub-module's
        buffers: ``advantage_norm.low``, ``value_norm.running_mean``), restored by
        :meth:`load_state_dict` and moved by :meth:`to`; :meth:`train` passes the mode
        on. It is not trained (no parameters). Returns ``obj``.
        """
        self._states[name] = obj
        object.__setattr__(self, name, obj)
        return obj

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
        state.update(self._own_params)
        state.update({name: value for name, value in self._buffers.items() if value is not None})
        for name, obj in self._states.items():
            state.update({f"{name}.{key}": value for key, value in obj.state_dict().items()})
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
        current = self.state_dict()
        expected, given = set(current), set(state)
        if expected != given:
            raise KeyError(
                f"state_dict keys differ: missing {sorted(expected - given)}, "
                f"unexpected {sorted(given - expected)}"
            )
        # Check everything first (shapes, dtypes, coefficient values); only then write,
        # so that a bad entry leaves the loss as it was.
        coeffs = {c: self._checked_coeff(c, state[c]) for c in self._coeffs if c in state}
        arrays = {
            key: _checked_entry(key, state[key], leaf)
            for key, leaf in current.items()
            if key not in self._coeffs
        }
        for coeff, value in coeffs.items():
            setattr(self, coeff, value)
        for name in self._params:
            self._load_tree(name, arrays)
        for name, leaf in self._own_params.items():
            self._own_params[name] = backend_of(leaf).write_into(leaf, arrays[name])
        for name, leaf in self._buffers.items():
            if leaf is not None:
                self._buffers[name] = backend_of(leaf).write_into(leaf, arrays[name])
        for name, obj in self._states.items():
            own = obj.state_dict()
            obj.load_state_dict({key: arrays[f"{name}.{key}"] for key in own})
        return self

    def _load_tree(self, name: str, state: Mapping[str, Any]) -> None:
        keep = self._shared_paths.get(name, frozenset())
        self._params[name] = _loaded(self._params[name], f"{name}_params", state, keep)
        if name not in self._ensemble_size:  # an ensemble's tree is the loss's own
            self._networks[name].params = self._params[name]
        if self._owns_target[name]:
            target = self._target_params[name]
            self._target_params[name] = _loaded(target, f"target_{name}_params", state, keep)
        else:
            self._refresh_target(name)

    def to(self, backend: Any, device: Any = None) -> LossModule:
        """Move every network and parameter tree to ``backend`` in place; returns ``self``.

        ``backend`` is a backend name (``"numpy"``, ``"torch"``, ``"cupy"``, ...) with an
        optional ``device``, or, as TorchRL's ``loss.to(...)``, a device alone
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``): the current backend on
        that device. On torch the trainable leaves require gradients; networks adapted
        from torch modules move their own ``nn.Parameter`` objects.
        """
        backend, device = resolve_destination(self.backend, backend, device)
        for name, module in self._networks.items():
            module.to(backend, device)
            if name in self._ensemble_size:
                self._params[name] = convert_params(self._params[name], backend, device)
            else:
                self._params[name] = module.params
            if self._owns_target[name]:
                self._target_params[name] = convert_params(
                    self._target_params[name], backend, device, requires_grad=False
                )
            else:
                self._refresh_target(name)
        self._relink_shared()
        for name, leaf in self._own_params.items():
            self._own_params[name] = convert_params({name: leaf}, backend, device)[name]
        for name, leaf in self._buffers.items():
            if leaf is not None:
                moved = convert_params({name: leaf}, backend, device, requires_grad=False)
                self._buffers[name] = moved[name]
        for obj in self._states.values():
            obj.to(backend, device)
        return self

    def _relink_shared(self) -> None:
        """Re-read trees from modules that share sub-modules after a move."""
        for name, module in self._networks.items():
            if name in self._ensemble_size:
                continue
            self._params[name] = module.params
            if not self._owns_target[name]:
                self._refresh_target(name)

    # -- mode -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> LossModule:
        """Training (``True``) or evaluation mode, as ``torch.nn.Module.train``; returns
        ``self``.

        Sets :attr:`training` and passes the mode on to the networks' mode-dependent
        parts (``BatchRenorm1d`` layers, the torch modules of adapted TorchRL networks)
        and to the registered states. In evaluation mode the losses update no running
        statistics (``advantage_norm``), as TorchRL's.
        """
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self._networks.values():
            for _, holder in _holders(module):
                holder.train(mode)
        for obj in self._states.values():
            if callable(getattr(obj, "train", None)):
                obj.train(mode)
        return self

    def eval(self) -> LossModule:
        """Evaluation mode: ``train(False)``; returns ``self``."""
        return self.train(False)

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
        default hyper-parameters updated by ``hyperparams`` and the loss's networks.

        As TorchRL 0.14.1, ``value_type`` may also be an arrayrl estimator
        (:mod:`arrayrl.objectives.value`): an instance is used as it is (its networks and
        keys are the caller's; passing ``hyperparams`` with it raises ``TypeError``, where
        TorchRL ignores them), a class is built with ``hyperparams`` alone (give it its
        ``value_network``). :attr:`value_type` is then that class. A TorchRL estimator is
        refused with ``TypeError``: build arrayrl's of the same name.
        """
        if self._takes_estimator_object(value_type, hyperparams):
            return self
        value_type = ValueEstimators.parse(value_type or self.default_value_estimator)
        if value_type not in self.SUPPORTED_VALUE_ESTIMATORS:
            supported = [v.name for v in self.SUPPORTED_VALUE_ESTIMATORS]
            raise NotImplementedError(
                f"{type(self).__name__} does not support {value_type.name}; supported: {supported}"
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

    def _takes_estimator_object(self, value_type: Any, hyperparams: Mapping[str, Any]) -> bool:
        """Install ``value_type`` if it is an arrayrl estimator instance or class (see
        :meth:`make_value_estimator`); ``False`` for anything else."""
        from .value import ValueEstimatorBase

        if _is_torchrl_estimator(value_type):
            name = getattr(value_type, "__name__", type(value_type).__name__)
            raise TypeError(
                f"{type(self).__name__}.make_value_estimator got TorchRL's {name}; pass "
                f"arrayrl's (arrayrl.objectives.value.{name}, built on the same networks) "
                "or a ValueEstimators member"
            )
        if isinstance(value_type, ValueEstimatorBase):
            if hyperparams:
                raise TypeError(
                    "make_value_estimator got an estimator instance and hyper-parameters "
                    f"{sorted(hyperparams)}; set them when building the estimator"
                )
            estimator = value_type
        elif isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase):
            estimator = value_type(**hyperparams)
        else:
            return False
        self._value_estimator = estimator
        self.value_type = type(estimator)
        return True

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The networks the estimator calls (``value_network``, V-trace's actor)."""
        return {}

    # -- calling ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """The ``loss_*`` terms and diagnostics for ``batch``."""
        raise NotImplementedError

    #: Whether TorchRL's ``forward`` also returns the priority (DDPG and CrossQ do; the
    #: other off-policy losses only write it into the batch).
    priority_in_output: bool = False

    def __call__(self, batch: Any, params: Mapping[str, Params] | None = None) -> Any:
        """:meth:`forward`, then TorchRL's hand-over of the priority; the result is a
        ``tensordict.TensorDict`` when ``batch`` is one (as TorchRL's losses return), else
        an ``ArrayDict``."""
        out = self._hand_over_priority(batch, self.forward(batch, params))
        return out.to_tensordict() if is_tensordict(batch) else out

    def _hand_over_priority(self, batch: Any, out: ArrayDict) -> ArrayDict:
        """Set the priority :meth:`forward` returned (``tensor_keys.priority``, e.g.
        ``td_error``) in the caller's ``batch``, as TorchRL does, so that a prioritised
        replay buffer's ``update_tensordict_priority(batch)`` reads it. It is a new entry:
        no array the caller passed is written. It stays in the output only where TorchRL
        returns it too (:attr:`priority_in_output`)."""
        key = getattr(self._tensor_keys, "priority", None)
        value = None if key is None else out.get(key, None)
        if value is None:
            return out
        value = backend_of(value).stop_gradient(value)
        if hasattr(batch, "set"):
            batch.set(key, value)
        elif isinstance(batch, dict):
            batch[key] = value
        return out if self.priority_in_output else out.exclude(key)

    # -- randomness -------------------------------------------------------------------
    @property
    def seed(self) -> int | None:
        """The seed of the loss's generators (``None``: see :meth:`generator`); setting
        it (a non-negative int or ``None``) starts fresh generators."""
        return self._seed

    @seed.setter
    def seed(self, value: Any) -> None:
        self._seed = None if value is None else count("seed", value, minimum=0)
        self._generators = {}

    def generator(self, backend: Any) -> Any:
        """The loss's generator on ``backend``, made on first use.

        With ``seed=None`` (the default), a loss built from TorchRL / torch modules draws
        from torch's default generator, as TorchRL does (``torch.manual_seed`` reproduces
        TorchRL's numbers); any other loss uses seed 0. An explicit ``seed`` gives the
        loss its own generator (:attr:`generator_mode`).
        """
        from arrayrl.random import make_generator

        if backend not in self._generators:
            name = getattr(backend, "name", backend)
            if self.seed is None and self._has_torch_modules and name == "torch":
                rng = make_generator(None, backend, mode="global")
            else:
                seed = 0 if self.seed is None else self.seed
                rng = make_generator(seed, backend, mode=self.generator_mode)
            self._generators[backend] = rng
        return self._generators[backend]

    @staticmethod
    def working_copy(batch: Any) -> ArrayDict:
        """An ``ArrayDict`` view of ``batch`` the loss may write into (leaves shared)."""
        return as_arraydict(batch).clone(recurse=False)

    def reset(self) -> None:
        """Reset adaptive state (KL-PEN's β); nothing by default."""


def _checked_weights(weights: Any, loss: Any) -> Any:
    """``weights`` in ``loss``'s dtype; ``ValueError`` unless their shapes are equal
    (after dropping a trailing unit dim of ``weights``, as a buffer stores ``[B, 1]``)."""
    xp = backend_of(weights).xp
    if weights.ndim == loss.ndim + 1 and weights.shape[-1] == 1:
        weights = weights[..., 0]
    if tuple(weights.shape) != tuple(loss.shape):
        raise ValueError(
            f"priority_weight has shape {tuple(weights.shape)}, the loss it weights has "
            f"shape {tuple(loss.shape)}; they must match"
        )
    return xp.astype(weights, loss.dtype)


def _fresh_leaves(tree: Params) -> Params:
    """``tree``'s values as new trainable leaves on torch (a stack is not a leaf)."""
    backend = _tree_backend(tree)
    if backend is None or not backend.differentiable:
        return tree
    return map_params(lambda leaf: backend.stop_gradient(leaf).requires_grad_(True), tree)


def _check_tree_paths(name: str, tree: Any, own: Params) -> None:
    """``TypeError`` if ``tree`` is not a mapping, ``KeyError`` naming the missing and
    unexpected leaf paths if it differs from the network's own tree ``own``."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"{name} must be a parameter tree (a mapping), got {type(tree).__name__}")
    expected, given = set(flatten_params(own)), set(flatten_params(tree))
    if expected != given:
        raise KeyError(
            f"{name} does not match the network's parameters: missing "
            f"{sorted(expected - given)}, unexpected {sorted(given - expected)}"
        )


#: The dtype kinds a state entry must share with the array it is loaded into.
_DTYPE_KINDS = ("bool", "integral", "real floating", "complex floating")


def _dtype_kind(x: Any) -> str:
    """The Array API dtype kind of ``x`` (one of :data:`_DTYPE_KINDS`)."""
    xp = backend_of(x).xp
    return next((kind for kind in _DTYPE_KINDS if xp.isdtype(x.dtype, kind)), str(x.dtype))


def _checked_entry(key: str, value: Any, leaf: Any) -> np.ndarray:
    """State entry ``key`` as a host array that can be written into ``leaf``:
    ``ValueError`` for another shape, ``TypeError`` for another dtype kind."""
    if not hasattr(value, "shape"):
        raise TypeError(f"state_dict[{key!r}] must be an array, got {type(value).__name__}")
    host = _host(value)
    if tuple(host.shape) != tuple(leaf.shape):
        raise ValueError(
            f"state_dict[{key!r}] has shape {tuple(host.shape)}, but the loss's array has "
            f"shape {tuple(leaf.shape)}"
        )
    if _dtype_kind(host) != _dtype_kind(leaf):
        raise TypeError(
            f"state_dict[{key!r}] has dtype {host.dtype}, which cannot be loaded into the "
            f"loss's {leaf.dtype} array"
        )
    return host


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


def _loaded(
    tree: Params, prefix: str, state: Mapping[str, Any], keep: frozenset[str] = frozenset()
) -> Params:
    """``tree`` with every leaf overwritten by ``state[<prefix>.<path>]``, except the
    paths in ``keep`` (views of another network's leaves, which follow them)."""
    flat = flatten_params(tree)
    new = {}
    for path, leaf in flat.items():
        if path in keep:
            new[path] = leaf
        else:
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


def resolve_destination(current: Backend, backend: Any, device: Any) -> tuple[Any, Any]:
    """``loss.to(...)``'s arguments as ``(backend, device)``.

    A backend name or :class:`Backend` passes; a device alone (a ``torch.device``, or a
    string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``) means the current backend on
    that device (NumPy lives on the CPU only).
    """
    if isinstance(backend, Backend) or backend in BACKEND_NAMES:
        return backend, device
    if device is not None:
        raise TypeError(f"to({backend!r}, device={device!r}): give a backend name with a device")
    if is_torch_object(backend):  # a torch.device
        return "torch", backend
    if isinstance(backend, str):
        if current.name == "numpy" and backend == "cpu":
            return "numpy", None
        if current.name in ("torch", "cupy"):
            return current.name, backend
    raise ValueError(
        f"cannot move a loss on {current.name!r} to {backend!r}; pass a backend name "
        f"{list(BACKEND_NAMES)} with device=..., or a device of the current backend"
    )


def _is_torchrl_estimator(obj: Any) -> bool:
    """Whether ``obj`` is a TorchRL value estimator, instance or class (no import)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(
        base.__name__ == "ValueEstimatorBase" and base.__module__.startswith("torchrl")
        for base in cls.__mro__
    )
