r"""Random Network Distillation as an intrinsic bonus for PPO: ``arrayrl train ppo --rnd``.

Burda et al. 2018, "Exploration by Random Network Distillation",
https://arxiv.org/abs/1810.12894. A fixed random *target* MLP :math:`f` embeds the
normalised next observation :math:`\tilde s'`; a *predictor* MLP :math:`\hat f_\theta`
learns to reproduce it. The prediction error :math:`e_\theta(s')` (arrayrl's
:class:`~arrayrl.objectives.rnd.RNDLoss`) is large on states unlike those trained on,
so it rewards visiting new states. Each PPO iteration, with :class:`RNDBonus`:

1. the rollout's next observations are folded into the running observation statistics
   (``obs_rms``, a :class:`~arrayrl.modules.running_mean_std.RunningMeanStd`), which
   normalise and clip (``±rnd_obs_clip``) the networks' input, as TorchRL's
   ``RNDTransform`` does before it computes the reward;
2. the intrinsic reward of every step is TorchRL's ``RNDTransform`` reward:
   the running scalar statistics ``reward_rms`` fold in the rollout's errors, then

   .. math::

       r^{\text{int}} = \operatorname{clip}\bigl(e_\theta(s') / \sigma_e,
           -c_r, c_r\bigr), \qquad
       r = r^{\text{ext}} + \beta\, r^{\text{int}},

   (scaled by the running deviation, not centred; :math:`\beta` is ``rnd_coeff``,
   :math:`c_r` ``rnd_reward_clip``) and the sum :math:`r` is what GAE and the critic
   see. :math:`r^{\text{ext}}` is the environment's reward after the run's own reward
   scaling (``normalize_rewards``). One critic learns the value of the sum, and the
   intrinsic reward is episodic (an episode's end cuts it, as it cuts the extrinsic
   one): the paper's two value heads with a non-episodic intrinsic return are not
   implemented;
3. the predictor is trained on the PPO minibatches, each PPO step followed by one step
   of the predictor's **own** Adam (``rnd_lr``) on ``loss_predictor``, which keeps each
   sample with probability ``rnd_update_fraction`` (the paper's 25 %) from the loss's
   own generator. A separate optimizer keeps the predictor out of the policy's gradient
   clipping and learning-rate annealing.

The learning curve's ``mean_return`` stays the **extrinsic** return (the episode
tracker sums the environment's rewards); RND adds the columns ``intrinsic_reward``
(the mean :math:`r^{\text{int}}` of the rollout, before :math:`\beta`), ``rnd_error``
(the mean raw :math:`e_\theta`) and ``loss_predictor`` (its mean over the iteration's
minibatches), drawn by :data:`RND_PANELS`.

Measured on MountainCar-v0 (``examples/plot_rnd_curves.py``, 299k frames, seeds 0-2,
the defaults ``rnd_coeff=1``, ``rnd_lr=1e-4``): neither plain PPO nor PPO with RND
reaches the flag (return -200 throughout; also with ``rnd_coeff=10`` or
``rnd_lr=1e-3``, and with ``gamma=0.999``), because the policy reads raw observations
and MountainCar's velocity (at most 0.07) is too small an input to learn from in that
budget. With observations mapped to [-1, 1] (``MountainCarScaled-v0`` in the example)
RND first reaches the flag after 26-34k frames instead of 82-110k and ends at a mean
return of -143.0 against -163.1 (mean of the three seeds). ``rnd_coeff=10`` reached
the flag as early but ended at -198 (seeds 0, 1): a large episodic bonus makes ending
the episode at the flag costly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from arrayrl.backends import Backend
from arrayrl.data import ArrayDict
from arrayrl.modules import MLP
from arrayrl.modules.running_mean_std import RunningMeanStd

from .curve import PANELS, Panel

__all__ = ["RND_COLUMNS", "RND_PANELS", "RNDBonus", "build_rnd_loss", "check_rnd_settings"]

#: The learning-curve columns an RND run adds.
RND_COLUMNS = ("intrinsic_reward", "rnd_error", "loss_predictor")

#: PPO's panels with RND's: the intrinsic reward and the predictor's loss.
RND_PANELS = (
    *PANELS[:-1],
    Panel("RND intrinsic reward (normalised, before rnd_coeff)", ("intrinsic_reward",)),
    Panel("RND predictor loss (prediction error, trained samples)", ("loss_predictor",), low=0.0),
    PANELS[-1],
)

_REWARD = ("next", "reward")
_NEXT_OBSERVATION = ("next", "observation")


def check_rnd_settings(config: Any) -> None:
    """Raise ``ValueError`` naming the first ``rnd_*`` setting of ``config`` that cannot
    work (checked whether or not ``config.rnd`` is set, so a bad value never waits)."""
    finite = {
        "rnd_coeff": (config.rnd_coeff, 0.0, False),
        "rnd_lr": (config.rnd_lr, 0.0, True),
        "rnd_obs_clip": (config.rnd_obs_clip, 0.0, True),
        "rnd_reward_clip": (config.rnd_reward_clip, 0.0, True),
    }
    for name, (value, low, strict) in finite.items():
        bad = not math.isfinite(value) or value < low or (strict and value == low)
        if bad:
            bound = "> 0" if strict else ">= 0"
            raise ValueError(f"{name} must be finite and {bound}, got {value}")
    if not 0.0 < config.rnd_update_fraction <= 1.0:
        raise ValueError(f"rnd_update_fraction must be in (0, 1], got {config.rnd_update_fraction}")
    if config.rnd_features < 1 or any(width < 1 for width in config.rnd_num_cells):
        raise ValueError(
            f"rnd_features and rnd_num_cells must be >= 1, got {config.rnd_features} and "
            f"{config.rnd_num_cells}"
        )


def build_rnd_loss(obs_dim: int, config: Any, backend: Backend) -> Any:
    """The ``RNDLoss`` of a run: predictor and target ReLU MLPs ``obs_dim → rnd_features``
    (hidden widths ``rnd_num_cells``, seeds ``seed + 2`` and ``seed + 3``: the actor and
    the critic use ``seed`` and ``seed + 1``) and observation statistics of shape
    ``(obs_dim,)``."""
    from arrayrl.objectives.rnd import RNDLoss

    def mlp(seed: int) -> MLP:
        net = MLP(
            obs_dim, config.rnd_features, list(config.rnd_num_cells),
            activation_class="relu", seed=seed, backend="numpy",
        )  # fmt: skip
        return net.to(backend)

    return RNDLoss(
        mlp(config.seed + 2),
        mlp(config.seed + 3),
        obs_rms=RunningMeanStd((obs_dim,)),
        obs_clip=config.rnd_obs_clip,
        update_fraction=config.rnd_update_fraction,
        seed=config.seed,
    )


class RNDBonus:
    """The RND state of a PPO run: the loss (networks and observation statistics), the
    intrinsic reward's statistics and the predictor's optimizer (module docstring).

    Parameters
    ----------
    obs_dim : int
        The size of a (flat) observation.
    config : PPOConfig
        ``rnd_*``, ``seed``.
    backend : Backend
        Where the networks and batches live (torch: the predictor trains).
    """

    def __init__(self, obs_dim: int, config: Any, backend: Backend) -> None:
        import torch

        self.config = config
        self.loss = build_rnd_loss(obs_dim, config, backend)
        self.reward_rms = RunningMeanStd(())
        self.optimizer = torch.optim.Adam(list(self.loss.parameters()), lr=config.rnd_lr)
        self._intrinsic = self._error = math.nan
        self._losses: list[Any] = []

    @property
    def obs_rms(self) -> RunningMeanStd:
        """The running observation statistics the networks' input is normalised with."""
        return self.loss.obs_rms

    def add_bonus(self, batch: ArrayDict) -> ArrayDict:
        """``batch`` (a rollout ``[N, T]``) with ``("next", "reward")`` replaced by
        ``r_ext + rnd_coeff · r_int`` (steps 1 and 2 of the module docstring); the
        statistics are updated, ``batch`` itself is left as it is."""
        next_obs = batch.get(_NEXT_OBSERVATION)
        self.obs_rms.update(next_obs)
        error = self.loss.intrinsic_reward(batch)
        intrinsic = self.loss.intrinsic_reward(
            batch, reward_rms=self.reward_rms, reward_clip=self.config.rnd_reward_clip
        )
        self._error, self._intrinsic = _mean(error), _mean(intrinsic)
        reward = batch.get(_REWARD)
        mixed = reward + self.config.rnd_coeff * intrinsic
        return batch.clone(recurse=False).set(_REWARD, mixed)

    def train_step(self, minibatch: ArrayDict) -> None:
        """One Adam step of the predictor on ``loss_predictor`` of ``minibatch``."""
        loss = self.loss(minibatch)["loss_predictor"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._losses.append(loss.detach())

    def logged(self) -> dict[str, float]:
        """The iteration's :data:`RND_COLUMNS` (and a fresh start for the next one)."""
        import torch

        losses = torch.stack(self._losses).mean().item() if self._losses else math.nan
        self._losses = []
        return {
            "intrinsic_reward": self._intrinsic,
            "rnd_error": self._error,
            "loss_predictor": losses,
        }


def _mean(x: Any) -> float:
    """The mean of a torch or NumPy array as a Python float."""
    if hasattr(x, "detach"):
        return float(x.detach().float().mean().cpu())
    return float(np.mean(x))
