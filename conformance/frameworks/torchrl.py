"""TorchRL 0.14.1's functional estimators (``torchrl.objectives.value.functional``).

Every estimator of :data:`..cases.SIGNATURES` has a TorchRL function of the same name and
argument order, so each is called as it is, in :func:`~..check.check`'s ``"torchrl"``
convention, on CPU torch tensors. The differences recorded for the main suite
(:data:`..oracle.DEVIATIONS`) are its disagreements, each with a one-step reproducer
(:func:`reproduce_float32_masks`, :func:`reproduce_td1_non_rolling_no_bootstrap`).
"""

from __future__ import annotations

import functools
import importlib.util
from functools import cache
from typing import Any

import numpy as np

from ..cases import DTYPES, SIGNATURES, Case, all_cases
from ..check import EstimatorSpec
from ..oracle import DEVIATIONS, Deviation
from . import Disagreement, Framework, Implementation, term_implementation

__all__ = [
    "DISAGREEMENTS",
    "FLOAT32_CONSTANTS",
    "FRAMEWORK",
    "reproduce_float32_clip_epsilon",
    "reproduce_float32_masks",
    "reproduce_td1_non_rolling_no_bootstrap",
]


def _missing() -> str | None:
    if importlib.util.find_spec("torchrl") is None:
        return "torchrl is not installed (pip install torchrl==0.14.1)"
    return None


def _version() -> str:
    import torchrl

    return f"torchrl {torchrl.__version__}"


@cache
def _cases_by_name() -> dict[str, Case]:
    return {case.name: case for case in all_cases()}


########################################################################
# the recorded deviations' reproducers (one step, float64)


def _one_step(value: float) -> np.ndarray:
    """``value`` as a float64 ``[B=1, T=1, F=1]`` array."""
    return np.full((1, 1, 1), value, np.float64)


def reproduce_float32_masks() -> tuple[float, float]:
    """GAE, one float64 step: ``r = 0``, ``V(s) = 0``, ``V(s') = 1``, ``γ = 0.9``, ``λ = 1``.

    Returns ``(torchrl, reference)`` advantages: ``(float32(0.9), 0.9)``, i.e.
    ``(0.8999999761581421, 0.9)``. TorchRL builds ``γ · (1 - terminated)`` from a Python
    float and an integer mask, which torch computes in its default dtype (float32), so
    the float64 advantage carries float32's rounding of γ (an error of 2.4e-8, far above
    the float64 tolerance of 1e-10).
    """
    import torch
    from torchrl.objectives.value.functional import generalized_advantage_estimate as torchrl_gae

    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    zero, one = _one_step(0.0), _one_step(1.0)
    done = np.zeros((1, 1, 1), bool)
    tensors = [torch.from_numpy(x) for x in (zero, one, zero, done, done)]
    torchrl, _ = torchrl_gae(0.9, 1.0, *tensors)
    reference, _ = generalized_advantage_estimate(0.9, 1.0, zero, one, zero, done, done)
    return float(torchrl[0, 0, 0]), float(np.asarray(reference)[0, 0, 0])


def reproduce_td1_non_rolling_no_bootstrap() -> tuple[float, float]:
    """TD(1) return, one float64 step not done: ``r = 0``, ``V(s') = 1``, per-step
    ``γ = 0.9``, ``rolling_gamma=False``.

    Returns ``(torchrl, reference)`` returns: ``(0.0, 0.9)``. TorchRL's non-rolling loop
    starts each return from 0 instead of the last ``V(s')``, so the step still running at
    the end of the batch loses its bootstrap ``γ · V(s')``; its ``rolling_gamma=True``
    form gives 0.9.
    """
    import torch
    from torchrl.objectives.value.functional import td1_return_estimate as torchrl_td1

    from arrayrl.objectives.value.functional import td1_return_estimate

    gamma, one, zero = _one_step(0.9), _one_step(1.0), _one_step(0.0)
    done = np.zeros((1, 1, 1), bool)
    tensors = [torch.from_numpy(x) for x in (gamma, one, zero, done, done)]
    torchrl = torchrl_td1(*tensors, rolling_gamma=False)
    reference = td1_return_estimate(gamma, one, zero, done, done, rolling_gamma=False)
    return float(torchrl[0, 0, 0]), float(np.asarray(reference)[0, 0, 0])


#: the dotted name of each deviation's reproducer
REPRODUCERS: dict[str, str] = {
    "torchrl-float32-masks": "arrayrl.conformance.frameworks.torchrl.reproduce_float32_masks",
    "torchrl-td1-non-rolling-no-bootstrap": (
        "arrayrl.conformance.frameworks.torchrl.reproduce_td1_non_rolling_no_bootstrap"
    ),
}


def _disagreement(deviation: Deviation) -> Disagreement:
    """A suite :class:`..oracle.Deviation` as a :class:`Disagreement` (over both dtypes)."""

    def covers(case_name: str) -> bool:
        case = _cases_by_name().get(case_name.split("+")[0])
        return case is not None and any(deviation.applies(case, d) for d in DTYPES)

    upstream = deviation.torchrl_issue and f"pytorch/rl#{deviation.torchrl_issue}"
    return Disagreement(
        deviation.key, covers, deviation.reason, upstream, REPRODUCERS.get(deviation.key)
    )


