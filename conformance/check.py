"""Check any implementation of an estimator against arrayrl's float64 reference.

>>> import numpy as np
>>> from arrayrl.conformance import check
>>> from arrayrl.objectives.value.functional import reward2go
>>> report = check(reward2go, "reward2go", backend="numpy", cases=["reward2go[B4_T16_F1"])
>>> report.passed
True

``check(fn, spec)`` runs ``fn`` on every conformance case of the estimator (the cases of
:func:`.cases.all_cases`, seed :data:`.runner.SEED`), in each dtype, on one backend;
compares every output with the float64 NumPy reference (``kernel="reference"``) by the
suite's :func:`.runner.scaled_error` against :data:`.runner.TOLERANCE`; on torch, also
the gradient of ``sum(output * w)`` (fixed random ``w``) w.r.t. every float input,
against arrayrl's torch path. A failure is explained by re-running the *reference* on
perturbed inputs (truncation as termination, truncation ignored, γ and λ swapped,
V-trace thresholds swapped or missing, float32 arithmetic) and on shifted time, and
naming the one the user's output matches.

Conventions (how a case's arrays reach ``fn``; ``fn`` is called positionally in
:data:`.cases.SIGNATURES`'s order, or by keyword when ``argnames`` is given):

``"torchrl"``
    batch-major ``[*B, T, F]`` (time at ``-2``), TorchRL's argument order. A
    time-major case is moved to this layout first; outputs are moved back.
``"time_major"``
    the same arguments, time first: ``[T, *B, F]``.
``"rlax"``
    generalized_advantage_estimate only, per trajectory, RLax's
    ``truncated_generalized_advantage_estimation(r_t, discount_t, lambda_, values)``:
    for every batch row and feature, ``r_t = reward[..., :, f]`` (``T``),
    ``discount_t = gamma * (1 - terminated)``, ``lambda_ = lmbda`` (a float, or the
    row's ``T`` values), ``values = state_value`` followed by the last
    ``next_state_value`` (``T + 1``); its output is the advantage. RLax's single
    ``values`` array means ``next_state_value[t] = state_value[t + 1]``: the case's
    ``next_state_value`` is replaced by the shifted ``state_value`` (reference included),
    and as a termination zeroes the discount (cutting both bootstrap and trace), a
    truncation inside a trajectory (``done & ~terminated`` before the last step) cannot
    be expressed: those cases are reported "not expressible in this convention", and
    run again as ``<case>+terminations_only`` (``terminated = done``), so that
    terminations inside trajectories are checked too.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import arrayrl.objectives.value.functional as functional

from .backends import Target, available_targets
from .cases import SIGNATURES, Case, all_cases
from .runner import SEED, TOLERANCE, scaled_error

if TYPE_CHECKING:
    from .terms import TermSpec

__all__ = ["CONVENTIONS", "CaseResult", "CheckReport", "EstimatorSpec", "check"]

#: the argument conventions :func:`check` can call a function in
CONVENTIONS = ("torchrl", "time_major", "rlax")
_BACKENDS = ("numpy", "torch", "jax", "cupy", "array_api_strict")
_PIP = {
    "numpy": "numpy",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy-cuda12x",
    "array_api_strict": "array-api-strict",
}


@dataclass(frozen=True)
class EstimatorSpec:
    """What :func:`check` checks: an estimator, the convention ``fn`` follows, its names.

    ``function``: a name of :data:`.cases.SIGNATURES`. ``convention``: one of
    :data:`CONVENTIONS`. ``argnames``: ``{our name: your name}``; when given, ``fn`` is
    called by keyword (names not in the mapping keep ours). ``outputs``: the outputs
    ``fn`` returns, in order (default: all of the signature's; ``("advantage",)`` under
    ``"rlax"``). ``tolerances``: ``{dtype: largest scaled error that passes}`` for the
    dtypes you set (default :data:`.runner.TOLERANCE`: 1e-10 float64, 5e-5 float32);
    values and gradients are judged by it.

    >>> EstimatorSpec("generalized_advantage_estimate", outputs=("advantage",)).outputs
    ('advantage',)
    """

    function: str
    convention: str = "torchrl"
    argnames: Mapping[str, str] | None = None
    outputs: tuple[str, ...] | None = None
    tolerances: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.tolerances)
        if self.function not in SIGNATURES:
            raise ValueError(f"unknown estimator {self.function!r}; one of {', '.join(SIGNATURES)}")
        if self.convention not in CONVENTIONS:
            raise ValueError(
                f"unknown convention {self.convention!r}; one of {', '.join(CONVENTIONS)}"
            )
        if self.convention == "rlax" and self.function != "generalized_advantage_estimate":
            raise ValueError(
                "the 'rlax' convention is defined for generalized_advantage_estimate only "
                "(RLax's truncated_generalized_advantage_estimation)"
            )
        known = self.signature.outputs
        unknown = [o for o in self.outputs or () if o not in known]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; {self.function} has {known}")
        if self.convention == "rlax" and self.outputs not in (None, ("advantage",)):
            raise ValueError("the 'rlax' convention returns the advantage only")
        unknown_args = [a for a in self.argnames or {} if a not in self.signature.args]
        if unknown_args:
            raise ValueError(
                f"argnames keys {unknown_args} are not arguments of {self.function}: "
                f"{self.signature.args}"
            )

    @property
    def signature(self) -> Any:
        """The estimator's :class:`.cases.Signature`."""
        return SIGNATURES[self.function]

    @property
    def checked_outputs(self) -> tuple[str, ...]:
        """The outputs compared, in the order ``fn`` returns them."""
        if self.outputs is not None:
            return self.outputs
        return ("advantage",) if self.convention == "rlax" else self.signature.outputs


