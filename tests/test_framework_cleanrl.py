"""CleanRL's ppo.py GAE and loss terms (conformance/frameworks/cleanrl.py) through check."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

import arrayrl.conformance.frameworks.cleanrl as cleanrl
import numpy as np
import pytest
from arrayrl.conformance.against import AgainstReport, _run_implementation
from arrayrl.conformance.cases import Case, all_cases
from arrayrl.conformance.check import check
from arrayrl.conformance.frameworks import framework
from arrayrl.conformance.frameworks.cleanrl import (
    NO_TRUNCATION_BOOTSTRAP,
    cleanrl_gae,
    fold_into_reward,
    gae_time_major,
    has_truncation,
    reproduce_no_truncation_bootstrap,
)
from arrayrl.conformance.terms import TERMS, TermCase, TermSpec

GAE = "generalized_advantage_estimate"


@dataclass(frozen=True)
class TerminationsOnly(Case):
    """A conformance case with every ``done`` a termination (no truncation)."""

    def build(self, seed: int, dtype: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super().build(seed, dtype)
        named = dict(zip(self.signature.args, args, strict=True))
        named["terminated"] = named["done"].copy()
        return tuple(named[n] for n in self.signature.args), kwargs


def _gae_cases() -> list[Case]:
    return [c for c in all_cases() if c.function == GAE and not c.per_step_gamma]


@pytest.fixture(scope="module")
def implementation():
    fw = framework("cleanrl")
    assert fw.missing() is None
    (impl,) = [i for i in fw.implementations() if i.name == "cleanrl.ppo.gae"]
    return impl


@pytest.fixture(scope="module")
def report(implementation):
    return check(implementation.fn, implementation.spec, backend=implementation.backend)


def test_framework_fields():
    fw = framework("cleanrl")
    assert fw.pip == ""
    assert "ppo.py" in fw.version() and "fe8d8a03" in fw.version()
    assert {d.key for d in fw.disagreements} == {
        "cleanrl-no-truncation-bootstrap",
        "cleanrl-scalar-gamma-lambda",
        "cleanrl-sac-two-critics",
        "cleanrl-sac-qf-loss-no-half",
        "cleanrl-sac-alpha-loss-uses-alpha",
        "cleanrl-c51-selects-by-target-mean",
        "cleanrl-c51-clamped-log",
    }
    used = {d.key for impl in fw.implementations() for d in impl.disagreements}
    assert used == {d.key for d in fw.disagreements}


def test_every_failure_is_a_declared_disagreement(report, implementation):
    for result in report.results:
        covered = [d.key for d in implementation.disagreements if d.covers(result.case)]
        if result.status != "pass":
            assert covered, f"{result.case} {result.dtype}: {result.explanation}"
    passed = {r.case for r in report.results if r.passed}
    assert {c.name for c in _gae_cases() if c.pattern == "none_done"} <= passed


def test_passes_on_every_case_without_truncation(report):
    for result in report.results:
        if not result.case.endswith("[per_step_gamma]") and not has_truncation(result.case):
            assert result.passed, str(result)


def test_truncation_cases_fail_as_truncation_treated_as_termination(report):
    truncating = [r for r in report.results if has_truncation(r.case) and "per_step" not in r.case]
    assert len(truncating) >= 30
    for result in truncating:
        assert result.status == "fail"
        assert "does not bootstrap at truncation" in result.explanation


def test_matches_reference_when_every_done_is_a_termination(implementation):
    cases = [
        TerminationsOnly(c.name + "+terms", GAE, c.shape, c.time_dim, c.pattern)
        for c in _gae_cases()
    ]
    out = check(implementation.fn, implementation.spec, cases=cases)
    assert out.passed, str(out)
    assert len(out.results) == 2 * len(cases)


def test_per_step_gamma_is_refused():
    one = np.zeros((3, 2))
    with pytest.raises(TypeError, match="per-step"):
        gae_time_major(np.full((3, 2), 0.9), 0.9, one, one, one, one > 0, one > 0)


def test_cleanrl_gae_by_hand():
    rewards = np.array([[1.0], [2.0]])
    values = np.array([[0.5], [0.25]])
    # γ = λ = 0.5, next_value = 1: δ1 = 2 + 0.5 - 0.25, δ0 = 1 + 0.125 - 0.5
    adv, ret = cleanrl_gae(rewards, values, np.zeros((2, 1)), np.ones(1), np.zeros(1), 0.5, 0.5)
    np.testing.assert_allclose(adv[:, 0], [0.625 + 0.25 * 2.25, 2.25])
    np.testing.assert_allclose(ret[:, 0], [0.625 + 0.25 * 2.25 + 0.5, 2.5])
    # observation 1 starts a new episode: step 0 is cut (no bootstrap, no trace)
    adv, _ = cleanrl_gae(
        rewards, values, np.array([[0.0], [1.0]]), np.ones(1), np.ones(1), 0.5, 0.5
    )
    np.testing.assert_allclose(adv[:, 0], [0.5, 1.75])


def test_fold_is_zero_on_a_consistent_trajectory():
    rng = np.random.default_rng(0)
    value, reward = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    done = rng.random((6, 3)) < 0.3
    terminated = done & (rng.random((6, 3)) < 0.5)
    nxt = np.concatenate([value[1:], rng.standard_normal((1, 3))])
    nxt = np.where(done, rng.standard_normal((6, 3)), nxt)  # final observations differ
    folded = fold_into_reward(0.9, value, nxt, reward, done, terminated, bootstrap_truncation=False)
    np.testing.assert_array_equal(folded, reward)
    folded = fold_into_reward(0.9, value, nxt, reward, done, terminated, bootstrap_truncation=True)
    np.testing.assert_allclose(folded, reward + 0.9 * nxt * (done & ~terminated))


def test_reproducer_shows_the_difference():
    module, _, name = NO_TRUNCATION_BOOTSTRAP.reproducer.rpartition(".")
    assert getattr(importlib.import_module(module), name) is reproduce_no_truncation_bootstrap
    cleanrl, reference = reproduce_no_truncation_bootstrap()
    assert cleanrl == 0.0
    assert reference == pytest.approx(0.9)
    assert NO_TRUNCATION_BOOTSTRAP.upstream == "https://github.com/vwxyzjn/cleanrl/issues/198"


# -- loss terms: dqn.py, c51.py, ppo.py, sac_continuous_action.py as check targets --------
torch = pytest.importorskip("torch")

TERM_IMPLEMENTATIONS = {
    i.name: i for i in framework("cleanrl").implementations() if isinstance(i.spec, TermSpec)
}
#: (pass, known) cells of each implementation, float64 and float32
EXPECTED = {
    "cleanrl.ppo.pg_loss": (8, 0),
    "cleanrl.dqn.loss": (6, 0),
    "cleanrl.c51.loss": (2, 4),
    "cleanrl.sac_continuous_action.actor_loss": (2, 2),
    "cleanrl.sac_continuous_action.next_q_value": (2, 2),
    "cleanrl.sac_continuous_action.qf_loss": (0, 4),
    "cleanrl.sac_continuous_action.alpha_loss": (0, 4),
}


@pytest.fixture(scope="module")
def term_reports() -> dict:
    """Every term implementation through check on torch, gradients included."""
    return {n: check(i.fn, i.spec, backend="torch") for n, i in TERM_IMPLEMENTATIONS.items()}


def _cells(impl) -> list:
    report = AgainstReport()
    _run_implementation(report, "cleanrl", impl, ("float64", "float32"))
    return report.cells


def test_term_implementations_cite_their_script_lines() -> None:
    assert set(TERM_IMPLEMENTATIONS) == set(EXPECTED)
    for impl in TERM_IMPLEMENTATIONS.values():
        assert impl.backend == "torch"
        assert ".py lines" in impl.note
        if impl.spec.function != "clipped_surrogate":  # the replay-buffer scripts
            assert "data.dones = terminated" in impl.note


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_term_cells_pass_or_are_their_disagreement(name: str, term_reports: dict) -> None:
    impl, report = TERM_IMPLEMENTATIONS[name], term_reports[name]
    assert report.skipped is None
    for r in report.results:
        covering = [d for d in impl.disagreements if d.covers(r.case)]
        if covering:  # a disagreement is not a blanket: every case it covers differs
            assert r.status in ("fail", "error"), (r.case, r.dtype)
        else:
            assert r.passed, str(r)
            smooth = set(impl.spec.checked_outputs) & set(TERMS[impl.spec.function].smooth)
            assert (r.gradient_error is not None) == bool(smooth)  # gradients were compared
    statuses = [c.status for c in _cells(impl)]
    assert (statuses.count("pass"), statuses.count("known")) == EXPECTED[name]
    assert len(statuses) == sum(EXPECTED[name])


@pytest.mark.parametrize("name", [n for n, (_, known) in EXPECTED.items() if known])
def test_known_cells_would_fail_without_their_disagreement(name: str) -> None:
    impl = TERM_IMPLEMENTATIONS[name]
    cells = _cells(impl)
    planted = _cells(dataclasses.replace(impl, disagreements=()))
    assert [(c.case, c.dtype) for c in cells] == [(c.case, c.dtype) for c in planted]
    known = [p.status for c, p in zip(cells, planted, strict=True) if c.status == "known"]
    assert len(known) == EXPECTED[name][1]
    assert set(known) <= {"fail", "error"}


def test_sac_failures_are_explained_by_the_term_mistakes(term_reports: dict) -> None:
    qf = term_reports["cleanrl.sac_continuous_action.qf_loss"]
    alpha = term_reports["cleanrl.sac_continuous_action.alpha_loss"]
    two = [r for r in qf.results if r.case == "sac_terms[B64_C2]"]
    assert two and all("no ½" in r.explanation for r in two)
    two = [r for r in alpha.results if r.case == "sac_terms[B64_C2]"]
    assert two and all("α instead of log α" in r.explanation for r in two)
    three = [r for r in qf.results if r.case == "sac_terms[B8x4_C3]"]
    assert three and all("two critics" in r.explanation for r in three)


def _halved(*args):
    (qf_loss,) = cleanrl.sac_qf_loss(*args)
    return qf_loss / 2


def test_sac_qf_loss_halved_is_the_reference() -> None:
    spec = TermSpec("sac_terms", outputs=("loss_qvalue",))
    report = check(_halved, spec, backend="torch", cases=["B64_C2"])
    assert report.passed, str(report)
    assert all(r.gradient_error is not None for r in report.results)


def _plain_c51_case(label: str) -> TermCase:
    """The C51 case with next_q_selector = the target network's expected values."""
    term = TERMS["categorical_double_q_learning"]
    build = term.cases[label]

    def plain(rng, dtype):
        inputs = build(rng, dtype)
        logits = inputs["next_logits"]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return {**inputs, "next_q_selector": probs @ inputs["support"]}

    return TermCase(dataclasses.replace(term, cases={label: plain}), label)


