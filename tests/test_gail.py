"""GAILLoss against TorchRL 0.14.1 on the same discriminator, batch and torch noise, against
the discriminator loss written out in NumPy, and the ``Backend.input_gradients``
capability the gradient penalty needs (torch, JAX; NumPy and array-api-strict refuse).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from arrayrl.backends import backend_of, get_backend  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.modules import MLP as TorchRLMLP  # noqa: E402
from torchrl.objectives import GAILLoss as TorchRLGAILLoss  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import (  # noqa: E402
    MLP,
    DictModule,
    Sequential,
    Sigmoid,
    flatten_params,
)
from arrayrl.objectives.gail import GAILLoss  # noqa: E402

OBS, ACT, HIDDEN = 3, 2, 8
F32 = dict(rtol=1e-5, atol=1e-6)


# -- helpers -----------------------------------------------------------------------------------
def _batch_np(shape: tuple[int, ...], seed: int = 0, dtype: type = np.float32) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation": rng.standard_normal((*shape, OBS)).astype(dtype),
        "action": rng.uniform(-1, 1, (*shape, ACT)).astype(dtype),
        "collector_observation": (0.5 + rng.standard_normal((*shape, OBS))).astype(dtype),
        "collector_action": rng.uniform(-0.5, 1, (*shape, ACT)).astype(dtype),
    }


def _torchrl_discriminator(dtype: torch.dtype = torch.float32) -> tuple:
    torch.manual_seed(3)
    mlp = TorchRLMLP(in_features=OBS + ACT, out_features=1, num_cells=[HIDDEN]).to(dtype)
    module = TensorDictSequential(
        TensorDictModule(mlp, ["observation", "action"], ["logit"]),
        TensorDictModule(torch.nn.Sigmoid(), ["logit"], ["d_logits"]),
    )
    return module, mlp


def _arrayrl_discriminator(
    *, logits: bool = False, backend: str = "numpy", dtype: type = np.float64
) -> tuple:
    mlp = MLP(OBS + ACT, 1, [HIDDEN], seed=5, dtype=dtype)
    head = mlp if logits else Sequential(mlp, Sigmoid())
    return DictModule(head, ["observation", "action"], ["d_logits"]).to(backend), mlp


def _weights(mlp: MLP) -> dict[str, np.ndarray]:
    return {k: np.asarray(backend_of(v).to_numpy(v)) for k, v in flatten_params(mlp.params).items()}


def _numpy_d(w: dict, obs: np.ndarray, act: np.ndarray, logits: bool = False) -> np.ndarray:
    x = np.concatenate([obs, act], -1).astype(np.float64)
    z = np.tanh(x @ w["0.weight"].T + w["0.bias"]) @ w["2.weight"].T + w["2.bias"]
    return z if logits else 1 / (1 + np.exp(-z))


def _numpy_bce_terms(w: dict, b: dict) -> np.ndarray:
    """``−log D(expert) − log(1 − D(collector))`` per pair, by hand."""
    expert = _numpy_d(w, b["observation"], b["action"])
    collector = _numpy_d(w, b["collector_observation"], b["collector_action"])
    return -np.log(expert) - np.log(1 - collector)


# -- the Backend capability --------------------------------------------------------------------
def test_torch_input_gradients_are_differentiable_again():
    x = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (g,) = backend_of(x).input_gradients(lambda a: torch.sin(a * w), x)
    torch.testing.assert_close(g, torch.cos(x * w) * w)
    assert not x.requires_grad  # the caller's tensor is left alone
    (dw,) = torch.autograd.grad(g.sum(), w)
    # d/dw Σ cos(x w) w = Σ_rows (cos(x w) − x w sin(x w))
    expected = (torch.cos(x * w) - x * w * torch.sin(x * w)).sum(0)
    torch.testing.assert_close(dw, expected)


def test_torch_input_gradients_under_no_grad_and_unused_inputs():
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    with torch.no_grad():
        gx, gy = backend_of(x).input_gradients(lambda a, b: (a**2).sum(-1), x, y)
    torch.testing.assert_close(gx, 2 * x)
    torch.testing.assert_close(gy, torch.zeros_like(y))


def test_jax_input_gradients_under_an_outer_grad():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)), dtype=jnp.float32)
    w0 = jnp.asarray([0.3, -1.2, 0.7], dtype=jnp.float32)
    backend = backend_of(x)

    def outer(w):
        (g,) = backend.input_gradients(lambda a: jnp.sin(a * w), x)
        return jnp.sum(g)

    xn, wn = np.asarray(x, np.float64), np.asarray(w0, np.float64)
    expected = (np.cos(xn * wn) - xn * wn * np.sin(xn * wn)).sum(0)
    np.testing.assert_allclose(np.asarray(jax.grad(outer)(w0)), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_backends_without_autograd_refuse_input_gradients(name):
    pytest.importorskip(name)
    backend = get_backend(name)
    x = backend.from_numpy(np.ones((2, 3)))
    with pytest.raises(NotImplementedError, match=f"'{name}'.*torch.*JAX"):
        backend.input_gradients(lambda a: a, x)


# -- against TorchRL ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("penalty", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torchrl_with_its_own_discriminator(shape, penalty, reduction):
    """TorchRL's TensorDictModule through the adapter; the same torch.manual_seed gives
    the same interpolation noise; every output and every gradient."""
    module, mlp = _torchrl_discriminator()
    td = TensorDict({k: torch.from_numpy(v) for k, v in _batch_np(shape).items()}, list(shape))
    kwargs = dict(use_grad_penalty=penalty, reduction=reduction)
    torch.manual_seed(11)
    expected = TorchRLGAILLoss(module, **kwargs)(td)
    expected_grads = torch.autograd.grad(expected["loss"].sum(), list(mlp.parameters()))
    torch.manual_seed(11)
    loss = GAILLoss(module, **kwargs)
    got = loss(td)
    assert isinstance(got, TensorDict)
    assert set(got.keys()) == set(expected.keys()) == set(loss.out_keys)
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], **F32)
    grads = torch.autograd.grad(got["loss"].sum(), list(mlp.parameters()))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, **F32)
    if penalty:
        assert not got["gp_loss"].requires_grad
    assert [p for _, p in loss.named_parameters()] == list(mlp.parameters())


def test_matches_torchrl_with_collector_mask_and_keys():
    _, mlp = _torchrl_discriminator()
    b = _batch_np((8,))
    renamed = {
        "expert_obs": b["observation"],
        "expert_act": b["action"],
        "policy_obs": b["collector_observation"],
        "policy_act": b["collector_action"],
    }
    mask = np.arange(8) % 3 != 0
    td = TensorDict(
        {**{k: torch.from_numpy(v) for k, v in renamed.items()},
         "collector": {"mask": torch.from_numpy(mask)}},
        [8],
    )  # fmt: skip
    disc = TensorDictSequential(
        TensorDictModule(mlp, ["expert_obs", "expert_act"], ["logit"]),
        TensorDictModule(torch.nn.Sigmoid(), ["logit"], ["score"]),
    )
    keys = dict(
        expert_observation="expert_obs",
        expert_action="expert_act",
        collector_observation="policy_obs",
        collector_action="policy_act",
        discriminator_pred="score",
    )
    expected = TorchRLGAILLoss(disc)
    expected.set_keys(**keys)
    loss = GAILLoss(disc).set_keys(**keys)
    assert loss.in_keys == expected.in_keys
    torch.testing.assert_close(loss(td)["loss"], expected(td)["loss"], **F32)


# -- against the formulas written out in NumPy -------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float64_numpy_matches_the_formula(reduction):
    """float64 (where TorchRL raises), on NumPy, with a collector mask."""
    disc, mlp = _arrayrl_discriminator()
    b = _batch_np((4, 5), dtype=np.float64)
    mask = np.random.default_rng(1).random((4, 5)) < 0.7
    out = GAILLoss(disc, reduction=reduction)(ArrayDict({**b, "collector": {"mask": mask}}, (4, 5)))
    terms = np.where(mask[..., None], _numpy_bce_terms(_weights(mlp), b), 0.0)
    expected = {"none": terms, "sum": terms.sum(), "mean": terms.sum() / mask.sum()}[reduction]
    assert out["loss"].dtype == np.float64
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_backends_agree_without_penalty(backend):
    pytest.importorskip(backend)
    disc, mlp = _arrayrl_discriminator()
    b = _batch_np((6,), dtype=np.float64)
    expected = _numpy_bce_terms(_weights(mlp), b).mean()
    loss = GAILLoss(disc).to(backend)
    out = loss(ArrayDict(b, (6,)).to(backend))
    value = backend_of(out["loss"]).to_numpy(out["loss"])
    np.testing.assert_allclose(value, expected, rtol=1e-12)


def test_penalty_on_torch_float64_matches_the_formula():
    """The penalty with the loss's own generator: interpolation weights drawn from a
    generator seeded alike (observation noise first), the input gradient by hand."""
    disc, mlp = _arrayrl_discriminator(backend="torch")
    b = _batch_np((5,), dtype=np.float64)
    loss = GAILLoss(disc, use_grad_penalty=True, gp_lambda=3.0, reduction="sum", seed=7)
    out = loss(ArrayDict({k: torch.from_numpy(v) for k, v in b.items()}, (5,)))
    gen = torch.Generator().manual_seed(7)
    u_obs = torch.empty(5, OBS).uniform_(0, 1, generator=gen).double().numpy()
    u_act = torch.empty(5, ACT).uniform_(0, 1, generator=gen).double().numpy()
    obs = u_obs * b["collector_observation"] + (1 - u_obs) * b["observation"]
    act = u_act * b["collector_action"] + (1 - u_act) * b["action"]
    w = _weights(mlp)
    x = np.concatenate([obs, act], -1)
    h = np.tanh(x @ w["0.weight"].T + w["0.bias"])
    p = _numpy_d(w, obs, act)
    grad = (p * (1 - p) * w["2.weight"][0] * (1 - h * h)) @ w["0.weight"]
    gp = 3.0 * np.mean((np.linalg.norm(grad, axis=-1) - 1) ** 2)
    np.testing.assert_allclose(out["gp_loss"].numpy(), gp, rtol=1e-10)
    # reduction="sum" adds the penalty once per element (TorchRL's rule)
    expected = _numpy_bce_terms(w, b).sum() + 5 * gp
    np.testing.assert_allclose(out["loss"].detach().numpy(), expected, rtol=1e-10)


def _penalised_loss(name: str) -> GAILLoss:
    disc, _ = _arrayrl_discriminator()
    loss = GAILLoss(disc, use_grad_penalty=True, seed=2)
    loss.generator_mode = "numpy"  # the same noise on every backend
    return loss.to(name)


def test_penalty_on_jax_matches_torch_and_trains_under_jax_grad():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    b = _batch_np((6,), dtype=np.float64)

    loss = _penalised_loss("torch")
    tree = flatten_params(loss.discriminator_network_params)
    value = loss(ArrayDict(b, (6,)).to("torch"))["loss"]
    expected = dict(zip(tree, torch.autograd.grad(value, list(tree.values()))))

    loss = _penalised_loss("jax")

    def total(params, data):
        out = loss.forward(ArrayDict(data, (6,)), {"discriminator_network": params})
        return out["loss"]

    data = dict(ArrayDict(b, (6,)).to("jax").items())
    grads = flatten_params(jax.jit(jax.grad(total))(loss.discriminator_network_params, data))
    np.testing.assert_allclose(np.asarray(total(loss.discriminator_network_params, data)),
                               value.detach().numpy(), rtol=1e-10)  # fmt: skip
    assert set(grads) == set(expected)
    for key, g in expected.items():
        np.testing.assert_allclose(np.asarray(grads[key]), g.numpy(), rtol=1e-8, atol=1e-12)
    # eager jax.grad (a fresh loss: the same first draws): its tracers (no device) meet
    # the batch's concrete arrays in one ArrayDict (refused before same_arrays)
    loss = _penalised_loss("jax")
    eager = flatten_params(jax.grad(total)(loss.discriminator_network_params, data))
    for key, g in expected.items():
        np.testing.assert_allclose(np.asarray(eager[key]), g.numpy(), rtol=1e-8, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    z=st.lists(st.floats(-15, 15), min_size=2, max_size=8),
    real=st.booleans(),
)
def test_from_logits_is_the_cross_entropy_of_the_sigmoid(z, real):
    disc, _ = _arrayrl_discriminator()
    logits = np.asarray(z, np.float64)
    probs = 1 / (1 + np.exp(-logits))
    by_logit = GAILLoss(disc, from_logits=True).cross_entropy(logits, real=real)
    by_prob = GAILLoss(disc).cross_entropy(probs, real=real)
    np.testing.assert_allclose(by_logit, by_prob, rtol=1e-7, atol=1e-12)
    # the two labels mirror each other: −log p for the expert is −log(1 − q) at q = 1 − p
    mirrored = GAILLoss(disc).cross_entropy(1 - probs, real=not real)
    np.testing.assert_allclose(mirrored, by_prob, rtol=1e-6, atol=1e-9)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_log_clamp_as_torch_bce():
    disc, _ = _arrayrl_discriminator()
    loss = GAILLoss(disc)
    p = np.asarray([0.0, 1.0, 0.5])
    np.testing.assert_allclose(loss.cross_entropy(p, real=True), [100.0, 0.0, np.log(2)])
    np.testing.assert_allclose(loss.cross_entropy(p, real=False), [0.0, 100.0, np.log(2)])


# -- randomness --------------------------------------------------------------------------------
def test_penalty_noise_comes_from_the_loss_generator():
    b = {k: torch.from_numpy(v) for k, v in _batch_np((6,)).items()}

    def gp(seed):
        disc, _ = _arrayrl_discriminator(backend="torch", dtype=np.float32)
        torch.manual_seed(0)  # the global generator is not what it draws from
        return GAILLoss(disc, use_grad_penalty=True, seed=seed)(ArrayDict(b, (6,)))["gp_loss"]

    assert gp(1) == gp(1)
    assert gp(1) != gp(2)


# -- no mutation, refusals, errors -------------------------------------------------------------
def test_caller_batch_is_not_written():
    disc, _ = _arrayrl_discriminator(backend="torch")
    b = {k: torch.from_numpy(v) for k, v in _batch_np((4,), dtype=np.float64).items()}
    copies = {k: v.clone() for k, v in b.items()}
    batch = ArrayDict(b, (4,))
    GAILLoss(disc, use_grad_penalty=True)(batch)
    assert set(batch.keys()) == set(copies)
    for k, v in copies.items():
        assert torch.equal(batch[k], v) and not batch[k].requires_grad


def test_numpy_refuses_the_penalty_but_not_the_loss():
    disc, _ = _arrayrl_discriminator()
    batch = ArrayDict(_batch_np((4,), dtype=np.float64), (4,))
    assert np.isfinite(GAILLoss(disc)(batch)["loss"])
    with pytest.raises(NotImplementedError, match=r"'numpy'.*use torch tensors or JAX"):
        GAILLoss(disc, use_grad_penalty=True)(batch)


def test_keys():
    disc, _ = _arrayrl_discriminator()
    loss = GAILLoss(disc)
    assert loss.out_keys == ["loss"]
    assert GAILLoss(disc, use_grad_penalty=True).out_keys == ["loss", "gp_loss"]
    assert loss.in_keys == ["action", "collector_action", "collector_observation", "observation"]
    assert loss.gp_lambda == 10.0 and loss.reduction == "mean"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gp_lambda": -1.0}, ValueError, "gp_lambda"),
        ({"gp_lambda": float("nan")}, ValueError, "gp_lambda"),
        ({"use_grad_penalty": "yes"}, ValueError, "use_grad_penalty"),
        ({"from_logits": 1}, ValueError, "from_logits"),
        ({"reduction": "max"}, ValueError, "reduction"),
        ({"gp_lamda": 1.0}, TypeError, "unexpected keyword argument 'gp_lamda'"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    disc, _ = _arrayrl_discriminator()
    with pytest.raises(error, match=match):
        GAILLoss(disc, **kwargs)


def test_bad_discriminator():
    with pytest.raises(TypeError, match="discriminator_network"):
        GAILLoss(object())


def test_bad_batches():
    disc, _ = _arrayrl_discriminator()
    loss = GAILLoss(disc)
    b = _batch_np((4,), dtype=np.float64)
    missing = {k: v for k, v in b.items() if k != "collector_action"}
    with pytest.raises(KeyError, match=r"'collector_action'.*set_keys\(collector_action"):
        loss(ArrayDict(missing, (4,)))
    short = {**b, "collector_observation": b["collector_observation"][:, :2]}
    with pytest.raises(ValueError, match="'collector_observation' has shape"):
        loss(ArrayDict(short, (4,)))
    flat = DictModule(MLP(OBS + ACT, 2, [HIDDEN]), ["observation", "action"], ["d_logits"])
    with pytest.raises(ValueError, match=r"'d_logits' has shape \(8, 2\), expected \(8, 1\)"):
        GAILLoss(flat)(ArrayDict(b, (4,)))
    with pytest.raises(ValueError, match="at least one batch dim"):
        loss(ArrayDict({k: v[0] for k, v in b.items()}))
    integer = {**b, "observation": np.ones((4, OBS), np.int64)}
    with pytest.raises(TypeError, match="'observation' must be a floating array"):
        GAILLoss(disc, use_grad_penalty=True)(ArrayDict(integer, (4,)))


def test_torch_float64_where_torchrl_raises():
    module, mlp = _torchrl_discriminator(torch.float64)
    td = TensorDict(
        {k: torch.from_numpy(v) for k, v in _batch_np((5,), dtype=np.float64).items()}, [5]
    )
    with warnings.catch_warnings(), pytest.raises(RuntimeError):
        warnings.simplefilter("ignore")
        TorchRLGAILLoss(module)(td)
    out = GAILLoss(module, use_grad_penalty=True)(td)
    assert out["loss"].dtype == torch.float64 and out["gp_loss"].dtype == torch.float64
    w = {k: v.detach().numpy() for k, v in mlp.state_dict().items()}
    b = {k: v.numpy() for k, v in td.items()}
    terms = _numpy_bce_terms(w, b)
    np.testing.assert_allclose(
        out["loss"].detach().numpy() - out["gp_loss"].numpy(), terms.mean(), rtol=1e-12
    )


def test_prediction_outside_the_unit_interval_gives_nan_where_torchrl_raises():
    _, mlp = _torchrl_discriminator()
    raw = TensorDictModule(mlp, ["observation", "action"], ["d_logits"])  # no sigmoid
    td = TensorDict({k: torch.from_numpy(v) for k, v in _batch_np((16,)).items()}, [16])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        TorchRLGAILLoss(raw)(td)
    assert torch.isnan(GAILLoss(raw)(td)["loss"])
    assert torch.isfinite(GAILLoss(raw, from_logits=True)(td)["loss"])
