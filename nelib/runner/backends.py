"""Where the runs of an experiment train: a local process pool, or tasks on a Ray cluster.

:func:`run_configs` skips the runs already stored, trains the rest (one process per core, one torch
thread each, or seeds batched in one process with ``vectorize``), and reports each failure without losing
the others.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import traceback

from tqdm import tqdm  # plain text bar: readable in notebooks, logs and CI alike

from nelib.runner.config import TrainConfig
from nelib.runner.loop import Interrupted, ctrl_c_came, keep_ctrl_c_in_pool_worker
from nelib.runner.preflight import check_config
from nelib.runner.store import ResultStore, current_command


def _run_one(cfg: TrainConfig, root: str, overwrite: bool, command: str = "") -> None:
    from nelib.runner.train import run

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
    from nelib.runner.train import runs_on_cuda

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
    (:mod:`nelib.runner.vectorized`: the same results, one worker per group); ``"auto"`` groups all seeds where the
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
        tqdm.write(f"FAILED {cfg.task} {cfg.label} seed {cfg.seed}: {error}")

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
    command = f"{current_command()}  [nelib.runner.backends.run_configs]"
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress)

    def done(cfg, error):
        if error:
            failed(cfg, error)
        bar.update(1)

    if vectorize == "auto":
        from nelib.runner.vectorized import auto_vectorize

        vectorize = auto_vectorize(todo) if backend == "local" else 0
    if backend == "ray":
        try:
            _run_on_ray(todo, str(store.root.resolve()), fresh, command, ray_workers, address, done)
        finally:
            bar.close()
        return failures
    if int(vectorize) > 1:
        from nelib.runner.vectorized import run_group, seed_groups

        groups, run = seed_groups(todo, int(vectorize)), run_group
    else:
        groups, run = [[c] for c in todo], _run_alone
    if progress and min(workers, len(groups)) == 1:  # runs one at a time here: each shows its step bar too
        groups = [[dataclasses.replace(c, progress=True) for c in g] for g in groups]
    try:
        _run_groups(groups, run, str(store.root), workers, fresh, command, done)
    finally:
        bar.close()
    return failures


def _run_alone(group: list[TrainConfig], root: str, fresh: bool, command: str) -> None:
    """Train the one run of ``group`` on its own (the unvectorized path of :func:`_run_groups`)."""
    (cfg,) = group
    _run_one(cfg, root, fresh, command)


def _start_in_worker(run, group: list[TrainConfig], root: str, fresh: bool, command: str) -> None:
    """A pool worker's task: ``run(group, ...)``, unless a Ctrl-C has come (a group queued for this worker
    before the sweep stopped; the pool cannot cancel those): then it fails as not started."""
    if ctrl_c_came():
        raise Interrupted("not started: Ctrl-C came before this run could start; the same command starts it")
    run(group, root, fresh, command)


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
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=keep_ctrl_c_in_pool_worker) as pool:
        futures = {pool.submit(_start_in_worker, run, g, root, fresh, command): g for g in groups}
        try:
            for fut in cf.as_completed(futures):
                report(futures[fut], fut.exception())
        except KeyboardInterrupt:  # Ctrl-C reaches the workers too: wait for their checkpoints, start no more
            pool.shutdown(wait=True, cancel_futures=True)
            raise
