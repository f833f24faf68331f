"""Dreamer (v1): ``DreamerModelLoss``, ``DreamerActorLoss``, ``DreamerValueLoss``.

Hafner et al. 2020, "Dream to Control: Learning Behaviors by Latent Imagination",
https://arxiv.org/abs/1912.01603. A recurrent state-space model (RSSM: belief ``h``,
stochastic state ``s``, prior ``p(s_t | h_t)``, posterior ``q(s_t | h_t, o_t)``) is
learnt from replayed sequences (§4, eq. 10); an actor ``q_φ`` and a value ``v_ψ`` are
learnt in imagination (§3): the actor maximises the λ-returns ``V_λ`` of imagined
trajectories by backpropagating through them (eq. 7-8), the value regresses on them.

Arguments, defaults, keys, outputs and the tuple returns follow TorchRL 0.14.1
(``torchrl/objectives/dreamer.py``); one deviation (the λ-return axis of the actor loss)
is recorded in ``conformance/dreamer_cases.py``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import coefficient, count, flag, hyperparameter
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict, as_arraydict, is_tensordict
from arrayrl.modules import Params, map_params
from arrayrl.modules.adapt import as_module, is_torch_object

from ._imagination import ImaginationKeys, imagine, lambda_returns, run_world_model
from .common import LossModule
from .td3 import GAMMA_ERROR
from .utils import ValueEstimators, distance_loss

__all__ = ["DreamerActorLoss", "DreamerModelLoss", "DreamerValueLoss"]

_DISTANCES = ("l1", "l2", "smooth_l1")


def _distance_name(owner: str, name: str, value: str | None) -> str:
    value = "l2" if value is None else value
    if value not in _DISTANCES:
        raise ValueError(f"{owner}: unknown {name} {value!r}; expected one of {_DISTANCES}")
    return value


def _refuse_float64_rssm(owner: str, name: str, module: Any) -> None:
    """TorchRL's ``RSSMPrior`` / ``RSSMPriorV3`` run their GRU in float32 and raise on a
    float64 world model; refuse it here, at construction, with the reason."""
    if not is_torch_object(module) or not hasattr(module, "modules"):
        return
    for sub in module.modules():
        if type(sub).__name__ in ("RSSMPrior", "RSSMPriorV3"):
            if any(p.dtype.itemsize == 8 for p in sub.parameters() if p.is_floating_point()):
                raise TypeError(
                    f"{owner}: {name} holds a float64 TorchRL {type(sub).__name__}, which "
                    "casts its GRU input to float32 (TorchRL's Dreamer is float32-only); "
                    "cast the model with .float()"
                )


class _TupleReturn:
    """``loss(batch)`` returns ``(losses, data)`` as TorchRL's Dreamer losses; both are
    ``tensordict.TensorDict`` s when ``batch`` is one."""

    def __call__(self, batch: Any, params: Mapping[str, Params] | None = None) -> Any:
        losses, data = self.forward(batch, params)
        if is_tensordict(batch):
            losses = losses.to_tensordict()
            data = data if is_tensordict(data) else data.to_tensordict()
        return losses, data


# -- the world model ---------------------------------------------------------------------
class DreamerModelLoss(_TupleReturn, LossModule):
    """The world-model loss (Hafner et al. 2020, eq. 10, with free nats).

    With the prior ``p = N(μ_p, σ_p)`` and posterior ``q = N(μ_q, σ_q)`` of the RSSM
    written by the world model at ``("next", ...)``:

    - ``KL_t = Σ_i [log(σ_p/σ_q) + (σ_q² + (μ_p − μ_q)²) / (2σ_p²) − ½]`` (the sum over
      the state dims only without ``global_average``);
    - ``loss_model_kl = λ_kl · mean_t max(KL_t, free_nats)`` (``delayed_clamp``:
      ``max(mean_t KL_t, free_nats)``);
    - ``loss_model_reco = λ_reco · mean_t Σ_{c,h,w} d(o_t, ô_t)`` (``global_average``:
      the mean over every element);
    - ``loss_model_reward = λ_reward · mean_t d(r_t, r̂_t)``;

    each of shape ``[1]``, as TorchRL's.

    Parameters
    ----------
    world_model : Module
        Reads the batch (``("next", "pixels")``, ``action``, the primers ``state``,
        ``belief``) and writes ``("next", prior_mean / prior_std / posterior_mean /
        posterior_std / reco_pixels / reward)``: TorchRL's ``WorldModelWrapper`` (an
        ``ObsEncoder``, an ``RSSMRollout``, an ``ObsDecoder``, then the reward model) or
        an arrayrl module. The batch's reward is renamed ``("next", "true_reward")``
        before the call, as TorchRL does.
    lambda_kl, lambda_reco, lambda_reward : float, default 1.0
    reco_loss, reward_loss : {"l2", "l1", "smooth_l1"}, default "l2"
    free_nats : float, default 3
    delayed_clamp : bool, default False
        Clamp the averaged KL instead of each step's.
    global_average : bool, default False
        Average the KL and reconstruction over every dim instead of summing over the
        state / image dims.

    A float64 TorchRL ``RSSMPrior`` is refused (``TypeError``): TorchRL's runs its GRU in
    float32 and raises; an arrayrl world model may be float64.

    ``loss(batch)`` returns ``(losses, sampled_data)``: the three terms and the batch
    with everything the world model wrote, cut from the graph.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        reward: Any = "reward"
        true_reward: Any = "true_reward"
        prior_mean: Any = "prior_mean"
        prior_std: Any = "prior_std"
        posterior_mean: Any = "posterior_mean"
        posterior_std: Any = "posterior_std"
        pixels: Any = "pixels"
        reco_pixels: Any = "reco_pixels"

    out_keys: ClassVar[list[str]] = ["loss_model_kl", "loss_model_reco", "loss_model_reward"]

    def __init__(
        self,
        world_model: Any,
        *,
        lambda_kl: float = 1.0,
        lambda_reco: float = 1.0,
        lambda_reward: float = 1.0,
        reco_loss: str | None = None,
        reward_loss: str | None = None,
        free_nats: int = 3,
        delayed_clamp: bool = False,
        global_average: bool = False,
    ) -> None:
        owner = type(self).__name__
        _refuse_float64_rssm(owner, "world_model", world_model)
        super().__init__()
        self.lambda_kl = coefficient("lambda_kl", lambda_kl, allow_none=False)
        self.lambda_reco = coefficient("lambda_reco", lambda_reco, allow_none=False)
        self.lambda_reward = coefficient("lambda_reward", lambda_reward, allow_none=False)
        self.reco_loss = _distance_name(owner, "reco_loss", reco_loss)
        self.reward_loss = _distance_name(owner, "reward_loss", reward_loss)
        self.free_nats = _real(owner, "free_nats", free_nats)
        self.delayed_clamp = flag("delayed_clamp", delayed_clamp)
        self.global_average = flag("global_average", global_average)
        self.convert_to_functional(world_model, "world_model")
        # TorchRL's handles on the decoder and the reward model (its world_model[0][-1]
        # and world_model[1]), where the world model is TorchRL's
        self.decoder, self.reward_model = _torchrl_parts(world_model)

    def _next(self, field: str) -> tuple[Any, ...]:
        key = getattr(self.tensor_keys, field)
        return ("next", *(key if isinstance(key, tuple) else (key,)))

    def kl_loss(
        self, prior_mean: Any, prior_std: Any, posterior_mean: Any, posterior_std: Any
    ) -> Any:
        """``KL(q ‖ p)`` of the diagonal Gaussians, summed over the state dims (unless
        ``global_average``), clamped at ``free_nats`` and averaged (0-d)."""
        xp = backend_of(prior_mean).xp
        kl = (
            xp.log(prior_std / posterior_std)
            + (posterior_std**2 + (prior_mean - posterior_mean) ** 2) / (2 * prior_std**2)
            - 0.5
        )
        if not self.global_average:
            kl = xp.sum(kl, axis=-1)
        if self.delayed_clamp:
            return xp.clip(xp.mean(kl), min=self.free_nats)
        return xp.mean(xp.clip(kl, min=self.free_nats))

    def reco_loss_value(self, pixels: Any, reco_pixels: Any) -> Any:
        """``mean Σ_{c,h,w} d(o, ô)`` (``global_average``: the mean of ``d``), 0-d."""
        xp = backend_of(reco_pixels).xp
        loss = distance_loss(pixels, reco_pixels, self.reco_loss)
        if not self.global_average:
            loss = xp.sum(loss, axis=(-3, -2, -1))
        return xp.mean(loss)

    def reward_loss_value(self, true_reward: Any, reward: Any) -> Any:
        """``mean d(r, r̂)``, 0-d."""
        xp = backend_of(reward).xp
        return xp.mean(distance_loss(true_reward, reward, self.reward_loss))

    def forward(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[ArrayDict, ArrayDict]:
        """``(losses, sampled_data)``: see the class docstring."""
        data = self.working_copy(batch)
        true_reward = self.read(data, self._next("reward"), what="reward")
        data.set(self._next("true_reward"), true_reward)
        del data[self._next("reward")]
        data = run_world_model(self.world_model, data, self.network_params("world_model", params))
        get = {f: self.read(data, self._next(f), what=f) for f in _MODEL_FIELDS}
        xp = backend_of(get["prior_mean"]).xp
        kl = self.kl_loss(
            get["prior_mean"], get["prior_std"], get["posterior_mean"], get["posterior_std"]
        )
        reco = self.reco_loss_value(get["pixels"], get["reco_pixels"])
        reward = self.reward_loss_value(get["true_reward"], get["reward"])
        losses = ArrayDict(
            {
                "loss_model_kl": self.lambda_kl * xp.reshape(kl, (1,)),
                "loss_model_reco": self.lambda_reco * xp.reshape(reco, (1,)),
                "loss_model_reward": self.lambda_reward * xp.reshape(reward, (1,)),
            }
        )
        return losses, data.detach()


_MODEL_FIELDS = (
    "prior_mean",
    "prior_std",
    "posterior_mean",
    "posterior_std",
    "pixels",
    "reco_pixels",
    "true_reward",
    "reward",
)


def _real(owner: str, name: str, value: Any) -> float:
    """A finite real number (``free_nats`` may be negative: no clamp)."""
    if isinstance(value, bool) or not hasattr(value, "__float__"):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{owner}: {name} must be finite, got {x}")
    return x


def _torchrl_parts(world_model: Any) -> tuple[Any, Any]:
    """TorchRL's ``world_model[0][-1]`` (decoder) and ``world_model[1]`` (reward model),
    or ``(None, None)`` for a world model without that layout."""
    try:
        return world_model[0][-1], world_model[1]
    except (TypeError, IndexError, KeyError, AttributeError):
        return None, None


# -- the actor ---------------------------------------------------------------------------
def _world_model_of(env: Any, owner: str) -> Any:
    """The world model of TorchRL's ``DreamerEnv`` (or any model-based env with a
    ``world_model``), or ``env`` itself when it is already a world-model module."""
    inner = getattr(env, "world_model", None)
    if inner is not None and hasattr(env, "rollout"):
        if getattr(env, "world_model_params", None) is not None:
            raise TypeError(
                f"{owner}: model_based_env has separate world_model_params; arrayrl runs the "
                "world model with its own parameters (pass params= to forward instead)"
            )
        return inner
    if hasattr(env, "rollout"):
        raise TypeError(
            f"{owner}: model_based_env {type(env).__name__} has no world_model; pass "
            "TorchRL's DreamerEnv or a world-model module"
        )
    return env


class DreamerActorLoss(_TupleReturn, LossModule):
    """The actor loss (Hafner et al. 2020, eq. 7-8): the negative λ-return of imagined
    trajectories, backpropagated through the world model.

    From the batch's ``state`` and ``belief`` (cut from the graph), :func:`imagine`
    unrolls the actor in the world model for ``H = imagination_horizon`` steps (the world
    model's and the value's parameters held out, as TorchRL's ``hold_out_net``); then

    - ``V_λ = TD(λ)(r_{1:H}, v(s_{1:H}))`` along the imagination axis
      (:func:`lambda_returns`, the loss's value estimator);
    - ``loss_actor = −mean_b Σ_t w_t V_λ(t)`` with ``w_t = γ^t`` (``discount_loss``) or
      ``1``; 0-d.

    Parameters
    ----------
    actor_model : ProbabilisticActor
        An arrayrl or TorchRL ``ProbabilisticActor`` over ``state`` and ``belief`` whose
        distribution has ``rsample`` (TorchRL's ``DreamerActor`` + ``TanhNormal``).
    value_model : Module
        Reads ``state``, ``belief``; writes ``tensor_keys.value``. Not trained here and
        not among :meth:`parameters` (as TorchRL).
    model_based_env : DreamerEnv or Module
        TorchRL's ``DreamerEnv`` (its ``world_model`` is used), or a world-model module
        reading ``state``, ``belief``, ``action`` and writing the next ``state``,
        ``belief`` and ``reward``. Its parameters are listed by :meth:`parameters`
        (``model_based_env_params``, as TorchRL's) but get no gradient.
    imagination_horizon : int, default 15
    discount_loss : bool, default True
    gamma, lmbda
        Refused with ``TypeError``, as TorchRL: use ``make_value_estimator``.
    seed : int, optional
        The actor's generator (see :meth:`LossModule.generator`); by default a loss
        built from TorchRL modules draws from torch's global generator, as TorchRL does,
        so ``torch.manual_seed`` gives TorchRL's draws.

    ``loss(batch)`` returns ``({"loss_actor"}, fake_data)``: the imagined trajectory
    ``[*B, H]`` with ``lambda_target``, cut from the graph.

    The value estimator (default TD(λ), γ = 0.99, λ = 0.95; TD(0) and TD(1) supported)
    runs along the imagination axis. TorchRL 0.14.1 calls it on a batch-less
    ``TensorDict`` and so along the trailing unit axis, which turns TD(λ) and TD(1) into
    TD(0); arrayrl computes the λ-return the paper defines (deviation
    ``torchrl-dreamer-lambda-time-dim``).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        belief: Any = "belief"
        reward: Any = "reward"
        value: Any = "state_value"
        done: Any = "done"
        terminated: Any = "terminated"

    default_value_estimator = ValueEstimators.TDLambda
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    out_keys: ClassVar[list[str]] = ["loss_actor"]

    def __init__(
        self,
        actor_model: Any,
        value_model: Any,
        model_based_env: Any,
        *,
        imagination_horizon: int = 15,
        discount_loss: bool = True,
        gamma: float | None = None,
        lmbda: float | None = None,
        seed: int | None = None,
    ) -> None:
        if gamma is not None or lmbda is not None:
            raise TypeError(GAMMA_ERROR)
        owner = type(self).__name__
        world_model = _world_model_of(model_based_env, owner)
        _refuse_float64_rssm(owner, "model_based_env", world_model)
        super().__init__()
        self.seed = seed
        self.imagination_horizon = count("imagination_horizon", imagination_horizon)
        self.discount_loss = flag("discount_loss", discount_loss)
        actor = self.convert_to_functional(actor_model, "actor_model")
        if not hasattr(actor, "get_dist"):
            raise TypeError(
                f"{owner}: actor_model must be a ProbabilisticActor (a distribution with "
                f"rsample), got {type(actor_model).__name__}"
            )
        self.convert_to_functional(world_model, "model_based_env")
        self.value_model = as_module(value_model, "value_model", owner=owner)
        self._has_torch_modules |= self.value_model is not value_model

    def to(self, backend: Any, device: Any = None) -> DreamerActorLoss:
        """Move the parameters and the (held-out) value model; returns ``self``."""
        super().to(backend, device)
        self.value_model.to(backend, device)
        return self

    def _value_estimator_networks(self, value_type: ValueEstimators) -> dict[str, Any]:
        """The returns bootstrap on values the loss computes: no network."""
        return {"value_network": None}

    def _forward_value_estimator_keys(self) -> None:
        if self._value_estimator is not None:
            tk = self.tensor_keys
            self._value_estimator.set_keys(
                value=tk.value, reward=tk.reward, done=tk.done, terminated=tk.terminated
            )

    def _keys(self) -> ImaginationKeys:
        tk = self.tensor_keys
        return ImaginationKeys(
            belief=tk.belief, reward=tk.reward, done=tk.done, terminated=tk.terminated
        )

    def _next_values(self, fake_data: ArrayDict) -> Any:
        """``v(s_{t+1}, h_{t+1})`` ``[*B, H, 1]``, the value's parameters held out and
        its inputs (the imagined next states) differentiable."""
        nxt = fake_data.get("next")
        inputs = nxt.select(*self.value_model.in_keys, strict=False)
        held_out = map_params(_held_out, self.value_model.params)
        self.value_model(inputs, held_out)
        return self.read(inputs, self.tensor_keys.value, what="value")

    def discount_weights(self, like: Any) -> Any:
        """``w_t = γ^t`` along axis ``-2`` of ``like`` (``[..., H, 1]``)."""
        return _discounts(like, float(self.value_estimator.gamma))

    def forward(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[ArrayDict, ArrayDict]:
        """``({"loss_actor": −mean Σ_t w_t V_λ(t)}, fake_data)``."""
        keys = self._keys()
        start = as_arraydict(batch).select(keys.state, keys.belief)
        actor_params = self.network_params("actor_model", params)
        model_params = self.detached_params("model_based_env", params)
        rng = self.generator(start.backend)
        fake_data = imagine(
            self.model_based_env,
            model_params,
            self.actor_model,
            actor_params,
            start,
            self.imagination_horizon,
            rng,
            keys=keys,
        )
        reward = fake_data.get(("next", keys.reward))
        lambda_target = lambda_returns(self.value_estimator, reward, self._next_values(fake_data))
        fake_data.set("lambda_target", lambda_target)
        xp = backend_of(lambda_target).xp
        weighted = (
            lambda_target * self.discount_weights(lambda_target)
            if self.discount_loss
            else lambda_target
        )
        loss_actor = -xp.mean(xp.sum(weighted, axis=(-2, -1)))
        return ArrayDict({"loss_actor": loss_actor}), fake_data.detach()


def _held_out(leaf: Any) -> Any:
    """``leaf`` cut from the graph (a held-out parameter)."""
    return backend_of(leaf).stop_gradient(leaf)


def _discounts(like: Any, gamma: float) -> Any:
    """``γ^i`` along axis ``-2`` of ``like``, broadcast to its shape (TorchRL's
    ``cumprod`` of ``[1, γ, γ, ...]``)."""
    xp = backend_of(like).xp
    n = like.shape[-2]
    powers = xp.arange(n, dtype=like.dtype, device=getattr(like, "device", None))
    weights = xp.reshape(gamma**powers, (n, 1))
    return xp.broadcast_to(weights, like.shape)


# -- the value ---------------------------------------------------------------------------
class DreamerValueLoss(_TupleReturn, LossModule):
    """The value loss (Hafner et al. 2020, eq. 8): regression of ``v_ψ`` on the
    imagined λ-returns.

    ``loss_value = mean_b Σ_{t, ·} w_t d(v_ψ(s_t, h_t), V_λ(t))`` with ``w_t = γ^t``
    along axis ``-2`` of ``lambda_target`` (``discount_loss``) or ``1``; 0-d. On the
    actor's ``[*B, H]`` output that is the imagination axis; on a flat ``[N]`` batch
    (``lambda_target`` ``[N, 1]``) it is the batch axis, sample ``i`` weighted ``γ^i``, as
    TorchRL 0.14.1 does.

    Parameters
    ----------
    value_model : Module
        Reads its ``in_keys`` (``state``, ``belief``) and writes ``tensor_keys.value``.
    value_loss : {"l2", "l1", "smooth_l1"}, default "l2"
    discount_loss : bool, default True
    gamma : float, default 0.99

    ``loss(fake_data)`` returns ``({"loss_value"}, fake_data)``, the caller's batch as it
    was given (the value is written into a selection of it, as TorchRL).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"

    out_keys: ClassVar[list[str]] = ["loss_value"]

    def __init__(
        self,
        value_model: Any,
        value_loss: str | None = None,
        discount_loss: bool = True,
        gamma: float = 0.99,
    ) -> None:
        owner = type(self).__name__
        super().__init__()
        self.value_loss = _distance_name(owner, "value_loss", value_loss)
        self.discount_loss = flag("discount_loss", discount_loss)
        self.gamma = hyperparameter("gamma", gamma, low=0.0, high=1.0)
        self.convert_to_functional(value_model, "value_model")

    def forward(
        self, fake_data: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[ArrayDict, Any]:
        """``({"loss_value"}, fake_data)``: see the class docstring."""
        data = as_arraydict(fake_data)
        lambda_target = self.read(data, "lambda_target", what="lambda_target")
        inputs = data.select(*self.value_model.in_keys, strict=False)
        self.value_model(inputs, self.network_params("value_model", params))
        value = self.read(inputs, self.tensor_keys.value, what="value")
        xp = backend_of(value).xp
        loss = distance_loss(value, lambda_target, self.value_loss)
        if self.discount_loss:
            loss = _discounts(lambda_target, self.gamma) * loss
        loss_value = xp.mean(xp.sum(loss, axis=(-1, -2)))
        return ArrayDict({"loss_value": loss_value}), fake_data
