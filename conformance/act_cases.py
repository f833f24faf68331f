"""Conformance cases of ``ACTLoss`` (action chunking with a CVAE policy).

:class:`ACTCase` runs a small MLP CVAE, :class:`MLPCVAE` (arrayrl's ``MLP`` s) on every
backend, and its twin :func:`torch_cvae` (TorchRL's ``MLP`` s, the same weights) under
TorchRL's ``ACTLoss``: an encoder maps ``[observation, flattened chunk]`` to
``[μ, log σ²]``, ``z = μ + exp(½ log σ²)·ε``, a decoder maps ``[observation, z]`` to the
chunk. The only draw is ``ε`` (``[*B, latent]``): TorchRL's twin takes
``torch.randn_like`` after ``torch.manual_seed(LOSS_SEED)``, arrayrl's module the loss's
generator (seed :data:`LOSS_SEED`), so the runner compares TorchRL with arrayrl on torch
drawing from a ``torch.Generator`` seeded alike (``monte_carlo``), and the backends with
the NumPy-noise reference.

:class:`ACTModelCase` is the drop-in: TorchRL's own ``ACTModel`` (a transformer CVAE,
small configuration, dropout on) in a ``TensorDictModule``, handed to arrayrl's loss. It
draws inside the model from torch's global generator (dropout masks, then ``randn_like``
for the latent), so on torch with ``generator_mode="native"`` arrayrl runs the model
itself after ``torch.manual_seed(LOSS_SEED)``, drawing what TorchRL draws. torch's
draws depend on the dtype, and there is no transformer in arrayrl: elsewhere (the
reference and the other backends) the model is run once on torch in float64 (seeded) and
its outputs, cast to the case's dtype, are written by a replaying module, so that the
loss itself runs on every backend and its gradients (on torch) still reach every
``ACTModel`` parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from arrayrl.modules import Module

from .loss_cases import (
    HIDDEN,
    LOSS_SEED,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    NetSpec,
    _host,
    _mlp_weights,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch

__all__ = ["DEVIATIONS", "MLPCVAE", "ACTCase", "ACTModelCase", "cases", "torch_cvae"]

#: chunk length, action dims, latent dims
CHUNK, ACTION, LATENT = 4, 2, 3
ACT_OUTPUTS = ("loss_act", "loss_reconstruction", "loss_kl")
#: the small ``ACTModel`` of :class:`ACTModelCase`
ACT_MODEL_CONFIG = {
    "obs_dim": OBS,
    "action_dim": ACTION,
    "chunk_size": CHUNK,
    "hidden_dim": 8,
    "nheads": 2,
    "num_encoder_layers": 1,
    "num_decoder_layers": 1,
    "latent_dim": LATENT,
    "dropout": 0.1,
    "dim_feedforward": 16,
}


def cvae_specs() -> dict[str, NetSpec]:
    """The CVAE's two MLPs: encoder ``[o, a_{1:T}] → [μ, log σ²]``, decoder
    ``[o, z] → â_{1:T}``."""
    return {
        "encoder": NetSpec(OBS + CHUNK * ACTION, 2 * LATENT, (HIDDEN,)),
        "decoder": NetSpec(OBS + LATENT, CHUNK * ACTION, (HIDDEN,)),
    }


# -- the MLP CVAE, arrayrl's and TorchRL's ------------------------------------------------
class MLPCVAE(Module):
    """A CVAE policy of two arrayrl MLPs (see the module docstring).

    Reads ``"observation"`` ``[*B, obs]`` and ``"action_chunk"`` ``[*B, T, A]``; writes
    ``out_keys`` (default ``action_pred`` ``[*B, T, A]``, ``mu``, ``log_var``
    ``[*B, latent]``). ``forward(batch, params, rng=None)`` draws ``ε`` from ``rng`` (the
    loss passes its generator); without one, ``z = μ``.
    """

    def __init__(
        self,
        weights: dict[str, dict[str, np.ndarray]] | None = None,
        *,
        out_keys: tuple[Any, ...] = ("action_pred", "mu", "log_var"),
        seed: int = 0,
        dtype: Any = np.float32,
    ) -> None:
        from arrayrl.modules import MLP, unflatten_params

        self.in_keys = ["observation", "action_chunk"]
        self.out_keys = list(out_keys)
        self.mlps, tree = {}, {}
        for k, (role, spec) in enumerate(cvae_specs().items()):
            mlp = MLP(
                spec.in_features,
                spec.out_features,
                list(spec.num_cells),
                seed=seed + k,
                dtype=dtype,
            )
            if weights is not None:
                mlp.params = unflatten_params(dict(weights[role]))
            self.mlps[role] = mlp
            tree[role] = mlp.params
        self._params = tree

    def forward(self, batch: Any, params: Any, rng: Any = None) -> Any:
        from arrayrl.backends import backend_of

        observation, chunk = batch.get("observation"), batch.get("action_chunk")
        xp = backend_of(observation, chunk).xp
        lead = tuple(chunk.shape[:-2])
        flat_chunk = xp.reshape(chunk, (*lead, CHUNK * ACTION))
        h = self.mlps["encoder"].apply(
            params["encoder"], xp.concat([observation, flat_chunk], axis=-1)
        )
        mu, log_var = h[..., :LATENT], h[..., LATENT:]
        z = mu if rng is None else mu + xp.exp(0.5 * log_var) * rng.normal(mu.shape, mu.dtype)
        out = self.mlps["decoder"].apply(params["decoder"], xp.concat([observation, z], axis=-1))
        for key, value in zip(self.out_keys, (xp.reshape(out, chunk.shape), mu, log_var)):
            batch.set(key, value)
        return batch


def torch_cvae() -> Any:
    """A fresh torch twin of :class:`MLPCVAE` (torch imported on first use)."""
    import torch
    from torchrl.modules import MLP

    class _TorchCVAE(torch.nn.Module):
        """The twin of :class:`MLPCVAE` in torch: ``forward(observation, action_chunk)``
        returns ``(action_pred, mu, log_var)``, ``ε = torch.randn_like(σ)``."""

        def __init__(self) -> None:
            super().__init__()
            specs = cvae_specs()
            self.encoder = MLP(
                in_features=specs["encoder"].in_features,
                out_features=specs["encoder"].out_features,
                num_cells=[HIDDEN],
            )
            self.decoder = MLP(
                in_features=specs["decoder"].in_features,
                out_features=specs["decoder"].out_features,
                num_cells=[HIDDEN],
            )

        def forward(self, observation: Any, action_chunk: Any) -> tuple[Any, Any, Any]:
            lead = action_chunk.shape[:-2]
            flat = action_chunk.reshape(*lead, CHUNK * ACTION)
            mu, log_var = self.encoder(torch.cat([observation, flat], -1)).chunk(2, -1)
            std = (0.5 * log_var).exp()
            z = mu + std * torch.randn_like(std)
            out = self.decoder(torch.cat([observation, z], -1))
            return out.reshape(action_chunk.shape), mu, log_var

    return _TorchCVAE()


# -- the cases --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ACTCase(LossCase):
    """One ``ACTLoss`` configuration on the MLP CVAE.

    ``keys``: ``set_keys`` renames, each ``(field, key)``; the batch holds the observation
    and chunk at the renamed keys, and the CVAE writes its outputs at the renamed
    output keys.
    """

    keys: tuple[tuple[str, Any], ...] = ()

    @property
    def monte_carlo(self) -> bool:
        """The CVAE draws its latent."""
        return True

    @property
    def key_map(self) -> dict[str, Any]:
        from arrayrl.objectives.act import ACTLoss

        keys = ACTLoss.default_keys()
        return {**vars(keys), **dict(self.keys)}

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The CVAE's weights and a batch of observations and expert chunks."""
        rng = np.random.default_rng([seed, 15])
        weights = {
            role: _mlp_weights(spec, seed * 100 + k)
            for k, (role, spec) in enumerate(cvae_specs().items())
        }
        return LossInputs(weights, {}, self._batch(rng), self.batch_shape).astype(dtype)

    def _batch(self, rng: np.random.Generator) -> dict[str, Any]:
        shape, keys = self.batch_shape, self.key_map
        batch: dict[str, Any] = {}
        _put(batch, keys["observation"], rng.standard_normal((*shape, OBS)))
        _put(batch, keys["action_chunk"], rng.uniform(-1.0, 1.0, (*shape, CHUNK, ACTION)))
        if "collector" in self.masks:
            mask = rng.random(shape) < 0.7
            mask.flat[0] = True
            batch["collector"] = {"mask": mask}
        return batch

    def configure(self, loss: Any) -> Any:
        if self.keys:
            loss.set_keys(**dict(self.keys))
        return loss

    def _output_keys(self) -> tuple[Any, ...]:
        keys = self.key_map
        return keys["action_pred"], keys["mu"], keys["log_var"]

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's three outputs and, on torch, the gradients of the ``loss_*`` terms."""
        from arrayrl.modules import flatten_params
        from arrayrl.objectives.act import ACTLoss

        dtype = inputs.weights["encoder"]["0.weight"].dtype
        actor = MLPCVAE(inputs.weights, out_keys=self._output_keys(), dtype=dtype)
        loss = self.configure(ACTLoss(actor, seed=LOSS_SEED, **self.config))
        loss.generator_mode = generator_mode
        loss.to(backend, device)
        out = loss(_arrayrl_batch(self, inputs, backend, device))
        terms = {key: out.get(key) for key in ACT_OUTPUTS}
        params = {f"actor.{n}": leaf for n, leaf in flatten_params(actor.params).items()}
        gradients = torch_gradients(terms, params) if backend == "torch" else {}
        return Evaluation({k: _host_of(v) for k, v in terms.items()}, gradients)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``ACTLoss`` on the torch twin, after ``torch.manual_seed(LOSS_SEED)``."""
        import torch
        from tensordict.nn import TensorDictModule

        model = torch_cvae().to(_torch_dtype(dtype))
        model.load_state_dict(
            {
                f"{role}.{name}": torch.from_numpy(np.array(w))
                for role, tree in inputs.weights.items()
                for name, w in tree.items()
            }
        )
        actor = TensorDictModule(model, ["observation", "action_chunk"], list(self._output_keys()))
        params = {f"actor.{n}": p for n, p in model.named_parameters()}
        return _torchrl_evaluation(self, actor, inputs, params)


@dataclass(frozen=True)
class ACTModelCase(ACTCase):
    """``ACTLoss`` on TorchRL's ``ACTModel`` (see the module docstring)."""

    def build(self, seed: int, dtype: str) -> LossInputs:
        """``ACTModel``'s initial weights (``torch.manual_seed(seed)``) and a batch."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _act_model(torch.float64)
        weights = {"actor": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}
        batch = self._batch(np.random.default_rng([seed, 16]))
        return LossInputs(weights, {}, batch, self.batch_shape).astype(dtype)

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """On torch with native draws, the drop-in itself; elsewhere the loss on the
        model's float64 outputs replayed (see the module docstring)."""
        from arrayrl.objectives.act import ACTLoss

        dtype = inputs.batch["observation"].dtype
        if backend == "torch" and generator_mode == "native":
            actor, params = self._torch_actor(inputs, _torch_dtype(dtype.name))
            loss = self.configure(ACTLoss(actor, **self.config))
            batch = _arrayrl_batch(self, inputs, backend, device)
            out = _seeded(lambda: loss(batch))
        else:
            actor, params = self._replay(inputs, backend, device, dtype)
            loss = self.configure(ACTLoss(actor, **self.config))
            out = loss(_arrayrl_batch(self, inputs, backend, device))
        terms = {key: out.get(key) for key in ACT_OUTPUTS}
        gradients = torch_gradients(terms, params) if backend == "torch" else {}
        return Evaluation({k: _host_of(v) for k, v in terms.items()}, gradients)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``ACTLoss`` on ``ACTModel``, after ``torch.manual_seed(LOSS_SEED)``."""
        actor, params = self._torch_actor(inputs, _torch_dtype(dtype))
        return _torchrl_evaluation(self, actor, inputs, params)

    def _torch_actor(self, inputs: LossInputs, dtype: Any) -> tuple[Any, dict[str, Any]]:
        """``TensorDictModule(ACTModel)`` of ``dtype`` holding the case's weights."""
        from tensordict.nn import TensorDictModule

        model = _loaded_act_model(inputs, dtype)
        actor = TensorDictModule(model, ["observation", "action_chunk"], list(self._output_keys()))
        return actor, {f"actor.{n}": p for n, p in model.named_parameters()}

    def _replay(
        self, inputs: LossInputs, backend: str, device: Any, dtype: np.dtype
    ) -> tuple[Any, dict[str, Any]]:
        """A module writing ``ACTModel``'s float64 outputs (seeded run), cast to
        ``dtype`` on ``backend`` (on torch, still attached to the model's parameters)."""
        import torch
        from arrayrl.backends import get_backend

        model = _loaded_act_model(inputs, torch.float64)
        keys = self.key_map
        observation = _get(inputs.batch, keys["observation"]).astype(np.float64)
        chunk = _get(inputs.batch, keys["action_chunk"]).astype(np.float64)
        outputs = _seeded(lambda: model(torch.from_numpy(observation), torch.from_numpy(chunk)))
        params = {f"actor.{n}": p for n, p in model.named_parameters()}
        if backend == "torch":
            target = getattr(torch, dtype.name)
            values = [o.to(device=device or "cpu", dtype=target) for o in outputs]
        else:
            chosen = get_backend(backend, device)
            values = [chosen.from_numpy(o.detach().numpy().astype(dtype)) for o in outputs]
        return _Replay(dict(zip(self._output_keys(), values))), params