@dataclass
class CaseResult:
    """One case × dtype: ``status`` is ``"pass"``, ``"fail"``, ``"error"`` (``fn``
    raised) or ``"not expressible"``; indices are in the case's array coordinates."""

    case: str
    dtype: str
    status: str
    max_abs_error: float = math.nan
    scaled_error: float = math.nan
    gradient_error: float | None = None
    first_index: tuple[int, ...] | None = None
    output: str | None = None
    yours: float | None = None
    reference: float | None = None
    explanation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class CheckReport:
    """Every :class:`CaseResult` of one :func:`check`; ``str()`` is a table plus the
    explanations of the failures. ``skipped`` says why nothing ran (a backend missing)."""

    spec: EstimatorSpec
    backend: str
    results: list[CaseResult] = field(default_factory=list)
    skipped: str | None = None

    @property
    def failures(self) -> list[CaseResult]:
        """The results that failed or raised."""
        return [r for r in self.results if r.status in ("fail", "error")]

    @property
    def passed(self) -> bool:
        """True when something ran and nothing failed (a skipped check has not passed)."""
        return self.skipped is None and not self.failures and any(r.passed for r in self.results)

    def summary(self) -> str:
        """One line: the counts per status."""
        if self.skipped:
            return f"{self.spec.function} on {self.backend}: skipped: {self.skipped}"
        counts = {
            s: sum(r.status == s for r in self.results)
            for s in ("pass", "fail", "error", "not expressible")
        }
        parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        return (
            f"{self.spec.function} ({self.spec.convention} convention) on {self.backend}: {parts}"
        )

    def raise_for_failures(self) -> None:
        """``AssertionError`` with the summary and explanations unless :attr:`passed`."""
        if not self.passed:
            raise AssertionError(str(self))

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-able data (non-finite floats as strings)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            return value

        results = [{k: clean(v) for k, v in asdict(r).items()} for r in self.results]
        spec = {
            "function": self.spec.function,
            "convention": self.spec.convention,
            "argnames": dict(self.spec.argnames or {}),
            "outputs": list(self.spec.checked_outputs),
        }
        out = {
            "spec": spec,
            "backend": self.backend,
            "passed": self.passed,
            "skipped": self.skipped,
            "results": results,
        }
        json.dumps(out)  # fails here, not in the caller, if something is not JSON-able
        return out

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.skipped:
            return lines[0]
        width = max([len(r.case) for r in self.results] + [4])
        lines.append(f"{'case':<{width}}  dtype    status           max abs    scaled     grad")
        for r in self.results:
            grad = "-" if r.gradient_error is None else f"{r.gradient_error:.1e}"
            lines.append(
                f"{r.case:<{width}}  {r.dtype:<7}  {r.status:<15}  {_fmt(r.max_abs_error)}"
                f"  {_fmt(r.scaled_error)}  {grad:>7}"
            )
        grouped: dict[str, list[str]] = {}  # one explanation, the cells it applies to
        for r in self.results:
            if r.status != "pass" or r.explanation:  # a passing cell may carry a note
                where = ""
                if r.first_index is not None:
                    where = (
                        f": {r.output} first differs at {r.first_index}, yours "
                        f"{r.yours:.6g}, reference {r.reference:.6g}"
                    )
                grouped.setdefault(r.explanation, []).append(f"{r.case} {r.dtype}{where}")
        for explanation, cells in grouped.items():
            lines.append(f"- {explanation}:\n    " + "\n    ".join(cells))
        return "\n".join(lines)


