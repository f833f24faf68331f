"""CQLLoss and DiscreteCQLLoss: against TorchRL 0.14.1 on the same modules, batches and
torch noise (every output, every gradient, float32 and float64), against a float64
NumPy formula written out here (the action box of a spec, the Lagrange multiplier,
``reduction="none"``), the deviations from TorchRL, backends, and refusals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from arrayrl.conformance.cql_cases import paper_cql_terms, record_torchrl_proposals

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, NormalParamExtractor, ProbabilisticActor, Sequential
from arrayrl.modules import ValueOperator as ArrayValueOperator
from arrayrl.modules.actors import QValueActor as ArrayQValueActor
from arrayrl.modules.distributions import TanhNormal
from arrayrl.objectives.cql import CQLLoss, DiscreteCQLLoss

OBS, ACT, N_ACTIONS = 3, 2, 4
TERMS = ("loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha", "loss_alpha_prime")


def _quiet(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make()


# -- TorchRL's side ----------------------------------------------------------------------------
def _torchrl_nets(dtype, spec=True):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import NormalParamExtractor as TDNormalParamExtractor
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import ProbabilisticActor as TRActor
    from torchrl.modules import TanhNormal as TRTanhNormal
    from torchrl.modules import ValueOperator

    torch.manual_seed(0)
    body = torch.nn.Sequential(TorchRLMLP(OBS, 2 * ACT, num_cells=[8]), TDNormalParamExtractor())
    actor = TRActor(
        TensorDictModule(body.to(dtype), in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TRTanhNormal,
        return_log_prob=True,
        spec=Bounded(-1.0, 1.0, shape=(ACT,), dtype=dtype) if spec else None,
    )
    qvalue = ValueOperator(
        TorchRLMLP(OBS + ACT, 1, num_cells=[8]).to(dtype), in_keys=["observation", "action"]
    )
    return actor, qvalue


def _batch(shape, dtype, mask=False, seed=1):
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)

    def randn(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    done = torch.rand(*shape, 1, generator=g) < 0.3
    data = {
        "observation": randn(*shape, OBS),
        "action": (torch.rand(*shape, ACT, generator=g, dtype=dtype) * 1.8 - 0.9),
        "next": {
            "observation": randn(*shape, OBS),
            "reward": randn(*shape, 1),
            "done": done,
            "terminated": done & (torch.rand(*shape, 1, generator=g) < 0.5),
        },
    }
    if mask:
        valid = torch.rand(*shape, generator=g) < 0.7
        valid.view(-1)[0] = True
        data["collector"] = {"mask": valid}
    return TensorDict(data, shape)


def _grouped(named):
    groups: dict[str, list] = {}
    for name, leaf in named:
        groups.setdefault(name.split(".")[0], []).append(leaf)
    return groups


def _assert_grads(theirs, mine, expected, got):
    torch = pytest.importorskip("torch")
    their_params, my_params = _grouped(theirs.named_parameters()), _grouped(mine.named_parameters())
    assert sorted(their_params) == sorted(my_params)
    for term in TERMS:
        if term not in expected:
            continue
        assert got[term].requires_grad == expected[term].requires_grad, term
        if not expected[term].requires_grad:
            continue
        for group, leaves in their_params.items():
            g_theirs = torch.autograd.grad(
                expected[term].sum(), leaves, retain_graph=True, allow_unused=True
            )
            g_mine = torch.autograd.grad(
                got[term].sum(), my_params[group], retain_graph=True, allow_unused=True
            )
            for a, b in zip(g_mine, g_theirs, strict=True):
                if a is None or b is None:
                    assert (a is None or not a.any()) and (b is None or not b.any()), (term, group)
                else:
                    torch.testing.assert_close(a, b, msg=f"{term} / {group}")


CQL_CASES = {
    "default": {},
    "max_q_backup": {"max_q_backup": True},
    "stochastic_backup,l2": {"deterministic_backup": False, "loss_function": "l2"},
    "lagrange": {"with_lagrange": True, "lagrange_thresh": 0.5},
    "temperature,weight,K=3": {"temperature": 0.5, "min_q_weight": 2.0, "num_random": 3},
    "sum,no_delay,fixed_alpha": {
        "reduction": "sum",
        "delay_qvalue": False,
        "fixed_alpha": True,
        "alpha_init": 0.4,
    },
    "none": {"reduction": "none", "scalar_output_mode": "exclude"},
    "mask,alpha_bounds": {"min_alpha": 0.5, "max_alpha": 2.0, "alpha_init": 0.3},
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CQL_CASES), ids=str)
def test_cql_matches_torchrl(case, dtype):
    """Every output, the priority and every gradient of every term, with ``loss_cql`` and
    ``loss_alpha_prime`` recombined from TorchRL's own proposal values (the fixes)."""
    torch = pytest.importorskip("torch")
    from torchrl.objectives import CQLLoss as TorchRLCQL

    dtype = getattr(torch, dtype)
    shape = (2, 3) if case in ("max_q_backup", "none") else (5,)
    actor, qvalue = _torchrl_nets(dtype)
    torch.manual_seed(3)
    theirs = _quiet(lambda: TorchRLCQL(actor, qvalue, **CQL_CASES[case]))
    torch.manual_seed(3)
    mine = _quiet(lambda: CQLLoss(actor, qvalue, **CQL_CASES[case]))
    assert mine.out_keys == theirs.out_keys
    record = record_torchrl_proposals(theirs, None)
    b_theirs, b_mine = (_batch(shape, dtype, mask="mask" in case) for _ in range(2))
    torch.manual_seed(7)
    out_theirs = _quiet(lambda: theirs(b_theirs))
    torch.manual_seed(7)
    out_mine = mine(b_mine)
    expected = {k: out_theirs[k] for k in out_theirs.keys()}
    expected.update(paper_cql_terms(theirs, record, b_theirs, None))
    assert sorted(out_mine.keys()) == sorted(expected)
    for key, value in expected.items():
        assert out_mine[key].dtype == value.dtype, key
        torch.testing.assert_close(out_mine[key].detach(), value.detach(), msg=key)
    torch.testing.assert_close(b_mine["td_error"], b_theirs["td_error"])
    _assert_grads(theirs, mine, expected, out_mine)


