"""Pieces shared by the actor-critic losses (PPO, A2C, REINFORCE).

Two mixins for :class:`~arrayrl.objectives.common.LossModule` subclasses and one helper:

- :class:`EntropyBonusMixin`: ``H(π_θ)`` (closed form, or a Monte-Carlo estimate drawn
  from the loss's own seeded generator) and the ``entropy`` / ``loss_entropy`` terms;
- :class:`CriticLossMixin`: the value estimator call and the per-sample critic distance
  ``d(V_target, V_φ(s))``, with TorchRL's optional value clipping and ``separate_losses``;
- :func:`reduce_terms`: reduce every ``loss_*`` term with the loss's reduction and masks.

and what the Q-learning losses (DQN, discrete CQL, discrete IQL) share:
:func:`is_bare_network`, :func:`qvalue_actor_for` (TorchRL's
``ensure_tensordict_compatible``) and :func:`discrete_action_space`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, flatten_params, map_params
from arrayrl.modules.adapt import as_value_norm

from .utils import ValueEstimators, distance_loss

__all__ = [
    "CriticLossMixin",
    "EntropyBonusMixin",
    "discrete_action_space",
    "is_bare_network",
    "is_composite",
    "qvalue_actor_for",
    "reduce_terms",
    "sum_head_features",
]


class EntropyBonusMixin:
    """The entropy bonus of a policy-gradient loss.

    The host class sets ``entropy_bonus``, ``entropy_coeff`` (a registered coefficient),
    ``samples_mc_entropy`` and ``seed``; draws come from ``LossModule.generator``.
    """

    def _entropy(self, dist: Any, backend: Any) -> Any:
        """``H(π_θ)`` per sample with a trailing unit dim: closed form where one exists,
        else ``−(1/n) Σᵢ log π(xᵢ)`` over ``n = samples_mc_entropy`` reparameterised draws
        ``xᵢ ~ π`` from the loss's generator on ``backend``."""
        from arrayrl.modules.distributions import entropy_estimate

        rng = self.generator(backend)
        entropy = entropy_estimate(dist, self.samples_mc_entropy, rng=rng)
        return entropy if is_composite(dist) else entropy[..., None]

    def _entropy_terms(self, dist: Any, like: Any) -> dict[str, Any]:
        """``{"entropy": mean H (no gradient), "loss_entropy": −c_H·H}``, or ``{}``
        without ``entropy_bonus``. ``like`` is the advantage (batch shape + ``(1,)``):
        it gives the backend and, for a composite distribution, the batch dims."""
        if not self.entropy_bonus:
            return {}
        backend = backend_of(like)
        entropy = self._entropy(dist, backend)
        if is_composite(dist):
            return self._composite_entropy_terms(entropy, like.ndim - 1, backend)
        if getattr(self, "_entropy_coeff_map", None) is not None:
            raise TypeError(
                "per-head entropy coefficients (an entropy_coeff mapping) need an actor with "
                f"a CompositeDistribution; {type(dist).__name__} has one head"
            )
        return {
            "entropy": backend.stop_gradient(backend.xp.mean(entropy)),
            "loss_entropy": -self.entropy_coeff * entropy,
        }

    def _composite_entropy_terms(self, heads: Any, batch_ndim: int, backend: Any) -> dict:
        """The entropy terms of a composite distribution (TorchRL's ``_get_entropy`` and
        ``_weighted_loss_entropy``).

        Each head's entropy ``H_h`` gets a unit dim after the batch dims. With a scalar
        coefficient ``loss_entropy = −c·Σ_h Σ_features H_h``; with a mapping
        ``{"<head>_entropy": c_h}`` it is ``Σ_h −c_h·H_h`` (``KeyError`` for a head with no
        coefficient). ``entropy`` is the batch mean of ``Σ_h Σ_features H_h`` and
        ``composite_entropy`` the per-head entropies, both without gradient.
        """
        xp = backend.xp
        keys = heads.keys(include_nested=True, leaves_only=True)
        per_head = {key: xp.expand_dims(heads.get(key), axis=batch_ndim) for key in keys}
        total = sum_head_features(per_head, batch_ndim + 1, xp)
        coeffs = getattr(self, "_entropy_coeff_map", None)
        if coeffs is None:
            loss = -self.entropy_coeff * total
        else:
            loss = sum(-_head_coeff(coeffs, key) * value for key, value in per_head.items())
        batch_size = (*heads.batch_size[:batch_ndim], 1)
        detached = {key: backend.stop_gradient(value) for key, value in per_head.items()}
        return {
            "composite_entropy": ArrayDict(detached, batch_size),
            "entropy": backend.stop_gradient(xp.mean(total)),
            "loss_entropy": loss,
        }


