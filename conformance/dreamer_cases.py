"""Conformance cases of the Dreamer (v1) losses.

``DreamerValueLoss`` cases (:class:`DreamerValueCase`) run on every backend and dtype: a
value MLP over ``state`` and ``belief`` (arrayrl's :class:`~arrayrl.modules.MLP`, TorchRL's
``MLP`` with the same weights) regresses on a given ``lambda_target``, on the actor's
``[N, H]`` layout and on a flat ``[N]`` batch (where TorchRL discounts along the batch),
with every ``value_loss`` and with and without ``discount_loss``. No draws.

``DreamerModelLoss`` cases (:class:`DreamerModelCase`) run a deterministic world model of
four MLPs on every backend and dtype: the prior ``N(μ_p, σ_p)`` from ``(state, belief,
action)``, the posterior ``N(μ_q, σ_q)`` from ``(belief, ("next", "embedding"))``, the
decoder (``[1, 2, 3]`` images) and the reward model from ``(μ_q, belief)``; TorchRL's
``WorldModelWrapper(TensorDictSequential(prior, posterior, decoder), reward)`` holds the
same weights. Outputs: the three ``[1]`` terms and the sampled data the world model
wrote; gradients w.r.t. every world-model parameter.

``DreamerActorLoss`` cases (:class:`DreamerActorCase`) imagine with a deterministic
transition (belief MLP, then state MLP, then reward MLP; TorchRL's ``DreamerEnv`` over the
same modules) and a ``TanhNormal`` actor, so the only draws are the actor's ``rsample``:
the runner compares TorchRL (after ``torch.manual_seed``) with arrayrl on torch drawing
from a ``torch.Generator`` seeded alike. Outputs: ``loss_actor``, ``lambda_target`` and the
imagined trajectory; gradients w.r.t. the actor's and the (held-out) world model's
parameters.

TorchRL's RSSM modules (``RSSMPrior`` / ``RSSMPosterior`` / ``RSSMRollout``,
``ObsEncoder`` / ``ObsDecoder``, ``DreamerActor``, ``DreamerEnv``) are torch-only,
float32-only and draw inside the world model from torch's global generator; both losses
are compared with TorchRL on them (every output, the tuple outputs, every gradient, the
same draws) in ``tests/test_dreamer.py``, as the runner cannot yet restrict a case to
one backend and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .loss_cases import (
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    arrayrl_mlp,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch, torchrl_mlp

__all__ = [
    "DEVIATIONS",
    "DreamerActorCase",
    "DreamerModelCase",
    "DreamerValueCase",
    "cases",
]

STATE, BELIEF, HIDDEN, HORIZON = 3, 4, 8, 5


@dataclass(frozen=True)
class DreamerValueCase(LossCase):
    """One ``DreamerValueLoss`` configuration; ``config`` holds its positional
    arguments by name (``value_loss``, ``discount_loss``, ``gamma``)."""

    @property
    def monte_carlo(self) -> bool:
        """The value loss draws nothing."""
        return False

    def network_specs(self) -> dict[str, NetSpec]:
        return {"value": NetSpec(STATE + BELIEF, 1, (HIDDEN,))}

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The value MLP's weights and imagined states with their λ-targets."""
        rng = np.random.default_rng([seed, 14])
        weights = {"value": _mlp_weights(self.network_specs()["value"], seed * 100 + 7)}
        shape = self.batch_shape
        batch = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
            "lambda_target": rng.standard_normal((*shape, 1)),
        }
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's ``loss_value`` and, on torch, its gradients."""
        from arrayrl.backends import backend_of

        from arrayrl.data import ArrayDict
        from arrayrl.modules import DictModule, flatten_params
        from arrayrl.objectives.dreamer import DreamerValueLoss

        mlp = _arrayrl_mlp(inputs.weights["value"], STATE + BELIEF, 1)
        value = DictModule(mlp, in_keys=["state", "belief"], out_keys=["state_value"])
        loss = DreamerValueLoss(value, **self.config)
        loss.to(backend, device)
        data = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
        out, returned = loss(data)
        if returned is not data:
            raise AssertionError("DreamerValueLoss must return the batch it was given")
        term = out.get("loss_value")
        params = {
            f"value.{name}": leaf
            for name, leaf in flatten_params(loss.value_model_params["module"]).items()
        }
        gradients = torch_gradients({"loss_value": term}, params) if backend == "torch" else {}
        return Evaluation({"loss_value": _host(term, backend_of(term))}, gradients)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``DreamerValueLoss`` on TorchRL's ``MLP`` with the same weights."""
        from tensordict import TensorDict
        from tensordict.nn import TensorDictModule
        from torchrl.objectives import DreamerValueLoss

        mlp = torchrl_mlp(NetSpec(STATE + BELIEF, 1, (HIDDEN,)), inputs.weights["value"], dtype)
        value = TensorDictModule(mlp, in_keys=["state", "belief"], out_keys=["state_value"])
        data = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        out, _ = DreamerValueLoss(value, **self.config)(data)
        term = out["loss_value"]
        params = {f"value.{name}": p for name, p in mlp.named_parameters()}
        return Evaluation(
            {"loss_value": term.detach().numpy()}, torch_gradients({"loss_value": term}, params)
        )


