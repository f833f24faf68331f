"""``pytest conformance/``: every case × dtype × available target, and TorchRL."""

from __future__ import annotations

import pytest
from arrayrl.conformance.backends import available_targets
from arrayrl.conformance.cases import DTYPES, all_cases
from arrayrl.conformance.oracle import torchrl_available
from arrayrl.conformance.runner import TOLERANCE, reference_outputs, run_target, run_torchrl

CASES = all_cases()
TARGETS = available_targets()


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
