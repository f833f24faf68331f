"""QValueActor against TorchRL's, and ensembles by stacked parameters against their members."""

from __future__ import annotations

import numpy as np
import pytest
from arrayrl.backends import backend_of, get_backend

from arrayrl.data import ArrayDict
from arrayrl.modules import (
    MLP,
    DictModule,
    Ensemble,
    Linear,
    NormalParamExtractor,
    QValueActor,
    QValueModule,
    Sequential,
    ensemble_params,
    flatten_params,
    stack_params,
    unstack_params,
)

BACKEND_NAMES = ["numpy", "torch", "array_api_strict"]


def _host(x) -> np.ndarray:
    return np.asarray(backend_of(x).to_numpy(x))


def _f64(backend: str):
    """float64 of ``backend``'s namespace (layers take the backend's own dtype objects)."""
    return get_backend(backend).xp.float64


# -- QValueActor ------------------------------------------------------------------------


def _torchrl_actor(ours: MLP, **kwargs):
    """TorchRL's QValueActor on a TorchRL MLP holding ``ours``' weights (float64)."""
    torch = pytest.importorskip("torch")
    from torchrl.modules import MLP as TorchRLMLP
    from torchrl.modules import QValueActor as TorchRLQValueActor

    net = TorchRLMLP(
        in_features=ours.in_features, out_features=ours.out_features, num_cells=ours.num_cells
    ).double()
    net.load_state_dict({k: torch.as_tensor(_host(v)) for k, v in ours.named_parameters().items()})
    return TorchRLQValueActor(net, **kwargs)


