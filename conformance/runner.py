"""Run every case on every available backend and kernel; compare with the float64
reference and with TorchRL.

Error measure: ``max |x - ref| / max(1, max |ref|)`` over all elements, ``inf`` when the
NaN positions differ. Tolerances per dtype live in :data:`TOLERANCE`, the only place
they are stated.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import arrayrl.objectives.value.functional as functional

from .backends import Target, available_targets
from .cases import DTYPES, Case, all_cases
from .oracle import deviation_for, torchrl_available, torchrl_outputs

#: max scaled error allowed against the float64 reference, per input dtype
TOLERANCE = {"float64": 1e-10, "float32": 5e-5}

SEED = 0


@dataclass
class Cell:
    """One case × dtype × target (or ``torchrl``) result."""

    case: str
    dtype: str
    target: str
    error: float
    passed: bool
    note: str = ""


def scaled_error(value: np.ndarray, reference: np.ndarray) -> float:
    """``max |value - reference| / max(1, max |reference|)``; ``inf`` if NaNs differ."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if value.shape != reference.shape:
        return float("inf")
    nan_value, nan_ref = np.isnan(value), np.isnan(reference)
    if not np.array_equal(nan_value, nan_ref):
        return float("inf")
    if value.size == 0 or nan_ref.all():
        return 0.0
    finite = ~nan_ref
    diff = np.abs(value[finite] - reference[finite]).max()
    return float(diff / max(1.0, np.abs(reference[finite]).max()))


def _call(case: Case, args: Iterable[Any], kwargs: dict[str, Any], kernel: str) -> list[Any]:
    function = getattr(functional, case.function)
    out = function(*args, **kwargs, kernel=kernel)
    return list(out) if isinstance(out, tuple) else [out]


def reference_outputs(case: Case, dtype: str) -> list[np.ndarray]:
    """The float64 NumPy reference (``kernel="reference"``) on the case's inputs."""
    args, kwargs = case.build(SEED, dtype)
    args = tuple(a.astype(np.float64) if _is_float_array(a) else a for a in args)
    return [np.asarray(o) for o in _call(case, args, kwargs, "reference")]


def _is_float_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def run_target(case: Case, dtype: str, target: Target, reference: list[np.ndarray]) -> Cell:
    """Evaluate one case on one target and compare with the reference."""
    args, kwargs = case.build(SEED, dtype)
    args = tuple(target.convert(a) if isinstance(a, np.ndarray) else a for a in args)
    try:
        outs = [target.to_numpy(o) for o in _call(case, args, kwargs, target.kernel)]
    except Exception as err:  # a crash is a failed cell, reported as such
        note = f"{type(err).__name__}: {err}"
        return Cell(case.name, dtype, target.name, float("inf"), False, note)
    error = max(scaled_error(o, r) for o, r in zip(outs, reference, strict=True))
    note = "" if all(o.dtype == np.dtype(dtype) for o in outs) else "wrong output dtype"
    return Cell(case.name, dtype, target.name, error, error <= TOLERANCE[dtype] and not note, note)


def run_torchrl(case: Case, dtype: str, reference: list[np.ndarray]) -> Cell:
    """Compare TorchRL's function with the reference, honouring recorded deviations."""
    args, kwargs = case.build(SEED, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = torchrl_outputs(case, args, kwargs)
    error = max(scaled_error(o, r) for o, r in zip(outs, reference, strict=True))
    deviation = deviation_for(case, dtype)
    tolerance = TOLERANCE[dtype]
    note = ""
    if deviation is not None:
        note = f"deviation: {deviation.key}"
        if deviation.tolerance is None:
            return Cell(case.name, dtype, "torchrl", error, True, note)
        tolerance = max(tolerance, deviation.tolerance)
    return Cell(case.name, dtype, "torchrl", error, error <= tolerance, note)


def run(
    cases: list[Case] | None = None,
    targets: list[Target] | None = None,
    *,
    dtypes: Iterable[str] = DTYPES,
    with_torchrl: bool = True,
) -> list[Cell]:
    """Every case × dtype × target, then × TorchRL; returns the cells."""
    cases = all_cases() if cases is None else cases
    targets = available_targets() if targets is None else targets
    with_torchrl = with_torchrl and torchrl_available()
    cells = []
    for case in cases:
        for dtype in dtypes:
            reference = reference_outputs(case, dtype)
            cells += [run_target(case, dtype, t, reference) for t in targets]
            if with_torchrl:
                cells.append(run_torchrl(case, dtype, reference))
    return cells


def report(cells: list[Cell]) -> dict[str, Any]:
    """The JSON-ready report: every cell, a summary per target, the deviations used."""
    from .oracle import DEVIATIONS

    summary: dict[str, dict[str, Any]] = {}
    for cell in cells:
        entry = summary.setdefault(cell.target, {"cases": 0, "failed": 0, "max_error": 0.0})
        entry["cases"] += 1
        entry["failed"] += not cell.passed
        entry["max_error"] = max(entry["max_error"], cell.error)
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tolerance": TOLERANCE,
        "summary": summary,
        "deviations": [
            {"key": d.key, "reason": d.reason, "tolerance": d.tolerance,
             "torchrl_issue": d.torchrl_issue}
            for d in DEVIATIONS
        ],
        "cells": [asdict(c) for c in cells],
    }
