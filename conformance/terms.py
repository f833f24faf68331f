r"""Loss terms as :func:`~.check.check` targets: the pieces of PPO, DQN, C51 and SAC.

An estimator is one function of a trajectory; a loss is a network, a batch and a dozen
options. Between the two sit the *terms* every framework writes out the same way, and
that :func:`~.check.check` can compare one by one (``check(fn, "clipped_surrogate")``):

``clipped_surrogate(log_prob, prev_log_prob, advantage, clip_epsilon)``
    PPO's clipped objective (Schulman et al. 2017, https://arxiv.org/abs/1707.06347,
    eq. 7) as a loss: with :math:`r = \exp(\log\pi - \log\pi_{old})`,
    ``loss_objective`` :math:`= -\min(rA,\ \mathrm{clip}(r, 1-\epsilon, 1+\epsilon)A)`
    per sample, ``loss_objective_mean`` its mean and ``clip_fraction`` the share of
    samples with :math:`|r - 1| > \epsilon`.
``q_learning(q_values, action, reward, terminated, next_q_values, gamma)``
    DQN's TD error (Mnih et al. 2015): ``td_error`` :math:`= r + \gamma (1 - d)
    \max_{a'} Q'(s', a') - Q(s, a)`, ``l2_loss`` :math:`= \mathrm{mean}(\delta^2)` and
    ``smooth_l1_loss`` the mean Huber loss (δ = 1).
``double_q_learning(q_values, action, reward, terminated, next_q_values, next_q_selector,
gamma)``
    Double DQN (van Hasselt et al. 2016, https://arxiv.org/abs/1509.06461): the next
    action is the argmax of ``next_q_selector`` (the online network at :math:`s'`), its
    value read from ``next_q_values`` (the target network); same outputs.
``categorical_double_q_learning(logits, action, reward, terminated, next_logits,
next_q_selector, support, gamma)``
    C51 (Bellemare et al. 2017, https://arxiv.org/abs/1707.06887) with a double-Q
    selector: the target network's distribution of the selected next action, projected
    by :func:`arrayrl.objectives.dqn.categorical_projection` onto ``support`` after
    :math:`r + \gamma (1 - d) z`; ``target_probs``, the ``cross_entropy`` of the
    taken action's distribution against it, and its mean ``loss``. For plain C51 pass
    the target network's expected values as ``next_q_selector``.
``sac_terms(log_prob, q_new_action, q_values, next_log_prob, next_q_target, reward,
terminated, gamma, log_alpha, target_entropy)``
    SAC (Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905) with ``C`` critics
    stacked first (``[C, *B]``), :math:`\alpha = e^{\log\alpha}`: ``actor_loss``
    :math:`= \alpha \log\pi(a|s) - \min_c Q_c(s, a)` (``a`` drawn from π),
    ``target_value`` :math:`= r + \gamma (1-d)(\min_c Q'_c(s', a') - \alpha \log\pi(a'|s'))`,
    ``qvalue_loss`` :math:`= \tfrac12 \sum_c (Q_c(s, a) - y)^2`, ``alpha_loss``
    :math:`= -\log\alpha\,(\log\pi + \bar{\mathcal H})` and their means ``loss_actor``,
    ``loss_qvalue``, ``loss_alpha`` (TorchRL's names).

Conventions: every array has the batch first (any batch shape ``B``; ``[C, *B]`` for
critics, ``[*B, A]`` for Q-values, ``[*B, A, N]`` for logits), ``action`` is an integer
index, ``terminated`` a bool, scalars are Python floats. Targets are constants: the
reference stops their gradient (RLax's ``stop_target_gradients=True``; TorchRL and SB3
compute them without gradient), so a function whose gradient reaches
``next_q_values``, ``next_q_target`` or ``next_log_prob`` is reported. Gradients are
taken w.r.t. what a network produces (log-probabilities, Q-values, logits; on torch only
those inputs require grad), not w.r.t. data (rewards, stored log-probabilities,
advantages). Outputs that are not differentiable (``clip_fraction``, ``target_value``,
``target_probs``) are not part of the gradient check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from arrayrl.backends import backend_of

from .check import (
    CaseResult,
    _caller,
    _differentiable,
    _differentiates,
    _framework,
    _Graph,
    _measure,
    check_tolerances,
    compare_gradients,
    select_cases,
    tolerance_for,
)
from .runner import SEED, TOLERANCE, scaled_error

__all__ = ["TERMS", "Term", "TermCase", "TermSpec", "check_term", "term_cases"]

Inputs = dict[str, Any]
Outputs = dict[str, Any]


@dataclass(frozen=True)
class Term:
    """A loss term: ``args`` in call order, ``outputs`` (``smooth`` ones are in the
    gradient check), the ``reference(**inputs)`` giving every output, ``cases``
    (``{name: builder(rng, dtype) -> inputs}``), ``mistakes`` (``(words, reference of
    the mistake)``) that explain a failure, ``wrt`` (the inputs a network produces: the
    gradient is taken w.r.t. these only; rewards, stored log-probabilities and
    advantages are data) and ``constants`` (those of ``wrt`` that feed a target, whose
    reference gradient is zero)."""

    name: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    smooth: tuple[str, ...]
    reference: Callable[..., Outputs]
    cases: Mapping[str, Callable[[np.random.Generator, str], Inputs]]
    mistakes: tuple[tuple[str, Callable[..., Outputs]], ...] = ()
    wrt: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()


@dataclass(frozen=True)
class TermCase:
    """One case of a term: ``name`` is ``"<term>[<case>]"``."""

    term: Term
    label: str

    @property
    def name(self) -> str:
        return f"{self.term.name}[{self.label}]"

    def build(self, seed: int, dtype: str) -> Inputs:
        """The case's inputs, NumPy, floats in ``dtype`` (the same draws in every dtype)."""
        rng = np.random.default_rng([seed, _stable_hash(self.name)])
        raw = self.term.cases[self.label](rng, dtype)
        return {
            n: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for n, v in raw.items()
        }


