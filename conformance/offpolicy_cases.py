"""The off-policy loss conformance cases: ``SACLoss`` (v2 and v1), ``DiscreteSACLoss``,
``TD3Loss``, ``DDPGLoss``, ``REDQLoss``, ``TQCLoss`` and ``CrossQLoss``.

An :class:`OffPolicyCase` is a :class:`~.loss_cases.LossCase` (the runner, the ``-k``
families, the report and the pytest entry treat it as any other) whose networks are an
actor, a Q critic (an ensemble of ``members`` stacked members, or DDPG's single critic)
and SAC v1's value network, and whose batch is a replay sample: states, actions, and
under ``"next"`` the next states, rewards, ``done`` and ``terminated``, optionally with
``priority_weight``. Weights are drawn in float64 NumPy from arrayrl's MLP, the Q members
each from a seed of its own (leaves ``(members, ...)``, the layout of the loss's
``qvalue_network_params``, which is also TorchRL's); target copies of the roles in
``perturbed_targets`` get weights of their own.

arrayrl's loss is built on NumPy from arrayrl modules, the case's members and targets are
loaded through ``load_state_dict`` (replacing the members the loss drew at construction),
its generators are reset to :data:`~.loss_cases.LOSS_SEED`, and it moves to the backend.
With ``generator_mode="numpy"`` every backend draws the same NumPy noise (the reference);
``"native"`` on torch draws from a ``torch.Generator`` seeded the same way, which is what
TorchRL draws from torch's global generator after ``torch.manual_seed(LOSS_SEED)`` when the
loss draws in TorchRL's order and shapes (TanhNormal's reparameterised actions, TD3's
smoothing noise, REDQ's ``randperm`` subset): :mod:`.offpolicy_oracle` compares TorchRL
with that twin, so every output and gradient is compared on the same draws.

Besides the loss's outputs each evaluation records the priority the loss sets in the
caller's batch (``"batch:td_error"``) and, for CrossQ, the critics' running statistics
after the call (``"buffer:<name>"``, member axis first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .loss_cases import (
    ACT,
    GAMMA,
    HIDDEN,
    LMBDA,
    LOSS_SEED,
    N_ACTIONS,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _mlp_weights,
    _perturbed,
    torch_gradients,
)

OFF_POLICY_LOSSES = (
    "SACLoss",
    "DiscreteSACLoss",
    "TD3Loss",
    "DDPGLoss",
    "REDQLoss",
    "TQCLoss",
    "CrossQLoss",
)
#: quantiles per TQC critic
N_QUANTILES = 5
#: CrossQ's BatchRenorm1d settings (a short warm-up, so that the renormalisation acts)
RENORM = {"warmup_steps": 2, "momentum": 0.1}
#: the losses that learn a temperature and read ``target_entropy="auto"`` from a spec
_TEMPERATURE = ("SACLoss", "REDQLoss", "TQCLoss", "CrossQLoss")
#: the losses whose outputs do not depend on random draws
_NO_DRAWS = ("DiscreteSACLoss", "DDPGLoss")
#: the names of BatchRenorm1d's running statistics (buffers, not parameters)
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
#: which network of the loss holds each role
NETWORKS = {"actor": "actor_network", "qvalue": "qvalue_network", "value": "value_network"}
#: the priority the loss sets in the caller's batch, recorded under this name
PRIORITY_OUTPUT = "batch:td_error"


@dataclass(frozen=True)
class OffPolicyCase(LossCase):
    """One off-policy loss on one configuration.

    ``actor``: ``"tanh_normal"`` (SAC, REDQ, TQC, CrossQ), ``"deterministic"`` (an
    ``Actor`` over an MLP ending in tanh) or ``"tanh_delta"`` (a ``ProbabilisticActor``
    with ``TanhDelta`` on ``[-1, 1]``) for TD3 / DDPG, ``"one_hot"`` or ``"categorical"``
    for DiscreteSAC. ``members``: the Q ensemble's size (``num_qvalue_nets``; 0 for DDPG's
    single critic). ``value_network``: SAC v1. ``priority_weights``: the batch carries
    ``priority_weight``. ``auto_entropy``: ``target_entropy="auto"`` read from an
    ``action_spec`` (``Bounded(-1, 1)``) given to both libraries. ``estimator``: the value
    estimator (TorchRL's name) and its hyper-parameters besides ``gamma``.
    """

    members: int = 2
    value_network: bool = False
    priority_weights: bool = False
    auto_entropy: bool = False
    estimator: tuple[str, tuple[tuple[str, float], ...]] = ("TD0", ())

    off_policy = True

    @property
    def continuous(self) -> bool:
        return self.actor not in ("one_hot", "categorical")

    @property
    def monte_carlo(self) -> bool:
        """Whether the outputs depend on random draws (every loss but DiscreteSAC's
        expectations and DDPG's deterministic target)."""
        return self.loss not in _NO_DRAWS

    def network_specs(self) -> dict[str, NetSpec]:
        """The MLP of every role: ``actor``, ``qvalue`` (one member; CrossQ's gets a
        BatchRenorm1d after its first layer) and SAC v1's ``value``; DDPG's critic is
        ``qvalue`` with ``members=0``."""
        head = {
            "tanh_normal": 2 * ACT,
            "deterministic": ACT,
            "tanh_delta": ACT,
        }.get(self.actor, N_ACTIONS)
        specs = {
            "actor": NetSpec(OBS, head, (HIDDEN,),
                             activate_last_layer=self.actor == "deterministic"),
        }
        if self.loss == "DiscreteSACLoss":
            specs["qvalue"] = NetSpec(OBS, N_ACTIONS, (HIDDEN,))
        else:
            out = N_QUANTILES if self.loss == "TQCLoss" else 1
            specs["qvalue"] = NetSpec(OBS + ACT, out, (HIDDEN,))
        if self.value_network:
            specs["value"] = NetSpec(OBS, 1, (HIDDEN,))
        return specs

    def build(self, seed: int, dtype: str) -> LossInputs:
        """Weights (Q members stacked), perturbed targets and a replay batch, drawn in
        float64 and cast to ``dtype``."""
        rng = np.random.default_rng([seed, 11])
        weights = {}
        for k, (role, spec) in enumerate(self.network_specs().items()):
            base = seed * 100 + 10 * k
            if role != "qvalue":
                weights[role] = _mlp_weights(spec, base)
            elif not self.members:  # DDPG's single critic
                weights[role] = self._critic_weights(spec, base)
            else:
                members = [self._critic_weights(spec, base + e) for e in range(self.members)]
                weights[role] = {n: np.stack([m[n] for m in members]) for n in members[0]}
        targets = {role: _perturbed(weights[role], rng, 0.1) for role in self.perturbed_targets}
        batch = self._replay_batch(rng)
        return LossInputs(weights, targets, batch, self.batch_shape).astype(dtype)

    def _critic_weights(self, spec: NetSpec, seed: int) -> dict[str, np.ndarray]:
        """One critic's weights; CrossQ's gains a BatchRenorm1d (``"1.*"``, random affine
        parameters) between its first layer and its activation, TorchRL MLP's names."""
        weights = _mlp_weights(spec, seed)
        if self.loss != "CrossQLoss":
            return weights
        rng = np.random.default_rng([seed, 3])
        return {
            "0.weight": weights["0.weight"],
            "0.bias": weights["0.bias"],
            "1.weight": 1.0 + 0.2 * rng.standard_normal(HIDDEN),
            "1.bias": 0.2 * rng.standard_normal(HIDDEN),
            # running statistics of a layer at the end of its warm-up (the warm-up
            # factor is 1), so that the renormalisation (r, d, their clipping) acts
            "1.running_mean": 0.5 * rng.standard_normal(HIDDEN),
            "1.running_var": rng.uniform(0.05, 2.0, HIDDEN),
            "1.num_batches_tracked": np.asarray(RENORM["warmup_steps"], dtype=np.int64),
            "3.weight": weights["2.weight"],
            "3.bias": weights["2.bias"],
        }

    def _replay_batch(self, rng: np.random.Generator) -> dict[str, Any]:
        """A replay sample: ``done`` about 30%, half of them ``terminated``."""
        shape = self.batch_shape
        column = (*shape, 1)
        done = rng.random(column) < 0.3
        batch: dict[str, Any] = {
            "observation": rng.standard_normal((*shape, OBS)),
            "action": self._actions(rng),
            "next": {
                "observation": rng.standard_normal((*shape, OBS)),
                "reward": rng.standard_normal(column),
                "done": done,
                "terminated": done & (rng.random(column) < 0.5),
            },
        }
        if self.priority_weights:
            batch["priority_weight"] = rng.uniform(0.2, 1.5, shape)
        if "collector" in self.masks:
            batch["collector"] = {"mask": _some_valid(rng, column)}
        return batch

    def _actions(self, rng: np.random.Generator) -> np.ndarray:
        shape = self.batch_shape
        if self.continuous:
            return rng.uniform(-0.9, 0.9, (*shape, ACT))
        index = rng.integers(0, N_ACTIONS, shape)
        return index if self.actor == "categorical" else np.eye(N_ACTIONS)[index]

    def loss_kwargs(self, spec: Any) -> dict[str, Any]:
        """The constructor's keyword arguments (``spec``: the action spec of this
        library, used for ``target_entropy="auto"``)."""
        kwargs = dict(self.config)
        if self.members:
            kwargs["num_qvalue_nets"] = self.members
        if self.loss in _TEMPERATURE:
            if self.auto_entropy:
                kwargs["action_spec"] = spec
            else:
                kwargs.setdefault("target_entropy", -1.5)
        if self.loss == "DiscreteSACLoss":
            kwargs.update(num_actions=N_ACTIONS, action_space=self.actor.replace("_", "-"))
        return kwargs

    def estimator_kwargs(self) -> tuple[str, dict[str, float]]:
        """The value estimator's TorchRL name and hyper-parameters."""
        name, extra = self.estimator
        return name, {"gamma": GAMMA, **dict(extra)}


def _some_valid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    mask = rng.random(shape) < 0.75
    mask.flat[0] = True
    return mask


# -- arrayrl's side ----------------------------------------------------------------------


def renorm_critic(spec: NetSpec, dtype: Any) -> Any:
    """CrossQ's critic: TorchRL's ``MLP(..., activation_class=ReLU, norm_class=
    BatchRenorm1d)`` layout (Linear, BatchRenorm1d, ReLU, Linear: the same parameter and
    buffer names), built from arrayrl's MLP, which concatenates the critic's inputs."""
    from arrayrl.modules import MLP, BatchRenorm1d

    mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells),
              activation_class="relu", dtype=dtype)
    mlp.layers.insert(1, BatchRenorm1d(spec.num_cells[0], dtype=dtype, **RENORM))
    return mlp


