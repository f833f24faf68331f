"""BCLoss against TorchRL 0.14.1 on the same actors and batches, and against the
behaviour-cloning losses computed by hand in NumPy.

Every loss function (``l1``, ``l2``, ``mse``, ``smooth_l1``, ``cross_entropy``, a
callable), every default path (deterministic actor: MSE; stochastic actor: negative
log-likelihood; integer actions: cross-entropy of the logits), ``pad_mask`` with its
broadcasting and reductions, the 0.14 action-key rules, and the places where arrayrl
computes what TorchRL raises on.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor, TensorDictModule  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.modules import IndependentNormal as TorchRLIndependentNormal  # noqa: E402
from torchrl.modules import OneHotCategorical as TorchRLOneHotCategorical  # noqa: E402
from torchrl.modules import ProbabilisticActor as TorchRLProbabilisticActor  # noqa: E402
from torchrl.modules import TanhNormal as TorchRLTanhNormal  # noqa: E402
from torchrl.objectives import BCLoss as TorchRLBCLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, Actor, DictModule, flatten_params  # noqa: E402
from arrayrl.modules import distributions as dists  # noqa: E402
from arrayrl.modules.actors import ProbabilisticActor  # noqa: E402
from arrayrl.objectives.bc import BCLoss  # noqa: E402

OBS, ACT, N_CLASSES = 3, 2, 5
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
LOSS_FUNCTIONS = ["l1", "l2", "mse", "smooth_l1"]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- TorchRL actors and batches -------------------------------------------------------------------
def _deterministic(dtype, out_key="action"):
    net = torch.nn.Sequential(TorchRLMLP(OBS, ACT, num_cells=[8]), torch.nn.Tanh())
    return TensorDictModule(net, ["observation"], [out_key]).to(dtype)


def _logits(dtype):
    """A network writing the class logits at ``"action"`` (TorchRL's cross-entropy path)."""
    return TensorDictModule(
        TorchRLMLP(OBS, N_CLASSES, num_cells=[8]), ["observation"], ["action"]
    ).to(dtype)


def _stochastic(kind, dtype):
    if kind == "one_hot":
        net = TensorDictModule(
            TorchRLMLP(OBS, N_CLASSES, num_cells=[8]), ["observation"], ["logits"]
        )
        return TorchRLProbabilisticActor(
            net, in_keys=["logits"], distribution_class=TorchRLOneHotCategorical
        ).to(dtype)
    if kind == "categorical":
        net = TensorDictModule(
            TorchRLMLP(OBS, N_CLASSES, num_cells=[8]), ["observation"], ["logits"]
        )
        return TorchRLProbabilisticActor(
            net, in_keys=["logits"], distribution_class=torch.distributions.Categorical
        ).to(dtype)
    net = TensorDictModule(
        torch.nn.Sequential(TorchRLMLP(OBS, 2 * ACT, num_cells=[8]), NormalParamExtractor()),
        ["observation"],
        ["loc", "scale"],
    )
    cls = TorchRLTanhNormal if kind == "tanh_normal" else TorchRLIndependentNormal
    return TorchRLProbabilisticActor(net, in_keys=["loc", "scale"], distribution_class=cls).to(
        dtype
    )


def _batch(shape, dtype, action="continuous", seed=0, **extra):
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(*shape, OBS, generator=gen, dtype=dtype)
    if action == "continuous":
        act = 1.8 * torch.rand(*shape, ACT, generator=gen, dtype=dtype) - 0.9
    elif action == "index":
        act = torch.randint(0, N_CLASSES, shape, generator=gen)
    elif action == "index1":
        act = torch.randint(0, N_CLASSES, (*shape, 1), generator=gen)
    elif action == "one_hot":
        index = torch.randint(0, N_CLASSES, shape, generator=gen)
        act = torch.nn.functional.one_hot(index, N_CLASSES).to(dtype)
    else:  # class probabilities
        act = torch.softmax(torch.randn(*shape, N_CLASSES, generator=gen, dtype=dtype), -1)
    return TensorDict({"observation": obs, "action": act, **extra}, batch_size=shape)


def _pair(actor, pad_mask=None, **kwargs):
    ref = TorchRLBCLoss(copy.deepcopy(actor), **kwargs)
    mine = BCLoss(copy.deepcopy(actor), **kwargs)
    if pad_mask is not None:
        for loss in (ref, mine):
            loss.set_keys(pad_mask=pad_mask)
    return ref, mine


def _grads(loss, value):
    params = list(loss.parameters())
    if not value.requires_grad:
        return [torch.zeros_like(p) for p in params]
    found = torch.autograd.grad(value.sum(), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]


def _compare(ref, mine, td):
    """``loss_bc`` (value, shape, dtype) and its gradient with respect to every parameter;
    the caller's batch is not written."""
    expected = ref(td.clone())["loss_bc"]
    mine_td = td.clone()
    before = {k: v.clone() for k, v in mine_td.items(True, True)}
    got_out = mine(mine_td)
    assert type(got_out).__name__ == "TensorDict"
    assert list(got_out.keys()) == ["loss_bc"]
    got = got_out["loss_bc"]
    for key, value in before.items():
        assert torch.equal(mine_td.get(key), value), key
    tol = TOL[td["observation"].dtype]
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, **tol)
    for g, e in zip(_grads(mine, got), _grads(ref, expected), strict=True):
        torch.testing.assert_close(g, e, **tol)
    return expected, got


