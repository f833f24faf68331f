"""Stable-Baselines3's RolloutBuffer GAE (conformance/frameworks/sb3.py) through check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")

from arrayrl.conformance.cases import Case, all_cases  # noqa: E402
from arrayrl.conformance.check import check  # noqa: E402
from arrayrl.conformance.frameworks import framework  # noqa: E402
from arrayrl.conformance.frameworks.cleanrl import gae_time_major as cleanrl_gae  # noqa: E402
from arrayrl.conformance.frameworks.sb3 import _buffer, gae_time_major_native  # noqa: E402

GAE = "generalized_advantage_estimate"


@dataclass(frozen=True)
class Consistent(Case):
    """A case whose ``next_state_value[t] = state_value[t + 1]`` inside trajectories
    (time-major layouts only): what a real rollout gives SB3."""

    def build(self, seed: int, dtype: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = super().build(seed, dtype)
        named = dict(zip(self.signature.args, args, strict=True))
        value, nxt, done = named["state_value"], named["next_state_value"].copy(), named["done"]
        nxt[:-1] = np.where(done[:-1], nxt[:-1], value[1:])
        named["next_state_value"] = nxt
        return tuple(named[n] for n in self.signature.args), kwargs


def _time_major_cases() -> list[Case]:
    return [c for c in all_cases() if c.function == GAE and c.time_dim == 0]


@pytest.fixture(scope="module")
def implementation():
    fw = framework("sb3")
    assert fw.missing() is None
    (impl,) = fw.implementations()
    return impl


def test_framework_fields():
    fw = framework("sb3")
    assert fw.pip == "stable-baselines3"
    assert fw.version() == f"stable-baselines3 {sb3.__version__}"


def test_passes_every_case_but_per_step_hyperparameters(implementation):
    report = check(implementation.fn, implementation.spec, backend=implementation.backend)
    for result in report.results:
        if result.case.endswith("[per_step_gamma]"):
            assert result.status == "error" and "per-step" in result.explanation
            assert any(d.covers(result.case) for d in implementation.disagreements)
        else:
            assert result.passed, str(result)
    assert sum(r.passed for r in report.results) == 50


def test_sb3_float32_buffer_passes_in_float32(implementation):
    cases = [c for c in all_cases() if c.function == GAE and not c.per_step_gamma]
    report = check(gae_time_major_native, implementation.spec, dtypes=("float32",), cases=cases)
    assert report.passed, str(report)


def test_consistent_rollout_needs_no_interior_correction(implementation):
    cases = [
        Consistent(c.name + "+consistent", GAE, c.shape, c.time_dim, c.pattern)
        for c in _time_major_cases()
    ]
    report = check(implementation.fn, implementation.spec, cases=cases)
    assert report.passed, str(report)


def test_without_reward_folding_sb3_does_not_bootstrap_truncations(implementation):
    """Mark a truncation done without adding γ·V(terminal obs): SB3 gives CleanRL's answer."""

    def unfolded(gamma, lmbda, state_value, next_state_value, reward, done, terminated):
        return implementation.fn(gamma, lmbda, state_value, next_state_value, reward, done, done)

    case = [c for c in _time_major_cases() if c.pattern == "truncated_only"]
    report = check(unfolded, implementation.spec, cases=case)
    assert not report.passed
    for result in report.results:
        assert "does not bootstrap at truncation" in result.explanation
    ours = check(cleanrl_gae, implementation.spec, cases=case)
    for a, b in zip(report.results, ours.results, strict=True):
        assert a.yours == pytest.approx(b.yours)


def test_buffer_in_case_dtype_keeps_sb3_method():
    buffer = _buffer(4, 2, 0.9, 0.8, np.float64)
    assert buffer.values.dtype == np.float64
    assert (buffer.gamma, buffer.gae_lambda) == (0.9, 0.8)
    assert type(buffer).compute_returns_and_advantage.__module__.startswith("stable_baselines3")
