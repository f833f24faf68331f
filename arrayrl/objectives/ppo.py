"""Proximal Policy Optimisation: ``PPOLoss``, ``ClipPPOLoss``, ``KLPENPPOLoss``.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
https://arxiv.org/abs/1707.06347. With ``r = π_θ(a|s) / π_old(a|s)`` and advantage ``A``:

- ``PPOLoss``:      ``L = −r·A`` (the plain importance-weighted policy gradient);
- ``ClipPPOLoss``:  ``L = −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A)``;
- ``KLPENPPOLoss``: ``L = −(r·A − β·KL(π_old ‖ π_θ))`` with β adapted towards ``dtarg``.

Each adds ``loss_entropy = −c_H·H(π_θ)`` (``entropy_bonus``) and
``loss_critic = c_V·d(V_target, V_φ(s))`` (``d`` = ``loss_critic_type``, optionally with
the value clipped to ``clip_value`` around the stored value). Arguments, defaults, output
keys and diagnostics follow TorchRL 0.14.1 (``torchrl/objectives/ppo.py``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl._validation import coefficient, count, hyperparameter, reject_unknown_kwargs
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ._shared import (
    CriticLossMixin,
    EntropyBonusMixin,
    is_composite,
    reduce_terms,
    sum_head_features,
)
from .common import LossModule
from .utils import ValueEstimators

__all__ = ["ClipPPOLoss", "KLPENPPOLoss", "PPOLoss"]

_CRITIC_LOSSES = ("l1", "l2", "smooth_l1")
#: Keyword arguments TorchRL removed in v0.11, and their new names.
_REMOVED = {"entropy_coef": "entropy_coeff", "critic_coef": "critic_coeff"}
_CLIP_NAMES = ("clip_epsilon", "clip_epsilon_low", "clip_epsilon_high")


def _non_negative(value: float) -> str | None:
    return "must be >= 0" if value < 0 else None


def _positive(value: float) -> str | None:
    return "must be > 0" if value <= 0 else None


class PPOLoss(EntropyBonusMixin, CriticLossMixin, LossModule):
    """The unclipped PPO objective (see the module docstring); base of the PPO family.

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy; its ``get_dist(batch, params)`` gives π_θ.
    critic_network : Module, optional
        The value network writing ``tensor_keys.value``; may be ``None`` when
        ``critic_coeff`` is ``None`` or 0 (no critic loss).
    entropy_bonus : bool, default True
    samples_mc_entropy : int, default 1
        Samples of the Monte-Carlo entropy estimate for distributions without a closed
        form (TanhNormal).
    entropy_coeff : float or mapping, default 0.01
        A mapping gives each head of a composite actor its own coefficient, keyed by
        the head's entropy key ``"<head>_entropy"`` (the key TorchRL 0.14.1 looks up);
        a head with no coefficient raises ``KeyError``. With a composite actor the output
        also has ``composite_entropy`` (per-head entropies) and the log-ratio is summed
        over heads (``set_keys(sample_log_prob=[...], action=[...])``, set from the
        actor's ``log_prob_keys`` / ``dist_sample_keys``).
    log_explained_variance : bool, default True
        Adds ``explained_variance = 1 − Var(V_target − V) / (Var(V_target) + eps)``.
    critic_coeff : float, optional
        1.0 when a critic is given; ``None`` or 0 drops ``loss_critic``.
    loss_critic_type : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    normalize_advantage : bool, default False
        Standardise the advantage over the batch (unbiased std, clamped at 1e-6), or over
        the valid entries of ``"shifted_valid"`` when the batch has one.
    normalize_advantage_exclude_dims : tuple of int, default ()
        Dimensions kept independent by the standardisation (e.g. an agent dim).
    advantage_norm : ValueNorm, optional
        Divide the advantage by ``advantage_norm.scale()``, without re-centring (the
        value baseline already centres it): e.g. a
        :class:`~arrayrl.modules.value_norm.PercentileValueNorm` for DreamerV3's return
        normalisation. In training mode (:meth:`train`) the statistics are first
        updated with the value targets when the loss computes the advantage itself
        (the batch has none), leaving out rows that the validity masks
        (:attr:`loss_mask_key`) mark invalid; with a precomputed advantage call
        ``advantage_norm.update(value_target)`` once per rollout yourself. A TorchRL
        normaliser is copied (:func:`arrayrl.modules.adapt.as_value_norm`): the loss
        owns ``loss.advantage_norm``, saved in ``state_dict()`` and moved by ``to()``.
        Mutually exclusive with ``normalize_advantage`` (``ValueError``).

    separate_losses : bool, default False
        Train the parameters the critic shares with the actor (a shared trunk) on the
        policy loss only, and cut the critic loss's gradient to the batch.
    reduction : {"mean", "sum", "none"}, default "mean"
    clip_value : float, optional
        Clip the new value to ``[V_old − c, V_old + c]`` and keep the larger loss.
    delay_actor : bool, default False
        Keep a target copy of the actor as the proximal policy (updated with
        :class:`~arrayrl.objectives.utils.SoftUpdate` / ``HardUpdate``).
    max_importance_ratio : float, optional
        Cap of π_θ / π_behaviour (through a gradient-free shift of the behaviour log-prob).
    seed : int, optional
        Seed of the loss's own generator (Monte-Carlo entropy). ``None`` (default): seed 0
        for arrayrl networks; with TorchRL / torch networks, torch's default generator in
        TorchRL's order, so ``torch.manual_seed`` reproduces TorchRL's numbers.

    ``functional`` must be ``True``. ``gamma`` and the ``*_key`` arguments raise as in
    TorchRL (use ``make_value_estimator`` / ``set_keys``).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        value: Any = "state_value"
        sample_log_prob: Any = "action_log_prob"
        action: Any = "action"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_value_estimator = ValueEstimators.GAE
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
        ValueEstimators.GAE,
        ValueEstimators.MAGAE,
        ValueEstimators.VTrace,
    )

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coeff: float | None = None,
        log_explained_variance: bool = True,
        critic_coeff: float | None = None,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        normalize_advantage_exclude_dims: tuple[int, ...] = (),
        advantage_norm: Any = None,
        gamma: float | None = None,
        separate_losses: bool = False,
        advantage_key: Any = None,
        value_target_key: Any = None,
        value_key: Any = None,
        functional: bool = True,
        actor: Any = None,
        critic: Any = None,
        reduction: str | None = None,
        clip_value: float | None = None,
        delay_actor: bool = False,
        max_importance_ratio: float | None = None,
        device: Any = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        _reject_kwargs(type(self).__name__, kwargs)
        actor_network = actor if actor is not None else actor_network
        critic_network = critic if critic is not None else critic_network
        _reject_unsupported(gamma, functional, advantage_key, value_target_key, value_key)
        _check_advantage_norm(advantage_norm, normalize_advantage)
        critic_coeff = _resolve_critic_coeff(critic_coeff, critic_network)
        if actor_network is None or (critic_network is None and critic_coeff is not None):
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        if loss_critic_type not in _CRITIC_LOSSES:
            raise ValueError(
                f"unknown loss_critic_type {loss_critic_type!r}; expected one of {_CRITIC_LOSSES}"
            )
        samples_mc_entropy = count("samples_mc_entropy", samples_mc_entropy)
        exclude_dims = _exclude_dims(normalize_advantage_exclude_dims)
        super().__init__()
        self.convert_to_functional(actor_network, "actor_network", create_target_params=delay_actor)
        if critic_network is not None:
            self.convert_to_functional(critic_network, "critic_network")
        else:
            self.critic_network = None
        self.delay_actor = delay_actor
        self.entropy_bonus = entropy_bonus
        self.samples_mc_entropy = samples_mc_entropy
        self.log_explained_variance = log_explained_variance
        self.loss_critic_type = loss_critic_type
        self.normalize_advantage = normalize_advantage
        self.normalize_advantage_exclude_dims = exclude_dims
        self.set_advantage_norm(advantage_norm)
        self.separate_losses = separate_losses
        self.reduction = reduction
        self.seed = seed
        self._entropy_coeff_map = _entropy_coeff_map(entropy_coeff)
        if self._entropy_coeff_map is not None:
            entropy_coeff = 0.0  # the scalar is unused then, as TorchRL's buffer
        self.register_coeff(
            "entropy_coeff", 0.01 if entropy_coeff is None else entropy_coeff, _non_negative
        )
        self.register_coeff("critic_coeff", critic_coeff, _non_negative)
        self.register_coeff("clip_value", clip_value, _positive)
        self.register_coeff("max_importance_ratio", max_importance_ratio, _positive)
        actor = self.actor_network
        log_prob_keys, action_keys = actor.log_prob_keys, actor.dist_sample_keys
        if len(log_prob_keys) > 1:  # a composite actor: one key per head, as TorchRL
            self.set_keys(sample_log_prob=list(log_prob_keys), action=list(action_keys))
        else:
            self.set_keys(sample_log_prob=log_prob_keys[0], action=action_keys[0])

    # -- keys ---------------------------------------------------------------------------
    @property
    def _has_critic(self) -> bool:
        return self.critic_coeff is not None and self.critic_coeff > 0

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``)."""
        actor_keys = self.actor_network.in_keys
        keys = [*actor_keys, *(("next", *_as_tuple(k)) for k in actor_keys)]
        if self.critic_network is not None:
            keys += self.critic_network.in_keys
        tk = self.tensor_keys
        keys += [*_key_list(tk.action), *_key_list(tk.sample_log_prob)]
        keys += [("next", *_as_tuple(k)) for k in (tk.reward, tk.done, tk.terminated)]
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """The keys :meth:`forward` returns (TorchRL's ``out_keys``)."""
        keys = ["loss_objective"]
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        if self._has_critic:
            keys.append("loss_critic")
        if self.clip_value:
            keys.append("value_clip_fraction")
        return keys

    # -- pieces of the objective -------------------------------------------------------
    def _advantage(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """The batch's advantage, computed by the value estimator when it is missing,
        then divided by ``advantage_norm.scale()`` or standardised, as configured."""
        advantage = batch.get(self.tensor_keys.advantage, None)
        computed = advantage is None
        if computed:
            if self.critic_network is None:
                raise KeyError(
                    f"the batch has no {self.tensor_keys.advantage!r} and the loss has no "
                    "critic to compute it"
                )
            self._estimate_advantage(batch, params)
            advantage = self.read(batch, self.tensor_keys.advantage)
        if self.advantage_norm is not None:
            return self._scale_advantage(advantage, batch, update=computed)
        if self.normalize_advantage and math.prod(advantage.shape) > 1:
            advantage = self._standardize(advantage, batch)
        return advantage

    def _standardize(self, advantage: Any, batch: ArrayDict) -> Any:
        """``(A − mean) / std`` over all dims but the excluded ones (TorchRL's rule).

        An excluded dim outside the advantage's dims raises ``ValueError``; excluding
        every dim returns the advantage as is (both as TorchRL's ``_standardize``; its
        masked branch checks neither, and reduces over every dim when all are excluded).
        """
        xp = backend_of(advantage).xp
        ndim = advantage.ndim
        axes = _standardized_axes(self.normalize_advantage_exclude_dims, tuple(advantage.shape))
        if not axes:
            warnings.warn(
                "normalize_advantage_exclude_dims excludes every dim of the advantage: it is "
                "returned unstandardised (as TorchRL does)",
                stacklevel=3,
            )
            return advantage
        mask = batch.get("shifted_valid", None)
        if mask is None:
            mean = xp.mean(advantage, axis=axes, keepdims=True)
            std = xp.std(advantage, axis=axes, keepdims=True, correction=1)
            return (advantage - mean) / xp.clip(std, min=1e-6)
        while mask.ndim < ndim:
            mask = mask[..., None]
        weight = xp.astype(xp.broadcast_to(mask, advantage.shape), advantage.dtype)
        count = xp.clip(xp.sum(weight, axis=axes, keepdims=True), min=1.0)
        mean = xp.sum(advantage * weight, axis=axes, keepdims=True) / count
        var = xp.sum((advantage - mean) ** 2 * weight, axis=axes, keepdims=True) / count
        return (advantage - mean) / xp.clip(xp.sqrt(var), min=1e-4)

    def _log_prob(self, batch: ArrayDict, params: Params) -> tuple[Any, Any]:
        """``log π(a|s)`` of the stored action under ``params``, and the distribution.

        For a composite distribution the action is the batch's ``action`` keys (one per
        head) and the log-prob is summed over heads and their features.
        """
        dist = self.actor_network.get_dist(batch, params)
        if not is_composite(dist):
            return dist.log_prob(self.read(batch, self.tensor_keys.action)), dist
        action = self._select(batch, self.tensor_keys.action, "action")
        heads = dist.log_prob(action)
        keys = self.tensor_keys.sample_log_prob
        if not isinstance(keys, list):
            keys = heads.keys(include_nested=True, leaves_only=True)
        return self._sum_heads(heads, keys, batch), dist

    def _select(self, batch: ArrayDict, keys: Any, field: str) -> ArrayDict:
        """The sub-dict of ``batch`` holding ``keys`` (a key or a list of keys)."""
        for key in _key_list(keys):
            self.read(batch, key, what=field)
        return batch.select(*_key_list(keys))

    def _sum_heads(self, heads: Any, keys: list[Any], batch: ArrayDict) -> Any:
        """``Σ_h Σ_features heads[h]`` over ``keys``, batch-shaped like the advantage."""
        batch_ndim = self.read(batch, self.tensor_keys.advantage).ndim - 1
        missing = [key for key in keys if heads.get(key, None) is None]
        if missing:
            present = heads.keys(include_nested=True, leaves_only=True)
            raise KeyError(
                f"the composite log-prob has no {missing}; its keys are {present} "
                "(set_keys(sample_log_prob=...) renames them)"
            )
        values = {key: heads.get(key) for key in keys}
        return sum_head_features(values, batch_ndim, backend_of(*values.values()).xp)

    def _previous_log_prob(self, batch: ArrayDict) -> Any:
        """The behaviour log-prob stored in the batch; summed over heads when
        ``sample_log_prob`` lists one key per head."""
        keys = self.tensor_keys.sample_log_prob
        if not isinstance(keys, list):
            return self.read(batch, keys)
        return self._sum_heads(self._select(batch, keys, "sample_log_prob"), keys, batch)

    def _ratio(
        self, batch: ArrayDict, advantage: Any, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any, Any, Any, Any]:
        """``(A, log r, π_θ, kl_approx, log w_is)``: :meth:`_log_weight`, with the
        advantage shaped like ``log r`` (:func:`_advantage_like`)."""
        log_weight, dist, kl_approx, log_is = self._log_weight(batch, params)
        return _advantage_like(advantage, log_weight), log_weight, dist, kl_approx, log_is

    def _log_weight(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any, Any, Any]:
        """``(log r, π_θ, kl_approx, log w_is)`` as TorchRL's ``_log_weight``:
        ``log r = log π_θ − log π_prox`` (π_prox is the target actor with ``delay_actor``,
        the behaviour policy otherwise) and ``log w_is`` the gradient-free correction to
        the behaviour ratio (``None`` when there is none)."""
        prev = self._previous_log_prob(batch)
        backend = backend_of(prev)
        log_prob, dist = self._log_prob(batch, self.network_params("actor_network", params))
        self._check_log_prob_shapes(log_prob, prev)
        prox = prev
        if self.delay_actor:
            with backend.no_grad():
                prox, _ = self._log_prob(batch, self._target_params["actor_network"])
            prox = backend.stop_gradient(prox)
        log_weight = (log_prob - prox)[..., None]
        kl_approx = (prox - log_prob)[..., None]
        log_is = (prox - prev)[..., None] if self.delay_actor else None
        if self.max_importance_ratio is not None:
            xp = backend.xp
            cap = math.log(self.max_importance_ratio) - backend.stop_gradient(log_weight)
            log_is = xp.minimum(xp.zeros_like(log_weight) if log_is is None else log_is, cap)
        return log_weight, dist, kl_approx, log_is

    def _check_log_prob_shapes(self, log_prob: Any, prev: Any) -> None:
        """``ValueError`` naming both keys and shapes when ``log π_θ(a|s)`` and the
        stored log-prob differ in shape: ``[N, 1]`` against ``[N]`` would broadcast the
        ratio into an ``[N, N]`` outer product (TorchRL 0.14.1 does; arrayrl refuses)."""
        if tuple(log_prob.shape) != tuple(prev.shape):
            tk = self.tensor_keys
            raise ValueError(
                f"the log-probability of {tk.action!r} under the actor has shape "
                f"{tuple(log_prob.shape)} but the stored {tk.sample_log_prob!r} has shape "
                f"{tuple(prev.shape)}; they must be equal (a trailing unit dim on one side "
                "would broadcast the ratio into an outer product over samples)"
            )

    def loss_critic(
        self, batch: ArrayDict, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, Any, Any]:
        """``(c_V·d(V_target, V), value clip fraction or None, explained variance or None)``."""
        backend = backend_of(batch.get(_first_key(self.tensor_keys.action)))
        if self.separate_losses:
            batch = batch.apply(backend.stop_gradient)
        loss, clip_fraction, target, value = self._critic_distance(batch, params)
        variance = self._explained_variance(target, value) if self.log_explained_variance else None
        if self._has_critic:
            loss = self.critic_coeff * loss
        return loss, clip_fraction, variance

    @staticmethod
    def _explained_variance(target: Any, value: Any) -> Any:
        """``1 − Var(target − value) / (Var(target) + eps)``, no gradient.

        The (population) variances are over every dim but the last, so a value of shape
        ``[*B, 1]`` gives shape ``[1]`` whatever the batch dims. TorchRL 0.14.1 reduces
        dim 0 only (``[T, 1]`` for a ``[B, T]`` batch, ``[T, agents, 1]`` for MAPPO's);
        both agree on one batch dim (deviation ``torchrl-ppo-diagnostics-first-dim``).
        """
        backend = backend_of(value)
        xp = backend.xp
        target, value = backend.stop_gradient(target), backend.stop_gradient(value)
        eps = xp.finfo(target.dtype).eps
        axes = tuple(range(target.ndim - 1))
        return 1.0 - xp.var(target - value, axis=axes) / (xp.var(target, axis=axes) + eps)

    def _critic_terms(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> dict:
        if not self._has_critic:
            return {}
        loss, clip_fraction, variance = self.loss_critic(batch, params)
        out = {"loss_critic": loss}
        if clip_fraction is not None:
            out["value_clip_fraction"] = clip_fraction
        if variance is not None:
            out["explained_variance"] = variance
        return out

    def _finish(self, out: dict[str, Any], batch: ArrayDict) -> ArrayDict:
        """Reduce every ``loss_*`` term (masks applied) and pack the output."""
        return reduce_terms(self, out, batch)

    def _prepare(self, batch: Any, params: Mapping[str, Params] | None) -> tuple[Any, Any]:
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, _first_key(self.tensor_keys.action))
        return batch, self._advantage(batch, params)

    # -- the loss ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_objective = −r·A`` plus entropy and critic terms and ``kl_approx``."""
        batch, advantage = self._prepare(batch, params)
        advantage, log_weight, dist, kl_approx, log_is = self._ratio(batch, advantage, params)
        backend = backend_of(advantage)
        xp = backend.xp
        if log_is is not None:
            log_weight = log_weight + log_is
        out = {
            "loss_objective": -xp.exp(log_weight) * advantage,
            "kl_approx": backend.stop_gradient(xp.mean(kl_approx)),
        }
        out.update(self._entropy_terms(dist, advantage))
        out.update(self._critic_terms(batch, params))
        return self._finish(out, batch)


class ClipPPOLoss(PPOLoss):
    """The clipped surrogate objective (see the module docstring).

    Parameters
    ----------
    clip_epsilon : float or (float, float), default 0.2
        ε, or ``(ε_low, ε_high)`` for asymmetric clipping (scheduled then as
        ``clip_epsilon_low`` / ``clip_epsilon_high``). Must be > 0 (and ε_low < 1).
    clip_value : bool or float, optional
        ``True`` clips the value with ε (symmetric ε only).
    **kwargs
        As :class:`PPOLoss`.

    Diagnostics: ``clip_fraction`` (share of clipped ratios), ``ESS`` (effective sample
    size of the behaviour ratios over the whole batch, divided by its size: a scalar),
    ``kl_approx``, ``max_ratio``, ``mean_ratio``, ``entropy``, ``explained_variance``
    (shape ``[1]``), ``value_clip_fraction``.
    """

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        clip_epsilon: float | tuple[float, float] = 0.2,
        clip_value: bool | float | None = None,
        **kwargs: Any,
    ) -> None:
        asymmetric = isinstance(clip_epsilon, (tuple, list))
        if isinstance(clip_value, bool):
            if clip_value and asymmetric:
                raise ValueError(
                    "clip_value=True cannot take its threshold from an asymmetric "
                    "clip_epsilon; pass a float"
                )
            clip_value = clip_epsilon if clip_value else None
        super().__init__(actor_network, critic_network, clip_value=clip_value, **kwargs)
        self._asymmetric_clip = asymmetric
        low, high = _clip_pair(clip_epsilon)
        if asymmetric:
            self.register_coeff("clip_epsilon_low", low, _clip_low)
            self.register_coeff("clip_epsilon_high", high, _positive)
        else:
            self.register_coeff("clip_epsilon", low, _clip_low)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CLIP_NAMES and name not in self._coeffs and "_asymmetric_clip" in vars(self):
            kind = "an asymmetric" if self._asymmetric_clip else "a symmetric"
            raise AttributeError(f"cannot set {name!r}: the loss has {kind} clip_epsilon")
        super().__setattr__(name, value)

    @property
    def _clip_bounds(self) -> tuple[float, float]:
        """``(log(1 − ε_low), log(1 + ε_high))``: the clip range of ``log r``."""
        if self._asymmetric_clip:
            return math.log1p(-self.clip_epsilon_low), math.log1p(self.clip_epsilon_high)
        return math.log1p(-self.clip_epsilon), math.log1p(self.clip_epsilon)

    @property
    def out_keys(self) -> list[str]:
        keys = ["loss_objective", "clip_fraction", *super().out_keys[1:]]
        return [*keys, "ESS", "kl_approx", "max_ratio", "mean_ratio"]

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_objective = −min(r·A, clip(r)·A)`` plus entropy, critic and diagnostics."""
        batch, advantage = self._prepare(batch, params)
        batch_ndim = advantage.ndim - 1  # the advantage is [*B, 1]
        advantage, log_weight, dist, kl_approx, log_is = self._ratio(batch, advantage, params)
        backend = backend_of(advantage)
        xp = backend.xp
        log_behav = log_weight if log_is is None else log_weight + log_is
        low, high = self._clip_bounds
        log_clipped = xp.clip(log_weight, min=low, max=high)
        clip_fraction = xp.mean(xp.astype(log_clipped != log_weight, log_weight.dtype))
        if log_is is not None:
            log_clipped = log_clipped + log_is
        gain = xp.minimum(xp.exp(log_behav) * advantage, xp.exp(log_clipped) * advantage)
        out = {"loss_objective": -gain, "clip_fraction": clip_fraction}
        out["kl_approx"] = backend.stop_gradient(xp.mean(kl_approx))
        out.update(self._entropy_terms(dist, advantage))
        out.update(self._critic_terms(batch, params))
        out.update(_ratio_diagnostics(backend.stop_gradient(log_behav), batch_ndim))
        return self._finish(out, batch)


class KLPENPPOLoss(PPOLoss):
    """PPO with an adaptive KL penalty (see the module docstring).

    ``KL(π_old ‖ π_θ)`` is closed-form where :func:`kl_divergence` has the pair, else a
    Monte-Carlo estimate over ``samples_mc_kl`` draws of π_old. π_old is built from the
    distribution parameters stored in the batch (the target actor with ``delay_actor``).
    After each call, β is multiplied by ``increment`` when the mean KL exceeds
    ``1.5·dtarg`` and by ``decrement`` when it is below ``dtarg / 1.5`` (this reads the
    KL on the host, as TorchRL does). ``kl`` is returned per sample.
    """

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        dtarg: float = 0.01,
        beta: float = 1.0,
        increment: float = 2,
        decrement: float = 0.5,
        samples_mc_kl: int = 1,
        **kwargs: Any,
    ) -> None:
        if len(getattr(actor_network, "dist_sample_keys", ())) > 1:
            raise NotImplementedError(
                "KLPENPPOLoss does not support composite (multi-head) actors yet: the KL "
                "between composite distributions is not implemented; use ClipPPOLoss"
            )
        super().__init__(actor_network, critic_network, **kwargs)
        self.dtarg = coefficient("dtarg", dtarg, allow_none=False)
        self.increment = hyperparameter("increment", increment, low=1.0, high=math.inf)
        self.decrement = hyperparameter("decrement", decrement, low=0.0, high=1.0)
        self.samples_mc_kl = count("samples_mc_kl", samples_mc_kl)
        self._beta_init = beta
        self.register_coeff("beta", beta, _non_negative)

    @property
    def out_keys(self) -> list[str]:
        return ["loss_objective", "kl", *super().out_keys[1:]]

    def _previous_dist(self, batch: ArrayDict) -> Any:
        if self.delay_actor:
            backend = backend_of(batch.get(_first_key(self.tensor_keys.action)))
            with backend.no_grad():
                return self.actor_network.get_dist(
                    batch.clone(recurse=False), self._target_params["actor_network"]
                )
        return self.actor_network.build_dist_from_params(batch)

    def _kl(self, previous: Any, current: Any, like: Any) -> Any:
        from arrayrl.modules.distributions import kl_divergence

        try:
            return kl_divergence(previous, current)
        except NotImplementedError:
            draws = previous.sample((self.samples_mc_kl,), rng=self.generator(backend_of(like)))
            xp = backend_of(like).xp
            return xp.mean(previous.log_prob(draws) - current.log_prob(draws), axis=0)

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_objective = −(r·A − β·KL)``; adapts β afterwards."""
        batch, advantage = self._prepare(batch, params)
        previous = self._previous_dist(batch)
        advantage, log_weight, dist, kl_approx, log_is = self._ratio(batch, advantage, params)
        backend = backend_of(advantage)
        xp = backend.xp
        if log_is is not None:
            log_weight = log_weight + log_is
        kl = self._kl(previous, dist, advantage)[..., None]
        out = {"loss_objective": -(xp.exp(log_weight) * advantage - self.beta * kl)}
        self._adapt_beta(float(xp.mean(backend.stop_gradient(kl))))
        out["kl"] = backend.stop_gradient(kl)
        out["kl_approx"] = backend.stop_gradient(xp.mean(kl_approx))
        out.update(self._entropy_terms(dist, advantage))
        out.update(self._critic_terms(batch, params))
        return self._finish(out, batch)

    def _adapt_beta(self, mean_kl: float) -> None:
        if mean_kl > self.dtarg * 1.5:
            self.beta = self.beta * self.increment
        elif mean_kl < self.dtarg / 1.5:
            self.beta = self.beta * self.decrement

    def reset(self) -> None:
        """Restore β to its initial value."""
        self.beta = self._beta_init


def _ratio_diagnostics(log_behav: Any, batch_ndim: int) -> dict[str, Any]:
    """The effective sample size of the behaviour ratios ``w = exp(log_behav)`` over the
    ``N`` samples of the batch (its first ``batch_ndim`` dims, all of them), per sample,
    ``ESS = (Σ w)² / (Σ w²) / N`` (computed as ``exp(2·LSE(log w) − LSE(2·log w)) / N``):
    a scalar, or one per action dim of an element-wise log-ratio ``[*B, A, 1]``; and the
    max and mean ratio.

    TorchRL 0.14.1 reduces dim 0 only (``ESS`` of shape ``[T]`` for a ``[B, T]`` batch);
    both agree on one batch dim (deviation ``torchrl-ppo-diagnostics-first-dim``).
    """
    xp = backend_of(log_behav).xp
    lw = log_behav[..., 0]
    lw = xp.reshape(lw, (math.prod(lw.shape[:batch_ndim]), *lw.shape[batch_ndim:]))
    ess = xp.exp(2 * _logsumexp(lw) - _logsumexp(2 * lw))
    ratio = xp.exp(log_behav)
    return {"ESS": ess / lw.shape[0], "max_ratio": xp.max(ratio), "mean_ratio": xp.mean(ratio)}


def _logsumexp(x: Any) -> Any:
    """``log Σ exp(x)`` over dim 0, shifted by the max for stability (one call on torch)."""
    return backend_of(x).logsumexp(x, axis=0)


def _check_advantage_norm(advantage_norm: Any, normalize_advantage: bool) -> None:
    """TorchRL's ``ValueError`` when both advantage rescalings are asked for."""
    if advantage_norm is not None and normalize_advantage:
        raise ValueError(
            "normalize_advantage=True and advantage_norm are mutually exclusive: pass "
            "either the mean/std standardization flag or a ValueNorm instance, not both."
        )


def _advantage_like(advantage: Any, log_weight: Any) -> Any:
    """The advantage shaped like ``log r``.

    Equal shapes pass. A per-sample advantage ``batch + (1,)`` against a log-ratio with
    extra per-action dims, ``batch + dims + (1,)`` (an element-wise ``Normal``), is spread
    over those dims, as TorchRL does. Anything else would broadcast into an outer product
    over samples and raises ``ValueError``.
    """
    adv_shape, lw_shape = tuple(advantage.shape), tuple(log_weight.shape)
    if adv_shape == lw_shape:
        return advantage
    batch = adv_shape[:-1]
    spreadable = (
        adv_shape[-1:] == (1,)
        and lw_shape[-1:] == (1,)
        and len(lw_shape) > len(adv_shape)
        and lw_shape[: len(batch)] == batch
    )
    if not spreadable:
        raise ValueError(
            f"the advantage (shape {adv_shape}) must have the shape of the log-ratio "
            f"{lw_shape}: batch shape + (1,); a missing trailing dim would broadcast into "
            "an outer product over samples"
        )
    xp = backend_of(advantage).xp
    extra = len(lw_shape) - len(adv_shape)
    spread = xp.reshape(advantage, (*batch, *(1,) * extra, 1))
    return xp.broadcast_to(spread, lw_shape)


def _clip_pair(clip_epsilon: Any) -> tuple[Any, Any]:
    """``(ε_low, ε_high)`` as given (``register_coeff`` checks each value)."""
    if isinstance(clip_epsilon, (tuple, list)):
        if len(clip_epsilon) != 2:
            raise ValueError(f"clip_epsilon must be a float or a pair, got {clip_epsilon}")
        return clip_epsilon[0], clip_epsilon[1]
    return clip_epsilon, clip_epsilon


def _reject_kwargs(owner: str, kwargs: Mapping[str, Any]) -> None:
    """TorchRL's errors for the removed ``*_coef`` names; ``TypeError`` naming ``owner``
    for any other keyword (TorchRL 0.14.1 swallows them silently: a deviation)."""
    for name in kwargs:
        if name in _REMOVED:
            raise TypeError(
                f"'{name}' has been removed in torchrl v0.11. Please use "
                f"'{_REMOVED[name]}' instead."
            )
    reject_unknown_kwargs(owner, kwargs)


def _exclude_dims(dims: Any) -> tuple[int, ...]:
    """``normalize_advantage_exclude_dims`` as a tuple of distinct ints (``TypeError``
    for a non-int, ``ValueError`` for a repeat, as TorchRL's ``_standardize``)."""
    if isinstance(dims, (int, np.integer)) and not isinstance(dims, bool):
        dims = (dims,)
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(
            f"normalize_advantage_exclude_dims must be a tuple of ints, got {dims!r}"
        ) from None
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"normalize_advantage_exclude_dims must be a tuple of ints, got {dims!r}")
    dims = tuple(int(d) for d in dims)
    if len(set(dims)) != len(dims):
        raise ValueError(f"normalize_advantage_exclude_dims has repeated dims: {dims}")
    return dims


