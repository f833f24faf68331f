"""The PPO family end to end: the seed's example with arrayrl imports, NumPy evaluation
of a torch-trained loss (also in a process without torch), key handling, bad input and
KL-PEN's β schedule against TorchRL. Numbers and gradients per configuration against
TorchRL are in the conformance suite (conformance/loss_cases.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from arrayrl.data import ArrayDict
from arrayrl.modules import MLP, DictModule, NormalParamExtractor, Sequential
from arrayrl.modules.actors import ProbabilisticActor, ValueOperator
from arrayrl.objectives import ClipPPOLoss, KLPENPPOLoss, PPOLoss, ValueEstimators

OBS, ACT, B, T = 4, 2, 3, 5


def _actor(backend: str = "numpy"):
    from arrayrl.modules.distributions import TanhNormal

    net = DictModule(
        Sequential(MLP(OBS, 2 * ACT, [16], seed=1, backend=backend), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    return ProbabilisticActor(
        net,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )


def _critic(backend: str = "numpy") -> ValueOperator:
    return ValueOperator(MLP(OBS, 1, [16], seed=2, backend=backend), in_keys=["observation"])


def _rollout(seed: int = 0) -> ArrayDict:
    """A [B, T] batch as a collector writes it (float32, TorchRL's layout)."""
    from arrayrl.random import make_generator

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((B, T + 1, OBS)).astype(np.float32)
    done = np.zeros((B, T, 1), bool)
    done[1, 2] = True
    batch = ArrayDict(
        {
            "observation": obs[:, :-1],
            "next": {
                "observation": obs[:, 1:],
                "reward": rng.standard_normal((B, T, 1)).astype(np.float32),
                "done": done,
                "terminated": done.copy(),
            },
        },
        [B, T],
    )
    actor = _actor()
    return actor(batch, rng=make_generator(seed))


def _seed_example_losses(backend: str):
    """The seed's PPO example with arrayrl's imports, on ``backend``."""
    from arrayrl.objectives.value import GAE

    actor, critic = _actor(backend), _critic(backend)
    loss_fn = ClipPPOLoss(
        actor_network=actor,
        critic_network=critic,
        clip_epsilon=0.2,
        entropy_bonus=True,
        entropy_coeff=0.01,
        critic_coeff=0.5,
        normalize_advantage=True,
    )
    loss_fn.make_value_estimator(ValueEstimators.GAE, gamma=0.99, lmbda=0.95)
    advantage_fn = GAE(value_network=critic, gamma=0.99, lmbda=0.95)
    return loss_fn, advantage_fn


def test_seed_example_trains_on_torch_and_evaluates_on_numpy() -> None:
    torch = pytest.importorskip("torch")
    loss_fn, advantage_fn = _seed_example_losses("torch")
    batch = _rollout().to("torch")
    with torch.no_grad():
        batch = advantage_fn(batch)
    assert {"advantage", "value_target"} <= set(batch.keys())
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=3e-4)
    losses = loss_fn(batch)
    total = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
    optimizer.zero_grad()
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss_fn.parameters())
    torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 0.5)
    optimizer.step()

    deterministic = ("loss_objective", "loss_critic", "clip_fraction", "kl_approx", "ESS")
    on_torch = loss_fn(batch)
    loss_fn.to("numpy")
    on_numpy = loss_fn(batch.to("numpy"))
    for key in deterministic:
        np.testing.assert_allclose(
            on_numpy[key], on_torch[key].detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=key
        )


