"""Conformance cases of ``DreamerV3ModelLoss`` and ``DreamerV3ValueLoss``.

``DreamerV3ModelLoss`` cases (:class:`DreamerV3ModelCase`) run a deterministic world model
of MLPs on every backend and dtype: the categorical prior logits from ``(state, belief,
action)``, the posterior logits from ``(belief, ("next", "embedding"))``, a decoder
(``[1, 2, 3]`` images), a reward head (logits over ``NUM_BINS`` symexp bins decoded by
``SymExpTwoHot``, or a scalar) and a continuation logit, all from ``(belief, ("next",
"embedding"))``. TorchRL's ``TensorDictSequential`` of the same MLPs (TorchRL's
``SymExpTwoHot`` for the decoding) holds the same weights. Outputs: every ``[1]`` term and
what the world model wrote; gradients of every term w.r.t. every world-model parameter.

``DreamerV3ValueLoss`` cases (:class:`DreamerV3ValueCase`) regress a value MLP over
``(state, belief)`` (for ``two_hot``: logits then ``SymExpTwoHot``) on given
``lambda_target`` s, with and without ``discount_weight``, the discount and the slow
critic (perturbed target weights), and :meth:`replay_value_loss` on a replayed ``[B, T]``
sequence with episode ends. No draws.

TorchRL's RSSM modules (``RSSMPriorV3`` / ``RSSMPosteriorV3`` / ``RSSMRolloutV3``) are
torch-only and float32-only; ``tests/test_dreamer_v3.py`` compares the model loss with
TorchRL on them (with the same draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import dreamer_cases as _v1
from .dreamer_cases import (
    _arrayrl_mlp,
    _chain_class,
    _host_outputs,
    _torch_headed,
    _torch_outputs,
    _Unflatten,
)
from .loss_cases import (
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch, never_measured, torchrl_mlp

__all__ = [
    "DEVIATIONS",
    "DreamerV3ActorCase",
    "DreamerV3LossCase",
    "DreamerV3ModelCase",
    "DreamerV3ValueCase",
    "cases",
]

# the v1 cases' sizes (one tiny world for both families)
STATE, BELIEF, HIDDEN, ACT, EMBED, PIXELS = (
    _v1.STATE, _v1.BELIEF, _v1.HIDDEN, _v1.ACT, _v1.EMBED, _v1.PIXELS
)  # fmt: skip
N_CAT, N_CLS, NUM_BINS = 2, 3, 15
_NEXT = "next"


def _parts(config: dict[str, Any]) -> dict[str, tuple[int, int, list, list, tuple | str | None]]:
    """part -> (in_features, out_features, in_keys, out_keys, head) of the world model;
    head: a shape to unflatten the last axis to, ``"two_hot"`` (decode the logits to
    ``("next", "reward")``) or ``None``."""
    latent = (N_CAT, N_CLS)
    features = ["belief", (_NEXT, "embedding")]
    two_hot = config.get("reward_two_hot", True)
    parts = {
        "prior": (
            STATE + BELIEF + ACT,
            N_CAT * N_CLS,
            ["state", "belief", "action"],
            [(_NEXT, "prior_logits")],
            latent,
        ),
        "posterior": (
            BELIEF + EMBED,
            N_CAT * N_CLS,
            features,
            [(_NEXT, "posterior_logits")],
            latent,
        ),
        "decoder": (
            BELIEF + EMBED,
            int(np.prod(PIXELS)),
            features,
            [(_NEXT, "reco_pixels")],
            PIXELS,
        ),
        "reward": (
            BELIEF + EMBED,
            NUM_BINS if two_hot else 1,
            features,
            [(_NEXT, "reward_logits" if two_hot else "reward")],
            "two_hot" if two_hot else None,
        ),
    }
    if config.get("lambda_continue", 0.0) > 0:
        parts["continue"] = (BELIEF + EMBED, 1, features, [(_NEXT, "continue_pred")], None)
    return parts


def _arrayrl_world_model(parts: dict[str, tuple], weights: dict[str, Any]) -> Any:
    from arrayrl.modules import DictModule, Sequential
    from arrayrl.modules.model_based import SymExpTwoHot

    modules = {}
    for name, (fin, fout, in_keys, out_keys, head) in parts.items():
        layer = _arrayrl_mlp(weights[name], fin, fout)
        if isinstance(head, tuple):
            layer = Sequential(layer, _Unflatten(head))
        modules[name] = DictModule(layer, in_keys, out_keys)
        if head == "two_hot":
            modules["decode"] = DictModule(SymExpTwoHot(NUM_BINS), out_keys, [(_NEXT, "reward")])
    return _chain_class()(modules)


def _torchrl_world_model(parts: dict[str, tuple], weights: dict[str, Any], dtype: str) -> Any:
    """TorchRL's ``TensorDictSequential`` of the parts, and each part's ``MLP``."""
    import torch
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import SymExpTwoHot

    modules, mlps = [], {}
    for name, (fin, fout, in_keys, out_keys, head) in parts.items():
        mlp = mlps[name] = torchrl_mlp(NetSpec(fin, fout, (HIDDEN,)), weights[name], dtype)
        net = _torch_headed(mlp, torch.nn.Unflatten(-1, head)) if isinstance(head, tuple) else mlp
        modules.append(TensorDictModule(net, in_keys=in_keys, out_keys=out_keys))
        if head == "two_hot":
            modules.append(TensorDictModule(SymExpTwoHot(NUM_BINS), out_keys, [(_NEXT, "reward")]))
    return TensorDictSequential(*modules), mlps


def _arrayrl_named(tree: dict[str, Any], parts: dict[str, tuple]) -> dict[str, Any]:
    from arrayrl.modules import flatten_params

    out = {}
    for name, (*_, head) in parts.items():
        sub = tree[name]["module"]
        sub = sub["0"] if isinstance(head, tuple) else sub
        out.update({f"model.{name}.{p}": leaf for p, leaf in flatten_params(sub).items()})
    return out


MODEL_DATA_KEYS = [(_NEXT, "prior_logits"), (_NEXT, "reco_pixels"), (_NEXT, "true_reward")]


@dataclass(frozen=True)
class DreamerV3ModelCase(LossCase):
    """One ``DreamerV3ModelLoss`` configuration (``config``: its keyword arguments;
    ``"uint8_pixels"`` stores the images as integers in ``[0, 255]``)."""

    @property
    def monte_carlo(self) -> bool:
        """The MLP world model draws nothing."""
        return False

    def _kwargs(self) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.config.items() if k != "uint8_pixels"}
        return {"num_reward_bins": NUM_BINS, **kwargs}

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 31])
        shape = self.batch_shape
        pixels = rng.random((*shape, *PIXELS))
        if self.config.get("uint8_pixels"):
            pixels = rng.integers(0, 256, (*shape, *PIXELS)).astype(np.uint8)
        batch = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
            "action": rng.standard_normal((*shape, ACT)),
            "next": {
                "embedding": rng.standard_normal((*shape, EMBED)),
                "pixels": 5 * pixels if pixels.dtype != np.uint8 else pixels,
                "reward": 3 * rng.standard_normal((*shape, 1)),
                "terminated": rng.random((*shape, 1)) < 0.3,
            },
        }
        parts = _parts(self.config)
        weights = {
            name: _mlp_weights(NetSpec(fin, fout, (HIDDEN,)), seed * 100 + k)
            for k, (name, (fin, fout, *_)) in enumerate(parts.items())
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
        from arrayrl.data import ArrayDict
        from arrayrl.objectives.dreamer_v3 import DreamerV3ModelLoss

        parts = _parts(self.config)
        model = _arrayrl_world_model(parts, inputs.weights)
        loss = DreamerV3ModelLoss(model, **self._kwargs()).to(backend, device)
        terms, data = loss(ArrayDict(inputs.batch, inputs.batch_size).to(backend, device))
        outputs = _host_outputs(dict(terms.items()), data, MODEL_DATA_KEYS)
        if backend != "torch":
            return Evaluation(outputs)
        params = _arrayrl_named(loss.world_model_params, parts)
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        from tensordict import TensorDict
        from torchrl.objectives import DreamerV3ModelLoss

        parts = _parts(self.config)
        model, mlps = _torchrl_world_model(parts, inputs.weights, dtype)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        terms, data = DreamerV3ModelLoss(model, **self._kwargs())(batch)
        outputs = _torch_outputs(terms, data, MODEL_DATA_KEYS)
        params = {
            f"model.{part}.{name}": p
            for part, mlp in mlps.items()
            for name, p in mlp.named_parameters()
        }
        return Evaluation(outputs, torch_gradients(dict(terms.items()), params))


# -- the value ----------------------------------------------------------------------------
def _value_outputs(config: dict[str, Any]) -> int:
    return NUM_BINS if config.get("value_loss") == "two_hot" else 1


class _LogitsAndValue:
    """An MLP's logits and their ``SymExpTwoHot`` decoding (a layer with two outputs)."""

    def __init__(self, mlp: Any, head: Any) -> None:
        self.mlp, self.head = mlp, head

    @property
    def params(self) -> Any:
        return self.mlp.params

    @params.setter
    def params(self, tree: Any) -> None:
        self.mlp.params = tree

    def apply(self, params: Any, *inputs: Any) -> tuple[Any, Any]:
        logits = self.mlp.apply(params, *inputs)
        return logits, self.head.apply({}, logits)

    def to(self, backend: Any, device: Any = None) -> _LogitsAndValue:
        self.mlp.to(backend, device)
        return self


