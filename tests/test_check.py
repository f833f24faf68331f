"""``arrayrl.conformance.check``: it passes correct implementations written here
independently (plain NumPy loops) and arrayrl's own on each backend, and fails each
deliberately wrong one with the explanation that names its mistake."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from arrayrl.conformance import CheckReport, EstimatorSpec, check

import arrayrl.objectives.value.functional as functional

GAE = "generalized_advantage_estimate"
# a few GAE cases that cover truncations, terminations, time-major input, per-step γ
FEW = [
    "B4_T16_F1,random",
    "B2x3_T9_F1,truncated_only",
    "time_major_T12_B5,random",
    "[per_step_gamma]",
    "T1,all_done",
]


def _steps(x, axis):
    """``x`` with time first (a float broadcast to ``like``'s shape is done by caller)."""
    return np.moveaxis(np.asarray(x), axis, 0)


def make_gae(
    *,
    bootstrap_truncation=True,
    cut_truncation=True,
    swap=False,
    late=False,
    accumulator=None,
    axis=-2,
):
    """A GAE written as a loop over time; the keyword arguments plant one mistake."""

    def gae(gamma, lmbda, value, next_value, reward, done, terminated):
        if swap:
            gamma, lmbda = lmbda, gamma
        r = _steps(reward, axis)
        v, nv = _steps(value, axis), _steps(next_value, axis)
        g = _steps(np.broadcast_to(gamma, reward.shape), axis)
        lam = _steps(np.broadcast_to(lmbda, reward.shape), axis)
        d, term = _steps(done, axis), _steps(terminated, axis)
        if not bootstrap_truncation:
            term = d
        if not cut_truncation:
            d = term
        dtype = accumulator or r.dtype
        adv = np.zeros(r.shape, dtype)
        running = np.zeros(r.shape[1:], dtype)
        for t in reversed(range(r.shape[0])):
            delta = r[t] + g[t] * (~term[t]) * nv[t] - v[t]
            running = (delta + g[t] * lam[t] * (~d[t]) * running).astype(dtype)
            adv[t] = running
        adv = adv.astype(r.dtype)
        if late:
            adv = np.concatenate([adv[1:], adv[-1:]])
        return np.moveaxis(adv, 0, axis), np.moveaxis(adv + v, 0, axis)

    return gae


def make_vtrace(*, c_at_rho=False):
    """V-trace as a loop over time (axis -2); ``c_at_rho`` clips c at rho_thresh."""

    def vtrace(
        gamma, log_pi, log_mu, value, next_value, reward, done, terminated, rho_thresh, c_thresh
    ):
        r, v, nv = _steps(reward, -2), _steps(value, -2), _steps(next_value, -2)
        d, term = _steps(done, -2), _steps(terminated, -2)
        rho = np.exp(_steps(log_pi, -2) - _steps(log_mu, -2))
        rho_bar = np.minimum(rho, rho_thresh)
        c_bar = np.minimum(rho, rho_thresh if c_at_rho else c_thresh)
        gamma = _steps(np.broadcast_to(gamma, reward.shape), -2)
        delta = rho_bar * (r + gamma * (~term) * nv - v)
        steps = r.shape[0]
        vs = np.zeros_like(r)
        acc = np.zeros_like(r[0])
        for t in reversed(range(steps)):
            acc = delta[t] + gamma[t] * (~d[t]) * c_bar[t] * acc
            vs[t] = acc + v[t]
        adv = np.zeros_like(r)
        for t in range(steps):
            after = nv[t] if t == steps - 1 else np.where(d[t], nv[t], vs[t + 1])
            adv[t] = rho_bar[t] * (r[t] + gamma[t] * (~term[t]) * after - v[t])
        return np.moveaxis(adv, 0, -2), np.moveaxis(vs, 0, -2)

    return vtrace


def rlax_gae(r_t, discount_t, lambda_, values):
    """RLax's per-trajectory truncated GAE, as a loop (values has T + 1 entries)."""
    steps = r_t.shape[0]
    lam = np.broadcast_to(lambda_, (steps,))
    adv = np.zeros_like(r_t)
    acc = 0.0
    for t in reversed(range(steps)):
        acc = r_t[t] + discount_t[t] * values[t + 1] - values[t] + discount_t[t] * lam[t] * acc
        adv[t] = acc
    return adv


def _explanations(report: CheckReport) -> set[str]:
    return {r.explanation for r in report.failures}


def test_independent_numpy_gae_passes_every_case():
    report = check(make_gae(), GAE)
    assert report.passed, str(report)
    assert len(report.results) == 2 * 26
    report.raise_for_failures()


@pytest.mark.parametrize(
    ("mistake", "words"),
    [
        ({"bootstrap_truncation": False}, "does not bootstrap at truncation"),
        ({"cut_truncation": False}, "does not cut the trajectory at truncation"),
        ({"swap": True}, "gamma and lmbda are swapped"),
        ({"late": True}, "off by one in time"),
    ],
)
def test_wrong_gae_fails_with_its_explanation(mistake, words):
    report = check(make_gae(**mistake), GAE, cases=FEW)
    assert not report.passed
    assert report.failures
    for failure in report.failures:
        assert words in failure.explanation, str(report)
        assert failure.first_index is not None
        assert failure.yours != pytest.approx(failure.reference)
    with pytest.raises(AssertionError, match=words):
        report.raise_for_failures()


def test_float32_accumulator_is_named():
    report = check(make_gae(accumulator=np.float32), GAE, cases=FEW)
    float64 = [r for r in report.results if r.dtype == "float64" and r.case.endswith("random]")]
    assert float64 and all(r.status == "fail" for r in float64)
    assert all("accumulates in float32" in r.explanation for r in float64)
    assert all(r.passed for r in report.results if r.dtype == "float32")


def test_float32_rounding_is_named_precision():
    half = make_gae(accumulator=np.float16)
    single = make_gae()

    def sloppy_in_float32(*args):
        return (half if args[2].dtype == np.float32 else single)(*args)

    report = check(sloppy_in_float32, GAE, cases=["B4_T16_F1,random"])
    float64, float32 = report.results
    assert float64.passed and float32.status == "fail"
    assert "float32 precision: the float64 case passes" in float32.explanation


def test_vtrace_correct_passes_and_wrong_clipping_is_named():
    assert check(make_vtrace(), "vtrace_advantage_estimate").passed
    report = check(
        make_vtrace(c_at_rho=True),
        "vtrace_advantage_estimate",
        cases=["[thresholds]", "B4_T16_F1,random"],
    )
    failed = {r.case for r in report.failures}
    assert failed == {"vtrace_advantage_estimate[thresholds]"}  # thresholds 0.8 / 1.3
    assert _explanations(report) == {"V-trace clipping: c is clipped at rho_thresh"}


@pytest.mark.parametrize("backend", ["numpy", "torch", "array_api_strict"])
def test_arrayrl_functions_pass_on_each_backend(backend):
    pytest.importorskip(backend)
    for name in (
        "generalized_advantage_estimate",
        "td_lambda_return_estimate",
        "vtrace_advantage_estimate",
        "reward2go",
    ):
        report = check(
            getattr(functional, name),
            name,
            backend=backend,
            cases=["B4_T16_F1,random", "time_major", "per_step_gamma"],
        )
        assert report.passed, str(report)
        grads = [r.gradient_error for r in report.results]
        if backend == "torch":  # arrayrl's torch path is differentiable: checked
            assert all(g is not None and g <= 5e-5 for g in grads), str(report)
        else:
            assert all(g is None for g in grads)


def test_torch_gradient_mistake_is_caught():
    torch = pytest.importorskip("torch")

    def detached_reward(gamma, lmbda, value, next_value, reward, done, terminated):
        with torch.no_grad():
            frozen = reward.clone()
        return functional.generalized_advantage_estimate(
            gamma, lmbda, value, next_value, frozen, done, terminated
        )

    report = check(detached_reward, GAE, backend="torch", cases=["B4_T16_F1,random"])
    assert not report.passed
    assert all("gradient w.r.t. reward differs" in f.explanation for f in report.failures)


def test_time_major_convention_and_argnames():
    spec = EstimatorSpec(GAE, convention="time_major")
    assert check(make_gae(axis=0), spec, cases=FEW).passed
    # the batch-major function in the time-major convention is wrong (layouts differ)
    assert not check(make_gae(axis=-2), spec, cases=["B4_T16_F1,random"]).passed

    correct = make_gae()

    def by_keyword(*, discount, lam, v, v_next, r, done, terminated):
        return correct(discount, lam, v, v_next, r, done, terminated)

    names = {
        "gamma": "discount",
        "lmbda": "lam",
        "state_value": "v",
        "next_state_value": "v_next",
        "reward": "r",
    }
    assert check(by_keyword, EstimatorSpec(GAE, argnames=names), cases=FEW).passed


def test_rlax_convention():
    report = check(rlax_gae, EstimatorSpec(GAE, convention="rlax"))
    statuses = {r.status for r in report.results}
    assert statuses == {"pass", "not expressible"}, str(report)
    assert report.passed
    truncations = [r for r in report.results if r.case.endswith("B4_T16_F1,truncated_only]")]
    assert [r.status for r in truncations] == ["not expressible"] * 2
    assert "not expressible in this convention" in truncations[0].explanation
    rerun = [r for r in report.results if r.case.endswith("random]+terminations_only")]
    assert len(rerun) == 8 and all(r.passed for r in rerun)

    def trace_not_cut(r_t, discount_t, lambda_, values):  # λ-trace runs past terminations
        adv, acc = np.zeros_like(r_t), 0.0
        for t in reversed(range(r_t.shape[0])):
            acc = r_t[t] + discount_t[t] * values[t + 1] - values[t] + 0.97 * lambda_ * acc
            adv[t] = acc
        return adv

    report = check(trace_not_cut, EstimatorSpec(GAE, convention="rlax"), cases=["B4_T16_F1,random"])
    assert [r.status for r in report.results] == ["not expressible"] * 2 + ["fail"] * 2
    assert all("does not cut the trace at done" in r.explanation for r in report.failures)
    with pytest.raises(ValueError, match="rlax"):
        EstimatorSpec("reward2go", convention="rlax")


def test_exceptions_and_shapes_are_reported_per_case():
    def broken(*args):
        raise ValueError("boom")

    report = check(broken, GAE, cases=FEW)
    assert all(r.status == "error" for r in report.results)
    assert all("ValueError: boom" in r.explanation for r in report.results)

    correct = make_gae()

    def squeezed(*args):
        return tuple(o[..., 0] for o in correct(*args))

    report = check(squeezed, GAE, cases=["B4_T16_F1,random"], dtypes=["float64"])
    (result,) = report.results
    assert "expected shape (4, 16, 1)" in result.explanation
    assert "trailing feature dim" in result.explanation

    report = check(lambda *a: correct(*a)[0], GAE, cases=["B4_T16_F1,random"])
    assert all("expected 2: advantage, value_target" in r.explanation for r in report.results)
    spec = EstimatorSpec(GAE, outputs=("advantage",))
    assert check(lambda *a: correct(*a)[0], spec, cases=FEW).passed


def test_user_function_cannot_corrupt_the_check():
    def vandal(gamma, lmbda, value, next_value, reward, done, terminated):
        out = make_gae(bootstrap_truncation=False)(
            gamma, lmbda, value, next_value, reward, done, terminated
        )
        done[...] = False  # writes into its inputs, after computing
        terminated[...] = False
        reward[...] = 0.0
        return out

    report = check(vandal, GAE, cases=["B4_T16_F1,random"])
    assert all("does not bootstrap at truncation" in f.explanation for f in report.failures)


def test_report_text_and_json():
    report = check(make_gae(swap=True), GAE, cases=["B4_T16_F1,random"])
    text = str(report)
    assert "max abs" in text and "B4_T16_F1,random" in text and "fail" in text
    assert "gamma and lmbda are swapped" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False
    assert data["results"][0]["first_index"] == list(report.results[0].first_index)


def test_missing_backend_is_a_clear_skip():
    if importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed here")
    report = check(make_gae(), GAE, backend="jax")
    assert report.skipped and "'jax' is not installed" in report.skipped
    assert not report.passed and report.results == []
    assert "skipped" in str(report)
    with pytest.raises(AssertionError, match="not installed"):
        report.raise_for_failures()


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown estimator"):
        check(make_gae(), "gae")
    with pytest.raises(ValueError, match="unknown backend"):
        check(make_gae(), GAE, backend="tensorflow")
    with pytest.raises(ValueError, match="unknown convention"):
        EstimatorSpec(GAE, convention="batch_last")
    with pytest.raises(ValueError, match="no case"):
        check(make_gae(), GAE, cases=["nothing-like-this"])
