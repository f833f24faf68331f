"""Offline data: policy checkpoints, ``arrayrl collect`` and Minari datasets.

- checkpoints: a saved actor, rebuilt on NumPy and on torch, acts as the original (the
  deterministic action, and the same draws with the same generator); training runs write
  ``policy.npz`` at the end and on Ctrl-C;
- ``arrayrl collect`` records Pendulum-v1 episodes with a randomly initialised SAC actor
  (no training) into a Minari root under ``tmp_path``; Minari's own reader reads them, and
  :func:`~arrayrl.data.minari.load_minari` gives TorchRL's layout (checked against
  TorchRL's ``MinariExperienceReplay``) with the values of the recorded episodes;
- a dataset written by Minari's own ``DataCollector`` loads too; errors are clear.

No download: every dataset is made here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("torch")

import gymnasium

from arrayrl import cli
from arrayrl.data import ArrayDict
from arrayrl.random import make_generator
from arrayrl.train.checkpoint import (
    POLICY_FILE,
    load_policy,
    policy_recipe,
    read_policy_metadata,
    save_policy,
)

needs_minari = pytest.mark.skipif(
    bool(cli.missing_collect_modules()), reason="needs the [offline] extra (minari, h5py)"
)

#: TorchRL's MinariExperienceReplay layout: key -> (shape after N, dtype) for Pendulum-v1.
PENDULUM_LAYOUT = {
    ("episode",): ((), np.int64),
    ("observation",): ((3,), np.float32),
    ("action",): ((1,), np.float32),
    ("next", "observation"): ((3,), np.float32),
    ("next", "reward"): ((1,), np.float64),
    ("next", "terminated"): ((1,), np.bool_),
    ("next", "truncated"): ((1,), np.bool_),
    ("next", "done"): ((1,), np.bool_),
}


def _fresh_checkpoint(tmp_path, algorithm: str, env_id: str = "Pendulum-v1", **fields):
    """A checkpoint of a randomly initialised actor (trained on torch, as runs are);
    returns its path, the actor and the env's spaces."""
    recipe = policy_recipe(algorithm)
    config = recipe.make_config(env_id, num_cells=(16, 16), seed=3, backend="torch", **fields)
    env = gymnasium.make(env_id)
    spaces = env.observation_space, env.action_space
    env.close()
    actor = recipe.build_actor(*spaces, config)
    path = save_policy(tmp_path / POLICY_FILE, actor, config, *spaces, frames=123)
    return path, actor, spaces


def _act(actor, obs: np.ndarray, **kwargs) -> np.ndarray:
    """The original actor's action on its own backend (torch), as NumPy."""
    backend = actor.backend
    batch = ArrayDict({"observation": backend.from_numpy(obs)}, [len(obs)])
    with backend.no_grad():
        actor(batch, **kwargs)
    return backend.to_numpy(batch.get("action"))


def _observations(space, n: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    low = np.maximum(space.low, -5.0)
    high = np.minimum(space.high, 5.0)
    return rng.uniform(low, high, (n, *space.shape)).astype(np.float32)


# -- checkpoints ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "env_id"),
    [
        ("sac", "Pendulum-v1"),
        ("td3", "Pendulum-v1"),
        ("ppo", "Pendulum-v1"),
        ("ppo", "CartPole-v1"),
    ],
)
def test_round_trip_same_actions_on_numpy_and_torch(algorithm, env_id, tmp_path):
    path, actor, (obs_space, act_space) = _fresh_checkpoint(tmp_path, algorithm, env_id)
    obs = _observations(obs_space)
    expected = _act(actor, obs, interaction_type="deterministic")
    for backend in ("numpy", "torch"):
        policy = load_policy(path, backend=backend, deterministic=True)
        assert policy.backend.name == backend and policy.algorithm == algorithm
        for name, weight in actor.state_dict().items():  # the very same weights
            saved = policy.actor.state_dict()[name]
            np.testing.assert_array_equal(policy.backend.to_numpy(saved), weight.detach().numpy())
        actions = policy(obs)
        assert actions.shape == expected.shape and actions.dtype == act_space.dtype
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
        one = policy(obs[0])  # one observation -> one action
        assert one.shape == act_space.shape
        np.testing.assert_allclose(one, expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["sac", "ppo"])
