"""Policy checkpoints: a trained actor's weights in ``policy.npz``, and the policy rebuilt
from them on NumPy or torch.

Every training run writes ``<out>/policy.npz`` (see :mod:`arrayrl.train.runner`), a
NumPy archive read with ``allow_pickle=False``:

- one array per entry of the actor's ``state_dict()``, under its dotted name;
- ``"__metadata__"``: UTF-8 JSON (as ``uint8``) with ``format``, ``format_version``,
  ``algorithm``, ``env_id``, ``config`` (every field of the run's config),
  ``observation_space`` and ``action_space``, ``arrayrl_version``, ``frames``,
  ``mean_return`` (``null`` before any finished episode), ``interrupted`` and
  ``exploration`` (how the policy explores).

A copy of the metadata is written beside it as ``policy.json``, for people to read; the
archive alone is what :func:`load_policy` reads.

:func:`load_policy` rebuilds the actor through the algorithm's own builder (the
:class:`PolicyRecipe` registered for ``algorithm``), loads the weights and returns a
:class:`Policy`, a callable from observations to actions. By default the policy explores
as it did in training (SAC and PPO: a draw from the policy's distribution; TD3: the
deterministic action plus its Gaussian exploration noise, clipped to the box);
``deterministic=True`` acts with the deterministic action instead.

>>> from arrayrl.train.checkpoint import load_policy            # doctest: +SKIP
>>> policy = load_policy("runs/sac-Pendulum-v1-0/policy.npz")   # doctest: +SKIP
>>> policy(env.reset(seed=0)[0])                                 # doctest: +SKIP
array([0.73], dtype=float32)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METADATA_KEY",
    "POLICY_FILE",
    "Policy",
    "PolicyRecipe",
    "load_policy",
    "policy_recipe",
    "read_policy_metadata",
    "register_policy",
    "save_policy",
]

#: The checkpoint's file name in a run's output folder.
POLICY_FILE = "policy.npz"
#: The archive entry holding the metadata (UTF-8 JSON as ``uint8``).
METADATA_KEY = "__metadata__"
#: ``format`` of the metadata, and the newest ``format_version`` this code reads.
FORMAT = "arrayrl.policy"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PolicyRecipe:
    """How one algorithm's policy is rebuilt from a checkpoint and how it explores.

    Parameters
    ----------
    make_config : callable
        ``make_config(env_id, **fields) -> config``: the algorithm's config from the
        fields saved in the checkpoint (``make_sac_config``, ...).
    build_actor : callable
        ``build_actor(observation_space, action_space, config) -> actor``: a fresh actor
        of the trained layout (its weights are then overwritten), built by the
        algorithm's own builder.
    exploration : str
        How the policy explores, in words (written to the metadata, said by
        ``arrayrl collect``).
    sample : bool, default True
        Exploring draws from the actor's distribution (``interaction_type="random"``);
        ``False`` for actors whose action is deterministic (TD3, a Q-value actor).
    noise : callable, optional
        ``noise(action, action_space, config, rng) -> action``: exploration added on top
        of the actor's action (NumPy ``[N, *A]``; ``rng`` a ``numpy.random.Generator``),
        e.g. TD3's Gaussian noise or DQN's ε-greedy choice.
    """

    make_config: Callable[..., Any]
    build_actor: Callable[[Any, Any, Any], Any]
    exploration: str
    sample: bool = True
    noise: Callable[[np.ndarray, Any, Any, np.random.Generator], np.ndarray] | None = None


def _ppo_recipe() -> PolicyRecipe:
    from .ppo import build_actor_critic, make_config

    return PolicyRecipe(
        make_config=make_config,
        build_actor=lambda obs, act, config: build_actor_critic(obs, act, config)[0],
        exploration="a draw from the policy's distribution (TanhNormal or categorical)",
    )


def _sac_recipe() -> PolicyRecipe:
    from .sac import build_sac_loss, make_sac_config

    return PolicyRecipe(
        make_config=make_sac_config,
        build_actor=lambda obs, act, config: build_sac_loss(obs, act, config).actor_network,
        exploration="a draw from the TanhNormal policy",
    )


def _td3_recipe() -> PolicyRecipe:
    from .td3 import build_td3_loss, exploration_noise, make_td3_config

    def noise(action: np.ndarray, space: Any, config: Any, rng: np.random.Generator) -> Any:
        low, high = (np.asarray(b, np.float32) for b in (space.low, space.high))
        return exploration_noise(action, low, high, config.exploration_noise, rng)

    return PolicyRecipe(
        make_config=make_td3_config,
        build_actor=lambda obs, act, config: build_td3_loss(obs, act, config).actor_network,
        exploration="the deterministic action plus Gaussian noise "
        "(exploration_noise x the half-width), clipped to the box",
        sample=False,
        noise=noise,
    )


def _dqn_recipe() -> PolicyRecipe:
    from .dqn import build_dqn_loss, epsilon_greedy, make_dqn_config

    def noise(action: np.ndarray, space: Any, config: Any, rng: np.random.Generator) -> Any:
        return epsilon_greedy(action, int(space.n), config.epsilon_end, rng)

    return PolicyRecipe(
        make_config=make_dqn_config,
        build_actor=lambda obs, act, config: build_dqn_loss(obs, act, config).value_network,
        exploration="epsilon-greedy with epsilon = epsilon_end",
        sample=False,
        noise=noise,
    )


def _offline_recipe(algorithm: str) -> Callable[[], PolicyRecipe]:
    def recipe() -> PolicyRecipe:
        from .offline import make_offline_config
        from .sac import build_tanh_normal_actor

        return PolicyRecipe(
            make_config=lambda env_id, **fields: make_offline_config(
                algorithm, env_id=env_id, **fields
            ),
            build_actor=build_tanh_normal_actor,
            exploration="a draw from the TanhNormal policy",
        )

    return recipe


def _bc_recipe() -> PolicyRecipe:
    from .offline import build_bc_actor, make_offline_config

    return PolicyRecipe(
        make_config=lambda env_id, **fields: make_offline_config("bc", env_id=env_id, **fields),
        build_actor=build_bc_actor,
        exploration="the deterministic action (behaviour cloning learns no exploration)",
        sample=False,
    )


def _diffusion_bc_recipe() -> PolicyRecipe:
    from .offline import build_diffusion_actor, make_offline_config

    return PolicyRecipe(
        make_config=lambda env_id, **fields: make_offline_config(
            "diffusion-bc", env_id=env_id, **fields
        ),
        build_actor=build_diffusion_actor,
        exploration="a draw from the reverse diffusion chain, from noise, with noise at each step",
    )


def _marl_recipe(algorithm: str) -> Callable[[], PolicyRecipe]:
    """MAPPO / IPPO (:mod:`arrayrl.train.mappo`) and QMIX / VDN (:mod:`arrayrl.train.qmix`):
    the agents' policy on one env's ``(agents, obs)`` observations."""

    def recipe() -> PolicyRecipe:
        if algorithm in ("mappo", "ippo"):
            from .mappo import mappo_policy_recipe

            return mappo_policy_recipe(algorithm)
        from .qmix import qmix_policy_recipe

        return qmix_policy_recipe(algorithm)

    return recipe


_RECIPES: dict[str, PolicyRecipe | Callable[[], PolicyRecipe]] = {
    "ppo": _ppo_recipe,
    "sac": _sac_recipe,
    "td3": _td3_recipe,
    "dqn": _dqn_recipe,
    "iql": _offline_recipe("iql"),
    "cql": _offline_recipe("cql"),
    "bc": _bc_recipe,
    "diffusion-bc": _diffusion_bc_recipe,
    **{name: _marl_recipe(name) for name in ("mappo", "ippo", "qmix", "vdn")},
}


def register_policy(algorithm: str, recipe: PolicyRecipe | Callable[[], PolicyRecipe]) -> None:
    """Make checkpoints of ``algorithm`` loadable: ``recipe`` (or a function returning
    it, called on first use, so a trainer module can register without importing its
    builders' dependencies) rebuilds its policy."""
    if not isinstance(algorithm, str) or not algorithm:
        raise TypeError(f"algorithm must be a non-empty string, got {algorithm!r}")
    if not (isinstance(recipe, PolicyRecipe) or callable(recipe)):
        raise TypeError(f"recipe must be a PolicyRecipe or a function, got {recipe!r}")
    _RECIPES[algorithm] = recipe


def policy_recipe(algorithm: str) -> PolicyRecipe:
    """The registered recipe of ``algorithm``; ``ValueError`` naming the known ones.

    An unregistered name is looked up once in ``arrayrl.train.<algorithm>``, which may
    register it when imported.
    """
    if algorithm not in _RECIPES and algorithm.isidentifier() and not algorithm.startswith("_"):
        import importlib

        module = f"{__package__}.{algorithm}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # the module exists, but not what it imports
                raise
    recipe = _RECIPES.get(algorithm)
    if recipe is None:
        raise ValueError(
            f"no policy recipe for algorithm {algorithm!r}; arrayrl rebuilds the policies "
            f"of {', '.join(sorted(_RECIPES))}"
        )
    if not isinstance(recipe, PolicyRecipe):
        recipe = _RECIPES[algorithm] = recipe()
    return recipe


# -- spaces and config as JSON ------------------------------------------------------------
def space_to_json(space: Any) -> dict[str, Any]:
    """A Gymnasium ``Box`` or ``Discrete`` space as a JSON-able dict."""
    kind = type(space).__name__
    if kind == "Box":
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": str(np.dtype(space.dtype)),
            "low": np.asarray(space.low, np.float64).tolist(),
            "high": np.asarray(space.high, np.float64).tolist(),
        }
    if kind == "Discrete":
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise ValueError(f"cannot save a policy for the space {space}: Box or Discrete only")


