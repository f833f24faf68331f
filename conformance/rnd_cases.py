"""Conformance cases of ``RNDLoss`` (Random Network Distillation's predictor loss).

A case has two networks, the trained ``predictor`` and the frozen random ``target``
(one-hidden-layer MLPs, observation → :data:`FEATURES` features, drawn by arrayrl's MLP
and named as in ``torch.nn.Sequential``), optionally observation statistics
(``obs_rms``: ``mean``, ``var``, ``count``, float32 as both libraries' buffers, one
variance 0 so that the 1e-8 floor and the clipping are exercised), and a batch of next
observations (float, or integer counts) with optional validity masks.

``update_fraction < 1`` draws one uniform per sample for the update mask: those cases
are Monte-Carlo (:attr:`RNDCase.monte_carlo`). TorchRL draws the mask with
``torch.rand`` from torch's global generator, so the oracle seeds it with
``torch.manual_seed(LOSS_SEED)`` and the runner compares it with arrayrl on torch drawing
from a ``torch.Generator`` seeded alike (the same float32 uniforms, at both dtypes);
every arrayrl backend otherwise draws the same NumPy-sourced uniforms. The gradients
compared are those of ``loss_predictor`` w.r.t. the predictor's parameters (the target's
take no gradient in either library).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

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
    _some_valid,
    arrayrl_batch,
    torch_gradients,
)
from .loss_oracle import LossDeviation, _to_torch, never_measured, torchrl_mlp

__all__ = ["DEVIATIONS", "RNDCase", "cases"]

#: the feature size of both networks
FEATURES = 5
_ROLES = ("predictor", "target")


@dataclass(frozen=True)
class RNDCase(LossCase):
    """One ``RNDLoss`` configuration.

    ``obs_rms``: normalise with running statistics. ``integer_obs``: the observations are
    int64 counts (both libraries cast them). ``observation_key``: read the observation
    at this key (``set_keys``) instead of ``("next", "observation")``.
    """

    obs_rms: bool = False
    integer_obs: bool = False
    observation_key: Any = None

    @property
    def update_fraction(self) -> float:
        return float(self.config.get("update_fraction", 0.25))

    @property
    def monte_carlo(self) -> bool:
        """Whether an update mask is drawn (``update_fraction < 1``)."""
        return self.update_fraction < 1.0

    def network_specs(self) -> dict[str, NetSpec]:
        """The predictor and the target: ``OBS → HIDDEN → FEATURES`` MLPs."""
        return {role: NetSpec(OBS, FEATURES, (HIDDEN,)) for role in _ROLES}

    def build(self, seed: int, dtype: str) -> LossInputs:
        """Both networks' weights, the statistics (under ``weights["obs_rms"]``) and the
        batch, drawn in float64 and cast to ``dtype``; the statistics are float32 values,
        so both dtypes hold them exactly."""
        rng = np.random.default_rng([seed, 15])
        weights: dict[str, dict[str, np.ndarray]] = {
            role: _mlp_weights(spec, seed * 100 + k)
            for k, (role, spec) in enumerate(self.network_specs().items())
        }
        if self.obs_rms:
            weights["obs_rms"] = _statistics(rng)
        shape = self.batch_shape
        if self.integer_obs:
            obs = rng.integers(-3, 6, (*shape, OBS))
        else:
            obs = 2.0 * rng.standard_normal((*shape, OBS)) + 0.5
        batch: dict[str, Any] = _nested(self.observation_key or ("next", "observation"), obs)
        if "collector" in self.masks:
            batch["collector"] = {"mask": _some_valid(rng, shape)}
        if "shifted_valid" in self.masks:
            batch["shifted_valid"] = _some_valid(rng, (*shape, 1))
        return LossInputs(weights, {}, batch, shape).astype(dtype)

    def evaluate_arrayrl(
        self,
        inputs: LossInputs,
        backend: str,
        device: Any = None,
        *,
        generator_mode: str = "numpy",
    ) -> Evaluation:
        """arrayrl's ``loss_predictor`` and, on torch, its gradients w.r.t. the
        predictor's parameters."""
        from arrayrl.backends import backend_of

        from arrayrl.modules import MLP, flatten_params, unflatten_params
        from arrayrl.modules.running_mean_std import RunningMeanStd
        from arrayrl.objectives.rnd import RNDLoss

        mlps = {}
        for role, spec in self.network_specs().items():
            dtype = next(iter(inputs.weights[role].values())).dtype
            mlps[role] = MLP(spec.in_features, spec.out_features, list(spec.num_cells), dtype=dtype)
            mlps[role].params = unflatten_params(dict(inputs.weights[role]))
        rms = None
        if self.obs_rms:
            rms = RunningMeanStd((OBS,))
            rms.load_state_dict(inputs.weights["obs_rms"])
        loss = RNDLoss(
            mlps["predictor"], mlps["target"], obs_rms=rms, seed=LOSS_SEED, **self.config
        )
        loss.generator_mode = generator_mode
        self.configure(loss)
        loss.to(backend, device)
        value = loss(arrayrl_batch(self, inputs, backend, device)).get("loss_predictor")
        params = {
            f"predictor.{name}": leaf
            for name, leaf in flatten_params(
                loss.network_params("predictor_network", None)["module"]
            ).items()
        }
        gradients = torch_gradients({"loss_predictor": value}, params) if backend == "torch" else {}
        return Evaluation({"loss_predictor": _host(value, backend_of(value))}, gradients)

    def configure(self, loss: Any) -> Any:
        """The keys: ``observation`` when the case moves it."""
        if self.observation_key is not None:
            loss.set_keys(observation=self.observation_key)
        return loss

    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's ``RNDLoss`` on the case's weights (float32 networks at both dtypes:
        TorchRL casts the observation to float32, see
        ``torchrl-rnd-float32-observations``), its mask drawn after
        ``torch.manual_seed(LOSS_SEED)``."""
        import torch
        from tensordict import TensorDict
        from torchrl.envs.transforms.rnd import RunningMeanStd
        from torchrl.objectives import RNDLoss

        networks = {}
        for role, spec in self.network_specs().items():
            weights = {k: np.asarray(v, np.float32) for k, v in inputs.weights[role].items()}
            networks[role] = torchrl_mlp(spec, weights)
        rms = None
        if self.obs_rms:
            rms = RunningMeanStd((OBS,))
            rms.load_state_dict(
                {
                    k: torch.from_numpy(np.array(v, dtype=np.float32))
                    for k, v in inputs.weights["obs_rms"].items()
                }
            )
        loss = self.configure(
            RNDLoss(networks["predictor"], networks["target"], obs_rms=rms, **self.config)
        )
        batch = TensorDict(_to_torch(inputs.batch), batch_size=inputs.batch_size)
        with torch.random.fork_rng():
            torch.manual_seed(LOSS_SEED)
            value = loss(batch)["loss_predictor"]
        params = {f"predictor.{name}": p for name, p in networks["predictor"].named_parameters()}
        return Evaluation(
            {"loss_predictor": value.detach().numpy()},
            torch_gradients({"loss_predictor": value}, params),
        )


def _statistics(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Observation statistics as float32 values (stored float64): a mean, a variance
    with one zero entry (below the 1e-8 floor), a count."""
    mean = rng.standard_normal(OBS).astype(np.float32)
    var = rng.uniform(0.2, 3.0, OBS).astype(np.float32)
    var[-1] = 0.0
    return {
        "mean": mean.astype(np.float64),
        "var": var.astype(np.float64),
        "count": np.asarray(1234.0),
    }


