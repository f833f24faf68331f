r"""Multi-agent PPO: ``MAPPOLoss`` (centralised critic) and ``IPPOLoss`` (independent
critics), TorchRL 0.14.1's ``torchrl/objectives/multiagent/mappo.py``.

Both are :class:`~arrayrl.objectives.ClipPPOLoss` on a batch with an agent dim. With
``i`` the agent, ``r_i = π_θ(a_i|o_i) / π_old(a_i|o_i)`` the ratio of its own action
under its own (decentralised) observation and ``A_i`` its advantage:

.. math::

    L_\text{objective} = -\operatorname{mean}_{b,t,i}
        \min\big(r_i A_i,\ \operatorname{clip}(r_i, 1-ε, 1+ε) A_i\big)

``A_i`` comes from multi-agent GAE (:class:`~arrayrl.objectives.value.MultiAgentGAE`):
a team reward / done ``[*B, T, 1]`` is broadcast over the agents, a per-agent one
``[*B, T, n_agents, 1]`` is used as is. It is standardised per agent (over every dim
but the agent dim, ``normalize_advantage_exclude_dims=(-2,)``).

plus the entropy bonus ``L_entropy = −c_H·H(π_θ(·|o_i))`` averaged the same way.

The critic loss is the PPO one, ``c_V·d(V_target, V_φ)`` (optionally value-clipped),
where for MAPPO ``V_φ`` sees the whole team (Yu et al. 2022) and for IPPO each agent's
own observation (de Witt et al. 2020). With a value normaliser ``n(x) = (x − μ)/σ``
(``μ``, ``σ`` its running location and scale: PopArt's debiased moving moments, the
exact running moments, or the percentile span with ``μ = 0`` unless ``center``) the
statistics first fold in the raw targets, then both sides are compared in normalised
space:

.. math::

    n \leftarrow \operatorname{update}(n, V_\text{target}), \qquad
    L_\text{critic} = c_V\, d\big(n(V_\text{target}),\ n(V_φ)\big),

and the clip radius of ``clip_value`` applies to ``n(V_φ) − n(V_old)`` (the stored value
is normalised with the same statistics), as TorchRL 0.14.1 does. Two differences, on
purpose: the statistics are updated in training mode only (``loss.eval()`` leaves them
alone; TorchRL updates them on every call), and the rows the loss masks drop
(``("collector", "mask")``, ``"shifted_valid"``) are left out of the update, as for
``advantage_norm`` (TorchRL folds padding in).

``ESS`` and ``explained_variance`` reduce over every batch dim, agents included
(``ESS = exp(2·LSE(log r) − LSE(2·log r)) / N`` over all ``N`` ratios, a scalar;
``explained_variance`` has shape ``[1]``); TorchRL 0.14.1 reduces dim 0 only.

References
----------
- C. Yu, A. Velu, E. Vinitsky, J. Gao, Y. Wang, A. Bayen, Y. Wu, "The Surprising
  Effectiveness of PPO in Cooperative Multi-Agent Games", NeurIPS 2022,
  https://arxiv.org/abs/2103.01955.
- C. Schroeder de Witt, T. Gupta, D. Makoviichuk, V. Makoviychuk, P. H. S. Torr, M. Sun,
  S. Whiteson, "Is Independent Learning All You Need in the StarCraft Multi-Agent
  Challenge?", 2020, https://arxiv.org/abs/2011.09533.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from ..ppo import ClipPPOLoss
from ..utils import ValueEstimators

__all__ = ["IPPOLoss", "MAPPOLoss"]


class MAPPOLoss(ClipPPOLoss):
    """Multi-agent PPO with a decentralised actor and a centralised critic (Yu et al.
    2022); see the module docstring for the equations.

    Parameters
    ----------
    actor_network : ProbabilisticActor
        The per-agent policy, e.g. a :class:`~arrayrl.modules.MultiAgentMLP` with
        ``centralized=False`` inside a ``ProbabilisticActor`` writing
        ``("agents", "action")`` (a TorchRL actor is accepted as well).
    critic_network : Module
        The centralised value network writing ``[*B, n_agents, 1]`` values, e.g. a
        ``MultiAgentMLP(..., n_agent_outputs=1, centralized=True)``.
    value_norm : ValueNorm, optional
        A :class:`~arrayrl.modules.value_norm.ValueNorm` (PopArt, Running, Percentile;
        a TorchRL one is converted, and the loss then owns the copy as
        ``loss.value_norm``). The critic target, prediction and stored value are
        normalised by it before the distance; its statistics are updated once per call
        with the raw target, in training mode only (``train()`` / ``eval()``) and without
        the rows the loss masks drop. Its state is in ``state_dict()`` under
        ``value_norm.*`` and moves with ``to()``.
    entropy_coeff : float or mapping, default 0.01
    normalize_advantage : bool, default True
        Standardise the advantage (MAPPO's default; ``ClipPPOLoss``'s is ``False``).
    normalize_advantage_exclude_dims : tuple of int, default (-2,)
        Dims kept independent by the standardisation: the agent dim.
    **kwargs
        Every other argument of :class:`~arrayrl.objectives.ClipPPOLoss`
        (``clip_epsilon``, ``critic_coeff``, ``loss_critic_type``, ``clip_value``,
        ``separate_losses``, ``reduction``, ``seed``, ...). An unknown keyword raises
        ``TypeError`` (TorchRL 0.14.1 ignores it).

    The default value estimator is multi-agent GAE (``ValueEstimators.MAGAE``). Keys
    follow TorchRL's multi-agent layout through ``set_keys``, e.g.
    ``loss.set_keys(value=("agents", "state_value"), action=("agents", "action"),
    sample_log_prob=("agents", "action_log_prob"))``; the reward, ``done`` and
    ``terminated`` keys may stay the team's (``[*B, T, 1]``) or be per agent
    (``("agents", "reward")``, ``[*B, T, n_agents, 1]``).

    All outputs are scalars except ``explained_variance`` (shape ``[1]``): ``ESS`` and
    ``explained_variance`` reduce over every batch dim, agents included (TorchRL 0.14.1
    keeps ``[T, n_agents]`` and ``[T, n_agents, 1]``: a recorded deviation).
    """

    default_value_estimator = ValueEstimators.MAGAE

    def __init__(
        self,
        actor_network: Any = None,
        critic_network: Any = None,
        *,
        value_norm: Any = None,
        entropy_coeff: float | dict[str, float] = 0.01,
        normalize_advantage: bool = True,
        normalize_advantage_exclude_dims: tuple[int, ...] = (-2,),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            actor_network,
            critic_network,
            entropy_coeff=entropy_coeff,
            normalize_advantage=normalize_advantage,
            normalize_advantage_exclude_dims=normalize_advantage_exclude_dims,
            **kwargs,
        )
        self._hold_value_norm(value_norm)

    def _hold_value_norm(self, value_norm: Any) -> None:
        """Keep ``value_norm`` (converted from TorchRL's if needed) as the loss's own
        state: ``loss.value_norm``, saved under ``value_norm.*``, moved by ``to()``."""
        if value_norm is None:
            self.value_norm = None
            return
        from arrayrl.modules.adapt import as_value_norm

        norm = as_value_norm(value_norm, "value_norm", owner=type(self).__name__)
        self.register_state("value_norm", norm)

    def _critic_distance(
        self, batch: ArrayDict, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any, Any, Any]:
        """The PPO critic distance (through :meth:`_critic_loss_inputs`), after folding
        the raw value targets into the value normaliser once (training mode only; the
        rows the loss masks drop are left out)."""
        if self.value_norm is not None and self.training:
            target = self.read(batch, self.tensor_keys.value_target, what="value_target")
            norm = self.value_norm
            norm.update(self._valid_rows(target, batch, len(norm.shape)))
        return super()._critic_distance(batch, params)

    def _critic_loss_inputs(
        self, target_return: Any, state_value: Any, old_state_value: Any
    ) -> tuple[Any, Any, Any]:
        """``(n(V_target), n(V_φ), n(V_old))`` with ``n`` the value normaliser (the
        inputs unchanged without one). ``n(V_target)`` carries no gradient; ``n(V_φ)``
        carries the critic's, scaled by ``1/σ``; the clip radius of ``clip_value`` then
        applies to ``n(V_φ) − n(V_old)``."""
        norm = self.value_norm
        if norm is None:
            return target_return, state_value, old_state_value
        target = norm.normalize(backend_of(target_return).stop_gradient(target_return))
        old = None if old_state_value is None else norm.normalize(old_state_value)
        return target, norm.normalize(state_value), old


class IPPOLoss(MAPPOLoss):
    """Independent PPO (de Witt et al. 2020): every agent learns with its own value
    function of its own observation, with no centralised critic or global state.

    The loss is :class:`MAPPOLoss` (same arguments, defaults, keys and outputs); the
    difference lies in the critic passed, e.g. a
    ``MultiAgentMLP(..., n_agent_outputs=1, centralized=False)``, per agent or with
    shared parameters. ``value_norm`` is accepted as in MAPPO (rarely used with IPPO).
    """
