"""The multi-agent training jobs on VMAS: the collector against VMAS itself, the GAE
bootstrap at truncation, the critics' centralisation, and short MAPPO / IPPO / QMIX /
VDN runs through the shared runner and the CLI (curve, checkpoint, summary)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

pytest.importorskip("vmas")
torch = pytest.importorskip("torch")

from arrayrl.cli import main  # noqa: E402
from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.train.checkpoint import load_policy  # noqa: E402
from arrayrl.train.marl import MultiAgentCollector, VmasVectorEnv  # noqa: E402

#: a tiny run: 4 envs x 10 steps per iteration, 2 iterations, 16-wide networks
TINY = {
    "n_agents": 2,
    "max_steps": 10,
    "frames": 80,
    "num_envs": 4,
    "rollout_steps": 10,
    "depth": 1,
    "num_cells": 16,
    "progress": False,
    "return_window": 4,
}


def _rows(path):
    with open(path) as file:
        return list(csv.DictReader(file))


# -- the environment and the collector ----------------------------------------------------
def test_collector_matches_vmas_stepped_directly():
    """The batch holds what VMAS returns for the same actions: observations, per-agent
    rewards, truncation at max_steps (not termination) and the reset after it."""
    import vmas

    n_envs, n_agents, horizon, steps = 3, 2, 4, 10
    env = VmasVectorEnv("navigation", n_envs, n_agents=n_agents, max_steps=horizon, seed=3)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, n_envs, n_agents, 2)).astype(np.float32)
    step = iter(range(steps))

    def act(batch: ArrayDict) -> None:
        batch.set(("agents", "action"), torch.from_numpy(actions[next(step)]))

    collector = MultiAgentCollector(env, act, window=100)
    batch = collector.collect(steps)
    assert batch.batch_size == (n_envs, steps)
    assert collector.frames == n_envs * steps

    direct = vmas.make_env(
        "navigation",
        num_envs=n_envs,
        seed=3,
        max_steps=horizon,
        n_agents=n_agents,
        terminated_truncated=True,
        clamp_actions=True,
    )
    obs = torch.stack(direct.reset(), dim=1)
    returns, finished = np.zeros(n_envs), []
    for t in range(steps):
        assert torch.equal(batch.get(("agents", "observation"))[:, t], obs)
        out = direct.step(list(torch.from_numpy(actions[t]).unbind(1)))
        next_obs, reward = torch.stack(out[0], dim=1), torch.stack(out[1], dim=1)
        terminated, truncated = out[2], out[3]
        assert torch.equal(batch.get(("next", "agents", "observation"))[:, t], next_obs)
        assert torch.equal(batch.get(("next", "agents", "reward"))[:, t], reward[..., None])
        assert torch.equal(batch.get(("next", "terminated"))[:, t, 0], terminated)
        assert torch.equal(batch.get(("next", "truncated"))[:, t, 0], truncated)
        assert bool(truncated.all()) == ((t + 1) % horizon == 0)
        returns += reward.mean(dim=1).double().numpy()
        obs = next_obs
        if bool(truncated.all()):
            finished += list(returns)
            returns[:] = 0
            obs = torch.stack(direct.reset(), dim=1)
    assert not batch.get(("next", "terminated")).any()  # the horizon is a truncation
    assert batch.get(("next", "done")).shape == (n_envs, steps, 1)
    assert collector.episodes.episodes == len(finished) == n_envs * (steps // horizon)
    assert collector.mean_return == pytest.approx(float(np.mean(finished)), rel=1e-6)


def test_reset_done_resets_only_the_finished_envs():
    env = VmasVectorEnv("navigation", 3, n_agents=2, max_steps=50, seed=1)
    env.reset()
    obs, *_ = env.step(torch.full((3, 2, 2), 0.5))
    after = env.reset_done(np.array([False, True, False]), obs)
    assert torch.equal(after[[0, 2]], obs[[0, 2]])
    assert not torch.equal(after[1], obs[1])
    assert env._env.steps.tolist() == [1, 0, 1]


def test_spaces_of_continuous_and_discrete_actions():
    env = VmasVectorEnv("navigation", 2, n_agents=3, max_steps=5)
    assert env.single_observation_space.shape == (3, 18)
    assert env.single_action_space.shape == (3, 2) and env.num_actions is None
    discrete = VmasVectorEnv("navigation", 2, n_agents=3, max_steps=5, continuous_actions=False)
    assert discrete.num_actions == 9
    assert discrete.single_action_space.shape == (3,)
    assert discrete.single_action_space.dtype == np.int64
    discrete.reset()
    obs, reward, _, truncated = discrete.step(torch.zeros((2, 3), dtype=torch.int64))
    assert obs.shape == (2, 3, 18) and reward.shape == (2, 3) and truncated.shape == (2,)


# -- MAPPO / IPPO ----------------------------------------------------------------------------
def _mappo_parts(algorithm: str):
    from arrayrl.train.mappo import MAPPOTrainer, make_mappo_config

    config = make_mappo_config(
        "navigation", algorithm=algorithm, **TINY, minibatch_size=20, epochs=1
    )
    return config, MAPPOTrainer(config, config.make_env())


@pytest.mark.parametrize("algorithm", ["mappo", "ippo"])
def test_critic_is_centralised_for_mappo_only(algorithm):
    """MAPPO's value of agent 0 depends on agent 1's observation; IPPO's does not."""
    _, trainer = _mappo_parts(algorithm)
    critic = trainer.loss.critic_network
    obs = torch.randn(5, 2, 18)
    other = obs.clone()
    other[:, 1] += 1.0
    values = [
        critic(ArrayDict({"agents": {"observation": o}}, [5])).get(("agents", "state_value"))
        for o in (obs, other)
    ]
    assert values[0].shape == (5, 2, 1)
    changed = not torch.allclose(values[0][:, 0], values[1][:, 0])
    assert changed == (algorithm == "mappo")
    assert type(trainer.loss).__name__ == {"mappo": "MAPPOLoss", "ippo": "IPPOLoss"}[algorithm]


