"""A read-only install runs the Numba kernels: they compile without a cache, one warning.

The package is built from this checkout (found from ``__file__``) and installed with
pip into a temporary ``--target`` folder, which is then made read-only (``chmod -R
a-w``) together with a fake home. A child interpreter imports that copy through
``PYTHONPATH`` with ``NUMBA_CACHE_DIR`` unset, so Numba finds no writable cache folder:
neither ``__pycache__`` beside the kernels, nor the user-wide cache under the home.

How the child is made unprivileged: CI runs as root, and root ignores mode bits by
its capabilities (``CAP_DAC_OVERRIDE``), so the chmod alone would prove nothing.
Switching to ``nobody`` does not work here: the interpreter and its site-packages live
under ``/root/.pyenv`` and ``/root`` is mode 0700, so ``nobody`` cannot even start
Python, and opening ``/root`` up is not something a test may do to a machine. So the
child keeps uid 0 but starts without capabilities:
``prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED)`` in ``preexec_fn``
makes the ``execve`` of Python grant none, and the kernel then checks mode bits as for
any user: the chmod-ed install and home are read-only to the child, while the
interpreter and its packages (owned by root) stay readable. A non-root run needs no
such step, since it already obeys the bits. The child checks both conditions itself
(it imports the read-only copy; creating a file beside it fails).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: What the wheel is built from (copied, so that the build writes nothing into the checkout).
SOURCES = ("pyproject.toml", "README.md", "arrayrl", "backends", "conformance")

_PR_SET_SECUREBITS = 28
_SECBIT_NOROOT_AND_LOCKED = 0b11

CHILD = r"""
import os, sys, warnings
import numpy as np

target = sys.argv[1]
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import arrayrl
    from arrayrl.objectives.value import functional as F

    assert arrayrl.__file__.startswith(target + os.sep), arrayrl.__file__
    try:
        open(os.path.join(os.path.dirname(arrayrl.__file__), "probe"), "w").close()
    except PermissionError:
        pass
    else:
        raise AssertionError("the install is writable: the test would prove nothing")

    rng = np.random.default_rng(0)
    # 256 elements: one thread; 512 * 128 = 2**16: split over NUMBA_NUM_THREADS=2
    # threads; time-major (time_dim=0) inputs use the block kernels.
    for shape, time_dim in (((16, 16, 1), -2), ((512, 128, 1), -2), ((128, 512, 1), 0)):
        v, nv, r, lp, lm = (rng.standard_normal(shape) for _ in range(5))
        done = rng.random(shape) < 0.1
        term = done & (rng.random(shape) < 0.5)
        calls = {
            "gae": lambda k: F.generalized_advantage_estimate(
                0.99, 0.95, v, nv, r, done, term, time_dim=time_dim, kernel=k),
            "td_lambda": lambda k: F.td_lambda_return_estimate(
                0.99, 0.95, nv, r, done, term, time_dim=time_dim, kernel=k),
            "vtrace": lambda k: F.vtrace_advantage_estimate(
                0.99, lp, lm, v, nv, r, done, term, time_dim=time_dim, kernel=k),
        }
        for name, call in calls.items():
            got, want = call("numba"), call("reference")
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10, err_msg=name)
cache_warnings = [w for w in caught if "NUMBA_CACHE_DIR" in str(w.message)]
assert len(cache_warnings) == 1, [str(w.message) for w in caught]
assert issubclass(cache_warnings[0].category, (RuntimeWarning, UserWarning))
print("OK")
"""


def _drop_root_privileges() -> None:
    """``preexec_fn``: as root, make the coming ``execve`` grant no capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_SECUREBITS, _SECBIT_NOROOT_AND_LOCKED, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECUREBITS) failed")


def _can_drop_root_privileges() -> bool:
    probe = [sys.executable, "-c", "open('/proc/self/status')"]
    try:
        subprocess.run(probe, preexec_fn=_drop_root_privileges, check=True, timeout=60)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def _install_read_only(tmp: Path) -> Path:
    """Build and install this checkout into ``tmp/site`` with pip; make it read-only."""
    src, site = tmp / "src", tmp / "site"
    src.mkdir()
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, src / name)
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
           "--no-compile", "--no-index", "--quiet", "--target", str(site), str(src)]
    subprocess.run(pip, check=True, timeout=300, capture_output=True)
    _chmod_tree(site, writable=False)
    return site


def _chmod_tree(root: Path, *, writable: bool) -> None:
    """``chmod -R a-w`` (or ``u+w``) on ``root``."""
    write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod((mode | stat.S_IWUSR) if writable else (mode & ~write))


def _child_env(site: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    for name in ("XDG_CACHE_HOME", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env.update(HOME=str(home), PYTHONPATH=str(site), NUMBA_NUM_THREADS="2")
    return env


def test_kernels_run_from_a_read_only_install(tmp_path: Path) -> None:
    is_root = os.geteuid() == 0
    if is_root and not _can_drop_root_privileges():
        pytest.skip("running as root and cannot drop capabilities (prctl securebits refused)")
    site = _install_read_only(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(site)],
            env=_child_env(site, home),
            cwd=str(home),
            preexec_fn=_drop_root_privileges if is_root else None,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        _chmod_tree(tmp_path, writable=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("OK"), result.stdout
