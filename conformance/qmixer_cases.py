"""Conformance cases of ``QMixerLoss`` (QMIX and VDN), and where TorchRL 0.14.1 differs.

A :class:`QMixerCase` names the mixer (``"vdn"``: a sum, no parameters; ``"qmix"``: the
hypernetwork mixer of a global state, or of the agents' observations with
``agent_state``), the action space (``actor``: ``"categorical"`` or ``"one_hot"``), whether
the agents share one Q network (``share_params``) or have one each, the value estimator
and the loss's keyword arguments. ``build`` draws, in float64 NumPy, the weights of the
agents' ``MultiAgentMLP`` (one hidden layer) and of the mixer, perturbed target copies
(with ``delay_value``), and a replay batch: the agents' observations and actions under
``"agents"``, a global state, and under ``"next"`` the same with the team's reward,
``done`` and ``terminated`` (``[*B, 1]``); optionally a collector mask.

arrayrl's side builds the networks from arrayrl's modules
(:class:`~arrayrl.modules.multiagent.MultiAgentMLP` in a ``QValueActor``, and
:class:`~arrayrl.modules.multiagent.QMixer` / ``VDNMixer`` in a ``DictModule``); TorchRL's
side TorchRL's ``SafeSequential(TensorDictModule(MultiAgentMLP), QValueModule)`` and
``TensorDictModule(QMixer / VDNMixer)``, loaded with the same weights (the parameter names
agree). Nothing is random: the cases are not Monte-Carlo.

Each evaluation records ``loss``, the priority the loss sets in the caller's batch
(``"batch:td_error"``) and, on torch, the gradient of ``loss`` with respect to every
weight of both networks (``"loss/local.<param>"``, ``"loss/mixer.<param>"``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .dqn_cases import (
    PriorityLossCase,
    _actions,
    _arrayrl_prepared,
    _torchrl_prepared,
    load_torch_weights,
)
from .loss_cases import GAMMA, HIDDEN, LMBDA, N_ACTIONS, OBS, LossInputs, _perturbed
from .loss_oracle import LossDeviation
from .mappo_cases import multiagent_mlp

#: agents, global state features, the QMIX mixing layer's width
N_AGENTS, STATE, EMBED = 3, 5, 4
#: the networks QMixerLoss learns (and keeps target copies of)
_NETWORKS = ("local_value_network", "mixer_network")
LOCAL_VALUE = ("agents", "chosen_action_value")
ACTION_VALUE = ("agents", "action_value")
ACTION = ("agents", "action")
OBSERVATION = ("agents", "observation")


@dataclass(frozen=True)
class QMixerCase(PriorityLossCase):
    """One QMIX / VDN configuration (see the module docstring)."""

    mixer: str = "qmix"
    share_params: bool = True
    agent_state: bool = False

    @property
    def state_shape(self) -> tuple[int, ...]:
        """The mixer's state: the global state, or every agent's observation."""
        return (N_AGENTS, OBS) if self.agent_state else (STATE,)

    @property
    def mixer_in_keys(self) -> list[Any]:
        if self.mixer == "vdn":
            return [LOCAL_VALUE]
        return [LOCAL_VALUE, OBSERVATION if self.agent_state else "state"]

    def build(self, seed: int, dtype: str) -> LossInputs:
        """Weights of both networks, perturbed target copies (with ``delay_value``) and a
        replay batch, drawn in float64 and cast to ``dtype``."""
        own = zlib.crc32(self.name.encode())  # each case its own draws
        rng = np.random.default_rng([seed, 17, own])
        weights = {"local": self._local_weights(seed), "mixer": self._mixer_weights(seed)}
        targets = {}
        if self.delay_value:
            targets = {role: _perturbed(w, rng, 0.2) for role, w in weights.items()}
        return LossInputs(weights, targets, self._batch(rng), self.batch_shape).astype(dtype)

    def _local_weights(self, seed: int) -> dict[str, np.ndarray]:
        return _flat_weights(_local_layer(self, "arrayrl", seed=seed, dtype=np.float64))

    def _mixer_weights(self, seed: int) -> dict[str, np.ndarray]:
        return _flat_weights(_arrayrl_mixer_layer(self, seed + 1, np.float64))

    def _batch(self, rng: np.random.Generator) -> dict[str, Any]:
        shape = self.batch_shape
        column = (*shape, 1)
        done = rng.random(column) < 0.3
        agents = (*shape, N_AGENTS)
        batch: dict[str, Any] = {
            "agents": {
                "observation": rng.standard_normal((*agents, OBS)),
                "action": _actions(self.actor, agents, rng),
            },
            "state": rng.standard_normal((*shape, STATE)),
            "next": {
                "agents": {"observation": rng.standard_normal((*agents, OBS))},
                "state": rng.standard_normal((*shape, STATE)),
                "reward": 2.0 * rng.standard_normal(column),
                "done": done,
                "terminated": done & (rng.random(column) < 0.5),
            },
        }
        if "collector" in self.masks:
            mask = rng.random(shape) < 0.7
            mask.flat[0] = True
            batch["collector"] = {"mask": mask}
        return batch

    # -- arrayrl ------------------------------------------------------------------------
    def _arrayrl_loss(
        self, inputs: LossInputs, backend: str, device: Any
    ) -> tuple[Any, dict[str, Any]]:
        """The loss (NumPy-built, weights and targets loaded, moved to ``backend``) and its
        trainable arrays by canonical name (``"local.<param>"``, ``"mixer.<param>"``)."""
        from arrayrl.modules import DictModule, QValueActor, unflatten_params
        from arrayrl.objectives.multiagent.qmixer import QMixerLoss

        dtype = next(iter(inputs.weights["local"].values())).dtype
        local_layer = _local_layer(self, "arrayrl", weights=inputs.weights["local"], dtype=dtype)
        mixer_layer = _arrayrl_mixer_layer(self, 0, dtype)
        if inputs.weights["mixer"]:
            mixer_layer.params = unflatten_params(dict(inputs.weights["mixer"]))
        local = QValueActor(
            local_layer,
            in_keys=[OBSERVATION],
            action_space=self.actor,
            action_value_key=ACTION_VALUE,
            action_key=ACTION,
            chosen_action_value_key=LOCAL_VALUE,
        )
        mixer = DictModule(
            mixer_layer, in_keys=self.mixer_in_keys, out_keys=["chosen_action_value"]
        )
        loss = QMixerLoss(local, mixer, **self.config)
        name, extra = self.estimator
        loss.make_value_estimator(name, gamma=GAMMA, **dict(extra))
        layers = {"local": local_layer, "mixer": mixer_layer}
        return _arrayrl_prepared(loss, layers, _NETWORKS, inputs.target_weights, backend, device)

    # -- TorchRL ------------------------------------------------------------------------
    def _torchrl_loss(self, inputs: LossInputs, torch_dtype: Any) -> tuple[Any, dict[str, Any]]:
        from tensordict.nn import TensorDictModule
        from torchrl.modules import QValueModule, SafeSequential
        from torchrl.objectives import ValueEstimators
        from torchrl.objectives.multiagent import QMixerLoss

        local_net = _local_layer(
            self, "torchrl", weights=inputs.weights["local"], dtype=torch_dtype
        )
        mixer_net = _torchrl_mixer(self, torch_dtype)
        load_torch_weights(mixer_net, inputs.weights["mixer"])
        local = SafeSequential(
            TensorDictModule(local_net, in_keys=[OBSERVATION], out_keys=[ACTION_VALUE]),
            QValueModule(
                action_value_key=ACTION_VALUE,
                out_keys=[ACTION, ACTION_VALUE, LOCAL_VALUE],
                action_space=self.actor,
            ),
        )
        mixer = TensorDictModule(
            mixer_net, in_keys=self.mixer_in_keys, out_keys=["chosen_action_value"]
        )
        loss = QMixerLoss(local, mixer, action_space=self.actor, **self.config)
        name, extra = self.estimator
        loss.make_value_estimator(getattr(ValueEstimators, name), gamma=GAMMA, **dict(extra))
        nets = {"local": local_net, "mixer": mixer_net}
        return _torchrl_prepared(loss, nets, _NETWORKS, inputs.target_weights)


# -- networks ----------------------------------------------------------------------------


def _local_layer(case: QMixerCase, library: str, **kwargs: Any) -> Any:
    """The agents' Q network: arrayrl's or TorchRL's ``MultiAgentMLP`` (decentralised, one
    hidden layer, tanh), :func:`~.mappo_cases.multiagent_mlp`'s keywords."""
    return multiagent_mlp(
        library,
        OBS,
        N_ACTIONS,
        N_AGENTS,
        centralized=False,
        share_params=case.share_params,
        depth=1,
        num_cells=HIDDEN,
        **kwargs,
    )


