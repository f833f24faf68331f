"""Run every case on every available backend and kernel; compare with the float64
reference and with TorchRL. The loss cases (:mod:`.loss_cases`) run the same way, on
every backend, with gradients on torch.

Error measure: ``max |x - ref| / max(1, max |ref|)`` over all elements, ``inf`` when the
NaN positions differ. Tolerances per dtype live in :data:`TOLERANCE` (estimators) and
:data:`LOSS_TOLERANCE` (losses), the only places they are stated.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

import arrayrl.objectives.value.functional as functional

from .backends import LossTarget, Target, available_loss_targets, available_targets
from .cases import DTYPES, Case, all_cases
from .loss_cases import Evaluation, LossCase, all_loss_cases, evaluate
from .loss_oracle import LossDeviation, loss_deviations_for, torchrl_loss_evaluation
from .oracle import deviation_for, torchrl_available, torchrl_outputs

#: max scaled error allowed against the float64 reference, per input dtype
TOLERANCE = {"float64": 1e-10, "float32": 5e-5}
#: the same for the loss cases, every output and every ``loss_*`` gradient. float32 is
#: looser than for the scans: a loss chains an MLP, log-probabilities, exp of log-ratios,
#: a GAE scan, batch means and standard deviations, and its gradients sum 32 per-sample
#: products back through the network; each step rounds at ~6e-8 and some amplify it
#: (atanh of an action near a TanhNormal bound, by 1 / (1 - a²); 1/std in advantage
#: normalisation). Over the suite at seeds 0-5 the largest float32 error is 1.3e-5 (a
#: torch gradient through atanh near a bound; 3e-6 on NumPy), which the scans' 5e-5
#: would cover with a margin of 4 only; 1e-4 leaves 8 while still far below the
#: 1e-1..1 that real mistakes produce (deliberately broken losses measured).
LOSS_TOLERANCE = {"float64": 1e-10, "float32": 1e-4}

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
    #: keys of the recorded deviations from TorchRL that this (``torchrl``) cell used
    deviations: tuple[str, ...] = ()


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
    if deviation is None:
        return Cell(case.name, dtype, "torchrl", error, error <= tolerance)
    note, used = f"deviation: {deviation.key}", (deviation.key,)
    if deviation.tolerance is None:
        return Cell(case.name, dtype, "torchrl", error, True, note, used)
    passed = error <= max(tolerance, deviation.tolerance)
    return Cell(case.name, dtype, "torchrl", error, passed, note, used)


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


# -- the loss cases ------------------------------------------------------------------------


def loss_reference(case: LossCase, dtype: str) -> Evaluation:
    """The float64 reference of the case's ``dtype`` inputs: the outputs of the case's own
    NumPy formulas (``case.numpy_reference(inputs)``, for a case whose maths arrayrl's
    NumPy backend cannot run) or arrayrl's on NumPy; the gradients of arrayrl on torch
    (when installed); NumPy-sourced noise throughout."""
    inputs = case.build(SEED, dtype).as_float64()
    numpy_reference = getattr(case, "numpy_reference", None)
    if numpy_reference is not None:
        reference = numpy_reference(inputs)
    else:
        reference = evaluate(case, inputs, "numpy")
    if importlib.util.find_spec("torch") is not None:
        reference.gradients = evaluate(case, inputs, "torch").gradients
    return reference


def compare(
    value: Evaluation,
    reference: Evaluation,
    tolerance: float,
    deviations: Iterable[LossDeviation] = (),
) -> tuple[float, bool, str]:
    """``(max scaled error, passed, note)`` over every output and, when ``value`` has
    gradients, every gradient; keys covered by a deviation use its tolerance or are
    skipped (``tolerance=None``). A missing or extra key fails."""
    expected = dict(reference.outputs)
    got = dict(value.outputs)
    if value.gradients:
        expected.update(reference.gradients)
        got.update(value.gradients)
    if set(got) != set(expected):
        return float("inf"), False, f"keys differ: {sorted(set(got) ^ set(expected))}"
    worst, worst_key, passed = 0.0, "", True
    for key in expected:
        limits = [d.tolerance for d in deviations if d.covers_key(key)]
        if None in limits:
            continue
        error = scaled_error(got[key], expected[key])
        passed = passed and error <= max([tolerance, *limits])
        if error >= worst:
            worst, worst_key = error, key
    return worst, passed, f"worst: {worst_key}" if worst_key else ""


def _deviation_note(deviations: list[LossDeviation], note: str) -> str:
    names = ", ".join(d.key for d in deviations)
    return f"deviation: {names}; {note}" if deviations else note


def run_loss_target(
    case: LossCase, dtype: str, target: LossTarget, reference: Evaluation
) -> Cell:
    """Evaluate one loss case on one backend and compare with the reference."""
    inputs = case.build(SEED, dtype)
    try:
        value = evaluate(case, inputs, target.backend, target.device)
    except Exception as err:  # a crash is a failed cell, reported as such
        note = f"{type(err).__name__}: {err}"
        return Cell(case.name, dtype, target.name, float("inf"), False, note)
    error, passed, note = compare(value, reference, LOSS_TOLERANCE[dtype])
    wrong = [k for k, v in value.outputs.items()
             if _output_dtype(k, dtype) not in (None, v.dtype)]
    if wrong:
        passed, note = False, f"wrong output dtype: {wrong}"
    return Cell(case.name, dtype, target.name, error, passed, note)


#: outputs whose dtype is not the inputs' by design (``None``: not checked): KL-PEN's β;
#: the SAC family's temperature α, float32 as TorchRL's ``log_alpha`` parameter; CrossQ's
#: BatchRenorm1d step counters
FIXED_DTYPE_OUTPUTS: dict[str, str | None] = {
    "beta": None,
    "alpha": "float32",
    "num_batches_tracked": "int64",
}


def _output_dtype(key: str, dtype: str) -> np.dtype | None:
    """The dtype loss output ``key`` must have for ``dtype`` inputs (``None``: any)."""
    name = key.rsplit(".", 1)[-1]
    fixed = FIXED_DTYPE_OUTPUTS.get(name, dtype)
    return None if fixed is None else np.dtype(fixed)


def run_loss_torchrl(case: LossCase, dtype: str, reference: Evaluation) -> Cell:
    """Compare TorchRL's loss with the reference, honouring recorded deviations.

    Monte-Carlo cases are compared with arrayrl on torch drawing the same torch noise
    (:mod:`.loss_oracle`) at the same dtype, instead of the NumPy-noise reference.
    """
    inputs = case.build(SEED, dtype)
    try:
        value = torchrl_loss_evaluation(case, inputs, dtype)
    except Exception as err:  # TorchRL rejecting a configuration is a failed cell
        note = f"{type(err).__name__}: {err}"
        return Cell(case.name, dtype, "torchrl", float("inf"), False, note)
    note = ""
    if case.monte_carlo:
        reference = evaluate(case, inputs, "torch", generator_mode="native")
        note = "vs arrayrl on torch with torch noise; "
    deviations = loss_deviations_for(case, dtype)
    error, passed, worst = compare(value, reference, LOSS_TOLERANCE[dtype], deviations)
    return Cell(case.name, dtype, "torchrl", error, passed,
                _deviation_note(deviations, note + worst), tuple(d.key for d in deviations))


def run_losses(
    cases: list[LossCase] | None = None,
    targets: list[LossTarget] | None = None,
    *,
    dtypes: Iterable[str] = DTYPES,
    with_torchrl: bool = True,
) -> list[Cell]:
    """Every loss case × dtype × backend, then × TorchRL; returns the cells."""
    cases = all_loss_cases() if cases is None else cases
    targets = available_loss_targets() if targets is None else targets
    with_torchrl = with_torchrl and torchrl_available()
    cells = []
    for case in cases:
        for dtype in dtypes:
            reference = loss_reference(case, dtype)
            cells += [
                run_loss_target(case, dtype, t, reference) for t in targets if t.runs(case, dtype)
            ]
            if with_torchrl:
                cells.append(run_loss_torchrl(case, dtype, reference))
    return cells


def deviations_used(cells: Iterable[Cell]) -> list[dict[str, Any]]:
    """The recorded deviations that the ``cells`` used (in the order they are recorded),
    as JSON-ready dicts; those of cases or dtypes not run are left out."""
    from .loss_oracle import all_loss_deviations
    from .oracle import DEVIATIONS

    used = {key for cell in cells for key in cell.deviations}
    return [
        {"key": d.key, "reason": d.reason, "tolerance": d.tolerance,
         "torchrl_issue": d.torchrl_issue, "covers": list(getattr(d, "covers", ()))}
        for d in (*DEVIATIONS, *all_loss_deviations())
        if d.key in used
    ]


def report(cells: list[Cell], skipped: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON-ready report: every cell, a summary per target, the targets that ran,
    those ``skipped`` (name -> reason) and the deviations the cells used."""
    summary: dict[str, dict[str, Any]] = {}
    for cell in cells:
        entry = summary.setdefault(cell.target, {"cases": 0, "failed": 0, "max_error": 0.0})
        entry["cases"] += 1
        entry["failed"] += not cell.passed
        entry["max_error"] = max(entry["max_error"], cell.error)
    return {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tolerance": TOLERANCE,
        "loss_tolerance": LOSS_TOLERANCE,
        "summary": summary,
        "ran": list(summary),
        "skipped": dict(skipped or {}),
        "deviations": deviations_used(cells),
        "cells": [asdict(c) for c in cells],
    }
