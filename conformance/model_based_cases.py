"""Conformance cases of the model-based functions and losses (issue 14, first slice).

Three kinds of case:

- :class:`FunctionCase`: one of DreamerV3's pure functions (``symlog``, ``symexp``,
  ``two_hot_encode``, ``two_hot_decode``, ``two_hot_cross_entropy``, ``_default_bins``,
  ``categorical_kl_terms``, ``categorical_kl_balanced``) on arrays drawn in float64 NumPy
  (zeros, bin values and values beyond the support included). Outputs are ``"value"``
  (``"dynamics"`` and ``"representation"`` for ``categorical_kl_terms``); on torch the
  gradients ``"<output>/<input>"`` of ``sum(output · c)`` with a fixed cotangent ``c``
  (``cos`` of the element index: a plain sum would hide the two-hot code's gradient,
  whose rows sum to 1).
- :class:`PilcoCase`: ``ExponentialQuadraticCost`` on Gaussian states (means ``[*B, D]``,
  covariances ``[*B, D, D]``), optionally with a target and weights (one negative
  eigenvalue, which both clamp); gradients ``"loss_cost/loc"``, ``"loss_cost/scale"``.
- :class:`WorldModelCase`: ``WorldModelLoss`` with a small deterministic world model of
  MLPs (an encoder, reused on the next observation for the latent target, a dynamics
  model, reward and done heads and a decoder); arrayrl's side builds it from arrayrl's
  ``MLP`` (or, with ``dropin``, takes TorchRL's own ``TensorDictSequential`` on torch),
  TorchRL's from TorchRL's ``MLP`` and ``TensorDictModule``, with the same weights.
  Gradients ``"loss_*/<role>.<param>"``.

Nothing draws: no case is Monte-Carlo.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .loss_cases import HIDDEN, Evaluation, LossCase, LossInputs, NetSpec, _mlp_weights
from .loss_oracle import LossDeviation, torchrl_mlp

__all__ = ["DEVIATIONS", "FunctionCase", "PilcoCase", "WorldModelCase", "cases"]

#: the state size of the PILCO cases; latent and action sizes of the world model
STATE_DIM, LATENT, WM_OBS, WM_ACT = 3, 4, 5, 2


def _cotangent(shape: tuple[int, ...]) -> np.ndarray:
    """The fixed weights of an output's elements in its gradient: ``cos(index)``."""
    return np.cos(np.arange(int(np.prod(shape, dtype=np.int64)))).reshape(shape)


def _torch_dtype(dtype: Any) -> Any:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]


def _grad_dict(outputs: dict[str, Any], inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """``{"<output>/<input>": d sum(output · cos) / d input}`` on torch (zeros where an
    input does not reach an output)."""
    import torch

    names, leaves = list(inputs), list(inputs.values())
    grads = {}
    for out_name, value in outputs.items():
        if not value.requires_grad:
            found = [None] * len(leaves)
        else:
            weight = torch.as_tensor(_cotangent(tuple(value.shape)), dtype=value.dtype)
            found = torch.autograd.grad(
                (value * weight).sum(), leaves, retain_graph=True, allow_unused=True
            )
        for name, leaf, grad in zip(names, leaves, found):
            grad = torch.zeros_like(leaf) if grad is None else grad
            grads[f"{out_name}/{name}"] = grad.detach().cpu().numpy()
    return grads


def _host(x: Any) -> np.ndarray:
    from arrayrl.backends import backend_of

    backend = backend_of(x)
    return np.asarray(backend.to_numpy(backend.stop_gradient(x)))


# -- the pure functions ---------------------------------------------------------------------------
#: function -> (its inputs, the inputs it is differentiated in, its output names)
_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "symlog": (("value",), ("value",), ("value",)),
    "symexp": (("value",), ("value",), ("value",)),
    "two_hot_encode": (("x", "bins"), ("x",), ("value",)),
    "two_hot_decode": (("logits", "bins"), ("logits",), ("value",)),
    "two_hot_cross_entropy": (("logits", "target", "bins"), ("logits", "target"), ("value",)),
    "_default_bins": ((), (), ("value",)),
    "categorical_kl_terms": (
        ("posterior_logits", "prior_logits"),
        ("posterior_logits", "prior_logits"),
        ("dynamics", "representation"),
    ),
    "categorical_kl_balanced": (
        ("posterior_logits", "prior_logits"),
        ("posterior_logits", "prior_logits"),
        ("value",),
    ),
}


