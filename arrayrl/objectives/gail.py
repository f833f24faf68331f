r"""Generative adversarial imitation learning: ``GAILLoss``.

The discriminator loss of Ho and Ermon 2016, "Generative Adversarial Imitation
Learning", https://arxiv.org/abs/1606.03476. A discriminator :math:`D_\phi(s, a)` scores
state-action pairs as the expert's: trained to tell the expert's pairs
:math:`(s^E, a^E)` from the policy's (the collector's) :math:`(s^C, a^C)`, element by
element,

.. math::

    \ell = -\log D_\phi(s^E, a^E) - \log\bigl(1 - D_\phi(s^C, a^C)\bigr)

(binary cross-entropy, label 1 for the expert and 0 for the collector; each log clamped
below at -100 as torch's ``BCELoss``). With ``use_grad_penalty`` the gradient penalty
of Gulrajani et al. 2017 (WGAN-GP, https://arxiv.org/abs/1704.00028) is added to every
element:

.. math::

    \hat x = u \odot x^C + (1 - u) \odot x^E, \quad u \sim U(0, 1) \text{ per element},
    \qquad
    \text{GP} = \lambda\, \operatorname{mean}\bigl(
        (\lVert \nabla_{\hat s, \hat a} \textstyle\sum D_\phi(\hat s, \hat a) \rVert_2 - 1)^2
    \bigr),

the norm taken over the concatenated observation and action gradients of each sample.
``loss`` is then ``ℓ + GP`` reduced (mean, sum or none, over the valid elements of the
batch's loss masks). Arguments, keys and outputs follow TorchRL 0.14.1
(``torchrl/objectives/gail.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from arrayrl._validation import coefficient, flag, floating_array, reject_unknown_kwargs
from arrayrl.backends import Backend, backend_of
from arrayrl.data import ArrayDict
from arrayrl.modules import Params

from .common import LossModule

__all__ = ["GAILLoss"]

#: torch's ``BCELoss`` clamps each log-probability at this value (a certain mistake
#: costs 100, not infinity)
LOG_CLAMP = -100.0


class GAILLoss(LossModule):
    r"""The GAIL discriminator loss (see the module docstring for the equations).

    Parameters
    ----------
    discriminator_network : Module
        An arrayrl module or a TorchRL ``TensorDictModule`` that reads the observation
        and action at ``tensor_keys.expert_observation`` / ``expert_action`` (the
        collector's pairs are handed to it under those keys too) and writes its
        prediction at ``tensor_keys.discriminator_pred``, shaped ``[*batch, 1]``: the
        probability that the pair is the expert's (TorchRL's contract, despite the key's
        name ``"d_logits"``), or a logit with ``from_logits=True``.
    use_grad_penalty : bool, default False
        Add the gradient penalty. It needs gradients with respect to the inputs kept for
        a second backward (:meth:`arrayrl.backends.Backend.input_gradients`): torch and
        JAX have them; on NumPy, array-api-strict, CuPy or Dask the call raises
        ``NotImplementedError`` (the loss without the penalty runs everywhere).
    gp_lambda : float, default 10
        The penalty's weight λ (finite, non-negative).
    reduction : {"mean", "sum", "none"}, default "mean"
    from_logits : bool, default False
        arrayrl's option (not in TorchRL): the discriminator writes the logit ``z`` of
        ``D = sigmoid(z)`` and the cross-entropy is computed from it stably, ``softplus(-z)``
        for the expert and ``softplus(z)`` for the collector (torch's
        ``BCEWithLogitsLoss``). The penalty then differentiates the logit.
    seed : int, optional
        The seed of the penalty's interpolation noise. ``None``: a loss built from
        TorchRL / torch modules draws from torch's default generator as TorchRL does
        (``torch.manual_seed`` reproduces TorchRL's numbers), any other from seed 0.

    Keys (``set_keys``): ``expert_observation`` (``"observation"``), ``expert_action``
    (``"action"``), ``collector_observation`` (``"collector_observation"``),
    ``collector_action`` (``"collector_action"``), ``discriminator_pred``
    (``"d_logits"``). Outputs: ``loss`` (TorchRL's name: not ``loss_*``) and, with the
    penalty, ``gp_loss``, its value cut from the graph (for logging).

    Notes
    -----
    As in TorchRL 0.14.1:

    - by default the prediction is read as a probability in ``[0, 1]``; a value outside
      gives NaN (TorchRL raises; arrayrl does not read values back to the host to check);
    - the penalty is a scalar added to every element before the reduction, so with
      ``reduction="sum"`` it counts once per element (``N·GP``) and with ``"none"`` every
      element carries it;
    - the interpolation weights ``u`` are drawn per element, not per sample, as float32
      uniforms (observation noise first, then action noise), cast to the inputs' dtype:
      on torch with torch's default generator these are TorchRL's draws.

    Unlike TorchRL (whose labels are float32), float64 inputs work; the batch may have
    any number of batch dims (TorchRL: one or two).
    """

    @dataclasses.dataclass
    class _AcceptedKeys:
        expert_action: Any = "action"
        expert_observation: Any = "observation"
        collector_action: Any = "collector_action"
        collector_observation: Any = "collector_observation"
        discriminator_pred: Any = "d_logits"

    def __init__(
        self,
        discriminator_network: Any,
        *,
        use_grad_penalty: bool = False,
        gp_lambda: float = 10,
        reduction: str | None = None,
        from_logits: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown_kwargs("GAILLoss", kwargs)
        super().__init__()
        self.use_grad_penalty = flag("use_grad_penalty", use_grad_penalty)
        self.gp_lambda = gp_lambda
        self.from_logits = flag("from_logits", from_logits)
        self.reduction = reduction
        self.seed = seed
        self.convert_to_functional(discriminator_network, "discriminator_network")

    @property
    def gp_lambda(self) -> float:
        """The gradient penalty's weight λ."""
        return self._gp_lambda

    @gp_lambda.setter
    def gp_lambda(self, value: Any) -> None:
        self._gp_lambda = coefficient("gp_lambda", value, allow_none=False)

    @property
    def in_keys(self) -> list[Any]:
        """The four pair keys and the discriminator's inputs, sorted as TorchRL's."""
        tk = self.tensor_keys
        keys = {
            *self.discriminator_network.in_keys,
            tk.expert_observation,
            tk.expert_action,
            tk.collector_observation,
            tk.collector_action,
        }
        return sorted(keys, key=str)

    @property
    def out_keys(self) -> list[str]:
        """``["loss"]``, and ``"gp_loss"`` with the penalty."""
        return ["loss", "gp_loss"] if self.use_grad_penalty else ["loss"]

    # -- the loss -----------------------------------------------------------------------------
    def forward(self, batch: Any, params: Mapping[str, Params] | None = None) -> ArrayDict:
        """``loss`` (and ``gp_loss``): the reduced ``ℓ + GP`` of the module docstring.

        Parameters
        ----------
        batch : ArrayDict or tensordict.TensorDict
            The expert's and the collector's observations and actions, with at least one
            batch dim.
        params : mapping, optional
            ``{"discriminator_network": tree}`` to compute with instead of the loss's own
            parameters (pure-function use).
        """
        batch = self.working_copy(batch)
        expert, collector = self._pairs(batch)
        disc_params = self.network_params("discriminator_network", params)
        expert_pred, collector_pred = self._discriminate_both(
            expert, collector, disc_params, tuple(batch.batch_size)
        )
        loss = self.cross_entropy(expert_pred, real=True) + self.cross_entropy(
            collector_pred, real=False
        )
        out = {}
        if self.use_grad_penalty:
            penalty = self.gradient_penalty(expert, collector, disc_params)
            loss = loss + penalty
            out["gp_loss"] = backend_of(penalty).stop_gradient(penalty)
        out["loss"] = self.reduce_loss(loss, batch)
        return ArrayDict(out)

    def cross_entropy(self, prediction: Any, *, real: bool) -> Any:
        """``−log D`` (``real``: the expert's label 1) or ``−log(1 − D)`` element-wise,
        each log clamped at -100; from the logit with ``from_logits``."""
        backend = backend_of(prediction)
        if self.from_logits:
            return backend.softplus(-prediction if real else prediction)
        xp = backend.xp
        log_p = xp.log(prediction if real else 1.0 - prediction)
        return -xp.clip(log_p, min=LOG_CLAMP)

    def gradient_penalty(
        self, expert: tuple[Any, Any], collector: tuple[Any, Any], params: Params
    ) -> Any:
        r"""``λ · mean((‖∇ Σ D(ŝ, â)‖ − 1)²)`` at per-element interpolations of the
        collector's and the expert's pairs (a scalar, differentiable in ``params``)."""
        backend = backend_of(expert[0])
        xp = backend.xp
        mixed = [
            self._interpolate(backend, mine, theirs)
            for mine, theirs in zip(collector, expert, strict=True)
        ]
        grad_obs, grad_act = backend.input_gradients(
            lambda obs, act: self._discriminate(obs, act, params), *mixed
        )
        grads = xp.concat([grad_obs, grad_act], axis=-1)
        norm = xp.linalg.vector_norm(grads, axis=-1)
        return self.gp_lambda * xp.mean((norm - 1.0) ** 2)

    def _interpolate(self, backend: Backend, collector: Any, expert: Any) -> Any:
        """``u·collector + (1 − u)·expert`` with ``u ~ U(0, 1)`` per element (float32
        draws, as TorchRL's ``Uniform(0., 1.)``, cast to the inputs' dtype)."""
        xp = backend.xp
        u = self.generator(backend).uniform(tuple(expert.shape), dtype=xp.float32)
        u = xp.astype(u, expert.dtype)
        return u * collector + (1.0 - u) * expert

    # -- the discriminator ---------------------------------------------------------------------
    def _discriminate(self, observation: Any, action: Any, params: Params) -> Any:
        """The discriminator's prediction for pairs handed to it under the expert keys."""
        tk = self.tensor_keys
        pairs = ArrayDict({tk.expert_observation: observation, tk.expert_action: action})
        out = self.discriminator_network(pairs, params)
        return self.read(out, tk.discriminator_pred)

    def _discriminate_both(
        self,
        expert: tuple[Any, Any],
        collector: tuple[Any, Any],
        params: Params,
        batch_size: tuple[int, ...],
    ) -> tuple[Any, Any]:
        """One discriminator call on the expert's pairs stacked over the collector's
        (along the first batch dim, as TorchRL), split back into the two predictions of
        shape ``[*batch_size, 1]``."""
        xp = backend_of(expert[0]).xp
        obs, act = (xp.concat([e, c], axis=0) for e, c in zip(expert, collector, strict=True))
        prediction = self._discriminate(obs, act, params)
        n = batch_size[0]
        self._check_prediction(prediction, (2 * n, *batch_size[1:], 1))
        return prediction[:n, ...], prediction[n:, ...]

    # -- checks -------------------------------------------------------------------------------
    def _pairs(self, batch: ArrayDict) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        """``((s^E, a^E), (s^C, a^C))`` read from the batch, checked."""
        tk = self.tensor_keys
        if len(batch.batch_size) == 0:
            raise ValueError(
                "GAILLoss needs a batch with at least one batch dim (the expert's and the "
                "collector's pairs are stacked along the first one)"
            )
        self.check_batch_backend(batch, tk.expert_observation)
        keys = (
            (tk.expert_observation, tk.expert_action),
            (tk.collector_observation, tk.collector_action),
        )
        expert, collector = (tuple(self.read(batch, key) for key in pair) for pair in keys)
        for (e_key, c_key), e, c in zip(zip(*keys), expert, collector):
            if tuple(e.shape) != tuple(c.shape):
                raise ValueError(
                    f"GAILLoss: the expert's {e_key!r} has shape {tuple(e.shape)} and the "
                    f"collector's {c_key!r} has shape {tuple(c.shape)}; they must match"
                )
        if self.use_grad_penalty:
            for key, value in zip((*keys[0], *keys[1]), (*expert, *collector)):
                floating_array(repr(key), value, owner="GAILLoss (use_grad_penalty=True)")
        return expert, collector

    def _check_prediction(self, prediction: Any, shape: tuple[int, ...]) -> None:
        key = self.tensor_keys.discriminator_pred
        if tuple(prediction.shape) != shape:
            raise ValueError(
                f"GAILLoss: the discriminator's prediction {key!r} has shape "
                f"{tuple(prediction.shape)}, expected {shape} (one score per pair, the "
                "expert's pairs stacked over the collector's)"
            )
        floating_array(repr(key), prediction, owner="GAILLoss")
