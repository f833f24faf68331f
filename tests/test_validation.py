"""The validation helpers (``arrayrl._validation``), and the estimators' use of them.

Properties of each helper over every scalar type (Python, NumPy scalars, 0-d NumPy and
torch arrays), then tables over the functional estimators and the estimator classes:
NumPy / torch scalars and 0-d arrays are range-checked like Python floats, a NumPy γ
works with torch inputs, NaN hyper-parameters are refused, and a missing array is named.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl._validation import (
    coefficient,
    count,
    hyperparameter,
    network_name,
    reject_unknown_kwargs,
    required_array,
)
from arrayrl.objectives import value as V
from arrayrl.objectives.value import functional as F


def _torch_scalar(x: float):
    torch = pytest.importorskip("torch")
    return torch.tensor(x, dtype=torch.float64)


#: Each way to spell one real number, and the float it must read as.
SCALAR_TYPES = {
    "python": (lambda x: x, lambda x: x),
    "np.float64": (np.float64, lambda x: x),
    "np.float32": (np.float32, lambda x: float(np.float32(x))),
    "0-d numpy": (np.asarray, lambda x: x),
    "0-d torch": (_torch_scalar, lambda x: x),
}
unit_floats = st.floats(0.0, 1.0, allow_nan=False)
outside_unit = st.one_of(
    st.floats(-1e30, -1e-3), st.floats(1.001, 1e30)
)


# -- hyperparameter -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(SCALAR_TYPES))
@settings(deadline=None)
@given(x=unit_floats)
def test_hyperparameter_round_trips_every_scalar_type(kind, x) -> None:
    make, expected = SCALAR_TYPES[kind]
    got = hyperparameter("gamma", make(x), low=0.0, high=1.0)
    assert type(got) is float and got == expected(x)


@pytest.mark.parametrize("kind", sorted(SCALAR_TYPES))
@settings(deadline=None)
@given(x=st.one_of(outside_unit, st.just(math.nan)))
def test_hyperparameter_out_of_range_or_nan_names_the_argument(kind, x) -> None:
    make, _ = SCALAR_TYPES[kind]
    with pytest.raises(ValueError, match=r"lmbda must be in \[0.0, 1.0\], got"):
        hyperparameter("lmbda", make(x), low=0.0, high=1.0)


@pytest.mark.parametrize(
    ("low_open", "high_open", "value"), [(True, False, 0.0), (False, True, 1.0)]
)
def test_hyperparameter_open_ends(low_open, high_open, value) -> None:
    with pytest.raises(ValueError, match="x must be in"):
        hyperparameter("x", value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


@pytest.mark.parametrize("value", [True, np.bool_(False), np.array(True)])
def test_hyperparameter_refuses_booleans(value) -> None:
    with pytest.raises(ValueError, match="gamma must be a number"):
        hyperparameter("gamma", value, low=0.0, high=1.0)


@pytest.mark.parametrize("value", ["0.9", [0.9], np.ones(2), None, 1j, np.array(1 + 0j)])
def test_hyperparameter_refuses_non_numbers(value) -> None:
    with pytest.raises(TypeError, match="gamma must be a real number"):
        hyperparameter("gamma", value, low=0.0, high=1.0)


# -- coefficient ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(SCALAR_TYPES))
@settings(deadline=None)
@given(x=st.floats(0.0, 1e30, allow_nan=False))
def test_coefficient_round_trips_every_scalar_type(kind, x) -> None:
    make, expected = SCALAR_TYPES[kind]
    assert coefficient("entropy_coeff", make(x)) == expected(x)


@pytest.mark.parametrize("kind", sorted(SCALAR_TYPES))
@settings(deadline=None)
@given(x=st.one_of(st.floats(-1e30, -1e-6), st.sampled_from([math.nan, math.inf])))
def test_coefficient_refuses_nan_inf_and_negatives(kind, x) -> None:
    make, _ = SCALAR_TYPES[kind]
    with pytest.raises(ValueError, match="critic_coeff must be >= 0 and finite"):
        coefficient("critic_coeff", make(x))


def test_coefficient_none_and_non_numbers() -> None:
    assert coefficient("clip_value", None) is None
    with pytest.raises(TypeError, match="clip_value"):
        coefficient("clip_value", None, allow_none=False)
    with pytest.raises(TypeError, match="clip_value must be a real number"):
        coefficient("clip_value", "0.2")
    with pytest.raises(ValueError, match="clip_value"):
        coefficient("clip_value", True)


# -- count ------------------------------------------------------------------------------------
INT_TYPES = {
    "python": int,
    "np.int64": np.int64,
    "np.int32": np.int32,
    "0-d numpy": lambda n: np.asarray(n),
    "0-d torch": lambda n: pytest.importorskip("torch").tensor(n),
}


@pytest.mark.parametrize("kind", sorted(INT_TYPES))
@settings(deadline=None)
@given(n=st.integers(1, 2**31 - 1))
def test_count_round_trips_every_integer_type(kind, n) -> None:
    got = count("samples", INT_TYPES[kind](n))
    assert type(got) is int and got == n


@pytest.mark.parametrize("value", [1.5, 2.0, np.float32(2), True, np.bool_(True), "3", None])
def test_count_refuses_non_integers(value) -> None:
    with pytest.raises(TypeError, match="samples must be an int"):
        count("samples", value)


@given(n=st.integers(max_value=2))
def test_count_below_minimum_names_it(n) -> None:
    with pytest.raises(ValueError, match=f"samples must be >= 3, got {n}"):
        count("samples", n, minimum=3)


# -- required_array, network_name, reject_unknown_kwargs ---------------------------------------
@pytest.mark.parametrize("value", [None, [1.0], 1.0, np.float64(1.0), "x"])
def test_required_array_names_argument_and_owner(value) -> None:
    with pytest.raises(TypeError, match=r"td1_advantage_estimate.*state_value"):
        required_array("state_value", value, owner="td1_advantage_estimate")
    x = np.zeros(3)
    assert required_array("state_value", x, owner="f") is x


def test_network_name_lists_the_known_networks() -> None:
    assert network_name("actor_network", ["actor_network"], owner="L") == "actor_network"
    with pytest.raises(KeyError, match=r"L has no network 'critic'.*'critic_network'"):
        network_name("critic", ["actor_network", "critic_network"], owner="L")


def test_reject_unknown_kwargs_words_it_as_python() -> None:
    reject_unknown_kwargs("ClipPPOLoss", {})
    with pytest.raises(TypeError) as err:
        reject_unknown_kwargs("ClipPPOLoss", {"clip_eps": 0.1})
    assert str(err.value) == "ClipPPOLoss got an unexpected keyword argument 'clip_eps'"
    with pytest.raises(TypeError, match="unexpected keyword arguments 'a', 'b'"):
        reject_unknown_kwargs("A2CLoss", {"a": 1, "b": 2})


def test_validation_imports_no_framework() -> None:
    code = (
        "import sys, arrayrl._validation, arrayrl.objectives; "
        "bad = [m for m in ('torch', 'cupy', 'jax', 'numba') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the functional estimators ---------------------------------------------------------------
SHAPE = (2, 5, 1)


def _data() -> dict:
    rng = np.random.default_rng(0)
    done = rng.random(SHAPE) < 0.3
    return {
        "state_value": rng.standard_normal(SHAPE),
        "next_state_value": rng.standard_normal(SHAPE),
        "reward": rng.standard_normal(SHAPE),
        "done": done,
        "terminated": done & (rng.random(SHAPE) < 0.5),
        "log_pi": rng.standard_normal(SHAPE),
        "log_mu": rng.standard_normal(SHAPE),
    }


#: ``name → call(d, gamma)``: every functional estimator, with the arrays of ``d``.
CALLS = {
    "gae": lambda d, g: F.generalized_advantage_estimate(
        g, 0.9, d["state_value"], d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td0_return": lambda d, g: F.td0_return_estimate(
        g, d["next_state_value"], d["reward"], d["terminated"]
    ),
    "td0_advantage": lambda d, g: F.td0_advantage_estimate(
        g, d["state_value"], d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td1_return": lambda d, g: F.td1_return_estimate(
        g, d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td1_advantage": lambda d, g: F.td1_advantage_estimate(
        g, d["state_value"], d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td_lambda_return": lambda d, g: F.td_lambda_return_estimate(
        g, 0.9, d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td_lambda_advantage": lambda d, g: F.td_lambda_advantage_estimate(
        g, 0.9, d["state_value"], d["next_state_value"], d["reward"], d["done"], d["terminated"]
    ),
    "vtrace": lambda d, g: F.vtrace_advantage_estimate(
        g, d["log_pi"], d["log_mu"], d["state_value"], d["next_state_value"], d["reward"],
        d["done"], d["terminated"],
    ),
    "reward2go": lambda d, g: F.reward2go(d["reward"], d["done"], g),
}
BAD_GAMMAS = {
    "np.float32(1.5)": lambda: np.float32(1.5),
    "np.float64(nan)": lambda: np.float64("nan"),
    "0-d numpy 1.5": lambda: np.asarray(1.5),
    "0-d torch 1.5": lambda: _torch_scalar(1.5),
    "0-d torch -0.5": lambda: _torch_scalar(-0.5),
}


@pytest.mark.parametrize("gamma", sorted(BAD_GAMMAS))
@pytest.mark.parametrize("name", sorted(CALLS))
def test_functional_range_checks_every_scalar_type(name, gamma) -> None:
    with pytest.raises(ValueError, match=r"gamma must be in \[0.0, 1.0\]"):
        CALLS[name](_data(), BAD_GAMMAS[gamma]())


def _host(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def _outputs(out) -> tuple:
    """A function's result as a tuple of arrays."""
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_numpy_scalar_gamma_works_with_torch_inputs(name) -> None:
    torch = pytest.importorskip("torch")
    data = _data()
    on_torch = {k: torch.as_tensor(v) for k, v in data.items()}
    expected = _outputs(CALLS[name](data, 0.5))
    got = _outputs(CALLS[name](on_torch, np.float32(0.5)))
    assert len(got) == len(expected)
    for e, g in zip(expected, got, strict=True):
        assert isinstance(g, torch.Tensor)
        np.testing.assert_allclose(_host(g), _host(e), rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "threshold"), [("rho_thresh", np.float32(-1.0)), ("c_thresh", np.float64("nan"))]
)
def test_vtrace_thresholds_are_range_checked(name, threshold) -> None:
    d = _data()
    with pytest.raises(ValueError, match=f"{name} must be in"):
        F.vtrace_advantage_estimate(
            0.9, d["log_pi"], d["log_mu"], d["state_value"], d["next_state_value"],
            d["reward"], d["done"], **{name: threshold},
        )


