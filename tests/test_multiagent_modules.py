"""Multi-agent networks: arrayrl's MultiAgentMLP, QMixer and VDNMixer against TorchRL
0.14.1's on the same weights (outputs and every gradient), against hand-written NumPy
formulas, property tests, error messages; and TorchRL's multi-agent networks run through
arrayrl's torch adapter (TensorDictParams swapped by tensordict's own mechanism).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from arrayrl.backends import get_backend
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.modules import MLP
from arrayrl.modules.multiagent import Mixer, MultiAgentMLP, QMixer, VDNMixer

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential  # noqa: E402
from torch import nn  # noqa: E402
from torchrl import modules as tm  # noqa: E402
from torchrl.data import Categorical  # noqa: E402
from torchrl.modules.models.multiagent import MultiAgentNetBase  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import (  # noqa: E402
    ProbabilisticActor,
    ValueOperator,
    from_torch,
    unflatten_params,
)
from arrayrl.modules.torch_adapter import SwapPlan, TorchLayer, swap_plan  # noqa: E402

N_AGENTS, N_IN, N_OUT = 3, 4, 2
COMBOS = [
    pytest.param(share, central, id=f"share={share}-central={central}")
    for share in (True, False)
    for central in (True, False)
]
DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]
BATCHES = [(), (5,), (2, 3)]


def _grads(output, tensors, seed=0):
    """``∂ Σ(output · r) / ∂ tensors`` for a fixed random ``r`` (every entry counts)."""
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    loss = (output * weights.to(output.dtype)).sum()
    return torch.autograd.grad(loss, list(tensors))


def _assert_all_close(mine, theirs):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)


def _assert_optim_trains(optim, loss_fn, parameters):
    """Five steps of ``optim`` on ``loss_fn()`` lower the loss and move every one of
    ``parameters()``."""
    before = [p.detach().clone() for p in parameters()]
    losses = []
    for _ in range(5):
        loss = loss_fn()
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, parameters()))


# ---------------------------------------------------------------------------------------
# MultiAgentMLP against TorchRL
# ---------------------------------------------------------------------------------------
def _on(backend, dtype):
    """Torch's ``dtype`` on ``backend``."""
    if backend == "torch":
        return dtype
    return getattr(get_backend(backend).xp, str(dtype).removeprefix("torch."))


def _mlp_pair(share, central, dtype, backend="torch", **kwargs):
    """``(arrayrl's MultiAgentMLP on backend, TorchRL's)`` holding the same weights (TorchRL's
    initialisation after seed 0), in ``dtype``."""
    torch.manual_seed(0)
    theirs = tm.MultiAgentMLP(
        N_IN, N_OUT, N_AGENTS, centralized=central, share_params=share, **kwargs
    ).to(dtype)
    mine = MultiAgentMLP(
        N_IN,
        N_OUT,
        N_AGENTS,
        centralized=central,
        share_params=share,
        backend=backend,
        dtype=_on(backend, dtype),
        **kwargs,
    )
    mine.load_state_dict(theirs.state_dict())
    return mine, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("share", "central"), COMBOS)