def _head_coeff(coeffs: Mapping[Any, float], key: Any) -> float:
    """The entropy coefficient of head ``key``; ``KeyError`` naming it when missing."""
    try:
        return coeffs[key]
    except KeyError:
        raise KeyError(f"Missing entropy coeff for head '{key}'") from None


def is_composite(dist: Any) -> bool:
    """Whether ``dist`` is a multi-head (composite) distribution."""
    return bool(getattr(dist, "is_composite", False))


def sum_head_features(heads: Mapping[Any, Any], batch_ndim: int, xp: Any) -> Any:
    """``Σ_h Σ_features heads[h]``: each head summed over its dims after the first
    ``batch_ndim``, then summed over heads (TorchRL's ``_sum_td_features``)."""
    total = None
    for value in heads.values():
        extra = tuple(range(batch_ndim, value.ndim))
        value = xp.sum(value, axis=extra) if extra else value
        total = value if total is None else total + value
    return total


class CriticLossMixin:
    """The critic side of an actor-critic loss.

    The host class registers ``critic_network`` (and ``actor_network``) and sets
    ``loss_critic_type``, ``separate_losses`` and ``clip_value`` (a coefficient or
    ``None``).
    """

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The estimator's networks: the critic, and the actor for V-trace's log π."""
        networks = {"value_network": self.critic_network}
        if value_type is ValueEstimators.VTrace:
            networks["actor_network"] = self.actor_network
        return networks

    def _advantage(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """The batch's advantage, computed by the value estimator when it is missing,
        then divided by ``advantage_norm.scale()`` when the loss has one."""
        computed = batch.get(self.tensor_keys.advantage, None) is None
        if computed:
            self._estimate_advantage(batch, params)
        advantage = self.read(batch, self.tensor_keys.advantage)
        if getattr(self, "advantage_norm", None) is None:
            return advantage
        return self._scale_advantage(advantage, batch, update=computed)

    def set_advantage_norm(self, advantage_norm: Any) -> None:
        """Hold ``advantage_norm`` (an arrayrl or TorchRL ``ValueNorm``, or ``None``) as
        ``self.advantage_norm``, its state in :meth:`state_dict` (TorchRL's
        ``advantage_norm.*`` names); a TorchRL normaliser is copied
        (:func:`arrayrl.modules.adapt.as_value_norm`)."""
        if advantage_norm is None:
            self.advantage_norm = None
            return
        norm = as_value_norm(advantage_norm, "advantage_norm", owner=type(self).__name__)
        self.register_state("advantage_norm", norm)

    def _scale_advantage(self, advantage: Any, batch: ArrayDict, *, update: bool) -> Any:
        """``A / advantage_norm.scale()`` (no re-centring: the value baseline centres
        ``A``), after folding the batch's value targets into the statistics when
        ``update`` (the loss computed the advantage) and the loss is in training mode.
        Rows the validity masks mark invalid are left out of the update (TorchRL's
        ``_valid_value_target_rows``)."""
        norm = self.advantage_norm.match_backend(advantage)
        if update and self.training:
            target = self.read(batch, self.tensor_keys.value_target, what="value_target")
            norm.update(self._valid_rows(target, batch, len(norm.shape)))
        return advantage / norm.scale()

    def _valid_rows(self, value: Any, batch: ArrayDict, value_ndim: int) -> Any:
        """The entries of ``value`` (shape ``[*B, *value_shape]``, ``value_ndim`` trailing
        dims) at the batch positions every validity mask of the batch keeps, as
        ``[n, *value_shape]``; ``value`` itself when the batch has no mask."""
        backend = backend_of(value)
        xp = backend.xp
        lead = tuple(value.shape[: max(value.ndim - value_ndim, 0)])
        mask = self._batch_mask(batch, xp.zeros(lead, dtype=xp.bool, device=backend.device))
        if mask is None:
            return value
        return value[xp.astype(mask, xp.bool)]

    def _estimate_advantage(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> None:
        """Run the value estimator on ``batch`` (it writes the advantage and value
        target) with the critic's parameters cut from the graph; the bootstrap values
        come from the target copy when the loss owns one, else from the same tree."""
        detached = self.detached_params("critic_network", params)
        owns_target = self._owns_target["critic_network"]
        target = self._target_params["critic_network"] if owns_target else detached
        self.value_estimator(batch, params=detached, target_params=target)

    def _critic_params(self, params: Mapping[str, Params] | None) -> Params:
        """The critic's tree; with ``separate_losses`` the arrays it shares with the
        actor are cut from the graph, so that only the policy loss trains them (TorchRL's
        ``compare_against``)."""
        tree = self.network_params("critic_network", params)
        if not self.separate_losses:
            return tree
        actor = self.network_params("actor_network", params)
        shared = {id(leaf) for leaf in flatten_params(actor).values()}

        def cut(leaf: Any) -> Any:
            return backend_of(leaf).stop_gradient(leaf) if id(leaf) in shared else leaf

        return map_params(cut, tree)

    def _critic_distance(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any, Any, Any]:
        """``(d(V_target, V_φ(s)), clip fraction or None, V_target, V_φ(s))`` per sample.

        With ``clip_value = c`` the distance is ``max(d(V_target, V), d(V_target, V'))``
        where ``V' = V_old + clip(V − V_old, −c, c)`` and ``V_old`` is the value stored
        in the batch (Schulman et al. 2017's value clipping as in OpenAI baselines). The
        critic writes its output into ``batch``. The three values pass through
        :meth:`_critic_loss_inputs` first, so the distance, the clipping and the
        returned ``V_target`` / ``V_φ(s)`` (PPO's ``explained_variance``) are on its scale.
        """
        target = self.read(batch, self.tensor_keys.value_target, what="value_target")
        old_value = self.read(batch, self.tensor_keys.value) if self.clip_value else None
        self.critic_network(batch, self._critic_params(params))
        value = self.read(batch, self.tensor_keys.value)
        target, value, old_value = self._critic_loss_inputs(target, value, old_value)
        loss = distance_loss(target, value, self.loss_critic_type)
        if not self.clip_value:
            return loss, None, target, value
        loss, clip_fraction = self._clip_value_loss(old_value, value, target, loss)
        return loss, clip_fraction, target, value

    def _critic_loss_inputs(
        self, target_return: Any, state_value: Any, old_state_value: Any
    ) -> tuple[Any, Any, Any]:
        """``(V_target, V_φ(s), V_old)`` as the critic distance sees them: the identity
        here; TorchRL's hook, which MAPPO overrides to compare normalised values
        (``value_norm``). ``old_state_value`` is ``None`` without ``clip_value``."""
        return target_return, state_value, old_state_value

    def _clip_value_loss(self, old: Any, value: Any, target: Any, loss: Any) -> tuple[Any, Any]:
        """The pessimistic (larger) of the plain and the clipped value losses, and the
        share of clipped value steps (no gradient)."""
        backend = backend_of(value)
        xp = backend.xp
        step = value - old
        clipped = xp.clip(step, min=-self.clip_value, max=self.clip_value)
        fraction = backend.stop_gradient(xp.mean(xp.astype(step != clipped, value.dtype)))
        loss_clipped = distance_loss(target, old + clipped, self.loss_critic_type)
        return xp.maximum(loss, loss_clipped), fraction


def reduce_terms(loss_module: Any, out: dict[str, Any], batch: ArrayDict) -> ArrayDict:
    """Reduce every ``loss_*`` entry of ``out`` with ``loss_module.reduce_loss`` (masks
    applied), drop a trailing unit dim (TorchRL's ``squeeze(-1)``), pack the rest as is."""
    for name, value in out.items():
        if name.startswith("loss_"):
            reduced = loss_module.reduce_loss(value, batch)
            out[name] = reduced[..., 0] if reduced.ndim and reduced.shape[-1] == 1 else reduced
    return ArrayDict(out)


# -- Q-learning losses: the value network and its action space -------------------------------
def is_bare_network(obj: Any) -> bool:
    """Whether ``obj`` is a network that reads no keys: an arrayrl ``Layer``, or a
    ``torch.nn.Module`` that is not a tensordict module (what TorchRL wraps in a
    ``QValueActor``)."""
    from arrayrl.modules.adapt import is_torch_object
    from arrayrl.modules.layers import Layer

    if isinstance(obj, Layer):
        return True
    if not is_torch_object(obj) or "torch" not in sys.modules:
        return False
    import torch

    tensordict_module = any(c.__name__ == "TensorDictModuleBase" for c in type(obj).__mro__)
    return isinstance(obj, torch.nn.Module) and not tensordict_module


def qvalue_actor_for(value_network: Any, action_space: Any, owner: str) -> Any:
    """``value_network``, a bare network wrapped in a ``QValueActor`` over
    ``"observation"`` (TorchRL's ``ensure_tensordict_compatible``): ``action_space`` is a
    name, or a spec (a composite's ``"action"`` entry becomes the actor's ``spec``).
    ``ValueError`` for a bare network without ``action_space``."""
    if not is_bare_network(value_network):
        return value_network
    from arrayrl.modules.actors import QValueActor
    from arrayrl.specs import action_spec_for

    if action_space is None:
        raise ValueError(
            f"{owner}: a bare value network needs action_space= ('one-hot', 'categorical', "
            "'mult-one-hot', 'binary' or a spec) to be wrapped in a QValueActor. Neither "
            "action_space nor spec was given."
        )
    if isinstance(action_space, str):
        return QValueActor(value_network, action_space=action_space)
    return QValueActor(value_network, spec=action_spec_for(action_space, "action", owner=owner))


def discrete_action_space(
    action_space: Any, owner: str, *, network: Any = None, supported: tuple[str, ...] | None = None
) -> str:
    """The canonical action space of a discrete loss: ``action_space`` (a name or a spec),
    else ``network``'s; one-hot with TorchRL 0.14.1's ``UserWarning`` when neither says.
    ``ValueError`` for a space outside ``supported`` (when given)."""
    from arrayrl.modules.actors import canonical_action_space

    if action_space is None:
        action_space = getattr(network, "action_space", None)
    if action_space is None:
        warnings.warn(
            f"action_space was not specified. {owner} will default to 'one-hot'. This "
            "behavior will be deprecated soon and a space will have to be passed. Check "
            f"the {owner} documentation to see how to pass the action space.",
            UserWarning,
            stacklevel=3,
        )
        action_space = "one-hot"
    space = canonical_action_space(action_space)
    if supported is not None and space not in supported:
        raise ValueError(
            f"{owner}: action_space={action_space!r} is not supported; pass one of "
            f"{list(supported)} (or a spec of that kind)"
        )
    return space