DISAGREEMENTS: tuple[Disagreement, ...] = tuple(_disagreement(d) for d in DEVIATIONS)


def _implementations() -> list[Implementation]:
    from torchrl.objectives.value import functional

    estimators = [
        Implementation(
            name=f"torchrl.{name}",
            spec=EstimatorSpec(name),
            backend="torch",
            fn=getattr(functional, name),
            note="TorchRL's own argument order and [*B, T, F] layout: called as it is",
            disagreements=DISAGREEMENTS,
        )
        for name in SIGNATURES
        if hasattr(functional, name)
    ]
    return estimators + _loss_term_implementations()


########################################################################
# loss terms: TorchRL's loss classes run on lookup-table networks


#: TorchRL's losses keep Python-float coefficients as float32 buffers (the suite's
#: ``torchrl-float32-constants``): on float64 inputs their terms carry float32 rounding
FLOAT32_CONSTANTS = Disagreement(
    key="torchrl-float32-constants",
    covers=lambda name: name.startswith(
        ("clipped_surrogate[", "q_learning[", "double_q_learning[")
    ),
    explanation=(
        "TorchRL's losses store Python-float coefficients as float32 tensors: ClipPPOLoss's "
        "clip_epsilon (so the clip bounds log(1 ± ε) are float32's), and the TD(0) target of "
        "DQNLoss multiplies γ by an integer mask in torch's default dtype (float32). On "
        "float64 inputs their terms differ from a float64 evaluation by about 1e-8 relative "
        "where the constant matters (clipped samples, every bootstrapped target); float32 "
        "inputs match. arrayrl keeps every constant in the inputs' dtype."
    ),
    reproducer="arrayrl.conformance.frameworks.torchrl.reproduce_float32_clip_epsilon",
    dtypes=("float64",),
)

_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def _policy_lookup(log_prob: Any) -> Any:
    """A TorchRL actor whose Normal at observation ``i`` gives ``log_prob[i]`` to the
    action 0: ``loc = 0``, ``scale = exp(-log_prob - ½ log 2π)`` (the gradient reaches
    ``log_prob``)."""
    import torch
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor

    class Lookup(torch.nn.Module):
        def forward(self, index: Any) -> tuple[Any, Any]:
            chosen = log_prob[index]
            return torch.zeros_like(chosen)[..., None], torch.exp(-chosen - _HALF_LOG_2PI)[
                ..., None
            ]

    module = TensorDictModule(Lookup(), in_keys=["observation"], out_keys=["loc", "scale"])
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=torch.distributions.Normal,
        return_log_prob=True,
    )


def torchrl_clipped_surrogate(
    log_prob: Any, prev_log_prob: Any, advantage: Any, clip_epsilon: float
) -> tuple[Any, Any]:
    """``ClipPPOLoss(reduction="none")``'s ``loss_objective`` and ``clip_fraction`` on a
    batch whose current log-probabilities are ``log_prob`` (:func:`_policy_lookup`)."""
    import torch
    from tensordict import TensorDict
    from torchrl.objectives import ClipPPOLoss

    batch = tuple(log_prob.shape)
    index = torch.arange(log_prob.numel()).reshape(batch)
    loss = ClipPPOLoss(
        _policy_lookup(log_prob.reshape(-1)),
        None,
        clip_epsilon=clip_epsilon,
        entropy_bonus=False,
        normalize_advantage=False,
        critic_coeff=None,
        reduction="none",
    )
    data = TensorDict(
        {
            "observation": index,
            "action": torch.zeros(*batch, 1, dtype=log_prob.dtype),
            "action_log_prob": prev_log_prob[..., None],
            "advantage": advantage[..., None],
        },
        batch,
    )
    out = loss(data)
    return out["loss_objective"].reshape(batch), out["clip_fraction"].to(log_prob.dtype)


