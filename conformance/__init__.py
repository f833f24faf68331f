"""Conformance: every estimator on every backend against the float64 reference and TorchRL.

``from arrayrl.conformance import check`` checks your own implementation of an estimator
(:mod:`.check`; the name ``check`` here is the function, not the submodule).
"""

from .check import CONVENTIONS, CaseResult, CheckReport, EstimatorSpec, check

__all__ = ["CONVENTIONS", "CaseResult", "CheckReport", "EstimatorSpec", "check"]
