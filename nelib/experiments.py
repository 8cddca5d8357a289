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
from nelib.cyclic import parse_cycle
from nelib.methods import METHODS
from nelib.preflight import check_config
from nelib.store import ResultStore, current_command


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
    "benchmark": tuple(Arm(m) for m in ("td3", "ne", "ne-official", "reset", "redo", "plasticity-injection",
                                        "layernorm")),
    # The headline claim at the paper's horizon (preset `long`: HalfCheetah-v5, 1M steps, 5 seeds).
    "long-horizon": tuple(Arm(m) for m in ("td3", "ne", "ne-official")),
    # What the reviewers asked for: one NE hyper-parameter varied at a time around the defaults.
    "sensitivity": (Arm("ne"),
                    *(Arm("ne", f"density{v:g}", (("sparsity.density", v),)) for v in (0.1, 0.4)),
                    # growth timescale: full size at T/4 or T/2 instead of T
                    *(Arm("ne", f"tend{v:g}", (("topology.growth.end_fraction", v),)) for v in (0.25, 0.5)),
                    *(Arm("ne", f"omega{v:g}", (("topology.pruning.omega", v),)) for v in (0.1, 0.8)),
                    *(Arm("ne", f"early{v:g}", (("review.early_fraction", v),)) for v in (0.1, 0.6))),
}
"""Experiment name -> its arms. Methods not (yet) in :data:`nelib.methods.METHODS` are skipped."""

# Baseline schedules scaled to the short presets. The papers' defaults (Reset every 200k updates, ReDo every
# 1k) stay in the configs and in `paper`; at `laptop` scale (75k updates) a 200k-update reset never fires,
# so it resets every 30k updates (twice per run), and `ci` makes every intervention fire at least once.
SCALED_OVERRIDES: dict[str, dict[str, dict[str, object]]] = {
    "reset": {"ci": {"reset.interval": 400}, "laptop": {"reset.interval": 30_000}},
    "redo": {"ci": {"redo.interval": 250}},
}

# The cyclic experiment trains through a task sequence instead of the preset's task list.
CYCLES = {
    "ci": "cycle:Hopper-v5,Walker2d-v5@400x2",
    "laptop": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@20000x2",
    "paper": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@200000x3",
    "long": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@200000x3",
}
EXPERIMENTS["cyclic"] = tuple(Arm(m) for m in ("td3", "ne", "reset", "redo"))
# `laptop` cyclic runs make 110k updates after 10k random steps. The benchmark's 30k reset interval would
# reset at steps 40k and 100k, the last steps of both Walker2d visits, so those visits would be scored on
# fresh networks; every 40k resets twice, at 50k and 90k, halfway through a visit.
CYCLIC_SCALED_OVERRIDES = {**SCALED_OVERRIDES, "reset": {**SCALED_OVERRIDES["reset"],
                                                         "laptop": {"reset.interval": 40_000}}}

# Pixel DeepMind Control with DrQ (paper Fig. 7): tasks and seeds from the preset's dmc_* fields. At `ci` only
# DrQ and NE run (seconds each). Reset and ReDo intervals are in updates (one per agent step): `laptop`
# (2k updates) resets every 800, twice per run like the MuJoCo `laptop` schedule (a 2k interval reset the
# networks at the last update, so the final evaluation saw a fresh network); `paper` every 50k (the
# configs' 200k would never fire in runs of 62k-250k updates); ReDo keeps its 1k.
EXPERIMENTS["dmc-benchmark"] = tuple(Arm(m) for m in ("drq", "ne", "reset", "redo"))
DMC_CI_METHODS = ("drq", "ne")
DMC_SCALED_OVERRIDES: dict[str, dict[str, dict[str, object]]] = {
    "reset": {"ci": {"reset.interval": 20}, "laptop": {"reset.interval": 800},
              "paper": {"reset.interval": 50_000}},
    "redo": {"ci": {"redo.interval": 20}},
    # NE's review window (50 measurements = 5k updates) needs 10k updates before it can fire; a `laptop` DMC
    # run makes 2k, so its window there is 5 measurements.
    "ne": {"laptop": {"review.window": 5}},
}

