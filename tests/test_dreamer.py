"""Dreamer (v1) losses against TorchRL 0.14.1 on TorchRL's own tiny RSSM world model.

The same modules (TorchRL's ``ObsEncoder``, ``RSSMRollout`` of ``RSSMPrior`` /
``RSSMPosterior``, ``ObsDecoder``, ``DreamerActor`` + ``TanhNormal``, ``DreamerEnv``)
are handed to both libraries; both draw from torch's global generator after the same
``torch.manual_seed`` (RSSM: prior then posterior ``randn_like`` per step; imagination:
actor ``rsample`` then prior ``randn_like`` per step). Every output and every gradient
is compared, float32 (TorchRL's Dreamer is float32-only).
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

import torchrl.objectives as trl  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import (  # noqa: E402
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torchrl.data import Bounded, Composite, Unbounded  # noqa: E402
from torchrl.envs.model_based.dreamer import DreamerEnv  # noqa: E402
from torchrl.modules import MLP, SafeSequential, TanhNormal, WorldModelWrapper  # noqa: E402
from torchrl.modules.models.model_based import (  # noqa: E402
    DreamerActor,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPrior,
    RSSMRollout,
)

from arrayrl.objectives.dreamer import (  # noqa: E402
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
)
from arrayrl.objectives.value.functional import td_lambda_return_estimate  # noqa: E402

STATE, BELIEF, HIDDEN, ACT, CELLS = 3, 4, 4, 2, 5
PIXELS = (3, 13, 13)  # ObsDecoder(channels=2, num_layers=2) draws 13 x 13 images
EMBED = 4  # ObsEncoder(channels=2, num_layers=2) on 13 x 13: 4 channels of 1 x 1
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- TorchRL's tiny modules ---------------------------------------------------------------
def world_model(seed: int = 0):
    """TorchRL's pixel world model: encoder, RSSM rollout, decoder; reward model."""
    torch.manual_seed(seed)
    prior = RSSMPrior(
        action_spec=Unbounded(ACT),
        hidden_dim=HIDDEN,
        rnn_hidden_dim=BELIEF,
        state_dim=STATE,
        action_dim=ACT,
    )
    posterior = RSSMPosterior(
        hidden_dim=HIDDEN, state_dim=STATE, rnn_hidden_dim=BELIEF, obs_embed_dim=EMBED
    )
    rollout = RSSMRollout(
        TensorDictModule(
            prior,
            in_keys=["state", "belief", "action"],
            out_keys=[("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
        ),
        TensorDictModule(
            posterior,
            in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
        ),
    )
    modeler = SafeSequential(
        TensorDictModule(
            ObsEncoder(channels=2, num_layers=2, in_channels=3),
            in_keys=[("next", "pixels")],
            out_keys=[("next", "encoded_latents")],
        ),
        rollout,
        TensorDictModule(
            ObsDecoder(channels=2, num_layers=2, latent_dim=STATE + BELIEF),
            in_keys=[("next", "state"), ("next", "belief")],
            out_keys=[("next", "reco_pixels")],
        ),
    )
    reward = TensorDictModule(
        MLP(
            in_features=STATE + BELIEF,
            out_features=1,
            depth=1,
            num_cells=CELLS,
            activation_class=torch.nn.ELU,
        ),
        in_keys=[("next", "state"), ("next", "belief")],
        out_keys=[("next", "reward")],
    )
    return WorldModelWrapper(modeler, reward)


def model_batch(batch: int = 2, time: int = 3, seed: int = 1) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        {
            "state": torch.zeros(batch, time, STATE),
            "belief": torch.zeros(batch, time, BELIEF),
            "action": torch.randn(batch, time, ACT, generator=g),
            "next": {
                "pixels": torch.rand(batch, time, *PIXELS, generator=g),
                "reward": torch.randn(batch, time, 1, generator=g),
            },
        },
        [batch, time],
    )


def dreamer_env(seed: int = 2) -> DreamerEnv:
    """TorchRL's imagination env: the RSSM prior as transition, an MLP reward."""
    torch.manual_seed(seed)
    prior = RSSMPrior(
        action_spec=Unbounded(ACT),
        hidden_dim=HIDDEN,
        rnn_hidden_dim=BELIEF,
        state_dim=STATE,
        action_dim=ACT,
    )
    reward = MLP(
        in_features=STATE + BELIEF,
        out_features=1,
        depth=1,
        num_cells=CELLS,
        activation_class=torch.nn.ELU,
    )
    model = WorldModelWrapper(
        SafeSequential(
            TensorDictModule(prior, ["state", "belief", "action"], ["_", "_", "state", "belief"])
        ),
        TensorDictModule(reward, ["state", "belief"], ["reward"]),
    )
    env = DreamerEnv(model, prior_shape=torch.Size([STATE]), belief_shape=torch.Size([BELIEF]))
    env.action_spec = Bounded(-1.0, 1.0, shape=(ACT,))
    env.observation_spec = Composite(state=Unbounded(STATE), belief=Unbounded(BELIEF))
    env.reward_spec = Unbounded(1)
    env.state_spec = Composite(state=Unbounded(STATE), belief=Unbounded(BELIEF))
    return env


def actor_model(seed: int = 3):
    torch.manual_seed(seed)
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(
            DreamerActor(ACT, depth=1, num_cells=CELLS, activation_class=torch.nn.ELU),
            in_keys=["state", "belief"],
            out_keys=["loc", "scale"],
        ),
        ProbabilisticTensorDictModule(
            in_keys=["loc", "scale"],
            out_keys="action",
            default_interaction_type=InteractionType.RANDOM,
            distribution_class=TanhNormal,
        ),
    )
    with torch.no_grad():  # DreamerActor's MLP is lazy
        actor(
            TensorDict(state=torch.zeros(1, STATE), belief=torch.zeros(1, BELIEF), batch_size=[1])
        )
    return actor


