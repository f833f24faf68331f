r"""Value estimators as functions: GAE, TD(0), TD(1), TD(λ), V-trace and reward-to-go.

Names, argument order and semantics follow ``torchrl.objectives.value.functional``
(TorchRL 0.14.1): inputs share one shape ``[*B, T, *F]`` with time at ``time_dim``
(default ``-2``); ``done`` cuts the trace (λ-mixing, eligibility) at the end of a
trajectory, ``terminated`` cuts the bootstrap from the next value; ``gamma`` and
``lmbda`` are floats or per-step arrays of the inputs' shape. TorchRL's ``vec_*``
functions are aliases here: one implementation is fast on every backend.

Each estimator is a reverse linear recurrence :math:`y_t = a_t + b_t\,y_{t+1}`; the
``kernel=`` keyword chooses who runs it: ``"auto"`` (the fastest that fits the arrays),
``"reference"`` (Array API only, the float64 oracle), ``"numba"`` (NumPy and torch CPU)
or ``"cuda"`` (CuPy and torch CUDA). On torch, tensors that need a gradient go through a
``torch.autograd.Function`` whose backward is the adjoint scan.
"""

from __future__ import annotations

import warnings
from typing import Any

from arrayrl._validation import required_array

from ._inputs import ScanInputs, prepare, scalar_or_array

__all__ = [
    "generalized_advantage_estimate",
    "reward2go",
    "td0_advantage_estimate",
    "td0_return_estimate",
    "td1_advantage_estimate",
    "td1_return_estimate",
    "td_lambda_advantage_estimate",
    "td_lambda_return_estimate",
    "vec_generalized_advantage_estimate",
    "vec_td1_advantage_estimate",
    "vec_td1_return_estimate",
    "vec_td_lambda_advantage_estimate",
    "vec_td_lambda_return_estimate",
    "vtrace_advantage_estimate",
]


def _not(mask: Any, s: ScanInputs) -> Any:
    """``1 - mask`` as a float array of the inputs' dtype."""
    return s.xp.astype(s.xp.logical_not(mask), s.dtype)


def _discounts(gamma: Any, lmbda: Any = 0.0) -> tuple[Any, Any]:
    """``(γ, λ)`` checked: scalars as Python floats in ``[0, 1]``, arrays as given."""
    return (
        scalar_or_array("gamma", gamma, low=0.0, high=1.0),
        scalar_or_array("lmbda", lmbda, low=0.0, high=1.0),
    )


def _out_kw(views: Any) -> dict[str, Any]:
    """The ``out=`` keyword for a fused kernel: empty when there is nothing to write into."""
    return {} if views is None else {"out": views}


def _require(owner: str, **arrays: Any) -> None:
    """``TypeError`` naming the first of ``arrays`` that is ``None`` or not an array."""
    for name, value in arrays.items():
        required_array(name, value, owner=owner)


########################################################################
# GAE


