"""MAPPOLoss and IPPOLoss: TorchRL's own modules dropped in (shared and per-agent
``MultiAgentMLP``, team and per-agent rewards, every value normaliser) against TorchRL's
losses, the critic loss and the diagnostics against NumPy formulas, hypothesis
properties, the normaliser's state handling and bad input. Every configuration against
TorchRL on arrayrl's own modules and every backend is in conformance/mappo_cases.py."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from arrayrl.conformance.mappo_cases import (
    AGENT_KEYS,
    PER_AGENT_SIGNALS,
    AgentNetworks,
    agent_keys,
    agent_modules,
    agents_rollout,
    agents_tensordict,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.data import ArrayDict
from arrayrl.objectives import ClipPPOLoss, ValueEstimators
from arrayrl.objectives.multiagent.mappo import IPPOLoss, MAPPOLoss

B, T, N, OBS, ACT, H = 3, 4, 3, 5, 2, 8
#: keys TorchRL 0.14.1 reduces over dim 0 only (a recorded deviation)
PER_AGENT_DIAGNOSTICS = ("ESS", "explained_variance")


def _sizes(share: bool = True, centralized_critic: bool = True) -> AgentNetworks:
    """This file's actor-critic sizes (the networks of conformance/mappo_cases.py)."""
    return AgentNetworks(
        obs=OBS,
        act=ACT,
        agents=N,
        share_params=share,
        centralized_critic=centralized_critic,
        num_cells=H,
    )


def _arrays(seed: int = 0, *, team: bool = True, given_advantage: bool = False) -> dict:
    """A [B, T] multi-agent batch (float64 NumPy) without actions."""
    rng = np.random.default_rng(seed)
    batch = agents_rollout(rng, (B, T), team=team, done_rate=0.25, agents=N, obs=OBS)
    if given_advantage:
        column = (B, T, N, 1)
        batch["agents"].update(
            advantage=rng.standard_normal(column),
            value_target=2.0 * rng.standard_normal(column) + 1.0,
            state_value=0.5 * rng.standard_normal(column),
        )
    return batch


# -- TorchRL's modules, dropped in ---------------------------------------------------------


def _torchrl_networks(share: bool, centralized_critic: bool, dtype=None):
    """TorchRL's TanhNormal actor and critic, torch's initialisation after seed 0."""
    import torch

    torch.manual_seed(0)
    nets = _sizes(share, centralized_critic).mlps("torchrl", dtype=dtype or torch.float32)
    return agent_modules(nets, "TanhNormal", torchrl=True)


def _tensordict(arrays: dict, actor, dtype=None):
    """The batch as a TensorDict in VMAS's layout, with actions the actor sampled."""
    import torch
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    def to_torch(tree):
        if isinstance(tree, dict):
            return {k: to_torch(v) for k, v in tree.items()}
        t = torch.from_numpy(np.asarray(tree))
        return t.to(dtype or torch.float32) if t.is_floating_point() else t

    td = agents_tensordict(to_torch(arrays), [B, T], agents=N)
    torch.manual_seed(1)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        actor(td)
    return td


def _run(loss, td, seed: int = 3):
    """The loss's outputs on a copy of ``td``, after ``torch.manual_seed(seed)`` (the
    TanhNormal entropy draws from torch's default generator in both libraries)."""
    import torch

    torch.manual_seed(seed)
    return loss(td.clone())


def _grads(out, params) -> dict:
    import torch

    grads = {}
    for key in out.keys():
        if key.startswith("loss_"):
            found = torch.autograd.grad(out[key], params, retain_graph=True, allow_unused=True)
            grads[key] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
    return grads


