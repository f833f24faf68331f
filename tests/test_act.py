"""ACTLoss against TorchRL 0.14.1 (its own ``ACTModel`` through the drop-in, and an MLP
CVAE twin) on the same weights, batches and torch draws; ``cvae_kl`` and the loss
against the equations computed by hand in NumPy; KL properties; error messages.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl.data import ArrayDict
from arrayrl.modules import Module
from arrayrl.objectives.act import ACTLoss, cvae_kl

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from arrayrl.conformance.act_cases import (  # noqa: E402
    ACTION,
    CHUNK,
    LATENT,
    MLPCVAE,
    torch_cvae,
)
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from torchrl.modules.models import ACTModel  # noqa: E402
from torchrl.objectives import ACTLoss as TorchRLACTLoss  # noqa: E402

OBS = 3
OUTPUTS = ("loss_act", "loss_reconstruction", "loss_kl")
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
CONFIG = dict(
    obs_dim=OBS, action_dim=ACTION, chunk_size=CHUNK, hidden_dim=8, nheads=2,
    num_encoder_layers=1, num_decoder_layers=1, latent_dim=LATENT, dropout=0.1,
    dim_feedforward=16,
)  # fmt: skip


def _act_actor(dtype, out_keys=("action_pred", "mu", "log_var")):
    torch.manual_seed(0)
    model = ACTModel(**CONFIG).to(dtype)
    return TensorDictModule(model, ["observation", "action_chunk"], list(out_keys))


def _batch(shape, dtype, seed=1, chunk_key=("vla_action", "chunk"), obs_key="observation"):
    rng = np.random.default_rng(seed)
    obs = torch.from_numpy(rng.standard_normal((*shape, OBS))).to(dtype)
    chunk = torch.from_numpy(rng.uniform(-1, 1, (*shape, CHUNK, ACTION))).to(dtype)
    return TensorDict({obs_key: obs, chunk_key: chunk}, batch_size=list(shape))


def _run(loss, batch, params, seed=3):
    """Outputs and the gradients of ``loss_act`` after ``torch.manual_seed(seed)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = loss(batch)
    grads = torch.autograd.grad(out["loss_act"].sum(), params, allow_unused=True)
    zeros = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return {k: out[k].detach() for k in OUTPUTS}, zeros


# -- the drop-in: TorchRL's ACTModel --------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "reduction,shape", [("mean", (5,)), ("sum", (2, 3)), ("none", (2, 3)), ("none", (4,))]
)
def test_act_model_matches_torchrl(dtype, reduction, shape):
    """Same ACTModel, batch and torch seed (dropout masks then the latent's randn_like):
    every output and every gradient of loss_act equal TorchRL's."""
    actor = _act_actor(dtype)
    params = list(actor.parameters())
    batch = _batch(shape, dtype)
    theirs, their_grads = _run(TorchRLACTLoss(actor, reduction=reduction), batch, params)
    ours, our_grads = _run(ACTLoss(actor, reduction=reduction), batch, params)
    for key in OUTPUTS:
        assert ours[key].shape == theirs[key].shape and ours[key].dtype == dtype
        torch.testing.assert_close(ours[key], theirs[key], **TOL[dtype])
    assert any(g.abs().sum() > 0 for g in their_grads)
    for ours_g, theirs_g in zip(our_grads, their_grads):
        torch.testing.assert_close(ours_g, theirs_g, **TOL[dtype])


def test_act_model_draws_from_torch_seed():
    """Another torch seed gives other draws (dropout, latent), as in TorchRL."""
    actor = _act_actor(torch.float32)
    params = list(actor.parameters())
    batch = _batch((5,), torch.float32)
    a, _ = _run(ACTLoss(actor), batch, params, seed=3)
    b, _ = _run(ACTLoss(actor), batch, params, seed=4)
    assert not torch.equal(a["loss_reconstruction"], b["loss_reconstruction"])


