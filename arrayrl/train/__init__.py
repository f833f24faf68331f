"""Training loops built on arrayrl's losses: ``arrayrl train ppo`` lives here.

The trainers are torch-specific by design (training needs autograd); importing this
package imports neither torch nor Gymnasium, which load when a run starts.
"""

from .curve import LearningCurve, read_curve
from .ppo import (
    PRESETS,
    PPOConfig,
    TrainingInterrupted,
    TrainResult,
    build_actor_critic,
    build_loss,
    check_setup,
    frames_note,
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
    "TrainingInterrupted",
    "build_actor_critic",
    "build_loss",
    "check_setup",
    "frames_note",
    "make_config",
    "read_curve",
    "train_ppo",
]