def check_tolerances(tolerances: Mapping[str, float] | None) -> None:
    """``ValueError`` unless ``tolerances`` maps known dtypes to positive finite floats."""
    for dtype, value in (tolerances or {}).items():
        if dtype not in TOLERANCE:
            raise ValueError(f"tolerances: unknown dtype {dtype!r}; one of {', '.join(TOLERANCE)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"tolerances[{dtype!r}] must be a float, got {value!r}")
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"tolerances[{dtype!r}] must be positive and finite, got {value!r}")


def tolerance_for(spec: Any, dtype: str) -> float:
    """The scaled-error tolerance of ``dtype`` under ``spec`` (its own, else the suite's)."""
    return float((spec.tolerances or {}).get(dtype, TOLERANCE[dtype]))


def _fmt(x: float) -> str:
    return f"{'-':>8}" if math.isnan(x) else f"{x:8.1e}"


def check(
    fn: Callable[..., Any],
    spec: str | EstimatorSpec | TermSpec,
    *,
    backend: str | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    cases: Sequence[str | Case] | None = None,
    gradients: bool = True,
) -> CheckReport:
    """Run ``fn`` on every conformance case of ``spec`` and compare with the reference.

    Parameters
    ----------
    fn
        The implementation, called positionally in the spec's argument order (or by
        keyword with ``spec.argnames``) with the backend's arrays and Python floats or
        bools for scalar arguments; returns one array or a tuple (``spec.outputs``).
    spec
        An estimator name of :data:`.cases.SIGNATURES` (TorchRL convention) or an
        :class:`EstimatorSpec`; or a loss term's name of :data:`.terms.TERMS`
        (``"clipped_surrogate"``, ``"q_learning"``, ...) or a :class:`.terms.TermSpec`.
    backend
        ``"numpy"`` (default), ``"torch"``, ``"jax"``, ``"cupy"``, ``"array_api_strict"``.
        One that is not installed gives a report with ``skipped`` set.
    dtypes
        Input dtypes, each case is run in each.
    cases
        Keep only these cases (:class:`.cases.Case` objects, or substrings of names).
    gradients
        On torch (when ``fn``'s outputs require grad) and on JAX (by ``jax.vjp``; a
        function it cannot trace is reported, its values still checked), also compare
        the gradients of ``Σ output · w`` w.r.t. every float input with the reference's.

    >>> import numpy as np
    >>> def no_discount(reward, done, gamma):  # wrong: ignores gamma
    ...     return np.flip(np.cumsum(np.flip(reward, -2), -2), -2)
    >>> check(no_discount, "reward2go", cases=["reward2go[T1"]).passed
    True
    >>> check(no_discount, "reward2go", cases=["reward2go[B4_T16_F1,none"]).passed
    False
    """
    from .terms import TERMS, TermSpec, check_term

    if isinstance(spec, str):
        spec = TermSpec(spec) if spec in TERMS else EstimatorSpec(spec)
    backend = "numpy" if backend is None else backend
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(_BACKENDS)}")
    for dtype in dtypes:
        if dtype not in TOLERANCE:
            raise ValueError(f"unknown dtype {dtype!r}; one of {', '.join(TOLERANCE)}")
    report = CheckReport(spec, backend)
    target = _target(backend)
    if isinstance(target, str):
        report.skipped = target
        return report
    if isinstance(spec, TermSpec):
        return check_term(fn, spec, target, dtypes, cases, gradients, report)
    for case in _select(spec.function, cases):
        float64_passed = None
        for dtype in dtypes:
            result = _check_case(fn, spec, case, dtype, target, gradients, float64_passed)
            if dtype == "float64":
                float64_passed = result.passed
            report.results.append(result)
        if spec.convention == "rlax" and report.results[-1].status == "not expressible":
            for dtype in dtypes:  # the same case with its truncations made terminations
                report.results.append(
                    _check_case(fn, spec, case, dtype, target, gradients, None, True)
                )
    return report


