"""The loss conformance cases: every loss module on many configurations.

A case names a loss class, the actor's distribution, the batch layout and the loss's
constructor arguments. ``case.build(seed, dtype)`` makes everything in NumPy: the
weights of every network (drawn by arrayrl's :class:`~arrayrl.modules.MLP` from seeds,
named as in ``torch.nn.Sequential``: ``"0.weight"``, ...), and a batch as a collector
writes it (actions drawn from a perturbed behaviour policy, their log-probabilities and
distribution parameters, rewards and done flags or a given advantage, validity masks).
:func:`evaluate` runs arrayrl's loss on a backend and returns every output and, on
torch, the gradient of every ``loss_*`` term with respect to every parameter.

Networks are tiny (one hidden layer of :data:`HIDDEN` cells) and batches hold 32
samples, so that the whole matrix runs in seconds.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .cases import make_masks

OBS, ACT, N_ACTIONS, HIDDEN = 3, 2, 4, 8
#: the value estimator every case gets (used when the batch has no advantage)
GAMMA, LMBDA = 0.95, 0.9
#: seed of the loss's own generator (Monte-Carlo entropy and KL draws)
LOSS_SEED = 0

LOSSES = ("PPOLoss", "ClipPPOLoss", "KLPENPPOLoss", "A2CLoss", "ReinforceLoss")
PPO_FAMILY = LOSSES[:3]
#: actor kinds: the distribution and its keyword arguments
ACTORS: dict[str, tuple[str, dict[str, float]]] = {
    "tanh_normal": ("TanhNormal", {}),
    "tanh_normal_box": ("TanhNormal", {"low": -2.0, "high": 3.0}),
    "normal": ("IndependentNormal", {}),
    "elementwise_normal": ("Normal", {}),
    "categorical": ("Categorical", {}),
}
#: which network of the loss holds a role's target copy
TARGET_NETWORKS = {"actor": "actor_network", "critic": "critic_network"}


@dataclass(frozen=True)
class NetSpec:
    """One MLP: sizes, hidden widths, and whether its last layer is activated."""

    in_features: int
    out_features: int
    num_cells: tuple[int, ...]
    activate_last_layer: bool = False


@dataclass
class LossInputs:
    """What a case runs on: weights per network role, perturbed target weights, batch."""

    weights: dict[str, dict[str, np.ndarray]]
    target_weights: dict[str, dict[str, np.ndarray]]
    batch: dict[str, Any]
    batch_size: tuple[int, ...]

    def astype(self, dtype: Any) -> LossInputs:
        """The same inputs with every float array cast to ``dtype``."""
        return LossInputs(
            _map_floats(self.weights, dtype),
            _map_floats(self.target_weights, dtype),
            _map_floats(self.batch, dtype),
            self.batch_size,
        )

    def as_float64(self) -> LossInputs:
        """The same inputs with every float array promoted to float64 (the reference)."""
        return self.astype(np.float64)


@dataclass
class Evaluation:
    """A loss's outputs (``beta`` after the call for KL-PEN) and, on autograd backends,
    ``"<term>/<role>.<param>"`` gradients of every ``loss_*`` term."""

    outputs: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class LossCase:
    """One loss on one configuration; ``build(seed, dtype)`` makes its inputs.

    ``advantage="given"`` puts ``advantage``, ``value_target`` and ``state_value`` in the
    batch; ``"gae"`` gives rewards and done flags and lets the loss's GAE compute them.
    ``shared_trunk`` makes actor and critic share a first layer. ``perturbed_targets``
    names the roles (``"actor"``, ``"critic"``) whose target copy (``delay_actor``,
    ``delay_value``) gets weights of its own. ``tensordict`` hands torch backends the
    batch as a ``tensordict.TensorDict``. ``core`` cases (one per loss and actor kind)
    also run on backends that only take those (JAX: see ``LossTarget.core_only``).
    """

    name: str
    loss: str
    actor: str = "normal"
    batch_shape: tuple[int, ...] = (32,)
    advantage: str = "given"
    masks: tuple[str, ...] = ()
    shared_trunk: bool = False
    perturbed_targets: tuple[str, ...] = ()
    tensordict: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    core: bool = False

    @property
    def continuous(self) -> bool:
        return self.actor != "categorical"

    @property
    def monte_carlo(self) -> bool:
        """Whether the outputs depend on random draws: the entropy bonus of a TanhNormal,
        which has no closed form (A2C drops the bonus when ``entropy_coeff`` is 0)."""
        if not self.actor.startswith("tanh_normal") or self.loss == "ReinforceLoss":
            return False
        if self.loss == "A2CLoss" and self.config.get("entropy_coeff") == 0:
            return False
        return bool(self.config.get("entropy_bonus", True))

    def network_specs(self) -> dict[str, NetSpec]:
        """The MLP of every role: ``actor`` and ``critic``, plus ``trunk`` if shared."""
        head = 2 * ACT if self.continuous else N_ACTIONS
        if not self.shared_trunk:
            return {
                "actor": NetSpec(OBS, head, (HIDDEN,)),
                "critic": NetSpec(OBS, 1, (HIDDEN,)),
            }
        return {
            "trunk": NetSpec(OBS, HIDDEN, (), activate_last_layer=True),
            "actor": NetSpec(HIDDEN, head, ()),
            "critic": NetSpec(HIDDEN, 1, ()),
        }

    def build(self, seed: int, dtype: str) -> LossInputs:
        """Weights and batch in NumPy, drawn in float64 and cast to ``dtype``.

        The behaviour policy (which drew the actions) is the actor with its weights
        perturbed by 0.1·N(0, 1), so that about a third of the PPO ratios leave the clip
        range; perturbed target copies are drawn the same way.
        """
        rng = np.random.default_rng([seed, 7])
        weights = {
            role: _mlp_weights(spec, seed * 100 + k)
            for k, (role, spec) in enumerate(self.network_specs().items())
        }
        targets = {role: _perturbed(weights[role], rng, 0.1) for role in self.perturbed_targets}
        behaviour = {**weights, "actor": _perturbed(weights["actor"], rng, 0.1)}
        batch = self._batch(rng, behaviour, seed)
        return LossInputs(weights, targets, batch, self.batch_shape).astype(dtype)

    def _batch(
        self, rng: np.random.Generator, behaviour: dict[str, dict[str, np.ndarray]], seed: int
    ) -> dict[str, Any]:
        """A batch laid out as TorchRL's rollouts, time last (one trajectory for [N])."""
        shape = self.batch_shape
        steps = rng.standard_normal((*shape[:-1], shape[-1] + 1, OBS))
        batch: dict[str, Any] = {
            "observation": steps[..., :-1, :],
            "next": {"observation": steps[..., 1:, :]},
        }
        batch.update(_behaviour_sample(self, behaviour, batch, seed))
        column = (*shape, 1)
        if self.advantage == "given":
            batch["advantage"] = rng.standard_normal(column)
            batch["value_target"] = 1.5 * rng.standard_normal(column)
            batch["state_value"] = 0.3 * rng.standard_normal(column)
        else:
            done, terminated = make_masks(rng, column, -2, "random")
            batch["next"].update(
                reward=rng.standard_normal(column), done=done, terminated=terminated
            )
        if "collector" in self.masks:
            batch["collector"] = {"mask": _some_valid(rng, shape)}
        if "shifted_valid" in self.masks:
            batch["shifted_valid"] = _some_valid(rng, column)
        return batch


