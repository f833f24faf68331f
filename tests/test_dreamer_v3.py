"""DreamerV3ModelLoss and DreamerV3ValueLoss against TorchRL 0.14.1.

The model loss runs TorchRL's own DreamerV3 RSSM (``RSSMPriorV3`` / ``RSSMPosteriorV3`` in
an ``RSSMRolloutV3``, float32, categorical draws from torch's global generator), so both
libraries get the same module, weights, batch and ``torch.manual_seed``; every output,
the returned data and every gradient are compared. The value loss is checked against
NumPy formulas written here and against TorchRL. MLP-world cases on every backend live
in ``conformance/dreamer_v3_cases.py``.
"""

from __future__ import annotations

import copy
import types
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.modules import MLP, SymExpTwoHot  # noqa: E402
from torchrl.modules.models.model_based import (  # noqa: E402
    RSSMPosteriorV3,
    RSSMPriorV3,
    RSSMRolloutV3,
)
from torchrl.objectives import DreamerV3ActorLoss as TorchRLActorLoss  # noqa: E402
from torchrl.objectives import DreamerV3ModelLoss as TorchRLModelLoss  # noqa: E402
from torchrl.objectives import DreamerV3ValueLoss as TorchRLValueLoss  # noqa: E402
from torchrl.objectives.utils import ValueEstimators  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP as ArrayMLP  # noqa: E402
from arrayrl.modules import DictModule  # noqa: E402
from arrayrl.modules.model_based import SymExpTwoHot as ArraySymExpTwoHot  # noqa: E402
from arrayrl.objectives.dreamer_v3 import (  # noqa: E402
    DreamerV3ActorLoss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
)

from . import test_dreamer as v1  # noqa: E402

OBS, ACT, N_CAT, N_CLS, BELIEF, HIDDEN, BINS = 5, 2, 3, 4, 6, 8, 21
STATE = N_CAT * N_CLS


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def rssm_world_model(seed: int = 0, continue_head: bool = True) -> TensorDictSequential:
    """An MLP encoder, TorchRL's V3 RSSM rollout, an MLP decoder, a two-hot reward head
    (logits and their ``SymExpTwoHot`` decoding) and a continuation head."""
    torch.manual_seed(seed)
    prior = RSSMPriorV3(
        action_shape=(ACT,),
        hidden_dim=HIDDEN,
        rnn_hidden_dim=BELIEF,
        num_categoricals=N_CAT,
        num_classes=N_CLS,
        action_dim=ACT,
    )
    posterior = RSSMPosteriorV3(
        hidden_dim=HIDDEN,
        num_categoricals=N_CAT,
        num_classes=N_CLS,
        rnn_hidden_dim=BELIEF,
        obs_embed_dim=HIDDEN,
    )
    latent = [("next", "state"), ("next", "belief")]
    parts = [
        TensorDictModule(
            MLP(in_features=OBS, out_features=HIDDEN, num_cells=[HIDDEN]),
            [("next", "observation")],
            [("next", "encoded_latents")],
        ),
        RSSMRolloutV3(
            TensorDictModule(
                prior,
                ["state", "belief", "action"],
                [("next", "prior_logits"), ("next", "state"), ("next", "belief")],
            ),
            TensorDictModule(
                posterior,
                [("next", "belief"), ("next", "encoded_latents")],
                [("next", "posterior_logits"), ("next", "state")],
            ),
        ),
        TensorDictModule(
            MLP(in_features=STATE + BELIEF, out_features=OBS, num_cells=[HIDDEN]),
            latent,
            [("next", "reco_observation")],
        ),
        TensorDictModule(
            MLP(in_features=STATE + BELIEF, out_features=BINS, num_cells=[HIDDEN]),
            latent,
            [("next", "reward_logits")],
        ),
        TensorDictModule(SymExpTwoHot(BINS), [("next", "reward_logits")], [("next", "reward")]),
    ]
    if continue_head:
        parts.append(
            TensorDictModule(
                MLP(in_features=STATE + BELIEF, out_features=1, num_cells=[HIDDEN]),
                latent,
                [("next", "continue_pred")],
            )
        )
    return TensorDictSequential(*parts)


def replay_batch(batch: int = 2, time: int = 4, seed: int = 1) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(batch, time, 1, generator=g) < 0.3
    return TensorDict(
        {
            "state": torch.zeros(batch, time, STATE),
            "belief": torch.zeros(batch, time, BELIEF),
            "action": torch.randn(batch, time, ACT, generator=g),
            "is_init": torch.zeros(batch, time, 1, dtype=torch.bool),
            "next": {
                "observation": 3 * torch.randn(batch, time, OBS, generator=g),
                "reward": 2 * torch.randn(batch, time, 1, generator=g),
                "terminated": terminated,
                "done": terminated.clone(),
            },
        },
        [batch, time],
    )