def _target(backend: str) -> Target | str:
    """The backend's converters, or why it cannot run here."""
    module = "numpy" if backend == "numpy" else backend
    if importlib.util.find_spec(module) is None:
        return (
            f"backend {backend!r} is not installed here (pip install {_PIP[backend]});"
            " nothing was checked"
        )
    label = {"torch": "torch-cpu"}.get(backend, backend)
    for target in available_targets():
        if target.label == label and target.kernel == "reference":
            return target
    return f"backend {backend!r} has no usable device here (cupy needs a GPU)"


def _select(function: str, wanted: Sequence[str | Case] | None) -> list[Case]:
    return select_cases(function, [c for c in all_cases() if c.function == function], wanted)


def select_cases(function: str, pool: list[Any], wanted: Sequence[Any] | None) -> list[Any]:
    """The cases of ``pool`` that ``wanted`` names: case objects as they are, strings as
    substrings of a case's name (all of ``pool`` when ``wanted`` is ``None``);
    ``ValueError`` naming ``function`` when nothing matches."""
    if wanted is None:
        return pool
    objects = [w for w in wanted if not isinstance(w, str)]
    names = [w for w in wanted if isinstance(w, str)]
    chosen = objects + [c for c in pool if any(n in c.name for n in names)]
    if not chosen:
        raise ValueError(f"no case of {function} matches {list(wanted)}")
    return chosen


########################################################################
# inputs, reference, calling the user's function


def _inputs(
    spec: EstimatorSpec, case: Case, dtype: str, terminations_only: bool = False
) -> dict[str, Any]:
    """The case's arguments by name, NumPy in ``dtype`` (case layout);
    ``terminations_only`` makes every ``done`` a termination."""
    args, _ = case.build(SEED, dtype)
    inputs = dict(zip(case.signature.args, args, strict=True))
    if terminations_only:
        inputs["terminated"] = inputs["done"].copy()
    if spec.convention == "rlax":
        state, nxt = inputs["state_value"], inputs["next_state_value"].copy()
        t = case.time_dim % state.ndim
        head = [slice(None)] * state.ndim
        tail = list(head)
        head[t], tail[t] = slice(0, -1), slice(1, None)
        nxt[tuple(head)] = state[tuple(tail)]
        inputs["next_state_value"] = nxt
    return inputs


def _reference(case: Case, inputs: Mapping[str, Any], precision: str = "float64") -> list:
    """The reference (``kernel="reference"``) on ``inputs`` computed in ``precision``."""
    args = [
        np.asarray(v, precision) if _is_float(v) else v
        for v in (inputs[n] for n in case.signature.args)
    ]
    kwargs = {"time_dim": case.time_dim} if case.signature.has_time_dim else {}
    out = getattr(functional, case.function)(*args, **kwargs, kernel="reference")
    return [np.asarray(o, np.float64) for o in (out if isinstance(out, tuple) else (out,))]


