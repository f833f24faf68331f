"""Stable-Baselines3 (conformance/frameworks/sb3.py) through check: RolloutBuffer GAE, and the
PPO, DQN and SAC loss terms isolated by running SB3's own train()."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

sb3 = pytest.importorskip("stable_baselines3")

from arrayrl.conformance.cases import Case, all_cases  # noqa: E402
from arrayrl.conformance.check import check  # noqa: E402
from arrayrl.conformance.frameworks import framework  # noqa: E402
from arrayrl.conformance.frameworks.cleanrl import gae_time_major as cleanrl_gae  # noqa: E402
from arrayrl.conformance.frameworks.sb3 import (  # noqa: E402
    _buffer,
    dqn_q_learning,
    gae_time_major_native,
    ppo_clipped_surrogate,
    sac_losses,
)
from arrayrl.conformance.terms import TermSpec, term_cases  # noqa: E402

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
    (impl,) = [i for i in fw.implementations() if i.spec.function == GAE]
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


########################################################################
# loss terms through PPO.train(), DQN.train(), SAC.train()

PPO_SPEC = TermSpec("clipped_surrogate", outputs=("loss_objective_mean", "clip_fraction"))
DQN_SPEC = TermSpec("q_learning", outputs=("smooth_l1_loss",))
SAC_SPEC = TermSpec("sac_terms", outputs=("loss_actor", "loss_qvalue", "loss_alpha"))
DTYPES = ("float64", "float32")
TERM_IMPLEMENTATIONS = {
    "stable_baselines3.PPO.train": (PPO_SPEC, ppo_clipped_surrogate),
    "stable_baselines3.DQN.train": (DQN_SPEC, dqn_q_learning),
    "stable_baselines3.SAC.train": (SAC_SPEC, sac_losses),
}


@pytest.fixture(scope="module")
def term_implementations():
    return {i.name: i for i in framework("sb3").implementations() if i.name in TERM_IMPLEMENTATIONS}


def test_term_implementations_are_listed(term_implementations):
    assert set(term_implementations) == set(TERM_IMPLEMENTATIONS)
    for name, (spec, fn) in TERM_IMPLEMENTATIONS.items():
        implementation = term_implementations[name]
        assert implementation.spec == spec and implementation.fn is fn
        assert implementation.backend == "numpy"
        assert "train" in implementation.note and "gradients" in implementation.note


@pytest.mark.parametrize("name", list(TERM_IMPLEMENTATIONS))
def test_term_passes_every_case_in_both_dtypes(term_implementations, name):
    implementation = term_implementations[name]
    report = check(implementation.fn, implementation.spec, backend="numpy")
    assert report.passed, str(report)
    expected = {(c.name, d) for c in term_cases(implementation.spec.function) for d in DTYPES}
    assert {(r.case, r.dtype) for r in report.results} == expected


def test_ppo_reads_the_log_prob_table():
    """Swapping log_prob and prev_log_prob inverts SB3's ratio: check says so."""

    def swapped(log_prob, prev_log_prob, advantage, clip_epsilon):
        return ppo_clipped_surrogate(prev_log_prob, log_prob, advantage, clip_epsilon)

    report = check(swapped, PPO_SPEC)
    assert not report.passed
    assert all("ratio is inverted" in r.explanation for r in report.results if not r.passed)
    assert sum(not r.passed for r in report.results) >= 6


def test_ppo_wrong_log_prob_rows_fail():
    """A log_prob table read at the wrong rows (shifted by one sample) fails."""

    def shifted(log_prob, prev_log_prob, advantage, clip_epsilon):
        rolled = np.roll(log_prob.ravel(), 1).reshape(log_prob.shape)
        return ppo_clipped_surrogate(rolled, prev_log_prob, advantage, clip_epsilon)

    report = check(shifted, PPO_SPEC, cases=["B64", "B8x16"])
    assert not any(r.passed for r in report.results)


