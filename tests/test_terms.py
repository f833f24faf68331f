"""``check(fn, <loss term>)``: independent implementations of PPO's clipped surrogate,
Q-learning, double Q-learning, C51 and SAC's terms (plain NumPy loops or torch, written
here from the papers) pass; each deliberately wrong one fails with the explanation that
names its mistake; a target that lets the gradient through is caught."""

from __future__ import annotations

import numpy as np
import pytest
from arrayrl.conformance import check
from arrayrl.conformance.terms import TERMS, TermSpec, term_cases

torch = pytest.importorskip("torch")


########################################################################
# independent implementations (NumPy)


def surrogate(log_prob, prev_log_prob, advantage, eps):
    ratio = np.exp(log_prob - prev_log_prob)
    loss = -np.minimum(ratio * advantage, np.clip(ratio, 1 - eps, 1 + eps) * advantage)
    clipped = np.mean(np.abs(ratio - 1) > eps).astype(log_prob.dtype)
    return loss, loss.mean(), clipped


def huber(d):
    return np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5)


def td_outputs(delta):
    return delta, np.mean(delta * delta), np.mean(huber(delta))


def taken(values, action):
    return np.take_along_axis(values, action[..., None], -1)[..., 0]


def q_learning(q, action, reward, terminated, next_q, gamma):
    keep = (~terminated).astype(reward.dtype)
    return td_outputs(reward + gamma * keep * next_q.max(-1) - taken(q, action))


def double_q_learning(q, action, reward, terminated, next_q, selector, gamma):
    keep = (~terminated).astype(reward.dtype)
    best = taken(next_q, selector.argmax(-1))
    return td_outputs(reward + gamma * keep * best - taken(q, action))


