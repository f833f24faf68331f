r"""Conformance cases of ``GAILLoss``.

The discriminator is an MLP over the concatenated observation and action (one hidden
layer of :data:`~.loss_cases.HIDDEN` tanh cells, one output) followed by a sigmoid, so it
writes the probability ``D(s, a)`` at ``"d_logits"`` as TorchRL's ``BCELoss`` expects
(TorchRL's contract, which arrayrl follows by default). ``from_logits`` cases give arrayrl
the MLP without the sigmoid and ``from_logits=True`` (arrayrl's option), and TorchRL the
same MLP with the sigmoid: both compute the same cross-entropy.

The batch holds the expert's ``observation`` / ``action`` and the collector's
``collector_observation`` / ``collector_action`` (standard normal, the collector's
shifted), flat ``[32]`` or ``[4, 8]``, optionally with a collector mask. Outputs:
``loss`` and, with the gradient penalty, ``gp_loss``; gradients of ``loss`` with respect
to every discriminator parameter.

The penalty draws its interpolation weights: per element, observation noise then action
noise, as float32 uniforms cast to the inputs' dtype. With NumPy-sourced noise
(``generator_mode="numpy"``, the loss seeded with :data:`~.loss_cases.LOSS_SEED`) they are
``default_rng(LOSS_SEED).uniform(0, 1, shape)`` rounded to float32; on torch with its
native generator they are TorchRL's draws after ``torch.manual_seed(LOSS_SEED)``, and the
runner compares TorchRL with that twin.

The penalty needs gradients with respect to the inputs kept for a second backward, which
only torch and JAX have (``Backend.input_gradients``). For a penalty case the float64
reference is therefore the GAIL loss written out in NumPy here
(:func:`numpy_gail_outputs`, with the MLP's input gradient derived by hand), and a
penalty case names torch and JAX as its only backends (:attr:`GAILCase.backends`): the
runner does not run it elsewhere. That NumPy, array-api-strict and CuPy refuse the
penalty with ``NotImplementedError`` naming the backend is a test in
``tests/test_gail.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from arrayrl.backends import backend_of

from arrayrl.modules import Sigmoid

from .loss_cases import (
    ACT,
    HIDDEN,
    LOSS_SEED,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    arrayrl_batch,
)
from .loss_oracle import LossDeviation, _to_torch, never_measured, torchrl_mlp

__all__ = ["DEVIATIONS", "GAILCase", "cases", "numpy_gail_outputs"]

#: the backends whose arrays have input gradients (the penalty runs there)
INPUT_GRADIENT_BACKENDS = ("torch", "jax")
PAIR_KEYS = ("observation", "action", "collector_observation", "collector_action")


@dataclass(frozen=True)
class GAILCase(LossCase):
    """One ``GAILLoss`` configuration; ``config`` holds the constructor's keyword
    arguments (``use_grad_penalty``, ``gp_lambda``, ``reduction``, ``from_logits``)."""

    @property
    def penalty(self) -> bool:
        return bool(self.config.get("use_grad_penalty", False))

    @property
    def from_logits(self) -> bool:
        return bool(self.config.get("from_logits", False))

    @property
    def monte_carlo(self) -> bool:
        """The penalty draws its interpolation weights."""
        return self.penalty

    def numpy_reference(self, inputs: LossInputs) -> Evaluation:
        """The outputs of the GAIL loss written out in NumPy (:func:`numpy_gail_outputs`),
        the reference of every GAIL case (NumPy cannot run the penalty)."""
        return Evaluation(numpy_gail_outputs(self, inputs))

    @property
    def backends(self) -> tuple[str, ...] | None:
        """The backends that run this case: the penalty's only (``None``: all)."""
        return INPUT_GRADIENT_BACKENDS if self.penalty else None

    def network_specs(self) -> dict[str, NetSpec]:
        return {"discriminator": NetSpec(OBS + ACT, 1, (HIDDEN,))}

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The discriminator's weights and a batch of expert and collector pairs."""
        rng = np.random.default_rng([seed, 21])
        weights = {"discriminator": _mlp_weights(self.network_specs()["discriminator"], seed)}
        shape = self.batch_shape
        batch: dict[str, Any] = {
            "observation": rng.standard_normal((*shape, OBS)),
            "action": rng.uniform(-1.0, 1.0, (*shape, ACT)),
            "collector_observation": 0.5 + rng.standard_normal((*shape, OBS)),
            "collector_action": rng.uniform(-0.5, 1.0, (*shape, ACT)),
        }
        if "collector" in self.masks:
            mask = rng.random(shape) < 0.75
            mask.flat[0] = True
            batch["collector"] = {"mask": mask}
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    # -- arrayrl ------------------------------------------------------------------------------
    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's ``loss`` (and ``gp_loss``) and, on torch, the gradients of ``loss``."""
        loss, mlp = self.arrayrl_loss(inputs, backend, device, generator_mode)
        batch = arrayrl_batch(self, inputs, backend, device)
        out = loss(batch)
        terms = {key: out.get(key) for key in loss.out_keys}
        outputs = {key: _host(value, backend_of(value)) for key, value in terms.items()}
        if backend != "torch":
            return Evaluation(outputs)
        params = {f"discriminator.{k}": v for k, v in _flat(mlp.params).items()}
        return Evaluation(outputs, loss_gradients(terms["loss"], params))

    def arrayrl_loss(
        self, inputs: LossInputs, backend: str, device: Any, generator_mode: str
    ) -> tuple[Any, Any]:
        """arrayrl's ``GAILLoss`` over the case's discriminator, on ``backend``, and the
        discriminator's MLP."""
        from arrayrl.modules import MLP, DictModule, Sequential, unflatten_params
        from arrayrl.objectives.gail import GAILLoss

        weights = inputs.weights["discriminator"]
        spec = self.network_specs()["discriminator"]
        dtype = next(iter(weights.values())).dtype
        mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells), dtype=dtype)
        mlp.params = unflatten_params(dict(weights))
        head = mlp if self.from_logits else Sequential(mlp, Sigmoid())
        discriminator = DictModule(head, in_keys=["observation", "action"], out_keys=["d_logits"])
        loss = GAILLoss(discriminator, seed=LOSS_SEED, **self.config)
        loss.generator_mode = generator_mode
        loss.to(backend, device)
        return loss, mlp

    # -- TorchRL ------------------------------------------------------------------------------
    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's outputs and gradients of ``loss``, after ``torch.manual_seed(LOSS_SEED)``.
        TorchRL runs in float32 only (its labels are float32): float64 inputs are rounded
        (deviation ``torchrl-gail-float32-labels``)."""
        import torch
        from tensordict import TensorDict
        from tensordict.nn import TensorDictModule, TensorDictSequential
        from torchrl.objectives import GAILLoss

        inputs = inputs.astype(np.float32)
        mlp = torchrl_mlp(self.network_specs()["discriminator"], inputs.weights["discriminator"])
        discriminator = TensorDictSequential(
            TensorDictModule(mlp, ["observation", "action"], ["logit"]),
            TensorDictModule(torch.nn.Sigmoid(), ["logit"], ["d_logits"]),
        )
        config = {k: v for k, v in self.config.items() if k != "from_logits"}
        loss = GAILLoss(discriminator, **config)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOSS_SEED)
            out = loss(batch)
        terms = {key: out.get(key) for key in loss.out_keys}
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        params = {f"discriminator.{k}": p for k, p in mlp.named_parameters()}
        return Evaluation(outputs, loss_gradients(terms["loss"], params))


def _flat(tree: Any) -> dict[str, Any]:
    from arrayrl.modules import flatten_params

    return flatten_params(tree)


def loss_gradients(loss: Any, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"loss/<param>": d sum(loss) / d param}`` (torch; TorchRL names its term
    ``loss``, which :func:`~.loss_cases.torch_gradients` does not take)."""
    import torch

    names, leaves = list(params), list(params.values())
    found = torch.autograd.grad(loss.sum(), leaves, retain_graph=True, allow_unused=True)
    return {
        f"loss/{name}": (torch.zeros_like(leaf) if g is None else g).detach().cpu().numpy()
        for name, leaf, g in zip(names, leaves, found)
    }