def test_cql_does_not_write_torchrls_intermediates_into_the_batch():
    torch = pytest.importorskip("torch")
    actor, qvalue = _torchrl_nets(torch.float32)
    loss = CQLLoss(actor, qvalue)
    batch = _batch((4,), torch.float32)
    before = {k: v.clone() for k, v in batch.items(include_nested=True, leaves_only=True)}
    loss(batch)
    after = set(batch.keys(include_nested=True, leaves_only=True))
    assert after == set(before) | {"td_error"}  # no pred_q1, cql_q1_loss, loc, scale
    for key, value in before.items():
        assert torch.equal(batch[key], value), key


def test_cql_lagrange_multiplier_weighs_the_conservative_term():
    """Summing the terms trains the critics on α′·∇C and log α′ on −½Σ(C − τ); TorchRL's
    sum gives the critics (1 − α′/2)·∇C."""
    torch = pytest.importorskip("torch")
    actor, qvalue = _torchrl_nets(torch.float64)
    loss = CQLLoss(actor, qvalue, with_lagrange=True, lagrange_thresh=0.2)
    with torch.no_grad():
        loss.log_alpha_prime.fill_(math.log(3.0))
    batch = _batch((5,), torch.float64)
    torch.manual_seed(0)
    out = loss(batch)
    critics = list(_grouped(loss.named_parameters())["qvalue_network_params"])
    g_prime = torch.autograd.grad(
        out["loss_alpha_prime"], critics, allow_unused=True, retain_graph=True
    )
    assert all(g is None or not g.any() for g in g_prime)
    (g_log,) = torch.autograd.grad(
        out["loss_alpha_prime"], [loss.log_alpha_prime], retain_graph=True
    )
    torch.testing.assert_close(g_log, out["loss_alpha_prime"].detach().to(g_log.dtype))
    plain = CQLLoss(actor, qvalue, seed=None)
    plain.load_state_dict({k: v for k, v in loss.state_dict().items() if k != "log_alpha_prime"})
    torch.manual_seed(0)
    out_plain = plain(_batch((5,), torch.float64))
    torch.testing.assert_close(out["loss_cql"], 3.0 * (out_plain["loss_cql"] - 2 * 0.2))