# -- world models of MLPs -----------------------------------------------------------------
PIXELS, EMBED, ACT = (1, 2, 3), 2, 2
N_PIXELS = int(np.prod(PIXELS))


class _Unflatten:
    """``[..., n] -> [..., *shape]`` (a parameter-free arrayrl layer; default: the
    pixels' ``[C, H, W]``)."""

    params: dict = {}  # noqa: RUF012 (no parameters, never written)

    def __init__(self, shape: tuple[int, ...] = PIXELS) -> None:
        self.shape = shape

    def apply(self, params: Any, x: Any) -> Any:
        from arrayrl.backends import backend_of

        return backend_of(x).xp.reshape(x, (*x.shape[:-1], *self.shape))

    def to(self, backend: Any, device: Any = None) -> _Unflatten:
        return self


def _chain_class() -> type:
    """A dict-level module running named parts in turn (tree ``{part: tree}``)."""
    from arrayrl.modules.dict_module import Module

    class Chain(Module):
        def __init__(self, parts: dict[str, Any]) -> None:
            self.parts = parts
            self.in_keys = [k for p in parts.values() for k in p.in_keys]
            self.out_keys = [k for p in parts.values() for k in p.out_keys]

        @property
        def params(self) -> Any:
            return {name: part.params for name, part in self.parts.items()}

        @params.setter
        def params(self, tree: Any) -> None:
            for name, part in self.parts.items():
                part.params = tree[name]

        def forward(self, batch: Any, params: Any) -> Any:
            for name, part in self.parts.items():
                part(batch, params[name])
            return batch

        def to(self, backend: Any, device: Any = None) -> Chain:
            for part in self.parts.values():
                part.to(backend, device)
            return self

    return Chain


#: part -> (in_features, out_features, in_keys, out_keys, head) of each world model;
#: head: "normal" (NormalParamExtractor), "pixels" (unflatten) or None
_NEXT = "next"
MODEL_PARTS: dict[str, tuple[int, int, list, list, str | None]] = {
    "prior": (
        STATE + BELIEF + ACT,
        2 * STATE,
        ["state", "belief", "action"],
        [(_NEXT, "prior_mean"), (_NEXT, "prior_std")],
        "normal",
    ),
    "posterior": (
        BELIEF + EMBED,
        2 * STATE,
        ["belief", (_NEXT, "embedding")],
        [(_NEXT, "posterior_mean"), (_NEXT, "posterior_std")],
        "normal",
    ),
    "decoder": (
        STATE + BELIEF,
        N_PIXELS,
        [(_NEXT, "posterior_mean"), "belief"],
        [(_NEXT, "reco_pixels")],
        "pixels",
    ),
    "reward": (STATE + BELIEF, 1, [(_NEXT, "posterior_mean"), "belief"], [(_NEXT, "reward")], None),
}
ENV_PARTS: dict[str, tuple[int, int, list, list, str | None]] = {
    "belief": (STATE + BELIEF + ACT, BELIEF, ["state", "belief", "action"], ["belief"], None),
    "state": (BELIEF + ACT, STATE, ["belief", "action"], ["state"], None),
    "reward": (STATE + BELIEF, 1, ["state", "belief"], ["reward"], None),
}
ACTOR_SPEC = NetSpec(STATE + BELIEF, 2 * ACT, (HIDDEN,))
VALUE_SPEC = NetSpec(STATE + BELIEF, 1, (HIDDEN,))


