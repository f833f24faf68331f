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

from .dreamer_cases import _chain_class, _host_outputs, _torch_headed, _torch_outputs
from .loss_cases import (
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch

__all__ = ["DEVIATIONS", "DreamerV3ModelCase", "DreamerV3ValueCase", "cases"]

STATE, BELIEF, HIDDEN, ACT, EMBED = 3, 4, 8, 2, 2
N_CAT, N_CLS, NUM_BINS = 2, 3, 15
PIXELS = (1, 2, 3)
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


class _Unflatten:
    """``[..., n] -> [..., *shape]``, a parameter-free arrayrl layer."""

    params: dict = {}  # noqa: RUF012 (no parameters, never written)

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def apply(self, params: Any, x: Any) -> Any:
        from arrayrl.backends import backend_of

        return backend_of(x).xp.reshape(x, (*x.shape[:-1], *self.shape))

    def to(self, backend: Any, device: Any = None) -> _Unflatten:
        return self


def _arrayrl_mlp(weights: dict[str, np.ndarray], fin: int, fout: int) -> Any:
    from arrayrl.modules import MLP, unflatten_params

    mlp = MLP(fin, fout, [HIDDEN], dtype=next(iter(weights.values())).dtype)
    mlp.params = unflatten_params(dict(weights))
    return mlp


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
    from torchrl.modules import MLP, SymExpTwoHot

    torch_dtype = getattr(torch, dtype)
    modules, mlps = [], {}
    for name, (fin, fout, in_keys, out_keys, head) in parts.items():
        mlp = MLP(in_features=fin, out_features=fout, num_cells=[HIDDEN]).to(torch_dtype)
        mlp.load_state_dict(_to_torch(weights[name]))
        mlps[name] = mlp
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
        from arrayrl.modules import MLP, DictModule, flatten_params, unflatten_params
        from arrayrl.modules.model_based import SymExpTwoHot
        from arrayrl.objectives.dreamer_v3 import DreamerV3ValueLoss

        dtype = next(iter(inputs.weights["value"].values())).dtype
        mlp = MLP(STATE + BELIEF, _value_outputs(self.config), [HIDDEN], dtype=dtype)
        mlp.params = unflatten_params(dict(inputs.weights["value"]))
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
        from torchrl.modules import MLP, SymExpTwoHot
        from torchrl.objectives import DreamerV3ValueLoss

        mlp = MLP(
            in_features=STATE + BELIEF, out_features=_value_outputs(self.config), num_cells=[HIDDEN]
        )
        mlp = mlp.to(getattr(torch, dtype))
        mlp.load_state_dict(_to_torch(inputs.weights["value"]))
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


def _model_case(label: str, **config: Any) -> DreamerV3ModelCase:
    return DreamerV3ModelCase(
        name=f"DreamerV3ModelLoss[2x4,{label}]",
        loss="DreamerV3ModelLoss",
        batch_shape=(2, 4),
        config=config,
        core=label == "default",
    )


def _value_case(label: str, batch_shape: tuple[int, ...], **config: Any) -> DreamerV3ValueCase:
    layout = "x".join(map(str, batch_shape))
    return DreamerV3ValueCase(
        name=f"DreamerV3ValueLoss[{layout},{label}]",
        loss="DreamerV3ValueLoss",
        batch_shape=batch_shape,
        config=config,
        core=label == "default",
    )


def cases() -> list[LossCase]:
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


def _never(case: LossCase, dtype: str) -> bool:
    """Recorded for the record: no case exercises it (arrayrl raises, see the tests)."""
    return False


DEVIATIONS: tuple[LossDeviation, ...] = (
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
        applies=_never,
        reason=(
            "With lambda_continue > 0, TorchRL 0.14.1's DreamerV3ModelLoss silently omits "
            "loss_model_continue when the world model wrote no continue_pred or the batch "
            "has neither terminated nor done; arrayrl raises KeyError naming the key, as a "
            "requested loss term must not vanish. No TorchRL issue found."
        ),
        tolerance=None,
    ),
)
