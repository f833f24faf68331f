"""Action Chunking with Transformers: ``ACTLoss`` and the CVAE KL term ``cvae_kl``.

Zhao et al. 2023, "Learning Fine-Grained Bimanual Manipulation with Low-Cost Hardware",
https://arxiv.org/abs/2304.13705. The policy is a conditional VAE: an encoder maps the
observation ``o`` and the expert chunk ``a_{1:T}`` to ``q(z | o, a) = N(μ, diag σ²)``
(written as ``μ`` and ``log σ²``), a latent ``z ~ q`` is drawn by reparameterisation, and a
decoder predicts the chunk ``â_{1:T}`` from ``(o, z)``. Per sample, with ``A`` action
dimensions and ``d`` latent dimensions:

    ℓ_rec = 1/(T·A) Σ_{t,j} |â_{t,j} − a_{t,j}|                 (L1 over the chunk)
    ℓ_KL  = KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_{i=1}^{d} (σ_i² + μ_i² − 1 − log σ_i²)
    ℓ_ACT = ℓ_rec + β · ℓ_KL                                    (β = ``kl_weight``)

each reduced over the batch (mean, sum or none). Arguments, keys and outputs follow
TorchRL 0.14.1 (``torchrl/objectives/act.py``); one deviation (the loss masks) is
recorded in ``conformance/act_cases.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

from arrayrl._validation import coefficient, floating_array
from arrayrl.backends import backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from .common import LossModule

__all__ = ["ACTION_CHUNK_KEY", "ACTLoss", "cvae_kl"]

#: where a VLA dataset keeps the expert action chunk (TorchRL's ``ACTION_CHUNK_KEY``)
ACTION_CHUNK_KEY: tuple[str, str] = ("vla_action", "chunk")
#: the keys the actor reads, whatever ``set_keys`` says (TorchRL's contract with
#: ``ACTModel``: the loss renames the batch's entries to these)
ACTOR_INPUTS: tuple[str, str] = ("observation", "action_chunk")


def cvae_kl(mu: Any, log_var: Any) -> Any:
    """``KL(N(μ, diag σ²) ‖ N(0, I))`` of a diagonal Gaussian posterior, summed over the
    last (latent) axis (Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
    https://arxiv.org/abs/1312.6114, appendix B):

        KL = ½ Σ_i (σ_i² + μ_i² − 1 − log σ_i²),   σ_i² = exp(log_var_i).

    It is ≥ 0, and 0 exactly where ``μ = 0`` and ``log σ² = 0``; ``σ² − 1`` is computed
    as ``expm1(log σ²)``, so that it stays ≥ 0 in floating point near the prior too.

    Parameters
    ----------
    mu, log_var : array
        The posterior's mean and log-variance, floating arrays of one shape
        ``[..., d]`` on one backend.

    Returns
    -------
    array
        Shape ``[...]`` (the latent axis summed), in their dtype.
    """
    floating_array("mu", mu, owner="cvae_kl")
    floating_array("log_var", log_var, owner="cvae_kl")
    if tuple(mu.shape) != tuple(log_var.shape) or mu.ndim == 0:
        raise ValueError(
            f"cvae_kl: mu {tuple(mu.shape)} and log_var {tuple(log_var.shape)} must have "
            "one shape [..., latent_dim]"
        )
    xp = backend_of(mu=mu, log_var=log_var).xp
    # σ² − 1 as expm1(log σ²): exact near the prior, so the KL never rounds below 0
    return 0.5 * xp.sum(xp.expm1(log_var) - log_var + mu * mu, axis=-1)


class ACTLoss(LossModule):
    """The ACT loss (see the module docstring for the equations).

    Parameters
    ----------
    actor_network : Module
        The CVAE policy: TorchRL's ``ACTModel`` in a ``TensorDictModule`` (through the
        adapter), or any arrayrl module. It reads ``"observation"`` and
        ``"action_chunk"`` (those literal keys, see Notes) and writes the predicted chunk,
        ``μ`` and ``log σ²`` at ``tensor_keys.action_pred``, ``mu`` and ``log_var``.
    kl_weight : float, default 10.0
        β, the weight of the KL term (the paper's value).
    reduction : {"mean", "sum", "none"}, default "mean"
        How the per-sample terms reduce over the batch.
    seed : int, optional
        arrayrl's addition: the seed of the generator handed to an arrayrl actor whose
        ``forward`` takes ``rng`` (to draw ``z``). TorchRL's modules draw from torch's
        global generator, as in TorchRL.

    Keys (``set_keys``): ``observation`` (``"observation"``), ``action_chunk``
    (``("vla_action", "chunk")``, ``[*B, T, A]``), ``action_pred``, ``mu``, ``log_var``
    (the actor's outputs).

    Outputs: ``loss_act`` (differentiable), ``loss_reconstruction`` and ``loss_kl``
    (detached, for logging); 0-d, or ``[*B]`` with ``reduction="none"``.

    Notes
    -----
    As in TorchRL 0.14.1, the actor gets a batch holding only the entries
    ``"observation"`` and ``"action_chunk"``, read from ``tensor_keys.observation`` and
    ``tensor_keys.action_chunk``: ``set_keys`` changes where the loss reads the data,
    not the actor's input names. An actor reading anything else is refused at
    construction.

    Unlike TorchRL 0.14.1, the batch's loss masks (``loss_mask_key``, by default
    ``("collector", "mask")`` and ``"shifted_valid"``) are honoured: masked samples
    leave both terms (TorchRL's ``ACTLoss`` ignores them).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        observation: Any = "observation"
        action_chunk: Any = ACTION_CHUNK_KEY
        action_pred: Any = "action_pred"
        mu: Any = "mu"
        log_var: Any = "log_var"

    out_keys: ClassVar[list[str]] = ["loss_act", "loss_reconstruction", "loss_kl"]

    def __init__(
        self,
        actor_network: Any,
        *,
        kl_weight: float = 10.0,
        reduction: str = "mean",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        actor = self.convert_to_functional(actor_network, "actor_network")
        _check_actor_inputs(actor)
        self._draws = _takes_rng(actor)
        self.kl_weight = kl_weight
        self.reduction = reduction
        self.seed = seed

    @property
    def kl_weight(self) -> float:
        """β, the weight of the KL term (a finite, non-negative float)."""
        return self._kl_weight

    @kl_weight.setter
    def kl_weight(self, value: Any) -> None:
        self._kl_weight = coefficient("kl_weight", value, allow_none=False)

    @property
    def in_keys(self) -> list[Any]:
        """The batch keys the loss reads: the observation and the expert chunk."""
        return [self.tensor_keys.observation, self.tensor_keys.action_chunk]

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss_act = ℓ_rec + β·ℓ_KL`` reduced, with both terms detached for logging.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The observation and the expert chunk at their ``tensor_keys``.
        params : mapping, optional
            ``{"actor_network": tree}`` to compute with instead of the loss's own
            parameters (pure-function use).
        """
        tk = self.tensor_keys
        self.check_batch_backend(batch, tk.action_chunk)
        chunk = self._expert_chunk(batch)
        predicted, mu, log_var = self._run_actor(batch, chunk, params)
        reconstruction = self._reconstruction(predicted, chunk)
        kl = cvae_kl(mu, log_var)
        _check_per_sample(kl, reconstruction)
        loss_rec = self.reduce_loss(reconstruction, batch)
        loss_kl = self.reduce_loss(kl, batch)
        stop = backend_of(loss_rec).stop_gradient
        return ArrayDict(
            {
                "loss_act": loss_rec + self.kl_weight * loss_kl,
                "loss_reconstruction": stop(loss_rec),
                "loss_kl": stop(loss_kl),
            }
        )

    def _expert_chunk(self, batch: Any) -> Any:
        """The expert chunk ``[*B, T, A]``: floating, with the batch's leading dims."""
        key = self.tensor_keys.action_chunk
        chunk = self.read(batch, key)
        floating_array(f"the action chunk {key!r}", chunk, owner="ACTLoss")
        batch_shape = tuple(batch.batch_size)
        leading = tuple(chunk.shape[: len(batch_shape)])
        if chunk.ndim != len(batch_shape) + 2 or leading != batch_shape:
            raise ValueError(
                f"ACTLoss: the action chunk {key!r} must have shape [*batch, T, action_dim] "
                f"= {list(batch_shape)} + [T, action_dim], got {tuple(chunk.shape)}"
            )
        return chunk

    def _run_actor(
        self, batch: Any, chunk: Any, params: Mapping[str, Params] | None
    ) -> tuple[Any, Any, Any]:
        """``(â, μ, log σ²)``: the actor run on a batch holding only ``"observation"``
        and ``"action_chunk"`` (TorchRL's names), its outputs read at the ``tensor_keys``."""
        tk = self.tensor_keys
        observation = self.read(batch, tk.observation)
        inputs = ArrayDict(
            {"observation": observation, "action_chunk": chunk}, tuple(batch.batch_size)
        )
        kwargs = {"rng": self.generator(backend_of(chunk))} if self._draws else {}
        out = self.actor_network(inputs, self.network_params("actor_network", params), **kwargs)
        out = inputs if out is None else out
        return tuple(_actor_output(out, key, name) for name, key in _outputs(tk))

    @staticmethod
    def _reconstruction(predicted: Any, chunk: Any) -> Any:
        """``ℓ_rec`` per sample: the mean of ``|â − a|`` over the chunk and action axes."""
        if tuple(predicted.shape) != tuple(chunk.shape):
            raise ValueError(
                f"ACTLoss: the actor predicted a chunk of shape {tuple(predicted.shape)} for "
                f"an expert chunk of shape {tuple(chunk.shape)}; they must match"
            )
        xp = backend_of(predicted, chunk).xp
        return xp.mean(xp.abs(predicted - chunk), axis=(-2, -1))


def _outputs(tk: Any) -> list[tuple[str, Any]]:
    """The actor's outputs by field name and key."""
    return [("action_pred", tk.action_pred), ("mu", tk.mu), ("log_var", tk.log_var)]


def _actor_output(out: Any, key: Any, name: str) -> Any:
    """``out[key]``, or a ``KeyError`` naming what the actor must write."""
    value = out.get(key, None)
    if value is None:
        raise KeyError(
            f"ACTLoss: the actor did not write {name} at {key!r}; it must write "
            "action_pred, mu and log_var (set_keys(action_pred=..., mu=..., log_var=...) "
            "names where)"
        )
    return value


def _check_per_sample(kl: Any, reconstruction: Any) -> None:
    """The KL per sample must have the batch's shape, as the reconstruction term."""
    if tuple(kl.shape) != tuple(reconstruction.shape):
        raise ValueError(
            f"ACTLoss: mu and log_var must have shape [*batch, latent_dim]; their KL has "
            f"shape {tuple(kl.shape)}, the batch is {tuple(reconstruction.shape)}"
        )


def _check_actor_inputs(actor: Any) -> None:
    """``ValueError`` unless the actor reads only TorchRL's two input names."""
    extra = [key for key in getattr(actor, "in_keys", ()) if key not in ACTOR_INPUTS]
    if extra:
        raise ValueError(
            f"ACTLoss: the actor reads {extra}, but it is given only {list(ACTOR_INPUTS)} "
            "(TorchRL's contract: the loss passes the batch's observation and action chunk "
            "under these names; set_keys changes where the loss reads them)"
        )


def _takes_rng(actor: Any) -> bool:
    """Whether the actor's ``forward`` takes an ``rng`` keyword (an arrayrl CVAE that
    draws its latent from the loss's generator)."""
    forward = getattr(actor, "forward", None)
    if forward is None:
        return False
    try:
        return "rng" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False
