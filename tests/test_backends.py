"""The backend layer: detection, mixing errors, kernel selection, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from arrayrl.backends import backend_of, get_backend


def test_numpy_arrays_give_the_numpy_backend():
    backend = backend_of(np.zeros(3), None, 1.5, reward=np.ones(2))
    assert backend.name == "numpy"
    assert backend.kernels().name == "numba"
    assert backend.kernels("reference").name == "reference"


def test_no_arrays_default_to_numpy():
    assert backend_of(None, 2.0).name == "numpy"


def test_mixed_libraries_name_the_arguments():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"state_value is numpy.*reward is torch"):
        backend_of(state_value=np.zeros(3), reward=torch.zeros(3))


def test_non_array_argument_is_named():
    with pytest.raises(TypeError, match="reward"):
        backend_of(reward=[1.0, 2.0])


def test_torch_backend_kernels():
    torch = pytest.importorskip("torch")
    backend = backend_of(torch.zeros(2))
    assert backend.name == "torch" and backend.differentiable
    assert backend.kernels().name == "numba"
    assert backend.kernels(needs_grad=True).name == "numba+autograd"
    with pytest.raises(ValueError, match="kernel='cuda' is not available for torch"):
        backend.kernels("cuda")


def test_unknown_kernel_name():
    with pytest.raises(ValueError, match="kernel must be one of"):
        backend_of(np.zeros(1)).kernels("triton")


def test_array_api_strict_backend_uses_the_reference():
    strict = pytest.importorskip("array_api_strict")
    backend = backend_of(strict.asarray([1.0]))
    assert backend.name == "array_api_strict"
    assert backend.kernels().name == "reference"
    with pytest.raises(ValueError, match="not available"):
        backend.kernels("numba")


def test_get_backend_by_name():
    assert get_backend("numpy").name == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("tensorflow")


LAZY_SCRIPT = """
import json, sys, time
start = time.perf_counter()
import arrayrl.objectives
import arrayrl.objectives.value.functional
import arrayrl.backends
import arrayrl.data
import arrayrl.conformance.cases
elapsed = time.perf_counter() - start
heavy = [m for m in ("torch", "cupy", "jax", "numba", "torchrl", "tensordict") if m in sys.modules]
print(json.dumps({"heavy": heavy, "seconds": elapsed}))
"""


def test_import_leaves_frameworks_unloaded():
    out = subprocess.run(
        [sys.executable, "-c", LAZY_SCRIPT], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["heavy"] == []


def test_numpy_estimator_does_not_import_torch():
    script = (
        "import sys, numpy as np\n"
        "import arrayrl.objectives.value.functional as F\n"
        "x = np.zeros((2, 5, 1)); d = np.zeros((2, 5, 1), bool)\n"
        "F.generalized_advantage_estimate(0.9, 0.9, x, x, x, d)\n"
        "print([m for m in ('torch', 'cupy', 'jax') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- scatter_add -------------------------------------------------------------------------------
_SCATTER_BACKENDS = ["numpy", "torch", "array_api_strict"]


@pytest.mark.parametrize("name", _SCATTER_BACKENDS)
@pytest.mark.parametrize("batch", [(), (5,), (3, 4)])
def test_scatter_add_matches_numpy_add_at(name, batch):
    """Every backend's scatter adds like ``np.add.at`` row by row, repeated indices
    included, in the values' dtype."""
    pytest.importorskip(name)
    backend = get_backend(name)
    rng = np.random.default_rng(len(batch))
    size, m = 6, 9
    index = rng.integers(0, size, (*batch, m))
    values = rng.normal(size=(*batch, m))
    expected = np.zeros((*batch, size))
    for row in np.ndindex(*batch):
        np.add.at(expected[row], index[row], values[row])
    out = backend.scatter_add(size, backend.from_numpy(index), backend.from_numpy(values))
    result = backend.to_numpy(out)
    assert result.shape == (*batch, size) and result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-12)


def test_torch_scatter_add_is_differentiable_in_the_values():
    torch = pytest.importorskip("torch")
    backend = get_backend("torch")
    index = torch.tensor([[0, 2, 2], [1, 1, 0]])
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    weights = torch.tensor([[1.0, 10.0, 100.0], [1000.0, 1e4, 1e5]])
    (backend.scatter_add(3, index, values) * weights).sum().backward()
    # d/d values[r, j] = weights[r, index[r, j]]
    assert values.grad.tolist() == [[1.0, 100.0, 100.0], [1e4, 1e4, 1000.0]]


def test_softplus_is_torchs_on_every_backend():
    """``Backend.softplus`` is torch's thresholded softplus (``x`` above 20) on NumPy and
    array-api-strict too: equal to ``torch.nn.functional.softplus`` in float64, finite
    at ±1000, and its NumPy value is exactly ``x`` above the threshold."""
    torch = pytest.importorskip("torch")
    import array_api_strict as xps

    x = np.array([-1000.0, -30.0, -5.0, 0.0, 1e-3, 5.0, 19.5, 20.0, 20.5, 30.0, 1000.0])
    expected = torch.nn.functional.softplus(torch.from_numpy(x)).numpy()
    ours = backend_of(x).softplus(x)
    np.testing.assert_allclose(ours, expected, rtol=1e-15, atol=0)
    assert np.all(np.isfinite(ours)) and np.array_equal(ours[x > 20], x[x > 20])
    strict = backend_of(xps.asarray(x)).softplus(xps.asarray(x))
    np.testing.assert_array_equal(np.asarray(strict), ours)
