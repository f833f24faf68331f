"""BatchRenorm1d and CrossQLoss against TorchRL 0.14.1: outputs, gradients and running
statistics over several steps, in training and evaluation mode; the deviations (warm-up
factor, priority weights); NumPy against torch with arrayrl modules; state dicts."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from arrayrl.backends import backend_of

from arrayrl.data import ArrayDict
from arrayrl.modules import (
    MLP,
    BatchRenorm1d,
    DictModule,
    Layer,
    Linear,
    NormalParamExtractor,
    ProbabilisticActor,
    ReLU,
    Sequential,
)
from arrayrl.modules import ValueOperator as ArrayValueOperator
from arrayrl.modules.batchrenorm import load_buffers, module_buffers, training_mode
from arrayrl.modules.distributions import TanhNormal
from arrayrl.objectives import CrossQLoss

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

LOSS_TERMS = ("loss_actor", "loss_qvalue", "loss_alpha")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _quiet(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


# =========================================================================================
# BatchRenorm1d
# =========================================================================================
def _layers(dtype, num=4, seed=0, **kwargs):
    """TorchRL's layer with random affine parameters and statistics, and ours loaded
    from its state dict (torch backend)."""
    from torchrl.modules import BatchRenorm1d as TorchRLBatchRenorm

    g = torch.Generator().manual_seed(seed)
    theirs = TorchRLBatchRenorm(num, **kwargs).to(dtype)
    with torch.no_grad():
        theirs.weight.copy_(torch.rand(num, generator=g) + 0.5)
        theirs.bias.copy_(torch.randn(num, generator=g))
        theirs.running_mean.copy_(torch.randn(num, generator=g) * 0.3)
        theirs.running_var.copy_(torch.rand(num, generator=g) + 0.5)
    mine = BatchRenorm1d(num, backend="torch", dtype=dtype, **kwargs)
    mine.load_state_dict(theirs.state_dict())
    return theirs, mine


def _assert_same_layer_state(theirs, mine):
    state = mine.state_dict()
    for name, value in theirs.state_dict().items():
        torch.testing.assert_close(state[name].detach(), value, msg=name)


@pytest.mark.parametrize("smooth", [False, True], ids=["step", "smooth"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_batchrenorm_matches_torchrl_in_training_and_evaluation(dtype, smooth):
    dtype = DTYPES[dtype]
    kwargs = {"momentum": 0.2, "warmup_steps": 3, "smooth": smooth, "max_r": 1.5, "max_d": 0.5}
    theirs, mine = _layers(dtype, **kwargs)
    g = torch.Generator().manual_seed(1)
    steps = 4 if smooth else 6  # TorchRL's growing warm-up factor: see the test below
    for step in range(steps):  # through the warm-up (and past it, < 2·warmup_steps)
        x = (torch.randn(7, 4, generator=g, dtype=dtype) * 2 + step).requires_grad_(True)
        x_mine = x.detach().clone().requires_grad_(True)
        y_theirs, y_mine = theirs(x), mine(x_mine)
        torch.testing.assert_close(y_mine, y_theirs, msg=f"step {step}")
        weights = torch.randn(7, 4, generator=g, dtype=dtype)
        g_theirs = torch.autograd.grad((y_theirs * weights).sum(), [x, theirs.weight, theirs.bias])
        g_mine = torch.autograd.grad((y_mine * weights).sum(),
                                     [x_mine, mine.params["weight"], mine.params["bias"]])
        for a, b in zip(g_mine, g_theirs):
            torch.testing.assert_close(a, b, msg=f"gradient, step {step}")
        _assert_same_layer_state(theirs, mine)
        assert not any(v.requires_grad for v in mine.buffers.values())
    theirs.eval(), mine.eval()
    x = torch.randn(5, 4, generator=g, dtype=dtype)
    torch.testing.assert_close(mine(x), theirs(x))
    _assert_same_layer_state(theirs, mine)  # evaluation updates nothing
    assert int(mine.buffers["num_batches_tracked"]) == steps


def test_batchrenorm_three_dim_input_normalises_axis_one():
    theirs, mine = _layers(torch.float64, num=3, warmup_steps=1)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(mine(x), theirs(x))
    torch.testing.assert_close(mine.buffers["running_mean"], theirs.running_mean)
    # deviation: the unbiased variance counts the N·L reduced elements (TorchRL: N)
    var = x.var(dim=(0, 2), unbiased=False)
    prior = mine.buffers["running_var"]
    torch.testing.assert_close(
        mine.buffers["running_var"],
        prior * 0 + (theirs.running_var - 0.01 * (var * 6 / 5 - var * 30 / 29)),
    )
    theirs.eval(), mine.eval()
    mine.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(mine(x), theirs(x))


def test_batchrenorm_warmup_factor_stops_at_one():
    """TorchRL's ``clamp_max`` is not in place: its factor reaches 2 at 2·warmup_steps.
    Ours equals TorchRL's layer whose counter is clamped as intended."""
    theirs, mine = _layers(torch.float64, warmup_steps=2)
    buggy = copy.deepcopy(theirs)
    g = torch.Generator().manual_seed(2)
    differs = False
    for step in range(6):
        x = torch.randn(8, 4, generator=g, dtype=torch.float64) * 3 + 1
        y_mine, y_buggy = mine(x), buggy(x)
        torch.testing.assert_close(y_mine, theirs(x), msg=f"step {step}")
        with torch.no_grad():
            theirs.num_batches_tracked.clamp_(max=2)
        differs |= not torch.allclose(y_mine, y_buggy)
    assert differs
    assert int(mine.buffers["num_batches_tracked"]) == 6  # the counter counts, as TorchRL's