def _act_model(dtype: Any) -> Any:
    from torchrl.modules.models import ACTModel

    return ACTModel(**ACT_MODEL_CONFIG).to(dtype)


def _loaded_act_model(inputs: LossInputs, dtype: Any) -> Any:
    import torch

    model = _act_model(dtype)
    model.load_state_dict(
        {k: torch.from_numpy(np.array(v)) for k, v in inputs.weights["actor"].items()}
    )
    return model


class _Replay(Module):
    """An actor writing fixed outputs (no parameters of its own)."""

    def __init__(self, outputs: dict[Any, Any]) -> None:
        self.in_keys = ["observation", "action_chunk"]
        self.outputs = outputs
        self.out_keys = list(outputs)
        self._params = {}

    def forward(self, batch: Any, params: Any) -> Any:
        for key, value in self.outputs.items():
            batch.set(key, value)
        return batch

    def to(self, backend: Any, device: Any = None) -> _Replay:
        return self


# -- helpers ----------------------------------------------------------------------------------
def _seeded(call: Any) -> Any:
    """``call()`` after ``torch.manual_seed(LOSS_SEED)``, the global generator restored."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(LOSS_SEED)
        return call()


def _torchrl_evaluation(
    case: ACTCase, actor: Any, inputs: LossInputs, params: dict[str, Any]
) -> Evaluation:
    """TorchRL's ``ACTLoss`` on ``actor`` and the case's batch (a ``TensorDict``)."""
    from tensordict import TensorDict
    from torchrl.objectives import ACTLoss

    loss = case.configure(ACTLoss(actor, **case.config))
    batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
    out = _seeded(lambda: loss(batch))
    terms = {key: out.get(key) for key in ACT_OUTPUTS}
    return Evaluation(
        {k: v.detach().numpy() for k, v in terms.items()}, torch_gradients(terms, params)
    )


def _arrayrl_batch(case: ACTCase, inputs: LossInputs, backend: str, device: Any) -> Any:
    from arrayrl.data import ArrayDict

    batch = ArrayDict(inputs.batch, inputs.batch_size).to(backend, device)
    if case.tensordict and backend == "torch":
        from tensordict import TensorDict

        return TensorDict(batch.to_dict(), batch_size=inputs.batch_size)
    return batch


def _host_of(x: Any) -> np.ndarray:
    from arrayrl.backends import backend_of

    return _host(x, backend_of(x))


def _torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _put(tree: dict[str, Any], key: Any, value: Any) -> None:
    path = (key,) if isinstance(key, str) else tuple(key)
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _get(tree: dict[str, Any], key: Any) -> Any:
    for part in (key,) if isinstance(key, str) else tuple(key):
        tree = tree[part]
    return tree


def _case(variant: str, cls: type = ACTCase, **fields: Any) -> ACTCase:
    """A case named ``ACTLoss[model,layout,variant]``."""
    case = cls(name="", loss="ACTLoss", actor="", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    model = "act_model" if cls is ACTModelCase else "mlp_cvae"
    label = ",".join(p for p in (model, layout, variant) if p)
    return replace(case, name=f"ACTLoss[{label}]")


_BT = (4, 8)


def cases() -> list[ACTCase]:
    """Reductions, ``kl_weight``, ``[B, T]`` batches, renamed keys, TensorDict batches, a
    collector mask, and TorchRL's ``ACTModel`` through the drop-in."""
    renamed = (
        ("observation", "obs"),
        ("action_chunk", ("expert", "chunk")),
        ("action_pred", "chunk_pred"),
        ("mu", ("latent", "mu")),
        ("log_var", ("latent", "log_var")),
    )
    return [
        _case("", core=True),
        _case("sum,kl_weight=0.5", batch_shape=_BT, config={"reduction": "sum", "kl_weight": 0.5}),
        _case("none", batch_shape=_BT, config={"reduction": "none"}, core=True),
        _case("kl_weight=0,none", config={"kl_weight": 0.0, "reduction": "none"}),
        _case("set_keys,tensordict", tensordict=True, keys=renamed, config={"kl_weight": 2.0}),
        _case("collector_mask", batch_shape=_BT, masks=("collector",)),
        _case("", cls=ACTModelCase, batch_shape=(6,)),
        _case(
            "none,tensordict",
            cls=ACTModelCase,
            batch_shape=(2, 3),
            tensordict=True,
            config={"reduction": "none"},
        ),
    ]


# -- deviations -------------------------------------------------------------------------------
DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-act-ignores-loss-mask",
        applies=lambda case, dtype: isinstance(case, ACTCase) and bool(case.masks),
        reason=(
            "TorchRL 0.14.1's ACTLoss reduces its two terms with plain means/sums and never "
            "reads the loss masks that LossModule.loss_mask_key names (('collector', "
            "'mask'), 'shifted_valid'), so padded samples enter loss_act, its logged terms "
            "and the gradients. arrayrl's ACTLoss honours loss_mask_key as its other losses "
            "do (loss_mask_key=None restores TorchRL's numbers). The loss_* outputs and "
            "gradients are not compared on masked batches. TorchRL's RFC on mask-aware "
            "reductions: pytorch/rl#3866 (PR #3888, which moved the other losses to the "
            "masked reduction, left act.py out)."
        ),
        tolerance=None,
        covers=("loss_",),
        torchrl_issue="3866",
    ),
)