#: ``(function, argument)``: every array argument a function cannot do without.
REQUIRED = [
    ("gae", "state_value"), ("gae", "reward"), ("gae", "done"),
    ("td0_return", "next_state_value"), ("td0_return", "reward"),
    ("td0_advantage", "state_value"), ("td0_advantage", "done"),
    ("td1_return", "reward"), ("td1_return", "done"),
    ("td1_advantage", "state_value"), ("td1_advantage", "next_state_value"),
    ("td_lambda_return", "next_state_value"), ("td_lambda_return", "done"),
    ("td_lambda_advantage", "state_value"), ("td_lambda_advantage", "reward"),
    ("vtrace", "log_pi"), ("vtrace", "log_mu"), ("vtrace", "state_value"),
    ("reward2go", "reward"), ("reward2go", "done"),
]


@pytest.mark.parametrize(("name", "argument"), REQUIRED)
def test_none_for_a_required_array_names_it(name, argument) -> None:
    data = _data()
    data[argument] = None
    with pytest.raises(TypeError, match=f"needs {argument} \\(an array\\), got None"):
        CALLS[name](data, 0.9)


# -- the estimator classes -------------------------------------------------------------------
CLASS_CASES = [
    ("GAE", {"gamma": np.float32(1.5), "lmbda": 0.9}, "gamma"),
    ("GAE", {"gamma": 0.9, "lmbda": np.float64(-0.5)}, "lmbda"),
    ("GAE", {"gamma": np.asarray(float("nan")), "lmbda": 0.9}, "gamma"),
    ("TD0Estimator", {"gamma": np.float32(2.0)}, "gamma"),
    ("TD1Estimator", {"gamma": np.float64("nan")}, "gamma"),
    ("TDLambdaEstimator", {"gamma": 0.9, "lmbda": np.float32(1.25)}, "lmbda"),
    ("VTrace", {"gamma": np.float32(1.5), "actor_network": None}, "gamma"),
    ("VTrace", {"gamma": 0.9, "actor_network": None, "rho_thresh": np.float32(0)}, "rho_thresh"),
    ("VTrace", {"gamma": 0.9, "actor_network": None, "c_thresh": np.float64("nan")}, "c_thresh"),
    ("GAE", {"gamma": np.bool_(True), "lmbda": 0.9}, "gamma"),
    ("TD0Estimator", {"gamma": np.array(True)}, "gamma"),
    ("VTrace", {"gamma": 0.9, "actor_network": None, "rho_thresh": np.bool_(True)}, "rho_thresh"),
]


