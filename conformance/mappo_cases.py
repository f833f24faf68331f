"""Conformance cases of ``MAPPOLoss`` and ``IPPOLoss``, and where TorchRL 0.14.1 differs.

A :class:`MultiAgentPPOCase` names the loss, the actor's distribution (``"tanh_normal"``,
TorchRL's tutorial; ``"normal"``, an ``IndependentNormal``), whether the
``MultiAgentMLP`` s share their parameters or hold one network per agent, whether the
reward, ``done`` and ``terminated`` are the team's (``("next", "reward")``, ``[B, T,
1]``) or per agent (``("next", "agents", "reward")``, ``[B, T, agents, 1]``), the
normalisers (``value_norm`` / ``advantage_norm``: TorchRL's class name, its
hyper-parameters and a non-trivial starting state) and the loss's keyword arguments.

``build`` draws in float64 NumPy: the weights of a decentralised actor
``MultiAgentMLP(OBS, 2·ACT, AGENTS, centralized=False, depth=1, num_cells=HIDDEN)`` and
of the critic ``MultiAgentMLP(OBS, 1, AGENTS, depth=1, num_cells=HIDDEN)``, centralised
for MAPPO and not for IPPO (arrayrl's layer draws them; its parameter names,
``params.0.weight``, ... with a leading agent axis when not shared, are TorchRL's), and a
batch in TorchRL's multi-agent layout (VMAS's): ``("agents", "observation")``, the
actions the behaviour policy (the actor with weights perturbed by 0.1·N(0, 1)) drew,
their log-probabilities, and under ``"next"`` the next observations, rewards and flags;
with ``advantage="given"``, ``("agents", "advantage" | "value_target" |
"state_value")``.

arrayrl runs its ``MultiAgentMLP`` inside ``ProbabilisticActor`` / ``ValueOperator``;
TorchRL its own inside ``ProbabilisticActor`` / ``TensorDictModule``, with the same
weights, on a ``TensorDict`` whose ``"agents"`` entries have the batch size ``[B, T,
agents]``. Both losses get ``set_keys`` with the nested keys and
``make_value_estimator(MAGAE, gamma, lmbda)``. Each evaluation records every output,
each normaliser's statistics after the call (``"value_norm.<name>"``, in the inputs'
dtype for the comparison: both libraries keep them in float32) and, on torch, the
gradient of every ``loss_*`` term with respect to every weight. TanhNormal's entropy is a
Monte-Carlo estimate: see :mod:`.loss_oracle` for how the draws are matched.

TorchRL's quirks, checked against its code: ``advantage_norm`` with MAPPO's default
``normalize_advantage=True`` raises (as arrayrl); ``advantage_norm`` folds in the value
targets only when the loss computed the advantage itself, in training mode (as
arrayrl: the ``given`` case with an ``advantage_norm`` leaves its state unchanged);
``value_clip_fraction`` is 0 unless the advantage is in the batch, because the loss's
estimator overwrites the stored state value with the current critic's (matched: the PPO
family does the same); an actor called outside the loss samples deterministically unless
``ExplorationType.RANDOM`` is set (the adapter keeps a TorchRL actor's
``default_interaction_type``; the loss itself never samples actions). ``ESS`` and
``explained_variance`` are not compared with TorchRL, which reduces them over dim 0 only
(the PPO family's recorded deviation ``torchrl-ppo-diagnostics-first-dim``, which covers
these cases); tests/test_mappo.py checks them against NumPy formulas.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .loss_cases import (
    ACT,
    GAMMA,
    HIDDEN,
    LMBDA,
    LOSS_SEED,
    OBS,
    Evaluation,
    LossCase,
    LossInputs,
    _host,
    _perturbed,
    _some_valid,
    torch_gradients,
)
from .loss_oracle import LossDeviation

#: agents of every case
AGENTS = 3
_LOSSES = ("MAPPOLoss", "IPPOLoss")
#: the batch keys of TorchRL's multi-agent layout, by ``set_keys`` name
AGENT_KEYS = {
    "value": ("agents", "state_value"),
    "action": ("agents", "action"),
    "sample_log_prob": ("agents", "action_log_prob"),
    "advantage": ("agents", "advantage"),
    "value_target": ("agents", "value_target"),
}
#: the per-agent reward and flags (``("next", "agents", ...)``)
PER_AGENT_SIGNALS = {
    "reward": ("agents", "reward"),
    "done": ("agents", "done"),
    "terminated": ("agents", "terminated"),
}
#: the distribution of each actor kind (arrayrl's and TorchRL's class of that name)
DISTRIBUTIONS = {"tanh_normal": "TanhNormal", "normal": "IndependentNormal"}
#: what every agent observes, the input of the actor and the critic
AGENT_OBSERVATION = ("agents", "observation")


def agent_keys(team: bool = True) -> dict[str, Any]:
    """The ``set_keys`` arguments of a multi-agent PPO loss: :data:`AGENT_KEYS`, and
    :data:`PER_AGENT_SIGNALS` unless the reward and flags are the team's."""
    return dict(AGENT_KEYS) if team else {**AGENT_KEYS, **PER_AGENT_SIGNALS}