def _arrayrl_mixer_layer(case: QMixerCase, seed: int, dtype: Any) -> Any:
    from arrayrl.modules.multiagent import QMixer, VDNMixer

    if case.mixer == "vdn":
        return VDNMixer(N_AGENTS)
    return QMixer(case.state_shape, EMBED, N_AGENTS, seed=seed, dtype=dtype)


def _torchrl_mixer(case: QMixerCase, torch_dtype: Any) -> Any:
    """TorchRL's mixer of the case's sizes, in ``torch_dtype``."""
    from torchrl.modules.models.multiagent import QMixer, VDNMixer

    if case.mixer == "vdn":
        return VDNMixer(n_agents=N_AGENTS, device="cpu")
    mixer = QMixer(
        state_shape=case.state_shape, mixing_embed_dim=EMBED, n_agents=N_AGENTS, device="cpu"
    )
    return mixer.to(torch_dtype)


def _flat_weights(layer: Any) -> dict[str, np.ndarray]:
    from arrayrl.modules import flatten_params

    return {name: np.asarray(w) for name, w in flatten_params(layer.params).items()}


# -- the cases ---------------------------------------------------------------------------

_N, _BT = (16,), (4, 4)
_TD_LAMBDA = ("TDLambda", (("lmbda", LMBDA),))


