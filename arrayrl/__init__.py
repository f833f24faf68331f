"""arrayrl: TorchRL's loss modules and value estimators on any Array API library.

``import arrayrl`` loads NumPy and array-api-compat only; torch, CuPy, Numba and JAX are
imported on first use by an array of theirs.
"""

__version__ = "0.1.0"
