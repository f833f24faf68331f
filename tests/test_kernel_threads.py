"""The Numba CPU scans' thread pool: safe across ``fork``, concurrent callers, a changed
thread count, and a bad ``NUMBA_NUM_THREADS``.

"Large" inputs below have ``2**16`` elements, the size from which a scan is split over
threads; ``NUMBA_NUM_THREADS=2`` makes that happen on a one-CPU machine too.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from arrayrl.objectives.value import functional as F

LARGE = (512, 128, 1)
#: Seconds a forked child may take for one large call (a regression hangs forever).
FORK_TIMEOUT = 60


def _inputs(seed: int, shape: tuple[int, ...] = LARGE) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    value, next_value, reward = (rng.standard_normal(shape) for _ in range(3))
    done = rng.random(shape) < 0.05
    return value, next_value, reward, done


def _gae(inputs: tuple[np.ndarray, ...], kernel: str) -> np.ndarray:
    value, next_value, reward, done = inputs
    advantage, _ = F.generalized_advantage_estimate(
        0.99, 0.95, value, next_value, reward, done, done, kernel=kernel
    )
    return advantage


def _child(conn, inputs: tuple[np.ndarray, ...]) -> None:
    conn.send(_gae(inputs, "numba"))
    conn.close()


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")


@pytest.mark.usefixtures("two_threads")
def test_forked_child_runs_large_scans() -> None:
    """After a large call made the pool, a forked child's large call completes."""
    _gae(_inputs(0), "numba")  # the parent now holds a pool with live threads
    inputs = _inputs(1)
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, inputs), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(FORK_TIMEOUT):
            pytest.fail(f"the forked child's large scan hung for {FORK_TIMEOUT} s")
        got = receiver.recv()
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    np.testing.assert_allclose(got, _gae(inputs, "reference"), rtol=1e-10, atol=1e-10)


@pytest.mark.usefixtures("two_threads")
def test_concurrent_callers_get_their_own_results() -> None:
    """Python threads running large scans at once each get the right answer."""
    cases = [_inputs(seed) for seed in range(4)]
    expected = [_gae(inputs, "reference") for inputs in cases]
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(len(cases))

    def work(i: int) -> None:
        start.wait()
        results[i] = [_gae(cases[i], "numba") for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(len(cases)))
    for i, runs in results.items():
        for got in runs:
            np.testing.assert_allclose(got, expected[i], rtol=1e-10, atol=1e-10)


def test_thread_count_changing_under_concurrent_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pools replaced while other threads submit to them still run every range."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    cases = [_inputs(seed) for seed in range(3)]
    expected = [_gae(inputs, "reference") for inputs in cases]
    errors: list[BaseException] = []
    finished = threading.Event()

    def work(i: int) -> None:
        try:
            for _ in range(8):
                got = _gae(cases[i], "numba")
                np.testing.assert_allclose(got, expected[i], rtol=1e-10, atol=1e-10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def toggle() -> None:
        counts = ("3", "2", "4")
        k = 0
        while not finished.is_set():
            monkeypatch.setenv("NUMBA_NUM_THREADS", counts[k % len(counts)])
            k += 1
            finished.wait(0.001)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    toggler = threading.Thread(target=toggle)
    toggler.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    finished.set()
    toggler.join()
    assert not errors, errors[0]


def test_changed_thread_count_takes_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new ``NUMBA_NUM_THREADS`` re-makes the pool; results stay right."""
    from arrayrl.backends import _numba_cpu

    inputs = _inputs(2)
    expected = _gae(inputs, "reference")
    for threads in ("2", "3", "1", "2"):
        monkeypatch.setenv("NUMBA_NUM_THREADS", threads)
        np.testing.assert_allclose(_gae(inputs, "numba"), expected, rtol=1e-10, atol=1e-10)
        if threads != "1":
            assert _numba_cpu._POOL_WORKERS == int(threads) - 1


@pytest.mark.parametrize("bad", ["abc", "0", "-2", "1.5"])
def test_bad_numba_num_threads_is_named(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("NUMBA_NUM_THREADS", bad)
    with pytest.raises(ValueError, match=rf"NUMBA_NUM_THREADS .*{bad!r}"):
        _gae(_inputs(3), "numba")


def test_bad_numba_num_threads_is_named_before_numba_loads() -> None:
    """In a fresh process Numba itself rejects ``0`` at import, with a message that does
    not name the variable; the check runs first."""
    script = (
        "import numpy as np\n"
        "from arrayrl.objectives.value import functional as F\n"
        "x = np.zeros((4, 5, 1))\n"
        "try:\n"
        "    F.generalized_advantage_estimate(0.9, 0.9, x, x, x, x > 0, x > 0)\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "NUMBA_NUM_THREADS": "0"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "NUMBA_NUM_THREADS must be a positive integer, got '0'" in result.stdout, (
        result.stdout + result.stderr
    )
