"""RLax as a conformance framework: every implementation through ``check`` on JAX.

Skipped where RLax is not installed (CI): ``pip install rlax`` to run it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rlax", reason="rlax is not installed (pip install rlax)")

from arrayrl.conformance.check import check
from arrayrl.conformance.frameworks import framework
from arrayrl.conformance.frameworks import rlax as rlax_framework

FRAMEWORK = framework("rlax")
IMPLEMENTATIONS = {impl.name: impl for impl in FRAMEWORK.implementations()}


@pytest.fixture(scope="module")
def reports() -> dict:
    return {
        name: check(impl.fn, impl.spec, backend="jax") for name, impl in IMPLEMENTATIONS.items()
    }


def test_framework_is_found_and_versioned() -> None:
    import jax
    import rlax

    assert FRAMEWORK is rlax_framework.FRAMEWORK
    assert FRAMEWORK.missing() is None
    assert FRAMEWORK.version() == f"rlax {rlax.__version__} (jax {jax.__version__})"
    assert {impl.backend for impl in IMPLEMENTATIONS.values()} == {"jax"}
    assert all(impl.note for impl in IMPLEMENTATIONS.values())


def test_missing_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rlax" else real(name, *a)
    )
    assert FRAMEWORK.missing() == "rlax is not installed (pip install rlax)"


def test_module_import_imports_neither_rlax_nor_jax() -> None:
    code = (
        "import sys, arrayrl.conformance.frameworks.rlax as m; "
        "assert m.FRAMEWORK.name == 'rlax'; "
        "print(sorted(k for k in ('jax', 'rlax', 'chex') if k in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_implementation_passes_except_its_disagreements(name: str, reports: dict) -> None:
    impl, report = IMPLEMENTATIONS[name], reports[name]
    assert report.skipped is None
    uncovered = [
        f"{r.case} {r.dtype}: {r.explanation}"
        for r in report.failures
        if not any(d.covers(r.case) for d in impl.disagreements)
    ]
    assert uncovered == []
    assert sum(r.passed for r in report.results) >= 42
    # a disagreement is not a blanket: every case it covers does differ
    for r in report.results:
        if any(d.covers(r.case) for d in impl.disagreements):
            assert r.status == "fail", (r.case, r.dtype)


def test_counts(reports: dict) -> None:
    def counts(name: str) -> tuple[int, int, int]:
        results = reports[name].results
        return tuple(
            sum(r.status == s for r in results) for s in ("pass", "fail", "not expressible")
        )

    assert counts("rlax.truncated_generalized_advantage_estimation") == (52, 0, 34)
    assert counts("rlax.lambda_returns") == (52, 2, 0)
    assert counts("rlax.discounted_returns") == (52, 2, 0)
    assert counts("rlax.td_learning") == (42, 0, 0)
    assert counts("rlax.vtrace_td_error_and_advantage") == (52, 2, 0)


def test_gae_not_expressible_only_with_truncations(reports: dict) -> None:
    report = reports["rlax.truncated_generalized_advantage_estimation"]
    for r in report.results:
        if r.status == "not expressible":
            assert "truncation" in r.explanation
            assert "terminations_only" not in r.case
            assert "none_done" not in r.case
    reruns = [r for r in report.results if r.case.endswith("+terminations_only")]
    assert reruns and all(r.passed for r in reruns)


def test_truncation_ends_the_trajectory_by_hand() -> None:
    """3 steps, truncated at step 0: G_0 bootstraps from V(s'_0), then a new trajectory."""
    gamma, lmbda = 0.9, 0.5
    nxt = np.array([2.0, -1.0, 4.0]).reshape(1, 3, 1)
    reward = np.array([1.0, 0.5, -1.0]).reshape(1, 3, 1)
    done = np.array([True, False, False]).reshape(1, 3, 1)
    terminated = np.zeros_like(done)
    g2 = -1.0 + 0.9 * 4.0
    g1 = 0.5 + 0.9 * ((1 - lmbda) * -1.0 + lmbda * g2)
    g0 = 1.0 + 0.9 * 2.0
    out = rlax_framework.td_lambda_return(gamma, lmbda, nxt, reward, done, terminated, None)
    np.testing.assert_allclose(np.asarray(out).ravel(), [g0, g1, g2], rtol=1e-12)
    # and a termination there cuts the bootstrap as well
    out = rlax_framework.td_lambda_return(gamma, lmbda, nxt, reward, done, done, None)
    np.testing.assert_allclose(np.asarray(out).ravel(), [1.0, g1, g2], rtol=1e-12)


def test_rolling_discounts_reproducer_by_hand() -> None:
    ours, reference = rlax_framework.reproduce_rolling_discounts()
    # γ = (0.9, 0.5, 0.8), λ = 0.9, V(s') = (1, 2, 3), r = 1: RLax rolls the discounts
    g2 = 1 + 0.8 * 3
    g1 = 1 + 0.5 * (0.1 * 2 + 0.9 * g2)
    assert ours == pytest.approx(1 + 0.9 * (0.1 * 1 + 0.9 * g1), abs=1e-12)
    # TorchRL's rolling_gamma=False: start step 0 uses γ_0 = 0.9 for the whole tail
    h2 = 1 + 0.9 * 3
    h1 = 1 + 0.9 * (0.1 * 2 + 0.9 * h2)
    assert reference == pytest.approx(1 + 0.9 * (0.1 * 1 + 0.9 * h1), abs=1e-12)
    assert abs(ours - reference) > 1.0


def test_vtrace_c_threshold_reproducer_by_hand() -> None:
    ours, reference = rlax_framework.reproduce_vtrace_c_threshold()
    rho = 1.2  # rho_thresh = 2 leaves it unclipped; c_thresh = 1.3
    delta = [rho * (1 + 0.9 * 1.0 - 0.5), rho * (0 - 0.9 * 0.5 - 1.0), rho * (2 + 1.8 + 0.5)]

    def target(c: float) -> float:
        acc = 0.0
        for d in reversed(delta):
            acc = d + 0.9 * c * acc
        return acc + 0.5

    assert ours == pytest.approx(target(1.0), abs=1e-12)  # RLax: c = min(1, ρ)
    assert reference == pytest.approx(target(1.2), abs=1e-12)  # TorchRL: min(1.3, ρ)
    assert abs(ours - reference) > 1.0


def test_disagreements_are_documented() -> None:
    for d in FRAMEWORK.disagreements:
        assert d.key.startswith("rlax-")
        module, _, function = d.reproducer.rpartition(".")
        rlax_value, reference = getattr(importlib.import_module(module), function)()
        assert rlax_value != pytest.approx(reference)
    keys = {d.key for impl in IMPLEMENTATIONS.values() for d in impl.disagreements}
    assert keys == {d.key for d in FRAMEWORK.disagreements}


def test_vtrace_refuses_array_rho_thresh() -> None:
    shape = (1, 3, 1)
    zeros, done = np.zeros(shape), np.zeros(shape, bool)
    with pytest.raises(TypeError, match="rho_thresh"):
        rlax_framework.vtrace(
            0.9, zeros, zeros, zeros, zeros, zeros, done, done, np.ones(shape), 1.0
        )


# -- loss terms: arrayrl's losses against RLax's on one small batch ---------------------
OBS, N_ACT, ATOMS, B = 3, 4, 5, 6


def _linear(out: int, rng: np.random.Generator) -> tuple:
    from arrayrl.modules import MLP

    layer = MLP(OBS, out, [], dtype=np.float64)
    weight, bias = rng.standard_normal((out, OBS)), rng.standard_normal(out)
    layer.params = {"0": {"weight": weight, "bias": bias}}
    return layer, lambda obs: obs @ weight.T + bias


def _transitions(rng: np.random.Generator, action: np.ndarray) -> tuple:
    from arrayrl.data import ArrayDict

    obs, nxt = rng.standard_normal((B, OBS)), rng.standard_normal((B, OBS))
    reward = 2 * rng.standard_normal((B, 1))
    term = rng.random((B, 1)) < 0.4
    batch = ArrayDict(
        {
            "observation": obs,
            "action": action,
            "next": {"observation": nxt, "reward": reward, "done": term, "terminated": term},
        },
        [B],
    )
    return batch, obs, nxt, reward[:, 0], 0.9 * (1 - term[:, 0])


@pytest.mark.parametrize("double", [False, True])
def test_dqn_loss_is_the_mean_square_of_rlax_q_learning(double: bool) -> None:
    import jax
    import rlax

    from arrayrl.objectives.dqn import DQNLoss

    rng = np.random.default_rng(0)
    layer, q = _linear(N_ACT, rng)
    loss = DQNLoss(layer, action_space="categorical", delay_value=double, double_dqn=double)
    loss.make_value_estimator("td0", gamma=0.9)
    action = rng.integers(0, N_ACT, B)
    batch, obs, nxt, reward, discount = _transitions(rng, action)
    out = loss(batch)
    if double:  # the target network starts as a copy: the selector and evaluator agree
        td = jax.vmap(rlax.double_q_learning)(q(obs), action, reward, discount, q(nxt), q(nxt))
    else:
        td = jax.vmap(rlax.q_learning)(q(obs), action, reward, discount, q(nxt))
    np.testing.assert_allclose(out["loss"], np.mean(np.asarray(td) ** 2), rtol=1e-12)
    assert float(out["loss"]) > 0.1


@pytest.mark.filterwarnings("ignore:Rlax categorical_cross_entropy:PendingDeprecationWarning")
def test_c51_loss_is_rlax_categorical_q_learning() -> None:
    import jax
    import rlax
    from arrayrl.backends import backend_of

    from arrayrl.modules import DistributionalQValueActor, Layer, Sequential
    from arrayrl.objectives.dqn import DistributionalDQNLoss

    class Atoms(Layer):
        def apply(self, params, x):
            return backend_of(x).xp.reshape(x, (*x.shape[:-1], ATOMS, N_ACT))

    rng = np.random.default_rng(1)
    layer, net = _linear(ATOMS * N_ACT, rng)
    support = np.linspace(-2.0, 2.0, ATOMS)
    actor = DistributionalQValueActor(
        Sequential(layer, Atoms()), support=support, action_space="categorical"
    )
    loss = DistributionalDQNLoss(actor, gamma=0.9, delay_value=False)
    action = rng.integers(0, N_ACT, B)
    batch, obs, nxt, reward, discount = _transitions(rng, action)
    out = loss(batch)

    def logits(o: np.ndarray) -> np.ndarray:  # RLax: [actions, atoms]
        return np.swapaxes(net(o).reshape(B, ATOMS, N_ACT), -1, -2)

    cross_entropy = jax.vmap(rlax.categorical_q_learning, in_axes=(None, 0, 0, 0, 0, None, 0))(
        support, logits(obs), action, reward, discount, support, logits(nxt)
    )
    np.testing.assert_allclose(out["loss"], np.mean(np.asarray(cross_entropy)), rtol=1e-12)
    assert float(out["loss"]) > 0.1


def test_categorical_projection_is_rlax_l2_projection() -> None:
    import jax
    import rlax

    from arrayrl.objectives.dqn import categorical_projection

    rng = np.random.default_rng(2)
    support = np.linspace(-1.0, 3.0, 7)
    probs = rng.dirichlet(np.ones(7), size=B)
    reward = np.array([0.3, -2.0, 5.0, 0.0, 1.1, -0.4])  # some fall off the support
    discount = np.array([0.9, 0.9, 0.0, 0.5, 0.9, 1.0])
    ours = categorical_projection(probs, reward[:, None], discount[:, None], support)
    theirs = jax.vmap(rlax.categorical_l2_project, in_axes=(0, 0, None))(
        reward[:, None] + discount[:, None] * support, probs, support
    )
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-12)