MODEL_CONFIGS = [
    {},
    {"kl_mode": "separate", "unimix": 0.01, "free_bits": 0.1, "lambda_representation": 0.3},
    {"free_bits": 0.0, "reco_loss": "l1", "lambda_continue": 0.7, "continue_target_scale": 0.95},
    {"global_average": True, "kl_alpha": 0.5, "free_bits": 0.05, "lambda_kl": 2.0},
]


def _grads(terms, params):
    out = {}
    for key in terms.keys():
        if not key.startswith("loss_"):
            continue
        total = terms[key].sum()
        found = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        out[key] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
    return out


@pytest.mark.parametrize("config", MODEL_CONFIGS)
def test_model_loss_matches_torchrl_on_its_rssm(config):
    model = rssm_world_model()
    kwargs = {"num_reward_bins": BINS, **config}
    params = list(model.parameters())
    batch = replay_batch()

    expected_loss = TorchRLModelLoss(model, **kwargs)
    expected_loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    torch.manual_seed(7)
    expected, expected_data = expected_loss(batch.clone())

    loss = DreamerV3ModelLoss(model, **kwargs)
    loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    torch.manual_seed(7)
    got, data = loss(batch.clone())

    assert isinstance(got, TensorDict) and isinstance(data, TensorDict)
    assert sorted(got.keys()) == sorted(expected.keys())
    for key in expected.keys():
        assert got[key].shape == expected[key].shape == (1,)
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    for key in [("next", "posterior_logits"), ("next", "reward"), ("next", "true_reward")]:
        torch.testing.assert_close(data[key], expected_data[key])
        assert not data[key].requires_grad
    want, have = _grads(expected, params), _grads(got, params)
    for key in want:
        for a, b in zip(have[key], want[key]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in have["loss_model_reward"])


def test_model_loss_keeps_graph_without_detach_output():
    loss = DreamerV3ModelLoss(rssm_world_model(), num_reward_bins=BINS, detach_output=False)
    loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    _, data = loss(replay_batch())
    assert data["next", "posterior_logits"].requires_grad


def test_model_loss_missing_continue_head_raises():
    """TorchRL silently drops loss_model_continue (deviation
    torchrl-dreamerv3-continue-missing)."""
    loss = DreamerV3ModelLoss(
        rssm_world_model(continue_head=False), num_reward_bins=BINS, lambda_continue=1.0
    )
    loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    with pytest.raises(KeyError, match="continue_pred"):
        loss(replay_batch())


def test_model_loss_errors():
    model = rssm_world_model()
    with pytest.raises(TypeError):
        DreamerV3ModelLoss(model, lambda_kl=1.0, kl_balance=0.8)
    with pytest.raises(TypeError):
        DreamerV3ModelLoss(model, 1.0)  # keyword-only, as TorchRL
    with pytest.raises(ValueError, match="kl_mode"):
        DreamerV3ModelLoss(model, kl_mode="mixed")
    with pytest.raises(ValueError, match="continue_target_scale"):
        DreamerV3ModelLoss(model, continue_target_scale=0.0)
    with pytest.raises(ValueError, match="reco_loss"):
        DreamerV3ModelLoss(model, reco_loss="huber")
    with pytest.raises(ValueError, match="lambda_kl"):
        DreamerV3ModelLoss(model, lambda_kl=float("nan"))
    with pytest.raises(ValueError, match="unimix"):
        DreamerV3ModelLoss(model, unimix=1.0)
    loss = DreamerV3ModelLoss(model)  # 255 bins, the head has BINS
    loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    with pytest.raises(ValueError, match="255 bins"):
        loss(replay_batch())
    loss = DreamerV3ModelLoss(model, num_reward_bins=BINS, reco_symlog=[True, False])
    loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    with pytest.raises(ValueError, match="reconstruction heads"):
        loss(replay_batch())
    with pytest.raises(ValueError, match="not an accepted key"):
        loss.set_keys(pixel="observation")


def _numpy_symlog(x):
    return np.sign(x) * np.log1p(np.abs(x))