@dataclass(frozen=True)
class TermSpec:
    """What :func:`~.check.check` checks for a loss term: ``function`` (a :data:`TERMS`
    name), ``argnames`` (``{our name: your name}``, called by keyword when given) and the
    ``outputs`` ``fn`` returns, in order (default: all of the term's), ``tolerances``
    (``{dtype: scaled error}``, as :class:`~.check.EstimatorSpec`'s)."""

    function: str
    argnames: Mapping[str, str] | None = None
    outputs: tuple[str, ...] | None = None
    convention: str = "batch"
    tolerances: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        check_tolerances(self.tolerances)
        if self.function not in TERMS:
            raise ValueError(f"unknown loss term {self.function!r}; one of {', '.join(TERMS)}")
        unknown = [o for o in self.outputs or () if o not in self.term.outputs]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; {self.function} has {self.term.outputs}")
        unknown_args = [a for a in self.argnames or {} if a not in self.term.args]
        if unknown_args:
            raise ValueError(
                f"argnames keys {unknown_args} are not arguments of {self.function}: "
                f"{self.term.args}"
            )
        if self.convention != "batch":
            raise ValueError("loss terms take the 'batch' convention only (batch dims first)")

    @property
    def term(self) -> Term:
        return TERMS[self.function]

    @property
    def checked_outputs(self) -> tuple[str, ...]:
        return self.outputs if self.outputs is not None else self.term.outputs


def term_cases(function: str) -> list[TermCase]:
    """Every case of the term ``function``."""
    term = TERMS[function]
    return [TermCase(term, label) for label in term.cases]


def _stable_hash(text: str) -> int:
    return int.from_bytes(text.encode()[:16].ljust(16, b"\0"), "little") % (2**63)


########################################################################
# shared pieces (every reference takes the array namespace and the backend)


def _chosen(xp: Any, values: Any, action: Any) -> Any:
    """``values[..., action]`` by a one-hot product (differentiable on every backend)."""
    count = values.shape[-1]
    one_hot = xp.astype(action[..., None] == xp.arange(count), values.dtype)
    return xp.sum(values * one_hot, axis=-1)


def _argmax_value(xp: Any, values: Any, selector: Any) -> Any:
    """``values[..., argmax(selector)]``."""
    return _chosen(xp, values, xp.argmax(selector, axis=-1))


