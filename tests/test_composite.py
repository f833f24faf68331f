"""Composite (multi-head) action distributions: ``CompositeDistribution`` against
tensordict 0.14.3's, the composite ``ProbabilisticActor``, and ``ClipPPOLoss`` with a
two-head actor (per-head entropy coefficients) against TorchRL 0.14.1."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import DictModule, ProbabilisticActor, ValueOperator, as_layer
from arrayrl.modules.distributions import (
    Categorical,
    CompositeDistribution,
    IndependentNormal,
    TanhNormal,
)
from arrayrl.random import make_generator

B, OBS, N_CAT, ACT = 5, 4, 3, 2
DIST_MAP = {"disc": Categorical, "cont": IndependentNormal}
PARAM_KEYS = [("params", "disc", "logits"), ("params", "cont", "loc"), ("params", "cont", "scale")]


def _params(seed: int = 0) -> dict:
    """Per-head distribution parameters in float64 NumPy."""
    rng = np.random.default_rng(seed)
    return {
        "disc": {"logits": rng.normal(size=(B, N_CAT))},
        "cont": {"loc": rng.normal(size=(B, ACT)), "scale": rng.uniform(0.5, 1.5, (B, ACT))},
    }


def _torch_composite(params: dict):
    """tensordict's ``CompositeDistribution`` over the same heads (torch, float64)."""
    import torch
    from tensordict import TensorDict
    from tensordict.nn import CompositeDistribution as TDComposite
    from torchrl.modules.distributions import IndependentNormal as TorchIndependentNormal

    as_torch = {head: {k: torch.from_numpy(v) for k, v in p.items()} for head, p in params.items()}
    td = TensorDict(as_torch, [B])
    return TDComposite(
        td, {"disc": torch.distributions.Categorical, "cont": TorchIndependentNormal}
    )


@pytest.fixture(params=["numpy", "torch"])
def backend(request) -> str:
    if request.param == "torch":
        pytest.importorskip("torch")
    return request.param


def _to_numpy(x) -> np.ndarray:
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


# -- the distribution ----------------------------------------------------------------------


def test_composite_matches_tensordict(backend: str) -> None:
    pytest.importorskip("tensordict")
    from tensordict.nn import set_composite_lp_aggregate

    params = _params()
    dist = CompositeDistribution(ArrayDict(params, [B]).to(backend), DIST_MAP)
    with set_composite_lp_aggregate(False):
        reference = _torch_composite(params)
        sample = reference.sample()
        expected_lp = reference.log_prob(sample)
        expected_h = reference.entropy()
    mine = ArrayDict({k: sample[k].numpy() for k in ("disc", "cont")}, [B]).to(backend)
    log_prob = dist.log_prob(mine)
    entropy = dist.entropy()
    assert sorted(log_prob.keys()) == ["cont_log_prob", "disc_log_prob"]
    assert sorted(entropy.keys()) == ["cont_entropy", "disc_entropy"]
    for key in ("disc_log_prob", "cont_log_prob"):
        np.testing.assert_allclose(_to_numpy(log_prob[key]), expected_lp[key].numpy(), rtol=1e-12)
    for key in ("disc_entropy", "cont_entropy"):
        np.testing.assert_allclose(_to_numpy(entropy[key]), expected_h[key].numpy(), rtol=1e-12)


def test_composite_samples_have_tensordicts_shapes(backend: str) -> None:
    dist = CompositeDistribution(ArrayDict(_params(), [B]).to(backend), DIST_MAP)
    rng = make_generator(0, backend)
    draws = dist.sample((2,), rng=rng)
    assert draws.batch_size == (2, B)
    assert tuple(draws["disc"].shape) == (2, B)
    assert tuple(draws["cont"].shape) == (2, B, ACT)
    assert tuple(dist.log_prob(draws)["cont_log_prob"].shape) == (2, B)
    assert dist.batch_shape == (B,)
    assert dist.has_entropy and not dist.has_rsample  # Categorical has no rsample
    assert tuple(dist.mode["disc"].shape) == (B,)
    with pytest.raises(NotImplementedError):
        dist.rsample(rng=rng)


def test_composite_from_a_plain_dict_and_missing_heads() -> None:
    dist = CompositeDistribution(_params(), DIST_MAP)
    assert dist.batch_shape == (B,)
    with pytest.raises(KeyError, match="disc"):
        dist.log_prob({"cont": np.zeros((B, ACT))})
    with pytest.raises(KeyError, match="other"):
        CompositeDistribution(_params(), {"other": Categorical})