@dataclass(frozen=True)
class AgentNetworks:
    """The sizes of a multi-agent PPO actor-critic (TorchRL's tutorial's layout): per-agent
    observation and action features, agents, the ``MultiAgentMLP`` s' depth and width,
    whether they share their parameters across agents, and whether the critic reads every
    agent's observation (MAPPO) or its own (IPPO)."""

    obs: int = OBS
    act: int = ACT
    agents: int = AGENTS
    share_params: bool = True
    centralized_critic: bool = True
    depth: int = 1
    num_cells: int = HIDDEN

    def shapes(self) -> dict[str, tuple[int, bool]]:
        """``role -> (outputs per agent, centralized)``: the actor's ``loc`` and ``scale``,
        the critic's value."""
        return {"actor": (2 * self.act, False), "critic": (1, self.centralized_critic)}

    def mlp(self, library: str, role: str, **kwargs: Any) -> Any:
        """``role``'s ``MultiAgentMLP`` (:func:`multiagent_mlp`'s ``library`` and keywords)."""
        outputs, centralized = self.shapes()[role]
        return multiagent_mlp(
            library,
            self.obs,
            outputs,
            self.agents,
            centralized=centralized,
            share_params=self.share_params,
            depth=self.depth,
            num_cells=self.num_cells,
            **kwargs,
        )

    def mlps(
        self,
        library: str,
        weights: Mapping[str, Mapping[str, Any]] | None = None,
        seeds: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Both roles' ``MultiAgentMLP`` s, the actor's made first: ``weights`` and
        ``seeds`` (arrayrl's) by role, the other keywords :func:`multiagent_mlp`'s."""
        nets = {}
        for role in self.shapes():
            own = dict(kwargs)
            if weights is not None:
                own["weights"] = weights[role]
            if seeds is not None:
                own["seed"] = seeds[role]
            nets[role] = self.mlp(library, role, **own)
        return nets


@dataclass(frozen=True)
class MultiAgentPPOCase(LossCase):
    """One MAPPO or IPPO configuration (see the module docstring).

    ``share_params``: the actor's and the critic's ``MultiAgentMLP`` share parameters
    across agents. ``team``: team reward and flags (else per agent). ``norms``:
    ``((argument, TorchRL class name, ((hyper-parameter, value), ...)), ...)`` for
    ``value_norm`` / ``advantage_norm``. ``train``: ``False`` evaluates in ``eval()``
    mode.
    """

    batch_shape: tuple[int, ...] = (4, 5)
    advantage: str = "gae"
    share_params: bool = True
    team: bool = True
    norms: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()
    train: bool = True
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def continuous(self) -> bool:
        return True

    @property
    def monte_carlo(self) -> bool:
        """TanhNormal's entropy is a Monte-Carlo estimate (with the entropy bonus on)."""
        return self.actor == "tanh_normal" and bool(self.config.get("entropy_bonus", True))

    @property
    def centralized_critic(self) -> bool:
        return self.loss == "MAPPOLoss"

    @property
    def networks(self) -> AgentNetworks:
        """The sizes of the case's actor and critic."""
        return AgentNetworks(
            share_params=self.share_params, centralized_critic=self.centralized_critic
        )

    def set_keys(self) -> dict[str, Any]:
        """The ``set_keys`` arguments of both losses."""
        return agent_keys(self.team)

    # -- inputs ---------------------------------------------------------------------------
    def build(self, seed: int, dtype: str) -> LossInputs:
        """Weights, the normalisers' starting states and a batch, drawn in float64 and
        cast to ``dtype`` (the statistics stay float32 on both sides)."""
        own = zlib.crc32(self.name.encode())
        rng = np.random.default_rng([seed, 23, own])
        weights = {
            role: _multiagent_weights(self, role, seed * 100 + k + own % 89)
            for k, role in enumerate(self.networks.shapes())
        }
        for argument, kind, _ in self.norms:
            weights[argument] = _norm_state(kind, rng)
        behaviour = {**weights, "actor": _perturbed(weights["actor"], rng, 0.1)}
        batch = self._batch(rng, behaviour, seed)
        return LossInputs(weights, {}, batch, self.batch_shape).astype(dtype)

    def _batch(self, rng: np.random.Generator, behaviour: Mapping[str, Any], seed: int) -> dict:
        b, t = self.batch_shape
        batch = agents_rollout(rng, self.batch_shape, team=self.team, done_rate=0.2)
        batch["agents"].update(_behaviour_sample(self, behaviour, batch, seed))
        if self.advantage == "given":
            column = (b, t, AGENTS, 1)
            batch["agents"].update(
                advantage=rng.standard_normal(column),
                value_target=1.5 * rng.standard_normal(column) + 0.5,
                state_value=0.3 * rng.standard_normal(column),
            )
        if "collector" in self.masks:
            batch["collector"] = {"mask": _some_valid(rng, (b, t))}
        return batch

    # -- arrayrl ----------------------------------------------------------------------------
    def evaluate_arrayrl(
        self, inputs: LossInputs, backend: str, device: Any = None, *, generator_mode: str = "numpy"
    ) -> Evaluation:
        """arrayrl's loss on ``backend``: outputs, normaliser states and, on torch, the
        gradients of every ``loss_*`` term."""
        from arrayrl.backends import backend_of

        from .loss_cases import arrayrl_batch

        loss, params = self._arrayrl_loss(inputs, backend, device, generator_mode)
        out = loss(arrayrl_batch(self, inputs, backend, device))
        terms = {key: out.get(key) for key in out.keys(include_nested=True, leaves_only=True)}
        outputs = {key: _host(value, backend_of(value)) for key, value in terms.items()}
        outputs.update(self._norm_outputs(loss, inputs, _numpy_state))
        gradients = torch_gradients(terms, params) if backend == "torch" else {}
        return Evaluation(outputs, gradients)

    def _arrayrl_loss(
        self, inputs: LossInputs, backend: str, device: Any, generator_mode: str
    ) -> tuple[Any, dict[str, Any]]:
        actor, critic, nets = _arrayrl_networks(self, inputs.weights)
        loss = self._loss("arrayrl", actor, critic, inputs)
        loss.generator_mode = generator_mode
        loss.to(backend, device)
        return loss, parameters_by_role(nets)

    def _loss(self, library: str, actor: Any, critic: Any, inputs: LossInputs) -> Any:
        """The case's loss of ``library`` (``"arrayrl"``, seeded with :data:`LOSS_SEED`,
        or ``"torchrl"``) over ``actor`` and ``critic``: its keyword arguments, the
        normalisers holding their starting states, the nested keys, the multi-agent GAE,
        and ``eval()`` mode unless the case trains."""
        if library == "torchrl":
            import torch
            import torchrl.modules as norms
            from torchrl.objectives import ValueEstimators
            from torchrl.objectives import multiagent as losses

            def state(weights: Mapping[str, Any]) -> dict[str, Any]:
                return {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}

            kwargs = dict(self.config)
        else:
            import arrayrl.modules.value_norm as norms
            from arrayrl.objectives import ValueEstimators
            from arrayrl.objectives.multiagent import mappo as losses

            state = dict
            kwargs = {"seed": LOSS_SEED, **self.config}
        for argument, kind, hyper in self.norms:
            norm = getattr(norms, kind)(**dict(hyper))
            norm.load_state_dict(state(inputs.weights[argument]))
            kwargs[argument] = norm
        loss = getattr(losses, self.loss)(actor, critic, **kwargs)
        loss.set_keys(**self.set_keys())
        loss.make_value_estimator(ValueEstimators.MAGAE, gamma=GAMMA, lmbda=LMBDA)
        if not self.train:
            loss.eval()
        return loss

    def _norm_outputs(self, loss: Any, inputs: LossInputs, host: Any) -> dict[str, np.ndarray]:
        """``"<argument>.<statistic>"``: each normaliser's state after the call, in the
        inputs' float dtype."""
        dtype = next(iter(inputs.weights["actor"].values())).dtype
        out = {}
        for argument, _, _ in self.norms:
            for name, value in getattr(loss, argument).state_dict().items():
                out[f"{argument}.{name}"] = host(value).astype(dtype)
        return out

    # -- TorchRL ----------------------------------------------------------------------------
    def evaluate_torchrl(self, inputs: LossInputs, dtype: str) -> Evaluation:
        """TorchRL's loss on the case's inputs (CPU): outputs, normaliser states and the
        gradients of every ``loss_*`` term."""
        import warnings

        import torch

        from .loss_oracle import output_terms

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss, params = self._torchrl_loss(inputs, dtype)
            batch = _torchrl_batch(inputs)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(LOSS_SEED)
                out = loss(batch)
        terms = output_terms(out)
        outputs = {key: value.detach().numpy() for key, value in terms.items()}
        outputs.update(self._norm_outputs(loss, inputs, lambda t: t.detach().numpy()))
        return Evaluation(outputs, torch_gradients(terms, params))

    def _torchrl_loss(self, inputs: LossInputs, dtype: str) -> tuple[Any, dict[str, Any]]:
        import torch

        torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        nets = self.networks.mlps("torchrl", inputs.weights, dtype=torch_dtype)
        actor, critic = agent_modules(nets, DISTRIBUTIONS[self.actor], torchrl=True)
        return self._loss("torchrl", actor, critic, inputs), parameters_by_role(nets)


# -- networks and states --------------------------------------------------------------------


def multiagent_mlp(
    library: str,
    n_agent_inputs: int,
    n_agent_outputs: int,
    n_agents: int,
    *,
    weights: Mapping[str, Any] | None = None,
    dtype: Any = None,
    **kwargs: Any,
) -> Any:
    """arrayrl's (``library="arrayrl"``) or TorchRL's (``"torchrl"``) ``MultiAgentMLP``
    with both libraries' default Tanh activations, holding ``weights`` (arrays by
    parameter name: ``params.0.weight``, ..., the same in both) when given.

    ``kwargs`` are the constructor's (``centralized``, ``share_params``, ``depth``,
    ``num_cells``; arrayrl's ``seed`` and ``backend``); arrayrl's layer is made in
    ``dtype``, TorchRL's cast to it.
    """
    if library == "torchrl":
        import torch
        from torchrl.modules import MultiAgentMLP

        net = MultiAgentMLP(
            n_agent_inputs=n_agent_inputs,
            n_agent_outputs=n_agent_outputs,
            n_agents=n_agents,
            **kwargs,
        )
        net = net if dtype is None else net.to(dtype)
        if weights is not None:
            with torch.no_grad():
                for name, p in net.named_parameters():
                    p.copy_(torch.from_numpy(np.array(weights[name])))
        return net
    from arrayrl.modules import unflatten_params
    from arrayrl.modules.multiagent import MultiAgentMLP

    net = MultiAgentMLP(n_agent_inputs, n_agent_outputs, n_agents, dtype=dtype, **kwargs)
    if weights is not None:
        net.params = unflatten_params(dict(weights))
    return net


def agent_modules(
    nets: Mapping[str, Any], distribution: str, *, torchrl: bool = False, **distribution_kwargs: Any
) -> tuple[Any, Any]:
    """The actor and the critic of TorchRL's multi-agent PPO tutorial over ``nets``
    (``"actor"``, ``"critic"``): arrayrl's modules, or TorchRL's with ``torchrl``.

    The actor splits ``nets["actor"]``'s output into ``loc`` and ``scale`` and samples
    ``distribution`` (the class of that name, with ``distribution_kwargs``), writing the
    action and its log-probability under :data:`AGENT_KEYS`; the critic writes the state
    value. Both read :data:`AGENT_OBSERVATION`.
    """
    if torchrl:
        import torch
        import torchrl.modules as dists
        from tensordict.nn import NormalParamExtractor
        from tensordict.nn import TensorDictModule as Module
        from torchrl.modules import ProbabilisticActor

        sequence, value_module = torch.nn.Sequential, Module
    else:
        from arrayrl.modules import DictModule as Module
        from arrayrl.modules import NormalParamExtractor, Sequential
        from arrayrl.modules import distributions as dists
        from arrayrl.modules.actors import ProbabilisticActor, ValueOperator

        sequence, value_module = Sequential, ValueOperator
    loc_scale = [("agents", "loc"), ("agents", "scale")]
    actor = ProbabilisticActor(
        Module(
            sequence(nets["actor"], NormalParamExtractor()),
            in_keys=[AGENT_OBSERVATION],
            out_keys=loc_scale,
        ),
        in_keys=loc_scale,
        out_keys=[AGENT_KEYS["action"]],
        distribution_class=getattr(dists, distribution),
        distribution_kwargs=distribution_kwargs,
        return_log_prob=True,
        log_prob_key=AGENT_KEYS["sample_log_prob"],
    )
    critic = value_module(
        nets["critic"], in_keys=[AGENT_OBSERVATION], out_keys=[AGENT_KEYS["value"]]
    )
    return actor, critic


def parameters_by_role(nets: Mapping[str, Any]) -> dict[str, Any]:
    """``{"<role>.<param>": parameter}`` of arrayrl's or TorchRL's networks by role."""
    return {
        f"{role}.{name}": p
        for role, net in nets.items()
        for name, p in dict(net.named_parameters()).items()
    }


def _multiagent_weights(case: MultiAgentPPOCase, role: str, seed: int) -> dict[str, np.ndarray]:
    """Float64 weights of ``role``'s network by TorchRL's names (``params.0.weight``)."""
    net = case.networks.mlp("arrayrl", role, seed=seed, dtype=np.float64)
    return {name: np.asarray(w) for name, w in net.named_parameters().items()}


def _norm_state(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A normaliser's state after some updates (float32, TorchRL's buffer names): the
    targets' scale is of order 1, so the normalisation acts."""
    mean = rng.normal(0.0, 0.5, (1,))
    std = rng.uniform(0.7, 1.5, (1,))
    if kind == "PopArtValueNorm":
        debias = 0.6
        state = {
            "running_mean": debias * mean,
            "running_mean_sq": debias * (mean**2 + std**2),
            "debiasing_term": np.asarray(debias),
        }
    elif kind == "RunningValueNorm":
        state = {"mean": mean, "m2": 20.0 * std**2, "count": np.asarray(20.0)}
    else:
        state = {"low": mean - 1.6 * std, "high": mean + 1.6 * std}
    return {name: np.asarray(value, np.float32) for name, value in state.items()}


def _numpy_state(value: Any) -> np.ndarray:
    from arrayrl.backends import backend_of

    return _host(value, backend_of(value))


def _arrayrl_networks(
    case: MultiAgentPPOCase, weights: Mapping[str, Mapping[str, np.ndarray]]
) -> tuple[Any, Any, dict[str, Any]]:
    """``(actor, critic, MultiAgentMLPs by role)``: arrayrl's modules holding ``weights``."""
    nets = case.networks.mlps("arrayrl", weights)
    return (*agent_modules(nets, DISTRIBUTIONS[case.actor]), nets)


def _behaviour_sample(
    case: MultiAgentPPOCase, weights: Mapping[str, Any], batch: Mapping[str, Any], seed: int
) -> dict[str, np.ndarray]:
    """The behaviour policy's actions (float64 NumPy, arrayrl's actor), their
    log-probabilities and the distribution's parameters, under ``"agents"``."""
    from arrayrl.data import ArrayDict
    from arrayrl.random import make_generator

    actor, _, _ = _arrayrl_networks(case, weights)
    rollout = ArrayDict(
        {"agents": {"observation": batch["agents"]["observation"]}}, case.batch_shape
    )
    actor(rollout, rng=make_generator(seed + 1))
    return {
        name: np.asarray(rollout.get(("agents", name)))
        for name in ("action", "action_log_prob", "loc", "scale")
    }


def _torchrl_batch(inputs: LossInputs) -> Any:
    """The case's batch as a ``TensorDict`` in VMAS's layout."""
    from .loss_oracle import _to_torch

    return agents_tensordict(_to_torch(inputs.batch), inputs.batch_size)


# -- batches ---------------------------------------------------------------------------------


def agents_rollout(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    team: bool,
    done_rate: float,
    agents: int = AGENTS,
    obs: int = OBS,
) -> dict[str, Any]:
    """``[B, T]`` steps in TorchRL's multi-agent layout (VMAS's), float64: every agent's
    observation under ``"agents"`` and ``("next", "agents")`` (one trajectory of ``T + 1``
    observations per row), and the reward (N(0, 1)), ``done`` (with probability
    ``done_rate``) and ``terminated`` (half the dones), the team's under ``"next"``
    (``[B, T, 1]``) or each agent's under ``("next", "agents")`` (``[B, T, agents, 1]``)."""
    b, t = shape
    steps = rng.standard_normal((b, t + 1, agents, obs))
    signals = (b, t, 1) if team else (b, t, agents, 1)
    done = rng.random(signals) < done_rate
    flags = {
        "reward": rng.standard_normal(signals),
        "done": done,
        "terminated": done & (rng.random(signals) < 0.5),
    }
    batch: dict[str, Any] = {
        "agents": {"observation": steps[:, :-1]},
        "next": {"agents": {"observation": steps[:, 1:]}},
    }
    (batch["next"] if team else batch["next"]["agents"]).update(flags)
    return batch


def agents_tensordict(tensors: Mapping[str, Any], batch_size: Any, agents: int = AGENTS) -> Any:
    """Nested torch tensors as a ``TensorDict`` of ``batch_size`` whose ``"agents"`` and
    ``("next", "agents")`` entries have the batch size ``[*batch_size, agents]`` (VMAS's
    layout, which TorchRL's multi-agent losses read)."""
    from tensordict import TensorDict

    batch = TensorDict(tensors, batch_size=batch_size)
    for key in ("agents", ("next", "agents")):
        batch[key].batch_size = [*batch_size, agents]
    return batch


# -- the cases ------------------------------------------------------------------------------

_POPART = ("PopArtValueNorm", (("beta", 0.9),))
_RUNNING = ("RunningValueNorm", ())
_PERCENTILE = ("PercentileValueNorm", (("rate", 0.3), ("center", True)))


def _case(loss: str, variant: str = "", **fields: Any) -> MultiAgentPPOCase:
    """A case named ``loss[actor,params,signals,advantage,variant]``."""
    case = MultiAgentPPOCase(name="", loss=loss, **fields)
    label = ",".join(
        p
        for p in (
            case.actor,
            "shared" if case.share_params else "per_agent",
            "team" if case.team else "per_agent_reward",
            case.advantage,
            variant,
        )
        if p
    )
    return replace(case, name=f"{loss}[{label}]")


def _value_norm(kind: tuple[str, tuple]) -> tuple:
    return (("value_norm", *kind),)


def _mappo_cases() -> list[MultiAgentPPOCase]:
    """Both actors, shared and per-agent networks, team and per-agent rewards, every
    normaliser, value clipping, reductions, masks, eval mode, TensorDict batches."""
    m = "MAPPOLoss"
    return [
        _case(m, actor="tanh_normal", core=True),
        _case(m, actor="normal", share_params=False, core=True),
        _case(m, actor="tanh_normal", share_params=False, team=False),
        _case(m, actor="normal", team=False, advantage="given"),
        _case(m, "popart", actor="tanh_normal", norms=_value_norm(_POPART)),
        _case(m, "running", actor="normal", share_params=False, norms=_value_norm(_RUNNING)),
        _case(m, "percentile", actor="normal", team=False, norms=_value_norm(_PERCENTILE)),
        _case(
            m,
            "popart,clip_value=0.1",
            actor="normal",
            advantage="given",
            norms=_value_norm(_POPART),
            config={"clip_value": 0.1},
        ),
        _case(m, "clip_value", actor="normal", share_params=False, config={"clip_value": True}),
        _case(
            m,
            "running,clip_value=0.3,l2",
            actor="tanh_normal",
            share_params=False,
            team=False,
            advantage="given",
            norms=_value_norm(_RUNNING),
            config={"clip_value": 0.3, "loss_critic_type": "l2"},
        ),
        _case(
            m,
            "advantage_norm",
            actor="normal",
            norms=(("advantage_norm", *_RUNNING),),
            config={"normalize_advantage": False},
        ),
        _case(
            m,
            "advantage_norm,popart",
            actor="normal",
            advantage="given",
            norms=(("advantage_norm", *_PERCENTILE), ("value_norm", *_POPART)),
            config={"normalize_advantage": False},
        ),
        _case(m, "collector_mask", actor="tanh_normal", masks=("collector",)),
        _case(
            m,
            "none,eps=0.1",
            actor="normal",
            share_params=False,
            config={"reduction": "none", "clip_epsilon": 0.1},
        ),
        _case(
            m,
            "sum,l1,no_normalize",
            actor="normal",
            team=False,
            config={"reduction": "sum", "loss_critic_type": "l1", "normalize_advantage": False},
        ),
        _case(
            m,
            "eval,advantage_norm,running",
            actor="normal",
            train=False,
            norms=(("advantage_norm", *_POPART), ("value_norm", *_RUNNING)),
            config={"normalize_advantage": False},
        ),
        _case(
            m,
            "collector_mask,popart",
            actor="normal",
            share_params=False,
            masks=("collector",),
            norms=_value_norm(_POPART),
        ),
        _case(
            m,
            "tensordict,entropy_coeff=0.05",
            actor="tanh_normal",
            tensordict=True,
            config={"entropy_coeff": 0.05, "critic_coeff": 0.5},
        ),
    ]


def _ippo_cases() -> list[MultiAgentPPOCase]:
    """The same family of settings with decentralised critics."""
    i = "IPPOLoss"
    return [
        _case(i, actor="tanh_normal", core=True),
        _case(i, actor="normal", share_params=False, team=False, core=True),
        _case(i, "popart", actor="normal", share_params=False, norms=_value_norm(_POPART)),
        _case(
            i, "percentile", actor="tanh_normal", advantage="given", norms=_value_norm(_PERCENTILE)
        ),
        _case(
            i,
            "running,clip_value=0.2",
            actor="normal",
            team=False,
            norms=_value_norm(_RUNNING),
            config={"clip_value": 0.2},
        ),
        _case(
            i,
            "no_entropy,none",
            actor="tanh_normal",
            share_params=False,
            config={"entropy_bonus": False, "reduction": "none"},
        ),
    ]


def cases() -> list[MultiAgentPPOCase]:
    """Every MAPPO and IPPO conformance case."""
    return [*_mappo_cases(), *_ippo_cases()]


def _family(case: Any, dtype: str) -> bool:
    return isinstance(case, MultiAgentPPOCase)


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-mappo-value-norm-updates-in-eval",
        applies=lambda case, dtype: (
            _family(case, dtype)
            and not case.train
            and any(argument == "value_norm" for argument, _, _ in case.norms)
        ),
        reason=(
            "TorchRL 0.14.1's MAPPOLoss folds the value targets into value_norm on every "
            "call, in eval() mode too (its advantage_norm is updated in training mode only). "
            "arrayrl updates value_norm in training mode only, as advantage_norm and as an "
            "nn.Module's running statistics: evaluating a loss (validation, logging) leaves "
            "the normaliser as it was. So the value_norm statistics after the call, "
            "loss_critic (computed with them) and explained_variance are not compared in "
            "eval mode; every other output and gradient is (tests/test_mappo.py checks the "
            "behaviour). No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
        covers=("value_norm.", "loss_critic", "explained_variance"),
    ),
    LossDeviation(
        key="torchrl-mappo-value-norm-masked-rows",
        applies=lambda case, dtype: (
            _family(case, dtype)
            and bool(case.masks)
            and any(argument == "value_norm" for argument, _, _ in case.norms)
        ),
        reason=(
            "TorchRL 0.14.1's MAPPOLoss folds every row of the value target into value_norm, "
            "the rows its loss masks (('collector', 'mask'), 'shifted_valid') drop from the "
            "losses included: padding enters the statistics (its advantage_norm leaves "
            "those rows out). arrayrl leaves them out of value_norm too. On masked batches the "
            "value_norm statistics, loss_critic (computed with them) and explained_variance "
            "are not compared; every other output and gradient is (tests/test_mappo.py "
            "checks the update against the kept rows). No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
        covers=("value_norm.", "loss_critic", "explained_variance"),
    ),
    LossDeviation(
        key="torchrl-mappo-unknown-kwargs",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL 0.14.1's MAPPOLoss and IPPOLoss pass **kwargs to ClipPPOLoss, whose "
            "PPOLoss silently ignores keywords it does not know (a misspelt clip_epsilon "
            "trains with the default); arrayrl raises TypeError naming the loss and the "
            "keyword. Recorded, not measured (tests/test_mappo.py). No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
)

__all__ = [
    "AGENTS",
    "AGENT_KEYS",
    "AGENT_OBSERVATION",
    "DEVIATIONS",
    "PER_AGENT_SIGNALS",
    "AgentNetworks",
    "MultiAgentPPOCase",
    "agent_keys",
    "agent_modules",
    "agents_rollout",
    "agents_tensordict",
    "cases",
    "multiagent_mlp",
    "parameters_by_role",
]
