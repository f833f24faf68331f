r"""Value factorisation for cooperative multi-agent Q-learning: ``QMixerLoss`` (QMIX, VDN).

Each agent ``i`` has a local value network ``Q_θ,i(o_i, ·)`` (one set of weights shared
by the agents, or one per agent); a mixer ``f`` combines the agents' chosen-action values
into the team's value, which is regressed on a DQN target built from the team reward:

.. math::

    Q_{tot}(s, \mathbf a) = f_\phi\big(Q_{\theta,1}(o_1, a_1), \dots,
                                      Q_{\theta,n}(o_n, a_n);\ s\big),

    y = r + \gamma\,(1 - \text{terminated})\;
        f_{\bar\phi}\big(\max_{a'_1} Q_{\bar\theta,1}(o'_1, a'_1), \dots,
                         \max_{a'_n} Q_{\bar\theta,n}(o'_n, a'_n);\ s'\big),

    \mathcal L = \tfrac1{|B|} \textstyle\sum_B d\big(Q_{tot}(s, \mathbf a), y\big),
    \qquad \text{priority} = \big(Q_{tot}(s, \mathbf a) - y\big)^2 ,

with ``θ̄, φ̄`` the target copies (``delay_value``; else ``θ, φ`` without gradient),
``d`` the ``loss_function`` and ``y`` computed without gradient (TD(0) as written; TD(1)
and TD(λ) bootstrap on the same mixed greedy value). The maximum inside the mixer is
exact because both mixers are monotonic in every agent's value.

- VDN (Sunehag et al. 2018, "Value-Decomposition Networks For Cooperative Multi-Agent
  Learning Based On Team Reward", AAMAS, https://arxiv.org/abs/1706.05296):
  :math:`f(q_1, \dots, q_n) = \sum_i q_i`, no parameters, no state.
- QMIX (Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for Deep
  Multi-Agent Reinforcement Learning", ICML, https://arxiv.org/abs/1803.11485): a
  hypernetwork conditioned on the global state ``s`` gives non-negative weights,
  :math:`h = \operatorname{elu}(\mathbf q\,|W_1(s)| + b_1(s))`,
  :math:`f = h\,|W_2(s)| + V(s)`, so :math:`\partial f / \partial q_i \ge 0`.

``Q(o_i, a_i)`` is ``Q(o_i, ·)[a_i]`` for a categorical action and ``Σ_k a_{i,k}
Q(o_i, ·)_k`` for the other encodings (one-hot, multi one-hot, binary).

Arguments, defaults, keys and outputs follow TorchRL 0.14.1
(``torchrl/objectives/multiagent/qmixer.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import flag, reject_unknown_kwargs
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import DictModule, Module, Params, as_layer
from arrayrl.modules.actors import action_value_at, canonical_action_space

from .._shared import is_bare_network, qvalue_actor_for
from .._soft import as_tuple, next_key
from ..common import LossModule
from ..td3 import check_common_args
from ..utils import ValueEstimators, distance_loss

__all__ = ["QMixerLoss"]

#: the action spaces the loss reads (a categorical index, or an encoding a with Q = Σ a·v)
_SPACES = ("one_hot", "mult_one_hot", "categorical", "binary")
_LOCAL, _MIXER = "local_value_network", "mixer_network"


class MixedValueNetwork(Module):
    """The local value network followed by the mixer (TorchRL's ``global_value_network``):
    the team's value of the agents' greedy actions, what the value estimator bootstraps on.

    Its parameter tree is ``{"local_value_network": ..., "mixer_network": ...}``; its
    inputs are the local network's and those of the mixer that the local network does not
    write; its outputs are both networks'.
    """

    def __init__(self, local: Module, mixer: Module) -> None:
        self.local, self.mixer = local, mixer
        produced = {as_tuple(k) for k in local.out_keys}
        extra = [k for k in mixer.in_keys if as_tuple(k) not in produced]
        self.in_keys = list(dict.fromkeys([*local.in_keys, *extra]))
        self.out_keys = list(dict.fromkeys([*local.out_keys, *mixer.out_keys]))

    @property
    def params(self) -> Params:
        return {_LOCAL: self.local.params, _MIXER: self.mixer.params}

    @params.setter
    def params(self, tree: Params) -> None:
        self.local.params, self.mixer.params = tree[_LOCAL], tree[_MIXER]

    def to(self, backend: Any, device: Any = None) -> MixedValueNetwork:
        self.local.to(backend, device)
        self.mixer.to(backend, device)
        return self

    def forward(self, batch: Any, params: Params) -> Any:
        self.local(batch, params[_LOCAL])
        return self.mixer(batch, params[_MIXER])


class QMixerLoss(LossModule):
    """The QMIX / VDN loss (see the module docstring for the equations).

    Parameters
    ----------
    local_value_network : QValueActor, Module, Layer or torch.nn.Module
        The agents' Q network: it writes the per-agent action values under
        ``tensor_keys.action_value`` (``[*B, n_agents, n_actions]``) and, as a
        ``QValueModule`` does, the greedy action and its value under
        ``tensor_keys.local_value`` (``[*B, n_agents, 1]``). An arrayrl ``QValueActor`` /
        ``DictModule``, or TorchRL's ``SafeSequential(TensorDictModule(MultiAgentMLP),
        QValueModule)`` (adapted). A bare network (an arrayrl layer, a
        ``torch.nn.Module``) is wrapped in a ``QValueActor`` reading ``"observation"``
        with ``action_space``, as TorchRL does.
    mixer_network : Module, Layer or torch.nn.Module
        Maps ``tensor_keys.local_value`` (and a state, if it reads one) to
        ``tensor_keys.global_value`` (``[*B, 1]``): e.g. ``DictModule(QMixer(...),
        in_keys=[("agents", "chosen_action_value"), "state"],
        out_keys=["chosen_action_value"])`` or TorchRL's ``TensorDictModule`` of its
        ``QMixer`` / ``VDNMixer``. A bare network is wrapped to read ``local_value`` and
        write ``global_value``.
    loss_function : {"l2", "l1", "smooth_l1"}, default "l2"
    delay_value : bool, default True
        Keep target copies of both networks (else the target uses the current
        parameters without gradient). TorchRL's docstring says ``False``; its code, and
        this, default to ``True``.
    gamma : None
        Refused with ``TypeError`` (TorchRL's deprecation): use
        ``make_value_estimator(..., gamma=...)``.
    action_space : str or spec, optional
        ``"one-hot"``, ``"categorical"``, ``"mult-one-hot"`` or ``"binary"``, or a spec
        (a composite is read at ``tensor_keys.action``). Default: the local network's
        (an arrayrl ``QValueActor``'s ``action_space``, a TorchRL network's action spec,
        or its ``QValueModule``'s ``action_space``); a mismatch raises ``ValueError``.
    priority_key : None
        Refused with ``RuntimeError`` (use ``set_keys(priority=...)``).

    The value estimator is TD(0) (``γ = 0.99``) by default; TD(1) and TD(λ) are
    supported. The reward, ``done`` and ``terminated`` are the team's, ``[*B, 1]`` like
    ``Q_tot`` (per-agent ones are refused, as TorchRL cannot use them either). The output
    is ``{"loss"}``; the priority ``(Q_tot − y)²`` (``[*B, 1]``) is set in the caller's
    batch under ``tensor_keys.priority`` (a new entry: no array the caller passed is
    written).

    Notes
    -----
    Where TorchRL 0.14.1 differs (recorded in the conformance deviations): its loss
    averages over every sample, a ``("collector", "mask")`` included; arrayrl reduces
    with the loss masks as its other losses do. TorchRL cannot wrap a bare mixer (its
    signature check compares the ``forward`` argument names with the nested key
    ``("agents", "chosen_action_value")``) and cannot find the action space of a local
    network whose ``QValueModule`` was built with ``action_space=`` and no spec; arrayrl
    does both. Integer rewards are refused (TorchRL promotes them).

    Examples
    --------
    >>> import numpy as np
    >>> from arrayrl.data import ArrayDict
    >>> from arrayrl.modules import DictModule, QValueActor
    >>> from arrayrl.modules.multiagent import MultiAgentMLP, VDNMixer
    >>> n, agents = 5, 3
    >>> qnet = QValueActor(
    ...     MultiAgentMLP(4, 2, agents, centralized=False, share_params=True, depth=1),
    ...     in_keys=[("agents", "observation")],
    ...     action_space="categorical",
    ...     action_value_key=("agents", "action_value"),
    ...     action_key=("agents", "action"),
    ...     chosen_action_value_key=("agents", "chosen_action_value"),
    ... )
    >>> vdn = DictModule(
    ...     VDNMixer(agents), [("agents", "chosen_action_value")], ["chosen_action_value"]
    ... )
    >>> loss = QMixerLoss(qnet, vdn)
    >>> obs = np.zeros((n, agents, 4), np.float32)
    >>> batch = ArrayDict(
    ...     {
    ...         "agents": {"observation": obs, "action": np.zeros((n, agents), np.int64)},
    ...         "next": {
    ...             "agents": {"observation": obs},
    ...             "reward": np.ones((n, 1), np.float32),
    ...             "done": np.zeros((n, 1), bool),
    ...             "terminated": np.zeros((n, 1), bool),
    ...         },
    ...     },
    ...     [n],
    ... )
    >>> loss(batch)["loss"].shape, batch["td_error"].shape
    ((), (5, 1))
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        advantage: Any = "advantage"
        value_target: Any = "value_target"
        local_value: Any = ("agents", "chosen_action_value")
        global_value: Any = "chosen_action_value"
        action_value: Any = ("agents", "action_value")
        action: Any = ("agents", "action")
        priority: Any = "td_error"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"

    default_value_estimator = ValueEstimators.TD0
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    out_keys: ClassVar[list[str]] = ["loss"]

    def __init__(
        self,
        local_value_network: Any,
        mixer_network: Any,
        *,
        loss_function: str | None = "l2",
        delay_value: bool = True,
        gamma: float | None = None,
        action_space: Any = None,
        priority_key: Any = None,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        reject_unknown_kwargs(owner, kwargs)
        check_common_args(owner, gamma, priority_key, loss_function, "auto")
        delay_value = flag("delay_value", delay_value)
        super().__init__()
        self.delay_value, self.loss_function = delay_value, loss_function
        space_or_spec = self._action_space_or_spec(action_space)
        given = canonical_action_space(space_or_spec)
        raw_local = local_value_network
        local = qvalue_actor_for(local_value_network, space_or_spec, owner)
        mixer = self._wrapped_mixer(mixer_network)
        self.convert_to_functional(local, _LOCAL, create_target_params=delay_value)
        self.convert_to_functional(mixer, _MIXER, create_target_params=delay_value)
        self.global_value_network = MixedValueNetwork(self.local_value_network, self.mixer_network)
        self.global_value_network_in_keys = list(self.global_value_network.in_keys)
        self.action_space = self._resolved_space(given, raw_local)

    # -- construction ---------------------------------------------------------------------
    def _action_space_or_spec(self, action_space: Any) -> Any:
        """``action_space``: a name or ``None`` as given, a composite spec read at the
        action key (the agents' action spec)."""
        if action_space is None or isinstance(action_space, str):
            return action_space
        return _action_leaf(action_space, self.tensor_keys.action)

    def _wrapped_mixer(self, mixer: Any) -> Any:
        """A bare mixer as a module reading ``local_value`` and writing ``global_value``."""
        if not is_bare_network(mixer):
            return mixer
        tk = self.tensor_keys
        return DictModule(as_layer(mixer), in_keys=[tk.local_value], out_keys=[tk.global_value])

    def _resolved_space(self, given: str | None, raw_local: Any) -> str:
        """The loss's action space: the one given, checked against the local network's."""
        own = _network_space(self.local_value_network, raw_local, self.tensor_keys.action)
        space = given or own
        if space is None:
            raise ValueError(
                "QMixerLoss: the action space could not be retrieved from the "
                "local_value_network; pass action_space= ('one-hot', 'categorical', "
                "'mult-one-hot' or 'binary', or a spec)"
            )
        if own is not None and given is not None and own != given:
            raise ValueError(
                f"action_space={given!r} does not match the local value network's action "
                f"space {own!r}"
            )
        if space not in _SPACES:
            raise NotImplementedError(
                f"QMixerLoss supports the action spaces {_SPACES}, got {space!r}"
            )
        return space

    # -- keys and estimator ---------------------------------------------------------------
    def _forward_value_estimator_keys(self) -> None:
        """The estimator's ``value`` is the mixed (global) value."""
        if self._value_estimator is None:
            return
        tk = self.tensor_keys
        self._value_estimator.set_keys(
            advantage=tk.advantage,
            value_target=tk.value_target,
            value=tk.global_value,
            reward=tk.reward,
            done=tk.done,
            terminated=tk.terminated,
        )

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The estimator bootstraps on the mixed greedy value at ``s′``."""
        return {"value_network": self.global_value_network}

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads: the action, the next reward / done / terminated,
        and the global value network's inputs at the root and under ``"next"``."""
        tk = self.tensor_keys
        net = self.global_value_network.in_keys
        signals = [next_key(tk.reward), next_key(tk.done), next_key(tk.terminated)]
        return list(dict.fromkeys([tk.action, *signals, *net, *(next_key(k) for k in net)]))

    # -- pieces of the objective ----------------------------------------------------------
    def _target(self, name: str, params: Mapping[str, Params] | None) -> Params:
        """Network ``name``'s target tree: its own copy with ``delay_value``, else the
        (given or own) parameters cut from the graph."""
        if self._owns_target[name]:
            return self._target_params[name]
        return self.detached_params(name, params)

    def _local_values(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``Q_θ,i(o_i, a_i)`` of the batch's actions, ``[*B, n_agents, 1]``."""
        tk = self.tensor_keys
        state = batch.select(*self.local_value_network.in_keys, strict=False)
        out = self.local_value_network(state, self.network_params(_LOCAL, params))
        values = self.read(out, tk.action_value)
        action = self.read(batch, tk.action)
        chosen = action_value_at(values, action, self.action_space, tk.action, owner="QMixerLoss")
        return chosen[..., None]

    def _mixed(self, batch: ArrayDict, local: Any, params: Mapping[str, Params] | None) -> Any:
        """``Q_tot(s, a) = f_φ(Q_1, …, Q_n; s)``, ``[*B]``."""
        tk = self.tensor_keys
        state = batch.select(*self.mixer_network.in_keys, strict=False)
        state.set(tk.local_value, local)
        out = self.mixer_network(state, self.network_params(_MIXER, params))
        return _team_column(self.read(out, tk.global_value), batch, "the mixer's output")[..., 0]

    def _target_value(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """The regression target ``y`` (``[*B]``), without gradient: the value estimator on
        the target networks' mixed greedy value at ``s′``."""
        reward = self._team_signals(batch)
        backend = backend_of(reward)
        tree = {_LOCAL: self._target(_LOCAL, params), _MIXER: self._target(_MIXER, params)}
        with backend.no_grad():
            target = self.value_estimator.value_estimate(
                batch.clone(recurse=False), target_params=tree
            )
        return backend.stop_gradient(target)[..., 0]

    def _team_signals(self, batch: ArrayDict) -> Any:
        """The next reward (checked floating) after checking that it, ``done`` and
        ``terminated`` are the team's ``[*B, 1]`` signals."""
        tk = self.tensor_keys
        reward = self.read(batch, next_key(tk.reward))
        xp = backend_of(reward).xp
        if not xp.isdtype(reward.dtype, "real floating"):
            raise TypeError(
                f"QMixerLoss: the reward {next_key(tk.reward)!r} must be floating (got dtype "
                f"{reward.dtype}); cast it, e.g. to the observations' dtype"
            )
        _team_column(reward, batch, f"the reward {next_key(tk.reward)!r}")
        for key in (tk.done, tk.terminated):
            found = batch.get(next_key(key), None)
            if found is not None:
                _team_column(found, batch, f"{next_key(key)!r}")
        return reward

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss = mean d(Q_tot(s, a), y)`` and the priority ``(Q_tot(s, a) − y)²``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            Batch size ``[*B]``: the networks' inputs (e.g. ``("agents",
            "observation")``, ``"state"``), ``tensor_keys.action`` (``[*B, n_agents]`` or
            ``[*B, n_agents, 1]`` indices, or ``[*B, n_agents, n_actions]`` encodings), and
            under ``"next"`` the networks' inputs and the team's ``reward``, ``done`` and
            ``terminated`` (``[*B, 1]``).
        params : mapping, optional
            ``{"local_value_network": tree, "mixer_network": tree}`` (either or both) to
            compute with instead of the loss's own parameters (pure-function use).

        Returns
        -------
        ArrayDict
            ``loss`` (a scalar), and the priority under ``tensor_keys.priority`` (moved into
            the caller's batch by the call).
        """
        batch = self.working_copy(batch)
        tk = self.tensor_keys
        self.check_batch_backend(batch, tk.action)
        q_tot = self._mixed(batch, self._local_values(batch, params), params)
        target = self._target_value(batch, params)
        backend = backend_of(q_tot)
        td_error = backend.stop_gradient((q_tot - target) ** 2)[..., None]
        loss = self.reduce_loss(distance_loss(q_tot, target, self.loss_function), batch)
        return ArrayDict({"loss": loss, tk.priority: td_error})


def _team_column(x: Any, batch: ArrayDict, what: str) -> Any:
    """``x`` when it is ``[*B, 1]`` (one value per transition, the team's); ``ValueError``
    naming ``what`` otherwise (a per-agent ``[*B, n_agents, 1]`` entry in particular)."""
    expected = (*tuple(batch.batch_size), 1)
    if tuple(x.shape) != expected:
        raise ValueError(
            f"QMixerLoss: {what} has shape {tuple(x.shape)}, expected {expected}: QMIX and VDN "
            "regress the team's value Q_tot, one per transition, so the reward, done and "
            "terminated must be the team's (TorchRL's QMixerLoss cannot use per-agent ones "
            "either); reduce per-agent rewards over the agent axis first, e.g. "
            "batch['next', 'reward'] = batch['next', 'agents', 'reward'].mean(-2)"
        )
    return x


def _action_leaf(spec: Any, action_key: Any) -> Any:
    """``spec`` itself, or a composite's entry at ``action_key`` (else at ``"action"``)."""
    if type(spec).__name__ != "Composite":
        return spec
    for key in (action_key, "action"):
        try:
            leaf = spec[key]
        except KeyError:
            continue
        if leaf is not None:
            return leaf
    raise ValueError(
        f"QMixerLoss: the composite action spec has no entry at {action_key!r}; pass the "
        "action's own spec, or action_space="
    )


def _network_space(adapted: Any, raw: Any, action_key: Any) -> str | None:
    """The local network's action space: an arrayrl ``QValueActor``'s ``action_space``,
    else (a TorchRL network) its spec's entry at ``action_key``, else the
    ``action_space`` of a ``QValueModule`` inside it; ``None`` when none says."""
    own = getattr(adapted, "action_space", None)
    if own is not None:
        return canonical_action_space(own)
    spec = getattr(raw, "spec", None)
    if spec is not None:
        try:
            return canonical_action_space(_action_leaf(spec, action_key))
        except (ValueError, TypeError):
            pass
    children = raw.modules() if callable(getattr(raw, "modules", None)) else ()
    for child in children:
        space = getattr(child, "action_space", None)
        if type(child).__name__ == "QValueModule" and isinstance(space, str):
            return canonical_action_space(space)
    return None
