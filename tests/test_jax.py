"""JAX: the native ``lax.scan`` kernels (``kernel="jax"``, what ``"auto"`` picks) against
the float64 reference, under ``jax.jit``, ``jax.grad`` and ``jax.vmap``; and the
reference path, which stays available as ``kernel="reference"``.

Skipped where JAX is not installed (see the README for the extras).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from arrayrl.backends import backend_of

import arrayrl.objectives.value.functional as F

from ._data import trajectories

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy

GAMMA, LMBDA = 0.9, 0.8
TOL = {"float64": 1e-12, "float32": 2e-5}


def _gae_sum(value, next_value, reward, done):
    return F.generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done)[0].sum()


def test_jax_grad_and_jit_match_torch_autograd():
    d = trajectories(0, 3, 7)
    value, next_value, reward = (jnp.asarray(d[k]) for k in ("value", "next_value", "reward"))
    done = jnp.asarray(d["done"])
    grads = jax.grad(_gae_sum, argnums=(0, 2))(value, next_value, reward, done)
    jitted = jax.jit(_gae_sum)(value, next_value, reward, done)

    t = {
        k: torch.from_numpy(d[k]).requires_grad_(k != "done")
        for k in ("value", "next_value", "reward", "done")
    }
    total = _gae_sum(t["value"], t["next_value"], t["reward"], t["done"])
    total.backward()
    np.testing.assert_allclose(float(jitted), total.item(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads[0]), t["value"].grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads[1]), t["reward"].grad.numpy(), rtol=1e-12)


########################################################################
# which kernel runs


def test_auto_picks_the_native_kernel_and_reference_stays_available():
    backend = backend_of(jnp.zeros(3))
    assert backend.name == "jax"
    assert backend.kernels("auto", dtype=jnp.float32).name == "jax"
    assert backend.kernels("auto", dtype=jnp.float64).name == "jax"
    assert backend.kernels("jax").name == "jax"
    assert backend.kernels("reference").name == "reference"
    assert backend.kernels("auto", dtype=jnp.float16).name == "reference"


def test_kernel_names_that_do_not_fit_fail_early():
    with pytest.raises(ValueError, match="kernel='numba' is not available for jax"):
        backend_of(jnp.zeros(3)).kernels("numba")
    with pytest.raises(ValueError, match="kernel='jax' is not available for numpy"):
        backend_of(np.zeros(3)).kernels("jax")
    with pytest.raises(TypeError, match="kernel='jax' takes float32 or float64"):
        backend_of(jnp.zeros(3)).kernels("jax", dtype=jnp.float16)


########################################################################
# native kernels vs the float64 NumPy reference


def _estimators(gamma, lmbda):
    """name → (function of the data dict, keyword arguments); all return tuples."""

    def gae(d, **kw):
        return F.generalized_advantage_estimate(
            gamma,
            lmbda,
            d["value"],
            d["next_value"],
            d["reward"],
            d["done"],
            d["terminated"],
            **kw,
        )

    def td_lambda(d, **kw):
        return (
            F.td_lambda_return_estimate(
                gamma, lmbda, d["next_value"], d["reward"], d["done"], d["terminated"], **kw
            ),
        )

    def td1(d, **kw):
        return (
            F.td1_return_estimate(
                gamma, d["next_value"], d["reward"], d["done"], d["terminated"], **kw
            ),
        )

    def vtrace(d, **kw):
        return F.vtrace_advantage_estimate(
            gamma,
            d["log_pi"],
            d["log_mu"],
            d["value"],
            d["next_value"],
            d["reward"],
            d["done"],
            d["terminated"],
            1.0,
            0.9,
            **kw,
        )

    def reward2go(d, **kw):
        return (F.reward2go(d["reward"], d["done"], gamma, **kw),)

    return {
        "gae": gae,
        "td_lambda": td_lambda,
        "td1": td1,
        "vtrace": vtrace,
        "reward2go": reward2go,
    }


def _data(shape, time_dim, seed=0):
    """Trajectories (float64 NumPy) of ``shape`` with time at ``time_dim``."""
    axis = time_dim % len(shape)
    others = [s for i, s in enumerate(shape) if i != axis]
    d = trajectories(seed, int(np.prod(others)), shape[axis])  # [M, T, 1]
    return {k: np.moveaxis(x[..., 0].reshape(*others, -1), -1, axis) for k, x in d.items()}


def _to_jax(d, dtype):
    return {k: jnp.asarray(x, dtype=dtype if x.dtype.kind == "f" else None) for k, x in d.items()}


_NAMES = ["gae", "td_lambda", "td1", "vtrace", "reward2go"]
#: every estimator on three layouts (batch dims and features; time-major 2-D; time
#: inside) in float64, and on TorchRL's ``[B, T, 1]`` in float32 (compiles cost ~0.3 s
#: each, so the matrix stays small; `pytest conformance` runs every case on JAX)
_LAYOUTS = [((2, 3, 9, 2), -2), ((9, 6), 0), ((2, 9, 3), 1)]
_MATRIX = [(n, *layout, "float64") for n in _NAMES for layout in _LAYOUTS]
_MATRIX += [(n, (4, 9, 1), -2, "float32") for n in _NAMES]


@pytest.mark.parametrize(("name", "shape", "time_dim", "dtype"), _MATRIX)
def test_native_kernels_match_reference(name, shape, time_dim, dtype):
    d = _data(shape, time_dim)
    fn = _estimators(GAMMA, LMBDA)[name]
    want = fn(d, time_dim=time_dim, kernel="reference")
    got = fn(_to_jax(d, dtype), time_dim=time_dim, kernel="jax")
    for g, w in zip(got, want, strict=True):
        assert g.dtype == jnp.dtype(dtype)
        np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=0, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("name", ["gae", "td_lambda", "vtrace", "reward2go"])
def test_per_step_gamma_and_lambda_arrays(name):
    d = _data((4, 11, 1), -2, seed=3)
    rng = np.random.default_rng(1)
    gamma = rng.uniform(0.5, 1.0, (4, 11, 1))
    lmbda = rng.uniform(0.0, 1.0, (4, 11, 1))
    want = _estimators(gamma, lmbda)[name](d, kernel="reference")
    jgamma, jlmbda = jnp.asarray(gamma), jnp.asarray(lmbda)
    got = _estimators(jgamma, jlmbda)[name](_to_jax(d, "float64"), kernel="jax")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=1e-12)


def test_non_rolling_gamma_with_a_scalar_gamma():
    """``rolling_gamma=False`` indexes the hyper-parameters per start step: a scalar γ
    (the JAX backend's ``[1, 1, 1]`` array) next to a per-step λ."""
    d = _data((2, 5, 1), -2, seed=4)
    lmbda = np.random.default_rng(5).uniform(0.0, 1.0, (2, 5, 1))
    args = ("next_value", "reward", "done", "terminated")
    want = F.td_lambda_return_estimate(
        GAMMA, lmbda, *(d[k] for k in args), rolling_gamma=False, kernel="reference"
    )
    jd = _to_jax(d, "float64")
    got = F.td_lambda_return_estimate(
        GAMMA, jnp.asarray(lmbda), *(jd[k] for k in args), rolling_gamma=False, kernel="jax"
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-12)


def test_nan_propagates_as_in_the_reference():
    d = _data((3, 8, 1), -2)
    d["reward"][1, 5, 0] = np.nan
    want = _estimators(GAMMA, LMBDA)["gae"](d, kernel="reference")
    got = _estimators(GAMMA, LMBDA)["gae"](_to_jax(d, "float64"), kernel="jax")
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.isnan(np.asarray(g)), np.isnan(w))
        np.testing.assert_allclose(np.asarray(g), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["gae", "td_lambda", "vtrace", "reward2go"])
