"""Experiment grids, the local process pool, sweeps that skip stored runs and survive failures, cyclic tasks."""

import dataclasses
import os

import numpy as np
import pytest
from conftest import FAKE

from nelib.envs import check_task
from nelib.envs.cyclic import CyclicEnv, parse_cycle
from nelib.runner.backends import default_workers, run_configs
from nelib.runner.config import make_config
from nelib.runner.experiments import EXPERIMENTS, experiment_configs, run_experiment
from nelib.runner.methods import METHODS

TINY = dict(steps=200, start_steps=100, eval_every=100, eval_episodes=1, checkpoint_every=0, progress=False)


def test_experiment_grids_use_known_methods_and_distinct_store_keys():
    for name, exp in EXPERIMENTS.items():
        assert all(arm.method in METHODS for arm in exp.arms), name
        configs = experiment_configs(name, "ci")
        keys = {(c.task, c.method, c.variant, c.seed) for c in configs}
        assert len(keys) == len(configs), name
    with pytest.raises(ValueError, match="unknown experiment"):
        experiment_configs("nope", "ci")


def test_in_process_sweep_skips_stored_runs_and_reports_failures(store, monkeypatch):
    import nelib.runner.backends as backends

    good = [make_config(FAKE, m, 0, "ci", **TINY) for m in ("td3", "ne")]
    bad = make_config(FAKE, "sparse", 0, "ci", **TINY)
    real = backends._run_one

    def flaky(cfg, root, overwrite, command):
        if cfg.method == "sparse":
            raise RuntimeError("simulated crash")
        real(cfg, root, overwrite, command)

    monkeypatch.setattr(backends, "_run_one", flaky)
    failures = run_configs([good[0], bad, good[1]], store, workers=1, progress=False)
    assert [f[0].method for f in failures] == ["sparse"] and "simulated crash" in failures[0][1]
    assert all(store.load(c) is not None for c in good)  # the failure lost nothing
    mtimes = [store.csv_path(c).stat().st_mtime_ns for c in good]
    assert run_configs(good, store, workers=1, progress=False) == []
    assert [store.csv_path(c).stat().st_mtime_ns for c in good] == mtimes  # not re-run


def test_runs_show_their_step_bar_only_when_the_sweep_runs_one_at_a_time(store, monkeypatch):
    import nelib.runner.backends as backends

    seen = []
    monkeypatch.setattr(backends, "_run_groups",
                        lambda groups, *a: seen.append([[c.progress for c in g] for g in groups]))
    configs = [make_config(FAKE, "td3", s, "ci", **TINY) for s in (0, 1)]
    run_configs(configs, store, workers=1, progress=True)
    run_configs(configs, store, workers=2, progress=True)  # two runs side by side: their bars would interleave
    run_configs(configs, store, workers=2, progress=True, vectorize=2)  # one group: one bar for both seeds
    run_configs(configs, store, workers=1, progress=False)
    assert seen == [[[True], [True]], [[False], [False]], [[True, True]], [[False], [False]]]


def test_process_pool_gives_the_same_results_as_in_process(store, tmp_path):
    from nelib.runner.store import ResultStore

    configs = [make_config("Hopper-v5", "ne", s, "ci", **TINY, threads=1) for s in (0, 1)]
    assert run_configs(configs, store, workers=2, progress=False) == []
    other = ResultStore(tmp_path / "other")
    assert run_configs(configs, other, workers=1, progress=False) == []
    for c in configs:
        a, b = store.load(c), other.load(c)
        assert a.drop(columns="steps_per_s").equals(b.drop(columns="steps_per_s"))


def test_run_experiment_returns_labelled_rows(store):
    df = run_experiment("experience-review", "ci", store=store, workers=1, progress=False,
                        tasks=[FAKE], **{k: v for k, v in TINY.items() if k != "progress"})
    assert set(df["label"]) == {"ne", "ne-no-review"} and set(df["task"]) == {FAKE}


def test_run_experiment_without_training_returns_only_stored_runs(store, tmp_path, monkeypatch):
    import nelib.runner.experiments as experiments
    from nelib.runner.store import ResultStore

    kw = dict(tasks=[FAKE], **{k: v for k, v in TINY.items() if k != "progress"})
    empty = ResultStore(tmp_path / "empty")
    with pytest.raises(experiments.NoStoredRuns, match="python -m nelib.runner.sweep --experiment experience-review"):
        run_experiment("experience-review", "ci", store=empty, train=False, **kw)
    ne = [c for c in experiment_configs("experience-review", "ci", **kw) if c.method == "ne"]
    assert run_configs(ne, store, workers=1, progress=False) == []
    monkeypatch.setattr(experiments, "run_configs", None)  # train=False must not train anything
    df = run_experiment("experience-review", "ci", store=store, train=False, **kw)
    assert set(df["label"]) == {"ne"} and len(df) == len(store.load(ne[0]))