def project_loop(probs, reward, discount, support):
    """Bellemare et al. (2017), Algorithm 1, one sample at a time."""
    v_min, v_max, n = support[0], support[-1], len(support)
    dz = (v_max - v_min) / (n - 1)
    m = np.zeros(n)
    for j in range(n):
        tz = min(max(reward + discount * support[j], v_min), v_max)
        b = (tz - v_min) / dz
        low, up = int(np.floor(b)), int(np.ceil(b))
        if low == up:
            m[low] += probs[j]
        else:
            m[low] += probs[j] * (up - b)
            m[up] += probs[j] * (b - low)
    return m


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def categorical(logits, action, reward, terminated, next_logits, selector, support, gamma):
    batch = action.shape
    flat = int(np.prod(batch))
    nxt = softmax(np.asarray(next_logits, np.float64)).reshape(flat, *next_logits.shape[-2:])
    pick = selector.reshape(flat, -1).argmax(-1)
    r, d = reward.reshape(flat), terminated.reshape(flat)
    target = np.stack(
        [
            project_loop(nxt[i, pick[i]], r[i], gamma * (1.0 - d[i]), support.astype(np.float64))
            for i in range(flat)
        ]
    ).reshape(*batch, -1)
    chosen = np.take_along_axis(logits, action[..., None, None], -2)[..., 0, :]
    log_p = chosen - np.log(np.exp(chosen - chosen.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_p = log_p - chosen.max(-1, keepdims=True)
    ce = -(target * log_p).sum(-1)
    dtype = logits.dtype
    return target.astype(dtype), ce.astype(dtype), ce.mean().astype(dtype)


def sac(log_prob, q_new, q, next_log_prob, next_q, reward, terminated, gamma, log_alpha, ent):
    alpha = np.exp(log_alpha)
    actor = alpha * log_prob - q_new.min(0)
    keep = (~terminated).astype(reward.dtype)
    target = reward + gamma * keep * (next_q.min(0) - alpha * next_log_prob)
    qloss = 0.5 * ((q - target) ** 2).sum(0)
    aloss = -log_alpha * (log_prob + ent)
    out = (actor, target, qloss, aloss, actor.mean(), qloss.mean(), aloss.mean())
    return tuple(np.asarray(o, log_prob.dtype) for o in out)


CORRECT = {
    "clipped_surrogate": surrogate,
    "q_learning": q_learning,
    "double_q_learning": double_q_learning,
    "categorical_double_q_learning": categorical,
    "sac_terms": sac,
}


def test_every_term_has_an_independent_implementation_here():
    assert set(CORRECT) == set(TERMS)


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_independent_numpy_implementations_pass(name):
    report = check(CORRECT[name], name)
    assert report.passed, str(report)
    assert len(report.results) == 2 * len(term_cases(name))


def test_the_c51_cases_reach_the_ends_of_the_support():
    """The reward-beyond-support case must exercise the projection's clipping."""
    (case,) = [c for c in term_cases("categorical_double_q_learning") if "beyond" in c.label]
    inputs = case.build(0, "float64")
    reach = inputs["reward"] + inputs["gamma"] * inputs["support"][-1]
    assert (reach > inputs["support"][-1]).any() and (reach < inputs["support"][0]).any()


########################################################################
# torch: values and gradients


def torch_surrogate(log_prob, prev_log_prob, advantage, eps):
    ratio = torch.exp(log_prob - prev_log_prob)
    loss = -torch.minimum(ratio * advantage, ratio.clamp(1 - eps, 1 + eps) * advantage)
    return loss, loss.mean(), ((ratio - 1).abs() > eps).to(log_prob.dtype).mean()


def torch_q_learning(q, action, reward, terminated, next_q, gamma, *, detach=True):
    target = reward + gamma * (~terminated).to(reward.dtype) * next_q.max(-1).values
    if detach:
        target = target.detach()
    delta = target - q.gather(-1, action[..., None])[..., 0]
    huber = torch.nn.functional.smooth_l1_loss(delta, torch.zeros_like(delta))
    return delta, (delta**2).mean(), huber


def test_torch_implementations_pass_with_gradients():
    for fn, name in ((torch_surrogate, "clipped_surrogate"), (torch_q_learning, "q_learning")):
        report = check(fn, name, backend="torch")
        assert report.passed, str(report)
        checked = [r for r in report.results if r.gradient_error is not None]
        assert len(checked) == len(report.results)


def test_a_target_that_lets_the_gradient_through_is_caught():
    def leaky(*args):
        return torch_q_learning(*args, detach=False)

    report = check(leaky, "q_learning", backend="torch")
    assert not report.passed
    assert all("must be a constant (stop its gradient)" in r.explanation for r in report.failures)


def test_a_bool_mask_times_a_float_in_torch_is_named_float32():
    """``gamma * (~terminated)`` is float32 in torch whatever the inputs' dtype."""

    def float32_mask(q, action, reward, terminated, next_q, gamma):
        target = (reward + gamma * (~terminated) * next_q.max(-1).values).detach()
        delta = target - q.gather(-1, action[..., None])[..., 0]
        return delta

    report = check(float32_mask, TermSpec("q_learning", outputs=("td_error",)), backend="torch")
    float64 = [
        r for r in report.results if r.dtype == "float64" and r.case != "q_learning[all_terminated]"
    ]
    assert float64 and all("float32" in r.explanation for r in float64)


########################################################################
# planted mistakes


def wrong_surrogate(kind):
    def fn(log_prob, prev_log_prob, advantage, eps):
        ratio = np.exp(log_prob - prev_log_prob)
        if kind == "inverted":
            ratio = 1 / ratio
        clipped = np.clip(ratio, 1 - eps, 1 + eps)
        loss = {
            "unclipped": -ratio * advantage,
            "max": -np.maximum(ratio * advantage, clipped * advantage),
            "no_min": -clipped * advantage,
            "sign": np.minimum(ratio * advantage, clipped * advantage),
            "inverted": -np.minimum(ratio * advantage, clipped * advantage),
        }[kind]
        return loss

    return fn


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("unclipped", "not clipped"),
        ("max", "max instead of min"),
        ("no_min", "without the min"),
        ("sign", "sign is flipped"),
        ("inverted", "ratio is inverted"),
    ],
)
def test_wrong_clipping_is_named(kind, words):
    spec = TermSpec("clipped_surrogate", outputs=("loss_objective",))
    report = check(wrong_surrogate(kind), spec, dtypes=("float64",))
    assert not report.passed
    assert all(words in r.explanation for r in report.failures), str(report)


