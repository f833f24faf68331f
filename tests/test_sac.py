"""SACLoss (v1 and v2) and DiscreteSACLoss against TorchRL 0.14.1: values, gradients,
``td_error``, draws in TorchRL's order; the temperature (clamping, fixed alpha, dtype);
backends; refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, NormalParamExtractor, ProbabilisticActor, Sequential
from arrayrl.modules import ValueOperator as ArrayValueOperator
from arrayrl.modules.distributions import OneHotCategorical, TanhNormal
from arrayrl.objectives import DiscreteSACLoss, SACLoss

LOSS_TERMS = ("loss_actor", "loss_qvalue", "loss_value", "loss_alpha")


def _quiet(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


# -- TorchRL networks and batches ------------------------------------------------------------
def _torchrl_continuous(obs=3, act=2, seed=0, spec=True):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from tensordict.nn.distributions import NormalParamExtractor as TDNormalParamExtractor
    from torchrl.data import Bounded
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import ProbabilisticActor as TRActor
    from torchrl.modules import TanhNormal as TRTanhNormal
    from torchrl.modules import ValueOperator

    torch.manual_seed(seed)
    actor = TRActor(
        TensorDictModule(
            torch.nn.Sequential(TorchRLMLP(obs, 2 * act, num_cells=[8]), TDNormalParamExtractor()),
            in_keys=["observation"], out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"], distribution_class=TRTanhNormal, return_log_prob=True,
        spec=Bounded(-1.0, 1.0, shape=(act,)) if spec else None,
    )
    qvalue = ValueOperator(TorchRLMLP(obs + act, 1, num_cells=[8]),
                           in_keys=["observation", "action"])
    value = ValueOperator(TorchRLMLP(obs, 1, num_cells=[8]), in_keys=["observation"])
    return actor, qvalue, value


def _torchrl_discrete(obs=3, n=4, seed=0, space="one-hot"):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import OneHotCategorical as TROneHot
    from torchrl.modules import ProbabilisticActor as TRActor

    torch.manual_seed(seed)
    dist = TROneHot if space == "one-hot" else torch.distributions.Categorical
    actor = TRActor(
        TensorDictModule(TorchRLMLP(obs, n, num_cells=[8]), in_keys=["observation"],
                         out_keys=["logits"]),
        in_keys=["logits"], distribution_class=dist, return_log_prob=True,
    )
    qvalue = TensorDictModule(TorchRLMLP(obs, n, num_cells=[8]), in_keys=["observation"],
                              out_keys=["action_value"])
    return actor, qvalue


def _batch(b=6, obs=3, act=2, seed=1, action=None):
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    done = torch.rand(b, 1, generator=g) < 0.4
    data = {
        "observation": torch.randn(b, obs, generator=g),
        "action": torch.rand(b, act, generator=g) * 2 - 1 if action is None else action,
        "next": {
            "observation": torch.randn(b, obs, generator=g),
            "reward": torch.randn(b, 1, generator=g),
            "done": done,
            "terminated": done & (torch.rand(b, 1, generator=g) < 0.5),
        },
    }
    return TensorDict(data, [b])


def _both(cls_theirs, cls_mine, args, kwargs, seed=3):
    """TorchRL's loss and ours from the same modules, their Q members drawn alike."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    theirs = _quiet(lambda: cls_theirs(*args, **kwargs))
    torch.manual_seed(seed)
    mine = _quiet(lambda: cls_mine(*args, **kwargs))
    return theirs, mine


def _run_both(theirs, mine, make_batch, seed=7):
    torch = pytest.importorskip("torch")
    b_theirs, b_mine = make_batch(), make_batch()
    torch.manual_seed(seed)
    out_theirs = _quiet(lambda: theirs(b_theirs))
    torch.manual_seed(seed)
    out_mine = mine(b_mine)
    return out_theirs, out_mine, b_theirs, b_mine


def _grouped(named):
    """``{group: [arrays]}``: the actor's, each other network's (in order) and log_alpha."""
    groups: dict[str, list] = {}
    for name, leaf in named:
        groups.setdefault(name.split(".")[0], []).append(leaf)
    return groups


