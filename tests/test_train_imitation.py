"""``arrayrl train bc`` and ``arrayrl train diffusion-bc``: imitation from a Minari dataset
made here by ``arrayrl collect``; short runs, the checkpoints ``arrayrl collect
--policy`` replays, BC recovering a known policy, the diffusion loss falling, errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from arrayrl import cli

pytestmark = pytest.mark.skipif(
    bool(cli.missing_train_modules() or cli.missing_collect_modules()),
    reason="needs the [train] and [offline] extras",
)

#: a known linear policy ``a = 2 tanh(W s + b)`` on Pendulum-v1 (obs: cos, sin, θ̇)
TRUE_WEIGHT = np.array([[-0.8, 0.5, -0.3]], np.float32)
TRUE_BIAS = np.array([0.2], np.float32)


@pytest.fixture
def no_png(monkeypatch):
    """Skip drawing the learning curve's PNG (seconds of matplotlib, not under test)."""
    from arrayrl.train.curve import LearningCurve

    monkeypatch.setattr(LearningCurve, "plot_png", lambda self, *args, **kwargs: None)


@pytest.fixture
def one_thread():
    """One torch thread, as the trainers run (``torch_threads=1``): small networks on
    two threads thrash when the other core is busy."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spaces():
    import gymnasium

    env = gymnasium.make("Pendulum-v1")
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def _collect(checkpoint, root, dataset_id: str, *options: str) -> None:
    command = ["collect", "--policy", str(checkpoint), "--dataset-id", dataset_id]
    command += ["--episodes", "3", "--steps", "50", "--out", str(root), "--no-progress"]
    assert cli.main([*command, *options]) == 0


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Pendulum-v1, 3 episodes of 50 steps recorded by ``arrayrl collect`` with a randomly
    initialised SAC actor; returns the Minari root (``pendulum/tiny-v0``)."""
    from arrayrl.train.checkpoint import POLICY_FILE, policy_recipe, save_policy

    root = tmp_path_factory.mktemp("imitation")
    recipe = policy_recipe("sac")
    config = recipe.make_config("Pendulum-v1", num_cells=(16, 16), seed=3, backend="torch")
    spaces = _spaces()
    checkpoint = save_policy(root / POLICY_FILE, recipe.build_actor(*spaces, config), config,
                             *spaces)  # fmt: skip
    _collect(checkpoint, root / "ds", "pendulum/tiny-v0")
    return root / "ds"


@pytest.fixture(scope="module")
def linear_dataset(tmp_path_factory):
    """Pendulum-v1 episodes of the known linear policy (a BC checkpoint without hidden
    layers, its weights set to ``TRUE_WEIGHT``, ``TRUE_BIAS``), recorded by ``arrayrl
    collect --deterministic``; returns the Minari root (``pendulum/linear-v0``)."""
    import torch

    from arrayrl.train.checkpoint import POLICY_FILE, policy_recipe, save_policy

    root = tmp_path_factory.mktemp("linear")
    recipe = policy_recipe("bc")
    config = recipe.make_config("Pendulum-v1", num_cells=(), backend="torch")
    spaces = _spaces()
    actor = recipe.build_actor(*spaces, config)
    actor.load_state_dict({"module.module.0.weight": torch.from_numpy(TRUE_WEIGHT),
                           "module.module.0.bias": torch.from_numpy(TRUE_BIAS)})  # fmt: skip
    checkpoint = save_policy(root / POLICY_FILE, actor, config, *spaces)
    _collect(checkpoint, root / "ds", "pendulum/linear-v0", "--deterministic")
    return root / "ds"


def _config(algorithm: str, root, dataset: str = "pendulum/tiny-v0", **fields):
    from arrayrl.train import make_offline_config

    settings = dict(steps=30, eval_every=20, eval_episodes=1, num_cells=(16, 16),
                    batch_size=32, progress=False)  # fmt: skip
    if algorithm == "diffusion-bc":
        settings["num_steps"] = 10
    return make_offline_config(algorithm, dataset=dataset, root=str(root), **{**settings, **fields})