def _part_weights(parts: dict[str, tuple], seed: int) -> dict[str, dict[str, np.ndarray]]:
    return {
        name: _mlp_weights(NetSpec(fin, fout, (HIDDEN,)), seed * 100 + k)
        for k, (name, (fin, fout, *_)) in enumerate(parts.items())
    }


def _arrayrl_mlp(weights: dict[str, np.ndarray], fin: int, fout: int) -> Any:
    return arrayrl_mlp(NetSpec(fin, fout, (HIDDEN,)), weights)


def _arrayrl_world_model(parts: dict[str, tuple], weights: dict[str, Any]) -> tuple[Any, dict]:
    """The chain of arrayrl parts and each part's MLP."""
    from arrayrl.modules import DictModule, NormalParamExtractor, Sequential

    modules, mlps = {}, {}
    for name, (fin, fout, in_keys, out_keys, head) in parts.items():
        mlp = mlps[name] = _arrayrl_mlp(weights[name], fin, fout)
        layer = {
            "normal": lambda m: Sequential(m, NormalParamExtractor()),
            "pixels": lambda m: Sequential(m, _Unflatten()),
        }.get(head, lambda m: m)(mlp)
        modules[name] = DictModule(layer, in_keys, out_keys)
    return _chain_class()(modules), mlps


def _torch_headed(mlp: Any, head: Any) -> Any:
    """``head(mlp(*inputs))`` as a torch module (``nn.Sequential`` takes one input);
    parameter names ``"0.<mlp's>"`` as ``nn.Sequential``'s."""
    import torch

    class Headed(torch.nn.Sequential):
        def forward(self, *inputs: Any) -> Any:
            return self[1](self[0](*inputs))

    return Headed(mlp, head)