def _not_done(xp: Any, terminated: Any, like: Any) -> Any:
    return 1.0 - xp.astype(terminated, like.dtype)


def _td_outputs(xp: Any, backend: Any, chosen: Any, target: Any) -> Outputs:
    delta = backend.stop_gradient(target) - chosen
    return {
        "td_error": delta,
        "l2_loss": xp.mean(delta * delta),
        "smooth_l1_loss": xp.mean(backend.smooth_l1(delta, xp.zeros_like(delta))),
    }


def _namespace(inputs: Mapping[str, Any]) -> tuple[Any, Any]:
    arrays = {n: v for n, v in inputs.items() if hasattr(v, "shape") and hasattr(v, "dtype")}
    backend = backend_of(**arrays)
    return backend.xp, backend


########################################################################
# clipped_surrogate


def _surrogate(log_prob: Any, prev_log_prob: Any, advantage: Any, clip_epsilon: float) -> Outputs:
    xp, _ = _namespace({"log_prob": log_prob})
    ratio = xp.exp(log_prob - prev_log_prob)
    return _surrogate_from(xp, ratio, advantage, clip_epsilon)


def _surrogate_from(xp: Any, ratio: Any, advantage: Any, clip_epsilon: float) -> Outputs:
    clipped = xp.clip(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
    loss = -xp.minimum(ratio * advantage, clipped * advantage)
    outside = xp.astype(xp.abs(ratio - 1.0) > clip_epsilon, ratio.dtype)
    return {
        "loss_objective": loss,
        "loss_objective_mean": xp.mean(loss),
        "clip_fraction": xp.mean(outside),
    }


def _surrogate_variant(kind: str) -> Callable[..., Outputs]:
    def mistake(log_prob: Any, prev_log_prob: Any, advantage: Any, clip_epsilon: float) -> Outputs:
        xp, _ = _namespace({"log_prob": log_prob})
        ratio = xp.exp(log_prob - prev_log_prob)
        clipped = xp.clip(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
        if kind == "inverted":
            return _surrogate_from(xp, 1.0 / ratio, advantage, clip_epsilon)
        loss = {
            "unclipped": -ratio * advantage,
            "max": -xp.maximum(ratio * advantage, clipped * advantage),
            "no_min": -clipped * advantage,
            "sign": xp.minimum(ratio * advantage, clipped * advantage),
        }[kind]
        outside = xp.astype(xp.abs(ratio - 1.0) > clip_epsilon, ratio.dtype)
        return {
            "loss_objective": loss,
            "loss_objective_mean": xp.mean(loss),
            "clip_fraction": xp.mean(outside),
        }

    return mistake


def _surrogate_case(shape: tuple[int, ...], spread: float, clip_epsilon: float) -> Callable:
    def build(rng: np.random.Generator, dtype: str) -> Inputs:
        prev = rng.normal(-1.0, 0.5, shape)
        log_ratio = rng.normal(0.0, spread, shape)
        # keep ratios off the clip boundaries, where the gradient is a convention
        ratio = np.exp(log_ratio)
        near = np.abs(np.abs(ratio - 1.0) - clip_epsilon) < 1e-3
        log_ratio = np.where(near, log_ratio + 0.01, log_ratio)
        return {
            "log_prob": prev + log_ratio,
            "prev_log_prob": prev,
            "advantage": rng.normal(0.0, 1.0, shape),
            "clip_epsilon": clip_epsilon,
        }

    return build


########################################################################
# q_learning, double_q_learning


def _q_learning(q_values, action, reward, terminated, next_q_values, gamma) -> Outputs:
    xp, backend = _namespace({"q_values": q_values})
    best = xp.max(next_q_values, axis=-1)
    target = reward + gamma * _not_done(xp, terminated, reward) * best
    return _td_outputs(xp, backend, _chosen(xp, q_values, action), target)


def _double_q_learning(
    q_values, action, reward, terminated, next_q_values, next_q_selector, gamma
) -> Outputs:
    xp, backend = _namespace({"q_values": q_values})
    best = _argmax_value(xp, next_q_values, next_q_selector)
    target = reward + gamma * _not_done(xp, terminated, reward) * best
    return _td_outputs(xp, backend, _chosen(xp, q_values, action), target)


def _q_case(shape: tuple[int, ...], actions: int, p_terminated: float, double: bool) -> Callable:
    def build(rng: np.random.Generator, dtype: str) -> Inputs:
        out = {
            "q_values": rng.normal(0.0, 1.0, (*shape, actions)),
            "action": rng.integers(0, actions, shape),
            "reward": rng.normal(0.0, 1.0, shape),
            "terminated": rng.random(shape) < p_terminated,
            "next_q_values": rng.normal(0.0, 1.0, (*shape, actions)),
        }
        if double:
            out["next_q_selector"] = rng.normal(0.0, 1.0, (*shape, actions))
        out["gamma"] = 0.99
        return out

    return build


def _q_mistakes(double: bool) -> tuple[tuple[str, Callable[..., Outputs]], ...]:
    reference = _double_q_learning if double else _q_learning

    def no_cut(**inputs: Any) -> Outputs:
        return reference(**{**inputs, "terminated": inputs["terminated"] & False})

    def online(**inputs: Any) -> Outputs:
        return reference(**{**inputs, "next_q_values": inputs["q_values"]})

    def flipped(**inputs: Any) -> Outputs:
        out = reference(**inputs)
        return {**out, "td_error": -out["td_error"]}

    def halved(**inputs: Any) -> Outputs:
        out = reference(**inputs)
        return {**out, "l2_loss": 0.5 * out["l2_loss"]}

    found = [
        ("your target does not cut the bootstrap at termination (terminated is ignored)", no_cut),
        (
            "your target bootstraps from q_values (the online network at s) instead of "
            "next_q_values",
            online,
        ),
        ("the TD error has the wrong sign: Q(s, a) − target instead of target − Q(s, a)", flipped),
        ("the L2 loss has a ½: mean(δ²) / 2 (RLax's l2_loss), not mean(δ²)", halved),
    ]
    if double:

        def swapped(**inputs: Any) -> Outputs:
            return reference(
                **{
                    **inputs,
                    "next_q_values": inputs["next_q_selector"],
                    "next_q_selector": inputs["next_q_values"],
                }
            )

        def single(**inputs: Any) -> Outputs:
            return reference(**{**inputs, "next_q_selector": inputs["next_q_values"]})

        found += [
            (
                "selector and evaluator are swapped: the next action is chosen by "
                "next_q_values and valued by next_q_selector",
                swapped,
            ),
            (
                "not double Q-learning: the next action is the argmax of next_q_values "
                "itself (next_q_selector unused)",
                single,
            ),
        ]
    return tuple(found)


########################################################################
# categorical_double_q_learning (C51)


def _categorical(
    logits, action, reward, terminated, next_logits, next_q_selector, support, gamma
) -> Outputs:
    from arrayrl.objectives.dqn import categorical_projection

    xp, backend = _namespace({"logits": logits})
    atoms = logits.shape[-1]
    chosen = xp.argmax(next_q_selector, axis=-1)
    one_hot = xp.astype(chosen[..., None] == xp.arange(next_logits.shape[-2]), logits.dtype)
    next_chosen = xp.sum(next_logits * one_hot[..., None], axis=-2)  # [*B, N]
    next_probs = _softmax(xp, backend, next_chosen)
    discounts = gamma * _not_done(xp, terminated, reward)
    target = backend.stop_gradient(
        categorical_projection(next_probs, reward, discounts, xp.astype(support, logits.dtype))
    )
    taken = xp.sum(
        logits
        * xp.astype(action[..., None] == xp.arange(logits.shape[-2]), logits.dtype)[..., None],
        axis=-2,
    )
    log_probs = taken - backend.logsumexp(taken, axis=-1)[..., None]
    cross_entropy = -xp.sum(target * log_probs, axis=-1)
    del atoms
    return {"target_probs": target, "cross_entropy": cross_entropy, "loss": xp.mean(cross_entropy)}


def _softmax(xp: Any, backend: Any, x: Any) -> Any:
    return xp.exp(x - backend.logsumexp(x, axis=-1)[..., None])


def _categorical_case(
    shape: tuple[int, ...], reward_scale: float, p_terminated: float, plain: bool = False
) -> Callable:
    """``plain``: the selector is the target distribution's mean (plain C51, no double Q)."""

    def build(rng: np.random.Generator, dtype: str) -> Inputs:
        actions, atoms = 3, 11
        support = np.linspace(-5.0, 5.0, atoms)
        next_logits = rng.normal(0.0, 1.0, (*shape, actions, atoms))
        selector = rng.normal(0.0, 1.0, (*shape, actions))
        if plain:
            probs = np.exp(next_logits - next_logits.max(-1, keepdims=True))
            selector = (probs / probs.sum(-1, keepdims=True) * support).sum(-1)
        return {
            "logits": rng.normal(0.0, 1.0, (*shape, actions, atoms)),
            "action": rng.integers(0, actions, shape),
            "reward": rng.normal(0.0, reward_scale, shape),
            "terminated": rng.random(shape) < p_terminated,
            "next_logits": next_logits,
            "next_q_selector": selector,
            "support": support,
            "gamma": 0.9,
        }

    return build


def _categorical_mistakes() -> tuple[tuple[str, Callable[..., Outputs]], ...]:
    def no_cut(**inputs: Any) -> Outputs:
        return _categorical(**{**inputs, "terminated": inputs["terminated"] & False})

    def greedy_target(**inputs: Any) -> Outputs:
        xp, _ = _namespace({"logits": inputs["next_logits"]})
        means = xp.sum(
            _softmax(xp, _namespace(inputs)[1], inputs["next_logits"]) * inputs["support"], axis=-1
        )
        return _categorical(**{**inputs, "next_q_selector": means})

    return (
        ("your target does not cut the bootstrap at termination (terminated is ignored)", no_cut),
        (
            "the next action is greedy for the target distribution's mean, not for next_q_selector",
            greedy_target,
        ),
    )


########################################################################
# sac_terms


def _sac(
    log_prob,
    q_new_action,
    q_values,
    next_log_prob,
    next_q_target,
    reward,
    terminated,
    gamma,
    log_alpha,
    target_entropy,
    *,
    worst=None,
    entropy_in_target=True,
    alpha_form="log",
    half=True,
) -> Outputs:
    xp, backend = _namespace({"log_prob": log_prob})
    worst = xp.min if worst is None else worst
    alpha = math.exp(log_alpha)
    actor = alpha * log_prob - worst(q_new_action, axis=0)
    soft_next = worst(next_q_target, axis=0)
    if entropy_in_target:
        soft_next = soft_next - alpha * next_log_prob
    target = backend.stop_gradient(reward + gamma * _not_done(xp, terminated, reward) * soft_next)
    scale = 0.5 if half else 1.0
    qvalue = scale * xp.sum((q_values - target) ** 2, axis=0)
    weight = log_alpha if alpha_form == "log" else alpha
    alpha_loss = -weight * backend.stop_gradient(log_prob + target_entropy)
    return {
        "actor_loss": actor,
        "target_value": target,
        "qvalue_loss": qvalue,
        "alpha_loss": alpha_loss,
        "loss_actor": xp.mean(actor),
        "loss_qvalue": xp.mean(qvalue),
        "loss_alpha": xp.mean(alpha_loss),
    }


def _sac_case(shape: tuple[int, ...], critics: int, p_terminated: float) -> Callable:
    def build(rng: np.random.Generator, dtype: str) -> Inputs:
        return {
            "log_prob": rng.normal(-1.0, 0.5, shape),
            "q_new_action": rng.normal(0.0, 1.0, (critics, *shape)),
            "q_values": rng.normal(0.0, 1.0, (critics, *shape)),
            "next_log_prob": rng.normal(-1.0, 0.5, shape),
            "next_q_target": rng.normal(0.0, 1.0, (critics, *shape)),
            "reward": rng.normal(0.0, 1.0, shape),
            "terminated": rng.random(shape) < p_terminated,
            "gamma": 0.99,
            "log_alpha": -1.2,
            "target_entropy": -2.0,
        }

    return build


def _sac_mistakes() -> tuple[tuple[str, Callable[..., Outputs]], ...]:
    def with_(**change: Any) -> Callable[..., Outputs]:
        def mistake(**inputs: Any) -> Outputs:
            return _sac(**inputs, **change)

        return mistake

    def no_cut(**inputs: Any) -> Outputs:
        return _sac(**{**inputs, "terminated": inputs["terminated"] & False})

    def largest(x: Any, axis: int) -> Any:
        return _namespace({"x": x})[0].max(x, axis=axis)

    return (
        ("the critics are combined with max, not min (no clipped double-Q)", with_(worst=largest)),
        (
            "the target has no entropy bonus (−α log π(a′|s′) is missing)",
            with_(entropy_in_target=False),
        ),
        (
            "the temperature loss is weighted by α instead of log α (CleanRL's form)",
            with_(alpha_form="alpha"),
        ),
        ("the critic loss has no ½ (a sum of squared errors over critics)", with_(half=False)),
        ("your target does not cut the bootstrap at termination (terminated is ignored)", no_cut),
    )


########################################################################
# the table


TERMS: dict[str, Term] = {
    "clipped_surrogate": Term(
        name="clipped_surrogate",
        args=("log_prob", "prev_log_prob", "advantage", "clip_epsilon"),
        outputs=("loss_objective", "loss_objective_mean", "clip_fraction"),
        smooth=("loss_objective", "loss_objective_mean"),
        reference=_surrogate,
        wrt=("log_prob",),
        cases={
            "B64,eps0.2": _surrogate_case((64,), 0.3, 0.2),
            "B8x16,eps0.1": _surrogate_case((8, 16), 0.3, 0.1),
            "far_outside,eps0.2": _surrogate_case((64,), 1.5, 0.2),
            "B1,eps0.3": _surrogate_case((1,), 0.8, 0.3),
        },
        mistakes=(
            (
                "the ratio is not clipped (plain importance-weighted policy gradient −r·A)",
                _surrogate_variant("unclipped"),
            ),
            (
                "max instead of min: −max(r·A, clip(r)·A) is the optimistic bound",
                _surrogate_variant("max"),
            ),
            ("the clipped term alone, without the min: −clip(r)·A", _surrogate_variant("no_min")),
            (
                "the ratio is inverted: π_old / π instead of π / π_old",
                _surrogate_variant("inverted"),
            ),
            (
                "the sign is flipped: your function returns the objective, not the loss",
                _surrogate_variant("sign"),
            ),
        ),
    ),
    "q_learning": Term(
        name="q_learning",
        args=("q_values", "action", "reward", "terminated", "next_q_values", "gamma"),
        outputs=("td_error", "l2_loss", "smooth_l1_loss"),
        smooth=("td_error", "l2_loss", "smooth_l1_loss"),
        reference=_q_learning,
        cases={
            "B64_A4": _q_case((64,), 4, 0.2, False),
            "B8x5_A2": _q_case((8, 5), 2, 0.3, False),
            "all_terminated": _q_case((16,), 3, 1.0, False),
        },
        mistakes=_q_mistakes(False),
        wrt=("q_values", "next_q_values"),
        constants=("next_q_values",),
    ),
    "double_q_learning": Term(
        name="double_q_learning",
        args=(
            "q_values",
            "action",
            "reward",
            "terminated",
            "next_q_values",
            "next_q_selector",
            "gamma",
        ),
        outputs=("td_error", "l2_loss", "smooth_l1_loss"),
        smooth=("td_error", "l2_loss", "smooth_l1_loss"),
        reference=_double_q_learning,
        cases={
            "B64_A4": _q_case((64,), 4, 0.2, True),
            "B8x5_A3": _q_case((8, 5), 3, 0.3, True),
        },
        mistakes=_q_mistakes(True),
        wrt=("q_values", "next_q_values", "next_q_selector"),
        constants=("next_q_values", "next_q_selector"),
    ),
    "categorical_double_q_learning": Term(
        name="categorical_double_q_learning",
        args=(
            "logits",
            "action",
            "reward",
            "terminated",
            "next_logits",
            "next_q_selector",
            "support",
            "gamma",
        ),
        outputs=("target_probs", "cross_entropy", "loss"),
        smooth=("cross_entropy", "loss"),
        reference=_categorical,
        cases={
            "B32": _categorical_case((32,), 1.0, 0.2),
            "B4x6,rewards_beyond_support": _categorical_case((4, 6), 6.0, 0.2),
            "B32,plain_c51": _categorical_case((32,), 1.0, 0.2, plain=True),
        },
        mistakes=_categorical_mistakes(),
        wrt=("logits", "next_logits", "next_q_selector"),
        constants=("next_logits", "next_q_selector"),
    ),
    "sac_terms": Term(
        name="sac_terms",
        args=(
            "log_prob",
            "q_new_action",
            "q_values",
            "next_log_prob",
            "next_q_target",
            "reward",
            "terminated",
            "gamma",
            "log_alpha",
            "target_entropy",
        ),
        outputs=(
            "actor_loss",
            "target_value",
            "qvalue_loss",
            "alpha_loss",
            "loss_actor",
            "loss_qvalue",
            "loss_alpha",
        ),
        smooth=("actor_loss", "qvalue_loss", "loss_actor", "loss_qvalue"),
        reference=_sac,
        cases={
            "B64_C2": _sac_case((64,), 2, 0.2),
            "B8x4_C3": _sac_case((8, 4), 3, 0.3),
        },
        mistakes=_sac_mistakes(),
        wrt=("log_prob", "q_new_action", "q_values", "next_log_prob", "next_q_target"),
        constants=("next_log_prob", "next_q_target"),
    ),
}


########################################################################
# checking a function against a term (called by check.check)


def check_term(
    fn: Callable[..., Any],
    spec: TermSpec,
    target: Any,
    dtypes: Sequence[str],
    cases: Sequence[str | TermCase] | None,
    gradients: bool,
    report: Any,
) -> Any:
    """Fill ``report`` (a :class:`~.check.CheckReport`) with every case × dtype."""
    for case in _select(spec.function, cases):
        float64_passed = None
        for dtype in dtypes:
            result = _check_case(fn, spec, case, dtype, target, gradients, float64_passed)
            if dtype == "float64":
                float64_passed = result.passed
            report.results.append(result)
    return report


def _select(function: str, wanted: Sequence[str | TermCase] | None) -> list[TermCase]:
    return select_cases(function, term_cases(function), wanted)


def _reference(term: Term, inputs: Mapping[str, Any], precision: str = "float64") -> Outputs:
    """Every output of ``term`` on ``inputs`` computed in ``precision``, as float64 NumPy."""
    cast = {
        n: np.asarray(v, precision) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
        for n, v in inputs.items()
    }
    out = term.reference(**cast)
    return {n: np.asarray(v, np.float64) for n, v in out.items()}


def _check_case(
    fn: Callable[..., Any],
    spec: TermSpec,
    case: TermCase,
    dtype: str,
    target: Any,
    gradients: bool,
    float64_passed: bool | None,
) -> Any:

    term = spec.term
    result = CaseResult(case.name, dtype, "fail")
    inputs = case.build(SEED, dtype)
    names = spec.checked_outputs
    every = _reference(term, inputs)
    reference = [every[n] for n in names]
    grad = gradients and _differentiates(target)
    try:
        outs, graph = _call_user(fn, spec, inputs, target, grad)
    except Exception as err:  # the user's bug is a result, not a crash
        result.status = "error"
        result.explanation = f"your function raised {type(err).__name__}: {err}"
        return result
    problem = _shape_problem(outs, reference, names, dtype)
    if problem:
        result.explanation = problem
        return result
    _measure(result, outs, reference, names, tolerance_for(spec, dtype))
    if graph is not None and result.passed:
        _check_gradients(result, term, inputs, graph, names, tolerance_for(spec, dtype))
    if not result.passed and not result.explanation:
        result.explanation = _explain(term, inputs, outs, names, dtype, float64_passed)
    return result


def _call_user(
    fn: Callable[..., Any], spec: TermSpec, inputs: Mapping[str, Any], target: Any, grad: bool
) -> tuple[list[np.ndarray], Any]:

    def convert(value: Any, network_output: bool) -> Any:
        if not isinstance(value, np.ndarray):
            return value
        out = target.convert(value.copy())  # fn may write into it
        return _differentiable(out, grad and network_output)

    args = {n: convert(inputs[n], n in spec.term.wrt) for n in spec.term.args}
    call = _caller(fn, spec.argnames)
    raw = call(args)
    outs = [np.asarray(target.to_numpy(o)) for o in raw]
    return outs, _Graph(args, raw, call, _framework(target)) if grad else None


def _shape_problem(
    outs: list[np.ndarray], reference: list[np.ndarray], names: tuple[str, ...], dtype: str
) -> str:
    if len(outs) != len(reference):
        return (
            f"your function returned {len(outs)} output(s); expected {len(reference)}: "
            f"{', '.join(names)} (set TermSpec(outputs=...) to check fewer)"
        )
    for name, out, ref in zip(names, outs, reference, strict=True):
        if out.shape != ref.shape:
            return f"{name}: expected shape {ref.shape}, got {out.shape}"
        if out.dtype != np.dtype(dtype):
            return (
                f"{name}: your function returned {out.dtype} for {dtype} inputs; "
                "the output dtype must follow the inputs'"
            )
    return ""


def _check_gradients(
    result: Any,
    term: Term,
    inputs: Mapping[str, Any],
    graph: Any,
    names: tuple[str, ...],
    tolerance: float,
) -> None:
    """Gradient of ``Σ out · w`` over the smooth outputs w.r.t. the network outputs
    (:attr:`Term.wrt`), against the reference's torch gradient (zero for the targets')."""

    chosen = [i for i, n in enumerate(names) if n in term.smooth]
    if not chosen:
        return
    rng = np.random.default_rng(SEED + 1)
    weights = {names[i]: rng.standard_normal(tuple(graph.outputs[i].shape)) for i in chosen}
    floats = [n for n in graph.float_args(term.args) if n in term.wrt]
    yours = graph.gradients(floats, list(weights.values()), chosen)
    if isinstance(yours, str):
        result.explanation = yours
        return
    theirs = _reference_gradients(term, inputs, floats, weights)
    where = compare_gradients(result, floats, yours, theirs, tolerance)
    if not result.passed and where in term.constants:
        result.explanation += (
            f": {where} feeds the target, which must be a constant (stop its gradient)"
        )


def _reference_gradients(
    term: Term, inputs: Mapping[str, Any], floats: list[str], weights: Mapping[str, np.ndarray]
) -> list[np.ndarray]:
    import torch

    tensors = {
        n: torch.from_numpy(np.asarray(v, np.float64)).requires_grad_(n in floats)
        if isinstance(v, np.ndarray) and v.dtype.kind == "f"
        else (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
        for n, v in inputs.items()
    }
    out = term.reference(**tensors)
    loss = sum((out[n] * torch.from_numpy(w)).sum() for n, w in weights.items())
    grads = torch.autograd.grad(loss, [tensors[n] for n in floats], allow_unused=True)
    return [
        np.zeros(np.shape(inputs[n])) if g is None else g.numpy()
        for n, g in zip(floats, grads, strict=True)
    ]


def _explain(
    term: Term,
    inputs: Mapping[str, Any],
    outs: list[np.ndarray],
    names: tuple[str, ...],
    dtype: str,
    float64_passed: bool | None,
) -> str:
    def matches(candidate: Outputs, tolerance: float) -> bool:
        return all(
            scaled_error(o, np.asarray(candidate[n], np.float64)) <= tolerance
            for n, o in zip(names, outs, strict=True)
        )

    if dtype == "float64" and matches(_reference(term, inputs, "float32"), TOLERANCE["float32"]):
        return "computes in float32: your float64 output matches the reference computed in float32"
    precise = {
        n: np.asarray(v, np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
        for n, v in inputs.items()
    }
    found = [
        words for words, mistake in term.mistakes if matches(mistake(**precise), TOLERANCE[dtype])
    ]
    if found:
        others = "; ".join(found[1:])
        return found[0] + (f" (this case cannot tell it from: {others})" if others else "")
    if dtype == "float32" and float64_passed:
        return (
            "float32 precision: the float64 case passes, so the maths is right but its "
            "float32 rounding exceeds the tolerance"
        )
    wrong = [
        n
        for n, o in zip(names, outs, strict=True)
        if scaled_error(o, _reference(term, inputs)[n]) > TOLERANCE[dtype]
    ]
    return f"{', '.join(wrong)} differ(s) from the reference and no known mistake explains it"
