"""IQLLoss and DiscreteIQLLoss against TorchRL 0.14.1 (every output, the ``td_error``
priority and every gradient, float32 and float64, on the same weights and batches);
the expectile loss against NumPy formulas and as a property; backends; refusals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, NormalParamExtractor, ProbabilisticActor, Sequential
from arrayrl.modules import ValueOperator as ArrayValueOperator
from arrayrl.modules.distributions import TanhNormal
from arrayrl.objectives.iql import DiscreteIQLLoss, IQLLoss, expectile_loss

LOSS_TERMS = ("loss_actor", "loss_qvalue", "loss_value")
#: TorchRL warns on every call of a loss with targets and no updater attached
pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")
OBS, ACT, N = 3, 2, 4


def _quiet(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


# -- TorchRL networks and batches ------------------------------------------------------------
def _torchrl_continuous(dtype, shared_trunk=False):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import NormalParamExtractor as TDNormalParamExtractor
    from tensordict.nn import TensorDictModule, TensorDictSequential
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import ProbabilisticActor as TRActor
    from torchrl.modules import TanhNormal as TRTanhNormal
    from torchrl.modules import ValueOperator

    torch.manual_seed(0)
    features = "hidden" if shared_trunk else "observation"
    width = 8 if shared_trunk else OBS
    head = TensorDictModule(
        torch.nn.Sequential(TorchRLMLP(width, 2 * ACT, num_cells=[8]), TDNormalParamExtractor()),
        in_keys=[features],
        out_keys=["loc", "scale"],
    )
    value_head = TensorDictModule(TorchRLMLP(width, 1, num_cells=[8]), [features], ["state_value"])
    if shared_trunk:
        trunk = TensorDictModule(
            torch.nn.Sequential(torch.nn.Linear(OBS, 8), torch.nn.Tanh()),
            ["observation"],
            ["hidden"],
        )
        head, value = TensorDictSequential(trunk, head), TensorDictSequential(trunk, value_head)
    else:
        value = value_head
    actor = TRActor(
        head, in_keys=["loc", "scale"], distribution_class=TRTanhNormal, return_log_prob=True
    )
    qvalue = ValueOperator(
        TorchRLMLP(OBS + ACT, 1, num_cells=[8]), in_keys=["observation", "action"]
    )
    return [m.to(dtype) for m in (actor, qvalue, value)]


def _torchrl_discrete(dtype, space):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import OneHotCategorical as TROneHot
    from torchrl.modules import ProbabilisticActor as TRActor
    from torchrl.modules import ValueOperator

    torch.manual_seed(0)
    dist = TROneHot if space == "one-hot" else torch.distributions.Categorical
    actor = TRActor(
        TensorDictModule(TorchRLMLP(OBS, N, num_cells=[8]), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=dist,
        return_log_prob=True,
    )
    qvalue = TensorDictModule(
        TorchRLMLP(OBS, N, num_cells=[8]), ["observation"], ["state_action_value"]
    )
    value = ValueOperator(TorchRLMLP(OBS, 1, num_cells=[8]), in_keys=["observation"])
    return [m.to(dtype) for m in (actor, qvalue, value)]


def _batch(dtype, shape=(6,), space=None, seed=1, mask=False, weights=False):
    """A replay batch; ``space``: ``None`` (continuous), ``"one-hot"``, ``"categorical"``."""
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    column = (*shape, 1)
    done = torch.rand(column, generator=g) < 0.4
    if space is None:
        action = (torch.rand(*shape, ACT, generator=g) * 1.8 - 0.9).to(dtype)
    else:
        index = torch.randint(0, N, shape, generator=g)
        action = index if space == "categorical" else torch.nn.functional.one_hot(index, N)
    data = {
        "observation": torch.randn(*shape, OBS, generator=g).to(dtype),
        "action": action,
        "next": {
            "observation": torch.randn(*shape, OBS, generator=g).to(dtype),
            "reward": torch.randn(column, generator=g).to(dtype),
            "done": done,
            "terminated": done & (torch.rand(column, generator=g) < 0.5),
        },
    }
    if mask:
        data["collector"] = {"mask": torch.rand(column, generator=g) < 0.7}
    if weights:
        data["priority_weight"] = torch.rand(shape, generator=g).to(dtype) + 0.2
    return TensorDict(data, list(shape))


def _both(cls_theirs, cls_mine, networks, kwargs, perturb_targets=True):
    """TorchRL's loss and ours from the same modules (the Q members drawn alike after the
    same seed), with the same target critics, perturbed away from the online ones."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    theirs = _quiet(lambda: cls_theirs(*networks, **kwargs))
    torch.manual_seed(3)
    mine = _quiet(lambda: cls_mine(*networks, **kwargs))
    if perturb_targets:
        with torch.no_grad():
            for leaf in theirs.target_qvalue_network_params.values(True, True):
                leaf.add_(0.2 * torch.randn_like(leaf))
        _copy_targets(theirs, mine)
    return theirs, mine


