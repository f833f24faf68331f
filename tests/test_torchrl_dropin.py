"""The drop-in promise: a TorchRL script that changes only its loss/estimator imports
gets TorchRL's numbers.

``examples/torchrl_dropin.py`` (the seed's complete PPO example with TorchRL's
environment, modules and collector) is run twice per loss, once with TorchRL's classes
and once with arrayrl's, from the same seed. Both runs collect their batches with their
own actor, so they see the same batches only while their parameters agree: everything
below is compared at every step.
"""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")
pytest.importorskip("gymnasium")

import torchrl.objectives as torchrl_objectives  # noqa: E402
import torchrl.objectives.value as torchrl_value  # noqa: E402

import arrayrl.objectives as arrayrl_objectives  # noqa: E402
import arrayrl.objectives.value as arrayrl_value  # noqa: E402

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "torchrl_dropin.py"

LOSSES = {
    "ClipPPOLoss": dict(
        clip_epsilon=0.2, entropy_bonus=True, entropy_coeff=0.01, critic_coeff=0.5,
        normalize_advantage=True,
    ),
    "A2CLoss": dict(entropy_coeff=0.01, critic_coeff=0.5),
    "ReinforceLoss": dict(),
}
#: float32 throughout; TanhNormal's Monte-Carlo entropy and a few Adam steps on top.
RTOL, ATOL = 2e-4, 2e-5


def _example():
    spec = importlib.util.spec_from_file_location("torchrl_dropin", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(example, objectives, value, loss_name):
    history = []

    def record(what, item):
        if what == "batch":
            item = {k: item[k].clone() for k in ("advantage", "value_target")}
        elif what == "losses":
            assert type(item).__name__ == "TensorDict", "a TensorDict batch gives a TensorDict"
            item = {k: v.clone() for k, v in item.items()}
        history.append((what, item))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actor, critic = example.train(
            getattr(objectives, loss_name), value.GAE, loss_kwargs=LOSSES[loss_name],
            frames_per_batch=128, total_frames=256, epochs=3, minibatch=64, num_cells=32,
            record=record,
        )
    params = [p.detach().clone() for p in (*actor.parameters(), *critic.parameters())]
    return history, params


def _close(mine, theirs, what):
    torch.testing.assert_close(mine, theirs, rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_example_matches_torchrl(loss_name):
    example = _example()
    theirs, their_params = _run(example, torchrl_objectives, torchrl_value, loss_name)
    mine, my_params = _run(example, arrayrl_objectives, arrayrl_value, loss_name)
    assert [what for what, _ in mine] == [what for what, _ in theirs]
    assert sum(what == "grads" for what, _ in mine) == 6
    for step, ((what, a), (_, b)) in enumerate(zip(mine, theirs)):
        if what == "grads":
            assert len(a) == len(b)
            for i, (ga, gb) in enumerate(zip(a, b)):
                _close(ga, gb, f"step {step}: gradient of parameter {i}")
        else:
            assert sorted(a) == sorted(b), f"step {step}: {what} keys"
            for key in a:
                _close(a[key], b[key], f"step {step}: {what}[{key!r}]")
    for i, (pa, pb) in enumerate(zip(my_params, their_params)):
        _close(pa, pb, f"parameter {i} after training")


def test_loss_parameters_are_the_users_modules():
    """``torch.optim`` over ``loss.parameters()`` trains the user's TorchRL modules."""
    example = _example()
    env = example.make_env(0)
    actor, critic = example.make_networks(env, 8)
    loss = arrayrl_objectives.ClipPPOLoss(actor, critic)
    own = {id(p) for p in (*actor.parameters(), *critic.parameters())}
    assert {id(p) for p in loss.parameters()} == own


def test_every_torchrl_loss_class_has_an_arrayrl_twin():
    """Each ``LossModule`` subclass that ``torchrl.objectives`` exports (0.14.1: 38,
    the LLM family lives in ``torchrl.objectives.llm``) is importable from
    ``arrayrl.objectives`` under the same name."""
    import inspect

    theirs = {
        name
        for name, obj in vars(torchrl_objectives).items()
        if inspect.isclass(obj)
        and issubclass(obj, torchrl_objectives.LossModule)
        and obj is not torchrl_objectives.LossModule
    }
    assert len(theirs) == 38
    missing = sorted(name for name in theirs if not hasattr(arrayrl_objectives, name))
    assert missing == []
