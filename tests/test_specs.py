"""``arrayrl.specs``: the small action specs, TorchRL's specs read into them, and the
``target_entropy="auto"`` and TD3 bounds rules checked against TorchRL 0.14.1."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arrayrl import specs as S

torch = pytest.importorskip("torch")
torchrl_data = pytest.importorskip("torchrl.data")


# -- Bounded ------------------------------------------------------------------------
def test_bounded_attributes_and_inferred_shape_and_dtype():
    high = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    box = S.Bounded(-1.0, high)
    assert box.low == -1.0 and box.high is high  # kept as given
    assert box.shape == (3,) and box.dtype == np.float32 and box.numel == 3
    assert box.space.low == -1.0 and box.space.high is high
    scalar = S.Bounded(0, 1)
    assert scalar.shape == () and scalar.numel == 1 and scalar.dtype is None
    wide = S.Bounded(-1.0, 1.0, shape=(2, 4), dtype="float64")
    assert wide.shape == (2, 4) and wide.numel == 8 and wide.dtype == "float64"


@pytest.mark.parametrize(
    ("low", "high", "shape", "message"),
    [
        (1.0, 0.0, None, "low must be <= high"),
        (np.array([0.0, 2.0]), np.array([1.0, 1.0]), None, "low must be <= high"),
        (np.nan, 1.0, None, "low contains NaN"),
        (0.0, np.array([1.0, np.nan]), None, "high contains NaN"),
        (np.zeros(3), np.ones(3), (2,), "low of shape (3,) does not broadcast"),
        (np.zeros(3), np.ones(2), None, "do not broadcast together"),
    ],
)
def test_bounded_refuses_bad_boxes(low: Any, high: Any, shape: Any, message: str):
    with pytest.raises(ValueError, match=r"Bounded: .*" + re.escape(message)):
        S.Bounded(low, high, shape=shape)


def test_bounded_refuses_a_non_array_bound():
    with pytest.raises(TypeError, match="Bounded: low must be a number or an array"):
        S.Bounded("zero", 1.0)
    with pytest.raises(TypeError, match="Bounded: shape must be a tuple of ints"):
        S.Bounded(0.0, 1.0, shape="three")


# -- clamp --------------------------------------------------------------------------
def _box() -> S.Bounded:
    return S.Bounded(np.array([-1.0, 0.0, -2.0]), np.array([1.0, 0.5, 2.0]))


def test_clamp_numpy_keeps_float32_and_leaves_the_input_alone():
    x = np.array([[-5.0, 0.25, 9.0], [0.0, -1.0, np.nan]], dtype=np.float32)
    before = x.copy()
    y = _box().clamp(x)
    assert y.dtype == np.float32 and y is not x
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(y, [[-1.0, 0.25, 2.0], [0.0, 0.0, np.nan]])


def test_clamp_torch_keeps_float32_and_leaves_the_input_alone():
    x = torch.tensor([[-5.0, 0.25, 9.0]], dtype=torch.float32, requires_grad=True)
    before = x.detach().clone()
    y = _box().clamp(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    torch.testing.assert_close(x.detach(), before)
    torch.testing.assert_close(y.detach(), torch.tensor([[-1.0, 0.25, 2.0]]))
    y.sum().backward()  # the gradient flows where x is inside the box
    torch.testing.assert_close(x.grad, torch.tensor([[0.0, 1.0, 0.0]]))


def test_clamp_converts_bounds_across_backends_and_dtypes():
    box = S.Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]))
    for dtype in (np.float32, np.float64):
        y = box.clamp(np.array([3.0, -3.0], dtype=dtype))
        assert isinstance(y, np.ndarray) and y.dtype == dtype
        np.testing.assert_array_equal(y, [1.0, 0.0])
    y = box.clamp(torch.tensor([3.0, -3.0], dtype=torch.float64))
    assert y.dtype == torch.float64


def test_clamp_with_scalar_and_infinite_bounds():
    x = np.array([-1e30, 0.0, 1e30], dtype=np.float32)
    np.testing.assert_array_equal(S.Bounded(-np.inf, 1.0).clamp(x), [x[0], 0.0, 1.0])
    np.testing.assert_array_equal(S.Bounded(-2, 2).clamp(x), [-2.0, 0.0, 2.0])
    assert S.Bounded(-2, 2).clamp(x).dtype == np.float32
    assert S.Unbounded((3,)).clamp(x) is x


_FLOATS = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(_FLOATS, _FLOATS), min_size=1, max_size=5),
    st.lists(_FLOATS, min_size=1, max_size=5),
)
def test_clamp_lies_within_the_bounds_and_is_idempotent(pairs, values):
    low = np.array([min(p) for p in pairs], dtype=np.float32)
    high = np.array([max(p) for p in pairs], dtype=np.float32)
    box = S.Bounded(low, high)
    x = np.resize(np.array(values, dtype=np.float32), (3, low.size))
    once = box.clamp(x)
    assert np.all(once >= low) and np.all(once <= high)
    np.testing.assert_array_equal(box.clamp(once), once)
    tx = torch.from_numpy(x.copy())
    np.testing.assert_array_equal(box.clamp(tx).numpy(), once)


# -- discrete specs -----------------------------------------------------------------
def test_discrete_specs():
    cat = S.Categorical(4)
    assert (cat.n, cat.shape, cat.numel) == (4, (), 1)
    assert S.Categorical(4, shape=(3,)).numel == 3
    one_hot = S.OneHot(5)
    assert (one_hot.n, one_hot.shape, one_hot.numel) == (5, (5,), 5)
    assert S.OneHot(5, shape=(2, 5)).numel == 10
    binary = S.Binary(3)
    assert (binary.n, binary.shape) == (2, (3,)) and isinstance(binary, S.Categorical)
    multi = S.MultiCategorical([2, 3])
    assert multi.nvec.tolist() == [2, 3] and multi.shape == (2,)
    multi_hot = S.MultiOneHot([2, 3])
    assert multi_hot.nvec == (2, 3) and multi_hot.shape == (5,)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: S.Categorical(0), ValueError, "n"),
        (lambda: S.OneHot(3, shape=(4,)), ValueError, "OneHot: shape"),
        (lambda: S.MultiOneHot([2, 3], shape=(4,)), ValueError, "sum"),
        (lambda: S.MultiCategorical([0, 2]), ValueError, "nvec"),
        (lambda: S.Binary(), ValueError, "Binary"),
    ],
)
def test_discrete_specs_refuse_bad_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


# -- Composite ----------------------------------------------------------------------
def _nested() -> S.Composite:
    agents = S.Composite(action=S.Bounded(-1.0, 1.0, shape=(2, 3)), shape=(2,))
    return S.Composite(agents=agents, observation=S.Unbounded((4,)), done=None)


def test_composite_lookup_and_keys():
    spec = _nested()
    assert spec["observation"].shape == (4,)
    assert spec[("agents", "action")].shape == (2, 3)
    assert spec[("observation",)] is spec["observation"]
    assert spec["done"] is None and "agents" in spec and ("agents", "action") in spec
    assert list(spec.keys()) == ["agents", "observation", "done"]
    assert spec.keys(include_nested=True) == ["agents", ("agents", "action"), "observation", "done"]
    assert spec.keys(include_nested=True, leaves_only=True) == [
        ("agents", "action"),
        "observation",
        "done",
    ]
    assert len(spec) == 3


def test_composite_errors_name_the_key():
    spec = _nested()
    with pytest.raises(KeyError, match=r"no entry \('agents', 'reward'\).*keys \['action'\]"):
        spec[("agents", "reward")]
    with pytest.raises(KeyError, match="a leaf spec"):
        spec[("observation", "x")]
    with pytest.raises(KeyError, match="non-empty tuple"):
        spec[()]
    with pytest.raises(ValueError, match="'action' does not start with the composite's shape"):
        S.Composite(action=S.Bounded(0.0, 1.0, shape=(3,)), shape=(2,))
    with pytest.raises(TypeError, match=r"Composite: 'action' must be an arrayrl\.specs"):
        S.Composite(action=object())


# -- TorchRL specs ------------------------------------------------------------------
def _torchrl_table() -> list[tuple[Any, type, dict[str, Any]]]:
    D = torchrl_data
    low = torch.tensor([-1.0, 0.0])
    return [
        (D.Bounded(-1.0, 2.0, shape=(3,)), S.Bounded, {"shape": (3,), "low": -1, "high": 2}),
        (
            D.BoundedContinuous(low, low + 1),
            S.Bounded,
            {"shape": (2,), "low": [-1, 0], "high": [0, 1]},
        ),
        (
            D.Bounded(0, 5, shape=(2,), dtype=torch.int64),
            S.Bounded,
            {"shape": (2,), "low": 0, "high": 5},
        ),
        (D.Unbounded(shape=(2,)), S.Unbounded, {"shape": (2,)}),
        (D.UnboundedContinuous(shape=(2, 2)), S.Unbounded, {"shape": (2, 2)}),
        (D.UnboundedDiscrete(shape=(1,)), S.Unbounded, {"shape": (1,)}),
        (D.Categorical(4), S.Categorical, {"shape": (), "n": 4}),
        (D.Categorical(4, shape=(3,)), S.Categorical, {"shape": (3,), "n": 4}),
        (D.OneHot(5), S.OneHot, {"shape": (5,), "n": 5}),
        (D.Binary(3), S.Binary, {"shape": (3,), "n": 2}),
        (D.MultiOneHot([2, 3]), S.MultiOneHot, {"shape": (5,), "nvec": [2, 3]}),
        (D.MultiCategorical([2, 3]), S.MultiCategorical, {"shape": (2,), "nvec": [2, 3]}),
    ]


@pytest.mark.parametrize(
    ("spec", "cls", "expected"),
    _torchrl_table(),
    ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "",
)
def test_torchrl_specs_are_converted(spec, cls, expected):
    ours = S.as_spec(spec)
    assert type(ours) is cls
    assert ours.shape == tuple(spec.shape) and ours.dtype == spec.dtype
    assert ours.numel == spec.shape.numel()
    for name in ("low", "high"):
        if name in expected:
            theirs = getattr(spec.space, name)
            assert getattr(ours, name) is theirs  # kept as given: TorchRL's tensor
            np.testing.assert_array_equal(
                np.broadcast_to(theirs.numpy(), ours.shape),
                np.broadcast_to(expected[name], ours.shape),
            )
    if "n" in expected:
        assert ours.n == expected["n"] == spec.space.n
    if "nvec" in expected:
        assert list(ours.nvec) == expected["nvec"]


def test_torchrl_composite_is_converted_recursively():
    D = torchrl_data
    spec = D.Composite(
        agents=D.Composite(action=D.Bounded(-1.0, 1.0, shape=(2, 3)), shape=(2,)),
        observation=D.Unbounded(shape=(4,)),
    )
    ours = S.as_spec(spec)
    assert isinstance(ours, S.Composite) and isinstance(ours["agents"], S.Composite)
    assert ours["agents"].shape == (2,)
    assert isinstance(ours[("agents", "action")], S.Bounded)
    assert ours.keys(True, True) == [("agents", "action"), "observation"]
    box = ours[("agents", "action")]
    x = torch.full((2, 3), 5.0)
    torch.testing.assert_close(box.clamp(x), torch.ones(2, 3))


def test_unsupported_objects_are_refused_with_names():
    with pytest.raises(TypeError) as info:
        S.as_spec({"low": 0}, name="action_spec", owner="TD3Loss")
    message = str(info.value)
    for part in ("TD3Loss", "action_spec", "builtins.dict", "Bounded", "Composite", "OneHot"):
        assert part in message

    class Bounded:  # a look-alike from elsewhere is not a TorchRL spec
        pass

    with pytest.raises(TypeError, match="test_specs"):
        S.as_spec(Bounded(), name="spec", owner="SACLoss")


# -- target_entropy="auto" ----------------------------------------------------------
def _torchrl_sac_target_entropy(spec: Any, action_key: Any) -> float:
    """What TorchRL 0.14.1's SACLoss says for ``target_entropy="auto"``."""
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss

    body = TensorDictModule(
        torch.nn.Sequential(torch.nn.Linear(2, 2), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    actor = ProbabilisticActor(
        body, in_keys=["loc", "scale"], out_keys=[action_key], distribution_class=TanhNormal
    )
    qvalue = ValueOperator(torch.nn.Linear(3, 1), in_keys=["observation", action_key])
    loss = SACLoss(actor, qvalue, action_spec=spec)
    loss.set_keys(action=action_key)
    return float(loss.target_entropy)


def _entropy_cases() -> list[tuple[str, Any, Any, float]]:
    D = torchrl_data
    return [
        ("leaf", D.Bounded(-1.0, 1.0, shape=(3,)), "action", -3.0),
        ("leaf 2-d", D.Bounded(-1.0, 1.0, shape=(2, 3)), "action", -6.0),
        ("composite", D.Composite(action=D.Bounded(-1.0, 1.0, shape=(3,))), "action", -3.0),
        (
            "batched composite",
            D.Composite(action=D.Bounded(-1.0, 1.0, shape=(4, 3)), shape=(4,)),
            "action",
            -3.0,
        ),
        (
            "nested key",
            D.Composite(agents=D.Composite(action=D.Bounded(-1.0, 1.0, shape=(2, 3)), shape=(2,))),
            ("agents", "action"),
            -3.0,
        ),
        ("nested key, leaf spec", D.Bounded(-1.0, 1.0, shape=(2, 3)), ("agents", "action"), -6.0),
        (
            "composite action",
            D.Composite(
                action=D.Composite(a=D.Bounded(-1.0, 1.0, shape=(3,)), b=D.Unbounded(shape=(2,)))
            ),
            "action",
            -5.0,
        ),
    ]


@pytest.mark.parametrize(
    ("case", "spec", "key", "expected"), _entropy_cases(), ids=[c[0] for c in _entropy_cases()]
)
def test_auto_target_entropy_matches_torchrl_sac(case, spec, key, expected):
    # TorchRL issue 3291 (-1 whatever the composite held) must stay ruled out: -3 here.
    ours = S.auto_target_entropy(spec, key)
    assert ours == expected
    assert S.auto_target_entropy(S.as_spec(spec), key) == expected
    if case != "composite action":  # TorchRL's actor cannot write a composite action here
        assert _torchrl_sac_target_entropy(spec, key) == expected


def test_auto_target_entropy_of_a_missing_action():
    with pytest.raises(ValueError, match=r"SACLoss: cannot infer .* None"):
        S.auto_target_entropy(S.Composite(action=None), "action")
    with pytest.raises(KeyError, match="'act'"):
        S.auto_target_entropy(S.Composite(action=S.Bounded(0.0, 1.0)), "act")


def test_action_spec_for():
    spec = _nested()
    assert S.action_spec_for(spec, ("agents", "action")) is spec[("agents", "action")]
    leaf = S.Bounded(0.0, 1.0)
    assert S.action_spec_for(leaf, "anything") is leaf
    assert isinstance(S.action_spec_for(torchrl_data.OneHot(3)), S.OneHot)
    with pytest.raises(ValueError, match="None"):
        S.action_spec_for(S.Composite(action=None))


# -- TD3's bounds -------------------------------------------------------------------
def test_bounds_from_needs_exactly_one_source():
    box = S.Bounded(-1.0, 1.0)
    message = "TD3Loss: one of 'bounds' and 'action_spec' must be provided, but not both"
    with pytest.raises(ValueError, match=message):
        S.bounds_from(owner="TD3Loss")
    with pytest.raises(ValueError, match=message):
        S.bounds_from(box, (-1.0, 1.0), owner="TD3Loss")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action_spec": S.Unbounded((2,))}, "not of type Bounded but Unbounded"),
        ({"action_spec": torchrl_data.Unbounded(shape=(2,))}, "not of type Bounded"),
        ({"action_spec": S.Categorical(3)}, "not of type Bounded but Categorical"),
        ({"bounds": (1.0, -1.0)}, "low must be <= high"),
        ({"bounds": (1.0, 2.0, 3.0)}, "bounds must be a pair"),
        ({"bounds": 1.0}, "bounds must be a pair"),
        ({"bounds": (float("nan"), 1.0)}, "NaN"),
    ],
)
def test_bounds_from_errors(kwargs, message):
    with pytest.raises(ValueError, match=f"TD3Loss: .*{message}"):
        S.bounds_from(**kwargs, owner="TD3Loss")


