"""Loss modules (TorchRL 0.14.1's ``torchrl.objectives``) and value estimators
(``arrayrl.objectives.value``).

Importing this package loads NumPy and array-api-compat only; a framework is imported
when an array of its own first reaches a loss.
"""

from .a2c import A2CLoss
from .act import ACTLoss, cvae_kl
from .bc import BCLoss
from .common import AUTO_LOSS_MASK_KEYS, LossModule
from .cql import CQLLoss, DiscreteCQLLoss
from .crossq import CrossQLoss
from .ddpg import DDPGLoss
from .decision_transformer import DTLoss, OnlineDTLoss
from .diffusion_bc import DiffusionBCLoss
from .dqn import DistributionalDQNLoss, DQNLoss, categorical_projection
from .dreamer import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss
from .dreamer_v3 import (
    DreamerV3ActorLoss,
    DreamerV3Loss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
    categorical_kl_balanced,
    categorical_kl_terms,
    symexp,
    symlog,
    two_hot_cross_entropy,
    two_hot_decode,
    two_hot_encode,
)
from .gail import GAILLoss
from .iql import DiscreteIQLLoss, IQLLoss, expectile_loss
from .multiagent import IPPOLoss, MAPPOLoss, QMixerLoss
from .pilco import ExponentialQuadraticCost
from .ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from .redq import REDQLoss
from .reinforce import ReinforceLoss
from .rnd import RNDLoss
from .sac import DiscreteSACLoss, SACLoss
from .td3 import TD3Loss
from .td3_bc import TD3BCLoss
from .tqc import TQCLoss
from .utils import HardUpdate, SoftUpdate, TargetNetUpdater, ValueEstimators, distance_loss
from .world_model_loss import WorldModelLoss

__all__ = [
    "AUTO_LOSS_MASK_KEYS",
    "A2CLoss",
    "ACTLoss",
    "BCLoss",
    "CQLLoss",
    "ClipPPOLoss",
    "CrossQLoss",
    "DDPGLoss",
    "DQNLoss",
    "DTLoss",
    "DiffusionBCLoss",
    "DiscreteCQLLoss",
    "DiscreteIQLLoss",
    "DiscreteSACLoss",
    "DistributionalDQNLoss",
    "DreamerActorLoss",
    "DreamerModelLoss",
    "DreamerV3ActorLoss",
    "DreamerV3Loss",
    "DreamerV3ModelLoss",
    "DreamerV3ValueLoss",
    "DreamerValueLoss",
    "ExponentialQuadraticCost",
    "GAILLoss",
    "HardUpdate",
    "IPPOLoss",
    "IQLLoss",
    "KLPENPPOLoss",
    "LossModule",
    "MAPPOLoss",
    "OnlineDTLoss",
    "PPOLoss",
    "QMixerLoss",
    "REDQLoss",
    "RNDLoss",
    "ReinforceLoss",
    "SACLoss",
    "SoftUpdate",
    "TD3BCLoss",
    "TD3Loss",
    "TQCLoss",
    "TargetNetUpdater",
    "ValueEstimators",
    "WorldModelLoss",
    "categorical_kl_balanced",
    "categorical_kl_terms",
    "categorical_projection",
    "cvae_kl",
    "distance_loss",
    "expectile_loss",
    "symexp",
    "symlog",
    "two_hot_cross_entropy",
    "two_hot_decode",
    "two_hot_encode",
]
