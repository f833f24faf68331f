"""Conformance: every estimator on every backend against the float64 reference and TorchRL.

``from arrayrl.conformance import check`` checks your own implementation of an estimator
or of a loss term (:data:`TERMS`: PPO's clipped surrogate, Q-learning, double Q, C51, SAC)
(:mod:`.check`; the name ``check`` here is the function, not the submodule).
"""

from .check import CONVENTIONS, CaseResult, CheckReport, EstimatorSpec, check
from .terms import TERMS, TermSpec

__all__ = [
    "CONVENTIONS",
    "TERMS",
    "CaseResult",
    "CheckReport",
    "EstimatorSpec",
    "TermSpec",
    "check",
]
