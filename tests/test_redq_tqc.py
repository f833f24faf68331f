"""REDQLoss and TQCLoss against TorchRL 0.14.1 on the same networks, batch and noise.

Each case builds TorchRL modules once, hands deep copies to TorchRL's loss and to
arrayrl's after the same ``torch.manual_seed`` (so the Q ensembles are identical), and
calls both after the same ``torch.manual_seed`` (so the critic subset and the policy
draws are identical). Every output key and the gradient of every ``loss_*`` term with
respect to every parameter are compared (parameters matched by name). A NumPy test per
loss checks that arrayrl networks on NumPy compute what they compute on torch.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.objectives as trl  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from tensordict.nn.distributions import NormalParamExtractor  # noqa: E402
from torchrl.data import Bounded  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.modules import ProbabilisticActor as TorchRLActor  # noqa: E402
from torchrl.modules import TanhNormal as TorchRLTanhNormal  # noqa: E402
from torchrl.modules import ValueOperator as TorchRLValue  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, DictModule, ProbabilisticActor, ValueOperator  # noqa: E402
from arrayrl.modules.distributions import TanhNormal  # noqa: E402
from arrayrl.modules.layers import NormalParamExtractor as OwnExtractor  # noqa: E402
from arrayrl.modules.layers import Sequential  # noqa: E402
from arrayrl.objectives import REDQLoss, TQCLoss  # noqa: E402

OBS, ACT, B, T = 3, 2, 6, 3
TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {"rtol": 1e-9, "atol": 1e-10}}
MAX_DIFF: dict[str, float] = {}  # largest differences seen, per dtype (printed with -s)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No target network updater")
        warnings.filterwarnings("ignore", message=".*reduction='none'.*")
        yield


# -- builders ------------------------------------------------------------------------------


def _networks(dtype, n_out=1, shared=False):
    """A TorchRL TanhNormal actor (with a spec) and a critic writing ``n_out`` values."""
    torch.manual_seed(0)
    spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,))
    if shared:
        trunk = TensorDictModule(torch.nn.Linear(OBS, 8), in_keys=["observation"],
                                 out_keys=["hidden"])
        head = TensorDictModule(
            torch.nn.Sequential(torch.nn.Linear(8, 2 * ACT), NormalParamExtractor()),
            in_keys=["hidden"], out_keys=["loc", "scale"])
        actor = TorchRLActor(TensorDictSequential(trunk, head), in_keys=["loc", "scale"],
                             distribution_class=TorchRLTanhNormal, spec=spec)
        q_head = TensorDictModule(TorchRLMLP(8 + ACT, n_out, num_cells=[8]),
                                  in_keys=["hidden", "action"],
                                  out_keys=["state_action_value"])
        critic = TensorDictSequential(trunk, q_head)
    else:
        net = torch.nn.Sequential(TorchRLMLP(OBS, 2 * ACT, num_cells=[8]),
                                  NormalParamExtractor())
        actor = TorchRLActor(
            TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], distribution_class=TorchRLTanhNormal, spec=spec)
        critic = TorchRLValue(TorchRLMLP(OBS + ACT, n_out, num_cells=[8]),
                              in_keys=["observation", "action"])
    return actor.to(dtype), critic.to(dtype)


def _batch(dtype, shape=(B,), seed=0, terminated=0.3):
    g = torch.Generator().manual_seed(seed)
    shape = tuple(shape)

    def randn(*tail):
        return torch.randn(*shape, *tail, generator=g, dtype=dtype)

    return TensorDict({
        "observation": randn(OBS),
        "action": torch.rand(*shape, ACT, generator=g, dtype=dtype) * 1.8 - 0.9,
        "next": {
            "observation": randn(OBS),
            "reward": randn(1),
            "done": torch.zeros(*shape, 1, dtype=torch.bool),
            "terminated": torch.rand(*shape, 1, generator=g) < terminated,
        },
    }, list(shape))


def _pair(theirs_cls, mine_cls, dtype, n_out=1, shared=False, gamma=None, **kwargs):
    """TorchRL's and arrayrl's loss on deep copies of the same networks, built after the
    same ``torch.manual_seed`` (identical ensembles)."""
    actor, critic = _networks(dtype, n_out, shared)
    losses = []
    for cls in (theirs_cls, mine_cls):
        a, c = copy.deepcopy((actor, critic))
        torch.manual_seed(7)
        loss = cls(a, c, **kwargs)
        if gamma is not None:
            loss.make_value_estimator(gamma=gamma)
        losses.append(loss)
    return losses


def _run(loss, batch, seed=11):
    torch.manual_seed(seed)
    return loss(batch)


def _norm(name):
    """A parameter name without the ``module`` levels the two module trees name apart."""
    return ".".join(p for p in name.split(".") if p != "module")


def _params(loss):
    return {_norm(n): p for n, p in loss.named_parameters()}


def _grads(out, params, keys):
    names = list(params)
    grads = {}
    for key in keys:
        if not out[key].requires_grad:  # e.g. loss_alpha with fixed_alpha
            grads[key] = {n: torch.zeros_like(params[n]) for n in names}
            continue
        got = torch.autograd.grad(out[key].sum(), [params[n] for n in names],
                                  retain_graph=True, allow_unused=True)
        grads[key] = {n: (torch.zeros_like(params[n]) if g is None else g)
                      for n, g in zip(names, got)}
    return grads


def _close(name, got, expected, dtype):
    torch.testing.assert_close(got, expected, **TOL[dtype], msg=lambda m: f"{name}: {m}")
    if got.numel():
        diff = (got.detach() - expected.detach()).abs().max().item()
        key = str(dtype)
        MAX_DIFF[key] = max(MAX_DIFF.get(key, 0.0), diff)


def _compare(theirs, mine, batch, dtype, *, grads=True, seed=11):
    """Every TorchRL output key, the ``td_error`` both set in their batch, and every
    ``loss_*`` gradient."""
    their_batch, my_batch = batch.clone(), batch.clone()
    expected = _run(theirs, their_batch, seed)
    got = _run(mine, my_batch, seed)
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        assert got[key].shape == expected[key].shape, key
        _close(key, got[key], expected[key], dtype)
    _close("td_error", my_batch["td_error"], their_batch["td_error"], dtype)
    if grads:
        loss_keys = [k for k in expected.keys() if k.startswith("loss_")]
        their_params, my_params = _params(theirs), _params(mine)
        assert set(their_params) <= set(my_params)
        # critic arrays shared with the actor under separate_losses: TorchRL makes them
        # buffers, arrayrl lists them (broadcast, no gradient)
        for name in set(my_params) - set(their_params):
            assert not my_params[name].requires_grad, name
        my_params = {name: my_params[name] for name in their_params}
        expected_grads = _grads(expected, their_params, loss_keys)
        got_grads = _grads(got, my_params, loss_keys)
        for key in loss_keys:
            for name in their_params:
                _close(f"d {key} / d {name}", got_grads[key][name],
                       expected_grads[key][name], dtype)
    return got, expected


DTYPES = [torch.float32, torch.float64]
SHAPES = [(B,), (B, T)]


# -- REDQ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_redq_matches_torchrl(dtype, shape):
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, gamma=0.5, num_qvalue_nets=4)
    got, _ = _compare(theirs, mine, _batch(dtype, shape), dtype)
    assert got["state_action_value_actor"].shape == (4, *shape)
    assert got["next.state_value"].shape == shape


@pytest.mark.parametrize("options", [
    {"num_qvalue_nets": 10},  # the defaults: 10 critics, 2 in the target
    {"num_qvalue_nets": 3, "sub_sample_len": 1},
    {"num_qvalue_nets": 5, "sub_sample_len": 7},  # clipped to N - 1 = 4
    {"num_qvalue_nets": 4, "fixed_alpha": True, "alpha_init": 0.5},
    {"num_qvalue_nets": 4, "target_entropy": -0.7, "alpha_init": 2.0},
    {"num_qvalue_nets": 4, "alpha_init": 20.0},  # clamped to max_alpha, straight-through
    {"num_qvalue_nets": 4, "alpha_init": 0.05, "min_alpha": 0.2, "max_alpha": 3.0},
    {"num_qvalue_nets": 4, "delay_qvalue": False},
    {"num_qvalue_nets": 4, "loss_function": "l2"},
    {"num_qvalue_nets": 4, "loss_function": "l1", "reduction": "sum"},
    {"num_qvalue_nets": 4, "reduction": "none", "scalar_output_mode": "exclude"},
    {"num_qvalue_nets": 4, "deactivate_vmap": True},
])
def test_redq_options_match_torchrl(options):
    dtype = torch.float64
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, gamma=0.5, **options)
    _compare(theirs, mine, _batch(dtype), dtype)


def test_redq_default_gamma_float32():
    """TorchRL's default TD(0) (γ = 0.99) in float32, on a [B, T] batch."""
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, torch.float32, num_qvalue_nets=4)
    _compare(theirs, mine, _batch(torch.float32, (B, T)), torch.float32)


