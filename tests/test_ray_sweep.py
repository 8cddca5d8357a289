"""The Ray backend of sweeps: the same result files as the local pool, failures reported, the CLI option.

One local Ray instance (2 CPUs, no dashboard, small object store) serves the whole module. Its workers are
fresh processes that import nelib but not conftest, so the fake environment registered there is unknown to
them: a run on it fails in the worker, which is how these tests make a run fail under Ray.
"""

import sys

import pytest
from conftest import FAKE

from nelib.runner.backends import init_ray, run_configs
from nelib.runner.config import make_config
from nelib.runner.store import ResultStore

TINY = dict(steps=200, start_steps=100, eval_every=100, eval_episodes=1, checkpoint_every=0, progress=False)


@pytest.fixture(scope="module")
def ray_instance():
    ray = init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_result_files_as_the_local_pool(store, tmp_path, ray_instance):
    # The local reference runs in this process (workers=1): test_experiments checks that the spawned pool
    # gives the same files, and it saves two more interpreter start-ups here.
    configs = [make_config("Hopper-v5", "ne", s, "ci", **TINY, threads=1) for s in (0, 1)]
    assert run_configs(configs, store, workers=1, progress=False) == []
    on_ray = ResultStore(tmp_path / "ray")
    assert run_configs(configs, on_ray, progress=False, backend="ray") == []
    for c in configs:
        a, b = store.load(c), on_ray.load(c)
        assert a.drop(columns="steps_per_s").equals(b.drop(columns="steps_per_s"))
        assert store.record(c)["hash"] == on_ray.record(c)["hash"]
        assert on_ray.record(c)["config"]["threads"] == 1


def test_a_failing_run_under_ray_is_reported_and_loses_nothing(store, ray_instance):
    good = make_config("Hopper-v5", "td3", 0, "ci", **TINY)
    bad = make_config(FAKE, "td3", 0, "ci", **TINY)  # not registered in the Ray workers
    failures = run_configs([bad, good], store, progress=False, backend="ray")
    assert [(f[0].task, f[0].method) for f in failures] == [(FAKE, "td3")] and "NelibFake" in failures[0][1]
    assert store.load(good) is not None and store.load(bad) is None
    mtime = store.csv_path(good).stat().st_mtime_ns
    assert run_configs([good], store, progress=False, backend="ray") == []  # stored: skipped, not re-run
    assert store.csv_path(good).stat().st_mtime_ns == mtime


def test_run_experiment_takes_the_ray_backend(store, capsys, ray_instance):
    from nelib.runner.experiments import run_experiment

    df = run_experiment("experience-review", "ci", store=store, progress=False, tasks=[FAKE], backend="ray",
                        **{k: v for k, v in TINY.items() if k != "progress"})
    assert df.empty and "2 of 2 runs failed" in capsys.readouterr().out


def test_sweep_cli_runs_on_ray_and_reports_failures(tmp_path, capsys, ray_instance):
    from nelib.runner.sweep import main

    with pytest.raises(SystemExit) as exit_:
        main(["--experiment", "plasticity-loss", "--preset", "ci", "--tasks", FAKE, "--seeds", "0",
              "--backend", "ray", "--data-dir", str(tmp_path)])
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "0 of 1 runs stored" in out and f"FAILED {FAKE} td3 seed 0" in out


def test_sweep_cli_passes_backend_and_address(tmp_path, monkeypatch):
    import nelib.runner.sweep as sweep

    seen = {}
    monkeypatch.setattr(sweep, "run_configs", lambda configs, *a, **kw: seen.update(kw) or [])
    sweep.main(["--experiment", "plasticity-loss", "--preset", "ci", "--backend", "ray", "--address", "auto",
                "--data-dir", str(tmp_path)])
    assert seen == {"backend": "ray", "address": "auto", "vectorize": 0}
    with pytest.raises(SystemExit):
        sweep.main(["--experiment", "plasticity-loss", "--backend", "nope"])


def test_ray_backend_without_ray_says_how_to_install_it(store, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    cfg = make_config("Hopper-v5", "td3", 0, "ci", **TINY)
    with pytest.raises(ImportError, match="pip install ray"):
        run_configs([cfg], store, progress=False, backend="ray")
    with pytest.raises(ValueError, match="unknown backend"):
        run_configs([cfg], store, progress=False, backend="nope")
    from nelib.runner.sweep import main

    with pytest.raises(SystemExit, match="error: the ray backend needs the ray package"):
        main(["--experiment", "plasticity-loss", "--preset", "ci", "--backend", "ray", "--data-dir", str(store.root)])
