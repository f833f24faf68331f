"""Conformance cases of the offline losses ``TD3BCLoss`` and ``BCLoss``.

``TD3BCLoss`` cases are :class:`~.offpolicy_cases.OffPolicyCase` s (the same weights,
stacked Q members, perturbed targets and replay batches as TD3's), run through the
off-policy helpers: arrayrl's loss gets the case's members and targets through
``load_state_dict`` and draws its smoothing noise in TorchRL's order and shape, so the
runner compares TorchRL (after ``torch.manual_seed``) with arrayrl on torch drawing from a
``torch.Generator`` seeded alike.

``BCLoss`` cases (:class:`BCCase`) have one network, the actor, in one of five kinds:
``"deterministic"`` (an MLP ending in tanh, writing ``"action"``), ``"normal"`` /
``"tanh_normal"`` (a ``ProbabilisticActor`` over ``loc`` and ``scale``),
``"one_hot"`` (a ``ProbabilisticActor`` with ``OneHotCategorical`` logits) and
``"logits"`` (an MLP writing class logits at ``"action"``). The batch holds observations,
expert actions suited to the actor (actions in ``(-0.9, 0.9)``, one-hot vectors, class
indices ``[*B, 1]`` or class probabilities), and optionally a ``"pad"`` mask and a
collector mask. BC draws nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .loss_cases import (
    ACT,
    HIDDEN,
    LOSS_SEED,
    N_ACTIONS,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    arrayrl_batch,
    arrayrl_mlp,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch, never_measured, torchrl_mlp
from .offpolicy_cases import (
    OffPolicyCase,
    _flat,
    arrayrl_offpolicy_networks,
    evaluate_prepared_loss,
    prepare_offpolicy_loss,
)

__all__ = ["DEVIATIONS", "BCCase", "TD3BCCase", "cases"]


# -- TD3+BC ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TD3BCCase(OffPolicyCase):
    """One ``TD3BCLoss`` configuration; ``action_spec``: the bounds come from a
    ``Bounded(-1, 1)`` spec of each library instead of ``bounds=``."""

    action_spec: bool = False

    def loss_kwargs(self, spec: Any) -> dict[str, Any]:
        kwargs = super().loss_kwargs(spec)
        if self.action_spec:
            kwargs["action_spec"] = spec
        return kwargs

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's outputs, the priority set in the batch and, on torch, the
        gradients of ``loss_actor`` and ``loss_qvalue``."""
        loss, params = _arrayrl_td3bc(self, inputs, backend, device, generator_mode)
        return evaluate_prepared_loss(self, loss, params, inputs, backend, device)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``TD3BCLoss`` through the off-policy oracle."""
        from .offpolicy_oracle import torchrl_offpolicy_evaluation

        return torchrl_offpolicy_evaluation(self, inputs, dtype)


def _arrayrl_td3bc(
    case: TD3BCCase, inputs: LossInputs, backend: str, device: Any, generator_mode: str
) -> tuple[Any, dict[str, Any]]:
    """arrayrl's ``TD3BCLoss`` holding the case's weights, members and targets, on
    ``backend``, and its trainable arrays by canonical name (``"<role>.<param>"``)."""
    from arrayrl.objectives.td3_bc import TD3BCLoss
    from arrayrl.specs import Bounded

    modules, mlps = arrayrl_offpolicy_networks(case, inputs.weights)
    spec = Bounded(-1.0, 1.0, shape=(ACT,))
    loss = TD3BCLoss(modules["actor"], modules["qvalue"], seed=LOSS_SEED, **case.loss_kwargs(spec))
    params = prepare_offpolicy_loss(
        case, loss, mlps, inputs, backend, device, generator_mode=generator_mode
    )
    return loss, params


def _td3bc_case(variant: str, **fields: Any) -> TD3BCCase:
    """A case named ``TD3BCLoss[actor,layout,members,variant]``."""
    case = TD3BCCase(name="", loss="TD3BCLoss", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (case.actor, layout, f"{case.members}q", variant) if p)
    return replace(case, name=f"TD3BCLoss[{label}]")


_BT = (4, 8)


def _td3bc_cases() -> list[TD3BCCase]:
    """Ensembles of 1-3, bounds and an action spec, noise and α settings, delays,
    reductions, priority weights, a collector mask and TD(λ)."""
    bounds = {"bounds": (-0.5, 0.5)}
    both = ("actor", "qvalue")
    return [
        _td3bc_case("", actor="deterministic", perturbed_targets=both, config=bounds),
        _td3bc_case(
            "l1,noise,alpha=1",
            actor="tanh_delta",
            batch_shape=_BT,
            members=1,
            perturbed_targets=both,
            config={
                **bounds,
                "loss_function": "l1",
                "policy_noise": 0.6,
                "noise_clip": 0.3,
                "alpha": 1.0,
            },
        ),
        _td3bc_case(
            "no_delay,l2,alpha=10",
            actor="deterministic",
            members=3,
            config={
                **bounds,
                "delay_actor": False,
                "delay_qvalue": False,
                "loss_function": "l2",
                "alpha": 10.0,
            },
        ),
        _td3bc_case(
            "priority_weight,none",
            actor="tanh_delta",
            batch_shape=_BT,
            priority_weights=True,
            perturbed_targets=both,
            config={**bounds, "reduction": "none"},
        ),
        _td3bc_case(
            "action_spec,sum,collector_mask,td_lambda",
            actor="deterministic",
            batch_shape=_BT,
            action_spec=True,
            masks=("collector",),
            perturbed_targets=("qvalue",),
            estimator=("TDLambda", (("lmbda", 0.9),)),
            config={"reduction": "sum", "policy_noise": 0.5},
        ),
    ]


# -- BC -------------------------------------------------------------------------------------------
#: the expert actions each actor kind is cloned from (``"logits"``: class indices unless
#: the case asks for probabilities)
_EXPERT = {
    "deterministic": "continuous",
    "normal": "continuous",
    "tanh_normal": "continuous",
    "one_hot": "one_hot",
    "logits": "index",
}


def cubic_distance(prediction: Any, expert: Any) -> Any:
    """A custom ``loss_function``: ``|â − a|³`` element-wise, written with operators only
    (so it runs on every backend, and on TorchRL's tensors)."""
    diff = prediction - expert
    return diff * diff * abs(diff)


@dataclass(frozen=True)
class BCCase(LossCase):
    """One ``BCLoss`` configuration.

    ``actor``: see the module docstring. ``expert``: the expert actions' kind (default by
    the actor; ``"probs"`` for class probabilities). ``pad_mask``: the shape of a
    ``"pad"`` mask after the batch dims (``None``: no mask; ``()``: one per sample).
    """

    expert: str | None = None
    pad_mask: tuple[int, ...] | None = None

    @property
    def continuous(self) -> bool:
        return self.actor in ("deterministic", "normal", "tanh_normal")

    @property
    def monte_carlo(self) -> bool:
        """BC draws nothing."""
        return False

    @property
    def expert_kind(self) -> str:
        return self.expert or _EXPERT[self.actor]

    def network_specs(self) -> dict[str, NetSpec]:
        """The actor's MLP: tanh-ended for ``"deterministic"``."""
        out = {"normal": 2 * ACT, "tanh_normal": 2 * ACT, "deterministic": ACT}
        return {
            "actor": NetSpec(
                OBS,
                out.get(self.actor, N_ACTIONS),
                (HIDDEN,),
                activate_last_layer=self.actor == "deterministic",
            )
        }

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The actor's weights and a batch of observations and expert actions."""
        rng = np.random.default_rng([seed, 13])
        weights = {"actor": _mlp_weights(self.network_specs()["actor"], seed * 100)}
        shape = self.batch_shape
        batch: dict[str, Any] = {
            "observation": rng.standard_normal((*shape, OBS)),
            "action": _expert_actions(self.expert_kind, shape, rng),
        }
        if self.pad_mask is not None:
            pad = rng.random((*shape, *self.pad_mask)) < 0.3
            pad.flat[0] = False
            batch["pad"] = pad
        if "collector" in self.masks:
            mask = rng.random((*shape, 1)) < 0.8
            mask.flat[0] = True
            batch["collector"] = {"mask": mask}
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def loss_kwargs(self) -> dict[str, Any]:
        """The constructor's keyword arguments (``loss_function="cubic"``: the callable
        :func:`cubic_distance`)."""
        kwargs = dict(self.config)
        if kwargs.get("loss_function") == "cubic":
            kwargs["loss_function"] = cubic_distance
        return kwargs

    def configure(self, loss: Any) -> Any:
        """The keys: ``pad_mask="pad"`` when the case has a mask."""
        if self.pad_mask is not None:
            loss.set_keys(pad_mask="pad")
        return loss

    @property
    def flattens_for_torchrl(self) -> bool:
        """Cross-entropy over a ``[B, T]`` batch: TorchRL's ``F.cross_entropy`` reads the
        classes on axis 1 and raises, so the oracle runs on the flattened batch
        (deviation ``torchrl-bc-cross-entropy-class-axis``)."""
        return self.actor == "logits" and len(self.batch_shape) > 1

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's ``loss_bc`` and, on torch, its gradients."""
        from arrayrl.backends import backend_of

        from arrayrl.objectives.bc import BCLoss

        mlp = arrayrl_mlp(self.network_specs()["actor"], inputs.weights["actor"])
        loss = self.configure(BCLoss(_arrayrl_actor(self.actor, mlp), **self.loss_kwargs()))
        loss.to(backend, device)
        out = loss(arrayrl_batch(self, inputs, backend, device))
        value = out.get("loss_bc")
        params = {f"actor.{name}": leaf for name, leaf in _flat(mlp.params).items()}
        gradients = torch_gradients({"loss_bc": value}, params) if backend == "torch" else {}
        return Evaluation({"loss_bc": _host(value, backend_of(value))}, gradients)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``loss_bc`` and its gradients (on the flattened batch where
        :attr:`flattens_for_torchrl`)."""
        from tensordict import TensorDict
        from torchrl.objectives import BCLoss

        mlp = torchrl_mlp(self.network_specs()["actor"], inputs.weights["actor"], dtype)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        if self.flattens_for_torchrl:
            batch = batch.reshape(-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = self.configure(BCLoss(_torchrl_actor(self.actor, mlp), **self.loss_kwargs()))
            value = loss(batch)["loss_bc"]
        if self.flattens_for_torchrl and self.config.get("reduction") == "none":
            value = value.reshape(inputs.batch_size)
        params = {f"actor.{name}": p for name, p in mlp.named_parameters()}
        return Evaluation(
            {"loss_bc": value.detach().numpy()}, torch_gradients({"loss_bc": value}, params)
        )


def _expert_actions(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Expert actions of ``kind``: continuous in (-0.9, 0.9), one-hot, class indices
    ``[*B, 1]`` (int64) or class probabilities."""
    if kind == "continuous":
        return rng.uniform(-0.9, 0.9, (*shape, ACT))
    index = rng.integers(0, N_ACTIONS, shape)
    if kind == "one_hot":
        return np.eye(N_ACTIONS)[index]
    if kind == "index":
        return index[..., None]
    return rng.dirichlet(np.ones(N_ACTIONS), shape)


def _arrayrl_actor(kind: str, mlp: Any) -> Any:
    """The case's actor in arrayrl's modules around ``mlp``."""
    from arrayrl.modules import Actor, DictModule, NormalParamExtractor, Sequential
    from arrayrl.modules import distributions as dists
    from arrayrl.modules.actors import ProbabilisticActor

    if kind in ("deterministic", "logits"):
        return Actor(mlp)
    if kind == "one_hot":
        return ProbabilisticActor(
            DictModule(mlp, in_keys=["observation"], out_keys=["logits"]),
            in_keys=["logits"],
            distribution_class=dists.OneHotCategorical,
        )
    cls = dists.TanhNormal if kind == "tanh_normal" else dists.IndependentNormal
    return ProbabilisticActor(
        DictModule(
            Sequential(mlp, NormalParamExtractor()),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=cls,
    )


def _torchrl_actor(kind: str, mlp: Any) -> Any:
    """The case's actor in TorchRL's modules around ``mlp``."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import IndependentNormal, OneHotCategorical, ProbabilisticActor, TanhNormal

    if kind in ("deterministic", "logits"):
        return TensorDictModule(mlp, ["observation"], ["action"])
    if kind == "one_hot":
        return ProbabilisticActor(
            TensorDictModule(mlp, ["observation"], ["logits"]),
            in_keys=["logits"],
            distribution_class=OneHotCategorical,
        )
    cls = TanhNormal if kind == "tanh_normal" else IndependentNormal
    module = TensorDictModule(
        torch.nn.Sequential(mlp, NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=cls)


def _bc_case(actor: str, variant: str, **fields: Any) -> BCCase:
    """A case named ``BCLoss[actor,layout,variant]``."""
    case = BCCase(name="", loss="BCLoss", actor=actor, advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (actor, layout, variant) if p)
    return replace(case, name=f"BCLoss[{label}]")


def _bc_cases() -> list[BCCase]:
    """Every loss function and default path, flat and [B, T] batches, pad masks (per
    sample, per step, per element), a collector mask, reductions, TensorDict batches."""
    return [
        _bc_case("deterministic", ""),
        _bc_case(
            "deterministic",
            "l1,pad_mask,none",
            batch_shape=_BT,
            pad_mask=(),
            config={"loss_function": "l1", "reduction": "none"},
        ),
        _bc_case(
            "deterministic",
            "smooth_l1,elementwise_pad_mask,collector_mask,sum",
            batch_shape=_BT,
            pad_mask=(ACT,),
            masks=("collector",),
            config={"loss_function": "smooth_l1", "reduction": "sum"},
        ),
        _bc_case(
            "deterministic", "mse,tensordict", tensordict=True, config={"loss_function": "mse"}
        ),
        _bc_case("deterministic", "callable", batch_shape=_BT, config={"loss_function": "cubic"}),
        _bc_case("tanh_normal", "", batch_shape=_BT),
        _bc_case("normal", "pad_mask,none", pad_mask=(), config={"reduction": "none"}),
        _bc_case("one_hot", "sum", config={"reduction": "sum"}),
        _bc_case("logits", ""),
        _bc_case(
            "logits",
            "cross_entropy,none",
            batch_shape=_BT,
            config={"loss_function": "cross_entropy", "reduction": "none"},
        ),
        _bc_case(
            "logits",
            "cross_entropy,probs",
            expert="probs",
            config={"loss_function": "cross_entropy"},
        ),
    ]


def cases() -> list[LossCase]:
    """The ``TD3BCLoss`` and ``BCLoss`` conformance cases."""
    return [*_td3bc_cases(), *_bc_cases()]


# -- deviations -----------------------------------------------------------------------------------
def _flattened(case: LossCase, dtype: str) -> bool:
    return isinstance(case, BCCase) and case.flattens_for_torchrl



DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-bc-cross-entropy-class-axis",
        applies=_flattened,
        reason=(
            "TorchRL 0.14.1's BCLoss calls F.cross_entropy(prediction, target), which takes "
            "the classes on axis 1: on a [B, T] batch ([B, T, C] logits, [B, T(, 1)] "
            "indices, or [B, T, C] probabilities) it raises, or with T == C computes over "
            "the time axis. arrayrl takes the classes on the last axis (the logits' axis, as "
            "its Categorical). The oracle runs TorchRL on the flattened [B*T] batch, where "
            "the two agree, and compares with arrayrl's [B, T] result. No TorchRL issue "
            "found (BCLoss arrived with pytorch/rl PR 3667)."
        ),
        tolerance=0.0,
    ),
    LossDeviation(
        key="torchrl-bc-integer-action-dtypes",
        applies=never_measured,
        reason=(
            "TorchRL 0.14.1's BCLoss treats only int64/int32 expert actions as class indices, "
            "and F.cross_entropy then raises for int32; uint8/int8/int16 indices fall "
            "through to MSE and raise on the shapes. arrayrl takes indices of any integer "
            "dtype (the same numbers as int64). Not measured: TorchRL raises. No TorchRL "
            "issue found."
        ),
        tolerance=None,
    ),
    LossDeviation(
        key="torchrl-bc-stochastic-integer-actions",
        applies=never_measured,
        reason=(
            "With loss_function=None and integer expert actions, TorchRL 0.14.1's BCLoss "
            "applies cross-entropy to what the actor wrote at the action key; for a "
            "ProbabilisticActor (e.g. Categorical) that is the sampled index, and "
            "F.cross_entropy raises. arrayrl scores such an actor by its negative "
            "log-likelihood -log pi(a|s), what BCLoss's docstring states for stochastic "
            "policies. Not measured: TorchRL raises. No TorchRL issue found."
        ),
        tolerance=None,
    ),
)
