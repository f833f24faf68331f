"""The DreamerV3 worked example (``examples/dreamer_v3_pendulum.py``): its pipeline runs
end to end on a few random Pendulum episodes, its world model learns, and its arrayrl
model loss gives TorchRL's numbers on the example's own modules."""

from __future__ import annotations

import csv
import importlib.util
import math
import pathlib
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")
pytest.importorskip("gymnasium")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "dreamer_v3_pendulum.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("dreamer_v3_pendulum", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_pipeline_runs_and_the_world_model_learns(example, tmp_path):
    argv = [
        "--episodes", "2", "--steps", "40", "--batch", "8", "--length", "16",
        "--horizon", "5", "--log-every", "10", "--quiet", "--out", str(tmp_path),
    ]  # fmt: skip
    rows = example.main(argv)
    with (tmp_path / "dreamer_v3_pendulum.csv").open() as handle:
        written = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in written] == [1, 10, 20, 30, 40]
    assert tuple(written[0]) == example.COLUMNS
    for row in rows:
        assert all(math.isfinite(row[key]) for key in example.COLUMNS), row
    first, last = rows[0], rows[-1]
    # reconstruction and reward prediction improve on the random-policy data
    assert last["loss_model_reco"] < 0.8 * first["loss_model_reco"]
    assert last["loss_model_reward"] < 0.8 * first["loss_model_reward"]


def test_batches_follow_torchrl_replay_layout(example):
    data = example.collect_random("Pendulum-v1", 1, seed=3)
    assert data.observations.shape == (1, 201, 3) and data.actions.shape == (1, 200, 1)
    assert np.all(np.abs(data.actions) <= 1.0) and np.all(data.rewards <= 0.0)
    sizes = example.Sizes()
    batch = example.sample_batch(data, 4, 10, sizes, np.random.default_rng(0))
    assert tuple(batch.batch_size) == (4, 10)
    assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()
    assert batch["state"].shape == (4, 10, sizes.state)
    # the next observation at t is the observation the action at t led to
    obs, nxt = torch.as_tensor(data.observations[0]), batch["next", "observation"][0]
    start = int(torch.nonzero((obs[1:] == nxt[0]).all(-1))[0])
    torch.testing.assert_close(nxt, obs[start + 1 : start + 11])


def test_model_loss_gives_torchrl_numbers_on_the_example_modules(example):
    from torchrl.objectives import DreamerV3ModelLoss as TorchRLModelLoss

    torch.manual_seed(0)
    sizes = example.Sizes()
    learner = example.build_learner(3, 1, sizes, horizon=3)
    data = example.collect_random("Pendulum-v1", 1, seed=1)
    batch = example.sample_batch(data, 4, 8, sizes, np.random.default_rng(1))
    theirs_loss = TorchRLModelLoss(
        learner.world_model, num_reward_bins=sizes.reward_bins,
        lambda_continue=1.0,
    )  # fmt: skip
    theirs_loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.manual_seed(5)
        theirs, _ = theirs_loss(batch.clone())
        torch.manual_seed(5)
        ours, _ = learner.model_loss(batch)
    assert set(ours.keys()) == set(theirs.keys())
    for key in theirs.keys():
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
