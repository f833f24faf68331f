"""LossModule plumbing on a small critic-only loss: keys, coefficients, reduction and
masks, parameters, state_dict across backends, and the target-network updaters."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP
from arrayrl.modules.actors import ValueOperator
from arrayrl.objectives import HardUpdate, LossModule, SoftUpdate, distance_loss


class ValueLoss(LossModule):
    """``loss_value = coeff · (V(s) − target)²``: the smallest loss with every feature."""

    @dataclasses.dataclass
    class _AcceptedKeys:
        value: Any = "state_value"
        value_target: Any = "value_target"

    def __init__(self, critic: Any, delay_value: bool = False, coeff: float = 1.0) -> None:
        super().__init__()
        self.convert_to_functional(critic, "critic_network", create_target_params=delay_value)
        self.register_coeff("coeff", coeff, lambda v: "must be >= 0" if v < 0 else None)

    def forward(self, batch: Any, params: Any = None) -> ArrayDict:
        batch = self.working_copy(batch)
        self.check_batch_backend(batch, self.tensor_keys.value_target)
        target = self.read(batch, self.tensor_keys.value_target)
        self.critic_network(batch, self.network_params("critic_network", params))
        value = self.read(batch, self.tensor_keys.value)
        loss = self.coeff * distance_loss(value, target, "l2")
        return ArrayDict({"loss_value": self.reduce_loss(loss, batch)})


def _batch(n: int = 6, seed: int = 0) -> ArrayDict:
    rng = np.random.default_rng(seed)
    return ArrayDict(
        {
            "observation": rng.standard_normal((n, 3)).astype(np.float32),
            "value_target": rng.standard_normal((n, 1)).astype(np.float32),
        },
        [n],
    )


def _loss(**kwargs: Any) -> ValueLoss:
    return ValueLoss(ValueOperator(MLP(3, 1, [8], seed=1)), **kwargs)


def _manual(loss: ValueLoss, batch: ArrayDict) -> np.ndarray:
    value = loss.critic_network.module(batch["observation"])
    return loss.coeff * (value - batch["value_target"]) ** 2


def test_set_keys_renames_and_rejects_unknown_names() -> None:
    loss, batch = _loss(), _batch()
    renamed = ArrayDict({"observation": batch["observation"], "ret": batch["value_target"]}, [6])
    with pytest.raises(KeyError, match=r"value_target.*set_keys"):
        loss(renamed)
    loss.set_keys(value_target="ret")
    assert loss.tensor_keys.value_target == "ret"
    np.testing.assert_allclose(loss(renamed)["loss_value"], _manual(loss, batch).mean(), rtol=1e-6)
    with pytest.raises(ValueError, match="accepted keys are"):
        loss.set_keys(reward="r")
    loss.set_keys(value_target=None)
    assert loss.tensor_keys.value_target == "value_target"


def test_coefficients_are_schedulable_checked_and_tracked() -> None:
    loss, batch = _loss(), _batch()
    first = loss(batch)["loss_value"]
    loss.coeff = 0.25
    np.testing.assert_allclose(loss(batch)["loss_value"], 0.25 * first, rtol=1e-6)
    assert loss.state_dict()["coeff"] == 0.25
    with pytest.raises(ValueError, match="coeff must be >= 0"):
        loss.coeff = -1.0
    with pytest.raises(TypeError, match="coeff must be a real number"):
        loss.coeff = "big"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reduction_and_masks_follow_torchrl(reduction: str) -> None:
    loss, batch = _loss(), _batch()
    loss.reduction = reduction
    mask = np.array([True, False, True, True, False, True])
    elementwise = _manual(loss, batch)
    masked = np.where(mask[:, None], elementwise, 0.0)
    expected = {"mean": masked.sum() / mask.sum(), "sum": masked.sum(), "none": masked}
    for key in (("collector", "mask"), "shifted_valid"):
        with_mask = batch.clone(recurse=False)
        with_mask.set(key, mask[:, None])
        got = loss(with_mask)["loss_value"]
        np.testing.assert_allclose(got, expected[reduction], rtol=1e-6)
    loss.loss_mask_key = None
    np.testing.assert_allclose(
        loss(with_mask)["loss_value"],
        {"mean": elementwise.mean(), "sum": elementwise.sum(), "none": elementwise}[reduction],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="reduction"):
        loss.reduction = "max"


def test_masked_nan_never_reaches_the_loss() -> None:
    loss, batch = _loss(), _batch()
    target = batch["value_target"].copy()
    target[0] = np.nan
    batch.set("value_target", target)
    batch.set("shifted_valid", np.array([False, True, True, True, True, True])[:, None])
    assert np.isfinite(loss(batch)["loss_value"])
    loss.loss_mask_key = None
    assert np.isnan(loss(batch)["loss_value"])  # NaN propagates where it is not masked


def test_the_callers_batch_is_not_modified() -> None:
    loss, batch = _loss(), _batch()
    loss(batch)
    assert "state_value" not in batch.keys()


def test_parameters_are_shared_named_and_deduplicated() -> None:
    critic = ValueOperator(MLP(3, 1, [8]))
    loss = ValueLoss(critic)
    names = [name for name, _ in loss.named_parameters()]
    assert names[0] == "critic_network_params.module.0.weight" and len(names) == 4
    assert all(a is b for a, b in zip(loss.parameters(), critic.parameters()))
    assert loss.critic_network_params is loss._params["critic_network"]


def test_pure_function_params_override_the_own_ones() -> None:
    loss, batch = _loss(), _batch()
    zeros = {
        "module": {
            k: {n: v * 0 for n, v in t.items()}
            for k, t in loss.critic_network_params["module"].items()
        }
    }
    expected = np.mean(batch["value_target"] ** 2)
    got = loss(batch, params={"critic_network": zeros})["loss_value"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_state_dict_round_trips_across_backends() -> None:
    torch = pytest.importorskip("torch")
    source = ValueLoss(ValueOperator(MLP(3, 1, [8], seed=5)), delay_value=True, coeff=0.3)
    target = _loss(delay_value=True).to("torch")
    optimizer_view = list(target.parameters())
    target.load_state_dict(source.state_dict())
    assert next(iter(target.parameters())) is optimizer_view[0]  # loaded in place
    batch = _batch()
    expected = source(batch)["loss_value"]
    got = target(batch.to("torch"))["loss_value"]
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6)
    assert target.coeff == pytest.approx(0.3)
    back = _loss(delay_value=True)
    back.load_state_dict(target.state_dict())
    np.testing.assert_allclose(back(batch)["loss_value"], expected, rtol=1e-6)
    with pytest.raises(KeyError, match="missing"):
        back.load_state_dict({})
    assert isinstance(got, torch.Tensor)


def test_to_numpy_keeps_values_and_loss_trains_on_torch() -> None:
    torch = pytest.importorskip("torch")
    loss, batch = _loss(), _batch()
    expected = loss(batch)["loss_value"]
    loss.to("torch")
    value = loss(batch.to("torch"))["loss_value"]
    value.backward()
    assert all(p.grad is not None for p in loss.parameters())
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.1)
    optimizer.step()
    assert loss(batch.to("torch"))["loss_value"].item() < value.item()
    loss.to("numpy")
    assert isinstance(next(loss.parameters()), np.ndarray)
    assert loss(batch)["loss_value"] < expected


def test_mixed_backends_raise_type_error() -> None:
    pytest.importorskip("torch")
    loss = _loss().to("torch")
    with pytest.raises(TypeError, match="different backends"):
        loss(_batch())


def test_soft_update_follows_torchrl_convention() -> None:
    loss = _loss(delay_value=True)
    source = loss.critic_network_params["module"]["0"]["weight"]
    target = loss.target_critic_network_params["module"]["0"]["weight"]
    np.testing.assert_array_equal(source, target)
    updater = SoftUpdate(loss, eps=0.9)
    start_target = target.copy()
    new_source = source + 1.0
    np.copyto(source, new_source)
    updater.step()
    np.testing.assert_allclose(target, 0.9 * start_target + 0.1 * new_source, atol=1e-7)
    assert SoftUpdate(loss, tau=0.1).eps == pytest.approx(0.9)
    with pytest.raises(ValueError, match="exactly one"):
        SoftUpdate(loss, eps=0.9, tau=0.1)
    with pytest.raises(RuntimeError, match="no separate target"):
        SoftUpdate(_loss(), eps=0.9)


def test_hard_update_counts_like_torchrl() -> None:
    torch = pytest.importorskip("torch")
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss
    from torchrl.objectives import HardUpdate as TorchRLHardUpdate

    net = QValueActor(
        TorchRLMLP(in_features=3, out_features=2, num_cells=[4]), action_space="one-hot"
    )
    theirs_loss = DQNLoss(net, action_space="one-hot", delay_value=True)
    theirs = TorchRLHardUpdate(theirs_loss, value_network_update_interval=3)
    loss = _loss(delay_value=True)
    ours = HardUpdate(loss, value_network_update_interval=3)
    ours_copies, theirs_copies = [], []
    for _ in range(9):
        with torch.no_grad():
            for p in theirs_loss.value_network_params.values(True, True):
                p.add_(1.0)
        for leaf in loss.parameters():
            leaf += 1.0
        ours.step()
        theirs.step()
        src = next(iter(theirs_loss.value_network_params.values(True, True)))
        tgt = next(iter(theirs_loss.target_value_network_params.values(True, True)))
        theirs_copies.append(bool(torch.equal(src, tgt)))
        ours_copies.append(
            bool(
                np.array_equal(
                    loss.critic_network_params["module"]["0"]["weight"],
                    loss.target_critic_network_params["module"]["0"]["weight"],
                )
            )
        )
    assert ours_copies == theirs_copies and any(ours_copies)
    assert ours.state_dict()["counter"] == theirs.counter


def test_distance_loss_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    a, b = np.random.default_rng(0).standard_normal((2, 50)) * 2
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    expected = {
        "l2": fn.mse_loss(ta, tb, reduction="none"),
        "l1": fn.l1_loss(ta, tb, reduction="none"),
        "smooth_l1": fn.smooth_l1_loss(ta, tb, reduction="none"),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(distance_loss(a, b, name), value.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="loss_function"):
        distance_loss(a, b, "huber")
    with pytest.raises(ValueError, match="equal shapes"):
        distance_loss(a, b[:3], "l2")


# -- make_value_estimator with an estimator object (TorchRL 0.14.1's instance/class forms) --
def _ppo_with_critic():
    from arrayrl.modules import (
        MLP,
        DictModule,
        NormalParamExtractor,
        ProbabilisticActor,
        Sequential,
        ValueOperator,
    )
    from arrayrl.modules.distributions import TanhNormal
    from arrayrl.objectives import ClipPPOLoss

    policy = DictModule(
        Sequential(MLP(3, 2, [8]), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    actor = ProbabilisticActor(policy, in_keys=["loc", "scale"], distribution_class=TanhNormal)
    critic = ValueOperator(MLP(3, 1, [8], seed=1), in_keys=["observation"])
    return ClipPPOLoss(actor, critic), critic


def test_make_value_estimator_takes_an_estimator_instance_as_is():
    from arrayrl.objectives.value import GAE

    loss, critic = _ppo_with_critic()
    gae = GAE(gamma=0.9, lmbda=0.8, value_network=critic)
    assert loss.make_value_estimator(gae) is loss
    assert loss.value_estimator is gae
    assert loss.value_type is GAE


def test_make_value_estimator_builds_an_estimator_class_with_the_hyperparameters():
    from arrayrl.objectives.value import TD0Estimator

    loss, critic = _ppo_with_critic()
    loss.make_value_estimator(TD0Estimator, gamma=0.5, value_network=critic)
    assert type(loss.value_estimator) is TD0Estimator
    assert float(loss.value_estimator.gamma) == 0.5
    assert loss.value_type is TD0Estimator


def test_make_value_estimator_refuses_hyperparameters_with_an_instance():
    from arrayrl.objectives.value import GAE

    loss, critic = _ppo_with_critic()
    with pytest.raises(TypeError, match=r"instance and hyper-parameters \['gamma'\]"):
        loss.make_value_estimator(GAE(gamma=0.9, lmbda=0.8, value_network=critic), gamma=0.3)


def test_make_value_estimator_refuses_torchrl_estimators_but_takes_torchrl_enums():
    pytest.importorskip("torchrl")
    import torchrl.objectives.value as torchrl_value
    from torchrl.objectives import ValueEstimators as TorchRLValueEstimators

    loss, _ = _ppo_with_critic()
    with pytest.raises(TypeError, match=r"arrayrl\.objectives\.value\.GAE"):
        loss.make_value_estimator(torchrl_value.GAE)
    loss.make_value_estimator(TorchRLValueEstimators.TD1, gamma=0.7)
    assert type(loss.value_estimator).__name__ == "TD1Estimator"