# The ablations and the sensitivity study run on the preset's first task below `paper` scale: on a 2-core CPU
# a 100k-step run takes about 25 minutes, and the benchmark alone is 36 of them at `laptop`.
FIRST_TASK_ONLY = ("naive-growth", "elastic-growth", "dormant-pruning", "experience-review", "sensitivity")

SENSITIVITY_DEFAULTS = {"density": 0.2, "tend": 1.0, "omega": 0.4, "early": 0.3}
"""The NE default of each parameter the ``sensitivity`` experiment varies (variant label prefix -> value)."""


def experiment_configs(name: str, preset: str, tasks=None, seeds=None, **overrides) -> list[TrainConfig]:
    """The run configs of experiment ``name`` at ``preset`` scale (tasks and seeds from the preset)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    p = presets.get(preset)
    arms = EXPERIMENTS[name]
    scaled = SCALED_OVERRIDES
    if name == "dmc-benchmark":
        tasks, seeds, scaled = tasks or p.dmc_tasks, seeds or p.dmc_seeds, DMC_SCALED_OVERRIDES
        arms = tuple(a for a in arms if preset != "ci" or a.method in DMC_CI_METHODS)
    if name in FIRST_TASK_ONLY and preset != "paper":
        tasks = tasks or p.tasks[:1]
    if name == "cyclic":
        scaled = CYCLIC_SCALED_OVERRIDES
    if name == "cyclic" and tasks is None:
        tasks = [CYCLES[preset]]
        cycle, visit, repeats = parse_cycle(tasks[0])
        n_tasks = len(cycle)
        overrides = {"steps": visit * n_tasks * repeats, "start_steps": min(p.start_steps, visit // 2),
                     **overrides}
    return [
        make_config(task, arm.method, seed, preset, variant=arm.variant,
                    **{**scaled.get(arm.method, {}).get(preset, {}), **dict(arm.overrides), **overrides})
        for arm in arms if arm.method in METHODS
        for task in (tasks or p.tasks) for seed in (seeds or p.seeds)
    ]


def _run_one(cfg: TrainConfig, root: str, overwrite: bool, command: str = "") -> None:
    from nelib.train import run

    run(cfg, ResultStore(root), overwrite=overwrite, command=command or None)


BACKENDS = ("local", "ray")
"""Where :func:`run_configs` runs: ``local`` (process pool, no server) or ``ray`` (tasks on a Ray cluster)."""

RAY_INSTALL_HINT = "the ray backend needs the ray package: pip install ray (pinned in requirements.txt)"


def _import_ray():
    """The ray module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(RAY_INSTALL_HINT) from e
    return ray


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


def init_ray(address: str | None = None, num_cpus: int | None = None, tries: int = 2):
    """Connect to the Ray cluster at ``address``, or start a local Ray instance (``num_cpus`` CPUs).

    The local instance is kept light for laptops and CI: no dashboard, no usage statistics, a 100 MB object
    store (runs return nothing but their error). Ray's raylet gives its Python agents a fixed 15 s to come
    up, which a busy 2-core machine can miss (see the jsonschema pin in requirements.txt); a failed start is
    retried once. Returns the ``ray`` module.
    """
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = {} if address else dict(num_cpus=num_cpus, include_dashboard=False,
                                     object_store_memory=100 * 1024**2)
    for attempt in range(tries):
        try:
            ray.init(address=address, logging_level="warning", **kwargs)
            return ray
        except Exception:  # Ray raises a plain Exception when its node times out during start-up
            ray.shutdown()
            if attempt == tries - 1:
                raise
    return ray


