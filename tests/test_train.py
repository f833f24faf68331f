"""``arrayrl.train``: the PPO trainer learns, the CLI writes its outputs, rollouts are right.

The learning test trains CartPole-v1 for a small, fixed budget with a fixed seed and
compares the first and the last logged mean return with a wide margin.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from arrayrl.random import make_generator
from arrayrl.train import (
    ProgressBar,
    build_actor_critic,
    make_config,
    read_curve,
    train_ppo,
)
from arrayrl.train.rollout import (
    EpisodeTracker,
    RewardScaler,
    RolloutCollector,
    make_vector_env,
)


def test_cartpole_mean_return_improves(tmp_path):
    config = make_config("CartPole-v1", frames=40_960, seed=0, out=str(tmp_path), progress=False)
    result = train_ppo(config)
    returns = [r for r in result.curve.column("mean_return") if not math.isnan(r)]
    assert result.frames == 40_960
    assert returns[0] < 40  # a near-uniform first policy: short episodes
    assert returns[-1] > returns[0] + 100, returns  # seeds 0-5: +160 to +250
    assert result.final_mean_return == returns[-1]
    assert result.csv_path.is_file() and result.png_path.is_file()


def test_cli_writes_curve_and_summary(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "arrayrl.cli", "train", "ppo", "--frames", "2048"]
    done = subprocess.run(
        [*command, "--seed", "3", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "final mean return" in done.stdout and str(out) in done.stdout
    assert "frames" in done.stderr  # the progress bar (plain lines: stderr is a pipe)
    curve = read_curve(out / "learning_curve.csv")
    assert curve["frames"] == [1024.0, 2048.0]
    for column in ("wall_s", "mean_return", "loss_objective", "loss_critic", "loss_entropy"):
        assert column in curve
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_numpy_training(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "arrayrl.cli", "train", "ppo", "--backend", "numpy"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "no autograd" in done.stderr and "--backend torch" in done.stderr


def test_rollout_layout_and_autoreset():
    """Truncated episodes keep their real last observation under ("next", ...)."""
    env = make_vector_env("CartPole-v1", 2, max_episode_steps=5)
    config = make_config("CartPole-v1")
    rng = make_generator(0, "torch")
    actor, _ = build_actor_critic(env.single_observation_space, env.single_action_space, config)
    collector = RolloutCollector(env, actor, actor.backend, rng, seed=0)
    batch = collector.collect(12)
    env.close()
    assert batch.batch_size == (2, 12)
    assert tuple(batch["observation"].shape) == (2, 12, 4)
    assert tuple(batch["action_log_prob"].shape) == (2, 12)
    for key in ("reward", "done", "terminated", "truncated"):
        assert tuple(batch["next", key].shape) == (2, 12, 1)
    obs, next_obs = batch["observation"].numpy(), batch["next", "observation"].numpy()
    done = batch["next", "done"].numpy()[..., 0]
    truncated = batch["next", "truncated"].numpy()[..., 0]
    terminated = batch["next", "terminated"].numpy()[..., 0]
    np.testing.assert_array_equal(done, truncated | terminated)
    assert truncated.any()
    # Within an episode the next observation is the following step's observation ...
    same = ~done[:, :-1]
    np.testing.assert_array_equal(next_obs[:, :-1][same], obs[:, 1:][same])
    # ... and at its end it is the last state, not the first state of the next episode.
    ended = done[:, :-1]
    assert not np.isclose(next_obs[:, :-1][ended], obs[:, 1:][ended]).all(axis=-1).any()
    assert collector.episodes.episodes == int(done.sum())


def test_episode_tracker_and_reward_scaler():
    tracker = EpisodeTracker(2, window=3)
    tracker.step(np.array([1.0, 2.0]), np.array([False, True]))
    tracker.step(np.array([1.0, 2.0]), np.array([True, False]))
    assert list(tracker.recent) == [2.0, 2.0] and tracker.mean_return == 2.0
    scaler = RewardScaler(2, gamma=0.9)
    scaled = [scaler(np.array([1.0, -1.0]), np.array([False, False])) for _ in range(50)]
    assert np.all(np.isfinite(scaled[-1])) and scaler.variance > 0


def test_progress_bar_plain_lines():
    """Not a terminal: one line per redraw, no carriage returns, frames/s and return."""
    stream = io.StringIO()
    bar = ProgressBar(1000, stream=stream, plain_interval=0.0)
    bar.update(500, mean_return=12.5)
    bar.update(1000, mean_return=float("nan"))
    bar.close()
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) >= 3
    assert "500/1.00k frames" in lines[1] and "frames/s" in lines[1]
    assert "return 12.5" in lines[1]
    assert lines[-1].startswith("100%") and "return -" in lines[-1]


def test_progress_bar_does_not_spam_logs():
    """Not a terminal, default interval: a first line and a final line, nothing between."""
    stream = io.StringIO()
    with ProgressBar(100 * 1024, stream=stream) as bar:
        for i in range(1, 101):
            bar.update(1024 * i, mean_return=float(i))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("  0%") and lines[-1].startswith("100%")
    assert "102k/102k frames" in lines[-1] and "return 100.0" in lines[-1]


def test_progress_bar_terminal_of_unknown_width_still_draws():
    """A pseudo-terminal whose size was never set: tqdm would draw nothing at width 0."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with ProgressBar(1000, stream=stream) as bar:
        bar.update(1000, mean_return=3.0)
    text = stream.getvalue()
    assert "\r" in text and "1.00k/1.00k frames" in text and "return 3.0" in text


