"""What a conformance run will do: which cases ``-k`` selects, and which backends and
oracles this machine runs or skips (with the reason).

Cases are named after the function or loss class they call (``"vtrace_advantage_estimate[
B4_T16_F1,random]"``, ``"ClipPPOLoss[normal,32,given]"``). :data:`FAMILIES` maps the
common names a user types (``gae``, ``v-trace``, ``td-lambda``, ``clipppo``, ...) to
those functions and classes, in one table.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "FAMILIES",
    "case_subject",
    "describe_skipped",
    "family_names",
    "normalize",
    "oracle_line",
    "select",
    "skipped_backends",
]

_ESTIMATORS = (
    "generalized_advantage_estimate",
    "td0_return_estimate",
    "td0_advantage_estimate",
    "td1_return_estimate",
    "td1_advantage_estimate",
    "td_lambda_return_estimate",
    "td_lambda_advantage_estimate",
    "vtrace_advantage_estimate",
    "reward2go",
)
_OFF_POLICY = (
    "SACLoss",
    "DiscreteSACLoss",
    "TD3Loss",
    "DDPGLoss",
    "REDQLoss",
    "TQCLoss",
    "CrossQLoss",
)
_Q_LEARNING = ("DQNLoss", "DistributionalDQNLoss")
_OFFLINE = ("CQLLoss", "DiscreteCQLLoss", "IQLLoss", "DiscreteIQLLoss", "TD3BCLoss", "BCLoss")
_MULTI_AGENT = ("MAPPOLoss", "IPPOLoss", "QMixerLoss")
_DREAMER = ("DreamerModelLoss", "DreamerActorLoss", "DreamerValueLoss")
_DREAMER_V3_FUNCTIONS = ("symlog", "symexp", "_default_bins", "two_hot_encode", "two_hot_decode",
                         "two_hot_cross_entropy", "categorical_kl_terms",
                         "categorical_kl_balanced")  # fmt: skip
_DREAMER_V3 = ("DreamerV3ModelLoss", "DreamerV3ValueLoss", "DreamerV3ActorLoss", "DreamerV3Loss")
_MODEL_BASED = (*_DREAMER, *_DREAMER_V3, *_DREAMER_V3_FUNCTIONS, "ExponentialQuadraticCost",
                "WorldModelLoss")  # fmt: skip
_IMITATION = ("GAILLoss", "RNDLoss")
_SEQUENCE = ("DTLoss", "OnlineDTLoss", "ACTLoss", "DiffusionBCLoss")
_LOSSES = ("PPOLoss", "ClipPPOLoss", "KLPENPPOLoss", "A2CLoss", "ReinforceLoss", *_OFF_POLICY,
           *_Q_LEARNING, *_OFFLINE, *_MULTI_AGENT, *_MODEL_BASED, *_IMITATION,
           *_SEQUENCE)  # fmt: skip

#: family -> (the functions or loss classes it selects, other names it is known by).
#: Names are compared after :func:`normalize` (case, ``-``, ``_``, spaces, brackets).
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gae": (("generalized_advantage_estimate",), ("generalized-advantage",)),
    "td0": (("td0_return_estimate", "td0_advantage_estimate"), ("td(0)",)),
    "td1": (("td1_return_estimate", "td1_advantage_estimate"), ("td(1)",)),
    "tdlambda": (
        ("td_lambda_return_estimate", "td_lambda_advantage_estimate"),
        ("td-lambda", "td_lambda", "td(lambda)", "tdλ", "td(λ)"),
    ),
    "vtrace": (("vtrace_advantage_estimate",), ("v-trace",)),
    "reward2go": (("reward2go",), ("reward-to-go", "rtg")),
    "ppo": (("PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"), ("ppo-family",)),
    "clipppo": (("ClipPPOLoss",), ("clip-ppo",)),
    "klpen": (("KLPENPPOLoss",), ("klpenppo", "kl-pen", "kl-ppo")),
    "a2c": (("A2CLoss",), ()),
    "reinforce": (("ReinforceLoss",), ()),
    "sac": (("SACLoss",), ("soft-actor-critic",)),
    "discretesac": (("DiscreteSACLoss",), ("discrete-sac",)),
    "td3": (("TD3Loss",), ()),
    "ddpg": (("DDPGLoss",), ()),
    "redq": (("REDQLoss",), ()),
    "tqc": (("TQCLoss",), ()),
    "crossq": (("CrossQLoss",), ("cross-q",)),
    "offpolicy": (_OFF_POLICY, ("off-policy",)),
    "dqn": (("DQNLoss",), ("deep-q",)),
    "c51": (("DistributionalDQNLoss",), ("distributional-dqn",)),
    "qlearning": (_Q_LEARNING, ("q-learning",)),
    "cql": (("CQLLoss",), ()),
    "discretecql": (("DiscreteCQLLoss",), ("discrete-cql",)),
    "iql": (("IQLLoss",), ()),
    "discreteiql": (("DiscreteIQLLoss",), ("discrete-iql",)),
    "td3bc": (("TD3BCLoss",), ("td3+bc",)),
    "bc": (("BCLoss",), ("behavior-cloning", "behaviour-cloning")),
    "offline": (_OFFLINE, ("offline-rl",)),
    "mappo": (("MAPPOLoss",), ("multi-agent-ppo",)),
    "ippo": (("IPPOLoss",), ("independent-ppo",)),
    "qmixer": (("QMixerLoss",), ("qmix", "vdn", "q-mixer")),
    "multiagent": (_MULTI_AGENT, ("multi-agent", "marl")),
    "dreamer": (_DREAMER, ("dreamer-v1",)),
    "dreamerv3": (_DREAMER_V3, ("dreamer-v3",)),
    "dreamerv3functions": (_DREAMER_V3_FUNCTIONS, ("dreamer-v3-functions", "two-hot")),
    "pilco": (("ExponentialQuadraticCost",), ("exponential-quadratic-cost",)),
    "worldmodel": (("WorldModelLoss",), ("world-model", "world-model-loss")),
    "modelbased": (_MODEL_BASED, ("model-based",)),
    "gail": (("GAILLoss",), ("adversarial-imitation",)),
    "rnd": (("RNDLoss",), ("random-network-distillation",)),
    "imitation": (_IMITATION, ("imitation-and-exploration", "exploration")),
    "dt": (("DTLoss",), ("decision-transformer",)),
    "onlinedt": (("OnlineDTLoss",), ("online-decision-transformer",)),
    "act": (("ACTLoss",), ("action-chunking-transformer",)),
    "diffusionbc": (("DiffusionBCLoss",), ("diffusion-bc", "diffusion-policy")),
    "sequence": (_SEQUENCE, ("sequence-policies", "generative")),
    "estimators": (_ESTIMATORS, ("values", "value-estimators")),
    "losses": (_LOSSES, ("objectives",)),
}


def normalize(name: str) -> str:
    """``name`` lower-cased without ``-``, ``_``, spaces, dots or brackets."""
    return re.sub(r"[-_\s().]", "", name.lower())


def _alias_table() -> dict[str, tuple[str, ...]]:
    """Every normalised name -> the functions or classes it selects; a function's or
    class's own name selects just that one."""
    table: dict[str, tuple[str, ...]] = {normalize(n): (n,) for n in (*_ESTIMATORS, *_LOSSES)}
    for family, (members, aliases) in FAMILIES.items():
        for alias in (family, *aliases):
            table[normalize(alias)] = members
    return table


