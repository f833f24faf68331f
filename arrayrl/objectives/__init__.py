"""Loss modules (TorchRL 0.14.1's ``torchrl.objectives``) and value estimators
(``arrayrl.objectives.value``).

Importing this package loads NumPy and array-api-compat only; a framework is imported
when an array of its own first reaches a loss.
"""

from .a2c import A2CLoss
from .common import AUTO_LOSS_MASK_KEYS, LossModule
from .ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from .reinforce import ReinforceLoss
from .utils import HardUpdate, SoftUpdate, TargetNetUpdater, ValueEstimators, distance_loss

__all__ = [
    "AUTO_LOSS_MASK_KEYS",
    "A2CLoss",
    "ClipPPOLoss",
    "HardUpdate",
    "KLPENPPOLoss",
    "LossModule",
    "PPOLoss",
    "ReinforceLoss",
    "SoftUpdate",
    "TargetNetUpdater",
    "ValueEstimators",
    "distance_loss",
]