def _nested(key: Any, value: np.ndarray) -> dict[str, Any]:
    """``{key: value}`` with a tuple key as nested dicts."""
    if isinstance(key, str):
        return {key: value}
    tree: dict[str, Any] = {key[-1]: value}
    for part in reversed(key[:-1]):
        tree = {part: tree}
    return tree


def _case(variant: str, **fields: Any) -> RNDCase:
    """A case named ``RNDLoss[layout,variant]``."""
    case = RNDCase(name="", loss="RNDLoss", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    label = ",".join(p for p in (layout, variant) if p)
    return replace(case, name=f"RNDLoss[{label}]")


_BT = (4, 8)


def cases() -> list[RNDCase]:
    """With and without statistics; update fractions 1, 0.75, 0.5, the default 0.25 and
    0 (nothing kept); every reduction; validity masks; integer observations; a moved
    observation key; TensorDict batches."""
    everything = {"update_fraction": 1.0}
    return [
        _case("fraction=1", config=everything, core=True),
        _case("obs_rms,fraction=1", obs_rms=True, config=everything),
        _case("obs_rms,fraction=0.25", batch_shape=_BT, obs_rms=True, core=True),
        _case("fraction=0.5,sum", config={"update_fraction": 0.5, "reduction": "sum"}),
        _case(
            "obs_rms,none,tensordict",
            batch_shape=_BT,
            obs_rms=True,
            tensordict=True,
            config={"reduction": "none"},
        ),
        _case("fraction=0.5,collector_mask", masks=("collector",), config={"update_fraction": 0.5}),
        _case(
            "shifted_valid,none",
            batch_shape=_BT,
            masks=("shifted_valid",),
            config={"reduction": "none"},
        ),
        _case(
            "both_masks,fraction=1,sum",
            batch_shape=_BT,
            masks=("collector", "shifted_valid"),
            config={"update_fraction": 1.0, "reduction": "sum"},
        ),
        _case("integer_obs,obs_rms,fraction=1", integer_obs=True, obs_rms=True, config=everything),
        _case(
            "obs_clip=1,obs_rms,fraction=0.75",
            obs_rms=True,
            config={"obs_clip": 1.0, "update_fraction": 0.75},
        ),
        _case("fraction=0", config={"update_fraction": 0.0}),
        _case(
            "observation_key,fraction=1",
            observation_key="observation",
            config=everything,
        ),
    ]


# -- deviations -----------------------------------------------------------------------------------

DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-rnd-float32-observations",
        applies=lambda case, dtype: isinstance(case, RNDCase) and dtype == "float64",
        reason=(
            "TorchRL 0.14.1's RNDLoss casts the observation to float32 (.float()) whatever "
            "the networks' dtype, so float64 networks raise a dtype mismatch and TorchRL "
            "computes RND in float32 only. arrayrl casts the observation to the predictor's "
            "parameter dtype (float32 networks get TorchRL's numbers bit for bit). On float64 "
            "inputs the oracle runs TorchRL with the weights rounded to float32 and compares "
            "with arrayrl's float64 result at float32 precision. No TorchRL issue found "
            "(RNDLoss arrived with pytorch/rl PR 3889)."
        ),
        tolerance=1e-4,
    ),
    LossDeviation(
        key="torchrl-running-mean-std-empty-batch",
        applies=never_measured,
        reason=(
            "TorchRL 0.14.1's RunningMeanStd.update folds an empty batch in as a NaN mean "
            "(x.mean() of no elements), which poisons the statistics for good; arrayrl's "
            "leaves them unchanged. It also reshapes a batch to (-1, *shape) whenever the "
            "sizes divide (a [8, 2] batch feeds shape (4,) statistics as [4, 4]) where "
            "arrayrl raises ValueError naming the shapes. Not measured by the loss cases "
            "(tests/test_rnd.py checks both). No TorchRL issue found."
        ),
        tolerance=None,
    ),
)
