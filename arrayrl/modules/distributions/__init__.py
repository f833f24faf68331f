"""Probability distributions written once with the Array API, as TorchRL 0.14.1's.

Every distribution has ``batch_shape``, ``event_shape``, ``has_rsample``,
``has_entropy``, ``mode``, ``deterministic_sample`` (and ``mean`` where defined), and
``log_prob(value)``, ``entropy()``, ``sample(sample_shape, rng=...)`` and
``rsample(sample_shape, rng=...)``. Draws always come from an explicit
:class:`arrayrl.random.Generator` on the parameters' backend.

>>> import numpy as np
>>> from arrayrl.random import make_generator
>>> from arrayrl.modules.distributions import TanhNormal
>>> dist = TanhNormal(np.zeros(3), np.ones(3))
>>> dist.sample((2,), rng=make_generator(0)).shape
(2, 3)
"""

from ._base import Distribution
from .composite import CompositeDistribution
from .continuous import Delta, IndependentNormal, Normal, TanhDelta, TanhNormal
from .discrete import Categorical, MaskedCategorical, OneHotCategorical, ReparamGradientStrategy
from .entropy import entropy_estimate
from .kl import kl_divergence

__all__ = [
    "Categorical",
    "CompositeDistribution",
    "Delta",
    "Distribution",
    "IndependentNormal",
    "MaskedCategorical",
    "Normal",
    "OneHotCategorical",
    "ReparamGradientStrategy",
    "TanhDelta",
    "TanhNormal",
    "entropy_estimate",
    "kl_divergence",
]
