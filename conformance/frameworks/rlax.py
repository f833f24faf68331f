"""RLax's value estimators and loss terms (``rlax``, DeepMind's JAX RL library), as
``check`` targets.

RLax works on *one trajectory* at a time (``[T]`` arrays, no batch, no ``done``): the end
of an episode is a zero ``discount_t``, and a bootstrap value sits after the last step.
Each implementation below therefore maps a case onto RLax explicitly:

* GAE uses :func:`~..check.check`'s ``"rlax"`` convention as it is (one call per batch
  row and feature; see that convention for the truncation cases it cannot express).
* TD(λ), TD(1) and V-trace take the case in the ``"torchrl"`` convention ``[*B, T, F]``,
  cut every row and feature into its trajectories (a trajectory ends at ``done`` or at
  ``T - 1``), right-align each trajectory in a zero-padded row of length ``T`` (RLax's
  recursions run backwards, so the padding in front of a trajectory never reaches it)
  and call the RLax function once per trajectory through ``jax.vmap``. With
  ``discount_t = γ (1 - terminated)`` and the bootstrap ``v_t = next_state_value``, a
  termination cuts the bootstrap and a truncation only ends the trajectory, as in
  TorchRL.
* TD(0) calls ``rlax.td_learning`` element-wise (``jax.vmap``).

Two differences are by design and recorded as :class:`Disagreement` s with reproducers:
RLax's discounts are always rolling (``rolling_gamma=False`` has no RLax equivalent) and
RLax's V-trace clips the trace coefficient at 1 (``c = λ min(1, ρ)``), so ``c_thresh``
other than 1 cannot be passed.

Loss terms (:mod:`..terms`, ``TermSpec`` targets): RLax's per-sample functions
(``rlax.q_learning``, ``rlax.double_q_learning``, ``rlax.categorical_double_q_learning``)
are called through ``jax.vmap`` on the batch flattened to ``[M]``, with ``discount_t =
γ (1 - terminated)``, and their output reshaped back to the batch;
``rlax.clipped_surrogate_pg_loss`` takes the flattened ``[M]`` ratios and advantages
and returns their mean loss. Each checks the outputs RLax computes (``td_error``,
``cross_entropy``, ``loss_objective_mean``); the means of ``rlax.huber_loss`` and
``rlax.l2_loss`` of the TD errors are checked against ``smooth_l1_loss`` and ``l2_loss``:
``rlax.l2_loss`` is ``½ x²``, half the reference's (``rlax-l2-loss-half``).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from ..check import EstimatorSpec
from . import Disagreement, Framework, Implementation, term_implementation

__all__ = [
    "DISAGREEMENTS",
    "FRAMEWORK",
    "reproduce_l2_loss_half",
    "reproduce_rolling_discounts",
    "reproduce_vtrace_c_threshold",
]


def _missing() -> str | None:
    if importlib.util.find_spec("rlax") is None:
        return "rlax is not installed (pip install rlax)"
    if importlib.util.find_spec("jax") is None:
        return "jax is not installed (pip install jax)"
    return None


def _version() -> str:
    import jax
    import rlax

    return f"rlax {rlax.__version__} (jax {jax.__version__})"


def _jax() -> Any:
    """``jax`` with float64 enabled (the conformance backends do the same)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


########################################################################
# trajectories: [*B, T, F] rows cut at done, right-aligned in [S, W]


