"""``arrayrl train sac`` / ``td3``: the replay buffer, short learning runs, the CLI.

The learning tests train small networks on Pendulum-v1 for a few thousand frames with a
fixed seed and compare the mean return of the random warm-up with the last one logged.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from arrayrl import cli
from arrayrl.data import ArrayDict
from arrayrl.train.replay import TRANSITION_KEYS, ReplayBuffer

needs_train = pytest.mark.skipif(
    bool(cli.missing_train_modules()), reason="needs the [train] extra"
)


def _transitions(start: int, n: int, obs_dim: int = 3) -> dict:
    """``n`` transitions whose observation rows are ``start, start + 1, ...``."""
    ids = np.arange(start, start + n, dtype=np.float64)
    return {
        "observation": np.repeat(ids[:, None], obs_dim, axis=1),
        "action": ids[:, None] * 0.5,
        "next": {
            "observation": np.repeat(ids[:, None] + 1, obs_dim, axis=1),
            "reward": -ids,  # [N]: stored as [N, 1]
            "done": ids % 4 == 3,
            "terminated": np.zeros(n, bool),
        },
    }


def _stored_ids(buffer: ReplayBuffer) -> list[int]:
    rows = buffer._gather(np.arange(len(buffer)))
    return sorted(int(v) for v in rows["observation"][:, 0])


# -- replay buffer ---------------------------------------------------------------------------
def test_ring_keeps_the_last_capacity_transitions():
    buffer = ReplayBuffer(5)
    buffer.extend(_transitions(0, 3))
    assert len(buffer) == 3 and _stored_ids(buffer) == [0, 1, 2]
    buffer.extend(_transitions(3, 4))  # wraps: 0 and 1 are overwritten
    assert len(buffer) == 5 and _stored_ids(buffer) == [2, 3, 4, 5, 6]
    buffer.extend(_transitions(7, 12))  # more than the capacity at once
    assert len(buffer) == 5 and _stored_ids(buffer) == [14, 15, 16, 17, 18]
    rows = buffer._gather(np.arange(5))
    ids = rows["observation"][:, 0]
    # every stored row still holds one transition's entries together
    np.testing.assert_array_equal(rows["action"][:, 0], ids * 0.5)
    np.testing.assert_array_equal(rows["next", "observation"][:, 0], ids + 1)
    np.testing.assert_array_equal(rows["next", "reward"][:, 0], -ids)
    np.testing.assert_array_equal(rows["next", "done"][:, 0], ids % 4 == 3)


def test_sample_keys_shapes_and_dtypes():
    buffer = ReplayBuffer(100)
    buffer.extend(_transitions(0, 10))
    batch = buffer.sample(32, np.random.default_rng(0))
    assert isinstance(batch, ArrayDict) and batch.batch_size == (32,)
    keys = {k if isinstance(k, tuple) else (k,) for k in batch.keys(True, True)}
    assert keys == set(TRANSITION_KEYS)
    shapes = {
        "observation": (32, 3),
        "action": (32, 1),
        ("next", "observation"): (32, 3),
        ("next", "reward"): (32, 1),
        ("next", "done"): (32, 1),
        ("next", "terminated"): (32, 1),
    }
    for key, shape in shapes.items():
        assert tuple(batch[key].shape) == shape, key
    assert batch["observation"].dtype == np.float32  # float64 inputs stored as float32
    assert batch["next", "reward"].dtype == np.float32
    assert batch["next", "done"].dtype == np.bool_
    assert set(np.unique(batch["observation"][:, 0])) <= set(range(10))


def test_sampling_is_seeded_and_uniform():
    buffer = ReplayBuffer(50)
    buffer.extend(_transitions(0, 50))
    first = buffer.sample(64, np.random.default_rng(7))["observation"]
    again = buffer.sample(64, np.random.default_rng(7))["observation"]
    other = buffer.sample(64, np.random.default_rng(8))["observation"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    counts = np.bincount(
        buffer.sample(50_000, np.random.default_rng(0))["observation"][:, 0].astype(int),
        minlength=50,
    )
    assert counts.min() > 800 and counts.max() < 1200  # 1000 expected per row


def test_buffer_errors():
    buffer = ReplayBuffer(4)
    with pytest.raises(RuntimeError, match="empty"):
        buffer.sample(2, np.random.default_rng(0))
    incomplete = _transitions(0, 2)
    del incomplete["next"]["terminated"]
    with pytest.raises(KeyError, match="terminated"):
        buffer.extend(incomplete)
    buffer.extend(_transitions(0, 2))
    with pytest.raises(ValueError, match="shape"):
        buffer.extend(_transitions(0, 2, obs_dim=4))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)


@needs_train
def test_torch_batches_from_torch_transitions():
    import torch

    buffer = ReplayBuffer(8, "torch")
    buffer.extend(ArrayDict(_transitions(0, 4), [4]).to("torch"))
    batch = buffer.sample(6, np.random.default_rng(1))
    assert isinstance(batch["observation"], torch.Tensor)
    assert batch["observation"].dtype == torch.float32
    assert batch["next", "terminated"].dtype == torch.bool


# -- learning ----------------------------------------------------------------------------------
#: Small networks and batches, two gradient steps per frame, a 1,000-frame warm-up: the
#: return leaves the random policy's (about -1150 over the warm-up) within 4-5k frames.
SMALL = {"num_cells": (64, 64), "batch_size": 64, "log_every": 1_000}


def _learns(train, make, **settings) -> list[float]:
    """The logged mean returns of a short run (small networks, small batches)."""
    config = make("Pendulum-v1", progress=False, **settings)
    result = train(config)
    returns = result.curve.column("mean_return")
    assert result.frames == config.total_frames
    assert result.csv_path.is_file() and result.png_path.is_file()
    return [r for r in returns if not math.isnan(r)]


@needs_train
def test_sac_return_improves(tmp_path):
    from arrayrl.train import make_sac_config, train_sac

    returns = _learns(
        train_sac, make_sac_config, frames=4_000, learning_starts=1_000, utd_ratio=2.0,
        actor_lr=1e-3, seed=0, out=str(tmp_path), **SMALL,
    )  # fmt: skip
    assert returns[-1] > returns[0] + 300, returns  # seed 0: -1155 to -392


@needs_train
def test_td3_return_improves(tmp_path):
    from arrayrl.train import make_td3_config, train_td3

    returns = _learns(
        train_td3, make_td3_config, frames=5_000, learning_starts=1_000, utd_ratio=2.0,
        actor_lr=1e-3, critic_lr=1e-3, seed=0, out=str(tmp_path), **SMALL,
    )  # fmt: skip
    assert returns[-1] > returns[0] + 300, returns  # seed 0: -1155 to -229


@needs_train
@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_other_box_env_and_several_envs(algorithm, tmp_path):
    """Any Box env (MountainCarContinuous: 2-D observations, bounds ±1), 2 envs at once."""
    import arrayrl.train as training

    make = getattr(training, f"make_{algorithm}_config")
    config = make(
        "MountainCarContinuous-v0", frames=301, num_envs=2, learning_starts=100, log_every=100,
        num_cells=(16, 16), batch_size=8, seed=3, out=str(tmp_path), progress=False,
    )  # fmt: skip
    training.check_offpolicy_setup(config)
    result = getattr(training, f"train_{algorithm}")(config)
    curve = result.curve
    assert result.frames == config.total_frames == 300
    assert curve.column("frames") == [100.0, 200.0, 300.0]
    assert curve.column("updates") == [2.0, 102.0, 202.0]  # 2 envs x 1 step per frame
    assert all(math.isfinite(v) for v in curve.column("loss_qvalue")[1:])


# -- command line ------------------------------------------------------------------------------
def _one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_help_has_examples(algorithm, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", algorithm, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and re.search(rf"^  arrayrl train {algorithm}", text, re.M)
    assert "``" not in text and "Pendulum-v1" in text


@needs_train
@pytest.mark.parametrize("algorithm", ["sac", "td3"])
@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--env", "NoSuchEnv-v0"], "cannot make Gymnasium env 'NoSuchEnv-v0'"),
        (["--env", "CartPole-v1"], "needs continuous actions"),
        (["--device", "foo"], "unknown torch device 'foo'"),
        (["--device", "meta"], "holds no data"),
        (["--backend", "numpy"], "no autograd"),
        (["--frames", "0"], "frames must be >= 1"),
        (["--utd-ratio", "0"], "utd_ratio must be > 0"),
    ],
)
def test_setting_errors_are_one_line(algorithm, options, expected, tmp_path, capsys):
    assert cli.main(["train", algorithm, *options, "--out", str(tmp_path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"arrayrl train {algorithm}: error:") and expected in line


@needs_train
def test_unavailable_cuda_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert cli.main(["train", "td3", "--device", "cuda"]) == 2
    assert "device 'cuda' is not available here" in _one_error_line(capsys.readouterr().err)


@needs_train
def test_frames_rounding_is_reported(monkeypatch, capsys):
    import arrayrl.train

    class Fake:
        def summary(self) -> str:
            return "fake summary"

    monkeypatch.setattr(arrayrl.train, "train_sac", lambda config: Fake())
    assert cli.main(["train", "sac", "--frames", "1001", "--num-envs", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "fake summary\n"
    assert captured.err.strip() == (
        "arrayrl train sac: frames: 1,001 rounded down to 1,000 (500 steps of 2 envs)"
    )


@needs_train
@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_ctrl_c_writes_the_curve_so_far(algorithm, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the 3rd iteration: exit 130, the two finished rows written."""
    from arrayrl.train import read_curve
    from arrayrl.train.sac import SACTrainer
    from arrayrl.train.td3 import TD3Trainer

    trainer = SACTrainer if algorithm == "sac" else TD3Trainer
    real, calls = trainer.update, [0]

    def update(self, batch):
        calls[0] += 1
        if calls[0] == 150:  # 100 updates per iteration after a one-iteration warm-up
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(trainer, "update", update)
    out = tmp_path / "run"
    command = ["train", algorithm, "--frames", "1000", "--learning-starts", "100"]
    command += ["--log-every", "100", "--batch-size", "16", "--out", str(out)]
    assert cli.main([*command, "--no-progress"]) == 130
    captured = capsys.readouterr()
    assert "interrupted after 200 of 1,000 frames" in captured.out
    assert str(out / "learning_curve.csv") in captured.out
    curve = read_curve(out / "learning_curve.csv")
    assert curve["frames"] == [100.0, 200.0] and curve["updates"] == [1.0, 101.0]
    assert (out / "learning_curve.png").is_file()
    assert "Traceback" not in captured.err