def test_renamed_keys_match_torchrl_and_actor_gets_literal_names():
    """set_keys moves where the data is read and the outputs are found; the actor still
    reads "observation" and "action_chunk"."""
    out_keys = ("pred", ("latent", "mu"), ("latent", "log_var"))
    keys = dict(
        observation="obs", action_chunk=("expert", "chunk"), action_pred="pred",
        mu=("latent", "mu"), log_var=("latent", "log_var"),
    )  # fmt: skip
    actor = _act_actor(torch.float64, out_keys)
    params = list(actor.parameters())
    batch = _batch((4,), torch.float64, chunk_key=("expert", "chunk"), obs_key="obs")
    their_loss, our_loss = TorchRLACTLoss(actor), ACTLoss(actor)
    their_loss.set_keys(**keys)  # TorchRL's returns None
    our_loss.set_keys(**keys)
    theirs, their_grads = _run(their_loss, batch, params)
    ours, our_grads = _run(our_loss, batch, params)
    for key in OUTPUTS:
        torch.testing.assert_close(ours[key], theirs[key], **TOL[torch.float64])
    for ours_g, theirs_g in zip(our_grads, their_grads):
        torch.testing.assert_close(ours_g, theirs_g, **TOL[torch.float64])


def test_outputs_detached_and_batch_untouched():
    actor = _act_actor(torch.float32)
    batch = _batch((3,), torch.float32)
    before = set(batch.keys(include_nested=True, leaves_only=True))
    out = ACTLoss(actor)(batch)
    assert isinstance(out, TensorDict)
    assert out["loss_act"].requires_grad
    assert not out["loss_reconstruction"].requires_grad and not out["loss_kl"].requires_grad
    assert set(batch.keys(include_nested=True, leaves_only=True)) == before


# -- the MLP CVAE: TorchRL twin, and by hand in NumPy ----------------------------------------------
def _cvae_pair(dtype=torch.float64):
    """arrayrl's MLPCVAE and TorchRL's twin, both of ``dtype``, with the same weights
    (and those weights by name, float64)."""
    drawn = MLPCVAE(seed=7, dtype=np.float64)
    weights = {
        f"{role}.{name}": np.asarray(w)
        for role, tree in drawn.params.items()
        for name, w in _flat(tree).items()
    }
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    tree = {
        role: {name: np.asarray(w).astype(np_dtype) for name, w in _flat(sub).items()}
        for role, sub in drawn.params.items()
    }
    ours = MLPCVAE(tree, dtype=np_dtype)
    twin = torch_cvae().to(dtype)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return ours, twin, weights