def value_model(seed: int = 4, dtype=torch.float32):
    torch.manual_seed(seed)
    mlp = MLP(
        in_features=STATE + BELIEF,
        out_features=1,
        depth=1,
        num_cells=CELLS,
        activation_class=torch.nn.ELU,
    ).to(dtype)
    return TensorDictModule(mlp, in_keys=["state", "belief"], out_keys=["state_value"])


def start_batch(n: int = 5, seed: int = 5) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        state=torch.randn(n, STATE, generator=g),
        belief=torch.randn(n, BELIEF, generator=g),
        batch_size=[n],
    )


def _grads(total, params):
    found = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]


def _twins(build):
    """Two copies of the same TorchRL module: one for each library."""
    module = build()
    return module, copy.deepcopy(module)


# -- DreamerModelLoss ---------------------------------------------------------------------
MODEL_CONFIGS = [
    {"free_nats": -1000},
    {"free_nats": 0.5, "delayed_clamp": True, "lambda_kl": 0.3, "lambda_reco": 0.0},
    {"global_average": True, "free_nats": -1.0, "reco_loss": "smooth_l1", "reward_loss": "l1"},
]


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=str)
def test_model_loss_matches_torchrl(config):
    theirs_wm, ours_wm = _twins(world_model)
    batch = model_batch()
    torch.manual_seed(11)
    theirs, theirs_data = trl.DreamerModelLoss(theirs_wm, **config)(batch.clone())
    torch.manual_seed(11)
    ours, ours_data = DreamerModelLoss(ours_wm, **config)(batch.clone())
    assert isinstance(ours, TensorDict) and isinstance(ours_data, TensorDict)
    assert sorted(ours.keys()) == sorted(theirs.keys())
    for key in theirs.keys():
        assert ours[key].shape == torch.Size([1])
        torch.testing.assert_close(ours[key], theirs[key], **TOL)
    for key in [
        ("next", k)
        for k in ("prior_mean", "posterior_std", "reco_pixels", "reward", "true_reward", "state")
    ]:
        torch.testing.assert_close(ours_data[key], theirs_data[key], **TOL)
        assert not ours_data[key].requires_grad
    theirs_p, ours_p = list(theirs_wm.parameters()), list(ours_wm.parameters())
    for key in theirs.keys():
        for a, b in zip(_grads(ours[key].sum(), ours_p), _grads(theirs[key].sum(), theirs_p)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_model_loss_does_not_touch_the_batch():
    batch = model_batch()
    reward = batch["next", "reward"]
    DreamerModelLoss(world_model())(batch)
    assert batch["next", "reward"] is reward and ("next", "true_reward") not in batch.keys(True)


def test_model_loss_refuses_float64_rssm():
    with pytest.raises(TypeError, match="float32"):
        DreamerModelLoss(world_model().double())


# -- DreamerActorLoss ---------------------------------------------------------------------
def _torchrl_actor_loss(actor, value, env, **kwargs):
    """TorchRL's loss with its estimator along the imagination axis (time_dim=-2), the
    λ-return arrayrl computes (deviation torchrl-dreamer-lambda-time-dim)."""
    loss = trl.DreamerActorLoss(actor, value, env, **kwargs)
    loss.value_estimator.time_dim = -2
    return loss


@pytest.mark.parametrize("horizon,discount", [(4, True), (3, False)])
def test_actor_loss_matches_torchrl(horizon, discount):
    t_actor, o_actor = _twins(actor_model)
    t_env, o_env = _twins(dreamer_env)
    value = value_model()
    theirs_loss = _torchrl_actor_loss(
        t_actor, value, t_env, imagination_horizon=horizon, discount_loss=discount
    )
    ours_loss = DreamerActorLoss(
        o_actor, copy.deepcopy(value), o_env, imagination_horizon=horizon, discount_loss=discount
    )
    start = start_batch()
    torch.manual_seed(7)
    theirs, theirs_fake = theirs_loss(start.clone())
    torch.manual_seed(7)
    ours, ours_fake = ours_loss(start.clone())
    assert ours["loss_actor"].shape == torch.Size([])
    torch.testing.assert_close(ours["loss_actor"], theirs["loss_actor"], **TOL)
    assert ours_fake.batch_size == theirs_fake.batch_size == torch.Size([5, horizon])
    assert set(ours_fake.keys(True, True)) == set(theirs_fake.keys(True, True))
    for key in theirs_fake.keys(True, True):
        assert ours_fake[key].dtype == theirs_fake[key].dtype, key
        torch.testing.assert_close(ours_fake[key], theirs_fake[key], **TOL)
    theirs_p = list(t_actor.parameters())
    ours_p = list(o_actor.parameters())
    g_ours = _grads(ours["loss_actor"], ours_p)
    g_theirs = _grads(theirs["loss_actor"], theirs_p)
    assert any(g.abs().sum() > 0 for g in g_ours)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the world model is held out: listed, but without gradient
    names = [n for n, _ in ours_loss.named_parameters()]
    assert any(n.startswith("model_based_env_params.") for n in names)
    env_params = [p for n, p in ours_loss.named_parameters() if n.startswith("model_based")]
    assert all(g.abs().sum() == 0 for g in _grads(ours["loss_actor"], env_params))


def test_actor_lambda_target_is_the_lambda_return():
    """``lambda_target`` is TD(λ) along the imagination axis of the imagined rewards and
    next values (a NumPy recursion), not TorchRL 0.14.1's one-step target."""
    loss = DreamerActorLoss(actor_model(), value_model(), dreamer_env(), imagination_horizon=4)
    torch.manual_seed(0)
    _, fake = loss(start_batch())
    r = fake["next", "reward"].numpy().astype(np.float64)
    nxt = fake["next"].select("state", "belief")
    v = value_model()(nxt)["state_value"].detach().numpy().astype(np.float64)
    g, lam = 0.99, 0.95
    expected = np.zeros_like(r)
    expected[:, -1] = r[:, -1] + g * v[:, -1]
    for t in range(r.shape[1] - 2, -1, -1):
        expected[:, t] = r[:, t] + g * ((1 - lam) * v[:, t] + lam * expected[:, t + 1])
    np.testing.assert_allclose(fake["lambda_target"].numpy(), expected, rtol=1e-5, atol=1e-5)
    one_step = r + g * v
    assert not np.allclose(fake["lambda_target"].numpy(), one_step, atol=1e-3)


@pytest.mark.parametrize("estimator", ["td0", "td1"])
def test_actor_loss_other_estimators(estimator):
    t_actor, o_actor = _twins(actor_model)
    t_env, o_env = _twins(dreamer_env)
    value = value_model()
    theirs_loss = trl.DreamerActorLoss(t_actor, value, t_env, imagination_horizon=3)
    theirs_loss.make_value_estimator(
        trl.ValueEstimators.TD0 if estimator == "td0" else trl.ValueEstimators.TD1, gamma=0.9
    )
    theirs_loss.value_estimator.time_dim = -2
    ours_loss = DreamerActorLoss(o_actor, value, o_env, imagination_horizon=3)
    ours_loss.make_value_estimator(estimator, gamma=0.9)
    torch.manual_seed(3)
    theirs, _ = theirs_loss(start_batch())
    torch.manual_seed(3)
    ours, _ = ours_loss(start_batch())
    torch.testing.assert_close(ours["loss_actor"], theirs["loss_actor"], **TOL)


def test_actor_loss_errors():
    env, actor, value = dreamer_env(), actor_model(), value_model()
    with pytest.raises(TypeError, match="DreamerActorLoss"):
        DreamerActorLoss(actor, value, env, horizon=3)
    with pytest.raises(TypeError):
        DreamerActorLoss(actor, value, env, gamma=0.9)
    with pytest.raises(ValueError):
        DreamerActorLoss(actor, value, env, imagination_horizon=0)
    with pytest.raises(NotImplementedError):
        DreamerActorLoss(actor, value, env).make_value_estimator("gae")
    with pytest.raises(TypeError, match="float32"):
        DreamerActorLoss(actor, value, dreamer_env().double())
    loss = DreamerActorLoss(actor, value, env)
    with pytest.raises(KeyError, match="belief"):
        loss(TensorDict(state=torch.zeros(2, STATE), batch_size=[2]))


def test_actor_loss_keys():
    loss = DreamerActorLoss(actor_model(), value_model(), dreamer_env())
    assert vars(loss.tensor_keys) == {
        "belief": "belief",
        "reward": "reward",
        "value": "state_value",
        "done": "done",
        "terminated": "terminated",
    }
    with pytest.raises(ValueError):
        loss.set_keys(action="a")


# -- DreamerValueLoss ---------------------------------------------------------------------
def _fake_data(shape, dtype=torch.float32, seed=6):
    g = torch.Generator().manual_seed(seed)
    return TensorDict(
        state=torch.randn(*shape, STATE, generator=g, dtype=dtype),
        belief=torch.randn(*shape, BELIEF, generator=g, dtype=dtype),
        lambda_target=torch.randn(*shape, 1, generator=g, dtype=dtype),
        batch_size=shape,
    )


@pytest.mark.parametrize("shape", [(6,), (3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("args", [(), ("smooth_l1", True, 0.5), ("l1", False)], ids=str)
def test_value_loss_matches_torchrl(shape, dtype, args):
    t_value, o_value = _twins(lambda: value_model(dtype=dtype))
    data = _fake_data(shape, dtype)
    theirs, theirs_data = trl.DreamerValueLoss(t_value, *args)(data)
    ours, ours_data = DreamerValueLoss(o_value, *args)(data)
    assert ours_data is data and theirs_data is data
    assert ours["loss_value"].shape == torch.Size([]) and ours["loss_value"].dtype == dtype
    torch.testing.assert_close(ours["loss_value"], theirs["loss_value"])
    for a, b in zip(
        _grads(ours["loss_value"], list(o_value.parameters())),
        _grads(theirs["loss_value"], list(t_value.parameters())),
    ):
        torch.testing.assert_close(a, b)


def test_value_loss_flat_batch_discounts_along_the_batch():
    """TorchRL's quirk, kept: on ``[N]`` data sample ``i`` is weighted ``γ^i``."""
    value = value_model(dtype=torch.float64)
    data = _fake_data((5,), torch.float64)
    out, _ = DreamerValueLoss(value, gamma=0.5)(data)
    pred = value(data.select("state", "belief"))["state_value"].detach().numpy()[:, 0]
    target = data["lambda_target"].numpy()[:, 0]
    expected = np.sum(0.5 ** np.arange(5) * (pred - target) ** 2)
    np.testing.assert_allclose(out["loss_value"].item(), expected, rtol=1e-12)


def test_value_loss_errors():
    with pytest.raises(TypeError, match="DreamerValueLoss"):
        DreamerValueLoss(value_model(), loss_function="l2")
    with pytest.raises(ValueError, match="value_loss"):
        DreamerValueLoss(value_model(), "l3")
    with pytest.raises(ValueError, match="gamma"):
        DreamerValueLoss(value_model(), gamma=1.5)
    with pytest.raises(KeyError, match="lambda_target"):
        DreamerValueLoss(value_model())(_fake_data((4,)).exclude("lambda_target"))


def test_model_loss_errors():
    with pytest.raises(TypeError, match="DreamerModelLoss"):
        DreamerModelLoss(world_model(), kl_weight=1.0)
    with pytest.raises(ValueError, match="reco_loss"):
        DreamerModelLoss(world_model(), reco_loss="l3")
    with pytest.raises(ValueError, match="lambda_kl"):
        DreamerModelLoss(world_model(), lambda_kl=float("nan"))
    with pytest.raises(KeyError, match="reward"):
        DreamerModelLoss(world_model())(model_batch().exclude(("next", "reward")))


def test_td_lambda_gradient_reaches_rewards_and_values():
    """The λ-returns are differentiable in both inputs (the actor's path)."""
    r = torch.randn(2, 4, 1, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 1, dtype=torch.float64, requires_grad=True)
    done = torch.zeros(2, 4, 1, dtype=torch.bool)
    g = td_lambda_return_estimate(0.9, 0.8, v, r, done, done, kernel="reference")
    gr, gv = torch.autograd.grad(g.sum(), [r, v])
    # d sum_t G_t / d r_0 = 1; / d r_1 = 1 + γλ
    np.testing.assert_allclose(gr[0, :2, 0].numpy(), [1.0, 1.0 + 0.9 * 0.8])
    assert gv.abs().sum() > 0


class _WorldModel:
    """An arrayrl world model for imagination: belief then state then reward MLPs."""

    def __init__(self, dtype):
        self.in_keys = ["state", "belief", "action"]
        self.out_keys = ["belief", "state", "reward"]
        from arrayrl.modules import MLP, DictModule

        self.parts = [
            DictModule(
                MLP(STATE + BELIEF + ACT, BELIEF, [CELLS], seed=1, dtype=dtype),
                ["state", "belief", "action"],
                ["belief"],
            ),
            DictModule(
                MLP(BELIEF + ACT, STATE, [CELLS], seed=2, dtype=dtype),
                ["belief", "action"],
                ["state"],
            ),
            DictModule(
                MLP(STATE + BELIEF, 1, [CELLS], seed=3, dtype=dtype),
                ["state", "belief"],
                ["reward"],
            ),
        ]
        self.params = {str(i): p.params for i, p in enumerate(self.parts)}

    def __call__(self, batch, params=None):
        params = self.params if params is None else params
        for i, part in enumerate(self.parts):
            part(batch, params[str(i)])
        return batch

    def to(self, backend, device=None):
        for part in self.parts:
            part.to(backend, device)
        self.params = {str(i): p.params for i, p in enumerate(self.parts)}
        return self


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict", "torch"])
def test_imagination_runs_on_every_backend(backend):
    """arrayrl modules only: the same loss on NumPy, array_api_strict and torch (the
    same NumPy-sourced draws), float64, with the actor's gradient on torch."""
    pytest.importorskip(backend)
    from arrayrl.data import ArrayDict
    from arrayrl.modules import (
        MLP,
        DictModule,
        NormalParamExtractor,
        ProbabilisticActor,
        Sequential,
    )
    from arrayrl.modules.distributions import TanhNormal

    def build():
        actor = ProbabilisticActor(
            DictModule(
                Sequential(
                    MLP(STATE + BELIEF, 2 * ACT, [CELLS], dtype=np.float64), NormalParamExtractor()
                ),
                ["state", "belief"],
                ["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        value = DictModule(
            MLP(STATE + BELIEF, 1, [CELLS], seed=4, dtype=np.float64),
            ["state", "belief"],
            ["state_value"],
        )
        loss = DreamerActorLoss(
            actor, value, _WorldModel(np.float64), imagination_horizon=3, seed=0
        )
        loss.generator_mode = "numpy"
        loss.make_value_estimator("tdlambda", kernel="reference")  # no kernel compilation
        return loss, value

    rng = np.random.default_rng(0)
    start = {"state": rng.standard_normal((4, STATE)), "belief": rng.standard_normal((4, BELIEF))}
    ref_loss, _ = build()
    ref_out, _ = ref_loss(ArrayDict(start, [4]))
    loss, _ = build()
    loss.to(backend)
    out, fake = loss(ArrayDict(start, [4]).to(backend))
    assert fake.batch_size == (4, 3)
    got = out["loss_actor"]
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    np.testing.assert_allclose(got, np.asarray(ref_out["loss_actor"]), rtol=1e-10)
    if backend == "torch":
        leaves = list(loss.actor_model_params["module"]["module"]["0"]["0"].values())
        assert any(g.abs().sum() > 0 for g in _grads(out["loss_actor"], leaves))


_KL_LOSS = DreamerModelLoss(world_model(), free_nats=-1e9)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.lists(st.floats(0.1, 3), min_size=6, max_size=6),
    st.lists(st.floats(-3, 3), min_size=6, max_size=6),
    st.lists(st.floats(0.1, 3), min_size=6, max_size=6),
)
def test_kl_is_nonnegative_and_zero_on_equal_gaussians(mu_p, sd_p, mu_q, sd_q):
    """KL(q || p) >= 0 for any diagonal Gaussians, and 0 when q = p (free nats off)."""
    loss = _KL_LOSS
    mp, sp, mq, sq = (np.array(x, dtype=np.float64).reshape(2, 3) for x in (mu_p, sd_p, mu_q, sd_q))
    assert loss.kl_loss(mp, sp, mq, sq) >= -1e-12
    np.testing.assert_allclose(loss.kl_loss(mp, sp, mp, sp), 0.0, atol=1e-12)
