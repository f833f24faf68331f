"""PPO on Gymnasium vector environments with arrayrl's ``ClipPPOLoss`` and ``GAE``.

The loop (Schulman et al. 2017; hyper-parameters and tricks as CleanRL's ``ppo.py``, plus
a running reward normalisation and TorchRL's default smooth-L1 critic loss, which made
CartPole-v1 reach a return of 500 within 250k frames on every seed tried):

1. collect ``num_envs × rollout_steps`` frames into an ``[N, T]`` ``ArrayDict``
   (:class:`~arrayrl.train.rollout.RolloutCollector`);
2. compute ``advantage`` and ``value_target`` with GAE, without gradients;
3. ``epochs`` passes of shuffled minibatches: ``ClipPPOLoss``, backward, global
   grad-norm clipping, Adam (learning rate annealed linearly to 0 by default);
4. log one row of the learning curve.

The losses and the estimator are arrayrl's backend-agnostic code; the trainer itself is
torch-specific by design (optimizer, gradient clipping), because training needs
autograd. NumPy evaluates the same losses, but cannot train.

>>> from arrayrl.train import make_config, train_ppo            # doctest: +SKIP
>>> result = train_ppo(make_config("CartPole-v1", frames=20_000))  # doctest: +SKIP
>>> print(result.summary())                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from arrayrl.backends import Backend, get_backend
from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, Linear, NormalParamExtractor, Sequential
from arrayrl.modules.layers import UnitBox
from arrayrl.random import make_generator

from .curve import PANELS
from .rnd import RND_PANELS, RNDBonus, check_rnd_settings
from .rollout import RewardScaler, RolloutCollector, check_env
from .runner import (
    CurveWriter,
    IterationConfig,
    TrainingInterrupted,
    TrainResult,
    check_device,
    config_from,
    frames_note,
    run_training,
    torch_threads,
)

__all__ = [
    "PRESETS",
    "PPOConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_actor_critic",
    "build_loss",
    "check_device",
    "check_setup",
    "frames_note",
    "make_config",
    "train_ppo",
]

#: Diagnostics of ``ClipPPOLoss`` averaged over an iteration's minibatches and logged.
LOGGED_TERMS = (
    "loss_objective",
    "loss_critic",
    "loss_entropy",
    "entropy",
    "kl_approx",
    "clip_fraction",
    "explained_variance",
)

#: The default intrinsic-reward scale ``β`` of ``--rnd`` (:mod:`arrayrl.train.rnd`), with
#: ``rnd_lr = 1e-4`` (the paper's): the best of β ∈ {1, 10} measured on MountainCar
#: (module docstring of :mod:`arrayrl.train.rnd`).
RND_COEFF = 1.0


@dataclasses.dataclass
class PPOConfig(IterationConfig):
    """Every setting of a PPO run. :func:`make_config` fills in per-environment presets.

    Parameters
    ----------
    env_id : str
        Gymnasium id; discrete action spaces get a categorical policy, boxes a TanhNormal
        policy scaled to the action bounds.
    frames : int
        Total environment frames (rounded down to whole iterations, at least one).
    seed : int
        Seeds the environments, the weights, the action sampling and the shuffling.
    backend, device : str
        Where the networks and batches live. Only ``"torch"`` trains (autograd).
    num_envs, rollout_steps : int
        An iteration collects ``num_envs × rollout_steps`` frames.
    minibatches, epochs : int
        Each iteration makes ``epochs`` passes of ``minibatches`` shuffled minibatches.
    lr, anneal_lr : float, bool
        Adam's learning rate, annealed linearly to 0 over the run when ``anneal_lr``.
    gamma, lmbda : float
        GAE's discount and λ.
    clip_epsilon, entropy_coeff, critic_coeff, loss_critic_type, clip_value
        ``ClipPPOLoss`` arguments (``clip_value=True`` clips the value step with ε).
    normalize_advantage : bool
        Standardise the advantage over each minibatch.
    max_grad_norm : float
        Global gradient-norm clip of all parameters together.
    num_cells : tuple of int
        Hidden widths of both MLPs (tanh activations, orthogonal initialisation).
    normalize_rewards : bool
        Divide rewards by the running std of the discounted return.
    return_window : int
        Finished episodes averaged into the logged mean return.
    out : str, optional
        Output folder; default ``runs/ppo-<env_id>-<seed>``.
    torch_threads : int, optional
        ``torch.set_num_threads`` during the run, restored after (``None``: unchanged).
        One thread is the fastest for 64-wide networks, and by far the fastest on a busy
        small CPU, where several threads contend.
    progress : bool
        Show the progress bar on stderr.
    save_every_s : float
        Rewrite the learning curve (CSV and PNG) at the end of the first iteration that
        is at least this many seconds after the last write (and always at the end).
    scale_observations : bool
        Map a ``Box`` observation with finite bounds onto ``[−1, 1]`` by a fixed first
        layer of both networks (:class:`~arrayrl.modules.layers.UnitBox`). It is part of
        the policy, so a checkpoint replays it. MountainCar's preset sets it: its
        velocity (``|v| ≤ 0.07``) is otherwise too small an input to learn from.
    rnd : bool
        Add Random Network Distillation's intrinsic bonus to the rewards
        (:mod:`arrayrl.train.rnd`: Burda et al. 2018); the logged return stays the
        environment's.
    rnd_coeff : float
        ``β``: the rewards are ``r_ext + β·r_int``, with ``r_int`` the prediction error
        divided by its running deviation (TorchRL's ``RNDTransform``), ``>= 0``.
    rnd_features, rnd_num_cells : int, tuple of int
        The embedding size and the hidden widths of the target and predictor ReLU MLPs.
    rnd_lr : float
        The learning rate of the predictor's own Adam (one step per PPO minibatch).
    rnd_update_fraction : float
        The fraction of each minibatch the predictor trains on (``RNDLoss``'s
        ``update_fraction``; the paper's 25 %).
    rnd_obs_clip, rnd_reward_clip : float
        The normalised observations and intrinsic rewards are clipped to ``±`` these.
    """

    env_id: str = "CartPole-v1"
    frames: int = 250_000
    seed: int = 0
    backend: str = "torch"
    device: str = "cpu"
    num_envs: int = 8
    rollout_steps: int = 128
    minibatches: int = 4
    epochs: int = 4
    lr: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    lmbda: float = 0.95
    clip_epsilon: float = 0.2
    entropy_coeff: float = 0.01
    critic_coeff: float = 0.5
    loss_critic_type: str = "smooth_l1"
    clip_value: bool = False
    normalize_advantage: bool = True
    max_grad_norm: float = 0.5
    num_cells: tuple[int, ...] = (64, 64)
    normalize_rewards: bool = True
    return_window: int = 20
    out: str | None = None
    torch_threads: int | None = 1
    progress: bool = True
    save_every_s: float = 30.0
    scale_observations: bool = False
    rnd: bool = False
    rnd_coeff: float = RND_COEFF
    rnd_features: int = 64
    rnd_num_cells: tuple[int, ...] = (64, 64)
    rnd_lr: float = 1e-4
    rnd_update_fraction: float = 0.25
    rnd_obs_clip: float = 5.0
    rnd_reward_clip: float = 5.0

    #: The algorithm's name in summaries, titles and the default output folder.
    algorithm = "ppo"

    @property
    def minibatch_size(self) -> int:
        """Samples per minibatch."""
        return self.frames_per_batch // self.minibatches

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.backend != "torch":
            what = "PPO and its RND predictor need" if self.rnd else "PPO needs"
            raise ValueError(
                f"backend {self.backend!r} cannot train: {what} gradients and "
                f"{self.backend} has no autograd. arrayrl evaluates the same losses on "
                "NumPy (loss values, advantages, logging), but training runs on the "
                "torch backend (--backend torch)"
            )
        positive = ("frames", "num_envs", "rollout_steps", "minibatches", "epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.frames_per_batch % self.minibatches:
            raise ValueError(
                f"minibatches={self.minibatches} must divide num_envs * rollout_steps = "
                f"{self.frames_per_batch}"
            )
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError(
                f"lr and max_grad_norm must be > 0, got {self.lr}, {self.max_grad_norm}"
            )
        check_rnd_settings(self)


#: Per-environment settings layered over :class:`PPOConfig`'s defaults (CartPole's).
#: Pendulum's follow rl-baselines3-zoo's PPO (γ = 0.9, lr 1e-3, 10 epochs, no entropy
#: bonus) with minibatches of 64; its return goes from about -1150 to about -200.
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {},
    "Pendulum-v1": {
        "frames": 100_000,
        "rollout_steps": 256,
        "minibatches": 32,
        "epochs": 10,
        "lr": 1e-3,
        "gamma": 0.9,
        "entropy_coeff": 0.0,
    },
    # sparse: −1 per step until the flag (the episode ends at 200 steps without it);
    # plain PPO rarely reaches the flag, `--rnd` explores there (README)
    "MountainCar-v0": {"frames": 300_000, "scale_observations": True},
}


def check_setup(config: PPOConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here: the
    settings themselves, the environment id and its spaces, the device."""
    config.validate()
    check_env(config.env_id)
    check_device(config.backend, config.device)


def make_config(env_id: str = "CartPole-v1", **overrides: Any) -> PPOConfig:
    """The preset for ``env_id`` (plain defaults for an unknown id) with ``overrides``.

    ``None`` values in ``overrides`` are ignored, so unset command-line options keep the
    preset's value.
    """
    return config_from(PPOConfig, overrides, **PRESETS.get(env_id, {}), env_id=env_id)


# -- networks --------------------------------------------------------------------------
def _orthogonal(rows: int, cols: int, gain: float, rng: np.random.Generator) -> np.ndarray:
    """A ``rows × cols`` matrix with orthonormal rows or columns, times ``gain``."""
    draw = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(draw)
    q = q * np.sign(np.diag(r))
    return gain * (q if rows >= cols else q.T)


def orthogonal_mlp(
    in_features: int, out_features: int, num_cells: tuple[int, ...], last_gain: float, seed: int
) -> MLP:
    """A tanh MLP (NumPy, float32) with orthogonal weights and zero biases.

    Hidden layers get gain √2 and the last layer ``last_gain`` (0.01 for a policy head,
    1 for a value head): the initialisation of CleanRL's PPO, which keeps the first
    policy close to uniform.
    """
    mlp = MLP(in_features, out_features, list(num_cells), seed=seed, backend="numpy")
    rng = np.random.default_rng([seed, 12345])
    linears = [layer for layer in mlp.layers if isinstance(layer, Linear)]
    for k, layer in enumerate(linears):
        gain = last_gain if k == len(linears) - 1 else math.sqrt(2.0)
        weight = _orthogonal(layer.out_features, layer.in_features, gain, rng)
        layer.params = {
            "weight": weight.astype(np.float32),
            "bias": np.zeros(layer.out_features, np.float32),
        }
    return mlp


def _distribution(action_space: Any, backend: Backend) -> tuple[type, list[str], dict, int]:
    """``(distribution class, its in_keys, its kwargs, network outputs)`` for a space."""
    from gymnasium import spaces

    from arrayrl.modules.distributions import Categorical, TanhNormal

    if isinstance(action_space, spaces.Discrete):
        return Categorical, ["logits"], {}, int(action_space.n)
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        low, high = (np.asarray(b, np.float32) for b in (action_space.low, action_space.high))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError(f"a TanhNormal policy needs finite action bounds, got {action_space}")
        bounds = {
            "low": float(low[0]) if np.all(low == low[0]) else backend.from_numpy(low),
            "high": float(high[0]) if np.all(high == high[0]) else backend.from_numpy(high),
        }
        return TanhNormal, ["loc", "scale"], bounds, 2 * action_space.shape[0]
    raise ValueError(f"unsupported action space {action_space}: Discrete or a 1-D Box")


def _unit_box(observation_space: Any) -> UnitBox:
    """The fixed layer mapping a 1-D ``Box`` observation space onto ``[−1, 1]``;
    ``ValueError`` for any other space (``scale_observations`` needs finite bounds)."""
    from gymnasium import spaces

    box = isinstance(observation_space, spaces.Box) and len(observation_space.shape) == 1
    if not box or not (np.isfinite(observation_space.low).all()
                       and np.isfinite(observation_space.high).all()):  # fmt: skip
        raise ValueError(
            "scale_observations needs a 1-D Box observation space with finite bounds, got "
            f"{observation_space}"
        )
    return UnitBox(observation_space.low, observation_space.high)


def build_actor_critic(
    observation_space: Any, action_space: Any, config: PPOConfig, rng: Any = None
) -> tuple[Any, Any]:
    """The policy (``ProbabilisticActor``) and the critic (``ValueOperator``) of a run.

    Parameters
    ----------
    observation_space, action_space : gymnasium.spaces.Space
        A single environment's spaces (1-D observations).
    config : PPOConfig
        ``num_cells``, ``seed``, ``backend`` and ``device`` are used.
    rng : arrayrl.random.Generator, optional
        The actor's sampling generator.
    """
    from arrayrl.modules.actors import ProbabilisticActor, ValueOperator

    backend = get_backend(config.backend, config.device)
    obs_dim = int(np.prod(observation_space.shape))
    dist_class, dist_keys, dist_kwargs, outputs = _distribution(action_space, backend)
    policy_net: Any = orthogonal_mlp(obs_dim, outputs, config.num_cells, 0.01, config.seed)
    if dist_keys == ["loc", "scale"]:
        policy_net = Sequential(policy_net, NormalParamExtractor())
    if config.scale_observations:
        policy_net = Sequential(_unit_box(observation_space), policy_net)
    actor = ProbabilisticActor(
        DictModule(policy_net, in_keys=["observation"], out_keys=dist_keys),
        in_keys=dist_keys,
        distribution_class=dist_class,
        distribution_kwargs=dist_kwargs,
        return_log_prob=True,
        rng=rng,
    ).to(backend)
    value_net = orthogonal_mlp(obs_dim, 1, config.num_cells, 1.0, config.seed + 1)
    if config.scale_observations:
        value_net = Sequential(_unit_box(observation_space), value_net)
    critic = ValueOperator(value_net, in_keys=["observation"]).to(backend)
    return actor, critic


def build_loss(actor: Any, critic: Any, config: PPOConfig) -> Any:
    """``ClipPPOLoss`` with a GAE value estimator, configured from ``config``."""
    from arrayrl.objectives import ClipPPOLoss, ValueEstimators

    loss = ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=config.clip_epsilon,
        entropy_coeff=config.entropy_coeff,
        critic_coeff=config.critic_coeff,
        loss_critic_type=config.loss_critic_type,
        normalize_advantage=config.normalize_advantage,
        clip_value=config.clip_value or None,
        seed=config.seed,
    )
    loss.make_value_estimator(ValueEstimators.GAE, gamma=config.gamma, lmbda=config.lmbda)
    return loss


# -- the update --------------------------------------------------------------------------
def _total_loss(terms: Mapping[str, Any]) -> Any:
    """The sum of the ``loss_*`` terms (what is differentiated)."""
    return sum(value for name, value in terms.items() if name.startswith("loss_"))


def _update(
    loss: Any,
    optimizer: Any,
    batch: ArrayDict,
    config: PPOConfig,
    rng: Any,
    on_minibatch: Callable[[ArrayDict], Any] | None = None,
) -> dict:
    """``epochs`` passes of shuffled minibatches over ``batch`` (flat); mean diagnostics.
    ``on_minibatch(minibatch)`` runs after each PPO step (the RND predictor's step)."""
    import torch

    params = list(loss.parameters())
    size, logged = config.minibatch_size, []
    for _ in range(config.epochs):
        order = rng.permutation(batch.batch_size[0])
        for start in range(0, size * config.minibatches, size):
            minibatch = batch[order[start : start + size]]
            terms = loss(minibatch)
            optimizer.zero_grad(set_to_none=True)
            _total_loss(terms).backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            if on_minibatch is not None:
                on_minibatch(minibatch)
            logged.append(torch.stack([_scalar(terms, name) for name in LOGGED_TERMS]))
    means = torch.stack(logged).mean(dim=0).tolist()  # one host sync per iteration
    return dict(zip(LOGGED_TERMS, means))


def _scalar(terms: Mapping[str, Any], name: str) -> Any:
    """Term ``name`` as a detached scalar (``nan`` when the loss did not return it)."""
    import torch

    value = terms.get(name, None)
    if value is None:
        return torch.tensor(math.nan)
    return value.detach().float().mean().cpu()


def _advantages(loss: Any, batch: ArrayDict, backend: Backend) -> ArrayDict:
    """``batch`` with ``advantage`` and ``value_target`` from GAE, without gradients."""
    with backend.no_grad():
        result = loss.value_estimator(batch)
    return batch if result is None else result


def _setup(config: PPOConfig, env: Any) -> tuple[Any, Any, RolloutCollector, Any]:
    """The loss (with actor, critic and GAE), Adam, the collector and the shuffling RNG."""
    import torch

    backend = get_backend(config.backend, config.device)
    sample_rng = make_generator(config.seed, backend)
    actor, critic = build_actor_critic(
        env.single_observation_space, env.single_action_space, config, sample_rng
    )
    loss = build_loss(actor, critic, config)
    optimizer = torch.optim.Adam(list(loss.parameters()), lr=config.lr, eps=1e-5)
    scaler = RewardScaler(config.num_envs, config.gamma) if config.normalize_rewards else None
    collector = RolloutCollector(
        env, actor, backend, sample_rng, config.seed,
        reward_scaler=scaler, window=config.return_window,
    )  # fmt: skip
    return loss, optimizer, collector, sample_rng.spawn()


def train_ppo(config: PPOConfig | None = None) -> TrainResult:
    """Train a PPO agent as ``config`` says; write the learning curve (CSV and PNG)
    every ``config.save_every_s`` seconds and at the end.

    Parameters
    ----------
    config : PPOConfig, optional
        Default: ``make_config("CartPole-v1")``.

    Returns
    -------
    TrainResult
        The final mean return, frames, wall time, the curve and the paths written.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far; its ``result``
        is the run so far.
    """
    config = make_config() if config is None else config
    config.validate()
    panels = RND_PANELS if config.rnd else PANELS
    return run_training(config, config.iterations, lambda env: _PPOTrainer(config, env), panels)


class _PPOTrainer:
    """The state of a PPO run for :func:`~arrayrl.train.runner.run_training`."""

    def __init__(self, config: PPOConfig, env: Any) -> None:
        self.config = config
        self.loss, self.optimizer, self.collector, self.shuffle_rng = _setup(config, env)
        self.policy = self.loss.actor_network  # saved to <out>/policy.npz by the runner
        self.rnd: RNDBonus | None = None
        if config.rnd:
            obs_dim = int(np.prod(env.single_observation_space.shape))
            self.rnd = RNDBonus(obs_dim, config, self.collector.backend)

    def iteration(self, index: int) -> dict[str, float]:
        """One iteration; its mean diagnostics and learning rate (and RND's columns)."""
        lr, terms = _iteration(
            index, self.config, self.loss, self.optimizer, self.collector, self.shuffle_rng,
            self.rnd,
        )  # fmt: skip
        if self.rnd is not None:
            terms = {**terms, **self.rnd.logged()}
        return {**terms, "lr": lr}


def _iteration(
    iteration: int,
    config: PPOConfig,
    loss: Any,
    optimizer: Any,
    collector: RolloutCollector,
    shuffle_rng: Any,
    rnd: RNDBonus | None = None,
) -> tuple[float, dict[str, float]]:
    """One iteration: set the learning rate, collect, (add RND's bonus,) GAE, update
    (and train RND's predictor on the same minibatches). Returns the learning rate and
    the mean diagnostics of the update."""
    lr = config.lr * (1.0 - iteration / config.iterations if config.anneal_lr else 1.0)
    for group in optimizer.param_groups:
        group["lr"] = lr
    batch = collector.collect(config.rollout_steps)
    if rnd is not None:
        batch = rnd.add_bonus(batch)
    batch = _advantages(loss, batch, collector.backend)
    if rnd is None:
        return lr, _update(loss, optimizer, batch.reshape(-1), config, shuffle_rng)
    flat = batch.reshape(-1)
    return lr, _update(loss, optimizer, flat, config, shuffle_rng, on_minibatch=rnd.train_step)


#: The names these helpers had when they lived here.
_CurveWriter = CurveWriter
_torch_threads = torch_threads