def test_composite_without_closed_form_entropy_uses_the_estimate() -> None:
    from arrayrl.modules.distributions import entropy_estimate

    params = {"a": {"loc": np.zeros((B, ACT)), "scale": np.ones((B, ACT))}}
    dist = CompositeDistribution(params, {"a": TanhNormal})
    assert not dist.has_entropy and dist.has_rsample
    estimate = entropy_estimate(dist, 4, rng=make_generator(0))
    assert tuple(estimate["a_entropy"].shape) == (B,)


# -- the actor -----------------------------------------------------------------------------


class _Heads:
    """A torch module writing logits, loc and scale (built lazily to keep torch optional)."""

    @staticmethod
    def make(seed: int = 0):
        import torch

        class Heads(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lin = torch.nn.Linear(OBS, N_CAT + 2 * ACT, dtype=torch.float64)

            def forward(self, x):
                y = self.lin(x)
                scale = torch.nn.functional.softplus(y[..., N_CAT + ACT :]) + 0.1
                return y[..., :N_CAT], y[..., N_CAT : N_CAT + ACT], scale

        torch.manual_seed(seed)
        return Heads(), torch.nn.Linear(OBS, 1, dtype=torch.float64)


def _arrayrl_actor(net) -> ProbabilisticActor:
    return ProbabilisticActor(
        DictModule(as_layer(net), in_keys=["observation"], out_keys=PARAM_KEYS),
        in_keys=["params"],
        out_keys=["disc", "cont"],
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": DIST_MAP},
        return_log_prob=True,
    )


def _torchrl_actor(net):
    import torch
    from tensordict.nn import CompositeDistribution as TDComposite
    from tensordict.nn import TensorDictModule
    from torchrl.modules import ProbabilisticActor as TorchRLActor
    from torchrl.modules.distributions import IndependentNormal as TorchIndependentNormal

    return TorchRLActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=PARAM_KEYS),
        in_keys=["params"],
        out_keys=["disc", "cont"],
        distribution_class=TDComposite,
        distribution_kwargs={
            "distribution_map": {
                "disc": torch.distributions.Categorical,
                "cont": TorchIndependentNormal,
            }
        },
        return_log_prob=True,
    )


def test_composite_actor_keys_and_forward() -> None:
    torch = pytest.importorskip("torch")
    net, _ = _Heads.make()
    actor = _arrayrl_actor(net)
    assert actor.dist_sample_keys == ["disc", "cont"]
    assert actor.log_prob_keys == ["disc_log_prob", "cont_log_prob"]
    with pytest.raises(RuntimeError, match="log_prob_keys"):
        actor.log_prob_key  # noqa: B018
    batch = ArrayDict({"observation": torch.zeros(B, OBS, dtype=torch.float64)}, [B])
    with torch.no_grad():
        actor(batch, rng=make_generator(0, "torch"))
    assert tuple(batch["disc"].shape) == (B,) and tuple(batch["cont"].shape) == (B, ACT)
    assert tuple(batch["disc_log_prob"].shape) == (B,)
    with pytest.raises(ValueError, match="one sample key"):
        ProbabilisticActor(
            actor.module, in_keys=["params"], out_keys=["a", "b"], distribution_class=Categorical
        )


# -- ClipPPOLoss against TorchRL ------------------------------------------------------------


def _batch(torchrl_actor):
    """A batch collected with TorchRL's actor, with an advantage and a value target."""
    import torch
    from tensordict import TensorDict

    gen = torch.Generator().manual_seed(3)
    td = TensorDict({"observation": torch.randn(B, OBS, generator=gen, dtype=torch.float64)}, [B])
    with torch.no_grad():
        torchrl_actor(td)
    td["advantage"] = torch.randn(B, 1, generator=gen, dtype=torch.float64)
    td["value_target"] = torch.randn(B, 1, generator=gen, dtype=torch.float64)
    # an off-policy shift so that some ratios are clipped
    td["disc_log_prob"] = td["disc_log_prob"] + 0.3 * torch.randn(B, generator=gen).double()
    return td


def _gradients(out, params: dict) -> dict:
    """``{"<term>/<param>": d term / d param}`` for every ``loss_*`` term."""
    import torch

    grads = {}
    for term in [k for k in out.keys() if k.startswith("loss_")]:
        found = torch.autograd.grad(
            out[term], list(params.values()), retain_graph=True, allow_unused=True
        )
        for name, g in zip(params, found):
            grads[f"{term}/{name}"] = np.zeros(1) if g is None else g.numpy()
    return grads