class _Trajectories:
    """Every trajectory of every row and feature of a ``[*B, T, F]`` batch.

    ``pack(x)`` gives ``[S, W]`` (``W >= T``, a power of two, at least 16): trajectory
    ``s`` right-aligned, zeros in front; ``unpack(y)`` puts a ``[S, W]`` result back into
    ``[*B, T, F]``.
    """

    def __init__(self, done: np.ndarray) -> None:
        self.shape = done.shape
        rows = self.rows(done)
        n, steps = rows.shape
        width = max(16, 1 << max(steps - 1, 0).bit_length())  # few shapes to compile
        ends = rows.copy()
        ends[:, -1] = True
        row_index, time_index, valid = [], [], []
        for i in range(n):
            start = 0
            for end in np.flatnonzero(ends[i]):
                length = int(end) - start + 1
                pad = width - length
                row_index.append(np.full(width, i))
                time_index.append(np.concatenate([np.zeros(pad, int), np.arange(start, end + 1)]))
                valid.append(np.arange(width) >= pad)
                start = int(end) + 1
        self.row_index = np.array(row_index, int).reshape(-1, width)
        self.time_index = np.array(time_index, int).reshape(-1, width)
        self.valid = np.array(valid, bool).reshape(-1, width)

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``[*B, T, F]`` -> ``[N, T]`` (one row per batch index and feature)."""
        x = np.broadcast_to(x, self.shape)
        return np.moveaxis(x, -2, -1).reshape(-1, self.shape[-2])

    def pack(self, x: np.ndarray | float, dtype: Any) -> np.ndarray:
        rows = self.rows(np.asarray(x, dtype))
        return np.where(self.valid, rows[self.row_index, self.time_index], 0).astype(dtype)

    def unpack(self, y: np.ndarray) -> np.ndarray:
        batch = (*self.shape[:-2], self.shape[-1])
        out = np.zeros((int(np.prod(batch, dtype=int)), self.shape[-2]), y.dtype)
        out[self.row_index[self.valid], self.time_index[self.valid]] = y[self.valid]
        return np.moveaxis(out.reshape(*batch, self.shape[-2]), -1, -2)


def _numpy(x: Any) -> Any:
    return np.asarray(x) if hasattr(x, "shape") else x


def _common(reward: Any, done: Any, terminated: Any, gamma: Any) -> tuple:
    """NumPy ``reward``, the trajectories, the dtype and ``discount_t = γ (1 - term)``."""
    reward = np.asarray(reward)
    done = np.asarray(done, bool)
    terminated = done if terminated is None else np.asarray(terminated, bool)
    discount = np.asarray(_numpy(gamma), reward.dtype) * (1 - terminated)
    return reward, _Trajectories(done), reward.dtype, discount.astype(reward.dtype)


_COMPILED: dict[Any, Any] = {}


def _per_trajectory(rlax_fn: Callable[..., Any], packed: list[np.ndarray], *scalars: Any) -> Any:
    """``rlax_fn`` vmapped over the trajectories (``[S, W]`` arrays; ``scalars`` shared).

    Jitted once per function; ``S`` is padded to a power of two (zero rows, dropped
    again) so that the cases compile a few shapes only.
    """
    jax = _jax()
    import jax.numpy as jnp

    if rlax_fn not in _COMPILED:
        axes = (0,) * len(packed) + (None,) * len(scalars)
        _COMPILED[rlax_fn] = jax.jit(jax.vmap(rlax_fn, in_axes=axes))
    count = packed[0].shape[0]
    size = 1 << max(count - 1, 0).bit_length()
    padded = [np.concatenate([p, np.zeros((size - count, *p.shape[1:]), p.dtype)]) for p in packed]
    out = _COMPILED[rlax_fn](*[jnp.asarray(p) for p in padded], *scalars)
    return jax.tree_util.tree_map(lambda x: x[:count], out)


def _as_jax(x: np.ndarray) -> Any:
    import jax.numpy as jnp

    return jnp.asarray(x)


########################################################################
# TD(λ), TD(1): rlax.lambda_returns, rlax.discounted_returns


def _returns(
    gamma: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    lmbda: Any = None,
) -> np.ndarray:
    """``rlax.lambda_returns`` (given ``lmbda``) or ``rlax.discounted_returns`` (TD(1)),
    one call per trajectory, back in the case's layout."""
    import rlax

    reward, traj, dtype, discount = _common(reward, done, terminated, gamma)
    columns = [reward, discount, _numpy(next_state_value)]
    if lmbda is not None:
        columns.append(_numpy(lmbda))
    function = rlax.discounted_returns if lmbda is None else rlax.lambda_returns
    packed = [traj.pack(column, dtype) for column in columns]
    return traj.unpack(np.asarray(_per_trajectory(function, packed)))