def test_q_learning_mistakes_are_named():
    spec = TermSpec("q_learning", outputs=("td_error",))

    def no_cut(q, action, reward, terminated, next_q, gamma):
        return reward + gamma * next_q.max(-1) - taken(q, action)

    def online(q, action, reward, terminated, next_q, gamma):
        return q_learning(q, action, reward, terminated, q, gamma)[0]

    def flipped(*args):
        return -q_learning(*args)[0]

    for fn, words in (
        (no_cut, "does not cut the bootstrap at termination"),
        (online, "bootstraps from q_values"),
        (flipped, "wrong sign"),
    ):
        report = check(fn, spec, dtypes=("float64",))
        assert report.failures and all(words in r.explanation for r in report.failures), str(report)


def test_double_q_mistakes_are_named():
    spec = TermSpec("double_q_learning", outputs=("td_error",))

    def swapped(q, action, reward, terminated, next_q, selector, gamma):
        return double_q_learning(q, action, reward, terminated, selector, next_q, gamma)[0]

    def single(q, action, reward, terminated, next_q, selector, gamma):
        return double_q_learning(q, action, reward, terminated, next_q, next_q, gamma)[0]

    for fn, words in ((swapped, "swapped"), (single, "not double Q-learning")):
        report = check(fn, spec, dtypes=("float64",))
        assert report.failures and all(words in r.explanation for r in report.failures), str(report)


def test_c51_without_the_termination_cut_is_named():
    spec = TermSpec("categorical_double_q_learning", outputs=("target_probs",))

    def no_cut(logits, action, reward, terminated, next_logits, selector, support, gamma):
        out = categorical(
            logits, action, reward, np.zeros_like(terminated), next_logits, selector, support, gamma
        )
        return out[0]

    report = check(no_cut, spec, dtypes=("float64",))
    assert report.failures and all("termination" in r.explanation for r in report.failures)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("max", "max, not min"),
        ("no_entropy", "no entropy bonus"),
        ("alpha", "weighted by α instead of log α"),
        ("no_half", "no ½"),
    ],
)
def test_sac_mistakes_are_named(change, words):
    def fn(log_prob, q_new, q, next_log_prob, next_q, reward, terminated, gamma, log_alpha, ent):
        alpha = np.exp(log_alpha)
        worst = np.max if change == "max" else np.min
        actor = alpha * log_prob - worst(q_new, 0)
        soft = worst(next_q, 0) - (0 if change == "no_entropy" else alpha * next_log_prob)
        target = reward + gamma * (~terminated).astype(reward.dtype) * soft
        qloss = (1.0 if change == "no_half" else 0.5) * ((q - target) ** 2).sum(0)
        aloss = -(alpha if change == "alpha" else log_alpha) * (log_prob + ent)
        return actor, target, qloss, aloss

    spec = TermSpec(
        "sac_terms", outputs=("actor_loss", "target_value", "qvalue_loss", "alpha_loss")
    )
    report = check(fn, spec, dtypes=("float64",))
    assert report.failures and all(words in r.explanation for r in report.failures), str(report)


########################################################################
# arrayrl's own losses agree with the terms


def test_clip_ppo_loss_matches_the_clipped_surrogate_term():
    """arrayrl's ClipPPOLoss gives the term's per-sample loss: the batch's stored
    log-probability is moved by a known log-ratio, so that the ratio the loss sees is
    known, and its per-sample ``loss_objective`` must equal the term's reference."""
    from arrayrl.objectives import ClipPPOLoss

    from .test_ppo import _actor, _rollout

    batch = _rollout().clone(recurse=False)
    current = np.asarray(batch.get("action_log_prob"), np.float64)
    rng = np.random.default_rng(3)
    log_ratio = rng.normal(0.0, 0.5, current.shape)
    advantage = rng.standard_normal((*current.shape, 1))
    batch.set("action_log_prob", (current - log_ratio).astype(np.float32))
    batch.set("advantage", advantage.astype(np.float32))
    loss = ClipPPOLoss(
        _actor(),
        clip_epsilon=0.2,
        entropy_bonus=False,
        normalize_advantage=False,
        critic_coeff=None,
        reduction="none",
    )
    ours = np.asarray(loss(batch)["loss_objective"], np.float64)
    term = TERMS["clipped_surrogate"].reference(
        log_prob=current,
        prev_log_prob=current - log_ratio,
        advantage=advantage[..., 0],
        clip_epsilon=0.2,
    )
    np.testing.assert_allclose(ours.reshape(current.shape), term["loss_objective"], atol=1e-5)