def _assert_same(theirs, mine, out_theirs, out_mine, b_theirs, b_mine, grads=True):
    torch = pytest.importorskip("torch")
    assert set(out_theirs.keys()) == set(out_mine.keys())
    for key in out_theirs.keys():
        torch.testing.assert_close(out_mine[key].detach(), out_theirs[key].detach(), msg=key)
    torch.testing.assert_close(b_mine["td_error"], b_theirs["td_error"])
    if not grads:
        return
    their_params = _grouped(theirs.named_parameters())
    my_params = _grouped(mine.named_parameters())
    assert sorted(their_params) == sorted(my_params)
    for term in LOSS_TERMS:
        if term not in out_theirs.keys():
            continue
        assert out_mine[term].requires_grad == out_theirs[term].requires_grad, term
        if not out_theirs[term].requires_grad:  # loss_alpha with fixed_alpha
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


# -- SACLoss against TorchRL --------------------------------------------------------------------
SAC_CASES = {
    "v2": {},
    "v2-bounds": {"alpha_init": 0.7, "min_alpha": 0.8, "max_alpha": 2.0},
    "v2-fixed-l2": {"fixed_alpha": True, "alpha_init": 0.3, "loss_function": "l2"},
    "v2-skip-done": {"skip_done_states": True},
    "v2-sum-3q": {"reduction": "sum", "num_qvalue_nets": 3, "target_entropy": -0.5},
    "v2-delay-actor-l1": {"delay_actor": True, "loss_function": "l1", "delay_qvalue": False},
    "v1": {"value": True},
    "v1-3q-fixed": {"value": True, "num_qvalue_nets": 3, "fixed_alpha": True},
}


@pytest.mark.parametrize("case", list(SAC_CASES), ids=str)
def test_sac_matches_torchrl(case):
    from torchrl.objectives import SACLoss as TorchRLSAC

    kwargs = dict(SAC_CASES[case])
    actor, qvalue, value = _torchrl_continuous()
    args = (actor, qvalue, value) if kwargs.pop("value", False) else (actor, qvalue)
    theirs, mine = _both(TorchRLSAC, SACLoss, args, kwargs)
    b = 6 if "3q" not in case else 9
    for step in range(2):  # twice: the draws continue in TorchRL's order
        outs = _run_both(theirs, mine, lambda: _batch(b=b), seed=7 + step)
        _assert_same(theirs, mine, *outs)
    assert mine.out_keys == theirs.out_keys


@pytest.mark.parametrize("value_type", ["td1", "td_lambda"])
def test_sac_value_estimators_match_torchrl(value_type):
    from torchrl.objectives import SACLoss as TorchRLSAC
    from torchrl.objectives import ValueEstimators as TRValueEstimators

    actor, qvalue, _ = _torchrl_continuous()
    theirs, mine = _both(TorchRLSAC, SACLoss, (actor, qvalue), {})
    member = {"td1": TRValueEstimators.TD1, "td_lambda": TRValueEstimators.TDLambda}[value_type]
    theirs.make_value_estimator(member, gamma=0.9)
    mine.make_value_estimator(member, gamma=0.9)
    _assert_same(theirs, mine, *_run_both(theirs, mine, _batch), grads=False)
    with pytest.raises(NotImplementedError, match="GAE"):
        mine.make_value_estimator("gae")


def test_sac_priority_weights_and_reduction_none_match_torchrl():
    torch = pytest.importorskip("torch")
    from torchrl.objectives import SACLoss as TorchRLSAC

    actor, qvalue, _ = _torchrl_continuous()
    kwargs = {"reduction": "none", "scalar_output_mode": "exclude"}
    theirs, mine = _both(TorchRLSAC, SACLoss, (actor, qvalue), kwargs)

    def weighted():
        batch = _batch()
        batch["priority_weight"] = torch.linspace(0.2, 1.0, 6)
        return batch

    out_theirs, out_mine, *rest = _run_both(theirs, mine, weighted)
    assert out_mine["loss_actor"].shape == (6,) and "alpha" not in out_mine.keys()
    _assert_same(theirs, mine, out_theirs, out_mine, *rest)


def test_sac_v1_splits_the_batch_across_the_q_networks():
    from torchrl.objectives import SACLoss as TorchRLSAC

    actor, qvalue, value = _torchrl_continuous()
    _, mine = _both(TorchRLSAC, SACLoss, (actor, qvalue, value), {})
    with pytest.raises(RuntimeError, match="incompatible with num_qvqlue_nets=2"):
        mine(_batch(b=5))
    batch = _batch(b=6)
    mine(batch)
    assert batch["td_error"].shape == (6,)


