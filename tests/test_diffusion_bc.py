"""DiffusionBCLoss, the DDPM schedule and the diffusion actor against TorchRL 0.14.1 and
against the DDPM equations computed by hand in NumPy.

- the schedule against ``_DDPMModule``'s buffers, and ``1 − ᾱ_t`` against float64 maths;
- ``add_noise`` against ``√ᾱ_t x0 + √(1 − ᾱ_t) ε`` on every backend, as a unit-norm
  linear map (hypothesis) and statistically (mean and variance of ``a_t``);
- the loss against TorchRL on TorchRL's own ``DiffusionActor`` (drop-in: same draws after
  ``torch.manual_seed``, same numbers, same gradients) and on arrayrl's actor holding the
  same weights; against a NumPy computation with the loss's NumPy draws;
- the reverse chain against TorchRL's ``DETERMINISTIC`` chain; errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, SiLU, flatten_params, unflatten_params
from arrayrl.modules.diffusion import DDPMSchedule, DiffusionActor
from arrayrl.objectives.diffusion_bc import DiffusionBCLoss

OBS, ACT, HIDDEN, STEPS = 3, 2, 8, 10


# -- NumPy references -------------------------------------------------------------------------
def np_mlp(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The two-hidden-layer SiLU MLP in float64 NumPy."""
    for k in (0, 2):
        x = x @ weights[f"{k}.weight"].T + weights[f"{k}.bias"]
        x = x / (1.0 + np.exp(-x))
    return x @ weights["4.weight"].T + weights["4.bias"]


def np_schedule(n: int, b0: float, b1: float) -> tuple[np.ndarray, np.ndarray]:
    betas = np.linspace(b0, b1, n)
    return betas, np.cumprod(1.0 - betas)


def score_weights(seed: int = 0, dtype=np.float64) -> dict[str, np.ndarray]:
    mlp = MLP(
        ACT + OBS + 1, ACT, [HIDDEN, HIDDEN], activation_class=SiLU, seed=seed, dtype=np.float64
    )
    return {k: np.asarray(v).astype(dtype) for k, v in flatten_params(mlp.params).items()}


def arrayrl_actor(weights: dict[str, np.ndarray], **kwargs) -> DiffusionActor:
    dtype = next(iter(weights.values())).dtype
    mlp = MLP(ACT + OBS + 1, ACT, [HIDDEN, HIDDEN], activation_class=SiLU, dtype=dtype)
    mlp.params = unflatten_params({k: v.copy() for k, v in weights.items()})
    return DiffusionActor(ACT, score_network=mlp, num_steps=STEPS, **kwargs)


def batch_arrays(shape=(16,), dtype=np.float64, seed=1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observation": rng.standard_normal((*shape, OBS)).astype(dtype),
        "action": np.tanh(rng.standard_normal((*shape, ACT))).astype(dtype),
    }


# -- the schedule -------------------------------------------------------------------------------
def test_schedule_is_linear_beta_cumprod():
    s = DDPMSchedule(50, 1e-3, 0.1)
    betas, cumprod = np_schedule(50, 1e-3, 0.1)
    np.testing.assert_allclose(s.betas, betas, rtol=1e-15)
    np.testing.assert_allclose(s.alphas, 1.0 - betas, rtol=1e-15)
    np.testing.assert_allclose(s.alphas_cumprod, cumprod, rtol=1e-13)
    np.testing.assert_allclose(s.one_minus_alphas_cumprod, 1.0 - cumprod, rtol=1e-10)
    # 1 − ᾱ_0 = β_0 exactly in real arithmetic; the expm1 form keeps it to the last digits
    assert math.isclose(s.one_minus_alphas_cumprod[0], 1e-3, rel_tol=1e-14)


def test_schedule_matches_torchrl_buffers():
    pytest.importorskip("torchrl")
    torch = pytest.importorskip("torch")
    from torchrl.modules import DiffusionActor as TorchRLDiffusionActor

    theirs = TorchRLDiffusionActor(action_dim=ACT, obs_dim=OBS, num_steps=100).module
    ours = DDPMSchedule()  # TorchRL's defaults: 100 steps, 1e-4 .. 0.02
    for name in ("betas", "alphas", "alphas_cumprod"):
        buffer = getattr(theirs, name)
        assert buffer.dtype == torch.float32
        np.testing.assert_allclose(getattr(ours, name), buffer.numpy(), rtol=2e-6, atol=0)
    # the quirk recorded as torchrl-diffusion-float32-schedule: .double() keeps float32
    assert theirs.double().alphas_cumprod.dtype == torch.float32


