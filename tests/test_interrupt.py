"""Ctrl-C while training: the first press checkpoints every run at its next episode end and stops in one line;
the same command resumes and ends as an uninterrupted run; a second press stops at once, also in one line."""

import os
import signal

import pandas as pd
import pytest
import torch
from conftest import FAKE

import nelib.runner.train as train
from nelib.runner.config import make_config
from nelib.runner.loop import Interrupted
from nelib.runner.store import ResultStore
from nelib.runner.vectorized import run_vectorized

# FAKE's episodes end every 50 steps; checkpoint_every 0: only a Ctrl-C asks for a checkpoint.
ARGS = ["--task", FAKE, "--method", "ne", "--preset", "ci", "--steps", "300", "--start_steps", "100",
        "--eval_every", "100", "--eval_episodes", "1", "--checkpoint_every", "0", "--progress", "0",
        "--topology.interval", "20", "--threads", "1", "--device", "cpu"]
TIMING = ["steps_per_s"]


def config(seed=0):
    return make_config(FAKE, "ne", seed, "ci", steps=300, start_steps=100, eval_every=100, eval_episodes=1,
                       checkpoint_every=0, progress=False, threads=1, device="cpu", **{"topology.interval": 20})


def press_ctrl_c_at(monkeypatch, *steps):
    """Send this process SIGINT right after env step number ``steps[i]`` (once each, whichever run gets there
    first: seeds in lockstep all do)."""
    real, left = train.Run.env_step, list(steps)

    def env_step(self, action):
        real(self, action)
        if self.t in left:
            left.remove(self.t)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train.Run, "env_step", env_step)
    return real


def test_ctrl_c_checkpoints_at_the_next_episode_end_and_the_same_command_resumes(tmp_path, capsys, monkeypatch):
    train.run(config(), ResultStore(tmp_path / "full"))
    full = pd.read_csv(ResultStore(tmp_path / "full").csv_path(config()))  # both read back from their CSV files
    store = ResultStore(tmp_path / "data")
    argv = [*ARGS, "--data-dir", str(tmp_path / "data")]
    real = press_ctrl_c_at(monkeypatch, 120)
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    assert stop.value.code == 130
    path = store.checkpoint_path(config())
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "nelib: stopping at the next episode end, once each run has written its checkpoint; press Ctrl-C again "
        "to stop at once (losing the steps since the last checkpoint)",
        f"nelib: interrupted; checkpoint {path} at step 150: the same command resumes from there"]
    assert torch.load(path, weights_only=False)["t"] == 150 and not store.csv_path(config()).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    monkeypatch.setattr(train.Run, "env_step", real)
    train.main(argv)
    resumed = pd.read_csv(store.csv_path(config()))
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING), check_exact=True)
    assert not path.exists()


def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    press_ctrl_c_at(monkeypatch, 120, 130)
    with pytest.raises(SystemExit) as stop:
        train.main([*ARGS, "--data-dir", str(tmp_path)])
    assert stop.value.code == 130
    assert capsys.readouterr().err.splitlines()[1] == (
        "nelib: stopped at once: the steps since each run's last checkpoint are lost; the same command resumes "
        "from that checkpoint")
    assert not ResultStore(tmp_path).checkpoint_path(config()).exists()  # none was due before step 150


def test_ctrl_c_stops_seeds_in_lockstep_with_a_checkpoint_each(tmp_path, monkeypatch):
    configs = [config(0), config(1)]
    full = [train.run(c, ResultStore(tmp_path / "full")) for c in configs]
    store = ResultStore(tmp_path / "data")
    real = press_ctrl_c_at(monkeypatch, 220)
    with pytest.raises(Interrupted, match="checkpoints .* at step 250, .* at step 250: the same command"):
        run_vectorized(configs, store)
    assert [torch.load(store.checkpoint_path(c), weights_only=False)["t"] for c in configs] == [250, 250]
    monkeypatch.setattr(train.Run, "env_step", real)
    for f, r in zip(full, run_vectorized(configs, store), strict=True):
        pd.testing.assert_frame_equal(f.drop(columns=TIMING), r.drop(columns=TIMING), check_exact=True)


def test_ctrl_c_stops_an_in_process_sweep_after_the_run_in_progress_checkpoints(tmp_path, monkeypatch):
    from nelib.runner.backends import run_configs

    configs = [config(0), config(1)]
    store = ResultStore(tmp_path)
    press_ctrl_c_at(monkeypatch, 120)
    with pytest.raises(Interrupted):  # not a failed run that the sweep reports and goes on after
        run_configs(configs, store, workers=1, progress=False)
    assert torch.load(store.checkpoint_path(configs[0]), weights_only=False)["t"] == 150
    assert not store.checkpoint_path(configs[1]).exists() and not store.csv_path(configs[1]).exists()
