"""TD3Loss and DDPGLoss against TorchRL 0.14.1 on the same modules, batches and noise.

Each case builds TorchRL modules, constructs TorchRL's loss and arrayrl's from deep copies
after the same ``torch.manual_seed`` (so TD3's Q ensembles are drawn identically), runs
both after the same ``torch.manual_seed`` (so TD3's target smoothing noise is the same
draw), and compares every output key and the gradient of every ``loss_*`` term with
respect to every parameter (matched by name; TorchRL's ``None`` equals a zero gradient).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.data import Bounded as TorchRLBounded  # noqa: E402
from torchrl.data import Composite as TorchRLComposite  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.modules import Actor as TorchRLActor  # noqa: E402
from torchrl.modules import ProbabilisticActor as TorchRLProbabilisticActor  # noqa: E402
from torchrl.modules import TanhDelta as TorchRLTanhDelta  # noqa: E402
from torchrl.modules import ValueOperator as TorchRLValueOperator  # noqa: E402
from torchrl.objectives import DDPGLoss as TorchRLDDPGLoss  # noqa: E402
from torchrl.objectives import TD3Loss as TorchRLTD3Loss  # noqa: E402
from torchrl.objectives import ValueEstimators as TorchRLValueEstimators  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, Actor, ValueOperator  # noqa: E402
from arrayrl.objectives import DDPGLoss, HardUpdate, TD3Loss, ValueEstimators  # noqa: E402

OBS, ACT = 3, 2
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- modules and batches ------------------------------------------------------------------------
def _actor(kind: str, dtype: torch.dtype, bound: float = 1.0):
    if kind == "tanhdelta":
        net = TensorDictModule(
            TorchRLMLP(OBS, ACT, num_cells=[8]), in_keys=["observation"], out_keys=["param"]
        )
        return TorchRLProbabilisticActor(
            net, in_keys=["param"], distribution_class=TorchRLTanhDelta,
            distribution_kwargs={"low": -bound, "high": bound},
        ).to(dtype)
    net = torch.nn.Sequential(TorchRLMLP(OBS, ACT, num_cells=[8]), torch.nn.Tanh())
    return TorchRLActor(net, in_keys=["observation"]).to(dtype)


def _critic(dtype: torch.dtype):
    net = TorchRLMLP(OBS + ACT, 1, num_cells=[8])
    return TorchRLValueOperator(net, in_keys=["observation", "action"]).to(dtype)


def _shared_trunk(dtype: torch.dtype):
    """An actor and a critic sharing an observation encoder (one module object)."""
    trunk = TensorDictModule(torch.nn.Linear(OBS, 4), ["observation"], ["hidden"])
    head = TensorDictModule(
        torch.nn.Sequential(torch.nn.Linear(4, ACT), torch.nn.Tanh()), ["hidden"], ["action"]
    )
    q_head = TensorDictModule(
        TorchRLMLP(4 + ACT, 1, num_cells=[8]), ["hidden", "action"], ["state_action_value"]
    )
    actor = TensorDictSequential(trunk, head).to(dtype)
    critic = TensorDictSequential(trunk, q_head).to(dtype)
    return actor, critic


def _batch(shape, dtype, seed=0, weights=False, p_done=0.3):
    gen = torch.Generator().manual_seed(seed)

    def randn(*s):
        return torch.randn(*shape, *s, generator=gen, dtype=dtype)

    done = torch.rand(*shape, 1, generator=gen) < p_done
    data = {
        "observation": randn(OBS),
        "action": 1.2 * torch.rand(*shape, ACT, generator=gen, dtype=dtype) - 0.6,
        "next": {
            "observation": randn(OBS),
            "reward": randn(1),
            "done": done,
            "terminated": done & (torch.rand(*shape, 1, generator=gen) < 0.5),
        },
    }
    if weights:
        data["priority_weight"] = torch.rand(*shape, generator=gen, dtype=dtype) + 0.5
    return TensorDict(data, batch_size=shape)


# -- comparison ------------------------------------------------------------------------------
def _grads(loss_module, out):
    """``{loss term: {(network, k): gradient}}``: the ``k``-th parameter of each network
    in ``named_parameters`` order (the same order in both libraries; the names differ
    where arrayrl wraps a TorchRL ``ProbabilisticActor``)."""
    # arrayrl also lists an ensemble's broadcast (shared, gradient-free) leaves: skip them
    named = [(n, p) for n, p in loss_module.named_parameters() if p.requires_grad]
    keys, position = [], {}
    for name, _ in named:
        network = name.split(".")[0]
        position[network] = position.get(network, -1) + 1
        keys.append((network, position[network]))
    params = [p for _, p in named]
    grads = {}
    for key in out.keys():
        if not key.startswith("loss_") or not out[key].requires_grad:
            continue
        found = torch.autograd.grad(out[key].sum(), params, retain_graph=True, allow_unused=True)
        grads[key] = {
            k: torch.zeros_like(p) if g is None else g for k, p, g in zip(keys, params, found)
        }
    return grads


def _run_both(ref, mine, td, seed=7):
    """Both losses on copies of ``td`` after the same ``torch.manual_seed``; the
    priorities each set in its batch (a new entry, as TorchRL's)."""
    ref_td = td.clone()
    torch.manual_seed(seed)
    expected = ref(ref_td)
    torch.manual_seed(seed)
    mine_td = td.clone()
    arrays_before = {k: v.clone() for k, v in mine_td.items(True, True)}
    got = mine(mine_td)
    assert type(got).__name__ == "TensorDict"
    for key, value in arrays_before.items():  # the caller's arrays are never written
        assert torch.equal(mine_td.get(key), value), key
    priority_key = ref.tensor_keys.priority
    return expected, got, (mine_td.get(mine.tensor_keys.priority), ref_td.get(priority_key))


def _compare(ref, mine, td, seed=7, grads=True):
    expected, got, (priority, expected_priority) = _run_both(ref, mine, td, seed)
    tol = TOL[td["observation"].dtype]
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        assert got[key].shape == expected[key].shape, key
        assert got[key].dtype == expected[key].dtype, key
        torch.testing.assert_close(got[key], expected[key], **tol, msg=key)
        if not key.startswith("loss_"):
            assert not got[key].requires_grad, key
    torch.testing.assert_close(priority, expected_priority, **tol)
    if grads:
        expected_grads, got_grads = _grads(ref, expected), _grads(mine, got)
        assert set(got_grads) == set(expected_grads)
        for term, by_name in expected_grads.items():
            assert set(got_grads[term]) == set(by_name)
            for name, grad in by_name.items():
                torch.testing.assert_close(got_grads[term][name], grad, **tol, msg=str(name))
    return expected, got


def _estimator(ref, mine, value_type="TD0", **hyperparams):
    """The same value estimator on both losses. On float64 batches the tests use a γ
    (and λ) exact in float32: TorchRL rounds its discount to float32 (the recorded
    deviation ``torchrl-float32-masks``), which would otherwise show as ~1e-9 errors."""
    ref.make_value_estimator(getattr(TorchRLValueEstimators, value_type), **hyperparams)
    mine.make_value_estimator(value_type, **hyperparams)


def _exact_discount(ref, mine, dtype):
    if dtype == torch.float64:
        _estimator(ref, mine, gamma=0.75)


def _td3_pair(actor, critic, seed=3, **kwargs):
    torch.manual_seed(seed)
    ref = TorchRLTD3Loss(*copy.deepcopy((actor, critic)), **kwargs)  # a shared trunk stays shared
    torch.manual_seed(seed)
    mine = TD3Loss(*copy.deepcopy((actor, critic)), **kwargs)
    _exact_discount(ref, mine, next(iter(ref.parameters())).dtype)
    return ref, mine


def _ddpg_pair(actor, critic, **kwargs):
    ref = TorchRLDDPGLoss(*copy.deepcopy((actor, critic)), **kwargs)
    mine = DDPGLoss(*copy.deepcopy((actor, critic)), **kwargs)
    _exact_discount(ref, mine, next(iter(ref.parameters())).dtype)
    return ref, mine


# -- TD3 against TorchRL ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("actor_kind", ["actor", "tanhdelta"])
def test_td3_matches_torchrl(dtype, shape, actor_kind):
    ref, mine = _td3_pair(_actor(actor_kind, dtype), _critic(dtype), bounds=(-0.5, 0.5))
    expected, _ = _compare(ref, mine, _batch(shape, dtype))
    n = ref.num_qvalue_nets
    assert expected["state_action_value_actor"].shape == (n, *shape)
    assert expected["pred_value"].shape == (n, *shape)
    assert expected["next_state_value"].shape == shape


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_qvalue_nets=3, loss_function="l2"),
        dict(num_qvalue_nets=1, loss_function="l1", policy_noise=0.6, noise_clip=0.3),
        dict(delay_actor=False, delay_qvalue=False),
        dict(delay_actor=True, delay_qvalue=False, reduction="sum"),
        dict(reduction="none"),
        dict(use_prioritized_weights=False),
    ],
)
def test_td3_options_match_torchrl(kwargs):
    dtype = torch.float64
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-0.5, 0.5), **kwargs)
    _compare(ref, mine, _batch((5,), dtype, weights=True))


