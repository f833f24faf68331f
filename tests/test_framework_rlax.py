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
from arrayrl.conformance.terms import TERMS, TermSpec

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
    if isinstance(impl.spec, TermSpec):  # a loss term: 2 to 4 cases, two dtypes
        assert len(report.results) >= 4
    else:
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
    assert counts("rlax.clipped_surrogate_pg_loss") == (8, 0, 0)
    assert counts("rlax.q_learning") == (6, 0, 0)
    assert counts("rlax.l2_loss(q_learning)") == (0, 6, 0)
    assert counts("rlax.huber_loss(q_learning)") == (6, 0, 0)
    assert counts("rlax.double_q_learning") == (4, 0, 0)
    assert counts("rlax.categorical_double_q_learning") == (6, 0, 0)


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


# -- loss terms as check targets: RLax's per-sample functions, vmapped ------------------
TERM_IMPLEMENTATIONS = {
    name: impl for name, impl in IMPLEMENTATIONS.items() if isinstance(impl.spec, TermSpec)
}


def test_term_implementations_cover_every_rlax_loss_term() -> None:
    assert {impl.spec.function for impl in TERM_IMPLEMENTATIONS.values()} == {
        "clipped_surrogate",
        "q_learning",
        "double_q_learning",
        "categorical_double_q_learning",
    }
    for impl in TERM_IMPLEMENTATIONS.values():
        assert "discount_t = gamma * (1 - terminated)" in impl.note or "clip" in impl.note
        assert impl.spec.outputs is not None  # RLax computes some of the outputs only


@pytest.mark.parametrize("name", sorted(TERM_IMPLEMENTATIONS))
def test_term_implementation_runs_every_case_in_both_dtypes(name: str, reports: dict) -> None:
    impl, report = TERM_IMPLEMENTATIONS[name], reports[name]
    expected = {(c, d) for c in TERMS[impl.spec.function].cases for d in ("float64", "float32")}
    seen = {(r.case.split("[", 1)[1][:-1], r.dtype) for r in report.results}
    assert seen == expected
    for r in report.results:
        if impl.disagreements:
            assert r.status == "fail" and r.scaled_error == pytest.approx(0.5, rel=1e-6)
        else:
            assert r.passed, str(r)


def test_l2_loss_half_reproducer_by_hand() -> None:
    # Q(s, 0) = 1, r = 3, terminated: δ = 3 - 1 = 2; RLax ½ δ² = 2, the reference δ² = 4
    assert rlax_framework.reproduce_l2_loss_half() == (2.0, 4.0)
    assert rlax_framework.L2_HALF.reproducer.endswith(".reproduce_l2_loss_half")


def _against(impl) -> list:
    from arrayrl.conformance.against import AgainstReport, _run_implementation

    report = AgainstReport()
    _run_implementation(report, "rlax", impl, ("float64",))
    return report.cells


def test_l2_cells_are_known_and_would_fail_without_the_disagreement() -> None:
    import dataclasses

    impl = IMPLEMENTATIONS["rlax.l2_loss(q_learning)"]
    cells = _against(impl)
    assert cells and {c.status for c in cells} == {"known"}
    assert {c.disagreement for c in cells} == {"rlax-l2-loss-half"}
    planted = _against(dataclasses.replace(impl, disagreements=()))
    assert {c.status for c in planted} == {"fail"}


def test_a_wrong_mapping_would_fail_the_cell() -> None:
    """Planted mistakes in the wrapper (not in RLax) are caught and explained."""
    import jax.numpy as jnp

    def discount_ignores_termination(q, a, r, terminated, next_q, gamma):
        return rlax_framework.q_learning(q, a, r, jnp.zeros_like(terminated), next_q, gamma)

    spec = TermSpec("q_learning", outputs=("td_error",))
    report = check(discount_ignores_termination, spec, backend="jax", dtypes=("float64",))
    assert not report.passed
    assert all("does not cut the bootstrap" in r.explanation for r in report.results)

    def selector_swapped(q, a, r, terminated, next_q, selector, gamma):
        return rlax_framework.double_q_learning(q, a, r, terminated, selector, next_q, gamma)

    spec = TermSpec("double_q_learning", outputs=("td_error",))
    report = check(selector_swapped, spec, backend="jax", dtypes=("float64",))
    assert not report.passed
    assert all("swapped" in r.explanation for r in report.results)


def test_clipped_surrogate_is_the_mean_over_the_flattened_batch() -> None:
    import jax.numpy as jnp

    log_prob = jnp.log(jnp.array([[1.5, 0.5], [1.1, 0.9]]))  # ratios, prev_log_prob = 0
    advantage = jnp.array([[1.0, -1.0], [2.0, -0.5]])
    out = rlax_framework.clipped_surrogate_pg_loss(log_prob, jnp.zeros((2, 2)), advantage, 0.2)
    # min(rA, clip(r)A): r = 1.5 → 1.2·1 (A > 0), r = 0.5 → 0.8·(-1) (A < 0), 1.1 and 0.9 inside
    expected = -np.mean([1.2 * 1.0, 0.8 * -1.0, 1.1 * 2.0, 0.9 * -0.5])
    assert float(out) == pytest.approx(expected, abs=1e-12)


def test_q_learning_keeps_the_batch_shape() -> None:
    import jax.numpy as jnp

    q = jnp.arange(12.0).reshape(2, 3, 2)
    action = jnp.array([[0, 1, 0], [1, 1, 0]])
    reward = jnp.ones((2, 3))
    terminated = jnp.array([[False, True, False], [False, False, True]])
    out = np.asarray(rlax_framework.q_learning(q, action, reward, terminated, q + 1, 0.5))
    chosen = np.take_along_axis(np.asarray(q), np.asarray(action)[..., None], -1)[..., 0]
    best = np.asarray(q).max(-1) + 1
    expected = 1 + 0.5 * best * ~np.asarray(terminated) - chosen
    np.testing.assert_allclose(out, expected, rtol=1e-12)
