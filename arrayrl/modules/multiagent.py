"""Multi-agent networks: :class:`MultiAgentMLP` and the value mixers :class:`VDNMixer` and
:class:`QMixer`, written once with the Array API (TorchRL 0.14.1's
``torchrl.modules.models.multiagent``).

Agents sit on the second-to-last axis: a multi-agent input is ``[*B, n_agents, features]``.

- :class:`MultiAgentMLP` maps ``[*B, n_agents, n_agent_inputs]`` to
  ``[*B, n_agents, n_agent_outputs]`` with one MLP shared by every agent
  (``share_params=True``, homogeneous agents) or one MLP per agent, whose parameters are
  stacked along a leading agent axis and computed as ONE batched matmul per layer (no loop
  over agents, no ``vmap``). ``centralized=True`` feeds each agent every agent's input
  (a centralised critic, as in MAPPO); ``False`` only its own (IPPO, decentralised
  actors).
- :class:`VDNMixer` and :class:`QMixer` mix the agents' chosen-action values
  ``[*B, n_agents, 1]`` into a team value ``[*B, 1]`` (for :class:`QMixerLoss`).

Parameter trees and TorchRL's names
-----------------------------------
``MultiAgentMLP``: ``{"params": {"0": {"weight", "bias"}, "2": ..., ...}}``, i.e. the flat
names ``params.<layer>.weight`` / ``params.<layer>.bias`` of TorchRL's
``MultiAgentMLP(use_td_params=True)`` (``_empty_net.<layer>.*`` with
``use_td_params=False``; :meth:`~arrayrl.modules.HasParams.load_state_dict` accepts
either). Layers are numbered as in ``torch.nn.Sequential`` (activations take the odd
indices). Without shared parameters every leaf has a leading ``[n_agents]`` axis, agent
``a``'s network being ``leaf[a]``, exactly TorchRL's layout; with shared parameters the
leaves are a single MLP's. So ``ours.load_state_dict(theirs.state_dict())`` copies a
TorchRL network name for name.

``QMixer``: ``hyper_w_1``, ``hyper_w_final``, ``hyper_b_1`` (each ``weight``/``bias``) and
``V.0``, ``V.2``, as TorchRL's. ``VDNMixer`` has no parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from arrayrl._validation import count, flag, reject_unknown_kwargs
from arrayrl.backends import Backend, backend_of

from ._params import Params
from .layers import (
    ELU,
    MLP,
    Layer,
    Linear,
    ReLU,
    Sequential,
    Tanh,
    _activation,
    _initial_params,
)

__all__ = ["Mixer", "MultiAgentMLP", "QMixer", "VDNMixer"]

#: torch's activation classes arrayrl has a counterpart for (TorchRL users pass these).
_TORCH_ACTIVATIONS = ("Tanh", "ReLU", "ELU", "Identity")


def _activation_layer(activation_class: Any) -> type[Layer]:
    """arrayrl's activation for ``activation_class``: a :class:`Layer` subclass, a name
    (``"tanh"``), or torch's ``nn.Tanh`` / ``nn.ReLU`` / ``nn.ELU`` / ``nn.Identity``."""
    if isinstance(activation_class, type) and not issubclass(activation_class, Layer):
        name = activation_class.__name__
        if activation_class.__module__.startswith("torch") and name in _TORCH_ACTIVATIONS:
            return _activation(name)
        raise TypeError(
            f"activation_class {activation_class.__module__}.{name} has no arrayrl "
            f"counterpart; pass an arrayrl Layer class, one of {list(_TORCH_ACTIVATIONS)} "
            "from torch.nn, or a name ('tanh', 'relu', 'elu', 'identity')"
        )
    return _activation(activation_class)


def _stacked_mlp_params(
    net: MLP,
    members: int | None,
    seed: int,
    backend: str | Backend,
    device: Any,
    dtype: Any,
) -> Params:
    """``members`` independent initialisations of ``net``'s layers, stacked leaf-wise
    (``None``: one, without the member axis).

    Each linear layer is drawn as ``torch.nn.Linear`` initialises one (weight and bias
    uniform on ``±1/√in_features``), independently for every member, from
    ``numpy.random.default_rng([seed, k])`` for the ``k``-th linear layer. Without the
    member axis the draws are those of ``MLP(..., seed=seed)``.
    """
    stack = () if members is None else (members,)
    tree: Params = {}
    linears = [(i, layer) for i, layer in enumerate(net.layers) if isinstance(layer, Linear)]
    for k, (index, layer) in enumerate(linears):
        rng = np.random.default_rng([seed, k])
        bound = 1.0 / math.sqrt(layer.in_features)
        shape = (*stack, layer.out_features)
        draws = {"weight": rng.uniform(-bound, bound, (*shape, layer.in_features))}
        if "bias" in layer.params:
            draws["bias"] = rng.uniform(-bound, bound, shape)
        tree[str(index)] = _initial_params(draws, backend, device, dtype)
    return tree