def test_empty_time_axis(name):
    d = _to_jax(_data((3, 4, 1), -2), "float64")
    empty = {k: x[:, :0] for k, x in d.items()}
    for y in _estimators(GAMMA, LMBDA)[name](empty, kernel="jax"):
        assert y.shape == (3, 0, 1)


@pytest.mark.parametrize(
    ("spec", "fn"),
    [
        ("generalized_advantage_estimate", F.generalized_advantage_estimate),
        ("td_lambda_return_estimate", F.td_lambda_return_estimate),
        ("vtrace_advantage_estimate", F.vtrace_advantage_estimate),
    ],
)
def test_conformance_check_values_and_gradients(spec, fn):
    """Two conformance cases (T = 16 random dones; T = 1) through
    ``arrayrl.conformance.check``, which also compares ``jax.vjp`` gradients."""
    from arrayrl.conformance import check

    report = check(
        functools.partial(fn, kernel="jax"),
        spec,
        backend="jax",
        dtypes=("float64",),
        cases=["B4_T16_F1,random", "T1,first_and_last"],
    )
    assert report.skipped is None and report.results, report
    assert report.passed, report


########################################################################
# jit, grad, vmap


def _gae_adv(value, next_value, reward, done, gamma=GAMMA, kernel="jax"):
    return F.generalized_advantage_estimate(
        gamma, LMBDA, value, next_value, reward, done, kernel=kernel
    )[0]


