"""``A2CLoss`` and ``ReinforceLoss`` against TorchRL 0.14.1.

Every output key is compared with TorchRL's loss built from the same weights (our MLPs'
parameters loaded into ``torchrl.modules.MLP``), in float64, for a Categorical and an
IndependentNormal actor, batch shapes [N] and [B, T], the three reductions, the two
validity masks TorchRL reads and value clipping; on torch, the gradient of every
``loss_*`` term with respect to every parameter too. Then keys, coefficients and bad
input. Inputs are built in NumPy; only the loss runs on the backend under test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential, flatten_params
from arrayrl.modules.actors import ProbabilisticActor, ValueOperator
from arrayrl.objectives import A2CLoss, ReinforceLoss, ValueEstimators

OBS, ACT, N_CAT = 4, 2, 3
CELLS = [16, 16]
RTOL, ATOL = 1e-9, 1e-11
#: TorchRL stores coefficients as float32 buffers: its default ``entropy_coeff`` is
#: float32(0.01), 2e-8 away from ours. Other coefficients in these tests are exact in
#: float32 (0.125, 0.25, ...), so every other term is compared at float64 round-off.
ENTROPY_RTOL = 1e-7
#: TensorDict's default ``biased_softplus_1.0`` computes its shift in float32 (2e-8 off
#: in float64); plain softplus is exact on both sides.
SCALE_MAPPING = "softplus"
#: TorchRL's estimators hold gamma and lambda as float32 buffers too: hyper-parameters
#: exact in float32 keep the comparison at float64 round-off.
EXACT_GAE = {"gamma": 0.96875, "lmbda": 0.9375}
LOSSES = {"a2c": A2CLoss, "reinforce": ReinforceLoss}
#: Where each ``xp`` fixture backend lives, as ``(backend name, device)``.
TARGETS = {
    "numpy": ("numpy", None),
    "torch": ("torch", None),
    "torch-cuda": ("torch", "cuda"),
    "cupy": ("cupy", None),
    "array_api_strict": ("array_api_strict", None),
    "jax": ("jax", None),
}


# -- our networks and TorchRL's, with the same weights ----------------------------------
@dataclasses.dataclass
class Nets:
    """Our actor and critic, and the MLPs holding their weights."""

    actor: ProbabilisticActor
    critic: ValueOperator
    actor_mlp: MLP
    critic_mlp: MLP
    kind: str


def _distribution(kind: str) -> tuple[type, dict[str, Any]]:
    from arrayrl.modules import distributions as dists

    if kind == "categorical":
        return dists.Categorical, {}
    if kind == "tanh_normal":
        return dists.TanhNormal, {"low": -1.0, "high": 1.0}
    return dists.IndependentNormal, {}


def make_nets(kind: str, seed: int = 0, trunk: MLP | None = None) -> Nets:
    """Our float64 NumPy actor (``kind``: categorical, normal, tanh_normal) and critic.

    With ``trunk`` both networks start with that shared MLP (and their own heads).
    """
    head_in = OBS if trunk is None else trunk.out_features
    cells = CELLS if trunk is None else []
    out = N_CAT if kind == "categorical" else 2 * ACT
    actor_mlp = MLP(head_in, out, cells, seed=seed + 1, dtype=np.float64)
    critic_mlp = MLP(head_in, 1, cells, seed=seed + 2, dtype=np.float64)
    actor_layers = [actor_mlp] if trunk is None else [trunk, actor_mlp]
    critic_layer = critic_mlp if trunk is None else Sequential(trunk, critic_mlp)
    if kind == "categorical":
        module = DictModule(Sequential(*actor_layers), ["observation"], ["logits"])
        dist_keys = ["logits"]
    else:
        layer = Sequential(*actor_layers, NormalParamExtractor(SCALE_MAPPING))
        module = DictModule(layer, ["observation"], ["loc", "scale"])
        dist_keys = ["loc", "scale"]
    dist_class, dist_kwargs = _distribution(kind)
    actor = ProbabilisticActor(
        module, in_keys=dist_keys, distribution_class=dist_class, distribution_kwargs=dist_kwargs
    )
    critic = ValueOperator(critic_layer, in_keys=["observation"])
    return Nets(actor, critic, actor_mlp, critic_mlp, kind)


def _torch_mlp(ours: MLP) -> Any:
    """A ``torchrl.modules.MLP`` of the same architecture holding ``ours``'s weights."""
    import torch
    from torchrl.modules import MLP as TorchMLP

    net = TorchMLP(
        in_features=ours.in_features, out_features=ours.out_features, num_cells=ours.num_cells
    ).double()
    state = {k: torch.as_tensor(_host(v)) for k, v in flatten_params(ours.params).items()}
    net.load_state_dict(state)
    return net


