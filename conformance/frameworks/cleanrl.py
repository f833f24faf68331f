"""CleanRL's PPO advantage and loss terms, written out as its scripts compute them, as
``check`` targets.

CleanRL is a set of single-file scripts, not a package: there is nothing to import. This
module writes the formulas of ``cleanrl/ppo.py`` (vwxyzjn/cleanrl at commit
``fe8d8a03``, 2026-04-20) itself, in NumPy, with the script's names:

- lines 183-208, collection: ``dones[step] = next_done`` is stored *before* the step
  (``dones[t]`` says that observation ``t`` starts an episode) and
  ``next_done = logical_or(terminations, truncations)`` after it: a truncation is a
  termination;
- lines 217-231, GAE: one ``values`` array, ``nextvalues = values[t + 1]`` and
  ``nextnonterminal = 1 - dones[t + 1]`` inside the rollout, ``next_value`` and
  ``1 - next_done`` at its last step; ``delta = r + γ·nextvalues·nextnonterminal - V``,
  ``advantage = delta + γλ·nextnonterminal·lastgaelam``; ``returns = advantages +
  values``.

Mapping a conformance case (time-major ``[T, *B, F]``, flattened to ``[T, N]``):
``values = state_value``, ``dones[t + 1] = done[t]``, ``next_done = done[T - 1]``,
``next_value = next_state_value[T - 1]``. A case's ``next_state_value`` is independent
of ``state_value``, while the script reads ``V(s_{t+1})`` from ``values[t + 1]``: at
steps that are not done the difference ``γ·(next_state_value[t] - state_value[t + 1])``
is added to ``reward[t]`` (:func:`fold_into_reward`; it is zero on a consistent
trajectory, see the tests). At a truncation nothing is added, as in the script, so the
cases holding one (``done & ~terminated``) differ from the reference: that is
:data:`NO_TRUNCATION_BOOTSTRAP` (CleanRL issue 198), the only by-design difference of the GAE.

The loss terms (:mod:`..terms`, ``TermSpec`` targets, torch) are the same scripts' loss
lines, at the same commit, each function citing its lines: ppo.py's clipped policy loss
and clip fraction, dqn.py's ``F.mse_loss`` of the TD target, c51.py's projection and
cross-entropy, sac_continuous_action.py's critic, actor and temperature losses. The
off-policy scripts' ``data.dones`` are terminations (see the section below). Their
by-design differences are :class:`Disagreement` s with reproducers: SAC's critic loss
without ½ (:data:`SAC_QF_LOSS_NO_HALF`), its temperature loss weighted by α rather than
log α (:data:`SAC_ALPHA_LOSS`), its two critics (:data:`SAC_TWO_CRITICS`), C51's greedy
target action (:data:`C51_SELECTS_BY_TARGET_MEAN`) and clamped log
(:data:`C51_CLAMPED_LOG`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..check import EstimatorSpec
from . import Disagreement, Framework, Implementation, scalar_hyperparameters, term_implementation

__all__ = [
    "C51_CLAMPED_LOG",
    "C51_SELECTS_BY_TARGET_MEAN",
    "FRAMEWORK",
    "NO_TRUNCATION_BOOTSTRAP",
    "SAC_ALPHA_LOSS",
    "SAC_QF_LOSS_NO_HALF",
    "SAC_TWO_CRITICS",
    "SCALAR_HYPERPARAMETERS",
    "c51_loss",
    "cleanrl_gae",
    "dqn_loss",
    "fold_into_reward",
    "ppo_policy_loss",
    "reproduce_c51_clamped_log",
    "reproduce_c51_selects_by_target_mean",
    "reproduce_no_truncation_bootstrap",
    "reproduce_sac_alpha_loss",
    "reproduce_sac_qf_loss_no_half",
    "sac_losses",
]

COMMIT = "fe8d8a03"
VERSION = (
    "cleanrl ppo.py, dqn.py, c51.py, sac_continuous_action.py "
    f"(formulas as of vwxyzjn/cleanrl@{COMMIT}, 2026-04-20)"
)


def cleanrl_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    dones: np.ndarray,
    next_value: np.ndarray,
    next_done: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``(advantages, returns)`` of ppo.py's loop; arrays ``[num_steps, num_envs]``,
    ``next_value`` and ``next_done`` ``[num_envs]``, ``dones`` as floats."""
    num_steps = rewards.shape[0]
    advantages = np.zeros_like(rewards)
    lastgaelam: Any = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
        advantages[t] = lastgaelam
    return advantages, advantages + values


