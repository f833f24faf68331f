"""The CQL conformance cases: ``CQLLoss`` and ``DiscreteCQLLoss``.

A :class:`CQLCase` is an :class:`~.offpolicy_cases.OffPolicyCase` (the weights, the two
stacked Q members, the perturbed targets and the replay batch are built the same way)
with CQL's settings: the Lagrange multiplier, the backups, the proposals' count and
temperature, an action box given by a spec, reductions and masks. A
:class:`DiscreteCQLCase` has one Q network over :data:`~.loss_cases.N_ACTIONS` actions
(a ``QValueActor``) and one-hot or categorical actions.

arrayrl's loss is built on NumPy from arrayrl modules with the case's weights loaded
through ``load_state_dict``, as in :mod:`.offpolicy_cases`; with
``generator_mode="native"`` on torch it draws what TorchRL draws after
``torch.manual_seed(LOSS_SEED)`` (the next actions, the uniform and policy proposals, the
BC and actor draws, in TorchRL's order and shapes), so every output and gradient is
compared on the same draws.

The oracle is TorchRL 0.14.1 with the case's weights. Where arrayrl fixes a bug
(:data:`DEVIATIONS`), the oracle's affected terms are recomputed from TorchRL's own
intermediate values, so they are still compared at the loss tolerance: ``loss_cql`` and
``loss_alpha_prime`` from the proposal Q-values and log-probabilities TorchRL evaluates
in its forward (recorded by wrapping its ensemble call and its policy-sampling method),
the uniform proposals mapped into the spec's box inside that ensemble call, and
DiscreteCQL's target from TorchRL's estimator with its network holding the target
parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

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
    _key_name,
    arrayrl_offpolicy_networks,
    evaluate_prepared_loss,
    prepare_offpolicy_loss,
)

__all__ = ["DEVIATIONS", "CQLCase", "DiscreteCQLCase", "cases"]

#: the recomputed terms of the CQL oracle
CQL_TERMS = ("loss_cql", "loss_alpha_prime")


# =========================================================================================
# CQLLoss
# =========================================================================================
@dataclass(frozen=True)
class CQLCase(OffPolicyCase):
    """``CQLLoss`` on one configuration. ``box``: ``(low, high)`` per action element of a
    ``Bounded`` action spec given to both libraries (``None``: no spec, or with
    ``auto_entropy`` TorchRL's ``[-1, 1]``)."""

    box: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    @property
    def monte_carlo(self) -> bool:
        return True

    def cql_kwargs(self, bounded: Callable[[Any, Any], Any]) -> dict[str, Any]:
        """The constructor's keyword arguments; ``bounded(low, high)`` makes the library's
        ``Bounded`` spec of shape ``(ACT,)``."""
        kwargs = dict(self.config)
        if self.box is not None:
            kwargs["action_spec"] = bounded(*self.box)
        elif self.auto_entropy:
            kwargs["action_spec"] = bounded((-1.0,) * ACT, (1.0,) * ACT)
        else:
            kwargs.setdefault("target_entropy", -1.5)
        return kwargs

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's outputs, the priority set in the batch, and on torch the gradients of
        every ``loss_*`` term."""
        from arrayrl.objectives.cql import CQLLoss
        from arrayrl.specs import Bounded

        modules, mlps = arrayrl_offpolicy_networks(self, inputs.weights)

        def bounded(low: Any, high: Any) -> Any:
            return Bounded(np.asarray(low), np.asarray(high), shape=(ACT,))

        loss = CQLLoss(
            modules["actor"], modules["qvalue"], seed=LOSS_SEED, **self.cql_kwargs(bounded)
        )
        return _evaluate_arrayrl(self, loss, mlps, inputs, backend, device, generator_mode)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's outputs and gradients, with ``loss_cql`` and ``loss_alpha_prime``
        recomputed from its own proposal values (see the module docstring)."""
        import torch
        import torchrl.objectives as objectives
        from torchrl.data import Bounded

        from .offpolicy_oracle import _load_members, _load_targets, _mlps, _networks

        def bounded(low: Any, high: Any) -> Any:
            return Bounded(torch.tensor(low), torch.tensor(high), shape=(ACT,))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlps = _mlps(self, inputs.weights, dtype)
            loss = objectives.CQLLoss(*_networks(self, mlps), **self.cql_kwargs(bounded))
            name, hyperparams = self.estimator_kwargs()
            loss.make_value_estimator(getattr(objectives.ValueEstimators, name), **hyperparams)
            params = {f"actor.{n}": p for n, p in mlps["actor"].named_parameters()}
            params.update(_load_members(loss, inputs))
            _load_targets(loss, mlps, inputs)
            params.update({n: p for n, p in loss.named_parameters() if n.startswith("log_")})
            record = record_torchrl_proposals(loss, self.box)
            batch, out = call_torchrl(loss, inputs)
        terms = output_terms(out)
        terms.update(paper_cql_terms(loss, record, batch, self.box))
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        outputs[PRIORITY_OUTPUT] = batch.get(loss.tensor_keys.priority).detach().numpy()
        return Evaluation(outputs, torch_gradients(terms, params))


def _evaluate_arrayrl(
    case: OffPolicyCase,
    loss: Any,
    mlps: Mapping[str, Any],
    inputs: LossInputs,
    backend: str,
    device: Any,
    generator_mode: str,
) -> Evaluation:
    """Load the case's weights into ``loss``, reset its generators, move it to ``backend``
    and run it: outputs, the priority set in the batch, torch gradients."""
    params = prepare_offpolicy_loss(
        case, loss, mlps, inputs, backend, device, generator_mode=generator_mode
    )
    return evaluate_prepared_loss(case, loss, params, inputs, backend, device)


def record_torchrl_proposals(loss: Any, box: Any) -> dict[str, Any]:
    """Wrap TorchRL's ensemble call of the proposals and its policy sampling to record
    the proposal Q-values and log-probabilities; with a ``box``, the uniform group's
    actions (the first two of the six stacked evaluations) are mapped into it first."""
    record: dict[str, Any] = {"log_prob": []}
    evaluate, policy = loss._vmap_qvalue_network00, loss._get_policy_actions
    action_key = loss.tensor_keys.action

    def recorded_evaluate(td: Any, params: Any) -> Any:
        if box is not None:
            import torch

            td = td.clone()
            action = td.get(action_key)
            low, high = (torch.tensor(b, dtype=action.dtype) for b in box)
            uniform = (high + low) / 2 + (high - low) / 2 * action[:2]
            td.set(action_key, torch.cat([uniform, action[2:]]))
        out = evaluate(td, params)
        record["q"] = out.get(loss.tensor_keys.state_action_value)
        return out

    def recorded_policy(*args: Any, **kwargs: Any) -> Any:
        td, log_prob = policy(*args, **kwargs)
        record["log_prob"].append(log_prob)
        return td, log_prob

    loss._vmap_qvalue_network00, loss._get_policy_actions = recorded_evaluate, recorded_policy
    return record


def paper_cql_terms(loss: Any, record: Mapping[str, Any], td: Any, box: Any) -> dict[str, Any]:
    """``loss_cql`` (and ``loss_alpha_prime``) from TorchRL's proposal values with the
    log-sum-exp over the ``3K`` proposals of each state, the Lagrange multiplier weighing
    the CQL term and the box's log-density (arrayrl's fixes), reduced by TorchRL."""
    import torch

    k, shape = loss.num_random, tuple(td.batch_size)
    q = record["q"][..., 0].reshape(3, 2, *shape, k)  # uniform, π(s), π(s′) × members
    log_current, log_next = (x.detach().reshape(*shape, k) for x in record["log_prob"][-2:])
    log_uniform = (
        -float(np.sum(np.log(np.subtract(box[1], box[0]))))
        if box is not None
        else math.log(0.5**ACT)
    )
    pred = torch.stack([td["pred_q1"][..., 0], td["pred_q2"][..., 0]])
    proposals = torch.cat([q[0] - log_uniform, q[2] - log_next, q[1] - log_current], -1)
    temperature, weight = loss.temperature, loss.min_q_weight
    cql = weight * temperature * torch.logsumexp(proposals / temperature, -1) - weight * pred
    if not loss.with_lagrange:
        return {"loss_cql": loss._reduce_loss(cql.sum(0), tensordict=td)}
    alpha_prime = loss.log_alpha_prime.exp().clamp_max(1e6)
    gap = cql - loss.target_action_gap
    means = sum(loss._reduce_loss(g, tensordict=td, reduction="mean") for g in gap.detach())
    return {
        "loss_cql": loss._reduce_loss(alpha_prime.detach() * gap.sum(0), tensordict=td),
        "loss_alpha_prime": -0.5 * alpha_prime * means,
    }


# =========================================================================================
# DiscreteCQLLoss
# =========================================================================================
@dataclass(frozen=True)
class DiscreteCQLCase(OffPolicyCase):
    """``DiscreteCQLLoss`` on one configuration: ``actor`` is the action space
    (``"one_hot"`` or ``"categorical"``); the Q network is ``qvalue`` (one MLP)."""

    members: int = 0

    @property
    def monte_carlo(self) -> bool:
        return False

    @property
    def space(self) -> str:
        return self.actor.replace("_", "-")

    def network_specs(self) -> dict[str, NetSpec]:
        return {"qvalue": NetSpec(OBS, N_ACTIONS, (HIDDEN,))}

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        from arrayrl.modules import MLP, unflatten_params
        from arrayrl.modules.actors import QValueActor
        from arrayrl.objectives.cql import DiscreteCQLLoss

        weights = inputs.weights["qvalue"]
        mlp = MLP(OBS, N_ACTIONS, [HIDDEN], dtype=next(iter(weights.values())).dtype)
        mlp.params = unflatten_params(dict(weights))
        actor = QValueActor(mlp, action_space=self.space)
        loss = DiscreteCQLLoss(actor, action_space=self.space, **self.config)
        return _evaluate_arrayrl(
            self, loss, {"qvalue": mlp}, inputs, backend, device, generator_mode
        )

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's outputs and gradients; with ``delay_value`` its estimator's network
        holds the target parameters (see :data:`DEVIATIONS`)."""
        import torchrl.objectives as objectives
        from tensordict import TensorDict
        from torchrl.data import Categorical, OneHot
        from torchrl.modules import QValueActor

        from .loss_oracle import _to_torch
        from .offpolicy_oracle import _mlps

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mlp = _mlps(self, inputs.weights, dtype)["qvalue"]
            spec = OneHot(N_ACTIONS) if self.actor == "one_hot" else Categorical(N_ACTIONS)
            actor = QValueActor(mlp, in_keys=["observation"], spec=spec)
            loss = objectives.DiscreteCQLLoss(actor, action_space=spec, **self.config)
            name, hyperparams = self.estimator_kwargs()
            loss.make_value_estimator(getattr(objectives.ValueEstimators, name), **hyperparams)
            _load_target_values(loss, mlp, inputs)
            if loss.delay_value:
                loss.target_value_network_params.to_module(
                    loss.value_estimator.value_network, return_swap=False
                )
            batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
            out = loss(batch)
        terms = {_key_name(k): v for k, v in out.items(include_nested=True, leaves_only=True)}
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        outputs[PRIORITY_OUTPUT] = batch.get(loss.tensor_keys.priority).detach().numpy()
        params = {f"qvalue.{n}": p for n, p in mlp.named_parameters()}
        return Evaluation(outputs, torch_gradients(terms, params))


def _load_target_values(loss: Any, mlp: Any, inputs: LossInputs) -> None:
    """The case's perturbed target weights into TorchRL's ``target_value_network_params``
    (matched to the MLP's parameters by identity)."""
    import torch

    target = inputs.target_weights.get("qvalue")
    if not target or not loss.delay_value:
        return
    names = {id(p): n for n, p in mlp.named_parameters()}
    with torch.no_grad():
        for key, leaf in loss.value_network_params.items(True, True):
            weight = torch.from_numpy(np.array(target[names[id(leaf)]]))
            loss.target_value_network_params.get(key).data.copy_(weight)


# =========================================================================================
# the cases and the deviations
# =========================================================================================
_N, _BT = (32,), (4, 8)
#: an action box other than TorchRL's [-1, 1]: per element (low, high)
BOX = ((-1.5, -1.0), (1.0, 2.0))


def _case(cls: type, loss: str, variant: str, **fields: Any) -> Any:
    """A case named ``loss[actor,layout,variant]``."""
    case = cls(name="", loss=loss, advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (case.actor, layout, variant) if p)
    return replace(case, name=f"{loss}[{label}]")


def _cql_cases() -> list[CQLCase]:
    """The Lagrange multiplier on and off, the backups, the proposals' settings, a spec
    box, reductions, masks and TD(λ); flat and [B, T] batches."""
    q = ("qvalue",)

    def cql(variant: str, **fields: Any) -> CQLCase:
        return _case(CQLCase, "CQLLoss", variant, actor="tanh_normal", **fields)

    return [
        cql("auto_entropy", auto_entropy=True, perturbed_targets=q),
        cql(
            "lagrange",
            batch_shape=_BT,
            perturbed_targets=q,
            config={"with_lagrange": True, "lagrange_thresh": 0.5},
        ),
        cql(
            "max_q_backup,l2",
            perturbed_targets=q,
            config={"max_q_backup": True, "loss_function": "l2", "num_random": 4},
        ),
        cql(
            "stochastic_backup,sum",
            batch_shape=_BT,
            perturbed_targets=q,
            config={"deterministic_backup": False, "reduction": "sum", "alpha_init": 0.5},
        ),
        cql("box", box=BOX, perturbed_targets=q),
        cql(
            "box,lagrange,td_lambda",
            box=BOX,
            batch_shape=_BT,
            estimator=("TDLambda", (("lmbda", LMBDA),)),
            config={"with_lagrange": True, "lagrange_thresh": -0.3, "delay_qvalue": False},
        ),
        cql(
            "none",
            batch_shape=_BT,
            perturbed_targets=q,
            config={"reduction": "none", "scalar_output_mode": "exclude"},
        ),
        cql(
            "temperature,weight,fixed_alpha,l1",
            perturbed_targets=("actor", "qvalue"),
            config={
                "temperature": 0.5,
                "min_q_weight": 2.0,
                "num_random": 3,
                "fixed_alpha": True,
                "alpha_init": 0.3,
                "loss_function": "l1",
                "delay_actor": True,
            },
        ),
        cql(
            "collector_mask,alpha_bounds",
            masks=("collector",),
            perturbed_targets=q,
            config={"alpha_init": 0.7, "min_alpha": 0.8, "max_alpha": 2.0},
        ),
    ]


def _discrete_cql_cases() -> list[DiscreteCQLCase]:
    """One-hot and categorical actions, flat and [B, T] batches, the target copy used or
    not, reductions and distances."""
    q = ("qvalue",)

    def discrete(actor: str, variant: str, **fields: Any) -> DiscreteCQLCase:
        return _case(DiscreteCQLCase, "DiscreteCQLLoss", variant, actor=actor, **fields)

    return [
        discrete("one_hot", "no_delay", config={"delay_value": False}),
        discrete("categorical", "", batch_shape=_BT, perturbed_targets=q),
        discrete(
            "one_hot",
            "sum,smooth_l1",
            batch_shape=_BT,
            perturbed_targets=q,
            config={"reduction": "sum", "loss_function": "smooth_l1"},
        ),
        discrete(
            "categorical",
            "no_delay,none,l1",
            config={"delay_value": False, "reduction": "none", "loss_function": "l1"},
        ),
        discrete(
            "one_hot",
            "collector_mask,td_lambda",
            masks=("collector",),
            perturbed_targets=q,
            estimator=("TDLambda", (("lmbda", LMBDA),)),
        ),
    ]


def cases() -> list[Any]:
    """Every CQLLoss and DiscreteCQLLoss case."""
    return [*_cql_cases(), *_discrete_cql_cases()]


def _is(loss: str, test: Callable[[Any], bool] = lambda case: True) -> Any:
    return lambda case, dtype: case.loss == loss and test(case)


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-cql-logsumexp-over-groups",
        applies=_is("CQLLoss"),
        reason=(
            "CQL(H)'s log Σ_a exp Q(s, a) is estimated by a log-sum-exp over the 3·num_random "
            "importance-weighted proposals of each state (Kumar et al. 2020, appendix F; the "
            "official implementation; the CQL-SAC code TorchRL's was ported from reshapes to "
            "[B, num_random] first). TorchRL 0.14.1's CQLLoss takes the log-sum-exp over the "
            "three groups of each proposal index (three values) and averages them through a "
            "[B·K] − [B, 1] broadcast, which also mixes all states into each sample's "
            "loss_cql under reduction='none' and masks. arrayrl uses the paper's estimator. "
            "The oracle recomputes loss_cql and loss_alpha_prime from the proposal Q-values "
            "and log-probabilities TorchRL evaluates in its own forward, so they are compared "
            "at the loss tolerance (values and gradients). No TorchRL issue found."
        ),
        tolerance=0.0,
        covers=CQL_TERMS,
    ),
    LossDeviation(
        key="torchrl-cql-lagrange-unweighted",
        applies=_is("CQLLoss", lambda case: bool(case.config.get("with_lagrange"))),
        reason=(
            "With with_lagrange=True TorchRL 0.14.1 returns the unweighted loss_cql and lets "
            "loss_alpha_prime = −½α′Σ(C_i − τ) reach the Q networks, so the sum of the terms "
            "trains the critics on (1 − α′/2)∇C: the penalty vanishes at α′ = 2 and then "
            "rewards over-estimation. arrayrl follows the official implementation: "
            "loss_cql = Σ_i α′(C_i − τ) with α′ fixed, and loss_alpha_prime trains log α′ "
            "only (with reduction='none', where TorchRL raises, it is per state). The oracle "
            "recomputes both terms from TorchRL's own proposal values, so they are compared "
            "at the loss tolerance. No TorchRL issue found."
        ),
        tolerance=0.0,
        covers=CQL_TERMS,
    ),
    LossDeviation(
        key="torchrl-cql-uniform-box",
        applies=_is("CQLLoss", lambda case: case.box is not None),
        reason=(
            "TorchRL 0.14.1's CQLLoss draws its uniform proposals on [-1, 1]^d with density "
            "0.5^d whatever the action spec. arrayrl maps the same uniform(-1, 1) draw into "
            "the spec's box (centre + half-width · u) with density 1/volume (identical to "
            "TorchRL for a [-1, 1] box or no spec). The oracle maps TorchRL's draws into the "
            "box inside its ensemble call and recomputes loss_cql and loss_alpha_prime, which "
            "are compared at the loss tolerance. No TorchRL issue found."
        ),
        tolerance=0.0,
        covers=CQL_TERMS,
    ),
    LossDeviation(
        key="torchrl-discrete-cql-ignores-target",
        applies=_is(
            "DiscreteCQLLoss",
            lambda case: (
                case.config.get("delay_value", True) and "qvalue" in case.perturbed_targets
            ),
        ),
        reason=(
            "TorchRL 0.14.1's DiscreteCQLLoss builds its value estimator on a copy of the value "
            "network holding the online parameters and passes the target parameters under a "
            "keyword (params=) the estimator ignores, so with delay_value=True it bootstraps "
            "from the online network and its target copy is never read. arrayrl bootstraps "
            "from the target copy. The oracle loads the target parameters into TorchRL's "
            "estimator network, so loss_qvalue, td_error, target_value and the priority are "
            "compared at the loss tolerance. No TorchRL issue found."
        ),
        tolerance=0.0,
        covers=("loss_qvalue", "td_error", "target_value", PRIORITY_OUTPUT),
    ),
)
