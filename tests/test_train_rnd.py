"""``arrayrl train ppo --rnd``: Random Network Distillation's bonus in the PPO trainer.

The intrinsic reward is checked against a NumPy computation written here from the
equations (running statistics, normalised and clipped input, hand-written MLP forward,
error scaled by its running deviation); the PPO run without RND is checked against the
numbers the trainer gave before RND existed.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import torch
from arrayrl.backends import get_backend

from arrayrl import cli
from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, Linear
from arrayrl.train import make_config, read_curve, train_ppo
from arrayrl.train.rnd import RND_COLUMNS, RNDBonus

OBS_DIM, N, T = 3, 4, 5


def _config(**overrides):
    settings = {"rnd": True, "rnd_features": 8, "rnd_num_cells": (16,), "seed": 4}
    return make_config("MountainCar-v0", **{**settings, **overrides})


def _rollout(seed: int = 0) -> ArrayDict:
    """A fake ``[N, T]`` rollout on torch: next observations far from 0 and 1 (so the
    normalisation matters) and rewards of -1."""
    rng = np.random.default_rng(seed)
    next_obs = rng.normal([3.0, -2.0, 0.5], [2.0, 0.5, 0.1], (N, T, OBS_DIM))
    backend = get_backend("torch")
    return ArrayDict(
        {
            "observation": backend.from_numpy(np.zeros((N, T, OBS_DIM), np.float32)),
            "next": {
                "observation": backend.from_numpy(next_obs.astype(np.float32)),
                "reward": backend.from_numpy(-np.ones((N, T, 1), np.float32)),
            },
        },
        [N, T],
    )


def _merge(mean, var, count, batch):
    """Chan et al.'s merge of ``batch`` (leading axis: samples) into the statistics."""
    n = batch.shape[0]
    delta = batch.mean(axis=0) - mean
    total = count + n
    new_mean = mean + delta * n / total
    new_var = (var * count + batch.var(axis=0) * n + delta**2 * count * n / total) / total
    return new_mean, new_var


def _forward(seed: int, config, x: np.ndarray) -> np.ndarray:
    """The ReLU MLP of seed ``seed`` by hand: ``relu(x Wᵀ + b)`` per hidden layer."""
    mlp = MLP(OBS_DIM, config.rnd_features, list(config.rnd_num_cells), seed=seed)
    linears = [layer for layer in mlp.layers if isinstance(layer, Linear)]
    for k, layer in enumerate(linears):
        x = x @ np.asarray(layer.params["weight"], np.float64).T + layer.params["bias"]
        if k < len(linears) - 1:
            x = np.maximum(x, 0.0)
    return x


def test_intrinsic_reward_is_the_normalised_prediction_error_by_hand():
    config = _config(rnd_coeff=0.7, rnd_obs_clip=1.5, rnd_reward_clip=3.0)
    bonus = RNDBonus(OBS_DIM, config, get_backend("torch"))
    batch = _rollout()
    before = batch.get(("next", "reward")).clone()
    mixed = bonus.add_bonus(batch)

    obs = batch.get(("next", "observation")).numpy().astype(np.float64).reshape(-1, OBS_DIM)
    mean, var = _merge(np.zeros(OBS_DIM), np.ones(OBS_DIM), 1e-4, obs)
    x = np.clip((obs - mean) / np.sqrt(var), -1.5, 1.5)
    assert (np.abs(x) == 1.5).any()  # the clip is exercised
    error = np.mean(
        (_forward(config.seed + 2, config, x) - _forward(config.seed + 3, config, x)) ** 2, -1
    )
    _, error_var = _merge(0.0, 1.0, 1e-4, error)
    intrinsic = np.clip(error / np.sqrt(error_var), -3.0, 3.0)
    expected = -1.0 + 0.7 * intrinsic.reshape(N, T, 1)

    got = mixed.get(("next", "reward")).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)
    assert torch.equal(batch.get(("next", "reward")), before)  # the rollout is left as it is
    np.testing.assert_allclose(bonus.obs_rms.mean.numpy(), mean, rtol=1e-5)
    logged = bonus.logged()
    assert logged["intrinsic_reward"] == pytest.approx(intrinsic.mean(), rel=2e-4)
    assert logged["rnd_error"] == pytest.approx(error.mean(), rel=2e-4)
    assert math.isnan(logged["loss_predictor"])  # no predictor step yet