def test_bounds_from_returns_what_it_was_given():
    assert S.bounds_from(bounds=(-2.0, 2.0), owner="TD3Loss") == (-2.0, 2.0)
    low, high = np.zeros(2), np.ones(2)
    got = S.bounds_from(S.Bounded(low, high), owner="TD3Loss")
    assert got[0] is low and got[1] is high


def _torchrl_td3_bounds(spec: Any, action_key: Any) -> tuple[Any, Any]:
    """TorchRL 0.14.1's TD3Loss ``min_action`` / ``max_action`` for ``spec``."""
    from torchrl.modules import Actor, ValueOperator
    from torchrl.objectives import TD3Loss

    @dataclasses.dataclass
    class AcceptedKeys(TD3Loss._AcceptedKeys):
        action: Any = action_key

    class Keys(TD3Loss):  # TD3 reads tensor_keys.action in __init__: set its default
        _AcceptedKeys = AcceptedKeys

    actor = Actor(torch.nn.Linear(2, 3), in_keys=["observation"], out_keys=[action_key])
    qvalue = ValueOperator(torch.nn.Linear(5, 1), in_keys=["observation", action_key])
    loss = Keys(actor, qvalue, action_spec=spec)
    return loss.min_action, loss.max_action


@pytest.mark.parametrize("key", ["action", ("agents", "action")])
def test_bounds_from_a_composite_matches_torchrl_td3(key):
    D = torchrl_data
    low = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    leaf = D.Bounded(low, -low, shape=(2, 3))
    if key == "action":
        spec = D.Composite(action=leaf, shape=(2,))
    else:
        spec = D.Composite(agents=D.Composite(action=leaf, shape=(2,)))
    low_ours, high_ours = S.bounds_from(spec, owner="TD3Loss", action_key=key)
    torch.testing.assert_close(low_ours, torch.tensor([-1.0, -2.0, -3.0]))
    torch.testing.assert_close(high_ours, torch.tensor([1.0, 2.0, 3.0]))
    low_theirs, high_theirs = _torchrl_td3_bounds(spec, key)
    torch.testing.assert_close(low_ours, low_theirs)
    torch.testing.assert_close(high_ours, high_theirs)


# -- no framework at import ---------------------------------------------------------
def test_import_loads_no_framework():
    script = (
        "import sys\nimport arrayrl.specs\n"
        "print([m for m in ('torch', 'torchrl', 'tensordict', 'cupy', 'jax') "
        "if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