def test_c51_matches_the_reference_as_plain_c51() -> None:
    impl = TERM_IMPLEMENTATIONS["cleanrl.c51.loss"]
    cases = [_plain_c51_case(label) for label in TERMS["categorical_double_q_learning"].cases]
    report = check(impl.fn, impl.spec, backend="torch", cases=cases)
    assert report.passed, str(report)
    assert len(report.results) == 2 * len(cases)
    assert all(r.gradient_error is not None for r in report.results)


def test_dqn_loss_by_hand() -> None:
    q = torch.tensor([[1.0, 2.0], [0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    next_q = torch.tensor([[3.0, 0.0], [5.0, 6.0]], dtype=torch.float64)
    action, reward = torch.tensor([1, 0]), torch.tensor([1.0, 2.0], dtype=torch.float64)
    terminated = torch.tensor([False, True])
    loss = cleanrl.dqn_loss(q, action, reward, terminated, next_q, 0.5)
    # targets 1 + 0.5·3 = 2.5 and 2 (terminated); chosen 2 and 0: errors 0.5, 2
    assert float(loss.detach()) == pytest.approx((0.25 + 4.0) / 2, abs=1e-12)
    (grad,) = torch.autograd.grad(loss, q)
    np.testing.assert_allclose(grad.numpy(), [[0.0, -0.5], [-2.0, 0.0]], atol=1e-12)


def test_ppo_clipfrac_and_loss_by_hand() -> None:
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.9], dtype=torch.float64)
    advantage = torch.tensor([1.0, -1.0, 2.0, -0.5], dtype=torch.float64)
    per_sample, mean, clipfrac = cleanrl.ppo_policy_loss(
        ratio.log(), torch.zeros(4, dtype=torch.float64), advantage, 0.2
    )
    # max(-A r, -A clip(r)): -1.2, 0.8, -2.2, 0.45; two ratios outside [0.8, 1.2]
    np.testing.assert_allclose(per_sample.numpy(), [-1.2, 0.8, -2.2, 0.45], atol=1e-12)
    assert float(mean) == pytest.approx(-0.5375, abs=1e-12)
    assert float(clipfrac) == 0.5


def test_sac_reproducers_by_hand() -> None:
    alpha = np.exp(-1.2)
    target = 0.5 + 0.9 * (min(2.0, 1.5) + alpha * 1.0)  # log π(a'|s') = -1
    squares = (1.0 - target) ** 2 + (0.0 - target) ** 2
    ours, reference = cleanrl.reproduce_sac_qf_loss_no_half()
    assert ours == pytest.approx(squares, abs=1e-12)
    assert reference == pytest.approx(squares / 2, abs=1e-12)
    ours, reference = cleanrl.reproduce_sac_alpha_loss()
    assert ours == pytest.approx(-alpha * (-0.5 - 2.0), abs=1e-12)
    assert reference == pytest.approx(1.2 * (-0.5 - 2.0), abs=1e-12)
    assert cleanrl.SAC_QF_LOSS_NO_HALF.upstream == "https://github.com/vwxyzjn/cleanrl/pull/146"
    assert cleanrl.SAC_ALPHA_LOSS.upstream == "https://github.com/vwxyzjn/cleanrl/pull/414"


def _c51_target(next_logits: list[float]) -> np.ndarray:
    """Projection of r + γ z (r = 0.2, γ = 0.5, z = -1, 0, 1) back onto z, by hand:
    the atoms land at -0.3, 0.2, 0.7 and split between their two neighbours."""
    p = np.exp(next_logits) / np.exp(next_logits).sum()
    return np.array([0.3 * p[0], 0.7 * p[0] + 0.8 * p[1] + 0.3 * p[2], 0.2 * p[1] + 0.7 * p[2]])


def test_c51_reproducers_by_hand() -> None:
    # target network's mean prefers action 0 (logits 0, 0, 2); the selector action 1
    ours, reference = cleanrl.reproduce_c51_selects_by_target_mean()
    taken = np.array([1.0, 0.0, -1.0])
    log_q = taken - np.log(np.exp(taken).sum())
    assert ours == pytest.approx(-_c51_target([0.0, 0.0, 2.0]) @ log_q, abs=1e-12)
    assert reference == pytest.approx(-_c51_target([2.0, 0.0, 0.0]) @ log_q, abs=1e-12)
    # the taken action's first probability e^-20 / (2 + e^-20) < 1e-5 is clamped
    ours, reference = cleanrl.reproduce_c51_clamped_log()
    taken = np.array([-20.0, 0.0, 0.0])
    log_q = taken - np.log(np.exp(taken).sum())
    target = _c51_target([0.0, 0.0, 2.0])
    assert reference == pytest.approx(-target @ log_q, abs=1e-12)
    clamped = np.array([np.log(1e-5), log_q[1], log_q[2]])
    assert ours == pytest.approx(-target @ clamped, abs=1e-12)
    assert not cleanrl.C51_CLAMPED_LOG.covers("categorical_double_q_learning[B32]")


def test_every_term_disagreement_reproducer_shows_its_difference() -> None:
    for d in cleanrl.TERM_DISAGREEMENTS:
        assert d.key.startswith("cleanrl-") and d.explanation
        if d.reproducer is None:
            assert d is cleanrl.SAC_TWO_CRITICS  # a limitation, shown by its TypeError
            continue
        module, _, function = d.reproducer.rpartition(".")
        ours, reference = getattr(importlib.import_module(module), function)()
        assert abs(ours - reference) > 0.1


def test_sac_refuses_three_critics() -> None:
    inputs = TermCase(TERMS["sac_terms"], "B8x4_C3").build(0, "float64")
    tensors = {
        n: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for n, v in inputs.items()
    }
    with pytest.raises(TypeError, match="two critics"):
        cleanrl.sac_losses(**tensors)


def test_a_wrong_mapping_would_fail_the_cell() -> None:
    """Planted mistakes in the mapping are caught and explained by check."""

    def dones_ignored(q, action, reward, terminated, next_q, gamma):
        return cleanrl.dqn_loss(q, action, reward, torch.zeros_like(terminated), next_q, gamma)

    report = check(dones_ignored, TermSpec("q_learning", outputs=("l2_loss",)), backend="torch")
    assert not report.passed
    assert all("does not cut the bootstrap" in r.explanation for r in report.failures)
    assert {r.case for r in report.failures} == {
        "q_learning[B64_A4]",
        "q_learning[B8x5_A2]",
        "q_learning[all_terminated]",
    }

    def online_bootstrap(q, action, reward, terminated, next_q, gamma):
        return cleanrl.dqn_loss(q, action, reward, terminated, q, gamma)

    report = check(online_bootstrap, TermSpec("q_learning", outputs=("l2_loss",)), backend="torch")
    assert not report.passed
    assert all("bootstraps from q_values" in r.explanation for r in report.failures)