def td_lambda_return(
    gamma: Any,
    lmbda: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rolling_gamma: Any,
) -> Any:
    """TorchRL's ``td_lambda_return_estimate`` through ``rlax.lambda_returns``."""
    del rolling_gamma  # RLax's discounts are always rolling (see DISAGREEMENTS)
    return _as_jax(_returns(gamma, next_state_value, reward, done, terminated, lmbda))


def td_lambda_advantage(
    gamma: Any,
    lmbda: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rolling_gamma: Any,
) -> Any:
    """TorchRL's ``td_lambda_advantage_estimate``: ``rlax.lambda_returns - state_value``."""
    del rolling_gamma
    returns = _returns(gamma, next_state_value, reward, done, terminated, lmbda)
    return _as_jax(returns - np.asarray(state_value))


def td1_return(
    gamma: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rolling_gamma: Any,
) -> Any:
    """TorchRL's ``td1_return_estimate`` through ``rlax.discounted_returns``."""
    del rolling_gamma
    return _as_jax(_returns(gamma, next_state_value, reward, done, terminated))


def td1_advantage(
    gamma: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rolling_gamma: Any,
) -> Any:
    """TorchRL's ``td1_advantage_estimate``: ``rlax.discounted_returns - state_value``."""
    del rolling_gamma
    returns = _returns(gamma, next_state_value, reward, done, terminated)
    return _as_jax(returns - np.asarray(state_value))


########################################################################
# TD(0): rlax.td_learning, element-wise


def _td_learning(
    gamma: Any,
    baseline: Any,
    next_state_value: Any,
    reward: Any,
    terminated: Any,
) -> Any:
    import rlax

    reward = np.asarray(reward)
    term = np.asarray(terminated, bool)
    discount = (np.asarray(_numpy(gamma), reward.dtype) * (1 - term)).astype(reward.dtype)
    flat = [
        np.broadcast_to(np.asarray(x, reward.dtype), reward.shape).reshape(-1)
        for x in (baseline, reward, discount, _numpy(next_state_value))
    ]
    out = _per_trajectory(rlax.td_learning, flat)
    return out.reshape(reward.shape)


def td0_return(
    gamma: Any,
    next_state_value: Any,
    reward: Any,
    terminated: Any,
) -> Any:
    """TorchRL's ``td0_return_estimate``: ``rlax.td_learning`` with ``v_tm1 = 0``."""
    return _td_learning(gamma, 0.0, next_state_value, reward, terminated)


def td0_advantage(
    gamma: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
) -> Any:
    """TorchRL's ``td0_advantage_estimate``: ``rlax.td_learning`` (its TD error)."""
    del done  # TD(0) looks one step ahead: only the termination matters
    return _td_learning(gamma, _numpy(state_value), next_state_value, reward, terminated)


########################################################################
# V-trace: rlax.vtrace_td_error_and_advantage


def _vtrace_one(
    v_tm1: Any,
    v_t: Any,
    r_t: Any,
    discount_t: Any,
    rho_tm1: Any,
    thresh: Any,
) -> Any:
    import rlax

    return rlax.vtrace_td_error_and_advantage(
        v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_=1.0,
        clip_rho_threshold=thresh, clip_pg_rho_threshold=thresh,
    )  # fmt: skip


def vtrace(
    gamma: Any,
    log_pi: Any,
    log_mu: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rho_thresh: Any,
    c_thresh: Any,
) -> Any:
    """TorchRL's ``vtrace_advantage_estimate`` through ``rlax.vtrace_td_error_and_advantage``.

    ``c_thresh`` has no RLax argument: RLax's trace coefficient is ``λ min(1, ρ)``.
    """
    del c_thresh  # see the "rlax-vtrace-c-clipped-at-one" disagreement
    if np.ndim(_numpy(rho_thresh)) != 0:
        raise TypeError("rlax takes a scalar clip_rho_threshold; rho_thresh is an array")
    reward, traj, dtype, discount = _common(reward, done, terminated, gamma)
    rho = np.exp(np.asarray(log_pi) - np.asarray(log_mu))
    packed = [
        traj.pack(_numpy(state_value), dtype),
        traj.pack(_numpy(next_state_value), dtype),
        traj.pack(reward, dtype),
        traj.pack(discount, dtype),
        traj.pack(rho, dtype),
    ]
    out = _per_trajectory(_vtrace_one, packed, float(rho_thresh))
    advantage = traj.unpack(np.asarray(out.pg_advantage))
    target = traj.unpack(np.asarray(out.errors)) + np.asarray(state_value)
    return _as_jax(advantage), _as_jax(target.astype(dtype))