def test_numpy_evaluation_runs_without_torch_in_the_process(tmp_path) -> None:
    torch = pytest.importorskip("torch")
    loss_fn, _ = _seed_example_losses("torch")
    with torch.no_grad():
        for p in loss_fn.parameters():
            p.add_(0.01)  # a "trained" state that differs from the seeds
    state = {k: np.asarray(v.detach().numpy()) for k, v in loss_fn.state_dict().items()}
    np.savez(tmp_path / "state.npz", **state)
    batch = _rollout()
    expected = loss_fn(batch.to("torch"))["loss_critic"].item()
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_ppo import _seed_example_losses, _rollout
        loss_fn, _ = _seed_example_losses("numpy")
        loaded = np.load({str(tmp_path / "state.npz")!r})
        loss_fn.load_state_dict({{k: loaded[k] for k in loaded.files}})
        value = float(loss_fn(_rollout())["loss_critic"])
        assert "torch" not in sys.modules, "torch was imported"
        print(value)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip()) == pytest.approx(expected, rel=2e-5)


def test_out_keys_follow_torchrl() -> None:
    pytest.importorskip("torch")
    loss = ClipPPOLoss(_actor(), _critic(), clip_value=0.5)
    out = loss(_with_advantage(_rollout()))
    assert loss.out_keys == [
        "loss_objective",
        "clip_fraction",
        "entropy",
        "loss_entropy",
        "loss_critic",
        "value_clip_fraction",
        "ESS",
        "kl_approx",
        "max_ratio",
        "mean_ratio",
    ]
    assert set(loss.out_keys) | {"explained_variance"} == set(out.keys())
    assert PPOLoss(_actor(), _critic()).out_keys[:3] == [
        "loss_objective",
        "entropy",
        "loss_entropy",
    ]
    assert KLPENPPOLoss(_actor(), _critic()).out_keys[:2] == ["loss_objective", "kl"]
    assert "loss_critic" not in ClipPPOLoss(_actor(), critic_coeff=None).out_keys


def _with_advantage(batch: ArrayDict) -> ArrayDict:
    rng = np.random.default_rng(9)
    batch = batch.clone(recurse=False)
    batch.set("advantage", rng.standard_normal((B, T, 1)).astype(np.float32))
    batch.set("value_target", rng.standard_normal((B, T, 1)).astype(np.float32))
    batch.set("state_value", rng.standard_normal((B, T, 1)).astype(np.float32))
    return batch


def test_value_estimator_choice_by_enum_or_name() -> None:
    loss = ClipPPOLoss(_actor(), _critic())
    assert type(loss.value_estimator).__name__ == "GAE"
    loss.make_value_estimator("td0", gamma=0.9)
    assert type(loss.value_estimator).__name__ == "TD0Estimator"
    loss.make_value_estimator(ValueEstimators.TDLambda, lmbda=0.5)
    assert type(loss.value_estimator).__name__ == "TDLambdaEstimator"
    with pytest.raises(ValueError, match="unknown value estimator"):
        loss.make_value_estimator("montecarlo")