def test_batchrenorm_on_numpy_and_stacked_members():
    theirs, _ = _layers(torch.float64, warmup_steps=2)
    mine = BatchRenorm1d(4, warmup_steps=2, dtype=np.float64)
    mine.load_state_dict(theirs.state_dict())
    stacked = BatchRenorm1d(4, warmup_steps=2, dtype=np.float64)
    stacked.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(0)
    shift = np.array([0.5, -0.5])[:, None, None]
    other = copy.deepcopy(theirs)
    params = {k: np.stack([v, v * 2]) for k, v in mine.params.items()}
    for _ in range(4):
        x = rng.standard_normal((2, 6, 4)) + shift
        got = mine(x[0])
        np.testing.assert_allclose(got, theirs(torch.from_numpy(x[0])).detach().numpy(),
                                   rtol=1e-12, atol=1e-12)
        both = stacked.apply(params, x)  # two members, per-member statistics
        np.testing.assert_allclose(both[0], got, rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            other.weight.copy_(theirs.weight * 2), other.bias.copy_(theirs.bias * 2)
        expected = other(torch.from_numpy(x[1])).detach().numpy()
        np.testing.assert_allclose(both[1], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stacked.buffers["running_mean"][1], other.running_mean.numpy())
    assert stacked.buffers["num_batches_tracked"].tolist() == [4, 4]
    with pytest.raises(ValueError, match="member axis first"):
        stacked.apply(params, x[0, 0])


def test_batchrenorm_state_dict_and_checks():
    layer = BatchRenorm1d(3)
    state = layer.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var",
                           "num_batches_tracked"]
    assert state["num_batches_tracked"].dtype == np.int64 and layer.params.keys() == {
        "weight", "bias"}  # buffers stay out of the parameter tree
    with pytest.raises(KeyError, match="missing"):
        layer.load_state_dict({"weight": np.ones(3)})
    with pytest.raises(ValueError, match="shape"):
        layer.load_state_dict({**state, "running_mean": np.zeros(4)})
    with pytest.raises(ValueError, match="C = 3"):
        layer(np.zeros((2, 4)))
    with pytest.raises(ValueError):
        BatchRenorm1d(3, momentum=2.0)
    layer.to("torch")
    assert layer.params["weight"].requires_grad
    assert not layer.buffers["running_var"].requires_grad
    assert layer.eval().training is False and layer.train().training is True


def test_module_buffers_and_modes_of_torch_and_arrayrl_modules():
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import BatchRenorm1d as TorchRLBatchRenorm

    critic = ArrayValueOperator(Sequential(Linear(5, 8), BatchRenorm1d(8), ReLU(),
                                           Linear(8, 1)), in_keys=["observation", "action"])
    assert sorted(module_buffers(critic)) == [
        "module.1.num_batches_tracked", "module.1.running_mean", "module.1.running_var"]
    net = TorchRLMLP(5, 1, num_cells=[8], norm_class=TorchRLBatchRenorm,
                     norm_kwargs={"num_features": 8})
    assert sorted(module_buffers(net)) == ["1.num_batches_tracked", "1.running_mean",
                                           "1.running_var"]
    load_buffers(net, {"1.running_mean": torch.ones(8)})
    assert net[1].running_mean.sum() == 8
    net[1].eval()
    with training_mode(net, True), training_mode(critic, False):
        assert net.training and net[1].training and not critic.module[1].training
    assert net.training and not net[1].training and critic.module[1].training