def _arrayrl_function(name: str) -> Any:
    from arrayrl.modules import functional, model_based
    from arrayrl.objectives import dreamer_v3

    for module in (functional, model_based, dreamer_v3):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def _torchrl_function(name: str) -> Any:
    from torchrl.modules import functional
    from torchrl.modules.models import model_based
    from torchrl.objectives import dreamer_v3

    for module in (functional, model_based, dreamer_v3):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


@dataclass(frozen=True)
class FunctionCase(LossCase):
    """One pure function on one input layout; ``loss`` is the function's name,
    ``config`` its keyword arguments, ``num_bins`` the support size of the two-hot
    functions (DreamerV3's symexp bins, built in float64)."""

    shape: tuple[int, ...] = (6, 7)
    num_bins: int = 255
    target_axis: bool = False

    @property
    def monte_carlo(self) -> bool:
        return False

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 14, len(self.name)])
        batch = _function_inputs(self, rng)
        return LossInputs({}, {}, batch, ()).astype(dtype)

    def _call(self, function: Any, arrays: dict[str, Any], default_bins: Any) -> dict[str, Any]:
        names, _, outputs = _SIGNATURES[self.loss]
        if self.loss == "_default_bins":
            result = default_bins(self.num_bins)
        else:
            result = function(*(arrays[n] for n in names), **self.config)
        result = result if isinstance(result, tuple) else (result,)
        return dict(zip(outputs, result, strict=True))

    def evaluate_arrayrl(
        self, inputs: LossInputs, backend: str, device: Any = None, *, generator_mode: str = "numpy"
    ) -> Evaluation:
        """arrayrl's function on ``backend``; on torch the gradients."""
        from arrayrl.backends import get_backend

        chosen = get_backend(backend, device)
        _, differentiable, _ = _SIGNATURES[self.loss]
        arrays = {k: chosen.from_numpy(v) for k, v in inputs.batch.items()}
        if backend == "torch":
            arrays = {k: v.requires_grad_(k in differentiable) for k, v in arrays.items()}
        dtype = _case_dtype(inputs, chosen)
        function = _arrayrl_function(self.loss)

        def default_bins(n: int) -> Any:
            return function(n, backend=chosen, dtype=dtype)

        outputs = self._call(function, arrays, default_bins)
        grads = {}
        if backend == "torch":
            grads = _grad_dict(outputs, {k: arrays[k] for k in differentiable})
        return Evaluation({k: _host(v) for k, v in outputs.items()}, grads)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's function on the same arrays (CPU), with its gradients."""
        import torch

        _, differentiable, _ = _SIGNATURES[self.loss]
        arrays = {
            k: torch.from_numpy(np.array(v)).requires_grad_(k in differentiable)
            for k, v in inputs.batch.items()
        }
        function = _torchrl_function(self.loss)

        def default_bins(n: int) -> Any:
            return function(n, dtype=_torch_dtype(dtype))

        outputs = self._call(function, arrays, default_bins)
        grads = _grad_dict(outputs, {k: arrays[k] for k in differentiable})
        return Evaluation({k: v.detach().numpy() for k, v in outputs.items()}, grads)


def _case_dtype(inputs: LossInputs, backend: Any) -> Any:
    """The backend's float dtype of the case (the ``probe`` entry's)."""
    probe = inputs.batch.get("probe")
    name = "float64" if probe is None else probe.dtype.name
    return getattr(backend.xp, name)


def _bins(num_bins: int) -> np.ndarray:
    from arrayrl.modules.model_based import _default_bins

    return np.asarray(_default_bins(num_bins, dtype=np.float64))


