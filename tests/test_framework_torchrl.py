"""TorchRL as a conformance framework: its recorded deviations and their reproducers.

Each reproducer returns ``(torchrl, reference)`` on a one-step input; the expected
numbers are worked out by hand below.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("torchrl", reason="torchrl is not installed (pip install torchrl==0.14.1)")

from arrayrl.conformance.cases import all_cases
from arrayrl.conformance.frameworks import framework
from arrayrl.conformance.frameworks import torchrl as torchrl_framework
from arrayrl.conformance.oracle import DEVIATIONS
from arrayrl.conformance.runner import TOLERANCE

FRAMEWORK = framework("torchrl")
BY_KEY = {d.key: d for d in FRAMEWORK.disagreements}


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_deviation_is_a_disagreement_with_a_resolving_reproducer() -> None:
    assert set(BY_KEY) == {d.key for d in DEVIATIONS}
    expected = {
        "torchrl-float32-masks": torchrl_framework.reproduce_float32_masks,
        "torchrl-td1-non-rolling-no-bootstrap": (
            torchrl_framework.reproduce_td1_non_rolling_no_bootstrap
        ),
    }
    for key, function in expected.items():
        assert _resolve(BY_KEY[key].reproducer) is function
    for deviation in DEVIATIONS:
        issue = deviation.torchrl_issue
        assert BY_KEY[deviation.key].upstream == (issue and f"pytorch/rl#{issue}")
        assert BY_KEY[deviation.key].explanation == deviation.reason


def test_float32_masks_reproducer_by_hand() -> None:
    torchrl, reference = torchrl_framework.reproduce_float32_masks()
    # one step, r = 0, V(s) = 0, V(s') = 1, γ = 0.9: A = γ·V(s') = γ
    assert reference == pytest.approx(0.9, abs=1e-15)
    # TorchRL's γ·(1 - terminated) is float32: γ rounded to float32, exactly
    assert torchrl == float(np.float32(0.9)) == 0.8999999761581421
    # above the float64 tolerance, within the deviation's own tolerance
    (deviation,) = [d for d in DEVIATIONS if d.key == "torchrl-float32-masks"]
    assert TOLERANCE["float64"] < abs(torchrl - reference) < deviation.tolerance


def test_td1_non_rolling_reproducer_by_hand() -> None:
    torchrl, reference = torchrl_framework.reproduce_td1_non_rolling_no_bootstrap()
    # one step not done, r = 0, V(s') = 1, γ = 0.9: G = r + γ·V(s') = 0.9
    assert reference == pytest.approx(0.9, abs=1e-15)
    assert torchrl == 0.0  # TorchRL's loop starts from 0: no bootstrap
    assert abs(torchrl - reference) > TOLERANCE["float32"]


def test_td1_rolling_form_and_td_lambda_do_bootstrap_as_the_explanation_says() -> None:
    import torch
    from torchrl.objectives.value import functional

    gamma = torch.full((1, 1, 1), 0.9, dtype=torch.float64)
    one = torch.ones((1, 1, 1), dtype=torch.float64)
    zero = torch.zeros((1, 1, 1), dtype=torch.float64)
    done = torch.zeros((1, 1, 1), dtype=torch.bool)
    rolling = functional.td1_return_estimate(gamma, one, zero, done, done, rolling_gamma=True)
    lam = functional.td_lambda_return_estimate(
        gamma, 1.0, one, zero, done, done, rolling_gamma=False
    )
    assert float(rolling) == pytest.approx(0.9, abs=1e-15)
    assert float(lam) == pytest.approx(0.9, abs=1e-15)


@pytest.mark.parametrize(
    ("key", "covered", "not_covered"),
    [
        (
            "torchrl-float32-masks",
            ["generalized_advantage_estimate[T1,none_done]", "td0_return_estimate[T1,random]"],
            ["generalized_advantage_estimate[per_step_gamma]", "td1_return_estimate[T1,random]"],
        ),
        (
            "torchrl-td1-non-rolling-no-bootstrap",
            ["td1_return_estimate[rolling_gamma=False]"],
            ["td1_return_estimate[T1,random]", "td_lambda_return_estimate[rolling_gamma=False]"],
        ),
    ],
)
def test_disagreements_cover_the_cases_of_their_deviation(key, covered, not_covered) -> None:
    names = {case.name for case in all_cases()}
    assert set(covered + not_covered) <= names
    assert all(BY_KEY[key].covers(name) for name in covered)
    assert not any(BY_KEY[key].covers(name) for name in not_covered)
    assert not BY_KEY[key].covers("no_such_estimator[T1]")


########################################################################
# loss terms: TorchRL's ClipPPOLoss and DQNLoss on lookup-table networks


TERM_IMPLEMENTATIONS = [
    i
    for i in FRAMEWORK.implementations()
    if i.spec.function in ("clipped_surrogate", "q_learning", "double_q_learning")
]


def test_the_loss_term_implementations_are_listed() -> None:
    assert {i.name for i in TERM_IMPLEMENTATIONS} == {
        "torchrl.ClipPPOLoss",
        "torchrl.DQNLoss",
        "torchrl.DQNLoss(double_dqn=True)",
    }


@pytest.mark.parametrize("implementation", TERM_IMPLEMENTATIONS, ids=lambda i: i.name)
def test_torchrl_loss_terms_match_in_float32_and_differ_only_by_float32_constants(
    implementation,
) -> None:
    """float32: values and gradients pass. float64: every failure is the recorded
    float32-constants difference (~1e-8 relative), never more."""
    from arrayrl.conformance import check

    report = check(implementation.fn, implementation.spec, backend="torch")
    float32 = [r for r in report.results if r.dtype == "float32"]
    assert float32 and all(r.passed and r.gradient_error is not None for r in float32), str(report)
    for result in report.results:
        if not result.passed:
            assert result.dtype == "float64"
            assert "float32" in result.explanation
            assert result.scaled_error < 1e-7
            assert any(d.applies(result.case, result.dtype) for d in implementation.disagreements)


def test_float32_clip_epsilon_reproducer() -> None:
    """Ratio 2, advantage 1, ε = 0.2: the loss is −clip(2, 0.8, 1.2) = −1.2; TorchRL
    clips log r at float32's log1p(0.2)."""
    torchrl, reference = torchrl_framework.reproduce_float32_clip_epsilon()
    assert reference == -1.2
    assert torchrl == pytest.approx(-np.exp(float(np.log1p(np.float32(0.2)))), rel=1e-15)
    assert abs(torchrl - reference) > TOLERANCE["float64"]


def test_a_wrong_table_fails_the_check() -> None:
    """The lookup-table mapping is not vacuous: a shifted advantage makes it fail."""
    from arrayrl.conformance import check

    (ppo,) = [i for i in TERM_IMPLEMENTATIONS if i.name == "torchrl.ClipPPOLoss"]

    def shifted(log_prob, prev_log_prob, advantage, eps):
        return ppo.fn(log_prob, prev_log_prob, advantage + 0.1, eps)

    report = check(shifted, ppo.spec, backend="torch", dtypes=("float32",))
    assert report.failures and not report.passed
