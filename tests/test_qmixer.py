"""QMixerLoss (QMIX and VDN).

The loss is compared with TorchRL 0.14.1's on the same modules, weights (target copies
perturbed alike) and batches: the loss, the priority it sets in the caller's batch and
the gradient with respect to every parameter of both networks, in float32 and float64,
for both mixers, categorical and one-hot actions, shared and per-agent Q networks,
delayed targets on and off and the three TD estimators. arrayrl's own modules
(``MultiAgentMLP``, ``QMixer``, ``VDNMixer``) loaded with TorchRL's weights give the
same numbers; VDN is checked against a NumPy transcription of its equations, and the
errors, keys, target updates and a hypothesis invariant (VDN with shared weights does
not depend on the order of the agents) are tested on their own.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.data import Categorical as TorchRLCategorical  # noqa: E402
from torchrl.data import Composite as TorchRLComposite  # noqa: E402
from torchrl.modules import MultiAgentMLP as TorchRLMultiAgentMLP  # noqa: E402
from torchrl.modules import QValueModule as TorchRLQValueModule  # noqa: E402
from torchrl.modules import SafeSequential  # noqa: E402
from torchrl.modules.models.multiagent import QMixer as TorchRLQMixer  # noqa: E402
from torchrl.modules.models.multiagent import VDNMixer as TorchRLVDNMixer  # noqa: E402
from torchrl.objectives import SoftUpdate as TorchRLSoftUpdate  # noqa: E402
from torchrl.objectives import ValueEstimators as TorchRLValueEstimators  # noqa: E402
from torchrl.objectives.multiagent import QMixerLoss as TorchRLQMixerLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import DictModule, Linear, QValueActor, flatten_params, map_params  # noqa: E402
from arrayrl.modules.multiagent import MultiAgentMLP, QMixer, VDNMixer  # noqa: E402
from arrayrl.objectives import HardUpdate, SoftUpdate, ValueEstimators  # noqa: E402
from arrayrl.objectives.multiagent.qmixer import QMixerLoss  # noqa: E402

N_AGENTS, OBS, N_ACT, STATE, EMBED, HIDDEN = 3, 4, 3, 5, 4, 8
GAMMA = 0.75
LOCAL, GLOBAL = ("agents", "chosen_action_value"), "chosen_action_value"
VALUES, ACTION, OBSERVATION = (
    ("agents", "action_value"),
    ("agents", "action"),
    ("agents", "observation"),
)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [torch.float32, torch.float64]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- TorchRL modules -------------------------------------------------------------------------
def _torchrl_qnet(space="categorical", dtype=torch.float32, share_params=True, seed=0, **greedy):
    """TorchRL's QMIX value network: a MultiAgentMLP, then a QValueModule over the agents."""
    torch.manual_seed(seed)
    net = TorchRLMultiAgentMLP(
        n_agent_inputs=OBS,
        n_agent_outputs=N_ACT,
        n_agents=N_AGENTS,
        centralized=False,
        share_params=share_params,
        depth=1,
        num_cells=HIDDEN,
    ).to(dtype)
    greedy = greedy or {"action_space": space}
    return SafeSequential(
        TensorDictModule(net, in_keys=[OBSERVATION], out_keys=[VALUES]),
        TorchRLQValueModule(action_value_key=VALUES, out_keys=[ACTION, VALUES, LOCAL], **greedy),
    )


def _torchrl_mixer(kind="qmix", dtype=torch.float32, seed=1):
    torch.manual_seed(seed)
    if kind == "vdn":
        return TensorDictModule(
            TorchRLVDNMixer(N_AGENTS, "cpu"), in_keys=[LOCAL], out_keys=[GLOBAL]
        )
    mixer = TorchRLQMixer(
        state_shape=(STATE,), mixing_embed_dim=EMBED, n_agents=N_AGENTS, device="cpu"
    )
    return TensorDictModule(mixer.to(dtype), in_keys=[LOCAL, "state"], out_keys=[GLOBAL])


