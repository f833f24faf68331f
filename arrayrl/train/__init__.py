"""Training loops built on arrayrl's losses: ``arrayrl train ppo``, ``arrayrl train sac``
and ``arrayrl train td3`` live here.

The trainers are torch-specific by design (training needs autograd); importing this
package imports neither torch nor Gymnasium, which load when a run starts.
"""

from .curve import LearningCurve, read_curve
from .offpolicy import OffPolicyConfig, check_offpolicy_setup, offpolicy_frames_note
from .ppo import (
    PRESETS,
    PPOConfig,
    build_actor_critic,
    build_loss,
    check_setup,
    frames_note,
    make_config,
    train_ppo,
)
from .progress import ProgressBar
from .replay import ReplayBuffer
from .runner import TrainingInterrupted, TrainResult, check_device, run_training
from .sac import SACConfig, build_sac_loss, make_sac_config, train_sac
from .td3 import TD3Config, build_td3_loss, make_td3_config, train_td3

__all__ = [
    "PRESETS",
    "LearningCurve",
    "OffPolicyConfig",
    "PPOConfig",
    "ProgressBar",
    "ReplayBuffer",
    "SACConfig",
    "TD3Config",
    "TrainResult",
    "TrainingInterrupted",
    "build_actor_critic",
    "build_loss",
    "build_sac_loss",
    "build_td3_loss",
    "check_device",
    "check_offpolicy_setup",
    "check_setup",
    "frames_note",
    "make_config",
    "make_sac_config",
    "make_td3_config",
    "offpolicy_frames_note",
    "read_curve",
    "run_training",
    "train_ppo",
    "train_sac",
    "train_td3",
]