def _assert_same(ours, theirs, params, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    keys = set(theirs.keys())
    assert set(ours.keys()) == keys
    for key in keys - set(PER_AGENT_DIAGNOSTICS):
        np.testing.assert_allclose(
            ours[key].detach().numpy(),
            theirs[key].detach().numpy(),
            rtol=rtol,
            atol=atol,
            err_msg=key,
        )
    ours_g, theirs_g = _grads(ours, params), _grads(theirs, params)
    for key in theirs_g:
        for a, b in zip(ours_g[key], theirs_g[key]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.parametrize(
    ("cls", "share", "team"),
    [
        ("MAPPOLoss", True, True),
        ("MAPPOLoss", False, False),
        ("IPPOLoss", False, True),
        ("IPPOLoss", True, False),
    ],
)
def test_torchrl_modules_dropped_in_match_torchrl(cls: str, share: bool, team: bool) -> None:
    pytest.importorskip("torchrl")
    from torchrl.objectives import multiagent

    from arrayrl.objectives.multiagent import mappo

    actor, critic = _torchrl_networks(share, centralized_critic=cls == "MAPPOLoss")
    td = _tensordict(_arrays(team=team), actor)
    params = [*actor.parameters(), *critic.parameters()]
    losses = []
    for module in (mappo, multiagent):
        loss = getattr(module, cls)(actor, critic, clip_value=0.1)
        loss.set_keys(**agent_keys(team))
        losses.append(_run(loss, td))
    ours, theirs = losses
    _assert_same(ours, theirs, params)
    assert ours["ESS"].shape == () and ours["explained_variance"].shape == (1,)
    assert theirs["ESS"].shape == (T, N)  # TorchRL 0.14.1: over dim 0 only


@pytest.mark.parametrize("kind", ["PopArtValueNorm", "RunningValueNorm", "PercentileValueNorm"])
def test_torchrl_value_norm_matches_torchrl_over_two_calls(kind: str) -> None:
    pytest.importorskip("torchrl")
    import torchrl.modules as modules
    from torchrl.objectives.multiagent import MAPPOLoss as TorchRLMAPPOLoss

    actor, critic = _torchrl_networks(True, centralized_critic=True)
    td = _tensordict(_arrays(4, given_advantage=True), actor)
    params = [*actor.parameters(), *critic.parameters()]
    hyper = {"PopArtValueNorm": {"beta": 0.8}, "PercentileValueNorm": {"rate": 0.5}}.get(kind, {})
    theirs_norm = getattr(modules, kind)(**hyper)
    ours = MAPPOLoss(actor, critic, value_norm=getattr(modules, kind)(**hyper), clip_value=0.2)
    theirs = TorchRLMAPPOLoss(actor, critic, value_norm=theirs_norm, clip_value=0.2)
    for loss in (ours, theirs):
        loss.set_keys(**AGENT_KEYS)
    for seed in (5, 6):  # the second call normalises with the updated statistics
        _assert_same(_run(ours, td, seed), _run(theirs, td, seed), params)
    theirs_state = theirs.value_norm.state_dict()
    for name, value in ours.value_norm.state_dict().items():
        assert value.dtype == theirs_state[name].dtype  # float32, as TorchRL's buffers
        np.testing.assert_allclose(value.numpy(), theirs_state[name].numpy(), rtol=1e-6)


def test_an_adapted_torchrl_actor_keeps_its_deterministic_default() -> None:
    # TorchRL's quirk, matched: outside ExplorationType.RANDOM its actor writes the
    # distribution's deterministic sample, and so does the loss's adapted actor
    pytest.importorskip("torchrl")
    import torch
    from tensordict import TensorDict

    actor, critic = _torchrl_networks(True, centralized_critic=True)
    loss = MAPPOLoss(actor, critic)
    obs = torch.from_numpy(_arrays()["agents"]["observation"]).float()
    td = TensorDict({"agents": {"observation": obs}}, [B, T])
    with torch.no_grad():
        theirs = actor(td.clone()).get(AGENT_KEYS["action"])
        ours = loss.actor_network(td.clone()).get(AGENT_KEYS["action"])
    assert loss.actor_network.default_interaction_type == "deterministic"
    torch.testing.assert_close(ours, theirs)


def test_value_norm_state_dict_keys_load_and_move_as_torchrl() -> None:
    pytest.importorskip("torchrl")
    import torch
    import torchrl.modules as modules
    from torchrl.objectives.multiagent import MAPPOLoss as TorchRLMAPPOLoss

    from arrayrl.modules.value_norm import PopArtValueNorm

    actor, critic = _torchrl_networks(True, centralized_critic=True)
    theirs = TorchRLMAPPOLoss(actor, critic, value_norm=modules.PopArtValueNorm())
    state = {k: v for k, v in theirs.state_dict().items() if k.startswith("value_norm.")}
    state["value_norm.running_mean"] = torch.tensor([0.5])
    state["value_norm.debiasing_term"] = torch.tensor(0.25)
    ours = MAPPOLoss(*_arrayrl_networks(), value_norm=PopArtValueNorm())
    assert {k for k in ours.state_dict() if k.startswith("value_norm.")} == set(state)
    full = {**ours.state_dict(), **{k: v.numpy() for k, v in state.items()}}
    ours.load_state_dict(full)
    assert float(ours.value_norm.running_mean[0]) == 0.5
    ours.to("torch")
    assert isinstance(ours.value_norm.running_mean, torch.Tensor)
    assert float(ours.state_dict()["value_norm.debiasing_term"]) == 0.25


def test_defaults_and_signature_follow_torchrl() -> None:
    pytest.importorskip("torchrl")
    from torchrl.objectives import multiagent

    for ours, theirs in ((MAPPOLoss, multiagent.MAPPOLoss), (IPPOLoss, multiagent.IPPOLoss)):
        mine = inspect.signature(ours.__init__).parameters
        for name, param in inspect.signature(theirs.__init__).parameters.items():
            assert mine[name].kind == param.kind, name
            if name not in ("self", "kwargs", "actor_network", "critic_network"):
                assert mine[name].default == param.default, name
    assert issubclass(IPPOLoss, MAPPOLoss) and issubclass(MAPPOLoss, ClipPPOLoss)
    loss = IPPOLoss(*_arrayrl_networks())
    assert loss.default_value_estimator is ValueEstimators.MAGAE
    assert loss.entropy_coeff == 0.01 and loss.normalize_advantage
    assert loss.normalize_advantage_exclude_dims == (-2,) and loss.value_norm is None
    loss.set_keys(**AGENT_KEYS)
    assert type(loss.value_estimator).__name__ == "MultiAgentGAE"


# -- arrayrl's own modules: formulas and properties ------------------------------------------


def _arrayrl_networks(centralized_critic: bool = True, share: bool = True):
    """arrayrl's IndependentNormal actor and critic, float64, seeds 1 and 2."""
    seeds = {"actor": 1, "critic": 2}
    nets = _sizes(share, centralized_critic).mlps("arrayrl", seeds=seeds, dtype=np.float64)
    return agent_modules(nets, "IndependentNormal")


def _batch(arrays: dict, actor, seed: int = 1) -> ArrayDict:
    from arrayrl.random import make_generator

    batch = ArrayDict(arrays, [B, T])
    actor(batch, rng=make_generator(seed))
    log_prob = batch.get(AGENT_KEYS["sample_log_prob"])  # a behaviour policy nearby
    noise = 0.3 * np.random.default_rng(seed).standard_normal(log_prob.shape)
    batch.set(AGENT_KEYS["sample_log_prob"], log_prob + noise)
    return batch


def _smooth_l1(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = np.abs(x - y)
    return np.where(d < 1.0, 0.5 * d**2, d - 0.5)


def test_outputs_are_scalars_and_diagnostics_reduce_over_every_dim() -> None:
    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(2, given_advantage=True), actor)
    loss = MAPPOLoss(actor, critic)
    loss.set_keys(**AGENT_KEYS)
    out = loss(batch)
    for key in out.keys():
        assert out[key].shape == ((1,) if key == "explained_variance" else ()), key
    log_w = np.asarray(
        actor.get_dist(batch.clone(recurse=False)).log_prob(batch.get(AGENT_KEYS["action"]))
    ) - batch.get(AGENT_KEYS["sample_log_prob"])
    ess = np.exp(2 * np.log(np.exp(log_w).sum()) - np.log(np.exp(2 * log_w).sum())) / log_w.size
    np.testing.assert_allclose(out["ESS"], ess, rtol=1e-10)
    target = batch.get(AGENT_KEYS["value_target"])
    value = np.asarray(critic(batch.clone(recurse=False)).get(AGENT_KEYS["value"]))
    explained = 1 - np.var(target - value) / (np.var(target) + np.finfo(np.float64).eps)
    np.testing.assert_allclose(out["explained_variance"], [explained], rtol=1e-10)


def _popart_after(state: dict, target: np.ndarray, beta: float) -> dict:
    """PopArt's EMA update (van Hasselt et al. 2016), float32 statistics."""
    mean, mean_sq, debias = (np.float64(state[k]) for k in ("m", "m2", "d"))
    return {
        "m": np.float32(beta * mean + (1 - beta) * target.mean()),
        "m2": np.float32(beta * mean_sq + (1 - beta) * (target**2).mean()),
        "d": np.float32(beta * debias + (1 - beta)),
    }


def _normalise(x: np.ndarray, state: dict, eps: float = 1e-5) -> np.ndarray:
    d = max(np.float64(state["d"]), eps)
    mu = np.float64(state["m"]) / d
    var = max(np.float64(state["m2"]) / d - mu**2, eps)
    return (x - mu) / np.sqrt(var)


@pytest.mark.parametrize("clip_value", [None, 0.1])
def test_popart_critic_loss_matches_the_numpy_formula(clip_value) -> None:
    from arrayrl.modules.value_norm import PopArtValueNorm

    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(3, given_advantage=True), actor)
    norm = PopArtValueNorm(beta=0.7)
    start = {"m": 0.3, "m2": 1.2, "d": 0.5}
    norm.load_state_dict(
        {
            "running_mean": np.float32([start["m"]]),
            "running_mean_sq": np.float32([start["m2"]]),
            "debiasing_term": np.float32(start["d"]),
        }
    )
    loss = MAPPOLoss(actor, critic, value_norm=norm, clip_value=clip_value)
    loss.set_keys(**AGENT_KEYS)
    out = loss(batch)

    target, old = batch.get(AGENT_KEYS["value_target"]), batch.get(AGENT_KEYS["value"])
    value = np.asarray(critic(batch.clone(recurse=False)).get(AGENT_KEYS["value"]))
    state = _popart_after(start, target, 0.7)
    t, v, o = (_normalise(x, state) for x in (target, value, old))
    expected = _smooth_l1(t, v)
    if clip_value is not None:
        expected = np.maximum(expected, _smooth_l1(t, o + np.clip(v - o, -clip_value, clip_value)))
        frac = np.mean(np.abs(v - o) > clip_value)
        np.testing.assert_allclose(out["value_clip_fraction"], frac)
        assert 0 < frac < 1
    np.testing.assert_allclose(out["loss_critic"], expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(norm.running_mean, [state["m"]], rtol=1e-6)
    np.testing.assert_allclose(norm.debiasing_term, state["d"], rtol=1e-6)


def test_value_norm_updates_in_training_mode_only_and_skips_masked_rows() -> None:
    from arrayrl.modules.value_norm import RunningValueNorm

    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(5, given_advantage=True), actor)
    norm = RunningValueNorm()
    loss = MAPPOLoss(actor, critic, value_norm=norm)
    loss.set_keys(**AGENT_KEYS)
    loss.eval()
    loss(batch)
    assert float(norm.count) == 0  # eval(): TorchRL 0.14.1 would update (a deviation)
    loss.train()
    mask = np.random.default_rng(0).random((B, T)) < 0.6
    mask[0, 0] = True
    batch.set(("collector", "mask"), mask)
    loss(batch)
    kept = batch.get(AGENT_KEYS["value_target"])[mask]  # [valid steps, agents, 1]
    assert float(norm.count) == kept.size
    np.testing.assert_allclose(norm.mean, [kept.mean()], rtol=1e-6)


def test_value_clip_fraction_is_zero_when_the_loss_computes_the_advantage() -> None:
    # TorchRL's quirk, matched: the estimator overwrites the stored state value with the
    # current critic's, so the clipped step V - V_old is 0
    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(6), actor)
    batch.set(AGENT_KEYS["value"], np.full((B, T, N, 1), 50.0))
    loss = MAPPOLoss(actor, critic, clip_value=0.01)
    loss.set_keys(**AGENT_KEYS)
    assert float(loss(batch)["value_clip_fraction"]) == 0.0