@pytest.mark.parametrize(
    "bad",
    [dict(num_steps=0), dict(beta_start=0.0), dict(beta_end=1.0), dict(beta_start=float("nan"))],
)
def test_schedule_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        DDPMSchedule(**bad)


# -- add_noise --------------------------------------------------------------------------------
def test_add_noise_is_the_forward_process_on_every_backend(xp):
    rng = np.random.default_rng(3)
    s = DDPMSchedule(STEPS)
    x0, eps = rng.standard_normal((4, 5, ACT)), rng.standard_normal((4, 5, ACT))
    t = rng.integers(0, STEPS, (4, 5))
    ab = s.alphas_cumprod[t][..., None]
    expected = np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * eps
    got = xp.back(s.add_noise(xp.to(x0), xp.to(eps), xp.to(t)))
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 200),
    b0=st.floats(1e-5, 0.05),
    width=st.floats(0.0, 0.5),
    frac=st.floats(0.0, 1.0, exclude_max=True),
)
def test_add_noise_coefficients_have_unit_norm(n, b0, width, frac):
    """``√ᾱ_t² + √(1−ᾱ_t)² = 1``: the images of (1, 0) and (0, 1) are a unit vector."""
    s = DDPMSchedule(n, b0, min(b0 + width, 0.99))
    t = np.array([int(frac * n)])
    signal = s.add_noise(np.ones((1, 1)), np.zeros((1, 1)), t)[0, 0]
    noise = s.add_noise(np.zeros((1, 1)), np.ones((1, 1)), t)[0, 0]
    assert 0.0 < signal <= 1.0 and 0.0 <= noise <= 1.0
    assert math.isclose(signal**2 + noise**2, 1.0, rel_tol=1e-12)
    # linear in (x0, noise)
    x0, eps = np.array([[0.3, -2.0]]), np.array([[1.5, 0.25]])
    np.testing.assert_allclose(s.add_noise(x0, eps, t), signal * x0 + noise * eps, rtol=1e-12)


def test_add_noise_statistics():
    """With ε ~ N(0, I): E[a_t] = √ᾱ_t x0 and Var[a_t] = 1 − ᾱ_t (200k draws)."""
    s = DDPMSchedule(100)
    rng = np.random.default_rng(0)
    n, t_step = 200_000, 60
    x0 = np.full((n, 1), 0.7)
    a_t = s.add_noise(x0, rng.standard_normal((n, 1)), np.full((n,), t_step))
    ab = np.prod(1.0 - np.linspace(1e-4, 0.02, 100)[: t_step + 1])
    assert abs(a_t.mean() - math.sqrt(ab) * 0.7) < 5 * math.sqrt((1 - ab) / n)
    assert abs(a_t.var() / (1.0 - ab) - 1.0) < 0.02


def test_add_noise_checks_shapes():
    s = DDPMSchedule(STEPS)
    with pytest.raises(ValueError, match="noise has shape"):
        s.add_noise(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="t must be an integer array"):
        s.add_noise(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3))