########################################################################
# loss terms: RLax's per-sample functions, vmapped over the flattened batch


def _per_sample(rlax_fn: Callable[..., Any], batched: list[Any], shared: list[Any]) -> Any:
    """``rlax_fn(*sample, *shared)`` for every sample of ``batched`` (arrays whose batch
    dimensions were flattened into one) through ``jax.vmap`` (``shared`` not mapped)."""
    axes = (0,) * len(batched) + (None,) * len(shared)
    return _jax().vmap(rlax_fn, in_axes=axes)(*batched, *shared)


def _jitted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under ``jax.jit``, compiled on the first call (once per shape and dtype),
    so that importing this module imports neither JAX nor RLax."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if fn not in _COMPILED:
            _COMPILED[fn] = _jax().jit(fn)
        return _COMPILED[fn](*args, **kwargs)

    return call


def _flat(x: Any, batch: tuple[int, ...]) -> Any:
    """``[*batch, *rest]`` -> ``[prod(batch), *rest]``."""
    return x.reshape((-1, *x.shape[len(batch) :]))


def _discount(gamma: float, terminated: Any, like: Any) -> Any:
    """``discount_t = γ (1 - terminated)`` in ``like``'s dtype."""
    return (gamma * (1 - terminated.astype(like.dtype))).astype(like.dtype)


@_jitted
def clipped_surrogate_pg_loss(
    log_prob: Any, prev_log_prob: Any, advantage: Any, clip_epsilon: float
) -> Any:
    """The ``clipped_surrogate`` term's ``loss_objective_mean`` through
    ``rlax.clipped_surrogate_pg_loss`` on the flattened batch (a ``[T]`` vector: RLax
    averages over it), with ``prob_ratios_t = exp(log_prob - prev_log_prob)``."""
    import jax.numpy as jnp
    import rlax

    ratio = jnp.exp(log_prob - prev_log_prob).reshape(-1)
    return rlax.clipped_surrogate_pg_loss(ratio, advantage.reshape(-1), clip_epsilon)


@_jitted
def q_learning(
    q_values: Any, action: Any, reward: Any, terminated: Any, next_q_values: Any, gamma: float
) -> Any:
    """The ``q_learning`` term's ``td_error`` through ``rlax.q_learning``, per sample."""
    import rlax

    batch = reward.shape
    flat = [_flat(x, batch) for x in (q_values, action, reward)]
    flat += [_flat(_discount(gamma, terminated, reward), batch), _flat(next_q_values, batch)]
    return _per_sample(rlax.q_learning, flat, []).reshape(batch)


@_jitted
def double_q_learning(
    q_values: Any,
    action: Any,
    reward: Any,
    terminated: Any,
    next_q_values: Any,
    next_q_selector: Any,
    gamma: float,
) -> Any:
    """The ``double_q_learning`` term's ``td_error`` through ``rlax.double_q_learning``
    (``q_t_value = next_q_values``, ``q_t_selector = next_q_selector``), per sample."""
    import rlax

    batch = reward.shape
    discount = _discount(gamma, terminated, reward)
    arrays = (q_values, action, reward, discount, next_q_values, next_q_selector)
    flat = [_flat(x, batch) for x in arrays]
    return _per_sample(rlax.double_q_learning, flat, []).reshape(batch)


def _q_losses(loss: str) -> Callable[..., Any]:
    """The mean of ``rlax.<loss>`` (``"l2_loss"`` or ``"huber_loss"``, δ = 1) of
    ``rlax.q_learning``'s TD errors: what an RLax DQN agent minimises."""

    @_jitted
    def mean_loss(
        q_values: Any, action: Any, reward: Any, terminated: Any, next_q_values: Any, gamma: float
    ) -> Any:
        import jax.numpy as jnp
        import rlax

        td_error = q_learning(q_values, action, reward, terminated, next_q_values, gamma)
        per_sample = rlax.l2_loss(td_error) if loss == "l2_loss" else rlax.huber_loss(td_error, 1.0)
        return jnp.mean(per_sample)

    mean_loss.__name__ = f"q_learning_{loss}"
    mean_loss.__doc__ = f"``mean(rlax.{loss}(rlax.q_learning(...)))``."
    return mean_loss