def _loss_outputs(loss, batch) -> dict:
    return {k: np.asarray(v) for k, v in loss(batch).items()}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), share=st.booleans())
def test_team_reward_equals_the_same_reward_per_agent(seed: int, share: bool) -> None:
    actor, critic = _arrayrl_networks(share=share)
    team = _batch(_arrays(seed), actor)
    per_agent = team.clone(recurse=True)
    for name in ("reward", "done", "terminated"):
        value = team.get(("next", name))
        per_agent.set(("next", "agents", name), np.broadcast_to(value[:, :, None], (B, T, N, 1)))
    loss = MAPPOLoss(actor, critic)
    loss.set_keys(**agent_keys(team=True))
    expected = _loss_outputs(loss, team)
    loss = MAPPOLoss(actor, critic)
    loss.set_keys(**agent_keys(team=False))
    got = _loss_outputs(
        loss, per_agent.exclude(("next", "reward"), ("next", "done"), ("next", "terminated"))
    )
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), order=st.permutations(range(N)))
def test_ippo_with_shared_networks_ignores_the_agent_order(seed: int, order: list) -> None:
    actor, critic = _arrayrl_networks(centralized_critic=False)
    batch = _batch(_arrays(seed, team=False), actor)
    permuted = batch.apply(lambda x: x)
    for key in batch.keys(include_nested=True, leaves_only=True):
        if "agents" in key:
            permuted.set(key, batch.get(key)[:, :, list(order)])
    loss = IPPOLoss(actor, critic, entropy_bonus=False)
    loss.set_keys(**agent_keys(team=False))
    expected, got = _loss_outputs(loss, batch), _loss_outputs(loss, permuted)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_the_callers_batch_is_not_modified() -> None:
    from arrayrl.modules.value_norm import PopArtValueNorm

    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(7), actor)
    before = {k: np.array(batch.get(k)) for k in batch.keys(include_nested=True, leaves_only=True)}
    loss = MAPPOLoss(actor, critic, value_norm=PopArtValueNorm(), clip_value=0.2)
    loss.set_keys(**AGENT_KEYS)
    loss(batch)
    assert set(batch.keys(include_nested=True, leaves_only=True)) == set(before)
    for key, value in before.items():
        np.testing.assert_array_equal(batch.get(key), value)