def torchrl_nets(nets: Nets, trunk: MLP | None = None) -> tuple[Any, Any, Any, Any]:
    """TorchRL's ``(actor, critic, actor MLP, critic MLP)`` with the weights of ``nets``."""
    import torch
    from tensordict.nn import NormalParamExtractor as TorchExtractor
    from tensordict.nn import TensorDictModule
    from torchrl.modules import IndependentNormal, ProbabilisticActor, TanhNormal, ValueOperator

    actor_mlp, critic_mlp = _torch_mlp(nets.actor_mlp), _torch_mlp(nets.critic_mlp)
    shared = [] if trunk is None else [_torch_mlp(trunk)]
    critic_net = critic_mlp if trunk is None else torch.nn.Sequential(*shared, critic_mlp)
    if nets.kind == "categorical":
        module = TensorDictModule(
            torch.nn.Sequential(*shared, actor_mlp), ["observation"], ["logits"]
        )
        dist, keys = torch.distributions.Categorical, ["logits"]
    else:
        layer = torch.nn.Sequential(*shared, actor_mlp, TorchExtractor(SCALE_MAPPING))
        module = TensorDictModule(layer, ["observation"], ["loc", "scale"])
        dist = TanhNormal if nets.kind == "tanh_normal" else IndependentNormal
        keys = ["loc", "scale"]
    actor = ProbabilisticActor(module, in_keys=keys, distribution_class=dist)
    critic = ValueOperator(critic_net, in_keys=["observation"])
    if trunk is not None:
        critic_mlp = (shared[0], critic_mlp)
        actor_mlp = (shared[0], actor_mlp)
    return actor, critic, actor_mlp, critic_mlp


# -- data --------------------------------------------------------------------------------
def make_data(kind: str, shape: tuple[int, ...], seed: int = 0, mask: Any = None) -> dict:
    """A nested dict of float64 NumPy inputs with batch ``shape``.

    Holds an advantage, value target and stored value (so no estimator runs), and
    everything GAE needs; ``mask`` adds TorchRL's ``("collector", "mask")`` or
    ``"shifted_valid"`` with some positions off.
    """
    rng = np.random.default_rng(seed)
    if kind == "categorical":
        action = rng.integers(0, N_CAT, shape)
    elif kind == "tanh_normal":
        action = rng.uniform(-0.9, 0.9, (*shape, ACT))
    else:
        action = rng.standard_normal((*shape, ACT))
    done = rng.random((*shape, 1)) < 0.2
    data = {
        "observation": rng.standard_normal((*shape, OBS)),
        "action": action,
        "advantage": rng.standard_normal((*shape, 1)),
        "value_target": rng.standard_normal((*shape, 1)),
        "state_value": rng.standard_normal((*shape, 1)),
        "next": {
            "observation": rng.standard_normal((*shape, OBS)),
            "reward": rng.standard_normal((*shape, 1)),
            "done": done,
            "terminated": done & (rng.random((*shape, 1)) < 0.5),
        },
    }
    valid = rng.random(shape) < 0.7
    valid.flat[0] = True
    if mask == "shifted_valid":
        data["shifted_valid"] = valid[..., None]
    elif mask is not None:
        data["collector"] = {"mask": valid}
    return data


def without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


def for_estimator(data: dict) -> dict:
    """``data`` without what the value estimator writes, so that the loss runs it.

    The stored value goes too: TorchRL's estimators stack the root and ``"next"``
    entries they read, and fail on a ``"state_value"`` without ``("next",
    "state_value")``.
    """
    return without(data, "advantage", "value_target", "state_value")