def _batch(shape=(6,), dtype=torch.float32, space="categorical", seed=0):
    gen = torch.Generator().manual_seed(seed)
    agents = (*shape, N_AGENTS)
    action = torch.randint(0, N_ACT, agents, generator=gen)
    if space == "one-hot":
        action = torch.nn.functional.one_hot(action, N_ACT)
    done = torch.rand(*shape, 1, generator=gen) < 0.3
    data = {
        "agents": {
            "observation": torch.randn(*agents, OBS, generator=gen, dtype=dtype),
            "action": action,
        },
        "state": torch.randn(*shape, STATE, generator=gen, dtype=dtype),
        "next": {
            "agents": {"observation": torch.randn(*agents, OBS, generator=gen, dtype=dtype)},
            "state": torch.randn(*shape, STATE, generator=gen, dtype=dtype),
            "reward": 2.0 * torch.randn(*shape, 1, generator=gen, dtype=dtype),
            "done": done,
            "terminated": done & (torch.rand(*shape, 1, generator=gen) < 0.5),
        },
    }
    return TensorDict(data, batch_size=shape)


def _perturb_targets(theirs, seed=3):
    """Move TorchRL's target copies away from the trained weights (same noise each call)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("target_local_value_network_params", "target_mixer_network_params"):
            for _, leaf in getattr(theirs, name).items(True, True):
                noise = torch.randn(leaf.shape, generator=gen, dtype=torch.float64)
                leaf.data.add_(0.2 * noise.to(leaf.dtype))


def _pair(space="categorical", kind="qmix", dtype=torch.float32, share_params=True, **config):
    """``(TorchRL's loss, arrayrl's loss)`` over copies of the same TorchRL modules, with
    the same (perturbed) target weights."""
    qnet, mixer = _torchrl_qnet(space, dtype, share_params), _torchrl_mixer(kind, dtype)
    theirs = TorchRLQMixerLoss(qnet, mixer, action_space=space, **config)
    ours = QMixerLoss(copy.deepcopy(qnet), copy.deepcopy(mixer), action_space=space, **config)
    # gamma = 0.75 is exact in float32, the dtype of TorchRL's gamma buffer
    theirs.make_value_estimator(TorchRLValueEstimators.TD0, gamma=GAMMA)
    ours.make_value_estimator("td0", gamma=GAMMA)
    if config.get("delay_value", True):
        _perturb_targets(theirs)
        state = theirs.state_dict()
        ours.load_state_dict({key: state[key] for key in ours.state_dict()})
    return theirs, ours


def _outputs(loss, batch):
    """``(loss, td_error set in the batch, gradients of every parameter)``."""
    batch = batch.clone()
    value = loss(batch)["loss"]
    grads = torch.autograd.grad(value, list(loss.parameters()), allow_unused=True)
    return value.detach(), batch["td_error"], grads


def _assert_same(theirs, ours, batch, dtype):
    t_loss, t_prio, t_grads = _outputs(theirs, batch)
    o_loss, o_prio, o_grads = _outputs(ours, batch)
    assert o_loss.shape == () and o_loss.dtype == dtype
    assert o_prio.shape == (*batch.batch_size, 1)
    torch.testing.assert_close(o_loss, t_loss, **TOL[dtype])
    torch.testing.assert_close(o_prio, t_prio, **TOL[dtype])
    assert len(o_grads) == len(t_grads) > 0
    for mine, reference in zip(o_grads, t_grads):
        assert mine is not None and reference is not None
        torch.testing.assert_close(mine, reference, **TOL[dtype])


# -- against TorchRL ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("share_params", [True, False], ids=["shared", "per_agent"])
@pytest.mark.parametrize("kind", ["vdn", "qmix"])
@pytest.mark.parametrize("space", ["categorical", "one-hot"])
def test_matches_torchrl(space, kind, share_params, dtype):
    theirs, ours = _pair(space, kind, dtype, share_params)
    _assert_same(theirs, ours, _batch(dtype=dtype, space=space), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "estimator, extra",
    [("TD1", {}), ("TDLambda", {"lmbda": 0.5})],
)
def test_matches_torchrl_multistep_estimators(estimator, extra, dtype):
    theirs, ours = _pair("one-hot", "qmix", dtype, share_params=False)
    theirs.make_value_estimator(getattr(TorchRLValueEstimators, estimator), gamma=GAMMA, **extra)
    ours.make_value_estimator(estimator, gamma=GAMMA, **extra)
    _assert_same(theirs, ours, _batch((3, 4), dtype, "one-hot", seed=2), dtype)


@pytest.mark.parametrize("loss_function", ["l1", "smooth_l1"])
def test_matches_torchrl_without_delay_and_other_distances(loss_function):
    theirs, ours = _pair(
        "categorical", "qmix", torch.float64, delay_value=False, loss_function=loss_function
    )
    assert not ours._owns_target["local_value_network"]
    _assert_same(theirs, ours, _batch(dtype=torch.float64, seed=4), torch.float64)


def test_agent_observations_as_mixer_state_match_torchrl():
    """TorchRL's example mixes on the agents' observations (``state_shape=(n, obs)``)."""
    torch.manual_seed(5)
    mixer = TensorDictModule(
        TorchRLQMixer(
            state_shape=(N_AGENTS, OBS), mixing_embed_dim=EMBED, n_agents=N_AGENTS, device="cpu"
        ),
        in_keys=[LOCAL, OBSERVATION],
        out_keys=[GLOBAL],
    )
    qnet = _torchrl_qnet("one-hot")
    theirs = TorchRLQMixerLoss(qnet, mixer, action_space="one-hot")
    ours = QMixerLoss(copy.deepcopy(qnet), copy.deepcopy(mixer))
    _assert_same(theirs, ours, _batch(space="one-hot", seed=6), torch.float32)


def _arrayrl_networks(qnet, mixer, kind, space, backend="torch"):
    """arrayrl's MultiAgentMLP / mixers loaded with TorchRL's weights."""
    net = qnet[0].module
    ours_net = MultiAgentMLP(
        OBS,
        N_ACT,
        N_AGENTS,
        centralized=False,
        share_params=net.share_params,
        depth=1,
        num_cells=HIDDEN,
        dtype=np.float64,
    )
    ours_net.load_state_dict({k: v.detach().numpy() for k, v in net.state_dict().items()})
    local = QValueActor(
        ours_net,
        in_keys=[OBSERVATION],
        action_space=space,
        action_value_key=VALUES,
        action_key=ACTION,
        chosen_action_value_key=LOCAL,
    )
    if kind == "vdn":
        return local, DictModule(VDNMixer(N_AGENTS), in_keys=[LOCAL], out_keys=[GLOBAL])
    ours_mixer = QMixer((STATE,), EMBED, N_AGENTS, dtype=np.float64)
    state = {k: v.detach().numpy() for k, v in mixer.module.state_dict().items()}
    ours_mixer.load_state_dict(state)
    return local, DictModule(ours_mixer, in_keys=[LOCAL, "state"], out_keys=[GLOBAL])


@pytest.mark.parametrize("kind", ["vdn", "qmix"])
@pytest.mark.parametrize("share_params", [True, False], ids=["shared", "per_agent"])
def test_arrayrl_modules_with_torchrl_weights_match_torchrl(kind, share_params):
    """arrayrl's MultiAgentMLP / QMixer / VDNMixer holding TorchRL's weights: on torch
    (gradients included) and on NumPy."""
    dtype = torch.float64
    qnet, mixer = _torchrl_qnet("categorical", dtype, share_params), _torchrl_mixer(kind, dtype)
    theirs = TorchRLQMixerLoss(qnet, mixer, action_space="categorical", delay_value=False)
    theirs.make_value_estimator(TorchRLValueEstimators.TD0, gamma=GAMMA)
    losses = []
    for backend in ("torch", "numpy"):
        loss = QMixerLoss(*_arrayrl_networks(qnet, mixer, kind, "categorical"), delay_value=False)
        losses.append(loss.make_value_estimator("td0", gamma=GAMMA).to(backend))
    _assert_same(theirs, losses[0], _batch(dtype=dtype, seed=7), dtype)
    batch = ArrayDict.from_tensordict(_batch(dtype=dtype, seed=7)).to("numpy")
    expected = theirs(_batch(dtype=dtype, seed=7))["loss"].item()
    np.testing.assert_allclose(losses[1](batch)["loss"], expected, rtol=1e-10)


# -- the equations, in NumPy ----------------------------------------------------------------------
def _vdn_numpy_loss(w, b, target_w, target_b, batch, gamma):
    """VDN with a linear Q network: Q_tot = Σ_i Q_i(o_i, a_i), y = r + γ(1 − term) Σ_i max Q̄_i."""
    obs, act = batch["agents"]["observation"], batch["agents"]["action"]
    values = obs @ w.T + b  # [B, n, A]
    q_tot = np.take_along_axis(values, act[..., None], -1)[..., 0].sum(-1)
    next_values = batch["next"]["agents"]["observation"] @ target_w.T + target_b
    bootstrap = next_values.max(-1).sum(-1)
    alive = 1.0 - batch["next"]["terminated"][..., 0]
    y = batch["next"]["reward"][..., 0] + gamma * alive * bootstrap
    return np.mean((q_tot - y) ** 2), ((q_tot - y) ** 2)[..., None]


def _numpy_vdn_loss(seed=0, **config):
    rng = np.random.default_rng(seed)
    layer = Linear(OBS, N_ACT, seed=rng, dtype=np.float64)
    local = QValueActor(
        layer,
        in_keys=[OBSERVATION],
        action_space="categorical",
        action_value_key=VALUES,
        action_key=ACTION,
        chosen_action_value_key=LOCAL,
    )
    mixer = DictModule(VDNMixer(N_AGENTS), in_keys=[LOCAL], out_keys=[GLOBAL])
    return QMixerLoss(local, mixer, **config)


def _numpy_batch(shape=(7,), seed=0):
    rng = np.random.default_rng(seed)
    agents = (*shape, N_AGENTS)
    done = rng.random((*shape, 1)) < 0.4
    data = {
        "agents": {
            "observation": rng.standard_normal((*agents, OBS)),
            "action": rng.integers(0, N_ACT, agents),
        },
        "next": {
            "agents": {"observation": rng.standard_normal((*agents, OBS))},
            "reward": rng.standard_normal((*shape, 1)),
            "done": done,
            "terminated": done & (rng.random((*shape, 1)) < 0.6),
        },
    }
    return data, ArrayDict(data, shape)


def test_vdn_matches_numpy_equations():
    loss = _numpy_vdn_loss()
    state = loss.state_dict()
    rng = np.random.default_rng(11)
    for key in state:
        if key.startswith("target_"):
            state[key] = state[key] + 0.3 * rng.standard_normal(state[key].shape)
    loss.load_state_dict(state)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=0.9)
    data, batch = _numpy_batch()
    tree = flatten_params(loss.local_value_network_params)
    target = flatten_params(loss.target_local_value_network_params)
    (w_key,) = [k for k in tree if k.endswith("weight")]
    (b_key,) = [k for k in tree if k.endswith("bias")]
    expected, priority = _vdn_numpy_loss(
        tree[w_key], tree[b_key], target[w_key], target[b_key], data, 0.9
    )
    out = loss(batch)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-12)
    np.testing.assert_allclose(batch["td_error"], priority, rtol=1e-12)
    assert list(out.keys()) == ["loss"]


def test_collector_mask_averages_over_valid_samples():
    """arrayrl honours ('collector', 'mask') as its other losses do; TorchRL's QMixerLoss
    ignores it (deviation torchrl-qmixer-ignores-loss-mask)."""
    loss = _numpy_vdn_loss()
    _, batch = _numpy_batch((8,), seed=3)
    mask = np.array([True, False, True, True, False, True, False, True])
    full = loss(batch)["loss"]
    masked = batch.clone(recurse=False).set(("collector", "mask"), mask)
    np.testing.assert_allclose(loss(masked)["loss"], loss(batch[mask])["loss"], rtol=1e-12)
    assert not np.isclose(loss(masked)["loss"], full)
    theirs, _ = _pair("categorical", "vdn", torch.float64)
    td = _batch((8,), torch.float64)
    with_mask = td.clone()
    with_mask["collector", "mask"] = torch.from_numpy(mask)
    assert theirs(with_mask)["loss"].item() == theirs(td.clone())["loss"].item()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), size=st.integers(1, 5), perm=st.permutations(range(N_AGENTS)))
def test_vdn_with_shared_weights_ignores_agent_order(seed, size, perm):
    loss = _numpy_vdn_loss(seed=seed % 7)
    data, batch = _numpy_batch((size,), seed=seed)
    order = list(perm)

    def copied(tree):
        return {k: copied(v) if isinstance(v, dict) else v for k, v in tree.items()}

    shuffled = copied(data)
    shuffled["agents"] = {k: v[:, order] for k, v in data["agents"].items()}
    shuffled["next"]["agents"] = {k: v[:, order] for k, v in data["next"]["agents"].items()}
    other = ArrayDict(shuffled, (size,))
    np.testing.assert_allclose(loss(other)["loss"], loss(batch)["loss"], rtol=1e-12)
    np.testing.assert_allclose(other["td_error"], batch["td_error"], rtol=1e-12)


def test_terminated_transitions_regress_on_the_reward():
    loss = _numpy_vdn_loss()
    data, _ = _numpy_batch((5,), seed=9)
    data["next"]["terminated"] = np.ones((5, 1), bool)
    data["next"]["done"] = np.ones((5, 1), bool)
    batch = ArrayDict(data, (5,))
    loss(batch)
    values = flatten_params(loss.local_value_network_params)
    w = next(v for k, v in values.items() if k.endswith("weight"))
    b = next(v for k, v in values.items() if k.endswith("bias"))
    q = data["agents"]["observation"] @ w.T + b
    q_tot = np.take_along_axis(q, data["agents"]["action"][..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(
        batch["td_error"][..., 0], (q_tot - data["next"]["reward"][:, 0]) ** 2
    )


# -- construction, keys, defaults ------------------------------------------------------------------
def test_defaults_keys_and_estimator_follow_torchrl():
    theirs, ours = _pair()
    assert ours.delay_value is True and ours.loss_function == "l2"
    assert ours.out_keys == theirs.out_keys == ["loss"]
    assert ours.action_space == theirs.action_space == "categorical"
    assert set(ours.in_keys) == {_flat_key(k) for k in theirs.in_keys}
    for field in (
        "advantage",
        "value_target",
        "local_value",
        "global_value",
        "action_value",
        "action",
        "priority",
        "reward",
        "done",
        "terminated",
    ):
        assert getattr(ours.tensor_keys, field) == getattr(theirs.tensor_keys, field)
    assert type(ours.value_estimator).__name__ == "TD0Estimator"
    assert ours.value_estimator.tensor_keys.value == GLOBAL
    ours.set_keys(reward="team_reward")
    assert ours.value_estimator.tensor_keys.reward == "team_reward"
    assert ("next", "team_reward") in ours.in_keys


def _flat_key(key):
    """TorchRL writes ``("next", ("agents", "observation"))``; arrayrl the flat tuple."""
    if isinstance(key, str):
        return key
    return tuple(part for item in key for part in ((item,) if isinstance(item, str) else item))


@pytest.mark.parametrize("estimator", ["GAE", "VTrace"])
def test_unsupported_estimators_are_refused_as_torchrl(estimator):
    theirs, ours = _pair()
    with pytest.raises(NotImplementedError):
        theirs.make_value_estimator(getattr(TorchRLValueEstimators, estimator))
    with pytest.raises(NotImplementedError, match="TD0"):
        ours.make_value_estimator(estimator)


def test_constructor_errors():
    qnet, mixer = _torchrl_qnet(), _torchrl_mixer()
    with pytest.raises(TypeError, match="make_value_estimator"):
        QMixerLoss(qnet, mixer, gamma=0.9, action_space="categorical")
    with pytest.raises(RuntimeError, match="set_keys"):
        QMixerLoss(qnet, mixer, priority_key="p", action_space="categorical")
    with pytest.raises(TypeError, match="unexpected keyword argument 'reduction'"):
        QMixerLoss(qnet, mixer, reduction="sum")
    with pytest.raises(ValueError, match="loss_function"):
        QMixerLoss(qnet, mixer, loss_function="l3")
    with pytest.raises(ValueError, match="delay_value"):
        QMixerLoss(qnet, mixer, delay_value="yes")
    with pytest.raises(ValueError, match="does not match"):
        QMixerLoss(qnet, mixer, action_space="one-hot")
    bare = _numpy_vdn_loss().local_value_network.module.module
    with pytest.raises(ValueError, match="action_space"):
        QMixerLoss(bare, mixer)


def test_action_space_is_read_from_the_qvalue_module():
    """TorchRL reads only the network's spec, which holds no action entry when the
    QValueModule got action_space= (deviation torchrl-qmixer-action-space-from-qvalue-module)."""
    qnet, mixer = _torchrl_qnet("one-hot"), _torchrl_mixer()
    with pytest.raises(ValueError, match="action_space"):
        TorchRLQMixerLoss(qnet, mixer)
    assert QMixerLoss(qnet, mixer).action_space == "one_hot"


def test_action_space_is_read_from_a_spec_as_torchrl():
    spec = TorchRLComposite(
        agents=TorchRLComposite(
            action=TorchRLCategorical(N_ACT, shape=(N_AGENTS,)), shape=(N_AGENTS,)
        )
    )
    qnet, mixer = _torchrl_qnet(spec=spec, action_space=None), _torchrl_mixer()
    assert TorchRLQMixerLoss(qnet, mixer).action_space == "categorical"
    assert QMixerLoss(qnet, mixer).action_space == "categorical"
    assert (
        QMixerLoss(_torchrl_qnet("categorical"), mixer, action_space=spec).action_space
        == "categorical"
    )
    bare = QMixerLoss(torch.nn.Linear(OBS, N_ACT), mixer, action_space=spec)
    assert bare.action_space == bare.local_value_network.action_space == "categorical"


def test_bare_networks_are_wrapped():
    """A bare mixer reads local_value and writes global_value (TorchRL's signature check
    refuses every bare mixer: deviation torchrl-qmixer-bare-mixer); a bare local network
    becomes a QValueActor over "observation", as TorchRL's."""
    qnet = _torchrl_qnet("categorical", torch.float64)
    with pytest.raises(TypeError):
        TorchRLQMixerLoss(qnet, TorchRLVDNMixer(N_AGENTS, "cpu"), action_space="categorical")
    wrapped = QMixerLoss(copy.deepcopy(qnet), TorchRLVDNMixer(N_AGENTS, "cpu"))
    keyed = QMixerLoss(copy.deepcopy(qnet), _torchrl_mixer("vdn", torch.float64))
    assert wrapped.mixer_network.in_keys == [LOCAL] and wrapped.mixer_network.out_keys == [GLOBAL]
    batch = _batch(dtype=torch.float64)
    assert wrapped(batch.clone())["loss"].item() == keyed(batch.clone())["loss"].item()
    array_mixer = QMixerLoss(_numpy_vdn_loss().local_value_network, VDNMixer(N_AGENTS))
    assert array_mixer.mixer_network.in_keys == [LOCAL]
    bare = QMixerLoss(
        torch.nn.Linear(OBS, N_ACT), _torchrl_mixer("vdn"), action_space="categorical"
    )
    reference = TorchRLQMixerLoss(
        torch.nn.Linear(OBS, N_ACT), _torchrl_mixer("vdn"), action_space="categorical"
    )
    assert bare.local_value_network.in_keys == reference.local_value_network.in_keys
    assert bare.local_value_network.out_keys == reference.local_value_network.out_keys