@dataclass(frozen=True)
class DreamerV3ValueCase(LossCase):
    """One ``DreamerV3ValueLoss`` configuration: ``config`` holds the constructor's
    arguments, ``"discount_weight"`` (put one in the batch), ``"replay"`` (call
    ``replay_value_loss`` with these keyword arguments instead of the loss)."""

    @property
    def monte_carlo(self) -> bool:
        return False

    def _kwargs(self) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.config.items() if k not in ("discount_weight", "replay")}
        return {"num_value_bins": NUM_BINS, **kwargs}

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 32])
        spec = NetSpec(STATE + BELIEF, _value_outputs(self.config), (HIDDEN,))
        weights = {"value": _mlp_weights(spec, seed * 100 + 9)}
        targets = {}
        if self.config.get("slow_critic_regularization"):
            targets["value"] = {
                k: w + 0.3 * rng.standard_normal(w.shape) for k, w in weights["value"].items()
            }
        shape = self.batch_shape
        batch: dict[str, Any] = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
        }
        if "replay" in self.config:
            done = rng.random((*shape, 1)) < 0.25
            batch["bootstrap"] = 4 * rng.standard_normal(shape)
            batch["next"] = {
                "reward": 2 * rng.standard_normal((*shape, 1)),
                "done": done,
                "terminated": done & (rng.random((*shape, 1)) < 0.5),
            }
        else:
            batch["lambda_target"] = 5 * rng.standard_normal((*shape, 1))
        if self.config.get("discount_weight"):
            batch["discount_weight"] = rng.random((*shape, 1))
        return LossInputs(weights, targets, batch, shape).astype(dtype)

    def _terms(self, loss: Any, batch: Any) -> dict[str, Any]:
        if "replay" in self.config:
            out = loss.replay_value_loss(batch, **self.config["replay"])
        else:
            out, _ = loss(batch)
        return {k: out[k] for k in out.keys()}

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        from arrayrl.backends import backend_of

        from arrayrl.data import ArrayDict
        from arrayrl.modules import DictModule, flatten_params
        from arrayrl.modules.model_based import SymExpTwoHot
        from arrayrl.objectives.dreamer_v3 import DreamerV3ValueLoss

        mlp = _arrayrl_mlp(inputs.weights["value"], STATE + BELIEF, _value_outputs(self.config))
        keys = ["state", "belief"]
        if self.config.get("value_loss") == "two_hot":
            head = _LogitsAndValue(mlp, SymExpTwoHot(NUM_BINS))
            value = DictModule(head, keys, ["state_value_logits", "state_value"])
        else:
            value = DictModule(mlp, keys, ["state_value"])
        prefix = "module"
        loss = DreamerV3ValueLoss(value, **self._kwargs())
        if "value" in inputs.target_weights:
            state = loss.state_dict()
            for name, w in inputs.target_weights["value"].items():
                state[f"target_value_model_params.{prefix}.{name}"] = w
            loss.load_state_dict(state)
        loss.to(backend, device)
        terms = self._terms(loss, ArrayDict(inputs.batch, inputs.batch_size).to(backend, device))
        outputs = {k: _host(v, backend_of(v)) for k, v in terms.items()}
        if backend != "torch":
            return Evaluation(outputs)
        tree = loss.value_model_params[prefix]
        params = {f"value.{name}": leaf for name, leaf in flatten_params(tree).items()}
        return Evaluation(outputs, torch_gradients(terms, params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        import torch
        from tensordict import TensorDict
        from tensordict.nn import TensorDictModule, TensorDictSequential
        from torchrl.modules import SymExpTwoHot
        from torchrl.objectives import DreamerV3ValueLoss

        spec = NetSpec(STATE + BELIEF, _value_outputs(self.config), (HIDDEN,))
        mlp = torchrl_mlp(spec, inputs.weights["value"], dtype)
        keys = ["state", "belief"]
        if self.config.get("value_loss") == "two_hot":
            value = TensorDictSequential(
                TensorDictModule(mlp, keys, ["state_value_logits"]),
                TensorDictModule(SymExpTwoHot(NUM_BINS), ["state_value_logits"], ["state_value"]),
            )
        else:
            value = TensorDictModule(mlp, keys, ["state_value"])
        loss = DreamerV3ValueLoss(value, **self._kwargs())
        if "value" in inputs.target_weights:
            names = {id(p): n for n, p in mlp.named_parameters()}
            target = loss.target_value_model_params
            for key, leaf in loss.value_model_params.items(include_nested=True, leaves_only=True):
                if id(leaf) in names:
                    new = torch.from_numpy(
                        np.array(inputs.target_weights["value"][names[id(leaf)]])
                    )
                    target.get(key).data.copy_(new)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        terms = self._terms(loss, batch)
        outputs = {k: v.detach().numpy() for k, v in terms.items()}
        params = {f"value.{name}": p for name, p in mlp.named_parameters()}
        return Evaluation(outputs, torch_gradients(terms, params))


def _model_case(label: str, **config: Any) -> LossCase:
    return _v1.named_case(DreamerV3ModelCase, label, (2, 4), **config)


def _value_case(label: str, batch_shape: tuple[int, ...], **config: Any) -> LossCase:
    return _v1.named_case(DreamerV3ValueCase, label, batch_shape, **config)


def _model_value_cases() -> list[LossCase]:
    """The model loss's KL modes, reconstruction settings, reward heads and continuation
    term; the value loss's two losses, discounts, slow critic and replay loss."""
    imagined, flat = (6, 5), (12,)
    return [
        _model_case("default"),
        _model_case(
            "separate,unimix",
            kl_mode="separate",
            unimix=0.01,
            free_bits=0.5,
            lambda_kl=0.7,
            lambda_dynamic=0.5,
            lambda_representation=0.2,
        ),
        _model_case("no-free-bits,l1", free_bits=0.0, reco_loss="l1", kl_alpha=0.6),
        _model_case("global-average,symlog-reward", global_average=True, reward_two_hot=False),
        _model_case(
            "continue,raw-uint8",
            lambda_continue=0.5,
            continue_target_scale=0.9,
            reco_symlog=False,
            uint8_pixels=True,
        ),
        _model_case("raw-float", reco_symlog=False, lambda_reco=2.0, lambda_reward=0.5),
        _value_case("default", imagined),
        _value_case("default-flat", flat),
        _value_case("two-hot", imagined, value_loss="two_hot", gamma=0.9),
        _value_case("discount-weight", imagined, discount_weight=True),
        _value_case("undiscounted,sum", imagined, discount_loss=False, reduction="sum"),
        _value_case("none", imagined, reduction="none"),
        _value_case("slow-critic", imagined, slow_critic_regularization=0.5),
        _value_case(
            "two-hot,slow-critic", imagined, value_loss="two_hot", slow_critic_regularization=1.0
        ),
        _value_case("replay", (3, 6), replay={"horizon": 20.0, "lmbda": 0.8}),
        _value_case(
            "replay,two-hot,slow-critic",
            (3, 6),
            value_loss="two_hot",
            slow_critic_regularization=0.3,
            replay={},
        ),
    ]


def _float32_casts(case: LossCase, dtype: str) -> bool:
    """A float64 model-loss case with integer images or a continuation term."""
    return (
        isinstance(case, DreamerV3ModelCase)
        and dtype == "float64"
        and bool(case.config.get("uint8_pixels") or case.config.get("lambda_continue"))
    )



_MODEL_VALUE_DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-dreamerv3-float32-casts",
        applies=_float32_casts,
        reason=(
            "TorchRL 0.14.1's DreamerV3ModelLoss casts to float32 regardless of the world "
            "model's dtype: with reco_symlog=False the reconstruction (prediction.float()) "
            "and integer images (float() / 255), and the continuation target "
            "((~terminated).float() * continue_target_scale). arrayrl computes in the "
            "model's dtype, so float64 cells of those cases agree with TorchRL only to "
            "float32 accuracy. No TorchRL issue found."
        ),
        covers=("loss_model_reco", "loss_model_continue"),
        tolerance=1e-5,
    ),
    LossDeviation(
        key="torchrl-dreamerv3-continue-missing",
        applies=never_measured,
        reason=(
            "With lambda_continue > 0, TorchRL 0.14.1's DreamerV3ModelLoss silently omits "
            "loss_model_continue when the world model wrote no continue_pred or the batch "
            "has neither terminated nor done; arrayrl raises KeyError naming the key, as a "
            "requested loss term must not vanish. No TorchRL issue found."
        ),
        tolerance=None,
    ),
)