def test_multiagent_mlp_matches_torchrl(share, central, dtype):
    mine, theirs = _mlp_pair(share, central, dtype, depth=2, num_cells=[6, 5])
    assert list(mine.named_parameters()) == [n for n, _ in theirs.named_parameters()]
    for batch in BATCHES:
        x = torch.randn(*batch, N_AGENTS, N_IN, dtype=dtype, requires_grad=True)
        y_mine, y_theirs = mine(x), theirs(x)
        assert y_mine.shape == (*batch, N_AGENTS, N_OUT) and y_mine.dtype == dtype
        torch.testing.assert_close(y_mine, y_theirs)
        _assert_all_close(
            _grads(y_mine, [*mine.parameters(), x]),
            _grads(y_theirs, [p for _, p in theirs.named_parameters()] + [x]),
        )


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize(("share", "central"), COMBOS)
def test_multiagent_mlp_on_array_backends(share, central, backend):
    pytest.importorskip(backend)
    mine, theirs = _mlp_pair(share, central, torch.float64, backend, depth=1)
    x = np.random.default_rng(1).standard_normal((2, 5, N_AGENTS, N_IN))
    got = mine.backend.to_numpy(mine(mine.backend.from_numpy(x)))
    np.testing.assert_allclose(got, theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize(
    "sizes",
    [
        {},  # TorchRL 0.14.1: a single linear layer (its docstring's 3 x 32 is not so)
        {"depth": 2},
        {"num_cells": [7, 3]},
        {"depth": 1, "num_cells": 9},
        {"depth": 1, "activation_class": nn.ReLU, "activate_last_layer": True},
        {"depth": 1, "activation_class": nn.ELU, "bias_last_layer": False},
    ],
    ids=["defaults", "depth", "cells", "depth+cells", "relu+last", "elu+nobias"],
)
def test_multiagent_mlp_layout_and_kwargs_follow_torchrl(share, sizes):
    mine, theirs = _mlp_pair(share, False, torch.float64, **sizes)
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()
    }
    x = torch.randn(5, N_AGENTS, N_IN, dtype=torch.float64)
    torch.testing.assert_close(mine(x), theirs(x))


@pytest.mark.parametrize("share", [True, False])
def test_use_td_params_names_and_loading_either_naming(share):
    torch.manual_seed(3)
    kwargs = {"centralized": False, "share_params": share, "depth": 1}
    theirs = tm.MultiAgentMLP(N_IN, N_OUT, N_AGENTS, use_td_params=False, **kwargs)
    mine = MultiAgentMLP(N_IN, N_OUT, N_AGENTS, use_td_params=False, backend="torch", **kwargs)
    assert list(mine.state_dict()) == list(theirs.state_dict())  # "_empty_net.0.weight", ...
    default = MultiAgentMLP(N_IN, N_OUT, N_AGENTS, backend="torch", **kwargs)
    default.load_state_dict(theirs.state_dict())  # "_empty_net.*" onto "params.*"
    x = torch.randn(4, N_AGENTS, N_IN)
    torch.testing.assert_close(default(x), theirs(x))
    mine.load_state_dict(default.state_dict())  # and back
    torch.testing.assert_close(mine(x), theirs(x))


def test_several_inputs_are_concatenated_like_torchrl():
    mine, theirs = _mlp_pair(False, True, torch.float64, depth=1)
    a, b = (
        torch.randn(5, N_AGENTS, 1, dtype=torch.float64),
        torch.randn(5, N_AGENTS, N_IN - 1, dtype=torch.float64),
    )
    torch.testing.assert_close(mine(a, b), theirs(a, b))


# ---------------------------------------------------------------------------------------
# MultiAgentMLP: initialisation, NumPy oracle, properties
# ---------------------------------------------------------------------------------------
def test_initialisation_is_torch_linear_per_agent_and_seeded():
    sizes = {"centralized": False, "share_params": False, "depth": 1, "num_cells": 60}
    net = MultiAgentMLP(50, 40, 4, **sizes)
    tree = net.params["params"]
    for name, fan_in in (("0", 50), ("2", 60)):
        bound = 1 / np.sqrt(fan_in)
        for leaf in tree[name].values():
            assert leaf.dtype == np.float32 and np.abs(leaf).max() <= bound
            # uniform on ±bound: variance bound²/3, drawn for each agent independently
            np.testing.assert_allclose(leaf.var(), bound**2 / 3, rtol=0.15)
        w = tree[name]["weight"]
        correlation = np.corrcoef(w[0].ravel(), w[1].ravel())[0, 1]
        assert abs(correlation) < 0.1 and not np.array_equal(w[0], w[1])
    same = MultiAgentMLP(50, 40, 4, backend="torch", **sizes)
    other = MultiAgentMLP(50, 40, 4, seed=1, **sizes)
    for name, leaf in net.named_parameters().items():
        np.testing.assert_array_equal(leaf, same.named_parameters()[name].detach().numpy())
        assert not np.array_equal(leaf, other.named_parameters()[name])
    assert all(p.is_leaf and p.requires_grad for p in same.parameters())


