"""What every training job shares: the run loop with its progress bar, the learning curve
written periodically and at exit, Ctrl-C handling, the result, the device check and the
torch thread setting.

A trainer (``train_ppo``, ``train_sac``, ``train_mappo``, ...) supplies a config and a
:class:`Trainer`: an object whose ``collector`` counts frames and finished episodes and
whose ``iteration(i)`` runs one iteration (collect and learn) and returns the iteration's
logged terms. :func:`run_training` does the rest, identically for every algorithm:

1. make the vector environment (``config.env_id`` × ``config.num_envs``, or the one
   ``make_env(config)`` returns: the VMAS runs pass it);
2. build the trainer inside ``torch.set_num_threads(config.torch_threads)``;
3. run ``iterations`` iterations, each one row of the learning curve
   (``frames, wall_s, mean_return, episodes, <terms>, fps``), with the progress bar and
   the curve rewritten every ``config.save_every_s`` seconds;
4. on Ctrl-C stop, write the curve of the finished iterations and raise
   :class:`TrainingInterrupted` holding the result so far; else write the curve and
   return the :class:`TrainResult`.

The config is any object with ``algorithm`` (``"ppo"``, ``"sac"``, ...), ``env_id``,
``seed``, ``num_envs``, ``total_frames``, ``return_window``, ``out_dir``,
``torch_threads``, ``progress`` and ``save_every_s``.

The policy checkpoint (the hook a trainer implements)
-----------------------------------------------------
A trainer with a ``policy`` attribute (an arrayrl module with ``state_dict()``: the
actor being trained, whose parameters the optimizer updates in place) gets it saved as
``<out>/policy.npz`` (+ ``policy.json``) by
:func:`arrayrl.train.checkpoint.save_policy`: whenever the curve is rewritten, at the
end, and on Ctrl-C, with ``frames = collector.frames``, ``mean_return =
collector.mean_return`` and the vector env's single observation and action spaces.
:attr:`TrainResult.policy_path` says where (``None`` for a trainer without ``policy``).

For ``arrayrl collect`` / :func:`~arrayrl.train.checkpoint.load_policy` to rebuild the
policy, the algorithm registers a :class:`~arrayrl.train.checkpoint.PolicyRecipe`
(``make_config(env_id, **fields)``, ``build_actor(observation_space, action_space,
config)``, ``exploration`` in words, ``sample``, optional ``noise``) under
``config.algorithm``, e.g. at the end of ``arrayrl/train/dqn.py``::

    register_policy("dqn", lambda: PolicyRecipe(
        make_config=make_dqn_config,
        build_actor=lambda obs, act, config: build_dqn_loss(obs, act, config).value_network,
        exploration="epsilon-greedy with epsilon = epsilon_end",
        sample=False,
        noise=epsilon_greedy,   # (action, action_space, config, rng) -> action
    ))

A checkpoint of an algorithm without a recipe is saved all the same; loading it names
the algorithms that have one. ``ppo``, ``sac`` and ``td3`` are registered in
:mod:`arrayrl.train.checkpoint`; an unregistered name is looked up in
``arrayrl.train.<algorithm>`` once, which may register it on import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from arrayrl.backends import get_backend

from .checkpoint import POLICY_FILE, save_policy
from .curve import PANELS, LearningCurve, Panel
from .progress import ProgressBar
from .rollout import make_vector_env

__all__ = [
    "CurveWriter",
    "IterationConfig",
    "RunConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "check_device",
    "config_from",
    "frames_note",
    "run_loop",
    "run_training",
    "save_trainer_policy",
    "torch_threads",
]


class RunConfig:
    """What every training config derives from its fields: the output folder.

    A dataclass config subclasses it and has ``algorithm``, ``env_id``, ``seed`` and
    ``out``.
    """

    @property
    def out_dir(self) -> Path:
        """The output folder (``out``, or ``runs/<algorithm>-<env_id>-<seed>``)."""
        default = Path("runs") / f"{self.algorithm}-{self.env_id}-{self.seed}"
        return Path(self.out) if self.out else default


class IterationConfig(RunConfig):
    """A run of whole iterations of ``num_envs × rollout_steps`` frames (PPO, MAPPO,
    QMIX): the config has ``frames``, ``num_envs`` and ``rollout_steps``."""

    @property
    def frames_per_batch(self) -> int:
        """Frames collected per iteration."""
        return self.num_envs * self.rollout_steps

    @property
    def iterations(self) -> int:
        """Iterations of the run (at least one)."""
        return max(1, self.frames // self.frames_per_batch)

    @property
    def total_frames(self) -> int:
        """Frames the run collects: ``frames`` rounded to whole iterations."""
        return self.iterations * self.frames_per_batch


def config_from(cls: type, overrides: Mapping[str, Any], **base: Any) -> Any:
    """``cls(**base, **overrides)``, the ``None`` values of ``overrides`` ignored (unset
    command-line options keep ``base``'s or the default value); ``TypeError`` naming the
    unknown settings and the known ones."""
    settings = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        label = cls.__name__.removesuffix("Config")
        raise TypeError(f"unknown {label} settings {unknown}; known: {sorted(names)}")
    return cls(**settings)


def frames_note(config: IterationConfig) -> str | None:
    """One line saying how ``frames`` was rounded to whole iterations (``None`` if not)."""
    if config.total_frames == config.frames:
        return None
    direction = "down" if config.total_frames < config.frames else "up"
    plural = "s" if config.iterations > 1 else ""
    return (
        f"frames: {config.frames:,} rounded {direction} to {config.total_frames:,} "
        f"({config.iterations} iteration{plural} of {config.num_envs} envs x "
        f"{config.rollout_steps} steps)"
    )


class Trainer(Protocol):
    """One algorithm's training state, driven by :func:`run_training`."""

    #: Counts ``frames`` and finished episodes (``mean_return``, ``episodes.episodes``).
    collector: Any

    #: Optional: the actor being trained, saved as ``<out>/policy.npz`` (module docstring).
    policy: Any

    def iteration(self, index: int) -> Mapping[str, float]:
        """Run iteration ``index`` (collect and learn); return its logged terms."""
        ...


@dataclasses.dataclass
class TrainResult:
    """What a run produced (``interrupted``: stopped by Ctrl-C, the curve so far)."""

    config: Any
    final_mean_return: float
    frames: int
    seconds: float
    episodes: int
    curve: LearningCurve
    csv_path: Path
    png_path: Path
    interrupted: bool = False
    policy_path: Path | None = None

    def summary(self) -> str:
        """One line: final mean return, frames, seconds and the output paths."""
        config = self.config
        name = getattr(config, "algorithm", "ppo")
        ret = f"{self.final_mean_return:.1f} (last {config.return_window} episodes)"
        unit = getattr(config, "unit", "frames")  # offline runs count gradient steps
        rate = "fps" if unit == "frames" else "per s"
        policy = f"; policy: {self.policy_path}" if self.policy_path else ""
        if self.interrupted:
            written = (
                f"curve so far: {self.csv_path} and {self.png_path}"
                if self.curve.rows
                else "no iteration finished, no curve written"
            )
            return (
                f"{name} {config.env_id} seed {config.seed}: interrupted after "
                f"{self.frames:,} of {config.total_frames:,} {unit} ({self.seconds:.1f} s), "
                f"mean return {ret}; {written}{policy}"
            )
        return (
            f"{name} {config.env_id} seed {config.seed}: final mean return {ret}, "
            f"{self.frames:,} {unit} in {self.seconds:.1f} s "
            f"({self.frames / max(self.seconds, 1e-9):,.0f} {rate}); "
            f"curve: {self.csv_path} and {self.png_path}{policy}"
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training run; ``result`` holds the run so far, whose curve has
    been written. A ``KeyboardInterrupt``, so an interrupted script still stops."""

    def __init__(self, result: TrainResult) -> None:
        super().__init__(result.summary())
        self.result = result


class CurveWriter:
    """Writes a run's curve to ``<out>/learning_curve.csv`` and ``.png``: on demand, and
    every ``save_every_s`` seconds while training.

    Parameters
    ----------
    config
        The run's settings (``algorithm``, ``env_id``, ``seed``, ``total_frames``,
        ``out_dir``, ``save_every_s``).
    panels : sequence of Panel, default PANELS (PPO's)
        The subplots of the figure.
    """

    def __init__(self, config: Any, panels: Sequence[Panel] = PANELS) -> None:
        self.config = config
        self.panels = tuple(panels)
        self.csv_path = config.out_dir / "learning_curve.csv"
        self.png_path = config.out_dir / "learning_curve.png"
        self._last = time.perf_counter()

    def title(self, frames: int, interrupted: bool = False) -> str:
        """The figure's title: algorithm, env, seed and frames (of the total, if fewer)."""
        config = self.config
        done = f"{frames:,}"
        if frames < config.total_frames:
            done += f" of {config.total_frames:,}"
        stopped = " (interrupted)" if interrupted else ""
        name = getattr(config, "algorithm", "ppo").upper()
        return f"{name} on {config.env_id}, seed {config.seed}, {done} frames{stopped}"

    def write(self, curve: LearningCurve, frames: int, interrupted: bool = False) -> None:
        """Write the CSV and the PNG now (nothing before the first row)."""
        if curve.rows:
            curve.write_csv(self.csv_path)
            curve.plot_png(self.png_path, self.title(frames, interrupted), panels=self.panels)
        self._last = time.perf_counter()

    def write_if_due(self, curve: LearningCurve, frames: int) -> bool:
        """Write if ``save_every_s`` seconds have passed since the last write; whether
        it wrote."""
        if time.perf_counter() - self._last >= self.config.save_every_s:
            self.write(curve, frames)
            return True
        return False


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; restore the setting after."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_device(backend: str, device: str) -> None:
    """Raise ``ValueError`` unless ``device`` exists here and can hold ``backend``'s
    arrays (``"cuda"`` on a machine without CUDA, ``"foo"``, ``"meta"``)."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown torch device {device!r}; expected cpu, cuda, cuda:<index>, mps, xpu, ..."
        ) from None
    if kind == "meta":
        raise ValueError("device 'meta' holds no data and cannot train; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        why = "torch is built without CUDA" if torch.version.cuda is None else "no GPU found"
        raise ValueError(f"device {device!r} is not available here ({why}); use --device cpu")
    try:
        get_backend(backend, device)
    except Exception as error:  # any refusal of the device is a bad setting
        raise ValueError(f"device {device!r} is not available here: {error}") from None


def run_loop(
    config: Any,
    iterations: int,
    trainer: Trainer,
    writer: CurveWriter,
    on_write: Callable[[], Any] | None = None,
) -> tuple[LearningCurve, float, bool]:
    """The iterations, each logged as a row of the curve; Ctrl-C ends them early.
    ``on_write()`` runs after each periodic write of the curve (the policy checkpoint).

    Returns the curve, the wall time and whether Ctrl-C stopped the run.
    """
    curve = LearningCurve()
    collector = trainer.collector
    start = time.perf_counter()
    with ProgressBar(config.total_frames, enabled=config.progress) as bar:
        try:
            for index in range(iterations):
                terms = trainer.iteration(index)
                curve.append(_row(collector, time.perf_counter() - start, terms))
                bar.update(collector.frames, collector.mean_return)
                if writer.write_if_due(curve, collector.frames) and on_write is not None:
                    on_write()
        except KeyboardInterrupt:
            return curve, time.perf_counter() - start, True
    return curve, time.perf_counter() - start, False


def _row(collector: Any, wall: float, terms: Mapping[str, float]) -> dict[str, float]:
    """The learning curve's row after an iteration that ended ``wall`` s into the run."""
    return {
        "frames": collector.frames,
        "wall_s": wall,
        "mean_return": collector.mean_return,
        "episodes": collector.episodes.episodes,
        **terms,
        "fps": collector.frames / wall,
    }


def save_trainer_policy(
    config: Any, trainer: Any, env: Any, interrupted: bool = False
) -> Path | None:
    """Save ``trainer.policy`` as ``<out>/policy.npz`` (see the module docstring);
    ``None`` when the trainer has no ``policy``."""
    policy = getattr(trainer, "policy", None)
    if policy is None:
        return None
    collector = trainer.collector
    return save_policy(
        config.out_dir / POLICY_FILE, policy, config,
        env.single_observation_space, env.single_action_space,
        frames=collector.frames, mean_return=collector.mean_return, interrupted=interrupted,
    )  # fmt: skip


def run_training(
    config: Any,
    iterations: int,
    build: Callable[[Any], Trainer],
    panels: Sequence[Panel] = PANELS,
    make_env: Callable[[Any], Any] | None = None,
) -> TrainResult:
    """Make the env, ``build(env)`` the trainer, run it, write the curve and save the
    policy (see the module docstring).

    ``make_env(config)`` makes the environment instead of a Gymnasium vector env of
    ``config.env_id`` (the VMAS runs do); it needs ``close()`` and the
    ``single_observation_space`` / ``single_action_space`` the policy checkpoint records.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C during the iterations, after writing the curve and the policy so far.
    """
    env = make_vector_env(config.env_id, config.num_envs) if make_env is None else make_env(config)
    writer = CurveWriter(config, panels)
    try:
        with torch_threads(config.torch_threads):
            trainer = build(env)
            curve, seconds, interrupted = run_loop(
                config, iterations, trainer, writer,
                on_write=lambda: save_trainer_policy(config, trainer, env),
            )  # fmt: skip
    finally:
        env.close()
    frames = int(curve.rows[-1]["frames"]) if curve.rows else 0  # of finished iterations
    writer.write(curve, frames, interrupted)
    policy_path = save_trainer_policy(config, trainer, env, interrupted)
    collector = trainer.collector
    result = TrainResult(
        config, collector.mean_return, frames, seconds,
        collector.episodes.episodes, curve, writer.csv_path, writer.png_path, interrupted,
        policy_path,
    )  # fmt: skip
    if interrupted:
        raise TrainingInterrupted(result)
    return result