def test_cyclic_env_pads_switches_at_episode_end_and_is_checkable():
    tasks, visit, repeats = parse_cycle("cycle:Hopper-v5,HalfCheetah-v5@30x2")
    assert (tasks, visit, repeats) == (["Hopper-v5", "HalfCheetah-v5"], 30, 2)
    env = CyclicEnv(tasks, visit, repeats)
    assert env.observation_space.shape == (17,) and env.action_space.shape == (6,)
    obs, info = env.reset(seed=0)
    assert info["task"] == "Hopper-v5" and np.all(obs[11:] == 0)  # Hopper has 11 observations
    seen = []
    for _ in range(3000):
        obs, _, term, trunc, info = env.step(np.zeros(6, dtype=np.float32))
        if term or trunc:
            seen.append(info["task"])
            obs, info = env.reset()
    assert env.stage == 3  # the last visit is never left
    assert seen[0] == "Hopper-v5" and "HalfCheetah-v5" in seen
    check_task("cycle:Hopper-v5,Walker2d-v5@10")
    for bad in ("cycle:Hopper-v5@", "cycle:@10", "cycle:Nope-v5@10"):
        with pytest.raises(ValueError):
            check_task(bad)


def test_sweep_selects_arms_and_rejects_unknown_ones():
    from nelib.runner.sweep import select_arms

    configs = experiment_configs("dormant-pruning", "ci")
    picked = select_arms(configs, ["ne-no-prune", "ne@omega0.1"])
    assert {(c.method, c.variant) for c in picked} == {("ne-no-prune", ""), ("ne", "omega0.1")}
    assert len(picked) == 2 * len(presets_ci_tasks_and_seeds())
    with pytest.raises(ValueError, match="unknown arm"):
        select_arms(configs, ["td3"])


def presets_ci_tasks_and_seeds():
    from nelib.runner import presets

    p = presets.get("ci")
    return [(t, s) for t in p.tasks for s in p.seeds]


def test_default_workers_one_per_core_on_cpu_and_one_on_cuda():
    cpu = make_config(task="HalfCheetah-v5", method="td3", device="cpu")
    cuda = dataclasses.replace(cpu, device="cuda")  # resolving the name needs no GPU
    assert default_workers([cpu]) == (os.cpu_count() or 1)
    assert default_workers([cuda, cuda]) == 1


@pytest.mark.parametrize("preset", ["ci", "laptop", "paper"])
def test_reset_schedules_fire_and_never_at_a_reported_evaluation(preset):
    # A reset at the update just before a reported evaluation (a run's last one; in a cyclic run, each
    # visit's last one) has that evaluation score a freshly initialised network.
    for name in ("benchmark", "cyclic", "dmc-benchmark"):
        for c in experiment_configs(name, preset):
            if c.method != "reset":
                continue
            updates = c.steps - c.start_steps
            assert c.reset.interval < updates, (name, c.task)
            reset_steps = set(range(c.start_steps + c.reset.interval, c.steps + 1, c.reset.interval))
            reported = {c.steps}
            if name == "cyclic":
                _, visit, _ = parse_cycle(c.task)
                reported = set(range(visit, c.steps + 1, visit))
            assert not reset_steps & reported, (name, c.task, sorted(reset_steps & reported))


def test_experiment_mismatch_names_the_fields_and_the_sweep_that_trains_the_experiment_s_run():
    from nelib.runner.experiments import configs_by_run, experiment_mismatch

    plain = make_config("dmc:cartpole-swingup", "ne", 0, "laptop")  # the bare train command: review.window 50
    assert experiment_mismatch(plain) == (
        "experiment 'dmc-benchmark' trains ne dmc:cartpole-swingup seed 0 (laptop) with another config (hash "
        "404d75d98d23, this is 0783e2294565: review.window=50 here, 5 there), so its notebook will not use this "
        "run; to train that one: python -m nelib.runner.sweep --experiment dmc-benchmark --preset laptop "
        "--tasks dmc:cartpole-swingup --methods ne --seeds 0")
    theirs = configs_by_run("laptop", [0])[("dmc:cartpole-swingup", "ne", 0)]
    assert list(theirs) == ["dmc-benchmark"] and theirs["dmc-benchmark"].review.window == 5
    assert experiment_mismatch(theirs["dmc-benchmark"]) == ""
    # ne on HalfCheetah is run by five experiments, all with the bare config; ne-random-growth on Hopper by none
    assert experiment_mismatch(make_config("HalfCheetah-v5", "ne", 3, "laptop")) == ""
    assert len(configs_by_run("laptop", [3])[("HalfCheetah-v5", "ne", 3)]) >= 5
    assert experiment_mismatch(make_config("Hopper-v5", "ne-random-growth", 0, "laptop")) == ""
    odd = make_config("HalfCheetah-v5", "ne", 0, "laptop", variant="omega0.1")
    line = experiment_mismatch(odd)  # a variant label without its override
    assert "topology.pruning.omega=" in line and "--methods ne@omega0.1 " in line


def test_train_cli_warns_in_one_line_before_training_a_run_its_experiment_configures_otherwise(monkeypatch, capsys):
    import pandas as pd

    from nelib.runner import train

    monkeypatch.setattr(train, "run", lambda cfg, store, overwrite: pd.DataFrame({"step": [10], "return_mean": [1.0]}))
    train.main(["--task", "dmc:cartpole-swingup", "--method", "ne", "--seed", "1", "--preset", "laptop"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nelib: experiment 'dmc-benchmark' trains ne dmc:cartpole-swingup")
    train.main(["--task", "dmc:cartpole-swingup", "--method", "ne", "--seed", "1", "--preset", "laptop",
                "--review.window", "5"])
    assert capsys.readouterr().err == ""
