"""Conformance cases of the Decision Transformer losses ``DTLoss`` and ``OnlineDTLoss``.

A case (:class:`DTCase`) has one network, the actor: an MLP reading the observation at
every step of the context (so that every backend runs it; TorchRL's transformer actors
are checked against TorchRL in ``tests/test_decision_transformer.py``). ``DTLoss`` gets a
deterministic actor (the MLP ending in tanh, writing ``"action"``); ``OnlineDTLoss`` a
``ProbabilisticActor`` over ``loc`` and ``scale`` with a ``TanhNormal`` or an
``IndependentNormal``. The batch holds a context of ``T`` steps per sample
(``observation [*B, T, obs]``, ``return_to_go [*B, T, 1]``, the dataset's
``action [*B, T, act]`` in ``(-0.9, 0.9)``), optionally a collector mask ``[*B, T, 1]``.

``OnlineDTLoss`` draws its Monte-Carlo entropy: the runner compares TorchRL (after
``torch.manual_seed``) with arrayrl on torch drawing from a ``torch.Generator`` seeded
alike, in TorchRL's order and shape (one ``rsample((K,))``).
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
from .loss_oracle import LossDeviation, _to_torch, torchrl_mlp

__all__ = ["DEVIATIONS", "DTCase", "cases"]

#: the steps of context each sample holds
CONTEXT = 5


@dataclass(frozen=True)
class DTCase(LossCase):
    """One ``DTLoss`` / ``OnlineDTLoss`` configuration.

    ``actor``: ``"deterministic"`` (DTLoss), ``"tanh_normal"`` or ``"normal"``
    (OnlineDTLoss). ``context``: the steps per sample (``None``: the batch dims are the
    steps). ``action_spec``: ``target_entropy="auto"`` from a ``Bounded(-1, 1)`` action
    spec (the TorchRL actor's ``spec``, arrayrl's ``action_spec=``).
    """

    context: int | None = CONTEXT
    action_spec: bool = False

    @property
    def continuous(self) -> bool:
        return True

    @property
    def monte_carlo(self) -> bool:
        """OnlineDTLoss draws its entropy estimate."""
        return self.loss == "OnlineDTLoss"

    @property
    def steps(self) -> tuple[int, ...]:
        """The shape of the steps: the batch dims and the context."""
        return (*self.batch_shape, *(() if self.context is None else (self.context,)))

    def network_specs(self) -> dict[str, NetSpec]:
        """The actor's MLP: ``act`` outputs ending in tanh, or ``loc`` and ``scale``."""
        deterministic = self.actor == "deterministic"
        return {
            "actor": NetSpec(
                OBS,
                ACT if deterministic else 2 * ACT,
                (HIDDEN,),
                activate_last_layer=deterministic,
            )
        }

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The actor's weights and a batch of contexts and dataset actions."""
        rng = np.random.default_rng([seed, 15])
        weights = {"actor": _mlp_weights(self.network_specs()["actor"], seed * 100)}
        steps = self.steps
        batch: dict[str, Any] = {
            "observation": rng.standard_normal((*steps, OBS)),
            "return_to_go": rng.standard_normal((*steps, 1)),
            "action": rng.uniform(-0.9, 0.9, (*steps, ACT)),
        }
        if "collector" in self.masks:
            mask = rng.random((*steps, 1)) < 0.8
            mask.flat[0] = True
            batch["collector"] = {"mask": mask}
        return LossInputs(weights, {}, batch, self.batch_shape).astype(dtype)

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's outputs and, on torch, the gradients of every ``loss*`` term with
        respect to the actor's weights and ``log_alpha``."""
        from arrayrl.backends import backend_of

        import arrayrl.objectives.decision_transformer as dt
        from arrayrl.specs import Bounded

        mlp = arrayrl_mlp(self.network_specs()["actor"], inputs.weights["actor"])
        actor = _arrayrl_actor(self.actor, mlp)
        kwargs = dict(self.config)
        if self.loss == "OnlineDTLoss":
            kwargs["seed"] = LOSS_SEED
            if self.action_spec:
                kwargs["action_spec"] = Bounded(-1.0, 1.0, shape=(ACT,))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = getattr(dt, self.loss)(actor, **kwargs)
        loss.generator_mode = generator_mode
        loss.to(backend, device)
        out = loss(arrayrl_batch(self, inputs, backend, device))
        terms = {key: out.get(key) for key in out.keys()}
        outputs = {key: _host(value, backend_of(value)) for key, value in terms.items()}
        if backend != "torch":
            return Evaluation(outputs)
        params = {f"actor.{name}": leaf for name, leaf in _flat(mlp.params)}
        if self.loss == "OnlineDTLoss" and not self.config.get("fixed_alpha", False):
            params["log_alpha"] = loss.log_alpha
        return Evaluation(outputs, _gradients(terms, params))

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's outputs and gradients, after ``torch.manual_seed(LOSS_SEED)``."""
        import torch
        import torchrl.objectives as objectives
        from tensordict import TensorDict

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        mlp = torchrl_mlp(self.network_specs()["actor"], inputs.weights["actor"], dtype)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            actor = _torchrl_actor(self.actor, mlp, self.action_spec, torch_dtype)
            loss = getattr(objectives, self.loss)(actor, **self.config)
            torch.manual_seed(LOSS_SEED)
            out = loss(batch)
        terms = dict(out.items())
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        params = {f"actor.{name}": p for name, p in mlp.named_parameters()}
        if self.loss == "OnlineDTLoss" and not self.config.get("fixed_alpha", False):
            params["log_alpha"] = loss.log_alpha
        return Evaluation(outputs, _gradients(terms, params))