def space_from_json(data: Mapping[str, Any]) -> Any:
    """The Gymnasium space :func:`space_to_json` wrote."""
    from gymnasium import spaces

    if data["type"] == "Box":
        dtype = np.dtype(data["dtype"])
        low, high = (np.asarray(data[k], np.float64).astype(dtype) for k in ("low", "high"))
        return spaces.Box(low=low, high=high, shape=tuple(data["shape"]), dtype=dtype)
    if data["type"] == "Discrete":
        return spaces.Discrete(int(data["n"]), start=int(data.get("start", 0)))
    raise ValueError(f"unknown space type {data['type']!r} in the checkpoint")


def _config_fields(config: Any) -> dict[str, Any]:
    """Every init field of a dataclass config, JSON-able (tuples as lists)."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _host(leaf: Any) -> np.ndarray:
    """A parameter as a NumPy array (detached, on the host)."""
    from arrayrl.backends import backend_of

    return np.ascontiguousarray(backend_of(leaf).to_numpy(leaf))


# -- save -----------------------------------------------------------------------------------
def save_policy(
    path: str | os.PathLike[str],
    actor: Any,
    config: Any,
    observation_space: Any,
    action_space: Any,
    *,
    frames: int = 0,
    mean_return: float | None = None,
    interrupted: bool = False,
) -> Path:
    """Write ``actor``'s weights and the metadata to ``path`` (``.npz``) and
    ``policy.json``-style metadata beside it (``path`` with suffix ``.json``).

    Parameters
    ----------
    path : path
        The archive to write (replaced atomically: a reader never sees half a file).
    actor : arrayrl module
        The policy being trained (``state_dict()``: its parameters by dotted name).
    config : dataclass
        The run's config: ``algorithm`` (a registered recipe), ``env_id`` and fields.
    observation_space, action_space : gymnasium.spaces.Space
        One environment's spaces (``Box`` or ``Discrete``).
    frames : int
        Environment frames of training behind these weights.
    mean_return : float, optional
        The recent mean return (``nan`` and ``None`` are saved as ``null``).
    interrupted : bool
        Whether Ctrl-C stopped the run.

    Returns
    -------
    Path
        ``path``.
    """
    from arrayrl import __version__

    path = Path(path)
    algorithm = getattr(config, "algorithm", None)
    if not isinstance(algorithm, str):
        raise TypeError(f"config has no algorithm name: {type(config).__name__}")
    try:
        exploration: str | None = policy_recipe(algorithm).exploration
    except ValueError:  # saved all the same; loading needs a recipe registered
        exploration = None
    arrays = {name: _host(leaf) for name, leaf in actor.state_dict().items()}
    if METADATA_KEY in arrays:
        raise ValueError(f"the actor has a parameter named {METADATA_KEY!r}")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "algorithm": algorithm,
        "env_id": config.env_id,
        "config": _config_fields(config),
        "observation_space": space_to_json(observation_space),
        "action_space": space_to_json(action_space),
        "arrayrl_version": __version__,
        "frames": int(frames),
        "mean_return": _finite_or_none(mean_return),
        "interrupted": bool(interrupted),
        "exploration": exploration,
    }
    text = json.dumps(metadata, indent=1)
    arrays[METADATA_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, lambda file: np.savez(file, **arrays))
    _write_atomically(path.with_suffix(".json"), lambda file: file.write(text.encode("utf-8")))
    return path


def _write_atomically(path: Path, write: Callable[[Any], Any]) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it over."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# -- load -----------------------------------------------------------------------------------
def _checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path``, or ``path/policy.npz`` for a run's folder; ``FileNotFoundError``."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / POLICY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no policy checkpoint at {path}; training runs write <out>/{POLICY_FILE} "
            "(arrayrl train sac --out DIR, ...)"
        )
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and the weights of a checkpoint; ``ValueError`` for another file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not an arrayrl policy checkpoint (.npz): {error}") from None
    if METADATA_KEY not in arrays:
        raise ValueError(f"{path} is not an arrayrl policy checkpoint: no {METADATA_KEY!r}")
    try:
        metadata = json.loads(arrays.pop(METADATA_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable metadata: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path} is not an arrayrl policy checkpoint (format)")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version!r}; this arrayrl reads up to "
            f"{FORMAT_VERSION}: upgrade arrayrl"
        )
    missing = [k for k in _REQUIRED if k not in metadata]
    if missing:
        raise ValueError(f"{path}: the checkpoint's metadata lacks {missing}")
    return metadata, arrays


#: What a checkpoint's metadata must hold to be loaded.
_REQUIRED = ("algorithm", "env_id", "config", "observation_space", "action_space")


def read_policy_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint (``path`` or a run folder holding ``policy.npz``)."""
    return _read(_checkpoint_file(path))[0]