def test_td3_priority_weights_match_torchrl():
    dtype = torch.float32
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-1.0, 1.0))
    td = _batch((2, 3), dtype, weights=True)
    _, got = _compare(ref, mine, td)
    unweighted = mine(td.exclude("priority_weight"))
    assert not torch.allclose(got["loss_qvalue"], unweighted["loss_qvalue"])


@pytest.mark.parametrize("value_type", ["TD1", "TDLambda"])
def test_td3_value_estimators_match_torchrl(value_type):
    dtype = torch.float64
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-0.5, 0.5))
    hyperparams = {"lmbda": 0.5} if value_type == "TDLambda" else {}
    _estimator(ref, mine, value_type, gamma=0.75, **hyperparams)
    _compare(ref, mine, _batch((3, 5), dtype))


@pytest.mark.parametrize("separate_losses", [False, True])
def test_td3_shared_trunk_matches_torchrl(separate_losses):
    dtype = torch.float64
    actor, critic = _shared_trunk(dtype)
    ref, mine = _td3_pair(actor, critic, bounds=(-0.5, 0.5), separate_losses=separate_losses)
    _compare(ref, mine, _batch((6,), dtype))


def test_td3_action_spec_and_composite_spec_match_bounds():
    dtype = torch.float32
    low, high = -torch.full((ACT,), 0.25), torch.full((ACT,), 0.5)
    box = TorchRLBounded(low, high, shape=(ACT,))
    td = _batch((6,), dtype)
    for spec in (box, TorchRLComposite(action=box)):
        ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), action_spec=spec)
        _compare(ref, mine, td, grads=False)
    # the box clamps: with wide noise every next action lies in [low, high]
    _, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), action_spec=box, policy_noise=5.0)
    torch.testing.assert_close(mine.min_action, low)
    torch.testing.assert_close(mine.max_action, high)