def family_names() -> str:
    """The family names, comma-separated (for help texts and error messages)."""
    return ", ".join(FAMILIES)


def case_subject(case: Any) -> str:
    """The function (estimator case) or loss class (loss case) a case calls."""
    return getattr(case, "function", None) or case.loss


def _matches(case: Any, term: str, table: dict[str, tuple[str, ...]]) -> bool:
    """Whether ``case`` matches one ``-k`` term: a family or function/class name selects
    its cases; anything else is a case-insensitive substring of the case name."""
    members = table.get(normalize(term))
    if members is not None:
        return case_subject(case) in members
    return term.lower() in case.name.lower()


def select(cases: Iterable[Any], pattern: str) -> list[Any]:
    """The cases ``pattern`` selects (all for ``""``).

    ``pattern`` is one or more comma-separated terms; a case is kept when any term
    matches it. A term that names a family (``gae``, ``V-Trace``, ``td_lambda``, ``ppo``,
    ...) or a function or loss class (``ClipPPOLoss``, ``td0_return_estimate``) selects
    exactly those cases, whatever the case; any other term keeps the cases whose name
    contains it, ignoring case (``-k tanh_normal``, ``-k 4x8``).
    """
    terms = [t.strip() for t in pattern.split(",") if t.strip()]
    if not terms:
        return list(cases)
    table = _alias_table()
    return [c for c in cases if any(_matches(c, t, table) for t in terms)]


# -- backends and oracles this machine runs ------------------------------------------------


def _have(module: str) -> bool:
    """Whether ``module`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a stubbed module
        return False


def _torch_cuda_reason() -> str | None:
    """Why torch-cuda does not run here (``None`` when it does)."""
    import torch

    if torch.version.cuda is None:
        return "torch built without CUDA"
    if not torch.cuda.is_available():
        return "no GPU"
    return None


def _cupy_reason() -> str | None:
    """Why CuPy does not run here (``None`` when it does)."""
    if not _have("cupy"):
        return "not installed"
    from .backends import _cupy_has_gpu

    return None if _cupy_has_gpu() else "no GPU"


def skipped_backends(with_torchrl: bool = True) -> dict[str, str]:
    """``{backend or oracle: why it is skipped}`` for those this machine does not run,
    in the order the report lists its targets (an empty dict when everything runs)."""
    skipped: dict[str, str] = {}
    if not _have("torch"):
        skipped["torch"] = "not installed"
    else:
        reason = _torch_cuda_reason()
        if reason:
            skipped["torch-cuda"] = reason
    for module in ("array_api_strict", "jax"):
        if not _have(module):
            skipped[module] = "not installed"
    reason = _cupy_reason()
    if reason:
        skipped["cupy"] = reason
    if not with_torchrl:
        skipped["torchrl"] = "--no-torchrl"
    elif not _have("torchrl"):
        skipped["torchrl"] = "not installed"
    return skipped


def describe_skipped(skipped: dict[str, str]) -> str:
    """``"skipped: torch-cuda (no GPU), jax (not installed)"``, or ``"skipped: none"``."""
    if not skipped:
        return "skipped: none"
    return "skipped: " + ", ".join(f"{name} ({why})" for name, why in skipped.items())


def torchrl_label() -> str:
    """``"torchrl 0.14.1"`` (the installed version), for the report's oracle line."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"torchrl {version('torchrl')}"
    except PackageNotFoundError:
        return "torchrl"


def oracle_line(skipped: dict[str, str]) -> str:
    """The report's line naming the oracles that ran (the float64 reference always)."""
    oracles = ["float64 NumPy reference"]
    if "torchrl" not in skipped:
        oracles.append(torchrl_label())
    return "compared with: " + ", ".join(oracles)
