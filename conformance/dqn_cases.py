"""Conformance cases of ``DQNLoss`` and ``DistributionalDQNLoss`` (C51), and where TorchRL
0.14.1 differs from them.

A :class:`QLearningCase` names the loss, the action space (``actor``: ``"one_hot"``,
``"categorical"``, ``"mult_one_hot"``, ``"binary"``), the batch layout, the value
estimator and the loss's keyword arguments. ``build`` draws, in float64 NumPy, the value
network's weights (arrayrl's MLP from a seed; C51's output is read as ``[..., atoms,
actions]``), a perturbed target copy (with ``delay_value``) and a replay batch: states,
actions of the case's encoding, and under ``"next"`` states, rewards (some pushing C51's
targets past the support's ends), ``done`` and ``terminated``; optionally
``priority_weight``, a collector mask and C51's ``steps_to_next_obs``.

arrayrl's side builds a ``QValueActor`` / ``DistributionalQValueActor`` over that MLP;
TorchRL's side its own ``QValueActor`` / ``DistributionalQValueActor`` over a TorchRL
``MLP`` with the same weights. Where TorchRL cannot run a configuration, its side is
completed as :data:`DEVIATIONS` records (each compared at the usual tolerance): a torch
greedy module for binary actions, ``var_nums`` set on its ``QValueModule`` for multi
one-hot ones, torch's default dtype set to float64 around C51 on float64 inputs, and
C51's ``[B, T]`` batches flattened to ``[B·T]`` and the outputs reshaped back. Nothing is
random: the cases are not Monte-Carlo.

Each evaluation records ``loss``, the priority the loss sets in the caller's batch
(``"batch:td_error"``) and, on torch, the gradient of ``loss`` with respect to every
weight (``"loss/value.<param>"``).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from arrayrl.backends import backend_of

from arrayrl.modules import Layer

from .loss_cases import (
    GAMMA,
    HIDDEN,
    LMBDA,
    N_ACTIONS,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    _perturbed,
    _some_valid,
    arrayrl_batch,
    torch_gradients,
)
from .loss_oracle import LossDeviation

#: C51's atoms: ``ATOMS`` evenly spaced values on ``SUPPORT``
ATOMS, SUPPORT = 11, (-3.0, 3.0)
#: the group sizes of the multi one-hot actions
VAR_NUMS = (2, 3)
#: the priority the loss sets in the caller's batch, recorded under this name
PRIORITY_OUTPUT = "batch:td_error"
_LOSSES = ("DQNLoss", "DistributionalDQNLoss")
#: the network DQN and C51 learn (and keep a target copy of)
_VALUE_NETWORK = ("value_network",)


@dataclass(frozen=True)
class PriorityLossCase(LossCase):
    """A loss with one output, ``loss``, that writes its priority in the caller's batch
    (DQN, C51, QMixer).

    Each evaluation records ``loss``, the priority (:data:`PRIORITY_OUTPUT`) and, on
    torch, the gradient of ``loss`` with respect to every weight (``"loss/<role>.<param>"``).
    A subclass builds both libraries' losses: ``_arrayrl_loss(inputs, backend, device)``
    and ``_torchrl_loss(inputs, torch_dtype)`` return the loss and its trainable arrays by
    canonical name. ``estimator`` is the value estimator (TorchRL's name) and its
    hyper-parameters besides ``gamma``.
    """

    estimator: tuple[str, tuple[tuple[str, float], ...]] = ("TD0", ())

    @property
    def continuous(self) -> bool:
        return False

    @property
    def monte_carlo(self) -> bool:
        """These losses draw nothing."""
        return False

    @property
    def delay_value(self) -> bool:
        return bool(self.config.get("delay_value", True))

    @property
    def _torchrl_flat(self) -> bool:
        """Whether TorchRL's loss runs on the batch flattened to ``[B·T]`` (its per-sample
        outputs reshaped back)."""
        return False

    def _default_dtype(self, torch_dtype: Any) -> contextlib.AbstractContextManager[None]:
        """What TorchRL's loss runs in: by default, nothing changed."""
        return contextlib.nullcontext()

    # -- arrayrl ------------------------------------------------------------------------
    def evaluate_arrayrl(
        self, inputs: LossInputs, backend: str, device: Any = None, *, generator_mode: str = "numpy"
    ) -> Evaluation:
        """arrayrl's loss on ``backend``: the loss, the priority, and on torch the
        gradients of ``loss``."""
        loss, params = self._arrayrl_loss(inputs, backend, device)
        batch = arrayrl_batch(self, inputs, backend, device)
        out = loss(batch)
        value, priority = out.get("loss"), batch.get("td_error")
        outputs = {
            "loss": _host(value, backend_of(value)),
            PRIORITY_OUTPUT: _host(priority, backend_of(priority)),
        }
        gradients = _loss_gradients(value, params) if backend == "torch" else {}
        return Evaluation(outputs, gradients)

    def _arrayrl_loss(
        self, inputs: LossInputs, backend: str, device: Any
    ) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    # -- TorchRL ------------------------------------------------------------------------
    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's loss on the case's inputs (CPU): the loss, the priority it sets in
        the batch, and the gradients of ``loss`` (completed as :data:`DEVIATIONS`
        record where TorchRL cannot run the configuration)."""
        import warnings

        import torch
        from tensordict import TensorDict

        from .loss_oracle import _to_torch

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        flat = self._torchrl_flat
        with warnings.catch_warnings(), self._default_dtype(torch_dtype):
            warnings.simplefilter("ignore")
            loss, params = self._torchrl_loss(inputs, torch_dtype)
            batch = TensorDict(_to_torch(inputs.batch), batch_size=self.batch_shape)
            batch = batch.reshape((int(np.prod(self.batch_shape)),)) if flat else batch
            out = loss(batch)
            value = out["loss"]
            gradients = _loss_gradients(value, params)
        priority = batch.get(loss.tensor_keys.priority).detach()
        if flat:
            value = value.reshape(*self.batch_shape) if value.ndim else value
            priority = priority.reshape(*self.batch_shape, 1)
        outputs = {"loss": value.detach().numpy(), PRIORITY_OUTPUT: priority.numpy()}
        return Evaluation(outputs, gradients)

    def _torchrl_loss(self, inputs: LossInputs, torch_dtype: Any) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class QLearningCase(PriorityLossCase):
    """One DQN or C51 configuration (see the module docstring).

    ``actor`` is the action space; ``config`` the loss's keyword arguments;
    ``estimator`` DQN's value estimator; ``priority_weights`` puts ``priority_weight`` in
    the batch; ``steps`` puts C51's ``steps_to_next_obs`` (1 to 3) in it.
    """

    priority_weights: bool = False
    steps: bool = False

    @property
    def distributional(self) -> bool:
        return self.loss == "DistributionalDQNLoss"

    @property
    def _torchrl_flat(self) -> bool:
        """TorchRL's C51 takes only a one-dimensional batch (a recorded deviation)."""
        return self.distributional and len(self.batch_shape) > 1

    def network_specs(self) -> dict[str, NetSpec]:
        """The value network: one hidden layer, one output per action (or per atom and
        action for C51)."""
        width = sum(VAR_NUMS) if self.actor == "mult_one_hot" else N_ACTIONS
        out = ATOMS * width if self.distributional else width
        return {"value": NetSpec(OBS, out, (HIDDEN,))}

    def build(self, seed: int, dtype: str) -> LossInputs:
        """Weights, a perturbed target copy (with ``delay_value``) and a replay batch,
        drawn in float64 and cast to ``dtype``."""
        own = zlib.crc32(self.name.encode())  # each case its own draws
        rng = np.random.default_rng([seed, 13, own])
        weights = {"value": _mlp_weights(self.network_specs()["value"], seed * 100 + own % 97)}
        targets = {"value": _perturbed(weights["value"], rng, 0.2)} if self.delay_value else {}
        return LossInputs(weights, targets, self._batch(rng), self.batch_shape).astype(dtype)

    def _batch(self, rng: np.random.Generator) -> dict[str, Any]:
        shape = self.batch_shape
        column = (*shape, 1)
        done = rng.random(column) < 0.3
        batch: dict[str, Any] = {
            "observation": rng.standard_normal((*shape, OBS)),
            "action": _actions(self.actor, shape, rng),
            "next": {
                "observation": rng.standard_normal((*shape, OBS)),
                "reward": 2.0 * rng.standard_normal(column),
                "done": done,
                "terminated": done & (rng.random(column) < 0.5),
            },
        }
        if self.priority_weights:
            batch["priority_weight"] = rng.uniform(0.2, 1.5, shape)
        if self.steps:
            batch["steps_to_next_obs"] = rng.integers(1, 4, column)
        if "collector" in self.masks:
            batch["collector"] = {"mask": _some_valid(rng, shape)}
        return batch

    # -- arrayrl ------------------------------------------------------------------------
    def _arrayrl_loss(
        self, inputs: LossInputs, backend: str, device: Any
    ) -> tuple[Any, dict[str, Any]]:
        """The loss (NumPy-built, weights and targets loaded, moved to ``backend``) and
        its trainable arrays by canonical name."""
        from arrayrl.modules import MLP, unflatten_params
        from arrayrl.objectives.dqn import DistributionalDQNLoss, DQNLoss

        spec = self.network_specs()["value"]
        weights = inputs.weights["value"]
        mlp = MLP(
            spec.in_features,
            spec.out_features,
            list(spec.num_cells),
            dtype=next(iter(weights.values())).dtype,
        )
        mlp.params = unflatten_params(dict(weights))
        if self.distributional:
            loss = DistributionalDQNLoss(self._arrayrl_c51_actor(mlp), gamma=GAMMA, **self.config)
        else:
            loss = DQNLoss(self._arrayrl_actor(mlp), **self.config)
            name, extra = self.estimator
            loss.make_value_estimator(name, gamma=GAMMA, **dict(extra))
        layers = {"value": mlp}
        return _arrayrl_prepared(
            loss, layers, _VALUE_NETWORK, inputs.target_weights, backend, device
        )

    def _arrayrl_actor(self, mlp: Any) -> Any:
        from arrayrl.modules import QValueActor

        var_nums = list(VAR_NUMS) if self.actor == "mult_one_hot" else None
        return QValueActor(mlp, action_space=self.actor, var_nums=var_nums)

    def _arrayrl_c51_actor(self, mlp: Any) -> Any:
        from arrayrl.modules import DistributionalQValueActor, Sequential

        support = np.linspace(*SUPPORT, ATOMS).astype(
            next(iter(mlp.named_parameters().values())).dtype
        )
        return DistributionalQValueActor(
            Sequential(mlp, AtomsByActions()), support=support, action_space=self.actor
        )

    # -- TorchRL ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _default_dtype(self, torch_dtype: Any) -> Iterator[None]:
        """C51 on float64: TorchRL builds its projection in torch's default dtype."""
        import torch

        if not (self.distributional and torch_dtype == torch.float64):
            yield
            return
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(old)

    def _torchrl_loss(self, inputs: LossInputs, torch_dtype: Any) -> tuple[Any, dict[str, Any]]:
        import torch
        import torchrl.objectives as objectives
        from torchrl.modules import MLP
        from torchrl.objectives import ValueEstimators

        spec = self.network_specs()["value"]
        out: Any = spec.out_features
        if self.distributional:
            out = (ATOMS, spec.out_features // ATOMS)
        mlp = MLP(
            in_features=spec.in_features, out_features=out, num_cells=list(spec.num_cells)
        ).to(torch_dtype)
        load_torch_weights(mlp, inputs.weights["value"])
        if self.distributional:
            support = torch.linspace(*SUPPORT, ATOMS, dtype=torch_dtype)
            actor = _torchrl_c51_actor(mlp, support, self.actor)
            loss = objectives.DistributionalDQNLoss(actor, gamma=GAMMA, **self.config)
        else:
            actor = _torchrl_actor(mlp, self.actor)
            loss = objectives.DQNLoss(actor, action_space=self.actor, **self.config)
            name, extra = self.estimator
            loss.make_value_estimator(getattr(ValueEstimators, name), gamma=GAMMA, **dict(extra))
        return _torchrl_prepared(loss, {"value": mlp}, _VALUE_NETWORK, inputs.target_weights)


def _torchrl_actor(mlp: Any, space: str) -> Any:
    """TorchRL's QValueActor over ``mlp`` (``var_nums`` set on its QValueModule for multi
    one-hot actions); for binary actions, a sequence whose greedy step is a torch
    transcription of arrayrl's rule (TorchRL's QValueModule raises for binary)."""
    import torch
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import QValueActor

    if space != "binary":
        actor = QValueActor(mlp, in_keys=["observation"], action_space=space)
        if space == "mult_one_hot":
            actor[1].var_nums = list(VAR_NUMS)
        return actor

    class BinaryGreedy(torch.nn.Module):
        def forward(self, values: Any) -> tuple[Any, Any, Any]:
            hot = values > 0
            return hot.long(), values, (values * hot).sum(-1, keepdim=True)

    return TensorDictSequential(
        TensorDictModule(mlp, ["observation"], ["action_value"]),
        TensorDictModule(
            BinaryGreedy(), ["action_value"], ["action", "action_value", "chosen_action_value"]
        ),
    )


def _torchrl_c51_actor(mlp: Any, support: Any, space: str) -> Any:
    from torchrl.modules import DistributionalQValueActor

    return DistributionalQValueActor(
        mlp, support=support, in_keys=["observation"], action_space=space
    )


class AtomsByActions(Layer):
    """A parameter-free arrayrl layer: ``[..., atoms·actions]`` → ``[..., atoms,
    actions]`` (TorchRL's ``MLP(out_features=(atoms, actions))`` reshape)."""

    def apply(self, params: Mapping[str, Any], x: Any) -> Any:
        xp = backend_of(x).xp
        return xp.reshape(x, (*x.shape[:-1], ATOMS, x.shape[-1] // ATOMS))


def _actions(space: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Actions of ``space``'s encoding: an index, a one-hot, one one-hot per group, or
    independent bits."""
    if space == "categorical":
        return rng.integers(0, N_ACTIONS, shape)
    if space == "binary":
        return (rng.random((*shape, N_ACTIONS)) < 0.5).astype(np.int64)
    if space == "mult_one_hot":
        return np.concatenate(
            [np.eye(n, dtype=np.int64)[rng.integers(0, n, shape)] for n in VAR_NUMS], axis=-1
        )
    return np.eye(N_ACTIONS, dtype=np.int64)[rng.integers(0, N_ACTIONS, shape)]


def load_torch_weights(net: Any, weights: Mapping[str, np.ndarray]) -> None:
    """The case's weights into a torch network (the names agree with arrayrl's); none for
    a network without parameters."""
    import torch

    if weights:
        net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})


def _arrayrl_prepared(
    loss: Any,
    layers: Mapping[str, Any],
    networks: tuple[str, ...],
    targets: Mapping[str, Mapping[str, np.ndarray]],
    backend: str,
    device: Any,
) -> tuple[Any, dict[str, Any]]:
    """``loss`` with the case's target weights loaded, moved to ``backend``, and its
    trainable arrays by canonical name (``"<role>.<param>"``: the leaves of the layers in
    ``layers``, by role, found by identity in ``networks``' trees)."""
    from arrayrl.modules import flatten_params

    names = {
        id(leaf): f"{role}.{name}"
        for role, layer in layers.items()
        for name, leaf in flatten_params(layer.params).items()
    }
    paths = {}
    for network in networks:
        tree = flatten_params(loss.network_params(network, None))
        paths[network] = {path: names[id(leaf)] for path, leaf in tree.items() if id(leaf) in names}
    _load_targets(loss, paths, targets)
    loss.to(backend, device)
    leaves = {network: flatten_params(loss.network_params(network, None)) for network in paths}
    params = {
        canonical: leaves[network][path]
        for network, by_path in paths.items()
        for path, canonical in by_path.items()
    }
    return loss, params


def _load_targets(
    loss: Any,
    paths: Mapping[str, Mapping[str, str]],
    targets: Mapping[str, Mapping[str, np.ndarray]],
) -> None:
    """The case's target weights into arrayrl's ``target_<network>_params`` (``paths``:
    ``{network: {path in the loss's tree: "<role>.<param>"}}``)."""
    if not targets:
        return
    state = loss.state_dict()
    for network, by_path in paths.items():
        for path, canonical in by_path.items():
            role, name = canonical.split(".", 1)
            state[f"target_{network}_params.{path}"] = targets[role][name]
    loss.load_state_dict(state)


def _torchrl_prepared(
    loss: Any,
    nets: Mapping[str, Any],
    networks: tuple[str, ...],
    targets: Mapping[str, Mapping[str, np.ndarray]],
) -> tuple[Any, dict[str, Any]]:
    """TorchRL's ``loss`` with the case's target weights in its
    ``target_<network>_params``, and the parameters of ``nets`` by canonical name."""
    import torch

    names = {id(p): (role, n) for role, net in nets.items() for n, p in net.named_parameters()}
    if targets:
        with torch.no_grad():
            for network in networks:
                own = getattr(loss, f"{network}_params")
                target = getattr(loss, f"target_{network}_params")
                for key, leaf in own.items(True, True):
                    if id(leaf) in names:
                        role, name = names[id(leaf)]
                        value = torch.from_numpy(np.array(targets[role][name]))
                        target.get(key).data.copy_(value)
    return loss, {f"{role}.{n}": p for role, net in nets.items() for n, p in net.named_parameters()}


def _loss_gradients(value: Any, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"loss/<param>": d loss / d param}`` (:func:`~.loss_cases.torch_gradients`,
    which reads ``loss_*`` terms, under the name ``loss``)."""
    found = torch_gradients({"loss_": value}, params)
    return {f"loss/{key.split('/', 1)[1]}": grad for key, grad in found.items()}


# -- the cases ---------------------------------------------------------------------------

_N, _BT = (32,), (4, 8)


def _case(loss: str, variant: str = "", **fields: Any) -> QLearningCase:
    """A case named ``loss[space,layout,variant]``."""
    case = QLearningCase(name="", loss=loss, advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (case.actor, layout, variant) if p)
    return replace(case, name=f"{loss}[{label}]")


def _dqn_cases() -> list[QLearningCase]:
    """Every action space, double DQN, delayed targets on and off, the three distances
    and reductions, priority weights, TD(0) / TD(1) / TD(λ), a collector mask."""
    dqn = "DQNLoss"
    return [
        _case(dqn, actor="one_hot", core=True),
        _case(dqn, actor="categorical", batch_shape=_BT, core=True),
        _case(dqn, "double", actor="mult_one_hot", config={"double_dqn": True}, core=True),
        _case(dqn, actor="binary", batch_shape=_BT, core=True),
        _case(
            dqn,
            "double,priority_weight",
            actor="binary",
            priority_weights=True,
            config={"double_dqn": True},
        ),
        _case(
            dqn,
            "double,l1,sum",
            actor="categorical",
            config={"double_dqn": True, "loss_function": "l1", "reduction": "sum"},
        ),
        _case(
            dqn,
            "double,td_lambda",
            actor="one_hot",
            batch_shape=_BT,
            config={"double_dqn": True},
            estimator=("TDLambda", (("lmbda", LMBDA),)),
        ),
        _case(
            dqn,
            "td1,smooth_l1,none",
            actor="categorical",
            batch_shape=_BT,
            config={"loss_function": "smooth_l1", "reduction": "none"},
            estimator=("TD1", ()),
        ),
        _case(
            dqn,
            "no_delay,priority_weight,none",
            actor="one_hot",
            priority_weights=True,
            config={"delay_value": False, "reduction": "none"},
        ),
        _case(
            dqn,
            "tensordict,collector_mask",
            actor="categorical",
            batch_shape=_BT,
            tensordict=True,
            masks=("collector",),
        ),
        _case(
            dqn,
            "no_delay,smooth_l1",
            actor="mult_one_hot",
            batch_shape=_BT,
            config={"delay_value": False, "loss_function": "smooth_l1"},
        ),
    ]


def _c51_cases() -> list[QLearningCase]:
    """One-hot and categorical actions on ``[B]`` (TorchRL's layout) and ``[B, T]``,
    delayed targets on and off, reductions, priority weights, multi-step discounts, a
    collector mask."""
    c51 = "DistributionalDQNLoss"
    return [
        _case(c51, actor="one_hot", core=True),
        _case(
            c51,
            "priority_weight,steps",
            actor="categorical",
            priority_weights=True,
            steps=True,
            core=True,
        ),
        _case(c51, actor="categorical", batch_shape=_BT),
        _case(
            c51,
            "no_delay,none",
            actor="one_hot",
            batch_shape=_BT,
            config={"delay_value": False, "reduction": "none"},
        ),
        _case(
            c51,
            "no_delay,sum",
            actor="categorical",
            config={"delay_value": False, "reduction": "sum"},
        ),
        _case(
            c51,
            "tensordict,collector_mask,steps",
            actor="one_hot",
            tensordict=True,
            masks=("collector",),
            steps=True,
        ),
    ]


def cases() -> list[QLearningCase]:
    """Every DQN and C51 conformance case."""
    return [*_dqn_cases(), *_c51_cases()]


def _dqn_space(space: str) -> Any:
    return lambda case, dtype: case.loss == "DQNLoss" and case.actor == space


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-qvalue-binary",
        applies=_dqn_space("binary"),
        reason=(
            "TorchRL 0.14.1's QValueModule has no greedy rule for binary actions (its "
            "_binary raises: it is called without its 'support' argument), so no TorchRL "
            "QValueActor runs them, although DQNLoss's maths (Q(s, a) = sum_i a_i v_i) "
            "cover them. arrayrl's QValueModule picks a_i = 1 iff v_i > 0, which maximises "
            "sum_i a_i v_i. The TorchRL cell runs TorchRL's DQNLoss over a "
            "TensorDictSequential whose greedy step is a torch transcription of that rule; "
            "it is compared at the usual tolerance."
        ),
        tolerance=0.0,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-qvalue-actor-var-nums",
        applies=_dqn_space("mult_one_hot"),
        reason=(
            "TorchRL's QValueActor takes no var_nums and does not read a MultiOneHot spec's "
            "nvec, so its QValueModule raises for multi one-hot actions; arrayrl's "
            "QValueActor takes var_nums (or the spec's nvec). The TorchRL cell sets var_nums "
            "on TorchRL's QValueModule after construction; compared at the usual tolerance."
        ),
        tolerance=0.0,
        torchrl_issue="pytorch/rl#1440",
    ),
    LossDeviation(
        key="torchrl-c51-default-dtype",
        applies=lambda case, dtype: case.loss == "DistributionalDQNLoss" and dtype == "float64",
        reason=(
            "TorchRL's DistributionalDQNLoss builds the projected distribution with "
            "torch.zeros(batch, atoms) in torch's default dtype (float32), so on float64 "
            "inputs index_add_ fails ('self (Float) and source (Double) must have the same "
            "scalar type'). arrayrl computes in the inputs' dtype. The TorchRL cell runs "
            "with torch.set_default_dtype(torch.float64); compared at the usual tolerance. "
            "No TorchRL issue found."
        ),
        tolerance=0.0,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-c51-one-dimensional-batch",
        applies=lambda case, dtype: (
            case.loss == "DistributionalDQNLoss" and len(case.batch_shape) > 1
        ),
        reason=(
            "TorchRL's DistributionalDQNLoss needs a one-dimensional batch, and its error "
            "message for any other raises AttributeError instead (self.__class__.__name___, "
            "a typo). arrayrl takes any batch shape (the projection is written for [*B, "
            "atoms]). The TorchRL cell runs on the batch flattened to [B*T] and its "
            "per-sample outputs are reshaped back; compared at the usual tolerance. No "
            "TorchRL issue found."
        ),
        tolerance=0.0,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-c51-host-synchronisation",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's DistributionalDQNLoss reads the support's ends with .item() and moves "
            "the rewards, flags, support and next-state probabilities to the CPU for the "
            "projection (index_add_ on a CPU tensor), then the result back: host "
            "synchronisations and transfers on every call on a GPU. arrayrl's "
            "categorical_projection stays on the inputs' device with no host read (one "
            "dense contraction instead of a scatter). Recorded, not measured (the numbers "
            "agree). No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-c51-vmax-rounding",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's projection index b = (Tz - Vmin) / delta_z can round above atoms - 1 "
            "when Tz = Vmax (e.g. 32 atoms on [0, 1.140625] in float32, or 30 atoms on "
            "[-100, 100] in float64); its ceil is then atoms, and index_add_ adds that mass "
            "to the next sample's first atom, or raises IndexError for the last sample. "
            "arrayrl computes b = (N - 1)(Tz - Vmin) / (Vmax - Vmin), exact at both ends, "
            "clipped to [0, N - 1]. The cases' support does not hit it; recorded, not "
            "measured. No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-c51-multistep-discount-shape",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's DistributionalDQNLoss multiplies gamma ** steps_to_next_obs by the "
            "support without aligning them, so a [B] steps_to_next_obs fails (or broadcasts "
            "wrongly when B equals the number of atoms); arrayrl reshapes [B] and [B, 1] "
            "alike to the reward's shape. The cases use [B, 1], which TorchRL takes; "
            "recorded, not measured."
        ),
        tolerance=None,
        torchrl_issue="pytorch/rl#2269",
    ),
    LossDeviation(
        key="torchrl-dqn-action-space-from-actor",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's DQNLoss given a QValueActor built with action_space= (no spec) and "
            "no action_space of its own raises ValueError: it reads the actor's spec, a "
            "composite whose action entry is None. arrayrl reads the actor's action_space. "
            "The cases pass action_space to TorchRL; recorded, not measured (see "
            "tests/test_dqn.py). No TorchRL issue found (pytorch/rl#1077 asks for the "
            "inference)."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
)

__all__ = [
    "ATOMS",
    "DEVIATIONS",
    "PRIORITY_OUTPUT",
    "SUPPORT",
    "VAR_NUMS",
    "PriorityLossCase",
    "QLearningCase",
    "cases",
    "load_torch_weights",
]