def test_clip_ppo_objective_is_rlax_clipped_surrogate() -> None:
    import rlax

    from arrayrl.data import ArrayDict
    from arrayrl.modules import MLP, DictModule
    from arrayrl.modules import distributions as dists
    from arrayrl.modules.actors import ProbabilisticActor, ValueOperator
    from arrayrl.objectives import ClipPPOLoss

    rng = np.random.default_rng(3)
    layer, net = _linear(N_ACT, rng)
    actor = ProbabilisticActor(
        DictModule(layer, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=dists.Categorical,
    )
    critic = ValueOperator(MLP(OBS, 1, [], dtype=np.float64, seed=3), in_keys=["observation"])
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2)
    obs, action = rng.standard_normal((8, OBS)), rng.integers(0, N_ACT, 8)
    logits = net(obs)
    log_prob = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    new = log_prob[np.arange(8), action]
    old = new + 0.4 * rng.standard_normal(8)
    advantage = rng.standard_normal((8, 1))
    batch = ArrayDict(
        {
            "observation": obs,
            "action": action,
            "action_log_prob": old,
            "advantage": advantage,
            "value_target": advantage,
        },
        [8],
    )
    out = loss(batch)
    theirs = rlax.clipped_surrogate_pg_loss(np.exp(new - old), advantage[:, 0], 0.2)
    np.testing.assert_allclose(out["loss_objective"], float(theirs), rtol=1e-12)
    assert 0 < float(out["clip_fraction"]) < 1  # both sides of the clip are exercised
