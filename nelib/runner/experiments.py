"""The named experiments, as data: each is a set of arms (methods and variants), a rule for which of a
preset's tasks and seeds it runs, and the schedules of baselines scaled to the preset.

``run_experiment("elastic-growth", "laptop")`` trains every missing run of the grid
(:func:`nelib.runner.backends.run_configs`), skips runs already in the results store, and returns all the
experiment's rows.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from nelib.envs.cyclic import parse_cycle
from nelib.runner import presets, schema
from nelib.runner.backends import run_configs
from nelib.runner.config import TrainConfig, make_config
from nelib.runner.methods import METHODS, method_label
from nelib.runner.store import ResultStore

TASK_RULES = ("preset", "first", "dmc", "cycle")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One line of an experiment: a method, optionally a labelled variant with config overrides."""

    method: str
    variant: str = ""
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return method_label(self.method, self.variant)


Scaled = dict[str, dict[str, dict[str, object]]]
"""method -> preset -> config overrides."""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what it compares and which runs of a preset it makes."""

    arms: tuple[Arm, ...]
    """The methods (and variants) compared; methods not in :data:`nelib.runner.methods.METHODS` are skipped."""
    tasks: str = "preset"
    """Which tasks and seeds: ``preset`` (the preset's tasks and seeds), ``first`` (the preset's first task
    only, below ``paper``: the ablations, for time), ``dmc`` (the preset's DeepMind Control tasks and seeds),
    ``cycle`` (the preset's task sequence in :data:`CYCLES`, its step count set by the sequence)."""
    scaled: Scaled = dataclasses.field(default_factory=dict)
    """Baseline schedules scaled to a preset, method -> preset -> overrides."""
    ci_methods: tuple[str, ...] = ()
    """At ``ci``, only these methods (empty: all)."""

    def __post_init__(self):
        if self.tasks not in TASK_RULES:
            raise ValueError(f"tasks must be one of {TASK_RULES}, got {self.tasks!r}")


# Baseline schedules scaled to the short presets. The papers' defaults (Reset every 200k updates, ReDo every
# 1k) stay in the configs and in `paper`; at `laptop` scale (75k updates) a 200k-update reset never fires,
# so it resets every 30k updates (twice per run), and `ci` makes every intervention fire at least once.
SCALED: Scaled = {
    "reset": {"ci": {"reset.interval": 400}, "laptop": {"reset.interval": 30_000}},
    "redo": {"ci": {"redo.interval": 250}},
}
# `laptop` cyclic runs make 110k updates after 10k random steps. The benchmark's 30k reset interval would
# reset at steps 40k and 100k, the last steps of both Walker2d visits, so those visits would be scored on
# fresh networks; every 40k resets twice, at 50k and 90k, halfway through a visit.
CYCLIC_SCALED: Scaled = {**SCALED, "reset": {**SCALED["reset"], "laptop": {"reset.interval": 40_000}}}
# DrQ's Reset and ReDo intervals are in updates (one per agent step): `laptop` (2k updates) resets every 800,
# twice per run (a 2k interval would reset at the last update, so the final evaluation would see a fresh
# network); `paper` every 50k (200k would never fire in runs of 62k-250k updates); ReDo keeps its 1k. NE's
# review window (50 measurements = 5k updates) needs 10k updates before it can fire; a `laptop` DMC run
# makes 2k, so its window there is 5 measurements.
DMC_SCALED: Scaled = {
    "reset": {"ci": {"reset.interval": 20}, "laptop": {"reset.interval": 800}, "paper": {"reset.interval": 50_000}},
    "redo": {"ci": {"redo.interval": 20}},
    "ne": {"laptop": {"review.window": 5}},
}

CYCLES = {
    "ci": "cycle:Hopper-v5,Walker2d-v5@400x2",
    "laptop": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@20000x2",
    "paper": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@200000x3",
    "long": "cycle:HalfCheetah-v5,Walker2d-v5,Hopper-v5@200000x3",
}
"""The task sequence of the ``cyclic`` experiment per preset (:mod:`nelib.envs.cyclic`)."""

SENSITIVITY_DEFAULTS = {"density": 0.2, "tend": 1.0, "omega": 0.4, "early": 0.3}
"""The NE default of each parameter the ``sensitivity`` experiment varies (variant label prefix -> value)."""


def _arms(*methods: str) -> tuple[Arm, ...]:
    return tuple(Arm(m) for m in methods)


def _vary(name: str, key: str, values: tuple[float, ...]) -> tuple[Arm, ...]:
    return tuple(Arm("ne", f"{name}{v:g}", ((key, v),)) for v in values)


EXPERIMENTS: dict[str, Experiment] = {
    "plasticity-loss": Experiment(_arms("td3")),
    # The ablations run on the preset's first task below `paper`: on a 2-core CPU a 100k-step run takes
    # about 25 minutes, and the benchmark alone is 36 of them at `laptop`.
    "naive-growth": Experiment(_arms("sparse", "naive-growth"), "first"),
    "elastic-growth": Experiment(_arms("ne", "ne-random-growth"), "first"),
    "dormant-pruning": Experiment((*_arms("ne", "ne-no-prune"), *_vary("omega", "topology.pruning.omega", (0.1, 0.8))),
                                  "first"),
    "experience-review": Experiment(_arms("ne", "ne-no-review"), "first"),
    "benchmark": Experiment(_arms("td3", "ne", "ne-official", "reset", "redo", "plasticity-injection", "layernorm",
                                  "td3-official-critic"), scaled=SCALED),
    # The headline claim at the paper's horizon (preset `long`: HalfCheetah-v5, 1M steps, 5 seeds).
    "long-horizon": Experiment(_arms("td3", "ne", "ne-official")),
    # What the reviewers asked for: one NE hyper-parameter varied at a time around the defaults (tend: the
    # growth timescale, full size at T/4 or T/2 instead of T).
    "sensitivity": Experiment((Arm("ne"), *_vary("density", "sparsity.density", (0.1, 0.4)),
                               *_vary("tend", "topology.growth.end_fraction", (0.25, 0.5)),
                               *_vary("omega", "topology.pruning.omega", (0.1, 0.8)),
                               *_vary("early", "review.early_fraction", (0.1, 0.6))), "first"),
    "cyclic": Experiment(_arms("td3", "ne", "reset", "redo"), "cycle", CYCLIC_SCALED),
    # Whether bf16 matrix products change what TD3 and NE learn (benchmarks/precision_ab.py); the runs need a
    # CPU or GPU with bf16 matrix units.
    "precision": Experiment((Arm("td3"), Arm("td3", "bf16", (("agent.precision", "bf16"),)),
                             Arm("ne"), Arm("ne", "bf16", (("agent.precision", "bf16"),))), "first"),
    # Pixel DeepMind Control with DrQ (paper Fig. 7); at `ci` only DrQ and NE run (seconds each).
    "dmc-benchmark": Experiment(_arms("drq", "ne", "reset", "redo"), "dmc", DMC_SCALED, ci_methods=("drq", "ne")),
}
"""Experiment name -> its definition."""


def experiment_configs(name: str, preset: str, tasks=None, seeds=None, **overrides) -> list[TrainConfig]:
    """The run configs of experiment ``name`` at ``preset`` scale; ``tasks`` and ``seeds`` replace those its
    rule takes from the preset, ``overrides`` apply to every run."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    exp, p = EXPERIMENTS[name], presets.get(preset)
    default_tasks, default_seeds = p.tasks, p.seeds
    if exp.tasks == "first" and preset != "paper":
        default_tasks = p.tasks[:1]
    elif exp.tasks == "dmc":
        default_tasks, default_seeds = p.dmc_tasks, p.dmc_seeds
    elif exp.tasks == "cycle" and tasks is None:
        default_tasks = [CYCLES[preset]]
        cycle, visit, repeats = parse_cycle(CYCLES[preset])
        overrides = {"steps": visit * len(cycle) * repeats, "start_steps": min(p.start_steps, visit // 2),
                     **overrides}
    arms = [a for a in exp.arms if a.method in METHODS and (preset != "ci" or not exp.ci_methods
                                                            or a.method in exp.ci_methods)]
    return [
        make_config(task, arm.method, seed, preset, variant=arm.variant,
                    **{**exp.scaled.get(arm.method, {}).get(preset, {}), **dict(arm.overrides), **overrides})
        for arm in arms for task in (tasks or default_tasks) for seed in (seeds or default_seeds)
    ]


def configs_by_run(preset: str, seeds=None) -> dict[tuple[str, str, int], dict[str, TrainConfig]]:
    """``(task, label, seed)`` -> {experiment name: its config of that run}, over every experiment at ``preset``
    (on the tasks each takes from the preset; ``seeds`` replace the preset's seeds)."""
    out: dict[tuple[str, str, int], dict[str, TrainConfig]] = {}
    for name in EXPERIMENTS:
        for c in experiment_configs(name, preset, seeds=seeds):
            out.setdefault((c.task, c.label, c.seed), {})[name] = c
    return out


def experiment_mismatch(cfg: TrainConfig) -> str:
    """One line if experiments run ``cfg``'s store path (preset, task, arm, seed) with another config, so that
    their notebooks would refuse this run; "" if one of them runs this very config, or none runs that path."""
    theirs = configs_by_run(cfg.preset, [cfg.seed]).get((cfg.task, cfg.label, cfg.seed), {})
    if not theirs or any(c.hash() == cfg.hash() for c in theirs.values()):
        return ""
    name, c = next(iter(theirs.items()))
    here, there = schema.flat(cfg.to_dict()), schema.flat(c.to_dict())
    fields = ", ".join(f"{k}={here.get(k)!r} here, {there.get(k)!r} there"
                       for k in schema.differing_fields(cfg.to_dict(), c.to_dict()))
    tasks = "" if "," in cfg.task else f" --tasks {cfg.task}"  # a cyclic task is its experiment's only task
    names = [repr(n) for n in theirs]
    who, whose = ((f"experiments {', '.join(names[:-1])} and {names[-1]} train", "their notebooks") if len(names) > 1
                  else (f"experiment {names[0]} trains", "its notebook"))
    return (f"{who} {cfg.label} {cfg.task} seed {cfg.seed} ({cfg.preset}) with another config (hash "
            f"{c.hash()}, this is {cfg.hash()}: {fields}), so {whose} will not use this run; "
            f"to train that one: python -m nelib.runner.sweep --experiment "
            f"{name} --preset {cfg.preset}{tasks} --methods {cfg.label} --seeds {cfg.seed}")


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
                                      label=cfg.label,
                                      seed=cfg.seed))
    if failures:
        print(f"{len(failures)} of {len(configs)} runs failed or are left out; their rows are missing:")
        for cfg, error in failures:  # why, e.g. a stale run or a stored run of another config
            print(f"  {cfg.task} {cfg.label} seed {cfg.seed}: "
                  f"{error.strip().splitlines()[-1]}")
    if not frames and not train:
        raise NoStoredRuns(f"no usable stored runs of {name!r} at preset {preset!r} in {store.root}; train them "
                           f"with: python -m nelib.runner.sweep --experiment {name} --preset {preset} [--fresh]")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
