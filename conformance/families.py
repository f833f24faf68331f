"""The loss families whose conformance cases live in modules of their own.

Each module named in :data:`FAMILY_MODULES` defines ``cases()`` (its
:class:`~.loss_cases.LossCase` subclasses' instances, which run arrayrl through
``case.evaluate_arrayrl(inputs, backend, device, *, generator_mode)`` and TorchRL through
``case.evaluate_torchrl(inputs, dtype)``) and ``DEVIATIONS`` (its recorded
:class:`~.loss_oracle.LossDeviation` s). The runner, the report, ``-k`` and the pytest
entry treat these cases as any other.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: the family modules of this package, in report order
FAMILY_MODULES: tuple[str, ...] = (
    "dqn_cases",
    "cql_cases",
    "iql_cases",
    "td3_bc_cases",
    "mappo_cases",
    "qmixer_cases",
    "dreamer_cases",
    "model_based_cases",
    "dreamer_v3_cases",
    "gail_cases",
    "rnd_cases",
    "decision_transformer_cases",
    "act_cases",
    "diffusion_bc_cases",
)


def family_modules() -> list[ModuleType]:
    """The modules of :data:`FAMILY_MODULES`, imported."""
    return [importlib.import_module(f".{name}", __package__) for name in FAMILY_MODULES]