def test_exploring_policy_draws_as_the_actor(algorithm, tmp_path):
    """By default SAC and PPO act with a draw: the same draw as the original actor given
    the same generator, and a seed reproduces it."""
    path, _, (obs_space, _) = _fresh_checkpoint(tmp_path, algorithm)
    obs = _observations(obs_space)
    policy = load_policy(path, seed=5)
    assert "draw" in policy.exploration and not policy.deterministic
    drawn = policy(obs)
    numpy_actor = load_policy(path, deterministic=True).actor  # the weights on NumPy
    expected = _act(numpy_actor, obs, rng=make_generator(5, "numpy"), interaction_type="random")
    np.testing.assert_allclose(drawn, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(load_policy(path, seed=5)(obs), drawn)
    assert not np.allclose(drawn, load_policy(path, deterministic=True)(obs))


def test_td3_explores_with_its_gaussian_noise(tmp_path):
    path, _, (obs_space, act_space) = _fresh_checkpoint(tmp_path, "td3")
    obs = np.repeat(_observations(obs_space, 1), 4000, axis=0)
    greedy = load_policy(path, deterministic=True)(obs)
    explored = load_policy(path, seed=1)(obs)
    assert np.all(explored >= act_space.low) and np.all(explored <= act_space.high)
    inside = np.abs(greedy) < 1.0  # far from the bounds of ±2: no clipping
    noise = (explored - greedy)[inside]
    assert abs(noise.std() - 0.1 * 2.0) < 0.01 and abs(noise.mean()) < 0.01  # σ·h = 0.2


def test_checkpoint_files(tmp_path):
    path, actor, _ = _fresh_checkpoint(tmp_path, "sac")
    with np.load(path, allow_pickle=False) as archive:  # no pickle needed
        names = set(archive.files)
    assert names == {*actor.state_dict(), "__metadata__"}
    metadata = read_policy_metadata(tmp_path)  # a run's folder works too
    assert json.loads((tmp_path / "policy.json").read_text()) == metadata
    assert metadata["algorithm"] == "sac" and metadata["env_id"] == "Pendulum-v1"
    assert metadata["frames"] == 123 and metadata["mean_return"] is None
    assert metadata["config"]["num_cells"] == [16, 16]
    assert metadata["action_space"] == {
        "type": "Box", "shape": [1], "dtype": "float32", "low": [-2.0], "high": [2.0],
    }  # fmt: skip


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no policy checkpoint at"):
        load_policy(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not an arrayrl policy checkpoint"):
        load_policy(tmp_path / "junk.npz")
    np.savez(tmp_path / "plain.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="no '__metadata__'"):
        load_policy(tmp_path / "plain.npz")
    # a checkpoint of a newer format
    path, actor, spaces = _fresh_checkpoint(tmp_path, "sac")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = {**json.loads(arrays["__metadata__"].tobytes()), "format_version": 99}
    arrays["__metadata__"] = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    np.savez(tmp_path / "newer.npz", **arrays)
    with pytest.raises(ValueError, match=r"format version 99.*upgrade arrayrl"):
        load_policy(tmp_path / "newer.npz")
    # a checkpoint of an algorithm nobody registered: saved, but not loadable
    from arrayrl.train.sac import SACConfig

    class OtherConfig(SACConfig):
        algorithm = "nosuchalgo"

    path = save_policy(tmp_path / "other.npz", actor, OtherConfig(), *spaces)
    assert read_policy_metadata(path)["exploration"] is None
    with pytest.raises(ValueError, match=r"'nosuchalgo'.*\bppo\b.*\bsac\b.*\btd3\b"):
        load_policy(path)


# -- the runner writes policy.npz ---------------------------------------------------------------
TINY_SAC = {
    "frames": 64, "learning_starts": 32, "log_every": 32, "batch_size": 8,
    "num_cells": (8, 8), "progress": False,
}  # fmt: skip


@pytest.fixture
def no_png(monkeypatch):
    """Skip drawing the learning curve's PNG (seconds of matplotlib, not under test)."""
    from arrayrl.train.curve import LearningCurve

    monkeypatch.setattr(LearningCurve, "plot_png", lambda self, *args, **kwargs: None)


def test_training_runs_write_the_policy(tmp_path, no_png, monkeypatch):
    from arrayrl.train import make_config, make_sac_config, runner, train_ppo, train_sac

    saved, real_save = [], runner.save_policy

    def save(*args, **kwargs):
        saved.append(kwargs["frames"])
        return real_save(*args, **kwargs)

    monkeypatch.setattr(runner, "save_policy", save)
    config = make_sac_config(out=str(tmp_path / "sac"), save_every_s=0.0, **TINY_SAC)
    result = train_sac(config)
    assert saved == [32, 64, 64]  # with the curve after each iteration, and at the end
    assert result.policy_path == tmp_path / "sac" / POLICY_FILE
    assert str(result.policy_path) in result.summary()
    metadata = read_policy_metadata(result.policy_path)
    assert metadata["frames"] == 64 and metadata["interrupted"] is False
    assert metadata["mean_return"] is None  # no episode of Pendulum ended in 64 frames
    assert load_policy(result.policy_path)(np.zeros(3, np.float32)).shape == (1,)
    ppo = make_config(
        "CartPole-v1", frames=32, num_envs=2, rollout_steps=16, minibatches=2, epochs=1,
        num_cells=(8,), out=str(tmp_path / "ppo"), progress=False,
    )  # fmt: skip
    result = train_ppo(ppo)
    policy = load_policy(result.policy_path, deterministic=True)
    actions = policy(np.zeros((5, 4), np.float32))
    assert actions.dtype == np.int64 and set(actions.tolist()) <= {0, 1}


def test_ctrl_c_saves_the_policy_so_far(tmp_path, monkeypatch, no_png):
    """Ctrl-C in the 2nd iteration: the weights of that moment are saved."""
    from arrayrl.train import TrainingInterrupted, make_sac_config, train_sac
    from arrayrl.train.sac import SACTrainer

    real, seen = SACTrainer.update, {}

    def update(self, batch):
        seen["trainer"] = self
        if self.updates == 10:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(SACTrainer, "update", update)
    with pytest.raises(TrainingInterrupted) as stop:
        train_sac(make_sac_config(out=str(tmp_path), **{**TINY_SAC, "frames": 96}))
    path = stop.value.result.policy_path
    assert path == tmp_path / POLICY_FILE and str(path) in stop.value.result.summary()
    metadata = read_policy_metadata(path)
    # one update at frame 32 (the end of the warm-up), then one per frame: the 11th
    # (updates == 10) comes at frame 42
    assert metadata["interrupted"] is True and metadata["frames"] == 42
    trained = seen["trainer"].policy.state_dict()
    with np.load(path, allow_pickle=False) as archive:
        for name, weight in trained.items():
            np.testing.assert_array_equal(archive[name], weight.detach().numpy())


# -- arrayrl collect and the Minari reader ------------------------------------------------------
def _layout(data: ArrayDict) -> dict:
    return {
        (k if isinstance(k, tuple) else (k,)): (tuple(v.shape[1:]), np.dtype(v.dtype))
        for k, v in data.items(include_nested=True, leaves_only=True)
    }


@needs_minari
def test_collect_writes_a_minari_dataset_with_torchrl_layout(tmp_path, monkeypatch, capsys):
    import minari

    from arrayrl.data.minari import load_minari

    checkpoint, _, _ = _fresh_checkpoint(tmp_path, "sac")
    root = tmp_path / "datasets"
    command = ["collect", "--policy", str(checkpoint), "--dataset-id", "pendulum/random-sac-v0"]
    command += ["--episodes", "3", "--steps", "20", "--seed", "10", "--out", str(root)]
    assert cli.main([*command, "--no-progress"]) == 0
    out = capsys.readouterr().out
    # Minari's own reader agrees with what was recorded
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    dataset = minari.load_dataset("pendulum/random-sac-v0")
    episodes = list(dataset.iterate_episodes())
    assert dataset.total_episodes == 3 and dataset.total_steps == 60
    assert dataset.spec.env_spec.id == "Pendulum-v1"
    assert dataset.spec.env_spec.max_episode_steps == 20
    returns = [float(np.sum(e.rewards)) for e in episodes]
    assert f"mean episode return {np.mean(returns):.1f}" in out
    assert str(root / "pendulum" / "random-sac-v0") in out
    env = gymnasium.make("Pendulum-v1")
    for k, episode in enumerate(episodes):
        assert episode.observations.shape == (21, 3) and episode.actions.shape == (20, 1)
        np.testing.assert_array_equal(episode.observations[0], env.reset(seed=10 + k)[0])
        assert not episode.terminations.any() and episode.truncations.tolist() == [False] * 19 + [
            True
        ]
        assert np.all(np.abs(episode.actions) <= 2.0)
    # the loader: TorchRL's layout, the recorded values
    data = load_minari("pendulum/random-sac-v0", root=root)
    assert data.batch_size == (60,) and _layout(data) == {
        k: (s, np.dtype(d)) for k, (s, d) in PENDULUM_LAYOUT.items()
    }
    np.testing.assert_array_equal(data["episode"], np.repeat([0, 1, 2], 20))
    for k, episode in enumerate(episodes):
        rows = data[k * 20 : (k + 1) * 20]
        np.testing.assert_array_equal(rows["observation"], episode.observations[:-1])
        np.testing.assert_array_equal(rows["next", "observation"], episode.observations[1:])
        np.testing.assert_array_equal(rows["action"], episode.actions)
        np.testing.assert_array_equal(rows["next", "reward"][:, 0], episode.rewards)
        np.testing.assert_array_equal(rows["next", "truncated"][:, 0], episode.truncations)
    obs, next_obs = data["observation"], data["next", "observation"]
    done = data["next", "done"][:, 0]
    np.testing.assert_array_equal(
        done, data["next", "terminated"][:, 0] | data["next", "truncated"][:, 0]
    )
    np.testing.assert_array_equal(next_obs[:-1][~done[:-1]], obs[1:][~done[:-1]])
    assert done.sum() == 3
    # on torch, and minibatches
    from arrayrl.data.minari import sample_transitions

    on_torch = load_minari(str(root / "pendulum" / "random-sac-v0"), backend="torch")
    batch = sample_transitions(on_torch, 16, np.random.default_rng(0))
    index = np.random.default_rng(0).integers(0, 60, 16)
    assert batch.backend.name == "torch" and batch.batch_size == (16,)
    np.testing.assert_array_equal(batch["next", "reward"].numpy(), data["next", "reward"][index])


@needs_minari
def test_collected_actions_are_the_policy_s(tmp_path, capsys):
    """--deterministic records the policy's deterministic action of each observation."""
    from arrayrl.data.minari import load_minari

    checkpoint, _, _ = _fresh_checkpoint(tmp_path, "td3")
    root = tmp_path / "datasets"
    command = ["collect", "--policy", str(tmp_path), "--dataset-id", "td3-greedy-v0"]
    command += ["--episodes", "2", "--steps", "5", "--out", str(root), "--deterministic"]
    assert cli.main([*command, "--no-progress"]) == 0
    assert "(the deterministic action)" in capsys.readouterr().out
    data = load_minari("td3-greedy-v0", root=root)
    expected = load_policy(checkpoint, deterministic=True)(data["observation"])
    np.testing.assert_allclose(data["action"], expected, rtol=1e-6, atol=1e-6)


@needs_minari
def test_layout_is_torchrl_minari_experience_replay(tmp_path, monkeypatch):
    """TorchRL's own reader of the same dataset has the same keys, shapes and dtypes.
    (TorchRL 0.14.1 fills its storage with zeros, see the report, so values are checked
    against Minari's reader above, not against TorchRL.)"""
    from torchrl.data.datasets.minari_data import MinariExperienceReplay

    from arrayrl.data.minari import Episode, load_minari, write_minari

    rng = np.random.default_rng(0)
    episodes = [
        Episode(
            observations=rng.normal(size=(n + 1, 3)).astype(np.float32),
            actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
            rewards=rng.normal(size=n),
            terminations=np.zeros(n, bool),
            truncations=np.arange(n) == n - 1,
        )
        for n in (4, 6)
    ]
    root = tmp_path / "datasets"
    write_minari("layout-v0", episodes, "Pendulum-v1", root=root)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    torchrl_data = MinariExperienceReplay(
        "layout-v0", batch_size=2, root=tmp_path / "torchrl", download=False,
        load_from_local_minari=True,
    )  # fmt: skip
    storage = torchrl_data._storage._storage
    torchrl_layout = {
        (k if isinstance(k, tuple) else (k,)): (tuple(v.shape[1:]), str(v.dtype))
        for k, v in storage.items(include_nested=True, leaves_only=True)
    }
    ours = load_minari("layout-v0", root=root)
    assert ours.batch_size == tuple(storage.batch_size) == (10,)
    assert {k: (s, f"torch.{d}") for k, (s, d) in _layout(ours).items()} == torchrl_layout


class _TreeUtil(types.ModuleType):
    """``jax.tree_util.tree_map`` for what Minari's ``EpisodeBuffer.add_step_data`` maps:
    dicts by key, anything else a leaf. Minari's collector needs it (its ``create``
    extra, JAX); JAX is not a test dependency of arrayrl."""

    @staticmethod
    def tree_map(fn, tree, *rest):
        if isinstance(tree, dict):
            return {k: _TreeUtil.tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
        return fn(tree, *rest)


class _CostInfo(gymnasium.Wrapper):
    """Adds a numeric ``info["cost"]`` at reset (0) and at every step (``|a|``)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, {**info, "cost": np.float64(0.0)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "cost": np.abs(action).sum()}


@needs_minari
@pytest.mark.filterwarnings("ignore:`.*` is set to None:UserWarning")  # Minari's reminders
def test_a_minari_data_collector_dataset_loads(tmp_path, monkeypatch):
    import minari

    from arrayrl.data.minari import load_minari

    root = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    with monkeypatch.context() as jax_stand_in:
        try:
            import jax.tree_util  # noqa: F401
        except ImportError:
            shim = types.ModuleType("jax")
            shim.tree_util = _TreeUtil("jax.tree_util")
            jax_stand_in.setitem(sys.modules, "jax", shim)
            jax_stand_in.setitem(sys.modules, "jax.tree_util", shim.tree_util)
        env = minari.DataCollector(
            _CostInfo(gymnasium.make("Pendulum-v1", max_episode_steps=7)), record_infos=True
        )
        env.action_space.seed(0)
        for seed in (1, 2):
            env.reset(seed=seed)
            while not any(env.step(env.action_space.sample())[2:4]):
                pass
        env.create_dataset("collector/pendulum-v0", algorithm_name="random")
        env.close()
    episodes = list(minari.load_dataset("collector/pendulum-v0").iterate_episodes())
    data = load_minari("collector/pendulum-v0")  # the root from MINARI_DATASETS_PATH
    assert data.batch_size == (14,)
    expected = {**PENDULUM_LAYOUT, ("info", "cost"): ((), np.float64)}
    expected[("next", "info", "cost")] = ((), np.float64)
    assert _layout(data) == {k: (s, np.dtype(d)) for k, (s, d) in expected.items()}
    observations = np.concatenate([e.observations[:-1] for e in episodes])
    np.testing.assert_array_equal(data["observation"], observations)
    np.testing.assert_array_equal(
        data["next", "observation"], np.concatenate([e.observations[1:] for e in episodes])
    )
    np.testing.assert_array_equal(data["action"], np.concatenate([e.actions for e in episodes]))
    costs = np.concatenate([e.infos["cost"][1:] for e in episodes])
    np.testing.assert_array_equal(data["next", "info", "cost"], costs)
    np.testing.assert_allclose(costs, np.abs(data["action"][:, 0]))
    np.testing.assert_array_equal(data["info", "cost"][[0, 7]], [0.0, 0.0])  # the resets


# -- errors ---------------------------------------------------------------------------------
@needs_minari
def test_dataset_errors(tmp_path, monkeypatch):
    from arrayrl.data.minari import Episode, load_minari, write_minari

    root = tmp_path / "datasets"
    with pytest.raises(
        FileNotFoundError, match=r"no Minari dataset 'nosuch/data-v0' at .*download=True"
    ):
        load_minari("nosuch/data-v0", root=root)
    with pytest.raises(FileNotFoundError, match="no Minari dataset at"):
        load_minari(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="invalid Minari dataset id 'no-version'"):
        load_minari("no-version", root=root)
    episode = Episode(
        np.zeros((3, 3), np.float32), np.zeros((2, 1), np.float32), np.zeros(2),
        np.zeros(2, bool), np.array([False, True]),
    )  # fmt: skip
    write_minari("twice-v0", [episode], "Pendulum-v1", root=root)
    with pytest.raises(FileExistsError, match="exists at"):
        write_minari("twice-v0", [episode], "Pendulum-v1", root=root)
    write_minari("twice-v0", [episode, episode], "Pendulum-v1", root=root, overwrite=True)
    assert load_minari("twice-v0", root=root).batch_size == (4,)


@needs_minari
def test_download_fetches_into_the_root(tmp_path, monkeypatch):
    """``download=True`` hands the id to ``minari.download_dataset`` with the root as
    Minari's datasets path (a stand-in download here: no network in tests)."""
    import minari

    from arrayrl.data.minari import Episode, load_minari, write_minari

    episode = Episode(
        np.zeros((3, 3), np.float32), np.ones((2, 1), np.float32), np.ones(2),
        np.zeros(2, bool), np.array([False, True]),
    )  # fmt: skip
    calls = []

    def fake_download(dataset_id, force_download=False):
        calls.append(dataset_id)
        import os

        write_minari(dataset_id, [episode], "Pendulum-v1", root=os.environ["MINARI_DATASETS_PATH"])

    monkeypatch.setattr(minari, "download_dataset", fake_download)
    root = tmp_path / "remote-root"
    data = load_minari("remote/set-v1", root=root, download=True)
    assert calls == ["remote/set-v1"] and (root / "remote" / "set-v1" / "data").is_dir()
    np.testing.assert_array_equal(data["action"], np.ones((2, 1), np.float32))


@needs_minari
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--policy", "{tmp}/missing.npz"], "no policy checkpoint at"),
        (["--dataset-id", "no-version"], "invalid Minari dataset id 'no-version'"),
        (["--env", "CartPole-v1"], "CartPole-v1 has the observation_space"),
        (["--env", "NoSuchEnv-v0"], "cannot make Gymnasium env 'NoSuchEnv-v0'"),
        (["--episodes", "0"], "--episodes must be >= 1"),
    ],
)
def test_collect_errors_are_one_line(options, expected, tmp_path, capsys):
    _fresh_checkpoint(tmp_path, "sac")
    command = ["collect", "--policy", str(tmp_path), "--dataset-id", "ok-v0"]
    command += ["--out", str(tmp_path / "datasets"), "--no-progress"]
    assert cli.main([*command, *[o.format(tmp=tmp_path) for o in options]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arrayrl collect: error:")
    assert expected in lines[0]


def test_collect_help_has_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["collect", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "  arrayrl collect --policy" in text and "``" not in text


def test_importing_the_data_modules_imports_no_framework():
    code = (
        "import sys, arrayrl.data, arrayrl.data.minari, arrayrl.train.checkpoint\n"
        "print(sorted(m for m in ('torch', 'minari', 'gymnasium', 'h5py') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
