"""TorchRL's loss modules as the oracle of the loss cases, and the places where arrayrl's
losses deliberately differ from them.

The TorchRL networks are built from ``torchrl.modules.MLP`` (whose parameter names,
``"0.weight"``, ..., are those of arrayrl's MLP), ``tensordict.nn.TensorDictModule`` /
``NormalParamExtractor`` and ``ProbabilisticActor`` / ``ValueOperator``; they load the
case's weights with ``load_state_dict``. The loss gets the case's keyword arguments and
a ``TensorDict`` of the case's batch.

Monte-Carlo cases (the entropy of a TanhNormal, which has no closed form): TorchRL
draws from torch's global generator, so :func:`torchrl_loss_evaluation` seeds it with
``torch.manual_seed(LOSS_SEED)`` (inside ``torch.random.fork_rng``). ``Normal.rsample``
then draws exactly what ``torch.randn(shape,
generator=torch.Generator().manual_seed(LOSS_SEED))`` draws (checked bit for bit, float32
and float64), which is what arrayrl's loss draws on torch with its native generator. The
runner compares TorchRL there with that twin (arrayrl on torch, same dtype, same noise)
instead of the reference, whose noise comes from NumPy so that every arrayrl backend
draws the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .loss_cases import (
    ACTORS,
    GAMMA,
    LMBDA,
    LOSS_SEED,
    TARGET_NETWORKS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    torch_gradients,
)
from .oracle import Deviation


@dataclass(frozen=True)
class LossDeviation(Deviation):
    """A :class:`~.oracle.Deviation` of the loss cases that may cover only some outputs:
    ``covers`` holds prefixes of the output and gradient names (``"loss_objective/"``:
    the gradients of ``loss_objective``); empty covers everything."""

    covers: tuple[str, ...] = ()

    def covers_key(self, key: str) -> bool:
        """Whether this deviation applies to output or gradient ``key``."""
        return not self.covers or key.startswith(self.covers)


def _beta_adapts(case: LossCase) -> bool:
    """Whether KL-PEN's beta can change in the call (TorchRL's default 2 and 0.5)."""
    config = case.config
    return config.get("increment", 2.0) != 1.0 or config.get("decrement", 0.5) != 1.0


def _weighted(loss: str) -> Any:
    """Whether a case is ``loss`` with a batch ``priority_weight``."""
    return lambda case, dtype: case.loss == loss and getattr(case, "priority_weights", False)


#: The losses whose ``ESS`` / ``explained_variance`` follow arrayrl's all-batch-dims rule.
_PPO_FAMILY = ("PPOLoss", "ClipPPOLoss", "KLPENPPOLoss", "MAPPOLoss", "IPPOLoss")


def _multi_dim_ppo_batch(case: Any, dtype: str) -> bool:
    """A PPO-family case whose batch has more than one dim (``[B, T]``, ``[B, T, agents]``)."""
    return getattr(case, "loss", None) in _PPO_FAMILY and len(getattr(case, "batch_shape", ())) > 1


def _inexact_td3_bounds(case: LossCase, dtype: str) -> bool:
    """TD3 on float64 with bounds that float32 does not hold exactly."""
    bounds = case.config.get("bounds", ())
    return (
        case.loss == "TD3Loss"
        and dtype == "float64"
        and any(float(np.float32(b)) != b for b in bounds)
    )


LOSS_DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-float32-constants",
        applies=lambda case, dtype: dtype == "float64",
        reason=(
            "On float64 inputs TorchRL's losses round some constants to float32: the "
            "coefficients (entropy_coeff, clip_epsilon, clip_value, beta, ...) are float32 "
            "buffers, tensordict's NormalParamExtractor computes its softplus shift with "
            "torch.tensor(float) (float32), and GAE builds its discounts as gamma * int_mask "
            "in float32 (torchrl-float32-masks). Outputs and gradients differ from a float64 "
            "evaluation by ~1e-8 relative, up to 5e-7 for gradients summed over a batch and "
            "8 GAE steps. arrayrl keeps every constant in the inputs' dtype."
        ),
        tolerance=1e-5,
    ),
    LossDeviation(
        key="torchrl-klpen-inplace-beta",
        applies=lambda case, dtype: case.loss == "KLPENPPOLoss" and _beta_adapts(case),
        reason=(
            "TorchRL's KLPENPPOLoss.forward adapts beta in place (self.beta.data *= "
            "increment) after beta * kl entered the graph; autograd saved beta by reference "
            "and .data bypasses the version check, so backward uses the adapted beta while the "
            "returned loss_objective used the previous one. arrayrl differentiates the value "
            "it returns. The gradients of loss_objective are compared only in the cases where "
            "beta stays fixed (increment = decrement = 1)."
        ),
        tolerance=None,
        covers=("loss_objective/",),
    ),
    LossDeviation(
        key="torchrl-redq-ignores-priority-weight",
        applies=_weighted("REDQLoss"),
        reason=(
            "TorchRL 0.14.1's REDQLoss has no priority_weight key and reduces its losses "
            "unweighted; arrayrl weights them by the batch's priority_weight, broadcast "
            "over the critic axis (use_prioritized_weights=False restores TorchRL's). The "
            "loss_* terms and their gradients are not compared on weighted batches; every "
            "other output (td_error, targets, alpha, entropy) is."
        ),
        tolerance=None,
        covers=("loss_",),
    ),
    LossDeviation(
        key="torchrl-crossq-ignores-priority-weight",
        applies=_weighted("CrossQLoss"),
        reason=(
            "TorchRL 0.14.1's CrossQLoss has no priority_weight key and reduces its losses "
            "unweighted; arrayrl weights them by the batch's priority_weight "
            "(use_prioritized_weights=False restores TorchRL's). The loss_* terms and their "
            "gradients are not compared on weighted batches; every other output is."
        ),
        tolerance=None,
        covers=("loss_",),
    ),
    LossDeviation(
        key="torchrl-td3-float32-bounds",
        applies=_inexact_td3_bounds,
        reason=(
            "TorchRL's TD3Loss stores Python-float bounds as float32 buffers, so on float64 "
            "actions it clamps the smoothed target action at 0.30000001192... for 0.3; "
            "arrayrl clamps at the bound given. Targets and losses move by ~1e-8."
        ),
        tolerance=1e-5,
    ),
    LossDeviation(
        key="torchrl-ppo-diagnostics-first-dim",
        applies=_multi_dim_ppo_batch,
        reason=(
            "TorchRL 0.14.1's PPO losses reduce only dim 0 of the batch for two "
            "diagnostics: ClipPPOLoss's ESS is logsumexp over dim 0 (shape [T] for a [B, T] "
            "batch, [T, agents] for MAPPO's [B, T, agents]) and explained_variance is "
            "torch.var(..., dim=0) (shape [T, 1], [T, agents, 1]), so a logged number depends "
            "on how the batch is laid out. arrayrl reduces over every batch dim: ESS = "
            "exp(2 LSE(log w) - LSE(2 log w)) / N over all N samples (a scalar) and "
            "explained_variance = 1 - Var(target - V) / (Var(target) + eps) with the "
            "variances over every dim but the last (shape [1]). Both agree on a 1-D batch; "
            "on multi-dim batches these two keys are not compared here (tests/test_ppo.py "
            "checks them against the flat float64 NumPy formulas). No "
            "TorchRL issue reports it (searched); pytorch/rl PR #3936 changes ESS's dims for "
            "singleton minibatches only."
        ),
        tolerance=None,
        covers=("ESS", "explained_variance"),
    ),
    LossDeviation(
        key="torchrl-value-norm-empty-batch",
        applies=lambda case, dtype: False,
        reason=(
            "An advantage_norm (or MAPPO value_norm) update on a batch whose rows are all "
            "masked out: TorchRL 0.14.1's PopArtValueNorm and RunningValueNorm fold in the "
            "NaN mean and variance of the empty selection, so every later scale() is NaN; "
            "its PercentileValueNorm raises in torch.quantile. arrayrl's normalisers leave "
            "their statistics as they were (an empty batch carries no information). No case "
            "here masks a whole batch; tests/test_advantage_norm.py shows both behaviours. "
            "No TorchRL issue reports it (searched)."
        ),
        tolerance=None,
    ),
    LossDeviation(
        key="torchrl-analytic-entropy-finiteness-fallback",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's PPO _get_entropy replaces a closed-form entropy that is not finite "
            "everywhere by a Monte-Carlo estimate; the test reads the tensor on the host "
            "(a device synchronisation per call). arrayrl always uses the closed form "
            "where one exists. No case here has a non-finite closed-form entropy (scales "
            "are bounded below by NormalParamExtractor's scale_lb), so the difference is "
            "recorded, not measured."
        ),
        tolerance=None,
    ),
)


def loss_deviations_for(case: LossCase, dtype: str) -> list[LossDeviation]:
    """The recorded deviations that apply to loss ``case`` at ``dtype``."""
    return [d for d in all_loss_deviations() if d.applies(case, dtype)]


def all_loss_deviations() -> tuple[LossDeviation, ...]:
    """:data:`LOSS_DEVIATIONS` and those of the family modules (:mod:`.families`)."""
    from .families import family_modules

    return (*LOSS_DEVIATIONS, *(d for m in family_modules() for d in m.DEVIATIONS))


def never_measured(case: Any, dtype: str) -> bool:
    """``applies`` of a deviation that no case measures: recorded for the record (TorchRL
    raises there, or arrayrl does; the tests show it)."""
    return False


def _torch_dtype(dtype: str) -> Any:
    """The torch dtype called ``dtype``."""
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _distribution_class(case: LossCase) -> type:
    """TorchRL's class for the case's actor (torch's own ``Categorical`` and ``Normal``)."""
    import torch
    import torchrl.modules as modules

    name, _ = ACTORS[case.actor]
    if name in ("Categorical", "Normal"):
        return getattr(torch.distributions, name)
    return getattr(modules, name)


def torchrl_mlp(spec: NetSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32") -> Any:
    """TorchRL's ``MLP`` of ``spec`` (tanh activations) in ``dtype``, holding ``weights``
    (``torch.nn.Sequential``'s names, as arrayrl's ``MLP`` writes them)."""
    from torchrl.modules import MLP

    mlp = MLP(
        in_features=spec.in_features,
        out_features=spec.out_features,
        num_cells=list(spec.num_cells),
        activate_last_layer=spec.activate_last_layer,
    ).to(_torch_dtype(dtype))
    mlp.load_state_dict(_to_torch(weights))
    return mlp


def torchrl_networks(
    case: LossCase, weights: Mapping[str, Mapping[str, np.ndarray]], dtype: str
) -> tuple[Any, Any, dict[str, Any]]:
    """``(actor, critic, MLPs by role)``: TorchRL's modules holding ``weights``."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
    from torchrl.modules import ProbabilisticActor, ValueOperator

    mlps = {
        role: torchrl_mlp(spec, weights[role], dtype) for role, spec in case.network_specs().items()
    }
    features = "hidden" if case.shared_trunk else "observation"
    trunk = (
        [TensorDictModule(mlps["trunk"], ["observation"], [features])] if case.shared_trunk else []
    )
    dist_keys = ["loc", "scale"] if case.continuous else ["logits"]
    head = (
        torch.nn.Sequential(mlps["actor"], NormalParamExtractor())
        if case.continuous
        else mlps["actor"]
    )
    actor_module = TensorDictSequential(*trunk, TensorDictModule(head, [features], dist_keys))
    actor = ProbabilisticActor(
        actor_module,
        in_keys=dist_keys,
        distribution_class=_distribution_class(case),
        distribution_kwargs=dict(ACTORS[case.actor][1]),
        return_log_prob=True,
    )
    value_head = TensorDictModule(mlps["critic"], [features], ["state_value"])
    critic = (
        TensorDictSequential(*trunk, value_head)
        if case.shared_trunk
        else ValueOperator(mlps["critic"], in_keys=["observation"])
    )
    return actor, critic, mlps


def _load_targets(
    loss: Any, mlps: Mapping[str, Any], targets: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Overwrite the target copies of the roles in ``targets``."""
    import torch

    names = {
        id(p): (role, name) for role, mlp in mlps.items() for name, p in mlp.named_parameters()
    }
    for role, weights in targets.items():
        network = TARGET_NETWORKS[role]
        params = getattr(loss, f"{network}_params")
        target = getattr(loss, f"target_{network}_params")
        for key, leaf in params.items(include_nested=True, leaves_only=True):
            owner, name = names[id(leaf)]
            if owner == role:
                target.get(key).data.copy_(torch.from_numpy(np.array(weights[name])))


def _to_torch(tree: Any) -> Any:
    """Nested dicts of NumPy arrays as nested dicts of CPU tensors (copies)."""
    import torch

    if isinstance(tree, Mapping):
        return {k: _to_torch(v) for k, v in tree.items()}
    return torch.from_numpy(np.array(tree))


def torchrl_loss(case: LossCase, inputs: LossInputs, dtype: str) -> tuple[Any, dict[str, Any]]:
    """TorchRL's loss for ``case`` and its parameters by canonical name."""
    import torchrl.objectives as objectives
    from torchrl.objectives import ValueEstimators

    actor, critic, mlps = torchrl_networks(case, inputs.weights, dtype)
    loss = getattr(objectives, case.loss)(actor, critic, **case.config)
    loss.make_value_estimator(ValueEstimators.GAE, gamma=GAMMA, lmbda=LMBDA)
    _load_targets(loss, mlps, inputs.target_weights)
    params = {
        f"{role}.{name}": p for role, mlp in mlps.items() for name, p in mlp.named_parameters()
    }
    return loss, params


def torchrl_loss_evaluation(case: LossCase, inputs: LossInputs, dtype: str) -> Evaluation:
    """TorchRL's outputs and ``loss_*`` gradients on the case's inputs (CPU)."""

    if hasattr(case, "evaluate_torchrl"):  # a family with its own networks and batch
        return case.evaluate_torchrl(inputs, dtype)
    if getattr(case, "off_policy", False):  # SAC, TD3, ...: their own networks and batch
        from .offpolicy_oracle import torchrl_offpolicy_evaluation

        return torchrl_offpolicy_evaluation(case, inputs, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, params = torchrl_loss(case, inputs, dtype)
        _, out = call_torchrl(loss, inputs)
    terms = output_terms(out)
    outputs = {key: value.detach().numpy() for key, value in terms.items()}
    if case.loss == "KLPENPPOLoss":
        outputs["beta"] = loss.beta.detach().numpy()
    return Evaluation(outputs, torch_gradients(terms, params))


def call_torchrl(loss: Any, inputs: LossInputs) -> tuple[Any, Any]:
    """Run a TorchRL ``loss`` on the case's batch (a ``TensorDict``) after
    ``torch.manual_seed(LOSS_SEED)``, inside ``fork_rng`` (the global generator is left
    as it was); returns the batch (which TorchRL may have written into) and the output."""
    import torch
    from tensordict import TensorDict

    batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LOSS_SEED)
        out = loss(batch)
    return batch, out


def output_terms(out: Any) -> dict[str, Any]:
    """Every tensor leaf of a TorchRL output by flat name (``"next.state_value"``)."""
    return {_key_name(k): v for k, v in out.items(include_nested=True, leaves_only=True)}


def _key_name(key: Any) -> str:
    """A TensorDict key as a flat name."""
    return ".".join(key) if isinstance(key, tuple) else key
