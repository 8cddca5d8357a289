"""Run a named experiment grid: ``python -m nelib.runner.sweep --experiment benchmark --preset laptop``.

Runs already in the results store are skipped; the rest run in parallel on a local process pool (one
run per core, one torch thread each). Interrupted runs resume from their checkpoints when the same
command is started again; a failing run is reported with its error and the others go on.
With ``--backend ray`` each run is a Ray task instead (see ``--help``).
"""

from __future__ import annotations

import sys

from nelib.runner import presets
from nelib.runner.backends import BACKENDS, run_configs
from nelib.runner.cli import OneLineParser, parse_seeds
from nelib.runner.experiments import EXPERIMENTS, experiment_configs
from nelib.runner.preflight import check_grid
from nelib.runner.store import ResultStore, store_for

RAY_EPILOG = """\
--backend ray runs each missing run as a Ray task of 1 CPU (1 torch thread). Without --address it
starts a local Ray instance (no dashboard) for the sweep and stops it at the end. The Ray workers
write results and checkpoints to the results store themselves, not through this process: on a
cluster of several machines (--address) the store (--data-dir) must be on a filesystem that every
node mounts at the same path, and nelib with its pinned packages must be installed on every node.
Skipping stored runs, resuming from checkpoints and reporting failed runs work as with the local pool."""


def select_arms(configs, labels: list[str]):
    """The configs whose arm (``method`` or ``method@variant``) is in ``labels``; unknown labels raise."""
    known = {c.label for c in configs}
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; this experiment has: {', '.join(sorted(known))}")
    return [c for c in configs if c.label in labels]


def main(argv: list[str] | None = None) -> None:
    p = OneLineParser(prog="python -m nelib.runner.sweep", description=__doc__.split("\n")[0], epilog=RAY_EPILOG)
    p.add_argument("--experiment", required=True, help=f"one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--preset", default=presets.DEFAULT, help=f"one of: {', '.join(presets.PRESETS)}")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: the preset's)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    p.add_argument("--methods", default=None,
                   help="comma-separated arms to run, as method or method@variant (default: all)")
    p.add_argument("--vectorize", default="0", metavar="K",
                   help="train the seeds of each task and method K at a time in one process (nelib.runner.vectorized; "
                        "same results); auto: all seeds together where runs use CUDA, none on CPU; 0: off")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel runs (default: number of cores, or 1 where runs use CUDA; with ray: all the "
                        "cluster's CPUs)")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: a process pool on this machine, no server (default); ray: one Ray task per run")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the cluster to join, as for ray.init(address=...), e.g. auto or "
                        "ray://head:10001 (default: start a local Ray instance for this sweep)")
    p.add_argument("--data-dir", default=None, help="results store root (default: the preset's store)")
    p.add_argument("--fresh", action="store_true", help="re-run and replace stored runs")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are stored")
    args = p.parse_args(argv)
    try:
        tasks = args.tasks.split(",") if args.tasks else None
        seeds = parse_seeds(args.seeds) if args.seeds else None
        if args.vectorize != "auto" and not args.vectorize.isdigit():
            raise ValueError(f"--vectorize must be auto or a whole number (0: off), got {args.vectorize!r}")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        store = ResultStore(args.data_dir) if args.data_dir else store_for(args.preset)
        configs = experiment_configs(args.experiment, args.preset, tasks, seeds)
        if args.methods:
            configs = select_arms(configs, args.methods.split(","))
    except ValueError as e:
        sys.exit(f"error: {e}")
    # The whole grid is checked before any run starts; each problem is said once.
    errors = check_grid(configs, None if args.dry_run else store)
    if errors:
        sys.exit("\n".join(f"error: {e}" for e in errors))
    if args.dry_run:
        for c in configs:
            state, _, why = store.lookup(c)
            note = {"stored": "", "missing": ""}.get(state, f" ({why})")
            print(f"{'stored ' if state == 'stored' else 'missing' if state in ('missing', 'damaged') else state} "
                  f"{c.task} {c.method}{'@' + c.variant if c.variant else ''} seed {c.seed}{note}")
        return
    vectorize = args.vectorize if args.vectorize == "auto" else int(args.vectorize)
    try:
        failures = run_configs(configs, store, args.workers, args.fresh, backend=args.backend, address=args.address,
                               vectorize=vectorize)
    except (ValueError, ImportError) as e:  # ImportError: --backend ray without ray installed
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # every run in progress got the Ctrl-C too (nelib.runner.loop)
        print("nelib: interrupted; the runs in progress keep their checkpoints (written at an episode end, "
              "unless Ctrl-C was pressed twice): the same command resumes them", file=sys.stderr)
        sys.exit(130)  # as python -m nelib.runner.train and nelib.runner.vectorized exit on Ctrl-C
    print(f"{len(configs) - len(failures)} of {len(configs)} runs stored under {store.root}"
          + (f"; {len(failures)} FAILED (each said above)" if failures else ""))
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