def fold_into_reward(
    gamma: float,
    state_value: np.ndarray,
    next_state_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
    *,
    bootstrap_truncation: bool,
) -> np.ndarray:
    """The reward a single-value-array GAE needs to see the case's ``next_state_value``.

    Time-major ``[T, N]``. Where a step is not done, such a GAE bootstraps from
    ``state_value[t + 1]`` (``next_state_value[T - 1]`` at the last step): the
    difference ``γ·(next_state_value[t] - that)`` is added. With
    ``bootstrap_truncation`` (Stable-Baselines3's collection: ``reward += γ·V(terminal
    obs)`` at a timeout), ``γ·next_state_value[t]`` is added where ``done & ~terminated``.
    """
    read = np.concatenate([state_value[1:], next_state_value[-1:]])
    correction = gamma * (next_state_value - read) * ~done
    if bootstrap_truncation:
        correction = correction + gamma * next_state_value * (done & ~terminated)
    return reward + correction.astype(reward.dtype)


def scalar_rollout(
    who: str, gamma: Any, lmbda: Any, *arrays: np.ndarray
) -> tuple[float, float, list[np.ndarray]]:
    """``gamma`` and ``lmbda`` as floats (``TypeError`` naming ``who`` for a per-step
    array: a single-value-array GAE takes scalars) and each time-major case array as a
    ``[T, N]`` rollout."""
    for name, value in (("gamma", gamma), ("lmbda", lmbda)):
        if isinstance(value, np.ndarray) and value.ndim > 0:
            raise TypeError(f"{name} is a per-step array: {who} takes a float")
    steps = arrays[0].shape[0]
    return float(gamma), float(lmbda), [x.reshape(steps, -1) for x in arrays]