def test_shared_parameters_are_those_of_arrayrl_mlp_with_the_seed():
    net = MultiAgentMLP(3, 2, 5, centralized=True, share_params=True, depth=2, seed=7)
    mlp = MLP(15, 2, depth=2, seed=7)
    for name, leaf in mlp.named_parameters().items():
        np.testing.assert_array_equal(net.named_parameters()[f"params.{name}"], leaf)


def _numpy_forward(layers, x):
    """A tanh MLP in plain NumPy: ``layers`` is a list of (W, b)."""
    for k, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if k < len(layers) - 1:
            x = np.tanh(x)
    return x


def _agent_layers(net, agent):
    tree = net.params["params"]
    layers = [(tree[k]["weight"], tree[k]["bias"]) for k in sorted(tree, key=int)]
    if net.share_params:
        return layers
    return [(w[agent], b[agent]) for w, b in layers]


@settings(max_examples=30, deadline=None)
@given(
    n_agents=st.integers(1, 4),
    n_in=st.integers(1, 3),
    n_out=st.integers(1, 3),
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    share=st.booleans(),
    central=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_multiagent_mlp_is_the_per_agent_numpy_formula(
    n_agents, n_in, n_out, batch, share, central, seed
):
    net = MultiAgentMLP(
        n_in,
        n_out,
        n_agents,
        centralized=central,
        share_params=share,
        num_cells=[5],
        seed=seed,
        dtype=np.float64,
    )
    x = np.random.default_rng(seed).standard_normal((*batch, n_agents, n_in))
    y = net(x)
    assert y.shape == (*batch, n_agents, n_out)
    for a in range(n_agents):
        seen = x.reshape(*batch, n_agents * n_in) if central else x[..., a, :]
        expected = _numpy_forward(_agent_layers(net, a), seen)
        np.testing.assert_allclose(y[..., a, :], expected, rtol=1e-12, atol=1e-12)
    if not central and n_agents > 1:  # an agent's output ignores the other agents' inputs
        moved = x.copy()
        moved[..., 1:, :] += 1.0
        np.testing.assert_array_equal(net(moved)[..., 0, :], y[..., 0, :])
    if share and not central:  # homogeneous agents: permuting agents permutes outputs
        order = np.random.default_rng(seed).permutation(n_agents)
        np.testing.assert_allclose(net(x[..., order, :]), y[..., order, :], rtol=1e-12)


def test_input_is_not_mutated_and_optim_trains_parameters():
    net = MultiAgentMLP(
        N_IN, N_OUT, N_AGENTS, centralized=True, share_params=False, depth=1, backend="torch"
    )
    x = torch.randn(6, N_AGENTS, N_IN)
    x_before = x.clone()
    optim = torch.optim.SGD(net.parameters(), lr=0.1)
    _assert_optim_trains(optim, lambda: net(x).pow(2).mean(), net.parameters)
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)


