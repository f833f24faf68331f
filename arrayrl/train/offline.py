"""Offline RL and imitation from a Minari dataset: ``arrayrl train iql``, ``cql``, ``bc``
and ``diffusion-bc``.

The learner never acts while it learns: every gradient step draws a minibatch uniformly
from the dataset's transitions (:func:`~arrayrl.data.minari.load_minari`, TorchRL's key
layout), and every ``eval_every`` gradient steps the deterministic policy (the
``TanhNormal``'s mode, mapped into the action box) plays ``eval_episodes`` episodes of
the dataset's environment. An iteration is one row of the learning curve; its
``frames`` column counts **gradient steps** (an offline run collects no frames) and
``mean_return`` is the mean return of that evaluation.

Networks (arrayrl modules on torch), as SAC's: a ``TanhNormal`` actor over
``MLP(obs, 2·act, [256, 256], relu)``, critics ``MLP(obs + act, 1, [256, 256], relu)``
(two, stacked, with target copies moved by ``SoftUpdate(τ = 0.005)``) and, for IQL, a
state-value ``MLP(obs, 1, [256, 256], relu)``. Adam 3e-4 for every network, batches of
256, γ = 0.99.

- IQL (Kostrikov, Nair & Levine 2021, https://arxiv.org/abs/2110.06169): ``IQLLoss``
  with expectile τ = 0.7 and temperature β = 3 (the paper's locomotion settings); one
  step on ``loss_actor + loss_qvalue + loss_value``.
- CQL (Kumar et al. 2020, https://arxiv.org/abs/2006.04779): ``CQLLoss`` with its
  uniform and policy action proposals drawn in the action spec's box, ``min_q_weight``
  5 (the paper's α for locomotion) and a learned SAC temperature; one step on
  ``loss_actor + loss_qvalue + loss_cql + loss_alpha``, the actor term being
  ``loss_actor_bc`` for the first ``bc_steps`` (2,000) steps.

The imitation learners have no critic, no reward and no target network (``gamma``,
``tau`` and ``critic_lr`` are unused); one Adam step per minibatch on the actor alone:

- BC (behaviour cloning; Pomerleau 1991, Goecks et al. 2020,
  https://arxiv.org/abs/1910.04281): ``BCLoss`` with ``loss_function="l2"`` on a
  deterministic actor, TD3's: ``MLP(obs, act, num_cells, relu)`` through a ``TanhDelta``
  into the action box, so ``loss_bc`` is the mean ``(π_θ(s) − a)²`` of the dataset's
  actions (their conditional mean is what it learns; the evaluated and replayed policy is
  this action).
- Diffusion BC (Ho et al. 2020, https://arxiv.org/abs/2006.11239; Chi et al. 2023,
  https://arxiv.org/abs/2303.04137): ``DiffusionBCLoss`` on a
  :class:`BoxDiffusionActor`, arrayrl's ``DiffusionActor`` (score network
  ``MLP(act + obs + 1, act, num_cells, SiLU)`` reading the step as ``t / T``, linear
  DDPM schedule of ``num_steps`` (50) steps from ``beta_start`` 2e-3 to ``beta_end`` 0.4,
  DDPM's 1000-step schedule rescaled; Adam 1e-3) whose
  chain works on actions scaled into ``[−1, 1]`` (the dataset's actions are scaled
  there, as Chi et al. normalise them) and whose sample is clipped to ``[−1, 1]`` and
  mapped back into the box. Its deterministic policy is the reverse chain started from
  zeros with no noise added (``interaction_type="deterministic"``); exploring draws
  ``a_T ~ N(0, I)`` and the per-step noise.

>>> from arrayrl.train.offline import make_offline_config, train_offline  # doctest: +SKIP
>>> config = make_offline_config("iql", dataset="pendulum/sac-v0")  # doctest: +SKIP
>>> print(train_offline(config).summary())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from arrayrl.backends import backend_of
from arrayrl.modules.diffusion import DiffusionActor
from arrayrl.modules.layers import Layer

from .curve import OFFLINE_PANELS, Panel
from .offpolicy import adam_groups, box_bounds, scalar_terms
from .runner import RunConfig, TrainResult, check_device, config_from, run_training
from .sac import build_q_critic, build_tanh_normal_actor

__all__ = [
    "BCConfig",
    "BoxDiffusionActor",
    "CQLConfig",
    "DiffusionBCConfig",
    "IQLConfig",
    "OfflineConfig",
    "StepScale",
    "build_bc_actor",
    "build_diffusion_actor",
    "check_offline_setup",
    "make_offline_config",
    "train_offline",
]


@dataclasses.dataclass
class OfflineConfig(RunConfig):
    """The settings an offline run shares (IQL and CQL add theirs).

    Parameters
    ----------
    dataset : str
        A Minari dataset id (looked up under ``root``) or a dataset directory.
    env_id : str, optional
        The Gymnasium id the policy is evaluated on; default: the dataset's.
    steps : int
        Gradient steps.
    seed : int
        Seeds the weights, the minibatch draws, the loss's draws and the evaluation.
    backend, device : str
        Where the networks and batches live (``"torch"``: training needs autograd).
    batch_size : int
        Transitions per gradient step.
    gamma, tau : float
        The TD(0) discount and the ``SoftUpdate`` rate of the target critics.
    num_cells : tuple of int
        Hidden widths of every network (ReLU MLPs).
    actor_lr, critic_lr : float
        Adam's learning rates (IQL's value network uses ``critic_lr``).
    eval_every : int
        Gradient steps per iteration (one evaluation, one row of the curve).
    eval_episodes : int
        Episodes of each evaluation (its mean return is logged).
    root : str, optional
        The Minari root for dataset ids (default ``$MINARI_DATASETS_PATH`` or
        ``~/.minari/datasets``).
    out : str, optional
        Output folder; default ``runs/<algorithm>-<env_id>-<seed>``.
    torch_threads, progress, save_every_s
        As in the other trainers.
    """

    dataset: str = ""
    env_id: str | None = None
    steps: int = 20_000
    seed: int = 0
    backend: str = "torch"
    device: str = "cpu"
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    num_cells: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    eval_every: int = 1_000
    eval_episodes: int = 5
    root: str | None = None
    out: str | None = None
    torch_threads: int | None = 1
    progress: bool = True
    save_every_s: float = 30.0

    #: Overridden by each algorithm's config.
    algorithm = "offline"
    #: Whether the loss has target critics moved by ``SoftUpdate(tau)`` after each step.
    soft_targets = True
    #: The evaluation env's copies (the runner makes it), and what ``frames`` counts.
    num_envs = 1
    unit = "gradient steps"

    @property
    def total_frames(self) -> int:
        """What the progress bar counts: gradient steps."""
        return self.steps

    @property
    def return_window(self) -> int:
        """Episodes behind the logged mean return (one evaluation)."""
        return self.eval_episodes

    @property
    def iterations(self) -> int:
        """Logged iterations (the last one may be shorter)."""
        return math.ceil(self.steps / self.eval_every)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if not self.dataset:
            raise ValueError("dataset is required: a Minari dataset id or directory")
        if self.backend != "torch":
            raise ValueError(
                f"backend {self.backend!r} cannot train: {self.algorithm.upper()} needs "
                "gradients; training runs on the torch backend (--backend torch)"
            )
        for name in ("steps", "batch_size", "eval_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        for name in ("actor_lr", "critic_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass
class IQLConfig(OfflineConfig):
    """IQL's settings: :class:`OfflineConfig`'s and ``expectile`` (τ of the value
    regression) and ``temperature`` (β of the advantage weights)."""

    expectile: float = 0.7
    temperature: float = 3.0

    algorithm = "iql"


@dataclasses.dataclass
class CQLConfig(OfflineConfig):
    """CQL's settings: :class:`OfflineConfig`'s and ``min_q_weight`` (α of the
    conservative penalty), ``num_random`` (action proposals per state), ``temperature``
    (of its log-sum-exp), ``alpha_init`` and ``alpha_lr`` (the SAC temperature's start
    and Adam rate) and
    ``bc_steps``: the first gradient steps train the actor on ``loss_actor_bc`` (behaviour
    cloning with the entropy term) instead of ``loss_actor`` (TorchRL's example calls it
    ``policy_eval_start``)."""

    min_q_weight: float = 5.0
    num_random: int = 10
    temperature: float = 1.0
    alpha_init: float = 1.0
    alpha_lr: float = 3e-4
    bc_steps: int = 2_000

    algorithm = "cql"


@dataclasses.dataclass
class BCConfig(OfflineConfig):
    """Behaviour cloning's settings: :class:`OfflineConfig`'s (``gamma``, ``tau`` and
    ``critic_lr`` unused: no critic); the actor is trained by ``actor_lr``."""

    algorithm = "bc"
    soft_targets = False


@dataclasses.dataclass
class DiffusionBCConfig(OfflineConfig):
    """Diffusion behaviour cloning's settings: :class:`OfflineConfig`'s (``gamma``,
    ``tau`` and ``critic_lr`` unused; ``actor_lr`` 1e-3) and the DDPM schedule:
    ``num_steps`` (50: the reverse chain's length, each action costs ``num_steps``
    score-network calls) and the linear ``beta_start`` … ``beta_end`` (2e-3 … 0.4: DDPM's
    1000-step schedule 1e-4 … 0.02 rescaled to 50 steps, so that ``ᾱ_T ≈ 4e-5`` and the
    chain starts from noise the model was trained on; TorchRL's ``DiffusionActor``
    defaults, 100 steps of 1e-4 … 0.02, end at ``ᾱ_T ≈ 0.37``, far from ``N(0, I)``)."""

    num_steps: int = 50
    beta_start: float = 2e-3
    beta_end: float = 0.4
    actor_lr: float = 1e-3

    algorithm = "diffusion-bc"
    soft_targets = False

    def validate(self) -> None:
        super().validate()
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                "the schedule needs 0 < beta_start <= beta_end < 1, got "
                f"beta_start={self.beta_start}, beta_end={self.beta_end}"
            )


_CONFIGS: dict[str, type[OfflineConfig]] = {
    "iql": IQLConfig,
    "cql": CQLConfig,
    "bc": BCConfig,
    "diffusion-bc": DiffusionBCConfig,
}


def make_offline_config(algorithm: str, **overrides: Any) -> OfflineConfig:
    """The settings of ``algorithm`` (``"iql"``, ``"cql"``, ``"bc"`` or
    ``"diffusion-bc"``) with ``overrides``
    (``None`` values ignored); unknown settings raise ``TypeError``."""
    cls = _CONFIGS.get(algorithm)
    if cls is None:
        raise ValueError(
            f"unknown offline algorithm {algorithm!r}; expected one of {list(_CONFIGS)}"
        )
    return config_from(cls, overrides)


def _with_env_id(config: OfflineConfig) -> OfflineConfig:
    """``config`` with ``env_id`` read from the dataset when not given."""
    if config.env_id:
        return config
    from arrayrl.data.minari import dataset_env_id

    env_id = dataset_env_id(config.dataset, root=config.root)
    if env_id is None:
        raise ValueError(
            f"the dataset {config.dataset!r} records no environment; pass env_id= (--env)"
        )
    return dataclasses.replace(config, env_id=env_id)


def check_offline_setup(config: OfflineConfig) -> OfflineConfig:
    """Raise ``ValueError`` naming the first setting that cannot train here (the
    settings, the dataset, its environment, the device); return ``config`` with its
    ``env_id`` resolved."""
    from .rollout import check_env

    config.validate()
    config = _with_env_id(config)
    check_env(config.env_id)
    check_device(config.backend, config.device)
    return config


def load_transitions(config: OfflineConfig) -> Any:
    """The dataset's transitions on the config's backend, floats as float32 (Minari
    keeps float64 rewards; the networks are float32)."""
    from arrayrl.data.minari import load_minari

    data = load_minari(config.dataset, root=config.root)
    as_float32 = {
        key: value.astype(np.float32)
        for key, value in data.items(include_nested=True, leaves_only=True)
        if np.issubdtype(value.dtype, np.floating) and value.dtype != np.float32
    }
    for key, value in as_float32.items():
        data.set(key, value)
    return data.to(config.backend, config.device)


def build_bc_actor(observation_space: Any, action_space: Any, config: OfflineConfig) -> Any:
    """BC's deterministic actor, TD3's (:func:`~arrayrl.train.td3.build_deterministic_actor`):
    ``MLP(obs, act, num_cells, relu)`` through a ``TanhDelta`` into the action box."""
    from .td3 import build_deterministic_actor

    return build_deterministic_actor(observation_space, action_space, config)


class BoxDiffusionActor(DiffusionActor):
    """A :class:`~arrayrl.modules.diffusion.DiffusionActor` acting in the box
    ``[low, high]``: its chain (and the loss) works on actions scaled into ``[−1, 1]``
    (:meth:`to_unit`); the chain's sample ``x`` is clipped to ``[−1, 1]`` and written as
    ``low + (x + 1)(high − low) / 2``.

    Parameters
    ----------
    low, high : array-like of shape ``(action_dim,)``
        The action box (finite, ``low < high``).
    *args, **kwargs
        :class:`DiffusionActor`'s.
    """

    def __init__(self, low: Any, high: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        if low.shape != (self.action_dim,) or high.shape != low.shape:
            raise ValueError(
                f"BoxDiffusionActor: low and high must have shape ({self.action_dim},), got "
                f"{low.shape} and {high.shape}"
            )
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
            raise ValueError(
                f"BoxDiffusionActor: needs a finite box with low < high: {low}, {high}"
            )
        self.low, self.high = low, high

    def _bounds_like(self, x: Any) -> tuple[Any, Any]:
        """``(middle, half-width)`` of the box as arrays of ``x``'s backend and dtype."""
        backend = backend_of(x)
        middle, half = (self.high + self.low) / 2, (self.high - self.low) / 2
        return tuple(backend.xp.astype(backend.from_numpy(b), x.dtype) for b in (middle, half))

    def to_unit(self, action: Any) -> Any:
        """``action`` in the box scaled into ``[−1, 1]``: ``(a − middle) / half-width``."""
        middle, half = self._bounds_like(action)
        return (action - middle) / half

    def forward(
        self, batch: Any, params: Any, *, rng: Any = None, interaction_type: str | None = None
    ) -> Any:
        """:meth:`DiffusionActor.forward`, its sample clipped and mapped into the box."""
        super().forward(batch, params, rng=rng, interaction_type=interaction_type)
        key = self.out_keys[0]
        x = batch.get(key)
        middle, half = self._bounds_like(x)
        batch.set(key, middle + half * backend_of(x).xp.clip(x, -1.0, 1.0))
        return batch


