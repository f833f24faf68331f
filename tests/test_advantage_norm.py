"""``advantage_norm`` in ClipPPOLoss and A2CLoss against TorchRL 0.14.1 on the same
modules, weights and batch: every output, every gradient of every ``loss_*`` term, and
the normaliser's state after each call (updated when the loss computes the advantage
in training mode; not with a precomputed advantage, not in eval mode; masked rows left
out), plus ``state_dict`` / ``to`` and the mutual exclusion with ``normalize_advantage``.

The networks are TorchRL's, handed to both losses (the drop-in use); the batch is
``[B, T]``, so ``ESS`` and ``explained_variance`` (reduced over every batch dim by
arrayrl, over dim 0 by TorchRL: deviation ``torchrl-ppo-diagnostics-first-dim``) are
checked against the flat NumPy formula in tests/test_ppo.py instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")

import torchrl.modules as tm  # noqa: E402
import torchrl.objectives as tro  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import NormalParamExtractor, TensorDictModule  # noqa: E402

import arrayrl.objectives as aro  # noqa: E402
from arrayrl.modules import value_norm as avn  # noqa: E402

OBS, ACT, B, T = 3, 2, 3, 4
NORMS = {
    "popart": ("PopArtValueNorm", {"beta": 0.9}),
    "running": ("RunningValueNorm", {}),
    "percentile": ("PercentileValueNorm", {"rate": 0.5, "min_scale": 0.1}),
}
LOSSES = {"ClipPPOLoss": {"clip_value": 0.3}, "A2CLoss": {"clip_value": 0.3}}
#: compared against the flat formula in tests/test_ppo.py (multi-dim batch deviation)
FIRST_DIM_DIAGNOSTICS = ("ESS", "explained_variance")


def _networks(dtype: torch.dtype):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        tm.MLP(in_features=OBS, out_features=2 * ACT, num_cells=[8]), NormalParamExtractor()
    )
    actor = tm.ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=tm.IndependentNormal,
        return_log_prob=True,
    ).to(dtype)
    critic = tm.ValueOperator(
        tm.MLP(in_features=OBS, out_features=1, num_cells=[8]), in_keys=["observation"]
    ).to(dtype)
    return actor, critic


def _batch(
    dtype: torch.dtype, *, seed: int = 0, advantage: bool = False, mask: bool = False
) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T + 1, OBS, generator=g, dtype=dtype)
    done = torch.zeros(B, T, 1, dtype=torch.bool)
    done[1, 2] = True
    td = TensorDict(
        {
            "observation": obs[:, :-1],
            "action": torch.randn(B, T, ACT, generator=g, dtype=dtype).clamp(-2, 2),
            "action_log_prob": -2.0 + 0.3 * torch.randn(B, T, generator=g, dtype=dtype),
            "next": {
                "observation": obs[:, 1:],
                "reward": 5.0 + 10.0 * torch.randn(B, T, 1, generator=g, dtype=dtype),
                "done": done,
                "terminated": done.clone(),
            },
        },
        batch_size=[B, T],
    )
    if advantage:  # else the value estimator writes them (and the critic's state_value)
        td["state_value"] = torch.randn(B, T, 1, generator=g, dtype=dtype)
        td["advantage"] = torch.randn(B, T, 1, generator=g, dtype=dtype)
        td["value_target"] = torch.randn(B, T, 1, generator=g, dtype=dtype)
    if mask:
        valid = torch.ones(B, T, 1, dtype=torch.bool)
        valid[0, 1:] = False
        valid[2, 3] = False
        td["collector", "mask"] = valid
    return td


def _pair(loss_name: str, kind: str, dtype: torch.dtype, *, as_torchrl_norm: bool = True):
    """(arrayrl loss, TorchRL loss, parameters) on the same modules and weights."""
    actor, critic = _networks(dtype)
    cls_name, kwargs = NORMS[kind]
    theirs = getattr(tro, loss_name)(
        actor, critic, advantage_norm=getattr(tm, cls_name)(**kwargs), **LOSSES[loss_name]
    )
    norm = getattr(tm if as_torchrl_norm else avn, cls_name)(**kwargs)
    mine = getattr(aro, loss_name)(actor, critic, advantage_norm=norm, **LOSSES[loss_name])
    for loss in (theirs, mine):
        loss.make_value_estimator("gae", gamma=0.9, lmbda=0.8)
    params = [*actor.parameters(), *critic.parameters()]
    return mine, theirs, params


def _call(loss, batch: TensorDict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = loss(batch.clone())
    return dict(out.items())


def _compare(mine_loss, their_loss, params, batch, *, rtol: float, what: str) -> None:
    mine, theirs = _call(mine_loss, batch), _call(their_loss, batch)
    assert set(mine) == set(theirs), what
    for key, value in theirs.items():
        assert mine[key].shape == value.shape or key in FIRST_DIM_DIAGNOSTICS, (what, key)
        if key not in FIRST_DIM_DIAGNOSTICS:
            torch.testing.assert_close(
                mine[key].detach(),
                value.detach(),
                rtol=rtol,
                atol=rtol,
                msg=lambda m, k=key: f"{what}: {k}: {m}",
            )
        if not key.startswith("loss_"):
            continue
        g_mine = torch.autograd.grad(mine[key], params, allow_unused=True, retain_graph=True)
        g_theirs = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
        for i, (a, b) in enumerate(zip(g_mine, g_theirs)):
            assert (a is None) == (b is None), (what, key, i)
            if a is not None:
                torch.testing.assert_close(
                    a, b, rtol=rtol, atol=rtol, msg=lambda m, k=key, j=i: f"{what}: d{k}/dp{j}: {m}"
                )
    _compare_state(mine_loss, their_loss, rtol, what)


def _compare_state(mine_loss, their_loss, rtol: float, what: str) -> None:
    theirs = their_loss.advantage_norm.state_dict()
    mine = mine_loss.advantage_norm.state_dict()
    assert sorted(mine) == sorted(theirs)
    for name, value in theirs.items():
        torch.testing.assert_close(
            mine[name],
            value,
            rtol=rtol,
            atol=rtol,
            msg=lambda m, n=name: f"{what}: advantage_norm.{n}: {m}",
        )


def _state(loss) -> dict:
    return {k: v.clone() for k, v in loss.advantage_norm.state_dict().items()}


def _unchanged(loss, before: dict) -> bool:
    return all(torch.equal(v, before[k]) for k, v in loss.advantage_norm.state_dict().items())


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_matches_torchrl_and_updates_only_when_it_should(loss_name, kind) -> None:
    mine, theirs, params = _pair(loss_name, kind, torch.float32)
    computed = _batch(torch.float32, seed=1)
    # the loss computes the advantage: the statistics move, then scale the advantage
    before = _state(mine)
    _compare(mine, theirs, params, computed, rtol=2e-5, what="first call")
    assert not _unchanged(mine, before)
    _compare(mine, theirs, params, _batch(torch.float32, seed=2), rtol=2e-5, what="second call")
    # a precomputed advantage: scaled, statistics untouched
    before = _state(mine)
    _compare(
        mine,
        theirs,
        params,
        _batch(torch.float32, seed=3, advantage=True),
        rtol=2e-5,
        what="precomputed advantage",
    )
    assert _unchanged(mine, before)
    # eval mode: scaled, statistics untouched
    assert mine.eval() is mine and theirs.eval() is theirs and not mine.training
    _compare(mine, theirs, params, computed, rtol=2e-5, what="eval mode")
    assert _unchanged(mine, before)
    assert mine.train() is mine and mine.training


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_masked_rows_are_left_out_of_the_update(loss_name) -> None:
    mine, theirs, params = _pair(loss_name, "running", torch.float32)
    batch = _batch(torch.float32, seed=4, mask=True)
    _compare(mine, theirs, params, batch, rtol=2e-5, what="collector mask")
    valid = batch["collector", "mask"][..., 0]
    assert float(mine.advantage_norm.count) == int(valid.sum())  # 9 of 12 rows counted


def test_float64_and_an_arrayrl_normaliser_that_adopts_torch() -> None:
    mine, theirs, params = _pair("ClipPPOLoss", "percentile", torch.float64, as_torchrl_norm=False)
    assert isinstance(mine.advantage_norm.low, np.ndarray)  # untouched NumPy zeros
    _compare(mine, theirs, params, _batch(torch.float64, seed=5), rtol=1e-5, what="float64")
    assert isinstance(mine.advantage_norm.low, torch.Tensor)
    assert mine.advantage_norm.low.dtype == torch.float32  # as TorchRL's buffers


def test_state_dict_load_state_dict_and_to_carry_the_normaliser() -> None:
    mine, theirs, _ = _pair("ClipPPOLoss", "popart", torch.float32)
    _call(mine, _batch(torch.float32, seed=6))
    _call(theirs, _batch(torch.float32, seed=6))
    state = mine.state_dict()
    norm_keys = sorted(k for k in state if k.startswith("advantage_norm."))
    assert norm_keys == sorted(k for k in theirs.state_dict() if k.startswith("advantage_norm."))
    assert norm_keys == [
        "advantage_norm.debiasing_term",
        "advantage_norm.running_mean",
        "advantage_norm.running_mean_sq",
    ]
    for key in norm_keys:
        torch.testing.assert_close(state[key], theirs.state_dict()[key])
    fresh, _, _ = _pair("ClipPPOLoss", "popart", torch.float32)
    assert not torch.equal(fresh.advantage_norm.running_mean, mine.advantage_norm.running_mean)
    fresh.load_state_dict(state)
    for key in norm_keys:
        torch.testing.assert_close(fresh.state_dict()[key], state[key])
    with pytest.raises(ValueError, match=r"advantage_norm\.running_mean"):
        fresh.load_state_dict({**state, "advantage_norm.running_mean": torch.zeros(2)})


def test_normalize_advantage_and_advantage_norm_are_mutually_exclusive() -> None:
    actor, critic = _networks(torch.float32)
    with pytest.raises(ValueError) as theirs:
        tro.ClipPPOLoss(
            actor, critic, advantage_norm=tm.PopArtValueNorm(), normalize_advantage=True
        )
    with pytest.raises(ValueError) as mine:
        aro.ClipPPOLoss(
            actor, critic, advantage_norm=avn.PopArtValueNorm(), normalize_advantage=True
        )
    assert str(mine.value) == str(theirs.value)
    with pytest.raises(TypeError, match="advantage_norm must be an arrayrl ValueNorm"):
        aro.ClipPPOLoss(actor, critic, advantage_norm="popart")


def test_a_loss_without_advantage_norm_has_no_state_of_it() -> None:
    actor, critic = _networks(torch.float32)
    loss = aro.A2CLoss(actor, critic)
    assert loss.advantage_norm is None
    assert not any(k.startswith("advantage_norm") for k in loss.state_dict())


def _arrayrl_loss(loss_name: str):
    from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential
    from arrayrl.modules.actors import ProbabilisticActor, ValueOperator
    from arrayrl.modules.distributions import IndependentNormal

    net = DictModule(
        Sequential(MLP(OBS, 2 * ACT, [8], seed=1), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    actor = ProbabilisticActor(
        net, in_keys=["loc", "scale"], distribution_class=IndependentNormal, return_log_prob=True
    )
    critic = ValueOperator(MLP(OBS, 1, [8], seed=2), in_keys=["observation"])
    loss = getattr(aro, loss_name)(
        actor, critic, advantage_norm=avn.PercentileValueNorm(rate=0.5, min_scale=0.1)
    )
    loss.make_value_estimator("gae", gamma=0.9, lmbda=0.8)
    return loss


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_every_backend_computes_the_same_and_to_moves_the_normaliser(loss_name) -> None:
    """NumPy (the reference), array_api_strict and torch, from the same initial state."""
    from arrayrl.backends import backend_of

    from arrayrl.data import ArrayDict

    host = _batch(torch.float32, seed=7, mask=True)
    batch = ArrayDict(
        {k: v.numpy() for k, v in host.items(include_nested=True, leaves_only=True)}, [B, T]
    )
    results = {}
    for backend in ("numpy", "array_api_strict", "torch"):
        if backend != "numpy":
            pytest.importorskip(backend)
        loss = _arrayrl_loss(loss_name).to(backend)
        out = loss(batch.to(backend))
        state = loss.advantage_norm.state_dict()
        assert backend_of(state["low"]).name == backend  # moved with the loss
        results[backend] = (
            {k: np.asarray(v.detach() if hasattr(v, "detach") else v) for k, v in out.items()},
            {k: np.asarray(v.cpu() if hasattr(v, "cpu") else v) for k, v in state.items()},
        )
    reference_out, reference_state = results["numpy"]
    assert reference_state["high"][0] > reference_state["low"][0] + 0.1  # the scale is not floored
    for backend, (out, state) in results.items():
        for key, value in reference_out.items():
            np.testing.assert_allclose(
                out[key], value, rtol=2e-5, atol=1e-6, err_msg=f"{backend}: {key}"
            )
        for key, value in reference_state.items():
            np.testing.assert_allclose(state[key], value, rtol=2e-5, err_msg=f"{backend}: {key}")


def test_train_and_eval_follow_nn_module() -> None:
    actor, critic = _networks(torch.float32)
    loss = aro.ClipPPOLoss(actor, critic, advantage_norm=avn.RunningValueNorm())
    layers = [m for net in (actor, critic) for m in net.modules() if m._parameters]
    assert loss.training and all(m.training for m in layers)
    assert loss.eval() is loss
    assert not loss.training and not any(m.training for m in layers)  # passed on
    assert loss.train() is loss and loss.training and all(m.training for m in layers)
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        loss.train("yes")


def test_a_normaliser_of_another_value_shape_is_refused_not_broadcast() -> None:
    actor, critic = _networks(torch.float32)
    loss = aro.ClipPPOLoss(actor, critic, advantage_norm=avn.PopArtValueNorm(shape=2))
    with pytest.raises(ValueError, match=r"shape=\(2,\) but got a advantage with trailing"):
        _call(loss, _batch(torch.float32, advantage=True))


def test_a_fully_masked_batch_leaves_the_statistics_alone() -> None:
    """Deviation ``torchrl-value-norm-empty-batch``: TorchRL folds the NaN mean of the
    empty selection into its statistics for good; arrayrl keeps them as they were."""
    mine, theirs, _ = _pair("A2CLoss", "running", torch.float32)
    _call(mine, _batch(torch.float32, seed=8))
    _call(theirs, _batch(torch.float32, seed=8))
    before = _state(mine)
    batch = _batch(torch.float32, seed=9, mask=True)
    batch["collector", "mask"] = torch.zeros(B, T, 1, dtype=torch.bool)
    _call(mine, batch)
    _call(theirs, batch)
    assert _unchanged(mine, before)
    assert torch.isnan(theirs.advantage_norm.mean).all()
