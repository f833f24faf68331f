"""Gradients through the torch scans: gradcheck in float64, and equal to autograd
through the reference loop."""

from __future__ import annotations

import numpy as np
import pytest

import arrayrl.objectives.value.functional as F

from ._data import trajectories

torch = pytest.importorskip("torch")


def _tensors(seed: int, batch: int = 2, steps: int = 5, grad: bool = True):
    d = trajectories(seed, batch, steps, feats=2)
    out = {}
    for key, value in d.items():
        t = torch.from_numpy(value)
        out[key] = t.requires_grad_(grad) if t.is_floating_point() else t
    return out


ESTIMATORS = {
    "gae": lambda d, k: F.generalized_advantage_estimate(
        0.9, 0.8, d["value"], d["next_value"], d["reward"], d["done"], d["terminated"], kernel=k
    ),
    "td_lambda": lambda d, k: F.td_lambda_advantage_estimate(
        0.9, 0.7, d["value"], d["next_value"], d["reward"], d["done"], d["terminated"], kernel=k
    ),
    "td1": lambda d, k: F.td1_return_estimate(
        0.95, d["next_value"], d["reward"], d["done"], d["terminated"], kernel=k
    ),
    "vtrace": lambda d, k: F.vtrace_advantage_estimate(
        0.9, d["log_pi"], d["log_mu"], d["value"], d["next_value"], d["reward"], d["done"],
        d["terminated"], kernel=k,
    ),
    "reward2go": lambda d, k: F.reward2go(d["reward"], d["done"], 0.9, kernel=k),
}

FLOAT_KEYS = ("value", "next_value", "reward", "log_pi", "log_mu")


def _scalar(result):
    outs = result if isinstance(result, tuple) else (result,)
    return sum((o * (i + 1.3)).sin().sum() for i, o in enumerate(outs))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_gradcheck(name):
    d = _tensors(0)
    inputs = tuple(d[k] for k in FLOAT_KEYS)

    def fn(*floats):
        return ESTIMATORS[name]({**d, **dict(zip(FLOAT_KEYS, floats))}, "auto")

    assert torch.autograd.gradcheck(fn, inputs, check_undefined_grad=False)


def _gradients(seed: int, estimate) -> dict:
    """Gradients of ``_scalar(estimate(inputs))`` w.r.t. every float input (0 if unused)."""
    d = _tensors(seed, batch=3, steps=9)
    _scalar(estimate(d)).backward()
    return {
        k: (d[k].grad.numpy() if d[k].grad is not None else np.zeros(d[k].shape))
        for k in FLOAT_KEYS
    }


@pytest.mark.parametrize("name", ESTIMATORS)
def test_autograd_kernel_matches_reference_gradients(name):
    grads = {
        kernel: _gradients(1, lambda d, kernel=kernel: ESTIMATORS[name](d, kernel))
        for kernel in ("auto", "reference")
    }
    for key in FLOAT_KEYS:
        np.testing.assert_allclose(grads["auto"][key], grads["reference"][key], rtol=1e-10,
                                   atol=1e-12, err_msg=key)


def test_gradient_reaches_values_and_rewards():
    d = _tensors(2)
    advantage, _ = ESTIMATORS["gae"](d, "auto")
    advantage.sum().backward()
    assert d["reward"].grad is not None and d["reward"].grad.abs().sum() > 0
    assert d["value"].grad is not None and d["value"].grad.abs().sum() > 0
    assert d["next_value"].grad is not None


def test_per_step_gamma_gets_a_gradient():
    d = _tensors(3)
    gamma = torch.full(d["reward"].shape, 0.9, dtype=torch.float64, requires_grad=True)
    lmbda = torch.full(d["reward"].shape, 0.8, dtype=torch.float64)

    def fn(g):
        return F.generalized_advantage_estimate(
            g, lmbda, d["value"], d["next_value"], d["reward"], d["done"], d["terminated"]
        )

    assert torch.autograd.gradcheck(fn, (gamma,), check_undefined_grad=False)


def test_no_grad_tensors_take_the_plain_kernel():
    d = _tensors(4, grad=False)
    advantage, _ = ESTIMATORS["gae"](d, "auto")
    assert advantage.grad_fn is None and not advantage.requires_grad


TORCHRL_GRADIENT_CASES = {
    "generalized_advantage_estimate": lambda f, d: f(
        0.9, 0.8, d["value"], d["next_value"], d["reward"], d["done"], d["terminated"]
    ),
    "td_lambda_return_estimate": lambda f, d: f(
        0.9, 0.7, d["next_value"], d["reward"], d["done"], d["terminated"]
    ),
    "vtrace_advantage_estimate": lambda f, d: f(
        0.9, d["log_pi"], d["log_mu"], d["value"], d["next_value"], d["reward"], d["done"],
        d["terminated"],
    ),
}


@pytest.mark.parametrize("name", TORCHRL_GRADIENT_CASES)
def test_gradients_match_torchrl(name):
    torchrl_functional = pytest.importorskip("torchrl.objectives.value.functional")
    grads = {
        label: _gradients(5, lambda d, m=module: TORCHRL_GRADIENT_CASES[name](getattr(m, name), d))
        for label, module in (("arrayrl", F), ("torchrl", torchrl_functional))
    }
    # TorchRL rounds its discounts to float32 (recorded deviation torchrl-float32-masks),
    # which shows in float64 gradients at a few 1e-6 relative
    for key in FLOAT_KEYS:
        np.testing.assert_allclose(grads["arrayrl"][key], grads["torchrl"][key], rtol=1e-5,
                                   atol=1e-5, err_msg=key)
