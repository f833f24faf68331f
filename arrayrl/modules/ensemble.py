"""Ensembles by stacked parameters: ``E`` copies of one network in one batched matmul.

An ensemble is not a new kind of network but a new kind of parameter tree: the trees of
``E`` members of identical structure, stacked leaf-wise along a new leading axis. A
:class:`~arrayrl.modules.layers.Linear` layer given a weight of shape ``(E, out, in)``
computes every member at once (``(E, N, in) @ (E, in, out)``), and element-wise layers
(activations, :class:`~arrayrl.modules.layers.NormalParamExtractor`) act on the member
axis like on any batch axis, so any :class:`~arrayrl.modules.layers.Sequential` or
:class:`~arrayrl.modules.layers.MLP` runs as an ensemble without ``vmap``.

>>> import numpy as np
>>> from arrayrl.modules import MLP
>>> from arrayrl.modules.ensemble import Ensemble
>>> critics = Ensemble.from_seeds(lambda seed: MLP(3, 1, [8], seed=seed), seeds=[0, 1])
>>> critics(np.zeros((5, 3), np.float32)).shape
(2, 5, 1)

Only arrayrl layers take stacked parameters; a ``torch.nn.Module`` wrapped by
:class:`~arrayrl.modules.torch_adapter.TorchLayer` does not (it would need ``vmap``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from arrayrl.backends import backend_of

from ._params import Params, flatten_params, map_params, unflatten_params
from .layers import Layer

__all__ = [
    "Ensemble",
    "apply_ensemble",
    "ensemble_params",
    "expand_params",
    "stack_params",
    "unstack_params",
]


def _check_same_structure(flats: Sequence[dict[str, Any]]) -> None:
    """``ValueError`` unless every flat tree has the names and leaf shapes of the first."""
    first = flats[0]
    for k, flat in enumerate(flats[1:], start=1):
        if set(flat) != set(first):
            raise ValueError(
                f"tree {k} has parameters {sorted(flat)}, tree 0 has {sorted(first)}; "
                "ensemble members must share one structure"
            )
        for name, leaf in flat.items():
            if tuple(leaf.shape) != tuple(first[name].shape):
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(leaf.shape)} in tree {k} but "
                    f"{tuple(first[name].shape)} in tree 0"
                )


def stack_params(trees: Iterable[Mapping[str, Any]]) -> Params:
    """Stack ``E`` parameter trees of one structure leaf-wise along a new leading axis.

    Parameters
    ----------
    trees : iterable of parameter trees
        The members' trees: same names, leaf shapes, dtypes and backend.

    Returns
    -------
    Params
        A tree of the same structure whose leaves have shape ``(E, *leaf.shape)``.
        On torch the stack is recorded by autograd (gradients flow back to the members'
        leaves); :class:`Ensemble` turns it into new trainable leaves.

    Raises
    ------
    ValueError
        If ``trees`` is empty or the trees differ in names or shapes.
    """
    flats = [flatten_params(tree) for tree in trees]
    if not flats:
        raise ValueError("stack_params needs at least one parameter tree")
    _check_same_structure(flats)
    stacked = {}
    for name in flats[0]:
        leaves = [flat[name] for flat in flats]
        stacked[name] = backend_of(*leaves).xp.stack(leaves, axis=0)
    return unflatten_params(stacked)


def unstack_params(tree: Mapping[str, Any]) -> list[Params]:
    """The members' trees of a stacked tree: the inverse of :func:`stack_params`.

    Member ``k``'s leaves are the views ``leaf[k]`` (no copy; on torch they stay in the
    graph of the stacked leaves).
    """
    flat = flatten_params(tree)
    if not flat:
        raise ValueError("unstack_params needs a non-empty parameter tree")
    sizes = {int(leaf.shape[0]) if leaf.ndim else None for leaf in flat.values()}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"the leaves do not share a leading member axis (sizes {sizes})")
    (members,) = sizes
    return [map_params(lambda leaf, k=k: leaf[k, ...], tree) for k in range(members)]


def ensemble_params(factory: Callable[[int], Layer], seeds: Iterable[int]) -> Params:
    """The stacked tree of ``factory(seed)`` for each seed (e.g. ``range(E)``)."""
    return stack_params([factory(seed).params for seed in seeds])


def _trainable(tree: Params) -> Params:
    """Fresh autograd leaves (detached copies of the stack) on torch; ``tree`` elsewhere."""
    flat = flatten_params(tree)
    backend = backend_of(**flat) if flat else None
    if backend is None or not backend.differentiable:
        return tree
    return map_params(lambda leaf: backend.stop_gradient(leaf).requires_grad_(True), tree)


def _reject_torch_layers(members: Sequence[Layer]) -> None:
    adapter = sys.modules.get("arrayrl.modules.torch_adapter")
    if adapter is not None and any(isinstance(m, adapter.TorchLayer) for m in members):
        raise TypeError(
            "Ensemble needs arrayrl layers (stacked weights run as batched matmuls); a "
            "TorchLayer-wrapped torch.nn.Module cannot take stacked parameters"
        )


class Ensemble(Layer):
    """``E`` members of one architecture computed at once from stacked parameters.

    Parameters
    ----------
    members : sequence of Layer
        Built layers of identical structure (e.g. ``MLP``s with different seeds). The
        first one supplies the computation; all supply their parameters, stacked by
        :func:`stack_params` into :attr:`params` (fresh trainable leaves on torch).
    shared_input : bool, default True
        ``True``: every member reads the same input ``(..., in)`` (a leading axis of size
        1 is added). ``False``: the input already has the member axis first,
        ``(E, ..., in)``.

    Notes
    -----
    The output has the member axis first: ``(E, ..., out)``. ``apply(params, x)`` takes
    any stacked tree, so a target ensemble is a second stacked tree.
    """

    def __init__(self, members: Sequence[Layer], *, shared_input: bool = True) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("Ensemble needs at least one member")
        _reject_torch_layers(members)
        self.template = members[0]
        self.num_copies = len(members)
        self.shared_input = shared_input
        self.params = _trainable(stack_params([m.params for m in members]))

    @classmethod
    def from_seeds(
        cls,
        factory: Callable[[int], Layer],
        seeds: Iterable[int],
        *,
        shared_input: bool = True,
    ) -> Ensemble:
        """One member ``factory(seed)`` per seed: ``Ensemble.from_seeds(lambda s:
        MLP(4, 1, [64], seed=s), range(5))``."""
        return cls([factory(seed) for seed in seeds], shared_input=shared_input)

    def apply(self, params: Params, *inputs: Any) -> Any:
        if self.shared_input:
            inputs = tuple(backend_of(x).xp.expand_dims(x, axis=0) for x in inputs)
        return self.template.apply(params, *inputs)

    def member_params(self) -> list[Params]:
        """Each member's tree, as views into :attr:`params` (see :func:`unstack_params`)."""
        return unstack_params(self.params)