def generalized_advantage_estimate(
    gamma: float | Any,
    lmbda: float | Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    *,
    time_dim: int = -2,
    kernel: str = "auto",
    out: tuple[Any, Any] | None = None,
) -> tuple[Any, Any]:
    r"""Generalized advantage estimate (Schulman et al., 2016, arXiv:1506.02438).

    .. math::

        \delta_t &= r_t + \gamma_t (1 - \text{terminated}_t) V(s'_t) - V(s_t) \\
        A_t &= \delta_t + \gamma_t \lambda_t (1 - \text{done}_t) A_{t+1},
        \qquad A_T = 0

    Parameters
    ----------
    gamma, lmbda : float or array
        Discount and λ; floats in ``[0, 1]`` or per-step arrays of the inputs' shape.
    state_value, next_state_value, reward : array ``[*B, T, *F]``
        :math:`V(s_t)`, :math:`V(s'_t)` and :math:`r_t`, real floating.
    done, terminated : bool array ``[*B, T, *F]``
        End of trajectory (cuts the trace) and end of episode (cuts the bootstrap);
        ``terminated`` defaults to ``done``.
    time_dim : int
        The time axis (default ``-2``).
    kernel : {"auto", "reference", "numba", "cuda"}
        Which scan runs the recurrence.
    out : tuple of two arrays, optional
        ``(advantage, value_target)`` buffers to write into; see below.

    Returns
    -------
    advantage, value_target : arrays of the inputs' shape
        :math:`A_t` and :math:`A_t + V(s_t)` (``out`` itself when given).

    Notes
    -----
    ``out`` : caller-provided buffers for the results, written in place and returned
    (the same objects), so that a training loop reuses its memory instead of paying for
    fresh pages on every call. Each must have the inputs' shape, the result dtype, the
    inputs' backend and device, and be C-contiguous; refused on JAX and Dask arrays, and
    when an input requires grad (autograd records no in-place writes). The other
    estimators that take ``out`` follow the same rules.
    """
    _require(
        "generalized_advantage_estimate", state_value=state_value,
        next_state_value=next_state_value, reward=reward, done=done,
    )
    gamma, lmbda = _discounts(gamma, lmbda)
    s = prepare(
        values={"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        masks={"done": done, "terminated": terminated},
        params={"gamma": gamma, "lmbda": lmbda},
        time_dim=time_dim,
        kernel=kernel,
    )
    views = s.out_views(out, 2)
    a, p = s.arrays, s.params
    term = a.get("terminated", a["done"])
    fused = s.kernels.fused.get("gae")
    if fused is not None:
        adv, target = fused(
            p["gamma"], p["lmbda"], a["state_value"], a["next_state_value"], a["reward"],
            a["done"], term, **_out_kw(views),
        )
        return s.deliver((adv, target), out)
    delta = a["reward"] + p["gamma"] * _not(term, s) * a["next_state_value"] - a["state_value"]
    trace = p["gamma"] * p["lmbda"] * _not(a["done"], s)
    adv = s.kernels.linear_scan(delta, trace, s.zeros_carry())
    return s.deliver((adv, adv + a["state_value"]), out)


########################################################################
# TD(0)


def td0_return_estimate(
    gamma: float | Any,
    next_state_value: Any,
    reward: Any,
    terminated: Any | None = None,
    *,
    done: Any | None = None,
    kernel: str = "auto",
) -> Any:
    r"""TD(0) (one-step bootstrapped) return.

    .. math:: G_t = r_t + \gamma_t (1 - \text{terminated}_t) V(s'_t)

    ``done`` is TorchRL's deprecated spelling of ``terminated`` (a warning is emitted).
    Element-wise, so ``kernel`` is only validated. See
    :func:`generalized_advantage_estimate` for the arguments.
    """
    if done is not None and terminated is None:
        warnings.warn(
            "done for td0_return_estimate is deprecated; pass terminated instead",
            DeprecationWarning,
            stacklevel=2,
        )
        terminated = done
    if terminated is None:
        raise TypeError("td0_return_estimate needs terminated (a boolean array)")
    _require("td0_return_estimate", next_state_value=next_state_value, reward=reward)
    gamma, _ = _discounts(gamma)
    s = prepare(
        values={"next_state_value": next_state_value, "reward": reward},
        masks={"terminated": terminated},
        params={"gamma": gamma},
        time_dim=None,
        kernel=kernel,
    )
    a = s.arrays
    returns = a["reward"] + s.params["gamma"] * _not(a["terminated"], s) * a["next_state_value"]
    return s.restore(returns)


def td0_advantage_estimate(
    gamma: float | Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    *,
    kernel: str = "auto",
) -> Any:
    r"""TD(0) advantage :math:`r_t + \gamma_t (1 - \text{terminated}_t) V(s'_t) - V(s_t)`.

    ``terminated`` defaults to ``done``. See :func:`td0_return_estimate`.
    """
    _require(
        "td0_advantage_estimate", state_value=state_value,
        next_state_value=next_state_value, reward=reward, done=done,
    )
    if terminated is None:
        terminated = done
    prepare(  # checks state_value and done against the rest, like TorchRL's shape check
        values={"state_value": state_value, "next_state_value": next_state_value, "reward": reward},
        masks={"done": done, "terminated": terminated},
        params={},
        time_dim=None,
        kernel=kernel,
    )
    returns = td0_return_estimate(gamma, next_state_value, reward, terminated, kernel=kernel)
    return returns - state_value


########################################################################
# TD(λ) and TD(1)


def _td_lambda_terms(s: ScanInputs, lmbda: Any) -> tuple[Any, Any, Any]:
    r"""``(a, b, init)`` of TD(λ) as a reverse linear recurrence.

    With :math:`\bar V_t = (1 - \text{terminated}_t) V(s'_t)` and :math:`\bar d_t = 1 -
    \text{done}_t`: :math:`G_t = r_t + \gamma_t \bar V_t (1 - \lambda_t \bar d_t) +
    \gamma_t \lambda_t \bar d_t G_{t+1}`, :math:`G_T = \bar V_{T-1}`.
    """
    a, gamma = s.arrays, s.params["gamma"]
    next_value = a["next_state_value"] * _not(a.get("terminated", a["done"]), s)
    not_done = _not(a["done"], s)
    trace = gamma * lmbda * not_done
    offset = a["reward"] + gamma * next_value * (1.0 - lmbda * not_done)
    return offset, trace, next_value[:, -1, :]


def _non_rolling(s: ScanInputs, lmbda: Any) -> Any:
    """TD(λ) where each start step ``k`` uses its own γ_k and λ_k for the whole tail.

    The ``T`` start steps become an extra batch axis ``[N, K, T, F]``, one scan runs
    over all of them, and the return of start ``k`` is read at step ``k``.
    """
    xp = s.xp
    a = s.arrays
    n, steps, feats = a["reward"].shape
    if steps == 0:
        return a["reward"]

    def per_start(x: Any) -> Any:  # [N, T, F] -> [N, K, T, F] (the same for every k)
        return xp.broadcast_to(x[:, None, :, :], (n, steps, steps, feats))

    def per_step(x: Any) -> Any:  # [N, K, F] -> [N, K, T, F] (constant along t)
        return xp.broadcast_to(x[:, :, None, :], (n, steps, steps, feats))

    gamma = per_step(s.params["gamma"])
    lam = per_step(lmbda)
    next_value = per_start(a["next_state_value"] * _not(a.get("terminated", a["done"]), s))
    not_done = per_start(_not(a["done"], s))
    offset = per_start(a["reward"]) + gamma * next_value * (1.0 - lam * not_done)
    trace = gamma * lam * not_done
    flat = (n * steps, steps, feats)
    init = xp.reshape(next_value[:, :, -1, :], (n * steps, feats))
    y = s.kernels.linear_scan(xp.reshape(offset, flat), xp.reshape(trace, flat), init)
    y = xp.reshape(y, (n, steps, steps, feats))
    # the diagonal y[:, k, k, :], by a select and a sum over t (no reshape that merges
    # the start and time axes, which lazy backends such as Dask cannot do); the select
    # keeps a NaN of another start's tail out of start k's return
    starts = xp.arange(steps, device=s.backend.device)
    on_diagonal = (starts[:, None] == starts[None, :])[None, :, :, None]
    return xp.sum(xp.where(on_diagonal, y, xp.zeros_like(y)), axis=2)


def _td_lambda(s: ScanInputs, lmbda: Any, rolling_gamma: bool | None, views: Any = None) -> Any:
    if rolling_gamma is False:
        return _non_rolling(s, lmbda)
    fused = s.kernels.fused.get("td_lambda")
    a = s.arrays
    if fused is not None:
        term = a.get("terminated", a["done"])
        return fused(
            s.params["gamma"], lmbda, a["next_state_value"], a["reward"], a["done"], term,
            **_out_kw(views),
        )
    offset, trace, init = _td_lambda_terms(s, lmbda)
    return s.kernels.linear_scan(offset, trace, init)


def _check_rolling(rolling_gamma: bool | None, *params: Any) -> None:
    if rolling_gamma is False and all(getattr(p, "ndim", 0) == 0 for p in params):
        raise ValueError(
            "rolling_gamma=False needs per-step gamma (or lmbda) arrays; with scalar "
            "discounts the two conventions agree, so leave rolling_gamma=None"
        )


def td_lambda_return_estimate(
    gamma: float | Any,
    lmbda: float | Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    rolling_gamma: bool | None = None,
    *,
    time_dim: int = -2,
    kernel: str = "auto",
    out: Any | None = None,
) -> Any:
    r"""TD(λ) return (Sutton & Barto, 2018, §12.1), in TorchRL's recursive form.

    .. math::

        G_t = r_t + \gamma_t \big[(1 - \lambda_t) \bar V_t + \lambda_t \tilde G_{t+1}\big],
        \quad \tilde G_{t+1} = \begin{cases} \bar V_t & \text{done}_t \text{ or } t = T-1 \\
        G_{t+1} & \text{otherwise} \end{cases}

    with :math:`\bar V_t = (1 - \text{terminated}_t) V(s'_t)`. ``rolling_gamma=False``
    (per-step discounts only) gives every start step ``k`` its own :math:`\gamma_k,
    \lambda_k` for the rest of the trajectory. ``out`` (one array) receives the returns
    and is returned; see :func:`generalized_advantage_estimate` for it and the other
    arguments.
    """
    _require(
        "td_lambda_return_estimate", next_state_value=next_state_value, reward=reward,
        done=done,
    )
    gamma, lmbda = _discounts(gamma, lmbda)
    _check_rolling(rolling_gamma, gamma, lmbda)
    s = prepare(
        values={"next_state_value": next_state_value, "reward": reward},
        masks={"done": done, "terminated": terminated},
        params={"gamma": gamma, "lmbda": lmbda},
        time_dim=time_dim,
        kernel=kernel,
    )
    views = s.out_views(out, 1)
    return s.deliver((_td_lambda(s, s.params["lmbda"], rolling_gamma, views),), out)


def td_lambda_advantage_estimate(
    gamma: float | Any,
    lmbda: float | Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
    *,
    kernel: str = "auto",
    out: Any | None = None,
) -> Any:
    """TD(λ) advantage: :func:`td_lambda_return_estimate` minus ``state_value``.

    ``out`` (one array) receives the advantage and is returned; see
    :func:`generalized_advantage_estimate`.
    """
    _require(
        "td_lambda_advantage_estimate", state_value=state_value,
        next_state_value=next_state_value, reward=reward, done=done,
    )
    _check_same_shape(state_value, next_state_value)
    returns = td_lambda_return_estimate(
        gamma, lmbda, next_state_value, reward, done, terminated, rolling_gamma,
        time_dim=time_dim, kernel=kernel, out=out,
    )
    if out is None:
        return returns - state_value
    out -= state_value
    return out


def td1_return_estimate(
    gamma: float | Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    rolling_gamma: bool | None = None,
    *,
    time_dim: int = -2,
    kernel: str = "auto",
    out: Any | None = None,
) -> Any:
    r"""TD(1) (Monte-Carlo, bootstrapped at truncation) return: TD(λ) with λ = 1.

    .. math::

        G_t = r_t + \gamma_t \begin{cases} (1 - \text{terminated}_t) V(s'_t) &
        \text{done}_t \text{ or } t = T-1 \\ G_{t+1} & \text{otherwise} \end{cases}

    See :func:`td_lambda_return_estimate`.
    """
    _require("td1_return_estimate", next_state_value=next_state_value, reward=reward, done=done)
    return td_lambda_return_estimate(
        gamma, 1.0, next_state_value, reward, done, terminated, rolling_gamma,
        time_dim=time_dim, kernel=kernel, out=out,
    )


def td1_advantage_estimate(
    gamma: float | Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    rolling_gamma: bool | None = None,
    time_dim: int = -2,
    *,
    kernel: str = "auto",
    out: Any | None = None,
) -> Any:
    """TD(1) advantage: :func:`td1_return_estimate` minus ``state_value`` (``out`` as in
    :func:`td_lambda_advantage_estimate`)."""
    _require(
        "td1_advantage_estimate", state_value=state_value, next_state_value=next_state_value,
        reward=reward, done=done,
    )
    return td_lambda_advantage_estimate(
        gamma, 1.0, state_value, next_state_value, reward, done, terminated, rolling_gamma,
        time_dim, kernel=kernel, out=out,
    )


def _check_same_shape(state_value: Any, next_state_value: Any) -> None:
    if tuple(state_value.shape) != tuple(next_state_value.shape):
        raise ValueError(
            f"shape mismatch: state_value has shape {tuple(state_value.shape)} but "
            f"next_state_value has shape {tuple(next_state_value.shape)}"
        )


########################################################################
# V-trace


def vtrace_advantage_estimate(
    gamma: float | Any,
    log_pi: Any,
    log_mu: Any,
    state_value: Any,
    next_state_value: Any,
    reward: Any,
    done: Any,
    terminated: Any | None = None,
    rho_thresh: float | Any = 1.0,
    c_thresh: float | Any = 1.0,
    time_dim: int = -2,
    *,
    kernel: str = "auto",
    out: tuple[Any, Any] | None = None,
) -> tuple[Any, Any]:
    r"""V-trace targets and advantages (Espeholt et al., 2018, arXiv:1802.01561).

    With :math:`\rho_t = e^{\log\pi_t - \log\mu_t}`, :math:`\bar\rho_t = \min(\rho_t,
    \bar\rho)`, :math:`\bar c_t = \min(\rho_t, \bar c)`:

    .. math::

        v_t - V(s_t) &= \bar\rho_t \delta_t + \gamma_t (1 - \text{done}_t) \bar c_t
            (v_{t+1} - V(s_{t+1})), \quad
            \delta_t = r_t + \gamma_t (1 - \text{terminated}_t) V(s'_t) - V(s_t) \\
        A_t &= \bar\rho_t \big(r_t + \gamma_t (1 - \text{terminated}_t) \tilde v_{t+1}
            - V(s_t)\big), \quad \tilde v_{t+1} = \begin{cases} V(s'_t) &
            \text{done}_t \text{ or } t = T-1 \\ v_{t+1} & \text{otherwise}\end{cases}

    At a truncation inside the batch the advantage bootstraps from :math:`V(s'_t)`, not
    from the next trajectory's target (TorchRL fixed this in 0.14.1; issue 4209).

    ``out``, a tuple of two arrays, receives ``(advantage, value_target)`` and is
    returned; see :func:`generalized_advantage_estimate`.

    Returns
    -------
    advantage, value_target : arrays of the inputs' shape
        :math:`A_t` and :math:`v_t`.
    """
    _require(
        "vtrace_advantage_estimate", log_pi=log_pi, log_mu=log_mu, state_value=state_value,
        next_state_value=next_state_value, reward=reward, done=done,
    )
    gamma, _ = _discounts(gamma)
    rho_thresh = scalar_or_array("rho_thresh", rho_thresh, low=0.0, low_open=True)
    c_thresh = scalar_or_array("c_thresh", c_thresh, low=0.0, low_open=True)
    s = prepare(
        values={
            "state_value": state_value, "next_state_value": next_state_value, "reward": reward,
            "log_pi": log_pi, "log_mu": log_mu,
        },
        masks={"done": done, "terminated": terminated},
        params={"gamma": gamma, "rho_thresh": rho_thresh, "c_thresh": c_thresh},
        time_dim=time_dim,
        kernel=kernel,
    )
    views = s.out_views(out, 2)
    a, p = s.arrays, s.params
    term = a.get("terminated", a["done"])
    fused = s.kernels.fused.get("vtrace")
    if fused is not None:
        adv, vs = fused(
            p["gamma"], a["log_pi"], a["log_mu"], a["state_value"], a["next_state_value"],
            a["reward"], a["done"], term, p["rho_thresh"], p["c_thresh"], **_out_kw(views),
        )
        return s.deliver((adv, vs), out)
    return s.deliver(_vtrace(s, term), out)


def _vtrace(s: ScanInputs, term: Any) -> tuple[Any, Any]:
    xp, a, p = s.xp, s.arrays, s.params
    rho = xp.exp(a["log_pi"] - a["log_mu"])
    rho_bar = xp.minimum(rho, p["rho_thresh"])
    c_bar = xp.minimum(rho, p["c_thresh"])
    bootstrap = p["gamma"] * _not(term, s)
    delta = rho_bar * (a["reward"] + bootstrap * a["next_state_value"] - a["state_value"])
    trace = p["gamma"] * _not(a["done"], s) * c_bar
    vs = s.kernels.linear_scan(delta, trace, s.zeros_carry()) + a["state_value"]
    following = xp.concat([vs[:, 1:, :], a["next_state_value"][:, -1:, :]], axis=1)
    next_vs = xp.where(a["done"], a["next_state_value"], following)
    adv = rho_bar * (a["reward"] + bootstrap * next_vs - a["state_value"])
    return adv, vs


########################################################################
# Reward to go


def reward2go(
    reward: Any,
    done: Any,
    gamma: float | Any,
    *,
    time_dim: int = -2,
    kernel: str = "auto",
    out: Any | None = None,
) -> Any:
    r"""Discounted reward-to-go, restarted at every ``done``.

    .. math:: R_t = r_t + \gamma_t (1 - \text{done}_t) R_{t+1}, \qquad R_T = 0

    No bootstrap: the last, unfinished trajectory of the batch sums its rewards only.
    ``out`` (one array) receives the returns and is returned; see
    :func:`generalized_advantage_estimate`.
    """
    _require("reward2go", reward=reward, done=done)
    gamma, _ = _discounts(gamma)
    s = prepare(
        values={"reward": reward},
        masks={"done": done},
        params={"gamma": gamma},
        time_dim=time_dim,
        kernel=kernel,
    )
    views = s.out_views(out, 1)
    a = s.arrays
    fused = s.kernels.fused.get("reward2go")
    if fused is not None:
        return s.deliver((fused(s.params["gamma"], a["reward"], a["done"], **_out_kw(views)),), out)
    trace = s.params["gamma"] * _not(a["done"], s)
    return s.deliver((s.kernels.linear_scan(a["reward"], trace, s.zeros_carry()),), out)


# TorchRL's vectorised variants: the same functions here.
vec_generalized_advantage_estimate = generalized_advantage_estimate
vec_td1_return_estimate = td1_return_estimate
vec_td1_advantage_estimate = td1_advantage_estimate
vec_td_lambda_return_estimate = td_lambda_return_estimate
vec_td_lambda_advantage_estimate = td_lambda_advantage_estimate