# -- batch errors ---------------------------------------------------------------------------------
def test_per_agent_rewards_are_refused():
    """TorchRL cannot use them either (its TD return needs equal shapes)."""
    theirs, ours = _pair()
    batch = _batch()
    batch["next", "agents", "reward"] = torch.randn(6, N_AGENTS, 1)
    theirs.set_keys(reward=("agents", "reward"))
    ours.set_keys(reward=("agents", "reward"))
    with pytest.raises(RuntimeError):
        theirs(batch.clone())
    with pytest.raises(ValueError, match="team"):
        ours(batch.clone())


def test_bad_batches_raise_naming_the_key():
    _, ours = _pair()
    batch = _batch()
    flat = batch.clone()
    flat["next", "reward"] = torch.randn(6)
    with pytest.raises(ValueError, match="reward"):
        ours(flat)
    integer = batch.clone()
    integer["next", "reward"] = torch.ones(6, 1, dtype=torch.long)
    with pytest.raises(TypeError, match="floating"):
        ours(integer)
    with pytest.raises(KeyError, match="set_keys"):
        ours(batch.exclude(("agents", "action")))
    wrong = batch.clone()
    wrong["agents", "action"] = torch.zeros(6, N_AGENTS, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="action"):
        ours(wrong)


def test_only_the_priority_is_written_into_the_caller_batch():
    _, ours = _pair()
    batch = _batch()
    before = {k: v.clone() for k, v in batch.items(True, True)}
    ours(batch)
    after = set(batch.keys(True, True))
    assert after - set(before) == {"td_error"}
    for key, value in before.items():
        assert torch.equal(batch[key], value)
    _, array_batch = _numpy_batch()
    _numpy_vdn_loss()(array_batch)
    assert set(array_batch.keys(True, True)) - {"td_error"} == {
        ("agents", "observation"),
        ("agents", "action"),
        ("next", "agents", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
    }


# -- parameters, targets, backends -----------------------------------------------------------------
def test_state_dict_covers_both_networks_and_targets():
    theirs, ours = _pair()
    assert set(ours.state_dict()) == set(theirs.state_dict()) - {"_value_estimator.gamma"}
    names = [name for name, _ in ours.named_parameters()]
    assert any(n.startswith("local_value_network_params.") for n in names)
    assert any(n.startswith("mixer_network_params.") for n in names)
    assert len(names) == len(list(theirs.parameters()))


@pytest.mark.parametrize("updater", ["soft", "hard"])
def test_target_updaters_move_both_targets(updater):
    _, ours = _pair()
    if updater == "soft":
        step = SoftUpdate(ours, eps=0.8)
    else:
        step = HardUpdate(ours, value_network_update_interval=0)
    state = {key: value.detach().clone() for key, value in ours.state_dict().items()}
    targets = [k for k in state if k.startswith("target_")]
    assert {k.split(".")[0] for k in targets} == {
        "target_local_value_network_params",
        "target_mixer_network_params",
    }
    for key in targets:  # init_ copied the parameters into both targets
        torch.testing.assert_close(state[key], state[key[len("target_") :]])
    with torch.no_grad():
        for leaf in ours.parameters():
            leaf.add_(1.0)
    step.step()
    after = ours.state_dict()
    for key in targets:
        source = after[key[len("target_") :]].detach()
        expected = 0.8 * state[key] + 0.2 * source if updater == "soft" else source
        torch.testing.assert_close(after[key], expected)


def test_soft_update_matches_torchrl():
    theirs, ours = _pair("one-hot", "qmix", torch.float64)
    t_updater, o_updater = TorchRLSoftUpdate(theirs, eps=0.9), SoftUpdate(ours, eps=0.9)
    with torch.no_grad():
        for a, b in zip(theirs.parameters(), ours.parameters()):
            a.mul_(1.5)
            b.mul_(1.5)
    t_updater.step()
    o_updater.step()
    state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value.detach(), state[key].detach())
    batch = _batch(dtype=torch.float64, space="one-hot")
    torch.testing.assert_close(ours(batch.clone())["loss"], theirs(batch.clone())["loss"])