def _some_valid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean mask, about 75% ``True``, never all ``False``."""
    mask = rng.random(shape) < 0.75
    mask.flat[0] = True
    return mask


def _map_floats(tree: Any, dtype: Any) -> Any:
    """``tree`` (nested dicts) with every float array cast to ``dtype``."""
    if isinstance(tree, Mapping):
        return {k: _map_floats(v, dtype) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        return tree.astype(dtype)
    return tree


def _mlp_weights(spec: NetSpec, seed: int) -> dict[str, np.ndarray]:
    """Float64 weights of arrayrl's MLP for ``spec`` drawn from ``seed``."""
    from arrayrl.modules import MLP, flatten_params

    mlp = MLP(
        spec.in_features,
        spec.out_features,
        list(spec.num_cells),
        activate_last_layer=spec.activate_last_layer,
        seed=seed,
        dtype=np.float64,
    )
    return {name: np.asarray(w) for name, w in flatten_params(mlp.params).items()}


def arrayrl_mlp(spec: NetSpec, weights: dict[str, np.ndarray], **kwargs: Any) -> Any:
    """arrayrl's ``MLP`` of ``spec`` (on NumPy, in the weights' dtype) holding ``weights``;
    ``kwargs`` go to ``MLP`` (e.g. ``activation_class``)."""
    from arrayrl.modules import MLP, unflatten_params

    mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells),
              activate_last_layer=spec.activate_last_layer,
              dtype=next(iter(weights.values())).dtype, **kwargs)  # fmt: skip
    mlp.params = unflatten_params(dict(weights))
    return mlp


