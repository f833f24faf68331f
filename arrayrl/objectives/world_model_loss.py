r"""``WorldModelLoss``: supervised losses of a learned environment model.

A world model :math:`f_\theta` maps a batch of real transitions :math:`(s, a, r, d, s')`
to predictions; as in model-based RL since Sutton's Dyna (1991) and the world models of
Ha & Schmidhuber 2018 ("World Models", https://arxiv.org/abs/1803.10122), each
prediction is regressed on what was observed, with a distance :math:`\delta` (``"l2"``:
:math:`(x - y)^2`, ``"l1"``: :math:`|x - y|`, ``"smooth_l1"``: Huber with
:math:`\delta = 1`) averaged over every element:

.. math::

    \mathcal L_\text{reward} = w_r\,\overline{\delta(\hat r, r)}, \quad
    \mathcal L_\text{done} = w_d\,\overline{\delta(\hat d, d)}, \quad
    \mathcal L_\text{reconstruction} = w_o\,\overline{\delta(\hat s, s)}, \quad
    \mathcal L_\text{latent} = w_z\,\overline{\delta(\hat z', z')}.

Before the model runs, the observed reward (and done / terminated flags) are moved from
``("next", reward)`` to ``("next", true_reward)`` (``true_done``, ``true_terminated``), so
that the model writes its predictions at the usual keys. Arguments, keys, outputs and
this renaming follow TorchRL 0.14.1 (``torchrl/objectives/world_model_loss.py``); for the
KL terms of a stochastic (RSSM) model use ``DreamerModelLoss``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from .common import LossModule
from .utils import distance_loss

__all__ = ["WorldModelLoss"]

#: the sub-losses, in the order TorchRL writes them
LOSSES = ("reward", "done", "reconstruction", "latent")
_DISTANCES = ("l1", "l2", "smooth_l1")
#: each sub-loss's (prediction, observation) key fields
_TERMS = {
    "reward": ("reward", "true_reward"),
    "done": ("done", "true_done"),
    "reconstruction": ("reconstructed_observation", "observation"),
    "latent": ("predicted_latent", "target_latent"),
}
#: the key fields read under ``"next"``
_NEXT_FIELDS = ("reward", "true_reward", "done", "true_done", "terminated", "true_terminated")


class WorldModelLoss(LossModule):
    """Regression losses of a world model on real transitions (module docstring).

    Parameters
    ----------
    world_model : Module
        Reads the batch and writes its predictions: an arrayrl dict-level module, or a
        TorchRL ``WorldModelWrapper`` / ``TensorDictSequential`` / ``TensorDictModule``
        (adapted; its parameters stay its own). Its parameter tree is
        ``world_model_params``.
    losses : list of str, optional
        Any of ``"reward"``, ``"done"``, ``"reconstruction"``, ``"latent"``; default
        ``["reward"]``.
    reward_loss, done_loss, reconstruction_loss, latent_loss : str, default "l2"
        The distance of each sub-loss: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
    reward_weight, done_weight, reconstruction_weight, latent_weight : float, default 1.0
        Non-negative weights (schedulable: ``loss.reward_weight = 0.5``).

    Keys (``set_keys``): ``reward`` / ``done`` / ``terminated`` (under ``"next"``: the
    model's predictions, read after the observed values are renamed to ``true_reward`` /
    ``true_done`` / ``true_terminated``), ``observation`` and
    ``reconstructed_observation``, ``predicted_latent`` and ``target_latent``.

    Outputs: the scalars ``loss_reward``, ``loss_done``, ``loss_reconstruction``,
    ``loss_latent`` of the chosen sub-losses. ``loss_done`` is computed in the
    prediction's floating dtype (float32 for a boolean prediction), the observed flags
    cast to it; TorchRL casts both to float32 (recorded in the conformance suite). The
    ``terminated`` flag is renamed when the batch has it (TorchRL requires it).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        reward: Any = "reward"
        true_reward: Any = "true_reward"
        done: Any = "done"
        true_done: Any = "true_done"
        terminated: Any = "terminated"
        true_terminated: Any = "true_terminated"
        observation: Any = "observation"
        reconstructed_observation: Any = "reconstructed_observation"
        predicted_latent: Any = "predicted_latent"
        target_latent: Any = "target_latent"

    out_keys: ClassVar[list[str]] = [f"loss_{name}" for name in LOSSES]

    def __init__(
        self,
        world_model: Any,
        *,
        losses: Sequence[str] | None = None,
        reward_loss: str = "l2",
        done_loss: str = "l2",
        reconstruction_loss: str = "l2",
        latent_loss: str = "l2",
        reward_weight: float = 1.0,
        done_weight: float = 1.0,
        reconstruction_weight: float = 1.0,
        latent_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.losses = _checked_losses(losses)
        self.reward_loss = _checked_distance("reward_loss", reward_loss)
        self.done_loss = _checked_distance("done_loss", done_loss)
        self.reconstruction_loss = _checked_distance("reconstruction_loss", reconstruction_loss)
        self.latent_loss = _checked_distance("latent_loss", latent_loss)
        self.register_coeff("reward_weight", reward_weight)
        self.register_coeff("done_weight", done_weight)
        self.register_coeff("reconstruction_weight", reconstruction_weight)
        self.register_coeff("latent_weight", latent_weight)
        self.convert_to_functional(world_model, "world_model")

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """The chosen ``loss_*`` terms on ``batch`` (real transitions).

        ``params``: ``{"world_model": tree}`` to compute with instead of the loss's own
        parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        self._set_aside_observed(batch)
        batch = self.world_model(batch, self.network_params("world_model", params))
        out = ArrayDict()
        for name in LOSSES:
            if name in self.losses:
                weight = getattr(self, f"{name}_weight")
                out.set(f"loss_{name}", weight * self._mean_distance(batch, name))
        return out

    def _mean_distance(self, batch: ArrayDict, name: str) -> Any:
        """``mean δ(prediction, observation)`` of sub-loss ``name``; ``ValueError`` for
        shapes that differ (no broadcasting)."""
        predicted_field, observed_field = _TERMS[name]
        predicted = self._entry(batch, predicted_field)
        observed = self._entry(batch, observed_field)
        key = self._entry_key(predicted_field)
        if name == "reward":
            _check_floating(observed, key)
        if name == "done":
            predicted, observed = _as_done_floats(predicted, observed)
        if tuple(predicted.shape) != tuple(observed.shape):
            raise ValueError(
                f"WorldModelLoss: the prediction at {key!r} has shape {tuple(predicted.shape)}, "
                f"the observed value {tuple(observed.shape)}; they must match"
            )
        distance = distance_loss(predicted, observed, getattr(self, f"{name}_loss"))
        return backend_of(distance).xp.mean(distance)

    def _set_aside_observed(self, batch: ArrayDict) -> None:
        """Move the observed reward / done / terminated to their ``true_*`` keys (in the
        working copy; the caller's batch is not touched). As TorchRL, the done flags may
        not overwrite an existing ``true_*`` entry; the reward may."""
        if "reward" in self.losses:
            self._rename(batch, "reward")
        if "done" in self.losses:
            self._rename(batch, "done", safe=True)
            self._rename(batch, "terminated", safe=True, required=False)

    def _rename(
        self, batch: ArrayDict, field: str, *, safe: bool = False, required: bool = True
    ) -> None:
        """``("next", <field>)`` moved to ``("next", <true_field>)``."""
        old, new = self._entry_key(field), self._entry_key(f"true_{field}")
        value = self.read(batch, old, what=field) if required else batch.get(old, None)
        if value is None:
            return
        if safe and batch.get(new, None) is not None:
            raise KeyError(
                f"WorldModelLoss: the batch already holds {new!r}, where the observed {old!r} "
                "is moved before the world model runs"
            )
        batch.set(new, value)
        del batch[old]

    def _entry(self, batch: ArrayDict, field: str) -> Any:
        """The batch's entry at the key of ``field`` (``KeyError`` naming ``set_keys``)."""
        return self.read(batch, self._entry_key(field), what=field)

    def _entry_key(self, field: str) -> Any:
        """The key of ``field``: its ``tensor_keys`` value, under ``"next"`` for the
        reward and done flags."""
        key = getattr(self.tensor_keys, field)
        return _flat(("next", key)) if field in _NEXT_FIELDS else key


# -- checks and casts -----------------------------------------------------------------------------
def _flat(key: Any) -> Any:
    """``("next", ("a", "b"))`` as ``("next", "a", "b")`` (a nested key under ``next``)."""
    if not isinstance(key, tuple):
        return key
    flat: tuple[str, ...] = ()
    for part in key:
        flat += _flat(part) if isinstance(part, tuple) else (part,)
    return flat


def _as_done_floats(predicted: Any, observed: Any) -> tuple[Any, Any]:
    """Both flags in the prediction's floating dtype (float32 if it is not floating)."""
    xp = backend_of(predicted, observed).xp
    dtype = predicted.dtype if xp.isdtype(predicted.dtype, "real floating") else xp.float32
    return xp.astype(predicted, dtype), xp.astype(observed, dtype)


def _check_floating(value: Any, key: Any) -> None:
    if not backend_of(value).xp.isdtype(value.dtype, "real floating"):
        raise TypeError(
            f"WorldModelLoss: the observed reward {_flat(key)!r} must be floating, got "
            f"{value.dtype}"
        )


def _checked_losses(losses: Any) -> list[str]:
    if losses is None:
        return ["reward"]
    if isinstance(losses, str) or not isinstance(losses, Sequence):
        raise TypeError(
            f"WorldModelLoss: losses must be a list of names from {list(LOSSES)}, got {losses!r}"
        )
    unknown = [name for name in losses if name not in LOSSES]
    if unknown:
        raise ValueError(
            f"WorldModelLoss: unknown loss type(s) {unknown}; valid choices are {list(LOSSES)}"
        )
    return list(losses)


def _checked_distance(name: str, value: Any) -> str:
    if value not in _DISTANCES:
        raise ValueError(f"WorldModelLoss: {name} must be one of {_DISTANCES}, got {value!r}")
    return value
