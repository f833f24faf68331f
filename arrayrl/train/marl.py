"""Multi-agent training on VMAS: the batched environment, the rollout collector and the
settings that ``arrayrl train mappo``, ``ippo`` and ``qmix`` share.

VMAS (Bettini et al. 2022, https://arxiv.org/abs/2207.03530) simulates ``num_envs``
copies of a scenario as one batch of torch tensors. :class:`VmasVectorEnv` stacks its
per-agent lists into ``[envs, agents, ...]`` tensors, and :class:`MultiAgentCollector`
steps it with a policy and returns ``[envs, T]`` :class:`~arrayrl.data.ArrayDict`
batches in the layout of TorchRL's ``VmasEnv`` and collectors::

    ("agents", "observation")            [N, T, agents, obs]
    ("agents", "action")                 [N, T, agents, act]  (discrete: [N, T, agents])
    ... whatever else the policy writes (("agents", "action_log_prob"), loc, scale, ...)
    ("next", "agents", "observation")    [N, T, agents, obs]
    ("next", "agents", "reward")         [N, T, agents, 1]    one reward per agent
    ("next", "done"), ("next", "terminated"), ("next", "truncated")   [N, T, 1]  team flags

Termination and truncation are kept apart. VMAS reports ``terminated`` when the
scenario says the task is over and ``truncated`` when an episode reaches ``max_steps``
(``terminated_truncated=True``); an estimator then bootstraps a truncated episode from
the value of its true last observation, stored as ``("next", "agents", "observation")``,
and cuts the bootstrap on termination only. (TorchRL 0.14.1's ``VmasEnv`` reports the
``max_steps`` horizon as a termination, which drops that bootstrap.)

Finished environments are reset after the step that finished them (``reset_at`` for each,
or one ``reset`` when all are done), so the next step starts a new episode.

The learning curve's ``mean_return`` is the **mean per-agent episode return**: for each
finished episode, the undiscounted sum of the rewards of each agent averaged over the
agents (what TorchRL's multi-agent tutorial logs as ``episode_reward_mean``), averaged
over the last ``return_window`` episodes. In scenarios with a shared reward (VMAS's
navigation and balance by default) every agent gets the team reward, so this is the team
return.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from arrayrl.data import ArrayDict

from .rollout import EpisodeTracker, StepCollector
from .runner import IterationConfig, check_device

__all__ = [
    "MultiAgentCollector",
    "MultiAgentConfig",
    "VmasVectorEnv",
    "agent_network",
    "check_vmas_setup",
]

#: The keys of an agent's observation and action in a batch (TorchRL's VMAS layout).
OBSERVATION = ("agents", "observation")
ACTION = ("agents", "action")
REWARD = ("agents", "reward")


class VmasVectorEnv:
    """``num_envs`` copies of a VMAS scenario as one batch, with the agents stacked.

    Parameters
    ----------
    scenario : str
        A VMAS scenario name (``"navigation"``, ``"balance"``, ...).
    num_envs : int
        Environments simulated together.
    n_agents : int
        Agents of the scenario (its ``n_agents`` keyword).
    max_steps : int
        Episode length at which VMAS truncates.
    continuous_actions : bool
        Box actions (``[N, agents, act]`` floats) or discrete ones (``[N, agents]``
        indices).
    device : str
        Where VMAS simulates.
    seed : int
        Seeds VMAS's random state (the initial positions).
    **scenario_kwargs
        More keywords of the scenario.

    Attributes
    ----------
    single_observation_space : gymnasium.spaces.Box
        One environment's observations, ``(agents, obs)`` float32.
    single_action_space : gymnasium.spaces.Box
        One environment's actions: ``(agents, act)`` float32 in the action box, or
        ``(agents,)`` int64 in ``[0, num_actions)`` for discrete actions.
    num_actions : int or None
        Actions per agent when they are discrete.
    """

    def __init__(
        self,
        scenario: str,
        num_envs: int,
        *,
        n_agents: int,
        max_steps: int,
        continuous_actions: bool = True,
        device: str = "cpu",
        seed: int = 0,
        **scenario_kwargs: Any,
    ) -> None:
        import vmas

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self._env = vmas.make_env(
            scenario, num_envs=num_envs, device=device, continuous_actions=continuous_actions,
            seed=seed, max_steps=max_steps, terminated_truncated=True, clamp_actions=True,
            n_agents=n_agents, **scenario_kwargs,
        )  # fmt: skip
        self.scenario, self.num_envs, self.max_steps = scenario, num_envs, max_steps
        self.n_agents = self._env.n_agents
        self.continuous_actions = continuous_actions
        self.single_observation_space, self.single_action_space, self.num_actions = _spaces(
            scenario, self._env.observation_space, self._env.action_space
        )
        self.observation_size = self.single_observation_space.shape[-1]

    def reset(self) -> Any:
        """Reset every environment; the observations ``[N, agents, obs]``."""
        return _stack(self._env.reset())

    def step(self, action: Any) -> tuple[Any, Any, Any, Any]:
        """Step every environment with ``action`` (``[N, agents, act]`` or ``[N,
        agents]``); ``(observation [N, agents, obs], reward [N, agents], terminated
        [N], truncated [N])``."""
        obs, rewards, terminated, truncated, _ = self._env.step(list(action.unbind(1)))
        return _stack(obs), _stack(rewards), terminated, truncated

    def reset_done(self, done: np.ndarray, observation: Any) -> Any:
        """Reset the environments where ``done`` (NumPy ``[N]`` bool); ``observation``
        with their rows replaced by the first observations of the new episodes."""
        index = np.flatnonzero(done)
        if index.size == 0:
            return observation
        if index.size == self.num_envs:
            return self.reset()
        for i in index[:-1]:
            self._env.reset_at(int(i), return_observations=False)
        return _stack(self._env.reset_at(int(index[-1])))  # every env's current obs

    def close(self) -> None:
        """Nothing to release (VMAS holds tensors only); the runner calls it."""


def _stack(per_agent: list[Any]) -> Any:
    """VMAS's list of ``[N, ...]`` tensors (one per agent) as ``[N, agents, ...]``."""
    import torch

    return torch.stack(list(per_agent), dim=1)