q_learning_l2_loss = _q_losses("l2_loss")
q_learning_huber_loss = _q_losses("huber_loss")


def _categorical_one(
    q_logits_tm1: Any,
    a_tm1: Any,
    r_t: Any,
    discount_t: Any,
    q_logits_t: Any,
    q_t_selector: Any,
    atoms: Any,
) -> Any:
    """``rlax.categorical_double_q_learning`` on one sample, ``atoms`` both supports."""
    import warnings

    import rlax

    with warnings.catch_warnings():  # its cross-entropy is to move to distrax
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return rlax.categorical_double_q_learning(
            atoms, q_logits_tm1, a_tm1, r_t, discount_t, atoms, q_logits_t, q_t_selector
        )


@_jitted
def categorical_double_q_learning(
    logits: Any,
    action: Any,
    reward: Any,
    terminated: Any,
    next_logits: Any,
    next_q_selector: Any,
    support: Any,
    gamma: float,
) -> Any:
    """The ``categorical_double_q_learning`` term's ``cross_entropy`` through
    ``rlax.categorical_double_q_learning``, per sample: ``q_atoms_tm1 = q_atoms_t =
    support``, ``q_logits_tm1 = logits``, ``q_logits_t = next_logits`` (``[A, N]`` per
    sample, as RLax lays them out), ``q_t_selector = next_q_selector``."""
    batch = reward.shape
    discount = _discount(gamma, terminated, reward)
    arrays = (logits, action, reward, discount, next_logits, next_q_selector)
    flat = [_flat(x, batch) for x in arrays]
    return _per_sample(_categorical_one, flat, [support]).reshape(batch)


########################################################################
# disagreements and their reproducers (3-step trajectories)


def reproduce_rolling_discounts() -> tuple[float, float]:
    """TD(λ) ``G_0`` with per-step γ and ``rolling_gamma=False``: (RLax, reference)."""
    from arrayrl.objectives.value.functional import td_lambda_return_estimate

    gamma = np.array([0.9, 0.5, 0.8]).reshape(1, 3, 1)
    value = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    reward = np.array([1.0, 1.0, 1.0]).reshape(1, 3, 1)
    done = np.zeros((1, 3, 1), bool)
    ours = td_lambda_return(gamma, 0.9, value, reward, done, done, False)
    ref = td_lambda_return_estimate(gamma, 0.9, value, reward, done, done, False)
    return float(np.asarray(ours)[0, 0, 0]), float(np.asarray(ref)[0, 0, 0])


def reproduce_vtrace_c_threshold() -> tuple[float, float]:
    """V-trace target ``v_0`` with ``c_thresh = 1.3`` and ``ρ = 1.2``: (RLax, reference)."""
    from arrayrl.objectives.value.functional import vtrace_advantage_estimate

    shape = (1, 3, 1)
    log_pi = np.full(shape, np.log(1.2))
    log_mu = np.zeros(shape)
    state = np.array([0.5, 1.0, -0.5]).reshape(shape)
    nxt = np.array([1.0, -0.5, 2.0]).reshape(shape)
    reward = np.array([1.0, 0.0, 2.0]).reshape(shape)
    done = np.zeros(shape, bool)
    args = (0.9, log_pi, log_mu, state, nxt, reward, done, done, 2.0, 1.3)
    _, ours = vtrace(*args)
    _, ref = vtrace_advantage_estimate(*args)
    return float(np.asarray(ours)[0, 0, 0]), float(np.asarray(ref)[0, 0, 0])


