"""Tests of :class:`arrayrl.data.ArrayDict` on NumPy, torch and array-api-strict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from arrayrl.backends import backend_of, get_backend

from arrayrl.data import ArrayDict, as_arraydict

BACKENDS = ["numpy", "torch", "array_api_strict"]


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param != "numpy":
        pytest.importorskip(request.param)
    return request.param


def np_of(x) -> np.ndarray:
    """A NumPy copy of any leaf."""
    return np.asarray(backend_of(x).to_numpy(x))


def make(backend_name: str, batch=(4,)) -> ArrayDict:
    """obs [*batch, 3] float, action [*batch] int, next: {reward [*batch], done [*batch]}."""
    b = get_backend(backend_name)
    n = int(np.prod(batch))
    obs = np.arange(n * 3, dtype=np.float32).reshape((*batch, 3))
    action = np.arange(n, dtype=np.int64).reshape(batch)
    reward = np.linspace(0.0, 1.0, n).reshape(batch)
    done = (np.arange(n) % 2 == 0).reshape(batch)
    return ArrayDict(
        {
            "obs": b.from_numpy(obs),
            "action": b.from_numpy(action),
            "next": {"reward": b.from_numpy(reward), "done": b.from_numpy(done)},
        },
        batch,
    )


def assert_same(x, expected) -> None:
    np.testing.assert_array_equal(np_of(x), np.asarray(expected))


# -- construction ----------------------------------------------------------------------
def test_construction(backend_name: str) -> None:
    ad = make(backend_name)
    assert ad.batch_size == (4,)
    assert ad.shape == (4,)
    assert ad.ndim == 1
    assert len(ad) == 4
    assert ad.backend.name == backend_name
    assert ad.device == get_backend(backend_name).device
    assert isinstance(ad["next"], ArrayDict)
    assert ad["next"].batch_size == (4,)
    assert ad["next"].backend.name == backend_name
    assert list(ad) == ["obs", "action", "next"]


def test_shape_error_names_key_shape_and_batch(backend_name: str) -> None:
    b = get_backend(backend_name)
    with pytest.raises(ValueError, match=r"'reward'.*\(3,\).*\(4,\)"):
        ArrayDict({"next": {"reward": b.from_numpy(np.zeros(3))}}, (4,))
    with pytest.raises(ValueError, match="does not start with"):
        ArrayDict({"obs": b.from_numpy(np.zeros((3, 4)))}, (4,))


def test_scalars_and_lists_are_converted(backend_name: str) -> None:
    b = get_backend(backend_name)
    ad = ArrayDict({"x": b.from_numpy(np.zeros(3)), "y": [1.0, 2.0, 3.0]}, (3,))
    assert b.is_array(ad["y"])
    assert_same(ad["y"], [1.0, 2.0, 3.0])
    scalar = ArrayDict({"s": 2.5})
    assert isinstance(scalar["s"], np.ndarray)
    assert scalar["s"].shape == ()
    with pytest.raises(ValueError, match="'s'"):
        ArrayDict({"s": 2.5}, (2,))  # no silent broadcasting


def test_no_batch_len_raises() -> None:
    ad = ArrayDict({"x": np.zeros(3)})
    with pytest.raises(TypeError, match="empty batch_size"):
        len(ad)
    with pytest.raises(TypeError, match="ambiguous"):
        bool(ad)


def test_bad_keys_and_batch_assignment() -> None:
    ad = ArrayDict({"x": np.zeros(3)}, (3,))
    with pytest.raises(TypeError, match="keys"):
        ad.set(1, np.zeros(3))
    with pytest.raises(TypeError, match="assignment to keys only"):
        ad[0] = {"x": 1.0}
    with pytest.raises(TypeError, match="expected an array"):
        ArrayDict({"x": "not an array"})


def test_mixed_backends_type_error() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"'obs' is numpy.*\('next', 'reward'\) is torch"):
        ArrayDict({"obs": np.zeros(2), "next": {"reward": torch.zeros(2)}}, (2,))
    ad = ArrayDict({"obs": np.zeros(2)}, (2,))
    with pytest.raises(TypeError, match=r"'act'.*torch"):
        ad.set("act", torch.zeros(2))
    with pytest.raises(TypeError, match="backend='torch'"):
        ArrayDict({"obs": np.zeros(2)}, (2,), backend="torch")


def test_empty_dict_adopts_first_backend(backend_name: str) -> None:
    b = get_backend(backend_name)
    ad = ArrayDict(batch_size=(2,))
    assert ad.backend.name == "numpy"
    ad.set(("a", "b"), b.from_numpy(np.ones(2)))
    assert ad.backend == b
    assert ad["a"].backend == b
    ad.set("c", [1, 2])  # converted with the adopted backend
    assert b.is_array(ad["c"])


def test_input_mapping_not_mutated() -> None:
    source = {"x": np.zeros(2), "n": {"y": np.ones(2)}}
    ad = ArrayDict(source, (2,))
    ad.set(("n", "z"), np.ones(2))
    del ad["x"]
    assert set(source) == {"x", "n"}
    assert set(source["n"]) == {"y"}


# -- keys ------------------------------------------------------------------------------
def test_nested_get_set_with_tuple_keys(backend_name: str) -> None:
    ad = make(backend_name)
    b = ad.backend
    assert_same(ad["next", "reward"], np.linspace(0, 1, 4))
    assert ad.get(("next", "reward")) is ad["next"]["reward"]
    assert ad.set(("a", "b", "c"), b.from_numpy(np.ones((4, 2)))) is ad
    assert isinstance(ad["a", "b"], ArrayDict)
    assert ad["a", "b"].batch_size == (4,)
    assert_same(ad["a", "b", "c"], np.ones((4, 2)))
    ad["next", "reward"] = b.from_numpy(np.full(4, 7.0))
    assert_same(ad["next"]["reward"], np.full(4, 7.0))
    assert ("next", "reward") in ad
    assert ("next", "nope") not in ad
    assert "obs" in ad
    del ad["next", "done"]
    assert ad["next"].keys() == ["reward"]
    assert ad.get("missing", None) is None
    assert ad.get(("obs", "deeper"), 3) == 3


def test_keyerror_names_full_key_and_available_keys() -> None:
    ad = make("numpy")
    with pytest.raises(KeyError, match=r"\('next', 'rewrd'\).*\['reward', 'done'\]"):
        ad["next", "rewrd"]
    with pytest.raises(KeyError, match=r"'obz'.*\['obs', 'action', 'next'\]"):
        ad["obz"]
    with pytest.raises(KeyError, match="is an array"):
        ad["obs", "x"]
    with pytest.raises(KeyError, match="'gone'"):
        del ad["gone"]


def test_keys_values_items_flags() -> None:
    ad = make("numpy")
    assert ad.keys() == ["obs", "action", "next"]
    assert ad.keys(include_nested=True) == [
        "obs",
        "action",
        "next",
        ("next", "reward"),
        ("next", "done"),
    ]
    assert ad.keys(include_nested=True, leaves_only=True) == [
        "obs",
        "action",
        ("next", "reward"),
        ("next", "done"),
    ]
    assert ad.keys(leaves_only=True) == ["obs", "action"]
    values = ad.values(include_nested=True, leaves_only=True)
    assert values[2] is ad["next", "reward"]
    items = dict(ad.items(include_nested=True))
    assert items["next"] is ad["next"]
    assert items[("next", "done")] is ad["next", "done"]


# -- batch indexing --------------------------------------------------------------------
def test_index_int_and_slice(backend_name: str) -> None:
    ad = make(backend_name, batch=(4, 2))
    row = ad[1]
    assert row.batch_size == (2,)
    assert row["next"].batch_size == (2,)
    assert_same(row["obs"], np_of(ad["obs"])[1])
    sliced = ad[1:3]
    assert sliced.batch_size == (2, 2)
    assert_same(sliced["next", "reward"], np_of(ad["next", "reward"])[1:3])
    assert ad[..., 0].batch_size == (4,)
    assert_same(ad[..., 1]["obs"], np_of(ad["obs"])[:, 1])
    assert ad[1, 0].batch_size == ()
    assert_same(ad[1, 0]["action"], 2)
    assert ad[:, ::2].batch_size == (4, 1)


def test_index_bool_mask(backend_name: str) -> None:
    ad = make(backend_name)
    mask = np.array([True, False, True, True])
    out = ad[ad.backend.from_numpy(mask)]
    assert out.batch_size == (3,)
    assert_same(out["obs"], np_of(ad["obs"])[mask])
    assert_same(out["next", "done"], np_of(ad["next", "done"])[mask])


def test_index_int_array(backend_name: str) -> None:
    ad = make(backend_name, batch=(4, 2))
    idx = np.array([3, 0, 0])
    out = ad[ad.backend.from_numpy(idx)]
    assert out.batch_size == (3, 2)
    assert_same(out["obs"], np_of(ad["obs"])[idx])
    cols = np.array([[1, 0], [1, 1]])
    out = ad[:, ad.backend.from_numpy(cols)]
    assert out.batch_size == (4, 2, 2)
    assert_same(out["obs"], np_of(ad["obs"])[:, cols])


def test_index_errors() -> None:
    ad = make("numpy")
    with pytest.raises(IndexError, match="too many indices"):
        ad[0, 0]
    with pytest.raises(TypeError, match="mix keys"):
        ad["obs", 0]


def test_index_with_other_backend_array_fails() -> None:
    torch = pytest.importorskip("torch")
    ad = make("numpy")
    with pytest.raises(TypeError, match="torch"):
        ad[torch.tensor([0, 1])]


# -- mapping operations ----------------------------------------------------------------
def test_select_exclude(backend_name: str) -> None:
    ad = make(backend_name)
    sel = ad.select("obs", ("next", "reward"))
    assert sel.keys(include_nested=True) == ["obs", "next", ("next", "reward")]
    assert sel["obs"] is ad["obs"]
    assert sel["next"] is not ad["next"]
    with pytest.raises(KeyError):
        ad.select("nope")
    assert ad.select("obs", "nope", strict=False).keys() == ["obs"]
    exc = ad.exclude("action", ("next", "done"), "nope")
    assert exc.keys(include_nested=True) == ["obs", "next", ("next", "reward")]
    assert "action" in ad and ("next", "done") in ad  # the original is untouched


def test_update(backend_name: str) -> None:
    ad = make(backend_name)
    b = ad.backend
    new_reward = b.from_numpy(np.full(4, 3.0))
    out = ad.update({"next": {"reward": new_reward}, "extra": b.from_numpy(np.zeros(4))})
    assert out is ad
    assert ad["next", "reward"] is new_reward
    assert "done" in ad["next"]  # merged, not replaced
    other = ArrayDict({"action": b.from_numpy(np.ones(4, dtype=np.int64))}, (4,))
    ad.update(other)
    assert_same(ad["action"], np.ones(4))
    with pytest.raises(ValueError, match="'bad'"):
        ad.update({"bad": b.from_numpy(np.zeros(5))})


def test_apply(backend_name: str) -> None:
    ad = make(backend_name).exclude("action", ("next", "done"))
    doubled = ad.apply(lambda x: x * 2)
    assert doubled.batch_size == (4,)
    assert_same(doubled["obs"], np_of(ad["obs"]) * 2)
    assert_same(doubled["next", "reward"], np_of(ad["next", "reward"]) * 2)
    summed = ad.apply(lambda x, y: x + y, doubled)
    assert_same(summed["obs"], np_of(ad["obs"]) * 3)
    first = ad.apply(lambda x: x[0, ...], batch_size=())
    assert first.batch_size == ()
    assert_same(first["obs"], np_of(ad["obs"])[0])
    with pytest.raises(ValueError, match="batch_size="):
        ad.apply(lambda x: x[0, ...])
    with pytest.raises(ValueError, match="different keys"):
        ad.apply(lambda x, y: x, make(backend_name))


def test_clone_copies(backend_name: str) -> None:
    ad = make(backend_name)
    cl = ad.clone()
    assert cl["obs"] is not ad["obs"]
    assert cl["next"] is not ad["next"]
    assert_same(cl["obs"], np_of(ad["obs"]))
    if backend_name != "array_api_strict":  # array-api-strict arrays are read-only here
        before = np_of(ad["obs"]).copy()
        cl["obs"][0, 0] = 1000.0
        assert_same(ad["obs"], before)


def test_to_dict() -> None:
    ad = make("numpy")
    d = ad.to_dict()
    assert type(d) is dict and type(d["next"]) is dict
    assert d["next"]["reward"] is ad["next", "reward"]


def test_reshape(backend_name: str) -> None:
    ad = make(backend_name, batch=(4, 3))
    flat = ad.reshape(-1)
    assert flat.batch_size == (12,)
    assert flat["obs"].shape[1:] == (3,)
    assert_same(flat["obs"], np_of(ad["obs"]).reshape(12, 3))
    assert ad.reshape((2, 6)).batch_size == (2, 6)
    assert ad.reshape(3, -1)["next"].batch_size == (3, 4)
    with pytest.raises(ValueError, match="cannot reshape"):
        ad.reshape(5, -1)


def test_stack_and_cat(backend_name: str) -> None:
    a, b = make(backend_name), make(backend_name)
    b.update(
        {"obs": b["obs"] + 1, "action": b["action"] + 1, "next": {"reward": -b["next", "reward"]}}
    )
    st = ArrayDict.stack([a, b], dim=0)
    assert st.batch_size == (2, 4)
    assert st["next"].batch_size == (2, 4)
    assert_same(st["obs"], np.stack([np_of(a["obs"]), np_of(b["obs"])]))
    st1 = ArrayDict.stack([a, b], dim=-1)
    assert st1.batch_size == (4, 2)
    assert_same(st1["action"], np.stack([np_of(a["action"]), np_of(b["action"])], axis=1))
    ct = ArrayDict.cat([a, b, a], dim=0)
    assert ct.batch_size == (12,)
    expected = [np_of(d["next", "reward"]) for d in (a, b, a)]
    assert_same(ct["next", "reward"], np.concatenate(expected))
    ct1 = ArrayDict.cat([st1, st1], dim=1)
    assert ct1.batch_size == (4, 4)
    with pytest.raises(ValueError, match="different keys"):
        ArrayDict.stack([a, a.exclude("obs")])
    with pytest.raises(ValueError, match="equal batch sizes"):
        ArrayDict.stack([a, a[:2]])
    with pytest.raises(ValueError, match="needs at least one"):
        ArrayDict.cat([])
    parts = st.unbind(0)
    assert len(parts) == 2
    assert_same(parts[1]["obs"], np_of(b["obs"]))


def test_nested_dict_with_extra_batch_dims() -> None:
    inner = ArrayDict({"y": np.arange(12.0).reshape(4, 3)}, (4, 3))
    ad = ArrayDict({"x": np.zeros(4), "inner": inner}, (4,))
    assert ad["inner"].batch_size == (4, 3)
    assert ad[1:3]["inner"].batch_size == (2, 3)
    assert ArrayDict.stack([ad, ad])["inner"].batch_size == (2, 4, 3)
    assert ad.reshape(2, 2)["inner"].batch_size == (2, 2, 3)
    with pytest.raises(ValueError, match="batch size"):
        ArrayDict({"inner": inner}, (3,))


def test_repr_and_eq() -> None:
    ad = make("numpy")
    text = repr(ad)
    for piece in ("obs", "shape=(4, 3)", "float32", "batch_size=(4,)", "backend=numpy"):
        assert piece in text
    assert ad == ad
    assert ad != make("numpy")  # identity, not element-wise


# -- conversions -----------------------------------------------------------------------
@pytest.mark.parametrize("src", BACKENDS)
@pytest.mark.parametrize("dst", BACKENDS)
def test_to_round_trip(src: str, dst: str) -> None:
    for name in {src, dst} - {"numpy"}:
        pytest.importorskip(name)
    ad = make(src, batch=(2, 2))
    out = ad.to(dst)
    assert out.backend == get_backend(dst)
    assert out.batch_size == (2, 2)
    assert out.keys(include_nested=True) == ad.keys(include_nested=True)
    for key in ad.keys(include_nested=True, leaves_only=True):
        assert get_backend(dst).is_array(out[key])
        assert_same(out[key], np_of(ad[key]))
        assert np_of(out[key]).dtype == np_of(ad[key]).dtype
    back = out.to(src)
    for key in ad.keys(include_nested=True, leaves_only=True):
        assert_same(back[key], np_of(ad[key]))


def test_numpy_to_torch_is_zero_copy() -> None:
    pytest.importorskip("torch")
    x = np.zeros((3, 2), dtype=np.float32)
    ad = ArrayDict({"x": x, "n": {"y": np.arange(3)}}, (3,))
    t = ad.to("torch", device="cpu")
    assert t.backend.name == "torch"
    assert np.shares_memory(t["x"].numpy(), x)
    x[1, 1] = 5.0
    assert float(t["x"][1, 1]) == 5.0
    back = t.to("numpy")
    assert np.shares_memory(back["x"], x)


def test_to_detaches_grad() -> None:
    torch = pytest.importorskip("torch")
    w = torch.ones(3, requires_grad=True)
    ad = ArrayDict({"w": w * 2}, (3,))
    out = ad.to("numpy")
    assert isinstance(out["w"], np.ndarray)
    np.testing.assert_array_equal(out["w"], np.full(3, 2.0, dtype=np.float32))
    assert ad["w"].requires_grad  # the original keeps its graph


def test_to_same_backend_shares_leaves(backend_name: str) -> None:
    ad = make(backend_name)
    out = ad.to(ad.backend)
    assert out is not ad
    assert out["obs"] is ad["obs"]


def test_from_tensordict_shares_memory() -> None:
    pytest.importorskip("tensordict")
    torch = pytest.importorskip("torch")
    from tensordict import TensorDict

    td = TensorDict({"obs": torch.zeros(4, 3), "next": {"reward": torch.ones(4)}}, batch_size=[4])
    ad = as_arraydict(td)
    assert isinstance(ad, ArrayDict)
    assert ad.batch_size == (4,)
    assert ad.backend.name == "torch"
    assert ad.keys(include_nested=True, leaves_only=True) == ["obs", ("next", "reward")]
    assert ad["obs"].data_ptr() == td["obs"].data_ptr()
    td["next", "reward"][0] = 9.0
    assert float(ad["next", "reward"][0]) == 9.0
    assert ArrayDict.from_tensordict(td)["next"].batch_size == (4,)
    with pytest.raises(TypeError, match="TensorDict"):
        ArrayDict.from_tensordict({"a": 1})


def test_as_arraydict_passthrough_and_mapping() -> None:
    ad = make("numpy")
    assert as_arraydict(ad) is ad
    wrapped = as_arraydict({"x": np.zeros(3)})
    assert wrapped.batch_size == ()
    assert as_arraydict({"x": np.zeros(3)}, batch_size=(3,)).batch_size == (3,)
    with pytest.raises(TypeError, match="cannot make"):
        as_arraydict([1, 2])


def test_import_is_cheap() -> None:
    code = (
        "import sys, arrayrl.data; "
        "bad = [m for m in ('torch', 'cupy', 'jax', 'numba') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- strict inputs: float indices, None leaves, non-integer batch sizes ----------------------
@pytest.mark.parametrize("index", [1.5, np.float64(1.0), np.array([0.5, 1.0]), (slice(None), 1.5)])
def test_non_integer_batch_index_is_a_named_type_error(index) -> None:
    ad = ArrayDict({"a": np.zeros((3, 2))}, [3])
    with pytest.raises(TypeError, match="ArrayDict"):
        ad[index]


@pytest.mark.parametrize(
    "build",
    [
        lambda: ArrayDict({"a": None}, [3]),
        lambda: ArrayDict({"n": {"a": None}}, [3]),
        lambda: ArrayDict({"b": np.zeros(3), "a": None}, [3]),
        lambda: ArrayDict({"b": np.zeros(3)}, [3]).set("a", None),
        lambda: ArrayDict({"b": np.zeros(3)}, [3]).set(("n", "a"), None),
    ],
)
def test_none_leaf_is_a_type_error_naming_the_key(build) -> None:
    with pytest.raises(TypeError, match=r"key .*'a'.* is None"):
        build()


@pytest.mark.parametrize(
    ("batch_size", "error"),
    [
        ([2.5], TypeError),
        (["a"], TypeError),
        ("3", TypeError),
        (np.float64(2), TypeError),
        ([np.float32(2.0)], TypeError),
        ([True], TypeError),
        (2.0, TypeError),
        ([2, -1], ValueError),
    ],
)
def test_batch_size_must_be_ints(batch_size, error) -> None:
    with pytest.raises(error, match="batch_size"):
        ArrayDict({}, batch_size)


def test_integer_batch_sizes_of_every_kind_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    for batch_size in (3, np.int64(3), [np.int32(3)], torch.Size([3]), np.array([3]), (3,)):
        assert ArrayDict({"a": np.zeros(3)}, batch_size).batch_size == (3,)