def _perturbed(
    weights: dict[str, np.ndarray], rng: np.random.Generator, scale: float
) -> dict[str, np.ndarray]:
    """``weights`` plus ``scale``·N(0, 1) noise, element-wise."""
    return {name: w + scale * rng.standard_normal(w.shape) for name, w in weights.items()}


def _behaviour_sample(
    case: LossCase, weights: dict[str, dict[str, np.ndarray]], batch: dict[str, Any], seed: int
) -> dict[str, Any]:
    """Actions drawn by the behaviour policy (float64 NumPy, arrayrl's actor), their
    log-probabilities and the distribution parameters (KL-PEN's previous policy)."""
    from arrayrl.data import ArrayDict
    from arrayrl.random import make_generator

    actor, _, _ = arrayrl_networks(case, weights)
    rollout = ArrayDict({"observation": batch["observation"]}, case.batch_shape)
    actor(rollout, rng=make_generator(seed + 1))
    keys = ["action", "action_log_prob", *actor.dist_keys.values()]
    return {key: np.asarray(rollout.get(key)) for key in keys}


# -- arrayrl's side ----------------------------------------------------------------------


def arrayrl_networks(
    case: LossCase, weights: Mapping[str, Mapping[str, np.ndarray]]
) -> tuple[Any, Any, dict[str, Any]]:
    """``(actor, critic, MLPs by role)`` with arrayrl's modules holding ``weights``."""
    from arrayrl.modules import (
        MLP,
        DictModule,
        NormalParamExtractor,
        Sequential,
        unflatten_params,
    )
    from arrayrl.modules import distributions as dists
    from arrayrl.modules.actors import ProbabilisticActor, ValueOperator

    mlps = {}
    for role, spec in case.network_specs().items():
        mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells),
                  activate_last_layer=spec.activate_last_layer)
        mlp.params = unflatten_params(dict(weights[role]))
        mlps[role] = mlp
    trunk = [mlps["trunk"]] if case.shared_trunk else []
    dist_keys = ["loc", "scale"] if case.continuous else ["logits"]
    extractor = [NormalParamExtractor()] if case.continuous else []
    actor_module = DictModule(
        Sequential(*trunk, mlps["actor"], *extractor), in_keys=["observation"], out_keys=dist_keys
    )
    distribution, kwargs = ACTORS[case.actor]
    actor = ProbabilisticActor(
        actor_module,
        in_keys=dist_keys,
        distribution_class=getattr(dists, distribution),
        distribution_kwargs=kwargs,
        return_log_prob=True,
    )
    critic = ValueOperator(Sequential(*trunk, mlps["critic"]), in_keys=["observation"])
    return actor, critic, mlps


def _accepts(cls: type, argument: str) -> bool:
    """Whether ``cls``'s constructor takes ``argument``."""
    return argument in inspect.signature(cls.__init__).parameters


