"""A DDPM noise schedule and a small diffusion policy, written once with the Array API.

Denoising diffusion (Ho, Jain and Abbeel 2020, "Denoising Diffusion Probabilistic
Models", https://arxiv.org/abs/2006.11239) applied to actions as in Chi et al. 2023,
"Diffusion Policy: Visuomotor Policy Learning via Action Diffusion",
https://arxiv.org/abs/2303.04137. With a linear schedule ``β_1 … β_T`` (TorchRL's
``_DDPMModule``: ``linspace(beta_start, beta_end, num_steps)``), ``α_t = 1 − β_t`` and
``ᾱ_t = Π_{s ≤ t} α_s``:

- forward process (training): ``a_t = √ᾱ_t · a_0 + √(1 − ᾱ_t) · ε``, ``ε ~ N(0, I)``
  (:meth:`DDPMSchedule.add_noise`);
- reverse process (acting): from ``a_T ~ N(0, I)`` (zeros when deterministic),
  ``a_{t−1} = (a_t − β_t / √(1 − ᾱ_t) · ε_θ(a_t, s, t)) / √α_t + [t > 0] √β_t · z``
  (:meth:`DDPMModule.sample`).

The score network ``ε_θ`` reads ``cat[a_t, s, t]`` (the integer step as a float), as
TorchRL's. :class:`DiffusionActor` plays the role of TorchRL's ``DiffusionActor`` on every
backend (same arguments, keys and parameter names ``module.score_network.0.weight``, ...);
:func:`arrayrl.modules.adapt.as_diffusion_actor` turns TorchRL's into it (its score
network through the torch adapter, its float32 schedule buffers as they are).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from arrayrl._validation import count, hyperparameter
from arrayrl.backends import Backend, backend_of

from ._params import Params
from .actors import as_layer
from .dict_module import ModuleWrapper, NestedKey, as_key_list, read_key
from .layers import MLP, Layer, SiLU

__all__ = ["DDPMModule", "DDPMSchedule", "DiffusionActor"]

#: The interaction types of :class:`DiffusionActor` (tensordict's names, lower case).
INTERACTION_TYPES = ("random", "deterministic")
#: The schedule buffers of TorchRL's ``_DDPMModule`` (in its ``state_dict``).
_SCHEDULE_BUFFERS = ("betas", "alphas", "alphas_cumprod")


class DDPMSchedule:
    """The fixed DDPM schedule ``β_t``, ``α_t = 1 − β_t``, ``ᾱ_t = Π α_s`` and ``1 − ᾱ_t``.

    Parameters
    ----------
    num_steps : int, default 100
    beta_start, beta_end : float, default 1e-4, 0.02
        The linear schedule's ends, in ``(0, 1)``.

    The schedule is computed once in float64 NumPy (``1 − ᾱ_t`` as
    ``−expm1(Σ log1p(−β_s))``, accurate for ``ᾱ_t`` near 1) and converted to the dtype
    and backend of the arrays it is used with. :meth:`from_arrays` takes given values
    (TorchRL's float32 buffers).
    """

    def __init__(self, num_steps: int = 100, beta_start: float = 1e-4, beta_end: float = 0.02):
        num_steps = count("num_steps", num_steps)
        beta_start = hyperparameter(
            "beta_start", beta_start, low=0.0, high=1.0, low_open=True, high_open=True
        )
        beta_end = hyperparameter(
            "beta_end", beta_end, low=0.0, high=1.0, low_open=True, high_open=True
        )
        betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
        log_alphas_cumprod = np.cumsum(np.log1p(-betas))
        self._set(betas, 1.0 - betas, np.exp(log_alphas_cumprod), -np.expm1(log_alphas_cumprod))

    @classmethod
    def from_arrays(cls, betas: Any, alphas: Any, alphas_cumprod: Any) -> DDPMSchedule:
        """A schedule holding the given values exactly (any backend; 1-D, one length);
        ``1 − ᾱ_t`` is computed from ``ᾱ_t`` as given."""
        arrays = [np.asarray(_host(a), dtype=np.float64) for a in (betas, alphas, alphas_cumprod)]
        if any(a.ndim != 1 or a.shape != arrays[0].shape or a.size == 0 for a in arrays):
            raise ValueError(
                "DDPMSchedule.from_arrays needs three non-empty 1-D arrays of one length, got "
                f"shapes {[a.shape for a in arrays]}"
            )
        schedule = cls.__new__(cls)
        schedule._set(*arrays, 1.0 - arrays[2])
        return schedule

    def _set(
        self,
        betas: np.ndarray,
        alphas: np.ndarray,
        cumprod: np.ndarray,
        one_minus_cumprod: np.ndarray,
    ) -> None:
        self.betas, self.alphas = betas, alphas
        self.alphas_cumprod, self.one_minus_alphas_cumprod = cumprod, one_minus_cumprod
        self._cache: dict[tuple[Backend, Any], tuple[Any, Any]] = {}

    @property
    def num_steps(self) -> int:
        """``T``, the number of diffusion steps."""
        return int(self.betas.shape[0])

    def _on(self, like: Any) -> tuple[Any, Any]:
        """``(ᾱ, 1 − ᾱ)`` as arrays of ``like``'s backend, device and dtype (cached)."""
        backend = backend_of(like)
        key = (backend, like.dtype)
        if key not in self._cache:
            xp = backend.xp
            self._cache[key] = tuple(
                xp.astype(backend.from_numpy(a), like.dtype)
                for a in (self.alphas_cumprod, self.one_minus_alphas_cumprod)
            )
        return self._cache[key]

    def add_noise(self, x0: Any, noise: Any, t: Any) -> Any:
        """``√ᾱ_t · x0 + √(1 − ᾱ_t) · noise``, ``ᾱ_t`` picked per batch element.

        Parameters
        ----------
        x0, noise : arrays of shape ``(*B, A)``
        t : integer array of shape ``B`` with steps in ``[0, num_steps)``
        """
        xp = backend_of(x0, noise=noise, t=t).xp
        if tuple(noise.shape) != tuple(x0.shape):
            raise ValueError(
                f"add_noise: noise has shape {tuple(noise.shape)}, x0 {tuple(x0.shape)}"
            )
        if not xp.isdtype(t.dtype, "integral") or tuple(t.shape) != tuple(x0.shape[:-1]):
            raise ValueError(
                f"add_noise: t must be an integer array of shape {tuple(x0.shape[:-1])}, got "
                f"{t.dtype} of shape {tuple(t.shape)}"
            )
        alpha_bar, one_minus = (self._pick(a, t) for a in self._on(x0))
        return xp.sqrt(alpha_bar) * x0 + xp.sqrt(one_minus) * noise

    @staticmethod
    def _pick(values: Any, t: Any) -> Any:
        """``values[t]`` with a trailing unit axis (1-D ``take``, any shape of ``t``)."""
        xp = backend_of(values).xp
        flat = xp.take(values, xp.reshape(xp.astype(t, xp.int64), (-1,)), axis=0)
        return xp.reshape(flat, (*t.shape, 1))

    def step_coefficients(self, t: int) -> tuple[float, float, float]:
        """``(1 / √α_t, β_t / √(1 − ᾱ_t), √β_t)``: the reverse step's scalars."""
        beta = float(self.betas[t])
        return (
            1.0 / math.sqrt(float(self.alphas[t])),
            beta / math.sqrt(float(self.one_minus_alphas_cumprod[t])),
            math.sqrt(beta),
        )


class DDPMModule(Layer):
    """The score network ``ε_θ`` with its schedule (TorchRL's ``_DDPMModule``).

    ``params`` is ``{"score_network": <tree>}``. :meth:`predict_noise` is ``ε_θ`` on
    ``cat[a_t, s, t]``; :meth:`sample` runs the reverse chain; :meth:`add_noise` the
    forward process.
    """

    def __init__(self, score_network: Any, action_dim: int, schedule: DDPMSchedule) -> None:
        super().__init__()
        self.score_network = as_layer(score_network)
        self.action_dim = count("action_dim", action_dim)
        self.schedule = schedule

    @property
    def num_steps(self) -> int:
        return self.schedule.num_steps

    @property
    def params(self) -> Params:
        return {"score_network": self.score_network.params}

    @params.setter
    def params(self, tree: Params) -> None:
        self.score_network.params = tree["score_network"]

    def to(self, backend: str | Backend, device: Any = None) -> DDPMModule:
        self.score_network.to(backend, device)
        return self

    def add_noise(self, x0: Any, noise: Any, t: Any) -> Any:
        """:meth:`DDPMSchedule.add_noise`."""
        return self.schedule.add_noise(x0, noise, t)

    def predict_noise(self, params: Params, noisy_action: Any, observation: Any, t: Any) -> Any:
        """``ε_θ(cat[a_t, s, t])``; ``t`` integer of shape ``B`` (or a float ``(*B, 1)``)."""
        xp = backend_of(noisy_action, observation=observation).xp
        if xp.isdtype(t.dtype, "integral"):
            t = xp.astype(t, noisy_action.dtype)[..., None]
        inputs = xp.concat([noisy_action, observation, t], axis=-1)
        expected = getattr(self.score_network, "in_features", None)
        if expected is not None and inputs.shape[-1] != expected:
            raise ValueError(
                f"the score network reads {expected} features (action_dim + obs_dim + 1), "
                f"but cat[action, observation, t] has {inputs.shape[-1]}: the observation "
                f"has {observation.shape[-1]} features, the action {noisy_action.shape[-1]}"
            )
        return self.score_network.apply(params["score_network"], inputs)

    def sample(self, params: Params, observation: Any, *, rng: Any, deterministic: bool) -> Any:
        """The reverse chain from ``a_T`` (``N(0, I)`` from ``rng``; zeros when
        ``deterministic``, which adds no noise either) to ``a_0``, shape ``(*B, A)``.

        Draws as TorchRL's ``_DDPMModule.forward``: ``a_T``, then one normal draw per step
        (``t = 0``'s is drawn and not added).
        """
        if rng is None and not deterministic:
            raise ValueError("sampling the reverse chain needs a generator (rng=...)")
        xp = backend_of(observation).xp
        shape = (*observation.shape[:-1], self.action_dim)
        x = (
            xp.zeros(shape, dtype=observation.dtype, device=observation.device)
            if deterministic
            else rng.normal(shape, dtype=observation.dtype)
        )
        for t in reversed(range(self.num_steps)):
            step = xp.full_like(x[..., :1], float(t))
            eps = self.predict_noise(params, x, observation, step)
            inv_sqrt_alpha, eps_coeff, sigma = self.schedule.step_coefficients(t)
            x = inv_sqrt_alpha * (x - eps_coeff * eps)
            if not deterministic:
                z = rng.normal(shape, dtype=observation.dtype)
                if t > 0:
                    x = x + sigma * z
        return x

    def apply(
        self, params: Params, observation: Any, *, rng: Any = None, deterministic: bool = True
    ) -> Any:
        return self.sample(params, observation, rng=rng, deterministic=deterministic)


class DiffusionActor(ModuleWrapper):
    """A diffusion policy: reads ``in_keys`` (the observation), writes ``out_keys`` (the
    action) sampled by the reverse DDPM chain. TorchRL's ``DiffusionActor`` arguments.

    Parameters
    ----------
    action_dim : int
    obs_dim : int, optional
        Needed for the default score network (arrayrl has no lazy layers).
    score_network : Layer or torch.nn.Module, optional
        ``ε_θ`` on ``cat[a_t, s, t]`` (size ``action_dim + obs_dim + 1``) → ``action_dim``.
        Default: ``MLP(action_dim + obs_dim + 1, action_dim, [256, 256])`` with SiLU
        activations, TorchRL's default network.
    num_steps, beta_start, beta_end
        The schedule (:class:`DDPMSchedule`).
    in_keys, out_keys
        Default ``["observation"]`` and ``["action"]``.

    Keyword-only: ``spec`` (kept for TorchRL's signature, unused: the chain is not
    clipped, as TorchRL's); ``schedule`` (a :class:`DDPMSchedule` instead of the three
    schedule arguments); ``default_interaction_type`` (``"random"``, or
    ``"deterministic"``: start from zeros, add no noise); ``seed`` (the generator of
    :meth:`forward` when none is passed); ``backend``, ``device``, ``dtype`` (of the
    default network, drawn from ``seed``).

    Notes
    -----
    The schedule is computed in float64 and cast to the model's dtype, so a float64
    actor uses a float64 schedule; TorchRL's keeps float32 buffers through ``.double()``
    (conformance deviation ``torchrl-diffusion-float32-schedule``). The reverse chain is
    not clipped to ``spec``, as TorchRL's.
    """

    def __init__(
        self,
        action_dim: int,
        obs_dim: int | None = None,
        score_network: Any = None,
        num_steps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        in_keys: Sequence[NestedKey] | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        *,
        spec: Any = None,
        schedule: DDPMSchedule | None = None,
        default_interaction_type: str = "random",
        seed: int = 0,
        backend: str | Backend = "numpy",
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        action_dim = count("action_dim", action_dim)
        if score_network is None:
            if obs_dim is None:
                raise ValueError(
                    "DiffusionActor: give obs_dim (the default score network needs its input "
                    "size action_dim + obs_dim + 1) or a score_network"
                )
            size = action_dim + count("obs_dim", obs_dim) + 1
            score_network = MLP(
                size,
                action_dim,
                [256, 256],
                activation_class=SiLU,
                seed=seed,
                backend=backend,
                device=device,
                dtype=dtype,
            )
        if schedule is None:
            schedule = DDPMSchedule(num_steps, beta_start, beta_end)
        if default_interaction_type not in INTERACTION_TYPES:
            raise ValueError(
                f"default_interaction_type must be one of {INTERACTION_TYPES}, got "
                f"{default_interaction_type!r}"
            )
        self.module = DDPMModule(score_network, action_dim, schedule)
        self.in_keys = as_key_list(["observation"] if in_keys is None else in_keys, "in_keys")
        self.out_keys = as_key_list(["action"] if out_keys is None else out_keys, "out_keys")
        if len(self.in_keys) != 1 or len(self.out_keys) != 1:
            raise ValueError(
                f"DiffusionActor reads one key and writes one, got in_keys={self.in_keys}, "
                f"out_keys={self.out_keys}"
            )
        self.spec = spec
        self.default_interaction_type = default_interaction_type
        self.seed = count("seed", seed, minimum=0)
        self._generators: dict[Backend, Any] = {}

    @property
    def action_dim(self) -> int:
        return self.module.action_dim

    @property
    def num_steps(self) -> int:
        return self.module.num_steps

    def load_state_dict(self, state: Mapping[str, Any]) -> DiffusionActor:
        """Load parameters (:meth:`HasParams.load_state_dict`); a TorchRL
        ``DiffusionActor``'s state (its ``module.betas``, ``module.alphas`` and
        ``module.alphas_cumprod`` buffers included) is accepted, and its schedule, which
        must have :attr:`num_steps` steps, replaces this actor's."""
        buffers = [f"module.{name}" for name in _SCHEDULE_BUFFERS]
        present = [key for key in buffers if key in state]
        if not present:
            return super().load_state_dict(state)
        if len(present) != len(buffers):
            raise KeyError(f"DiffusionActor.load_state_dict: a schedule needs all of {buffers}")
        schedule = DDPMSchedule.from_arrays(*(state[key] for key in buffers))
        if schedule.num_steps != self.num_steps:
            raise ValueError(
                f"DiffusionActor.load_state_dict: the schedule has {schedule.num_steps} steps, "
                f"this actor {self.num_steps}"
            )
        super().load_state_dict({k: v for k, v in state.items() if k not in buffers})
        self.module.schedule = schedule
        return self

    def generator(self, backend: Backend) -> Any:
        """The actor's own generator on ``backend`` (from :attr:`seed`), made on first use."""
        from arrayrl.random import make_generator

        if backend not in self._generators:
            self._generators[backend] = make_generator(self.seed, backend)
        return self._generators[backend]

    def forward(
        self, batch: Any, params: Params, *, rng: Any = None, interaction_type: str | None = None
    ) -> Any:
        """Write the sampled action; ``rng`` (an :class:`arrayrl.random.Generator`)
        defaults to the actor's own, ``interaction_type`` to the default one."""
        mode = interaction_type or self.default_interaction_type
        if mode not in INTERACTION_TYPES:
            raise ValueError(f"interaction_type must be one of {INTERACTION_TYPES}, got {mode!r}")
        observation = read_key(batch, self.in_keys[0], type(self).__name__)
        rng = self.generator(backend_of(observation)) if rng is None else rng
        action = self.module.sample(
            params["module"], observation, rng=rng, deterministic=mode == "deterministic"
        )
        batch.set(self.out_keys[0], action)
        return batch

    def __repr__(self) -> str:
        return (
            f"DiffusionActor(action_dim={self.action_dim}, num_steps={self.num_steps}, "
            f"in_keys={self.in_keys}, out_keys={self.out_keys})"
        )


def _host(x: Any) -> np.ndarray:
    """``x`` as a NumPy array (a torch tensor detached and moved to the host)."""
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(backend_of(x).to_numpy(backend_of(x).stop_gradient(x)))