def test_value_loss_symlog_mse_matches_numpy_and_torchrl():
    rng = np.random.default_rng(0)
    mlp = ArrayMLP(STATE, 1, [HIDDEN], seed=3)
    weights = {k: np.asarray(v) for k, v in mlp.named_parameters().items()}
    value = DictModule(mlp, ["state"], ["state_value"])
    state = rng.standard_normal((4, 5, STATE)).astype(np.float32)
    target = (5 * rng.standard_normal((4, 5, 1))).astype(np.float32)
    loss = DreamerV3ValueLoss(value, gamma=0.9)
    out, returned = loss(ArrayDict({"state": state, "lambda_target": target}, [4, 5]))
    predicted = np.asarray(mlp(state))[..., 0]
    per_step = (_numpy_symlog(predicted) - _numpy_symlog(target[..., 0])) ** 2
    expected = np.mean(0.9 ** np.arange(5) * per_step)
    np.testing.assert_allclose(out["loss_value"], expected, rtol=1e-5)
    np.testing.assert_array_equal(out["value_slow_loss"], 0.0)
    assert "state_value" not in returned.keys()

    torch_mlp = MLP(in_features=STATE, out_features=1, num_cells=[HIDDEN])
    torch_mlp.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
    theirs, _ = TorchRLValueLoss(
        TensorDictModule(torch_mlp, ["state"], ["state_value"]), gamma=0.9
    )(
        TensorDict(
            {"state": torch.as_tensor(state), "lambda_target": torch.as_tensor(target)}, [4, 5]
        )
    )
    np.testing.assert_allclose(out["loss_value"], theirs["loss_value"].item(), rtol=1e-5)


def test_value_loss_reads_gamma_from_actor_loss_and_ignores_it_with_discount_weight():
    rng = np.random.default_rng(1)
    mlp = ArrayMLP(STATE, 1, [HIDDEN], seed=4)
    value = DictModule(mlp, ["state"], ["state_value"])
    actor = types.SimpleNamespace(value_estimator=types.SimpleNamespace(gamma=0.5))
    loss = DreamerV3ValueLoss(value, gamma=0.99, actor_loss=actor)
    state = rng.standard_normal((3, 4, STATE))
    target = rng.standard_normal((3, 4, 1))
    predicted = np.asarray(mlp.apply(mlp.params, state.astype(np.float32)))[..., 0]
    per_step = (_numpy_symlog(predicted) - _numpy_symlog(target[..., 0])) ** 2
    out, _ = loss(ArrayDict({"state": state.astype(np.float32), "lambda_target": target}, [3, 4]))
    np.testing.assert_allclose(
        out["loss_value"], np.mean(0.5 ** np.arange(4) * per_step), rtol=1e-5
    )
    weight = rng.random((3, 4, 1))
    batch = {"state": state.astype(np.float32), "lambda_target": target, "discount_weight": weight}
    out, _ = loss(ArrayDict(batch, [3, 4]))
    np.testing.assert_allclose(out["loss_value"], np.mean(weight[..., 0] * per_step), rtol=1e-5)
    loss.sync_gamma_with_actor_loss(types.SimpleNamespace(value_estimator=actor.value_estimator))
    assert loss.gamma == 0.5


def test_two_hot_value_loss_with_slow_critic_matches_torchrl_on_its_modules():
    torch.manual_seed(0)
    mlp = MLP(in_features=STATE, out_features=BINS, num_cells=[HIDDEN])
    value = TensorDictSequential(
        TensorDictModule(mlp, ["state"], ["state_value_logits"]),
        TensorDictModule(SymExpTwoHot(BINS), ["state_value_logits"], ["state_value"]),
    )
    kwargs = {"value_loss": "two_hot", "num_value_bins": BINS, "slow_critic_regularization": 0.5}
    theirs = TorchRLValueLoss(value, **kwargs)
    ours = DreamerV3ValueLoss(value, **kwargs)
    with torch.no_grad():  # the same perturbed slow critic in both
        for p in mlp.parameters():
            p.add_(0.2)
    batch = TensorDict(
        {"state": torch.randn(4, 5, STATE), "lambda_target": 10 * torch.randn(4, 5, 1)}, [4, 5]
    )
    expected, _ = theirs(batch)
    got, returned = ours(batch)
    assert isinstance(got, TensorDict) and isinstance(returned, TensorDict)
    for key in ("loss_value", "value_slow_loss"):
        torch.testing.assert_close(got[key], expected[key])
    assert got["value_slow_loss"] > 0 and not got["value_slow_loss"].requires_grad
    params = list(mlp.parameters())
    for a, b in zip(_grads(got, params)["loss_value"], _grads(expected, params)["loss_value"]):
        torch.testing.assert_close(a, b)


def test_symexptwohot_layer_matches_torchrl():
    logits = torch.randn(3, 4, BINS, dtype=torch.float64)
    target = 30 * torch.randn(3, 4, dtype=torch.float64)
    ours, theirs = ArraySymExpTwoHot(BINS), SymExpTwoHot(BINS)
    torch.testing.assert_close(ours(logits), theirs(logits))
    torch.testing.assert_close(ours.encode(target), theirs.encode(target))
    torch.testing.assert_close(ours.loss(logits, target), theirs.loss(logits, target))
    assert ours.params == {}


