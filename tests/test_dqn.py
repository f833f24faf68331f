"""DQNLoss, DistributionalDQNLoss and the C51 projection.

The losses are compared with TorchRL 0.14.1 on the same modules, weights (target copies
perturbed alike) and batches: every output, the priority each sets in its batch, and the
gradient of the loss with respect to every parameter, in float32 and float64. Where
TorchRL cannot run a configuration, the TorchRL side is completed as the conformance
suite does (and records as a deviation): a torch greedy module for binary actions (its
``QValueModule`` raises), ``var_nums`` set on its ``QValueModule`` for multi one-hot
actions (its ``QValueActor`` does not pass it on), and torch's default dtype set to
float64 around C51 on float64 inputs (it builds the projection in the default dtype).

The projection is checked against a NumPy transcription of the index form (floor/ceil
and ``np.add.at``, with the ``l == u`` adjustment) and with hypothesis properties.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from arrayrl.backends import backend_of, get_backend  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.data import MultiOneHot as TorchRLMultiOneHot  # noqa: E402
from torchrl.data import OneHot as TorchRLOneHot  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.modules import DistributionalQValueActor as TorchRLDistributionalActor  # noqa: E402
from torchrl.modules import QValueActor as TorchRLQValueActor  # noqa: E402
from torchrl.objectives import DistributionalDQNLoss as TorchRLC51  # noqa: E402
from torchrl.objectives import DQNLoss as TorchRLDQNLoss  # noqa: E402
from torchrl.objectives import ValueEstimators as TorchRLValueEstimators  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import (  # noqa: E402
    MLP,
    DistributionalQValueActor,
    Layer,
    QValueActor,
    Sequential,
    flatten_params,
)
from arrayrl.objectives.dqn import (  # noqa: E402
    DistributionalDQNLoss,
    DQNLoss,
    categorical_projection,
)

OBS, N_ACT, ATOMS, VAR_NUMS = 3, 4, 5, [2, 3]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [torch.float32, torch.float64]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- modules ---------------------------------------------------------------------------------
def _width(space: str) -> int:
    return sum(VAR_NUMS) if space == "mult-one-hot" else N_ACT


def _mlp(out, dtype, seed=0):
    torch.manual_seed(seed)
    return TorchRLMLP(OBS, out, num_cells=[8]).to(dtype)


class _BinaryGreedy(torch.nn.Module):
    """The binary greedy rule, written in torch for TorchRL's side (its QValueModule raises
    for "binary"): a_i = 1 iff v_i > 0, chosen value Σ_i a_i v_i."""

    def forward(self, values):
        hot = values > 0
        return hot.long(), values, (values * hot).sum(-1, keepdim=True)


def _dqn_actors(space: str, dtype, seed=0):
    """``(TorchRL's value network, the QValueActor arrayrl gets)`` on the same MLP."""
    mlp = _mlp(_width(space), dtype, seed)
    theirs = TorchRLQValueActor(copy.deepcopy(mlp), in_keys=["observation"], action_space=space)
    if space == "mult-one-hot":
        theirs[1].var_nums = VAR_NUMS  # TorchRL's QValueActor does not pass var_nums on
    ours = TorchRLQValueActor(copy.deepcopy(mlp), in_keys=["observation"], action_space=space)
    ours[1].var_nums = theirs[1].var_nums
    if space == "binary":
        theirs = TensorDictSequential(
            TensorDictModule(copy.deepcopy(mlp), ["observation"], ["action_value"]),
            TensorDictModule(
                _BinaryGreedy(), ["action_value"], ["action", "action_value", "chosen_action_value"]
            ),
        )
    return theirs, ours


def _c51_actor(space: str, dtype, seed=0, low=-2.0, high=2.0):
    torch.manual_seed(seed)
    net = TorchRLMLP(OBS, out_features=(ATOMS, N_ACT), num_cells=[8]).to(dtype)
    support = torch.linspace(low, high, ATOMS, dtype=dtype)
    return TorchRLDistributionalActor(
        net, support=support, in_keys=["observation"], action_space=space
    )


@contextlib.contextmanager
def _default_dtype(dtype):
    """TorchRL's C51 builds its projection in torch's default dtype (float32), so on
    float64 inputs its index_add_ fails unless the default is float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# -- batches ------------------------------------------------------------------------------------
def _actions(space, shape, gen):
    if space == "categorical":
        return torch.randint(0, N_ACT, shape, generator=gen)
    if space == "binary":
        return (torch.rand(*shape, N_ACT, generator=gen) < 0.5).long()
    if space == "mult-one-hot":
        parts = [
            torch.eye(n, dtype=torch.long)[torch.randint(0, n, shape, generator=gen)]
            for n in VAR_NUMS
        ]
        return torch.cat(parts, -1)
    return torch.eye(N_ACT, dtype=torch.long)[torch.randint(0, N_ACT, shape, generator=gen)]


def _batch(shape, dtype, space="one-hot", seed=0, weights=False, reward_scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    done = torch.rand(*shape, 1, generator=gen) < 0.3
    data = {
        "observation": torch.randn(*shape, OBS, generator=gen, dtype=dtype),
        "action": _actions(space, shape, gen),
        "next": {
            "observation": torch.randn(*shape, OBS, generator=gen, dtype=dtype),
            "reward": reward_scale * torch.randn(*shape, 1, generator=gen, dtype=dtype),
            "done": done,
            "terminated": done & (torch.rand(*shape, 1, generator=gen) < 0.5),
        },
    }
    if weights:
        data["priority_weight"] = torch.rand(*shape, generator=gen, dtype=dtype) + 0.5
    return TensorDict(data, batch_size=shape)


# -- comparison ---------------------------------------------------------------------------------
def _trainable(loss_module):
    return [p for _, p in loss_module.named_parameters() if p.requires_grad]


def _perturb_targets(ref, mine, seed=5):
    """The same noise on both losses' target copies (parameters in module order)."""
    gen = torch.Generator().manual_seed(seed)
    ref_online = ref.value_network_params
    ref_keys = [k for k, v in ref_online.items(True, True) if v.requires_grad]
    own = flatten_params(mine.value_network_params)
    own_targets = flatten_params(mine.target_value_network_params)
    own_paths = [path for path, leaf in own.items() if leaf.requires_grad]
    assert len(ref_keys) == len(own_paths)
    with torch.no_grad():
        for key, path in zip(ref_keys, own_paths):
            target = ref.target_value_network_params.get(key)
            noise = 0.3 * torch.randn(target.shape, generator=gen, dtype=target.dtype)
            target.add_(noise)
            own_targets[path].add_(noise)


def _run(loss_module, td):
    batch = td.clone()
    out = loss_module(batch)
    return out, batch


def _compare(ref, mine, td, *, dtype=None):
    """Outputs, priorities and every gradient equal; the caller's arrays unchanged."""

    def context():
        return _default_dtype(dtype) if dtype is not None else contextlib.nullcontext()

    with context():
        expected, ref_batch = _run(ref, td)
    before = {k: v.clone() for k, v in td.items(True, True)}
    got, mine_batch = _run(mine, td)
    for key, value in before.items():
        assert torch.equal(td.get(key), value), key
    tol = TOL[td["observation"].dtype]
    assert set(got.keys()) == set(expected.keys()) == {"loss"}
    assert got["loss"].shape == expected["loss"].shape
    assert got["loss"].dtype == expected["loss"].dtype
    torch.testing.assert_close(got["loss"], expected["loss"], **tol)
    priority = mine_batch.get(mine.tensor_keys.priority)
    torch.testing.assert_close(priority, ref_batch.get(ref.tensor_keys.priority), **tol)
    assert not priority.requires_grad
    ref_params, own_params = _trainable(ref), _trainable(mine)
    assert len(ref_params) == len(own_params)
    with context():
        expected_grads = torch.autograd.grad(expected["loss"].sum(), ref_params)
    grads = torch.autograd.grad(got["loss"].sum(), own_params)
    for k, (g, e) in enumerate(zip(grads, expected_grads)):
        torch.testing.assert_close(g, e, **tol, msg=f"gradient {k}")
    return expected, got


def _dqn_pair(space, dtype, estimator=("TD0", {}), perturb=True, **kwargs):
    """Both losses on the same weights, the same estimator (a γ exact in float32: TorchRL
    rounds its discounts to float32, the recorded torchrl-float32-masks), and targets
    perturbed alike."""
    theirs, ours = _dqn_actors(space, dtype)
    ref = TorchRLDQNLoss(theirs, action_space=space, **kwargs)
    mine = DQNLoss(ours, **kwargs)
    name, hyper = estimator
    ref.make_value_estimator(getattr(TorchRLValueEstimators, name), gamma=0.75, **hyper)
    mine.make_value_estimator(name, gamma=0.75, **hyper)
    if perturb and kwargs.get("delay_value", True):
        _perturb_targets(ref, mine)
    return ref, mine


# -- DQN against TorchRL ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("space", ["one-hot", "categorical", "mult-one-hot", "binary"])
@pytest.mark.parametrize("double_dqn", [False, True])
def test_dqn_matches_torchrl(dtype, space, double_dqn):
    ref, mine = _dqn_pair(space, dtype, double_dqn=double_dqn)
    assert mine.action_space == space.replace("-", "_")
    td = _batch((7,), dtype, space)
    _, got = _compare(ref, mine, td)
    mine.double_dqn = not double_dqn  # the case tells the two targets apart
    assert not torch.allclose(mine(td.clone())["loss"], got["loss"])


@pytest.mark.parametrize(
    "space, kwargs",
    [
        ("one-hot", dict(delay_value=False)),
        ("categorical", dict(loss_function="l1", reduction="sum")),
        ("one-hot", dict(loss_function="smooth_l1", reduction="none")),
        ("categorical", dict(double_dqn=True, reduction="none")),
        ("binary", dict(use_prioritized_weights=False, loss_function="smooth_l1")),
        ("mult-one-hot", dict(delay_value=False, reduction="sum")),
    ],
)
def test_dqn_options_match_torchrl(space, kwargs):
    dtype = torch.float64
    ref, mine = _dqn_pair(space, dtype, **kwargs)
    _compare(ref, mine, _batch((2, 3), dtype, space, weights=True, reward_scale=3.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("estimator", [("TD1", {}), ("TDLambda", {"lmbda": 0.5})])
def test_dqn_value_estimators_match_torchrl(dtype, estimator):
    ref, mine = _dqn_pair("categorical", dtype, estimator, double_dqn=True)
    _compare(ref, mine, _batch((3, 5), dtype, "categorical"))


@pytest.mark.parametrize("double_dqn", [False, True])
def test_dqn_action_mask_matches_torchrl(double_dqn):
    """A QValueActor with an action mask: the next state's mask limits the greedy target."""
    dtype = torch.float64
    mlp = _mlp(N_ACT, dtype)
    actor = TorchRLQValueActor(
        mlp, in_keys=["observation"], action_space="categorical", action_mask_key="action_mask"
    )
    ref = TorchRLDQNLoss(copy.deepcopy(actor), action_space="categorical", double_dqn=double_dqn)
    mine = DQNLoss(copy.deepcopy(actor), double_dqn=double_dqn)
    assert "action_mask" in mine.value_network.in_keys
    ref.make_value_estimator(TorchRLValueEstimators.TD0, gamma=0.75)
    mine.make_value_estimator("td0", gamma=0.75)
    _perturb_targets(ref, mine)
    td = _batch((6,), dtype, "categorical")
    gen = torch.Generator().manual_seed(3)
    for key in ("action_mask", ("next", "action_mask")):
        mask = torch.rand(6, N_ACT, generator=gen) < 0.6
        mask[:, 0] = True
        td[key] = mask
    td["action_mask"][torch.arange(6), td["action"]] = True
    _compare(ref, mine, td)


def test_dqn_priority_weights_are_honoured():
    dtype = torch.float32
    ref, mine = _dqn_pair("one-hot", dtype)
    td = _batch((2, 4), dtype, weights=True)
    _, got = _compare(ref, mine, td)
    assert not torch.allclose(got["loss"], mine(td.exclude("priority_weight"))["loss"])


def test_dqn_wraps_a_bare_network_as_torchrl_does():
    """A torch.nn.Module with a spec (TorchRL's docstring example) and an arrayrl layer."""
    dtype = torch.float32
    net = torch.nn.Linear(OBS, N_ACT)
    ref = TorchRLDQNLoss(copy.deepcopy(net), action_space="one-hot")
    mine = DQNLoss(copy.deepcopy(net), action_space=TorchRLOneHot(N_ACT))
    assert isinstance(mine.value_network, QValueActor) and mine.action_space == "one_hot"
    _compare(ref, mine, _batch((5,), dtype))
    layer = DQNLoss(MLP(OBS, N_ACT, [8], seed=1), action_space="categorical")
    assert layer.in_keys[:1] == ["action"] and "observation" in layer.in_keys
    td = ArrayDict.from_tensordict(_batch((5,), dtype, "categorical")).to("numpy")
    assert layer(td)["loss"].shape == ()


def test_dqn_binary_target_by_hand():
    """Binary DQN on a linear network in NumPy: Q(s, a) = Σ a·v and the greedy next
    value Σ max(v̄′, 0)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((N_ACT, OBS))
    layer = MLP(OBS, N_ACT, [], dtype=np.float64)
    layer.params = {"0": {"weight": weight, "bias": np.zeros(N_ACT)}}
    loss = DQNLoss(layer, action_space="binary", delay_value=False)
    loss.make_value_estimator("td0", gamma=0.9)
    obs, nxt = rng.standard_normal((6, OBS)), rng.standard_normal((6, OBS))
    action = (rng.random((6, N_ACT)) < 0.5).astype(np.int64)
    reward = rng.standard_normal((6, 1))
    terminated = np.array([[True], [False], [False], [True], [False], [False]])
    batch = ArrayDict(
        {
            "observation": obs,
            "action": action,
            "next": {
                "observation": nxt,
                "reward": reward,
                "done": terminated,
                "terminated": terminated,
            },
        },
        [6],
    )
    out = loss(batch)
    pred = np.sum(action * (obs @ weight.T), axis=-1)
    target = reward[:, 0] + 0.9 * ~terminated[:, 0] * np.maximum(nxt @ weight.T, 0).sum(-1)
    np.testing.assert_allclose(out["loss"], np.mean((pred - target) ** 2), rtol=1e-12)
    np.testing.assert_allclose(batch["td_error"], ((pred - target) ** 2)[:, None], rtol=1e-12)


# -- Q-value actors ------------------------------------------------------------------------------
def test_binary_greedy_rule():
    values = np.array([[0.5, -1.0, 0.0, 2.0], [-0.1, -0.2, -0.3, -0.4]])
    actor = QValueActor(MLP(OBS, N_ACT, [8]), action_space="binary", action_mask_key="mask")
    mask = np.array([[True, True, True, False], [True] * 4])
    batch = actor.qvalue(ArrayDict({"action_value": values, "mask": mask}, [2]))
    np.testing.assert_array_equal(batch["action"], [[1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch["chosen_action_value"], [[0.5], [0.0]])


@pytest.mark.parametrize("space", ["one-hot", "categorical", "mult-one-hot", "binary"])
def test_distributional_actor_matches_torchrl_and_native(space):
    """The adapted TorchRL actor and an arrayrl-native one on the same weights give
    TorchRL's action and log-probabilities (TorchRL cannot run binary, nor mult-one-hot
    with a flat support: there the expected-value greedy rule is checked by hand)."""
    dtype = torch.float64
    theirs = _c51_actor("one-hot" if space in ("binary", "mult-one-hot") else space, dtype)
    td = _batch((6,), dtype)
    expected = theirs(td.clone())
    mlp = theirs.module[0].module
    native = DistributionalQValueActor(
        _native_c51_net(mlp, dtype),
        support=theirs.support.numpy(),
        action_space=space,
        var_nums=[2, 2] if space == "mult-one-hot" else None,
    )
    got = native(ArrayDict({"observation": td["observation"].numpy()}, [6]))
    np.testing.assert_allclose(
        got["action_value"], expected["action_value"].detach().numpy(), rtol=1e-12, atol=1e-12
    )
    q = (np.exp(got["action_value"]) * theirs.support.numpy()[:, None]).sum(-2)
    if space in ("one-hot", "categorical"):
        np.testing.assert_array_equal(got["action"], expected["action"].numpy())
    elif space == "binary":
        np.testing.assert_array_equal(got["action"], (q > 0).astype(np.int64))
    else:
        hot = np.concatenate([np.eye(2)[q[:, :2].argmax(-1)], np.eye(2)[q[:, 2:].argmax(-1)]], -1)
        np.testing.assert_array_equal(got["action"], hot)
    adapted = DistributionalDQNLoss(copy.deepcopy(theirs), gamma=0.9).value_network
    out = adapted(ArrayDict.from_tensordict(td.clone()))
    if space in ("one-hot", "categorical"):
        torch.testing.assert_close(out["action"], expected["action"])


class _Atoms(Layer):
    """[..., atoms·actions] -> [..., atoms, actions] (TorchRL's MLP(out_features=tuple))."""

    def apply(self, params, x):
        xp = backend_of(x).xp
        return xp.reshape(x, (*x.shape[:-1], ATOMS, N_ACT))


def _native_c51_net(torchrl_mlp, dtype):
    """arrayrl's MLP with a TorchRL MLP's weights, its output as [..., atoms, actions]."""
    mlp = MLP(OBS, ATOMS * N_ACT, [8], dtype=np.float64 if dtype == torch.float64 else None)
    mlp.load_state_dict(torchrl_mlp.state_dict())
    return Sequential(mlp, _Atoms())


# -- C51 against TorchRL -------------------------------------------------------------------------
def _c51_pair(space, dtype, perturb=True, **kwargs):
    actor = _c51_actor(space, dtype)
    with _default_dtype(dtype):
        ref = TorchRLC51(copy.deepcopy(actor), gamma=0.75, **kwargs)
    mine = DistributionalDQNLoss(copy.deepcopy(actor), gamma=0.75, **kwargs)
    if perturb and kwargs.get("delay_value", True):
        _perturb_targets(ref, mine)
    return ref, mine


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("space", ["one-hot", "categorical"])
@pytest.mark.parametrize("delay_value", [True, False])
def test_c51_matches_torchrl(dtype, space, delay_value):
    ref, mine = _c51_pair(space, dtype, delay_value=delay_value)
    support = mine.value_network_params["support"]
    assert support.shape == (ATOMS,) and not support.requires_grad
    _compare(ref, mine, _batch((8,), dtype, space, reward_scale=2.0), dtype=dtype)


@pytest.mark.parametrize(
    "kwargs", [dict(reduction="none"), dict(reduction="sum"), dict(use_prioritized_weights=False)]
)
def test_c51_options_match_torchrl(kwargs):
    dtype = torch.float64
    ref, mine = _c51_pair("categorical", dtype, **kwargs)
    td = _batch((8,), dtype, "categorical", weights=True, reward_scale=2.0)
    td["steps_to_next_obs"] = torch.randint(1, 4, (8, 1))
    _compare(ref, mine, td, dtype=dtype)


def test_c51_gamma_is_schedulable():
    dtype = torch.float64
    ref, mine = _c51_pair("one-hot", dtype)
    td = _batch((8,), dtype, reward_scale=0.5)
    first = mine(td.clone())["loss"]
    ref.gamma.fill_(0.5)
    mine.gamma = 0.5
    assert mine.gamma == 0.5 and mine.state_dict()["gamma"] == 0.5
    _, again = _compare(ref, mine, td, dtype=dtype)
    assert not torch.allclose(first, again["loss"])


def test_c51_batch_of_any_shape_equals_the_flat_batch():
    dtype = torch.float32
    _, mine = _c51_pair("categorical", dtype, reduction="none")
    td = _batch((3, 4), dtype, "categorical", weights=True, reward_scale=2.0)
    nested, nested_batch = _run(mine, td)
    flat, flat_batch = _run(mine, td.reshape(12))
    torch.testing.assert_close(nested["loss"].reshape(12), flat["loss"])
    torch.testing.assert_close(nested_batch["td_error"].reshape(12, 1), flat_batch["td_error"])
    mine.reduction = "mean"
    torch.testing.assert_close(mine(td.clone())["loss"], mine(td.reshape(12))["loss"])


def test_c51_support_takes_no_gradient_and_no_optimizer_step():
    dtype = torch.float32
    _, mine = _c51_pair("one-hot", dtype)
    support = mine.value_network_params["support"]
    before = support.clone()
    optimizer = torch.optim.Adam(mine.parameters(), lr=0.1, weight_decay=0.1)
    mine(_batch((8,), dtype, reward_scale=2.0))["loss"].backward()
    optimizer.step()
    assert support.grad is None
    torch.testing.assert_close(mine.value_network_params["support"], before, rtol=0, atol=0)


def test_distributional_actor_mask():
    """Masked actions are never greedy; the log-probabilities are left as they are."""
    net = Sequential(MLP(OBS, ATOMS * N_ACT, [8], seed=3), _Atoms())
    support = np.linspace(-1.0, 1.0, ATOMS, dtype=np.float32)
    free = DistributionalQValueActor(net, support=support, action_space="categorical")
    masked = DistributionalQValueActor(
        net, support=support, action_space="categorical", action_mask_key="mask"
    )
    assert masked.in_keys == ["observation", "mask"]
    obs = np.random.default_rng(0).standard_normal((16, OBS)).astype(np.float32)
    greedy = free(ArrayDict({"observation": obs}, [16]))
    mask = np.ones((16, N_ACT), bool)
    mask[np.arange(16), greedy["action"]] = False
    out = masked(ArrayDict({"observation": obs, "mask": mask}, [16]))
    assert np.all(out["action"] != greedy["action"])
    q = (np.exp(out["action_value"]) * support[:, None]).sum(-2)
    np.testing.assert_array_equal(out["action"], np.where(mask, q, -np.inf).argmax(-1))
    np.testing.assert_allclose(out["action_value"], greedy["action_value"], rtol=0)


def test_c51_native_modules_on_every_backend():
    """An arrayrl-native C51 loss (NumPy, array_api_strict) equals the torch-adapted one."""
    pytest.importorskip("array_api_strict")
    dtype = torch.float64
    theirs = _c51_actor("categorical", dtype)
    reference = DistributionalDQNLoss(copy.deepcopy(theirs), gamma=0.75, delay_value=False)
    td = _batch((6,), dtype, "categorical", reward_scale=2.0)
    expected = reference(td.clone())["loss"].item()
    native = DistributionalQValueActor(
        _native_c51_net(theirs.module[0].module, dtype),
        support=np.linspace(-2.0, 2.0, ATOMS),
        action_space="categorical",
    )
    loss = DistributionalDQNLoss(native, gamma=0.75, delay_value=False)
    data = ArrayDict.from_tensordict(td).to("numpy")
    assert float(loss(data)["loss"]) == pytest.approx(expected, rel=1e-12)
    loss.to("array_api_strict")
    got = loss(data.to("array_api_strict"))["loss"]
    assert backend_of(got).name == "array_api_strict"
    assert float(got) == pytest.approx(expected, rel=1e-12)
    loss.to("torch")
    support = loss.value_network_params["support"]
    assert isinstance(support, torch.Tensor) and not support.requires_grad
    assert "value_network_params.support" in dict(loss.named_parameters())


# -- the projection -----------------------------------------------------------------------------
def _index_add_projection(probs, rewards, discounts, support):
    """Bellemare et al.'s Algorithm 1 as TorchRL writes it, in NumPy: floor/ceil,
    the l == u adjustment, and two scatter-adds."""
    atoms = support.size
    vmin, vmax = support.min(), support.max()
    dz = (vmax - vmin) / (atoms - 1)
    tz = np.clip(rewards[:, None] + discounts[:, None] * support, vmin, vmax)
    b = np.clip((tz - vmin) / dz, 0, atoms - 1)  # TorchRL omits the clip (a deviation)
    low, up = np.floor(b).astype(np.int64), np.ceil(b).astype(np.int64)
    low[(up > 0) & (low == up)] -= 1
    up[(low < atoms - 1) & (low == up)] += 1
    m = np.zeros_like(probs)
    rows = np.repeat(np.arange(probs.shape[0])[:, None], atoms, axis=1)
    np.add.at(m, (rows, low), probs * (up - b))
    np.add.at(m, (rows, up), probs * (b - low))
    return m


def _random_inputs(rng, batch, atoms):
    logits = rng.standard_normal((batch, atoms))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs, 3.0 * rng.standard_normal(batch), rng.uniform(0, 1, batch)


def test_projection_equals_the_index_add_form():
    rng = np.random.default_rng(0)
    support = np.linspace(-4.0, 6.0, 11)
    probs, rewards, discounts = _random_inputs(rng, 64, 11)
    rewards[:8] = np.arange(-4, 4, dtype=np.float64)  # with discount 0: on an atom (l == u)
    discounts[:8] = 0.0
    discounts[8:12] = 1.0  # b = j + r/Δz: integers too
    rewards[8:12] = [1.0, -1.0, 0.0, 2.0]
    expected = _index_add_projection(probs, rewards, discounts, support)
    got = categorical_projection(probs, rewards[:, None], discounts[:, None], support)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    atoms=st.integers(2, 21),
    low=st.floats(-20, 5),
    width=st.floats(0.5, 30),
    scale=st.floats(0, 50),
)
def test_projection_properties(seed, atoms, low, width, scale):
    rng = np.random.default_rng(seed)
    support = np.linspace(low, low + width, atoms)
    probs, rewards, discounts = _random_inputs(rng, 16, atoms)
    rewards *= scale
    m = categorical_projection(probs, rewards, discounts, support)
    np.testing.assert_allclose(m.sum(-1), probs.sum(-1), rtol=1e-12)  # mass is conserved
    assert np.all(m >= 0)
    np.testing.assert_allclose(
        m, _index_add_projection(probs, rewards, discounts, support), rtol=1e-9, atol=1e-12
    )
    # everything pushed past v_max lands on v_max, past v_min on v_min
    high = categorical_projection(probs, np.full(16, width + 1e3 + abs(low)), discounts, support)
    np.testing.assert_allclose(high[:, -1], probs.sum(-1), rtol=1e-12)
    np.testing.assert_array_equal(high[:, :-1], 0.0)
    lowest = categorical_projection(
        probs, np.full(16, -(width + 1e3 + abs(low))), discounts, support
    )
    np.testing.assert_allclose(lowest[:, 0], probs.sum(-1), rtol=1e-12)
    # with r = 0 and d = 1 the distribution maps onto itself (endpoints included)
    same = categorical_projection(probs, np.zeros(16), 1.0, support)
    np.testing.assert_allclose(same, probs, rtol=1e-9, atol=1e-12)


def test_projection_batch_shapes_and_gradients():
    rng = np.random.default_rng(1)
    support = np.linspace(-1.0, 1.0, 7)
    probs, rewards, discounts = _random_inputs(rng, 12, 7)
    flat = categorical_projection(probs, rewards, discounts, support)
    nested = categorical_projection(
        probs.reshape(3, 4, 7), rewards.reshape(3, 4, 1), discounts.reshape(3, 4), support
    )
    np.testing.assert_allclose(nested.reshape(12, 7), flat, rtol=1e-14)
    # linear in probs: d(Σ c·m)/dp_j = Σ_i c_i W_ij, W the projection of the unit vectors
    p = torch.tensor(probs, requires_grad=True)
    c = torch.tensor(rng.standard_normal((12, 7)))
    out = categorical_projection(
        p, torch.tensor(rewards), torch.tensor(discounts), torch.tensor(support)
    )
    (grad,) = torch.autograd.grad((out * c).sum(), p)
    eye = np.eye(7)
    columns = [
        _index_add_projection(np.tile(eye[j], (12, 1)), rewards, discounts, support)
        for j in range(7)
    ]
    expected = np.stack([(col * c.numpy()).sum(-1) for col in columns], axis=-1)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_projection_stays_on_the_device_without_host_reads():
    """On torch's meta device any host read (``.item()``, ``.cpu()``, ``float(x)``)
    raises: the projection runs there and returns a meta tensor of the inputs' dtype."""
    meta = torch.device("meta")
    probs = torch.empty(4, 3, 9, device=meta, dtype=torch.float32)
    out = categorical_projection(
        probs,
        torch.empty(4, 3, 1, device=meta),
        torch.empty(4, 3, 1, device=meta),
        torch.empty(9, device=meta),
    )
    assert out.device == meta and out.shape == (4, 3, 9) and out.dtype == torch.float32


def test_projection_runs_on_array_api_strict():
    strict = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(2)
    support = np.linspace(-1.0, 3.0, 5)
    probs, rewards, discounts = _random_inputs(rng, 6, 5)
    got = categorical_projection(*(strict.asarray(x) for x in (probs, rewards, discounts, support)))
    np.testing.assert_allclose(
        np.asarray(got),
        _index_add_projection(probs, rewards, discounts, support),
        rtol=1e-12,
        atol=1e-15,
    )
    assert get_backend("array_api_strict") == backend_of(got)


# -- errors --------------------------------------------------------------------------------------
def test_dqn_errors():
    net = MLP(OBS, N_ACT, [8])
    with pytest.raises(ValueError, match="double_dqn=True requires delay_value=True"):
        DQNLoss(net, action_space="one-hot", double_dqn=True, delay_value=False)
    with pytest.raises(ValueError, match="Neither action_space nor spec"):
        DQNLoss(net)
    with pytest.raises(ValueError, match="unknown action_space 'discrete'"):
        DQNLoss(net, action_space="discrete")
    with pytest.raises(NotImplementedError, match="multi_categorical"):
        DQNLoss(net, action_space="multi-categorical")
    with pytest.raises(ValueError, match="does not match the value network"):
        DQNLoss(QValueActor(net, action_space="one-hot"), action_space="categorical")
    with pytest.raises(TypeError, match="unexpected keyword argument 'gama'"):
        DQNLoss(net, action_space="one-hot", gama=0.9)
    with pytest.raises(TypeError, match="make_value_estimator"):
        DQNLoss(net, action_space="one-hot", gamma=0.9)
    with pytest.raises(RuntimeError, match="set_keys"):
        DQNLoss(net, action_space="one-hot", priority_key="p")
    with pytest.raises(ValueError, match="loss_function"):
        DQNLoss(net, action_space="one-hot", loss_function="l3")
    loss = DQNLoss(net, action_space="categorical")
    with pytest.raises(NotImplementedError, match="GAE"):
        loss.make_value_estimator("gae")
    batch = ArrayDict(
        {
            "observation": np.zeros((4, OBS), np.float32),
            "action": np.zeros((4, 2), np.int64),
            "next": {
                "observation": np.zeros((4, OBS), np.float32),
                "reward": np.zeros((4, 1), np.float32),
                "done": np.zeros((4, 1), bool),
            },
        },
        [4],
    )
    with pytest.raises(ValueError, match="categorical action 'action' has shape"):
        loss(batch)
    with pytest.raises(KeyError, match="'action'"):
        loss(batch.exclude("action"))


def test_c51_errors():
    actor = DistributionalQValueActor(
        Sequential(MLP(OBS, ATOMS * N_ACT, [8]), _Atoms()),
        support=np.linspace(-1, 1, ATOMS, dtype=np.float32),
        action_space="one-hot",
    )
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'gamma'"):
        DistributionalDQNLoss(actor)
    with pytest.raises(TypeError, match="gamma"):
        DistributionalDQNLoss(actor, gamma=None)
    with pytest.raises(ValueError, match="gamma must be in"):
        DistributionalDQNLoss(actor, gamma=1.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'double_dqn'"):
        DistributionalDQNLoss(actor, gamma=0.9, double_dqn=True)
    with pytest.raises(TypeError, match="DistributionalQValueActor"):
        DistributionalDQNLoss(MLP(OBS, N_ACT), gamma=0.9)
    binary = DistributionalQValueActor(
        Sequential(MLP(OBS, ATOMS * N_ACT, [8]), _Atoms()),
        support=np.linspace(-1, 1, ATOMS),
        action_space="binary",
    )
    with pytest.raises(NotImplementedError, match="one action column"):
        DistributionalDQNLoss(binary, gamma=0.9)
    uneven = DistributionalQValueActor(
        Sequential(MLP(OBS, ATOMS * N_ACT, [8]), _Atoms()),
        support=np.array([0.0, 1.0, 2.0, 4.0, 5.0]),
        action_space="one-hot",
    )
    with pytest.raises(ValueError, match="evenly spaced"):
        DistributionalDQNLoss(uneven, gamma=0.9)
    with pytest.raises(ValueError, match="at least 2 atoms"):
        DistributionalQValueActor(MLP(OBS, N_ACT), support=np.zeros(1), action_space="one-hot")
    loss = DistributionalDQNLoss(actor, gamma=0.9)
    with pytest.raises(TypeError, match="gamma must be a number"):
        loss.gamma = None
    with pytest.raises(TypeError, match=r"set loss\.gamma"):
        loss.make_value_estimator("td0", gamma=0.5)
    with pytest.raises(NotImplementedError, match="TD1"):
        loss.make_value_estimator("td1")
    batch = ArrayDict(
        {
            "observation": np.zeros((4, OBS), np.float32),
            "action": np.eye(N_ACT, dtype=np.int64)[[0, 1, 2, 3]],
            "next": {
                "observation": np.zeros((4, OBS), np.float32),
                "reward": np.zeros((4, 1), np.int64),
                "done": np.zeros((4, 1), bool),
            },
        },
        [4],
    )
    with pytest.raises(TypeError, match="must be floating"):
        loss(batch)


def test_torchrl_refusals_that_arrayrl_fixes():
    """What TorchRL 0.14.1 cannot do and arrayrl does (recorded as deviations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actor = TorchRLQValueActor(
            _mlp(N_ACT, torch.float32), in_keys=["observation"], action_space="one-hot"
        )
        with pytest.raises(ValueError, match="could not be retrieved"):
            TorchRLDQNLoss(copy.deepcopy(actor))  # reads the actor's (empty) spec
        assert DQNLoss(copy.deepcopy(actor)).action_space == "one_hot"
        groups = TorchRLQValueActor(_mlp(5, torch.float32), spec=TorchRLMultiOneHot(VAR_NUMS))
        td = _batch((4,), torch.float32, "mult-one-hot")
        with pytest.raises(ValueError, match="var_nums must be provided"):
            TorchRLDQNLoss(copy.deepcopy(groups))(td.clone())  # the spec's nvec is not read
        mine = DQNLoss(copy.deepcopy(groups))
        assert mine.value_network.var_nums == VAR_NUMS and mine(td)["loss"].shape == ()
        c51 = _c51_actor("categorical", torch.float32)
        td = _batch((2, 3), torch.float32, "categorical")
        with pytest.raises(AttributeError, match="__name___"):
            TorchRLC51(copy.deepcopy(c51), gamma=0.9)(td.clone())
        assert DistributionalDQNLoss(copy.deepcopy(c51), gamma=0.9)(td.clone())["loss"].shape == ()
