"""Randomized ensembled double Q-learning: ``REDQLoss``.

Chen et al. 2021, "Randomized Ensembled Double Q-Learning: Learning Fast Without a
Model", https://arxiv.org/abs/2101.05982. A SAC-style actor-critic with an ensemble of
``N`` critics ``Q_1 … Q_N``; the Bellman target takes the minimum over a random subset
``M ⊂ {1 … N}`` of ``|M| = sub_sample_len`` target critics. With ``a~ ~ π_θ(·|s)`` and
``a' ~ π_θ(·|s')`` reparameterised draws and ``α = exp(clip(log α))``:

- ``loss_actor  = −(Q_i(s, a~) − α log π_θ(a~|s))`` for every critic ``i`` (critics
  without gradient);
- ``V(s')       = min_{j∈M} (Q̄_j(s', a') − α log π(a'|s'))`` (target critics, no
  gradient), ``y = r + γ (1 − terminated) V(s')`` (TD(0) by default);
- ``loss_qvalue = d(Q_i(s, a), y)`` for every critic ``i`` (``d`` = ``loss_function``);
- ``loss_alpha  = −α_st · (log π(a|·) + H̄)`` over both draws, ``α_st`` the clamped
  temperature with a straight-through gradient.

Arguments, defaults, keys and output keys follow TorchRL 0.14.1
(``torchrl/objectives/redq.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from arrayrl._validation import count, flag, hyperparameter, reject_unknown_kwargs
from arrayrl.backends import Backend, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, map_params

from ._soft import (
    TemperatureMixin,
    log32,
    next_key,
    output_mode,
    register_actor_and_critics,
    reject_constructor_keys,
)
from .common import LossModule
from .utils import ValueEstimators, distance_loss

__all__ = ["REDQLoss"]

_LOSS_FUNCTIONS = ("l1", "l2", "smooth_l1")
_SCALAR_OUTPUT_MODES = (None, "exclude", "non_tensor")


class REDQLoss(TemperatureMixin, LossModule):
    """The REDQ loss (see the module docstring).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy (TanhNormal, typically); arrayrl's or TorchRL's.
    qvalue_network : Module or list of Module
        One critic, expanded to ``num_qvalue_nets`` members by TorchRL's rule, or a list
        of ``num_qvalue_nets`` critics of one structure.
    num_qvalue_nets : int, default 10
        ``N``.
    sub_sample_len : int, default 2
        ``|M|``, clipped to ``[1, N − 1]`` as in TorchRL.
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    alpha_init : float, default 1.0
        Initial temperature (> 0).
    min_alpha, max_alpha : float, default 0.1 and 10.0
        Bounds of the temperature (> 0, ``min_alpha <= max_alpha``).
    action_spec : spec, optional
        The action spec for ``target_entropy="auto"`` (default: the actor's ``spec``).
    fixed_alpha : bool, default False
        Keep ``log α`` constant (it then gets no gradient).
    target_entropy : "auto" or float, default "auto"
        ``H̄``; ``"auto"`` is minus the number of action elements.
    delay_qvalue : bool, default True
        Keep separate target critics (update them with ``SoftUpdate``/``HardUpdate``).
    gSDE : bool, default False
        Write a zero ``"_eps_gSDE"`` entry for the actor, as TorchRL.
    separate_losses : bool, default False
        Parameters the critic shares with the actor are trained by the actor loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for TorchRL compatibility; arrayrl never uses vmap.
    scalar_output_mode : {None, "exclude", "non_tensor"}, optional
        With ``reduction="none"``: ``alpha`` and ``entropy`` are left out (``None``, with
        TorchRL's warning, or ``"exclude"``) or kept as 0-d entries (``"non_tensor"``).
    seed : int, optional
        Seed of the loss's generator (critic subset, policy draws). ``None``: with TorchRL
        networks, torch's default generator in TorchRL's order (``torch.manual_seed``
        reproduces TorchRL); seed 0 otherwise.

    ``gamma`` and ``priority_key`` raise as in TorchRL (use ``make_value_estimator`` and
    ``set_keys``).

    Notes
    -----
    Differences from TorchRL 0.14.1, all deliberate:

    - TorchRL sets ``return_log_prob=True`` on the caller's actor; arrayrl leaves the
      caller's module untouched (it computes the log-probabilities itself).
    - TorchRL's REDQ ignores a prioritised buffer's ``priority_weight``; arrayrl weights
      every ``loss_*`` term with it (broadcast over the critic axis), as SAC does.
    - The actor's distribution parameters for ``[s, s']`` come from two calls (online
      parameters on ``s``, detached ones on ``s'``) instead of a vmap; they are stacked
      into one distribution and drawn once, so the draws equal TorchRL's.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        value: Any = "state_value"
        sample_log_prob: Any = "action_log_prob"
        priority: Any = "td_error"
        state_action_value: Any = "state_action_value"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        priority_weight: Any = "priority_weight"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    delay_actor = False

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        num_qvalue_nets: int = 10,
        sub_sample_len: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float = 0.1,
        max_alpha: float = 10.0,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        delay_qvalue: bool = True,
        gSDE: bool = False,
        gamma: float | None = None,
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_kwargs(owner, kwargs)
        reject_constructor_keys(gamma, priority=priority_key)
        num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        sub_sample_len = count("sub_sample_len", sub_sample_len)
        if loss_function not in _LOSS_FUNCTIONS:
            raise ValueError(
                f"unknown loss_function {loss_function!r}; expected one of {_LOSS_FUNCTIONS}"
            )
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        self.reduction = reduction
        self.scalar_output_mode = output_mode(scalar_output_mode, self.reduction, owner)
        register_actor_and_critics(
            self, actor_network, qvalue_network, num_qvalue_nets,
            delay_qvalue=delay_qvalue, separate_losses=separate_losses,
        )
        self.sub_sample_len = max(1, min(sub_sample_len, num_qvalue_nets - 1))
        self.loss_function = loss_function
        self.gSDE = flag("gSDE", gSDE)
        self.deactivate_vmap = flag("deactivate_vmap", deactivate_vmap)
        self._init_temperature(
            alpha_init=alpha_init, bounds=_log_alpha_bounds(min_alpha, max_alpha),
            fixed_alpha=fixed_alpha, target_entropy=target_entropy, action_spec=action_spec,
            actor=actor_network,
        )

    # -- configuration ------------------------------------------------------------------
    @property
    def alpha(self) -> Any:
        """``exp(clip(log α, log α_min, log α_max))``, without gradient."""
        backend = backend_of(self.log_alpha)
        clipped = backend.xp.clip(backend.stop_gradient(self.log_alpha),
                                  min=self.min_log_alpha, max=self.max_log_alpha)
        return backend.xp.exp(clipped)

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = self.actor_network.in_keys
        keys = [tk.action, tk.sample_log_prob, next_key(tk.reward), next_key(tk.done),
                next_key(tk.terminated), *actor_keys, *(next_key(k) for k in actor_keys),
                *self.qvalue_network.in_keys]
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """TorchRL's output keys (the priority goes into the caller's batch)."""
        scalars = ["alpha", "entropy"] if self._keeps_scalars() else []
        return ["loss_actor", "loss_qvalue", "loss_alpha", *scalars,
                "state_action_value_actor", "action_log_prob_actor", "next.state_value",
                "target_value"]

    def _keeps_scalars(self) -> bool:
        return self.reduction != "none" or self.scalar_output_mode == "non_tensor"

    # -- pieces of the objective -------------------------------------------------------
    def _target_members(self, backend: Backend) -> Any:
        """The sorted indices of the ``sub_sample_len`` target critics of the target
        (``permutation(N)[:M]``: TorchRL's ``torch.randperm`` draw, made first). On a
        CUDA device the draw is the device generator's, where TorchRL always draws on the
        CPU."""
        rng = self.generator(backend)
        return backend.xp.sort(rng.permutation(self.num_qvalue_nets)[: self.sub_sample_len])

    def _policy_draws(
        self, batch: ArrayDict, params: Mapping[str, Params] | None, backend: Backend
    ) -> tuple[Any, Any]:
        """``(actions, log_probs)`` of shapes ``[2, *B, A]`` and ``[2, *B]``: index 0 a
        reparameterised draw at ``s`` (online parameters), index 1 one at ``s'``
        (detached parameters), drawn from one stacked distribution in one call."""
        actor = self.actor_network
        now = self._actor_inputs(batch, nested=False)
        nxt = self._actor_inputs(batch, nested=True)
        actor.get_dist(now, self.network_params("actor_network", params))
        actor.get_dist(nxt, self.detached_params("actor_network", params))
        xp = backend.xp
        stacked = ArrayDict({}, (2, *batch.batch_size))
        for key in actor.dist_keys.values():
            stacked.set(key, xp.stack([now.get(key), nxt.get(key)]))
        dist = actor.build_dist_from_params(stacked)
        return dist.rsample_and_log_prob(rng=self.generator(backend))

    def _actor_inputs(self, batch: ArrayDict, *, nested: bool) -> ArrayDict:
        """The actor's inputs at ``s`` (or, ``nested``, at ``s'``), plus TorchRL's zero
        ``"_eps_gSDE"`` with ``gSDE``."""
        inputs = ArrayDict({}, batch.batch_size)
        for key in self.actor_network.in_keys:
            inputs.set(key, self.read(batch, next_key(key) if nested else key))
        if self.gSDE:
            like = inputs.get(self.actor_network.in_keys[0])
            xp = backend_of(like).xp
            inputs.set("_eps_gSDE", xp.zeros(tuple(batch.batch_size), dtype=like.dtype,
                                              device=getattr(like, "device", None)))
        return inputs

    def _q_values(self, inputs: ArrayDict, tree: Params) -> Any:
        """``Q_e`` of every member of ``tree`` on ``inputs``: ``[E, *B]``."""
        out = self.ensemble_outputs("qvalue_network", inputs, tree)
        return out[self.tensor_keys.state_action_value][..., 0]

    def _q_inputs(self, batch: ArrayDict, action: Any, *, nested: bool = False) -> ArrayDict:
        """The critic's inputs with ``action`` (at ``s'`` when ``nested``)."""
        tk = self.tensor_keys
        inputs = ArrayDict({}, batch.batch_size)
        for key in self.qvalue_network.in_keys:
            if key == tk.action:
                inputs.set(key, action)
            else:
                inputs.set(key, self.read(batch, next_key(key) if nested else key))
        return inputs

    def _target_members_params(self, members: Any) -> Params:
        """The target critics ``members`` (a sub-stack of the target tree)."""
        def pick(leaf: Any) -> Any:
            return backend_of(leaf).xp.take(leaf, members, axis=0)

        return map_params(pick, self.target_qvalue_network_params)

    def _target_value(self, batch: ArrayDict, next_value: Any) -> Any:
        """``y`` (``[*B]``): the value estimator on the batch with ``("next", value)`` set
        to ``V(s')``."""
        batch.set(next_key(self.tensor_keys.value), next_value[..., None])
        return self.value_estimator.value_estimate(batch)[..., 0]

    def _safe_log_alpha(self) -> Any:
        """``log α`` clamped to its bounds in value, with the unclamped gradient
        (TorchRL's straight-through ``_safe_log_alpha``); constant with ``fixed_alpha``."""
        backend = backend_of(self.log_alpha)
        log_alpha = self.log_alpha
        held = backend.stop_gradient(log_alpha)
        clipped = backend.xp.clip(held, min=self.min_log_alpha, max=self.max_log_alpha)
        if self.fixed_alpha:
            return clipped
        return log_alpha - held + clipped

    def _loss_alpha(self, log_probs: Any) -> Any:
        """``−exp(log α_st)·(log π + H̄)`` per draw (TorchRL's REDQ uses ``α``, where
        SAC uses ``log α``)."""
        backend = backend_of(log_probs)
        entropy_gap = backend.stop_gradient(log_probs) + self.target_entropy
        return -backend.xp.exp(self._safe_log_alpha()) * entropy_gap

    # -- the loss ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """The REDQ terms for ``batch`` (see the module docstring for the equations).

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            ``observation`` (the actor's and critic's inputs), ``action``, and under
            ``"next"`` the next inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "qvalue_network": stacked tree}`` to compute with
            instead of the loss's own parameters.

        Returns
        -------
        ArrayDict
            ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``,
            ``state_action_value_actor`` ``[N, *B]``, ``action_log_prob_actor`` ``[*B]``,
            ``next.state_value`` ``[*B]``, ``target_value`` ``[*B]``, ``td_error``
            ``[*B]`` (batch size ``[]``).
        """
        tk = self.tensor_keys
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, tk.action)
        backend = backend_of(self.read(batch, tk.action))
        stop, xp = backend.stop_gradient, backend.xp
        members = self._target_members(backend)
        actions, log_probs = self._policy_draws(batch, params, backend)
        alpha = self.alpha
        q_policy = self._q_values(self._q_inputs(batch, actions[0, ...]),
                                  self.detached_params("qvalue_network", params))
        q_next = self._q_values(self._q_inputs(batch, actions[1, ...], nested=True),
                                self._target_members_params(members))
        q_data = self._q_values(batch, self.network_params("qvalue_network", params))
        next_value = xp.min(q_next - alpha * log_probs[1, ...], axis=0)
        target = self._target_value(batch, next_value)
        out = {
            "loss_actor": -(q_policy - alpha * log_probs[0, ...]),
            "loss_qvalue": distance_loss(q_data, xp.broadcast_to(target, q_data.shape),
                                         self.loss_function),
            "loss_alpha": self._loss_alpha(log_probs),
            "alpha": alpha,
            "entropy": -xp.mean(stop(log_probs)),
            "state_action_value_actor": stop(q_policy),
            "action_log_prob_actor": stop(log_probs[0, ...]),
            "next.state_value": stop(next_value),
            "target_value": stop(target),
            tk.priority: xp.max(stop(q_data - target) ** 2, axis=0),
        }
        if not self._keeps_scalars():
            del out["alpha"], out["entropy"]
        return self._reduced(out, batch)

    def _reduced(self, out: dict[Any, Any], batch: ArrayDict) -> ArrayDict:
        """Every ``loss_*`` term (critic or draw axis first) reduced with the batch's
        masks and priority weights, both broadcast over that leading axis (TorchRL
        reduces against ``tensordict.unsqueeze(0)``)."""
        weights = self.priority_weight(batch)
        leading = _LeadingAxis(batch)
        for name, value in out.items():
            if isinstance(name, str) and name.startswith("loss_"):
                w = None if weights is None else _over_leading_axis(weights, value)
                out[name] = self.reduce_loss(value, leading, weights=w)
        return ArrayDict(out)


class _LeadingAxis:
    """A read-only view of a batch whose entries gain a leading unit axis (the masks
    ``reduce_loss`` reads then broadcast over the critic axis of a loss)."""

    def __init__(self, batch: ArrayDict) -> None:
        self._batch = batch

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._batch.get(key, None)
        if value is None:
            return default
        return backend_of(value).xp.expand_dims(value, axis=0)


def _over_leading_axis(weights: Any, loss: Any) -> Any:
    """Priority weights ``[*B]`` (or ``[*B, 1]``) broadcast to a loss ``[E, *B]``."""
    xp = backend_of(weights).xp
    if weights.ndim == loss.ndim and weights.shape[-1] == 1:
        weights = weights[..., 0]
    if tuple(weights.shape) != tuple(loss.shape[1:]):
        raise ValueError(
            f"priority_weight has shape {tuple(weights.shape)}, the batch's shape is "
            f"{tuple(loss.shape[1:])}; they must match"
        )
    return xp.broadcast_to(weights, tuple(loss.shape))


def _log_alpha_bounds(min_alpha: Any, max_alpha: Any) -> tuple[float | None, float | None]:
    """``(log min_alpha, log max_alpha)`` rounded to float32; ``None`` for a bound not
    given."""
    low = None if min_alpha is None else hyperparameter(
        "min_alpha", min_alpha, low=0.0, high=math.inf, low_open=True)
    high = None if max_alpha is None else hyperparameter(
        "max_alpha", max_alpha, low=0.0, high=math.inf, low_open=True)
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_alpha ({low}) must not exceed max_alpha ({high})")
    return log32(low), log32(high)
