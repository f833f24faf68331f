"""Training loops built on arrayrl's losses: ``arrayrl train ppo`` lives here.

The trainers are torch-specific by design (training needs autograd); importing this
package imports neither torch nor Gymnasium, which load when a run starts.
"""

from .curve import LearningCurve, read_curve
from .ppo import (
    PRESETS,
    PPOConfig,
    TrainResult,
    build_actor_critic,
    build_loss,
    make_config,
    train_ppo,
)
from .progress import ProgressBar

__all__ = [
    "PRESETS",
    "LearningCurve",
    "PPOConfig",
    "ProgressBar",
    "TrainResult",
    "build_actor_critic",
    "build_loss",
    "make_config",
    "read_curve",
    "train_ppo",
]