def test_cql_target_entropy_auto_and_refusals():
    torch = pytest.importorskip("torch")
    from torchrl.data import Bounded, Unbounded

    actor, qvalue = _torchrl_nets(torch.float32, spec=False)
    with pytest.raises(RuntimeError, match=r"(?i)cannot infer the dimensionality"):
        CQLLoss(actor, qvalue)  # read at construction, as TorchRL
    loss = CQLLoss(actor, qvalue, action_spec=Bounded(-1.0, 1.0, shape=(ACT,)))
    assert loss.target_entropy == -2.0 and loss.num_qvalue_nets == 2
    with pytest.raises(ValueError, match="must be Bounded"):
        CQLLoss(actor, qvalue, action_spec=Unbounded(shape=(ACT,)))
    wrong_box = CQLLoss(actor, qvalue, action_spec=Bounded(-2.0, 2.0, shape=(ACT + 1,)))
    with pytest.raises(ValueError, match="box has shape"):
        wrong_box(_batch((4,), torch.float32))
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_qvalue_nets'"):
        CQLLoss(actor, qvalue, target_entropy=-1.0, num_qvalue_nets=3)
    with pytest.raises(TypeError, match="deprecated feature"):
        CQLLoss(actor, qvalue, target_entropy=-1.0, gamma=0.9)
    bad = [
        ({"temperature": 0.0}, "temperature"),
        ({"min_q_weight": -1.0}, "min_q_weight"),
        ({"num_random": 0}, "num_random"),
        ({"lagrange_thresh": math.nan, "with_lagrange": True}, "lagrange_thresh"),
        ({"with_lagrange": 1}, "with_lagrange"),
        ({"max_q_backup": "yes"}, "max_q_backup"),
        ({"loss_function": "huber"}, "loss_function"),
        ({"alpha_init": 0.0}, "alpha_init"),
    ]
    for kwargs, name in bad:
        with pytest.raises((ValueError, TypeError), match=name):
            CQLLoss(actor, qvalue, target_entropy=-1.0, **kwargs)
    with pytest.raises(ValueError, match="scalar_output_mode"):
        CQLLoss(actor, qvalue, target_entropy=-1.0, scalar_output_mode="keep")
    loss = CQLLoss(actor, qvalue, target_entropy=-1.0)
    batch = _batch((4,), torch.float32)
    del batch["next", "observation"]
    with pytest.raises(KeyError, match="observation"):
        loss(batch)
    with pytest.raises(ValueError, match="accepted keys"):
        loss.set_keys(q_pred="q")


# -- a NumPy formula written out --------------------------------------------------------------
class _NumpyNoiseCQL(CQLLoss):
    generator_mode = "numpy"  # draws from numpy.random.default_rng(seed), in float64


LOW, HIGH = np.array([-2.0, 0.0]), np.array([1.0, 3.0])


