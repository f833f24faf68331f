"""Networks as data: layers, dict-level modules, actors and distributions.

Parameters are plain parameter trees (nested dicts of arrays). Every module computes with
the tree it is given (its own by default), so target networks, ensembles and pure-function
losses need no special machinery.

The torch adapter (:func:`from_torch`, :class:`TorchLayer`, :class:`TorchDictModule`) is
loaded on first access, so ``import arrayrl.modules`` does not import torch.
"""

from typing import Any

from ._params import Params, convert_params, flatten_params, map_params, unflatten_params
from .actors import (
    Actor,
    DistributionalQValueActor,
    DistributionalQValueModule,
    ProbabilisticActor,
    QValueActor,
    QValueModule,
    ValueOperator,
    as_layer,
)
from .adapt import as_diffusion_actor, as_module, as_running_mean_std, as_value_norm
from .batchrenorm import BatchRenorm1d
from .dict_module import DictModule, Module
from .diffusion import DDPMModule, DDPMSchedule, DiffusionActor
from .ensemble import Ensemble, ensemble_params, stack_params, unstack_params
from .functional import symexp, symlog
from .layers import (
    ELU,
    MLP,
    Identity,
    Layer,
    Linear,
    NormalParamExtractor,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Tanh,
    UnitBox,
)
from .model_based import SymExpTwoHot
from .multiagent import Mixer, MultiAgentMLP, QMixer, VDNMixer
from .running_mean_std import RunningMeanStd
from .value_norm import PercentileValueNorm, PopArtValueNorm, RunningValueNorm, ValueNorm

_TORCH_ADAPTER = ("TorchDictModule", "TorchLayer", "from_torch")

__all__ = [
    "ELU",
    "MLP",
    "Actor",
    "BatchRenorm1d",
    "DDPMModule",
    "DDPMSchedule",
    "DictModule",
    "DiffusionActor",
    "DistributionalQValueActor",
    "DistributionalQValueModule",
    "Ensemble",
    "Identity",
    "Layer",
    "Linear",
    "Mixer",
    "Module",
    "MultiAgentMLP",
    "NormalParamExtractor",
    "Params",
    "PercentileValueNorm",
    "PopArtValueNorm",
    "ProbabilisticActor",
    "QMixer",
    "QValueActor",
    "QValueModule",
    "ReLU",
    "RunningMeanStd",
    "RunningValueNorm",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SymExpTwoHot",
    "Tanh",
    "TorchDictModule",
    "TorchLayer",
    "UnitBox",
    "VDNMixer",
    "ValueNorm",
    "ValueOperator",
    "as_diffusion_actor",
    "as_layer",
    "as_module",
    "as_running_mean_std",
    "as_value_norm",
    "convert_params",
    "ensemble_params",
    "flatten_params",
    "from_torch",
    "map_params",
    "stack_params",
    "symexp",
    "symlog",
    "unflatten_params",
    "unstack_params",
]


def __getattr__(name: str) -> Any:
    """The torch adapter's names, imported (with torch) on first access."""
    if name in _TORCH_ADAPTER:
        from . import torch_adapter

        return getattr(torch_adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