# -- bad input ---------------------------------------------------------------------------------


def test_unknown_and_removed_keywords_raise() -> None:
    networks = _arrayrl_networks()
    with pytest.raises(TypeError, match=r"MAPPOLoss.*clip_epsilom"):
        MAPPOLoss(*networks, clip_epsilom=0.1)
    with pytest.raises(TypeError, match="IPPOLoss"):
        IPPOLoss(*networks, value_normalizer=None)
    with pytest.raises(TypeError, match="entropy_coeff"):
        MAPPOLoss(*networks, entropy_coef=0.1)


def test_bad_value_norm_and_advantage_norm_raise() -> None:
    from arrayrl.modules.value_norm import PopArtValueNorm, RunningValueNorm

    networks = _arrayrl_networks()
    with pytest.raises(TypeError, match=r"MAPPOLoss.*value_norm.*ValueNorm"):
        MAPPOLoss(*networks, value_norm="popart")
    with pytest.raises(ValueError, match="mutually"):
        MAPPOLoss(*networks, advantage_norm=RunningValueNorm())  # normalize_advantage=True
    actor, critic = networks
    loss = MAPPOLoss(actor, critic, value_norm=PopArtValueNorm(shape=2))
    loss.set_keys(**AGENT_KEYS)
    with pytest.raises(ValueError, match=r"shape=\(2,\)"):
        loss(_batch(_arrays(given_advantage=True), actor))


def test_bad_batches_name_what_is_wrong() -> None:
    actor, critic = _arrayrl_networks()
    batch = _batch(_arrays(8, team=False), actor)
    loss = MAPPOLoss(actor, critic)
    loss.set_keys(**AGENT_KEYS)  # team reward keys, but the batch has per-agent ones
    with pytest.raises(KeyError, match=r"reward.*set_keys"):
        loss(batch)
    wrong = batch.clone(recurse=True)
    wrong.set(("next", "agents", "reward"), np.zeros((B, T, N + 1, 1)))
    loss.set_keys(**PER_AGENT_SIGNALS)
    with pytest.raises(ValueError, match="shape"):
        loss(wrong)