# -- runs, checkpoints, replay ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("algorithm", "term"), [("bc", "loss_bc"), ("diffusion-bc", "loss_diffusion_bc")]
)
def test_run_writes_curve_and_policy_that_collect_replays(
    algorithm, term, tiny_dataset, tmp_path, no_png
):
    from arrayrl.data.minari import load_minari
    from arrayrl.train import train_offline
    from arrayrl.train.checkpoint import load_policy, read_policy_metadata

    result = train_offline(_config(algorithm, tiny_dataset, out=str(tmp_path / "run")))
    curve = result.curve
    assert result.config.env_id == "Pendulum-v1"  # from the dataset
    assert curve.column("frames") == [20.0, 30.0]  # gradient steps
    assert curve.column("episodes") == [1.0, 2.0]
    assert set(curve.columns) >= {"mean_return", term, "fps"}
    assert not {"loss_qvalue", "loss_actor"} & set(curve.columns)
    assert all(math.isfinite(v) and v >= 0 for v in curve.column(term))
    assert all(-2000 < r < 0 for r in curve.column("mean_return"))  # 200-step Pendulum
    assert (tmp_path / "run" / "learning_curve.csv").is_file()
    metadata = read_policy_metadata(result.policy_path)
    assert metadata["algorithm"] == algorithm and metadata["frames"] == 30
    # arrayrl collect --deterministic records the saved policy's deterministic actions
    root = tmp_path / "replay"
    _collect(tmp_path / "run", root, "pendulum/replay-v0", "--deterministic")
    data = load_minari("pendulum/replay-v0", root=root)
    policy = load_policy(result.policy_path, deterministic=True)
    expected = policy(data["observation"])
    assert expected.shape == (150, 1) and np.all(np.abs(expected) <= 2.0)
    np.testing.assert_allclose(data["action"], expected, rtol=1e-5, atol=1e-5)


def test_diffusion_policy_explores_inside_the_box(tiny_dataset, tmp_path, no_png):
    """Exploring draws from the chain (different per seed, not the deterministic action);
    every action is in the box; the deterministic chain is the same each call."""
    from arrayrl.train import train_offline
    from arrayrl.train.checkpoint import load_policy

    result = train_offline(_config("diffusion-bc", tiny_dataset, steps=5, eval_every=5,
                                   out=str(tmp_path)))  # fmt: skip
    observations = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
    deterministic = load_policy(result.policy_path, deterministic=True)
    first = deterministic(observations)
    np.testing.assert_array_equal(first, deterministic(observations))
    draws = [load_policy(result.policy_path, seed=s)(observations) for s in (0, 1)]
    assert "reverse diffusion chain" in load_policy(result.policy_path).exploration
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[0], first)
    for actions in (first, *draws):
        assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 2.0)


def test_box_diffusion_actor_maps_the_chain_into_the_box():
    """The action is ``middle + half · clip(x, −1, 1)`` of the plain DiffusionActor's
    chain ``x`` (same network, same draws); ``to_unit`` is its inverse on the box."""
    from arrayrl.data import ArrayDict
    from arrayrl.modules import MLP
    from arrayrl.modules.diffusion import DiffusionActor, SiLU
    from arrayrl.train.offline import BoxDiffusionActor

    low, high = np.array([-2.0, 0.0]), np.array([2.0, 1.0])
    network = MLP(2 + 3 + 1, 2, [8], activation_class=SiLU, seed=1)
    box = BoxDiffusionActor(low, high, 2, score_network=network, num_steps=5, seed=4)
    plain = DiffusionActor(2, score_network=network, num_steps=5, seed=4)
    observation = (np.random.default_rng(1).normal(size=(256, 3)) * 30.0).astype(np.float32)
    for mode in ("deterministic", "random"):
        ours = box(ArrayDict({"observation": observation}, [256]), interaction_type=mode)
        x = plain(ArrayDict({"observation": observation}, [256]), interaction_type=mode)
        expected = (high + low) / 2 + (high - low) / 2 * np.clip(x["action"], -1, 1)
        np.testing.assert_allclose(ours["action"], expected, rtol=1e-6, atol=1e-6)
    assert np.any(np.abs(x["action"]) > 1)  # large observations: the clip is exercised
    actions = np.array([[-2.0, 0.0], [2.0, 1.0], [1.0, 0.25]])
    np.testing.assert_allclose(box.to_unit(actions), [[-1, -1], [1, 1], [0.5, -0.5]])
    with pytest.raises(ValueError, match="low < high"):
        BoxDiffusionActor(high, low, 2, score_network=network)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        BoxDiffusionActor(low[:1], high[:1], 2, score_network=network)


def test_diffusion_trainer_learns_actions_scaled_into_the_unit_box(tiny_dataset, tmp_path):
    import gymnasium

    from arrayrl.data.minari import load_minari
    from arrayrl.train.offline import OfflineTrainer

    env = gymnasium.make_vec("Pendulum-v1", num_envs=1)
    config = _config("diffusion-bc", tiny_dataset, env_id="Pendulum-v1", out=str(tmp_path))
    trainer = OfflineTrainer(config, env)
    env.close()
    raw = load_minari("pendulum/tiny-v0", root=tiny_dataset)["action"]
    scaled = trainer.backend.to_numpy(trainer.data.get("action"))
    np.testing.assert_allclose(scaled, raw / 2.0, rtol=1e-6)  # Pendulum's box: [-2, 2]
    assert trainer.updater is None and trainer.terms == ("loss_diffusion_bc",)


