"""Other frameworks' implementations of the same maths, as :func:`~..check.check` targets.

A framework module of this package (``torchrl``, ``rlax``, ``sb3``, ``cleanrl``) defines
``FRAMEWORK``, a :class:`Framework`: how to tell whether it is installed, its version,
and its :class:`Implementation` s. An implementation is a function written in one of
:func:`~..check.check`'s conventions (:class:`~..check.EstimatorSpec`) that calls the
framework's own code, with the framework's conventions mapped onto the case explicitly
in its ``note``. Where the framework gives a different answer *by design* (truncation
folded into the reward at collection time, ``done = terminated | truncated``, float32
constants), a :class:`Disagreement` names it, links the upstream issue and says which
cases it covers, so that the matrix reports it instead of failing.

``arrayrl conformance --against torchrl,rlax,sb3,cleanrl`` runs every implementation of
the frameworks named through ``check`` and prints one matrix (case × implementation,
each cell the scaled error against the float64 reference); ``--report report.md`` also
writes it as Markdown and JSON.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..check import EstimatorSpec
from ..terms import TermSpec

__all__ = [
    "FRAMEWORKS",
    "Disagreement",
    "Framework",
    "Implementation",
    "framework",
    "scalar_hyperparameters",
    "term_implementation",
]

#: the framework modules of this package, in report order
FRAMEWORKS: tuple[str, ...] = ("torchrl", "rlax", "sb3", "cleanrl")


@dataclass(frozen=True)
class Disagreement:
    """A known, by-design difference between a framework and the reference.

    ``key``: a short id (``"sb3-truncation-in-reward"``); ``covers(case_name) -> bool``:
    the cases where it applies (their failures are reported as this disagreement, not as
    failures); ``explanation``: one paragraph a user can act on; ``upstream``: the issue
    or document that discusses it (a URL or ``"owner/repo#N"``), ``None`` if none found;
    ``reproducer``: a minimal reproducer, the dotted name of a function in
    ``conformance/`` that shows it (returns the two numbers that differ); ``dtypes``:
    the input dtypes it applies to (``None``: all).
    """

    key: str
    covers: Callable[[str], bool]
    explanation: str
    upstream: str | None = None
    reproducer: str | None = None
    dtypes: tuple[str, ...] | None = None

    def applies(self, case_name: str, dtype: str) -> bool:
        """Whether this disagreement explains a difference in ``case_name`` at ``dtype``."""
        return (self.dtypes is None or dtype in self.dtypes) and self.covers(case_name)


def scalar_hyperparameters(prefix: str, takes_them_as: str) -> Disagreement:
    """The disagreement of a framework whose γ and λ are floats, so the per-step γ and λ
    case (``[per_step_gamma]``) cannot be expressed: ``prefix`` names the key
    (``"sb3"`` → ``"sb3-scalar-gamma-lambda"``), ``takes_them_as`` says where the floats
    come from."""
    return Disagreement(
        key=f"{prefix}-scalar-gamma-lambda",
        covers=lambda name: name.endswith("[per_step_gamma]"),
        explanation=(
            f"{takes_them_as} (floats): per-step γ and λ arrays cannot be expressed; the "
            "implementation raises TypeError on them."
        ),
    )


@dataclass(frozen=True)
class Implementation:
    """One framework function, wrapped to a :func:`~..check.check` convention.

    ``name``: what the matrix column shows (``"rlax.truncated_generalized_advantage_estimation"``);
    ``spec``: its :class:`~..check.EstimatorSpec` (an estimator) or
    :class:`~..terms.TermSpec` (a loss term); ``backend``: the arrays it takes
    (``"jax"``, ``"torch"``, ``"numpy"``); ``fn``: the wrapped callable; ``note``: how the
    case's arrays are mapped onto the framework's arguments (one or two sentences);
    ``disagreements``: the :class:`Disagreement` s that apply to it.
    """

    name: str
    spec: EstimatorSpec | TermSpec
    backend: str
    fn: Callable[..., Any]
    note: str = ""
    disagreements: tuple[Disagreement, ...] = ()


@dataclass(frozen=True)
class Framework:
    """A framework: ``name``; ``pip`` (what to install); ``missing() -> str | None`` (why
    it cannot run here, ``None`` when it can); ``version() -> str``;
    ``implementations() -> list[Implementation]`` (called only when it can run)."""

    name: str
    pip: str
    missing: Callable[[], str | None]
    version: Callable[[], str]
    implementations: Callable[[], list[Implementation]]
    disagreements: tuple[Disagreement, ...] = field(default=())


def term_implementation(
    framework_name: str,
    backend: str,
    name: str,
    function: str,
    outputs: tuple[str, ...],
    fn: Callable[..., Any],
    note: str,
    disagreements: tuple[Disagreement, ...] | list[Disagreement] = (),
) -> Implementation:
    """An :class:`Implementation` of the loss term ``function`` (a :class:`~..terms.TermSpec`
    checking ``outputs``), named ``"<framework_name>.<name>"``."""
    return Implementation(
        name=f"{framework_name}.{name}",
        spec=TermSpec(function, outputs=outputs),
        backend=backend,
        fn=fn,
        note=note,
        disagreements=tuple(disagreements),
    )


def framework(name: str) -> Framework:
    """The :class:`Framework` called ``name`` (``ValueError`` listing the known ones)."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; one of {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f".{name}", __package__).FRAMEWORK
