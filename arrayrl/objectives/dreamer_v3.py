r"""DreamerV3 (Hafner, Pasukonis, Ba & Lillicrap 2023, "Mastering Diverse Domains through
World Models", https://arxiv.org/abs/2301.04104), as in TorchRL 0.14.1's
``torchrl/objectives/dreamer_v3.py``.

This file holds the KL balancing of the world model's categorical latents (section 3,
eqs. 5-6). With posterior logits :math:`z_q` (the representation model, which sees the
observation), prior logits :math:`z_p` (the dynamics predictor), ``sg`` the stop-gradient
and free nats :math:`f`:

.. math::

    \mathcal L_\text{dyn} = \max\bigl(f,\ \mathrm{KL}[\operatorname{sg}(q) \,\|\, p]\bigr),
    \qquad
    \mathcal L_\text{rep} = \max\bigl(f,\ \mathrm{KL}[q \,\|\, \operatorname{sg}(p)]\bigr),

the dynamics term training only the prior, the representation term only the posterior.
It also re-exports the scalar functions of DreamerV3's critic and reward heads
(:func:`symlog`, :func:`symexp`, :func:`two_hot_encode`, :func:`two_hot_decode`,
:func:`two_hot_cross_entropy`), as TorchRL's module does.
"""

from __future__ import annotations

from typing import Any

from arrayrl._validation import floating_array, hyperparameter
from arrayrl.backends import Backend, backend_of
from arrayrl.modules.distributions._base import log_softmax_and_softmax
from arrayrl.modules.functional import symexp, symlog
from arrayrl.modules.model_based import (
    _unimix_probs,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)

__all__ = [
    "categorical_kl_balanced",
    "categorical_kl_terms",
    "symexp",
    "symlog",
    "two_hot_cross_entropy",
    "two_hot_decode",
    "two_hot_encode",
]

#: the floor TorchRL puts under the probabilities of ``categorical_kl_balanced``
_PROBABILITY_FLOOR = 1e-8


def categorical_kl_terms(
    posterior_logits: Any,
    prior_logits: Any,
    free_nats: float = 1.0,
    unimix: float = 0.01,
) -> tuple[Any, Any]:
    r"""DreamerV3's dynamics and representation losses (eqs. 5-6), summed over the
    categoricals before the free-nats floor, averaged over the batch.

    With :math:`q, p` the posterior and prior probabilities mixed with ``unimix`` of the
    uniform distribution, per batch element (sums over the last two axes, categoricals
    and classes):

    .. math::

        d = \sum \operatorname{sg}(q)\,(\log \operatorname{sg}(q) - \log p), \qquad
        r = \sum q\,(\log q - \log \operatorname{sg}(p)),

    returning :math:`(\operatorname{mean} \max(f, d),\ \operatorname{mean} \max(f, r))`;
    ``free_nats=0`` applies no floor (as TorchRL's ``if free_nats``).

    Parameters
    ----------
    posterior_logits, prior_logits : array
        ``[..., num_categoricals, num_classes]``, the same shape, floating.
    free_nats : float, default 1.0
        The floor, in nats, non-negative.
    unimix : float, default 0.01
        In ``[0, 1)``.

    Returns
    -------
    (array, array)
        The scalar dynamics and representation losses.
    """
    backend = _checked_pair(posterior_logits, prior_logits, "categorical_kl_terms")
    free_nats = hyperparameter("free_nats", free_nats, low=0.0, high=float("inf"))
    posterior = _unimix_probs(posterior_logits, unimix)
    prior = _unimix_probs(prior_logits, unimix)
    xp = backend.xp
    log_posterior, log_prior = xp.log(posterior), xp.log(prior)
    sg = backend.stop_gradient
    dynamics = _sum_last_two(sg(posterior) * (sg(log_posterior) - log_prior), xp)
    representation = _sum_last_two(posterior * (log_posterior - sg(log_prior)), xp)
    if free_nats:
        dynamics = _floor(dynamics, free_nats, xp)
        representation = _floor(representation, free_nats, xp)
    return xp.mean(dynamics), xp.mean(representation)


def categorical_kl_balanced(
    posterior_logits: Any,
    prior_logits: Any,
    alpha: float = 0.8,
    free_bits: float = 1.0,
) -> Any:
    r"""The balanced KL of DreamerV2/V3 with a free-bits floor per categorical:

    .. math::

        \alpha\,\operatorname{mean}\max\bigl(f, \mathrm{KL}[\operatorname{sg}(q)\|p]\bigr)
        + (1 - \alpha)\,\operatorname{mean}\max\bigl(f, \mathrm{KL}[q\|\operatorname{sg}(p)]\bigr),

    each KL over the classes (last axis) of one categorical, the means over the
    categoricals and the batch; :math:`q = \max(10^{-8}, \operatorname{softmax}(z_q))`
    and likewise :math:`p` (TorchRL's floor, no unimix). Unlike
    :func:`categorical_kl_terms`, the floor applies to each categorical's KL.

    Parameters
    ----------
    posterior_logits, prior_logits : array
        ``[..., num_classes]`` (usually ``[..., num_categoricals, num_classes]``), the
        same shape, floating.
    alpha : float, default 0.8
        The weight of the prior-training term, in ``[0, 1]``.
    free_bits : float, default 1.0
        The floor, in nats, finite (applied always, as TorchRL).

    Returns
    -------
    array
        The scalar loss; at least ``free_bits`` (each mean is).
    """
    backend = _checked_pair(posterior_logits, prior_logits, "categorical_kl_balanced", ndim=1)
    alpha = hyperparameter("alpha", alpha, low=0.0, high=1.0)
    free_bits = hyperparameter("free_bits", free_bits, low=-float("inf"), high=float("inf"))
    xp = backend.xp
    posterior = _floored_probs(posterior_logits, backend)
    prior = _floored_probs(prior_logits, backend)
    sg = backend.stop_gradient
    prior_term = xp.sum(sg(posterior) * (xp.log(sg(posterior)) - xp.log(prior)), axis=-1)
    posterior_term = xp.sum(posterior * (xp.log(posterior) - xp.log(sg(prior))), axis=-1)
    prior_term = xp.mean(_floor(prior_term, free_bits, xp))
    posterior_term = xp.mean(_floor(posterior_term, free_bits, xp))
    return alpha * prior_term + (1.0 - alpha) * posterior_term


# -- helpers ------------------------------------------------------------------------------------
def _floor(value: Any, floor: float, xp: Any) -> Any:
    """``max(value, floor)`` with torch ``clamp_min``'s gradient: 1 where ``value >=
    floor``, 0 below; NaN stays NaN."""
    return xp.where(value < floor, floor, value)


def _floored_probs(logits: Any, backend: Backend) -> Any:
    """``max(softmax(logits), 1e-8)`` over the last axis."""
    probs = log_softmax_and_softmax(logits, backend)[1]
    return _floor(probs, _PROBABILITY_FLOOR, backend.xp)


def _sum_last_two(value: Any, xp: Any) -> Any:
    return xp.sum(xp.sum(value, axis=-1), axis=-1)


def _checked_pair(posterior: Any, prior: Any, owner: str, ndim: int = 2) -> Backend:
    """The backend of the two logit arrays; ``ValueError`` unless they have one shape of
    at least ``ndim`` axes (no broadcasting), ``TypeError`` unless floating."""
    backend = floating_array("posterior_logits", posterior)
    floating_array("prior_logits", prior)
    backend_of(posterior_logits=posterior, prior_logits=prior)
    if tuple(posterior.shape) != tuple(prior.shape):
        raise ValueError(
            f"{owner}: posterior_logits {tuple(posterior.shape)} and prior_logits "
            f"{tuple(prior.shape)} must have the same shape"
        )
    if posterior.ndim < ndim:
        axes = "[..., num_categoricals, num_classes]" if ndim == 2 else "[..., num_classes]"
        raise ValueError(f"{owner}: the logits must be {axes}, got shape {tuple(posterior.shape)}")
    return backend


