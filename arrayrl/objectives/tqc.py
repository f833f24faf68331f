"""Truncated quantile critics: ``TQCLoss``.

Kuznetsov et al. 2020, "Controlling Overestimation Bias with Truncated Mixture of
Continuous Distributional Quantile Critics", https://arxiv.org/abs/2005.04269. Each of
``N`` critics predicts ``n`` return quantiles ``θ_i^1 … θ_i^n`` at fractions
``τ_k = (k + ½)/n``. With ``a ~ π_θ(·|s)``, ``a' ~ π_θ(·|s')`` reparameterised draws and
the temperature ``α``:

- the ``N·n`` target atoms ``θ̄_i^k(s', a')`` are pooled, sorted, and the ``d·N`` largest
  dropped (``d = top_quantiles_to_drop_per_net``), leaving ``z_1 ≤ … ≤ z_K``;
  ``y_j = r + γ (1 − terminated)(z_j − α log π(a'|s'))`` (TD(0), no gradient);
- ``loss_qvalue = Σ_i (1/(nK)) Σ_k Σ_j |τ_k − 1(y_j < θ_i^k)| · h(y_j − θ_i^k)``, ``h``
  the Huber loss with threshold 1 (the quantile Huber loss of every predicted quantile
  against every kept atom);
- ``loss_actor = α log π(a|s) − (1/(Nn)) Σ_i Σ_k θ_i^k(s, a)`` (critics without gradient;
  the whole mixture, not the truncated one);
- ``loss_alpha = −log α · (log π(a|s) + H̄)`` (SAC's temperature loss).

Arguments, defaults, keys and output keys follow TorchRL 0.14.1
(``torchrl/objectives/tqc.py``, a ``SACLoss`` subclass).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from arrayrl._validation import count, flag, reject_unknown_kwargs
from arrayrl.backends import Backend, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ._soft import (
    TemperatureMixin,
    next_key,
    output_mode,
    register_actor_and_critics,
    sac_log_alpha_bounds,
)
from .common import LossModule
from .sac import SACLoss
from .utils import ValueEstimators

__all__ = ["TQCLoss"]


class TQCLoss(TemperatureMixin, LossModule):
    """The TQC loss (see the module docstring).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The policy (TanhNormal, typically); arrayrl's or TorchRL's.
    qvalue_network : Module or list of Module
        A critic writing ``state_action_value`` of shape ``[*B, n_quantiles]``, expanded
        to ``num_qvalue_nets`` members by TorchRL's rule, or a list of critics.
    num_qvalue_nets : int, default 5
        ``N``.
    top_quantiles_to_drop_per_net : int, default 2
        ``d`` (>= 0); ``d·N`` must be below ``N·n``.
    alpha_init : float, default 1.0
    min_alpha, max_alpha : float, optional
        Bounds of the temperature, with SAC's rule (one bound alone: the other is 0 or
        1e9). ``log α`` is clamped into them in place before each use, as TorchRL does.
    action_spec : spec, optional
        The action spec for ``target_entropy="auto"`` (default: the actor's ``spec``).
    fixed_alpha : bool, default False
    target_entropy : "auto" or float, default "auto"
    delay_qvalue : bool, default True
        Keep separate target critics.
    separate_losses : bool, default False
        Parameters the critics share with the actor are trained by the actor loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for TorchRL compatibility; arrayrl never uses vmap.
    skip_done_states : bool, default False
        Evaluate the policy and target critics only at non-terminal next states (the
        others bootstrap on 0); needs one host sync, as in TorchRL.
    use_prioritized_weights : "auto" or bool, default "auto"
        Weight the losses with the batch's ``priority_weight``.
    scalar_output_mode : {None, "exclude", "non_tensor"}, optional
        As in :class:`~arrayrl.objectives.redq.REDQLoss`.
    seed : int, optional
        Seed of the loss's generator. ``None``: with TorchRL networks, torch's default
        generator in TorchRL's order; seed 0 otherwise.

    TD(0) is the only value estimator, as in TorchRL. ``gamma`` is not an argument.

    Notes
    -----
    ``td_error`` (the mean absolute pairwise error of the critic with the largest one,
    ``[*B]``) is set in the caller's batch under ``tensor_keys.priority``, as TorchRL
    does (a new entry; no array of the caller is written).
    """

    #: SACLoss's keys (TorchRL's TQCLoss is a SACLoss subclass).
    _AcceptedKeys = SACLoss._AcceptedKeys

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (ValueEstimators.TD0,)

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        num_qvalue_nets: int = 5,
        top_quantiles_to_drop_per_net: int = 2,
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        delay_qvalue: bool = True,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        skip_done_states: bool = False,
        use_prioritized_weights: str | bool = "auto",
        scalar_output_mode: str | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_kwargs(owner, kwargs)
        num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        drop = count("top_quantiles_to_drop_per_net", top_quantiles_to_drop_per_net, minimum=0)
        if use_prioritized_weights not in ("auto", True, False):
            raise ValueError("use_prioritized_weights must be 'auto', True or False, got "
                             f"{use_prioritized_weights!r}")
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        self.top_quantiles_to_drop_per_net = drop
        self.use_prioritized_weights = use_prioritized_weights
        self.reduction = reduction
        self.scalar_output_mode = output_mode(scalar_output_mode, self.reduction, owner)
        register_actor_and_critics(
            self, actor_network, qvalue_network, num_qvalue_nets,
            delay_qvalue=delay_qvalue, separate_losses=separate_losses,
        )
        self.loss_function = "smooth_l1"
        self.skip_done_states = flag("skip_done_states", skip_done_states)
        self.deactivate_vmap = flag("deactivate_vmap", deactivate_vmap)
        self._init_temperature(
            alpha_init=alpha_init, bounds=sac_log_alpha_bounds(min_alpha, max_alpha),
            fixed_alpha=fixed_alpha, target_entropy=target_entropy, action_spec=action_spec,
            actor=actor_network,
        )
        actor = self.actor_network
        self.set_keys(log_prob=actor.log_prob_keys[0], action=actor.dist_sample_keys[0])

    # -- configuration ------------------------------------------------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads (TorchRL's ``in_keys``, in a stable order)."""
        tk = self.tensor_keys
        actor_keys = self.actor_network.in_keys
        keys = [tk.action, next_key(tk.reward), next_key(tk.done), next_key(tk.terminated),
                *actor_keys, *(next_key(k) for k in actor_keys), *self.qvalue_network.in_keys]
        return list(dict.fromkeys(keys))

    @property
    def out_keys(self) -> list[str]:
        """TorchRL's output keys (the priority goes into the caller's batch)."""
        scalars = ["alpha", "entropy"] if self._keeps_scalars() else []
        return ["loss_actor", "loss_qvalue", "loss_alpha", *scalars]

    def _keeps_scalars(self) -> bool:
        return self.reduction != "none" or self.scalar_output_mode == "non_tensor"

    # -- pieces of the objective -------------------------------------------------------
    def _quantiles(self, inputs: ArrayDict, tree: Params) -> Any:
        """Every member's quantiles on ``inputs``: ``[N, *B, n]``."""
        out = self.ensemble_outputs("qvalue_network", inputs, tree)
        quantiles = out[self.tensor_keys.state_action_value]
        if quantiles.ndim != len(inputs.batch_size) + 2:
            raise ValueError(
                "The TQC critic must output one quantile dimension after the batch "
                f"dimensions, but got shape {tuple(quantiles.shape[1:])} for batch size "
                f"{tuple(inputs.batch_size)}"
            )
        return quantiles

    def _q_inputs(self, batch: ArrayDict, action: Any) -> ArrayDict:
        """The critic's inputs read from ``batch``, with ``action``."""
        tk = self.tensor_keys
        inputs = ArrayDict({}, batch.batch_size)
        for key in self.qvalue_network.in_keys:
            inputs.set(key, action if key == tk.action else self.read(batch, key))
        return inputs

    def _policy_draw(self, batch: ArrayDict, tree: Params, backend: Backend) -> tuple[Any, Any]:
        """``(a, log π(a|·))``: one reparameterised draw of the policy on ``batch``."""
        dist = self.actor_network.get_dist(batch, tree)
        return dist.rsample_and_log_prob(rng=self.generator(backend))

    def _kept_atoms(self, batch: ArrayDict, params: Mapping[str, Params] | None,
                    backend: Backend) -> Any:
        """``z − α log π(a'|s')`` (``[*B', K]``): the pooled, sorted target atoms at
        ``s'`` without the ``d·N`` largest, on the next states in ``batch``."""
        xp = backend.xp
        actor_params = self.network_params("actor_network", params)
        action, log_prob = self._policy_draw(batch, actor_params, backend)
        quantiles = self._quantiles(self._q_inputs(batch, action),
                                    self.target_qvalue_network_params)
        atoms = xp.moveaxis(quantiles, 0, -2)
        atoms = xp.reshape(atoms, (*atoms.shape[:-2], atoms.shape[-2] * atoms.shape[-1]))
        keep = atoms.shape[-1] - self.top_quantiles_to_drop_per_net * self.num_qvalue_nets
        if keep < 1:
            raise ValueError(
                "top_quantiles_to_drop_per_net must be smaller than the critic's number of "
                f"quantiles ({quantiles.shape[-1]})"
            )
        return xp.sort(atoms, axis=-1)[..., :keep] - self.alpha * log_prob[..., None]

    def _next_atoms(self, batch: ArrayDict, params: Mapping[str, Params] | None,
                    backend: Backend) -> Any:
        """:meth:`_kept_atoms` at every next state (``[*B, K]``); with
        ``skip_done_states`` only at the non-terminal ones, the others 0."""
        nxt = batch.get("next")
        if not self.skip_done_states:
            return self._kept_atoms(nxt, params, backend)
        terminated = self.read(batch, next_key(self.tensor_keys.terminated))
        terminated = terminated[..., 0] if terminated.ndim > len(batch.batch_size) else terminated
        xp = backend.xp
        if not bool(xp.any(terminated)):  # a host sync, as TorchRL's `terminated.any()`
            return self._kept_atoms(nxt, params, backend)
        return _scatter_rows(~terminated, lambda sel: self._kept_atoms(nxt[sel], params,
                                                                        backend), xp)

    def _target_atoms(self, batch: ArrayDict, params: Mapping[str, Params] | None,
                      backend: Backend) -> Any:
        """``y_j = r + γ (1 − terminated) z_j`` (``[*B, K]``, no gradient): TD(0) with
        the reward, ``terminated`` and ``steps_to_next_obs`` broadcast over the atoms."""
        with backend.no_grad():
            next_value = backend.stop_gradient(self._next_atoms(batch, params, backend))
            target = batch.clone(recurse=False)
            xp = backend.xp
            steps = self.value_estimator.tensor_keys.steps_to_next_obs
            for key in (next_key(self.tensor_keys.reward),
                        next_key(self.tensor_keys.terminated), steps):
                value = target.get(key, None)
                if value is not None:
                    target.set(key, _broadcast_to_atoms(value, next_value, xp))
            estimate = self.value_estimator.value_estimate(target, next_value=next_value)
        return backend.stop_gradient(estimate)

    def _loss_qvalue(self, batch: ArrayDict, target: Any,
                     params: Mapping[str, Params] | None) -> tuple[Any, Any]:
        """``(Σ_i mean_{k,j} ρ_τk(y_j − θ_i^k), td_error)`` per sample (``[*B]`` each)."""
        quantiles = self._quantiles(batch, self.network_params("qvalue_network", params))
        backend = backend_of(quantiles)
        xp = backend.xp
        delta = target[None, ..., None, :] - quantiles[..., None]  # [N, *B, n, K]
        abs_delta = xp.abs(delta)
        huber = xp.where(abs_delta <= 1, 0.5 * delta * delta, abs_delta - 0.5)
        n = quantiles.shape[-1]
        fractions = (xp.arange(n, dtype=quantiles.dtype, device=_device(quantiles)) + 0.5) / n
        below = xp.astype(backend.stop_gradient(delta) < 0, quantiles.dtype)
        weights = xp.abs(fractions[..., None] - below)
        loss = xp.sum(xp.mean(weights * huber, axis=(-1, -2)), axis=0)
        td_error = xp.max(xp.mean(backend.stop_gradient(abs_delta), axis=(-1, -2)), axis=0)
        return loss, td_error

    def _loss_actor(self, batch: ArrayDict, params: Mapping[str, Params] | None,
                    backend: Backend) -> tuple[Any, Any]:
        """``(α log π(a|s) − mean_{i,k} θ_i^k(s, a), log π(a|s))`` per sample."""
        actor_params = self.network_params("actor_network", params)
        action, log_prob = self._policy_draw(batch, actor_params, backend)
        quantiles = self._quantiles(self._q_inputs(batch, action),
                                    self.detached_params("qvalue_network", params))
        value = backend.xp.mean(quantiles, axis=(0, -1))
        return self.alpha * log_prob - value, log_prob

    def _loss_alpha(self, log_prob: Any) -> Any:
        """``−log α · (log π + H̄)`` (SAC's temperature loss; no gradient with
        ``fixed_alpha``)."""
        backend = backend_of(log_prob)
        log_alpha = self.log_alpha
        if self.fixed_alpha:
            log_alpha = backend_of(log_alpha).stop_gradient(log_alpha)
        return -log_alpha * (backend.stop_gradient(log_prob) + self.target_entropy)

    # -- the loss ----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """The TQC terms for ``batch`` (see the module docstring for the equations).

        The target is drawn first (at ``s'``), then the policy sample at ``s``: TorchRL's
        order, so the same seed gives the same draws.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The critic's and actor's inputs, ``action``, and under ``"next"`` the next
            inputs, ``reward``, ``done`` and ``terminated``.
        params : mapping, optional
            ``{"actor_network": tree, "qvalue_network": stacked tree}``.

        Returns
        -------
        ArrayDict
            ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha``, ``entropy``,
            ``td_error`` ``[*B]``.
        """
        tk = self.tensor_keys
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, tk.action)
        backend = backend_of(self.read(batch, tk.action))
        self._clamp_log_alpha()
        target = self._target_atoms(batch, params, backend)
        loss_qvalue, td_error = self._loss_qvalue(batch, target, params)
        loss_actor, log_prob = self._loss_actor(batch, params, backend)
        weights = self.priority_weight(batch)
        out = {
            "loss_actor": self.reduce_loss(loss_actor, batch, weights=weights),
            "loss_qvalue": self.reduce_loss(loss_qvalue, batch, weights=weights),
            "loss_alpha": self.reduce_loss(self._loss_alpha(log_prob), batch, weights=weights),
        }
        if self._keeps_scalars():
            out["alpha"] = self.alpha
            out["entropy"] = -backend.xp.mean(backend.stop_gradient(log_prob))
        out[tk.priority] = td_error
        size = () if self.reduction != "none" or "alpha" in out else batch.batch_size
        return ArrayDict(out, size)


def _broadcast_to_atoms(value: Any, atoms: Any, xp: Any) -> Any:
    """``value`` (``[*B]`` or ``[*B, 1]``) broadcast to the atoms' shape ``[*B, K]``."""
    while value.ndim < atoms.ndim:
        value = xp.expand_dims(value, axis=-1)
    return xp.broadcast_to(value, tuple(atoms.shape))


def _scatter_rows(selection: Any, compute: Any, xp: Any) -> Any:
    """``compute(selection)`` (rows of the selected positions, ``[n_sel, K]``) placed at
    the positions of the boolean ``selection`` (``[*B]``), zeros elsewhere
    (``[*B, K]``), written with ``take`` and ``where`` (no in-place scatter)."""
    flat = xp.reshape(selection, (-1,))
    rows = compute(selection)
    if rows.shape[0] == 0:
        return xp.zeros((*selection.shape, rows.shape[-1]), dtype=rows.dtype, device=_device(rows))
    index = xp.cumulative_sum(xp.astype(flat, xp.int64)) - 1
    gathered = xp.take(rows, xp.clip(index, min=0), axis=0)
    placed = xp.where(flat[:, None], gathered, xp.zeros_like(gathered))
    return xp.reshape(placed, (*selection.shape, rows.shape[-1]))


def _device(x: Any) -> Any:
    return getattr(x, "device", None)