def _copy_targets(theirs, mine):
    """TorchRL's target critics into ours (their state_dict names are the same)."""
    state, their_state = mine.state_dict(), theirs.state_dict()
    targets = [k for k in state if k.startswith("target_qvalue_network_params.")]
    assert targets and all(k in their_state for k in targets)
    mine.load_state_dict({**state, **{k: their_state[k] for k in targets}})


def _grouped(named):
    groups: dict[str, list] = {}
    for name, leaf in named:
        groups.setdefault(name.split(".")[0], []).append(leaf)
    return groups


def _assert_same(theirs, mine, make_batch):
    """Every output, the priority in the batch and every gradient of every loss term
    with respect to every parameter (grouped by network) are TorchRL's."""
    torch = pytest.importorskip("torch")
    b_theirs, b_mine = make_batch(), make_batch()
    before = {k: v.clone() for k, v in b_mine.items(True, True)}
    out_theirs = _quiet(lambda: theirs(b_theirs))
    out_mine = mine(b_mine)
    assert set(out_mine.keys()) == set(out_theirs.keys())
    non_tensor = getattr(mine, "scalar_output_mode", None) == "non_tensor"
    if non_tensor:  # TorchRL: entropy as non-tensor data; arrayrl: batch size () (as SAC)
        assert tuple(out_mine.batch_size) == ()
    else:
        assert tuple(out_mine.batch_size) == tuple(out_theirs.batch_size)
    for key in out_theirs.keys():
        theirs_value = out_theirs.get_non_tensor(key) if non_tensor else out_theirs[key]
        assert out_mine[key].dtype == theirs_value.dtype, key
        torch.testing.assert_close(out_mine[key].detach(), theirs_value.detach(), msg=key)
    torch.testing.assert_close(b_mine["td_error"], b_theirs["td_error"])
    # nothing of the caller's is written but the priority (TorchRL also writes _log_prob,
    # loc and scale)
    assert set(b_mine.keys(True, True)) == {*before, "td_error"}
    for key, value in before.items():
        assert torch.equal(b_mine[key], value), key
    their_params, my_params = _grouped(theirs.named_parameters()), _grouped(mine.named_parameters())
    assert sorted(their_params) == sorted(my_params)
    for term in LOSS_TERMS:
        for group, leaves in their_params.items():
            assert len(leaves) == len(my_params[group]), group
            g_theirs = torch.autograd.grad(
                out_theirs[term].sum(), leaves, retain_graph=True, allow_unused=True
            )
            g_mine = torch.autograd.grad(
                out_mine[term].sum(), my_params[group], retain_graph=True, allow_unused=True
            )
            for a, b in zip(g_mine, g_theirs):
                if a is None or b is None:
                    assert (a is None or not a.any()) and (b is None or not b.any()), (term, group)
                else:
                    torch.testing.assert_close(a, b, msg=f"{term} / {group}")
    return out_mine, b_mine


def _dtype(name):
    torch = pytest.importorskip("torch")
    return getattr(torch, name)


