"""RNDLoss and RunningMeanStd against TorchRL 0.14.1 and against NumPy formulas.

RunningMeanStd: the same statistics as TorchRL's after the same batches (bit for bit on
float32), the moments of the union of the batches whatever the split (hypothesis), every
backend, the live view of a TorchRL instance, bad input. RNDLoss: TorchRL's numbers and
gradients on the same plain ``nn.Module`` s and, after the same ``torch.manual_seed``,
the same update mask; the equation computed by hand in NumPy on arrayrl's MLPs; the
frozen target; the intrinsic reward against TorchRL's ``RNDTransform``; bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.envs.transforms.rnd import RNDTransform  # noqa: E402
from torchrl.envs.transforms.rnd import RunningMeanStd as TorchRLRunningMeanStd  # noqa: E402
from torchrl.objectives import RNDLoss as TorchRLRNDLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, flatten_params  # noqa: E402
from arrayrl.modules.adapt import as_running_mean_std  # noqa: E402
from arrayrl.modules.running_mean_std import RunningMeanStd  # noqa: E402
from arrayrl.objectives.rnd import RNDLoss, prediction_error  # noqa: E402

OBS, FEATURES = 4, 6
EXACT = dict(rtol=0.0, atol=0.0)


# -- RunningMeanStd ------------------------------------------------------------------------------
def _fold_numpy(batches, shape, epsilon=1e-4):
    """The pooled moments, by hand in float64: the prior pseudo-batch (``epsilon``
    samples, mean 0, variance 1) together with every sample of ``batches``."""
    k = len(shape)
    rows = (
        np.concatenate([np.reshape(b, (-1, *shape)) for b in batches])
        if k
        else np.concatenate([np.reshape(b, -1) for b in batches])
    )
    n = rows.shape[0]
    total = epsilon + n
    mean = rows.sum(axis=0) / total
    second = (epsilon * 1.0 + (rows**2).sum(axis=0)) / total  # E[x²]; the prior's is 1 + 0²
    return mean, second - mean**2, total


@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_running_mean_std_matches_torchrl_bit_for_bit(shape):
    rng = np.random.default_rng(0)
    ours, theirs = RunningMeanStd(shape), TorchRLRunningMeanStd(shape)
    for n in (5, 1, 9, 2):
        x = torch.from_numpy((3.0 * rng.standard_normal((n, 2, *shape)) + 1.0).astype(np.float32))
        ours.update(x)
        theirs.update(x)
    for name in ("mean", "var", "count"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name), **EXACT)
    x = torch.randn(7, *shape)
    torch.testing.assert_close(ours.normalize(x), theirs.normalize(x), **EXACT)
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"mean", "var", "count"}


def test_running_mean_std_integer_batches_and_torchrl_state():
    ours, theirs = RunningMeanStd((3,), epsilon=0.5), TorchRLRunningMeanStd((3,), epsilon=0.5)
    x = torch.arange(12).reshape(4, 3)  # int64: both cast to float32
    ours.update(x)
    theirs.update(x)
    torch.testing.assert_close(ours.var, theirs.var, **EXACT)
    fresh = RunningMeanStd((3,)).load_state_dict(theirs.state_dict())
    torch.testing.assert_close(torch.as_tensor(fresh.mean), theirs.mean, **EXACT)
    assert fresh.mean.dtype == np.float32


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    splits=st.lists(st.integers(0, 30), max_size=4),
    seed=st.integers(0, 2**16),
    scalar=st.booleans(),
)
def test_running_mean_std_any_split_gives_the_moments_of_the_union(sizes, splits, seed, scalar):
    shape = () if scalar else (2,)
    rng = np.random.default_rng(seed)
    data = 2.0 * rng.standard_normal((sum(sizes), *shape)) - 0.5
    mean, var, total = _fold_numpy([data], shape)
    cuts = sorted({min(c, len(data)) for c in splits})
    for batches in (np.split(data, np.cumsum(sizes)[:-1]), np.split(data, cuts)):
        rms = RunningMeanStd(shape)
        for batch in batches:
            rms.update(batch)  # empty pieces included: they change nothing
        np.testing.assert_allclose(rms.mean, mean, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(rms.var, var, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(rms.count, total, rtol=1e-6)


def test_running_mean_std_on_every_backend(xp):
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((n, 3)) for n in (4, 1, 6)]
    mean, var, total = _fold_numpy(batches, (3,))
    rms = RunningMeanStd((3,))
    for batch in batches:
        rms.update(xp.to(batch))
    np.testing.assert_allclose(xp.back(rms.mean), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xp.back(rms.var), var, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xp.back(rms.count), total, rtol=1e-6)
    x = rng.standard_normal((5, 3))
    expected = (x - xp.back(rms.mean)) / np.sqrt(xp.back(rms.var))
    np.testing.assert_allclose(xp.back(rms.normalize(xp.to(x))), expected, rtol=1e-5)
    assert xp.back(rms.mean).dtype == np.float32


def test_running_mean_std_normalize_floors_the_variance():
    rms = RunningMeanStd((2,)).load_state_dict(
        {"mean": np.zeros(2), "var": np.array([0.0, 4.0]), "count": np.asarray(3.0)}
    )
    np.testing.assert_allclose(rms.normalize(np.array([[1e-4, 2.0]])), [[1.0, 1.0]], rtol=1e-6)


def test_running_mean_std_refuses_bad_input():
    rms = RunningMeanStd((3,))
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        rms.update(np.zeros((8, 2)))  # TorchRL would reshape it to (-1, 3)... or raise
    with pytest.raises(TypeError, match="must be an array"):
        rms.update([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="epsilon"):
        RunningMeanStd((3,), epsilon=-1.0)
    with pytest.raises(ValueError, match="shape"):
        RunningMeanStd((0,))
    before = {k: np.array(v) for k, v in rms.state_dict().items()}
    rms.update(np.zeros((0, 3)))  # empty: TorchRL folds a NaN mean in
    for name, value in rms.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    rms.update(np.ones((2, 3)))
    with pytest.raises(TypeError, match="move the normaliser"):
        rms.update(torch.ones(2, 3))


def test_torchrl_running_mean_std_is_shared_live():
    theirs = TorchRLRunningMeanStd((3,))
    view = as_running_mean_std(theirs, owner="test")
    theirs.update(torch.randn(10, 3) + 2.0)  # e.g. RNDTransform during collection
    torch.testing.assert_close(view.mean, theirs.mean, **EXACT)
    x = torch.randn(4, 3)
    torch.testing.assert_close(view.normalize(x), theirs.normalize(x), **EXACT)
    mean_buffer = theirs.mean
    view.update(torch.randn(6, 3))  # written into TorchRL's buffers, in place
    assert theirs.mean is mean_buffer
    assert float(theirs.count) == pytest.approx(16.0001, rel=1e-6)
    with pytest.raises(TypeError, match="RunningMeanStd"):
        as_running_mean_std(object(), owner="RNDLoss")


# -- RNDLoss against TorchRL ----------------------------------------------------------------------
def _torch_networks(seed=1, dtype=torch.float32):
    torch.manual_seed(seed)

    def mlp():
        return torch.nn.Sequential(
            torch.nn.Linear(OBS, 16), torch.nn.ReLU(), torch.nn.Linear(16, FEATURES)
        ).to(dtype)

    return mlp(), mlp()


def _batch(shape=(32,), seed=2):
    obs = 3.0 * torch.randn(*shape, OBS, generator=torch.Generator().manual_seed(seed)) + 0.5
    return TensorDict({"next": {"observation": obs}}, batch_size=list(shape))


@pytest.mark.parametrize("update_fraction", [1.0, 0.25, 0.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_rms", [False, True])
def test_rnd_matches_torchrl_on_the_same_modules_and_seed(update_fraction, reduction, with_rms):
    rms = TorchRLRunningMeanStd((OBS,))
    rms.update(2.0 * torch.randn(50, OBS) - 1.0)
    batch = _batch((4, 8))
    results = []
    for cls in (TorchRLRNDLoss, RNDLoss):
        predictor, target = _torch_networks()
        loss = cls(
            predictor,
            target,
            obs_rms=rms if with_rms else None,
            update_fraction=update_fraction,
            reduction=reduction,
        )
        torch.manual_seed(7)  # the update mask
        out = loss(batch)
        value = out["loss_predictor"]
        grads = torch.autograd.grad(value.sum(), list(predictor.parameters()), allow_unused=True)
        results.append((type(out), value, grads))
    (t_type, t_value, t_grads), (a_type, a_value, a_grads) = results
    assert a_type is t_type is TensorDict
    torch.testing.assert_close(a_value, t_value, **EXACT)
    for t_grad, a_grad in zip(t_grads, a_grads):
        torch.testing.assert_close(a_grad, t_grad, **EXACT)


@pytest.mark.parametrize("valid", [[True, False, False, False], [True, True, False, True]])
def test_rnd_masked_mean_divides_by_the_kept_valid_count(valid):
    batch = _batch((4,))
    batch["collector", "mask"] = torch.tensor(valid)
    values = []
    for cls in (TorchRLRNDLoss, RNDLoss):
        predictor, target = _torch_networks()
        torch.manual_seed(0)
        values.append(cls(predictor, target, update_fraction=0.9999)(batch)["loss_predictor"])
    torch.testing.assert_close(values[1], values[0], **EXACT)
    per_sample = RNDLoss(*_torch_networks(), update_fraction=1.0, reduction="none")(batch)
    expected = per_sample["loss_predictor"].detach().sum() / sum(valid)
    torch.testing.assert_close(values[1].detach(), expected)


def test_rnd_zero_kept_gives_zero_not_nan():
    predictor, target = _torch_networks()
    loss = RNDLoss(predictor, target, update_fraction=0.0)
    value = loss(_batch())["loss_predictor"]
    assert float(value.detach()) == 0.0
    (grad,) = torch.autograd.grad(value, [next(predictor.parameters())])
    assert torch.count_nonzero(grad) == 0


# -- RNDLoss against the equation in NumPy --------------------------------------------------------
def _features_numpy(mlp, obs):
    """An arrayrl MLP (Linear, tanh, Linear) applied by hand in float64."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in flatten_params(mlp.params).items()}
    hidden = np.tanh(obs @ p["0.weight"].T + p["0.bias"])
    return hidden @ p["2.weight"].T + p["2.bias"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_rnd_equation_by_hand_with_rms_clip_and_mask(xp, reduction):
    rng = np.random.default_rng(3)
    shape, fraction, clip, seed = (5, 6), 0.4, 1.5, 11
    predictor = MLP(OBS, FEATURES, [8], seed=1, dtype=np.float64)
    target = MLP(OBS, FEATURES, [8], seed=2, dtype=np.float64)
    mean, var = rng.standard_normal(OBS), rng.uniform(0.5, 2.0, OBS)
    rms = RunningMeanStd((OBS,)).load_state_dict(
        {"mean": mean, "var": var, "count": np.asarray(9.0)}
    )
    obs = 2.0 * rng.standard_normal((*shape, OBS))
    valid = rng.random(shape) < 0.7
    # by hand: normalise with the float32 statistics, clip, error, Bernoulli mask
    mean32, std32 = mean.astype(np.float32), np.sqrt(var.astype(np.float32))
    x = np.clip((obs - mean32) / std32, -clip, clip)
    error = ((_features_numpy(predictor, x) - _features_numpy(target, x)) ** 2).mean(-1)
    keep = np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32) < fraction
    kept = np.where(keep & valid, error, 0.0)
    expected = {"mean": kept.sum() / max(1, (keep & valid).sum()), "sum": kept.sum()}.get(
        reduction, kept
    )
    loss = RNDLoss(
        predictor,
        target,
        obs_rms=rms,
        obs_clip=clip,
        update_fraction=fraction,
        reduction=reduction,
        seed=seed,
    )
    loss.generator_mode = "numpy"
    backend = {"torch-cuda": "torch"}.get(xp.name, xp.name)
    loss.to(backend, "cuda" if xp.name == "torch-cuda" else None)
    batch = ArrayDict(
        {"next": {"observation": xp.to(obs)}, "collector": {"mask": xp.to(valid)}}, shape
    )
    value = xp.back(loss(batch)["loss_predictor"])
    np.testing.assert_allclose(value, expected, rtol=1e-9, atol=1e-12)
    reward = xp.back(loss.intrinsic_reward(batch))
    np.testing.assert_allclose(reward, error[..., None], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("normalize_reward", [False, True])
def test_rnd_intrinsic_reward_matches_torchrl_transform(normalize_reward):
    predictor, target = _torch_networks()
    transform = RNDTransform(target, predictor, normalize_reward=normalize_reward, reward_clip=2.0)
    loss, reward_rms = None, RunningMeanStd(())
    for step in range(3):  # training: both fold the observations and rewards in, then score
        next_td = _batch((8,), seed=step)["next"]
        transform._step(TensorDict({}, [8]), next_td)
        loss = loss or RNDLoss(predictor, target, obs_rms=transform.obs_rms)
        reward = loss.intrinsic_reward(
            TensorDict({"next": next_td}, [8]),
            reward_rms=reward_rms if normalize_reward else None,
            reward_clip=2.0,
        )
        assert not reward.requires_grad
        torch.testing.assert_close(reward, next_td["intrinsic_reward"], **EXACT)
    if normalize_reward:
        torch.testing.assert_close(reward_rms.var, transform.reward_rms.var, **EXACT)


# -- the target network is frozen, the predictor learns ------------------------------------------
def test_rnd_trains_the_predictor_only():
    predictor, target = _torch_networks()
    before = [p.detach().clone() for p in target.parameters()]
    loss = RNDLoss(predictor, target, update_fraction=1.0)
    names = [name for name, _ in loss.named_parameters()]
    assert names and all(name.startswith("predictor_network_params.") for name in names)
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
    batch = _batch((64,))
    first = float(loss(batch)["loss_predictor"].detach())
    for _ in range(30):
        optimizer.zero_grad()
        loss(batch)["loss_predictor"].backward()
        optimizer.step()
    assert float(loss(batch)["loss_predictor"].detach()) < 0.5 * first
    for old, new in zip(before, target.parameters()):
        torch.testing.assert_close(new, old, **EXACT)
        assert new.grad is None


def test_rnd_float64_networks_compute_in_float64_and_state_round_trips():
    predictor = MLP(OBS, FEATURES, [8], seed=1, dtype=np.float64)
    target = MLP(OBS, FEATURES, [8], seed=2, dtype=np.float64)
    rms = RunningMeanStd((OBS,))
    loss = RNDLoss(predictor, target, obs_rms=rms, update_fraction=1.0)
    obs = np.random.default_rng(0).integers(0, 5, (6, OBS))  # integer observations
    batch = ArrayDict({"next": {"observation": obs}}, [6])
    value = loss(batch)["loss_predictor"]
    assert value.dtype == np.float64
    assert obs.dtype == np.int64  # the caller's array is left as it was
    state = loss.state_dict()
    assert {"obs_rms.mean", "obs_rms.var", "obs_rms.count"} <= set(state)
    other = RNDLoss(
        MLP(OBS, FEATURES, [8], seed=5, dtype=np.float64),
        MLP(OBS, FEATURES, [8], seed=6, dtype=np.float64),
        obs_rms=RunningMeanStd((OBS,)),
        update_fraction=1.0,
    )
    other.load_state_dict(state)
    np.testing.assert_array_equal(other(batch)["loss_predictor"], value)


# -- bad input ------------------------------------------------------------------------------------
def _arrayrl_pair():
    return MLP(OBS, FEATURES, [8], seed=1), MLP(OBS, FEATURES, [8], seed=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"update_fraction": 1.5}, ValueError, "update_fraction"),
        ({"update_fraction": float("nan")}, ValueError, "update_fraction"),
        ({"obs_clip": -1.0}, ValueError, "obs_clip"),
        ({"reduction": "max"}, ValueError, "reduction"),
        ({"obs_rms": {"mean": 0}}, TypeError, "obs_rms"),
        ({"bogus": 1}, TypeError, "bogus"),
    ],
)
def test_rnd_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        RNDLoss(*_arrayrl_pair(), **kwargs)


def test_rnd_rejects_dict_modules_and_mismatched_features():
    net = torch.nn.Linear(OBS, FEATURES)
    with pytest.raises(TypeError, match=r"predictor_network.*\.module"):
        RNDLoss(TensorDictModule(net, ["observation"], ["f"]), net)
    loss = RNDLoss(MLP(OBS, FEATURES, [8]), MLP(OBS, FEATURES + 1, [8]), update_fraction=1.0)
    batch = ArrayDict({"next": {"observation": np.zeros((3, OBS), np.float32)}}, [3])
    with pytest.raises(ValueError, match="same feature shape"):
        loss(batch)
    with pytest.raises(ValueError, match="same feature shape"):
        prediction_error(np.zeros((3, 2)), np.zeros((3, 1)))


def test_rnd_missing_key_names_set_keys():
    loss = RNDLoss(*_arrayrl_pair())
    batch = ArrayDict({"observation": np.zeros((3, OBS), np.float32)}, [3])
    with pytest.raises(KeyError, match=r"set_keys\(observation="):
        loss(batch)
    loss.set_keys(observation="observation")
    assert loss.in_keys == ["observation"]
    assert loss(batch)["loss_predictor"].shape == ()