ROLLING = Disagreement(
    key="rlax-rolling-discounts",
    covers=lambda case: "rolling_gamma=False" in case,
    explanation=(
        "RLax discounts step by step (G_t = r_t + γ_t G_{t+1}, a 'rolling' product of the "
        "per-step discounts); TorchRL's rolling_gamma=False discounts the whole tail from "
        "start step k by that step's own γ_k. RLax has no equivalent: compute per-step "
        "discounts as TorchRL's rolling_gamma=True does, or keep γ scalar."
    ),
    upstream=None,
    reproducer="arrayrl.conformance.frameworks.rlax.reproduce_rolling_discounts",
)

VTRACE_C = Disagreement(
    key="rlax-vtrace-c-clipped-at-one",
    covers=lambda case: case.startswith("vtrace_advantage_estimate[thresholds]"),
    explanation=(
        "RLax's V-trace trace coefficient is c_t = λ·min(1, ρ_t): it is clipped at 1 and "
        "scaled by λ, with no c̄ argument; TorchRL's is min(c̄, ρ_t). With c_thresh = 1 "
        "(λ = 1) they agree; any other c_thresh cannot be passed to RLax (only "
        "clip_rho_threshold, used here for both ρ̄ and the policy-gradient ρ̄)."
    ),
    upstream=None,
    reproducer="arrayrl.conformance.frameworks.rlax.reproduce_vtrace_c_threshold",
)


def reproduce_l2_loss_half() -> tuple[float, float]:
    """``l2_loss`` of one transition whose TD error is 2: ``(RLax, reference)`` = ``(2, 4)``."""
    from ..terms import TERMS

    inputs = {
        "q_values": np.array([[1.0, 0.0]]),
        "action": np.array([0]),
        "reward": np.array([3.0]),
        "terminated": np.array([True]),
        "next_q_values": np.array([[5.0, 5.0]]),
        "gamma": 0.9,
    }
    jax_inputs = {n: _as_jax(v) if isinstance(v, np.ndarray) else v for n, v in inputs.items()}
    ours = float(q_learning_l2_loss(**jax_inputs))
    reference = float(TERMS["q_learning"].reference(**inputs)["l2_loss"])
    return ours, reference


L2_HALF = Disagreement(
    key="rlax-l2-loss-half",
    covers=lambda case: case.startswith("q_learning["),
    explanation=(
        "rlax.l2_loss(x) is ½ x² (its docstring: the ½ of Bishop's convention), so the "
        "mean of rlax.l2_loss over the TD errors is half the reference's l2_loss = "
        "mean(δ²), TorchRL's distance_loss(..., 'l2') (F.mse_loss). Same minimiser, half "
        "the gradient; rlax.huber_loss(x, 1) is TorchRL's smooth_l1 exactly (δ = 1)."
    ),
    upstream=None,
    reproducer="arrayrl.conformance.frameworks.rlax.reproduce_l2_loss_half",
)

DISAGREEMENTS: tuple[Disagreement, ...] = (ROLLING, VTRACE_C, L2_HALF)

_PER_TRAJECTORY = (
    "one RLax call per trajectory (a row and feature of [*B, T, F] cut after each done), "
    "vmapped over trajectories right-aligned in zero-padded rows; "
)
_DISCOUNT = "discount_t = gamma * (1 - terminated), v_t = next_state_value"


_PER_SAMPLE = "jax.vmap over the batch flattened to [M]; discount_t = gamma * (1 - terminated)"


