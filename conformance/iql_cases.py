"""The conformance cases of ``IQLLoss`` and ``DiscreteIQLLoss``.

An :class:`IQLCase` is an :class:`~.offpolicy_cases.OffPolicyCase` (same weights, Q
members stacked leaf-wise, perturbed targets, replay batch) with a state-value network
always present. The continuous actor is a ``TanhNormal`` policy, the discrete one a
``OneHotCategorical`` (one-hot actions) or a ``Categorical`` (index actions); the
continuous critic reads ``(observation, action)``, the discrete one ``observation`` and
writes one value per action under ``"state_action_value"``.

IQL draws nothing: every term uses the batch's actions, so TorchRL is compared with the
float64 reference, outputs and every ``loss_*`` gradient. TorchRL keeps a single critic
(``num_qvalue_nets=1``) as the module's own, unstacked, parameters; both sides load the
case's first member there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

from .loss_cases import (
    ACT,
    HIDDEN,
    LMBDA,
    LOSS_SEED,
    N_ACTIONS,
    OBS,
    Evaluation,
    LossInputs,
    NetSpec,
    torch_gradients,
)
from .loss_oracle import LossDeviation, call_torchrl, output_terms
from .offpolicy_cases import (
    PRIORITY_OUTPUT,
    OffPolicyCase,
    arrayrl_offpolicy_networks,
    evaluate_prepared_loss,
    prepare_offpolicy_loss,
)

IQL_LOSSES = ("IQLLoss", "DiscreteIQLLoss")


@dataclass(frozen=True)
class IQLCase(OffPolicyCase):
    """One IQL configuration: ``actor`` is ``"tanh_normal"`` (``IQLLoss``), ``"one_hot"``
    or ``"categorical"`` (``DiscreteIQLLoss``); ``members`` is ``num_qvalue_nets``."""

    value_network: bool = True

    @property
    def monte_carlo(self) -> bool:
        """IQL draws nothing."""
        return False

    def network_specs(self) -> dict[str, NetSpec]:
        """``actor``, ``qvalue`` (one member) and ``value`` MLPs."""
        if self.continuous:
            actor, critic = NetSpec(OBS, 2 * ACT, (HIDDEN,)), NetSpec(OBS + ACT, 1, (HIDDEN,))
        else:
            actor, critic = (NetSpec(OBS, N_ACTIONS, (HIDDEN,)),) * 2
        return {"actor": actor, "qvalue": critic, "value": NetSpec(OBS, 1, (HIDDEN,))}

    def loss_kwargs(self, spec: Any = None) -> dict[str, Any]:
        """The constructor's keyword arguments (the same for both libraries)."""
        kwargs = {**self.config, "num_qvalue_nets": self.members}
        if not self.continuous:
            kwargs["action_space"] = self.actor.replace("_", "-")
        return kwargs

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's outputs, the priority set in the batch, and on torch the gradients
        of every ``loss_*`` term (``generator_mode`` is unused: nothing is drawn)."""
        loss, params = _arrayrl_loss(self, inputs, backend, device)
        return evaluate_prepared_loss(self, loss, params, inputs, backend, device)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's outputs, the priority it sets in the batch and the gradients."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss, params = _torchrl_loss(self, inputs, dtype)
            batch, out = call_torchrl(loss, inputs)
        terms = output_terms(out)
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        if "entropy" in out.keys() and "entropy" not in outputs:  # scalar_output_mode="non_tensor"
            outputs["entropy"] = out.get_non_tensor("entropy").detach().numpy()
        outputs[PRIORITY_OUTPUT] = batch.get(loss.tensor_keys.priority).detach().numpy()
        return Evaluation(outputs, torch_gradients(terms, params))


def _first_member(case: IQLCase, inputs: LossInputs) -> LossInputs:
    """``inputs`` with a single critic's weights (and target) unstacked, as the loss
    holds them when ``num_qvalue_nets=1``."""
    if case.members != 1:
        return inputs
    weights = {**inputs.weights, "qvalue": {n: w[0] for n, w in inputs.weights["qvalue"].items()}}
    targets = dict(inputs.target_weights)
    if "qvalue" in targets:
        targets["qvalue"] = {n: w[0] for n, w in targets["qvalue"].items()}
    return LossInputs(weights, targets, inputs.batch, inputs.batch_size)


def _arrayrl_loss(
    case: IQLCase, inputs: LossInputs, backend: str, device: Any
) -> tuple[Any, dict[str, Any]]:
    """arrayrl's loss on ``backend`` holding the case's weights, and its trainable
    arrays by canonical name (``"<role>.<param>"``)."""
    from arrayrl.modules import DictModule
    from arrayrl.objectives.iql import DiscreteIQLLoss, IQLLoss

    modules, mlps = arrayrl_offpolicy_networks(case, inputs.weights)
    if not case.continuous:
        modules["qvalue"] = DictModule(
            mlps["qvalue"], in_keys=["observation"], out_keys=["state_action_value"]
        )
    cls = IQLLoss if case.continuous else DiscreteIQLLoss
    loss = cls(
        modules["actor"], modules["qvalue"], modules["value"], seed=LOSS_SEED, **case.loss_kwargs()
    )
    weights = _first_member(case, inputs)
    return loss, prepare_offpolicy_loss(case, loss, mlps, weights, backend, device)


def _torchrl_loss(case: IQLCase, inputs: LossInputs, dtype: str) -> tuple[Any, dict[str, Any]]:
    """TorchRL's loss holding the case's weights, members and targets, and its trainable
    parameters by canonical name."""
    import torch
    import torchrl.objectives as objectives
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ValueOperator
    from torchrl.objectives import ValueEstimators

    from .offpolicy_oracle import _actor, _load_members, _mlps, _tensor

    mlps = _mlps(case, inputs.weights, dtype)
    if case.continuous:
        critic = ValueOperator(mlps["qvalue"], in_keys=["observation", "action"])
    else:
        critic = TensorDictModule(mlps["qvalue"], ["observation"], ["state_action_value"])
    value = ValueOperator(mlps["value"], in_keys=["observation"])
    loss = getattr(objectives, case.loss)(
        _actor(case, mlps["actor"]), critic, value, **case.loss_kwargs()
    )
    name, hyperparams = case.estimator_kwargs()
    loss.make_value_estimator(getattr(ValueEstimators, name), **hyperparams)
    params = {
        f"{role}.{n}": p for role in ("actor", "value") for n, p in mlps[role].named_parameters()
    }
    if case.members > 1:
        params.update(_load_members(loss, inputs))
        return loss, params
    # one critic: the module's own parameters, and a target copy made at construction
    single = _first_member(case, inputs)
    targets = single.target_weights.get("qvalue", single.weights["qvalue"])
    params.update({f"qvalue.{n}": p for n, p in mlps["qvalue"].named_parameters()})
    with torch.no_grad():
        for key, leaf in loss.target_qvalue_network_params.items(True, True):
            name = ".".join(part for part in key if part != "module")
            leaf.data.copy_(_tensor(targets[name]))
    return loss, params


# -- the cases ---------------------------------------------------------------------------

_N, _BT = (32,), (4, 8)


def _case(loss: str, variant: str, **fields: Any) -> IQLCase:
    """A case named ``loss[actor,layout,members,variant]``."""
    case = IQLCase(name="", loss=loss, advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (case.actor, layout, f"{case.members}q", variant) if p)
    return replace(case, name=f"{loss}[{label}]")


def cases() -> list[IQLCase]:
    """IQL on ``[B]`` and ``[B, T]`` batches: expectiles, temperatures (up to the weight
    cap of 100), reductions, ensembles of 1-3, distances, masks, priority weights,
    TD(λ); discrete with one-hot and index actions."""
    iql, discrete = IQL_LOSSES
    q = ("qvalue",)
    tanh = "tanh_normal"
    none = {"reduction": "none", "scalar_output_mode": "exclude"}
    return [
        _case(iql, "", actor=tanh, perturbed_targets=q, core=True),
        _case(
            iql,
            "expectile=0.7,temperature=3,l2",
            actor=tanh,
            batch_shape=_BT,
            members=1,
            perturbed_targets=q,
            core=True,
            config={"expectile": 0.7, "temperature": 3.0, "loss_function": "l2"},
        ),
        _case(
            iql,
            "expectile=0.9,temperature=10,sum",
            actor=tanh,
            members=3,
            perturbed_targets=q,
            config={"expectile": 0.9, "temperature": 10.0, "reduction": "sum"},
        ),
        _case(
            iql,
            "priority_weight,none",
            actor=tanh,
            batch_shape=_BT,
            priority_weights=True,
            config={"expectile": 0.3, **none},
        ),
        _case(
            iql,
            "tensordict,collector_mask,td_lambda",
            actor=tanh,
            perturbed_targets=q,
            tensordict=True,
            masks=("collector",),
            estimator=("TDLambda", (("lmbda", LMBDA),)),
            config={"expectile": 0.8},
        ),
        _case(
            iql,
            "expectile=0.1,temperature=0,l1",
            actor=tanh,
            batch_shape=_BT,
            members=3,
            config={"expectile": 0.1, "temperature": 0.0, "loss_function": "l1"},
        ),
        _case(discrete, "", actor="one_hot", perturbed_targets=q, core=True),
        _case(
            discrete,
            "expectile=0.8,temperature=2",
            actor="categorical",
            batch_shape=_BT,
            members=1,
            perturbed_targets=q,
            core=True,
            config={"expectile": 0.8, "temperature": 2.0},
        ),
        _case(
            discrete,
            "sum,l2",
            actor="categorical",
            members=3,
            config={"reduction": "sum", "loss_function": "l2", "expectile": 0.6},
        ),
        _case(
            discrete,
            "priority_weight,none,non_tensor",
            actor="one_hot",
            batch_shape=_BT,
            priority_weights=True,
            perturbed_targets=q,
            config={"reduction": "none", "scalar_output_mode": "non_tensor", "temperature": 5.0},
        ),
    ]


def _iql(case: Any) -> bool:
    return case.loss in IQL_LOSSES


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-iql-float32-expectile-weights",
        applies=lambda case, dtype: _iql(case) and dtype == "float64",
        reason=(
            "TorchRL's IQLLoss.loss_value_diff builds the expectile weights with "
            "torch.where(diff > 0, expectile, 1 - expectile) on Python numbers, which "
            "torch makes float32 whatever the dtype of diff: on float64 inputs loss_value "
            "and its gradients carry float32 rounding of tau (~3e-8 relative). arrayrl's "
            "weights are in the inputs' dtype. No TorchRL issue found."
        ),
        tolerance=1e-5,
        covers=("loss_value",),
    ),
    LossDeviation(
        key="torchrl-iql-qvalue-ignores-loss-mask",
        applies=lambda case, dtype: case.loss == "IQLLoss" and bool(case.masks),
        reason=(
            "TorchRL 0.14.1's IQLLoss.qvalue_loss reduces loss_qvalue on a selection of the "
            "batch ('next', the actor's inputs, the action) that drops the loss masks "
            "(('collector', 'mask'), 'shifted_valid'), so padded or invalid steps enter the "
            "critic loss and its gradients (loss_actor and loss_value are masked; "
            "DiscreteIQLLoss masks all three). arrayrl masks loss_qvalue too. "
            "loss_qvalue and its gradients are not compared on masked batches. TorchRL's "
            "RFC on mask-aware reductions: pytorch/rl#3866."
        ),
        tolerance=None,
        covers=("loss_qvalue",),
        torchrl_issue="3866",
    ),
    LossDeviation(
        key="torchrl-iql-ignores-priority-weight",
        applies=lambda case, dtype: _iql(case) and case.priority_weights,
        reason=(
            "TorchRL 0.14.1's IQLLoss and DiscreteIQLLoss have no priority_weight key and "
            "reduce their losses unweighted (pytorch/rl PR #3235 gave the weights to other "
            "losses, not these); arrayrl weights every loss_* term by the batch's "
            "priority_weight (use_prioritized_weights=False restores TorchRL's). The loss_* "
            "terms and their gradients are not compared on weighted batches; entropy and "
            "td_error are. No TorchRL issue found."
        ),
        tolerance=None,
        covers=("loss_",),
    ),
)

__all__ = ["DEVIATIONS", "IQL_LOSSES", "IQLCase", "cases"]