@pytest.mark.parametrize(("cls", "kwargs", "name"), CLASS_CASES)
def test_estimator_classes_range_check_numpy_scalars(cls, kwargs, name) -> None:
    """Out of range, NaN or boolean (NumPy booleans used to read as 1.0)."""
    with pytest.raises(ValueError, match=f"{name} must be"):
        getattr(V, cls)(value_network=None, **kwargs)


def test_estimator_classes_store_scalars_as_python_floats() -> None:
    gae = V.GAE(
        gamma=np.float32(0.5), lmbda=np.asarray(0.25), value_network=None,
        num_chunks=np.int64(2), shifted=np.bool_(False),
    )
    assert type(gae.gamma) is float and type(gae.lmbda) is float
    assert (gae.gamma, gae.lmbda) == (0.5, 0.25)
    per_step = np.full(SHAPE, 0.9)
    assert V.TD1Estimator(gamma=per_step, value_network=None).gamma is per_step


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"value_chunk_size": 1.5}, TypeError),
        ({"num_chunks": np.float64(2.0)}, TypeError),
        ({"shifted_budget": True}, TypeError),
        ({"shifted": np.float64(1.0)}, ValueError),
    ],
)
def test_estimator_counts_and_flags(kwargs, error) -> None:
    """Floats and booleans are refused; NumPy integers and booleans are counts and flags
    (they used to be refused)."""
    with pytest.raises(error, match=next(iter(kwargs))):
        V.GAE(gamma=0.9, lmbda=0.9, value_network=None, **kwargs)
    name = next(iter(kwargs))
    good = {"value_chunk_size": np.int32(3), "num_chunks": np.int64(2),
            "shifted_budget": np.int64(1), "shifted": np.bool_(True)}[name]
    V.GAE(gamma=0.9, lmbda=0.9, value_network=None, **{name: good})
