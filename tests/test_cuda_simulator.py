"""The CUDA kernels (``arrayrl.backends._cuda``) under the Numba CUDA simulator.

The simulator must be switched on before Numba is imported, so the comparison runs in a
child interpreter with ``NUMBA_ENABLE_CUDASIM=1``. The child runs every CUDA launcher on
``cuda.to_device`` arrays and compares the results with the Numba CPU kernels, printing
the largest absolute error of each output as JSON on its last line of output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .test_numba_kernels import ARGS

SCRIPT = r"""
import json
import sys

import numpy as np
from numba import config, cuda

from arrayrl.backends import _cuda as G
from arrayrl.backends import _numba_cpu as C

assert config.ENABLE_CUDASIM

N, T, F = 5, 6, 2
ARGS = json.loads(sys.argv[1])  # the argument names, from tests/test_numba_kernels.py
OUTPUTS = {"gae": 2, "vtrace": 2}


def make(rng, dtype):
    shape = (N, T, F)
    done = rng.random(shape) < 0.3
    done[:, -1] |= rng.random((N, F)) < 0.5
    arrays = {
        "gamma": np.broadcast_to(np.asarray(0.97, dtype), shape),
        "lmbda": rng.uniform(0.5, 1.0, shape).astype(dtype),
        "rho_thresh": np.broadcast_to(np.asarray(1.0, dtype), shape),
        "c_thresh": rng.uniform(0.5, 1.5, shape).astype(dtype),
        "b": rng.uniform(-1.0, 1.0, shape).astype(dtype),
        "init": rng.standard_normal((N, F)).astype(dtype),
        "done": done,
        "terminated": done & (rng.random(shape) < 0.5),
        "log_pi": (0.5 * rng.standard_normal(shape)).astype(dtype),
        "log_mu": (0.5 * rng.standard_normal(shape)).astype(dtype),
    }
    for name in ("a", "g", "value", "next_value", "reward"):
        arrays[name] = rng.standard_normal(shape).astype(dtype)
    # strided inputs reach the kernels as they are: stride-0 hyper-parameters above, a
    # Fortran-ordered (time stride > batch stride) reward here
    arrays["reward"] = np.asfortranarray(arrays["reward"])
    arrays["next_value"][1, 2, 0] = np.nan  # NaN must reach the same outputs on both
    return arrays


errors = {}
rng = np.random.default_rng(0)
stream = cuda.stream()
for dtype in (np.float64, np.float32):
    arrays = make(rng, dtype)
    for name, args in ARGS.items():
        host = [arrays[a] for a in args]
        want = getattr(C, name)(*host)
        want = want if isinstance(want, tuple) else (want,)
        device = [cuda.to_device(x) for x in host]
        outs = [cuda.to_device(np.full((N, T, F), 123.0, dtype)) for _ in want]
        out = tuple(outs) if name in OUTPUTS else outs[0]
        assert getattr(G, name)(*device, out=out, stream=stream) is None
        stream.synchronize()
        for k, (d, w) in enumerate(zip(outs, want)):
            got = d.copy_to_host()
            assert got.dtype == np.dtype(dtype), (name, got.dtype)
            if not np.array_equal(np.isnan(got), np.isnan(w)):
                errors[f"{name}[{k}]-{np.dtype(dtype).name}"] = float("inf")
                continue
            ok = ~np.isnan(w)
            errors[f"{name}[{k}]-{np.dtype(dtype).name}"] = float(np.abs(got - w)[ok].max())
    # no columns: nothing is launched, nothing fails
    empty = cuda.to_device(np.zeros((0, T, F), dtype))
    G.reward2go(empty, empty, cuda.to_device(np.zeros((0, T, F), bool)), out=empty)

# the glue that binds the kernels to a backend's allocator and stream
from arrayrl.backends._cuda_glue import cuda_adjoint, cuda_kernels


def empty_like(x):
    return cuda.device_array(x.shape, dtype=x.dtype)


bound = cuda_kernels(empty_like, lambda: stream)
calls = {name: bound.fused[name] for name in ("gae", "td_lambda", "vtrace", "reward2go")}
calls["linear_scan"] = bound.linear_scan
calls["linear_scan_adjoint"] = cuda_adjoint(empty_like, lambda: stream)
arrays = make(rng, np.float64)
for name, call in calls.items():
    host = [arrays[a] for a in ARGS[name]]
    want = getattr(C, name)(*host)
    want = want if isinstance(want, tuple) else (want,)
    got = call(*[cuda.to_device(x) for x in host])
    got = got if isinstance(got, tuple) else (got,)
    stream.synchronize()
    errors[f"glue-{name}-float64"] = max(
        float(np.nanmax(np.abs(g.copy_to_host() - w))) for g, w in zip(got, want)
    )
print(json.dumps(errors))
"""

TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


def test_cuda_kernels_match_cpu_kernels_under_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(ARGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    # every output of every kernel in both dtypes, then the six bound kernels
    assert len(errors) == 2 * (4 + 2 * 2) + 6
    for key, error in errors.items():
        dtype = key.rsplit("-", 1)[1]
        assert error < TOLERANCE[dtype], f"{key}: max abs error {error}"