def _is_float(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def _time_axis(spec: EstimatorSpec) -> int:
    return 0 if spec.convention == "time_major" else -2


def _not_expressible(spec: EstimatorSpec, case: Case, inputs: Mapping[str, Any]) -> str:
    if spec.convention != "rlax":
        return ""
    truncated = inputs["done"] & ~inputs["terminated"]
    inside = np.delete(truncated, -1, axis=case.time_dim % truncated.ndim)
    if inside.any():
        return (
            "not expressible in this convention: a truncation inside a trajectory "
            "(RLax's discount_t cuts bootstrap and trace together)"
        )
    return ""


def _differentiates(target: Target) -> bool:
    """Whether :func:`check` takes gradients on this backend (torch and JAX)."""
    return _framework(target) in ("torch", "jax")


def _framework(target: Target) -> str:
    return "torch" if target.label.startswith("torch") else target.label


def _call_user(
    fn: Callable[..., Any],
    spec: EstimatorSpec,
    case: Case,
    inputs: Mapping[str, Any],
    target: Target,
    grad: bool,
) -> tuple[list[np.ndarray], Any]:
    """``fn``'s outputs in case layout, and the :class:`_Graph` for gradients."""
    if spec.convention == "rlax":
        return _call_rlax(fn, case, inputs, target), None
    axis = _time_axis(spec)

    def convert(name: str, value: Any) -> Any:
        if not isinstance(value, np.ndarray):
            return value
        moved = np.moveaxis(value, case.time_dim, axis).copy()  # fn may write into it
        return _differentiable(target.convert(moved), grad and value.dtype.kind == "f")

    args = {n: convert(n, inputs[n]) for n in case.signature.args}
    call = _caller(fn, spec.argnames)
    raw = call(args)
    outs = [np.asarray(target.to_numpy(o)) for o in raw]
    outs = [np.moveaxis(o, axis, case.time_dim) if o.ndim >= 2 else o for o in outs]
    return outs, _Graph(args, raw, call, _framework(target)) if grad else None


def _caller(
    fn: Callable[..., Any], argnames: Mapping[str, str] | None
) -> Callable[[Mapping[str, Any]], list[Any]]:
    """``fn`` called on ``{our name: value}`` (positionally, or by keyword with
    ``argnames``), its outputs as a list."""

    def call(args: Mapping[str, Any]) -> list[Any]:
        if argnames is None:
            raw = fn(*args.values())
        else:
            raw = fn(**{argnames.get(n, n): v for n, v in args.items()})
        return list(raw) if isinstance(raw, (tuple, list)) else [raw]

    return call


def _differentiable(value: Any, wanted: bool) -> Any:
    """A torch tensor made a leaf that requires grad (when ``wanted``); anything else as
    it is (JAX differentiates by re-running the function under ``jax.vjp``)."""
    if wanted and hasattr(value, "requires_grad_"):
        return value.detach().requires_grad_(True)
    return value


@dataclass
class _Graph:
    """What the gradient check needs from one call of the user's function: its
    arguments, its outputs and (for JAX) the call itself, to run again under
    ``jax.vjp``."""

    args: dict[str, Any]
    outputs: list[Any]
    call: Callable[[Mapping[str, Any]], list[Any]]
    framework: str  # "torch" or "jax"

    def float_args(self, order: Sequence[str]) -> list[str]:
        """The floating-point array arguments (those the gradient is taken w.r.t.)."""
        return [
            n
            for n in order
            if hasattr(self.args[n], "dtype")
            and np.dtype(str(self.args[n].dtype).removeprefix("torch.")).kind == "f"
        ]

    def gradients(
        self, floats: list[str], weights: list[np.ndarray], chosen: Sequence[int] | None = None
    ) -> list[np.ndarray | None] | str:
        """``d Σ_i out_i · w_i / d arg`` for each of ``floats`` (``None``: not reached),
        over the outputs ``chosen`` (default all); or why it cannot be computed."""
        chosen = range(len(self.outputs)) if chosen is None else chosen
        if self.framework == "torch":
            return self._torch(floats, weights, chosen)
        return self._jax(floats, weights, chosen)

    def _torch(self, floats, weights, chosen) -> list[np.ndarray | None] | str:
        import torch

        picked = [self.outputs[i] for i in chosen]
        if not all(isinstance(o, torch.Tensor) and o.requires_grad for o in picked):
            return "outputs do not require grad: gradients not checked"
        loss = sum(
            (o * torch.as_tensor(w, dtype=o.dtype, device=o.device)).sum()
            for o, w in zip(picked, weights, strict=True)
        )
        grads = torch.autograd.grad(loss, [self.args[n] for n in floats], allow_unused=True)
        return [None if g is None else g.detach().cpu().numpy() for g in grads]

    def _jax(self, floats, weights, chosen) -> list[np.ndarray | None] | str:
        import jax
        import jax.numpy as jnp

        def f(*values: Any) -> tuple:
            outs = self.call({**self.args, **dict(zip(floats, values, strict=True))})
            return tuple(outs[i] for i in chosen)

        try:
            outs, pullback = jax.vjp(f, *[self.args[n] for n in floats])
            grads = pullback(
                tuple(jnp.asarray(w, o.dtype) for w, o in zip(weights, outs, strict=True))
            )
        except Exception as err:  # not traceable: say so, the values were still checked
            return (
                "gradients not checked: jax.vjp cannot differentiate your function "
                f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''})"
            )
        return [np.asarray(g) for g in grads]


def _call_rlax(
    fn: Callable[..., Any], case: Case, inputs: Mapping[str, Any], target: Target
) -> list[np.ndarray]:
    """One call per batch row and feature, time-series of ``T`` (``T + 1`` values)."""
    t = case.time_dim % inputs["reward"].ndim

    def rows(x: np.ndarray) -> np.ndarray:
        return np.moveaxis(x, t, -1).reshape(-1, x.shape[t])

    reward, term = rows(inputs["reward"]), rows(inputs["terminated"])
    state, last = rows(inputs["state_value"]), rows(inputs["next_state_value"])[:, -1:]
    gamma, lmbda = inputs["gamma"], inputs["lmbda"]
    gamma_rows = rows(gamma) if isinstance(gamma, np.ndarray) else None
    lmbda_rows = rows(lmbda) if isinstance(lmbda, np.ndarray) else None
    advantage = np.empty_like(reward)
    for i in range(reward.shape[0]):
        g = gamma if gamma_rows is None else gamma_rows[i]
        discount = (g * (1 - term[i])).astype(reward.dtype)
        values = np.concatenate([state[i], last[i]])
        lam = lmbda if lmbda_rows is None else target.convert(lmbda_rows[i].copy())
        out = fn(
            target.convert(reward[i].copy()), target.convert(discount), lam, target.convert(values)
        )
        advantage[i] = np.asarray(target.to_numpy(out))
    shape = np.moveaxis(inputs["reward"], t, -1).shape
    return [np.moveaxis(advantage.reshape(shape), -1, t)]


