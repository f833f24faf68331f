"""CrossQ: ``CrossQLoss``.

Bhatt et al. 2024, "CrossQ: Batch Normalization in Deep Reinforcement Learning for
Greater Sample Efficiency and Simplicity", https://openreview.net/pdf?id=PczQtTsTIX.
Arguments, defaults, keys, outputs and draws (order and shapes) follow TorchRL 0.14.1
(``torchrl/objectives/crossq.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from arrayrl._validation import count
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params, convert_params, unstack_params
from arrayrl.modules.batchrenorm import load_buffers, module_buffers, training_mode
from arrayrl.modules.ensemble import _runs_stacked

from ._soft import as_tuple, leaves, reject_constructor_keys, select, target_entropy_arg
from .sac import _SoftActorCriticBase
from .utils import ValueEstimators, distance_loss

__all__ = ["CrossQLoss"]



class CrossQLoss(_SoftActorCriticBase):
    r"""The CrossQ loss: soft actor-critic without target networks, its critics
    normalised by batch renormalisation over the current and next state-actions at once.

    With temperature :math:`\alpha = e^{\log\alpha}` (no gradient where it weighs other
    terms) and ``N`` critics :math:`Q_i` (typically with
    :class:`~arrayrl.modules.batchrenorm.BatchRenorm1d` layers):

    .. math::

        [Q_i(s, a);\ Q_i(s', a')] = Q_i([s, a;\ s', a']), \quad a' \sim \pi(\cdot|s'),

        y = r + \gamma (1 - \text{terminated}) \cdot
            \mathrm{sg}\big[\min_i Q_i(s', a') - \alpha \log\pi(a'|s')\big],

        \mathcal{L}_Q = \textstyle\sum_i d(Q_i(s, a), y), \qquad
        \mathcal{L}_\pi = \alpha \log\pi(\tilde a|s) - \min_i \bar Q_i(s, \tilde a),

        \mathcal{L}_\alpha = -\log\alpha\,(\log\pi(\tilde a|s) + \bar H),

    where the critics see one joint batch (so their batch statistics cover both the
    current and the next state-actions, the point of CrossQ), ``a'`` is a draw without
    reparameterisation, :math:`\tilde a` a reparameterised one, and
    :math:`\bar Q_i` the critics with their parameters held fixed, in evaluation mode
    (running statistics). ``y`` is TD(0) by default (TD(1), TD(λ) supported).

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The stochastic policy (arrayrl's or TorchRL's).
    qvalue_network : Module or list of Module
        ``Q(s, a)``, writing ``tensor_keys.state_action_value``. One module is expanded
        into ``num_qvalue_nets`` members by TorchRL's rule (each member's parameters
        drawn uniformly between the module's extremes); a list is stacked.
    num_qvalue_nets : int, default 2
    loss_function : {"smooth_l1", "l2", "l1"}, default "smooth_l1"
    alpha_init : float, default 1.0
    min_alpha, max_alpha : float, optional
        Bounds ``log_alpha`` is clamped to whenever ``alpha`` is read (TorchRL's rule).
    action_spec : spec, optional
        For ``target_entropy="auto"`` (else the actor's ``spec``).
    fixed_alpha : bool, default False
    target_entropy : float or "auto", default "auto"
        ``"auto"``: minus the number of action elements.
    priority_key : None
        Deprecated by TorchRL; anything else raises (use ``set_keys(priority=...)``).
    separate_losses : bool, default False
        Parameters the critics share with the actor are trained by the actor loss only.
    reduction : {"mean", "sum", "none"}, default "mean"
    deactivate_vmap : bool, default False
        Accepted for compatibility; arrayrl never uses ``vmap``.
    scalar_output_mode : {None, "exclude", "non_tensor"}, optional
        With ``reduction="none"``: leave ``alpha`` and ``entropy`` out (``None`` also
        warns), or include them (the output then has batch size ``()``).
    seed : int, optional
        The loss's generator; ``None`` with TorchRL modules draws from torch's default
        generator as TorchRL does.

    Notes
    -----
    Outputs, in TorchRL's order: ``loss_actor``, ``loss_qvalue``, ``loss_alpha``,
    ``log_prob`` (per sample, no gradient), ``td_error`` (per sample: the largest
    ``|Q_i(s, a) − y|``), ``alpha``, ``entropy``. The two per-sample entries sit among
    the scalars as in TorchRL (its metadata dictionaries leak into the output; kept so
    that the keys and shapes match). ``td_error`` is also set in the caller's batch under
    ``tensor_keys.priority``, as TorchRL does (a new entry; no array is written).

    Running statistics: each critic member keeps its own (``(N, C)``), made at
    construction from the module's, updated by the critic loss only (the actor loss
    runs the critics in evaluation mode, restoring their previous mode afterwards),
    saved by :meth:`state_dict` under ``qvalue_network_params.<name>`` as TorchRL's.
    The module's own statistics are left as they are, as in TorchRL.

    Deviation: TorchRL 0.14.1's CrossQLoss has no ``priority_weight`` key and ignores a
    prioritised buffer's importance weights; arrayrl weights the losses by the batch's
    ``priority_weight`` entry when present (as SAC does); ``use_prioritized_weights =
    False`` restores TorchRL's behaviour.
    """

    priority_in_output = True  # TorchRL returns td_error and sets it in the batch

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        state_action_value: Any = "state_action_value"
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        log_prob: Any = "_log_prob"
        priority_weight: Any = "priority_weight"

    default_value_estimator = ValueEstimators.TD0

    def __init__(
        self,
        actor_network: Any,
        qvalue_network: Any,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        action_spec: Any = None,
        fixed_alpha: bool = False,
        target_entropy: str | float = "auto",
        priority_key: Any = None,
        separate_losses: bool = False,
        reduction: str | None = None,
        deactivate_vmap: bool = False,
        scalar_output_mode: str | None = None,
        seed: int | None = None,
        gamma: float | None = None,
    ) -> None:
        reject_constructor_keys(gamma)
        num_qvalue_nets = count("num_qvalue_nets", num_qvalue_nets)
        target_entropy = target_entropy_arg(target_entropy)
        super().__init__()
        self.seed = seed  # before the ensemble is drawn
        user_actor = actor_network
        self.convert_to_functional(actor_network, "actor_network")
        policy = leaves(self.actor_network_params) if separate_losses else None
        self.convert_to_functional(qvalue_network, "qvalue_network", num_qvalue_nets,
                                   compare_against=policy)
        self.num_qvalue_nets = num_qvalue_nets
        self.separate_losses = bool(separate_losses)
        self._qvalue_buffers = _member_buffers(qvalue_network, num_qvalue_nets)
        self._init_common(
            loss_function=loss_function, alpha_init=alpha_init, min_alpha=min_alpha,
            max_alpha=max_alpha, fixed_alpha=fixed_alpha, target_entropy=target_entropy,
            action_spec=action_spec, actor=user_actor, priority_key=priority_key,
            reduction=reduction, skip_done_states=False, deactivate_vmap=deactivate_vmap,
            use_prioritized_weights="auto", scalar_output_mode=scalar_output_mode,
        )

    # -- keys and estimator ---------------------------------------------------------------
    def _forward_value_estimator_keys(self) -> None:
        """The estimator reads the reward and the flags; the next value is passed in."""
        if self._value_estimator is not None:
            tk = self.tensor_keys
            self._value_estimator.set_keys(
                reward=tk.reward, done=tk.done, terminated=tk.terminated
            )

    @property
    def in_keys(self) -> list[Any]:
        """The batch entries read (TorchRL's ``in_keys``, in a stable order)."""
        actor_keys = list(self.actor_network.in_keys)
        keys = [*self._signal_keys(), *actor_keys, *(("next", *as_tuple(k)) for k in actor_keys)]
        return list(dict.fromkeys(keys + list(self.qvalue_network.in_keys)))

    @property
    def out_keys(self) -> list[str]:
        return ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]

    # -- the critics ----------------------------------------------------------------------
    def _q_values(self, inputs: ArrayDict, tree: Params) -> Any:
        """``Q_i`` of every member on ``inputs``, ``[N, *B, 1]``, each member with its
        own running statistics (updated when the critics are in training mode)."""
        key = self.tensor_keys.state_action_value
        if not self._qvalue_buffers:
            return self.ensemble_outputs("qvalue_network", inputs, tree)[key]
        with _swapped_buffers(self.qvalue_network) as module:
            if _runs_stacked(module):
                load_buffers(module, self._qvalue_buffers)
                values = self.ensemble_outputs("qvalue_network", inputs, tree)[key]
                self._qvalue_buffers = module_buffers(module)
            else:
                values = self._q_values_per_member(module, inputs, tree, key)
        return values

    def _q_values_per_member(self, module: Any, inputs: ArrayDict, tree: Params, key: Any) -> Any:
        """The members one at a time (a module that does not take stacked parameters),
        each with a copy of its statistics swapped in, read back afterwards."""
        values, states = [], []
        for e, member in enumerate(unstack_params(tree)):
            load_buffers(module, {k: _copy(v[e, ...]) for k, v in self._qvalue_buffers.items()})
            values.append(module(inputs.clone(recurse=False), params=member).get(key))
            states.append(module_buffers(module))
        self._qvalue_buffers = {
            name: backend_of(states[0][name]).xp.stack([s[name] for s in states], axis=0)
            for name in states[0]
        }
        return backend_of(values[0]).xp.stack(values, axis=0)

    # -- the losses -----------------------------------------------------------------------
    def qvalue_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``Σ_i d(Q_i(s, a), y)`` reduced, and ``{"td_error": max_i |Q_i(s, a) − y|}``
        (no gradient); the critics run once on the joint batch ``[(s, a); (s', a')]``."""
        batch = self.working_copy(batch)
        nxt, next_log_prob = self._next_actions(batch, params)
        keys = self.qvalue_network.in_keys
        joint = ArrayDict.cat([select(batch, keys), select(nxt, keys)], 0)
        values = self._q_values(joint, self.network_params("qvalue_network", params))
        size = batch.batch_size[0]
        pred, next_values = values[:, :size, ...], values[:, size:, ...]
        target = self._target(batch, next_values, next_log_prob)
        pred = pred[..., 0]
        backend = backend_of(pred)
        xp = backend.xp
        td_error = xp.max(backend.stop_gradient(xp.abs(pred - target)), axis=0)
        target = xp.broadcast_to(target, tuple(pred.shape))
        loss = xp.sum(distance_loss(pred, target, self.loss_function), axis=0)
        return self._reduce(loss, batch), {"td_error": td_error}

    def _next_actions(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[ArrayDict, Any]:
        """``batch["next"]`` with ``a' ~ π(·|s')`` set, and ``log π(a'|s')`` (no
        gradient: a draw without reparameterisation from the detached actor)."""
        nxt = self.read(batch, "next", what="next").clone(recurse=False)
        actor = self.detached_params("actor_network", params)
        with backend_of(self.log_alpha).no_grad():
            dist = self.actor_network.get_dist(nxt.clone(recurse=False), actor)
            action, log_prob = dist.sample_and_log_prob(rng=self.generator(dist.backend))
        nxt.set(self.tensor_keys.action, action)
        return nxt, log_prob

    def _target(self, batch: ArrayDict, next_values: Any, next_log_prob: Any) -> Any:
        """``y`` from ``sg[min_i Q_i(s', a') − α log π(a'|s')]``, without its trailing
        dim."""
        backend = backend_of(next_values)
        tail = tuple(next_values.shape[next_values.ndim - next_log_prob.ndim:])
        if tail != tuple(next_log_prob.shape):
            next_log_prob = next_log_prob[..., None]
        soft = backend.xp.min(next_values, axis=0) - self.alpha * next_log_prob
        return backend.stop_gradient(self._bootstrap(batch, backend.stop_gradient(soft)))

    def actor_loss(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """``α log π(ã|s) − min_i Q̄_i(s, ã)`` reduced, and ``{"log_prob": log π(ã|s)}``
        (no gradient); the critics' parameters fixed, the critics in evaluation mode."""
        batch = self.working_copy(batch)
        dist = self.actor_network.get_dist(batch.clone(recurse=False),
                                           self.network_params("actor_network", params))
        action, log_prob = dist.rsample_and_log_prob(rng=self.generator(dist.backend))
        inputs = select(batch, self.qvalue_network.in_keys)
        inputs.set(self.tensor_keys.action, action)
        with training_mode(self.qvalue_network, False):
            values = self._q_values(inputs, self.detached_params("qvalue_network", params))
        backend = backend_of(log_prob)
        min_q = backend.xp.min(values, axis=0)[..., 0]
        if tuple(log_prob.shape) != tuple(min_q.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(log_prob.shape)} and {tuple(min_q.shape)}"
            )
        loss = self.alpha * log_prob - min_q
        return self._reduce(loss, batch), {"log_prob": backend.stop_gradient(log_prob)}

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``log_prob``, ``td_error``,
        ``alpha`` and ``entropy``. Draws, in TorchRL's order: the next actions (critic
        loss), then the actions (actor loss)."""
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        self._clamp_log_alpha()
        loss_qvalue, meta_q = self.qvalue_loss(batch, params)
        loss_actor, meta_actor = self.actor_loss(batch, params)
        log_prob = meta_actor["log_prob"]
        loss_alpha = self._reduce(self.alpha_loss(log_prob), batch)
        if tuple(loss_actor.shape) != tuple(loss_qvalue.shape):
            raise RuntimeError(
                f"Losses shape mismatch: {tuple(loss_actor.shape)} and "
                f"{tuple(loss_qvalue.shape)}"
            )
        out = {"loss_actor": loss_actor, "loss_qvalue": loss_qvalue, "loss_alpha": loss_alpha,
               **meta_actor, **meta_q}
        if self.reduction == "none" and self.scalar_output_mode != "non_tensor":
            return ArrayDict(out, tuple(batch.batch_size))
        backend = backend_of(log_prob)
        entropy = backend.stop_gradient(backend.xp.mean(-log_prob))
        return ArrayDict({**out, "alpha": self.alpha, "entropy": entropy})

    # -- state ----------------------------------------------------------------------------
    def buffers(self) -> dict[str, Any]:
        """The critics' per-member running statistics, ``{"<name>": (N, ...) array}``."""
        return dict(self._qvalue_buffers)

    def state_dict(self) -> dict[str, Any]:
        """As :class:`LossModule`'s, with the critics' running statistics under
        ``qvalue_network_params.<name>`` (TorchRL's names)."""
        state = super().state_dict()
        if not self.__dict__.get("_params_only", False):
            state.update({f"qvalue_network_params.{k}": v
                          for k, v in self._qvalue_buffers.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> CrossQLoss:
        """Load a :meth:`state_dict` (any backend); the running statistics are checked
        (names, shapes) with everything else before anything is written."""
        prefix = "qvalue_network_params."
        names = {prefix + k for k in self._qvalue_buffers}
        missing = sorted(names - set(state))
        if missing:
            raise KeyError(f"state_dict keys differ: missing {missing}")
        loaded = {}
        for name, old in self._qvalue_buffers.items():
            value = state[prefix + name]
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError(
                    f"state_dict[{prefix + name!r}] has shape {tuple(value.shape)}, but the "
                    f"loss's array has shape {tuple(old.shape)}"
                )
            loaded[name] = convert_params({"x": value}, backend_of(old), old.device,
                                          requires_grad=False)["x"]
        with _params_only(self):
            super().load_state_dict({k: v for k, v in state.items() if k not in names})
        self._qvalue_buffers = {k: backend_of(v).xp.astype(v, self._qvalue_buffers[k].dtype)
                                for k, v in loaded.items()}
        return self

    def to(self, backend: Any, device: Any = None) -> CrossQLoss:
        super().to(backend, device)
        if self._qvalue_buffers:
            target = self.backend
            self._qvalue_buffers = convert_params(
                self._qvalue_buffers, target, getattr(target, "device", None), requires_grad=False
            )
        return self


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _member_buffers(qvalue_network: Any, members: int) -> dict[str, Any]:
    """Each member's copy of the critic's running statistics, stacked ``(N, ...)``:
    the one module's repeated (TorchRL's ``expand(...).clone()``), or a list's stacked."""
    modules = list(qvalue_network) if isinstance(qvalue_network, (list, tuple)) else None
    found = [module_buffers(m) for m in modules] if modules else [module_buffers(qvalue_network)]
    if not found[0]:
        return {}
    stacked = {}
    for name in found[0]:
        leaves = [f[name] for f in found] if modules else [found[0][name]] * members
        backend = backend_of(*leaves)
        stacked[name] = backend.xp.stack([backend.stop_gradient(x) for x in leaves], axis=0)
    return stacked


@contextlib.contextmanager
def _swapped_buffers(module: Any) -> Iterator[Any]:
    """Within the block the loss may swap the module's buffers; its own come back
    afterwards (the user's module keeps its statistics, as TorchRL's)."""
    own = module_buffers(module)
    try:
        yield module
    finally:
        load_buffers(module, own)


@contextlib.contextmanager
def _params_only(loss: CrossQLoss) -> Iterator[None]:
    """:meth:`CrossQLoss.state_dict` without the running statistics (for the base
    class's ``load_state_dict``, which checks the names of its own state)."""
    loss.__dict__["_params_only"] = True
    try:
        yield
    finally:
        loss.__dict__["_params_only"] = False


def _copy(x: Any) -> Any:
    """A copy of ``x`` (a module may update its buffers in place, as torch's do)."""
    return backend_of(x).xp.asarray(x, copy=True)
