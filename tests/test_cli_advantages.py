"""``arrayrl advantages``: out-of-core GAE / TD(λ) on Zarr and HDF5 through Dask."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

from arrayrl.cli import main  # noqa: E402
from arrayrl.data.chunked_store import parse_chunks  # noqa: E402
from arrayrl.objectives.value import functional as F  # noqa: E402

B, T = 8, 60


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    done = rng.random((B, T, 1)) < 0.05
    return {
        "state_value": rng.standard_normal((B, T, 1)).astype(np.float32),
        "next/state_value": rng.standard_normal((B, T, 1)).astype(np.float32),
        "next/reward": rng.standard_normal((B, T, 1)).astype(np.float32),
        "next/done": done,
        "next/terminated": done & (rng.random((B, T, 1)) < 0.5),
    }


def _zarr_dataset(path, data, rename=None):
    group = zarr.open_group(str(path), mode="w")
    for key, value in data.items():
        key = (rename or {}).get(key, key)
        group.create_array(key, shape=value.shape, chunks=(3, 25, 1), dtype=value.dtype)[:] = value
    return group


def _expected(data, estimator="gae", gamma=0.9, lmbda=0.8):
    args = (
        data["state_value"],
        data["next/state_value"],
        data["next/reward"],
        data["next/done"],
        data["next/terminated"],
    )
    if estimator == "gae":
        return F.generalized_advantage_estimate(gamma, lmbda, *args)
    target = F.td_lambda_return_estimate(gamma, lmbda, *args[1:])
    return target - data["state_value"], target


@pytest.mark.parametrize("chunks", [None, "4,-1", "-1,7", "3,16"])
def test_zarr_gae_written_beside_the_data(tmp_path, capsys, chunks):
    data = _data()
    path = tmp_path / "data.zarr"
    _zarr_dataset(path, data)
    argv = [str(path), "--gamma", "0.9", "--lmbda", "0.8", "--no-progress"]
    assert main(["advantages", *argv, *([f"--chunks={chunks}"] if chunks else [])]) == 0
    assert "wrote advantage [8, 60, 1]" in capsys.readouterr().out
    group = zarr.open_group(str(path), mode="r")
    advantage, target = _expected(data)
    np.testing.assert_allclose(group["advantage"][:], advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(group["value_target"][:], target, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(group["next/reward"][:], data["next/reward"])  # untouched


def test_zarr_td_lambda_sync_with_progress(tmp_path, capsys):
    data = _data(1)
    path = tmp_path / "data.zarr"
    _zarr_dataset(path, data)
    argv = [
        "advantages",
        str(path),
        "--estimator",
        "td_lambda",
        "--gamma",
        "0.9",
        "--lmbda",
        "0.8",
        "--scheduler",
        "sync",
        "--chunks",
        "4,20",
    ]
    assert main(argv) == 0
    assert "100%" in capsys.readouterr().out  # the progress bar ran to the end
    group = zarr.open_group(str(path), mode="r")
    advantage, target = _expected(data, "td_lambda")
    np.testing.assert_allclose(group["advantage"][:], advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(group["value_target"][:], target, rtol=1e-5, atol=1e-5)


def test_zarr_on_a_local_cluster_of_two_processes(tmp_path):
    pytest.importorskip("distributed")
    data = _data(4)
    path = tmp_path / "data.zarr"
    _zarr_dataset(path, data)
    argv = [
        "advantages",
        str(path),
        "--gamma",
        "0.9",
        "--lmbda",
        "0.8",
        "--scheduler",
        "local:2",
        "--chunks",
        "4,20",
        "--no-progress",
    ]
    assert main(argv) == 0
    advantage, target = _expected(data)
    group = zarr.open_group(str(path), mode="r")
    np.testing.assert_allclose(group["advantage"][:], advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(group["value_target"][:], target, rtol=1e-5, atol=1e-5)


def test_renamed_keys_and_missing_terminated(tmp_path):
    data = _data(2)
    data["next/terminated"] = data["next/done"]
    stored = {k: v for k, v in data.items() if k != "next/terminated"}
    path = tmp_path / "data.zarr"
    _zarr_dataset(path, stored, rename={"next/reward": "rewards"})
    argv = [
        "advantages",
        str(path),
        "--gamma",
        "0.9",
        "--lmbda",
        "0.8",
        "--no-progress",
        "--key",
        "reward=rewards",
    ]
    assert main(argv) == 0
    advantage, _ = _expected(data)
    got = zarr.open_group(str(path), mode="r")["advantage"][:]
    np.testing.assert_allclose(got, advantage, rtol=1e-5, atol=1e-5)


def test_hdf5_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = _data(3)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as file:
        for key, value in data.items():
            file.create_dataset(key, data=value, chunks=(4, 30, 1))
    argv = [
        "advantages",
        str(path),
        "--gamma",
        "0.9",
        "--lmbda",
        "0.8",
        "--no-progress",
        "--chunks",
        "4,30",
    ]
    assert main(argv) == 0
    advantage, target = _expected(data)
    with h5py.File(path, "r") as file:
        np.testing.assert_allclose(file["advantage"][:], advantage, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(file["value_target"][:], target, rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit, match="HDF5 files take"):
        main(["advantages", str(path), "--scheduler", "processes"])


def test_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="no dataset"):
        main(["advantages", str(tmp_path / "missing.zarr")])
    path = tmp_path / "data.zarr"
    _zarr_dataset(path, {k: v for k, v in _data().items() if k != "next/reward"})
    with pytest.raises(SystemExit, match="reward: no array 'next/reward'"):
        main(["advantages", str(path), "--no-progress"])
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["advantages", str(path), "--key", "reward"])
    with pytest.raises(SystemExit, match="unknown key names"):
        main(["advantages", str(path), "--key", "rewardz=x"])
    with pytest.raises(SystemExit, match="gamma"):
        _zarr_dataset(path, _data())
        main(["advantages", str(path), "--gamma", "1.5", "--no-progress"])


@pytest.mark.parametrize("text", ["a,b", "0", "-2,5"])
def test_bad_chunks(text):
    with pytest.raises(ValueError, match="--chunks"):
        parse_chunks(text)