def _spaces(scenario: str, observations: Any, actions: Any) -> tuple[Any, Any, int | None]:
    """The team spaces of one env from VMAS's per-agent spaces (identical agents only)."""
    from gymnasium import spaces

    obs, act = list(observations), list(actions)
    kinds = {(tuple(o.shape), type(o).__name__) for o in obs}
    if len(kinds) != 1 or type(obs[0]).__name__ != "Box" or len(obs[0].shape) != 1:
        raise ValueError(
            f"VMAS scenario {scenario!r} has per-agent observations {obs}; the multi-agent "
            "trainers need the same 1-D Box for every agent"
        )
    n_agents, size = len(obs), obs[0].shape[0]
    team_obs = spaces.Box(-np.inf, np.inf, (n_agents, size), np.float32)
    if type(act[0]).__name__ == "Discrete":
        sizes = {int(a.n) if type(a).__name__ == "Discrete" else None for a in act}
        if len(sizes) != 1:
            raise ValueError(f"VMAS scenario {scenario!r}: agents with different actions {act}")
        (num_actions,) = sizes
        return team_obs, spaces.Box(0, num_actions - 1, (n_agents,), np.int64), num_actions
    lows = np.stack([np.asarray(a.low, np.float32) for a in act])
    highs = np.stack([np.asarray(a.high, np.float32) for a in act])
    if lows.ndim != 2 or not (np.all(lows == lows[0]) and np.all(highs == highs[0])):
        raise ValueError(f"VMAS scenario {scenario!r}: agents with different actions {act}")
    return team_obs, spaces.Box(lows, highs, lows.shape, np.float32), None


class MultiAgentCollector(StepCollector):
    """Steps a :class:`VmasVectorEnv` with a policy; ``[N, T]`` batches (module docstring).

    Parameters
    ----------
    env : VmasVectorEnv
    act : callable
        ``act(batch)``: writes ``("agents", "action")`` (and whatever it logs, e.g.
        ``("agents", "action_log_prob")``) into the ``[N]`` batch holding
        ``("agents", "observation")``; called without gradients.
    window : int, default 20
        Finished episodes averaged by :attr:`mean_return`.
    """

    def __init__(
        self, env: VmasVectorEnv, act: Callable[[ArrayDict], Any], *, window: int = 20
    ) -> None:
        self.env, self.act = env, act
        self.num_envs = env.num_envs
        self.episodes = EpisodeTracker(self.num_envs, window)
        self.frames = 0
        self._obs = env.reset()

    def _step(self) -> ArrayDict:
        """One step of every env: act, step, record, reset the finished ones."""
        import torch

        record = ArrayDict({"agents": {"observation": self._obs}}, [self.num_envs])
        with torch.no_grad():
            self.act(record)
        obs, reward, terminated, truncated = self.env.step(record.get(ACTION))
        done = terminated | truncated
        done_np = done.cpu().numpy()
        self.episodes.step(reward.mean(dim=1).double().cpu().numpy(), done_np)
        record.set(
            "next",
            ArrayDict({
                "agents": {"observation": obs, "reward": reward.unsqueeze(-1)},
                "done": done.unsqueeze(-1),
                "terminated": terminated.unsqueeze(-1),
                "truncated": truncated.unsqueeze(-1),
            }, [self.num_envs]),
        )  # fmt: skip
        self._obs = self.env.reset_done(done_np, obs)
        return record