# -- the actor ------------------------------------------------------------------------------
# ``DreamerV3ActorLoss`` cases (:class:`DreamerV3ActorCase`) imagine in the deterministic MLP
# world model of the v1 actor cases (``dreamer_cases.ENV_PARTS``: TorchRL's ``DreamerEnv``
# over the same modules) with a ``TanhNormal`` actor, so the only draws are the actor's
# ``rsample`` per step and the one-sample entropy ``rsample`` ``[N, H, A]`` after the
# rollout: TorchRL runs after ``torch.manual_seed``, arrayrl on torch draws from a
# ``torch.Generator`` seeded alike. An optional continuation model is an MLP over
# ``(state, belief)`` followed by a sigmoid. Outputs: the six 0-d terms (the moving return
# quantiles included), ``lambda_target``, ``discount_weight``, the continuations and the
# imagined trajectory; gradients of ``loss_actor`` w.r.t. the actor's and the (held-out)
# world model's parameters.

_V3_ACTOR_DATA_KEYS = [*_v1.ACTOR_DATA_KEYS, "discount_weight"]
_CONTINUATION_SPEC = NetSpec(STATE + BELIEF, 1, (HIDDEN,))
_ACTOR_TERMS = (
    "loss_actor",
    "actor_entropy",
    "return_low",
    "return_high",
    "return_scale",
    "continuation_mean",
)