# ---------------------------------------------------------------------------------------
# Ensembles of a dict-level module (a loss's Q networks)
# ---------------------------------------------------------------------------------------
def expand_params(
    tree: Mapping[str, Any], num: int, *, rng: Any, shared: Iterable[Any] = ()
) -> Params:
    """``num`` members made from one network's tree, by TorchRL 0.14.1's rule.

    Each leaf becomes a ``(num, *leaf.shape)`` leaf drawn uniformly on
    ``[min(leaf), max(leaf)]`` (every element of every member drawn independently, leaves
    in flattening order): TorchRL's ``convert_to_functional(expand_dim=num)`` without
    ``compare_against``. A leaf that is one of ``shared`` (a parameter the loss also
    trains elsewhere, e.g. a trunk shared with the actor) is broadcast instead, without
    gradient (TorchRL's ``compare_against``). On torch the drawn leaves are fresh
    trainable leaves.

    Parameters
    ----------
    tree : parameter tree
        The network's own parameters (one member).
    num : int
        The number of members.
    rng : arrayrl.random.Generator
        Where the draws come from. With TorchRL modules and no seed, a loss passes
        torch's default generator, which reproduces TorchRL's members after the same
        ``torch.manual_seed``.
    shared : iterable of arrays
        Leaves to broadcast rather than draw.
    """
    shared_ids = {id(leaf) for leaf in shared}

    def member_leaf(leaf: Any) -> Any:
        backend = backend_of(leaf)
        shape = (num, *tuple(leaf.shape))
        if id(leaf) in shared_ids:
            return backend.xp.broadcast_to(backend.stop_gradient(leaf), shape)
        host = backend.to_numpy(leaf)
        low, high = float(host.min()), float(host.max())
        drawn = rng.uniform(shape, leaf.dtype, low=low, high=high)
        return drawn.requires_grad_(True) if backend.differentiable else drawn

    return map_params(member_leaf, tree)


def _runs_stacked(module: Any) -> bool:
    """Whether ``module`` computes every member at once from stacked parameters: a
    :class:`~arrayrl.modules.dict_module.DictModule` over an arrayrl layer."""
    from .dict_module import DictModule

    adapter = sys.modules.get("arrayrl.modules.torch_adapter")
    wraps_torch = adapter is not None and isinstance(module.module, adapter.TorchLayer)
    return isinstance(module, DictModule) and isinstance(module.module, Layer) and not wraps_torch


def apply_ensemble(
    module: Any,
    params: Mapping[str, Any],
    batch: Any,
    *,
    member_inputs: bool = False,
) -> dict[Any, Any]:
    """The outputs of every member of an ensemble, member axis first.

    Parameters
    ----------
    module : Module
        The network (``in_keys``, ``out_keys``).
    params : parameter tree
        Stacked parameters, leaves ``(E, ...)``.
    batch : ArrayDict or TensorDict
        Holds the ``in_keys`` entries, batch size ``B``.
    member_inputs : bool, default False
        ``False``: every member reads the same inputs ``(*B, ...)``. ``True``: the inputs
        carry the member axis first, ``(E, *B, ...)``, member ``e`` reading ``x[e]``.

    Returns
    -------
    dict
        ``{out_key: array (E, *B, ...)}``.

    Notes
    -----
    A :class:`~arrayrl.modules.DictModule` over arrayrl layers runs as one batched
    computation (stacked matmuls). Any other module (a TorchRL module, an LSTM or a
    dropout critic, a ``torch.nn.Module``) runs once per member with that member's
    parameters, so no ``vmap`` is needed and anything that runs once runs as an ensemble.
    """
    from arrayrl.data import ArrayDict

    from .dict_module import read_key

    owner = type(module).__name__
    inputs = {key: read_key(batch, key, owner) for key in module.in_keys}
    batch_size = tuple(batch.batch_size)
    if _runs_stacked(module):
        xs = [x if member_inputs else backend_of(x).xp.expand_dims(x, axis=0)
              for x in inputs.values()]
        out = module.module.apply(params.get("module", {}), *xs)
        outputs = out if isinstance(out, tuple) else (out,)
        return dict(zip(module.out_keys, outputs))
    member_size = batch_size[1:] if member_inputs else batch_size
    results = []
    for e, member in enumerate(unstack_params(params)):
        entries = {k: (x[e] if member_inputs else x) for k, x in inputs.items()}
        results.append(module(ArrayDict(entries, member_size), params=member))
    first = results[0].get(module.out_keys[0])
    xp = backend_of(first).xp
    return {key: xp.stack([r.get(key) for r in results], axis=0) for key in module.out_keys}
