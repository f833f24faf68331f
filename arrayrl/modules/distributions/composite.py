"""``CompositeDistribution``: one distribution per action head, as tensordict 0.14.3's.

The semantics are those of ``tensordict.nn.CompositeDistribution`` with
``composite_lp_aggregate(False)`` (TorchRL 0.14.1's default): draws, log-probabilities
and entropies come back per head, in an :class:`~arrayrl.data.ArrayDict` whose keys are
the heads (samples), ``"<head>_log_prob"`` (log-probabilities) and ``"<head>_entropy"``
(entropies). Nothing is summed over heads here; the losses do that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arrayrl.random import Generator

from ._base import Distribution, as_shape

__all__ = ["CompositeDistribution", "add_suffix"]

Key = str | tuple[str, ...]


def add_suffix(key: Key, suffix: str) -> Key:
    """``"a"`` → ``"a<suffix>"``; a nested key gets the suffix on its last part."""
    if isinstance(key, tuple):
        if len(key) == 1:
            return key[0] + suffix
        return (*key[:-1], key[-1] + suffix)
    return key + suffix


def _plain_key(key: Key) -> Key:
    """A one-element tuple as its string (tensordict's ``unravel_key``)."""
    return key[0] if isinstance(key, tuple) and len(key) == 1 else key


def _as_kwargs(params: Any, name: Key) -> dict[str, Any]:
    """The constructor arguments of head ``name``: the leaves of ``params[name]``."""
    sub = params.get(name, None) if hasattr(params, "get") else None
    if sub is None:
        raise KeyError(f"no parameters for head {name!r} in the composite distribution's params")
    if isinstance(sub, Mapping):
        return dict(sub)
    return {key: sub.get(key) for key in sub.keys()}


class CompositeDistribution:
    """Independent distributions over several action heads.

    Parameters
    ----------
    params : ArrayDict or mapping
        ``params[head]`` holds the constructor arguments of that head's distribution
        (e.g. ``{"logits": ...}`` or ``{"loc": ..., "scale": ...}``).
    distribution_map : mapping
        ``{head key: distribution class}``.
    name_map : mapping, optional
        ``{head key: key the head is written to}`` (default: the head key itself).
    extra_kwargs : mapping, optional
        ``{head key: extra constructor arguments}``.
    log_prob_key, entropy_key : key, optional
        Kept for signature compatibility (only used with aggregated log-probs, which
        arrayrl does not do).

    Attributes
    ----------
    dists : dict
        ``{written head key: distribution}``.
    batch_shape : tuple of int
        ``params``' batch size, or the longest batch shape the heads share.
    """

    #: Marks the class for :class:`~arrayrl.modules.ProbabilisticActor` and the losses.
    is_composite = True

    def __init__(
        self,
        params: Any,
        distribution_map: Mapping[Key, type],
        *,
        name_map: Mapping[Key, Key] | None = None,
        extra_kwargs: Mapping[Key, Mapping[str, Any]] | None = None,
        log_prob_key: Key | None = None,
        entropy_key: Key | None = None,
    ) -> None:
        if not distribution_map:
            raise ValueError("distribution_map must name at least one head")
        names = {_plain_key(k): _plain_key(v) for k, v in (name_map or {}).items()}
        extra = {_plain_key(k): v for k, v in (extra_kwargs or {}).items()}
        self.dists: dict[Key, Distribution] = {}
        for name, cls in distribution_map.items():
            name = _plain_key(name)
            kwargs = _as_kwargs(params, name)
            self.dists[names.get(name, name)] = cls(**kwargs, **extra.get(name, {}))
        batch = getattr(params, "batch_size", None)
        self.batch_shape = tuple(batch) if batch is not None else self._common_batch_shape()
        self.log_prob_key = log_prob_key or "sample_log_prob"
        self.entropy_key = entropy_key or "entropy"

    def _common_batch_shape(self) -> tuple[int, ...]:
        """The longest leading shape every head's batch shape starts with."""
        shapes = [d.batch_shape for d in self.dists.values()]
        common: list[int] = []
        for sizes in zip(*shapes):
            if len(set(sizes)) > 1:
                break
            common.append(sizes[0])
        return tuple(common)

    def __repr__(self) -> str:
        heads = ", ".join(f"{k!r}: {type(d).__name__}" for k, d in self.dists.items())
        return f"CompositeDistribution({{{heads}}}, batch_shape={self.batch_shape})"

    # -- properties ----------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        """The backend of the heads' parameters (the first head's)."""
        return next(iter(self.dists.values())).backend

    @property
    def xp(self) -> Any:
        """The Array API namespace of the parameters."""
        return self.backend.xp

    @property
    def has_rsample(self) -> bool:
        """Whether every head has a reparameterised sampler."""
        return all(d.has_rsample for d in self.dists.values())

    @property
    def has_entropy(self) -> bool:
        """Whether every head has a closed-form entropy."""
        return all(d.has_entropy for d in self.dists.values())

    @property
    def mode(self) -> Any:
        """The heads' modes, as an :class:`ArrayDict`."""
        return self._per_head(lambda d: d.mode)

    @property
    def mean(self) -> Any:
        """The heads' means, as an :class:`ArrayDict`."""
        return self._per_head(lambda d: d.mean)

    @property
    def deterministic_sample(self) -> Any:
        """The heads' deterministic samples, as an :class:`ArrayDict`."""
        return self._per_head(lambda d: d.deterministic_sample)

    # -- draws ---------------------------------------------------------------------------
    def sample(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> Any:
        """One draw per head (no gradient), of batch size ``sample_shape + batch_shape``."""
        shape = as_shape(sample_shape)
        return self._per_head(lambda d: d.sample(shape, rng=rng), shape)

    def rsample(
        self, sample_shape: Sequence[int] | int = (), *, rng: Generator | None = None
    ) -> Any:
        """One reparameterised draw per head; ``NotImplementedError`` if a head has none."""
        shape = as_shape(sample_shape)
        return self._per_head(lambda d: d.rsample(shape, rng=rng), shape)

    # -- densities -----------------------------------------------------------------------
    def log_prob(self, sample: Any) -> Any:
        """``{"<head>_log_prob": log p_head(sample[head])}``, batch size of ``sample``.

        ``sample`` is any mapping (an ``ArrayDict``, a ``TensorDict``, a dict) holding
        every head's value under its key.
        """
        out = {}
        for name, dist in self.dists.items():
            value = sample.get(name, None)
            if value is None:
                raise KeyError(f"the sample has no value for head {name!r}")
            out[add_suffix(name, "_log_prob")] = dist.log_prob(value)
        return self._pack(out, self._sample_batch(sample))

    def entropy(self) -> Any:
        """``{"<head>_entropy": H_head}`` (closed form; ``NotImplementedError`` for a head
        without one, see :meth:`entropy_estimate`)."""
        out = {add_suffix(k, "_entropy"): d.entropy() for k, d in self.dists.items()}
        return self._pack(out, self.batch_shape)

    def entropy_estimate(self, n_samples: int, *, rng: Generator | None = None) -> Any:
        """Per-head :func:`~arrayrl.modules.distributions.entropy_estimate`: the closed
        form where a head has one, else its Monte-Carlo estimate (TorchRL's
        ``composite_entropy``)."""
        from .entropy import entropy_estimate

        out = {
            add_suffix(k, "_entropy"): entropy_estimate(d, n_samples, rng=rng)
            for k, d in self.dists.items()
        }
        return self._pack(out, self.batch_shape)

    # -- helpers -------------------------------------------------------------------------
    def _per_head(self, fn: Any, sample_shape: tuple[int, ...] = ()) -> Any:
        """``{head: fn(dist)}`` as an :class:`ArrayDict` of batch size
        ``sample_shape + batch_shape``."""
        out = {name: fn(dist) for name, dist in self.dists.items()}
        return self._pack(out, (*sample_shape, *self.batch_shape))

    @staticmethod
    def _pack(entries: dict[Key, Any], batch_size: Sequence[int]) -> Any:
        from arrayrl.data import ArrayDict

        return ArrayDict(entries, batch_size)

    def _sample_batch(self, sample: Any) -> tuple[int, ...]:
        """The batch size of ``sample`` (its own, else the distribution's)."""
        size = getattr(sample, "batch_size", None)
        return tuple(size) if size is not None else self.batch_shape
