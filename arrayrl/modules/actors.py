"""Actors and critics: ``ProbabilisticActor``, ``Actor``, ``ValueOperator``.

They follow TorchRL 0.14.1's classes of the same names: the same constructor arguments,
default keys, and the same log-prob key (``"<action>_log_prob"``, TorchRL's default since
``composite_lp_aggregate`` turned ``False``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arrayrl.backends import Backend

from ._params import Params
from .dict_module import DictModule, Module, NestedKey, as_key_list, read_key
from .layers import Layer

__all__ = ["Actor", "ProbabilisticActor", "ValueOperator", "as_layer"]

_INTERACTION_TYPES = ("random", "deterministic", "mode", "mean")


def as_layer(module: Any) -> Layer:
    """``module`` as a :class:`Layer`: arrayrl layers as they are, a ``torch.nn.Module``
    through the torch adapter (its parameters become a swappable tree)."""
    if isinstance(module, Layer):
        return module
    from .torch_adapter import TorchLayer  # imports torch; only reached with a torch module

    return TorchLayer(module)


def _log_prob_key(action_key: NestedKey) -> NestedKey:
    """``"action"`` → ``"action_log_prob"``; nested keys keep their prefix."""
    if isinstance(action_key, tuple):
        return (*action_key[:-1], f"{action_key[-1]}_log_prob")
    return f"{action_key}_log_prob"


class ProbabilisticActor(Module):
    """A policy: ``module`` writes distribution parameters, which become a distribution.

    Parameters
    ----------
    module : Module
        A dict-level module writing the distribution's parameters (e.g. ``loc`` and
        ``scale``), typically ``DictModule(Sequential(MLP(...), NormalParamExtractor()),
        in_keys=["observation"], out_keys=["loc", "scale"])``.
    in_keys : list of keys or mapping
        The keys read as the distribution's arguments; a mapping ``{arg: key}`` renames.
    out_keys : list of keys, default ["action"]
        Where the sample is written.
    distribution_class : type
        A class of :mod:`arrayrl.modules.distributions`.
    distribution_kwargs : dict, optional
        Extra constructor arguments (``low``, ``high``, ...).
    return_log_prob : bool, default False
        Also write the sample's log-probability under ``log_prob_key``.
    default_interaction_type : {"random", "deterministic", "mode", "mean"}
        ``"random"`` samples (and needs ``rng``); the others write the distribution's
        deterministic sample, mode or mean.
    log_prob_key : key, optional
        Default ``"<action key>_log_prob"``, as TorchRL 0.14.1.
    rng : arrayrl.random.Generator, optional
        The generator used when sampling; may also be passed per call.
    """

    def __init__(
        self,
        module: Module,
        in_keys: Sequence[NestedKey] | Mapping[str, NestedKey],
        out_keys: Sequence[NestedKey] | None = None,
        *,
        distribution_class: type,
        distribution_kwargs: Mapping[str, Any] | None = None,
        return_log_prob: bool = False,
        default_interaction_type: str = "random",
        log_prob_key: NestedKey | None = None,
        rng: Any = None,
    ) -> None:
        if default_interaction_type not in _INTERACTION_TYPES:
            raise ValueError(
                f"default_interaction_type must be one of {_INTERACTION_TYPES}, "
                f"got {default_interaction_type!r}"
            )
        self.module = module
        if isinstance(in_keys, Mapping):
            self.dist_keys = {arg: key for arg, key in in_keys.items()}
        else:
            self.dist_keys = {_arg_name(key): key for key in as_key_list(in_keys, "in_keys")}
        sample_keys = ["action"] if out_keys is None else out_keys
        self.dist_sample_keys = as_key_list(sample_keys, "out_keys")
        if len(self.dist_sample_keys) != 1:
            raise ValueError(f"out_keys must name one sample key, got {self.dist_sample_keys}")
        self.distribution_class = distribution_class
        self.distribution_kwargs = dict(distribution_kwargs or {})
        self.return_log_prob = return_log_prob
        self.default_interaction_type = default_interaction_type
        self.log_prob_key = log_prob_key or _log_prob_key(self.dist_sample_keys[0])
        self.log_prob_keys = [self.log_prob_key]
        self.rng = rng
        self.in_keys = list(module.in_keys)
        self.out_keys = [*module.out_keys, *self.dist_sample_keys]
        if return_log_prob:
            self.out_keys.append(self.log_prob_key)

    @property
    def params(self) -> Params:
        return {"module": self.module.params}

    @params.setter
    def params(self, tree: Params) -> None:
        self.module.params = tree["module"]

    def get_dist(self, batch: Any, params: Params | None = None) -> Any:
        """Run the parameter network on ``batch`` and build the distribution."""
        params = self.params if params is None else params
        self.module(batch, params["module"])
        return self.build_dist_from_params(batch)

    def build_dist_from_params(self, batch: Any) -> Any:
        """The distribution whose parameters are already in ``batch`` (no network call)."""
        owner = type(self).__name__
        kwargs = {arg: read_key(batch, key, owner) for arg, key in self.dist_keys.items()}
        return self.distribution_class(**kwargs, **self.distribution_kwargs)

    def forward(
        self,
        batch: Any,
        params: Params,
        *,
        rng: Any = None,
        interaction_type: str | None = None,
    ) -> Any:
        dist = self.get_dist(batch, params)
        how = interaction_type or self.default_interaction_type
        action = self._draw(dist, how, rng or self.rng)
        batch.set(self.dist_sample_keys[0], action)
        if self.return_log_prob:
            batch.set(self.log_prob_key, dist.log_prob(action))
        return batch

    @staticmethod
    def _draw(dist: Any, how: str, rng: Any) -> Any:
        if how == "random":
            if rng is None:
                raise TypeError(
                    "sampling needs a generator: pass rng=arrayrl.random.make_generator(...) "
                    "to the actor or to the call (arrayrl has no global RNG)"
                )
            return dist.sample(rng=rng)
        if how == "deterministic":
            return dist.deterministic_sample
        return dist.mode if how == "mode" else dist.mean

    def to(self, backend: str | Backend, device: Any = None) -> ProbabilisticActor:
        self.module.to(backend, device)
        return self


def _arg_name(key: NestedKey) -> str:
    return key[-1] if isinstance(key, tuple) else key


class Actor(DictModule):
    """A deterministic policy: ``module`` maps ``in_keys`` (default ``["observation"]``)
    to ``out_keys`` (default ``["action"]``). ``module`` is a :class:`Layer` or a
    ``torch.nn.Module``."""

    def __init__(
        self,
        module: Any,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(
            as_layer(module),
            in_keys=["observation"] if in_keys is None else in_keys,
            out_keys=["action"] if out_keys is None else out_keys,
        )


class ValueOperator(DictModule):
    """A critic: ``module`` maps ``in_keys`` (default ``["observation"]``) to
    ``"state_value"``, or to ``"state_action_value"`` when ``"action"`` is an input, as
    TorchRL's ``ValueOperator``."""

    def __init__(
        self,
        module: Any,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
    ) -> None:
        in_keys = ["observation"] if in_keys is None else as_key_list(in_keys, "in_keys")
        if out_keys is None:
            out_keys = ["state_action_value"] if "action" in in_keys else ["state_value"]
        super().__init__(as_layer(module), in_keys=in_keys, out_keys=out_keys)