# -- learning ----------------------------------------------------------------------------------
def test_bc_recovers_a_known_linear_policy(linear_dataset, tmp_path, no_png):
    """BC without hidden layers on the deterministic episodes of ``2 tanh(W s + b)``: the
    MSE falls near 0 and the learned weights are ``W`` and ``b``."""
    from arrayrl.train import train_offline
    from arrayrl.train.checkpoint import load_policy

    config = _config("bc", linear_dataset, dataset="pendulum/linear-v0", num_cells=(),
                     steps=600, eval_every=300, batch_size=64, actor_lr=0.03,
                     out=str(tmp_path))  # fmt: skip
    result = train_offline(config)
    losses = result.curve.column("loss_bc")
    assert losses[-1] < 1e-4 < losses[0], losses
    weights = dict(np.load(result.policy_path, allow_pickle=False))
    np.testing.assert_allclose(weights["module.module.0.weight"], TRUE_WEIGHT, atol=0.02)
    np.testing.assert_allclose(weights["module.module.0.bias"], TRUE_BIAS, atol=0.02)
    observations = np.random.default_rng(2).uniform(-1, 1, (32, 3)).astype(np.float32)
    expected = 2.0 * np.tanh(observations @ TRUE_WEIGHT.T + TRUE_BIAS)
    np.testing.assert_allclose(load_policy(result.policy_path)(observations), expected,
                               atol=0.05)  # fmt: skip


def test_diffusion_loss_falls_on_a_fixed_dataset(linear_dataset, tmp_path, one_thread):
    """On the deterministic episodes of a known policy (the action a function of the
    observation) the noise-prediction MSE of the untrained network is near 1 (ε has unit
    variance) and 300 Adam steps bring it well below."""
    import gymnasium
    import torch

    from arrayrl.train.offline import OfflineTrainer

    config = _config("diffusion-bc", linear_dataset, dataset="pendulum/linear-v0",
                     env_id="Pendulum-v1", batch_size=64, actor_lr=3e-3, num_cells=(64, 64),
                     out=str(tmp_path))  # fmt: skip
    env = gymnasium.make_vec("Pendulum-v1", num_envs=1)
    trainer = OfflineTrainer(config, env)
    env.close()

    def mean_loss() -> float:  # over the whole dataset, 8 draws of steps and noise
        with torch.no_grad():
            return float(np.mean([float(trainer.loss(trainer.data)["loss_diffusion_bc"])
                                  for _ in range(8)]))  # fmt: skip

    before = mean_loss()
    for _ in range(300):
        trainer.update()
    after = mean_loss()
    assert 0.5 < before < 2.0 and after < 0.3 * before, (before, after)


# -- the command line and errors ----------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["bc", "diffusion-bc"])
def test_command_line(algorithm, tiny_dataset, tmp_path, capsys, no_png):
    command = ["train", algorithm, "--dataset", str(tiny_dataset / "pendulum" / "tiny-v0")]
    command += ["--steps", "2", "--eval-every", "2", "--eval-episodes", "1", "--batch-size", "8"]
    assert cli.main([*command, "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{algorithm} Pendulum-v1 seed 0: final mean return")
    assert "2 gradient steps in" in out and (tmp_path / "policy.npz").is_file()


@pytest.mark.parametrize("algorithm", ["bc", "diffusion-bc"])
def test_help_names_the_loss_and_examples(algorithm, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", algorithm, "--help"])
    text = capsys.readouterr().out
    assert "--dataset ID" in text and "examples:" in text and "``" not in text
    assert f"arrayrl train {algorithm} --dataset pendulum/sac-v0" in text
    assert ("DiffusionBCLoss" if algorithm == "diffusion-bc" else "BCLoss") in text


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--steps", "0"], "steps must be >= 1"),
        (["--backend", "numpy"], "cannot train"),
        (["--dataset", "pendulum/none-v0"], "no Minari dataset 'pendulum/none-v0'"),
    ],
)
def test_command_line_errors_are_one_line(options, expected, tiny_dataset, capsys):
    command = ["train", "diffusion-bc", "--dataset", "pendulum/tiny-v0", "--root"]
    assert cli.main([*command, str(tiny_dataset), *options, "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("arrayrl train diffusion-bc: error:")
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"num_steps": 0}, "num_steps must be >= 1"),
        ({"beta_start": 0.0}, "0 < beta_start <= beta_end < 1"),
        ({"beta_start": 0.1, "beta_end": 0.01}, "0 < beta_start <= beta_end < 1"),
        ({"beta_end": 1.0}, "0 < beta_start <= beta_end < 1"),
    ],
)
def test_diffusion_schedule_settings_are_checked(fields, expected):
    from arrayrl.train import make_offline_config

    config = make_offline_config("diffusion-bc", dataset="x", **fields)
    with pytest.raises(ValueError, match=expected):
        config.validate()


def test_unknown_settings_and_algorithms():
    from arrayrl.train import make_offline_config

    with pytest.raises(TypeError, match="num_steps"):
        make_offline_config("bc", num_steps=5)  # a diffusion setting
    with pytest.raises(ValueError, match="'bc', 'diffusion-bc'"):
        make_offline_config("gail")
