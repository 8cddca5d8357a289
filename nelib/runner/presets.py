"""Experiment scales, defined once and used by the CLI, the notebooks and the Makefile.

A preset says how long runs are and how many tasks and seeds an experiment covers. ``ci`` is for tests
(minutes in total), ``laptop`` is the default of ``make figures`` (hours on a 2-core CPU), ``long`` trains
HalfCheetah to 1M steps (about 2.3 h of one core per run), ``paper`` is the paper's protocol (a GPU box or
a cluster).
"""

from __future__ import annotations

import dataclasses
import sys


@dataclasses.dataclass(frozen=True)
class Preset:
    """Scale of an experiment."""

    name: str
    """Name used on the command line (``PRESET=...``)."""
    steps: int
    """Environment steps per run."""
    start_steps: int
    """Uniform-random exploration steps before the policy acts (TD3's ``start_timesteps``)."""
    eval_every: int
    """Environment steps between evaluations."""
    eval_episodes: int
    """Deterministic episodes per evaluation."""
    tasks: tuple[str, ...]
    """MuJoCo tasks of the benchmark experiments."""
    seeds: tuple[int, ...]
    """Seeds of the benchmark experiments; seeds, never episodes, are the statistical unit."""
    checkpoint_every: int
    """Environment steps between resumable checkpoints (0: never); DMC runs: frames."""
    dmc_tasks: tuple[str, ...] = ("dmc:cheetah-run",)
    """DeepMind Control tasks (pixels, DrQ) of the DMC benchmark."""
    dmc_seeds: tuple[int, ...] = (0,)
    """Seeds of the DMC benchmark (pixel runs are slow on a CPU: fewer than the MuJoCo experiments)."""
    dmc_frames: int = 100_000
    """Frames per DMC run; a run takes ``dmc_frames / action_repeat`` agent steps (one update each)."""
    dmc_start_steps: int = 1_000
    """Agent steps of uniform-random actions before DrQ acts and trains (DrQ's ``num_seed_steps``: 1000)."""
    dmc_eval_every: int = 10_000
    """Frames between evaluations of DMC runs."""
    dmc_overrides: tuple[tuple[str, object], ...] = ()
    """Config overrides of DMC runs at this scale (``ci``: a small batch, to stay fast)."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ci", steps=2_000, start_steps=1_000, eval_every=500, eval_episodes=1,
               tasks=("HalfCheetah-v5",), seeds=(0,), checkpoint_every=0,
               # DMC: 150 agent steps of cartpole (50 updates) with a batch of 16: a pipeline check.
               dmc_tasks=("dmc:cartpole-swingup",), dmc_seeds=(0,), dmc_frames=1_200, dmc_start_steps=100,
               dmc_eval_every=1_200, dmc_overrides=(("drq.batch_size", 16), ("metrics_batch", 128),
                                                    ("topology.interval", 10))),
        Preset("laptop", steps=100_000, start_steps=25_000, eval_every=5_000, eval_episodes=10,
               tasks=("HalfCheetah-v5", "Walker2d-v5"), seeds=(0, 1, 2), checkpoint_every=10_000,
               # DMC: cartpole has the largest action repeat (8), so the fewest updates per frame.
               dmc_tasks=("dmc:cartpole-swingup",), dmc_seeds=(0, 1), dmc_frames=20_000, dmc_start_steps=500,
               dmc_eval_every=2_000),
        # The headline claim at the paper's horizon on one 2-core machine: one task, five seeds, 1M steps.
        Preset("long", steps=1_000_000, start_steps=25_000, eval_every=10_000, eval_episodes=10,
               tasks=("HalfCheetah-v5",), seeds=tuple(range(5)), checkpoint_every=50_000),
        Preset("paper", steps=1_000_000, start_steps=25_000, eval_every=5_000, eval_episodes=10,
               tasks=("HalfCheetah-v5", "Walker2d-v5", "Hopper-v5", "Ant-v5", "Humanoid-v5"),
               seeds=tuple(range(7)), checkpoint_every=50_000,
               # DMC: DrQ's PlaNet benchmark, 500k frames.
               dmc_tasks=("dmc:cartpole-swingup", "dmc:reacher-easy", "dmc:cheetah-run", "dmc:finger-spin",
                          "dmc:ball_in_cup-catch", "dmc:walker-walk"),
               dmc_seeds=tuple(range(7)), dmc_frames=500_000, dmc_eval_every=10_000),
    )
}
DEFAULT = "laptop"


def get(name: str) -> Preset:
    """Return the preset called ``name``; a clear error names the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None


if __name__ == "__main__":  # `python -m nelib.runner.presets NAME`: exit 1 with one line if NAME is unknown
    try:
        print(get(sys.argv[1] if len(sys.argv) > 1 else DEFAULT).name)
    except ValueError as e:
        sys.exit(f"error: {e}")
