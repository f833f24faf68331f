"""Networks as data: layers, dict-level modules, actors and distributions.

Parameters are plain parameter trees (nested dicts of arrays). Every module computes with
the tree it is given (its own by default), so target networks, ensembles and pure-function
losses need no special machinery.
"""

from ._params import Params, convert_params, flatten_params, map_params, unflatten_params
from .dict_module import DictModule, Module
from .layers import ELU, MLP, Identity, Layer, Linear, NormalParamExtractor, ReLU, Sequential, Tanh

__all__ = [
    "ELU",
    "MLP",
    "DictModule",
    "Identity",
    "Layer",
    "Linear",
    "Module",
    "NormalParamExtractor",
    "Params",
    "ReLU",
    "Sequential",
    "Tanh",
    "convert_params",
    "flatten_params",
    "map_params",
    "unflatten_params",
]