# -- settings ---------------------------------------------------------------------------
@dataclasses.dataclass
class MultiAgentConfig(IterationConfig):
    """The settings every multi-agent run shares.

    Parameters
    ----------
    env_id : str
        The VMAS scenario (``"navigation"``, ``"balance"``, ...).
    n_agents : int
        Agents in the scenario.
    max_steps : int
        Episode length (VMAS truncates there).
    frames : int
        Total team frames (environment steps times ``num_envs``), rounded to whole
        iterations of ``num_envs × rollout_steps``.
    seed : int
        Seeds VMAS, the weights, the action draws and the minibatch shuffling.
    backend, device : str
        Where the networks and batches live (only ``"torch"`` trains); VMAS simulates
        on ``device`` too.
    num_envs, rollout_steps : int
        An iteration collects ``num_envs × rollout_steps`` frames.
    depth, num_cells : int
        Hidden layers and their width of every agent network (``MultiAgentMLP``).
    share_params : bool
        One network for all agents (else one per agent).
    return_window : int
        Finished episodes averaged into the logged mean return.
    out : str, optional
        Output folder; default ``runs/<algorithm>-<env_id>-<seed>``.
    torch_threads : int, optional
        ``torch.set_num_threads`` during the run (``None``: unchanged). One thread is as
        fast as two for these networks on a 2-core machine, and several times faster
        when another process is busy (two 2-thread runs side by side took 60 s per MAPPO
        iteration each, two 1-thread runs 10 s).
    progress : bool
        Show the progress bar on stderr.
    save_every_s : float
        Rewrite the curve at the end of the first iteration at least this many seconds
        after the last write (and always at the end).
    """

    env_id: str = "navigation"
    n_agents: int = 3
    max_steps: int = 100
    frames: int = 60_000
    seed: int = 0
    backend: str = "torch"
    device: str = "cpu"
    num_envs: int = 60
    rollout_steps: int = 100
    depth: int = 2
    num_cells: int = 256
    share_params: bool = True
    return_window: int = 60
    out: str | None = None
    torch_threads: int | None = 1
    progress: bool = True
    save_every_s: float = 30.0

    #: Overridden by each algorithm's config.
    algorithm = "marl"
    #: What ``frames`` counts, in summaries.
    unit = "frames"
    #: Continuous (Box) or discrete actions.
    continuous_actions = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.backend != "torch":
            raise ValueError(
                f"backend {self.backend!r} cannot train: {self.algorithm.upper()} needs "
                f"gradients and {self.backend} has no autograd; training runs on the torch "
                "backend (--backend torch)"
            )
        positive = ("n_agents", "max_steps", "frames", "num_envs", "rollout_steps", "depth",
                    "num_cells", "return_window")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name, value in vars(self).items():
            if name.endswith("lr") and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0.0 <= getattr(self, "gamma", 0.0) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")

    def make_env(self) -> VmasVectorEnv:
        """The run's VMAS environments."""
        return VmasVectorEnv(
            self.env_id, self.num_envs, n_agents=self.n_agents, max_steps=self.max_steps,
            continuous_actions=self.continuous_actions, device=self.device, seed=self.seed,
        )  # fmt: skip


def check_vmas_setup(config: MultiAgentConfig) -> None:
    """Raise ``ValueError`` naming the first setting that cannot train here: the
    settings, the scenario (made once with one env: an unknown name, a wrong keyword,
    agents with different spaces) and the device."""
    config.validate()
    check_device(config.backend, config.device)
    try:
        VmasVectorEnv(
            config.env_id, 1, n_agents=config.n_agents, max_steps=config.max_steps,
            continuous_actions=config.continuous_actions, device=config.device, seed=config.seed,
        )  # fmt: skip
    except ValueError:
        raise
    except Exception as error:  # VMAS raises whatever the scenario's code raises
        raise ValueError(f"cannot make VMAS scenario {config.env_id!r}: {error}") from None


# -- networks ---------------------------------------------------------------------------
def agent_network(
    n_inputs: int,
    n_outputs: int,
    config: MultiAgentConfig,
    *,
    centralized: bool,
    seed: int,
) -> Any:
    """A ``MultiAgentMLP`` ``[*B, agents, n_inputs] -> [*B, agents, n_outputs]`` with the
    run's depth, width, parameter sharing and tanh activations, on the run's backend."""
    from arrayrl.backends import get_backend
    from arrayrl.modules.multiagent import MultiAgentMLP

    network = MultiAgentMLP(
        n_inputs, n_outputs, config.n_agents, centralized=centralized,
        share_params=config.share_params, depth=config.depth, num_cells=config.num_cells,
        activation_class="tanh", seed=seed,
    )  # fmt: skip
    return network.to(get_backend(config.backend, config.device))