def _run_on_ray(todo: list[TrainConfig], root: str, fresh: bool, command: str, workers: int | None,
                address: str | None, done) -> None:
    """Run ``todo`` as Ray tasks of 1 CPU each (at most ``workers`` in flight), calling ``done(cfg, error)``
    as each ends.

    Each task runs :func:`_run_one` and writes its rows, record and checkpoints to the store at ``root``,
    exactly as a local worker does (skip and resume included). A Ray worker that dies (a lost node, the OOM
    killer) is retried twice and resumes from the run's checkpoint; an exception in the run is reported,
    not retried. An interrupted sweep (Ctrl-C) cancels its tasks; started again, it resumes them.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        init_ray(address, workers)
    remote = ray.remote(num_cpus=1, max_retries=2)(_run_one)
    queue, running = list(todo), {}
    limit = workers or len(todo)
    try:
        while queue or running:
            while queue and len(running) < limit:
                cfg = queue.pop(0)
                running[remote.remote(cfg, root, fresh, command)] = cfg
            [ref], _ = ray.wait(list(running), num_returns=1)
            cfg = running.pop(ref)
            try:
                ray.get(ref)
                done(cfg, None)
            except ray.exceptions.RayTaskError as e:  # the run raised: report its own exception
                done(cfg, _error_text(e.cause if isinstance(e.cause, BaseException) else e))
            except ray.exceptions.RayError as e:  # the worker died, or the task was cancelled
                done(cfg, _error_text(e))
    finally:
        for ref in running:  # only after an error or Ctrl-C here: stop the runs still going
            try:
                ray.cancel(ref, force=True)
            except Exception:  # the cluster may be gone already
                pass
        if started:
            ray.shutdown()


def default_workers(configs: list[TrainConfig]) -> int:
    """Parallel local runs when not told: one per core on CPU; one where the runs use CUDA.

    Every worker would train on the same GPU (``cuda``), and processes only time-slice it: of 8 DrQ runs
    started together on an H100, not one had finished its 2,000 updates after 6.5 min, while one update
    alone takes about 16 ms. On a GPU, batch seeds in one process instead (``vectorize``)."""
    from nelib.train import runs_on_cuda

    return 1 if runs_on_cuda(configs) else os.cpu_count() or 1


def run_configs(configs: list[TrainConfig], store: ResultStore | None = None, workers: int | None = None,
                fresh: bool = False, progress: bool = True, backend: str = "local",
                address: str | None = None, vectorize: int | str = 0) -> list[tuple[TrainConfig, str]]:
    """Run the configs not yet stored, ``workers`` at a time; return ``(config, error)`` of failures.

    ``backend="local"`` runs them on a process pool on this machine (one run in this process if
    ``workers=1``); ``backend="ray"`` runs each as a Ray task (1 CPU, 1 torch thread) on the Ray cluster
    at ``address``, on the instance already started with ``ray.init`` in this process, or on a local one
    started here (``workers`` CPUs, default all) and shut down at the end. Ray workers write to ``store``
    themselves, so on a multi-node cluster its folder must be on a filesystem shared by all nodes, at the
    same path, and nelib must be installed on every node. See :func:`_run_on_ray`.

    ``vectorize=K`` (local backend) trains the seeds of each task and method K at a time in one process
    (:mod:`nelib.vectorized`: the same results, one worker per group); ``"auto"`` groups all seeds where the
    runs use CUDA and none on CPU (nor on Ray); 0 or 1: one run per worker.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if vectorize not in ("auto", 0, 1) and backend != "local":
        raise ValueError("vectorized seeds run on the local backend only")
    store = store or ResultStore()
    todo, failures = [], []

    def failed(cfg, error):  # each failure is said once, as it happens
        failures.append((cfg, error))
        tqdm.write(f"FAILED {cfg.task} {cfg.method}{'@' + cfg.variant if cfg.variant else ''} seed {cfg.seed}: "
                   f"{error}")

    for c in configs:
        try:
            check_config(c)
        except ValueError as e:  # an unknown task or method, a value out of range: not started
            failed(c, str(e))
            continue
        state, _, why = store.lookup(c)
        if fresh or state in ("missing", "damaged"):  # a damaged run is re-trained; its run says so
            todo.append(c)
        elif state != "stored":  # a stored run of another config, or of an earlier method definition
            failed(c, why)
    if not todo:
        return failures
    ray_workers = workers  # None: as many as the Ray cluster has CPUs
    workers = max(1, min(workers or default_workers(todo), len(todo)))
    todo = [dataclasses.replace(c, threads=c.threads or 1, progress=False) for c in todo]
    command = f"{current_command()}  [nelib.experiments.run_configs]"
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress)

    def done(cfg, error):
        if error:
            failed(cfg, error)
        bar.update(1)

    if vectorize == "auto":
        from nelib.vectorized import auto_vectorize

        vectorize = auto_vectorize(todo) if backend == "local" else 0
    if backend == "ray":
        try:
            _run_on_ray(todo, str(store.root.resolve()), fresh, command, ray_workers, address, done)
        finally:
            bar.close()
        return failures
    if int(vectorize) > 1:
        from nelib.vectorized import run_group, seed_groups

        groups, run = seed_groups(todo, int(vectorize)), run_group
    else:
        groups, run = [[c] for c in todo], _run_alone
    try:
        _run_groups(groups, run, str(store.root), workers, fresh, command, done)
    finally:
        bar.close()
    return failures