def test_spec_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="unknown loss term"):
        TermSpec("ppo_loss")
    with pytest.raises(ValueError, match="unknown outputs"):
        TermSpec("q_learning", outputs=("loss",))
    with pytest.raises(ValueError, match="argnames keys"):
        TermSpec("q_learning", argnames={"q": "q_values"})
    with pytest.raises(ValueError, match="no case of q_learning"):
        check(q_learning, "q_learning", cases=["nothing"])


def test_report_to_dict_is_json():
    report = check(surrogate, "clipped_surrogate", cases=["B1"])
    data = report.to_dict()
    assert data["spec"]["function"] == "clipped_surrogate"
    assert data["spec"]["convention"] == "batch"
    assert data["passed"] is True


########################################################################
# JAX: gradients by jax.vjp


def test_jax_gradients_catch_a_target_that_is_not_a_constant():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jax.config.update("jax_enable_x64", True)

    def td_error(q, action, reward, terminated, next_q, gamma, *, stop=True):
        target = reward + gamma * (1 - terminated.astype(reward.dtype)) * next_q.max(-1)
        target = jax.lax.stop_gradient(target) if stop else target
        return target - jnp.take_along_axis(q, action[..., None], -1)[..., 0]

    spec = TermSpec("q_learning", outputs=("td_error",))
    good = check(td_error, spec, backend="jax")
    assert good.passed and all(r.gradient_error is not None for r in good.results), str(good)
    leaky = check(lambda *a: td_error(*a, stop=False), spec, backend="jax")
    assert leaky.failures and all("must be a constant" in r.explanation for r in leaky.failures)


def test_jax_function_that_cannot_be_traced_is_checked_by_value_and_says_so():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)

    def on_host(log_prob, prev_log_prob, advantage, eps):
        return jax.numpy.asarray(
            surrogate(*map(np.asarray, (log_prob, prev_log_prob, advantage)), eps)[0]
        )

    spec = TermSpec("clipped_surrogate", outputs=("loss_objective",))
    report = check(on_host, spec, backend="jax", cases=["B64"])
    assert report.passed
    assert all("gradients not checked: jax.vjp" in r.explanation for r in report.results)
    assert "gradients not checked" in str(report)


########################################################################
# tolerances per dtype in the spec


def test_a_spec_tolerance_judges_values_for_its_dtype_only():
    """A float32 accumulator fails float64 at the suite's 1e-10, passes at 1e-6."""

    def in_float32(log_prob, prev_log_prob, advantage, eps):
        args = (np.asarray(x, np.float32) for x in (log_prob, prev_log_prob, advantage))
        return surrogate(*args, eps)[0].astype(log_prob.dtype)

    strict = check(in_float32, TermSpec("clipped_surrogate", outputs=("loss_objective",)))
    assert {r.dtype for r in strict.failures} == {"float64"}
    loose = TermSpec("clipped_surrogate", outputs=("loss_objective",), tolerances={"float64": 1e-6})
    assert check(in_float32, loose).passed


def test_an_estimator_spec_takes_tolerances_too():
    from arrayrl.conformance import EstimatorSpec

    from arrayrl.objectives.value.functional import reward2go

    def rounded(reward, done, gamma):
        return reward2go(np.asarray(reward, np.float32), done, gamma).astype(reward.dtype)

    cases = ["reward2go[B4_T16_F1"]
    assert not check(rounded, "reward2go", cases=cases, dtypes=("float64",)).passed
    spec = EstimatorSpec("reward2go", tolerances={"float64": 1e-5})
    assert check(rounded, spec, cases=cases, dtypes=("float64",)).passed


@pytest.mark.parametrize(
    ("tolerances", "error", "words"),
    [
        ({"float16": 1e-3}, ValueError, "unknown dtype"),
        ({"float32": -1.0}, ValueError, "positive and finite"),
        ({"float32": float("nan")}, ValueError, "positive and finite"),
        ({"float32": "1e-3"}, TypeError, "must be a float"),
        ({"float32": True}, TypeError, "must be a float"),
    ],
)
def test_bad_tolerances_are_refused_by_name(tolerances, error, words):
    with pytest.raises(error, match=words):
        TermSpec("q_learning", tolerances=tolerances)
