"""Training loops built on arrayrl's losses: ``arrayrl train ppo``, ``sac``, ``td3``,
``dqn`` (online), ``iql``, ``cql``, ``bc``, ``diffusion-bc`` (offline, from a Minari
dataset) and ``mappo``, ``ippo``, ``qmix`` (multi-agent, on VMAS) live here.

The trainers are torch-specific by design (training needs autograd); importing this
package imports neither torch nor Gymnasium, which load when a run starts.
"""

from .curve import LearningCurve, read_curve
from .dqn import DQNConfig, build_dqn_loss, check_dqn_setup, make_dqn_config, train_dqn
from .mappo import IPPOConfig, MAPPOConfig, make_ippo_config, make_mappo_config, train_mappo
from .marl import MultiAgentCollector, MultiAgentConfig, VmasVectorEnv
from .offline import (
    BCConfig,
    CQLConfig,
    DiffusionBCConfig,
    IQLConfig,
    OfflineConfig,
    check_offline_setup,
    make_offline_config,
    train_offline,
)
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
from .qmix import QMIXConfig, make_qmix_config, train_qmix
from .replay import ReplayBuffer
from .runner import TrainingInterrupted, TrainResult, check_device, run_training
from .sac import SACConfig, build_sac_loss, check_sac_setup, make_sac_config, train_sac
from .td3 import TD3Config, build_td3_loss, check_td3_setup, make_td3_config, train_td3

__all__ = [
    "PRESETS",
    "BCConfig",
    "CQLConfig",
    "DQNConfig",
    "DiffusionBCConfig",
    "IPPOConfig",
    "IQLConfig",
    "LearningCurve",
    "MAPPOConfig",
    "MultiAgentCollector",
    "MultiAgentConfig",
    "OffPolicyConfig",
    "OfflineConfig",
    "PPOConfig",
    "ProgressBar",
    "QMIXConfig",
    "ReplayBuffer",
    "SACConfig",
    "TD3Config",
    "TrainResult",
    "TrainingInterrupted",
    "VmasVectorEnv",
    "build_actor_critic",
    "build_dqn_loss",
    "build_loss",
    "build_sac_loss",
    "build_td3_loss",
    "check_device",
    "check_dqn_setup",
    "check_offline_setup",
    "check_offpolicy_setup",
    "check_sac_setup",
    "check_setup",
    "check_td3_setup",
    "frames_note",
    "make_config",
    "make_dqn_config",
    "make_ippo_config",
    "make_mappo_config",
    "make_offline_config",
    "make_qmix_config",
    "make_sac_config",
    "make_td3_config",
    "offpolicy_frames_note",
    "read_curve",
    "run_training",
    "train_dqn",
    "train_mappo",
    "train_offline",
    "train_ppo",
    "train_qmix",
    "train_sac",
    "train_td3",
]
