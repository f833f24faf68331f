"""Offline datasets in Minari's format (the Farama Foundation's standard), read and written
with the ``minari`` library (the ``offline`` extra: ``pip install 'arrayrl[offline]'``).

- :func:`record_episodes` runs a policy (any callable from an observation to an action,
  e.g. :func:`arrayrl.train.checkpoint.load_policy`'s) in a Gymnasium environment;
- :func:`write_minari` stores :class:`Episode` objects as a Minari dataset with Minari's
  own writer (``minari.create_dataset_from_buffers``, HDF5), under a Minari root;
- :func:`load_minari` reads a Minari dataset (a local id, a directory, or an id fetched
  from Minari's servers with ``download=True``) with Minari's own reader into one
  :class:`~arrayrl.data.ArrayDict` of transitions in TorchRL's key layout, that of
  ``torchrl.data.datasets.MinariExperienceReplay``'s storage (``N`` transitions)::

      episode                                       [N]       int64 (the episode id)
      observation, ("next", "observation")          [N, *O]   as stored
      action                                        [N, *A]   as stored
      ("next", "reward")                            [N, 1]    as stored (float64 usually)
      ("next", "terminated"), ("next", "truncated"),
      ("next", "done") = terminated | truncated     [N, 1]    bool
      ("info", k), ("next", "info", k)              [N, ...]  numeric infos, if recorded

  ``observation[t]`` and ``("next", "observation")[t]`` are the episode's observations
  ``t`` and ``t + 1``: the last transition of an episode holds its real last observation.
- :func:`sample_transitions` draws a uniform minibatch (with replacement) from them.

The Minari root is ``root`` when given, else ``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets`` (Minari's own rule); a dataset ``<id>`` lives in
``<root>/<id>/data``. Dataset ids are Minari's: ``[namespace/]name-v<version>``.

Importing this module imports neither minari nor torch nor Gymnasium.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .arraydict import ArrayDict

__all__ = [
    "Episode",
    "dataset_directory",
    "load_minari",
    "minari_root",
    "record_episodes",
    "sample_transitions",
    "write_minari",
]

_INSTALL = "install the offline extra: pip install 'arrayrl[offline]'"
_ID_FORM = "[namespace/]name-v<version>, e.g. pendulum/sac-v0"


def _minari() -> Any:
    """The ``minari`` module with its HDF5 storage; ``ImportError`` saying what to install."""
    try:
        import minari
        from minari.dataset._storages import get_minari_storage

        get_minari_storage("hdf5")  # h5py and Pillow, which Minari's HDF5 storage needs
    except ImportError as error:
        raise ImportError(
            f"Minari datasets need minari, h5py and Pillow ({error}): {_INSTALL}"
        ) from None
    return minari


@dataclasses.dataclass(frozen=True)
class Episode:
    """One recorded episode of ``T`` steps (NumPy arrays).

    Attributes
    ----------
    observations : array ``[T + 1, *O]``
        From the reset's observation to the last one.
    actions : array ``[T, *A]``
    rewards : array ``[T]``
    terminations, truncations : bool arrays ``[T]``
    seed : int, optional
        The seed the episode was reset with.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        """The undiscounted return."""
        return float(np.sum(self.rewards, dtype=np.float64))


# -- the Minari root and dataset ids ------------------------------------------------------
def minari_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Minari datasets directory: ``root``, else ``$MINARI_DATASETS_PATH``, else
    ``~/.minari/datasets``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".minari" / "datasets"


def _check_id(dataset_id: Any) -> str:
    """``dataset_id`` if it is a Minari id (``ValueError`` / ``TypeError`` otherwise)."""
    from minari.dataset.minari_dataset import parse_dataset_id

    if not isinstance(dataset_id, str):
        raise TypeError(f"a dataset id is a string ({_ID_FORM}), got {dataset_id!r}")
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: Minari's parser on an id without -v<N>
        why = f"invalid Minari dataset id {dataset_id!r}: expected {_ID_FORM}"
        raise ValueError(why) from None
    return dataset_id