def _target_weights(bonus: RNDBonus) -> dict:
    state = bonus.loss.state_dict()
    return {k: v.clone() for k, v in state.items() if k.startswith("target_network")}


def test_predictor_loss_falls_on_a_fixed_batch():
    bonus = RNDBonus(OBS_DIM, _config(rnd_update_fraction=1.0, rnd_lr=3e-3), get_backend("torch"))
    batch = bonus.add_bonus(_rollout(1)).reshape(-1)
    target = _target_weights(bonus)
    for _ in range(60):
        bonus.train_step(batch)
    losses = [float(x) for x in bonus._losses]
    assert losses[-1] < 0.3 * losses[0], losses
    assert bonus.logged()["loss_predictor"] == pytest.approx(np.mean(losses), rel=1e-5)
    after = _target_weights(bonus)
    assert target.keys() == after.keys() and all(
        torch.equal(target[k], after[k]) for k in target
    )  # the target stays fixed


def test_ppo_without_rnd_gives_the_numbers_it_gave_before_rnd(tmp_path):
    """Golden values from the trainer before the RND hook (same seed, same settings);
    RND with rnd_coeff=0 must not change them either (its own generator and optimizer)."""
    golden = [
        (20.95, -0.0007852003909647465, 0.4081633388996124, 0.6929816007614136),
        (23.35, -0.0014525919687002897, 0.23407018184661865, 0.6923059821128845),
    ]
    columns = ("mean_return", "loss_objective", "loss_critic", "entropy")

    def run(tmp, **kw):
        config = make_config(
            "CartPole-v1", frames=1024, num_envs=4, seed=7, out=str(tmp), progress=False, **kw
        )
        return train_ppo(config).curve

    plain = run(tmp_path / "plain")
    rows = [tuple(row[c] for c in columns) for row in plain.rows]
    np.testing.assert_allclose(rows, golden, rtol=1e-5)
    assert not set(RND_COLUMNS) & set(plain.columns)
    silent = run(tmp_path / "zero", rnd=True, rnd_coeff=0.0)
    assert [tuple(row[c] for c in columns) for row in silent.rows] == rows
    assert set(RND_COLUMNS) <= set(silent.columns)


def test_cli_rnd_run_writes_the_intrinsic_columns(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["train", "ppo", "--env", "MountainCar-v0", "--frames", "512", "--num-envs", "2"]
    code = cli.main([*command, "--rnd", "--rnd-coeff", "0.5", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    curve = read_curve(out / "learning_curve.csv")
    assert curve["frames"] == [256.0, 512.0]
    for column in RND_COLUMNS:
        assert all(math.isfinite(v) for v in curve[column]), column
    assert all(v > 0 for v in curve["intrinsic_reward"])
    assert all(v == -200.0 or math.isnan(v) for v in curve["mean_return"])  # extrinsic only
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("setting", "value", "words"),
    [
        ("rnd_coeff", -0.5, "rnd_coeff must be finite and >= 0"),
        ("rnd_coeff", math.nan, "rnd_coeff must be finite"),
        ("rnd_lr", 0.0, "rnd_lr must be finite and > 0"),
        ("rnd_update_fraction", 0.0, "rnd_update_fraction must be in (0, 1]"),
        ("rnd_update_fraction", 1.5, "rnd_update_fraction must be in (0, 1]"),
        ("rnd_obs_clip", -1.0, "rnd_obs_clip"),
        ("rnd_features", 0, "rnd_features and rnd_num_cells must be >= 1"),
        ("backend", "numpy", "PPO and its RND predictor need gradients"),
    ],
)
def test_bad_rnd_settings_are_refused(setting, value, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        _config(**{setting: value}).validate()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--rnd", "--rnd-coeff", "-1"], "rnd_coeff must be finite and >= 0"),
        (["--rnd-coeff", "2"], "--rnd-coeff sets the RND bonus's scale: add --rnd"),
        (["--rnd", "--backend", "numpy"], "RND predictor need gradients"),
    ],
)
def test_cli_refuses_bad_rnd_options(extra, words, capsys):
    assert cli.main(["train", "ppo", "--env", "MountainCar-v0", *extra, "--no-progress"]) == 2
    assert words in capsys.readouterr().err
