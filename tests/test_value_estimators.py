"""The estimator classes against TorchRL 0.14.1's, on the same data and network weights.

Inputs are built in NumPy; arrayrl runs on each backend of the ``xp`` fixture and TorchRL
on torch CPU. Hyper-parameters are exact in float32 (TorchRL keeps them in float32
buffers), so float64 results agree to rounding.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from arrayrl.backends import backend_of

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, flatten_params, map_params
from arrayrl.modules._params import unflatten_params
from arrayrl.objectives import value as V

torch = pytest.importorskip("torch")
tensordict = pytest.importorskip("tensordict")
torchrl_value = pytest.importorskip("torchrl.objectives.value")
torchrl_functional = pytest.importorskip("torchrl.objectives.value.functional")
torchrl_modules = pytest.importorskip("torchrl.modules")

TensorDict = tensordict.TensorDict
unravel_key = tensordict.utils.unravel_key

GAMMA, LMBDA = 0.9375, 0.875
OBS, ACTIONS, HIDDEN = 4, 3, [16, 16]
SHAPES = [(7,), (3, 7)]
DTYPES = [np.float64, np.float32]
TOL = {np.float64: {"rtol": 1e-10, "atol": 1e-12}, np.float32: {"rtol": 3e-5, "atol": 3e-5}}
NAMES = ["GAE", "TD0Estimator", "TD1Estimator", "TDLambdaEstimator", "VTrace"]
HYPER: dict[str, dict[str, float]] = {
    "GAE": {"gamma": GAMMA, "lmbda": LMBDA},
    "TD0Estimator": {"gamma": GAMMA},
    "TD1Estimator": {"gamma": GAMMA},
    "TDLambdaEstimator": {"gamma": GAMMA, "lmbda": LMBDA},
    "VTrace": {"gamma": GAMMA, "rho_thresh": 1.5, "c_thresh": 0.75},
}
OUTPUTS = ["advantage", "value_target", "state_value", ("next", "state_value")]


########################################################################
# Data and networks


def _map(fn: Any, tree: dict) -> dict:
    return {k: _map(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}


@dataclasses.dataclass
class Case:
    """One rollout in NumPy plus matching arrayrl and TorchRL networks."""

    data: dict
    shape: tuple[int, ...]
    dtype: Any
    critic: DictModule
    torch_critic: Any
    actor_weights: tuple[np.ndarray, np.ndarray]

    def arraydict(self, xp: Any) -> ArrayDict:
        return ArrayDict(_map(xp.to, self.data), self.shape)

    def tensordict(self) -> Any:
        return TensorDict(_map(torch.from_numpy, self.data), batch_size=list(self.shape))

    def critic_on(self, xp: Any, out_key: str = "state_value") -> DictModule:
        """A copy of the critic on ``xp``'s backend (moving a module converts it in place)."""
        mlp = MLP(OBS, 1, HIDDEN)
        mlp.params = map_params(np.copy, self.critic.module.params)
        critic = DictModule(mlp, in_keys=["observation"], out_keys=[out_key])
        return critic.to(*_backend_name(xp))

    def actor_on(self, xp: Any) -> LinearCategoricalActor:
        weight, bias = self.actor_weights
        return LinearCategoricalActor(xp.to(weight), xp.to(bias))

    def torch_actor(self) -> Any:
        linear = torch.nn.Linear(OBS, ACTIONS).to(_torch_dtype(self.dtype))
        weight, bias = self.actor_weights
        linear.load_state_dict({"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)})
        module = tensordict.nn.TensorDictModule(
            linear, in_keys=["observation"], out_keys=["logits"]
        )
        return torchrl_modules.ProbabilisticActor(
            module,
            in_keys=["logits"],
            out_keys=["action"],
            distribution_class=torch.distributions.Categorical,
        )


def _backend_name(xp: Any) -> tuple[str, Any]:
    return ("torch", "cuda") if xp.name == "torch-cuda" else (xp.name, None)


def _torch_dtype(dtype: Any) -> Any:
    return torch.float64 if dtype == np.float64 else torch.float32


def _torch_critic(mlp: MLP, dtype: Any, out_key: str = "state_value") -> Any:
    net = torchrl_modules.MLP(in_features=OBS, out_features=1, num_cells=HIDDEN)
    net = net.to(_torch_dtype(dtype))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in mlp.named_parameters().items()})
    return torchrl_modules.ValueOperator(net, in_keys=["observation"], out_keys=[out_key])