def test_grad_of_native_kernel_matches_reference_grad():
    d = _to_jax(_data((3, 6, 1), -2), "float64")
    gamma = jnp.full((3, 6, 1), 0.95)
    w = jnp.asarray(np.random.default_rng(2).standard_normal((3, 6, 1)))

    def loss(kernel, value, reward, gamma):
        return (_gae_adv(value, d["next_value"], reward, d["done"], gamma, kernel) * w).sum()

    grads = {
        k: jax.grad(functools.partial(loss, k), argnums=(0, 1, 2))(d["value"], d["reward"], gamma)
        for k in ("jax", "reference")
    }
    for g, r in zip(grads["jax"], grads["reference"], strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-12)


def test_jit_matches_eager():
    d = _to_jax(_data((3, 12, 1), -2), "float32")
    args = (d["value"], d["next_value"], d["reward"], d["done"])
    np.testing.assert_allclose(
        np.asarray(jax.jit(_gae_adv)(*args)), np.asarray(_gae_adv(*args)), rtol=0, atol=1e-6
    )


def test_vmap_over_trajectories_matches_the_batched_call():
    d = _to_jax(_data((5, 12, 1), -2), "float64")
    args = (d["value"], d["next_value"], d["reward"], d["done"])
    one_at_a_time = jax.vmap(_gae_adv)(*args)  # each call sees [T, 1]
    np.testing.assert_allclose(np.asarray(one_at_a_time), np.asarray(_gae_adv(*args)), atol=1e-12)


def test_vmap_of_grad_under_jit():
    d = _to_jax(_data((4, 9, 1), -2), "float64")
    args = (d["value"], d["next_value"], d["reward"], d["done"])

    def total(*args):
        return _gae_adv(*args).sum()

    per_row = jax.jit(jax.vmap(jax.grad(total, argnums=(0, 2))))(*args)
    batched = jax.grad(total, argnums=(0, 2))(*args)  # rows are independent
    for a, b in zip(per_row, batched, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)


########################################################################
# graph size does not grow with T


def _count_eqns(jaxpr) -> int:
    """Equations of ``jaxpr`` and of every jaxpr nested in its equations (jit, scan)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _count_eqns(inner)
    return total


def _graph_size(kernel: str, steps: int, name: str = "gae") -> int:
    d = _to_jax(_data((2, steps, 1), -2), "float32")
    fn = _estimators(GAMMA, LMBDA)[name]
    jaxpr = jax.make_jaxpr(lambda d: fn(d, kernel=kernel))(d).jaxpr
    return _count_eqns(jaxpr)


@pytest.mark.parametrize("name", ["gae", "td_lambda", "vtrace", "reward2go"])
def test_native_graph_size_does_not_grow_with_T(name):
    assert _graph_size("jax", 16, name) == _graph_size("jax", 1024, name)


def test_reference_graph_grows_with_T():
    """The assertion above can fail: the unrolled reference grows with T."""
    assert _graph_size("reference", 32) > _graph_size("reference", 16) > _graph_size("jax", 16)


def test_retracing_does_not_leak_tracers():
    """A scalar γ broadcast under one trace must not be handed to the next one: two
    separately jitted functions on the same shapes (a leaked tracer raised
    ``UnexpectedTracerError`` here before the JAX backend built its own scalars)."""
    d = _to_jax(_data((2, 5, 1), -2), "float32")
    args = (d["value"], d["next_value"], d["reward"], d["done"])
    first = jax.jit(_gae_adv)(*args)
    second = jax.jit(lambda *a: _gae_adv(*a) * 1.0)(*args)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))


def test_arraydict_takes_grad_tracers_beside_concrete_arrays():
    """Under an eager jax.grad the traced arrays have no device; an ArrayDict holding
    them with the batch's concrete arrays is one JAX dict (it was refused)."""
    from arrayrl.data import ArrayDict

    def total(w):
        batch = ArrayDict({"w": 2.0 * w}, [3])
        batch.set("x", jnp.arange(3.0))
        return jnp.sum(batch.get("w") * batch.get("x"))

    np.testing.assert_allclose(np.asarray(jax.grad(total)(jnp.ones(3))), [0.0, 2.0, 4.0])
    with pytest.raises(TypeError, match=r"convert"):
        ArrayDict({"a": jnp.ones(3)}, [3]).set("b", np.ones(3))