def test_td3_targets_stay_behind_the_online_networks():
    """After the online parameters move, delayed targets keep the old values in both
    libraries (and HardUpdate copies them over)."""
    dtype = torch.float64
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-0.5, 0.5))
    td = _batch((6,), dtype)
    before, _ = _compare(ref, mine, td)
    with torch.no_grad():
        for loss_module in (ref, mine):
            for p in loss_module.parameters():
                p.add_(0.05)
    after, _ = _compare(ref, mine, td)
    torch.testing.assert_close(after["next_state_value"], before["next_state_value"])
    HardUpdate(mine, value_network_update_interval=0).step()
    assert not torch.allclose(mine(td)["next_state_value"], before["next_state_value"])


def test_td3_smoothing_noise_is_drawn_from_the_seeded_generator():
    dtype = torch.float32
    actor, critic = _actor("actor", dtype), _critic(dtype)
    td = _batch((6,), dtype)
    a = TD3Loss(copy.deepcopy(actor), copy.deepcopy(critic), bounds=(-1.0, 1.0), seed=1)
    b = TD3Loss(copy.deepcopy(actor), copy.deepcopy(critic), bounds=(-1.0, 1.0), seed=1)
    first, again = a(td), b(td)
    torch.testing.assert_close(first["target_value"], again["target_value"])
    # a second call draws new noise
    assert not torch.allclose(a(td)["target_value"], first["target_value"])