def gae_time_major(
    gamma: Any,
    lmbda: Any,
    state_value: np.ndarray,
    next_state_value: np.ndarray,
    reward: np.ndarray,
    done: np.ndarray,
    terminated: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A case (``check``'s ``"time_major"`` convention) through :func:`cleanrl_gae`."""
    gamma, lmbda, (value, nxt, rew, dn, term) = scalar_rollout(
        "CleanRL's args.gamma / args.gae_lambda",
        gamma, lmbda, state_value, next_state_value, reward, done, terminated,
    )  # fmt: skip
    shape = reward.shape
    rewards = fold_into_reward(gamma, value, nxt, rew, dn, term, bootstrap_truncation=False)
    dones = np.zeros_like(value)
    dones[1:] = dn[:-1]
    next_done = dn[-1].astype(value.dtype)
    advantages, returns = cleanrl_gae(rewards, value, dones, nxt[-1], next_done, gamma, lmbda)
    return advantages.reshape(shape), returns.reshape(shape)


########################################################################
# loss terms (check's TermSpec targets), torch, in the scripts' names
#
# The off-policy scripts store ``terminations`` only (``rb.add(obs, real_next_obs,
# actions, rewards, terminations, infos)`` with ``handle_timeout_termination=False``, and
# ``real_next_obs`` the final observation at a truncation: dqn.py lines 152-158, 184-188,
# the same in c51.py and sac_continuous_action.py), so the sampled ``data.dones`` is the
# term's ``terminated``: ``dones = terminated`` as a float column ``[M, 1]``.


def _column(x: Any, dtype: Any) -> Any:
    """``[*B]`` -> ``[M, 1]`` in ``dtype`` (the replay buffer's sample layout)."""
    return x.reshape(-1, 1).to(dtype)


def ppo_policy_loss(
    log_prob: Any, prev_log_prob: Any, advantage: Any, clip_epsilon: float
) -> tuple[Any, Any, Any]:
    """ppo.py lines 251-252, 258 and 264-267: ``(max(pg_loss1, pg_loss2), pg_loss,
    clipfrac)`` with ``newlogprob = log_prob``, ``b_logprobs = prev_log_prob``,
    ``mb_advantages = advantage`` (after the script's optional normalisation, lines
    260-262, which is not part of the term) and ``args.clip_coef = clip_epsilon``."""
    import torch

    logratio = log_prob - prev_log_prob
    ratio = logratio.exp()
    with torch.no_grad():  # a logged metric; .float() in the script, the input dtype here
        clipfrac = ((ratio - 1.0).abs() > clip_epsilon).to(ratio.dtype).mean()
    pg_loss1 = -advantage * ratio
    pg_loss2 = -advantage * torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    per_sample = torch.max(pg_loss1, pg_loss2)
    return per_sample, per_sample.mean(), clipfrac


def dqn_loss(
    q_values: Any, action: Any, reward: Any, terminated: Any, next_q_values: Any, gamma: float
) -> Any:
    """dqn.py lines 197-201: ``F.mse_loss(td_target, old_val)`` with the network outputs
    ``q_network(obs) = q_values``, ``target_network(next_obs) = next_q_values`` (``[M,
    A]``), ``data.actions = action`` (``[M, 1]``), ``data.rewards = reward``,
    ``data.dones = terminated``, ``args.gamma = gamma``."""
    import torch
    import torch.nn.functional as F

    count = q_values.shape[-1]
    q, next_q = q_values.reshape(-1, count), next_q_values.reshape(-1, count)
    rewards, dones = _column(reward, reward.dtype), _column(terminated, reward.dtype)
    actions = action.reshape(-1, 1).long()
    with torch.no_grad():
        target_max, _ = next_q.max(dim=1)
        td_target = rewards.flatten() + gamma * target_max * (1 - dones.flatten())
    old_val = q.gather(1, actions).squeeze(1)  # .squeeze() in the script (M > 1 there)
    return F.mse_loss(td_target, old_val)


def _pmfs(logits: Any, atoms: Any, action: Any = None) -> tuple[Any, Any]:
    """c51.py lines 109-116, ``QNetwork.get_action`` on the network's output
    ``logits`` (``[M, A, N]``): the greedy action of the expected values unless
    ``action`` is given, and that action's probabilities."""
    import torch

    pmfs = torch.softmax(logits, dim=2)
    if action is None:
        q_values = (pmfs * atoms).sum(2)
        action = torch.argmax(q_values, 1)
    return action, pmfs[torch.arange(len(logits)), action]


def c51_loss(
    logits: Any,
    action: Any,
    reward: Any,
    terminated: Any,
    next_logits: Any,
    next_q_selector: Any,
    support: Any,
    gamma: float,
) -> tuple[Any, Any, Any]:
    """c51.py lines 210-230: ``(target_pmfs, per-sample cross-entropy, loss)``.

    ``atoms = support`` (``torch.linspace(v_min, v_max, n_atoms)`` there, so ``v_min =
    support[0]``, ``v_max = support[-1]``), the networks' outputs ``logits`` and
    ``next_logits`` ``[M, A, N]`` (the script's ``.view(len(x), n, n_atoms)``),
    ``data.dones = terminated``. ``next_q_selector`` is not used: the script's target
    network picks the next action by its own expected values (see
    :data:`C51_SELECTS_BY_TARGET_MEAN`).
    """
    import torch

    del next_q_selector
    atoms = support
    n_atoms, v_min, v_max = atoms.shape[0], float(atoms[0].detach()), float(atoms[-1].detach())
    count = logits.shape[-2]
    old_logits = logits.reshape(-1, count, n_atoms)
    new_logits = next_logits.reshape(-1, count, n_atoms)
    rewards, dones = _column(reward, logits.dtype), _column(terminated, logits.dtype)
    with torch.no_grad():
        _, next_pmfs = _pmfs(new_logits, atoms)
        next_atoms = rewards + gamma * atoms * (1 - dones)
        delta_z = atoms[1] - atoms[0]
        tz = next_atoms.clamp(v_min, v_max)
        b = (tz - v_min) / delta_z
        low = b.floor().clamp(0, n_atoms - 1)
        up = b.ceil().clamp(0, n_atoms - 1)
        d_m_l = (up + (low == up).float() - b) * next_pmfs
        d_m_u = (b - low) * next_pmfs
        target_pmfs = torch.zeros_like(next_pmfs)
        for i in range(target_pmfs.size(0)):
            target_pmfs[i].index_add_(0, low[i].long(), d_m_l[i])
            target_pmfs[i].index_add_(0, up[i].long(), d_m_u[i])
    _, old_pmfs = _pmfs(old_logits, atoms, action.reshape(-1).long())
    cross_entropy = -(target_pmfs * old_pmfs.clamp(min=1e-5, max=1 - 1e-5).log()).sum(-1)
    batch = reward.shape
    return (
        target_pmfs.reshape(*batch, n_atoms),
        cross_entropy.reshape(batch),
        cross_entropy.mean(),
    )


def sac_losses(
    log_prob: Any,
    q_new_action: Any,
    q_values: Any,
    next_log_prob: Any,
    next_q_target: Any,
    reward: Any,
    terminated: Any,
    gamma: float,
    log_alpha: float,
    target_entropy: float,
) -> dict[str, Any]:
    """sac_continuous_action.py lines 257-268 (target and critic loss), 279-283 (actor)
    and 289-292 (temperature): every loss of one update, by its term's name.

    Two critics (``qf1``, ``qf2``; ``TypeError`` for another count): ``qf{c}(obs,
    actions) = q_values[c]``, ``qf{c}_target(next_obs, next_state_actions) =
    next_q_target[c]``, ``qf{c}(obs, pi) = q_new_action[c]``, ``next_state_log_pi =
    next_log_prob``, ``log_pi = log_prob``, ``data.dones = terminated``; ``log_alpha`` is
    the script's parameter (a one-element tensor, here in the inputs' dtype: the script's
    ``torch.zeros(1)`` follows torch's default dtype) and ``alpha = log_alpha.exp().item()``.
    """
    import torch
    import torch.nn.functional as F

    critics = q_values.shape[0]
    if critics != 2:
        raise TypeError(f"sac_continuous_action.py has two critics (qf1, qf2), not {critics}")
    dtype = log_prob.dtype
    log_alpha_param = torch.tensor([log_alpha], dtype=dtype)
    alpha = log_alpha_param.exp().item()
    rewards, dones = _column(reward, dtype), _column(terminated, dtype)
    with torch.no_grad():
        qf1_next_target, qf2_next_target = (_column(q, dtype) for q in next_q_target)
        next_state_log_pi = _column(next_log_prob, dtype)
        min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
        next_q_value = rewards.flatten() + (1 - dones.flatten()) * gamma * (
            min_qf_next_target
        ).view(-1)
    qf1_a_values, qf2_a_values = (q.reshape(-1) for q in q_values)
    qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
    qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
    qf_loss = qf1_loss + qf2_loss
    log_pi = _column(log_prob, dtype)
    qf1_pi, qf2_pi = (_column(q, dtype) for q in q_new_action)
    min_qf_pi = torch.min(qf1_pi, qf2_pi)
    actor_per_sample = (alpha * log_pi) - min_qf_pi
    log_pi_again = log_pi.detach()  # the script draws it again under torch.no_grad()
    alpha_per_sample = -log_alpha_param.exp() * (log_pi_again + target_entropy)
    batch = reward.shape
    return {
        "actor_loss": actor_per_sample.reshape(batch),
        "loss_actor": actor_per_sample.mean(),
        "target_value": next_q_value.reshape(batch),
        "loss_qvalue": qf_loss,
        "alpha_loss": alpha_per_sample.reshape(batch),
        "loss_alpha": alpha_per_sample.mean(),
    }


def _sac_part(*names: str) -> Any:
    """The outputs ``names`` of :func:`sac_losses`, as one ``check`` target."""

    def part(*args: Any) -> tuple[Any, ...]:
        out = sac_losses(*args)
        return tuple(out[n] for n in names)

    part.__name__ = "sac_" + "_".join(names)
    part.__doc__ = f"{', '.join(names)} of :func:`sac_losses`."
    return part


sac_actor_loss = _sac_part("actor_loss", "loss_actor")
sac_next_q_value = _sac_part("target_value")
sac_qf_loss = _sac_part("loss_qvalue")
sac_alpha_loss = _sac_part("alpha_loss", "loss_alpha")


########################################################################
# disagreements


@functools.cache
def has_truncation(case_name: str) -> bool:
    """Whether the conformance case ``case_name`` holds a ``done & ~terminated`` step."""
    from ..cases import all_cases
    from ..runner import SEED

    for case in all_cases():
        if case.name == case_name and "done" in case.signature.args:
            args, _ = case.build(SEED, "float64")
            inputs = dict(zip(case.signature.args, args, strict=True))
            return bool((inputs["done"] & ~inputs["terminated"]).any())
    return False


def reproduce_no_truncation_bootstrap() -> tuple[float, float]:
    """One step, truncated: ``r = 0``, ``V(s) = 0``, ``V(s') = 1``, ``γ = 0.9``, ``λ = 1``.

    Returns ``(cleanrl, reference)`` advantages: ``(0.0, 0.9)``; CleanRL's
    ``next_done = terminated | truncated`` drops ``γ·V(s')``.
    """
    from arrayrl.objectives.value.functional import generalized_advantage_estimate

    one = np.ones((1, 1))
    zero = np.zeros((1, 1))
    cleanrl, _ = cleanrl_gae(zero, zero, zero, one[0], one[0], 0.9, 1.0)
    reference, _ = generalized_advantage_estimate(
        0.9, 1.0, zero, one, zero, one.astype(bool), zero.astype(bool), time_dim=0
    )
    return float(cleanrl[0, 0]), float(np.asarray(reference)[0, 0])


NO_TRUNCATION_BOOTSTRAP = Disagreement(
    key="cleanrl-no-truncation-bootstrap",
    covers=has_truncation,
    explanation=(
        "CleanRL's ppo.py sets next_done = terminations | truncations and masks the "
        "bootstrap with 1 - next_done, so a time-limit truncation is treated as a "
        "termination: the advantage at a truncated step is r - V(s) instead of "
        "r + γ·V(s_final) - V(s), which biases values down near time limits. The reference "
        "(and TorchRL, Stable-Baselines3) bootstraps there. To match the reference, "
        "bootstrap from the final observation's value at truncations (Stable-Baselines3 "
        "adds γ·V(terminal_observation) to the reward); to match CleanRL with arrayrl, "
        "pass terminated = done."
    ),
    upstream="https://github.com/vwxyzjn/cleanrl/issues/198",
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_no_truncation_bootstrap",
)

SCALAR_HYPERPARAMETERS = scalar_hyperparameters(
    "cleanrl", "CleanRL's gamma and gae_lambda are script arguments"
)


def _reference(function: str, output: str, inputs: dict[str, Any]) -> float:
    from ..terms import TERMS

    return float(np.asarray(TERMS[function].reference(**inputs)[output]).ravel()[0])


def _torch(inputs: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {n: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for n, v in inputs.items()}


def _sac_example() -> dict[str, Any]:
    """One transition, two critics, ``log α = -1.2``."""
    return {
        "log_prob": np.array([-0.5]),
        "q_new_action": np.array([[1.0], [0.5]]),
        "q_values": np.array([[1.0], [0.0]]),
        "next_log_prob": np.array([-1.0]),
        "next_q_target": np.array([[2.0], [1.5]]),
        "reward": np.array([0.5]),
        "terminated": np.array([False]),
        "gamma": 0.9,
        "log_alpha": -1.2,
        "target_entropy": -2.0,
    }


def reproduce_sac_qf_loss_no_half() -> tuple[float, float]:
    """The critic loss of :func:`_sac_example`: ``(cleanrl, reference)``; CleanRL's is
    ``mse(qf1) + mse(qf2)``, twice the reference's ``½ Σ_c (Q_c - y)²``."""
    inputs = _sac_example()
    return float(sac_losses(**_torch(inputs))["loss_qvalue"]), _reference(
        "sac_terms", "loss_qvalue", inputs
    )


def reproduce_sac_alpha_loss() -> tuple[float, float]:
    """The temperature loss of :func:`_sac_example`: ``(cleanrl, reference)``, ``-α (log π
    + H̄)`` against ``-log α (log π + H̄)``."""
    inputs = _sac_example()
    return float(sac_losses(**_torch(inputs))["loss_alpha"]), _reference(
        "sac_terms", "loss_alpha", inputs
    )


def _c51_example(taken: tuple[float, float, float]) -> dict[str, Any]:
    """One transition, 2 actions, 3 atoms on ``[-1, 1]``: the target network's mean
    prefers action 0, ``next_q_selector`` action 1; the taken action 0's logits are
    ``taken``."""
    return {
        "logits": np.array([[taken, (0.0, 0.0, 0.0)]]),
        "action": np.array([0]),
        "reward": np.array([0.2]),
        "terminated": np.array([False]),
        "next_logits": np.array([[[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]]]),
        "next_q_selector": np.array([[0.0, 1.0]]),
        "support": np.linspace(-1.0, 1.0, 3),
        "gamma": 0.5,
    }


def reproduce_c51_selects_by_target_mean() -> tuple[float, float]:
    """The cross-entropy when the selector and the target network's mean disagree:
    ``(cleanrl, reference)``."""
    inputs = _c51_example((1.0, 0.0, -1.0))
    _, cross_entropy, _ = c51_loss(**_torch(inputs))
    return float(cross_entropy[0]), _reference(
        "categorical_double_q_learning", "cross_entropy", inputs
    )


def reproduce_c51_clamped_log() -> tuple[float, float]:
    """The cross-entropy when a probability of the taken action is below ``1e-5``
    (first logit -20) and the selector agrees with the target network: ``(cleanrl,
    reference)``; CleanRL's log is of the clamped probability."""
    inputs = _c51_example((-20.0, 0.0, 0.0))
    inputs["next_q_selector"] = np.array([[1.0, 0.0]])  # = the target network's choice
    _, cross_entropy, _ = c51_loss(**_torch(inputs))
    return float(cross_entropy[0]), _reference(
        "categorical_double_q_learning", "cross_entropy", inputs
    )


_SAC_CASES = "sac_terms["


SAC_TWO_CRITICS = Disagreement(
    key="cleanrl-sac-two-critics",
    covers=lambda case: case.startswith(_SAC_CASES) and "_C2]" not in case,
    explanation=(
        "sac_continuous_action.py has exactly two critics (qf1, qf2, torch.min of the "
        "two): a case with another number of critics cannot be passed; the "
        "implementation raises TypeError on it."
    ),
)

SAC_QF_LOSS_NO_HALF = Disagreement(
    key="cleanrl-sac-qf-loss-no-half",
    covers=lambda case: case.startswith(_SAC_CASES),
    explanation=(
        "CleanRL's critic loss is qf1_loss + qf2_loss with F.mse_loss each: Σ_c mean((Q_c "
        "- y)²), twice TorchRL's ½ Σ_c (Q_c - y)² (its loss_qvalue, the reference). Same "
        "minimiser and direction, a gradient twice as large (CleanRL logs qf_loss / 2 "
        "for comparison). Halve CleanRL's loss, or double the reference's, to compare."
    ),
    upstream="https://github.com/vwxyzjn/cleanrl/pull/146",
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_sac_qf_loss_no_half",
)

SAC_ALPHA_LOSS = Disagreement(
    key="cleanrl-sac-alpha-loss-uses-alpha",
    covers=lambda case: case.startswith(_SAC_CASES),
    explanation=(
        "CleanRL's temperature loss is -α (log π + H̄) with α = exp(log α) (the SAC "
        "paper's eq. 18, as softlearning writes it); TorchRL's, the reference, is "
        "-log α (log π + H̄). Both are minimised in log α and drive the entropy to H̄, but "
        "the values differ and CleanRL's gradient w.r.t. log α is α times TorchRL's, so "
        "the temperature moves at a different speed under the same learning rate."
    ),
    upstream="https://github.com/vwxyzjn/cleanrl/pull/414",
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_sac_alpha_loss",
)

C51_SELECTS_BY_TARGET_MEAN = Disagreement(
    key="cleanrl-c51-selects-by-target-mean",
    covers=lambda case: (
        case.startswith("categorical_double_q_learning[") and "plain_c51" not in case
    ),
    explanation=(
        "CleanRL's c51.py is C51, not its double-Q variant: the next action is the argmax "
        "of the target network's own expected values, so the term's next_q_selector (an "
        "online network's values) cannot be passed and is ignored. With next_q_selector "
        "set to the target network's expected values (plain C51) CleanRL matches the "
        "reference (see tests/test_framework_cleanrl.py)."
    ),
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_c51_selects_by_target_mean",
)

C51_CLAMPED_LOG = Disagreement(
    key="cleanrl-c51-clamped-log",
    covers=lambda case: False,
    explanation=(
        "CleanRL's C51 cross-entropy takes the log of the predicted probabilities clamped "
        "to [1e-5, 1 - 1e-5] (log of the softmax, not a log-softmax): where the taken "
        "action's probability of an atom is below 1e-5 its log is log(1e-5) and its "
        "gradient zero. The conformance cases never get there (no case is covered); the "
        "reproducer shows the difference."
    ),
    reproducer="arrayrl.conformance.frameworks.cleanrl.reproduce_c51_clamped_log",
)

TERM_DISAGREEMENTS: tuple[Disagreement, ...] = (
    SAC_TWO_CRITICS,
    SAC_QF_LOSS_NO_HALF,
    SAC_ALPHA_LOSS,
    C51_SELECTS_BY_TARGET_MEAN,
    C51_CLAMPED_LOG,
)

_OFF_POLICY = (
    "; data.dones = terminated (the scripts store terminations only, "
    "handle_timeout_termination=False, and bootstrap a truncation from real_next_obs: "
    "dqn.py lines 152-158 and 184-188)"
)
_SAC_NOTE = (
    "sac_continuous_action.py lines 257-292: qf{1,2} = q_values[0, 1], qf{1,2}_target = "
    "next_q_target[0, 1], qf{1,2}_pi = q_new_action[0, 1], log_pi = log_prob, "
    "next_state_log_pi = next_log_prob, log_alpha a one-element tensor in the inputs' "
    "dtype, alpha = log_alpha.exp().item()" + _OFF_POLICY
)


def _term_implementations() -> list[Implementation]:
    made = functools.partial(term_implementation, "cleanrl", "torch")

    sac = [SAC_TWO_CRITICS]
    return [
        made(
            "ppo.pg_loss",
            "clipped_surrogate",
            None,
            ppo_policy_loss,
            "ppo.py lines 251-267: newlogprob = log_prob, b_logprobs = prev_log_prob, "
            "mb_advantages = advantage (after the optional norm_adv), clip_coef = "
            "clip_epsilon; loss_objective = torch.max(pg_loss1, pg_loss2) before .mean(), "
            "clip_fraction = ((ratio - 1.0).abs() > clip_coef).mean() (line 258)",
        ),
        made(
            "dqn.loss",
            "q_learning",
            ("l2_loss",),
            dqn_loss,
            "dqn.py lines 197-201: q_network(obs) = q_values, target_network(next_obs) = "
            "next_q_values, td_target = r + gamma * max target * (1 - dones), loss = "
            "F.mse_loss(td_target, old_val) = l2_loss" + _OFF_POLICY,
        ),
        made(
            "c51.loss",
            "categorical_double_q_learning",
            None,
            c51_loss,
            "c51.py lines 109-116 and 210-230: atoms = support (v_min, v_max its ends), "
            "the networks' logits [M, A, N], the next action greedy for the target "
            "network's expected values (next_q_selector unused), the script's projection "
            "(floor/ceil, index_add_), cross-entropy against log(clamp(pmfs, 1e-5, "
            "1 - 1e-5))" + _OFF_POLICY,
            [C51_SELECTS_BY_TARGET_MEAN, C51_CLAMPED_LOG],
        ),
        made(
            "sac_continuous_action.actor_loss",
            "sac_terms",
            ("actor_loss", "loss_actor"),
            sac_actor_loss,
            _SAC_NOTE + "; actor_loss = ((alpha * log_pi) - min_qf_pi) before .mean()",
            sac,
        ),
        made(
            "sac_continuous_action.next_q_value",
            "sac_terms",
            ("target_value",),
            sac_next_q_value,
            _SAC_NOTE + "; target_value = next_q_value",
            sac,
        ),
        made(
            "sac_continuous_action.qf_loss",
            "sac_terms",
            ("loss_qvalue",),
            sac_qf_loss,
            _SAC_NOTE + "; loss_qvalue = qf_loss = qf1_loss + qf2_loss",
            [*sac, SAC_QF_LOSS_NO_HALF],
        ),
        made(
            "sac_continuous_action.alpha_loss",
            "sac_terms",
            ("alpha_loss", "loss_alpha"),
            sac_alpha_loss,
            _SAC_NOTE + "; alpha_loss = -log_alpha.exp() * (log_pi + target_entropy) before "
            ".mean()",
            [*sac, SAC_ALPHA_LOSS],
        ),
    ]


def _implementations() -> list[Implementation]:
    return [
        Implementation(
            name="cleanrl.ppo.gae",
            spec=EstimatorSpec("generalized_advantage_estimate", convention="time_major"),
            backend="numpy",
            fn=gae_time_major,
            note=(
                "[T, N] rollout; values = state_value, dones[t+1] = done[t], next_done = "
                "done[-1], next_value = next_state_value[-1]; γ·(next_state_value[t] - "
                "state_value[t+1]) folded into reward[t] at steps not done; returns is "
                "value_target."
            ),
            disagreements=(SCALAR_HYPERPARAMETERS, NO_TRUNCATION_BOOTSTRAP),
        ),
        *_term_implementations(),
    ]


FRAMEWORK = Framework(
    name="cleanrl",
    pip="",
    missing=lambda: None,
    version=lambda: VERSION,
    implementations=_implementations,
    disagreements=(SCALAR_HYPERPARAMETERS, NO_TRUNCATION_BOOTSTRAP, *TERM_DISAGREEMENTS),
)
