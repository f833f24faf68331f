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

__all__ = ["Ensemble", "ensemble_params", "stack_params", "unstack_params"]


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