########################################################################
# one case


def _check_case(
    fn: Callable[..., Any],
    spec: EstimatorSpec,
    case: Case,
    dtype: str,
    target: Target,
    gradients: bool,
    float64_passed: bool | None,
    terminations_only: bool = False,
) -> CaseResult:
    name = f"{case.name}+terminations_only" if terminations_only else case.name
    result = CaseResult(name, dtype, "fail")
    inputs = _inputs(spec, case, dtype, terminations_only)
    reason = _not_expressible(spec, case, inputs)
    if reason:
        result.status, result.explanation = "not expressible", reason
        return result
    names = spec.checked_outputs
    every = _reference(case, inputs)
    reference = [every[spec.signature.outputs.index(n)] for n in names]
    grad = gradients and _differentiates(target) and spec.convention != "rlax"
    try:
        outs, graph = _call_user(fn, spec, case, inputs, target, grad)
    except Exception as err:  # the user's bug is a result, not a crash
        result.status = "error"
        result.explanation = f"your function raised {type(err).__name__}: {err}"
        return result
    problem = _shape_problem(spec, case, outs, reference, names, dtype)
    if problem:
        result.explanation = problem
        return result
    _measure(result, outs, reference, names, tolerance_for(spec, dtype))
    if graph is not None and result.passed:
        _check_gradients(result, spec, case, inputs, graph, names, dtype)
    if not result.passed and not result.explanation:
        result.explanation = _explain(spec, case, inputs, outs, names, dtype, float64_passed)
    return result


def _shape_problem(
    spec: EstimatorSpec,
    case: Case,
    outs: list[np.ndarray],
    reference: list[np.ndarray],
    names: tuple[str, ...],
    dtype: str,
) -> str:
    if len(outs) != len(reference):
        return (
            f"your function returned {len(outs)} output(s); expected {len(reference)}: "
            f"{', '.join(names)} (set EstimatorSpec(outputs=...) to check fewer)"
        )
    layout = {"torchrl": "[*B, T, F]", "time_major": "[T, *B, F]", "rlax": "[T]"}
    for name, out, ref in zip(names, outs, reference, strict=True):
        expected = np.moveaxis(ref, case.time_dim, _time_axis(spec)).shape
        got = (
            np.moveaxis(out, case.time_dim, _time_axis(spec)).shape if out.ndim >= 2 else out.shape
        )
        if spec.convention == "rlax":
            expected, got = (ref.shape[case.time_dim],), "per row as returned"
        if out.shape != ref.shape:
            hint = ""
            if len(got) == len(expected) - 1 and expected[-1] == 1:
                hint = ": the trailing feature dim (F = 1) is missing"
            return f"{name}: expected shape {expected} {layout[spec.convention]}, got {got}{hint}"
        if out.dtype != np.dtype(dtype):
            return (
                f"{name}: your function returned {out.dtype} for {dtype} inputs; "
                "the output dtype must follow the inputs'"
            )
    return ""


def _measure(
    result: CaseResult,
    outs: list[np.ndarray],
    reference: list[np.ndarray],
    names: tuple[str, ...],
    tolerance: float,
) -> None:
    """Errors, pass/fail (against ``tolerance``, a scaled error) and the first differing
    element of the worst output."""
    errors = [scaled_error(o, r) for o, r in zip(outs, reference, strict=True)]
    worst = int(np.argmax(errors))
    result.scaled_error = max(errors)
    result.max_abs_error = max(
        float(np.nanmax(np.abs(o.astype(np.float64) - r), initial=0.0))
        for o, r in zip(outs, reference, strict=True)
    )
    if result.scaled_error <= tolerance:
        result.status = "pass"
        return
    out, ref = outs[worst].astype(np.float64), reference[worst]
    bound = tolerance * max(1.0, float(np.nanmax(np.abs(ref), initial=0.0)))
    bad = (np.abs(out - ref) > bound) | (np.isnan(out) != np.isnan(ref))
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    result.first_index, result.output = index, names[worst]
    result.yours, result.reference = float(out[index]), float(ref[index])