def _observations_and_mask(n_actions: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = rng.random((7, n_actions)) < 0.6
    mask[:, 0] = True  # at least one allowed action per row
    return rng.standard_normal((7, 4)), mask


CASES = [
    {"action_space": "one-hot"},
    {"action_space": "categorical"},
    {"action_space": "one_hot", "action_mask_key": "mask"},
    {"action_space": "categorical", "action_mask_key": "mask"},
    {"action_space": "mult-one-hot", "var_nums": [2, 3]},
]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_qvalue_actor_matches_torchrl(backend: str, case: dict) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip(backend)
    from tensordict import TensorDict

    reference = MLP(4, 5, [16], seed=2, dtype=np.float64)
    ours = QValueActor(MLP(4, 5, [16], seed=2, backend=backend, dtype=_f64(backend)), **case)
    tr_kwargs = {k: v for k, v in case.items() if k != "var_nums"}
    theirs = _torchrl_actor(reference, **tr_kwargs)
    if "var_nums" in case:
        theirs[1].var_nums = case["var_nums"]  # TorchRL's QValueActor does not forward it
    assert ours.in_keys == theirs.in_keys and ours.out_keys == theirs.out_keys
    obs, mask = _observations_and_mask()
    expected = theirs(
        TensorDict({"observation": torch.as_tensor(obs), "mask": torch.as_tensor(mask)}, [7])
    )
    to = ours.module.module.backend.from_numpy
    got = ours(ArrayDict({"observation": to(obs), "mask": to(mask)}, [7]))
    for key in ("action", "action_value", "chosen_action_value"):
        np.testing.assert_allclose(_host(got[key]), expected[key].detach().numpy(), rtol=1e-12)
        assert _host(got[key]).dtype == expected[key].detach().numpy().dtype, key


def test_qvalue_actor_gradients_match_torchrl() -> None:
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    reference = MLP(4, 5, [16], seed=3, dtype=np.float64)
    ours = QValueActor(
        MLP(4, 5, [16], seed=3, backend="torch", dtype=_f64("torch")), action_space="categorical"
    )
    theirs = _torchrl_actor(reference, action_space="categorical")
    obs, _ = _observations_and_mask()
    theirs(TensorDict({"observation": torch.as_tensor(obs)}, [7]))[
        "chosen_action_value"
    ].sum().backward()
    ours(ArrayDict({"observation": torch.as_tensor(obs)}, [7]))[
        "chosen_action_value"
    ].sum().backward()
    for (name, p), q in zip(ours.named_parameters().items(), theirs.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_one_hot_ties_pick_the_first_maximum() -> None:
    values = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    batch = QValueModule("one-hot")(ArrayDict({"action_value": values}, [2]))
    np.testing.assert_array_equal(batch["action"], [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(batch["chosen_action_value"], [[3.0], [2.0]])


def test_masked_values_may_be_infinite_without_nan() -> None:
    values = np.array([[-np.inf, 1.0, np.inf]])
    mask = np.array([[True, True, False]])
    batch = QValueModule("one-hot", action_mask_key="mask")(
        ArrayDict({"action_value": values, "mask": mask}, [1])
    )
    np.testing.assert_array_equal(batch["action"], [[0, 1, 0]])
    np.testing.assert_array_equal(batch["chosen_action_value"], [[1.0]])


def test_qvalue_actor_custom_keys_and_tensordict_module() -> None:
    torch = pytest.importorskip("torch")
    from tensordict.nn import TensorDictModule

    net = TensorDictModule(torch.nn.Linear(4, 3), in_keys=["obs"], out_keys=["q"])
    actor = QValueActor(
        net,
        action_space="categorical",
        action_value_key="q",
        action_key=("agent", "act"),
        chosen_action_value_key="qa",
    )
    assert actor.in_keys == ["obs"] and actor.out_keys == [("agent", "act"), "q", "qa"]
    obs = torch.randn(6, 4)
    batch = actor(ArrayDict({"obs": obs}, [6]))
    torch.testing.assert_close(batch["agent", "act"], net.module(obs).argmax(-1))


def test_qvalue_actor_refusals() -> None:
    with pytest.raises(ValueError, match="Neither action_space nor spec"):
        QValueActor(MLP(4, 3))
    with pytest.raises(NotImplementedError, match="multi_categorical"):
        QValueActor(MLP(4, 3), action_space="multi-categorical")
    with pytest.raises(ValueError, match="unknown action_space"):
        QValueActor(MLP(4, 3), action_space="discrete")
    critic = DictModule(MLP(4, 3), in_keys=["observation"], out_keys=["values"])
    with pytest.raises(KeyError, match="'action_value' is not among"):
        QValueActor(critic, action_space="one-hot")
    with pytest.raises(KeyError, match="'mask'"):
        QValueActor(MLP(4, 3), action_space="one-hot", action_mask_key="mask")(
            ArrayDict({"observation": np.zeros((2, 4), np.float32)}, [2])
        )


def test_action_space_from_a_torchrl_spec() -> None:
    pytest.importorskip("torchrl")
    from torchrl.data import Categorical, OneHot

    assert QValueActor(MLP(4, 3), spec=OneHot(3)).action_space == "one_hot"
    assert QValueActor(MLP(4, 3), spec=Categorical(3)).action_space == "categorical"
    with pytest.raises(ValueError, match="does not match"):
        QValueActor(MLP(4, 3), spec=OneHot(3), action_space="categorical")


# -- ensembles --------------------------------------------------------------------------


def _members(backend: str, n: int = 3) -> list[MLP]:
    return [MLP(4, 2, [8, 8], seed=s, backend=backend, dtype=_f64(backend)) for s in range(n)]


def test_stack_and_unstack_round_trip() -> None:
    members = _members("numpy")
    stacked = stack_params([m.params for m in members])
    assert stacked["0"]["weight"].shape == (3, 8, 4) and stacked["4"]["bias"].shape == (3, 2)
    unstacked = unstack_params(stacked)
    assert len(unstacked) == 3
    for member, tree in zip(members, unstacked):
        for name, leaf in member.named_parameters().items():
            np.testing.assert_array_equal(flatten_params(tree)[name], leaf)
    factory_tree = ensemble_params(lambda s: MLP(4, 2, [8, 8], seed=s, dtype=np.float64), range(3))
    np.testing.assert_array_equal(factory_tree["0"]["bias"], stacked["0"]["bias"])


def test_stack_refuses_different_structures() -> None:
    with pytest.raises(ValueError, match="shape"):
        stack_params([MLP(4, 2, [8]).params, MLP(4, 2, [6]).params])
    with pytest.raises(ValueError, match="structure"):
        stack_params([MLP(4, 2, [8]).params, MLP(4, 2, [8, 8]).params])


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("batch", [(), (5,), (2, 5)], ids=str)
def test_ensemble_equals_its_members(backend: str, batch: tuple[int, ...]) -> None:
    pytest.importorskip(backend)
    members = _members(backend)
    to = members[0].backend.from_numpy
    rng = np.random.default_rng(4)
    shared = rng.standard_normal((*batch, 4))
    per_member = rng.standard_normal((3, *batch, 4))
    out = Ensemble(members)(to(shared))
    assert tuple(out.shape) == (3, *batch, 2)
    stacked_out = Ensemble(members, shared_input=False)(to(per_member))
    for k, member in enumerate(members):
        np.testing.assert_allclose(_host(out[k, ...]), _host(member(to(shared))), rtol=1e-12)
        np.testing.assert_allclose(
            _host(stacked_out[k, ...]), _host(member(to(per_member[k, ...]))), rtol=1e-12
        )


def test_ensemble_gradients_equal_the_members_gradients() -> None:
    torch = pytest.importorskip("torch")
    members = _members("torch")
    ensemble = Ensemble(members)
    assert all(p.is_leaf and p.requires_grad for p in ensemble.parameters())
    x = torch.as_tensor(np.random.default_rng(5).standard_normal((6, 4)))
    ensemble(x).pow(2).sum().backward()
    for k, member in enumerate(members):
        member(x).pow(2).sum().backward()
        for name, leaf in member.named_parameters().items():
            torch.testing.assert_close(ensemble.named_parameters()[name].grad[k], leaf.grad)


def test_ensemble_with_a_target_tree_and_tuple_outputs() -> None:
    members = [
        Sequential(MLP(4, 6, [8], seed=s, dtype=np.float64), NormalParamExtractor())
        for s in range(2)
    ]
    ensemble = Ensemble(members)
    x = np.random.default_rng(6).standard_normal((5, 4))
    loc, scale = ensemble(x)
    assert loc.shape == scale.shape == (2, 5, 3)
    np.testing.assert_allclose(loc[1], members[1](x)[0])
    target = {
        k: {n: {p: v + 0.1 for p, v in layer.items()} for n, layer in sub.items()}
        for k, sub in ensemble.params.items()
    }
    assert not np.allclose(ensemble.apply(target, x)[0], loc)


def test_stacked_linear_checks_the_member_axis() -> None:
    layer = Linear(4, 2)
    stacked = stack_params([Linear(4, 2, seed=s).params for s in range(3)])
    assert layer.apply(stacked, np.zeros((1, 7, 4), np.float32)).shape == (3, 7, 2)
    with pytest.raises(ValueError, match=r"x\[None\]"):
        layer.apply(stacked, np.zeros((7, 4), np.float32))


def test_ensemble_moves_backend_and_refuses_torch_layers() -> None:
    torch = pytest.importorskip("torch")
    from arrayrl.modules import from_torch

    ensemble = Ensemble(_members("numpy")).to("torch")
    assert all(isinstance(p, torch.Tensor) and p.requires_grad for p in ensemble.parameters())
    assert ensemble(torch.zeros(5, 4, dtype=torch.float64)).shape == (3, 5, 2)
    with pytest.raises(TypeError, match="TorchLayer"):
        Ensemble([from_torch(torch.nn.Linear(4, 2)) for _ in range(2)])