def to_arraydict(data: dict, shape: tuple[int, ...], xp: Any = None) -> ArrayDict:
    batch = ArrayDict(data, shape)
    if xp is None:
        return batch
    name, device = TARGETS[xp.name]
    return batch.to(name, device=device)


def to_tensordict(data: dict, shape: tuple[int, ...]) -> Any:
    import torch
    from tensordict import TensorDict

    def convert(tree: dict) -> dict:
        return {
            k: convert(v) if isinstance(v, dict) else torch.as_tensor(v) for k, v in tree.items()
        }

    return TensorDict(convert(data), batch_size=list(shape))


def _host(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):  # cupy
        return x.get()
    return np.asarray(x)


def move(loss: Any, xp: Any) -> Any:
    name, device = TARGETS[xp.name]
    return loss.to(name, device) if name != "numpy" else loss


def term_rtol(key: str) -> float:
    """The relative tolerance of output ``key`` (and of its gradients)."""
    return ENTROPY_RTOL if key == "loss_entropy" else RTOL


def assert_outputs_match(
    ours: Any, theirs: Any, keys: Any = None, rtol: float | None = None
) -> None:
    """The same keys and values (only ``keys``, when given), up to float64 round-off
    (or ``rtol``)."""
    if keys is None:
        assert sorted(ours.keys()) == sorted(theirs.keys())
        keys = sorted(theirs.keys())
    for key in keys:
        tol = term_rtol(key) if rtol is None else rtol
        np.testing.assert_allclose(
            _host(ours[key]), _host(theirs[key]), rtol=tol, atol=ATOL, err_msg=key
        )


# -- configurations ------------------------------------------------------------------------
#: ``(batch shape, mask, clip_value, loss_critic_type)``.
CONFIGS = [
    ((6,), None, None, "smooth_l1"),
    ((6,), "shifted_valid", 0.125, "l2"),
    ((6,), ("collector", "mask"), None, "l1"),
    ((3, 4), None, 0.25, "smooth_l1"),
    ((3, 4), ("collector", "mask"), 0.0625, "smooth_l1"),
    ((3, 4), "shifted_valid", None, "l2"),
]
KINDS = ["categorical", "normal"]
REDUCTIONS = ["mean", "sum", "none"]


def _config_id(config: tuple) -> str:
    shape, mask, clip, critic = config
    mask_id = mask if mask is None or isinstance(mask, str) else "/".join(mask)
    return f"{'x'.join(map(str, shape))}-{mask_id}-clip{clip}-{critic}"


def build_pair(
    name: str, kind: str, *, trunk: MLP | None = None, nets: Nets | None = None, **kwargs: Any
) -> tuple[Any, Any, Nets, tuple]:
    """``(our loss on NumPy, TorchRL's loss, our nets, TorchRL's MLPs)`` with the same
    weights (``nets``, or fresh ones of ``kind``)."""
    pytest.importorskip("torchrl")
    import torchrl.objectives as trl

    nets = make_nets(kind, trunk=trunk) if nets is None else nets
    t_actor, t_critic, t_actor_mlp, t_critic_mlp = torchrl_nets(nets, trunk)
    ours = LOSSES[name](nets.actor, nets.critic, **kwargs)
    theirs = {"a2c": trl.A2CLoss, "reinforce": trl.ReinforceLoss}[name](t_actor, t_critic, **kwargs)
    return ours, theirs, nets, (t_actor_mlp, t_critic_mlp)


def exact_estimators(ours: Any, theirs: Any, value_type: str = "gae", **extra: Any) -> None:
    """Give both losses a ``value_type`` estimator with float32-exact γ (and λ)."""
    import torchrl.objectives as trl

    kwargs = EXACT_GAE if value_type in ("gae", "tdlambda") else {"gamma": EXACT_GAE["gamma"]}
    ours.make_value_estimator(value_type, **kwargs, **extra)
    their_type = getattr(trl.ValueEstimators, ValueEstimators.parse(value_type).name)
    theirs.make_value_estimator(their_type, **kwargs, **extra)


