r"""Random Network Distillation: ``RNDLoss``.

Burda et al. 2018, "Exploration by Random Network Distillation",
https://arxiv.org/abs/1810.12894. A fixed, randomly initialised *target* network
:math:`f` embeds observations; a *predictor* :math:`\hat f_\theta` learns to reproduce
the embedding. Its error on a next observation :math:`s'`,

.. math::

    e_\theta(s') = \frac{1}{F} \sum_{j=1}^{F}
        \bigl(\hat f_\theta(\tilde s')_j - f(\tilde s')_j\bigr)^2, \qquad
    \tilde s' = \operatorname{clip}\Bigl(\frac{s' - \mu}{\sqrt{\max(\sigma^2, 10^{-8})}},
        -c, c\Bigr),

is large on observations unlike those trained on, which makes it an exploration bonus
(:func:`prediction_error`, :meth:`RNDLoss.intrinsic_reward`). ``μ, σ²`` are running
observation statistics (``obs_rms``, a :class:`~arrayrl.modules.running_mean_std.
RunningMeanStd`; without it :math:`\tilde s' = s'`) and :math:`c` is ``obs_clip``.
The loss trains the predictor on a random fraction :math:`p` of each batch (the
paper's 25 %, which keeps the predictor from learning faster than the policy explores):
with :math:`k_i \sim \mathrm{Bernoulli}(p)` drawn per sample,

.. math::

    \mathcal{L}_{\text{predictor}}(\theta) = \frac{\sum_i k_i\, e_\theta(s'_i)}
        {\max\bigl(1, \sum_i k_i\bigr)}

(``reduction="mean"``; ``"sum"`` drops the denominator and ``"none"`` returns
:math:`k_i e_\theta(s'_i)` per sample). The target network receives no gradient.
Arguments, keys and outputs follow TorchRL 0.14.1 (``torchrl/objectives/rnd.py``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from arrayrl._validation import hyperparameter
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import DictModule, Layer, Params, as_layer, flatten_params
from arrayrl.modules.adapt import as_running_mean_std, is_torch_object
from arrayrl.modules.running_mean_std import RunningMeanStd

from .common import LossModule

__all__ = ["RNDLoss", "prediction_error"]

_OBSERVATION, _FEATURES = "observation", "features"


class RNDLoss(LossModule):
    """The RND predictor loss (see the module docstring for the equations).

    Parameters
    ----------
    predictor_network : Layer or torch.nn.Module
        The trainable network ``f̂_θ``, observation ``[*B, D]`` → features ``[*B, F]``:
        an arrayrl layer (``MLP``, ``Sequential``, ...) or a plain ``torch.nn.Module``
        (TorchRL passes plain modules; its parameters stay the module's own).
    target_network : Layer or torch.nn.Module
        The fixed random network ``f``, same input and output shapes. It is never trained:
        its features are computed without gradient and its parameters are not in
        :meth:`parameters`.
    obs_rms : RunningMeanStd, optional
        Observation statistics to normalise with: arrayrl's, or TorchRL's
        (``RNDTransform.obs_rms``), read live from its buffers. The loss does not update
        them. ``None`` (default): no normalisation.
    obs_clip : float, default 5.0
        Normalised observations are clipped to ``[-obs_clip, obs_clip]`` (only with
        ``obs_rms``).
    reduction : {"mean", "sum", "none"}, default "mean"
    update_fraction : float, default 0.25
        The probability ``p`` that a sample enters the loss, in ``[0, 1]``; ``1`` keeps
        every sample and draws nothing.
    seed : int, optional
        Seed of the loss's generator (the update mask). ``None``: seed 0, or, for a loss
        built on torch modules computing on torch, torch's default generator, so
        ``torch.manual_seed`` reproduces TorchRL's mask (:meth:`LossModule.generator`).

    Keys (``set_keys``): ``observation`` (default ``("next", "observation")``).
    Output: ``loss_predictor``.

    Notes
    -----
    TorchRL 0.14.1 casts the observation to float32 whatever the networks' dtype, so it
    runs only float32 networks; arrayrl casts the observation to the predictor's
    parameter dtype (float32 networks get TorchRL's numbers, float64 ones compute in
    float64). The update mask is drawn as TorchRL draws it: one float32 uniform per
    sample, kept when below ``update_fraction``. When no sample is kept, ``"mean"``
    gives 0 (and a zero gradient), as TorchRL.
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        observation: Any = ("next", "observation")

    out_keys: ClassVar[list[str]] = ["loss_predictor"]

    def __init__(
        self,
        predictor_network: Any,
        target_network: Any,
        *,
        obs_rms: Any = None,
        obs_clip: float = 5.0,
        reduction: str | None = "mean",
        update_fraction: float = 0.25,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.update_fraction = hyperparameter("update_fraction", update_fraction, low=0.0, high=1.0)
        self.obs_clip = hyperparameter("obs_clip", obs_clip, low=0.0, high=math.inf)
        for name, network in (
            ("predictor_network", predictor_network),
            ("target_network", target_network),
        ):
            self.convert_to_functional(_feature_module(network, name), name)
            self._has_torch_modules |= is_torch_object(network)
        self.obs_rms: RunningMeanStd | None = None
        if obs_rms is not None:
            self.register_state("obs_rms", as_running_mean_std(obs_rms, owner="RNDLoss"))
        self.reduction = reduction
        self.seed = seed

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads: the (next) observation."""
        return [self.tensor_keys.observation]

    def named_parameters(self) -> Iterator[tuple[str, Any]]:
        """The predictor's parameters only: the target network is not trained."""
        for name, leaf in super().named_parameters():
            if not name.startswith("target_network_params."):
                yield name, leaf

    # -- the loss -----------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_predictor``: the masked mean of ``e_θ(s')`` over the batch.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The next observation at ``tensor_keys.observation``, shape ``[*B, D]``.
        params : mapping, optional
            ``{"predictor_network": tree}`` (and/or ``"target_network"``) to compute with
            instead of the loss's own parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        error = self._prediction_errors(batch, params)
        keep = self._update_mask(error)
        return ArrayDict({"loss_predictor": self._reduce(error, batch, keep)})

    def intrinsic_reward(
        self,
        batch: Any,
        params: Mapping[str, Params] | None = None,
        *,
        reward_rms: RunningMeanStd | None = None,
        reward_clip: float = 5.0,
    ) -> Any:
        """The exploration bonus of every sample, shape ``[*B, 1]``, with no gradient
        and no update mask; ``obs_rms`` is applied and not updated.

        Without ``reward_rms`` it is ``e_θ(s')``. With a scalar ``RunningMeanStd``
        (``shape=()``) it is TorchRL's ``RNDTransform`` reward: in training mode the
        statistics first fold in the batch's ``e_θ(s')``, then the bonus is
        ``clip(e / sqrt(max(var, 1e-8)), -reward_clip, reward_clip)`` (scaled by the
        running standard deviation, not centred).

        TorchRL's ``RNDLoss`` has no such method (its ``RNDTransform`` computes the bonus
        during collection); this one gives the bonus of a stored batch, e.g. to add
        ``β·e`` to the rewards of an on-policy rollout before computing advantages.
        """
        batch = self.working_copy(batch)
        backend = backend_of(self.read(batch, self.tensor_keys.observation))
        with backend.no_grad():
            error = backend.stop_gradient(self._prediction_errors(batch, params))[..., None]
        if reward_rms is None:
            return error
        reward_rms = as_running_mean_std(reward_rms, "reward_rms", owner="RNDLoss")
        clip = hyperparameter("reward_clip", reward_clip, low=0.0, high=math.inf)
        if self.training:
            reward_rms.update(error)
        scaled = error / reward_rms.scale()
        return backend.xp.clip(scaled, min=-clip, max=clip)

    def _prediction_errors(self, batch: ArrayDict, params: Mapping[str, Params] | None) -> Any:
        """``e_θ(s')`` per sample (shape ``[*B]``), through the trained predictor."""
        self.check_batch_backend(batch, self.tensor_keys.observation)
        obs = self._network_input(batch)
        backend = backend_of(obs)
        with backend.no_grad():
            target = self._features(
                "target_network", obs, self.detached_params("target_network", params)
            )
        target = backend.stop_gradient(target)
        prediction = self._features(
            "predictor_network", obs, self.network_params("predictor_network", params)
        )
        return prediction_error(prediction, target)

    def _network_input(self, batch: ArrayDict) -> Any:
        """``s̃'``: the observation in the predictor's dtype, normalised by ``obs_rms`` and
        clipped to ``±obs_clip`` when there are statistics."""
        key = self.tensor_keys.observation
        obs = self.read(batch, key)
        xp = backend_of(obs).xp
        if obs.ndim < 1:
            raise ValueError(
                f"RNDLoss: the observation {key!r} must have a feature axis, got a 0-d array"
            )
        obs = xp.astype(obs, self._input_dtype(xp), copy=False)
        if self.obs_rms is None:
            return obs
        normalised = self.obs_rms.normalize(obs)
        return xp.clip(normalised, min=-self.obs_clip, max=self.obs_clip)

    def _input_dtype(self, xp: Any) -> Any:
        """The predictor's floating parameter dtype (float32 for a network without one)."""
        for leaf in flatten_params(self.network_params("predictor_network", None)).values():
            if xp.isdtype(leaf.dtype, "real floating"):
                return leaf.dtype
        return xp.float32

    def _features(self, name: str, obs: Any, params: Params) -> Any:
        """Network ``name``'s features of ``obs`` computed with ``params``."""
        module = self._networks[name]
        return module.module.apply(params.get("module", {}), obs)

    def _update_mask(self, error: Any) -> Any:
        """``k``: ``True`` where a sample enters the loss (``None`` when
        ``update_fraction`` is 1), one float32 uniform draw per sample from the loss's
        generator, kept below ``update_fraction`` (TorchRL's draw)."""
        if self.update_fraction >= 1.0:
            return None
        backend = backend_of(error)
        draws = self.generator(backend).uniform(tuple(error.shape), dtype=backend.xp.float32)
        return draws < self.update_fraction

    def _reduce(self, error: Any, batch: ArrayDict, keep: Any) -> Any:
        """:meth:`reduce_loss` of ``k·e``; with a mask and ``"mean"``, the sum over the
        kept (and valid) samples divided by their number, at least 1."""
        if keep is None:
            return self.reduce_loss(error, batch)
        xp = backend_of(error).xp
        error = xp.where(keep, error, xp.zeros_like(error))
        if self.reduction != "mean":
            return self.reduce_loss(error, batch)
        valid = keep
        batch_mask = self._batch_mask(batch, error)
        if batch_mask is not None:
            valid = valid & batch_mask
        total = xp.sum(xp.where(valid, error, xp.zeros_like(error)))
        return total / xp.clip(xp.sum(xp.astype(valid, error.dtype)), min=1.0)


def prediction_error(prediction: Any, target: Any) -> Any:
    """``mean_j (f̂_j − f_j)²`` over the last (feature) axis: the RND error per sample.

    ``ValueError`` when the two feature arrays differ in shape (no broadcasting)."""
    if tuple(prediction.shape) != tuple(target.shape):
        raise ValueError(
            f"RNDLoss: the predictor's features have shape {tuple(prediction.shape)} but the "
            f"target's {tuple(target.shape)}; both networks must map an observation to the "
            "same feature shape"
        )
    xp = backend_of(prediction, target).xp
    diff = prediction - target
    return xp.mean(diff * diff, axis=-1)


def _feature_module(network: Any, name: str) -> DictModule:
    """``network`` (a layer or a plain ``torch.nn.Module``) as a dict module reading the
    observation and writing the features."""
    if _is_tensordict_module(network) or not (
        isinstance(network, Layer) or is_torch_object(network) or hasattr(network, "apply")
    ):
        raise TypeError(
            f"RNDLoss: {name} must map an observation array to a feature array: an arrayrl "
            "layer (arrayrl.modules.MLP, Sequential, ...) or a plain torch.nn.Module, as "
            f"TorchRL's RNDLoss takes; got {type(network).__module__}.{type(network).__name__}"
            " (for a TensorDictModule pass its .module)"
        )
    layer = network if not is_torch_object(network) else as_layer(network)
    return DictModule(layer, in_keys=[_OBSERVATION], out_keys=[_FEATURES])


def _is_tensordict_module(obj: Any) -> bool:
    """Whether ``obj`` is a dict-level module (arrayrl's, tensordict's, TorchRL's
    actors), which reads keys of a batch instead of taking the observation."""
    return hasattr(obj, "in_keys") and hasattr(obj, "out_keys")