# -- the NumPy formulas ---------------------------------------------------------------------------
def numpy_gail_outputs(case: GAILCase, inputs: LossInputs) -> dict[str, np.ndarray]:
    r"""``loss`` (and ``gp_loss``) in float64 NumPy from the module docstring of
    :mod:`arrayrl.objectives.gail`: ``D = σ(W₂ tanh(W₁ x + b₁) + b₂)`` (or its logit), its
    input gradient ``∂ΣD/∂x = σ'(z) · (W₂ ⊙ (1 − h²)) W₁``, the interpolation weights
    ``default_rng(LOSS_SEED).uniform`` rounded to float32, and the reduction over the
    collector mask."""
    inputs = inputs.as_float64()
    w = inputs.weights["discriminator"]
    b = inputs.batch
    expert = np.concatenate([b["observation"], b["action"]], axis=-1)
    collector = np.concatenate([b["collector_observation"], b["collector_action"]], axis=-1)
    loss = _numpy_bce(case, w, expert, real=True) + _numpy_bce(case, w, collector, real=False)
    outputs = {}
    if case.penalty:
        rng = np.random.default_rng(LOSS_SEED)
        u = [
            rng.uniform(0.0, 1.0, b[key].shape).astype(np.float32).astype(np.float64)
            for key in ("observation", "action")
        ]
        mixed = np.concatenate(
            [u[0] * b["collector_observation"] + (1 - u[0]) * b["observation"],
             u[1] * b["collector_action"] + (1 - u[1]) * b["action"]],
            axis=-1,
        )  # fmt: skip
        norm = np.linalg.norm(_numpy_input_gradient(case, w, mixed), axis=-1)
        gp = case.config.get("gp_lambda", 10) * np.mean((norm - 1.0) ** 2)
        loss = loss + gp
        outputs["gp_loss"] = np.asarray(gp)
    outputs["loss"] = _numpy_reduce(loss, b, case.config.get("reduction", "mean"))
    return outputs