def test_value_loss_errors():
    value = DictModule(ArrayMLP(STATE, 1, [HIDDEN], seed=0), ["state"], ["state_value"])
    with pytest.raises(ValueError, match="value_loss"):
        DreamerV3ValueLoss(value, value_loss="mse")
    with pytest.raises(ValueError, match="slow_critic_regularization"):
        DreamerV3ValueLoss(value, slow_critic_regularization=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        DreamerV3ValueLoss(value, gamma=1.5)
    with pytest.raises(ValueError, match="reduction"):
        DreamerV3ValueLoss(value, reduction="max")
    with pytest.raises(TypeError, match="actor_loss"):
        DreamerV3ValueLoss(value, actor_loss=object())
    state = np.zeros((4, 5, STATE), np.float32)
    with pytest.raises(KeyError, match="lambda_target"):
        DreamerV3ValueLoss(value)(ArrayDict({"state": state}, [4, 5]))
    bad = ArrayDict({"state": state, "lambda_target": np.zeros((4, 5, 2), np.float32)}, [4, 5])
    with pytest.raises(ValueError, match="lambda_target"):
        DreamerV3ValueLoss(value)(bad)
    two_hot = DreamerV3ValueLoss(value, value_loss="two_hot")  # a scalar head, 255 bins
    good = ArrayDict({"state": state, "lambda_target": np.zeros((4, 5, 1), np.float32)}, [4, 5])
    with pytest.raises(ValueError, match="255 bins"), pytest.warns(DeprecationWarning):
        two_hot(good)


# -- DreamerV3ActorLoss -------------------------------------------------------------------------
# TorchRL's imagination env over its v1 RSSMPrior (draws: per step the actor's rsample, then
# the prior's randn_like; then one entropy rsample), shared with tests/test_dreamer.py.

ACTOR_TERMS = (
    "loss_actor",
    "actor_entropy",
    "return_low",
    "return_high",
    "return_scale",
    "continuation_mean",
)


def continuation_model(seed: int = 6) -> TensorDictModule:
    torch.manual_seed(seed)
    return TensorDictModule(_Continuation(), in_keys=["state", "belief"], out_keys=["continuation"])


class _Continuation(torch.nn.Module):
    """``sigmoid(MLP(state, belief))``: a continuation probability."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(in_features=v1.STATE + v1.BELIEF, out_features=1, depth=1, num_cells=8)

    def forward(self, state, belief):
        return torch.sigmoid(self.mlp(state, belief))


def _actor_losses(continuation: bool = False, estimator=None, **kwargs):
    """(TorchRL's loss, arrayrl's loss) on twin modules; TorchRL's estimator runs along the
    imagination axis (deviation torchrl-dreamerv3-lambda-time-dim)."""
    t_actor, o_actor = v1._twins(v1.actor_model)
    t_env, o_env = v1._twins(v1.dreamer_env)
    value = v1.value_model()
    if continuation:
        cont = continuation_model()
        kwargs = {**kwargs, "continuation_model": cont}
    theirs = TorchRLActorLoss(t_actor, value, t_env, **kwargs)
    if continuation:
        kwargs["continuation_model"] = copy.deepcopy(cont)
    ours = DreamerV3ActorLoss(o_actor, copy.deepcopy(value), o_env, **kwargs)
    if estimator is not None:
        value_type, hyper = estimator
        theirs.make_value_estimator(ValueEstimators[value_type], **hyper)
        ours.make_value_estimator(value_type, **hyper)
    theirs.value_estimator.time_dim = -2
    return theirs, ours, list(t_actor.parameters()), list(o_actor.parameters())


ACTOR_CONFIGS = [
    {"imagination_horizon": 4},
    {"imagination_horizon": 3, "use_reinforce": True, "entropy_bonus": 0.1},
    {
        "imagination_horizon": 4,
        "continuation": True,
        "estimator": ("TDLambda", {"gamma": 0.9, "lmbda": 0.8}),
        "return_normalization_min_scale": 0.01,
    },
    {"imagination_horizon": 3, "entropy_bonus": 0.0, "return_normalization": False},
]


@pytest.mark.parametrize("config", ACTOR_CONFIGS, ids=str)
def test_actor_loss_matches_torchrl_on_its_rssm(config):
    config = dict(config)
    theirs_loss, ours_loss, theirs_p, ours_p = _actor_losses(
        config.pop("continuation", False), config.pop("estimator", None), **config
    )
    start = v1.start_batch()
    for seed in (7, 8):  # the second call sees the moved return statistics
        torch.manual_seed(seed)
        theirs, theirs_fake = theirs_loss(start.clone())
        torch.manual_seed(seed)
        ours, ours_fake = ours_loss(start.clone())
    assert isinstance(ours, TensorDict) and sorted(ours.keys()) == sorted(ACTOR_TERMS)
    for key in ACTOR_TERMS:
        assert ours[key].shape == torch.Size([]) and ours[key].dtype == theirs[key].dtype, key
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert set(ours_fake.keys(True, True)) == set(theirs_fake.keys(True, True))
    for key in theirs_fake.keys(True, True):
        torch.testing.assert_close(ours_fake[key], theirs_fake[key], rtol=1e-5, atol=1e-6)
        assert not ours_fake[key].requires_grad
    g_ours = v1._grads(ours["loss_actor"], ours_p)
    assert any(g.abs().sum() > 0 for g in g_ours)
    for a, b in zip(g_ours, v1._grads(theirs["loss_actor"], theirs_p)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    state = ours_loss.state_dict()
    for name in ("retnorm.low", "retnorm.high"):
        torch.testing.assert_close(state[name], theirs_loss.state_dict()[name])


def test_actor_lambda_target_is_the_lambda_return_not_torchrl_one_step():
    """Without a continuation model arrayrl's ``lambda_target`` is TD(λ) along the
    imagination axis (a NumPy recursion); TorchRL 0.14.1's default is the one-step target."""
    t_actor, o_actor = v1._twins(v1.actor_model)
    t_env, o_env = v1._twins(v1.dreamer_env)
    theirs_loss = TorchRLActorLoss(t_actor, v1.value_model(), t_env, imagination_horizon=4)
    ours_loss = DreamerV3ActorLoss(o_actor, v1.value_model(), o_env, imagination_horizon=4)
    torch.manual_seed(0)
    _, fake = ours_loss(v1.start_batch())
    torch.manual_seed(0)
    _, theirs_fake = theirs_loss(v1.start_batch())
    r = fake["next", "reward"].numpy().astype(np.float64)
    v = v1.value_model()(fake["next"].select("state", "belief"))["state_value"]
    v = v.detach().numpy().astype(np.float64)
    g, lam = 0.99, 0.95
    expected = np.zeros_like(r)
    expected[:, -1] = r[:, -1] + g * v[:, -1]
    for t in range(r.shape[1] - 2, -1, -1):
        expected[:, t] = r[:, t] + g * ((1 - lam) * v[:, t] + lam * expected[:, t + 1])
    np.testing.assert_allclose(fake["lambda_target"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(theirs_fake["lambda_target"].numpy(), r + g * v, atol=1e-5)
    assert not np.allclose(expected, r + g * v, atol=1e-3)


def test_actor_return_statistics_follow_the_quantiles_and_freeze_in_eval():
    loss = DreamerV3ActorLoss(
        v1.actor_model(), v1.value_model(), v1.dreamer_env(), imagination_horizon=3
    )
    assert loss.return_normalization_rate == 0.01
    assert loss.return_normalization_quantiles == (0.05, 0.95)
    torch.manual_seed(1)
    out, fake = loss(v1.start_batch())
    flat = fake["lambda_target"].numpy().astype(np.float64).ravel()
    low, high = np.quantile(flat, [0.05, 0.95])
    np.testing.assert_allclose(out["return_low"].item(), 0.01 * low, rtol=1e-5)
    np.testing.assert_allclose(out["return_high"].item(), 0.01 * high, rtol=1e-5)
    assert out["return_low"].dtype == torch.float32
    assert out["return_scale"].item() == max(1.0, 0.01 * (high - low))
    fresh = DreamerV3ActorLoss(
        v1.actor_model(), v1.value_model(), v1.dreamer_env(), imagination_horizon=3
    ).eval()
    torch.manual_seed(1)
    out, _ = fresh(v1.start_batch())
    assert out["return_low"].item() == out["return_high"].item() == 0.0
    assert out["return_scale"].item() == 1.0 and out["continuation_mean"].item() == 1.0


def test_actor_loss_legacy_state_dict_and_entropy_of_a_normal():
    loss = DreamerV3ActorLoss(v1.actor_model(), v1.value_model(), v1.dreamer_env())
    state = loss.state_dict()
    state.pop("retnorm.low")
    state.pop("retnorm.high")
    state["return_low"], state["return_high"] = torch.tensor(-2.0), torch.tensor(3.0)
    loss.load_state_dict(state)
    assert loss.return_low.item() == -2.0 and loss.return_high.item() == 3.0
    # a distribution with a closed-form entropy is not sampled
    from arrayrl.modules.distributions import Normal

    dist = Normal(torch.zeros(2, 3, 1), torch.full((2, 3, 1), 2.0))
    entropy = loss.policy_entropy(dist, None, torch.zeros(2, 3, 1))
    expected = 0.5 * np.log(2 * np.pi * np.e * 4.0)
    np.testing.assert_allclose(entropy.numpy(), np.full((2, 3, 1), expected), rtol=1e-6)


def test_actor_loss_errors():
    args = (v1.actor_model(), v1.value_model(), v1.dreamer_env())
    with pytest.raises(TypeError, match="make_value_estimator"):
        DreamerV3ActorLoss(*args, gamma=0.9)
    with pytest.raises(ValueError, match="entropy_bonus"):
        DreamerV3ActorLoss(*args, entropy_bonus=-1.0)
    with pytest.raises(ValueError, match="quantiles"):
        DreamerV3ActorLoss(*args, return_normalization_quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="min_scale"):
        DreamerV3ActorLoss(*args, return_normalization_min_scale=0.0)
    with pytest.raises(TypeError, match="bogus"):
        DreamerV3ActorLoss(*args, bogus=1)
    loss = DreamerV3ActorLoss(*args, continuation_model=continuation_model())
    loss.make_value_estimator("TD0", gamma=0.9)
    with pytest.raises(TypeError, match="TD\\(lambda\\)"):
        loss(v1.start_batch())


# -- DreamerV3Loss ------------------------------------------------------------------------------
# The whole learner of TorchRL's DreamerV3Loss example on the RSSM world model above: the
# imagination env steps the world model's own RSSMPriorV3 and reward head (shared modules),
# so the replay critic's gradient reaches the world model through the posterior states.
import torchrl.objectives as torchrl_objectives  # noqa: E402
from tensordict.nn import (  # noqa: E402
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
)
from torchrl.data import Bounded, Composite, Unbounded  # noqa: E402
from torchrl.envs.model_based.dreamer import DreamerEnv  # noqa: E402
from torchrl.modules import TanhNormal, WorldModelWrapper  # noqa: E402
from torchrl.modules.models.model_based import DreamerActor  # noqa: E402
from torchrl.objectives import DreamerV3Loss as TorchRLLoss  # noqa: E402

import arrayrl.objectives.dreamer_v3 as arrayrl_v3  # noqa: E402
from arrayrl.objectives.dreamer_v3 import DreamerV3Loss  # noqa: E402


def v3_learner(continuation: bool = False) -> tuple:
    """(world model, imagination env, actor, value[, continuation model]) sharing the
    prior and reward modules."""
    world = rssm_world_model()
    reward = TensorDictSequential(
        TensorDictModule(world[3].module, ["state", "belief"], ["reward_logits"]),
        TensorDictModule(world[4].module, ["reward_logits"], ["reward"]),
    )
    prior = TensorDictModule(
        world[1].rssm_prior.module, ["state", "belief", "action"], ["_", "state", "belief"]
    )
    env = DreamerEnv(
        WorldModelWrapper(prior, reward),
        prior_shape=torch.Size([STATE]),
        belief_shape=torch.Size([BELIEF]),
    )
    env.action_spec = Bounded(-1.0, 1.0, shape=(ACT,))
    env.observation_spec = Composite(state=Unbounded(STATE), belief=Unbounded(BELIEF))
    env.reward_spec = Unbounded(1)
    env.state_spec = Composite(state=Unbounded(STATE), belief=Unbounded(BELIEF))
    torch.manual_seed(3)
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(
            DreamerActor(ACT, depth=1, num_cells=5), ["state", "belief"], ["loc", "scale"]
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
    value = TensorDictModule(
        MLP(in_features=STATE + BELIEF, out_features=1, depth=1, num_cells=5),
        ["state", "belief"],
        ["state_value"],
    )
    parts = (world, env, actor, value)
    if continuation:
        cont = TensorDictModule(
            _V3Continuation(), in_keys=["state", "belief"], out_keys=["continuation"]
        )
        parts = (*parts, cont)
    return parts


class _V3Continuation(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(in_features=STATE + BELIEF, out_features=1, depth=1, num_cells=5)

    def forward(self, state, belief):
        return torch.sigmoid(self.mlp(state, belief))


def v3_loss(library, parts, horizon=3, estimator=None, model=None, value=None, **kwargs):
    world, env, actor, critic, *cont = parts
    model_loss = library.DreamerV3ModelLoss(
        world, num_reward_bins=BINS, **{"detach_output": False, **(model or {})}
    )
    model_loss.set_keys(pixels="observation", reco_pixels="reco_observation")
    extra = {"continuation_model": cont[0]} if cont else {}
    actor_loss = library.DreamerV3ActorLoss(
        actor, critic, env, imagination_horizon=horizon, **extra
    )
    if estimator is not None:
        value_type, hyper = estimator
        actor_loss.make_value_estimator(ValueEstimators[value_type], **hyper)
    value_loss = library.DreamerV3ValueLoss(critic, actor_loss=actor_loss, **(value or {}))
    return library.DreamerV3Loss(model_loss, actor_loss, value_loss, **kwargs)


def _unique_params(parts):
    seen, out = set(), []
    for module in parts:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


LOSS_CONFIGS = [
    {},
    {
        "continuation": True,
        "estimator": ("TDLambda", {"gamma": 0.9, "lmbda": 0.8}),
        "value": {"slow_critic_regularization": 0.5},
        "model": {"lambda_continue": 0.5, "kl_mode": "separate", "unimix": 0.01},
        "replay_value_loss_weight": 1.5,
        "continuation_horizon": 10.0,
        "lmbda": 0.7,
    },
    {"replay_value_loss_weight": 0.0, "model": {"detach_output": True}, "horizon": 2},
]


@pytest.mark.parametrize("config", LOSS_CONFIGS, ids=str)
def test_dreamer_v3_loss_matches_torchrl(config):
    config = dict(config)
    parts = v3_learner(config.pop("continuation", False))
    twins = copy.deepcopy(parts)
    theirs_loss = v3_loss(torchrl_objectives, parts, **config)
    ours_loss = v3_loss(arrayrl_v3, twins, **config)
    # TorchRL's estimator along the imagination axis (torchrl-dreamerv3-lambda-time-dim)
    theirs_loss.actor_loss.value_estimator.time_dim = -2
    batch = replay_batch()
    for seed in (7, 8):  # the second call sees the moved return statistics
        torch.manual_seed(seed)
        theirs = theirs_loss(batch.clone())
        torch.manual_seed(seed)
        ours = ours_loss(batch)
    assert isinstance(ours, TensorDict) and ours.batch_size == torch.Size([])
    assert set(ours.keys(True, True)) == set(theirs.keys(True, True))
    assert ours["replay_context"].batch_size == batch.batch_size
    for key in theirs.keys(True, True):
        assert ours[key].shape == theirs[key].shape and ours[key].dtype == theirs[key].dtype
        assert ours[key].requires_grad == theirs[key].requires_grad, key
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    if config.get("replay_value_loss_weight", 0.3):
        assert ours["replay_value"] > 0
    else:
        assert ours["loss_replay_value"] == 0 and ours["replay_value"] == 0
    theirs_p, ours_p = _unique_params(parts), _unique_params(twins)
    for key in theirs.keys():
        if not key.startswith("loss_") or not theirs[key].requires_grad:
            continue
        for a, b in zip(v1._grads(ours[key], ours_p), v1._grads(theirs[key], theirs_p)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # the batch is left as it was
    assert ("next", "true_reward") not in batch.keys(True) and "replay_context" not in batch.keys()


def test_dreamer_v3_loss_replay_critic_reaches_the_world_model():
    """The replay critic is the value loss's replay_value_loss on the posterior states,
    bootstrapped on the first imagined returns; its gradient reaches the encoder."""
    parts = v3_learner()
    loss = v3_loss(arrayrl_v3, parts, replay_value_loss_weight=2.0)
    torch.manual_seed(0)
    out = loss(replay_batch())
    torch.testing.assert_close(out["loss_replay_value"], 2.0 * out["replay_value"])
    encoder = list(parts[0][0].parameters())
    grads = v1._grads(out["loss_replay_value"], encoder)
    assert any(g.abs().sum() > 0 for g in grads)
    actor_grads = v1._grads(out["loss_replay_value"], list(parts[2].parameters()))
    assert all(g.abs().sum() == 0 for g in actor_grads)
    names = [name for name, _ in loss.named_parameters()]
    assert len(names) == len(set(names)) and names[0].startswith("model_loss.")
    state = loss.state_dict()
    assert any(k.startswith("actor_loss.retnorm") for k in state)
    loss.load_state_dict(state)


def test_dreamer_v3_loss_errors():
    parts = v3_learner()
    model = DreamerV3ModelLoss(parts[0], num_reward_bins=BINS)  # detach_output=True
    actor = DreamerV3ActorLoss(parts[2], parts[3], parts[1])
    value = DreamerV3ValueLoss(parts[3])
    with pytest.raises(ValueError, match="detach_output=False"):
        DreamerV3Loss(model, actor, value)
    DreamerV3Loss(model, actor, value, replay_value_loss_weight=0.0)
    with pytest.raises(ValueError, match="replay_value_loss_weight"):
        DreamerV3Loss(model, actor, value, replay_value_loss_weight=-1.0)
    with pytest.raises(ValueError, match="continuation_horizon"):
        DreamerV3Loss(model, actor, value, replay_value_loss_weight=0.0, continuation_horizon=0.5)
    with pytest.raises(ValueError, match="lmbda"):
        DreamerV3Loss(model, actor, value, replay_value_loss_weight=0.0, lmbda=1.5)
    with pytest.raises(TypeError):
        DreamerV3Loss(model, actor, value, 0.3)  # keyword-only, as TorchRL
    with pytest.raises(TypeError):
        DreamerV3Loss(model, actor, value, replay_weight=0.3)
    with pytest.raises(TypeError, match="value_loss must be an arrayrl"):
        DreamerV3Loss(model, actor, TorchRLValueLoss(parts[3]), replay_value_loss_weight=0.0)
    loss = DreamerV3Loss(model, actor, value, replay_value_loss_weight=0.0)
    with pytest.raises(KeyError, match="unknown parts"):
        loss(replay_batch(), params={"world_model": {}})
    with pytest.raises(ValueError, match="not an accepted key"):
        loss.set_keys(posterior="x")
    assert TorchRLLoss.__name__ == DreamerV3Loss.__name__


def test_actor_loss_matches_torchrl_in_a_v3_rssm_env():
    """The actor imagines in a DreamerEnv stepping TorchRL's RSSMPriorV3 (categorical
    latents drawn from torch's global generator) with a two-hot reward head."""
    _world, env, actor, critic = v3_learner()
    twins = copy.deepcopy((env, actor, critic))
    theirs_loss = TorchRLActorLoss(twins[1], twins[2], twins[0], imagination_horizon=4)
    theirs_loss.value_estimator.time_dim = -2  # torchrl-dreamerv3-lambda-time-dim
    ours_loss = DreamerV3ActorLoss(actor, critic, env, imagination_horizon=4)
    g = torch.Generator().manual_seed(9)
    start = TensorDict(
        state=torch.randn(5, STATE, generator=g), belief=torch.randn(5, BELIEF, generator=g),
        batch_size=[5],
    )  # fmt: skip
    torch.manual_seed(3)
    theirs, theirs_fake = theirs_loss(start.clone())
    torch.manual_seed(3)
    ours, ours_fake = ours_loss(start.clone())
    for key in ACTOR_TERMS:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert set(ours_fake.keys(True, True)) == set(theirs_fake.keys(True, True))
    for key in theirs_fake.keys(True, True):
        torch.testing.assert_close(ours_fake[key], theirs_fake[key], rtol=1e-5, atol=1e-6)
    ours_p, theirs_p = list(actor.parameters()), list(twins[1].parameters())
    g_ours = v1._grads(ours["loss_actor"], ours_p)
    assert any(g.abs().sum() > 0 for g in g_ours)
    for a, b in zip(g_ours, v1._grads(theirs["loss_actor"], theirs_p)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dreamer_v3_loss_with_a_two_hot_critic_matches_torchrl():
    """The combined loss with a two-hot critic (logits decoded by SymExpTwoHot), its slow
    copy and the replay critic, against TorchRL on twin modules."""
    world, env, actor, _ = v3_learner()
    torch.manual_seed(4)
    critic = TensorDictSequential(
        TensorDictModule(
            MLP(in_features=STATE + BELIEF, out_features=BINS, depth=1, num_cells=5),
            ["state", "belief"],
            ["state_value_logits"],
        ),
        TensorDictModule(SymExpTwoHot(BINS), ["state_value_logits"], ["state_value"]),
    )
    parts = (world, env, actor, critic)
    twins = copy.deepcopy(parts)
    value = {"value_loss": "two_hot", "num_value_bins": BINS, "slow_critic_regularization": 0.5}
    theirs_loss = v3_loss(torchrl_objectives, parts, value=value)
    ours_loss = v3_loss(arrayrl_v3, twins, value=value)
    theirs_loss.actor_loss.value_estimator.time_dim = -2  # torchrl-dreamerv3-lambda-time-dim
    batch = replay_batch()
    torch.manual_seed(7)
    theirs = theirs_loss(batch.clone())
    torch.manual_seed(7)
    ours = ours_loss(batch)
    for key in theirs.keys(True, True):
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert ours["loss_value"] > 0 and ours["replay_value"] > 0
    critic_ours, critic_theirs = list(twins[3].parameters()), list(critic.parameters())
    for key in ("loss_value", "loss_replay_value"):
        for a, b in zip(v1._grads(ours[key], critic_ours), v1._grads(theirs[key], critic_theirs)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