def dataset_directory(dataset_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Where dataset ``dataset_id`` lives: ``<root>/<dataset_id>`` (see :func:`minari_root`)."""
    return minari_root(root) / dataset_id


@contextlib.contextmanager
def _datasets_path(root: Path) -> Iterator[None]:
    """Minari reads its root from ``MINARI_DATASETS_PATH`` when called: set it to ``root``
    for the block, and put the previous value back after."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


# -- record -------------------------------------------------------------------------------------
def _make_env(env: Any, max_steps: int | None) -> tuple[Any, bool]:
    """A Gymnasium env for ``env`` (an id or an env) that ends its episodes: the env's own
    time limit, or ``max_steps``; ``(env, made here)``."""
    import gymnasium

    if isinstance(env, str):
        kwargs = {} if max_steps is None else {"max_episode_steps": max_steps}
        try:
            made = gymnasium.make(env, **kwargs)
        except (gymnasium.error.Error, ImportError) as error:
            raise ValueError(f"cannot make Gymnasium env {env!r}: {error}") from None
        spec_limit = made.spec.max_episode_steps if made.spec is not None else None
        if max_steps is None and spec_limit is None:
            made.close()
            raise ValueError(f"{env} has no time limit: pass max_steps (--steps) to end episodes")
        return made, True
    return env, False


def record_episodes(
    env: Any,
    policy: Callable[[Any], Any],
    episodes: int,
    *,
    max_steps: int | None = None,
    seed: int = 0,
    on_step: Callable[[int, list[Episode]], Any] | None = None,
) -> list[Episode]:
    """Run ``policy`` for ``episodes`` episodes; episode ``k`` is reset with ``seed + k``.

    Parameters
    ----------
    env : str or gymnasium.Env
        A Gymnasium id (made here, and closed after) or an environment.
    policy : callable
        ``policy(observation) -> action`` for one observation.
    episodes : int
        How many episodes (>= 1).
    max_steps : int, optional
        Cap episodes at this many steps (marked truncated): the id is made with
        ``max_episode_steps=max_steps``, or an env's episode is cut after ``max_steps``.
        Required for an id without a time limit.
    seed : int
        Seeds the resets.
    on_step : callable, optional
        ``on_step(frames, finished_episodes)`` after every step (a progress bar).
    """
    from arrayrl._validation import count

    episodes = count("episodes", episodes)
    if max_steps is not None:
        max_steps = count("max_steps", max_steps)
    env, made = _make_env(env, max_steps)
    recorded: list[Episode] = []
    frames = 0
    try:
        for k in range(episodes):
            observation, _ = env.reset(seed=seed + k)
            columns: dict[str, list[Any]] = {"obs": [observation], "act": [], "rew": []}
            ends: dict[str, list[bool]] = {"term": [], "trunc": []}
            while True:
                action = policy(observation)
                observation, reward, terminated, truncated, _ = env.step(action)
                truncated = bool(truncated) or (
                    max_steps is not None and len(columns["act"]) + 1 >= max_steps
                )
                columns["obs"].append(observation)
                columns["act"].append(np.asarray(action))
                columns["rew"].append(reward)
                ends["term"].append(bool(terminated))
                ends["trunc"].append(truncated)
                frames += 1
                if terminated or truncated:
                    recorded.append(_episode(columns, ends, seed + k))
                if on_step is not None:
                    on_step(frames, recorded)
                if terminated or truncated:
                    break
    finally:
        if made:
            env.close()
    return recorded


def _episode(
    columns: Mapping[str, list[Any]], ends: Mapping[str, list[bool]], seed: int
) -> Episode:
    """An :class:`Episode` from the per-step lists."""
    return Episode(
        observations=np.stack([np.asarray(o) for o in columns["obs"]]),
        actions=np.stack(columns["act"]),
        rewards=np.asarray(columns["rew"], dtype=np.float64),
        terminations=np.asarray(ends["term"], dtype=bool),
        truncations=np.asarray(ends["trunc"], dtype=bool),
        seed=seed,
    )


# -- write --------------------------------------------------------------------------------------
#: Minari's reminders for optional metadata left unset; recording without them is fine.
_UNSET_METADATA = (
    r"`(code_permalink|author|author_email|description|eval_env|algorithm_name)` is set to None"
)


def write_minari(
    dataset_id: str,
    episodes: Sequence[Episode],
    env: Any,
    *,
    root: str | os.PathLike[str] | None = None,
    algorithm_name: str | None = None,
    author: str | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Store ``episodes`` as Minari dataset ``dataset_id`` with Minari's writer (HDF5).

    Parameters
    ----------
    dataset_id : str
        ``[namespace/]name-v<version>``.
    episodes : sequence of Episode
        At least one.
    env : str, gymnasium.Env or EnvSpec
        The environment that produced them (its spec and spaces go into the metadata;
        it is also the dataset's evaluation environment).
    root : path, optional
        The Minari root (see :func:`minari_root`).
    algorithm_name, author, description : str, optional
        Metadata.
    overwrite : bool
        Replace an existing dataset of that id (else ``FileExistsError``).

    Returns
    -------
    Path
        The dataset's directory, ``<root>/<dataset_id>``.
    """
    minari = _minari()
    from minari.data_collector import EpisodeBuffer

    dataset_id = _check_id(dataset_id)
    if not episodes:
        raise ValueError("no episodes to write")
    root = minari_root(root)
    directory = root / dataset_id
    if directory.exists():
        if not overwrite:
            raise FileExistsError(
                f"a Minari dataset {dataset_id!r} exists at {directory}; choose another id "
                "(a new version: -v1, ...) or overwrite it"
            )
        shutil.rmtree(directory)
    buffers = [
        EpisodeBuffer(
            id=k,
            seed=episode.seed,
            observations=episode.observations,
            actions=episode.actions,
            rewards=episode.rewards,
            terminations=episode.terminations,
            truncations=episode.truncations,
        )
        for k, episode in enumerate(episodes)
    ]
    root.mkdir(parents=True, exist_ok=True)
    with _datasets_path(root), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNSET_METADATA, category=UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env, eval_env=env, algorithm_name=algorithm_name,
            author=author, description=description, data_format="hdf5",
        )  # fmt: skip
    return directory


# -- load ---------------------------------------------------------------------------------------
def _is_path(text: str) -> bool:
    """Whether ``text`` is written as a path (absolute, ``./``, ``../`` or ``~``)."""
    return Path(text).is_absolute() or text.startswith(("./", "../", "~", ".\\", "..\\"))


def _data_directory(
    dataset: str | os.PathLike[str], root: str | os.PathLike[str] | None, download: bool
) -> Path:
    """The ``data`` directory of ``dataset`` (a path or an id), downloaded if asked."""
    minari = _minari()
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and _is_path(dataset)):
        path = Path(dataset).expanduser()
        for candidate in (path / "data", path):
            if (candidate / "metadata.json").is_file():
                return candidate
        raise FileNotFoundError(f"no Minari dataset at {path} (no data/metadata.json there)")
    remote = isinstance(dataset, str) and "://" in dataset
    local_id = _check_id(dataset.split("://", 1)[1].split("/", 1)[1] if remote else dataset)
    base = minari_root(root)
    data = base / local_id / "data"
    if (data / "metadata.json").is_file():
        return data
    if not download:
        raise FileNotFoundError(
            f"no Minari dataset {local_id!r} at {data.parent} (the Minari root is "
            f"{base}: the root argument, else $MINARI_DATASETS_PATH, else "
            "~/.minari/datasets); record one with arrayrl collect --dataset-id "
            f"{local_id}, or pass download=True to fetch it from Minari's servers"
        )
    base.mkdir(parents=True, exist_ok=True)
    with _datasets_path(base):
        try:
            minari.download_dataset(dataset)
        except ImportError as error:
            raise ImportError(
                f"downloading Minari datasets needs Minari's remote extras ({error}): "
                "pip install 'minari[gcs,hf]'"
            ) from None
    return data


def _tree_leaves(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """The ``(key, array)`` leaves of a Minari value: dicts by key, tuples as
    ``"_index_<i>"`` (the HDF5 group names)."""
    if isinstance(tree, Mapping):
        for name, value in tree.items():
            yield from _tree_leaves(value, (*prefix, str(name)))
    elif isinstance(tree, tuple):
        for i, value in enumerate(tree):
            yield from _tree_leaves(value, (*prefix, f"_index_{i}"))
    else:
        yield prefix, np.asarray(tree)


def _episode_columns(episode: Any) -> dict[tuple[str, ...], np.ndarray]:
    """One Minari episode's transitions by nested key (TorchRL's layout)."""
    steps = len(episode.rewards)
    columns: dict[tuple[str, ...], np.ndarray] = {
        ("episode",): np.full(steps, int(episode.id), dtype=np.int64)
    }
    for key, obs in _tree_leaves(episode.observations, ("observation",)):
        if len(obs) != steps + 1:
            raise ValueError(
                f"episode {episode.id}: {len(obs)} observations for {steps} steps "
                "(Minari stores T + 1)"
            )
        columns[key], columns[("next", *key)] = obs[:-1], obs[1:]
    for key, action in _tree_leaves(episode.actions, ("action",)):
        columns[key] = action
    columns[("next", "reward")] = np.asarray(episode.rewards)[:, None]
    terminated = np.asarray(episode.terminations, dtype=bool)[:, None]
    truncated = np.asarray(episode.truncations, dtype=bool)[:, None]
    columns[("next", "terminated")], columns[("next", "truncated")] = terminated, truncated
    columns[("next", "done")] = terminated | truncated
    for key, info in _tree_leaves(episode.infos or {}, ("info",)):
        if info.dtype.kind not in "biuf" or info.ndim == 0:
            continue  # text and other non-array infos have no array form
        if len(info) == steps:  # no entry at reset: a zero first, as TorchRL pads
            info = np.concatenate([np.zeros_like(info[:1]), info])
        if len(info) == steps + 1:
            columns[key], columns[("next", *key)] = info[:-1], info[1:]
    return columns


def _nest(columns: Mapping[tuple[str, ...], np.ndarray]) -> dict[str, Any]:
    """``{("next", "reward"): x}`` → ``{"next": {"reward": x}}``."""
    tree: dict[str, Any] = {}
    for key, value in columns.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return tree


def load_minari(
    dataset: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    backend: Any = "numpy",
    device: Any = None,
) -> ArrayDict:
    """Every transition of a Minari dataset as one ``ArrayDict`` (TorchRL's layout,
    see the module docstring), read with Minari's reader.

    Parameters
    ----------
    dataset : str or path
        A dataset id (``[namespace/]name-v<version>``) looked up under the Minari root,
        or a dataset directory (a path: absolute, ``./``, ``../``, ``~``; the directory
        holding ``data/`` or the ``data`` directory itself).
    root : path, optional
        The Minari root for ids (see :func:`minari_root`).
    download : bool, default False
        Fetch an id missing locally from Minari's servers into the root (needs the
        network and Minari's remote extras). Without it a missing id is a
        ``FileNotFoundError`` naming where it was looked for.
    backend, device
        Where the arrays go (``"numpy"``, ``"torch"``, ...).
    """
    from arrayrl.backends import get_backend

    minari = _minari()
    data = _data_directory(dataset, root, download)
    episodes = [_episode_columns(e) for e in minari.MinariDataset(data).iterate_episodes()]
    if not episodes:
        raise ValueError(f"the Minari dataset at {data.parent} has no episodes")
    keys = list(episodes[0])
    for episode in episodes[1:]:
        if list(episode) != keys:
            raise ValueError(
                f"the episodes of {data.parent} hold different entries: {keys} and {list(episode)}"
            )
    columns = {key: np.concatenate([e[key] for e in episodes]) for key in keys}
    size = len(columns[("episode",)])
    out = ArrayDict(_nest(columns), [size])
    target = get_backend(backend, device)
    return out if target.name == "numpy" else out.to(target)


def dataset_env_id(
    dataset: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> str | None:
    """The Gymnasium id of the environment a local Minari dataset (id or directory, as
    :func:`load_minari` takes) records, or ``None`` if it records none."""
    data = _data_directory(dataset, root, download=False)
    spec = _minari().MinariDataset(data).env_spec
    return None if spec is None else spec.id


def sample_transitions(
    transitions: ArrayDict, batch_size: int, rng: np.random.Generator
) -> ArrayDict:
    """``batch_size`` transitions drawn uniformly with replacement with ``rng`` (a
    ``numpy.random.Generator``), on the transitions' backend."""
    from arrayrl._validation import count

    batch_size = count("batch_size", batch_size)
    size = transitions.batch_size[0] if transitions.batch_size else 0
    if size == 0:
        raise ValueError("cannot sample from no transitions")
    index = rng.integers(0, size, size=batch_size)
    return transitions[transitions.backend.from_numpy(index)]