def test_to_moves_multiagent_networks_between_backends():
    net = MultiAgentMLP(N_IN, N_OUT, N_AGENTS, centralized=False, share_params=False, depth=1)
    mixer = QMixer((5,), 4, N_AGENTS)
    x = np.random.default_rng(0).standard_normal((3, N_AGENTS, N_IN)).astype(np.float32)
    q = np.random.default_rng(1).standard_normal((3, N_AGENTS, 1)).astype(np.float32)
    s = np.random.default_rng(2).standard_normal((3, 5)).astype(np.float32)
    y, q_tot = net(x), mixer(q, s)
    assert net.to("torch") is net and mixer.to("torch") is mixer
    assert all(isinstance(p, torch.Tensor) and p.requires_grad for p in net.parameters())
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), y, rtol=1e-6)
    got = mixer(torch.from_numpy(q), torch.from_numpy(s)).detach().numpy()
    np.testing.assert_allclose(got, q_tot, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# MultiAgentMLP: errors
# ---------------------------------------------------------------------------------------
def test_multiagent_mlp_argument_errors():
    with pytest.raises(TypeError, match="centralized"):
        MultiAgentMLP(2, 2, 3, share_params=True)
    with pytest.raises(TypeError, match="share_params"):
        MultiAgentMLP(2, 2, 3, centralized=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'dropout'"):
        MultiAgentMLP(2, 2, 3, centralized=True, share_params=True, dropout=0.1)
    with pytest.raises(TypeError, match="n_agent_inputs must be an int"):
        MultiAgentMLP(None, 2, 3, centralized=True, share_params=True)
    with pytest.raises(ValueError, match="n_agents must be >= 1"):
        MultiAgentMLP(2, 2, 0, centralized=True, share_params=True)
    with pytest.raises(TypeError, match="Softsign has no arrayrl counterpart"):
        MultiAgentMLP(2, 2, 3, centralized=True, share_params=True, activation_class=nn.Softsign)
    net = MultiAgentMLP(2, 2, 3, centralised=True, share_params=True)  # TorchRL's old spelling
    assert net.centralized and net.named_parameters()["params.0.weight"].shape == (2, 6)


def test_multiagent_mlp_shape_errors_name_the_shapes():
    net = MultiAgentMLP(N_IN, N_OUT, N_AGENTS, centralized=False, share_params=False)
    with pytest.raises(ValueError, match=r"shape\[-2\]=3, but got \(5, 4, 4\)"):
        net(np.zeros((5, 4, N_IN), np.float32))
    with pytest.raises(ValueError, match=r"shape\[-2\]=3, but got \(4,\)"):
        net(np.zeros((N_IN,), np.float32))
    with pytest.raises(ValueError, match=r"shape\[-1\]=4 \(n_agent_inputs\), but got \(5, 3, 2\)"):
        net(np.zeros((5, N_AGENTS, 2), np.float32))


# ---------------------------------------------------------------------------------------
# Mixers
# ---------------------------------------------------------------------------------------
def _qmixer_pair(state_shape, dtype, embed=5, backend="torch"):
    """``(arrayrl's QMixer on backend, TorchRL's)`` holding the same weights (TorchRL's
    initialisation after seed 0), in ``dtype``."""
    torch.manual_seed(0)
    theirs = tm.QMixer(state_shape, embed, N_AGENTS, "cpu").to(dtype)
    mine = QMixer(state_shape, embed, N_AGENTS, None, backend=backend, dtype=_on(backend, dtype))
    mine.load_state_dict(theirs.state_dict())
    return mine, theirs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("state_shape", [(6,), (2, 3)], ids=["flat", "2d"])
def test_qmixer_matches_torchrl(state_shape, dtype):
    mine, theirs = _qmixer_pair(torch.Size(state_shape), dtype)
    assert list(mine.named_parameters()) == [n for n, _ in theirs.named_parameters()]
    for batch in BATCHES:
        q = torch.randn(*batch, N_AGENTS, 1, dtype=dtype, requires_grad=True)
        s = torch.randn(*batch, *state_shape, dtype=dtype, requires_grad=True)
        out_mine, out_theirs = mine(q, s), theirs(q, s)
        assert out_mine.shape == (*batch, 1)
        torch.testing.assert_close(out_mine, out_theirs)
        _assert_all_close(
            _grads(out_mine, [*mine.parameters(), q, s]),
            _grads(out_theirs, [*theirs.parameters(), q, s]),
        )


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_qmixer_on_array_backends(backend):
    pytest.importorskip(backend)
    mine, theirs = _qmixer_pair((6,), torch.float64, backend=backend)
    rng = np.random.default_rng(0)
    q, s = rng.standard_normal((4, 2, N_AGENTS, 1)), rng.standard_normal((4, 2, 6))
    got = mine.backend.to_numpy(mine(mine.backend.from_numpy(q), mine.backend.from_numpy(s)))
    expected = theirs(torch.from_numpy(q), torch.from_numpy(s)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_qmixer_is_the_numpy_formula():
    mixer = QMixer((4,), 3, N_AGENTS, dtype=np.float64, seed=5)
    rng = np.random.default_rng(3)
    q, s = rng.standard_normal((7, N_AGENTS, 1)), rng.standard_normal((7, 4))
    p = mixer.params

    def lin(name, x, tree=p):
        return x @ tree[name]["weight"].T + tree[name]["bias"]

    expected = []
    for i in range(7):
        w1 = np.abs(lin("hyper_w_1", s[i])).reshape(N_AGENTS, 3)
        hidden = q[i, :, 0] @ w1 + lin("hyper_b_1", s[i])
        hidden = np.where(hidden > 0, hidden, np.exp(hidden) - 1)
        v = lin("2", np.maximum(lin("0", s[i], p["V"]), 0), p["V"])
        expected.append(hidden @ np.abs(lin("hyper_w_final", s[i])) + v)
    np.testing.assert_allclose(mixer(q, s), np.stack(expected), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), agent=st.integers(0, N_AGENTS - 1), step=st.floats(1e-3, 10.0))
def test_qmixer_is_monotonic_in_every_agent_value(seed, agent, step):
    """QMIX's constraint: ∂Q_tot/∂Q_a ≥ 0, so raising one agent's value never lowers Q_tot."""
    mixer = QMixer((4,), 6, N_AGENTS, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    q, s = rng.standard_normal((9, N_AGENTS, 1)), rng.standard_normal((9, 4))
    raised = q.copy()
    raised[:, agent] += step
    assert np.all(mixer(raised, s) >= mixer(q, s) - 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vdn_mixer_matches_torchrl_and_the_sum(dtype):
    mine, theirs = VDNMixer(N_AGENTS, None), tm.VDNMixer(N_AGENTS, "cpu")
    assert mine.params == {} and list(theirs.parameters()) == []
    for batch in BATCHES:
        q = torch.randn(*batch, N_AGENTS, 1, dtype=dtype, requires_grad=True)
        out = mine(q)
        torch.testing.assert_close(out, theirs(q))
        torch.testing.assert_close(_grads(out, [q])[0], _grads(theirs(q), [q])[0])
    q = np.random.default_rng(0).standard_normal((4, N_AGENTS, 1))
    np.testing.assert_allclose(VDNMixer(N_AGENTS)(q), q[:, 0] + q[:, 1] + q[:, 2])


def test_mixer_errors_name_the_shapes():
    qmix, vdn = QMixer((4,), 3, N_AGENTS), VDNMixer(N_AGENTS)
    q, s = np.zeros((5, N_AGENTS, 1), np.float32), np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"last 2 dimensions \(3, 1\), but got \(5, 2, 1\)"):
        vdn(np.zeros((5, 2, 1), np.float32))
    with pytest.raises(ValueError, match=r"last 2 dimensions \(3, 1\), but got \(5, 3\)"):
        qmix(np.zeros((5, N_AGENTS), np.float32), s)
    with pytest.raises(ValueError, match=r"ending shape \(4,\), but got state shape \(5, 3\)"):
        qmix(q, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"batch dimensions \(5,\) .* state shape \(6, 4\)"):
        qmix(q, np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="does not need a state and takes 1 input"):
        vdn(q, s)
    with pytest.raises(ValueError, match=r"needs a state and takes 2 inputs .* got 1"):
        qmix(q)
    with pytest.raises(NotImplementedError):
        Mixer(N_AGENTS, False, ())(q)
    with pytest.raises(ValueError, match="mixing_embed_dim must be >= 1"):
        QMixer((4,), 0, N_AGENTS)


# ---------------------------------------------------------------------------------------
# TorchRL's multi-agent networks through arrayrl's adapter
# ---------------------------------------------------------------------------------------
OBS, ACTS, B = ("agents", "observation"), 5, 6


def _agents_batch(dtype=torch.float32):
    torch.manual_seed(11)
    agents = TensorDict({"observation": torch.randn(B, N_AGENTS, N_IN, dtype=dtype)}, [B, N_AGENTS])
    return TensorDict({"agents": agents}, [B])


def _target_tree(module, scale=0.1):
    """A different tree for the same module (a target network): perturbed copies."""
    torch.manual_seed(5)
    return {
        name: (p.detach() + scale * torch.randn_like(p)).requires_grad_(True)
        for name, p in module.named_parameters()
    }


def _loaded_copy(module, flat):
    """The reference for a swapped tree: a deep copy of ``module`` holding ``flat``'s
    values as its own parameters (leaves whose gradients we read)."""
    twin = copy.deepcopy(module)
    for sub in twin.modules():
        if isinstance(sub, MultiAgentNetBase) and not sub.use_td_params:
            # deepcopy unlinks TorchRL's plain-TensorDict ``params`` from ``_empty_net``
            relinked = TensorDict.from_module(sub._empty_net, as_module=False)
            relinked.batch_size = sub.params.batch_size
            sub.params = relinked
    with torch.no_grad():
        for name, p in twin.named_parameters():
            p.copy_(flat[name])
    return twin


def _check_untouched(module, saved):
    now = dict(module.named_parameters())
    assert list(now) == list(saved)
    for name, (obj, value) in saved.items():
        assert now[name] is obj
        torch.testing.assert_close(now[name].detach(), value, rtol=0, atol=0)


def _saved(module):
    return {n: (p, p.detach().clone()) for n, p in module.named_parameters()}


@pytest.mark.parametrize("use_td_params", [True, False], ids=["td_params", "plain_td"])
@pytest.mark.parametrize(("share", "central"), COMBOS)
def test_adapter_runs_torchrl_multiagent_mlp(share, central, use_td_params):
    torch.manual_seed(0)
    net = tm.MultiAgentMLP(
        N_IN,
        N_OUT,
        N_AGENTS,
        centralized=central,
        share_params=share,
        depth=1,
        num_cells=8,
        use_td_params=use_td_params,
    )
    module = TensorDictModule(net, in_keys=[OBS], out_keys=[("agents", "out")])
    adapter = from_torch(module)
    assert [id(p) for p in adapter.parameters()] == [id(p) for p in module.parameters()]
    td, saved = _agents_batch(), _saved(module)
    # own parameters: TorchRL's outputs and gradients, TensorDict and ArrayDict batches
    expected = module(td.clone())["agents", "out"]
    got = adapter(td.clone())["agents", "out"]
    torch.testing.assert_close(got, expected)
    from_arraydict = adapter(ArrayDict.from_tensordict(td.clone())).get(("agents", "out"))
    torch.testing.assert_close(from_arraydict, expected)
    _assert_all_close(_grads(got, adapter.parameters()), _grads(expected, module.parameters()))
    # a swapped tree (a target copy): the copy's outputs and gradients, own params untouched
    target = _target_tree(module)
    twin = _loaded_copy(module, target)
    got = adapter(td.clone(), params=unflatten_params(target))["agents", "out"]
    expected = twin(td.clone())["agents", "out"]
    assert not torch.allclose(got, module(td.clone())["agents", "out"])
    torch.testing.assert_close(got, expected)
    _assert_all_close(_grads(got, target.values()), _grads(expected, twin.parameters()))
    _check_untouched(module, saved)
    # TorchLayer on the bare network: the same swap
    layer = TorchLayer(net)
    x = td["agents", "observation"]
    tree = unflatten_params({k.removeprefix("module."): v for k, v in target.items()})
    torch.testing.assert_close(layer(x, params=tree), expected)
    _check_untouched(module, saved)


def test_swap_plan_keeps_functional_call_for_plain_modules():
    assert swap_plan(nn.Sequential(nn.Linear(2, 3), nn.Tanh())) == SwapPlan(False, ())
    shared = tm.MultiAgentMLP(2, 2, 3, centralized=False, share_params=True)
    assert swap_plan(TensorDictModule(shared, ["x"], ["y"])).tensordict_params
    plain = tm.MultiAgentMLP(2, 2, 3, centralized=False, share_params=True, use_td_params=False)
    plan = swap_plan(plain)
    assert not plan.tensordict_params and plan.attributes == ((plain, "params"),)


def test_optim_on_adapter_parameters_trains_the_users_module():
    torch.manual_seed(0)
    net = tm.MultiAgentMLP(
        N_IN, N_OUT, N_AGENTS, centralized=False, share_params=False, depth=1, num_cells=8
    )
    module = TensorDictModule(net, in_keys=[OBS], out_keys=[("agents", "out")])
    adapter, td = from_torch(module), _agents_batch()
    optim = torch.optim.Adam(adapter.parameters(), lr=0.05)
    _assert_optim_trains(
        optim, lambda: adapter(td.clone())["agents", "out"].pow(2).mean(), module.parameters
    )
    torch.testing.assert_close(
        module(td.clone())["agents", "out"], adapter(td.clone())["agents", "out"]
    )


@pytest.mark.parametrize(("share", "central"), COMBOS)
def test_adapter_runs_torchrl_multiagent_probabilistic_actor(share, central):
    torch.manual_seed(0)
    net = tm.MultiAgentMLP(
        N_IN, 2 * N_OUT, N_AGENTS, centralized=central, share_params=share, depth=1, num_cells=8
    )
    params_module = TensorDictModule(
        nn.Sequential(net, NormalParamExtractor()),
        in_keys=[OBS],
        out_keys=[("agents", "loc"), ("agents", "scale")],
    )
    theirs = tm.ProbabilisticActor(
        params_module,
        in_keys=[("agents", "loc"), ("agents", "scale")],
        out_keys=[("agents", "action")],
        distribution_class=tm.TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 2.0},
        return_log_prob=True,
    )
    mine = from_torch(theirs)
    assert isinstance(mine, ProbabilisticActor)
    assert mine.log_prob_key == ("agents", "action_log_prob")
    td, saved = theirs(_agents_batch()), _saved(theirs)
    action = td["agents", "action"].detach()
    expected = theirs.get_dist(td.clone()).log_prob(action)
    got = mine.get_dist(ArrayDict.from_tensordict(td.clone())).log_prob(action)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(td["agents", "action_log_prob"], expected)
    _assert_all_close(_grads(got, mine.parameters()), _grads(expected, theirs.parameters()))
    target = _target_tree(theirs)
    twin = _loaded_copy(theirs, target)
    tree = {"module": unflatten_params(target)}  # arrayrl's actor: {"module": <its net>}
    got = mine.get_dist(ArrayDict.from_tensordict(td.clone()), params=tree).log_prob(action)
    expected = twin.get_dist(td.clone()).log_prob(action)
    torch.testing.assert_close(got, expected)
    _assert_all_close(_grads(got, target.values()), _grads(expected, twin.parameters()))
    _check_untouched(theirs, saved)


@pytest.mark.parametrize(("share", "central"), COMBOS)
def test_adapter_runs_torchrl_multiagent_qvalue_sequence(share, central):
    torch.manual_seed(0)
    net = tm.MultiAgentMLP(
        N_IN, ACTS, N_AGENTS, centralized=central, share_params=share, depth=1, num_cells=8
    )
    keys = [("agents", "action"), ("agents", "action_value"), ("agents", "chosen_action_value")]
    module = tm.SafeSequential(
        TensorDictModule(net, in_keys=[OBS], out_keys=[("agents", "action_value")]),
        tm.QValueModule(
            action_value_key=("agents", "action_value"), out_keys=keys, spec=Categorical(ACTS)
        ),
    )
    adapter, td, saved = from_torch(module), _agents_batch(), _saved(module)
    theirs, mine = module(td.clone()), adapter(td.clone())
    for key in keys:
        torch.testing.assert_close(mine[key], theirs[key])
    assert mine["agents", "action"].shape == (B, N_AGENTS)
    chosen = ("agents", "chosen_action_value")
    _assert_all_close(
        _grads(mine[chosen], adapter.parameters()), _grads(theirs[chosen], module.parameters())
    )
    target = _target_tree(module)
    twin = _loaded_copy(module, target)
    mine = adapter(td.clone(), params=unflatten_params(target))
    theirs = twin(td.clone())
    for key in keys:
        torch.testing.assert_close(mine[key], theirs[key])
    _assert_all_close(
        _grads(mine[chosen], target.values()), _grads(theirs[chosen], twin.parameters())
    )
    _check_untouched(module, saved)


@pytest.mark.parametrize("mixer", ["QMixer", "VDNMixer"])
def test_adapter_runs_torchrl_mixers(mixer):
    torch.manual_seed(0)
    if mixer == "QMixer":
        net, in_keys = tm.QMixer((4,), 5, N_AGENTS, "cpu"), [("agents", "q"), "state"]
    else:
        net, in_keys = tm.VDNMixer(N_AGENTS, "cpu"), [("agents", "q")]
    module = TensorDictModule(net, in_keys=in_keys, out_keys=["q_tot"])
    adapter, saved = from_torch(module), _saved(module)
    td = TensorDict(
        {
            "agents": TensorDict({"q": torch.randn(B, N_AGENTS, 1)}, [B, N_AGENTS]),
            "state": torch.randn(B, 4),
        },
        [B],
    )
    torch.testing.assert_close(adapter(td.clone())["q_tot"], module(td.clone())["q_tot"])
    if mixer == "QMixer":
        target = _target_tree(module)
        got = adapter(td.clone(), params=unflatten_params(target))["q_tot"]
        torch.testing.assert_close(got, _loaded_copy(module, target)(td.clone())["q_tot"])
    _check_untouched(module, saved)


def test_adapter_swaps_a_network_used_twice_at_both_places():
    """One MultiAgentMLP in two modules of a sequence: its parameters appear once in
    ``named_parameters``, and the swapped tree is used at both places."""
    torch.manual_seed(0)
    net = tm.MultiAgentMLP(N_IN, N_IN, N_AGENTS, centralized=False, share_params=False, depth=1)
    module = TensorDictSequential(
        TensorDictModule(net, in_keys=[OBS], out_keys=[("agents", "hidden")]),
        TensorDictModule(net, in_keys=[("agents", "hidden")], out_keys=[("agents", "out")]),
    )
    adapter, td, saved = from_torch(module), _agents_batch(), _saved(module)
    target = _target_tree(module)
    twin = _loaded_copy(module, target)
    got = adapter(td.clone(), params=unflatten_params(target))["agents", "out"]
    expected = twin(td.clone())["agents", "out"]
    torch.testing.assert_close(got, expected)
    _assert_all_close(_grads(got, target.values()), _grads(expected, twin.parameters()))
    _check_untouched(module, saved)


def test_arrayrl_value_operator_loads_torchrl_multiagent_critic():
    """A TorchRL critic's state_dict loads name for name into arrayrl's counterpart."""
    torch.manual_seed(0)
    keys = {"in_keys": [OBS], "out_keys": [("agents", "state_value")]}
    kwargs = {"centralized": True, "share_params": False, "depth": 1}
    theirs = tm.ValueOperator(tm.MultiAgentMLP(N_IN, 1, N_AGENTS, **kwargs), **keys)
    mine = ValueOperator(MultiAgentMLP(N_IN, 1, N_AGENTS, backend="torch", **kwargs), **keys)
    mine.load_state_dict(theirs.state_dict())
    td = _agents_batch()
    expected = theirs(td.clone())["agents", "state_value"]
    got = mine(ArrayDict.from_tensordict(td.clone())).get(("agents", "state_value"))
    torch.testing.assert_close(got, expected)