def test_sac_target_entropy_auto_needs_a_spec():
    torch = pytest.importorskip("torch")
    from torchrl.data import Bounded

    actor, qvalue, _ = _torchrl_continuous(act=2, spec=False)
    loss = _quiet(lambda: SACLoss(actor, qvalue))  # lazy, as TorchRL
    with pytest.raises(RuntimeError, match=r"(?i)cannot infer the dimensionality"):
        loss(_batch())
    loss = _quiet(lambda: SACLoss(actor, qvalue, action_spec=Bounded(-1.0, 1.0, shape=(2,))))
    assert loss.target_entropy == -2.0
    assert SACLoss(actor, qvalue, target_entropy=-0.3).target_entropy == float(np.float32(-0.3))
    assert torch.is_tensor(loss(_batch())["loss_alpha"])


# -- DiscreteSACLoss against TorchRL -------------------------------------------------------------
def _discrete_batch(space, b=6, n=4, seed=2):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (b,), generator=g)
    action = index if space == "categorical" else torch.nn.functional.one_hot(index, n)
    return _batch(b=b, action=action, seed=seed)


DISCRETE_CASES = {
    "one-hot": {"action_space": "one-hot"},
    "categorical": {"action_space": "categorical"},
    "bounds-skip-done": {"action_space": "one-hot", "min_alpha": 0.5, "max_alpha": 0.9,
                         "skip_done_states": True},
    "3q-fixed-l2": {"action_space": "categorical", "num_qvalue_nets": 3, "fixed_alpha": True,
                    "loss_function": "l2", "alpha_init": 0.2},
}


@pytest.mark.parametrize("case", list(DISCRETE_CASES), ids=str)
def test_discrete_sac_matches_torchrl(case):
    from torchrl.objectives import DiscreteSACLoss as TorchRLDiscreteSAC

    kwargs = {**DISCRETE_CASES[case], "num_actions": 4}
    space = kwargs["action_space"]
    actor, qvalue = _torchrl_discrete(space=space)
    theirs, mine = _both(TorchRLDiscreteSAC, DiscreteSACLoss, (actor, qvalue), kwargs)
    assert mine.target_entropy == pytest.approx(float(theirs.target_entropy), rel=0, abs=0)
    outs = _run_both(theirs, mine, lambda: _discrete_batch(space))
    _assert_same(theirs, mine, *outs)


def test_discrete_sac_defaults_to_one_hot_with_torchrls_warning():
    actor, qvalue = _torchrl_discrete()
    with pytest.warns(UserWarning, match="action_space was not specified"):
        loss = DiscreteSACLoss(actor, qvalue, num_actions=4)
    assert loss.action_space == "one_hot"
    with pytest.raises(ValueError, match="num_actions needs to be provided"):
        DiscreteSACLoss(actor, qvalue, action_space="one-hot")


# -- arrayrl networks on every backend ------------------------------------------------------------
class _NumpyNoiseSAC(SACLoss):
    generator_mode = "numpy"  # the same members and noise on every backend