# -- DDPG against TorchRL -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("actor_kind", ["actor", "tanhdelta"])
def test_ddpg_matches_torchrl(dtype, shape, actor_kind):
    ref, mine = _ddpg_pair(_actor(actor_kind, dtype), _critic(dtype))
    expected, _ = _compare(ref, mine, _batch(shape, dtype))
    assert expected["pred_value"].shape == shape
    assert expected["pred_value_max"].shape == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(loss_function="smooth_l1", delay_actor=True, delay_value=False),
        dict(loss_function="l1", delay_actor=True, delay_value=True, reduction="sum"),
        dict(delay_value=False, reduction="none"),
        dict(use_prioritized_weights=False),
    ],
)
def test_ddpg_options_match_torchrl(kwargs):
    dtype = torch.float64
    ref, mine = _ddpg_pair(_actor("actor", dtype), _critic(dtype), **kwargs)
    _compare(ref, mine, _batch((2, 3), dtype, weights=True))


@pytest.mark.parametrize("value_type", ["TD1", "TDLambda"])
def test_ddpg_value_estimators_match_torchrl(value_type):
    dtype = torch.float64
    ref, mine = _ddpg_pair(_actor("actor", dtype), _critic(dtype))
    hyperparams = {"lmbda": 0.5} if value_type == "TDLambda" else {}
    _estimator(ref, mine, value_type, gamma=0.75, **hyperparams)
    _compare(ref, mine, _batch((3, 5), dtype))


@pytest.mark.parametrize("separate_losses", [False, True])
def test_ddpg_shared_trunk_matches_torchrl(separate_losses):
    dtype = torch.float64
    actor, critic = _shared_trunk(dtype)
    ref, mine = _ddpg_pair(actor, critic, separate_losses=separate_losses)
    _compare(ref, mine, _batch((6,), dtype, weights=True))


def test_ddpg_targets_stay_behind_the_online_networks():
    dtype = torch.float64
    ref, mine = _ddpg_pair(_actor("actor", dtype), _critic(dtype), delay_actor=True)
    td = _batch((6,), dtype)
    before, _ = _compare(ref, mine, td)
    with torch.no_grad():
        for loss_module in (ref, mine):
            for p in loss_module.parameters():
                p.add_(0.05)
    after, _ = _compare(ref, mine, td)
    torch.testing.assert_close(after["target_value"], before["target_value"])


# -- NumPy equals torch --------------------------------------------------------------------------
def _arrayrl_modules(backend):
    opts = dict(backend=backend, dtype="float64")
    actor = Actor(MLP(OBS, ACT, [8], activate_last_layer=True, seed=0, **opts))
    critic = MLP(OBS + ACT, 1, [8], seed=1, **opts)
    critic = ValueOperator(critic, in_keys=["observation", "action"])
    return actor, critic


def _numpy_batch(shape=(3, 4)):
    td = _batch(shape, torch.float64)
    return ArrayDict({
        "observation": td["observation"].numpy(),
        "action": td["action"].numpy(),
        "next": {k: td["next", k].numpy() for k in ("observation", "reward", "done", "terminated")},
    }, batch_size=shape)


@pytest.mark.parametrize("cls", [TD3Loss, DDPGLoss])
def test_numpy_equals_torch(cls):
    kwargs = {"bounds": (-0.5, 0.5)} if cls is TD3Loss else {}
    on_numpy = cls(*_arrayrl_modules("numpy"), seed=4, **kwargs)
    on_torch = cls(*_arrayrl_modules("numpy"), seed=4, **kwargs).to("torch")
    for loss_module in (on_numpy, on_torch):
        loss_module.generator_mode = "numpy"
        loss_module.seed = 11  # fresh generators in NumPy mode: the same noise on both
    batch = _numpy_batch()
    got_numpy = on_numpy(batch)
    got_torch = on_torch(batch.to("torch"))
    assert set(got_numpy.keys()) == set(got_torch.keys())
    for key in got_numpy.keys():
        np.testing.assert_allclose(
            np.asarray(got_numpy[key]), got_torch[key].detach().numpy(), rtol=1e-12, atol=1e-12,
            err_msg=key,
        )


# -- arguments ----------------------------------------------------------------------------------
def test_td3_needs_exactly_one_of_bounds_and_action_spec():
    actor, critic = _arrayrl_modules("numpy")
    with pytest.raises(ValueError, match="bounds"):
        TD3Loss(actor, critic)
    with pytest.raises(ValueError, match="bounds"):
        TD3Loss(actor, critic, bounds=(-1, 1), action_spec=TorchRLBounded(-1, 1, shape=(ACT,)))
    with pytest.raises(ValueError, match="low"):
        TD3Loss(actor, critic, bounds=(1.0, -1.0))