def test_gae_bootstraps_a_truncated_episode_from_its_last_observation():
    """At the max_steps horizon the value target is r + γ V(s'), s' the true last
    observation (truncation, not termination), per agent."""
    from arrayrl.train.ppo import _advantages

    config, trainer = _mappo_parts("mappo")
    batch = _advantages(trainer.loss, trainer.collector.collect(10), trainer.backend)
    critic = trainer.loss.critic_network
    last_obs = batch.get(("next", "agents", "observation"))[:, -1]
    last = ArrayDict({"agents": {"observation": last_obs}}, [4])
    with torch.no_grad():
        v_next = critic(last).get(("agents", "state_value"))
    reward = batch.get(("next", "agents", "reward"))[:, -1]
    assert bool(batch.get(("next", "truncated"))[:, -1].all())
    expected = reward + config.gamma * v_next
    torch.testing.assert_close(batch.get("value_target")[:, -1], expected, rtol=1e-5, atol=1e-6)


def test_train_mappo_writes_curve_and_a_loadable_policy(tmp_path):
    from arrayrl.train.mappo import make_mappo_config, train_mappo

    config = make_mappo_config("navigation", **TINY, minibatch_size=20, epochs=2, out=str(tmp_path))
    result = train_mappo(config)
    rows = _rows(tmp_path / "learning_curve.csv")
    assert [int(float(r["frames"])) for r in rows] == [40, 80]
    for name in ("loss_objective", "loss_critic", "loss_entropy", "explained_variance"):
        assert all(math.isfinite(float(r[name])) for r in rows), name
    assert int(float(rows[-1]["episodes"])) == 8  # 4 envs x 2 episodes of 10 steps
    assert math.isfinite(result.final_mean_return)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert "mappo navigation seed 0" in result.summary()

    policy = load_policy(tmp_path, seed=1)
    assert policy.algorithm == "mappo"
    action = policy(np.zeros((2, 18), np.float32))
    assert action.shape == (2, 2) and action.dtype == np.float32
    assert np.all(np.abs(action) <= 1.0)
    greedy = load_policy(tmp_path, deterministic=True)  # the trained weights, on NumPy
    observation = np.random.default_rng(0).normal(size=(3, 2, 18)).astype(np.float32)
    trained = result_actor_mean(tmp_path, observation)
    np.testing.assert_allclose(greedy(observation), trained, rtol=1e-5, atol=1e-6)


def result_actor_mean(out, observation):
    """The deterministic action of the policy saved in ``out``, recomputed with torch
    from the archive's weights through a freshly built training actor."""
    from arrayrl.train.checkpoint import read_policy_metadata
    from arrayrl.train.mappo import build_mappo_actor, make_mappo_config

    metadata = read_policy_metadata(out)
    config = make_mappo_config(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in metadata["config"].items()}
    )
    env = VmasVectorEnv("navigation", 1, n_agents=2, max_steps=10)
    actor = build_mappo_actor(env.single_observation_space, env.single_action_space, config)
    with np.load(out / "policy.npz") as archive:
        actor.load_state_dict(
            {k: torch.from_numpy(archive[k]) for k in archive.files if k != "__metadata__"}
        )
    batch = ArrayDict({"agents": {"observation": torch.from_numpy(observation)}}, [3])
    with torch.no_grad():
        actor(batch, interaction_type="deterministic")
    return batch.get(("agents", "action")).numpy()


