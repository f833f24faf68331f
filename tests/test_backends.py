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
