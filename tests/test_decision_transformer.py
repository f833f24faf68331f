"""DTLoss and OnlineDTLoss against TorchRL 0.14.1 on the same actors, batches and noise
(MLP actors, and TorchRL's transformer ``DTActor`` / ``OnlineDTActor`` through the drop-in
adapter), against the losses computed by hand in NumPy, with property tests of the
temperature terms and the errors on bad input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor, TensorDictModule  # noqa: E402
from torchrl.data import Bounded as TorchRLBounded  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.modules import IndependentNormal as TorchRLIndependentNormal  # noqa: E402
from torchrl.modules import ProbabilisticActor as TorchRLProbabilisticActor  # noqa: E402
from torchrl.modules import TanhNormal as TorchRLTanhNormal  # noqa: E402
from torchrl.objectives import DTLoss as TorchRLDTLoss  # noqa: E402
from torchrl.objectives import OnlineDTLoss as TorchRLOnlineDTLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, Actor, DictModule, Sequential  # noqa: E402
from arrayrl.modules import NormalParamExtractor as ArrayNPE  # noqa: E402
from arrayrl.modules import distributions as dists  # noqa: E402
from arrayrl.modules.actors import ProbabilisticActor  # noqa: E402
from arrayrl.objectives.decision_transformer import DTLoss, OnlineDTLoss  # noqa: E402
from arrayrl.specs import Bounded  # noqa: E402

OBS, ACT, B, T = 3, 2, 4, 5
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
DTYPES = [torch.float32, torch.float64]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- TorchRL actors and batches -------------------------------------------------------------
def _context(dtype, seed=0, batch=(B,)):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, T)
    return TensorDict(
        observation=torch.randn(*shape, OBS, generator=g, dtype=dtype),
        return_to_go=torch.randn(*shape, 1, generator=g, dtype=dtype),
        action=torch.rand(*shape, ACT, generator=g, dtype=dtype) * 1.8 - 0.9,
        batch_size=list(batch),
    )


def _torchrl_deterministic(dtype, out_key="action"):
    torch.manual_seed(1)
    net = torch.nn.Sequential(TorchRLMLP(OBS, ACT, num_cells=[8]), torch.nn.Tanh())
    return TensorDictModule(net, ["observation"], [out_key]).to(dtype)


def _torchrl_stochastic(dtype, kind="tanh_normal", spec=True):
    torch.manual_seed(2)
    net = torch.nn.Sequential(TorchRLMLP(OBS, 2 * ACT, num_cells=[8]), NormalParamExtractor())
    module = TensorDictModule(net, ["observation"], ["loc", "scale"])
    cls = TorchRLTanhNormal if kind == "tanh_normal" else TorchRLIndependentNormal
    bounded = TorchRLBounded(-1.0, 1.0, shape=(ACT,), dtype=dtype) if spec else None
    return TorchRLProbabilisticActor(
        module, in_keys=["loc", "scale"], distribution_class=cls, spec=bounded
    ).to(dtype)


def _seeded(loss, batch, seed=0):
    """``loss(batch)`` after ``torch.manual_seed(seed)``, the global generator restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return loss(batch)


def _grads(out, keys, params):
    """``{(key, i): d out[key] / d params[i]}`` (zeros where a term does not reach)."""
    found = {}
    for key in keys:
        value = out[key] if isinstance(out, TensorDict) else out.get(key)
        if not value.requires_grad:  # a fixed temperature: loss_alpha has no graph
            grads = [None] * len(params)
        else:
            grads = torch.autograd.grad(value.sum(), params, retain_graph=True, allow_unused=True)
        for i, (p, g) in enumerate(zip(params, grads)):
            found[key, i] = torch.zeros_like(p) if g is None else g
    return found


def _assert_same(ours, theirs, keys, dtype):
    for key in keys:
        a, b = ours.get(key), theirs[key]
        assert a.dtype == b.dtype, key
        assert a.shape == b.shape, key
        torch.testing.assert_close(a, b, **TOL[dtype])


ONLINE_KEYS = ["loss_log_likelihood", "loss_entropy", "loss_alpha"]


