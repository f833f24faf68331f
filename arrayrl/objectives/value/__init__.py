"""Value estimators: ``functional`` holds the estimator functions, and the classes below
(TorchRL 0.14.1's names and arguments) run them on a batch with a value network.

Importing this package loads NumPy and array-api-compat only; torch, Numba, CuPy and JAX
load when an array of theirs reaches an estimator.
"""

from .advantages import (
    GAE,
    MultiAgentGAE,
    TD0Estimator,
    TD1Estimator,
    TDLambdaEstimator,
    ValueEstimatorBase,
    VTrace,
)

__all__ = [
    "GAE",
    "MultiAgentGAE",
    "TD0Estimator",
    "TD1Estimator",
    "TDLambdaEstimator",
    "VTrace",
    "ValueEstimatorBase",
]