def _function_inputs(case: FunctionCase, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The float64 inputs of ``case`` (see the module docstring)."""
    shape = case.shape
    name = case.loss
    if name == "symlog":
        value = 5.0 * rng.standard_normal(shape)
        value.flat[:4] = (0.0, -1e3, 1e3, -1e-4)
        return {"value": value}
    if name == "symexp":
        value = 3.0 * rng.standard_normal(shape)
        value.flat[:3] = (0.0, -8.0, 1e-4)
        return {"value": value}
    if name == "_default_bins":
        return {"probe": np.zeros(1)}
    bins = _bins(case.num_bins)
    if name == "two_hot_encode":
        x = np.sign(rng.standard_normal(shape)) * np.expm1(rng.uniform(0, 21.0, shape))
        x.flat[:5] = (bins[0], bins[-1], bins[len(bins) // 2], bins[1], 2 * bins[-1])
        return {"x": x, "bins": bins}
    logits = 2.0 * rng.standard_normal((*shape, case.num_bins))
    if name == "two_hot_decode":
        return {"logits": logits, "bins": bins}
    if name == "two_hot_cross_entropy":
        target = np.sign(rng.standard_normal(shape)) * np.expm1(rng.uniform(0, 6.0, shape))
        target = target[..., None] if case.target_axis else target
        return {"logits": logits, "target": target, "bins": bins}
    posterior = 2.0 * rng.standard_normal(shape)
    prior = posterior + rng.standard_normal(shape)
    return {"posterior_logits": posterior, "prior_logits": prior}


def _function_case(function: str, variant: str = "", **fields: Any) -> FunctionCase:
    """A case named ``function[variant]``; the first variant of each function is a core
    case (JAX runs those)."""
    label = f"[{variant}]" if variant else ""
    return FunctionCase(name=f"{function}{label}", loss=function, advantage="", **fields)


def _first_of_each_core(cases: list[FunctionCase]) -> list[FunctionCase]:
    seen: set[str] = set()
    marked = []
    for case in cases:
        marked.append(replace(case, core=case.loss not in seen))
        seen.add(case.loss)
    return marked


def _function_cases() -> list[FunctionCase]:
    """Each function on its inputs: several support sizes, the keyword arguments'
    corners (no free nats, no unimix, a high floor, α = 0 and 1)."""
    kl_shape = (5, 4, 6)
    return _first_of_each_core(
        [
            _function_case("symlog"),
            _function_case("symexp"),
            _function_case("_default_bins", "255", num_bins=255),
            _function_case("_default_bins", "6", num_bins=6),
            _function_case("two_hot_encode", "255", num_bins=255),
            _function_case("two_hot_encode", "5", num_bins=5, shape=(3, 4, 5)),
            _function_case("two_hot_encode", "6", num_bins=6, shape=(40,)),
            _function_case("two_hot_decode", "255", num_bins=255, shape=(4, 3)),
            _function_case("two_hot_decode", "6", num_bins=6, shape=(4, 3)),
            _function_case("two_hot_cross_entropy", "255", num_bins=255, shape=(8,)),
            _function_case(
                "two_hot_cross_entropy",
                "41,target_axis",
                num_bins=41,
                shape=(2, 4),
                target_axis=True,
            ),
            _function_case("categorical_kl_terms", "default", shape=kl_shape),
            _function_case(
                "categorical_kl_terms",
                "no_floor,no_unimix",
                shape=kl_shape,
                config={"free_nats": 0.0, "unimix": 0.0},
            ),
            _function_case(
                "categorical_kl_terms",
                "free_nats=3,unimix=0.1",
                shape=kl_shape,
                config={"free_nats": 3.0, "unimix": 0.1},
            ),
            _function_case("categorical_kl_balanced", "default", shape=kl_shape),
            _function_case(
                "categorical_kl_balanced",
                "alpha=0.3,free_bits=0.5",
                shape=kl_shape,
                config={"alpha": 0.3, "free_bits": 0.5},
            ),
            _function_case(
                "categorical_kl_balanced",
                "alpha=1,free_bits=0",
                shape=kl_shape,
                config={"alpha": 1.0, "free_bits": 0.0},
            ),
        ]
    )


# -- PILCO's cost ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PilcoCase(LossCase):
    """``ExponentialQuadraticCost`` with ``config`` (``reduction``), an explicit
    ``target`` and ``weights`` when ``weighted``, renamed keys when ``renamed``."""

    weighted: bool = False
    renamed: bool = False

    @property
    def monte_carlo(self) -> bool:
        return False

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 24])
        mean = rng.standard_normal((*self.batch_shape, STATE_DIM))
        root = 0.6 * rng.standard_normal((*self.batch_shape, STATE_DIM, STATE_DIM))
        covariance = root @ np.swapaxes(root, -1, -2)
        batch = {"mean": mean, "var": covariance}
        if self.weighted:
            basis = np.linalg.qr(rng.standard_normal((STATE_DIM, STATE_DIM)))[0]
            eigen = np.array([2.0, 0.5, -0.3])[:STATE_DIM]  # one negative: clamped at 0
            batch["weights"] = (basis * eigen) @ basis.T
            batch["target"] = rng.standard_normal(STATE_DIM)
        return LossInputs({}, {}, batch, self.batch_shape).astype(dtype)

    def _keys(self) -> dict[str, Any]:
        if self.renamed:
            return {"loc": "state_mean", "scale": "state_cov", "loss_cost": "cost"}
        return {}

    def _batch(self, inputs: LossInputs, convert: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        keys = self._keys()
        loc = keys.get("loc", ("observation", "mean"))
        scale = keys.get("scale", ("observation", "var"))
        arrays = {"loc": convert(inputs.batch["mean"]), "scale": convert(inputs.batch["var"])}
        batch: dict[str, Any] = {}
        for name, key in (("loc", loc), ("scale", scale)):
            key = key if isinstance(key, tuple) else (key,)
            node = batch
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = arrays[name]
        return batch, arrays

    def _run(
        self, cls: Any, inputs: LossInputs, convert: Any, wrap: Any
    ) -> tuple[Any, dict[str, Any]]:
        """The loss ``cls`` (arrayrl's or TorchRL's) on the case's arrays made by
        ``convert`` in a batch made by ``wrap``: its ``loss_cost`` and the state arrays."""
        batch, arrays = self._batch(inputs, convert)
        kwargs = {k: convert(inputs.batch[k]) for k in ("target", "weights") if k in inputs.batch}
        loss = cls(reduction=self.config.get("reduction", "mean"), **kwargs)
        if self._keys():
            loss.set_keys(**self._keys())
        out = loss(wrap(batch))
        key = self._keys().get("loss_cost", "loss_cost")
        value = out.get(key)
        return value, arrays

    def evaluate_arrayrl(
        self, inputs: LossInputs, backend: str, device: Any = None, *, generator_mode: str = "numpy"
    ) -> Evaluation:
        from arrayrl.backends import get_backend

        from arrayrl.data import ArrayDict
        from arrayrl.objectives.pilco import ExponentialQuadraticCost

        chosen = get_backend(backend, device)

        def convert(x: np.ndarray) -> Any:
            array = chosen.from_numpy(x)
            return array.requires_grad_(True) if backend == "torch" else array

        def wrap(batch: dict[str, Any]) -> Any:
            if self.tensordict and backend == "torch":
                from tensordict import TensorDict

                return TensorDict(batch, batch_size=inputs.batch_size)
            return ArrayDict(batch, inputs.batch_size)

        value, arrays = self._run(ExponentialQuadraticCost, inputs, convert, wrap)
        grads = _grad_dict({"loss_cost": value}, arrays) if backend == "torch" else {}
        return Evaluation({"loss_cost": _host(value)}, grads)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        import torch
        from tensordict import TensorDict
        from torchrl.objectives.pilco import ExponentialQuadraticCost

        def convert(x: np.ndarray) -> Any:
            return torch.from_numpy(np.array(x)).requires_grad_(True)

        def wrap(batch: dict[str, Any]) -> Any:
            return TensorDict(batch, batch_size=inputs.batch_size)

        value, arrays = self._run(ExponentialQuadraticCost, inputs, convert, wrap)
        grads = _grad_dict({"loss_cost": value}, arrays)
        return Evaluation({"loss_cost": value.detach().numpy()}, grads)


def _pilco_case(variant: str, **fields: Any) -> PilcoCase:
    case = PilcoCase(name="", loss="ExponentialQuadraticCost", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape)) or "scalar"
    label = ",".join(p for p in (layout, case.config.get("reduction", "mean"), variant) if p)
    return replace(case, name=f"ExponentialQuadraticCost[{label}]")


def _pilco_cases() -> list[PilcoCase]:
    return [
        _pilco_case("", core=True),
        _pilco_case("weighted", batch_shape=(4, 8), weighted=True, core=True),
        _pilco_case("weighted", weighted=True, config={"reduction": "sum"}),
        _pilco_case("", batch_shape=(4, 8), config={"reduction": "none"}),
        _pilco_case("weighted", batch_shape=(), weighted=True, config={"reduction": "none"}),
        _pilco_case("renamed,tensordict", renamed=True, tensordict=True),
    ]


# -- WorldModelLoss -------------------------------------------------------------------------------
#: role -> (network, its input keys, its output key); the encoder also maps the next
#: observation to the latent target (same weights)
_WORLD_MODEL: tuple[tuple[str, tuple[Any, ...], Any], ...] = (
    ("encoder", ("observation",), "latent"),
    ("dynamics", ("latent", "action"), "predicted_latent"),
    ("reward", ("predicted_latent",), ("next", "reward")),
    ("done", ("predicted_latent",), ("next", "done")),
    ("decoder", ("latent",), "reconstructed_observation"),
    ("encoder", (("next", "observation"),), "target_latent"),
)


def _world_model_specs() -> dict[str, NetSpec]:
    return {
        "encoder": NetSpec(WM_OBS, LATENT, (HIDDEN,)),
        "dynamics": NetSpec(LATENT + WM_ACT, LATENT, (HIDDEN,)),
        "reward": NetSpec(LATENT, 1, (HIDDEN,)),
        "done": NetSpec(LATENT, 1, (HIDDEN,)),
        "decoder": NetSpec(LATENT, WM_OBS, (HIDDEN,)),
    }


@dataclass(frozen=True)
class WorldModelCase(LossCase):
    """``WorldModelLoss`` with ``config`` (its keyword arguments); ``dropin``: on torch,
    arrayrl's loss takes TorchRL's world model itself."""

    dropin: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def monte_carlo(self) -> bool:
        return False

    def build(self, seed: int, dtype: str) -> LossInputs:
        rng = np.random.default_rng([seed, 34])
        weights = {
            role: _mlp_weights(spec, seed * 100 + 40 + k)
            for k, (role, spec) in enumerate(_world_model_specs().items())
        }
        shape = self.batch_shape
        batch = {
            "observation": rng.standard_normal((*shape, WM_OBS)),
            "action": rng.standard_normal((*shape, WM_ACT)),
            "next": {
                "observation": rng.standard_normal((*shape, WM_OBS)),
                "reward": rng.standard_normal((*shape, 1)),
                "done": rng.random((*shape, 1)) < 0.3,
                "terminated": rng.random((*shape, 1)) < 0.2,
            },
        }
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def evaluate_arrayrl(
        self, inputs: LossInputs, backend: str, device: Any = None, *, generator_mode: str = "numpy"
    ) -> Evaluation:
        from arrayrl.data import ArrayDict
        from arrayrl.modules import flatten_params
        from arrayrl.objectives.world_model_loss import WorldModelLoss

        if self.dropin and backend == "torch":
            model, leaves = _torchrl_world_model(inputs, inputs.batch["observation"].dtype.name)
            loss = WorldModelLoss(model, **self.config)
        else:
            loss = WorldModelLoss(_ArrayWorldModel(inputs.weights), **self.config)
            loss.to(backend, device)
            leaves = flatten_params(loss.world_model_params)
        batch = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
        if self.tensordict and backend == "torch":
            from tensordict import TensorDict

            batch = TensorDict(batch.to_dict(), batch_size=inputs.batch_size)
        out = loss(batch)
        terms = {k: out.get(k) for k in out.keys()}
        grads = _grad_dict(terms, leaves) if backend == "torch" else {}
        return Evaluation({k: _host(v) for k, v in terms.items()}, grads)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        from tensordict import TensorDict
        from torchrl.objectives import WorldModelLoss

        model, leaves = _torchrl_world_model(inputs, dtype)
        loss = WorldModelLoss(model, **self.config)
        batch = TensorDict(_torch_tree(inputs.batch), batch_size=inputs.batch_size)
        out = loss(batch)
        terms = {k: out.get(k) for k in out.keys()}
        grads = _grad_dict(terms, leaves)
        return Evaluation({k: v.detach().numpy() for k, v in terms.items()}, grads)


def _torch_tree(tree: Any) -> Any:
    import torch

    if isinstance(tree, dict):
        return {k: _torch_tree(v) for k, v in tree.items()}
    return torch.from_numpy(np.array(tree))


def _ArrayWorldModel(weights: dict[str, dict[str, np.ndarray]]) -> Any:
    """arrayrl's world model of the case: arrayrl ``MLP`` s run in :data:`_WORLD_MODEL`'s
    order, their trees ``{role: tree}``."""
    from arrayrl.modules import MLP, Module, unflatten_params

    class ArrayWorldModel(Module):
        def __init__(self) -> None:
            self.mlps = {}
            for role, spec in _world_model_specs().items():
                mlp = MLP(spec.in_features, spec.out_features, list(spec.num_cells))
                mlp.params = unflatten_params(dict(weights[role]))
                self.mlps[role] = mlp
            self.in_keys = ["observation", "action", ("next", "observation")]
            self.out_keys = [out for _, _, out in _WORLD_MODEL]
            self._params = {role: mlp.params for role, mlp in self.mlps.items()}

        def forward(self, batch: Any, params: Any) -> Any:
            for role, in_keys, out_key in _WORLD_MODEL:
                inputs = [batch.get(key) for key in in_keys]
                batch.set(out_key, self.mlps[role].apply(params[role], *inputs))
            return batch

    return ArrayWorldModel()


def _torchrl_world_model(inputs: LossInputs, dtype: str) -> tuple[Any, dict[str, Any]]:
    """TorchRL's world model of the case (a ``TensorDictSequential`` of
    ``TensorDictModule`` s over TorchRL ``MLP`` s holding the case's weights) and its
    parameters by canonical name (``"<role>.<param>"``)."""
    from tensordict.nn import TensorDictModule, TensorDictSequential

    mlps = {}
    for role, spec in _world_model_specs().items():
        mlps[role] = torchrl_mlp(spec, inputs.weights[role], dtype)
    steps = [
        TensorDictModule(mlps[role], in_keys=list(in_keys), out_keys=[out_key])
        for role, in_keys, out_key in _WORLD_MODEL
    ]
    leaves = {
        f"{role}.{name}": p for role, mlp in mlps.items() for name, p in mlp.named_parameters()
    }
    return TensorDictSequential(*steps), leaves


def _wm_case(variant: str, **fields: Any) -> WorldModelCase:
    case = WorldModelCase(name="", loss="WorldModelLoss", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    losses = "+".join(case.config.get("losses", ["reward"]))
    label = ",".join(p for p in (layout, losses, variant) if p)
    return replace(case, name=f"WorldModelLoss[{label}]")


_ALL_LOSSES = ["reward", "done", "reconstruction", "latent"]


def _world_model_cases() -> list[WorldModelCase]:
    return [
        _wm_case("", core=True),
        _wm_case("", batch_shape=(4, 8), config={"losses": list(_ALL_LOSSES)}, core=True),
        _wm_case(
            "l1,smooth_l1,weights",
            config={
                "losses": list(_ALL_LOSSES),
                "reward_loss": "l1",
                "done_loss": "smooth_l1",
                "reconstruction_loss": "smooth_l1",
                "latent_loss": "l1",
                "reward_weight": 0.5,
                "done_weight": 2.0,
                "reconstruction_weight": 0.0,
                "latent_weight": 1.5,
            },
        ),
        _wm_case(
            "dropin,tensordict",
            config={"losses": ["done", "latent", "reward"]},
            dropin=True,
            tensordict=True,
        ),
    ]


def cases() -> list[LossCase]:
    """Every case of this family."""
    return [*_function_cases(), *_pilco_cases(), *_world_model_cases()]


def _done_in_float64(case: Any, dtype: str) -> bool:
    return (
        getattr(case, "loss", None) == "WorldModelLoss"
        and dtype == "float64"
        and "done" in case.config.get("losses", ["reward"])
    )


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-world-model-loss-done-float32",
        applies=_done_in_float64,
        reason=(
            "TorchRL 0.14.1's WorldModelLoss casts the predicted and observed done flags to "
            "float32 (.float()) before the distance, so a float64 world model gets a "
            "float32 loss_done, rounded at float32 (gradients too). arrayrl computes "
            "loss_done in the prediction's floating dtype (the observed flags cast to it); "
            "compared at float32 rounding. No TorchRL issue found (the loss came with "
            "pytorch/rl#3783)."
        ),
        tolerance=1e-6,
        covers=("loss_done",),
    ),
)