def test_moves_between_backends_and_trains():
    _, batch = _numpy_batch()
    loss = _numpy_vdn_loss()
    expected = loss(batch)["loss"]
    pytest.importorskip("array_api_strict")
    loss.to("array_api_strict")
    value = loss(batch.to("array_api_strict"))["loss"]
    assert type(value).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-12)
    loss.to("torch")
    assert all(p.requires_grad for p in loss.parameters())
    torch_batch = batch.to("torch")
    first = loss(torch_batch)["loss"]
    np.testing.assert_allclose(first.item(), expected, rtol=1e-12)
    optim = torch.optim.SGD(loss.parameters(), lr=0.05)
    for _ in range(3):
        optim.zero_grad()
        loss(torch_batch)["loss"].backward()
        optim.step()
    assert loss(torch_batch)["loss"].item() < first.item()


def test_params_argument_makes_a_pure_function():
    _, ours = _pair("categorical", "qmix", torch.float64)
    batch = _batch(dtype=torch.float64)
    own = ours(batch.clone())["loss"]
    mixer = map_params(torch.zeros_like, ours.network_params("mixer_network", None))
    given = batch.clone()
    moved = ours(given, params={"mixer_network": mixer})["loss"]
    assert not torch.isclose(own, moved)
    # a zero QMixer gives Q_tot = 0; the target still comes from the target copies
    torch.testing.assert_close(moved, given["td_error"].mean())
    torch.testing.assert_close(ours(batch.clone())["loss"], own)  # its own weights untouched
    with pytest.raises(KeyError, match="no network"):
        ours(batch.clone(), params={"critic": {}})