def test_ppo_value_comes_from_sb3_train(monkeypatch):
    """Without SB3's th.clamp (the clipping in PPO.train) check finds an unclipped loss."""
    import stable_baselines3.ppo.ppo as ppo_module
    import torch

    class NoClamp(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def clamp(x, *args, **kwargs):
            return x

    monkeypatch.setattr(ppo_module, "th", NoClamp("torch"))
    report = check(ppo_clipped_surrogate, PPO_SPEC, cases=["B64", "far_outside"])
    assert not report.passed
    for result in report.results:
        assert "not clipped" in result.explanation


def test_dqn_planted_mistakes():
    def no_cut(q_values, action, reward, terminated, next_q_values, gamma):
        return dqn_q_learning(q_values, action, reward, terminated & False, next_q_values, gamma)

    def online(q_values, action, reward, terminated, next_q_values, gamma):
        return dqn_q_learning(q_values, action, reward, terminated, q_values, gamma)

    for wrong, words in ((no_cut, "does not cut the bootstrap"), (online, "from q_values")):
        report = check(wrong, DQN_SPEC, cases=["B64_A4", "B8x5_A2"])
        assert not report.passed
        assert all(words in r.explanation for r in report.results), str(report)


def test_dqn_value_comes_from_sb3_train(monkeypatch):
    """With SB3's Huber loss replaced by an MSE, DQN.train() logs the reference's l2_loss."""
    import stable_baselines3.dqn.dqn as dqn_module
    import torch.nn.functional as F

    patched = types.SimpleNamespace(smooth_l1_loss=F.mse_loss)
    monkeypatch.setattr(dqn_module, "F", patched)
    l2 = TermSpec("q_learning", outputs=("l2_loss",))
    assert check(dqn_q_learning, l2, dtypes=("float64",)).passed


def test_sac_planted_mistakes():
    def no_entropy(log_prob, q_new, q, next_log_prob, *rest):
        return sac_losses(log_prob, q_new, q, np.zeros_like(next_log_prob), *rest)

    def no_cut(*args):
        *head, terminated, gamma, log_alpha, target_entropy = args
        return sac_losses(*head, terminated & False, gamma, log_alpha, target_entropy)

    report = check(no_entropy, SAC_SPEC, dtypes=("float64",))
    assert not report.passed
    assert all("no entropy bonus" in r.explanation for r in report.results), str(report)
    report = check(no_cut, SAC_SPEC, dtypes=("float64",))
    assert not report.passed
    assert all("does not cut the bootstrap" in r.explanation for r in report.results)


def test_sac_critic_loss_is_sb3s_half_sum_of_mse(monkeypatch):
    """SB3's critic loss calls F.mse_loss once per critic; doubling it gives the reference's
    "no ½" mistake."""
    import stable_baselines3.sac.sac as sac_module
    import torch.nn.functional as F

    calls = []

    def doubled(a, b):
        calls.append(a.shape)
        return 2.0 * F.mse_loss(a, b)

    monkeypatch.setattr(sac_module, "F", types.SimpleNamespace(mse_loss=doubled))
    report = check(sac_losses, SAC_SPEC, dtypes=("float64",), cases=["B8x4_C3"])
    assert not report.passed
    assert "no ½" in report.results[0].explanation, str(report)
    assert calls == [(32, 1)] * 3


def test_lookups_leave_global_random_state_alone():
    import torch

    case = term_cases("sac_terms")[0]
    inputs = case.build(0, "float64")
    before = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()  # noqa: NPY002
    sac_losses(**inputs)
    ppo_clipped_surrogate(**term_cases("clipped_surrogate")[0].build(0, "float64"))
    assert (np.random.get_state()[1] == before[0]).all()  # noqa: NPY002
    assert torch.equal(torch.random.get_rng_state(), before[1])


def test_lookups_outputs_follow_the_case_dtype():
    inputs = term_cases("q_learning")[0].build(0, "float32")
    assert dqn_q_learning(**inputs).dtype == np.float32
    inputs = term_cases("sac_terms")[1].build(0, "float32")
    assert {o.dtype for o in sac_losses(**inputs)} == {np.dtype("float32")}


def test_sac_uses_the_temperature_before_its_step(monkeypatch):
    """SB3 takes α = exp(log_ent_coef) before stepping the temperature optimizer: with a
    temperature learning rate of 1, the critic and actor losses still match α = e^{log_alpha}
    (only train/ent_coef_loss is of the old log α too), so lr 0 is not what makes them match."""
    from stable_baselines3 import SAC

    def fast_temperature(self, optimizers):
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = 1.0 if optimizer is self.ent_coef_optimizer else 0.0

    stepped = []
    train = SAC.train

    def train_and_record(self, *args, **kwargs):
        before = float(self.log_ent_coef.detach())
        train(self, *args, **kwargs)
        stepped.append(float(self.log_ent_coef.detach()) - before)

    monkeypatch.setattr(SAC, "_update_learning_rate", fast_temperature)
    monkeypatch.setattr(SAC, "train", train_and_record)
    report = check(sac_losses, SAC_SPEC, dtypes=("float64",))
    assert report.passed, str(report)
    assert len(stepped) == 2 and all(abs(step) > 0.5 for step in stepped)