# -- the loss modules ---------------------------------------------------------------------------
import dataclasses  # noqa: E402 (the loss modules are appended below the functions)
import math  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from typing import ClassVar  # noqa: E402

from arrayrl._validation import coefficient, count, flag  # noqa: E402
from arrayrl.data import ArrayDict, as_arraydict, is_tensordict  # noqa: E402
from arrayrl.modules import Params, map_params  # noqa: E402
from arrayrl.modules.model_based import _default_bins  # noqa: E402

from ._imagination import run_world_model  # noqa: E402
from .common import LossModule  # noqa: E402
from .dreamer import _refuse_float64_rssm, _TupleReturn  # noqa: E402
from .value.functional import td_lambda_return_estimate  # noqa: E402

__all__ += ["DreamerV3ModelLoss", "DreamerV3ValueLoss"]

_RECO_LOSSES = ("l1", "l2")
_KL_MODES = ("balanced", "separate")
_VALUE_LOSSES = ("symlog_mse", "two_hot")


def _choice(owner: str, name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{owner}: {name} must be one of {allowed}, got {value!r}")
    return value


def _nested(*parts: Any) -> tuple[Any, ...]:
    """``("next", key)`` with a tuple key flattened in."""
    out: list[Any] = []
    for part in parts:
        out.extend(part if isinstance(part, tuple) else (part,))
    return tuple(out)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


class DreamerV3ModelLoss(_TupleReturn, LossModule):
    r"""The DreamerV3 world-model loss (Hafner et al. 2023, eqs. 4-6).

    The world model reads the replayed batch and writes, under ``"next"``, the RSSM's
    categorical prior and posterior logits, the reconstructions, the reward head and
    (optionally) a continuation logit. With :math:`y = \operatorname{symlog}`:

    - KL (``kl_mode="balanced"``): ``loss_model_kl`` :math:`= \lambda_{kl}`
      :func:`categorical_kl_balanced` (``kl_alpha``, ``free_bits``); (``"separate"``):
      ``loss_model_dynamic`` :math:`= \lambda_{kl}\lambda_{dyn} L_{dyn}` and
      ``loss_model_representation`` :math:`= \lambda_{kl}\lambda_{rep} L_{rep}` of
      :func:`categorical_kl_terms` (``free_bits`` as free nats, ``unimix``);
    - ``loss_model_reco`` :math:`= \lambda_{reco} \sum_\text{heads}
      \operatorname{mean}_{b,t} \sum_\text{features} d(y(o), y(\hat o))`, ``d`` the
      squared (``"l2"``) or absolute (``"l1"``) error, ``global_average`` the mean over
      every element; a head with ``reco_symlog=False`` compares raw values, integer images
      divided by 255;
    - ``loss_model_reward`` :math:`= \lambda_{r} \operatorname{mean}` two-hot cross
      entropy of the logits at ``("next", "reward_logits")`` over ``num_reward_bins``
      symexp bins (``reward_two_hot``), or of :math:`(y(r) - y(\hat r))^2`;
    - ``loss_model_continue`` (``lambda_continue > 0``) :math:`= \lambda_c
      \operatorname{mean} \operatorname{BCE}(\text{logit}, s\,(1 - \text{terminated}))`,
      ``s = continue_target_scale``;

    each of shape ``[1]``, as TorchRL 0.14.1's.

    Parameters follow TorchRL's (keyword-only after ``world_model``): ``lambda_kl``,
    ``lambda_reco``, ``lambda_reward`` (1.0), ``lambda_continue`` (0.0), ``kl_mode``
    (``"balanced"``), ``lambda_dynamic`` (1.0), ``lambda_representation`` (0.1),
    ``unimix`` (0.0), ``continue_target_scale`` (1.0, in ``(0, 1]``), ``kl_alpha`` (0.8),
    ``free_bits`` (1.0), ``reco_loss`` (``"l2"``), ``reco_symlog`` (True, or one bool per
    head), ``reward_two_hot`` (True), ``num_reward_bins`` (255), ``global_average``
    (False), ``detach_output`` (True).

    ``world_model``: TorchRL's ``TensorDictModule`` (its RSSM modules included, through
    the adapter; float32 only, as TorchRL) or an arrayrl dict-level module. The batch's
    ``("next", "reward")`` is renamed ``("next", "true_reward")`` before the call.
    ``tensor_keys.pixels`` / ``reco_pixels`` may be lists (one reconstruction head each).

    ``loss(batch)`` returns ``(losses, data)``: the terms and the batch with what the world
    model wrote (cut from the graph unless ``detach_output=False``).

    Unlike TorchRL, a missing continuation logit or terminal flag with
    ``lambda_continue > 0`` raises ``KeyError`` instead of silently dropping
    ``loss_model_continue`` (deviation ``torchrl-dreamerv3-continue-missing``).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        reward: Any = "reward"
        reward_logits: Any = "reward_logits"
        true_reward: Any = "true_reward"
        prior_logits: Any = "prior_logits"
        posterior_logits: Any = "posterior_logits"
        pixels: Any = "pixels"
        reco_pixels: Any = "reco_pixels"
        continue_pred: Any = "continue_pred"
        done: Any = "done"
        terminated: Any = "terminated"

    out_keys: ClassVar[list[str]] = ["loss_model_kl", "loss_model_reco", "loss_model_reward"]

    def __init__(
        self,
        world_model: Any,
        *,
        lambda_kl: float = 1.0,
        lambda_reco: float = 1.0,
        lambda_reward: float = 1.0,
        lambda_continue: float = 0.0,
        kl_mode: str = "balanced",
        lambda_dynamic: float = 1.0,
        lambda_representation: float = 0.1,
        unimix: float = 0.0,
        continue_target_scale: float = 1.0,
        kl_alpha: float = 0.8,
        free_bits: float = 1.0,
        reco_loss: str = "l2",
        reco_symlog: bool | list[bool] = True,
        reward_two_hot: bool = True,
        num_reward_bins: int = 255,
        global_average: bool = False,
        detach_output: bool = True,
    ) -> None:
        owner = type(self).__name__
        _refuse_float64_rssm(owner, "world_model", world_model)
        super().__init__()
        for name, value in (
            ("lambda_kl", lambda_kl),
            ("lambda_reco", lambda_reco),
            ("lambda_reward", lambda_reward),
            ("lambda_continue", lambda_continue),
            ("lambda_dynamic", lambda_dynamic),
            ("lambda_representation", lambda_representation),
        ):
            setattr(self, name, coefficient(name, value, allow_none=False))
        self.kl_mode = _choice(owner, "kl_mode", kl_mode, _KL_MODES)
        self.unimix = hyperparameter("unimix", unimix, low=0.0, high=1.0, high_open=True)
        self.continue_target_scale = hyperparameter(
            "continue_target_scale", continue_target_scale, low=0.0, high=1.0, low_open=True
        )
        self.kl_alpha = hyperparameter("kl_alpha", kl_alpha, low=0.0, high=1.0)
        self.free_bits = hyperparameter("free_bits", free_bits, low=-math.inf, high=math.inf)
        self.reco_loss = _choice(owner, "reco_loss", reco_loss, _RECO_LOSSES)
        if isinstance(reco_symlog, list):
            self.reco_symlog = [flag("reco_symlog", v) for v in reco_symlog]
        else:
            self.reco_symlog = flag("reco_symlog", reco_symlog)
        self.reward_two_hot = flag("reward_two_hot", reward_two_hot)
        self.num_reward_bins = count("num_reward_bins", num_reward_bins, minimum=2)
        self.global_average = flag("global_average", global_average)
        self.detach_output = flag("detach_output", detach_output)
        #: the reward head's support (TorchRL's ``reward_bins`` buffer: float32)
        self.reward_bins = _default_bins(self.num_reward_bins)
        self.convert_to_functional(world_model, "world_model")

    def _next(self, field: str) -> tuple[Any, ...]:
        return _nested("next", getattr(self.tensor_keys, field))

    # -- the terms ------------------------------------------------------------------------
    def kl_terms(self, posterior_logits: Any, prior_logits: Any) -> dict[str, Any]:
        """The KL output(s), each ``[1]``, weighted."""
        xp = backend_of(prior_logits).xp
        if self.kl_mode == "separate":
            dynamic, representation = categorical_kl_terms(
                posterior_logits, prior_logits, free_nats=self.free_bits, unimix=self.unimix
            )
            return {
                "loss_model_dynamic": self.lambda_kl
                * self.lambda_dynamic
                * xp.reshape(dynamic, (1,)),
                "loss_model_representation": self.lambda_kl
                * self.lambda_representation
                * xp.reshape(representation, (1,)),
            }
        kl = categorical_kl_balanced(
            posterior_logits, prior_logits, alpha=self.kl_alpha, free_bits=self.free_bits
        )
        return {"loss_model_kl": self.lambda_kl * xp.reshape(kl, (1,))}

    def _heads(self) -> list[tuple[Any, Any, bool]]:
        observations = _as_list(self.tensor_keys.pixels)
        predictions = _as_list(self.tensor_keys.reco_pixels)
        symlogs = self.reco_symlog
        if not isinstance(symlogs, list):
            symlogs = [symlogs] * len(observations)
        if not observations or not len(observations) == len(predictions) == len(symlogs):
            raise ValueError(
                f"{type(self).__name__}: pixels ({len(observations)}), reco_pixels "
                f"({len(predictions)}) and reco_symlog ({len(symlogs)}) must describe the "
                "same nonzero number of reconstruction heads"
            )
        return list(zip(observations, predictions, symlogs))

    def reco_term(self, target: Any, prediction: Any, use_symlog: bool, batch_ndim: int) -> Any:
        """``mean_{b,t} Σ_features d`` of one head (``global_average``: mean of ``d``),
        0-d."""
        xp = backend_of(prediction).xp
        if tuple(target.shape) != tuple(prediction.shape):
            raise ValueError(
                f"{type(self).__name__}: an observation {tuple(target.shape)} and its "
                f"reconstruction {tuple(prediction.shape)} must have the same shape"
            )
        if use_symlog:
            target, prediction = symlog(target), symlog(prediction)
        elif not xp.isdtype(target.dtype, "real floating"):
            target = xp.astype(target, prediction.dtype) / 255.0
        error = target - prediction
        distance = error**2 if self.reco_loss == "l2" else xp.abs(error)
        if not self.global_average:
            distance = xp.sum(xp.reshape(distance, (*distance.shape[:batch_ndim], -1)), axis=-1)
        return xp.mean(distance)

    def reward_term(self, data: ArrayDict, true_reward: Any) -> Any:
        """The two-hot cross entropy (or symlog squared error) of the reward, 0-d."""
        if not self.reward_two_hot:
            reward = self.read(data, self._next("reward"), what="reward")
            xp = backend_of(reward).xp
            _same_shape(type(self).__name__, "reward", reward, true_reward)
            return xp.mean((symlog(true_reward) - symlog(reward)) ** 2)
        logits = data.get(self._next("reward_logits"), None)
        if logits is None:
            logits = self.read(data, self._next("reward"), what="reward_logits")
            warnings.warn(
                "DreamerV3ModelLoss: categorical reward logits under the decoded reward key "
                f"{self._next('reward')!r} are deprecated (as in TorchRL 0.14.1); write them "
                f"to {self._next('reward_logits')!r}",
                DeprecationWarning,
                stacklevel=3,
            )
        if logits.shape[-1] != self.num_reward_bins:
            raise ValueError(
                f"{type(self).__name__}: reward_two_hot=True expects logits over "
                f"{self.num_reward_bins} bins, got a trailing dim of {logits.shape[-1]}"
            )
        xp = backend_of(logits).xp
        return xp.mean(two_hot_cross_entropy(logits, true_reward, self.reward_bins))

    def continue_term(self, data: ArrayDict) -> Any:
        """``mean BCE(logit, s (1 - terminated))``, 0-d (``terminated`` falls back on
        ``done``)."""
        logit = self.read(data, self._next("continue_pred"), what="continue_pred")
        terminated = data.get(self._next("terminated"), None)
        if terminated is None:
            terminated = self.read(data, self._next("done"), what="terminated")
        backend = backend_of(logit)
        xp = backend.xp
        logit = _squeezed(logit)
        terminated = _squeezed(terminated)
        _same_shape(type(self).__name__, "continue_pred", logit, terminated)
        target = xp.astype(~xp.astype(terminated, xp.bool), logit.dtype)
        target = target * self.continue_target_scale
        # BCE with logits, written stably: max(x, 0) - x y + log(1 + exp(-|x|))
        bce = xp.where(logit > 0, logit, 0.0) - logit * target + xp.log1p(xp.exp(-xp.abs(logit)))
        return xp.mean(bce)

    def forward(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[ArrayDict, ArrayDict]:
        """``(losses, data)``: see the class docstring."""
        data = self.working_copy(batch)
        data.set(self._next("true_reward"), self.read(data, self._next("reward"), what="reward"))
        del data[self._next("reward")]
        data = run_world_model(self.world_model, data, self.network_params("world_model", params))
        prior = self.read(data, self._next("prior_logits"), what="prior_logits")
        posterior = self.read(data, self._next("posterior_logits"), what="posterior_logits")
        xp = backend_of(prior).xp
        batch_ndim = len(data.batch_size)
        reco = sum(
            self.reco_term(
                self.read(data, _nested("next", observed)),
                self.read(data, _nested("next", predicted)),
                use_symlog,
                batch_ndim,
            )
            for observed, predicted, use_symlog in self._heads()
        )
        true_reward = self.read(data, self._next("true_reward"), what="reward")
        losses = {
            "loss_model_reco": self.lambda_reco * xp.reshape(reco, (1,)),
            "loss_model_reward": self.lambda_reward
            * xp.reshape(self.reward_term(data, true_reward), (1,)),
            **self.kl_terms(posterior, prior),
        }
        if self.lambda_continue > 0:
            continued = self.continue_term(data)
            losses["loss_model_continue"] = self.lambda_continue * xp.reshape(continued, (1,))
        return ArrayDict(losses), data.detach() if self.detach_output else data


def _squeezed(x: Any) -> Any:
    """``x`` without a trailing unit axis (TorchRL's ``squeeze(-1)``)."""
    return x[..., 0] if x.ndim and x.shape[-1] == 1 else x


def _same_shape(owner: str, name: str, value: Any, like: Any) -> None:
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(
            f"{owner}: {name} has shape {tuple(value.shape)}, expected {tuple(like.shape)} "
            "(no broadcasting)"
        )


# -- the value ----------------------------------------------------------------------------------
class DreamerV3ValueLoss(_TupleReturn, LossModule):
    r"""The DreamerV3 critic loss (Hafner et al. 2023, eq. 10 and "critic learning").

    The critic regresses on the imagined λ-returns ``lambda_target`` :math:`R_t`:

    - ``value_loss="symlog_mse"``: :math:`\ell_t = (\operatorname{symlog} v(s_t) -
      \operatorname{symlog} R_t)^2`;
    - ``"two_hot"``: :math:`\ell_t` is the two-hot cross entropy of :math:`R_t` under the
      critic's logits (``state_value_logits``) over ``num_value_bins`` symexp bins;
    - the slow critic (``slow_critic_regularization`` :math:`\beta > 0`): :math:`\ell_t
      \mathrel{+}= \beta\,\ell(v(s_t), \bar v(s_t))` with :math:`\bar v` the decoded value
      of the target critic (``target_value_model_params``, updated by ``SoftUpdate``);

    ``loss_value = reduce(w_t ℓ_t)`` with ``w`` the batch's ``discount_weight`` when
    present (the actor's output has it; ``gamma`` is then ignored), else ``γ^t`` along the
    last axis of a ``[..., T]`` target when ``discount_loss``, else 1; ``value_slow_loss
    = reduce(w_t ℓ_slow)``, cut from the graph (zeros without a slow critic). ``γ`` is
    ``actor_loss.value_estimator.gamma`` when ``actor_loss`` is given (read at each call),
    else ``gamma``.

    :meth:`replay_value_loss` trains the critic on replayed sequences toward TD(λ)
    returns with ``γ = 1 − 1/horizon`` bootstrapped on ``bootstrap``.

    ``loss(fake_data)`` returns ``(losses, fake_data)``, the batch cut from the graph.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"
        value_logits: Any = "state_value_logits"
        discount_weight: Any = "discount_weight"
        reward: Any = "reward"
        done: Any = "done"
        terminated: Any = "terminated"
        bootstrap: Any = "bootstrap"

    out_keys: ClassVar[list[str]] = ["loss_value", "value_slow_loss"]

    def __init__(
        self,
        value_model: Any,
        value_loss: str = "symlog_mse",
        discount_loss: bool = True,
        gamma: float = 0.99,
        num_value_bins: int = 255,
        actor_loss: Any = None,
        slow_critic_regularization: float = 0.0,
        reduction: str | None = None,
    ) -> None:
        owner = type(self).__name__
        super().__init__()
        self.slow_critic_regularization = coefficient(
            "slow_critic_regularization", slow_critic_regularization, allow_none=False
        )
        self.reduction = reduction
        self.value_loss = _choice(owner, "value_loss", value_loss, _VALUE_LOSSES)
        self.discount_loss = flag("discount_loss", discount_loss)
        self.gamma = hyperparameter("gamma", gamma, low=0.0, high=1.0)
        if actor_loss is not None and not hasattr(actor_loss, "value_estimator"):
            raise TypeError(
                f"{owner}: actor_loss must be a DreamerV3ActorLoss (with a value_estimator), "
                f"got {type(actor_loss).__name__}"
            )
        self._actor_loss = actor_loss  # not registered: its parameters are not ours
        #: the two-hot support (TorchRL's ``value_bins`` buffer: float32)
        self.value_bins = _default_bins(count("num_value_bins", num_value_bins, minimum=2))
        self.convert_to_functional(
            value_model,
            "value_model",
            create_target_params=bool(self.slow_critic_regularization),
        )

    # -- the discount ---------------------------------------------------------------------
    def _resolved_gamma(self) -> float:
        if self._actor_loss is None:
            return float(self.gamma)
        return float(self._actor_loss.value_estimator.gamma)

    def sync_gamma_with_actor_loss(self, actor_loss: Any) -> None:
        """Copy ``actor_loss.value_estimator.gamma`` into :attr:`gamma` (TorchRL's legacy
        two-step setup; prefer ``actor_loss=``)."""
        self.gamma = hyperparameter(
            "gamma", float(actor_loss.value_estimator.gamma), low=0.0, high=1.0
        )

    def discount(self, data: Any, target: Any) -> Any:
        """The weights ``w`` of ``target`` (``[...]``): see the class docstring."""
        provided = data.get(self.tensor_keys.discount_weight, None)
        if provided is not None:
            provided = _squeezed(provided)
            _same_shape(type(self).__name__, "discount_weight", provided, target)
            return provided
        xp = backend_of(target).xp
        if self.discount_loss and target.ndim >= 2:
            steps = target.shape[-1]
            powers = xp.arange(steps, dtype=target.dtype, device=getattr(target, "device", None))
            return xp.broadcast_to(self._resolved_gamma() ** powers, target.shape)
        return xp.ones_like(target)

    # -- the critic -----------------------------------------------------------------------
    def _critic(self, data: Any, params: Params) -> ArrayDict:
        inputs = as_arraydict(data).select(*self.value_model.in_keys, strict=False)
        self.value_model(inputs, params)
        return inputs

    def _prediction(self, outputs: ArrayDict) -> Any:
        """The logits (``two_hot``, ``[..., K]``) or the value without its unit axis."""
        owner = type(self).__name__
        if self.value_loss == "symlog_mse":
            value = self.read(outputs, self.tensor_keys.value, what="value")
            if value.shape[-1] != 1:
                raise ValueError(f"{owner}: the value must be [..., 1], got {tuple(value.shape)}")
            return value[..., 0]
        logits = outputs.get(self.tensor_keys.value_logits, None)
        if logits is None:
            logits = self.read(outputs, self.tensor_keys.value, what="value_logits")
            warnings.warn(
                f"{owner}: categorical value logits under the decoded value key "
                f"{self.tensor_keys.value!r} are deprecated (as in TorchRL 0.14.1); write "
                f"them to {self.tensor_keys.value_logits!r}",
                DeprecationWarning,
                stacklevel=4,
            )
        if logits.shape[-1] != self.value_bins.shape[0]:
            raise ValueError(
                f"{owner}: value_loss='two_hot' expects logits over {self.value_bins.shape[0]} "
                f"bins, got a trailing dim of {logits.shape[-1]}"
            )
        return logits

    def step_loss(self, prediction: Any, target: Any) -> Any:
        """``ℓ(prediction, target)`` per element (target raw, ``prediction.shape[:-1]``
        for two-hot logits, else ``prediction.shape``)."""
        if self.value_loss == "two_hot":
            return two_hot_cross_entropy(prediction, target, self.value_bins)
        _same_shape(type(self).__name__, "lambda_target", target, prediction)
        return (symlog(prediction) - symlog(target)) ** 2

    def _slow_value(self, data: Any, params: Mapping[str, Params] | None) -> Any:
        """The target critic's decoded value ``[...]``, out of the graph."""
        tree = (params or {}).get("target_value_model_params", self.target_value_model_params)
        held = map_params(lambda leaf: backend_of(leaf).stop_gradient(leaf), tree)
        value = self.read(self._critic(data, held), self.tensor_keys.value, what="value")
        if self.value_loss == "two_hot" and value.shape[-1] == self.value_bins.shape[0]:
            value = two_hot_decode(value, self.value_bins)[..., None]
        return backend_of(value).stop_gradient(_squeezed(value))

    def forward(self, fake_data: Any, params: Mapping[str, Params] | None = None) -> Any:
        """``({"loss_value", "value_slow_loss"}, fake_data)``: see the class docstring."""
        data = as_arraydict(fake_data)
        lambda_target = self.read(data, "lambda_target", what="lambda_target")
        target = _squeezed(lambda_target)
        prediction = self._prediction(
            self._critic(data, self.network_params("value_model", params))
        )
        loss = self.step_loss(prediction, target)
        xp = backend_of(loss).xp
        if self.slow_critic_regularization:
            slow = self.step_loss(prediction, self._slow_value(data, params))
            loss = loss + self.slow_critic_regularization * slow
        else:
            slow = xp.zeros_like(loss)
        weight = self.discount(data, target)
        stop = backend_of(loss).stop_gradient
        losses = ArrayDict(
            {
                "loss_value": self.reduce_loss(weight * loss),
                "value_slow_loss": stop(self.reduce_loss(weight * slow)),
            }
        )
        return losses, data.detach()

    def replay_value_loss(
        self,
        tensordict: Any,
        *,
        horizon: float = 333.0,
        lmbda: float = 0.95,
        params: Mapping[str, Params] | None = None,
    ) -> Any:
        r"""The critic loss on a replayed ``[B, T]`` sequence (DreamerV3's replay critic).

        :math:`R_k` is the TD(λ) return of replay state ``k`` from the rewards, flags and
        ``bootstrap`` values (the first imagined return of each state) of steps
        ``k+1, ...``, with :math:`\gamma = 1 - 1/\text{horizon}`, out of the graph;
        ``loss_replay_value = reduce((1 - done_k)\,\ell(v(s_k), R_k))`` over
        ``k < T - 1`` (plus the slow-critic term). 0-d (``reduction="mean"``); a
        ``TensorDict`` in, a ``TensorDict`` out.
        """
        horizon = hyperparameter("horizon", horizon, low=1.0, high=math.inf)
        lmbda = hyperparameter("lmbda", lmbda, low=0.0, high=1.0)
        data = as_arraydict(tensordict)
        tk = self.tensor_keys
        fields = {
            "reward": _nested("next", tk.reward),
            "done": _nested("next", tk.done),
            "terminated": _nested("next", tk.terminated),
            "bootstrap": tk.bootstrap,
        }
        got = {name: _squeezed(self.read(data, key, what=name)) for name, key in fields.items()}
        stop = backend_of(got["bootstrap"]).stop_gradient
        column = {name: stop(value[..., 1:, None]) for name, value in got.items()}
        target = td_lambda_return_estimate(
            1 - 1 / horizon,
            lmbda,
            column["bootstrap"],
            column["reward"],
            column["done"],
            column["terminated"],
        )[..., 0]
        target = stop(target)
        outputs = self._critic(data, self.network_params("value_model", params))
        prediction = self._prediction(outputs)
        prediction = (
            prediction[..., :-1, :] if self.value_loss == "two_hot" else prediction[..., :-1]
        )
        loss = self.step_loss(prediction, target)
        if self.slow_critic_regularization:
            slow_target = self._slow_value(data, params)[..., :-1]
            loss = loss + self.slow_critic_regularization * self.step_loss(prediction, slow_target)
        xp = backend_of(loss).xp
        keep = xp.astype(~xp.astype(got["done"][..., :-1], xp.bool), loss.dtype)
        out = ArrayDict({"loss_replay_value": self.reduce_loss(keep * loss)})
        return out.to_tensordict() if is_tensordict(tensordict) else out


# -- the actor ----------------------------------------------------------------------------------
from arrayrl.modules.adapt import as_module  # noqa: E402
from arrayrl.modules.value_norm import PercentileValueNorm  # noqa: E402

from ._imagination import ImaginationKeys, imagine, lambda_returns  # noqa: E402
from .dreamer import _held_out, _world_model_of  # noqa: E402
from .td3 import GAMMA_ERROR  # noqa: E402
from .utils import ValueEstimators  # noqa: E402

__all__ += ["DreamerV3ActorLoss"]

#: the legacy flat buffers of TorchRL's actor loss and where they live now
_LEGACY_RETNORM = {"return_low": "retnorm.low", "return_high": "retnorm.high"}


class DreamerV3ActorLoss(_TupleReturn, LossModule):
    r"""The DreamerV3 actor loss (Hafner et al. 2023, eq. 11 and "actor learning").

    From the batch's ``state`` and ``belief`` (cut from the graph), :func:`imagine` unrolls
    the actor in the world model for ``H = imagination_horizon`` steps (world model, value
    and continuation model held out: they get no gradient). With ``v`` the value of the
    imagined next states and ``c`` the continuation probabilities (1 without a
    ``continuation_model``):

    - the λ-returns, along the imagination axis: :math:`R_t = r_t + \gamma c_t\,[(1 -
      \lambda) v_t + \lambda R_{t+1}]`, :math:`R_H = v_H` (the loss's TD(λ) estimator;
      TD(0) / TD(1) without a continuation model), written at ``lambda_target``;
    - the weights :math:`w_t = \prod_{k \le t} \gamma^{[k>0]} \bar c_k` (``discount_loss``,
      :math:`\bar c` the continuation of the root states), else 1, out of the graph
      (``discount_weight``);
    - the return scale :math:`S = \max(s_{min}, H_{95} - L_5)` of a
      :class:`~arrayrl.modules.value_norm.PercentileValueNorm` (``retnorm``) updated with
      :math:`R` in training mode (``return_normalization``; else :math:`S = 1`);
    - dynamics backpropagation: :math:`\mathcal L = -\operatorname{mean}(w R / S)`; or
      REINFORCE (``use_reinforce``): :math:`\mathcal L = -\operatorname{mean}(w \log
      \pi(\operatorname{sg} a_t \mid \operatorname{sg} s_t)\,\operatorname{sg}(R_t -
      v(s_t)) / S)`;
    - the entropy bonus :math:`\eta` (``entropy_bonus > 0``): :math:`\mathcal L
      \mathrel{-}= \eta \operatorname{mean}(w \mathcal H[\pi(\cdot \mid \operatorname{sg}
      s_t)])`, the closed-form entropy where the distribution has one, else the negative
      log-probability of one reparameterised draw (``TanhNormal``, as TorchRL 0.14.1).

    ``loss(batch)`` returns ``(losses, fake_data)``: ``loss_actor``, ``actor_entropy`` (the
    weighted mean entropy, out of the graph; 0 without a bonus), ``return_low``,
    ``return_high`` (the float32 moving quantiles), ``return_scale`` :math:`S`,
    ``continuation_mean`` (the mean of :math:`c`, 1 without a continuation model), all 0-d;
    ``fake_data`` the imagined ``[*B, H]`` trajectory with ``lambda_target``,
    ``discount_weight`` (and ``continuation``), cut from the graph.

    Parameters follow TorchRL 0.14.1's (keyword-only after ``model_based_env``):
    ``continuation_model`` (None), ``imagination_horizon`` (15), ``discount_loss`` (True),
    ``entropy_bonus`` (3e-4), ``use_reinforce`` (False), ``return_normalization`` (True),
    ``return_normalization_rate`` (0.01), ``return_normalization_quantiles`` ((0.05,
    0.95)), ``return_normalization_min_scale`` (1.0); ``gamma`` / ``lmbda`` are refused
    (``make_value_estimator``); ``seed`` as :class:`~arrayrl.objectives.DreamerActorLoss`.
    The modules are those of :class:`~arrayrl.objectives.DreamerActorLoss` (TorchRL's
    ``DreamerEnv`` or a world-model module); the value and continuation models read
    ``state`` / ``belief`` and write ``tensor_keys.value`` / ``tensor_keys.continuation``.

    Without a continuation model TorchRL 0.14.1 runs its estimator along the trailing unit
    axis (TD(λ) collapses to TD(0)); arrayrl runs it along the imagination axis (deviation
    ``torchrl-dreamer-lambda-time-dim``, as for the v1 actor).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        state: Any = "state"
        belief: Any = "belief"
        reward: Any = "reward"
        value: Any = "state_value"
        action: Any = "action"
        action_log_prob: Any = "action_log_prob"
        done: Any = "done"
        terminated: Any = "terminated"
        continuation: Any = "continuation"
        discount_weight: Any = "discount_weight"

    default_value_estimator = ValueEstimators.TDLambda
    SUPPORTED_VALUE_ESTIMATORS = (
        ValueEstimators.TD0,
        ValueEstimators.TD1,
        ValueEstimators.TDLambda,
    )
    out_keys: ClassVar[list[str]] = [
        "loss_actor",
        "actor_entropy",
        "return_low",
        "return_high",
        "return_scale",
        "continuation_mean",
    ]

    def __init__(
        self,
        actor_model: Any,
        value_model: Any,
        model_based_env: Any,
        *,
        continuation_model: Any = None,
        imagination_horizon: int = 15,
        discount_loss: bool = True,
        entropy_bonus: float = 3e-4,
        use_reinforce: bool = False,
        return_normalization: bool = True,
        return_normalization_rate: float = 0.01,
        return_normalization_quantiles: tuple[float, float] = (0.05, 0.95),
        return_normalization_min_scale: float = 1.0,
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
        self.entropy_bonus = coefficient("entropy_bonus", entropy_bonus, allow_none=False)
        self.use_reinforce = flag("use_reinforce", use_reinforce)
        self.return_normalization = flag("return_normalization", return_normalization)
        retnorm = PercentileValueNorm(
            quantiles=return_normalization_quantiles,
            rate=return_normalization_rate,
            min_scale=return_normalization_min_scale,
        )
        self.register_state("retnorm", retnorm)
        actor = self.convert_to_functional(actor_model, "actor_model")
        if not hasattr(actor, "get_dist"):
            raise TypeError(
                f"{owner}: actor_model must be a ProbabilisticActor (a distribution with "
                f"rsample), got {type(actor_model).__name__}"
            )
        self.convert_to_functional(world_model, "model_based_env")
        # held out, not registered (as TorchRL's): their parameters are not ours
        self.value_model = as_module(value_model, "value_model", owner=owner)
        self._has_torch_modules |= self.value_model is not value_model
        self.continuation_model = None
        if continuation_model is not None:
            self.continuation_model = as_module(
                continuation_model, "continuation_model", owner=owner
            )
            self._has_torch_modules |= self.continuation_model is not continuation_model

    # -- plumbing ---------------------------------------------------------------------------
    def to(self, backend: Any, device: Any = None) -> DreamerV3ActorLoss:
        """Move the parameters, the return statistics and the held-out value and
        continuation models; returns ``self``."""
        super().to(backend, device)
        for module in (self.value_model, self.continuation_model):
            if module is not None:
                module.to(backend, device)
        return self

    def load_state_dict(self, state: Mapping[str, Any]) -> DreamerV3ActorLoss:
        """As :meth:`LossModule.load_state_dict`; TorchRL's legacy flat ``return_low`` /
        ``return_high`` buffers (0-d) are read as ``retnorm.low`` / ``retnorm.high``."""
        state = dict(state)
        for legacy, current in _LEGACY_RETNORM.items():
            if legacy in state and current not in state:
                xp = backend_of(state[legacy]).xp
                state[current] = xp.reshape(state.pop(legacy), (1,))
        return super().load_state_dict(state)

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
            state=tk.state,
            belief=tk.belief,
            action=tk.action,
            reward=tk.reward,
            done=tk.done,
            terminated=tk.terminated,
        )

    # -- the return statistics ----------------------------------------------------------------
    @property
    def return_normalization_rate(self) -> float:
        return self.retnorm.rate

    @property
    def return_normalization_quantiles(self) -> tuple[float, float]:
        return self.retnorm.quantiles

    @property
    def return_normalization_min_scale(self) -> float:
        return self.retnorm.min_scale

    @property
    def return_low(self) -> Any:
        """The moving low return quantile, 0-d float32."""
        return self.retnorm.low[0]

    @property
    def return_high(self) -> Any:
        """The moving high return quantile, 0-d float32."""
        return self.retnorm.high[0]

    def return_scale(self, returns: Any) -> Any:
        """``S`` (0-d): the statistics' clamped span after folding ``returns`` in (training
        mode only), or 1 in ``returns``' dtype without ``return_normalization``."""
        xp = backend_of(returns).xp
        if not self.return_normalization:
            return xp.ones((), dtype=returns.dtype, device=getattr(returns, "device", None))
        if self.training:
            self.retnorm.update(returns)
        return self.retnorm.scale()[0]

    # -- the pieces of the objective --------------------------------------------------------
    def _held_out_output(self, module: Any, data: ArrayDict, key: Any, what: str) -> Any:
        """``module``'s output ``key`` on ``data``'s inputs, its parameters held out and
        its inputs differentiable."""
        inputs = data.select(*module.in_keys, strict=False)
        module(inputs, map_params(_held_out, module.params))
        return self.read(inputs, key, what=what)

    def continuations(self, fake_data: ArrayDict) -> tuple[Any, Any]:
        """``(c̄, c)``: the continuation probabilities of the root states ``s_0..s_{H-1}``
        and of the next states ``s_1..s_H``, each ``[*B, H, 1]``."""
        key = self.tensor_keys.continuation
        model = self.continuation_model
        following = self._held_out_output(model, fake_data.get("next"), key, "continuation")
        first = self._held_out_output(model, fake_data[..., :1], key, "continuation")
        xp = backend_of(following).xp
        return xp.concat([first, following[..., :-1, :]], axis=-2), following

    def lambda_target(self, reward: Any, value: Any, continuation: Any = None) -> Any:
        r"""The λ-returns ``[*B, H, 1]`` of ``reward`` bootstrapped on the next states'
        ``value`` along the imagination axis; with ``continuation`` the discount of step
        ``t`` is :math:`\gamma c_t` (a TD(λ) estimator is then required)."""
        if continuation is None:
            return lambda_returns(self.value_estimator, reward, value)
        estimator = self.value_estimator
        lmbda = getattr(estimator, "lmbda", None)
        if lmbda is None:
            raise TypeError(
                f"{type(self).__name__}: a continuation_model needs a TD(lambda) value "
                f"estimator (it has a lmbda), got {type(estimator).__name__}; call "
                "make_value_estimator(ValueEstimators.TDLambda, ...)"
            )
        xp = backend_of(reward).xp
        flags = xp.zeros(reward.shape, dtype=xp.bool, device=getattr(reward, "device", None))
        gamma = float(estimator.gamma) * continuation
        return td_lambda_return_estimate(gamma, lmbda, value, reward, flags, flags)

    def discount_weights(self, like: Any, root_continuation: Any = None) -> Any:
        r""":math:`w_t = \prod_{k \le t} \gamma^{[k>0]} \bar c_k` along axis ``-2`` of
        ``like`` (``[*B, H, 1]``; :math:`\bar c = 1` when ``None``), or ones without
        ``discount_loss``; out of the graph."""
        backend = backend_of(like)
        xp = backend.xp
        if not self.discount_loss:
            return xp.ones_like(like)
        factors = xp.ones_like(like) if root_continuation is None else root_continuation
        gamma = float(self.value_estimator.gamma)
        weights, running = [], None
        for t in range(like.shape[-2]):
            step = factors[..., t, :] if t == 0 else gamma * factors[..., t, :]
            running = step if running is None else running * step
            weights.append(running)
        return backend.stop_gradient(xp.stack(weights, axis=-2))

    def policy_entropy(self, dist: Any, rng: Any, like: Any) -> Any:
        """``H[π]`` with ``like``'s trailing unit axis: closed form where ``dist`` has one,
        else ``−log π(x)`` of one reparameterised draw ``x``."""
        if dist.has_entropy:
            entropy = dist.entropy()
        else:
            entropy = -dist.rsample_and_log_prob(rng=rng)[1]
        return _match_trailing_dim(entropy, like)

    def reinforce_objective(
        self, dist: Any, fake_data: ArrayDict, lambda_target: Any, return_scale: Any
    ) -> Any:
        r""":math:`\log\pi(\operatorname{sg} a_t)\,\operatorname{sg}(R_t - v(s_t)) / S`."""
        stop = backend_of(lambda_target).stop_gradient
        action = stop(self.read(fake_data, self.tensor_keys.action, what="action"))
        log_prob = _match_trailing_dim(dist.log_prob(action), lambda_target)
        baseline = self._held_out_output(
            self.value_model, fake_data, self.tensor_keys.value, "value"
        )
        return log_prob * stop(lambda_target - baseline) / return_scale

    # -- the loss ---------------------------------------------------------------------------
    def forward(
        self, batch: Any, params: Mapping[str, Params] | None = None
    ) -> tuple[ArrayDict, ArrayDict]:
        """``(losses, fake_data)``: see the class docstring."""
        keys, tk = self._keys(), self.tensor_keys
        start = as_arraydict(batch).select(keys.state, keys.belief)
        actor_params = self.network_params("actor_model", params)
        rng = self.generator(start.backend)
        fake_data = imagine(
            self.model_based_env,
            self.detached_params("model_based_env", params),
            self.actor_model,
            actor_params,
            start,
            self.imagination_horizon,
            rng,
            keys=keys,
        )
        reward = fake_data.get(("next", keys.reward))
        next_value = self._held_out_output(
            self.value_model, fake_data.get("next"), tk.value, "value"
        )
        root_continuation = continuation = None
        if self.continuation_model is not None:
            root_continuation, continuation = self.continuations(fake_data)
            fake_data.set(tk.continuation, root_continuation)
            fake_data.set(("next", tk.continuation), continuation)
        lambda_target = self.lambda_target(reward, next_value, continuation)
        fake_data.set("lambda_target", lambda_target)
        discount = self.discount_weights(lambda_target, root_continuation)
        fake_data.set(tk.discount_weight, discount)
        self.retnorm.match_backend(lambda_target, "lambda_target")
        backend = backend_of(lambda_target)
        xp, stop = backend.xp, backend.stop_gradient

        dist = None
        if self.use_reinforce or self.entropy_bonus > 0:
            inputs = fake_data.select(*self.actor_model.in_keys, strict=False).detach()
            dist = self.actor_model.get_dist(inputs, actor_params)
        return_scale = self.return_scale(lambda_target)
        if self.use_reinforce:
            objective = self.reinforce_objective(dist, fake_data, lambda_target, return_scale)
        else:
            objective = lambda_target / return_scale
        loss_actor = -xp.mean(discount * objective)
        if self.entropy_bonus > 0:
            entropy = xp.mean(discount * self.policy_entropy(dist, rng, discount))
            loss_actor = loss_actor - self.entropy_bonus * entropy
        else:
            entropy = xp.zeros(
                (), dtype=loss_actor.dtype, device=getattr(loss_actor, "device", None)
            )
        if continuation is None:
            continuation_mean = xp.ones(
                (), dtype=xp.float32, device=getattr(loss_actor, "device", None)
            )
        else:
            continuation_mean = xp.mean(continuation)
        losses = {
            "loss_actor": loss_actor,
            "actor_entropy": stop(entropy),
            "return_low": stop(self.return_low),
            "return_high": stop(self.return_high),
            "return_scale": stop(return_scale),
            "continuation_mean": stop(continuation_mean),
        }
        return ArrayDict(losses), fake_data.detach()


def _match_trailing_dim(source: Any, reference: Any) -> Any:
    """``source`` with ``reference``'s number of axes: as is, with a trailing unit axis
    added, or summed over its last axis (a per-dimension log-probability); else
    ``ValueError``."""
    if source.ndim == reference.ndim:
        return source
    if source.ndim == reference.ndim - 1:
        return source[..., None]
    if source.ndim == reference.ndim + 1:
        xp = backend_of(source).xp
        return xp.sum(source, axis=-1, keepdims=True)
    raise ValueError(
        f"cannot align an array of shape {tuple(source.shape)} with one of shape "
        f"{tuple(reference.shape)}"
    )


# -- the combined loss --------------------------------------------------------------------------
__all__ += ["DreamerV3Loss"]

#: the sub-losses of :class:`DreamerV3Loss`, in the order it calls them
_PARTS = ("model_loss", "actor_loss", "value_loss")


def _all_unit_axes_dropped(x: Any) -> Any:
    """``x`` without any unit axis (``torch.squeeze``)."""
    xp = backend_of(x).xp
    return xp.reshape(x, tuple(d for d in x.shape if d != 1))


class DreamerV3Loss(LossModule):
    r"""DreamerV3's whole objective (Hafner et al. 2023, "Mastering Diverse Domains
    through World Models", https://arxiv.org/abs/2301.04104): the world model, the actor
    and the critic of one replayed batch, as TorchRL 0.14.1's ``DreamerV3Loss``.

    For a replayed batch ``[B, T]``:

    1. the world model (:class:`DreamerV3ModelLoss`, built with ``detach_output=False``
       when the replay critic is on) gives its terms and the posterior states
       :math:`(s_{b,t}, h_{b,t})` at ``("next", state / belief)``;
    2. :class:`DreamerV3ActorLoss` imagines from the ``B T`` posterior states, cut from
       the graph, and gives ``loss_actor`` and the imagined trajectory with its
       λ-returns :math:`R^\text{imag}`;
    3. :class:`DreamerV3ValueLoss` regresses the critic on the imagined λ-returns
       (the trajectory cut from the graph);
    4. the replay critic (``replay_value_loss_weight`` :math:`\beta_r > 0`):
       :meth:`DreamerV3ValueLoss.replay_value_loss` on the posterior states (their path
       to the world model kept), the replayed rewards and flags, bootstrapped on the
       first imagined return of each state :math:`R^\text{imag}_{b,t,0}`, with
       :math:`\gamma = 1 - 1/\text{continuation\_horizon}` and ``lmbda``:
       ``loss_replay_value`` :math:`= \beta_r \mathcal L_\text{replay}`.

    ``loss(batch)`` returns one dict: the model terms squeezed to 0-d, the actor's and
    the critic's outputs, ``loss_replay_value``, ``replay_value`` (:math:`\mathcal
    L_\text{replay}` cut from the graph; 0 when :math:`\beta_r = 0`) and under
    ``tensor_keys.replay_context`` the posterior ``state`` and ``belief`` ``[B, T, ...]``
    cut from the graph. The training objective is the sum of the ``loss_*`` entries.

    Parameters
    ----------
    model_loss : DreamerV3ModelLoss
    actor_loss : DreamerV3ActorLoss
        Imagining in the same dynamics, with the critic's value model.
    value_loss : DreamerV3ValueLoss
    replay_value_loss_weight : float, default 0.3
        :math:`\beta_r \ge 0` (keyword-only); 0 turns the replay critic off.
    continuation_horizon : float, default 333.0
        ``>= 1``: the replay critic's discount is ``1 - 1/continuation_horizon``.
    lmbda : float, default 0.95
        In ``[0, 1]``: the replay critic's λ.

    The sub-losses keep their parameters: :meth:`named_parameters` lists them as
    ``"<part>.<name>"`` (each array once), :meth:`state_dict` likewise; ``forward``'s
    ``params`` maps a part's name to that part's own ``params`` mapping.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        state: Any = "state"
        belief: Any = "belief"
        is_init: Any = "is_init"
        replay_context: Any = "replay_context"

    def __init__(
        self,
        model_loss: DreamerV3ModelLoss,
        actor_loss: DreamerV3ActorLoss,
        value_loss: DreamerV3ValueLoss,
        *,
        replay_value_loss_weight: float = 0.3,
        continuation_horizon: float = 333.0,
        lmbda: float = 0.95,
    ) -> None:
        owner = type(self).__name__
        for name, value, cls in (
            ("model_loss", model_loss, DreamerV3ModelLoss),
            ("actor_loss", actor_loss, DreamerV3ActorLoss),
            ("value_loss", value_loss, DreamerV3ValueLoss),
        ):
            if not isinstance(value, cls):
                raise TypeError(
                    f"{owner}: {name} must be an arrayrl.objectives.{cls.__name__} (build it "
                    f"from your TorchRL modules), got {type(value).__module__}."
                    f"{type(value).__name__}"
                )
        super().__init__()
        self.replay_value_loss_weight = coefficient(
            "replay_value_loss_weight", replay_value_loss_weight, allow_none=False
        )
        if self.replay_value_loss_weight and model_loss.detach_output:
            raise ValueError(
                f"{owner}: replay-value learning (replay_value_loss_weight > 0) needs "
                "model_loss built with detach_output=False"
            )
        self.continuation_horizon = hyperparameter(
            "continuation_horizon", continuation_horizon, low=1.0, high=math.inf
        )
        self.lmbda = hyperparameter("lmbda", lmbda, low=0.0, high=1.0)
        self.model_loss = model_loss
        self.actor_loss = actor_loss
        self.value_loss = value_loss

    def _parts(self) -> list[tuple[str, LossModule]]:
        return [(name, getattr(self, name)) for name in _PARTS]

    # -- plumbing: the sub-losses hold the parameters and the state -----------------------------
    @property
    def in_keys(self) -> list[Any]:
        """The world model's inputs, the reset marker and the replayed targets."""
        model_keys, value_keys = self.model_loss.tensor_keys, self.value_loss.tensor_keys
        keys = [
            *self.model_loss.world_model.in_keys,
            self.tensor_keys.is_init,
            *(_nested("next", key) for key in _as_list(model_keys.pixels)),
            _nested("next", model_keys.reward),
            _nested("next", value_keys.reward),
            _nested("next", value_keys.done),
            _nested("next", value_keys.terminated),
        ]
        return list(dict.fromkeys(keys))

    def named_parameters(self) -> Any:
        """``("<part>.<name>", array)`` over the three sub-losses, each array once."""
        seen: set[int] = set()
        for part, loss in self._parts():
            for name, leaf in loss.named_parameters():
                if id(leaf) not in seen:
                    seen.add(id(leaf))
                    yield f"{part}.{name}", leaf

    def state_dict(self) -> dict[str, Any]:
        """The sub-losses' state dicts, keys prefixed ``"<part>."``."""
        return {
            f"{part}.{key}": value
            for part, loss in self._parts()
            for key, value in loss.state_dict().items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> DreamerV3Loss:
        """Load a :meth:`state_dict` into the sub-losses; ``KeyError`` for an entry of no
        part."""
        prefixes = tuple(f"{part}." for part in _PARTS)
        stray = sorted(key for key in state if not key.startswith(prefixes))
        if stray:
            raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected keys {stray}")
        for part, loss in self._parts():
            head = f"{part}."
            loss.load_state_dict(
                {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}
            )
        return self

    def to(self, backend: Any, device: Any = None) -> DreamerV3Loss:
        """Move the three sub-losses; returns ``self``."""
        for _, loss in self._parts():
            loss.to(backend, device)
        return self

    def train(self, mode: bool = True) -> DreamerV3Loss:
        """Set the mode of this loss and of the three sub-losses; returns ``self``."""
        super().train(mode)
        for _, loss in self._parts():
            loss.train(mode)
        return self

    def _part_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        given = dict(params or {})
        unknown = sorted(set(given) - set(_PARTS))
        if unknown:
            raise KeyError(
                f"{type(self).__name__} (forward params=): unknown parts {unknown}; the parts "
                f"are {list(_PARTS)}"
            )
        return {part: given.get(part) for part in _PARTS}

    # -- the pieces -------------------------------------------------------------------------
    def actor_start(self, posterior: ArrayDict, batch_size: tuple[int, ...]) -> ArrayDict:
        """The ``B T`` posterior states, flattened and cut from the graph: the actor's
        imagination starts."""
        stop = posterior.backend.stop_gradient
        n = math.prod(batch_size)
        keys = self.actor_loss.tensor_keys
        start = {}
        for ours, theirs in (
            (self.tensor_keys.state, keys.state),
            (self.tensor_keys.belief, keys.belief),
        ):
            value = self.read(posterior, _nested("next", ours), what=str(ours))
            xp = backend_of(value).xp
            start[theirs] = xp.reshape(stop(value), (n, *value.shape[len(batch_size) :]))
        return ArrayDict(start, (n,))

    def replay_value(
        self,
        sample: ArrayDict,
        posterior: ArrayDict,
        imagined: ArrayDict,
        params: Mapping[str, Params] | None,
    ) -> Any:
        r""":math:`\mathcal L_\text{replay}` (0-d): the critic on the posterior states,
        toward TD(λ) returns of the replayed rewards bootstrapped on the first imagined
        return of each state."""
        keys = self.value_loss.tensor_keys
        features = posterior.get("next").select(*self.value_loss.value_model.in_keys)
        first_return = imagined.get("lambda_target")[..., 0, 0]
        xp = backend_of(first_return).xp
        features.set(keys.bootstrap, xp.reshape(first_return, tuple(sample.batch_size)))
        features.set(
            "next",
            sample.get("next").select(keys.reward, keys.done, keys.terminated, strict=False),
        )
        out = self.value_loss.replay_value_loss(
            features, horizon=self.continuation_horizon, lmbda=self.lmbda, params=params
        )
        return out.get("loss_replay_value")

    # -- the loss ---------------------------------------------------------------------------
    def forward(self, sample: Any, params: Mapping[str, Any] | None = None) -> ArrayDict:
        """The terms of the model, actor, critic and replay critic: see the class
        docstring."""
        parts = self._part_params(params)
        sample = as_arraydict(sample)
        batch_size = tuple(sample.batch_size)
        model_losses, posterior = self.model_loss.forward(sample, parts["model_loss"])
        start = self.actor_start(posterior, batch_size)
        actor_losses, imagined = self.actor_loss.forward(start, parts["actor_loss"])
        value_losses, _ = self.value_loss.forward(imagined.detach(), parts["value_loss"])
        backend = posterior.backend
        if self.replay_value_loss_weight:
            replay = self.replay_value(sample, posterior, imagined, parts["value_loss"])
        else:
            state = posterior.get(_nested("next", self.tensor_keys.state))
            replay = backend.xp.zeros((), dtype=state.dtype, device=getattr(state, "device", None))
        losses = {key: _all_unit_axes_dropped(value) for key, value in model_losses.items()}
        losses.update(actor_losses.items())
        losses.update(value_losses.items())
        losses["loss_replay_value"] = self.replay_value_loss_weight * replay
        losses["replay_value"] = backend.stop_gradient(replay)
        tk = self.tensor_keys
        context = posterior.get("next").select(tk.state, tk.belief).detach()
        return ArrayDict({**losses, tk.replay_context: context})

    def __call__(self, sample: Any, params: Mapping[str, Any] | None = None) -> Any:
        """:meth:`forward`; a ``tensordict.TensorDict`` when ``sample`` is one (the replay
        context keeping its ``[B, T]`` batch size)."""
        out = self.forward(sample, params)
        if not is_tensordict(sample):
            return out
        key = self.tensor_keys.replay_context
        result = out.exclude(key).to_tensordict()
        result.set(key, out.get(key).to_tensordict())
        return result