def _torchrl_parts(
    parts: dict[str, tuple], weights: dict[str, Any], dtype: str
) -> tuple[list, dict]:
    """TorchRL ``TensorDictModule`` s of the parts, and each part's ``MLP``."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule

    modules, mlps = [], {}
    for name, (fin, fout, in_keys, out_keys, head) in parts.items():
        mlp = mlps[name] = torchrl_mlp(NetSpec(fin, fout, (HIDDEN,)), weights[name], dtype)
        net = mlp
        if head == "normal":
            net = _torch_headed(mlp, NormalParamExtractor())
        elif head == "pixels":
            net = _torch_headed(mlp, torch.nn.Unflatten(-1, PIXELS))
        modules.append(TensorDictModule(net, in_keys=in_keys, out_keys=out_keys))
    return modules, mlps


def _named(role: str, mlps: dict[str, Any], arrayrl: bool) -> dict[str, Any]:
    """``{"<role>.<part>.<param>": leaf}`` for every MLP."""
    from arrayrl.modules import flatten_params

    out = {}
    for part, mlp in mlps.items():
        items = flatten_params(mlp.params).items() if arrayrl else mlp.named_parameters()
        out.update({f"{role}.{part}.{name}": leaf for name, leaf in items})
    return out


def _host_outputs(terms: dict[str, Any], data: Any, keys: list) -> dict[str, np.ndarray]:
    from arrayrl.backends import backend_of

    out = {k: _host(v, backend_of(v)) for k, v in terms.items()}
    for key in keys:
        value = data.get(key)
        out[".".join(key) if isinstance(key, tuple) else key] = _host(value, backend_of(value))
    return out


def _torch_outputs(terms: Any, data: Any, keys: list) -> dict[str, np.ndarray]:
    out = {k: terms[k].detach().numpy() for k in terms.keys()}
    for key in keys:
        out[".".join(key) if isinstance(key, tuple) else key] = data.get(key).detach().numpy()
    return out


MODEL_DATA_KEYS = [
    (_NEXT, k) for k in ("prior_mean", "posterior_std", "reco_pixels", "reward", "true_reward")
]


@dataclass(frozen=True)
class DreamerModelCase(LossCase):
    """One ``DreamerModelLoss`` configuration (``config``: its keyword arguments)."""

    @property
    def monte_carlo(self) -> bool:
        """The MLP world model draws nothing."""
        return False

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The parts' weights and a ``[B, T]`` batch of primers, actions, embeddings,
        images in ``[0, 1)`` and rewards."""
        rng = np.random.default_rng([seed, 15])
        shape = self.batch_shape
        batch = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
            "action": rng.standard_normal((*shape, ACT)),
            "next": {
                "embedding": rng.standard_normal((*shape, EMBED)),
                "pixels": rng.random((*shape, *PIXELS)),
                "reward": rng.standard_normal((*shape, 1)),
            },
        }
        return LossInputs(_part_weights(MODEL_PARTS, seed), {}, batch, shape).astype(dtype)

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        from arrayrl.data import ArrayDict
        from arrayrl.objectives.dreamer import DreamerModelLoss

        model, _ = _arrayrl_world_model(MODEL_PARTS, inputs.weights)
        loss = DreamerModelLoss(model, **self.config).to(backend, device)
        terms, data = loss(ArrayDict(inputs.batch, inputs.batch_size).to(backend, device))
        outputs = _host_outputs(dict(terms.items()), data, MODEL_DATA_KEYS)
        if backend != "torch":
            return Evaluation(outputs)
        tree = loss.world_model_params
        params = {}
        for part, (_, _, _, _, head) in MODEL_PARTS.items():
            sub = tree[part]["module"]
            mlp_tree = sub["0"] if head else sub
            params.update(_named("model", {part: _Tree(mlp_tree)}, arrayrl=True))
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        import torch
        from tensordict import TensorDict
        from tensordict.nn import TensorDictSequential
        from torchrl.modules import WorldModelWrapper
        from torchrl.objectives import DreamerModelLoss

        (prior, posterior, decoder, reward), mlps = _torchrl_parts(
            MODEL_PARTS, inputs.weights, dtype
        )
        model = WorldModelWrapper(TensorDictSequential(prior, posterior, decoder), reward)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng(devices=[]):
            terms, data = DreamerModelLoss(model, **self.config)(batch)
        outputs = _torch_outputs(terms, data, MODEL_DATA_KEYS)
        params = _named("model", mlps, arrayrl=False)
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))


class _Tree:
    """A parameter tree posing as a layer (``params``) for :func:`_named`."""

    def __init__(self, tree: Any) -> None:
        self.params = tree


ACTOR_DATA_KEYS = [
    "lambda_target",
    "action",
    "loc",
    (_NEXT, "state"),
    (_NEXT, "belief"),
    (_NEXT, "reward"),
]


