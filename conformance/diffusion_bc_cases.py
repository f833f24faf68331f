"""Conformance cases of ``DiffusionBCLoss`` and the diffusion actor.

A case (:class:`DiffusionBCCase`) is a score network ``ε_θ`` (an MLP over
``cat[a_t, s, t]`` with two hidden SiLU layers; arrayrl's :class:`~arrayrl.modules.MLP`
and a ``torch.nn.Sequential`` holding the same weights) in a ``DiffusionActor`` of each
library, a batch of observations and clean expert actions, and the loss's reduction,
schedule and keys. Outputs: ``loss_diffusion_bc`` and ``action``, the actor's
deterministic reverse chain (from zeros, no noise: TorchRL's ``DETERMINISTIC``
interaction type) on the batch's observations; gradients of ``loss_diffusion_bc`` w.r.t.
every score-network parameter.

The loss draws the steps, then the noise. Every arrayrl backend draws the same
NumPy-sourced numbers (the reference's); the runner compares TorchRL (after
``torch.manual_seed``) with arrayrl on torch drawing ``randint`` then ``randn`` from a
``torch.Generator`` seeded alike, so the numbers match draw for draw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
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
from .loss_oracle import LossDeviation, _to_torch

__all__ = ["DEVIATIONS", "DiffusionBCCase", "cases"]

LOSS = "DiffusionBCLoss"


@dataclass(frozen=True)
class DiffusionBCCase(LossCase):
    """One ``DiffusionBCLoss`` configuration.

    ``schedule``: ``(num_steps, beta_start, beta_end)``. ``keys``: ``set_keys`` pairs
    (the batch then holds the entries under those names).
    """

    loss: str = LOSS
    schedule: tuple[int, float, float] = (10, 1e-4, 0.02)
    keys: tuple[tuple[str, str], ...] = ()
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def monte_carlo(self) -> bool:
        """The loss draws steps and noise: TorchRL is compared with its torch twin."""
        return True

    def network_specs(self) -> dict[str, NetSpec]:
        """The score network: ``cat[a_t, s, t]`` → ``ε̂``."""
        return {"actor": NetSpec(ACT + OBS + 1, ACT, (HIDDEN, HIDDEN))}

    def key(self, name: str) -> str:
        """The batch key of entry ``name`` (``"action"``, ``"observation"``)."""
        return dict(self.keys).get(name, name)

    def build(self, seed: int, dtype: str) -> LossInputs:
        """The score network's weights and a batch of observations and expert actions."""
        rng = np.random.default_rng([seed, 21])
        weights = {"actor": _mlp_weights(self.network_specs()["actor"], seed * 100 + 3)}
        shape = self.batch_shape
        batch = {
            self.key("observation"): rng.standard_normal((*shape, OBS)),
            self.key("action"): np.tanh(rng.standard_normal((*shape, ACT))),
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
        """arrayrl's loss and deterministic action and, on torch, the loss's gradients."""
        from arrayrl.backends import backend_of

        from arrayrl.modules import SiLU, flatten_params
        from arrayrl.modules.diffusion import DiffusionActor
        from arrayrl.objectives.diffusion_bc import DiffusionBCLoss

        spec = self.network_specs()["actor"]
        mlp = arrayrl_mlp(spec, inputs.weights["actor"], activation_class=SiLU)
        num_steps, beta_start, beta_end = self.schedule
        actor = DiffusionActor(
            ACT, score_network=mlp, num_steps=num_steps, beta_start=beta_start, beta_end=beta_end
        )
        loss = DiffusionBCLoss(actor, seed=LOSS_SEED, **self.config)
        loss.generator_mode = generator_mode
        if self.keys:
            loss.set_keys(**dict(self.keys))
        loss.to(backend, device)
        batch = arrayrl_batch(self, inputs, backend, device)
        value = loss(batch)["loss_diffusion_bc"]
        observation = batch.get(self.key("observation"))
        with backend_of(value).no_grad():
            action = actor.module.sample(
                actor.module.params, observation, rng=None, deterministic=True
            )
        params = {f"actor.{n}": leaf for n, leaf in flatten_params(mlp.params).items()}
        outputs = {
            "loss_diffusion_bc": _host(value, backend_of(value)),
            "action": _host(action, backend_of(action)),
        }
        gradients = (
            torch_gradients({"loss_diffusion_bc": value}, params) if backend == "torch" else {}
        )
        return Evaluation(outputs, gradients)

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's loss (after ``torch.manual_seed(LOSS_SEED)``), its gradients, and
        its actor's ``DETERMINISTIC`` action."""
        import torch
        from tensordict import TensorDict
        from tensordict.nn import InteractionType, set_interaction_type
        from torchrl.modules import DiffusionActor
        from torchrl.objectives import DiffusionBCLoss

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        spec = self.network_specs()["actor"]
        sizes = [spec.in_features, *spec.num_cells, spec.out_features]
        layers: list[Any] = []
        for k in range(len(sizes) - 1):
            layers += [torch.nn.Linear(sizes[k], sizes[k + 1]), torch.nn.SiLU()]
        score = torch.nn.Sequential(*layers[:-1]).to(torch_dtype)
        score.load_state_dict(_to_torch(inputs.weights["actor"]))
        num_steps, beta_start, beta_end = self.schedule
        actor = DiffusionActor(
            action_dim=ACT,
            score_network=score,
            num_steps=num_steps,
            beta_start=beta_start,
            beta_end=beta_end,
        ).to(torch_dtype)
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = DiffusionBCLoss(actor, **self.config)
            if self.keys:
                loss.set_keys(**dict(self.keys))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(LOSS_SEED)
                value = loss(batch)["loss_diffusion_bc"]
            observation = batch.get(self.key("observation"))
            with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
                action = actor.module(observation)
        params = {f"actor.{n}": p for n, p in score.named_parameters()}
        outputs = {"loss_diffusion_bc": value.detach().numpy(), "action": action.numpy()}
        return Evaluation(outputs, torch_gradients({"loss_diffusion_bc": value}, params))


def _case(variant: str, **fields: Any) -> DiffusionBCCase:
    """A case named ``DiffusionBCLoss[layout,variant]``."""
    case = DiffusionBCCase(name="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (layout, variant) if p)
    return replace(case, name=f"{LOSS}[{label}]")


def cases() -> list[DiffusionBCCase]:
    """Reductions, batch layouts, schedules, keys and TensorDict batches."""
    return [
        _case("", core=True),
        _case("", batch_shape=(4, 8)),
        _case("sum", config={"reduction": "sum"}),
        _case("none", batch_shape=(4, 8), config={"reduction": "none"}, core=True),
        _case("steps=100", schedule=(100, 1e-4, 0.02)),
        _case("steps=20,beta=1e-3..0.2", schedule=(20, 1e-3, 0.2)),
        _case("keys", keys=(("action", "expert_action"), ("observation", "obs"))),
        _case("tensordict,none", tensordict=True, config={"reduction": "none"}),
    ]


def _float64(case: Any, dtype: str) -> bool:
    return getattr(case, "loss", None) == LOSS and dtype == "float64"


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-diffusion-float32-schedule",
        applies=_float64,
        reason=(
            "TorchRL's _DDPMModule builds betas, alphas and alphas_cumprod in float32 and "
            "keeps them float32 through .double() (its _apply restores them; kept on purpose "
            "in pytorch/rl#4114, 'schedule buffers stay authoritative'), so a float64 "
            "DiffusionActor noises actions and runs its reverse chain with a float32-rounded "
            "schedule (relative error ~1e-7 in ᾱ_t, larger in 1 − ᾱ_t near t = 0). arrayrl "
            "computes the schedule in float64 (1 − ᾱ_t as −expm1(Σ log1p(−β_s))) and casts it "
            "to the model's dtype; given TorchRL's own DiffusionActor, arrayrl uses its "
            "float32 buffers and matches it exactly (no bug report filed; the PR is the "
            "reference)."
        ),
        tolerance=1e-6,
        torchrl_issue="pytorch/rl#4114",
    ),
)