def test_value_norm_is_updated_by_training(tmp_path):
    from arrayrl.modules.value_norm import PopArtValueNorm
    from arrayrl.train.mappo import MAPPOTrainer, make_mappo_config

    config = make_mappo_config(**TINY, minibatch_size=20, epochs=1, value_norm="popart")
    trainer = MAPPOTrainer(config, config.make_env())
    norm = trainer.loss.value_norm
    assert isinstance(norm, PopArtValueNorm)
    before = {k: np.array(v) for k, v in norm.state_dict().items()}
    terms = trainer.iteration(0)
    assert math.isfinite(terms["loss_critic"])
    after = {k: np.asarray(v) for k, v in norm.state_dict().items()}
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert any(k.startswith("value_norm.") for k in trainer.loss.state_dict())


# -- QMIX / VDN -----------------------------------------------------------------------------
@pytest.mark.parametrize("mixer", ["qmix", "vdn"])
def test_train_qmix_and_vdn(tmp_path, mixer):
    from arrayrl.train.qmix import make_qmix_config, train_qmix

    config = make_qmix_config(
        "navigation",
        **TINY,
        mixer=mixer,
        minibatch_size=16,
        epochs=1,
        buffer_size=100,
        out=str(tmp_path),
    )
    result = train_qmix(config)
    rows = _rows(tmp_path / "learning_curve.csv")
    assert len(rows) == 2
    assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) >= 0 for r in rows)
    epsilons = [float(r["epsilon"]) for r in rows]
    assert epsilons[0] == pytest.approx(0.3) and epsilons[1] < epsilons[0]
    assert result.summary().startswith(f"{mixer} navigation seed 0")
    policy = load_policy(tmp_path)
    assert policy.algorithm == mixer
    action = policy(np.zeros((2, 18), np.float32))
    assert action.shape == (2,) and action.dtype == np.int64
    assert np.all((0 <= action) & (action < 9))


def test_qmix_loss_uses_the_chosen_mixer():
    from arrayrl.modules.multiagent import QMixer, VDNMixer
    from arrayrl.train.qmix import build_qmix_loss, make_qmix_config

    env = VmasVectorEnv("navigation", 1, n_agents=2, max_steps=5, continuous_actions=False)
    spaces = env.single_observation_space, env.single_action_space
    for mixer, cls in (("qmix", QMixer), ("vdn", VDNMixer)):
        config = make_qmix_config(**{**TINY, "mixer": mixer})
        loss = build_qmix_loss(*spaces, config)
        assert isinstance(loss.mixer_network.module, cls)


# -- settings and the command line ------------------------------------------------------------
def test_bad_settings_are_named():
    from arrayrl.train.mappo import make_mappo_config
    from arrayrl.train.qmix import make_qmix_config

    with pytest.raises(ValueError, match="minibatch_size=41 is more than an iteration's"):
        make_mappo_config(**TINY, minibatch_size=41).validate()
    with pytest.raises(ValueError, match="mixer must be 'qmix' or 'vdn'"):
        make_qmix_config(mixer="sum").validate()
    with pytest.raises(ValueError, match="value_norm must be one of"):
        make_mappo_config(value_norm="batch").validate()
    with pytest.raises(ValueError, match="backend 'numpy' cannot train"):
        make_mappo_config(backend="numpy").validate()
    with pytest.raises(TypeError, match="unknown MAPPO settings"):
        make_mappo_config(batch=3)


def test_cli_train_ippo(tmp_path, capsys):
    """One iteration of 40 envs x 10 steps: one minibatch of 400, the default networks."""
    out = tmp_path / "run"
    args = [
        "train",
        "ippo",
        "--frames",
        "400",
        "--num-envs",
        "40",
        "--max-steps",
        "10",
        "--n-agents",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ippo navigation seed 0: final mean return" in printed
    assert "400 frames" in printed
    assert (out / "policy.npz").exists() and len(_rows(out / "learning_curve.csv")) == 1


def test_cli_refuses_an_unknown_scenario(capsys):
    assert main(["train", "mappo", "--env", "no_such_scenario", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "arrayrl train mappo: error: cannot make VMAS scenario 'no_such_scenario'" in err