@pytest.mark.parametrize("value_type, hyperparams", [
    ("TD1", {"gamma": 0.5}),
    ("TDLambda", {"gamma": 0.5, "lmbda": 0.5}),  # exact in float32, as TorchRL keeps them
])
def test_redq_other_estimators_match_torchrl(value_type, hyperparams):
    dtype = torch.float64
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, num_qvalue_nets=4)
    theirs.make_value_estimator(getattr(trl.ValueEstimators, value_type), **hyperparams)
    mine.make_value_estimator(value_type, **hyperparams)
    _compare(theirs, mine, _batch(dtype, (B, T)), dtype, grads=False)


def test_redq_shared_trunk_with_separate_losses():
    dtype = torch.float64
    for separate in (False, True):
        theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, shared=True, gamma=0.5,
                             num_qvalue_nets=3, separate_losses=separate)
        _compare(theirs, mine, _batch(dtype), dtype)


def test_redq_collector_mask():
    dtype = torch.float64
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, gamma=0.5, num_qvalue_nets=3)
    batch = _batch(dtype)
    batch["collector", "mask"] = torch.tensor([True, False, True, True, False, True])[:, None]
    _compare(theirs, mine, batch, dtype)


def test_redq_priority_weights_are_honoured():
    """A deliberate difference: TorchRL's REDQ ignores ``priority_weight``; arrayrl
    weights every term with it (the weighted mean of TorchRL's unreduced terms)."""
    dtype = torch.float64
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, dtype, gamma=0.5, num_qvalue_nets=3,
                         reduction="none", scalar_output_mode="exclude")
    batch = _batch(dtype)
    weights = torch.linspace(0.2, 1.5, B, dtype=dtype)
    expected = _run(theirs, batch.clone())
    mine.reduction = "mean"
    got = _run(mine, batch.set("priority_weight", weights[:, None]))
    for key in ("loss_actor", "loss_qvalue", "loss_alpha"):
        w = weights.expand_as(expected[key])
        _close(key, got[key], (expected[key] * w).sum() / w.sum(), dtype)
    mine.use_prioritized_weights = False
    plain = _run(mine, batch)
    theirs.reduction = "mean"
    _close("loss_qvalue", plain["loss_qvalue"], _run(theirs, batch)["loss_qvalue"], dtype)