def _arrayrl_cql(backend="numpy", dtype=np.float64, **kwargs):
    from arrayrl.backends import get_backend

    from arrayrl.specs import Bounded

    box = {
        "low": get_backend(backend).from_numpy(LOW),
        "high": get_backend(backend).from_numpy(HIGH),
    }
    actor = ProbabilisticActor(
        DictModule(
            Sequential(
                MLP(OBS, 2 * ACT, [8], seed=0, backend=backend, dtype=dtype),
                NormalParamExtractor(scale_mapping="exp"),
            ),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs=box,
    )
    qvalue = ArrayValueOperator(
        MLP(OBS + ACT, 1, [8], seed=1, backend=backend, dtype=dtype),
        in_keys=["observation", "action"],
    )
    spec = Bounded(LOW, HIGH, shape=(ACT,))
    loss = _NumpyNoiseCQL(actor, qvalue, action_spec=spec, alpha_init=0.5, seed=4, **kwargs)
    loss.make_value_estimator("td0", gamma=0.9)
    loss.seed = 11  # fresh generators: the draws of the forward start from seed 11
    return loss


def _numpy_batch(b=5):
    rng = np.random.default_rng(2)
    done = rng.random((b, 1)) < 0.4
    return {
        "observation": rng.standard_normal((b, OBS)),
        "action": (LOW + HIGH) / 2 + (HIGH - LOW) / 2 * rng.uniform(-0.9, 0.9, (b, ACT)),
        "next": {
            "observation": rng.standard_normal((b, OBS)),
            "reward": rng.standard_normal((b, 1)),
            "done": done,
            "terminated": done & (rng.random((b, 1)) < 0.5),
        },
    }


def _mlp(weights, x):
    """A tanh MLP with torch's layout (``"0.weight"``: ``(out, in)``), member axis first."""
    h = np.tanh(x @ np.swapaxes(weights["0.weight"], -1, -2) + weights["0.bias"][..., None, :])
    return h @ np.swapaxes(weights["2.weight"], -1, -2) + weights["2.bias"][..., None, :]


def _flat(tree):
    from arrayrl.modules import flatten_params

    return {".".join(k.split(".")[-2:]): np.asarray(v) for k, v in flatten_params(tree).items()}


def _policy(actor_w, obs, eps):
    """``(a, log π(a))`` of the box TanhNormal at ``obs`` for the normal draws ``eps``."""
    out = _mlp(actor_w, obs)
    loc, scale = out[..., :ACT], np.maximum(np.exp(out[..., ACT:]), 1e-4)
    if eps.ndim > loc.ndim:
        loc, scale = loc[:, None], scale[:, None]
    x = loc + scale * eps
    half = (HIGH - LOW) / 2
    log_normal = -0.5 * eps**2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    log_jacobian = np.log(half) + 2 * (np.log(2) - x - np.logaddexp(0, -2 * x))
    return (LOW + HIGH) / 2 + half * np.tanh(x), np.sum(log_normal - log_jacobian, axis=-1)


def _log_prob_of(actor_w, obs, action):
    out = _mlp(actor_w, obs)
    loc, scale = out[..., :ACT], np.maximum(np.exp(out[..., ACT:]), 1e-4)
    half = (HIGH - LOW) / 2
    x = np.arctanh((action - (LOW + HIGH) / 2) / half)
    log_normal = -0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    log_jacobian = np.log(half) + 2 * (np.log(2) - x - np.logaddexp(0, -2 * x))
    return np.sum(log_normal - log_jacobian, axis=-1)


def _q(q_w, obs, action):
    """``Q_i(obs, action)`` of both members, ``[2, *obs.shape[:-1]]``."""
    x = np.concatenate([np.broadcast_to(obs, (*action.shape[:-1], OBS)), action], -1)
    flat = x.reshape(-1, OBS + ACT)
    return _mlp(q_w, flat)[..., 0].reshape(2, *action.shape[:-1])


def _formula(loss, data, *, k, lagrange_thresh=None, reduction="mean"):
    """The CQL terms in float64 NumPy, the draws taken from ``default_rng(11)`` in
    TorchRL's order."""
    rng = np.random.default_rng(11)
    b = data["action"].shape[0]
    actor_w = _flat(loss.actor_network_params)
    q_w, target_w = _flat(loss.qvalue_network_params), _flat(loss.target_qvalue_network_params)
    s, a, nxt = data["observation"], data["action"], data["next"]
    next_action, _ = _policy(actor_w, nxt["observation"], rng.standard_normal((b, ACT)))
    v_next = _q(target_w, nxt["observation"], next_action).min(0)
    y = nxt["reward"][:, 0] + 0.9 * (1 - nxt["terminated"][:, 0]) * v_next
    uniform = (LOW + HIGH) / 2 + (HIGH - LOW) / 2 * rng.uniform(-1, 1, (b, k, ACT))
    current, log_current = _policy(actor_w, s, rng.standard_normal((b, k, ACT)))
    following, log_following = _policy(
        actor_w, nxt["observation"], rng.standard_normal((b, k, ACT))
    )
    log_uniform = -np.sum(np.log(HIGH - LOW))
    proposals = np.concatenate(
        [
            _q(q_w, s[:, None], uniform) - log_uniform,
            _q(q_w, s[:, None], current) - log_current,
            _q(q_w, nxt["observation"][:, None], following) - log_following,
        ],
        axis=-1,
    )
    pred = _q(q_w, s, a)
    top = proposals.max(-1, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(proposals - top).sum(-1))
    cql = lse - pred  # w = T = 1
    diff = pred - y
    huber = np.where(np.abs(diff) < 1, 0.5 * diff**2, np.abs(diff) - 0.5).sum(0)
    _, log_bc = _policy(actor_w, s, rng.standard_normal((b, ACT)))
    actor_action, log_pi = _policy(actor_w, s, rng.standard_normal((b, ACT)))
    per_sample = {
        "loss_qvalue": huber,
        "loss_cql": cql.sum(0),
        "loss_actor": 0.5 * log_pi - _q(q_w, s, actor_action).min(0),
        "loss_actor_bc": 0.5 * log_bc - _log_prob_of(actor_w, s, a),
    }
    if lagrange_thresh is not None:  # α′ = 1 (log α′ = 0 at construction)
        per_sample["loss_cql"] = (cql - lagrange_thresh).sum(0)
        per_sample["loss_alpha_prime"] = -0.5 * (cql - lagrange_thresh).sum(0)
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda x: x}[reduction]
    out = {key: reduce(value) for key, value in per_sample.items()}
    if lagrange_thresh is not None and reduction != "none":
        out["loss_alpha_prime"] = np.mean(per_sample["loss_alpha_prime"])  # mean with "sum" too
    return out, (diff**2).max(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"with_lagrange": True, "lagrange_thresh": 0.3, "num_random": 3},
        {
            "reduction": "none",
            "scalar_output_mode": "exclude",
            "with_lagrange": True,
            "lagrange_thresh": -0.2,
            "num_random": 4,
        },
        {"reduction": "sum", "with_lagrange": True, "num_random": 2},
    ],
    ids=["box", "box,lagrange", "box,lagrange,none", "box,lagrange,sum"],
)
def test_cql_matches_the_numpy_formula_on_a_spec_box(kwargs):
    """The uniform proposals fill the spec's box ``[-2, 1] × [0, 3]`` with density
    ``1/9``; the log-sum-exp spans the ``3K`` proposals of each state."""
    loss = _arrayrl_cql(**kwargs)
    data = _numpy_batch()
    batch = ArrayDict(data, [5])
    out = loss(batch)
    expected, priority = _formula(
        loss,
        data,
        k=kwargs.get("num_random", 10),
        lagrange_thresh=kwargs.get("lagrange_thresh", 0.0) if "with_lagrange" in kwargs else None,
        reduction=kwargs.get("reduction", "mean"),
    )
    for key, value in expected.items():
        np.testing.assert_allclose(out[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(batch["td_error"], priority, rtol=1e-10, atol=1e-12)
    assert "td_error" not in out.keys() and "pred_q1" not in batch.keys()


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_cql_backends_agree_with_numpy(backend):
    pytest.importorskip(backend)
    from arrayrl.backends import backend_of, get_backend

    kwargs = {"with_lagrange": True, "max_q_backup": True, "num_random": 3}
    expected = _arrayrl_cql(**kwargs)(ArrayDict(_numpy_batch(), [5]))
    to = get_backend(backend).from_numpy

    def convert(tree):
        return {
            k: convert(v) if isinstance(v, dict) else to(np.asarray(v)) for k, v in tree.items()
        }

    loss = _arrayrl_cql(backend, get_backend(backend).xp.float64, **kwargs)
    got = loss(ArrayDict(convert(_numpy_batch()), [5]))
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        value = got[key]
        np.testing.assert_allclose(
            backend_of(value).to_numpy(value), expected[key], rtol=1e-10, atol=1e-12, err_msg=key
        )


# -- DiscreteCQLLoss ----------------------------------------------------------------------------
def _torchrl_qvalue_actor(space, dtype):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from torchrl.data import Categorical, OneHot
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import QValueActor

    torch.manual_seed(0)
    spec = OneHot(N_ACTIONS) if space == "one-hot" else Categorical(N_ACTIONS)
    net = TorchRLMLP(OBS, N_ACTIONS, num_cells=[8]).to(dtype)
    return QValueActor(net, in_keys=["observation"], spec=spec), spec


def _discrete_batch(space, shape, dtype, seed=1):
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, N_ACTIONS, shape, generator=g)
    action = torch.nn.functional.one_hot(index, N_ACTIONS) if space == "one-hot" else index
    done = torch.rand(*shape, 1, generator=g) < 0.3
    return TensorDict(
        {
            "observation": torch.randn(*shape, OBS, generator=g, dtype=dtype),
            "action": action,
            "next": {
                "observation": torch.randn(*shape, OBS, generator=g, dtype=dtype),
                "reward": torch.randn(*shape, 1, generator=g, dtype=dtype),
                "done": done,
                "terminated": done.clone(),
            },
        },
        shape,
    )


DISCRETE_CASES = {
    "one-hot": ("one-hot", (6,), {}),
    "one-hot,BxT,no_delay,smooth_l1": (
        "one-hot",
        (2, 3),
        {"delay_value": False, "loss_function": "smooth_l1"},
    ),
    "categorical": ("categorical", (6,), {"reduction": "sum"}),
    "categorical,BxT,none,l1": (
        "categorical",
        (2, 3),
        {"reduction": "none", "loss_function": "l1"},
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(DISCRETE_CASES), ids=str)
def test_discrete_cql_matches_torchrl(case, dtype):
    torch = pytest.importorskip("torch")
    from torchrl.objectives import DiscreteCQLLoss as TorchRLDiscreteCQL

    dtype = getattr(torch, dtype)
    space, shape, kwargs = DISCRETE_CASES[case]
    actor, spec = _torchrl_qvalue_actor(space, dtype)
    theirs = _quiet(lambda: TorchRLDiscreteCQL(actor, action_space=spec, **kwargs))
    mine = DiscreteCQLLoss(actor, action_space=spec, **kwargs)
    assert mine.action_space == space.replace("-", "_") and mine.in_keys == theirs.in_keys
    b_theirs, b_mine = (_discrete_batch(space, shape, dtype) for _ in range(2))
    out_theirs, out_mine = _quiet(lambda: theirs(b_theirs)), mine(b_mine)
    assert sorted(out_mine.keys()) == sorted(out_theirs.keys())
    for key in out_theirs.keys():
        assert out_mine[key].shape == out_theirs[key].shape, key
        torch.testing.assert_close(out_mine[key].detach(), out_theirs[key].detach(), msg=key)
    torch.testing.assert_close(b_mine["td_error"], b_theirs["td_error"].detach())
    assert "pred_val" not in b_mine.keys()
    for term in ("loss_qvalue", "loss_cql"):
        g_theirs = torch.autograd.grad(
            out_theirs[term].sum(), list(theirs.parameters()), retain_graph=True
        )
        g_mine = torch.autograd.grad(
            out_mine[term].sum(), list(mine.parameters()), retain_graph=True
        )
        for a, b in zip(g_mine, g_theirs, strict=True):
            torch.testing.assert_close(a, b, msg=term)


def _discrete_numpy(space="categorical", seed=3):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, N_ACTIONS, 6)
    done = rng.random((6, 1)) < 0.4
    return {
        "observation": rng.standard_normal((6, OBS)),
        "action": index if space == "categorical" else np.eye(N_ACTIONS, dtype=np.int64)[index],
        "next": {
            "observation": rng.standard_normal((6, OBS)),
            "reward": rng.standard_normal((6, 1)),
            "done": done,
            "terminated": done,
        },
    }


@pytest.mark.parametrize("space", ["one-hot", "categorical"])
def test_discrete_cql_bootstraps_from_the_target_parameters(space):
    """With ``delay_value`` the greedy target reads the target copy (TorchRL 0.14.1 reads
    the online network); checked against the formula in NumPy."""
    loss = DiscreteCQLLoss(
        ArrayQValueActor(MLP(OBS, N_ACTIONS, [8], seed=0, dtype=np.float64), action_space=space)
    )
    loss.make_value_estimator("td0", gamma=0.9)
    state = loss.state_dict()
    rng = np.random.default_rng(0)
    for key in state:
        if key.startswith("target_"):
            state[key] = state[key] + 0.3 * rng.standard_normal(state[key].shape)
    loss.load_state_dict(state)
    data = _discrete_numpy(space)
    batch = ArrayDict(data, [6])
    out = loss(batch)
    online = _flat(loss.value_network_params)
    target = _flat(loss.target_value_network_params)
    values = _mlp(online, data["observation"])
    index = data["action"] if space == "categorical" else data["action"].argmax(-1)
    chosen = values[np.arange(6), index]
    nxt = data["next"]
    y = nxt["reward"][:, 0] + 0.9 * (1 - nxt["terminated"][:, 0]) * _mlp(
        target, nxt["observation"]
    ).max(-1)
    top = values.max(-1)
    lse = top + np.log(np.exp(values - top[:, None]).sum(-1))
    np.testing.assert_allclose(out["target_value"], y.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["loss_qvalue"], np.mean(0.5 * (chosen - y) ** 2), rtol=1e-12)
    np.testing.assert_allclose(out["loss_cql"], np.mean(lse - chosen), rtol=1e-12)
    np.testing.assert_allclose(out["pred_value"], values.mean(), rtol=1e-12)
    np.testing.assert_allclose(batch["td_error"], ((chosen - y) ** 2)[:, None], rtol=1e-12)
    np.testing.assert_allclose(out["td_error"], [np.mean((chosen - y) ** 2)], rtol=1e-12)


def test_discrete_cql_wraps_bare_networks_and_refuses_bad_input():
    torch = pytest.importorskip("torch")
    layer = MLP(OBS, N_ACTIONS, [8], seed=0, dtype=np.float64)
    loss = DiscreteCQLLoss(layer, action_space="categorical")
    assert loss.action_space == "categorical"
    assert isinstance(loss(ArrayDict(_discrete_numpy(), [6]))["loss_cql"], np.ndarray)
    module = torch.nn.Linear(OBS, N_ACTIONS)
    assert DiscreteCQLLoss(module, action_space="one-hot").action_space == "one_hot"
    with pytest.raises(ValueError, match="needs action_space"):
        DiscreteCQLLoss(module)
    no_space = DictModule(layer, in_keys=["observation"], out_keys=["action_value"])
    with pytest.warns(UserWarning, match="action_space was not specified"):
        assert DiscreteCQLLoss(no_space).action_space == "one_hot"
    with pytest.raises(ValueError, match="loss_function"):
        DiscreteCQLLoss(layer, action_space="one-hot", loss_function="huber")
    with pytest.raises(TypeError, match="deprecated feature"):
        DiscreteCQLLoss(layer, action_space="one-hot", gamma=0.9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'delay_qvalue'"):
        DiscreteCQLLoss(layer, action_space="one-hot", delay_qvalue=False)
    with pytest.raises(ValueError, match="delay_value"):
        DiscreteCQLLoss(layer, action_space="one-hot", delay_value=None)
    batch = ArrayDict(_discrete_numpy(), [6])
    del batch["next", "reward"]
    with pytest.raises(KeyError, match="reward"):
        loss(batch)
    one_hot = DiscreteCQLLoss(layer, action_space="one-hot")
    with pytest.raises(ValueError, match="one_hot action must have the action values' shape"):
        one_hot(ArrayDict(_discrete_numpy("categorical"), [6]))
    with pytest.raises(ValueError, match="categorical action must be an index"):
        loss(ArrayDict(_discrete_numpy("one-hot"), [6]))
