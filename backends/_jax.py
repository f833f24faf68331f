r"""JAX: the estimator scans are native ``jax.lax.scan`` loops.

The reference scan is a Python loop that ``jax.jit`` unrolls, so its graph and compile
time grow with the trajectory length T. Here the reverse linear recurrence

.. math:: y_t = a_t + b_t \, y_{t+1}, \qquad y_T = \text{init}

is one ``lax.scan`` over time (``reverse=True``) whose body is a single multiply-add on
a ``[N·F]`` vector: the graph has the same size for every T, and ``jit``, ``grad`` and
``vmap`` go through it natively (JAX differentiates ``lax.scan`` by its own adjoint
scan).

Why ``lax.scan`` and not ``lax.associative_scan`` with the composition
``(a, b) ∘ (a', b') = (a + b·a', b·b')`` (O(log T) depth): measured on the CPU (XLA,
2 cores, ``[256, T, 1]`` float32, jitted linear scan), at T = 64 / 4096 ``lax.scan``
compiled in 0.3 / 0.1 s and ran in 0.05 / 4.8 ms, its gradient 0.1 / 12 ms; the
associative scan compiled in 1.0 / 1.0–3.1 s, ran in 0.09 / 5.6 ms (scanning rows) or
0.16 / 19 ms (time-major), its gradient 0.3–0.5 / 55–70 ms, and its graph still grows
as log T (160 / 304 equations against 8). float64 gave the same order. A time-chunked
``lax.scan`` (chunk composites, a short scan over the chunk boundaries, one fix-up pass)
was 3–8× slower than the plain one on the CPU. ``benchmarks/bench_jax.py`` records the
estimator-level numbers beside RLax.

Layout: XLA's CPU loop reads one contiguous row per step, so the arrays are scanned
time-major, ``[T, N·F]``. That is free for time-major callers (``N == 1``, e.g. inputs
``[T, B]`` with ``time_dim=0``) and one transposed copy in and out otherwise; inside an
outer ``jit`` XLA fuses the estimator's element-wise maths into those copies. Each
kernel is ``jax.jit``-compiled, so an eager call is one XLA program, and inside an
outer ``jit`` it is inlined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ._base import ScanKernels
from ._generic import GenericBackend


class JaxBackend(GenericBackend):
    """JAX arrays (and tracers, under ``jit``/``grad``/``vmap``) on one device."""

    name = "jax"

    def compiled_kernel(self) -> str | None:
        return "jax"

    def scalar_param(self, value: float, dtype: Any, shape: tuple[int, ...]) -> Any:
        """A scalar hyper-parameter as a ``[1, 1, 1]`` array that broadcasts against the
        ``shape`` inputs: made anew on every call, never cached, since an array made
        under ``jit`` is a tracer of that one trace (a cached one leaks into the next)."""
        return jnp.full((1,) * len(shape), value, dtype=dtype, device=self.device)

    def _build_kernels(self, needs_grad: bool) -> ScanKernels:
        return jax_kernels()

    def input_gradients(self, fn: Callable[..., Any], *inputs: Any) -> tuple[Any, ...]:
        """``jax.grad`` of ``sum fn(*inputs)`` in every argument: a traced function, so
        an outer ``jax.grad`` (over the parameters ``fn`` closes over) differentiates it
        again."""

        def total(*xs: Any) -> Any:
            return jnp.sum(fn(*xs))

        return tuple(jax.grad(total, argnums=tuple(range(len(inputs))))(*inputs))


def jax_kernels() -> ScanKernels:
    """The ``lax.scan`` kernels: the linear scan and the fused estimators."""
    fused = {"gae": gae, "td_lambda": td_lambda, "vtrace": vtrace, "reward2go": reward2go}
    return ScanKernels("jax", linear_scan, fused)


# -- layout -------------------------------------------------------------------
def _time_major(x: Any) -> Any:
    """``[N, T, F]`` → ``[T, N·F]`` (a reshape when ``N == 1``, else a transpose)."""
    n, steps, feats = x.shape
    return jnp.moveaxis(x, 1, 0).reshape(steps, n * feats)


def _batch_major(y: Any, n: int, feats: int) -> Any:
    """``[T, N·F]`` → ``[N, T, F]``, the inverse of :func:`_time_major`."""
    return jnp.moveaxis(y.reshape(y.shape[0], n, feats), 0, 1)


def _reverse_scan(a: Any, b: Any, init: Any) -> Any:
    r"""``y_t = a_t + b_t y_{t+1}``, ``y_T = init`` on time-major ``[T, M]`` arrays."""

    def step(carry: Any, ab: tuple[Any, Any]) -> tuple[Any, Any]:
        y = ab[0] + ab[1] * carry
        return y, y

    return lax.scan(step, init, (a, b), reverse=True)[1]


def _not(mask: Any, dtype: Any) -> Any:
    """``1 - mask`` as floats of ``dtype``."""
    return jnp.logical_not(mask).astype(dtype)


# -- kernels ------------------------------------------------------------------
def _scan_ntf(a: Any, b: Any, init: Any) -> Any:
    """:func:`linear_scan` without its own ``jit`` (for the fused kernels' bodies)."""
    n, steps, feats = a.shape
    if steps == 0:
        return a
    y = _reverse_scan(_time_major(a), _time_major(b), init.reshape(n * feats))
    return _batch_major(y, n, feats)


@jax.jit
def linear_scan(a: Any, b: Any, init: Any) -> Any:
    r"""Reverse linear recurrence over ``[N, T, F]`` arrays; ``init`` is ``[N, F]``.

    .. math:: y_t = a_t + b_t \, y_{t+1}, \qquad y_T = \text{init}
    """
    return _scan_ntf(a, b, init)


def _zeros_carry(x: Any) -> Any:
    """``[N, F]`` zeros: the value past the last step of ``x`` (``[N, T, F]``)."""
    return jnp.zeros((x.shape[0], x.shape[2]), dtype=x.dtype)


@jax.jit
def gae(
    gamma: Any, lmbda: Any, value: Any, next_value: Any, reward: Any, done: Any, terminated: Any
) -> tuple[Any, Any]:
    r"""GAE in one XLA program: ``(A, A + V)`` with

    .. math:: A_t = r_t + \gamma_t (1 - \text{term}_t) V'_t - V_t
        + \gamma_t \lambda_t (1 - \text{done}_t) A_{t+1}, \qquad A_T = 0.
    """
    dtype = value.dtype
    delta = reward + gamma * _not(terminated, dtype) * next_value - value
    adv = _scan_ntf(delta, gamma * lmbda * _not(done, dtype), _zeros_carry(value))
    return adv, adv + value


@jax.jit
def td_lambda(
    gamma: Any, lmbda: Any, next_value: Any, reward: Any, done: Any, terminated: Any
) -> Any:
    r"""TD(λ) return in one XLA program. With :math:`\bar V_t = (1 - \text{term}_t) V'_t`,
    :math:`\bar d_t = 1 - \text{done}_t`:

    .. math:: G_t = r_t + \gamma_t \bar V_t (1 - \lambda_t \bar d_t)
        + \gamma_t \lambda_t \bar d_t G_{t+1}, \qquad G_T = \bar V_{T-1}.
    """
    if reward.shape[1] == 0:
        return reward
    dtype = next_value.dtype
    bootstrap = next_value * _not(terminated, dtype)
    not_done = _not(done, dtype)
    offset = reward + gamma * bootstrap * (1.0 - lmbda * not_done)
    return _scan_ntf(offset, gamma * lmbda * not_done, bootstrap[:, -1, :])


@jax.jit
def vtrace(
    gamma: Any,
    log_pi: Any,
    log_mu: Any,
    value: Any,
    next_value: Any,
    reward: Any,
    done: Any,
    terminated: Any,
    rho_thresh: Any,
    c_thresh: Any,
) -> tuple[Any, Any]:
    r"""V-trace ``(advantage, v_s)`` in one XLA program, with :math:`\rho_t = e^{\log\pi_t
    - \log\mu_t}`, :math:`\bar\rho_t = \min(\rho_t, \bar\rho)`, :math:`\bar c_t =
    \min(\rho_t, \bar c)`:

    .. math::
        v_t - V_t &= \bar\rho_t \delta_t + \gamma_t (1 - \text{done}_t) \bar c_t
            (v_{t+1} - V_{t+1}), \\
        A_t &= \bar\rho_t (r_t + \gamma_t (1 - \text{term}_t) \tilde v_{t+1} - V_t),
        \quad \tilde v_{t+1} = V'_t \text{ at done or } t = T-1, \text{ else } v_{t+1}.
    """
    dtype = value.dtype
    rho = jnp.exp(log_pi - log_mu)
    rho_bar = jnp.minimum(rho, rho_thresh)
    bootstrap = gamma * _not(terminated, dtype)
    delta = rho_bar * (reward + bootstrap * next_value - value)
    trace = gamma * _not(done, dtype) * jnp.minimum(rho, c_thresh)
    vs = _scan_ntf(delta, trace, _zeros_carry(value)) + value
    following = jnp.concatenate([vs[:, 1:, :], next_value[:, -1:, :]], axis=1)
    next_vs = jnp.where(done, next_value, following)
    return rho_bar * (reward + bootstrap * next_vs - value), vs


@jax.jit
def reward2go(gamma: Any, reward: Any, done: Any) -> Any:
    r"""Discounted reward-to-go :math:`R_t = r_t + \gamma_t (1 - \text{done}_t) R_{t+1}`,
    :math:`R_T = 0`, in one XLA program."""
    return _scan_ntf(reward, gamma * _not(done, reward.dtype), _zeros_carry(reward))
