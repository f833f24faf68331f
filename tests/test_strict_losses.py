"""Strict inputs on the loss side: coefficients, ``normalize_advantage_exclude_dims``,
log-prob shapes, ``params=`` trees, target updaters, element-wise REINFORCE, unknown
keyword arguments and ``load_state_dict``.

Each test fails on the code before these checks (which accepted NaN and infinite
coefficients, wrapped or NaN'd excluded dims, broadcast the PPO ratio into an outer
product, ignored unknown networks, named ``eps`` for ``tau``, never updated with a float
interval, refused element-wise REINFORCE, named ``PPOLoss`` for ``ClipPPOLoss`` and
loaded a state dict half-way).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential
from arrayrl.modules.actors import ProbabilisticActor
from arrayrl.objectives import (
    A2CLoss,
    ClipPPOLoss,
    HardUpdate,
    KLPENPPOLoss,
    PPOLoss,
    ReinforceLoss,
    SoftUpdate,
)

from .test_a2c_reinforce import (
    OBS,
    REDUCTIONS,
    SCALE_MAPPING,
    _host,
    _torch_mlp,
    assert_outputs_match,
    make_data,
    make_nets,
    to_arraydict,
    to_tensordict,
)

N = 6
PPO_LOSSES = {"PPOLoss": PPOLoss, "ClipPPOLoss": ClipPPOLoss, "KLPENPPOLoss": KLPENPPOLoss}
ALL_LOSSES = {**PPO_LOSSES, "A2CLoss": A2CLoss, "ReinforceLoss": ReinforceLoss}


def _ppo_batch(shape: tuple[int, ...] = (N,), log_prob_shape: tuple[int, ...] | None = None):
    """A batch for the PPO losses with an IndependentNormal actor (log-prob ``[*shape]``)."""
    data = make_data("normal", shape)
    rng = np.random.default_rng(1)
    data["action_log_prob"] = rng.standard_normal(log_prob_shape or shape)
    data["loc"] = rng.standard_normal((*shape, 2))
    data["scale"] = rng.uniform(0.5, 1.5, (*shape, 2))
    return to_arraydict(data, shape)


# -- 1. coefficients --------------------------------------------------------------------------
NAN, INF = math.nan, math.inf
BAD_COEFFICIENTS = [
    ("ClipPPOLoss", {"entropy_coeff": NAN}, "entropy_coeff"),
    ("ClipPPOLoss", {"entropy_coeff": np.float32(NAN)}, "entropy_coeff"),
    ("ClipPPOLoss", {"critic_coeff": INF}, "critic_coeff"),
    ("ClipPPOLoss", {"clip_epsilon": (0.2, NAN)}, "clip_epsilon_high"),
    ("ClipPPOLoss", {"clip_epsilon": (0.2, INF)}, "clip_epsilon_high"),
    ("ClipPPOLoss", {"clip_value": INF}, "clip_value"),
    ("ClipPPOLoss", {"max_importance_ratio": NAN}, "max_importance_ratio"),
    ("ClipPPOLoss", {"entropy_coeff": {"action_entropy": NAN}}, "entropy_coeff"),
    ("ClipPPOLoss", {"samples_mc_entropy": 1.5}, "samples_mc_entropy"),
    ("KLPENPPOLoss", {"beta": NAN}, "beta"),
    ("KLPENPPOLoss", {"dtarg": NAN}, "dtarg"),
    ("KLPENPPOLoss", {"increment": NAN}, "increment"),
    ("KLPENPPOLoss", {"decrement": np.float64(NAN)}, "decrement"),
    ("KLPENPPOLoss", {"decrement": -0.5}, "decrement"),
    ("KLPENPPOLoss", {"samples_mc_kl": 0}, "samples_mc_kl"),
    ("A2CLoss", {"critic_coeff": NAN}, "critic_coeff"),
    ("A2CLoss", {"samples_mc_entropy": 2.0}, "samples_mc_entropy"),
    ("ReinforceLoss", {"clip_value": NAN}, "clip_value"),
]


@pytest.mark.parametrize(("name", "kwargs", "argument"), BAD_COEFFICIENTS)
def test_bad_coefficients_are_refused_naming_them(name, kwargs, argument) -> None:
    nets = make_nets("normal")
    with pytest.raises((ValueError, TypeError), match=argument):
        ALL_LOSSES[name](nets.actor, nets.critic, **kwargs)


@pytest.mark.parametrize("value", [NAN, INF, -1.0, np.float32(NAN), np.asarray(-0.5)])
@pytest.mark.parametrize("coeff", ["entropy_coeff", "critic_coeff", "clip_epsilon"])
def test_scheduled_coefficients_refuse_nan_inf_and_negatives(coeff, value) -> None:
    nets = make_nets("normal")
    loss = ClipPPOLoss(nets.actor, nets.critic)
    before = getattr(loss, coeff)
    with pytest.raises(ValueError, match=coeff):
        setattr(loss, coeff, value)
    assert getattr(loss, coeff) == before
    setattr(loss, coeff, np.float32(0.125))  # NumPy scalars and 0-d arrays are fine
    assert type(getattr(loss, coeff)) is float and getattr(loss, coeff) == 0.125


# -- 3. normalize_advantage_exclude_dims --------------------------------------------------------
@pytest.mark.parametrize("dims", [(2,), (-3,), (5,)])
def test_excluded_dim_out_of_range_raises_at_call(dims) -> None:
    nets = make_nets("normal")
    loss = ClipPPOLoss(
        nets.actor, nets.critic, normalize_advantage=True, normalize_advantage_exclude_dims=dims
    )
    with pytest.raises(ValueError, match=r"normalize_advantage_exclude_dims.*2 dims"):
        loss(_ppo_batch())


@pytest.mark.parametrize("dims", [(1, 1), (0, -2), ("0",), (0.5,)])
def test_excluded_dims_must_be_distinct_ints(dims) -> None:
    nets = make_nets("normal")
    loss_or_error = (TypeError, ValueError)
    with pytest.raises(loss_or_error, match="normalize_advantage_exclude_dims"):
        loss = ClipPPOLoss(
            nets.actor, nets.critic, normalize_advantage=True,
            normalize_advantage_exclude_dims=dims,
        )
        loss(_ppo_batch())


@pytest.mark.parametrize("mask", [None, "shifted_valid"])
def test_excluding_every_dim_leaves_the_advantage_as_is(mask) -> None:
    nets = make_nets("normal")
    batch = _ppo_batch()
    if mask:
        batch.set(mask, np.array([True, False, True, True, True, False])[:, None])
    plain = ClipPPOLoss(nets.actor, nets.critic)(batch)
    loss = ClipPPOLoss(
        nets.actor, nets.critic, normalize_advantage=True,
        normalize_advantage_exclude_dims=(0, -1),
    )
    with pytest.warns(UserWarning, match="excludes every dim"):
        out = loss(batch)
    assert np.isfinite(out["loss_objective"])
    np.testing.assert_allclose(out["loss_objective"], plain["loss_objective"], rtol=1e-12)


# -- 4. log-prob shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PPO_LOSSES))
def test_stored_log_prob_with_a_trailing_unit_dim_raises(name) -> None:
    nets = make_nets("normal")
    loss = PPO_LOSSES[name](nets.actor, nets.critic)
    with pytest.raises(ValueError, match=r"\(6,\).*'action_log_prob' has shape \(6, 1\)"):
        loss(_ppo_batch(log_prob_shape=(N, 1)))


def _unit_action_actor() -> ProbabilisticActor:
    """An element-wise ``Normal`` actor over a 1-d action: log-prob ``[N, 1]``."""
    from arrayrl.modules.distributions import Normal

    net = Sequential(MLP(OBS, 2, [8], seed=3, dtype=np.float64), NormalParamExtractor())
    module = DictModule(net, ["observation"], ["loc", "scale"])
    return ProbabilisticActor(module, in_keys=["loc", "scale"], distribution_class=Normal)


@pytest.mark.parametrize("name", sorted(PPO_LOSSES))
def test_actor_log_prob_with_a_trailing_unit_dim_raises(name) -> None:
    nets = make_nets("normal")
    loss = PPO_LOSSES[name](_unit_action_actor(), nets.critic)
    batch = _ppo_batch(log_prob_shape=(N,))
    batch.set("action", np.linspace(-1, 1, N)[:, None])
    batch.set("loc", np.zeros((N, 1)))
    batch.set("scale", np.ones((N, 1)))
    with pytest.raises(ValueError, match=r"\(6, 1\).*'action_log_prob' has shape \(6,\)"):
        loss(batch)


# -- 5. params= -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_params_for_an_unknown_network_raise_naming_the_networks(name) -> None:
    nets = make_nets("normal")
    loss = ALL_LOSSES[name](nets.actor, nets.critic)
    tree = loss.critic_network_params
    with pytest.raises(KeyError, match=r"no network 'critic'.*'actor_network', 'critic_network'"):
        loss(_ppo_batch(), params={"critic": tree})


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_params_tree_with_other_paths_names_them(name) -> None:
    nets = make_nets("normal")
    loss = ALL_LOSSES[name](nets.actor, nets.critic)
    tree = {"weights": loss.actor_network_params}
    with pytest.raises(KeyError, match=r"params\['actor_network'\].*missing.*unexpected"):
        loss(_ppo_batch(), params={"actor_network": tree})
    batch = _ppo_batch()  # the network's own tree, passed explicitly, still works
    out = loss(batch, params={"actor_network": loss.actor_network_params})
    key = "loss_actor" if name == "ReinforceLoss" else "entropy"  # KL-PEN's β moves
    np.testing.assert_allclose(_host(out[key]), _host(loss(batch)[key]))


# -- 6. target updaters -------------------------------------------------------------------------
def test_soft_update_names_tau() -> None:
    nets = make_nets("normal")
    loss = ReinforceLoss(nets.actor, nets.critic, delay_value=True)
    with pytest.raises(ValueError, match=r"^tau must be in"):
        SoftUpdate(loss, tau=1.5)
    with pytest.raises(ValueError, match=r"^eps must be in"):
        SoftUpdate(loss, eps=np.float32(-0.5))
    with pytest.raises(ValueError, match="tau"):
        SoftUpdate(loss, tau=NAN)


@pytest.mark.parametrize(
    ("interval", "error"), [(1.5, TypeError), (True, TypeError), (-1, ValueError)]
)
def test_hard_update_interval_is_a_count(interval, error) -> None:
    nets = make_nets("normal")
    loss = ReinforceLoss(nets.actor, nets.critic, delay_value=True)
    with pytest.raises(error, match="value_network_update_interval"):
        HardUpdate(loss, value_network_update_interval=interval)
    updater = HardUpdate(loss, value_network_update_interval=np.int64(2))
    assert type(updater.value_network_update_interval) is int


# -- 8. element-wise REINFORCE --------------------------------------------------------------------
def _elementwise_pair(**kwargs: Any) -> tuple[Any, Any]:
    """Our and TorchRL's ``ReinforceLoss`` with an element-wise ``Normal`` actor (log-prob
    ``[N, A]``) and the same weights."""
    pytest.importorskip("torchrl")
    import torch
    import torchrl.objectives as trl
    from tensordict.nn import NormalParamExtractor as TorchExtractor
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor as TorchActor
    from torchrl.modules import ValueOperator as TorchValue

    from arrayrl.modules.distributions import Normal

    nets = make_nets("normal")
    layer = Sequential(nets.actor_mlp, NormalParamExtractor(SCALE_MAPPING))
    actor = ProbabilisticActor(
        DictModule(layer, ["observation"], ["loc", "scale"]), in_keys=["loc", "scale"],
        distribution_class=Normal,
    )
    t_layer = torch.nn.Sequential(_torch_mlp(nets.actor_mlp), TorchExtractor(SCALE_MAPPING))
    t_actor = TorchActor(
        TensorDictModule(t_layer, ["observation"], ["loc", "scale"]), in_keys=["loc", "scale"],
        distribution_class=torch.distributions.Normal,
    )
    t_critic = TorchValue(_torch_mlp(nets.critic_mlp), in_keys=["observation"])
    theirs = trl.ReinforceLoss(t_actor, t_critic, **kwargs)
    return ReinforceLoss(actor, nets.critic, **kwargs), theirs


@pytest.mark.parametrize("shape", [(N,), (3, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reinforce_spreads_the_advantage_over_elementwise_actions(reduction, shape) -> None:
    ours, theirs = _elementwise_pair(reduction=reduction)
    data = make_data("normal", shape)
    out = ours(to_arraydict(data, shape))
    expected = theirs(to_tensordict(data, shape))
    assert_outputs_match(out, expected)
    assert tuple(out["loss_actor"].shape) == tuple(expected["loss_actor"].shape)
    data["advantage"] = np.ones((*shape, shape[-1]))  # would broadcast: still refused
    with pytest.raises(ValueError, match="advantage"):
        ours(to_arraydict(data, shape))


# -- 9. unknown keyword arguments -----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_unknown_keyword_arguments_name_the_loss(name) -> None:
    nets = make_nets("normal")
    with pytest.raises(TypeError) as err:
        ALL_LOSSES[name](nets.actor, nets.critic, clip_eps=0.1)
    assert str(err.value) == f"{name} got an unexpected keyword argument 'clip_eps'"


@pytest.mark.parametrize("name", sorted(PPO_LOSSES))
@pytest.mark.parametrize(
    ("old", "new"), [("entropy_coef", "entropy_coeff"), ("critic_coef", "critic_coeff")]
)
def test_removed_coef_names_point_to_the_new_ones(name, old, new) -> None:
    nets = make_nets("normal")
    with pytest.raises(TypeError, match=f"'{old}' has been removed.*'{new}'"):
        PPO_LOSSES[name](nets.actor, nets.critic, **{old: 0.1})


# -- 10. load_state_dict is all or nothing ------------------------------------------------------
def _snapshot(loss: Any) -> dict[str, np.ndarray]:
    return {k: np.array(_host(v), copy=True) for k, v in loss.state_dict().items()}


def _changed_state(loss: Any) -> dict[str, Any]:
    """Every entry of ``loss.state_dict()`` changed (new arrays), coefficients halved."""
    return {k: np.array(_host(v), copy=True) * 0.5 + 0.25 for k, v in loss.state_dict().items()}


def _corrupt_shape(state: dict, key: str) -> None:
    state[key] = np.zeros((*state[key].shape, 2))


def _corrupt_dtype(state: dict, key: str) -> None:
    state[key] = np.zeros(state[key].shape, dtype=np.int64)


def _corrupt_coefficient(state: dict, key: str) -> None:
    state["entropy_coeff"] = np.asarray(NAN)


@pytest.mark.parametrize(
    ("corrupt", "error"),
    [(_corrupt_shape, ValueError), (_corrupt_dtype, TypeError), (_corrupt_coefficient, ValueError)],
)
def test_a_bad_state_entry_leaves_the_loss_untouched(corrupt, error) -> None:
    nets = make_nets("normal")
    loss = ClipPPOLoss(nets.actor, nets.critic, delay_actor=True)
    before = _snapshot(loss)
    state = _changed_state(loss)
    last = [k for k in state if "_params." in k][-1]  # loaded after everything else
    corrupt(state, last)
    with pytest.raises(error, match=r"state_dict\[|entropy_coeff"):
        loss.load_state_dict(state)
    after = _snapshot(loss)
    assert after.keys() == before.keys()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    good = _changed_state(loss)  # the same state, uncorrupted, loads every entry
    loss.load_state_dict(good)
    for key, value in _snapshot(loss).items():
        np.testing.assert_allclose(value, good[key], err_msg=key)