# -- IQLLoss against TorchRL -------------------------------------------------------------------
IQL_CASES = {
    "default": ({}, (6,)),
    "1q-expectile0.7-temp3-l2": (
        {"num_qvalue_nets": 1, "expectile": 0.7, "temperature": 3.0, "loss_function": "l2"},
        (6,),
    ),
    "3q-expectile0.9-temp10-sum": (  # temperature 10: the weight cap of 100 is reached
        {"num_qvalue_nets": 3, "expectile": 0.9, "temperature": 10.0, "reduction": "sum"},
        (8,),
    ),
    "BxT-none-l1": (
        {
            "reduction": "none",
            "scalar_output_mode": "exclude",
            "expectile": 0.2,
            "loss_function": "l1",
        },
        (2, 4),
    ),
    "BxT-non_tensor-temp0": (
        {"reduction": "none", "scalar_output_mode": "non_tensor", "temperature": 0.0},
        (2, 3),
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(IQL_CASES), ids=str)
def test_iql_matches_torchrl(case, dtype):
    from torchrl.objectives import IQLLoss as TorchRLIQL

    kwargs, shape = IQL_CASES[case]
    dt = _dtype(dtype)
    theirs, mine = _both(TorchRLIQL, IQLLoss, _torchrl_continuous(dt), kwargs)
    out, _ = _assert_same(theirs, mine, lambda: _batch(dt, shape))
    assert mine.out_keys == theirs.out_keys
    assert set(mine.in_keys) == set(theirs.in_keys)
    if kwargs.get("reduction") == "none":
        assert out["loss_value"].shape == shape


def test_iql_separate_losses_with_a_shared_trunk_matches_torchrl():
    from torchrl.objectives import IQLLoss as TorchRLIQL

    dt = _dtype("float64")
    networks = _torchrl_continuous(dt, shared_trunk=True)
    theirs, mine = _both(TorchRLIQL, IQLLoss, networks, {"separate_losses": True})
    _assert_same(theirs, mine, lambda: _batch(dt))


@pytest.mark.parametrize("members", [1, 2])
def test_iql_soft_update_moves_the_target_critics_as_torchrl(members):
    from torchrl.objectives import IQLLoss as TorchRLIQL
    from torchrl.objectives import SoftUpdate as TorchRLSoftUpdate

    from arrayrl.objectives import SoftUpdate

    dt = _dtype("float64")
    kwargs = {"num_qvalue_nets": members, "expectile": 0.8}
    theirs, mine = _both(TorchRLIQL, IQLLoss, _torchrl_continuous(dt), kwargs)
    TorchRLSoftUpdate(theirs, tau=0.3).step()
    SoftUpdate(mine, tau=0.3).step()
    _assert_same(theirs, mine, lambda: _batch(dt))


@pytest.mark.parametrize("value_type", ["td1", "td_lambda"])
def test_iql_value_estimators_match_torchrl(value_type):
    from torchrl.objectives import IQLLoss as TorchRLIQL
    from torchrl.objectives import ValueEstimators as TRValueEstimators

    dt = _dtype("float32")
    theirs, mine = _both(TorchRLIQL, IQLLoss, _torchrl_continuous(dt), {"expectile": 0.6})
    member = {"td1": TRValueEstimators.TD1, "td_lambda": TRValueEstimators.TDLambda}[value_type]
    theirs.make_value_estimator(member, gamma=0.9)
    mine.make_value_estimator(member, gamma=0.9)
    _assert_same(theirs, mine, lambda: _batch(dt, (2, 5)))
    with pytest.raises(NotImplementedError, match="GAE"):
        mine.make_value_estimator("gae")


def test_iql_float64_expectile_weights_are_float64():
    """TorchRL's weights are float32 (torch.where on Python numbers); ours follow the
    inputs: loss_value equals the float64 formula to rounding."""
    torch = pytest.importorskip("torch")
    dt = torch.float64
    actor, qvalue, value = _torchrl_continuous(dt)
    loss = IQLLoss(actor, qvalue, value, num_qvalue_nets=1, expectile=0.7)
    batch = _batch(dt, (16,))
    got = loss(batch)["loss_value"].item()
    with torch.no_grad():  # one critic: its target copy holds the module's own weights
        q = qvalue(batch.clone())["state_action_value"][..., 0].numpy()
        v = value(batch.clone())["state_value"][..., 0].numpy()
    u = q - v
    expected = np.mean(np.where(u > 0, 0.7, 0.3) * u**2)
    assert got == pytest.approx(expected, rel=1e-14)


# -- DiscreteIQLLoss against TorchRL ---------------------------------------------------------------
DISCRETE_CASES = {
    "one-hot-2q": ("one-hot", {}, (6,)),
    "one-hot-1q-BxT-none": (
        "one-hot",
        {
            "num_qvalue_nets": 1,
            "reduction": "none",
            "scalar_output_mode": "exclude",
            "expectile": 0.8,
        },
        (2, 3),
    ),
    "categorical-3q-sum": (
        "categorical",
        {"num_qvalue_nets": 3, "reduction": "sum", "temperature": 4.0, "loss_function": "l2"},
        (6,),
    ),
    "categorical-1q-BxT": ("categorical", {"num_qvalue_nets": 1, "expectile": 0.3}, (2, 4)),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(DISCRETE_CASES), ids=str)
def test_discrete_iql_matches_torchrl(case, dtype):
    from torchrl.objectives import DiscreteIQLLoss as TorchRLDiscreteIQL

    space, kwargs, shape = DISCRETE_CASES[case]
    dt = _dtype(dtype)
    kwargs = {**kwargs, "action_space": space}
    theirs, mine = _both(TorchRLDiscreteIQL, DiscreteIQLLoss, _torchrl_discrete(dt, space), kwargs)
    _assert_same(theirs, mine, lambda: _batch(dt, shape, space=space))
    assert mine.action_space == theirs.action_space


def test_discrete_iql_takes_an_index_with_a_trailing_unit_dim():
    """TorchRL 0.14.1 raises a shape mismatch on ``[B, 1]`` indices (pytorch/rl#3122);
    arrayrl reads them as ``[B]``."""
    dt = _dtype("float32")
    networks = _torchrl_discrete(dt, "categorical")
    loss = DiscreteIQLLoss(*networks, action_space="categorical")
    flat = loss(_batch(dt, space="categorical"))
    column = _batch(dt, space="categorical")
    column["action"] = column["action"][:, None]
    for key, value in loss(column).items():
        assert value.item() == flat[key].item(), key


# -- priority weights and masks ----------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["IQLLoss", "DiscreteIQLLoss"])
def test_priority_weights_weight_every_term(cls_name):
    """TorchRL's IQL ignores priority_weight (recorded deviation): our weighted mean is
    ``Σ w·ℓ / Σ w`` of TorchRL's unreduced terms, and ``use_prioritized_weights=False``
    gives TorchRL's numbers."""
    torch = pytest.importorskip("torch")
    import torchrl.objectives as trl

    dt = torch.float64
    space = None if cls_name == "IQLLoss" else "categorical"
    networks = _torchrl_continuous(dt) if space is None else _torchrl_discrete(dt, space)
    mine_cls = IQLLoss if space is None else DiscreteIQLLoss
    extra = {} if space is None else {"action_space": space}
    kwargs = {**extra, "reduction": "none", "scalar_output_mode": "exclude"}
    theirs, _ = _both(getattr(trl, cls_name), mine_cls, networks, kwargs)
    _, mine = _both(getattr(trl, cls_name), mine_cls, networks, extra)
    _copy_targets(theirs, mine)
    batch = _batch(dt, (8,), space=space, weights=True)
    unreduced = _quiet(lambda: theirs(batch.clone()))
    w = batch["priority_weight"]
    out = mine(batch.clone())
    for term in LOSS_TERMS:
        expected = (unreduced[term] * w).sum() / w.sum()
        torch.testing.assert_close(out[term], expected, msg=term)
    mine.use_prioritized_weights = False
    theirs.reduction = "mean"
    plain, theirs_plain = mine(batch.clone()), _quiet(lambda: theirs(batch.clone()))
    for term in LOSS_TERMS:
        torch.testing.assert_close(plain[term], theirs_plain[term], msg=term)


def test_collector_mask_applies_to_every_term():
    """TorchRL 0.14.1's IQLLoss drops the mask from loss_qvalue (recorded deviation,
    pytorch/rl#3866); loss_actor and loss_value are masked as TorchRL's, and loss_qvalue
    is the masked mean of TorchRL's per-sample terms."""
    torch = pytest.importorskip("torch")
    from torchrl.objectives import IQLLoss as TorchRLIQL

    dt = torch.float64
    networks = _torchrl_continuous(dt)
    theirs, mine = _both(TorchRLIQL, IQLLoss, networks, {})
    none, _ = _both(
        TorchRLIQL, IQLLoss, networks, {"reduction": "none", "scalar_output_mode": "exclude"}
    )
    for name, leaf in none.target_qvalue_network_params.items(True, True):
        leaf.data.copy_(theirs.target_qvalue_network_params.get(name))
    batch = _batch(dt, (10,), mask=True)
    mask = batch["collector", "mask"][..., 0]
    assert 0 < int(mask.sum()) < 10
    out, ref = mine(batch.clone()), _quiet(lambda: theirs(batch.clone()))
    for term in ("loss_actor", "loss_value"):
        torch.testing.assert_close(out[term], ref[term], msg=term)
    per_sample = _quiet(lambda: none(batch.exclude("collector")))["loss_qvalue"]
    torch.testing.assert_close(out["loss_qvalue"], per_sample[mask].mean())


# -- the expectile loss --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_expectile_loss_by_hand(dtype, xp):
    u = np.array([2.0, -1.0, 0.0, 0.5, -3.0], dtype=dtype)
    tau = 0.7
    got = xp.back(expectile_loss(xp.to(u), tau))
    by_hand = np.array([0.7 * 4.0, 0.3 * 1.0, 0.0, 0.7 * 0.25, 0.3 * 9.0])
    assert got.dtype == dtype
    np.testing.assert_allclose(got, by_hand, rtol=1e-6 if dtype == np.float32 else 1e-15)
    np.testing.assert_array_equal(xp.back(IQLLoss.loss_value_diff(xp.to(u), tau)), got)


_finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(u=arrays(np.float64, st.integers(1, 20), elements=_finite), tau=st.floats(0.001, 0.999))
def test_expectile_loss_properties(u, tau):
    loss = expectile_loss(u, tau)
    assert np.all(loss >= 0)
    np.testing.assert_allclose(expectile_loss(u, 0.5), 0.5 * u**2, rtol=1e-15, atol=0)
    # the weights of τ and 1 − τ add up to one: L_τ(u) + L_{1−τ}(u) = u²
    np.testing.assert_allclose(loss + expectile_loss(u, 1.0 - tau), u**2, rtol=1e-12, atol=1e-12)
    # L_τ(u) = L_{1−τ}(−u)
    np.testing.assert_allclose(loss, expectile_loss(-u, 1.0 - tau), rtol=1e-12, atol=0)


def test_actor_weight_is_exp_advantage_capped_at_100_by_hand():
    """Per sample, ``loss_actor = −min(exp(β·(Q̄(s, a) − V(s))), 100)·log π(a|s)``, with
    Q̄, V and log π computed here from the networks (one critic: its target copy holds
    the module's weights)."""
    torch = pytest.importorskip("torch")
    dt = torch.float64
    actor, qvalue, value = _torchrl_continuous(dt)
    beta = 25.0
    loss = IQLLoss(
        actor,
        qvalue,
        value,
        num_qvalue_nets=1,
        temperature=beta,
        reduction="none",
        scalar_output_mode="exclude",
    )
    batch = _batch(dt, (32,))
    per_sample = loss(batch.clone())["loss_actor"].detach().numpy()
    with torch.no_grad():
        q = qvalue(batch.clone())["state_action_value"][..., 0].numpy()
        v = value(batch.clone())["state_value"][..., 0].numpy()
        log_prob = actor.get_dist(batch.clone()).log_prob(batch["action"]).numpy()
    weight = np.minimum(np.exp(beta * (q - v)), 100.0)
    assert (weight == 100.0).any() and (weight < 100.0).any()  # both regimes are exercised
    np.testing.assert_allclose(per_sample, -weight * log_prob, rtol=1e-12)


# -- arrayrl networks on every backend ----------------------------------------------------------
def _arrayrl_iql(backend, dtype, **kwargs):
    actor = ProbabilisticActor(
        DictModule(
            Sequential(
                MLP(OBS, 2 * ACT, [8], seed=0, backend=backend, dtype=dtype), NormalParamExtractor()
            ),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    critics = [
        ArrayValueOperator(
            MLP(OBS + ACT, 1, [8], seed=s, backend=backend, dtype=dtype),
            in_keys=["observation", "action"],
        )
        for s in (1, 2)
    ]
    value = ArrayValueOperator(MLP(OBS, 1, [8], seed=3, backend=backend, dtype=dtype))
    return IQLLoss(actor, critics, value, expectile=0.8, temperature=2.0, **kwargs)


def _numpy_batch(b=7):
    rng = np.random.default_rng(0)
    return {
        "observation": rng.standard_normal((b, OBS)),
        "action": rng.uniform(-0.9, 0.9, (b, ACT)),
        "next": {
            "observation": rng.standard_normal((b, OBS)),
            "reward": rng.standard_normal((b, 1)),
            "done": rng.random((b, 1)) < 0.3,
            "terminated": rng.random((b, 1)) < 0.2,
        },
    }


def _as(backend, tree):
    from arrayrl.backends import get_backend

    to = get_backend(backend).from_numpy
    return {
        k: _as(backend, v) if isinstance(v, dict) else to(np.asarray(v)) for k, v in tree.items()
    }


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_iql_backends_agree_with_numpy(backend):
    pytest.importorskip(backend)
    from arrayrl.backends import backend_of, get_backend

    reference = _arrayrl_iql("numpy", np.float64)
    expected_batch = ArrayDict(_numpy_batch(), [7])
    expected = reference(expected_batch)
    loss = _arrayrl_iql(backend, get_backend(backend).xp.float64)
    batch = ArrayDict(_as(backend, _numpy_batch()), [7])
    got = loss(batch)
    assert set(got.keys()) == set(expected.keys()) == {*LOSS_TERMS, "entropy"}
    for key in expected.keys():
        value = got[key]
        np.testing.assert_allclose(
            backend_of(value).to_numpy(value), expected[key], rtol=1e-12, atol=1e-14, err_msg=key
        )
    np.testing.assert_allclose(
        backend_of(batch["td_error"]).to_numpy(batch["td_error"]),
        expected_batch["td_error"],
        rtol=1e-12,
    )


def test_iql_float32_stays_float32_on_numpy():
    loss = _arrayrl_iql("numpy", np.float32)
    data = _numpy_batch()
    for key in ("observation", "action"):
        data[key] = data[key].astype(np.float32)
    data["next"]["observation"] = data["next"]["observation"].astype(np.float32)
    data["next"]["reward"] = data["next"]["reward"].astype(np.float32)
    out = loss(ArrayDict(data, [7]))
    for key in out.keys():
        assert out[key].dtype == np.float32, key


def test_discrete_iql_on_numpy_with_arrayrl_modules():
    from arrayrl.modules.distributions import Categorical

    actor = ProbabilisticActor(
        DictModule(MLP(OBS, N, [8], seed=0), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
    )
    qvalue = DictModule(
        MLP(OBS, N, [8], seed=1), in_keys=["observation"], out_keys=["state_action_value"]
    )
    value = ArrayValueOperator(MLP(OBS, 1, [8], seed=2))
    loss = DiscreteIQLLoss(actor, qvalue, value, action_space="categorical", num_qvalue_nets=3)
    data = _numpy_batch()
    data["action"] = np.arange(7) % N
    batch = ArrayDict(data, [7])
    out = loss(batch)
    assert set(out.keys()) == {*LOSS_TERMS, "entropy"}
    assert batch["td_error"].shape == (7,)
    assert 0 < float(out["entropy"])
    # entropy is minus the mean log-probability of the batch's actions
    logits = MLP(OBS, N, [8], seed=0)(data["observation"])
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_p[np.arange(7), data["action"]].mean()
    np.testing.assert_allclose(out["entropy"], expected, rtol=1e-6)


# -- refusals and warnings ---------------------------------------------------------------------
def test_iql_refusals_and_warnings():
    actor, qvalue, value = _torchrl_continuous(_dtype("float32"))
    for bad in (0.0, 1.0, 1.5, -0.2, math.nan):
        with pytest.raises(ValueError, match="expectile"):
            IQLLoss(actor, qvalue, value, expectile=bad)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            IQLLoss(actor, qvalue, value, temperature=bad)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpha_init'"):
        IQLLoss(actor, qvalue, value, alpha_init=1.0)
    with pytest.raises(TypeError, match="value_network"):
        IQLLoss(actor, qvalue, None)
    with pytest.raises(ValueError, match="num_qvalue_nets=3"):
        IQLLoss(actor, [qvalue, qvalue], value, num_qvalue_nets=3)
    with pytest.raises(TypeError, match="make_value_estimator"):
        IQLLoss(actor, qvalue, value, gamma=0.9)
    with pytest.raises(RuntimeError, match="set_keys"):
        IQLLoss(actor, qvalue, value, priority_key="p")
    with pytest.raises(ValueError, match="loss_function"):
        IQLLoss(actor, qvalue, value, loss_function="huber")
    with pytest.raises(ValueError, match="scalar_output_mode"):
        IQLLoss(actor, qvalue, value, scalar_output_mode="bogus")
    with pytest.warns(UserWarning, match="reduction='none'"):
        IQLLoss(actor, qvalue, value, reduction="none")
    loss = IQLLoss(actor, qvalue, value, deactivate_vmap=True)
    with pytest.raises(ValueError, match="expectile"):
        loss.expectile = 1.0
    loss.expectile, loss.temperature = 0.9, 0.5  # schedulable
    assert (loss.expectile, loss.temperature) == (0.9, 0.5)
    batch = _batch(_dtype("float32"))
    with pytest.raises(KeyError, match="set_keys"):
        loss(batch.exclude("action"))
    loss.set_keys(priority="prio")
    loss(batch)
    assert "prio" in batch.keys() and "td_error" not in batch.keys()


def test_discrete_iql_refusals_and_warnings():
    dt = _dtype("float32")
    actor, qvalue, value = _torchrl_discrete(dt, "one-hot")
    with pytest.warns(UserWarning, match="action_space"):
        loss = DiscreteIQLLoss(actor, qvalue, value)
    assert loss.action_space == "one_hot"
    with pytest.raises(ValueError, match="action_space"):
        DiscreteIQLLoss(actor, qvalue, value, action_space="binary")
    with pytest.raises(TypeError, match="unexpected keyword argument 'deactivate_vmap'"):
        DiscreteIQLLoss(actor, qvalue, value, action_space="one-hot", deactivate_vmap=True)
    with pytest.raises(ValueError, match="expectile"):
        DiscreteIQLLoss(actor, qvalue, value, action_space="one-hot", expectile=0.0)
    with pytest.warns(UserWarning, match="reduction='none'"):
        DiscreteIQLLoss(actor, qvalue, value, action_space="one-hot", reduction="none")
    batch = _batch(dt, space="one-hot")
    batch["action"] = batch["action"][:, :3]
    with pytest.raises(ValueError, match="one-hot action has shape"):
        loss(batch)
    categorical = DiscreteIQLLoss(*_torchrl_discrete(dt, "categorical"), action_space="categorical")
    batch = _batch(dt, space="categorical")
    batch["action"] = batch["action"].to(dt)
    with pytest.raises(TypeError, match="integer indices"):
        categorical(batch)
