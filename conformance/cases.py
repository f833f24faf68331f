"""The conformance cases: every estimator function on many input patterns.

A case is a name, the function it calls, and a builder ``(seed, dtype) -> (args, kwargs)``
that makes the inputs in NumPy. The runner converts the arrays to each backend.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DTYPES = ("float64", "float32")

#: done patterns: how trajectories end inside the batch
PATTERNS = ("random", "first_and_last", "all_done", "none_done", "truncated_only")


@dataclass(frozen=True)
class Signature:
    """How to call one estimator function: its positional array and scalar arguments."""

    args: tuple[str, ...]
    outputs: tuple[str, ...]
    has_time_dim: bool = True
    keyword_args: tuple[str, ...] = ()


SIGNATURES: dict[str, Signature] = {
    "generalized_advantage_estimate": Signature(
        ("gamma", "lmbda", "state_value", "next_state_value", "reward", "done", "terminated"),
        ("advantage", "value_target"),
    ),
    "td0_return_estimate": Signature(
        ("gamma", "next_state_value", "reward", "terminated"), ("returns",), has_time_dim=False
    ),
    "td0_advantage_estimate": Signature(
        ("gamma", "state_value", "next_state_value", "reward", "done", "terminated"),
        ("advantage",),
        has_time_dim=False,
    ),
    "td1_return_estimate": Signature(
        ("gamma", "next_state_value", "reward", "done", "terminated", "rolling_gamma"),
        ("returns",),
    ),
    "td1_advantage_estimate": Signature(
        ("gamma", "state_value", "next_state_value", "reward", "done", "terminated",
         "rolling_gamma"),
        ("advantage",),
    ),
    "td_lambda_return_estimate": Signature(
        ("gamma", "lmbda", "next_state_value", "reward", "done", "terminated", "rolling_gamma"),
        ("returns",),
    ),
    "td_lambda_advantage_estimate": Signature(
        ("gamma", "lmbda", "state_value", "next_state_value", "reward", "done", "terminated",
         "rolling_gamma"),
        ("advantage",),
    ),
    "vtrace_advantage_estimate": Signature(
        ("gamma", "log_pi", "log_mu", "state_value", "next_state_value", "reward", "done",
         "terminated", "rho_thresh", "c_thresh"),
        ("advantage", "value_target"),
    ),
    "reward2go": Signature(("reward", "done", "gamma"), ("returns",)),
}


@dataclass(frozen=True)
class Case:
    """One function on one input pattern; ``build(seed, dtype)`` makes its inputs."""

    name: str
    function: str
    shape: tuple[int, ...]
    time_dim: int = -2
    pattern: str = "random"
    per_step_gamma: bool = False
    rolling_gamma: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def signature(self) -> Signature:
        return SIGNATURES[self.function]

    def build(self, seed: int, dtype: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments, arrays in NumPy of ``dtype``."""
        rng = np.random.default_rng(seed)
        pool = _input_pool(rng, self.shape, self.time_dim, self.pattern, np.dtype(dtype))
        if self.per_step_gamma:
            pool["gamma"] = rng.uniform(0.8, 0.99, self.shape).astype(dtype)
            pool["lmbda"] = rng.uniform(0.5, 0.99, self.shape).astype(dtype)
        pool["rolling_gamma"] = self.rolling_gamma
        pool.update(self.options)
        args = tuple(pool[name] for name in self.signature.args)
        kwargs = {"time_dim": self.time_dim} if self.signature.has_time_dim else {}
        return args, kwargs


def _input_pool(
    rng: np.random.Generator, shape: tuple[int, ...], time_dim: int, pattern: str, dtype: Any
) -> dict[str, Any]:
    def normal(scale: float = 1.0) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(dtype)

    done, terminated = make_masks(rng, shape, time_dim, pattern)
    return {
        "gamma": 0.97,
        "lmbda": 0.9,
        "state_value": normal(),
        "next_state_value": normal(),
        "reward": normal(),
        "log_pi": normal(0.5),
        "log_mu": normal(0.5),
        "rho_thresh": 1.0,
        "c_thresh": 1.0,
        "done": done,
        "terminated": terminated,
    }


def make_masks(
    rng: np.random.Generator, shape: tuple[int, ...], time_dim: int, pattern: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(done, terminated)`` with ``terminated`` ⊆ ``done``, following ``pattern``."""
    steps = shape[time_dim]
    along_time = [1] * len(shape)
    along_time[time_dim] = steps
    t_index = np.arange(steps).reshape(along_time)
    if pattern == "all_done":
        done = np.ones(shape, bool)
    elif pattern == "none_done":
        done = np.zeros(shape, bool)
    elif pattern == "first_and_last":
        done = np.broadcast_to((t_index == 0) | (t_index == steps - 1), shape).copy()
    else:
        done = rng.random(shape) < 0.2
    if pattern == "truncated_only":
        return done, np.zeros(shape, bool)
    terminated = done & (rng.random(shape) < 0.5)
    return done, terminated


def _shapes() -> list[tuple[str, tuple[int, ...], int]]:
    """(label, shape, time_dim) layouts every function is run on."""
    return [
        ("B4_T16_F1", (4, 16, 1), -2),
        ("T1", (3, 1, 1), -2),
        ("B2x3_T9_F1", (2, 3, 9, 1), -2),
        ("B3_T8_F3", (3, 8, 3), -2),
        ("time_major_T12_B5", (12, 5, 1), 0),
    ]


def all_cases() -> list[Case]:
    """Every conformance case."""
    cases: list[Case] = []
    for function, (label, shape, time_dim), pattern in itertools.product(
        SIGNATURES, _shapes(), PATTERNS
    ):
        if not SIGNATURES[function].has_time_dim and time_dim != -2:
            continue
        cases.append(
            Case(f"{function}[{label},{pattern}]", function, shape, time_dim, pattern)
        )
    for function in SIGNATURES:
        if function == "reward2go":
            continue
        cases.append(
            Case(f"{function}[per_step_gamma]", function, (3, 10, 1), per_step_gamma=True)
        )
    for function in ("td1_return_estimate", "td_lambda_return_estimate",
                     "td_lambda_advantage_estimate"):
        cases.append(
            Case(
                f"{function}[rolling_gamma=False]",
                function,
                (3, 10, 1),
                per_step_gamma=True,
                rolling_gamma=False,
            )
        )
    cases.append(
        Case(
            "vtrace_advantage_estimate[thresholds]",
            "vtrace_advantage_estimate",
            (4, 12, 1),
            options={"rho_thresh": 0.8, "c_thresh": 1.3},
        )
    )
    return cases
