"""Imagined rollouts for the Dreamer actor, as a function of the parameters.

Hafner et al. 2020, "Dream to Control: Learning Behaviors by Latent Imagination",
https://arxiv.org/abs/1912.01603, §3. From start states ``(s_0, h_0)`` (stochastic
state and deterministic belief), the actor ``q_φ(a | s, h)`` and the world model's
transition and reward (``p_θ``) are unrolled for ``H`` steps:

.. math::

    a_t \\sim q_\\phi(\\cdot \\mid s_t, h_t) \\text{ (reparameterised)}, \\qquad
    (s_{t+1}, h_{t+1}) \\sim p_\\theta(\\cdot \\mid s_t, h_t, a_t), \\qquad
    r_t = r_\\theta(s_{t+1}, h_{t+1}),

and the λ-returns :math:`V_\\lambda(s_t)` of the imagined rewards, bootstrapped on the
value :math:`v_\\psi(s_{t+1}, h_{t+1})`, are computed by arrayrl's TD(λ) estimator along
the imagination axis. Everything is differentiable: on torch the actor's gradient flows
through the samples, the world model, the rewards and the values into the returns.

:func:`imagine` is the rollout: a pure function of ``(world_model, world_model_params,
actor, actor_params, start, horizon, rng)``, with no environment object and no global
state besides the generator. It returns what TorchRL's ``DreamerEnv.rollout`` records:
an ``ArrayDict`` of shape ``[*B, H]`` with the root ``state``, ``belief``, the actor's
outputs (``loc``, ``scale``, ``action``), ``done`` / ``terminated`` (``False``), and under
``"next"`` the model's ``state``, ``belief``, ``reward`` and ``done`` / ``terminated``.

The world model is a dict-level module (arrayrl, or TorchRL's ``WorldModelWrapper`` as
wrapped by :func:`arrayrl.modules.adapt.as_module`) reading ``state``, ``belief`` and
``action`` and writing the next ``state``, ``belief`` and ``reward`` at the same keys, as
the world model of TorchRL's ``DreamerEnv`` does. Draws per step: the actor's
``rsample``, then whatever the world model draws (TorchRL's ``RSSMPrior``: ``randn_like``
from torch's global generator), which is TorchRL's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict, as_arraydict
from arrayrl.modules import Module, Params
from arrayrl.modules.adapt import is_torch_object

__all__ = ["ImaginationKeys", "imagine", "lambda_returns", "run_world_model"]


@dataclass(frozen=True)
class ImaginationKeys:
    """The keys of an imagined rollout (TorchRL's ``DreamerEnv`` defaults)."""

    state: Any = "state"
    belief: Any = "belief"
    action: Any = "action"
    reward: Any = "reward"
    done: Any = "done"
    terminated: Any = "terminated"


def run_world_model(world_model: Module, data: ArrayDict, params: Params) -> ArrayDict:
    """``world_model`` on ``data``; a wrapped TorchRL module runs on a ``TensorDict`` of
    the whole batch (its sub-modules read and write keys that are not among its
    ``in_keys`` / ``out_keys``, RSSMRollout's ``"_"``), as TorchRL calls it."""
    module = getattr(world_model, "module", None)
    if module is not None and is_torch_object(module) and data.backend.name == "torch":
        return as_arraydict(world_model(data.to_tensordict(), params))
    world_model(data, params)
    return data


def _false_flags(like: Any) -> Any:
    """A ``[*B, 1]`` boolean array of ``False`` on ``like``'s backend and device."""
    xp = backend_of(like).xp
    shape = (*like.shape[:-1], 1)
    return xp.zeros(shape, dtype=xp.bool, device=getattr(like, "device", None))


def _step_inputs(
    state: Any, belief: Any, batch_size: tuple[int, ...], keys: ImaginationKeys
) -> ArrayDict:
    flags = _false_flags(state)
    return ArrayDict(
        {keys.state: state, keys.belief: belief, keys.done: flags, keys.terminated: flags},
        batch_size,
    )


def imagine(
    world_model: Module,
    world_model_params: Params,
    actor: Any,
    actor_params: Params,
    start: ArrayDict,
    horizon: int,
    rng: Any,
    *,
    keys: ImaginationKeys = ImaginationKeys(),
) -> ArrayDict:
    """Unroll ``actor`` in ``world_model`` for ``horizon`` steps from ``start``.

    Parameters
    ----------
    world_model : Module
        Reads ``state``, ``belief``, ``action``; writes the next ``state``, ``belief``
        and ``reward`` (``[*B, 1]``).
    world_model_params : tree
        The parameters it computes with (pass stopped-gradient ones to hold it out, as
        TorchRL's ``hold_out_net``).
    actor : ProbabilisticActor
        ``actor.get_dist(batch, actor_params)`` gives a distribution with ``rsample``.
    actor_params : tree
    start : ArrayDict
        ``[*B]`` with ``state`` and ``belief`` (not differentiated through).
    horizon : int
        ``H >= 1``.
    rng : arrayrl.random.Generator
        The actor's generator.

    Returns
    -------
    ArrayDict
        ``[*B, H]``: see the module docstring.
    """
    batch_size = tuple(start.batch_size)
    current = _step_inputs(start.get(keys.state), start.get(keys.belief), batch_size, keys).detach()
    steps = []
    for _ in range(horizon):
        dist = actor.get_dist(current, actor_params)
        current.set(keys.action, dist.rsample(rng=rng))
        model_in = current.select(keys.state, keys.belief, keys.action)
        model_out = run_world_model(world_model, model_in, world_model_params)
        nxt = _step_inputs(model_out.get(keys.state), model_out.get(keys.belief), batch_size, keys)
        reward = model_out.get(keys.reward)
        current.set("next", nxt.clone(recurse=False).set(keys.reward, reward))
        steps.append(current)
        current = nxt
    return ArrayDict.stack(steps, dim=len(batch_size))


def lambda_returns(estimator: Any, reward: Any, next_value: Any) -> Any:
    """The value ``estimator``'s returns (TD(λ), TD(1) or TD(0)) of imagined ``reward``
    ``[*B, H, 1]`` bootstrapped on ``next_value`` ``[*B, H, 1]``, along the imagination
    axis ``H``, never done nor terminated. Differentiable in both (the estimator's
    adjoint scan on torch)."""
    batch_size = tuple(reward.shape[:-1])
    flags = backend_of(reward).xp.zeros(
        reward.shape, dtype=backend_of(reward).xp.bool, device=getattr(reward, "device", None)
    )
    tk = estimator.tensor_keys
    batch = ArrayDict(
        {"next": {tk.reward: reward, tk.value: next_value, tk.done: flags, tk.terminated: flags}},
        batch_size,
    )
    return estimator.value_estimate(batch, next_value=next_value, time_dim=len(batch_size) - 1)