# -- against TorchRL: MLP actors --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"loss_function": "l1", "reduction": "sum"},
        {"loss_function": "smooth_l1", "reduction": "none"},
    ],
)
def test_dt_matches_torchrl(dtype, kwargs):
    actor = _torchrl_deterministic(dtype)
    batch = _context(dtype)
    theirs = TorchRLDTLoss(actor, **kwargs)(batch.clone())
    ours = DTLoss(actor, **kwargs)(batch.clone())
    _assert_same(ours, theirs, ["loss"], dtype)
    params = list(actor.parameters())
    g1, g2 = _grads(ours, ["loss"], params), _grads(theirs, ["loss"], params)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "kind,kwargs",
    [
        ("tanh_normal", {}),
        ("normal", {"alpha_init": 0.5, "target_entropy": -0.3, "samples_mc_entropy": 3}),
        ("tanh_normal", {"min_alpha": 1.5, "reduction": "sum"}),
        ("tanh_normal", {"alpha_init": 4.0, "max_alpha": 2.0, "fixed_alpha": True}),
        ("normal", {"reduction": "none", "scalar_output_mode": "exclude"}),
    ],
)
def test_online_dt_matches_torchrl(dtype, kind, kwargs):
    actor = _torchrl_stochastic(dtype, kind)
    batch = _context(dtype)
    theirs_loss = TorchRLOnlineDTLoss(actor, **kwargs)
    ours_loss = OnlineDTLoss(actor, **kwargs)  # seed=None: torch's global generator
    theirs, ours = _seeded(theirs_loss, batch.clone()), _seeded(ours_loss, batch.clone())
    scalars = [] if kwargs.get("reduction") == "none" else ["alpha", "entropy"]
    _assert_same(ours, theirs, ONLINE_KEYS + scalars, dtype)
    assert set(ours.keys()) == set(theirs.keys())
    params = list(actor.parameters())
    trained = [] if kwargs.get("fixed_alpha") else [ours_loss.log_alpha]
    g1 = _grads(ours, ONLINE_KEYS, [*params, *trained])
    g2 = _grads(theirs, ONLINE_KEYS, [*params, *(theirs_loss.log_alpha for _ in trained)])
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], **TOL[dtype])
    names = {name for name, _ in ours_loss.named_parameters()}
    assert ("log_alpha" in names) == (not kwargs.get("fixed_alpha", False))
    torch.testing.assert_close(ours_loss.log_alpha, theirs_loss.log_alpha.data)


def test_online_dt_float32_temperature_on_float64_actor():
    """TorchRL keeps ``alpha``, ``log_alpha`` and ``target_entropy`` in float32."""
    actor = _torchrl_stochastic(torch.float64)
    loss = OnlineDTLoss(actor, target_entropy=-0.3)
    out = _seeded(loss, _context(torch.float64))
    assert loss.log_alpha.dtype == torch.float32
    assert out.get("alpha").dtype == torch.float32
    assert out.get("loss_alpha").dtype == torch.float64
    assert loss.target_entropy == float(np.float32(-0.3))
    assert TorchRLOnlineDTLoss(actor).target_entropy.item() == OnlineDTLoss(actor).target_entropy


# -- against TorchRL: the transformer actors -----------------------------------------------------
def _dt_config():
    pytest.importorskip("transformers")
    from torchrl.modules import DecisionTransformer

    return DecisionTransformer.DTConfig(n_embd=16, n_layer=1, n_head=2, n_inner=32, n_positions=32)


CONTEXT_KEYS = ["observation", "action", "return_to_go"]


def test_dt_actor_transformer_matches_torchrl():
    """TorchRL's ``DTActor`` (GPT-2, dropout on) through the adapter: same loss and
    gradients, the dropout masks drawn from torch's global generator in both."""
    from torchrl.modules import DTActor

    torch.manual_seed(3)
    actor = TensorDictModule(DTActor(OBS, ACT, _dt_config()), CONTEXT_KEYS, ["action"])
    batch = _context(torch.float32)
    theirs = _seeded(TorchRLDTLoss(actor), batch.clone(), seed=4)
    ours = _seeded(DTLoss(actor), batch.clone(), seed=4)
    _assert_same(ours, theirs, ["loss"], torch.float32)
    params = [p for p in actor.parameters()]
    g1, g2 = _grads(ours, ["loss"], params), _grads(theirs, ["loss"], params)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], **TOL[torch.float32])


def test_online_dt_actor_transformer_matches_torchrl():
    """TorchRL's ``OnlineDTActor`` in a TanhNormal ``ProbabilisticActor``: every output
    and gradient, the entropy draw and the dropout from the same torch noise."""
    from torchrl.modules import OnlineDTActor

    torch.manual_seed(5)
    net = OnlineDTActor(OBS, ACT, _dt_config())
    actor = TorchRLProbabilisticActor(
        TensorDictModule(net, CONTEXT_KEYS, ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TorchRLTanhNormal,
        spec=TorchRLBounded(-1.0, 1.0, shape=(ACT,)),
    )
    batch = _context(torch.float32)
    theirs_loss, ours_loss = TorchRLOnlineDTLoss(actor), OnlineDTLoss(actor)
    theirs = _seeded(theirs_loss, batch.clone(), seed=6)
    ours = _seeded(ours_loss, batch.clone(), seed=6)
    _assert_same(ours, theirs, [*ONLINE_KEYS, "alpha", "entropy"], torch.float32)
    params = list(net.parameters())
    g1 = _grads(ours, ONLINE_KEYS, [*params, ours_loss.log_alpha])
    g2 = _grads(theirs, ONLINE_KEYS, [*params, theirs_loss.log_alpha])
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], **TOL[torch.float32])