# -- outputs against TorchRL ---------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_outputs_match_torchrl(xp, name, kind, config) -> None:
    """Every output key, for each reduction (set on both losses in turn)."""
    shape, mask, clip_value, critic_type = config
    kwargs = {"clip_value": clip_value, "loss_critic_type": critic_type}
    ours, theirs, _, _ = build_pair(name, kind, **kwargs)
    ours = move(ours, xp)
    data = make_data(kind, shape, mask=mask)
    for reduction in REDUCTIONS:
        ours.reduction = theirs.reduction = reduction
        got = ours(to_arraydict(data, shape, xp))
        assert_outputs_match(got, theirs(to_tensordict(data, shape)))
        policy_term = got["loss_objective" if name == "a2c" else "loss_actor"]
        assert tuple(policy_term.shape) == (shape if reduction == "none" else ())


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("kind", KINDS)
def test_advantage_from_the_default_estimator_matches_torchrl(xp, name, kind) -> None:
    """No advantage in the batch: GAE computes it inside the loss. With TorchRL's default
    γ = 0.99, λ = 0.95 (float32 there) to 1e-7, with float32-exact ones to round-off."""
    shape = (3, 5)
    ours, theirs, _, _ = build_pair(name, kind, clip_value=0.25)
    data = for_estimator(make_data(kind, shape, mask=("collector", "mask")))
    batch = to_arraydict(data, shape, xp)
    ours = move(ours, xp)
    assert_outputs_match(ours(batch), theirs(to_tensordict(data, shape)), rtol=ENTROPY_RTOL)
    assert (ours.value_estimator.gamma, ours.value_estimator.lmbda) == (0.99, 0.95)
    exact_estimators(ours, theirs)
    assert_outputs_match(ours(batch), theirs(to_tensordict(data, shape)))