class StepScale(Layer):
    """``cat[a_t, s, t] → cat[a_t, s, t / T]``: the score network reads the diffusion step
    in ``[0, 1)`` instead of ``0 … T−1`` (a raw ``t`` swamps the other inputs of the
    first layer; on the Pendulum data the scaled input took the deterministic policy from
    a return of about −550 to −85 in 4,000 steps)."""

    def __init__(self, num_steps: int) -> None:
        super().__init__()
        self.num_steps = num_steps

    def apply(self, params: Any, x: Any) -> Any:
        xp = backend_of(x).xp
        return xp.concat([x[..., :-1], x[..., -1:] / self.num_steps], axis=-1)


def build_diffusion_actor(
    observation_space: Any, action_space: Any, config: DiffusionBCConfig
) -> BoxDiffusionActor:
    """Diffusion BC's actor: a :class:`BoxDiffusionActor` over the action box, its score
    network ``MLP(act + obs + 1, act, num_cells, SiLU)`` (seed ``config.seed``) reading
    the step as ``t / T`` (:class:`StepScale`), its schedule ``config``'s; it draws from
    its own generator (seed ``config.seed``) unless given one."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import MLP, Sequential, SiLU

    obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
    low, high = box_bounds(action_space)
    mlp = MLP(act_dim + obs_dim + 1, act_dim, list(config.num_cells), activation_class=SiLU,
                  seed=config.seed)  # fmt: skip
    network = Sequential(StepScale(config.num_steps), mlp)
    actor = BoxDiffusionActor(low, high, act_dim, score_network=network,
                              num_steps=config.num_steps, beta_start=config.beta_start,
                              beta_end=config.beta_end, seed=config.seed)  # fmt: skip
    return actor.to(get_backend(config.backend, config.device))


def build_offline_loss(observation_space: Any, action_space: Any, config: OfflineConfig) -> Any:
    """The run's loss over fresh networks: ``IQLLoss`` or ``CQLLoss`` (an actor, two
    critics, IQL's value network; a TD(0) estimator), ``BCLoss`` (MSE of the
    deterministic actor) or ``DiffusionBCLoss`` (the diffusion actor's noise
    prediction)."""
    from arrayrl.backends import get_backend
    from arrayrl.modules import MLP, ValueOperator
    from arrayrl.objectives import ValueEstimators
    from arrayrl.specs import Bounded

    if isinstance(config, BCConfig):
        from arrayrl.objectives import BCLoss

        return BCLoss(build_bc_actor(observation_space, action_space, config), loss_function="l2")
    if isinstance(config, DiffusionBCConfig):
        from arrayrl.objectives.diffusion_bc import DiffusionBCLoss

        actor = build_diffusion_actor(observation_space, action_space, config)
        return DiffusionBCLoss(actor, seed=config.seed + 2)
    backend = get_backend(config.backend, config.device)
    actor = build_tanh_normal_actor(observation_space, action_space, config)
    critic = build_q_critic(observation_space, action_space, config)
    if isinstance(config, IQLConfig):
        from arrayrl.objectives import IQLLoss

        cells = list(config.num_cells)
        network = MLP(observation_space.shape[0], 1, cells, activation_class="relu",
                      seed=config.seed + 3)  # fmt: skip
        value = ValueOperator(network, in_keys=["observation"]).to(backend)
        loss = IQLLoss(actor, critic, value, num_qvalue_nets=2, loss_function="l2",
                       expectile=config.expectile, temperature=config.temperature,
                       seed=config.seed + 2)  # fmt: skip
    else:
        from arrayrl.objectives import CQLLoss

        low, high = box_bounds(action_space)
        loss = CQLLoss(actor, critic, action_spec=Bounded(low, high, shape=low.shape),
                       loss_function="l2", min_q_weight=config.min_q_weight,
                       num_random=config.num_random, temperature=config.temperature,
                       alpha_init=config.alpha_init, seed=config.seed + 2)  # fmt: skip
    loss.make_value_estimator(ValueEstimators.TD0, gamma=config.gamma)
    return loss


class Evaluation:
    """The deterministic policy's episodes on the evaluation env; the runner's
    ``collector`` (``frames``: gradient steps so far; ``mean_return``: of the latest
    evaluation; ``episodes.episodes``: episodes played)."""

    def __init__(self, env: Any, actor: Any, backend: Any, seed: int) -> None:
        self.env, self.actor, self.backend, self.seed = env, actor, backend, seed
        self.frames = 0
        self.mean_return = math.nan
        self.episodes = dataclasses.make_dataclass("Count", [("episodes", int)])(0)

    def run(self, episodes: int) -> float:
        """Play ``episodes`` episodes (reset seeds ``seed, seed + 1, ...`` continuing
        across evaluations); return and remember their mean return."""
        returns = [self._episode(self.seed + self.episodes.episodes + k) for k in range(episodes)]
        self.episodes.episodes += episodes
        self.mean_return = float(np.mean(returns))
        return self.mean_return

    def _episode(self, seed: int) -> float:
        from arrayrl.data import ArrayDict

        observation, _ = self.env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            batch = ArrayDict({"observation": self.backend.from_numpy(
                np.asarray(observation, np.float32))}, [1])  # fmt: skip
            with self.backend.no_grad():
                self.actor(batch, interaction_type="deterministic")
            action = self.backend.to_numpy(batch.get("action"))
            observation, reward, terminated, truncated, _ = self.env.step(action)
            total += float(reward[0])
            done = bool(terminated[0] or truncated[0])
        return total


class OfflineTrainer:
    """The state of an offline run: the dataset, the loss, Adam, the target updater."""

    #: The loss terms summed into each gradient step, by algorithm.
    STEP_TERMS: Mapping[str, tuple[str, ...]] = {
        "iql": ("loss_actor", "loss_qvalue", "loss_value"),
        "cql": ("loss_actor", "loss_qvalue", "loss_cql", "loss_alpha"),
        "bc": ("loss_bc",),
        "diffusion-bc": ("loss_diffusion_bc",),
    }

    def __init__(self, config: OfflineConfig, env: Any) -> None:
        import torch

        from arrayrl.backends import get_backend
        from arrayrl.objectives import SoftUpdate

        self.config = config
        self.backend = get_backend(config.backend, config.device)
        self.loss = build_offline_loss(env.single_observation_space, env.single_action_space,
                                       config)  # fmt: skip
        self.policy = self.loss.actor_network
        self.data = load_transitions(config)
        if isinstance(self.policy, BoxDiffusionActor):  # its chain works in [-1, 1]
            self.data.set("action", self.policy.to_unit(self.data.get("action")))
        rates = {"actor_network": config.actor_lr, "qvalue_network": config.critic_lr,
                 "value_network": config.critic_lr,
                 "log_alpha": getattr(config, "alpha_lr", config.actor_lr)}  # fmt: skip
        self.optimizer = torch.optim.Adam(adam_groups(self.loss, rates))
        self.updater = SoftUpdate(self.loss, tau=config.tau) if config.soft_targets else None
        self.collector = Evaluation(env, self.policy, self.backend, config.seed + 100)
        self.terms = self.STEP_TERMS[config.algorithm]
        self.rng = np.random.default_rng([config.seed, 2025])
        self.steps = 0  # gradient steps taken

    def _actor_term(self) -> str:
        """The actor's loss term of this step: CQL's ``loss_actor_bc`` during its first
        ``bc_steps`` steps, else ``loss_actor``."""
        warm_up = self.steps < getattr(self.config, "bc_steps", 0)
        return "loss_actor_bc" if warm_up else "loss_actor"

    def update(self) -> Any:
        """One Adam step on the sum of :attr:`terms` over a fresh minibatch; a target
        update (IQL, CQL). Returns the terms, detached."""
        import torch

        from arrayrl.data.minari import sample_transitions

        out = self.loss(sample_transitions(self.data, self.config.batch_size, self.rng))
        total = sum(out[self._actor_term() if name == "loss_actor" else name]
                    for name in self.terms)  # fmt: skip
        self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.updater is not None:
            self.updater.step()
        return torch.stack(scalar_terms(out, self.terms))

    def iteration(self, index: int) -> dict[str, float]:
        """``eval_every`` gradient steps (fewer in the last iteration), then one
        evaluation; the mean loss terms and the evaluation's return."""
        import torch

        config = self.config
        steps = min(config.eval_every, config.steps - index * config.eval_every)
        means = torch.stack([self.update() for _ in range(steps)]).mean(dim=0).tolist()
        self.collector.frames += steps
        self.collector.run(config.eval_episodes)
        return dict(zip(self.terms, means))


#: The panels of ``arrayrl train bc`` and ``arrayrl train diffusion-bc``.
IMITATION_PANELS = (
    Panel("evaluation return (deterministic policy)", ("mean_return",)),
    Panel("behaviour-cloning loss (MSE)", ("loss_bc",), low=0.0),
    Panel("diffusion loss (noise-prediction MSE)", ("loss_diffusion_bc",), low=0.0),
    Panel("gradient steps / s", ("fps",), low=0.0),
)


def train_offline(config: OfflineConfig) -> TrainResult:
    """Train ``config.algorithm`` (IQL, CQL, BC or diffusion BC) on ``config.dataset``;
    write the learning curve (CSV and PNG) every ``config.save_every_s`` seconds and at
    the end, and the policy as ``<out>/policy.npz``.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve so far.
    """
    config = _with_env_id(config)
    config.validate()
    panels = OFFLINE_PANELS if config.soft_targets else IMITATION_PANELS
    return run_training(
        config, config.iterations, lambda env: OfflineTrainer(config, env), panels=panels
    )