# -- NumPy, by hand ----------------------------------------------------------------------------
def _linear(seed=0):
    """An arrayrl one-layer MLP (``y = x Wᵀ + b``) and its weights."""
    mlp = MLP(OBS, ACT, [], seed=seed, dtype=np.float64)
    return mlp, np.asarray(mlp.params["0"]["weight"]), np.asarray(mlp.params["0"]["bias"])


def _numpy_context(seed=0, batch=(B,)):
    rng = np.random.default_rng(seed)
    shape = (*batch, T)
    return ArrayDict(
        {
            "observation": rng.standard_normal((*shape, OBS)),
            "return_to_go": rng.standard_normal((*shape, 1)),
            "action": rng.uniform(-0.9, 0.9, (*shape, ACT)),
        },
        batch,
    )


def _huber(d):
    return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)


@pytest.mark.parametrize(
    "loss_function,distance",
    [("l2", np.square), ("l1", np.abs), ("smooth_l1", _huber)],
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_dt_by_hand(loss_function, distance, reduction):
    mlp, w, b = _linear()
    batch = _numpy_context()
    expected = distance(batch.get("observation") @ w.T + b - batch.get("action"))
    expected = {"mean": expected.mean(), "sum": expected.sum(), "none": expected}[reduction]
    out = DTLoss(Actor(mlp), loss_function=loss_function, reduction=reduction)(batch)
    np.testing.assert_allclose(out.get("loss"), expected, rtol=1e-12)


def test_dt_does_not_touch_the_callers_batch_and_honours_keys():
    mlp, w, b = _linear()
    batch = _numpy_context()
    expert = batch.get("action").copy()
    DTLoss(Actor(mlp))(batch)
    np.testing.assert_array_equal(batch.get("action"), expert)
    renamed = ArrayDict({"observation": batch.get("observation"), "expert": expert}, (B,))
    loss = DTLoss(Actor(mlp, out_keys=["pred"]))
    loss.set_keys(action_target="expert", action_pred="pred")
    assert loss.in_keys == ["expert", "observation", "pred"]
    expected = np.mean((batch.get("observation") @ w.T + b - expert) ** 2)
    np.testing.assert_allclose(loss(renamed).get("loss"), expected, rtol=1e-12)
    assert "pred" not in renamed.keys()


def _numpy_normal_actor(seed=0):
    """An arrayrl IndependentNormal actor and a function giving its ``(loc, scale)``."""
    mlp = MLP(OBS, 2 * ACT, [], seed=seed, dtype=np.float64)
    module = DictModule(
        Sequential(mlp, ArrayNPE()), in_keys=["observation"], out_keys=["loc", "scale"]
    )
    actor = ProbabilisticActor(
        module, in_keys=["loc", "scale"], distribution_class=dists.IndependentNormal
    )

    def params(batch):
        out = module(ArrayDict({"observation": batch.get("observation")}, (B,)))
        return np.asarray(out.get("loc")), np.asarray(out.get("scale"))

    return actor, params


def test_online_dt_by_hand():
    """The log-likelihood is the Gaussian's; the entropy estimate over many draws is the
    closed-form Gaussian entropy (a statistical check); the temperature terms follow."""
    actor, params = _numpy_normal_actor()
    batch = _numpy_context()
    loc, scale = params(batch)
    a = batch.get("action")
    log_p = -0.5 * ((a - loc) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)
    loss = OnlineDTLoss(
        actor,
        alpha_init=0.7,
        target_entropy=-1.0,
        samples_mc_entropy=4000,
        seed=3,
        reduction="none",
        scalar_output_mode="non_tensor",
    )
    out = loss(batch)
    np.testing.assert_allclose(out.get("loss_log_likelihood"), -log_p.sum(-1), rtol=1e-12)
    exact = np.sum(0.5 * np.log(2 * math.pi * math.e * scale**2), axis=-1)
    entropy = -out.get("loss_entropy") / out.get("alpha")
    assert entropy.shape == (B, T)
    # 4000 draws of a sum of 2 Gaussian log-densities: standard error ~ 1/sqrt(4000)
    np.testing.assert_allclose(entropy, exact, atol=0.06)
    alpha = float(np.float32(0.7))
    np.testing.assert_allclose(out.get("alpha"), alpha, rtol=1e-7)
    np.testing.assert_allclose(out.get("loss_alpha"), alpha * (entropy + 1.0), rtol=1e-6)
    np.testing.assert_allclose(out.get("entropy"), entropy.mean(), rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    alpha_init=st.floats(0.01, 20.0),
    target_entropy=st.floats(-5.0, 5.0),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_online_dt_temperature_terms(alpha_init, target_entropy, reduction):
    """``loss_entropy = −α·H`` and ``loss_alpha = α·(H − H̄)``, reduced alike, for any
    temperature and target (α and H̄ rounded to float32 as TorchRL's)."""
    actor, _ = _numpy_normal_actor(1)
    loss = OnlineDTLoss(
        actor, alpha_init=alpha_init, target_entropy=target_entropy, reduction=reduction, seed=0
    )
    out = loss(_numpy_context(1))
    alpha = float(out.get("alpha"))
    assert out.get("alpha").dtype == np.float32
    assert alpha == pytest.approx(
        float(np.float32(math.exp(np.float32(math.log(alpha_init))))), rel=1e-6
    )
    n = 1 if reduction == "mean" else B * T
    total_entropy = float(out.get("entropy")) * n
    np.testing.assert_allclose(
        out.get("loss_entropy"), -alpha * total_entropy, rtol=1e-6, atol=1e-9
    )
    target = float(np.float32(target_entropy))
    np.testing.assert_allclose(
        out.get("loss_alpha"), alpha * (total_entropy - n * target), rtol=1e-6, atol=1e-6
    )


def test_online_dt_seeded_draws():
    actor, _ = _numpy_normal_actor()
    batch = _numpy_context()
    first = OnlineDTLoss(actor, target_entropy=0.0, seed=7)(batch).get("entropy")
    again = OnlineDTLoss(actor, target_entropy=0.0, seed=7)(batch).get("entropy")
    other = OnlineDTLoss(actor, target_entropy=0.0, seed=8)(batch).get("entropy")
    assert first == again
    assert first != other


def test_online_dt_alpha_bounds_and_auto_target_entropy():
    actor, _ = _numpy_normal_actor()
    loss = OnlineDTLoss(
        actor, alpha_init=5.0, max_alpha=2.0, action_spec=Bounded(-1.0, 1.0, shape=(ACT,)), seed=0
    )
    assert loss.target_entropy == -ACT
    out = loss(_numpy_context())
    np.testing.assert_allclose(out.get("alpha"), 2.0, rtol=1e-6)
    np.testing.assert_allclose(loss.log_alpha, np.float32(math.log(2.0)), rtol=1e-6)
    assert "log_alpha" in loss.state_dict()
    assert OnlineDTLoss(_torchrl_stochastic(torch.float32)).target_entropy == -ACT


# -- errors ------------------------------------------------------------------------------------
def test_dt_errors():
    mlp, _, _ = _linear()
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpha'"):
        DTLoss(Actor(mlp), alpha=1.0)
    with pytest.raises(ValueError, match="loss_function"):
        DTLoss(Actor(mlp), loss_function="l3")
    with pytest.raises(ValueError, match="reduction"):
        DTLoss(Actor(mlp), reduction="max")
    batch = _numpy_context()
    with pytest.raises(TypeError, match="'action' must be a floating array"):
        DTLoss(Actor(mlp))(batch.set("action", np.zeros((B, T, ACT), dtype=np.int64)))
    with pytest.raises(KeyError, match="expert"):
        loss = DTLoss(Actor(mlp))
        loss.set_keys(action_target="expert")
        loss(_numpy_context())
    wrong = _numpy_context()
    wrong.set("action", np.zeros((B, T, ACT + 1)))
    with pytest.raises(ValueError, match="shape"):
        DTLoss(Actor(mlp))(wrong)


def test_online_dt_errors():
    actor, _ = _numpy_normal_actor()
    with pytest.raises(RuntimeError, match="target entropy"):
        OnlineDTLoss(actor)
    with pytest.raises(TypeError, match="unexpected keyword argument 'gamma'"):
        OnlineDTLoss(actor, target_entropy=0.0, gamma=0.9)
    with pytest.raises(ValueError, match="samples_mc_entropy"):
        OnlineDTLoss(actor, target_entropy=0.0, samples_mc_entropy=0)
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="alpha_init"):
            OnlineDTLoss(actor, target_entropy=0.0, alpha_init=bad)
    with pytest.raises(ValueError, match="min_alpha"):
        OnlineDTLoss(actor, target_entropy=0.0, min_alpha=2.0, max_alpha=1.0)
    with pytest.raises(ValueError, match="target_entropy"):
        OnlineDTLoss(actor, target_entropy="big")
    with pytest.warns(UserWarning, match="reduction='none'"):
        OnlineDTLoss(actor, target_entropy=0.0, reduction="none")
    wrong = _numpy_context()
    wrong.set("action", np.zeros((B, T, ACT + 1)))
    with pytest.raises(ValueError, match="outcomes of shape"):
        OnlineDTLoss(actor, target_entropy=0.0)(wrong)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnlineDTLoss(actor, target_entropy=0.0, reduction="none", scalar_output_mode="exclude")
