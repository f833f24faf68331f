"""``WorldModelLoss``: against TorchRL 0.14.1 with TorchRL's own world model (the drop-in)
and with an arrayrl world model holding the same weights, hand-computed NumPy losses,
keys, the untouched caller batch, pure-function use, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, Module, unflatten_params
from arrayrl.objectives.world_model_loss import WorldModelLoss

torch = pytest.importorskip("torch")
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402
from torchrl.modules import MLP as TorchMLP  # noqa: E402
from torchrl.objectives import WorldModelLoss as TorchRLWorldModelLoss  # noqa: E402

OBS, ACT, Z, N = 4, 2, 3, 6
ALL = ["reward", "done", "reconstruction", "latent"]
#: (name, in_features, out_features, in_keys, out_key); the encoder runs twice
HEADS = [
    ("encoder", OBS, Z, ["observation"], "latent"),
    ("dynamics", Z + ACT, Z, ["latent", "action"], "predicted_latent"),
    ("reward", Z, 1, ["predicted_latent"], ("next", "reward")),
    ("done", Z, 1, ["predicted_latent"], ("next", "done")),
    ("decoder", Z, OBS, ["latent"], "reconstructed_observation"),
    ("encoder", OBS, Z, [("next", "observation")], "target_latent"),
]


def _batch(rng: np.random.Generator) -> dict:
    return {
        "observation": rng.standard_normal((N, OBS)),
        "action": rng.standard_normal((N, ACT)),
        "next": {
            "observation": rng.standard_normal((N, OBS)),
            "reward": rng.standard_normal((N, 1)),
            "done": rng.random((N, 1)) < 0.4,
            "terminated": rng.random((N, 1)) < 0.2,
        },
    }


def _torch_tree(tree: dict, dtype) -> dict:
    return {
        k: _torch_tree(v, dtype)
        if isinstance(v, dict)
        else torch.tensor(v, dtype=dtype if v.dtype.kind == "f" else None)
        for k, v in tree.items()
    }


def _torchrl_world_model(dtype) -> tuple[TensorDictSequential, dict]:
    torch.manual_seed(0)
    nets = {}
    for name, n_in, n_out, *_ in HEADS:
        nets.setdefault(name, TorchMLP(in_features=n_in, out_features=n_out, num_cells=[8]))
    nets = {k: v.to(dtype) for k, v in nets.items()}
    steps = [TensorDictModule(nets[name], ins, [out]) for name, _, _, ins, out in HEADS]
    return TensorDictSequential(*steps), nets


class ArrayWorldModel(Module):
    """arrayrl's world model of the same MLPs, run in :data:`HEADS`' order."""

    def __init__(self, nets: dict) -> None:
        self.mlps = {}
        for name, net in nets.items():
            mlp = MLP(net[0].in_features, net[-1].out_features, [8])
            state = {k: v.detach().double().numpy() for k, v in net.state_dict().items()}
            mlp.params = unflatten_params(state)
            self.mlps[name] = mlp
        self.in_keys = ["observation", "action", ("next", "observation")]
        self.out_keys = [out for *_, out in HEADS]

    @property
    def params(self) -> dict:
        return {name: mlp.params for name, mlp in self.mlps.items()}

    @params.setter
    def params(self, tree: dict) -> None:
        for name, sub in tree.items():
            self.mlps[name].params = sub

    def forward(self, batch, params):
        for name, _, _, ins, out in HEADS:
            batch.set(out, self.mlps[name].apply(params[name], *(batch.get(k) for k in ins)))
        return batch


def _loss_and_grads(loss, batch, params) -> dict:
    out = loss(batch)
    result = {}
    for key in out.keys():
        value = out.get(key)
        result[key] = value.detach()
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        for k, g in enumerate(grads):
            result[f"{key}/{k}"] = torch.zeros_like(params[k]) if g is None else g
    return result


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"losses": ALL},
        {
            "losses": ["latent", "done", "reward"],
            "reward_loss": "l1",
            "done_loss": "smooth_l1",
            "latent_loss": "smooth_l1",
            "reward_weight": 0.3,
            "latent_weight": 2.0,
        },
    ],
)
def test_dropin_matches_torchrl(kwargs: dict, dtype) -> None:
    """The same TorchRL world model in both losses: every output and gradient."""
    model, _ = _torchrl_world_model(dtype)
    params = list(model.parameters())
    batch = _torch_tree(_batch(np.random.default_rng(0)), dtype)
    ours = _loss_and_grads(
        WorldModelLoss(model, **kwargs), TensorDict(batch, batch_size=[N]), params
    )
    theirs = _loss_and_grads(
        TorchRLWorldModelLoss(model, **kwargs), TensorDict(batch, batch_size=[N]), params
    )
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        expected = theirs[key]
        if dtype == torch.float64 and key.startswith("loss_done"):
            # TorchRL computes loss_done in float32 (.float()); arrayrl in the model's dtype
            assert expected.dtype in (torch.float32, torch.float64)
            torch.testing.assert_close(value, expected.to(value.dtype), rtol=1e-6, atol=1e-7)
            continue
        assert value.dtype == expected.dtype
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)


def test_arrayrl_world_model_on_numpy_matches_torchrl() -> None:
    model, nets = _torchrl_world_model(torch.float64)
    data = _batch(np.random.default_rng(1))
    theirs = TorchRLWorldModelLoss(model, losses=ALL)(
        TensorDict(_torch_tree(data, torch.float64), batch_size=[N])
    )
    ours = WorldModelLoss(ArrayWorldModel(nets), losses=ALL)(ArrayDict(data, (N,)))
    for key in theirs.keys():
        rtol = 1e-6 if key == "loss_done" else 1e-12  # TorchRL's loss_done is float32
        np.testing.assert_allclose(ours[key], theirs[key].detach().numpy(), rtol=rtol)


def _reward_model(weight: np.ndarray) -> DictModule:
    """A world model predicting ``("next", "reward")`` as ``observation @ weight.T``."""
    mlp = MLP(OBS, 1, [])
    mlp.params = {"0": {"weight": weight, "bias": np.zeros(1)}}
    return DictModule(mlp, in_keys=["observation"], out_keys=[("next", "reward")])


@pytest.mark.parametrize(
    ("distance", "formula"),
    [
        ("l2", lambda d: d**2),
        ("l1", np.abs),
        ("smooth_l1", lambda d: np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5)),
    ],
)
def test_reward_loss_by_hand(distance: str, formula) -> None:
    rng = np.random.default_rng(2)
    data = _batch(rng)
    weight = rng.standard_normal((1, OBS))
    loss = WorldModelLoss(_reward_model(weight), reward_loss=distance, reward_weight=0.7)
    out = loss(ArrayDict(data, (N,)))
    predicted = data["observation"] @ weight.T
    expected = 0.7 * formula(predicted - data["next"]["reward"]).mean()
    assert list(out.keys()) == ["loss_reward"]
    np.testing.assert_allclose(out["loss_reward"], expected, rtol=1e-14)


def test_done_loss_dtype_and_terminated_optional() -> None:
    rng = np.random.default_rng(3)
    data = _batch(rng)
    del data["next"]["terminated"]  # TorchRL raises KeyError here; arrayrl renames if present
    mlp = MLP(OBS, 1, [], dtype=np.float64, seed=0)
    model = DictModule(mlp, in_keys=["observation"], out_keys=[("next", "done")])
    out = WorldModelLoss(model, losses=["done"])(ArrayDict(data, (N,)))
    predicted = np.asarray(mlp.apply(mlp.params, data["observation"]))
    expected = ((predicted - data["next"]["done"]) ** 2).mean()
    assert out["loss_done"].dtype == np.float64  # TorchRL: float32
    np.testing.assert_allclose(out["loss_done"], expected, rtol=1e-14)


def test_caller_batch_untouched_and_keys_renamed() -> None:
    rng = np.random.default_rng(4)
    data = _batch(rng)
    data["next"]["r"] = data["next"].pop("reward")
    batch = ArrayDict(data, (N,))
    weight = rng.standard_normal((1, OBS))
    mlp = MLP(OBS, 1, [])
    mlp.params = {"0": {"weight": weight, "bias": np.zeros(1)}}
    model = DictModule(mlp, in_keys=["observation"], out_keys=[("next", "r")])
    loss = WorldModelLoss(model).set_keys(reward="r", true_reward="observed_r")
    out = loss(batch)
    assert sorted(batch["next"].keys()) == ["done", "observation", "r", "terminated"]
    assert batch["next"]["r"] is data["next"]["r"]
    expected = ((data["observation"] @ weight.T - data["next"]["r"]) ** 2).mean()
    np.testing.assert_allclose(out["loss_reward"], expected, rtol=1e-14)


def test_pure_function_params() -> None:
    rng = np.random.default_rng(5)
    data = ArrayDict(_batch(rng), (N,))
    loss = WorldModelLoss(_reward_model(rng.standard_normal((1, OBS))))
    other = {"module": {"0": {"weight": np.zeros((1, OBS)), "bias": np.zeros(1)}}}
    out = loss(data, params={"world_model": other})
    np.testing.assert_allclose(out["loss_reward"], (data["next", "reward"] ** 2).mean())


def test_weights_are_schedulable() -> None:
    loss = WorldModelLoss(_reward_model(np.ones((1, OBS))))
    loss.reward_weight = 0.25
    assert loss.reward_weight == 0.25
    with pytest.raises(ValueError, match="reward_weight"):
        loss.reward_weight = -1.0


def test_bad_input() -> None:
    rng = np.random.default_rng(6)
    model = _reward_model(rng.standard_normal((1, OBS)))
    data = _batch(rng)
    with pytest.raises(ValueError, match="unknown loss type"):
        WorldModelLoss(model, losses=["kl"])
    with pytest.raises(TypeError, match="losses must be a list"):
        WorldModelLoss(model, losses="reward")
    with pytest.raises(ValueError, match="reward_loss must be one of"):
        WorldModelLoss(model, reward_loss="huber")
    with pytest.raises(ValueError, match="latent_weight"):
        WorldModelLoss(model, latent_weight=float("nan"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        WorldModelLoss(model, gamma=0.9)
    with pytest.raises(TypeError, match="world_model"):
        WorldModelLoss(torch.nn.Linear(OBS, 1))
    missing = {**data, "next": {"observation": data["next"]["observation"]}}
    with pytest.raises(KeyError, match=r"set_keys\(reward=...\)"):
        WorldModelLoss(model)(ArrayDict(missing, (N,)))
    integer = {**data, "next": {**data["next"], "reward": np.ones((N, 1), dtype=int)}}
    with pytest.raises(TypeError, match="must be floating"):
        WorldModelLoss(model)(ArrayDict(integer, (N,)))
    wide = {**data, "next": {**data["next"], "reward": np.ones((N, 2))}}
    with pytest.raises(ValueError, match="must match"):
        WorldModelLoss(model)(ArrayDict(wide, (N,)))
    taken = {**data, "next": {**data["next"], "true_done": data["next"]["done"]}}
    done_model = DictModule(MLP(OBS, 1, []), in_keys=["observation"], out_keys=[("next", "done")])
    with pytest.raises(KeyError, match="already holds"):
        WorldModelLoss(done_model, losses=["done"])(ArrayDict(taken, (N,)))


def test_torchrl_world_model_class_is_accepted() -> None:
    """TorchRL's ``WorldModel`` (encoder, dynamics, reward head), as in its docstring."""
    from torchrl.modules import WorldModel

    torch.manual_seed(1)
    encoder = TensorDictModule(torch.nn.Linear(OBS, Z), ["observation"], ["latent"])
    dynamics = TensorDictModule(
        TorchMLP(in_features=Z + ACT, out_features=Z, num_cells=[]),
        ["latent", "action"],
        [("next", "latent")],
    )
    head = TensorDictModule(torch.nn.Linear(Z, 1), [("next", "latent")], [("next", "reward")])
    model = WorldModel(encoder, dynamics, head)
    batch = TensorDict(_torch_tree(_batch(np.random.default_rng(7)), torch.float32), [N])
    params = list(model.parameters())
    ours = _loss_and_grads(WorldModelLoss(model), batch, params)
    theirs = _loss_and_grads(TorchRLWorldModelLoss(model), batch, params)
    for key, value in theirs.items():
        torch.testing.assert_close(ours[key], value)