# -- the loss against NumPy ---------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(16,), (3, 5)])
def test_loss_matches_numpy_with_the_same_draws(reduction, shape):
    weights = score_weights()
    arrays = batch_arrays(shape)
    loss = DiffusionBCLoss(arrayrl_actor(weights), reduction=reduction, seed=7)
    out = loss(ArrayDict(arrays, shape))["loss_diffusion_bc"]
    rng = np.random.default_rng(7)  # the loss's NumPy generator: steps, then noise
    t = rng.integers(0, STEPS, shape)
    eps = rng.standard_normal((*shape, ACT))
    _, cumprod = np_schedule(STEPS, 1e-4, 0.02)
    ab = cumprod[t][..., None]
    noisy = np.sqrt(ab) * arrays["action"] + np.sqrt(1 - ab) * eps
    inputs = np.concatenate([noisy, arrays["observation"], t[..., None].astype(float)], -1)
    element = (np_mlp(weights, inputs) - eps) ** 2
    expected = {"mean": element.mean(), "sum": element.sum(), "none": element}[reduction]
    assert np.shape(out) == np.shape(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_forward_params_are_used():
    """``forward(batch, params=...)``: an all-zero score network predicts ε̂ = 0, so the
    loss is the mean of the drawn ε²."""
    loss = DiffusionBCLoss(arrayrl_actor(score_weights()), seed=2)
    zeros = {k: np.zeros_like(v) for k, v in flatten_params(loss.actor_network_params).items()}
    out = loss(ArrayDict(batch_arrays(), (16,)), {"actor_network": unflatten_params(zeros)})
    rng = np.random.default_rng(2)
    rng.integers(0, STEPS, (16,))
    expected = np.mean(rng.standard_normal((16, ACT)) ** 2)
    np.testing.assert_allclose(out["loss_diffusion_bc"], expected, rtol=1e-12)


def test_loss_does_not_write_the_callers_arrays():
    arrays = batch_arrays()
    copies = {k: v.copy() for k, v in arrays.items()}
    batch = ArrayDict(arrays, (16,))
    DiffusionBCLoss(arrayrl_actor(score_weights()))(batch)
    assert sorted(batch.keys()) == ["action", "observation"]
    for key, value in copies.items():
        np.testing.assert_array_equal(arrays[key], value)


def test_set_keys_and_state_dict_names():
    loss = DiffusionBCLoss(arrayrl_actor(score_weights())).set_keys(
        action="expert", observation="obs"
    )
    arrays = batch_arrays()
    batch = ArrayDict({"expert": arrays["action"], "obs": arrays["observation"]}, (16,))
    assert loss(batch)["loss_diffusion_bc"].shape == ()
    assert loss.in_keys == ["obs", "expert"]
    assert "actor_network_params.module.score_network.0.weight" in loss.state_dict()


# -- the loss against TorchRL -----------------------------------------------------------------
def _torchrl_actor(weights, dtype_name):
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from torchrl.modules import DiffusionActor as TorchRLDiffusionActor

    dtype = getattr(torch, dtype_name)
    net = torch.nn.Sequential(
        torch.nn.Linear(ACT + OBS + 1, HIDDEN),
        torch.nn.SiLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.SiLU(),
        torch.nn.Linear(HIDDEN, ACT),
    ).to(dtype)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    return TorchRLDiffusionActor(action_dim=ACT, score_network=net, num_steps=STEPS).to(dtype)


def _grads(value, params):
    import torch

    return [g.clone() for g in torch.autograd.grad(value.sum(), params)]


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("shape", [(16,), (3, 5)])
def test_dropin_torchrl_actor_gives_torchrl_numbers(dtype_name, reduction, shape):
    """arrayrl's loss on TorchRL's DiffusionActor: TorchRL's draws after
    ``torch.manual_seed``, its loss and its gradients, to the last bits."""
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict
    from torchrl.objectives import DiffusionBCLoss as TorchRLDiffusionBCLoss

    np_dtype = np.dtype(dtype_name)
    actor = _torchrl_actor(score_weights(dtype=np_dtype), dtype_name)
    arrays = batch_arrays(shape, np_dtype)
    td = TensorDict({k: torch.from_numpy(v) for k, v in arrays.items()}, batch_size=shape)
    params = list(actor.parameters())
    torch.manual_seed(11)
    theirs = TorchRLDiffusionBCLoss(actor, reduction=reduction)(td)["loss_diffusion_bc"]
    torch.manual_seed(11)
    out = DiffusionBCLoss(actor, reduction=reduction)(td)
    assert isinstance(out, TensorDict) and list(out.keys()) == ["loss_diffusion_bc"]
    ours = out["loss_diffusion_bc"]
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    tol = dict(rtol=1e-6, atol=1e-7) if dtype_name == "float32" else dict(rtol=1e-13, atol=0)
    torch.testing.assert_close(ours, theirs, **tol)
    for g_ours, g_theirs in zip(_grads(ours, params), _grads(theirs, params)):
        torch.testing.assert_close(g_ours, g_theirs, **tol)


def test_arrayrl_actor_on_torch_matches_torchrl_actor():
    """arrayrl's actor holding TorchRL's weights, drawing from a torch.Generator seeded
    as TorchRL's global one: the same loss and gradients (float32 schedules agree)."""
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict
    from torchrl.objectives import DiffusionBCLoss as TorchRLDiffusionBCLoss

    weights = score_weights(dtype=np.float32)
    theirs_actor = _torchrl_actor(weights, "float32")
    arrays = batch_arrays((16,), np.float32)
    td = TensorDict({k: torch.from_numpy(v) for k, v in arrays.items()}, batch_size=[16])
    torch.manual_seed(5)
    theirs = TorchRLDiffusionBCLoss(theirs_actor)(td)["loss_diffusion_bc"]
    loss = DiffusionBCLoss(arrayrl_actor(weights), seed=5).to("torch")
    ours = loss(ArrayDict(arrays, (16,)).to("torch"))["loss_diffusion_bc"]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours_grads = _grads(ours, list(loss.parameters()))
    for g_ours, g_theirs in zip(ours_grads, _grads(theirs, list(theirs_actor.parameters()))):
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)