def _logits(obs: np.ndarray, weights: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return obs @ weights[0].T + weights[1]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def make_case(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 0) -> Case:
    """A rollout of ``shape``: done ~25 % of steps, half of them terminal, the rest
    truncated; actions are the actor's greedy ones (so TorchRL's V-trace, which scores
    the policy's mode, and the taken actions agree), behaviour log-probs near them."""
    rng = np.random.default_rng(seed)
    done = rng.random((*shape, 1)) < 0.25
    terminated = done & (rng.random((*shape, 1)) < 0.5)
    obs = rng.standard_normal((*shape, OBS)).astype(dtype)
    weights = (
        rng.uniform(-0.5, 0.5, (ACTIONS, OBS)).astype(dtype),
        rng.uniform(-0.5, 0.5, (ACTIONS,)).astype(dtype),
    )
    logits = _logits(obs.astype(np.float64), weights)
    action = logits.argmax(-1)
    log_pi = np.take_along_axis(_log_softmax(logits), action[..., None], -1)[..., 0]
    data = {
        "observation": obs,
        "action": action,
        "action_log_prob": (log_pi + 0.4 * rng.standard_normal(shape)).astype(dtype),
        "next": {
            "observation": rng.standard_normal((*shape, OBS)).astype(dtype),
            "reward": rng.standard_normal((*shape, 1)).astype(dtype),
            "done": done,
            "terminated": terminated,
            "truncated": done & ~terminated,
        },
    }
    mlp = MLP(OBS, 1, HIDDEN, seed=seed, dtype=dtype)
    critic = DictModule(mlp, in_keys=["observation"], out_keys=["state_value"])
    return Case(data, shape, dtype, critic, _torch_critic(mlp, dtype), weights)


class LinearCategoricalActor:
    """A stub actor with the interface VTrace uses: ``get_dist(batch, params=None)``
    returning a distribution with ``log_prob(action)``; logits ``obs @ W.T + b``."""

    def __init__(self, weight: Any, bias: Any) -> None:
        self.in_keys = ["observation"]
        self.params = {"weight": weight, "bias": bias}
        self.seen_params: list[Any] = []

    def get_dist(self, batch: Any, params: Any = None) -> _Categorical:
        params = self.params if params is None else params
        self.seen_params.append(params)
        obs = batch.get("observation")
        xp = backend_of(obs).xp
        return _Categorical(obs @ xp.matrix_transpose(params["weight"]) + params["bias"])


class _Categorical:
    def __init__(self, logits: Any) -> None:
        self.logits = logits

    def log_prob(self, action: Any) -> Any:
        backend = backend_of(self.logits)
        xp = backend.xp
        shifted = self.logits - xp.max(self.logits, axis=-1, keepdims=True)
        log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
        classes = xp.arange(self.logits.shape[-1], device=backend.device)
        one_hot = xp.astype(action[..., None] == classes, log_p.dtype)
        return xp.sum(log_p * one_hot, axis=-1)


class CountingModule:
    """Wraps a dict module and counts its calls (and the batch sizes it saw)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.in_keys, self.out_keys = inner.in_keys, inner.out_keys
        self.sizes: list[tuple[int, ...]] = []

    @property
    def params(self) -> Any:
        return self.inner.params

    def __call__(self, batch: Any, params: Any = None) -> Any:
        self.sizes.append(tuple(batch.batch_size))
        return self.inner(batch, params=params)


def estimators(case: Case, xp: Any, name: str, **kwargs: Any) -> tuple[Any, Any]:
    """arrayrl's and TorchRL's estimator ``name`` with the same hyper-parameters."""
    hyper = {**HYPER[name], **kwargs}
    ours_nets = {"value_network": case.critic_on(xp)}
    theirs_nets = {"value_network": case.torch_critic}
    if name == "VTrace":
        ours_nets["actor_network"] = case.actor_on(xp)
        theirs_nets["actor_network"] = case.torch_actor()
    return getattr(V, name)(**ours_nets, **hyper), getattr(torchrl_value, name)(
        **theirs_nets, **hyper
    )


def assert_matches(ours: Any, xp: Any, theirs: Any, keys: list[Any], dtype: Any) -> None:
    for key in keys:
        np.testing.assert_allclose(
            xp.back(ours.get(key)),
            theirs.get(key).detach().numpy(),
            **TOL[dtype],
            err_msg=f"key {key!r}",
        )


@pytest.fixture
def numpy_xp() -> Any:
    from .conftest import XP

    return XP("numpy")


@pytest.fixture
def torch_xp() -> Any:
    from .conftest import XP

    return XP("torch")


########################################################################
# Against TorchRL, every backend


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_matches_torchrl(xp, name, dtype, shape):
    case = make_case(shape, dtype)
    ours, theirs = estimators(case, xp, name)
    batch = case.arraydict(xp)
    assert ours(batch) is batch
    expected = theirs(case.tensordict())
    assert_matches(batch, xp, expected, OUTPUTS, dtype)
    assert batch.get("advantage").dtype == batch.get(("next", "reward")).dtype


@pytest.mark.parametrize("name", NAMES)
def test_tensordict_input(name, torch_xp):
    case = make_case((3, 7))
    ours, theirs = estimators(case, torch_xp, name)
    batch = case.tensordict()
    assert ours(batch) is batch
    assert isinstance(batch, TensorDict)
    assert_matches(batch, torch_xp, theirs(case.tensordict()), OUTPUTS, np.float64)


@pytest.mark.parametrize("name", ["GAE", "TD1Estimator", "TDLambdaEstimator", "VTrace"])
def test_time_first_layout(xp, name):
    case = make_case((7, 3))
    ours, theirs = estimators(case, xp, name, time_dim=0)
    expected = theirs(case.tensordict())
    assert_matches(ours(case.arraydict(xp)), xp, expected, OUTPUTS, np.float64)


def test_time_dim_at_call_and_from_names(torch_xp):
    case = make_case((7, 3))
    ours, theirs = estimators(case, torch_xp, "GAE")
    expected = theirs(case.tensordict(), time_dim=0)
    assert_matches(ours(case.arraydict(torch_xp), time_dim=0), torch_xp, expected, OUTPUTS,
                   np.float64)
    named = case.tensordict()
    named.refine_names("time", None)
    assert_matches(ours(named), torch_xp, expected, OUTPUTS, np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_steps_to_next_obs(xp, name):
    # float32: TorchRL raises γ (a float32 buffer) to the steps in float32, and its
    # vectorised TD(1) / TD(λ) then fail on float64 data.
    case = make_case((3, 7), np.float32)
    steps = np.random.default_rng(1).integers(1, 4, (3, 7, 1))
    case.data["steps_to_next_obs"] = steps
    ours, theirs = estimators(case, xp, name)
    expected = theirs(case.tensordict())
    assert_matches(ours(case.arraydict(xp)), xp, expected, OUTPUTS, np.float32)


@pytest.mark.parametrize("name", ["GAE", "TD0Estimator", "TDLambdaEstimator"])
def test_params_and_target_params(xp, name):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, name)
    rng = np.random.default_rng(2)
    flat = flatten_params(case.critic.params)
    trees, tds = [], []
    for _ in range(2):
        moved = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in flat.items()}
        trees.append(map_params(xp.to, unflatten_params(moved)))
        td = TensorDict.from_module(case.torch_critic).detach().clone()
        for key, value in moved.items():
            td.set(tuple(key.split(".")), torch.from_numpy(value))
        tds.append(td)
    batch = ours(case.arraydict(xp), params=trees[0], target_params=trees[1])
    expected = theirs(case.tensordict(), params=tds[0], target_params=tds[1])
    assert_matches(batch, xp, expected, OUTPUTS, np.float64)


@pytest.mark.parametrize("name", ["TD0Estimator", "TD1Estimator", "TDLambdaEstimator"])
def test_td_value_estimate_with_target_params(xp, name):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, name)
    flat = flatten_params(case.critic.params)
    moved = {k: v * 0.9 for k, v in flat.items()}
    td_params = TensorDict.from_module(case.torch_critic).detach().clone()
    for key, value in moved.items():
        td_params.set(tuple(key.split(".")), torch.from_numpy(value))
    got = ours.value_estimate(
        case.arraydict(xp), target_params=map_params(xp.to, unflatten_params(moved))
    )
    want = theirs.value_estimate(case.tensordict(), target_params=td_params)
    np.testing.assert_allclose(xp.back(got), want.numpy(), **TOL[np.float64])


def test_gae_value_estimate(xp):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, "GAE", average_gae=True)
    got = ours.value_estimate(case.arraydict(xp))
    want = theirs.value_estimate(case.tensordict())
    np.testing.assert_allclose(xp.back(got), want.numpy(), **TOL[np.float64])


@pytest.mark.parametrize(
    ("name", "flag"),
    [
        ("GAE", "average_gae"),
        ("VTrace", "average_adv"),
        ("TD0Estimator", "average_rewards"),
        ("TD1Estimator", "average_rewards"),
        ("TDLambdaEstimator", "average_rewards"),
    ],
)
def test_standardisation(xp, name, flag):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, name, **{flag: True})
    batch = ours(case.arraydict(xp))
    expected = theirs(case.tensordict())
    assert_matches(batch, xp, expected, [*OUTPUTS, ("next", "reward")], np.float64)


def test_auto_reset_env(xp):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, "GAE", auto_reset_env=True)
    expected = theirs(case.tensordict())
    assert np.any(case.data["next"]["truncated"])
    assert_matches(ours(case.arraydict(xp)), xp, expected, OUTPUTS, np.float64)


def test_nan_next_observations_take_the_root_ones(xp):
    case = make_case((3, 7))
    case.data["next"]["observation"][case.data["next"]["done"][..., 0]] = np.nan
    ours, theirs = estimators(case, xp, "GAE")
    expected = theirs(case.tensordict())
    batch = ours(case.arraydict(xp))
    assert np.isfinite(xp.back(batch.get("advantage"))).all()
    # TorchRL writes the values into a copy here, so only its outputs can be compared.
    assert_matches(batch, xp, expected, ["advantage", "value_target"], np.float64)
    assert np.isfinite(xp.back(batch.get(("next", "state_value")))).all()


@pytest.mark.parametrize(
    "chunks",
    [{"value_chunk_size": 2}, {"num_chunks": 3, "value_chunk_dim": -1}, {"num_chunk": 2}],
)
def test_chunked_value_calls(xp, chunks):
    case = make_case((3, 7))
    ours, theirs = estimators(case, xp, "GAE", **chunks)
    ours.value_network = counting = CountingModule(ours.value_network)
    expected = theirs(case.tensordict())
    assert_matches(ours(case.arraydict(xp)), xp, expected, OUTPUTS, np.float64)
    assert len(counting.sizes) > 2


########################################################################
# Shifted (one network call)


def _consistent(case: Case) -> Case:
    """``next obs[t] = obs[t + 1]`` within trajectories; every done step terminal."""
    data = case.data
    nxt = data["next"]
    nxt["terminated"] = nxt["done"].copy()
    nxt["truncated"] = np.zeros_like(nxt["done"])
    follows = ~nxt["done"][:, :-1, 0]
    nxt["observation"][:, :-1][follows] = data["observation"][:, 1:][follows]
    return case


@pytest.mark.parametrize("name", ["GAE", "TD0Estimator", "TDLambdaEstimator"])
def test_shifted_is_one_call_and_exact(xp, name):
    case = make_case((3, 7))
    plain, _ = estimators(case, xp, name)
    shifted, _ = estimators(case, xp, name, shifted=True)
    shifted.value_network = counting = CountingModule(shifted.value_network)
    expected = plain(case.arraydict(xp))
    got = shifted(case.arraydict(xp))
    assert counting.sizes == [(3, 14)]
    for key in OUTPUTS:
        np.testing.assert_allclose(xp.back(got.get(key)), xp.back(expected.get(key)), rtol=1e-12)


def test_shifted_matches_torchrl_on_a_consistent_rollout(xp):
    case = _consistent(make_case((3, 7)))
    ours, theirs = estimators(case, xp, "GAE", shifted=True)
    expected = theirs(case.tensordict())
    assert expected.get("shifted_valid").all()
    assert_matches(ours(case.arraydict(xp)), xp, expected, ["advantage", "value_target"],
                   np.float64)


def test_shifted_rejects_target_params(numpy_xp):
    case = make_case((3, 7))
    ours, _ = estimators(case, numpy_xp, "GAE", shifted=True)
    target = map_params(np.copy, case.critic.params)
    with pytest.raises(ValueError, match="target_params"):
        ours(case.arraydict(numpy_xp), target_params=target)


class InitProbe:
    """A value network that returns its ``is_init`` input as the value."""

    def __init__(self) -> None:
        self.in_keys, self.out_keys = ["observation", "is_init"], ["state_value"]

    def __call__(self, batch: Any) -> Any:
        xp = backend_of(batch.get("is_init")).xp
        return batch.set("state_value", xp.astype(batch.get("is_init"), xp.float64))


def test_next_is_init_includes_the_root_one(numpy_xp):
    case = make_case((3, 7))
    rng = np.random.default_rng(7)
    root_init, next_init = rng.random((2, 3, 7, 1)) < 0.3
    case.data["is_init"], case.data["next"]["is_init"] = root_init, next_init
    ours = V.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=InitProbe())
    batch = ours(case.arraydict(numpy_xp))
    np.testing.assert_array_equal(batch.get("state_value"), root_init)
    np.testing.assert_array_equal(batch.get(("next", "state_value")), root_init | next_init)


########################################################################
# skip_existing and value_network=None


def _with_values(case: Case, root: bool = True, nested: bool = True) -> Case:
    rng = np.random.default_rng(3)
    if root:
        case.data["state_value"] = rng.standard_normal((*case.shape, 1))
    if nested:
        case.data["next"]["state_value"] = rng.standard_normal((*case.shape, 1))
    return case


@pytest.mark.parametrize("skip", [True, False, None])
def test_skip_existing(xp, skip):
    case = _with_values(make_case((3, 7)))
    ours, theirs = estimators(case, xp, "GAE", skip_existing=skip)
    batch = ours(case.arraydict(xp))
    assert_matches(batch, xp, theirs(case.tensordict()), OUTPUTS, np.float64)
    kept = np.allclose(xp.back(batch.get("state_value")), case.data["state_value"])
    assert kept == bool(skip)


def test_skip_existing_computes_only_what_is_missing(numpy_xp):
    case = _with_values(make_case((3, 7)), nested=False)
    ours, _ = estimators(case, numpy_xp, "GAE", skip_existing=True)
    batch = ours(case.arraydict(numpy_xp))
    # TorchRL fails on this batch (it stacks root and "next" with different keys), so the
    # reference is TorchRL's functional GAE on the given V(s) and its critic's V(s').
    next_obs = torch.from_numpy(case.data["next"]["observation"])
    next_value = case.torch_critic.module(next_obs).detach()
    adv, target = torchrl_functional.generalized_advantage_estimate(
        GAMMA, LMBDA, torch.from_numpy(case.data["state_value"]), next_value,
        *(torch.from_numpy(case.data["next"][k]) for k in ("reward", "done", "terminated")),
    )
    np.testing.assert_allclose(batch.get("advantage"), adv.numpy(), **TOL[np.float64])
    np.testing.assert_allclose(batch.get("value_target"), target.numpy(), **TOL[np.float64])
    np.testing.assert_array_equal(batch.get("state_value"), case.data["state_value"])


def test_without_value_network(xp):
    case = _with_values(make_case((3, 7)))
    ours = V.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=None)
    theirs = torchrl_value.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=None)
    expected = theirs(case.tensordict())
    assert_matches(ours(case.arraydict(xp)), xp, expected, OUTPUTS, np.float64)


def test_value_network_set_later(xp):
    case = make_case((3, 7))
    ours = V.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=None)
    with pytest.raises(KeyError, match=r"set_keys\(value="):
        ours(case.arraydict(xp))
    ours.value_network = case.critic_on(xp)
    _, theirs = estimators(case, xp, "GAE")
    assert_matches(ours(case.arraydict(xp)), xp, theirs(case.tensordict()), OUTPUTS, np.float64)


########################################################################
# V-trace's log pi


def test_vtrace_scores_the_taken_actions(xp):
    case = make_case((3, 7))
    rng = np.random.default_rng(4)
    case.data["action"] = rng.integers(0, ACTIONS, case.shape)
    ours, theirs = estimators(case, xp, "VTrace")
    batch = ours(case.arraydict(xp))
    # Reference: TorchRL's functional V-trace with log pi of the taken actions (NumPy).
    logits = _logits(case.data["observation"], case.actor_weights)
    log_pi = np.take_along_axis(_log_softmax(logits), case.data["action"][..., None], -1)
    nxt = case.data["next"]
    adv, target = torchrl_functional.vtrace_advantage_estimate(
        GAMMA,
        torch.from_numpy(log_pi),
        torch.from_numpy(case.data["action_log_prob"][..., None]),
        torch.tensor(np.array(xp.back(batch.get("state_value")))),
        torch.tensor(np.array(xp.back(batch.get(("next", "state_value"))))),
        *(torch.from_numpy(nxt[k]) for k in ("reward", "done", "terminated")),
        rho_thresh=1.5,
        c_thresh=0.75,
    )
    np.testing.assert_allclose(xp.back(batch.get("advantage")), adv.numpy(), **TOL[np.float64])
    np.testing.assert_allclose(xp.back(batch.get("value_target")), target.numpy(),
                               **TOL[np.float64])
    # TorchRL's class scores the policy's mode instead, so it differs here.
    mode_based = theirs(case.tensordict()).get("advantage").numpy()
    assert not np.allclose(mode_based, adv.numpy())


def test_vtrace_actor_gets_stopped_gradient_params(torch_xp):
    case = make_case((3, 7))
    ours, _ = estimators(case, torch_xp, "VTrace")
    actor = ours.actor_network
    actor.params = map_params(lambda w: w.clone().requires_grad_(True), actor.params)
    ours(case.arraydict(torch_xp))
    (seen,) = actor.seen_params
    assert not any(leaf.requires_grad for leaf in seen.values())


def test_vtrace_without_actor(numpy_xp):
    case = make_case((3, 7))
    ours = V.VTrace(gamma=GAMMA, actor_network=None, value_network=case.critic)
    with pytest.raises(ValueError, match="actor_network"):
        ours(case.arraydict(numpy_xp))


########################################################################
# Gradients (torch)


def _grad_inputs(case: Case) -> tuple[dict, list]:
    data = _map(lambda a: torch.from_numpy(a.copy()), case.data)
    leaves = [data["observation"], data["next"]["observation"], data["next"]["reward"]]
    for leaf in leaves:
        leaf.requires_grad_(True)
    return data, leaves


def _scalar_loss(batch: Any) -> Any:
    rng = np.random.default_rng(5)
    weights = [torch.from_numpy(rng.standard_normal(batch.get(k).shape)) for k in OUTPUTS[:2]]
    return sum((batch.get(k) * w).sum() for k, w in zip(OUTPUTS[:2], weights))


def _dense(loss: Any, inputs: list[Any]) -> list[np.ndarray]:
    """Gradients of ``loss`` as arrays, zeros where autograd reports none."""
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [np.zeros(tuple(x.shape)) if g is None else g.numpy() for g, x in zip(grads, inputs)]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_torchrl(name, torch_xp):
    case = make_case((3, 7))
    ours, theirs = estimators(case, torch_xp, name, differentiable=True)
    ours_data, ours_leaves = _grad_inputs(case)
    theirs_data, theirs_leaves = _grad_inputs(case)
    ours_loss = _scalar_loss(ours(ArrayDict(ours_data, case.shape)))
    theirs_loss = _scalar_loss(theirs(TensorDict(theirs_data, batch_size=list(case.shape))))
    ours_params = ours.value_network.parameters()
    theirs_params = list(case.torch_critic.parameters())
    got = _dense(ours_loss, ours_leaves + ours_params)
    want = _dense(theirs_loss, theirs_leaves + theirs_params)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    # As in TorchRL: the observation gets a gradient, the next observation (the next
    # value is detached) and the network parameters none.
    assert np.abs(got[0]).max() > 0
    assert all(not g.any() for g in got[1:2] + got[len(ours_leaves):])


@pytest.mark.parametrize("name", NAMES)
def test_not_differentiable(name, torch_xp):
    case = make_case((3, 7))
    ours, theirs = estimators(case, torch_xp, name, differentiable=False)
    ours_data, _ = _grad_inputs(case)
    theirs_data, _ = _grad_inputs(case)
    batch = ours(ArrayDict(ours_data, case.shape))
    expected = theirs(TensorDict(theirs_data, batch_size=list(case.shape)))
    for key in OUTPUTS[:2]:
        assert not batch.get(key).requires_grad
        assert not expected.get(key).requires_grad


########################################################################
# Keys


def test_set_keys_renames_like_torchrl(xp):
    case = make_case((3, 7))
    data = case.data
    nxt = data["next"]
    data["next"] = {"observation": nxt["observation"], "r": nxt["reward"],
                    "flags": {"d": nxt["done"], "t": nxt["terminated"]}}
    ours = V.GAE(gamma=GAMMA, lmbda=LMBDA, value_network=case.critic_on(xp, "v"))
    theirs = torchrl_value.GAE(
        gamma=GAMMA, lmbda=LMBDA, value_network=_torch_critic(case.critic.module, np.float64, "v")
    )
    renames = {"reward": "r", "done": ("flags", "d"), "terminated": ("flags", "t"),
               "value": "v", "advantage": ("out", ("deep", "adv")), "value_target": "vt"}
    ours.set_keys(**renames)
    theirs.set_keys(**renames)
    assert dataclasses.asdict(ours.tensor_keys) == dataclasses.asdict(theirs.tensor_keys)
    assert ours.tensor_keys.advantage == ("out", "deep", "adv")
    assert ours.in_keys == [unravel_key(k) for k in theirs.in_keys]
    assert ours.out_keys == theirs.out_keys
    batch = ours(case.arraydict(xp))
    expected = theirs(case.tensordict())
    assert_matches(batch, xp, expected, [("out", "deep", "adv"), "vt", "v", ("next", "v")],
                   np.float64)


@pytest.mark.parametrize("name", NAMES)
def test_default_keys_match_torchrl(name, numpy_xp):
    case = make_case((7,))
    ours, theirs = estimators(case, numpy_xp, name)
    ours_keys = dataclasses.asdict(ours.tensor_keys)
    assert ours_keys.pop("action", "action") == "action"
    assert ours_keys == dataclasses.asdict(theirs.tensor_keys)
    assert ours.in_keys[: len(theirs.in_keys)] == theirs.in_keys
    assert ours.out_keys == theirs.out_keys
    assert ours.advantage_key == theirs.advantage_key
    assert ours.sample_log_prob_key == theirs.sample_log_prob_key


def test_set_keys_errors_and_reset():
    ours = V.TD0Estimator(gamma=GAMMA, value_network=make_case((7,)).critic)
    with pytest.raises(ValueError, match=r"'rewards' is not a key .* accepted names are"):
        ours.set_keys(rewards="r")
    with pytest.raises(KeyError, match="out_keys"):
        ours.set_keys(value="q")
    with pytest.raises(ValueError, match="must be a key"):
        ours.set_keys(reward=3)
    ours.set_keys(reward="r", done="d")
    ours.set_keys(reward=None)
    assert (ours.tensor_keys.reward, ours.tensor_keys.done) == ("reward", "d")
    assert ours.reward_key == "reward"


########################################################################
# Bad input


@pytest.mark.parametrize(
    ("drop", "field"), [(("next", "reward"), "reward"), (("next", "done"), "done"),
                        ("action_log_prob", "sample_log_prob"), ("action", "action")],
)
def test_missing_key_names_it_and_set_keys(numpy_xp, drop, field):
    case = make_case((3, 7))
    ours, _ = estimators(case, numpy_xp, "VTrace")
    batch = case.arraydict(numpy_xp)
    del batch[drop]
    with pytest.raises(KeyError, match=re.escape(f"{drop!r}") + rf".*set_keys\({field}="):
        ours(batch)


def test_missing_network_input(numpy_xp):
    case = make_case((3, 7))
    ours, _ = estimators(case, numpy_xp, "GAE")
    batch = case.arraydict(numpy_xp)
    del batch[("next", "observation")]
    with pytest.raises(KeyError, match=r"\('next', 'observation'\) \(an input of the value"):
        ours(batch)


def test_missing_terminated_defaults_to_done(xp):
    case = make_case((3, 7))
    del case.data["next"]["terminated"]
    ours, theirs = estimators(case, xp, "GAE")
    assert_matches(ours(case.arraydict(xp)), xp, theirs(case.tensordict()), OUTPUTS, np.float64)


def test_integer_rewards_are_rejected(numpy_xp):
    case = make_case((3, 7))
    case.data["next"]["reward"] = np.ones((3, 7, 1), dtype=np.int64)
    ours, _ = estimators(case, numpy_xp, "TD0Estimator")
    with pytest.raises(TypeError, match="reward must be a real floating-point array"):
        ours(case.arraydict(numpy_xp))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        ("GAE", {"gamma": 1.5, "lmbda": 0.9}, r"gamma must be in \[0.0, 1.0\], got 1.5"),
        ("GAE", {"gamma": 0.9, "lmbda": -0.1}, "lmbda must be in"),
        ("TDLambdaEstimator", {"gamma": 0.9, "lmbda": 2.0}, "lmbda must be in"),
        ("TD0Estimator", {"gamma": float("nan")}, "gamma must be in"),
        ("VTrace", {"gamma": 0.9, "actor_network": None, "rho_thresh": 0.0}, "rho_thresh"),
        ("VTrace", {"gamma": 0.9, "actor_network": None, "c_thresh": -1.0}, "c_thresh"),
        ("GAE", {"gamma": 0.9, "lmbda": 0.9, "shifted": "yes"}, "shifted must be a boolean"),
        ("GAE", {"gamma": 0.9, "lmbda": 0.9, "kernel": "fast"}, "kernel must be one of"),
        ("TD1Estimator", {"gamma": 0.9, "value_chunk_size": 0}, "value_chunk_size must be >= 1"),
        ("TD0Estimator", {"gamma": 0.9, "num_chunks": 2, "num_chunk": 3}, "different values"),
        ("TD0Estimator", {"gamma": 0.9, "num_chunks": 2, "value_chunk_size": 3}, "not both"),
        ("GAE", {"gamma": 0.9, "lmbda": 0.9, "shifted_budget": 0}, "shifted_budget must be"),
    ],
)
def test_bad_hyperparameters_fail_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(V, cls)(value_network=None, **kwargs)


@pytest.mark.parametrize("old", ["advantage_key", "value_target_key", "value_key"])
def test_constructor_key_arguments_are_refused(old):
    with pytest.raises(RuntimeError, match=r"set_keys\("):
        V.GAE(gamma=0.9, lmbda=0.9, value_network=None, **{old: "x"})


def test_group_key_is_not_supported():
    with pytest.raises(NotImplementedError, match="group_key"):
        V.GAE(gamma=0.9, lmbda=0.9, value_network=None, group_key="task")


def test_batch_needs_a_time_dimension(numpy_xp):
    ours = V.TD0Estimator(gamma=0.9, value_network=None)
    batch = ArrayDict({"next": {"reward": np.zeros(1)}}, [])
    with pytest.raises(RuntimeError, match="at least one batch dimension"):
        ours(batch)


def test_time_dim_out_of_range(numpy_xp):
    case = make_case((3, 7))
    ours, _ = estimators(case, numpy_xp, "GAE")
    with pytest.raises(ValueError, match="time_dim=2 is out of range"):
        ours(case.arraydict(numpy_xp), time_dim=2)


def test_gamma_as_zero_dim_array():
    ours = V.GAE(gamma=np.float64(0.5), lmbda=torch.tensor(0.25), value_network=None)
    assert (ours.gamma, ours.lmbda) == (0.5, 0.25)
    with pytest.raises(ValueError, match="gamma must be in"):
        V.TD0Estimator(gamma=torch.tensor(1.25), value_network=None)


########################################################################
# Multi-agent GAE


def test_multi_agent_gae_matches_torchrl(xp):
    rng = np.random.default_rng(6)
    shape, agents = (3, 7), 2
    done = rng.random((*shape, 1)) < 0.25
    data = {
        "observation": rng.standard_normal((*shape, agents, OBS)),
        "next": {
            "observation": rng.standard_normal((*shape, agents, OBS)),
            "reward": rng.standard_normal((*shape, 1)),
            "done": done,
            "terminated": done & (rng.random((*shape, 1)) < 0.5),
        },
    }
    case = make_case(shape)
    kwargs = {"gamma": GAMMA, "lmbda": LMBDA, "average_gae": True}
    ours = V.MultiAgentGAE(value_network=case.critic_on(xp), **kwargs)
    theirs = torchrl_value.MultiAgentGAE(value_network=case.torch_critic, **kwargs)
    batch = ours(ArrayDict(_map(xp.to, data), shape))
    expected = theirs(TensorDict(_map(torch.from_numpy, data), batch_size=list(shape)))
    assert tuple(batch.get("advantage").shape) == (*shape, agents, 1)
    assert_matches(batch, xp, expected, OUTPUTS, np.float64)


########################################################################
# Import hygiene


def _loaded_after(code: str) -> str:
    script = f"import sys\n{code}\nprint(sorted(m for m in HEAVY if m in sys.modules))"
    script = script.replace("HEAVY", "('torch', 'numba', 'jax', 'cupy', 'tensordict')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_loads_no_framework():
    assert _loaded_after("import arrayrl.objectives.value as v; v.GAE; v.VTrace") == "[]"


def test_numpy_estimator_loads_no_deep_learning_framework():
    code = (
        "import numpy as np\n"
        "from arrayrl.data import ArrayDict\n"
        "from arrayrl.modules import MLP, DictModule\n"
        "from arrayrl.objectives.value import GAE\n"
        "critic = DictModule(MLP(3, 1, [8]), in_keys=['obs'], out_keys=['state_value'])\n"
        "x = np.zeros((2, 5, 3), np.float32); r = np.zeros((2, 5, 1), np.float32)\n"
        "d = np.zeros((2, 5, 1), bool)\n"
        "batch = ArrayDict({'obs': x, 'next': {'obs': x, 'reward': r, 'done': d}}, [2, 5])\n"
        "GAE(gamma=0.9, lmbda=0.9, value_network=critic)(batch)"
    )
    assert _loaded_after(code) == "['numba']"


########################################################################
# "shifted_valid": runs of valid steps followed by invalid padding

#: Per row of a (3, 7) batch: one run of 4 valid steps, every step valid, and two runs
#: (3 and 2 steps), each followed by padding.
RUNS = np.array(
    [
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 1, 1, 0],
    ],
    dtype=bool,
)
MASK_SHAPES = {"BT": RUNS, "BT1": RUNS[..., None]}
FLAGS = [
    ("GAE", "average_gae"),
    ("VTrace", "average_adv"),
    ("TD0Estimator", "average_rewards"),
    ("TD1Estimator", "average_rewards"),
    ("TDLambdaEstimator", "average_rewards"),
]


def _with_runs(case: Case, mask: np.ndarray, time_first: bool = False) -> Case:
    """``case`` with ``"shifted_valid"`` set to ``mask`` (transposed to ``[T, B]`` when
    ``time_first``); the last valid step of the first run is terminal, so that ending
    the run (done=True, terminated=False) changes the estimate there."""
    mask = np.swapaxes(mask, 0, 1).copy() if time_first else mask.copy()
    case.data["shifted_valid"] = mask
    nxt = case.data["next"]
    index = (3, 0) if time_first else (0, 3)
    nxt["done"][index] = nxt["terminated"][index] = True
    nxt["truncated"][index] = False
    return case


def _flags_unchanged(batch: Any, xp: Any, case: Case) -> None:
    """The caller's ``done`` / ``terminated`` are the case's, and the mask is kept."""
    for key in ("done", "terminated"):
        np.testing.assert_array_equal(xp.back(batch.get(("next", key))), case.data["next"][key])
    np.testing.assert_array_equal(xp.back(batch.get("shifted_valid")), case.data["shifted_valid"])


def _assert_zero_where_invalid(batch: Any, xp: Any, mask: np.ndarray) -> None:
    for key in ("advantage", "value_target"):
        out = np.asarray(xp.back(batch.get(key)))
        valid = mask.reshape(mask.shape + (1,) * (out.ndim - mask.ndim))
        assert not out[~np.broadcast_to(valid, out.shape)].any(), key


@pytest.mark.parametrize("mask", sorted(MASK_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", NAMES)
def test_shifted_valid_matches_torchrl(xp, name, dtype, mask):
    case = _with_runs(make_case((3, 7), dtype), MASK_SHAPES[mask])
    ours, theirs = estimators(case, xp, name)
    batch = ours(case.arraydict(xp))
    expected = theirs(case.tensordict())
    assert_matches(batch, xp, expected, OUTPUTS, dtype)
    _flags_unchanged(batch, xp, case)
    _assert_zero_where_invalid(batch, xp, RUNS)
    # Without the mask the estimate differs (the run's end matters).
    plain = ours(ArrayDict(_map(xp.to, {k: v for k, v in case.data.items()
                                        if k != "shifted_valid"}), case.shape))
    assert not np.allclose(xp.back(plain.get("value_target")), xp.back(batch.get("value_target")))


@pytest.mark.parametrize("mask", sorted(MASK_SHAPES))
@pytest.mark.parametrize(("name", "flag"), FLAGS)
def test_shifted_valid_standardisation(xp, name, flag, mask):
    # GAE standardises over the valid steps (biased std); the others as without a mask.
    # TorchRL standardises the rewards on a copy here, so they are not written back.
    case = _with_runs(make_case((3, 7)), MASK_SHAPES[mask])
    ours, theirs = estimators(case, xp, name, **{flag: True})
    batch = ours(case.arraydict(xp))
    expected = theirs(case.tensordict())
    assert_matches(batch, xp, expected, [*OUTPUTS, ("next", "reward")], np.float64)
    _assert_zero_where_invalid(batch, xp, RUNS)


def test_shifted_valid_average_gae_uses_the_valid_steps(numpy_xp):
    case = _with_runs(make_case((3, 7)), RUNS)
    ours, _ = estimators(case, numpy_xp, "GAE", average_gae=True)
    advantage = ours(case.arraydict(numpy_xp)).get("advantage")[RUNS]
    np.testing.assert_allclose(advantage.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(advantage.std(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_shifted_valid_tensordict_input(name, torch_xp):
    case = _with_runs(make_case((3, 7)), RUNS[..., None])
    ours, theirs = estimators(case, torch_xp, name)
    batch = case.tensordict()
    assert ours(batch) is batch
    assert_matches(batch, torch_xp, theirs(case.tensordict()), OUTPUTS, np.float64)
    _flags_unchanged(batch, torch_xp, case)


@pytest.mark.parametrize("name", ["GAE", "TD1Estimator", "TDLambdaEstimator", "VTrace"])
def test_shifted_valid_time_first(xp, name):
    case = _with_runs(make_case((7, 3)), RUNS, time_first=True)
    ours, theirs = estimators(case, xp, name, time_dim=0)
    batch = ours(case.arraydict(xp))
    assert_matches(batch, xp, theirs(case.tensordict()), OUTPUTS, np.float64)
    _flags_unchanged(batch, xp, case)


@pytest.mark.parametrize("mask", sorted(MASK_SHAPES))
@pytest.mark.parametrize("name", ["TD0Estimator", "TD1Estimator", "TDLambdaEstimator"])
def test_shifted_valid_td_value_estimate(xp, name, mask):
    # TD(1) and TD(λ) end the runs here too; TD(0)'s value_estimate ignores the mask.
    case = _with_runs(make_case((3, 7)), MASK_SHAPES[mask])
    ours, theirs = estimators(case, xp, name, average_rewards=True)
    batch, td = case.arraydict(xp), case.tensordict()
    got, want = ours.value_estimate(batch), theirs.value_estimate(td)
    np.testing.assert_allclose(xp.back(got), want.numpy(), **TOL[np.float64])
    assert_matches(batch, xp, td, [("next", "reward")], np.float64)
    _flags_unchanged(batch, xp, case)


def test_shifted_valid_gae_value_estimate(xp):
    case = _with_runs(make_case((3, 7)), RUNS[..., None])
    ours, theirs = estimators(case, xp, "GAE")
    got = ours.value_estimate(case.arraydict(xp))
    want = theirs.value_estimate(case.tensordict())
    np.testing.assert_allclose(xp.back(got), want.numpy(), **TOL[np.float64])


@pytest.mark.parametrize("mask", sorted(MASK_SHAPES))
def test_shifted_valid_multi_agent_gae(xp, mask):
    rng = np.random.default_rng(8)
    shape, agents = (3, 7), 2
    done = rng.random((*shape, 1)) < 0.25
    done[0, 3] = True
    data = {
        "observation": rng.standard_normal((*shape, agents, OBS)),
        "shifted_valid": MASK_SHAPES[mask].copy(),
        "next": {
            "observation": rng.standard_normal((*shape, agents, OBS)),
            "reward": rng.standard_normal((*shape, 1)),
            "done": done,
            "terminated": done.copy(),
        },
    }
    case = make_case(shape)
    kwargs = {"gamma": GAMMA, "lmbda": LMBDA, "average_gae": True}
    ours = V.MultiAgentGAE(value_network=case.critic_on(xp), **kwargs)
    theirs = torchrl_value.MultiAgentGAE(value_network=case.torch_critic, **kwargs)
    batch = ours(ArrayDict(_map(xp.to, data), shape))
    expected = theirs(TensorDict(_map(torch.from_numpy, data), batch_size=list(shape)))
    assert tuple(batch.get("advantage").shape) == (*shape, agents, 1)
    assert_matches(batch, xp, expected, OUTPUTS, np.float64)
    _assert_zero_where_invalid(batch, xp, RUNS)
    np.testing.assert_array_equal(xp.back(batch.get(("next", "done"))), done)


@pytest.mark.parametrize("name", NAMES)
def test_shifted_valid_gradients_match_torchrl(name, torch_xp):
    case = _with_runs(make_case((3, 7)), RUNS[..., None])
    kwargs = {"average_gae": True} if name == "GAE" else {}
    ours, theirs = estimators(case, torch_xp, name, differentiable=True, **kwargs)
    ours_data, ours_leaves = _grad_inputs(case)
    theirs_data, theirs_leaves = _grad_inputs(case)
    ours_loss = _scalar_loss(ours(ArrayDict(ours_data, case.shape)))
    theirs_loss = _scalar_loss(theirs(TensorDict(theirs_data, batch_size=list(case.shape))))
    for g, w in zip(_dense(ours_loss, ours_leaves), _dense(theirs_loss, theirs_leaves)):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
