"""``arrayrl train dqn`` (online, discrete actions) and ``arrayrl train iql`` / ``cql``
(offline, from a Minari dataset made here): short learning runs, the CLI, the errors.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from arrayrl import cli

needs_train = pytest.mark.skipif(
    bool(cli.missing_train_modules()), reason="needs the [train] extra"
)
needs_offline = pytest.mark.skipif(
    bool(cli.missing_train_modules() or cli.missing_collect_modules()),
    reason="needs the [train] and [offline] extras",
)


@pytest.fixture
def no_png(monkeypatch):
    """Skip drawing the learning curve's PNG (seconds of matplotlib, not under test)."""
    from arrayrl.train.curve import LearningCurve

    monkeypatch.setattr(LearningCurve, "plot_png", lambda self, *args, **kwargs: None)


def _one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# -- DQN ---------------------------------------------------------------------------------------
@needs_train
def test_dqn_return_improves(tmp_path, no_png):
    """CartPole-v1, 8k frames: the return of the random warm-up (~20) more than doubles."""
    from arrayrl.train import make_dqn_config, train_dqn

    config = make_dqn_config(
        frames=8_000, learning_starts=500, log_every=1_000, num_cells=(64, 64),
        exploration_fraction=0.3, seed=0, out=str(tmp_path), progress=False,
    )  # fmt: skip
    result = train_dqn(config)
    returns = [r for r in result.curve.column("mean_return") if not math.isnan(r)]
    assert returns[-1] > 2 * returns[0], returns
    epsilon = result.curve.column("epsilon")
    assert epsilon[-1] == pytest.approx(0.04) and all(np.diff(epsilon[1:]) <= 0)
    assert result.policy_path.is_file()


@needs_train
def test_dqn_checkpoint_acts_greedily_or_epsilon_greedily(tmp_path, no_png):
    from arrayrl.train import make_dqn_config, train_dqn
    from arrayrl.train.checkpoint import load_policy

    config = make_dqn_config(frames=300, learning_starts=100, log_every=100, num_cells=(8,),
                             batch_size=8, out=str(tmp_path), progress=False)  # fmt: skip
    result = train_dqn(config)
    observations = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    greedy = load_policy(result.policy_path, deterministic=True)(observations)
    assert greedy.dtype == np.int64 and set(greedy.tolist()) <= {0, 1}
    values = result_values(result.policy_path, observations)
    np.testing.assert_array_equal(greedy, np.argmax(values, axis=-1))
    exploring = load_policy(result.policy_path, seed=1)(observations)
    changed = np.mean(exploring != greedy)  # ε = 0.04: half of the random picks change it
    assert 0.0 < changed < 0.1, changed


def result_values(path, observations):
    """The saved network's action values, computed here with NumPy from its weights."""
    weights = dict(np.load(path, allow_pickle=False))
    layers = sorted({k.rsplit(".", 1)[0] for k in weights if k.endswith(".weight")})
    x = observations.astype(np.float64)
    for k, layer in enumerate(layers):
        x = x @ weights[f"{layer}.weight"].T + weights[f"{layer}.bias"]
        if k < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


@needs_train
def test_dqn_collector_stores_integer_actions(tmp_path, no_png):
    from arrayrl.train import make_dqn_config
    from arrayrl.train.dqn import DQNTrainer
    from arrayrl.train.rollout import make_vector_env

    config = make_dqn_config(frames=50, learning_starts=10, num_cells=(8,), batch_size=4,
                             out=str(tmp_path), progress=False)  # fmt: skip
    env = make_vector_env(config.env_id, 2)
    try:
        trainer = DQNTrainer(config, env)
        trainer.iteration(0)
    finally:
        env.close()
    batch = trainer.buffer.sample(16, np.random.default_rng(0))
    action = batch.backend.to_numpy(batch.get("action"))
    assert action.dtype == np.int64 and action.shape == (16,)
    assert set(action.tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("frames", "expected"), [(0, 1.0), (800, 0.52), (1_600, 0.04), (5_000, 0.04)]
)
def test_epsilon_schedule(frames, expected):
    from arrayrl.train import make_dqn_config

    config = make_dqn_config(frames=10_000, exploration_fraction=0.16)
    assert config.epsilon(frames) == pytest.approx(expected)