# -- the actor ----------------------------------------------------------------------------------
def test_deterministic_chain_matches_torchrl():
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict
    from tensordict.nn import InteractionType, set_interaction_type

    weights = score_weights()
    theirs = _torchrl_actor(weights, "float64")
    obs = batch_arrays((6,))["observation"]
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        expected = theirs(TensorDict({"observation": torch.from_numpy(obs)}, [6]))["action"]
    ours = arrayrl_actor(weights, default_interaction_type="deterministic")
    got = ours(ArrayDict({"observation": obs}, (6,)))["action"]
    # float64 chain vs TorchRL's float32-rounded schedule (torchrl-diffusion-float32-schedule)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    # TorchRL's own actor through the adapter: its schedule, its numbers
    from arrayrl.modules.adapt import as_diffusion_actor

    adapted = as_diffusion_actor(theirs, owner="test")
    td = ArrayDict({"observation": torch.from_numpy(obs)}, (6,))
    with torch.no_grad():
        same = adapted(td, interaction_type="deterministic")["action"]
    torch.testing.assert_close(same, expected, rtol=1e-13, atol=0)


def test_random_chain_draws_as_torchrl():
    """TorchRL's actor through the adapter, sampling with a torch generator seeded as
    torch's global one: a_T, then one draw per step, in TorchRL's order."""
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    from arrayrl.modules.adapt import as_diffusion_actor
    from arrayrl.random import make_generator

    theirs = _torchrl_actor(score_weights(), "float64")
    obs = torch.from_numpy(batch_arrays((5,))["observation"])
    torch.manual_seed(4)
    with torch.no_grad():
        expected = theirs(TensorDict({"observation": obs}, [5]))["action"]
    adapted = as_diffusion_actor(theirs, owner="test")
    with torch.no_grad():
        got = adapted(ArrayDict({"observation": obs}, (5,)), rng=make_generator(4, "torch"))
    torch.testing.assert_close(got["action"], expected, rtol=1e-13, atol=0)


def test_loads_torchrl_state_dict_with_its_schedule():
    """A TorchRL DiffusionActor's state_dict (buffers included) loads into arrayrl's
    actor, which then runs TorchRL's float32 schedule: the same chain to the last bits."""
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict
    from tensordict.nn import InteractionType, set_interaction_type

    theirs = _torchrl_actor(score_weights(seed=3), "float64")
    ours = arrayrl_actor(score_weights(seed=0)).load_state_dict(theirs.state_dict())
    obs = batch_arrays((5,))["observation"]
    with torch.no_grad(), set_interaction_type(InteractionType.DETERMINISTIC):
        expected = theirs(TensorDict({"observation": torch.from_numpy(obs)}, [5]))["action"]
    got = ours(ArrayDict({"observation": obs}, (5,)), interaction_type="deterministic")
    np.testing.assert_allclose(got["action"], expected.numpy(), rtol=1e-13)
    short = {k: v[:3] if "alpha" in k or "beta" in k else v for k, v in theirs.state_dict().items()}
    with pytest.raises(ValueError, match="3 steps"):
        arrayrl_actor(score_weights()).load_state_dict(short)


def test_deterministic_chain_by_hand():
    weights = score_weights()
    obs = batch_arrays((4,))["observation"]
    betas, cumprod = np_schedule(STEPS, 1e-4, 0.02)
    x = np.zeros((4, ACT))
    for t in reversed(range(STEPS)):
        eps = np_mlp(weights, np.concatenate([x, obs, np.full((4, 1), float(t))], -1))
        x = (x - betas[t] / np.sqrt(1 - cumprod[t]) * eps) / np.sqrt(1 - betas[t])
    actor = arrayrl_actor(weights)
    got = actor(ArrayDict({"observation": obs}, (4,)), interaction_type="deterministic")
    np.testing.assert_allclose(got["action"], x, rtol=1e-10)