@pytest.mark.parametrize("value_type", ["td0", "td1", "tdlambda"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_other_value_estimators_match_torchrl(name, value_type) -> None:
    shape = (2, 6)
    ours, theirs, _, _ = build_pair(name, "normal")
    exact_estimators(ours, theirs, value_type)
    data = for_estimator(make_data("normal", shape))
    assert_outputs_match(ours(to_arraydict(data, shape)), theirs(to_tensordict(data, shape)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_vtrace_estimator_gets_the_actor(name) -> None:
    """V-trace needs the actor: the loss hands it over, and its output equals running
    the same estimator before the loss (TorchRL's documented equivalence). TorchRL's
    V-trace scores a fresh policy sample instead of the stored action (a deviation of
    arrayrl's estimator), so it is no reference here."""
    from arrayrl.objectives.value import VTrace

    shape = (2, 6)
    nets = make_nets("categorical")
    loss = LOSSES[name](nets.actor, nets.critic)
    loss.make_value_estimator(ValueEstimators.VTrace, gamma=0.9)
    assert loss.value_estimator.actor_network is nets.actor
    data = for_estimator(make_data("categorical", shape))
    data["action_log_prob"] = np.random.default_rng(3).normal(-1.0, 0.3, shape)
    got = loss(to_arraydict(data, shape))
    estimator = VTrace(gamma=0.9, actor_network=nets.actor, value_network=nets.critic)
    expected = loss(estimator(to_arraydict(data, shape)))
    for key in got.keys():
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, err_msg=key)


@pytest.mark.filterwarnings("ignore:No target network updater")
def test_reinforce_delay_value_bootstraps_from_the_target_critic() -> None:
    """With ``delay_value`` the estimator uses the target copy: shift it in both losses."""
    import torch

    shape = (2, 6)
    ours, theirs, _, _ = build_pair("reinforce", "normal", delay_value=True)
    exact_estimators(ours, theirs)
    assert ours.target_critic_network_params is not ours.critic_network_params
    for leaf in flatten_params(ours.target_critic_network_params).values():
        leaf += 0.05
    with torch.no_grad():
        for leaf in theirs.target_critic_network_params.values(True, True):
            leaf.add_(0.05)
    data = for_estimator(make_data("normal", shape))
    got = ours(to_arraydict(data, shape))
    assert_outputs_match(got, theirs(to_tensordict(data, shape)))
    undelayed, undelayed_theirs, _, _ = build_pair("reinforce", "normal")
    exact_estimators(undelayed, undelayed_theirs)
    plain = undelayed(to_arraydict(data, shape))
    assert not np.allclose(plain["loss_actor"], got["loss_actor"])
    assert set(ours.state_dict()) > {
        f"target_critic_network_params.{k}" for k in flatten_params(ours.critic_network.params)
    }


@pytest.mark.parametrize("config", CONFIGS[:4], ids=_config_id)
def test_a2c_tanh_normal_matches_torchrl_without_entropy(config) -> None:
    """TanhNormal has no closed-form entropy: compare with ``entropy_bonus=False``."""
    shape, mask, clip_value, critic_type = config
    kwargs = {"entropy_bonus": False, "clip_value": clip_value, "loss_critic_type": critic_type}
    ours, theirs, _, _ = build_pair("a2c", "tanh_normal", **kwargs)
    data = make_data("tanh_normal", shape, mask=mask)
    got = ours(to_arraydict(data, shape))
    assert "entropy" not in got.keys() and "loss_entropy" not in got.keys()
    assert_outputs_match(got, theirs(to_tensordict(data, shape)))


def test_a2c_tanh_normal_monte_carlo_entropy() -> None:
    """All terms but the entropy match TorchRL; the Monte-Carlo entropy estimate agrees
    with TorchRL's to sampling accuracy with many draws."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    shape = (5,)
    ours, theirs, _, _ = build_pair("a2c", "tanh_normal", samples_mc_entropy=20_000)
    data = make_data("tanh_normal", shape)
    got = ours(to_arraydict(data, shape))
    expected = theirs(to_tensordict(data, shape))
    assert_outputs_match(got, expected, keys=["loss_objective", "loss_critic"])
    np.testing.assert_allclose(got["entropy"], _host(expected["entropy"]), rtol=0, atol=0.05)
    np.testing.assert_allclose(
        got["loss_entropy"], _host(expected["loss_entropy"]), rtol=0, atol=5e-4
    )
    assert np.isclose(got["loss_entropy"], -0.01 * got["entropy"], rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_a2c_coefficients_and_optional_terms_match_torchrl(kind) -> None:
    """``critic_coeff=None`` drops the critic loss, ``entropy_coeff=0`` the entropy terms,
    other coefficients scale them; out_keys follow."""
    shape = (6,)
    data = make_data(kind, shape)
    for kwargs in (
        {"critic_coeff": None},
        {"entropy_coeff": 0.0},
        {"critic_coeff": 0.0, "entropy_bonus": False},
        {"critic_coeff": 0.375, "entropy_coeff": 0.25},
    ):
        ours, theirs, _, _ = build_pair("a2c", kind, **kwargs)
        got = ours(to_arraydict(data, shape))
        assert_outputs_match(got, theirs(to_tensordict(data, shape)))
        assert ours.out_keys == theirs.out_keys, kwargs
        assert sorted(got.keys()) == sorted(ours.out_keys), kwargs


def test_schedulable_coefficients() -> None:
    shape = (6,)
    data = make_data("normal", shape)
    ours, theirs, _, _ = build_pair("a2c", "normal", clip_value=0.125)
    ours.entropy_coeff, ours.critic_coeff, ours.clip_value = 0.5, 2.0, 0.03125
    theirs.entropy_coeff.fill_(0.5)
    theirs.critic_coeff.fill_(2.0)
    theirs.clip_value.fill_(0.03125)
    assert_outputs_match(ours(to_arraydict(data, shape)), theirs(to_tensordict(data, shape)))
    state = ours.state_dict()
    assert (float(state["entropy_coeff"]), float(state["critic_coeff"])) == (0.5, 2.0)
    reinforce, theirs_r, _, _ = build_pair("reinforce", "normal", clip_value=0.125)
    reinforce.clip_value = 0.03125
    theirs_r.clip_value.fill_(0.03125)
    assert_outputs_match(reinforce(to_arraydict(data, shape)), theirs_r(to_tensordict(data, shape)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_functional_params_match_torchrl_with_those_weights(name) -> None:
    """``forward(batch, params=...)`` computes with the given trees (the estimator
    included), not the loss's own: TorchRL's loss built from those weights agrees."""
    shape = (2, 5)
    ours, _, _, _ = build_pair(name, "normal")
    other = make_nets("normal", seed=7)
    _, theirs, _, _ = build_pair(name, "normal", nets=other)
    exact_estimators(ours, theirs)
    params = {"actor_network": other.actor.params, "critic_network": other.critic.params}
    data = for_estimator(make_data("normal", shape))
    got = ours(to_arraydict(data, shape), params=params)
    assert_outputs_match(got, theirs(to_tensordict(data, shape)))
    own = ours(to_arraydict(data, shape))
    assert not any(np.allclose(own[key], got[key]) for key in got.keys())


# -- gradients against TorchRL (torch) ----------------------------------------------------
def _grads(term: Any, leaves: list[Any]) -> list[np.ndarray]:
    import torch

    grads = torch.autograd.grad(term, leaves, retain_graph=True, allow_unused=True)
    return [np.zeros(tuple(x.shape)) if g is None else _host(g) for g, x in zip(grads, leaves)]


def _our_leaves(*mlps: MLP) -> list[Any]:
    return [leaf for mlp in mlps for leaf in flatten_params(mlp.params).values()]


def _their_leaves(*mlps: Any) -> list[Any]:
    return [p for mlp in mlps for p in mlp.parameters()]


@pytest.mark.parametrize("config", CONFIGS, ids=_config_id)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_match_torchrl(name, kind, config) -> None:
    torch = pytest.importorskip("torch")
    shape, mask, clip_value, critic_type = config
    kwargs = {"clip_value": clip_value, "loss_critic_type": critic_type}
    ours, theirs, nets, their_mlps = build_pair(name, kind, **kwargs)
    ours.to("torch")
    data = make_data(kind, shape, mask=mask)
    if shape == (3, 4):
        # The estimator's path too (both read an input "shifted_valid": a trajectory
        # ends at its last valid step).
        data = for_estimator(data)
        exact_estimators(ours, theirs)
    got = ours(to_arraydict(data, shape).to("torch"))
    expected = theirs(to_tensordict(data, shape))
    assert_outputs_match(got, expected)
    leaves = _our_leaves(nets.actor_mlp, nets.critic_mlp)
    assert {id(x) for x in leaves} == {id(x) for x in ours.parameters()}
    assert all(isinstance(x, torch.Tensor) and x.requires_grad for x in leaves)
    for key in [k for k in expected.keys() if k.startswith("loss_")]:
        ours_g = _grads(got[key], leaves)
        theirs_g = _grads(expected[key], _their_leaves(*their_mlps))
        for index, (a, b) in enumerate(zip(ours_g, theirs_g)):
            np.testing.assert_allclose(
                a, b, rtol=term_rtol(key), atol=ATOL, err_msg=f"{key}[{index}]"
            )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("separate_losses", [False, True])
def test_shared_trunk_gradients_match_torchrl(name, separate_losses) -> None:
    """A trunk shared by actor and critic: with ``separate_losses`` the critic loss does
    not train it (TorchRL's ``compare_against``), otherwise both losses do."""
    pytest.importorskip("torch")
    trunk = MLP(OBS, 8, [16], seed=11, dtype=np.float64)
    ours, theirs, nets, (t_actor, t_critic) = build_pair(
        name, "normal", trunk=trunk, separate_losses=separate_losses
    )
    ours.to("torch")
    shape = (6,)
    data = make_data("normal", shape)
    got = ours(to_arraydict(data, shape).to("torch"))
    expected = theirs(to_tensordict(data, shape))
    assert_outputs_match(got, expected)
    critic_key = "loss_critic" if name == "a2c" else "loss_value"
    leaves = _our_leaves(trunk, nets.actor_mlp, nets.critic_mlp)
    their_leaves = _their_leaves(t_actor[0], t_actor[1], t_critic[1])
    assert len({id(x) for x in ours.parameters()}) == len(leaves)
    for key in [k for k in expected.keys() if k.startswith("loss_")]:
        for a, b in zip(_grads(got[key], leaves), _grads(expected[key], their_leaves)):
            np.testing.assert_allclose(a, b, rtol=term_rtol(key), atol=ATOL, err_msg=key)
    trunk_grad = _grads(got[critic_key], _our_leaves(trunk))
    assert all((g == 0).all() for g in trunk_grad) == separate_losses


# -- keys ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_keys_follow_torchrl(name) -> None:
    ours, theirs, _, _ = build_pair(name, "normal", clip_value=0.125)
    ours_keys = dataclasses.asdict(ours.tensor_keys)
    assert ours_keys == dataclasses.asdict(theirs.tensor_keys)
    assert list(ours_keys) == [f.name for f in dataclasses.fields(theirs.tensor_keys)]
    assert sorted(map(str, ours.in_keys)) == sorted(map(str, theirs.in_keys))
    assert ours.out_keys == theirs.out_keys
    assert ours.default_value_estimator is ValueEstimators.GAE
    assert ours.functional is True


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_set_keys_renames_what_the_loss_reads(name) -> None:
    shape = (6,)
    ours, theirs, _, _ = build_pair(name, "categorical")
    data = make_data("categorical", shape)
    expected = theirs(to_tensordict(data, shape))
    renamed = {**without(data, "advantage", "value_target"), "adv": data["advantage"]}
    renamed["returns"] = data["value_target"]
    ours.set_keys(advantage="adv", value_target="returns")
    assert_outputs_match(ours(to_arraydict(renamed, shape)), expected)
    ours.set_keys(advantage=None)
    assert ours.tensor_keys.advantage == "advantage"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_forward_leaves_the_callers_batch_unchanged(name) -> None:
    shape = (3, 4)
    ours, _, _, _ = build_pair(name, "normal")
    batch = to_arraydict(for_estimator(make_data("normal", shape)), shape)
    before = {k: id(v) for k, v in batch.items(include_nested=True, leaves_only=True)}
    ours(batch)
    after = {k: id(v) for k, v in batch.items(include_nested=True, leaves_only=True)}
    assert after == before


def test_a2c_entropy_bonus_method_matches_torchrl() -> None:
    shape = (6,)
    ours, theirs, _, _ = build_pair("a2c", "categorical")
    data = make_data("categorical", shape)
    batch, td = to_arraydict(data, shape), to_tensordict(data, shape)
    _, dist = ours._log_probs(batch)
    _, their_dist = theirs._log_probs(td)
    np.testing.assert_allclose(
        ours.get_entropy_bonus(dist), _host(theirs.get_entropy_bonus(their_dist)), rtol=RTOL
    )
    loss, clip_fraction = ours.loss_critic(batch)
    their_loss, their_fraction = theirs.loss_critic(td)
    np.testing.assert_allclose(loss, _host(their_loss), rtol=RTOL)
    assert clip_fraction is None and their_fraction is None


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("missing", ["value_target", "action", "observation"])
def test_missing_key_names_the_key(name, missing) -> None:
    nets = make_nets("normal")
    loss = LOSSES[name](nets.actor, nets.critic)
    data = without(make_data("normal", (6,)), missing)
    with pytest.raises(KeyError, match=repr(missing)) as info:
        loss(to_arraydict(data, (6,)))
    if missing != "observation":  # read by the actor network, not a loss key
        assert f"set_keys({missing}=" in str(info.value)


def test_missing_stored_value_with_clip_value_names_set_keys() -> None:
    nets = make_nets("normal")
    loss = A2CLoss(nets.actor, nets.critic, clip_value=0.125)
    data = without(make_data("normal", (6,)), "state_value")
    with pytest.raises(KeyError, match=r"'state_value'.*set_keys\(value="):
        loss(to_arraydict(data, (6,)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unknown_set_keys_name_raises(name) -> None:
    nets = make_nets("normal")
    with pytest.raises(ValueError, match="advantages"):
        LOSSES[name](nets.actor, nets.critic).set_keys(advantages="adv")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"entropy_coeff": -0.1}, ValueError, "entropy_coeff"),
        ({"critic_coeff": -1.0}, ValueError, "critic_coeff"),
        ({"clip_value": 0.0}, ValueError, "clip_value"),
        ({"clip_value": True}, ValueError, "clip_value"),
        ({"loss_critic_type": "l3"}, ValueError, "loss_critic_type"),
        ({"samples_mc_entropy": 0}, ValueError, "samples_mc_entropy"),
        ({"gamma": 0.9}, TypeError, "make_value_estimator"),
        ({"functional": False}, NotImplementedError, "functional"),
        ({"advantage_norm": object()}, TypeError, "advantage_norm must be an arrayrl ValueNorm"),
        ({"advantage_key": "adv"}, RuntimeError, "set_keys"),
        ({"entropy_coef": 0.1}, TypeError, "entropy_coeff"),
        ({"critic_coef": 0.1}, TypeError, "critic_coeff"),
        ({"clip_epsilon": 0.1}, TypeError, "clip_epsilon"),
    ],
)
def test_a2c_bad_arguments(kwargs, error, match) -> None:
    nets = make_nets("normal")
    with pytest.raises(error, match=match):
        A2CLoss(nets.actor, nets.critic, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"clip_value": -0.5}, ValueError, "clip_value"),
        ({"loss_critic_type": "huber"}, ValueError, "loss_critic_type"),
        ({"gamma": 0.9}, TypeError, "make_value_estimator"),
        ({"value_target_key": "vt"}, RuntimeError, "set_keys"),
        ({"functional": False}, NotImplementedError, "functional"),
    ],
)
def test_reinforce_bad_arguments(kwargs, error, match) -> None:
    nets = make_nets("normal")
    with pytest.raises(error, match=match):
        ReinforceLoss(nets.actor, nets.critic, **kwargs)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_missing_network_raises(name) -> None:
    nets = make_nets("normal")
    with pytest.raises(TypeError, match="critic_network"):
        LOSSES[name](nets.actor)
    assert isinstance(LOSSES[name](actor=nets.actor, critic=nets.critic), LOSSES[name])


