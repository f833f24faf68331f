"""Layers, DictModule, actors' plumbing and arrayrl.random, against torch/TorchRL."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, Linear, NormalParamExtractor, Sequential
from arrayrl.modules.actors import ValueOperator
from arrayrl.random import make_generator

BACKEND_NAMES = ["numpy", "torch", "array_api_strict"]


def _torch_mlp(ours: MLP):
    torch = pytest.importorskip("torch")
    from torchrl.modules import MLP as TorchRLMLP

    theirs = TorchRLMLP(
        in_features=ours.in_features, out_features=ours.out_features, num_cells=ours.num_cells
    ).double()
    theirs.load_state_dict(
        {k: torch.as_tensor(np.asarray(v)) for k, v in ours.named_parameters().items()}
    )
    return theirs


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_mlp_matches_torchrl_mlp(backend: str) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip(backend)
    ours = MLP(5, 3, [16, 8], seed=3, backend=backend, dtype=None)
    reference = MLP(5, 3, [16, 8], seed=3, dtype=np.float64)
    theirs = _torch_mlp(reference)
    x = np.random.default_rng(0).standard_normal((7, 5))
    expected = theirs(torch.as_tensor(x)).detach().numpy()
    got = ours(ours.backend.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(ours.backend.to_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_mlp_defaults_and_names_follow_torchrl() -> None:
    from torchrl.modules import MLP as TorchRLMLP

    ours, theirs = MLP(4, 2, depth=2), TorchRLMLP(in_features=4, out_features=2, depth=2)
    assert list(ours.named_parameters()) == list(theirs.state_dict())
    assert [tuple(v.shape) for v in ours.parameters()] == [
        tuple(v.shape) for v in theirs.state_dict().values()
    ]


def test_same_seed_same_weights_on_every_backend() -> None:
    pytest.importorskip("torch")
    a = MLP(3, 2, [4], seed=11)
    b = MLP(3, 2, [4], seed=11, backend="torch")
    c = MLP(3, 2, [4], seed=12)
    for name, value in a.named_parameters().items():
        np.testing.assert_array_equal(value, b.named_parameters()[name].detach().numpy())
    assert not np.array_equal(a.parameters()[0], c.parameters()[0])


def test_torch_parameters_are_trainable_leaves() -> None:
    torch = pytest.importorskip("torch")
    mlp = MLP(3, 1, [4], backend="torch")
    assert all(p.requires_grad and p.is_leaf for p in mlp.parameters())
    mlp(torch.ones(2, 3)).sum().backward()
    assert all(p.grad is not None for p in mlp.parameters())


def test_normal_param_extractor_matches_tensordict() -> None:
    torch = pytest.importorskip("torch")
    from tensordict.nn import NormalParamExtractor as TorchExtractor

    x = np.random.default_rng(1).standard_normal((6, 4)) * 10
    loc, scale = NormalParamExtractor()(x)
    t_loc, t_scale = TorchExtractor()(torch.as_tensor(x))
    np.testing.assert_allclose(loc, t_loc.numpy())
    # TensorDict computes the softplus shift in float32, hence ~2e-8 relative.
    np.testing.assert_allclose(scale, t_scale.numpy(), rtol=1e-6)
    assert scale.min() > 0
    with pytest.raises(ValueError, match="even"):
        NormalParamExtractor()(np.ones((2, 3)))


def test_apply_with_other_params_is_pure() -> None:
    layer = Linear(3, 2, seed=0)
    other = {k: v * 0 for k, v in layer.params.items()}
    x = np.ones((4, 3), np.float32)
    before = layer(x)
    np.testing.assert_array_equal(layer.apply(other, x), np.zeros((4, 2), np.float32))
    np.testing.assert_array_equal(layer(x), before)


def test_dict_module_reads_and_writes_keys() -> None:
    module = DictModule(
        Sequential(MLP(3, 4, [8]), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    batch = ArrayDict({"observation": np.zeros((5, 3), np.float32)}, [5])
    out = module(batch)
    assert out is batch and out["loc"].shape == (5, 2) and out["scale"].shape == (5, 2)
    with pytest.raises(KeyError, match="observation"):
        module(ArrayDict({"obs": np.zeros((5, 3), np.float32)}, [5]))


def test_value_operator_default_keys_follow_torchrl() -> None:
    assert ValueOperator(MLP(3, 1)).out_keys == ["state_value"]
    critic = ValueOperator(MLP(4, 1), in_keys=["observation", "action"])
    assert critic.out_keys == ["state_action_value"]


def test_module_to_moves_parameters() -> None:
    torch = pytest.importorskip("torch")
    critic = ValueOperator(MLP(3, 1, [4]))
    critic.to("torch")
    assert all(isinstance(p, torch.Tensor) and p.requires_grad for p in critic.parameters())
    out = critic(ArrayDict({"observation": torch.zeros(2, 3)}, [2]))
    assert isinstance(out["state_value"], torch.Tensor)


def test_params_and_batch_on_different_backends_raise() -> None:
    pytest.importorskip("torch")
    critic = ValueOperator(MLP(3, 1, [4], backend="torch"))
    with pytest.raises(TypeError, match="different backends"):
        critic(ArrayDict({"observation": np.zeros((2, 3), np.float32)}, [2]))


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
def test_generator_is_reproducible_and_seed_dependent(backend: str) -> None:
    pytest.importorskip(backend)
    a, b, c = (make_generator(s, backend) for s in (5, 5, 6))
    first, second, third = (g.backend.to_numpy(g.normal((100,))) for g in (a, b, c))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)
    assert abs(first.mean()) < 0.4 and 0.6 < first.std() < 1.4
    u = a.backend.to_numpy(a.uniform((1000,)))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.05
    perm = a.backend.to_numpy(a.permutation(10))
    assert sorted(perm.tolist()) == list(range(10))


def test_numpy_sourced_mode_gives_the_same_noise_everywhere() -> None:
    pytest.importorskip("torch")
    ours = make_generator(3, "torch", mode="numpy").normal((4, 2), dtype=None)
    reference = make_generator(3, "numpy").normal((4, 2))
    np.testing.assert_array_equal(ours.numpy(), reference)


def test_generator_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="mode"):
        make_generator(0, mode="global")
    with pytest.raises(ValueError, match="seed"):
        make_generator(-1)


def test_mlp_without_cells_is_one_linear_layer_as_torchrl() -> None:
    from torchrl.modules import MLP as TorchRLMLP

    assert list(MLP(4, 2).named_parameters()) == list(
        TorchRLMLP(in_features=4, out_features=2).state_dict()
    )
    with pytest.raises(ValueError, match="depth"):
        MLP(4, 2, 8)