def _q_lookup(online: Any, target: Any, actions: int) -> Any:
    """A TorchRL ``QValueActor`` reading row ``i`` of ``online``, or of ``target`` once
    its parameter ``use_target`` is set to 1 (done in the loss's target copy only)."""
    import torch
    from torchrl.data import Categorical
    from torchrl.modules import QValueActor

    class Lookup(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.use_target = torch.nn.Parameter(torch.zeros((), dtype=online.dtype))

        def forward(self, index: Any) -> Any:
            return torch.where(self.use_target > 0.5, target[index], online[index])

    return QValueActor(Lookup(), in_keys=["observation"], spec=Categorical(actions))


def _dqn_loss(
    q_values, action, reward, terminated, next_q_values, next_q_selector, gamma, loss_function
) -> Any:
    """TorchRL's ``DQNLoss`` (double when ``next_q_selector`` is given) on lookup tables:
    observation ``i`` is sample ``i`` at ``s``, ``N + i`` at ``s'``."""
    import torch
    from tensordict import TensorDict
    from torchrl.objectives import DQNLoss, ValueEstimators

    batch = tuple(action.shape)
    flat = int(np.prod(batch, dtype=int))
    actions = q_values.shape[-1]
    rows = q_values.reshape(flat, actions)
    selector = rows if next_q_selector is None else next_q_selector.reshape(flat, actions)
    online = torch.cat([rows, selector])
    # the target copy's table carries no gradient, as TorchRL's target parameters
    target = torch.cat([rows, next_q_values.reshape(flat, actions)]).detach()
    loss = DQNLoss(
        _q_lookup(online, target, actions),
        loss_function=loss_function,
        delay_value=True,
        double_dqn=next_q_selector is not None,
        action_space="categorical",
    )
    loss.make_value_estimator(ValueEstimators.TD0, gamma=gamma)
    for key, leaf in loss.target_value_network_params.items(True, True):
        if key[-1] == "use_target":
            leaf.data.fill_(1.0)
    index = torch.arange(flat).reshape(batch)
    ended = terminated[..., None]
    data = TensorDict(
        {
            "observation": index,
            "action": action,
            "next": {
                "observation": index + flat,
                "reward": reward[..., None],
                "done": ended,
                "terminated": ended,
            },
        },
        batch,
    )
    return loss(data)["loss"].to(q_values.dtype)


def torchrl_q_learning(q_values, action, reward, terminated, next_q_values, gamma) -> tuple:
    """``DQNLoss`` with ``loss_function="l2"`` and ``"smooth_l1"``: the two mean losses."""
    args = (q_values, action, reward, terminated, next_q_values, None, gamma)
    return _dqn_loss(*args, "l2"), _dqn_loss(*args, "smooth_l1")


def torchrl_double_q_learning(
    q_values, action, reward, terminated, next_q_values, next_q_selector, gamma
) -> tuple:
    """``DQNLoss(double_dqn=True)`` with ``"l2"`` and ``"smooth_l1"``: the mean losses."""
    args = (q_values, action, reward, terminated, next_q_values, next_q_selector, gamma)
    return _dqn_loss(*args, "l2"), _dqn_loss(*args, "smooth_l1")


def reproduce_float32_clip_epsilon() -> tuple[float, float]:
    """ClipPPOLoss, one float64 sample with ratio 2 and advantage 1, ε = 0.2.

    Returns ``(torchrl, reference)`` ``loss_objective``: ``(-1.2000000078829447, -1.2)``.
    TorchRL keeps ``ε`` as a float32 buffer and clips ``log r`` at ``log1p(ε)`` computed
    in float32, so the clipped ratio is ``exp(float32(log 1.2))`` (a relative error of
    6.6e-9, far above the float64 tolerance of 1e-10).
    """
    import torch

    log_prob = torch.tensor([np.log(2.0)], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    loss, _ = torchrl_clipped_surrogate(log_prob, zero, torch.ones(1, dtype=torch.float64), 0.2)
    return float(loss[0]), -1.2


def _loss_term_implementations() -> list[Implementation]:

    dqn_note = (
        "DQNLoss(delay_value=True, action_space='categorical') with TD(0) at gamma, on a "
        "QValueActor whose network is a lookup table (observation i: sample i at s, N + i "
        "at s'; the loss's target copy reads next_q_values, the online one q_values and, "
        "for double DQN, next_q_selector at s'; the target table is detached, as "
        "TorchRL's target parameters are); done = terminated. Run twice, with "
        "loss_function 'l2' and 'smooth_l1' (TorchRL writes |td_error| as a priority, so "
        "the signed TD error is not compared)."
    )
    losses = ("l2_loss", "smooth_l1_loss")
    made = functools.partial(term_implementation, "torchrl", "torch")
    return [
        made(
            "ClipPPOLoss",
            "clipped_surrogate",
            ("loss_objective", "clip_fraction"),
            torchrl_clipped_surrogate,
            (
                "ClipPPOLoss(entropy_bonus=False, normalize_advantage=False, reduction='none', "
                "no critic) on an actor whose Normal gives each sample's log_prob to action 0 "
                "(loc 0, scale exp(-log_prob - ½ log 2π)); prev_log_prob and advantage are "
                "the batch's action_log_prob and advantage"
            ),
            (FLOAT32_CONSTANTS,),
        ),
        made(
            "DQNLoss",
            "q_learning",
            losses,
            torchrl_q_learning,
            dqn_note,
            (FLOAT32_CONSTANTS,),
        ),
        made(
            "DQNLoss(double_dqn=True)",
            "double_q_learning",
            losses,
            torchrl_double_q_learning,
            dqn_note,
            (FLOAT32_CONSTANTS,),
        ),
    ]


FRAMEWORK = Framework(
    name="torchrl",
    pip="torchrl==0.14.1",
    missing=_missing,
    version=_version,
    implementations=_implementations,
    disagreements=DISAGREEMENTS,
)