def test_random_chain_is_seeded_and_shaped():
    obs = batch_arrays((2, 3))["observation"]
    a = arrayrl_actor(score_weights(), seed=4)(ArrayDict({"observation": obs}, (2, 3)))
    b = arrayrl_actor(score_weights(), seed=4)(ArrayDict({"observation": obs}, (2, 3)))
    c = arrayrl_actor(score_weights(), seed=5)(ArrayDict({"observation": obs}, (2, 3)))
    assert a["action"].shape == (2, 3, ACT)
    np.testing.assert_array_equal(a["action"], b["action"])
    assert not np.allclose(a["action"], c["action"])


def test_default_network_has_torchrl_sizes():
    actor = DiffusionActor(ACT, OBS)
    sizes = [(k, w.shape) for k, w in actor.state_dict().items() if k.endswith("weight")]
    assert sizes == [
        ("module.score_network.0.weight", (256, ACT + OBS + 1)),
        ("module.score_network.2.weight", (256, 256)),
        ("module.score_network.4.weight", (ACT, 256)),
    ]
    assert actor.num_steps == 100 and actor.in_keys == ["observation"]


def test_training_on_torch_lowers_the_loss():
    """Adam steps on torch lower the loss measured with fixed draws."""
    torch = pytest.importorskip("torch")
    net = MLP(ACT + OBS + 1, ACT, [32, 32], activation_class=SiLU, backend="torch")
    actor = DiffusionActor(ACT, score_network=net, num_steps=STEPS, beta_start=0.05, beta_end=0.5)
    loss = DiffusionBCLoss(actor, seed=0)
    batch = ArrayDict(batch_arrays((128,), np.float32), (128,)).to("torch")

    def fixed_draws_loss() -> float:
        loss.seed = 123  # a fresh generator: the same steps and noise each time
        with torch.no_grad():
            return loss(batch)["loss_diffusion_bc"].item()

    before = fixed_draws_loss()
    loss.seed = 0
    opt = torch.optim.Adam(loss.parameters(), lr=1e-2)
    for _ in range(40):
        value = loss(batch)["loss_diffusion_bc"]
        opt.zero_grad()
        value.backward()
        opt.step()
    assert fixed_draws_loss() < 0.6 * before


# -- errors ---------------------------------------------------------------------------------
def test_errors():
    loss = DiffusionBCLoss(arrayrl_actor(score_weights()))
    arrays = batch_arrays()
    with pytest.raises(KeyError, match="set_keys"):
        loss(ArrayDict({"observation": arrays["observation"]}, (16,)))
    with pytest.raises(ValueError, match="action_dim"):
        loss(ArrayDict({**arrays, "action": np.zeros((16, 3))}, (16,)))
    with pytest.raises(TypeError, match="floating"):
        loss(ArrayDict({**arrays, "action": np.zeros((16, ACT), np.int64)}, (16,)))
    with pytest.raises(ValueError, match="batch dims"):
        loss(
            ArrayDict(
                {
                    "observation": np.zeros((4, 4, OBS)),
                    "action": np.zeros((4, 4, ACT))[:, :1].repeat(4, 1)[:2],
                },
                (),
            )
        )
    with pytest.raises(ValueError, match="score network reads 6 features"):
        loss(ArrayDict({**arrays, "observation": np.zeros((16, OBS + 1))}, (16,)))
    with pytest.raises(TypeError, match="one dtype"):
        loss(ArrayDict({**arrays, "observation": arrays["observation"].astype(np.float32)}, (16,)))
    with pytest.raises(ValueError, match="needs a generator"):
        loss.actor_network.module.sample(
            loss.actor_network_params["module"],
            arrays["observation"],
            rng=None,
            deterministic=False,
        )
    with pytest.raises(TypeError, match="unexpected keyword"):
        DiffusionBCLoss(arrayrl_actor(score_weights()), reductions="sum")
    with pytest.raises(ValueError, match="reduction"):
        DiffusionBCLoss(arrayrl_actor(score_weights()), reduction="max")
    with pytest.raises(TypeError, match="diffusion actor"):
        DiffusionBCLoss(MLP(3, 2))
    with pytest.raises(ValueError, match="obs_dim"):
        DiffusionActor(ACT)
    with pytest.raises(ValueError, match="interaction_type"):
        DiffusionActor(ACT, OBS, default_interaction_type="mode")