def _run_alone(group: list[TrainConfig], root: str, fresh: bool, command: str) -> None:
    """Train the one run of ``group`` on its own (the unvectorized path of :func:`_run_groups`)."""
    (cfg,) = group
    _run_one(cfg, root, fresh, command)


def _run_groups(groups: list[list[TrainConfig]], run, root: str, workers: int, fresh: bool, command: str,
                done) -> None:
    """Call ``run(group, root, fresh, command)`` for each group, ``workers`` groups at a time, and
    ``done(cfg, error)`` for every run of a group as the group ends.

    One worker runs in this process (easier to debug, and it sees environments registered here); more
    run on a spawn process pool (no forked torch/MuJoCo state). A failed group is reported and the
    others go on: one failure must not lose the rest.
    """
    def report(group, exc):
        for cfg in group:
            done(cfg, None if exc is None else _error_text(exc))

    workers = min(workers, len(groups))
    if workers == 1:
        for group in groups:
            try:
                run(group, root, fresh, command)
                report(group, None)
            except Exception as e:
                report(group, e)
        return
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run, g, root, fresh, command): g for g in groups}
        for fut in cf.as_completed(futures):
            report(futures[fut], fut.exception())


class NoStoredRuns(RuntimeError):
    """``run_experiment(train=False)`` found none of the experiment's runs in the store."""


def run_experiment(name: str, preset: str = presets.DEFAULT, store: ResultStore | None = None,
                   workers: int | None = None, fresh: bool = False, progress: bool = True,
                   tasks=None, seeds=None, backend: str = "local", address: str | None = None,
                   train: bool = True, **overrides) -> pd.DataFrame:
    """Run (or load) every run of experiment ``name``; return their evaluation rows, one per row.

    Columns add ``task``, ``method``, ``variant``, ``label`` (method or method@variant) and ``seed``.
    ``backend`` and ``address`` pick where the missing runs run, as in :func:`run_configs`.
    ``train=False`` trains nothing and returns the stored runs only (``make figures STORED=1``); it raises
    :class:`NoStoredRuns` when none is stored.
    """
    store = store or ResultStore()
    configs = experiment_configs(name, preset, tasks, seeds, **overrides)
    if train:
        failures = run_configs(configs, store, workers, fresh, progress, backend=backend, address=address)
    else:
        looked_up = [(c, store.lookup(c)) for c in configs]
        stored = [c for c, (state, _, _) in looked_up if state != "missing"]
        print(f"stored runs only: {len(stored)} of {len(configs)} runs of {name!r} at preset {preset!r} "
              f"are in {store.root}; the missing ones are left out")
        # stale (an earlier method definition), another config, or damaged (it counts as missing)
        failures = [(c, why) for c, (state, _, why) in looked_up if state not in ("stored", "missing")]
        configs = stored
    frames = []
    for cfg in configs:
        rows = None if any(cfg == f[0] for f in failures) else store.load(cfg)
        if rows is not None:
            frames.append(rows.assign(task=cfg.task, method=cfg.method, variant=cfg.variant,
                                      label=f"{cfg.method}@{cfg.variant}" if cfg.variant else cfg.method,
                                      seed=cfg.seed))
    if failures:
        print(f"{len(failures)} of {len(configs)} runs failed or are left out; their rows are missing:")
        for cfg, error in failures:  # why, e.g. a stale run or a stored run of another config
            print(f"  {cfg.task} {cfg.method}{'@' + cfg.variant if cfg.variant else ''} seed {cfg.seed}: "
                  f"{error.strip().splitlines()[-1]}")
    if not frames and not train:
        raise NoStoredRuns(f"no usable stored runs of {name!r} at preset {preset!r} in {store.root}; train them "
                           f"with: python -m nelib.sweep --experiment {name} --preset {preset} [--fresh]")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