def test_scheduled_coefficients_are_checked() -> None:
    nets = make_nets("normal")
    loss = A2CLoss(nets.actor, nets.critic)
    with pytest.raises(ValueError, match="entropy_coeff"):
        loss.entropy_coeff = -0.01
    assert loss.entropy_coeff == 0.01
    reinforce = ReinforceLoss(nets.actor, nets.critic, clip_value=0.5)
    with pytest.raises(ValueError, match="clip_value"):
        reinforce.clip_value = -1.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_numpy_batch_with_torch_params_raises(name) -> None:
    pytest.importorskip("torch")
    nets = make_nets("normal")
    loss = LOSSES[name](nets.actor, nets.critic).to("torch")
    with pytest.raises(TypeError, match="action"):
        loss(to_arraydict(make_data("normal", (6,)), (6,)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_advantage_that_would_broadcast_raises(name) -> None:
    nets = make_nets("normal")
    data = make_data("normal", (6,))
    data["advantage"] = np.ones((6, 6))
    with pytest.raises(ValueError, match="advantage"):
        LOSSES[name](nets.actor, nets.critic)(to_arraydict(data, (6,)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unknown_value_estimator_raises(name) -> None:
    nets = make_nets("normal")
    with pytest.raises(ValueError, match="gea"):
        LOSSES[name](nets.actor, nets.critic).make_value_estimator("gea")


def test_a2c_stored_action_with_gradient_raises() -> None:
    torch = pytest.importorskip("torch")
    nets = make_nets("normal")
    loss = A2CLoss(nets.actor, nets.critic).to("torch")
    batch = to_arraydict(make_data("normal", (6,)), (6,)).to("torch")
    batch.set("action", batch.get("action").clone().requires_grad_(True))
    assert isinstance(batch.get("action"), torch.Tensor)
    with pytest.raises(RuntimeError, match="requires grad"):
        loss(batch)
