"""``entropy_estimate``: the closed-form entropy where there is one, else Monte Carlo."""

from __future__ import annotations

from typing import Any

from arrayrl.random import Generator

from ._base import Distribution, check_rng

__all__ = ["entropy_estimate"]


def entropy_estimate(dist: Distribution, n_samples: int, *, rng: Generator | None = None) -> Any:
    r"""The entropy of ``dist``, of shape ``batch_shape``.

    ``dist.entropy()`` when ``dist.has_entropy``; otherwise the Monte-Carlo estimate

    .. math:: \hat H = -\frac1n \sum_{i=1}^n \log p(x_i), \qquad x_i \sim p,

    with reparameterised draws (``rsample_and_log_prob``) where ``dist.has_rsample``, so
    the estimate is differentiable pathwise, else plain draws (``sample_and_log_prob``,
    score-function gradient only). For :class:`TanhNormal` the draws are scored at their
    pre-tanh value, as TorchRL's PPO ``_get_entropy`` does. (TorchRL also falls back to
    the estimate when a closed-form entropy is not finite; that test needs a host
    synchronisation, so arrayrl does not make it.) For a
    :class:`~arrayrl.modules.distributions.CompositeDistribution` the result is an
    ``ArrayDict`` of per-head estimates ``"<head>_entropy"``.

    Parameters
    ----------
    dist : Distribution
    n_samples : int
        Number of draws ``n`` (TorchRL's ``samples_mc_entropy``).
    rng : arrayrl.random.Generator
        Required when the estimate is sampled.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if getattr(dist, "is_composite", False):
        return dist.entropy_estimate(n_samples, rng=rng)  # per head, as an ArrayDict
    if dist.has_entropy:
        return dist.entropy()
    check_rng(rng, dist.backend, f"entropy_estimate({type(dist).__name__})")
    if dist.has_rsample:
        _, log_prob = dist.rsample_and_log_prob((n_samples,), rng=rng)
    else:
        _, log_prob = dist.sample_and_log_prob((n_samples,), rng=rng)
    return -dist.xp.mean(log_prob, axis=0)
