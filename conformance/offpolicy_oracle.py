"""TorchRL's off-policy losses as the oracle of the :mod:`.offpolicy_cases`.

The networks are TorchRL's (``torchrl.modules.MLP``, ``ProbabilisticActor`` with
``TanhNormal`` / ``TanhDelta`` / ``OneHotCategorical`` / torch's ``Categorical``,
``Actor``, ``ValueOperator``, ``TensorDictModule``; CrossQ's critic an MLP with
``norm_class=BatchRenorm1d``) loaded with the case's weights. TorchRL draws a Q
ensemble's members at construction; the case's stacked members are then copied into the
loss's ``qvalue_network_params`` (TorchRL's names are the module's with a leading member
axis: ``module.0.weight``), and the perturbed target copies into ``target_*_params``, so
both libraries compute with the same members and targets. The loss runs after
``torch.manual_seed(LOSS_SEED)`` (inside ``torch.random.fork_rng``); the runner compares
it with arrayrl on torch drawing from a ``torch.Generator`` seeded alike (the draws are
made in TorchRL's order and shapes), so the random terms are compared too.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from .loss_cases import ACT, Evaluation, LossInputs, torch_gradients
from .loss_oracle import call_torchrl, output_terms
from .offpolicy_cases import PRIORITY_OUTPUT, RENORM, OffPolicyCase


def _torch_dtype(dtype: str) -> Any:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def _tensor(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.array(x))


def _mlps(case: OffPolicyCase, weights: Mapping[str, Mapping[str, np.ndarray]],
          dtype: str) -> dict[str, Any]:
    """TorchRL MLPs per role holding the case's weights (a Q ensemble's first member)."""
    import torch
    from torchrl.modules import MLP, BatchRenorm1d

    mlps = {}
    for role, spec in case.network_specs().items():
        extra: dict[str, Any] = {}
        if role == "qvalue" and case.loss == "CrossQLoss":
            extra = {"activation_class": torch.nn.ReLU, "norm_class": BatchRenorm1d,
                     "norm_kwargs": {"num_features": spec.num_cells[0], **RENORM}}
        mlp = MLP(in_features=spec.in_features, out_features=spec.out_features,
                  num_cells=list(spec.num_cells), activate_last_layer=spec.activate_last_layer,
                  **extra).to(_torch_dtype(dtype))
        ensemble = role == "qvalue" and case.members
        state = {n: _tensor(w[0] if ensemble else w) for n, w in weights[role].items()}
        mlp.load_state_dict({**mlp.state_dict(), **state})
        mlps[role] = mlp
    return mlps


def _actor(case: OffPolicyCase, mlp: Any) -> Any:
    """The case's actor in TorchRL's modules."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import Actor, OneHotCategorical, ProbabilisticActor, TanhDelta, TanhNormal

    if case.actor == "deterministic":
        return Actor(mlp, in_keys=["observation"])
    if case.actor == "tanh_normal":
        module = TensorDictModule(torch.nn.Sequential(mlp, NormalParamExtractor()),
                                  ["observation"], ["loc", "scale"])
        return ProbabilisticActor(module, in_keys=["loc", "scale"],
                                  distribution_class=TanhNormal, return_log_prob=True)
    if case.actor == "tanh_delta":
        return ProbabilisticActor(
            TensorDictModule(mlp, ["observation"], ["param"]), in_keys=["param"],
            distribution_class=TanhDelta, distribution_kwargs={"low": -1.0, "high": 1.0},
        )
    distribution = OneHotCategorical if case.actor == "one_hot" else torch.distributions.Categorical
    return ProbabilisticActor(TensorDictModule(mlp, ["observation"], ["logits"]),
                              in_keys=["logits"], distribution_class=distribution,
                              return_log_prob=True)


def _networks(case: OffPolicyCase, mlps: Mapping[str, Any]) -> list[Any]:
    """The loss's positional networks: actor, Q critic, (SAC v1's) value network."""
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ValueOperator

    if case.loss == "DiscreteSACLoss":
        critic = TensorDictModule(mlps["qvalue"], ["observation"], ["action_value"])
    else:
        critic = ValueOperator(mlps["qvalue"], in_keys=["observation", "action"])
    networks = [_actor(case, mlps["actor"]), critic]
    if case.value_network:
        networks.append(ValueOperator(mlps["value"], in_keys=["observation"]))
    return networks


