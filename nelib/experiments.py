"""Named experiments (grids of methods x tasks x seeds) and a local process pool that runs them.

``run_experiment("elastic-growth", "laptop")`` runs every missing run of the grid in parallel (one
process per core, one torch thread each), skips runs already in the results store, and returns all
the experiment's rows. One failing run is reported with its error and does not stop the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import traceback

import pandas as pd
from tqdm import tqdm  # plain text bar: readable in notebooks, logs and CI alike

from nelib import presets
from nelib.config import TrainConfig, make_config
from nelib.methods import METHODS
from nelib.store import ResultStore


@dataclasses.dataclass(frozen=True)
class Arm:
    """One line of an experiment: a method, optionally a labelled variant with config overrides."""

    method: str
    variant: str = ""
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.method}@{self.variant}" if self.variant else self.method


EXPERIMENTS: dict[str, tuple[Arm, ...]] = {
    "plasticity-loss": (Arm("td3"),),
    "naive-growth": (Arm("sparse"), Arm("naive-growth")),
    "elastic-growth": (Arm("ne"), Arm("ne-random-growth")),
    "dormant-pruning": (Arm("ne"), Arm("ne-no-prune"),
                        Arm("ne", "omega0.1", (("topology.pruning.omega", 0.1),)),
                        Arm("ne", "omega0.8", (("topology.pruning.omega", 0.8),))),
    "experience-review": (Arm("ne"), Arm("ne-no-review")),
    "benchmark": tuple(Arm(m) for m in ("td3", "ne", "reset", "redo", "plasticity-injection", "layernorm")),
}
"""Experiment name -> its arms. Methods not (yet) in :data:`nelib.methods.METHODS` are skipped."""


def experiment_configs(name: str, preset: str, tasks=None, seeds=None, **overrides) -> list[TrainConfig]:
    """The run configs of experiment ``name`` at ``preset`` scale (tasks and seeds from the preset)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    p = presets.get(preset)
    return [
        make_config(task, arm.method, seed, preset, variant=arm.variant, **dict(arm.overrides), **overrides)
        for arm in EXPERIMENTS[name] if arm.method in METHODS
        for task in (tasks or p.tasks) for seed in (seeds or p.seeds)
    ]


def _run_one(cfg: TrainConfig, root: str, overwrite: bool) -> None:
    from nelib.train import run

    run(cfg, ResultStore(root), overwrite=overwrite)


def run_configs(configs: list[TrainConfig], store: ResultStore | None = None, workers: int | None = None,
                fresh: bool = False, progress: bool = True) -> list[tuple[TrainConfig, str]]:
    """Run the configs not yet stored, ``workers`` at a time; return ``(config, error)`` of failures."""
    store = store or ResultStore()
    todo = [c for c in configs if fresh or store.load(c) is None]
    failures: list[tuple[TrainConfig, str]] = []
    if not todo:
        return failures
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    todo = [dataclasses.replace(c, threads=c.threads or 1, progress=False) for c in todo]
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress)
    ctx = multiprocessing.get_context("spawn")  # no forked torch/MuJoCo state in workers
    with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        futures = {pool.submit(_run_one, c, str(store.root), fresh): c for c in todo}
        for fut in cf.as_completed(futures):
            cfg = futures[fut]
            try:
                fut.result()
            except Exception as e:  # keep going: one failed run must not lose the others
                failures.append((cfg, "".join(traceback.format_exception_only(e)).strip()))
                tqdm.write(f"run failed: {cfg.task} {cfg.method} seed {cfg.seed}: {failures[-1][1]}")
            bar.update(1)
    bar.close()
    return failures


def run_experiment(name: str, preset: str = presets.DEFAULT, store: ResultStore | None = None,
                   workers: int | None = None, fresh: bool = False, progress: bool = True,
                   tasks=None, seeds=None, **overrides) -> pd.DataFrame:
    """Run (or load) every run of experiment ``name``; return their evaluation rows, one per row.

    Columns add ``task``, ``method``, ``variant``, ``label`` (method or method@variant) and ``seed``.
    """
    store = store or ResultStore()
    configs = experiment_configs(name, preset, tasks, seeds, **overrides)
    failures = run_configs(configs, store, workers, fresh, progress)
    frames = []
    for cfg in configs:
        rows = None if any(cfg is f[0] or cfg == f[0] for f in failures) else store.load(cfg)
        if rows is not None:
            frames.append(rows.assign(task=cfg.task, method=cfg.method, variant=cfg.variant,
                                      label=f"{cfg.method}@{cfg.variant}" if cfg.variant else cfg.method,
                                      seed=cfg.seed))
    if failures:
        print(f"{len(failures)} of {len(configs)} runs failed; their rows are missing")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
