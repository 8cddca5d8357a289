"""Results that cannot be silently wrong or lost (issue #21): verified stored runs, safe atomic checkpoints,
pre-flight checks, one clear line for every bad input. Each case runs the real CLI (``nelib.runner.train.main``,
``nelib.runner.sweep.main``) on the ``ci`` preset in a temporary folder."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import FAKE

import nelib.runner.train as train
from nelib.agents.td3 import TD3
from nelib.runner import checkpoints, sweep
from nelib.runner.config import make_config
from nelib.runner.integrity import check_store, expected_steps
from nelib.runner.store import ResultStore
from nelib.runner.store import main as store_main

# HalfCheetah at ci scale, short enough for seconds per run.
SHORT = ["--preset", "ci", "--steps", "300", "--start_steps", "150", "--eval_every", "150", "--eval_episodes", "1",
         "--progress", "0", "--threads", "1"]
# The fake env's 50-step episodes give checkpoints every 100 steps.
FAKE_RUN = ["--task", FAKE, "--preset", "ci", "--steps", "400", "--start_steps", "100", "--eval_every", "100",
            "--eval_episodes", "1", "--checkpoint_every", "100", "--progress", "0", "--threads", "1",
            "--agent.batch_size", "64"]
FAKE_CFG = dict(steps=400, start_steps=100, eval_every=100, eval_episodes=1, checkpoint_every=100, progress=False,
                threads=1, **{"agent.batch_size": 64})
TIMING = ["steps_per_s"]


def cli(capsys, *args, main=train.main) -> tuple[int, str, str]:
    """Run a CLI in-process: (exit status, stdout, stderr with any exit message)."""
    try:
        main(list(args))
        code, message = 0, ""
    except SystemExit as e:
        code, message = (e.code, "") if isinstance(e.code, int) or e.code is None else (1, f"{e.code}\n")
    out, err = capsys.readouterr()
    return code or 0, out, err + message


def one_line(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def final_line(out: str) -> str:
    return [x for x in out.splitlines() if ": return " in x][-1]


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """A short HalfCheetah run stored by the CLI: its store root, CSV path and final line."""
    root = tmp_path_factory.mktemp("stored")
    train.main([*SHORT, "--data-dir", str(root)])
    cfg = make_config("HalfCheetah-v5", None, 0, "ci", steps=300, start_steps=150, eval_every=150, eval_episodes=1)
    return root, ResultStore(root).csv_path(cfg), cfg


def copy_store(stored_run, tmp_path):
    root, csv, cfg = stored_run
    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data", tmp_path / "data" / csv.relative_to(root), cfg


DAMAGE = {
    "cut mid-row": lambda b: b[:-25],
    "last row removed": lambda b: b[:b.rstrip(b"\n").rindex(b"\n") + 1],
    "cut in the header": lambda b: b[:40],
    "header only": lambda b: b[:b.index(b"\n") + 1],
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_csv_is_said_in_one_line_counts_as_missing_and_is_retrained(damage, stored_run, tmp_path, capsys):
    root, csv, cfg = copy_store(stored_run, tmp_path)
    good = pd.read_csv(csv)
    csv.write_bytes(DAMAGE[damage](csv.read_bytes()))
    lines, ok = check_store(root)
    assert not ok and lines[0].startswith(f"DAMAGED {csv} is damaged (")
    code, out, err = cli(capsys, *SHORT, "--data-dir", str(root))
    assert code == 0 and "Traceback" not in err
    mismatch, damaged = [x for x in err.splitlines() if x.strip()]  # SHORT is not the experiments' td3 config
    assert mismatch.startswith("nelib: experiments 'plasticity-loss', 'benchmark', 'long-horizon' and 'precision' "
                               "train td3 HalfCheetah-v5 seed 0 (ci) with another config")
    assert damaged.startswith(f"nelib: {csv} is damaged (") and "counts as missing" in damaged
    # the final line is the re-trained run's (the same as the original: CPU runs are deterministic)
    assert final_line(out) == f"td3 HalfCheetah-v5 seed 0: return {good['return_mean'].iloc[-1]:.1f} at step 300"
    pd.testing.assert_frame_equal(pd.read_csv(csv).drop(columns=TIMING), good.drop(columns=TIMING))
    assert check_store(root)[1]


def test_sweep_dry_run_calls_a_shortened_run_missing_and_the_sweep_retrains_it(tmp_path, capsys, monkeypatch):
    import nelib.runner.backends as backends
    import nelib.runner.experiments as experiments

    store = ResultStore(tmp_path / "data")
    cfg = experiments.experiment_configs("plasticity-loss", "ci")[0]
    steps = expected_steps(cfg)
    store.save(cfg, pd.DataFrame({"step": steps, "return_mean": [float(s) for s in steps]}), 1.0)
    args = ["--experiment", "plasticity-loss", "--preset", "ci", "--data-dir", str(store.root)]
    assert cli(capsys, *args, "--dry-run", main=sweep.main)[1] == "stored  HalfCheetah-v5 td3 seed 0\n"
    csv = store.csv_path(cfg)
    csv.write_bytes(DAMAGE["last row removed"](csv.read_bytes()))
    code, out, err = cli(capsys, *args, "--dry-run", main=sweep.main)
    assert code == 0 and out.startswith(f"missing HalfCheetah-v5 td3 seed 0 ({csv} is damaged (") and not err
    ran = []
    monkeypatch.setattr(backends, "_run_one", lambda c, *a: ran.append(c))
    assert backends.run_configs([cfg], store, workers=1, progress=False) == []
    assert [c.hash() for c in ran] == [cfg.hash()]  # re-trained


def test_the_checksum_fails_if_one_digit_of_a_stored_csv_changes(stored_run, tmp_path, capsys):
    root, csv, cfg = copy_store(stored_run, tmp_path)
    assert check_store(root)[1]
    text = csv.read_text()
    i = text.index("\n") + 1 + text[text.index("\n") + 1:].index(",") + 2  # a digit of row 1's return
    while not text[i].isdigit():
        i += 1
    csv.write_text(text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:])
    lines, ok = check_store(root)
    assert not ok and lines == [
        f"DAMAGED {csv} is damaged (its sha256 differs from its record's: changed since it was stored): restore it "
        "(git checkout, if committed), or delete its two files and re-run it",
        f"FAILED: 1 stored runs under {root}: 0 verified, 0 legacy (no checksum), 1 damaged"]
    assert ResultStore(root).load(cfg) is None and "counts as missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        store_main([str(root), "--check"])
    assert exc.value.code == 1


def test_legacy_records_are_reported_and_migrated_once_without_touching_a_csv(stored_run, tmp_path, capsys):
    root, csv, cfg = copy_store(stored_run, tmp_path)
    record = csv.with_suffix(".json")
    rec = json.loads(record.read_text())
    legacy = {k: v for k, v in rec.items() if k not in ("sha256", "rows", "last_step")}
    record.write_text(json.dumps(legacy, indent=1) + "\n")  # as nelib wrote records before checksums
    csv_bytes = csv.read_bytes()
    assert ResultStore(root).load(cfg) is not None  # a legacy run still loads (its rows are checked)
    lines, ok = check_store(root)
    assert not ok and lines == [f"{record}: legacy, no checksum",
                                f"1 legacy runs have no checksum; add them with: python -m nelib.runner.store "
                                f"--add-checksums {root}",
                                f"FAILED: 1 stored runs under {root}: 0 verified, 1 legacy (no checksum), 0 damaged"]
    for _ in range(2):  # the second time changes nothing
        with pytest.raises(SystemExit) as exc:
            store_main([str(root), "--add-checksums"])
        assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"checksums added to 1 records under {root}; 0 had them; 0 damaged, left alone",
                   f"checksums added to 0 records under {root}; 1 had them; 0 damaged, left alone"]
    assert json.loads(record.read_text()) == rec and csv.read_bytes() == csv_bytes
    # a legacy record whose CSV is shorter than its config's schedule is not given a checksum
    record.write_text(json.dumps(legacy, indent=1) + "\n")
    csv.write_bytes(DAMAGE["last row removed"](csv_bytes))
    with pytest.raises(SystemExit) as exc:
        store_main([str(root), "--add-checksums"])
    assert exc.value.code == 1 and json.loads(record.read_text()) == legacy
    assert f"DAMAGED {csv} is damaged (2 rows to step 150, its config makes 3 to step 300): left alone" in (
        capsys.readouterr().out)


def test_a_cut_checkpoint_falls_back_to_the_previous_one_and_resume_equals_an_uninterrupted_run(
        tmp_path, capsys, monkeypatch):
    from conftest import run_interrupted

    cli(capsys, *FAKE_RUN, "--data-dir", str(tmp_path / "full"))
    full = pd.read_csv(next((tmp_path / "full").rglob("seed0.csv")))
    store = ResultStore(tmp_path / "data")
    cfg = make_config(FAKE, "td3", 0, "ci", **FAKE_CFG)
    ckpt = run_interrupted(cfg, store, monkeypatch, at_eval=4)  # killed at step 300
    path = store.checkpoint_path(cfg)
    previous = checkpoints.previous_path(path)
    assert ckpt["t"] == 200 and torch.load(previous, weights_only=True)["t"] == 100
    path.write_bytes(path.read_bytes()[:1000])
    code, out, err = cli(capsys, *FAKE_RUN, "--data-dir", str(store.root))
    assert code == 0 and err.splitlines() == [
        f"nelib: {path} is damaged (PytorchStreamReader failed reading zip archive: failed finding central "
        f"directory); resuming from the previous checkpoint {previous} (step 100)",
        f"nelib: td3 {FAKE} seed 0: resuming from its checkpoint {previous} at step 100 of 400"]
    pd.testing.assert_frame_equal(pd.read_csv(store.csv_path(cfg)).drop(columns=TIMING), full.drop(columns=TIMING))
    assert not path.exists() and not previous.exists()


def test_a_cut_checkpoint_with_no_previous_one_stops_in_one_line_naming_it(tmp_path, capsys, monkeypatch):
    store = ResultStore(tmp_path)
    cfg = make_config(FAKE, "td3", 0, "ci")
    path = store.checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(train, "evaluate", lambda *a: pytest.fail("trained from nothing"))
    code, _, err = cli(capsys, "--task", FAKE, "--preset", "ci", "--progress", "0", "--data-dir", str(tmp_path))
    assert code == 1 and one_line(err).startswith(f"error: {path} is damaged (") and (
        err.strip().endswith(f"no checkpoint left to resume from; delete {path} to start the run over"))
    # written after a kill between its two renames, only the previous one is there: it resumes from that
    os.replace(path, checkpoints.previous_path(path))
    assert checkpoints.exists(path)


def test_a_checkpoint_that_does_not_fit_the_run_stops_in_one_line(tmp_path, capsys):
    store = ResultStore(tmp_path)
    cfg = make_config(FAKE, "td3", 0, "ci")
    path = store.checkpoint_path(cfg)
    path.parent.mkdir(parents=True)
    torch.save({"hash": cfg.hash(), "t": 100}, path)  # the right config, but no agent in it
    code, _, err = cli(capsys, "--task", FAKE, "--preset", "ci", "--progress", "0", "--data-dir", str(tmp_path))
    assert code == 1 and one_line(err) == (
        f"error: checkpoint {path} does not fit this run (KeyError: 'agent'); delete it to start the run over")


def test_a_checkpoint_carrying_a_foreign_object_is_refused_in_one_line(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.makedirs, (str(marker),)

    store = ResultStore(tmp_path / "data")
    path = store.checkpoint_path(make_config(FAKE, "td3", 0, "ci"))
    path.parent.mkdir(parents=True)
    torch.save({"hash": "x", "t": 0, "agent": Payload()}, path)
    code, _, err = cli(capsys, "--task", FAKE, "--preset", "ci", "--progress", "0", "--data-dir", str(store.root))
    assert code == 1 and one_line(err) == (
        f"error: refusing to load checkpoint {path}: it holds what nelib never writes (os.makedirs); "
        "delete it if you did not make it")
    assert not marker.exists() and path.exists()


def test_a_nan_loss_stops_the_run_in_one_line_keeping_its_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    real = TD3.train

    def diverging(self, buffer):
        losses = real(self, buffer)
        return {**losses, "critic_loss": float("nan")} if self.updates >= 250 else losses

    monkeypatch.setattr(TD3, "train", diverging)
    code, _, err = cli(capsys, *FAKE_RUN, "--data-dir", str(tmp_path))
    path = ResultStore(tmp_path).checkpoint_path(make_config(FAKE, "td3", 0, "ci"))
    assert code == 1 and one_line(err) == (
        f"error: td3 {FAKE} seed 0: critic_loss is nan at step 350, training diverged; stopped, nothing stored "
        f"(its last good checkpoint {path} (step 300) is kept)")
    assert torch.load(path, weights_only=True)["t"] == 300 and not list(tmp_path.rglob("*.csv"))


def test_a_result_that_cannot_be_stored_is_kept_and_stored_by_the_next_run(tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultStore, "save", full_disk)
    code, _, err = cli(capsys, *FAKE_RUN, "--data-dir", str(tmp_path))
    path = ResultStore(tmp_path).checkpoint_path(make_config(FAKE, "td3", 0, "ci"))
    assert code == 1 and one_line(err) == (
        f"error: could not store td3 {FAKE} seed 0 in {tmp_path} (No space left on device); the finished run is "
        f"kept in {path}: run the same command again to store it")
    monkeypatch.undo()
    monkeypatch.setattr(TD3, "train", lambda *a: pytest.fail("trained again"))
    code, out, err = cli(capsys, *FAKE_RUN, "--data-dir", str(tmp_path))
    assert code == 0 and err == f"nelib: td3 {FAKE} seed 0: resuming from its checkpoint {path} at step 400 of 400\n"
    assert final_line(out).endswith("at step 400") and not path.exists() and check_store(tmp_path)[1]


def test_a_checkpoint_that_cannot_be_written_is_said_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_checkpoint", full_disk)
    code, out, err = cli(capsys, *FAKE_RUN, "--data-dir", str(tmp_path))
    path = ResultStore(tmp_path).checkpoint_path(make_config(FAKE, "td3", 0, "ci"))
    assert code == 0 and final_line(out).endswith("at step 400") and err.splitlines() == [
        f"nelib: td3 {FAKE} seed 0: could not write the checkpoint {path} (No space left on device) at step {t}; "
        "training goes on, the previous checkpoint is kept" for t in (100, 200, 300)]
    assert check_store(tmp_path)[1]


@pytest.mark.parametrize("args, message", [
    (["--data-dir", "/proc/nope"], "error: cannot write to /proc/nope/runs/ci/HalfCheetah-v5/td3 (No such file or "
                                   "directory); pass a writable --data-dir (or set NELIB_DATA)"),
    (["--device", "cuda"], f"error: device 'cuda': this torch ({torch.__version__}) sees no CUDA GPU; use --device "
                           "cpu (or auto)"),
    (["--device", "gpu"], "error: device 'gpu' is not a device name; use auto, cpu, cuda or cuda:<index>"),
    (["--agent.nosuch", "3"], "error: unknown option --agent.nosuch; the closest is --agent.arch (see python -m "
                              "nelib.runner.train --help)"),
    (["--agent.l", "3"], "error: unknown option --agent.l; the closest is --agent.lr (see python -m nelib.runner.train "
                         "--help)"),
    (["--seed", "-1"], "error: seed must be >= 0, got -1"),
    (["--agent.lr", "nan"], "error: agent.lr must be a finite number, got nan"),
    (["--agent.expl_noise", "-0.1"], "error: agent.expl_noise must be >= 0, got -0.1"),
    (["junk"], "error: unexpected argument 'junk' (see python -m nelib.runner.train --help)"),
    (["--steps"], "error: argument --steps: expected one argument (see python -m nelib.runner.train --help)"),
])
def test_bad_settings_stop_before_training_in_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch
    monkeypatch.setattr(train, "build_agent", lambda *a, **k: pytest.fail("started training"))
    code, out, err = cli(capsys, "--preset", "ci", "--progress", "0", *(["--data-dir", str(tmp_path)]), *args)
    assert code in (1, 2) and one_line(err) == message and not out
    assert not (tmp_path / "runs").exists()


def test_cuda_on_a_cpu_only_torch_is_one_line_from_the_shell(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA")
    done = subprocess.run([sys.executable, "-m", "nelib.runner.train", "--preset", "ci", "--device", "cuda",
                           "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(train.__file__).resolve().parents[2])
    assert done.returncode == 1 and not done.stdout
    assert one_line(done.stderr).startswith("error: device 'cuda': this torch")


@pytest.mark.parametrize("args, message", [
    (["--tasks", "Nope-v9"], "error: unknown task 'Nope-v9'; MuJoCo v5 tasks: "),
    (["--seeds", "a,b"], "error: --seeds: 'a' is not a seed; give non-negative integers separated by commas, "
                         "e.g. 0,1,2"),
    (["--vectorize", "x"], "error: --vectorize must be auto or a whole number (0: off), got 'x'"),
    (["--data-dir", "/proc/nope"], "error: cannot write to /proc/nope/runs (No such file or directory)"),
    (["--workers", "0"], "error: --workers must be >= 1, got 0"),
])
def test_a_sweep_checks_its_whole_grid_first_and_says_each_problem_once(args, message, tmp_path, capsys, monkeypatch):
    import nelib.runner.backends as backends

    monkeypatch.setattr(backends, "_run_one", lambda *a: pytest.fail("a run started"))
    code, out, err = cli(capsys, "--experiment", "benchmark", "--preset", "ci", "--data-dir", str(tmp_path), *args,
                         main=sweep.main)
    assert code == 1 and one_line(err).startswith(message) and not out


def test_help_shows_the_defaults_a_run_uses(capsys):
    code, out, _ = cli(capsys, "--preset", "ci", "--method", "ne", "--help")
    text = " ".join(out.split())
    assert code == 0 and "(default: None)" not in text
    assert "``drq.action_repeat`` frames). (default: 2000)" in text  # steps: the ci preset's
    assert "NE and ``sparse``: 0.2). (default: 0.2)" in text  # sparsity.density: the method's
    assert "(default: HalfCheetah-v5)" in text and "(default: laptop)" in text


def test_one_speed_on_the_progress_bar_and_one_line_when_a_run_is_loaded(tmp_path, capsys):
    args = [*FAKE_RUN, "--checkpoint_every", "0", "--data-dir", str(tmp_path)]
    code, _, err = cli(capsys, *args, "--progress", "1")
    assert code == 0 and "step/s" in err and "sps=" not in err
    code, out, err = cli(capsys, *args)
    csv = ResultStore(tmp_path).csv_path(make_config(FAKE, "td3", 0, "ci"))
    assert code == 0 and one_line(err) == (f"nelib: td3 {FAKE} seed 0: loaded from the store ({csv}, 5 evaluations "
                                           "to step 400); --overwrite trains it again")


def test_stored_files_and_checkpoints_are_readable_by_the_group(tmp_path, capsys, monkeypatch):
    from conftest import run_interrupted

    old = os.umask(0o022)
    try:
        store = ResultStore(tmp_path)
        cfg = make_config(FAKE, "td3", 0, "ci", steps=300, start_steps=100, eval_every=100, eval_episodes=1,
                          checkpoint_every=100, progress=False, threads=1)
        run_interrupted(cfg, store, monkeypatch, at_eval=4)
        assert oct(store.checkpoint_path(cfg).stat().st_mode & 0o777) == "0o644"
        train.run(cfg, store)
        modes = {oct(p.stat().st_mode & 0o777) for p in (store.csv_path(cfg), store.json_path(cfg))}
        assert modes == {"0o644"}
    finally:
        os.umask(old)
