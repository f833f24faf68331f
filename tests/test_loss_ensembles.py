"""Q ensembles as stacked parameters in a loss: TorchRL's member rule, batched and looped
application (no vmap, so recurrent and dropout critics work), priority weights."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, ValueOperator, flatten_params
from arrayrl.modules.ensemble import unstack_params
from arrayrl.objectives.common import LossModule


class _Loss(LossModule):
    """A bare loss to register networks on."""


def _q_batch(xp_from, b=5, obs=3, act=1, seed=0):
    rng = np.random.default_rng(seed)
    data = {
        "observation": rng.standard_normal((b, obs)).astype(np.float32),
        "action": rng.standard_normal((b, act)).astype(np.float32),
    }
    return ArrayDict({k: xp_from(v) for k, v in data.items()}, [b])


def test_expand_dim_draws_members_within_each_leafs_range():
    loss = _Loss()
    loss.seed = 3
    critic = ValueOperator(MLP(4, 1, [8]), in_keys=["observation", "action"])
    loss.convert_to_functional(critic, "qvalue_network", 4, create_target_params=True)
    assert loss.ensemble_size("qvalue_network") == 4
    own = flatten_params(critic.params)
    for name, leaf in flatten_params(loss.qvalue_network_params).items():
        assert leaf.shape == (4, *own[name].shape)
        assert own[name].min() <= leaf.min() and leaf.max() <= own[name].max()
    # the members differ from each other (drawn independently)
    members = unstack_params(loss.qvalue_network_params)
    assert not np.array_equal(members[0]["module"]["0"]["weight"],
                              members[1]["module"]["0"]["weight"])


def test_batched_members_equal_one_call_per_member():
    loss = _Loss()
    critic = ValueOperator(MLP(4, 1, [8]), in_keys=["observation", "action"])
    loss.convert_to_functional(critic, "qvalue_network", 3)
    batch = _q_batch(np.asarray)
    out = loss.ensemble_outputs("qvalue_network", batch, loss.qvalue_network_params)
    values = out["state_action_value"]
    assert values.shape == (3, 5, 1)
    for e, member in enumerate(unstack_params(loss.qvalue_network_params)):
        one = critic(batch.clone(recurse=False), params=member)["state_action_value"]
        np.testing.assert_allclose(values[e], one, rtol=1e-6)


def test_members_with_their_own_inputs():
    loss = _Loss()
    critic = ValueOperator(MLP(4, 1, [8]), in_keys=["observation", "action"])
    loss.convert_to_functional(critic, "qvalue_network", 2)
    batch = _q_batch(np.asarray)
    actions = np.stack([batch["action"], -batch["action"]])
    stacked = ArrayDict({"observation": np.stack([batch["observation"]] * 2),
                         "action": actions}, [2, 5])
    out = loss.ensemble_outputs("qvalue_network", stacked, loss.qvalue_network_params,
                                member_inputs=True)
    for e, member in enumerate(unstack_params(loss.qvalue_network_params)):
        sub = ArrayDict({"observation": batch["observation"], "action": actions[e]}, [5])
        np.testing.assert_allclose(out["state_action_value"][e],
                                   critic(sub, params=member)["state_action_value"], rtol=1e-6)


def test_a_list_of_modules_is_stacked():
    loss = _Loss()
    critics = [ValueOperator(MLP(4, 1, [8], seed=s), in_keys=["observation", "action"])
               for s in range(3)]
    loss.convert_to_functional(critics, "qvalue_network", 3)
    stacked = loss.qvalue_network_params["module"]["0"]["weight"]
    for e, critic in enumerate(critics):
        np.testing.assert_array_equal(stacked[e], critic.params["module"]["0"]["weight"])
    with pytest.raises(ValueError, match="expand_dim=2 does not match the 3 modules"):
        _Loss().convert_to_functional(critics, "qvalue_network", 2)


def _torchrl_sac_networks():
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    from tensordict.nn import TensorDictModule
    from tensordict.nn.distributions import NormalParamExtractor
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import ProbabilisticActor, TanhNormal
    from torchrl.modules import ValueOperator as TorchRLValue

    torch.manual_seed(0)
    actor = ProbabilisticActor(
        TensorDictModule(
            torch.nn.Sequential(TorchRLMLP(3, 2, num_cells=[8]), NormalParamExtractor()),
            in_keys=["observation"], out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"], distribution_class=TanhNormal, return_log_prob=True,
    )
    critic = TorchRLValue(TorchRLMLP(4, 1, num_cells=[8]), in_keys=["observation", "action"])
    return actor, critic


def test_torchrl_members_are_reproduced_after_the_same_manual_seed():
    """Without ``seed=``, a loss built from TorchRL modules draws its members from torch's
    default generator in TorchRL's order: TorchRL's SACLoss gets the same ensemble."""
    torch = pytest.importorskip("torch")
    from torchrl.objectives import SACLoss

    actor, critic = _torchrl_sac_networks()
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SACLoss(actor, critic, num_qvalue_nets=3)
    torch.manual_seed(5)
    mine = _Loss()
    mine.convert_to_functional(actor, "actor_network")
    mine.convert_to_functional(critic, "qvalue_network", 3, create_target_params=True)
    their_params = dict(theirs.qvalue_network_params.flatten_keys(".").items())
    my_params = flatten_params(mine.qvalue_network_params)
    assert sorted(their_params) == sorted(my_params)
    for name, value in their_params.items():
        assert torch.equal(value.data, my_params[name].data), name


def _looped_critic(kind: str):
    """A TorchRL critic that vmap cannot ensemble: an LSTM over a sequence axis, or
    dropout in training mode (TorchRL issues 2313, 2741, 1735)."""
    torch = pytest.importorskip("torch")
    from tensordict.nn import TensorDictModule

    class Recurrent(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(4, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, obs, act):
            seq = torch.cat([obs, act], -1).unsqueeze(-2)  # one step per sample
            out, _ = self.lstm(seq)
            return self.head(out[..., -1, :])

    class Dropout(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 1)
            )

        def forward(self, obs, act):
            return self.net(torch.cat([obs, act], -1))

    torch.manual_seed(0)
    net = Recurrent() if kind == "lstm" else Dropout()
    return TensorDictModule(net, in_keys=["observation", "action"],
                            out_keys=["state_action_value"])


@pytest.mark.parametrize("kind", ["lstm", "dropout"])
def test_critics_vmap_cannot_take_run_as_an_ensemble(kind):
    torch = pytest.importorskip("torch")
    from torch.func import functional_call

    critic = _looped_critic(kind)
    loss = _Loss()
    loss.convert_to_functional(critic, "qvalue_network", 3)
    batch = _q_batch(torch.from_numpy)
    params = loss.qvalue_network_params
    critic.train()
    values = loss.ensemble_outputs("qvalue_network", batch, params)["state_action_value"]
    assert values.shape == (3, 5, 1)
    values.sum().backward()  # gradients reach every member
    assert all(leaf.grad is not None for leaf in loss.parameters())
    critic.eval()  # deterministic: each member is exactly its own functional call
    values = loss.ensemble_outputs("qvalue_network", batch, params)["state_action_value"]
    for e, member in enumerate(unstack_params(params)):
        flat = flatten_params(member)
        inputs = batch.to_tensordict()
        expected = functional_call(critic, flat, (inputs,))["state_action_value"]
        torch.testing.assert_close(values[e], expected)


def test_ensemble_moves_with_the_loss():
    torch = pytest.importorskip("torch")
    loss = _Loss()
    critic = ValueOperator(MLP(4, 1, [8]), in_keys=["observation", "action"])
    loss.convert_to_functional(critic, "qvalue_network", 2, create_target_params=True)
    before = {k: np.array(v) for k, v in flatten_params(loss.qvalue_network_params).items()}
    loss.to("torch")
    after = flatten_params(loss.qvalue_network_params)
    for name, value in after.items():
        assert isinstance(value, torch.Tensor) and value.requires_grad
        np.testing.assert_array_equal(value.detach().numpy(), before[name])
    assert all(isinstance(p, torch.Tensor) for p in loss.parameters())


class _WeightedLoss(LossModule):
    @dataclasses.dataclass
    class _AcceptedKeys:
        priority_weight: str = "priority_weight"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_priority_weights_in_the_reduction(reduction):
    loss = _WeightedLoss()
    loss.reduction = reduction
    values = np.array([1.0, 2.0, 4.0])
    weights = np.array([0.5, 1.0, 0.25])
    batch = ArrayDict({"priority_weight": weights[:, None]}, [3])
    got = loss.reduce_loss(values, batch, weights=loss.priority_weight(batch))
    expected = {"mean": (values * weights).sum() / weights.sum(),
                "sum": (values * weights).sum(), "none": values * weights}[reduction]
    np.testing.assert_allclose(got, expected)
    loss.use_prioritized_weights = False
    assert loss.priority_weight(batch) is None
    with pytest.raises(ValueError, match="priority_weight has shape"):
        loss.reduce_loss(values, batch, weights=np.ones(4))


def test_registered_parameters_train_save_and_move():
    torch = pytest.importorskip("torch")
    loss = _Loss()
    loss.convert_to_functional(ValueOperator(MLP(3, 1, [4])), "critic_network")
    loss.register_parameter("log_alpha", np.zeros((), np.float32))
    assert "log_alpha" in dict(loss.named_parameters())
    loss.to("torch")
    assert isinstance(loss.log_alpha, torch.Tensor) and loss.log_alpha.requires_grad
    assert any(p is loss.log_alpha for p in loss.parameters())
    state = {k: (v.detach().clone() if torch.is_tensor(v) else v)
             for k, v in loss.state_dict().items()}
    state["log_alpha"] = torch.tensor(0.5)
    loss.load_state_dict(state)
    assert loss.log_alpha.item() == 0.5 and loss.log_alpha.requires_grad


def test_members_with_their_own_inputs_run_once_per_member():
    """The looped path (a TorchRL critic) with member inputs ``(E, B, ...)``."""
    torch = pytest.importorskip("torch")
    from torch.func import functional_call

    critic = _looped_critic("dropout")
    critic.eval()
    loss = _Loss()
    loss.convert_to_functional(critic, "qvalue_network", 2)
    batch = _q_batch(torch.from_numpy)
    actions = torch.stack([batch["action"], -batch["action"]])
    stacked = ArrayDict({"observation": torch.stack([batch["observation"]] * 2),
                         "action": actions}, [2, 5])
    params = loss.qvalue_network_params
    out = loss.ensemble_outputs("qvalue_network", stacked, params, member_inputs=True)
    assert out["state_action_value"].shape == (2, 5, 1)
    for e, member in enumerate(unstack_params(params)):
        sub = ArrayDict({"observation": batch["observation"], "action": actions[e]}, [5])
        expected = functional_call(critic, flatten_params(member), (sub.to_tensordict(),))
        torch.testing.assert_close(out["state_action_value"][e],
                                   expected["state_action_value"])


def test_leaves_shared_with_another_network_are_not_listed_and_load_back():
    """``compare_against`` leaves (a trunk the actor trains) are broadcast views: not
    among the ensemble's parameters, left alone by ``load_state_dict`` (they follow
    the actor's leaves, which are loaded)."""
    from arrayrl.modules import DictModule, Linear, Sequential

    trunk = Linear(3, 4, seed=0)
    actor = DictModule(Sequential(trunk, Linear(4, 1, seed=1)), ["observation"], ["action"])
    critic = DictModule(Sequential(trunk, Linear(4, 1, seed=2)), ["observation"],
                        ["state_action_value"])
    loss = _Loss()
    loss.convert_to_functional(actor, "actor_network")
    loss.convert_to_functional(critic, "qvalue_network", 2,
                               compare_against=list(actor.parameters()))
    names = [name for name, _ in loss.named_parameters()]
    assert "qvalue_network_params.module.0.weight" not in names
    assert "qvalue_network_params.module.1.weight" in names
    state = {k: np.array(v) + 1.0 for k, v in loss.state_dict().items()}
    loss.load_state_dict(state)
    np.testing.assert_array_equal(loss.actor_network_params["module"]["0"]["weight"],
                                  state["actor_network_params.module.0.weight"])