@pytest.mark.parametrize(
    "config", [{}, {"delay_actor": True, "max_importance_ratio": 1.5}], ids=["plain", "delayed"]
)
@pytest.mark.parametrize("loss_name", ["ClipPPOLoss", "PPOLoss"])
@pytest.mark.parametrize(
    "entropy_coeff", [0.05, {"disc_entropy": 0.02, "cont_entropy": 0.07}], ids=["scalar", "map"]
)
@pytest.mark.parametrize("modules", ["arrayrl", "torchrl"])
def test_ppo_with_two_heads_matches_torchrl(
    entropy_coeff, loss_name: str, config: dict, modules: str
) -> None:
    """arrayrl's loss with arrayrl's modules, or with TorchRL's own composite actor and
    critic (adapted, the same weights), against TorchRL's loss."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchrl")
    import torchrl.objectives
    from tensordict.nn import set_composite_lp_aggregate
    from torchrl.modules import ValueOperator as TorchRLValue

    import arrayrl.objectives

    net, critic = _Heads.make()
    mine_net, mine_critic = copy.deepcopy(net), copy.deepcopy(critic)
    with set_composite_lp_aggregate(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = getattr(torchrl.objectives, loss_name)(
            _torchrl_actor(net),
            TorchRLValue(critic, in_keys=["observation"]),
            entropy_coeff=entropy_coeff,
            **config,
        )
        td = _batch(reference.actor_network)
        expected = reference(td.clone())
    ref_params = {f"actor.{k}": v for k, v in net.named_parameters()}
    ref_params |= {f"critic.{k}": v for k, v in critic.named_parameters()}
    expected_grads = _gradients(expected, ref_params)

    if modules == "torchrl":
        networks = (_torchrl_actor(mine_net), TorchRLValue(mine_critic, in_keys=["observation"]))
    else:
        networks = (_arrayrl_actor(mine_net), ValueOperator(mine_critic, in_keys=["observation"]))
    loss = getattr(arrayrl.objectives, loss_name)(
        *networks, entropy_coeff=entropy_coeff, **config
    )
    assert loss.tensor_keys.sample_log_prob == ["disc_log_prob", "cont_log_prob"]
    assert loss.tensor_keys.action == ["disc", "cont"]
    keys = ["observation", "disc", "cont", "disc_log_prob", "cont_log_prob"]
    batch = ArrayDict({k: td[k] for k in [*keys, "advantage", "value_target"]}, [B])
    out = loss(batch)

    # TorchRL rounds its coefficients (clip_epsilon, a scalar entropy_coeff) to float32:
    # ~1e-8 relative on float64 (the conformance deviation "torchrl-float32-constants")
    tol = {"rtol": 1e-6, "atol": 1e-12}
    expected_keys = set(expected.keys(include_nested=True, leaves_only=True))
    assert set(out.keys(include_nested=True, leaves_only=True)) == expected_keys
    for key in expected_keys:
        np.testing.assert_allclose(
            _to_numpy(out.get(key)), expected.get(key).detach().numpy(), err_msg=str(key), **tol
        )
    params = {f"actor.{k}": v for k, v in mine_net.named_parameters()}
    params |= {f"critic.{k}": v for k, v in mine_critic.named_parameters()}
    grads = _gradients(out, params)
    assert grads.keys() == expected_grads.keys()
    for name, g in expected_grads.items():
        np.testing.assert_allclose(grads[name], g, err_msg=name, **tol)
    assert torch.is_tensor(out["composite_entropy", "disc_entropy"])


def test_per_head_coefficients_need_every_head() -> None:
    pytest.importorskip("torch")
    from arrayrl.objectives import ClipPPOLoss

    net, critic = _Heads.make()
    loss = ClipPPOLoss(
        _arrayrl_actor(net),
        ValueOperator(critic, in_keys=["observation"]),
        entropy_coeff={"disc_entropy": 0.02},
    )
    batch = _arrayrl_batch(net)
    with pytest.raises(KeyError, match="Missing entropy coeff for head 'cont_entropy'"):
        loss(batch)


def test_per_head_coefficients_with_a_single_head_actor_raise() -> None:
    pytest.importorskip("torch")
    from arrayrl.modules import MLP
    from arrayrl.objectives import ClipPPOLoss

    actor = ProbabilisticActor(
        DictModule(MLP(OBS, N_CAT, [8], backend="torch"), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=Categorical,
        return_log_prob=True,
    )
    loss = ClipPPOLoss(actor, entropy_coeff={"action_entropy": 0.1}, critic_coeff=None)
    import torch

    batch = ArrayDict(
        {
            "observation": torch.zeros(B, OBS),
            "action": torch.zeros(B, dtype=torch.int64),
            "action_log_prob": torch.zeros(B),
            "advantage": torch.ones(B, 1),
        },
        [B],
    )
    with pytest.raises(TypeError, match="CompositeDistribution"):
        loss(batch)


def _arrayrl_batch(net) -> ArrayDict:
    """A batch collected with arrayrl's composite actor, with an advantage and a target."""
    import torch

    actor = _arrayrl_actor(net)
    batch = ArrayDict({"observation": torch.randn(B, OBS, dtype=torch.float64)}, [B])
    with torch.no_grad():
        actor(batch, rng=make_generator(0, "torch"))
    batch = batch.exclude("params")
    batch.set("advantage", torch.randn(B, 1, dtype=torch.float64))
    batch.set("value_target", torch.randn(B, 1, dtype=torch.float64))
    return batch


