"""CleanRL's ppo.py GAE (written out in conformance/frameworks/cleanrl.py) through check."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
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
    (impl,) = fw.implementations()
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
    }


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