DTYPES = [torch.float32, torch.float64]


# -- every loss function and default path against TorchRL -----------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("loss_function", [None, *LOSS_FUNCTIONS])
def test_distances_match_torchrl(dtype, shape, loss_function):
    ref, mine = _pair(_deterministic(dtype), loss_function=loss_function)
    _compare(ref, mine, _batch(shape, dtype))


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("loss_function", ["l1", "smooth_l1"])
def test_reductions_match_torchrl(reduction, loss_function):
    dtype = torch.float64
    ref, mine = _pair(_deterministic(dtype), loss_function=loss_function, reduction=reduction)
    expected, _ = _compare(ref, mine, _batch((3, 4), dtype))
    assert expected.shape == ((3, 4, ACT) if reduction == "none" else ())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("kind", ["tanh_normal", "normal"])
def test_stochastic_actor_likelihood_matches_torchrl(dtype, shape, kind):
    for reduction in ("mean", "none"):
        ref, mine = _pair(_stochastic(kind, dtype), reduction=reduction)
        expected, _ = _compare(ref, mine, _batch(shape, dtype))
        assert expected.shape == (shape if reduction == "none" else ())


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_actor_likelihood_matches_torchrl(dtype):
    ref, mine = _pair(_stochastic("one_hot", dtype), reduction="none")
    _compare(ref, mine, _batch((6,), dtype, action="one_hot"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("action", ["index", "index1"])
@pytest.mark.parametrize("loss_function", [None, "cross_entropy"])
def test_cross_entropy_of_indices_matches_torchrl(dtype, action, loss_function):
    for reduction in ("mean", "none"):
        ref, mine = _pair(_logits(dtype), loss_function=loss_function, reduction=reduction)
        _compare(ref, mine, _batch((6,), dtype, action=action))


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_probabilities_matches_torchrl(dtype):
    for reduction in ("mean", "sum", "none"):
        ref, mine = _pair(_logits(dtype), loss_function="cross_entropy", reduction=reduction)
        _compare(ref, mine, _batch((6,), dtype, action="probs"))


def test_ignore_index_matches_torchrl():
    """An index of -100 contributes 0 (torch's ignore_index) but counts in the mean."""
    dtype = torch.float64
    td = _batch((6,), dtype, action="index")
    td["action"][1] = -100
    for reduction in ("mean", "none"):
        ref, mine = _pair(_logits(dtype), reduction=reduction)
        _, got = _compare(ref, mine, td)
    assert got[1] == 0


def test_callable_matches_torchrl():
    dtype = torch.float64

    def cubic(prediction, expert):
        return (prediction - expert).abs() ** 3

    ref, mine = _pair(_deterministic(dtype), loss_function=cubic, reduction="sum")
    _compare(ref, mine, _batch((3, 4), dtype))


# -- pad_mask -------------------------------------------------------------------------------------
def _padded(shape, dtype, mask_shape, seed=1, collector=False, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    extra = {"pad": torch.rand(*mask_shape, generator=gen) < 0.4}
    if collector:
        extra["collector"] = {"mask": torch.rand(*shape, 1, generator=gen) < 0.8}
    return _batch(shape, dtype, **kwargs, **extra)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "shape,mask_shape", [((5,), (5,)), ((3, 4), (3, 4)), ((3, 4), (3, 4, ACT))]
)
def test_pad_mask_matches_torchrl(dtype, reduction, shape, mask_shape):
    """A mask broadcast over the trailing dims of the element-wise loss, or of its shape,
    with a collector mask too; "none" returns the valid elements, flat."""
    ref, mine = _pair(
        _deterministic(dtype), pad_mask="pad", loss_function="l1", reduction=reduction
    )
    td = _padded(shape, dtype, mask_shape, collector=True)
    expected, _ = _compare(ref, mine, td)
    if reduction == "none":
        assert expected.ndim == 1


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_pad_mask_on_the_likelihood_matches_torchrl(reduction):
    dtype = torch.float64
    ref, mine = _pair(_stochastic("normal", dtype), pad_mask="pad", reduction=reduction)
    _compare(ref, mine, _padded((3, 4), dtype, (3, 4)))


def test_pad_mask_of_chunked_actions_matches_torchrl():
    """TorchRL's VLA example: a [B, H, A] action chunk under a nested key, a [B, H] mask."""
    dtype = torch.float32
    net = torch.nn.Sequential(torch.nn.Linear(OBS, 8), torch.nn.Unflatten(-1, (4, ACT)))
    actor = TensorDictModule(net, ["observation"], [("vla", "chunk")]).to(dtype)
    ref, mine = _pair(actor, pad_mask="is_pad", loss_function="l1")
    for loss in (ref, mine):
        loss.set_keys(action=("vla", "chunk"))
    gen = torch.Generator().manual_seed(3)
    td = TensorDict(
        {
            "observation": torch.randn(5, OBS, generator=gen),
            "vla": {"chunk": torch.randn(5, 4, ACT, generator=gen)},
            "is_pad": torch.rand(5, 4, generator=gen) < 0.3,
        },
        batch_size=[5],
    )
    _compare(ref, mine, td)
    assert ("vla", "chunk") in mine.in_keys and "is_pad" in mine.in_keys


def test_wholly_padded_batch():
    """mean: 0 (divided by max(1, valid count), as TorchRL computes); none: empty."""
    dtype = torch.float64
    td = _batch((4,), dtype, pad=torch.ones(4, dtype=torch.bool))
    for reduction in ("mean", "none"):
        ref, mine = _pair(_deterministic(dtype), pad_mask="pad", reduction=reduction)
        _, got = _compare(ref, mine, td)
        assert got.numel() == (1 if reduction == "mean" else 0)
        assert float(got.detach().sum()) == 0.0


def test_pad_mask_absent_from_the_batch_masks_nothing():
    dtype = torch.float64
    ref, mine = _pair(_deterministic(dtype), pad_mask="pad", reduction="none")
    expected, _ = _compare(ref, mine, _batch((4,), dtype))
    assert expected.shape == (4, ACT)


# -- the action key (TorchRL 0.14) ----------------------------------------------------------------
def test_prediction_at_a_renamed_action_key_matches_torchrl():
    dtype = torch.float64
    ref, mine = _pair(_deterministic(dtype, out_key="expert"))
    for loss in (ref, mine):
        loss.set_keys(action="expert")
    td = _batch((5,), dtype)
    td.rename_key_("action", "expert")
    _compare(ref, mine, td)


def test_legacy_action_key_warns_as_torchrl():
    dtype = torch.float64
    ref, mine = _pair(_deterministic(dtype))  # writes "action"
    for loss in (ref, mine):
        loss.set_keys(action="expert")
    td = _batch((5,), dtype)
    td["expert"] = td["action"] + 0.1
    for loss in (ref, mine):
        with pytest.warns(FutureWarning, match="'action'"):
            loss(td.clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _compare(ref, mine, td)


def test_actor_writing_no_prediction_raises_as_torchrl():
    dtype = torch.float64
    _, mine = _pair(_deterministic(dtype, out_key="other"))
    with pytest.raises(RuntimeError, match="did not write a prediction at 'action'"):
        mine(_batch((5,), dtype))


# -- where TorchRL raises: arrayrl computes the loss the equations define -------------------------
def test_cross_entropy_over_time_is_per_position():
    """[B, T, C] logits, [B, T, 1] indices: TorchRL's F.cross_entropy reads classes on axis
    1 and raises; arrayrl's loss equals TorchRL's on the flattened [B*T] batch."""
    dtype = torch.float64
    td = _batch((3, 4), dtype, action="index1")
    ref, mine = _pair(_logits(dtype), reduction="none")
    with pytest.raises(RuntimeError):
        ref(td.clone())
    got = mine(td)["loss_bc"]
    expected = ref(td.reshape(-1))["loss_bc"].reshape(3, 4)
    torch.testing.assert_close(got, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_integer_indices_of_any_dtype(dtype):
    """TorchRL takes only int64 indices (int32 raises, smaller ones fall through to MSE
    and raise); arrayrl takes any integer dtype as class indices."""
    td = _batch((6,), torch.float64, action="index")
    ref, mine = _pair(_logits(torch.float64), reduction="none")
    expected = ref(td.clone())["loss_bc"]
    td["action"] = td["action"].to(dtype)
    torch.testing.assert_close(mine(td)["loss_bc"], expected)


def test_integer_actions_of_a_categorical_actor_are_scored_by_likelihood():
    """TorchRL applies cross-entropy to the actor's sampled index and raises; arrayrl
    scores −log π(a | s) = cross-entropy of the actor's logits."""
    dtype = torch.float64
    actor = _stochastic("categorical", dtype)
    td = _batch((6,), dtype, action="index1")
    ref, mine = _pair(actor, reduction="none")
    with pytest.raises(RuntimeError):
        ref(td.clone())
    logits = actor.module[0](td.clone())["logits"]
    expected = torch.nn.functional.cross_entropy(logits, td["action"][:, 0], reduction="none")
    torch.testing.assert_close(mine(td)["loss_bc"], expected, **TOL[dtype])


# -- NumPy, by hand -------------------------------------------------------------------------------
def _numpy_actor(out=ACT):
    mlp = MLP(OBS, out, [], seed=0, backend="numpy", dtype="float64")
    return Actor(mlp), mlp


def _numpy_linear(mlp, obs):
    flat = flatten_params(mlp.params)
    return obs @ np.asarray(flat["0.weight"]).T + np.asarray(flat["0.bias"])


def _numpy_batch(shape=(4, 3), action="continuous", seed=0, **extra):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((*shape, OBS))
    if action == "continuous":
        act = rng.uniform(-1, 1, (*shape, ACT))
    elif action == "index":
        act = rng.integers(0, N_CLASSES, shape)
    else:
        act = rng.dirichlet(np.ones(N_CLASSES), shape)
    return ArrayDict({"observation": obs, "action": act, **extra}, batch_size=shape)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_numpy_distances_by_hand():
    actor, mlp = _numpy_actor()
    batch = _numpy_batch()
    d = _numpy_linear(mlp, batch["observation"]) - batch["action"]
    expected = {
        "l1": np.abs(d),
        "l2": d**2,
        "mse": d**2,
        "smooth_l1": np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5),
        None: d**2,
    }
    for name, value in expected.items():
        got = BCLoss(actor, loss_function=name, reduction="none")(batch)["loss_bc"]
        np.testing.assert_allclose(got, value, rtol=1e-12, err_msg=str(name))
        got = BCLoss(actor, loss_function=name)(batch)["loss_bc"]
        np.testing.assert_allclose(got, value.mean(), rtol=1e-12, err_msg=str(name))


def test_numpy_cross_entropy_by_hand():
    actor, mlp = _numpy_actor(N_CLASSES)
    log_p = _log_softmax(_numpy_linear(mlp, _numpy_batch()["observation"]))
    batch = _numpy_batch(action="index")
    got = BCLoss(actor, reduction="none")(batch)["loss_bc"]
    index = batch["action"]
    np.testing.assert_allclose(
        got, -np.take_along_axis(log_p, index[..., None], -1)[..., 0], rtol=1e-12
    )
    batch = _numpy_batch(action="probs")
    got = BCLoss(actor, loss_function="cross_entropy", reduction="sum")(batch)["loss_bc"]
    np.testing.assert_allclose(got, -(batch["action"] * log_p).sum(), rtol=1e-12)


def test_numpy_likelihood_by_hand():
    mlp = MLP(OBS, ACT, [], seed=0, backend="numpy", dtype="float64")
    actor = ProbabilisticActor(
        DictModule(mlp, in_keys=["observation"], out_keys=["loc"]),
        in_keys=["loc"],
        distribution_class=dists.Normal,
        distribution_kwargs={"scale": 0.5},
    )
    batch = _numpy_batch()
    loc = _numpy_linear(mlp, batch["observation"])
    z = (batch["action"] - loc) / 0.5
    nll = 0.5 * z**2 + np.log(0.5) + 0.5 * np.log(2 * np.pi)
    got = BCLoss(actor, reduction="none")(batch)["loss_bc"]  # Normal: per element
    np.testing.assert_allclose(got, nll, rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    pad=st.lists(st.booleans(), min_size=12, max_size=12),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_pad_mask_keeps_exactly_the_unpadded_elements(pad, reduction):
    """Against NumPy: the valid elements of the element-wise loss, their sum, or their
    mean (over at least one element)."""
    actor, mlp = _numpy_actor()
    pad = np.array(pad).reshape(4, 3)
    batch = _numpy_batch(pad=pad)
    loss = BCLoss(actor, loss_function="l1", reduction=reduction).set_keys(pad_mask="pad")
    got = loss(batch)["loss_bc"]
    elementwise = np.abs(_numpy_linear(mlp, batch["observation"]) - batch["action"])
    valid = elementwise[~pad]  # [n_valid, ACT]
    expected = {
        "none": valid.reshape(-1),
        "sum": valid.sum(),
        "mean": valid.sum() / max(1, valid.size),
    }[reduction]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("loss_function", [None, "smooth_l1", "cross_entropy"])
def test_backends_agree(loss_function):
    pytest.importorskip("array_api_strict")
    actor_out = N_CLASSES if loss_function == "cross_entropy" else ACT
    batch = _numpy_batch(
        action="index" if loss_function == "cross_entropy" else "continuous",
        pad=np.eye(4, 3, dtype=bool),
    )
    results = {}
    for backend in ("numpy", "torch", "array_api_strict"):
        loss = BCLoss(_numpy_actor(actor_out)[0], loss_function=loss_function, reduction="none").to(
            backend
        )
        loss.set_keys(pad_mask="pad")
        got = loss(batch.to(backend))["loss_bc"]
        results[backend] = loss.backend.to_numpy(loss.backend.stop_gradient(got))
    for backend in ("torch", "array_api_strict"):
        np.testing.assert_allclose(results[backend], results["numpy"], rtol=1e-12)


# -- errors ---------------------------------------------------------------------------------------
def test_constructor_refusals():
    actor, _ = _numpy_actor()
    with pytest.raises(ValueError, match="unknown loss_function 'huber'"):
        BCLoss(actor, loss_function="huber")
    with pytest.raises(TypeError, match="loss_function"):
        BCLoss(actor, loss_function=3)
    with pytest.raises(ValueError, match="reduction"):
        BCLoss(actor, reduction="max")
    with pytest.raises(TypeError, match="unexpected keyword"):
        BCLoss(actor, alpha=1.0)
    with pytest.raises(TypeError):
        BCLoss(actor, "l1")  # keyword-only, as TorchRL
    with pytest.raises(ValueError, match="pad"):
        BCLoss(actor).set_keys(pad="x")


def test_bad_batches_name_the_problem():
    actor, _ = _numpy_actor()
    batch = _numpy_batch()
    with pytest.raises(KeyError, match="action"):
        BCLoss(actor)(batch.exclude("action"))
    wide = batch.clone().set("action", np.zeros((4, 3, ACT + 1)))
    with pytest.raises(ValueError, match="shape"):
        BCLoss(actor)(wide)
    with pytest.raises(TypeError, match="floating"):
        BCLoss(actor, loss_function="l2")(batch.clone().set("action", np.zeros((4, 3, ACT), int)))
    padded = BCLoss(actor, loss_function="l1").set_keys(pad_mask="pad")
    with pytest.raises(TypeError, match="boolean"):
        padded(batch.clone().set("pad", np.zeros((4, 3))))
    with pytest.raises(ValueError, match="pad_mask"):
        padded(batch.clone().set("pad", np.zeros((4, 3, ACT + 3), bool)))
    classes, _ = _numpy_actor(N_CLASSES)
    with pytest.raises(ValueError, match="class indices"):
        BCLoss(classes)(_numpy_batch(action="index").set("action", np.zeros((4, 3, 2), np.int64)))


def test_pad_mask_on_a_per_sample_loss_raises():
    dtype = torch.float64
    ref, mine = _pair(_stochastic("normal", dtype), pad_mask="pad")
    td = _padded((3,), dtype, (3, 4))
    for loss in (ref, mine):
        with pytest.raises(RuntimeError, match="more dimensions"):
            loss(td.clone())


def test_distribution_keys_without_get_dist_raise():
    dtype = torch.float64
    net = TensorDictModule(torch.nn.Linear(OBS, ACT), ["observation"], ["loc"]).to(dtype)
    with pytest.raises(TypeError, match="get_dist"):
        BCLoss(net)(_batch((4,), dtype))


def test_expert_shape_must_match_the_distribution():
    dtype = torch.float64
    loss = BCLoss(_stochastic("one_hot", dtype))
    with pytest.raises(ValueError, match="OneHotCategorical"):
        loss(_batch((4,), dtype, action="index"))  # indices for one-hot outcomes


def test_out_of_range_index_is_nan():
    actor, _ = _numpy_actor(N_CLASSES)
    batch = _numpy_batch(action="index")
    batch["action"][0, 0] = N_CLASSES
    got = BCLoss(actor, reduction="none")(batch)["loss_bc"]
    assert np.isnan(got[0, 0]) and np.isfinite(got[1:]).all()


def test_params_argument_makes_forward_a_pure_function():
    actor, mlp = _numpy_actor()
    loss = BCLoss(actor, reduction="none")
    batch = _numpy_batch()
    own = {"actor_network": loss.network_params("actor_network", None)}
    np.testing.assert_array_equal(loss(batch, params=own)["loss_bc"], loss(batch)["loss_bc"])
    doubled = {
        "module": {
            k: {n: 2 * v for n, v in layer.items()}
            for k, layer in own["actor_network"]["module"].items()
        }
    }
    flat = flatten_params(mlp.params)
    prediction = 2 * _numpy_linear(mlp, batch["observation"])
    assert flat  # the actor's own weights are left as they were
    np.testing.assert_allclose(
        loss(batch, params={"actor_network": doubled})["loss_bc"],
        (prediction - batch["action"]) ** 2,
        rtol=1e-12,
    )
    with pytest.raises(KeyError, match="critic"):
        loss(batch, params={"critic": doubled})