def test_redq_leaves_the_callers_arrays_and_actor_alone():
    """The caller's arrays are never written; the priority is a new entry, as TorchRL's."""
    theirs, mine = _pair(trl.REDQLoss, REDQLoss, torch.float32, num_qvalue_nets=3)
    actor = mine.actor_network
    batch = _batch(torch.float32)
    before = {k: v.clone() for k, v in batch.items(True, True)}
    _run(mine, batch)
    assert set(batch.keys(True, True)) == set(before) | {"td_error"}
    for key, value in before.items():
        assert torch.equal(batch.get(key), value), key
    assert theirs.actor_network.return_log_prob  # TorchRL sets it on the actor it holds
    assert actor.return_log_prob is False


def test_redq_arguments():
    actor, critic = _networks(torch.float32)
    with pytest.raises(TypeError, match="gamma"):
        REDQLoss(actor, critic, gamma=0.9)
    with pytest.raises(RuntimeError, match="set_keys"):
        REDQLoss(actor, critic, priority_key="p")
    with pytest.raises(TypeError, match="REDQLoss got an unexpected keyword argument"):
        REDQLoss(actor, critic, num_qvalue=3)
    with pytest.raises(ValueError, match="loss_function"):
        REDQLoss(actor, critic, loss_function="huber")
    with pytest.raises(ValueError, match="min_alpha"):
        REDQLoss(actor, critic, min_alpha=2.0, max_alpha=1.0)
    with pytest.raises(NotImplementedError, match="GAE"):
        REDQLoss(actor, critic).make_value_estimator("gae")
    with pytest.warns(UserWarning, match="reduction='none'"):
        REDQLoss(actor, critic, reduction="none")
    loss = REDQLoss(actor, critic, num_qvalue_nets=3)
    assert loss.out_keys[:3] == ["loss_actor", "loss_qvalue", "loss_alpha"]
    assert loss.target_entropy == -ACT
    loss = REDQLoss(*_own_networks(1), num_qvalue_nets=3)  # no spec
    with pytest.raises(RuntimeError, match="dimensionality of the action"):
        loss(_numpy_batch())