def arrayrl_offpolicy_networks(
    case: OffPolicyCase, weights: Mapping[str, Mapping[str, np.ndarray]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({role: module}, {role: MLP})`` with arrayrl's modules holding ``weights`` (a Q
    ensemble's module holds its first member; the loss's members are loaded later)."""
    from arrayrl.modules import (
        MLP,
        Actor,
        DictModule,
        NormalParamExtractor,
        ProbabilisticActor,
        Sequential,
        ValueOperator,
        unflatten_params,
    )
    from arrayrl.modules import distributions as dists

    mlps = {}
    for role, spec in case.network_specs().items():
        dtype = next(iter(weights[role].values())).dtype
        if role == "qvalue" and case.loss == "CrossQLoss":
            mlp = renorm_critic(spec, dtype)
        else:
            mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells),
                      activate_last_layer=spec.activate_last_layer, dtype=dtype)
        first = {n: w[0] if role == "qvalue" and case.members else w
                 for n, w in weights[role].items() if not is_buffer(n)}
        mlp.params = unflatten_params(dict(first))
        mlps[role] = mlp
    actor: Any
    if case.actor == "tanh_normal":
        actor = ProbabilisticActor(
            DictModule(Sequential(mlps["actor"], NormalParamExtractor()),
                       in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], distribution_class=dists.TanhNormal,
            return_log_prob=True,
        )
    elif case.actor == "deterministic":
        actor = Actor(mlps["actor"])
    elif case.actor == "tanh_delta":
        actor = ProbabilisticActor(
            DictModule(mlps["actor"], in_keys=["observation"], out_keys=["param"]),
            in_keys=["param"], distribution_class=dists.TanhDelta,
            distribution_kwargs={"low": -1.0, "high": 1.0},
        )
    else:
        distribution = dists.OneHotCategorical if case.actor == "one_hot" else dists.Categorical
        actor = ProbabilisticActor(
            DictModule(mlps["actor"], in_keys=["observation"], out_keys=["logits"]),
            in_keys=["logits"], distribution_class=distribution, return_log_prob=True,
        )
    modules = {"actor": actor}
    if case.loss == "DiscreteSACLoss":
        modules["qvalue"] = DictModule(mlps["qvalue"], in_keys=["observation"],
                                       out_keys=["action_value"])
    else:
        modules["qvalue"] = ValueOperator(mlps["qvalue"], in_keys=["observation", "action"])
    if case.value_network:
        modules["value"] = ValueOperator(mlps["value"], in_keys=["observation"])
    return modules, mlps


def is_buffer(name: str) -> bool:
    """Whether weight ``name`` is a running statistic of a BatchRenorm1d."""
    return name.rsplit(".", 1)[-1] in BUFFERS


def _action_spec() -> Any:
    from arrayrl.specs import Bounded

    return Bounded(-1.0, 1.0, shape=(ACT,))


def _flat(tree: Mapping[str, Any]) -> dict[str, Any]:
    from arrayrl.modules import flatten_params

    return flatten_params(tree)


def _canonical_paths(loss: Any, mlps: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{network: {path in its parameter tree: "<role>.<param>"}}``, by the identity
    of the module's leaves with the MLPs' (the loss's trees have the module's paths)."""
    names = {id(leaf): f"{role}.{name}" for role, mlp in mlps.items()
             for name, leaf in _flat(mlp.params).items()}
    return {
        network: {path: names[id(leaf)]
                  for path, leaf in _flat(loss._networks[network].params).items()}
        for network in loss._networks
    }


def _load_case_weights(
    loss: Any, paths: Mapping[str, Mapping[str, str]], inputs: LossInputs
) -> None:
    """The case's weights into every network's parameters and target copy (perturbed
    ones for the roles that have them), Q members included, via ``load_state_dict``."""
    state = loss.state_dict()
    for network, by_path in paths.items():
        for path, canonical in by_path.items():
            role, name = canonical.split(".", 1)
            online = inputs.weights[role][name]
            state[f"{network}_params.{path}"] = online
            target_key = f"target_{network}_params.{path}"
            if target_key in state:
                state[target_key] = inputs.target_weights.get(role, {}).get(name, online)
    for name, value in inputs.weights["qvalue"].items():  # CrossQ's running statistics
        if is_buffer(name):
            state[f"qvalue_network_params.module.{name}"] = value
    loss.load_state_dict(state)


def arrayrl_offpolicy_loss(
    case: OffPolicyCase,
    inputs: LossInputs,
    backend: str,
    device: Any = None,
    *,
    generator_mode: str = "numpy",
) -> tuple[Any, dict[str, Any]]:
    """arrayrl's loss for ``case`` on ``backend`` and its trainable arrays by canonical
    name (``"<role>.<param>"``, ``"log_alpha"``)."""
    import arrayrl.objectives as objectives

    modules, mlps = arrayrl_offpolicy_networks(case, inputs.weights)
    args = [modules["actor"], modules["qvalue"]]
    if case.value_network:
        args.append(modules["value"])
    cls = getattr(objectives, case.loss)
    loss = cls(*args, seed=LOSS_SEED, **case.loss_kwargs(_action_spec()))
    params = prepare_offpolicy_loss(
        case, loss, mlps, inputs, backend, device, generator_mode=generator_mode
    )
    return loss, params


def prepare_offpolicy_loss(
    case: OffPolicyCase,
    loss: Any,
    mlps: Mapping[str, Any],
    inputs: LossInputs,
    backend: str,
    device: Any = None,
    *,
    generator_mode: str = "numpy",
) -> dict[str, Any]:
    """Set ``loss`` up for ``case``: its value estimator, the case's weights (members
    and targets), fresh generators in ``generator_mode``, moved to ``backend``. Returns
    its trainable arrays by canonical name (``"<role>.<param>"``, ``"log_alpha*"``)."""
    name, hyperparams = case.estimator_kwargs()
    loss.make_value_estimator(name, **hyperparams)
    paths = _canonical_paths(loss, mlps)
    _load_case_weights(loss, paths, inputs)
    loss.generator_mode = generator_mode
    loss.seed = LOSS_SEED  # fresh generators: the members' draws are not carried over
    loss.to(backend, device)
    params = {}
    for network, by_path in paths.items():
        leaves = _flat(loss.network_params(network, None))
        params.update({by_path[path]: leaves[path] for path in by_path})
    params.update({n: p for n, p in loss.named_parameters() if n.startswith("log_alpha")})
    return params


def evaluate_prepared_loss(
    case: OffPolicyCase,
    loss: Any,
    params: Mapping[str, Any],
    inputs: LossInputs,
    backend: str,
    device: Any = None,
) -> Evaluation:
    """Run ``loss`` on the case's batch: every output, the priority it sets in the
    batch, and on torch the gradients of every ``loss_*`` term w.r.t. ``params``."""
    from arrayrl.backends import backend_of

    from .loss_cases import _host, arrayrl_batch

    batch = arrayrl_batch(case, inputs, backend, device)
    out = loss(batch)
    terms = {_key_name(k): out.get(k) for k in out.keys(include_nested=True, leaves_only=True)}
    outputs = {key: _host(value, backend_of(value)) for key, value in terms.items()}
    priority = batch.get("td_error")
    outputs[PRIORITY_OUTPUT] = _host(priority, backend_of(priority))
    gradients = torch_gradients(terms, params) if backend == "torch" else {}
    return Evaluation(outputs, gradients)


def evaluate_offpolicy(
    case: OffPolicyCase,
    inputs: LossInputs,
    backend: str,
    device: Any = None,
    *,
    generator_mode: str = "numpy",
) -> Evaluation:
    """Run arrayrl's loss on ``backend``: every output, the priority set in the batch,
    CrossQ's running statistics, and on torch the gradients of every ``loss_*`` term."""
    from arrayrl.backends import backend_of

    from .loss_cases import _host

    loss, params = arrayrl_offpolicy_loss(case, inputs, backend, device,
                                          generator_mode=generator_mode)
    evaluation = evaluate_prepared_loss(case, loss, params, inputs, backend, device)
    if case.loss == "CrossQLoss":
        for name, value in loss.buffers().items():
            evaluation.outputs[f"buffer:{name}"] = _host(value, backend_of(value))
    return evaluation


def _key_name(key: Any) -> str:
    """An output key as a flat name (``("next", "state_value")`` -> ``next.state_value``)."""
    return ".".join(key) if isinstance(key, tuple) else key


# -- the cases ---------------------------------------------------------------------------

_N, _BT = (32,), (4, 8)


def _case(loss: str, variant: str, **fields: Any) -> OffPolicyCase:
    """A case named ``loss[actor,layout,members,variant]``."""
    case = OffPolicyCase(name="", loss=loss, advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    members = f"{case.members}q" if case.members else ""
    label = ",".join(p for p in (case.actor, layout, members, variant) if p)
    return replace(case, name=f"{loss}[{label}]")


def _sac_cases() -> list[OffPolicyCase]:
    """SAC v2 and v1: ensemble sizes, learned / fixed / bounded alpha, auto and float
    target entropy, delayed networks on and off, reductions, priority weights."""
    sac = "SACLoss"
    actor = "tanh_normal"
    return [
        _case(sac, "auto_entropy", actor=actor, auto_entropy=True,
              perturbed_targets=("qvalue",)),
        _case(sac, "fixed_alpha,l2", actor=actor, batch_shape=_BT, members=1,
              perturbed_targets=("qvalue",),
              config={"fixed_alpha": True, "alpha_init": 0.3, "loss_function": "l2"}),
        _case(sac, "sum", actor=actor, members=3, perturbed_targets=("qvalue",),
              config={"target_entropy": -0.5, "reduction": "sum"}),
        _case(sac, "alpha_bounds", actor=actor, batch_shape=_BT, perturbed_targets=("qvalue",),
              config={"alpha_init": 0.7, "min_alpha": 0.8, "max_alpha": 2.0}),
        _case(sac, "delay_actor,l1", actor=actor, perturbed_targets=("actor", "qvalue"),
              config={"delay_actor": True, "loss_function": "l1"}),
        _case(sac, "no_delay", actor=actor, batch_shape=_BT,
              config={"delay_qvalue": False}),
        _case(sac, "priority_weight", actor=actor, priority_weights=True,
              perturbed_targets=("qvalue",)),
        _case(sac, "priority_weight,none", actor=actor, batch_shape=_BT, priority_weights=True,
              config={"reduction": "none", "scalar_output_mode": "exclude"}),
        _case(sac, "skip_done_states", actor=actor, members=3,
              config={"skip_done_states": True}),
        _case(sac, "td_lambda", actor=actor, batch_shape=_BT, perturbed_targets=("qvalue",),
              estimator=("TDLambda", (("lmbda", LMBDA),))),
        _case(sac, "v1", actor=actor, value_network=True, auto_entropy=True,
              perturbed_targets=("value",)),
        _case(sac, "v1,fixed_alpha,sum", actor=actor, value_network=True, batch_shape=_BT,
              perturbed_targets=("value",),
              config={"fixed_alpha": True, "alpha_init": 0.5, "reduction": "sum"}),
        _case(sac, "v1,delay_actor", actor=actor, value_network=True, members=4,
              perturbed_targets=("actor", "value"), priority_weights=True,
              config={"delay_actor": True, "loss_function": "l2"}),
    ]


def _discrete_sac_cases() -> list[OffPolicyCase]:
    """One-hot and categorical actions, ensembles of 1-3, alpha settings."""
    loss = "DiscreteSACLoss"
    return [
        _case(loss, "", actor="one_hot", perturbed_targets=("qvalue",)),
        _case(loss, "", actor="categorical", batch_shape=_BT, perturbed_targets=("qvalue",)),
        _case(loss, "fixed_alpha,l2", actor="categorical", members=3,
              config={"fixed_alpha": True, "alpha_init": 0.2, "loss_function": "l2"}),
        _case(loss, "alpha_bounds,skip_done_states", actor="one_hot", members=1,
              perturbed_targets=("qvalue",),
              config={"min_alpha": 0.5, "max_alpha": 0.9, "skip_done_states": True,
                      "target_entropy": 0.7}),
        _case(loss, "priority_weight,sum", actor="one_hot", priority_weights=True,
              config={"reduction": "sum", "delay_qvalue": False}),
    ]


def _td3_ddpg_cases() -> list[OffPolicyCase]:
    """TD3 (ensembles 1-3, bounds, noise settings, delays) and DDPG (delays, losses)."""
    bounds = {"bounds": (-0.5, 0.5)}
    both = ("actor", "qvalue")
    return [
        _case("TD3Loss", "", actor="deterministic", perturbed_targets=both, config=bounds),
        _case("TD3Loss", "l1,noise", actor="tanh_delta", batch_shape=_BT, members=1,
              perturbed_targets=both,
              config={**bounds, "loss_function": "l1", "policy_noise": 0.6,
                      "noise_clip": 0.3}),
        _case("TD3Loss", "no_delay,l2", actor="deterministic", members=3,
              config={**bounds, "delay_actor": False, "delay_qvalue": False,
                      "loss_function": "l2"}),
        _case("TD3Loss", "priority_weight,none", actor="tanh_delta", batch_shape=_BT,
              priority_weights=True, perturbed_targets=both,
              config={**bounds, "reduction": "none"}),
        _case("TD3Loss", "bounds=0.3,sum", actor="deterministic", perturbed_targets=both,
              config={"bounds": (-0.3, 0.3), "reduction": "sum", "policy_noise": 0.5}),
        _case("DDPGLoss", "", actor="deterministic", members=0,
              perturbed_targets=("qvalue",)),
        _case("DDPGLoss", "delay_actor,smooth_l1", actor="tanh_delta", batch_shape=_BT,
              members=0, perturbed_targets=both,
              config={"delay_actor": True, "loss_function": "smooth_l1"}),
        _case("DDPGLoss", "no_delay,priority_weight,none", actor="deterministic", members=0,
              priority_weights=True, config={"delay_value": False, "reduction": "none"}),
        _case("DDPGLoss", "l1,sum", actor="deterministic", batch_shape=_BT, members=0,
              perturbed_targets=("qvalue",), config={"loss_function": "l1", "reduction": "sum"}),
    ]


def _redq_tqc_crossq_cases() -> list[OffPolicyCase]:
    """REDQ (5 critics, subsets of 2 or 1), TQC (1-3 quantile critics, atoms dropped),
    CrossQ (BatchRenorm critics, 1-3 members); alpha and reduction settings. CrossQ's
    batches are flat: BatchRenorm1d reads an ``(N, C)`` input (``(N, C, L)`` normalises
    axis 1), so a ``[B, T]`` batch is no CrossQ input in either library."""
    actor = "tanh_normal"
    return [
        _case("REDQLoss", "sub_sample_len=2", actor=actor, members=5, auto_entropy=True,
              perturbed_targets=("qvalue",), config={"sub_sample_len": 2}),
        _case("REDQLoss", "sub_sample_len=1,fixed_alpha", actor=actor, batch_shape=_BT,
              members=3, perturbed_targets=("qvalue",),
              config={"sub_sample_len": 1, "fixed_alpha": True, "alpha_init": 0.5}),
        _case("REDQLoss", "no_delay,none", actor=actor, members=3,
              config={"delay_qvalue": False, "reduction": "none",
                      "scalar_output_mode": "exclude", "alpha_init": 0.05}),
        _case("REDQLoss", "priority_weight,l2", actor=actor, members=5, priority_weights=True,
              perturbed_targets=("qvalue",), config={"loss_function": "l2"}),
        _case("TQCLoss", "", actor=actor, auto_entropy=True, perturbed_targets=("qvalue",)),
        _case("TQCLoss", "drop=1,fixed_alpha", actor=actor, batch_shape=_BT, members=3,
              perturbed_targets=("qvalue",),
              config={"top_quantiles_to_drop_per_net": 1, "fixed_alpha": True,
                      "alpha_init": 0.3}),
        _case("TQCLoss", "drop=0,alpha_bounds,sum", actor=actor, members=1,
              config={"top_quantiles_to_drop_per_net": 0, "alpha_init": 0.05,
                      "min_alpha": 0.1, "max_alpha": 1.0, "reduction": "sum",
                      "delay_qvalue": False}),
        _case("TQCLoss", "priority_weight,skip_done_states", actor=actor, batch_shape=_BT,
              priority_weights=True, perturbed_targets=("qvalue",),
              config={"skip_done_states": True}),
        _case("CrossQLoss", "", actor=actor, auto_entropy=True),
        _case("CrossQLoss", "fixed_alpha,l2", actor=actor, members=3,
              config={"fixed_alpha": True, "alpha_init": 0.3, "loss_function": "l2"}),
        _case("CrossQLoss", "alpha_bounds,sum", actor=actor, members=1,
              config={"alpha_init": 0.5, "min_alpha": 0.8, "max_alpha": 2.0,
                      "reduction": "sum", "loss_function": "l1"}),
        _case("CrossQLoss", "priority_weight", actor=actor, priority_weights=True),
    ]


#: losses whose cases are written but not run until the named fix lands in the loss
#: (conformance finds the bug; the suite holds no failing or xfail cases)
WITHHELD: dict[str, str] = {}


def offpolicy_cases(*, withheld: bool = False) -> list[OffPolicyCase]:
    """Every off-policy loss case (with ``withheld``, also those of :data:`WITHHELD`).

    The temperatures are ones whose float32 ``exp(log α)`` NumPy rounds as torch does:
    NumPy's float32 ``exp`` is not correctly rounded (α = 5, 10, 20 or 0.01 come out one
    float32 ulp away from torch's), which moves float64 outputs by ~1e-7 relative."""
    cases = [*_sac_cases(), *_discrete_sac_cases(), *_td3_ddpg_cases(),
             *_redq_tqc_crossq_cases()]
    return cases if withheld else [c for c in cases if c.loss not in WITHHELD]


__all__ = [
    "OFF_POLICY_LOSSES",
    "WITHHELD",
    "OffPolicyCase",
    "arrayrl_offpolicy_loss",
    "evaluate_offpolicy",
    "offpolicy_cases",
]