def _case(variant: str = "", **fields: Any) -> QMixerCase:
    """A case named ``QMixerLoss[mixer,space,shared|per_agent,layout,variant]``."""
    fields.setdefault("batch_shape", _N)
    case = QMixerCase(name="", loss="QMixerLoss", advantage="", **fields)
    layout = "x".join(map(str, case.batch_shape))
    sharing = "shared" if case.share_params else "per_agent"
    label = ",".join(p for p in (case.mixer, case.actor, sharing, layout, variant) if p)
    return replace(case, name=f"QMixerLoss[{label}]")


def cases() -> list[QMixerCase]:
    """Both mixers, categorical and one-hot actions, shared and per-agent Q networks,
    delayed targets on and off, TD(0) / TD(1) / TD(λ), the three distances, a
    TensorDict batch and a collector mask."""
    return [
        _case(mixer="vdn", actor="categorical", core=True),
        _case(mixer="qmix", actor="categorical", share_params=False, core=True),
        _case(
            "td_lambda",
            mixer="qmix",
            actor="one_hot",
            batch_shape=_BT,
            estimator=_TD_LAMBDA,
            core=True,
        ),
        _case(
            "no_delay",
            mixer="vdn",
            actor="one_hot",
            share_params=False,
            config={"delay_value": False},
        ),
        _case(
            "no_delay,td1,smooth_l1",
            mixer="qmix",
            actor="categorical",
            batch_shape=_BT,
            config={"delay_value": False, "loss_function": "smooth_l1"},
            estimator=("TD1", ()),
        ),
        _case(
            "td_lambda,l1",
            mixer="vdn",
            actor="categorical",
            share_params=False,
            batch_shape=_BT,
            config={"loss_function": "l1"},
            estimator=_TD_LAMBDA,
        ),
        _case("agent_state", mixer="qmix", actor="one_hot", agent_state=True),
        _case("tensordict", mixer="qmix", actor="one_hot", share_params=False, tensordict=True),
        _case("collector_mask", mixer="qmix", actor="categorical", masks=("collector",)),
    ]


DEVIATIONS: tuple[LossDeviation, ...] = (
    LossDeviation(
        key="torchrl-qmixer-ignores-loss-mask",
        applies=lambda case, dtype: case.loss == "QMixerLoss" and "collector" in case.masks,
        reason=(
            "TorchRL 0.14.1's QMixerLoss averages the distance over every sample "
            "(loss.mean()), a ('collector', 'mask') included, so padded transitions enter "
            "the loss and its gradients; its other losses reduce through the mask-aware "
            "_reduce_loss. arrayrl's QMixerLoss reduces as its other losses do (the mean "
            "over the valid samples). The loss and its gradients are not compared on "
            "masked batches; the priority (td_error), which neither masks, is. TorchRL's "
            "RFC pytorch/rl#3866 asked every loss to honour the mask; QMixerLoss was not "
            "among those migrated (pytorch/rl#3888)."
        ),
        tolerance=None,
        covers=("loss",),
        torchrl_issue="pytorch/rl#3866",
    ),
    LossDeviation(
        key="torchrl-qmixer-bare-mixer",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's QMixerLoss wraps a mixer that is not a TensorDictModule with "
            "ensure_tensordict_compatible(in_keys=[local_value]), which compares the names "
            "of forward's arguments with the in_keys: the default local_value key is the "
            "tuple ('agents', 'chosen_action_value'), never an argument name, so every bare "
            "mixer raises TypeError (TorchRL's own VDNMixer and QMixer, whose forward takes "
            "*inputs, too). arrayrl wraps a bare mixer in a DictModule reading local_value "
            "and writing global_value, as TorchRL's docstring describes. Recorded, not "
            "measured (see tests/test_qmixer.py). No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-qmixer-action-space-from-qvalue-module",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's QMixerLoss built without action_space reads the local network's "
            "spec; a SafeSequential whose QValueModule was made with action_space= and no "
            "spec has a composite spec whose action entry is None, so it raises ValueError. "
            "arrayrl then reads the QValueModule's action_space. The cases pass "
            "action_space to TorchRL; recorded, not measured (see tests/test_qmixer.py). "
            "No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
    LossDeviation(
        key="torchrl-qmixer-integer-reward",
        applies=lambda case, dtype: False,
        reason=(
            "TorchRL's QMixerLoss takes an integer team reward (torch promotes it in the TD "
            "return); arrayrl refuses it with a TypeError naming the key, as its other "
            "losses do, rather than computing in a dtype the caller did not choose. "
            "Recorded, not measured. No TorchRL issue found."
        ),
        tolerance=None,
        torchrl_issue=None,
    ),
)

__all__ = ["DEVIATIONS", "N_AGENTS", "QMixerCase", "cases"]
