"""``kernel="auto"`` sends to the compiled kernels only what they take (float32/float64
on the CPU or CUDA); everything else goes to the reference. And cached broadcast
hyper-parameters made under ``torch.inference_mode()`` do not leak into autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from arrayrl.backends import backend_of

from arrayrl.objectives.value import functional as F

SHAPE = (3, 7, 2)


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    named = ("state_value", "next_state_value", "reward", "log_pi", "log_mu")
    arrays = {name: rng.uniform(-1.0, 1.0, SHAPE) for name in named}
    arrays["done"] = rng.random(SHAPE) < 0.3
    arrays["terminated"] = arrays["done"] & (rng.random(SHAPE) < 0.5)
    return arrays


def _a(x: dict[str, Any], *names: str) -> list[Any]:
    return [x[name] for name in names]


#: Every functional estimator, called on a dict of inputs with a ``kernel=``.
ESTIMATORS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "generalized_advantage_estimate": lambda x, k: F.generalized_advantage_estimate(
        0.9, 0.8, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "vec_generalized_advantage_estimate": lambda x, k: F.vec_generalized_advantage_estimate(
        0.9, 0.8, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "td0_return_estimate": lambda x, k: F.td0_return_estimate(
        0.9, *_a(x, "next_state_value", "reward", "terminated"), kernel=k),
    "td0_advantage_estimate": lambda x, k: F.td0_advantage_estimate(
        0.9, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "td1_return_estimate": lambda x, k: F.td1_return_estimate(
        0.9, *_a(x, "next_state_value", "reward", "done", "terminated"), kernel=k),
    "vec_td1_return_estimate": lambda x, k: F.vec_td1_return_estimate(
        0.9, *_a(x, "next_state_value", "reward", "done", "terminated"), kernel=k),
    "td1_advantage_estimate": lambda x, k: F.td1_advantage_estimate(
        0.9, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "vec_td1_advantage_estimate": lambda x, k: F.vec_td1_advantage_estimate(
        0.9, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "td_lambda_return_estimate": lambda x, k: F.td_lambda_return_estimate(
        0.9, 0.8, *_a(x, "next_state_value", "reward", "done", "terminated"), kernel=k),
    "vec_td_lambda_return_estimate": lambda x, k: F.vec_td_lambda_return_estimate(
        0.9, 0.8, *_a(x, "next_state_value", "reward", "done", "terminated"), kernel=k),
    "td_lambda_advantage_estimate": lambda x, k: F.td_lambda_advantage_estimate(
        0.9, 0.8, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "vec_td_lambda_advantage_estimate": lambda x, k: F.vec_td_lambda_advantage_estimate(
        0.9, 0.8, *_a(x, "state_value", "next_state_value", "reward", "done", "terminated"),
        kernel=k),
    "vtrace_advantage_estimate": lambda x, k: F.vtrace_advantage_estimate(
        0.9, *_a(x, "log_pi", "log_mu", "state_value", "next_state_value", "reward", "done",
                 "terminated"), kernel=k),
    "reward2go": lambda x, k: F.reward2go(*_a(x, "reward", "done"), 0.9, kernel=k),
}


def test_every_functional_estimator_is_covered() -> None:
    assert set(ESTIMATORS) == set(F.__all__)


def _outputs(result: Any) -> tuple[Any, ...]:
    return result if isinstance(result, tuple) else (result,)


def _check_low_precision(name: str, convert: Callable, back: Callable, dtype: Any) -> None:
    """``auto`` on low-precision inputs matches float64, and keeps the dtype."""
    inputs = _inputs()
    want = _outputs(ESTIMATORS[name](inputs, "reference"))
    low = {k: (convert(v) if v.dtype != np.bool_ else convert(v, bool)) for k, v in inputs.items()}
    got = _outputs(ESTIMATORS[name](low, "auto"))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == dtype, (name, g.dtype)
        np.testing.assert_allclose(back(g), w, rtol=0.05, atol=0.05, err_msg=name)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_auto_takes_float16_numpy_to_the_reference(name: str) -> None:
    def convert(x: np.ndarray, dtype: Any = np.float16) -> np.ndarray:
        return x.astype(dtype)

    _check_low_precision(name, convert, lambda y: np.asarray(y, np.float64), np.float16)


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_auto_takes_low_precision_torch_to_the_reference(name: str, low: str) -> None:
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, low)

    def convert(x: np.ndarray, to: Any = dtype) -> Any:
        return torch.from_numpy(x).to(to)

    _check_low_precision(name, convert, lambda y: y.double().numpy(), dtype)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_meta_tensors_give_meta_outputs(name: str) -> None:
    torch = pytest.importorskip("torch")
    inputs = _inputs()
    meta = {k: torch.from_numpy(v).to("meta") for k, v in inputs.items()}
    want = _outputs(ESTIMATORS[name](inputs, "reference"))
    got = _outputs(ESTIMATORS[name](meta, "auto"))
    for g, w in zip(got, want, strict=True):
        assert g.device.type == "meta"
        assert tuple(g.shape) == w.shape
        assert g.dtype == torch.float64


def test_auto_picks_by_dtype_and_device() -> None:
    torch = pytest.importorskip("torch")
    cpu = backend_of(torch.zeros(1))
    assert cpu.kernels(dtype=torch.float32).name == "numba"
    assert cpu.kernels(dtype=torch.float16).name == "reference"
    assert cpu.kernels(dtype=torch.bfloat16, needs_grad=True).name == "reference"
    meta = backend_of(torch.zeros(1, device="meta"))
    assert meta.kernels(dtype=torch.float32).name == "reference"
    assert meta.kernel_names() == ("reference",)
    assert backend_of(np.zeros(1)).kernels(dtype=np.dtype(np.float16)).name == "reference"


def test_non_cuda_accelerators_use_the_reference() -> None:
    """mps / xpu tensors cannot be made here; the choice reads only ``device.type``."""
    torch = pytest.importorskip("torch")
    from arrayrl.backends._torch import TorchBackend

    for device in ("mps", "xpu"):
        backend = TorchBackend(torch.device(device))
        assert backend.kernels(dtype=torch.float32).name == "reference"
        with pytest.raises(ValueError, match=rf"kernel='numba'.*{device}.*kernel='reference'"):
            backend.kernels("numba", dtype=torch.float32)


def test_explicit_numba_refuses_float16() -> None:
    x = _inputs()
    half = {k: (v if v.dtype == np.bool_ else v.astype(np.float16)) for k, v in x.items()}
    with pytest.raises(TypeError, match=r"kernel='numba'.*float16.*kernel='reference'"):
        ESTIMATORS["generalized_advantage_estimate"](half, "numba")


def test_explicit_numba_refuses_torch_bfloat16_and_meta() -> None:
    torch = pytest.importorskip("torch")
    x = _inputs()
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16 if v.dtype != np.bool_ else torch.bool)
            for k, v in x.items()}
    with pytest.raises(TypeError, match=r"kernel='numba'.*bfloat16.*kernel='reference'"):
        ESTIMATORS["td_lambda_return_estimate"](bf16, "numba")
    meta = {k: torch.from_numpy(v).to("meta") for k, v in x.items()}
    with pytest.raises(ValueError, match=r"kernel='numba'.*meta.*kernel='reference'"):
        ESTIMATORS["vtrace_advantage_estimate"](meta, "numba")


@pytest.mark.parametrize("kernel", ["auto", "reference"])
@pytest.mark.parametrize(
    "name", ["generalized_advantage_estimate", "td_lambda_return_estimate",
             "vtrace_advantage_estimate"]
)
def test_scalar_cached_under_inference_mode_allows_backward_later(name: str, kernel: str) -> None:
    """γ, λ and the V-trace thresholds broadcast under ``inference_mode`` are not reused
    in a graph (TD(λ) and V-trace save them for backward)."""
    torch = pytest.importorskip("torch")
    from arrayrl.objectives.value import _inputs as inputs_module

    inputs_module._broadcast_scalar.cache_clear()  # no entry made outside inference mode
    x = _inputs(seed=5)
    with torch.inference_mode():
        ESTIMATORS[name]({k: torch.from_numpy(v) for k, v in x.items()}, kernel)
    leaves = {k: torch.from_numpy(v).requires_grad_(v.dtype != np.bool_) for k, v in x.items()}
    result = _outputs(ESTIMATORS[name](leaves, kernel))
    sum(y.sum() for y in result).backward()
    for k, leaf in leaves.items():
        assert leaf.grad is None or torch.isfinite(leaf.grad).all(), k
    assert leaves["reward"].grad is not None