def _standardized_axes(exclude_dims: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of an advantage of ``shape`` that the standardisation averages over;
    ``ValueError`` naming the argument and the advantage's ndim for a dim out of range
    or two dims that are the same axis."""
    ndim = len(shape)
    bad = [d for d in exclude_dims if not -ndim <= d < ndim]
    if bad:
        raise ValueError(
            f"normalize_advantage_exclude_dims={exclude_dims} is out of range for an "
            f"advantage with {ndim} dims (shape {shape}): {bad}"
        )
    excluded = {d % ndim for d in exclude_dims}
    if len(excluded) != len(exclude_dims):
        raise ValueError(
            f"normalize_advantage_exclude_dims={exclude_dims} names the same dim twice for "
            f"an advantage with {ndim} dims"
        )
    return tuple(d for d in range(ndim) if d not in excluded)


def _clip_low(value: float) -> str | None:
    return "must be in (0, 1)" if not 0 < value < 1 else None


def _resolve_critic_coeff(critic_coeff: float | None, critic_network: Any) -> float | None:
    if critic_coeff is None and critic_network is not None:
        return 1.0
    return None if critic_coeff == 0 else critic_coeff


def _reject_unsupported(gamma: Any, functional: bool, *keys: Any) -> None:
    if gamma is not None:
        raise TypeError(
            "gamma is not a loss argument; use loss.make_value_estimator(value_type, gamma=...)"
        )
    if not functional:
        raise NotImplementedError("functional=False is not supported")
    if any(key is not None for key in keys):
        raise RuntimeError("setting keys through the constructor is deprecated; use set_keys()")


def _as_tuple(key: Any) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)


def _key_list(key: Any) -> list[Any]:
    """``key`` as a list of keys (a list of keys is kept, TorchRL's composite keys)."""
    return list(key) if isinstance(key, list) else [key]


def _first_key(key: Any) -> Any:
    """The key, or the first of a list of keys."""
    return key[0] if isinstance(key, list) else key


def _entropy_coeff_map(entropy_coeff: Any) -> dict[Any, float] | None:
    """A per-head coefficient mapping ``{"<head>_entropy": c}`` as floats (keys as
    TorchRL looks them up: the composite entropy's leaf keys), or ``None`` for a scalar."""
    if not isinstance(entropy_coeff, Mapping):
        return None
    coeffs = {}
    for key, value in entropy_coeff.items():
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        coeffs[key] = coefficient(f"entropy_coeff[{key!r}]", value, allow_none=False)
    return coeffs