# -- TQC ----------------------------------------------------------------------------------

N_QUANTILES = 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_tqc_matches_torchrl(dtype, shape):
    theirs, mine = _pair(trl.TQCLoss, TQCLoss, dtype, n_out=N_QUANTILES, gamma=0.5,
                         num_qvalue_nets=3)
    _compare(theirs, mine, _batch(dtype, shape), dtype)


@pytest.mark.parametrize("options", [
    {},  # the defaults: 5 critics, 2 atoms dropped per critic
    {"num_qvalue_nets": 1, "top_quantiles_to_drop_per_net": 0},
    {"num_qvalue_nets": 2, "top_quantiles_to_drop_per_net": 4},
    {"num_qvalue_nets": 2, "fixed_alpha": True, "alpha_init": 0.3},
    {"num_qvalue_nets": 2, "target_entropy": 1.5, "alpha_init": 0.5},
    {"num_qvalue_nets": 2, "alpha_init": 5.0, "max_alpha": 2.0},  # clamped in place
    {"num_qvalue_nets": 2, "alpha_init": 0.01, "min_alpha": 0.1, "max_alpha": 1.0},
    {"num_qvalue_nets": 2, "delay_qvalue": False},
    {"num_qvalue_nets": 2, "reduction": "sum"},
    {"num_qvalue_nets": 2, "reduction": "none", "scalar_output_mode": "exclude"},
    {"num_qvalue_nets": 2, "skip_done_states": True},
    {"num_qvalue_nets": 2, "separate_losses": True, "deactivate_vmap": True},
])
def test_tqc_options_match_torchrl(options):
    dtype = torch.float64
    theirs, mine = _pair(trl.TQCLoss, TQCLoss, dtype, n_out=N_QUANTILES, gamma=0.5, **options)
    _compare(theirs, mine, _batch(dtype), dtype)
    torch.testing.assert_close(mine.log_alpha, theirs.log_alpha.to(mine.log_alpha.dtype))


def test_tqc_default_gamma_float32():
    theirs, mine = _pair(trl.TQCLoss, TQCLoss, torch.float32, n_out=N_QUANTILES,
                         num_qvalue_nets=2)
    _compare(theirs, mine, _batch(torch.float32, (B, T)), torch.float32)


@pytest.mark.parametrize("terminated", [0.0, 1.0])
def test_tqc_skip_done_states_without_or_with_only_terminal_states(terminated):
    dtype = torch.float64
    theirs, mine = _pair(trl.TQCLoss, TQCLoss, dtype, n_out=N_QUANTILES, gamma=0.5,
                         num_qvalue_nets=2, skip_done_states=True)
    _compare(theirs, mine, _batch(dtype, (B, T), terminated=terminated), dtype)


