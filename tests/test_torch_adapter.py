"""The torch adapter: TorchLayer, TorchDictModule and from_torch, against the modules."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tensordict = pytest.importorskip("tensordict")
torchrl_modules = pytest.importorskip("torchrl.modules")

from tensordict import TensorDict  # noqa: E402
from tensordict.nn import TensorDictModule, TensorDictSequential  # noqa: E402

from arrayrl.data import ArrayDict  # noqa: E402
from arrayrl.modules import MLP, Actor, ValueOperator, from_torch  # noqa: E402
from arrayrl.modules.actors import as_layer  # noqa: E402
from arrayrl.modules.torch_adapter import TorchDictModule, TorchLayer  # noqa: E402


def _torchrl_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchrl_modules.MLP(in_features=4, out_features=1, num_cells=[8, 8])


def _observation(shape: tuple[int, ...] = (6, 4), seed: int = 1) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape), dtype=torch.float32)


def _perturbed(tree: dict, scale: float = 0.5) -> dict:
    """A second tree of the same names: a 'target network'."""
    return {
        name: _perturbed(value, scale) if isinstance(value, dict) else value.detach() + scale
        for name, value in tree.items()
    }


@pytest.mark.parametrize("wrap", [from_torch, as_layer, lambda m: m])
def test_value_operator_on_torchrl_mlp_matches_the_module(wrap) -> None:
    mlp = _torchrl_mlp()
    critic = ValueOperator(wrap(mlp))
    obs = _observation()
    batch = critic(ArrayDict({"observation": obs}, [6]))
    torch.testing.assert_close(batch["state_value"], mlp(obs))
    assert critic.out_keys == ["state_value"]


def test_tree_is_nested_by_dotted_names_and_holds_the_module_parameters() -> None:
    mlp = _torchrl_mlp()
    layer = from_torch(mlp)
    assert isinstance(layer, TorchLayer)
    assert list(layer.named_parameters()) == [name for name, _ in mlp.named_parameters()]
    assert all(a is b for a, b in zip(layer.parameters(), mlp.parameters()))
    assert set(layer.params) == {"0", "2", "4"} and set(layer.params["0"]) == {"weight", "bias"}


def test_tree_is_interchangeable_with_an_arrayrl_mlp() -> None:
    ours = MLP(4, 1, [8, 8], seed=5, backend="torch")
    layer = from_torch(_torchrl_mlp())
    obs = _observation()
    torch.testing.assert_close(layer.apply(ours.params, obs), ours(obs))


def test_swapping_params_changes_outputs_and_leaves_the_module_alone() -> None:
    mlp = _torchrl_mlp()
    before = copy.deepcopy(mlp)
    layer = from_torch(mlp)
    target = _perturbed(layer.params)
    obs = _observation()
    shifted = copy.deepcopy(mlp)
    with torch.no_grad():
        for p in shifted.parameters():
            p.add_(0.5)
    out = layer.apply(target, obs)
    torch.testing.assert_close(out, shifted(obs))
    assert not torch.allclose(out, layer(obs))
    torch.testing.assert_close(layer(obs), before(obs))
    critic = ValueOperator(layer)
    batch = critic(ArrayDict({"observation": obs}, [6]), params={"module": target})
    torch.testing.assert_close(batch["state_value"], out)


def test_gradients_flow_to_the_torch_parameters() -> None:
    mlp = _torchrl_mlp()
    reference = copy.deepcopy(mlp)
    obs = _observation()
    critic = ValueOperator(from_torch(mlp))
    critic(ArrayDict({"observation": obs}, [6]))["state_value"].pow(2).sum().backward()
    reference(obs).pow(2).sum().backward()
    for p, q in zip(mlp.parameters(), reference.parameters()):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, q.grad)


def test_gradients_with_respect_to_a_swapped_tree() -> None:
    layer = from_torch(_torchrl_mlp())
    target = {
        name: {k: v.detach().clone().requires_grad_(True) for k, v in sub.items()}
        for name, sub in layer.params.items()
    }
    obs = _observation()
    layer.apply(target, obs).sum().backward()
    assert all(v.grad is not None for sub in target.values() for v in sub.values())
    assert all(p.grad is None for p in layer.parameters())


def test_a_tree_with_other_names_is_refused() -> None:
    layer = from_torch(_torchrl_mlp())
    tree = dict(layer.params)
    del tree["4"]
    with pytest.raises(KeyError, match=r"missing \['4.bias', '4.weight'\]"):
        layer.apply(tree, _observation())


def test_actor_takes_a_torch_module() -> None:
    net = torch.nn.Linear(4, 2)
    actor = Actor(net)
    obs = _observation()
    torch.testing.assert_close(actor(ArrayDict({"observation": obs}, [6]))["action"], net(obs))


def test_to_moves_within_torch_and_refuses_other_backends() -> None:
    mlp = _torchrl_mlp()
    layer = from_torch(mlp)
    for target in ("torch", "cpu", torch.device("cpu")):
        assert layer.to(target) is layer
        assert all(a is b for a, b in zip(layer.parameters(), mlp.parameters()))
    with pytest.raises(TypeError, match="cannot move to 'numpy'"):
        layer.to("numpy")
    with pytest.raises(TypeError, match="cannot move"):
        from_torch(_td_module()).to("array_api_strict")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_to_cuda_moves_module_and_tree() -> None:
    mlp = _torchrl_mlp()
    layer = from_torch(mlp).to("torch", "cuda")
    assert all(p.is_cuda for p in layer.parameters())
    assert all(a is b for a, b in zip(layer.parameters(), mlp.parameters()))
    obs = _observation().cuda()
    torch.testing.assert_close(layer(obs), mlp(obs))
    target = {k: {n: v.cpu() for n, v in sub.items()} for k, sub in layer.params.items()}
    layer.params = target
    layer.to("cuda")
    assert all(p.is_cuda and p.is_leaf for p in layer.parameters())


def _td_module() -> TensorDictModule:
    torch.manual_seed(0)
    return TensorDictModule(
        torch.nn.Linear(4, 3), in_keys=[("agent", "observation")], out_keys=["logits"]
    )


def test_tensordict_module_keys_and_params() -> None:
    module = from_torch(_td_module())
    assert isinstance(module, TorchDictModule)
    assert module.in_keys == [("agent", "observation")] and module.out_keys == ["logits"]
    assert list(module.named_parameters()) == ["module.weight", "module.bias"]


def test_tensordict_module_on_an_arraydict_of_torch_tensors() -> None:
    td_module = _td_module()
    module = from_torch(td_module)
    obs = _observation()
    batch = ArrayDict({"agent": {"observation": obs}, "other": torch.zeros(6)}, [6])
    out = module(batch)
    assert out is batch
    torch.testing.assert_close(batch["logits"], td_module.module(obs))
    assert batch["agent", "observation"] is obs
    target = _perturbed(module.params)
    swapped = module(ArrayDict({"agent": {"observation": obs}}, [6]), params=target)
    expected = obs @ target["module"]["weight"].T + target["module"]["bias"]
    torch.testing.assert_close(swapped["logits"], expected)


def test_tensordict_module_on_a_tensordict() -> None:
    td_module = _td_module()
    module = from_torch(td_module)
    obs = _observation()
    td = TensorDict({"agent": {"observation": obs}}, [6])
    assert module(td) is td
    torch.testing.assert_close(td["logits"], td_module.module(obs))
    td["logits"].sum().backward()
    assert td_module.module.weight.grad is not None


def test_tensordict_sequential_and_value_in_arraydict_refused_if_not_torch() -> None:
    torch.manual_seed(0)
    seq = TensorDictSequential(
        TensorDictModule(torch.nn.Linear(4, 8), in_keys=["observation"], out_keys=["hidden"]),
        TensorDictModule(torch.nn.Linear(8, 1), in_keys=["hidden"], out_keys=["state_value"]),
    )
    module = from_torch(seq)
    obs = _observation()
    batch = module(ArrayDict({"observation": obs}, [6]))
    torch.testing.assert_close(
        batch["state_value"], seq(TensorDict({"observation": obs}, [6]))["state_value"]
    )
    with pytest.raises(TypeError, match=r"batch.to\('torch'\)"):
        module(ArrayDict({"observation": obs.numpy()}, [6]))


def test_from_torch_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="from_torch"):
        from_torch(MLP(2, 1))


def test_importing_the_modules_package_does_not_import_torch() -> None:
    code = (
        "import sys, arrayrl.modules, arrayrl.objectives\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "arrayrl.modules.from_torch\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class _TwoOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.linear(x)
        return y, y.tanh()


def _chain() -> TensorDictSequential:
    torch.manual_seed(3)
    return TensorDictSequential(
        TensorDictModule(_TwoOut(), ["observation"], ["_", ("hidden", "h")]),
        TensorDictSequential(
            TensorDictModule(torch.nn.Linear(3, 2), [("hidden", "h")], ["out"]),
        ),
    )


def test_plain_tensordict_chains_run_directly_with_tensordicts_numbers() -> None:
    from arrayrl.modules.torch_adapter import direct_steps

    chain = _chain()
    wrapped = TorchDictModule(chain)
    assert wrapped._direct is not None and len(wrapped._direct) == 2
    obs = _observation()
    target = _perturbed(wrapped.params)
    expected = chain(TensorDict(observation=obs, batch_size=[6]))
    out = wrapped(ArrayDict({"observation": obs}, batch_size=(6,)))
    assert "_" not in out.keys()
    torch.testing.assert_close(out.get("out"), expected["out"])
    torch.testing.assert_close(out.get(("hidden", "h")), expected["hidden", "h"])
    # a swapped tree reaches every step: the same as tensordict's call under that tree
    swapped = wrapped(ArrayDict({"observation": obs}, batch_size=(6,)), target)
    via_tensordict = wrapped(TensorDict(observation=obs, batch_size=[6]), target)
    torch.testing.assert_close(swapped.get("out"), via_tensordict["out"])
    assert not torch.allclose(swapped.get("out"), out.get("out"))
    # gradients reach the module's own parameters
    out.get("out").sum().backward()
    assert all(p.grad is not None for p in chain.parameters())
    # a hook, a keyword map or a probabilistic step keeps tensordict's own call
    hooked = _chain()
    hooked.module[0].register_forward_hook(lambda module, args, output: output)
    assert direct_steps(hooked) is None
    kwargs = TensorDictModule(torch.nn.Linear(4, 2), {"observation": "input"}, ["out"])
    assert direct_steps(kwargs) is None
    spec = torchrl_modules.SafeModule(
        torch.nn.Linear(4, 2), ["observation"], ["action"],
        spec=__import__("torchrl.data").data.Bounded(-0.1, 0.1, (2,)), safe=True,
    )  # fmt: skip
    assert direct_steps(spec) is None
    projected = TorchDictModule(spec)(ArrayDict({"observation": 9 * obs}, batch_size=(6,)))
    assert projected.get("action").abs().max() <= 0.1


class _DictOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return TensorDict(value=self.linear(x), batch_size=x.shape[:-1])


def test_a_step_returning_a_tensordict_falls_back_to_tensordicts_call() -> None:
    torch.manual_seed(5)
    module = TensorDictModule(_DictOut(), ["observation"], ["out"])
    wrapped = TorchDictModule(module)
    obs = _observation()
    expected = module(TensorDict(observation=obs, batch_size=[6]))["out", "value"]
    for _ in range(2):  # the fallback, then tensordict's call from the start
        out = wrapped(ArrayDict({"observation": obs}, batch_size=(6,)))
        torch.testing.assert_close(out.get(("out", "value")), expected)
    assert wrapped._direct is None