def test_missing_key_names_it_and_points_to_set_keys() -> None:
    batch = _with_advantage(_rollout()).exclude("action_log_prob")
    with pytest.raises(KeyError, match=r"action_log_prob.*set_keys"):
        ClipPPOLoss(_actor(), _critic())(batch)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_epsilon": 0.0}, "clip_epsilon"),
        ({"clip_epsilon": -0.1}, "clip_epsilon"),
        ({"clip_epsilon": (0.2, 0.0)}, "clip_epsilon_high"),
        ({"entropy_coeff": -0.01}, "entropy_coeff"),
        ({"loss_critic_type": "huber"}, "loss_critic_type"),
        ({"samples_mc_entropy": 0}, "samples_mc_entropy"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClipPPOLoss(_actor(), _critic(), **kwargs)


def test_scheduled_coefficients_are_checked() -> None:
    loss = ClipPPOLoss(_actor(), _critic())
    loss.entropy_coeff = 0.02
    assert loss.entropy_coeff == 0.02 and loss.state_dict()["entropy_coeff"] == 0.02
    with pytest.raises(ValueError, match="entropy_coeff"):
        loss.entropy_coeff = -1
    with pytest.raises(AttributeError, match="symmetric"):
        loss.clip_epsilon_low = 0.1


def test_parameters_and_batch_on_different_backends_raise() -> None:
    pytest.importorskip("torch")
    loss = ClipPPOLoss(_actor("torch"), _critic("torch"))
    with pytest.raises(TypeError, match="different backends"):
        loss(_with_advantage(_rollout()))


def test_gamma_and_constructor_keys_raise_as_in_torchrl() -> None:
    with pytest.raises(TypeError, match="make_value_estimator"):
        ClipPPOLoss(_actor(), _critic(), gamma=0.9)
    with pytest.raises(RuntimeError, match="set_keys"):
        ClipPPOLoss(_actor(), _critic(), advantage_key="adv")


def test_klpen_beta_follows_the_adaptive_rule() -> None:
    loss = KLPENPPOLoss(_actor(), _critic(), dtarg=0.01, beta=1.0, increment=2.0, decrement=0.5)
    batch = _with_advantage(_rollout())
    out = loss(batch)  # the actor has not moved: KL = 0 < dtarg / 1.5, so beta halves
    np.testing.assert_allclose(out["kl"], 0.0, atol=1e-6)
    assert out["kl"].shape == (B, T, 1)
    assert loss.beta == 0.5
    weight = loss.actor_network_params["module"]["module"]["0"]["0"]["weight"]
    weight += 1.0  # a large policy change: KL > 1.5 dtarg, so beta doubles
    assert float(np.mean(loss(batch)["kl"])) > 0.015
    assert loss.beta == 1.0
    loss.reset()
    assert loss.beta == 1.0
    loss.beta = 0.3
    assert loss.state_dict()["beta"] == pytest.approx(0.3)


@pytest.mark.parametrize("lead", [(B, T), (B, T, 3)], ids=["B,T", "B,T,agents"])
def test_ess_and_explained_variance_reduce_over_every_batch_dim(lead) -> None:
    """A ``[B, T]`` or ``[B, T, agents]`` batch gives a scalar ``ESS`` and an
    ``explained_variance`` of shape ``[1]``, equal to the float64 NumPy formulas over the
    flattened batch (TorchRL 0.14.1 reduces dim 0 only: deviation
    ``torchrl-ppo-diagnostics-first-dim``)."""
    from arrayrl.modules.distributions import TanhNormal

    rng = np.random.default_rng(11)
    obs = rng.standard_normal((*lead, OBS))
    action = np.tanh(rng.standard_normal((*lead, ACT)))
    batch = ArrayDict(
        {
            "observation": obs,
            "action": action,
            "action_log_prob": rng.standard_normal(lead) - 1.0,
            "advantage": rng.standard_normal((*lead, 1)),
            "value_target": rng.standard_normal((*lead, 1)),
        },
        list(lead),
    )
    actor_net = DictModule(
        Sequential(MLP(OBS, 2 * ACT, [16], seed=1, dtype=np.float64), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    actor = ProbabilisticActor(
        actor_net,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic = ValueOperator(MLP(OBS, 1, [16], seed=2, dtype=np.float64), in_keys=["observation"])
    out = ClipPPOLoss(actor, critic, entropy_bonus=False)(batch)
    assert out["ESS"].shape == () and out["explained_variance"].shape == (1,)

    # the flat computation, by hand in float64
    log_w = actor.get_dist(batch.clone(recurse=False)).log_prob(action) - batch["action_log_prob"]
    w = np.exp(log_w.reshape(-1))
    np.testing.assert_allclose(out["ESS"], w.sum() ** 2 / (w**2).sum() / w.size, rtol=1e-10)
    value = critic(batch.clone(recurse=False))["state_value"].reshape(-1)
    target = batch["value_target"].reshape(-1)
    explained = 1.0 - np.var(target - value) / (np.var(target) + np.finfo(np.float64).eps)
    np.testing.assert_allclose(out["explained_variance"], [explained], rtol=1e-10)