def _rebuild_config(
    recipe: PolicyRecipe, metadata: Mapping[str, Any], backend: str, device: Any
) -> Any:
    """The run's config with ``backend`` and ``device`` replaced."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in metadata["config"].items()}
    fields.pop("env_id", None)
    fields.update(backend=backend, device=device)
    try:
        return recipe.make_config(metadata["env_id"], **fields)
    except TypeError as error:
        raise ValueError(
            f"the checkpoint's {metadata['algorithm']} settings do not fit this arrayrl "
            f"version ({metadata.get('arrayrl_version')} wrote it): {error}"
        ) from None


def load_policy(
    path: str | os.PathLike[str],
    *,
    backend: str = "numpy",
    device: Any = None,
    deterministic: bool = False,
    seed: int = 0,
) -> Policy:
    """The policy saved at ``path``, rebuilt on ``backend``.

    Parameters
    ----------
    path : path
        A ``policy.npz`` (or a run's output folder holding one).
    backend : {"numpy", "torch", ...}, default "numpy"
        Where the actor computes (NumPy needs no torch and is fast for small networks).
    device : optional
        The backend's device (``"cuda"`` on torch, ...).
    deterministic : bool, default False
        Act with the deterministic action. By default the policy explores as in
        training: the recipe's ``exploration`` (a draw from the distribution for SAC and
        PPO, Gaussian noise for TD3), the behaviour a dataset collected from it records.
    seed : int, default 0
        Seeds the draws and the exploration noise.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a checkpoint, a newer format, or an algorithm without a recipe.
    """
    from arrayrl.backends import get_backend

    file = _checkpoint_file(path)
    metadata, weights = _read(file)
    recipe = policy_recipe(metadata["algorithm"])
    observation_space = space_from_json(metadata["observation_space"])
    action_space = space_from_json(metadata["action_space"])
    target = get_backend(backend, device)
    config = _rebuild_config(recipe, metadata, backend, device)
    actor = recipe.build_actor(observation_space, action_space, config)
    try:
        actor.load_state_dict({name: target.from_numpy(w) for name, w in weights.items()})
    except (KeyError, ValueError) as error:
        raise ValueError(f"{file}: the weights do not fit the rebuilt actor: {error}") from None
    return Policy(
        actor, recipe, config, metadata, observation_space, action_space,
        deterministic=deterministic, seed=seed,
    )  # fmt: skip


class Policy:
    """A loaded policy: ``policy(observation) -> action`` (NumPy in, NumPy out).

    ``observation`` is one observation (``[*obs]``, gives one action) or a batch
    (``[N, *obs]``, gives ``[N, *A]``). Attributes: ``actor`` (the arrayrl module),
    ``config``, ``metadata``, ``algorithm``, ``env_id``, ``observation_space``,
    ``action_space``, ``deterministic`` and ``exploration`` (what the policy does, in
    words).
    """

    def __init__(
        self,
        actor: Any,
        recipe: PolicyRecipe,
        config: Any,
        metadata: Mapping[str, Any],
        observation_space: Any,
        action_space: Any,
        *,
        deterministic: bool = False,
        seed: int = 0,
    ) -> None:
        from arrayrl.random import make_generator

        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.actor, self.recipe, self.config = actor, recipe, config
        self.metadata = dict(metadata)
        self.algorithm, self.env_id = metadata["algorithm"], metadata["env_id"]
        self.observation_space, self.action_space = observation_space, action_space
        self.deterministic = bool(deterministic)
        self.backend = actor.backend
        self._dtype = _host(actor.parameters()[0]).dtype
        self._rng = make_generator(int(seed), self.backend)
        self._noise_rng = np.random.default_rng([int(seed), 7])

    @property
    def exploration(self) -> str:
        """What the policy does when it acts, in words."""
        return "the deterministic action" if self.deterministic else self.recipe.exploration

    def __call__(self, observation: Any) -> np.ndarray:
        """The action(s) for ``observation`` (one, or a batch)."""
        from arrayrl.data import ArrayDict
        from arrayrl.modules import ProbabilisticActor
        from arrayrl.modules.diffusion import DiffusionActor

        obs = np.asarray(observation)
        single = obs.ndim == len(self.observation_space.shape)
        batch = obs[None] if single else obs
        if batch.dtype.kind == "f":
            batch = batch.astype(self._dtype, copy=False)
        data = ArrayDict(
            {"observation": self.backend.from_numpy(np.ascontiguousarray(batch))}, [len(batch)]
        )
        explore = not self.deterministic
        with self.backend.no_grad():
            if isinstance(self.actor, (ProbabilisticActor, DiffusionActor)):
                how = "random" if explore and self.recipe.sample else "deterministic"
                self.actor(data, rng=self._rng, interaction_type=how)
            else:
                self.actor(data)
        action = np.asarray(self.backend.to_numpy(data.get("action")))
        if explore and self.recipe.noise is not None:
            action = self.recipe.noise(action, self.action_space, self.config, self._noise_rng)
        action = action.astype(self.action_space.dtype, copy=False)
        return action[0] if single else action

    def __repr__(self) -> str:
        return (
            f"Policy({self.algorithm} on {self.env_id}, {self.metadata.get('frames', 0):,} "
            f"frames, {self.exploration}, backend={self.backend.name})"
        )