@dataclass(frozen=True)
class DreamerActorCase(LossCase):
    """One ``DreamerActorLoss`` configuration: ``config`` holds the constructor's keyword
    arguments and, under ``"estimator"``, ``make_value_estimator``'s arguments."""

    @property
    def monte_carlo(self) -> bool:
        """The actor's reparameterised draws."""
        return True

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 16])
        weights = _part_weights(ENV_PARTS, seed)
        weights["actor"] = _mlp_weights(ACTOR_SPEC, seed * 100 + 50)
        weights["value"] = _mlp_weights(VALUE_SPEC, seed * 100 + 51)
        shape = self.batch_shape
        batch = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
        }
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def _loss_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k != "estimator"}

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        from arrayrl.data import ArrayDict
        from arrayrl.modules import DictModule, NormalParamExtractor, ProbabilisticActor, Sequential
        from arrayrl.modules.distributions import TanhNormal
        from arrayrl.objectives.dreamer import DreamerActorLoss

        from .loss_cases import LOSS_SEED

        w = inputs.weights
        model, _ = _arrayrl_world_model(ENV_PARTS, w)
        actor_mlp = _arrayrl_mlp(w["actor"], ACTOR_SPEC.in_features, ACTOR_SPEC.out_features)
        actor = ProbabilisticActor(
            DictModule(
                Sequential(actor_mlp, NormalParamExtractor()), ["state", "belief"], ["loc", "scale"]
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value = DictModule(
            _arrayrl_mlp(w["value"], VALUE_SPEC.in_features, 1),
            ["state", "belief"],
            ["state_value"],
        )
        loss = DreamerActorLoss(actor, value, model, seed=LOSS_SEED, **self._loss_kwargs())
        loss.generator_mode = generator_mode
        if "estimator" in self.config:
            loss.make_value_estimator(**self.config["estimator"])
        loss.to(backend, device)
        value.to(backend, device)
        terms, fake = loss(ArrayDict(inputs.batch, inputs.batch_size).to(backend, device))
        outputs = _host_outputs(dict(terms.items()), fake, ACTOR_DATA_KEYS)
        if backend != "torch":
            return Evaluation(outputs)
        params = _named(
            "actor", {"mlp": _Tree(loss.actor_model_params["module"]["module"]["0"])}, arrayrl=True
        )
        env_tree = loss.model_based_env_params
        params.update(
            _named("model", {p: _Tree(env_tree[p]["module"]) for p in ENV_PARTS}, arrayrl=True)
        )
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's loss on ``DreamerEnv`` over the same parts, after
        ``torch.manual_seed(LOSS_SEED)``, its estimator run along the imagination axis
        (``time_dim=-2``; deviation ``torchrl-dreamer-lambda-time-dim``)."""
        import torch
        from tensordict import TensorDict
        from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
        from torchrl.data import Composite, Unbounded
        from torchrl.envs.model_based.dreamer import DreamerEnv
        from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, WorldModelWrapper
        from torchrl.objectives import DreamerActorLoss
        from torchrl.objectives.utils import ValueEstimators

        from .loss_cases import LOSS_SEED

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        (belief, state, reward), mlps = _torchrl_parts(ENV_PARTS, inputs.weights, dtype)
        model = WorldModelWrapper(TensorDictSequential(belief, state), reward)
        env = DreamerEnv(model, prior_shape=torch.Size([STATE]), belief_shape=torch.Size([BELIEF]))
        env.action_spec = Unbounded(ACT, dtype=torch_dtype)
        env.observation_spec = Composite(
            state=Unbounded(STATE, dtype=torch_dtype), belief=Unbounded(BELIEF, dtype=torch_dtype)
        )
        env.reward_spec = Unbounded(1, dtype=torch_dtype)
        env.state_spec = Composite(
            state=Unbounded(STATE, dtype=torch_dtype), belief=Unbounded(BELIEF, dtype=torch_dtype)
        )

        def mlp(name: str, spec: NetSpec) -> Any:
            net = MLP(
                in_features=spec.in_features,
                out_features=spec.out_features,
                num_cells=list(spec.num_cells),
            ).to(torch_dtype)
            net.load_state_dict(_to_torch(inputs.weights[name]))
            return net

        actor_mlp = mlp("actor", ACTOR_SPEC)
        actor = ProbabilisticActor(
            TensorDictModule(
                _torch_headed(actor_mlp, NormalParamExtractor()),
                ["state", "belief"],
                ["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value = TensorDictModule(mlp("value", VALUE_SPEC), ["state", "belief"], ["state_value"])
        loss = DreamerActorLoss(actor, value, env, **self._loss_kwargs())
        if "estimator" in self.config:
            kwargs = dict(self.config["estimator"])
            loss.make_value_estimator(ValueEstimators[kwargs.pop("value_type")], **kwargs)
        loss.value_estimator.time_dim = -2
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOSS_SEED)
            terms, fake = loss(batch)
        outputs = _torch_outputs(terms, fake, ACTOR_DATA_KEYS)
        params = _named("actor", {"mlp": actor_mlp}, arrayrl=False)
        params.update(_named("model", mlps, arrayrl=False))
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))


def named_case(
    case_class: type, label: str, batch_shape: tuple[int, ...], **config: Any
) -> LossCase:
    """A case of ``case_class`` named ``"FooLoss[<B>x<T>,<label>]"`` (the loss is named
    after the class: ``FooCase`` and ``FooLossCase`` -> ``FooLoss``); the ``"default"``
    one is the core case (the one JAX runs)."""
    base = case_class.__name__.removesuffix("Case")
    loss = base if base.endswith("Loss") else f"{base}Loss"
    layout = "x".join(map(str, batch_shape))
    return case_class(
        name=f"{loss}[{layout},{label}]",
        loss=loss,
        batch_shape=batch_shape,
        config=config,
        core=label == "default",
    )


def _model_case(label: str, **config: Any) -> LossCase:
    return named_case(DreamerModelCase, label, (2, 4), **config)


def _actor_case(label: str, batch_shape: tuple[int, ...] = (6,), **config: Any) -> LossCase:
    return named_case(DreamerActorCase, label, batch_shape, **config)


def _value_case(label: str, batch_shape: tuple[int, ...], **config: Any) -> LossCase:
    return named_case(DreamerValueCase, label, batch_shape, **config)


def cases() -> list[LossCase]:
    """``DreamerModelLoss`` and ``DreamerActorLoss`` configurations, then
    ``DreamerValueLoss`` on the imagination layout ``[N, H]`` and a flat batch, with
    each distance, with and without the discount, and a custom ``gamma``."""
    imagined, flat = (6, HORIZON), (12,)
    return [
        _model_case("default"),
        _model_case("no-free-nats", free_nats=-1000),
        _model_case("delayed-clamp", free_nats=0.5, delayed_clamp=True, lambda_kl=0.3),
        _model_case(
            "global-average,smooth_l1,l1",
            global_average=True,
            free_nats=0.0,
            reco_loss="smooth_l1",
            reward_loss="l1",
            lambda_reward=2.0,
        ),
        _actor_case("default", imagination_horizon=4),
        _actor_case("undiscounted", imagination_horizon=3, discount_loss=False),
        _actor_case(
            "tdlambda-0.5",
            (2, 3),
            imagination_horizon=4,
            estimator={"value_type": "TDLambda", "gamma": 0.9, "lmbda": 0.5},
        ),
        _actor_case("td0", imagination_horizon=3, estimator={"value_type": "TD0", "gamma": 0.9}),
        _actor_case("td1", imagination_horizon=3, estimator={"value_type": "TD1", "gamma": 0.8}),
        _value_case("default", imagined),
        _value_case("default-flat", flat),
        _value_case("smooth_l1,gamma0.8", imagined, value_loss="smooth_l1", gamma=0.8),
        _value_case("l1,undiscounted", imagined, value_loss="l1", discount_loss=False),
        _value_case("l2,undiscounted-flat", flat, discount_loss=False),
    ]


def _actor(case: LossCase, dtype: str) -> bool:
    return isinstance(case, DreamerActorCase)


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-dreamer-lambda-time-dim",
        applies=_actor,
        reason=(
            "TorchRL 0.14.1's DreamerActorLoss.lambda_target calls its value estimator on a "
            "TensorDict of batch size [] holding [N, H, 1] rewards and values; the "
            "estimator's time axis then resolves to ndim - 1 = -1, the trailing unit axis, "
            "so TD(lambda) and TD(1) reduce to the one-step target r_t + gamma v(s_t+1) for "
            "every t (measured). arrayrl computes the lambda-return along the imagination "
            "axis H, as Hafner et al. 2020 (eq. 6) define it. tests/test_dreamer.py compares "
            "with TorchRL after setting its estimator's time_dim = -2 (then the two agree "
            "to float32 rounding) and checks arrayrl's target against a NumPy lambda-return "
            "recursion; the TorchRL cells here run TorchRL with that setting, compared at "
            "the usual tolerance. No TorchRL issue found."
        ),
        tolerance=0.0,
    ),
)