def _module_name(key: tuple[str, ...]) -> str:
    """A TorchRL parameter key without the wrappers' ``module`` levels (``"0.weight"``)."""
    return ".".join(part for part in key if part != "module")


def _load_members(loss: Any, inputs: LossInputs) -> dict[str, Any]:
    """Copy the case's stacked Q members (and their perturbed targets) into the loss's
    ensemble; returns the ensemble's parameters by canonical name."""
    import torch

    params = {}
    online, targets = inputs.weights["qvalue"], inputs.target_weights.get("qvalue", {})
    target_tree = getattr(loss, "target_qvalue_network_params", None)
    with torch.no_grad():
        for key, leaf in loss.qvalue_network_params.items(True, True):
            name = _module_name(key)
            leaf.data.copy_(_tensor(online[name]))
            if leaf.requires_grad:  # not CrossQ's running statistics
                params[f"qvalue.{name}"] = leaf
            if target_tree is not None:
                target_tree.get(key).data.copy_(_tensor(targets.get(name, online[name])))
    return params


def _load_targets(loss: Any, mlps: Mapping[str, Any], inputs: LossInputs) -> None:
    """The perturbed target copies of the roles that have one, outside the ensemble."""
    import torch

    networks = {"actor": "actor_network", "value": "value_network"}
    if "DDPG" in type(loss).__name__:
        networks["qvalue"] = "value_network"
    names = {id(p): (role, n) for role, mlp in mlps.items() for n, p in mlp.named_parameters()}
    with torch.no_grad():
        for role, weights in inputs.target_weights.items():
            network = networks.get(role)
            if network is None:
                continue
            params = getattr(loss, f"{network}_params")
            target = getattr(loss, f"target_{network}_params")
            for key, leaf in params.items(True, True):
                owner, name = names[id(leaf)]
                if owner == role:
                    target.get(key).data.copy_(_tensor(weights[name]))


def torchrl_offpolicy_loss(
    case: OffPolicyCase, inputs: LossInputs, dtype: str
) -> tuple[Any, dict[str, Any]]:
    """TorchRL's loss for ``case`` and its trainable parameters by canonical name."""
    import torchrl.objectives as objectives
    from torchrl.data import Bounded
    from torchrl.objectives import ValueEstimators

    mlps = _mlps(case, inputs.weights, dtype)
    cls = getattr(objectives, case.loss)
    loss = cls(*_networks(case, mlps), **case.loss_kwargs(Bounded(-1.0, 1.0, shape=(ACT,))))
    name, hyperparams = case.estimator_kwargs()
    loss.make_value_estimator(getattr(ValueEstimators, name), **hyperparams)
    params = {f"{role}.{n}": p for role, mlp in mlps.items() for n, p in mlp.named_parameters()
              if not (role == "qvalue" and case.members)}
    if case.members:
        params.update(_load_members(loss, inputs))
    _load_targets(loss, mlps, inputs)
    trainable = dict(loss.named_parameters())
    if "log_alpha" in trainable:
        params["log_alpha"] = trainable["log_alpha"]
    return loss, params


def torchrl_offpolicy_evaluation(case: OffPolicyCase, inputs: LossInputs, dtype: str
                                 ) -> Evaluation:
    """TorchRL's outputs, the priority it sets in the batch, CrossQ's running
    statistics, and the ``loss_*`` gradients, on the case's inputs (CPU)."""


    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, params = torchrl_offpolicy_loss(case, inputs, dtype)
        batch, out = call_torchrl(loss, inputs)
    terms = output_terms(out)
    outputs = {key: value.detach().numpy() for key, value in terms.items()}
    outputs[PRIORITY_OUTPUT] = batch.get(loss.tensor_keys.priority).detach().numpy()
    if case.loss == "CrossQLoss":
        for key, leaf in loss.qvalue_network_params.items(True, True):
            if key[-1] in ("running_mean", "running_var", "num_batches_tracked"):
                outputs["buffer:" + ".".join(key)] = leaf.detach().numpy()
    return Evaluation(outputs, torch_gradients(terms, params))