def _check_gradients(
    result: CaseResult,
    spec: EstimatorSpec,
    case: Case,
    inputs: Mapping[str, Any],
    graph: Any,
    names: tuple[str, ...],
    dtype: str,
) -> None:
    """Gradient of ``sum(out * w)`` w.r.t. the float inputs, against arrayrl's torch."""
    axis = _time_axis(spec)
    rng = np.random.default_rng(SEED + 1)
    shapes = [
        np.moveaxis(np.empty(tuple(o.shape)), axis, case.time_dim).shape for o in graph.outputs
    ]
    weights = [rng.standard_normal(shape) for shape in shapes]
    floats = graph.float_args(case.signature.args)
    yours = graph.gradients(floats, [np.moveaxis(w, case.time_dim, axis) for w in weights])
    if isinstance(yours, str):
        result.explanation = yours
        return
    theirs = _reference_gradients(case, inputs, floats, names, weights)
    mine = [None if g is None else np.moveaxis(g, axis, case.time_dim) for g in yours]
    compare_gradients(result, floats, mine, theirs, tolerance_for(spec, dtype))


def compare_gradients(
    result: CaseResult,
    floats: Sequence[str],
    yours: Sequence[np.ndarray | None],
    theirs: Sequence[np.ndarray],
    tolerance: float,
) -> str:
    """Set ``result``'s gradient error (the worst over ``floats``) and fail it past
    ``tolerance``; returns the argument with the worst error."""
    worst, where = 0.0, ""
    for name, g, ref in zip(floats, yours, theirs, strict=True):
        error = scaled_error(np.zeros_like(ref) if g is None else g, ref)
        if error > worst:
            worst, where = error, name
    result.gradient_error = worst
    if worst > tolerance:
        result.status = "fail"
        result.explanation = (
            f"outputs match but the gradient w.r.t. {where} differs (scaled error {worst:.2e})"
        )
    return where