class _Sigmoid:
    """``1 / (1 + exp(-x))`` (a parameter-free arrayrl layer)."""

    params: dict = {}  # noqa: RUF012 (no parameters, never written)

    def apply(self, params: Any, x: Any) -> Any:
        from arrayrl.backends import backend_of

        return 1.0 / (1.0 + backend_of(x).xp.exp(-x))

    def to(self, backend: Any, device: Any = None) -> _Sigmoid:
        return self


@dataclass(frozen=True)
class DreamerV3ActorCase(LossCase):
    """One ``DreamerV3ActorLoss`` configuration: ``config`` holds the constructor's
    keyword arguments, ``make_value_estimator``'s under ``"estimator"``, ``"continuation":
    True`` for a continuation model and ``"eval": True`` for evaluation mode; ``calls``
    (in ``config``, default 1) is the number of calls, the last one compared (the return
    statistics move between calls)."""

    @property
    def monte_carlo(self) -> bool:
        """The actor's reparameterised draws."""
        return True

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 17])
        weights = _v1._part_weights(_v1.ENV_PARTS, seed)
        weights["actor"] = _mlp_weights(_v1.ACTOR_SPEC, seed * 100 + 50)
        weights["value"] = _mlp_weights(_v1.VALUE_SPEC, seed * 100 + 51)
        weights["continuation"] = _mlp_weights(_CONTINUATION_SPEC, seed * 100 + 52)
        shape = self.batch_shape
        batch = {
            "state": rng.standard_normal((*shape, STATE)),
            "belief": rng.standard_normal((*shape, BELIEF)),
        }
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def _loss_kwargs(self) -> dict[str, Any]:
        extra = ("estimator", "continuation", "eval", "calls")
        return {k: v for k, v in self.config.items() if k not in extra}

    def _data_keys(self) -> list:
        if not self.config.get("continuation"):
            return _V3_ACTOR_DATA_KEYS
        return [*_V3_ACTOR_DATA_KEYS, "continuation", (_NEXT, "continuation")]

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
        from arrayrl.objectives.dreamer_v3 import DreamerV3ActorLoss

        from .loss_cases import LOSS_SEED

        w = inputs.weights
        model, _ = _v1._arrayrl_world_model(_v1.ENV_PARTS, w)
        spec = _v1.ACTOR_SPEC
        actor_mlp = _v1._arrayrl_mlp(w["actor"], spec.in_features, spec.out_features)
        actor = ProbabilisticActor(
            DictModule(
                Sequential(actor_mlp, NormalParamExtractor()), ["state", "belief"], ["loc", "scale"]
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        features = _v1.VALUE_SPEC.in_features
        value = DictModule(
            _v1._arrayrl_mlp(w["value"], features, 1), ["state", "belief"], ["state_value"]
        )
        kwargs = self._loss_kwargs()
        if self.config.get("continuation"):
            mlp = _v1._arrayrl_mlp(w["continuation"], features, 1)
            kwargs["continuation_model"] = DictModule(
                Sequential(mlp, _Sigmoid()), ["state", "belief"], ["continuation"]
            )
        loss = DreamerV3ActorLoss(actor, value, model, seed=LOSS_SEED, **kwargs)
        loss.generator_mode = generator_mode
        if "estimator" in self.config:
            loss.make_value_estimator(**self.config["estimator"])
        if self.config.get("eval"):
            loss.eval()
        loss.to(backend, device)
        data = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
        for _ in range(self.config.get("calls", 1)):
            terms, fake = loss(data)
        outputs = _host_outputs(dict(terms.items()), fake, self._data_keys())
        if backend != "torch":
            return Evaluation(outputs)
        tree = loss.actor_model_params["module"]["module"]["0"]
        params = _v1._named("actor", {"mlp": _v1._Tree(tree)}, arrayrl=True)
        env_tree = loss.model_based_env_params
        params.update(
            _v1._named(
                "model", {p: _v1._Tree(env_tree[p]["module"]) for p in _v1.ENV_PARTS}, arrayrl=True
            )
        )
        return Evaluation(outputs, torch_gradients({"loss_actor": terms["loss_actor"]}, params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's loss on ``DreamerEnv`` over the same parts, after
        ``torch.manual_seed(LOSS_SEED)``; without a continuation model its estimator runs
        along the imagination axis (``time_dim=-2``; deviation
        ``torchrl-dreamer-lambda-time-dim``)."""
        import torch
        from tensordict import TensorDict
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torchrl.modules import MLP, ProbabilisticActor, TanhNormal
        from torchrl.objectives import DreamerV3ActorLoss
        from torchrl.objectives.utils import ValueEstimators

        from .loss_cases import LOSS_SEED

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        env, mlps = _torchrl_dreamer_env(inputs, dtype)

        def mlp(name: str, spec: NetSpec) -> Any:
            net = MLP(
                in_features=spec.in_features,
                out_features=spec.out_features,
                num_cells=list(spec.num_cells),
            ).to(torch_dtype)
            net.load_state_dict(_to_torch(inputs.weights[name]))
            return net

        actor_mlp = mlp("actor", _v1.ACTOR_SPEC)
        actor = ProbabilisticActor(
            TensorDictModule(
                _torch_headed(actor_mlp, NormalParamExtractor()),
                ["state", "belief"],
                ["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value = TensorDictModule(mlp("value", _v1.VALUE_SPEC), ["state", "belief"], ["state_value"])
        kwargs = self._loss_kwargs()
        if self.config.get("continuation"):
            head = _torch_headed(mlp("continuation", _CONTINUATION_SPEC), torch.nn.Sigmoid())
            kwargs["continuation_model"] = TensorDictModule(
                head, ["state", "belief"], ["continuation"]
            )
        loss = DreamerV3ActorLoss(actor, value, env, **kwargs)
        if "estimator" in self.config:
            estimator = dict(self.config["estimator"])
            loss.make_value_estimator(ValueEstimators[estimator.pop("value_type")], **estimator)
        loss.value_estimator.time_dim = -2
        if self.config.get("eval"):
            loss.eval()
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOSS_SEED)
            for _ in range(self.config.get("calls", 1)):
                terms, fake = loss(batch)
        outputs = _torch_outputs(terms, fake, self._data_keys())
        params = _v1._named("actor", {"mlp": actor_mlp}, arrayrl=False)
        params.update(_v1._named("model", mlps, arrayrl=False))
        return Evaluation(outputs, torch_gradients({"loss_actor": terms["loss_actor"]}, params))


def _torchrl_dreamer_env(inputs: LossInputs, dtype: str) -> tuple[Any, dict]:
    """TorchRL's ``DreamerEnv`` over the v1 cases' MLP parts, and each part's ``MLP``."""
    import torch
    from tensordict.nn import TensorDictSequential
    from torchrl.data import Composite, Unbounded
    from torchrl.envs.model_based.dreamer import DreamerEnv
    from torchrl.modules import WorldModelWrapper

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    (belief, state, reward), mlps = _v1._torchrl_parts(_v1.ENV_PARTS, inputs.weights, dtype)
    model = WorldModelWrapper(TensorDictSequential(belief, state), reward)
    sizes = {"state": STATE, "belief": BELIEF}
    env = DreamerEnv(model, prior_shape=torch.Size([STATE]), belief_shape=torch.Size([BELIEF]))
    env.action_spec = Unbounded(_v1.ACT, dtype=torch_dtype)
    env.observation_spec = Composite({k: Unbounded(n, dtype=torch_dtype) for k, n in sizes.items()})
    env.reward_spec = Unbounded(1, dtype=torch_dtype)
    env.state_spec = Composite({k: Unbounded(n, dtype=torch_dtype) for k, n in sizes.items()})
    return env, mlps


def _actor_case(label: str, batch_shape: tuple[int, ...] = (6,), **config: Any) -> LossCase:
    return _v1.named_case(DreamerV3ActorCase, label, batch_shape, **config)


def _actor_cases() -> list[LossCase]:
    """The actor's: dynamics backpropagation and REINFORCE, the entropy bonus on and off,
    the return normalisation (several calls, eval mode, off), the continuation model and
    each value estimator."""
    return [
        _actor_case("default", imagination_horizon=4),
        _actor_case("three-calls", imagination_horizon=3, calls=3, return_normalization_rate=0.3),
        _actor_case(
            "reinforce",
            (2, 3),
            imagination_horizon=4,
            use_reinforce=True,
            entropy_bonus=0.05,
            calls=2,
            return_normalization_quantiles=(0.1, 0.8),
            return_normalization_min_scale=0.01,
            return_normalization_rate=0.5,
        ),
        _actor_case(
            "no-entropy,undiscounted", imagination_horizon=3, entropy_bonus=0.0, discount_loss=False
        ),
        _actor_case("eval", imagination_horizon=3, eval=True),
        _actor_case("no-normalization", imagination_horizon=3, return_normalization=False),
        _actor_case(
            "continuation",
            imagination_horizon=4,
            continuation=True,
            estimator={"value_type": "TDLambda", "gamma": 0.9, "lmbda": 0.7},
        ),
        _actor_case(
            "continuation,reinforce",
            imagination_horizon=3,
            continuation=True,
            use_reinforce=True,
            return_normalization_min_scale=0.05,
            calls=2,
        ),
        _actor_case("td0", imagination_horizon=3, estimator={"value_type": "TD0", "gamma": 0.9}),
        _actor_case("td1", imagination_horizon=3, estimator={"value_type": "TD1", "gamma": 0.8}),
    ]


def _v3_actor_without_continuation(case: LossCase, dtype: str) -> bool:
    return isinstance(case, DreamerV3ActorCase) and not case.config.get("continuation")


_ACTOR_DEVIATIONS = (
    LossDeviation(
        key="torchrl-dreamerv3-lambda-time-dim",
        applies=_v3_actor_without_continuation,
        reason=(
            "Without a continuation_model, TorchRL 0.14.1's DreamerV3ActorLoss.lambda_target "
            "calls its value estimator on a TensorDict of batch size [] holding [N, H, 1] "
            "rewards and values, as the v1 actor does (torchrl-dreamer-lambda-time-dim): "
            "the time axis resolves to the trailing unit axis and TD(lambda) / TD(1) reduce "
            "to r_t + gamma v(s_t+1) (measured). Its continuation path recurses along H "
            "correctly. arrayrl computes the lambda-return along the imagination axis H "
            "(Hafner et al. 2023, eq. 7) on both paths; the TorchRL cells here run TorchRL "
            "with its estimator's time_dim = -2, compared at the usual tolerance. No "
            "TorchRL issue found."
        ),
        tolerance=0.0,
    ),
)


# -- the combined loss ----------------------------------------------------------------------------
# ``DreamerV3Loss`` cases (:class:`DreamerV3LossCase`) chain the three: the model cases' MLP
# world model with two more parts writing the posterior ``("next", "state")`` and
# ``("next", "belief")`` from ``(belief, ("next", "embedding"))`` (so the replay critic's
# gradient reaches it), the actor cases' imagination world model (``dreamer_cases.ENV_PARTS``,
# weights of its own), their ``TanhNormal`` actor and one value MLP shared by the actor and
# value losses. Draws: the actor's, as the actor cases. Outputs: every term (the model's
# squeezed to 0-d), ``replay_value`` and the replay context; gradients of every ``loss_*`` term
# w.r.t. the world model's, the imagination model's, the actor's and the critic's parameters.
assert (STATE, BELIEF, ACT) == (STATE, BELIEF, _v1.ACT)

_LATENT_PARTS = {
    "latent_state": (BELIEF + EMBED, STATE, ["belief", (_NEXT, "embedding")], [(_NEXT, "state")]),
    "latent_belief": (
        BELIEF + EMBED,
        BELIEF,
        ["belief", (_NEXT, "embedding")],
        [(_NEXT, "belief")],
    ),
}
_CONTEXT_KEYS = [("replay_context", "state"), ("replay_context", "belief")]


def _combined_parts(config: dict[str, Any]) -> dict[str, tuple]:
    parts = _parts(config)
    parts.update({name: (*spec, None) for name, spec in _LATENT_PARTS.items()})
    return parts


def _role_weights(weights: dict[str, Any], role: str) -> dict[str, Any]:
    """The weights stored as ``"<role>.<part>"``, keyed by part."""
    head = f"{role}."
    return {k[len(head) :]: v for k, v in weights.items() if k.startswith(head)}


@dataclass(frozen=True)
class DreamerV3LossCase(LossCase):
    """One ``DreamerV3Loss`` configuration: ``config`` holds its keyword arguments, the
    model loss's under ``"model"``, the value loss's under ``"value"``, the actor loss's
    under ``"actor"``, and ``calls`` (default 1; the last call compared)."""

    @property
    def monte_carlo(self) -> bool:
        """The actor's reparameterised draws."""
        return True

    def _part_kwargs(self) -> tuple[dict, dict, dict, dict]:
        config = self.config
        model = {"num_reward_bins": NUM_BINS, "detach_output": False, **config.get("model", {})}
        actor = {"imagination_horizon": 3, **config.get("actor", {})}
        own = ("model", "value", "actor", "calls")
        return (
            model,
            actor,
            config.get("value", {}),
            {k: v for k, v in config.items() if k not in own},
        )

    def build(self, seed: int, dtype: str) -> LossInputs:
        model_inputs = DreamerV3ModelCase(
            name="", loss="DreamerV3ModelLoss", batch_shape=self.batch_shape
        ).build(seed, "float64")
        rng = np.random.default_rng([seed, 41])
        weights = {f"model.{k}": v for k, v in model_inputs.weights.items()}
        for k, (name, (fin, fout, *_)) in enumerate(_LATENT_PARTS.items()):
            weights[f"model.{name}"] = _mlp_weights(
                NetSpec(fin, fout, (HIDDEN,)), seed * 100 + 70 + k
            )
        weights.update(
            {f"env.{k}": v for k, v in _v1._part_weights(_v1.ENV_PARTS, seed + 1000).items()}
        )
        weights["actor"] = _mlp_weights(_v1.ACTOR_SPEC, seed * 100 + 80)
        weights["value"] = _mlp_weights(_v1.VALUE_SPEC, seed * 100 + 81)
        batch = model_inputs.batch
        batch["next"]["done"] = batch["next"]["terminated"] | (
            rng.random((*self.batch_shape, 1)) < 0.2
        )
        return LossInputs(weights, {}, batch, self.batch_shape).astype(dtype)

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
        from arrayrl.objectives.dreamer_v3 import (
            DreamerV3ActorLoss,
            DreamerV3Loss,
            DreamerV3ModelLoss,
            DreamerV3ValueLoss,
        )

        from .loss_cases import LOSS_SEED

        w = inputs.weights
        model_kwargs, actor_kwargs, value_kwargs, kwargs = self._part_kwargs()
        parts = _combined_parts(model_kwargs)
        world = _arrayrl_world_model(parts, _role_weights(w, "model"))
        env, _ = _v1._arrayrl_world_model(_v1.ENV_PARTS, _role_weights(w, "env"))
        spec = _v1.ACTOR_SPEC
        actor = ProbabilisticActor(
            DictModule(
                Sequential(
                    _v1._arrayrl_mlp(w["actor"], spec.in_features, spec.out_features),
                    NormalParamExtractor(),
                ),
                ["state", "belief"],
                ["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value = DictModule(
            _v1._arrayrl_mlp(w["value"], _v1.VALUE_SPEC.in_features, 1),
            ["state", "belief"],
            ["state_value"],
        )
        actor_loss = DreamerV3ActorLoss(actor, value, env, seed=LOSS_SEED, **actor_kwargs)
        actor_loss.generator_mode = generator_mode
        loss = DreamerV3Loss(
            DreamerV3ModelLoss(world, **model_kwargs),
            actor_loss,
            DreamerV3ValueLoss(value, actor_loss=actor_loss, **value_kwargs),
            **kwargs,
        ).to(backend, device)
        data = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
        for _ in range(self.config.get("calls", 1)):
            out = loss(data)
        terms = {k: v for k, v in out.items() if k != "replay_context"}
        outputs = _host_outputs(terms, out, _CONTEXT_KEYS)
        if backend != "torch":
            return Evaluation(outputs)
        params = _arrayrl_named(loss.model_loss.world_model_params, parts)
        actor_tree = loss.actor_loss.actor_model_params["module"]["module"]["0"]
        params.update(_v1._named("actor", {"mlp": _v1._Tree(actor_tree)}, arrayrl=True))
        env_tree = loss.actor_loss.model_based_env_params
        env_mlps = {p: _v1._Tree(env_tree[p]["module"]) for p in _v1.ENV_PARTS}
        params.update(_v1._named("env", env_mlps, arrayrl=True))
        value_tree = loss.value_loss.value_model_params["module"]
        params.update(_v1._named("value", {"mlp": _v1._Tree(value_tree)}, arrayrl=True))
        return Evaluation(outputs, torch_gradients(terms, params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``DreamerV3Loss`` over the same parts after
        ``torch.manual_seed(LOSS_SEED)``, its actor's estimator along the imagination axis
        (deviation ``torchrl-dreamerv3-loss-lambda-time-dim``)."""
        import dataclasses

        import torch
        from tensordict import TensorDict
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torchrl.modules import MLP, ProbabilisticActor, TanhNormal
        from torchrl.objectives import (
            DreamerV3ActorLoss,
            DreamerV3Loss,
            DreamerV3ModelLoss,
            DreamerV3ValueLoss,
        )

        from .loss_cases import LOSS_SEED

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        w = inputs.weights
        model_kwargs, actor_kwargs, value_kwargs, kwargs = self._part_kwargs()
        parts = _combined_parts(model_kwargs)
        world, world_mlps = _torchrl_world_model(parts, _role_weights(w, "model"), dtype)
        env_inputs = dataclasses.replace(inputs, weights=_role_weights(w, "env"))
        env, env_mlps = _torchrl_dreamer_env(env_inputs, dtype)

        def mlp(name: str, spec: NetSpec) -> Any:
            net = MLP(
                in_features=spec.in_features,
                out_features=spec.out_features,
                num_cells=list(spec.num_cells),
            ).to(torch_dtype)
            net.load_state_dict(_to_torch(w[name]))
            return net

        actor_mlp = mlp("actor", _v1.ACTOR_SPEC)
        actor = ProbabilisticActor(
            TensorDictModule(
                _torch_headed(actor_mlp, NormalParamExtractor()),
                ["state", "belief"],
                ["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value_mlp = mlp("value", _v1.VALUE_SPEC)
        value = TensorDictModule(value_mlp, ["state", "belief"], ["state_value"])
        actor_loss = DreamerV3ActorLoss(actor, value, env, **actor_kwargs)
        actor_loss.value_estimator.time_dim = -2
        loss = DreamerV3Loss(
            DreamerV3ModelLoss(world, **model_kwargs),
            actor_loss,
            DreamerV3ValueLoss(value, actor_loss=actor_loss, **value_kwargs),
            **kwargs,
        )
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(LOSS_SEED)
            for _ in range(self.config.get("calls", 1)):
                out = loss(batch)
        terms = {k: v for k, v in out.items() if k != "replay_context"}
        outputs = _torch_outputs(terms, out, _CONTEXT_KEYS)
        params = {
            f"model.{part}.{name}": p
            for part, net in world_mlps.items()
            for name, p in net.named_parameters()
        }
        params.update(_v1._named("actor", {"mlp": actor_mlp}, arrayrl=False))
        params.update(_v1._named("env", env_mlps, arrayrl=False))
        params.update(_v1._named("value", {"mlp": value_mlp}, arrayrl=False))
        return Evaluation(outputs, torch_gradients(terms, params))


def _combined_case(label: str, batch_shape: tuple[int, ...] = (2, 3), **config: Any) -> LossCase:
    return _v1.named_case(DreamerV3LossCase, label, batch_shape, **config)


def _combined_cases() -> list[LossCase]:
    """The combined loss's: the default, the replay critic off, and a weighted replay
    critic with a slow critic, separate KL terms, a short continuation horizon and two
    calls."""
    return [
        _combined_case("default"),
        _combined_case(
            "no-replay",
            (3, 2),
            replay_value_loss_weight=0.0,
            model={"detach_output": True},
            actor={"imagination_horizon": 2},
        ),
        _combined_case(
            "replay,slow-critic,separate",
            replay_value_loss_weight=1.5,
            continuation_horizon=20.0,
            lmbda=0.8,
            model={"kl_mode": "separate", "unimix": 0.01, "free_bits": 0.1},
            value={"slow_critic_regularization": 0.5},
            actor={"imagination_horizon": 4, "entropy_bonus": 0.01},
            calls=2,
        ),
    ]


def _v3_combined(case: LossCase, dtype: str) -> bool:
    return isinstance(case, DreamerV3LossCase)


_COMBINED_DEVIATIONS = (
    LossDeviation(
        key="torchrl-dreamerv3-loss-lambda-time-dim",
        applies=_v3_combined,
        reason=(
            "DreamerV3Loss runs its DreamerV3ActorLoss, so the imagined lambda_target (its "
            "actor loss, its value loss and the replay critic's bootstrap) carries "
            "torchrl-dreamerv3-lambda-time-dim: TorchRL 0.14.1 without a continuation model "
            "reduces TD(lambda) to one step along the trailing unit axis; arrayrl computes "
            "it along the imagination axis. The TorchRL cells run TorchRL with its actor "
            "estimator's time_dim = -2, compared at the usual tolerance. No TorchRL issue "
            "found."
        ),
        tolerance=0.0,
    ),
)


def cases() -> list[LossCase]:
    """Every DreamerV3 case: model, value, actor, combined."""
    return [*_model_value_cases(), *_actor_cases(), *_combined_cases()]


DEVIATIONS: tuple[LossDeviation, ...] = (
    *_MODEL_VALUE_DEVIATIONS,
    *_ACTOR_DEVIATIONS,
    *_COMBINED_DEVIATIONS,
)