def _concat_last(inputs: Sequence[Any]) -> Any:
    """Several inputs joined along the last axis (TorchRL's networks take ``*inputs``)."""
    if len(inputs) == 1:
        return inputs[0]
    return backend_of(*inputs).xp.concat(list(inputs), axis=-1)


class MultiAgentMLP(Layer):
    r"""An MLP per agent (or one shared by all), TorchRL's ``MultiAgentMLP``.

    With agents on the second-to-last axis, ``x`` of shape ``[*B, n, d_in]``, agent
    ``a``'s output is

    .. math::

        y_{\cdot,a} = f_{\theta_a}(x_{\cdot,a}) \quad \text{(decentralised)}, \qquad
        y_{\cdot,a} = f_{\theta_a}(\operatorname{vec}(x_{\cdot,1}, \dots, x_{\cdot,n}))
        \quad \text{(centralised)},

    where ``f`` is an MLP and ``θ_a = θ`` for every agent with ``share_params=True``
    (parameter sharing, Gupta et al. 2017, "Cooperative Multi-Agent Control Using Deep
    Reinforcement Learning"). A centralised network reads all ``n · d_in`` inputs: the
    centralised critic of MAPPO (Yu et al. 2022, "The Surprising Effectiveness of PPO in
    Cooperative Multi-Agent Games"); decentralised networks are IPPO's (de Witt et al.
    2020, "Is Independent Learning All You Need in the StarCraft Multi-Agent
    Challenge?"). A shared centralised network computes one output, broadcast over the
    agent axis (a view, as TorchRL's ``expand``).

    Unshared parameters are stacked with a leading ``[n_agents]`` axis, and each layer
    computes every agent's network at once (one batched matmul, ``baddbmm`` on torch).

    Parameters
    ----------
    n_agent_inputs : int
        Input features per agent (TorchRL's lazy ``None`` is not supported).
    n_agent_outputs : int
        Output features per agent.
    n_agents : int
    centralized : bool
        Required (``TypeError`` if missing); ``centralised`` is accepted too.
    share_params : bool
        Required (``TypeError`` if missing).
    device : optional
        Where the parameters live on ``backend``.
    depth, num_cells : optional
        Hidden layers, by ``torchrl.modules.MLP``'s rules: neither gives a single linear
        layer (TorchRL 0.14.1's behaviour; its docstring's "default: 3" and "32" describe
        what ``depth`` alone or ``num_cells`` alone give), ``depth`` alone layers of 32
        cells, an int ``num_cells`` needs ``depth``.
    activation_class : default :class:`~arrayrl.modules.layers.Tanh`
        An arrayrl :class:`Layer` class, a name, or ``torch.nn.Tanh`` / ``ReLU`` / ``ELU``
        / ``Identity``.
    use_td_params : bool, default True
        Only chooses the parameter names TorchRL would give (``params.*`` or
        ``_empty_net.*``); the computation is the same.
    activate_last_layer, bias_last_layer : bool, optional keywords
        As ``torchrl.modules.MLP`` (defaults ``False``, ``True``).
    seed : int, default 0
        Layer ``k`` is drawn from ``numpy.random.default_rng([seed, k])`` as torch's
        ``nn.Linear`` initialises, independently for each agent; with shared parameters
        the weights are those of ``arrayrl.modules.MLP(..., seed=seed)``.
    backend, dtype : optional keywords
        Where the parameters live (float32 NumPy by default).

    Examples
    --------
    >>> import numpy as np
    >>> net = MultiAgentMLP(3, 2, 4, centralized=False, share_params=False, depth=1)
    >>> net(np.zeros((5, 4, 3), np.float32)).shape
    (5, 4, 2)
    >>> net.named_parameters()["params.0.weight"].shape
    (4, 32, 3)
    """

    agent_dim = -2

    def __init__(
        self,
        n_agent_inputs: int,
        n_agent_outputs: int,
        n_agents: int,
        *,
        centralized: bool | None = None,
        share_params: bool | None = None,
        device: Any = None,
        depth: int | None = None,
        num_cells: int | Sequence[int] | None = None,
        activation_class: Any = Tanh,
        use_td_params: bool = True,
        seed: int = 0,
        backend: str | Backend = "numpy",
        dtype: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        centralized = kwargs.pop("centralised", centralized)
        mlp_kwargs = {
            k: kwargs.pop(k) for k in ("activate_last_layer", "bias_last_layer") if k in kwargs
        }
        reject_unknown_kwargs(type(self).__name__, kwargs)
        if centralized is None:
            raise TypeError("MultiAgentMLP: the centralized argument must be passed")
        if share_params is None:
            raise TypeError("MultiAgentMLP: the share_params argument must be passed")
        if n_agent_inputs is None:
            raise TypeError(
                "MultiAgentMLP: n_agent_inputs must be an int (arrayrl has no lazy layers)"
            )
        self.n_agent_inputs = count("n_agent_inputs", n_agent_inputs)
        self.n_agent_outputs = count("n_agent_outputs", n_agent_outputs)
        self.n_agents = count("n_agents", n_agents)
        self.centralized = flag("centralized", centralized)
        self.share_params = flag("share_params", share_params)
        self.use_td_params = flag("use_td_params", use_td_params)
        self.depth, self.num_cells, self.device = depth, num_cells, device
        self.activation_class = _activation_layer(activation_class)
        in_features = self.n_agent_inputs * (self.n_agents if self.centralized else 1)
        # the structure; the parameters live in this module's own (stacked) tree
        self._net = MLP(
            in_features,
            self.n_agent_outputs,
            num_cells,
            depth=depth,
            activation_class=self.activation_class,
            **mlp_kwargs,
        )
        members = None if self.share_params else self.n_agents
        tree = _stacked_mlp_params(self._net, members, seed, backend, device, dtype)
        for layer in self._net.layers:
            layer.params = {}
        self._root = "params" if self.use_td_params else "_empty_net"
        other = "_empty_net" if self.use_td_params else "params"
        self._foreign_prefixes = ((f"{other}.", f"{self._root}."),)
        self.params = {self._root: tree}

    def apply(self, params: Params, *inputs: Any) -> Any:
        """``[*B, n_agents, n_agent_inputs]`` (several inputs are joined along the last
        axis) → ``[*B, n_agents, n_agent_outputs]``, computed with ``params``."""
        x = self._checked(_concat_last(inputs))
        xp = backend_of(x).xp
        net_params = params[self._root]
        batch = tuple(x.shape[:-2])
        if self.centralized:
            x = xp.reshape(x, (*batch, self.n_agents * self.n_agent_inputs))
        if self.share_params:
            y = self._net.apply(net_params, x)
            if not self.centralized:
                return y
            shape = (*batch, self.n_agents, self.n_agent_outputs)
            return xp.broadcast_to(xp.expand_dims(y, axis=-2), shape)
        # one network per agent: the agent axis first, every agent at once
        members_in = xp.expand_dims(x, axis=0) if self.centralized else xp.moveaxis(x, -2, 0)
        y = self._net.apply(net_params, members_in)
        return xp.moveaxis(y, 0, -2)

    def _checked(self, x: Any) -> Any:
        """``x`` itself, or ``ValueError`` naming the shape expected (TorchRL's
        ``_pre_forward_check``, plus the per-agent feature count)."""
        if x.ndim < 2 or x.shape[-2] != self.n_agents:
            raise ValueError(
                f"Multi-agent network expected input with shape[-2]={self.n_agents}, "
                f"but got {tuple(x.shape)}"
            )
        if x.shape[-1] != self.n_agent_inputs:
            raise ValueError(
                f"Multi-agent network expected input with shape[-1]={self.n_agent_inputs} "
                f"(n_agent_inputs), but got {tuple(x.shape)}"
            )
        return x

    def __repr__(self) -> str:
        return (
            f"MultiAgentMLP(n_agent_inputs={self.n_agent_inputs}, "
            f"n_agent_outputs={self.n_agent_outputs}, n_agents={self.n_agents}, "
            f"centralized={self.centralized}, share_params={self.share_params}, "
            f"num_cells={self._net.num_cells})"
        )


class Mixer(Layer):
    """A value mixer: the agents' chosen-action values ``[*B, n_agents, 1]`` (and, if
    ``needs_state``, a global state ``[*B, *state_shape]``) → a team value ``[*B, 1]``.

    Subclasses implement :meth:`mix`; calling the mixer checks the inputs' shapes
    (TorchRL's ``Mixer.forward``) and the output's.

    Parameters
    ----------
    n_agents : int
    needs_state : bool
    state_shape : tuple of int
        The state's trailing shape (without batch dimensions); ``()`` without state.
    device : optional
        Where the parameters live.
    """

    def __init__(
        self,
        n_agents: int,
        needs_state: bool,
        state_shape: Sequence[int] | int,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.n_agents = count("n_agents", n_agents)
        self.needs_state = flag("needs_state", needs_state)
        shape = (state_shape,) if isinstance(state_shape, int) else tuple(state_shape)
        self.state_shape = tuple(count("state_shape entries", d) for d in shape)
        self.device = device

    def apply(self, params: Params, *inputs: Any) -> Any:
        """``mix(chosen_action_value, state)`` after checking every shape."""
        chosen_action_value, state = self._split(inputs)
        if tuple(chosen_action_value.shape[-2:]) != (self.n_agents, 1):
            raise ValueError(
                "Mixer network expected chosen_action_value with last 2 dimensions "
                f"{(self.n_agents, 1)}, but got {tuple(chosen_action_value.shape)}"
            )
        batch = tuple(chosen_action_value.shape[:-2])
        if state is not None:
            self._check_state(state, batch)
        output = self.mix(params, chosen_action_value, state)
        if tuple(output.shape) != (*batch, 1):
            raise ValueError(
                "Mixer network expected output with same shape as input minus the "
                f"multi-agent dimension, {(*batch, 1)}, but got {tuple(output.shape)}"
            )
        return output

    def _split(self, inputs: tuple[Any, ...]) -> tuple[Any, Any]:
        """``(chosen_action_value, state or None)``, or ``ValueError`` for a wrong count."""
        if not self.needs_state:
            if len(inputs) != 1:
                raise ValueError(
                    f"{type(self).__name__} does not need a state and takes 1 input "
                    f"(chosen_action_value), got {len(inputs)}"
                )
            return inputs[0], None
        if len(inputs) != 2:
            raise ValueError(
                f"{type(self).__name__} needs a state and takes 2 inputs "
                f"(chosen_action_value, state), got {len(inputs)}"
            )
        return inputs[0], inputs[1]

    def _check_state(self, state: Any, batch: tuple[int, ...]) -> None:
        """``ValueError`` unless ``state`` is ``[*batch, *state_shape]``."""
        n = len(self.state_shape)
        trailing = tuple(state.shape[state.ndim - n :]) if state.ndim >= n else None
        if trailing != self.state_shape:
            raise ValueError(
                f"Mixer network expected state with ending shape {self.state_shape}, "
                f"but got state shape {tuple(state.shape)}"
            )
        if tuple(state.shape[: state.ndim - n]) != batch:
            raise ValueError(
                f"Mixer network expected state with batch dimensions {batch} (those of "
                f"chosen_action_value), but got state shape {tuple(state.shape)}"
            )

    def mix(self, params: Params, chosen_action_value: Any, state: Any) -> Any:
        """The team value ``[*B, 1]`` from ``[*B, n_agents, 1]`` (and the state)."""
        raise NotImplementedError


class VDNMixer(Mixer):
    r"""Value-Decomposition Networks' mixer: the team value is the sum of the agents'.

    .. math:: Q_{tot}(s, \mathbf{u}) = \sum_{a=1}^{n} Q_a(\tau_a, u_a)

    Sunehag et al. 2018, "Value-Decomposition Networks For Cooperative Multi-Agent
    Learning Based On Team Reward" (arXiv:1706.05296). No parameters.

    Parameters
    ----------
    n_agents : int
    device : optional
    """

    def __init__(self, n_agents: int, device: Any = None) -> None:
        super().__init__(n_agents=n_agents, needs_state=False, state_shape=(), device=device)

    def mix(self, params: Params, chosen_action_value: Any, state: Any) -> Any:
        return backend_of(chosen_action_value).xp.sum(chosen_action_value, axis=-2)

    def __repr__(self) -> str:
        return f"VDNMixer(n_agents={self.n_agents})"


class QMixer(Mixer):
    r"""QMIX's monotonic mixing network, its weights produced by hypernetworks of the state.

    With the agents' values ``q ∈ ℝ^{1×n}`` and the flattened state ``s``:

    .. math::

        h &= \operatorname{ELU}\!\left(q\,|W_1(s)| + b_1(s)\right),
            \quad |W_1(s)| \in ℝ^{n×m},\ b_1(s) \in ℝ^{1×m} \\
        Q_{tot} &= h\,|W_f(s)| + V(s), \quad |W_f(s)| \in ℝ^{m×1}

    where ``W_1`` (``hyper_w_1``), ``b_1`` (``hyper_b_1``) and ``W_f`` (``hyper_w_final``)
    are linear maps of ``s`` and ``V(s) = w_2ᵀ relu(W_v s + b_v) + c`` (``V.0``, ``V.2``).
    The absolute values keep ``∂Q_tot/∂Q_a ≥ 0``: the greedy joint action is the agents'
    greedy actions (Rashid et al. 2018, "QMIX: Monotonic Value Function Factorisation for
    Deep Multi-Agent Reinforcement Learning", arXiv:1803.11485).

    Parameters
    ----------
    state_shape : tuple of int
        The state's trailing shape (without batch dimensions), flattened to
        ``state_dim = prod(state_shape)`` inputs.
    mixing_embed_dim : int
        ``m``, the mixing layer's width.
    n_agents : int
    device : optional
        Where the parameters live on ``backend``.
    seed : int, default 0
        Layer ``k`` (in the order ``hyper_w_1, hyper_w_final, hyper_b_1, V.0, V.2``) is
        drawn from ``numpy.random.default_rng([seed, k])`` as torch's ``nn.Linear``.
    backend, dtype : optional keywords
        Where the parameters live (float32 NumPy by default).

    Notes
    -----
    Any batch shape: ``chosen_action_value`` ``[*B, n_agents, 1]`` and ``state``
    ``[*B, *state_shape]`` with the same ``*B`` (checked; TorchRL flattens both and
    would pair mismatched batches whose sizes agree).
    """

    def __init__(
        self,
        state_shape: Sequence[int] | int,
        mixing_embed_dim: int,
        n_agents: int,
        device: Any = None,
        *,
        seed: int = 0,
        backend: str | Backend = "numpy",
        dtype: Any = None,
    ) -> None:
        super().__init__(
            n_agents=n_agents, needs_state=True, state_shape=state_shape, device=device
        )
        self.embed_dim = count("mixing_embed_dim", mixing_embed_dim)
        self.state_dim = math.prod(self.state_shape)
        sizes = {
            "hyper_w_1": (self.state_dim, self.embed_dim * self.n_agents),
            "hyper_w_final": (self.state_dim, self.embed_dim),
            "hyper_b_1": (self.state_dim, self.embed_dim),
            "V.0": (self.state_dim, self.embed_dim),
            "V.2": (self.embed_dim, 1),
        }
        linears = {
            name: Linear(
                fan_in,
                fan_out,
                seed=np.random.default_rng([seed, k]),
                backend=backend,
                device=device,
                dtype=dtype,
            )
            for k, (name, (fan_in, fan_out)) in enumerate(sizes.items())
        }
        self.hyper_w_1 = linears["hyper_w_1"]
        self.hyper_w_final = linears["hyper_w_final"]
        self.hyper_b_1 = linears["hyper_b_1"]
        self.V = Sequential(linears["V.0"], ReLU(), linears["V.2"])

    _PARTS = ("hyper_w_1", "hyper_w_final", "hyper_b_1", "V")

    @property
    def params(self) -> Params:
        return {name: getattr(self, name).params for name in self._PARTS}

    @params.setter
    def params(self, tree: Params) -> None:
        for name in self._PARTS:
            if name in tree:
                getattr(self, name).params = tree[name]

    def mix(self, params: Params, chosen_action_value: Any, state: Any) -> Any:
        xp = backend_of(chosen_action_value, state=state).xp
        batch = tuple(chosen_action_value.shape[:-2])
        n, agents, embed = math.prod(batch), self.n_agents, self.embed_dim
        s = xp.reshape(state, (n, self.state_dim))
        q = xp.reshape(chosen_action_value, (n, 1, agents))
        w_1 = xp.reshape(xp.abs(self.hyper_w_1.apply(params["hyper_w_1"], s)), (n, agents, embed))
        b_1 = xp.reshape(self.hyper_b_1.apply(params["hyper_b_1"], s), (n, 1, embed))
        hidden = ELU().apply({}, q @ w_1 + b_1)  # [n, 1, m]
        w_final = xp.abs(self.hyper_w_final.apply(params["hyper_w_final"], s))
        v = xp.reshape(self.V.apply(params["V"], s), (n, 1, 1))
        q_tot = hidden @ xp.reshape(w_final, (n, embed, 1)) + v  # [n, 1, 1]
        return xp.reshape(q_tot, (*batch, 1))

    def __repr__(self) -> str:
        return (
            f"QMixer(state_shape={self.state_shape}, mixing_embed_dim={self.embed_dim}, "
            f"n_agents={self.n_agents})"
        )