def test_dqn_help_has_examples(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "dqn", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and re.search(r"^  arrayrl train dqn", text, re.M)
    assert "CartPole-v1" in text and "discrete actions" in text and "``" not in text


@needs_train
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--env", "Pendulum-v1"], "needs discrete actions"),
        (["--backend", "numpy"], "no autograd"),
        (["--frames", "0"], "frames must be >= 1"),
        (["--utd-ratio", "-1"], "utd_ratio must be > 0"),
    ],
)
def test_dqn_setting_errors_are_one_line(options, expected, tmp_path, capsys):
    assert cli.main(["train", "dqn", *options, "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("arrayrl train dqn: error:") and expected in line


def test_dqn_config_errors():
    from arrayrl.train import make_dqn_config

    with pytest.raises(ValueError, match="epsilon_end must be in"):
        make_dqn_config(epsilon_end=1.5).validate()
    with pytest.raises(ValueError, match="target_update_interval must be >= 1"):
        make_dqn_config(target_update_interval=0).validate()
    with pytest.raises(TypeError, match="unknown DQN settings"):
        make_dqn_config(epsilon=0.1)


# -- offline: IQL and CQL ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A Pendulum-v1 Minari dataset (3 episodes of 50 steps) recorded by ``arrayrl
    collect`` with a randomly initialised SAC actor; returns its Minari root."""
    if cli.missing_train_modules() or cli.missing_collect_modules():
        pytest.skip("needs the [train] and [offline] extras")
    import gymnasium

    from arrayrl.train.checkpoint import POLICY_FILE, policy_recipe, save_policy

    root = tmp_path_factory.mktemp("offline")
    recipe = policy_recipe("sac")
    config = recipe.make_config("Pendulum-v1", num_cells=(16, 16), seed=3, backend="torch")
    env = gymnasium.make("Pendulum-v1")
    spaces = env.observation_space, env.action_space
    env.close()
    checkpoint = save_policy(root / POLICY_FILE, recipe.build_actor(*spaces, config), config,
                             *spaces)  # fmt: skip
    command = ["collect", "--policy", str(checkpoint), "--dataset-id", "pendulum/tiny-v0"]
    command += ["--episodes", "3", "--steps", "50", "--out", str(root / "ds"), "--no-progress"]
    assert cli.main(command) == 0
    return root / "ds"


@needs_offline
@pytest.mark.parametrize(
    ("algorithm", "terms"),
    [
        ("iql", ["loss_actor", "loss_qvalue", "loss_value"]),
        ("cql", ["loss_actor", "loss_qvalue", "loss_cql", "loss_alpha"]),
    ],
)
def test_offline_run_writes_curve_and_policy(algorithm, terms, tiny_dataset, tmp_path, no_png):
    from arrayrl.train import make_offline_config, train_offline
    from arrayrl.train.checkpoint import load_policy, read_policy_metadata

    config = make_offline_config(
        algorithm, dataset="pendulum/tiny-v0", root=str(tiny_dataset), steps=30, eval_every=20,
        eval_episodes=1, num_cells=(16, 16), batch_size=32, out=str(tmp_path), progress=False,
    )  # fmt: skip
    result = train_offline(config)
    curve = result.curve
    assert config.env_id is None and result.config.env_id == "Pendulum-v1"  # from the dataset
    assert curve.column("frames") == [20.0, 30.0]  # gradient steps: the last iteration is short
    assert curve.column("episodes") == [1.0, 2.0]
    for name in terms:
        assert all(math.isfinite(v) for v in curve.column(name)), name
    assert all(-2000 < r < 0 for r in curve.column("mean_return"))  # 200-step Pendulum
    assert "30 gradient steps in" in result.summary()
    assert read_policy_metadata(result.policy_path)["algorithm"] == algorithm
    action = load_policy(result.policy_path, deterministic=True)(np.zeros(3, np.float32))
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


@needs_offline
def test_offline_batches_are_float32_dataset_transitions(tiny_dataset):
    from arrayrl.data.minari import load_minari
    from arrayrl.train import make_offline_config
    from arrayrl.train.offline import load_transitions

    config = make_offline_config("iql", dataset="pendulum/tiny-v0", root=str(tiny_dataset))
    data = load_transitions(config)
    raw = load_minari("pendulum/tiny-v0", root=tiny_dataset)
    reward = data.backend.to_numpy(data.get(("next", "reward")))
    assert data.batch_size == (150,) and reward.dtype == np.float32
    np.testing.assert_allclose(reward, raw.get(("next", "reward")), rtol=1e-6)
    assert data.backend.name == "torch"


@needs_offline
def test_train_iql_command_line(tiny_dataset, tmp_path, capsys, no_png):
    command = ["train", "iql", "--dataset", str(tiny_dataset / "pendulum" / "tiny-v0")]
    command += ["--steps", "4", "--eval-every", "2", "--eval-episodes", "1", "--batch-size", "8"]
    assert cli.main([*command, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("iql Pendulum-v1 seed 0: final mean return")
    assert "4 gradient steps in" in out and (tmp_path / "policy.npz").is_file()


@needs_offline
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--dataset", "pendulum/none-v0"], "no Minari dataset 'pendulum/none-v0'"),
        (["--dataset", "pendulum/tiny-v0", "--steps", "0"], "steps must be >= 1"),
        (["--dataset", "pendulum/tiny-v0", "--backend", "numpy"], "cannot train"),
        (["--dataset", "pendulum/tiny-v0", "--env", "NoSuchEnv-v0"], "cannot make Gymnasium"),
    ],
)
def test_offline_setting_errors_are_one_line(options, expected, tiny_dataset, capsys):
    assert cli.main(["train", "cql", *options, "--root", str(tiny_dataset)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("arrayrl train cql: error:") and expected in line


def test_offline_config_errors():
    from arrayrl.train import make_offline_config

    with pytest.raises(ValueError, match="dataset is required"):
        make_offline_config("iql").validate()
    with pytest.raises(ValueError, match="unknown offline algorithm 'bcq'"):
        make_offline_config("bcq")
    with pytest.raises(TypeError, match="unknown IQL settings"):
        make_offline_config("iql", min_q_weight=1.0)


@needs_offline
def test_cql_clones_the_behaviour_for_its_first_bc_steps(tiny_dataset, monkeypatch):
    """The actor term of each step: ``loss_actor_bc`` for ``bc_steps`` steps, then
    ``loss_actor`` (the other terms throughout)."""
    from arrayrl.train import make_offline_config
    from arrayrl.train.offline import OfflineTrainer
    from arrayrl.train.rollout import make_vector_env

    config = make_offline_config(
        "cql", dataset="pendulum/tiny-v0", root=str(tiny_dataset), env_id="Pendulum-v1",
        num_cells=(8,), batch_size=8, num_random=2, bc_steps=2,
    )  # fmt: skip
    env = make_vector_env("Pendulum-v1", 1)
    try:
        trainer = OfflineTrainer(config, env)
        summed = []
        real_loss = trainer.loss

        def loss(batch):
            out = real_loss(batch)
            summed.append(trainer._actor_term())
            return out

        monkeypatch.setattr(trainer, "loss", loss)
        for _ in range(4):
            trainer.update()
    finally:
        env.close()
    assert summed == ["loss_actor_bc", "loss_actor_bc", "loss_actor", "loss_actor"]
