"""Multi-agent losses (TorchRL's ``torchrl.objectives.multiagent``).

- :class:`MAPPOLoss`: PPO with decentralised actors and a centralised critic
  (Yu et al. 2022);
- :class:`IPPOLoss`: the same loss with a per-agent critic (de Witt et al. 2020);
- :class:`QMixerLoss`: DQN on a team value mixed from per-agent values, QMIX
  (Rashid et al. 2018) with :class:`~arrayrl.modules.QMixer` or VDN (Sunehag et al. 2018)
  with :class:`~arrayrl.modules.VDNMixer`.
"""

from .mappo import IPPOLoss, MAPPOLoss
from .qmixer import QMixerLoss

__all__ = ["IPPOLoss", "MAPPOLoss", "QMixerLoss"]