# =========================================================================================
# CrossQLoss against TorchRL
# =========================================================================================
def _torchrl_modules(obs=3, act=2, seed=0, renorm=True, dtype=torch.float32):
    from tensordict.nn import TensorDictModule
    from tensordict.nn.distributions import NormalParamExtractor as TDNormalParamExtractor
    from torchrl.data import Bounded
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import BatchRenorm1d as TorchRLBatchRenorm
    from torchrl.modules import ProbabilisticActor as TRActor
    from torchrl.modules import TanhNormal as TRTanhNormal
    from torchrl.modules import ValueOperator

    torch.manual_seed(seed)
    actor = TRActor(
        TensorDictModule(
            torch.nn.Sequential(TorchRLMLP(obs, 2 * act, num_cells=[8]), TDNormalParamExtractor()),
            in_keys=["observation"], out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"], distribution_class=TRTanhNormal,
        spec=Bounded(-1.0, 1.0, shape=(act,)),
    )
    norm = {"norm_class": TorchRLBatchRenorm,
            "norm_kwargs": {"num_features": 8, "warmup_steps": 2, "momentum": 0.1}}
    qnet = TorchRLMLP(obs + act, 1, num_cells=[8], activation_class=torch.nn.ReLU,
                      **(norm if renorm else {}))
    qvalue = ValueOperator(qnet, in_keys=["observation", "action"])
    return actor.to(dtype), qvalue.to(dtype)


def _batch(shape=(6,), obs=3, act=2, seed=1, dtype=torch.float32):
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    done = torch.rand(*shape, 1, generator=g) < 0.3
    data = {
        "observation": torch.randn(*shape, obs, generator=g, dtype=dtype),
        "action": torch.rand(*shape, act, generator=g, dtype=dtype) * 2 - 1,
        "next": {
            "observation": torch.randn(*shape, obs, generator=g, dtype=dtype),
            "reward": torch.randn(*shape, 1, generator=g, dtype=dtype),
            "done": done,
            "terminated": done & (torch.rand(*shape, 1, generator=g) < 0.5),
        },
    }
    return TensorDict(data, list(shape))


def _both(kwargs, seed=3, **modules):
    """TorchRL's loss and ours from copies of the same modules, members drawn alike."""
    from torchrl.objectives import CrossQLoss as TorchRLCrossQ

    actor, qvalue = _torchrl_modules(**modules)
    torch.manual_seed(seed)
    theirs = _quiet(lambda: TorchRLCrossQ(actor, qvalue, **kwargs))
    torch.manual_seed(seed)
    mine = _quiet(lambda: CrossQLoss(copy.deepcopy(actor), copy.deepcopy(qvalue), **kwargs))
    return theirs, mine


def _their_buffers(loss):
    return {".".join(k): v for k, v in loss.qvalue_network_params.items(True, True)
            if k[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def _grouped(named):
    groups: dict[str, list] = {}
    for name, leaf in named:
        groups.setdefault(name.split(".")[0], []).append(leaf)
    return groups


def _assert_same_outputs(out_theirs, out_mine, grads, theirs, mine):
    assert list(out_mine.keys()) == list(out_theirs.keys())
    for key in out_theirs.keys():
        assert out_mine[key].shape == out_theirs[key].shape, key
        torch.testing.assert_close(out_mine[key].detach(), out_theirs[key].detach(), msg=key)
    if not grads:
        return
    their_params, my_params = _grouped(theirs.named_parameters()), _grouped(mine.named_parameters())
    assert sorted(their_params) == sorted(my_params)
    for term in LOSS_TERMS:
        assert out_mine[term].requires_grad == out_theirs[term].requires_grad, term
        if not out_theirs[term].requires_grad:
            continue
        for group, leaves in their_params.items():
            g_theirs = torch.autograd.grad(out_theirs[term].sum(), leaves, retain_graph=True,
                                           allow_unused=True)
            g_mine = torch.autograd.grad(out_mine[term].sum(), my_params[group],
                                         retain_graph=True, allow_unused=True)
            for a, b in zip(g_mine, g_theirs):
                if a is None or b is None:
                    assert (a is None or not a.any()) and (b is None or not b.any()), (term, group)
                else:
                    torch.testing.assert_close(a, b, msg=f"{term} / {group}")


CASES = {
    "default-f32": ({}, {}),
    "default-f64": ({}, {"dtype": torch.float64}),
    "3q-sum-entropy": ({"num_qvalue_nets": 3, "reduction": "sum", "target_entropy": -0.5}, {}),
    "fixed-l2": ({"fixed_alpha": True, "alpha_init": 0.3, "loss_function": "l2"},
                 {"dtype": torch.float64}),
    "bounds-l1": ({"alpha_init": 0.5, "min_alpha": 0.8, "max_alpha": 2.0,
                   "loss_function": "l1"}, {}),
    "none-exclude": ({"reduction": "none", "scalar_output_mode": "exclude"}, {}),
    "separate": ({"separate_losses": True}, {}),
}


@pytest.mark.parametrize("case", list(CASES), ids=str)
def test_crossq_matches_torchrl_over_steps(case):
    kwargs, modules = CASES[case]
    theirs, mine = _both(kwargs, **modules)
    dtype = modules.get("dtype", torch.float32)
    for step in range(3):
        batch = _batch(seed=step, dtype=dtype)
        torch.manual_seed(10 + step)
        out_theirs = _quiet(lambda b=batch: theirs(b.clone()))
        torch.manual_seed(10 + step)
        out_mine = mine(batch.clone())
        _assert_same_outputs(out_theirs, out_mine, step == 0, theirs, mine)
        mine_buffers = mine.buffers()
        for name, value in _their_buffers(theirs).items():
            torch.testing.assert_close(mine_buffers[name], value, msg=f"{name}, step {step}")
    # the user's module keeps its own statistics, as TorchRL's
    assert int(module_buffers(mine.qvalue_network)["module.1.num_batches_tracked"]) == 0


def test_crossq_time_batches_and_td1_match_torchrl():
    from torchrl.objectives import ValueEstimators

    theirs, mine = _both({"num_qvalue_nets": 2}, renorm=False)
    for loss in (theirs, mine):
        loss.make_value_estimator(ValueEstimators.TDLambda, gamma=0.9, lmbda=0.8)
    batch = _batch(shape=(3, 4))
    torch.manual_seed(5)
    out_theirs = theirs(batch.clone())
    torch.manual_seed(5)
    out_mine = mine(batch.clone())
    _assert_same_outputs(out_theirs, out_mine, True, theirs, mine)
    assert out_mine["td_error"].shape == (3, 4)


def test_crossq_priority_weights_are_honoured_a_deviation():
    theirs, mine = _both({})
    batch = _batch()
    batch["priority_weight"] = torch.rand(6, 1) + 0.5
    torch.manual_seed(1)
    out_theirs = theirs(batch.clone())
    mine.use_prioritized_weights = False  # TorchRL's behaviour: the weights are ignored
    torch.manual_seed(1)
    _assert_same_outputs(out_theirs, mine(batch.clone()), False, theirs, mine)
    weighted = _both({})[1]
    plain = _both({"reduction": "none", "scalar_output_mode": "exclude"})[1]
    plain.use_prioritized_weights = False
    torch.manual_seed(1)
    out = weighted(batch.clone())
    torch.manual_seed(1)
    per_sample = plain(batch.clone())
    w = batch["priority_weight"][:, 0]
    for term in LOSS_TERMS:
        torch.testing.assert_close(out[term], (per_sample[term] * w).sum() / w.sum(), msg=term)


def test_crossq_actor_loss_runs_the_critics_in_evaluation_mode():
    mine = _both({})[1]
    qnet = mine.qvalue_network.module
    before = mine.buffers()
    torch.manual_seed(0)
    mine.actor_loss(_batch())
    for name, value in mine.buffers().items():
        torch.testing.assert_close(value, before[name])  # no statistics updated
    assert qnet.training and qnet.module[1].training
    qnet.eval()  # a critic in evaluation mode stays so
    torch.manual_seed(0)
    mine(_batch())
    assert not qnet.training and not qnet.module[1].training
    for name, value in mine.buffers().items():
        torch.testing.assert_close(value, before[name])


def test_crossq_state_dict_carries_the_running_statistics():
    theirs, mine = _both({})
    torch.manual_seed(0)
    mine(_batch())
    state = mine.state_dict()
    names = {k for k in theirs.state_dict() if "running" in k or "num_batches" in k}
    assert names <= set(state)
    other = _both({}, seed=4)[1]
    other.load_state_dict(state)
    for name, value in other.buffers().items():
        torch.testing.assert_close(value, mine.buffers()[name])
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if "running_var" not in k})


def test_crossq_refusals():
    actor, qvalue = _torchrl_modules()
    with pytest.raises(TypeError, match="gamma"):
        CrossQLoss(actor, qvalue, gamma=0.9)
    with pytest.raises(RuntimeError, match="priority_key"):
        CrossQLoss(actor, qvalue, priority_key="p")
    with pytest.raises(TypeError):
        CrossQLoss(actor, qvalue, delay_qvalue=True)
    with pytest.raises(ValueError, match="loss_function"):
        CrossQLoss(actor, qvalue, loss_function="huber")
    with pytest.warns(UserWarning, match="reduction='none'"):
        CrossQLoss(actor, qvalue, reduction="none")
    assert CrossQLoss(actor, qvalue).out_keys == [
        "loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]


# =========================================================================================
# NumPy against torch with arrayrl modules
# =========================================================================================
class _Concat(Layer):
    """The inputs concatenated along the last axis (leading axes broadcast)."""

    def apply(self, params, *inputs):
        xp = backend_of(*inputs).xp
        lead = xp.broadcast_shapes(*(tuple(x.shape[:-1]) for x in inputs))
        return xp.concat([xp.broadcast_to(x, (*lead, x.shape[-1])) for x in inputs], axis=-1)


class _NumpyNoiseCrossQ(CrossQLoss):
    generator_mode = "numpy"  # the same draws (members included) on every backend


def _arrayrl_crossq(backend, dtype):
    actor = ProbabilisticActor(
        DictModule(Sequential(MLP(3, 4, [8], seed=0, backend=backend, dtype=dtype),
                              NormalParamExtractor()),
                   in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], distribution_class=TanhNormal,
    )
    critic = Sequential(_Concat(), Linear(5, 8, seed=1, backend=backend, dtype=dtype),
                        BatchRenorm1d(8, warmup_steps=1, momentum=0.3, backend=backend,
                                      dtype=dtype),
                        ReLU(), Linear(8, 1, seed=2, backend=backend, dtype=dtype))
    qvalue = ArrayValueOperator(critic, in_keys=["observation", "action"])
    return _NumpyNoiseCrossQ(actor, qvalue, num_qvalue_nets=3, target_entropy=-2.0,
                             alpha_init=0.5, seed=4)


def _numpy_batch(step):
    rng = np.random.default_rng(step)
    return {
        "observation": rng.standard_normal((6, 3)),
        "action": rng.uniform(-1, 1, (6, 2)),
        "next": {"observation": rng.standard_normal((6, 3)),
                 "reward": rng.standard_normal((6, 1)),
                 "done": rng.random((6, 1)) < 0.3,
                 "terminated": rng.random((6, 1)) < 0.2},
    }


def _as_torch(tree):
    return {k: _as_torch(v) if isinstance(v, dict) else torch.from_numpy(np.asarray(v))
            for k, v in tree.items()}


def test_crossq_on_numpy_equals_torch_with_arrayrl_modules():
    reference = _arrayrl_crossq("numpy", np.float64)
    loss = _arrayrl_crossq("torch", torch.float64)
    for step in range(3):
        expected = reference(ArrayDict(_numpy_batch(step), [6]))
        got = loss(ArrayDict(_as_torch(_numpy_batch(step)), [6]))
        assert list(got.keys()) == list(expected.keys())
        for key in expected.keys():
            np.testing.assert_allclose(got[key].detach().numpy(), expected[key], rtol=1e-10,
                                       atol=1e-12, err_msg=f"{key}, step {step}")
        for name, value in reference.buffers().items():
            np.testing.assert_allclose(loss.buffers()[name].numpy(), value, rtol=1e-10,
                                       atol=1e-12, err_msg=name)
    assert reference.buffers()["module.2.running_mean"].shape == (3, 8)
    assert reference.buffers()["module.2.num_batches_tracked"].tolist() == [3, 3, 3]
    # the members differ, each keeps its own statistics
    means = reference.buffers()["module.2.running_mean"]
    assert not np.allclose(means[0], means[1])
    # the layer's own statistics are untouched
    layer = reference.qvalue_network.module[2]
    assert int(layer.buffers["num_batches_tracked"]) == 0
