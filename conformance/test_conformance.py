"""``pytest conformance/``: every estimator and loss case × dtype × available target,
and TorchRL."""

from __future__ import annotations

import pytest
from arrayrl.conformance.backends import available_loss_targets, available_targets
from arrayrl.conformance.cases import DTYPES, all_cases
from arrayrl.conformance.loss_cases import all_loss_cases
from arrayrl.conformance.oracle import torchrl_available
from arrayrl.conformance.runner import (
    LOSS_TOLERANCE,
    TOLERANCE,
    loss_reference,
    reference_outputs,
    run_loss_target,
    run_loss_torchrl,
    run_target,
    run_torchrl,
)

CASES = all_cases()
TARGETS = available_targets()
LOSS_CASES = all_loss_cases()
LOSS_TARGETS = available_loss_targets()


@pytest.fixture(scope="module")
def references() -> dict:
    return {}


def _reference(references: dict, case, dtype: str):
    key = (case.name, dtype)
    if key not in references:
        references[key] = reference_outputs(case, dtype)
    return references[key]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_backends_match_reference(case, dtype, references):
    reference = _reference(references, case, dtype)
    failures = []
    for target in TARGETS:
        cell = run_target(case, dtype, target, reference)
        if not cell.passed:
            failures.append(f"{target.name}: error {cell.error:.3g} {cell.note}")
    assert not failures, f"tolerance {TOLERANCE[dtype]}: " + "; ".join(failures)


@pytest.mark.skipif(not torchrl_available(), reason="torchrl is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torchrl_matches_reference(case, dtype, references):
    cell = run_torchrl(case, dtype, _reference(references, case, dtype))
    assert cell.passed, f"TorchRL differs by {cell.error:.3g} ({cell.note or 'no deviation'})"


def _loss_reference(references: dict, case, dtype: str):
    key = ("loss", case.name, dtype)
    if key not in references:
        references[key] = loss_reference(case, dtype)
    return references[key]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.name)
def test_loss_backends_match_reference(case, dtype, references):
    reference = _loss_reference(references, case, dtype)
    failures = []
    for target in (t for t in LOSS_TARGETS if t.runs(case, dtype)):
        cell = run_loss_target(case, dtype, target, reference)
        if not cell.passed:
            failures.append(f"{target.name}: error {cell.error:.3g} {cell.note}")
    assert not failures, f"tolerance {LOSS_TOLERANCE[dtype]}: " + "; ".join(failures)


@pytest.mark.skipif(not torchrl_available(), reason="torchrl is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.name)
def test_loss_torchrl_matches_reference(case, dtype, references):
    cell = run_loss_torchrl(case, dtype, _loss_reference(references, case, dtype))
    assert cell.passed, f"TorchRL differs by {cell.error:.3g} ({cell.note})"


@pytest.mark.skipif(not torchrl_available(), reason="torchrl is not installed")
def test_torch_noise_twin_draws_as_torchrl():
    """The Monte-Carlo loss cases compare TorchRL with arrayrl on torch drawing from a
    seeded ``torch.Generator``; that holds only while ``Normal.rsample`` after
    ``torch.manual_seed(s)`` draws what ``torch.randn(..., generator=Generator(s))`` does."""
    import torch

    for dtype in (torch.float32, torch.float64):
        ours = torch.randn((2, 32, 3), generator=torch.Generator().manual_seed(5), dtype=dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            normal = torch.distributions.Normal(torch.zeros(32, 3, dtype=dtype), 1.0)
            theirs = normal.rsample((2,))
        assert torch.equal(ours, theirs)