def test_progress_bar_disabled_writes_nothing():
    stream = io.StringIO()
    with ProgressBar(10, stream=stream, enabled=False) as bar:
        bar.update(10, 1.0)
    assert stream.getvalue() == ""


def test_figure_title_and_readable_ranges(tmp_path):
    from arrayrl.train.curve import PANELS, _y_range
    from arrayrl.train.ppo import _CurveWriter

    config = make_config("CartPole-v1", frames=4096, seed=3, out=str(tmp_path))
    writer = _CurveWriter(config)
    assert writer.title(4096) == "PPO on CartPole-v1, seed 3, 4,096 frames"
    assert writer.title(1024, interrupted=True) == (
        "PPO on CartPole-v1, seed 3, 1,024 of 4,096 frames (interrupted)"
    )
    panels = {p.columns[0]: p for p in PANELS}
    for name in ("kl_approx", "clip_fraction", "explained_variance", "mean_return"):
        assert name in panels  # each diagnostic on an axis of its own
    # an untrained critic's explained variance (-50) must not flatten the useful range
    low, high = _y_range([-50.0, 0.2, 0.9], panels["explained_variance"])
    assert -1.2 < low < -1.0 and high == 1.05
    assert _y_range([0.0, 0.1], panels["clip_fraction"])[0] == 0.0


def test_scale_observations_maps_the_box_inside_both_networks():
    """MountainCar's preset scales its observations onto [-1, 1] in the networks: the
    scaled networks equal the plain ones fed (obs - middle) / half."""
    import gymnasium as gym
    import torch

    from arrayrl.data import ArrayDict
    from arrayrl.train.ppo import build_actor_critic

    env = gym.make("MountainCar-v0")
    scaled_config = make_config("MountainCar-v0")
    assert scaled_config.scale_observations and not make_config("CartPole-v1").scale_observations
    plain_config = make_config("MountainCar-v0", scale_observations=False)
    scaled = build_actor_critic(env.observation_space, env.action_space, scaled_config)
    plain = build_actor_critic(env.observation_space, env.action_space, plain_config)
    obs = np.array([[-1.2, -0.07], [0.6, 0.07], [-0.5, 0.01]], np.float32)
    low, high = env.observation_space.low, env.observation_space.high
    unit = (obs - (high + low) / 2) / ((high - low) / 2)
    np.testing.assert_allclose(unit[:2], [[-1, -1], [1, 1]], atol=1e-6)

    def batch(x):
        return ArrayDict({"observation": torch.tensor(x)}, [3])

    (actor, critic), (plain_actor, plain_critic) = scaled, plain
    torch.testing.assert_close(
        actor.get_dist(batch(obs), actor.params).logits,
        plain_actor.get_dist(batch(unit), plain_actor.params).logits,
    )
    torch.testing.assert_close(
        critic(batch(obs)).get("state_value"), plain_critic(batch(unit)).get("state_value")
    )
    with pytest.raises(ValueError, match="finite bounds"):
        build_actor_critic(gym.spaces.Box(-np.inf, np.inf, (2,)), env.action_space, scaled_config)