def test_composite_ppo_on_numpy_evaluates() -> None:
    """The loss is array-API code: a composite actor works on NumPy too."""
    from arrayrl.modules import MLP, Layer
    from arrayrl.objectives import PPOLoss

    class Split(Layer):
        """``y`` → ``(logits, loc, softplus scale)``."""

        def apply(self, params, y):
            scale = np.log1p(np.exp(y[..., N_CAT + ACT :])) + 0.1
            return y[..., :N_CAT], y[..., N_CAT : N_CAT + ACT], scale

    from arrayrl.modules import Sequential

    net = Sequential(MLP(OBS, N_CAT + 2 * ACT, [8], seed=0, dtype="float64"), Split())
    actor = ProbabilisticActor(
        DictModule(net, ["observation"], PARAM_KEYS),
        in_keys=["params"],
        out_keys=["disc", "cont"],
        distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": DIST_MAP},
        return_log_prob=True,
    )
    rng = np.random.default_rng(0)
    batch = ArrayDict({"observation": rng.normal(size=(B, OBS))}, [B])
    actor(batch, rng=make_generator(0))
    batch.set("advantage", rng.normal(size=(B, 1)))
    coeffs = {"disc_entropy": 0.1, "cont_entropy": 0.2}
    loss = PPOLoss(actor, entropy_coeff=coeffs, critic_coeff=None)
    out = loss(batch.exclude("params"))
    heads = out["composite_entropy"]
    total = heads["disc_entropy"] + heads["cont_entropy"]
    np.testing.assert_allclose(out["entropy"], total.mean())
    np.testing.assert_allclose(
        out["loss_entropy"], -(0.1 * heads["disc_entropy"] + 0.2 * heads["cont_entropy"]).mean()
    )
    np.testing.assert_allclose(out["loss_objective"], -batch["advantage"].mean())


def test_a2c_rejects_a_composite_actor() -> None:
    """TorchRL 0.14.1's A2CLoss fails on a composite actor (unhashable in_keys)."""
    pytest.importorskip("torch")
    from arrayrl.objectives import A2CLoss

    net, critic = _Heads.make()
    with pytest.raises(NotImplementedError, match="composite"):
        A2CLoss(_arrayrl_actor(net), ValueOperator(critic, in_keys=["observation"]))


@pytest.mark.parametrize("loss_name", ["KLPENPPOLoss", "ReinforceLoss"])
def test_losses_without_composite_support_say_so(loss_name: str) -> None:
    pytest.importorskip("torch")
    import arrayrl.objectives as objectives

    net, critic = _Heads.make()
    with pytest.raises(NotImplementedError, match="composite"):
        getattr(objectives, loss_name)(
            _arrayrl_actor(net), ValueOperator(critic, in_keys=["observation"])
        )


def test_composite_ppo_computes_the_advantage_with_gae() -> None:
    """The per-head key lists stay with the loss; the value estimator keeps its keys."""
    torch = pytest.importorskip("torch")
    from arrayrl.objectives import ClipPPOLoss

    net, critic = _Heads.make()
    loss = ClipPPOLoss(_arrayrl_actor(net), ValueOperator(critic, in_keys=["observation"]))
    assert {"disc", "cont", "disc_log_prob", "cont_log_prob"} <= set(loss.in_keys)
    batch = _arrayrl_batch(net).exclude("advantage", "value_target")
    batch.set(("next", "observation"), torch.randn(B, OBS, dtype=torch.float64))
    batch.set(("next", "reward"), torch.randn(B, 1, dtype=torch.float64))
    batch.set(("next", "done"), torch.zeros(B, 1, dtype=torch.bool))
    batch.set(("next", "terminated"), torch.zeros(B, 1, dtype=torch.bool))
    out = loss(batch)
    assert torch.isfinite(out["loss_objective"]) and torch.isfinite(out["loss_critic"])