def _flat(tree):
    from arrayrl.modules import flatten_params

    return flatten_params(tree)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mlp_cvae_matches_torchrl_with_the_same_torch_noise(dtype, reduction):
    """arrayrl's CVAE drawing ε from a torch.Generator seeded like TorchRL's global one."""
    ours, twin, _ = _cvae_pair(dtype)
    loss = ACTLoss(ours, reduction=reduction, kl_weight=3.0, seed=5)
    loss.to("torch")
    batch = _batch((2, 3), dtype)
    out = loss(ArrayDict(batch.to_dict(), (2, 3)))
    actor = TensorDictModule(
        twin, ["observation", "action_chunk"], ["action_pred", "mu", "log_var"]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        theirs = TorchRLACTLoss(actor, reduction=reduction, kl_weight=3.0)(batch)
    for key in OUTPUTS:
        torch.testing.assert_close(out.get(key), theirs[key], **TOL[dtype])


def _by_hand(weights, obs, chunk, eps, kl_weight, mask=None):
    """ℓ_rec, ℓ_KL per sample and the reduced loss_act, in NumPy from the equations."""

    def mlp(prefix, x):
        h = np.tanh(x @ weights[f"{prefix}.0.weight"].T + weights[f"{prefix}.0.bias"])
        return h @ weights[f"{prefix}.2.weight"].T + weights[f"{prefix}.2.bias"]

    n = obs.shape[0]
    enc = mlp("encoder", np.concatenate([obs, chunk.reshape(n, -1)], axis=-1))
    mu, log_var = enc[:, :LATENT], enc[:, LATENT:]
    z = mu + np.sqrt(np.exp(log_var)) * eps
    pred = mlp("decoder", np.concatenate([obs, z], axis=-1)).reshape(chunk.shape)
    rec = np.abs(pred - chunk).sum(axis=(1, 2)) / (CHUNK * ACTION)
    sigma2 = np.exp(log_var)
    # KL(N(μ, σ²) ‖ N(0, 1)) per dim = log(1/σ) + (σ² + μ²)/2 − 1/2
    kl = (-0.5 * np.log(sigma2) + 0.5 * (sigma2 + mu**2) - 0.5).sum(axis=1)
    keep = np.ones(n, bool) if mask is None else mask
    mean_rec, mean_kl = rec[keep].mean(), kl[keep].mean()
    return rec, kl, mean_rec + kl_weight * mean_kl


def test_mlp_cvae_on_numpy_matches_hand_computation():
    ours, _, weights = _cvae_pair(torch.float64)
    rng = np.random.default_rng(2)
    obs, chunk = rng.standard_normal((6, OBS)), rng.uniform(-1, 1, (6, CHUNK, ACTION))
    loss = ACTLoss(ours, kl_weight=0.7, seed=11)
    out = loss(ArrayDict({"observation": obs, "vla_action": {"chunk": chunk}}, (6,)))
    eps = np.random.default_rng(11).standard_normal((6, LATENT))  # the loss's NumPy stream
    rec, kl, total = _by_hand(weights, obs, chunk, eps, 0.7)
    np.testing.assert_allclose(out["loss_reconstruction"], rec.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["loss_kl"], kl.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["loss_act"], total, rtol=1e-12)


def test_collector_mask_leaves_masked_samples_out():
    """The loss masks (TorchRL's ACTLoss ignores them: deviation torchrl-act-ignores-loss-mask)."""
    ours, _, weights = _cvae_pair(torch.float64)
    rng = np.random.default_rng(3)
    obs, chunk = rng.standard_normal((6, OBS)), rng.uniform(-1, 1, (6, CHUNK, ACTION))
    mask = np.array([True, False, True, True, False, True])
    batch = {"observation": obs, "vla_action": {"chunk": chunk}, "collector": {"mask": mask}}
    eps = np.random.default_rng(0).standard_normal((6, LATENT))
    out = ACTLoss(ours, seed=0)(ArrayDict(batch, (6,)))
    np.testing.assert_allclose(out["loss_act"], _by_hand(weights, obs, chunk, eps, 10.0, mask)[2])
    loss = ACTLoss(ours, seed=0)
    loss.loss_mask_key = None
    unmasked = loss(ArrayDict(batch, (6,)))
    np.testing.assert_allclose(unmasked["loss_act"], _by_hand(weights, obs, chunk, eps, 10.0)[2])


def test_params_argument_is_a_pure_function():
    ours, _, _ = _cvae_pair(torch.float64)
    rng = np.random.default_rng(4)
    batch = ArrayDict(
        {"observation": rng.standard_normal((3, OBS)),
         "vla_action": {"chunk": rng.uniform(-1, 1, (3, CHUNK, ACTION))}}, (3,)
    )  # fmt: skip
    loss = ACTLoss(ours, seed=1)
    zeros = {"actor_network": {r: {k: {n: 0 * v for n, v in layer.items()}
                                   for k, layer in tree.items()}
                               for r, tree in loss.actor_network_params.items()}}  # fmt: skip
    out = loss(batch, zeros)
    # zero weights: â = 0, μ = 0, log σ² = 0 → ℓ_rec = mean |a|, ℓ_KL = 0
    chunk = np.asarray(batch.get(("vla_action", "chunk")))
    np.testing.assert_allclose(out["loss_reconstruction"], np.abs(chunk).mean(), rtol=1e-12)
    assert float(out["loss_kl"]) == 0.0
    own = loss(batch)  # the loss's own (non-zero) weights are untouched
    assert float(own["loss_kl"]) > 0.0


# -- cvae_kl --------------------------------------------------------------------------------------
def test_cvae_kl_closed_form_on_every_backend(xp):
    rng = np.random.default_rng(0)
    mu, log_var = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 5, 3))
    sigma = np.exp(0.5 * log_var)
    # by hand: ∫ q log(q/p) for q = N(μ, σ²), p = N(0, 1), per dim, summed
    expected = (np.log(1 / sigma) + (sigma**2 + mu**2) / 2 - 0.5).sum(-1)
    got = xp.back(cvae_kl(xp.to(mu), xp.to(log_var)))
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cvae_kl_matches_torch_distributions():
    rng = np.random.default_rng(1)
    mu, log_var = (
        torch.from_numpy(rng.standard_normal((6, 4))),
        torch.from_numpy(rng.standard_normal((6, 4))),
    )
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(cvae_kl(mu, log_var), expected)


