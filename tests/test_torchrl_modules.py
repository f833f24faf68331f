"""TorchRL's modules, distributions and enums wherever arrayrl takes its own.

Each TorchRL object is compared with TorchRL itself on the same weights: the adapted
actor's distribution scores TorchRL's samples as TorchRL does, the estimators give
TorchRL's values, and what cannot work is refused at construction with a message.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule  # noqa: E402
from tensordict.nn.distributions import NormalParamExtractor  # noqa: E402
from torch import nn  # noqa: E402
from torchrl import modules as tm  # noqa: E402
from torchrl.objectives.utils import ValueEstimators as TorchRLValueEstimators  # noqa: E402
from torchrl.objectives.value import GAE as TorchRLGAE  # noqa: E402

import arrayrl.modules as am  # noqa: E402
from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import as_module  # noqa: E402
from arrayrl.modules.distributions import TanhNormal  # noqa: E402
from arrayrl.objectives import A2CLoss, ClipPPOLoss, ReinforceLoss, ValueEstimators  # noqa: E402
from arrayrl.objectives.common import resolve_destination  # noqa: E402
from arrayrl.objectives.value import GAE  # noqa: E402

OBS, ACT, N = 3, 2, 7


def _gaussian_params():
    return TensorDictModule(
        nn.Sequential(nn.Linear(OBS, 2 * ACT), NormalParamExtractor()),
        in_keys=["observation"], out_keys=["loc", "scale"],
    )


def _logits(out_key="logits"):
    return TensorDictModule(nn.Linear(OBS, ACT + 2), in_keys=["observation"], out_keys=[out_key])


#: (TorchRL distribution class, its kwargs, the parameter module, dist in_keys)
DISTRIBUTIONS = {
    "TanhNormal": (tm.TanhNormal, {"low": -2.0, "high": 3.0}, _gaussian_params, ["loc", "scale"]),
    "TanhNormal-tensor-bounds": (
        tm.TanhNormal, {"low": -torch.ones(ACT), "high": 2 * torch.ones(ACT)},
        _gaussian_params, ["loc", "scale"],
    ),
    "IndependentNormal": (tm.IndependentNormal, {}, _gaussian_params, ["loc", "scale"]),
    "torch.Normal": (torch.distributions.Normal, {}, _gaussian_params, ["loc", "scale"]),
    "Categorical": (torch.distributions.Categorical, {}, _logits, ["logits"]),
    "OneHotCategorical": (tm.OneHotCategorical, {}, _logits, ["logits"]),
}


def _torchrl_actor(name):
    cls, kwargs, params_module, keys = DISTRIBUTIONS[name]
    torch.manual_seed(0)
    return tm.ProbabilisticActor(
        params_module(), in_keys=keys, distribution_class=cls, distribution_kwargs=kwargs,
        return_log_prob=True, default_interaction_type="random",
    )


def _batch():
    torch.manual_seed(1)
    return TensorDict({"observation": torch.randn(N, OBS)}, [N])


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_adapted_actor_scores_torchrl_samples(name):
    theirs = _torchrl_actor(name)
    mine = as_module(theirs, "actor_network", owner="test")
    assert isinstance(mine, am.ProbabilisticActor)
    td = theirs(_batch())
    their_dist = theirs.get_dist(td)
    my_dist = mine.get_dist(ArrayDict.from_tensordict(td.clone()))
    action = td["action"]
    torch.testing.assert_close(my_dist.log_prob(action), their_dist.log_prob(action))
    torch.testing.assert_close(td["action_log_prob"], their_dist.log_prob(action))
    assert {id(p) for p in mine.parameters()} == {id(p) for p in theirs.parameters()}


def test_adapted_masked_categorical():
    torch.manual_seed(0)
    theirs = tm.ProbabilisticActor(
        _logits(), in_keys=["logits", "mask"], distribution_class=tm.MaskedCategorical,
        return_log_prob=True, default_interaction_type="random",
    )
    td = _batch()
    td["mask"] = torch.tensor([[True, False, True, True]] * N)
    td = theirs(td)
    mine = as_module(theirs, "actor_network", owner="test")
    my_dist = mine.get_dist(ArrayDict.from_tensordict(td.clone()))
    torch.testing.assert_close(my_dist.log_prob(td["action"]), td["action_log_prob"])


def test_unsupported_distribution_is_refused_at_construction():
    theirs = tm.ProbabilisticActor(
        _gaussian_params(), in_keys={"concentration1": "loc", "concentration0": "scale"},
        distribution_class=torch.distributions.Beta,
    )
    critic = tm.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
    with pytest.raises(TypeError, match=r"Beta has no arrayrl counterpart; supported: .*Tanh"):
        ClipPPOLoss(theirs, critic)


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (nn.Linear(OBS, 1), r"critic_network is a plain torch.nn.Module .*ValueOperator"),
        (object(), r"critic_network must be an arrayrl module .*TensorDictModule"),
    ],
)
def test_unusable_networks_are_refused_with_what_to_pass(network, message):
    actor = _torchrl_actor("TanhNormal")
    with pytest.raises(TypeError, match=message):
        A2CLoss(actor, network)


def test_arrayrl_actor_takes_torchrl_distribution_and_module():
    """arrayrl's ProbabilisticActor around TorchRL's parameter module and class."""
    theirs = _torchrl_actor("TanhNormal")
    mine = am.ProbabilisticActor(
        theirs.module[0], in_keys=["loc", "scale"], distribution_class=tm.TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 3.0},
    )
    assert mine.distribution_class is TanhNormal
    td = theirs(_batch())
    dist = mine.get_dist(ArrayDict.from_tensordict(td.clone()))
    torch.testing.assert_close(dist.log_prob(td["action"]), td["action_log_prob"])


def test_value_estimator_with_torchrl_value_operator():
    torch.manual_seed(0)
    critic = tm.ValueOperator(tm.MLP(OBS, 1, num_cells=[8]), in_keys=["observation"])
    obs = torch.randn(2, 6, OBS)
    td = TensorDict(
        {
            "observation": obs[:, :-1],
            "next": {
                "observation": obs[:, 1:], "reward": torch.randn(2, 5, 1),
                "done": torch.zeros(2, 5, 1, dtype=torch.bool),
                "terminated": torch.zeros(2, 5, 1, dtype=torch.bool),
            },
        },
        [2, 5],
    )
    theirs = TorchRLGAE(value_network=critic, gamma=0.9, lmbda=0.8)(td.clone())
    mine = GAE(value_network=critic, gamma=0.9, lmbda=0.8)(ArrayDict.from_tensordict(td.clone()))
    for key in ("advantage", "value_target", "state_value"):
        torch.testing.assert_close(mine[key], theirs[key])


def test_qvalue_actor_is_adapted():
    torch.manual_seed(0)
    theirs = tm.QValueActor(tm.MLP(OBS, 4, num_cells=[8]), in_keys=["observation"],
                            action_space="one_hot")
    mine = as_module(theirs, "value_network", owner="test")
    assert isinstance(mine, am.QValueActor)
    td = theirs(_batch())
    out = mine(ArrayDict.from_tensordict(_batch()))
    for key in ("action", "action_value", "chosen_action_value"):
        torch.testing.assert_close(out[key], td[key])


def test_make_value_estimator_takes_torchrl_enum():
    loss = ClipPPOLoss(_torchrl_actor("TanhNormal"), tm.ValueOperator(nn.Linear(OBS, 1),
                                                                      in_keys=["observation"]))
    loss.make_value_estimator(TorchRLValueEstimators.TDLambda, gamma=0.9, lmbda=0.5)
    assert loss.value_type is ValueEstimators.TDLambda


def _torch_loss(**kwargs):
    critic = tm.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
    return ClipPPOLoss(_torchrl_actor("TanhNormal"), critic, **kwargs)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_to_a_device_keeps_the_users_parameters(device):
    loss = _torch_loss()
    before = [id(p) for p in loss.parameters()]
    assert loss.to(device) is loss
    assert [id(p) for p in loss.parameters()] == before


def test_device_strings_resolve_as_torchrl():
    torch_backend = _torch_loss().backend
    assert resolve_destination(torch_backend, "cuda:1", None) == ("torch", "cuda:1")
    assert resolve_destination(torch_backend, torch.device("cpu"), None)[0] == "torch"
    numpy_loss = ClipPPOLoss(
        am.ProbabilisticActor(
            am.DictModule(am.Sequential(am.MLP(OBS, 2, [4]), am.NormalParamExtractor()),
                          in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], distribution_class=TanhNormal,
        ),
        am.ValueOperator(am.MLP(OBS, 1, [4])),
    )
    assert numpy_loss.to("cpu").backend.name == "numpy"
    with pytest.raises(ValueError, match="cannot move a loss on 'numpy' to 'cuda'"):
        numpy_loss.to("cuda")


def _ppo_batch():
    with torch.no_grad():
        batch = _torchrl_actor("TanhNormal")(_batch())
    batch["advantage"] = torch.randn(N, 1)
    batch["value_target"] = torch.randn(N, 1)
    return batch


def test_monte_carlo_draws_follow_torch_manual_seed_without_seed():
    loss, batch = _torch_loss(), _ppo_batch()

    def entropy(seed):
        torch.manual_seed(seed)
        return loss(batch)["entropy"]

    torch.testing.assert_close(entropy(5), entropy(5))
    assert not torch.equal(entropy(5), entropy(6))


def test_explicit_seed_gives_the_loss_its_own_generator():
    batch = _ppo_batch()
    first = []
    for global_seed in (5, 6):
        loss = _torch_loss(seed=3)
        torch.manual_seed(global_seed)
        first.append(loss(batch)["entropy"])
    torch.testing.assert_close(first[0], first[1])


def test_tensordict_batch_gives_tensordict_output():
    out = _torch_loss()(_ppo_batch())
    assert isinstance(out, TensorDict)
    detached = out.detach()
    assert not detached["loss_objective"].requires_grad
    assert sorted(k for k in out.keys() if k.startswith("loss_")) == [
        "loss_critic", "loss_entropy", "loss_objective"
    ]


def test_arraydict_detach():
    x = torch.ones(3, requires_grad=True)
    ad = ArrayDict({"a": x * 2, "n": {"b": x + 1}}, [3])
    out = ad.detach()
    assert not out["a"].requires_grad and not out["n", "b"].requires_grad
    assert ad["a"].requires_grad
    assert tuple(out.batch_size) == (3,)


def test_reinforce_with_torchrl_modules():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = ReinforceLoss(
            _torchrl_actor("TanhNormal"), tm.ValueOperator(nn.Linear(OBS, 1),
                                                           in_keys=["observation"]),
        )
    out = loss(_ppo_batch())
    assert set(out.keys()) >= {"loss_actor", "loss_value"}


@pytest.mark.parametrize(
    ("make_theirs", "make_mine"),
    [
        (lambda: tm.MLP(OBS, 1, num_cells=[8, 8]), lambda: am.MLP(OBS, 1, [8, 8])),
        (
            lambda: tm.ValueOperator(tm.MLP(OBS, 1, num_cells=[8]), in_keys=["observation"]),
            lambda: am.ValueOperator(am.MLP(OBS, 1, [8])),
        ),
        (
            lambda: tm.ProbabilisticActor(
                TensorDictModule(nn.Sequential(tm.MLP(OBS, 2, num_cells=[8]),
                                               NormalParamExtractor()),
                                 in_keys=["observation"], out_keys=["loc", "scale"]),
                in_keys=["loc", "scale"], distribution_class=tm.TanhNormal,
            ),
            lambda: am.ProbabilisticActor(
                am.DictModule(am.Sequential(am.MLP(OBS, 2, [8]), am.NormalParamExtractor()),
                              in_keys=["observation"], out_keys=["loc", "scale"]),
                in_keys=["loc", "scale"], distribution_class=TanhNormal,
            ),
        ),
    ],
    ids=["MLP", "ValueOperator", "ProbabilisticActor"],
)
def test_load_torchrl_state_dict_name_for_name(make_theirs, make_mine):
    torch.manual_seed(0)
    theirs, mine = make_theirs(), make_mine()
    mine.load_state_dict(theirs.state_dict())
    their_values = [v.detach().numpy() for v in theirs.state_dict().values()]
    for mine_value, their_value in zip(mine.state_dict().values(), their_values):
        np.testing.assert_array_equal(mine_value, their_value)


def test_load_state_dict_checks_before_writing():
    mine = am.MLP(OBS, 1, [8])
    before = {k: np.array(v) for k, v in mine.state_dict().items()}
    bad = {k: np.zeros(v.shape) for k, v in before.items()}
    bad["2.weight"] = np.zeros((2, 8))
    with pytest.raises(ValueError, match=r"'2.weight' has shape \(2, 8\), expected \(1, 8\)"):
        mine.load_state_dict(bad)
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        mine.load_state_dict({**before, "extra": np.zeros(1)})
    for key, value in mine.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("loss_name", ["PPOLoss", "KLPENPPOLoss"])
def test_other_ppo_losses_match_torchrl_forward(loss_name):
    """Forward values with TorchRL's modules, Monte-Carlo KL and entropy included (the
    KL-PEN gradients differ by the recorded ``torchrl-klpen-inplace-beta`` deviation)."""
    import torchrl.objectives as torchrl_objectives

    import arrayrl.objectives as arrayrl_objectives

    batch = _ppo_batch()
    outputs = []
    for objectives in (torchrl_objectives, arrayrl_objectives):
        actor = _torchrl_actor("TanhNormal")
        torch.manual_seed(0)
        critic = tm.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
        loss = getattr(objectives, loss_name)(actor, critic)
        torch.manual_seed(3)
        outputs.append(loss(batch.clone()))
    theirs, mine = outputs
    assert sorted(mine.keys()) == sorted(theirs.keys())
    for key in theirs.keys():
        torch.testing.assert_close(mine[key], theirs[key], msg=key)


def test_vtrace_takes_a_torchrl_actor():
    from arrayrl.objectives.value import VTrace

    actor = _torchrl_actor("TanhNormal")
    critic = tm.ValueOperator(nn.Linear(OBS, 1), in_keys=["observation"])
    estimator = VTrace(gamma=0.9, actor_network=actor, value_network=critic)
    assert isinstance(estimator.actor_network, am.ProbabilisticActor)
    obs = torch.randn(2, 5, OBS)
    with torch.no_grad():
        td = actor(TensorDict({"observation": obs[:, :-1]}, [2, 4]))
    td["next"] = TensorDict(
        {
            "observation": obs[:, 1:], "reward": torch.randn(2, 4, 1),
            "done": torch.zeros(2, 4, 1, dtype=torch.bool),
            "terminated": torch.zeros(2, 4, 1, dtype=torch.bool),
        },
        [2, 4],
    )
    out = estimator(td)
    assert out["advantage"].shape == (2, 4, 1)
    assert torch.isfinite(out["advantage"]).all()


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.5, TypeError), ("3", TypeError)])
def test_seed_is_checked_at_construction(seed, error):
    with pytest.raises(error, match="seed"):
        _torch_loss(seed=seed)