def test_tqc_shared_trunk_priority_weights_and_mask():
    dtype = torch.float64
    theirs, mine = _pair(trl.TQCLoss, TQCLoss, dtype, n_out=N_QUANTILES, shared=True,
                         gamma=0.5, num_qvalue_nets=2, separate_losses=True)
    batch = _batch(dtype)
    batch["priority_weight"] = torch.linspace(0.2, 1.5, B, dtype=dtype)
    batch["collector", "mask"] = torch.tensor([True, True, False, True, False, True])[:, None]
    _compare(theirs, mine, batch, dtype)
    theirs.use_prioritized_weights = mine.use_prioritized_weights = False
    _compare(theirs, mine, batch, dtype, grads=False)


def test_tqc_arguments():
    actor, critic = _networks(torch.float32, N_QUANTILES)
    with pytest.raises(TypeError, match="TQCLoss got an unexpected keyword argument 'gamma'"):
        TQCLoss(actor, critic, gamma=0.9)
    with pytest.raises(ValueError, match="top_quantiles_to_drop_per_net"):
        TQCLoss(actor, critic, top_quantiles_to_drop_per_net=-1)
    with pytest.raises(ValueError, match="max_alpha"):
        TQCLoss(actor, critic, max_alpha=0, min_alpha=0.5)
    with pytest.raises(NotImplementedError, match="TD1"):
        TQCLoss(actor, critic).make_value_estimator("td1")
    loss = TQCLoss(actor, critic, num_qvalue_nets=2, top_quantiles_to_drop_per_net=5)
    with pytest.raises(ValueError, match="smaller than the critic's number of quantiles"):
        loss(_batch(torch.float32))
    loss = TQCLoss(actor, critic, num_qvalue_nets=2)
    assert loss.out_keys == ["loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"]


# -- NumPy equals torch --------------------------------------------------------------------


def _own_networks(n_out):
    actor = ProbabilisticActor(
        DictModule(Sequential(MLP(OBS, 2 * ACT, [8], seed=1, dtype=np.float64), OwnExtractor()),
                   in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], distribution_class=TanhNormal)
    critic = ValueOperator(MLP(OBS + ACT, n_out, [8], seed=2, dtype=np.float64),
                           in_keys=["observation", "action"])
    return actor, critic


def _numpy_batch(shape=(B,)):
    rng = np.random.default_rng(4)
    shape = tuple(shape)
    return ArrayDict({
        "observation": rng.standard_normal((*shape, OBS)),
        "action": rng.uniform(-0.9, 0.9, (*shape, ACT)),
        "next": {
            "observation": rng.standard_normal((*shape, OBS)),
            "reward": rng.standard_normal((*shape, 1)),
            "done": np.zeros((*shape, 1), bool),
            "terminated": rng.uniform(size=(*shape, 1)) < 0.3,
        },
    }, shape)


@pytest.mark.parametrize("cls, n_out, kwargs", [
    (REDQLoss, 1, {"num_qvalue_nets": 4, "target_entropy": -2.0}),
    (TQCLoss, N_QUANTILES, {"num_qvalue_nets": 3, "target_entropy": -2.0,
                            "skip_done_states": True}),
])
def test_numpy_equals_torch(cls, n_out, kwargs):
    outs = []
    for backend in ("numpy", "torch"):
        actor, critic = _own_networks(n_out)
        loss = cls(actor, critic, seed=5, **kwargs).to(backend)
        loss.generator_mode = "numpy"
        loss.seed = 5  # fresh generators, NumPy's draws on both backends
        batch = _numpy_batch((B, T))
        outs.append(loss(batch if backend == "numpy" else batch.to("torch")))
    mine_np, mine_torch = outs
    assert set(mine_np.keys()) == set(mine_torch.keys())
    for key in mine_np.keys():
        np.testing.assert_allclose(np.asarray(mine_np[key]),
                                   mine_torch[key].detach().numpy(), rtol=1e-9, atol=1e-10,
                                   err_msg=key)


def test_report_max_differences():
    """Prints the largest differences seen against TorchRL (run with ``-s``)."""
    print({k: f"{v:.2e}" for k, v in MAX_DIFF.items()})
    assert all(math.isfinite(v) for v in MAX_DIFF.values())