_values = st.floats(-5.0, 5.0, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    mu=st.lists(_values, min_size=1, max_size=6),
    log_var=st.lists(_values, min_size=1, max_size=6),
)
def test_cvae_kl_non_negative_zero_only_at_prior(mu, log_var):
    n = min(len(mu), len(log_var))
    mu, log_var = np.array(mu[:n]), np.array(log_var[:n])
    kl = float(cvae_kl(mu, log_var))
    assert kl >= 0.0
    at_prior = float(cvae_kl(np.zeros(n), np.zeros(n)))
    assert at_prior == 0.0
    # away from the prior by δ in any coordinate the KL is at least ~δ²/4 (convexity)
    delta = max(np.abs(mu).max(), np.abs(log_var).max())
    if delta > 1e-3:
        assert kl > 0.0
        assert kl >= min(delta**2, 1.0) / 8


# -- errors ---------------------------------------------------------------------------------------
def _numpy_batch(n=3, chunk_shape=(CHUNK, ACTION), dtype=np.float64):
    rng = np.random.default_rng(0)
    return ArrayDict(
        {"observation": rng.standard_normal((n, OBS)),
         "vla_action": {"chunk": rng.uniform(-1, 1, (n, *chunk_shape)).astype(dtype)}}, (n,)
    )  # fmt: skip


def test_bad_arguments():
    actor = MLPCVAE(dtype=np.float64)
    with pytest.raises(TypeError, match="unexpected keyword argument 'beta'"):
        ACTLoss(actor, beta=1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        ACTLoss(actor, kl_weight=-1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        ACTLoss(actor, kl_weight=math.nan)
    loss = ACTLoss(actor)
    with pytest.raises(ValueError, match="kl_weight"):
        loss.kl_weight = -0.5
    with pytest.raises(ValueError, match="reduction"):
        ACTLoss(actor, reduction="max")
    with pytest.raises(TypeError):
        ACTLoss(actor, 10.0)  # keyword-only, as TorchRL


def test_actor_reading_other_keys_is_refused():
    other = TensorDictModule(torch.nn.Linear(3, 3), ["obs"], ["action_pred"])
    with pytest.raises(ValueError, match="'observation', 'action_chunk'"):
        ACTLoss(other)


def test_bad_batches():
    loss = ACTLoss(MLPCVAE(dtype=np.float64))
    with pytest.raises(KeyError, match="vla_action"):
        loss(ArrayDict({"observation": np.zeros((3, OBS))}, (3,)))
    with pytest.raises(ValueError, match=r"\[\*batch, T, action_dim\]"):
        loss(_numpy_batch(chunk_shape=(CHUNK * ACTION,)))
    with pytest.raises(TypeError, match="floating"):
        loss(_numpy_batch(dtype=np.int64))
    fixed = {"mu": np.zeros((3, LATENT)), "log_var": np.zeros((3, LATENT))}
    short = _FixedActor({**fixed, "action_pred": np.zeros((3, CHUNK - 1, ACTION))})
    with pytest.raises(ValueError, match="predicted a chunk"):
        ACTLoss(short)(_numpy_batch())
    latent_per_step = _FixedActor(
        {"action_pred": np.zeros((3, CHUNK, ACTION)), "mu": np.zeros((3, 2, LATENT)),
         "log_var": np.zeros((3, 2, LATENT))}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"\[\*batch, latent_dim\]"):
        ACTLoss(latent_per_step)(_numpy_batch())
    torch_batch = _numpy_batch().to("torch")
    with pytest.raises(TypeError):
        ACTLoss(MLPCVAE(dtype=np.float64))(torch_batch)


class _FixedActor(Module):
    """An actor writing fixed outputs."""

    def __init__(self, outputs):
        self.in_keys, self.out_keys = ["observation", "action_chunk"], list(outputs)
        self.outputs, self._params = outputs, {}

    def forward(self, batch, params):
        for key, value in self.outputs.items():
            batch.set(key, value)
        return batch


def test_actor_not_writing_an_output():
    actor = MLPCVAE(out_keys=("action_pred", "mu", "logvar"), dtype=np.float64)
    with pytest.raises(KeyError, match="log_var"):
        ACTLoss(actor)(_numpy_batch())


def test_cvae_kl_errors():
    with pytest.raises(ValueError, match="one shape"):
        cvae_kl(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="floating"):
        cvae_kl(np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64))