def arrayrl_loss(
    case: LossCase,
    inputs: LossInputs,
    backend: str,
    device: Any = None,
    *,
    generator_mode: str = "numpy",
) -> tuple[Any, dict[str, Any]]:
    """arrayrl's loss for ``case`` on ``backend`` and its parameters by canonical name
    (``"<role>.<param>"``, the names :mod:`.loss_oracle` gives TorchRL's).

    ``generator_mode="numpy"`` makes the loss draw NumPy-sourced noise, identical on
    every backend; ``"native"`` the backend's own generator (torch: a
    ``torch.Generator`` seeded with :data:`LOSS_SEED`).
    """
    import arrayrl.objectives as objectives

    actor, critic, mlps = arrayrl_networks(case, inputs.weights)
    cls = getattr(objectives, case.loss)
    kwargs = dict(case.config)
    if _accepts(cls, "seed"):
        kwargs["seed"] = LOSS_SEED
    loss = cls(actor, critic, **kwargs)
    if hasattr(loss, "generator_mode"):  # losses that draw (entropy, KL)
        loss.generator_mode = generator_mode
    loss.make_value_estimator("gae", gamma=GAMMA, lmbda=LMBDA)
    _load_targets(loss, mlps, inputs.target_weights)
    loss.to(backend, device)
    params = {
        f"{role}.{name}": leaf
        for role, mlp in mlps.items()
        for name, leaf in _flat(mlp.params).items()
    }
    return loss, params


