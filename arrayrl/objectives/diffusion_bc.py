"""Behaviour cloning of a diffusion policy: ``DiffusionBCLoss``.

The ε-prediction (noise-prediction) objective of Ho et al. 2020, "Denoising Diffusion
Probabilistic Models" (https://arxiv.org/abs/2006.11239), on demonstration actions as in
Chi et al. 2023, "Diffusion Policy: Visuomotor Policy Learning via Action Diffusion"
(https://arxiv.org/abs/2303.04137). For a batch of observations ``s`` and clean expert
actions ``a_0``, per batch element a step ``t ~ U{0, …, T−1}`` and noise ``ε ~ N(0, I)``:

    a_t = √ᾱ_t · a_0 + √(1 − ᾱ_t) · ε
    ℓ   = (ε_θ(cat[a_t, s, t]) − ε)²            (element-wise, shape ``(*B, A)``)

and ``loss_diffusion_bc`` is the mean (or sum, or ``ℓ`` itself with ``reduction="none"``).
Arguments, keys and outputs follow TorchRL 0.14.1 (``torchrl/objectives/diffusion_bc.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params
from arrayrl.modules.adapt import as_diffusion_actor, is_torch_object

from .common import LossModule

__all__ = ["DiffusionBCLoss", "draw_timesteps"]


class DiffusionBCLoss(LossModule):
    """The diffusion behaviour-cloning loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : DiffusionActor
        An arrayrl :class:`~arrayrl.modules.diffusion.DiffusionActor` (every backend), or
        TorchRL's ``DiffusionActor``, whose score network and schedule buffers are used
        as they are (so the loss gives TorchRL's numbers).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"`` returns the element-wise ``ℓ`` of shape ``(*B, A)``, as TorchRL.
    seed : int, optional
        The seed of the loss's generator (steps and noise). ``None``: with TorchRL's actor
        the draws come from torch's default generator, as TorchRL's
        (``torch.manual_seed`` reproduces its numbers); otherwise seed 0.

    Keys (``set_keys``): ``action`` (the clean expert action, default ``"action"``) and
    ``observation`` (default ``"observation"``). The draws are TorchRL's, in its order:
    the steps (``randint`` of shape ``B``), then the noise (normal, of the action's shape
    and dtype).

    Notes
    -----
    As TorchRL's, the loss reads no validity masks (``loss_mask_key`` is ignored) and
    ``reduction="none"`` keeps the action axis. The observation and the action must
    share their batch dims and dtype (no broadcasting, no promotion). With arrayrl's
    actor in float64 the schedule is float64 (TorchRL's is float32: conformance
    deviation ``torchrl-diffusion-float32-schedule``).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        action: Any = "action"
        observation: Any = "observation"

    out_keys: ClassVar[list[str]] = ["loss_diffusion_bc"]

    def __init__(
        self, actor_network: Any, *, reduction: str = "mean", seed: int | None = None
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        actor = as_diffusion_actor(actor_network, "actor_network", owner=owner)
        self.convert_to_functional(actor, "actor_network")
        self._has_torch_modules |= is_torch_object(actor_network)
        self.reduction = reduction
        self.seed = seed

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads: the observation and the clean action."""
        return [self.tensor_keys.observation, self.tensor_keys.action]

    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_diffusion_bc``: the reduced ``(ε_θ(cat[a_t, s, t]) − ε)²``.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The clean expert action and the observation.
        params : mapping, optional
            ``{"actor_network": tree}`` to compute with instead of the loss's own
            parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.action)
        action, observation = self._inputs(batch)
        ddpm = self.actor_network.module
        rng = self.generator(backend_of(action))
        t = draw_timesteps(rng, ddpm.num_steps, tuple(action.shape[:-1]))
        noise = rng.normal(tuple(action.shape), dtype=action.dtype)
        noisy_action = ddpm.add_noise(action, noise, t)
        actor_params = self.network_params("actor_network", params)["module"]
        predicted = ddpm.predict_noise(actor_params, noisy_action, observation, t)
        loss = (predicted - noise) ** 2
        return ArrayDict({"loss_diffusion_bc": self.reduce_loss(loss)})

    def _inputs(self, batch: ArrayDict) -> tuple[Any, Any]:
        """The clean action ``(*B, A)`` and the observation ``(*B, O)``, checked."""
        keys = self.tensor_keys
        action = self.read(batch, keys.action)
        observation = self.read(batch, keys.observation)
        xp = backend_of(action, observation=observation).xp
        owner = type(self).__name__
        for key, value in ((keys.action, action), (keys.observation, observation)):
            if not xp.isdtype(value.dtype, "real floating"):
                raise TypeError(f"{owner}: {key!r} must be a floating array, got {value.dtype}")
            if value.ndim < 1:
                raise ValueError(f"{owner}: {key!r} needs a feature axis, got a 0-d array")
        action_dim = self.actor_network.action_dim
        if action.shape[-1] != action_dim:
            raise ValueError(
                f"{owner}: the action {keys.action!r} has {action.shape[-1]} features, the "
                f"actor's action_dim is {action_dim}"
            )
        if tuple(observation.shape[:-1]) != tuple(action.shape[:-1]):
            raise ValueError(
                f"{owner}: the observation {keys.observation!r} of shape "
                f"{tuple(observation.shape)} and the action {keys.action!r} of shape "
                f"{tuple(action.shape)} must share their batch dims"
            )
        if observation.dtype != action.dtype:
            raise TypeError(
                f"{owner}: the observation is {observation.dtype} and the action "
                f"{action.dtype}; give both in one dtype"
            )
        return action, observation


def draw_timesteps(rng: Any, num_steps: int, shape: tuple[int, ...]) -> Any:
    """``t ~ U{0, …, num_steps − 1}`` of ``shape`` (int64) from ``rng``
    (:meth:`arrayrl.random.Generator.integers`: on torch ``torch.randint``, TorchRL's
    draw)."""
    return rng.integers(0, num_steps, shape)