def _arrayrl_sac(backend, dtype, value=False, seed=0):
    actor = ProbabilisticActor(
        DictModule(Sequential(MLP(3, 4, [8], seed=seed, backend=backend, dtype=dtype),
                              NormalParamExtractor()),
                   in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True,
    )
    qvalue = ArrayValueOperator(MLP(5, 1, [8], seed=seed + 1, backend=backend, dtype=dtype),
                                in_keys=["observation", "action"])
    value_net = (ArrayValueOperator(MLP(3, 1, [8], seed=seed + 2, backend=backend, dtype=dtype))
                 if value else None)
    return _NumpyNoiseSAC(actor, qvalue, value_net, target_entropy=-2.0, alpha_init=0.5, seed=4)


def _numpy_batch(b=6):
    rng = np.random.default_rng(0)
    return {
        "observation": rng.standard_normal((b, 3)),
        "action": rng.uniform(-1, 1, (b, 2)),
        "next": {"observation": rng.standard_normal((b, 3)),
                 "reward": rng.standard_normal((b, 1)),
                 "done": rng.random((b, 1)) < 0.3,
                 "terminated": rng.random((b, 1)) < 0.2},
    }


def _as(backend, tree):
    from arrayrl.backends import get_backend

    to = get_backend(backend).from_numpy
    return {k: _as(backend, v) if isinstance(v, dict) else to(np.asarray(v))
            for k, v in tree.items()}


@pytest.mark.parametrize("value", [False, True], ids=["v2", "v1"])
@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_sac_backends_agree_with_numpy(backend, value):
    pytest.importorskip(backend)
    from arrayrl.backends import backend_of, get_backend

    reference = _arrayrl_sac("numpy", np.float64, value)
    expected = reference(ArrayDict(_numpy_batch(), [6]))
    loss = _arrayrl_sac(backend, get_backend(backend).xp.float64, value)
    got = loss(ArrayDict(_as(backend, _numpy_batch()), [6]))
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        value_ = got[key]
        np.testing.assert_allclose(backend_of(value_).to_numpy(value_), expected[key],
                                   rtol=1e-10, atol=1e-12, err_msg=key)


def test_discrete_sac_on_numpy_with_arrayrl_modules():
    actor = ProbabilisticActor(
        DictModule(MLP(3, 4, [8], seed=0), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], distribution_class=OneHotCategorical,
    )
    qvalue = DictModule(MLP(3, 4, [8], seed=1), in_keys=["observation"],
                        out_keys=["action_value"])
    loss = DiscreteSACLoss(actor, qvalue, action_space="one-hot", num_actions=4)
    data = _numpy_batch()
    data["action"] = np.eye(4, dtype=np.float32)[np.arange(6) % 4]
    batch = ArrayDict({k: v for k, v in data.items()}, [6])
    out = loss(batch)
    assert set(out.keys()) == {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"}
    assert batch["td_error"].shape == (6,)
    assert 0 < float(out["entropy"]) <= np.log(4) + 1e-6


# -- the temperature ----------------------------------------------------------------------------
def test_log_alpha_is_a_float32_parameter_clamped_in_place():
    torch = pytest.importorskip("torch")
    actor, qvalue, _ = _torchrl_continuous()
    loss = _quiet(lambda: SACLoss(actor, qvalue, alpha_init=0.5, min_alpha=0.1, max_alpha=1.0))
    log_alpha = loss.log_alpha
    assert log_alpha.dtype == torch.float32 and log_alpha.shape == () and log_alpha.requires_grad
    assert any(p is log_alpha for p in loss.parameters())
    assert "log_alpha" in loss.state_dict()
    optimizer = torch.optim.SGD([log_alpha], lr=1.0)
    with torch.no_grad():
        log_alpha.fill_(5.0)  # as a large optimizer step would
    out = loss(_batch())
    assert loss.log_alpha is log_alpha  # clamped in place: the optimizer still holds it
    assert log_alpha.item() == pytest.approx(float(np.float32(np.log(np.float32(1.0)))))
    assert out["alpha"].item() == pytest.approx(1.0)
    out["loss_alpha"].backward()
    assert log_alpha.grad is not None
    optimizer.step()


def test_fixed_alpha_is_not_trained():
    torch = pytest.importorskip("torch")
    actor, qvalue, _ = _torchrl_continuous()
    loss = _quiet(lambda: SACLoss(actor, qvalue, fixed_alpha=True, alpha_init=0.2))
    assert "log_alpha" not in dict(loss.named_parameters())
    assert "log_alpha" in loss.state_dict()
    out = loss(_batch())
    assert not out["loss_alpha"].requires_grad
    torch.testing.assert_close(out["alpha"], torch.tensor(0.2))


def test_alpha_bounds_follow_torchrl():
    actor, qvalue, _ = _torchrl_continuous()
    loss = _quiet(lambda: SACLoss(actor, qvalue, min_alpha=0.5))
    assert loss.max_log_alpha == pytest.approx(np.log(1e9), rel=1e-6)
    with pytest.raises(ValueError, match="max_alpha must be either None or greater than 0"):
        SACLoss(actor, qvalue, min_alpha=0.1, max_alpha=0)
    assert SACLoss(actor, qvalue, max_alpha=0).max_log_alpha is None  # TorchRL's xor rule
    with pytest.raises(ValueError, match="alpha_init"):
        SACLoss(actor, qvalue, alpha_init=0.0)


# -- refusals and warnings ------------------------------------------------------------------------
def test_sac_refusals_and_warnings():
    actor, qvalue, _ = _torchrl_continuous()
    with pytest.raises(TypeError, match="make_value_estimator"):
        SACLoss(actor, qvalue, gamma=0.9)
    with pytest.raises(RuntimeError, match="set_keys"):
        SACLoss(actor, qvalue, priority_key="p")
    with pytest.raises(ValueError, match="loss_function"):
        SACLoss(actor, qvalue, loss_function="huber")
    with pytest.raises(TypeError):
        SACLoss(actor, qvalue, not_an_argument=1)
    with pytest.warns(UserWarning, match="reduction='none'"):
        SACLoss(actor, qvalue, reduction="none")
    loss = SACLoss(actor, qvalue, reduction="none", scalar_output_mode="non_tensor",
                   deactivate_vmap=True)
    out = loss(_batch())
    assert out["loss_qvalue"].shape == (6,) and out["alpha"].shape == ()