def _flat(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{"0.weight": leaf, ...}`` of a parameter tree."""
    from arrayrl.modules import flatten_params

    return flatten_params(tree)


def _load_targets(
    loss: Any, mlps: Mapping[str, Any], targets: Mapping[str, Mapping[str, np.ndarray]]
) -> None:
    """Overwrite the target copies of the roles in ``targets`` (through ``state_dict``)."""
    if not targets:
        return
    names = {id(leaf): (role, name) for role, mlp in mlps.items()
             for name, leaf in _flat(mlp.params).items()}
    state = loss.state_dict()
    for role, weights in targets.items():
        network = TARGET_NETWORKS[role]
        for path, leaf in _flat(loss.network_params(network, None)).items():
            owner, name = names[id(leaf)]
            if owner == role:
                state[f"target_{network}_params.{path}"] = weights[name]
    loss.load_state_dict(state)


def arrayrl_batch(case: LossCase, inputs: LossInputs, backend: str, device: Any = None) -> Any:
    """The batch on ``backend``: an ``ArrayDict``, or a ``TensorDict`` on torch when
    the case asks for one."""
    from arrayrl.data import ArrayDict

    batch = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
    if case.tensordict and backend == "torch":
        from tensordict import TensorDict

        return TensorDict(batch.to_dict(), batch_size=inputs.batch_size)
    return batch


def evaluate(
    case: LossCase,
    inputs: LossInputs,
    backend: str,
    device: Any = None,
    *,
    generator_mode: str = "numpy",
) -> Evaluation:
    """Run arrayrl's loss on ``backend``: every output as NumPy, and on torch the
    gradients of every ``loss_*`` term."""
    from arrayrl.backends import backend_of

    if hasattr(case, "evaluate_arrayrl"):  # a family with its own networks and batch
        return case.evaluate_arrayrl(inputs, backend, device, generator_mode=generator_mode)
    if getattr(case, "off_policy", False):  # SAC, TD3, ...: their own networks and batch
        from .offpolicy_cases import evaluate_offpolicy

        return evaluate_offpolicy(case, inputs, backend, device, generator_mode=generator_mode)
    loss, params = arrayrl_loss(case, inputs, backend, device, generator_mode=generator_mode)
    out = loss(arrayrl_batch(case, inputs, backend, device))
    terms = {key: out.get(key) for key in out.keys(include_nested=True, leaves_only=True)}
    outputs = {key: _host(value, backend_of(value)) for key, value in terms.items()}
    if case.loss == "KLPENPPOLoss":
        outputs["beta"] = np.asarray(loss.beta)
    gradients = torch_gradients(terms, params) if backend == "torch" else {}
    return Evaluation(outputs, gradients)


def _host(x: Any, backend: Any) -> np.ndarray:
    """``x`` as a NumPy array (cut from any graph)."""
    return np.asarray(backend.to_numpy(backend.stop_gradient(x)))


def torch_gradients(terms: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{"<term>/<param>": d sum(term) / d param}`` for every ``loss_*`` term; a
    parameter a term does not reach gets zeros."""
    import torch

    names, leaves = list(params), list(params.values())
    gradients = {}
    for term, value in terms.items():
        if not term.startswith("loss_"):
            continue
        total = value.sum()
        found = (
            torch.autograd.grad(total, leaves, retain_graph=True, allow_unused=True)
            if total.requires_grad
            else [None] * len(leaves)
        )
        for name, leaf, grad in zip(names, leaves, found):
            grad = torch.zeros_like(leaf) if grad is None else grad
            gradients[f"{term}/{name}"] = grad.detach().cpu().numpy()
    return gradients


# -- the cases ---------------------------------------------------------------------------

_N, _BT = (32,), (4, 8)
_ACTOR_KINDS = ("tanh_normal", "normal", "categorical")
_BT_GAE = {"batch_shape": _BT, "advantage": "gae"}


def _case(loss: str, variant: str, **fields: Any) -> LossCase:
    """A case named ``loss[actor,layout,advantage,variant]``."""
    case = LossCase(name="", loss=loss, **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (case.actor, layout, case.advantage, variant) if p)
    return replace(case, name=f"{loss}[{label}]")


def _clip_value(loss: str) -> dict[str, Any]:
    """Value clipping: ClipPPO's ``True`` (the clip ε), a threshold for the others."""
    return {"clip_value": True} if loss == "ClipPPOLoss" else {"clip_value": 0.1}


def _base_cases(loss: str, k: int) -> list[LossCase]:
    """Every actor kind on a flat batch with a given advantage and on [B, T] with GAE.
    One case per actor kind is ``core`` (layouts alternating with the loss index ``k``)."""
    layouts = ((_N, "given"), (_BT, "gae"))
    return [
        _case(loss, "", actor=actor, batch_shape=shape, advantage=advantage,
              core=(i + k) % 2 == j)
        for i, actor in enumerate(_ACTOR_KINDS)
        for j, (shape, advantage) in enumerate(layouts)
    ]


def _common_variants(loss: str, k: int) -> list[LossCase]:
    """Reductions, masks, value clipping, shared trunks, TensorDict batches and no
    critic; the actor kind rotates with the loss index ``k``."""

    def actor(i: int) -> str:
        return _ACTOR_KINDS[(k + i) % len(_ACTOR_KINDS)]

    cases = [
        _case(loss, "sum", actor=actor(0), config={"reduction": "sum"}, **_BT_GAE),
        _case(loss, "none", actor=actor(1), config={"reduction": "none"}),
        _case(loss, "tensordict,collector_mask", actor=actor(2), tensordict=True,
              masks=("collector",), **_BT_GAE),
        _case(loss, "both_masks,sum", actor=actor(0), masks=("collector", "shifted_valid"),
              config={"reduction": "sum"}),
        _case(loss, "tensordict,shifted_valid,none", actor=actor(1), tensordict=True,
              masks=("shifted_valid",), config={"reduction": "none"}),
        _case(loss, "clip_value", actor=actor(2), config=_clip_value(loss)),
        _case(loss, "shared_trunk,l2", actor=actor(0), shared_trunk=True,
              config={"loss_critic_type": "l2"}),
        _case(loss, "separate_losses", actor=actor(1), shared_trunk=True,
              config={"separate_losses": True}, **_BT_GAE),
    ]
    if loss != "ReinforceLoss":
        cases.append(_case(loss, "critic_coeff=None", actor=actor(2),
                           config={"critic_coeff": None}))
    return cases


def _ppo_variants(loss: str) -> list[LossCase]:
    """Advantage normalisation, delayed actor, entropy settings, critic settings."""
    return [
        _case(loss, "normalize_advantage", actor="normal", config={"normalize_advantage": True}),
        _case(loss, "normalize_advantage,shifted_valid", actor="categorical",
              masks=("shifted_valid",), config={"normalize_advantage": True}),
        _case(loss, "normalize_advantage,exclude_dims", actor="tanh_normal",
              config={"normalize_advantage": True, "normalize_advantage_exclude_dims": (0,)},
              **_BT_GAE),
        _case(loss, "delay_actor", actor="tanh_normal", perturbed_targets=("actor",),
              config={"delay_actor": True}, **_BT_GAE),
        _case(loss, "no_entropy", actor="tanh_normal", config={"entropy_bonus": False}),
        _case(loss, "samples_mc_entropy=3", actor="tanh_normal_box",
              config={"samples_mc_entropy": 3, "entropy_coeff": 0.05}),
        _case(loss, "l1,critic_coeff=0.5", actor="categorical",
              config={"loss_critic_type": "l1", "critic_coeff": 0.5}, **_BT_GAE),
    ]


def _loss_specific() -> list[LossCase]:
    """Clipping, KL-penalty, A2C and REINFORCE settings of their own, and the GAE of a
    batch with ``"shifted_valid"``."""
    fixed_beta = {"increment": 1.0, "decrement": 1.0}
    return [
        _case("PPOLoss", "max_importance_ratio", actor="normal",
              config={"max_importance_ratio": 1.3}),
        _case("ClipPPOLoss", "max_importance_ratio", actor="categorical",
              config={"max_importance_ratio": 1.3}, **_BT_GAE),
        _case("ClipPPOLoss", "asymmetric", actor="normal", config={"clip_epsilon": (0.1, 0.3)}),
        *(  # a per-dimension log-prob: the advantage is spread over the action dims
            _case(loss, "elementwise_normal", actor="elementwise_normal") for loss in PPO_FAMILY
        ),
        _case("ClipPPOLoss", "asymmetric,clip_value", actor="tanh_normal_box",
              config={"clip_epsilon": (0.05, 0.3), "clip_value": 0.2}, **_BT_GAE),
        _case("ClipPPOLoss", "clip_epsilon=0.05", actor="categorical",
              config={"clip_epsilon": 0.05}),
        _case("ClipPPOLoss", "shifted_valid", actor="normal", masks=("shifted_valid",),
              **_BT_GAE),
        _case("KLPENPPOLoss", "beta_up", actor="normal",
              config={"dtarg": 1e-4, "beta": 0.5, "increment": 1.5}),
        _case("KLPENPPOLoss", "beta_down", actor="categorical",
              config={"dtarg": 10.0, "beta": 2.0, "decrement": 0.25}, **_BT_GAE),
        _case("KLPENPPOLoss", "samples_mc_kl=3", actor="tanh_normal_box",
              config={"samples_mc_kl": 3}),
        *(
            _case("KLPENPPOLoss", "fixed_beta", actor=actor, config={**fixed_beta, "beta": 3.0},
                  **layout)
            for actor, layout in zip(_ACTOR_KINDS, ({}, _BT_GAE, {}))
        ),
        _case("KLPENPPOLoss", "fixed_beta,delay_actor", actor="normal",
              perturbed_targets=("actor",), config={**fixed_beta, "delay_actor": True}),
        _case("A2CLoss", "entropy_coeff=0", actor="tanh_normal", config={"entropy_coeff": 0.0}),
        _case("A2CLoss", "samples_mc_entropy=2", actor="tanh_normal_box",
              config={"samples_mc_entropy": 2, "entropy_coeff": 0.1}, **_BT_GAE),
        _case("ReinforceLoss", "delay_value", actor="normal", perturbed_targets=("critic",),
              config={"delay_value": True}, **_BT_GAE),
        _case("ReinforceLoss", "delay_value,clip_value", actor="categorical",
              perturbed_targets=("critic",), config={"delay_value": True, "clip_value": 0.1},
              **_BT_GAE),
    ]


def all_loss_cases() -> list[LossCase]:
    """Every loss conformance case."""
    cases: list[LossCase] = []
    for k, loss in enumerate(LOSSES):
        cases += _base_cases(loss, k) + _common_variants(loss, k)
        if loss in PPO_FAMILY:
            cases += _ppo_variants(loss)
    cases += _loss_specific()
    from .offpolicy_cases import offpolicy_cases  # imports this module

    cases += offpolicy_cases()
    from .families import family_modules

    for module in family_modules():
        cases += module.cases()
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise AssertionError(f"duplicate loss case names: {sorted(duplicates)}")
    return cases