def _numpy_forward(w: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The MLP's hidden activations ``h`` and its output ``z`` (``[..., 1]``)."""
    h = np.tanh(x @ w["0.weight"].T + w["0.bias"])
    return h, h @ w["2.weight"].T + w["2.bias"]


def _numpy_bce(case: GAILCase, w: dict[str, np.ndarray], x: np.ndarray, real: bool) -> np.ndarray:
    """``−log D`` or ``−log(1 − D)`` (logs clamped at -100) per pair, ``[..., 1]``."""
    z = _numpy_forward(w, x)[1]
    if case.from_logits:
        return np.logaddexp(0.0, -z if real else z)
    p = 1.0 / (1.0 + np.exp(-z))
    return -np.maximum(np.log(p if real else 1.0 - p), -100.0)


def _numpy_input_gradient(case: GAILCase, w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``∂ Σ D / ∂x`` per pair: the chain rule through the sigmoid (when the output is a
    probability), the output layer, the tanh and the hidden layer."""
    h, z = _numpy_forward(w, x)
    p = 1.0 / (1.0 + np.exp(-z))
    outer = np.ones_like(z) if case.from_logits else p * (1.0 - p)  # [..., 1]
    hidden = outer * w["2.weight"][0] * (1.0 - h * h)  # [..., HIDDEN]
    return hidden @ w["0.weight"]


def _numpy_reduce(loss: np.ndarray, batch: dict[str, Any], reduction: str) -> np.ndarray:
    """Mean over the valid elements (the collector mask, broadcast over the trailing
    unit axis), their sum, or every element with the invalid ones zeroed."""
    mask = batch.get("collector", {}).get("mask")
    valid = (
        np.ones(loss.shape, bool) if mask is None else np.broadcast_to(mask[..., None], loss.shape)
    )
    loss = np.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    return np.asarray(loss.sum() / max(valid.sum(), 1))


# -- the cases ------------------------------------------------------------------------------------
_BT = (4, 8)


def _gail_case(variant: str, **fields: Any) -> GAILCase:
    """A case named ``GAILLoss[layout,variant]``."""
    case = GAILCase(name="", loss="GAILLoss", actor="", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (layout, variant) if p)
    return replace(case, name=f"GAILLoss[{label}]")


def cases() -> list[GAILCase]:
    """Probabilities and logits, flat and ``[B, T]`` batches, every reduction, a collector
    mask, TensorDict batches, with and without the gradient penalty."""
    gp = {"use_grad_penalty": True}
    return [
        _gail_case("", core=True),
        _gail_case("sum", batch_shape=_BT, config={"reduction": "sum"}, core=True),
        _gail_case("none,collector_mask", masks=("collector",), config={"reduction": "none"}),
        _gail_case("collector_mask,tensordict", batch_shape=_BT, masks=("collector",),
                   tensordict=True),
        _gail_case("from_logits", config={"from_logits": True}),
        _gail_case("penalty", config=gp, core=True),
        _gail_case("penalty,sum", batch_shape=_BT, config={**gp, "reduction": "sum"}, core=True),
        _gail_case("penalty,none,collector_mask", masks=("collector",),
                   config={**gp, "reduction": "none"}),
        _gail_case("penalty,gp_lambda=2.5", batch_shape=_BT, config={**gp, "gp_lambda": 2.5}),
        _gail_case("penalty,from_logits", config={**gp, "from_logits": True}),
        _gail_case("penalty,tensordict", tensordict=True, config=gp),
    ]  # fmt: skip


# -- deviations -----------------------------------------------------------------------------------
def _float64(case: Any, dtype: str) -> bool:
    return isinstance(case, GAILCase) and dtype == "float64"


def _penalised_logits(case: Any, dtype: str) -> bool:
    return isinstance(case, GAILCase) and case.penalty and case.from_logits


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-gail-float32-labels",
        applies=_float64,
        reason=(
            "TorchRL 0.14.1's GAILLoss builds its BCE labels as float32 tensors, so "
            "nn.BCELoss raises ('Found dtype Float but expected Double') on float64 "
            "predictions. arrayrl builds no label arrays (the label is the sign of the "
            "term) and runs in the inputs' dtype. The oracle runs TorchRL on the float32 "
            "rounding of the float64 inputs and compares with arrayrl's float64 result at "
            "float32 accuracy. No TorchRL issue found (searched)."
        ),
        tolerance=1e-4,
    ),
    LossDeviation(
        key="arrayrl-gail-from-logits-penalty",
        applies=_penalised_logits,
        reason=(
            "from_logits=True is arrayrl's option (TorchRL 0.14.1 reads probabilities at "
            "'d_logits', with nn.BCELoss). The cross-entropy is the same as TorchRL's on the "
            "sigmoid of the logit (compared in the from_logits cases without the penalty), "
            "but the gradient penalty then differentiates the logit, where TorchRL's can "
            "only differentiate the probability: nothing in TorchRL computes it. Not "
            "compared with TorchRL; arrayrl's backends are compared with the NumPy formulas "
            "(numpy_gail_outputs). Not a TorchRL bug, so no issue."
        ),
        tolerance=None,
    ),
    LossDeviation(
        key="torchrl-gail-prediction-range",
        applies=never_measured,
        reason=(
            "With probabilities (the default, TorchRL's contract), TorchRL's nn.BCELoss "
            "raises on a prediction outside [0, 1]; arrayrl returns NaN there, as it reads "
            "no values back to the host to check (from_logits=True takes logits). No case "
            "feeds such a value. No TorchRL issue found (searched)."
        ),
        tolerance=None,
    ),
    LossDeviation(
        key="torchrl-gail-batch-dims",
        applies=never_measured,
        reason=(
            "TorchRL 0.14.1's GAILLoss unpacks the batch shape as [B] or [B, T] and raises "
            "for three or more batch dims; arrayrl takes any number (labels shaped "
            "[*batch, 1]). Not measured: TorchRL raises. No TorchRL issue found (searched)."
        ),
        tolerance=None,
    ),
)