def _term_implementations() -> list[Implementation]:
    made = functools.partial(term_implementation, "rlax", "jax")

    return [
        made(
            "clipped_surrogate_pg_loss",
            "clipped_surrogate",
            ("loss_objective_mean",),
            clipped_surrogate_pg_loss,
            "one call on the batch flattened to [M] (RLax returns the mean of -min(r A, "
            "clip(r) A) over its [T] vector), prob_ratios_t = exp(log_prob - "
            "prev_log_prob), adv_t = advantage (RLax stops its gradient), epsilon = "
            "clip_epsilon",
        ),
        made(
            "q_learning",
            "q_learning",
            ("td_error",),
            q_learning,
            _PER_SAMPLE + ", q_tm1 = q_values, a_tm1 = action, q_t = next_q_values",
        ),
        made(
            "l2_loss(q_learning)",
            "q_learning",
            ("l2_loss",),
            q_learning_l2_loss,
            "mean of rlax.l2_loss of rlax.q_learning's TD errors (" + _PER_SAMPLE + ")",
            [L2_HALF],
        ),
        made(
            "huber_loss(q_learning)",
            "q_learning",
            ("smooth_l1_loss",),
            q_learning_huber_loss,
            "mean of rlax.huber_loss(delta=1) of rlax.q_learning's TD errors (" + _PER_SAMPLE + ")",
        ),
        made(
            "double_q_learning",
            "double_q_learning",
            ("td_error",),
            double_q_learning,
            _PER_SAMPLE + ", q_t_value = next_q_values, q_t_selector = next_q_selector",
        ),
        made(
            "categorical_double_q_learning",
            "categorical_double_q_learning",
            ("cross_entropy",),
            categorical_double_q_learning,
            _PER_SAMPLE + ", q_atoms_tm1 = q_atoms_t = support, q_logits_tm1 = logits, "
            "q_logits_t = next_logits ([A, N] per sample), q_t_selector = next_q_selector; "
            "RLax projects with categorical_l2_project",
        ),
    ]


def _implementations() -> list[Implementation]:
    import rlax

    jax = _jax()
    gae = Implementation(
        name="rlax.truncated_generalized_advantage_estimation",
        spec=EstimatorSpec("generalized_advantage_estimate", convention="rlax"),
        backend="jax",
        fn=jax.jit(rlax.truncated_generalized_advantage_estimation),
        note=(
            "check()'s 'rlax' convention: one call per row and feature, discount_t = "
            "gamma * (1 - terminated), values = state_value + the last next_state_value; "
            "next_state_value[t] is taken to be state_value[t + 1] (RLax has one values "
            "array), so truncations inside a row are not expressible and are rerun as "
            "terminations"
        ),
    )

    def made(name, function, fn, note, disagreements=()):
        return Implementation(
            name=f"rlax.{name}",
            spec=EstimatorSpec(function),
            backend="jax",
            fn=fn,
            note=note,
            disagreements=tuple(disagreements),
        )

    return [
        gae,
        *_term_implementations(),
        made(
            "lambda_returns",
            "td_lambda_return_estimate",
            td_lambda_return,
            _PER_TRAJECTORY + _DISCOUNT + ", lambda_ = lmbda (scalar or per step)",
            [ROLLING],
        ),
        made(
            "lambda_returns - state_value",
            "td_lambda_advantage_estimate",
            td_lambda_advantage,
            _PER_TRAJECTORY + _DISCOUNT + ", lambda_ = lmbda; minus state_value",
            [ROLLING],
        ),
        made(
            "discounted_returns",
            "td1_return_estimate",
            td1_return,
            _PER_TRAJECTORY + _DISCOUNT + " (only its last element is used)",
            [ROLLING],
        ),
        made(
            "discounted_returns - state_value",
            "td1_advantage_estimate",
            td1_advantage,
            _PER_TRAJECTORY + _DISCOUNT + "; minus state_value",
            [ROLLING],
        ),
        made(
            "td_learning(v_tm1=0)",
            "td0_return_estimate",
            td0_return,
            "rlax.td_learning vmapped over every element, v_tm1 = 0 (so the TD error is the "
            "target), " + _DISCOUNT,
        ),
        made(
            "td_learning",
            "td0_advantage_estimate",
            td0_advantage,
            "rlax.td_learning vmapped over every element, v_tm1 = state_value, "
            + _DISCOUNT
            + "; done is not needed by TD(0)",
        ),
        made(
            "vtrace_td_error_and_advantage",
            "vtrace_advantage_estimate",
            vtrace,
            _PER_TRAJECTORY + "v_tm1 = state_value, " + _DISCOUNT + ", rho_tm1 = exp(log_pi - "
            "log_mu), lambda_ = 1, clip_rho_threshold = clip_pg_rho_threshold = rho_thresh "
            "(c_thresh has no RLax argument); advantage = pg_advantage, value_target = "
            "errors + state_value",
            [VTRACE_C],
        ),
    ]


FRAMEWORK = Framework(
    name="rlax",
    pip="rlax",
    missing=_missing,
    version=_version,
    implementations=_implementations,
    disagreements=DISAGREEMENTS,
)
