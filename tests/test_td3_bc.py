"""TD3BCLoss against TorchRL 0.14.1 on the same modules, batches and noise, and against
the TD3+BC equations computed by hand in NumPy.

As in ``test_td3_ddpg``: TorchRL's loss and arrayrl's are built from deep copies after
the same ``torch.manual_seed`` (the Q ensembles are drawn alike) and run after the same
``torch.manual_seed`` (the target smoothing noise is the same draw); every output, the
priority each sets in its batch and the gradient of every ``loss_*`` term with respect to
every parameter are compared.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from torchrl.data import Bounded as TorchRLBounded  # noqa: E402
from torchrl.data import Composite as TorchRLComposite  # noqa: E402
from torchrl.objectives import TD3BCLoss as TorchRLTD3BCLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, Actor, ValueOperator, flatten_params  # noqa: E402
from arrayrl.objectives import TD3Loss  # noqa: E402
from arrayrl.objectives.td3_bc import TD3BCLoss  # noqa: E402

from .test_td3_ddpg import (  # noqa: E402
    ACT,
    OBS,
    _actor,
    _batch,
    _compare,
    _critic,
    _estimator,
    _exact_discount,
    _shared_trunk,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BOUNDS = {"bounds": (-0.5, 0.5)}


def _pair(actor, critic, seed=3, **kwargs):
    torch.manual_seed(seed)
    ref = TorchRLTD3BCLoss(*copy.deepcopy((actor, critic)), **kwargs)
    torch.manual_seed(seed)
    mine = TD3BCLoss(*copy.deepcopy((actor, critic)), **kwargs)
    _exact_discount(ref, mine, next(iter(ref.parameters())).dtype)
    return ref, mine


# -- against TorchRL ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("actor_kind", ["actor", "tanhdelta"])
def test_matches_torchrl(dtype, shape, actor_kind):
    ref, mine = _pair(_actor(actor_kind, dtype), _critic(dtype), **BOUNDS)
    expected, got = _compare(ref, mine, _batch(shape, dtype))
    assert set(got.keys()) == set(TD3BCLoss.out_keys)
    assert expected["state_action_value_actor"].shape == shape  # member 0 only
    assert expected["pred_value"].shape == (2, *shape)
    for key in ("loss_actor", "loss_qvalue", "bc_loss", "lmbd"):
        assert expected[key].shape == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_qvalue_nets=1, loss_function="l1", policy_noise=0.6, noise_clip=0.3),
        dict(num_qvalue_nets=3, loss_function="l2", alpha=10.0),
        dict(alpha=0.0, policy_noise=0.0),
        dict(delay_actor=False, delay_qvalue=False),
        dict(delay_actor=True, delay_qvalue=False, reduction="sum"),
        dict(reduction="none"),
        dict(use_prioritized_weights=False),
    ],
)
def test_options_match_torchrl(kwargs):
    dtype = torch.float64
    ref, mine = _pair(_actor("actor", dtype), _critic(dtype), **BOUNDS, **kwargs)
    _compare(ref, mine, _batch((5,), dtype, weights=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_priority_weights_and_none_reduction_match_torchrl(dtype):
    ref, mine = _pair(_actor("tanhdelta", dtype), _critic(dtype), **BOUNDS, reduction="none")
    td = _batch((2, 3), dtype, weights=True)
    _, got = _compare(ref, mine, td)
    assert got["loss_actor"].shape == got["loss_qvalue"].shape == (2, 3)
    unweighted = mine(td.exclude("priority_weight"))
    assert not torch.allclose(got["loss_actor"], unweighted["loss_actor"])


@pytest.mark.parametrize("value_type", ["TD1", "TDLambda"])
def test_value_estimators_match_torchrl(value_type):
    dtype = torch.float64
    ref, mine = _pair(_actor("actor", dtype), _critic(dtype), **BOUNDS)
    hyperparams = {"lmbda": 0.5} if value_type == "TDLambda" else {}
    _estimator(ref, mine, value_type, gamma=0.75, **hyperparams)
    _compare(ref, mine, _batch((3, 5), dtype))


@pytest.mark.parametrize("separate_losses", [False, True])
def test_shared_trunk_matches_torchrl(separate_losses):
    dtype = torch.float64
    actor, critic = _shared_trunk(dtype)
    ref, mine = _pair(actor, critic, **BOUNDS, separate_losses=separate_losses)
    _compare(ref, mine, _batch((6,), dtype, weights=True))


def test_action_spec_and_composite_spec_match_torchrl():
    dtype = torch.float32
    low, high = -torch.full((ACT,), 0.25), torch.full((ACT,), 0.5)
    box = TorchRLBounded(low, high, shape=(ACT,))
    td = _batch((6,), dtype)
    for spec in (box, TorchRLComposite(action=box)):
        ref, mine = _pair(_actor("actor", dtype), _critic(dtype), action_spec=spec)
        _compare(ref, mine, td, grads=False)
        torch.testing.assert_close(mine.min_action, low)
        torch.testing.assert_close(mine.max_action, high)


def test_alpha_is_schedulable_and_saved():
    dtype = torch.float64
    ref, mine = _pair(_actor("actor", dtype), _critic(dtype), **BOUNDS)
    td = _batch((4,), dtype)
    for loss_module in (ref, mine):
        loss_module.alpha = 7.0
    _compare(ref, mine, td, grads=False)
    assert float(mine.state_dict()["alpha"]) == 7.0
    with pytest.raises(ValueError, match="alpha"):
        mine.alpha = -1.0


# -- the equations by hand ------------------------------------------------------------------------
def _linear_modules(bias_shift=0.0):
    """A one-layer tanh actor and a one-layer critic on NumPy float64 (weights readable)."""
    opts = dict(backend="numpy", dtype="float64")
    actor = Actor(MLP(OBS, ACT, [], activate_last_layer=True, seed=0, **opts))
    critic = MLP(OBS + ACT, 1, [], seed=1, **opts)
    critic.params["0"]["bias"] = critic.params["0"]["bias"] + bias_shift
    return actor, ValueOperator(critic, in_keys=["observation", "action"])


def _numpy_batch(shape=(5,), seed=0):
    rng = np.random.default_rng(seed)
    done = rng.random((*shape, 1)) < 0.4
    return ArrayDict(
        {
            "observation": rng.standard_normal((*shape, OBS)),
            "action": rng.uniform(-0.9, 0.9, (*shape, ACT)),
            "next": {
                "observation": rng.standard_normal((*shape, OBS)),
                "reward": rng.standard_normal((*shape, 1)),
                "done": done,
                "terminated": done & (rng.random((*shape, 1)) < 0.5),
            },
        },
        batch_size=shape,
    )


def _layer(tree):
    flat = flatten_params(tree)
    return np.asarray(flat["module.0.weight"]), np.asarray(flat["module.0.bias"])


def test_numpy_matches_the_equations_by_hand():
    """Noise switched off (σ = 0): λ, bc_loss, loss_actor and TD3's clipped double-Q
    target and critic loss from the weights, in NumPy."""
    gamma, alpha, low, high = 0.8, 2.5, -0.3, 0.3
    loss = TD3BCLoss(
        *_linear_modules(bias_shift=0.7),
        bounds=(low, high),
        policy_noise=0.0,
        loss_function="l2",
        num_qvalue_nets=2,
        alpha=alpha,
        seed=0,
    )
    loss.make_value_estimator("td0", gamma=gamma)
    batch = _numpy_batch()
    out = loss(batch)

    wa, ba = _layer(loss.actor_network_params)
    members = flatten_params(loss.qvalue_network_params)
    wq, bq = np.asarray(members["module.0.weight"]), np.asarray(members["module.0.bias"])
    obs, action = batch["observation"], batch["action"]

    def policy(s):
        return np.tanh(s @ wa.T + ba)

    def q(i, s, a):
        return (np.concatenate([s, a], -1) @ wq[i].T + bq[i])[..., 0]

    pi = policy(obs)
    q1 = q(0, obs, pi)
    lmbd = alpha / np.abs(q1).mean()
    bc = ((pi - action) ** 2).mean()
    np.testing.assert_allclose(out["lmbd"], lmbd, rtol=1e-12)
    np.testing.assert_allclose(out["bc_loss"], bc, rtol=1e-12)
    np.testing.assert_allclose(out["state_action_value_actor"], q1, rtol=1e-12)
    np.testing.assert_allclose(out["loss_actor"], np.mean(-lmbd * q1 + bc), rtol=1e-12)

    s2 = batch["next", "observation"]
    a2 = np.clip(policy(s2), low, high)  # the targets equal the online networks at first
    next_value = np.minimum(q(0, s2, a2), q(1, s2, a2))
    not_term = 1.0 - batch["next", "terminated"][..., 0]
    target = batch["next", "reward"][..., 0] + gamma * not_term * next_value
    pred = np.stack([q(0, obs, action), q(1, obs, action)])
    np.testing.assert_allclose(out["next_state_value"], next_value, rtol=1e-12)
    np.testing.assert_allclose(out["target_value"], target, rtol=1e-12)
    np.testing.assert_allclose(out["loss_qvalue"], ((pred - target) ** 2).sum(0).mean(), rtol=1e-12)
    np.testing.assert_allclose(batch["td_error"], ((pred - target) ** 2).max(0), rtol=1e-12)


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(0.05, 20.0), alpha=st.floats(0.0, 5.0))
def test_loss_actor_is_invariant_to_the_scale_of_q(scale, alpha):
    """λ normalises Q: scaling every critic's output by c > 0 leaves λ·Q, and so
    loss_actor, unchanged (the point of λ in the paper)."""
    batch = _numpy_batch((6,), seed=2)

    def actor_loss(c):
        loss = TD3BCLoss(*_linear_modules(bias_shift=0.3), bounds=(-1.0, 1.0), alpha=alpha, seed=0)
        tree = loss.qvalue_network_params
        tree["module"]["0"] = {k: c * v for k, v in tree["module"]["0"].items()}
        return loss.actor_loss(batch)

    (scaled, info), (plain, plain_info) = actor_loss(scale), actor_loss(1.0)
    np.testing.assert_allclose(
        info["state_action_value_actor"], scale * plain_info["state_action_value_actor"], rtol=1e-9
    )
    np.testing.assert_allclose(scaled, plain, rtol=1e-9, atol=1e-12)


def test_numpy_torch_and_array_api_strict_agree():
    strict = pytest.importorskip("array_api_strict")
    batch = _numpy_batch((3, 4))
    outputs = {}
    for backend in ("numpy", "torch", "array_api_strict"):
        loss = TD3BCLoss(*_linear_modules(), bounds=(-0.5, 0.5), seed=4).to(backend)
        loss.generator_mode = "numpy"
        loss.seed = 11  # fresh generators in NumPy mode: the same noise everywhere
        got = loss(batch.to(backend))
        outputs[backend] = {
            k: np.asarray(loss.backend.to_numpy(loss.backend.stop_gradient(got[k])))
            for k in got.keys()
        }
    assert strict is not None
    for backend in ("torch", "array_api_strict"):
        assert outputs[backend].keys() == outputs["numpy"].keys()
        for key, value in outputs["numpy"].items():
            np.testing.assert_allclose(
                outputs[backend][key], value, rtol=1e-12, atol=1e-12, err_msg=f"{backend}: {key}"
            )


def test_is_td3_plus_the_bc_term():
    """With alpha=0 the actor loss is pure behaviour cloning; the critic side is TD3's
    (same noise, same numbers)."""
    batch = _numpy_batch((5,))
    td3bc = TD3BCLoss(*_linear_modules(), bounds=(-0.5, 0.5), alpha=0.0, seed=5)
    td3 = TD3Loss(*_linear_modules(), bounds=(-0.5, 0.5), seed=5)
    got, expected = td3bc(batch), td3(batch)
    np.testing.assert_allclose(got["loss_actor"], got["bc_loss"], rtol=1e-12)
    for key in ("loss_qvalue", "pred_value", "target_value", "next_state_value"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, err_msg=key)
    np.testing.assert_allclose(
        got["state_action_value_actor"], expected["state_action_value_actor"][0], rtol=1e-12
    )
    td3bc.seed = 5  # fresh generators: TorchRL's name of the critic term, same noise
    first = td3bc(batch)["loss_qvalue"]
    td3bc.seed = 5
    np.testing.assert_allclose(td3bc.qvalue_loss(batch)[0], first, rtol=1e-12)


# -- arguments ------------------------------------------------------------------------------------
def test_refusals():
    actor, critic = _linear_modules()
    bounds = (-1.0, 1.0)
    with pytest.raises(TypeError, match="gamma"):  # TorchRL's TD3BCLoss has no gamma
        TD3BCLoss(actor, critic, bounds=bounds, gamma=0.9)
    with pytest.raises(TypeError, match="unexpected keyword"):
        TD3BCLoss(actor, critic, bounds=bounds, totally_bogus=3)
    with pytest.raises(RuntimeError, match="set_keys"):
        TD3BCLoss(actor, critic, bounds=bounds, priority_key="prio")
    with pytest.raises(ValueError, match="bounds"):
        TD3BCLoss(actor, critic)
    with pytest.raises(ValueError, match="loss_function"):
        TD3BCLoss(actor, critic, bounds=bounds, loss_function="huber")
    for alpha in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="alpha"):
            TD3BCLoss(actor, critic, bounds=bounds, alpha=alpha)
    with pytest.raises(ValueError, match="policy_noise"):
        TD3BCLoss(actor, critic, bounds=bounds, policy_noise=-0.1)
    with pytest.raises(ValueError, match="delay_actor"):
        TD3BCLoss(actor, critic, bounds=bounds, delay_actor=2)


def test_bad_batches_name_the_key():
    loss = TD3BCLoss(*_linear_modules(), bounds=(-1.0, 1.0))
    batch = _numpy_batch((4,))
    with pytest.raises(KeyError, match="action"):
        loss(batch.exclude("action"))
    wide = batch.clone()
    wide.set("action", np.zeros((4, ACT + 1)))
    with pytest.raises(ValueError, match="shape"):
        loss.actor_loss(wide)