def _flat(tree: Any) -> list[tuple[str, Any]]:
    from arrayrl.modules import flatten_params

    return list(flatten_params(tree).items())


def _gradients(terms: dict[str, Any], params: dict[str, Any]) -> dict[str, np.ndarray]:
    """The gradients of every loss term: ``loss_*`` and DTLoss's ``loss``."""
    renamed = {("loss_dt" if key == "loss" else key): value for key, value in terms.items()}
    return torch_gradients(renamed, params)


def _arrayrl_actor(kind: str, mlp: Any) -> Any:
    """The case's actor in arrayrl's modules around ``mlp``."""
    from arrayrl.modules import Actor, DictModule, NormalParamExtractor, Sequential
    from arrayrl.modules import distributions as dists
    from arrayrl.modules.actors import ProbabilisticActor

    if kind == "deterministic":
        return Actor(mlp)
    cls = dists.TanhNormal if kind == "tanh_normal" else dists.IndependentNormal
    module = DictModule(
        Sequential(mlp, NormalParamExtractor()), in_keys=["observation"], out_keys=["loc", "scale"]
    )
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=cls)


def _torchrl_actor(kind: str, mlp: Any, with_spec: bool, dtype: Any) -> Any:
    """The case's actor in TorchRL's modules around ``mlp`` (with a ``Bounded(-1, 1)``
    spec when ``with_spec``)."""
    import torch
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import IndependentNormal, ProbabilisticActor, TanhNormal

    if kind == "deterministic":
        return TensorDictModule(mlp, ["observation"], ["action"])
    cls = TanhNormal if kind == "tanh_normal" else IndependentNormal
    module = TensorDictModule(
        torch.nn.Sequential(mlp, NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    spec = Bounded(-1.0, 1.0, shape=(ACT,), dtype=dtype) if with_spec else None
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=cls, spec=spec)


def _case(loss: str, actor: str, variant: str, **fields: Any) -> DTCase:
    """A case named ``loss[actor,layout,variant]``."""
    case = DTCase(name="", loss=loss, actor=actor, advantage="", **fields)
    layout = "x".join(map(str, case.steps))
    label = ",".join(p for p in (actor, layout, variant) if p)
    return replace(case, name=f"{loss}[{label}]")


_ENTROPY = {"target_entropy": -0.3}  # not a float32 number: TorchRL rounds it


def _dt_cases() -> list[DTCase]:
    """Every loss function and reduction, a context and flat steps, a collector mask and a
    TensorDict batch."""
    return [
        _case("DTLoss", "deterministic", "", batch_shape=(4,), core=True),
        _case(
            "DTLoss",
            "deterministic",
            "l1,sum",
            batch_shape=(4,),
            config={"loss_function": "l1", "reduction": "sum"},
        ),
        _case(
            "DTLoss",
            "deterministic",
            "smooth_l1,none,collector_mask",
            batch_shape=(4,),
            masks=("collector",),
            config={"loss_function": "smooth_l1", "reduction": "none"},
        ),
        _case(
            "DTLoss",
            "deterministic",
            "tensordict",
            batch_shape=(4, 8),
            context=None,
            tensordict=True,
        ),
    ]


def _online_dt_cases() -> list[DTCase]:
    """Both actor kinds, ``target_entropy="auto"`` from a spec, alpha bounds, a fixed
    alpha, several entropy draws, the reductions and a collector mask."""
    return [
        _case("OnlineDTLoss", "tanh_normal", "auto", batch_shape=(4,), action_spec=True, core=True),
        _case(
            "OnlineDTLoss",
            "normal",
            "alpha_init=0.5",
            batch_shape=(4,),
            core=True,
            config={**_ENTROPY, "alpha_init": 0.5},
        ),
        _case(
            "OnlineDTLoss",
            "tanh_normal",
            "samples_mc_entropy=3,sum",
            batch_shape=(4,),
            config={**_ENTROPY, "samples_mc_entropy": 3, "reduction": "sum"},
        ),
        _case(
            "OnlineDTLoss",
            "tanh_normal",
            "min_alpha,max_alpha",
            batch_shape=(4, 8),
            context=None,
            config={"target_entropy": 1.5, "alpha_init": 3.0, "min_alpha": 0.5, "max_alpha": 2.0},
        ),
        _case(
            "OnlineDTLoss",
            "normal",
            "fixed_alpha,collector_mask",
            batch_shape=(4,),
            masks=("collector",),
            config={**_ENTROPY, "fixed_alpha": True, "alpha_init": 0.2},
        ),
        _case(
            "OnlineDTLoss",
            "tanh_normal",
            "none,exclude",
            batch_shape=(4,),
            config={**_ENTROPY, "reduction": "none", "scalar_output_mode": "exclude"},
        ),
        _case(
            "OnlineDTLoss",
            "tanh_normal",
            "tensordict,min_alpha",
            batch_shape=(4,),
            tensordict=True,
            config={**_ENTROPY, "min_alpha": 1.5},
        ),
    ]


def cases() -> list[LossCase]:
    """The ``DTLoss`` and ``OnlineDTLoss`` conformance cases."""
    return [*_dt_cases(), *_online_dt_cases()]


DEVIATIONS: tuple[LossDeviation, ...] = ()