def _reference_gradients(
    case: Case,
    inputs: Mapping[str, Any],
    floats: list[str],
    names: tuple[str, ...],
    weights: list[np.ndarray],
) -> list[np.ndarray]:
    import torch

    tensors = {
        n: torch.from_numpy(np.asarray(v, np.float64)).requires_grad_(n in floats)
        if _is_float(v)
        else (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
        for n, v in inputs.items()
    }
    kwargs = {"time_dim": case.time_dim} if case.signature.has_time_dim else {}
    out = getattr(functional, case.function)(
        *[tensors[n] for n in case.signature.args], **kwargs, kernel="reference"
    )
    out = out if isinstance(out, tuple) else (out,)
    chosen = [out[case.signature.outputs.index(n)] for n in names]
    loss = sum((o * torch.from_numpy(w)).sum() for o, w in zip(chosen, weights, strict=True))
    grads = torch.autograd.grad(loss, [tensors[n] for n in floats], allow_unused=True)
    return [
        np.zeros(np.shape(inputs[n])) if g is None else g.numpy()
        for n, g in zip(floats, grads, strict=True)
    ]


########################################################################
# explanations: which perturbed reference does the user's output match?


def _perturbations(case: Case, inputs: Mapping[str, Any]) -> list[tuple[str, dict]]:
    args = case.signature.args
    out: list[tuple[str, dict]] = []
    if "terminated" in args and "done" in args:
        out.append(
            (
                "differs only where done & ~terminated: your function does not bootstrap at "
                "truncation (it treats done as terminated)",
                {"terminated": inputs["done"]},
            )
        )
        out.append(
            (
                "your function does not cut the trajectory at truncation (done & ~terminated "
                "is ignored: the trace runs on into the next trajectory)",
                {"done": inputs["terminated"]},
            )
        )
    if "done" in args:
        out.append(
            (
                "your function does not cut the trace at done (returns leak across the "
                "end of a trajectory into the next one)",
                {"done": np.zeros_like(inputs["done"])},
            )
        )
    if "gamma" in args and "lmbda" in args:
        out.append(
            (
                "gamma and lmbda are swapped (your function discounts by λ and mixes by γ)",
                {"gamma": inputs["lmbda"], "lmbda": inputs["gamma"]},
            )
        )
    if "rho_thresh" in args:
        rho, c = inputs["rho_thresh"], inputs["c_thresh"]
        out += [
            (
                "V-trace clipping: rho_thresh and c_thresh are swapped",
                {"rho_thresh": c, "c_thresh": rho},
            ),
            (
                "V-trace clipping: the importance weights are not clipped at all",
                {"rho_thresh": 1e30, "c_thresh": 1e30},
            ),
            ("V-trace clipping: rho (the TD-error weight) is not clipped", {"rho_thresh": 1e30}),
            ("V-trace clipping: c (the trace weight) is not clipped", {"c_thresh": 1e30}),
            ("V-trace clipping: c is clipped at rho_thresh", {"c_thresh": rho}),
            ("V-trace clipping: rho is clipped at c_thresh", {"rho_thresh": c}),
        ]
    return out


def _matches(outs: list[np.ndarray], reference: list[np.ndarray], dtype: str) -> bool:
    return (
        max(scaled_error(o, r) for o, r in zip(outs, reference, strict=True)) <= (TOLERANCE[dtype])
    )


def _explain(
    spec: EstimatorSpec,
    case: Case,
    inputs: Mapping[str, Any],
    outs: list[np.ndarray],
    names: tuple[str, ...],
    dtype: str,
    float64_passed: bool | None,
) -> str:
    def pick(every: list[np.ndarray]) -> list[np.ndarray]:
        return [every[spec.signature.outputs.index(n)] for n in names]

    if dtype == "float64":
        single = pick(_reference(case, inputs, "float32"))
        if _matches(outs, single, "float32"):
            return (
                "accumulates in float32: your float64 output matches the reference "
                "computed in float32"
            )
    for words, change in _perturbations(case, inputs):
        if _matches(outs, pick(_reference(case, {**inputs, **change})), dtype):
            return words
    shifted = _shift(case, outs, pick(_reference(case, inputs)), names, dtype)
    if shifted:
        return shifted
    if dtype == "float32" and float64_passed:
        return (
            "float32 precision: the float64 case passes, so the algorithm is right but "
            "its float32 rounding exceeds the tolerance (accumulate in a wider dtype or "
            "in the reference's order)"
        )
    return _where(case, inputs, outs, pick(_reference(case, inputs)), names, dtype)


def _shift(
    case: Case,
    outs: list[np.ndarray],
    reference: list[np.ndarray],
    names: tuple[str, ...],
    dtype: str,
) -> str:
    """Which outputs at step ``t`` equal the reference at ``t ± 1``."""
    t = case.time_dim % outs[0].ndim
    steps = outs[0].shape[t]
    if not case.signature.has_time_dim or steps < 3:
        return ""
    for lag, words in ((1, "t + 1 (one step late)"), (-1, "t - 1 (one step early)")):
        keep = np.arange(steps - 1) if lag == 1 else np.arange(1, steps)
        shifted = [
            name
            for name, o, r in zip(names, outs, reference, strict=True)
            if _matches([np.take(o, keep, axis=t)], [np.take(r, keep + lag, axis=t)], dtype)
        ]
        if shifted:
            return (
                f"off by one in time: your {' and '.join(shifted)} at step t is the "
                f"reference's at step {words}"
            )
    return ""


def _where(
    case: Case,
    inputs: Mapping[str, Any],
    outs: list[np.ndarray],
    reference: list[np.ndarray],
    names: tuple[str, ...],
    dtype: str,
) -> str:
    """Where the differences are, when no known mistake explains them."""
    parts = []
    for name, out, ref in zip(names, outs, reference, strict=True):
        bound = TOLERANCE[dtype] * max(1.0, float(np.nanmax(np.abs(ref), initial=0.0)))
        bad = (np.abs(out.astype(np.float64) - ref) > bound) | (np.isnan(out) != np.isnan(ref))
        if not bad.any():
            continue
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        text = (
            f"{name} differs at {int(bad.sum())} of {bad.size} elements (done pattern "
            f"{case.pattern!r}); first at {first}: yours {float(out[first])!r}, "
            f"reference {float(ref[first])!r}"
        )
        if "done" in inputs and np.shape(inputs["done"]) == bad.shape:
            done = inputs["done"]
            truncated = done & ~inputs.get("terminated", done)
            if truncated.any() and not (bad & ~truncated).any():
                text += "; only at truncations (done & ~terminated)"
            elif done.any() and not (bad & ~done).any():
                text += "; only at done steps"
        parts.append(text)
    return "; ".join(parts) or "differs from the reference"