@pytest.mark.parametrize("cls", [TD3Loss, DDPGLoss])
def test_refusals_follow_torchrl(cls):
    actor, critic = _arrayrl_modules("numpy")
    kwargs = {"bounds": (-1.0, 1.0)} if cls is TD3Loss else {}
    with pytest.raises(TypeError, match="make_value_estimator"):
        cls(actor, critic, gamma=0.9, **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword"):
        cls(actor, critic, totally_bogus=3, **kwargs)
    with pytest.raises(ValueError, match="loss_function"):
        cls(actor, critic, loss_function="huber", **kwargs)
    with pytest.raises(ValueError, match="delay_actor"):
        cls(actor, critic, delay_actor=2, **kwargs)  # the seed's "update every 2 steps"
    with pytest.raises(NotImplementedError, match="GAE"):
        cls(actor, critic, **kwargs).make_value_estimator(ValueEstimators.GAE)
    if cls is TD3Loss:
        with pytest.raises(RuntimeError, match="set_keys"):
            cls(actor, critic, priority_key="prio", **kwargs)
        with pytest.raises(ValueError, match="policy_noise"):
            cls(actor, critic, policy_noise=-0.1, **kwargs)


def test_set_keys_renames_inputs_and_the_priority_output():
    dtype = torch.float64
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-0.5, 0.5))
    td = _batch((4,), dtype)
    td.rename_key_(("next", "reward"), ("next", "r"))
    for loss_module in (ref, mine):
        loss_module.set_keys(reward="r", priority="prio")
    expected, got, (priority, expected_priority) = _run_both(ref, mine, td)
    torch.testing.assert_close(got["target_value"], expected["target_value"])
    torch.testing.assert_close(priority, expected_priority)
    with pytest.raises(KeyError, match="set_keys"):
        mine(td.exclude(("next", "r")))


def test_deactivate_vmap_is_accepted():
    dtype = torch.float32
    ref, mine = _td3_pair(_actor("actor", dtype), _critic(dtype), bounds=(-1.0, 1.0),
                          deactivate_vmap=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _compare(ref, mine, _batch((4,), dtype), grads=False)


def test_td3_float_bounds_are_not_rounded_to_float32():
    """TorchRL stores Python-float bounds as float32 buffers, so on float64 actions it
    clamps at 0.30000001192...; arrayrl clamps at 0.3 (a deliberate difference): it
    equals TorchRL given the bounds as float64 tensors."""
    dtype = torch.float64
    actor, critic = _actor("actor", dtype), _critic(dtype)
    exact = (torch.tensor(-0.3, dtype=dtype), torch.tensor(0.3, dtype=dtype))
    torch.manual_seed(3)
    ref = TorchRLTD3Loss(*copy.deepcopy((actor, critic)), bounds=exact)
    torch.manual_seed(3)
    mine = TD3Loss(*copy.deepcopy((actor, critic)), bounds=(-0.3, 0.3))
    _exact_discount(ref, mine, dtype)
    _compare(ref, mine, _batch((6,), dtype))


@pytest.mark.parametrize("cls", [TD3Loss, DDPGLoss])
def test_params_argument_makes_forward_a_pure_function(cls):
    kwargs = {"bounds": (-0.5, 0.5)} if cls is TD3Loss else {}
    loss_module = cls(*_arrayrl_modules("numpy"), seed=2, **kwargs)
    batch = _numpy_batch((5,))
    own = {name: loss_module.network_params(name, None) for name in loss_module._networks}
    loss_module.seed = 2
    expected = loss_module(batch)
    loss_module.seed = 2
    got = loss_module(batch, params=own)
    for key in expected.keys():
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(expected[key]))
    scaled = {name: {**tree} for name, tree in own.items()}
    critic = "qvalue_network" if cls is TD3Loss else "value_network"
    scaled[critic] = {"module": {k: {n: 2 * v for n, v in layer.items()}
                                 for k, layer in own[critic]["module"].items()}}
    loss_module.seed = 2
    moved = loss_module(batch, params=scaled)
    assert not np.allclose(moved["pred_value"], expected["pred_value"])
